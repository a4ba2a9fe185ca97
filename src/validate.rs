//! Drafts → candidates. Every draft is untrusted (a model wrote it, or a file did): this module
//! checks its references and ranges (evidence that bears on the draft, a guardrail that is not
//! the primary KPI, a rollback plan that is one), and computes what hypod adds to it: the
//! expected lift from the lever knowledge base (a proposer's own number is a claim, kept beside
//! it), baseline, required sample size, expected duration from the segment's consented traffic,
//! expected value, priority, and the nearest duplicate among running experiments, open and
//! rejected proposals.

use crate::analysis::{stats, Analysis, Outcome};
use crate::domain::catalog::Catalog;
use crate::domain::ProposalDraft;
use crate::domain::{DuplicateKind, DuplicateRef, Enrichment, Proposal};
use crate::domain::{Effect, RuleSource, Verdict};
use crate::history::{Experiment, TestKey};
use std::collections::{HashMap, HashSet};

pub const MAX_TITLE_CHARS: usize = 120;
pub const MAX_TEXT_CHARS: usize = 2_000;
pub const MAX_SHORT_CHARS: usize = 64;
pub const MAX_EVIDENCE: usize = 10;
pub const MAX_LIST: usize = 10;
/// Drafts at least this similar to something that exists are near-duplicates.
pub const DUPLICATE_THRESHOLD: f64 = 0.85;
/// The largest relative lift a draft may claim; anything above is not a credible expectation.
pub const MAX_EXPECTED_LIFT: f64 = 0.5;
pub const MAX_EXPECTED_LATENCY_MS: f64 = 5_000.0;

/// The smallest lift hypod sizes a test for (smaller ones need impractical samples); a builtin
/// idea whose expected lift is below it is not an opportunity.
pub const MIN_SIZED_LIFT: f64 = 0.01;

/// The expected lift a draft is sized for: within the sized range, to 0.1 %.
pub fn sized_lift(lift: f64) -> f64 {
    (lift.clamp(MIN_SIZED_LIFT, MAX_EXPECTED_LIFT) * 1000.0).round() / 1000.0
}

/// A claim differs from hypod's figure when they are this far apart (the 0.1 % rounding of
/// [`sized_lift`] is not a claim).
const CLAIM_TOLERANCE: f64 = 0.0005;

/// Words that, alone, say there is no rollback plan ("No rollback plan provided.", "N/A",
/// "none", "TBD"): a plan made only of these is a refusal.
const REFUSAL_WORDS: [&str; 24] = [
    "no",
    "none",
    "n",
    "a",
    "na",
    "not",
    "applicable",
    "provided",
    "given",
    "specified",
    "available",
    "needed",
    "required",
    "necessary",
    "rollback",
    "roll",
    "back",
    "plan",
    "tbd",
    "todo",
    "unknown",
    "nothing",
    "null",
    "nil",
];

/// Whether a rollback plan is empty or says there is none.
pub fn refuses_rollback(plan: &str) -> bool {
    plan.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .all(|w| REFUSAL_WORDS.contains(&w.to_lowercase().as_str()))
}

/// One thing wrong with a draft, named by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftProblem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for DraftProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What a draft may refer to.
pub struct References<'a> {
    pub experiments: HashMap<&'a str, &'a Experiment>,
    pub catalog: &'a Catalog,
}

impl<'a> References<'a> {
    pub fn new(experiments: &'a [Experiment], catalog: &'a Catalog) -> References<'a> {
        References {
            experiments: experiments.iter().map(|e| (e.id.as_str(), e)).collect(),
            catalog,
        }
    }
}

fn check_text(
    problems: &mut Vec<DraftProblem>,
    field: &str,
    text: &str,
    min_chars: usize,
    max_chars: usize,
) {
    let chars = text.chars().count();
    if text.trim().chars().count() < min_chars {
        problems.push(DraftProblem {
            field: field.into(),
            message: if min_chars <= 1 {
                "must not be empty".into()
            } else {
                format!("must be at least {min_chars} characters")
            },
        });
    } else if chars > max_chars {
        problems.push(DraftProblem {
            field: field.into(),
            message: format!("is {chars} characters long; the limit is {max_chars}"),
        });
    }
}

