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

use crate::analysis::ProgramHealth;
use crate::config::Config;
use crate::proposer::ProposalDraft;
use crate::queue::Enrichment;
use catalog::{Catalog, CatalogError};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Open work in the queue, for the governance-gap limits.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueCounts {
    pub open_total: usize,
    pub open_by_moment: BTreeMap<String, usize>,
    pub open_by_segment: BTreeMap<String, usize>,
    pub queued_this_run: usize,
    pub queued_this_run_by_moment: BTreeMap<String, usize>,
}

/// The loaded governance: catalog (and, with #3, the policy set), with its digest.
pub struct Governance {
    pub catalog: Catalog,
    pub digest: String,
    pub approvals_required: u32,
    pub escalated_approvals_required: u32,
}

impl Governance {
    /// Loads the catalog from the configured policies folder, or the built-in defaults when
    /// that folder does not exist.
    pub fn load(config: &Config) -> Result<Governance, GovernanceError> {
        let dir = config.policies_dir();
        let catalog_path = dir.join("catalog.toml");
        let (catalog, text) = if catalog_path.exists() {
            let text =
                std::fs::read_to_string(&catalog_path).map_err(|source| CatalogError::Read {
                    path: catalog_path.display().to_string(),
                    source,
                })?;
            (
                Catalog::parse(&catalog_path.display().to_string(), &text)?,
                text,
            )
        } else {
            let text = crate::assets::CATALOG.to_string();
            (Catalog::parse("<built-in catalog.toml>", &text)?, text)
        };
        Ok(Governance {
            catalog,
            digest: crate::digest(text.as_bytes()),
            approvals_required: config.governance.approvals_required,
            escalated_approvals_required: config.governance.escalated_approvals_required,
        })
    }

    /// Every rule's verdict for one candidate.
    pub fn govern(
        &self,
        _draft: &ProposalDraft,
        _enrichment: &Enrichment,
        _program: &ProgramHealth,
        _queue: &QueueCounts,
        _now: DateTime<Utc>,
    ) -> Result<Vec<Verdict>, GovernanceError> {
        Ok(Vec::new())
    }
}
