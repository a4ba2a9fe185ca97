//! Governance: every candidate proposal, from any proposer, is checked against the catalog's
//! consent rules and the policy set before it reaches a person. This module owns the verdict
//! model; `catalog` owns the catalog file.

pub mod catalog;

use serde::{Deserialize, Serialize};

/// What a failed rule does to a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
