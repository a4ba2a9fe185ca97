//! The GrowthBook source: reads experiments and their latest results from GrowthBook's REST API
//! (`/api/v1/experiments`, the bulk `/api/v1/experiments/results`, and
//! `/api/v1/experiments/{id}/results` where the bulk route lacks one) and maps each into an
//! import record as DESIGN §12 fixes it (docs/sources.md#growthbook has the table). This module
//! owns the paced HTTP client (about 60 requests a minute per key, `429` + `Retry-After`
//! honoured, 5xx and connection errors retried a bounded number of times), the incremental
//! state (each experiment's `dateUpdated`), and the mapping. The API key is sent as a bearer
//! token and never appears in an error or a log line.

use super::{GrowthbookMetrics, GrowthbookSource, Progress, Pull, Record, SourceError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// The page size asked for (GrowthBook's maximum).
const PAGE_LIMIT: u64 = 100;
/// Requests a minute when `requests_per_minute` is not set (GrowthBook's limit per key).
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 60;
/// Attempts of one request that fails with a 5xx or a connection error.
const MAX_ATTEMPTS: u32 = 5;
/// `429` answers in a row for one request before the source is declared unreachable (each
/// waited out: at 60 s each, half an hour of being told to wait).
const MAX_RATE_LIMITED: u32 = 30;
/// The longest single wait a `Retry-After` may impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// The wait after a `429` without `Retry-After`: GrowthBook's window is a minute.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// One request's time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The results row read: the whole population, not a dimension's slice.
const ALL_DIMENSION: &str = "All";
/// The version of [`State`]'s shape.
const STATE_VERSION: u64 = 1;

/// Pulls every non-draft experiment of the source: records for those new or changed since
/// `previous` (the state the last pull returned), ids in `unchanged` for the others, with no
/// results requested for them.
pub async fn pull(
    name: &str,
    source: &GrowthbookSource,
    api_key: &str,
    previous: Option<&serde_json::Value>,
    progress: &dyn Progress,
) -> Result<Pull, SourceError> {
    let setup = |message: String| SourceError::Setup {
        source_name: name.to_string(),
        message,
    };
    if api_key.trim().is_empty() {
        return Err(setup(format!(
            "the API key in `{}` is empty",
            source.api_key_env
        )));
    }
    let per_minute = source
        .requests_per_minute
        .unwrap_or(DEFAULT_REQUESTS_PER_MINUTE);
    if per_minute == 0 {
        return Err(setup("`requests_per_minute` must be at least 1".into()));
    }
    let base = base_url(&source.url).map_err(setup)?;
    let settings = settings_digest(source);
    let previous = previous
        .and_then(State::read)
        .filter(|state| state.settings == settings)
        .unwrap_or_default();

    let mut client = Client::new(name, base, api_key, &source.api_key_env, per_minute)?;
    let project = source.project.clone();

    // 1. Every experiment, page by page (there is no "updated since" filter).
    let mut listed: Vec<Value> = Vec::new();
    let mut total;
    let mut offset = 0;
    loop {
        let mut page = client
            .page(&["api", "v1", "experiments"], offset, project.as_deref())
            .await?;
        let items = page.take("experiments", &client)?;
        listed.extend(items);
        total = page.total.unwrap_or(listed.len() as u64);
        progress.update(listed.len() as u64, Some(total), "experiments");
        match page.next(offset) {
            Some(next) => offset = next,
            None => break,
        }
    }

    // 2. Which experiments changed since the last pull.
    let mut state = State {
        settings,
        ..State::default()
    };
    let mut unchanged = Vec::new();
    let mut changed: Vec<GbExperiment> = Vec::new();
    let mut keys: HashMap<String, String> = HashMap::new();
    for raw in listed {
        let experiment = GbExperiment::parse(raw, name)?;
        if experiment.status == "draft" {
            continue;
        }
        if let Some(other) = keys.insert(experiment.tracking_key.clone(), experiment.id.clone()) {
            return Err(experiment.error(
                name,
                "id",
                format!(
                    "the tracking key {:?} is also experiment {other}'s: hypod needs one experiment per key",
                    experiment.tracking_key
                ),
            ));
        }
        match previous.experiments.get(&experiment.id) {
            Some(seen)
                if seen.date_updated == experiment.date_updated
                    && seen.key == experiment.tracking_key =>
            {
                if seen.results {
                    unchanged.push(experiment.tracking_key.clone());
                }
                state
                    .experiments
                    .insert(experiment.id.clone(), seen.clone());
            }
            _ => changed.push(experiment),
        }
    }

    // 3. The latest results of the changed ones: the bulk route when it takes fewer requests
    // than one per experiment, then the per-experiment route where the bulk one lacked any.
    let mut results: HashMap<String, GbResults> = HashMap::new();
    let bulk_pages = total.div_ceil(PAGE_LIMIT).max(1);
    if changed.len() as u64 > bulk_pages {
        let wanted: HashSet<&str> = changed.iter().map(|e| e.id.as_str()).collect();
        let mut offset = 0;
        loop {
            let mut page = client
                .page(
                    &["api", "v1", "experiments", "results"],
                    offset,
                    project.as_deref(),
                )
                .await?;
            for raw in page.take("experimentResults", &client)? {
                let parsed = GbResults::parse(raw, &client)?;
                if wanted.contains(parsed.experiment_id.as_str()) {
                    results.insert(parsed.experiment_id.clone(), parsed);
                }
            }
            progress.update(
                results.len() as u64,
                Some(changed.len() as u64),
                "experiment results",
            );
            match page.next(offset) {
                Some(next) => offset = next,
                None => break,
            }
        }
    }
    for experiment in &changed {
        if results.contains_key(&experiment.id) {
            continue;
        }
        let answer = client
            .get(
                &["api", "v1", "experiments", &experiment.id, "results"],
                &[],
                true,
            )
            .await?;
        if let Some(body) = answer {
            let result = body.get("result").cloned().unwrap_or(Value::Null);
            if !result.is_null() {
                let parsed = GbResults::parse(result, &client)?;
                results.insert(experiment.id.clone(), parsed);
            }
        }
        progress.update(
            results.len() as u64,
            Some(changed.len() as u64),
            "experiment results",
        );
    }

    // 4. Each changed experiment with results, as an import record.
    let mut records = Vec::new();
    for experiment in &changed {
        let result = results.get(&experiment.id);
        if let Some(result) = result {
            let value = map_experiment(experiment, result, &source.metrics)
                .map_err(|(field, message)| experiment.error(name, &field, message))?;
            records.push(Record {
                value,
                origin: experiment.origin(),
            });
        }
        // An experiment without results yet is not history: it is remembered as such, and
        // asked again when GrowthBook says it changed.
        state.experiments.insert(
            experiment.id.clone(),
            Seen {
                date_updated: experiment.date_updated.clone(),
                key: experiment.tracking_key.clone(),
                results: result.is_some(),
            },
        );
    }

    Ok(Pull {
        records,
        unchanged,
        state: state.to_value(),
        requests: client.requests,
    })
}

// ---------------------------------------------------------------------------------------------
// The incremental state.

/// What the next pull needs: per GrowthBook experiment id, the `dateUpdated` last read, its
/// tracking key and whether it had results; and a digest of the settings that shape a record
/// (a change of metric ids re-reads everything).
#[derive(Debug, Default)]
struct State {
    settings: String,
    experiments: BTreeMap<String, Seen>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
struct Seen {
    date_updated: String,
    key: String,
    results: bool,
}

impl State {
    /// The state of a previous pull; `None` (read everything) when it is not one this version
    /// wrote.
    fn read(value: &Value) -> Option<State> {
        if value.get("version")?.as_u64()? != STATE_VERSION {
            return None;
        }
        let settings = value.get("settings")?.as_str()?.to_string();
        let experiments =
            serde_json::from_value(value.get("experiments")?.clone()).unwrap_or_default();
        Some(State {
            settings,
            experiments,
        })
    }

    fn to_value(&self) -> Value {
        serde_json::json!({
            "version": STATE_VERSION,
            "settings": self.settings,
            "experiments": self.experiments,
        })
    }
}

fn settings_digest(source: &GrowthbookSource) -> String {
    let shaping = serde_json::json!({
        "url": source.url.trim_end_matches('/'),
        "project": source.project,
        "metrics": source.metrics,
    });
    crate::digest(shaping.to_string().as_bytes())
}

// ---------------------------------------------------------------------------------------------
// The paced HTTP client.

struct Client<'a> {
    name: &'a str,
    http: reqwest::Client,
    base: reqwest::Url,
    key: &'a str,
    /// The name of the variable holding the key, for messages.
    key_env: &'a str,
    interval: Duration,
    next_slot: Option<tokio::time::Instant>,
    requests: u64,
}

/// One page of a paged route.
struct Page {
    body: Value,
    total: Option<u64>,
    limit: u64,
    has_more: bool,
    next_offset: Option<u64>,
}

impl Page {
    /// Takes the page's list `field` out of its body.
    fn take(&mut self, field: &str, client: &Client) -> Result<Vec<Value>, SourceError> {
        match self.body.get_mut(field).map(Value::take) {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(client.unreachable(format!(
                "GrowthBook's answer has no `{field}` list: is `url` GrowthBook's API host?"
            ))),
        }
    }

    /// The next page's offset, if there is one that moves forward and is within `total` (an
    /// answer that keeps saying `hasMore` cannot keep a pull paging forever).
    fn next(&self, offset: u64) -> Option<u64> {
        if !self.has_more {
            return None;
        }
        // `count` may be below the page's slice (the bulk route leaves out experiments without
        // results), so without `nextOffset` the page advances by its `limit`.
        let next = self.next_offset.unwrap_or(offset + self.limit.max(1));
        let within = self.total.is_none_or(|total| next < total);
        (next > offset && within).then_some(next)
    }
}

impl<'a> Client<'a> {
    fn new(
        name: &'a str,
        base: reqwest::Url,
        key: &'a str,
        key_env: &'a str,
        per_minute: u32,
    ) -> Result<Client<'a>, SourceError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("hypod/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| SourceError::Setup {
                source_name: name.to_string(),
                message: format!("cannot build an HTTP client: {}", err.without_url()),
            })?;
        Ok(Client {
            name,
            http,
            base,
            key,
            key_env,
            interval: Duration::from_secs_f64(60.0 / f64::from(per_minute)),
            next_slot: None,
            requests: 0,
        })
    }

    fn unreachable(&self, message: String) -> SourceError {
        SourceError::Unreachable {
            source_name: self.name.to_string(),
            message,
        }
    }

    async fn page(
        &mut self,
        path: &[&str],
        offset: u64,
        project: Option<&str>,
    ) -> Result<Page, SourceError> {
        let mut query = vec![
            ("limit", PAGE_LIMIT.to_string()),
            ("offset", offset.to_string()),
        ];
        if let Some(project) = project {
            query.push(("projectId", project.to_string()));
        }
        let body = self.get(path, &query, false).await?.unwrap_or(Value::Null);
        let number = |field: &str| body.get(field).and_then(Value::as_u64);
        Ok(Page {
            total: number("total"),
            limit: number("limit").unwrap_or(PAGE_LIMIT),
            has_more: body
                .get("hasMore")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            next_offset: number("nextOffset"),
            body,
        })
    }

    /// Waits for the next slot of the pace (`interval` after the previous request).
    async fn pace(&mut self) {
        let now = tokio::time::Instant::now();
        if let Some(slot) = self.next_slot {
            if slot > now {
                tokio::time::sleep_until(slot).await;
            }
        }
        self.next_slot = Some(tokio::time::Instant::now() + self.interval);
    }

    /// The backoff before attempt `failures + 1`: the pace's interval (between 50 ms and 1 s)
    /// doubled after each failure.
    fn backoff(&self, failures: u32) -> Duration {
        let base = self
            .interval
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        base * 2u32.pow(failures.saturating_sub(1).min(6))
    }

    /// `GET` of `path` with `query`: the JSON body, or `None` for a 404 when `missing_ok`.
    /// Paced; `429` waited out; 5xx and connection errors retried up to [`MAX_ATTEMPTS`].
    async fn get(
        &mut self,
        path: &[&str],
        query: &[(&str, String)],
        missing_ok: bool,
    ) -> Result<Option<Value>, SourceError> {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        let shown = format!("GET {}", shown_url(&url));
        let mut failures = 0;
        let mut limited = 0;
        loop {
            self.pace().await;
            self.requests += 1;
            let sent = self
                .http
                .get(url.clone())
                .bearer_auth(self.key)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await;
            let retry = match sent {
                Err(err) => describe(&err),
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        return match response.json::<Value>().await {
                            Ok(body) => Ok(Some(body)),
                            Err(err) if err.is_decode() => Err(self.unreachable(format!(
                                "{shown} answered a body that is not JSON: is `url` GrowthBook's API host?"
                            ))),
                            Err(err) => {
                                failures += 1;
                                if failures >= MAX_ATTEMPTS {
                                    return Err(self.unreachable(format!(
                                        "{shown} failed {failures} times; the last: {}",
                                        describe(&err)
                                    )));
                                }
                                tokio::time::sleep(self.backoff(failures)).await;
                                continue;
                            }
                        };
                    }
                    match status.as_u16() {
                        401 | 403 => {
                            return Err(SourceError::Unauthorized {
                                source_name: self.name.to_string(),
                                message: format!(
                                    "{shown} answered {status}: check the API key in {} (`api_key_env`)",
                                    self.key_env
                                ),
                            })
                        }
                        404 if missing_ok => return Ok(None),
                        429 => {
                            limited += 1;
                            if limited > MAX_RATE_LIMITED {
                                return Err(self.unreachable(format!(
                                    "{shown} answered 429 (rate limited) {limited} times in a row"
                                )));
                            }
                            let wait = retry_after(response.headers(), MAX_RETRY_AFTER)
                                .unwrap_or(DEFAULT_RETRY_AFTER)
                                .min(MAX_RETRY_AFTER);
                            tracing::info!(
                                source = self.name,
                                wait_ms = wait.as_millis() as u64,
                                "GrowthBook rate limit reached: waiting as Retry-After says"
                            );
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        code if code >= 500 || code == 408 => format!("answered {status}"),
                        _ => {
                            let body = response.text().await.unwrap_or_default();
                            let body = crate::shorten(&body.replace(self.key, "***"), 200);
                            return Err(SourceError::Setup {
                                source_name: self.name.to_string(),
                                message: format!(
                                    "{shown} answered {status}: {body} (check `url` and `project`)"
                                ),
                            });
                        }
                    }
                }
            };
            failures += 1;
            if failures >= MAX_ATTEMPTS {
                return Err(self.unreachable(format!(
                    "{shown} failed {failures} times; the last: {retry}"
                )));
            }
            tracing::info!(
                source = self.name,
                attempt = failures,
                reason = retry.as_str(),
                "GrowthBook request failed: retrying"
            );
            tokio::time::sleep(self.backoff(failures)).await;
        }
    }
}

