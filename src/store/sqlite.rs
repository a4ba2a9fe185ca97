//! The embedded SQLite backend (the default): WAL mode, foreign keys on, migrations from
//! `migrations/sqlite/` compiled into the binary. Every write transaction starts with
//! `BEGIN IMMEDIATE`, so it holds SQLite's one write lock from its first statement: concurrent
//! commands (several `hypod` processes on one file) wait for it up to the busy timeout instead
//! of failing with "database is locked" when a read inside a deferred transaction would have
//! to be upgraded to a write.

use super::{
    audit_hash, corrupt, timestamp, AuditEntry, AuditKey, AuditSnapshot, OutboxItem, ProposalBody,
    QueueMark, SealedHead, Store, StoreError, StoredState, TokenRecord, UpsertCounts,
};
use crate::domain::{
    apply_review, AuditAction, AuditHead, Claim, Fence, Proposal, ProposalFilter, ProposalStatus,
    Review, ReviewAction, ReviewError, Role, RunRecord, RunStatus, SlotRecord, SlotStatus,
    StatusChange,
};

use crate::history::Experiment;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteStore {
    pool: SqlitePool,
    key: AuditKey,
}

/// The database's clock, in seconds since the epoch: leases never trust a replica's clock.
const DB_NOW: &str = "((julianday('now') - 2440587.5) * 86400.0)";

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
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool, key })
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
        super::check_migrated(applied, &sqlx::migrate!("./migrations/sqlite"))?;
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
        Ok(SqliteStore { pool, key })
    }

    /// A write transaction holding the database's write lock from the start.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Appends one entry to the chain, keyed, and seals the new head, inside `tx`.
    async fn append_audit(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        actor: &str,
        action: AuditAction,
        subject: &str,
        detail: &str,
    ) -> Result<AuditHead, StoreError> {
        let prev: Option<String> =
            sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut **tx)
                .await?;
        let prev = prev.unwrap_or_default();
        let at = timestamp(Utc::now());
        let action = action.to_string();
        let hash = audit_hash(&prev, &at, actor, &action, subject, detail);
        let seq = sqlx::query(
            "INSERT INTO audit_log (at, actor, action, subject, detail, prev_hash, hash, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&at)
        .bind(actor)
        .bind(action)
        .bind(subject)
        .bind(detail)
        .bind(&prev)
        .bind(&hash)
        .bind(self.key.entry_mac(&hash))
        .execute(&mut **tx)
        .await?
        .last_insert_rowid();
        sqlx::query(
            "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, mac = excluded.mac",
        )
        .bind(seq)
        .bind(&hash)
        .bind(self.key.head_mac(seq, &hash))
        .execute(&mut **tx)
        .await?;
        Ok(AuditHead { seq, hash })
    }

    /// The sealed head of the audit chain, from its one row.
    fn sealed_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<SealedHead, StoreError> {
        Ok(SealedHead {
            head: AuditHead {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
            },
            mac: row.try_get("mac")?,
        })
    }

    fn audit_entry_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<AuditEntry, StoreError> {
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

    fn run_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<RunRecord, StoreError> {
        let id: String = row.try_get("id")?;
        let record: String = row.try_get("record")?;
        let mut run: RunRecord =
            serde_json::from_str(&record).map_err(|e| corrupt(&format!("run {id}"), e))?;
        let seq: Option<i64> = row.try_get("audit_seq")?;
        let hash: Option<String> = row.try_get("audit_hash")?;
        run.audit_head = seq.zip(hash).map(|(seq, hash)| AuditHead { seq, hash });
        Ok(run)
    }

    fn token_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<TokenRecord, StoreError> {
        let id: String = row.try_get("id")?;
        let what = format!("token {id}");
        let role: String = row.try_get("role")?;
        Ok(TokenRecord {
            user: row.try_get("user_name")?,
            role: Role::parse(&role)
                .ok_or_else(|| corrupt(&what, format!("unknown role {role:?}")))?,
            created_at: parse_time(&what, &row.try_get::<String, _>("created_at")?)?,
            created_by: row.try_get("created_by")?,
            revoked_at: row
                .try_get::<Option<String>, _>("revoked_at")?
                .map(|t| parse_time(&what, &t))
                .transpose()?,
            id,
        })
    }

    fn proposal_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Proposal, StoreError> {
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

    fn review_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Review, StoreError> {
        let action: String = row.try_get("action")?;
        let action = ReviewAction::parse(&action)
            .ok_or_else(|| corrupt("review", format!("unknown action {action:?}")))?;
        Ok(Review {
            proposal_id: row.try_get("proposal_id")?,
            actor: row.try_get("actor")?,
            role: {
                let role: String = row.try_get("role")?;
                Role::parse(&role)
                    .ok_or_else(|| corrupt("review", format!("unknown role {role:?}")))?
            },
            action,
            note: row.try_get("note")?,
            at: parse_time("review", &row.try_get::<String, _>("at")?)?,
        })
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
        let mut tx = self.write_tx().await?;
        sqlx::migrate!("./migrations/sqlite")
            .run_direct(None, &mut *tx, false)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn upsert_experiments(
        &self,
        experiments: &[Experiment],
    ) -> Result<UpsertCounts, StoreError> {
        let mut counts = UpsertCounts::default();
        let now = timestamp(Utc::now());
        let mut tx = self.write_tx().await?;
        for experiment in experiments {
            let body = serde_json::to_string(experiment).map_err(|e| corrupt("experiment", e))?;
            let existing: Option<String> =
                sqlx::query_scalar("SELECT body FROM experiments WHERE id = ?")
                    .bind(&experiment.id)
                    .fetch_optional(&mut *tx)
                    .await?;
            match existing {
                Some(old) if old == body => counts.unchanged += 1,
                Some(_) => {
                    sqlx::query(
                        "UPDATE experiments SET moment = ?, status = ?, body = ?, updated_at = ? WHERE id = ?",
                    )
                    .bind(experiment.moment.as_str())
                    .bind(experiment.status.as_str())
                    .bind(&body)
                    .bind(&now)
                    .bind(&experiment.id)
                    .execute(&mut *tx)
                    .await?;
                    counts.updated += 1;
                }
                None => {
                    sqlx::query(
                        "INSERT INTO experiments (id, moment, status, body, imported_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&experiment.id)
                    .bind(experiment.moment.as_str())
                    .bind(experiment.status.as_str())
                    .bind(&body)
                    .bind(&now)
                    .bind(&now)
                    .execute(&mut *tx)
                    .await?;
                    counts.inserted += 1;
                }
            }
        }
        if counts.inserted + counts.updated > 0 {
            let detail = serde_json::to_string(&counts).map_err(|e| corrupt("audit", e))?;
            self.append_audit(
                &mut tx,
                "import",
                AuditAction::ExperimentsUpsert,
                "experiments",
                &detail,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(counts)
    }

    async fn load_experiments(&self) -> Result<Vec<Experiment>, StoreError> {
        use futures_util::TryStreamExt;
        // Row by row: the JSON bodies are parsed as they arrive, never all held at once.
        let mut rows =
            sqlx::query("SELECT id, body FROM experiments ORDER BY id").fetch(&self.pool);
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

    async fn queue_mark(&self) -> Result<QueueMark, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM proposals")
            .fetch_one(&self.pool)
            .await?;
        Ok(QueueMark(count))
    }

    async fn record_run(
        &self,
        run: &RunRecord,
        proposals: &[Proposal],
        changes: &[StatusChange],
        read_at: Option<QueueMark>,
        fence: Option<&Fence>,
    ) -> Result<AuditHead, StoreError> {
        let record = serde_json::to_string(run).map_err(|e| corrupt("run", e))?;
        let mut tx = self.write_tx().await?;
        if let (Some(read_at), false) = (read_at, proposals.is_empty() && changes.is_empty()) {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM proposals")
                .fetch_one(&mut *tx)
                .await?;
            if count != read_at.0 {
                return Err(StoreError::QueueChanged {
                    read_at,
                    now: QueueMark(count),
                });
            }
        }
        sqlx::query(
            "INSERT INTO runs (id, trigger, status, started_at, finished_at, proposer, record) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&run.id)
        .bind(run.trigger.to_string())
        .bind(run.status.as_str())
        .bind(timestamp(run.started_at))
        .bind(timestamp(run.finished_at))
        .bind(&run.proposer)
        .bind(&record)
        .execute(&mut *tx)
        .await?;
        for proposal in proposals {
            let body = serde_json::to_string(&ProposalBody::of(proposal))
                .map_err(|e| corrupt("proposal", e))?;
            sqlx::query(
                "INSERT INTO proposals (id, run_id, status, moment, segment, lever, priority, approvals_required, created_at, updated_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&proposal.id)
            .bind(&proposal.run_id)
            .bind(proposal.status.as_str())
            .bind(proposal.draft.moment.as_str())
            .bind(&proposal.draft.segment)
            .bind(&proposal.draft.lever)
            .bind(proposal.enrichment.priority)
            .bind(proposal.approvals_required as i64)
            .bind(timestamp(proposal.created_at))
            .bind(timestamp(proposal.updated_at))
            .bind(&body)
            .execute(&mut *tx)
            .await?;
            let verdicts =
                serde_json::to_string(&proposal.verdicts).map_err(|e| corrupt("audit", e))?;
            self.append_audit(
                &mut tx,
                &format!("proposer:{}", proposal.provenance.proposer),
                AuditAction::Proposal(proposal.status),
                &proposal.id,
                &verdicts,
            )
            .await?;
        }
        // Queue hygiene: each change applies only to a proposal still pending; one reviewed
        // meanwhile makes the run assess again against the queue as it is now.
        for change in changes {
            let closed = sqlx::query(
                "UPDATE proposals SET status = ?, updated_at = ?, superseded_by = ? WHERE id = ? AND status = 'pending_review'",
            )
            .bind(change.closing.status().as_str())
            .bind(timestamp(run.finished_at))
            .bind(change.superseded_by.as_deref())
            .bind(&change.proposal_id)
            .execute(&mut *tx)
            .await?;
            if closed.rows_affected() != 1 {
                if read_at.is_some() {
                    return Err(StoreError::ProposalMoved {
                        proposal_id: change.proposal_id.clone(),
                    });
                }
                continue;
            }
            self.append_audit(
                &mut tx,
                "scheduler",
                AuditAction::Proposal(change.closing.status()),
                &change.proposal_id,
                &super::closing_detail(&run.id, change),
            )
            .await?;
        }
        // A run evaluated against a policy set other than the last one logged logs the change.
        let last_policies: Option<String> = sqlx::query_scalar(
            "SELECT subject FROM audit_log WHERE action = 'policies.changed' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if !run.policy_digest.is_empty() && last_policies.as_deref() != Some(&run.policy_digest) {
            self.append_audit(
                &mut tx,
                "scheduler",
                AuditAction::PoliciesChanged,
                &run.policy_digest,
                &serde_json::json!({ "run_id": run.id, "previous": last_policies }).to_string(),
            )
            .await?;
        }
        let head = self
            .append_audit(
                &mut tx,
                "scheduler",
                AuditAction::Run(run.status),
                &run.id,
                &serde_json::to_string(&run.summary).map_err(|e| corrupt("audit", e))?,
            )
            .await?;
        sqlx::query("UPDATE runs SET audit_seq = ?, audit_hash = ? WHERE id = ?")
            .bind(head.seq)
            .bind(&head.hash)
            .bind(&run.id)
            .execute(&mut *tx)
            .await?;
        // The run's notification, in the run's own transaction (the outbox).
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO outbox (run_id, created_at, next_attempt_at) VALUES (?, {DB_NOW}, {DB_NOW})"
        )))
        .bind(&run.id)
        .execute(&mut *tx)
        .await?;
        if let Some(fence) = fence {
            // The fence check and the proposals commit together, or not at all.
            let status = match run.status {
                RunStatus::Failed => SlotStatus::Failed,
                RunStatus::Succeeded | RunStatus::NotReady => SlotStatus::Succeeded,
            };
            let ended = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE slots SET status = ?, finished_at = {DB_NOW}, run_id = ?, reason = ? \
                 WHERE key = ? AND token = ? AND status = 'running' AND lease_expires >= {DB_NOW}"
            )))
            .bind(status.as_str())
            .bind(&run.id)
            .bind(run.error.as_deref())
            .bind(&fence.slot)
            .bind(fence.token)
            .execute(&mut *tx)
            .await?;
            if ended.rows_affected() != 1 {
                return Err(StoreError::LeaseLost {
                    slot: fence.slot.clone(),
                });
            }
        }
        tx.commit().await?;
        Ok(head)
    }

    async fn list_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, record, audit_seq, audit_hash FROM runs ORDER BY started_at DESC, id DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::run_from_row).collect()
    }

    async fn list_proposals(&self, filter: &ProposalFilter) -> Result<Vec<Proposal>, StoreError> {
        // Optional filters as `(? IS NULL OR column = ?)`: one static query, no SQL built at run time.
        let text = filter.text.as_deref().map(like_pattern);
        let rows = sqlx::query(
            "SELECT * FROM proposals
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR moment = ?2)
               AND (?3 IS NULL OR run_id = ?3) AND (?4 IS NULL OR segment = ?4)
               AND (?5 IS NULL OR json_extract(body, '$.draft.title') LIKE ?5 ESCAPE '\\'
                    OR json_extract(body, '$.draft.hypothesis') LIKE ?5 ESCAPE '\\')
               AND (?6 IS NULL OR priority < ?6 OR (priority = ?6 AND id > ?7))
             ORDER BY priority DESC, id ASC LIMIT ?8",
        )
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.moment.map(|m| m.as_str()))
        .bind(filter.run_id.as_deref())
        .bind(filter.segment.as_deref())
        .bind(text)
        .bind(filter.after.as_ref().map(|c| c.priority))
        .bind(filter.after.as_ref().map(|c| c.id.as_str()))
        .bind(filter.limit.map(|l| l as i64).unwrap_or(-1))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::proposal_from_row).collect()
    }

    async fn get_proposal(&self, id: &str) -> Result<Option<Proposal>, StoreError> {
        let row = sqlx::query("SELECT * FROM proposals WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::proposal_from_row).transpose()
    }

    async fn get_proposals(&self, ids: &[String]) -> Result<Vec<Proposal>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(super::IDS_PER_QUERY) {
            let list = serde_json::to_string(chunk).map_err(|e| corrupt("ids", e))?;
            let rows = sqlx::query(
                "SELECT * FROM proposals WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            )
            .bind(list)
            .fetch_all(&self.pool)
            .await?;
            for row in &rows {
                found.push(Self::proposal_from_row(row)?);
            }
        }
        Ok(found)
    }

    async fn proposal_reviews(&self, id: &str) -> Result<Vec<Review>, StoreError> {
        let rows = sqlx::query("SELECT * FROM reviews WHERE proposal_id = ? ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::review_from_row).collect()
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
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((Self::proposal_from_row(row)?, Self::review_from_row(row)?)))
            .collect()
    }

    async fn review(&self, review: &Review) -> Result<Proposal, StoreError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("SELECT * FROM proposals WHERE id = ?")
            .bind(&review.proposal_id)
            .fetch_optional(&mut *tx)
            .await?;
        let mut proposal = match row {
            Some(row) => Self::proposal_from_row(&row)?,
            None => return Err(ReviewError::NotFound(review.proposal_id.clone()).into()),
        };
        let previous: Vec<Review> =
            sqlx::query("SELECT * FROM reviews WHERE proposal_id = ? ORDER BY id")
                .bind(&review.proposal_id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(Self::review_from_row)
                .collect::<Result<_, _>>()?;
        let status = apply_review(&proposal, &previous, review)?;
        let at = timestamp(review.at);
        sqlx::query(
            "INSERT INTO reviews (proposal_id, actor, role, action, note, at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&review.proposal_id)
        .bind(&review.actor)
        .bind(review.role.as_str())
        .bind(review.action.as_str())
        .bind(&review.note)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        // Guarded on the status read above, so two concurrent reviews cannot both apply.
        let updated = sqlx::query(
            "UPDATE proposals SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
        )
        .bind(status.as_str())
        .bind(&at)
        .bind(&review.proposal_id)
        .bind(proposal.status.as_str())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(ReviewError::NotReviewable {
                id: proposal.id.clone(),
                status: proposal.status,
            }
            .into());
        }
        let detail = serde_json::json!({
            "role": review.role, "note": review.note, "status": status.as_str()
        })
        .to_string();
        self.append_audit(
            &mut tx,
            &review.actor,
            AuditAction::Review(review.action),
            &review.proposal_id,
            &detail,
        )
        .await?;
        tx.commit().await?;
        proposal.status = status;
        proposal.updated_at = review.at;
        Ok(proposal)
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query("SELECT id, record, audit_seq, audit_hash FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::run_from_row).transpose()
    }

    async fn claim_notifications(
        &self,
        limit: usize,
        hold: Duration,
        max_age: Duration,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET delivered_at = -1, last_error = 'given up: older than the delivery window' \
             WHERE delivered_at IS NULL AND created_at < {DB_NOW} - ?"
        )))
        .bind(max_age.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, run_id, attempts FROM outbox WHERE delivered_at IS NULL \
             AND next_attempt_at <= {DB_NOW} ORDER BY id LIMIT ?"
        )))
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get("id")?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE outbox SET next_attempt_at = {DB_NOW} + ?, attempts = attempts + 1 WHERE id = ?"
            )))
            .bind(hold.as_secs_f64())
            .bind(id)
            .execute(&mut *tx)
            .await?;
            items.push(OutboxItem {
                id,
                run_id: row.try_get("run_id")?,
                attempts: row.try_get::<i64, _>("attempts")? + 1,
            });
        }
        tx.commit().await?;
        Ok(items)
    }

    async fn finish_notification(
        &self,
        id: i64,
        outcome: Result<(), String>,
        retry_in: Duration,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        match outcome {
            Ok(()) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE outbox SET delivered_at = {DB_NOW}, last_error = NULL WHERE id = ?"
                )))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            Err(error) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE outbox SET next_attempt_at = {DB_NOW} + ?, last_error = ? WHERE id = ?"
                )))
                .bind(retry_in.as_secs_f64())
                .bind(error)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn notification_counts(&self) -> Result<(usize, usize), StoreError> {
        let delivered: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at > 0")
                .fetch_one(&self.pool)
                .await?;
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
                .fetch_one(&self.pool)
                .await?;
        Ok((delivered as usize, pending as usize))
    }

    async fn claim_slot(
        &self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let now: f64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {DB_NOW}")))
            .fetch_one(&mut *tx)
            .await?;
        let expires = now + lease.as_secs_f64();
        let row = sqlx::query("SELECT status, token, lease_expires FROM slots WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        let claim = match row {
            None => {
                sqlx::query(
                    "INSERT INTO slots (key, status, owner, token, lease_expires, claimed_at) \
                     VALUES (?, 'running', ?, 1, ?, ?)",
                )
                .bind(key)
                .bind(owner)
                .bind(expires)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Claim::Claimed(Fence {
                    slot: key.to_string(),
                    token: 1,
                })
            }
            Some(row) => {
                let status: &str = row.try_get("status")?;
                let status = SlotStatus::parse(status)
                    .ok_or_else(|| corrupt(&format!("slot {key}"), status))?;
                let token: i64 = row.try_get("token")?;
                let lease_expires: f64 = row.try_get("lease_expires")?;
                match status {
                    SlotStatus::Running if lease_expires < now => {
                        sqlx::query(
                            "UPDATE slots SET owner = ?, token = token + 1, lease_expires = ?, \
                             takeovers = takeovers + 1 WHERE key = ? AND token = ?",
                        )
                        .bind(owner)
                        .bind(expires)
                        .bind(key)
                        .bind(token)
                        .execute(&mut *tx)
                        .await?;
                        Claim::TakenOver(Fence {
                            slot: key.to_string(),
                            token: token + 1,
                        })
                    }
                    SlotStatus::Running => Claim::Held,
                    ended => Claim::Ended(ended),
                }
            }
        };
        tx.commit().await?;
        Ok(claim)
    }

    async fn renew_lease(&self, fence: &Fence, lease: Duration) -> Result<bool, StoreError> {
        let renewed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE slots SET lease_expires = {DB_NOW} + ? \
             WHERE key = ? AND token = ? AND status = 'running' AND lease_expires >= {DB_NOW}"
        )))
        .bind(lease.as_secs_f64())
        .bind(&fence.slot)
        .bind(fence.token)
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn end_slot(
        &self,
        fence: &Fence,
        status: SlotStatus,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let ended = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE slots SET status = ?, finished_at = {DB_NOW}, reason = ? \
             WHERE key = ? AND token = ? AND status = 'running'"
        )))
        .bind(status.as_str())
        .bind(reason)
        .bind(&fence.slot)
        .bind(fence.token)
        .execute(&self.pool)
        .await?;
        Ok(ended.rows_affected() == 1)
    }

    async fn release_slot(&self, fence: &Fence) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE slots SET lease_expires = 0 WHERE key = ? AND token = ? AND status = 'running'",
        )
        .bind(&fence.slot)
        .bind(fence.token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn expired_slots(&self) -> Result<Vec<String>, StoreError> {
        let keys = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT key FROM slots WHERE status = 'running' AND lease_expires < {DB_NOW} \
             ORDER BY claimed_at"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(keys)
    }

    async fn list_slots(&self, limit: usize) -> Result<Vec<SlotRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, status, owner, token, takeovers, run_id, reason FROM slots \
             ORDER BY claimed_at DESC, key DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let key: String = row.try_get("key")?;
                let status: String = row.try_get("status")?;
                Ok(SlotRecord {
                    status: SlotStatus::parse(&status)
                        .ok_or_else(|| corrupt(&format!("slot {key}"), &status))?,
                    owner: row.try_get("owner")?,
                    token: row.try_get("token")?,
                    takeovers: row.try_get("takeovers")?,
                    run_id: row.try_get("run_id")?,
                    reason: row.try_get("reason")?,
                    key,
                })
            })
            .collect()
    }

    async fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_entries(0, usize::MAX).await
    }

    async fn audit_entries(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::audit_entry_from_row).collect()
    }

    async fn audit_head(&self) -> Result<Option<SealedHead>, StoreError> {
        let row = sqlx::query("SELECT seq, hash, mac FROM audit_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::sealed_from_row).transpose()
    }

    async fn audit_snapshot(&self) -> Result<AuditSnapshot, StoreError> {
        // One read transaction: the log and what it must explain, from the same moment.
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query("SELECT id, status FROM proposals ORDER BY id")
            .fetch_all(&mut *tx)
            .await?;
        let statuses = rows
            .iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let status: String = row.try_get("status")?;
                let status = ProposalStatus::parse(&status).ok_or_else(|| {
                    corrupt(
                        &format!("proposal {id}"),
                        format!("unknown status {status:?}"),
                    )
                })?;
                Ok((id, status))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let reviews = sqlx::query("SELECT * FROM reviews ORDER BY id")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(Self::review_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let entries = sqlx::query("SELECT * FROM audit_log ORDER BY seq")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(Self::audit_entry_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let sealed = sqlx::query("SELECT seq, hash, mac FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(Self::sealed_from_row)
            .transpose()?;
        tx.commit().await?;
        Ok(AuditSnapshot {
            entries,
            sealed,
            state: StoredState { statuses, reviews },
        })
    }

    async fn create_token(&self, token: &TokenRecord, hash: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO tokens (id, user_name, role, hash, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&token.id)
        .bind(&token.user)
        .bind(token.role.as_str())
        .bind(hash)
        .bind(timestamp(token.created_at))
        .bind(&token.created_by)
        .execute(&mut *tx)
        .await?;
        self.append_audit(
            &mut tx,
            &token.created_by,
            AuditAction::TokenCreate,
            &token.id,
            &serde_json::json!({ "user": token.user, "role": token.role }).to_string(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::token_from_row).collect()
    }

    async fn revoke_token(&self, id: &str, by: &str) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let revoked =
            sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(timestamp(Utc::now()))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        if revoked {
            self.append_audit(&mut tx, by, AuditAction::TokenRevoke, id, "{}")
                .await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM tokens WHERE hash = ? AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::token_from_row).transpose()
    }
}

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
