//! A proposal's page on a large history, over HTTP against the real `hypod serve`: for a
//! synthetic history (tests/synthetic, default 100 000 experiments) imported into a fresh
//! database with one pending proposal citing one of its experiments, the time of the first
//! `GET /ui/proposals/{id}` and `GET /api/v1/proposals/{id}` after the server starts (it analyses
//! the history), then the median and 99th percentile of the following ones (answered from the
//! analysis cache), each route on a freshly started server. Also how often the server analysed
//! the history (`hypod_analysis_computations_total`: once per server). Goal (issue #26): ≤ 50 ms
//! after the first request.
//!
//! `cargo bench --bench proposal_page` (`PAGE_BENCH_EXPERIMENTS`, default 100000;
//! `PAGE_BENCH_REPEAT` requests after the first, default 200; PostgreSQL too when
//! `HYPOD_TEST_DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres) answers to
//! `psql`, unless `PAGE_BENCH_SQLITE_ONLY` is set).

#[path = "support/mod.rs"]
mod support;
#[path = "../tests/synthetic/mod.rs"]
mod synthetic;

use hypod::app::App;
use hypod::domain::Role;
use hypod::history::import::Format;
use std::time::{Duration, Instant};
use support::{audit_key, env_number, queue_proposal, serve};

/// Imports `n` synthetic experiments into the database of `config_path`, queues a proposal
/// citing one of them and creates a viewer's token: (proposal id, token).
fn seed(config_path: &std::path::Path, n: usize) -> (String, String) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let config = hypod::config::Config::load_with_env(Some(config_path), &[]).expect("config");
        let app = App::new(config).with_audit_key(audit_key());
        let mut body = String::new();
        for experiment in synthetic::history(n) {
            body.push_str(&serde_json::to_string(&experiment).expect("an experiment"));
            body.push('\n');
        }
        app.import_body(Format::Ndjson, &body, "bench")
            .await
            .expect("import the history");
        let proposal = queue_proposal(&app, &format!("syn-{:06}", n / 2)).await;
        let token = app
            .create_token(
                "bench",
                Role::Viewer,
                hypod::domain::TokenKind::Person,
                "bench",
            )
            .await
            .expect("a token")
            .token;
        (proposal, token)
    })
}

/// Median and 99th percentile of `times`, in milliseconds.
fn summary(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.99))
}

/// One route on a freshly started server: the first request's time in ms, the median and p99
/// of the next `repeat`, and the analyses the server made.
fn measure_route(
    config_path: &std::path::Path,
    path: &str,
    token: &str,
    repeat: usize,
) -> (f64, f64, f64, f64) {
    let (mut child, addr) = serve(config_path);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let http = reqwest::Client::new();
    let get = |path: &str, auth: bool| {
        let mut request = http.get(format!("http://{addr}{path}"));
        if auth {
            request = request.bearer_auth(token);
        }
        runtime.block_on(async {
            let started = Instant::now();
            let response = request.send().await.expect("an answer");
            let status = response.status();
            let body = response.text().await.expect("a body");
            let took = started.elapsed();
            assert!(status.is_success(), "{path}: {status}: {body}");
            (took, body)
        })
    };
    let (first, body) = get(path, true);
    assert!(
        body.contains("syn-"),
        "{path} does not show the cited experiment"
    );
    let times: Vec<Duration> = (0..repeat).map(|_| get(path, true).0).collect();
    let (_, metrics) = get("/metrics", false);
    let computations = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hypod_analysis_computations_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    let _ = child.kill();
    let _ = child.wait();
    let (median, p99) = summary(times);
    (first.as_secs_f64() * 1e3, median, p99, computations)
}

fn measure(backend: &str, url: &str, n: usize, repeat: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("hypod.toml");
    std::fs::write(
        &config_path,
        format!(
            "[database]\nurl = \"{url}\"\n[governance]\npolicies = \"{}\"\n[schedule]\ncron = \"0 0 3 1 1 *\"\nmissed = \"skip\"\n[server]\nlisten = \"127.0.0.1:0\"\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
        ),
    )
    .expect("write the configuration");
    let seeding = Instant::now();
    let (proposal, token) = seed(&config_path, n);
    eprintln!(
        "{backend}: {n} experiments imported in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    for (name, path) in [
        ("ui", format!("/ui/proposals/{proposal}")),
        ("api", format!("/api/v1/proposals/{proposal}")),
    ] {
        let (first, median, p99, computations) = measure_route(&config_path, &path, &token, repeat);
        println!(
            "{backend:<10} {name:<4} {n:>11} {first:>10.1} {median:>9.2} {p99:>9.2} {computations:>13}{}",
            if p99 <= 50.0 {
                "  (goal ≤ 50 ms: met)"
            } else {
                "  (goal ≤ 50 ms: NOT met)"
            }
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_number("PAGE_BENCH_EXPERIMENTS", 100_000);
    let repeat = env_number("PAGE_BENCH_REPEAT", 200).max(1);
    println!("a proposal page over HTTP, first request then median / p99 of {repeat}; ms");
    println!(
        "{:<10} {:<4} {:>11} {:>10} {:>9} {:>9} {:>13}",
        "backend", "page", "experiments", "first", "median", "p99", "analyses"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    measure("sqlite", &sqlite, n, repeat);
    if std::env::var_os("PAGE_BENCH_SQLITE_ONLY").is_some() {
        return;
    }
    support::on_fresh_postgres(|url| measure("postgres", url, n, repeat));
}
