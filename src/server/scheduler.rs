//! The scheduler loop of `hypod serve`: waits for each slot of the schedule, claims it through
//! the store (so each slot runs once across processes and replicas), takes over slots whose
//! holder's lease expired, ends (never runs) the `hypod run` and API slots whose process died,
//! and catches up at most one slot missed while everything was down (`schedule.missed`). It
//! logs the next slot at start and after each run.

use super::ServerState;
use crate::app::run::{owner_id, SlotOutcome};
use crate::app::{App, AppResult};
use crate::config::MissedSlot;
use crate::domain::Trigger;
use crate::schedule::Schedule;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What `/readyz` reads: when the loop last went round and the next slot.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub last_tick: Option<DateTime<Utc>>,
    pub next_slot: Option<DateTime<Utc>>,
    /// Set when the loop has ended (shutdown or a fatal error).
    pub stopped: Option<String>,
    /// The slot a run is in flight for (the loop does not tick meanwhile).
    pub running: Option<String>,
}

impl Status {
    /// Alive: ticked within the last two minutes and not stopped.
    pub fn alive(&self) -> Result<(), String> {
        if let Some(reason) = &self.stopped {
            return Err(format!("stopped: {reason}"));
        }
        if self.running.is_some() {
            return Ok(());
        }
        match self.last_tick {
            Some(at) if Utc::now() - at < ChronoDuration::minutes(2) => Ok(()),
            Some(at) => Err(format!("no tick since {}", at.to_rfc3339())),
            None => Err("not started".into()),
        }
    }
}

/// The slot key of a scheduled fire: its trigger's text, `schedule:<UTC instant>`.
pub fn slot_key(at: DateTime<Utc>) -> String {
    Trigger::Schedule(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).to_string()
}

/// The most recent slot at or before `now`, looking back at most a year.
fn previous_slot(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    for window in [
        ChronoDuration::hours(1),
        ChronoDuration::days(1),
        ChronoDuration::days(8),
        ChronoDuration::days(32),
        ChronoDuration::days(366),
    ] {
        let slots = schedule.slots_between(now - window, now, 10_000);
        if let Some(last) = slots.last() {
            return Some(*last);
        }
    }
    None
}

pub async fn run(
    state: Arc<ServerState>,
    schedule: Schedule,
    stop: watch::Receiver<bool>,
    status: watch::Sender<Status>,
) -> AppResult<()> {
    let app = &state.app;
    let metrics = &state.metrics;
    let config = app.config();
    let store = app.store().await?;
    let owner = owner_id();
    let lease = Duration::from_secs(config.schedule.lease_seconds);
    let stopped = |stop: &watch::Receiver<bool>| *stop.borrow();
    let mut cursor = Utc::now();
    let next = schedule.next_after(cursor);
    tracing::info!(owner, next_slot = ?next, cron = schedule.expression(), "scheduler started");
    eprintln!(
        "hypod serve: next slot {}",
        next.map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "never".into())
    );

    // A slot missed while everything was down: at most one, the most recent.
    if let Some(missed) = previous_slot(&schedule, cursor) {
        let key = slot_key(missed);
        match config.schedule.missed {
            MissedSlot::RunOnce => {
                status.send_modify(|s| s.running = Some(key.clone()));
                run_slot(app, metrics, &key, &owner, &stop).await;
                status.send_modify(|s| s.running = None);
            }
            // Recorded as skipped only if no one claimed it: a slot whose holder died is not
            // missed but interrupted, and the loop below takes it over at once.
            MissedSlot::Skip => {
                let reason = "missed while hypod was down; schedule.missed = \"skip\"";
                match store.skip_slot(&key, &owner, reason).await {
                    Ok(true) => tracing::info!(slot = key, "missed slot recorded as skipped"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(slot = key, error = %e, "cannot record the missed slot")
                    }
                }
            }
        }
    }

    // Slots that came due during the catch-up are not run one after another either.
    cursor = cursor.max(Utc::now());

    while !stopped(&stop) {
        let now = Utc::now();
        let next = schedule.next_after(cursor);
        status.send_modify(|s| {
            s.last_tick = Some(now);
            s.next_slot = next;
        });
        // A `hypod run` or API run whose process died is ended, never run here: it was not
        // this schedule's to run.
        if let Err(e) = app.end_abandoned_runs().await {
            tracing::warn!(error = %e, "cannot end the slots of runs whose process died");
        }
        // Scheduled slots whose holder died (its lease expired) are run again from scratch.
        match store.expired_slots().await {
            Ok(keys) => {
                for key in keys {
                    if stopped(&stop) {
                        break;
                    }
                    status.send_modify(|s| s.running = Some(key.clone()));
                    run_slot(app, metrics, &key, &owner, &stop).await;
                    status.send_modify(|s| s.running = None);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read expired slots"),
        }
        let Some(next) = next else {
            tracing::warn!("the schedule has no further slot");
            break;
        };
        // Sleep until the slot, but wake at least every half lease to look for takeovers.
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let nap = wait.min(lease / 2);
        let mut stop_wait = stop.clone();
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            _ = stop_wait.wait_for(|s| *s) => break,
        }
        if Utc::now() < next {
            continue;
        }
        status.send_modify(|s| s.running = Some(slot_key(next)));
        run_slot(app, metrics, &slot_key(next), &owner, &stop).await;
        status.send_modify(|s| s.running = None);
        // Slots that came due while this run went on are not queued up behind it (no backlog):
        // the next one this process tries is the first after now. Another daemon that was idle
        // may have run them.
        cursor = next.max(Utc::now());
        let upcoming = schedule.next_after(cursor);
        tracing::info!(next_slot = ?upcoming, "next slot");
    }
    status.send_modify(|s| s.stopped = Some("shut down".into()));
    Ok(())
}

/// Claims and runs one slot, logging how it ended. Errors are logged, never fatal: the loop
/// goes on to the next slot.
async fn run_slot(
    app: &App,
    metrics: &super::metrics::Metrics,
    key: &str,
    owner: &str,
    stop: &watch::Receiver<bool>,
) {
    // Policies and the model configuration are read for each run: edits to policies/ take
    // effect at the next slot without a restart.
    let prepared = match app.prepare_run() {
        Ok(ready) => ready,
        Err(e) => {
            tracing::error!(slot = key, error = %e, "cannot prepare the run");
            return;
        }
    };
    // Only scheduled slots are run here; any other key is not this loop's to run.
    let trigger = match Trigger::try_from(key.to_string()) {
        Ok(trigger @ Trigger::Schedule(_)) => trigger,
        _ => {
            tracing::error!(slot = key, "not a scheduled slot; not run");
            return;
        }
    };
    let mut shutdown = stop.clone();
    let grace = async move {
        let _ = shutdown.wait_for(|s| *s).await;
        tokio::time::sleep(super::GRACE).await;
    };
    let started = std::time::Instant::now();
    let result = app.run_in_slot(&prepared, trigger, key, owner, grace).await;
    metrics.record(result.as_ref().ok(), started.elapsed().as_secs_f64());
    match result {
        Ok(outcome @ SlotOutcome::Ran { .. }) => {
            tracing::info!(slot = key, "{}", outcome.describe());
        }
        Ok(outcome) => tracing::info!(slot = key, "{}", outcome.describe()),
        Err(e) => tracing::error!(slot = key, error = %e, "the run could not be recorded"),
    }
}
