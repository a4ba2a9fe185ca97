//! The backtest's arithmetic (`hypod backtest`, docs/backtest.md): the cutoffs, the history as
//! it was known at a cutoff, and the scoring of the proposals made at each cutoff against what
//! the program went on to test — matches, calibration of the predicted intervals, the proven
//! rate of matched proposals against the program's base rate, and foresight. Pure: experiments,
//! their final analysis and the proposals in, figures out. Running the proposer at each cutoff
//! is the app's (`app::backtest`), through the same path as a nightly run.
//!
//! Definitions (every rate a fraction, `None` with a reason when it cannot be computed):
//! - an experiment *started* on `started_at` (else `ended_at`, else `decided_at`; one with none
//!   of them is never placed in time and is left out); it was *decided* on `decided_at` (else
//!   `ended_at`);
//! - at a cutoff, the history holds the experiments started before it; those decided before it
//!   as they are, the others as running (no decision, no end);
//! - a proposal made at a cutoff is *matched* by the first experiment started on or after the
//!   cutoff at the same moment, lever and segment, or whose `source_proposal` names it;
//! - *tested*: the match concluded with a valid outcome (proven, disproven, inconclusive);
//! - *coverage*: of the tested matches whose proposal carried a 95 % predicted interval, the
//!   share whose measured lift fell inside it (near 0.95 when calibrated);
//! - *proven_rate*: proven / tested among matches; *base_rate*: proven / tested among every
//!   experiment started on or after the first cutoff; *lift_over_base_rate*:
//!   proven_rate / base_rate − 1;
//! - *foresight*: of the experiments started on or after the first cutoff that proved, the
//!   share whose place (or `source_proposal`) a proposal named at a cutoff on or before their
//!   start.

use super::{Analysis, Outcome};
use crate::domain::Strategy;
use crate::history::{Experiment, ExperimentStatus, Moment, TestKey};
use chrono::{Months, NaiveDate};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// How far apart the cutoffs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Every {
    #[serde(rename = "1m")]
    Month,
    #[serde(rename = "1w")]
    Week,
}

impl Every {
    pub fn as_str(self) -> &'static str {
        match self {
            Every::Month => "1m",
            Every::Week => "1w",
        }
    }

    pub fn parse(text: &str) -> Option<Every> {
        match text {
            "1m" => Some(Every::Month),
            "1w" => Some(Every::Week),
            _ => None,
        }
    }
}

/// The day an experiment started, for the backtest (see the module's definitions).
pub fn started(experiment: &Experiment) -> Option<NaiveDate> {
    experiment
        .started_at
        .or(experiment.ended_at)
        .or(experiment.decided_at)
}

fn decided(experiment: &Experiment) -> Option<NaiveDate> {
    experiment.decided_at.or(experiment.ended_at)
}

/// The last day the history knows of: its latest date of any kind.
pub fn last_date(experiments: &[Experiment]) -> Option<NaiveDate> {
    experiments
        .iter()
        .flat_map(|e| [e.idea_at, e.started_at, e.ended_at, e.decided_at])
        .flatten()
        .max()
}

/// The default first cutoff: 12 months before the history's last day.
pub fn default_from(last: NaiveDate) -> NaiveDate {
    last.checked_sub_months(Months::new(12)).unwrap_or(last)
}

/// The cutoffs from `from`, `every` apart, before `last` (a cutoff on the last day could match
/// nothing). Months are counted from `from` (31 Jan, 28 Feb, 31 Mar…), never accumulated.
pub fn cutoffs(from: NaiveDate, every: Every, last: NaiveDate) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    for k in 0u32.. {
        let next = match every {
            Every::Month => from.checked_add_months(Months::new(k)),
            Every::Week => from.checked_add_days(chrono::Days::new(7 * u64::from(k))),
        };
        match next {
            Some(day) if day < last => out.push(day),
            _ => break,
        }
    }
    out
}

/// The history as it was known on `cutoff`: experiments started before it; those decided
/// before it as they are, the others as running.
pub fn as_of(experiments: &[Experiment], cutoff: NaiveDate) -> Vec<Experiment> {
    experiments
        .iter()
        .filter(|e| started(e).is_some_and(|s| s < cutoff))
        .map(|e| {
            if decided(e).is_some_and(|d| d < cutoff) || e.is_running() {
                return e.clone();
            }
            let mut running = e.clone();
            running.status = ExperimentStatus::Running;
            running.decision = None;
            running.decided_at = None;
            running.ended_at = None;
            running.attributed_revenue = None;
            running
        })
        .collect()
}

