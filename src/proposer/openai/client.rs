//! [`OpenAiProposer`]: one run's conversation with the model. It renders the prompt, sends it
//! through async-openai (typed request, `byot` lenient response, hypod's [`Transport`] as the only
//! retry layer), reads the answer strictly, re-asks with the errors when the answer or a draft is
//! unusable (at most `max_repairs` times per run), and reports usage, cost and digests.
//!
//! Outcomes, once the repairs are used up: drafts that parse and pass `validate::check_draft` and
//! the foreseeable governance denials (`precheck`) are returned first; drafts that parse but still
//! fail those checks are returned after them, so that the run's validation and governance block
//! them with a verdict per problem (status `blocked`, visible to reviewers and auditors); items that do not parse as a draft at all (wrong types, extra fields
//! such as `"status": "approved"`, over 64 KiB) are returned in `rejected` with their reasons and
//! a bounded copy of what the model wrote. Drafts over `max_proposals` or `per_moment` (valid ones
//! have precedence) are rejected as such. An
//! answer that is unusable as a whole (transport failure, error status, refusal, truncation or
//! invalid JSON after the last repair) is an `Err`: the run records it, or falls back.

use super::config::LlmConfig;
use super::precheck::foreseeable_denials;
use super::prompt::{
    estimate_message_tokens, estimate_tokens, render_with, response_format, PolicySummary,
    RenderedPrompt, Templates,
};
use super::response::{check_item, parse_answer, rejected, ChatResponse, Reply};
use super::schema::{without_length_bounds, BOUND_KEYWORDS};
use super::transport::{snippet, RetryPolicy, Transport, TransportFailure, TransportStats};
use crate::proposer::{
    LlmUsage, ProposalContext, ProposalDraft, ProposedDraft, Proposer, ProposerError,
    ProposerOutput, RejectedDraft,
};
use crate::validate::References;
use async_openai::config::{AzureConfig, Config, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
};
use async_openai::Client;
use async_trait::async_trait;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The previous answer, as replayed in a repair turn, is cut to this many characters.
const REPLAYED_ANSWER_CHARS: usize = 6_000;

/// The `openai` proposer.
pub struct OpenAiProposer {
    config: LlmConfig,
    prompts_dir: Option<PathBuf>,
    policies: Vec<PolicySummary>,
    retry: RetryPolicy,
    http: reqwest::Client,
}

impl std::fmt::Debug for OpenAiProposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProposer")
            .field("config", &self.config)
            .field("prompts_dir", &self.prompts_dir)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// How the drafts of one conversation stand.
#[derive(Default)]
struct Tally {
    accepted: Vec<ProposalDraft>,
    /// Invalid items of the latest answer: (raw, reasons).
    invalid: Vec<(Value, Vec<String>)>,
    /// Invalid items of earlier answers that the repair answer left out.
    withdrawn: Vec<(Value, Vec<String>)>,
    usage: LlmUsage,
    model_echo: Option<String>,
}

/// Whether a repair answer's item is the repair of an earlier item: the same title, or the same
/// moment, lever and segment.
fn corresponds(item: &Value, earlier: &Value) -> bool {
    let text = |value: &Value, key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .map(|s| s.trim().to_ascii_lowercase())
    };
    let same = |key: &str| text(item, key).is_some() && text(item, key) == text(earlier, key);
    same("title") || (same("moment") && same("lever") && same("segment"))
}

/// The output-token cap of a request: room for `max_proposals` drafts of 300–500 tokens each.
/// Tight on purpose: a small model that loops inside a string is cut early and re-asked for
/// fewer, shorter proposals (on 2 CPU cores each 1 000 tokens cost 40–50 s).
pub fn completion_token_limit(max_proposals: usize) -> u32 {
    (800 + 600 * max_proposals.clamp(1, 16)) as u32
}

