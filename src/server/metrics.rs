//! Prometheus metrics of the daemon, kept as plain atomics and rendered in the text exposition
//! format at `/metrics` (no exporter crate: nothing here grows without bound, so there is no
//! upkeep to forget). The queue depth is read from the store at each scrape, the next slot
//! from the scheduler's status, the analysis cache's and the heavy reads' counters from the
//! [`crate::app::App`] they belong to.

use crate::app::reads::ReadStats;
use crate::app::run::SlotOutcome;
use crate::domain::{ProposalFilter, ProposalStatus};
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How a slot ended, as a metric label.
const OUTCOMES: [&str; 9] = [
    "succeeded",
    "not_ready",
    "failed",
    "held_elsewhere",
    "already_ended",
    "timed_out",
    "lease_lost",
    "interrupted",
    "error",
];

#[derive(Default)]
pub struct Metrics {
    runs: [AtomicU64; OUTCOMES.len()],
    takeovers: AtomicU64,
    run_seconds_sum_micros: AtomicU64,
    run_seconds_count: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    model_latency_ms_sum: AtomicU64,
    model_calls: AtomicU64,
    cost_micros: AtomicU64,
    /// stage → (seconds, runs)
    stages: Mutex<std::collections::BTreeMap<&'static str, (f64, u64)>>,
    /// queued / escalated / blocked / duplicate → drafts, over the committed runs
    verdicts: Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts one slot's outcome (`None`: the run could not even be recorded).
    pub fn record(&self, outcome: Option<&SlotOutcome>, seconds: f64) {
        let label = match outcome {
            Some(SlotOutcome::Ran {
                record, taken_over, ..
            }) => {
                if *taken_over {
                    self.takeovers.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(usage) = &record.usage {
                    self.prompt_tokens
                        .fetch_add(usage.prompt_tokens, Ordering::Relaxed);
                    self.completion_tokens
                        .fetch_add(usage.completion_tokens, Ordering::Relaxed);
                    self.model_latency_ms_sum
                        .fetch_add(usage.latency_ms, Ordering::Relaxed);
                    self.model_calls.fetch_add(1, Ordering::Relaxed);
                    self.cost_micros
                        .fetch_add((usage.cost.max(0.0) * 1e6) as u64, Ordering::Relaxed);
                }
                if let Ok(mut stages) = self.stages.lock() {
                    for (stage, seconds) in &record.stage_seconds {
                        let entry = stages.entry(stage).or_insert((0.0, 0));
                        entry.0 += seconds;
                        entry.1 += 1;
                    }
                }
                if let Ok(mut verdicts) = self.verdicts.lock() {
                    let s = &record.summary;
                    for (kind, n) in [
                        ("queued", s.queued),
                        ("escalated", s.escalated),
                        ("blocked", s.blocked),
                        ("duplicate", s.duplicates),
                    ] {
                        *verdicts.entry(kind).or_insert(0) += n as u64;
                    }
                }
                record.status.as_str()
            }
            Some(SlotOutcome::Held) => "held_elsewhere",
            Some(SlotOutcome::Ended(_)) => "already_ended",
            Some(SlotOutcome::TimedOut) => "timed_out",
            Some(SlotOutcome::LeaseLost) => "lease_lost",
            Some(SlotOutcome::Interrupted) => "interrupted",
            None => "error",
        };
        if let Some(i) = OUTCOMES.iter().position(|o| *o == label) {
            self.runs[i].fetch_add(1, Ordering::Relaxed);
        }
        if matches!(outcome, Some(SlotOutcome::Ran { .. })) {
            self.run_seconds_sum_micros
                .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
            self.run_seconds_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The text exposition format.
    pub async fn render(
        &self,
        store: &dyn Store,
        next_slot: Option<DateTime<Utc>>,
        reads: ReadStats,
    ) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP hypod_runs_total Slots this process handled, by outcome."
        );
        let _ = writeln!(out, "# TYPE hypod_runs_total counter");
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "hypod_runs_total{{outcome=\"{outcome}\"}} {}",
                load(&self.runs[i])
            );
        }
        let counters = [
            (
                "hypod_lease_takeovers_total",
                "Slots this process took over from a holder whose lease expired.",
                load(&self.takeovers) as f64,
            ),
            (
                "hypod_model_prompt_tokens_total",
                "Prompt tokens sent to the model.",
                load(&self.prompt_tokens) as f64,
            ),
            (
                "hypod_model_completion_tokens_total",
                "Completion tokens received from the model.",
                load(&self.completion_tokens) as f64,
            ),
            (
                "hypod_model_cost_total",
                "Model cost, in the configured price's currency.",
                load(&self.cost_micros) as f64 / 1e6,
            ),
            (
                "hypod_analysis_computations_total",
                "Times this process analysed the whole history (the analysis is cached until an import or run changes it).",
                reads.computations as f64,
            ),
            (
                "hypod_analysis_cache_hits_total",
                "Reads answered from the cached analysis of the history.",
                reads.hits as f64,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let gauges = [
            (
                "hypod_heavy_reads_running",
                "Heavy reads (the history loaded or analysed) running now, off the async workers.",
                reads.running,
            ),
            (
                "hypod_heavy_reads_waiting",
                "Heavy reads waiting for their turn.",
                reads.waiting,
            ),
            (
                "hypod_heavy_reads_limit",
                "How many heavy reads may run at once.",
                reads.bound as u64,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP hypod_run_duration_seconds Duration of the runs this process committed.\n\
             # TYPE hypod_run_duration_seconds summary\n\
             hypod_run_duration_seconds_sum {}\nhypod_run_duration_seconds_count {}",
            load(&self.run_seconds_sum_micros) as f64 / 1e6,
            load(&self.run_seconds_count)
        );
        let _ = writeln!(
            out,
            "# HELP hypod_model_latency_seconds Model time per run (all its calls).\n\
             # TYPE hypod_model_latency_seconds summary\n\
             hypod_model_latency_seconds_sum {}\nhypod_model_latency_seconds_count {}",
            load(&self.model_latency_ms_sum) as f64 / 1e3,
            load(&self.model_calls)
        );
        let _ = writeln!(
            out,
            "# HELP hypod_stage_duration_seconds Time in each stage of the runs this process committed.\n\
             # TYPE hypod_stage_duration_seconds summary"
        );
        if let Ok(stages) = self.stages.lock() {
            for (stage, (seconds, count)) in stages.iter() {
                let _ = writeln!(
                    out,
                    "hypod_stage_duration_seconds_sum{{stage=\"{stage}\"}} {seconds}\n\
                     hypod_stage_duration_seconds_count{{stage=\"{stage}\"}} {count}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP hypod_drafts_total Drafts of the committed runs, by what governance made of them.\n\
             # TYPE hypod_drafts_total counter"
        );
        if let Ok(verdicts) = self.verdicts.lock() {
            for (verdict, n) in verdicts.iter() {
                let _ = writeln!(out, "hypod_drafts_total{{verdict=\"{verdict}\"}} {n}");
            }
        }
        if let Some(next) = next_slot {
            let seconds = (next - Utc::now()).num_milliseconds() as f64 / 1e3;
            let _ = writeln!(
                out,
                "# HELP hypod_next_slot_seconds Seconds until the next scheduled slot.\n\
                 # TYPE hypod_next_slot_seconds gauge\nhypod_next_slot_seconds {seconds}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP hypod_proposals Proposals in the queue, by status.\n# TYPE hypod_proposals gauge"
        );
        // One read of the queue, counted by status.
        if let Ok(all) = store.list_proposals(&ProposalFilter::default()).await {
            for status in ProposalStatus::ALL {
                let count = all.iter().filter(|p| p.status == status).count();
                let _ = writeln!(
                    out,
                    "hypod_proposals{{status=\"{}\"}} {count}",
                    status.as_str()
                );
            }
        }
        out
    }
}
