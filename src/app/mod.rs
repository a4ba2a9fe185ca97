//! The use cases: what hypod does, once, for the command line now and the daemon, the HTTP API
//! and the web UI later. Each takes typed input and returns a typed, serialisable view (the
//! `--json` output is that view) or an [`AppError`] that says what kind of failure it is. The
//! use cases load configuration-dependent pieces (store, governance, proposers) through the
//! helpers here; they never parse command lines and never print.

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

    /// The process exit code: 2 for bad usage, configuration or input, 1 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Input | ErrorKind::Config => 2,
            ErrorKind::Runtime => 1,
        }
    }

    /// The HTTP status the API will answer with.
    pub fn http_status(&self) -> u16 {
        match self.kind {
            ErrorKind::Input => 400,
            ErrorKind::Config => 422,
            ErrorKind::Runtime => 500,
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
    store::open(&url)
        .await
        .map_err(|e| AppError::runtime(format!("cannot open the database {url}: {e}")))
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
    store::open_read_only(&url).await.map_err(|e| match e {
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
