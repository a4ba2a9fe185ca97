//! Analysis: per-experiment statistics (`stats`) and the program's health signals (`health`).
//! Pure: takes experiments and settings, returns values; no I/O. The serialized form of
//! [`Analysis`] is the stable `hypod analyze --json` output.

pub mod backtest;
pub mod dist;
pub mod engines;
pub mod health;
pub mod learning;
pub mod levers;
pub mod stats;

use crate::history::{Experiment, ExperimentStatus, Moment};
use chrono::NaiveDate;
use engines::{BayesianResult, Engine, Prior, Sequential};
use serde::Serialize;
use stats::{Arm, Moments, TestError, TestResult};
use std::collections::{BTreeMap, HashMap};

pub use health::ProgramHealth;
pub use learning::{Learning, ProposalOrigin};
pub use levers::LeverBase;

/// Knobs of the analysis, from the configuration and the catalog.
#[derive(Debug, Clone)]
pub struct AnalysisSettings {
    pub alpha: f64,
    pub power: f64,
    pub srm_threshold: f64,
    /// Latency budget per rendering mode, in ms at p75.
    pub latency_budget_ms: BTreeMap<String, f64>,
    /// Valid concluded experiments a program needs before hypod proposes anything.
    pub min_decided_experiments: usize,
    /// The day the analysis is made (moment coverage looks back 12 months from it).
    pub today: NaiveDate,
    /// Correction of the primary KPI's p-values across the treatments of an A/B/n test.
    pub multiple_comparisons: MultipleComparisons,
    /// hypod's stored proposals that experiments of the history name as their source (the
    /// learning loop links them back).
    pub origins: Vec<ProposalOrigin>,
    /// The engine outcomes are decided with (`analysis.engine`).
    pub engine: Engine,
    /// The Bayesian engine's prior on the relative effect; flat when `None`.
    pub prior: Option<Prior>,
    /// Sequential intervals and p-values for the frequentist engine (`analysis.sequential`).
    pub sequential: Option<Sequential>,
    /// KPIs where a decrease is the win (`analysis.lower_is_better`).
    pub lower_is_better: Vec<String>,
}

/// How the p-values of an A/B/n test's treatments are adjusted for testing several at once
/// (`analysis.multiple_comparisons`). Confidence intervals are not adjusted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultipleComparisons {
    /// Raw p-values, as gbstats by default.
    #[default]
    None,
    /// Holm–Bonferroni: controls the family-wise error rate.
    Holm,
    /// Benjamini–Hochberg: controls the false discovery rate.
    BenjaminiHochberg,
}

impl MultipleComparisons {
    /// Adjusted p-values, in the order given; `None` entries (tests that could not be
    /// computed) stay `None` and do not count as comparisons.
    pub fn adjust(self, p_values: &[Option<f64>]) -> Vec<Option<f64>> {
        let mut order: Vec<(usize, f64)> = p_values
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|p| (i, p)))
            .collect();
        order.sort_by(|a, b| a.1.total_cmp(&b.1));
        let m = order.len() as f64;
        let mut adjusted = p_values.to_vec();
        match self {
            MultipleComparisons::None => {}
            MultipleComparisons::Holm => {
                // adj(i) = max over j ≤ i of min(1, (m − j + 1)·p(j)), 1-based ranks.
                let mut running: f64 = 0.0;
                for (rank, &(index, p)) in order.iter().enumerate() {
                    running = running.max(((m - rank as f64) * p).min(1.0));
                    adjusted[index] = Some(running);
                }
            }
            MultipleComparisons::BenjaminiHochberg => {
                // adj(i) = min over j ≥ i of min(1, m/j·p(j)).
                let mut running: f64 = 1.0;
                for (rank, &(index, p)) in order.iter().enumerate().rev() {
                    running = running.min((m / (rank as f64 + 1.0) * p).min(1.0));
                    adjusted[index] = Some(running);
                }
            }
        }
        adjusted
    }
}

impl AnalysisSettings {
    pub fn new(today: NaiveDate) -> AnalysisSettings {
        AnalysisSettings {
            alpha: 0.05,
            power: 0.8,
            srm_threshold: 0.001,
            latency_budget_ms: [("edge", 10.0), ("server", 50.0), ("client", 30.0)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            min_decided_experiments: 20,
            today,
            multiple_comparisons: MultipleComparisons::None,
            origins: Vec::new(),
            engine: Engine::Frequentist,
            prior: None,
            sequential: None,
            lower_is_better: Vec::new(),
        }
    }

    /// Whether a decrease of this KPI is the win.
    pub fn is_lower_better(&self, kpi: &str) -> bool {
        self.lower_is_better.iter().any(|k| k == kpi)
    }

    /// The sequential setting, when the frequentist engine uses it.
    fn sequential(&self) -> Option<Sequential> {
        self.sequential
            .filter(|_| self.engine == Engine::Frequentist)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Proven,
    Disproven,
    Inconclusive,
    /// Sample ratio mismatch: the result is not trusted.
    Invalid,
    Running,
    /// The data cannot support a test (no visitors, zero variance…).
    NotComputable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Proven => "proven",
            Outcome::Disproven => "disproven",
            Outcome::Inconclusive => "inconclusive",
            Outcome::Invalid => "invalid",
            Outcome::Running => "running",
            Outcome::NotComputable => "not_computable",
        }
    }
}

