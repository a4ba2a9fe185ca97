//! A fake GrowthBook REST API for tests, written from GrowthBook's OpenAPI document (REST API
//! 4.x): axum on 127.0.0.1:0 serving `GET /api/v1/experiments`, the bulk
//! `GET /api/v1/experiments/results` and `GET /api/v1/experiments/{id}/results`, paged with
//! `limit` (1–100, default 10) / `offset` and answering `limit, offset, count, total, hasMore,
//! nextOffset`; a bearer key (401 otherwise); `429` with `Retry-After` (seconds or an HTTP date)
//! past a configurable burst per window; injected 5xx. It counts requests per route, and
//! converts the sample history into GrowthBook's experiment and results shapes (the revenue
//! metric's `stddev` the sample standard deviation gbstats computes from the sums).
//!
//! It also creates experiments as GrowthBook's `POST /api/v1/experiments` does: each body is
//! checked against the documented request schema ([`validate_post`]: `additionalProperties:
//! false`, required `trackingKey`/`name`/`variations`, variations `{key, name}` and nothing
//! unknown, the `status` enum, `description` ≤ 10 000) and the handler's runtime rules
//! (`assignmentQueryId` required, a known data source and assignment query, a data source when
//! metrics are given, known metrics, an owner who is a member — "Unable to find user" — and a
//! tracking key not used before — "Experiment with tracking key already exists"), answering
//! `{experiment}` with its new id; created experiments are then listed, and
//! `GET /api/v1/experiments?trackingKey=…` filters by tracking key. An answer can be lost on
//! purpose (the experiment is created, the client never hears back).
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Response, Uri};
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/sample-history.ndjson"
);

/// The metric ids the fake's results hold.
pub const CONVERSIONS: &str = "met_conversions";
pub const REVENUE: &str = "met_revenue";
pub const ORDERS: &str = "met_orders";
/// The project every converted experiment belongs to.
pub const PROJECT: &str = "prj_shop";

/// The routes the fake counts requests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// `GET /api/v1/experiments`
    List,
    /// `GET /api/v1/experiments/results`
    Bulk,
    /// `GET /api/v1/experiments/{id}/results`
    One,
    /// `POST /api/v1/experiments`
    Create,
    /// anything else
    Other,
}

/// How the playbook fields of a converted experiment are written in GrowthBook.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldStyle {
    /// `customFields` holding JSON values (`"signals": ["a"]`, `"latency_ms_p75_delta": 5.9`).
    Custom,
    /// `customFields` holding strings that hold the JSON (`"signals": "[\"a\"]"`, `"5.9"`).
    JsonStrings,
    /// Tags `key:value` (`moment:search`, one tag per signal), no custom fields.
    Tags,
    /// Each of the three in turn, experiment by experiment.
    Mixed,
}

/// How `Retry-After` is written on a `429`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryAfter {
    Seconds,
    HttpDate,
}

/// One experiment the fake serves: GrowthBook's experiment object and its latest results.
#[derive(Debug, Clone)]
pub struct Served {
    pub experiment: Value,
    pub results: Option<Value>,
}

struct RateLimit {
    burst: u32,
    window: Duration,
    form: RetryAfter,
    window_start: Option<Instant>,
    in_window: u32,
    /// When a `429` told the client to come back.
    retry_at: Option<Instant>,
}

struct State {
    key: String,
    served: Vec<Served>,
    /// Experiments the bulk route leaves out (as for one without a completed snapshot there).
    bulk_lacks: HashSet<String>,
    /// The most a page holds whatever `limit` asks.
    page_cap: usize,
    /// A broken server: `hasMore` always true, `nextOffset` always a page further.
    endless: bool,
    counts: BTreeMap<Route, u64>,
    unauthorized: u64,
    rate_limited: u64,
    /// Requests that came before the time a `429`'s `Retry-After` gave.
    too_early: u64,
    rate: Option<RateLimit>,
    fail_next: u32,
    fail_always: bool,
    server_errors: u64,
    queries: Vec<(Route, String)>,
    /// GrowthBook members (emails and user ids) an `owner` may name.
    members: Vec<String>,
    /// The bodies of created experiments, in order.
    created: Vec<Value>,
    /// Bodies refused by the schema or a runtime rule, with GrowthBook's message.
    refused: Vec<(Value, String)>,
    /// The next `n` creations succeed but their answer is never sent.
    lose_answers: u32,
}

