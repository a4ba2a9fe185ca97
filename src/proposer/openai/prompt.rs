//! The prompt: what the model is told, rendered from two minijinja templates (`system.j2`,
//! `user.j2`). This module owns the templates (embedded defaults, overridable per file from a
//! `prompts/` directory), the variables they receive, the evidence selection that keeps the
//! prompt within `prompt_token_budget`, the token estimate, and the digests recorded as
//! provenance.
//!
//! Everything taken from the program's records (experiment names, hypotheses, notes, ids,
//! segment and lever names, reviewers' reasons) reaches the model only as JSON, one record per
//! line, inside `<data>` blocks that the system prompt declares to be data, never instructions;
//! free text is whitespace-collapsed and cut to a few hundred characters, and `<`, `>`, `&` are
//! JSON-escaped so that no record can close its block.
//!
//! Token estimate: `ceil(ascii_chars / 3) + non_ascii_chars` per message plus 4 per message
//! ([`estimate_tokens`]). BPE tokenizers average about 4 characters per token on English prose
//! and about 3 on JSON full of ids and numbers; one token per non-ASCII character covers scripts
//! that tokenize per character. The estimate errs high, so a prompt within the budget by the
//! estimate is within it on the server.

use super::config::{LlmConfig, StructuredOutput};
use super::schema::{schema_for_run, with_length_bounds, SCHEMA_NAME};
use crate::analysis::{ExperimentAnalysis, Outcome, ProgramHealth};
use crate::history::{Decision, Experiment, Moment};
use crate::proposer::{ProposalContext, ProposerError};
use async_openai::types::chat::{ResponseFormat, ResponseFormatJsonSchema};
use chrono::NaiveDate;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The default system template, compiled into the binary (an installed hypod needs no files).
pub const DEFAULT_SYSTEM_TEMPLATE: &str = include_str!("../../../prompts/system.j2");
/// The default user template.
pub const DEFAULT_USER_TEMPLATE: &str = include_str!("../../../prompts/user.j2");
pub const SYSTEM_TEMPLATE_FILE: &str = "system.j2";
pub const USER_TEMPLATE_FILE: &str = "user.j2";

/// Templates larger than this are refused (they are prompts, not data).
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;
/// Per-message overhead of chat templates (role markers), in tokens.
const MESSAGE_OVERHEAD_TOKENS: usize = 4;
/// Tokens kept free for the per-moment headings of the evidence section.
const EVIDENCE_HEADING_TOKENS: usize = 30;
/// Bounds of free text quoted from the records.
const NAME_CHARS: usize = 80;
const HYPOTHESIS_CHARS: usize = 160;
const NOTES_CHARS: usize = 160;
const REASON_CHARS: usize = 240;
/// Catalog descriptions are written for people; the model gets their first words.
const DESCRIPTION_CHARS: usize = 80;
/// Caps on the short lists, whatever the budget.
const MAX_RUNNING: usize = 40;
const MAX_OPEN: usize = 40;
const MAX_REJECTIONS: usize = 20;
const MAX_IDS_IN_HEALTH: usize = 5;
/// Lever × moment rows of the lever table, at most (the best expectations first).
const MAX_LEVER_ROWS: usize = 60;
/// Tokens the lever table may always take beyond each moment's first experiment (about eight
/// rows), even when a fifth of the room would be less: a small budget keeps the pooled
/// evidence rather than one more experiment's record.
const MIN_LEVER_TOKENS: usize = 400;

/// Estimated tokens of a text (see the module comment).
pub fn estimate_tokens(text: &str) -> usize {
    let (ascii, other) = text.chars().fold((0usize, 0usize), |(a, o), c| {
        if c.is_ascii() {
            (a + 1, o)
        } else {
            (a, o + 1)
        }
    });
    ascii.div_ceil(3) + other
}

/// Estimated tokens of a list of chat messages.
pub fn estimate_message_tokens<'a>(messages: impl IntoIterator<Item = &'a str>) -> usize {
    messages
        .into_iter()
        .map(|m| estimate_tokens(m) + MESSAGE_OVERHEAD_TOKENS)
        .sum()
}

