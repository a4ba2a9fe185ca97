//! The audit log, read, for every backend: entries (all, a page, or those about one subject
//! through the subject index), the sealed head, and the snapshot a verification replays (the
//! log, its head, every proposal's status and draft, every review, token and imported record,
//! all of one moment). Appending is [`super::append_audit`], inside each write; the check of a
//! draft at approval ([`unvouched_draft`], [`refuse_approval`]) runs inside the review's.

use super::{append_audit, Arg, Conn, Dialect, Sql};
use crate::domain::{AuditAction, AuditHead, Proposal, ProposalStatus, Review, Role};
use crate::history::Experiment;
use crate::store::vouch::{self, DraftCheck, StoredToken};
use crate::store::{
    corrupt, AuditEntry, AuditKey, AuditLog, AuditSnapshot, ProposalBody, SealedHead, StoreError,
    StoredState,
};
use async_trait::async_trait;
use std::collections::HashMap;

const SEALED_HEAD: Sql = Sql::new("SELECT seq, hash, mac FROM audit_head WHERE id = 1");

/// Experiments read per statement when a snapshot digests them (never all bodies at once).
const EXPERIMENT_PAGE: usize = 2_000;

#[async_trait]
impl<D: Dialect> AuditLog for D {
    async fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_entries(0, usize::MAX).await
    }

    async fn audit_entries(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.connection().await?.audit_entries(after, limit).await
    }

    async fn audit_entries_about(&self, subject: &str) -> Result<Vec<AuditEntry>, StoreError> {
        entries_about(&mut self.connection().await?, subject).await
    }

    async fn audit_head(&self) -> Result<Option<SealedHead>, StoreError> {
        sealed_head(&mut self.connection().await?).await
    }

    async fn audit_snapshot(&self) -> Result<AuditSnapshot, StoreError> {
        // One snapshot: the log and what it must explain, from the same moment.
        let mut tx = self.begin_snapshot().await?;
        let rows: Vec<(String, String, String)> = tx
            .fetch_all(
                Sql::new("SELECT id, status, CAST(body AS TEXT) FROM proposals ORDER BY id"),
                &[],
            )
            .await?;
        let mut statuses = Vec::with_capacity(rows.len());
        let mut drafts = HashMap::with_capacity(rows.len());
        for (id, status, body) in rows {
            let what = format!("proposal {id}");
            let status = ProposalStatus::parse(&status)
                .ok_or_else(|| corrupt(&what, format!("unknown status {status:?}")))?;
            // A body edited past reading is a draft the log does not vouch for, reported as such.
            let draft = serde_json::from_str::<ProposalBody>(&body).map_or_else(
                |e| format!("unreadable: {e}"),
                |b| vouch::draft_sha256(&b.draft),
            );
            drafts.insert(id.clone(), draft);
            statuses.push((id, status));
        }
        let reviews = tx.reviews(None).await?;
        let tokens = stored_tokens(&mut tx).await?;
        let experiments = experiment_digests(&mut tx).await?;
        let entries = tx.audit_entries(0, usize::MAX).await?;
        let sealed = sealed_head(&mut tx).await?;
        tx.commit().await?;
        Ok(AuditSnapshot {
            entries,
            sealed,
            state: StoredState {
                statuses,
                drafts,
                reviews,
                tokens,
                experiments,
            },
        })
    }
}

/// The sealed head of the audit chain, from its one row.
pub(super) async fn sealed_head<C: Conn>(conn: &mut C) -> Result<Option<SealedHead>, StoreError> {
    let row: Option<(i64, String, String)> = conn.fetch_optional(SEALED_HEAD, &[]).await?;
    Ok(row.map(|(seq, hash, mac)| SealedHead {
        head: AuditHead { seq, hash },
        mac,
    }))
}

/// The entries whose subject is `subject`, oldest first, found through the subject index (a
/// token's or a proposal's few entries, without reading the log).
pub(super) async fn entries_about<C: Conn>(
    conn: &mut C,
    subject: &str,
) -> Result<Vec<AuditEntry>, StoreError> {
    let seqs: Vec<(i64,)> = conn
        .fetch_all(
            Sql::new("SELECT seq FROM audit_log WHERE subject = $1 ORDER BY seq"),
            &[Arg::Text(subject)],
        )
        .await?;
    let mut entries = Vec::with_capacity(seqs.len());
    for (seq,) in seqs {
        entries.extend(conn.audit_entries(seq - 1, 1).await?);
    }
    Ok(entries)
}

