//! Policies as code: the `[[rule]]` tables of `policies/*.toml`, each a CEL expression that
//! must hold for a proposal. This module owns loading (strict TOML, every expression compiled
//! once), the policy-set digest, evaluation (an error is never a pass: it stops the run naming
//! file and rule), and `policy check`'s lints (the CEL crate has no type checker, so fields are
//! checked statically against a sample context and every rule is also run against samples).
//!
//! A rule's `message` may embed CEL between double braces, e.g.
//! `"near-duplicate of {{ proposal.duplicate_of.id }}"`; it is rendered only when the rule fails.

use super::catalog::Catalog;
use super::context::{PolicyContext, QueueCounts, RunInputs, VARIABLES};
use super::sample;
use super::{Effect, RuleSource, Verdict};
use crate::analysis::health::ProgramHealth;
use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::{Program, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use toml::Spanned;

/// The catalog's file name inside the policies folder (not a policy file).
pub const CATALOG_FILE: &str = "catalog.toml";

/// Which part of a rule an error or lint is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RulePart {
    When,
    Expr,
    Message,
}

impl fmt::Display for RulePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RulePart::When => "when",
            RulePart::Expr => "expr",
            RulePart::Message => "message",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: cannot read the policies: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}:{file_line}: rule {rule:?}: {part} does not compile (line {line}, column {column} of the expression): {message}")]
    Compile {
        file: String,
        rule: String,
        part: RulePart,
        /// Line in the file where the expression starts.
        file_line: usize,
        /// Position inside the expression.
        line: isize,
        column: isize,
        message: String,
    },
    #[error("{file}: rule {rule:?}: {message}")]
    InvalidRule {
        file: String,
        rule: String,
        message: String,
    },
    #[error("rule {rule:?} is defined twice: in {first_file} and in {second_file}; rule ids must be unique")]
    DuplicateRule {
        rule: String,
        first_file: String,
        second_file: String,
    },
    #[error("{file}: rule {rule:?}: {part} failed to evaluate: {message} (a rule that cannot be evaluated never passes)")]
    Evaluate {
        file: String,
        rule: String,
        part: RulePart,
        message: String,
    },
    #[error("{file}: rule {rule:?}: {part} must be true or false, but gave {got}")]
    NotBoolean {
        file: String,
        rule: String,
        part: RulePart,
        got: String,
    },
}

/// A rule as written in a policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: Spanned<String>,
    effect: Effect,
    #[serde(default)]
    description: String,
    when: Option<Spanned<String>>,
    expr: Spanned<String>,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default, rename = "rule")]
    rules: Vec<RuleSpec>,
}

/// A compiled CEL expression with its source.
#[derive(Debug)]
pub struct CompiledExpr {
    pub source: String,
    program: Program,
}

#[derive(Debug)]
enum MessagePart {
    Text(String),
    Expr(CompiledExpr),
}

/// One loaded rule, compiled.
#[derive(Debug)]
pub struct PolicyRule {
    pub id: String,
    pub file: String,
    /// Line of the rule's `id` in its file.
    pub line: usize,
    pub effect: Effect,
    pub description: String,
    pub message: String,
    pub when: Option<CompiledExpr>,
    pub expr: CompiledExpr,
    message_parts: Vec<MessagePart>,
}

