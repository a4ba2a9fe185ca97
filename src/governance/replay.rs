//! `policy replay`: re-evaluates stored proposals (their draft and enrichment) against the
//! policies and catalog on disk and reports what would change — rule by rule and in status —
//! so a governance lead sees a change's impact before it merges. Pure: the caller loads the
//! proposals (e.g. `--since 30d`) and prints the result.
//!
//! Validation verdicts are carried over as they were (validation is not re-run); consent and
//! policy verdicts are recomputed. Proposals are replayed run by run in creation order, so the
//! per-run counts the governance-gap rules read are rebuilt under the new rules.

use super::assess::{govern_and_decide, Governed};
use super::context::{QueueCounts, RunInputs};
use super::policy::{outcome_word, PolicyError, PolicySet};
use super::{decide, ApprovalSettings, RuleSource, Verdict};
use crate::domain::{Proposal, ProposalStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

/// One rule whose outcome differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleChange {
    pub rule_id: String,
    /// `pass`, `fail` or `absent` (the rule did not exist then / does not exist now).
    pub old_outcome: String,
    pub new_outcome: String,
    /// The effect under the new rules (or the old one, for a removed rule).
    pub effect: String,
    /// The new message when the rule now fails, otherwise the old one.
    pub message: String,
}

/// A proposal whose verdicts or status would change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictChange {
    pub proposal_id: String,
    pub title: String,
    /// The status governance gave it (`blocked` or `pending_review`), from its stored verdicts.
    pub old_status: ProposalStatus,
    pub new_status: ProposalStatus,
    /// Its status now in the queue (a person may have decided since).
    pub current_status: ProposalStatus,
    pub old_approvals_required: u32,
    pub new_approvals_required: u32,
    pub changes: Vec<RuleChange>,
    pub old_policy_digest: String,
}

/// The whole replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    pub policy_digest: String,
    pub replayed: usize,
    pub changed: Vec<VerdictChange>,
}

fn outcome_map(verdicts: &[Verdict]) -> HashMap<&str, &Verdict> {
    verdicts
        .iter()
        .filter(|v| v.source != RuleSource::Validation)
        .map(|v| (v.rule_id.as_str(), v))
        .collect()
}

/// Re-evaluates `proposals` and reports those whose verdicts or status change. `base_queue`
/// are the queue counts to start every run from (open counts are not reconstructed).
pub fn replay(
    proposals: &[Proposal],
    policies: &PolicySet,
    run: &RunInputs,
    base_queue: &QueueCounts,
    settings: &ApprovalSettings,
) -> Result<ReplayReport, PolicyError> {
    let mut ordered: Vec<&Proposal> = proposals.iter().collect();
    ordered.sort_by(|a, b| {
        (a.run_id.as_str(), a.created_at, a.id.as_str()).cmp(&(
            b.run_id.as_str(),
            b.created_at,
            b.id.as_str(),
        ))
    });
    let mut queues: HashMap<&str, QueueCounts> = HashMap::new();
    let mut changed = Vec::new();
    for proposal in &ordered {
        let queue = queues
            .entry(proposal.run_id.as_str())
            .or_insert_with(|| base_queue.clone());
        let now: DateTime<Utc> = proposal.created_at;
        // Validation is carried over as it was; consent and policies are assessed anew.
        let validation: Vec<Verdict> = proposal
            .verdicts
            .iter()
            .filter(|v| v.source == RuleSource::Validation)
            .cloned()
            .collect();
        let Governed {
            verdicts: new_verdicts,
            decision: new_decision,
        } = govern_and_decide(
            policies,
            run,
            settings,
            &proposal.draft,
            &proposal.enrichment,
            validation,
            queue,
            now,
        )?;
        let old_decision = decide(&proposal.verdicts, settings);

        let old = outcome_map(&proposal.verdicts);
        let new = outcome_map(&new_verdicts);
        let ids: BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
        let mut changes = Vec::new();
        for id in ids {
            let (before, after) = (old.get(id).copied(), new.get(id).copied());
            let (old_outcome, new_outcome) = (outcome_word(before), outcome_word(after));
            let effect_changed =
                matches!((before, after), (Some(b), Some(a)) if b.effect != a.effect && a.failed());
            if old_outcome == new_outcome && !effect_changed {
                continue;
            }
            let shown = match (before, after) {
                (_, Some(a)) if a.failed() => a,
                (Some(b), _) => b,
                (None, Some(a)) => a,
                (None, None) => continue,
            };
            changes.push(RuleChange {
                rule_id: id.to_string(),
                old_outcome: old_outcome.into(),
                new_outcome: new_outcome.into(),
                effect: after.unwrap_or(shown).effect.as_str().into(),
                message: shown.message.clone(),
            });
        }
        if !changes.is_empty() || old_decision != new_decision {
            changed.push(VerdictChange {
                proposal_id: proposal.id.clone(),
                title: proposal.draft.title.clone(),
                old_status: old_decision.status,
                new_status: new_decision.status,
                current_status: proposal.status,
                old_approvals_required: old_decision.approvals_required,
                new_approvals_required: new_decision.approvals_required,
                changes,
                old_policy_digest: proposal.provenance.policy_digest.clone(),
            });
        }
    }
    Ok(ReplayReport {
        policy_digest: policies.digest().to_string(),
        replayed: ordered.len(),
        changed,
    })
}

/// Parses a look-back window such as `30d`, `12h` or `2w` (for `policy replay --since`).
pub fn parse_window(text: &str) -> Result<chrono::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let amount: i64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a window such as 30d, 12h or 2w"))?;
    match unit {
        "h" => Ok(chrono::Duration::hours(amount)),
        "d" | "" => Ok(chrono::Duration::days(amount)),
        "w" => Ok(chrono::Duration::weeks(amount)),
        _ => Err(format!(
            "{text:?}: unknown unit {unit:?}; use h (hours), d (days) or w (weeks)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_window;

    #[test]
    fn windows_parse_in_hours_days_and_weeks() {
        assert_eq!(parse_window("30d"), Ok(chrono::Duration::days(30)));
        assert_eq!(parse_window("12h"), Ok(chrono::Duration::hours(12)));
        assert_eq!(parse_window("2w"), Ok(chrono::Duration::weeks(2)));
        assert_eq!(parse_window("7"), Ok(chrono::Duration::days(7)));
        assert!(parse_window("30x").is_err());
        assert!(parse_window("d").is_err());
    }
}
