//! The builtin proposer (see docs/architecture.md): deterministic, explainable, needs no model.
//! It owns the strategies, the portfolio rule that picks among their ideas, and the wording of
//! its drafts. Every expected lift comes from the lever knowledge base
//! ([`crate::analysis::levers`]): a lever's pooled effect where it was tested, shrunk toward the
//! lever's pool (or toward a moment's prior where it never was), never one lucky test.
//!
//! Strategies (one idea each, never one copy per segment):
//! - **transfer to segments**: a lever proven at a moment, to the segments never tried there
//!   (one proposal for the busiest, naming the others to roll out to);
//! - **transfer to a moment**: a lever proven at one moment, to a related moment (the next or
//!   previous step of the journey) where it was never tried, its effect shrunk toward that
//!   moment's prior;
//! - **retest**: the latest test of a place, inconclusive and underpowered for the lever's
//!   pooled effect, again with the sample that effect needs;
//! - **validate**: a rule shipped without a proven result, as a holdback sized for the effect it
//!   claimed;
//! - **cover**: a commerce moment the last 12 months neglected, with its best-evidenced lever.
//!
//! No lever whose pooled effect is negative, or whose best test had a sample ratio mismatch, is
//! carried anywhere. Nothing a running experiment tests or a reviewer recently rejected is
//! proposed.
//!
//! The portfolio (README, "How the builtin proposer ranks"): ideas are valued by expected value
//! per day ([`crate::validate::enrich`]); the best idea of every strategy that has one and of
//! every neglected moment comes first, then the best ideas of levers not yet proposed, then the
//! rest, all within the run's caps. Open proposals are not excluded here on purpose: the same
//! history gives the same drafts, which the run counts as duplicates of the open queue.
//!
//! Everything is indexed once (by test key, lever × moment), so a run is linear in the history.

use super::{
    EvidenceRef, ProposalContext, ProposalDraft, ProposedDraft, Proposer, ProposerError,
    ProposerOutput, Rendering, Risk,
};
use crate::analysis::levers::{Expectation, LeverEntry};
use crate::analysis::{stats, ExperimentAnalysis, Outcome};
use crate::domain::catalog::{Catalog, Segment};
use crate::domain::Strategy;
use crate::history::{Decision, Experiment, Moment, TestKey};
use crate::validate::{self, Surroundings};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Below this power for the lever's pooled effect, an inconclusive test said little.
const RETEST_MAX_POWER: f64 = 0.5;
/// The lift a holdback is sized for when the shipped test claimed none.
const HOLDBACK_LIFT: f64 = 0.02;
/// The smallest lift hypod sizes a test for (smaller ones need impractical samples); an idea
/// whose expected lift is below it is not an opportunity (a holdback excepted: it is sized for
/// what its rule claimed).
const MIN_SIZED_LIFT: f64 = 0.01;
/// Proven tests cited as evidence of one idea, at most.
const MAX_CITED: usize = 3;
/// Segments named in one transfer's roll-out plan, at most.
const MAX_ROLLOUT: usize = 4;

pub struct BuiltinProposer {
    pub alpha: f64,
    pub power: f64,
}

impl Default for BuiltinProposer {
    fn default() -> Self {
        BuiltinProposer {
            alpha: 0.05,
            power: 0.8,
        }
    }
}

fn words(identifier: &str) -> String {
    identifier.replace(['_', '-'], " ")
}

/// A p-value as a person writes it ("p = 0.012", "p < 0.001").
fn p_text(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".into()
    } else {
        format!("p = {p:.3}")
    }
}

fn percent(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

/// A moment as a person names it in a sentence ("on product pages").
fn at(moment: Moment) -> &'static str {
    match moment {
        Moment::Search => "in search",
        Moment::ProductDetail => "on product pages",
        Moment::CartCheckout => "in cart and checkout",
        Moment::PostPurchase => "after purchase",
        Moment::ReEngagement => "in re-engagement",
        Moment::Other => "at other touchpoints",
    }
}

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

