//! `hypod backtest`: had the team listened to hypod a year ago, would it have run better tests?
//! For each cutoff, the history as it was known then goes through a run exactly as a nightly
//! run makes it ([`super::run::dry_run`]: the same analysis, proposer and fallback, caps,
//! validation, consent and policies; an empty queue; nothing written), and what it proposed is
//! scored against what the program went on to test ([`crate::analysis::backtest`]). The result
//! is kept (the runs page draws its calibration chart from the latest) and returned as the view
//! `--json` prints. An `openai` backtest counts the model's tokens and stops before a cutoff
//! would go past its budget.

use super::load::{analysis_settings, origins};
use super::run::{dry_run, RunPlan};
use super::{App, AppError, AppResult};
use crate::analysis::backtest::{self, Every, Proposed, Scores};
use crate::config::ProposerKind;
use crate::domain::{ProposalStatus, RunStatus, Trigger};
use crate::store::BacktestRecord;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

/// What a backtest is asked to do.
#[derive(Debug, Clone)]
pub struct BacktestRequest {
    /// The first cutoff (default: 12 months before the history's last day).
    pub from: Option<NaiveDate>,
    pub every: Every,
    /// The proposer (default: the configured one).
    pub proposer: Option<ProposerKind>,
    /// The model's token budget (prompt and completion): required for `openai`.
    pub max_tokens: Option<u64>,
}

/// Told after every cutoff, for a progress display.
pub trait BacktestProgress {
    fn cutoff_done(&self, step: &Step);
}

/// Where a backtest is, after one cutoff.
#[derive(Debug, Clone)]
pub struct Step {
    pub done: usize,
    pub total: usize,
    pub elapsed_seconds: f64,
    pub proposer: String,
    /// Tokens used so far (an `openai` backtest).
    pub tokens: Option<u64>,
}

/// One cutoff's run.
#[derive(Debug, Clone, Serialize)]
pub struct CutoffRun {
    pub cutoff: NaiveDate,
    /// Experiments known at the cutoff (running ones included).
    pub experiments: usize,
    /// `succeeded`, `not_ready` or `failed`, as a run's status.
    pub status: String,
    /// The proposer that drafted (the fallback when the configured one failed).
    pub proposer: String,
    pub queued: usize,
    pub blocked: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Why the run proposed nothing (not ready, failed), or that it fell back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What it proposed, queued and blocked.
    pub proposals: Vec<Proposed>,
}

/// The model's tokens a backtest used.
#[derive(Debug, Clone, Serialize)]
pub struct TokenUse {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
    pub budget: u64,
}

/// `hypod backtest --json`.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestView {
    pub id: String,
    pub ran_at: DateTime<Utc>,
    /// The proposer asked for.
    pub proposer: String,
    pub from: NaiveDate,
    pub every: Every,
    pub history_last_date: NaiveDate,
    /// Whether every cutoff ran (false when the token budget stopped it).
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenUse>,
    pub seconds: f64,
    pub cutoffs: Vec<CutoffRun>,
    #[serde(flatten)]
    pub scores: Scores,
}

/// A day as the instant a run at that cutoff believes it is: its first second.
fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

