//! Import throughput: generates a synthetic history of N experiments (default 100 000; set
//! HYPOD_BENCH_EXPERIMENTS to change it), then times parsing + validation and the upsert into a
//! fresh SQLite database, and a second import of the same file (all unchanged).
//!
//! Run with `cargo bench --bench import`.

use hypod::history::import::{parse_sources, Source};
use std::io::Write;
use std::time::Instant;

fn main() {
    let count: usize = std::env::var("HYPOD_BENCH_EXPERIMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("history.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    let moments = [
        "search",
        "product_detail",
        "cart_checkout",
        "post_purchase",
        "re_engagement",
    ];
    for i in 0..count {
        let c = 5_000 + (i % 997) as u64;
        writeln!(
            file,
            r#"{{"id":"bench-{i}","name":"Lever {l} for segment {s}","hypothesis":"If we apply lever {l}, conversion will rise.","moment":"{m}","lever":"lever_{l}","segment":"segment_{s}","channel":"web","rendering":"server","region":"global","primary_kpi":"conversion_rate","signals":["page_context"],"status":"concluded","idea_at":"2025-01-01","started_at":"2025-02-01","ended_at":"2025-03-01","decided_at":"2025-03-10","decision":"rollback","allocation":[1,1],"variants":[{{"name":"control","control":true,"visitors":{c},"conversions":{cc},"orders":{cc},"revenue":{r:.2},"revenue_sq":{rs:.2}}},{{"name":"treatment","control":false,"visitors":{c},"conversions":{tc},"orders":{tc},"revenue":{r:.2},"revenue_sq":{rs:.2}}}]}}"#,
            l = i % 40,
            s = i % 12,
            m = moments[i % 5],
            cc = c / 20,
            tc = c / 20 + (i % 13) as u64,
            r = c as f64 * 4.0,
            rs = c as f64 * 160.0,
        )
        .expect("write");
    }
    file.flush().expect("flush");
    drop(file);
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = runtime
        .block_on(hypod::store::open(&url, bench_key()))
        .expect("open store");

    let started = Instant::now();
    let report = parse_sources(&[Source::File(path.clone())]);
    let parsed = started.elapsed();
    assert!(report.problems.is_empty(), "{:?}", report.problems.first());
    let started = Instant::now();
    let counts = runtime
        .block_on(store.upsert_experiments(&report.experiments, "bench"))
        .expect("upsert");
    let written = started.elapsed();
    let started = Instant::now();
    let again = runtime
        .block_on(store.upsert_experiments(&report.experiments, "bench"))
        .expect("upsert again");
    let rewritten = started.elapsed();

    println!(
        "import of {count} experiments ({:.1} MiB NDJSON)",
        bytes as f64 / 1048576.0
    );
    println!(
        "  parse + validate   {:>8.2} s  ({:.0} experiments/s)",
        parsed.as_secs_f64(),
        count as f64 / parsed.as_secs_f64()
    );
    println!(
        "  upsert (new)       {:>8.2} s  ({} inserted)",
        written.as_secs_f64(),
        counts.inserted
    );
    println!(
        "  upsert (unchanged) {:>8.2} s  ({} unchanged)",
        rewritten.as_secs_f64(),
        again.unchanged
    );
    println!(
        "  total first import {:>8.2} s",
        (parsed + written).as_secs_f64()
    );
}

/// The audit key of the benchmark databases.
fn bench_key() -> hypod::store::AuditKey {
    hypod::store::AuditKey::new(b"bench-audit-key-0123456789").expect("key")
}