/// A policy rule in plain words, for the prompt (`[deny] commercial-kpi: Engagement is not a KPI`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySummary {
    pub id: String,
    /// `deny`, `escalate` or `warn`.
    pub effect: String,
    pub message: String,
}

impl PolicySummary {
    fn line(&self) -> String {
        format!(
            "[{}] {}: {}",
            bound_text(&self.effect, 16),
            bound_text(&self.id, 64),
            bound_text(&self.message, REASON_CHARS)
        )
    }
}

/// Reads `id`, `effect` and `description` (else `message`) of every `[[rule]]` in `DIR/*.toml`
/// (except `catalog.toml`), for the prompt only: governance compiles and enforces the rules
/// itself, so a file this cannot read is skipped here, not reported. (The binary takes the
/// summaries from the loaded policy set instead, which also covers the built-in defaults.)
pub fn policy_summaries_from_dir(dir: &Path) -> Vec<PolicySummary> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && p.file_name().is_some_and(|n| n != "catalog.toml")
        })
        .collect();
    files.sort();
    let mut summaries = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(value) = text.parse::<toml::Table>() else {
            continue;
        };
        let Some(rules) = value.get("rule").and_then(toml::Value::as_array) else {
            continue;
        };
        for rule in rules {
            let field = |key: &str| {
                rule.get(key)
                    .and_then(toml::Value::as_str)
                    .map(str::to_string)
            };
            let text = field("description")
                .filter(|d| !d.trim().is_empty())
                .or_else(|| field("message"));
            if let (Some(id), Some(message)) = (field("id"), text) {
                summaries.push(PolicySummary {
                    id,
                    effect: field("effect").unwrap_or_else(|| "deny".into()),
                    message,
                });
            }
        }
    }
    summaries
}

/// The two templates and where they came from.
#[derive(Debug, Clone)]
pub struct Templates {
    pub system: String,
    pub user: String,
    /// `embedded` or the file's path, per template.
    pub system_origin: String,
    pub user_origin: String,
}

impl Templates {
    pub fn embedded() -> Templates {
        Templates {
            system: DEFAULT_SYSTEM_TEMPLATE.to_string(),
            user: DEFAULT_USER_TEMPLATE.to_string(),
            system_origin: "embedded".into(),
            user_origin: "embedded".into(),
        }
    }

    /// The templates of `dir` where it has them, the embedded defaults otherwise (per file).
    pub fn load(dir: Option<&Path>) -> Result<Templates, ProposerError> {
        let mut templates = Templates::embedded();
        let Some(dir) = dir else {
            return Ok(templates);
        };
        for (file, source, origin) in [
            (
                SYSTEM_TEMPLATE_FILE,
                &mut templates.system,
                &mut templates.system_origin,
            ),
            (
                USER_TEMPLATE_FILE,
                &mut templates.user,
                &mut templates.user_origin,
            ),
        ] {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            let size = std::fs::metadata(&path)
                .map_err(|e| ProposerError::Prompt(format!("{}: {e}", path.display())))?
                .len();
            if size > MAX_TEMPLATE_BYTES {
                return Err(ProposerError::Prompt(format!(
                    "{}: {size} bytes is more than a template may have ({MAX_TEMPLATE_BYTES})",
                    path.display()
                )));
            }
            *source = std::fs::read_to_string(&path)
                .map_err(|e| ProposerError::Prompt(format!("{}: {e}", path.display())))?;
            *origin = path.display().to_string();
        }
        Ok(templates)
    }

    /// sha256 of both template sources: the "prompt template digest" of provenance.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        for (name, source) in [
            (SYSTEM_TEMPLATE_FILE, &self.system),
            (USER_TEMPLATE_FILE, &self.user),
        ] {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update((source.len() as u64).to_be_bytes());
            hasher.update(source.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    fn environment(&self) -> Result<Environment<'_>, ProposerError> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        for (name, source, origin) in [
            (SYSTEM_TEMPLATE_FILE, &self.system, &self.system_origin),
            (USER_TEMPLATE_FILE, &self.user, &self.user_origin),
        ] {
            env.add_template(name, source)
                .map_err(|e| ProposerError::Prompt(format!("{origin}: {e:#}")))?;
        }
        Ok(env)
    }
}

