//! Program health: the playbook's signals computed over the whole history (proven hypothesis
//! rate, idea-to-decision time, attribution stability, moment coverage, KPI mirage, latency
//! leaks, black-box rules, data-quality problems) and the maturity stage they suggest, with
//! the reasons.
//!
//! Quarters: a quarter is *complete* when it lies wholly between the first date of the
//! history (the earliest idea, start or decision) and the day of the analysis. The first and
//! the current quarter are usually partial: they are shown in the per-quarter maps and listed
//! in `partial_quarters`, but the attribution CV and the idea-to-decision trend use complete
//! quarters only (a half-filled quarter would look like a collapse of attributed revenue).

use super::{AnalysisSettings, DataQualityProblem, ExperimentAnalysis, Outcome};
use crate::history::{Decision, Experiment, Moment};
use chrono::{Datelike, Months, NaiveDate};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RateCell {
    pub proven: usize,
    pub valid: usize,
    pub rate: Option<f64>,
}

impl RateCell {
    fn add(&mut self, proven: bool) {
        self.valid += 1;
        if proven {
            self.proven += 1;
        }
        self.rate = Some(self.proven as f64 / self.valid as f64);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyLeak {
    pub id: String,
    pub rendering: String,
    pub latency_ms_p75_delta: f64,
    pub budget_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProgramHealth {
    pub experiments: usize,
    pub running: usize,
    pub concluded: usize,
    /// Concluded (or stopped) with a trustworthy, computable result.
    pub valid_concluded: usize,
    pub proven: usize,
    pub disproven: usize,
    pub inconclusive: usize,
    pub invalid: usize,
    /// proven / valid concluded.
    pub proven_rate: Option<f64>,
    /// `below_healthy` (shipping noise), `healthy` (30–50%), `above_healthy` (suspect measurement).
    pub proven_rate_band: Option<String>,
    #[schema(value_type = std::collections::HashMap<String, Object>)]
    pub proven_rate_by_moment: BTreeMap<String, RateCell>,
    #[schema(value_type = std::collections::HashMap<String, Object>)]
    pub proven_rate_by_quarter: BTreeMap<String, RateCell>,
    pub median_idea_to_decision_days: Option<f64>,
    pub idea_to_decision_days_by_quarter: BTreeMap<String, f64>,
    /// Least-squares slope of the quarterly medians, in days per quarter (negative = faster).
    pub idea_to_decision_trend_days_per_quarter: Option<f64>,
    pub attributed_revenue_by_quarter: BTreeMap<String, f64>,
    /// Coefficient of variation of the quarterly attributed revenue over complete quarters
    /// (lower = more stable).
    pub attribution_cv: Option<f64>,
    /// Quarters in the per-quarter figures that the history covers only in part (its first
    /// quarter, the current one); the CV and the trend leave them out.
    pub partial_quarters: Vec<String>,
    /// Experiments per quarter and commerce moment (every experiment, running ones included),
    /// dated as the other per-quarter figures: by the decision, else the end, the start, the
    /// idea. Moments without an experiment in a quarter are left out of its map.
    #[schema(value_type = std::collections::HashMap<String, std::collections::HashMap<String, usize>>)]
    pub experiments_by_quarter_and_moment: BTreeMap<String, BTreeMap<String, usize>>,
    /// Experiments started in the 12 months before the analysis day, per named moment.
    pub moment_coverage_12m: BTreeMap<String, usize>,
    /// Named moments with fewer than 3 experiments in those 12 months, or under a quarter of the
    /// busiest moment's count.
    #[schema(value_type = Vec<String>)]
    pub neglected_moments: Vec<Moment>,
    /// Share of experiments whose primary KPI is not commercial.
    pub kpi_mirage_share: Option<f64>,
    pub kpi_mirage_experiments: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub latency_leaks: Vec<LatencyLeak>,
    /// Shipped without a proven result.
    pub black_box_rules: Vec<String>,
    pub srm_flagged: Vec<String>,
    /// Summary-only records (results as another tool reported them): counted in the outcomes
    /// and rates above from their reported figures, never re-analysed. Absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub summary_only: Vec<String>,
    /// Arms whose numbers cannot be real or cannot be tested (zero variance: 0 % or 100 %
    /// conversion, constant revenue, a single order): tracking problems, not results.
    #[schema(value_type = Vec<Object>)]
    pub data_quality: Vec<ExperimentDataQuality>,
    pub maturity_stage: u8,
    pub maturity_reasons: Vec<String>,
    /// What would move the programme up one stage, judged by the thresholds that set
    /// `maturity_stage` (empty at Stage 4, the highest).
    pub maturity_next_steps: Vec<String>,
    /// Whether the history is rich enough for agentic proposals.
    pub ready_for_proposals: bool,
    pub readiness_reason: String,
    /// Why a null figure above is null.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<String, String>,
}

/// A data-quality problem of one experiment's arm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentDataQuality {
    pub id: String,
    #[serde(flatten)]
    pub problem: DataQualityProblem,
}

pub fn quarter_of(date: NaiveDate) -> String {
    format!("{}-Q{}", date.year(), (date.month0() / 3) + 1)
}

/// First day of the quarter of `date`, and first day of the next quarter.
fn quarter_bounds(date: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
    let start = NaiveDate::from_ymd_opt(date.year(), (date.month0() / 3) * 3 + 1, 1)?;
    Some((start, start.checked_add_months(Months::new(3))?))
}

/// The median of `values` (sorted in place), `None` when empty.
pub(crate) fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

fn slope(points: &[f64]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = points.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in points.iter().enumerate() {
        let dx = i as f64 - mean_x;
        num += dx * (y - mean_y);
        den += dx * dx;
    }
    (den > 0.0).then(|| num / den)
}

pub fn program_health(
    experiments: &[Experiment],
    analyses: &[ExperimentAnalysis],
    settings: &AnalysisSettings,
) -> ProgramHealth {
    program_health_of(experiments.iter().zip(analyses), settings)
}

/// Program health from experiments paired with their analyses, in one pass: the analyses may
/// be computed on the fly and dropped, so a large history need not hold them all at once.
pub fn program_health_of<'a, A: std::borrow::Borrow<ExperimentAnalysis>>(
    pairs: impl IntoIterator<Item = (&'a Experiment, A)>,
    settings: &AnalysisSettings,
) -> ProgramHealth {
    let mut tally = Tally::new(settings);
    for (experiment, analysis) in pairs {
        tally.add(experiment, analysis.borrow(), settings);
    }
    tally.summarise(settings)
}

/// What one pass over the history collects: the outcome counts and rate cells, the dates that
/// make quarters, the timing figures, and the experiments each signal names.
struct Tally {
    count: usize,
    running: usize,
    concluded: usize,
    proven: usize,
    disproven: usize,
    inconclusive: usize,
    invalid: usize,
    overall: RateCell,
    by_moment: BTreeMap<String, RateCell>,
    by_quarter: BTreeMap<String, RateCell>,
    /// The first date of the history (the earliest idea, start or decision).
    history_start: Option<NaiveDate>,
    /// One date in every quarter the per-quarter figures mention.
    quarter_dates: BTreeMap<String, NaiveDate>,
    decision_days: Vec<f64>,
    decision_days_by_quarter: BTreeMap<String, Vec<f64>>,
    attributed: BTreeMap<String, f64>,
    by_quarter_moment: BTreeMap<String, BTreeMap<String, usize>>,
    /// Experiments started in the 12 months after `window_start`, per named moment.
    coverage: BTreeMap<String, usize>,
    window_start: NaiveDate,
    mirage: Vec<String>,
    leaks: Vec<LatencyLeak>,
    black_box: Vec<String>,
    srm_flagged: Vec<String>,
    summary_only: Vec<String>,
    data_quality: Vec<ExperimentDataQuality>,
}

impl Tally {
    fn new(settings: &AnalysisSettings) -> Tally {
        Tally {
            count: 0,
            running: 0,
            concluded: 0,
            proven: 0,
            disproven: 0,
            inconclusive: 0,
            invalid: 0,
            overall: RateCell::default(),
            by_moment: BTreeMap::new(),
            by_quarter: BTreeMap::new(),
            history_start: None,
            quarter_dates: BTreeMap::new(),
            decision_days: Vec::new(),
            decision_days_by_quarter: BTreeMap::new(),
            attributed: BTreeMap::new(),
            by_quarter_moment: BTreeMap::new(),
            coverage: Moment::NAMED
                .iter()
                .map(|m| (m.as_str().to_string(), 0))
                .collect(),
            window_start: settings
                .today
                .checked_sub_months(Months::new(12))
                .unwrap_or(settings.today),
            mirage: Vec::new(),
            leaks: Vec::new(),
            black_box: Vec::new(),
            srm_flagged: Vec::new(),
            summary_only: Vec::new(),
            data_quality: Vec::new(),
        }
    }

    fn add(
        &mut self,
        experiment: &Experiment,
        analysis: &ExperimentAnalysis,
        settings: &AnalysisSettings,
    ) {
        self.count += 1;
        if analysis.summary_only {
            self.summary_only.push(experiment.id.clone());
        }
        if experiment.is_running() {
            self.running += 1;
        } else {
            self.concluded += 1;
        }
        self.add_dates(experiment);
        self.add_outcome(experiment, analysis);
        self.add_timing(experiment, settings);
        self.add_signals(experiment, analysis, settings);
    }

    /// Where the history begins, and which quarters it mentions.
    fn add_dates(&mut self, experiment: &Experiment) {
        let first_date = [
            experiment.idea_at,
            experiment.started_at,
            experiment.ended_at,
            experiment.decided_at,
        ]
        .into_iter()
        .flatten()
        .min();
        self.history_start = match (self.history_start, first_date) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for date in [experiment.reference_date(), experiment.decided_at]
            .into_iter()
            .flatten()
        {
            self.quarter_dates.entry(quarter_of(date)).or_insert(date);
        }
    }

    /// The outcome counts, and the proven-rate cells (overall, per moment, per quarter).
    fn add_outcome(&mut self, experiment: &Experiment, analysis: &ExperimentAnalysis) {
        match analysis.outcome {
            Outcome::Proven | Outcome::Disproven | Outcome::Inconclusive => {
                let is_proven = analysis.outcome == Outcome::Proven;
                self.overall.add(is_proven);
                self.by_moment
                    .entry(experiment.moment.as_str().to_string())
                    .or_default()
                    .add(is_proven);
                if let Some(q) = experiment.reference_date().map(quarter_of) {
                    self.by_quarter.entry(q).or_default().add(is_proven);
                }
                match analysis.outcome {
                    Outcome::Proven => self.proven += 1,
                    Outcome::Disproven => self.disproven += 1,
                    _ => self.inconclusive += 1,
                }
            }
            Outcome::Invalid => self.invalid += 1,
            Outcome::Running | Outcome::NotComputable => {}
        }
    }

    /// Idea-to-decision days, attributed revenue per quarter, and the 12-month coverage.
    fn add_timing(&mut self, experiment: &Experiment, settings: &AnalysisSettings) {
        if let (Some(idea), Some(decided)) = (experiment.idea_at, experiment.decided_at) {
            let days = (decided - idea).num_days() as f64;
            if days >= 0.0 {
                self.decision_days.push(days);
                self.decision_days_by_quarter
                    .entry(quarter_of(decided))
                    .or_default()
                    .push(days);
            }
        }
        let quarter = experiment.reference_date().map(quarter_of);
        if let Some(q) = &quarter {
            *self
                .by_quarter_moment
                .entry(q.clone())
                .or_default()
                .entry(experiment.moment.as_str().to_string())
                .or_default() += 1;
        }
        if let (Some(revenue), Some(q)) = (experiment.attributed_revenue, quarter) {
            *self.attributed.entry(q).or_default() += revenue;
        }
        let started = experiment
            .started_at
            .or(experiment.idea_at)
            .or(experiment.reference_date());
        if let Some(started) = started {
            if started > self.window_start && started <= settings.today {
                if let Some(count) = self.coverage.get_mut(experiment.moment.as_str()) {
                    *count += 1;
                }
            }
        }
    }

    /// The experiments each warning signal names: data quality, SRM, KPI mirage, latency
    /// leaks, black-box rules.
    fn add_signals(
        &mut self,
        experiment: &Experiment,
        analysis: &ExperimentAnalysis,
        settings: &AnalysisSettings,
    ) {
        for problem in &analysis.data_quality {
            self.data_quality.push(ExperimentDataQuality {
                id: experiment.id.clone(),
                problem: problem.clone(),
            });
        }
        if analysis.srm_flagged {
            self.srm_flagged.push(experiment.id.clone());
        }
        if !experiment.has_commercial_kpi() {
            self.mirage.push(experiment.id.clone());
        }
        if let (Some(delta), Some(rendering)) = (
            experiment.latency_ms_p75_delta,
            experiment.rendering.as_deref(),
        ) {
            if let Some(budget) = settings.latency_budget_ms.get(rendering) {
                if delta > *budget {
                    self.leaks.push(LatencyLeak {
                        id: experiment.id.clone(),
                        rendering: rendering.to_string(),
                        latency_ms_p75_delta: delta,
                        budget_ms: *budget,
                    });
                }
            }
        }
        if experiment.decision == Some(Decision::Ship) && analysis.outcome != Outcome::Proven {
            self.black_box.push(experiment.id.clone());
        }
    }

    /// The figures derived from the tally, the maturity stage and the readiness.
    fn summarise(mut self, settings: &AnalysisSettings) -> ProgramHealth {
        let mut reasons = BTreeMap::new();
        let proven_rate = self.overall.rate;
        if proven_rate.is_none() {
            reasons.insert(
                "proven_rate".into(),
                "no concluded experiment with a valid result".into(),
            );
        }
        let median_days = median(&mut self.decision_days);
        if median_days.is_none() {
            reasons.insert(
                "median_idea_to_decision_days".into(),
                "no experiment has both idea_at and decided_at".into(),
            );
        }
        let by_quarter_days: BTreeMap<String, f64> =
            std::mem::take(&mut self.decision_days_by_quarter)
                .into_iter()
                .filter_map(|(q, mut days)| median(&mut days).map(|m| (q, m)))
                .collect();
        let partial_quarters = self.partial_quarters(settings.today);
        let complete = |q: &String| !partial_quarters.contains(q);
        let trend = slope(
            &by_quarter_days
                .iter()
                .filter(|(q, _)| complete(q))
                .map(|(_, days)| *days)
                .collect::<Vec<_>>(),
        );
        let attribution_cv = attribution_cv(
            self.attributed
                .iter()
                .filter(|(q, _)| complete(q))
                .map(|(_, v)| *v)
                .collect(),
        );
        if attribution_cv.is_err() {
            reasons.insert(
                "attribution_cv".into(),
                "attributed revenue in fewer than two complete quarters".into(),
            );
        }
        let attribution_cv = attribution_cv.ok().flatten();
        let neglected = neglected_moments(&self.coverage);
        let count = self.count;
        let kpi_mirage_share = (count > 0).then(|| self.mirage.len() as f64 / count as f64);
        let Maturity {
            stage,
            reasons: stage_reasons,
            next_steps,
        } = maturity(&Signals {
            valid: self.overall.valid,
            proven_rate,
            median_days,
            attribution_cv,
            mirage_share: kpi_mirage_share.unwrap_or(0.0),
            black_box: self.black_box.len(),
            total: count,
            neglected: &neglected,
        });
        let (ready, readiness_reason) = readiness(self.overall.valid, settings);
        ProgramHealth {
            experiments: count,
            running: self.running,
            concluded: self.concluded,
            valid_concluded: self.overall.valid,
            proven: self.proven,
            disproven: self.disproven,
            inconclusive: self.inconclusive,
            invalid: self.invalid,
            proven_rate,
            proven_rate_band: proven_rate.map(proven_rate_band),
            proven_rate_by_moment: self.by_moment,
            proven_rate_by_quarter: self.by_quarter,
            median_idea_to_decision_days: median_days,
            idea_to_decision_days_by_quarter: by_quarter_days,
            idea_to_decision_trend_days_per_quarter: trend,
            attributed_revenue_by_quarter: self.attributed,
            attribution_cv,
            partial_quarters,
            experiments_by_quarter_and_moment: self.by_quarter_moment,
            moment_coverage_12m: self.coverage,
            neglected_moments: neglected,
            kpi_mirage_share,
            kpi_mirage_experiments: self.mirage,
            latency_leaks: self.leaks,
            black_box_rules: self.black_box,
            srm_flagged: self.srm_flagged,
            summary_only: self.summary_only,
            data_quality: self.data_quality,
            maturity_stage: stage,
            maturity_reasons: stage_reasons,
            maturity_next_steps: next_steps,
            ready_for_proposals: ready,
            readiness_reason,
            reasons,
        }
    }

    /// Quarters the history covers only in part: a quarter is complete from the first whole
    /// one after the history begins to the last one that ended before `today`.
    fn partial_quarters(&self, today: NaiveDate) -> Vec<String> {
        let is_complete =
            |quarter_date: NaiveDate| match (quarter_bounds(quarter_date), self.history_start) {
                (Some((start, end)), Some(first)) => start >= first && end <= today,
                _ => false,
            };
        self.quarter_dates
            .iter()
            .filter(|(_, date)| !is_complete(**date))
            .map(|(q, _)| q.clone())
            .collect()
    }
}

/// `below_healthy` (shipping noise), `healthy` (30–50 %), `above_healthy` (suspect measurement).
fn proven_rate_band(rate: f64) -> String {
    if rate < HEALTHY_PROVEN_RATE.0 {
        "below_healthy".to_string()
    } else if rate <= HEALTHY_PROVEN_RATE.1 {
        "healthy".to_string()
    } else {
        "above_healthy".to_string()
    }
}

/// The coefficient of variation of the attributed revenue of complete quarters; `Err` when
/// fewer than two quarters have any, `Ok(None)` when their mean is not positive.
fn attribution_cv(values: Vec<f64>) -> Result<Option<f64>, ()> {
    if values.len() < 2 {
        return Err(());
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    Ok((mean > 0.0).then(|| var.sqrt() / mean))
}

/// Neglected: fewer than 3 experiments, or under a quarter of the busiest moment's count.
fn neglected_moments(coverage: &BTreeMap<String, usize>) -> Vec<Moment> {
    let busiest = coverage.values().copied().max().unwrap_or(0) as f64;
    Moment::NAMED
        .into_iter()
        .filter(|m| {
            let count = coverage.get(m.as_str()).copied().unwrap_or(0);
            count < NEGLECTED_BELOW || (count as f64) < NEGLECTED_SHARE_OF_BUSIEST * busiest
        })
        .collect()
}

/// Whether the history has enough valid results for proposals, and why.
fn readiness(valid: usize, settings: &AnalysisSettings) -> (bool, String) {
    let ready = valid >= settings.min_decided_experiments;
    let reason = if ready {
        format!(
            "{valid} concluded experiments with valid results (at least {} needed)",
            settings.min_decided_experiments
        )
    } else {
        format!(
            "only {valid} concluded experiments with valid results; hypod needs at least {} before it proposes anything: decide more experiments first",
            settings.min_decided_experiments
        )
    };
    (ready, reason)
}

/// The playbook's healthy proven-hypothesis rate: below it a programme ships noise, above it
/// the measurement is suspect.
pub const HEALTHY_PROVEN_RATE: (f64, f64) = (0.30, 0.50);

/// The thresholds of the maturity stages: one place sets the stage, its reasons and the steps
/// to the next one.
const STAGE_2_MIN_VALID: usize = 5;
const STAGE_3_MAX_MIRAGE_SHARE: f64 = 0.25;
const STAGE_3_MAX_BLACK_BOX_SHARE: f64 = 0.25;
const STAGE_3_MAX_MEDIAN_DAYS: f64 = 120.0;
const STAGE_3_MIN_PROVEN_RATE: f64 = 0.10;
const STAGE_4_MAX_MEDIAN_DAYS: f64 = 14.0;
const STAGE_4_MAX_ATTRIBUTION_CV: f64 = 0.30;
const STAGE_4_MIN_VALID: usize = 50;
/// Fewer experiments than this in 12 months makes a moment neglected.
const NEGLECTED_BELOW: usize = 3;
/// …as does fewer than this share of the busiest moment's count.
const NEGLECTED_SHARE_OF_BUSIEST: f64 = 0.25;

/// The health signals the maturity stage is judged by.
struct Signals<'a> {
    valid: usize,
    proven_rate: Option<f64>,
    median_days: Option<f64>,
    attribution_cv: Option<f64>,
    mirage_share: f64,
    black_box: usize,
    total: usize,
    neglected: &'a [Moment],
}

/// The stage, the reasons that set it, and what would move the programme up one stage.
struct Maturity {
    stage: u8,
    reasons: Vec<String>,
    next_steps: Vec<String>,
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// Estimates the playbook's maturity stage (1 Random … 4 Adaptive) from the health signals,
/// with the reasons and the steps to the next stage (each unmet condition of that stage; the
/// reasons keep the wording the model's prompt and earlier outputs carry, the steps name every
/// condition with the figure now and the figure needed).
fn maturity(s: &Signals) -> Maturity {
    let mut reasons = Vec::new();
    let mut next_steps = Vec::new();
    let valid = s.valid;
    if valid < STAGE_2_MIN_VALID {
        reasons.push(format!(
            "Stage 1 (Random): only {valid} experiments with a valid decided result, no measurable programme yet"
        ));
        next_steps.push(format!(
            "decide {} more experiment(s) with a valid result (at least {STAGE_2_MIN_VALID}): the programme becomes measurable",
            STAGE_2_MIN_VALID - valid
        ));
        return Maturity {
            stage: 1,
            reasons,
            next_steps,
        };
    }
    let mut stage = 3u8;
    let black_box_share = s.black_box as f64 / s.total.max(1) as f64;
    if s.mirage_share > STAGE_3_MAX_MIRAGE_SHARE {
        stage = stage.min(2);
        reasons.push(format!(
            "{} of experiments optimise a non-commercial KPI (KPI mirage)",
            percent(s.mirage_share)
        ));
        next_steps.push(format!(
            "make a commercial KPI the primary one: {} of experiments optimise another, at most {} for Stage 3",
            percent(s.mirage_share),
            percent(STAGE_3_MAX_MIRAGE_SHARE)
        ));
    }
    if black_box_share > STAGE_3_MAX_BLACK_BOX_SHARE {
        stage = stage.min(2);
        reasons.push(format!(
            "{} of experiments shipped without a proven result (black-box rules)",
            percent(black_box_share)
        ));
        next_steps.push(format!(
            "test the rules shipped without a proven result (holdback tests): {} of {} experiments ({}), at most {} for Stage 3",
            s.black_box,
            s.total,
            percent(black_box_share),
            percent(STAGE_3_MAX_BLACK_BOX_SHARE)
        ));
    }
    match s.median_days {
        Some(days) if days > STAGE_3_MAX_MEDIAN_DAYS => {
            stage = stage.min(2);
            reasons.push(format!(
                "idea to decision takes {days:.0} days (median): months, as at Stage 1–2"
            ));
            next_steps.push(format!(
                "decide within {STAGE_3_MAX_MEDIAN_DAYS:.0} days of the idea (median now {days:.0} days)"
            ));
        }
        Some(days) => reasons.push(format!("idea to decision takes {days:.0} days (median)")),
        None => {
            stage = stage.min(2);
            reasons.push("idea-to-decision time is not recorded".into());
            next_steps.push(
                "record idea_at and decided_at, so the time from idea to decision is known".into(),
            );
        }
    }
    match s.proven_rate {
        Some(rate) if rate < STAGE_3_MIN_PROVEN_RATE => {
            stage = stage.min(2);
            reasons.push(format!(
                "proven hypothesis rate {} is below {}: the programme ships noise",
                percent(rate),
                percent(STAGE_3_MIN_PROVEN_RATE)
            ));
            next_steps.push(format!(
                "raise the proven hypothesis rate from {} to at least {}: test better-evidenced hypotheses with enough visitors",
                percent(rate),
                percent(STAGE_3_MIN_PROVEN_RATE)
            ));
        }
        Some(rate) => reasons.push(format!("proven hypothesis rate {}", percent(rate))),
        None => {}
    }
    if stage < 3 {
        reasons.insert(
            0,
            "Stage 2 (Reactive): some measurement, but the signals below hold the programme back"
                .into(),
        );
        return Maturity {
            stage,
            reasons,
            next_steps,
        };
    }
    reasons.insert(
        0,
        "Stage 3 (Strategic): hypotheses are formalised and decided on commercial KPIs".into(),
    );
    let (low, high) = HEALTHY_PROVEN_RATE;
    let fast = s.median_days.is_some_and(|d| d <= STAGE_4_MAX_MEDIAN_DAYS);
    let healthy_rate = s.proven_rate.is_some_and(|r| (low..=high).contains(&r));
    let stable = s
        .attribution_cv
        .is_some_and(|cv| cv <= STAGE_4_MAX_ATTRIBUTION_CV);
    let enough = valid >= STAGE_4_MIN_VALID;
    if fast && healthy_rate && stable && s.neglected.is_empty() && enough {
        reasons.insert(
            0,
            "Stage 4 (Adaptive): fast decisions, a healthy proven rate, stable attribution and every moment covered".into(),
        );
        return Maturity {
            stage: 4,
            reasons,
            next_steps,
        };
    }
    if !s.neglected.is_empty() {
        let names: Vec<&str> = s.neglected.iter().map(|m| m.as_str()).collect();
        reasons.push(format!(
            "not Stage 4: neglected moments in the last 12 months: {}",
            names.join(", ")
        ));
        next_steps.push(format!(
            "cover the neglected moments ({}): at least {NEGLECTED_BELOW} experiments each in 12 months, and at least {} of the busiest moment's count",
            names.join(", "),
            percent(NEGLECTED_SHARE_OF_BUSIEST)
        ));
    }
    if !fast {
        reasons.push("not Stage 4: decisions take longer than two weeks".into());
        if let Some(days) = s.median_days {
            next_steps.push(format!(
                "decide within {STAGE_4_MAX_MEDIAN_DAYS:.0} days of the idea (median now {days:.0} days)"
            ));
        }
    }
    if !stable {
        reasons
            .push("not Stage 4: attributed revenue is unstable or not recorded by quarter".into());
        next_steps.push(match s.attribution_cv {
            Some(cv) => format!(
                "steady the attributed revenue: a coefficient of variation of at most {STAGE_4_MAX_ATTRIBUTION_CV:.2} over complete quarters (now {cv:.2})"
            ),
            None => "record attributed revenue in at least two complete quarters, with a positive total".into(),
        });
    }
    if !healthy_rate {
        if let Some(rate) = s.proven_rate {
            let side = if rate < low {
                "below it: fewer, better-evidenced hypotheses"
            } else {
                "above it: check the measurement"
            };
            next_steps.push(format!(
                "bring the proven hypothesis rate into the healthy {}–{} band (now {}, {side})",
                percent(low).trim_end_matches('%'),
                percent(high),
                percent(rate)
            ));
        }
    }
    if !enough {
        next_steps.push(format!(
            "decide {} more experiment(s) with a valid result (at least {STAGE_4_MIN_VALID})",
            STAGE_4_MIN_VALID - valid
        ));
    }
    Maturity {
        stage,
        reasons,
        next_steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{analyze, AnalysisSettings};
    use crate::history::import::{parse_text, Format};

    /// Attributed revenue in a partial first quarter (the history starts in its last month)
    /// and in the unfinished current quarter is shown but left out of the CV.
    #[test]
    fn attribution_cv_uses_complete_quarters_only() {
        let mut lines = Vec::new();
        let quarters = [
            ("2024-12-10", 1_000.0), // 2024-Q4: the history starts on 2024-12-01 → partial
            ("2025-02-10", 40_000.0),
            ("2025-05-10", 41_000.0),
            ("2025-08-10", 39_000.0),
            ("2025-11-10", 40_500.0),
            ("2026-01-10", 3_000.0), // 2026-Q1: today is 2026-01-20 → partial
        ];
        for (i, (decided, revenue)) in quarters.iter().enumerate() {
            let idea = if i == 0 { "2024-12-01" } else { *decided };
            lines.push(format!(
                r#"{{"id":"q{i}","name":"q","moment":"search","primary_kpi":"conversion_rate","status":"concluded","idea_at":"{idea}","decided_at":"{decided}","attributed_revenue":{revenue},"variants":[{{"name":"c","control":true,"visitors":1000,"conversions":50}},{{"name":"t","control":false,"visitors":1000,"conversions":55}}]}}"#
            ));
        }
        let report = parse_text("q.ndjson", Format::Ndjson, &lines.join("\n"));
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let today = NaiveDate::from_ymd_opt(2026, 1, 20).unwrap();
        let program = analyze(&report.experiments, &AnalysisSettings::new(today)).program;
        assert_eq!(program.partial_quarters, vec!["2024-Q4", "2026-Q1"]);
        assert_eq!(program.attributed_revenue_by_quarter.len(), 6);
        // The four complete quarters: 40 000, 41 000, 39 000, 40 500 → CV 0.0212813 (sample
        // sd over mean, as Python's statistics.stdev / mean).
        let cv = program.attribution_cv.unwrap();
        assert!((cv - 0.021_281_310_001_992_935).abs() < 1e-12, "{cv}");
    }
    fn signals(neglected: &[Moment]) -> Signals<'_> {
        Signals {
            valid: 60,
            proven_rate: Some(0.4),
            median_days: Some(10.0),
            attribution_cv: Some(0.2),
            mirage_share: 0.0,
            black_box: 0,
            total: 100,
            neglected,
        }
    }

    /// Each stage's next steps are exactly its unmet conditions, and Stage 4 has none.
    #[test]
    fn the_next_steps_are_the_unmet_conditions_of_the_next_stage() {
        let top = maturity(&signals(&[]));
        assert_eq!((top.stage, top.next_steps.len()), (4, 0));

        let few = maturity(&Signals {
            valid: 3,
            ..signals(&[])
        });
        assert_eq!(few.stage, 1);
        assert_eq!(
            few.next_steps,
            ["decide 2 more experiment(s) with a valid result (at least 5): the programme becomes measurable"]
        );

        // Stage 2: a 130-day median and 30 % black-box rules; each names its Stage 3 figure.
        let slow = maturity(&Signals {
            median_days: Some(130.0),
            black_box: 30,
            ..signals(&[])
        });
        assert_eq!(slow.stage, 2);
        assert_eq!(
            slow.next_steps,
            [
                "test the rules shipped without a proven result (holdback tests): 30 of 100 experiments (30%), at most 25% for Stage 3",
                "decide within 120 days of the idea (median now 130 days)",
            ]
        );

        // Stage 3, one condition of Stage 4 unmet at a time.
        let rate = maturity(&Signals {
            proven_rate: Some(0.62),
            ..signals(&[])
        });
        assert_eq!(rate.stage, 3);
        assert_eq!(
            rate.next_steps,
            ["bring the proven hypothesis rate into the healthy 30–50% band (now 62%, above it: check the measurement)"]
        );
        let unstable = maturity(&Signals {
            attribution_cv: None,
            ..signals(&[])
        });
        assert_eq!(
            unstable.next_steps,
            ["record attributed revenue in at least two complete quarters, with a positive total"]
        );
        let neglected = [Moment::PostPurchase];
        let gap = maturity(&signals(&neglected));
        assert_eq!((gap.stage, gap.next_steps.len()), (3, 1));
        assert!(gap.next_steps[0].starts_with("cover the neglected moments (post_purchase)"));
    }
}
