//! A fake OpenAI-compatible server for tests: axum on 127.0.0.1:0, answering each request with
//! the next scripted response (status, headers, body, delay) and recording what it was sent.
//! When the script is used up it answers 500, so a test that sends more than it expects fails
//! loudly. Also: the sample history and test catalog as a `ProposalContext`, and drafts that
//! are valid against them.
#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, Uri};
use axum::Router;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use hypod::analysis::{analyze, Analysis, AnalysisSettings};
use hypod::governance::catalog::Catalog;
use hypod::history::import::{parse_text, Format};
use hypod::history::Experiment;
use hypod::proposer::ProposalContext;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/sample-history.ndjson"
);
pub const CATALOG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/catalog.toml");

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Scripted {
    pub fn raw(status: u16, body: impl Into<String>) -> Scripted {
        Scripted {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn json(status: u16, body: Value) -> Scripted {
        Scripted::raw(status, body.to_string())
    }

    /// A chat completion whose message content is `content`.
    pub fn completion(content: &str) -> Scripted {
        Scripted::choice(json!({
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": content}
        }))
    }

    /// A chat completion with the given choice, usage 1000 prompt / 200 completion tokens.
    pub fn choice(choice: Value) -> Scripted {
        Scripted::json(
            200,
            json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "fake-model-2026",
                "choices": [choice],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200}
            }),
        )
    }

    /// A completion whose content is `{"proposals": drafts}`.
    pub fn proposals(drafts: Vec<Value>) -> Scripted {
        Scripted::completion(&json!({ "proposals": drafts }).to_string())
    }

    pub fn header(mut self, name: &str, value: &str) -> Scripted {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Scripted {
        self.delay = delay;
        self
    }
}

/// A request the fake server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The content of the request's messages, in order.
    pub fn messages(&self) -> Vec<(String, String)> {
        self.body["messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .map(|m| {
                        (
                            m["role"].as_str().unwrap_or("").to_string(),
                            m["content"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn last_message(&self) -> String {
        self.messages()
            .last()
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Scripted>,
    requests: Vec<Recorded>,
}

pub struct FakeOpenAi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeOpenAi {
    pub async fn start(script: Vec<Scripted>) -> FakeOpenAi {
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            requests: Vec::new(),
        }));
        let shared = state.clone();
        let router = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move { answer(state, method, uri, headers, body).await }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake server");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeOpenAi { addr, state, task }
    }

    /// The base URL to configure (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn remaining(&self) -> usize {
        self.state.lock().unwrap().script.len()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let next = {
        let mut state = state.lock().unwrap();
        state.requests.push(Recorded {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        state.script.pop_front()
    };
    let scripted = next.unwrap_or_else(|| {
        Scripted::json(
            500,
            json!({"error": {"message": "the fake server's script is used up"}}),
        )
    });
    if !scripted.delay.is_zero() {
        tokio::time::sleep(scripted.delay).await;
    }
    let mut response = Response::builder().status(scripted.status);
    for (name, value) in &scripted.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    response
        .body(Body::from(scripted.body))
        .expect("scripted response")
}

/// A local port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    port
}

/// The sample history, its analysis and the test catalog.
pub struct Fixture {
    pub experiments: Vec<Experiment>,
    pub analysis: Analysis,
    pub catalog: Catalog,
    pub now: DateTime<Utc>,
    pub max_proposals: usize,
    pub per_moment: usize,
}

impl Fixture {
    pub fn sample() -> Fixture {
        let text = std::fs::read_to_string(SAMPLE).expect("sample history");
        let report = parse_text("sample-history.ndjson", Format::Ndjson, &text);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        Fixture::with(report.experiments)
    }

    pub fn with(experiments: Vec<Experiment>) -> Fixture {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 2, 0, 0).unwrap();
        let settings = AnalysisSettings::new(NaiveDate::from_ymd_opt(2026, 11, 24).unwrap());
        let analysis = analyze(&experiments, &settings);
        let catalog = Catalog::load(std::path::Path::new(CATALOG)).expect("test catalog");
        Fixture {
            experiments,
            analysis,
            catalog,
            now,
            max_proposals: 4,
            per_moment: 2,
        }
    }

    pub fn ctx(&self) -> ProposalContext<'_> {
        ProposalContext {
            experiments: &self.experiments,
            analysis: &self.analysis,
            catalog: &self.catalog,
            open_proposals: &[],
            recent_rejections: &[],
            max_proposals: self.max_proposals,
            per_moment: self.per_moment,
            now: self.now,
        }
    }
}

/// A draft that is valid against the sample history and the test catalog (its evidence a test
/// of its lever); `n` varies it.
pub fn valid_draft(n: usize) -> Value {
    let (moment, lever, segment, signal, evidence) = match n % 4 {
        0 => (
            "search",
            "personal_autocomplete",
            "returning_anonymous",
            "browsing_history",
            "exp-2024-0001",
        ),
        1 => (
            "product_detail",
            "delivery_promise",
            "all_visitors",
            "coarse_location",
            "exp-2024-0012",
        ),
        2 => (
            "cart_checkout",
            "payment_options",
            "logged_in_repeat",
            "purchase_history",
            "exp-2025-0083",
        ),
        _ => (
            "re_engagement",
            "winback_sequence",
            "lapsed_90d",
            "purchase_history",
            "exp-2025-0039",
        ),
    };
    json!({
        "evidence": [{"experiment_id": evidence, "finding": "The earlier test moved conversion in the expected direction."}],
        "rationale": "The lever showed a positive but underpowered effect; a larger test settles it.",
        "moment": moment,
        "lever": lever,
        "segment": segment,
        "channel": "web",
        "rendering": "server",
        "signals": [signal],
        "consent_purposes": ["personalization"],
        "change": format!("Apply {lever} for {segment} (variant {n})."),
        "title": format!("{lever} for {segment} #{n}"),
        "hypothesis": format!("If we apply {lever} for {segment} at {moment}, then conversion rate will rise by 3%, because the earlier test pointed that way."),
        "primary_kpi": "conversion_rate",
        "guardrail_kpis": ["average_order_value"],
        "expected_relative_lift": 0.03,
        "expected_latency_ms": 5.0,
        "risk": "low",
        "rollback_plan": "Turn the flag off."
    })
}

/// `valid_draft(n)` with fields replaced.
pub fn draft_with(n: usize, changes: Value) -> Value {
    let mut draft = valid_draft(n);
    if let (Some(target), Some(changes)) = (draft.as_object_mut(), changes.as_object()) {
        for (key, value) in changes {
            target.insert(key.clone(), value.clone());
        }
    }
    draft
}
