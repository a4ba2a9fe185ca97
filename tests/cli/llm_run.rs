//! The `openai` proposer end to end through the real binary, against the fake
//! OpenAI-compatible server: `hypod run --json` with `[proposer] kind = "openai"` queues the
//! valid drafts, blocks the invalid ones with reasons, records what was not a draft at all,
//! records model, tokens, latency and cost; a failing model fails the run (or falls back);
//! `hypod prompt render` prints exactly what the run sends.

use crate::common::{sample_experiments, stderr, Workspace};
use crate::fake_openai::{draft_with, valid_draft, FakeOpenAi, Scripted};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::Output;

pub(crate) fn openai_config(base_url: &str, extra_llm: &str) -> String {
    format!(
        r#"
[proposer]
kind = "openai"
max_proposals = 4
per_moment = 2

[llm]
base_url = "{base_url}"
model = "fake-model"
api_key_env = "HYPOD_TEST_NO_SUCH_KEY"
timeout_seconds = 10
max_attempts = 2
max_repairs = 1
prompt_token_budget = 6000
price_per_million_input = 1.0
price_per_million_output = 4.0
{extra_llm}
"#
    )
}

/// Runs hypod off the async runtime (the fake server lives on it).
async fn hypod(ws: &Workspace, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let cwd = ws.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::common::hypod_in(&cwd, &cwd.join("hypod.toml"), &refs)
    })
    .await
    .expect("hypod ran")
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            stderr(output)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_queues_valid_drafts_blocks_invalid_ones_and_records_usage() {
    let invented = draft_with(
        2,
        json!({"evidence": [{"experiment_id": "exp-2099-0001", "finding": "invented"}]}),
    );
    let mut claims_approval = valid_draft(3);
    claims_approval["status"] = json!("approved");
    let server = FakeOpenAi::start(vec![
        Scripted::proposals(vec![
            valid_draft(0),
            valid_draft(1),
            invented.clone(),
            claims_approval.clone(),
        ]),
        Scripted::proposals(vec![invented, claims_approval]),
    ])
    .await;
    let ws = Workspace::with_config(&openai_config(&server.base_url(), ""));
    ws.import_sample();
    let output = hypod(&ws, &["run", "--json"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let result = json_of(&output);
    let run = &result["run"];
    assert_eq!(run["status"], "succeeded", "{result:#}");
    assert_eq!(run["proposer"], "openai");
    assert!(run["fell_back"].is_null());

    // Usage and cost: two calls (the ask and one repair).
    let usage = &run["usage"];
    assert_eq!(usage["model"], "fake-model-2026");
    assert_eq!(usage["prompt_tokens"], 2000);
    assert_eq!(usage["completion_tokens"], 400);
    assert_eq!(usage["repairs"], 1);
    assert_eq!(usage["attempts"], 2);
    assert!(usage["latency_ms"].as_u64().is_some());
    let cost = usage["cost"].as_f64().unwrap();
    assert!(
        (cost - (2000.0 + 400.0 * 4.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );

    // Valid drafts queued, the invented evidence blocked with its reason.
    let proposals = result["proposals"].as_array().unwrap();
    let status_of = |title: &str| {
        proposals
            .iter()
            .find(|p| p["title"] == title)
            .map(|p| p["status"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        status_of(valid_draft(0)["title"].as_str().unwrap()).as_deref(),
        Some("pending_review")
    );
    assert_eq!(
        status_of(valid_draft(1)["title"].as_str().unwrap()).as_deref(),
        Some("pending_review")
    );
    let blocked = proposals
        .iter()
        .find(|p| p["title"] == valid_draft(2)["title"])
        .expect("the invented-evidence draft is kept");
    assert_eq!(blocked["status"], "blocked");
    let failed: Vec<String> = blocked["failed_rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        failed
            .iter()
            .any(|m| m.contains("exp-2099-0001") && m.contains("does not exist")),
        "{failed:?}"
    );

    // The draft that claimed approval is not a draft: dropped, with the reason recorded.
    assert_eq!(run["summary"]["dropped"], 1);
    let rejected = run["rejected_drafts"].as_array().unwrap();
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0]["reasons"]
        .to_string()
        .contains("unknown field `status`"));
    assert!(proposals.iter().all(|p| p["status"] != "approved"));

    // Every queued proposal cites experiments that exist.
    let ids: HashSet<String> = sample_experiments()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    for proposal in proposals.iter().filter(|p| p["status"] == "pending_review") {
        for id in proposal["evidence"].as_array().unwrap() {
            assert!(ids.contains(id.as_str().unwrap()), "{id}");
        }
    }

    // Provenance on each proposal.
    let id = proposals[0]["id"].as_str().unwrap();
    let shown = json_of(&hypod(&ws, &["queue", "show", id, "--json"]).await);
    let provenance = &shown["proposal"]["provenance"];
    assert_eq!(provenance["proposer"], "openai");
    assert_eq!(provenance["model"], "fake-model-2026");
    assert_eq!(provenance["prompt_digest"].as_str().unwrap().len(), 64);
    assert_eq!(provenance["input_digest"].as_str().unwrap().len(), 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_model_fails_the_run_with_the_reason_and_writes_nothing() {
    let down = || {
        Scripted::json(
            503,
            json!({"error": {"message": "model overloaded", "code": 503}}),
        )
    };
    let server = FakeOpenAi::start(vec![down(), down()]).await;
    let ws = Workspace::with_config(&openai_config(&server.base_url(), ""));
    ws.import_sample();
    let output = hypod(&ws, &["run", "--json"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let result = json_of(&output);
    assert_eq!(result["run"]["status"], "failed");
    let error = result["run"]["error"].as_str().unwrap();
    assert!(
        error.contains("503")
            && error.contains("model overloaded")
            && error.contains("after 2 attempts"),
        "{error}"
    );
    assert!(stderr(&output).contains("model overloaded"));
    let queue = json_of(&hypod(&ws, &["queue", "list", "--json"]).await);
    assert_eq!(queue, json!([]), "nothing half-written");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_model_falls_back_to_builtin_when_configured() {
    let server = FakeOpenAi::start(vec![Scripted::choice(json!({
        "index": 0, "finish_reason": "stop",
        "message": {"content": null, "refusal": "I cannot help with that."}
    }))])
    .await;
    let ws = Workspace::with_config(&openai_config(&server.base_url(), "fallback = \"builtin\""));
    ws.import_sample();
    let output = hypod(&ws, &["run", "--json"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let result = json_of(&output);
    assert_eq!(result["run"]["status"], "succeeded");
    assert_eq!(result["run"]["proposer"], "builtin");
    let why = result["run"]["fell_back"].as_str().unwrap();
    assert!(
        why.contains("refused") && why.contains("cannot help"),
        "{why}"
    );
    assert!(!result["proposals"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn prompt_render_prints_what_the_run_sends() {
    let server = FakeOpenAi::start(vec![Scripted::proposals(vec![valid_draft(0)])]).await;
    let ws = Workspace::with_config(&openai_config(&server.base_url(), ""));
    ws.import_sample();
    let rendered = json_of(&hypod(&ws, &["prompt", "render", "--json"]).await);
    assert!(rendered["estimated_tokens"].as_u64().unwrap() <= 6000);
    assert_eq!(rendered["response_format"]["type"], "json_schema");
    let user = rendered["user"].as_str().unwrap();
    assert!(
        user.contains("\n- [deny] ") && !user.contains("{{"),
        "the policy set in plain words (descriptions, not message templates): {user}"
    );
    let text = hypod(&ws, &["prompt", "render"]).await;
    assert!(text.status.success(), "{}", stderr(&text));
    let plain = String::from_utf8_lossy(&text.stdout);
    assert!(plain.starts_with("=== system (embedded)"), "{plain}");

    let output = hypod(&ws, &["run", "--json"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let sent = &server.requests()[0];
    let messages = sent.messages();
    assert_eq!(messages[0].1, rendered["system"].as_str().unwrap());
    assert_eq!(messages[1].1, rendered["user"].as_str().unwrap());
    assert_eq!(
        sent.body["response_format"], rendered["response_format"],
        "the same response format"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_llm_section_is_a_usage_error_naming_the_key() {
    let ws = Workspace::with_config(&openai_config(
        "http://127.0.0.1:9/v1",
        "azure_deployment = \"proposals\"",
    ));
    let output = hypod(&ws, &["run", "--json"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("llm.azure_api_version"),
        "{}",
        stderr(&output)
    );
}