/// How much of each list made it into the prompt.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Selection {
    pub evidence_shown: usize,
    pub evidence_total: usize,
    /// The experiments shown as evidence, in prompt order.
    pub evidence_ids: Vec<String>,
    pub running_shown: usize,
    pub running_total: usize,
    pub open_shown: usize,
    pub open_total: usize,
    pub rejections_shown: usize,
    pub rejections_total: usize,
    /// Rows of the lever knowledge base (lever × moment) shown, of all there are.
    pub levers_shown: usize,
    pub levers_total: usize,
}

/// The exact messages a run sends first, with what provenance records about them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedPrompt {
    pub system: String,
    pub user: String,
    /// sha256 of the template sources.
    pub template_digest: String,
    /// sha256 of the exact request input: model, messages and response format.
    pub input_digest: String,
    /// Estimated prompt tokens (see [`estimate_tokens`]).
    pub estimated_tokens: usize,
    pub token_budget: usize,
    pub model: String,
    /// The `response_format` the request carries (its schema lists the ids and names the model
    /// may use, see `schema::schema_for_run`).
    pub response_format: Value,
    /// The answer's schema for this run.
    pub schema: Value,
    pub selection: Selection,
    pub system_template: String,
    pub user_template: String,
}

/// The messages the next run would send, with the embedded or `prompts_dir` templates and
/// without policy summaries (see [`render_messages_with_policies`]).
pub fn render_messages(
    ctx: &ProposalContext<'_>,
    config: &LlmConfig,
    prompts_dir: Option<&Path>,
) -> Result<RenderedPrompt, ProposerError> {
    render_messages_with_policies(ctx, config, prompts_dir, &[])
}

/// [`render_messages`] with the policy set in plain words.
pub fn render_messages_with_policies(
    ctx: &ProposalContext<'_>,
    config: &LlmConfig,
    prompts_dir: Option<&Path>,
    policies: &[PolicySummary],
) -> Result<RenderedPrompt, ProposerError> {
    let templates = Templates::load(prompts_dir)?;
    render_with(ctx, config, &templates, policies)
}

/// The `response_format` of a request under the configured structured-output mode.
pub fn response_format(config: &LlmConfig, schema: &Value) -> ResponseFormat {
    match config.structured_output {
        StructuredOutput::JsonSchema => ResponseFormat::JsonSchema {
            json_schema: ResponseFormatJsonSchema {
                description: Some(
                    "Experiment proposals for an ecommerce personalization program".into(),
                ),
                name: SCHEMA_NAME.into(),
                schema: schema.clone(),
                strict: Some(true),
            },
        },
        StructuredOutput::JsonObject => ResponseFormat::JsonObject,
    }
}

/// sha256 over the canonical JSON of model, messages and response format.
pub fn input_digest(model: &str, system: &str, user: &str, response_format: &Value) -> String {
    let canonical = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ],
        "response_format": response_format,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// A schema without its `description`s: the copy in a JSON-mode prompt, where they would cost