/// One proposal a backtest made at a cutoff (queued or blocked there).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proposed {
    #[serde(skip)]
    pub cutoff: NaiveDate,
    /// The id it would have had (never stored: an experiment's `source_proposal` can name it
    /// only in a history written for a test).
    pub id: String,
    pub title: String,
    /// The proposer that drafted it (`builtin`, `openai`).
    pub proposer: String,
    pub strategy: Option<Strategy>,
    /// Governance denied it.
    pub blocked: bool,
    pub moment: Moment,
    pub lever: String,
    pub segment: String,
    pub predicted_lift: f64,
    pub predicted_interval: Option<[f64; 2]>,
}

impl Proposed {
    fn key(&self) -> TestKey {
        TestKey::new(self.moment, &self.lever, &self.segment)
    }

    /// Whether `experiment`, started on `start`, tests this proposal after it was made.
    fn names(&self, experiment: &Experiment, start: NaiveDate) -> bool {
        start >= self.cutoff
            && (experiment.test_key() == self.key()
                || experiment
                    .source_proposal
                    .as_deref()
                    .is_some_and(|s| s.trim() == self.id))
    }
}

/// A proposal and the experiment that later tested its idea.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pair {
    pub cutoff: NaiveDate,
    pub title: String,
    pub proposer: String,
    /// `transfer`, `retest`, `cover`, `validate`, or `none` (a model's own idea).
    pub strategy: &'static str,
    pub blocked: bool,
    pub moment: Moment,
    pub lever: String,
    pub segment: String,
    pub predicted_lift: f64,
    pub predicted_interval: Option<[f64; 2]>,
    pub experiment_id: String,
    pub started_at: NaiveDate,
    pub outcome: Outcome,
    /// The primary KPI's relative lift the experiment measured (tested experiments only).
    pub realised_lift: Option<f64>,
    /// Whether it fell inside the predicted interval (tested, with an interval).
    pub inside_interval: Option<bool>,
}

/// The backtest's figures for one group of proposals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub proposals: usize,
    /// Distinct ideas (moment, lever and segment) among the proposals: a nightly run proposes
    /// an idea again at every cutoff until it is tested, so `proposals` counts it each time.
    pub ideas: usize,
    /// Proposals whose idea was later tested (see the module's definitions).
    pub matched: usize,
    /// Distinct ideas among the matched proposals.
    pub ideas_matched: usize,
    /// Matches concluded with a valid outcome.
    pub tested: usize,
    pub proven: usize,
    pub with_interval: usize,
    pub inside_interval: usize,
    /// inside_interval / with_interval: about 0.95 for a well-calibrated proposer.
    pub coverage: Option<f64>,
    /// proven / tested.
    pub proven_rate: Option<f64>,
    /// The program's proven rate over the same period.
    pub base_rate: Option<f64>,
    /// proven_rate / base_rate − 1.
    pub lift_over_base_rate: Option<f64>,
    /// Experiments started in the period that proved, and how many of them a proposal of this
    /// group named before they started.
    pub later_proven: usize,
    pub foreseen: usize,
    /// foreseen / later_proven.
    pub foresight: Option<f64>,
    /// Why a rate above is null, by its name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reasons: BTreeMap<&'static str, String>,
}

/// Everything a backtest measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scores {
    /// The proposals governance let through (queued), all proposers.
    pub overall: Figures,
    /// The proposals governance blocked, scored the same way.
    pub blocked: Figures,
    pub by_proposer: BTreeMap<String, Figures>,
    pub by_strategy: BTreeMap<&'static str, Figures>,
    /// Every matched proposal (queued and blocked) with what its test measured.
    pub pairs: Vec<Pair>,
}

fn strategy_name(strategy: Option<Strategy>) -> &'static str {
    strategy.map_or("none", Strategy::as_str)
}

fn tested(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Proven | Outcome::Disproven | Outcome::Inconclusive
    )
}

/// The program's later experiments: those started on or after the first cutoff, with their
/// start, earliest first.
struct Later<'e> {
    experiments: Vec<(&'e Experiment, NaiveDate, Outcome)>,
    base: (usize, usize),
}

