//! The PostgreSQL backend, for several replicas sharing one database: migrations from
//! `migrations/postgres/` compiled into the binary (the migrator serialises concurrent starts
//! with its own advisory lock). Every write transaction first takes one transaction-scoped
//! advisory lock ([`WRITE_LOCK`]), the same discipline SQLite's single writer imposes: the audit
//! chain's head, an import's existing rows, a review's previous status and the queue mark a run
//! was assessed against are read and written with no other writer in between, on every replica.
//!
//! The transactions themselves are written once in [`super::shared`]; this file holds what
//! PostgreSQL says its own way: connecting, the write lock, the clock, how times, JSON and counts
//! are stored (`timestamptz` to the microsecond, `jsonb`, 32-bit integers), an import of a batch
//! in one statement, and the reads whose rows are PostgreSQL's. As on SQLite, a connection goes
//! back to the pool only outside any transaction ([`settled`]): one that failed mid-transaction
//! and could not be rolled back is closed, not reused.

use super::shared::{Dialect, Driver, Fetch, Held, Typed};
use super::{
    corrupt, timestamp, AuditEntry, AuditKey, ProposalBody, Proposals, Store, StoreError,
    TokenRecord,
};
use crate::domain::{
    AuditAction, PageCursor, Proposal, ProposalFilter, ProposalStatus, QueueOrder, Review,
    ReviewAction, Role, TokenKind,
};
use crate::history::Experiment;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgConnectOptions, PgConnection, PgExecutor, PgPool,
    PgPoolOptions, PgQueryResult, PgRow, PgTypeInfo,
};
use sqlx::{Arguments, Connection, Encode, Postgres, Row, Type};
use std::str::FromStr;
use std::time::Duration;

/// The advisory lock every write transaction holds (`"hypod"` in ASCII).
pub const WRITE_LOCK: i64 = 0x0068_7970_6f64;

/// The columns a proposal is read from (bodies as text, parsed here, so a bad one is reported
/// as corrupt with its id).
const PROPOSAL_COLUMNS: &str = "p.id, p.run_id, p.status, p.approvals_required, p.created_at, \
     p.updated_at, p.superseded_by, p.body::text AS body";

pub struct PostgresStore {
    pool: PgPool,
    key: AuditKey,
}

/// Whether a connection given back to the pool may be handed out again: only when it is
/// outside any transaction. One round trip: a one-statement query in the simple protocol, sent
/// after the `ROLLBACK` a dropped transaction queued (sqlx flushes it first; an error closes
/// the connection), runs in a transaction of its own (its transaction and statement start at
/// the same instant) unless the connection is still inside one that sqlx does not count. (It
/// was a ping and then the query: two round trips on every release, the largest share of a
/// cached listing's time on PostgreSQL.)
fn settled(
    conn: &mut PgConnection,
    _: PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        let row = sqlx::raw_sql("SELECT transaction_timestamp() = statement_timestamp()")
            .fetch_one(&mut *conn)
            .await?;
        if conn.is_in_transaction() {
            tracing::warn!(
                "a database connection left a transaction in an unknown state; it is closed, \
                 not reused"
            );
            return Ok(false);
        }
        let alone: bool = row.try_get(0)?;
        if !alone {
            tracing::warn!(
                "a database connection is inside a transaction sqlx does not know of; it is \
                 closed, not reused"
            );
        }
        Ok(alone)
    })
}

/// Timestamps as hypod stores them: microseconds, as PostgreSQL keeps them.
fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// How long opening the database, or waiting for a pooled connection, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl PostgresStore {
    /// Connects to `postgres://…` or `postgresql://…` (the database must exist).
    pub async fn connect(url: &str, key: AuditKey) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect_with(PgConnectOptions::from_str(url)?, key).await
    }

    /// Connects with every transaction read-only (`default_transaction_read_only`), for the
    /// commands that only read.
    pub async fn connect_read_only(url: &str, key: AuditKey) -> Result<PostgresStore, StoreError> {
        let options =
            PgConnectOptions::from_str(url)?.options([("default_transaction_read_only", "on")]);
        let store = PostgresStore::connect_with(options, key).await?;
        let applied: Option<i64> = sqlx::query_scalar(super::LATEST_MIGRATION)
            .fetch_one(&store.pool)
            .await
            .unwrap_or(None);
        super::check_migrated(applied, &super::migrations::postgres())?;
        Ok(store)
    }

    pub async fn connect_with(
        options: PgConnectOptions,
        key: AuditKey,
    ) -> Result<PostgresStore, StoreError> {
        let options = options.application_name("hypod");
        // One connection made directly first: a server that refuses, an unknown database or a
        // wrong password is reported at once with its reason, where the pool would retry until
        // its timeout and then say only that it timed out.
        let first =
            tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(&options))
                .await
                .map_err(|_| {
                    sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no answer from the server within {} s",
                            CONNECT_TIMEOUT.as_secs()
                        ),
                    ))
                })??;
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .after_release(settled)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(PostgresStore { pool, key })
    }
}

