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
use crate::analysis::health::ProgramHealth;
use crate::analysis::ExperimentAnalysis;
use crate::app::access::Permission;
use crate::app::analyze::ExperimentPage;
use crate::app::import::ImportSummary;
use crate::app::policy::{Evaluation, PolicySetView};
use crate::app::queue::{
    Export, PageRequest, ProposalPage, ProposalSummary, ProposalView, ReviewRequest,
};
use crate::app::run::{RunPage, RunView};
use crate::app::{self, AppError};
use crate::domain::{Moment, ProposalStatus, QueueOrder, ReviewAction, RunRecord, Trigger};
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

/// The errors every authenticated route can answer, each with [`ErrorBody`].
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum Errors {
    /// A query parameter or the body is not valid (the message names it).
    #[response(status = 400)]
    Input(ErrorBody),
    /// No credentials, or credentials hypod does not know.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The caller's role may not do this (or a write came from another site's page).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The configuration or the policies do not load.
    #[response(status = 422)]
    Configuration(ErrorBody),
    /// hypod failed (the database, a bug); the message says what.
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// No such resource.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum NotFound {
    /// Nothing has this id.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// A review the proposal's state refuses.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum Conflict {
    /// The proposal is not pending review, is blocked, or the caller already approved it.
    #[response(status = 409)]
    Conflict(ErrorBody),
}

/// A body over the size limit.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum TooLarge {
    /// The request body is larger than the route takes.
    #[response(status = 413)]
    TooLarge(ErrorBody),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hypod",
        description = "The review queue of hypod: AI-drafted experiment proposals, governed, waiting for people. Every route but this document needs a bearer token (`hypod token create`) or a trusted proxy's identity headers."
    ),
    components(schemas(ErrorBody, AuditFormat, QueueOrder)),
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

/// The answer of the router itself to a path it does not know (404) or a method a path does
/// not take (405): the same [`ErrorBody`] as every other error.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: format!(
            "no route {}; the API's routes are listed in /api/v1/openapi.json",
            crate::domain::echo(uri.path())
        ),
    }
    .into_response()
}

/// See [`not_found`].
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!(
            "{} does not take {method}; the methods each route takes are listed in /api/v1/openapi.json",
            crate::domain::echo(uri.path())
        ),
    }
    .into_response()
}

/// Middleware: an error answered to a request that carries a body says `Connection: close`.
/// Such an answer may come before the body was read (the role is checked first, the body is
/// never read for a caller who may not send it), and hyper then closes the connection without
/// saying so: a client that put the connection back in its pool failed its next request on it
/// ("remote end closed connection without response", found by Schemathesis).
pub async fn close_after_unread_body(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let mut response = next.run(request).await;
    if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
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
    responses((status = 200, description = "The caller.", body = Me), Errors))]
async fn me(Caller(caller): Caller) -> Json<Me> {
    Json(Me {
        user: caller.user.to_string(),
        role: caller.role,
        may_review: caller.may(Permission::Review),
        may_audit: caller.may(Permission::Audit),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ProposalQuery {
    status: Option<ProposalStatus>,
    moment: Option<Moment>,
    /// At most 100 characters, no control character.
    #[param(max_length = 100, pattern = "^[^\\x00-\\x1f\\x7f]*$")]
    segment: Option<String>,
    /// A run's id.
    #[param(max_length = 100, pattern = "^[^\\x00-\\x1f\\x7f]*$")]
    run: Option<String>,
    /// Words that must appear in the title or hypothesis (case-insensitive); at most 200
    /// characters, no control character.
    #[param(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f]*$")]
    q: Option<String>,
    /// At most 200; 50 by default.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page (of the same `sort`).
    cursor: Option<String>,
    /// `value` (highest priority first, the default), `age` (newest first) or `expiry`
    /// (oldest, so expiring soonest, first).
    sort: Option<QueueOrder>,
}

/// The queue, highest priority first, filtered, one page at a time (keyset pagination).
#[utoipa::path(get, path = "/api/v1/proposals", tag = "proposals", params(ProposalQuery),
    responses((status = 200, description = "One page of the queue.", body = ProposalPage,
        links(
            ("show" = (operation_id = "show_proposal",
                parameters(("id" = "$response.body#/items/0/id")))),
            ("approve" = (operation_id = "approve",
                parameters(("id" = "$response.body#/items/0/id")))),
            ("comment" = (operation_id = "comment",
                parameters(("id" = "$response.body#/items/0/id")))),
        )), Errors))]
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
            order: query.sort.unwrap_or_default(),
        })
        .await?;
    Ok(Json(page))
}

