//! The queue use cases: list, show (a proposal with the statistics of its evidence and its
//! review history), approve or reject, and export approved proposals as drafts for an
//! experimentation platform.

use super::{open_store, open_store_read_only, AppError, AppResult};
use crate::analysis::ExperimentAnalysis;
use crate::config::Config;
use crate::domain::{
    escalates, Effect, EvidenceRef, Moment, Proposal, ProposalFilter, ProposalStatus, Rendering,
    Review, ReviewAction, Role, Strategy,
};
use crate::store::StoreError;
use serde::Serialize;

/// A failed rule in a [`ProposalSummary`].
#[derive(Debug, Clone, Serialize)]
pub struct FailedRule {
    pub rule_id: String,
    pub effect: Effect,
    pub message: String,
}

/// The compact form of a proposal in `run --json`, `queue list --json` and reviews.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalSummary {
    pub id: String,
    pub status: ProposalStatus,
    pub title: String,
    pub moment: Moment,
    pub segment: String,
    pub lever: String,
    pub strategy: Option<Strategy>,
    pub priority: f64,
    pub expected_relative_lift: f64,
    pub required_visitors_per_arm: Option<u64>,
    pub expected_duration_days: Option<f64>,
    pub evidence: Vec<String>,
    pub approvals_required: u32,
    pub failed_rules: Vec<FailedRule>,
}

impl ProposalSummary {
    pub fn of(p: &Proposal) -> ProposalSummary {
        ProposalSummary {
            id: p.id.clone(),
            status: p.status,
            title: p.draft.title.clone(),
            moment: p.draft.moment,
            segment: p.draft.segment.clone(),
            lever: p.draft.lever.clone(),
            strategy: p.enrichment.strategy,
            priority: p.enrichment.priority,
            expected_relative_lift: p.draft.expected_relative_lift,
            required_visitors_per_arm: p.enrichment.required_visitors_per_arm,
            expected_duration_days: p.enrichment.expected_duration_days,
            evidence: p
                .draft
                .evidence
                .iter()
                .map(|e| e.experiment_id.clone())
                .collect(),
            approvals_required: p.approvals_required,
            failed_rules: p
                .verdicts
                .iter()
                .filter(|v| v.failed())
                .map(|v| FailedRule {
                    rule_id: v.rule_id.clone(),
                    effect: v.effect,
                    message: v.message.clone(),
                })
                .collect(),
        }
    }
}

/// `queue list`: the proposals, highest priority first. Serialised as their summaries.
#[derive(Debug, Clone)]
pub struct QueueList {
    pub proposals: Vec<Proposal>,
}

impl Serialize for QueueList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.proposals.iter().map(ProposalSummary::of))
    }
}

pub async fn list(
    config: &Config,
    status: Option<ProposalStatus>,
    moment: Option<Moment>,
) -> AppResult<QueueList> {
    let filter = ProposalFilter {
        status,
        moment,
        ..ProposalFilter::default()
    };
    let store = open_store_read_only(config).await?;
    Ok(QueueList {
        proposals: store.list_proposals(&filter).await?,
    })
}

/// One cited experiment with its statistics (`null` when it is not in the history).
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceView {
    pub experiment_id: String,
    pub finding: String,
    pub statistics: Option<ExperimentAnalysis>,
}

/// `queue show`: a proposal with its evidence's statistics and its reviews.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalView {
    pub proposal: Proposal,
    pub evidence: Vec<EvidenceView>,
    pub reviews: Vec<Review>,
}

pub async fn show(config: &Config, id: &str) -> AppResult<ProposalView> {
    let store = open_store_read_only(config).await?;
    let proposal = store
        .get_proposal(id)
        .await?
        .ok_or_else(|| AppError::input(format!("proposal {id} does not exist")))?;
    let reviews = store.proposal_reviews(id).await?;
    drop(store);
    let analysis = super::history::analyze(config).await?;
    let evidence = proposal
        .draft
        .evidence
        .iter()
        .map(|e| EvidenceView {
            experiment_id: e.experiment_id.clone(),
            finding: e.finding.clone(),
            statistics: analysis.experiment(&e.experiment_id),
        })
        .collect();
    Ok(ProposalView {
        proposal,
        evidence,
        reviews,
    })
}

