//! Policies as code: the `[[rule]]` tables of `policies/*.toml`, each a CEL expression that
//! must hold for a proposal. This module owns loading (strict TOML, every expression compiled
//! once through [`super::expression`], which bounds it), the policy-set digest, and evaluation
//! (an error is never a pass: it stops the run naming file and rule). `lint` is `policy check`.
//!
//! A rule's `message` may embed CEL between double braces, e.g.
//! `"near-duplicate of {{ proposal.duplicate_of.id }}"`; it is rendered only when the rule fails.

pub mod lint;

pub use lint::{Lint, Severity};

use super::context::PolicyContext;
use super::expression::{display_value, type_name, CompileError, CompiledExpr};
use super::sample;
use super::{Effect, RuleSource, Verdict};
use cel::Value;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use toml::Spanned;

/// The catalog's file name inside the policies folder (not a policy file).
pub const CATALOG_FILE: &str = "catalog.toml";

/// Largest accepted policy file, in bytes.
pub const MAX_POLICY_FILE_BYTES: usize = 1 << 20;
/// Most rules in one policy set.
pub const MAX_RULES: usize = 1_000;

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
    #[error("{file}:{file_line}: rule {rule:?}: {part} is too large to be a policy: {message}")]
    TooLarge {
        file: String,
        rule: String,
        part: RulePart,
        file_line: usize,
        message: String,
    },
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
    CompiledExpr::compile(source).map_err(|error| match error {
        CompileError::TooLarge(message) => PolicyError::TooLarge {
            file: file.into(),
            rule: rule.into(),
            part,
            file_line,
            message,
        },
        CompileError::Syntax {
            line,
            column,
            message,
        } => PolicyError::Compile {
            file: file.into(),
            rule: rule.into(),
            part,
            file_line,
            line,
            column,
            message,
        },
    })
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

impl PolicyRule {
    /// The rule's compiled expressions with the part each belongs to: `when`, `expr`, then the
    /// `{{ }}` expressions of its message.
    pub fn expressions(&self) -> impl Iterator<Item = (RulePart, &CompiledExpr)> {
        let parts = [
            self.when.as_ref().map(|w| (RulePart::When, w)),
            Some((RulePart::Expr, &self.expr)),
        ];
        let message = self.message_parts.iter().filter_map(|p| match p {
            MessagePart::Expr(e) => Some((RulePart::Message, e)),
            MessagePart::Text(_) => None,
        });
        parts.into_iter().flatten().chain(message)
    }