/// One metric, one treatment against control. Numbers that cannot be computed are `null` and
/// `reason` says why.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricResult {
    pub kpi: String,
    pub treatment: String,
    pub control_mean: Option<f64>,
    pub treatment_mean: Option<f64>,
    pub relative_lift: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub p_value: Option<f64>,
    /// The p-value after `analysis.multiple_comparisons` across the treatments of an A/B/n
    /// test (equal to `p_value` with one treatment or no correction); outcomes use it.
    pub adjusted_p_value: Option<f64>,
    pub absolute_diff: Option<f64>,
    pub absolute_ci_low: Option<f64>,
    pub absolute_ci_high: Option<f64>,
    pub absolute_p_value: Option<f64>,
    pub degrees_of_freedom: Option<f64>,
    /// The delta-method standard error of the relative lift (what the lever knowledge base
    /// pools); not in the JSON, where the interval says the same.
    #[serde(skip)]
    pub relative_se: Option<f64>,
    pub power: Option<f64>,
    /// Visitors per arm needed to detect the observed lift with the configured power.
    pub required_visitors_per_arm: Option<u64>,
    /// Under `analysis.engine = "bayesian"` only: the posterior of the relative lift (`null`
    /// when not computable, with `reason`). Absent under the frequentist engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bayesian: Option<Option<BayesianResult>>,
    /// True when `ci_*` and the p-values are sequential (confidence sequences, valid at every
    /// peek) rather than fixed-horizon; absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sequential: bool,
    /// True for a KPI where lower is better (`analysis.lower_is_better`): a decrease wins.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lower_is_better: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl MetricResult {
    /// The Bayesian result, when the engine computed one.
    pub fn posterior(&self) -> Option<&BayesianResult> {
        self.bayesian.as_ref().and_then(Option::as_ref)
    }

    /// How weak the evidence is, to rank proven tests: 1 − chance to win under the Bayesian
    /// engine, the p-value under the frequentist one (1 when there is none).
    pub fn weakness(&self) -> f64 {
        match (self.posterior(), self.p_value) {
            (Some(posterior), _) => 1.0 - posterior.chance_to_win,
            (None, Some(p)) => p,
            (None, None) => 1.0,
        }
    }

    /// How strongly this comparison decides, for picking an A/B/n test's deciding treatment:
    /// larger is stronger (distance of the chance to win from ½, or −p).
    fn strength(&self, engine: Engine) -> f64 {
        match engine {
            Engine::Bayesian => self
                .posterior()
                .map(|b| (b.chance_to_win - 0.5).abs())
                .unwrap_or(f64::NEG_INFINITY),
            Engine::Frequentist => -self.adjusted_p_value.unwrap_or(f64::INFINITY),
        }
    }

    /// The engine's verdict on this comparison: `Some(true)` a win, `Some(false)` a loss,
    /// `None` undecided; `Err` when there is nothing to decide on.
    fn verdict(&self, settings: &AnalysisSettings) -> Result<Option<bool>, ()> {
        match settings.engine {
            Engine::Bayesian => self.posterior().map(BayesianResult::won).ok_or(()),
            Engine::Frequentist => match (self.adjusted_p_value, self.relative_lift) {
                (Some(p), Some(lift)) if p < settings.alpha && lift != 0.0 => {
                    Ok(Some((lift > 0.0) != self.lower_is_better))
                }
                (Some(_), Some(_)) => Ok(None),
                _ => Err(()),
            },
        }
    }
}

impl MetricResult {
    fn not_computable(kpi: &str, treatment: &str, reason: String) -> MetricResult {
        MetricResult {
            kpi: kpi.to_string(),
            treatment: treatment.to_string(),
            reason: Some(reason),
            ..MetricResult::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ExperimentAnalysis {
    pub id: String,
    #[schema(value_type = String)]
    pub status: ExperimentStatus,
    pub moment: crate::history::Moment,
    #[schema(value_type = String)]
    pub outcome: Outcome,
    pub srm_p_value: Option<f64>,
    pub srm_flagged: bool,
    /// The primary KPI for the treatment the outcome is decided on.
    #[schema(value_type = Object)]
    pub primary: MetricResult,
    /// Revenue per visitor, where revenue is given.
    #[schema(value_type = Option<Object>)]
    pub revenue_per_visitor: Option<MetricResult>,
    /// Average order value (revenue/orders) as a ratio metric, where revenue and orders are given.
    #[schema(value_type = Option<Object>)]
    pub average_order_value: Option<MetricResult>,
    /// Every treatment on the primary KPI (more than one for A/B/n tests).
    #[schema(value_type = Vec<Object>)]
    pub treatments: Vec<MetricResult>,
    pub commercial_kpi: bool,
    /// Arms whose data cannot be real or cannot be tested (zero variance): tracking problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub data_quality: Vec<DataQualityProblem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A summary-only record: `primary` holds the figures another tool reported, not statistics
    /// hypod computed (absent, i.e. false, for every record with per-arm sums).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub summary_only: bool,
    /// The reported result of a summary-only record, as imported.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub summary: Option<crate::history::Summary>,
    /// What hypod could not check for a summary-only record, in words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_checked: Vec<String>,
}

/// What hypod does not check for a summary-only record (it has no per-arm sums).
pub const SUMMARY_NOT_CHECKED: [&str; 4] = [
    "the lift, interval and p-value are taken as reported, not recomputed from per-arm sums",
    "no data-quality check of the arms (zero variance, 100 % conversion): there are no conversions",
    "no revenue per visitor or average order value: there is no revenue",
    "no power or required sample size: there is no baseline rate",
];

/// One arm of one experiment whose numbers point at a measurement problem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataQualityProblem {
    pub variant: String,
    pub kpi: String,
    pub problem: String,
}

/// What `hypod analyze` reports, with the lookups every later stage makes (an experiment's
/// analysis by id, the control totals a baseline is computed from) indexed once.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub program: ProgramHealth,
    pub experiments: Vec<ExperimentAnalysis>,
    pub levers: LeverBase,
    pub learning: Learning,
    #[serde(skip)]
    index: HashMap<String, usize>,
    #[serde(skip)]
    baselines: Baselines,
    #[serde(skip)]
    vocabulary: Vocabulary,
}

/// The words an analysis's evidence is read in: which engine, and whether its intervals and
/// p-values are sequential.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Vocabulary {
    /// Fixed-horizon p-values and confidence intervals.
    #[default]
    Frequentist,
    /// Sequential p-values and confidence sequences.
    Sequential,
    /// Chance to win, credible intervals and risk.
    Bayesian,
}

