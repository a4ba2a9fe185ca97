//! The use cases: what hypod does, once, for the command line now and the daemon, the HTTP API
//! and the web UI later. Each takes typed input and returns a typed, serialisable view (the
//! `--json` output is that view) or an [`AppError`] that says what kind of failure it is. The
//! use cases load configuration-dependent pieces (store, governance, proposers) through the
//! helpers here; they never parse command lines and never print.

pub mod access;
pub mod audit;
pub mod history;
pub mod policy;
pub mod queue;
pub mod run;

use crate::config::{Config, ProposerKind};
use crate::governance::Governance;
use crate::proposer::builtin::BuiltinProposer;
use crate::proposer::openai::{Fallback, OpenAiProposer, PolicySummary};
use crate::proposer::Proposer;
use crate::store::{self, Store};
use std::path::{Path, PathBuf};

/// What kind of failure a use case met: the command line maps it to an exit code, the HTTP API
/// will map it to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad usage or invalid input (a file, an id, a review that the rules refuse).
    Input,
    /// A configuration, policy or prompt that cannot be used.
    Config,
    /// Anything else: the database, the model, a failed run.
    Runtime,
    /// What was asked for does not exist (a proposal, run, experiment or token id).
    NotFound,
    /// The request conflicts with the current state (a decided or blocked proposal, a second
    /// approval by the same person).
    Conflict,
    /// No credentials, or credentials that identify nobody.
    Unauthenticated,
    /// The person is known but their role does not allow this.
    Forbidden,
}

impl ErrorKind {
    /// The stable code the HTTP API answers with in `{"code": …, "message": …}`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Input => "invalid_input",
            ErrorKind::Config => "configuration",
            ErrorKind::Runtime => "internal",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
        }
    }
}

/// A failed use case: its kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    pub kind: ErrorKind,
    pub message: String,
}

impl AppError {
    pub fn input(message: impl Into<String>) -> AppError {
        AppError {
            kind: ErrorKind::Input,
            message: message.into(),
        }
    }

    pub fn config(message: impl Into<String>) -> AppError {
        AppError {
            kind: ErrorKind::Config,
            message: message.into(),
        }
    }

    pub fn runtime(message: impl Into<String>) -> AppError {
        AppError {
            kind: ErrorKind::Runtime,
            message: message.into(),
        }
    }

    pub fn new(kind: ErrorKind, message: impl Into<String>) -> AppError {
        AppError {
            kind,
            message: message.into(),
        }
    }

    /// The process exit code: 1 for runtime failures, 2 for everything the person can fix
    /// (usage, configuration, input, an unknown id, a refused review).
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Runtime => 1,
            _ => 2,
        }
    }

    /// The HTTP status the API answers with.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            ErrorKind::Input => 400,
            ErrorKind::Config => 422,
            ErrorKind::Runtime => 500,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AppError {}

macro_rules! runtime_from {
    ($($t:ty),*) => {$(
        impl From<$t> for AppError {
            fn from(err: $t) -> AppError {
                AppError::runtime(err.to_string())
            }
        }
    )*};
}
runtime_from!(
    crate::store::StoreError,
    run::RunError,
    serde_json::Error,
    std::io::Error
);

pub type AppResult<T> = Result<T, AppError>;

pub fn load_config(path: Option<&Path>) -> AppResult<Config> {
    Config::load(path).map_err(|e| AppError::config(e.to_string()))
}

/// Opens (creating and migrating if needed) the configured database for reading and writing.
/// A SQLite file whose folder is missing or not writable is a configuration error that says
/// which folder and why, before SQLite's "unable to open database file".
pub async fn open_store(config: &Config) -> AppResult<Box<dyn Store>> {
    if let Some(file) = config.sqlite_file() {
        check_database_folder(&file)?;
    }
    let url = config.database_url();
    let key = audit_key(config)?;
    store::open(&url, key)
        .await
        .map_err(|e| AppError::runtime(format!("cannot open the database {url}: {e}")))
}

/// The audit key: from the environment variable `audit.key_env` names; without it, on SQLite,
/// from a key file beside the database (created with 32 random bytes, readable by its owner
/// only). PostgreSQL replicas must share one key, so there it must come from the environment.
pub fn audit_key(config: &Config) -> AppResult<store::AuditKey> {
    let var = &config.audit.key_env;
    if let Some(secret) = std::env::var_os(var).filter(|s| !s.is_empty()) {
        let secret = secret.into_encoded_bytes();
        return store::AuditKey::new(&secret)
            .map_err(|e| AppError::config(format!("environment variable {var}: {e}")));
    }
    let url = config.database_url();
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
    else {
        return Err(AppError::config(format!(
            "set {var} to the audit key (at least 16 random bytes, e.g. `openssl rand -hex 32`): on PostgreSQL every replica must share it, so it cannot come from a local file"
        )));
    };
    let key_file = PathBuf::from(format!("{path}.audit-key"));
    read_or_create_key_file(&key_file).map_err(|e| {
        AppError::config(format!(
            "audit key file {}: {e} (or set {var})",
            key_file.display()
        ))
    })
}