impl OpenAiProposer {
    /// A proposer for `config` (validated here), with templates from `prompts_dir` where it has
    /// them.
    pub fn new(config: LlmConfig, prompts_dir: Option<PathBuf>) -> Result<Self, ProposerError> {
        config.validate().map_err(|problems| {
            ProposerError::Config(
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let timeout = config.timeout();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("hypod/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProposerError::Config(format!("HTTP client: {e}")))?;
        Ok(OpenAiProposer {
            retry: RetryPolicy::new(config.max_attempts),
            config,
            prompts_dir,
            policies: Vec::new(),
            http,
        })
    }

    /// The policy set in plain words, for the prompt.
    pub fn with_policies(mut self, policies: Vec<PolicySummary>) -> Self {
        self.policies = policies;
        self
    }

    /// Backoff between transport attempts (default 1 s doubling to 30 s; `Retry-After` up to
    /// 120 s). Tests shorten it.
    pub fn with_backoff(
        mut self,
        base: Duration,
        max: Duration,
        max_retry_after: Duration,
    ) -> Self {
        self.retry.base_delay = base;
        self.retry.max_delay = max;
        self.retry.max_retry_after = max_retry_after;
        self
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The messages a run with this proposer would send first (for `hypod prompt render`).
    pub fn render(&self, ctx: &ProposalContext<'_>) -> Result<RenderedPrompt, ProposerError> {
        let templates = Templates::load(self.prompts_dir.as_deref())?;
        render_with(ctx, &self.config, &templates, &self.policies)
    }

    fn client(&self, stats: Arc<Mutex<TransportStats>>) -> Client<Box<dyn Config>> {
        let key = self.config.api_key().unwrap_or_default();
        let base = self.config.base_url.trim_end_matches('/').to_string();
        let config: Box<dyn Config> = match (
            &self.config.azure_deployment,
            &self.config.azure_api_version,
        ) {
            (Some(deployment), Some(version)) => Box::new(
                AzureConfig::new()
                    .with_api_base(base)
                    .with_deployment_id(deployment)
                    .with_api_version(version)
                    .with_api_key(key),
            ),
            _ => Box::new(OpenAIConfig::new().with_api_base(base).with_api_key(key)),
        };
        let transport = Transport::new(
            self.http.clone(),
            self.retry.clone(),
            self.config.timeout(),
            stats,
        );
        Client::build(self.http.clone(), config).with_http_service(transport)
    }

    fn request(
        &self,
        messages: &[(Role, String)],
        schema: &Value,
        max_tokens: u32,
    ) -> Result<CreateChatCompletionRequest, ProposerError> {
        let build_error = |e: OpenAIError| ProposerError::Config(format!("request: {e}"));
        let mut typed: Vec<ChatCompletionRequestMessage> = Vec::with_capacity(messages.len());
        for (role, content) in messages {
            typed.push(match role {
                Role::System => ChatCompletionRequestSystemMessageArgs::default()
                    .content(content.as_str())
                    .build()
                    .map_err(build_error)?
                    .into(),
                Role::User => ChatCompletionRequestUserMessageArgs::default()
                    .content(content.as_str())
                    .build()
                    .map_err(build_error)?
                    .into(),
                Role::Assistant => ChatCompletionRequestAssistantMessageArgs::default()
                    .content(content.as_str())
                    .build()
                    .map_err(build_error)?
                    .into(),
            });
        }
        CreateChatCompletionRequestArgs::default()
            .model(self.config.model.clone())
            .messages(typed)
            .response_format(response_format(&self.config, schema))
            .max_completion_tokens(max_tokens)
            .build()
            .map_err(build_error)
    }

    /// One model call (with the transport's retries), accounted in `tally`.
    async fn call(
        &self,
        client: &Client<Box<dyn Config>>,
        messages: &[(Role, String)],
        schema: &Value,
        max_tokens: u32,
        tally: &mut Tally,
    ) -> Result<ChatResponse, ProposerError> {
        let request = self.request(messages, schema, max_tokens)?;
        let started = Instant::now();
        let result = client.chat().create_byot::<_, Value>(request).await;
        tally.usage.latency_ms += started.elapsed().as_millis() as u64;
        let value = result.map_err(|e| self.map_error(e))?;
        let response = ChatResponse::from_value(value).map_err(ProposerError::InvalidAnswer)?;
        let usage = response.usage.clone().unwrap_or_default();
        let prompt_tokens = usage.prompt().unwrap_or_else(|| {
            estimate_message_tokens(messages.iter().map(|(_, m)| m.as_str())) as u64
        });
        let completion_tokens = usage
            .completion()
            .unwrap_or_else(|| match response.reply() {
                Reply::Content(text) | Reply::Truncated(text) => estimate_tokens(&text) as u64,
                _ => 0,
            });
        tally.usage.prompt_tokens += prompt_tokens;
        tally.usage.completion_tokens += completion_tokens;
        if let Some(model) = response.model.clone().filter(|m| !m.trim().is_empty()) {
            tally.model_echo = Some(snippet(&model, 120));
        }
        Ok(response)
    }

    fn map_error(&self, error: OpenAIError) -> ProposerError {
        let failure = match &error {
            OpenAIError::Boxed(inner) => inner.downcast_ref::<TransportFailure>().cloned(),
            _ => None,
        };
        let Some(failure) = failure else {
            return match error {
                OpenAIError::JSONDeserialize(err, body) => ProposerError::InvalidAnswer(format!(
                    "the response is not JSON ({err}): {}",
                    snippet(&body, 200)
                )),
                other => ProposerError::Transport {
                    attempts: 1,
                    message: other.to_string(),
                },
            };
        };
        let attempts = failure.attempts();
        let after = if attempts > 1 {
            format!(" (after {attempts} attempts)")
        } else {
            String::new()
        };
        match failure {
            TransportFailure::Unreachable { attempts, message } => {
                ProposerError::Transport { attempts, message }
            }
            TransportFailure::Status {
                status,
                message,
                code,
                kind,
                ..
            } => {
                let mut text = message;
                if let Some(kind) = kind.filter(|k| !text.contains(k.as_str())) {
                    text = format!("{kind}: {text}");
                }
                if let Some(code) = code.filter(|c| !text.contains(c.as_str())) {
                    text.push_str(&format!(" (code {code})"));
                }
                text.push_str(&after);
                // Servers that do not know json_schema say so in a 400, a 422 or, like
                // llama-cpp-python, a 500 whose message is the request validation error.
                if self.config.structured_output == super::config::StructuredOutput::JsonSchema
                    && text.contains("response_format")
                    && (text.contains("json_schema") || text.contains("json_object"))
                {
                    text.push_str(
                        "; this server does not accept response_format \"json_schema\": set structured_output = \"json_object\" in [llm] (the schema then goes into the prompt and the answer is validated as strictly)",
                    );
                }
                if matches!(status, 401 | 403) {
                    text.push_str(&format!(
                        "; check the API key in the environment variable {} (api_key_env)",
                        self.config.api_key_env
                    ));
                }
                if status == 404 {
                    text.push_str(&format!(
                        "; check base_url = {:?} (it should end in /v1 for OpenAI-compatible servers) and model = {:?}",
                        self.config.base_url, self.config.model
                    ));
                }
                ProposerError::Server {
                    status,
                    message: text,
                }
            }
            TransportFailure::NotJson { .. } | TransportFailure::TooLarge { .. } => {
                ProposerError::InvalidAnswer(format!("{failure}{after}"))
            }
            TransportFailure::Request(message) => ProposerError::Config(message),
        }
    }

    fn output(
        &self,
        tally: Tally,
        rendered: &RenderedPrompt,
        stats: &TransportStats,
        ctx: &ProposalContext<'_>,
    ) -> ProposerOutput {
        let mut rejected_drafts: Vec<RejectedDraft> = tally
            .withdrawn
            .iter()
            .map(|(raw, reasons)| rejected(raw, reasons.clone()))
            .collect();
        // Drafts that parse but still fail the reference and range checks go on to the run,
        // whose validation blocks them with a verdict per problem (kept visible as `blocked`);
        // what does not even parse as a draft can only be kept in the run record.
        let mut candidates: Vec<(ProposalDraft, Option<Vec<String>>)> = tally
            .accepted
            .into_iter()
            .map(|draft| (draft, None))
            .collect();
        for (raw, reasons) in tally.invalid {
            match serde_json::from_value::<ProposalDraft>(raw.clone()) {
                Ok(draft) if raw.to_string().len() <= super::response::MAX_DRAFT_BYTES => {
                    candidates.push((draft, Some(reasons)))
                }
                _ => rejected_drafts.push(rejected(&raw, reasons)),
            }
        }
        // Caps: max_proposals per run and per_moment per moment, valid drafts first, each in
        // the model's order.
        let mut drafts = Vec::new();
        let mut caps = crate::proposer::Caps::of(ctx);
        for (draft, problems) in candidates {
            let over = caps.admit(draft.moment).err();
            match over {
                Some(reason) => {
                    let mut reasons = problems.unwrap_or_default();
                    reasons.push(reason);
                    rejected_drafts.push(rejected(
                        &serde_json::to_value(&draft).unwrap_or(Value::Null),
                        reasons,
                    ));
                }
                None => {
                    drafts.push(ProposedDraft {
                        draft,
                        strategy: None,
                    });
                }
            }
        }
        let mut usage = tally.usage;
        usage.model = tally
            .model_echo
            .unwrap_or_else(|| self.config.model.clone());
        usage.attempts = stats.attempts;
        usage.cost = self
            .config
            .cost(usage.prompt_tokens, usage.completion_tokens);
        ProposerOutput {
            drafts,
            rejected: rejected_drafts,
            usage: Some(usage),
            prompt_digest: Some(rendered.template_digest.clone()),
            input_digest: Some(rendered.input_digest.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    System,
    User,
    Assistant,
}

fn same_test(a: &ProposalDraft, b: &ProposalDraft) -> bool {
    a.moment == b.moment
        && a.lever.trim().eq_ignore_ascii_case(b.lever.trim())
        && a.segment.trim().eq_ignore_ascii_case(b.segment.trim())
        && a.title.trim().eq_ignore_ascii_case(b.title.trim())
}

fn repair_message(invalid: &[(Value, Vec<String>)], accepted: usize, room: usize) -> String {
    let mut text = String::new();
    if accepted > 0 {
        text.push_str(&format!(
            "{accepted} of your proposals were accepted; do not repeat them.\n"
        ));
    }
    text.push_str("These proposals were rejected:\n");
    for (i, (raw, reasons)) in invalid.iter().enumerate() {
        let title = raw
            .get("title")
            .and_then(Value::as_str)
            .map(|t| format!(" {}", super::prompt::quote(&snippet(t, 80))))
            .unwrap_or_default();
        text.push_str(&format!("- proposal {}{title}:\n", i + 1));
        // Long enough for a reason and the experiments that would do instead (what the model
        // wrote is quoted in them at most a few hundred characters long).
        for reason in reasons.iter().take(12) {
            text.push_str(&format!(
                "  - {}\n",
                super::prompt::quote(&snippet(reason, 500))
            ));
        }
    }
    text.push_str(&format!(
        "Answer with a JSON object {{\"proposals\": [...]}} holding, for each rejected proposal, a corrected version, or, where one cannot be corrected, a different proposal that avoids these problems (at most {room} in all). Use exactly the fields of the schema and no others. Cite only experiment ids from the evidence and only segments, signals and purposes from the catalog."
    ));
    text
}

#[async_trait]
impl Proposer for OpenAiProposer {
    fn kind(&self) -> &'static str {
        "openai"
    }

    async fn propose(&self, ctx: &ProposalContext<'_>) -> Result<ProposerOutput, ProposerError> {
        let rendered = self.render(ctx)?;
        let refs = References::new(ctx.experiments, ctx.catalog);
        let rejected: Vec<crate::domain::Proposal> = ctx
            .recent_rejections
            .iter()
            .map(|(proposal, _)| proposal.clone())
            .collect();
        let stats = Arc::new(Mutex::new(TransportStats::default()));
        let client = self.client(stats.clone());
        let stats_now = || stats.lock().map(|s| s.clone()).unwrap_or_default();
        let mut tally = Tally::default();
        let mut max_tokens = completion_token_limit(ctx.max_proposals);
        let mut ask_max = ctx.max_proposals.max(1);
        let base = vec![
            (Role::System, rendered.system.clone()),
            (Role::User, rendered.user.clone()),
        ];
        let mut messages = base.clone();
        let mut schema = rendered.schema.clone();

        loop {
            let response = match self
                .call(&client, &messages, &schema, max_tokens, &mut tally)
                .await
            {
                Ok(response) => response,
                // A server that rejects the length bounds gets the schema without them.
                Err(ProposerError::Server { status, message })
                    if matches!(status, 400 | 422)
                        && BOUND_KEYWORDS.iter().any(|k| message.contains(k))
                        && without_length_bounds(&schema) != schema =>
                {
                    tracing::warn!(
                        "the model server rejected the schema's length bounds ({}); sending it without them",
                        snippet(&message, 200)
                    );
                    schema = without_length_bounds(&schema);
                    continue;
                }
                Err(err) => return Err(err),
            };
            let can_repair = tally.usage.repairs < self.config.max_repairs;
            let problem = match response.reply() {
                Reply::Refusal(text) => {
                    return Err(ProposerError::Refused(snippet(&text, 300)));
                }
                Reply::Truncated(_) if can_repair => {
                    // Ask again for fewer, shorter proposals; the cut answer is not replayed.
                    tally.usage.repairs += 1;
                    ask_max = ask_max.div_ceil(2).max(1);
                    max_tokens = max_tokens.saturating_add(max_tokens / 2);
                    let mut user = rendered.user.clone();
                    user.push_str(&format!(
                        "\n\nNote: a previous answer was cut off at the output limit. Answer with at most {ask_max} proposals and keep every text short."
                    ));
                    messages = vec![(Role::System, rendered.system.clone()), (Role::User, user)];
                    continue;
                }
                Reply::Truncated(_) => {
                    if tally.accepted.is_empty() && tally.invalid.is_empty() {
                        return Err(ProposerError::Truncated);
                    }
                    Some((
                        "the answer was cut off at the token limit (finish_reason = length)"
                            .to_string(),
                        String::new(),
                    ))
                }
                Reply::Empty(why) => Some((why, String::new())),
                Reply::Content(content) => match parse_answer(&content) {
                    Err(why) => Some((why, content)),
                    Ok(items) => {
                        // Drafts sent for repair that the answer leaves out are recorded as
                        // dropped, with their reasons.
                        for (raw, mut reasons) in std::mem::take(&mut tally.invalid) {
                            if !items.iter().any(|item| corresponds(item, &raw)) {
                                reasons.push("left out of the repair answer".into());
                                tally.withdrawn.push((raw, reasons));
                            }
                        }
                        for item in &items {
                            match check_item(item, &refs) {
                                Ok(draft) => {
                                    if tally.accepted.iter().any(|a| same_test(a, &draft)) {
                                        continue;
                                    }
                                    let denials = foreseeable_denials(&draft, ctx, &rejected);
                                    if denials.is_empty() {
                                        tally.accepted.push(draft);
                                    } else {
                                        tally.invalid.push((item.clone(), denials));
                                    }
                                }
                                Err(reasons) => tally.invalid.push((item.clone(), reasons)),
                            }
                        }
                        if tally.invalid.is_empty() {
                            break;
                        }
                        let room = ask_max.saturating_sub(tally.accepted.len());
                        if can_repair && room > 0 {
                            tally.usage.repairs += 1;
                            messages = base.clone();
                            messages
                                .push((Role::Assistant, snippet(&content, REPLAYED_ANSWER_CHARS)));
                            messages.push((
                                Role::User,
                                repair_message(&tally.invalid, tally.accepted.len(), room),
                            ));
                            continue;
                        }
                        break;
                    }
                },
            };
            // The answer as a whole is unusable.
            let Some((why, content)) = problem else { break };
            if can_repair {
                tally.usage.repairs += 1;
                messages = base.clone();
                if !content.trim().is_empty() {
                    messages.push((Role::Assistant, snippet(&content, REPLAYED_ANSWER_CHARS)));
                }
                messages.push((
                    Role::User,
                    format!(
                        "Your answer could not be used: {}. Answer again with only the JSON object {{\"proposals\": [...]}} (at most {} proposals), exactly as the schema describes, with no other text.",
                        snippet(&why, 500),
                        ask_max.saturating_sub(tally.accepted.len()).max(1)
                    ),
                ));
                continue;
            }
            if tally.accepted.is_empty() && tally.invalid.is_empty() {
                return Err(ProposerError::InvalidAnswer(format!(
                    "{why} (after {} repair(s))",
                    tally.usage.repairs
                )));
            }
            // Earlier rounds produced drafts: keep them, and say why the last answer was lost.
            for (_, reasons) in tally.invalid.iter_mut() {
                reasons.push(format!(
                    "the repair answer was unusable: {}",
                    snippet(&why, 200)
                ));
            }
            break;
        }
        let stats = stats_now();
        for retry in &stats.retries {
            tracing::info!("model call retried: {retry}");
        }
        Ok(self.output(tally, &rendered, &stats, ctx))
    }
}