impl Vocabulary {
    pub fn of(settings: &AnalysisSettings) -> Vocabulary {
        match (settings.engine, settings.sequential()) {
            (Engine::Bayesian, _) => Vocabulary::Bayesian,
            (Engine::Frequentist, Some(_)) => Vocabulary::Sequential,
            (Engine::Frequentist, None) => Vocabulary::Frequentist,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Vocabulary::Frequentist => "frequentist",
            Vocabulary::Sequential => "sequential",
            Vocabulary::Bayesian => "bayesian",
        }
    }
}

impl Analysis {
    /// The engine vocabulary its evidence is in.
    pub fn vocabulary(&self) -> Vocabulary {
        self.vocabulary
    }

    pub fn experiment(&self, id: &str) -> Option<&ExperimentAnalysis> {
        self.index.get(id).and_then(|i| self.experiments.get(*i))
    }

    /// The control totals of the valid concluded experiments, by place, by moment and overall.
    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }
}

/// Sums over the control arms of a set of experiments: what a baseline rate and a value per
/// conversion are computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ControlTotals {
    pub experiments: usize,
    pub visitors: u64,
    pub conversions: u64,
    pub revenue: f64,
    pub orders: u64,
}

impl ControlTotals {
    fn add(&mut self, experiment: &Experiment) {
        let control = experiment.control();
        self.experiments += 1;
        self.visitors += control.visitors;
        self.conversions += control.conversions.unwrap_or(0);
        self.revenue += control.revenue.unwrap_or(0.0);
        self.orders += control.orders.unwrap_or(0);
    }
}

/// Control totals of the concluded experiments that are not SRM-invalid (in history order, so
/// sums are the same as a scan would give), per (moment, segment), per moment and overall.
#[derive(Debug, Clone, Default)]
pub struct Baselines {
    by_place: HashMap<(Moment, String), ControlTotals>,
    by_moment: HashMap<Moment, ControlTotals>,
    all: ControlTotals,
}

impl Baselines {
    fn add(&mut self, experiment: &Experiment, analysis: &ExperimentAnalysis) {
        // A summary-only record has visitors but no conversions or revenue: adding its visitors
        // would dilute every baseline rate.
        if experiment.is_running()
            || analysis.outcome == Outcome::Invalid
            || experiment.is_summary_only()
        {
            return;
        }
        if let Some(segment) = &experiment.segment {
            self.by_place
                .entry((experiment.moment, segment.clone()))
                .or_default()
                .add(experiment);
        }
        self.by_moment
            .entry(experiment.moment)
            .or_default()
            .add(experiment);
        self.all.add(experiment);
    }

    pub fn place(&self, moment: Moment, segment: &str) -> Option<&ControlTotals> {
        self.by_place
            .get(&(moment, segment.to_string()))
            .filter(|t| t.experiments > 0)
    }

    pub fn moment(&self, moment: Moment) -> Option<&ControlTotals> {
        self.by_moment.get(&moment).filter(|t| t.experiments > 0)
    }

    pub fn all(&self) -> &ControlTotals {
        &self.all
    }
}

/// The `hypod analyze` report of a history, computed as it is read: program health in one
/// pass over the experiments (each analysis dropped once counted), then each experiment's
/// analysis computed again when it is serialised or iterated. It serialises to the same JSON as
/// [`Analysis`], but memory does not grow with the output; the statistics are cheap next to
/// writing them, so computing them twice costs less than holding them.
pub struct AnalysisReport {
    pub program: ProgramHealth,
    pub levers: LeverBase,
    pub learning: Learning,
    experiments: Vec<Experiment>,
    settings: AnalysisSettings,
}

impl AnalysisReport {
    pub fn new(experiments: Vec<Experiment>, settings: AnalysisSettings) -> Self {
        let mut levers = levers::LeverCollector::default();
        let mut learning = learning::LearningCollector::new(&settings.origins);
        let program = health::program_health_of(
            experiments.iter().map(|e| {
                let analysis = analyze_experiment(e, &settings);
                levers.add(e, &analysis);
                learning.add(e, &analysis);
                (e, analysis)
            }),
            &settings,
        );
        AnalysisReport {
            program,
            levers: levers.finish(),
            learning: learning.finish(),
            experiments,
            settings,
        }
    }

