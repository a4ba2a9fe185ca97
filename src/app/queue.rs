//! The queue use cases: list (whole, or one page at a time for the API and the web UI), show (a
//! proposal with the statistics of its evidence and its review history), approve, reject or
//! comment, and export approved proposals as drafts for an experimentation platform. The
//! listing's pages and counts are kept while the audit log's head stays put ([`super::cache`]).

use super::access::{Permission, Principal};
use super::cache::{ListingMark, PageKey};
use super::{App, AppError, AppResult, ErrorKind};
use crate::analysis::ExperimentAnalysis;
use crate::domain::{
    escalates, ApprovalProgress, Approver, Effect, EvidenceRef, Moment, PageCursor, Proposal,
    ProposalFilter, ProposalStatus, QueueOrder, Rendering, Review, ReviewAction, ReviewError,
    Strategy,
};
use crate::store::{AuditProblem, Store, StoreError};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// A failed rule in a [`ProposalSummary`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailedRule {
    pub rule_id: String,
    pub effect: Effect,
    pub message: String,
}

/// The compact form of a proposal in `run --json`, `queue list --json` and reviews.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProposalSummary {
    pub id: String,
    pub status: ProposalStatus,
    pub title: String,
    pub moment: Moment,
    pub segment: String,
    pub lever: String,
    pub strategy: Option<Strategy>,
    pub priority: f64,
    /// The lever knowledge base's expected lift for the lever at the moment.
    pub expected_relative_lift: f64,
    /// The proposer's own number, when it differed from `expected_relative_lift` (a claim).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_lift: Option<f64>,
    pub required_visitors_per_arm: Option<u64>,
    pub expected_duration_days: Option<f64>,
    pub evidence: Vec<String>,
    pub approvals_required: u32,
    pub failed_rules: Vec<FailedRule>,
    /// When the run that proposed it recorded it (its age, and its expiry under
    /// `proposer.expire_pending_after_days`, count from here). Not serialised: the listings'
    /// JSON is unchanged; `queue show` has it.
    #[serde(skip)]
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Its approval progress ([`ApprovalProgress`]) in a listing (the API's pages, `queue
    /// list --json`, the web UI's queue) and in a review's answer; absent where a summary
    /// stands alone (`run --json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalProgress>,
    /// The same in words: "1 of 2 approvals, waiting for governance".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
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
            claimed_lift: p.enrichment.claimed_lift,
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
            created_at: p.created_at,
            approvals: None,
            progress: None,
        }
    }

    /// The summary with its approval progress, from the proposal's approvals (oldest first).
    pub fn with_approvals(p: &Proposal, approvals: Vec<Approver>) -> ProposalSummary {
        let progress = ApprovalProgress::from_approvals(
            p.status,
            p.approvals_required,
            escalates(&p.verdicts),
            approvals,
        );
        ProposalSummary {
            progress: Some(progress.describe()),
            approvals: Some(progress),
            ..ProposalSummary::of(p)
        }
    }
}

/// The approvals of `proposals`, read in one batched query, each proposal's oldest first.
async fn approvals_by_proposal(
    store: &dyn crate::store::Store,
    proposals: &[Proposal],
) -> AppResult<HashMap<String, Vec<Approver>>> {
    let ids: Vec<String> = proposals.iter().map(|p| p.id.clone()).collect();
    let mut by_id: HashMap<String, Vec<Approver>> = HashMap::new();
    for (id, approver) in store.approvals_of(&ids).await? {
        by_id.entry(id).or_default().push(approver);
    }
    Ok(by_id)
}

/// The summaries of `proposals`, each with its approval progress.
fn summaries(
    proposals: &[Proposal],
    mut approvals: HashMap<String, Vec<Approver>>,
) -> Vec<ProposalSummary> {
    proposals
        .iter()
        .map(|p| ProposalSummary::with_approvals(p, approvals.remove(&p.id).unwrap_or_default()))
        .collect()
}

/// `queue list`: the proposals, highest priority first, each with its approval progress.
/// Serialised as their summaries.
#[derive(Debug, Clone)]
pub struct QueueList {
    pub proposals: Vec<Proposal>,
    /// Each proposal's summary with its approval progress, in the same order.
    pub summaries: Vec<ProposalSummary>,
}

impl Serialize for QueueList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.summaries.iter())
    }
}

/// The most items one page of a listing holds.
pub const MAX_PAGE: usize = 200;
/// The items of a page when the caller names no size.
pub const DEFAULT_PAGE: usize = 50;

/// The size of a page: `limit`, or [`DEFAULT_PAGE`]; between 1 and [`MAX_PAGE`].
pub fn page_size(limit: Option<usize>) -> AppResult<usize> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        0 => Err(AppError::input("query `limit` must be at least 1")),
        n if n > MAX_PAGE => Err(AppError::input(format!(
            "query `limit` must be at most {MAX_PAGE}"
        ))),
        n => Ok(n),
    }
}

