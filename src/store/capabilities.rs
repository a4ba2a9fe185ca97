//! What the store can do, one trait per capability, so that a caller can name what it needs
//! (the scheduler slots and runs, the review surface proposals, reviews and the audit log).
//! [`Store`] is all of them together with the migrations: what a backend is, and what
//! `&dyn Store` / `Box<dyn Store>` callers hold.
//!
//! Where each is written: the multi-statement writes, and every statement both backends say
//! the same way, once in [`super::shared`] for every backend; the reads whose rows differ
//! between backends (proposals, reviews, the audit log, tokens, experiments) in each backend.

use super::{
    AuditEntry, AuditSnapshot, BacktestRecord, HistoryMark, OutboxItem, PushItem, PushOutcome,
    PushRecord, PushState, QueueMark, RunTally, SealedHead, SourceState, StoreError, SyncCounts,
    SyncWrite, TokenRecord, UpsertCounts,
};
use crate::domain::{
    Approver, AuditHead, Claim, Fence, Proposal, ProposalFilter, ProposalStatus, Review, RunRecord,
    SlotRecord, SlotStatus, StatusChange,
};
use crate::history::Experiment;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Everything a backend offers: each capability, and its migrations.
#[async_trait]
pub trait Store:
    Experiments
    + SourceStates
    + Backtests
    + Runs
    + Outbox
    + Pushes
    + Proposals
    + ProposalCounts
    + Reviews
    + AuditLog
    + Tokens
    + Slots
{
    /// Applies this backend's migrations (idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;
    /// What `/readyz` checks beyond the database answering: on SQLite, that the database file
    /// is still the one opened and writable.
    async fn check_ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The imported experiment history.
#[async_trait]
pub trait Experiments: Send + Sync {
    /// Inserts or updates experiments by id, all in one transaction, with one audit entry
    /// naming `by` (who imported) and the digest of every record written.
    async fn upsert_experiments(
        &self,
        experiments: &[Experiment],
        by: &str,
    ) -> Result<UpsertCounts, StoreError>;
    async fn load_experiments(&self) -> Result<Vec<Experiment>, StoreError>;
    /// The audit log's head and whether an entry after sequence number `since` changed the
    /// history (one indexed read of the entries after `since`): what tells a cached analysis
    /// it is stale.
    async fn history_mark(&self, since: i64) -> Result<HistoryMark, StoreError>;
}

/// History sources: what each keeps between syncs, and a sync's write.
#[async_trait]
pub trait SourceStates: Send + Sync {
    /// What the source `name` kept at its last good sync, if it ever had one.
    async fn source_state(&self, name: &str) -> Result<Option<SourceState>, StoreError>;
    /// Writes one source's sync in one transaction: its experiments upserted by id (the
    /// source recorded as the one that last wrote each), its state and listed ids, and one
    /// `history.sync` audit entry with the counts, the digest of what was read and the digest
    /// of every record written. Ids listed at the previous sync and no longer are reported as
    /// vanished and kept.
    async fn write_sync(&self, sync: &SyncWrite<'_>) -> Result<SyncCounts, StoreError>;
}

/// The backtests' results (`hypod backtest`): what the runs page draws its calibration chart from.
#[async_trait]
pub trait Backtests: Send + Sync {
    /// Keeps one backtest's result (its `--json` view), dated by the database's clock.
    async fn record_backtest(&self, backtest: &BacktestRecord) -> Result<(), StoreError>;
    /// The latest backtest kept, if any.
    async fn last_backtest(&self) -> Result<Option<BacktestRecord>, StoreError>;
}

/// Runs, and the queue mark a run records against.
#[async_trait]
pub trait Runs: Send + Sync {
    /// The queue's current [`QueueMark`]. A run reads it before it reads the open proposals.
    async fn queue_mark(&self) -> Result<QueueMark, StoreError>;
    /// The database's clock: what a run expires pending proposals against and dates its new
    /// proposals with (never the process's clock, which `HYPOD_NOW` may set).
    async fn database_now(&self) -> Result<DateTime<Utc>, StoreError>;

    /// Stores a run and its proposals in one transaction, with their audit entries, and closes
    /// the open proposals `changes` name (expired, superseded), each with a `proposal.<status>`
    /// audit entry, only while they are still pending review (stamped with the database's
    /// clock).
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
    /// Up to `limit` runs, newest first, that come after run `after` in that order (keyset
    /// pagination; a run id that does not exist yields an empty page).
    async fn list_runs_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError>;
    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// Every stored run counted by trigger kind, status and duration bucket, in one grouped
    /// read of the `runs` table (runs are never deleted, so each count only grows): what
    /// `/metrics` shows of the runs of every process on the database.
    async fn run_tally(&self) -> Result<Vec<RunTally>, StoreError>;
    /// How many runs with exactly this trigger (`mcp:USER`: the drafts that user's agents
    /// submitted) started at or after `since`, by the database's clock.
    async fn count_runs_since(
        &self,
        trigger: &str,
        since: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
}

/// The notification outbox.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Up to `limit` undelivered notifications that are due, each held for `hold` (its next
    /// attempt moved that far ahead and its attempts counted) so that no other process sends
    /// it meanwhile. Rows older than `max_age` are given up (marked, never sent).
    async fn claim_notifications(
        &self,
        limit: usize,
        hold: Duration,
        max_age: Duration,
    ) -> Result<Vec<OutboxItem>, StoreError>;
    /// Renews the hold of claimed notifications for `hold` from now, each only while the
    /// claim that returned it still holds it (its hold has not expired and no other claim
    /// came since): the ids still held, which alone may be sent.
    async fn renew_notifications(
        &self,
        items: &[OutboxItem],
        hold: Duration,
    ) -> Result<Vec<i64>, StoreError>;
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
}

/// The push outbox: approved proposals to be created as drafts on the experimentation
/// platform, each at most once (the proposal is the row's key).
#[async_trait]
pub trait Pushes: Send + Sync {
    /// Queues a push of each of `ids` on `platform` (by hand: `hypod export --push`): a
    /// proposal never queued gets a row, a refused one is queued again (it was never created),
    /// a pending or pushed one is left as it is. The ids queued now.
    async fn enqueue_pushes(
        &self,
        ids: &[String],
        platform: &str,
    ) -> Result<Vec<String>, StoreError>;
    /// Up to `limit` pending pushes that are due, each held for `hold` (its next attempt
    /// moved that far ahead and its attempts counted) so that no other process posts it
    /// meanwhile.
    async fn claim_pushes(&self, limit: usize, hold: Duration)
        -> Result<Vec<PushItem>, StoreError>;
    /// Records how an attempt ended, only while the claim that returned `item` still holds it
    /// (no other claim counted an attempt since, the row is still pending): pushed or refused
    /// with an audit entry (`push.delivered`, `push.refused`, actor `actor`) in the same
    /// transaction; a retry moved `retry_in` ahead. `false` when the claim no longer held it.
    async fn finish_push(
        &self,
        item: &PushItem,
        outcome: &PushOutcome,
        actor: &str,
    ) -> Result<bool, StoreError>;
    /// The push of one proposal, if one was ever queued.
    async fn push_of(&self, proposal_id: &str) -> Result<Option<PushRecord>, StoreError>;
    /// How many pushes are in each state (states without any are left out), and the age in
    /// seconds of the oldest pending one by the database's clock (`None`: none is pending).
    async fn push_tally(&self) -> Result<(Vec<(PushState, u64)>, Option<f64>), StoreError>;
}

/// The proposal queue, read.
#[async_trait]
pub trait Proposals: Send + Sync {
    async fn list_proposals(&self, filter: &ProposalFilter) -> Result<Vec<Proposal>, StoreError>;
    async fn get_proposal(&self, id: &str) -> Result<Option<Proposal>, StoreError>;
    /// The stored proposals among `ids` (ids no proposal has are left out), by id.
    async fn get_proposals(&self, ids: &[String]) -> Result<Vec<Proposal>, StoreError>;
}

/// How many proposals the queue holds in each status (the web UI's status filter shows them).
#[async_trait]
pub trait ProposalCounts: Send + Sync {
    /// The number of stored proposals per status, in one grouped query; statuses without a
    /// proposal are left out.
    async fn count_proposals_by_status(&self) -> Result<Vec<(ProposalStatus, u64)>, StoreError>;
}

/// Reviews of proposals.
#[async_trait]
pub trait Reviews: Send + Sync {
    /// Records a review and applies its effect ([`crate::domain::apply_review`]) atomically,
    /// stamped with the database's clock (never before the proposal's creation): `review.at`
    /// is not used.
    async fn review(&self, review: &Review) -> Result<Proposal, StoreError> {
        self.review_pushing(review, None).await
    }
    /// [`Reviews::review`]; when the review makes the proposal `approved` and `push_on` names
    /// a platform, a push of it is queued in the same transaction ([`Pushes`]).
    async fn review_pushing(
        &self,
        review: &Review,
        push_on: Option<&str>,
    ) -> Result<Proposal, StoreError>;
    /// Logs a review refused before it reached the queue (an agent asked to approve or reject):
    /// a `review.refused` entry with the review's actor, role and `problem`; nothing else.
    async fn refuse_review(&self, review: &Review, problem: &str) -> Result<(), StoreError>;
    async fn proposal_reviews(&self, id: &str) -> Result<Vec<Review>, StoreError>;
    /// The approvals of these proposals as (proposal id, approver), oldest first: a listing's
    /// approval progress read for a whole page at once (one query per 500 ids), never one
    /// query per row.
    async fn approvals_of(&self, ids: &[String]) -> Result<Vec<(String, Approver)>, StoreError>;
    /// Rejections since `since`, each with its proposal (proposers learn from the reasons).
    async fn recent_rejections(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Proposal, Review)>, StoreError>;
}

/// The hash-chained audit log, read (every write appends to it in its own transaction).
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// The whole audit log, oldest first.
    async fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError>;
    /// Up to `limit` audit entries after sequence number `after`, oldest first.
    async fn audit_entries(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// The entries about one subject (a token's or a proposal's id), oldest first, through
    /// the subject index: the check of a token at use, of a draft at export and push.
    async fn audit_entries_about(&self, subject: &str) -> Result<Vec<AuditEntry>, StoreError>;
    /// The sealed head of the audit chain, if anything was ever logged.
    async fn audit_head(&self) -> Result<Option<SealedHead>, StoreError>;
    /// The log, its sealed head and what it is replayed against (every proposal's status and
    /// draft, every review, token and imported experiment), read in one snapshot.
    async fn audit_snapshot(&self) -> Result<AuditSnapshot, StoreError>;
}

/// API tokens.
#[async_trait]
pub trait Tokens: Send + Sync {
    /// Stores a new token (`hash`: the SHA-256 of its secret) with its audit entry.
    async fn create_token(&self, token: &TokenRecord, hash: &str) -> Result<(), StoreError>;
    /// Every token, revoked ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Revokes a token with its audit entry; `false` when no live token has that id.
    async fn revoke_token(&self, id: &str, by: &str) -> Result<bool, StoreError>;
    /// The live (not revoked) token whose secret hashes to `hash`.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
}

/// Scheduled slots: claims, leases on the database's clock, and fencing tokens.
#[async_trait]
pub trait Slots: Send + Sync {
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
    /// Records the missed scheduled slot `key` as skipped with `reason`, unless the slot
    /// exists (it ran, runs, or its holder died and it is to be taken over); `true` when
    /// recorded.
    async fn skip_slot(&self, key: &str, owner: &str, reason: &str) -> Result<bool, StoreError>;
    /// Scheduled slots (`schedule:…`) still running whose lease has expired, oldest first:
    /// the slots to take over.
    async fn expired_slots(&self) -> Result<Vec<String>, StoreError>;
    /// Ends as failed, with a reason naming the process that claimed it, every running slot
    /// not of the schedule (`hypod run`, the API, the demo) whose lease has expired: the
    /// process died, and such a run is never re-run by another. The slots ended.
    async fn end_abandoned_slots(&self) -> Result<Vec<SlotRecord>, StoreError>;
    /// Slots, newest claims first.
    async fn list_slots(&self, limit: usize) -> Result<Vec<SlotRecord>, StoreError>;
}