impl<'e> Later<'e> {
    fn new(experiments: &'e [Experiment], analysis: &Analysis, first: NaiveDate) -> Later<'e> {
        let mut later: Vec<(&Experiment, NaiveDate, Outcome)> = experiments
            .iter()
            .filter_map(|e| {
                let start = started(e).filter(|s| *s >= first)?;
                let outcome = if e.status == ExperimentStatus::Concluded {
                    analysis
                        .experiment(&e.id)
                        .map_or(Outcome::Running, |a| a.outcome)
                } else {
                    Outcome::Running
                };
                Some((e, start, outcome))
            })
            .collect();
        later.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.id.cmp(&b.0.id)));
        let tested_n = later.iter().filter(|(_, _, o)| tested(*o)).count();
        let proven_n = later
            .iter()
            .filter(|(_, _, o)| *o == Outcome::Proven)
            .count();
        Later {
            experiments: later,
            base: (proven_n, tested_n),
        }
    }

    fn base_rate(&self) -> Option<f64> {
        let (proven, tested) = self.base;
        (tested > 0).then(|| proven as f64 / tested as f64)
    }
}

/// Scores the proposals made at the cutoffs (the first is `first`) against the experiments of
/// the whole history and its analysis.
pub fn score(
    proposals: &[Proposed],
    experiments: &[Experiment],
    analysis: &Analysis,
    first: NaiveDate,
) -> Scores {
    let later = Later::new(experiments, analysis, first);
    let pairs: Vec<Option<Pair>> = proposals
        .iter()
        .map(|p| pair(p, &later, analysis))
        .collect();
    let group = |keep: &dyn Fn(&Proposed) -> bool| -> Figures {
        let chosen: Vec<(&Proposed, Option<&Pair>)> = proposals
            .iter()
            .zip(&pairs)
            .filter(|(p, _)| keep(p))
            .map(|(p, m)| (p, m.as_ref()))
            .collect();
        figures(&chosen, &later)
    };
    let mut by_proposer = BTreeMap::new();
    let mut by_strategy = BTreeMap::new();
    for p in proposals.iter().filter(|p| !p.blocked) {
        by_proposer
            .entry(p.proposer.clone())
            .or_insert_with(|| group(&|q| !q.blocked && q.proposer == p.proposer));
        by_strategy
            .entry(strategy_name(p.strategy))
            .or_insert_with(|| group(&|q| !q.blocked && q.strategy == p.strategy));
    }
    Scores {
        overall: group(&|p| !p.blocked),
        blocked: group(&|p| p.blocked),
        by_proposer,
        by_strategy,
        pairs: pairs.into_iter().flatten().collect(),
    }
}

/// The proposal's match, if its idea was tested later.
fn pair(proposal: &Proposed, later: &Later<'_>, analysis: &Analysis) -> Option<Pair> {
    let (experiment, start, outcome) = later
        .experiments
        .iter()
        .find(|(e, start, _)| proposal.names(e, *start))?;
    let realised_lift = tested(*outcome)
        .then(|| {
            analysis
                .experiment(&experiment.id)
                .and_then(|a| a.primary.relative_lift)
        })
        .flatten()
        .filter(|l| l.is_finite());
    let inside_interval = match (proposal.predicted_interval, realised_lift) {
        (Some([low, high]), Some(lift)) => Some(low <= lift && lift <= high),
        _ => None,
    };
    Some(Pair {
        cutoff: proposal.cutoff,
        title: proposal.title.clone(),
        proposer: proposal.proposer.clone(),
        strategy: strategy_name(proposal.strategy),
        blocked: proposal.blocked,
        moment: proposal.moment,
        lever: proposal.lever.clone(),
        segment: proposal.segment.clone(),
        predicted_lift: proposal.predicted_lift,
        predicted_interval: proposal.predicted_interval,
        experiment_id: experiment.id.clone(),
        started_at: *start,
        outcome: *outcome,
        realised_lift,
        inside_interval,
    })
}

