//! Prometheus metrics of the daemon, rendered in the text exposition format at `/metrics` (no
//! exporter crate: every label set here is bounded, so there is no upkeep to forget). Two
//! kinds, named apart in each help text:
//!
//! - **per database**: the runs stored in the database, whoever started them (the scheduler of
//!   any replica, `hypod run` in another process, `POST /api/v1/runs`), counted by trigger and
//!   status with their durations, read from the store at each scrape (one grouped read of the
//!   `runs` table), the queue depth per status (one grouped count), and the push outbox per
//!   state with its oldest pending push's age. Every replica reports the same figures.
//! - **per process**: the slots this process's scheduler handled and what its runs spent
//!   (stages, model), the HTTP requests it answered by route template and status (the
//!   [`track`] middleware), the analysis cache's and the heavy reads' counters of the
//!   [`crate::app::App`] they belong to, and the next slot from the scheduler's status.
//!
//! Every duration is a histogram (`_bucket{le}`, `_sum`, `_count`), never a summary.

use crate::app::reads::ReadStats;
use crate::app::run::SlotOutcome;
use crate::domain::ProposalStatus;
use crate::store::{PushState, Store, RUN_SECONDS_BUCKETS};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// Bucket bounds (seconds) of an HTTP request's latency: Prometheus' defaults.
const HTTP_SECONDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds (seconds) of one stage of a run.
const STAGE_SECONDS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0];
/// Bucket bounds (seconds) of a run's model time (all its calls).
const MODEL_SECONDS: [f64; 9] = [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// The route label of a request no route matched (a 404 from the router): one value, whatever
/// the path, so that scanning for paths cannot grow the label set.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// One histogram: counts per bucket (not cumulative; the last one above every bound), the sum
/// and the count of the observations.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn bucket_of(bounds: &[f64], value: f64) -> usize {
        bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(bounds.len())
    }

    fn observe(&mut self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        self.counts[Histogram::bucket_of(self.bounds, value)] += 1;
        self.sum += value;
    }

    /// Adds `runs` observations whose values add up to `sum`, all in bucket `bucket`.
    fn add(&mut self, bucket: usize, runs: u64, sum: f64) {
        let last = self.counts.len() - 1;
        self.counts[bucket.min(last)] += runs;
        self.sum += sum;
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `NAME_bucket{LABELS,le="…"}` cumulative, ending with `+Inf`, then `_sum` and `_count`.
    /// `labels` is empty or `a="b",c="d"`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound:?}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count()
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count());
    }
}

/// A label value as the exposition format writes it (backslash, quote and newline escaped).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// An HTTP method as a label: the standard ones by name, any other as `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// (route template, method, status) of the requests one histogram counts.
type HttpKey = (String, &'static str, u16);

pub struct Metrics {
    runs: [AtomicU64; OUTCOMES.len()],
    takeovers: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cost_micros: AtomicU64,
    /// Durations of the runs this process's scheduler committed.
    run_seconds: Mutex<Histogram>,
    /// Model time per run.
    model_seconds: Mutex<Histogram>,
    /// stage → its durations
    stages: Mutex<BTreeMap<&'static str, Histogram>>,
    /// queued / escalated / blocked / duplicate → drafts, over the committed runs
    verdicts: Mutex<BTreeMap<&'static str, u64>>,
    /// The requests this process answered.
    http: Mutex<BTreeMap<HttpKey, Histogram>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            runs: Default::default(),
            takeovers: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            cost_micros: AtomicU64::new(0),
            run_seconds: Mutex::new(Histogram::new(&RUN_SECONDS_BUCKETS)),
            model_seconds: Mutex::new(Histogram::new(&MODEL_SECONDS)),
            stages: Mutex::new(BTreeMap::new()),
            verdicts: Mutex::new(BTreeMap::new()),
            http: Mutex::new(BTreeMap::new()),
        }
    }
}

