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

/// Longest accepted CEL expression, in bytes (the shipped ones are under 250).
pub const MAX_EXPRESSION_BYTES: usize = 2_048;
/// Deepest accepted nesting of brackets in an expression.
pub const MAX_EXPRESSION_NESTING: usize = 24;
/// Most operators, calls, field selections and indexes in one expression: each is a level of
/// the parser's recursion when they chain (`a + a + ... + a`).
pub const MAX_EXPRESSION_OPERATORS: usize = 128;
/// Deepest accepted expression tree after parsing (macros expand a little).
pub const MAX_EXPRESSION_DEPTH: usize = 160;
/// Work one evaluation of one rule part may do, in units: one per value an operator, call or
/// loop step makes, plus one per element of a list or map it makes, plus one per 32 bytes of a
/// string. A rule over the catalog and a proposal needs a few hundred.
pub const MAX_EVALUATION_COST: u64 = 100_000;
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

/// A compiled CEL expression with its source, and the form that is evaluated: the same tree
/// with every value-making node wrapped in the cost meter ([`cost`]).
#[derive(Debug)]
pub struct CompiledExpr {
    pub source: String,
    program: Program,
    metered: IdedExpr,
}

impl CompiledExpr {
    /// Evaluates within [`MAX_EVALUATION_COST`]: a rule that would do more fails with an error
    /// (and so never passes) instead of running for minutes.
    fn execute(&self, context: &cel::Context<'_, '_>) -> cel::ResolveResult {
        cost::reset(MAX_EVALUATION_COST);
        let result = Value::resolve(&self.metered, context);
        cost::reset(u64::MAX);
        result
    }
}