fn check_identifier(problems: &mut Vec<DraftProblem>, field: &str, text: &str) {
    check_text(problems, field, text, 1, MAX_SHORT_CHARS);
    if !text
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        problems.push(DraftProblem {
            field: field.into(),
            message: format!(
                "{:?} must be a lower-case identifier (a-z, 0-9, _ and -)",
                crate::shorten(text, 80)
            ),
        });
    }
}

/// Checks a draft's references and ranges. An empty list means the draft is well-formed
/// (governance still decides whether it is allowed).
pub fn check_draft(draft: &ProposalDraft, refs: &References<'_>) -> Vec<DraftProblem> {
    let mut problems = Vec::new();
    let mut problem = |field: &str, message: String| {
        problems.push(DraftProblem {
            field: field.into(),
            message,
        })
    };
    if draft.evidence.is_empty() {
        problem(
            "evidence",
            "must cite at least one experiment from the history".into(),
        );
    }
    if draft.evidence.len() > MAX_EVIDENCE {
        problem(
            "evidence",
            format!(
                "cites {} experiments; the limit is {MAX_EVIDENCE}",
                draft.evidence.len()
            ),
        );
    }
    // Past the limits (reported above) items are not checked one by one: a draft cannot make
    // its check cost more by repeating itself. The experiments that would bear on the draft
    // are looked for once, for the first citation that does not.
    let mut hint: Option<String> = None;
    for (i, evidence) in draft.evidence.iter().enumerate().take(MAX_EVIDENCE) {
        match refs.experiments.get(evidence.experiment_id.as_str()) {
            None => problem(
                &format!("evidence[{i}].experiment_id"),
                format!(
                    "experiment {:?} does not exist in the history",
                    crate::shorten(&evidence.experiment_id, 80)
                ),
            ),
            Some(cited) if !bears_on(cited, draft) => problem(
                &format!("evidence[{i}].experiment_id"),
                format!(
                    "{} tested {} for {} at {}: it bears neither on this draft's lever ({}) nor on its moment and segment ({}, {}); cite tests of the same lever, or of the same moment and segment{}",
                    crate::shorten(&cited.id, 80),
                    cited.lever.as_deref().unwrap_or("no lever"),
                    cited.segment.as_deref().unwrap_or("no segment"),
                    cited.moment,
                    crate::shorten(&draft.lever, 80),
                    draft.moment,
                    crate::shorten(&draft.segment, 80),
                    match &hint {
                        Some(_) => " (as above)".to_string(),
                        None => hint.insert(bearing_hint(draft, refs)).clone(),
                    }
                ),
            ),
            Some(_) => {}
        }
    }
    if refs.catalog.segment(&draft.segment).is_none() {
        let known: Vec<&str> = refs
            .catalog
            .segments
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        problem(
            "segment",
            format!(
                "segment {:?} is not in the catalog (known: {})",
                crate::shorten(&draft.segment, 80),
                known.join(", ")
            ),
        );
    }
    if draft.signals.len() > MAX_LIST {
        problem(
            "signals",
            format!(
                "has {} entries; the limit is {MAX_LIST}",
                draft.signals.len()
            ),
        );
    }
    for (i, signal) in draft.signals.iter().enumerate().take(MAX_LIST) {
        if refs.catalog.signal(signal).is_none() {
            problem(
                &format!("signals[{i}]"),
                format!(
                    "signal {:?} is not in the catalog",
                    crate::shorten(signal, 80)
                ),
            );
        }
    }
    if draft.consent_purposes.len() > MAX_LIST {
        problem(
            "consent_purposes",
            format!(
                "has {} entries; the limit is {MAX_LIST}",
                draft.consent_purposes.len()
            ),
        );
    }
    for (i, purpose) in draft.consent_purposes.iter().enumerate().take(MAX_LIST) {
        if refs.catalog.purpose(purpose).is_none() {
            problem(
                &format!("consent_purposes[{i}]"),
                format!(
                    "purpose {:?} is not in the catalog",
                    crate::shorten(purpose, 80)
                ),
            );
        }
    }
    for (i, kpi) in draft.guardrail_kpis.iter().enumerate() {
        if same_name(kpi, &draft.primary_kpi) {
            problem(
                &format!("guardrail_kpis[{i}]"),
                format!(
                    "{:?} is the primary KPI: a guardrail is another metric that must not regress while the primary one moves (e.g. average_order_value)",
                    crate::shorten(kpi, 80)
                ),
            );
        }
    }
    if refuses_rollback(&draft.rollback_plan) {
        problem(
            "rollback_plan",
            format!(
                "{:?} is not a rollback plan: say how the treatment is switched off (a flag, a config change, who does it)",
                crate::shorten(&draft.rollback_plan, 80)
            ),
        );
    }
    if draft.guardrail_kpis.len() > MAX_LIST {
        problem(
            "guardrail_kpis",
            format!(
                "has {} entries; the limit is {MAX_LIST}",
                draft.guardrail_kpis.len()
            ),
        );
    }
    let lift = draft.expected_relative_lift;
    if !(lift.is_finite() && lift > 0.0 && lift <= MAX_EXPECTED_LIFT) {
        problem(
            "expected_relative_lift",
            format!("{lift} is outside (0, {MAX_EXPECTED_LIFT}]: give a credible relative lift such as 0.03"),
        );
    }
    let latency = draft.expected_latency_ms;
    if !(latency.is_finite() && (0.0..=MAX_EXPECTED_LATENCY_MS).contains(&latency)) {
        problem(
            "expected_latency_ms",
            format!("{latency} is outside [0, {MAX_EXPECTED_LATENCY_MS}]"),
        );
    }
    check_text(&mut problems, "title", &draft.title, 1, MAX_TITLE_CHARS);
    check_text(
        &mut problems,
        "hypothesis",
        &draft.hypothesis,
        20,
        MAX_TEXT_CHARS,
    );
    check_text(&mut problems, "change", &draft.change, 1, MAX_TEXT_CHARS);
    check_text(
        &mut problems,
        "rationale",
        &draft.rationale,
        0,
        MAX_TEXT_CHARS,
    );
    check_text(
        &mut problems,
        "rollback_plan",
        &draft.rollback_plan,
        0,
        MAX_TEXT_CHARS,
    );
    for (i, evidence) in draft.evidence.iter().enumerate() {
        check_text(
            &mut problems,
            &format!("evidence[{i}].finding"),
            &evidence.finding,
            0,
            MAX_TEXT_CHARS,
        );
    }
    check_identifier(&mut problems, "lever", &draft.lever);
    check_identifier(&mut problems, "channel", &draft.channel);
    check_identifier(&mut problems, "primary_kpi", &draft.primary_kpi);
    for (i, kpi) in draft.guardrail_kpis.iter().enumerate() {
        check_identifier(&mut problems, &format!("guardrail_kpis[{i}]"), kpi);
    }
    problems
}

