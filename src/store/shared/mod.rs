//! The storage transactions, written once for every backend: recording a run (the queue mark
//! check, the fence, the outbox row), a review, claiming and renewing a slot, the outbox,
//! tokens and imports with their audit entries, and the audit chain's append itself. What a
//! backend must say differently is the narrow interface below ([`Dialect`] for the store,
//! [`Driver`] for its database); the backends (`sqlite.rs`, `postgres.rs`) implement it and
//! keep only what really differs. The transactions are written against [`Conn`], a connection
//! or transaction, which [`Held`] implements once for every [`Driver`].
//!
//! # Why this shape
//!
//! The statements of a transaction read the same on both backends once placeholders are
//! numbered (`$1`: PostgreSQL's own, and sqlx's SQLite driver binds `$N` to the N-th argument,
//! as it does `?N`) and `RETURNING` is used (SQLite has it since 3.35). What differs is small
//! and of a few kinds, each given one place:
//!
//! - how a write transaction takes the database's one write lock (SQLite `BEGIN IMMEDIATE`,
//!   PostgreSQL a transaction-scoped advisory lock): [`Dialect::begin_write`];
//! - the database's clock as an SQL expression ([`Dialect::NOW`], spliced into the statements
//!   that write `{now}`: a constant, never a value). Every time that decides state (a lease,
//!   the outbox, a review's stamp, a token's revocation, an import's stamps, the moment a run
//!   expires proposals against) is the database's, read by [`database_now`], never the
//!   process's (whose `HYPOD_NOW` only fixes the analysis date);
//! - the types a value is stored as: times (RFC 3339 text on SQLite, `timestamptz` on
//!   PostgreSQL), JSON bodies (text, `jsonb`), the approvals count (64-bit, 32-bit). A
//!   statement's arguments are given as [`Arg`]s and each backend binds the [`Typed`] ones in
//!   its own types ([`Driver::typed`]);
//! - a statement one backend says in its own way: PostgreSQL's one-round-trip import of a batch
//!   ([`Driver::upsert_distinct`]), and the reads inside a transaction whose rows differ (a
//!   proposal, reviews, audit entries: times are text on one, `timestamptz` on the other);
//! - the reads outside transactions whose rows or SQL differ (the queue's filters, tokens,
//!   experiments, rejections) stay in each backend, as the [`super::Proposals`] impl and the
//!   reads of [`Dialect`].
//!
//! Considered and not taken: transactions generic over `sqlx::Database` itself (every bound
//! type and the executor need higher-ranked `Encode`/`Type`/`Executor` bounds that Rust does
//! not carry from a trait to its users, so each transaction would repeat a dozen `where`
//! lines; here they are written once, on [`Held`]'s impl), and a macro expanding one body per
//! backend as vaultwarden's `db_run!` does (it works, but code inside a macro is not
//! formatted, and errors point into the expansion). Here each transaction is an ordinary
//! generic function over [`Dialect`] (the capability traits are implemented once, for every
//! `Dialect`); the cost is one small allocation per statement for its arguments, nothing next
//! to a round trip.

mod audit_log;
mod backtests;
mod driver;
mod experiments;
mod proposal_counts;
mod pushes;
mod reviews;
mod runs;
mod slots;
mod sources;

use super::{audit_hash, timestamp, AuditEntry, AuditKey, StoreError};
use crate::domain::{AuditAction, AuditHead, Proposal, Review, RunRecord};
use crate::history::Experiment;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::FromRow;
use std::borrow::Cow;

pub(crate) use driver::{Driver, Held};

/// What a backend is beyond its statements: its write lock, its clock, its connections, and
/// the few reads of capabilities that are otherwise shared.
#[async_trait]
pub(crate) trait Dialect: Send + Sync + 'static {
    type Conn: Conn;
    /// The database's clock, in seconds since the epoch, as an SQL expression: leases and the
    /// outbox never trust a replica's clock.
    const NOW: &'static str;
    /// A stored run's duration in seconds (`finished_at - started_at` of the `runs` row), as
    /// an SQL expression.
    const RUN_SECONDS: &'static str;
    /// The key audit entries are made with.
    fn audit_key(&self) -> &AuditKey;
    /// A connection from the pool, each statement committed on its own.
    async fn connection(&self) -> Result<Self::Conn, StoreError>;
    /// A write transaction holding the database's one write lock from its first statement, so
    /// that a read-then-write inside it sees no concurrent writer (on every replica).
    async fn begin_write(&self) -> Result<Self::Conn, StoreError>;
    /// A read-only transaction whose reads all see one moment.
    async fn begin_snapshot(&self) -> Result<Self::Conn, StoreError>;

    async fn load_experiments(&self) -> Result<Vec<Experiment>, StoreError>;
    async fn recent_rejections(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Proposal, Review)>, StoreError>;
    async fn list_tokens(&self) -> Result<Vec<super::TokenRecord>, StoreError>;
    async fn token_by_hash(&self, hash: &str) -> Result<Option<super::TokenRecord>, StoreError>;
}

