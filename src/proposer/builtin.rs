//! The builtin proposer (see docs/architecture.md): deterministic, explainable, needs no model. Four
//! strategies read the analysis and draft proposals that cite their evidence:
//!
//! - **transfer**: a lever proven for one segment (or moment) to a related one where it was
//!   never tried;
//! - **retest**: an inconclusive, underpowered experiment again, with the sample it needs;
//! - **cover**: a commerce moment the last 12 months neglected, with its best-evidenced lever;
//! - **validate**: a shipped rule that never had a proven result, as a holdback test.
//!
//! Candidates are ranked by expected value (consented traffic × baseline × expected lift ×
//! value per conversion × evidence strength, see [`crate::validate::enrich`]); nothing that a
//! running experiment tests or a reviewer recently rejected is proposed. Open proposals are not
//! excluded here on purpose: the same history gives the same drafts, which the run then counts
//! as duplicates of the open queue, so a nightly run on unchanged data queues nothing new.

use super::{
    EvidenceRef, ProposalContext, ProposalDraft, ProposedDraft, Proposer, ProposerError,
    ProposerOutput, Rendering, Risk,
};
use crate::analysis::{ExperimentAnalysis, Outcome};
use crate::domain::catalog::{Catalog, Segment};
use crate::domain::Strategy;
use crate::history::{Decision, Experiment, Moment, TestKey};
use crate::validate::{self, Surroundings};
use async_trait::async_trait;
use std::collections::HashSet;

/// Shrinks an observed lift when it is carried somewhere else (winner's curse and context).
const TRANSFER_SHRINK: f64 = 0.5;
/// Below this achieved power an inconclusive test says little: worth re-testing.
const RETEST_MAX_POWER: f64 = 0.5;
/// The lift a holdback of an unproven shipped rule is sized for.
const HOLDBACK_LIFT: f64 = 0.02;
/// The smallest lift hypod sizes a test for (smaller ones need impractical samples).
const MIN_SIZED_LIFT: f64 = 0.01;

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

fn percent(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
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
        .map(|p| format!("p = {p:.3}"))
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

/// The "because" of the hypothesis a strategy drafts.
fn because(strategy: Strategy) -> &'static str {
    {
        match strategy {
            Strategy::Transfer => "the same lever proved itself for a related audience",
            Strategy::Retest => "the earlier test pointed the right way but was too small to tell",
            Strategy::Cover => {
                "this moment has been neglected and this is its best-evidenced lever"
            }
            Strategy::Validate => "a shipped rule that was never proven should earn its place",
        }
    }
}

/// What a strategy decides; [`Drafting::draft`] fills in the rest.
struct Sketch<'e> {
    strategy: Strategy,
    /// The experiment the proposal builds on (its evidence).
    source: &'e Experiment,
    segment: &'e Segment,
    moment: Moment,
    lift: f64,
    title: String,
    rationale: String,
    change: String,
    risk: Risk,
}

struct Drafting<'a> {
    context: &'a ProposalContext<'a>,
    /// What is being tested now or is already proposed: never proposed again.
    taken: HashSet<TestKey>,
    /// Everything ever tried.
    tried: HashSet<TestKey>,
}

