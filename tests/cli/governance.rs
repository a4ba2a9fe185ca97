//! Governance, end to end at library level: the shipped policies and their test cases, one
//! blocked or escalated proposal per playbook failure mode (with its message), broken policy
//! files, `policy check` catching unknown fields, replay after an edit, and the near-duplicate
//! similarity measure. Reads only files inside the repository.

use chrono::{TimeZone, Utc};
use hypod::domain::{
    DuplicateKind, DuplicateRef, Enrichment, Proposal, ProposalStatus, Provenance,
};
use hypod::governance::cases::run_policy_tests;
use hypod::governance::catalog::Catalog;
use hypod::governance::policy::{PolicyError, RulePart};
use hypod::governance::replay::replay;
use hypod::governance::sample::{sample_draft, sample_enrichment, sample_program};
use hypod::governance::{
    decide, evaluate_all, govern_batch, ApprovalSettings, Effect, PolicyContext, PolicySet,
    QueueCounts, RunInputs, Severity, Verdict,
};
use hypod::history::{Moment, TestKey};
use hypod::proposer::{ProposalDraft, Risk};
use hypod::validate::{similarity, DUPLICATE_THRESHOLD};
use std::path::{Path, PathBuf};

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn catalog() -> Catalog {
    Catalog::load(&policies_dir().join("catalog.toml")).expect("the shipped catalog loads")
}

fn shipped() -> PolicySet {
    PolicySet::load(&policies_dir()).expect("the shipped policies load")
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 2, 0, 0)
        .single()
        .expect("valid time")
}

fn govern_with(
    draft: &ProposalDraft,
    enrichment: &Enrichment,
    queue: &QueueCounts,
    program: &hypod::analysis::ProgramHealth,
) -> Vec<Verdict> {
    let catalog = catalog();
    let context = PolicyContext::new(draft, enrichment, &catalog, program, queue, now());
    evaluate_all(&shipped(), &catalog, &context).expect("the shipped policies evaluate")
}

fn govern(draft: &ProposalDraft, enrichment: &Enrichment) -> Vec<Verdict> {
    govern_with(
        draft,
        enrichment,
        &QueueCounts::default(),
        &sample_program(),
    )
}

fn failing(verdicts: &[Verdict]) -> Vec<&Verdict> {
    verdicts.iter().filter(|v| v.failed()).collect()
}

/// Asserts exactly one rule fails, with this id, effect and message fragment.
fn assert_only_failure(verdicts: &[Verdict], rule: &str, effect: Effect, fragment: &str) {
    let failed = failing(verdicts);
    assert_eq!(failed.len(), 1, "expected only {rule} to fail: {failed:#?}");
    assert_eq!(failed[0].rule_id, rule);
    assert_eq!(failed[0].effect, effect);
    assert!(
        failed[0].message.contains(fragment),
        "message of {rule}: {:?} does not contain {fragment:?}",
        failed[0].message
    );
}

fn blocked(verdicts: &[Verdict]) -> bool {
    decide(verdicts, &ApprovalSettings::default()).status == ProposalStatus::Blocked
}

#[test]
fn shipped_policy_tests_pass() {
    let report = run_policy_tests(&policies_dir().join("tests"), &shipped(), &catalog());
    let failures: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(report.cases >= 15, "only {} cases", report.cases);
    assert_eq!(report.passed, report.cases);
}

