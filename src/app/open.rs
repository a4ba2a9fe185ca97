//! Opening what the use cases work on: the configured database (read-write, migrated; or
//! read-only, never migrated) after checking its folder, and the audit key (from the
//! environment, or on SQLite from a private key file beside the database). A database that
//! cannot be opened is named without its password. A key file made because none was found is
//! never used on a log that already has entries: a lost key file stops writers (and
//! verification) with a message instead of starting a second key.

use super::{AppError, AppResult};
use crate::config::{self, Config};
use crate::store::{self, Store};
use std::path::{Path, PathBuf};

/// Opens (creating and migrating if needed) the configured database for reading and writing.
/// A SQLite file whose folder is missing or not writable is a configuration error that says
/// which folder and why, before SQLite's "unable to open database file".
pub(super) async fn open_store(config: &Config, key: store::AuditKey) -> AppResult<Box<dyn Store>> {
    if let Some(file) = config.sqlite_file() {
        check_database_folder(&file)?;
    }
    let url = config.database_url();
    let store = store::open(&url, key.clone())
        .await
        .map_err(|e| open_failed(&url, "", &e))?;
    refuse_minted_key(config, &key, store.as_ref()).await?;
    Ok(store)
}

/// "cannot open the database URL: why", with the URL's password (and any the driver's message
/// might quote) shown as `***`.
fn open_failed(url: &str, purpose: &str, error: &store::StoreError) -> AppError {
    AppError::runtime(config::redact_url_passwords(&format!(
        "cannot open the database {}{purpose}: {error}",
        store::shown_url(url)
    )))
}

/// Refuses a key file this process has just made (none was found) when the log of `store`
/// already has entries: they were written under another key, and appending under a new one
/// would leave a log that verifies under neither. The new file is removed again, so the next
/// start says the same.
pub(super) async fn refuse_minted_key(
    config: &Config,
    key: &store::AuditKey,
    store: &dyn Store,
) -> AppResult<()> {
    if !key.is_minted() {
        return Ok(());
    }
    let logged =
        store.audit_head().await?.is_some() || !store.audit_entries(0, 1).await?.is_empty();
    if !logged {
        return Ok(());
    }
    let file = key_file(config);
    if let Some(file) = &file {
        let _ = std::fs::remove_file(file);
    }
    Err(AppError::config(format!(
        "the audit key file {} is missing, but the database {} already has audit entries: hypod will not make a new key for a log written under another one (its entries would verify under neither). Restore the key file from a backup, or set {} to the key that wrote this log; nothing was written",
        file.map_or_else(|| "?".to_string(), |f| f.display().to_string()),
        store::shown_url(&config.database_url()),
        config.audit.key_env
    )))
}

/// The key file beside a SQLite database (`None` on PostgreSQL).
fn key_file(config: &Config) -> Option<PathBuf> {
    let url = config.database_url();
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .map(|path| PathBuf::from(format!("{path}.audit-key")))
}

/// The audit key: from the environment variable `audit.key_env` names; without it, on SQLite,
/// from a key file beside the database (created with 32 random bytes, readable by its owner
/// only). PostgreSQL replicas must share one key, so there it must come from the environment.
pub(super) fn audit_key(config: &Config) -> AppResult<store::AuditKey> {
    let var = &config.audit.key_env;
    if let Some(secret) = std::env::var_os(var).filter(|s| !s.is_empty()) {
        let secret = secret.into_encoded_bytes();
        return store::AuditKey::new(&secret)
            .map_err(|e| AppError::config(format!("environment variable {var}: {e}")));
    }
    let Some(key_file) = key_file(config) else {
        return Err(AppError::config(format!(
            "set {var} to the audit key (at least 16 random bytes, e.g. `openssl rand -hex 32`): on PostgreSQL every replica must share it, so it cannot come from a local file"
        )));
    };
    // A key file made beside a database that already exists may be a lost one's replacement:
    // marked, so that opening refuses it on a log with entries ([`refuse_minted_key`]). A new
    // database's key (two first starts racing included) is not marked.
    let database = PathBuf::from(
        key_file
            .to_string_lossy()
            .trim_end_matches(".audit-key")
            .to_string(),
    );
    let existing = std::fs::metadata(&database).is_ok_and(|m| m.len() > 0);
    read_or_create_key_file(&key_file, existing).map_err(|e| {
        AppError::config(format!(
            "audit key file {}: {e} (or set {var})",
            key_file.display()
        ))
    })
}

fn read_or_create_key_file(path: &Path, beside_existing: bool) -> Result<store::AuditKey, String> {
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
        Ok(()) if beside_existing => store::AuditKey::minted(text.as_bytes()),
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
pub(super) async fn open_store_read_only(
    config: &Config,
    key: impl FnOnce() -> AppResult<store::AuditKey>,
) -> AppResult<Box<dyn Store>> {
    let url = config.database_url();
    match config.sqlite_file() {
        Some(file) if !file.exists() => return open_store(config, key()?).await,
        _ => {}
    }
    store::open_read_only(&url, store::AuditKey::unused())
        .await
        .map_err(|e| match e {
            store::StoreError::NotMigrated { .. } => {
                AppError::runtime(format!("{}: {e}", store::shown_url(&url)))
            }
            other => open_failed(&url, " for reading", &other),
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
