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
//!
//! This module owns the templates, the variables, the token budget and the digests; `lines`
//! writes the records as prompt lines, `evidence` chooses the experiments shown, `policies`
//! reads the policy set in plain words.

mod evidence;
mod lines;
mod policies;

pub use evidence::relevance;
pub use lines::{bound_text, quote};
pub use policies::{policy_summaries_from_dir, PolicySummary};

use super::config::{LlmConfig, StructuredOutput};
use super::schema::{schema_for_run, with_length_bounds, SCHEMA_NAME};
use crate::analysis::ExperimentAnalysis;
use crate::proposer::{ProposalContext, ProposerError};
use async_openai::types::chat::{ResponseFormat, ResponseFormatJsonSchema};
use evidence::{Chosen, EvidenceGroup};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// The default system template, compiled into the binary (an installed hypod needs no files).
pub const DEFAULT_SYSTEM_TEMPLATE: &str = include_str!("../../../../prompts/system.j2");
/// The default user template.
pub const DEFAULT_USER_TEMPLATE: &str = include_str!("../../../../prompts/user.j2");
pub const SYSTEM_TEMPLATE_FILE: &str = "system.j2";
pub const USER_TEMPLATE_FILE: &str = "user.j2";

/// Templates larger than this are refused (they are prompts, not data).
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;
/// Per-message overhead of chat templates (role markers), in tokens.
const MESSAGE_OVERHEAD_TOKENS: usize = 4;
/// Tokens kept free for the per-moment headings of the evidence section.
const EVIDENCE_HEADING_TOKENS: usize = 30;
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

/// The variables the templates receive.
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
    /// `frequentist`, `sequential` or `bayesian`: which words the evidence is in.
    engine: &'static str,
    schema: Option<String>,
}

impl Vars {
    /// Everything but the records that compete for the budget (short lists, levers, evidence),
    /// which start empty, with the totals they are chosen from.
    fn without_records(
        ctx: &ProposalContext<'_>,
        policies: &[PolicySummary],
        lists: &ShortLists,
        levers_total: usize,
        evidence_total: usize,
    ) -> Vars {
        let catalog = ctx.catalog;
        Vars {
            today: ctx.now.date_naive().to_string(),
            max_proposals: ctx.max_proposals,
            per_moment: ctx.per_moment,
            health: lines::health_lines(&ctx.analysis.program),
            commercial_kpis: catalog.commercial_kpis.clone(),
            latency_budgets: catalog
                .latency_budget_ms
                .iter()
                .map(|(mode, ms)| format!("{mode} {ms} ms"))
                .collect(),
            segments: lines::segment_lines(catalog),
            signals: lines::signal_lines(catalog),
            purposes: lines::purpose_lines(catalog),
            policies: lines::consent_rule_lines(ctx)
                .into_iter()
                .chain(policies.iter().map(PolicySummary::line))
                .collect(),
            running: Vec::new(),
            running_total: lists.running_total,
            open_proposals: Vec::new(),
            open_total: ctx.open_proposals.len(),
            rejections: Vec::new(),
            learning: Vec::new(),
            levers: Vec::new(),
            levers_total,
            evidence: Vec::new(),
            evidence_shown: 0,
            evidence_total,
            engine: ctx.analysis.vocabulary().as_str(),
            schema: None,
        }
    }
}

/// The short lists, each already capped, before the budget takes from them.
struct ShortLists {
    running: Vec<String>,
    running_total: usize,
    open: Vec<String>,
    rejections: Vec<String>,
    learning: Vec<String>,
}

impl ShortLists {
    fn of(ctx: &ProposalContext<'_>) -> ShortLists {
        let (running, running_total) = lines::running_lines(ctx.experiments);
        ShortLists {
            running,
            running_total,
            open: lines::open_lines(ctx.open_proposals),
            rejections: lines::rejection_lines(ctx.recent_rejections),
            learning: lines::learning_lines(ctx),
        }
    }
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

/// Estimated tokens of prompt lines, one more each for its line break.
fn lines_tokens<'a>(lines: impl IntoIterator<Item = &'a String>) -> usize {
    lines.into_iter().map(|l| estimate_tokens(l) + 1).sum()
}

/// Gives the lever table, then the short lists, their share of `room` tokens; returns the
/// tokens left for the evidence. The lever table comes before the evidence (pooled knowledge
/// is worth more per token than one experiment's record) but never takes the room of each
/// moment's first experiment (`first_records` tokens: every moment stays shown). The running
/// experiments, open proposals, rejections and learning lines take at most 55 % of what the
/// lever table leaves: the floor keeps room for the first records after them too.
fn fill_short_lists(
    vars: &mut Vars,
    lists: &ShortLists,
    lever_rows: &[String],
    first_records: usize,
    room: usize,
) -> usize {
    let beyond_first = room.saturating_sub(first_records);
    let protected = first_records * 20 / 9 + 1;
    let lever_room = (beyond_first / 5).max(MIN_LEVER_TOKENS.min(room.saturating_sub(protected)));
    vars.levers = lever_rows[..take_within(lever_rows, lever_room)].to_vec();
    let remaining = room.saturating_sub(lines_tokens(&vars.levers));
    let take = |lines: &[String], share: usize| lines[..take_within(lines, share)].to_vec();
    vars.rejections = take(&lists.rejections, remaining / 10);
    vars.learning = take(&lists.learning, remaining / 10);
    vars.running = take(&lists.running, remaining / 4);
    vars.open_proposals = take(&lists.open, remaining / 10);
    let used = lines_tokens(
        vars.rejections
            .iter()
            .chain(&vars.learning)
            .chain(&vars.running)
            .chain(&vars.open_proposals),
    );
    remaining.saturating_sub(used)
}

