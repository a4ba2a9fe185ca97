//! The learning loop: how hypod's own proposals fared once people ran them. Owns the link from
//! an experiment whose `source_proposal` names a stored proposal back to that proposal, the
//! track record of each proposer and model (tested, proven rate, idea-to-decision time, and
//! calibration: how often the realised lift fell inside the interval predicted for it) beside
//! the same figures for the rest of the program, and the failed transfers that make a lever
//! lose weight. Pure: experiments, their analyses and the proposals they name in, values out.
//!
//! A test counts as *tested* when it is concluded with a valid outcome (proven, disproven or
//! inconclusive). A proposal's idea-to-decision time runs from the day it was queued to the
//! experiment's decision; the program's from `idea_at` to `decided_at`, as in program health.

use super::{ExperimentAnalysis, Outcome};
use crate::domain::Strategy;
use crate::history::{Experiment, Moment};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// What the analysis needs to know of a stored proposal an experiment names as its source.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposalOrigin {
    pub id: String,
    pub proposer: String,
    pub model: Option<String>,
    pub strategy: Option<Strategy>,
    pub lever: String,
    pub moment: Moment,
    pub expected_lift: f64,
    pub predicted_interval: Option<[f64; 2]>,
    pub created_at: DateTime<Utc>,
}

/// One experiment run from one of hypod's proposals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProposalLink {
    pub experiment_id: String,
    pub proposal_id: String,
    pub proposer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    pub lever: String,
    pub outcome: Outcome,
    pub predicted_lift: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted_interval: Option<[f64; 2]>,
    /// The primary KPI's relative lift the experiment found (none while running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realised_lift: Option<f64>,
    /// Whether the realised lift fell inside the predicted interval (tested experiments with an
    /// interval only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inside_interval: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_days: Option<f64>,
}

/// The track record of one source of ideas.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrackRecord {
    /// `builtin`, `openai`, … for hypod's proposals; `program` for every other experiment.
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Experiments from this source, running ones included.
    pub experiments: usize,
    /// Concluded with a valid outcome.
    pub tested: usize,
    pub proven: usize,
    /// proven / tested.
    pub proven_rate: Option<f64>,
    pub median_decision_days: Option<f64>,
    /// Tested experiments whose proposal carried a predicted interval, and how many of them
    /// realised a lift inside it.
    #[serde(skip_serializing_if = "is_zero")]
    pub with_interval: usize,
    #[serde(skip_serializing_if = "is_zero")]
    pub inside_interval: usize,
    /// inside_interval / with_interval: about 0.95 for a well-calibrated proposer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<f64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `learning` in `hypod analyze --json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Learning {
    /// One track record per proposer and model of hypod's proposals that were run.
    pub hypod: Vec<TrackRecord>,
    /// Every experiment that does not come from a stored proposal.
    pub program: TrackRecord,
    pub links: Vec<ProposalLink>,
    /// Experiments whose `source_proposal` names no stored proposal (a typo, another database).
    pub unknown_sources: Vec<String>,
    /// Per lever, transfers of it that were tested and not proven: each halves the weight the
    /// builtin proposer gives to transferring it again.
    pub failed_transfers: BTreeMap<String, usize>,
}

impl Learning {
    /// The weight of transferring `lever` again: halved by every failed transfer of it.
    pub fn transfer_weight(&self, lever: &str) -> f64 {
        let failed = self
            .failed_transfers
            .get(&lever.trim().to_ascii_lowercase())
            .copied()
            .unwrap_or(0);
        0.5f64.powi(failed.min(30) as i32)
    }
}

#[derive(Default)]
struct Tally {
    model: Option<String>,
    experiments: usize,
    tested: usize,
    proven: usize,
    days: Vec<f64>,
    with_interval: usize,
    inside_interval: usize,
}

