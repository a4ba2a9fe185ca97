//! Validating one experiment, whatever format it came in: strict deserialisation (the error
//! names the field's path), bounds on every text and list, finite non-negative numbers, dates in
//! order, and variants that make a test (one control, distinct names, conversions within
//! visitors).

use crate::history::model::{Experiment, Variant};
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
    for (i, variant) in variants.iter().enumerate() {
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

fn validate_variant(index: usize, variant: &Variant) -> Result<(), FieldError> {
    let field = |name: &str| format!("variants[{index}].{name}");
    check_text(&field("name"), &variant.name, MAX_SHORT_CHARS, true)?;
    if variant.conversions > variant.visitors {
        return Err(field_error(
            field("conversions"),
            format!(
                "{} conversions exceed {} visitors",
                variant.conversions, variant.visitors
            ),
        ));
    }
    check_finite(&field("revenue"), variant.revenue, true)?;
    check_finite(&field("revenue_sq"), variant.revenue_sq, true)?;
    // Numbers that no real tracking can produce: each would turn into a "result".
    if let Some(orders) = variant.orders {
        if orders < variant.conversions {
            return Err(field_error(
                field("orders"),
                format!(
                    "{orders} orders are fewer than {} conversions (every converting visitor placed an order)",
                    variant.conversions
                ),
            ));
        }
        if orders > 0 && variant.conversions == 0 {
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
