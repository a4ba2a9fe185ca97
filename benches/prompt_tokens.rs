//! Prompt size against history size (issue #4, part 5): renders the `openai` proposer's prompt
//! for synthetic histories of 100, 10 000 and 100 000 experiments and prints, per size and
//! budget, the estimated prompt tokens, how much evidence fit, and the time to analyse and to
//! render. The prompt must stay within `prompt_token_budget` whatever the history's size.
//!
//! `cargo bench --bench prompt_tokens` (add `-- --quick` for 100 and 10 000 only). With
//! `HYPOD_BENCH_TOKENIZE_URL=http://127.0.0.1:PORT` (a llama.cpp server, e.g. from
//! tools/real-llm/serve.sh) it also counts the prompt with the model's own tokenizer.

#[path = "../tests/synthetic/mod.rs"]
mod synthetic;

use chrono::{NaiveDate, TimeZone, Utc};
use hypod::analysis::{analyze, AnalysisSettings};
use hypod::governance::catalog::Catalog;
use hypod::proposer::openai::{render_messages, LlmConfig};
use hypod::proposer::ProposalContext;
use std::time::Instant;

/// Tokens of `text` by the tokenizer of the llama.cpp server at `url` (`POST /tokenize`).
fn tokenize(runtime: &tokio::runtime::Runtime, url: &str, text: &str) -> Option<usize> {
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{}/tokenize", url.trim_end_matches('/')))
            .json(&serde_json::json!({ "content": text }))
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        body["tokens"].as_array().map(Vec::len)
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let tokenizer = std::env::var("HYPOD_BENCH_TOKENIZE_URL").ok();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let catalog = Catalog::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/catalog.toml"
    )))
    .expect("test catalog");
    let sizes: &[usize] = if quick {
        &[100, 10_000]
    } else {
        &[100, 10_000, 100_000]
    };
    println!(
        "{:>11} {:>7} {:>12} {:>13} {:>7} {:>11} {:>13} {:>12}",
        "experiments",
        "budget",
        "est. tokens",
        "model tokens",
        "within",
        "evidence",
        "analyse (ms)",
        "render (ms)"
    );
    for &n in sizes {
        let experiments = synthetic::history(n);
        let started = Instant::now();
        let analysis = analyze(
            &experiments,
            &AnalysisSettings::new(NaiveDate::from_ymd_opt(2026, 11, 24).expect("date")),
        );
        let analyse_ms = started.elapsed().as_secs_f64() * 1000.0;
        for budget in [4_000, 12_000] {
            let config = LlmConfig {
                prompt_token_budget: budget,
                ..LlmConfig::default()
            };
            let ctx = ProposalContext {
                experiments: &experiments,
                analysis: &analysis,
                catalog: &catalog,
                open_proposals: &[],
                recent_rejections: &[],
                max_proposals: 8,
                per_moment: 3,
                now: Utc.with_ymd_and_hms(2026, 11, 24, 2, 0, 0).unwrap(),
            };
            let started = Instant::now();
            let rendered = render_messages(&ctx, &config, None).expect("render");
            let render_ms = started.elapsed().as_secs_f64() * 1000.0;
            assert!(rendered.estimated_tokens <= budget);
            let counted = tokenizer.as_deref().and_then(|url| {
                Some(
                    tokenize(&runtime, url, &rendered.system)?
                        + tokenize(&runtime, url, &rendered.user)?,
                )
            });
            println!(
                "{:>11} {:>7} {:>12} {:>13} {:>7} {:>11} {:>13.1} {:>12.1}",
                n,
                budget,
                rendered.estimated_tokens,
                counted.map_or("-".to_string(), |c| c.to_string()),
                if rendered.estimated_tokens <= budget {
                    "yes"
                } else {
                    "NO"
                },
                format!(
                    "{}/{}",
                    rendered.selection.evidence_shown, rendered.selection.evidence_total
                ),
                analyse_ms,
                render_ms
            );
        }
    }
}
