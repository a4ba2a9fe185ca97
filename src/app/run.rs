//! The run use case, top to bottom: load → analyse → propose → validate and enrich → govern → queue.
//! Everything a run decides is written in one transaction at the end (the run record with its
//! proposals), so a fault part-way leaves nothing half-written. A run checks its drafts against
//! the queue it read at the start; if another run (another process, another replica) queued
//! proposals meanwhile, the store refuses the write ([`StoreError::QueueChanged`]) and the run
//! assesses the same drafts again against the queue as it is now, so no idea is queued twice.

use super::load::{analysis_settings, load, load_queue, origins, Loaded, QueueView};
use super::{App, AppError, AppResult, ProposerPair};
use crate::analysis::{self, Analysis, ProposalOrigin};
use crate::config::Config;
use crate::domain::{
    Claim, Closing, Fence, Proposal, ProposalStatus, Provenance, RunRecord, RunStatus, RunSummary,
    SlotStatus, StatusChange, Trigger,
};
use crate::governance::{Assessor, Governance, GovernanceError, Governed, QueueCounts};
use crate::history::Experiment;
use crate::proposer::{ProposalContext, Proposer, ProposerOutput};
use crate::store::{QueueMark, Store, StoreError};
use crate::validate::Surroundings;
use chrono::{DateTime, Duration, Utc};
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    #[error(
        "the proposal queue changed under the run {attempts} times in a row; nothing was queued"
    )]
    QueueBusy { attempts: usize },
    /// The database could not be opened for the run.
    #[error("{0}")]
    Open(AppError),
}

/// How many times a run assesses its drafts again when the queue changed under it.
const MAX_QUEUE_ATTEMPTS: usize = 8;

/// What a run needs besides the store.
pub struct RunPlan<'a> {
    pub config: &'a Config,
    pub governance: &'a Governance,
    pub proposer: &'a dyn Proposer,
    /// Used when the configured proposer fails (`[llm] fallback = "builtin"`).
    pub fallback: Option<&'a dyn Proposer>,
    pub trigger: Trigger,
    pub now: DateTime<Utc>,
    /// The slot this run holds: its results commit only while the fence holds the lease.
    pub fence: Option<Fence>,
    /// Who syncs the `[[source]]`s first (`schedule`, `cli:USER`), or `None` for a run on the
    /// history as stored. See [`super::sync::sync_before_run`].
    pub sync_as: Option<String>,
}

impl<'a> RunPlan<'a> {
    /// A plan for a run starting now with the configured proposer (and fallback); the slot's
    /// fence is set when the slot is claimed.
    pub fn now(
        config: &'a Config,
        governance: &'a Governance,
        proposers: &'a ProposerPair,
        trigger: Trigger,
    ) -> RunPlan<'a> {
        RunPlan {
            config,
            governance,
            proposer: proposers.0.as_ref(),
            fallback: proposers.1.as_deref(),
            trigger,
            now: crate::now(),
            fence: None,
            sync_as: None,
        }
    }
}

/// How long each stage of a run took, in order.
struct Stages {
    done: Vec<(&'static str, f64)>,
    clock: std::time::Instant,
}

impl Stages {
    fn start() -> Stages {
        Stages {
            done: Vec::new(),
            clock: std::time::Instant::now(),
        }
    }

    /// Ends the stage `name` now and starts the next.
    fn lap(&mut self, name: &'static str) {
        self.done.push((name, self.clock.elapsed().as_secs_f64()));
        self.clock = std::time::Instant::now();
    }
}

/// Runs one cycle and records it. Returns the run record (also for failed runs, which are
/// recorded with their reason); `Err` only when the run could not even be recorded.
pub async fn run_once(
    store: &dyn Store,
    plan: &RunPlan<'_>,
) -> Result<(RunRecord, Vec<Proposal>), RunError> {
    let config = plan.config;
    let mut stages = Stages::start();

    // 0. Sync the history's sources, each in its own transaction: a source that fails wrote
    // nothing, and the run goes on with the stored history (and says so) or fails.
    let sources = match &plan.sync_as {
        Some(by) => {
            super::sync::sync_before_run(store, config, by)
                .instrument(tracing::info_span!("sync"))
                .await
        }
        None => super::sync::RunSources::default(),
    };

    // 1. Load (and close what has expired).
    let RunInput {
        experiments,
        queue,
        still_open,
        expiring,
        origins,
        input_digest,
    } = load_for_run(store, plan, &mut stages).await?;
    let mut record = new_record(plan, experiments.len(), input_digest);
    record.notes.extend(sources.stale);
    if let Some(reason) = sources.refused {
        record.status = RunStatus::Failed;
        record.error = Some(reason);
        return finish_early(store, plan.fence.as_ref(), record, &expiring).await;
    }

    // 2–3. Analyse and propose.
    let Some(drafted) = draft(
        plan,
        &experiments,
        origins,
        &still_open,
        &queue.recent_rejections,
        &mut record,
        &mut stages,
    )
    .await
    else {
        return finish_early(store, plan.fence.as_ref(), record, &expiring).await;
    };

    // 4–7. Validate, enrich, govern, queue.
    drafted
        .assessment(plan, &experiments, &record)
        .queue(store, &record, queue)
        .await
}

/// What a run drafted: the history's analysis and the proposer's output, with the proposer
/// that made it (the configured one, or the fallback).
struct Drafted<'p> {
    analysis: Analysis,
    output: ProposerOutput,
    used: &'p dyn Proposer,
}

