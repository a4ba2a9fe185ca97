//! Runs and their notifications, for every backend: recording a run in one write transaction
//! (the queue mark check, the proposals with their audit entries, the closing of proposals
//! still pending, the policy-change entry, the run's own entry and published head, its outbox
//! row, and the fenced end of its slot), the run reads, and the outbox.

use super::{append_audit, database_now, run_from_row, Arg, Conn, Dialect, RunRow, Sql};
use crate::domain::{
    AuditAction, AuditHead, Fence, Proposal, RunRecord, RunStatus, SlotStatus, StatusChange,
};
use crate::store::{
    closing_detail, corrupt, Notice, Outbox, OutboxItem, ProposalBody, QueueMark, RunTally, Runs,
    StoreError,
};
use async_trait::async_trait;
use std::time::Duration;

const PROPOSAL_COUNT: Sql = Sql::new("SELECT COUNT(*) FROM proposals");

#[async_trait]
impl<D: Dialect> Runs for D {
    async fn queue_mark(&self) -> Result<QueueMark, StoreError> {
        let (count,): (i64,) = self
            .connection()
            .await?
            .fetch_one(PROPOSAL_COUNT, &[])
            .await?;
        Ok(QueueMark(count))
    }

    async fn database_now(&self) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
        database_now::<D, _>(&mut self.connection().await?).await
    }

    async fn record_run(
        &self,
        run: &RunRecord,
        proposals: &[Proposal],
        changes: &[StatusChange],
        read_at: Option<QueueMark>,
        fence: Option<&Fence>,
    ) -> Result<AuditHead, StoreError> {
        let key = self.audit_key();
        let record = serde_json::to_string(run).map_err(|e| corrupt("run", e))?;
        let mut tx = self.begin_write().await?;
        if let (Some(read_at), false) = (read_at, proposals.is_empty() && changes.is_empty()) {
            let (count,): (i64,) = tx.fetch_one(PROPOSAL_COUNT, &[]).await?;
            if count != read_at.0 {
                return Err(StoreError::QueueChanged {
                    read_at,
                    now: QueueMark(count),
                });
            }
        }
        let trigger = run.trigger.to_string();
        tx.execute(
            Sql::new(
                "INSERT INTO runs (id, trigger, status, started_at, finished_at, proposer, record) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            ),
            &[
                Arg::Text(&run.id),
                Arg::Text(&trigger),
                Arg::Text(run.status.as_str()),
                Arg::time(run.started_at),
                Arg::time(run.finished_at),
                Arg::Text(&run.proposer),
                Arg::json(&record),
            ],
        )
        .await?;
        for proposal in proposals {
            insert_proposal(&mut tx, proposal).await?;
            // The draft's hash: approval, export and push check the stored draft against it.
            let detail =
                crate::store::vouch::proposal_created_detail(&proposal.draft, &proposal.verdicts);
            append_audit(
                &mut tx,
                key,
                &format!("proposer:{}", proposal.provenance.proposer),
                AuditAction::Proposal(proposal.status),
                &proposal.id,
                &detail,
            )
            .await?;
        }
        // Queue hygiene: each change applies only to a proposal still pending; one reviewed
        // meanwhile makes the run assess again against the queue as it is now. Dated by the
        // database's clock.
        let now = database_now::<D, _>(&mut tx).await?;
        for change in changes {
            let closed = tx
                .execute(
                    Sql::new(
                        "UPDATE proposals SET status = $1, updated_at = $2, superseded_by = $3 \
                         WHERE id = $4 AND status = 'pending_review'",
                    ),
                    &[
                        Arg::Text(change.closing.status().as_str()),
                        Arg::time(now),
                        Arg::OptText(change.superseded_by.as_deref()),
                        Arg::Text(&change.proposal_id),
                    ],
                )
                .await?;
            if closed != 1 {
                if read_at.is_some() {
                    return Err(StoreError::ProposalMoved {
                        proposal_id: change.proposal_id.clone(),
                    });
                }
                continue;
            }
            append_audit(
                &mut tx,
                key,
                &run.trigger.actor(),
                AuditAction::Proposal(change.closing.status()),
                &change.proposal_id,
                &closing_detail(&run.id, change),
            )
            .await?;
        }
        // A run evaluated against a policy set other than the last one logged logs the change.
        let last_policies: Option<(String,)> = tx
            .fetch_optional(
                Sql::new(
                    "SELECT subject FROM audit_log WHERE action = 'policies.changed' \
                     ORDER BY seq DESC LIMIT 1",
                ),
                &[],
            )
            .await?;
        let last_policies = last_policies.map(|(digest,)| digest);
        if !run.policy_digest.is_empty() && last_policies.as_deref() != Some(&run.policy_digest) {
            append_audit(
                &mut tx,
                key,
                &run.trigger.actor(),
                AuditAction::PoliciesChanged,
                &run.policy_digest,
                &serde_json::json!({ "run_id": run.id, "previous": last_policies }).to_string(),
            )
            .await?;
        }
        let summary = serde_json::to_string(&run.summary).map_err(|e| corrupt("audit", e))?;
        let head = append_audit(
            &mut tx,
            key,
            &run.trigger.actor(),
            AuditAction::Run(run.status),
            &run.id,
            &summary,
        )
        .await?;
        tx.execute(
            Sql::new("UPDATE runs SET audit_seq = $1, audit_hash = $2 WHERE id = $3"),
            &[
                Arg::Int(head.seq),
                Arg::Text(&head.hash),
                Arg::Text(&run.id),
            ],
        )
        .await?;
        // The run's notification, in the run's own transaction (the outbox).
        tx.execute(
            Sql::clocked::<D>(
                "INSERT INTO outbox (run_id, created_at, next_attempt_at) VALUES ($1, {now}, {now})",
            ),
            &[Arg::Text(&run.id)],
        )
        .await?;
        if let Some(fence) = fence {
            // The fence check and the proposals commit together, or not at all.
            let status = match run.status {
                RunStatus::Failed => SlotStatus::Failed,
                RunStatus::Succeeded | RunStatus::NotReady => SlotStatus::Succeeded,
            };
            let ended = tx
                .execute(
                    Sql::clocked::<D>(
                        "UPDATE slots SET status = $1, finished_at = {now}, run_id = $2, reason = $3 \
                         WHERE key = $4 AND token = $5 AND status = 'running' AND lease_expires >= {now}",
                    ),
                    &[
                        Arg::Text(status.as_str()),
                        Arg::Text(&run.id),
                        Arg::OptText(run.error.as_deref()),
                        Arg::Text(&fence.slot),
                        Arg::Int(fence.token),
                    ],
                )
                .await?;
            if ended != 1 {
                return Err(StoreError::LeaseLost {
                    slot: fence.slot.clone(),
                });
            }
        }
        tx.commit().await?;
        Ok(head)
    }

    async fn list_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let rows: Vec<RunRow> = self
            .connection()
            .await?
            .fetch_all(
                Sql::new(
                    "SELECT id, CAST(record AS TEXT) AS record, audit_seq, audit_hash FROM runs \
                     ORDER BY started_at DESC, id DESC LIMIT $1",
                ),
                &[Arg::size(limit)],
            )
            .await?;
        rows.into_iter().map(run_from_row).collect()
    }

    async fn list_runs_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let Some(after) = after else {
            return self.list_runs(limit).await;
        };
        let rows: Vec<RunRow> = self
            .connection()
            .await?
            .fetch_all(
                Sql::new(
                    "SELECT id, CAST(record AS TEXT) AS record, audit_seq, audit_hash FROM runs \
                     WHERE (started_at, id) < (SELECT started_at, id FROM runs WHERE id = $1) \
                     ORDER BY started_at DESC, id DESC LIMIT $2",
                ),
                &[Arg::Text(after), Arg::size(limit)],
            )
            .await?;
        rows.into_iter().map(run_from_row).collect()
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row: Option<RunRow> = self
            .connection()
            .await?
            .fetch_optional(
                Sql::new(
                    "SELECT id, CAST(record AS TEXT) AS record, audit_seq, audit_hash FROM runs \
                     WHERE id = $1",
                ),
                &[Arg::Text(id)],
            )
            .await?;
        row.map(run_from_row).transpose()
    }

    async fn count_runs_since(
        &self,
        trigger: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        let (count,): (i64,) = self
            .connection()
            .await?
            .fetch_one(
                Sql::new("SELECT COUNT(*) FROM runs WHERE trigger = $1 AND started_at >= $2"),
                &[Arg::Text(trigger), Arg::time(since)],
            )
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn run_tally(&self) -> Result<Vec<RunTally>, StoreError> {
        let rows: Vec<(String, String, i64, i64, Option<f64>)> = self
            .connection()
            .await?
            .fetch_all(Sql::run_tally::<D>(), &[])
            .await?;
        Ok(rows
            .into_iter()
            .map(|(trigger, status, bucket, runs, seconds)| RunTally {
                trigger,
                status,
                bucket: usize::try_from(bucket).unwrap_or(0),
                runs: u64::try_from(runs).unwrap_or(0),
                seconds: seconds.unwrap_or(0.0).max(0.0),
            })
            .collect())
    }
}