/// The data source and assignment query the fake's organisation has.
pub const DATASOURCE: &str = "ds_shop";
pub const ASSIGNMENT_QUERY: &str = "user_id";
/// Members an `owner` may name.
pub const MEMBERS: [&str; 2] = ["rita@shop.example", "u_gus"];

pub struct FakeGrowthbook {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeGrowthbook {
    /// Serves `served` to requests bearing `key`.
    pub async fn start(key: &str, served: Vec<Served>) -> FakeGrowthbook {
        let state = Arc::new(Mutex::new(State {
            key: key.to_string(),
            served,
            bulk_lacks: HashSet::new(),
            page_cap: 100,
            endless: false,
            counts: BTreeMap::new(),
            unauthorized: 0,
            rate_limited: 0,
            too_early: 0,
            rate: None,
            fail_next: 0,
            fail_always: false,
            server_errors: 0,
            queries: Vec::new(),
            members: MEMBERS.iter().map(|m| m.to_string()).collect(),
            created: Vec::new(),
            refused: Vec::new(),
            lose_answers: 0,
        }));
        let shared = state.clone();
        let router = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let state = shared.clone();
                async move {
                    let (response, lost) = answer(&state, method, uri, headers, &body);
                    if lost {
                        // Created, but the answer never comes: the client times out.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    response
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake GrowthBook");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeGrowthbook { addr, state, task }
    }

    /// The host to configure as the source's `url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received on `route` (whatever the answer).
    pub fn count(&self, route: Route) -> u64 {
        let state = self.state.lock().unwrap();
        state.counts.get(&route).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.state.lock().unwrap().counts.values().sum()
    }

    pub fn reset_counts(&self) {
        let mut state = self.state.lock().unwrap();
        state.counts.clear();
        state.queries.clear();
    }

    pub fn unauthorized(&self) -> u64 {
        self.state.lock().unwrap().unauthorized
    }

    pub fn rate_limited(&self) -> u64 {
        self.state.lock().unwrap().rate_limited
    }

    pub fn too_early(&self) -> u64 {
        self.state.lock().unwrap().too_early
    }

    pub fn server_errors(&self) -> u64 {
        self.state.lock().unwrap().server_errors
    }

    /// The query strings received, with their route.
    pub fn queries(&self) -> Vec<(Route, String)> {
        self.state.lock().unwrap().queries.clone()
    }

    /// At most `burst` requests per `window`; past it `429` with `Retry-After` (rounded up to
    /// whole seconds) until the window ends.
    pub fn rate_limit(&self, burst: u32, window: Duration, form: RetryAfter) {
        self.state.lock().unwrap().rate = Some(RateLimit {
            burst,
            window,
            form,
            window_start: None,
            in_window: 0,
            retry_at: None,
        });
    }

    /// The next `n` requests answer 503.
    pub fn fail_next(&self, n: u32) {
        self.state.lock().unwrap().fail_next = n;
    }

    /// Every request answers 502 while set.
    pub fn fail_always(&self, on: bool) {
        self.state.lock().unwrap().fail_always = on;
    }

    pub fn page_cap(&self, cap: usize) {
        self.state.lock().unwrap().page_cap = cap;
    }

    /// `hasMore` always true from now on.
    pub fn endless_paging(&self) {
        self.state.lock().unwrap().endless = true;
    }

    /// The bulk results route leaves out these GrowthBook ids.
    pub fn bulk_lacks(&self, ids: &[&str]) {
        self.state.lock().unwrap().bulk_lacks = ids.iter().map(|s| s.to_string()).collect();
    }

    /// Edits the served experiment of GrowthBook id `id` (and its results) and bumps its
    /// `dateUpdated`, as GrowthBook does on a change.
    pub fn update(&self, id: &str, edit: impl FnOnce(&mut Served)) {
        let mut state = self.state.lock().unwrap();
        let served = state
            .served
            .iter_mut()
            .find(|s| s.experiment["id"] == id)
            .expect("a served experiment");
        edit(served);
        served.experiment["dateUpdated"] = json!("2026-11-30T12:00:00.000Z");
    }
}

impl FakeGrowthbook {
    /// The bodies of the experiments created, in order.
    pub fn created(&self) -> Vec<Value> {
        self.state.lock().unwrap().created.clone()
    }

    /// The bodies refused, each with GrowthBook's message.
    pub fn refused(&self) -> Vec<(Value, String)> {
        self.state.lock().unwrap().refused.clone()
    }

    /// The next `n` experiments are created but their answers are lost.
    pub fn lose_answers(&self, n: u32) {
        self.state.lock().unwrap().lose_answers = n;
    }
}

impl Drop for FakeGrowthbook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(status: u16, headers: &[(&str, String)], body: Value) -> Response<Body> {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in headers {
        response = response.header(*name, value.as_str());
    }
    response
        .body(Body::from(body.to_string()))
        .expect("a response")
}

fn answer(
    state: &Arc<Mutex<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: &[u8],
) -> (Response<Body>, bool) {
    let route_of = |uri: &Uri, method: &Method| {
        let path = uri.path().trim_end_matches('/');
        (method == Method::POST && path == "/api/v1/experiments").then_some(Route::Create)
    };
    if let Some(Route::Create) = route_of(&uri, &method) {
        let mut guard = state.lock().unwrap();
        *guard.counts.entry(Route::Create).or_default() += 1;
        if let Some(refused) = gate(&mut guard, &headers) {
            return (refused, false);
        }
        return create(&mut guard, body);
    }
    (answer_get(state, method, uri, headers), false)
}

/// What every request of the key meets before its route, as GrowthBook's API applies it: the
/// rate limit first, then a failing upstream, then the bearer key. `None`: it goes on.
fn gate(state: &mut State, headers: &HeaderMap) -> Option<Response<Body>> {
    // The rate limit first, as GrowthBook's API applies it to every request of the key.
    let now = Instant::now();
    if let Some(rate) = state.rate.as_mut() {
        if rate.retry_at.is_some_and(|at| now < at) {
            state.too_early += 1;
        }
        let start = *rate.window_start.get_or_insert(now);
        if now >= start + rate.window {
            rate.window_start = Some(now);
            rate.in_window = 0;
        }
        rate.in_window += 1;
        if rate.in_window > rate.burst {
            let end = rate.window_start.expect("window") + rate.window;
            let wait = end.saturating_duration_since(now);
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let seconds = seconds.max(1);
            rate.retry_at = Some(now + Duration::from_secs(seconds));
            let value = match rate.form {
                RetryAfter::Seconds => seconds.to_string(),
                RetryAfter::HttpDate => {
                    // Whole seconds: the date is rounded up past the wait.
                    let at = SystemTime::now() + Duration::from_secs(seconds + 1);
                    let at: chrono::DateTime<chrono::Utc> = at.into();
                    rate.retry_at = Some(now + Duration::from_secs(seconds));
                    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
                }
            };
            state.rate_limited += 1;
            return Some(respond(
                429,
                &[("retry-after", value)],
                json!({"message": "Too many requests, limit to 60 per minute"}),
            ));
        }
    }
    if state.fail_always || state.fail_next > 0 {
        state.fail_next = state.fail_next.saturating_sub(1);
        state.server_errors += 1;
        let status = if state.fail_always { 502 } else { 503 };
        return Some(respond(
            status,
            &[],
            json!({"message": "upstream unavailable"}),
        ));
    }
    let expected = format!("Bearer {}", state.key);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        state.unauthorized += 1;
        return Some(respond(401, &[], json!({"message": "Invalid API key"})));
    }
    None
}

fn answer_get(
    state: &Arc<Mutex<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let mut guard = state.lock().unwrap();
    let state = &mut *guard;
    let path = uri.path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let route = match segments.as_slice() {
        ["api", "v1", "experiments"] => Route::List,
        ["api", "v1", "experiments", "results"] => Route::Bulk,
        ["api", "v1", "experiments", _, "results"] => Route::One,
        _ => Route::Other,
    };
    *state.counts.entry(route).or_default() += 1;
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%20", " ")))
        .collect();
    state
        .queries
        .push((route, uri.query().unwrap_or("").to_string()));

    if let Some(refused) = gate(state, &headers) {
        return refused;
    }
    if method != Method::GET || route == Route::Other {
        return respond(404, &[], json!({"message": "Unknown API route"}));
    }

    let project = query.get("projectId").cloned();
    let tracking_key = query.get("trackingKey").cloned();
    let matching: Vec<&Served> = state
        .served
        .iter()
        .filter(|s| {
            project
                .as_deref()
                .is_none_or(|p| s.experiment["project"] == p)
                && tracking_key
                    .as_deref()
                    .is_none_or(|k| s.experiment["trackingKey"] == k)
        })
        .collect();
    if route == Route::One {
        let id = segments[3];
        return match state.served.iter().find(|s| s.experiment["id"] == id) {
            Some(Served {
                experiment,
                results: Some(results),
            }) => respond(
                200,
                &[],
                json!({"experiment": experiment, "result": results}),
            ),
            _ => respond(404, &[], json!({"message": "No results found"})),
        };
    }
    let number = |name: &str, default: usize| -> Result<usize, String> {
        match query.get(name) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| format!("{name} must be a number")),
        }
    };
    let (limit, offset) = match (number("limit", 10), number("offset", 0)) {
        (Ok(limit), Ok(offset)) if (1..=100).contains(&limit) => (limit, offset),
        _ => {
            return respond(
                400,
                &[],
                json!({"message": "limit must be between 1 and 100, offset ≥ 0"}),
            )
        }
    };
    let total = matching.len();
    let end = (offset + limit.min(state.page_cap)).min(total);
    let slice = if offset < total {
        &matching[offset..end]
    } else {
        &[][..]
    };
    let has_more = end < total || state.endless;
    let next_offset = if has_more {
        json!(end.max(offset + limit.min(state.page_cap)))
    } else {
        Value::Null
    };
    let items: Vec<Value> = match route {
        Route::List => slice.iter().map(|s| s.experiment.clone()).collect(),
        _ => slice
            .iter()
            .filter(|s| {
                let id = s.experiment["id"].as_str().unwrap_or("");
                !state.bulk_lacks.contains(id)
            })
            .filter_map(|s| s.results.clone())
            .collect(),
    };
    let field = if route == Route::List {
        "experiments"
    } else {
        "experimentResults"
    };
    let mut body = Map::new();
    let count = items.len();
    body.insert(field.into(), Value::Array(items));
    body.insert("limit".into(), json!(limit));
    body.insert("offset".into(), json!(offset));
    body.insert("count".into(), json!(count));
    body.insert("total".into(), json!(total));
    body.insert("hasMore".into(), json!(has_more));
    body.insert("nextOffset".into(), next_offset);
    respond(200, &[], Value::Object(body))
}

