//! The embedded SQLite backend (the default): WAL mode, foreign keys on, migrations from
//! `migrations/sqlite/` compiled into the binary. Every write transaction starts with
//! `BEGIN IMMEDIATE`, so it holds SQLite's one write lock from its first statement: concurrent
//! commands (several `hypod` processes on one file) wait for it up to the busy timeout instead
//! of failing with "database is locked" when a read inside a deferred transaction would have
//! to be upgraded to a write.
//!
//! The transactions themselves are written once in [`super::shared`]; this file holds what
//! SQLite says its own way: opening, the write lock, the clock, how times, JSON and counts are
//! stored (RFC 3339 text, text, 64-bit integers), and the reads whose rows are SQLite's.
//!
//! Two faults a long-lived daemon must survive are handled here, at the connections:
//!
//! - a write error (a full disk) can make SQLite roll a transaction back by itself; sqlx's own
//!   `ROLLBACK` then fails and the connection would go back to the pool believing it is still
//!   inside a transaction (every later `BEGIN` on it fails). A connection returns to the pool
//!   only once it is known to be outside any transaction ([`settled`]); otherwise it is closed
//!   and the pool opens a fresh one;
//! - the database file deleted or replaced under a live process: the file opened is
//!   remembered ([`DatabaseFile`]); `/readyz` reports the difference, every write
//!   transaction refuses to begin, instead of committing into a file nobody can open again,
//!   and the pool opens no new connection to another file (nor creates an empty one).

use super::shared::{Dialect, Driver, Fetch, Held, Typed};
use super::{
    corrupt, like_pattern, timestamp, AuditEntry, AuditKey, ProposalBody, Proposals, Store,
    StoreError, TokenRecord,
};
use crate::domain::{
    AuditAction, PageCursor, Proposal, ProposalFilter, ProposalStatus, QueueOrder, Review,
    ReviewAction, Role, TokenKind,
};
use crate::history::Experiment;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Arguments, Connection, Row, Sqlite, SqliteConnection, SqliteExecutor, SqlitePool};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub struct SqliteStore {
    pool: SqlitePool,
    key: AuditKey,
    /// The file a writing store opened (none for read-only opens and in-memory databases).
    file: Option<DatabaseFile>,
}

/// The database file as opened: where it is and which file it was (device and inode), so a
/// file deleted or replaced under a live process is noticed.
#[derive(Debug, Clone)]
struct DatabaseFile {
    path: PathBuf,
    identity: Option<(u64, u64)>,
}

/// The device and inode of the file at `path` (`None` where the platform has neither).
fn identity(path: &Path) -> std::io::Result<Option<(u64, u64)>> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(Some((meta.dev(), meta.ino())))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Ok(None)
    }
}

impl DatabaseFile {
    /// The file `options` opened, once the pool has opened (and so created) it.
    fn opened(options: &SqliteConnectOptions) -> Result<Option<DatabaseFile>, StoreError> {
        let path = options.get_filename();
        if path.as_os_str().is_empty() || path.to_string_lossy().starts_with(":memory:") {
            return Ok(None);
        }
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let identity = identity(&path).map_err(|e| StoreError::DatabaseFile {
            path: path.display().to_string(),
            problem: format!("cannot be read after opening it ({e})"),
        })?;
        Ok(Some(DatabaseFile { path, identity }))
    }

    /// Still the file opened, and writable: what the writes and `/readyz` rely on.
    fn check(&self, writable: bool) -> Result<(), StoreError> {
        let problem = |problem: String| StoreError::DatabaseFile {
            path: self.path.display().to_string(),
            problem,
        };
        match identity(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(problem(
                    "was removed after hypod opened it, so nothing more is written to it (it \
                     would be lost): put the file back, then restart hypod"
                        .to_string(),
                ))
            }
            Err(e) => return Err(problem(format!("cannot be read ({e})"))),
            Ok(now) if now != self.identity => {
                return Err(problem(
                    "was replaced by another file after hypod opened it, so nothing more is \
                     written to either: restart hypod to use the new file"
                        .to_string(),
                ))
            }
            Ok(_) => {}
        }
        if writable {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(|e| problem(format!("is not writable ({e})")))?;
        }
        Ok(())
    }
}