/// One proposal with its evidence (and the cited experiments' statistics), verdicts,
/// provenance and reviews.
#[utoipa::path(get, path = "/api/v1/proposals/{id}", tag = "proposals",
    params(("id" = String, Path, description = "The proposal's id.")),
    responses((status = 200, description = "The proposal.", body = ProposalView), Errors,
        NotFound))]
async fn show_proposal(
    State(state): Shared,
    Reader(_): Reader,
    Path(id): Path<String>,
) -> ApiResult<Json<ProposalView>> {
    Ok(Json(state.app.show(&id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// Optional, at most 2 000 characters.
    #[schema(max_length = 2000)]
    note: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    /// Required: why. At most 2 000 characters.
    #[schema(min_length = 1, max_length = 2000)]
    reason: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    /// At most 2 000 characters.
    #[schema(min_length = 1, max_length = 2000)]
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
            id: id.clone(),
            principal: caller,
            action,
            note,
        })
        .await?;
    // The reviews only (not the proposal's view, whose evidence statistics are a heavy read
    // that an approval must not wait for).
    let reviews = state
        .app
        .store()
        .await?
        .proposal_reviews(&id)
        .await
        .map_err(AppError::from)?;
    let progress = crate::domain::ApprovalProgress::from_parts(
        outcome.summary.status,
        outcome.summary.approvals_required,
        outcome.escalated,
        &reviews,
    );
    // A review's answer is the proposal's summary with what approving it still takes
    // (`approvals`, always present here) and the same in words (`progress`).
    let mut summary = outcome.summary;
    summary.progress = Some(progress.describe());
    summary.approvals = Some(progress);
    Ok(Json(summary))
}

/// Approve, as the caller: distinct people count, an escalated proposal needs governance
/// among them, a blocked one can be approved by nobody.
#[utoipa::path(post, path = "/api/v1/proposals/{id}/approve", tag = "proposals",
    request_body = ApproveBody,
    params(("id" = String, Path, description = "The proposal's id.")),
    responses((status = 200, description = "Approved (or still pending, with the approvals it still needs).", body = ProposalSummary), Errors, NotFound,
        Conflict, TooLarge))]
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
    params(("id" = String, Path, description = "The proposal's id.")),
    responses((status = 200, description = "Rejected.", body = ProposalSummary), Errors, NotFound,
        Conflict, TooLarge))]
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
    params(("id" = String, Path, description = "The proposal's id.")),
    responses((status = 200, description = "Commented.", body = ProposalSummary), Errors, NotFound,
        Conflict, TooLarge))]
async fn comment(
    State(state): Shared,
    Reviewer(caller): Reviewer,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CommentBody>,
) -> ApiResult<Json<ProposalSummary>> {
    review(&state, caller, id, ReviewAction::Comment, Some(body.text)).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// At most 200; 50 by default.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Recent runs, newest first, each with the audit head it published, one page at a time
/// (keyset pagination, as the proposals).
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(PageQuery),
    responses((status = 200, description = "One page of runs.", body = RunPage,
        links(("show" = (operation_id = "show_run",
            parameters(("id" = "$response.body#/items/0/id")))))), Errors))]
async fn list_runs(
    State(state): Shared,
    Reader(_): Reader,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<RunPage>> {
    Ok(Json(
        state
            .app
            .runs_page(query.limit, query.cursor.as_deref())
            .await?,
    ))
}

/// One run.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run's id.")),
    responses((status = 200, description = "The run.", body = RunRecord), Errors, NotFound))]
async fn show_run(
    State(state): Shared,
    Reader(_): Reader,
    Path(id): Path<String>,
) -> ApiResult<Json<RunRecord>> {
    Ok(Json(state.app.run(&id).await?))
}

/// Start a run now (trigger `api:<user>`), through the same slot claim as scheduled runs; answers
/// when it has finished, with its record and queued proposals.
#[utoipa::path(post, path = "/api/v1/runs", tag = "runs",
    responses((status = 201, description = "The run, finished.", body = RunView), Errors,
        (status = 409, description = "Another run holds the slot.", body = ErrorBody)))]