// ---------------------------------------------------------------------------------------------
// `POST /api/v1/experiments`, from GrowthBook's OpenAPI document (postExperiment) and its
// handler (packages/back-end/src/api/experiments/postExperiment.ts).

/// Every property the request body may have (`additionalProperties: false`).
const POST_PROPERTIES: [&str; 53] = [
    "datasourceId",
    "assignmentQueryId",
    "trackingKey",
    "bypassDuplicateKeyCheck",
    "name",
    "type",
    "project",
    "templateId",
    "hypothesis",
    "description",
    "tags",
    "metrics",
    "secondaryMetrics",
    "guardrailMetrics",
    "activationMetric",
    "segmentId",
    "queryFilter",
    "owner",
    "archived",
    "status",
    "autoRefresh",
    "hashAttribute",
    "fallbackAttribute",
    "hashVersion",
    "disableStickyBucketing",
    "bucketVersion",
    "minBucketVersion",
    "releasedVariationId",
    "excludeFromPayload",
    "inProgressConversions",
    "attributionModel",
    "lookbackOverride",
    "statsEngine",
    "variations",
    "phases",
    "regressionAdjustmentEnabled",
    "sequentialTestingEnabled",
    "sequentialTestingTuningParameter",
    "shareLevel",
    "banditScheduleValue",
    "banditScheduleUnit",
    "banditBurnInValue",
    "banditBurnInUnit",
    "banditConversionWindowValue",
    "banditConversionWindowUnit",
    "postStratificationEnabled",
    "decisionFrameworkSettings",
    "metricOverrides",
    "defaultDashboardId",
    "customFields",
    "customMetricSlices",
    "precomputedUnitDimensionIds",
    "statusUpdateSchedule",
];

