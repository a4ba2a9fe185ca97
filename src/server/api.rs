//! The HTTP API under `/api/v1`: JSON views of the same use cases the command line calls
//! (the queue and its reviews, runs, experiments, program health, policies, the audit log,
//! export), each route checking the caller's role ([`Permission`]) before it acts. The
//! OpenAPI document at `/api/v1/openapi.json` is generated from these handlers' annotations
//! (utoipa), so the document and the routes cannot drift apart.

use super::auth::{
    ApiError, Auditor, Caller, ErrorBody, Exporter, Importer, JsonBody, QueryParams, Reader,
    Reviewer, Runner,
};
use super::ServerState;
use crate::app::access::Permission;
use crate::app::analyze::ExperimentPage;
use crate::app::policy::PolicySetView;
use crate::app::queue::{PageRequest, ProposalPage, ProposalSummary, ReviewRequest};
use crate::app::{self, AppError};
use crate::domain::{Moment, ProposalStatus, ReviewAction, Trigger};
use crate::history::import::Format;
use crate::store::{AuditEntry, AuditReport};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The largest experiment import body, in bytes.
pub const IMPORT_LIMIT: usize = 32 * 1024 * 1024;

type ApiResult<T> = Result<T, ApiError>;
type Shared = State<Arc<ServerState>>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hypod",
        description = "The review queue of hypod: AI-drafted experiment proposals, governed, waiting for people. Every route but this document needs a bearer token (`hypod token create`) or a trusted proxy's identity headers."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API's routes and its OpenAPI document.
pub fn router() -> (axum::Router<Arc<ServerState>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(me))
        .routes(routes!(list_proposals))
        .routes(routes!(show_proposal))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(comment))
        .routes(routes!(list_runs, trigger_run))
        .routes(routes!(show_run))
        .routes(routes!(list_experiments, import_experiments))
        .routes(routes!(show_experiment))
        .routes(routes!(health))
        .routes(routes!(policies))
        .routes(routes!(evaluate_policies))
        .routes(routes!(audit_entries))
        .routes(routes!(audit_verify))
        .routes(routes!(audit_head))
        .routes(routes!(export))
        .split_for_parts()
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi(State(state): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
        .into_response()
}

#[derive(Serialize, ToSchema)]
struct Me {
    user: String,
    role: crate::domain::Role,
    may_review: bool,
    may_audit: bool,
}

