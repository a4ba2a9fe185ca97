//! `policy check`: the lints of a policy set. The CEL crate has no type checker, so every
//! expression's field paths are checked statically against a sample context, and every rule is
//! also run against sample proposals (every moment, rendering, risk and segment of the catalog),
//! so an unknown field, a type error, a non-boolean result or a rule that no proposal can pass
//! shows before a run.

use super::{PolicyError, PolicyRule, PolicySet, RulePart};
use crate::analysis::health::ProgramHealth;
use crate::governance::catalog::Catalog;
use crate::governance::context::{PolicyContext, QueueCounts, RunInputs, VARIABLES};
use crate::governance::sample;
use crate::governance::Effect;
use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use serde::Serialize;
use serde_json::Value as Json;
use std::fmt;

impl PolicySet {
    /// `policy check`: lints every rule. Fields are checked against a sample context (a sample
    /// proposal, this catalog and `program`), and every rule is run against the sample
    /// proposals ([`sample::sample_proposals`]: every moment, rendering, risk and segment of
    /// the catalog, with and without optional fields), so an unknown field, a type error, a
    /// non-boolean result or a rule that no proposal can pass shows before a run.
    pub fn check(&self, catalog: &Catalog, program: &ProgramHealth) -> Vec<Lint> {
        let mut lints = Vec::new();
        let run = RunInputs::new(catalog, program);
        let samples = sample::sample_proposals(catalog);
        let contexts = sample_contexts(&run, &samples, chrono::Utc::now());
        let Some(schema) = schema_of(&contexts) else {
            return lints;
        };
        for rule in &self.rules {
            let found = static_lints(rule, &schema);
            let found_statically = found.iter().any(|l| l.severity == Severity::Error);
            lints.extend(found);
            if found_statically {
                continue;
            }
            lints.extend(sample_lints(rule, &contexts));
            if rule.description.trim().is_empty() {
                lints.push(Lint {
                    severity: Severity::Info,
                    file: rule.file.clone(),
                    rule: Some(rule.id.clone()),
                    part: None,
                    message: "has no description: say which failure mode it guards against".into(),
                });
            }
        }
        lints
    }
}

/// One policy context per sample proposal, labelled with the sample.
fn sample_contexts<'a>(
    run: &RunInputs,
    samples: &'a [sample::SampleProposal],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(&'a str, PolicyContext)> {
    samples
        .iter()
        .map(|sample| {
            let mut queue = QueueCounts::default();
            if sample.busy_queue {
                queue.record_queued(&sample.draft);
            }
            (
                sample.label.as_str(),
                PolicyContext::for_run(run, &sample.draft, &sample.enrichment, &queue, now),
            )
        })
        .collect()
}

/// The JSON field paths are checked against: the last sample with a near-duplicate (so that
/// `proposal.duplicate_of` has its fields), else the first.
fn schema_of(contexts: &[(&str, PolicyContext)]) -> Option<Json> {
    contexts
        .iter()
        .rev()
        .find(|(_, c)| c.to_json()["proposal"]["duplicate_of"] != Json::Null)
        .or(contexts.first())
        .map(|(_, c)| c.to_json())
}

/// What reading a rule shows: unknown variables and fields (errors), and a `when` or `expr`
/// that uses none of the variables (a warning: it is the same for every proposal).
fn static_lints(rule: &PolicyRule, schema: &Json) -> Vec<Lint> {
    let mut lints = Vec::new();
    for (part, expr) in rule.expressions() {
        let mut found = Vec::new();
        check_fields(
            expr.program().expression(),
            schema,
            &mut Vec::new(),
            &mut found,
        );
        for message in found {
            lints.push(Lint::error(rule, part, message));
        }
        let references = expr.program().references();
        if part != RulePart::Message && !VARIABLES.iter().any(|v| references.has_variable(v)) {
            lints.push(Lint::warning(
                rule,
                part,
                format!(
                    "`{}` uses none of the variables ({}): it gives the same result for every proposal",
                    expr.source,
                    VARIABLES.join(", ")
                ),
            ));
        }
    }
    lints
}