async fn trigger_run(State(state): Shared, Runner(caller): Runner) -> ApiResult<Response> {
    let view = state
        .app
        .run_now(Trigger::Api(Some(caller.user.to_string())))
        .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ExperimentQuery {
    /// At most 200; 50 by default.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page (the last id it listed).
    cursor: Option<String>,
    moment: Option<Moment>,
}

/// The imported history, by id, one page at a time.
#[utoipa::path(get, path = "/api/v1/experiments", tag = "experiments", params(ExperimentQuery),
    responses((status = 200, description = "One page of experiments.", body = ExperimentPage,
        links(("show" = (operation_id = "show_experiment",
            parameters(("id" = "$response.body#/items/0/id")))))), Errors))]
async fn list_experiments(
    State(state): Shared,
    Reader(_): Reader,
    QueryParams(query): QueryParams<ExperimentQuery>,
) -> ApiResult<Json<ExperimentPage>> {
    let cursor = query.cursor.as_deref().filter(|c| !c.is_empty());
    let page = state
        .app
        .experiments_page(cursor, query.moment, query.limit)
        .await?;
    Ok(Json(page))
}

/// One experiment with its statistics.
#[utoipa::path(get, path = "/api/v1/experiments/{id}", tag = "experiments",
    params(("id" = String, Path, description = "The experiment's id.")),
    responses((status = 200, description = "The experiment's statistics.",
        body = ExperimentAnalysis), Errors, NotFound))]
async fn show_experiment(
    State(state): Shared,
    Reader(_): Reader,
    Path(id): Path<String>,
) -> ApiResult<Json<ExperimentAnalysis>> {
    Ok(Json(state.app.experiment(&id).await?))
}

/// Import experiments: the body is NDJSON (`application/x-ndjson`, the default), a JSON array
/// (`application/json`) or CSV (`text/csv`), validated like a file; nothing is written unless
/// every record is valid.
#[utoipa::path(post, path = "/api/v1/experiments", tag = "experiments",
    request_body(description = "Experiments in the history format: NDJSON, a JSON array or CSV.",
        content(
            (String = "application/x-ndjson"),
            (Vec<Object> = "application/json"),
            (String = "text/csv"),
        )),
    responses((status = 200, description = "What was read and written.", body = ImportSummary),
        Errors, TooLarge))]
async fn import_experiments(
    State(state): Shared,
    Importer(importer): Importer,
    request: axum::extract::Request,
) -> ApiResult<Json<ImportSummary>> {
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
    Ok(Json(summary))
}

/// Program health: the playbook's signals over the whole history.
#[utoipa::path(get, path = "/api/v1/health", tag = "program",
    responses((status = 200, description = "The program's health.", body = ProgramHealth),
        Errors))]
async fn health(State(state): Shared, Reader(_): Reader) -> ApiResult<Response> {
    let analysis = state.app.analyze().await?;
    Ok(Json(&analysis.program).into_response())
}

/// The loaded policy set with its digest.
#[utoipa::path(get, path = "/api/v1/policies", tag = "policies",
    responses((status = 200, description = "The policy set.", body = PolicySetView), Errors))]
async fn policies(State(state): Shared, Reader(_): Reader) -> ApiResult<Json<PolicySetView>> {
    Ok(Json(state.app.policy_set()?))
}

/// Dry run: the verdicts a draft (the proposal draft schema) would get; nothing is queued.
#[utoipa::path(post, path = "/api/v1/policies/evaluate", tag = "policies",
    request_body(content = Object, description = "A proposal draft, as `hypod policy eval` reads it (the proposal draft schema of docs/architecture.md)."),
    responses((status = 200, description = "The verdicts and the decision.", body = Evaluation),
        Errors, TooLarge))]
async fn evaluate_policies(
    State(state): Shared,
    Reader(_): Reader,
    JsonBody(draft): JsonBody<crate::domain::ProposalDraft>,
) -> ApiResult<Json<Evaluation>> {
    // It analyses the whole history: a heavy read, off the async workers and bounded.
    let server = state.clone();
    let evaluation = state
        .app
        .heavy(async move { server.app.evaluate_draft(&draft).await })
        .await?;
    Ok(Json(evaluation))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// `next_cursor` of the previous page: only entries after this sequence number.
    #[param(pattern = "^[0-9]{1,18}$")]
    cursor: Option<String>,
    /// At most 1 000; 100 by default.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `ndjson` for one entry a line (for a SIEM; no page around it); a JSON page otherwise.
    format: Option<AuditFormat>,
}