/// GrowthBook counts string lengths in UTF-16 units, as JavaScript does.
fn js_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// Checks a `POST /api/v1/experiments` body against the documented request schema: `Err` with
/// what is wrong (GrowthBook answers such a body 400).
pub fn validate_post(body: &Value) -> Result<(), String> {
    let object = body.as_object().ok_or("the body must be an object")?;
    for key in object.keys() {
        if !POST_PROPERTIES.contains(&key.as_str()) {
            return Err(format!("Unrecognized key: \"{key}\""));
        }
    }
    for required in ["trackingKey", "name", "variations"] {
        if !object.contains_key(required) {
            return Err(format!("{required}: Required"));
        }
    }
    let string = |key: &str| -> Result<Option<&str>, String> {
        match object.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("{key}: Expected string")),
        }
    };
    for key in [
        "datasourceId",
        "assignmentQueryId",
        "trackingKey",
        "name",
        "project",
        "templateId",
        "hypothesis",
        "owner",
        "activationMetric",
        "segmentId",
        "queryFilter",
    ] {
        string(key)?;
    }
    if let Some(description) = string("description")? {
        if js_len(description) > 10_000 {
            return Err("description: String must contain at most 10000 character(s)".into());
        }
    }
    if let Some(status) = string("status")? {
        if !["draft", "running", "stopped"].contains(&status) {
            return Err(format!(
                "status: Invalid enum value. Expected 'draft' | 'running' | 'stopped', received '{status}'"
            ));
        }
    }
    for key in ["tags", "metrics", "secondaryMetrics", "guardrailMetrics"] {
        match object.get(key) {
            None => {}
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
            Some(_) => return Err(format!("{key}: Expected array of strings")),
        }
    }
    if let Some(fields) = object.get("customFields") {
        let fields = fields.as_object().ok_or("customFields: Expected object")?;
        if !fields.values().all(Value::is_string) {
            return Err("customFields: values must be strings".into());
        }
    }
    let variations = object["variations"]
        .as_array()
        .ok_or("variations: Expected array")?;
    if variations.len() < 2 {
        return Err("variations: Array must contain at least 2 element(s)".into());
    }
    for (i, variation) in variations.iter().enumerate() {
        let variation = variation
            .as_object()
            .ok_or(format!("variations.{i}: Expected object"))?;
        for key in variation.keys() {
            if !["id", "key", "name", "description", "screenshots"].contains(&key.as_str()) {
                return Err(format!("variations.{i}: Unrecognized key: \"{key}\""));
            }
        }
        for key in ["key", "name"] {
            if !variation.get(key).is_some_and(Value::is_string) {
                return Err(format!("variations.{i}.{key}: Required string"));
            }
        }
        for key in ["id", "description"] {
            if variation.get(key).is_some_and(|v| !v.is_string()) {
                return Err(format!("variations.{i}.{key}: Expected string"));
            }
        }
        if variation
            .get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| js_len(d) > 10_000)
        {
            return Err(format!(
                "variations.{i}.description: String must contain at most 10000 character(s)"
            ));
        }
    }
    Ok(())
}