/// What running a rule on every sample shows: the errors (each with the first sample it
/// happened on and how many more), and a rule false for every sample it applies to.
fn sample_lints(rule: &PolicyRule, contexts: &[(&str, PolicyContext)]) -> Vec<Lint> {
    let mut lints = Vec::new();
    // (message, first sample it happened on, how many samples)
    let mut errors: Vec<(String, &str, usize)> = Vec::new();
    let (mut applied, mut failed) = (0usize, 0usize);
    for (label, context) in contexts {
        let cel_context = context.cel_context();
        match rule.evaluate(&cel_context) {
            Ok(verdict) => {
                let not_applicable = rule.when.is_some()
                    && verdict.passed
                    && verdict.message.starts_with("not applicable");
                if !not_applicable {
                    applied += 1;
                    failed += usize::from(!verdict.passed);
                }
            }
            Err(err) => {
                let text = match err {
                    PolicyError::Evaluate { part, message, .. } => {
                        format!("{part} failed to evaluate: {message}")
                    }
                    PolicyError::NotBoolean { part, got, .. } => {
                        format!("{part} must be true or false, but gave {got}")
                    }
                    other => other.to_string(),
                };
                let too_costly = text.contains("evaluation cost limit exceeded");
                match errors.iter_mut().find(|(t, _, _)| *t == text) {
                    Some(entry) => entry.2 += 1,
                    None => errors.push((text, label, 1)),
                }
                if too_costly {
                    // Every sample would spend the whole budget again: one is enough.
                    break;
                }
            }
        }
    }
    for (text, label, count) in errors {
        let others = if count > 1 {
            format!(" (and {} more samples)", count - 1)
        } else {
            String::new()
        };
        lints.push(Lint {
            severity: Severity::Error,
            file: rule.file.clone(),
            rule: Some(rule.id.clone()),
            part: None,
            message: format!("fails on {label}{others}: {text}"),
        });
    }
    if applied > 0 && failed == applied {
        let (severity, consequence) = match rule.effect {
            Effect::Deny => (Severity::Error, "it would block every proposal"),
            Effect::Escalate => (Severity::Warning, "it would escalate every proposal"),
            Effect::Warn => (Severity::Warning, "it would warn on every proposal"),
        };
        lints.push(Lint {
            severity,
            file: rule.file.clone(),
            rule: Some(rule.id.clone()),
            part: Some(RulePart::Expr),
            message: format!(
                "`{}` is false for every one of the {applied} sample proposals it applies to (every moment, rendering, risk and segment of the catalog): {consequence}; can it ever be true?",
                rule.expr.source
            ),
        });
    }
    lints
}

/// How serious a lint is: errors fail `policy check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One finding of `policy check`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lint {
    pub severity: Severity,
    pub file: String,
    pub rule: Option<String>,
    pub part: Option<RulePart>,
    pub message: String,
}

impl Lint {
    fn error(rule: &PolicyRule, part: RulePart, message: String) -> Lint {
        Lint {
            severity: Severity::Error,
            file: rule.file.clone(),
            rule: Some(rule.id.clone()),
            part: Some(part),
            message,
        }
    }