fn rate(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn figures(chosen: &[(&Proposed, Option<&Pair>)], later: &Later<'_>) -> Figures {
    let pairs: Vec<&Pair> = chosen.iter().filter_map(|(_, m)| *m).collect();
    let tested_pairs: Vec<&&Pair> = pairs.iter().filter(|m| tested(m.outcome)).collect();
    let proven = tested_pairs
        .iter()
        .filter(|m| m.outcome == Outcome::Proven)
        .count();
    let with_interval = tested_pairs
        .iter()
        .filter(|m| m.inside_interval.is_some())
        .count();
    let inside_interval = tested_pairs
        .iter()
        .filter(|m| m.inside_interval == Some(true))
        .count();
    // Foresight: each later proven experiment, named by a proposal made on or before its start.
    let mut by_key: HashMap<TestKey, Vec<&Proposed>> = HashMap::new();
    let mut by_id: HashMap<&str, &Proposed> = HashMap::new();
    for (p, _) in chosen {
        by_key.entry(p.key()).or_default().push(p);
        by_id.insert(p.id.as_str(), p);
    }
    let proven_later: Vec<&(&Experiment, NaiveDate, Outcome)> = later
        .experiments
        .iter()
        .filter(|(_, _, o)| *o == Outcome::Proven)
        .collect();
    let foreseen = proven_later
        .iter()
        .filter(|(e, start, _)| {
            let by_source = e
                .source_proposal
                .as_deref()
                .and_then(|s| by_id.get(s.trim()))
                .is_some_and(|p| p.cutoff <= *start);
            by_source
                || by_key
                    .get(&e.test_key())
                    .is_some_and(|ps| ps.iter().any(|p| p.cutoff <= *start))
        })
        .count();
    let ideas: HashSet<TestKey> = chosen.iter().map(|(p, _)| p.key()).collect();
    let ideas_matched: HashSet<TestKey> = chosen
        .iter()
        .filter(|(_, m)| m.is_some())
        .map(|(p, _)| p.key())
        .collect();
    let mut f = Figures {
        proposals: chosen.len(),
        ideas: ideas.len(),
        matched: pairs.len(),
        ideas_matched: ideas_matched.len(),
        tested: tested_pairs.len(),
        proven,
        with_interval,
        inside_interval,
        coverage: rate(inside_interval, with_interval),
        proven_rate: rate(proven, tested_pairs.len()),
        base_rate: later.base_rate(),
        lift_over_base_rate: None,
        later_proven: proven_later.len(),
        foreseen,
        foresight: rate(foreseen, proven_later.len()),
        reasons: BTreeMap::new(),
    };
    f.lift_over_base_rate = match (f.proven_rate, f.base_rate) {
        (Some(p), Some(b)) if b > 0.0 => Some(p / b - 1.0),
        _ => None,
    };
    let reasons = &mut f.reasons;
    if f.coverage.is_none() {
        reasons.insert(
            "coverage",
            if tested_pairs.is_empty() {
                "no matched proposal has been tested yet".into()
            } else {
                "no tested proposal carried a predicted interval".into()
            },
        );
    }
    if f.proven_rate.is_none() {
        reasons.insert(
            "proven_rate",
            if chosen.is_empty() {
                "no proposals".into()
            } else {
                "no matched proposal has been tested yet".to_string()
            },
        );
    }
    if f.base_rate.is_none() {
        reasons.insert(
            "base_rate",
            "no experiment started in the period has been tested yet".into(),
        );
    }
    if f.lift_over_base_rate.is_none() {
        reasons.insert(
            "lift_over_base_rate",
            match f.base_rate {
                Some(b) if b <= 0.0 => "the program proved nothing in the period".into(),
                _ => "needs both the proven rate and the base rate".to_string(),
            },
        );
    }
    if f.foresight.is_none() {
        reasons.insert(
            "foresight",
            "no experiment started in the period has proved".into(),
        );
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn monthly_cutoffs_count_from_the_first_and_stop_before_the_last_day() {
        let last = day("2026-10-31");
        let from = default_from(last);
        assert_eq!(from, day("2025-10-31"));
        let cuts = cutoffs(from, Every::Month, last);
        assert_eq!(cuts.len(), 12);
        assert_eq!(cuts[1], day("2025-11-30"));
        assert_eq!(cuts[4], day("2026-02-28"));
        assert_eq!(cuts[5], day("2026-03-31"));
        assert_eq!(cuts[11], day("2026-09-30"));
        let weeks = cutoffs(day("2026-10-01"), Every::Week, last);
        assert_eq!(weeks.len(), 5);
        assert_eq!(weeks[4], day("2026-10-29"));
    }
}