/// Every token row, as the replay compares it.
async fn stored_tokens<C: Conn>(conn: &mut C) -> Result<Vec<StoredToken>, StoreError> {
    let rows: Vec<(String, String, String, String, String, bool, String)> = conn
        .fetch_all(
            Sql::new(
                "SELECT id, user_name, role, hash, created_by, revoked_at IS NOT NULL, kind \
                 FROM tokens ORDER BY id",
            ),
            &[],
        )
        .await?;
    rows.into_iter()
        .map(|(id, user, role, hash, created_by, revoked, kind)| {
            let role = Role::parse(&role)
                .ok_or_else(|| corrupt(&format!("token {id}"), format!("unknown role {role:?}")))?;
            let kind = crate::domain::TokenKind::parse(&kind)
                .ok_or_else(|| corrupt(&format!("token {id}"), format!("unknown kind {kind:?}")))?;
            Ok(StoredToken {
                id,
                user,
                role,
                hash,
                created_by,
                revoked,
                kind,
            })
        })
        .collect()
}

/// Every stored experiment's [`vouch::record_digest`], by id, read a page at a time.
async fn experiment_digests<C: Conn>(conn: &mut C) -> Result<Vec<(String, String)>, StoreError> {
    let mut digests = Vec::new();
    let mut after = String::new();
    loop {
        let rows: Vec<(String, String)> = conn
            .fetch_all(
                Sql::new(
                    "SELECT id, CAST(body AS TEXT) FROM experiments WHERE id > $1 \
                     ORDER BY id LIMIT $2",
                ),
                &[Arg::Text(&after), Arg::size(EXPERIMENT_PAGE)],
            )
            .await?;
        let Some((last, _)) = rows.last() else { break };
        after = last.clone();
        let full = rows.len() == EXPERIMENT_PAGE;
        for (id, body) in rows {
            // A record edited past reading is reported as edited, not a failed verification.
            let digest = serde_json::from_str::<Experiment>(&body)
                .map_or_else(|e| format!("unreadable: {e}"), |e| vouch::record_digest(&e));
            digests.push((id, digest));
        }
        if !full {
            break;
        }
    }
    Ok(digests)
}

/// Why the log does not vouch for `proposal`'s stored draft, if it does not (inside the
/// review's write transaction). A proposal logged before drafts were hashed is let through.
pub(super) async fn unvouched_draft<C: Conn>(
    tx: &mut C,
    key: &AuditKey,
    proposal: &Proposal,
) -> Result<Option<String>, StoreError> {
    let entries = entries_about(tx, &proposal.id).await?;
    Ok(
        match vouch::check_draft(key, &proposal.id, &proposal.draft, &entries) {
            DraftCheck::Vouched | DraftCheck::Unhashed => None,
            DraftCheck::Refused(problem) => Some(problem),
        },
    )
}

/// Appends the `review.refused` entry of a review that was refused: who, in which role, why.
pub(super) async fn append_refusal<C: Conn>(
    tx: &mut C,
    key: &AuditKey,
    review: &Review,
    problem: &str,
) -> Result<(), StoreError> {
    let detail = serde_json::json!({
        "action": review.action.as_str(),
        "role": review.role,
        "problem": problem,
    })
    .to_string();
    append_audit(
        tx,
        key,
        &review.actor,
        AuditAction::ReviewRefused,
        &review.proposal_id,
        &detail,
    )
    .await?;
    Ok(())
}

/// Ends a review transaction whose approval was refused: only the refusal is logged (who,
/// in which role, why), and the error says so.
pub(super) async fn refuse_approval<C: Conn>(
    mut tx: C,
    key: &AuditKey,
    review: &Review,
    problem: String,
) -> StoreError {
    let logged = match append_refusal(&mut tx, key, review, &problem).await {
        Ok(()) => tx.commit().await,
        Err(e) => Err(e),
    };
    match logged {
        Ok(()) => StoreError::DraftNotVouched {
            proposal_id: review.proposal_id.clone(),
            problem,
        },
        Err(e) => e,
    }
}