/// Whether a connection given back to the pool may be handed out again: only when it is
/// outside any transaction. `ping` first runs the `ROLLBACK` a dropped transaction queued; if
/// that failed (SQLite had already rolled back by itself after a write error), sqlx still
/// counts the transaction open and the connection is closed. A transaction sqlx does not know
/// of is caught by `BEGIN`, which fails inside one. The pool opens a new connection for a
/// closed one.
fn settled(
    conn: &mut SqliteConnection,
    _: PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        conn.ping().await?;
        if conn.is_in_transaction() {
            tracing::warn!(
                "a database connection left a transaction in an unknown state (after a write \
                 error?); it is closed, not reused"
            );
            return Ok(false);
        }
        if let Err(e) = sqlx::raw_sql("BEGIN").execute(&mut *conn).await {
            tracing::warn!(error = %e, "a database connection is inside a transaction sqlx does not know of; it is closed, not reused");
            return Ok(false);
        }
        sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await?;
        Ok(true)
    })
}

/// Every write transaction takes SQLite's one write lock from its first statement.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// How long a command waits for another one's write transaction before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

fn parse_time(what: &str, text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| corrupt(what, e))
}

impl SqliteStore {
    pub async fn connect(url: &str, key: AuditKey) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // Once the file is open, a connection the pool adds later must open that same file:
        // never create an empty one where it was deleted, never open one put in its place.
        let opened: Arc<OnceLock<DatabaseFile>> = Arc::default();
        let same_file = opened.clone();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .after_connect(move |_, _| {
                let same_file = same_file.clone();
                Box::pin(async move {
                    match same_file.get() {
                        Some(file) => file
                            .check(false)
                            .map_err(|e| sqlx::Error::Io(std::io::Error::other(e.to_string()))),
                        None => Ok(()),
                    }
                })
            })
            .after_release(settled)
            .connect_with(options.clone())
            .await?;
        let file = DatabaseFile::opened(&options)?;
        if let Some(file) = &file {
            let _ = opened.set(file.clone());
            pool.set_connect_options(options.create_if_missing(false));
        }
        Ok(SqliteStore { pool, key, file })
    }

    /// The pool, for a read made straight on it, once the file is known to be the one opened:
    /// a connection the pool would have to add for a replaced or removed file is refused, and
    /// the pool would retry until its timeout instead of saying why.
    fn checked_pool(&self) -> Result<&sqlx::SqlitePool, StoreError> {
        self.check_file(false)?;
        Ok(&self.pool)
    }

    /// The file this store opened is still there, the same file, and (`writable`) can be
    /// written.
    fn check_file(&self, writable: bool) -> Result<(), StoreError> {
        match &self.file {
            Some(file) => file.check(writable),
            None => Ok(()),
        }
    }

    /// Opens an existing database for reading only (`mode=ro`): nothing is created, migrated or
    /// written, so it works on a read-only copy. When SQLite cannot even create its shared-memory
    /// file next to a WAL database (a read-only folder), the file is opened as immutable.
    pub async fn connect_read_only(url: &str, key: AuditKey) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(false)
            .read_only(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let store = match SqliteStore::open_and_read(options.clone(), key.clone()).await {
            Ok(store) => store,
            Err(_) => SqliteStore::open_and_read(options.immutable(true), key).await?,
        };
        let applied: Option<i64> = sqlx::query_scalar(super::LATEST_MIGRATION)
            .fetch_one(&store.pool)
            .await
            .unwrap_or(None);
        super::check_migrated(applied, &super::migrations::sqlite())?;
        Ok(store)
    }

    /// Opens a small pool and reads once: opening is lazy about the file's contents, so a file
    /// that is not a database (or a WAL file SQLite cannot share) fails here.
    async fn open_and_read(
        options: SqliteConnectOptions,
        key: AuditKey,
    ) -> Result<SqliteStore, StoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        sqlx::query("SELECT count(*) FROM sqlite_master")
            .execute(&pool)
            .await?;
        Ok(SqliteStore {
            pool,
            key,
            file: None,
        })
    }
}

/// How SQLite stores what differs (times as RFC 3339 text, JSON as text, counts in 64 bits),
/// and its own rows.
#[async_trait]
impl Driver for Sqlite {
    fn typed(out: &mut SqliteArguments, value: Typed<'_>) -> Result<(), BoxDynError> {
        match value {
            Typed::Time(at) => out.add(timestamp(at)),
            Typed::Json(text) => out.add(text),
            Typed::Count(n) => out.add(i64::from(n)),
        }
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn reviews(
        conn: &mut SqliteConnection,
        of: Option<&str>,
    ) -> Result<Vec<Review>, StoreError> {
        let rows = match of {
            Some(id) => {
                sqlx::query("SELECT * FROM reviews WHERE proposal_id = ? ORDER BY id")
                    .bind(id)
                    .fetch_all(conn)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM reviews ORDER BY id")
                    .fetch_all(conn)
                    .await?
            }
        };
        rows.iter().map(review_from_row).collect()
    }

    fn decode<T: Fetch>(row: &SqliteRow) -> Result<T, sqlx::Error> {
        T::from_row(row)
    }

    async fn audit_entries(
        conn: &mut SqliteConnection,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(conn)
            .await?;
        rows.iter().map(audit_entry_from_row).collect()
    }

    async fn proposal(
        conn: &mut SqliteConnection,
        id: &str,
    ) -> Result<Option<Proposal>, StoreError> {
        proposal_by_id(conn, id).await
    }
}

#[async_trait]
impl Dialect for SqliteStore {
    type Conn = Held<Sqlite>;
    const NOW: &'static str = "((julianday('now') - 2440587.5) * 86400.0)";
    const RUN_SECONDS: &'static str =
        "((julianday(finished_at) - julianday(started_at)) * 86400.0)";

