//! The MCP server (Model Context Protocol): how other agents — an editor's assistant, a team's
//! chat bot — consult hypod and suggest drafts. It owns the tools (their argument schemas come
//! from `schemars`; each answers structured content plus a short text), the
//! `hypod://proposals/{id}` resources, and the two transports: stdio (`hypod mcp --as USER`,
//! [`serve_stdio`]) and streamable HTTP at `/mcp` on `hypod serve` ([`http_service`], mounted
//! by the server behind its bearer-token check). Every tool calls one use case of
//! [`crate::app`] as the agent's principal; approving and rejecting are not tools, and the
//! use cases refuse them to agents whatever a client claims.

use crate::app::access::{Permission, Principal};
use crate::app::queue::PageRequest;
use crate::app::{App, AppError, AppResult, ErrorKind};
use crate::domain::{Moment, ProposalDraft, ProposalStatus, QueueOrder, ReviewAction};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, ListResourceTemplatesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ResourceContents,
    ResourceTemplate, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler, ServiceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The largest MCP request body over HTTP, in bytes (a draft is a few kilobytes).
pub const BODY_LIMIT: usize = 64 * 1024;
/// The longest id, cursor or filter text a tool takes, in characters.
const MAX_ARG_CHARS: usize = 200;
/// The scheme and path of a proposal's resource.
const PROPOSAL_URI: &str = "hypod://proposals/";

/// Whatever holds the [`App`] the tools work on: the server's state, or the app itself on
/// stdio.
pub type AppHandle = Arc<dyn AsRef<App> + Send + Sync>;

/// The tools, for one connection. On stdio the principal is fixed (`--as USER`, as an
/// agent); over HTTP it is the bearer token's, put in each request by the server.
#[derive(Clone)]
pub struct HypodMcp {
    app: AppHandle,
    principal: Option<Principal>,
    tool_router: ToolRouter<HypodMcp>,
}

/// `list_proposals`: the queue's filters and pagination, as the API's `GET /api/v1/proposals`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListProposalsArgs {
    /// Only proposals in this status (pending_review, approved, rejected, blocked, expired,
    /// superseded).
    pub status: Option<ProposalStatus>,
    /// Only proposals for this commerce moment.
    pub moment: Option<Moment>,
    /// Only proposals for this segment (a name from the catalog).
    pub segment: Option<String>,
    /// Only the proposals of this run (its id).
    pub run: Option<String>,
    /// Words that must appear in the title or hypothesis (case-insensitive).
    pub q: Option<String>,
    /// At most 200; 50 by default.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page (of the same `sort`).
    pub cursor: Option<String>,
    /// `value` (highest priority first, the default), `age` (newest first) or `expiry`.
    pub sort: Option<QueueOrder>,
}

/// A proposal, by id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposalArgs {
    /// The proposal's id (from `list_proposals`).
    pub id: String,
}

/// An experiment of the history, by id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentArgs {
    /// The experiment's id, as imported (cited in proposals' evidence).
    pub id: String,
}

/// `explain_policy`: why a proposal got its verdicts, or one rule's outcome on it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainArgs {
    /// The proposal's id.
    pub proposal_id: String,
    /// Only this rule (a policy, consent or validation rule id); every rule when absent.
    pub rule_id: Option<String>,
}

/// `submit_draft`: a draft in the proposer's schema.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitDraftArgs {
    /// The proposed experiment: cited evidence (ids from the history), the lever, segment and
    /// signals (names from the catalog), the hypothesis and what it changes.
    pub draft: ProposalDraft,
}

/// `comment`: a remark on a proposal's record (it changes no status).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentArgs {
    /// The proposal's id.
    pub proposal_id: String,
    /// The comment, at most 2 000 characters.
    pub text: String,
}

/// A use case's failure as the agent sees it: a tool error with the stable code and message
/// (the same as the API's), never a protocol error the client would hide.
fn failed(err: AppError) -> CallToolResult {
    let value = serde_json::json!({ "code": err.kind.code(), "message": err.message });
    let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
        "{}: {}",
        err.kind.code(),
        err.message
    ))]);
    result.structured_content = Some(value);
    result
}