/// The configured host as a base URL; an error says what is wrong with it.
fn base_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|err| {
        format!("`url` is not a URL ({err}): give GrowthBook's API host, like https://api.growthbook.io")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`url` must be http or https, found {}",
            url.scheme()
        ));
    }
    if url.query().is_some() || url.cannot_be_a_base() {
        return Err("`url` must be a host (and path), without a query".into());
    }
    Ok(url)
}

/// A URL for messages: without user name or password.
fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// A transport error with its causes, without its URL.
fn describe(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() {
        format!("timed out after {} s", REQUEST_TIMEOUT.as_secs())
    } else if error.is_connect() {
        "could not connect".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

/// The wait a `Retry-After` header asks for, in seconds or as an HTTP date (GrowthBook's
/// `429`s write either), at most `max` (a date in the past: none); the push reads its answers
/// with it too, with its own bound.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap, max: Duration) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(max.as_secs_f64())));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO).min(max))
}

// ---------------------------------------------------------------------------------------------
// GrowthBook's shapes (the fields hypod reads; others are ignored).

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GbExperiment {
    id: String,
    tracking_key: String,
    #[serde(default)]
    date_created: Option<String>,
    #[serde(default)]
    date_updated: String,
    name: String,
    #[serde(default)]
    hypothesis: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    owner: Option<String>,
    status: String,
    #[serde(default)]
    variations: Vec<GbVariation>,
    #[serde(default)]
    phases: Vec<GbPhase>,
    #[serde(default)]
    result_summary: Option<GbResultSummary>,
    #[serde(default)]
    custom_fields: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GbVariation {
    variation_id: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GbPhase {
    #[serde(default)]
    date_started: Option<String>,
    #[serde(default)]
    date_ended: Option<String>,
    #[serde(default)]
    traffic_split: Vec<GbSplit>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GbSplit {
    variation_id: String,
    weight: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GbResultSummary {
    #[serde(default)]
    status: String,
    #[serde(default)]
    released_variation_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GbResults {
    experiment_id: String,
    #[serde(default)]
    results: Vec<GbResultRow>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GbResultRow {
    dimension: String,
    #[serde(default)]
    metrics: Vec<GbMetric>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GbMetric {
    metric_id: String,
    #[serde(default)]
    variations: Vec<GbMetricVariation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GbMetricVariation {
    variation_id: String,
    #[serde(default)]
    users: Option<f64>,
    #[serde(default)]
    analyses: Vec<GbAnalysis>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GbAnalysis {
    numerator: f64,
    stddev: f64,
}

impl GbExperiment {
    fn parse(raw: Value, source_name: &str) -> Result<GbExperiment, SourceError> {
        let id = raw
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        serde_path_to_error::deserialize(raw).map_err(|err| SourceError::Record {
            source_name: source_name.to_string(),
            origin: format!("GrowthBook experiment {id}"),
            field: err.path().to_string(),
            message: format!(
                "GrowthBook's experiment does not have the documented shape: {}",
                err.inner()
            ),
        })
    }

    /// `GrowthBook experiment exp_abc (checkout-1)`.
    fn origin(&self) -> String {
        format!(
            "GrowthBook experiment {} ({})",
            self.id,
            crate::shorten(&self.tracking_key, 128)
        )
    }

    fn error(&self, source_name: &str, field: &str, message: String) -> SourceError {
        SourceError::Record {
            source_name: source_name.to_string(),
            origin: self.origin(),
            field: field.to_string(),
            message,
        }
    }
}

impl GbResults {
    fn parse(raw: Value, client: &Client) -> Result<GbResults, SourceError> {
        serde_path_to_error::deserialize(raw).map_err(|err| {
            client.unreachable(format!(
                "GrowthBook's results do not have the documented shape at `{}`: {}",
                err.path(),
                err.inner()
            ))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The mapping (DESIGN §12).

/// A problem with one experiment: the import field it is about and what is wrong.
type FieldProblem = (String, String);

fn problem(field: &str, message: impl Into<String>) -> FieldProblem {
    (field.to_string(), message.into())
}

/// How a playbook field's value is read from a custom field or a tag.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Text,
    Date,
    List,
    Number,
}

/// The playbook fields read from `customFields` (else `key:value` tags), in the import
/// format's order, and whether the import requires them.
const PLAYBOOK: [(&str, Shape, bool); 12] = [
    ("moment", Shape::Text, true),
    ("lever", Shape::Text, false),
    ("segment", Shape::Text, false),
    ("channel", Shape::Text, false),
    ("rendering", Shape::Text, false),
    ("region", Shape::Text, false),
    ("primary_kpi", Shape::Text, true),
    ("signals", Shape::List, false),
    ("latency_ms_p75_delta", Shape::Number, false),
    ("decided_at", Shape::Date, false),
    ("source_proposal", Shape::Text, false),
    ("attributed_revenue", Shape::Number, false),
];

/// One GrowthBook experiment and its latest results as an import record.
fn map_experiment(
    experiment: &GbExperiment,
    results: &GbResults,
    metrics: &GrowthbookMetrics,
) -> Result<Value, FieldProblem> {
    let mut playbook: HashMap<&str, Value> = HashMap::new();
    for (field, shape, required) in PLAYBOOK {
        match playbook_value(experiment, field, shape)? {
            Some(value) => {
                playbook.insert(field, value);
            }
            None if required => {
                return Err(problem(
                    field,
                    format!(
                        "is required and is neither a custom field `{field}` nor a tag `{field}:…` on the experiment in GrowthBook"
                    ),
                ))
            }
            None => {}
        }
    }
    let text = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Value::String(t.to_string()))
    };
    let status = match experiment.status.as_str() {
        "running" => "running",
        "stopped" => "concluded",
        other => {
            return Err(problem(
                "status",
                format!(
                    "GrowthBook status {other:?} is not one hypod knows (draft, running, stopped)"
                ),
            ))
        }
    };
    let phase = experiment.phases.last();

    let mut record = Map::new();
    let mut put = |field: &str, value: Option<Value>| {
        if let Some(value) = value {
            record.insert(field.to_string(), value);
        }
    };
    put("id", Some(Value::String(experiment.tracking_key.clone())));
    put("external_id", Some(Value::String(experiment.id.clone())));
    put("name", Some(Value::String(experiment.name.clone())));
    put("hypothesis", text(&experiment.hypothesis));
    for field in [
        "moment",
        "lever",
        "segment",
        "channel",
        "rendering",
        "region",
        "primary_kpi",
        "signals",
    ] {
        put(field, playbook.remove(field));
    }
    put("status", Some(Value::String(status.into())));
    put(
        "idea_at",
        date_of("idea_at", experiment.date_created.as_deref())?,
    );
    put(
        "started_at",
        date_of("started_at", phase.and_then(|p| p.date_started.as_deref()))?,
    );
    put(
        "ended_at",
        date_of("ended_at", phase.and_then(|p| p.date_ended.as_deref()))?,
    );
    put("decided_at", playbook.remove("decided_at"));
    put(
        "decision",
        Some(Value::String(decision(experiment)?.into())),
    );
    put("owner", text(&experiment.owner));
    put(
        "latency_ms_p75_delta",
        playbook.remove("latency_ms_p75_delta"),
    );
    put("allocation", allocation(experiment, phase)?);
    put("attributed_revenue", playbook.remove("attributed_revenue"));
    put("source_proposal", playbook.remove("source_proposal"));
    put("notes", text(&experiment.description));
    put("variants", Some(arms(experiment, results, metrics)?));
    Ok(Value::Object(record))
}

/// A playbook field from the custom field of its name, else from `name:value` tags.
fn playbook_value(
    experiment: &GbExperiment,
    field: &str,
    shape: Shape,
) -> Result<Option<Value>, FieldProblem> {
    let custom = experiment
        .custom_fields
        .as_ref()
        .and_then(|fields| fields.get(field))
        .filter(|value| match value {
            Value::Null => false,
            Value::String(text) => !text.trim().is_empty(),
            Value::Array(items) => !items.is_empty(),
            _ => true,
        });
    if let Some(value) = custom {
        let holds = |what: &str| {
            problem(
                field,
                format!(
                    "the custom field holds {}, expected {what}",
                    crate::shorten(&value.to_string(), 80)
                ),
            )
        };
        // A string may hold the JSON value itself (`"[\"a\",\"b\"]"`, `"5.9"`, `"\"search\""`):
        // read as JSON when that gives the field's shape, else as the text it is (a lever
        // called `2024` stays text).
        let value = match value {
            Value::String(text) => {
                let text = text.trim();
                match (shape, serde_json::from_str::<Value>(text)) {
                    (Shape::Text | Shape::Date, Ok(parsed @ Value::String(_)))
                    | (Shape::List, Ok(parsed @ Value::Array(_)))
                    | (Shape::Number, Ok(parsed @ Value::Number(_))) => parsed,
                    _ => Value::String(text.to_string()),
                }
            }
            other => other.clone(),
        };
        return match (shape, value) {
            (Shape::Text, Value::String(text)) => Ok(Some(Value::String(text.trim().into()))),
            (Shape::Date, Value::String(text)) => date_of(field, Some(&text)),
            (Shape::Number, Value::Number(number)) => Ok(Some(Value::Number(number))),
            (Shape::Number, Value::String(text)) => number_of(field, &text).map(Some),
            (Shape::List, Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(text) => Ok(Value::String(text.trim().into())),
                    _ => Err(holds("a list of text")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|items| Some(Value::Array(items))),
            (Shape::List, Value::String(text)) => Ok(Some(Value::Array(
                text.split(['|', ','])
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.into()))
                    .collect(),
            ))),
            (Shape::Text | Shape::Date, _) => Err(holds("text")),
            (Shape::Number, _) => Err(holds("a number")),
            (Shape::List, _) => Err(holds("a list of text")),
        };
    }
    let prefix = format!("{field}:");
    let tagged: Vec<&str> = experiment
        .tags
        .iter()
        .filter_map(|tag| tag.trim().strip_prefix(prefix.as_str()))
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect();
    if tagged.is_empty() {
        return Ok(None);
    }
    if shape == Shape::List {
        return Ok(Some(Value::Array(
            tagged
                .iter()
                .map(|v| Value::String(v.to_string()))
                .collect(),
        )));
    }
    if tagged.iter().any(|other| *other != tagged[0]) {
        return Err(problem(
            field,
            format!(
                "the experiment has tags `{field}:` with different values ({}): keep one",
                tagged.join(", ")
            ),
        ));
    }
    match shape {
        Shape::Number => number_of(field, tagged[0]).map(Some),
        Shape::Date => date_of(field, Some(tagged[0])),
        _ => Ok(Some(Value::String(tagged[0].to_string()))),
    }
}

fn number_of(field: &str, text: &str) -> Result<Value, FieldProblem> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| {
            problem(
                field,
                format!("{:?} is not a number", crate::shorten(text, 80)),
            )
        })
}

/// A GrowthBook date or date-time as the import format's `YYYY-MM-DD` (UTC); empty is absent.
fn date_of(field: &str, text: Option<&str>) -> Result<Option<Value>, FieldProblem> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let date = chrono::DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&chrono::Utc).date_naive())
        .ok()
        .or_else(|| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .or_else(|| {
            text.get(..10)
                .filter(|_| text.as_bytes().get(10) == Some(&b'T'))
                .and_then(|day| chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok())
        })
        .ok_or_else(|| {
            problem(
                field,
                format!("{:?} is not a date", crate::shorten(text, 80)),
            )
        })?;
    Ok(Some(Value::String(date.format("%Y-%m-%d").to_string())))
}

/// `resultSummary.status`: won → ship (rollback when the released variation is the baseline),
/// lost → rollback, dnf/inconclusive → iterate; no summary yet → none.
fn decision(experiment: &GbExperiment) -> Result<&'static str, FieldProblem> {
    let Some(summary) = &experiment.result_summary else {
        return Ok("none");
    };
    let baseline = experiment
        .variations
        .first()
        .map(|v| v.variation_id.as_str());
    Ok(match summary.status.trim() {
        "" => "none",
        "won"
            if !summary.released_variation_id.is_empty()
                && Some(summary.released_variation_id.as_str()) == baseline =>
        {
            "rollback"
        }
        "won" => "ship",
        "lost" => "rollback",
        "dnf" | "inconclusive" => "iterate",
        other => {
            return Err(problem(
                "decision",
                format!(
                    "GrowthBook's resultSummary.status {:?} is not one hypod knows (won, lost, dnf, inconclusive)",
                    crate::shorten(other, 40)
                ),
            ))
        }
    })
}

/// The latest phase's `trafficSplit` weights in the order of `variations`.
fn allocation(
    experiment: &GbExperiment,
    phase: Option<&GbPhase>,
) -> Result<Option<Value>, FieldProblem> {
    let Some(phase) = phase.filter(|p| !p.traffic_split.is_empty()) else {
        return Ok(None);
    };
    experiment
        .variations
        .iter()
        .map(|variation| {
            phase
                .traffic_split
                .iter()
                .find(|split| split.variation_id == variation.variation_id)
                .and_then(|split| serde_json::Number::from_f64(split.weight))
                .map(Value::Number)
                .ok_or_else(|| {
                    problem(
                        "allocation",
                        format!(
                            "the latest phase's trafficSplit has no weight for variation {:?}",
                            variation.variation_id
                        ),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|weights| Some(Value::Array(weights)))
}

/// The arms from the results row of dimension `All`: variation 0 the control, `users` →
/// visitors, metric numerators → sums, `revenue_sq` from the revenue metric's `stddev`.
fn arms(
    experiment: &GbExperiment,
    results: &GbResults,
    metrics: &GrowthbookMetrics,
) -> Result<Value, FieldProblem> {
    let row = results
        .results
        .iter()
        .find(|row| row.dimension == ALL_DIMENSION)
        .ok_or_else(|| {
            problem(
                "variants",
                "GrowthBook's latest results have no row for the dimension `All`",
            )
        })?;
    let metric = |id: &str, role: &str| {
        row.metrics
            .iter()
            .find(|m| m.metric_id == id)
            .ok_or_else(|| {
                problem(
                    "variants",
                    format!("GrowthBook's latest results do not hold the {role} metric {id:?} (`[source.metrics]`)"),
                )
            })
    };
    let conversions = metric(&metrics.conversions, "conversions")?;
    let revenue = metric(&metrics.revenue, "revenue")?;
    let orders = match &metrics.orders {
        Some(id) => Some(metric(id, "orders")?),
        None => None,
    };
    let mut variants = Vec::new();
    for (index, variation) in experiment.variations.iter().enumerate() {
        let field = |name: &str| format!("variants[{index}].{name}");
        let of = |metric, name: &str| cell_of(metric, variation, &field(name));
        let (cell, converted) = of(conversions, "conversions")?;
        let users = cell
            .users
            .ok_or_else(|| problem(&field("visitors"), "GrowthBook gives no `users`"))?;
        let visitors = count(users).ok_or_else(|| {
            problem(
                &field("visitors"),
                format!("`users` {users} is not a whole number ≥ 0"),
            )
        })?;
        let conversion_count = count(converted.numerator).ok_or_else(|| {
            problem(
                &field("conversions"),
                format!(
                    "the numerator {} is not a whole number ≥ 0",
                    converted.numerator
                ),
            )
        })?;
        let (_, earned) = of(revenue, "revenue")?;
        let n = visitors as f64;
        let sum = earned.numerator;
        // gbstats' sample variance s² = (Σx² − (Σx)²/n)/(n − 1), inverted.
        let sum_sq = if visitors == 0 {
            0.0
        } else {
            earned.stddev * earned.stddev * (n - 1.0) + sum * sum / n
        };
        let finite = |name: &str, value: f64| {
            serde_json::Number::from_f64(value)
                .map(Value::Number)
                .ok_or_else(|| problem(&field(name), format!("{value} is not a finite number")))
        };
        let name = if variation.name.trim().is_empty() {
            variation.key.trim()
        } else {
            variation.name.trim()
        };
        let mut variant = Map::new();
        variant.insert("name".into(), Value::String(name.into()));
        variant.insert("control".into(), Value::Bool(index == 0));
        variant.insert("visitors".into(), Value::from(visitors));
        variant.insert("conversions".into(), Value::from(conversion_count));
        if let Some(orders) = orders {
            let (_, placed) = of(orders, "orders")?;
            let placed = count(placed.numerator).ok_or_else(|| {
                problem(
                    &field("orders"),
                    format!(
                        "the numerator {} is not a whole number ≥ 0",
                        placed.numerator
                    ),
                )
            })?;
            variant.insert("orders".into(), Value::from(placed));
        }
        variant.insert("revenue".into(), finite("revenue", sum)?);
        variant.insert("revenue_sq".into(), finite("revenue_sq", sum_sq)?);
        variants.push(Value::Object(variant));
    }
    Ok(Value::Array(variants))
}

/// A metric's result for one variation, and its first analysis.
fn cell_of<'m>(
    metric: &'m GbMetric,
    variation: &GbVariation,
    field: &str,
) -> Result<(&'m GbMetricVariation, &'m GbAnalysis), FieldProblem> {
    let cell = metric
        .variations
        .iter()
        .find(|v| v.variation_id == variation.variation_id)
        .ok_or_else(|| {
            problem(
                field,
                format!(
                    "the metric {:?} has no result for variation {:?}",
                    metric.metric_id, variation.variation_id
                ),
            )
        })?;
    let analysis = cell.analyses.first().ok_or_else(|| {
        problem(
            field,
            format!(
                "the metric {:?} has no analysis for variation {:?}",
                metric.metric_id, variation.variation_id
            ),
        )
    })?;
    Ok((cell, analysis))
}

/// A count GrowthBook gives as a number: whole (to rounding) and not negative.
fn count(value: f64) -> Option<u64> {
    let rounded = value.round();
    (value.is_finite() && rounded >= 0.0 && (value - rounded).abs() <= 1e-6 * rounded.max(1.0))
        .then_some(rounded as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates_within_its_bound() {
        let max = Duration::from_secs(300);
        let with = |value: &str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
            retry_after(&headers, max)
        };
        assert_eq!(with("3"), Some(Duration::from_secs(3)));
        assert_eq!(with("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
        // Far away, or not a number of seconds at all: never past the bound, never negative.
        assert_eq!(with("Fri, 31 Dec 9999 23:59:59 GMT"), Some(max));
        assert_eq!(with("86400"), Some(max));
        assert_eq!(with("inf"), None);
        assert_eq!(with("-5"), None);
    }

    #[test]
    fn counts_are_whole_and_not_negative() {
        assert_eq!(count(7443.0), Some(7443));
        assert_eq!(count(7_443.000_000_1), Some(7443));
        assert_eq!(count(7443.5), None);
        assert_eq!(count(-1.0), None);
        assert_eq!(count(f64::NAN), None);
    }

    #[test]
    fn dates_read_date_times_in_utc() {
        let date = |text| date_of("idea_at", Some(text)).unwrap();
        assert_eq!(
            date("2024-11-01T00:00:00.000Z"),
            Some(Value::from("2024-11-01"))
        );
        assert_eq!(date("2024-11-01"), Some(Value::from("2024-11-01")));
        assert_eq!(date("2024-11-01T23:30:00"), Some(Value::from("2024-11-01")));
        assert_eq!(date(" "), None);
        assert!(date_of("idea_at", Some("yesterday")).is_err());
    }
}
