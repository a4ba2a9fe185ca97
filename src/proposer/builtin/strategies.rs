//! The builtin proposer's strategies, one method each: transfer a proven lever to the segments
//! never tried at its moment, or to a related moment; retest an inconclusive, underpowered
//! test; validate a rule shipped without proof by a holdback; cover a neglected moment. Each
//! returns sketches drafted through [`Drafting::draft`]; the portfolio picks among them.

use super::wording::{at, evidence, percent, pooled, words};
use super::{lever_of, Drafting, Kind, Sketch};
use crate::analysis::levers::{Expectation, LeverEntry};
use crate::analysis::{stats, ExperimentAnalysis, Outcome};
use crate::history::{Experiment, Moment, TestKey};
use crate::proposer::{ProposedDraft, Risk};
use crate::validate::{self, sized_lift, MIN_SIZED_LIFT};
use std::collections::BTreeMap;

/// Below this power for the lever's pooled effect, an inconclusive test said little.
const RETEST_MAX_POWER: f64 = 0.5;
/// The lift a holdback is sized for when the shipped test claimed none.
const HOLDBACK_LIFT: f64 = 0.02;
/// Proven tests cited as evidence of one idea, at most.
const MAX_CITED: usize = 3;
/// Segments named in one transfer's roll-out plan, at most.
const MAX_ROLLOUT: usize = 4;

/// The moments next to `moment` in the journey: where a lever that works there may work too.
fn related(moment: Moment) -> &'static [Moment] {
    match moment {
        Moment::Search => &[Moment::ProductDetail, Moment::ReEngagement],
        Moment::ProductDetail => &[Moment::Search, Moment::CartCheckout],
        Moment::CartCheckout => &[Moment::ProductDetail, Moment::PostPurchase],
        Moment::PostPurchase => &[Moment::CartCheckout, Moment::ReEngagement],
        Moment::ReEngagement => &[Moment::PostPurchase, Moment::Search],
        Moment::Other => &[],
    }
}

impl<'a> Drafting<'a> {
    /// transfer to segments: one idea per lever proven at a moment.
    pub(super) fn transfers_to_segments(&self) -> Vec<(Kind, ProposedDraft)> {
        let mut drafts = Vec::new();
        for ((lever, moment), proven) in &self.index.proven {
            let Some(entry) = self.transferable(lever) else {
                continue;
            };
            if !self.proven_at(lever, *moment) {
                continue;
            }
            let Some(expected) = self
                .expected(lever, *moment)
                .filter(|x| x.lift >= MIN_SIZED_LIFT)
            else {
                continue;
            };
            let (source, analysis) = proven[0];
            let targets = self.open_segments(source, *moment, lever);
            let Some((first, rest)) = targets.split_first() else {
                continue;
            };
            let won_for: Vec<String> = {
                let mut names: Vec<String> = proven
                    .iter()
                    .filter_map(|(e, _)| e.segment.as_deref().map(words))
                    .collect();
                names.sort();
                names.dedup();
                names
            };
            let rollout: Vec<String> = rest
                .iter()
                .take(MAX_ROLLOUT)
                .map(|s| words(&s.name))
                .collect();
            let title = format!(
                "Extend {} to {} {}",
                words(lever),
                words(&first.name),
                at(*moment)
            );
            let then = if rollout.is_empty() {
                String::new()
            } else {
                format!(
                    " If it wins, roll it out to {} next, without re-testing each.",
                    rollout.join(", ")
                )
            };
            let rationale = format!(
                "{} proved {} on {} for {} ({}); {} in all, {}. It was never tried for {} {}, the busiest of the {} segment(s) still without it.{} Expected lift {} ({}).",
                source.id,
                percent(analysis.primary.relative_lift.unwrap_or(0.0)),
                source.primary_kpi,
                source.segment.as_deref().unwrap_or("its segment"),
                evidence(&analysis.primary),
                if proven.len() > 1 { format!("{} proven tests at this moment", proven.len()) } else { "one proven test at this moment".into() },
                pooled(entry),
                first.name,
                at(*moment),
                targets.len(),
                then,
                percent(expected.lift),
                expected.basis
            );
            let change = format!(
                "Show the {} treatment that won in {} to {} {}.{}",
                words(lever),
                source.id,
                first.name,
                at(*moment),
                then
            );
            drafts.extend(
                self.draft(Sketch {
                    kind: Kind::TransferSegments,
                    source,
                    also: proven
                        .iter()
                        .skip(1)
                        .take(MAX_CITED - 1)
                        .map(|(e, _)| *e)
                        .collect(),
                    segment: first,
                    moment: *moment,
                    lift: expected.lift,
                    title,
                    because: format!(
                        "it already won for {} at this moment and pools to {} across its tests",
                        won_for.join(", "),
                        percent(entry.pool.effect)
                    ),
                    rationale,
                    change,
                    risk: Risk::Medium,
                })
                .map(|d| (Kind::TransferSegments, d)),
            );
        }
        drafts
    }