/// A commercial KPI for the draft: the source's own when commercial, else conversion rate.
fn commercial_kpi(experiment: &Experiment, catalog: &Catalog) -> String {
    if catalog.is_commercial(&experiment.primary_kpi) {
        experiment.primary_kpi.clone()
    } else {
        "conversion_rate".to_string()
    }
}

fn finding(experiment: &Experiment, analysis: &ExperimentAnalysis) -> String {
    let lift = analysis
        .primary
        .relative_lift
        .map(percent)
        .unwrap_or_else(|| "no computable lift".into());
    let p = analysis
        .primary
        .p_value
        .map(p_text)
        .unwrap_or_else(|| "no p-value".into());
    format!(
        "{} for {} at {}: {} on {} ({}, {}, {} visitors)",
        words(experiment.lever.as_deref().unwrap_or("the change")),
        experiment.segment.as_deref().unwrap_or("all visitors"),
        experiment.moment,
        lift,
        experiment.primary_kpi,
        p,
        analysis.outcome.as_str(),
        experiment.total_visitors()
    )
}

/// The pooled evidence of a lever, in one sentence.
fn pooled(entry: &LeverEntry) -> String {
    format!(
        "{} pools to {} over {} test(s) ({} proven; 95% CI {} to {}, I² {:.0}%)",
        words(&entry.lever),
        percent(entry.pool.effect),
        entry.pool.k,
        entry.proven,
        percent(entry.pool.ci_low),
        percent(entry.pool.ci_high),
        entry.pool.i2 * 100.0
    )
}

/// Appends a learning note to a rationale while it stays within the validated length (a note
/// never gets a draft blocked).
fn note(rationale: &mut String, text: String) {
    if rationale.chars().count() + text.chars().count() <= validate::MAX_TEXT_CHARS {
        rationale.push_str(&text);
    }
}

/// Which slot of the portfolio an idea competes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    TransferSegments,
    TransferMoment,
    Retest,
    Validate,
    Cover(Moment),
}

impl Kind {
    fn strategy(self) -> Strategy {
        match self {
            Kind::TransferSegments | Kind::TransferMoment => Strategy::Transfer,
            Kind::Retest => Strategy::Retest,
            Kind::Validate => Strategy::Validate,
            Kind::Cover(_) => Strategy::Cover,
        }
    }
}

/// What a strategy decides; [`Drafting::draft`] fills in the rest.
struct Sketch<'e> {
    kind: Kind,
    /// The experiment the proposal builds on (its signals, rendering, KPI).
    source: &'e Experiment,
    /// Further experiments cited.
    also: Vec<&'e Experiment>,
    segment: &'e Segment,
    moment: Moment,
    lift: f64,
    title: String,
    /// The "because" of the hypothesis.
    because: String,
    rationale: String,
    change: String,
    risk: Risk,
}

/// An idea with its value, ready for the portfolio.
struct Idea {
    kind: Kind,
    value: f64,
    proposed: ProposedDraft,
}

/// The history indexed once.
struct Index<'e> {
    /// Every (moment, lever, segment) ever tested.
    tried: HashSet<TestKey>,
    /// Every (moment, lever) ever tested, in any segment.
    tried_at: HashSet<(Moment, String)>,
    /// What is being tested now or was recently rejected: never proposed again.
    taken: HashSet<TestKey>,
    /// Places with a proven test.
    proven_keys: HashSet<TestKey>,
    /// Proven tests of each lever at each moment, strongest first.
    proven: BTreeMap<(String, Moment), Vec<(&'e Experiment, &'e ExperimentAnalysis)>>,
    /// The latest concluded test of every place, in history order.
    latest: Vec<(&'e Experiment, &'e ExperimentAnalysis)>,
    /// Shipped tests without a proven result, one per place (the latest).
    shipped_unproven: Vec<(&'e Experiment, &'e ExperimentAnalysis)>,
}

