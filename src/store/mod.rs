//! Storage: the one trait every backend implements, and the opening of a backend from a
//! database URL. This is the only place that writes SQL; every other module hands it values.
//! One implementation per backend, each with its own migrations: `sqlite` (the embedded default,
//! `migrations/sqlite/`) and `postgres` (several replicas sharing one database,
//! `migrations/postgres/`). Both serialise their write transactions (SQLite with
//! `BEGIN IMMEDIATE`, PostgreSQL with a transaction-scoped advisory lock), so a read-then-write
//! inside one of them (the audit chain's head, a review's previous status, an import's existing
//! rows, the queue mark a run was assessed against) sees no concurrent writer.

pub mod audit;
pub mod postgres;
pub mod sqlite;

pub use audit::{AuditKey, AuditProblem, AuditReport, SealedHead, StoredState};

use crate::domain::{
    AuditHead, Claim, Fence, Proposal, ProposalFilter, Review, Role, RunRecord, SlotRecord,
    SlotStatus, StatusChange,
};
use crate::history::Experiment;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

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
    /// against the queue as it is now (see [`Store::record_run`]).
    #[error("the proposal queue changed while the run was assessing its drafts (read at {read_at}, now {now})")]
    QueueChanged { read_at: QueueMark, now: QueueMark },
    /// A proposal the run meant to close (expire, supersede) was reviewed or closed since the
    /// run read the queue: nothing was written, the run assesses again.
    #[error("proposal {proposal_id} left pending review while the run was assessing its drafts")]
    ProposalMoved { proposal_id: String },
    #[error(transparent)]
    Review(#[from] crate::domain::ReviewError),
    #[error("slot {slot}: this process no longer holds its lease (another took it over, or it expired); nothing was written")]
    LeaseLost { slot: String },
    /// A read-only open found a database its migrations have not fully reached (read-only
    /// commands never migrate).
    #[error("the database is at migration {have}, this hypod needs {need}: run `hypod migrate` (or any writing command) first; read-only commands never migrate")]
    NotMigrated { have: i64, need: i64 },
}

/// Ids looked up in one query by [`Store::get_proposals`].
pub(crate) const IDS_PER_QUERY: usize = 1000;