/// Who the credentials identify, and in which role.
#[utoipa::path(get, path = "/api/v1/me", tag = "access",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(Caller(caller): Caller) -> Json<Me> {
    Json(Me {
        user: caller.user.to_string(),
        role: caller.role,
        may_review: caller.may(Permission::Review),
        may_audit: caller.may(Permission::Audit),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ProposalQuery {
    status: Option<ProposalStatus>,
    moment: Option<Moment>,
    segment: Option<String>,
    run: Option<String>,
    /// Words that must appear in the title or hypothesis (case-insensitive).
    q: Option<String>,
    /// At most 200; 50 by default.
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The queue, highest priority first, filtered, one page at a time (keyset pagination).
#[utoipa::path(get, path = "/api/v1/proposals", tag = "proposals", params(ProposalQuery),
    responses((status = 200, body = ProposalPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn list_proposals(
    State(state): Shared,
    Reader(_): Reader,
    QueryParams(query): QueryParams<ProposalQuery>,
) -> ApiResult<Json<ProposalPage>> {
    let page = state
        .app
        .queue_page(PageRequest {
            status: query.status,
            moment: query.moment,
            segment: query.segment,
            run: query.run,
            text: query.q,
            limit: query.limit,
            cursor: query.cursor,
        })
        .await?;
    Ok(Json(page))
}

/// One proposal with its evidence (and the cited experiments' statistics), verdicts,
/// provenance and reviews.
#[utoipa::path(get, path = "/api/v1/proposals/{id}", tag = "proposals",
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn show_proposal(
    State(state): Shared,
    Reader(_): Reader,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let view = state.app.show(&id).await?;
    Ok(Json(view).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// Optional, at most 2 000 characters.
    note: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    /// Required: why. At most 2 000 characters.
    reason: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    text: String,
}

async fn review(
    state: &ServerState,
    caller: crate::app::access::Principal,
    id: String,
    action: ReviewAction,
    note: Option<String>,
) -> ApiResult<Json<ProposalSummary>> {
    let outcome = state
        .app
        .review(ReviewRequest {
            id,
            principal: caller,
            action,
            note,
        })
        .await?;
    Ok(Json(outcome.summary))
}

/// Approve, as the caller: distinct people count, an escalated proposal needs governance
/// among them, a blocked one can be approved by nobody.
#[utoipa::path(post, path = "/api/v1/proposals/{id}/approve", tag = "proposals",
    request_body = ApproveBody,
    responses((status = 200, body = ProposalSummary), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn approve(
    State(state): Shared,
    Reviewer(caller): Reviewer,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ApproveBody>,
) -> ApiResult<Json<ProposalSummary>> {
    review(&state, caller, id, ReviewAction::Approve, body.note).await
}

/// Reject, with a reason.
#[utoipa::path(post, path = "/api/v1/proposals/{id}/reject", tag = "proposals",
    request_body = RejectBody,
    responses((status = 200, body = ProposalSummary), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn reject(
    State(state): Shared,
    Reviewer(caller): Reviewer,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RejectBody>,
) -> ApiResult<Json<ProposalSummary>> {
    review(&state, caller, id, ReviewAction::Reject, Some(body.reason)).await
}

/// Comment (changes no status).
#[utoipa::path(post, path = "/api/v1/proposals/{id}/comments", tag = "proposals",
    request_body = CommentBody,
    responses((status = 200, body = ProposalSummary), (status = 403, body = ErrorBody)))]
async fn comment(
    State(state): Shared,
    Reviewer(caller): Reviewer,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CommentBody>,
) -> ApiResult<Json<ProposalSummary>> {
    review(&state, caller, id, ReviewAction::Comment, Some(body.text)).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    /// At most 200; 50 by default.
    limit: Option<usize>,
}

/// Recent runs, newest first, each with the audit head it published.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(LimitQuery),
    responses((status = 200, body = Object)))]
async fn list_runs(
    State(state): Shared,
    Reader(_): Reader,
    QueryParams(query): QueryParams<LimitQuery>,
) -> ApiResult<Response> {
    let runs = state.app.runs(query.limit).await?;
    Ok(Json(runs).into_response())
}

/// One run.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn show_run(
    State(state): Shared,
    Reader(_): Reader,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let run = state.app.run(&id).await?;
    Ok(Json(run).into_response())
}

/// Start a run now (trigger `api`), through the same slot claim as scheduled runs; answers
/// when it has finished, with its record and queued proposals.
#[utoipa::path(post, path = "/api/v1/runs", tag = "runs",
    responses((status = 201, body = Object), (status = 403, body = ErrorBody)))]
async fn trigger_run(State(state): Shared, Runner(_): Runner) -> ApiResult<Response> {
    let view = state.app.run_now(Trigger::Api).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ExperimentQuery {
    /// At most 200; 50 by default.
    limit: Option<usize>,
    /// Only experiments whose id sorts after this one.
    after: Option<String>,
    moment: Option<Moment>,
}

/// The imported history, by id.
#[utoipa::path(get, path = "/api/v1/experiments", tag = "experiments", params(ExperimentQuery),
    responses((status = 200, body = ExperimentPage)))]
async fn list_experiments(
    State(state): Shared,
    Reader(_): Reader,
    QueryParams(query): QueryParams<ExperimentQuery>,
) -> ApiResult<Json<ExperimentPage>> {
    let page = state
        .app
        .experiments_page(query.after.as_deref(), query.moment, query.limit)
        .await?;
    Ok(Json(page))
}

/// One experiment with its statistics.
#[utoipa::path(get, path = "/api/v1/experiments/{id}", tag = "experiments",
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn show_experiment(
    State(state): Shared,
    Reader(_): Reader,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let statistics = state.app.experiment(&id).await?;
    Ok(Json(statistics).into_response())
}

/// Import experiments: the body is NDJSON (`application/x-ndjson`, the default), a JSON array
/// (`application/json`) or CSV (`text/csv`), validated like a file; nothing is written unless
/// every record is valid.
#[utoipa::path(post, path = "/api/v1/experiments", tag = "experiments",
    request_body(content = String, content_type = "application/x-ndjson"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
async fn import_experiments(
    State(state): Shared,
    Importer(importer): Importer,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-ndjson")
        .to_ascii_lowercase();
    let format = if content_type.starts_with("application/json") {
        Format::JsonArray
    } else if content_type.starts_with("text/csv") {
        Format::Csv
    } else {
        Format::Ndjson
    };
    let bytes = axum::body::to_bytes(request.into_body(), IMPORT_LIMIT)
        .await
        .map_err(|_| ApiError::too_large(IMPORT_LIMIT))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| ApiError::input(format!("the request body is not UTF-8: {e}")))?;
    let summary = state
        .app
        .import_body(format, text, importer.user.as_str())
        .await?;
    Ok(Json(summary).into_response())
}

