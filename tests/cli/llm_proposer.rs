//! The `openai` proposer against a local fake OpenAI-compatible server, one test per thing a
//! model or its server does (issue #4, part 3): what the proposer returns — drafts, rejected
//! drafts with reasons, or the error a run records — and what it sent.

use crate::fake_openai::{closed_port, draft_with, valid_draft, FakeOpenAi, Fixture, Scripted};
use hypod::proposer::openai::{render_messages, LlmConfig, OpenAiProposer, StructuredOutput};
use hypod::proposer::{Proposer, ProposerError, ProposerOutput};
use hypod::validate::{check_draft, References};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn config(base_url: &str) -> LlmConfig {
    LlmConfig {
        base_url: base_url.into(),
        model: "fake-model".into(),
        api_key_env: "HYPOD_TEST_NO_SUCH_KEY".into(),
        timeout_seconds: 2.0,
        max_attempts: 3,
        max_repairs: 2,
        prompt_token_budget: 6_000,
        price_per_million_input: 1.0,
        price_per_million_output: 4.0,
        ..LlmConfig::default()
    }
}

fn proposer(config: LlmConfig) -> OpenAiProposer {
    OpenAiProposer::new(config, None)
        .expect("valid config")
        .with_backoff(
            Duration::from_millis(10),
            Duration::from_millis(40),
            Duration::from_secs(2),
        )
}

async fn run(server: &FakeOpenAi, config: LlmConfig) -> Result<ProposerOutput, ProposerError> {
    let fixture = Fixture::sample();
    let _ = server;
    proposer(config).propose(&fixture.ctx()).await
}

fn titles(output: &ProposerOutput) -> Vec<String> {
    output
        .drafts
        .iter()
        .map(|d| d.draft.title.clone())
        .collect()
}

fn reasons(output: &ProposerOutput) -> String {
    output
        .rejected
        .iter()
        .flat_map(|r| r.reasons.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_valid_answer_gives_drafts_with_usage_cost_and_digests() {
    let server = FakeOpenAi::start(vec![Scripted::proposals(vec![
        valid_draft(0),
        valid_draft(1),
    ])])
    .await;
    let cfg = config(&server.base_url());
    let output = run(&server, cfg.clone()).await.expect("drafts");
    assert_eq!(output.drafts.len(), 2);
    assert!(output.rejected.is_empty());
    let usage = output.usage.clone().expect("usage");
    assert_eq!(
        usage.model, "fake-model-2026",
        "the server's model name is recorded"
    );
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (1000, 200));
    assert!((usage.cost - (1000.0 * 1.0 + 200.0 * 4.0) / 1e6).abs() < 1e-12);
    assert_eq!((usage.attempts, usage.repairs), (1, 0));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.body["model"], "fake-model");
    let format = &request.body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["strict"], true);
    assert_eq!(
        format["json_schema"]["schema"]["additionalProperties"],
        false
    );
    assert!(request.body["max_completion_tokens"].as_u64().unwrap() > 1000);
    let roles: Vec<String> = request.messages().into_iter().map(|(r, _)| r).collect();
    assert_eq!(roles, ["system", "user"]);
    assert!(
        request
            .header("authorization")
            .is_some_and(|h| h.trim() == "Bearer"),
        "no key configured"
    );

    // Provenance: the digests are those `hypod prompt render` shows for the same input.
    let fixture = Fixture::sample();
    let rendered = render_messages(&fixture.ctx(), &cfg, None).unwrap();
    assert_eq!(
        output.prompt_digest.as_deref(),
        Some(rendered.template_digest.as_str())
    );
    assert_eq!(
        output.input_digest.as_deref(),
        Some(rendered.input_digest.as_str())
    );
    assert_eq!(request.messages()[1].1, rendered.user);

    // The run's schema lists what the model may name: the evidence shown, the catalog's names.
    let draft = &format["json_schema"]["schema"]["properties"]["proposals"]["items"]["properties"];
    let ids: Vec<&str> = draft["evidence"]["items"]["properties"]["experiment_id"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(ids, rendered.selection.evidence_ids);
    assert!(!ids.is_empty());
    let enum_of = |value: &Value| -> Vec<String> {
        value["enum"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        enum_of(&draft["segment"]).len(),
        fixture.catalog.segments.len()
    );
    let signals = enum_of(&draft["signals"]["items"]);
    assert!(signals.contains(&"browsing_history".to_string()));
    assert!(
        !signals.contains(&"inferred_health_condition".to_string()),
        "sensitive"
    );
    assert_eq!(
        enum_of(&draft["primary_kpi"]),
        fixture.catalog.commercial_kpis
    );
}

#[tokio::test]
async fn the_api_key_comes_from_the_named_environment_variable() {
    // Cargo sets CARGO_PKG_NAME for test processes: a variable that exists without set_var.
    let server = FakeOpenAi::start(vec![Scripted::proposals(vec![valid_draft(0)])]).await;
    let mut cfg = config(&server.base_url());
    cfg.api_key_env = "CARGO_PKG_NAME".into();
    run(&server, cfg).await.expect("drafts");
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some("Bearer hypod")
    );
}

