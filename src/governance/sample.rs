//! A realistic sample proposal, enrichment and program, used where governance needs an input
//! that is not a real one: `policy check` evaluates every rule against it (the CEL crate has no
//! type checker, so an unknown field only shows when a rule runs), and `policy test` cases
//! override it field by field. Also the embedded default catalog and policy files, so an
//! installed binary can write them out (`hypod init`, `hypod demo`).

use super::catalog::{Catalog, CatalogError};
use crate::analysis::health::ProgramHealth;
use crate::domain::{DuplicateRef, Enrichment};
use crate::domain::{EvidenceRef, ProposalDraft, Rendering, Risk};
use crate::history::Moment;
use std::collections::BTreeMap;

/// The shipped catalog, as text.
pub const DEFAULT_CATALOG: &str = include_str!("../../policies/catalog.toml");

/// The shipped policy files (name, text), sorted by name.
pub const DEFAULT_POLICY_FILES: &[(&str, &str)] = &[
    (
        "black-box.toml",
        include_str!("../../policies/black-box.toml"),
    ),
    (
        "cart-checkout.toml",
        include_str!("../../policies/cart-checkout.toml"),
    ),
    (
        "duplication-tax.toml",
        include_str!("../../policies/duplication-tax.toml"),
    ),
    (
        "governance-gap.toml",
        include_str!("../../policies/governance-gap.toml"),
    ),
    (
        "kpi-mirage.toml",
        include_str!("../../policies/kpi-mirage.toml"),
    ),
    (
        "latency-leak.toml",
        include_str!("../../policies/latency-leak.toml"),
    ),
    (
        "stage-gate.toml",
        include_str!("../../policies/stage-gate.toml"),
    ),
];

/// The shipped policy test files (name, text), to be written under `policies/tests/`.
pub const DEFAULT_POLICY_TEST_FILES: &[(&str, &str)] = &[(
    "failure-modes.toml",
    include_str!("../../policies/tests/failure-modes.toml"),
)];

/// The shipped catalog, parsed.
pub fn default_catalog() -> Result<Catalog, CatalogError> {
    Catalog::parse("policies/catalog.toml", DEFAULT_CATALOG)
}

/// A proposal that every shipped rule lets through: a transfer of a proven lever to a
/// signed-in segment at the product page, with evidence, rationale and a rollback plan.
pub fn sample_draft() -> ProposalDraft {
    ProposalDraft {
        evidence: vec![EvidenceRef {
            experiment_id: "exp-2024-0003".into(),
            finding: "Social proof on the product page lifted conversion for all visitors.".into(),
        }],
        rationale: "Social proof was proven for all visitors; repeat customers read reviews \
                    more often, so the effect should carry over."
            .into(),
        moment: Moment::ProductDetail,
        lever: "social_proof".into(),
        segment: "logged_in_repeat".into(),
        channel: "web".into(),
        rendering: Rendering::Edge,
        signals: vec!["browsing_history".into()],
        consent_purposes: vec!["personalization".into()],
        change: "Show 'bought by N customers like you this week' under the price.".into(),
        title: "Social proof for repeat customers on the product page".into(),
        hypothesis: "If we show social proof for logged-in repeat customers at the product \
                     page, then conversion rate will rise by 3%, because it did for all visitors."
            .into(),
        primary_kpi: "conversion_rate".into(),
        guardrail_kpis: vec!["average_order_value".into()],
        expected_relative_lift: 0.03,
        expected_latency_ms: 6.0,
        risk: Risk::Low,
        rollback_plan: "Switch the social_proof flag off in the edge config; takes effect in \
                        under a minute."
            .into(),
    }
}

/// What validation would compute for [`sample_draft`].
pub fn sample_enrichment() -> Enrichment {
    Enrichment {
        baseline_rate: Some(0.052),
        baseline_source: "controls of concluded product_detail tests".into(),
        required_visitors_per_arm: Some(31234),
        segment_daily_visitors: Some(7800),
        consented_share: Some(0.86),
        expected_duration_days: Some(14.0),
        days_to_reach_sample: Some(10.0),
        value_per_conversion: 86.0,
        evidence_strength: 1.0,
        expected_value_per_day: 899.9,
        priority: 899.9,
        duplicate_of: None,
        strategy: Some(crate::domain::Strategy::Transfer),
        notes: Vec::new(),
        predicted_interval: Some([0.012, 0.058]),
        claimed_lift: None,
        claim_warning: None,
        supersedes: None,
    }
}

/// [`sample_enrichment`] with every optional field set (a duplicate included), so that a rule
/// guarded by `proposal.duplicate_of != null` is exercised too.
pub fn sample_enrichment_populated() -> Enrichment {
    Enrichment {
        duplicate_of: Some(DuplicateRef {
            kind: crate::domain::DuplicateKind::OpenProposal,
            id: "0190a5b2-sample".into(),
            similarity: 0.91,
        }),
        notes: vec!["sample note".into()],
        ..sample_enrichment()
    }
}