    /// The engine vocabulary its evidence is in.
    pub fn vocabulary(&self) -> Vocabulary {
        Vocabulary::of(&self.settings)
    }

    /// The history analysed, as it was loaded (by id).
    pub fn experiments(&self) -> &[Experiment] {
        &self.experiments
    }

    /// Each experiment's analysis, computed as the iterator is walked.
    pub fn analyses(&self) -> impl Iterator<Item = ExperimentAnalysis> + '_ {
        self.experiments
            .iter()
            .map(|e| analyze_experiment(e, &self.settings))
    }

    /// One experiment's analysis, by id.
    pub fn experiment(&self, id: &str) -> Option<ExperimentAnalysis> {
        self.experiments
            .iter()
            .find(|e| e.id == id)
            .map(|e| analyze_experiment(e, &self.settings))
    }
}

impl Serialize for AnalysisReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Each<'b>(&'b AnalysisReport);
        impl Serialize for Each<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.analyses())
            }
        }
        let mut document = serializer.serialize_struct("Analysis", 4)?;
        document.serialize_field("program", &self.program)?;
        document.serialize_field("experiments", &Each(self))?;
        document.serialize_field("levers", &self.levers)?;
        document.serialize_field("learning", &self.learning)?;
        document.end()
    }
}

/// Analyses every experiment and the program as a whole.
pub fn analyze(experiments: &[Experiment], settings: &AnalysisSettings) -> Analysis {
    let per_experiment: Vec<ExperimentAnalysis> = experiments
        .iter()
        .map(|e| analyze_experiment(e, settings))
        .collect();
    let program = health::program_health(experiments, &per_experiment, settings);
    let mut levers = levers::LeverCollector::default();
    let mut learning = learning::LearningCollector::new(&settings.origins);
    let mut baselines = Baselines::default();
    let mut index = HashMap::with_capacity(experiments.len());
    for (i, (e, a)) in experiments.iter().zip(&per_experiment).enumerate() {
        levers.add(e, a);
        learning.add(e, a);
        baselines.add(e, a);
        // The first of duplicate ids wins, as a scan would find it.
        index.entry(e.id.clone()).or_insert(i);
    }
    Analysis {
        program,
        experiments: per_experiment,
        levers: levers.finish(),
        learning: learning.finish(),
        index,
        baselines,
        vocabulary: Vocabulary::of(settings),
    }
}

/// The two arms of one comparison, by name.
struct Arms<'a> {
    control: &'a str,
    treatment: &'a str,
}

/// What a zero variance means for a metric, in words a reviewer understands.
fn zero_variance_problem(moments: &Moments, proportion: bool) -> String {
    if proportion && moments.mean >= 1.0 {
        "100 % conversion: a tracking bug, not a win".into()
    } else if proportion {
        "0 % conversion: nothing was recorded".into()
    } else {
        "zero variance (every visitor the same value, e.g. constant revenue or a single order)"
            .into()
    }
}

fn metric_from(
    kpi: &str,
    arms: &Arms<'_>,
    control: Result<Moments, String>,
    candidate: Result<Moments, String>,
    settings: &AnalysisSettings,
    proportion: bool,
    problems: &mut Vec<DataQualityProblem>,
) -> MetricResult {
    let treatment = arms.treatment;
    let bayesian = settings.engine == Engine::Bayesian;
    let lower_is_better = settings.is_lower_better(kpi);
    let (control, candidate) = match (control, candidate) {
        (Ok(c), Ok(t)) => (c, t),
        (Err(reason), _) | (_, Err(reason)) => {
            return MetricResult {
                bayesian: bayesian.then_some(None),
                lower_is_better,
                ..MetricResult::not_computable(kpi, treatment, reason)
            }
        }
    };
    let mut result = MetricResult {
        kpi: kpi.to_string(),
        treatment: treatment.to_string(),
        control_mean: Some(control.mean),
        treatment_mean: Some(candidate.mean),
        bayesian: bayesian.then_some(None),
        lower_is_better,
        ..MetricResult::default()
    };
    match stats::compare(&control, &candidate, settings.alpha) {
        Ok(test) => {
            fill_test(&mut result, &test, &control, settings, proportion);
            if let Some(sequential) = settings.sequential() {
                fill_sequential(
                    &mut result,
                    &test,
                    &control,
                    &candidate,
                    sequential,
                    settings,
                );
            }
            if bayesian {
                match engines::bayesian(
                    &control,
                    &candidate,
                    settings.prior,
                    lower_is_better,
                    settings.alpha,
                ) {
                    Ok(posterior) => result.bayesian = Some(Some(posterior)),
                    Err(e) => result.reason = Some(e.to_string()),
                }
            }
        }
        Err(TestError::ZeroVariance(arm)) => {
            let (name, moments) = match arm {
                Arm::Control => (arms.control, &control),
                Arm::Treatment => (arms.treatment, &candidate),
            };
            let problem = zero_variance_problem(moments, proportion);
            result.reason = Some(format!(
                "variant {name:?} has {problem}; as in gbstats, a test with an arm of zero variance is not computed"
            ));
            if !problems.iter().any(|p| p.variant == name && p.kpi == kpi) {
                problems.push(DataQualityProblem {
                    variant: name.to_string(),
                    kpi: kpi.to_string(),
                    problem,
                });
            }
        }
        Err(other) => result.reason = Some(other.to_string()),
    }
    result
}