/// A connection, or a transaction, running the shared statements: what the transactions are
/// written against. Implemented once, by [`Held`], over each backend's [`Driver`].
#[async_trait]
pub(crate) trait Conn: Send {
    /// Runs a statement; the number of rows it changed.
    async fn execute(&mut self, sql: Sql, args: &[Arg<'_>]) -> Result<u64, StoreError>;
    async fn fetch_one<T: Fetch>(&mut self, sql: Sql, args: &[Arg<'_>]) -> Result<T, StoreError>;
    async fn fetch_optional<T: Fetch>(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> Result<Option<T>, StoreError>;
    async fn fetch_all<T: Fetch>(
        &mut self,
        sql: Sql,
        args: &[Arg<'_>],
    ) -> Result<Vec<T>, StoreError>;
    /// Commits a write transaction (nothing to do on a plain connection). Dropped without it,
    /// a transaction rolls back.
    async fn commit(self) -> Result<(), StoreError>;

    /// The proposal with this id, as stored.
    async fn proposal(&mut self, id: &str) -> Result<Option<Proposal>, StoreError>;
    /// A proposal's reviews (`Some(id)`), or every review (`None`), oldest first.
    async fn reviews(&mut self, of: Option<&str>) -> Result<Vec<Review>, StoreError>;
    /// Up to `limit` audit entries after sequence number `after`, oldest first.
    async fn audit_entries(
        &mut self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;
    /// Inserts or updates a batch of experiments with distinct ids in one statement, leaving
    /// unchanged bodies untouched: `Some` of each id written with whether it was inserted
    /// (else updated), or `None` where the backend has no such statement (the batch then goes
    /// row by row).
    async fn upsert_distinct(
        &mut self,
        batch: &[Experiment],
        bodies: &[String],
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<(String, bool)>>, StoreError>;
}

/// A row both backends decode the same way (a tuple of plain columns).
pub(crate) trait Fetch:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin + 'static
{
}

impl<T> Fetch for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin + 'static
{
}

/// The text of a statement: a constant, or a constant with the database's clock spliced in.
pub(crate) struct Sql(Cow<'static, str>);

impl Sql {
    /// A statement as written.
    pub(crate) const fn new(text: &'static str) -> Sql {
        Sql(Cow::Borrowed(text))
    }

    /// A statement whose `{now}` stands for the database's clock ([`Dialect::NOW`]).
    pub(crate) fn clocked<D: Dialect>(text: &'static str) -> Sql {
        Sql(Cow::Owned(text.replace("{now}", D::NOW)))
    }

    /// The statement that counts the stored runs by trigger kind, status and duration bucket
    /// ([`crate::store::RUN_SECONDS_BUCKETS`]): built from constants only.
    pub(crate) fn run_tally<D: Dialect>() -> Sql {
        let mut bucket = String::from("CASE");
        for (i, bound) in crate::store::RUN_SECONDS_BUCKETS.iter().enumerate() {
            bucket.push_str(&format!(" WHEN d <= {bound:?} THEN {i}"));
        }
        bucket.push_str(&format!(
            " ELSE {} END",
            crate::store::RUN_SECONDS_BUCKETS.len()
        ));
        Sql(Cow::Owned(format!(
            "SELECT CASE WHEN trigger LIKE 'schedule:%' THEN 'schedule' \
             WHEN trigger LIKE 'mcp:%' THEN 'mcp' WHEN trigger LIKE 'api:%' THEN 'api' \
             ELSE trigger END, \
             status, CAST({bucket} AS BIGINT), COUNT(*), SUM(d) \
             FROM (SELECT trigger, status, {} AS d FROM runs) AS r GROUP BY 1, 2, 3",
            D::RUN_SECONDS
        )))
    }

    /// A statement whose `{list}` stands for `n` numbered placeholders (`$1, $2, …, $n`): an
    /// `IN (…)` list of `n` arguments, built from a count, never from a value.
    pub(crate) fn listing(text: &'static str, n: usize) -> Sql {
        let list: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        Sql(Cow::Owned(text.replace("{list}", &list.join(", "))))
    }

    /// For the backend's query: built only from the constants above, never from a value.
    pub(crate) fn into_safe(self) -> sqlx::AssertSqlSafe<Cow<'static, str>> {
        sqlx::AssertSqlSafe(self.0)
    }
}

/// One argument of a statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    Real(f64),
    /// A value each backend stores in its own type.
    Typed(Typed<'a>),
}

/// The values whose stored type differs between backends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Typed<'a> {
    /// A moment, stored to the microsecond.
    Time(DateTime<Utc>),
    /// A JSON document, as serialised.
    Json(&'a str),
    /// The approvals a proposal requires.
    Count(u32),
}

impl<'a> Arg<'a> {
    pub(crate) fn time(at: DateTime<Utc>) -> Arg<'a> {
        Arg::Typed(Typed::Time(at))
    }

    pub(crate) fn json(text: &'a str) -> Arg<'a> {
        Arg::Typed(Typed::Json(text))
    }

    /// A count or limit, saturated to the database's integer.
    pub(crate) fn size(n: usize) -> Arg<'a> {
        Arg::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// The database's clock, read through `conn` (in a write transaction: a moment after every
/// write committed before it), to the microsecond as times are stored.
pub(crate) async fn database_now<D: Dialect, C: Conn>(
    conn: &mut C,
) -> Result<DateTime<Utc>, StoreError> {
    let (seconds,): (f64,) = conn
        .fetch_one(Sql::clocked::<D>("SELECT {now}"), &[])
        .await?;
    // Whole microseconds: an f64 of seconds since 1970 carries about a microsecond's precision.
    DateTime::from_timestamp_micros((seconds * 1e6).round() as i64)
        .ok_or_else(|| super::corrupt("the database's clock", format!("{seconds} s")))
}

/// Appends one entry to the chain, keyed, and seals the new head, inside `tx` (a write
/// transaction: the head it reads is the head it extends). Refused
/// ([`StoreError::AuditKeyMismatch`]) when the sealed head (or, without one, the last entry)
/// does not verify under `key`.
pub(crate) async fn append_audit<C: Conn>(
    tx: &mut C,
    key: &AuditKey,
    actor: &str,
    action: AuditAction,
    subject: &str,
    detail: &str,
) -> Result<AuditHead, StoreError> {
    let prev: Option<(String, Option<String>)> = tx
        .fetch_optional(
            Sql::new("SELECT hash, mac FROM audit_log ORDER BY seq DESC LIMIT 1"),
            &[],
        )
        .await?;
    // A writer holding another key than the one that wrote the log refuses to append: entries
    // under two keys would verify under neither.
    let sealed = audit_log::sealed_head(tx).await?;
    let other_key = match (&sealed, &prev) {
        (Some(sealed), _) => sealed.mac != key.head_mac(sealed.head.seq, &sealed.head.hash),
        (None, Some((hash, Some(mac)))) => *mac != key.entry_mac(hash),
        (None, _) => false,
    };
    if other_key {
        return Err(StoreError::AuditKeyMismatch);
    }
    let prev = prev.map(|(hash, _)| hash).unwrap_or_default();
    let now = Utc::now();
    // As stored: to the microsecond on both backends.
    let at = timestamp(now);
    let action = action.to_string();
    let hash = audit_hash(&prev, &at, actor, &action, subject, detail);
    let mac = key.entry_mac(&hash);
    let (seq,): (i64,) = tx
        .fetch_one(
            Sql::new(
                "INSERT INTO audit_log (at, actor, action, subject, detail, prev_hash, hash, mac) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
            ),
            &[
                Arg::time(now),
                Arg::Text(actor),
                Arg::Text(&action),
                Arg::Text(subject),
                Arg::Text(detail),
                Arg::Text(&prev),
                Arg::Text(&hash),
                Arg::Text(&mac),
            ],
        )
        .await?;
    let head_mac = key.head_mac(seq, &hash);
    tx.execute(
        Sql::new(
            "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac",
        ),
        &[Arg::Int(seq), Arg::Text(&hash), Arg::Text(&head_mac)],
    )
    .await?;
    Ok(AuditHead { seq, hash })
}

/// A slot row whose status no build of hypod writes.
fn corrupt_slot(key: &str, status: &str) -> StoreError {
    super::corrupt(&format!("slot {key}"), status)
}

/// A run record from its row: `(id, record, audit_seq, audit_hash)`.
pub(crate) type RunRow = (String, String, Option<i64>, Option<String>);

pub(crate) fn run_from_row((id, record, seq, hash): RunRow) -> Result<RunRecord, StoreError> {
    let mut run: RunRecord =
        serde_json::from_str(&record).map_err(|e| super::corrupt(&format!("run {id}"), e))?;
    run.audit_head = seq.zip(hash).map(|(seq, hash)| AuditHead { seq, hash });
    Ok(run)
}
