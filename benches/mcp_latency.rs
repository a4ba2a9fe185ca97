//! Tool call latency of the MCP server on the sample history: `hypod mcp --as bench` spawned as
//! an editor would (stdio), driven by rmcp's client, one call at a time. Each tool is called
//! `MCP_BENCH_CALLS` times (default 200; `submit_draft` a tenth as often, each a run of its
//! own) after a warm-up; the baseline, in the same run and process, is `tools/list` (the
//! protocol's round trip with no use case behind it). Prints p50, p95 and max per tool, and
//! each p95 as a multiple of the baseline's.
//!
//! `cargo bench --bench mcp_latency`

use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const KEY: &str = "bench-audit-key-0123456789";

fn hypod(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hypod"));
    command
        .args(args)
        .current_dir(dir)
        .env("HYPOD_CONFIG", dir.join("hypod.toml"))
        .env("HYPOD_AUDIT_KEY", KEY)
        .env("HYPOD_MCP__SUBMISSIONS_PER_MINUTE", "1000")
        .env("HYPOD_MCP__SUBMISSIONS_PER_DAY", "100000")
        .env_remove("HYPOD_NOW");
    command
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let output = hypod(dir, args).output().expect("run hypod");
    assert!(
        output.status.success(),
        "hypod {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// (p50, p95, max) in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.95), at(1.0))
}

async fn call(client: &RunningService<RoleClient, ClientConfig>, tool: &'static str, args: &Value) {
    let arguments = args.as_object().cloned().unwrap_or_default();
    let result = client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert_ne!(result.is_error, Some(true), "{tool}: {:?}", result.content);
}

fn main() {
    let calls: usize = std::env::var("MCP_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    std::fs::write(
        dir.join("hypod.toml"),
        format!(
            "[database]\nurl = \"sqlite://hypod.db\"\n[governance]\npolicies = \"{}\"\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies")
        ),
    )
    .expect("config");
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sample-history.ndjson"
    );
    ok(dir, &["import", sample]);
    ok(dir, &["run", "--no-sync"]);
    ok(
        dir,
        &["token", "create", "--user", "bench", "--role", "reviewer"],
    );
    let listed: Value = serde_json::from_str(&ok(
        dir,
        &["queue", "list", "--status", "pending_review", "--json"],
    ))
    .expect("JSON");
    let proposal = listed[0]["id"].as_str().expect("a proposal").to_string();
    let shown: Value =
        serde_json::from_str(&ok(dir, &["queue", "show", &proposal, "--json"])).expect("JSON");
    let experiment = shown["proposal"]["draft"]["evidence"][0]["experiment_id"]
        .as_str()
        .expect("a cited experiment")
        .to_string();
    let mut draft: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/draft.json"
        ))
        .expect("draft"),
    )
    .expect("JSON");
    draft["expected_latency_ms"] = json!(20.0);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let transport = TokioChildProcess::new(tokio::process::Command::from(hypod(
            dir,
            &["mcp", "--as", "bench"],
        )))
        .expect("hypod mcp starts");
        let client = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("mcp-latency-bench", "1"),
        )
        .serve(transport)
        .await
        .expect("handshake");
        let tools: Vec<(&'static str, Value, usize)> = vec![
            ("list_proposals", json!({"limit": 50}), calls),
            ("get_proposal", json!({"id": proposal}), calls),
            ("get_experiment", json!({"id": experiment}), calls),
            ("program_health", json!({}), calls),
            ("list_levers", json!({}), calls),
            ("explain_policy", json!({"proposal_id": proposal}), calls),
            ("submit_draft", json!({"draft": draft}), (calls / 10).max(5)),
        ];
        // Warm-up: the analysis cache, the database pages, the policy files.
        for (tool, args, _) in &tools {
            if *tool != "submit_draft" {
                call(&client, tool, args).await;
            }
        }
        let mut baseline = Vec::with_capacity(calls);
        for _ in 0..calls {
            let start = Instant::now();
            client.list_all_tools().await.expect("tools/list");
            baseline.push(start.elapsed());
        }
        let (b50, b95, bmax) = percentiles(baseline);
        println!("MCP tool call latency over stdio, sample history (246 experiments), {calls} calls per tool");
        println!(
            "{:<16} {:>6} {:>9} {:>9} {:>9} {:>10}",
            "call", "n", "p50 ms", "p95 ms", "max ms", "p95/base"
        );
        println!(
            "{:<16} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>10}",
            "tools/list", calls, b50, b95, bmax, "1.0"
        );
        for (tool, args, n) in &tools {
            let mut samples = Vec::with_capacity(*n);
            for _ in 0..*n {
                let start = Instant::now();
                call(&client, tool, args).await;
                samples.push(start.elapsed());
            }
            let (p50, p95, max) = percentiles(samples);
            println!(
                "{:<16} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>10.1}",
                tool,
                n,
                p50,
                p95,
                max,
                p95 / b95
            );
        }
        client.cancel().await.expect("close");
    });
}