/// One notification waiting in the outbox: the run it is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxItem {
    pub id: i64,
    pub run_id: String,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UpsertCounts {
    pub inserted: usize,
    pub updated: usize,
    pub unchanged: usize,
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

#[async_trait]
pub trait Store: Send + Sync {
    /// Applies this backend's migrations (idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Inserts or updates experiments by id, all in one transaction.
    async fn upsert_experiments(
        &self,
        experiments: &[Experiment],
    ) -> Result<UpsertCounts, StoreError>;
    async fn load_experiments(&self) -> Result<Vec<Experiment>, StoreError>;

    /// The queue's current [`QueueMark`]. A run reads it before it reads the open proposals.
    async fn queue_mark(&self) -> Result<QueueMark, StoreError>;

    /// Stores a run and its proposals in one transaction, with their audit entries, and closes
    /// the open proposals `changes` name (expired, superseded), each with a `proposal.<status>`
    /// audit entry, only while they are still pending review.
    ///
    /// `read_at` is the mark the run read before the open proposals it checked its drafts
    /// against. If proposals were queued since (another run, another replica), nothing is
    /// written and [`StoreError::QueueChanged`] is returned: the caller assesses its drafts again
    /// and retries. The check and the insert happen in the same serialised write transaction,
    /// so two concurrent runs never both queue the same idea. With a fence, the same
    /// transaction ends the slot, and nothing is written unless the fence still holds a live
    /// lease ([`StoreError::LeaseLost`]).
    async fn record_run(
        &self,
        run: &RunRecord,
        proposals: &[Proposal],
        changes: &[StatusChange],
        read_at: Option<QueueMark>,
        fence: Option<&Fence>,
    ) -> Result<AuditHead, StoreError>;
    async fn list_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError>;
    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError>;

    /// Up to `limit` undelivered notifications that are due, each held for `hold` (its next
    /// attempt moved that far ahead and its attempts counted) so that no other process sends
    /// it meanwhile. Rows older than `max_age` are given up (marked, never sent).
    async fn claim_notifications(
        &self,
        limit: usize,
        hold: Duration,
        max_age: Duration,
    ) -> Result<Vec<OutboxItem>, StoreError>;
    /// Records a delivery attempt: delivered, or failed with the error and the next attempt
    /// `retry_in` from now.
    async fn finish_notification(
        &self,
        id: i64,
        outcome: Result<(), String>,
        retry_in: Duration,
    ) -> Result<(), StoreError>;
    /// (delivered, pending) notification counts.
    async fn notification_counts(&self) -> Result<(usize, usize), StoreError>;

    async fn list_proposals(&self, filter: &ProposalFilter) -> Result<Vec<Proposal>, StoreError>;
    async fn get_proposal(&self, id: &str) -> Result<Option<Proposal>, StoreError>;
    /// The stored proposals among `ids` (ids no proposal has are left out), by id.
    async fn get_proposals(&self, ids: &[String]) -> Result<Vec<Proposal>, StoreError>;
    async fn proposal_reviews(&self, id: &str) -> Result<Vec<Review>, StoreError>;
    /// Rejections since `since`, each with its proposal (proposers learn from the reasons).
    async fn recent_rejections(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Proposal, Review)>, StoreError>;

    /// Records a review and applies its effect ([`crate::domain::apply_review`]) atomically.
    async fn review(&self, review: &Review) -> Result<Proposal, StoreError>;

    /// The whole audit log, oldest first.
    async fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError>;
    /// Up to `limit` audit entries after sequence number `after`, oldest first.
    async fn audit_entries(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// The sealed head of the audit chain, if anything was ever logged.
    async fn audit_head(&self) -> Result<Option<SealedHead>, StoreError>;
    /// The log, its sealed head and what it is replayed against (every proposal's status and
    /// every review), read in one snapshot.
    async fn audit_snapshot(&self) -> Result<AuditSnapshot, StoreError>;

    /// Stores a new token (`hash`: the SHA-256 of its secret) with its audit entry.
    async fn create_token(&self, token: &TokenRecord, hash: &str) -> Result<(), StoreError>;
    /// Every token, revoked ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Revokes a token with its audit entry; `false` when no live token has that id.
    async fn revoke_token(&self, id: &str, by: &str) -> Result<bool, StoreError>;
    /// The live (not revoked) token whose secret hashes to `hash`.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Claims a slot for `owner` with a lease of `lease` on the database's clock: a new slot,
    /// or a running one whose lease expired (taken over, with the next fencing token).
    async fn claim_slot(
        &self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError>;
    /// Extends the lease; `false` when the fence no longer holds it.
    async fn renew_lease(&self, fence: &Fence, lease: Duration) -> Result<bool, StoreError>;
    /// Ends a slot without a recorded run (failed before recording, timed out, skipped);
    /// `false` when the fence no longer holds it.
    async fn end_slot(
        &self,
        fence: &Fence,
        status: SlotStatus,
        reason: &str,
    ) -> Result<bool, StoreError>;
    /// Lets the lease expire now (graceful shutdown: another replica may take over at once).
    async fn release_slot(&self, fence: &Fence) -> Result<(), StoreError>;
    /// Running slots whose lease has expired, oldest first.
    async fn expired_slots(&self) -> Result<Vec<String>, StoreError>;
    /// Slots, newest claims first.
    async fn list_slots(&self, limit: usize) -> Result<Vec<SlotRecord>, StoreError>;
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

/// Opens the database a URL names (a SQLite file is created if needed; a PostgreSQL database
/// must exist), and migrates it. Audit entries are keyed with `key`.
pub async fn open(url: &str, key: AuditKey) -> Result<Box<dyn Store>, StoreError> {
    let store: Box<dyn Store> = match Backend::of_url(url) {
        Some(Backend::Sqlite) => Box::new(sqlite::SqliteStore::connect(url, key).await?),
        Some(Backend::Postgres) => Box::new(postgres::PostgresStore::connect(url, key).await?),
        None => return Err(StoreError::UnsupportedUrl(url.to_string())),
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
        None => return Err(StoreError::UnsupportedUrl(url.to_string())),
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
