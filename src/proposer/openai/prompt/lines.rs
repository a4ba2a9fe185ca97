//! The program's records as prompt lines: each record one line of compact JSON (free text
//! bounded and whitespace-collapsed, `<`, `>`, `&` escaped so that no record can close its
//! `<data>` block), and the health, catalog, consent rules, learning and lever table in the
//! words and shapes the templates show. What fits the budget is chosen elsewhere (`evidence`,
//! and the budget in `prompt`); this module only writes lines.

use crate::analysis::{ExperimentAnalysis, ProgramHealth};
use crate::domain::catalog::{Catalog, IdentityRequirement};
use crate::domain::{Proposal, Review};
use crate::history::{Decision, Experiment};
use crate::proposer::ProposalContext;
use serde::Serialize;
use serde_json::{json, Value};

/// Bounds of free text quoted from the records.
pub(super) const NAME_CHARS: usize = 80;
const HYPOTHESIS_CHARS: usize = 160;
const NOTES_CHARS: usize = 160;
pub(super) const REASON_CHARS: usize = 240;
/// Catalog descriptions are written for people; the model gets their first words.
const DESCRIPTION_CHARS: usize = 80;
/// Caps on the short lists, whatever the budget.
const MAX_RUNNING: usize = 40;
const MAX_OPEN: usize = 40;
const MAX_REJECTIONS: usize = 20;
const MAX_IDS_IN_HEALTH: usize = 5;
/// Lever × moment rows of the lever table, at most (the best expectations first).
const MAX_LEVER_ROWS: usize = 60;
/// Levers whose failed transfers are listed to the model, at most.
const MAX_FAILED_TRANSFER_LINES: usize = 10;

/// The running experiments, most recently started first, at most [`MAX_RUNNING`]; with how
/// many are running in all.
pub(super) fn running_lines(experiments: &[Experiment]) -> (Vec<String>, usize) {
    let mut running: Vec<&Experiment> = experiments.iter().filter(|e| e.is_running()).collect();
    running.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.id.cmp(&b.id)));
    let lines = running
        .iter()
        .take(MAX_RUNNING)
        .map(|e| running_line(e))
        .collect();
    (lines, running.len())
}

/// The open proposals, at most [`MAX_OPEN`].
pub(super) fn open_lines(open: &[Proposal]) -> Vec<String> {
    open.iter()
        .take(MAX_OPEN)
        .map(|p| {
            quote(&json!({
                "title": bound_text(&p.draft.title, NAME_CHARS),
                "moment": p.draft.moment.as_str(),
                "lever": p.draft.lever,
                "segment": p.draft.segment,
                "status": p.status.as_str(),
            }))
        })
        .collect()
}

/// Reviewers' recent rejections with their reasons, at most [`MAX_REJECTIONS`].
pub(super) fn rejection_lines(rejections: &[(Proposal, Review)]) -> Vec<String> {
    rejections
        .iter()
        .take(MAX_REJECTIONS)
        .map(|(p, review)| {
            quote(&json!({
                "title": bound_text(&p.draft.title, NAME_CHARS),
                "moment": p.draft.moment.as_str(),
                "lever": p.draft.lever,
                "segment": p.draft.segment,
                "reason": bound_text(review.note.as_deref().unwrap_or(""), REASON_CHARS),
            }))
        })
        .collect()
}

/// The catalog's segments.
pub(super) fn segment_lines(catalog: &Catalog) -> Vec<String> {
    catalog
        .segments
        .iter()
        .map(|s| {
            let mut line = json!({
                "name": s.name,
                "identity": s.identity,
                "region": s.region,
                "daily_visitors": s.daily_visitors,
                "consent": s.consent,
                "description": bound_text(&s.description, DESCRIPTION_CHARS),
            });
            // Only where the catalog limits them: a segment exists at every moment otherwise.
            if let Some(moments) = &s.moments {
                line["only_at_moments"] = json!(moments);
            }
            quote(&compact(line))
        })
        .collect()
}

/// The catalog's signals that are not sensitive (a sensitive one is never proposed).
pub(super) fn signal_lines(catalog: &Catalog) -> Vec<String> {
    catalog
        .signals
        .iter()
        .filter(|s| !s.sensitive)
        .map(|s| {
            let identity = (s.identity == IdentityRequirement::LoggedIn).then_some("logged_in");
            quote(&compact(json!({
                "name": s.name,
                "purposes": s.purposes,
                "identity": identity,
                "restricted_regions": s.restricted_regions,
                "description": bound_text(&s.description, DESCRIPTION_CHARS),
            })))
        })
        .collect()
}