impl<'p> Drafted<'p> {
    /// The drafts on their way to validation and governance.
    fn assessment<'a>(
        &'a self,
        plan: &'a RunPlan<'p>,
        experiments: &'a [Experiment],
        record: &'a RunRecord,
    ) -> Assessment<'a> {
        Assessment {
            output: &self.output,
            proposer_kind: self.used.kind(),
            client: None,
            duplicates: Duplicates::Drop,
            experiments,
            analysis: &self.analysis,
            plan,
            run_id: &record.id,
            input_digest: &record.input_digest,
        }
    }
}

/// Stages 2–3 of a run, pure but for the proposer's own calls: analyses `experiments` (the
/// learning loop links `origins`), and, when the program is ready, has the proposer (or its
/// fallback) draft against the open queue and recent rejections given. The record gains the
/// proposer, usage, counts and stage times; `None` when the run ends here (not ready, or no
/// proposer could draft), with the record saying why.
async fn draft<'p>(
    plan: &RunPlan<'p>,
    experiments: &[Experiment],
    origins: Vec<ProposalOrigin>,
    open_proposals: &[Proposal],
    recent_rejections: &[(Proposal, crate::domain::Review)],
    record: &mut RunRecord,
    stages: &mut Stages,
) -> Option<Drafted<'p>> {
    let config = plan.config;
    let analysis = analyse(plan, experiments, origins, stages);
    if !analysis.program.ready_for_proposals {
        record.status = RunStatus::NotReady;
        record.notes.push(analysis.program.readiness_reason.clone());
        return None;
    }
    let context = ProposalContext {
        experiments,
        analysis: &analysis,
        catalog: &plan.governance.catalog,
        open_proposals,
        recent_rejections,
        max_proposals: config.proposer.max_proposals,
        per_moment: config.proposer.per_moment,
        now: plan.now,
    };
    let (output, used) = propose(plan, &context, record).await?;
    stages.lap("propose");
    record.stage_seconds = stages.done.clone();
    record.proposer = used.kind().to_string();
    record.usage = output.usage.clone();
    record.summary.drafts = output.drafts.len() + output.rejected.len();
    record.summary.dropped = output.rejected.len();
    record.rejected_drafts = output.rejected.clone();
    Some(Drafted {
        analysis,
        output,
        used,
    })
}

/// A run on `experiments` exactly as a nightly run makes it — the same analysis, proposer (and
/// fallback), caps, validation, enrichment, consent and policies, through [`draft`] and
/// [`Assessment::assess`] — against an empty queue, with nothing read from or written to a
/// store: the record and the proposals (queued and blocked) it would have written, dated
/// `plan.now` (a run that fails, as a rule that cannot be evaluated fails it, has none). What
/// `hypod backtest` runs at each cutoff.
pub(crate) async fn dry_run(
    plan: &RunPlan<'_>,
    experiments: &[Experiment],
    origins: Vec<ProposalOrigin>,
) -> (RunRecord, Vec<Proposal>) {
    let mut stages = Stages::start();
    let mut record = new_record(plan, experiments.len(), String::new());
    let Some(drafted) = draft(
        plan,
        experiments,
        origins,
        &[],
        &[],
        &mut record,
        &mut stages,
    )
    .await
    else {
        return (record, Vec::new());
    };
    let mut summary = record.summary.clone();
    let assessed = drafted.assessment(plan, experiments, &record).assess(
        &[],
        &[],
        plan.now,
        &mut summary,
        &mut Vec::new(),
    );
    match assessed {
        Ok(proposals) => {
            record.summary = summary;
            (record, proposals)
        }
        // As in a run: a rule that cannot be evaluated fails it, with nothing queued.
        Err(err) => {
            record.status = RunStatus::Failed;
            record.error = Some(err.to_string());
            (record, Vec::new())
        }
    }
}

/// What a run has read before anything is analysed.
struct RunInput {
    experiments: Vec<Experiment>,
    queue: QueueView,
    /// The open proposals that stay open; `expiring` closes the others.
    still_open: Vec<Proposal>,
    expiring: Vec<StatusChange>,
    /// How hypod's earlier proposals fared (the learning loop's links).
    origins: Vec<ProposalOrigin>,
    input_digest: String,
}

/// Step 1 of a run (and of a submitted draft): load the history and the queue; proposals
/// pending too long are closed (expired) by this run, so neither proposer sees them as open.
/// What is "too long" (and the window of recent rejections) is measured by the database's
/// clock, which also stamps what the run writes: `plan.now` (HYPOD_NOW) dates the analysis
/// only, so a process clock set ahead expires nothing.
async fn load_for_run(
    store: &dyn Store,
    plan: &RunPlan<'_>,
    stages: &mut Stages,
) -> Result<RunInput, RunError> {
    let config = plan.config;
    let clock = store.database_now().await?;
    let Loaded { experiments, queue } = load(store, config, clock)
        .instrument(tracing::info_span!("load"))
        .await?;
    let (still_open, expiring) = expire(queue.open_proposals.clone(), config, clock);
    let origins = origins(store, &experiments).await?;
    stages.lap("load");
    let input_digest = input_digest(&experiments, plan.governance, &queue, &origins);
    Ok(RunInput {
        experiments,
        queue,
        still_open,
        expiring,
        origins,
        input_digest,
    })
}

/// Step 2 of a run (and of a submitted draft): the history's analysis, with the learning
/// loop's links to earlier proposals.
fn analyse(
    plan: &RunPlan<'_>,
    experiments: &[Experiment],
    origins: Vec<ProposalOrigin>,
    stages: &mut Stages,
) -> Analysis {
    let mut settings = analysis_settings(plan.config, plan.governance, plan.now);
    settings.origins = origins;
    let analysis =
        tracing::info_span!("analyse").in_scope(|| analysis::analyze(experiments, &settings));
    stages.lap("analyse");
    analysis
}