/// Program health: the playbook's signals over the whole history.
#[utoipa::path(get, path = "/api/v1/health", tag = "program",
    responses((status = 200, body = Object)))]
async fn health(State(state): Shared, Reader(_): Reader) -> ApiResult<Response> {
    let analysis = state.app.analyze().await?;
    Ok(Json(&analysis.program).into_response())
}

/// The loaded policy set with its digest.
#[utoipa::path(get, path = "/api/v1/policies", tag = "policies",
    responses((status = 200, body = PolicySetView)))]
async fn policies(State(state): Shared, Reader(_): Reader) -> ApiResult<Json<PolicySetView>> {
    Ok(Json(state.app.policy_set()?))
}

/// Dry run: the verdicts a draft (the proposal draft schema) would get; nothing is queued.
#[utoipa::path(post, path = "/api/v1/policies/evaluate", tag = "policies",
    request_body = Object,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
async fn evaluate_policies(
    State(state): Shared,
    Reader(_): Reader,
    JsonBody(draft): JsonBody<crate::domain::ProposalDraft>,
) -> ApiResult<Response> {
    // It analyses the whole history: a heavy read, off the async workers and bounded.
    let server = state.clone();
    let evaluation = state
        .app
        .heavy(async move { server.app.evaluate_draft(&draft).await })
        .await?;
    Ok(Json(evaluation).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Only entries after this sequence number.
    after: Option<i64>,
    /// At most 1 000; 100 by default.
    limit: Option<usize>,
    /// `ndjson` for one entry a line (for a SIEM); JSON array otherwise.
    format: Option<String>,
}

/// Audit entries, oldest first, from `after`.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = 403, body = ErrorBody)))]
async fn audit_entries(
    State(state): Shared,
    Auditor(_): Auditor,
    QueryParams(query): QueryParams<AuditQuery>,
) -> ApiResult<Response> {
    let limit = match query.limit.unwrap_or(100) {
        n @ 1..=1000 => n,
        _ => return Err(ApiError::input("query `limit` must be between 1 and 1000")),
    };
    let entries = state
        .app
        .audit_entries(query.after.unwrap_or(0), limit)
        .await?;
    match query.format.as_deref() {
        None | Some("json") => Ok(Json(entries).into_response()),
        Some("ndjson") => {
            let mut out = String::new();
            for entry in &entries {
                out.push_str(&serde_json::to_string(entry).map_err(AppError::from)?);
                out.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
        }
        Some(other) => Err(ApiError::input(format!(
            "query `format`: {other:?} is not json or ndjson"
        ))),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct VerifyQuery {
    /// A head kept earlier (`SEQ:HASH`): also check that the log still holds it.
    head: Option<String>,
}

/// Verifies every link and MAC, the sealed head, an optional kept head, and replays the log
/// against the stored proposals and reviews. `intact: false` lists every problem.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", params(VerifyQuery),
    responses((status = 200, body = AuditReport), (status = 403, body = ErrorBody)))]
async fn audit_verify(
    State(state): Shared,
    Auditor(_): Auditor,
    QueryParams(query): QueryParams<VerifyQuery>,
) -> ApiResult<Json<AuditReport>> {
    let expected = query
        .head
        .as_deref()
        .map(app::audit::parse_head)
        .transpose()?;
    let report = state.app.verify_audit(expected.as_ref()).await?;
    Ok(Json(report))
}

/// The current head of the chain.
#[utoipa::path(get, path = "/api/v1/audit/head", tag = "audit",
    responses((status = 200, body = Option<crate::domain::AuditHead>)))]
async fn audit_head(State(state): Shared, Reader(_): Reader) -> ApiResult<Response> {
    let head = state.app.audit_head().await?;
    Ok(Json(head).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    /// `approved` by default.
    status: Option<ProposalStatus>,
}

/// Approved proposals as drafts for an experimentation platform — only those a verified
/// audit log explains; `withheld` lists the others and why.
#[utoipa::path(get, path = "/api/v1/export", tag = "proposals", params(ExportQuery),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody)))]
async fn export(
    State(state): Shared,
    Exporter(_): Exporter,
    QueryParams(query): QueryParams<ExportQuery>,
) -> ApiResult<Response> {
    let export = state
        .app
        .export(query.status.unwrap_or(ProposalStatus::Approved))
        .await?;
    Ok(Json(export).into_response())
}