fn fill_test(
    result: &mut MetricResult,
    test: &TestResult,
    control: &Moments,
    settings: &AnalysisSettings,
    proportion: bool,
) {
    result.relative_lift = Some(test.relative_lift);
    result.ci_low = Some(test.ci_low);
    result.ci_high = Some(test.ci_high);
    result.p_value = Some(test.p_value);
    result.adjusted_p_value = Some(test.p_value);
    result.absolute_diff = Some(test.absolute_diff);
    result.absolute_ci_low = Some(test.absolute_ci_low);
    result.absolute_ci_high = Some(test.absolute_ci_high);
    result.absolute_p_value = Some(test.absolute_p_value);
    result.degrees_of_freedom = Some(test.degrees_of_freedom);
    result.relative_se = Some(test.relative_se);
    result.power = stats::achieved_power(test.relative_lift, test.relative_se, settings.alpha).ok();
    let required = if proportion {
        stats::sample_size_proportion(
            control.mean,
            test.relative_lift,
            settings.alpha,
            settings.power,
        )
    } else {
        stats::sample_size_mean(
            control.variance.sqrt(),
            test.absolute_diff,
            settings.alpha,
            settings.power,
        )
    };
    match required {
        Ok(n) => result.required_visitors_per_arm = Some(n),
        Err(reason) => result.reason = Some(format!("required sample size: {reason}")),
    }
}

/// Replaces the fixed-horizon intervals and p-values by gbstats' sequential ones (relative and
/// absolute); power and the required sample size stay fixed-horizon.
fn fill_sequential(
    result: &mut MetricResult,
    test: &TestResult,
    control: &Moments,
    candidate: &Moments,
    sequential: Sequential,
    settings: &AnalysisSettings,
) {
    let total = control.n + candidate.n;
    let relative = engines::sequential_interval(
        test.relative_lift,
        test.relative_se.powi(2),
        total,
        sequential,
        settings.alpha,
    );
    let absolute = engines::sequential_interval(
        test.absolute_diff,
        candidate.variance / candidate.n + control.variance / control.n,
        total,
        sequential,
        settings.alpha,
    );
    result.ci_low = Some(relative.ci_low);
    result.ci_high = Some(relative.ci_high);
    result.p_value = Some(relative.p_value);
    result.adjusted_p_value = Some(relative.p_value);
    result.absolute_ci_low = Some(absolute.ci_low);
    result.absolute_ci_high = Some(absolute.ci_high);
    result.absolute_p_value = Some(absolute.p_value);
    result.sequential = true;
}

fn is_proportion_kpi(kpi: &str) -> bool {
    !matches!(kpi, "revenue_per_visitor" | "average_order_value")
}

/// The sample ratio mismatch test of an experiment's visitors against its allocation: the
/// p-value (when computable) and whether it is flagged.
fn srm_of(experiment: &Experiment, settings: &AnalysisSettings) -> (Option<f64>, bool) {
    let observed: Vec<u64> = experiment.variants.iter().map(|v| v.visitors).collect();
    let weights: Vec<f64> = (0..experiment.variants.len())
        .map(|i| experiment.weight(i))
        .collect();
    let srm = stats::srm(&observed, &weights);
    let srm_p_value = srm.as_ref().ok().map(|(_, p)| *p);
    (
        srm_p_value,
        srm_p_value.is_some_and(|p| p < settings.srm_threshold),
    )
}

fn srm_reason(srm_p_value: Option<f64>, settings: &AnalysisSettings) -> String {
    format!(
        "sample ratio mismatch (p = {:.6} < {}): the traffic split is broken, the result is not trusted",
        srm_p_value.unwrap_or(0.0),
        settings.srm_threshold
    )
}

