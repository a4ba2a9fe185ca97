//! Validating one experiment, whatever format it came in: strict deserialisation (the error
//! names the field's path), bounds on every text and list, finite non-negative numbers, dates in
//! order, and variants that make a test (one control, distinct names, conversions within
//! visitors); or, for a summary-only record, a reported result that makes sense (which fields go
//! together, bounds, a symmetric interval around the lift) and visitors without sums.

use crate::history::model::{Experiment, Summary, Variant};
use serde_json::Value;

const MAX_ID_CHARS: usize = 128;
const MAX_NAME_CHARS: usize = 300;
const MAX_HYPOTHESIS_CHARS: usize = 2_000;
const MAX_NOTES_CHARS: usize = 4_000;
const MAX_SHORT_CHARS: usize = 100;
const MAX_SIGNALS: usize = 32;
const MAX_VARIANTS: usize = 26;

/// Strictly deserializes and validates one experiment; the error names the field.
pub fn experiment_from_value(value: Value) -> Result<Experiment, (Option<String>, String)> {
    let experiment: Experiment = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { None } else { Some(path) };
        (field, err.into_inner().to_string())
    })?;
    validate(&experiment)?;
    Ok(experiment)
}

/// A problem with one record: the field it is about (if any) and what is wrong.
pub(super) type FieldError = (Option<String>, String);

pub(super) fn field_error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    (Some(field.into()), message.into())
}

