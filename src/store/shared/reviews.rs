//! The writes of the review surface, for every backend, each in one write transaction with its
//! audit entry: a review (read, judged by [`apply_review`], applied only to the status it was
//! judged against), a token created or revoked. Their reads are the backend's ([`Dialect`]),
//! except the approvals of a listing's page, read at once in one statement for both.
//! An approval that makes a proposal `approved` queues its platform push in the same transaction;
//! that approval, and a rejection, queue their notification (the outbox) in it too.
//! A review and a revocation are stamped with the database's clock, never the caller's: a
//! review is never dated before the proposal it decides.

use super::{append_audit, audit_log, database_now, Arg, Conn, Dialect, Sql};
use crate::domain::{
    apply_review, Approver, AuditAction, Proposal, ProposalStatus, Review, ReviewAction,
    ReviewError, Role,
};
use crate::store::{Reviews, StoreError, TokenRecord, Tokens};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[async_trait]
impl<D: Dialect> Reviews for D {
    async fn review_pushing(
        &self,
        review: &Review,
        push_on: Option<&str>,
    ) -> Result<Proposal, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut proposal = match tx.proposal(&review.proposal_id).await? {
            Some(proposal) => proposal,
            None => return Err(ReviewError::NotFound(review.proposal_id.clone()).into()),
        };
        // An approval is of the draft the log vouches for, or of nothing.
        if review.action == ReviewAction::Approve {
            let key = self.audit_key();
            if let Some(problem) = audit_log::unvouched_draft(&mut tx, key, &proposal).await? {
                return Err(audit_log::refuse_approval(tx, key, review, problem).await);
            }
        }
        // Stamped now by the database, and never before the proposal was made (a proposal
        // written by a process whose clock ran ahead).
        let at = database_now::<D, _>(&mut tx)
            .await?
            .max(proposal.created_at);
        let review = &Review {
            at,
            ..review.clone()
        };
        let previous = tx.reviews(Some(&review.proposal_id)).await?;
        let status = apply_review(&proposal, &previous, review)?;
        tx.execute(
            Sql::new(
                "INSERT INTO reviews (proposal_id, actor, role, action, note, at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            ),
            &[
                Arg::Text(&review.proposal_id),
                Arg::Text(&review.actor),
                Arg::Text(review.role.as_str()),
                Arg::Text(review.action.as_str()),
                Arg::OptText(review.note.as_deref()),
                Arg::time(review.at),
            ],
        )
        .await?;
        // Guarded on the status read above (the write lock already excludes a concurrent
        // review): two concurrent reviews cannot both apply.
        let updated = tx
            .execute(
                Sql::new(
                    "UPDATE proposals SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4",
                ),
                &[
                    Arg::Text(status.as_str()),
                    Arg::time(review.at),
                    Arg::Text(&review.proposal_id),
                    Arg::Text(proposal.status.as_str()),
                ],
            )
            .await?;
        if updated != 1 {
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
        append_audit(
            &mut tx,
            self.audit_key(),
            &review.actor,
            AuditAction::Review(review.action),
            &review.proposal_id,
            &detail,
        )
        .await?;
        // The approval that makes it `approved` queues its push in the same transaction: an
        // approval is never recorded without its push, nor a push queued without the approval.
        if let Some(platform) = push_on {
            if status == ProposalStatus::Approved && proposal.status != ProposalStatus::Approved {
                super::pushes::enqueue::<D, _>(&mut tx, &review.proposal_id, platform).await?;
            }
        }
        // The approval that decides it, or the rejection, queues its notification in the same
        // transaction: announced once it is recorded, and only then.
        if status != proposal.status
            && matches!(status, ProposalStatus::Approved | ProposalStatus::Rejected)
        {
            super::runs::enqueue_review::<D, _>(&mut tx, review).await?;
        }
        tx.commit().await?;
        proposal.status = status;
        proposal.updated_at = review.at;
        Ok(proposal)
    }

    async fn refuse_review(&self, review: &Review, problem: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        audit_log::append_refusal(&mut tx, self.audit_key(), review, problem).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn proposal_reviews(&self, id: &str) -> Result<Vec<Review>, StoreError> {
        self.connection().await?.reviews(Some(id)).await
    }

    async fn approvals_of(&self, ids: &[String]) -> Result<Vec<(String, Approver)>, StoreError> {
        let mut approvals = Vec::new();
        if ids.is_empty() {
            return Ok(approvals);
        }
        let mut conn = self.connection().await?;
        for batch in ids.chunks(APPROVALS_BATCH) {
            let args: Vec<Arg<'_>> = batch.iter().map(|id| Arg::Text(id)).collect();
            let rows: Vec<(String, String, String)> = conn
                .fetch_all(
                    Sql::listing(
                        "SELECT proposal_id, actor, role FROM reviews \
                         WHERE action = 'approve' AND proposal_id IN ({list}) ORDER BY id",
                        batch.len(),
                    ),
                    &args,
                )
                .await?;
            for (id, actor, role) in rows {
                let role = Role::parse(&role).ok_or_else(|| {
                    crate::store::corrupt("review", format!("unknown role {role:?}"))
                })?;
                approvals.push((id, Approver { actor, role }));
            }
        }
        Ok(approvals)
    }

    async fn recent_rejections(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Proposal, Review)>, StoreError> {
        Dialect::recent_rejections(self, since).await
    }
}

/// The most proposal ids one query of [`Reviews::approvals_of`] names (a listing page holds at
/// most 201; far below either database's limit on arguments).
const APPROVALS_BATCH: usize = 500;

#[async_trait]
impl<D: Dialect> Tokens for D {
    async fn create_token(&self, token: &TokenRecord, hash: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        tx.execute(
            Sql::new(
                "INSERT INTO tokens (id, user_name, role, hash, created_at, created_by, kind) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            ),
            &[
                Arg::Text(&token.id),
                Arg::Text(&token.user),
                Arg::Text(token.role.as_str()),
                Arg::Text(hash),
                Arg::time(token.created_at),
                Arg::Text(&token.created_by),
                Arg::Text(token.kind.as_str()),
            ],
        )
        .await?;
        append_audit(
            &mut tx,
            self.audit_key(),
            &token.created_by,
            AuditAction::TokenCreate,
            &token.id,
            &crate::store::vouch::token_create_detail(&TokenRecord {
                hash: hash.to_string(),
                ..token.clone()
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Dialect::list_tokens(self).await
    }

    async fn revoke_token(&self, id: &str, by: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let now = database_now::<D, _>(&mut tx).await?;
        let revoked = tx
            .execute(
                Sql::new("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"),
                &[Arg::time(now), Arg::Text(id)],
            )
            .await?
            == 1;
        if revoked {
            append_audit(
                &mut tx,
                self.audit_key(),
                by,
                AuditAction::TokenRevoke,
                id,
                "{}",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Dialect::token_by_hash(self, hash).await
    }
}
