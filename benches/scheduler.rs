//! The scheduler's own cost per slot — claim, lease renewal, fenced commit, i.e. what the
//! daemon adds to a run — against the baseline of recording the same (empty) run without a
//! slot, side by side, on SQLite (a file in a temporary folder) and on PostgreSQL (a fresh
//! database on HYPOD_TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres;
//! skipped with a note when unreachable).
//!
//! Run with `cargo bench --bench scheduler` (HYPOD_BENCH_SLOTS slots, default 300).

use chrono::Utc;
use hypod::domain::{Claim, RunRecord, RunStatus, RunSummary, Trigger};
use hypod::store::Store;
use std::time::{Duration, Instant};

fn run_record(id: String) -> RunRecord {
    let now = Utc::now();
    RunRecord {
        id,
        trigger: Trigger::Cli,
        status: RunStatus::Succeeded,
        started_at: now,
        finished_at: now,
        proposer: "builtin".into(),
        fell_back: None,
        error: None,
        summary: RunSummary::default(),
        usage: None,
        policy_digest: String::new(),
        input_digest: String::new(),
        rejected_drafts: Vec::new(),
        notes: Vec::new(),
        audit_head: None,
        stage_seconds: Vec::new(),
    }
}

/// (baseline per run, scheduled per slot), as mean durations.
async fn measure(store: &dyn Store, slots: usize) -> (Duration, Duration) {
    let lease = Duration::from_secs(30);
    let started = Instant::now();
    for i in 0..slots {
        store
            .record_run(&run_record(format!("plain-{i}")), &[], &[], None, None)
            .await
            .expect("record");
    }
    let baseline = started.elapsed() / slots as u32;
    let started = Instant::now();
    for i in 0..slots {
        let key = format!("schedule:bench-{i}");
        let fence = match store.claim_slot(&key, "bench", lease).await.expect("claim") {
            Claim::Claimed(fence) => fence,
            other => panic!("{other:?}"),
        };
        assert!(store.renew_lease(&fence, lease).await.expect("renew"));
        store
            .record_run(
                &run_record(format!("slot-{i}")),
                &[],
                &[],
                None,
                Some(&fence),
            )
            .await
            .expect("record");
    }
    (baseline, started.elapsed() / slots as u32)
}

fn report(backend: &str, (baseline, scheduled): (Duration, Duration)) {
    println!(
        "{backend:<10} record a run {:>8.0} µs | claim + renew + fenced record {:>8.0} µs | ratio {:.2} | scheduler overhead {:>6.0} µs per slot",
        baseline.as_secs_f64() * 1e6,
        scheduled.as_secs_f64() * 1e6,
        scheduled.as_secs_f64() / baseline.as_secs_f64(),
        (scheduled.as_secs_f64() - baseline.as_secs_f64()) * 1e6,
    );
}

fn main() {
    let slots: usize = std::env::var("HYPOD_BENCH_SLOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = runtime
        .block_on(hypod::store::open(&url, bench_key()))
        .expect("SQLite");
    report("sqlite", runtime.block_on(measure(store.as_ref(), slots)));

    let server = std::env::var("HYPOD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("hypod_bench_{}", std::process::id());
    let admin = |sql: String| {
        let server = server.clone();
        async move {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&server).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await?;
            Ok::<(), sqlx::Error>(())
        }
    };
    if let Err(e) = runtime.block_on(admin(format!("CREATE DATABASE {name}"))) {
        println!("postgres   skipped: {server} is not reachable ({e})");
        return;
    }
    let pg_url = match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => server.clone(),
    };
    let store = runtime
        .block_on(hypod::store::open(&pg_url, bench_key()))
        .expect("PostgreSQL");
    report("postgres", runtime.block_on(measure(store.as_ref(), slots)));
    drop(store);
    let _ = runtime.block_on(admin(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )));
}

/// The audit key of the benchmark databases.
fn bench_key() -> hypod::store::AuditKey {
    hypod::store::AuditKey::new(b"bench-audit-key-0123456789").expect("key")
}