fn lever_of(experiment: &Experiment) -> Option<String> {
    experiment
        .lever
        .as_deref()
        .map(|l| l.trim().to_ascii_lowercase())
        .filter(|l| !l.is_empty())
}

impl<'e> Index<'e> {
    fn new(context: &'e ProposalContext<'e>) -> Index<'e> {
        let mut index = Index {
            tried: HashSet::new(),
            tried_at: HashSet::new(),
            taken: HashSet::new(),
            proven_keys: HashSet::new(),
            proven: BTreeMap::new(),
            latest: Vec::new(),
            shipped_unproven: Vec::new(),
        };
        // A rejected idea is not proposed again: the reviewer's decision stands.
        index.taken.extend(
            context
                .recent_rejections
                .iter()
                .map(|(p, _)| TestKey::new(p.draft.moment, &p.draft.lever, &p.draft.segment)),
        );
        let mut latest: HashMap<TestKey, usize> = HashMap::new();
        let mut shipped: HashMap<TestKey, usize> = HashMap::new();
        for (i, experiment) in context.experiments.iter().enumerate() {
            let key = experiment.test_key();
            index.tried.insert(key.clone());
            if let Some(lever) = lever_of(experiment) {
                index.tried_at.insert((experiment.moment, lever));
            }
            if experiment.is_running() {
                index.taken.insert(key);
                continue;
            }
            let Some(analysis) = context.analysis.experiment(&experiment.id) else {
                continue;
            };
            if analysis.outcome == Outcome::Proven {
                index.proven_keys.insert(key.clone());
                if let Some(lever) = lever_of(experiment) {
                    index
                        .proven
                        .entry((lever, experiment.moment))
                        .or_default()
                        .push((experiment, analysis));
                }
            }
            if experiment.decision == Some(Decision::Ship) {
                shipped.insert(key.clone(), i);
            }
            latest.insert(key, i);
        }
        let pair = |i: usize| {
            let e = &context.experiments[i];
            context.analysis.experiment(&e.id).map(|a| (e, a))
        };
        let mut latest: Vec<usize> = latest.into_values().collect();
        latest.sort_unstable();
        index.latest = latest.into_iter().filter_map(pair).collect();
        let mut shipped: Vec<usize> = shipped.into_values().collect();
        shipped.sort_unstable();
        index.shipped_unproven = shipped
            .into_iter()
            .filter_map(pair)
            .filter(|(e, _)| !index.proven_keys.contains(&e.test_key()))
            .collect();
        for tests in index.proven.values_mut() {
            tests.sort_by(|(x, a), (y, b)| {
                let p = |a: &ExperimentAnalysis| a.primary.p_value.unwrap_or(1.0);
                p(a).total_cmp(&p(b)).then_with(|| x.id.cmp(&y.id))
            });
        }
        index
    }

    fn open(&self, key: &TestKey) -> bool {
        !self.tried.contains(key) && !self.taken.contains(key)
    }
}

struct Drafting<'a> {
    context: &'a ProposalContext<'a>,
    index: Index<'a>,
    alpha: f64,
    power: f64,
}

