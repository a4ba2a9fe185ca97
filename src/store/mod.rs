//! Storage: what a store can do ([`Store`], split into capability traits), the values it keeps,
//! and the opening of a backend from a database URL. This is the only place that writes SQL;
//! every other module hands it values. The transactions are written once, for every backend,
//! in `shared`; each backend (`sqlite`, the embedded default, `migrations/sqlite/`; `postgres`,
//! several replicas sharing one database, `migrations/postgres/`) holds what it says its own
//! way, with its own migrations. Both serialise their write transactions (SQLite with
//! `BEGIN IMMEDIATE`, PostgreSQL with a transaction-scoped advisory lock), so a read-then-write
//! inside one of them (the audit chain's head, a review's previous status, an import's existing
//! rows, the queue mark a run was assessed against) sees no concurrent writer.

pub mod audit;
mod capabilities;
mod migrations;
pub mod postgres;
mod shared;
pub mod sqlite;
pub mod vouch;

pub use audit::{AuditKey, AuditProblem, AuditReport, SealedHead, StoredState};
pub use capabilities::{
    AuditLog, Backtests, Experiments, Outbox, ProposalCounts, Proposals, Pushes, Reviews, Runs,
    Slots, SourceStates, Store, Tokens,
};
pub use vouch::{DraftCheck, StoredToken};

use crate::domain::{Proposal, Role, StatusChange};
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt ({what}): {message}")]
    Corrupt { what: String, message: String },
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DATABASE")]
    UnsupportedUrl(String),
    /// Proposals were queued after the run read the queue: the run must assess its drafts again
    /// against the queue as it is now (see [`Runs::record_run`]).
    #[error("the proposal queue changed while the run was assessing its drafts (read at {read_at}, now {now})")]
    QueueChanged { read_at: QueueMark, now: QueueMark },
    /// A proposal the run meant to close (expire, supersede) was reviewed or closed since the
    /// run read the queue: nothing was written, the run assesses again.
    #[error("proposal {proposal_id} left pending review while the run was assessing its drafts")]
    ProposalMoved { proposal_id: String },
    #[error(transparent)]
    Review(#[from] crate::domain::ReviewError),
    /// The sealed head does not verify under the key this writer holds: appending would mix
    /// entries under two keys, so nothing is written.
    #[error("the audit log's sealed head does not verify under this audit key: the key this process holds (HYPOD_AUDIT_KEY, or the SQLite key file beside the database) differs from the one that wrote this log. Nothing was written; start hypod with the key that wrote the log")]
    AuditKeyMismatch,
    /// An approval of a proposal whose stored draft the audit log does not vouch for.
    #[error("proposal {proposal_id} cannot be approved: {problem}. Nothing was approved (the refusal is in the audit log); run `hypod audit verify`")]
    DraftNotVouched {
        proposal_id: String,
        problem: String,
    },
    #[error("slot {slot}: this process no longer holds its lease (another took it over, or it expired); nothing was written")]
    LeaseLost { slot: String },
    /// The SQLite database file is no longer the one this process opened (removed, replaced)
    /// or cannot be written.
    #[error("the database file {path} {problem}")]
    DatabaseFile { path: String, problem: String },
    /// A read-only open found a database its migrations have not fully reached (read-only
    /// commands never migrate).
    #[error("the database is at migration {have}, this hypod needs {need}: run `hypod migrate` (or any writing command) first; read-only commands never migrate")]
    NotMigrated { have: i64, need: i64 },
}

/// Ids looked up in one query by [`Proposals::get_proposals`].
pub(crate) const IDS_PER_QUERY: usize = 1000;

/// One notification waiting in the outbox: the run or the review it is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxItem {
    pub id: i64,
    pub about: Notice,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// What an outbox row announces.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// A recorded run (queued in the run's transaction).
    Run(String),
    /// A review that approved or rejected a proposal (queued in the review's transaction), as
    /// recorded.
    Review {
        proposal_id: String,
        review: crate::domain::Review,
    },
}

impl Notice {
    /// The run or proposal id, for logs.
    pub fn subject(&self) -> &str {
        match self {
            Notice::Run(id) => id,
            Notice::Review { proposal_id, .. } => proposal_id,
        }
    }
}

/// Where a proposal's push to the experimentation platform stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PushState {
    /// Waiting to be posted (or retried after a 429/5xx or a lost answer).
    Pending,
    /// Created on the platform: its experiment id and URL are kept.
    Pushed,
    /// The platform refused it (a 4xx), or hypod would not send its draft: the message is kept.
    Refused,
}

impl PushState {
    pub const ALL: [PushState; 3] = [PushState::Pending, PushState::Pushed, PushState::Refused];