#[test]
fn shipped_policies_pass_check_without_errors() {
    let lints = shipped().check(&catalog(), &sample_program());
    let errors: Vec<String> = lints
        .iter()
        .filter(|l| l.severity >= Severity::Warning)
        .map(|l| l.to_string())
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn the_sample_proposal_is_queued_with_one_approval() {
    let verdicts = govern(&sample_draft(), &sample_enrichment());
    assert!(failing(&verdicts).is_empty(), "{:#?}", failing(&verdicts));
    let decision = decide(&verdicts, &ApprovalSettings::default());
    assert_eq!(decision.status, ProposalStatus::PendingReview);
    assert_eq!(decision.approvals_required, 1);
}

#[test]
fn kpi_mirage_is_blocked() {
    let mut draft = sample_draft();
    draft.primary_kpi = "click_through_rate".into();
    let verdicts = govern(&draft, &sample_enrichment());
    assert_only_failure(
        &verdicts,
        "kpi-mirage",
        Effect::Deny,
        "KPI mirage: click_through_rate is not a commercial KPI. Commit to one of: conversion_rate, revenue_per_visitor",
    );
    assert!(blocked(&verdicts));
}

#[test]
fn latency_leak_is_blocked() {
    let mut draft = sample_draft();
    draft.expected_latency_ms = 120.0;
    draft.rendering = hypod::proposer::Rendering::Client;
    let verdicts = govern(&draft, &sample_enrichment());
    let leak = verdicts
        .iter()
        .find(|v| v.rule_id == "latency-leak")
        .expect("latency-leak verdict");
    assert!(leak.failed());
    assert_eq!(
        leak.message,
        "Latency leak: 120 ms added at p75 exceeds the client budget of 30 ms. Render it elsewhere or make it cheaper."
    );
    assert!(blocked(&verdicts));
}

#[test]
fn black_box_rule_is_blocked() {
    let mut draft = sample_draft();
    draft.rollback_plan = String::new();
    let verdicts = govern(&draft, &sample_enrichment());
    assert_only_failure(
        &verdicts,
        "black-box.rollback-plan",
        Effect::Deny,
        "Black-box rule: no rollback plan",
    );
    assert!(blocked(&verdicts));
}

#[test]
fn duplication_tax_is_blocked_for_each_kind() {
    for (kind, rule, fragment) in [
        (
            DuplicateKind::RunningExperiment,
            "duplication-tax.running-experiment",
            "running experiment exp-2026-0246 already tests this (similarity 0.93)",
        ),
        (
            DuplicateKind::OpenProposal,
            "duplication-tax.open-proposal",
            "open proposal exp-2026-0246 already covers this",
        ),
        (
            DuplicateKind::RejectedProposal,
            "duplication-tax.recent-rejection",
            "a reviewer rejected a near-identical proposal (exp-2026-0246",
        ),
    ] {
        let enrichment = Enrichment {
            duplicate_of: Some(DuplicateRef {
                kind,
                id: "exp-2026-0246".into(),
                similarity: 0.93,
            }),
            ..sample_enrichment()
        };
        let verdicts = govern(&sample_draft(), &enrichment);
        assert_only_failure(&verdicts, rule, Effect::Deny, fragment);
        assert!(blocked(&verdicts));
    }
}

#[test]
fn cart_checkout_is_escalated_not_blocked() {
    let mut draft = sample_draft();
    draft.moment = Moment::CartCheckout;
    let verdicts = govern(&draft, &sample_enrichment());
    assert_only_failure(
        &verdicts,
        "cart-checkout-risk",
        Effect::Escalate,
        "Cart/checkout risk",
    );
    let decision = decide(&verdicts, &ApprovalSettings::default());
    assert_eq!(decision.status, ProposalStatus::PendingReview);
    assert!(decision.escalated);
    assert_eq!(decision.approvals_required, 2);

    draft.risk = Risk::High;
    let verdicts = govern(&draft, &sample_enrichment());
    let settings = ApprovalSettings {
        approvals_required: 1,
        escalated_approvals_required: 3,
    };
    assert_eq!(decide(&verdicts, &settings).approvals_required, 3);
}

#[test]
fn governance_gap_counts_proposals_accepted_earlier_in_the_same_run() {
    let catalog = catalog();
    let run = RunInputs::new(&catalog, &sample_program());
    // Four different product-page proposals in one run: the fourth exceeds 3 per moment.
    let drafts: Vec<ProposalDraft> = (0..4)
        .map(|i| {
            let mut draft = sample_draft();
            draft.lever = format!("lever_{i}");
            draft
        })
        .collect();
    let enrichment = sample_enrichment();
    let mut queue = QueueCounts::default();
    let governed = govern_batch(
        &shipped(),
        &run,
        drafts.iter().map(|d| (d, &enrichment)),
        &mut queue,
        &ApprovalSettings::default(),
        now(),
    )
    .expect("governs");
    let statuses: Vec<ProposalStatus> = governed.iter().map(|g| g.decision.status).collect();
    assert_eq!(
        statuses,
        [
            ProposalStatus::PendingReview,
            ProposalStatus::PendingReview,
            ProposalStatus::PendingReview,
            ProposalStatus::Blocked
        ]
    );
    assert_only_failure(
        &governed[3].verdicts,
        "governance-gap.per-moment",
        Effect::Deny,
        "this run already queued 3 proposals for product_detail (limit 3 per moment)",
    );
    assert_eq!(queue.queued_this_run, 3);

    // The per-run limit.
    let queue = QueueCounts {
        queued_this_run: 8,
        ..QueueCounts::default()
    };
    let verdicts = govern_with(
        &sample_draft(),
        &sample_enrichment(),
        &queue,
        &sample_program(),
    );
    assert_only_failure(
        &verdicts,
        "governance-gap.per-run",
        Effect::Deny,
        "this run already queued 8 proposals (limit 8)",
    );
}

#[test]
fn stage_gate_blocks_an_immature_program() {
    let mut program = sample_program();
    program.maturity_stage = 2;
    program.readiness_reason = "only 12 decided experiments".into();
    let verdicts = govern_with(
        &sample_draft(),
        &sample_enrichment(),
        &QueueCounts::default(),
        &program,
    );
    assert_only_failure(
        &verdicts,
        "stage-gate",
        Effect::Deny,
        "this program is Stage 2 (only 12 decided experiments)",
    );
    assert!(blocked(&verdicts));
}

#[test]
fn consent_denials_come_with_the_policies() {
    let mut draft = sample_draft();
    draft.signals = vec!["health_inferences".into()];
    let verdicts = govern(&draft, &sample_enrichment());
    assert_only_failure(
        &verdicts,
        "consent.not-sensitive",
        Effect::Deny,
        "health_inferences",
    );
}

fn write_policies(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write policy");
    }
}