/// The evaluation cost meter. The cel crate has no budget of its own, so each compiled
/// expression is rewritten once: every call, list, map and comprehension result passes through
/// [`cost::FUNCTION`], which charges for the value it makes against a per-thread budget and
/// fails the evaluation when the budget is spent. Comprehension loop steps keep the shape the
/// interpreter optimises (`@result + [x]`, `@result && p`) with their inner values metered, so
/// every iteration costs at least one unit.
pub mod cost {
    use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, ListExpr};
    use cel::{ExecutionError, FunctionContext, Value};
    use std::cell::Cell;

    /// The meter's name: `@` cannot be written in CEL source, so no rule can call it.
    pub const FUNCTION: &str = "@hypod_cost";

    thread_local! {
        static REMAINING: Cell<u64> = const { Cell::new(u64::MAX) };
    }

    /// Sets this thread's budget for the next evaluation.
    pub fn reset(budget: u64) {
        REMAINING.with(|r| r.set(budget));
    }

    fn size(value: &Value) -> u64 {
        match value {
            Value::List(items) => items.len() as u64,
            Value::Map(map) => map.map.len() as u64,
            Value::String(text) => text.len() as u64 / 32,
            Value::Bytes(bytes) => bytes.len() as u64 / 32,
            _ => 0,
        }
    }

    /// The meter: passes its argument through, charging for it.
    pub fn charge(ftx: &FunctionContext, value: Value) -> Result<Value, ExecutionError> {
        let price = 1 + size(&value);
        REMAINING.with(|remaining| {
            let left = remaining.get();
            if left < price {
                remaining.set(0);
                Err(ftx.error(format!(
                    "evaluation cost limit exceeded: more than {} units of work (one per value made, list element or 32 bytes of text); loop over fewer or smaller lists",
                    super::MAX_EVALUATION_COST
                )))
            } else {
                remaining.set(left - price);
                Ok(value)
            }
        })
    }

    fn wrap(expr: IdedExpr) -> IdedExpr {
        if matches!(&expr.expr, Expr::Call(call) if call.func_name == FUNCTION) {
            return expr;
        }
        IdedExpr {
            id: expr.id,
            expr: Expr::Call(CallExpr {
                func_name: FUNCTION.to_string(),
                target: None,
                args: vec![expr],
            }),
        }
    }

    /// The expression with its value-making nodes metered.
    pub fn meter(expr: &IdedExpr) -> IdedExpr {
        let id = expr.id;
        let rebuilt = |e: Expr| IdedExpr { id, expr: e };
        match &expr.expr {
            Expr::Call(call) => wrap(rebuilt(Expr::Call(CallExpr {
                func_name: call.func_name.clone(),
                target: call.target.as_ref().map(|t| Box::new(meter(t))),
                args: call.args.iter().map(meter).collect(),
            }))),
            Expr::List(list) => wrap(rebuilt(Expr::List(ListExpr {
                elements: list.elements.iter().map(meter).collect(),
                optional_indices: list.optional_indices.clone(),
            }))),
            Expr::Map(map) => {
                let mut map = map.clone();
                for entry in &mut map.entries {
                    if let EntryExpr::MapEntry(entry) = &mut entry.expr {
                        entry.key = meter(&entry.key);
                        entry.value = meter(&entry.value);
                    }
                }
                wrap(rebuilt(Expr::Map(map)))
            }
            Expr::Struct(structure) => {
                let mut structure = structure.clone();
                for entry in &mut structure.entries {
                    if let EntryExpr::StructField(field) = &mut entry.expr {
                        field.value = meter(&field.value);
                    }
                }
                wrap(rebuilt(Expr::Struct(structure)))
            }
            Expr::Select(select) => {
                let mut select = select.clone();
                select.operand = Box::new(meter(&select.operand));
                rebuilt(Expr::Select(select))
            }
            Expr::Comprehension(c) => {
                let loop_cond = match &c.loop_cond.expr {
                    // map/filter keep a literal condition (the interpreter's fast path).
                    Expr::Literal(_) => c.loop_cond.clone(),
                    _ => meter(&c.loop_cond),
                };
                wrap(rebuilt(Expr::Comprehension(Box::new(ComprehensionExpr {
                    iter_range: meter(&c.iter_range),
                    iter_var: c.iter_var.clone(),
                    iter_var2: c.iter_var2.clone(),
                    accu_var: c.accu_var.clone(),
                    accu_init: meter(&c.accu_init),
                    loop_cond,
                    loop_step: step(&c.loop_step, &c.accu_var),
                    result: meter(&c.result),
                }))))
            }
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => expr.clone(),
        }
    }

    /// A comprehension's loop step: the accumulating shape kept, what it adds metered.
    fn step(expr: &IdedExpr, accu: &str) -> IdedExpr {
        let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(name) if name == accu);
        let rebuilt = |call: &CallExpr, args: Vec<IdedExpr>| IdedExpr {
            id: expr.id,
            expr: Expr::Call(CallExpr {
                func_name: call.func_name.clone(),
                target: None,
                args,
            }),
        };
        match &expr.expr {
            Expr::Ident(name) if name == accu => expr.clone(),
            Expr::Call(call) if call.target.is_none() => {
                match (call.func_name.as_str(), call.args.as_slice()) {
                    ("_&&_" | "_||_", [first, second]) if is_accu(first) => {
                        rebuilt(call, vec![first.clone(), wrap(meter(second))])
                    }
                    ("_+_", [first, second]) if is_accu(first) => match &second.expr {
                        Expr::List(list) => {
                            let items = IdedExpr {
                                id: second.id,
                                expr: Expr::List(ListExpr {
                                    elements: list
                                        .elements
                                        .iter()
                                        .map(|e| wrap(meter(e)))
                                        .collect(),
                                    optional_indices: list.optional_indices.clone(),
                                }),
                            };
                            rebuilt(call, vec![first.clone(), items])
                        }
                        _ => wrap(meter(expr)),
                    },
                    ("_?_:_", [guard, then, otherwise]) => rebuilt(
                        call,
                        vec![wrap(meter(guard)), step(then, accu), step(otherwise, accu)],
                    ),
                    _ => wrap(meter(expr)),
                }
            }
            _ => wrap(meter(expr)),
        }
    }
}

/// The depth of an expression tree, without recursion.
fn tree_depth<'a>(expr: &'a IdedExpr) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&'a IdedExpr, usize)> = vec![(expr, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        let mut push = |child: &'a IdedExpr| stack.push((child, depth + 1));
        match &node.expr {
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    push(target);
                }
                call.args.iter().for_each(&mut push);
            }
            Expr::Select(select) => push(&select.operand),
            Expr::List(list) => list.elements.iter().for_each(&mut push),
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(entry) = &entry.expr {
                        push(&entry.key);
                        push(&entry.value);
                    }
                }
            }
            Expr::Struct(structure) => {
                for entry in &structure.entries {
                    if let EntryExpr::StructField(field) = &entry.expr {
                        push(&field.value);
                    }
                }
            }
            Expr::Comprehension(c) => {
                for child in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    push(child);
                }
            }
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    deepest
}