/// A summary-only record: the reported figures in `primary`, nothing recomputed. The visitors
/// per arm are real, so the sample ratio mismatch test runs; the outcome is decided on the
/// reported p-value when there is one (p < α), else on whether the interval
/// lift ± z₁₋α/₂·SE excludes 0 (SE as reported, or from the symmetric 95 % interval).
fn analyze_summary(
    experiment: &Experiment,
    summary: &crate::history::Summary,
    settings: &AnalysisSettings,
) -> ExperimentAnalysis {
    let (srm_p_value, srm_flagged) = srm_of(experiment, settings);
    let treatment = experiment
        .treatments()
        .next()
        .map(|(_, v)| v.name.clone())
        .unwrap_or_default();
    let lift = summary.lift();
    let se = summary
        .standard_error()
        .filter(|se| se.is_finite() && *se > 0.0);
    let lower_is_better = settings.is_lower_better(&experiment.primary_kpi);
    // The Bayesian engine reads the reported lift and standard error as its data.
    let bayesian = (settings.engine == Engine::Bayesian).then(|| match (lift, se) {
        (Some(lift), Some(se)) => engines::posterior(
            lift,
            se * se,
            settings.prior,
            lower_is_better,
            settings.alpha,
        )
        .ok(),
        _ => None,
    });
    let primary = MetricResult {
        kpi: experiment.primary_kpi.clone(),
        treatment,
        bayesian,
        lower_is_better,
        relative_lift: lift,
        ci_low: summary.ci_low,
        ci_high: summary.ci_high,
        p_value: summary.p_value,
        adjusted_p_value: summary.p_value,
        relative_se: se,
        reason: Some(
            "summary-only record: the figures are as another tool reported them; hypod has no per-arm sums and did not re-analyse it"
                .into(),
        ),
        ..MetricResult::default()
    };
    let significant = match (summary.p_value, lift, se) {
        (Some(p), _, _) => Some(p < settings.alpha),
        (None, Some(lift), Some(se)) => {
            let z = dist::normal_isf(settings.alpha / 2.0);
            z.is_finite().then(|| lift.abs() > z * se)
        }
        _ => None,
    };
    let verdict = match (settings.engine, significant, lift) {
        (Engine::Bayesian, _, _) => primary.posterior().map(BayesianResult::won),
        (Engine::Frequentist, Some(true), Some(lift)) if lift != 0.0 => {
            Some(Some((lift > 0.0) != lower_is_better))
        }
        (Engine::Frequentist, Some(_), Some(_)) => Some(None),
        _ => None,
    };
    let (outcome, reason) = if experiment.is_running() {
        (Outcome::Running, None)
    } else if srm_flagged {
        (Outcome::Invalid, Some(srm_reason(srm_p_value, settings)))
    } else {
        match verdict {
            Some(Some(true)) => (Outcome::Proven, None),
            Some(Some(false)) => (Outcome::Disproven, None),
            Some(None) => (Outcome::Inconclusive, None),
            None => (
                Outcome::NotComputable,
                Some("the reported summary decides nothing".into()),
            ),
        }
    };
    ExperimentAnalysis {
        id: experiment.id.clone(),
        status: experiment.status,
        moment: experiment.moment,
        outcome,
        srm_p_value,
        srm_flagged,
        treatments: vec![primary.clone()],
        primary,
        revenue_per_visitor: None,
        average_order_value: None,
        commercial_kpi: experiment.has_commercial_kpi(),
        data_quality: Vec::new(),
        reason,
        summary_only: true,
        summary: Some(summary.clone()),
        not_checked: SUMMARY_NOT_CHECKED.iter().map(|s| s.to_string()).collect(),
    }
}

