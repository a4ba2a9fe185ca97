//! What the runs and health page shows of program health: the playbook's three signals per
//! quarter (the proven-hypothesis rate against its healthy band, the time from idea to
//! decision with its trend, attributed revenue with its coefficient of variation), the
//! experiments per commerce moment per quarter, and the maturity stage with its reasons and
//! next steps — every figure read from [`ProgramHealth`] as `analyze --json` and
//! `/api/v1/health` give it, drawn by [`super::charts`], said in words beside each chart.

use super::charts::{self, Band, Chart, Kind, Point, Stack, StackedChart, Unit};
use crate::analysis::health::{ProgramHealth, HEALTHY_PROVEN_RATE};
use crate::domain::{units, Moment};
use serde::Serialize;
use std::collections::BTreeSet;

/// The page's health section: sentences, lists and chart figures (already-safe markup).
#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    /// "Stage 3 of 4 (Strategic)".
    pub stage: String,
    pub reasons: Vec<String>,
    /// "To reach Stage 4", or `None` at the highest stage.
    pub next_heading: Option<String>,
    pub next_steps: Vec<String>,
    /// The overall proven rate against the healthy band, in words.
    pub rate_words: String,
    /// One `<figure>` per chart: the proven rate, idea to decision, attributed revenue and
    /// experiments per moment, in that order.
    #[serde(skip)]
    pub charts: Vec<String>,
}

fn stage_name(stage: u8) -> &'static str {
    match stage {
        1 => "Random",
        2 => "Reactive",
        3 => "Strategic",
        _ => "Adaptive",
    }
}

/// The healthy band as the page says it: "30–50%".
fn band_text() -> String {
    let (low, high) = HEALTHY_PROVEN_RATE;
    format!("{:.0}–{:.0}%", low * 100.0, high * 100.0)
}

/// The proven rate against the healthy band, in words.
pub fn rate_words(program: &ProgramHealth) -> String {
    let band = band_text();
    let Some(rate) = program.proven_rate else {
        return format!(
            "No proven rate yet: {}.",
            program
                .reasons
                .get("proven_rate")
                .map(String::as_str)
                .unwrap_or("no concluded experiment with a valid result")
        );
    };
    let (low, high) = HEALTHY_PROVEN_RATE;
    let verdict = if rate < low {
        format!("below the healthy {band} band: the programme ships noise")
    } else if rate <= high {
        format!("inside the healthy {band} band")
    } else {
        format!("above the healthy {band} band: suspect the measurement")
    };
    format!(
        "Proven hypothesis rate {} ({} of {} valid results), {verdict}.",
        units::rate(rate),
        program.proven,
        program.valid_concluded
    )
}

/// Every quarter any per-quarter figure mentions, in order.
fn quarters(program: &ProgramHealth) -> Vec<String> {
    let mut all: BTreeSet<&String> = BTreeSet::new();
    all.extend(program.proven_rate_by_quarter.keys());
    all.extend(program.idea_to_decision_days_by_quarter.keys());
    all.extend(program.attributed_revenue_by_quarter.keys());
    all.extend(program.experiments_by_quarter_and_moment.keys());
    all.into_iter().cloned().collect()
}