#[test]
fn a_policy_that_does_not_compile_names_file_rule_and_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_policies(
        dir.path(),
        &[(
            "broken.toml",
            "[[rule]]\nid = \"ok-rule\"\neffect = \"deny\"\nexpr = \"true\"\nmessage = \"m\"\n\n[[rule]]\nid = \"broken-rule\"\neffect = \"deny\"\nexpr = \"proposal.primary_kpi in \"\nmessage = \"m\"\n",
        )],
    );
    let err = PolicySet::load(dir.path()).expect_err("a broken rule stops loading");
    match &err {
        PolicyError::Compile {
            file,
            rule,
            part,
            file_line,
            line,
            ..
        } => {
            assert!(file.ends_with("broken.toml"), "{file}");
            assert_eq!(rule, "broken-rule");
            assert_eq!(*part, RulePart::Expr);
            assert_eq!(*file_line, 10);
            assert_eq!(*line, 1);
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("broken.toml:10"), "{text}");
    assert!(text.contains("\"broken-rule\""), "{text}");
}

#[test]
fn bad_effect_unknown_keys_and_duplicate_ids_are_load_errors() {
    let rule = |id: &str, extra: &str| {
        format!(
            "[[rule]]\nid = \"{id}\"\neffect = \"deny\"\nexpr = \"true\"\nmessage = \"m\"\n{extra}"
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    write_policies(
        dir.path(),
        &[("a.toml", &rule("same", "")), ("b.toml", &rule("same", ""))],
    );
    let err = PolicySet::load(dir.path()).expect_err("duplicate ids");
    assert!(
        matches!(&err, PolicyError::DuplicateRule { rule, .. } if rule == "same"),
        "{err}"
    );
    assert!(err.to_string().contains("a.toml") && err.to_string().contains("b.toml"));

    let dir = tempfile::tempdir().expect("tempdir");
    write_policies(
        dir.path(),
        &[("a.toml", &rule("x", "severity = \"high\"\n"))],
    );
    let err = PolicySet::load(dir.path()).expect_err("unknown key");
    assert!(err.to_string().contains("severity"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    write_policies(
        dir.path(),
        &[("a.toml", &rule("x", "").replace("deny", "block"))],
    );
    let err = PolicySet::load(dir.path()).expect_err("unknown effect");
    assert!(err.to_string().contains("a.toml"), "{err}");
    assert!(err.to_string().contains("block"), "{err}");
}

#[test]
fn a_rule_that_fails_to_evaluate_is_an_error_never_a_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_policies(
        dir.path(),
        &[(
            "typo.toml",
            "[[rule]]\nid = \"typo\"\neffect = \"warn\"\nexpr = \"proposal.primary_kip == 'x'\"\nmessage = \"m\"\n\n[[rule]]\nid = \"not-bool\"\neffect = \"deny\"\nexpr = \"proposal.primary_kpi\"\nmessage = \"m\"\n",
        )],
    );
    let policies = PolicySet::load(dir.path()).expect("compiles: the typo is only found when run");
    let catalog = catalog();
    let context = PolicyContext::new(
        &sample_draft(),
        &sample_enrichment(),
        &catalog,
        &sample_program(),
        &QueueCounts::default(),
        now(),
    );
    let err = evaluate_all(&policies, &catalog, &context).expect_err("evaluation error");
    assert!(
        matches!(&err, PolicyError::Evaluate { rule, file, .. } if rule == "typo" && file.ends_with("typo.toml")),
        "{err}"
    );
    assert!(err.to_string().contains("primary_kip"), "{err}");

    // A whole batch stops: nothing of it may be queued.
    let run = RunInputs::new(&catalog, &sample_program());
    let enrichment = sample_enrichment();
    let draft = sample_draft();
    let mut queue = QueueCounts::default();
    let result = govern_batch(
        &policies,
        &run,
        [(&draft, &enrichment)],
        &mut queue,
        &ApprovalSettings::default(),
        now(),
    );
    assert!(result.is_err());
    assert_eq!(queue.queued_this_run, 0);
}

#[test]
fn check_catches_unknown_fields_and_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_policies(
        dir.path(),
        &[(
            "lint.toml",
            r#"
[[rule]]
id = "guarded-typo"
effect = "deny"
description = "the guard hides the typo from a plain run"
when = "proposal.moment == 'search'"
expr = "proposal.expected_latncy_ms < 10.0"
message = "m"

[[rule]]
id = "unknown-variable"
effect = "warn"
description = "d"
expr = "proposals.size() > 0"
message = "m"

[[rule]]
id = "typo-in-message"
effect = "warn"
description = "d"
expr = "proposal.risk != 'high'"
message = "risky: {{ proposal.riks }}"

[[rule]]
id = "fine"
effect = "warn"
description = "d"
expr = "proposal.evidence.all(e, e.experiment_id != '') && catalog.segments[proposal.segment].identity == 'logged_in'"
message = "m"
"#,
        )],
    );
    let policies = PolicySet::load(dir.path()).expect("compiles");
    let lints = policies.check(&catalog(), &sample_program());
    let errors_for = |rule: &str| -> Vec<String> {
        lints
            .iter()
            .filter(|l| l.severity == Severity::Error && l.rule.as_deref() == Some(rule))
            .map(|l| l.to_string())
            .collect()
    };
    let typo = errors_for("guarded-typo");
    assert!(
        typo.iter().any(|l| l.contains("`expected_latncy_ms`")),
        "{lints:#?}"
    );
    assert!(!errors_for("unknown-variable").is_empty(), "{lints:#?}");
    assert!(
        errors_for("typo-in-message")
            .iter()
            .any(|l| l.contains("`riks`")),
        "{lints:#?}"
    );
    assert!(errors_for("fine").is_empty(), "{lints:#?}");
}

fn stored(id: &str, draft: ProposalDraft, verdicts: Vec<Verdict>, digest: &str) -> Proposal {
    let status = decide(&verdicts, &ApprovalSettings::default());
    Proposal {
        id: id.into(),
        run_id: "run-1".into(),
        status: status.status,
        created_at: now(),
        updated_at: now(),
        draft,
        enrichment: sample_enrichment(),
        verdicts,
        provenance: Provenance {
            policy_digest: digest.into(),
            ..Provenance::default()
        },
        approvals_required: status.approvals_required,
        superseded_by: None,
    }
}

#[test]
fn replay_shows_a_changed_verdict_after_a_rule_is_edited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let budget_rule = |limit: &str| {
        format!(
            "[[rule]]\nid = \"latency-leak\"\neffect = \"deny\"\nexpr = \"proposal.expected_latency_ms <= {limit}\"\nmessage = \"over {limit} ms\"\n"
        )
    };
    write_policies(dir.path(), &[("latency.toml", &budget_rule("25.0"))]);
    let before = PolicySet::load(dir.path()).expect("loads");
    let catalog = catalog();
    let run = RunInputs::new(&catalog, &sample_program());

    let mut slow = sample_draft();
    slow.expected_latency_ms = 12.0;
    slow.title = "Slow but within budget".into();
    let fast = sample_draft();
    let mut proposals = Vec::new();
    for (id, draft) in [("p-slow", slow), ("p-fast", fast)] {
        let context = PolicyContext::for_run(
            &run,
            &draft,
            &sample_enrichment(),
            &QueueCounts::default(),
            now(),
        );
        let verdicts = evaluate_all(&before, &catalog, &context).expect("evaluates");
        proposals.push(stored(id, draft, verdicts, before.digest()));
    }
    assert!(proposals
        .iter()
        .all(|p| p.status == ProposalStatus::PendingReview));

    // Unchanged rules: nothing changes.
    let report = replay(
        &proposals,
        &before,
        &run,
        &QueueCounts::default(),
        &ApprovalSettings::default(),
    )
    .expect("replays");
    assert_eq!(report.replayed, 2);
    assert!(report.changed.is_empty(), "{:#?}", report.changed);

    // A governance lead tightens the budget to 10 ms.
    write_policies(dir.path(), &[("latency.toml", &budget_rule("10.0"))]);
    let after = PolicySet::load(dir.path()).expect("loads");
    assert_ne!(before.digest(), after.digest());
    let report = replay(
        &proposals,
        &after,
        &run,
        &QueueCounts::default(),
        &ApprovalSettings::default(),
    )
    .expect("replays");
    assert_eq!(report.policy_digest, after.digest());
    assert_eq!(report.changed.len(), 1, "{:#?}", report.changed);
    let change = &report.changed[0];
    assert_eq!(change.proposal_id, "p-slow");
    assert_eq!(change.old_status, ProposalStatus::PendingReview);
    assert_eq!(change.new_status, ProposalStatus::Blocked);
    assert_eq!(change.old_policy_digest, before.digest());
    assert_eq!(change.changes.len(), 1);
    assert_eq!(change.changes[0].rule_id, "latency-leak");
    assert_eq!(change.changes[0].old_outcome, "pass");
    assert_eq!(change.changes[0].new_outcome, "fail");
    assert_eq!(change.changes[0].message, "over 10.0 ms");
}

#[test]
fn digest_covers_policies_and_catalog() {
    let a = PolicySet::from_sources(
        vec![(
            "a.toml".into(),
            "[[rule]]\nid = \"r\"\neffect = \"warn\"\nexpr = \"true\"\nmessage = \"m\"\n".into(),
        )],
        Some("catalog one"),
    )
    .expect("loads");
    let b = PolicySet::from_sources(a.files.clone(), Some("catalog two")).expect("loads");
    let c = PolicySet::from_sources(a.files.clone(), Some("catalog one")).expect("loads");
    assert_ne!(a.digest(), b.digest());
    assert_eq!(a.digest(), c.digest());
    assert_eq!(a.digest().len(), 64);
}

#[test]
fn embedded_defaults_match_the_policy_folder() {
    let embedded = PolicySet::defaults().expect("embedded defaults load");
    let on_disk = shipped();
    let ids = |set: &PolicySet| set.rules.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&embedded), ids(&on_disk));
    let texts = |set: &PolicySet| set.files.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&embedded), texts(&on_disk));
}