    fn audit_key(&self) -> &AuditKey {
        &self.key
    }

    async fn connection(&self) -> Result<Held<Sqlite>, StoreError> {
        // Checked before the pool is asked: a connection it would have to add for a file
        // deleted or replaced since it was opened is refused (`after_connect`), and the pool
        // would keep retrying until its timeout instead of saying why.
        self.check_file(false)?;
        Ok(Held::Pooled(self.pool.acquire().await?))
    }

    async fn begin_write(&self) -> Result<Held<Sqlite>, StoreError> {
        // A file deleted or replaced since it was opened takes no more writes.
        self.check_file(false)?;
        Ok(Held::Tx(self.pool.begin_with(BEGIN_WRITE).await?))
    }

    async fn begin_snapshot(&self) -> Result<Held<Sqlite>, StoreError> {
        // A deferred transaction reads one snapshot of a WAL database from its first read on.
        self.check_file(false)?;
        Ok(Held::Tx(self.pool.begin().await?))
    }

    async fn load_experiments(&self) -> Result<Vec<Experiment>, StoreError> {
        use futures_util::TryStreamExt;
        // Row by row: the JSON bodies are parsed as they arrive, never all held at once.
        let mut rows =
            sqlx::query("SELECT id, body FROM experiments ORDER BY id").fetch(self.checked_pool()?);
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
        let rows = sqlx::query(
            "SELECT r.proposal_id, r.actor, r.role, r.action, r.note, r.at, p.*
             FROM reviews r JOIN proposals p ON p.id = r.proposal_id
             WHERE r.action = 'reject' AND r.at >= ? ORDER BY r.at DESC LIMIT 200",
        )
        .bind(timestamp(since))
        .fetch_all(self.checked_pool()?)
        .await?;
        rows.iter()
            .map(|row| Ok((proposal_from_row(row)?, review_from_row(row)?)))
            .collect()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(self.checked_pool()?)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM tokens WHERE hash = ? AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(self.checked_pool()?)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // Inside one write transaction (the migrator's own become savepoints), so processes
        // that open a new database at the same moment apply the migrations once, one after the
        // other, instead of both creating the tables.
        // `Migrator::run(&mut *tx)` is what this means, but its future is not provably `Send`
        // for every lifetime ("implementation of `Acquire` is not general enough");
        // `run_direct` is the function `run` calls with the connection it acquired.
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        super::migrations::sqlite()
            .run_direct(None, &mut *tx, false)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        self.check_file(true)
    }
}

/// The queue listing's optional filters as `(?n IS NULL OR …)`, shared by the statement of
/// every order (one static statement each, so no SQL is built at run time).
macro_rules! queue_filters {
    () => {
        "SELECT * FROM proposals WHERE \
         (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR moment = ?2) \
         AND (?3 IS NULL OR run_id = ?3) AND (?4 IS NULL OR segment = ?4) \
         AND (?5 IS NULL OR json_extract(body, '$.draft.title') LIKE ?5 ESCAPE '\\' \
              OR json_extract(body, '$.draft.hypothesis') LIKE ?5 ESCAPE '\\') "
    };
}

#[async_trait]
impl Proposals for SqliteStore {
    async fn list_proposals(&self, filter: &ProposalFilter) -> Result<Vec<Proposal>, StoreError> {
        let text = filter.text.as_deref().map(like_pattern);
        // One static statement per order; times are fixed-width RFC 3339 text, ordered as text.
        let rows = sqlx::query(match filter.order {
            QueueOrder::Value => concat!(
                queue_filters!(),
                "AND (?6 IS NULL OR priority < ?6 OR (priority = ?6 AND id > ?7)) \
                 AND (?9 IS NULL OR ?9 IS NOT NULL) \
                 ORDER BY priority DESC, id ASC LIMIT ?8"
            ),
            QueueOrder::Age => concat!(
                queue_filters!(),
                "AND (?9 IS NULL OR created_at < ?9 OR (created_at = ?9 AND id > ?7)) \
                 AND (?6 IS NULL OR ?6 IS NOT NULL) \
                 ORDER BY created_at DESC, id ASC LIMIT ?8"
            ),
            QueueOrder::Expiry => concat!(
                queue_filters!(),
                "AND (?9 IS NULL OR created_at > ?9 OR (created_at = ?9 AND id > ?7)) \
                 AND (?6 IS NULL OR ?6 IS NOT NULL) \
                 ORDER BY created_at ASC, id ASC LIMIT ?8"
            ),
        })
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.moment.map(|m| m.as_str()))
        .bind(filter.run_id.as_deref())
        .bind(filter.segment.as_deref())
        .bind(text)
        .bind(filter.after.as_ref().and_then(PageCursor::priority))
        .bind(filter.after.as_ref().map(|c| c.id.as_str()))
        .bind(filter.limit.map(|l| l as i64).unwrap_or(-1))
        .bind(
            filter
                .after
                .as_ref()
                .and_then(PageCursor::created)
                .map(super::timestamp),
        )
        .fetch_all(self.checked_pool()?)
        .await?;
        rows.iter().map(proposal_from_row).collect()
    }