/// A use case's view as structured content, with a short text for people and plain clients.
fn answer<T: Serialize>(view: &T, text: String) -> CallToolResult {
    match serde_json::to_value(view) {
        Ok(value) => {
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(value);
            result
        }
        Err(e) => failed(AppError::runtime(format!("the answer: {e}"))),
    }
}

/// The tool's result: its view, or its failure.
fn respond<T: Serialize>(result: AppResult<(T, String)>) -> Result<CallToolResult, ErrorData> {
    Ok(match result {
        Ok((view, text)) => answer(&view, text),
        Err(err) => failed(err),
    })
}

/// A short argument (an id, a cursor, a filter): at most [`MAX_ARG_CHARS`] characters, no
/// control character.
fn short_arg(name: &str, value: &str) -> AppResult<()> {
    if value.chars().count() > MAX_ARG_CHARS || value.chars().any(char::is_control) {
        return Err(AppError::input(format!(
            "{name}: at most {MAX_ARG_CHARS} characters, no control character"
        )));
    }
    Ok(())
}

impl HypodMcp {
    /// The tools over stdio, acting for `principal` (as an agent).
    pub fn for_principal(app: AppHandle, principal: Principal) -> HypodMcp {
        HypodMcp {
            app,
            principal: Some(principal.as_agent()),
            tool_router: Self::tool_router(),
        }
    }

    /// The tools over HTTP: each request's principal is the one the server identified.
    pub fn over_http(app: AppHandle) -> HypodMcp {
        HypodMcp {
            app,
            principal: None,
            tool_router: Self::tool_router(),
        }
    }

    fn app(&self) -> &App {
        (*self.app).as_ref()
    }

    /// Who is asking, as an agent, allowed to read.
    fn caller(&self, ctx: &RequestContext<RoleServer>) -> AppResult<Principal> {
        let principal = match &self.principal {
            Some(principal) => principal.clone(),
            None => ctx
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<Principal>())
                .cloned()
                .ok_or_else(|| {
                    AppError::new(
                        ErrorKind::Unauthenticated,
                        "send `Authorization: Bearer <token>`",
                    )
                })?
                .as_agent(),
        };
        principal.require(Permission::Read)?;
        Ok(principal)
    }

    /// The MCP client's name and version, from its initialize (or the request's metadata).
    fn client(ctx: &RequestContext<RoleServer>) -> Option<String> {
        ctx.client_info()
            .map(|info| format!("{} {}", info.name, info.version).trim().to_string())
    }
}

