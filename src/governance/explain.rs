//! `policy explain ID`: why a stored proposal got its verdicts — each rule with its source,
//! effect, outcome and message, and, for policy rules still in the policy set, the rule's
//! description, file, guard and expression. Says whether the policy set changed since.

use super::policy::{outcome_word, PolicySet};
use super::{decide, ApprovalSettings, RuleSource};
use crate::domain::{Proposal, ProposalStatus};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedVerdict {
    pub rule_id: String,
    /// `validation`, `consent` or `policy`.
    pub source: RuleSource,
    pub effect: String,
    /// `pass` or `fail`.
    pub outcome: String,
    pub message: String,
    /// From the current policy set, when the rule is still there.
    pub description: Option<String>,
    pub file: Option<String>,
    pub when: Option<String>,
    pub expr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub proposal_id: String,
    pub title: String,
    pub status: ProposalStatus,
    /// What governance decided (`blocked` or `pending_review`) and the approvals it set.
    pub governance_status: ProposalStatus,
    pub approvals_required: u32,
    pub policy_digest: String,
    pub current_policy_digest: String,
    /// False when the policies or catalog changed since: `policy replay` shows the difference.
    pub same_policy_set: bool,
    /// Failed rules first (deny, escalate, warn), then the passed ones.
    pub verdicts: Vec<ExplainedVerdict>,
}

pub fn explain(
    proposal: &Proposal,
    policies: &PolicySet,
    settings: &ApprovalSettings,
) -> Explanation {
    let mut verdicts: Vec<ExplainedVerdict> = proposal
        .verdicts
        .iter()
        .map(|verdict| {
            let rule = (verdict.source == RuleSource::Policy)
                .then(|| policies.rule(&verdict.rule_id))
                .flatten();
            ExplainedVerdict {
                rule_id: verdict.rule_id.clone(),
                source: verdict.source,
                effect: verdict.effect.as_str().into(),
                outcome: outcome_word(Some(verdict)).into(),
                message: verdict.message.clone(),
                description: rule.map(|r| r.description.clone()),
                file: rule.map(|r| r.file.clone()),
                when: rule.and_then(|r| r.when.as_ref().map(|w| w.source.clone())),
                expr: rule.map(|r| r.expr.source.clone()),
            }
        })
        .collect();
    let order = |v: &ExplainedVerdict| {
        let effect_rank = match v.effect.as_str() {
            "deny" => 0,
            "escalate" => 1,
            _ => 2,
        };
        (v.outcome != "fail", effect_rank)
    };
    verdicts.sort_by_key(order);
    let decision = decide(&proposal.verdicts, settings);
    Explanation {
        proposal_id: proposal.id.clone(),
        title: proposal.draft.title.clone(),
        status: proposal.status,
        governance_status: decision.status,
        approvals_required: proposal.approvals_required,
        policy_digest: proposal.provenance.policy_digest.clone(),
        current_policy_digest: policies.digest().to_string(),
        same_policy_set: proposal.provenance.policy_digest == policies.digest(),
        verdicts,
    }
}
