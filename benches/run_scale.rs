//! How `hypod run` (builtin proposer) scales with the history: for synthetic histories of
//! 1 000, 10 000 and 100 000 experiments (tests/synthetic, the sample's catalog), each imported
//! into a fresh SQLite database, times the real binary's `hypod run --json` against a baseline
//! measured side by side on the same database: `hypod analyze --json` (load + per-experiment
//! statistics + program health + lever knowledge base, written to /dev/null). A run does the
//! same loading and analysis and then proposes, validates, governs and queues, so the
//! difference is what proposing costs. Goal: 100 000 experiments in ≤ 5 s on 2 cores.
//!
//! Run with `cargo bench --bench run_scale` (HYPOD_BENCH_SIZES=1000,10000 to choose sizes).

#[path = "../tests/synthetic/mod.rs"]
mod synthetic;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn hypod(config: &std::path::Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_hypod"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("start hypod");
    let elapsed = started.elapsed();
    assert!(status.success(), "hypod {args:?} failed: {status}");
    elapsed
}

fn main() {
    let sizes: Vec<usize> = std::env::var("HYPOD_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    println!("hypod run (builtin proposer) against hypod analyze on the same SQLite history\n");
    println!(
        "{:>12} {:>12} {:>14} {:>12} {:>14}",
        "experiments", "import", "analyze --json", "run --json", "run − analyze"
    );
    for n in sizes {
        let dir = tempfile::tempdir().expect("temp dir");
        let history = dir.path().join("history.ndjson");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&history).expect("create"));
        for experiment in synthetic::history(n) {
            serde_json::to_writer(&mut file, &experiment).expect("write");
            writeln!(file).expect("write");
        }
        file.flush().expect("flush");
        drop(file);
        let config = dir.path().join("hypod.toml");
        std::fs::write(
            &config,
            format!(
                "[database]\nurl = \"sqlite://{}\"\n[governance]\npolicies = \"{}\"\n[proposer]\nkind = \"builtin\"\n",
                dir.path().join("hypod.db").display(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
            ),
        )
        .expect("write the configuration");
        let import = hypod(&config, &["import", history.to_str().expect("path")]);
        let analyze = hypod(&config, &["analyze", "--json"]);
        let run = hypod(&config, &["run", "--json"]);
        println!(
            "{:>12} {:>10.2} s {:>12.2} s {:>10.2} s {:>12.2} s{}",
            n,
            import.as_secs_f64(),
            analyze.as_secs_f64(),
            run.as_secs_f64(),
            run.as_secs_f64() - analyze.as_secs_f64(),
            if n >= 100_000 {
                if run.as_secs_f64() <= 5.0 {
                    "   (goal ≤ 5 s: met)"
                } else {
                    "   (goal ≤ 5 s: NOT met)"
                }
            } else {
                ""
            }
        );
    }
}