fn check_text(field: &str, text: &str, max_chars: usize, required: bool) -> Result<(), FieldError> {
    if required && text.trim().is_empty() {
        return Err(field_error(field, "must not be empty"));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(field_error(
            field,
            format!("is {chars} characters long; the limit is {max_chars}"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(field_error(field, "contains control characters"));
    }
    Ok(())
}

fn check_finite(field: &str, value: Option<f64>, non_negative: bool) -> Result<(), FieldError> {
    if let Some(value) = value {
        if !value.is_finite() {
            return Err(field_error(field, "must be a finite number"));
        }
        if non_negative && value < 0.0 {
            return Err(field_error(field, format!("must be ≥ 0, found {value}")));
        }
    }
    Ok(())
}

fn validate(experiment: &Experiment) -> Result<(), FieldError> {
    let id = &experiment.id;
    check_text("id", id, MAX_ID_CHARS, true)?;
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
    {
        return Err(field_error(
            "id",
            "may only hold letters, digits and - _ . : /",
        ));
    }
    if let Some(external_id) = &experiment.external_id {
        check_text("external_id", external_id, MAX_ID_CHARS, true)?;
    }
    check_text("name", &experiment.name, MAX_NAME_CHARS, true)?;
    if let Some(text) = &experiment.hypothesis {
        check_text("hypothesis", text, MAX_HYPOTHESIS_CHARS, false)?;
    }
    if let Some(text) = &experiment.notes {
        check_text("notes", text, MAX_NOTES_CHARS, false)?;
    }
    check_text(
        "primary_kpi",
        &experiment.primary_kpi,
        MAX_SHORT_CHARS,
        true,
    )?;
    for (field, value) in [
        ("lever", &experiment.lever),
        ("segment", &experiment.segment),
        ("channel", &experiment.channel),
        ("rendering", &experiment.rendering),
        ("region", &experiment.region),
        ("owner", &experiment.owner),
        ("source_proposal", &experiment.source_proposal),
    ] {
        if let Some(text) = value {
            check_text(field, text, MAX_SHORT_CHARS, false)?;
        }
    }
    if experiment.signals.len() > MAX_SIGNALS {
        return Err(field_error(
            "signals",
            format!(
                "has {} entries; the limit is {MAX_SIGNALS}",
                experiment.signals.len()
            ),
        ));
    }
    for (i, signal) in experiment.signals.iter().enumerate() {
        check_text(&format!("signals[{i}]"), signal, MAX_SHORT_CHARS, true)?;
    }
    check_finite(
        "latency_ms_p75_delta",
        experiment.latency_ms_p75_delta,
        false,
    )?;
    check_finite("attributed_revenue", experiment.attributed_revenue, false)?;
    check_dates(experiment)?;

    let variants = &experiment.variants;
    if variants.len() < 2 {
        return Err(field_error(
            "variants",
            format!("needs at least two variants, found {}", variants.len()),
        ));
    }
    if variants.len() > MAX_VARIANTS {
        return Err(field_error(
            "variants",
            format!(
                "has {} variants; the limit is {MAX_VARIANTS}",
                variants.len()
            ),
        ));
    }
    let controls = variants.iter().filter(|v| v.control).count();
    if controls != 1 {
        return Err(field_error(
            "variants",
            format!("needs exactly one variant with \"control\": true, found {controls}"),
        ));
    }
    if let Some(summary) = &experiment.summary {
        validate_summary(experiment, summary)?;
    }
    for (i, variant) in variants.iter().enumerate() {
        validate_sums_present(i, variant, experiment.summary.is_some())?;
        validate_variant(i, variant)?;
        if variants[..i].iter().any(|other| other.name == variant.name) {
            return Err(field_error(
                format!("variants[{i}].name"),
                format!("duplicate variant name {:?}", variant.name),
            ));
        }
    }
    if let Some(weights) = &experiment.allocation {
        if weights.len() != variants.len() {
            return Err(field_error(
                "allocation",
                format!(
                    "has {} weights for {} variants",
                    weights.len(),
                    variants.len()
                ),
            ));
        }
        if weights.iter().any(|w| !w.is_finite() || *w <= 0.0) {
            return Err(field_error(
                "allocation",
                "weights must be positive numbers",
            ));
        }
    }
    Ok(())
}

/// Dates follow the life of an experiment: idea, start, end; a decision comes after the idea
/// and the start. Out of order, the time-to-decision figures would be nonsense (or negative).
fn check_dates(experiment: &Experiment) -> Result<(), FieldError> {
    let dates = [
        ("idea_at", experiment.idea_at),
        ("started_at", experiment.started_at),
        ("ended_at", experiment.ended_at),
    ];
    // Each later date against every earlier one that is given.
    let mut checks: Vec<(&str, chrono::NaiveDate, &str, chrono::NaiveDate)> = Vec::new();
    for (i, (later, later_date)) in dates.iter().enumerate() {
        for (earlier, earlier_date) in &dates[..i] {
            if let (Some(l), Some(e)) = (later_date, earlier_date) {
                checks.push((*later, *l, *earlier, *e));
            }
        }
    }
    if let Some(decided) = experiment.decided_at {
        for (earlier, date) in &dates[..2] {
            if let Some(date) = date {
                checks.push(("decided_at", decided, *earlier, *date));
            }
        }
    }
    for (later, later_date, earlier, earlier_date) in checks {
        if later_date < earlier_date {
            return Err(field_error(
                later,
                format!("{later_date} is before {earlier} {earlier_date}"),
            ));
        }
    }
    Ok(())
}

/// A full record has `conversions` on every variant; a summary-only record has no sum at all
/// (hypod never invents one, and never mixes reported results with sums it would re-analyse).
fn validate_sums_present(index: usize, variant: &Variant, summary: bool) -> Result<(), FieldError> {
    if !summary {
        if variant.conversions.is_none() {
            // The same words serde uses for any other missing field.
            return Err(field_error(
                format!("variants[{index}]"),
                "missing field `conversions`",
            ));
        }
        return Ok(());
    }
    for (name, given) in [
        ("conversions", variant.conversions.is_some()),
        ("orders", variant.orders.is_some()),
        ("revenue", variant.revenue.is_some()),
        ("revenue_sq", variant.revenue_sq.is_some()),
    ] {
        if given {
            return Err(field_error(
                format!("variants[{index}].{name}"),
                "a summary-only record (one with `summary`) carries visitors per arm and no sums: drop the sums, or drop `summary` to have hypod analyse the sums itself",
            ));
        }
    }
    Ok(())
}

/// Half-widths of a symmetric interval may differ by this share of the half-width (or by
/// [`SYMMETRY_ABSOLUTE`], rounding to three decimals), whichever is larger.
const SYMMETRY_SHARE: f64 = 0.05;
const SYMMETRY_ABSOLUTE: f64 = 0.0005;

/// A reported result that hypod can use: the fields that go together, finite numbers within
/// their bounds, a lift inside a symmetric interval, one comparison on the primary KPI.
fn validate_summary(experiment: &Experiment, summary: &Summary) -> Result<(), FieldError> {
    let field = |name: &str| format!("summary.{name}");
    check_text(&field("metric"), &summary.metric, MAX_SHORT_CHARS, true)?;
    if summary.metric != experiment.primary_kpi {
        return Err(field_error(
            field("metric"),
            format!(
                "reports {:?} but the experiment's primary_kpi is {:?}: hypod decides on the primary KPI, so the summary must report it",
                summary.metric, experiment.primary_kpi
            ),
        ));
    }
    if experiment.variants.len() != 2 {
        return Err(field_error(
            "variants",
            format!(
                "a summary-only record reports one comparison, so it needs exactly two variants (a control and a treatment), found {}",
                experiment.variants.len()
            ),
        ));
    }
    for (name, value) in [
        ("relative_lift", summary.relative_lift),
        ("ci_low", summary.ci_low),
        ("ci_high", summary.ci_high),
        ("p_value", summary.p_value),
        ("effect", summary.effect),
        ("standard_error", summary.standard_error),
    ] {
        check_finite(&field(name), value, false)?;
    }
    let lift = match (summary.relative_lift, summary.effect) {
        (Some(_), Some(_)) => {
            return Err(field_error(
                field("effect"),
                "give either `relative_lift` (with `ci_low`/`ci_high` or `p_value`) or `effect` with `standard_error`, not both",
            ))
        }
        (None, None) => {
            return Err(field_error(
                field("relative_lift"),
                "missing: a summary needs `relative_lift` (with `ci_low`/`ci_high` or `p_value`), or `effect` with `standard_error`",
            ))
        }
        (Some(lift), None) => {
            if summary.standard_error.is_some() {
                return Err(field_error(
                    field("standard_error"),
                    "goes with `effect`, not with `relative_lift`: write the lift as `effect` with its `standard_error`, or give `relative_lift` with `ci_low`/`ci_high`",
                ));
            }
            match (summary.ci_low, summary.ci_high) {
                (Some(_), None) => {
                    return Err(field_error(
                        field("ci_high"),
                        "missing: `ci_low` and `ci_high` are given together",
                    ))
                }
                (None, Some(_)) => {
                    return Err(field_error(
                        field("ci_low"),
                        "missing: `ci_low` and `ci_high` are given together",
                    ))
                }
                (None, None) if summary.p_value.is_none() => {
                    return Err(field_error(
                        field("ci_low"),
                        "missing: `relative_lift` needs its 95 % interval (`ci_low`, `ci_high`) or its `p_value`",
                    ))
                }
                _ => {}
            }
            ("relative_lift", lift)
        }
        (None, Some(effect)) => {
            for (name, given) in [("ci_low", summary.ci_low), ("ci_high", summary.ci_high)] {
                if given.is_some() {
                    return Err(field_error(
                        field(name),
                        "goes with `relative_lift`, not with `effect`: give `effect` with `standard_error`, or `relative_lift` with `ci_low`/`ci_high`",
                    ));
                }
            }
            let Some(se) = summary.standard_error else {
                return Err(field_error(
                    field("standard_error"),
                    "missing: `effect` needs its `standard_error`",
                ));
            };
            if se <= 0.0 {
                return Err(field_error(
                    field("standard_error"),
                    format!("must be > 0, found {se}"),
                ));
            }
            ("effect", effect)
        }
    };
    let (lift_field, lift) = lift;
    if lift < -1.0 {
        return Err(field_error(
            field(lift_field),
            format!("{lift} is below −1: a relative lift cannot take away more than all of the control's value (lifts are fractions: 0.031 for +3.1 %)"),
        ));
    }
    if let Some(p) = summary.p_value {
        if !(0.0..=1.0).contains(&p) {
            return Err(field_error(
                field("p_value"),
                format!("must be between 0 and 1, found {p}"),
            ));
        }
    }
    if let (Some(low), Some(high)) = (summary.ci_low, summary.ci_high) {
        if low >= high {
            return Err(field_error(
                field("ci_high"),
                format!("{high} is not above ci_low {low}: an interval needs a width"),
            ));
        }
        if lift < low || lift > high {
            return Err(field_error(
                field(lift_field),
                format!("{lift} lies outside its interval [{low}, {high}]"),
            ));
        }
        let (below, above) = (lift - low, high - lift);
        let half = (high - low) / 2.0;
        if (above - below).abs() > (SYMMETRY_SHARE * half).max(SYMMETRY_ABSOLUTE) {
            return Err(field_error(
                field("ci_high"),
                format!(
                    "the interval [{low}, {high}] is not symmetric around {lift} ({} below, {} above): hypod derives the standard error from a symmetric 95 % interval; give `effect` with `standard_error` instead",
                    short(below),
                    short(above)
                ),
            ));
        }
    }
    Ok(())
}

/// A difference of reported figures without the float noise of the subtraction (six decimals).
fn short(x: f64) -> String {
    let text = format!("{x:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn validate_variant(index: usize, variant: &Variant) -> Result<(), FieldError> {
    let field = |name: &str| format!("variants[{index}].{name}");
    check_text(&field("name"), &variant.name, MAX_SHORT_CHARS, true)?;
    let conversions = variant.conversions.unwrap_or(0);
    if conversions > variant.visitors {
        return Err(field_error(
            field("conversions"),
            format!(
                "{} conversions exceed {} visitors",
                conversions, variant.visitors
            ),
        ));
    }
    check_finite(&field("revenue"), variant.revenue, true)?;
    check_finite(&field("revenue_sq"), variant.revenue_sq, true)?;
    // Numbers that no real tracking can produce: each would turn into a "result".
    if let Some(orders) = variant.orders {
        if orders < conversions {
            return Err(field_error(
                field("orders"),
                format!(
                    "{orders} orders are fewer than {conversions} conversions (every converting visitor placed an order)"
                ),
            ));
        }
        if orders > 0 && conversions == 0 {
            return Err(field_error(
                field("orders"),
                format!("{orders} orders but no conversion"),
            ));
        }
    }
    if variant.visitors == 0 {
        for (name, value) in [
            ("revenue", variant.revenue),
            ("revenue_sq", variant.revenue_sq),
        ] {
            if value.is_some_and(|v| v > 0.0) {
                return Err(field_error(field(name), "is positive with 0 visitors"));
            }
        }
    }
    if let (Some(sum), Some(sum_sq)) = (variant.revenue, variant.revenue_sq) {
        // Σx² ≥ (Σx)²/n for any n values (Cauchy–Schwarz): below it the variance is negative.
        let minimum = sum * sum / variant.visitors.max(1) as f64;
        if sum_sq < minimum * (1.0 - 1e-9) {
            return Err(field_error(
                field("revenue_sq"),
                format!(
                    "{sum_sq} is below revenue²/visitors = {minimum}: revenue_sq must be the sum over visitors of the squared revenue per visitor, which can never be smaller"
                ),
            ));
        }
    }
    Ok(())
}