impl Tally {
    fn record(self, source: String) -> TrackRecord {
        let mut days = self.days;
        let median = super::health::median(&mut days);
        TrackRecord {
            source,
            model: self.model,
            experiments: self.experiments,
            tested: self.tested,
            proven: self.proven,
            proven_rate: (self.tested > 0).then(|| self.proven as f64 / self.tested as f64),
            median_decision_days: median,
            with_interval: self.with_interval,
            inside_interval: self.inside_interval,
            calibration: (self.with_interval > 0)
                .then(|| self.inside_interval as f64 / self.with_interval as f64),
        }
    }
}

fn tested(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Proven | Outcome::Disproven | Outcome::Inconclusive
    )
}

/// Walks a history one experiment at a time (like the lever collector), then reports.
#[derive(Default)]
pub struct LearningCollector {
    origins: HashMap<String, ProposalOrigin>,
    by_source: BTreeMap<(String, Option<String>), Tally>,
    program: Tally,
    links: Vec<ProposalLink>,
    unknown: Vec<String>,
    failed_transfers: BTreeMap<String, usize>,
}

impl LearningCollector {
    pub fn new(origins: &[ProposalOrigin]) -> LearningCollector {
        LearningCollector {
            origins: origins.iter().map(|o| (o.id.clone(), o.clone())).collect(),
            ..LearningCollector::default()
        }
    }

    pub fn add(&mut self, experiment: &Experiment, analysis: &ExperimentAnalysis) {
        let is_tested = experiment.status == crate::history::ExperimentStatus::Concluded
            && tested(analysis.outcome);
        let proven = is_tested && analysis.outcome == Outcome::Proven;
        let origin = experiment
            .source_proposal
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .and_then(|id| match self.origins.get(id) {
                Some(origin) => Some(origin.clone()),
                None => {
                    self.unknown.push(experiment.id.clone());
                    None
                }
            });
        let Some(origin) = origin else {
            let tally = &mut self.program;
            tally.experiments += 1;
            tally.tested += usize::from(is_tested);
            tally.proven += usize::from(proven);
            if let (Some(idea), Some(decided)) = (experiment.idea_at, experiment.decided_at) {
                let days = (decided - idea).num_days() as f64;
                if days >= 0.0 {
                    tally.days.push(days);
                }
            }
            return;
        };
        let realised = analysis
            .primary
            .relative_lift
            .filter(|l| l.is_finite() && !experiment.is_running());
        let inside = match (is_tested, origin.predicted_interval, realised) {
            (true, Some([low, high]), Some(lift)) => Some(low <= lift && lift <= high),
            _ => None,
        };
        let decision_days = experiment
            .decided_at
            .map(|d| (d - origin.created_at.date_naive()).num_days() as f64)
            .filter(|d| *d >= 0.0);
        let tally = self
            .by_source
            .entry((origin.proposer.clone(), origin.model.clone()))
            .or_default();
        tally.model = origin.model.clone();
        tally.experiments += 1;
        tally.tested += usize::from(is_tested);
        tally.proven += usize::from(proven);
        tally.days.extend(decision_days);
        if let Some(inside) = inside {
            tally.with_interval += 1;
            tally.inside_interval += usize::from(inside);
        }
        if is_tested && !proven && origin.strategy == Some(Strategy::Transfer) {
            *self
                .failed_transfers
                .entry(origin.lever.trim().to_ascii_lowercase())
                .or_default() += 1;
        }
        self.links.push(ProposalLink {
            experiment_id: experiment.id.clone(),
            proposal_id: origin.id.clone(),
            proposer: origin.proposer.clone(),
            model: origin.model.clone(),
            strategy: origin.strategy,
            lever: origin.lever.clone(),
            outcome: analysis.outcome,
            predicted_lift: origin.expected_lift,
            predicted_interval: origin.predicted_interval,
            realised_lift: realised,
            inside_interval: inside,
            decision_days,
        });
    }

    pub fn finish(self) -> Learning {
        Learning {
            hypod: self
                .by_source
                .into_iter()
                .map(|((proposer, _), tally)| tally.record(proposer))
                .collect(),
            program: self.program.record("program".into()),
            links: self.links,
            unknown_sources: self.unknown,
            failed_transfers: self.failed_transfers,
        }
    }
}
