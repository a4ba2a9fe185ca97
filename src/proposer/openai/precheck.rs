//! Denials foreseen before the run's governance sees a draft, so that the model can fix them in
//! a repair instead of having the draft blocked: the always-on consent rules
//! (`governance::consent`, called as they are) and near-duplicates of running experiments, open
//! proposals and recent rejections (`validate::nearest_duplicate`). Advice only: a draft that
//! still fails them after the repairs goes on to the run, where governance decides and records
//! the verdicts. Policies written in CEL are not foreseen here (they need the enrichment).

use crate::domain::Proposal;
use crate::governance::consent::consent_verdicts;
use crate::governance::Effect;
use crate::proposer::{ProposalContext, ProposalDraft};
use crate::validate::{nearest_duplicate, Surroundings};

/// What a repair message says about a draft governance would deny; empty when none is foreseen.
pub fn foreseeable_denials(
    draft: &ProposalDraft,
    ctx: &ProposalContext<'_>,
    rejected: &[Proposal],
) -> Vec<String> {
    let mut reasons: Vec<String> = consent_verdicts(draft, ctx.catalog)
        .into_iter()
        .filter(|v| v.failed() && v.effect == Effect::Deny)
        .map(|v| format!("would be blocked by {}: {}", v.rule_id, v.message))
        .collect();
    let around = Surroundings {
        experiments: ctx.experiments,
        analysis: ctx.analysis,
        catalog: ctx.catalog,
        open_proposals: ctx.open_proposals,
        this_run: &[],
        rejected_proposals: rejected,
        alpha: 0.05,
        power: 0.8,
        min_days: crate::validate::DEFAULT_MIN_DAYS,
    };
    if let Some(duplicate) = nearest_duplicate(draft, &around) {
        let what = duplicate.kind.describe();
        reasons.push(format!(
            "would be blocked as a duplicate of {what} {} (similarity {}): choose another lever, segment or moment",
            duplicate.id, duplicate.similarity
        ));
    }
    reasons
}
