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
//! proposed. With `proposer.max_days` set, no test that would run longer is proposed: the run
//! records those the portfolio would otherwise have chosen as dropped, with the days they need.
//!
//! The portfolio (docs/proposals-and-queue.md, "How the builtin proposer ranks"): ideas are
//! valued by expected value per day ([`crate::validate::enrich`]); a share of the places is kept
//! for evidence strength (transfers of a lever with many proven tests to a new moment, however
//! small), then the best idea of every strategy that has one and of every neglected moment
//! comes, then the best ideas of levers not yet proposed, then the rest, all within the run's
//! caps. No idea targets a segment at a moment where the catalog says it does not exist. Open proposals are not excluded here on purpose: the same
//! history gives the same drafts, which the run counts as duplicates of the open queue.
//!
//! Everything is indexed once (by test key, lever × moment), so a run is linear in the history.
//!
//! This module owns the index, drafting a sketch and the portfolio; `strategies` the five
//! strategies, `wording` how drafts read.

mod strategies;
mod wording;

use super::{
    EvidenceRef, ProposalContext, ProposalDraft, ProposedDraft, Proposer, ProposerError,
    ProposerOutput, RejectedDraft, Rendering, Risk,
};
use crate::analysis::levers::{Expectation, LeverEntry};
use crate::analysis::{ExperimentAnalysis, Outcome};
use crate::domain::catalog::Segment;
use crate::domain::Strategy;
use crate::history::{Decision, Experiment, Moment, TestKey};
use crate::validate::{self, sized_lift, Surroundings};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet};
use wording::{at, change_verb, commercial_kpi, finding, note, percent, words};

pub struct BuiltinProposer {
    pub alpha: f64,
    pub power: f64,
    /// `proposer.min_days`.
    pub min_days: u32,
    /// `proposer.max_days`: ideas whose test would take longer are dropped (0: none are).
    pub max_days: u32,
}

impl Default for BuiltinProposer {
    fn default() -> Self {
        BuiltinProposer {
            alpha: 0.05,
            power: 0.8,
            min_days: validate::DEFAULT_MIN_DAYS,
            max_days: validate::DEFAULT_MAX_DAYS,
        }
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
#[derive(Clone)]
struct Idea {
    kind: Kind,
    value: f64,
    /// Proven tests of the lever at the moment a transfer to a new moment comes from (0 for
    /// the other strategies): what the portfolio's room for evidence ranks by.
    proven_behind: usize,
    /// The test's expected duration in days, once sized: infinite when its sample is known but
    /// its segment has no consented traffic to reach it; None when it could not be sized.
    days: Option<f64>,
    proposed: ProposedDraft,
}

/// The room for evidence: a transfer to a new moment whose lever has at least this many proven
/// tests at the moment it comes from is carried whatever its value per day...
const STRONG_EVIDENCE: usize = 3;
/// ...in up to one place in this many of the run's `max_proposals` (at least one).
const EVIDENCE_ROOM_SHARE: usize = 4;

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
                let p = |a: &ExperimentAnalysis| a.primary.weakness();
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

    /// For a transfer to a new moment, the proven tests of its lever at the moment it comes
    /// from (its first evidence is the strongest of them); 0 for any other idea.
    fn proven_behind(&self, kind: Kind, proposed: &ProposedDraft) -> usize {
        if kind != Kind::TransferMoment {
            return 0;
        }
        let draft = &proposed.draft;
        let Some(source) = draft.evidence.first() else {
            return 0;
        };
        Moment::ALL
            .iter()
            .filter_map(|m| self.index.proven.get(&(draft.lever.clone(), *m)))
            .find(|tests| {
                tests
                    .first()
                    .is_some_and(|(e, _)| e.id == source.experiment_id)
            })
            .map_or(0, Vec::len)
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

    /// Catalog segments that exist at `moment`, where `source`'s signals are lawful and the
    /// place is open, busiest (by consented traffic) first.
    fn open_segments(&self, source: &Experiment, moment: Moment, lever: &str) -> Vec<&'a Segment> {
        let catalog = self.context.catalog;
        let mut segments: Vec<(&Segment, f64)> = catalog
            .segments
            .iter()
            .filter(|s| s.exists_at(moment))
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
    /// the segment does not exist at the moment (the catalog's `moments`) or the source's
    /// signals cannot lawfully be used for it.
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
        if !segment.exists_at(moment) {
            return None;
        }
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
        let lift = sized_lift(lift);
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
}

/// Picks the portfolio. First the room for evidence: up to ⌈max_proposals / 4⌉ transfers to a
/// new moment whose lever has at least [`STRONG_EVIDENCE`] proven tests at the moment it comes
/// from, the most proven tests first (then by value per day), one per lever, however small the
/// new moment (a lever that keeps winning is worth carrying even where the traffic is thin);
/// each counts as its lever's and its kind's appearance.
/// Then by expected value per day: the best idea of every kind (each strategy with an
/// opportunity, each neglected moment), then the best ideas of levers not yet chosen, then the
/// rest. One proposal per place, within the run's caps.
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
    let room = context.max_proposals.div_ceil(EVIDENCE_ROOM_SHARE).max(1);
    let mut strong: Vec<usize> = ideas
        .iter()
        .enumerate()
        .filter(|(_, i)| i.kind == Kind::TransferMoment && i.proven_behind >= STRONG_EVIDENCE)
        .map(|(n, _)| n)
        .collect();
    // Stable: among equally proven levers, the order by value per day stands.
    strong.sort_by_key(|n| std::cmp::Reverse(ideas[*n].proven_behind));
    let mut carried: HashSet<String> = HashSet::new();
    for n in strong {
        let idea = &ideas[n];
        let lever = idea.proposed.draft.lever.to_ascii_lowercase();
        if carried.len() >= room || caps.full() {
            break;
        }
        if carried.contains(&lever) || keys.contains(&key(idea)) {
            continue;
        }
        if caps.admit(idea.proposed.draft.moment).is_err() {
            continue;
        }
        chosen.push(n);
        keys.insert(key(idea));
        carried.insert(lever.clone());
        // It counts as its lever's and its kind's appearance: the passes below go on to others.
        levers.insert(lever);
        kinds.insert(idea.kind);
    }
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
            min_days: self.min_days,
        };
        // What the program learnt: transfers of a lever that failed, and what reviewers
        // rejected lately, weigh its ideas down, and their rationale says so.
        let rejections = super::rejections_by_strategy(context.recent_rejections);
        let learning = &context.analysis.learning;
        let ideas: Vec<Idea> = candidates
            .into_iter()
            .map(|(kind, proposed)| {
                let proven_behind = drafting.proven_behind(kind, &proposed);
                Idea {
                    proven_behind,
                    ..valued(kind, proposed, &around, &rejections, learning)
                }
            })
            .collect();
        // Tests longer than `proposer.max_days` are not proposed; the run records those the
        // portfolio would have chosen without the limit (the others were never in the running).
        let too_long: Vec<(ProposalDraft, f64)> = ideas
            .iter()
            .filter(|idea| self.too_long(idea))
            .map(|idea| (idea.proposed.draft.clone(), idea.days.unwrap_or_default()))
            .collect();
        let rejected = if too_long.is_empty() {
            Vec::new()
        } else {
            portfolio(ideas.clone(), context)
                .into_iter()
                .filter_map(|chosen| {
                    let (draft, days) = too_long.iter().find(|(d, _)| *d == chosen.draft)?;
                    Some(self.dropped(draft, *days))
                })
                .collect()
        };
        let ideas = ideas
            .into_iter()
            .filter(|idea| !self.too_long(idea))
            .collect();
        Ok(ProposerOutput {
            drafts: portfolio(ideas, context),
            rejected,
            ..ProposerOutput::default()
        })
    }
}