    async fn get_proposal(&self, id: &str) -> Result<Option<Proposal>, StoreError> {
        proposal_by_id(self.checked_pool()?, id).await
    }

    async fn get_proposals(&self, ids: &[String]) -> Result<Vec<Proposal>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(super::IDS_PER_QUERY) {
            let list = serde_json::to_string(chunk).map_err(|e| corrupt("ids", e))?;
            let rows = sqlx::query(
                "SELECT * FROM proposals WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            )
            .bind(list)
            .fetch_all(self.checked_pool()?)
            .await?;
            for row in &rows {
                found.push(proposal_from_row(row)?);
            }
        }
        Ok(found)
    }
}

async fn proposal_by_id(
    executor: impl SqliteExecutor<'_>,
    id: &str,
) -> Result<Option<Proposal>, StoreError> {
    let row = sqlx::query("SELECT * FROM proposals WHERE id = ?")
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(proposal_from_row).transpose()
}

fn audit_entry_from_row(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
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

fn token_from_row(row: &SqliteRow) -> Result<TokenRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let what = format!("token {id}");
    let role: String = row.try_get("role")?;
    Ok(TokenRecord {
        user: row.try_get("user_name")?,
        role: Role::parse(&role).ok_or_else(|| corrupt(&what, format!("unknown role {role:?}")))?,
        created_at: parse_time(&what, &row.try_get::<String, _>("created_at")?)?,
        created_by: row.try_get("created_by")?,
        hash: row.try_get("hash")?,
        revoked_at: row
            .try_get::<Option<String>, _>("revoked_at")?
            .map(|t| parse_time(&what, &t))
            .transpose()?,
        kind: {
            let kind: String = row.try_get("kind")?;
            TokenKind::parse(&kind)
                .ok_or_else(|| corrupt(&format!("token {id}"), format!("unknown kind {kind:?}")))?
        },
        id,
    })
}

fn proposal_from_row(row: &SqliteRow) -> Result<Proposal, StoreError> {
    let id: String = row.try_get("id")?;
    let what = format!("proposal {id}");
    let body: String = row.try_get("body")?;
    let body: ProposalBody = serde_json::from_str(&body).map_err(|e| corrupt(&what, e))?;
    let status: String = row.try_get("status")?;
    let status = ProposalStatus::parse(&status)
        .ok_or_else(|| corrupt(&what, format!("unknown status {status:?}")))?;
    let approvals: i64 = row.try_get("approvals_required")?;
    Ok(Proposal {
        run_id: row.try_get("run_id")?,
        status,
        created_at: parse_time(&what, &row.try_get::<String, _>("created_at")?)?,
        updated_at: parse_time(&what, &row.try_get::<String, _>("updated_at")?)?,
        draft: body.draft,
        enrichment: body.enrichment,
        verdicts: body.verdicts,
        provenance: body.provenance,
        approvals_required: approvals.max(0) as u32,
        superseded_by: row.try_get("superseded_by")?,
        id,
    })
}

fn review_from_row(row: &SqliteRow) -> Result<Review, StoreError> {
    let action: String = row.try_get("action")?;
    let action = ReviewAction::parse(&action)
        .ok_or_else(|| corrupt("review", format!("unknown action {action:?}")))?;
    Ok(Review {
        proposal_id: row.try_get("proposal_id")?,
        actor: row.try_get("actor")?,
        role: {
            let role: String = row.try_get("role")?;
            Role::parse(&role).ok_or_else(|| corrupt("review", format!("unknown role {role:?}")))?
        },
        action,
        note: row.try_get("note")?,
        at: parse_time("review", &row.try_get::<String, _>("at")?)?,
    })
}