/// The two templates compiled once, rendered as often as the budget needs.
struct Renderer<'t> {
    env: Environment<'t>,
    templates: &'t Templates,
}

impl<'t> Renderer<'t> {
    fn new(templates: &'t Templates) -> Result<Renderer<'t>, ProposerError> {
        Ok(Renderer {
            env: templates.environment()?,
            templates,
        })
    }

    /// The system and user messages, and their estimated tokens.
    fn render(&self, vars: &Vars) -> Result<(String, String, usize), ProposerError> {
        let render_one = |name: &str, origin: &str| {
            self.env
                .get_template(name)
                .and_then(|t| t.render(vars))
                .map_err(|e| ProposerError::Prompt(format!("{origin}: {e:#}")))
        };
        let system = render_one(SYSTEM_TEMPLATE_FILE, &self.templates.system_origin)?;
        let user = render_one(USER_TEMPLATE_FILE, &self.templates.user_origin)?;
        let tokens = estimate_message_tokens([system.as_str(), user.as_str()]);
        Ok((system, user, tokens))
    }
}

/// The answer's schema for a run that shows `evidence_ids`, with length bounds where the
/// server accepts them.
fn run_schema(evidence_ids: &[&str], ctx: &ProposalContext<'_>, config: &LlmConfig) -> Value {
    let schema = schema_for_run(evidence_ids, ctx.catalog);
    if config.accepts_bounds() {
        with_length_bounds(&schema, ctx.max_proposals)
    } else {
        schema
    }
}

impl Selection {
    fn of(vars: &Vars, chosen: &[Chosen<'_>], rejections_total: usize) -> Selection {
        Selection {
            evidence_shown: chosen.len(),
            evidence_total: vars.evidence_total,
            evidence_ids: chosen.iter().map(|(_, _, id)| id.to_string()).collect(),
            running_shown: vars.running.len(),
            running_total: vars.running_total,
            open_shown: vars.open_proposals.len(),
            open_total: vars.open_total,
            rejections_shown: vars.rejections.len(),
            rejections_total,
            levers_shown: vars.levers.len(),
            levers_total: vars.levers_total,
        }
    }
}

/// Renders the prompt with `templates`, selecting the evidence that fits the budget: the
/// prompt without records first (it must leave room for evidence), then the lever table and
/// the short lists, then the evidence round-robin across moments, trimmed until the rendered
/// prompt fits.
pub fn render_with(
    ctx: &ProposalContext<'_>,
    config: &LlmConfig,
    templates: &Templates,
    policies: &[PolicySummary],
) -> Result<RenderedPrompt, ProposerError> {
    let renderer = Renderer::new(templates)?;
    let analyses: HashMap<&str, &ExperimentAnalysis> = ctx
        .analysis
        .experiments
        .iter()
        .map(|a| (a.id.as_str(), a))
        .collect();
    let ranked = evidence::rank(ctx.experiments, &analyses, ctx.now.date_naive());
    let lists = ShortLists::of(ctx);
    let (lever_rows, levers_total) = lines::lever_lines(&ctx.analysis.levers);
    let mut vars = Vars::without_records(ctx, policies, &lists, levers_total, ranked.total);

    let budget = config.prompt_token_budget;
    // In JSON mode the schema is part of the prompt, and it lists the evidence ids shown.
    let in_prompt = config.structured_output == StructuredOutput::JsonObject;
    if in_prompt {
        vars.schema = Some(quote(&without_descriptions(&run_schema(&[], ctx, config))));
    }
    let (_, _, base_tokens) = renderer.render(&vars)?;
    if base_tokens + EVIDENCE_HEADING_TOKENS > budget {
        return Err(ProposerError::Prompt(format!(
            "prompt_token_budget = {budget} is too small: without any experiment the prompt already needs about {base_tokens} tokens (instructions, health, catalog, policies{}); raise it to at least {}",
            if vars.schema.is_some() { ", schema" } else { "" },
            base_tokens + 1_000
        )));
    }
    let room = fill_short_lists(
        &mut vars,
        &lists,
        &lever_rows,
        ranked.first_records_tokens(&analyses),
        budget - base_tokens - EVIDENCE_HEADING_TOKENS,
    );
    let mut chosen = ranked.fill(&analyses, room, in_prompt);
    loop {
        vars.evidence = ranked.groups(&chosen);
        vars.evidence_shown = chosen.len();
        let ids: Vec<&str> = chosen.iter().map(|(_, _, id)| *id).collect();
        let schema = run_schema(&ids, ctx, config);
        if in_prompt {
            vars.schema = Some(quote(&without_descriptions(&schema)));
        }
        let (system, user, tokens) = renderer.render(&vars)?;
        if tokens > budget && !chosen.is_empty() {
            evidence::drop_excess(&mut chosen, tokens - budget);
            continue;
        }
        if tokens > budget {
            return Err(ProposerError::Prompt(format!(
                "prompt_token_budget = {budget} is too small for the prompt ({tokens} tokens without evidence)"
            )));
        }
        let format = serde_json::to_value(response_format(config, &schema)).unwrap_or(Value::Null);
        return Ok(RenderedPrompt {
            input_digest: input_digest(&config.model, &system, &user, &format),
            system,
            user,
            template_digest: templates.digest(),
            estimated_tokens: tokens,
            token_budget: budget,
            model: config.model.clone(),
            response_format: format,
            schema,
            selection: Selection::of(&vars, &chosen, ctx.recent_rejections.len()),
            system_template: templates.system_origin.clone(),
            user_template: templates.user_origin.clone(),
        });
    }
}
