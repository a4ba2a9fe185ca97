//! Text presentation: each view of a use case as the lines a person reads. Everything here
//! formats; nothing decides.

use crate::analysis::AnalysisReport;
use crate::app::access::CreatedToken;
use crate::app::import::ImportSummary;
use crate::app::policy::{CheckReport, Evaluation, PolicyTests};
use crate::app::queue::{ProposalSummary, ProposalView, QueueList, ReviewOutcome};
use crate::app::run::RunView;
use crate::app::setup::Demo;
use crate::domain::{Proposal, ProposalStatus, ReviewAction, RunRecord};
use crate::governance::explain::Explanation;
use crate::governance::replay::ReplayReport;
use crate::proposer::openai::RenderedPrompt;
use crate::store::{AuditReport, TokenRecord};
use std::fmt::Write as _;

/// `writeln!` into a `String`, which cannot fail.
macro_rules! say {
    ($out:expr) => {{
        let _ = writeln!($out);
    }};
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
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

/// The learning loop: hypod's own proposals once run, beside the rest of the program.
fn learning_into(out: &mut String, learning: &crate::analysis::Learning) {
    if learning.links.is_empty() && learning.unknown_sources.is_empty() {
        return;
    }
    say!(out);
    say!(
        out,
        "hypod's own proposals, once run (experiments naming them as source_proposal)"
    );
    for r in learning
        .hypod
        .iter()
        .chain(std::iter::once(&learning.program))
    {
        let name = match &r.model {
            Some(model) => format!("{} ({model})", r.source),
            None => r.source.clone(),
        };
        say!(
            out,
            "  {:<28} {} tested, proven {}, decision {} days (median){}",
            name,
            r.tested,
            fmt_pct(r.proven_rate),
            fmt_opt(r.median_decision_days, 0),
            r.calibration
                .map(|c| format!(
                    ", realised lift inside the predicted interval {} of {} ({})",
                    r.inside_interval,
                    r.with_interval,
                    fmt_pct(Some(c))
                ))
                .unwrap_or_default()
        );
    }
    for (lever, n) in &learning.failed_transfers {
        say!(
            out,
            "  failed transfers of {}: {n} (its transfers weigh ×{:.2})",
            lever,
            learning.transfer_weight(lever)
        );
    }
    if !learning.unknown_sources.is_empty() {
        say!(
            out,
            "  source_proposal names no stored proposal: {}",
            learning.unknown_sources.join(", ")
        );
    }
}

pub fn analysis(analysis: &AnalysisReport) -> String {
    let mut out = String::new();
    let p = &analysis.program;
    say!(
        out,
        "Program health ({} experiments, {} running)",
        p.experiments,
        p.running
    );
    say!(
        out,
        "  proven hypothesis rate   {} ({} of {} valid concluded){}",
        fmt_pct(p.proven_rate),
        p.proven,
        p.valid_concluded,
        p.proven_rate_band
            .as_deref()
            .map(|b| format!(" — {}", b.replace('_', " ")))
            .unwrap_or_default()
    );
    say!(
        out,
        "  idea to decision         {} days (median)",
        fmt_opt(p.median_idea_to_decision_days, 0)
    );
    say!(
        out,
        "  attribution stability    CV {}",
        fmt_opt(p.attribution_cv, 2)
    );
    let coverage: Vec<String> = p
        .moment_coverage_12m
        .iter()
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    say!(out, "  moment coverage (12m)    {}", coverage.join(", "));
    say!(
        out,
        "  KPI mirage               {} of experiments",
        fmt_pct(p.kpi_mirage_share)
    );
    say!(out, "  latency leaks            {}", p.latency_leaks.len());
    say!(
        out,
        "  black-box rules          {}",
        p.black_box_rules.len()
    );
    say!(out, "  sample ratio mismatches  {}", p.srm_flagged.len());
    if !p.summary_only.is_empty() {
        say!(
            out,
            "  summary-only records     {} (results as reported by another tool, not re-analysed)",
            p.summary_only.len()
        );
    }
    say!(out, "  maturity stage           {}", p.maturity_stage);
    for reason in &p.maturity_reasons {
        say!(out, "    - {reason}");
    }
    for step in &p.maturity_next_steps {
        say!(out, "    next: {step}");
    }
    say!(
        out,
        "  ready for proposals      {} ({})",
        p.ready_for_proposals,
        p.readiness_reason
    );
    learning_into(&mut out, &analysis.learning);
    say!(out);
    // The engine's own words: credible interval and chance to win under the Bayesian engine,
    // the confidence sequence and its p-value under sequential testing.
    let vocabulary = analysis.vocabulary();
    let (interval_header, evidence_header) = match vocabulary {
        crate::analysis::Vocabulary::Frequentist => ("95% CI", "p"),
        crate::analysis::Vocabulary::Sequential => ("95% CS", "p (seq)"),
        crate::analysis::Vocabulary::Bayesian => ("95% CrI", "ctw"),
    };
    say!(
        out,
        "{:<16} {:<15} {:<13} {:>9} {:>20} {:>8} {:>6}",
        "experiment",
        "moment",
        "outcome",
        "lift",
        interval_header,
        evidence_header,
        "power"
    );
    for e in analysis.analyses() {
        let interval = match e.primary.posterior() {
            Some(b) => (Some(b.ci_low), Some(b.ci_high)),
            None => (e.primary.ci_low, e.primary.ci_high),
        };
        let ci = match interval {
            (Some(l), Some(h)) => format!("[{:+.1}%, {:+.1}%]", l * 100.0, h * 100.0),
            _ => "—".into(),
        };
        let evidence = match (vocabulary, e.primary.posterior()) {
            (crate::analysis::Vocabulary::Bayesian, Some(b)) => {
                format!("{:.1}%", b.chance_to_win * 100.0)
            }
            (crate::analysis::Vocabulary::Bayesian, None) => "—".into(),
            _ => fmt_opt(e.primary.p_value, 4),
        };
        // A summary-only record's figures are another tool's: marked, never taken for hypod's.
        let marker = if e.summary_only {
            "  reported (summary-only, not re-analysed)"
        } else {
            ""
        };
        say!(
            out,
            "{:<16} {:<15} {:<13} {:>9} {:>20} {:>8} {:>6}{}",
            e.id,
            e.moment.as_str(),
            e.outcome.as_str(),
            e.primary
                .relative_lift
                .map(|l| format!("{:+.1}%", l * 100.0))
                .unwrap_or_else(|| "—".into()),
            ci,
            evidence,
            fmt_pct(e.primary.power),
            marker,
        );
    }
    out
}

pub fn run(view: &RunView) -> String {
    let mut out = String::new();
    run_into(&mut out, &view.run, &view.queued);
    out
}

fn run_into(out: &mut String, record: &RunRecord, proposals: &[Proposal]) {
    let s = &record.summary;
    say!(
        out,
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
    if s.expired + s.superseded > 0 {
        say!(
            out,
            "queue hygiene: {} pending proposal(s) expired, {} superseded by drafts on better evidence",
            s.expired,
            s.superseded
        );
    }
    if let Some(usage) = &record.usage {
        say!(
            out,
            "model {}: {} prompt + {} completion tokens, {} ms, cost {:.4}",
            usage.model,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.latency_ms,
            usage.cost
        );
    }
    for note in &record.notes {
        say!(out, "note: {note}");
    }
    if let Some(error) = &record.error {
        say!(out, "error: {error}");
    }
    if !proposals.is_empty() {
        queue_table(out, proposals, &[]);
    }
}

/// The queue as a table; each row followed by its approval progress when `progress` has it (a
/// listing's summaries, in the same order) and by the rules it did not pass.
fn queue_table(out: &mut String, proposals: &[Proposal], progress: &[ProposalSummary]) {
    say!(
        out,
        "{:<36}  {:<14} {:<14} {:>9} {:>6}  title",
        "id",
        "status",
        "moment",
        "value/day",
        "days"
    );
    for (i, p) in proposals.iter().enumerate() {
        say!(
            out,
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
        // A blocked proposal is approved by nobody: its deny rule below says why.
        if let Some(words) = progress
            .get(i)
            .filter(|s| s.id == p.id && p.status != ProposalStatus::Blocked)
            .and_then(|s| s.progress.as_deref())
        {
            say!(out, "{:<38}{words}", "");
        }
        for v in p.verdicts.iter().filter(|v| v.failed()) {
            say!(
                out,
                "{:<38}{} {}: {}",
                "",
                v.effect.as_str(),
                v.rule_id,
                v.message
            );
        }
    }
}

/// `queue list`: the table, and the unit its value per day is counted in (`program.currency`,
/// or "value units").
pub fn queue_list(list: &QueueList, currency: Option<&str>) -> String {
    let mut out = String::new();
    if list.proposals.is_empty() {
        say!(out, "the queue is empty for this filter");
    } else {
        queue_table(&mut out, &list.proposals, &list.summaries);
        match currency {
            Some(c) => say!(out, "value/day: expected value per day in {c}"),
            None => say!(
                out,
                "value/day: expected value per day in value units (`program.currency` names the currency)"
            ),
        }
    }
    out
}

pub fn proposal(view: &ProposalView) -> String {
    let mut out = String::new();
    let proposal = &view.proposal;
    let reviews = &view.reviews;
    let d = &proposal.draft;
    let e = &proposal.enrichment;
    say!(out, "{} — {}", proposal.id, d.title);
    say!(
        out,
        "status       {} (needs {} approval(s))",
        proposal.status,
        proposal.approvals_required
    );
    decision_into(&mut out, view);
    if let Some(push) = &view.push {
        say!(out, "{}", push_line(push));
    }
    if let Some(by) = &proposal.superseded_by {
        say!(out, "replaced by  {by} (the same idea on better evidence)");
    }
    if let Some(old) = &e.supersedes {
        say!(out, "replaces     {old} (superseded by this one)");
    }
    for link in &view.tested_as {
        say!(
            out,
            "tested as    {}: {}, realised {}{}",
            link.experiment_id,
            link.outcome.as_str(),
            link.realised_lift
                .map(|l| format!("{:+.1}%", l * 100.0))
                .unwrap_or_else(|| "—".into()),
            match link.inside_interval {
                Some(true) => " (inside the predicted interval)",
                Some(false) => " (outside the predicted interval)",
                None => "",
            }
        );
    }
    if let Some([low, high]) = e.predicted_interval {
        say!(
            out,
            "predicted    {:+.1}% (95% interval {:+.1}% to {:+.1}%)",
            d.expected_relative_lift * 100.0,
            low * 100.0,
            high * 100.0
        );
    }
    say!(out, "hypothesis   {}", d.hypothesis);
    say!(
        out,
        "where        {} / {} / {} ({}, {})",
        d.moment,
        d.segment,
        d.lever,
        d.channel,
        d.rendering.as_str()
    );
    say!(out, "change       {}", d.change);
    say!(out, "rationale    {}", d.rationale);
    say!(
        out,
        "kpi          {} (guardrails: {})",
        d.primary_kpi,
        d.guardrail_kpis.join(", ")
    );
    say!(
        out,
        "signals      {} (consent: {})",
        d.signals.join(", "),
        d.consent_purposes.join(", ")
    );
    say!(
        out,
        "risk         {:?}; rollback: {}",
        d.risk,
        d.rollback_plan
    );
    say!(out,
        "statistics   baseline {} ({}), expected lift {:+.1}%, {} visitors per arm, {} days, {:.0}/day expected value",
        fmt_pct(e.baseline_rate),
        e.baseline_source,
        d.expected_relative_lift * 100.0,
        e.required_visitors_per_arm.map(|n| n.to_string()).unwrap_or_else(|| "—".into()),
        fmt_opt(e.expected_duration_days, 0),
        e.expected_value_per_day
    );
    if let Some(claim) = e.claimed_lift {
        say!(
            out,
            "claimed      {:+.1}% by the proposer (a claim: the figures above come from the lever's pooled tests)",
            claim * 100.0
        );
    }
    if let Some(warning) = &e.claim_warning {
        say!(out, "             warning: {warning}");
    }
    for note in &e.notes {
        say!(out, "             note: {note}");
    }
    say!(out, "evidence");
    for item in &d.evidence {
        let stats = view
            .evidence
            .iter()
            .find(|e| e.experiment_id == item.experiment_id)
            .and_then(|e| e.statistics.as_ref());
        say!(
            out,
            "  {} — {}{}",
            item.experiment_id,
            item.finding,
            stats
                .map(|s| format!(
                    " [{}; {}lift {}, {}]",
                    s.outcome.as_str(),
                    if s.summary_only { "reported " } else { "" },
                    s.primary
                        .relative_lift
                        .map(|l| format!("{:+.1}%", l * 100.0))
                        .unwrap_or_else(|| "—".into()),
                    match s.primary.posterior() {
                        Some(b) => crate::analysis::engines::chance_text(b.chance_to_win),
                        None => format!(
                            "p {}{}",
                            fmt_opt(s.primary.p_value, 4),
                            if s.primary.sequential {
                                " (sequential)"
                            } else {
                                ""
                            }
                        ),
                    }
                ))
                .unwrap_or_else(|| " [not in history]".into())
        );
    }
    say!(out, "verdicts");
    if proposal.verdicts.is_empty() {
        say!(out, "  (none)");
    }
    for v in &proposal.verdicts {
        say!(
            out,
            "  {} {:<8} {}: {}",
            if v.passed { "pass" } else { "FAIL" },
            v.effect.as_str(),
            v.rule_id,
            v.message
        );
    }
    let p = &proposal.provenance;
    say!(
        out,
        "provenance   {} proposer{}, policy set {}, input {}",
        p.proposer,
        p.model
            .as_ref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default(),
        &p.policy_digest[..p.policy_digest.len().min(12)],
        &p.input_digest[..p.input_digest.len().min(12)]
    );
    say!(out, "history");
    say!(
        out,
        "  {} created by run {}",
        proposal.created_at.to_rfc3339(),
        proposal.run_id
    );
    for r in reviews {
        say!(
            out,
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
    out
}

/// `queue show` opens with the decision: what is asked, what stands in the way, the approval
/// progress and what happens after approval.
fn decision_into(out: &mut String, view: &ProposalView) {
    let d = &view.proposal.draft;
    let e = &view.proposal.enrichment;
    let decision = &view.decision;
    say!(
        out,
        "asked        {} Expected lift {:+.1}%{}; {} visitors per arm; {}",
        d.change,
        d.expected_relative_lift * 100.0,
        e.predicted_interval
            .map(|[low, high]| format!(
                " (95% predicted {:+.1}% to {:+.1}%)",
                low * 100.0,
                high * 100.0
            ))
            .unwrap_or_default(),
        e.required_visitors_per_arm
            .map(|n| n.to_string())
            .unwrap_or_else(|| "—".into()),
        decision.duration.clone().unwrap_or_else(|| "— days".into())
    );
    if decision.unmet.is_empty() {
        say!(out, "in the way   nothing: every rule passed");
    }
    for (i, unmet) in decision.unmet.iter().enumerate() {
        say!(
            out,
            "{} {} ({}): {}",
            if i == 0 {
                "in the way  "
            } else {
                "            "
            },
            unmet.rule_id,
            unmet.means,
            unmet.message
        );
    }
    say!(
        out,
        "approvals    {}{}",
        decision.progress,
        decision
            .approved_by
            .as_ref()
            .map(|by| format!("; {by}"))
            .unwrap_or_default()
    );
    say!(out, "next         {}", decision.after_approval);
    say!(out, "builds       {}", decision.builds);
    if let Some(at) = decision.expires_at {
        say!(
            out,
            "expires      on {} unless decided before",
            at.format("%Y-%m-%d")
        );
    }
}

/// A proposal's push to the platform, on one line (`queue show`, `export --push`).
fn push_line(push: &crate::store::PushRecord) -> String {
    use crate::store::PushState;
    let status = push
        .http_status
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let error = push.error.as_deref().unwrap_or("");
    match push.state {
        PushState::Pushed => format!(
            "{:<12} pushed as {} ({})",
            push.platform,
            push.experiment_id.as_deref().unwrap_or("?"),
            push.experiment_url.as_deref().unwrap_or("")
        ),
        PushState::Refused => format!("{:<12} refused{status}: {error}", push.platform),
        PushState::Pending if push.attempts == 0 => format!("{:<12} push pending", push.platform),
        PushState::Pending => format!(
            "{:<12} push pending after {} attempt(s){status}: {error}",
            push.platform, push.attempts
        ),
    }
}

/// `export --push`: each approved proposal's push.
pub fn pushes(report: &crate::app::push::PushReport) -> String {
    let mut out = String::new();
    if report.pushes.is_empty() {
        say!(out, "no approved proposal to push");
    }
    for push in &report.pushes {
        say!(out, "{}  {}", push.proposal_id, push_line(push));
    }
    out
}

pub fn review(outcome: &ReviewOutcome) -> String {
    let mut out = String::new();
    let s = &outcome.summary;
    say!(
        out,
        "{} {}: {} is now {}",
        outcome.actor,
        match outcome.action {
            ReviewAction::Approve => "approved",
            ReviewAction::Reject => "rejected",
            ReviewAction::Comment => "commented on",
        },
        s.id,
        s.status
    );
    if s.status == ProposalStatus::PendingReview {
        say!(
            out,
            "it needs {} approval(s) in all{}",
            s.approvals_required,
            if outcome.escalated {
                ", one of them from governance"
            } else {
                ""
            }
        );
    }
    out
}

pub fn token_created(created: &CreatedToken) -> String {
    let mut out = String::new();
    say!(
        out,
        "token {} for {} ({}{}):",
        created.id,
        created.user,
        created.role,
        match created.kind {
            crate::domain::TokenKind::Agent => ", an agent: it never approves or rejects",
            crate::domain::TokenKind::Person => "",
        }
    );
    say!(out);
    say!(out, "    {}", created.token);
    say!(out);
    say!(
        out,
        "It is shown this once and only its hash is kept. Send it as `Authorization: Bearer <token>`, or paste it into the web UI's sign-in page."
    );
    out
}

pub fn tokens(tokens: &Vec<TokenRecord>) -> String {
    let mut out = String::new();
    if tokens.is_empty() {
        say!(
            out,
            "no tokens; create one with `hypod token create --user USER --role ROLE`"
        );
        return out;
    }
    say!(
        out,
        "{:<36}  {:<24} {:<10} {:<20} {}",
        "id",
        "user",
        "role",
        "created",
        "state"
    );
    for t in tokens {
        say!(
            out,
            "{:<36}  {:<24} {:<10} {:<20} {}",
            t.id,
            t.user,
            t.role,
            t.created_at.format("%Y-%m-%d %H:%M"),
            match (t.revoked_at, t.kind) {
                (Some(at), _) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                (None, crate::domain::TokenKind::Agent) => "live (agent)".into(),
                (None, crate::domain::TokenKind::Person) => "live".into(),
            }
        );
    }
    out
}

pub fn audit_report(report: &AuditReport) -> String {
    let mut out = String::new();
    if report.intact {
        say!(
            out,
            "audit log intact: {} entries, every link and key verified; {} proposals explained by the log",
            report.entries,
            report.proposals_explained
        );
        if let Some(head) = &report.head {
            say!(out, "head {head}");
        }
        for note in &report.notes {
            say!(out, "note: {note}");
        }
        return out;
    }
    say!(
        out,
        "AUDIT LOG DOES NOT VERIFY: {} problem(s) in {} entries",
        report.problems.len(),
        report.entries
    );
    for p in &report.problems {
        let place = match (&p.seq, &p.proposal_id, &p.token_id, &p.experiment_id) {
            (_, Some(id), _, _) => format!("proposal {id}"),
            (_, None, Some(id), _) => format!("token {id}"),
            (_, None, None, Some(id)) => format!("experiment {id}"),
            (Some(seq), None, None, None) => format!("entry {seq}"),
            (None, None, None, None) => "log".into(),
        };
        say!(out, "  {place}: {}", p.problem);
    }
    for note in &report.notes {
        say!(out, "  note: {note}");
    }
    out
}

pub fn import(summary: &ImportSummary) -> String {
    let mut out = String::new();
    say!(
        out,
        "imported {} experiments ({} new, {} updated, {} unchanged{}) in {:.2}s",
        summary.experiments,
        summary.inserted,
        summary.updated,
        summary.unchanged,
        if summary.skipped.is_empty() {
            String::new()
        } else {
            format!(", {} skipped", summary.skipped.len())
        },
        summary.seconds
    );
    out
}

/// `hypod sync`: one line per source, then what vanished.
pub fn sync(report: &crate::app::sync::SyncReport) -> String {
    use crate::app::sync::SyncStatus;
    let mut out = String::new();
    for s in &report.sources {
        match s.status {
            SyncStatus::Synced if s.inserted + s.updated == 0 => say!(
                out,
                "{} ({}): read {} experiments, nothing changed: no experiment written ({} unchanged, {} requests) in {:.2}s",
                s.source,
                s.kind,
                s.read,
                s.unchanged,
                s.requests,
                s.seconds
            ),
            SyncStatus::Synced => say!(
                out,
                "{} ({}): read {} experiments: {} new, {} updated, {} unchanged ({} requests) in {:.2}s",
                s.source,
                s.kind,
                s.read,
                s.inserted,
                s.updated,
                s.unchanged,
                s.requests,
                s.seconds
            ),
            SyncStatus::Failed => say!(
                out,
                "{} ({}): FAILED, nothing was written: {}",
                s.source,
                s.kind,
                s.error.as_deref().unwrap_or("unknown error")
            ),
        }
        if !s.vanished.is_empty() {
            say!(
                out,
                "  {} experiment(s) no longer listed by {} (kept, not deleted): {}",
                s.vanished.len(),
                s.source,
                s.vanished.join(", ")
            );
        }
    }
    out
}

/// A progress line on stderr while sources are read, shown only when stderr is a terminal.
pub struct SyncProgress {
    terminal: bool,
}

impl SyncProgress {
    pub fn on_stderr() -> SyncProgress {
        use std::io::IsTerminal;
        SyncProgress {
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Clears the line once the sync is done.
    pub fn clear(&self) {
        if self.terminal {
            eprint!("\r\x1b[K");
        }
    }
}

impl crate::sources::Progress for SyncProgress {
    fn update(&self, done: u64, total: Option<u64>, what: &str) {
        if !self.terminal {
            return;
        }
        match total {
            Some(total) => eprint!("\r\x1b[Ksync: {done} of {total} {what}"),
            None => eprint!("\r\x1b[Ksync: {done} {what}"),
        }
    }
}

/// What goes to stderr beside the import summary: each skipped record.
pub fn import_skipped(summary: &ImportSummary) -> String {
    let mut out = String::new();
    for skipped in &summary.skipped {
        say!(out, "skipped: {}", skipped.problem);
    }
    out
}

pub fn prompt(rendered: &RenderedPrompt) -> String {
    let mut out = String::new();
    say!(
        out,
        "=== system ({})\n{}\n",
        rendered.system_template,
        rendered.system
    );
    say!(
        out,
        "=== user ({})\n{}",
        rendered.user_template,
        rendered.user
    );
    out
}

/// What goes to stderr beside the rendered prompt: its size and digests.
pub fn prompt_stats(rendered: &RenderedPrompt) -> String {
    format!(
        "model {}; about {} of {} prompt tokens (estimated); evidence {} of {} experiments; template digest {}; input digest {}\n",
        rendered.model,
        rendered.estimated_tokens,
        rendered.token_budget,
        rendered.selection.evidence_shown,
        rendered.selection.evidence_total,
        rendered.template_digest,
        rendered.input_digest
    )
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

pub fn policy_check(report: &CheckReport) -> String {
    let mut out = String::new();
    for lint in &report.lints {
        say!(out, "{lint}");
    }
    say!(
        out,
        "{} rules in {} file(s) checked, {} error(s), {} other finding(s); policy set {}",
        report.rules,
        report.files,
        report.errors,
        report.lints.len() - report.errors,
        short(&report.policy_digest)
    );
    out
}

pub fn policy_tests(tests: &PolicyTests) -> String {
    let mut out = String::new();
    let report = &tests.report;
    for failure in &report.failures {
        say!(out, "FAIL {failure}");
    }
    say!(
        out,
        "{} passed, {} failed ({} cases in {} file(s))",
        report.passed,
        report.cases - report.passed,
        report.cases,
        report.files
    );
    out
}

pub fn evaluation(eval: &Evaluation) -> String {
    let mut out = String::new();
    let decision = &eval.decision;
    say!(
        out,
        "{}: would be {} (needs {} approval(s){})",
        eval.title,
        decision.status,
        decision.approvals_required,
        if decision.escalated {
            ", escalated"
        } else {
            ""
        }
    );
    for v in eval.verdicts.iter().filter(|v| v.failed()) {
        say!(
            out,
            "  FAIL {:<8} {}: {}",
            v.effect.as_str(),
            v.rule_id,
            v.message
        );
    }
    say!(
        out,
        "  {} rule(s) passed or did not apply",
        eval.verdicts.iter().filter(|v| v.passed).count()
    );
    out
}

pub fn explanation(explanation: &Explanation) -> String {
    let mut out = String::new();
    say!(
        out,
        "{} — {}: {} (needs {} approval(s))",
        explanation.proposal_id,
        explanation.title,
        explanation.status,
        explanation.approvals_required
    );
    say!(
        out,
        "verdicts made under policy set {}{}",
        short(&explanation.policy_digest),
        if explanation.same_policy_set {
            " (the policies on disk are the same)".to_string()
        } else {
            format!(
                "; the policies on disk are now {} — see `hypod policy replay`",
                short(&explanation.current_policy_digest)
            )
        }
    );
    for v in &explanation.verdicts {
        say!(
            out,
            "  {:<4} {:<8} {}: {}",
            v.outcome,
            v.effect,
            v.rule_id,
            v.message
        );
        if let Some(expr) = &v.expr {
            say!(
                out,
                "         {}{}",
                v.file
                    .as_deref()
                    .map(|f| format!("{f}: "))
                    .unwrap_or_default(),
                expr
            );
        }
    }
    out
}

pub fn replay(report: &ReplayReport, since: &str) -> String {
    let mut out = String::new();
    say!(
        out,
        "replayed {} proposal(s) from the last {since} against policy set {}: {} would change",
        report.replayed,
        short(&report.policy_digest),
        report.changed.len()
    );
    for change in &report.changed {
        say!(
            out,
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
            say!(
                out,
                "      {} {}: {} -> {}: {}",
                rule.effect,
                rule.rule_id,
                rule.old_outcome,
                rule.new_outcome,
                rule.message
            );
        }
    }
    out
}

pub fn init(written: &[std::path::PathBuf], dir: &std::path::Path) -> String {
    let mut out = String::new();
    for path in written {
        say!(out, "wrote {}", path.display());
    }
    if written.is_empty() {
        say!(
            out,
            "nothing to write: every file already exists in {}",
            dir.display()
        );
    }
    out
}

pub fn demo(demo: &Demo) -> String {
    let mut out = String::new();
    say!(out, "hypod demo in {}", demo.dir.display());
    say!(
        out,
        "imported {} experiments from the bundled sample history ({} new)",
        demo.imported,
        demo.inserted
    );
    say!(out);
    run_into(&mut out, &demo.run.run, &demo.run.queued);
    say!(out);
    let config_arg = demo.config_path.display();
    say!(out, "What to try next:");
    say!(out, "  hypod --config {config_arg} analyze                 # program health and per-experiment statistics");
    say!(
        out,
        "  hypod --config {config_arg} queue list --status pending_review"
    );
    say!(out, "  hypod --config {config_arg} queue show ID           # evidence, statistics, verdicts, provenance");
    say!(
        out,
        "  hypod --config {config_arg} token create --user you --role reviewer   # who you are, printed once"
    );
    say!(
        out,
        "  hypod --config {config_arg} queue approve ID --as you --note \"worth it\""
    );
    say!(
        out,
        "  hypod --config {config_arg} serve                     # the web UI on http://127.0.0.1:8080/ui"
    );
    say!(
        out,
        "  hypod --config {config_arg} export --status approved"
    );
    say!(
        out,
        "Edit {}/policies/ to change what may be proposed.",
        demo.dir.display()
    );
    out
}

/// `hypod levers`: one line per lever, then its moments and segments indented.
pub fn levers(base: &crate::analysis::LeverBase) -> String {
    let mut out = String::new();
    say!(
        out,
        "Lever knowledge base: {} lever(s), random-effects pools (DerSimonian–Laird) of valid concluded tests on commercial KPIs",
        base.levers.len()
    );
    if base.levers.is_empty() {
        say!(out, "  no lever has a valid concluded test yet");
        return out;
    }
    let pct = |x: f64| format!("{:+.1}%", x * 100.0);
    let row = |out: &mut String,
               name: &str,
               pool: &crate::analysis::levers::Pool,
               proven: usize,
               expected: Option<f64>,
               last: Option<chrono::NaiveDate>| {
        say!(
            out,
            "{:<34} {:>5} {:>6} {:>8} [{:>7}, {:>7}] {:>5.0}% {:>10.2e} {:>9} {}",
            crate::shorten(name, 34),
            pool.k,
            proven,
            pct(pool.effect),
            pct(pool.ci_low),
            pct(pool.ci_high),
            pool.i2 * 100.0,
            pool.tau2,
            expected.map(pct).unwrap_or_default(),
            last.map(|d| d.to_string()).unwrap_or_else(|| "—".into())
        );
    };
    say!(
        out,
        "{:<34} {:>5} {:>6} {:>8} {:>18} {:>6} {:>10} {:>9} {}",
        "lever / moment / segment",
        "k",
        "proven",
        "pooled",
        "95% CI",
        "I²",
        "τ²",
        "expected",
        "last tested"
    );
    for lever in &base.levers {
        row(
            &mut out,
            &lever.lever,
            &lever.pool,
            lever.proven,
            None,
            lever.last_tested,
        );
        for (moment, group) in &lever.by_moment {
            row(
                &mut out,
                &format!("  @ {moment}"),
                &group.pool,
                group.proven,
                Some(group.expected_lift),
                group.last_tested,
            );
        }
        for (segment, group) in &lever.by_segment {
            row(
                &mut out,
                &format!("  for {segment}"),
                &group.pool,
                group.proven,
                Some(group.expected_lift),
                group.last_tested,
            );
        }
        if let Some(best) = lever.best_test.as_ref().filter(|b| b.srm_flagged) {
            say!(
                out,
                "  ! its best test {} ({:+.1}%) had a sample ratio mismatch: never transferred",
                best.id,
                best.relative_lift * 100.0
            );
        }
    }
    say!(out);
    say!(
        out,
        "expected: the pool shrunk toward the lever's pool (empirical Bayes), what proposals expect there."
    );
    out
}