/// The handler: the schema, then the runtime rules in the order GrowthBook checks them.
fn create(state: &mut State, body: &[u8]) -> (Response<Body>, bool) {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => return refuse(state, Value::Null, format!("Invalid JSON: {e}")),
    };
    if let Err(problem) = validate_post(&parsed) {
        return refuse(state, parsed, format!("Request body: {problem}"));
    }
    let text = |key: &str| parsed.get(key).and_then(Value::as_str).map(str::to_string);
    let Some(assignment) = text("assignmentQueryId") else {
        return refuse(
            state,
            parsed,
            "assignmentQueryId is required unless provided by the template".into(),
        );
    };
    let datasource = text("datasourceId");
    if let Some(ds) = &datasource {
        if ds != DATASOURCE {
            return refuse(state, parsed, format!("Invalid data source: {ds}"));
        }
        if assignment != ASSIGNMENT_QUERY {
            return refuse(
                state,
                parsed,
                format!("Unrecognized assignment query ID: {assignment}"),
            );
        }
    }
    let tracking_key = text("trackingKey").unwrap_or_default();
    let exists = state
        .served
        .iter()
        .any(|s| s.experiment["trackingKey"] == tracking_key.as_str());
    if exists && parsed.get("bypassDuplicateKeyCheck") != Some(&json!(true)) {
        return refuse(
            state,
            parsed,
            format!("Experiment with tracking key already exists: {tracking_key}."),
        );
    }
    if let Some(owner) = text("owner") {
        if !state.members.contains(&owner) {
            return refuse(state, parsed, format!("Unable to find user: {owner}"));
        }
    }
    let mut metrics: Vec<String> = Vec::new();
    for key in [
        "metrics",
        "secondaryMetrics",
        "guardrailMetrics",
        "activationMetric",
    ] {
        match parsed.get(key) {
            Some(Value::Array(ids)) => {
                metrics.extend(ids.iter().filter_map(Value::as_str).map(str::to_string))
            }
            Some(Value::String(id)) => metrics.push(id.clone()),
            _ => {}
        }
    }
    if !metrics.is_empty() {
        if datasource.is_none() {
            return refuse(
                state,
                parsed,
                "Must provide a datasource when including metrics".into(),
            );
        }
        if let Some(unknown) = metrics
            .iter()
            .find(|m| ![CONVERSIONS, REVENUE, ORDERS].contains(&m.as_str()))
        {
            return refuse(state, parsed, format!("Unknown metric: {unknown}"));
        }
    }
    let id = format!("exp_new_{:05}", state.created.len() + 1);
    let variations: Vec<Value> = parsed["variations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, v)| {
            json!({"variationId": format!("var_{id}_{i}"), "key": v["key"], "name": v["name"],
                   "description": v.get("description").cloned().unwrap_or(json!("")),
                   "screenshots": []})
        })
        .collect();
    let experiment = json!({
        "id": id,
        "trackingKey": tracking_key,
        "name": parsed["name"],
        "project": parsed.get("project").cloned().unwrap_or(json!("")),
        "hypothesis": parsed.get("hypothesis").cloned().unwrap_or(json!("")),
        "description": parsed.get("description").cloned().unwrap_or(json!("")),
        "tags": parsed.get("tags").cloned().unwrap_or(json!([])),
        "owner": parsed.get("owner").cloned().unwrap_or(json!("u_api_key")),
        "archived": false,
        "status": parsed.get("status").cloned().unwrap_or(json!("draft")),
        "dateCreated": "2026-12-01T00:00:00.000Z",
        "dateUpdated": "2026-12-01T00:00:00.000Z",
        "variations": variations,
        "phases": [],
    });
    state.created.push(parsed);
    state.served.push(Served {
        experiment: experiment.clone(),
        results: None,
    });
    let lost = state.lose_answers > 0;
    state.lose_answers = state.lose_answers.saturating_sub(1);
    (respond(200, &[], json!({ "experiment": experiment })), lost)
}