/// The catalog's consent purposes, by name: their descriptions map to consent platforms (TCF,
/// Consent Mode), nothing the model needs.
pub(super) fn purpose_lines(catalog: &Catalog) -> Vec<String> {
    catalog
        .purposes
        .iter()
        .map(|p| quote(&compact(json!({ "name": p.name }))))
        .collect()
}

/// `value` without null, empty-string and empty-list fields (they cost tokens and say nothing).
pub(super) fn compact(value: Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .into_iter()
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::String(s) => !s.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    Value::Object(o) => !o.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        other => other,
    }
}

/// JSON for the prompt: compact, with `<`, `>` and `&` escaped so that quoted text cannot close
/// or open a `<data>` block.
pub fn quote<T: Serialize + ?Sized>(value: &T) -> String {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    text.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// Free text for the prompt: whitespace collapsed, control characters dropped, at most
/// `max_chars` characters (an ellipsis marks a cut).
pub fn bound_text(text: &str, max_chars: usize) -> String {
    let collapsed = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if collapsed.chars().count() <= max_chars {
        collapsed
    } else {
        let mut cut: String = collapsed
            .chars()
            .take(max_chars.saturating_sub(1))
            .collect();
        cut.push('…');
        cut
    }
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (x * factor).round() / factor
}

fn significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let magnitude = x.abs().log10().floor() as i32;
    round_to(x, (digits - 1 - magnitude).max(0))
}