    fn warning(rule: &PolicyRule, part: RulePart, message: String) -> Lint {
        Lint {
            severity: Severity::Warning,
            ..Lint::error(rule, part, message)
        }
    }
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{severity}: {}", self.file)?;
        if let Some(rule) = &self.rule {
            write!(f, ": rule {rule:?}")?;
        }
        if let Some(part) = self.part {
            write!(f, " ({part})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// `a.b.c` as a list of names rooted at an identifier, with whether the last step is a
/// presence test (`has(a.b.c)`).
fn select_path(expr: &IdedExpr) -> Option<(Vec<&str>, bool)> {
    let mut names = Vec::new();
    let mut current = expr;
    let mut test = false;
    let mut first = true;
    loop {
        match &current.expr {
            Expr::Ident(name) => {
                names.push(name.as_str());
                names.reverse();
                return Some((names, test));
            }
            Expr::Select(select) => {
                if select.test {
                    if !first {
                        return None;
                    }
                    test = true;
                }
                names.push(select.field.as_str());
                current = &select.operand;
            }
            _ => return None,
        }
        first = false;
    }
}

/// Edit distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn suggestion(field: &str, object: &serde_json::Map<String, Json>) -> String {
    object
        .keys()
        .map(|k| (edit_distance(field, k), k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| format!("did you mean `{k}`? "))
        .unwrap_or_default()
}

fn describe_keys(object: &serde_json::Map<String, Json>) -> String {
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys.len() > 40 {
        format!("{} and {} more", keys[..40].join(", "), keys.len() - 40)
    } else {
        keys.join(", ")
    }
}

/// Checks a field path against the sample context's JSON.
fn check_path(path: &[&str], presence_test: bool, schema: &Json, found: &mut Vec<String>) {
    let Some(root) = path.first() else { return };
    let Some(mut current) = schema.get(*root) else {
        return;
    };
    for (depth, field) in path.iter().enumerate().skip(1) {
        let so_far = path[..depth].join(".");
        let last = depth == path.len() - 1;
        match current {
            Json::Object(object) => match object.get(*field) {
                Some(next) => current = next,
                None if last && presence_test => {
                    found.push(format!(
                        "`has({so_far}.{field})` is always false: {so_far} has no field `{field}`; {}it has: {}",
                        suggestion(field, object),
                        describe_keys(object)
                    ));
                    return;
                }
                None => {
                    found.push(format!(
                        "{so_far} has no field `{field}`; {}it has: {}",
                        suggestion(field, object),
                        describe_keys(object)
                    ));
                    return;
                }
            },
            // Unknown in the sample (an optional value): cannot check deeper.
            Json::Null => return,
            Json::Array(_) => {
                found.push(format!(
                    "{so_far} is a list: it has no field `{field}` (use .exists(x, ...), .all(x, ...) or [index])"
                ));
                return;
            }
            other => {
                let kind = match other {
                    Json::String(_) => "a string",
                    Json::Number(_) => "a number",
                    Json::Bool(_) => "a bool",
                    _ => "a value",
                };
                found.push(format!("{so_far} is {kind}: it has no field `{field}`"));
                return;
            }
        }
    }
}

/// Walks an expression and reports unknown variables and unknown fields of the five variables.
fn check_fields(expr: &IdedExpr, schema: &Json, bound: &mut Vec<String>, found: &mut Vec<String>) {
    match &expr.expr {
        Expr::Ident(name) => {
            if !bound.iter().any(|b| b == name) && !VARIABLES.contains(&name.as_str()) {
                found.push(format!(
                    "unknown variable `{name}`: the variables are {}",
                    VARIABLES.join(", ")
                ));
            }
        }
        Expr::Select(select) => {
            if let Some((path, test)) = select_path(expr) {
                let root = path[0];
                if bound.iter().any(|b| b == root) {
                    return;
                }
                if !VARIABLES.contains(&root) {
                    found.push(format!(
                        "unknown variable `{root}`: the variables are {}",
                        VARIABLES.join(", ")
                    ));
                    return;
                }
                check_path(&path, test, schema, found);
            } else {
                check_fields(&select.operand, schema, bound, found);
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                check_fields(target, schema, bound, found);
            }
            for arg in &call.args {
                check_fields(arg, schema, bound, found);
            }
        }
        Expr::Comprehension(comprehension) => {
            check_fields(&comprehension.iter_range, schema, bound, found);
            check_fields(&comprehension.accu_init, schema, bound, found);
            let pushed = 2 + usize::from(comprehension.iter_var2.is_some());
            bound.push(comprehension.iter_var.clone());
            bound.push(comprehension.accu_var.clone());
            if let Some(second) = &comprehension.iter_var2 {
                bound.push(second.clone());
            }
            check_fields(&comprehension.loop_cond, schema, bound, found);
            check_fields(&comprehension.loop_step, schema, bound, found);
            check_fields(&comprehension.result, schema, bound, found);
            bound.truncate(bound.len() - pushed);
        }
        Expr::List(list) => {
            for element in &list.elements {
                check_fields(element, schema, bound, found);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                if let EntryExpr::MapEntry(entry) = &entry.expr {
                    check_fields(&entry.key, schema, bound, found);
                    check_fields(&entry.value, schema, bound, found);
                }
            }
        }
        Expr::Struct(structure) => {
            for entry in &structure.entries {
                if let EntryExpr::StructField(field) = &entry.expr {
                    check_fields(&field.value, schema, bound, found);
                }
            }
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::sample::{default_catalog, sample_program};

    fn load(expr: &str) -> Result<PolicySet, PolicyError> {
        let expr = toml::Value::String(expr.to_string());
        PolicySet::from_sources(
            vec![(
                "policies/hostile.toml".to_string(),
                format!("[[rule]]\nid = \"hostile\"\neffect = \"deny\"\nexpr = {expr}\nmessage = \"no\"\n"),
            )],
            None,
        )
    }

    #[test]
    fn check_reports_a_rule_no_proposal_can_pass_and_errors_with_their_sample() {
        let catalog = default_catalog().unwrap();
        let set =
            load("proposal.expected_relative_lift > 1.0 && proposal.expected_relative_lift < 0.0")
                .unwrap();
        let lints = set.check(&catalog, &sample_program());
        let lint = lints
            .iter()
            .find(|l| l.severity == Severity::Error)
            .expect("an error");
        assert!(
            lint.message.contains("is false for every one of the")
                && lint.message.contains("it would block every proposal"),
            "{lint}"
        );
        // A rule that only fails for one moment is fine...
        let set = load("proposal.moment != 'search' || proposal.risk != 'high'").unwrap();
        assert!(set
            .check(&catalog, &sample_program())
            .iter()
            .all(|l| l.severity != Severity::Error));
        // ...but one that errors for one sample is named with that sample.
        let set =
            load("proposal.moment != 'search' || proposal.risk != 'high' || 1 / 0 == 1").unwrap();
        let lints = set.check(&catalog, &sample_program());
        let lint = lints
            .iter()
            .find(|l| l.severity == Severity::Error)
            .expect("an error");
        assert!(
            lint.message.starts_with("fails on sample ") && lint.message.contains("(search, "),
            "{lint}"
        );
    }
}