impl BuiltinProposer {
    /// Whether the idea's test would run longer than `proposer.max_days`.
    fn too_long(&self, idea: &Idea) -> bool {
        self.max_days > 0
            && idea
                .days
                .is_some_and(|days| days > f64::from(self.max_days))
    }

    /// A too-long idea as the run records it: the draft and the days it would need.
    fn dropped(&self, draft: &ProposalDraft, days: f64) -> RejectedDraft {
        RejectedDraft {
            raw: serde_json::to_value(draft).unwrap_or_default(),
            reasons: vec![if days.is_finite() {
                format!(
                    "\"{}\" would run {days:.0} days on the consented traffic of {}, longer \
                     than proposer.max_days ({}): not proposed",
                    draft.title, draft.segment, self.max_days
                )
            } else {
                format!(
                    "\"{}\" would never reach its sample: {} has no consented traffic for its \
                     signals (proposer.max_days = {}): not proposed",
                    draft.title, draft.segment, self.max_days
                )
            }],
        }
    }
}

/// An idea valued: its expected value per day exactly as the queue will show it, weighed down
/// (its rationale saying so) by failed transfers of its lever and by reviewers' recent
/// rejections of its strategy.
fn valued(
    kind: Kind,
    mut proposed: ProposedDraft,
    around: &Surroundings<'_>,
    rejections: &[super::StrategyRejections],
    learning: &crate::analysis::Learning,
) -> Idea {
    let enrichment =
        validate::enrich_without_duplicates(&proposed.draft, proposed.strategy, around);
    let mut value = enrichment.expected_value_per_day;
    let strategy = kind.strategy();
    if strategy == Strategy::Transfer {
        let weight = learning.transfer_weight(&proposed.draft.lever);
        if weight < 1.0 {
            value *= weight;
            note(
                &mut proposed.draft.rationale,
                format!(
                    " Earlier transfers of {} failed, so this idea is weighted ×{weight:.2}.",
                    words(&proposed.draft.lever)
                ),
            );
        }
    }
    if let Some(rejected) = rejections.iter().find(|r| r.strategy == Some(strategy)) {
        value *= rejected.weight();
        let reason = rejected
            .reasons
            .first()
            .map(|(r, _)| {
                format!(
                    " (most often: \"{}\")",
                    r.chars().take(80).collect::<String>()
                )
            })
            .unwrap_or_default();
        note(
            &mut proposed.draft.rationale,
            format!(
                " Reviewers rejected {} {} proposal(s) lately{reason}, so it is weighted ×{:.2}.",
                rejected.rejected,
                strategy.as_str(),
                rejected.weight()
            ),
        );
    }
    Idea {
        kind,
        value,
        proven_behind: 0,
        days: enrichment
            .expected_duration_days
            .or(enrichment.required_visitors_per_arm.map(|_| f64::INFINITY)),
        proposed,
    }
}