#[tool_router]
impl HypodMcp {
    #[tool(
        description = "The proposal queue, highest expected value first: filters (status, moment, segment, run, words) and cursor pagination as the REST API. Each item has its id, title, status, priority, expected value, approvals and age.",
        annotations(read_only_hint = true)
    )]
    async fn list_proposals(
        &self,
        Parameters(args): Parameters<ListProposalsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        respond(
            async {
                self.caller(&ctx)?;
                for (name, value) in [
                    ("segment", &args.segment),
                    ("run", &args.run),
                    ("q", &args.q),
                    ("cursor", &args.cursor),
                ] {
                    if let Some(value) = value {
                        short_arg(name, value)?;
                    }
                }
                let page = self
                    .app()
                    .queue_page(PageRequest {
                        status: args.status,
                        moment: args.moment,
                        segment: args.segment,
                        run: args.run,
                        text: args.q,
                        limit: args.limit,
                        cursor: args.cursor,
                        order: args.sort.unwrap_or_default(),
                    })
                    .await?;
                let text = format!(
                    "{} proposal(s){}",
                    page.items.len(),
                    if page.next_cursor.is_some() {
                        "; more with next_cursor"
                    } else {
                        ""
                    }
                );
                Ok((page, text))
            }
            .await,
        )
    }

    #[tool(
        description = "One proposal in full: the draft, the cited evidence with each experiment's statistics, every verdict (validation, consent, policies), the decision in words, provenance and reviews.",
        annotations(read_only_hint = true)
    )]
    async fn get_proposal(
        &self,
        Parameters(args): Parameters<ProposalArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        respond(
            async {
                self.caller(&ctx)?;
                short_arg("id", &args.id)?;
                let view = self.app().show(&args.id).await?;
                let failed = view.proposal.verdicts.iter().filter(|v| !v.passed).count();
                let text = format!(
                    "{} — {}; {}; {} of {} rule(s) did not pass",
                    view.proposal.draft.title,
                    view.proposal.status.as_str(),
                    view.decision.progress,
                    failed,
                    view.proposal.verdicts.len()
                );
                Ok((view, text))
            }
            .await,
        )
    }

    #[tool(
        description = "One experiment of the history with its analysis: the test used, lift, confidence interval, p-value, power, sample ratio check and outcome.",
        annotations(read_only_hint = true)
    )]
    async fn get_experiment(
        &self,
        Parameters(args): Parameters<ExperimentArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        respond(
            async {
                self.caller(&ctx)?;
                short_arg("id", &args.id)?;
                let analysis = self.app().experiment(&args.id).await?;
                let text = format!(
                    "experiment {} ({}): {}{}",
                    analysis.id,
                    analysis.moment.as_str(),
                    analysis.outcome.as_str(),
                    analysis
                        .reason
                        .as_deref()
                        .map(|r| format!(" — {r}"))
                        .unwrap_or_default()
                );
                Ok((analysis, text))
            }
            .await,
        )
    }

    #[tool(
        description = "Program health over the whole history: the playbook's signals (velocity, win rate, coverage of moments, invalid tests) and whether the program is ready for proposals.",
        annotations(read_only_hint = true)
    )]
    async fn program_health(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        respond(
            async {
                self.caller(&ctx)?;
                let analysis = self.app().analyze().await?;
                let program = analysis.program.clone();
                let text = if program.ready_for_proposals {
                    "ready for proposals".to_string()
                } else {
                    format!("not ready for proposals: {}", program.readiness_reason)
                };
                Ok((program, text))
            }
            .await,
        )
    }

    #[tool(
        description = "The lever knowledge base: each personalisation lever's pooled effect (random-effects meta-analysis of its valid concluded tests), per moment and per segment.",
        annotations(read_only_hint = true)
    )]
    async fn list_levers(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        respond(
            async {
                self.caller(&ctx)?;
                let levers = self.app().levers().await?;
                let text =
                    "the lever knowledge base (pooled effects per lever, moment and segment)"
                        .to_string();
                Ok((levers, text))
            }
            .await,
        )
    }

    #[tool(
        description = "Why a proposal got its verdicts: each rule's outcome (pass or fail), effect, message and, for a policy, its expression; with rule_id, that one rule's outcome.",
        annotations(read_only_hint = true)
    )]
    async fn explain_policy(
        &self,
        Parameters(args): Parameters<ExplainArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        respond(
            async {
                self.caller(&ctx)?;
                short_arg("proposal_id", &args.proposal_id)?;
                let mut explanation = self.app().explain(&args.proposal_id).await?;
                if let Some(rule) = &args.rule_id {
                    short_arg("rule_id", rule)?;
                    explanation.verdicts.retain(|v| &v.rule_id == rule);
                    if explanation.verdicts.is_empty() {
                        return Err(AppError::new(
                            ErrorKind::NotFound,
                            format!(
                                "rule {rule} has no verdict on proposal {} (explain_policy without rule_id lists them)",
                                args.proposal_id
                            ),
                        ));
                    }
                }
                let text = explanation
                    .verdicts
                    .iter()
                    .map(|v| format!("{} ({}, {}): {}", v.rule_id, v.effect, v.outcome, v.message))
                    .collect::<Vec<_>>()
                    .join("\n");
                Ok((explanation, text))
            }
            .await,
        )
    }

    #[tool(
        description = "Suggest an experiment: a draft in the proposer's schema goes through exactly what a nightly run's drafts go through (every cited experiment must exist, enrichment, consent rules, policies, duplicates of the open queue and running tests). It is queued as pending_review for people to decide, or recorded as blocked with its reasons; the answer has its id, status and verdicts. Capped per minute and per day.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false
        )
    )]
    async fn submit_draft(
        &self,
        Parameters(args): Parameters<SubmitDraftArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        respond(
            async {
                let principal = self.caller(&ctx)?;
                let draft = serde_json::to_value(&args.draft)?;
                let view = self
                    .app()
                    .submit_as_agent(&principal, Self::client(&ctx), draft)
                    .await?;
                let proposal = &view.proposal;
                let text = match proposal.status {
                    ProposalStatus::Blocked => format!(
                        "recorded as blocked ({}): {}",
                        proposal.id,
                        proposal
                            .verdicts
                            .iter()
                            .filter(|v| !v.passed && v.effect == crate::domain::Effect::Deny)
                            .map(|v| format!("{}: {}", v.rule_id, v.message))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    status => format!(
                        "queued as {} ({}), {} approval(s) required; people decide",
                        status.as_str(),
                        proposal.id,
                        proposal.approvals_required
                    ),
                };
                Ok((view, text))
            }
            .await,
        )
    }

    #[tool(
        description = "Comment on a proposal (a remark on its record for the reviewers; it changes no status). Needs a token with the reviewer role or above.",
        annotations(read_only_hint = false, destructive_hint = false)
    )]
    async fn comment(
        &self,
        Parameters(args): Parameters<CommentArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        respond(
            async {
                let principal = self.caller(&ctx)?;
                short_arg("proposal_id", &args.proposal_id)?;
                let outcome = self
                    .app()
                    .review(crate::app::queue::ReviewRequest {
                        id: args.proposal_id,
                        principal,
                        action: ReviewAction::Comment,
                        note: Some(args.text),
                    })
                    .await?;
                let text = format!("commented on {} as {}", outcome.summary.id, outcome.actor);
                Ok((outcome, text))
            }
            .await,
        )
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for HypodMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(rmcp::model::Implementation::new(
            "hypod",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "hypod holds an ecommerce team's experiment history, its analysis and a queue of \
             proposed experiments that people approve. Read the queue and the evidence with the \
             read-only tools; suggest an experiment with submit_draft (it is governed and queued \
             for people, never launched); comment on a proposal with comment. Agents never \
             approve or reject.",
        )
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(format!("{PROPOSAL_URI}{{id}}"), "proposal")
                .with_description(
                    "One proposal in full (as get_proposal): draft, evidence with statistics, verdicts, decision, provenance, reviews.",
                )
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let Some(id) = request.uri.strip_prefix(PROPOSAL_URI) else {
            return Err(ErrorData::resource_not_found(
                format!(
                    "unknown resource {}; hypod serves {PROPOSAL_URI}{{id}}",
                    crate::domain::bounded(&request.uri)
                ),
                None,
            ));
        };
        let read = async {
            self.caller(&context)?;
            short_arg("id", id)?;
            let view = self.app().show(id).await?;
            Ok::<_, AppError>(serde_json::to_string(&view)?)
        }
        .await;
        match read {
            Ok(text) => Ok(ReadResourceResult::new(vec![ResourceContents::text(
                text,
                request.uri.clone(),
            )
            .with_mime_type("application/json")])
            .into()),
            Err(err) if err.kind == ErrorKind::NotFound => {
                Err(ErrorData::resource_not_found(err.message, None))
            }
            Err(err) if err.kind == ErrorKind::Input => {
                Err(ErrorData::invalid_params(err.message, None))
            }
            Err(err) => Err(ErrorData::internal_error(err.message, None)),
        }
    }
}

/// `hypod mcp --as USER`: the tools on stdin/stdout for an agent acting for `principal`,
/// until the client closes the connection.
pub async fn serve_stdio(app: App, principal: Principal) -> AppResult<()> {
    let handle: AppHandle = Arc::new(app);
    let server = HypodMcp::for_principal(handle, principal)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| AppError::runtime(format!("MCP on stdio: {e}")))?;
    server
        .waiting()
        .await
        .map_err(|e| AppError::runtime(format!("MCP on stdio: {e}")))?;
    Ok(())
}

/// The streamable HTTP service for `/mcp` on `hypod serve`. The server puts the caller's
/// [`Principal`] in each request's extensions before it reaches this service (requests without
/// one are answered as unauthenticated by every tool). Host checks are the server's (its
/// bearer tokens and Origin check), not rmcp's loopback-only default, so a deployment behind
/// its own host name works.
pub fn http_service(
    app: AppHandle,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    HypodMcp,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    let config = rmcp::transport::streamable_http_server::StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_max_request_body_bytes(BODY_LIMIT);
    rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || Ok(HypodMcp::over_http(app.clone())),
        Default::default(),
        config,
    )
}