/// What becomes of a draft that repeats an open proposal: a run drops it (it is counted; the
/// idea is in the queue already), a submitted draft is recorded as blocked, with the proposal
/// it repeats as its reason, so its author sees why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Duplicates {
    Drop,
    RecordBlocked,
}

/// A draft submitted from outside a run: by an agent over MCP (`submit_draft`).
#[derive(Debug, Clone)]
pub struct Submission {
    /// The draft as sent (untrusted): read strictly, as a model's draft is.
    pub draft: serde_json::Value,
    /// The user the agent acts for.
    pub user: crate::domain::Identity,
    /// The MCP client's name (and version), from its initialize.
    pub client: Option<String>,
}

/// What became of a submitted draft: the proposal as queued (pending review) or recorded as
/// blocked, with its verdicts, and the run that recorded it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubmissionView {
    pub run_id: String,
    pub proposal: Proposal,
}

/// A submitted draft refused before governance: its problems, field by field, and the run that
/// records the attempt (nothing was queued).
fn refused_draft(problems: &[String], run_id: Option<&str>) -> AppError {
    let recorded = run_id
        .map(|id| format!(" (run {id} records it)"))
        .unwrap_or_default();
    AppError::input(format!(
        "the draft is refused, nothing was queued{recorded}: {}",
        problems.join("; ")
    ))
}

impl App {
    /// `submit_draft`: one draft through a run's path — checked as a model's draft is (its size
    /// bounded, read strictly, every cited experiment must exist, the catalog must know its
    /// segment and signals: refused otherwise, recorded as a run whose one draft was dropped,
    /// with the reasons, and nothing queued), then enriched, judged by consent rules and policies,
    /// compared with the open queue and the running tests, and recorded as a run of its own
    /// (trigger `mcp:<user>`) with its proposal pending review, or blocked with its reasons.
    pub async fn submit_draft(&self, submission: Submission) -> AppResult<SubmissionView> {
        let governance = self.governance()?;
        let user = submission.user.to_string();
        // No proposer is asked: the submitted draft is the proposal. The plan names the
        // builtin one only because a run's plan names one.
        let unused = crate::proposer::builtin::BuiltinProposer {
            alpha: self.config.analysis.alpha,
            power: self.config.analysis.power,
            min_days: self.config.proposer.min_days,
            max_days: self.config.proposer.max_days,
        };
        let plan = RunPlan {
            config: &self.config,
            governance: &governance,
            proposer: &unused,
            fallback: None,
            trigger: Trigger::Mcp(user.clone()),
            now: crate::now(),
            fence: None,
            sync_as: None,
        };
        let store = self.store().await?.clone();
        let store = store.as_ref();
        let mut stages = Stages::start();
        let RunInput {
            experiments,
            queue,
            origins,
            input_digest,
            ..
        } = load_for_run(store, &plan, &mut stages)
            .await
            .map_err(|e| AppError::runtime(e.to_string()))?;
        let analysis = analyse(&plan, &experiments, origins, &mut stages);
        if !analysis.program.ready_for_proposals {
            return Err(AppError::new(
                super::ErrorKind::Conflict,
                format!(
                    "the program is not ready for proposals: {}",
                    analysis.program.readiness_reason
                ),
            ));
        }
        // The model's drafts' check: bounded size, strict reading, every reference and range.
        let refs = crate::validate::References::new(&experiments, &governance.catalog);
        let proposer_kind = format!("mcp:{user}");
        let mut record = new_record(&plan, experiments.len(), input_digest);
        record.proposer = proposer_kind.clone();
        record.summary.drafts = 1;
        record.stage_seconds = stages.done;
        let draft = match crate::proposer::openai::response::check_item(&submission.draft, &refs) {
            Ok(draft) => draft,
            Err(problems) => {
                // Refused, but not forgotten: the attempt is a run of its own with its draft
                // dropped and the reasons, bounded (in the audit log, counted by the daily
                // cap). The agent is told the reasons even if that record cannot be written.
                let dropped =
                    crate::proposer::openai::response::rejected(&submission.draft, problems);
                record.summary.dropped = 1;
                record.rejected_drafts = vec![dropped.clone()];
                let recorded = match store.record_run(&record, &[], &[], None, None).await {
                    Ok(_) => Some(record.id.as_str()),
                    Err(e) => {
                        tracing::error!(error = %e, "a refused draft could not be recorded");
                        None
                    }
                };
                return Err(refused_draft(&dropped.reasons, recorded));
            }
        };
        let output = ProposerOutput {
            drafts: vec![crate::domain::ProposedDraft {
                draft,
                strategy: None,
            }],
            rejected: Vec::new(),
            usage: None,
            prompt_digest: None,
            input_digest: None,
        };
        let assessment = Assessment {
            output: &output,
            proposer_kind: &proposer_kind,
            client: submission.client.as_deref(),
            duplicates: Duplicates::RecordBlocked,
            experiments: &experiments,
            analysis: &analysis,
            plan: &plan,
            run_id: &record.id,
            input_digest: &record.input_digest,
        };
        let (record, proposals) = assessment
            .queue(store, &record, queue)
            .await
            .map_err(|e| AppError::runtime(e.to_string()))?;
        if record.status == RunStatus::Failed {
            return Err(AppError::runtime(format!(
                "the draft could not be assessed: {}",
                record.error.as_deref().unwrap_or("unknown error")
            )));
        }
        let proposal = proposals
            .into_iter()
            .next()
            .ok_or_else(|| AppError::runtime("the draft was assessed but nothing was recorded"))?;
        Ok(SubmissionView {
            run_id: record.id,
            proposal,
        })
    }
}

