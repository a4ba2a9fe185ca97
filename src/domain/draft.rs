//! The proposal draft: what every proposer returns and what a person reviews (its JSON schema is
//! what the model is given), with the cited evidence, the strategy a draft came from, drafts a
//! proposer had to drop, and the model usage a run records.

use super::experiment::Moment;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a personalised experience is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rendering {
    Edge,
    Server,
    Client,
}

impl Rendering {
    pub fn as_str(self) -> &'static str {
        match self {
            Rendering::Edge => "edge",
            Rendering::Server => "server",
            Rendering::Client => "client",
        }
    }

    pub fn parse(text: &str) -> Option<Rendering> {
        match text {
            "edge" => Some(Rendering::Edge),
            "server" => Some(Rendering::Server),
            "client" => Some(Rendering::Client),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Medium,
    High,
}

/// One cited experiment and what it shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRef {
    /// The id of an experiment in the history.
    pub experiment_id: String,
    /// What that experiment shows, in one sentence.
    pub finding: String,
}

/// What a proposer returns (see docs/architecture.md). The field order is deliberate: a model writes the
/// properties in schema order, so the reasoning (evidence, rationale) comes before the
/// conclusions it supports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposalDraft {
    /// Experiments from the history that support this proposal; every id must exist.
    pub evidence: Vec<EvidenceRef>,
    /// Why this experiment is worth running, in terms of the evidence.
    pub rationale: String,
    /// Commerce moment: search, product_detail, cart_checkout, post_purchase, re_engagement, other.
    pub moment: Moment,
    /// The personalisation lever, e.g. delivery_promise.
    pub lever: String,
    /// A segment name from the catalog.
    pub segment: String,
    /// web, app or email.
    pub channel: String,
    pub rendering: Rendering,
    /// Data signals the targeting uses (names from the catalog).
    pub signals: Vec<String>,
    /// Consent purposes the signals need.
    pub consent_purposes: Vec<String>,
    /// What the treatment does, concretely.
    pub change: String,
    /// Short name.
    pub title: String,
    /// "If we … for … at …, then … will … by …, because …"
    pub hypothesis: String,
    /// A commercial KPI: conversion_rate, revenue_per_visitor, average_order_value, repeat_purchase_rate.
    pub primary_kpi: String,
    /// Metrics that must not regress.
    pub guardrail_kpis: Vec<String>,
    /// The relative lift expected on the primary KPI, e.g. 0.03 for +3%.
    pub expected_relative_lift: f64,
    /// Latency the treatment adds at p75, in milliseconds.
    pub expected_latency_ms: f64,
    pub risk: Risk,
    /// How to turn it off.
    pub rollback_plan: String,
}

/// How the builtin proposer came to a draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// A lever proven in one moment or segment, tried in a related one.
    Transfer,
    /// An inconclusive, underpowered experiment, with the sample size it needs.
    Retest,
    /// A neglected commerce moment, with its best-evidenced lever.
    Cover,
    /// A holdback test of a shipped rule that was never proven.
    Validate,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Transfer => "transfer",
            Strategy::Retest => "retest",
            Strategy::Cover => "cover",
            Strategy::Validate => "validate",
        }
    }
}

/// A draft plus how the proposer came to it (the builtin proposer names its strategy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposedDraft {
    pub draft: ProposalDraft,
    pub strategy: Option<Strategy>,
}

/// Model usage for one run, for provenance and cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmUsage {
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: u64,
    pub cost: f64,
    pub attempts: u32,
    pub repairs: u32,
}

/// A draft a proposer could not make valid: kept so the run record says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedDraft {
    pub raw: serde_json::Value,
    pub reasons: Vec<String>,
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A small valid draft for unit tests of the domain's rules.
    pub fn draft() -> ProposalDraft {
        ProposalDraft {
            evidence: vec![EvidenceRef {
                experiment_id: "exp-1".into(),
                finding: "it worked".into(),
            }],
            rationale: "because".into(),
            moment: Moment::ProductDetail,
            lever: "social_proof".into(),
            segment: "all_visitors".into(),
            channel: "web".into(),
            rendering: Rendering::Edge,
            signals: Vec::new(),
            consent_purposes: Vec::new(),
            change: "show it".into(),
            title: "Social proof".into(),
            hypothesis: "If we …".into(),
            primary_kpi: "conversion_rate".into(),
            guardrail_kpis: Vec::new(),
            expected_relative_lift: 0.03,
            expected_latency_ms: 0.0,
            risk: Risk::Low,
            rollback_plan: "turn it off".into(),
        }
    }
}