#[test]
fn similarity_catches_the_same_idea_in_the_same_place_only() {
    let key = TestKey::new(Moment::Search, "personal_autocomplete", "all_visitors");
    let renamed = TestKey::new(Moment::Search, "autocomplete_personal", "all_visitors");
    let other_segment = TestKey::new(Moment::Search, "personal_autocomplete", "new_visitors");
    let other_lever = TestKey::new(Moment::Search, "query_suggestions", "all_visitors");
    assert_eq!(similarity(&key, "anything", &key, "else entirely"), 1.0);

    let text = "If we apply personal autocomplete for all visitors at the search moment, conversion rate will rise";
    // The same idea under a reworded lever name, in the same place: a duplicate.
    assert!(similarity(&key, text, &renamed, text) >= DUPLICATE_THRESHOLD);
    // Another segment is another test, however alike the words.
    assert!(similarity(&key, text, &other_segment, text) < DUPLICATE_THRESHOLD);
    // Another lever with templated text about it is not a duplicate either.
    let templated = "If we apply query suggestions for all visitors at the search moment, conversion rate will rise";
    assert!(similarity(&key, text, &other_lever, templated) < DUPLICATE_THRESHOLD);
    // Symmetric and bounded.
    for (a, b) in [
        (&key, &renamed),
        (&key, &other_segment),
        (&key, &other_lever),
    ] {
        let ab = similarity(a, text, b, templated);
        let ba = similarity(b, templated, a, text);
        assert!((ab - ba).abs() < 1e-12);
        assert!((0.0..=1.0).contains(&ab));
    }
}

