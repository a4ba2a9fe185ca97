//! The governance tooling use cases: lint the policies, run their test cases, the verdicts a
//! draft would get (a dry run through the one assessment path), why a proposal got its
//! verdicts, and what the policies on disk would change if replayed.

use super::load::{analysis_settings, open_proposals};
use super::{App, AppError, AppResult};
use crate::analysis;
use crate::domain::{
    Enrichment, GovernanceDecision, Proposal, ProposalDraft, ProposalFilter, Verdict,
};
use crate::governance::cases::{self, TestReport};
use crate::governance::explain::Explanation;
use crate::governance::policy::{Lint, Severity};
use crate::governance::replay::{self, ReplayReport};
use crate::governance::{Assessor, Governed, QueueCounts};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `policy check`: every rule compiled and linted against a sample context.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub policy_digest: String,
    pub rules: usize,
    pub lints: Vec<Lint>,
    pub errors: usize,
    #[serde(skip)]
    pub files: usize,
}

impl CheckReport {
    /// A lint error is a configuration error once the report has been shown.
    pub fn outcome(&self) -> AppResult<()> {
        if self.errors > 0 {
            Err(AppError::config(format!(
                "policy check found {} error(s): fix them before the next run",
                self.errors
            )))
        } else {
            Ok(())
        }
    }
}

impl App {
    /// `policy check`: every rule compiled and linted against a sample context.
    pub fn check_policies(&self) -> AppResult<CheckReport> {
        let governance = self.governance()?;
        let program = crate::governance::sample::sample_program();
        let lints = governance.policies.check(&governance.catalog, &program);
        let errors = lints
            .iter()
            .filter(|l| l.severity == Severity::Error)
            .count();
        Ok(CheckReport {
            policy_digest: governance.digest.clone(),
            rules: governance.policies.rules.len(),
            files: governance.policies.files.len(),
            lints,
            errors,
        })
    }
}

/// `policy test`: the cases in `policies/tests/*.toml` (or the built-in ones).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct PolicyTests {
    pub report: TestReport,
    #[serde(skip)]
    pub tests_dir: PathBuf,
}

impl PolicyTests {
    pub fn outcome(&self) -> AppResult<()> {
        let report = &self.report;
        if report.ok() {
            Ok(())
        } else if report.cases == 0 {
            Err(AppError::config(format!(
                "no policy test cases found in {}",
                self.tests_dir.display()
            )))
        } else {
            Err(AppError::runtime(format!(
                "{} policy test case(s) failed",
                report.cases - report.passed
            )))
        }
    }
}

impl App {
    /// `policy test`: the policy set's test cases.
    pub fn test_policies(&self) -> AppResult<PolicyTests> {
        let config = &self.config;
        let governance = self.governance()?;
        let settings = governance.approval_settings();
        let tests_dir = config.policies_dir().join("tests");
        let report = if config.policies_dir().exists() {
            cases::run_policy_tests_with(
                &tests_dir,
                &governance.policies,
                &governance.catalog,
                &settings,
            )
        } else {
            let mut report = TestReport::default();
            for (name, text) in crate::governance::sample::DEFAULT_POLICY_TEST_FILES {
                cases::run_case_text(
                    name,
                    text,
                    &governance.policies,
                    &governance.catalog,
                    &settings,
                    &mut report,
                );
            }
            report
        };
        Ok(PolicyTests { report, tests_dir })
    }
}

/// Largest draft file `policy eval` reads.
const MAX_DRAFT_BYTES: u64 = 1 << 20;

/// `policy eval`: what a draft would get, without queueing it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Evaluation {
    #[schema(value_type = Object)]
    pub decision: GovernanceDecision,
    #[schema(value_type = Vec<Object>)]
    pub verdicts: Vec<Verdict>,
    #[schema(value_type = Object)]
    pub enrichment: Enrichment,
    pub policy_digest: String,
    #[serde(skip)]
    pub title: String,
}

/// Reads a draft file strictly: bounded size, valid JSON, every field as the schema says.
pub fn read_draft(file: &Path) -> AppResult<ProposalDraft> {
    let name = file.display().to_string();
    let text = read_bounded(file, MAX_DRAFT_BYTES)?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| AppError::input(format!("{name}: invalid JSON: {e}")))?;
    serde_path_to_error::deserialize(value)
        .map_err(|e| AppError::input(format!("{name}: field `{}`: {}", e.path(), e.inner())))
}