/// JSON text bound as `jsonb`, parsed by PostgreSQL as a `$n::jsonb` cast of the text would be.
struct Jsonb<'a>(&'a str);

impl Type<Postgres> for Jsonb<'_> {
    fn type_info() -> PgTypeInfo {
        // `jsonb`, as sqlx's own JSON wrapper binds it.
        <sqlx::types::Json<()> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Jsonb<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        // jsonb's binary form: version 1, then the text.
        buf.push(1);
        buf.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
}

/// How PostgreSQL stores what differs (`timestamptz` to the microsecond, `jsonb`, the approvals
/// count as a 32-bit `integer`), its own rows, and its import of a batch in one statement.
#[async_trait]
impl Driver for Postgres {
    fn typed(out: &mut PgArguments, value: Typed<'_>) -> Result<(), BoxDynError> {
        match value {
            Typed::Time(at) => out.add(micros(at)),
            Typed::Json(text) => out.add(Jsonb(text)),
            Typed::Count(n) => out.add(i32::try_from(n).unwrap_or(i32::MAX)),
        }
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn reviews(conn: &mut PgConnection, of: Option<&str>) -> Result<Vec<Review>, StoreError> {
        let rows =
            match of {
                Some(id) => {
                    sqlx::query(
                        "SELECT proposal_id, actor, role, action, note, at FROM reviews \
                     WHERE proposal_id = $1 ORDER BY id",
                    )
                    .bind(id)
                    .fetch_all(conn)
                    .await?
                }
                None => sqlx::query(
                    "SELECT proposal_id, actor, role, action, note, at FROM reviews ORDER BY id",
                )
                .fetch_all(conn)
                .await?,
            };
        rows.iter().map(review_from_row).collect()
    }

    fn decode<T: Fetch>(row: &PgRow) -> Result<T, sqlx::Error> {
        T::from_row(row)
    }

    async fn audit_entries(
        conn: &mut PgConnection,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, subject, detail, prev_hash, hash, mac FROM audit_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(conn)
        .await?;
        rows.iter().map(audit_entry_from_row).collect()
    }

    async fn proposal(conn: &mut PgConnection, id: &str) -> Result<Option<Proposal>, StoreError> {
        proposal_by_id(conn, id).await
    }

    async fn upsert_distinct(
        conn: &mut PgConnection,
        batch: &[Experiment],
        bodies: &[String],
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<(String, bool)>>, StoreError> {
        // Inserted rows have xmax = 0; an unchanged body (compared as jsonb, whatever the key
        // order) is not touched and not returned.
        let written: Vec<(String, bool)> = sqlx::query_as(
            "WITH input AS (                        SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])                          AS t(id, moment, status, body)),                      changed AS (                        INSERT INTO experiments (id, moment, status, body, imported_at, updated_at)                        SELECT id, moment, status, body::jsonb, $5::timestamptz, $5::timestamptz FROM input                        ON CONFLICT (id) DO UPDATE SET moment = EXCLUDED.moment,                          status = EXCLUDED.status, body = EXCLUDED.body, updated_at = EXCLUDED.updated_at                        WHERE experiments.body IS DISTINCT FROM EXCLUDED.body                        RETURNING id, (xmax = 0) AS inserted)                      SELECT id, inserted FROM changed",
        )
        .bind(batch.iter().map(|e| e.id.clone()).collect::<Vec<String>>())
        .bind(
            batch
                .iter()
                .map(|e| e.moment.as_str().to_string())
                .collect::<Vec<String>>(),
        )
        .bind(
            batch
                .iter()
                .map(|e| e.status.as_str().to_string())
                .collect::<Vec<String>>(),
        )
        .bind(bodies)
        .bind(micros(now))
        .fetch_all(conn)
        .await?;
        Ok(Some(written))
    }
}

#[async_trait]
impl Dialect for PostgresStore {
    type Conn = Held<Postgres>;
    /// (`clock_timestamp()`, not `now()`, which is the start of the transaction.)
    const NOW: &'static str = "extract(epoch from clock_timestamp())::double precision";
    const RUN_SECONDS: &'static str =
        "extract(epoch from (finished_at - started_at))::double precision";

    fn audit_key(&self) -> &AuditKey {
        &self.key
    }

    async fn connection(&self) -> Result<Held<Postgres>, StoreError> {
        Ok(Held::Pooled(self.pool.acquire().await?))
    }

    async fn begin_write(&self) -> Result<Held<Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(Held::Tx(tx))
    }

    async fn begin_snapshot(&self) -> Result<Held<Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(Held::Tx(tx))
    }