#[test]
fn a_failing_policy_test_shows_the_rule_and_both_values() {
    use hypod::governance::cases::{run_case_text, TestReport};
    let mut report = TestReport::default();
    run_case_text(
        "wrong.toml",
        "[[case]]\nname = \"wrong expectation\"\nproposal = { primary_kpi = \"click_through_rate\" }\nexpect = { \"kpi-mirage\" = \"pass\" }\n\n[[case]]\nname = \"typo in the case\"\nproposal = { primry_kpi = \"x\" }\n",
        &shipped(),
        &catalog(),
        &ApprovalSettings::default(),
        &mut report,
    );
    assert_eq!(report.cases, 2);
    assert_eq!(report.passed, 0);
    let first = &report.failures[0];
    assert_eq!(first.rule.as_deref(), Some("kpi-mirage"));
    assert_eq!(
        (first.expected.as_str(), first.actual.as_str()),
        ("pass", "fail")
    );
    let text = first.to_string();
    assert!(
        text.contains("wrong.toml") && text.contains("expected pass, got fail"),
        "{text}"
    );
    assert!(text.contains("KPI mirage"), "{text}");
    assert!(
        report.failures[1].detail.contains("primry_kpi"),
        "{:?}",
        report.failures[1]
    );
    eprintln!("{}\n{}", report.failures[0], report.failures[1]);
}