fn read_or_create_key_file(path: &Path) -> Result<store::AuditKey, String> {
    use rand::RngCore as _;
    use std::io::Write as _;
    if let Ok(text) = std::fs::read_to_string(path) {
        return store::AuditKey::new(text.trim().as_bytes());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    // Written whole to a private temporary file, then linked into place: a process starting
    // at the same moment either links first or reads the complete key of the one that did.
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let text = hex::encode(secret);
    let temporary = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
        })
        .and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match written {
        Ok(()) => store::AuditKey::new(text.as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
            store::AuditKey::new(text.trim().as_bytes())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Opens the configured database for the commands that only read (`queue list`, `queue show`,
/// `export`, `analyze`, `audit verify`, `prompt render`, `policy explain`, `policy replay`):
/// read-only, without migrating, so an auditor can inspect a read-only copy. A SQLite file that
/// does not exist yet is created as before (an empty queue, not an error).
pub async fn open_store_read_only(config: &Config) -> AppResult<Box<dyn Store>> {
    let url = config.database_url();
    match config.sqlite_file() {
        Some(file) if !file.exists() => return open_store(config).await,
        _ => {}
    }
    store::open_read_only(&url, store::AuditKey::unused())
        .await
        .map_err(|e| match e {
            store::StoreError::NotMigrated { .. } => AppError::runtime(format!("{url}: {e}")),
            other => AppError::runtime(format!(
                "cannot open the database {url} for reading: {other}"
            )),
        })
}

/// Says which folder and why when SQLite could not create or write the database `file`.
fn check_database_folder(file: &Path) -> AppResult<()> {
    let folder = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let problem = |why: String| {
        AppError::config(format!(
            "key `database.url`: cannot use the database {}: {why}",
            file.display()
        ))
    };
    match std::fs::metadata(&folder) {
        Err(err) => {
            return Err(problem(format!(
                "its folder {} does not exist or cannot be read ({err}); create it or point database.url elsewhere",
                folder.display()
            )))
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(problem(format!("{} is not a folder", folder.display())))
        }
        Ok(_) => {}
    }
    if file.is_dir() {
        return Err(problem("it is a folder, not a file".into()));
    }
    if file.exists() {
        if let Err(err) = std::fs::OpenOptions::new().append(true).open(file) {
            return Err(problem(format!(
                "the file is not writable ({err}); the read-only commands (queue list, queue show, analyze, audit verify, export) work on it"
            )));
        }
    }
    // SQLite creates the database and its -wal and -shm files next to it: the folder must be
    // writable even when the file is.
    let probe = folder.join(format!(".hypod-write-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(problem(format!(
            "its folder {} is not writable ({err}); SQLite writes the database and its -wal and -shm files there",
            folder.display()
        ))),
    }
}

pub fn load_governance(config: &Config) -> AppResult<Governance> {
    Governance::load(&config.policies_dir(), config.approval_settings())
        .map_err(|e| AppError::config(e.to_string()))
}

/// The configured proposer and its fallback, if any.
pub type ProposerPair = (Box<dyn Proposer>, Option<Box<dyn Proposer>>);

/// The proposer the configuration asks for, and the fallback.
pub fn proposers(config: &Config, governance: &Governance) -> AppResult<ProposerPair> {
    let builtin = BuiltinProposer {
        alpha: config.analysis.alpha,
        power: config.analysis.power,
    };
    match config.proposer.kind {
        ProposerKind::Builtin => Ok((Box::new(builtin), None)),
        ProposerKind::Openai => {
            let fallback: Option<Box<dyn Proposer>> = match config.llm.fallback {
                Fallback::Builtin => Some(Box::new(builtin)),
                Fallback::None => None,
            };
            Ok((Box::new(openai_proposer(config, governance)?), fallback))
        }
    }
}

/// The `prompts/` folder next to the configuration, if there is one (else the built-in prompts).
pub fn prompts_dir(config: &Config) -> Option<PathBuf> {
    let dir = config.resolve(Path::new("prompts"));
    dir.is_dir().then_some(dir)
}

/// The `openai` proposer as configured, with the policy set in plain words (each rule's
/// description).
pub fn openai_proposer(config: &Config, governance: &Governance) -> AppResult<OpenAiProposer> {
    let policies: Vec<PolicySummary> = governance
        .policies
        .rules
        .iter()
        .map(|rule| PolicySummary {
            id: rule.id.clone(),
            effect: rule.effect.as_str().to_string(),
            message: if rule.description.trim().is_empty() {
                rule.message.clone()
            } else {
                rule.description.clone()
            },
        })
        .collect();
    OpenAiProposer::new(config.llm.clone(), prompts_dir(config))
        .map(|p| p.with_policies(policies))
        .map_err(|e| AppError::config(e.to_string()))
}
