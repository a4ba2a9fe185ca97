//! Choosing the evidence: concluded experiments ranked per moment by how much they say
//! ([`relevance`]), then taken round-robin across moments while they fit the room left, so that
//! every moment is represented whatever the budget; and when the rendered prompt is still over
//! the budget, the last-chosen records dropped (a moment's only record last).

use super::estimate_tokens;
use super::lines::{evidence_line, quote};
use crate::analysis::{ExperimentAnalysis, Outcome};
use crate::history::{Decision, Experiment, Moment};
use chrono::NaiveDate;
use std::collections::HashMap;

/// How relevant a concluded experiment is as evidence for the next proposals: the strength of
/// what it shows (proven > disproven > inconclusive, with a bonus for an underpowered
/// inconclusive test worth re-testing and for a shipped rule never proven), discounted by age
/// (half-life one year) and for a non-commercial KPI. Untrusted results rank last.
pub fn relevance(
    experiment: &Experiment,
    analysis: Option<&ExperimentAnalysis>,
    today: NaiveDate,
) -> f64 {
    let Some(analysis) = analysis else {
        return 0.01;
    };
    let mut score = match analysis.outcome {
        Outcome::Proven => 1.0,
        Outcome::Disproven => 0.6,
        Outcome::Inconclusive => {
            if analysis.primary.power.is_some_and(|p| p < 0.5) {
                0.55
            } else {
                0.4
            }
        }
        Outcome::Invalid => 0.1,
        Outcome::NotComputable => 0.05,
        Outcome::Running => 0.0,
    };
    if experiment.decision == Some(Decision::Ship) && analysis.outcome != Outcome::Proven {
        score += 0.25;
    }
    if !experiment.has_commercial_kpi() {
        score *= 0.6;
    }
    let age_factor = match experiment.reference_date() {
        Some(date) => {
            let days = (today - date).num_days().max(0) as f64;
            0.5f64.powf(days / 365.0)
        }
        None => 0.4,
    };
    score * age_factor
}

/// Concluded experiments ranked per moment, most relevant first (ties by id), one list per
/// moment in [`Moment::ALL`] order.
pub(super) struct Ranked<'a> {
    pub per_moment: Vec<(Moment, Vec<(f64, &'a Experiment)>)>,
    /// Concluded experiments in all.
    pub total: usize,
}

pub(super) fn rank<'a>(
    experiments: &'a [Experiment],
    analyses: &HashMap<&str, &ExperimentAnalysis>,
    today: NaiveDate,
) -> Ranked<'a> {
    let mut per_moment: Vec<(Moment, Vec<(f64, &Experiment)>)> =
        Moment::ALL.iter().map(|m| (*m, Vec::new())).collect();
    for experiment in experiments.iter().filter(|e| !e.is_running()) {
        let score = relevance(
            experiment,
            analyses.get(experiment.id.as_str()).copied(),
            today,
        );
        if let Some((_, list)) = per_moment.iter_mut().find(|(m, _)| *m == experiment.moment) {
            list.push((score, experiment));
        }
    }
    let total = per_moment.iter().map(|(_, l)| l.len()).sum();
    for (_, list) in per_moment.iter_mut() {
        list.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    }
    Ranked { per_moment, total }
}

/// A record chosen as evidence: the moment's slot, its line, the experiment's id.
pub(super) type Chosen<'a> = (usize, String, &'a str);

impl<'a> Ranked<'a> {
    /// Tokens of each moment's first (most relevant) record: the room the lever table and the
    /// short lists never take.
    pub fn first_records_tokens(&self, analyses: &HashMap<&str, &ExperimentAnalysis>) -> usize {
        self.per_moment
            .iter()
            .filter_map(|(_, list)| list.first())
            .map(|(_, e)| {
                estimate_tokens(&evidence_line(e, analyses.get(e.id.as_str()).copied())) + 1
            })
            .sum()
    }

    /// Round-robin fill across moments within `room` tokens; a line is only built for an
    /// experiment that is considered. In JSON mode (`ids_in_schema`) each record also costs
    /// its id in the schema.
    pub fn fill(
        &self,
        analyses: &HashMap<&str, &ExperimentAnalysis>,
        room: usize,
        ids_in_schema: bool,
    ) -> Vec<Chosen<'a>> {
        let per_moment = &self.per_moment;
        let mut chosen: Vec<Chosen<'a>> = Vec::new();
        let mut cursors = vec![0usize; per_moment.len()];
        let mut used = 0usize;
        let mut full = vec![false; per_moment.len()];
        while full.iter().any(|f| !f) {
            for (slot, (_, list)) in per_moment.iter().enumerate() {
                if full[slot] {
                    continue;
                }
                let Some((_, experiment)) = list.get(cursors[slot]) else {
                    full[slot] = true;
                    continue;
                };
                let line = evidence_line(experiment, analyses.get(experiment.id.as_str()).copied());
                let mut cost = estimate_tokens(&line) + 1;
                if ids_in_schema {
                    cost += estimate_tokens(&quote(&experiment.id)) + 1;
                }
                if used + cost > room {
                    // The moment's next record no longer fits: the moment is done (the others
                    // may still have shorter records that fit).
                    full[slot] = true;
                    continue;
                }
                used += cost;
                cursors[slot] += 1;
                chosen.push((slot, line, experiment.id.as_str()));
            }
        }
        chosen
    }

    /// The chosen records grouped under their moments, in moment order (empty moments left out).
    pub fn groups(&self, chosen: &[Chosen<'_>]) -> Vec<EvidenceGroup> {
        self.per_moment
            .iter()
            .enumerate()
            .filter_map(|(slot, (moment, _))| {
                let items: Vec<String> = chosen
                    .iter()
                    .filter(|(s, _, _)| *s == slot)
                    .map(|(_, line, _)| line.clone())
                    .collect();
                (!items.is_empty()).then_some(EvidenceGroup {
                    moment: moment.as_str(),
                    items,
                })
            })
            .collect()
    }
}

/// One moment's records, as the user template shows them.
#[derive(serde::Serialize)]
pub(super) struct EvidenceGroup {
    moment: &'static str,
    items: Vec<String>,
}

/// Over the budget by `excess` tokens (template text around the records): drops the
/// last-chosen records until the estimate of what is dropped covers the excess. A moment's
/// only record goes last, so that every moment stays represented.
pub(super) fn drop_excess(chosen: &mut Vec<Chosen<'_>>, mut excess: usize) {
    while excess > 0 {
        let mut counts: HashMap<usize, usize> = HashMap::new();
        for (slot, _, _) in chosen.iter() {
            *counts.entry(*slot).or_default() += 1;
        }
        let at = chosen
            .iter()
            .rposition(|(slot, _, _)| counts.get(slot).copied().unwrap_or(0) > 1)
            .or_else(|| chosen.len().checked_sub(1));
        match at.map(|i| chosen.remove(i)) {
            Some((_, line, _)) => excess = excess.saturating_sub(estimate_tokens(&line) + 1),
            None => break,
        }
    }
}