/// The middleware that counts every request by route template (never the raw path), method and
/// status, with its latency: layered over every route and the router's fallback.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_string(), |p| p.as_str().to_string());
    let method = method_label(request.method());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics.observe_request(
        route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

impl Metrics {
    /// Counts one answered request.
    pub fn observe_request(&self, route: String, method: &'static str, status: u16, seconds: f64) {
        if let Ok(mut http) = self.http.lock() {
            http.entry((route, method, status))
                .or_insert_with(|| Histogram::new(&HTTP_SECONDS))
                .observe(seconds);
        }
    }

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
                    if let Ok(mut model) = self.model_seconds.lock() {
                        model.observe(usage.latency_ms as f64 / 1e3);
                    }
                    self.cost_micros
                        .fetch_add((usage.cost.max(0.0) * 1e6) as u64, Ordering::Relaxed);
                }
                if let Ok(mut stages) = self.stages.lock() {
                    for (stage, seconds) in &record.stage_seconds {
                        stages
                            .entry(stage)
                            .or_insert_with(|| Histogram::new(&STAGE_SECONDS))
                            .observe(*seconds);
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
            if let Ok(mut runs) = self.run_seconds.lock() {
                runs.observe(seconds);
            }
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
        self.render_database(&mut out, store).await;
        self.render_pushes(&mut out, store).await;
        self.render_process(&mut out, next_slot, reads);
        out
    }

    /// The per-database part: the stored runs and the queue.
    async fn render_database(&self, out: &mut String, store: &dyn Store) {
        match store.run_tally().await {
            Ok(tally) => {
                let mut runs: BTreeMap<(String, String), u64> = BTreeMap::new();
                let mut durations: BTreeMap<String, Histogram> = BTreeMap::new();
                for row in &tally {
                    *runs
                        .entry((row.trigger.clone(), row.status.clone()))
                        .or_insert(0) += row.runs;
                    durations
                        .entry(row.trigger.clone())
                        .or_insert_with(|| Histogram::new(&RUN_SECONDS_BUCKETS))
                        .add(row.bucket, row.runs, row.seconds);
                }
                header(
                    out,
                    "hypod_recorded_runs_total",
                    "counter",
                    "Runs stored in the database, by trigger (schedule, cli, api, demo, mcp) and \
                     status (succeeded, not_ready, failed), whichever process ran them. Per \
                     database: every replica reports the same count (aggregate with max, not sum).",
                );
                for ((trigger, status), n) in &runs {
                    let _ = writeln!(
                        out,
                        "hypod_recorded_runs_total{{trigger=\"{}\",status=\"{}\"}} {n}",
                        label(trigger),
                        label(status)
                    );
                }
                header(
                    out,
                    "hypod_recorded_run_duration_seconds",
                    "histogram",
                    "Duration (finished_at - started_at) of the runs stored in the database, by \
                     trigger. Per database, like hypod_recorded_runs_total.",
                );
                for (trigger, histogram) in &durations {
                    histogram.render(
                        out,
                        "hypod_recorded_run_duration_seconds",
                        &format!("trigger=\"{}\"", label(trigger)),
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "# the stored runs cannot be read: {}",
                    label(&e.to_string())
                );
            }
        }
        header(
            out,
            "hypod_proposals",
            "gauge",
            "Proposals in the queue, by status. Per database.",
        );
        // Counted by the database (one grouped count), not by reading every proposal.
        match store.count_proposals_by_status().await {
            Ok(counted) => {
                for status in ProposalStatus::ALL {
                    let count = counted
                        .iter()
                        .find(|(s, _)| *s == status)
                        .map_or(0, |(_, n)| *n);
                    let _ = writeln!(
                        out,
                        "hypod_proposals{{status=\"{}\"}} {count}",
                        status.as_str()
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "# the queue cannot be counted: {}",
                    label(&e.to_string())
                );
            }
        }
    }

    /// The push outbox: pushes per state and how long the oldest pending one has waited.
    async fn render_pushes(&self, out: &mut String, store: &dyn Store) {
        let (counts, oldest) = match store.push_tally().await {
            Ok(tally) => tally,
            Err(e) => {
                let _ = writeln!(
                    out,
                    "# the push outbox cannot be read: {}",
                    label(&e.to_string())
                );
                return;
            }
        };
        header(
            out,
            "hypod_pushes",
            "gauge",
            "Approved proposals queued for the experimentation platform ([export.growthbook]), \
             by state: pending (waiting or being retried), pushed, refused. Per database.",
        );
        for state in PushState::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "hypod_pushes{{state=\"{}\"}} {n}", state.as_str());
        }
        header(
            out,
            "hypod_push_oldest_pending_seconds",
            "gauge",
            "Seconds since the oldest pending push was queued (0 when none is pending): a push \
             that keeps failing shows here. Per database.",
        );
        let _ = writeln!(
            out,
            "hypod_push_oldest_pending_seconds {}",
            oldest.unwrap_or(0.0)
        );
    }

    /// The per-process part.
    fn render_process(&self, out: &mut String, next_slot: Option<DateTime<Utc>>, reads: ReadStats) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        header(
            out,
            "hypod_runs_total",
            "counter",
            "Scheduled slots this process's scheduler handled, by outcome. Per process.",
        );
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
                "Slots this process took over from a holder whose lease expired. Per process.",
                load(&self.takeovers) as f64,
            ),
            (
                "hypod_model_prompt_tokens_total",
                "Prompt tokens sent to the model by this process's scheduled runs. Per process.",
                load(&self.prompt_tokens) as f64,
            ),
            (
                "hypod_model_completion_tokens_total",
                "Completion tokens received from the model by this process's scheduled runs. \
                 Per process.",
                load(&self.completion_tokens) as f64,
            ),
            (
                "hypod_model_cost_total",
                "Model cost of this process's scheduled runs, in the currency of \
                 llm.price_per_million_input and llm.price_per_million_output (US dollars with \
                 the default prices, OpenAI's). Per process.",
                load(&self.cost_micros) as f64 / 1e6,
            ),
            (
                "hypod_analysis_computations_total",
                "Times this process analysed the whole history (the analysis is cached until an import or run changes it).",
                reads.computations as f64,
            ),
            (
                "hypod_analysis_cache_hits_total",
                "Reads answered from the cached analysis of the history. Per process.",
                reads.hits as f64,
            ),
        ];
        for (name, help, value) in counters {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
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
            header(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        header(
            out,
            "hypod_run_duration_seconds",
            "histogram",
            "Duration of the scheduled runs this process committed. Per process (every run of \
             the database: hypod_recorded_run_duration_seconds).",
        );
        if let Ok(runs) = self.run_seconds.lock() {
            runs.render(out, "hypod_run_duration_seconds", "");
        }
        header(
            out,
            "hypod_model_latency_seconds",
            "histogram",
            "Model time per scheduled run of this process (all its calls, waits included). \
             Per process.",
        );
        if let Ok(model) = self.model_seconds.lock() {
            model.render(out, "hypod_model_latency_seconds", "");
        }
        header(
            out,
            "hypod_stage_duration_seconds",
            "histogram",
            "Time in each stage of the scheduled runs this process committed. Per process.",
        );
        if let Ok(stages) = self.stages.lock() {
            for (stage, histogram) in stages.iter() {
                histogram.render(
                    out,
                    "hypod_stage_duration_seconds",
                    &format!("stage=\"{stage}\""),
                );
            }
        }
        header(
            out,
            "hypod_drafts_total",
            "counter",
            "Drafts of the scheduled runs this process committed, by what governance made of \
             them. Per process.",
        );
        if let Ok(verdicts) = self.verdicts.lock() {
            for (verdict, n) in verdicts.iter() {
                let _ = writeln!(out, "hypod_drafts_total{{verdict=\"{verdict}\"}} {n}");
            }
        }
        if let Ok(http) = self.http.lock() {
            header(
                out,
                "hypod_http_requests_total",
                "counter",
                "HTTP requests this process answered, by route template (unmatched: no route), \
                 method and status. Per process.",
            );
            for ((route, method, status), histogram) in http.iter() {
                let _ = writeln!(
                    out,
                    "hypod_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {}",
                    label(route),
                    histogram.count()
                );
            }
            header(
                out,
                "hypod_http_request_duration_seconds",
                "histogram",
                "Time to answer an HTTP request (until its headers are sent), by route \
                 template, method and status. Per process.",
            );
            for ((route, method, status), histogram) in http.iter() {
                histogram.render(
                    out,
                    "hypod_http_request_duration_seconds",
                    &format!(
                        "route=\"{}\",method=\"{method}\",status=\"{status}\"",
                        label(route)
                    ),
                );
            }
        }
        if let Some(next) = next_slot {
            let seconds = (next - Utc::now()).num_milliseconds() as f64 / 1e3;
            header(
                out,
                "hypod_next_slot_seconds",
                "gauge",
                "Seconds until the next scheduled slot. Per process.",
            );
            let _ = writeln!(out, "hypod_next_slot_seconds {seconds}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets_ending_with_inf() {
        let mut h = Histogram::new(&[1.0, 5.0]);
        for v in [0.5, 0.75, 3.0, 9.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert_eq!(
            out,
            "x_bucket{a=\"b\",le=\"1.0\"} 2\nx_bucket{a=\"b\",le=\"5.0\"} 3\n\
             x_bucket{a=\"b\",le=\"+Inf\"} 4\nx_sum{a=\"b\"} 13.25\nx_count{a=\"b\"} 4\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
