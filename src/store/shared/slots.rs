//! Scheduled slots, for every backend: a claim (a new slot, or a takeover of one whose lease
//! expired, with the next fencing token) in one write transaction, and the lease's renewal,
//! end and release, each one statement checked against the fence on the database's clock.
//! Only scheduled slots (`schedule:…`) are ever taken over: an expired slot of `hypod run`,
//! the API or the demo is ended as abandoned instead, since no other process can run it.

use super::{corrupt_slot, Arg, Conn, Dialect, Sql};
use crate::domain::{Claim, Fence, SlotRecord, SlotStatus};
use crate::store::{Slots, StoreError};
use async_trait::async_trait;
use std::time::Duration;

/// A slot's row as listed: key, status, owner, token, takeovers, run id, reason.
type SlotRow = (
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
);

#[async_trait]
impl<D: Dialect> Slots for D {
    async fn claim_slot(
        &self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let mut tx = self.begin_write().await?;
        let (now,): (f64,) = tx.fetch_one(Sql::clocked::<D>("SELECT {now}"), &[]).await?;
        let expires = now + lease.as_secs_f64();
        let row: Option<(String, i64, f64)> = tx
            .fetch_optional(
                Sql::new("SELECT status, token, lease_expires FROM slots WHERE key = $1"),
                &[Arg::Text(key)],
            )
            .await?;
        let claim = match row {
            None => {
                tx.execute(
                    Sql::new(
                        "INSERT INTO slots (key, status, owner, token, lease_expires, claimed_at) \
                         VALUES ($1, 'running', $2, 1, $3, $4)",
                    ),
                    &[
                        Arg::Text(key),
                        Arg::Text(owner),
                        Arg::Real(expires),
                        Arg::Real(now),
                    ],
                )
                .await?;
                Claim::Claimed(Fence {
                    slot: key.to_string(),
                    token: 1,
                })
            }
            Some((status, token, lease_expires)) => {
                let status =
                    SlotStatus::parse(&status).ok_or_else(|| corrupt_slot(key, &status))?;
                match status {
                    SlotStatus::Running if lease_expires < now => {
                        tx.execute(
                            Sql::new(
                                "UPDATE slots SET owner = $1, token = token + 1, lease_expires = $2, \
                                 takeovers = takeovers + 1 WHERE key = $3 AND token = $4",
                            ),
                            &[
                                Arg::Text(owner),
                                Arg::Real(expires),
                                Arg::Text(key),
                                Arg::Int(token),
                            ],
                        )
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
        let renewed = self
            .connection()
            .await?
            .execute(
                Sql::clocked::<D>(
                    "UPDATE slots SET lease_expires = {now} + $1 \
                     WHERE key = $2 AND token = $3 AND status = 'running' AND lease_expires >= {now}",
                ),
                &[
                    Arg::Real(lease.as_secs_f64()),
                    Arg::Text(&fence.slot),
                    Arg::Int(fence.token),
                ],
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn end_slot(
        &self,
        fence: &Fence,
        status: SlotStatus,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let ended = self
            .connection()
            .await?
            .execute(
                Sql::clocked::<D>(
                    "UPDATE slots SET status = $1, finished_at = {now}, reason = $2 \
                     WHERE key = $3 AND token = $4 AND status = 'running'",
                ),
                &[
                    Arg::Text(status.as_str()),
                    Arg::Text(reason),
                    Arg::Text(&fence.slot),
                    Arg::Int(fence.token),
                ],
            )
            .await?;
        Ok(ended == 1)
    }

    async fn release_slot(&self, fence: &Fence) -> Result<(), StoreError> {
        self.connection()
            .await?
            .execute(
                Sql::new(
                    "UPDATE slots SET lease_expires = 0 \
                     WHERE key = $1 AND token = $2 AND status = 'running'",
                ),
                &[Arg::Text(&fence.slot), Arg::Int(fence.token)],
            )
            .await?;
        Ok(())
    }

    async fn skip_slot(&self, key: &str, owner: &str, reason: &str) -> Result<bool, StoreError> {
        // One statement: a slot that exists (ran, running, or expired and so to be taken over)
        // is left as it is.
        let inserted = self
            .connection()
            .await?
            .execute(
                Sql::clocked::<D>(
                    "INSERT INTO slots \
                     (key, status, owner, token, lease_expires, claimed_at, finished_at, reason) \
                     VALUES ($1, 'skipped', $2, 1, {now}, {now}, {now}, $3) \
                     ON CONFLICT (key) DO NOTHING",
                ),
                &[Arg::Text(key), Arg::Text(owner), Arg::Text(reason)],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn expired_slots(&self) -> Result<Vec<String>, StoreError> {
        let keys: Vec<(String,)> = self
            .connection()
            .await?
            .fetch_all(
                Sql::clocked::<D>(
                    "SELECT key FROM slots WHERE status = 'running' AND lease_expires < {now} \
                     AND key LIKE 'schedule:%' ORDER BY claimed_at",
                ),
                &[],
            )
            .await?;
        Ok(keys.into_iter().map(|(key,)| key).collect())
    }

    async fn end_abandoned_slots(&self) -> Result<Vec<SlotRecord>, StoreError> {
        // One statement on the database's clock, so a holder that renews in time is never
        // ended, and two daemons sweeping at once end each slot once.
        let rows: Vec<SlotRow> = self
            .connection()
            .await?
            .fetch_all(
                Sql::clocked::<D>(
                    "UPDATE slots SET status = 'failed', finished_at = {now}, \
                     reason = 'abandoned: the process that claimed it (' || owner || \
                     ') died or stopped renewing its lease; a run not of the schedule is never \
                     re-run by another process, start it again if it is still wanted' \
                     WHERE status = 'running' AND lease_expires < {now} \
                     AND key NOT LIKE 'schedule:%' \
                     RETURNING key, status, owner, token, takeovers, run_id, reason",
                ),
                &[],
            )
            .await?;
        rows.into_iter().map(slot_record).collect()
    }

    async fn list_slots(&self, limit: usize) -> Result<Vec<SlotRecord>, StoreError> {
        let rows: Vec<SlotRow> = self
            .connection()
            .await?
            .fetch_all(
                Sql::new(
                    "SELECT key, status, owner, token, takeovers, run_id, reason FROM slots \
                     ORDER BY claimed_at DESC, key DESC LIMIT $1",
                ),
                &[Arg::size(limit)],
            )
            .await?;
        rows.into_iter().map(slot_record).collect()
    }
}

/// A slot's row, read.
fn slot_record(
    (key, status, owner, token, takeovers, run_id, reason): SlotRow,
) -> Result<SlotRecord, StoreError> {
    Ok(SlotRecord {
        status: SlotStatus::parse(&status).ok_or_else(|| corrupt_slot(&key, &status))?,
        owner,
        token,
        takeovers,
        run_id,
        reason,
        key,
    })
}