fn refuse(state: &mut State, body: Value, message: String) -> (Response<Body>, bool) {
    state.refused.push((body, message.clone()));
    (respond(400, &[], json!({ "message": message })), false)
}

// ---------------------------------------------------------------------------------------------
// The sample history in GrowthBook's shapes.

/// The sample history's experiments, as JSON objects in the import format.
pub fn sample() -> Vec<Value> {
    std::fs::read_to_string(SAMPLE)
        .expect("the sample history")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a sample line"))
        .collect()
}

/// The GrowthBook id the fake gives the `index`-th experiment.
pub fn gb_id(index: usize) -> String {
    format!("exp_{index:05}")
}

const PLAYBOOK: [&str; 12] = [
    "moment",
    "lever",
    "segment",
    "channel",
    "rendering",
    "region",
    "primary_kpi",
    "signals",
    "latency_ms_p75_delta",
    "decided_at",
    "source_proposal",
    "attributed_revenue",
];

fn at_midnight(date: &Value) -> Value {
    match date.as_str() {
        Some(day) => json!(format!("{day}T00:00:00.000Z")),
        None => json!(""),
    }
}

/// One experiment of the import format as GrowthBook holds it: the experiment object and its
/// latest results (a dimension row before the `All` one, and a Bayesian analysis after the
/// frequentist one, neither of which a reader should take).
pub fn to_growthbook(index: usize, record: &Value, style: FieldStyle) -> Served {
    let id = gb_id(index);
    let variants = record["variants"].as_array().expect("variants");
    let variation_id = |i: usize| format!("var_{index}_{i}");
    let variations: Vec<Value> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({"variationId": variation_id(i), "key": i.to_string(), "name": v["name"],
                   "description": "", "screenshots": []})
        })
        .collect();
    let weights: Vec<f64> = match record["allocation"].as_array() {
        Some(weights) => weights.iter().map(|w| w.as_f64().unwrap()).collect(),
        None => vec![1.0; variants.len()],
    };
    let sum: f64 = weights.iter().sum();
    let split: Vec<Value> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| json!({"variationId": variation_id(i), "weight": w / sum}))
        .collect();
    let status = match record["status"].as_str() {
        Some("running") => "running",
        _ => "stopped",
    };
    let result_summary = match record["decision"].as_str() {
        Some("ship") => Some(("won", variation_id(1))),
        // Both ways GrowthBook says a test was rolled back.
        Some("rollback") if index.is_multiple_of(2) => Some(("lost", variation_id(0))),
        Some("rollback") => Some(("won", variation_id(0))),
        Some("iterate") if index.is_multiple_of(2) => Some(("inconclusive", String::new())),
        Some("iterate") => Some(("dnf", String::new())),
        _ => None,
    };
    let style = match style {
        FieldStyle::Mixed => [
            FieldStyle::Custom,
            FieldStyle::JsonStrings,
            FieldStyle::Tags,
        ][index % 3],
        other => other,
    };
    let mut custom = Map::new();
    let mut tags: Vec<Value> = vec![json!("personalization")];
    for field in PLAYBOOK {
        let Some(value) = record.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        match style {
            FieldStyle::Custom => {
                custom.insert(field.into(), value.clone());
            }
            FieldStyle::JsonStrings => {
                custom.insert(field.into(), json!(value.to_string()));
            }
            _ => match value {
                Value::Array(items) => {
                    for item in items {
                        tags.push(json!(format!("{field}:{}", item.as_str().unwrap())));
                    }
                }
                Value::String(text) => tags.push(json!(format!("{field}:{text}"))),
                other => tags.push(json!(format!("{field}:{other}"))),
            },
        }
    }
    let mut experiment = json!({
        "id": id,
        "trackingKey": record["id"],
        "dateCreated": at_midnight(&record["idea_at"]),
        "dateUpdated": "2026-10-01T08:00:00.000Z",
        "name": record["name"],
        "type": "standard",
        "project": PROJECT,
        "hypothesis": record.get("hypothesis").cloned().unwrap_or(json!("")),
        "description": record.get("notes").cloned().unwrap_or(json!("")),
        "tags": tags,
        "owner": record.get("owner").cloned().unwrap_or(json!("")),
        "archived": false,
        "status": status,
        "autoRefresh": true,
        "hashAttribute": "id",
        "hashVersion": 2,
        "variations": variations,
        "phases": [
            {"name": "Holdout warm-up", "dateStarted": "2020-01-01T00:00:00.000Z",
             "dateEnded": "2020-01-02T00:00:00.000Z", "reasonForStopping": "", "seed": "s0",
             "coverage": 0.1, "trafficSplit": [], "targetingCondition": ""},
            {"name": "Main", "dateStarted": at_midnight(&record["started_at"]),
             "dateEnded": at_midnight(&record["ended_at"]), "reasonForStopping": "",
             "seed": format!("seed-{index}"), "coverage": 1, "trafficSplit": split,
             "targetingCondition": ""}
        ],
        "settings": {"datasourceId": "ds_warehouse", "assignmentQueryId": "user_id",
                     "experimentId": record["id"], "segmentId": "", "queryFilter": "",
                     "inProgressConversions": "include", "attributionModel": "firstExposure",
                     "statsEngine": "frequentist", "goals": [], "secondaryMetrics": [],
                     "guardrails": [], "activationMetric": {"metricId": "", "overrides": {}}},
        "customFields": custom,
    });
    if let Some((status, released)) = result_summary {
        experiment["resultSummary"] = json!({
            "status": status, "winner": released, "conclusions": "",
            "releasedVariationId": released, "excludeFromPayload": false
        });
    }
    let metric = |metric_id: &str, cells: Vec<(f64, f64, f64)>| {
        // (users, numerator, stddev) per variation.
        json!({
            "metricId": metric_id,
            "metricName": metric_id,
            "variations": cells.iter().enumerate().map(|(i, (users, numerator, stddev))| json!({
                "variationId": variation_id(i),
                "variationName": variants[i]["name"],
                "users": users,
                "analyses": [
                    {"engine": "frequentist", "numerator": numerator, "denominator": users,
                     "mean": numerator / users.max(1.0), "stddev": stddev, "percentChange": 0,
                     "ciLow": 0, "ciHigh": 0, "pValue": 0.5},
                    {"engine": "bayesian", "numerator": 0, "denominator": 1, "mean": 0,
                     "stddev": 0, "percentChange": 0, "ciLow": 0, "ciHigh": 0,
                     "chanceToBeatControl": 0.5, "risk": 0}
                ]
            })).collect::<Vec<_>>()
        })
    };
    let count = |v: &Value, f: &str| v[f].as_f64().unwrap_or(0.0);
    let cells = |f: &dyn Fn(&Value) -> (f64, f64)| -> Vec<(f64, f64, f64)> {
        variants
            .iter()
            .map(|v| {
                let n = count(v, "visitors");
                let (sum, stddev) = f(v);
                (n, sum, stddev)
            })
            .collect()
    };
    let proportion = |field: &'static str| {
        move |v: &Value| {
            let n = count(v, "visitors");
            let x = count(v, field);
            let p = x / n.max(1.0);
            (x, (p * (1.0 - p)).sqrt())
        }
    };
    // gbstats' sample variance of a mean metric: (Σx² − (Σx)²/n)/(n − 1).
    let revenue = |v: &Value| {
        let n = count(v, "visitors");
        let sum = count(v, "revenue");
        let sum_sq = count(v, "revenue_sq");
        let variance = if n > 1.0 {
            (sum_sq - sum * sum / n) / (n - 1.0)
        } else {
            0.0
        };
        (sum, variance.max(0.0).sqrt())
    };
    let all = json!({
        "dimension": "All",
        "totalUsers": variants.iter().map(|v| count(v, "visitors")).sum::<f64>(),
        "checks": {"srm": 0.5},
        "metrics": [
            metric(CONVERSIONS, cells(&proportion("conversions"))),
            metric(REVENUE, cells(&revenue)),
            metric(ORDERS, cells(&proportion("orders"))),
        ]
    });
    let halved = |m: &str| {
        metric(
            m,
            variants
                .iter()
                .map(|v| (count(v, "visitors") / 2.0, 1.0, 0.5))
                .collect(),
        )
    };
    let slice = json!({
        "dimension": "browser:chrome",
        "totalUsers": 1,
        "checks": {"srm": 0.5},
        "metrics": [halved(CONVERSIONS), halved(REVENUE), halved(ORDERS)]
    });
    let results = json!({
        "id": format!("snp_{index:05}"),
        "dateUpdated": "2026-10-01T08:00:00.000Z",
        "experimentId": id,
        "phase": "1",
        "dateStart": at_midnight(&record["started_at"]),
        "dateEnd": at_midnight(&record["ended_at"]),
        "dimension": {"type": "none"},
        "settings": experiment["settings"].clone(),
        "queryIds": ["qry_1"],
        "results": [slice, all],
    });
    Served {
        experiment,
        results: Some(results),
    }
}

/// The sample history as GrowthBook serves it.
pub fn sample_served(style: FieldStyle) -> Vec<Served> {
    sample()
        .iter()
        .enumerate()
        .map(|(i, record)| to_growthbook(i, record, style))
        .collect()
}

/// A draft: listed, never results.
pub fn draft(index: usize) -> Served {
    let mut served = to_growthbook(index, &sample()[0], FieldStyle::Custom);
    served.experiment["status"] = json!("draft");
    served.experiment["trackingKey"] = json!(format!("draft-{index}"));
    served.experiment["customFields"] = json!({});
    served.experiment["phases"] = json!([]);
    served.results = None;
    served
}