/// half its tokens and repeat what the system prompt says about a good proposal.
fn without_descriptions(schema: &Value) -> Value {
    match schema {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .filter(|(key, value)| !(key.as_str() == "description" && value.is_string()))
                .map(|(key, value)| (key.clone(), without_descriptions(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_descriptions).collect()),
        other => other.clone(),
    }
}

/// `value` without null, empty-string and empty-list fields (they cost tokens and say nothing).
fn compact(value: Value) -> Value {
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

/// How relevant a concluded experiment is as evidence for the next proposals: the strength of
/// what it shows (proven > disproven > inconclusive, with a bonus for an underpowered
/// inconclusive test worth re-testing and for a shipped rule never proven), discounted by age
/// (half-life one year) and for a non-commercial KPI. Untrusted results rank last.
pub fn relevance(
    experiment: &Experiment,
    analysis: Option<&ExperimentAnalysis>,
    today: NaiveDate,
) -> f64 {
    let Some(analysis) = analysis else {
        return 0.01;
    };
    let mut score = match analysis.outcome {
        Outcome::Proven => 1.0,
        Outcome::Disproven => 0.6,
        Outcome::Inconclusive => {
            if analysis.primary.power.is_some_and(|p| p < 0.5) {
                0.55
            } else {
                0.4
            }
        }
        Outcome::Invalid => 0.1,
        Outcome::NotComputable => 0.05,
        Outcome::Running => 0.0,
    };
    if experiment.decision == Some(Decision::Ship) && analysis.outcome != Outcome::Proven {
        score += 0.25;
    }
    if !experiment.has_commercial_kpi() {
        score *= 0.6;
    }
    let age_factor = match experiment.reference_date() {
        Some(date) => {
            let days = (today - date).num_days().max(0) as f64;
            0.5f64.powf(days / 365.0)
        }
        None => 0.4,
    };
    score * age_factor
}

fn evidence_line(experiment: &Experiment, analysis: Option<&ExperimentAnalysis>) -> String {
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
    if let Some(a) = analysis {
        put("outcome", json!(a.outcome.as_str()));
        let p = &a.primary;
        put("lift", json!(p.relative_lift.map(|x| round_to(x, 3))));
        if let (Some(low), Some(high)) = (p.ci_low, p.ci_high) {
            put("ci", json!([round_to(low, 3), round_to(high, 3)]));
        }
        put("p", json!(p.p_value.map(|x| significant(x, 2))));
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

fn health_lines(health: &ProgramHealth) -> Vec<String> {
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
/// plain words with the catalog's names. KPIs, latency budgets and the proposal limits are stated
/// elsewhere in the prompt.
fn consent_rule_lines(ctx: &ProposalContext<'_>) -> Vec<String> {
    let catalog = ctx.catalog;
    let mut lines = vec![
        "every signal must be a catalog signal that is not sensitive; unknown or sensitive signals block the proposal".to_string(),
        "consent_purposes must list every purpose that the proposal's signals require, and the segment must have consent coverage for them (the expected duration uses only the consented share of its traffic)".into(),
    ];
    let logged_in: Vec<&str> = catalog
        .signals
        .iter()
        .filter(|s| s.identity == crate::governance::catalog::IdentityRequirement::LoggedIn)
        .map(|s| s.name.as_str())
        .collect();
    if !logged_in.is_empty() {
        lines.push(format!(
            "signals bound to an identity ({}) need a segment whose identity is logged_in",
            logged_in.join(", ")
        ));
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

/// The lever knowledge base as compact rows, one per lever × moment, best expectation first:
/// `{"lever", "moment", "k", "proven", "pooled", "ci": [low, high], "i2", "expect"}` (relative
/// lifts, three significant digits), where `expect` is the pooled effect shrunk toward the
/// lever's pool: the lift a proposal there should expect.
/// Levers whose failed transfers are listed to the model, at most.
const MAX_FAILED_TRANSFER_LINES: usize = 10;

/// What the program learnt, most useful first: reviewers' rejections per strategy with their
/// most frequent reasons, the track record of hypod's own proposals beside the rest of the
/// program, and the levers whose transfers failed. Reviewer text is quoted data.
fn learning_lines(ctx: &ProposalContext<'_>) -> Vec<String> {
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

fn lever_lines(levers: &crate::analysis::LeverBase) -> (Vec<String>, usize) {
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

#[derive(Serialize)]
struct EvidenceGroup {
    moment: &'static str,
    items: Vec<String>,
}

#[derive(Serialize)]
struct Vars {
    today: String,
    max_proposals: usize,
    per_moment: usize,
    health: Vec<String>,
    commercial_kpis: Vec<String>,
    latency_budgets: Vec<String>,
    segments: Vec<String>,
    signals: Vec<String>,
    purposes: Vec<String>,
    policies: Vec<String>,
    running: Vec<String>,
    running_total: usize,
    open_proposals: Vec<String>,
    open_total: usize,
    rejections: Vec<String>,
    learning: Vec<String>,
    levers: Vec<String>,
    levers_total: usize,
    evidence: Vec<EvidenceGroup>,
    evidence_shown: usize,
    evidence_total: usize,
    schema: Option<String>,
}

/// Takes lines in order while they fit in `budget` tokens; returns how many were taken.
fn take_within(lines: &[String], budget: usize) -> usize {
    let mut used = 0;
    for (i, line) in lines.iter().enumerate() {
        let cost = estimate_tokens(line) + 1;
        if used + cost > budget {
            return i;
        }
        used += cost;
    }
    lines.len()
}

/// Renders the prompt with `templates`, selecting the evidence that fits the budget.
pub fn render_with(
    ctx: &ProposalContext<'_>,
    config: &LlmConfig,
    templates: &Templates,
    policies: &[PolicySummary],
) -> Result<RenderedPrompt, ProposerError> {
    let env = templates.environment()?;
    let today = ctx.now.date_naive();
    let analyses: HashMap<&str, &ExperimentAnalysis> = ctx
        .analysis
        .experiments
        .iter()
        .map(|a| (a.id.as_str(), a))
        .collect();
    let catalog = ctx.catalog;

    // Short lists, most recent first, capped.
    let mut running: Vec<&Experiment> = ctx.experiments.iter().filter(|e| e.is_running()).collect();
    running.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.id.cmp(&b.id)));
    let running_lines: Vec<String> = running
        .iter()
        .take(MAX_RUNNING)
        .map(|e| running_line(e))
        .collect();
    let open_lines: Vec<String> = ctx
        .open_proposals
        .iter()
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
        .collect();
    let rejection_lines: Vec<String> = ctx
        .recent_rejections
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
        .collect();

    let learning_lines = learning_lines(ctx);

    // Evidence: concluded experiments ranked per moment, then taken round-robin across moments
    // so that every moment is represented whatever the budget.
    let mut per_moment: Vec<(Moment, Vec<(f64, &Experiment)>)> =
        Moment::ALL.iter().map(|m| (*m, Vec::new())).collect();
    for experiment in ctx.experiments.iter().filter(|e| !e.is_running()) {
        let score = relevance(
            experiment,
            analyses.get(experiment.id.as_str()).copied(),
            today,
        );
        if let Some((_, list)) = per_moment.iter_mut().find(|(m, _)| *m == experiment.moment) {
            list.push((score, experiment));
        }
    }
    let evidence_total: usize = per_moment.iter().map(|(_, l)| l.len()).sum();
    for (_, list) in per_moment.iter_mut() {
        list.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    }

    let (lever_rows, levers_total) = lever_lines(&ctx.analysis.levers);
    let mut vars = Vars {
        today: today.to_string(),
        max_proposals: ctx.max_proposals,
        per_moment: ctx.per_moment,
        health: health_lines(&ctx.analysis.program),
        commercial_kpis: catalog.commercial_kpis.clone(),
        latency_budgets: catalog
            .latency_budget_ms
            .iter()
            .map(|(mode, ms)| format!("{mode} {ms} ms"))
            .collect(),
        segments: catalog
            .segments
            .iter()
            .map(|s| {
                quote(&compact(json!({
                    "name": s.name,
                    "identity": s.identity,
                    "region": s.region,
                    "daily_visitors": s.daily_visitors,
                    "consent": s.consent,
                    "description": bound_text(&s.description, DESCRIPTION_CHARS),
                })))
            })
            .collect(),
        signals: catalog
            .signals
            .iter()
            .filter(|s| !s.sensitive)
            .map(|s| {
                let identity = (s.identity
                    == crate::governance::catalog::IdentityRequirement::LoggedIn)
                    .then_some("logged_in");
                quote(&compact(json!({
                    "name": s.name,
                    "purposes": s.purposes,
                    "identity": identity,
                    "restricted_regions": s.restricted_regions,
                    "description": bound_text(&s.description, DESCRIPTION_CHARS),
                })))
            })
            .collect(),
        purposes: catalog
            .purposes
            .iter()
            .map(|p| {
                // Purpose descriptions map to consent platforms (TCF, Consent Mode): nothing
                // the model needs beyond the name.
                quote(&compact(json!({ "name": p.name })))
            })
            .collect(),
        policies: consent_rule_lines(ctx)
            .into_iter()
            .chain(policies.iter().map(PolicySummary::line))
            .collect(),
        running: Vec::new(),
        running_total: running.len(),
        open_proposals: Vec::new(),
        open_total: ctx.open_proposals.len(),
        rejections: Vec::new(),
        learning: Vec::new(),
        levers: Vec::new(),
        levers_total,
        evidence: Vec::new(),
        evidence_shown: 0,
        evidence_total,
        schema: None,
    };

    let render = |vars: &Vars| -> Result<(String, String, usize), ProposerError> {
        let render_one = |name: &str, origin: &str| {
            env.get_template(name)
                .and_then(|t| t.render(vars))
                .map_err(|e| ProposerError::Prompt(format!("{origin}: {e:#}")))
        };
        let system = render_one(SYSTEM_TEMPLATE_FILE, &templates.system_origin)?;
        let user = render_one(USER_TEMPLATE_FILE, &templates.user_origin)?;
        let tokens = estimate_message_tokens([system.as_str(), user.as_str()]);
        Ok((system, user, tokens))
    };

    let budget = config.prompt_token_budget;
    // In JSON mode the schema is part of the prompt, and it lists the evidence ids shown.
    let in_prompt = config.structured_output == StructuredOutput::JsonObject;
    if in_prompt {
        let mut schema = schema_for_run(&[], catalog);
        if config.accepts_bounds() {
            schema = with_length_bounds(&schema, ctx.max_proposals);
        }
        vars.schema = Some(quote(&without_descriptions(&schema)));
    }
    let (_, _, base_tokens) = render(&vars)?;
    if base_tokens + EVIDENCE_HEADING_TOKENS > budget {
        return Err(ProposerError::Prompt(format!(
            "prompt_token_budget = {budget} is too small: without any experiment the prompt already needs about {base_tokens} tokens (instructions, health, catalog, policies{}); raise it to at least {}",
            if vars.schema.is_some() { ", schema" } else { "" },
            base_tokens + 1_000
        )));
    }
    let mut remaining = budget - base_tokens - EVIDENCE_HEADING_TOKENS;
    // The lever table before the evidence: pooled knowledge is worth more per token than one
    // experiment's record.
    // It never takes the room of each moment's first experiment (every moment stays shown).
    let first_records: usize = per_moment
        .iter()
        .filter_map(|(_, list)| list.first())
        .map(|(_, e)| estimate_tokens(&evidence_line(e, analyses.get(e.id.as_str()).copied())) + 1)
        .sum();
    // The running experiments, open proposals, rejections and learning lines take at most
    // 55 % of what the lever table leaves: the floor keeps room for the first records after
    // them too.
    let beyond_first = remaining.saturating_sub(first_records);
    let protected = first_records * 20 / 9 + 1;
    let lever_room =
        (beyond_first / 5).max(MIN_LEVER_TOKENS.min(remaining.saturating_sub(protected)));
    let levers_taken = take_within(&lever_rows, lever_room);
    vars.levers = lever_rows[..levers_taken].to_vec();
    remaining = remaining.saturating_sub(
        vars.levers
            .iter()
            .map(|l| estimate_tokens(l) + 1)
            .sum::<usize>(),
    );
    let rejections_taken = take_within(&rejection_lines, remaining / 10);
    vars.rejections = rejection_lines[..rejections_taken].to_vec();
    let learning_taken = take_within(&learning_lines, remaining / 10);
    vars.learning = learning_lines[..learning_taken].to_vec();
    let running_taken = take_within(&running_lines, remaining / 4);
    vars.running = running_lines[..running_taken].to_vec();
    let open_taken = take_within(&open_lines, remaining / 10);
    vars.open_proposals = open_lines[..open_taken].to_vec();
    let used: usize = vars
        .rejections
        .iter()
        .chain(&vars.learning)
        .chain(&vars.running)
        .chain(&vars.open_proposals)
        .map(|l| estimate_tokens(l) + 1)
        .sum();
    remaining = remaining.saturating_sub(used);

    // Round-robin fill; lines are only built for experiments that are considered.
    let mut chosen: Vec<(usize, String, &str)> = Vec::new();
    let mut cursors = vec![0usize; per_moment.len()];
    let mut used = 0usize;
    let mut full = vec![false; per_moment.len()];
    while full.iter().any(|f| !f) {
        for (slot, (_, list)) in per_moment.iter().enumerate() {
            if full[slot] {
                continue;
            }
            let Some((_, experiment)) = list.get(cursors[slot]) else {
                full[slot] = true;
                continue;
            };
            let line = evidence_line(experiment, analyses.get(experiment.id.as_str()).copied());
            let mut cost = estimate_tokens(&line) + 1;
            if in_prompt {
                cost += estimate_tokens(&quote(&experiment.id)) + 1;
            }
            if used + cost > remaining {
                // The moment's next record no longer fits: the moment is done (the others
                // may still have shorter records that fit).
                full[slot] = true;
                continue;
            }
            used += cost;
            cursors[slot] += 1;
            chosen.push((slot, line, experiment.id.as_str()));
        }
    }

    loop {
        vars.evidence = per_moment
            .iter()
            .enumerate()
            .filter_map(|(slot, (moment, _))| {
                let items: Vec<String> = chosen
                    .iter()
                    .filter(|(s, _, _)| *s == slot)
                    .map(|(_, line, _)| line.clone())
                    .collect();
                (!items.is_empty()).then_some(EvidenceGroup {
                    moment: moment.as_str(),
                    items,
                })
            })
            .collect();
        vars.evidence_shown = chosen.len();
        let ids: Vec<&str> = chosen.iter().map(|(_, _, id)| *id).collect();
        let mut schema = schema_for_run(&ids, catalog);
        if config.accepts_bounds() {
            schema = with_length_bounds(&schema, ctx.max_proposals);
        }
        if in_prompt {
            vars.schema = Some(quote(&without_descriptions(&schema)));
        }
        let (system, user, tokens) = render(&vars)?;
        if tokens <= budget || chosen.is_empty() {
            if tokens > budget {
                return Err(ProposerError::Prompt(format!(
                    "prompt_token_budget = {budget} is too small for the prompt ({tokens} tokens without evidence)"
                )));
            }
            let format = response_format(config, &schema);
            let format_value = serde_json::to_value(&format).unwrap_or(Value::Null);
            let input_digest = input_digest(&config.model, &system, &user, &format_value);
            return Ok(RenderedPrompt {
                system,
                user,
                template_digest: templates.digest(),
                input_digest,
                estimated_tokens: tokens,
                token_budget: budget,
                model: config.model.clone(),
                response_format: format_value,
                schema,
                selection: Selection {
                    evidence_shown: chosen.len(),
                    evidence_total,
                    evidence_ids: chosen.iter().map(|(_, _, id)| id.to_string()).collect(),
                    running_shown: vars.running.len(),
                    running_total: running.len(),
                    open_shown: vars.open_proposals.len(),
                    open_total: ctx.open_proposals.len(),
                    rejections_shown: vars.rejections.len(),
                    rejections_total: ctx.recent_rejections.len(),
                    levers_shown: vars.levers.len(),
                    levers_total: vars.levers_total,
                },
                system_template: templates.system_origin.clone(),
                user_template: templates.user_origin.clone(),
            });
        }
        // Over the budget (template text around the records): drop the last-chosen records
        // until the estimate of what is dropped covers the excess.
        // A moment's only record goes last, so that every moment stays represented.
        let mut excess = tokens - budget;
        while excess > 0 {
            let mut counts: HashMap<usize, usize> = HashMap::new();
            for (slot, _, _) in &chosen {
                *counts.entry(*slot).or_default() += 1;
            }
            let at = chosen
                .iter()
                .rposition(|(slot, _, _)| counts.get(slot).copied().unwrap_or(0) > 1)
                .or_else(|| chosen.len().checked_sub(1));
            match at.map(|i| chosen.remove(i)) {
                Some((_, line, _)) => excess = excess.saturating_sub(estimate_tokens(&line) + 1),
                None => break,
            }
        }
    }
}