/// Everything the builtin proposer's drafts depend on: the history, the policies, what
/// reviewers rejected lately (with their reasons) and how hypod's earlier proposals fared.
fn input_digest(
    experiments: &[Experiment],
    governance: &Governance,
    queue: &QueueView,
    origins: &[ProposalOrigin],
) -> String {
    let rejected: Vec<(&str, Option<&str>)> = queue
        .recent_rejections
        .iter()
        .map(|(p, r)| (p.id.as_str(), r.note.as_deref()))
        .collect();
    let origin_ids: Vec<&str> = origins.iter().map(|o| o.id.as_str()).collect();
    crate::digest(
        &serde_json::to_vec(&(experiments, &governance.digest, &rejected, &origin_ids))
            .unwrap_or_default(),
    )
}

/// The record of a run that has analysed `experiments` and not yet proposed anything.
fn new_record(plan: &RunPlan<'_>, experiments: usize, input_digest: String) -> RunRecord {
    RunRecord {
        id: uuid::Uuid::now_v7().to_string(),
        trigger: plan.trigger.clone(),
        status: RunStatus::Succeeded,
        started_at: plan.now,
        finished_at: plan.now,
        proposer: plan.proposer.kind().to_string(),
        fell_back: None,
        error: None,
        summary: RunSummary {
            experiments,
            ..RunSummary::default()
        },
        usage: None,
        policy_digest: plan.governance.digest.clone(),
        input_digest,
        rejected_drafts: Vec::new(),
        notes: Vec::new(),
        audit_head: None,
        stage_seconds: Vec::new(),
    }
}

/// The drafts of the configured proposer, or of the fallback when it fails (noted in the
/// record); `None` when no proposer could draft, with the run marked failed and why.
async fn propose<'p>(
    plan: &RunPlan<'p>,
    context: &ProposalContext<'_>,
    record: &mut RunRecord,
) -> Option<(ProposerOutput, &'p dyn Proposer)> {
    let proposed = plan
        .proposer
        .propose(context)
        .instrument(tracing::info_span!(
            "propose",
            proposer = plan.proposer.kind()
        ))
        .await;
    let err = match proposed {
        Ok(output) => return Some((output, plan.proposer)),
        Err(err) => err,
    };
    let Some(fallback) = plan.fallback else {
        record.status = RunStatus::Failed;
        record.error = Some(err.to_string());
        return None;
    };
    tracing::warn!(error = %err, "the {} proposer failed; falling back to {}", plan.proposer.kind(), fallback.kind());
    record.fell_back = Some(err.to_string());
    match fallback.propose(context).await {
        Ok(output) => Some((output, fallback)),
        Err(second) => {
            record.status = RunStatus::Failed;
            record.error = Some(format!("{err}; the fallback failed too: {second}"));
            None
        }
    }
}

/// One run's drafts on their way to the queue: what they are checked against besides the
/// queue, which is read again whenever another run queued proposals meanwhile.
struct Assessment<'a> {
    output: &'a ProposerOutput,
    proposer_kind: &'a str,
    /// The MCP client that submitted the draft, if one did.
    client: Option<&'a str>,
    duplicates: Duplicates,
    experiments: &'a [Experiment],
    analysis: &'a Analysis,
    plan: &'a RunPlan<'a>,
    run_id: &'a str,
    input_digest: &'a str,
}