/// One page of the queue as the API and the web UI ask for it: the filters, the page's size
/// and the cursor the previous page ended with.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub status: Option<ProposalStatus>,
    pub moment: Option<Moment>,
    pub segment: Option<String>,
    pub run: Option<String>,
    /// Words that must appear in the title or hypothesis (case-insensitive).
    pub text: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    /// The order (highest priority first unless said).
    pub order: QueueOrder,
}

/// One page of a listing; `next_cursor` fetches the next (absent on the last page).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProposalPage {
    pub items: Vec<ProposalSummary>,
    pub next_cursor: Option<String>,
}

/// A filter's text: at most `max` characters, no control character; blank is no filter.
fn bounded(what: &str, value: Option<String>, max: usize) -> AppResult<Option<String>> {
    match value {
        Some(v) if v.chars().count() > max => Err(AppError::input(format!(
            "query `{what}` is longer than {max} characters"
        ))),
        Some(v) if v.chars().any(char::is_control) => Err(AppError::input(format!(
            "query `{what}` contains a control character"
        ))),
        Some(v) if v.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

impl App {
    /// `queue list`: the proposals with `status` and `moment` (any when `None`), highest
    /// priority first.
    pub async fn list(
        &self,
        status: Option<ProposalStatus>,
        moment: Option<Moment>,
    ) -> AppResult<QueueList> {
        let filter = ProposalFilter {
            status,
            moment,
            ..ProposalFilter::default()
        };
        let store = self.store().await?;
        let proposals = store.list_proposals(&filter).await?;
        let approvals = approvals_by_proposal(store.as_ref(), &proposals).await?;
        Ok(QueueList {
            summaries: summaries(&proposals, approvals),
            proposals,
        })
    }

    /// One page of the queue (keyset pagination, highest priority first): the one listing
    /// the API and the web UI share. A cursor hypod did not give is refused, never ignored.
    /// Answered from the pages kept at the audit log's current head when it was asked before
    /// ([`super::cache::Listings`]): any review, run or expiry since, by any process, makes it
    /// read the database again.
    pub async fn queue_page(&self, request: PageRequest) -> AppResult<ProposalPage> {
        let limit = page_size(request.limit)?;
        let after = match request.cursor.as_deref().filter(|c| !c.is_empty()) {
            Some(text) => Some(
                PageCursor::decode(text)
                    .filter(|c| c.fits(request.order))
                    .ok_or_else(|| {
                        AppError::input(
                            "query `cursor` is not a cursor hypod gave for this order: start again from the first page",
                        )
                    })?,
            ),
            None => None,
        };
        let filter = ProposalFilter {
            status: request.status,
            moment: request.moment,
            segment: bounded("segment", request.segment, 200)?,
            run_id: bounded("run", request.run, 64)?,
            text: bounded("q", request.text, 200)?,
            order: request.order,
            after,
            limit: Some(limit + 1),
        };
        let key = PageKey {
            status: filter.status.map(ProposalStatus::as_str),
            moment: filter.moment.map(Moment::as_str),
            segment: filter.segment.clone(),
            run: filter.run_id.clone(),
            text: filter.text.clone(),
            limit,
            cursor: request.cursor.filter(|c| !c.is_empty()),
            order: request.order.as_str(),
        };
        // The head first, then the page: a page kept under a mark is at least as new as it.
        let store = self.store().await?;
        let mark = self.listing_mark(store).await?;
        if let Some(page) = self.listings.page(mark, &key) {
            return Ok(page);
        }
        let mut proposals = store.list_proposals(&filter).await?;
        let next_cursor = if proposals.len() > limit {
            proposals.truncate(limit);
            proposals
                .last()
                .map(|p| PageCursor::of(p, request.order).encode())
        } else {
            None
        };
        // The page's approval progress: one more query for the whole page.
        let approvals = approvals_by_proposal(store.as_ref(), &proposals).await?;
        let page = ProposalPage {
            items: summaries(&proposals, approvals),
            next_cursor,
        };
        self.listings.put_page(mark, key, &page);
        Ok(page)
    }
}

impl App {
    /// The audit log's head, read from the database by a read that starts after this call
    /// (shared with the requests asking at the same moment): what a kept page of the queue is
    /// valid at (see [`super::cache`]).
    async fn listing_mark(&self, store: &Arc<dyn Store>) -> AppResult<ListingMark> {
        let store = store.clone();
        self.listings
            .mark(move || async move {
                Ok(ListingMark(
                    store
                        .audit_head()
                        .await?
                        .map_or(0, |sealed| sealed.head.seq),
                ))
            })
            .await
    }
}

impl App {
    /// How many proposals the queue holds in each status, every status named (0 when none);
    /// kept as the pages are.
    pub async fn queue_counts(&self) -> AppResult<Vec<(ProposalStatus, u64)>> {
        let store = self.store().await?;
        let mark = self.listing_mark(store).await?;
        if let Some(counts) = self.listings.counts(mark) {
            return Ok(counts);
        }
        let stored = store.count_proposals_by_status().await?;
        let counts: Vec<(ProposalStatus, u64)> = ProposalStatus::ALL
            .iter()
            .map(|s| {
                let n = stored.iter().find(|(t, _)| t == s).map_or(0, |(_, n)| *n);
                (*s, n)
            })
            .collect();
        self.listings.put_counts(mark, &counts);
        Ok(counts)
    }
}

/// One cited experiment with its statistics (`null` when it is not in the history).
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceView {
    pub experiment_id: String,
    pub finding: String,
    pub statistics: Option<ExperimentAnalysis>,
}

/// `queue show`: a proposal with its evidence's statistics and its reviews.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProposalView {
    #[schema(value_type = Object)]
    pub proposal: Proposal,
    #[schema(value_type = Vec<Object>)]
    pub evidence: Vec<EvidenceView>,
    #[schema(value_type = Vec<Object>)]
    pub reviews: Vec<Review>,
    /// Experiments of the history that name this proposal as their `source_proposal`, with
    /// what they found against what was predicted.
    #[schema(value_type = Vec<Object>)]
    pub tested_as: Vec<crate::analysis::learning::ProposalLink>,
    /// Its push to the experimentation platform (`[export.growthbook]`), if one was queued:
    /// pending, pushed (GrowthBook's experiment id and URL) or refused (GrowthBook's message).
    pub push: Option<crate::store::PushRecord>,
    /// The decision asked of a reviewer: unmet rules, approval progress, what happens after
    /// approval and the expiry date.
    #[schema(value_type = Object)]
    pub decision: super::decision::Decision,
}

impl App {
    /// `queue show`: a proposal with its evidence's statistics, its reviews and the
    /// experiments that tested it.
    pub async fn show(&self, id: &str) -> AppResult<ProposalView> {
        let store = self.store().await?;
        let proposal = store.get_proposal(id).await?.ok_or_else(|| {
            AppError::new(
                ErrorKind::NotFound,
                format!("proposal {} does not exist", crate::domain::bounded(id)),
            )
        })?;
        let reviews = store.proposal_reviews(id).await?;
        let push = store.push_of(id).await?;
        let analysis = self.analyze().await?;
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
        let tested_as = analysis
            .learning
            .links
            .iter()
            .filter(|l| l.proposal_id == proposal.id)
            .cloned()
            .collect();
        let decision = super::decision::Decision::of(&proposal, &reviews, self.config());
        Ok(ProposalView {
            decision,
            proposal,
            evidence,
            reviews,
            tested_as,
            push,
        })
    }
}

/// A review request: who (identified, with their role) does what, with which note or reason.
#[derive(Debug, Clone)]
pub struct ReviewRequest {
    pub id: String,
    pub principal: Principal,
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

impl App {
    /// Approve, reject or comment: the principal's role is checked, the domain's review rules
    /// decide, the store records. An agent may comment but never approve or reject, whatever
    /// its role: the refusal is logged (`review.refused`) and answered as forbidden.
    pub async fn review(&self, request: ReviewRequest) -> AppResult<ReviewOutcome> {
        request.principal.require(Permission::Review)?;
        let review = Review {
            proposal_id: request.id,
            actor: request.principal.user.to_string(),
            role: request.principal.role,
            action: request.action,
            note: request.note,
            at: crate::now(),
        };
        let store = self.store().await?;
        if !request.principal.kind.may_decide() && review.action != ReviewAction::Comment {
            let problem = format!(
                "{} acts as an agent, and agents never {} proposals: a person decides (an agent may comment)",
                review.actor,
                match review.action {
                    ReviewAction::Approve => "approve",
                    _ => "reject",
                }
            );
            if store.get_proposal(&review.proposal_id).await?.is_none() {
                return Err(AppError::new(
                    ErrorKind::NotFound,
                    ReviewError::NotFound(crate::domain::bounded(&review.proposal_id).into_owned())
                        .to_string(),
                ));
            }
            store.refuse_review(&review, &problem).await?;
            return Err(AppError::new(ErrorKind::Forbidden, problem));
        }
        // With `push_on_approval`, the approval that makes it approved queues its push in the
        // same transaction.
        let push_on = self
            .config()
            .export
            .growthbook
            .as_ref()
            .filter(|g| g.push_on_approval)
            .map(|_| super::push::PLATFORM);
        let proposal = store
            .review_pushing(&review, push_on)
            .await
            .map_err(|e| match e {
                StoreError::Review(err) => {
                    let kind = match err {
                        ReviewError::NotFound(_) => ErrorKind::NotFound,
                        ReviewError::NotReviewable { .. }
                        | ReviewError::AlreadyApproved { .. }
                        | ReviewError::Blocked { .. } => ErrorKind::Conflict,
                        ReviewError::RoleMayNotReview(_) => ErrorKind::Forbidden,
                        ReviewError::ReasonRequired
                        | ReviewError::ActorRequired
                        | ReviewError::Text(_) => ErrorKind::Input,
                    };
                    AppError::new(kind, err.to_string())
                }
                StoreError::DraftNotVouched { .. } => {
                    AppError::new(ErrorKind::Conflict, e.to_string())
                }
                other => AppError::runtime(other.to_string()),
            })?;
        Ok(ReviewOutcome {
            summary: ProposalSummary::of(&proposal),
            actor: review.actor,
            action: review.action,
            escalated: escalates(&proposal.verdicts),
        })
    }
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

/// What `export` ships (drafts in the format asked for), and what it withheld because the
/// audit log does not explain it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(bound = "")]
pub struct Export<T = ExportDraft> {
    #[schema(value_type = Vec<Object>)]
    pub drafts: Vec<T>,
    pub withheld: Vec<AuditProblem>,
}

impl App {
    /// `export`: the proposals with `status` as drafts — only those whose status, reviews and
    /// draft a verified audit log explains; the others are withheld, each with why (the CLI
    /// says so on stderr and ships the rest). A log that does not verify exports nothing.
    pub async fn export(&self, status: ProposalStatus) -> AppResult<Export> {
        let (proposals, withheld) = self.vouched(status).await?;
        Ok(Export {
            drafts: proposals.iter().map(ExportDraft::of).collect(),
            withheld,
        })
    }

    /// `export --format growthbook`: the proposals with `status` as the request bodies of
    /// GrowthBook's `POST /api/v1/experiments` under `[export.growthbook]`, withheld as
    /// [`App::export`] withholds.
    pub async fn export_growthbook(
        &self,
        status: ProposalStatus,
    ) -> AppResult<Export<super::push::GrowthbookDraft>> {
        let config = self.growthbook_config()?;
        let (proposals, withheld) = self.vouched(status).await?;
        let store = self.store().await?;
        let mut drafts = Vec::with_capacity(proposals.len());
        for proposal in &proposals {
            let reviews = store.proposal_reviews(&proposal.id).await?;
            drafts.push(super::push::growthbook_draft(
                proposal,
                super::push::approver(&reviews),
                config,
                &self.config().analysis,
            ));
        }
        Ok(Export { drafts, withheld })
    }

    /// The proposals with `status` that may leave hypod (their status, reviews and draft
    /// explained by a verified audit log, each draft vouched for once more on its own), and
    /// the problems of those withheld. A log that does not verify lets nothing leave.
    pub(crate) async fn vouched(
        &self,
        status: ProposalStatus,
    ) -> AppResult<(Vec<Proposal>, Vec<AuditProblem>)> {
        let report = self.verify_audit(None).await?;
        if !report.chain_intact() {
            let first = report
                .problems
                .iter()
                .find(|p| p.proposal_id.is_none())
                .map(|p| match p.seq {
                    Some(seq) => format!("entry {seq}: {}", p.problem),
                    None => p.problem.clone(),
                })
                .unwrap_or_default();
            return Err(AppError::runtime(format!(
                "the audit log does not verify ({first}); nothing was exported. Run `hypod audit verify` for every problem"
            )));
        }
        let proposals = self
            .store()
            .await?
            .list_proposals(&ProposalFilter {
                status: Some(status),
                ..ProposalFilter::default()
            })
            .await?;
        let (explained, withheld): (Vec<Proposal>, Vec<Proposal>) =
            proposals.into_iter().partition(|p| report.explains(&p.id));
        let mut withheld: Vec<AuditProblem> = report
            .problems
            .iter()
            .filter(|problem| {
                withheld
                    .iter()
                    .any(|p| problem.proposal_id.as_deref() == Some(p.id.as_str()))
            })
            .cloned()
            .collect();
        // Each draft is checked once more on its own, as the platform push checks it: a draft
        // edited since the verification above does not ship either.
        let mut vouched = Vec::with_capacity(explained.len());
        for proposal in explained {
            match self.vouch_draft(&proposal).await {
                Ok(_) => vouched.push(proposal),
                Err(e) if e.kind == ErrorKind::Conflict => withheld.push(AuditProblem {
                    seq: None,
                    proposal_id: Some(proposal.id.clone()),
                    token_id: None,
                    experiment_id: None,
                    problem: e.message,
                }),
                Err(e) => return Err(e),
            }
        }
        Ok((vouched, withheld))
    }
}