impl<'a> Drafting<'a> {
    fn analysis_of(&self, experiment: &Experiment) -> Option<&'a ExperimentAnalysis> {
        self.context.analysis.experiment(&experiment.id)
    }

    /// Turns a strategy's sketch into a full draft that governance would accept, or `None` when
    /// the source's signals cannot lawfully be used for the target segment.
    fn draft(&self, sketch: Sketch<'_>) -> Option<ProposedDraft> {
        let Sketch {
            strategy,
            source,
            segment,
            moment,
            lift,
            title,
            rationale,
            change,
            risk,
        } = sketch;
        let lever = source.lever.clone()?;
        let signals = crate::governance::consent::usable_signals(
            &source.signals,
            segment,
            self.context.catalog,
        )?;
        let consent_purposes = self
            .context
            .catalog
            .required_purposes(&signals)
            .into_iter()
            .map(str::to_string)
            .collect();
        let rendering = source
            .rendering
            .as_deref()
            .and_then(Rendering::parse)
            .unwrap_or(Rendering::Server);
        let budget = self
            .context
            .catalog
            .latency_budget_ms
            .get(rendering.as_str())
            .copied()
            .unwrap_or(10.0);
        let expected_latency_ms = source
            .latency_ms_p75_delta
            .filter(|d| d.is_finite() && *d >= 0.0)
            .unwrap_or(budget / 2.0)
            .min(budget);
        let kpi = commercial_kpi(source, self.context.catalog);
        let lift =
            (lift.clamp(MIN_SIZED_LIFT, validate::MAX_EXPECTED_LIFT) * 1000.0).round() / 1000.0;
        let evidence = self
            .analysis_of(source)
            .map(|a| EvidenceRef {
                experiment_id: source.id.clone(),
                finding: finding(source, a),
            })
            .into_iter()
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
            change,
            hypothesis: format!(
                "If we apply {} for {} at the {} moment, then {} will rise by {}, because {}.",
                words(&lever),
                words(&segment.name),
                words(moment.as_str()),
                words(&kpi),
                percent(lift),
                because(strategy)
            ),
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
            strategy: Some(strategy),
        })
    }

    /// transfer: a proven lever to segments (same moment) where it was never tried.
    fn transfers(&self) -> Vec<ProposedDraft> {
        let mut drafts = Vec::new();
        for source in self.context.experiments {
            let Some(analysis) = self.analysis_of(source) else {
                continue;
            };
            if analysis.outcome != Outcome::Proven {
                continue;
            }
            let (Some(lever), Some(lift)) = (&source.lever, analysis.primary.relative_lift) else {
                continue;
            };
            for segment in &self.context.catalog.segments {
                let key = TestKey::new(source.moment, lever, &segment.name);
                if self.tried.contains(&key) || self.taken.contains(&key) {
                    continue;
                }
                let title = format!(
                    "Transfer {} to {} at {}",
                    words(lever),
                    words(&segment.name),
                    words(source.moment.as_str())
                );
                let rationale = format!(
                    "{} proved {} on {} for {} ({}); it was never tried for {}. The expected lift is halved for the transfer.",
                    source.id,
                    percent(lift),
                    source.primary_kpi,
                    source.segment.as_deref().unwrap_or("its segment"),
                    analysis.primary.p_value.map(|p| format!("p = {p:.4}")).unwrap_or_default(),
                    segment.name
                );
                let change = format!(
                    "Show the {} treatment that won in {} to {} at the {} moment.",
                    words(lever),
                    source.id,
                    segment.name,
                    words(source.moment.as_str())
                );
                drafts.extend(self.draft(Sketch {
                    strategy: Strategy::Transfer,
                    source,
                    segment,
                    moment: source.moment,
                    lift: lift * TRANSFER_SHRINK,
                    title,
                    rationale,
                    change,
                    risk: Risk::Medium,
                }));
            }
        }
        drafts
    }

    /// retest: inconclusive, underpowered experiments, with the sample they need.
    fn retests(&self) -> Vec<ProposedDraft> {
        let mut drafts = Vec::new();
        let mut seen = HashSet::new();
        for source in self.context.experiments.iter().rev() {
            let Some(analysis) = self.analysis_of(source) else {
                continue;
            };
            let primary = &analysis.primary;
            let (Some(lift), Some(power), Some(required)) = (
                primary.relative_lift,
                primary.power,
                primary.required_visitors_per_arm,
            ) else {
                continue;
            };
            let per_arm = source.control().visitors;
            if analysis.outcome != Outcome::Inconclusive
                || lift <= 0.0
                || power >= RETEST_MAX_POWER
                || required <= per_arm
            {
                continue;
            }
            let key = source.test_key();
            // Only the latest test of a key counts, and a key that later proved needs no retest.
            if !seen.insert(key.clone()) || self.taken.contains(&key) || self.proven_key(&key) {
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
                "Re-test {} for {} at {} with enough traffic",
                words(source.lever.as_deref().unwrap_or("")),
                words(&segment.name),
                words(source.moment.as_str())
            );
            let rationale = format!(
                "{} saw {} but had only {:.0}% power with {} visitors per arm; detecting that lift needs {} per arm.",
                source.id,
                percent(lift),
                power * 100.0,
                per_arm,
                required
            );
            let change = format!(
                "Run the treatment of {} again for {} with at least {} visitors per arm.",
                source.id, segment.name, required
            );
            drafts.extend(self.draft(Sketch {
                strategy: Strategy::Retest,
                source,
                segment,
                moment: source.moment,
                lift,
                title,
                rationale,
                change,
                risk: Risk::Low,
            }));
        }
        drafts
    }

    fn proven_key(&self, key: &TestKey) -> bool {
        self.context.experiments.iter().any(|e| {
            &e.test_key() == key
                && self
                    .analysis_of(e)
                    .is_some_and(|a| a.outcome == Outcome::Proven)
        })
    }

    /// cover: neglected moments, with their best-evidenced lever.
    fn covers(&self) -> Vec<ProposedDraft> {
        let mut drafts = Vec::new();
        for moment in &self.context.analysis.program.neglected_moments {
            // The best evidence at this moment: proven first, then the largest lift.
            let best = self
                .context
                .experiments
                .iter()
                .filter(|e| e.moment == *moment && e.lever.is_some())
                .filter_map(|e| self.analysis_of(e).map(|a| (e, a)))
                .filter(|(_, a)| matches!(a.outcome, Outcome::Proven | Outcome::Inconclusive))
                .filter(|(_, a)| a.primary.relative_lift.is_some_and(|l| l > 0.0))
                .max_by(|(_, a), (_, b)| {
                    let score = |x: &ExperimentAnalysis| {
                        (x.outcome == Outcome::Proven) as u8 as f64 * 10.0
                            + x.primary.relative_lift.unwrap_or(0.0)
                    };
                    score(a).total_cmp(&score(b))
                });
            let Some((source, analysis)) = best else {
                continue;
            };
            let lever = source.lever.as_deref().unwrap_or("");
            // The busiest segment that never had this lever at this moment (a retest of the
            // source itself is the retest strategy's job), else the source's own segment.
            let catalog = self.context.catalog;
            let mut fresh: Vec<&Segment> = catalog
                .segments
                .iter()
                .filter(|s| {
                    let key = TestKey::new(*moment, lever, &s.name);
                    !self.tried.contains(&key)
                        && !self.taken.contains(&key)
                        && crate::governance::consent::usable_signals(&source.signals, s, catalog)
                            .is_some()
                })
                .collect();
            fresh.sort_by_key(|s| std::cmp::Reverse(s.daily_visitors));
            let segment = fresh.first().copied().or_else(|| {
                source
                    .segment
                    .as_deref()
                    .and_then(|s| catalog.segment(s))
                    .filter(|s| !self.taken.contains(&TestKey::new(*moment, lever, &s.name)))
            });
            let Some(segment) = segment else { continue };
            let lift = analysis.primary.relative_lift.unwrap_or(0.0);
            let coverage = self
                .context
                .analysis
                .program
                .moment_coverage_12m
                .get(moment.as_str())
                .copied()
                .unwrap_or(0);
            let title = format!(
                "Cover {}: {} for {}",
                words(moment.as_str()),
                words(lever),
                words(&segment.name)
            );
            let rationale = format!(
                "The {} moment had {} experiments in the last 12 months. Its best-evidenced lever is {} ({} in {}, {}).",
                words(moment.as_str()),
                coverage,
                words(lever),
                percent(lift),
                source.id,
                analysis.outcome.as_str()
            );
            let change = format!(
                "Bring the {} treatment of {} back to {} at the {} moment.",
                words(lever),
                source.id,
                segment.name,
                words(moment.as_str())
            );
            let shrink = if analysis.outcome == Outcome::Proven {
                TRANSFER_SHRINK
            } else {
                TRANSFER_SHRINK / 2.0
            };
            drafts.extend(self.draft(Sketch {
                strategy: Strategy::Cover,
                source,
                segment,
                moment: *moment,
                lift: lift * shrink,
                title,
                rationale,
                change,
                risk: Risk::Medium,
            }));
        }
        drafts
    }

    /// validate: shipped rules without a proven result, as holdback tests.
    fn validations(&self) -> Vec<ProposedDraft> {
        let mut drafts = Vec::new();
        for source in self.context.experiments {
            if source.decision != Some(Decision::Ship) {
                continue;
            }
            let Some(analysis) = self.analysis_of(source) else {
                continue;
            };
            if analysis.outcome == Outcome::Proven || self.proven_key(&source.test_key()) {
                continue;
            }
            let key = source.test_key();
            if self.taken.contains(&key) {
                continue;
            }
            let Some(segment) = source
                .segment
                .as_deref()
                .and_then(|s| self.context.catalog.segment(s))
            else {
                continue;
            };
            let lever = source.lever.as_deref().unwrap_or("the rule");
            let title = format!(
                "Validate shipped {} for {} at {} with a holdback",
                words(lever),
                words(&segment.name),
                words(source.moment.as_str())
            );
            let rationale = format!(
                "{} shipped with outcome {} ({}): nobody can prove it earns its keep. A holdback settles whether to keep it.",
                source.id,
                analysis.outcome.as_str(),
                analysis.primary.p_value.map(|p| format!("p = {p:.3}")).unwrap_or_else(|| "no p-value".into())
            );
            let change = format!(
                "Hold back the shipped {} rule from a random half of {} and compare.",
                words(lever),
                segment.name
            );
            drafts.extend(self.draft(Sketch {
                strategy: Strategy::Validate,
                source,
                segment,
                moment: source.moment,
                lift: HOLDBACK_LIFT,
                title,
                rationale,
                change,
                risk: Risk::Low,
            }));
        }
        drafts
    }
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
        let mut taken: HashSet<TestKey> = context
            .experiments
            .iter()
            .filter(|e| e.is_running())
            .map(Experiment::test_key)
            .collect();
        // A rejected idea is not proposed again: the reviewer's decision stands.
        taken.extend(
            context
                .recent_rejections
                .iter()
                .map(|(p, _)| TestKey::new(p.draft.moment, &p.draft.lever, &p.draft.segment)),
        );
        let tried = context
            .experiments
            .iter()
            .map(Experiment::test_key)
            .collect();
        let drafting = Drafting {
            context,
            taken,
            tried,
        };
        let mut candidates = drafting.transfers();
        candidates.extend(drafting.retests());
        candidates.extend(drafting.covers());
        candidates.extend(drafting.validations());

        // Rank by expected value, computed exactly as the queue will show it.
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
        let mut scored: Vec<(f64, ProposedDraft)> = candidates
            .into_iter()
            .map(|c| {
                let value = validate::enrich(&c.draft, c.strategy, &around).expected_value_per_day;
                (value, c)
            })
            .collect();
        scored.sort_by(|(a, x), (b, y)| {
            b.total_cmp(a)
                .then_with(|| x.draft.title.cmp(&y.draft.title))
        });

        let mut caps = super::Caps::of(context);
        let mut chosen_keys = HashSet::new();
        let mut drafts = Vec::new();
        for (_, candidate) in scored {
            if caps.full() {
                break;
            }
            let draft = &candidate.draft;
            let key = TestKey::new(draft.moment, &draft.lever, &draft.segment);
            if chosen_keys.contains(&key) || caps.admit(draft.moment).is_err() {
                continue;
            }
            chosen_keys.insert(key);
            drafts.push(candidate);
        }
        Ok(ProposerOutput {
            drafts,
            ..ProposerOutput::default()
        })
    }
}