fn percent(rate: Option<f64>) -> String {
    rate.map(|r| format!("{:.0}%", r * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

fn decision_str(decision: Decision) -> &'static str {
    match decision {
        Decision::Ship => "ship",
        Decision::Rollback => "rollback",
        Decision::Iterate => "iterate",
        Decision::None => "none",
    }
}

pub(super) fn evidence_line(
    experiment: &Experiment,
    analysis: Option<&ExperimentAnalysis>,
) -> String {
    let mut item = serde_json::Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() {
            item.insert(key.into(), value);
        }
    };
    put("id", json!(experiment.id));
    put("name", json!(bound_text(&experiment.name, NAME_CHARS)));
    put("lever", json!(experiment.lever));
    put("segment", json!(experiment.segment));
    if !experiment.signals.is_empty() {
        put("signals", json!(experiment.signals));
    }
    put("rendering", json!(experiment.rendering));
    put("kpi", json!(experiment.primary_kpi));
    if let Some(a) = analysis.filter(|a| a.summary_only) {
        // A summary-only record: the figures another tool reported, under their own key, so
        // that they are never read as statistics hypod computed.
        put("outcome", json!(a.outcome.as_str()));
        let p = &a.primary;
        let mut reported = serde_json::Map::new();
        if let Some(lift) = p.relative_lift {
            reported.insert("lift".into(), json!(round_to(lift, 3)));
        }
        if let (Some(low), Some(high)) = (p.ci_low, p.ci_high) {
            reported.insert("ci".into(), json!([round_to(low, 3), round_to(high, 3)]));
        }
        if let Some(se) = a.summary.as_ref().and_then(|s| s.standard_error) {
            reported.insert("se".into(), json!(significant(se, 2)));
        }
        if let Some(value) = p.p_value {
            reported.insert("p".into(), json!(significant(value, 2)));
        }
        put("reported", Value::Object(reported));
    } else if let Some(a) = analysis {
        put("outcome", json!(a.outcome.as_str()));
        let p = &a.primary;
        put("lift", json!(p.relative_lift.map(|x| round_to(x, 3))));
        if let Some(posterior) = p.posterior() {
            // The Bayesian engine's words: chance to win and the credible interval.
            put(
                "ci",
                json!([
                    round_to(posterior.ci_low, 3),
                    round_to(posterior.ci_high, 3)
                ]),
            );
            put("ctw", json!(round_to(posterior.chance_to_win, 3)));
        } else {
            if let (Some(low), Some(high)) = (p.ci_low, p.ci_high) {
                put("ci", json!([round_to(low, 3), round_to(high, 3)]));
            }
            put("p", json!(p.p_value.map(|x| significant(x, 2))));
        }
        put("power", json!(p.power.map(|x| round_to(x, 2))));
    }
    put("n", json!(experiment.total_visitors()));
    put("decision", json!(experiment.decision.map(decision_str)));
    put(
        "decided",
        json!(experiment.reference_date().map(|d| d.to_string())),
    );
    put("latency_ms", json!(experiment.latency_ms_p75_delta));
    put(
        "hypothesis",
        json!(experiment
            .hypothesis
            .as_deref()
            .map(|h| bound_text(h, HYPOTHESIS_CHARS))),
    );
    put(
        "notes",
        json!(experiment
            .notes
            .as_deref()
            .map(|n| bound_text(n, NOTES_CHARS))),
    );
    quote(&item)
}

fn running_line(experiment: &Experiment) -> String {
    quote(&compact(json!({
        "id": experiment.id,
        "name": bound_text(&experiment.name, NAME_CHARS),
        "moment": experiment.moment.as_str(),
        "lever": experiment.lever,
        "segment": experiment.segment,
        "signals": experiment.signals,
        "started": experiment.started_at.map(|d| d.to_string()),
    })))
}

fn ids(list: &[String]) -> String {
    let shown: Vec<&String> = list.iter().take(MAX_IDS_IN_HEALTH).collect();
    if list.len() > shown.len() {
        format!("{} (and {} more)", quote(&shown), list.len() - shown.len())
    } else {
        quote(&shown)
    }
}

pub(super) fn health_lines(health: &ProgramHealth) -> Vec<String> {
    let mut lines = vec![
        format!(
            "{} experiments: {} concluded ({} with a trustworthy result), {} running",
            health.experiments, health.concluded, health.valid_concluded, health.running
        ),
        format!(
            "proven hypothesis rate {} ({} of {}; healthy programs 30-50%){}",
            percent(health.proven_rate),
            health.proven,
            health.valid_concluded,
            health
                .proven_rate_band
                .as_deref()
                .map(|b| format!(": {}", bound_text(b, 40).replace('_', " ")))
                .unwrap_or_default()
        ),
    ];
    let by_moment: Vec<String> = health
        .proven_rate_by_moment
        .iter()
        .map(|(moment, cell)| {
            format!(
                "{} {} ({}/{})",
                bound_text(moment, 40),
                percent(cell.rate),
                cell.proven,
                cell.valid
            )
        })
        .collect();
    if !by_moment.is_empty() {
        lines.push(format!("proven rate by moment: {}", by_moment.join(", ")));
    }
    if let Some(days) = health.median_idea_to_decision_days {
        lines.push(format!(
            "median idea-to-decision time {days:.0} days{}",
            health
                .idea_to_decision_trend_days_per_quarter
                .map(|t| format!(", trend {t:+.1} days per quarter"))
                .unwrap_or_default()
        ));
    }
    if let Some(cv) = health.attribution_cv {
        lines.push(format!(
            "attributed revenue varies by a coefficient of variation of {cv:.2} across quarters"
        ));
    }
    let coverage: Vec<String> = health
        .moment_coverage_12m
        .iter()
        .map(|(moment, n)| format!("{} {n}", bound_text(moment, 40)))
        .collect();
    if !coverage.is_empty() {
        lines.push(format!(
            "experiments in the last 12 months by moment: {}",
            coverage.join(", ")
        ));
    }
    if !health.neglected_moments.is_empty() {
        let neglected: Vec<&str> = health
            .neglected_moments
            .iter()
            .map(|m| m.as_str())
            .collect();
        lines.push(format!(
            "neglected moments (fewer than 3 experiments in 12 months): {}",
            neglected.join(", ")
        ));
    }
    if let Some(share) = health.kpi_mirage_share {
        lines.push(format!(
            "{} of experiments had a non-commercial primary KPI",
            percent(Some(share))
        ));
    }
    if !health.latency_leaks.is_empty() {
        let leaks: Vec<String> = health.latency_leaks.iter().map(|l| l.id.clone()).collect();
        lines.push(format!(
            "latency leaks (over the rendering budget): {}",
            ids(&leaks)
        ));
    }
    if !health.black_box_rules.is_empty() {
        lines.push(format!(
            "black-box rules (shipped without a proven result; holdback tests can validate them): {}",
            ids(&health.black_box_rules)
        ));
    }
    if !health.srm_flagged.is_empty() {
        lines.push(format!(
            "sample ratio mismatch (results not trusted): {}",
            ids(&health.srm_flagged)
        ));
    }
    lines.push(format!(
        "maturity stage {} of 4{}",
        health.maturity_stage,
        if health.maturity_reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", bound_text(&health.maturity_reasons.join("; "), 400))
        }
    ));
    lines
}