#[tokio::test]
async fn azure_uses_the_deployment_path_api_version_and_api_key_header() {
    let server = FakeOpenAi::start(vec![Scripted::proposals(vec![valid_draft(0)])]).await;
    let mut cfg = config(&format!("http://{}", server.addr));
    cfg.api_key_env = "CARGO_PKG_NAME".into();
    cfg.azure_deployment = Some("proposals-4o".into());
    cfg.azure_api_version = Some("2024-10-21".into());
    let output = run(&server, cfg).await.expect("drafts");
    assert_eq!(output.drafts.len(), 1);
    let request = &server.requests()[0];
    assert_eq!(
        request.path,
        "/openai/deployments/proposals-4o/chat/completions"
    );
    assert_eq!(request.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(request.header("api-key"), Some("hypod"));
}

#[tokio::test]
async fn a_timeout_is_retried_and_the_next_attempt_counts() {
    let server = FakeOpenAi::start(vec![
        Scripted::proposals(vec![valid_draft(0)]).after(Duration::from_secs(3)),
        Scripted::proposals(vec![valid_draft(1)]),
    ])
    .await;
    let mut cfg = config(&server.base_url());
    cfg.timeout_seconds = 0.4;
    let output = run(&server, cfg).await.expect("second attempt");
    assert_eq!(titles(&output), [valid_draft(1)["title"].as_str().unwrap()]);
    assert_eq!(output.usage.unwrap().attempts, 2);
}

#[tokio::test]
async fn timeouts_use_up_max_attempts_and_fail_with_the_reason() {
    let slow = || Scripted::proposals(vec![valid_draft(0)]).after(Duration::from_secs(3));
    let server = FakeOpenAi::start(vec![slow(), slow(), slow()]).await;
    let mut cfg = config(&server.base_url());
    cfg.timeout_seconds = 0.3;
    cfg.max_attempts = 2;
    let err = run(&server, cfg).await.expect_err("no answer in time");
    match &err {
        ProposerError::Transport { attempts, message } => {
            assert_eq!(*attempts, 2);
            assert!(message.contains("timeout_seconds"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests().len(), 2, "bounded by max_attempts");
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let server = FakeOpenAi::start(vec![
        Scripted::json(429, json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}))
            .header("retry-after", "1"),
        Scripted::proposals(vec![valid_draft(0)]),
    ])
    .await;
    let started = Instant::now();
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("after the wait");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}, the server asked for 1 s",
        started.elapsed()
    );
    assert_eq!(output.drafts.len(), 1);
    assert_eq!(output.usage.unwrap().attempts, 2);
}

#[tokio::test]
async fn rate_limits_without_retry_after_back_off_with_jitter() {
    let server = FakeOpenAi::start(vec![
        Scripted::json(429, json!({"error": {"message": "slow down"}})),
        Scripted::raw(429, "Too Many Requests").header("content-type", "text/plain"),
        Scripted::proposals(vec![valid_draft(0)]),
    ])
    .await;
    let started = Instant::now();
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("third attempt");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "short test backoff"
    );
    assert_eq!(output.usage.unwrap().attempts, 3);
}