/// Size limits checked on the source text before the CEL parser sees it: the parser and the
/// interpreter recurse once per nesting level and per chained operator, so an expression of
/// thousands of `+` overflowed the stack. String literals are skipped (their brackets and
/// operators are text).
pub fn check_source_limits(source: &str) -> Result<(), String> {
    if source.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "it is {} bytes long; the limit is {MAX_EXPRESSION_BYTES} (split it into several rules)",
            source.len()
        ));
    }
    let chars: Vec<char> = source.chars().collect();
    let (mut depth, mut deepest, mut operators) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            // A raw string (r'..', rb'..') has no escapes: look at the letters just before it.
            let mut j = i;
            let mut raw = false;
            while j > 0 && chars[j - 1].is_ascii_alphabetic() {
                j -= 1;
                raw |= matches!(chars[j], 'r' | 'R');
            }
            let triple = i + 2 < chars.len() && chars[i + 1] == c && chars[i + 2] == c;
            let mut k = if triple { i + 3 } else { i + 1 };
            loop {
                if k >= chars.len() {
                    break;
                }
                if chars[k] == '\\' && !raw {
                    k += 2;
                    continue;
                }
                if chars[k] == c
                    && (!triple || (k + 2 < chars.len() && chars[k + 1] == c && chars[k + 2] == c))
                {
                    k += if triple { 3 } else { 1 };
                    break;
                }
                k += 1;
            }
            i = k;
            continue;
        }
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
                operators += 1;
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '+' | '-' | '*' | '/' | '%' | '<' | '>' | '=' | '!' | '&' | '|' | '?' | '.' | ',' => {
                operators += 1
            }
            _ => {}
        }
        i += 1;
    }
    if deepest > MAX_EXPRESSION_NESTING {
        return Err(format!(
            "it nests brackets {deepest} deep; the limit is {MAX_EXPRESSION_NESTING}"
        ));
    }
    if operators > MAX_EXPRESSION_OPERATORS {
        return Err(format!(
            "it has {operators} operators, calls, selections and indexes; the limit is {MAX_EXPRESSION_OPERATORS} (split it into several rules)"
        ));
    }
    Ok(())
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
    let too_large = |message: String| PolicyError::TooLarge {
        file: file.into(),
        rule: rule.into(),
        part,
        file_line,
        message,
    };
    check_source_limits(source).map_err(too_large)?;
    match Program::compile(source) {
        Ok(program) => {
            let depth = tree_depth(program.expression());
            if depth > MAX_EXPRESSION_DEPTH {
                return Err(too_large(format!(
                    "its expression tree is {depth} levels deep; the limit is {MAX_EXPRESSION_DEPTH}"
                )));
            }
            Ok(CompiledExpr {
                source: source.to_string(),
                metered: cost::meter(program.expression()),
                program,
            })
        }
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

    /// `policy check`: lints every rule. Fields are checked against a sample context (a sample
    /// proposal, this catalog and `program`), and every rule is run against the sample
    /// proposals ([`sample::sample_proposals`]: every moment, rendering, risk and segment of
    /// the catalog, with and without optional fields), so an unknown field, a type error, a
    /// non-boolean result or a rule that no proposal can pass shows before a run.
    pub fn check(&self, catalog: &Catalog, program: &ProgramHealth) -> Vec<Lint> {
        let mut lints = Vec::new();
        let run = RunInputs::new(catalog, program);
        let now = chrono::Utc::now();
        let samples = sample::sample_proposals(catalog);
        let contexts: Vec<(&str, PolicyContext)> = samples
            .iter()
            .map(|sample| {
                let mut queue = QueueCounts::default();
                if sample.busy_queue {
                    queue.record_queued(&sample.draft);
                }
                (
                    sample.label.as_str(),
                    PolicyContext::for_run(&run, &sample.draft, &sample.enrichment, &queue, now),
                )
            })
            .collect();
        let Some(schema) = contexts
            .iter()
            .rev()
            .find(|(_, c)| c.to_json()["proposal"]["duplicate_of"] != Json::Null)
            .or(contexts.first())
            .map(|(_, c)| c.to_json())
        else {
            return lints;
        };
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
            let found_statically = lints
                .iter()
                .any(|l| l.severity == Severity::Error && l.rule.as_deref() == Some(&rule.id));
            if found_statically {
                continue;
            }
            // (message, first sample it happened on, how many samples)
            let mut errors: Vec<(String, &str, usize)> = Vec::new();
            let (mut applied, mut failed) = (0usize, 0usize);
            for (label, context) in &contexts {
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

#[cfg(test)]
mod tests {
    use super::*;
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