/// The always-on consent rules (enforced by governance in code, not in policy files), in
/// plain words with the catalog's names (segments limited to some moments included). KPIs, latency budgets and the proposal limits are stated
/// elsewhere in the prompt.
pub(super) fn consent_rule_lines(ctx: &ProposalContext<'_>) -> Vec<String> {
    let catalog = ctx.catalog;
    let mut lines = vec![
        "every signal must be a catalog signal that is not sensitive; unknown or sensitive signals block the proposal".to_string(),
        "consent_purposes must list every purpose that the proposal's signals require, and the segment must have consent coverage for them (the expected duration uses only the consented share of its traffic)".into(),
    ];
    let logged_in: Vec<&str> = catalog
        .signals
        .iter()
        .filter(|s| s.identity == IdentityRequirement::LoggedIn)
        .map(|s| s.name.as_str())
        .collect();
    if !logged_in.is_empty() {
        lines.push(format!(
            "signals bound to an identity ({}) need a segment whose identity is logged_in",
            logged_in.join(", ")
        ));
    }
    for segment in &catalog.segments {
        if let Some(moments) = &segment.moments {
            lines.push(format!(
                "segment {} exists only at the moment(s) {}: never propose it at another",
                segment.name,
                moments.join(", ")
            ));
        }
    }
    for signal in &catalog.signals {
        if !signal.restricted_regions.is_empty() && !signal.sensitive {
            lines.push(format!(
                "signal {} may not be used for segments in region {}",
                signal.name,
                signal.restricted_regions.join(", ")
            ));
        }
    }
    lines
}

/// What the program learnt, most useful first: reviewers' rejections per strategy with their
/// most frequent reasons, the track record of hypod's own proposals beside the rest of the
/// program, and the levers whose transfers failed. Reviewer text is quoted data.
pub(super) fn learning_lines(ctx: &ProposalContext<'_>) -> Vec<String> {
    let mut lines: Vec<String> = crate::proposer::rejections_by_strategy(ctx.recent_rejections)
        .iter()
        .map(|r| {
            quote(&json!({
                "rejected_strategy": r.name(),
                "rejected": r.rejected,
                "reasons": r.reasons.iter().map(|(reason, n)| json!({
                    "reason": bound_text(reason, REASON_CHARS),
                    "times": n,
                })).collect::<Vec<_>>(),
            }))
        })
        .collect();
    let learning = &ctx.analysis.learning;
    // The program's record only as the yardstick of hypod's own.
    let program = (!learning.hypod.is_empty()).then_some(&learning.program);
    for record in learning.hypod.iter().chain(program) {
        let mut line = json!({
            "track_record": record.source,
            "tested": record.tested,
            "proven_rate": record.proven_rate.map(|r| significant(r, 2)),
            "median_decision_days": record.median_decision_days,
        });
        if let Some(model) = &record.model {
            line["model"] = json!(bound_text(model, NAME_CHARS));
        }
        if let Some(calibration) = record.calibration {
            line["calibration"] = json!(significant(calibration, 2));
        }
        lines.push(quote(&line));
    }
    let mut failed: Vec<(&String, &usize)> = learning.failed_transfers.iter().collect();
    failed.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    lines.extend(
        failed
            .into_iter()
            .take(MAX_FAILED_TRANSFER_LINES)
            .map(|(lever, n)| quote(&json!({ "failed_transfers_of": lever, "times": n }))),
    );
    lines
}

/// The lever knowledge base as compact rows, one per lever × moment, best expectation first:
/// `{"lever", "moment", "k", "proven", "pooled", "ci": [low, high], "i2", "expect"}` (relative
/// lifts, three significant digits), where `expect` is the pooled effect shrunk toward the
/// lever's pool: the lift a proposal there should expect.
pub(super) fn lever_lines(levers: &crate::analysis::LeverBase) -> (Vec<String>, usize) {
    let mut rows: Vec<(f64, String)> = Vec::new();
    for entry in &levers.levers {
        for (moment, group) in &entry.by_moment {
            rows.push((
                group.expected_lift,
                quote(&json!({
                    "lever": entry.lever,
                    "moment": moment.as_str(),
                    "k": group.pool.k,
                    "proven": group.proven,
                    "pooled": significant(group.pool.effect, 3),
                    "ci": [significant(group.pool.ci_low, 3), significant(group.pool.ci_high, 3)],
                    "i2": round_to(group.pool.i2, 2),
                    "expect": significant(group.expected_lift, 3),
                })),
            ));
        }
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let total = rows.len();
    let shown = rows
        .into_iter()
        .take(MAX_LEVER_ROWS)
        .map(|(_, line)| line)
        .collect();
    (shown, total)
}