impl<'a> Drafting<'a> {
    fn analysis_of(&self, experiment: &Experiment) -> Option<&'a ExperimentAnalysis> {
        self.context.analysis.experiment(&experiment.id)
    }

    fn expected(&self, lever: &str, moment: Moment) -> Option<Expectation> {
        self.context.analysis.levers.expected_lift(lever, moment)
    }

    /// Whether the lever's pooled tests at `moment` prove it there (the pool's 95% CI above 0):
    /// one lucky test among flat ones does not.
    fn proven_at(&self, lever: &str, moment: Moment) -> bool {
        self.context
            .analysis
            .levers
            .lever(lever)
            .and_then(|entry| entry.by_moment.get(&moment))
            .is_some_and(|group| group.pool.ci_low > 0.0)
    }

    /// The lever's entry in the knowledge base, when it may be carried where it never was.
    fn transferable(&self, lever: &str) -> Option<&'a LeverEntry> {
        self.context
            .analysis
            .levers
            .lever(lever)
            .filter(|entry| entry.transferable())
    }

    /// Catalog segments where `source`'s signals are lawful and the place is open, busiest
    /// (by consented traffic) first.
    fn open_segments(&self, source: &Experiment, moment: Moment, lever: &str) -> Vec<&'a Segment> {
        let catalog = self.context.catalog;
        let mut segments: Vec<(&Segment, f64)> = catalog
            .segments
            .iter()
            .filter(|s| self.index.open(&TestKey::new(moment, lever, &s.name)))
            .filter_map(|s| {
                let signals =
                    crate::governance::consent::usable_signals(&source.signals, s, catalog)?;
                Some((
                    s,
                    s.daily_visitors as f64 * catalog.consented_share(s, &signals),
                ))
            })
            .collect();
        segments.sort_by(|(a, x), (b, y)| y.total_cmp(x).then_with(|| a.name.cmp(&b.name)));
        segments.into_iter().map(|(s, _)| s).collect()
    }

    /// Turns a strategy's sketch into a full draft that governance would accept, or `None` when
    /// the source's signals cannot lawfully be used for the target segment.
    fn draft(&self, sketch: Sketch<'_>) -> Option<ProposedDraft> {
        let Sketch {
            kind,
            source,
            also,
            segment,
            moment,
            lift,
            title,
            because,
            rationale,
            change,
            risk,
        } = sketch;
        let lever = lever_of(source)?;
        let catalog = self.context.catalog;
        let signals =
            crate::governance::consent::usable_signals(&source.signals, segment, catalog)?;
        let consent_purposes = catalog
            .required_purposes(&signals)
            .into_iter()
            .map(str::to_string)
            .collect();
        let rendering = source
            .rendering
            .as_deref()
            .and_then(Rendering::parse)
            .unwrap_or(Rendering::Server);
        let budget = catalog
            .latency_budget_ms
            .get(rendering.as_str())
            .copied()
            .unwrap_or(10.0);
        let expected_latency_ms = source
            .latency_ms_p75_delta
            .filter(|d| d.is_finite() && *d >= 0.0)
            .unwrap_or(budget / 2.0)
            .min(budget);
        let kpi = commercial_kpi(source, catalog);
        let lift =
            (lift.clamp(MIN_SIZED_LIFT, validate::MAX_EXPECTED_LIFT) * 1000.0).round() / 1000.0;
        let evidence = std::iter::once(source)
            .chain(also)
            .take(validate::MAX_EVIDENCE)
            .filter_map(|e| {
                self.analysis_of(e).map(|a| EvidenceRef {
                    experiment_id: e.id.clone(),
                    finding: finding(e, a),
                })
            })
            .collect();
        let draft = ProposalDraft {
            evidence,
            rationale,
            moment,
            lever: lever.clone(),
            segment: segment.name.clone(),
            channel: source.channel.clone().unwrap_or_else(|| "web".into()),
            rendering,
            signals,
            consent_purposes,
            hypothesis: format!(
                "If we {} for {} {}, then {} will rise by about {}, because {}.",
                change_verb(kind, &lever),
                words(&segment.name),
                at(moment),
                words(&kpi),
                percent(lift),
                because
            ),
            change,
            title,
            primary_kpi: kpi.clone(),
            guardrail_kpis: ["conversion_rate", "average_order_value", "revenue_per_visitor"]
                .into_iter()
                .filter(|g| *g != kpi)
                .map(str::to_string)
                .collect(),
            expected_relative_lift: lift,
            expected_latency_ms,
            risk: if moment == Moment::CartCheckout {
                Risk::High
            } else {
                risk
            },
            rollback_plan: format!(
                "Switch off the {} treatment for {}: the control experience stays live, so rollback is one flag.",
                words(&lever),
                segment.name
            ),
        };
        Some(ProposedDraft {
            draft,
            strategy: Some(kind.strategy()),
        })
    }

    /// transfer to segments: one idea per lever proven at a moment.
    fn transfers_to_segments(&self) -> Vec<(Kind, ProposedDraft)> {
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
                p_text(analysis.primary.p_value.unwrap_or(1.0)),
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
    fn transfers_to_moments(&self) -> Vec<(Kind, ProposedDraft)> {
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
                    analysis.primary.p_value.unwrap_or(1.0) < a.primary.p_value.unwrap_or(1.0)
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
    fn retests(&self) -> Vec<(Kind, ProposedDraft)> {
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
            let rate = source.control().conversions as f64 / per_arm.max(1) as f64;
            let Ok(required) =
                stats::sample_size_proportion(rate, expected.lift, self.alpha, self.power)
            else {
                continue;
            };
            if power >= RETEST_MAX_POWER || required <= per_arm {
                continue;
            }
            let Some(segment) = source
                .segment
                .as_deref()
                .and_then(|s| self.context.catalog.segment(s))
            else {
                continue;
            };
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
                p_text(primary.p_value.unwrap_or(1.0)),
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
    fn covers(&self) -> Vec<(Kind, ProposedDraft)> {
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

    /// validate: shipped rules without a proven result, as holdbacks sized for their claim.
    fn validations(&self) -> Vec<(Kind, ProposedDraft)> {
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
            // What it claimed, unless its split was broken (then the claim means nothing).
            let claimed = analysis
                .primary
                .relative_lift
                .filter(|l| l.is_finite() && *l > 0.0 && !analysis.srm_flagged);
            let lift = claimed.unwrap_or(HOLDBACK_LIFT);
            let pooled_here = self
                .expected(&lever, source.moment)
                .map(|x| {
                    format!(
                        " The lever's pooled expectation there is {} ({}).",
                        percent(x.lift),
                        x.basis
                    )
                })
                .unwrap_or_default();
            let title = format!(
                "Check that the shipped {} still pays for {} {} (holdback)",
                words(&lever),
                words(&segment.name),
                at(source.moment)
            );
            let rationale = format!(
                "{} shipped on a {} result ({}, {}): nobody can show it earns its keep.{} A holdback sized for the {} it claimed settles whether to keep it.",
                source.id,
                analysis.outcome.as_str().replace('_', " "),
                analysis.primary.relative_lift.map(percent).unwrap_or_else(|| "no computable lift".into()),
                analysis.primary.p_value.map(p_text).unwrap_or_else(|| "no p-value".into()),
                pooled_here,
                percent(lift)
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
                        "{} shipped without a proven result, so the {} it claimed was never shown",
                        source.id,
                        percent(lift)
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

/// The verb phrase of a hypothesis ("If we … for … at …").
fn change_verb(kind: Kind, lever: &str) -> String {
    match kind {
        Kind::Validate => format!(
            "keep the shipped {} only where a holdback shows it pays",
            words(lever)
        ),
        Kind::Retest => format!("test {} again with enough traffic", words(lever)),
        _ => format!("show {}", words(lever)),
    }
}

/// Picks the portfolio: the best idea of every kind first (each strategy with an opportunity,
/// each neglected moment), then the best ideas of levers not yet chosen, then the rest; one
/// proposal per place, within the run's caps. Each pass goes by expected value per day.
fn portfolio(ideas: Vec<Idea>, context: &ProposalContext<'_>) -> Vec<ProposedDraft> {
    let mut ideas = ideas;
    ideas.retain(|i| i.value > 0.0);
    ideas.sort_by(|a, b| {
        b.value
            .total_cmp(&a.value)
            .then_with(|| a.proposed.draft.title.cmp(&b.proposed.draft.title))
    });
    let mut caps = super::Caps::of(context);
    let mut chosen: Vec<usize> = Vec::new();
    let mut keys: HashSet<TestKey> = HashSet::new();
    let mut levers: HashSet<String> = HashSet::new();
    let mut kinds: HashSet<Kind> = HashSet::new();
    let key = |i: &Idea| {
        let d = &i.proposed.draft;
        TestKey::new(d.moment, &d.lever, &d.segment)
    };
    for pass in 0..3 {
        for (n, idea) in ideas.iter().enumerate() {
            if caps.full() {
                break;
            }
            let lever = idea.proposed.draft.lever.to_ascii_lowercase();
            let admissible = match pass {
                0 => !kinds.contains(&idea.kind) && !levers.contains(&lever),
                1 => !levers.contains(&lever),
                _ => true,
            };
            if !admissible || chosen.contains(&n) || keys.contains(&key(idea)) {
                continue;
            }
            if caps.admit(idea.proposed.draft.moment).is_err() {
                continue;
            }
            chosen.push(n);
            keys.insert(key(idea));
            levers.insert(lever);
            kinds.insert(idea.kind);
        }
    }
    // Listed by expected value per day (the passes decide what is in, not the order).
    chosen.sort_unstable();
    let mut ideas: Vec<Option<Idea>> = ideas.into_iter().map(Some).collect();
    chosen
        .into_iter()
        .filter_map(|n| ideas[n].take().map(|i| i.proposed))
        .collect()
}

#[async_trait]
impl Proposer for BuiltinProposer {
    fn kind(&self) -> &'static str {
        "builtin"
    }

    async fn propose(
        &self,
        context: &ProposalContext<'_>,
    ) -> Result<ProposerOutput, ProposerError> {
        let drafting = Drafting {
            context,
            index: Index::new(context),
            alpha: self.alpha,
            power: self.power,
        };
        let mut candidates = drafting.transfers_to_segments();
        candidates.extend(drafting.transfers_to_moments());
        candidates.extend(drafting.retests());
        candidates.extend(drafting.covers());
        candidates.extend(drafting.validations());

        // Value each idea exactly as the queue will show it.
        let no_proposals = Vec::new();
        let around = Surroundings {
            experiments: context.experiments,
            analysis: context.analysis,
            catalog: context.catalog,
            open_proposals: &no_proposals,
            this_run: &no_proposals,
            rejected_proposals: &no_proposals,
            alpha: self.alpha,
            power: self.power,
        };
        // What the program learnt: transfers of a lever that failed, and what reviewers
        // rejected lately, weigh its ideas down, and their rationale says so.
        let rejections = super::rejections_by_strategy(context.recent_rejections);
        let learning = &context.analysis.learning;
        let ideas = candidates
            .into_iter()
            .map(|(kind, mut proposed)| {
                let mut value = validate::enrich_without_duplicates(
                    &proposed.draft,
                    proposed.strategy,
                    &around,
                )
                .expected_value_per_day;
                let strategy = kind.strategy();
                if strategy == Strategy::Transfer {
                    let weight = learning.transfer_weight(&proposed.draft.lever);
                    if weight < 1.0 {
                        value *= weight;
                        note(&mut proposed.draft.rationale, format!(
                            " Earlier transfers of {} failed, so this idea is weighted ×{weight:.2}.",
                            words(&proposed.draft.lever)
                        ));
                    }
                }
                if let Some(rejected) = rejections.iter().find(|r| r.strategy == Some(strategy)) {
                    value *= rejected.weight();
                    let reason = rejected
                        .reasons
                        .first()
                        .map(|(r, _)| format!(" (most often: \"{}\")", r.chars().take(80).collect::<String>()))
                        .unwrap_or_default();
                    note(&mut proposed.draft.rationale, format!(
                        " Reviewers rejected {} {} proposal(s) lately{reason}, so it is weighted ×{:.2}.",
                        rejected.rejected,
                        strategy.as_str(),
                        rejected.weight()
                    ));
                }
                Idea {
                    kind,
                    value,
                    proposed,
                }
            })
            .collect();
        Ok(ProposerOutput {
            drafts: portfolio(ideas, context),
            ..ProposerOutput::default()
        })
    }
}