/// A loaded, compiled policy set.
#[derive(Debug)]
pub struct PolicySet {
    pub rules: Vec<PolicyRule>,
    /// The policy files read (name, text), sorted by name.
    pub files: Vec<(String, String)>,
    digest: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn valid_rule_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn compile(
    file: &str,
    text: &str,
    rule: &str,
    part: RulePart,
    source: &Spanned<String>,
) -> Result<CompiledExpr, PolicyError> {
    compile_at(
        file,
        rule,
        part,
        line_of(text, source.span().start),
        source.get_ref(),
    )
}

fn compile_at(
    file: &str,
    rule: &str,
    part: RulePart,
    file_line: usize,
    source: &str,
) -> Result<CompiledExpr, PolicyError> {
    if source.trim().is_empty() {
        return Err(PolicyError::InvalidRule {
            file: file.into(),
            rule: rule.into(),
            message: format!("{part} is empty"),
        });
    }
    match Program::compile(source) {
        Ok(program) => Ok(CompiledExpr {
            source: source.to_string(),
            program,
        }),
        Err(errors) => {
            let first = errors.errors.first();
            Err(PolicyError::Compile {
                file: file.into(),
                rule: rule.into(),
                part,
                file_line,
                line: first.map(|e| e.pos.0).unwrap_or(0),
                column: first.map(|e| e.pos.1).unwrap_or(0),
                message: first
                    .map(|e| e.msg.clone())
                    .unwrap_or_else(|| errors.to_string()),
            })
        }
    }
}

/// Splits a message into text and `{{ expr }}` parts, compiling each expression.
fn compile_message(
    file: &str,
    rule: &str,
    file_line: usize,
    message: &str,
) -> Result<Vec<MessagePart>, PolicyError> {
    let mut parts = Vec::new();
    let mut rest = message;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            return Err(PolicyError::InvalidRule {
                file: file.into(),
                rule: rule.into(),
                message: "message has a '{{' without its closing '}}'".into(),
            });
        };
        if start > 0 {
            parts.push(MessagePart::Text(rest[..start].to_string()));
        }
        let source = rest[start + 2..start + 2 + len].trim();
        parts.push(MessagePart::Expr(compile_at(
            file,
            rule,
            RulePart::Message,
            file_line,
            source,
        )?));
        rest = &rest[start + 2 + len + 2..];
    }
    if !rest.is_empty() {
        parts.push(MessagePart::Text(rest.to_string()));
    }
    Ok(parts)
}