/// Two names (levers, segments, KPIs) are the same when they differ only in case and
/// surrounding spaces.
fn same_name(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// How many experiments that would bear on a draft a repair message names.
const BEARING_SHOWN: usize = 3;

/// The experiments a draft could cite instead, for the repair message: up to
/// [`BEARING_SHOWN`] that bear on it (tests of its lever first, then of its place; the latest
/// first), or a note that none does. Only asked when a cited experiment does not bear on it.
fn bearing_hint(draft: &ProposalDraft, refs: &References<'_>) -> String {
    let cited: HashSet<&str> = draft
        .evidence
        .iter()
        .map(|e| e.experiment_id.as_str())
        .collect();
    let mut bearing: Vec<&Experiment> = refs
        .experiments
        .values()
        .copied()
        .filter(|e| !cited.contains(e.id.as_str()) && bears_on(e, draft))
        .collect();
    if bearing.is_empty() {
        return " (no other test in the history does: choose a lever or a place that was tested)"
            .into();
    }
    let same_lever = |e: &Experiment| {
        e.lever
            .as_deref()
            .is_some_and(|l| same_name(l, &draft.lever))
    };
    let order = |a: &&Experiment, b: &&Experiment| {
        same_lever(b)
            .cmp(&same_lever(a))
            .then(b.started_at.cmp(&a.started_at))
            .then(a.id.cmp(&b.id))
    };
    // The first few in order, without sorting all of them.
    if bearing.len() > BEARING_SHOWN {
        bearing.select_nth_unstable_by(BEARING_SHOWN - 1, order);
        bearing[..BEARING_SHOWN].sort_by(order);
    } else {
        bearing.sort_by(order);
    }
    let total = bearing.len();
    let ids: Vec<String> = bearing
        .iter()
        .take(BEARING_SHOWN)
        .map(|e| crate::shorten(&e.id, 80))
        .collect();
    format!(
        " (such as {}{})",
        ids.join(", "),
        if total > BEARING_SHOWN {
            format!(", of {total}")
        } else {
            String::new()
        }
    )
}

/// Whether a cited experiment bears on a draft: it tested the same lever (at any moment, for any
/// segment), or the same moment for the same segment (with any lever).
pub fn bears_on(cited: &Experiment, draft: &ProposalDraft) -> bool {
    let same_lever = cited
        .lever
        .as_deref()
        .is_some_and(|l| same_name(l, &draft.lever));
    let same_place = cited.moment == draft.moment
        && cited
            .segment
            .as_deref()
            .is_some_and(|s| same_name(s, &draft.segment));
    same_lever || same_place
}

/// Validation problems as deny verdicts, so an invalid draft is kept as `blocked` with reasons.
pub fn problems_as_verdicts(problems: &[DraftProblem]) -> Vec<Verdict> {
    problems
        .iter()
        .map(|p| Verdict {
            rule_id: format!("validate.{}", p.field),
            source: RuleSource::Validation,
            effect: Effect::Deny,
            passed: false,
            message: p.to_string(),
        })
        .collect()
}

/// The rule id of the warning a claimed lift outside the predicted interval gets.
pub const CLAIM_RULE_ID: &str = "validate.claimed_lift";

/// A warning verdict when the enrichment found the proposer's claimed lift outside the
/// predicted interval (queued as usual; reviewers see why the figures differ from the text).
pub fn claim_verdict(enrichment: &Enrichment) -> Option<Verdict> {
    enrichment.claim_warning.as_ref().map(|warning| Verdict {
        rule_id: CLAIM_RULE_ID.into(),
        source: RuleSource::Validation,
        effect: Effect::Warn,
        passed: false,
        message: warning.clone(),
    })
}

/// Words of a text, lower-cased, for similarity.
fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_lowercase)
        .collect()
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let shared = a.intersection(b).count() as f64;
    shared / a.union(b).count() as f64
}