    async fn load_experiments(&self) -> Result<Vec<Experiment>, StoreError> {
        use futures_util::TryStreamExt;
        // Row by row: the JSON bodies are parsed as they arrive, never all held at once.
        let mut rows = sqlx::query("SELECT id, body::text AS body FROM experiments ORDER BY id")
            .fetch(&self.pool);
        let mut experiments = Vec::new();
        while let Some(row) = rows.try_next().await? {
            let id: &str = row.try_get("id")?;
            let body: &str = row.try_get("body")?;
            experiments.push(
                serde_json::from_str(body).map_err(|e| corrupt(&format!("experiment {id}"), e))?,
            );
        }
        Ok(experiments)
    }

    async fn recent_rejections(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Proposal, Review)>, StoreError> {
        let sql = format!(
            "SELECT r.proposal_id, r.actor, r.role, r.action, r.note, r.at, {PROPOSAL_COLUMNS}
             FROM reviews r JOIN proposals p ON p.id = r.proposal_id
             WHERE r.action = 'reject' AND r.at >= $1 ORDER BY r.at DESC LIMIT 200"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(micros(since))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((proposal_from_row(row)?, review_from_row(row)?)))
            .collect()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM tokens WHERE hash = $1 AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        super::migrations::postgres().run(&self.pool).await?;
        Ok(())
    }
}

#[async_trait]
impl Proposals for PostgresStore {
    async fn list_proposals(&self, filter: &ProposalFilter) -> Result<Vec<Proposal>, StoreError> {
        // Optional filters as `($n IS NULL OR column = $n)`: one static query, no SQL built at
        // run time. `LIMIT NULL` is no limit.
        let filters =
            "WHERE ($1::text IS NULL OR p.status = $1) AND ($2::text IS NULL OR p.moment = $2) \
             AND ($3::text IS NULL OR p.run_id = $3) AND ($4::text IS NULL OR p.segment = $4) \
             AND ($5::text IS NULL OR p.body->'draft'->>'title' ILIKE $5 \
                  OR p.body->'draft'->>'hypothesis' ILIKE $5) ";
        // The order and its keyset condition: constants, one per order.
        let order = match filter.order {
            QueueOrder::Value => {
                "AND ($6::float8 IS NULL OR p.priority < $6 OR (p.priority = $6 AND p.id > $7)) \
                 AND ($9::timestamptz IS NULL OR $9 IS NOT NULL) \
                 ORDER BY p.priority DESC, p.id ASC LIMIT $8"
            }
            QueueOrder::Age => {
                "AND ($9::timestamptz IS NULL OR p.created_at < $9 OR (p.created_at = $9 AND p.id > $7)) \
                 AND ($6::float8 IS NULL OR $6 IS NOT NULL) \
                 ORDER BY p.created_at DESC, p.id ASC LIMIT $8"
            }
            QueueOrder::Expiry => {
                "AND ($9::timestamptz IS NULL OR p.created_at > $9 OR (p.created_at = $9 AND p.id > $7)) \
                 AND ($6::float8 IS NULL OR $6 IS NOT NULL) \
                 ORDER BY p.created_at ASC, p.id ASC LIMIT $8"
            }
        };
        let sql = format!("SELECT {PROPOSAL_COLUMNS} FROM proposals p {filters}{order}");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.moment.map(|m| m.as_str()))
            .bind(filter.run_id.as_deref())
            .bind(filter.segment.as_deref())
            .bind(filter.text.as_deref().map(super::like_pattern))
            .bind(filter.after.as_ref().and_then(PageCursor::priority))
            .bind(filter.after.as_ref().map(|c| c.id.as_str()))
            .bind(filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX)))
            .bind(filter.after.as_ref().and_then(PageCursor::created))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(proposal_from_row).collect()
    }

    async fn get_proposal(&self, id: &str) -> Result<Option<Proposal>, StoreError> {
        proposal_by_id(&self.pool, id).await
    }

    async fn get_proposals(&self, ids: &[String]) -> Result<Vec<Proposal>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(super::IDS_PER_QUERY) {
            let sql = select_proposals("WHERE p.id = ANY($1) ORDER BY p.id");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(chunk)
                .fetch_all(&self.pool)
                .await?;
            for row in &rows {
                found.push(proposal_from_row(row)?);
            }
        }
        Ok(found)
    }
}