/// The policy set's digest: file names (not the folder they sit in, so the same policies give
/// the same digest in any checkout) and contents.
fn digest_of(files: &[(String, String)], catalog: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    for (path, text) in files {
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_else(|| path.into());
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    if let Some(text) = catalog {
        hasher.update(CATALOG_FILE.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// How a CEL value reads in a message or an error.
pub fn display_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.to_string(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => {
            let rounded = (f * 1000.0).round() / 1000.0;
            rounded.to_string()
        }
        Value::List(items)
            if items
                .iter()
                .all(|v| !matches!(v, Value::List(_) | Value::Map(_))) =>
        {
            items
                .iter()
                .map(display_value)
                .collect::<Vec<_>>()
                .join(", ")
        }
        other => match other.json() {
            Ok(json) => json.to_string(),
            Err(_) => format!("{other:?}"),
        },
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Int(_) | Value::UInt(_) => "an int",
        Value::Float(_) => "a double",
        Value::String(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "a bool",
        Value::Null => "null",
        _ => "a value",
    }
}

impl PolicyRule {
    fn eval_bool(
        &self,
        expr: &CompiledExpr,
        part: RulePart,
        context: &cel::Context<'_, '_>,
    ) -> Result<bool, PolicyError> {
        match expr.program.execute(context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(PolicyError::NotBoolean {
                file: self.file.clone(),
                rule: self.id.clone(),
                part,
                got: format!("{} ({})", type_name(&other), display_value(&other)),
            }),
            Err(err) => Err(PolicyError::Evaluate {
                file: self.file.clone(),
                rule: self.id.clone(),
                part,
                message: err.to_string(),
            }),
        }
    }

    fn render_message(&self, context: &cel::Context<'_, '_>) -> Result<String, PolicyError> {
        let mut out = String::new();
        for part in &self.message_parts {
            match part {
                MessagePart::Text(text) => out.push_str(text),
                MessagePart::Expr(expr) => match expr.program.execute(context) {
                    Ok(value) => out.push_str(&display_value(&value)),
                    Err(err) => {
                        return Err(PolicyError::Evaluate {
                            file: self.file.clone(),
                            rule: self.id.clone(),
                            part: RulePart::Message,
                            message: format!("{{{{ {} }}}}: {err}", expr.source),
                        })
                    }
                },
            }
        }
        Ok(out)
    }

    /// This rule's verdict for one proposal.
    pub fn evaluate(&self, context: &cel::Context<'_, '_>) -> Result<Verdict, PolicyError> {
        let verdict = |passed: bool, message: String| Verdict {
            rule_id: self.id.clone(),
            source: RuleSource::Policy,
            effect: self.effect,
            passed,
            message,
        };
        if let Some(when) = &self.when {
            if !self.eval_bool(when, RulePart::When, context)? {
                return Ok(verdict(
                    true,
                    format!("not applicable: `{}` is false", when.source),
                ));
            }
        }
        if self.eval_bool(&self.expr, RulePart::Expr, context)? {
            Ok(verdict(true, "passed".into()))
        } else {
            Ok(verdict(false, self.render_message(context)?))
        }
    }
}

impl PolicySet {
    /// Loads `dir/*.toml` (sorted by name; `catalog.toml` and sub-folders are not policy files)
    /// and compiles every rule once. The catalog's text, when present, is part of the digest.
    pub fn load(dir: &Path) -> Result<PolicySet, PolicyError> {
        let read_error = |path: &Path, source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| read_error(dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| read_error(dir, e))?;
            let path = entry.path();
            let is_toml = path.extension().is_some_and(|ext| ext == "toml");
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_file() && is_toml && name != CATALOG_FILE {
                names.push(name);
            }
        }
        names.sort();
        let mut files = Vec::new();
        for name in names {
            let path = dir.join(&name);
            let text = std::fs::read_to_string(&path).map_err(|e| read_error(&path, e))?;
            files.push((format!("{}", path.display()), text));
        }
        let catalog_path = dir.join(CATALOG_FILE);
        let catalog = if catalog_path.is_file() {
            Some(std::fs::read_to_string(&catalog_path).map_err(|e| read_error(&catalog_path, e))?)
        } else {
            None
        };
        PolicySet::from_sources(files, catalog.as_deref())
    }

    /// Builds a policy set from (file name, text) pairs in the given order, e.g. the embedded
    /// defaults ([`sample::DEFAULT_POLICY_FILES`]).
    pub fn from_sources(
        files: Vec<(String, String)>,
        catalog_text: Option<&str>,
    ) -> Result<PolicySet, PolicyError> {
        let mut rules: Vec<PolicyRule> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for (file, text) in &files {
            let parsed: PolicyFile = toml::from_str(text).map_err(|err| PolicyError::Parse {
                file: file.clone(),
                message: err.to_string().trim_end().to_string(),
            })?;
            for spec in parsed.rules {
                let id = spec.id.get_ref().trim().to_string();
                let line = line_of(text, spec.id.span().start);
                let invalid = |message: String| PolicyError::InvalidRule {
                    file: file.clone(),
                    rule: id.clone(),
                    message,
                };
                if !valid_rule_id(&id) {
                    return Err(invalid(format!(
                        "line {line}: a rule id is a lower-case name (a-z, 0-9, '-', '_', '.'), at most 80 characters"
                    )));
                }
                if id.starts_with("consent.") || id.starts_with("validate.") {
                    return Err(invalid(
                        "ids starting with 'consent.' or 'validate.' are reserved for hypod's built-in rules".into(),
                    ));
                }
                if spec.message.trim().is_empty() {
                    return Err(invalid(
                        "message is empty: say what is wrong and what to do".into(),
                    ));
                }
                if let Some(first_file) = seen.get(&id) {
                    return Err(PolicyError::DuplicateRule {
                        rule: id,
                        first_file: first_file.clone(),
                        second_file: file.clone(),
                    });
                }
                seen.insert(id.clone(), file.clone());
                let when = spec
                    .when
                    .as_ref()
                    .map(|w| compile(file, text, &id, RulePart::When, w))
                    .transpose()?;
                let expr = compile(file, text, &id, RulePart::Expr, &spec.expr)?;
                let message_parts = compile_message(file, &id, line, &spec.message)?;
                rules.push(PolicyRule {
                    id,
                    file: file.clone(),
                    line,
                    effect: spec.effect,
                    description: spec.description,
                    message: spec.message,
                    when,
                    expr,
                    message_parts,
                });
            }
        }
        let digest = digest_of(&files, catalog_text);
        Ok(PolicySet {
            rules,
            files,
            digest,
        })
    }

    /// The shipped policies, embedded in the binary.
    pub fn defaults() -> Result<PolicySet, PolicyError> {
        PolicySet::from_sources(
            sample::DEFAULT_POLICY_FILES
                .iter()
                .map(|(name, text)| (format!("policies/{name}"), text.to_string()))
                .collect(),
            Some(sample::DEFAULT_CATALOG),
        )
    }

    /// sha256 (hex) over the policy files' names and texts and the catalog's text: stored with
    /// every verdict, so an auditor knows which rules decided.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn rule(&self, id: &str) -> Option<&PolicyRule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// Every rule's verdict for one proposal, in file order. An evaluation error is an `Err`
    /// naming file and rule: a rule that cannot be evaluated never passes.
    pub fn evaluate(&self, context: &PolicyContext) -> Result<Vec<Verdict>, PolicyError> {
        let cel_context = context.cel_context();
        self.rules
            .iter()
            .map(|rule| rule.evaluate(&cel_context))
            .collect()
    }

    /// `policy check`: lints every rule. Fields are checked against a sample context (a sample
    /// proposal, this catalog and `program`), and every rule is run against the sample
    /// proposal with and without its optional fields, so an unknown field, a type error or a
    /// non-boolean result shows before a run.
    pub fn check(&self, catalog: &Catalog, program: &ProgramHealth) -> Vec<Lint> {
        let mut lints = Vec::new();
        let run = RunInputs::new(catalog, program);
        let now = chrono::Utc::now();
        let draft = sample::sample_draft();
        let mut risky = draft.clone();
        risky.moment = crate::history::Moment::CartCheckout;
        risky.risk = crate::domain::Risk::High;
        let mut busy_queue = QueueCounts::default();
        busy_queue.record_queued(&risky);
        let contexts = [
            PolicyContext::for_run(
                &run,
                &draft,
                &sample::sample_enrichment(),
                &QueueCounts::default(),
                now,
            ),
            PolicyContext::for_run(
                &run,
                &risky,
                &sample::sample_enrichment_populated(),
                &busy_queue,
                now,
            ),
        ];
        let schema = contexts[1].to_json();
        for rule in &self.rules {
            let parts = [
                rule.when.as_ref().map(|w| (RulePart::When, w)),
                Some((RulePart::Expr, &rule.expr)),
            ];
            let message_exprs = rule.message_parts.iter().filter_map(|p| match p {
                MessagePart::Expr(e) => Some((RulePart::Message, e)),
                MessagePart::Text(_) => None,
            });
            for (part, expr) in parts.into_iter().flatten().chain(message_exprs) {
                let mut found = Vec::new();
                check_fields(
                    expr.program.expression(),
                    &schema,
                    &mut Vec::new(),
                    &mut found,
                );
                for message in found {
                    lints.push(Lint::error(rule, part, message));
                }
                let references = expr.program.references();
                if part != RulePart::Message
                    && !VARIABLES.iter().any(|v| references.has_variable(v))
                {
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
            let mut errors: Vec<String> = Vec::new();
            let found_statically = lints
                .iter()
                .any(|l| l.severity == Severity::Error && l.rule.as_deref() == Some(&rule.id));
            for context in contexts.iter().filter(|_| !found_statically) {
                let cel_context = context.cel_context();
                if let Err(err) = rule.evaluate(&cel_context) {
                    let text = match err {
                        PolicyError::Evaluate { part, message, .. } => {
                            format!("{part} failed to evaluate: {message}")
                        }
                        PolicyError::NotBoolean { part, got, .. } => {
                            format!("{part} must be true or false, but gave {got}")
                        }
                        other => other.to_string(),
                    };
                    if !errors.contains(&text) {
                        errors.push(text);
                    }
                }
            }
            for text in errors {
                lints.push(Lint {
                    severity: Severity::Error,
                    file: rule.file.clone(),
                    rule: Some(rule.id.clone()),
                    part: None,
                    message: format!("fails on the sample proposal: {text}"),
                });
            }
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

/// Outcome of a rule in a verdict set, for comparisons (replay, tests).
pub fn outcome_word(verdict: Option<&Verdict>) -> &'static str {
    match verdict {
        None => "absent",
        Some(v) if v.passed => "pass",
        Some(_) => "fail",
    }
}

/// Evaluates a single CEL expression against a context (for `policy eval --expr` style tools
/// and tests).
pub fn evaluate_expression(source: &str, context: &PolicyContext) -> Result<Json, PolicyError> {
    let expr = compile_at("<expression>", "<expression>", RulePart::Expr, 1, source)?;
    let cel_context = context.cel_context();
    let value = expr
        .program
        .execute(&cel_context)
        .map_err(|err| PolicyError::Evaluate {
            file: "<expression>".into(),
            rule: "<expression>".into(),
            part: RulePart::Expr,
            message: err.to_string(),
        })?;
    Ok(value
        .json()
        .unwrap_or_else(|_| Json::String(display_value(&value))))
}

/// Rule ids referenced anywhere, for callers that want to know which rules exist.
pub fn rule_ids(set: &PolicySet) -> HashSet<&str> {
    set.rules.iter().map(|r| r.id.as_str()).collect()
}
