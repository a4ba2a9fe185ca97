//! Reads that cannot starve writes. The history's analysis — what `analyze`, program health, an
//! experiment's statistics and the proposal pages read — is computed once per version of the
//! stored history and shared by every read until the history changes; requests that miss at
//! the same time wait for one computation (single flight) instead of making their own. The
//! version is read from the database at each use ([`HistoryMark`]: the audit entries of imports
//! and runs), so an import by the command line, or by another replica on the same PostgreSQL,
//! makes the next read compute again.
//!
//! Heavy work — loading and analysing the whole history, or whatever a caller hands to
//! [`Reads::run`] — runs on the blocking pool, never on the async workers, and at most
//! [`Reads::bound`] of it at once: approvals, imports, runs and light reads always find a free
//! worker and a free database connection. Heavy work beyond the bound waits for its turn,
//! holding neither a worker nor a connection while it waits; it is not refused.

use super::load::origins;
use super::{AppError, AppResult};
use crate::analysis::{AnalysisReport, AnalysisSettings};
use crate::store::{HistoryMark, Store};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Semaphore;

/// The analysis cache and the bound on heavy work, shared by every use of one [`super::App`].
pub struct Reads {
    cached: Mutex<Option<Cached>>,
    /// Held while the analysis is computed, until it is stored: who waits for it then finds it.
    flight: Arc<tokio::sync::Mutex<()>>,
    permits: Arc<Semaphore>,
    bound: usize,
    computations: AtomicU64,
    hits: AtomicU64,
    running: AtomicU64,
    waiting: AtomicU64,
}

/// One computed analysis, and what it is valid for.
struct Cached {
    report: Arc<AnalysisReport>,
    /// The settings it was computed with, origins aside (those come from the history).
    settings: AnalysisSettings,
    /// The audit log's head when it was last known current: an import or run logged after it
    /// makes it stale.
    checked_at: i64,
}

/// What `/metrics` shows of the reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Times this process analysed the whole history (cache misses).
    pub computations: u64,
    /// Reads answered from the cached analysis.
    pub hits: u64,
    /// Heavy work running now.
    pub running: u64,
    /// Heavy work waiting for its turn.
    pub waiting: u64,
    /// How much heavy work may run at once.
    pub bound: usize,
}

impl Default for Reads {
    fn default() -> Self {
        Reads::new(default_bound())
    }
}

/// Half the cores, at least one and at most two (half of the SQLite pool's four connections):
/// the other half of the machine and of the pool stays free for writes and light reads.
pub fn default_bound() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).clamp(1, 2)
}

impl Reads {
    /// At most `bound` (at least one) heavy reads at once.
    pub fn new(bound: usize) -> Reads {
        let bound = bound.max(1);
        Reads {
            cached: Mutex::new(None),
            flight: Arc::new(tokio::sync::Mutex::new(())),
            permits: Arc::new(Semaphore::new(bound)),
            bound,
            computations: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            running: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
        }
    }

    pub fn bound(&self) -> usize {
        self.bound
    }