#[test]
fn error_texts_read_well() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_policies(
        dir.path(),
        &[("p.toml", "[[rule]]\nid = \"r\"\neffect = \"deny\"\nexpr = \"proposal.risk ==\"\nmessage = \"m\"\n")],
    );
    let err = PolicySet::load(dir.path()).expect_err("broken");
    eprintln!("{err}");
    let policies = shipped();
    let lints = {
        let dir = tempfile::tempdir().expect("tempdir");
        write_policies(
            dir.path(),
            &[("p.toml", "[[rule]]\nid = \"r\"\neffect = \"deny\"\nexpr = \"proposal.riks == 'high'\"\nmessage = \"m\"\n")],
        );
        PolicySet::load(dir.path())
            .expect("loads")
            .check(&catalog(), &sample_program())
    };
    for lint in &lints {
        eprintln!("{lint}");
    }
    assert!(!policies.rules.is_empty());
}

#[test]
fn explain_lists_failed_rules_first_with_their_expressions() {
    use hypod::governance::explain::explain;
    let policies = shipped();
    let catalog = catalog();
    let mut draft = sample_draft();
    draft.moment = Moment::CartCheckout;
    draft.primary_kpi = "click_through_rate".into();
    let context = PolicyContext::new(
        &draft,
        &sample_enrichment(),
        &catalog,
        &sample_program(),
        &QueueCounts::default(),
        now(),
    );
    let verdicts = evaluate_all(&policies, &catalog, &context).expect("evaluates");
    let proposal = stored("p-1", draft, verdicts, policies.digest());
    let explanation = explain(&proposal, &policies, &ApprovalSettings::default());
    assert!(explanation.same_policy_set);
    assert_eq!(explanation.governance_status, ProposalStatus::Blocked);
    let first = &explanation.verdicts[0];
    assert_eq!(
        (first.rule_id.as_str(), first.outcome.as_str()),
        ("kpi-mirage", "fail")
    );
    assert_eq!(
        first.expr.as_deref(),
        Some("proposal.primary_kpi in catalog.commercial_kpis")
    );
    assert!(first
        .file
        .as_deref()
        .is_some_and(|f| f.ends_with("kpi-mirage.toml")));
    assert_eq!(explanation.verdicts[1].rule_id, "cart-checkout-risk");
    assert!(explanation.verdicts[2..]
        .iter()
        .all(|v| v.outcome == "pass"));
}