pub fn health_view(program: &ProgramHealth, currency: Option<&str>) -> HealthView {
    let quarters = quarters(program);
    let partial = |q: &String| program.partial_quarters.contains(q);
    let point = |q: &String, value: Option<f64>, detail: Option<String>| Point {
        label: q.clone(),
        value,
        partial: partial(q),
        detail,
    };
    let band = band_text();
    let (low, high) = HEALTHY_PROVEN_RATE;

    let rate = Chart {
        id: "chart-proven-rate".into(),
        title: "Proven hypothesis rate per quarter".into(),
        note: format!(
            "The shaded band is the healthy {band}: below it the programme ships noise, above it the measurement is suspect."
        ),
        x_label: "Quarter".into(),
        y_label: "Proven hypothesis rate".into(),
        unit: Unit::Rate,
        kind: Kind::Bars,
        points: quarters
            .iter()
            .map(|q| {
                let cell = program.proven_rate_by_quarter.get(q);
                point(
                    q,
                    cell.and_then(|c| c.rate),
                    cell.map(|c| format!("{} of {}", c.proven, c.valid)),
                )
            })
            .collect(),
        band: Some(Band {
            low,
            high,
            label: format!("healthy {band}"),
        }),
    };

    let trend_words = match program.idea_to_decision_trend_days_per_quarter {
        Some(slope) if slope < 0.0 => format!(
            "trend {:.1} days per quarter over complete quarters: faster",
            slope
        ),
        Some(slope) if slope > 0.0 => format!(
            "trend +{:.1} days per quarter over complete quarters: slower",
            slope
        ),
        Some(_) => "no trend over complete quarters".into(),
        None => "no trend yet (fewer than two complete quarters)".into(),
    };
    let median_words = match program.median_idea_to_decision_days {
        Some(days) => format!("Median {} overall", Unit::Days.format(days)),
        None => "No median yet".into(),
    };
    let days = Chart {
        id: "chart-decision-days".into(),
        title: "Median days from idea to decision, per quarter".into(),
        note: format!("{median_words}; {trend_words} (dashed line)."),
        x_label: "Quarter".into(),
        y_label: "Median idea to decision".into(),
        unit: Unit::Days,
        kind: Kind::Line {
            trend: program.idea_to_decision_trend_days_per_quarter,
        },
        points: quarters
            .iter()
            .map(|q| {
                point(
                    q,
                    program.idea_to_decision_days_by_quarter.get(q).copied(),
                    None,
                )
            })
            .collect(),
        band: None,
    };

    let cv_words = match program.attribution_cv {
        Some(cv) => format!(
            "Coefficient of variation {cv:.2} over complete quarters (lower is steadier); partial quarters are shown, not counted."
        ),
        None => format!(
            "No coefficient of variation: {}.",
            program
                .reasons
                .get("attribution_cv")
                .map(String::as_str)
                .unwrap_or("the attributed revenue of complete quarters has no positive mean")
        ),
    };
    let revenue = Chart {
        id: "chart-revenue".into(),
        title: "Attributed revenue per quarter".into(),
        note: cv_words,
        x_label: "Quarter".into(),
        y_label: "Attributed revenue".into(),
        unit: Unit::Money(currency.map(str::to_string)),
        kind: Kind::Bars,
        points: quarters
            .iter()
            .map(|q| {
                point(
                    q,
                    program.attributed_revenue_by_quarter.get(q).copied(),
                    None,
                )
            })
            .collect(),
        band: None,
    };

    let series: Vec<String> = Moment::ALL
        .iter()
        .map(|m| m.as_str().replace('_', " "))
        .collect();
    let moments = StackedChart {
        id: "chart-moments".into(),
        title: "Experiments per commerce moment, per quarter".into(),
        note: "Every experiment, dated by its decision (else its end, start or idea).".into(),
        x_label: "Quarter".into(),
        y_label: "Experiments".into(),
        series,
        stacks: quarters
            .iter()
            .map(|q| Stack {
                label: q.clone(),
                partial: partial(q),
                parts: program
                    .experiments_by_quarter_and_moment
                    .get(q)
                    .map(|by_moment| {
                        by_moment
                            .iter()
                            .map(|(m, n)| (m.replace('_', " "), *n as f64))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
    };

    let stage = program.maturity_stage;
    HealthView {
        stage: format!("Stage {stage} of 4 ({})", stage_name(stage)),
        reasons: program.maturity_reasons.clone(),
        next_heading: (stage < 4)
            .then(|| format!("To reach Stage {} ({})", stage + 1, stage_name(stage + 1))),
        next_steps: program.maturity_next_steps.clone(),
        rate_words: rate_words(program),
        charts: vec![
            charts::figure(&rate),
            charts::figure(&days),
            charts::figure(&revenue),
            charts::stacked_figure(&moments),
        ],
    }
}
