//! How the builtin proposer words its drafts: identifiers as words, p-values and lifts as a
//! person writes them, moments in a sentence, a test's finding and a lever's pooled evidence
//! in one line each, and the learning notes a rationale may take.

use super::Kind;
use crate::analysis::levers::LeverEntry;
use crate::analysis::{engines, ExperimentAnalysis, MetricResult};
use crate::domain::catalog::Catalog;
use crate::history::{Experiment, Moment};
use crate::validate;

pub(super) fn words(identifier: &str) -> String {
    identifier.replace(['_', '-'], " ")
}

/// A p-value as a person writes it ("p = 0.012", "p < 0.001").
pub(super) fn p_text(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".into()
    } else {
        format!("p = {p:.3}")
    }
}

/// A comparison's evidence in the engine's own words: the chance to win under the Bayesian
/// engine, the (sequential) p-value under the frequentist one.
pub(super) fn evidence(metric: &MetricResult) -> String {
    match (metric.posterior(), metric.p_value) {
        (Some(posterior), _) => engines::chance_text(posterior.chance_to_win),
        (None, Some(p)) if metric.sequential => format!("sequential {}", p_text(p)),
        (None, Some(p)) => p_text(p),
        (None, None) if metric.bayesian.is_some() => "no chance to win".into(),
        (None, None) => "no p-value".into(),
    }
}

pub(super) fn percent(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

/// A moment as a person names it in a sentence ("on product pages").
pub(super) fn at(moment: Moment) -> &'static str {
    match moment {
        Moment::Search => "in search",
        Moment::ProductDetail => "on product pages",
        Moment::CartCheckout => "in cart and checkout",
        Moment::PostPurchase => "after purchase",
        Moment::ReEngagement => "in re-engagement",
        Moment::Other => "at other touchpoints",
    }
}

/// A commercial KPI for the draft: the source's own when commercial, else conversion rate.
pub(super) fn commercial_kpi(experiment: &Experiment, catalog: &Catalog) -> String {
    if catalog.is_commercial(&experiment.primary_kpi) {
        experiment.primary_kpi.clone()
    } else {
        "conversion_rate".to_string()
    }
}

pub(super) fn finding(experiment: &Experiment, analysis: &ExperimentAnalysis) -> String {
    let lift = analysis
        .primary
        .relative_lift
        .map(percent)
        .unwrap_or_else(|| "no computable lift".into());
    let p = evidence(&analysis.primary);
    // A summary-only record's figures are another tool's, and say so.
    let reported = if analysis.summary_only {
        "reported "
    } else {
        ""
    };
    format!(
        "{} for {} at {}: {}{} on {} ({}, {}, {} visitors)",
        words(experiment.lever.as_deref().unwrap_or("the change")),
        experiment.segment.as_deref().unwrap_or("all visitors"),
        experiment.moment,
        reported,
        lift,
        experiment.primary_kpi,
        p,
        analysis.outcome.as_str(),
        experiment.total_visitors()
    )
}

/// The pooled evidence of a lever, in one sentence.
pub(super) fn pooled(entry: &LeverEntry) -> String {
    format!(
        "{} pools to {} over {} test(s) ({} proven; 95% CI {} to {}, I² {:.0}%)",
        words(&entry.lever),
        percent(entry.pool.effect),
        entry.pool.k,
        entry.proven,
        percent(entry.pool.ci_low),
        percent(entry.pool.ci_high),
        entry.pool.i2 * 100.0
    )
}

/// Appends a learning note to a rationale while it stays within the validated length (a note
/// never gets a draft blocked).
pub(super) fn note(rationale: &mut String, text: String) {
    if rationale.chars().count() + text.chars().count() <= validate::MAX_TEXT_CHARS {
        rationale.push_str(&text);
    }
}

/// The verb phrase of a hypothesis ("If we … for … at …").
pub(super) fn change_verb(kind: Kind, lever: &str) -> String {
    match kind {
        Kind::Validate => format!(
            "keep the shipped {} only where a holdback shows it pays",
            words(lever)
        ),
        Kind::Retest => format!("test {} again with enough traffic", words(lever)),
        _ => format!("show {}", words(lever)),
    }
}