async fn insert_proposal<C: Conn>(tx: &mut C, proposal: &Proposal) -> Result<(), StoreError> {
    let body =
        serde_json::to_string(&ProposalBody::of(proposal)).map_err(|e| corrupt("proposal", e))?;
    tx.execute(
        Sql::new(
            "INSERT INTO proposals (id, run_id, status, moment, segment, lever, priority, \
             approvals_required, created_at, updated_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        ),
        &[
            Arg::Text(&proposal.id),
            Arg::Text(&proposal.run_id),
            Arg::Text(proposal.status.as_str()),
            Arg::Text(proposal.draft.moment.as_str()),
            Arg::Text(&proposal.draft.segment),
            Arg::Text(&proposal.draft.lever),
            Arg::Real(proposal.enrichment.priority),
            Arg::Typed(super::Typed::Count(proposal.approvals_required)),
            Arg::time(proposal.created_at),
            Arg::time(proposal.updated_at),
            Arg::json(&body),
        ],
    )
    .await?;
    Ok(())
}

/// An outbox row: `(id, run_id, proposal_id, review, attempts)`.
type OutboxRow = (i64, Option<String>, Option<String>, Option<String>, i64);

fn outbox_item(
    (id, run_id, proposal_id, review, attempts): OutboxRow,
) -> Result<OutboxItem, StoreError> {
    let about = match (run_id, proposal_id, review) {
        (Some(run), _, _) => Notice::Run(run),
        (None, Some(proposal_id), Some(review)) => Notice::Review {
            review: serde_json::from_str(&review)
                .map_err(|e| corrupt(&format!("outbox row {id}"), e))?,
            proposal_id,
        },
        _ => {
            return Err(corrupt(
                &format!("outbox row {id}"),
                "neither a run nor a review",
            ))
        }
    };
    Ok(OutboxItem {
        id,
        about,
        attempts,
    })
}

/// Queues the notification of `review` (an approval that decided its proposal, or a
/// rejection) inside `tx`, the review's own transaction.
pub(super) async fn enqueue_review<D: Dialect, C: Conn>(
    tx: &mut C,
    review: &crate::domain::Review,
) -> Result<(), StoreError> {
    let body = serde_json::to_string(review)
        .map_err(|e| corrupt(&format!("review of {}", review.proposal_id), e))?;
    tx.execute(
        Sql::clocked::<D>(
            "INSERT INTO outbox (proposal_id, review, created_at, next_attempt_at) \
             VALUES ($1, $2, {now}, {now})",
        ),
        &[Arg::Text(&review.proposal_id), Arg::Text(&body)],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl<D: Dialect> Outbox for D {
    async fn claim_notifications(
        &self,
        limit: usize,
        hold: Duration,
        max_age: Duration,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let mut tx = self.begin_write().await?;
        tx.execute(
            Sql::clocked::<D>(
                "UPDATE outbox SET delivered_at = -1, \
                 last_error = 'given up: older than the delivery window' \
                 WHERE delivered_at IS NULL AND created_at < {now} - $1",
            ),
            &[Arg::Real(max_age.as_secs_f64())],
        )
        .await?;
        let rows: Vec<OutboxRow> = tx
            .fetch_all(
                Sql::clocked::<D>(
                    "UPDATE outbox SET next_attempt_at = {now} + $1, attempts = attempts + 1 \
                     WHERE id IN (SELECT id FROM outbox WHERE delivered_at IS NULL \
                                  AND next_attempt_at <= {now} ORDER BY id LIMIT $2) \
                     RETURNING id, run_id, proposal_id, review, attempts",
                ),
                &[Arg::Real(hold.as_secs_f64()), Arg::size(limit)],
            )
            .await?;
        tx.commit().await?;
        let mut items = rows
            .into_iter()
            .map(outbox_item)
            .collect::<Result<Vec<_>, _>>()?;
        items.sort_by_key(|item| item.id);
        Ok(items)
    }

    async fn renew_notifications(
        &self,
        items: &[OutboxItem],
        hold: Duration,
    ) -> Result<Vec<i64>, StoreError> {
        // Under the write lock, as claims are: a hold is renewed only while it has not expired
        // and no other claim has counted an attempt since ours.
        let mut tx = self.begin_write().await?;
        let mut held = Vec::with_capacity(items.len());
        for item in items {
            let renewed = tx
                .execute(
                    Sql::clocked::<D>(
                        "UPDATE outbox SET next_attempt_at = {now} + $1 \
                         WHERE id = $2 AND attempts = $3 AND delivered_at IS NULL \
                         AND next_attempt_at > {now}",
                    ),
                    &[
                        Arg::Real(hold.as_secs_f64()),
                        Arg::Int(item.id),
                        Arg::Int(item.attempts),
                    ],
                )
                .await?;
            if renewed == 1 {
                held.push(item.id);
            }
        }
        tx.commit().await?;
        Ok(held)
    }

    async fn finish_notification(
        &self,
        id: i64,
        outcome: Result<(), String>,
        retry_in: Duration,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        match outcome {
            Ok(()) => {
                tx.execute(
                    Sql::clocked::<D>(
                        "UPDATE outbox SET delivered_at = {now}, last_error = NULL WHERE id = $1",
                    ),
                    &[Arg::Int(id)],
                )
                .await?;
            }
            Err(error) => {
                tx.execute(
                    Sql::clocked::<D>(
                        "UPDATE outbox SET next_attempt_at = {now} + $1, last_error = $2 \
                         WHERE id = $3",
                    ),
                    &[
                        Arg::Real(retry_in.as_secs_f64()),
                        Arg::Text(&error),
                        Arg::Int(id),
                    ],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn notification_counts(&self) -> Result<(usize, usize), StoreError> {
        let mut conn = self.connection().await?;
        let (delivered,): (i64,) = conn
            .fetch_one(
                Sql::new("SELECT COUNT(*) FROM outbox WHERE delivered_at > 0"),
                &[],
            )
            .await?;
        let (pending,): (i64,) = conn
            .fetch_one(
                Sql::new("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL"),
                &[],
            )
            .await?;
        Ok((
            usize::try_from(delivered).unwrap_or(0),
            usize::try_from(pending).unwrap_or(0),
        ))
    }
}
