//! The commands of the `hypod` binary. Each parses nothing (clap did) and prints its result,
//! human-readable or as stable JSON with `--json`; errors carry the exit code the design fixes
//! (2 for bad usage, configuration or input; 1 for runtime failures).

use crate::analysis::{self, Analysis};
use crate::config::{Config, ProposerKind};
use crate::domain::{
    Proposal, ProposalFilter, ProposalStatus, Review, ReviewAction, RunRecord, RunStatus,
};
use crate::governance::Governance;
use crate::history::import::{self, Location, Source};
use crate::history::Moment;
use crate::proposer::builtin::BuiltinProposer;
use crate::proposer::openai::{Fallback, OpenAiProposer, PolicySummary};
use crate::proposer::{ProposalContext, Proposer};
use crate::run::{self, RunPlan};
use crate::store::{self, Store};
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A failed command: what to tell the user, and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            code: 2,
            message: message.into(),
        }
    }

    pub fn runtime(message: impl Into<String>) -> CliError {
        CliError {
            code: 1,
            message: message.into(),
        }
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(err: E) -> CliError {
        CliError::runtime(err.to_string())
    }
}

pub type CliResult = Result<(), CliError>;

fn print_json(value: &impl serde::Serialize) -> CliResult {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
}

pub fn load_config(path: Option<&Path>) -> Result<Config, CliError> {
    Config::load(path).map_err(|e| CliError::usage(e.to_string()))
}

pub async fn open_store(config: &Config) -> Result<Box<dyn Store>, CliError> {
    let url = config.database_url();
    store::open(&url)
        .await
        .map_err(|e| CliError::runtime(format!("cannot open the database {url}: {e}")))
}

pub fn load_governance(config: &Config) -> Result<Governance, CliError> {
    Governance::load(&config.policies_dir(), config.approval_settings())
        .map_err(|e| CliError::usage(e.to_string()))
}

// ---------------------------------------------------------------- import

pub async fn import(
    config: &Config,
    files: &[String],
    skip_invalid: bool,
    as_json: bool,
) -> CliResult {
    if files.is_empty() {
        return Err(CliError::usage(
            "hypod import needs at least one FILE (or - for stdin)",
        ));
    }
    let sources: Vec<Source> = files.iter().map(|f| Source::from_arg(f)).collect();
    let started = std::time::Instant::now();
    let report = import::parse_sources(&sources);
    let unreadable = report
        .problems
        .iter()
        .any(|p| p.location == Location::Whole);
    if !report.problems.is_empty() && (!skip_invalid || unreadable) {
        let mut message = format!(
            "nothing was imported: {} problem(s) in the input",
            report.problems.len()
        );
        for problem in report.problems.iter().take(20) {
            let _ = write!(message, "\n  {problem}");
        }
        if report.problems.len() > 20 {
            let _ = write!(message, "\n  … and {} more", report.problems.len() - 20);
        }
        if !unreadable {
            message.push_str("\nFix the records above, or pass --skip-invalid to import the valid ones and skip these.");
        }
        return Err(CliError::usage(message));
    }
    let store = open_store(config).await?;
    let counts = store.upsert_experiments(&report.experiments).await?;
    let elapsed = started.elapsed();
    if as_json {
        let skipped: Vec<_> = report
            .problems
            .iter()
            .map(|p| json!({"problem": p.to_string(), "field": p.field}))
            .collect();
        print_json(&json!({
            "records": report.records_read,
            "inserted": counts.inserted,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
            "skipped": skipped,
            "seconds": elapsed.as_secs_f64(),
        }))
    } else {
        for problem in &report.problems {
            eprintln!("skipped: {problem}");
        }
        println!(
            "imported {} experiments ({} new, {} updated, {} unchanged{}) in {:.2}s",
            report.experiments.len(),
            counts.inserted,
            counts.updated,
            counts.unchanged,
            if report.problems.is_empty() {
                String::new()
            } else {
                format!(", {} skipped", report.problems.len())
            },
            elapsed.as_secs_f64()
        );
        Ok(())
    }
}

// ---------------------------------------------------------------- analyze

async fn load_analysis(config: &Config) -> Result<Analysis, CliError> {
    let governance = load_governance(config)?;
    let store = open_store(config).await?;
    let experiments = store.load_experiments().await?;
    let settings = run::analysis_settings(config, &governance, crate::now());
    Ok(analysis::analyze(&experiments, &settings))
}

fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value
        .map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

fn fmt_pct(value: Option<f64>) -> String {
    value
        .map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "—".into())
}

pub async fn analyze(config: &Config, as_json: bool) -> CliResult {
    let analysis = load_analysis(config).await?;
    if as_json {
        return print_json(&analysis);
    }
    let p = &analysis.program;
    println!(
        "Program health ({} experiments, {} running)",
        p.experiments, p.running
    );
    println!(
        "  proven hypothesis rate   {} ({} of {} valid concluded){}",
        fmt_pct(p.proven_rate),
        p.proven,
        p.valid_concluded,
        p.proven_rate_band
            .as_deref()
            .map(|b| format!(" — {}", b.replace('_', " ")))
            .unwrap_or_default()
    );
    println!(
        "  idea to decision         {} days (median)",
        fmt_opt(p.median_idea_to_decision_days, 0)
    );
    println!(
        "  attribution stability    CV {}",
        fmt_opt(p.attribution_cv, 2)
    );
    let coverage: Vec<String> = p
        .moment_coverage_12m
        .iter()
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    println!("  moment coverage (12m)    {}", coverage.join(", "));
    println!(
        "  KPI mirage               {} of experiments",
        fmt_pct(p.kpi_mirage_share)
    );
    println!("  latency leaks            {}", p.latency_leaks.len());
    println!("  black-box rules          {}", p.black_box_rules.len());
    println!("  sample ratio mismatches  {}", p.srm_flagged.len());
    println!("  maturity stage           {}", p.maturity_stage);
    for reason in &p.maturity_reasons {
        println!("    - {reason}");
    }
    println!(
        "  ready for proposals      {} ({})",
        p.ready_for_proposals, p.readiness_reason
    );
    println!();
    println!(
        "{:<16} {:<15} {:<13} {:>9} {:>20} {:>8} {:>6}",
        "experiment", "moment", "outcome", "lift", "95% CI", "p", "power"
    );
    for e in &analysis.experiments {
        let ci = match (e.primary.ci_low, e.primary.ci_high) {
            (Some(l), Some(h)) => format!("[{:+.1}%, {:+.1}%]", l * 100.0, h * 100.0),
            _ => "—".into(),
        };
        println!(
            "{:<16} {:<15} {:<13} {:>9} {:>20} {:>8} {:>6}",
            e.id,
            e.moment.as_str(),
            e.outcome.as_str(),
            e.primary
                .relative_lift
                .map(|l| format!("{:+.1}%", l * 100.0))
                .unwrap_or_else(|| "—".into()),
            ci,
            fmt_opt(e.primary.p_value, 4),
            fmt_pct(e.primary.power),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- run

/// The configured proposer and its fallback, if any.
pub type ProposerPair = (Box<dyn Proposer>, Option<Box<dyn Proposer>>);

/// The proposer the configuration asks for, and the fallback.
pub fn proposers(config: &Config, governance: &Governance) -> Result<ProposerPair, CliError> {
    let builtin = BuiltinProposer {
        alpha: config.analysis.alpha,
        power: config.analysis.power,
    };
    match config.proposer.kind {
        ProposerKind::Builtin => Ok((Box::new(builtin), None)),
        ProposerKind::Openai => {
            let fallback: Option<Box<dyn Proposer>> = match config.llm.fallback {
                Fallback::Builtin => Some(Box::new(builtin)),
                Fallback::None => None,
            };
            Ok((Box::new(openai_proposer(config, governance)?), fallback))
        }
    }
}

/// The `prompts/` folder next to the configuration, if there is one (else the built-in prompts).
pub fn prompts_dir(config: &Config) -> Option<PathBuf> {
    let dir = config.resolve(Path::new("prompts"));
    dir.is_dir().then_some(dir)
}

/// The `openai` proposer as configured, with the policy set in plain words (each rule's
/// description).
pub fn openai_proposer(
    config: &Config,
    governance: &Governance,
) -> Result<OpenAiProposer, CliError> {
    let policies: Vec<PolicySummary> = governance
        .policies
        .rules
        .iter()
        .map(|rule| PolicySummary {
            id: rule.id.clone(),
            effect: rule.effect.as_str().to_string(),
            message: if rule.description.trim().is_empty() {
                rule.message.clone()
            } else {
                rule.description.clone()
            },
        })
        .collect();
    OpenAiProposer::new(config.llm.clone(), prompts_dir(config))
        .map(|p| p.with_policies(policies))
        .map_err(|e| CliError::usage(e.to_string()))
}

/// `hypod prompt render`: the exact messages the next run would send to the model.
pub async fn prompt_render(config: &Config, as_json: bool) -> CliResult {
    let governance = load_governance(config)?;
    let store = open_store(config).await?;
    let now = crate::now();
    let run::Loaded {
        experiments,
        open_proposals,
        recent_rejections,
    } = run::load(store.as_ref(), config, now).await?;
    let settings = run::analysis_settings(config, &governance, now);
    let analysis = analysis::analyze(&experiments, &settings);
    let context = ProposalContext {
        experiments: &experiments,
        analysis: &analysis,
        catalog: &governance.catalog,
        open_proposals: &open_proposals,
        recent_rejections: &recent_rejections,
        max_proposals: config.proposer.max_proposals,
        per_moment: config.proposer.per_moment,
        now,
    };
    let rendered = openai_proposer(config, &governance)?
        .render(&context)
        .map_err(|e| CliError::usage(e.to_string()))?;
    if as_json {
        print_json(&rendered)?;
    } else {
        println!(
            "=== system ({})\n{}\n",
            rendered.system_template, rendered.system
        );
        println!("=== user ({})\n{}", rendered.user_template, rendered.user);
        eprintln!(
            "model {}; about {} of {} prompt tokens (estimated); evidence {} of {} experiments; template digest {}; input digest {}",
            rendered.model,
            rendered.estimated_tokens,
            rendered.token_budget,
            rendered.selection.evidence_shown,
            rendered.selection.evidence_total,
            rendered.template_digest,
            rendered.input_digest
        );
    }
    Ok(())
}

pub async fn run_command(config: &Config, as_json: bool, trigger: &str) -> CliResult {
    let governance = load_governance(config)?;
    let store = open_store(config).await?;
    let (proposer, fallback) = proposers(config, &governance)?;
    let plan = RunPlan {
        config,
        governance: &governance,
        proposer: proposer.as_ref(),
        fallback: fallback.as_deref(),
        trigger: trigger.to_string(),
        now: crate::now(),
    };
    let (record, proposals) = run::run_once(store.as_ref(), &plan).await?;
    if as_json {
        print_json(&json!({
            "run": record,
            "proposals": proposals.iter().map(proposal_summary).collect::<Vec<_>>(),
        }))?;
    } else {
        print_run(&record, &proposals);
    }
    match record.status {
        RunStatus::Failed => Err(CliError::runtime(format!(
            "run {} failed: {}",
            record.id,
            record.error.as_deref().unwrap_or("unknown error")
        ))),
        _ => Ok(()),
    }
}

/// The compact form of a proposal in `run --json` and `queue list`.
pub fn proposal_summary(p: &Proposal) -> serde_json::Value {
    json!({
        "id": p.id,
        "status": p.status,
        "title": p.draft.title,
        "moment": p.draft.moment,
        "segment": p.draft.segment,
        "lever": p.draft.lever,
        "strategy": p.enrichment.strategy,
        "priority": p.enrichment.priority,
        "expected_relative_lift": p.draft.expected_relative_lift,
        "required_visitors_per_arm": p.enrichment.required_visitors_per_arm,
        "expected_duration_days": p.enrichment.expected_duration_days,
        "evidence": p.draft.evidence.iter().map(|e| &e.experiment_id).collect::<Vec<_>>(),
        "approvals_required": p.approvals_required,
        "failed_rules": p.verdicts.iter().filter(|v| v.failed()).map(|v| json!({
            "rule_id": v.rule_id, "effect": v.effect, "message": v.message
        })).collect::<Vec<_>>(),
    })
}

fn print_run(record: &RunRecord, proposals: &[Proposal]) {
    let s = &record.summary;
    println!(
        "run {} {} ({} proposer{}): {} drafts, {} queued, {} blocked, {} duplicates, {} dropped",
        record.id,
        record.status.as_str(),
        record.proposer,
        record
            .fell_back
            .as_ref()
            .map(|why| format!(", fell back: {why}"))
            .unwrap_or_default(),
        s.drafts,
        s.queued,
        s.blocked,
        s.duplicates,
        s.dropped
    );
    if let Some(usage) = &record.usage {
        println!(
            "model {}: {} prompt + {} completion tokens, {} ms, cost {:.4}",
            usage.model, usage.prompt_tokens, usage.completion_tokens, usage.latency_ms, usage.cost
        );
    }
    for note in &record.notes {
        println!("note: {note}");
    }
    if let Some(error) = &record.error {
        println!("error: {error}");
    }
    if !proposals.is_empty() {
        print_queue_table(proposals);
    }
}

// ---------------------------------------------------------------- queue

fn print_queue_table(proposals: &[Proposal]) {
    println!(
        "{:<36}  {:<14} {:<14} {:>9} {:>6}  title",
        "id", "status", "moment", "value/day", "days"
    );
    for p in proposals {
        println!(
            "{:<36}  {:<14} {:<14} {:>9.0} {:>6}  {}",
            p.id,
            p.status.as_str(),
            p.draft.moment.as_str(),
            p.enrichment.expected_value_per_day,
            p.enrichment
                .expected_duration_days
                .map(|d| format!("{d:.0}"))
                .unwrap_or_else(|| "—".into()),
            p.draft.title
        );
        for v in p.verdicts.iter().filter(|v| v.failed()) {
            println!(
                "{:<38}{} {}: {}",
                "",
                v.effect.as_str(),
                v.rule_id,
                v.message
            );
        }
    }
}

pub fn parse_status(text: &str) -> Result<ProposalStatus, CliError> {
    ProposalStatus::parse(text).ok_or_else(|| {
        CliError::usage(format!(
            "--status {text:?} is not a status; use one of: {}",
            ProposalStatus::ALL.map(|s| s.as_str()).join(", ")
        ))
    })
}

pub fn parse_moment(text: &str) -> Result<Moment, CliError> {
    Moment::parse(text).ok_or_else(|| {
        CliError::usage(format!(
            "--moment {text:?} is not a moment; use one of: {}",
            Moment::ALL.map(|m| m.as_str()).join(", ")
        ))
    })
}

pub async fn queue_list(
    config: &Config,
    status: Option<&str>,
    moment: Option<&str>,
    as_json: bool,
) -> CliResult {
    let filter = ProposalFilter {
        status: status.map(parse_status).transpose()?,
        moment: moment.map(parse_moment).transpose()?,
        ..ProposalFilter::default()
    };
    let store = open_store(config).await?;
    let proposals = store.list_proposals(&filter).await?;
    if as_json {
        print_json(&proposals.iter().map(proposal_summary).collect::<Vec<_>>())
    } else {
        if proposals.is_empty() {
            println!("the queue is empty for this filter");
        } else {
            print_queue_table(&proposals);
        }
        Ok(())
    }
}

pub async fn queue_show(config: &Config, id: &str, as_json: bool) -> CliResult {
    let store = open_store(config).await?;
    let proposal = store
        .get_proposal(id)
        .await?
        .ok_or_else(|| CliError::usage(format!("proposal {id} does not exist")))?;
    let reviews = store.proposal_reviews(id).await?;
    let analysis = load_analysis(config).await?;
    let evidence: Vec<_> = proposal
        .draft
        .evidence
        .iter()
        .map(|e| {
            json!({
                "experiment_id": e.experiment_id,
                "finding": e.finding,
                "statistics": analysis.experiment(&e.experiment_id),
            })
        })
        .collect();
    if as_json {
        return print_json(&json!({
            "proposal": proposal,
            "evidence": evidence,
            "reviews": reviews,
        }));
    }
    let d = &proposal.draft;
    let e = &proposal.enrichment;
    println!("{} — {}", proposal.id, d.title);
    println!(
        "status       {} (needs {} approval(s))",
        proposal.status, proposal.approvals_required
    );
    println!("hypothesis   {}", d.hypothesis);
    println!(
        "where        {} / {} / {} ({}, {})",
        d.moment,
        d.segment,
        d.lever,
        d.channel,
        d.rendering.as_str()
    );
    println!("change       {}", d.change);
    println!("rationale    {}", d.rationale);
    println!(
        "kpi          {} (guardrails: {})",
        d.primary_kpi,
        d.guardrail_kpis.join(", ")
    );
    println!(
        "signals      {} (consent: {})",
        d.signals.join(", "),
        d.consent_purposes.join(", ")
    );
    println!("risk         {:?}; rollback: {}", d.risk, d.rollback_plan);
    println!(
        "statistics   baseline {} ({}), expected lift {:+.1}%, {} visitors per arm, {} days, {:.0}/day expected value",
        fmt_pct(e.baseline_rate),
        e.baseline_source,
        d.expected_relative_lift * 100.0,
        e.required_visitors_per_arm.map(|n| n.to_string()).unwrap_or_else(|| "—".into()),
        fmt_opt(e.expected_duration_days, 0),
        e.expected_value_per_day
    );
    for note in &e.notes {
        println!("             note: {note}");
    }
    println!("evidence");
    for item in &d.evidence {
        let stats = analysis.experiment(&item.experiment_id);
        println!(
            "  {} — {}{}",
            item.experiment_id,
            item.finding,
            stats
                .map(|s| format!(
                    " [{}; lift {}, p {}]",
                    s.outcome.as_str(),
                    s.primary
                        .relative_lift
                        .map(|l| format!("{:+.1}%", l * 100.0))
                        .unwrap_or_else(|| "—".into()),
                    fmt_opt(s.primary.p_value, 4)
                ))
                .unwrap_or_else(|| " [not in history]".into())
        );
    }
    println!("verdicts");
    if proposal.verdicts.is_empty() {
        println!("  (none)");
    }
    for v in &proposal.verdicts {
        println!(
            "  {} {:<8} {}: {}",
            if v.passed { "pass" } else { "FAIL" },
            v.effect.as_str(),
            v.rule_id,
            v.message
        );
    }
    let p = &proposal.provenance;
    println!(
        "provenance   {} proposer{}, policy set {}, input {}",
        p.proposer,
        p.model
            .as_ref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default(),
        &p.policy_digest[..p.policy_digest.len().min(12)],
        &p.input_digest[..p.input_digest.len().min(12)]
    );
    println!("history");
    println!(
        "  {} created by run {}",
        proposal.created_at.to_rfc3339(),
        proposal.run_id
    );
    for r in &reviews {
        println!(
            "  {} {} by {} ({}){}",
            r.at.to_rfc3339(),
            r.action.as_str(),
            r.actor,
            r.role,
            r.note
                .as_ref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn queue_review(
    config: &Config,
    id: &str,
    actor: &str,
    role: &str,
    action: ReviewAction,
    note: Option<String>,
    as_json: bool,
) -> CliResult {
    if !["reviewer", "governance", "admin"].contains(&role) {
        return Err(CliError::usage(format!(
            "--role {role:?}: only reviewer, governance or admin may review"
        )));
    }
    let store = open_store(config).await?;
    let review = Review {
        proposal_id: id.to_string(),
        actor: actor.to_string(),
        role: role.to_string(),
        action,
        note,
        at: crate::now(),
    };
    let proposal = store.review(&review).await.map_err(|e| match e {
        store::StoreError::Review(err) => CliError::usage(err.to_string()),
        other => CliError::runtime(other.to_string()),
    })?;
    if as_json {
        return print_json(&proposal_summary(&proposal));
    }
    println!(
        "{} {}: {} is now {}",
        actor,
        match action {
            ReviewAction::Approve => "approved",
            ReviewAction::Reject => "rejected",
        },
        id,
        proposal.status
    );
    if proposal.status == ProposalStatus::PendingReview {
        println!(
            "it needs {} approval(s) in all{}",
            proposal.approvals_required,
            if crate::governance::escalates(&proposal.verdicts) {
                ", one of them from governance"
            } else {
                ""
            }
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- export

pub async fn export(config: &Config, status: &str, format: &str) -> CliResult {
    let status = parse_status(status)?;
    if format != "json" && format != "ndjson" {
        return Err(CliError::usage(format!(
            "--format {format:?}: use json or ndjson"
        )));
    }
    let store = open_store(config).await?;
    let proposals = store
        .list_proposals(&ProposalFilter {
            status: Some(status),
            ..ProposalFilter::default()
        })
        .await?;
    let drafts: Vec<_> = proposals
        .iter()
        .map(|p| {
            json!({
                "proposal_id": p.id,
                "name": p.draft.title,
                "hypothesis": p.draft.hypothesis,
                "moment": p.draft.moment,
                "lever": p.draft.lever,
                "segment": p.draft.segment,
                "channel": p.draft.channel,
                "rendering": p.draft.rendering,
                "primary_kpi": p.draft.primary_kpi,
                "guardrail_kpis": p.draft.guardrail_kpis,
                "signals": p.draft.signals,
                "consent_purposes": p.draft.consent_purposes,
                "variants": [
                    {"name": "control", "control": true},
                    {"name": "treatment", "control": false, "change": p.draft.change}
                ],
                "allocation": [1, 1],
                "minimum_visitors_per_arm": p.enrichment.required_visitors_per_arm,
                "expected_duration_days": p.enrichment.expected_duration_days,
                "rollback_plan": p.draft.rollback_plan,
                "evidence": p.draft.evidence,
                "status": "draft",
            })
        })
        .collect();
    if format == "ndjson" {
        for draft in drafts {
            println!("{}", serde_json::to_string(&draft)?);
        }
        Ok(())
    } else {
        print_json(&drafts)
    }
}

// ---------------------------------------------------------------- audit, migrate

pub async fn audit_verify(config: &Config) -> CliResult {
    let store = open_store(config).await?;
    let entries = store.audit_log().await?;
    let result = store::verify_chain(&entries);
    match result.broken_at {
        None => {
            println!(
                "audit log intact: {} entries, hash chain verified",
                result.entries
            );
            Ok(())
        }
        Some(seq) => Err(CliError::runtime(format!(
            "audit log tampered with: entry {seq} does not match the hash chain ({} entries)",
            result.entries
        ))),
    }
}

pub async fn migrate(config: &Config) -> CliResult {
    open_store(config).await?;
    println!("database {} is migrated", config.database_url());
    Ok(())
}

// ---------------------------------------------------------------- init, demo

const STARTER_CONFIG: &str = include_str!("../examples/hypod.toml");

/// Writes a starter configuration, policies and prompts into `dir` (never overwrites).
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut written = Vec::new();
    let mut files: Vec<(String, &str)> = vec![("hypod.toml".into(), STARTER_CONFIG)];
    for (path, text) in crate::assets::DEFAULT_FILES {
        files.push((path.to_string(), text));
    }
    for (relative, text) in files {
        let path = dir.join(&relative);
        if path.exists() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                CliError::runtime(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        std::fs::write(&path, text)
            .map_err(|e| CliError::runtime(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

fn demo_dir(requested: Option<&Path>) -> PathBuf {
    if let Some(dir) = requested {
        return dir.to_path_buf();
    }
    let base = std::env::current_dir().unwrap_or_else(|_| std::env::temp_dir());
    (1..)
        .map(|n| {
            if n == 1 {
                base.join("hypod-demo")
            } else {
                base.join(format!("hypod-demo-{n}"))
            }
        })
        .find(|p| !p.exists())
        .unwrap_or_else(|| std::env::temp_dir().join("hypod-demo"))
}

pub async fn demo(requested: Option<&Path>) -> CliResult {
    let dir = demo_dir(requested);
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::runtime(format!("cannot create {}: {e}", dir.display())))?;
    init(&dir)?;
    let config_path = dir.join("hypod.toml");
    let config = Config::load_with_env(Some(&config_path), &[])
        .map_err(|e| CliError::runtime(e.to_string()))?;
    println!("hypod demo in {}", dir.display());

    let report = import::parse_text(
        "sample-history.ndjson",
        import::Format::Ndjson,
        crate::assets::SAMPLE_HISTORY,
    );
    if !report.problems.is_empty() {
        return Err(CliError::runtime(format!(
            "the bundled sample history is invalid: {}",
            report.problems[0]
        )));
    }
    let store = open_store(&config).await?;
    let counts = store.upsert_experiments(&report.experiments).await?;
    println!(
        "imported {} experiments from the bundled sample history ({} new)",
        report.experiments.len(),
        counts.inserted
    );
    drop(store);
    println!();
    run_command(&config, false, "demo").await?;
    println!();
    let config_arg = config_path.display();
    println!("What to try next:");
    println!("  hypod --config {config_arg} analyze                 # program health and per-experiment statistics");
    println!("  hypod --config {config_arg} queue list --status pending_review");
    println!("  hypod --config {config_arg} queue show ID           # evidence, statistics, verdicts, provenance");
    println!("  hypod --config {config_arg} queue approve ID --as you --note \"worth it\"");
    println!("  hypod --config {config_arg} export --status approved");
    println!(
        "Edit {}/policies/ to change what may be proposed.",
        dir.display()
    );
    Ok(())
}

// ---------------------------------------------------------------- policy

/// `hypod policy check`: compile every rule, lint it against a sample context.
pub fn policy_check(config: &Config, as_json: bool) -> CliResult {
    let governance = load_governance(config)?;
    let program = crate::governance::sample::sample_program();
    let lints = governance.policies.check(&governance.catalog, &program);
    let errors = lints
        .iter()
        .filter(|l| l.severity == crate::governance::policy::Severity::Error)
        .count();
    if as_json {
        print_json(&json!({
            "policy_digest": governance.digest,
            "rules": governance.policies.rules.len(),
            "lints": lints,
            "errors": errors,
        }))?;
    } else {
        for lint in &lints {
            println!("{lint}");
        }
        println!(
            "{} rules in {} file(s) checked, {} error(s), {} other finding(s); policy set {}",
            governance.policies.rules.len(),
            governance.policies.files.len(),
            errors,
            lints.len() - errors,
            &governance.digest[..12]
        );
    }
    if errors > 0 {
        Err(CliError::usage(format!(
            "policy check found {errors} error(s): fix them before the next run"
        )))
    } else {
        Ok(())
    }
}

/// `hypod policy test`: run the cases in `policies/tests/*.toml`.
pub fn policy_test(config: &Config, as_json: bool) -> CliResult {
    use crate::governance::cases;
    let governance = load_governance(config)?;
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
        let mut report = cases::TestReport::default();
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
    if as_json {
        print_json(&report)?;
    } else {
        for failure in &report.failures {
            println!("FAIL {failure}");
        }
        println!(
            "{} passed, {} failed ({} cases in {} file(s))",
            report.passed,
            report.cases - report.passed,
            report.cases,
            report.files
        );
    }
    if report.ok() {
        Ok(())
    } else if report.cases == 0 {
        Err(CliError::usage(format!(
            "no policy test cases found in {}",
            tests_dir.display()
        )))
    } else {
        Err(CliError::runtime(format!(
            "{} policy test case(s) failed",
            report.cases - report.passed
        )))
    }
}

/// Largest draft file `policy eval` reads.
const MAX_DRAFT_BYTES: u64 = 1 << 20;

/// `hypod policy eval FILE.json`: the verdicts a draft would get, without queueing it.
pub async fn policy_eval(config: &Config, file: &Path, as_json: bool) -> CliResult {
    let name = file.display().to_string();
    let text = read_bounded(file, MAX_DRAFT_BYTES)?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("{name}: invalid JSON: {e}")))?;
    let draft: crate::domain::ProposalDraft = serde_path_to_error::deserialize(value)
        .map_err(|e| CliError::usage(format!("{name}: field `{}`: {}", e.path(), e.inner())))?;
    let governance = load_governance(config)?;
    let store = open_store(config).await?;
    let experiments = store.load_experiments().await?;
    let open: Vec<Proposal> = store
        .list_proposals(&ProposalFilter::default())
        .await?
        .into_iter()
        .filter(|p| p.status.is_open() || p.status == ProposalStatus::Blocked)
        .collect();
    let now = crate::now();
    let settings = run::analysis_settings(config, &governance, now);
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
    };
    let enrichment = crate::validate::enrich(&draft, None, &around);
    let refs = crate::validate::References::new(&experiments, &governance.catalog);
    let mut verdicts =
        crate::validate::problems_as_verdicts(&crate::validate::check_draft(&draft, &refs));
    let queue = crate::governance::QueueCounts::from_queue(&open, now);
    verdicts.extend(
        governance
            .govern(&draft, &enrichment, &analysis.program, &queue, now)
            .map_err(|e| CliError::usage(e.to_string()))?,
    );
    let decision = governance.decide(&verdicts);
    if as_json {
        return print_json(&json!({
            "decision": decision,
            "verdicts": verdicts,
            "enrichment": enrichment,
            "policy_digest": governance.digest,
        }));
    }
    println!(
        "{}: would be {} (needs {} approval(s){})",
        draft.title,
        decision.status,
        decision.approvals_required,
        if decision.escalated {
            ", escalated"
        } else {
            ""
        }
    );
    for v in verdicts.iter().filter(|v| v.failed()) {
        println!(
            "  FAIL {:<8} {}: {}",
            v.effect.as_str(),
            v.rule_id,
            v.message
        );
    }
    println!(
        "  {} rule(s) passed or did not apply",
        verdicts.iter().filter(|v| v.passed).count()
    );
    Ok(())
}

fn read_bounded(file: &Path, max_bytes: u64) -> Result<String, CliError> {
    use std::io::Read;
    let name = file.display();
    let handle = std::fs::File::open(file)
        .map_err(|e| CliError::usage(format!("{name}: cannot read: {e}")))?;
    let mut text = String::new();
    handle
        .take(max_bytes + 1)
        .read_to_string(&mut text)
        .map_err(|e| CliError::usage(format!("{name}: cannot read: {e}")))?;
    if text.len() as u64 > max_bytes {
        return Err(CliError::usage(format!(
            "{name}: larger than {max_bytes} bytes"
        )));
    }
    Ok(text)
}

/// `hypod policy explain ID`: why a queued proposal got its verdicts.
pub async fn policy_explain(config: &Config, id: &str, as_json: bool) -> CliResult {
    let governance = load_governance(config)?;
    let store = open_store(config).await?;
    let proposal = store
        .get_proposal(id)
        .await?
        .ok_or_else(|| CliError::usage(format!("proposal {id} does not exist")))?;
    let explanation = crate::governance::explain::explain(
        &proposal,
        &governance.policies,
        &governance.approval_settings(),
    );
    if as_json {
        return print_json(&explanation);
    }
    println!(
        "{} — {}: {} (needs {} approval(s))",
        explanation.proposal_id,
        explanation.title,
        explanation.status,
        explanation.approvals_required
    );
    println!(
        "verdicts made under policy set {}{}",
        &explanation.policy_digest[..explanation.policy_digest.len().min(12)],
        if explanation.same_policy_set {
            " (the policies on disk are the same)".to_string()
        } else {
            format!(
                "; the policies on disk are now {} — see `hypod policy replay`",
                &explanation.current_policy_digest
                    [..explanation.current_policy_digest.len().min(12)]
            )
        }
    );
    for v in &explanation.verdicts {
        println!(
            "  {:<4} {:<8} {}: {}",
            v.outcome, v.effect, v.rule_id, v.message
        );
        if let Some(expr) = &v.expr {
            println!(
                "         {}{}",
                v.file
                    .as_deref()
                    .map(|f| format!("{f}: "))
                    .unwrap_or_default(),
                expr
            );
        }
    }
    Ok(())
}

/// `hypod policy replay [--since 30d]`: what the policies on disk would change.
pub async fn policy_replay(config: &Config, since: &str, as_json: bool) -> CliResult {
    use crate::governance::replay;
    let window =
        replay::parse_window(since).map_err(|e| CliError::usage(format!("--since: {e}")))?;
    let governance = load_governance(config)?;
    let store = open_store(config).await?;
    let now = crate::now();
    let all = store.list_proposals(&ProposalFilter::default()).await?;
    let recent: Vec<Proposal> = all
        .iter()
        .filter(|p| now - p.created_at <= window)
        .cloned()
        .collect();
    let experiments = store.load_experiments().await?;
    let settings = run::analysis_settings(config, &governance, now);
    let analysis = analysis::analyze(&experiments, &settings);
    let run_inputs = governance.run_inputs(&analysis.program);
    let older: Vec<Proposal> = all
        .into_iter()
        .filter(|p| now - p.created_at > window)
        .collect();
    let base_queue = crate::governance::QueueCounts::from_queue(&older, now);
    let report = replay::replay(
        &recent,
        &governance.policies,
        &run_inputs,
        &base_queue,
        &governance.approval_settings(),
    )
    .map_err(|e| CliError::usage(e.to_string()))?;
    if as_json {
        return print_json(&report);
    }
    println!(
        "replayed {} proposal(s) from the last {since} against policy set {}: {} would change",
        report.replayed,
        &report.policy_digest[..report.policy_digest.len().min(12)],
        report.changed.len()
    );
    for change in &report.changed {
        println!(
            "  {} {}: {} -> {} (approvals {} -> {}; now {})",
            change.proposal_id,
            change.title,
            change.old_status,
            change.new_status,
            change.old_approvals_required,
            change.new_approvals_required,
            change.current_status
        );
        for rule in &change.changes {
            println!(
                "      {} {}: {} -> {}: {}",
                rule.effect, rule.rule_id, rule.old_outcome, rule.new_outcome, rule.message
            );
        }
    }
    Ok(())
}
