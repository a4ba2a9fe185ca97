//! The PostgreSQL backend, for several replicas sharing one database: migrations from
//! `migrations/postgres/` compiled into the binary (the migrator serialises concurrent starts
//! with its own advisory lock). Every write transaction first takes one transaction-scoped
//! advisory lock ([`WRITE_LOCK`]), the same discipline SQLite's single writer imposes: the audit
//! chain's head, an import's existing rows, a review's previous status and the queue mark a run
//! was assessed against are read and written with no other writer in between, on every replica.

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
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use std::str::FromStr;
use std::time::Duration;

/// The database's clock, in seconds since the epoch: leases never trust a replica's clock.
/// (`clock_timestamp()`, not `now()`, which is the start of the transaction.)
const DB_NOW: &str = "extract(epoch from clock_timestamp())::double precision";

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

/// Timestamps as hypod stores them: microseconds, as PostgreSQL keeps them.
fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

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
        super::check_migrated(applied, &sqlx::migrate!("./migrations/postgres"))?;
        Ok(store)
    }

    pub async fn connect_with(
        options: PgConnectOptions,
        key: AuditKey,
    ) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.application_name("hypod"))
            .await?;
        Ok(PostgresStore { pool, key })
    }

    /// A write transaction holding [`WRITE_LOCK`] until it commits or rolls back.
    async fn write_tx(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Appends one entry to the chain, keyed, and seals the new head, inside `tx`.
    async fn append_audit(
        &self,
        tx: &mut Transaction<'_, Postgres>,
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
        let now = micros(Utc::now());
        let at = timestamp(now);
        let action = action.to_string();
        let hash = audit_hash(&prev, &at, actor, &action, subject, detail);
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO audit_log (at, actor, action, subject, detail, prev_hash, hash, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
        )
        .bind(now)
        .bind(actor)
        .bind(action)
        .bind(subject)
        .bind(detail)
        .bind(&prev)
        .bind(&hash)
        .bind(self.key.entry_mac(&hash))
        .fetch_one(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, $1, $2, $3) \
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
    fn sealed_from_row(row: &PgRow) -> Result<SealedHead, StoreError> {
        Ok(SealedHead {
            head: AuditHead {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
            },
            mac: row.try_get("mac")?,
        })
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
            revoked_at: row.try_get("revoked_at")?,
            id,
        })
    }

    fn run_from_row(row: &PgRow) -> Result<RunRecord, StoreError> {
        let id: String = row.try_get("id")?;
        let record: String = row.try_get("record")?;
        let mut run: RunRecord =
            serde_json::from_str(&record).map_err(|e| corrupt(&format!("run {id}"), e))?;
        let seq: Option<i64> = row.try_get("audit_seq")?;
        let hash: Option<String> = row.try_get("audit_hash")?;
        run.audit_head = seq.zip(hash).map(|(seq, hash)| AuditHead { seq, hash });
        Ok(run)
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

    async fn proposal_count(executor: impl sqlx::PgExecutor<'_>) -> Result<QueueMark, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM proposals")
            .fetch_one(executor)
            .await?;
        Ok(QueueMark(count))
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn upsert_experiments(
        &self,
        experiments: &[Experiment],
    ) -> Result<UpsertCounts, StoreError> {
        let mut counts = UpsertCounts::default();
        let now = micros(Utc::now());
        let mut tx = self.write_tx().await?;
        // One round trip per batch of rows, not per experiment. A batch that names an id twice
        // goes row by row, so that the later record updates the earlier as it would alone.
        const BATCH: usize = 1_000;
        for batch in experiments.chunks(BATCH) {
            let mut ids = std::collections::HashSet::with_capacity(batch.len());
            let distinct = batch.iter().all(|e| ids.insert(e.id.as_str()));
            let mut bodies = Vec::with_capacity(batch.len());
            for experiment in batch {
                bodies
                    .push(serde_json::to_string(experiment).map_err(|e| corrupt("experiment", e))?);
            }
            if distinct {
                // Inserted rows have xmax = 0; an unchanged body (compared as jsonb, whatever
                // the key order) is not touched and not returned.
                let (inserted, updated): (i64, i64) = sqlx::query_as(
                    "WITH input AS (                        SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])                          AS t(id, moment, status, body)),                      changed AS (                        INSERT INTO experiments (id, moment, status, body, imported_at, updated_at)                        SELECT id, moment, status, body::jsonb, $5::timestamptz, $5::timestamptz FROM input                        ON CONFLICT (id) DO UPDATE SET moment = EXCLUDED.moment,                          status = EXCLUDED.status, body = EXCLUDED.body, updated_at = EXCLUDED.updated_at                        WHERE experiments.body IS DISTINCT FROM EXCLUDED.body                        RETURNING (xmax = 0) AS inserted)                      SELECT COUNT(*) FILTER (WHERE inserted), COUNT(*) FILTER (WHERE NOT inserted) FROM changed",
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
                .bind(&bodies)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                counts.inserted += inserted as usize;
                counts.updated += updated as usize;
                counts.unchanged += batch.len() - inserted as usize - updated as usize;
                continue;
            }
            for (experiment, body) in batch.iter().zip(&bodies) {
                // Compared as jsonb: the same experiment is unchanged whatever the key order.
                let same: Option<bool> =
                    sqlx::query_scalar("SELECT body = $2::jsonb FROM experiments WHERE id = $1")
                        .bind(&experiment.id)
                        .bind(body)
                        .fetch_optional(&mut *tx)
                        .await?;
                match same {
                    Some(true) => counts.unchanged += 1,
                    Some(false) => {
                        sqlx::query(
                        "UPDATE experiments SET moment = $1, status = $2, body = $3::jsonb, updated_at = $4 WHERE id = $5",
                    )
                    .bind(experiment.moment.as_str())
                    .bind(experiment.status.as_str())
                    .bind(body)
                    .bind(now)
                    .bind(&experiment.id)
                    .execute(&mut *tx)
                    .await?;
                        counts.updated += 1;
                    }
                    None => {
                        sqlx::query(
                        "INSERT INTO experiments (id, moment, status, body, imported_at, updated_at) VALUES ($1, $2, $3, $4::jsonb, $5, $5)",
                    )
                    .bind(&experiment.id)
                    .bind(experiment.moment.as_str())
                    .bind(experiment.status.as_str())
                    .bind(body)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                        counts.inserted += 1;
                    }
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

    async fn queue_mark(&self) -> Result<QueueMark, StoreError> {
        Self::proposal_count(&self.pool).await
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
            let now = Self::proposal_count(&mut *tx).await?;
            if now != read_at {
                return Err(StoreError::QueueChanged { read_at, now });
            }
        }
        sqlx::query(
            "INSERT INTO runs (id, trigger, status, started_at, finished_at, proposer, record) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
        )
        .bind(&run.id)
        .bind(run.trigger.to_string())
        .bind(run.status.as_str())
        .bind(micros(run.started_at))
        .bind(micros(run.finished_at))
        .bind(&run.proposer)
        .bind(&record)
        .execute(&mut *tx)
        .await?;
        for proposal in proposals {
            let body = serde_json::to_string(&ProposalBody::of(proposal))
                .map_err(|e| corrupt("proposal", e))?;
            sqlx::query(
                "INSERT INTO proposals (id, run_id, status, moment, segment, lever, priority, approvals_required, created_at, updated_at, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)",
            )
            .bind(&proposal.id)
            .bind(&proposal.run_id)
            .bind(proposal.status.as_str())
            .bind(proposal.draft.moment.as_str())
            .bind(&proposal.draft.segment)
            .bind(&proposal.draft.lever)
            .bind(proposal.enrichment.priority)
            .bind(i32::try_from(proposal.approvals_required).unwrap_or(i32::MAX))
            .bind(micros(proposal.created_at))
            .bind(micros(proposal.updated_at))
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
                "UPDATE proposals SET status = $1, updated_at = $2, superseded_by = $3 WHERE id = $4 AND status = 'pending_review'",
            )
            .bind(change.closing.status().as_str())
            .bind(micros(run.finished_at))
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
        sqlx::query("UPDATE runs SET audit_seq = $1, audit_hash = $2 WHERE id = $3")
            .bind(head.seq)
            .bind(&head.hash)
            .bind(&run.id)
            .execute(&mut *tx)
            .await?;
        // The run's notification, in the run's own transaction (the outbox).
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO outbox (run_id, created_at, next_attempt_at) VALUES ($1, {DB_NOW}, {DB_NOW})"
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
                "UPDATE slots SET status = $1, finished_at = {DB_NOW}, run_id = $2, reason = $3 \
                 WHERE key = $4 AND token = $5 AND status = 'running' AND lease_expires >= {DB_NOW}"
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

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, record::text AS record, audit_seq, audit_hash FROM runs WHERE id = $1",
        )
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
             WHERE delivered_at IS NULL AND created_at < {DB_NOW} - $1"
        )))
        .bind(max_age.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET next_attempt_at = {DB_NOW} + $1, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM outbox WHERE delivered_at IS NULL \
                          AND next_attempt_at <= {DB_NOW} ORDER BY id LIMIT $2) \
             RETURNING id, run_id, attempts"
        )))
        .bind(hold.as_secs_f64())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut items = rows
            .iter()
            .map(|row| {
                Ok(OutboxItem {
                    id: row.try_get("id")?,
                    run_id: row.try_get("run_id")?,
                    attempts: row.try_get("attempts")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        items.sort_by_key(|item| item.id);
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
                    "UPDATE outbox SET delivered_at = {DB_NOW}, last_error = NULL WHERE id = $1"
                )))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            Err(error) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE outbox SET next_attempt_at = {DB_NOW} + $1, last_error = $2 WHERE id = $3"
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
        Ok((
            usize::try_from(delivered).unwrap_or(0),
            usize::try_from(pending).unwrap_or(0),
        ))
    }

    async fn claim_slot(
        &self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let mut tx = self.write_tx().await?;
        let now: f64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {DB_NOW}")))
            .fetch_one(&mut *tx)
            .await?;
        let expires = now + lease.as_secs_f64();
        let row = sqlx::query("SELECT status, token, lease_expires FROM slots WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        let claim = match row {
            None => {
                sqlx::query(
                    "INSERT INTO slots (key, status, owner, token, lease_expires, claimed_at) \
                     VALUES ($1, 'running', $2, 1, $3, $4)",
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
                let status: String = row.try_get("status")?;
                let status = SlotStatus::parse(&status)
                    .ok_or_else(|| corrupt(&format!("slot {key}"), &status))?;
                let token: i64 = row.try_get("token")?;
                let lease_expires: f64 = row.try_get("lease_expires")?;
                match status {
                    SlotStatus::Running if lease_expires < now => {
                        sqlx::query(
                            "UPDATE slots SET owner = $1, token = token + 1, lease_expires = $2, \
                             takeovers = takeovers + 1 WHERE key = $3 AND token = $4",
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
            "UPDATE slots SET lease_expires = {DB_NOW} + $1 \
             WHERE key = $2 AND token = $3 AND status = 'running' AND lease_expires >= {DB_NOW}"
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
            "UPDATE slots SET status = $1, finished_at = {DB_NOW}, reason = $2 \
             WHERE key = $3 AND token = $4 AND status = 'running'"
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
            "UPDATE slots SET lease_expires = 0 WHERE key = $1 AND token = $2 AND status = 'running'",
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
             ORDER BY claimed_at DESC, key DESC LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
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

    async fn list_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, record::text AS record, audit_seq, audit_hash FROM runs ORDER BY started_at DESC, id DESC LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::run_from_row).collect()
    }

    async fn list_proposals(&self, filter: &ProposalFilter) -> Result<Vec<Proposal>, StoreError> {
        // Optional filters as `($n IS NULL OR column = $n)`: one static query, no SQL built at
        // run time. `LIMIT NULL` is no limit.
        let sql = select_proposals(
            "WHERE ($1::text IS NULL OR p.status = $1) AND ($2::text IS NULL OR p.moment = $2) \
             AND ($3::text IS NULL OR p.run_id = $3) AND ($4::text IS NULL OR p.segment = $4) \
             AND ($5::text IS NULL OR p.body->'draft'->>'title' ILIKE $5 \
                  OR p.body->'draft'->>'hypothesis' ILIKE $5) \
             AND ($6::float8 IS NULL OR p.priority < $6 OR (p.priority = $6 AND p.id > $7)) \
             ORDER BY p.priority DESC, p.id ASC LIMIT $8",
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.moment.map(|m| m.as_str()))
            .bind(filter.run_id.as_deref())
            .bind(filter.segment.as_deref())
            .bind(filter.text.as_deref().map(super::sqlite::like_pattern))
            .bind(filter.after.as_ref().map(|c| c.priority))
            .bind(filter.after.as_ref().map(|c| c.id.as_str()))
            .bind(filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Self::proposal_from_row).collect()
    }

    async fn get_proposal(&self, id: &str) -> Result<Option<Proposal>, StoreError> {
        let sql = select_proposals("WHERE p.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::proposal_from_row).transpose()
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
                found.push(Self::proposal_from_row(row)?);
            }
        }
        Ok(found)
    }

    async fn proposal_reviews(&self, id: &str) -> Result<Vec<Review>, StoreError> {
        let rows = sqlx::query(
            "SELECT proposal_id, actor, role, action, note, at FROM reviews WHERE proposal_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::review_from_row).collect()
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
            .map(|row| Ok((Self::proposal_from_row(row)?, Self::review_from_row(row)?)))
            .collect()
    }

    async fn review(&self, review: &Review) -> Result<Proposal, StoreError> {
        let mut tx = self.write_tx().await?;
        let sql = select_proposals("WHERE p.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&review.proposal_id)
            .fetch_optional(&mut *tx)
            .await?;
        let mut proposal = match row {
            Some(row) => Self::proposal_from_row(&row)?,
            None => return Err(ReviewError::NotFound(review.proposal_id.clone()).into()),
        };
        let previous: Vec<Review> = sqlx::query(
            "SELECT proposal_id, actor, role, action, note, at FROM reviews WHERE proposal_id = $1 ORDER BY id",
        )
        .bind(&review.proposal_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(Self::review_from_row)
        .collect::<Result<_, _>>()?;
        let status = apply_review(&proposal, &previous, review)?;
        let at = micros(review.at);
        sqlx::query(
            "INSERT INTO reviews (proposal_id, actor, role, action, note, at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&review.proposal_id)
        .bind(&review.actor)
        .bind(review.role.as_str())
        .bind(review.action.as_str())
        .bind(&review.note)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        // Guarded on the status read above (the write lock already excludes a concurrent review).
        let updated = sqlx::query(
            "UPDATE proposals SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
        )
        .bind(status.as_str())
        .bind(at)
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

    async fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_entries(0, usize::MAX).await
    }

    async fn audit_entries(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, subject, detail, prev_hash, hash, mac FROM audit_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
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
        // One snapshot: the log and what it must explain, from the same moment.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
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
        let reviews = sqlx::query(
            "SELECT proposal_id, actor, role, action, note, at FROM reviews ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(Self::review_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        let entries = sqlx::query(
            "SELECT seq, at, actor, action, subject, detail, prev_hash, hash, mac FROM audit_log ORDER BY seq",
        )
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
            "INSERT INTO tokens (id, user_name, role, hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.id)
        .bind(&token.user)
        .bind(token.role.as_str())
        .bind(hash)
        .bind(micros(token.created_at))
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
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(micros(Utc::now()))
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
        let row = sqlx::query("SELECT * FROM tokens WHERE hash = $1 AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::token_from_row).transpose()
    }
}

/// `SELECT <proposal columns> FROM proposals p <rest>`: the column list is a constant, `rest`
/// is a constant clause with placeholders; no value is ever formatted into the SQL.
fn select_proposals(rest: &'static str) -> String {
    format!("SELECT {PROPOSAL_COLUMNS} FROM proposals p {rest}")
}
