//! The push outbox, for every backend: approved proposals to be created as draft experiments
//! on the platform (`[export.growthbook]`). A row is queued in the approving review's
//! transaction ([`enqueue`], from `reviews.rs`) or by hand; claimed and held on the database's
//! clock as notifications are; and finished only by the claim that holds it, with its
//! `push.delivered` / `push.refused` audit entry in the same transaction, so a push is
//! recorded once whatever the number of daemons.

use super::{append_audit, Arg, Conn, Dialect, Sql};
use crate::domain::AuditAction;
use crate::store::{PushItem, PushOutcome, PushRecord, PushState, Pushes, StoreError};
use async_trait::async_trait;
use std::time::Duration;

/// Queues a push of `proposal_id` inside `tx`, unless one is queued, pushed or refused already.
pub(super) async fn enqueue<D: Dialect, C: Conn>(
    tx: &mut C,
    proposal_id: &str,
    platform: &str,
) -> Result<bool, StoreError> {
    let inserted = tx
        .execute(
            Sql::clocked::<D>(
                "INSERT INTO pushes (proposal_id, platform, state, created_at, next_attempt_at) \
                 VALUES ($1, $2, 'pending', {now}, {now}) ON CONFLICT (proposal_id) DO NOTHING",
            ),
            &[Arg::Text(proposal_id), Arg::Text(platform)],
        )
        .await?;
    Ok(inserted == 1)
}