    pub fn stats(&self) -> ReadStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReadStats {
            computations: load(&self.computations),
            hits: load(&self.hits),
            running: load(&self.running),
            waiting: load(&self.waiting),
            bound: self.bound,
        }
    }

    fn cached(&self) -> MutexGuard<'_, Option<Cached>> {
        // A panic elsewhere while it was held leaves a whole value behind: keep using it.
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `work` on the blocking pool once fewer than [`Reads::bound`] heavy reads run. It must
    /// not itself call `run` (its turn would wait for its own).
    pub async fn run<T, F>(self: &Arc<Self>, work: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: Future<Output = AppResult<T>> + Send + 'static,
    {
        let permit = {
            let _waiting = Gauge::up(&self.waiting);
            self.permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| AppError::runtime("heavy reads are no longer accepted"))?
        };
        let this = self.clone();
        let runtime = tokio::runtime::Handle::current();
        // The database's futures are driven from a blocking thread: the loading (JSON parsing)
        // and the analysis never occupy an async worker.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _running = Gauge::up(&this.running);
            runtime.block_on(work)
        })
        .await
        .unwrap_or_else(|e| Err(AppError::runtime(format!("a heavy read stopped: {e}"))))
    }

    /// The history's analysis with `settings` (origins are read from the store): the cached
    /// one while no import or run was logged since it was computed, else computed once for
    /// every request that asks meanwhile.
    pub async fn analysis(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        settings: AnalysisSettings,
    ) -> AppResult<Arc<AnalysisReport>> {
        if let Some(report) = self.current(store.as_ref(), &settings).await? {
            return Ok(report);
        }
        let flight = self.flight.clone().lock_owned().await;
        // The computation this request waited for may have been of the same history.
        if let Some(report) = self.current(store.as_ref(), &settings).await? {
            return Ok(report);
        }
        let this = self.clone();
        // Once started, the computation finishes and is stored even if this request goes away.
        self.run(async move {
            let _flight = flight;
            // The head before the history: what is loaded is at least as new as the mark.
            let HistoryMark { head, .. } = store.history_mark(i64::MAX).await?;
            let experiments = store.load_experiments().await?;
            let key = settings.clone();
            let mut settings = settings;
            settings.origins = origins(store.as_ref(), &experiments).await?;
            let report = Arc::new(AnalysisReport::new(experiments, settings));
            this.computations.fetch_add(1, Ordering::Relaxed);
            *this.cached() = Some(Cached {
                report: report.clone(),
                settings: key,
                checked_at: head,
            });
            Ok(report)
        })
        .await
    }

    /// The cached analysis if it was computed with `settings` and no import or run was logged
    /// since it was last known current.
    async fn current(
        &self,
        store: &dyn Store,
        settings: &AnalysisSettings,
    ) -> AppResult<Option<Arc<AnalysisReport>>> {
        let Some((report, checked_at)) = self
            .cached()
            .as_ref()
            .filter(|c| same_settings(&c.settings, settings))
            .map(|c| (c.report.clone(), c.checked_at))
        else {
            return Ok(None);
        };
        let mark = store.history_mark(checked_at).await?;
        if mark.changed {
            return Ok(None);
        }
        // The next check reads only the entries logged after this one.
        if let Some(cached) = self.cached().as_mut() {
            if Arc::ptr_eq(&cached.report, &report) {
                cached.checked_at = cached.checked_at.max(mark.head);
            }
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Ok(Some(report))
    }
}

/// The same settings, origins aside (the day, the configuration and the catalog's budgets).
fn same_settings(a: &AnalysisSettings, b: &AnalysisSettings) -> bool {
    a.today == b.today
        && a.alpha == b.alpha
        && a.power == b.power
        && a.srm_threshold == b.srm_threshold
        && a.min_decided_experiments == b.min_decided_experiments
        && a.multiple_comparisons == b.multiple_comparisons
        && a.engine == b.engine
        && a.prior == b.prior
        && a.sequential == b.sequential
        && a.lower_is_better == b.lower_is_better
        && a.latency_budget_ms == b.latency_budget_ms
}

/// A gauge counted up while this lives.
struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn up(gauge: &'a AtomicU64) -> Gauge<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        Gauge(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heavy_work_beyond_the_bound_waits_its_turn() {
        let reads = Arc::new(Reads::new(1));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let reads = reads.clone();
            tokio::spawn(async move {
                reads
                    .run(async move {
                        let _ = released.await;
                        Ok(1)
                    })
                    .await
            })
        };
        while reads.stats().running == 0 {
            tokio::task::yield_now().await;
        }
        let second = {
            let reads = reads.clone();
            tokio::spawn(async move { reads.run(async { Ok(2) }).await })
        };
        while reads.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            reads.stats(),
            ReadStats {
                running: 1,
                waiting: 1,
                bound: 1,
                ..ReadStats::default()
            }
        );
        assert!(!second.is_finished());
        let _ = release.send(());
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 2);
        assert_eq!(reads.stats().running + reads.stats().waiting, 0);
    }

    #[test]
    fn the_bound_is_at_least_one_and_at_most_two() {
        assert!((1..=2).contains(&default_bound()));
        assert_eq!(Reads::new(0).bound(), 1);
    }
}
