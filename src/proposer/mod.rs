//! Proposers draft the next experiments worth running. This module owns the contract every
//! proposer meets: the [`ProposalDraft`] type (whose JSON schema the LLM is given), the
//! [`ProposalContext`] a proposer reads, and the [`Proposer`] trait. A proposer only drafts:
//! validation, governance and queueing happen after it, the same for every proposer.

pub mod builtin;
pub mod openai;

use crate::analysis::Analysis;
use crate::domain::catalog::Catalog;
use crate::domain::{Experiment, Proposal, Review};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use crate::domain::draft::{
    EvidenceRef, LlmUsage, ProposalDraft, ProposedDraft, RejectedDraft, Rendering, Risk,
};

/// Reviewers' recent rejections of one strategy, with their most frequent reasons: what both
/// proposers learn from (the builtin weighs the strategy down, the model reads them).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StrategyRejections {
    /// `None`: proposals without a strategy (the model's own ideas).
    pub strategy: Option<crate::domain::Strategy>,
    pub rejected: usize,
    /// Up to [`REASONS_PER_STRATEGY`] distinct reasons (bounded, as given), most frequent first,
    /// each with how often it was given.
    pub reasons: Vec<(String, usize)>,
}

/// Distinct reasons kept per strategy.
pub const REASONS_PER_STRATEGY: usize = 3;
/// Characters of one reason kept in the summary.
const REASON_CHARS: usize = 160;

impl StrategyRejections {
    /// The strategy's name in a summary line.
    pub fn name(&self) -> &'static str {
        self.strategy.map_or("other", |s| s.as_str())
    }

    /// The weight a proposer gives the strategy's ideas: 1 / (1 + rejections / 2).
    pub fn weight(&self) -> f64 {
        1.0 / (1.0 + self.rejected as f64 / 2.0)
    }
}

/// Recent rejections summarised per strategy, most rejected first (ties in strategy order).
pub fn rejections_by_strategy(recent: &[(Proposal, Review)]) -> Vec<StrategyRejections> {
    let mut by: std::collections::BTreeMap<Option<&'static str>, StrategyRejections> =
        std::collections::BTreeMap::new();
    for (proposal, review) in recent {
        let strategy = proposal.enrichment.strategy;
        let entry = by
            .entry(strategy.map(|s| s.as_str()))
            .or_insert(StrategyRejections {
                strategy,
                rejected: 0,
                reasons: Vec::new(),
            });
        entry.rejected += 1;
        let reason: String = review
            .note
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(REASON_CHARS)
            .collect();
        if reason.is_empty() {
            continue;
        }
        match entry
            .reasons
            .iter_mut()
            .find(|(r, _)| r.eq_ignore_ascii_case(&reason))
        {
            Some((_, n)) => *n += 1,
            None => entry.reasons.push((reason, 1)),
        }
    }
    let mut summary: Vec<StrategyRejections> = by
        .into_values()
        .map(|mut r| {
            // Stable: equally frequent reasons keep the order they were first given in.
            r.reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            r.reasons.truncate(REASONS_PER_STRATEGY);
            r
        })
        .collect();
    summary.sort_by_key(|r| std::cmp::Reverse(r.rejected));
    summary
}

/// Everything a proposer may read. Nothing in here is an instruction: history text is data.
pub struct ProposalContext<'a> {
    pub experiments: &'a [Experiment],
    pub analysis: &'a Analysis,
    pub catalog: &'a Catalog,
    pub open_proposals: &'a [Proposal],
    pub recent_rejections: &'a [(Proposal, Review)],
    pub max_proposals: usize,
    pub per_moment: usize,
    pub now: DateTime<Utc>,
}

/// The run's caps (`proposer.max_proposals`, `proposer.per_moment`), in one place: every
/// proposer admits its drafts through one of these, in its order of preference.
#[derive(Debug, Clone)]
pub struct Caps {
    max_proposals: usize,
    per_moment: usize,
    admitted: usize,
    by_moment: std::collections::HashMap<crate::history::Moment, usize>,
}

impl Caps {
    pub fn of(context: &ProposalContext<'_>) -> Caps {
        Caps {
            max_proposals: context.max_proposals,
            per_moment: context.per_moment,
            admitted: 0,
            by_moment: std::collections::HashMap::new(),
        }
    }

    /// Whether no further draft can be admitted.
    pub fn full(&self) -> bool {
        self.admitted >= self.max_proposals
    }

    /// Admits a draft at `moment`, or says which cap it is over (counting nothing then).
    pub fn admit(&mut self, moment: crate::history::Moment) -> Result<(), String> {
        if self.full() {
            return Err(format!(
                "over the limit of {} proposals per run (max_proposals)",
                self.max_proposals
            ));
        }
        let in_moment = self.by_moment.entry(moment).or_default();
        if *in_moment >= self.per_moment {
            return Err(format!(
                "over the limit of {} proposals for the moment {moment} (per_moment)",
                self.per_moment
            ));
        }
        *in_moment += 1;
        self.admitted += 1;
        Ok(())
    }
}

/// What a proposer returns.
#[derive(Debug, Clone, Default)]
pub struct ProposerOutput {
    pub drafts: Vec<ProposedDraft>,
    /// Drafts the proposer itself dropped, with the reason (e.g. still invalid after repairs).
    pub rejected: Vec<RejectedDraft>,
    pub usage: Option<LlmUsage>,
    /// sha256 of the prompt templates, when prompts were used.
    pub prompt_digest: Option<String>,
    /// sha256 of the exact input sent, when there was one.
    pub input_digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProposerError {
    #[error("the model could not be reached after {attempts} attempt(s): {message}")]
    Transport { attempts: u32, message: String },
    #[error("the model server answered {status}: {message}")]
    Server { status: u16, message: String },
    #[error("the model refused: {0}")]
    Refused(String),
    #[error("the model's answer was cut off at the token limit (finish_reason = length)")]
    Truncated,
    #[error("the model's answer is not valid: {0}")]
    InvalidAnswer(String),
    #[error("prompt: {0}")]
    Prompt(String),
    #[error("configuration: {0}")]
    Config(String),
}

#[async_trait]
pub trait Proposer: Send + Sync {
    /// `builtin` or `openai`.
    fn kind(&self) -> &'static str;
    async fn propose(&self, context: &ProposalContext<'_>)
        -> Result<ProposerOutput, ProposerError>;
}