/// Share of the smaller set's words found in the other (the overlap coefficient): a lever name
/// that only qualifies another (`alternatives_carousel_v2`) counts as the same lever.
fn containment(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    a.intersection(b).count() as f64 / a.len().min(b.len()) as f64
}

/// Similarity of two tests in 0..=1. A duplicate must be in the same place: 1 when both test
/// the same lever for the same segment at the same moment; for the same segment and moment
/// under another lever name, 0.55 + 0.45 × c × (0.5 + 0.5 × j), where c is the lever names'
/// word containment and j the texts' word overlap (Jaccard). The lever names must share words,
/// so a qualified or reordered lever name is caught while templated text about another lever is
/// not; anywhere else at most 0.5, never a duplicate.
pub fn similarity(a_key: &TestKey, a_text: &str, b_key: &TestKey, b_text: &str) -> f64 {
    if a_key == b_key {
        return 1.0;
    }
    let text_overlap = jaccard(&words(a_text), &words(b_text));
    if a_key.moment == b_key.moment && a_key.segment == b_key.segment {
        let lever_overlap = containment(&words(&a_key.lever), &words(&b_key.lever));
        0.55 + 0.45 * lever_overlap * (0.5 + 0.5 * text_overlap)
    } else {
        0.5 * text_overlap
    }
}

/// Everything [`enrich`] compares a draft with.
pub struct Surroundings<'a> {
    pub experiments: &'a [Experiment],
    pub analysis: &'a Analysis,
    pub catalog: &'a Catalog,
    pub open_proposals: &'a [Proposal],
    /// Proposals already made earlier in the same run.
    pub this_run: &'a [Proposal],
    pub rejected_proposals: &'a [Proposal],
    pub alpha: f64,
    pub power: f64,
    /// `proposer.min_days`: the shortest test, in whole weeks (see [`test_duration`]).
    pub min_days: u32,
}