impl Assessment<'_> {
    /// Assesses the drafts against `queue` and records the run; again, against the queue as it
    /// is now, whenever another run queued proposals (or reviewed one this run meant to close)
    /// after this one read the queue.
    async fn queue(
        &self,
        store: &dyn Store,
        proposed: &RunRecord,
        mut queue: QueueView,
    ) -> Result<(RunRecord, Vec<Proposal>), RunError> {
        let config = self.plan.config;
        let fence = self.plan.fence.as_ref();
        for attempt in 1..=MAX_QUEUE_ATTEMPTS {
            let mut record = proposed.clone();
            let rejected: Vec<Proposal> = queue
                .recent_rejections
                .iter()
                .map(|(p, _)| p.clone())
                .collect();
            let assessing = std::time::Instant::now();
            let clock = store.database_now().await?;
            let (open_now, mut changes) = expire(queue.open_proposals.clone(), config, clock);
            let assessed = tracing::info_span!("validate_govern").in_scope(|| {
                self.assess(
                    &open_now,
                    &rejected,
                    clock,
                    &mut record.summary,
                    &mut changes,
                )
            });
            record.summary.expired = changes
                .iter()
                .filter(|c| c.closing == Closing::Expired)
                .count();
            record.summary.superseded = changes.len() - record.summary.expired;
            record
                .stage_seconds
                .push(("validate_govern", assessing.elapsed().as_secs_f64()));
            let proposals = match assessed {
                Ok(proposals) => proposals,
                // A rule that cannot be evaluated stops the run: recorded as failed, nothing
                // queued.
                Err(err) => {
                    record.status = RunStatus::Failed;
                    record.error = Some(err.to_string());
                    record.summary.queued = 0;
                    record.summary.blocked = 0;
                    record.summary.escalated = 0;
                    record.summary.expired = 0;
                    record.summary.superseded = 0;
                    return finish(store, fence, record, Vec::new(), &[], None).await;
                }
            };
            match finish(store, fence, record, proposals, &changes, Some(queue.mark)).await {
                Err(RunError::Store(StoreError::QueueChanged { read_at, now })) => {
                    tracing::info!(
                        attempt,
                        %read_at,
                        %now,
                        "proposals were queued while this run assessed its drafts; assessing them again"
                    );
                }
                Err(RunError::Store(StoreError::ProposalMoved { proposal_id })) => {
                    tracing::info!(
                        attempt,
                        proposal_id,
                        "a proposal this run meant to expire or supersede was reviewed meanwhile; assessing again"
                    );
                }
                done => return done,
            }
            queue = load_queue(store, config, store.database_now().await?).await?;
        }
        Err(RunError::QueueBusy {
            attempts: MAX_QUEUE_ATTEMPTS,
        })
    }

    /// Drafts → proposals with their enrichment, verdicts and status; `changes` gains the open
    /// proposals a draft on better evidence replaces.
    fn assess(
        &self,
        open_proposals: &[Proposal],
        rejected_proposals: &[Proposal],
        clock: DateTime<Utc>,
        summary: &mut RunSummary,
        changes: &mut Vec<StatusChange>,
    ) -> Result<Vec<Proposal>, RunError> {
        let plan = self.plan;
        let known: Vec<Proposal> = open_proposals
            .iter()
            .chain(rejected_proposals)
            .cloned()
            .collect();
        // The queue's counts compare stored times: the database's clock.
        let queue = QueueCounts::from_queue(&known, clock);
        let mut assessor = Assessor::new(
            plan.governance,
            &self.analysis.program,
            self.experiments,
            queue,
            plan.now,
        );
        let mut proposals: Vec<Proposal> = Vec::new();
        for proposed in &self.output.drafts {
            // The draft as it will be stored: its expected lift from the lever knowledge base.
            let mut draft = proposed.draft.clone();
            let around = Surroundings {
                experiments: self.experiments,
                analysis: self.analysis,
                catalog: &plan.governance.catalog,
                // Blocked proposals count as open, so a draft denied yesterday is not stored
                // again tonight; earlier drafts of this run count too.
                open_proposals,
                this_run: &proposals,
                rejected_proposals,
                alpha: plan.config.analysis.alpha,
                power: plan.config.analysis.power,
                min_days: plan.config.proposer.min_days,
            };
            let mut enrichment = assessor.enrich(&mut draft, proposed.strategy, &around);
            let Some(replaces) = successor_of(&draft, &mut enrichment, &around, changes) else {
                summary.duplicates += 1;
                if self.duplicates == Duplicates::RecordBlocked {
                    let blocked =
                        self.blocked_duplicate(&mut assessor, draft, enrichment, clock)?;
                    summary.blocked += 1;
                    proposals.push(blocked);
                }
                continue;
            };
            // The assessor counts what it lets through, so the governance-gap limits see what
            // this run has already queued. The proposal it would replace leaves the queue's
            // counts while it is judged: a full cap does not stop a replacement that leaves
            // the queue as full as it was.
            if let Some(old) = replaces {
                assessor.set_open(old, false);
            }
            let Governed { verdicts, decision } = assessor
                .judge(&draft, &enrichment)
                .map_err(GovernanceError::from)?;
            let id = uuid::Uuid::now_v7().to_string();
            if let Some(old) = replaces {
                // A denied draft never replaces a proposal a reviewer may still approve.
                if decision.status == ProposalStatus::Blocked {
                    assessor.set_open(old, true);
                    summary.duplicates += 1;
                    if self.duplicates == Duplicates::RecordBlocked {
                        enrichment.supersedes = None;
                        let blocked =
                            self.blocked_duplicate(&mut assessor, draft, enrichment, clock)?;
                        summary.blocked += 1;
                        proposals.push(blocked);
                    }
                    continue;
                }
                changes.push(superseding(old, &id, &draft, &enrichment));
            }
            if decision.status == ProposalStatus::Blocked {
                summary.blocked += 1;
            } else {
                summary.queued += 1;
                if decision.escalated {
                    summary.escalated += 1;
                }
            }
            proposals.push(Proposal {
                id,
                superseded_by: None,
                run_id: self.run_id.to_string(),
                status: decision.status,
                created_at: clock,
                updated_at: clock,
                draft,
                enrichment,
                provenance: self.provenance(),
                verdicts,
                approvals_required: decision.approvals_required,
            });
        }
        Ok(proposals)
    }

    /// A draft that repeats an open proposal, recorded as blocked: its own verdicts, and first
    /// the repetition (a denial naming the proposal it repeats).
    fn blocked_duplicate(
        &self,
        assessor: &mut Assessor<'_>,
        draft: crate::domain::ProposalDraft,
        enrichment: crate::domain::Enrichment,
        clock: DateTime<Utc>,
    ) -> Result<Proposal, RunError> {
        let Governed { mut verdicts, .. } = assessor
            .judge(&draft, &enrichment)
            .map_err(GovernanceError::from)?;
        let repeats = enrichment
            .duplicate_of
            .as_ref()
            .map(|d| format!("proposal {} (similarity {:.2})", d.id, d.similarity))
            .unwrap_or_else(|| "an open proposal".into());
        verdicts.insert(
            0,
            crate::domain::Verdict {
                rule_id: "duplicate-of-open-proposal".into(),
                source: crate::domain::RuleSource::Validation,
                effect: crate::domain::Effect::Deny,
                passed: false,
                message: format!(
                    "the same idea is already open as {repeats}: comment on it instead of submitting it again"
                ),
            },
        );
        let decision = crate::domain::decide(&verdicts, &self.plan.governance.approval_settings());
        Ok(Proposal {
            id: uuid::Uuid::now_v7().to_string(),
            superseded_by: None,
            run_id: self.run_id.to_string(),
            status: ProposalStatus::Blocked,
            created_at: clock,
            updated_at: clock,
            draft,
            enrichment,
            provenance: self.provenance(),
            verdicts,
            approvals_required: decision.approvals_required,
        })
    }

    /// Where a proposal of this run came from; its share of the model's tokens and cost.
    fn provenance(&self) -> Provenance {
        let output = self.output;
        let usage = output.usage.clone().unwrap_or_default();
        let drafts = output.drafts.len().max(1);
        Provenance {
            proposer: self.proposer_kind.to_string(),
            model: output.usage.as_ref().map(|u| u.model.clone()),
            prompt_digest: output.prompt_digest.clone(),
            policy_digest: self.plan.governance.digest.clone(),
            input_digest: output
                .input_digest
                .clone()
                .unwrap_or_else(|| self.input_digest.to_string()),
            prompt_tokens: usage.prompt_tokens / drafts as u64,
            completion_tokens: usage.completion_tokens / drafts as u64,
            cost: usage.cost / drafts as f64,
            client: self.client.map(str::to_string),
        }
    }
}

