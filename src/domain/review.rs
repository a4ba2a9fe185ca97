//! Reviews: one person's decision on one proposal, and the state rules that decide what it does
//! (who may review, nobody approves twice, escalated proposals need governance, a rejection needs
//! a reason). The store only persists what these rules allow.

use super::proposal::{Proposal, ProposalStatus};
use super::verdict::escalates;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewAction {
    Approve,
    Reject,
}

impl ReviewAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewAction::Approve => "approve",
            ReviewAction::Reject => "reject",
        }
    }
}

/// One person's decision on one proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub proposal_id: String,
    pub actor: String,
    /// The actor's role (`reviewer`, `governance`, `admin`; `cli` from the shell).
    pub role: String,
    pub action: ReviewAction,
    pub note: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReviewError {
    #[error("proposal {0} does not exist")]
    NotFound(String),
    #[error("proposal {id} is {status}: only pending_review proposals can be reviewed")]
    NotReviewable { id: String, status: ProposalStatus },
    #[error("{actor} has already approved proposal {id}: nobody approves twice")]
    AlreadyApproved { id: String, actor: String },
    #[error("a rejection needs a reason (--reason)")]
    ReasonRequired,
    #[error("the reviewer name must not be empty")]
    ActorRequired,
}

/// Decides what a review does to a proposal; returns the new status.
///
/// `previous` are the reviews already recorded for the proposal.
pub fn apply_review(
    proposal: &Proposal,
    previous: &[Review],
    review: &Review,
) -> Result<ProposalStatus, ReviewError> {
    if review.actor.trim().is_empty() {
        return Err(ReviewError::ActorRequired);
    }
    if proposal.status != ProposalStatus::PendingReview {
        return Err(ReviewError::NotReviewable {
            id: proposal.id.clone(),
            status: proposal.status,
        });
    }
    match review.action {
        ReviewAction::Reject => {
            if review
                .note
                .as_deref()
                .map(str::trim)
                .unwrap_or("")
                .is_empty()
            {
                return Err(ReviewError::ReasonRequired);
            }
            Ok(ProposalStatus::Rejected)
        }
        ReviewAction::Approve => {
            let approvals: Vec<&Review> = previous
                .iter()
                .filter(|r| r.action == ReviewAction::Approve)
                .collect();
            if approvals.iter().any(|r| r.actor == review.actor) {
                return Err(ReviewError::AlreadyApproved {
                    id: proposal.id.clone(),
                    actor: review.actor.clone(),
                });
            }
            let count = approvals.len() as u32 + 1;
            let escalated = escalates(&proposal.verdicts);
            let governance_approved = !escalated
                || approvals
                    .iter()
                    .map(|r| r.role.as_str())
                    .chain(std::iter::once(review.role.as_str()))
                    .any(|role| role == "governance" || role == "admin");
            if count >= proposal.approvals_required && governance_approved {
                Ok(ProposalStatus::Approved)
            } else {
                Ok(ProposalStatus::PendingReview)
            }
        }
    }
}
