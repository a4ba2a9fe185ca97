//! The daemon's own cost per run, against the model's: N runs of the bundled sample history
//! (imported into a SQLite file in a temporary folder) through the library's slot path
//! (`app::run::run_in_slot_until`: claim, lease, load, analyse, propose, validate and govern, fenced
//! commit), the `openai` proposer pointed at the fake OpenAI-compatible server of the tests,
//! started in-process on 127.0.0.1 (nothing leaves the machine). Two cases side by side, each
//! on a database of its own: (a) a model that answers at once, (b) a model that takes 500 ms.
//! The first run of each case queues its drafts and is not measured; the measured runs find
//! the same drafts already queued (duplicates), as a nightly run on unchanged data does.
//!
//! Prints, per case, the mean wall time of a run, the mean time of the propose stage (prompt,
//! HTTP call, parsing: the model's part as the run sees it) and its share of the run, and for
//! (b) the overhead, i.e. the run's wall time beyond the model's 500 ms, as a share of the
//! model's time (goal ≤ 5 %).
//!
//! Run with `cargo bench --bench run_overhead` (HYPOD_BENCH_RUNS measured runs per case,
//! default 20).

#[path = "../tests/fake_openai/mod.rs"]
mod fake_openai;

use async_trait::async_trait;
use fake_openai::{valid_draft, FakeOpenAi, Scripted, SAMPLE};
use hypod::app::run::{run_in_slot_until, RunPlan, SlotOutcome};
use hypod::config::Config;
use hypod::domain::Trigger;
use hypod::proposer::{ProposalContext, Proposer, ProposerError, ProposerOutput};
use hypod::store::Store;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A proposer that times the one it wraps.
struct Timed<'a> {
    inner: &'a dyn Proposer,
    spent: Mutex<Duration>,
}

#[async_trait]
impl Proposer for Timed<'_> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn propose(
        &self,
        context: &ProposalContext<'_>,
    ) -> Result<ProposerOutput, ProposerError> {
        let started = Instant::now();
        let output = self.inner.propose(context).await;
        if let Ok(mut spent) = self.spent.lock() {
            *spent += started.elapsed();
        }
        output
    }
}

/// Mean figures of one case.
struct Figures {
    model_latency: Duration,
    run: Duration,
    propose: Duration,
}

/// Imports the sample into a fresh database and times `runs` runs against a fake model that
/// answers after `latency` (plus one unmeasured first run).
async fn measure(latency: Duration, runs: usize) -> Figures {
    let script = (0..=runs)
        .map(|n| {
            Scripted::proposals(vec![valid_draft(2 * n), valid_draft(2 * n + 1)]).after(latency)
        })
        .collect();
    let server = FakeOpenAi::start(script).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("hypod.toml");
    std::fs::write(
        &config_path,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n[governance]\npolicies = \"{}\"\n\
             [proposer]\nkind = \"openai\"\nmax_proposals = 2\nper_moment = 2\n\
             [llm]\nbase_url = \"{}\"\nmodel = \"fake-model\"\n\
             api_key_env = \"HYPOD_BENCH_NO_SUCH_KEY\"\nmax_attempts = 1\nmax_repairs = 0\n",
            dir.path().join("hypod.db").display(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
            server.base_url()
        ),
    )
    .expect("write the configuration");
    let config = Config::load_with_env(Some(&config_path), &[]).expect("configuration");
    let app = hypod::app::App::new(config.clone());
    let imported = app
        .import(&[SAMPLE.to_string()], false, "bench")
        .await
        .expect("import the sample");
    assert!(imported.experiments > 0, "the sample imported nothing");
    let store: Arc<dyn Store> = app.store().await.expect("open").clone();
    let governance = app.governance().expect("policies");
    let (proposer, _) = app.proposers(&governance).expect("proposer");
    let timed = Timed {
        inner: proposer.as_ref(),
        spent: Mutex::new(Duration::ZERO),
    };

    let mut measured = Duration::ZERO;
    for i in 0..=runs {
        if i == 1 {
            // The first run queued the drafts; measure from here.
            *timed.spent.lock().expect("timer") = Duration::ZERO;
        }
        let plan = RunPlan {
            config: &config,
            governance: &governance,
            proposer: &timed,
            fallback: None,
            trigger: Trigger::Cli,
            now: chrono::Utc::now(),
            fence: None,
            sync_as: None,
        };
        let key = format!("cli:bench-{i}");
        let started = Instant::now();
        let outcome = run_in_slot_until(store.clone(), plan, &key, "bench", std::future::pending())
            .await
            .expect("the run is recorded");
        if i > 0 {
            measured += started.elapsed();
        }
        match outcome {
            SlotOutcome::Ran { record, .. } if record.error.is_none() => {}
            other => panic!("run {i}: {}", other.describe()),
        }
    }
    let propose = *timed.spent.lock().expect("timer");
    assert_eq!(server.requests().len(), runs + 1, "one model call per run");
    Figures {
        model_latency: latency,
        run: measured / runs as u32,
        propose: propose / runs as u32,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("HYPOD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(20);
    let instant = measure(Duration::ZERO, runs).await;
    let slow = measure(Duration::from_millis(500), runs).await;

    println!("run overhead: the sample history, openai proposer on a fake model, SQLite, {runs} runs per case\n");
    println!(
        "{:<22} {:>12} {:>14} {:>14} {:>16}",
        "model latency", "run (mean)", "propose (mean)", "propose share", "beyond the model"
    );
    for case in [&instant, &slow] {
        println!(
            "{:<22} {:>9.1} ms {:>11.1} ms {:>13.1}% {:>13.1} ms",
            format!("{} ms", case.model_latency.as_millis()),
            ms(case.run),
            ms(case.propose),
            100.0 * case.propose.as_secs_f64() / case.run.as_secs_f64(),
            ms(case.run.saturating_sub(case.model_latency)),
        );
    }
    let beyond = slow.run.saturating_sub(slow.model_latency);
    let share = beyond.as_secs_f64() / slow.model_latency.as_secs_f64();
    println!(
        "\n(b) overhead as a share of the model's time: {:.1}% ({:.1} ms beyond {} ms; goal ≤ 5%): {}",
        100.0 * share,
        ms(beyond),
        slow.model_latency.as_millis(),
        if share <= 0.05 { "met" } else { "NOT met" }
    );
}