/// Whether a draft goes on to governance: `Some(None)` as a new idea, `Some(Some(old))` as the
/// successor of the open proposal `old` (a draft of the same idea on better evidence, which
/// replaces it), `None` as a duplicate of an open proposal.
fn successor_of<'o>(
    draft: &crate::domain::ProposalDraft,
    enrichment: &mut crate::domain::Enrichment,
    around: &Surroundings<'o>,
    changes: &[StatusChange],
) -> Option<Option<&'o Proposal>> {
    let Some(open) = enrichment
        .duplicate_of
        .as_ref()
        .filter(|d| d.kind == crate::domain::DuplicateKind::OpenProposal)
    else {
        return Some(None);
    };
    let old = around
        .open_proposals
        .iter()
        .find(|p| p.id == open.id)
        .filter(|old| {
            better_evidence(draft, enrichment, old)
                && !changes.iter().any(|c| c.proposal_id == old.id)
        })?;
    // Not a duplicate of the proposal it replaces: its successor. The nearest other match (a
    // running experiment, a rejected proposal) still goes to the policies, and another open
    // proposal still makes it a duplicate.
    let others: Vec<Proposal> = around
        .open_proposals
        .iter()
        .filter(|p| p.id != old.id)
        .cloned()
        .collect();
    let without_old = Surroundings {
        open_proposals: &others,
        ..*around
    };
    enrichment.duplicate_of = crate::validate::nearest_duplicate(draft, &without_old);
    if enrichment
        .duplicate_of
        .as_ref()
        .is_some_and(|d| d.kind == crate::domain::DuplicateKind::OpenProposal)
    {
        return None;
    }
    enrichment.supersedes = Some(old.id.clone());
    Some(Some(old))
}

/// The change that closes `old` as superseded by the new proposal `id`.
fn superseding(
    old: &Proposal,
    id: &str,
    draft: &crate::domain::ProposalDraft,
    enrichment: &crate::domain::Enrichment,
) -> StatusChange {
    StatusChange {
        proposal_id: old.id.clone(),
        closing: Closing::Superseded,
        superseded_by: Some(id.to_string()),
        reason: format!(
            "replaced by {id}: the same idea on better evidence (strength {:.2} from {} cited experiment(s), was {:.2} from {})",
            enrichment.evidence_strength,
            draft.evidence.len(),
            old.enrichment.evidence_strength,
            old.draft.evidence.len()
        ),
    }
}

/// Records a run that ends before assessing any draft (not ready, or its proposers failed):
/// nothing is queued, but what has waited too long still expires.
async fn finish_early(
    store: &dyn Store,
    fence: Option<&Fence>,
    mut record: RunRecord,
    expiring: &[StatusChange],
) -> Result<(RunRecord, Vec<Proposal>), RunError> {
    record.summary.expired = expiring.len();
    // Without a queue mark, a proposal reviewed meanwhile is simply left as it is.
    finish(store, fence, record, Vec::new(), expiring, None).await
}

/// Splits the open proposals into those that stay open and the changes that expire the ones
/// pending review for longer than `proposer.expire_pending_after_days` (0: never).
pub(crate) fn expire(
    open: Vec<Proposal>,
    config: &Config,
    now: DateTime<Utc>,
) -> (Vec<Proposal>, Vec<StatusChange>) {
    let days = config.proposer.expire_pending_after_days;
    if days == 0 {
        return (open, Vec::new());
    }
    let limit = now - Duration::days(days as i64);
    let (expired, open): (Vec<Proposal>, Vec<Proposal>) = open
        .into_iter()
        .partition(|p| p.status == ProposalStatus::PendingReview && p.created_at < limit);
    let changes = expired
        .iter()
        .map(|p| StatusChange {
            proposal_id: p.id.clone(),
            closing: Closing::Expired,
            superseded_by: None,
            reason: format!(
                "pending review since {}, more than proposer.expire_pending_after_days = {days} days",
                crate::store::timestamp(p.created_at)
            ),
        })
        .collect();
    (open, changes)
}

/// Whether a new draft of the same idea has better evidence than the open proposal `old`: an
/// evidence strength higher by at least [`BETTER_EVIDENCE_MARGIN`], or higher at all while
/// citing every experiment `old` cited and more (an extra citation that adds no strength is not
/// better evidence, so an idea cannot dodge expiry by citing one more weak test).
fn better_evidence(
    draft: &crate::domain::ProposalDraft,
    enrichment: &crate::domain::Enrichment,
    old: &Proposal,
) -> bool {
    if old.status != ProposalStatus::PendingReview {
        return false;
    }
    let (new, was) = (
        enrichment.evidence_strength,
        old.enrichment.evidence_strength,
    );
    let cited = |d: &crate::domain::ProposalDraft| -> std::collections::HashSet<String> {
        d.evidence.iter().map(|e| e.experiment_id.clone()).collect()
    };
    let (now_cited, was_cited) = (cited(draft), cited(&old.draft));
    new >= was + BETTER_EVIDENCE_MARGIN
        || (new > was && now_cited.len() > was_cited.len() && now_cited.is_superset(&was_cited))
}

