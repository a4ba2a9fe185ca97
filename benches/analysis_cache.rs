//! What the analysis cache saves a reader: for synthetic histories (tests/synthetic, default
//! 10 000 and 100 000 experiments) imported into a fresh SQLite database, the time of one
//! experiment's statistics (`GET /api/v1/experiments/{id}` without HTTP) as every request paid
//! it before the cache — load the history, read the learning loop's origins, analyse — against
//! the same through `App` (first request: computed once; then answered from the cache), and a
//! proposal with its evidence (`GET /api/v1/proposals/{id}`, the proposal page's view) and the
//! program health from the cache. Goal (issue #26): a proposal page on 100 000 experiments in
//! ≤ 50 ms after the first request.
//!
//! `cargo bench --bench analysis_cache` (`HYPOD_BENCH_SIZES=1000,10000` to choose sizes,
//! `HYPOD_BENCH_REPEAT` cached requests per figure, default 200).

#[path = "support/mod.rs"]
mod support;
#[path = "../tests/synthetic/mod.rs"]
mod synthetic;

use hypod::analysis::AnalysisReport;
use hypod::app::load::{analysis_settings, origins};
use hypod::app::App;
use hypod::history::import::Format;
use std::time::{Duration, Instant};
use support::{audit_key, env_number, queue_proposal};

/// Median and 99th percentile of `times`, in milliseconds.
fn summary(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.99))
}

async fn measure(n: usize, repeat: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("hypod.toml");
    std::fs::write(
        &config_path,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n[governance]\npolicies = \"{}\"\n",
            dir.path().join("hypod.db").display(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
        ),
    )
    .expect("write the configuration");
    let config = hypod::config::Config::load_with_env(Some(&config_path), &[]).expect("config");
    let app = App::new(config.clone()).with_audit_key(audit_key());
    let mut body = String::new();
    for experiment in synthetic::history(n) {
        body.push_str(&serde_json::to_string(&experiment).expect("an experiment"));
        body.push('\n');
    }
    app.import_body(Format::Ndjson, &body, "bench")
        .await
        .expect("import the history");
    let id = format!("syn-{:06}", n / 2);
    let proposal = queue_proposal(&app, &id).await;

    // Before the cache: every request loaded and analysed the history.
    let mut uncached = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let governance = app.governance().expect("policies");
        let store = app.store().await.expect("store");
        let experiments = store.load_experiments().await.expect("load");
        let mut settings = analysis_settings(&config, &governance, hypod::now());
        settings.origins = origins(store.as_ref(), &experiments)
            .await
            .expect("origins");
        AnalysisReport::new(experiments, settings)
            .experiment(&id)
            .expect("the experiment");
        uncached.push(started.elapsed());
    }

    // A fresh App: its first request computes, the others read the cache.
    let app = App::new(config).with_audit_key(audit_key());
    let started = Instant::now();
    app.experiment(&id).await.expect("the experiment");
    let first = started.elapsed();
    let mut cached = Vec::with_capacity(repeat);
    let mut pages = Vec::with_capacity(repeat);
    let mut health = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let started = Instant::now();
        app.experiment(&id).await.expect("the experiment");
        cached.push(started.elapsed());
        let started = Instant::now();
        let view = app.show(&proposal).await.expect("the proposal");
        assert!(view.evidence[0].statistics.is_some());
        pages.push(started.elapsed());
        let started = Instant::now();
        let _ = app
            .analyze()
            .await
            .expect("the analysis")
            .program
            .experiments;
        health.push(started.elapsed());
    }
    assert_eq!(app.read_stats().computations, 1, "computed once");
    let (uncached, _) = summary(uncached);
    let (cached_median, cached_p99) = summary(cached);
    let (page_median, page_p99) = summary(pages);
    let (health_median, health_p99) = summary(health);
    println!(
        "{n:>11} {uncached:>11.1} {:>11.1} {cached_median:>8.2} / {cached_p99:<7.2} {page_median:>8.2} / {page_p99:<7.2} {health_median:>8.2} / {health_p99:<7.2}{}",
        first.as_secs_f64() * 1e3,
        if n >= 100_000 {
            if page_p99 <= 50.0 {
                "  (goal ≤ 50 ms: met)"
            } else {
                "  (goal ≤ 50 ms: NOT met)"
            }
        } else {
            ""
        }
    );
}

fn main() {
    let sizes: Vec<usize> = std::env::var("HYPOD_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    let repeat = env_number("HYPOD_BENCH_REPEAT", 200).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "one experiment's statistics, a proposal with its evidence and program health, SQLite; ms"
    );
    println!("(uncached: load + analyse per request, as before the cache; cached: median / p99 of {repeat})\n");
    println!(
        "{:>11} {:>11} {:>11} {:>18} {:>18} {:>18}",
        "experiments", "uncached", "first", "experiment", "proposal", "health"
    );
    for n in sizes {
        runtime.block_on(measure(n, repeat));
    }
}