impl App {
    /// `policy eval` and `POST /api/v1/policies/evaluate`: the verdicts a draft would get, through
    /// the one assessment path; nothing is queued.
    pub async fn evaluate_draft(&self, draft: &ProposalDraft) -> AppResult<Evaluation> {
        let config = &self.config;
        let governance = self.governance()?;
        let store = self.store().await?;
        let experiments = store.load_experiments().await?;
        let open = open_proposals(store.as_ref()).await?;
        let now = crate::now();
        let settings = analysis_settings(config, &governance, now);
        let analysis = analysis::analyze(&experiments, &settings);
        let around = crate::validate::Surroundings {
            experiments: &experiments,
            analysis: &analysis,
            catalog: &governance.catalog,
            open_proposals: &open,
            this_run: &[],
            rejected_proposals: &[],
            alpha: config.analysis.alpha,
            power: config.analysis.power,
            min_days: config.proposer.min_days,
        };
        let queue = QueueCounts::from_queue(&open, now);
        let mut assessor = Assessor::new(&governance, &analysis.program, &experiments, queue, now);
        let mut draft = draft.clone();
        let enrichment = assessor.enrich(&mut draft, None, &around);
        let Governed { verdicts, decision } = assessor
            .judge(&draft, &enrichment)
            .map_err(|e| AppError::config(e.to_string()))?;
        Ok(Evaluation {
            decision,
            verdicts,
            enrichment,
            policy_digest: governance.digest.clone(),
            title: draft.title.clone(),
        })
    }
}

fn read_bounded(file: &Path, max_bytes: u64) -> AppResult<String> {
    use std::io::Read;
    let name = file.display();
    let handle = std::fs::File::open(file)
        .map_err(|e| AppError::input(format!("{name}: cannot read: {e}")))?;
    let mut text = String::new();
    handle
        .take(max_bytes + 1)
        .read_to_string(&mut text)
        .map_err(|e| AppError::input(format!("{name}: cannot read: {e}")))?;
    if text.len() as u64 > max_bytes {
        return Err(AppError::input(format!(
            "{name}: larger than {max_bytes} bytes"
        )));
    }
    Ok(text)
}

/// `policy explain`: why a queued proposal got its verdicts.
impl App {
    pub async fn explain(&self, id: &str) -> AppResult<Explanation> {
        let governance = self.governance()?;
        let store = self.store().await?;
        let proposal = store.get_proposal(id).await?.ok_or_else(|| {
            AppError::input(format!(
                "proposal {} does not exist",
                crate::domain::bounded(id)
            ))
        })?;
        Ok(crate::governance::explain::explain(
            &proposal,
            &governance.policies,
            &governance.approval_settings(),
        ))
    }
}

/// `policy replay --since`: the window, as written (`30d`), and what it parses to.
pub fn parse_since(since: &str) -> AppResult<chrono::Duration> {
    replay::parse_window(since).map_err(|e| AppError::input(format!("--since: {e}")))
}

/// `policy replay`: what the policies on disk would change for proposals within `window`.
impl App {
    pub async fn replay(&self, window: chrono::Duration) -> AppResult<ReplayReport> {
        let governance = self.governance()?;
        let store = self.store().await?;
        let now = crate::now();
        let all = store.list_proposals(&ProposalFilter::default()).await?;
        let (recent, older): (Vec<Proposal>, Vec<Proposal>) =
            all.into_iter().partition(|p| now - p.created_at <= window);
        let experiments = store.load_experiments().await?;
        let settings = analysis_settings(&self.config, &governance, now);
        let analysis = analysis::analyze(&experiments, &settings);
        let run_inputs = governance.run_inputs(&analysis.program);
        let base_queue = QueueCounts::from_queue(&older, now);
        replay::replay(
            &recent,
            &governance.policies,
            &run_inputs,
            &base_queue,
            &governance.approval_settings(),
        )
        .map_err(|e| AppError::config(e.to_string()))
    }
}

/// A rule of the loaded policy set, as the governance leads wrote it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleView {
    pub id: String,
    pub file: String,
    pub line: usize,
    pub effect: crate::domain::Effect,
    pub description: String,
    pub message: String,
}

/// The loaded policy set with its digest.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicySetView {
    /// Digest of the catalog and every policy file: what each proposal's provenance names.
    pub digest: String,
    pub approvals_required: u32,
    pub escalated_approvals_required: u32,
    pub rules: Vec<RuleView>,
}

impl App {
    /// The loaded policy set, as the governance leads wrote it.
    pub fn policy_set(&self) -> AppResult<PolicySetView> {
        let governance = self.governance()?;
        Ok(PolicySetView {
            digest: governance.digest.clone(),
            approvals_required: governance.approvals_required,
            escalated_approvals_required: governance.escalated_approvals_required,
            rules: governance
                .policies
                .rules
                .iter()
                .map(|r| RuleView {
                    id: r.id.clone(),
                    file: r.file.clone(),
                    line: r.line,
                    effect: r.effect,
                    description: r.description.clone(),
                    message: r.message.clone(),
                })
                .collect(),
        })
    }
}