/// How much stronger a new draft's evidence must be to replace an open proposal of the same idea.
const BETTER_EVIDENCE_MARGIN: f64 = 0.05;

async fn finish(
    store: &dyn Store,
    fence: Option<&Fence>,
    mut record: RunRecord,
    proposals: Vec<Proposal>,
    changes: &[StatusChange],
    read_at: Option<QueueMark>,
) -> Result<(RunRecord, Vec<Proposal>), RunError> {
    record.finished_at = Utc::now().max(record.started_at);
    let writing = std::time::Instant::now();
    let head = store
        .record_run(&record, &proposals, changes, read_at, fence)
        .instrument(tracing::info_span!("queue"))
        .await?;
    record.audit_head = Some(head);
    record
        .stage_seconds
        .push(("queue", writing.elapsed().as_secs_f64()));
    Ok((record, proposals))
}

/// Who holds a claim: host and process, for the slots table and the logs.
pub fn owner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// How a run in a slot ended, for the scheduler and the logs.
#[derive(Debug)]
pub enum SlotOutcome {
    /// This process ran the slot and committed it.
    Ran {
        record: Box<RunRecord>,
        proposals: Vec<Proposal>,
        /// The slot's previous holder had let its lease expire.
        taken_over: bool,
    },
    /// Another process holds a live lease on the slot.
    Held,
    /// The slot had ended already (run, failed or skipped).
    Ended(SlotStatus),
    /// The run exceeded `schedule.max_run_seconds`; the slot is failed with that reason.
    TimedOut,
    /// The lease was lost mid-run (paused, partitioned, or the database unreachable for a
    /// lease); nothing was committed, and another process may run the slot.
    LeaseLost,
    /// A shutdown signal arrived mid-run; the lease was released, nothing was committed.
    Interrupted,
}

impl SlotOutcome {
    pub fn describe(&self) -> String {
        match self {
            SlotOutcome::Ran {
                record, taken_over, ..
            } => format!(
                "run {} {}{}",
                record.id,
                record.status.as_str(),
                if *taken_over {
                    " (taken over from a process whose lease expired)"
                } else {
                    ""
                }
            ),
            SlotOutcome::Held => "another process holds this slot".into(),
            SlotOutcome::Ended(status) => format!("already {}", status.as_str()),
            SlotOutcome::TimedOut => "exceeded schedule.max_run_seconds; marked failed".into(),
            SlotOutcome::LeaseLost => {
                "lost its lease mid-run; nothing was written, the slot can be taken over".into()
            }
            SlotOutcome::Interrupted => {
                "interrupted by shutdown; lease released, nothing was written".into()
            }
        }
    }
}

/// Runs one cycle inside a slot: claims `key`, renews the lease every third of
/// `schedule.lease_seconds` while the run is in flight, bounds it by `schedule.max_run_seconds`,
/// and commits the results in the same transaction as the fence check. `shutdown` resolving
/// mid-run releases the lease without committing.
pub async fn run_in_slot_until(
    store: std::sync::Arc<dyn Store>,
    mut plan: RunPlan<'_>,
    key: &str,
    owner: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<SlotOutcome, RunError> {
    let lease = std::time::Duration::from_secs(plan.config.schedule.lease_seconds);
    let max_run = std::time::Duration::from_secs(plan.config.schedule.max_run_seconds);
    let (fence, taken_over) = match store.claim_slot(key, owner, lease).await? {
        Claim::Claimed(fence) => (fence, false),
        Claim::TakenOver(fence) => (fence, true),
        Claim::Held => return Ok(SlotOutcome::Held),
        Claim::Ended(status) => return Ok(SlotOutcome::Ended(status)),
    };
    plan.fence = Some(fence.clone());
    // The heartbeat is a task of its own, so that it renews the lease also while the run is
    // busy computing. It ends when the lease cannot be renewed.
    let heartbeat = tokio::spawn({
        let (store, fence) = (store.clone(), fence.clone());
        async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                match store.renew_lease(&fence, lease).await {
                    Ok(true) => {}
                    // A lease we cannot renew is a lease we must assume lost.
                    Ok(false) | Err(_) => return,
                }
            }
        }
    });
    let stop_heartbeat = heartbeat.abort_handle();
    let store = store.as_ref();
    let span = tracing::info_span!("run", slot = key, token = fence.token, taken_over);
    let outcome = tokio::select! {
        result = run_once(store, &plan).instrument(span) => match result {
            Ok((record, proposals)) => SlotOutcome::Ran { record: Box::new(record), proposals, taken_over },
            Err(RunError::Store(StoreError::LeaseLost { .. })) => SlotOutcome::LeaseLost,
            Err(error) => {
                // Not even a failed run could be recorded: end the slot with the reason, if the
                // database lets us; it stays retryable otherwise (the lease expires).
                let _ = store.end_slot(&fence, SlotStatus::Failed, &error.to_string()).await;
                stop_heartbeat.abort();
                return Err(error);
            }
        },
        _ = heartbeat => SlotOutcome::LeaseLost,
        () = tokio::time::sleep(max_run) => {
            let reason = format!("the run exceeded schedule.max_run_seconds = {}", max_run.as_secs());
            store.end_slot(&fence, SlotStatus::Failed, &reason).await?;
            SlotOutcome::TimedOut
        }
        () = shutdown => {
            store.release_slot(&fence).await?;
            SlotOutcome::Interrupted
        }
    };
    stop_heartbeat.abort();
    Ok(outcome)
}

/// One page of the runs, newest first; `next_cursor` fetches the next (absent on the last).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RunPage {
    pub items: Vec<RunRecord>,
    pub next_cursor: Option<String>,
}

