//! Governance: every candidate proposal, from any proposer, is checked against the catalog's
//! consent rules and the policy set before it reaches a person. This module owns the verdict
//! model and how verdicts decide a proposal's status; `catalog` owns the catalog file,
//! `consent` the always-on consent rules, `expression` bounded CEL (size limits, cost meter),
//! `policy` the CEL policies (and `policy::lint`, `policy check`), `context` what rules see,
//! `cases` the policy test cases, `replay` re-evaluating past proposals, `explain` why a
//! proposal got its verdicts, and `sample` the
//! sample inputs and embedded default files.

pub mod assess;
pub mod cases;
pub mod consent;
pub mod context;
pub mod explain;
pub mod expression;
pub mod policy;
pub mod replay;
pub mod sample;

pub use assess::{govern_and_decide, govern_batch, Assessor, Governed};
pub use context::{PolicyContext, QueueCounts, RunInputs};
pub use policy::{Lint, PolicyError, PolicySet, Severity};

pub use crate::domain::catalog;
pub use crate::domain::verdict::{
    decide, denies, escalates, ApprovalSettings, Effect, GovernanceDecision, RuleSource, Verdict,
};

use crate::analysis::ProgramHealth;
use crate::domain::{Enrichment, ProposalDraft};
use catalog::{Catalog, CatalogError};
use chrono::{DateTime, Utc};

/// Consent rules, then every policy rule, for one proposal.
pub fn evaluate_all(
    policies: &PolicySet,
    catalog: &Catalog,
    context: &PolicyContext,
) -> Result<Vec<Verdict>, PolicyError> {
    let mut verdicts = consent::consent_verdicts(&context.draft, catalog);
    verdicts.extend(policies.evaluate(context)?);
    Ok(verdicts)
}

#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// The loaded governance: catalog and policy set, with the policy-set digest (policy files and
/// catalog) that every verdict is stored with.
#[derive(Debug)]
pub struct Governance {
    pub catalog: Catalog,
    pub policies: PolicySet,
    pub digest: String,
    pub approvals_required: u32,
    pub escalated_approvals_required: u32,
}

impl Governance {
    /// Loads the catalog and the policies from the policies folder `dir`, or the ones
    /// built into the binary when that folder does not exist. A policy that does not compile
    /// is an error naming file and rule.
    pub fn load(
        dir: &std::path::Path,
        settings: ApprovalSettings,
    ) -> Result<Governance, GovernanceError> {
        if dir.exists() {
            Governance::load_dir(dir, settings)
        } else {
            Governance::built_in(settings)
        }
    }

    /// Catalog and policies from a folder (`catalog.toml` + `*.toml`).
    pub fn load_dir(
        dir: &std::path::Path,
        settings: ApprovalSettings,
    ) -> Result<Governance, GovernanceError> {
        let catalog = Catalog::load(&dir.join(policy::CATALOG_FILE))?;
        let policies = PolicySet::load(dir)?;
        Ok(Governance::new(catalog, policies, settings))
    }

    /// The catalog and policies built into the binary.
    pub fn built_in(settings: ApprovalSettings) -> Result<Governance, GovernanceError> {
        Ok(Governance::new(
            sample::default_catalog()?,
            PolicySet::defaults()?,
            settings,
        ))
    }

    pub fn new(catalog: Catalog, policies: PolicySet, settings: ApprovalSettings) -> Governance {
        Governance {
            catalog,
            digest: policies.digest().to_string(),
            policies,
            approvals_required: settings.approvals_required,
            escalated_approvals_required: settings.escalated_approvals_required,
        }
    }

    pub fn approval_settings(&self) -> ApprovalSettings {
        ApprovalSettings {
            approvals_required: self.approvals_required,
            escalated_approvals_required: self.escalated_approvals_required,
        }
    }

    /// The catalog and program converted once, for governing many proposals
    /// ([`assess::Assessor`], [`Governance::govern_in`]).
    pub fn run_inputs(&self, program: &ProgramHealth) -> RunInputs {
        RunInputs::new(&self.catalog, program)
    }

    /// Every consent and policy rule's verdict for one candidate. `queue` must count the
    /// proposals this run has already queued ([`QueueCounts::record_queued`]).
    pub fn govern(
        &self,
        draft: &ProposalDraft,
        enrichment: &Enrichment,
        program: &ProgramHealth,
        queue: &QueueCounts,
        now: DateTime<Utc>,
    ) -> Result<Vec<Verdict>, GovernanceError> {
        self.govern_in(&self.run_inputs(program), draft, enrichment, queue, now)
    }

    /// [`Governance::govern`] with the run's inputs converted once.
    pub fn govern_in(
        &self,
        run: &RunInputs,
        draft: &ProposalDraft,
        enrichment: &Enrichment,
        queue: &QueueCounts,
        now: DateTime<Utc>,
    ) -> Result<Vec<Verdict>, GovernanceError> {
        let context = PolicyContext::for_run(run, draft, enrichment, queue, now);
        Ok(evaluate_all(&self.policies, &self.catalog, &context)?)
    }

    /// Status and approvals for a proposal's verdicts under the configured approvals.
    pub fn decide(&self, verdicts: &[Verdict]) -> GovernanceDecision {
        decide(verdicts, &self.approval_settings())
    }
}