#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum AuditFormat {
    Json,
    Ndjson,
}

/// An audit entry as the API shows it: `detail` is the JSON document the entry's hash covers
/// (its canonical text is what `hypod audit export` writes and the chain hashes).
#[derive(Serialize, ToSchema)]
struct AuditEntryView {
    seq: i64,
    /// RFC 3339, as hashed.
    at: String,
    actor: String,
    action: String,
    subject: String,
    #[schema(value_type = Object)]
    detail: serde_json::Value,
    prev_hash: String,
    hash: String,
    /// HMAC of `hash` under the audit key (`None` only on a tampered row).
    mac: Option<String>,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(entry: AuditEntry) -> AuditEntryView {
        // A detail that is not JSON (a tampered row) is shown as the string it is.
        let detail =
            serde_json::from_str(&entry.detail).unwrap_or(serde_json::Value::String(entry.detail));
        AuditEntryView {
            seq: entry.seq,
            at: entry.at,
            actor: entry.actor,
            action: entry.action.to_string(),
            subject: entry.subject,
            detail,
            prev_hash: entry.prev_hash,
            hash: entry.hash,
            mac: entry.mac,
        }
    }
}

/// One page of the audit log, oldest first.
#[derive(Serialize, ToSchema)]
struct AuditPage {
    items: Vec<AuditEntryView>,
    /// The last entry's sequence number when more may follow; absent on the last page.
    next_cursor: Option<String>,
}

/// Audit entries, oldest first, one page at a time.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "One page of entries (or NDJSON, one entry a line).",
        content(
            (AuditPage = "application/json"),
            (String = "application/x-ndjson"),
        )), Errors))]
async fn audit_entries(
    State(state): Shared,
    Auditor(_): Auditor,
    QueryParams(query): QueryParams<AuditQuery>,
) -> ApiResult<Response> {
    let limit = match query.limit.unwrap_or(100) {
        n @ 1..=1000 => n,
        _ => return Err(ApiError::input("query `limit` must be between 1 and 1000")),
    };
    let after = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::input("query `cursor` is not a page's `next_cursor` (a sequence number)")
            })?,
    };
    let entries = state.app.audit_entries(after, limit).await?;
    let next_cursor = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq.to_string()))
        .flatten();
    let items: Vec<AuditEntryView> = entries.into_iter().map(AuditEntryView::from).collect();
    match query.format.unwrap_or(AuditFormat::Json) {
        AuditFormat::Json => Ok(Json(AuditPage { items, next_cursor }).into_response()),
        AuditFormat::Ndjson => {
            let mut out = String::new();
            for entry in &items {
                out.push_str(&serde_json::to_string(entry).map_err(AppError::from)?);
                out.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct VerifyQuery {
    /// A head kept earlier (`SEQ:HASH`): also check that the log still holds it.
    #[param(pattern = "^[0-9]+:[0-9a-f]{64}$")]
    head: Option<String>,
}

/// Verifies every link and MAC, the sealed head, an optional kept head, and replays the log
/// against the stored proposals and reviews. `intact: false` lists every problem.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", params(VerifyQuery),
    responses((status = 200, description = "The verification's report.", body = AuditReport),
        Errors))]
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
    responses((status = 200, description = "The head, or null for an empty log.",
        body = Option<crate::domain::AuditHead>), Errors))]
async fn audit_head(State(state): Shared, Reader(_): Reader) -> ApiResult<Response> {
    let head = state.app.audit_head().await?;
    Ok(Json(head).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    /// `approved` by default.
    status: Option<ProposalStatus>,
}

/// Approved proposals as drafts for an experimentation platform — only those a verified
/// audit log explains; `withheld` lists the others and why.
#[utoipa::path(get, path = "/api/v1/export", tag = "proposals", params(ExportQuery),
    responses((status = 200, description = "The drafts and what was withheld.", body = Export),
        Errors,
        (status = 409, description = "The audit log does not verify: nothing is exported.",
            body = ErrorBody)))]
async fn export(
    State(state): Shared,
    Exporter(_): Exporter,
    QueryParams(query): QueryParams<ExportQuery>,
) -> ApiResult<Json<Export>> {
    let export = state
        .app
        .export(query.status.unwrap_or(ProposalStatus::Approved))
        .await?;
    Ok(Json(export))
}