fn draft_key(draft: &ProposalDraft) -> TestKey {
    TestKey::new(draft.moment, &draft.lever, &draft.segment)
}

/// The nearest existing test or proposal, if it is a near-duplicate.
pub fn nearest_duplicate(draft: &ProposalDraft, around: &Surroundings<'_>) -> Option<DuplicateRef> {
    let key = draft_key(draft);
    let text = format!("{} {}", draft.title, draft.hypothesis);
    let mut best: Option<DuplicateRef> = None;
    let mut consider = |kind: DuplicateKind, id: &str, similarity: f64| {
        if similarity >= DUPLICATE_THRESHOLD
            && best.as_ref().is_none_or(|b| similarity > b.similarity)
        {
            best = Some(DuplicateRef {
                kind,
                id: id.into(),
                similarity: (similarity * 1000.0).round() / 1000.0,
            });
        }
    };
    for experiment in around.experiments.iter().filter(|e| e.is_running()) {
        let other = format!(
            "{} {}",
            experiment.name,
            experiment.hypothesis.as_deref().unwrap_or("")
        );
        consider(
            DuplicateKind::RunningExperiment,
            &experiment.id,
            similarity(&key, &text, &experiment.test_key(), &other),
        );
    }
    let open = around.open_proposals.iter().chain(around.this_run);
    let rejected = around.rejected_proposals.iter();
    for (kind, proposals) in [
        (DuplicateKind::OpenProposal, open.collect::<Vec<_>>()),
        (DuplicateKind::RejectedProposal, rejected.collect()),
    ] {
        for proposal in proposals {
            let other = format!("{} {}", proposal.draft.title, proposal.draft.hypothesis);
            consider(
                kind,
                &proposal.id,
                similarity(&key, &text, &draft_key(&proposal.draft), &other),
            );
        }
    }
    best
}

/// The default of `proposer.max_days`: no limit. Every idea competes for the portfolio's places
/// whatever its length, and the stage gate's `experiment-length` rule warns beyond six weeks;
/// on realistic histories holdbacks and neglected moments often need months (see
/// docs/configuration.md), and a team decides whether it wants them.
pub const DEFAULT_MAX_DAYS: u32 = 0;

/// The default of `proposer.min_days`: a test runs at least one full week.
pub const DEFAULT_MIN_DAYS: u32 = 7;

/// The sample a test of `lift` at a place needs, and the baseline it is computed from.
#[derive(Debug, Clone)]
pub struct SampleSize {
    /// The control totals the baseline comes from.
    pub totals: crate::analysis::ControlTotals,
    pub baseline_rate: Option<f64>,
    /// Where the baseline comes from (which experiments).
    pub baseline_source: String,
    /// Visitors per arm; `None` without a baseline, an error when the pair is not computable.
    pub required_visitors_per_arm: Option<Result<u64, String>>,
}

/// The one sample-size computation: visitors per arm to detect a relative `lift` of the
/// conversion rate at `moment` for `segment`, from the controls of the concluded tests of that
/// place (else of the moment, else of every test). The enrichment a proposal shows under size
/// and every figure a proposer writes into its text come from here, so they agree.
pub fn sample_size(
    analysis: &Analysis,
    moment: crate::history::Moment,
    segment: &str,
    lift: f64,
    alpha: f64,
    power: f64,
) -> SampleSize {
    let baselines = analysis.baselines();
    let (totals, baseline_source) = if let Some(place) = baselines.place(moment, segment) {
        (
            *place,
            format!("controls of concluded {moment} tests for {segment}"),
        )
    } else if let Some(at) = baselines.moment(moment) {
        (*at, format!("controls of concluded {moment} tests"))
    } else {
        (
            *baselines.all(),
            "controls of all concluded tests".to_string(),
        )
    };
    let baseline_rate = (totals.visitors > 0 && totals.conversions > 0)
        .then(|| totals.conversions as f64 / totals.visitors as f64);
    SampleSize {
        totals,
        baseline_rate,
        baseline_source,
        required_visitors_per_arm: baseline_rate
            .map(|b| stats::sample_size_proportion(b, lift, alpha, power)),
    }
}

