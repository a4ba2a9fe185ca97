//! The decision a reviewer is asked to take on one proposal, read in one look: what stands in
//! the way (the rules that did not pass), the approval progress in words, and what happens
//! after approval (export or the GrowthBook push, and the expiry date before it). The proposal
//! page and `queue show` both open with it; it is computed here once, from the proposal, its
//! reviews and the configuration.

use crate::config::Config;
use crate::domain::{ApprovalProgress, Effect, Proposal, ProposalStatus, Review};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// A rule that did not pass.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Unmet {
    pub rule_id: String,
    /// `escalate` (it needs governance) or `deny` (nobody may approve it).
    pub effect: Effect,
    pub message: String,
}

/// What a reviewer decides on, and what follows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Decision {
    /// The rules that did not pass; the passing ones are left to the verdict list.
    pub unmet: Vec<Unmet>,
    pub approvals: ApprovalProgress,
    /// The approval progress in words: "1 of 2 approvals, waiting for governance".
    pub progress: String,
    /// Who approved, in words ("approved by rob (reviewer)"), once someone has.
    pub approved_by: Option<String>,
    /// What happens once it is approved (or, when it is, what happens now).
    pub after_approval: String,
    /// When it expires unless decided (`proposer.expire_pending_after_days` after it was
    /// proposed); only while pending review and expiry is on.
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl Decision {
    pub fn of(proposal: &Proposal, reviews: &[Review], config: &Config) -> Decision {
        let approvals = ApprovalProgress::of(proposal, reviews);
        let unmet = proposal
            .verdicts
            .iter()
            .filter(|v| !v.passed)
            .map(|v| Unmet {
                rule_id: v.rule_id.clone(),
                effect: v.effect,
                message: v.message.clone(),
            })
            .collect();
        let push = config
            .export
            .growthbook
            .as_ref()
            .is_some_and(|g| g.push_on_approval);
        let approved = proposal.status == ProposalStatus::Approved;
        let after_approval = match (approved, push) {
            (false, true) => "After approval hypod pushes it to GrowthBook as a draft experiment \
                (push_on_approval); the team builds and starts the test there."
                .to_string(),
            (false, false) => "After approval it is ready for `hypod export`, which hands it \
                to the experimentation platform; the team builds and starts the test there."
                .to_string(),
            (true, true) => "Approved: hypod pushes it to GrowthBook as a draft experiment \
                (push_on_approval); the team builds and starts the test there."
                .to_string(),
            (true, false) => "Approved: `hypod export` now hands it to the experimentation \
                platform; the team builds and starts the test there."
                .to_string(),
        };
        let days = config.proposer.expire_pending_after_days;
        let expires_at = (proposal.status == ProposalStatus::PendingReview && days > 0)
            .then(|| proposal.created_at + Duration::days(i64::from(days)));
        Decision {
            unmet,
            progress: approvals.describe(),
            approved_by: approvals.approved_by(),
            approvals,
            after_approval,
            expires_at,
        }
    }
}
