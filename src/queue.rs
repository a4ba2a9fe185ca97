//! The queue's model: proposals with their enrichment, verdicts and provenance, the reviews
//! people make of them, and the record of each run. State changes are decided here (which
//! transitions are allowed, how many approvals a proposal needs); the store only persists them.

use crate::governance::Verdict;
use crate::proposer::{LlmUsage, ProposalDraft, RejectedDraft};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    PendingReview,
    Approved,
    Rejected,
    Expired,
    Blocked,
    Superseded,
}

impl ProposalStatus {
    pub const ALL: [ProposalStatus; 6] = [
        ProposalStatus::PendingReview,
        ProposalStatus::Approved,
        ProposalStatus::Rejected,
        ProposalStatus::Expired,
        ProposalStatus::Blocked,
        ProposalStatus::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProposalStatus::PendingReview => "pending_review",
            ProposalStatus::Approved => "approved",
            ProposalStatus::Rejected => "rejected",
            ProposalStatus::Expired => "expired",
            ProposalStatus::Blocked => "blocked",
            ProposalStatus::Superseded => "superseded",
        }
    }

    pub fn parse(text: &str) -> Option<ProposalStatus> {
        ProposalStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Proposals that still occupy the queue: new drafts must not duplicate them.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            ProposalStatus::PendingReview | ProposalStatus::Approved
        )
    }
}

impl fmt::Display for ProposalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a near-duplicate was found of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateRef {
    /// `running_experiment`, `experiment`, `open_proposal` or `rejected_proposal`.
    pub kind: String,
    pub id: String,
    /// Similarity in 0..=1 (1 = the same lever for the same segment at the same moment).
    pub similarity: f64,
}

/// What hypod computes for a draft (DESIGN.md §5, "hypod adds").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Enrichment {
    /// Control conversion rate the sample size is computed from.
    pub baseline_rate: Option<f64>,
    /// Where the baseline comes from (which experiments).
    pub baseline_source: String,
    pub required_visitors_per_arm: Option<u64>,
    pub segment_daily_visitors: Option<u64>,
    /// Share of the segment's traffic that consented to every purpose the signals need.
    pub consented_share: Option<f64>,
    pub expected_duration_days: Option<f64>,
    /// Value of one conversion used for the expected value.
    pub value_per_conversion: f64,
    /// Evidence strength in 0..=1 (how well the cited experiments support the expected lift).
    pub evidence_strength: f64,
    /// Expected extra revenue per day if the hypothesis holds.
    pub expected_value_per_day: f64,
    /// Ranking score (higher first).
    pub priority: f64,
    pub duplicate_of: Option<DuplicateRef>,
    /// The builtin proposer's strategy (transfer, retest, cover, validate).
    pub strategy: Option<String>,
    /// Why a statistic is missing, when one is.
    pub notes: Vec<String>,
}

/// Where a proposal came from, for audit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub proposer: String,
    pub model: Option<String>,
    pub prompt_digest: Option<String>,
    pub policy_digest: String,
    pub input_digest: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: String,
    pub run_id: String,
    pub status: ProposalStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub draft: ProposalDraft,
    pub enrichment: Enrichment,
    pub verdicts: Vec<Verdict>,
    pub provenance: Provenance,
    pub approvals_required: u32,
}

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
            let escalated = crate::governance::escalates(&proposal.verdicts);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Proposals were drafted, governed and queued.
    Succeeded,
    /// The program is not ready for agentic proposals: a report, no proposals.
    NotReady,
    /// Nothing was queued; `error` says why.
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::NotReady => "not_ready",
            RunStatus::Failed => "failed",
        }
    }
}

/// Counts a run reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub experiments: usize,
    pub drafts: usize,
    pub queued: usize,
    pub blocked: usize,
    pub escalated: usize,
    /// Drafts not queued because an open proposal already covers them.
    pub duplicates: usize,
    /// Drafts the proposer dropped as invalid.
    pub dropped: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub trigger: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub proposer: String,
    /// Why the run used the builtin proposer instead of the configured one, if it did.
    pub fell_back: Option<String>,
    pub error: Option<String>,
    pub summary: RunSummary,
    pub usage: Option<LlmUsage>,
    pub policy_digest: String,
    pub input_digest: String,
    pub rejected_drafts: Vec<RejectedDraft>,
    pub notes: Vec<String>,
}

/// Filters for listing the queue.
#[derive(Debug, Clone, Default)]
pub struct ProposalFilter {
    pub status: Option<ProposalStatus>,
    pub moment: Option<crate::history::Moment>,
    pub run_id: Option<String>,
    pub limit: Option<usize>,
}
