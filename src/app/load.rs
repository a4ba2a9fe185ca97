//! What several use cases read alike, loaded in one place: the analysis settings a
//! configuration and catalog imply, what a run (and `prompt render`, which must show exactly
//! what a run sends) reads from the store, the open queue, the stored proposals the history
//! names as its experiments' sources (the learning loop).

use crate::analysis::{self, AnalysisSettings};
use crate::config::Config;
use crate::domain::{Proposal, ProposalFilter, ProposalStatus, Review};
use crate::governance::Governance;
use crate::history::Experiment;
use crate::store::{QueueMark, Store, StoreError};
use chrono::{DateTime, Duration, Utc};

/// The analysis settings a configuration and catalog imply, for the day of `now`.
pub fn analysis_settings(
    config: &Config,
    governance: &Governance,
    now: DateTime<Utc>,
) -> AnalysisSettings {
    let mut settings = AnalysisSettings::new(now.date_naive());
    settings.alpha = config.analysis.alpha;
    settings.power = config.analysis.power;
    settings.min_decided_experiments = config.analysis.min_decided_experiments;
    settings.multiple_comparisons = config.analysis.multiple_comparisons;
    settings.engine = config.analysis.engine;
    settings.prior = config.analysis.prior;
    settings.sequential = config.analysis.sequential;
    settings.lower_is_better = config.analysis.lower_is_better.clone();
    settings.latency_budget_ms = governance.catalog.latency_budget_ms.clone();
    settings
}

/// The queue as a run checks its drafts against it.
pub struct QueueView {
    /// Pending, approved and blocked proposals: new drafts must not repeat them.
    pub open_proposals: Vec<Proposal>,
    /// Rejections within `analysis.rejection_lookback_days`, with their reasons.
    pub recent_rejections: Vec<(Proposal, Review)>,
    /// The queue's mark, read before the open proposals: the run's proposals are written only
    /// if nothing was queued after it.
    pub mark: QueueMark,
}

/// What a run reads from the store before it analyses anything.
pub struct Loaded {
    pub experiments: Vec<Experiment>,
    pub queue: QueueView,
}

/// The open queue, recent rejections and the queue's mark.
pub async fn load_queue(
    store: &dyn Store,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<QueueView, StoreError> {
    // The mark first: a proposal queued between the two reads makes the write retry, never
    // slip through unchecked.
    let mark = store.queue_mark().await?;
    let open_proposals = open_proposals(store).await?;
    let since = now - Duration::days(config.analysis.rejection_lookback_days as i64);
    let recent_rejections = store.recent_rejections(since).await?;
    Ok(QueueView {
        open_proposals,
        recent_rejections,
        mark,
    })
}

/// Pending, approved and blocked proposals: what a new draft must not repeat.
pub async fn open_proposals(store: &dyn Store) -> Result<Vec<Proposal>, StoreError> {
    Ok(store
        .list_proposals(&ProposalFilter::default())
        .await?
        .into_iter()
        .filter(|p| p.status.is_open() || p.status == ProposalStatus::Blocked)
        .collect())
}

/// What a run reads: the queue (first, see [`load_queue`]) and the history.
pub async fn load(
    store: &dyn Store,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Loaded, StoreError> {
    let queue = load_queue(store, config, now).await?;
    let experiments = store.load_experiments().await?;
    Ok(Loaded { experiments, queue })
}

/// The stored proposals the history's experiments name as their `source_proposal`, for the
/// learning loop (looked up in batches; an id no proposal has is reported by the analysis as an
/// unknown source).
pub async fn origins(
    store: &dyn Store,
    experiments: &[Experiment],
) -> Result<Vec<analysis::ProposalOrigin>, StoreError> {
    let ids: std::collections::BTreeSet<&str> = experiments
        .iter()
        .filter_map(|e| e.source_proposal.as_deref())
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = ids.into_iter().map(str::to_string).collect();
    let origins = store
        .get_proposals(&ids)
        .await?
        .into_iter()
        .map(|p| analysis::ProposalOrigin {
            id: p.id,
            proposer: p.provenance.proposer,
            model: p.provenance.model,
            strategy: p.enrichment.strategy,
            lever: p.draft.lever,
            moment: p.draft.moment,
            expected_lift: p.draft.expected_relative_lift,
            predicted_interval: p.enrichment.predicted_interval,
            created_at: p.created_at,
        })
        .collect();
    Ok(origins)
}