    /// transfer to a moment: a lever proven at one moment, to a related one it never reached.
    pub(super) fn transfers_to_moments(&self) -> Vec<(Kind, ProposedDraft)> {
        let mut best: BTreeMap<(String, Moment), (&Experiment, &ExperimentAnalysis, Moment)> =
            BTreeMap::new();
        for ((lever, moment), proven) in &self.index.proven {
            if !self.proven_at(lever, *moment) {
                continue;
            }
            for target in related(*moment) {
                if self.index.tried_at.contains(&(*target, lever.clone())) {
                    continue;
                }
                let (source, analysis) = proven[0];
                let stronger = |(_, a, _): &(&Experiment, &ExperimentAnalysis, Moment)| {
                    analysis.primary.weakness() < a.primary.weakness()
                };
                let slot = best.entry((lever.clone(), *target));
                match slot {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert((source, analysis, *moment));
                    }
                    std::collections::btree_map::Entry::Occupied(mut o) => {
                        if stronger(o.get()) {
                            o.insert((source, analysis, *moment));
                        }
                    }
                }
            }
        }
        let mut drafts = Vec::new();
        for ((lever, target), (source, analysis, from)) in best {
            let Some(entry) = self.transferable(&lever) else {
                continue;
            };
            let Some(expected) = self
                .expected(&lever, target)
                .filter(|x| x.lift >= MIN_SIZED_LIFT)
            else {
                continue;
            };
            // The segment it won for, if open there; else the busiest open one.
            let targets = self.open_segments(source, target, &lever);
            let own = source.segment.as_deref().and_then(|s| {
                targets
                    .iter()
                    .find(|t| t.name.eq_ignore_ascii_case(s))
                    .copied()
            });
            let Some(segment) = own.or_else(|| targets.first().copied()) else {
                continue;
            };
            let proven_here = self
                .index
                .proven
                .get(&(lever.clone(), from))
                .map_or(0, Vec::len);
            let title = format!(
                "Try {} {}, after it won {}",
                words(&lever),
                at(target),
                at(from)
            );
            let rationale = format!(
                "{} won {} {} time(s) (best: {}, {} on {}); it was never tried {}, the next step of the journey. {}. Expected lift {} ({}).",
                words(&lever),
                at(from),
                proven_here,
                source.id,
                percent(analysis.primary.relative_lift.unwrap_or(0.0)),
                source.primary_kpi,
                at(target),
                pooled(entry),
                percent(expected.lift),
                expected.basis
            );
            let change = format!(
                "Adapt the {} treatment of {} to the {} moment and show it to {}.",
                words(&lever),
                source.id,
                words(target.as_str()),
                segment.name
            );
            let also: Vec<&Experiment> = self
                .index
                .proven
                .get(&(lever.clone(), from))
                .map(|p| {
                    p.iter()
                        .filter(|(e, _)| e.id != source.id)
                        .take(MAX_CITED - 1)
                        .map(|(e, _)| *e)
                        .collect()
                })
                .unwrap_or_default();
            drafts.extend(
                self.draft(Sketch {
                    kind: Kind::TransferMoment,
                    source,
                    also,
                    segment,
                    moment: target,
                    lift: expected.lift,
                    title,
                    because: format!(
                        "the same lever keeps winning {} and the visitor's need carries over to the next step",
                        at(from)
                    ),
                    rationale,
                    change,
                    risk: Risk::Medium,
                })
                .map(|d| (Kind::TransferMoment, d)),
            );
        }
        drafts
    }

    /// retest: the latest test of a place, inconclusive and underpowered for the pooled effect.
    pub(super) fn retests(&self) -> Vec<(Kind, ProposedDraft)> {
        let mut drafts = Vec::new();
        for &(source, analysis) in &self.index.latest {
            if analysis.outcome != Outcome::Inconclusive {
                continue;
            }
            let Some(lever) = lever_of(source) else {
                continue;
            };
            let key = source.test_key();
            if self.index.taken.contains(&key) || self.index.proven_keys.contains(&key) {
                continue;
            }
            let Some(expected) = self
                .expected(&lever, source.moment)
                .filter(|x| x.lift >= MIN_SIZED_LIFT)
            else {
                continue;
            };
            let primary = &analysis.primary;
            let Some(se) = primary.relative_se else {
                continue;
            };
            let Ok(power) = stats::achieved_power(expected.lift, se, self.alpha) else {
                continue;
            };
            let per_arm = source.control().visitors;
            // A summary-only record has no conversions: it says nothing about the rate a
            // re-run would be sized on.
            if source.control().conversions.is_none() {
                continue;
            }
            let Some(segment) = source
                .segment
                .as_deref()
                .and_then(|s| self.context.catalog.segment(s))
            else {
                continue;
            };
            // The very figure the proposal's enrichment shows under size: the same function,
            // on the same place and the draft's (rounded) lift.
            let Some(Ok(required)) = validate::sample_size(
                self.context.analysis,
                source.moment,
                &segment.name,
                sized_lift(expected.lift),
                self.alpha,
                self.power,
            )
            .required_visitors_per_arm
            else {
                continue;
            };
            if power >= RETEST_MAX_POWER || required <= per_arm {
                continue;
            }
            let title = format!(
                "Re-run {} for {} {} with enough traffic to see {}",
                words(&lever),
                words(&segment.name),
                at(source.moment),
                percent(expected.lift)
            );
            let rationale = format!(
                "{} saw {} ({}) with {} visitors per arm: only {:.0}% power for the lever's expected {} ({}). Detecting that needs {} visitors per arm.",
                source.id,
                percent(primary.relative_lift.unwrap_or(0.0)),
                evidence(primary),
                per_arm,
                power * 100.0,
                percent(expected.lift),
                expected.basis,
                required
            );
            let change = format!(
                "Run the treatment of {} again for {} with at least {} visitors per arm.",
                source.id, segment.name, required
            );
            drafts.extend(
                self.draft(Sketch {
                    kind: Kind::Retest,
                    source,
                    also: Vec::new(),
                    segment,
                    moment: source.moment,
                    lift: expected.lift,
                    title,
                    because: format!(
                        "the first test had {} visitors per arm, a quarter or less of what an effect this size needs, so its flat result settles nothing",
                        per_arm
                    ),
                    rationale,
                    change,
                    risk: Risk::Low,
                })
                .map(|d| (Kind::Retest, d)),
            );
        }
        drafts
    }

    /// cover: neglected moments, with their best-evidenced lever.
    pub(super) fn covers(&self) -> Vec<(Kind, ProposedDraft)> {
        let mut drafts = Vec::new();
        let levers = &self.context.analysis.levers;
        for moment in &self.context.analysis.program.neglected_moments {
            // The lever with the best expectation here: one tested here first (proven before
            // inconclusive), else one proven elsewhere carried here by the moment's prior.
            let mut best: Option<(f64, &LeverEntry, Expectation)> = None;
            for entry in &levers.levers {
                let here = entry.by_moment.get(moment);
                if here.is_none() && !entry.transferable() {
                    continue;
                }
                let Some(expected) = levers.expected_lift(&entry.lever, *moment) else {
                    continue;
                };
                if expected.lift < MIN_SIZED_LIFT {
                    continue;
                }
                let rank = match here {
                    Some(g) if g.proven > 0 => 2.0,
                    Some(_) => 1.0,
                    None => 0.0,
                } + expected.lift.min(0.99);
                if best.as_ref().is_none_or(|(r, _, _)| rank > *r) {
                    best = Some((rank, entry, expected));
                }
            }
            let Some((_, entry, expected)) = best else {
                continue;
            };
            // Its strongest test: here if any, else anywhere.
            let strongest = |only_here: bool| {
                entry
                    .tests
                    .iter()
                    .filter(|t| !only_here || t.moment == *moment)
                    .max_by(|a, b| (a.effect / a.se).total_cmp(&(b.effect / b.se)))
                    .and_then(|t| self.context.experiments.iter().find(|e| e.id == t.id))
            };
            let Some(source) = strongest(true).or_else(|| strongest(false)) else {
                continue;
            };
            let Some(analysis) = self.analysis_of(source) else {
                continue;
            };
            let targets = self.open_segments(source, *moment, &entry.lever);
            let segment = targets.first().copied().or_else(|| {
                source
                    .segment
                    .as_deref()
                    .and_then(|s| self.context.catalog.segment(s))
                    .filter(|s| {
                        !self
                            .index
                            .taken
                            .contains(&TestKey::new(*moment, &entry.lever, &s.name))
                    })
            });
            let Some(segment) = segment else { continue };
            let coverage = self
                .context
                .analysis
                .program
                .moment_coverage_12m
                .get(moment.as_str())
                .copied()
                .unwrap_or(0);
            let title = format!(
                "Restart testing {}: {} for {}",
                at(*moment)
                    .trim_start_matches("in ")
                    .trim_start_matches("on "),
                words(&entry.lever),
                words(&segment.name)
            );
            let rationale = format!(
                "The {} moment had {} experiment(s) in the last 12 months. Its best-evidenced lever is {}: {}; best test {} ({} on {}, {}). Expected lift {} ({}).",
                words(moment.as_str()),
                coverage,
                words(&entry.lever),
                pooled(entry),
                source.id,
                percent(analysis.primary.relative_lift.unwrap_or(0.0)),
                source.primary_kpi,
                analysis.outcome.as_str(),
                percent(expected.lift),
                expected.basis
            );
            let change = format!(
                "Bring the {} treatment of {} to {} {}.",
                words(&entry.lever),
                source.id,
                segment.name,
                at(*moment)
            );
            drafts.extend(
                self.draft(Sketch {
                    kind: Kind::Cover(*moment),
                    source,
                    also: Vec::new(),
                    segment,
                    moment: *moment,
                    lift: expected.lift,
                    title,
                    because: format!(
                        "this moment has gone untested for months and {} is the best-evidenced lever for it",
                        words(&entry.lever)
                    ),
                    rationale,
                    change,
                    risk: Risk::Medium,
                })
                .map(|d| (Kind::Cover(*moment), d)),
            );
        }
        drafts
    }

    /// validate: shipped rules without a proven result, as holdbacks sized for the lever's pool.
    pub(super) fn validations(&self) -> Vec<(Kind, ProposedDraft)> {
        let mut drafts = Vec::new();
        for &(source, analysis) in &self.index.shipped_unproven {
            let key = source.test_key();
            if self.index.taken.contains(&key) {
                continue;
            }
            let Some(lever) = lever_of(source) else {
                continue;
            };
            let Some(segment) = source
                .segment
                .as_deref()
                .and_then(|s| self.context.catalog.segment(s))
            else {
                continue;
            };
            // What it claimed, unless its split was broken (then the claim means nothing): a
            // claim, never the lift the holdback is sized for. That is the lever's pool there
            // (or the moment's, for a lever without a valid test), as for every draft.
            let claimed = analysis
                .primary
                .relative_lift
                .filter(|l| l.is_finite() && *l > 0.0 && !analysis.srm_flagged);
            let pooled = self
                .context
                .analysis
                .levers
                .expected_lift_or_prior(&lever, source.moment);
            let lift = pooled
                .as_ref()
                .map(|x| x.lift)
                .or(claimed)
                .unwrap_or(HOLDBACK_LIFT);
            let pooled_here = pooled
                .as_ref()
                .map(|x| {
                    format!(
                        " The lever's pooled expectation there is {} ({}).",
                        percent(x.lift),
                        x.basis
                    )
                })
                .unwrap_or_default();
            let sized_for = match claimed {
                Some(claim) if pooled.is_some() => format!(
                    "{}, not the {} its own test read,",
                    percent(sized_lift(lift)),
                    percent(claim)
                ),
                _ => percent(sized_lift(lift)),
            };
            let title = format!(
                "Check that the shipped {} still pays for {} {} (holdback)",
                words(&lever),
                words(&segment.name),
                at(source.moment)
            );
            let rationale = format!(
                "{} shipped on a {} result ({}, {}): nobody can show it earns its keep.{} A holdback sized for {} settles whether to keep it.",
                source.id,
                analysis.outcome.as_str().replace('_', " "),
                analysis.primary.relative_lift.map(percent).unwrap_or_else(|| "no computable lift".into()),
                evidence(&analysis.primary),
                pooled_here,
                sized_for
            );
            let change = format!(
                "Hold back the shipped {} rule from a random half of {} and compare.",
                words(&lever),
                segment.name
            );
            drafts.extend(
                self.draft(Sketch {
                    kind: Kind::Validate,
                    source,
                    also: Vec::new(),
                    segment,
                    moment: source.moment,
                    lift,
                    title,
                    because: format!(
                        "{} shipped without a proven result, so what it claimed ({}) was never shown",
                        source.id,
                        percent(claimed.unwrap_or(lift))
                    ),
                    rationale,
                    change,
                    risk: Risk::Low,
                })
                .map(|d| (Kind::Validate, d)),
            );
        }
        drafts
    }
}
