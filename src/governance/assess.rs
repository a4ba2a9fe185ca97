//! The one assessment path: validate → govern → decide. A run, `policy eval`, `policy replay`,
//! the policy test cases and the benchmark all assess drafts through [`govern_and_decide`] (or
//! the [`Assessor`] that wraps it with validation), so a verdict means the same wherever it is
//! computed. A proposal that is not blocked is counted in the queue before the next one is
//! assessed, so the governance-gap rules see what the same run has already queued.

use super::context::{PolicyContext, QueueCounts, RunInputs};
use super::policy::{PolicyError, PolicySet};
use super::{evaluate_all, Governance};
use crate::analysis::ProgramHealth;
use crate::domain::{
    decide, ApprovalSettings, Enrichment, Experiment, GovernanceDecision, ProposalDraft,
    ProposalStatus, Verdict,
};
use crate::validate::{self, References, Surroundings};
use chrono::{DateTime, Utc};

/// One assessed proposal: its verdicts (validation first, then consent, then policies) and what
/// they decide.
#[derive(Debug, Clone, PartialEq)]
pub struct Governed {
    pub verdicts: Vec<Verdict>,
    pub decision: GovernanceDecision,
}

/// Govern → decide for one proposal whose validation verdicts are already known (computed now,
/// or carried over by a replay). Counts the proposal in `queue` unless it is blocked. A rule that
/// cannot be evaluated is an error: nothing should be queued from policies that do not evaluate.
#[allow(clippy::too_many_arguments)]
pub fn govern_and_decide(
    policies: &PolicySet,
    run: &RunInputs,
    settings: &ApprovalSettings,
    draft: &ProposalDraft,
    enrichment: &Enrichment,
    validation: Vec<Verdict>,
    queue: &mut QueueCounts,
    now: DateTime<Utc>,
) -> Result<Governed, PolicyError> {
    let context = PolicyContext::for_run(run, draft, enrichment, queue, now);
    let mut verdicts = validation;
    verdicts.extend(evaluate_all(policies, &run.catalog, &context)?);
    let decision = decide(&verdicts, settings);
    if decision.status != ProposalStatus::Blocked {
        queue.record_queued(draft);
    }
    Ok(Governed { verdicts, decision })
}

/// [`govern_and_decide`] for a batch of candidates in order (the benchmark's and the tests' way
/// to govern many drafts). Any rule error stops the whole batch.
pub fn govern_batch<'a>(
    policies: &PolicySet,
    run: &RunInputs,
    candidates: impl IntoIterator<Item = (&'a ProposalDraft, &'a Enrichment)>,
    queue: &mut QueueCounts,
    settings: &ApprovalSettings,
    now: DateTime<Utc>,
) -> Result<Vec<Governed>, PolicyError> {
    candidates
        .into_iter()
        .map(|(draft, enrichment)| {
            govern_and_decide(
                policies,
                run,
                settings,
                draft,
                enrichment,
                Vec::new(),
                queue,
                now,
            )
        })
        .collect()
}

/// Validate → govern → decide for the drafts of one run (or one dry run), with the catalog,
/// program and history converted once.
pub struct Assessor<'a> {
    governance: &'a Governance,
    run: RunInputs,
    references: References<'a>,
    /// Open counts per moment and segment, including what this assessor has let through.
    pub queue: QueueCounts,
    now: DateTime<Utc>,
}

impl<'a> Assessor<'a> {
    pub fn new(
        governance: &'a Governance,
        program: &ProgramHealth,
        experiments: &'a [Experiment],
        queue: QueueCounts,
        now: DateTime<Utc>,
    ) -> Assessor<'a> {
        Assessor {
            governance,
            run: governance.run_inputs(program),
            references: References::new(experiments, &governance.catalog),
            queue,
            now,
        }
    }

    /// What validation computes for a draft (expected lift from the lever knowledge base,
    /// baseline, sample size, duration, priority, near-duplicates) among `around`. The draft
    /// then states the knowledge base's expected lift; the proposer's own number, when it
    /// differed, is kept in the enrichment as `claimed_lift`.
    pub fn enrich(
        &self,
        draft: &mut ProposalDraft,
        strategy: Option<crate::domain::Strategy>,
        around: &Surroundings<'_>,
    ) -> Enrichment {
        let enrichment = validate::enrich(draft, strategy, around);
        draft.expected_relative_lift = validate::grounded_lift(draft, around.analysis).lift;
        enrichment
    }

    /// Takes an open proposal out of the queue counts (`open = false`) while its replacement is
    /// judged, or puts it back.
    pub fn set_open(&mut self, proposal: &crate::domain::Proposal, open: bool) {
        self.queue.set_open(&proposal.draft, open);
    }

    /// The draft's reference checks as verdicts (and a warning for a claimed lift outside the
    /// predicted interval), then every consent and policy rule, then the decision.
    pub fn judge(
        &mut self,
        draft: &ProposalDraft,
        enrichment: &Enrichment,
    ) -> Result<Governed, PolicyError> {
        let mut validation =
            validate::problems_as_verdicts(&validate::check_draft(draft, &self.references));
        validation.extend(validate::claim_verdict(enrichment));
        govern_and_decide(
            &self.governance.policies,
            &self.run,
            &self.governance.approval_settings(),
            draft,
            enrichment,
            validation,
            &mut self.queue,
            self.now,
        )
    }
}
