//! The use cases: what hypod does, once, for the command line, the daemon, the HTTP API and the
//! web UI. [`App`] holds what every use case works on — the configuration, the database, the
//! audit key and the policy set — and has one method per use case, each in the file of its
//! subject (`queue`, `run`, `import`, `sync`, `analyze`, `policy`, `audit`, `access`, `setup`). A
//! method takes typed input and returns a typed, serialisable view (the `--json` output is that
//! view) or an [`AppError`] that says what kind of failure it is. Use cases never parse command
//! lines and never print. What several use cases read alike (the history with its analysis,
//! the open queue) is loaded in one place, [`load`]; the history's analysis is cached per
//! version of the stored history, and heavy reads are kept off the async workers, in
//! [`reads`].

pub mod access;
pub mod agents;
pub mod analyze;
pub mod audit;
pub mod backtest;
pub mod cache;
pub mod decision;
mod error;
pub mod import;
pub mod load;
mod open;
pub mod policy;
pub mod push;
pub mod queue;
pub mod reads;
pub mod run;
pub mod setup;
pub mod sync;

pub use error::{AppError, AppResult, ErrorKind};

use crate::config::{Config, ProposerKind};
use crate::governance::Governance;
use crate::proposer::builtin::BuiltinProposer;
use crate::proposer::openai::{Fallback, OpenAiProposer, PolicySummary};
use crate::proposer::Proposer;
use crate::store::{AuditKey, Store};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// How a use case may touch the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and write; the database is created and migrated when it is opened.
    ReadWrite,
    /// Read only, never migrated (SQLite `mode=ro`, PostgreSQL read-only transactions), so the
    /// reading commands work on a read-only copy.
    ReadOnly,
}

/// What every use case works on. The database is opened on first use, not before: input that
/// is refused (an invalid import, a broken policy) never opens or creates it. The policy set is
/// read from disk at each use, so an edit merged into `policies/` takes effect at the next run
/// without a restart.
pub struct App {
    config: Config,
    access: Access,
    store: tokio::sync::OnceCell<Arc<dyn Store>>,
    audit_key: OnceLock<AuditKey>,
    /// The analysis cache and the bound on heavy reads.
    reads: Arc<reads::Reads>,
    /// Agents' submissions in the last minute, per token ([`agents`]).
    submissions: agents::Limiter,
    /// Verified bearer tokens, believed for `server.token_cache_seconds`.
    tokens: cache::TokenCache,
    /// Pages of the queue, kept while the audit log's head stays where it was.
    listings: cache::Listings,
}

impl App {
    /// The use cases on the configured database, read-write.
    pub fn new(config: Config) -> App {
        App::with_access(config, Access::ReadWrite)
    }

    /// The use cases on the configured database, read-only (the reading commands).
    pub fn read_only(config: Config) -> App {
        App::with_access(config, Access::ReadOnly)
    }

    fn with_access(config: Config, access: Access) -> App {
        App {
            access,
            store: tokio::sync::OnceCell::new(),
            audit_key: OnceLock::new(),
            reads: Arc::new(reads::Reads::default()),
            submissions: agents::Limiter::default(),
            tokens: cache::TokenCache::new(std::time::Duration::from_secs(
                config.server.token_cache_seconds,
            )),
            listings: cache::Listings::default(),
            config,
        }
    }

    /// Audit entries are keyed with `key` instead of the one the configuration names.
    pub fn with_audit_key(self, key: AuditKey) -> App {
        let _ = self.audit_key.set(key);
        self
    }

    /// Reads `hypod.toml` (`path`, else `HYPOD_CONFIG`, else the working folder) with the
    /// `HYPOD_*` overrides.
    pub fn load_config(path: Option<&Path>) -> AppResult<Config> {
        Config::load(path).map_err(|e| AppError::config(e.to_string()))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The database, opened (and for read-write use migrated) on the first call.
    pub async fn store(&self) -> AppResult<&Arc<dyn Store>> {
        self.store
            .get_or_try_init(|| async {
                let store = match self.access {
                    Access::ReadWrite => open::open_store(&self.config, self.audit_key()?).await?,
                    Access::ReadOnly => {
                        open::open_store_read_only(&self.config, || self.audit_key()).await?
                    }
                };
                Ok(Arc::from(store))
            })
            .await
    }

    /// The key the audit log is written and verified with: `audit.key_env`'s variable, else
    /// on SQLite a private key file beside the database.
    pub fn audit_key(&self) -> AppResult<AuditKey> {
        if let Some(key) = self.audit_key.get() {
            return Ok(key.clone());
        }
        let key = open::audit_key(&self.config)?;
        Ok(self.audit_key.get_or_init(|| key).clone())
    }

    /// Runs a heavy read (one that reads or analyses the whole history) on the blocking pool,
    /// at most [`reads::Reads::bound`] at once; see [`reads`]. `work` must not call it again.
    pub async fn heavy<T, F>(&self, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = AppResult<T>> + Send + 'static,
    {
        self.reads.run(work).await
    }

    /// The analysis cache's and the heavy reads' counters, for `/metrics`.
    pub fn read_stats(&self) -> reads::ReadStats {
        self.reads.stats()
    }

    /// The policy set and catalog as they are on disk now.
    pub fn governance(&self) -> AppResult<Governance> {
        Governance::load(&self.config.policies_dir(), self.config.approval_settings())
            .map_err(|e| AppError::config(e.to_string()))
    }

    /// The proposer the configuration asks for, and its fallback.
    pub fn proposers(&self, governance: &Governance) -> AppResult<ProposerPair> {
        proposers(&self.config, governance)
    }
}

impl AsRef<App> for App {
    fn as_ref(&self) -> &App {
        self
    }
}

/// The configured proposer and its fallback, if any.
pub type ProposerPair = (Box<dyn Proposer>, Option<Box<dyn Proposer>>);

/// The proposer the configuration asks for, and the fallback.
fn proposers(config: &Config, governance: &Governance) -> AppResult<ProposerPair> {
    let builtin = BuiltinProposer {
        alpha: config.analysis.alpha,
        power: config.analysis.power,
        min_days: config.proposer.min_days,
        max_days: config.proposer.max_days,
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
fn prompts_dir(config: &Config) -> Option<PathBuf> {
    let dir = config.resolve(Path::new("prompts"));
    dir.is_dir().then_some(dir)
}

/// The `openai` proposer as configured, with the policy set in plain words (each rule's
/// description).
pub(crate) fn openai_proposer(
    config: &Config,
    governance: &Governance,
) -> AppResult<OpenAiProposer> {
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