    fn eval_bool(
        &self,
        expr: &CompiledExpr,
        part: RulePart,
        context: &cel::Context<'_, '_>,
    ) -> Result<bool, PolicyError> {
        match expr.execute(context) {
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
                MessagePart::Expr(expr) => match expr.execute(context) {
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
            if text.len() > MAX_POLICY_FILE_BYTES {
                return Err(PolicyError::Parse {
                    file: file.clone(),
                    message: format!(
                        "the file is {} bytes long; the limit is {MAX_POLICY_FILE_BYTES}",
                        text.len()
                    ),
                });
            }
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
                if seen.len() > MAX_RULES {
                    return Err(invalid(format!(
                        "the policy set has more than {MAX_RULES} rules"
                    )));
                }
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
}

/// Outcome of a rule in a verdict set, for comparisons (replay, tests).
pub fn outcome_word(verdict: Option<&Verdict>) -> &'static str {
    match verdict {
        None => "absent",
        Some(v) if v.passed => "pass",
        Some(_) => "fail",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::context::{QueueCounts, RunInputs};
    use crate::governance::expression::{
        check_source_limits, MAX_EXPRESSION_NESTING, MAX_EXPRESSION_OPERATORS,
    };
    use crate::governance::sample::{
        default_catalog, sample_draft, sample_enrichment, sample_program,
    };

    fn rule_file(expr: &str) -> Vec<(String, String)> {
        let expr = toml::Value::String(expr.to_string());
        vec![(
            "policies/hostile.toml".to_string(),
            format!(
                "# a hostile rule\n[[rule]]\nid = \"hostile\"\neffect = \"deny\"\nexpr = {expr}\nmessage = \"no\"\n"
            ),
        )]
    }

    fn load(expr: &str) -> Result<PolicySet, PolicyError> {
        PolicySet::from_sources(rule_file(expr), None)
    }

    /// Runs `f` on a thread with the stack of a tokio worker (2 MiB), where a run evaluates.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .expect("spawn")
            .join()
            .expect("no stack overflow")
    }

    #[test]
    fn huge_and_deep_expressions_are_refused_before_parsing() {
        let cases = [
            (
                format!("proposal.expected_relative_lift{}", " + 1".repeat(8_000)),
                "bytes long",
            ),
            (
                format!("proposal.expected_relative_lift{}", "+1".repeat(200)),
                "operators",
            ),
            (
                format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000)),
                "bytes long",
            ),
            (
                format!("{}true{}", "(".repeat(30), ")".repeat(30)),
                "nests brackets 30 deep",
            ),
            (format!("{}true", "!".repeat(1_000)), "operators"),
            (format!("{}1 > 0", "-".repeat(500)), "operators"),
        ];
        for (expr, expected) in cases {
            let err = on_small_stack(move || load(&expr).map(|_| ()).unwrap_err().to_string());
            assert!(
                err.starts_with("policies/hostile.toml:5: rule \"hostile\": expr is too large"),
                "{err}"
            );
            assert!(err.contains(expected), "{err}");
        }
        // Brackets and operators inside strings are text.
        let text = format!("proposal.title != '{}'", "((((+".repeat(100));
        assert!(load(&text).is_ok());
        assert!(load(r#"proposal.title != r'\' && proposal.title != "(\"(""#).is_ok());
    }

    /// The largest expression the limits let through evaluates on a small stack.
    #[test]
    fn the_largest_accepted_expression_evaluates_on_a_small_stack() {
        // `size(` `.` `>` and one `+` per term: exactly at the limit.
        let chain = format!(
            "size(proposal.title){} > 0",
            " + 1".repeat(MAX_EXPRESSION_OPERATORS - 3)
        );
        assert!(check_source_limits(&chain).is_ok());
        assert!(check_source_limits(&format!("{chain} + 1")).is_err());
        let nested = format!(
            "{}proposal.expected_relative_lift{} > 0.0",
            "(".repeat(MAX_EXPRESSION_NESTING),
            ")".repeat(MAX_EXPRESSION_NESTING)
        );
        for expr in [chain, nested] {
            let passed = on_small_stack(move || {
                let set = load(&expr).expect("within the limits");
                let catalog = default_catalog().unwrap();
                let run = RunInputs::new(&catalog, &sample_program());
                let context = PolicyContext::for_run(
                    &run,
                    &sample_draft(),
                    &sample_enrichment(),
                    &QueueCounts::default(),
                    chrono::Utc::now(),
                );
                set.evaluate(&context).expect("evaluates")[0].passed
            });
            assert!(passed);
        }
    }

    #[test]
    fn an_expensive_rule_fails_quickly_with_the_cost_limit() {
        let loops = "catalog.segment_names.all(a, ".repeat(8);
        let expr = format!("{loops}a != ''{}", ")".repeat(8));
        let set = load(&expr).expect("compiles");
        let catalog = default_catalog().unwrap();
        let run = RunInputs::new(&catalog, &sample_program());
        let context = PolicyContext::for_run(
            &run,
            &sample_draft(),
            &sample_enrichment(),
            &QueueCounts::default(),
            chrono::Utc::now(),
        );
        let started = std::time::Instant::now();
        let err = set.evaluate(&context).unwrap_err().to_string();
        assert!(
            err.contains("rule \"hostile\"") && err.contains("evaluation cost limit exceeded"),
            "{err}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // A list built by doubling is charged for its elements, so memory stays bounded too.
        let doubling = format!(
            "{}a.size() > 0{}",
            "[[1,2,3,4,5,6,7,8] + [1,2,3,4,5,6,7,8]].all(a, [a + a].all(a, [a + a].all(a, [a + a].all(a, ",
            "))))"
        );
        assert!(load(&doubling).is_ok());
        // Ordinary rules, the shipped ones included, stay far below the limit.
        let shipped = PolicySet::defaults().unwrap();
        assert!(shipped.evaluate(&context).is_ok());
        let set = load("catalog.segment_names.map(s, catalog.segments[s].name).filter(n, n != '').exists(n, n == proposal.segment) && [1, 2, 3].exists_one(x, x == 2) && catalog.segment_names.all(s, catalog.segments[s].daily_visitors >= 0)").unwrap();
        assert!(set.evaluate(&context).unwrap()[0].passed);
    }
}