/// One input `policy check` evaluates every rule against, with a label that names it.
#[derive(Debug, Clone)]
pub struct SampleProposal {
    pub label: String,
    pub draft: ProposalDraft,
    pub enrichment: Enrichment,
    /// Whether the queue already holds a proposal like this one.
    pub busy_queue: bool,
}

/// The sample proposals of `policy check`: [`sample_draft`] varied so that together they cover
/// every moment, every rendering, every risk and every segment of `catalog` (each combination
/// of moment, rendering and risk once, segments in turn), alternately with the plain and the
/// populated enrichment and with an empty and a busy queue.
pub fn sample_proposals(catalog: &Catalog) -> Vec<SampleProposal> {
    const RENDERINGS: [Rendering; 3] = [Rendering::Edge, Rendering::Server, Rendering::Client];
    const RISKS: [Risk; 3] = [Risk::Low, Risk::Medium, Risk::High];
    let combinations = Moment::ALL.len() * RENDERINGS.len() * RISKS.len();
    let count = combinations.max(catalog.segments.len());
    (0..count)
        .map(|i| {
            let mut draft = sample_draft();
            draft.moment = Moment::ALL[i % Moment::ALL.len()];
            draft.rendering = RENDERINGS[(i / Moment::ALL.len()) % RENDERINGS.len()];
            draft.risk = RISKS[(i / (Moment::ALL.len() * RENDERINGS.len())) % RISKS.len()];
            if let Some(segment) = catalog.segments.get(i % catalog.segments.len().max(1)) {
                draft.segment = segment.name.clone();
            }
            let populated = i % 2 == 1;
            let enrichment = if populated {
                sample_enrichment_populated()
            } else {
                sample_enrichment()
            };
            let risk = match draft.risk {
                Risk::Low => "low",
                Risk::Medium => "medium",
                Risk::High => "high",
            };
            SampleProposal {
                label: format!(
                    "sample {} of {count} ({}, {}, {risk} risk, segment {}{})",
                    i + 1,
                    draft.moment,
                    draft.rendering.as_str(),
                    draft.segment,
                    if populated { ", a near-duplicate" } else { "" }
                ),
                draft,
                enrichment,
                busy_queue: i % 4 == 3,
            }
        })
        .collect()
}

/// A Stage 3 program, ready for agentic proposals.
pub fn sample_program() -> ProgramHealth {
    let moments = |value: usize| -> BTreeMap<String, usize> {
        Moment::NAMED
            .iter()
            .map(|m| (m.as_str().to_string(), value))
            .collect()
    };
    ProgramHealth {
        experiments: 246,
        running: 4,
        concluded: 242,
        valid_concluded: 236,
        proven: 73,
        disproven: 21,
        inconclusive: 142,
        invalid: 6,
        proven_rate: Some(0.31),
        proven_rate_band: Some("healthy".into()),
        proven_rate_by_moment: BTreeMap::new(),
        proven_rate_by_quarter: BTreeMap::new(),
        median_idea_to_decision_days: Some(38.0),
        idea_to_decision_days_by_quarter: BTreeMap::new(),
        idea_to_decision_trend_days_per_quarter: Some(-2.5),
        attributed_revenue_by_quarter: BTreeMap::new(),
        attribution_cv: Some(0.21),
        partial_quarters: Vec::new(),
        experiments_by_quarter_and_moment: BTreeMap::new(),
        moment_coverage_12m: moments(12),
        neglected_moments: Vec::new(),
        kpi_mirage_share: Some(0.02),
        kpi_mirage_experiments: Vec::new(),
        latency_leaks: Vec::new(),
        black_box_rules: Vec::new(),
        srm_flagged: Vec::new(),
        summary_only: Vec::new(),
        data_quality: Vec::new(),
        maturity_stage: 3,
        maturity_reasons: vec!["hypotheses are formalized and decided".into()],
        maturity_next_steps: vec!["decide within 14 days of the idea (median now 38 days)".into()],
        ready_for_proposals: true,
        readiness_reason: "236 decided experiments".into(),
        reasons: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_samples_cover_every_moment_rendering_risk_and_segment() {
        let catalog = default_catalog().expect("shipped catalog parses");
        let samples = sample_proposals(&catalog);
        for moment in Moment::ALL {
            for rendering in [Rendering::Edge, Rendering::Server, Rendering::Client] {
                for risk in [Risk::Low, Risk::Medium, Risk::High] {
                    assert!(samples.iter().any(|s| s.draft.moment == moment
                        && s.draft.rendering == rendering
                        && s.draft.risk == risk));
                }
            }
        }
        for segment in &catalog.segments {
            assert!(samples.iter().any(|s| s.draft.segment == segment.name));
        }
    }

    #[test]
    fn the_embedded_catalog_parses() {
        let catalog = default_catalog().expect("shipped catalog parses");
        assert!(catalog.segment(&sample_draft().segment).is_some());
    }
}
