//! The review API under load: requests per second and p99 latency of listing 50 proposals out
//! of 100 000 (`GET /api/v1/proposals?limit=50`, with a bearer token), against the same
//! server's hello-world route (`/healthz`), measured side by side in one run with `wrk`, on
//! SQLite and (when reachable) PostgreSQL. Prints the ratio list/hello.
//!
//! `cargo bench --bench api_list` (needs `wrk` on PATH; `API_BENCH_PROPOSALS`, default
//! 100000; `API_BENCH_CONNECTIONS`, default 64; `API_BENCH_SECONDS`, default 10;
//! `HYPOD_TEST_DATABASE_URL` for PostgreSQL, default postgres://postgres@127.0.0.1:5432/postgres).

#[path = "support/mod.rs"]
mod support;

use hypod::domain::{Enrichment, Proposal, ProposalStatus, Provenance, Role};
use hypod::store::{Store, TokenRecord};
use std::process::Command;
use std::time::Instant;
use support::{audit_key, draft, env_number, run_record, serve};

/// Fills `store` with `count` pending proposals (in runs of 5 000) and one reviewer token.
async fn seed(store: &dyn Store, count: usize) -> String {
    let base = draft();
    let now = chrono::Utc::now();
    let mut made = 0;
    while made < count {
        let batch = (count - made).min(5_000);
        let run = run_record();
        let proposals: Vec<Proposal> = (0..batch)
            .map(|i| {
                let mut draft = base.clone();
                draft.title = format!("Proposal {}", made + i);
                draft.segment = format!("segment-{}", (made + i) % 40);
                Proposal {
                    id: uuid::Uuid::now_v7().to_string(),
                    run_id: run.id.clone(),
                    status: ProposalStatus::PendingReview,
                    created_at: now,
                    updated_at: now,
                    draft,
                    enrichment: Enrichment {
                        priority: ((made + i) * 7919 % 100_003) as f64,
                        ..Enrichment::default()
                    },
                    verdicts: Vec::new(),
                    provenance: Provenance {
                        proposer: "bench".into(),
                        ..Provenance::default()
                    },
                    approvals_required: 1,
                    superseded_by: None,
                }
            })
            .collect();
        store
            .record_run(&run, &proposals, &[], None, None)
            .await
            .expect("seed proposals");
        made += batch;
    }
    let secret = "hypod_bench_token_0123456789abcdef";
    store
        .create_token(
            &TokenRecord {
                id: uuid::Uuid::now_v7().to_string(),
                user: "bench".into(),
                role: Role::Reviewer,
                created_at: now,
                created_by: "bench".into(),
                revoked_at: None,
                kind: Default::default(),
                hash: String::new(),
            },
            &hypod::store::token_hash(secret),
        )
        .await
        .expect("token");
    secret.to_string()
}

/// wrk's requests per second and p99 latency in milliseconds.
fn wrk(url: &str, token: Option<&str>, connections: usize, seconds: usize) -> (f64, f64) {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let output = command
        .arg(url)
        .output()
        .expect("run wrk (apt install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"));
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_duration_ms(v.trim()))
        .unwrap_or(f64::NAN);
    if text.contains("Non-2xx") {
        panic!("wrk saw errors:\n{text}");
    }
    (rps, p99)
}

fn parse_duration_ms(text: &str) -> f64 {
    let (number, factor) = if let Some(v) = text.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (text, 1.0)
    };
    number.trim().parse::<f64>().unwrap_or(f64::NAN) * factor
}

fn measure(backend: &str, url: &str, dir: &std::path::Path) {
    let count = env_number("API_BENCH_PROPOSALS", 100_000);
    let connections = env_number("API_BENCH_CONNECTIONS", 64);
    let seconds = env_number("API_BENCH_SECONDS", 10);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let seeding = Instant::now();
    let token = runtime.block_on(async {
        let store = hypod::store::open(url, audit_key())
            .await
            .expect("open the database");
        seed(store.as_ref(), count).await
    });
    eprintln!(
        "{backend}: {count} proposals seeded in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let config = dir.join("hypod.toml");
    std::fs::write(
        &config,
        format!("[database]\nurl = \"{url}\"\n[schedule]\ncron = \"0 0 3 1 1 *\"\nmissed = \"skip\"\n[server]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .expect("config");
    let (mut child, addr) = serve(&config);
    let hello = wrk(
        &format!("http://{addr}/healthz"),
        None,
        connections,
        seconds,
    );
    let list = wrk(
        &format!("http://{addr}/api/v1/proposals?limit=50"),
        Some(&token),
        connections,
        seconds,
    );
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "{backend:<10} hello-world {:>9.0} req/s p99 {:>6.1} ms | list 50 of {count} {:>8.0} req/s p99 {:>6.1} ms | ratio {:.1} %",
        hello.0,
        hello.1,
        list.0,
        list.1,
        list.0 / hello.0 * 100.0
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    measure("sqlite", &sqlite, dir.path());
    support::on_fresh_postgres(|url| {
        let pg_dir = tempfile::tempdir().expect("temp dir");
        measure("postgres", url, pg_dir.path());
    });
}