    pub fn as_str(self) -> &'static str {
        match self {
            PushState::Pending => "pending",
            PushState::Pushed => "pushed",
            PushState::Refused => "refused",
        }
    }

    pub fn parse(text: &str) -> Option<PushState> {
        PushState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A proposal's push, as stored (shown by `queue show`, its `--json`, the API and the page).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PushRecord {
    pub proposal_id: String,
    /// `growthbook`.
    pub platform: String,
    pub state: PushState,
    /// Attempts so far.
    pub attempts: i64,
    /// The platform's experiment id, once pushed.
    pub experiment_id: Option<String>,
    /// Where the experiment is seen on the platform, once pushed.
    pub experiment_url: Option<String>,
    /// The HTTP status of the last answer that decided or delayed the push.
    pub http_status: Option<i64>,
    /// The platform's message (refused), or why the last attempt is retried (pending).
    pub error: Option<String>,
}

/// A claimed push: the proposal, and the attempt this claim counted (the finish is recorded
/// only while no other claim came since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushItem {
    pub proposal_id: String,
    pub attempts: i64,
}

/// How one push attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PushOutcome {
    /// Created (or found already created under its tracking key): an audit entry is written.
    Pushed {
        experiment_id: String,
        experiment_url: String,
        /// Whether a duplicate-key answer was confirmed by reading the experiment back.
        confirmed_duplicate: bool,
    },
    /// Refused for good (a 4xx, or a draft hypod may not send): an audit entry is written.
    Refused {
        http_status: Option<u16>,
        message: String,
    },
    /// To be tried again after `retry_in` (a 429/5xx, a lost answer).
    Retry {
        http_status: Option<u16>,
        error: String,
        retry_in: std::time::Duration,
    },
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UpsertCounts {
    pub inserted: usize,
    pub updated: usize,
    pub unchanged: usize,
}

/// One backtest's result as kept ([`Backtests`]): its `--json` view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestRecord {
    pub id: String,
    /// When it was kept (the database's clock; set by the store).
    pub ran_at: DateTime<Utc>,
    /// The proposer asked for (`builtin`, `openai`).
    pub proposer: String,
    pub result: serde_json::Value,
}

/// What the store keeps of one history source between syncs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceState {
    pub name: String,
    /// The kind's incremental state ([`crate::sources::Pull::state`]) of its last good sync.
    pub state: serde_json::Value,
    /// The ids it listed at its last good sync.
    pub listed: Vec<String>,
    /// When its last good sync was.
    pub last_ok_at: DateTime<Utc>,
}

/// One source's sync, to be written in one transaction ([`SourceStates::write_sync`]).
pub struct SyncWrite<'a> {
    pub source: &'a str,
    /// Who synced: `cli:USER`, `schedule`, an API principal.
    pub by: &'a str,
    /// The validated experiments the source read (not those it reported unchanged).
    pub experiments: &'a [crate::history::Experiment],
    /// Every id the source lists now: those read and those it reported unchanged.
    pub listed: &'a [String],
    pub state: &'a serde_json::Value,
    /// Records read, requests made, and the digest of what was read, for the audit entry.
    pub read: usize,
    pub requests: u64,
    pub read_digest: &'a str,
}

/// What a sync wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncCounts {
    pub inserted: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Ids the source listed at its previous good sync and no longer lists: kept, reported.
    pub vanished: Vec<String>,
}

/// How far the proposal queue has grown: the number of proposals ever stored. Proposals are
/// never deleted, so two equal marks mean nothing was queued in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct QueueMark(pub i64);

impl std::fmt::Display for QueueMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} proposals", self.0)
    }
}

/// The upper bounds, in seconds, of the buckets the stored runs' durations are counted in
/// ([`Runs::run_tally`]); a last bucket above them holds the longer runs.
pub const RUN_SECONDS_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The stored runs of one trigger kind (`schedule`, `cli`, `api`, `demo`) and status that took
/// as long as one bucket of [`RUN_SECONDS_BUCKETS`] allows: every row of the `runs` table,
/// whichever process recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTally {
    pub trigger: String,
    pub status: String,
    /// Index into [`RUN_SECONDS_BUCKETS`]; its length for the runs longer than the last bound.
    pub bucket: usize,
    pub runs: u64,
    /// The runs' durations added up, in seconds.
    pub seconds: f64,
}

/// Where the stored history stands for its readers: the audit log's last sequence number, and
/// whether an entry after the one a reader asked about changed what the history's analysis
/// reads (an import, or a run and the proposals it stored). Every such write appends its audit
/// entry in its own transaction, under the database's one write lock, so a cached analysis
/// checked at `head` is current until an entry after `head` says otherwise, on every replica
/// and for every process writing to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryMark {
    /// The last audit entry's sequence number (0 for an empty log).
    pub head: i64,
    /// Whether an entry after the asked-about sequence number changed the history.
    pub changed: bool,
}