fn analyze_experiment(experiment: &Experiment, settings: &AnalysisSettings) -> ExperimentAnalysis {
    if let Some(summary) = &experiment.summary {
        return analyze_summary(experiment, summary, settings);
    }
    let control = experiment.control();
    let (srm_p_value, srm_flagged) = srm_of(experiment, settings);

    let kpi = experiment.primary_kpi.as_str();
    let rpv = |v: &crate::history::Variant| match (v.revenue, v.revenue_sq) {
        (Some(sum), Some(sq)) => Moments::sample_mean(sum, sq, v.visitors),
        _ => Err("revenue and revenue_sq are not given".into()),
    };
    let aov = |v: &crate::history::Variant| match (v.revenue, v.revenue_sq, v.orders) {
        // At most one order per visitor: Σ(revenue·orders) = revenue, Σorders² = orders.
        (Some(sum), Some(sq), Some(orders)) => {
            Moments::ratio((sum, sq), (orders as f64, orders as f64), sum, v.visitors)
        }
        _ => Err("revenue, revenue_sq and orders are not given".into()),
    };
    let primary_moments = |v: &crate::history::Variant| match kpi {
        "revenue_per_visitor" => rpv(v),
        "average_order_value" => aov(v),
        _ => match v.conversions {
            Some(conversions) => Moments::proportion(conversions, v.visitors),
            None => Err("conversions are not given".into()),
        },
    };
    let mut problems = Vec::new();
    let mut treatments: Vec<MetricResult> = experiment
        .treatments()
        .map(|(_, t)| {
            metric_from(
                kpi,
                &Arms {
                    control: &control.name,
                    treatment: &t.name,
                },
                primary_moments(control),
                primary_moments(t),
                settings,
                is_proportion_kpi(kpi),
                &mut problems,
            )
        })
        .collect();
    let raw: Vec<Option<f64>> = treatments.iter().map(|t| t.p_value).collect();
    for (treatment, adjusted) in treatments
        .iter_mut()
        .zip(settings.multiple_comparisons.adjust(&raw))
    {
        treatment.adjusted_p_value = adjusted;
    }
    // The outcome is decided on the treatment with the strongest evidence (lowest p-value, or
    // chance to win furthest from ½), the first of equals.
    let best_index = treatments
        .iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| {
            let sa = a.strength(settings.engine);
            let sb = b.strength(settings.engine);
            sb.total_cmp(&sa)
        })
        .map(|(i, _)| i)
        .unwrap_or(0);
    let primary = treatments.get(best_index).cloned().unwrap_or_default();
    let best_treatment = experiment
        .treatments()
        .nth(best_index)
        .map(|(_, v)| v)
        .unwrap_or(control);

    let has_revenue = experiment
        .variants
        .iter()
        .all(|v| v.revenue.is_some() && v.revenue_sq.is_some());
    let revenue_per_visitor = has_revenue.then(|| {
        metric_from(
            "revenue_per_visitor",
            &Arms {
                control: &control.name,
                treatment: &best_treatment.name,
            },
            rpv(control),
            rpv(best_treatment),
            settings,
            false,
            &mut problems,
        )
    });
    let has_orders = has_revenue && experiment.variants.iter().all(|v| v.orders.is_some());
    let average_order_value = has_orders.then(|| {
        metric_from(
            "average_order_value",
            &Arms {
                control: &control.name,
                treatment: &best_treatment.name,
            },
            aov(control),
            aov(best_treatment),
            settings,
            false,
            &mut problems,
        )
    });

    // A running experiment is judged only by confidence sequences, which stay valid at every
    // peek: one that already excludes 0 is decided (it may be stopped), else it is running.
    let running = experiment.is_running();
    let (outcome, reason) = if running && settings.sequential().is_none() {
        (Outcome::Running, None)
    } else if srm_flagged {
        (Outcome::Invalid, Some(srm_reason(srm_p_value, settings)))
    } else {
        match primary.verdict(settings) {
            Ok(Some(true)) => (Outcome::Proven, None),
            Ok(Some(false)) => (Outcome::Disproven, None),
            Ok(None) if running => (Outcome::Running, None),
            Ok(None) => (Outcome::Inconclusive, None),
            Err(()) if running => (Outcome::Running, None),
            Err(()) => (
                Outcome::NotComputable,
                Some(
                    primary
                        .reason
                        .clone()
                        .unwrap_or_else(|| "no treatment could be tested".into()),
                ),
            ),
        }
    };

    ExperimentAnalysis {
        id: experiment.id.clone(),
        status: experiment.status,
        moment: experiment.moment,
        outcome,
        srm_p_value,
        srm_flagged,
        primary,
        revenue_per_visitor,
        average_order_value,
        treatments,
        commercial_kpi: experiment.has_commercial_kpi(),
        data_quality: problems,
        reason,
        summary_only: false,
        summary: None,
        not_checked: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::import::{parse_text, Format};

    fn experiment(json: &str) -> Experiment {
        let report = parse_text("t", Format::Ndjson, json);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        report.experiments.into_iter().next().unwrap()
    }

    fn settings() -> AnalysisSettings {
        AnalysisSettings::new(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap())
    }

    #[test]
    fn reference_experiment_is_inconclusive_with_gbstats_numbers() {
        let e = experiment(
            r#"{"id":"r","name":"r","moment":"search","primary_kpi":"conversion_rate","status":"concluded","variants":[{"name":"c","control":true,"visitors":10000,"conversions":500},{"name":"t","control":false,"visitors":10000,"conversions":560}]}"#,
        );
        let a = analyze_experiment(&e, &settings());
        assert_eq!(a.outcome, Outcome::Inconclusive);
        let p = a.primary.p_value.unwrap();
        assert!((p - 0.0735868).abs() < 1e-6, "{p}");
        assert!(!a.srm_flagged);
    }

    /// `tests/reference/multiple_comparisons.csv`, from statsmodels' `multipletests`.
    #[test]
    fn corrections_match_statsmodels() {
        let table = include_str!("../../tests/reference/multiple_comparisons.csv");
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let method = match f[0] {
                "holm" => MultipleComparisons::Holm,
                "benjamini_hochberg" => MultipleComparisons::BenjaminiHochberg,
                other => panic!("{other}"),
            };
            let parse =
                |s: &str| -> Vec<f64> { s.split('|').map(|p| p.parse().unwrap()).collect() };
            let raw: Vec<Option<f64>> = parse(f[1]).into_iter().map(Some).collect();
            let adjusted = method.adjust(&raw);
            for (ours, theirs) in adjusted.iter().zip(parse(f[2])) {
                assert!(
                    (ours.unwrap() - theirs).abs() < 1e-15,
                    "{line}: {adjusted:?}"
                );
            }
        }
        // Untestable treatments stay untested and do not count.
        let adjusted = MultipleComparisons::Holm.adjust(&[Some(0.02), None, Some(0.02)]);
        assert_eq!(adjusted, vec![Some(0.04), None, Some(0.04)]);
    }

    #[test]
    fn the_outcome_follows_the_correction() {
        // Three treatments; the best has p ≈ 0.02 raw, above 0.05 once Holm multiplies by 3.
        let e = experiment(
            r#"{"id":"abn","name":"abn","moment":"search","primary_kpi":"conversion_rate","status":"concluded","variants":[{"name":"c","control":true,"visitors":20000,"conversions":1000},{"name":"t1","control":false,"visitors":20000,"conversions":1100},{"name":"t2","control":false,"visitors":20000,"conversions":1010},{"name":"t3","control":false,"visitors":20000,"conversions":990}]}"#,
        );
        let none = analyze_experiment(&e, &settings());
        assert_eq!(none.outcome, Outcome::Proven);
        let raw = none.primary.p_value.unwrap();
        assert!(raw < 0.05 && raw * 3.0 > 0.05, "{raw}");
        let mut holm = settings();
        holm.multiple_comparisons = MultipleComparisons::Holm;
        let corrected = analyze_experiment(&e, &holm);
        assert_eq!(corrected.outcome, Outcome::Inconclusive);
        assert_eq!(corrected.primary.p_value, Some(raw));
        assert!((corrected.primary.adjusted_p_value.unwrap() - 3.0 * raw).abs() < 1e-12);
    }

    #[test]
    fn a_100_percent_arm_is_a_data_quality_problem_not_a_win() {
        let e = experiment(
            r#"{"id":"bug","name":"bug","moment":"search","primary_kpi":"conversion_rate","status":"concluded","decision":"ship","variants":[{"name":"control","control":true,"visitors":1110000,"conversions":55000},{"name":"all-in","control":false,"visitors":1110901,"conversions":1110901}]}"#,
        );
        let analysis = analyze(std::slice::from_ref(&e), &settings());
        let a = &analysis.experiments[0];
        assert_eq!(a.outcome, Outcome::NotComputable);
        assert!(a.primary.p_value.is_none() && a.primary.relative_lift.is_none());
        let reason = a.primary.reason.as_deref().unwrap();
        assert!(
            reason.contains("\"all-in\"") && reason.contains("100 % conversion"),
            "{reason}"
        );
        let listed = &analysis.program.data_quality;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, "bug");
        assert_eq!(listed[0].problem.variant, "all-in");
    }

    #[test]
    fn the_streamed_document_is_the_analysis() {
        let report = parse_text("t", Format::Ndjson, crate::assets::SAMPLE_HISTORY);
        assert!(report.problems.is_empty());
        let settings = settings();
        let whole = serde_json::to_string(&analyze(&report.experiments, &settings)).unwrap();
        let streamed =
            serde_json::to_string(&AnalysisReport::new(report.experiments, settings)).unwrap();
        assert!(whole.len() > 100_000);
        assert_eq!(whole, streamed);
    }

    #[test]
    fn lower_is_better_flips_the_frequentist_outcome() {
        let e = experiment(
            r#"{"id":"b","name":"b","moment":"search","primary_kpi":"bounce_rate","status":"concluded","variants":[{"name":"c","control":true,"visitors":10000,"conversions":3000},{"name":"t","control":false,"visitors":10000,"conversions":2800}]}"#,
        );
        assert_eq!(
            analyze_experiment(&e, &settings()).outcome,
            Outcome::Disproven
        );
        let mut lower = settings();
        lower.lower_is_better = vec!["bounce_rate".into()];
        let a = analyze_experiment(&e, &lower);
        assert_eq!(a.outcome, Outcome::Proven);
        assert!(a.primary.lower_is_better && a.primary.relative_lift.unwrap() < 0.0);
    }

    #[test]
    fn a_summary_only_record_is_the_data_of_its_posterior() {
        let e = experiment(
            r#"{"id":"s","name":"s","moment":"search","primary_kpi":"conversion_rate","status":"concluded","summary":{"metric":"conversion_rate","effect":0.03,"standard_error":0.02},"variants":[{"name":"c","control":true,"visitors":16000},{"name":"t","control":false,"visitors":16000}]}"#,
        );
        let frequentist = analyze_experiment(&e, &settings());
        assert_eq!(frequentist.outcome, Outcome::Inconclusive);
        assert!(frequentist.primary.bayesian.is_none());
        let mut bayesian = settings();
        bayesian.engine = Engine::Bayesian;
        let a = analyze_experiment(&e, &bayesian);
        let posterior = a.primary.posterior().expect("a posterior");
        assert_eq!((posterior.mean, posterior.stddev), (0.03, 0.02));
        let ctw = dist::normal_cdf(1.5);
        assert!((posterior.chance_to_win - ctw).abs() < 1e-15);
        // 93 % chance to win: GrowthBook's threshold is 95 %.
        assert_eq!(a.outcome, Outcome::Inconclusive);
    }

    #[test]
    fn the_bayesian_engine_decides_an_ab_n_test_on_its_most_decided_treatment() {
        // t1 gains a little (chance ~0.9), t2 loses clearly (chance ~0.001).
        let e = experiment(
            r#"{"id":"abn","name":"abn","moment":"search","primary_kpi":"conversion_rate","status":"concluded","variants":[{"name":"c","control":true,"visitors":20000,"conversions":1000},{"name":"t1","control":false,"visitors":20000,"conversions":1050},{"name":"t2","control":false,"visitors":20000,"conversions":850}]}"#,
        );
        let mut bayesian = settings();
        bayesian.engine = Engine::Bayesian;
        let a = analyze_experiment(&e, &bayesian);
        let chances: Vec<f64> = a
            .treatments
            .iter()
            .map(|t| t.posterior().unwrap().chance_to_win)
            .collect();
        assert!(chances[0] > 0.8 && chances[0] < 0.95, "{chances:?}");
        assert!(chances[1] < 0.01, "{chances:?}");
        assert_eq!(a.primary.treatment, "t2");
        assert_eq!(a.outcome, Outcome::Disproven);
    }

    #[test]
    fn srm_makes_the_result_invalid() {
        let e = experiment(
            r#"{"id":"s","name":"s","moment":"search","primary_kpi":"conversion_rate","status":"concluded","variants":[{"name":"c","control":true,"visitors":10000,"conversions":500},{"name":"t","control":false,"visitors":10500,"conversions":900}]}"#,
        );
        let a = analyze_experiment(&e, &settings());
        assert_eq!(a.outcome, Outcome::Invalid);
        assert!(a.reason.unwrap().contains("sample ratio mismatch"));
    }

    #[test]
    fn zero_visitors_is_not_computable_and_serializes_without_nan() {
        let e = experiment(
            r#"{"id":"z","name":"z","moment":"search","primary_kpi":"conversion_rate","status":"concluded","variants":[{"name":"c","control":true,"visitors":0,"conversions":0,"revenue":0,"revenue_sq":0,"orders":0},{"name":"t","control":false,"visitors":0,"conversions":0,"revenue":0,"revenue_sq":0,"orders":0}]}"#,
        );
        let analysis = analyze(std::slice::from_ref(&e), &settings());
        let a = &analysis.experiments[0];
        assert_eq!(a.outcome, Outcome::NotComputable);
        assert!(a.primary.p_value.is_none());
        assert!(a.primary.reason.is_some());
        let json = serde_json::to_string(&analysis).unwrap();
        assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
    }
}