/// A push row: `(proposal_id, platform, state, attempts, experiment_id, experiment_url,
/// http_status, last_error)`.
type PushRow = (
    String,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

#[async_trait]
impl<D: Dialect> Pushes for D {
    async fn enqueue_pushes(
        &self,
        ids: &[String],
        platform: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut queued = Vec::new();
        for id in ids {
            if enqueue::<D, _>(&mut tx, id, platform).await? {
                queued.push(id.clone());
                continue;
            }
            // A refused push created nothing on the platform: by hand, it is tried again.
            let again = tx
                .execute(
                    Sql::clocked::<D>(
                        "UPDATE pushes SET state = 'pending', next_attempt_at = {now}, \
                         finished_at = NULL, http_status = NULL, last_error = NULL \
                         WHERE proposal_id = $1 AND state = 'refused'",
                    ),
                    &[Arg::Text(id)],
                )
                .await?;
            if again == 1 {
                queued.push(id.clone());
            }
        }
        tx.commit().await?;
        Ok(queued)
    }

    async fn claim_pushes(
        &self,
        limit: usize,
        hold: Duration,
    ) -> Result<Vec<PushItem>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows: Vec<(String, i64)> = tx
            .fetch_all(
                Sql::clocked::<D>(
                    "UPDATE pushes SET next_attempt_at = {now} + $1, attempts = attempts + 1 \
                     WHERE proposal_id IN (SELECT proposal_id FROM pushes WHERE state = 'pending' \
                                           AND next_attempt_at <= {now} \
                                           ORDER BY created_at, proposal_id LIMIT $2) \
                     RETURNING proposal_id, attempts",
                ),
                &[Arg::Real(hold.as_secs_f64()), Arg::size(limit)],
            )
            .await?;
        tx.commit().await?;
        let mut items: Vec<PushItem> = rows
            .into_iter()
            .map(|(proposal_id, attempts)| PushItem {
                proposal_id,
                attempts,
            })
            .collect();
        items.sort_by(|a, b| a.proposal_id.cmp(&b.proposal_id));
        Ok(items)
    }

    async fn finish_push(
        &self,
        item: &PushItem,
        outcome: &PushOutcome,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let held = [Arg::Text(&item.proposal_id), Arg::Int(item.attempts)];
        let updated = match outcome {
            PushOutcome::Pushed {
                experiment_id,
                experiment_url,
                ..
            } => {
                tx.execute(
                    Sql::clocked::<D>(
                        "UPDATE pushes SET state = 'pushed', finished_at = {now}, \
                         experiment_id = $3, experiment_url = $4, http_status = NULL, last_error = NULL \
                         WHERE proposal_id = $1 AND attempts = $2 AND state = 'pending'",
                    ),
                    &[
                        held[0],
                        held[1],
                        Arg::Text(experiment_id),
                        Arg::Text(experiment_url),
                    ],
                )
                .await?
            }
            PushOutcome::Refused {
                http_status,
                message,
            } => {
                tx.execute(
                    Sql::clocked::<D>(
                        "UPDATE pushes SET state = 'refused', finished_at = {now}, \
                         http_status = NULLIF($3, 0), last_error = $4 \
                         WHERE proposal_id = $1 AND attempts = $2 AND state = 'pending'",
                    ),
                    &[
                        held[0],
                        held[1],
                        opt_status(*http_status),
                        Arg::Text(message),
                    ],
                )
                .await?
            }
            PushOutcome::Retry {
                http_status,
                error,
                retry_in,
            } => {
                tx.execute(
                    Sql::clocked::<D>(
                        "UPDATE pushes SET next_attempt_at = {now} + $3, http_status = NULLIF($4, 0), \
                         last_error = $5 \
                         WHERE proposal_id = $1 AND attempts = $2 AND state = 'pending'",
                    ),
                    &[
                        held[0],
                        held[1],
                        Arg::Real(retry_in.as_secs_f64()),
                        opt_status(*http_status),
                        Arg::Text(error),
                    ],
                )
                .await?
            }
        };
        if updated != 1 {
            return Ok(false);
        }
        let entry = match outcome {
            PushOutcome::Pushed {
                experiment_id,
                experiment_url,
                confirmed_duplicate,
            } => Some((
                AuditAction::PushDelivered,
                serde_json::json!({
                    "platform": "growthbook",
                    "experiment_id": experiment_id,
                    "experiment_url": experiment_url,
                    "attempts": item.attempts,
                    "found_existing": confirmed_duplicate,
                }),
            )),
            PushOutcome::Refused {
                http_status,
                message,
            } => Some((
                AuditAction::PushRefused,
                serde_json::json!({
                    "platform": "growthbook",
                    "http_status": http_status,
                    "message": message,
                    "attempts": item.attempts,
                }),
            )),
            PushOutcome::Retry { .. } => None,
        };
        if let Some((action, detail)) = entry {
            append_audit(
                &mut tx,
                self.audit_key(),
                actor,
                action,
                &item.proposal_id,
                &detail.to_string(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn push_of(&self, proposal_id: &str) -> Result<Option<PushRecord>, StoreError> {
        let row: Option<PushRow> = self
            .connection()
            .await?
            .fetch_optional(
                Sql::new(
                    "SELECT proposal_id, platform, state, attempts, experiment_id, experiment_url, \
                     http_status, last_error FROM pushes WHERE proposal_id = $1",
                ),
                &[Arg::Text(proposal_id)],
            )
            .await?;
        row.map(
            |(
                proposal_id,
                platform,
                state,
                attempts,
                experiment_id,
                experiment_url,
                http_status,
                error,
            )| {
                let state = PushState::parse(&state).ok_or_else(|| {
                    crate::store::corrupt(&format!("push of {proposal_id}"), &state)
                })?;
                Ok(PushRecord {
                    proposal_id,
                    platform,
                    state,
                    attempts,
                    experiment_id,
                    experiment_url,
                    http_status,
                    error,
                })
            },
        )
        .transpose()
    }

    async fn push_tally(&self) -> Result<(Vec<(PushState, u64)>, Option<f64>), StoreError> {
        let rows: Vec<(String, i64, Option<f64>)> = self
            .connection()
            .await?
            .fetch_all(
                Sql::clocked::<D>(
                    "SELECT state, COUNT(*), MAX(CASE WHEN state = 'pending' \
                     THEN {now} - created_at END) FROM pushes GROUP BY state ORDER BY state",
                ),
                &[],
            )
            .await?;
        let mut oldest = None;
        let mut counts = Vec::new();
        for (state, n, age) in rows {
            let state = PushState::parse(&state)
                .ok_or_else(|| crate::store::corrupt("push state", format!("{state:?}")))?;
            if state == PushState::Pending {
                oldest = age.map(|a| a.max(0.0));
            }
            counts.push((state, u64::try_from(n).unwrap_or(0)));
        }
        Ok((counts, oldest))
    }
}

/// An HTTP status as an argument, 0 (stored as NULL through `NULLIF`) for none: one type on
/// both backends.
fn opt_status<'a>(status: Option<u16>) -> Arg<'a> {
    Arg::Int(status.map_or(0, i64::from))
}