async fn proposal_by_id(
    executor: impl PgExecutor<'_>,
    id: &str,
) -> Result<Option<Proposal>, StoreError> {
    let sql = select_proposals("WHERE p.id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(proposal_from_row).transpose()
}

fn audit_entry_from_row(row: &PgRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        seq: row.try_get("seq")?,
        at: timestamp(row.try_get("at")?),
        actor: row.try_get("actor")?,
        action: {
            let text: String = row.try_get("action")?;
            AuditAction::parse(&text)
                .ok_or_else(|| corrupt("audit log", format!("unknown action {text:?}")))?
        },
        subject: row.try_get("subject")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
        mac: row.try_get("mac")?,
    })
}

fn token_from_row(row: &PgRow) -> Result<TokenRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let role: String = row.try_get("role")?;
    Ok(TokenRecord {
        user: row.try_get("user_name")?,
        role: Role::parse(&role)
            .ok_or_else(|| corrupt(&format!("token {id}"), format!("unknown role {role:?}")))?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        hash: row.try_get("hash")?,
        revoked_at: row.try_get("revoked_at")?,
        kind: {
            let kind: String = row.try_get("kind")?;
            TokenKind::parse(&kind)
                .ok_or_else(|| corrupt(&format!("token {id}"), format!("unknown kind {kind:?}")))?
        },
        id,
    })
}

fn proposal_from_row(row: &PgRow) -> Result<Proposal, StoreError> {
    let id: String = row.try_get("id")?;
    let what = format!("proposal {id}");
    let body: String = row.try_get("body")?;
    let body: ProposalBody = serde_json::from_str(&body).map_err(|e| corrupt(&what, e))?;
    let status: String = row.try_get("status")?;
    let status = ProposalStatus::parse(&status)
        .ok_or_else(|| corrupt(&what, format!("unknown status {status:?}")))?;
    let approvals: i32 = row.try_get("approvals_required")?;
    Ok(Proposal {
        run_id: row.try_get("run_id")?,
        status,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        draft: body.draft,
        enrichment: body.enrichment,
        verdicts: body.verdicts,
        provenance: body.provenance,
        approvals_required: approvals.max(0) as u32,
        superseded_by: row.try_get("superseded_by")?,
        id,
    })
}

fn review_from_row(row: &PgRow) -> Result<Review, StoreError> {
    let action: String = row.try_get("action")?;
    let action = ReviewAction::parse(&action)
        .ok_or_else(|| corrupt("review", format!("unknown action {action:?}")))?;
    let role: String = row.try_get("role")?;
    Ok(Review {
        proposal_id: row.try_get("proposal_id")?,
        actor: row.try_get("actor")?,
        role: Role::parse(&role)
            .ok_or_else(|| corrupt("review", format!("unknown role {role:?}")))?,
        action,
        note: row.try_get("note")?,
        at: row.try_get("at")?,
    })
}

/// `SELECT <proposal columns> FROM proposals p <rest>`: the column list is a constant, `rest`
/// is a constant clause with placeholders; no value is ever formatted into the SQL.
fn select_proposals(rest: &'static str) -> String {
    format!("SELECT {PROPOSAL_COLUMNS} FROM proposals p {rest}")
}
