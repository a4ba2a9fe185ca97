//! The statistics engines side by side (issue #29): the same synthetic history (tests/synthetic,
//! default 100 000 experiments) analysed as `hypod analyze --json` does after loading it —
//! per-experiment statistics, program health, the lever knowledge base and the learning loop,
//! then the whole JSON document written to a sink — under the frequentist engine (the
//! baseline), frequentist with sequential testing, Bayesian with a flat prior and Bayesian with
//! a proper prior. The engines run in turn within each round, so drift of the machine falls on
//! all alike; the figure is each engine's median over the rounds and its ratio to the
//! frequentist one in the same run, for the whole (`analyze --json`) and for the first pass
//! alone (every experiment's statistics, program health, levers and learning, no JSON: what a
//! run and the server's cache compute). Goal: Bayesian within 1.2× of frequentist at 100 000.
//!
//! `cargo bench --bench engines` (`HYPOD_BENCH_SIZES=10000,100000` to choose sizes,
//! `HYPOD_BENCH_ROUNDS` rounds, default 5).

#[path = "../tests/synthetic/mod.rs"]
mod synthetic;

use chrono::NaiveDate;
use hypod::analysis::engines::{Engine, Prior, Sequential};
use hypod::analysis::{AnalysisReport, AnalysisSettings};
use std::time::{Duration, Instant};

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Counts the bytes written, so the document is really produced and its size reported.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    let sizes = env_list("HYPOD_BENCH_SIZES", &[100_000]);
    let rounds = env_list("HYPOD_BENCH_ROUNDS", &[5])[0].max(1);
    let today = NaiveDate::from_ymd_opt(2026, 12, 1).expect("a date");
    let engines: Vec<(&str, AnalysisSettings)> = vec![
        ("frequentist", AnalysisSettings::new(today)),
        ("frequentist, sequential", {
            let mut s = AnalysisSettings::new(today);
            s.sequential = Some(Sequential { tuning: 5000.0 });
            s
        }),
        ("bayesian, flat prior", {
            let mut s = AnalysisSettings::new(today);
            s.engine = Engine::Bayesian;
            s
        }),
        ("bayesian, N(0, 0.3²) prior", {
            let mut s = AnalysisSettings::new(today);
            s.engine = Engine::Bayesian;
            s.prior = Some(Prior {
                mean: 0.0,
                stddev: 0.3,
            });
            s
        }),
    ];
    println!(
        "analyze --json after loading (statistics, health, levers, learning, JSON), {rounds} rounds, median\n"
    );
    println!("(min: the fastest round, least disturbed by other work on the machine)\n");
    println!(
        "{:>12} {:<28} {:>10} {:>7} {:>10} {:>7} {:>10} {:>7} {:>8}",
        "experiments",
        "engine",
        "analysis",
        "ratio",
        "+ JSON",
        "ratio",
        "min JSON",
        "ratio",
        "JSON MB"
    );
    for n in sizes {
        let history = synthetic::history(n);
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); engines.len()];
        let mut passes: Vec<Vec<Duration>> = vec![Vec::new(); engines.len()];
        let mut bytes = vec![0usize; engines.len()];
        let mut proven = vec![0usize; engines.len()];
        for round in 0..rounds {
            // Rotate the order each round, so no engine always runs first (cold) or last.
            for k in 0..engines.len() {
                let i = (k + round) % engines.len();
                let experiments = history.clone();
                let started = Instant::now();
                let report = AnalysisReport::new(experiments, engines[i].1.clone());
                passes[i].push(started.elapsed());
                let mut sink = Count(0);
                serde_json::to_writer(&mut sink, &report).expect("serialise");
                times[i].push(started.elapsed());
                bytes[i] = sink.0;
                proven[i] = report.program.proven;
            }
        }
        let fastest = |t: &[Duration]| t.iter().min().copied().unwrap_or_default().as_secs_f64();
        let base = median(times[0].clone()).as_secs_f64();
        let base_pass = median(passes[0].clone()).as_secs_f64();
        let base_min = fastest(&times[0]);
        for (i, (name, _)) in engines.iter().enumerate() {
            let whole = median(times[i].clone()).as_secs_f64();
            let pass = median(passes[i].clone()).as_secs_f64();
            let min = fastest(&times[i]);
            println!(
                "{:>12} {:<28} {:>8.0}ms {:>6.3}x {:>8.0}ms {:>6.3}x {:>8.0}ms {:>6.3}x {:>8.1}   ({} proven)",
                n,
                name,
                pass * 1e3,
                pass / base_pass,
                whole * 1e3,
                whole / base,
                min * 1e3,
                min / base_min,
                bytes[i] as f64 / 1e6,
                proven[i],
            );
        }
        println!();
    }
}