impl App {
    /// Runs a backtest, keeps its result, and returns it.
    pub async fn backtest(
        &self,
        request: &BacktestRequest,
        progress: &dyn BacktestProgress,
    ) -> AppResult<BacktestView> {
        let clock = std::time::Instant::now();
        let mut config = self.config.clone();
        if let Some(kind) = request.proposer {
            config.proposer.kind = kind;
        }
        let openai = config.proposer.kind == ProposerKind::Openai;
        let budget = match (openai, request.max_tokens) {
            (true, None) => {
                return Err(AppError::input(
                    "an openai backtest calls the model at every cutoff: give it a token budget with --max-tokens N",
                ))
            }
            (true, Some(0)) => return Err(AppError::input("--max-tokens must be above 0")),
            (true, Some(n)) => Some(n),
            (false, _) => None,
        };
        let governance = self.governance()?;
        let proposers = super::proposers(&config, &governance)?;
        let store = self.store().await?;
        let experiments = store.load_experiments().await?;
        let last = backtest::last_date(&experiments).ok_or_else(|| {
            AppError::input("the history holds no dated experiment: import the history first")
        })?;
        let from = request.from.unwrap_or_else(|| backtest::default_from(last));
        let cutoffs = backtest::cutoffs(from, request.every, last);
        if cutoffs.is_empty() {
            return Err(AppError::input(format!(
                "--from {from} is not before the history's last day ({last}): nothing to backtest"
            )));
        }
        let all_origins = origins(store.as_ref(), &experiments).await?;
        let mut proposed: Vec<Proposed> = Vec::new();
        let mut runs: Vec<CutoffRun> = Vec::new();
        let (mut prompt_tokens, mut completion_tokens, mut largest) = (0u64, 0u64, 0u64);
        let mut stopped = None;
        for (n, cutoff) in cutoffs.iter().enumerate() {
            if let Some(budget) = budget {
                let used = prompt_tokens + completion_tokens;
                if used + largest > budget {
                    stopped = Some(format!(
                        "stopped at the token budget: {used} of {budget} tokens used after {n} of {} cutoffs, and the largest cutoff so far took {largest}; the figures cover the cutoffs before {cutoff}",
                        cutoffs.len()
                    ));
                    break;
                }
            }
            let known = backtest::as_of(&experiments, *cutoff);
            let now = start_of(*cutoff);
            let known_origins = all_origins
                .iter()
                .filter(|o| o.created_at < now)
                .cloned()
                .collect();
            let plan = RunPlan {
                config: &config,
                governance: &governance,
                proposer: proposers.0.as_ref(),
                fallback: proposers.1.as_deref(),
                trigger: Trigger::Cli,
                now,
                fence: None,
                sync_as: None,
            };
            let (record, proposals) = dry_run(&plan, &known, known_origins).await;
            let tokens = record
                .usage
                .as_ref()
                .map(|u| u.prompt_tokens + u.completion_tokens);
            if let Some(usage) = &record.usage {
                prompt_tokens += usage.prompt_tokens;
                completion_tokens += usage.completion_tokens;
                largest = largest.max(usage.prompt_tokens + usage.completion_tokens);
            }
            let note = match record.status {
                RunStatus::Succeeded => record
                    .fell_back
                    .as_ref()
                    .map(|why| format!("fell back to {}: {why}", record.proposer)),
                _ => record
                    .error
                    .clone()
                    .or_else(|| record.notes.first().cloned()),
            };
            let made: Vec<Proposed> = proposals
                .iter()
                .map(|p| Proposed {
                    cutoff: *cutoff,
                    id: p.id.clone(),
                    title: p.draft.title.clone(),
                    proposer: p.provenance.proposer.clone(),
                    strategy: p.enrichment.strategy,
                    blocked: p.status == ProposalStatus::Blocked,
                    moment: p.draft.moment,
                    lever: p.draft.lever.clone(),
                    segment: p.draft.segment.clone(),
                    predicted_lift: p.draft.expected_relative_lift,
                    predicted_interval: p.enrichment.predicted_interval,
                })
                .collect();
            proposed.extend(made.iter().cloned());
            runs.push(CutoffRun {
                cutoff: *cutoff,
                experiments: known.len(),
                status: record.status.as_str().to_string(),
                proposer: record.proposer.clone(),
                queued: record.summary.queued,
                blocked: record.summary.blocked,
                tokens,
                note,
                proposals: made,
            });
            progress.cutoff_done(&Step {
                done: n + 1,
                total: cutoffs.len(),
                elapsed_seconds: clock.elapsed().as_secs_f64(),
                proposer: record.proposer.clone(),
                tokens: budget.map(|_| prompt_tokens + completion_tokens),
            });
        }
        // What the program's later tests found: the whole history, analysed as of its last day.
        let settings = analysis_settings(&config, &governance, start_of(last));
        let analysis = crate::analysis::analyze(&experiments, &settings);
        let scores = backtest::score(&proposed, &experiments, &analysis, cutoffs[0]);
        let proposer = match config.proposer.kind {
            ProposerKind::Builtin => "builtin",
            ProposerKind::Openai => "openai",
        };
        let view = BacktestView {
            id: uuid::Uuid::now_v7().to_string(),
            ran_at: Utc::now(),
            proposer: proposer.to_string(),
            from,
            every: request.every,
            history_last_date: last,
            complete: stopped.is_none(),
            stopped,
            tokens: budget.map(|budget| TokenUse {
                prompt: prompt_tokens,
                completion: completion_tokens,
                total: prompt_tokens + completion_tokens,
                budget,
            }),
            seconds: clock.elapsed().as_secs_f64(),
            cutoffs: runs,
            scores,
        };
        let result = serde_json::to_value(&view)?;
        let record = BacktestRecord {
            id: view.id.clone(),
            ran_at: view.ran_at,
            proposer: view.proposer.clone(),
            result,
        };
        store.record_backtest(&record).await?;
        Ok(view)
    }

    /// The latest backtest kept, for the runs page.
    pub async fn last_backtest(&self) -> AppResult<Option<BacktestRecord>> {
        Ok(self.store().await?.last_backtest().await?)
    }
}