/// How long a test runs: the days its consented traffic needs to fill both arms, and the
/// duration it is given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Duration {
    /// Days to reach the sample: ⌈2 × visitors per arm ÷ consented daily visitors⌉.
    pub reach_days: f64,
    /// Expected duration: with `min_days` > 0, the reach rounded up to whole weeks (a multiple
    /// of 7 days) and never below `min_days`, so a test reads every weekday as often as the
    /// others; with `min_days` = 0, the reach itself.
    pub days: f64,
}

/// [`Duration`] of a test needing `per_arm` visitors per arm with `consented_daily` consented
/// visitors a day (at least 1).
pub fn test_duration(per_arm: u64, consented_daily: f64, min_days: u32) -> Duration {
    let reach_days = (2.0 * per_arm as f64 / consented_daily.max(1.0)).ceil();
    let days = if min_days == 0 {
        reach_days
    } else {
        ((reach_days / 7.0).ceil() * 7.0).max(f64::from(min_days))
    };
    Duration { reach_days, days }
}

/// The lift hypod sizes, values and ranks a draft for, from the lever knowledge base, with what
/// the proposer claimed beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grounded {
    /// The lever's expected lift at the draft's moment, as the builtin proposer computes it
    /// ([`crate::analysis::levers::LeverBase::expected_lift`], or the moment's pool for a lever
    /// never tested), within the sized range; the claim itself only when the history has no
    /// valid test at all.
    pub lift: f64,
    /// The proposer's number, when it differs from `lift`.
    pub claimed: Option<f64>,
    /// Said when the pool expects less than the smallest lift a test is sized for.
    pub note: Option<String>,
    /// The pool `lift` comes from (`None`: the history has no valid test).
    expected: Option<crate::analysis::levers::Expectation>,
}

/// What a draft's test is predicted to measure, once its size is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The 95 % interval the next test's measured lift is predicted within, around the lift.
    pub interval: Option<[f64; 2]>,
    /// Said when the claim lies outside `interval`.
    pub warning: Option<String>,
}