#[tokio::test]
async fn insufficient_quota_is_not_retried() {
    let server = FakeOpenAi::start(vec![Scripted::json(
        429,
        json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}),
    )])
    .await;
    let err = run(&server, config(&server.base_url())).await.unwrap_err();
    assert!(
        matches!(&err, ProposerError::Server { status: 429, message } if message.contains("quota")),
        "{err}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_up_to_max_attempts() {
    let server = FakeOpenAi::start(vec![
        Scripted::raw(500, "internal error"),
        Scripted::raw(502, "<html>Bad Gateway</html>").header("content-type", "text/html"),
        Scripted::json(
            503,
            json!({"error": {"message": "overloaded", "code": 503}}),
        ),
        Scripted::proposals(vec![valid_draft(0)]),
    ])
    .await;
    let err = run(&server, config(&server.base_url())).await.unwrap_err();
    match &err {
        ProposerError::Server { status, message } => {
            assert_eq!(*status, 503);
            assert!(
                message.contains("overloaded") && message.contains("after 3 attempts"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests().len(), 3);
    assert_eq!(
        server.remaining(),
        1,
        "the fourth answer was never asked for"
    );
}

#[tokio::test]
async fn a_server_error_then_success_recovers() {
    let server = FakeOpenAi::start(vec![
        Scripted::raw(503, ""),
        Scripted::proposals(vec![valid_draft(0)]),
    ])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("recovered");
    assert_eq!(output.drafts.len(), 1);
}

#[tokio::test]
async fn client_errors_with_numeric_codes_are_reported_not_retried() {
    // llama.cpp's shape: `code` is a number.
    let server = FakeOpenAi::start(vec![Scripted::json(
        400,
        json!({"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 40034, "n_ctx": 8192}}),
    )])
    .await;
    let err = run(&server, config(&server.base_url())).await.unwrap_err();
    match &err {
        ProposerError::Server { status, message } => {
            assert_eq!(*status, 400);
            assert!(message.contains("exceed_context_size_error"), "{message}");
            assert!(message.contains("prompt_token_budget"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests().len(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn a_refused_connection_fails_after_max_attempts() {
    let base = format!("http://127.0.0.1:{}/v1", closed_port());
    let mut cfg = config(&base);
    cfg.max_attempts = 2;
    let fixture = Fixture::sample();
    let err = proposer(cfg).propose(&fixture.ctx()).await.unwrap_err();
    match &err {
        ProposerError::Transport { attempts, message } => {
            assert_eq!(*attempts, 2);
            assert!(message.contains("could not connect"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_retried() {
    let server = FakeOpenAi::start(vec![
        Scripted::raw(200, "<html>proxy says hi</html>"),
        Scripted::proposals(vec![valid_draft(0)]),
    ])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("second attempt");
    assert_eq!(output.drafts.len(), 1);
    assert_eq!(output.usage.unwrap().attempts, 2);
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused() {
    let huge = "x".repeat(1_100_000);
    let server = FakeOpenAi::start(vec![Scripted::completion(&huge)]).await;
    let err = run(&server, config(&server.base_url())).await.unwrap_err();
    assert!(
        matches!(&err, ProposerError::InvalidAnswer(m) if m.contains("larger than")),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_json_is_re_asked_with_the_parse_error() {
    let server = FakeOpenAi::start(vec![
        Scripted::completion("{\"proposals\": [{\"evidence\": [,]}"),
        Scripted::proposals(vec![valid_draft(0)]),
    ])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("repaired");
    assert_eq!(output.drafts.len(), 1);
    assert_eq!(output.usage.as_ref().unwrap().repairs, 1);
    let usage = output.usage.unwrap();
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (2000, 400),
        "both calls count"
    );
    let repair = &server.requests()[1];
    let roles: Vec<String> = repair.messages().into_iter().map(|(r, _)| r).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert!(
        repair.last_message().contains("not valid JSON"),
        "{}",
        repair.last_message()
    );
}

#[tokio::test]
async fn malformed_json_after_the_last_repair_fails_the_run() {
    let bad = || Scripted::completion("Sure! Here are some proposals: 1. ...");
    let server = FakeOpenAi::start(vec![bad(), bad(), bad()]).await;
    let mut cfg = config(&server.base_url());
    cfg.max_repairs = 1;
    let err = run(&server, cfg).await.unwrap_err();
    assert!(
        matches!(&err, ProposerError::InvalidAnswer(m) if m.contains("not valid JSON") && m.contains("1 repair")),
        "{err}"
    );
    assert_eq!(
        server.requests().len(),
        2,
        "one ask plus max_repairs re-asks"
    );
}

#[tokio::test]
async fn a_schema_violation_is_re_asked_naming_the_field() {
    let server = FakeOpenAi::start(vec![
        Scripted::proposals(vec![
            valid_draft(0),
            draft_with(1, json!({"expected_relative_lift": "about three percent"})),
        ]),
        Scripted::proposals(vec![valid_draft(1)]),
    ])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("repaired");
    assert_eq!(output.drafts.len(), 2);
    assert!(output.rejected.is_empty());
    let repair = server.requests()[1].last_message();
    assert!(repair.contains("expected_relative_lift"), "{repair}");
    assert!(
        repair.contains("1 of your proposals were accepted"),
        "{repair}"
    );
}

#[tokio::test]
async fn the_wrong_answer_shape_is_re_asked() {
    let server = FakeOpenAi::start(vec![
        Scripted::completion(&json!([valid_draft(0)]).to_string()),
        Scripted::proposals(vec![valid_draft(0)]),
    ])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("repaired");
    assert_eq!(output.drafts.len(), 1);
    assert!(server.requests()[1]
        .last_message()
        .contains("must be an object"));
}

#[tokio::test]
async fn unknown_experiments_segments_and_signals_are_re_asked_with_the_errors() {
    let server = FakeOpenAi::start(vec![
        Scripted::proposals(vec![
            valid_draft(0),
            draft_with(
                1,
                json!({
                    "evidence": [{"experiment_id": "exp-2099-9999", "finding": "made up"}],
                    "segment": "martians",
                    "signals": ["mind_reading"],
                }),
            ),
        ]),
        Scripted::proposals(vec![valid_draft(0), valid_draft(1)]),
    ])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("repaired");
    assert_eq!(
        titles(&output),
        [
            valid_draft(0)["title"].as_str().unwrap(),
            valid_draft(1)["title"].as_str().unwrap()
        ],
        "the accepted draft repeated in the repair answer is not duplicated"
    );
    let repair = server.requests()[1].last_message();
    for expected in [
        "exp-2099-9999",
        "does not exist",
        "martians",
        "mind_reading",
    ] {
        assert!(
            repair.contains(expected),
            "{expected} missing from {repair}"
        );
    }
}

#[tokio::test]
async fn drafts_still_invalid_after_the_repairs_go_on_to_be_blocked_by_validation() {
    let invalid = draft_with(
        1,
        json!({"evidence": [{"experiment_id": "exp-2099-9999", "finding": "made up"}]}),
    );
    let server = FakeOpenAi::start(vec![
        Scripted::proposals(vec![invalid.clone(), valid_draft(0)]),
        Scripted::proposals(vec![invalid.clone()]),
    ])
    .await;
    let mut cfg = config(&server.base_url());
    cfg.max_repairs = 1;
    let output = run(&server, cfg).await.expect("partial result");
    assert_eq!(server.requests().len(), 2);
    assert!(output.rejected.is_empty());
    // Valid drafts first; the invalid one follows, for the run's validation to block.
    assert_eq!(
        titles(&output)[0],
        valid_draft(0)["title"].as_str().unwrap()
    );
    assert_eq!(output.drafts.len(), 2);
    let fixture = Fixture::sample();
    let refs = References::new(&fixture.experiments, &fixture.catalog);
    let problems = check_draft(&output.drafts[1].draft, &refs);
    assert!(
        problems
            .iter()
            .any(|p| p.to_string().contains("exp-2099-9999")),
        "{problems:?}"
    );
    assert!(check_draft(&output.drafts[0].draft, &refs).is_empty());
}

#[tokio::test]
async fn finish_reason_length_is_re_asked_for_fewer_proposals() {
    let server = FakeOpenAi::start(vec![
        Scripted::choice(json!({"index": 0, "finish_reason": "length", "message": {"content": "{\"proposals\": [{\"evidence\": [{\"experiment_id\": \"exp-20"}})),
        Scripted::proposals(vec![valid_draft(0)]),
    ])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("repaired");
    assert_eq!(output.drafts.len(), 1);
    let requests = server.requests();
    let second = &requests[1];
    assert!(
        second.last_message().contains("cut off"),
        "{}",
        second.last_message()
    );
    assert_eq!(second.messages().len(), 2, "the cut answer is not replayed");
    assert!(
        second.body["max_completion_tokens"].as_u64()
            > requests[0].body["max_completion_tokens"].as_u64()
    );
}

#[tokio::test]
async fn finish_reason_length_without_repairs_fails_as_truncated() {
    let server = FakeOpenAi::start(vec![Scripted::choice(
        json!({"index": 0, "finish_reason": "length", "message": {"content": "{\"proposals\": [{\"evid"}}),
    )])
    .await;
    let mut cfg = config(&server.base_url());
    cfg.max_repairs = 0;
    let err = run(&server, cfg).await.unwrap_err();
    assert!(matches!(err, ProposerError::Truncated), "{err}");
}

#[tokio::test]
async fn a_refusal_fails_the_run_with_the_models_words() {
    let server = FakeOpenAi::start(vec![Scripted::choice(json!({
        "index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": null, "refusal": "I can't help with that request."}
    }))])
    .await;
    let err = run(&server, config(&server.base_url())).await.unwrap_err();
    assert!(
        matches!(&err, ProposerError::Refused(m) if m.contains("can't help")),
        "{err}"
    );
    assert_eq!(server.requests().len(), 1, "a refusal is not re-asked");
}

#[tokio::test]
async fn an_empty_list_is_a_valid_answer_with_nothing_to_queue() {
    let server = FakeOpenAi::start(vec![Scripted::proposals(vec![])]).await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("empty is fine");
    assert!(output.drafts.is_empty() && output.rejected.is_empty());
    assert_eq!(server.requests().len(), 1);
    assert!(output.usage.is_some());
}

#[tokio::test]
async fn an_empty_message_is_re_asked() {
    let server = FakeOpenAi::start(vec![
        Scripted::completion(""),
        Scripted::proposals(vec![valid_draft(0)]),
    ])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("repaired");
    assert_eq!(output.drafts.len(), 1);
    assert!(server.requests()[1].last_message().contains("empty"));
}

#[tokio::test]
async fn oversized_strings_are_rejected_and_kept_only_in_part() {
    let long = "Buy now! ".repeat(20_000);
    let server = FakeOpenAi::start(vec![Scripted::proposals(vec![
        draft_with(0, json!({"title": long})),
        draft_with(1, json!({"rationale": "r".repeat(5_000)})),
        valid_draft(2),
    ])])
    .await;
    let mut cfg = config(&server.base_url());
    cfg.max_repairs = 0;
    let output = run(&server, cfg).await.expect("partial");
    // The 180 kB draft is not a draft at all: kept only as a bounded copy with the reason.
    assert_eq!(output.rejected.len(), 1);
    assert!(
        reasons(&output).contains("bytes long; the limit is"),
        "{}",
        reasons(&output)
    );
    assert!(
        output.rejected[0].raw.to_string().len() < 20_000,
        "kept copy is bounded"
    );
    // The 5 000-character rationale parses; validation will block it for its length.
    assert_eq!(output.drafts.len(), 2);
    let fixture = Fixture::sample();
    let refs = References::new(&fixture.experiments, &fixture.catalog);
    let problems = check_draft(&output.drafts[1].draft, &refs);
    assert!(
        problems
            .iter()
            .any(|p| p.to_string().contains("rationale: is 5000 characters long")),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_draft_claiming_approval_is_never_accepted() {
    let mut claims = valid_draft(0);
    claims["status"] = json!("approved");
    claims["approved_by"] = json!("the model");
    let server = FakeOpenAi::start(vec![
        Scripted::proposals(vec![claims.clone()]),
        Scripted::proposals(vec![claims]),
    ])
    .await;
    let mut cfg = config(&server.base_url());
    cfg.max_repairs = 1;
    let output = run(&server, cfg).await.expect("answer read");
    assert!(output.drafts.is_empty(), "an extra field is never ignored");
    assert_eq!(output.rejected.len(), 1);
    assert!(
        reasons(&output).contains("unknown field `status`"),
        "{}",
        reasons(&output)
    );
    assert!(server.requests()[1].last_message().contains("no others"));
}

#[tokio::test]
async fn extra_fields_of_the_answer_object_are_not_ignored() {
    let server = FakeOpenAi::start(vec![
        Scripted::completion(
            &json!({"proposals": [valid_draft(0)], "status": "approved"}).to_string(),
        ),
        Scripted::proposals(vec![valid_draft(0)]),
    ])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("repaired");
    assert_eq!(output.drafts.len(), 1);
    assert!(server.requests()[1].last_message().contains("\"status\""));
}

#[tokio::test]
async fn a_lenient_envelope_from_llama_cpp_is_read() {
    // No `created`/`object`, finish_reason "", extra fields, usage with extras, no logprobs.
    let content = json!({"proposals": [valid_draft(0)]}).to_string();
    let server = FakeOpenAi::start(vec![Scripted::json(
        200,
        json!({
            "choices": [{"finish_reason": "", "index": 0, "message": {"role": "assistant", "content": content}}],
            "model": "qwen2.5-coder-1.5b-instruct-q4_k_m",
            "usage": {"completion_tokens": 321, "prompt_tokens": 2345, "total_tokens": 2666, "prompt_tokens_details": {"cached_tokens": 0}},
            "timings": {"prompt_n": 2345, "prompt_ms": 15000.0, "predicted_n": 321}
        }),
    )])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("read");
    assert_eq!(output.drafts.len(), 1);
    let usage = output.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (2345, 321));
}

#[tokio::test]
async fn usage_is_estimated_when_the_server_reports_none() {
    let content = json!({"proposals": [valid_draft(0)]}).to_string();
    let server = FakeOpenAi::start(vec![Scripted::json(
        200,
        json!({"choices": [{"finish_reason": "stop", "message": {"content": content}}]}),
    )])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("read");
    let usage = output.usage.unwrap();
    assert!(
        usage.prompt_tokens > 500 && usage.completion_tokens > 50,
        "{usage:?}"
    );
    assert_eq!(
        usage.model, "fake-model",
        "the configured model when none is echoed"
    );
}

#[tokio::test]
async fn out_of_range_numbers_are_caught_even_when_the_schema_has_no_bounds() {
    let wild = draft_with(
        0,
        json!({"expected_relative_lift": 1e15, "expected_latency_ms": -3.0}),
    );
    let server = FakeOpenAi::start(vec![
        Scripted::completion(&json!({ "proposals": [wild] }).to_string()),
        Scripted::proposals(vec![valid_draft(0)]),
    ])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("repaired");
    assert_eq!(output.drafts.len(), 1);
    assert_eq!(output.drafts[0].draft.expected_relative_lift, 0.03);
    let repair = server.requests()[1].last_message();
    assert!(
        repair.contains("expected_relative_lift") && repair.contains("expected_latency_ms"),
        "{repair}"
    );
}

#[tokio::test]
async fn drafts_over_the_run_and_moment_limits_are_rejected_as_such() {
    // The fixture allows 4 per run and 2 per moment; drafts 0, 4 and 8 share a moment.
    let drafts: Vec<Value> = [0, 4, 8, 1, 2, 3].into_iter().map(valid_draft).collect();
    let server = FakeOpenAi::start(vec![Scripted::proposals(drafts)]).await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("read");
    assert_eq!(output.drafts.len(), 4);
    let all = reasons(&output);
    assert!(all.contains("max_proposals"), "{all}");
    assert!(all.contains("per_moment"), "{all}");
}

#[tokio::test]
async fn json_object_mode_puts_the_schema_in_the_prompt() {
    let server = FakeOpenAi::start(vec![Scripted::completion(&format!(
        "```json\n{}\n```",
        json!({"proposals": [valid_draft(0)]})
    ))])
    .await;
    let mut cfg = config(&server.base_url());
    cfg.structured_output = StructuredOutput::JsonObject;
    let output = run(&server, cfg).await.expect("read");
    assert_eq!(output.drafts.len(), 1);
    let request = &server.requests()[0];
    assert_eq!(
        request.body["response_format"],
        json!({"type": "json_object"})
    );
    let user = &request.messages()[1].1;
    assert!(
        user.contains("validates against this JSON schema"),
        "{user}"
    );
    assert!(user.contains("\"additionalProperties\":false"));
}

#[tokio::test]
async fn a_server_rejecting_json_schema_says_to_switch_to_json_object() {
    // llama-cpp-python's (FastAPI) answer to response_format json_schema.
    let server = FakeOpenAi::start(vec![Scripted::json(
        422,
        json!({"detail": [{"type": "literal_error", "loc": ["body", "response_format", "type"], "msg": "Input should be 'text' or 'json_object'", "input": "json_schema"}]}),
    )])
    .await;
    let err = run(&server, config(&server.base_url())).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("structured_output = \"json_object\""),
        "{message}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn llama_cpp_pythons_500_for_json_schema_also_says_to_switch() {
    // What llama-cpp-python 0.3 really answers: a 500 carrying the validation error.
    let answer = || {
        Scripted::json(
            500,
            json!({"error": {"message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}", "type": "internal_server_error", "param": null, "code": null}}),
        )
    };
    let server = FakeOpenAi::start(vec![answer(), answer(), answer()]).await;
    let err = run(&server, config(&server.base_url())).await.unwrap_err();
    assert!(
        matches!(&err, ProposerError::Server { status: 500, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("set structured_output = \"json_object\""),
        "{err}"
    );
}

#[tokio::test]
async fn an_invalid_configuration_is_refused_naming_the_key() {
    let mut cfg = config("http://127.0.0.1:1/v1");
    cfg.max_attempts = 0;
    let err = OpenAiProposer::new(cfg, None).unwrap_err();
    assert!(
        matches!(&err, ProposerError::Config(m) if m.contains("llm.max_attempts")),
        "{err}"
    );
}

#[tokio::test]
async fn grammar_servers_get_length_bounds_and_a_server_rejecting_them_gets_the_schema_without() {
    let server = FakeOpenAi::start(vec![
        Scripted::json(
            400,
            json!({"error": {"message": "Invalid schema for response_format 'hypod_proposals': In context=('properties', 'title'), 'maxLength' is not permitted.", "type": "invalid_request_error", "param": "response_format", "code": null}}),
        ),
        Scripted::proposals(vec![valid_draft(0)]),
    ])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("second try");
    assert_eq!(output.drafts.len(), 1);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let draft = |i: usize| {
        requests[i].body["response_format"]["json_schema"]["schema"]["properties"]["proposals"]
            ["items"]["properties"]["title"]
            .clone()
    };
    assert_eq!(draft(0)["maxLength"], 100, "a local server gets the bounds");
    assert!(
        draft(1).get("maxLength").is_none(),
        "then the schema without them"
    );
    assert_eq!(
        requests[0].body["response_format"]["json_schema"]["schema"]["properties"]["proposals"]
            ["maxItems"],
        4,
        "max_proposals"
    );
}

#[tokio::test]
async fn foreseeable_governance_denials_are_re_asked_and_then_left_to_governance() {
    // purchase_history needs the personalization purpose; the running experiment exp-2026-0243
    // already tests personalized_filters for returning_anonymous at search.
    let undeclared = draft_with(2, json!({"consent_purposes": []}));
    let duplicate = draft_with(
        0,
        json!({"lever": "personalized_filters", "title": "Personalized filters again"}),
    );
    let server = FakeOpenAi::start(vec![
        Scripted::proposals(vec![undeclared.clone(), duplicate.clone()]),
        Scripted::proposals(vec![valid_draft(2), duplicate]),
    ])
    .await;
    let mut cfg = config(&server.base_url());
    cfg.max_repairs = 1;
    let output = run(&server, cfg).await.expect("drafts");
    let repair = server.requests()[1].last_message();
    assert!(repair.contains("consent.purposes-declared"), "{repair}");
    assert!(
        repair.contains("duplicate of the running experiment exp-2026-0243"),
        "{repair}"
    );
    // The corrected draft first; the duplicate goes on, for governance to block and record.
    assert_eq!(
        titles(&output),
        [
            valid_draft(2)["title"].as_str().unwrap(),
            "Personalized filters again"
        ]
    );
    assert!(output.rejected.is_empty());
}

#[tokio::test]
async fn a_draft_the_repair_answer_leaves_out_is_recorded_as_dropped() {
    let invented = draft_with(
        1,
        json!({"evidence": [{"experiment_id": "exp-2099-0001", "finding": "invented"}]}),
    );
    let server = FakeOpenAi::start(vec![
        Scripted::proposals(vec![valid_draft(0), invented]),
        Scripted::proposals(vec![]),
    ])
    .await;
    let output = run(&server, config(&server.base_url()))
        .await
        .expect("drafts");
    assert_eq!(output.drafts.len(), 1);
    assert_eq!(output.rejected.len(), 1);
    let all = reasons(&output);
    assert!(
        all.contains("exp-2099-0001") && all.contains("left out of the repair answer"),
        "{all}"
    );
    let repair = server.requests()[1].last_message();
    assert!(
        repair.contains("a different proposal that avoids these problems"),
        "{repair}"
    );
}
