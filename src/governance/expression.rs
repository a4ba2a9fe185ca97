//! Bounded CEL: the one way hypod compiles and evaluates a CEL expression. This module owns the
//! size limits checked on the source before the parser sees it (bytes, bracket nesting,
//! operators) and on the tree after it (depth), the evaluation cost meter that stops a rule
//! doing too much work, and how a CEL value reads in a message or an error. It knows nothing of
//! policy files or rules: `policy` compiles rules with it, `context` registers the meter.

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::{Program, Value};

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

/// A compiled CEL expression with its source, and the form that is evaluated: the same tree
/// with every value-making node wrapped in the cost meter ([`cost`]).
#[derive(Debug)]
pub struct CompiledExpr {
    pub source: String,
    program: Program,
    metered: IdedExpr,
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum CompileError {
    /// Over a size limit, before or after parsing (the message says which and the limit).
    TooLarge(String),
    /// The parser's first complaint, at a line and column of the expression.
    Syntax {
        line: isize,
        column: isize,
        message: String,
    },
}

impl CompiledExpr {
    /// Compiles `source` within the limits: the source limits ([`check_source_limits`]) before
    /// the parser runs, the tree depth ([`MAX_EXPRESSION_DEPTH`]) after; the tree is metered once.
    pub fn compile(source: &str) -> Result<CompiledExpr, CompileError> {
        check_source_limits(source).map_err(CompileError::TooLarge)?;
        match Program::compile(source) {
            Ok(program) => {
                let depth = tree_depth(program.expression());
                if depth > MAX_EXPRESSION_DEPTH {
                    return Err(CompileError::TooLarge(format!(
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
                Err(CompileError::Syntax {
                    line: first.map(|e| e.pos.0).unwrap_or(0),
                    column: first.map(|e| e.pos.1).unwrap_or(0),
                    message: first
                        .map(|e| e.msg.clone())
                        .unwrap_or_else(|| errors.to_string()),
                })
            }
        }
    }

    /// The parsed program (its tree and the variables it references), for static checks.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Evaluates within [`MAX_EVALUATION_COST`]: a rule that would do more fails with an error
    /// (and so never passes) instead of running for minutes.
    pub fn execute(&self, context: &cel::Context<'_, '_>) -> cel::ResolveResult {
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

/// The kind of a CEL value, as an error names it ("a list", "an int").
pub fn type_name(value: &Value) -> &'static str {
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