/// A review request: who, in which role, does what, with which note or reason.
#[derive(Debug, Clone)]
pub struct ReviewRequest {
    pub id: String,
    pub actor: String,
    pub role: Role,
    pub action: ReviewAction,
    pub note: Option<String>,
}

/// What a review did. Serialised as the proposal's summary.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewOutcome {
    #[serde(flatten)]
    pub summary: ProposalSummary,
    #[serde(skip)]
    pub actor: String,
    #[serde(skip)]
    pub action: ReviewAction,
    /// Whether one of the approvals must come from governance.
    #[serde(skip)]
    pub escalated: bool,
}

/// Approve or reject: the domain's review rules decide, the store records.
pub async fn review(config: &Config, request: ReviewRequest) -> AppResult<ReviewOutcome> {
    let store = open_store(config).await?;
    let review = Review {
        proposal_id: request.id,
        actor: request.actor,
        role: request.role,
        action: request.action,
        note: request.note,
        at: crate::now(),
    };
    let proposal = store.review(&review).await.map_err(|e| match e {
        StoreError::Review(err) => AppError::input(err.to_string()),
        other => AppError::runtime(other.to_string()),
    })?;
    Ok(ReviewOutcome {
        summary: ProposalSummary::of(&proposal),
        actor: review.actor,
        action: review.action,
        escalated: escalates(&proposal.verdicts),
    })
}

/// One variant of an exported draft.
#[derive(Debug, Clone, Serialize)]
pub struct ExportVariant {
    pub name: &'static str,
    pub control: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

/// A proposal as a draft for an experimentation platform (`status: "draft"`).
#[derive(Debug, Clone, Serialize)]
pub struct ExportDraft {
    pub proposal_id: String,
    pub name: String,
    pub hypothesis: String,
    pub moment: Moment,
    pub lever: String,
    pub segment: String,
    pub channel: String,
    pub rendering: Rendering,
    pub primary_kpi: String,
    pub guardrail_kpis: Vec<String>,
    pub signals: Vec<String>,
    pub consent_purposes: Vec<String>,
    pub variants: [ExportVariant; 2],
    pub allocation: [u32; 2],
    pub minimum_visitors_per_arm: Option<u64>,
    pub expected_duration_days: Option<f64>,
    pub rollback_plan: String,
    pub evidence: Vec<EvidenceRef>,
    pub status: &'static str,
}

impl ExportDraft {
    pub fn of(p: &Proposal) -> ExportDraft {
        let d = &p.draft;
        ExportDraft {
            proposal_id: p.id.clone(),
            name: d.title.clone(),
            hypothesis: d.hypothesis.clone(),
            moment: d.moment,
            lever: d.lever.clone(),
            segment: d.segment.clone(),
            channel: d.channel.clone(),
            rendering: d.rendering,
            primary_kpi: d.primary_kpi.clone(),
            guardrail_kpis: d.guardrail_kpis.clone(),
            signals: d.signals.clone(),
            consent_purposes: d.consent_purposes.clone(),
            variants: [
                ExportVariant {
                    name: "control",
                    control: true,
                    change: None,
                },
                ExportVariant {
                    name: "treatment",
                    control: false,
                    change: Some(d.change.clone()),
                },
            ],
            allocation: [1, 1],
            minimum_visitors_per_arm: p.enrichment.required_visitors_per_arm,
            expected_duration_days: p.enrichment.expected_duration_days,
            rollback_plan: d.rollback_plan.clone(),
            evidence: d.evidence.clone(),
            status: "draft",
        }
    }
}

/// `export`: the proposals with `status` as drafts.
pub async fn export(config: &Config, status: ProposalStatus) -> AppResult<Vec<ExportDraft>> {
    let store = open_store_read_only(config).await?;
    let proposals = store
        .list_proposals(&ProposalFilter {
            status: Some(status),
            ..ProposalFilter::default()
        })
        .await?;
    Ok(proposals.iter().map(ExportDraft::of).collect())
}