/// `hypod run`: one run and its queued proposals.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RunView {
    pub run: RunRecord,
    pub proposals: Vec<super::queue::ProposalSummary>,
    /// The proposals in full, for the text table.
    #[serde(skip)]
    pub queued: Vec<Proposal>,
}

impl RunView {
    /// A failed run is a runtime failure once its record has been shown.
    pub fn outcome(&self) -> AppResult<()> {
        match self.run.status {
            RunStatus::Failed => Err(AppError::runtime(format!(
                "run {} failed: {}",
                self.run.id,
                self.run.error.as_deref().unwrap_or("unknown error")
            ))),
            _ => Ok(()),
        }
    }
}

/// A run ready to start: the policy set and the proposers as they are now (read for each run,
/// so an edit to `policies/` takes effect at the next slot without a restart).
pub struct PreparedRun {
    governance: Governance,
    proposers: ProposerPair,
}

impl App {
    /// Reads the policy set and builds the configured proposers for one run.
    pub fn prepare_run(&self) -> AppResult<PreparedRun> {
        let governance = self.governance()?;
        let proposers = self.proposers(&governance)?;
        Ok(PreparedRun {
            governance,
            proposers,
        })
    }

    /// One run in the slot `key`, claimed for `owner` (see [`run_in_slot_until`]). A
    /// scheduled run syncs the sources first (as `schedule`), others do not.
    pub async fn run_in_slot(
        &self,
        prepared: &PreparedRun,
        trigger: Trigger,
        key: &str,
        owner: &str,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<SlotOutcome, RunError> {
        let sync_as = matches!(trigger, Trigger::Schedule(_)).then(|| "schedule".to_string());
        self.run_in_slot_syncing(prepared, trigger, key, owner, shutdown, sync_as)
            .await
    }

    /// [`App::run_in_slot`], syncing the sources first as `sync_as` (if any).
    async fn run_in_slot_syncing(
        &self,
        prepared: &PreparedRun,
        trigger: Trigger,
        key: &str,
        owner: &str,
        shutdown: impl std::future::Future<Output = ()>,
        sync_as: Option<String>,
    ) -> Result<SlotOutcome, RunError> {
        let store = self.store().await.map_err(RunError::Open)?.clone();
        let mut plan = RunPlan::now(
            &self.config,
            &prepared.governance,
            &prepared.proposers,
            trigger,
        );
        plan.sync_as = sync_as;
        run_in_slot_until(store, plan, key, owner, shutdown).await
    }

    /// Ends (as failed, with the reason) the slots of `hypod run`, API and demo runs whose
    /// process died (their lease expired), logging each: such a run is never resumed by another
    /// process. Errors are logged; only opening the database can fail this.
    pub async fn end_abandoned_runs(&self) -> AppResult<()> {
        match self.store().await?.end_abandoned_slots().await {
            Ok(ended) => {
                for slot in ended {
                    tracing::warn!(
                        slot = slot.key,
                        owner = slot.owner,
                        "ended a run whose process died: {}",
                        slot.reason.as_deref().unwrap_or("abandoned")
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot end the slots of runs whose process died"),
        }
        Ok(())
    }

    /// `hypod run`, `POST /api/v1/runs`, the demo: one run now, in a slot of its own claimed
    /// like a scheduled one (same lease, same fence), on the history as stored.
    pub async fn run_now(&self, trigger: Trigger) -> AppResult<RunView> {
        self.run_now_syncing(trigger, None).await
    }

    /// [`App::run_now`], syncing the sources first as `sync_as` (`hypod run` without
    /// `--no-sync`: `cli:USER`), as a scheduled run does.
    pub async fn run_now_syncing(
        &self,
        trigger: Trigger,
        sync_as: Option<String>,
    ) -> AppResult<RunView> {
        let prepared = self.prepare_run()?;
        // Runs like this one whose process died are ended first: no daemon will run them.
        self.end_abandoned_runs().await?;
        let key = format!("{trigger}:{}", uuid::Uuid::now_v7());
        let outcome = self
            .run_in_slot_syncing(
                &prepared,
                trigger,
                &key,
                &owner_id(),
                std::future::pending(),
                sync_as,
            )
            .await?;
        let (record, proposals) = match outcome {
            SlotOutcome::Ran {
                record, proposals, ..
            } => (*record, proposals),
            other => {
                return Err(AppError::runtime(format!(
                    "run {key}: {}",
                    other.describe()
                )))
            }
        };
        Ok(RunView {
            run: record,
            proposals: proposals
                .iter()
                .map(super::queue::ProposalSummary::of)
                .collect(),
            queued: proposals,
        })
    }
}

impl App {
    /// Recent runs, newest first: at most `limit` (see [`super::queue::page_size`]).
    /// One page of the runs, newest first: `limit` as [`super::queue::page_size`] takes it,
    /// after the run `cursor` names (the previous page's `next_cursor`).
    pub async fn runs_page(
        &self,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> AppResult<RunPage> {
        let limit = super::queue::page_size(limit)?;
        let cursor = cursor.filter(|c| !c.is_empty());
        let mut items = self
            .store()
            .await?
            .list_runs_after(cursor, limit + 1)
            .await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(RunPage { items, next_cursor })
    }

    pub async fn runs(&self, limit: Option<usize>) -> AppResult<Vec<RunRecord>> {
        let limit = super::queue::page_size(limit)?;
        Ok(self.store().await?.list_runs(limit).await?)
    }

    /// One run's record.
    pub async fn run(&self, id: &str) -> AppResult<RunRecord> {
        self.store().await?.get_run(id).await?.ok_or_else(|| {
            AppError::new(
                super::ErrorKind::NotFound,
                format!("run {} does not exist", crate::domain::bounded(id)),
            )
        })
    }
}
