//! Verdicts: one rule's outcome for one proposal, and how a set of verdicts decides the
//! proposal's status and the approvals it needs. Governance produces verdicts; the queue, the
//! review rules and the replay read them.

use super::proposal::ProposalStatus;
use serde::{Deserialize, Serialize};

/// What a failed rule does to a proposal.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Blocks the proposal (kept with status `blocked`, not reviewable).
    Deny,
    /// Raises the approvals the proposal needs (one from `governance`).
    Escalate,
    /// Shown to reviewers; changes nothing else.
    Warn,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Deny => "deny",
            Effect::Escalate => "escalate",
            Effect::Warn => "warn",
        }
    }
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    /// Reference and range checks on the draft (unknown experiment, segment, …).
    Validation,
    /// The always-on consent rules.
    Consent,
    /// A rule from `policies/*.toml`.
    Policy,
}

/// One rule's outcome for one proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub rule_id: String,
    pub source: RuleSource,
    pub effect: Effect,
    /// True when the rule passed (its expression held, or its guard did not apply).
    pub passed: bool,
    pub message: String,
}

impl Verdict {
    pub fn failed(&self) -> bool {
        !self.passed
    }
}

/// The combined outcome of a set of verdicts.
pub fn denies(verdicts: &[Verdict]) -> bool {
    verdicts
        .iter()
        .any(|v| v.failed() && v.effect == Effect::Deny)
}

pub fn escalates(verdicts: &[Verdict]) -> bool {
    verdicts
        .iter()
        .any(|v| v.failed() && v.effect == Effect::Escalate)
}

/// How many approvals a queued proposal needs (`[governance]` in hypod.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalSettings {
    pub approvals_required: u32,
    pub escalated_approvals_required: u32,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            approvals_required: 1,
            escalated_approvals_required: 2,
        }
    }
}

/// What governance decides for one proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceDecision {
    /// `blocked` when a deny rule failed, otherwise `pending_review`.
    pub status: ProposalStatus,
    pub approvals_required: u32,
    pub escalated: bool,
}

/// A deny makes the proposal `blocked`; an escalate raises the approvals it needs.
pub fn decide(verdicts: &[Verdict], settings: &ApprovalSettings) -> GovernanceDecision {
    let escalated = escalates(verdicts);
    let approvals_required = if escalated {
        settings
            .escalated_approvals_required
            .max(settings.approvals_required)
    } else {
        settings.approvals_required
    };
    GovernanceDecision {
        status: if denies(verdicts) {
            ProposalStatus::Blocked
        } else {
            ProposalStatus::PendingReview
        },
        approvals_required,
        escalated,
    }
}