/// What a proposal row's `body` holds on every backend (status and times live in columns).
#[derive(Serialize, serde::Deserialize)]
pub(crate) struct ProposalBody {
    pub draft: crate::domain::ProposalDraft,
    pub enrichment: crate::domain::Enrichment,
    pub verdicts: Vec<crate::governance::Verdict>,
    pub provenance: crate::domain::Provenance,
}

impl ProposalBody {
    pub(crate) fn of(proposal: &Proposal) -> ProposalBody {
        ProposalBody {
            draft: proposal.draft.clone(),
            enrichment: proposal.enrichment.clone(),
            verdicts: proposal.verdicts.clone(),
            provenance: proposal.provenance.clone(),
        }
    }
}

pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        message: err.to_string(),
    }
}

/// One entry of the hash-chained audit log.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    /// RFC 3339, as hashed.
    pub at: String,
    pub actor: String,
    #[schema(value_type = String)]
    pub action: crate::domain::AuditAction,
    pub subject: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
    /// HMAC of `hash` under the audit key (`None` only on a tampered row).
    pub mac: Option<String>,
}

/// The audit log with what it must explain, as of one moment.
pub struct AuditSnapshot {
    pub entries: Vec<AuditEntry>,
    pub sealed: Option<SealedHead>,
    pub state: StoredState,
}

/// An API token as stored: who it identifies and in which role. Its secret is never stored,
/// only the secret's SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenRecord {
    pub id: String,
    /// The normalised identity of the person it belongs to.
    pub user: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
    /// A person's token, or an agent's (which never approves or rejects).
    #[serde(default)]
    pub kind: crate::domain::TokenKind,
    /// The SHA-256 of its secret ([`token_hash`]), as stored: never shown.
    #[serde(skip)]
    pub hash: String,
}

/// The one timestamp format hypod stores (RFC 3339, microseconds, UTC).
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The SHA-256 of an API token's secret: what is stored and looked up.
pub fn token_hash(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The detail of the audit entry that closes a proposal without a review.
pub(crate) fn closing_detail(run_id: &str, change: &StatusChange) -> String {
    serde_json::json!({
        "run_id": run_id,
        "status": change.closing.status().as_str(),
        "reason": change.reason,
        "superseded_by": change.superseded_by,
    })
    .to_string()
}

/// The hash of an audit entry: sha256 over the previous hash and the entry's fields.
pub fn audit_hash(
    prev_hash: &str,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in [prev_hash, at, actor, action, subject, detail] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The backend a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sqlite:…` or `postgres://…` / `postgresql://…`.
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// A database URL as messages show it: its password replaced by `***`.
pub fn shown_url(url: &str) -> String {
    crate::config::redact_url_passwords(url)
}

/// Opens the database a URL names (a SQLite file is created if needed; a PostgreSQL database
/// must exist), and migrates it. Audit entries are keyed with `key`.
pub async fn open(url: &str, key: AuditKey) -> Result<Box<dyn Store>, StoreError> {
    let store: Box<dyn Store> = match Backend::of_url(url) {
        Some(Backend::Sqlite) => Box::new(sqlite::SqliteStore::connect(url, key).await?),
        Some(Backend::Postgres) => Box::new(postgres::PostgresStore::connect(url, key).await?),
        None => return Err(StoreError::UnsupportedUrl(shown_url(url))),
    };
    store.migrate().await?;
    Ok(store)
}

/// Opens the database a URL names for reading only: no migration and nothing created (SQLite
/// `mode=ro`, PostgreSQL read-only transactions), so the read-only commands work on a
/// read-only copy. The database must exist and be migrated.
pub async fn open_read_only(url: &str, key: AuditKey) -> Result<Box<dyn Store>, StoreError> {
    Ok(match Backend::of_url(url) {
        Some(Backend::Sqlite) => Box::new(sqlite::SqliteStore::connect_read_only(url, key).await?),
        Some(Backend::Postgres) => {
            Box::new(postgres::PostgresStore::connect_read_only(url, key).await?)
        }
        None => return Err(StoreError::UnsupportedUrl(shown_url(url))),
    })
}

/// [`StoreError::NotMigrated`] unless the latest migration applied (`applied`, `None` when
/// there is none or no migration table) is the latest this build knows.
pub(crate) fn check_migrated(
    applied: Option<i64>,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    let need = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let have = applied.unwrap_or(0);
    if have < need {
        Err(StoreError::NotMigrated { have, need })
    } else {
        Ok(())
    }
}

/// The latest successful migration, as sqlx records it (`None` without its table).
const LATEST_MIGRATION: &str = "SELECT max(version) FROM _sqlx_migrations WHERE success";

/// A LIKE pattern matching `text` anywhere, with `%`, `_` and `\\` taken literally.
pub(crate) fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}