/// [`Grounded`] for a draft: the figures come from the pool for its lever at its moment, never
/// from the number the proposer wrote.
pub fn grounded_lift(draft: &ProposalDraft, analysis: &Analysis) -> Grounded {
    let claim = draft.expected_relative_lift;
    let Some(expected) = analysis
        .levers
        .expected_lift_or_prior(&draft.lever, draft.moment)
    else {
        return Grounded {
            lift: claim,
            claimed: None,
            note: Some("no valid concluded test in the history: the proposer's expected lift is used as it is".into()),
            expected: None,
        };
    };
    let lift = sized_lift(expected.lift);
    let claimed = (claim.is_finite() && (claim - lift).abs() >= CLAIM_TOLERANCE).then_some(claim);
    let note = (expected.lift < MIN_SIZED_LIFT).then(|| {
        format!(
            "the lever's pool expects {} here ({}); the test is sized for the smallest lift hypod sizes for, {}",
            pct(expected.lift),
            expected.basis,
            pct(MIN_SIZED_LIFT)
        )
    });
    Grounded {
        lift,
        claimed,
        note,
        expected: Some(expected),
    }
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

impl Grounded {
    /// The interval the draft's test will measure its lift within — the pool's spread with the
    /// test's own sampling variance at its planned size (`next_variance`, from
    /// [`crate::analysis::levers::next_test_variance`]; `None`: unknown, left out) — and the
    /// warning when the claim lies outside that same interval.
    pub fn predict(&self, draft: &ProposalDraft, next_variance: Option<f64>) -> Prediction {
        let Some(expected) = &self.expected else {
            return Prediction {
                interval: None,
                warning: None,
            };
        };
        let interval = expected.interval(self.lift, next_variance);
        let warning = match (self.claimed, interval) {
            (Some(c), Some([low, high])) if c < low || c > high => Some(format!(
                "the proposer claimed {}, outside the 95% interval predicted for {} at {} ({} to {}; {}): hypod sizes, values and ranks it for {}",
                pct(c),
                draft.lever,
                draft.moment,
                pct(low),
                pct(high),
                expected.basis,
                pct(self.lift)
            )),
            _ => None,
        };
        Prediction { interval, warning }
    }
}

/// Computes what hypod adds to a well-formed draft.
pub fn enrich(
    draft: &ProposalDraft,
    strategy: Option<crate::domain::Strategy>,
    around: &Surroundings<'_>,
) -> Enrichment {
    Enrichment {
        duplicate_of: nearest_duplicate(draft, around),
        ..enrich_without_duplicates(draft, strategy, around)
    }
}

/// [`enrich`] without the search for a near-duplicate: what a proposer ranks its candidates by
/// (constant time per draft, whatever the size of the history).
pub fn enrich_without_duplicates(
    draft: &ProposalDraft,
    strategy: Option<crate::domain::Strategy>,
    around: &Surroundings<'_>,
) -> Enrichment {
    let mut notes = Vec::new();
    let grounded = grounded_lift(draft, around.analysis);
    notes.extend(grounded.note.clone());
    let lift = grounded.lift;
    let sample = sample_size(
        around.analysis,
        draft.moment,
        &draft.segment,
        lift,
        around.alpha,
        around.power,
    );
    let (revenue, orders) = (sample.totals.revenue, sample.totals.orders);
    let baseline_rate = sample.baseline_rate;
    let baseline_source = sample.baseline_source;
    if baseline_rate.is_none() {
        notes.push("no baseline: no concluded experiment with conversions to start from".into());
    }
    let value_per_conversion = if orders > 0 && revenue > 0.0 {
        revenue / orders as f64
    } else {
        around.catalog.default_conversion_value
    };
    let required_visitors_per_arm = match sample.required_visitors_per_arm {
        Some(Ok(n)) => Some(n),
        Some(Err(reason)) => {
            notes.push(format!("required sample size: {reason}"));
            None
        }
        None => None,
    };
    let segment = around.catalog.segment(&draft.segment);
    let segment_daily_visitors = segment.map(|s| s.daily_visitors);
    let consented_share = segment.map(|s| around.catalog.consented_share(s, &draft.signals));
    let consented_daily = match (segment_daily_visitors, consented_share) {
        (Some(daily), Some(share)) => daily as f64 * share,
        _ => 0.0,
    };
    let (days_to_reach_sample, expected_duration_days) = match required_visitors_per_arm {
        Some(n) if consented_daily >= 1.0 => {
            let duration = test_duration(n, consented_daily, around.min_days);
            (Some(duration.reach_days), Some(duration.days))
        }
        Some(_) => {
            notes.push(
                "no expected duration: the segment has no consented traffic for these signals"
                    .into(),
            );
            (None, None)
        }
        None => (None, None),
    };
    let evidence_strength = evidence_strength(draft, around.analysis);
    let expected_value_per_day = consented_daily
        * baseline_rate.unwrap_or(0.0)
        * if lift.is_finite() { lift.max(0.0) } else { 0.0 }
        * value_per_conversion
        * evidence_strength;
    let next_variance = baseline_rate
        .zip(required_visitors_per_arm)
        .and_then(|(b, n)| crate::analysis::levers::next_test_variance(b, lift, n));
    let prediction = grounded.predict(draft, next_variance);
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    Enrichment {
        baseline_rate,
        baseline_source,
        required_visitors_per_arm,
        segment_daily_visitors,
        consented_share,
        expected_duration_days,
        days_to_reach_sample,
        value_per_conversion: round2(value_per_conversion),
        evidence_strength: round2(evidence_strength),
        expected_value_per_day: round2(expected_value_per_day),
        priority: round2(expected_value_per_day),
        duplicate_of: None,
        strategy,
        notes,
        predicted_interval: prediction.interval,
        claimed_lift: grounded.claimed,
        claim_warning: prediction.warning,
        supersedes: None,
    }
}

/// How strongly the cited experiments support the draft, in 0..=1: a proven result counts
/// fully, an inconclusive one half, a disproven one little, an invalid or running one barely.
pub fn evidence_strength(draft: &ProposalDraft, analysis: &Analysis) -> f64 {
    let scores: Vec<f64> = draft
        .evidence
        .iter()
        .filter_map(|e| analysis.experiment(&e.experiment_id))
        .map(|a| match a.outcome {
            Outcome::Proven => 1.0,
            Outcome::Inconclusive => 0.5,
            Outcome::Disproven => 0.2,
            Outcome::Invalid | Outcome::Running | Outcome::NotComputable => 0.1,
        })
        .collect();
    if scores.is_empty() {
        0.0
    } else {
        scores.iter().cloned().fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Moment;

    #[test]
    fn a_duration_is_whole_weeks_never_below_the_minimum() {
        // 6873 per arm over 42 000 consented visitors a day: 1 day, run for a week.
        let short = test_duration(6873, 42_000.0, 7);
        assert_eq!((short.reach_days, short.days), (1.0, 7.0));
        assert_eq!(test_duration(70_000, 10_000.0, 7).days, 14.0); // 14 days exactly
        assert_eq!(test_duration(70_001, 10_000.0, 7).days, 21.0); // 15 days → 3 weeks
        assert_eq!(test_duration(6873, 42_000.0, 14).days, 14.0);
        // 0 turns the minimum and the rounding off.
        assert_eq!(test_duration(70_001, 10_000.0, 0).days, 15.0);
    }

    fn key(moment: Moment, lever: &str, segment: &str) -> TestKey {
        TestKey::new(moment, lever, segment)
    }

    #[test]
    fn same_lever_segment_and_moment_is_a_duplicate() {
        let a = key(Moment::Search, "Ranking_By_Affinity", "vip");
        let b = key(Moment::Search, "ranking_by_affinity", " vip ");
        assert_eq!(similarity(&a, "x", &b, "y"), 1.0);
    }

    #[test]
    fn a_renamed_idea_in_the_same_place_is_a_duplicate() {
        let a = key(Moment::Search, "affinity_ranking", "vip");
        let b = key(Moment::Search, "ranking_by_affinity", "vip");
        let text = "Rank search results by the visitor's category affinity for loyal customers";
        assert!(similarity(&a, text, &b, text) >= DUPLICATE_THRESHOLD);
        let other = "Show a free shipping threshold banner on empty search results";
        assert!(similarity(&a, text, &b, other) < DUPLICATE_THRESHOLD);
        let templated = "If we apply the lever for vip at the search moment, conversion will rise";
        let c = key(Moment::Search, "payment_options", "vip");
        assert!(similarity(&a, templated, &c, templated) < DUPLICATE_THRESHOLD);
    }

    #[test]
    fn a_qualified_lever_name_for_a_running_test_is_a_duplicate() {
        // Seen with a real 1.5B model: a draft for the running exp-2026-0245 under a longer name.
        let running = key(
            Moment::ProductDetail,
            "alternatives_carousel",
            "eu_visitors",
        );
        let running_text = "Alternatives carousel for eu visitors at product detail If we apply alternatives carousel for eu visitors at the product detail moment, conversion rate will rise.";
        let draft = key(
            Moment::ProductDetail,
            "alternatives_carousel_experiment",
            "eu_visitors",
        );
        let draft_text = "Alternatives Carousel Experiment for EU Visitors at Product Detail If we show an alternatives carousel to eu visitors on product pages, conversion rate will rise by 3%.";
        assert!(similarity(&draft, draft_text, &running, running_text) >= DUPLICATE_THRESHOLD);
        // Two different levers that share one word, in the builtin proposer's template, are not.
        let text = |lever: &str| {
            format!("Transfer {lever} to us visitors at cart checkout If we apply {lever} for us visitors at the cart checkout moment, then conversion rate will rise")
        };
        let nudge = key(Moment::CartCheckout, "free_shipping_nudge", "us_visitors");
        let estimate = key(Moment::CartCheckout, "shipping_estimate", "us_visitors");
        assert!(
            similarity(
                &nudge,
                &text("free shipping nudge"),
                &estimate,
                &text("shipping estimate")
            ) < DUPLICATE_THRESHOLD
        );
    }

    #[test]
    fn the_same_template_elsewhere_is_not_a_duplicate() {
        let text = "If we apply delivery promise for new visitors at the product detail moment";
        let a = key(Moment::ProductDetail, "delivery_promise", "new_visitors");
        let b = key(Moment::ProductDetail, "delivery_promise", "eu_visitors");
        assert!(similarity(&a, text, &b, text) < DUPLICATE_THRESHOLD);
    }
}
