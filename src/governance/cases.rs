//! `policy test`: the cases in `policies/tests/*.toml`, each a proposal (the sample proposal
//! with some fields overridden), optional program and queue overrides, and the verdicts it
//! must get. This module owns the case format and running it; a failure names the file, the
//! case, the rule, and the expected and actual values.
//!
//! ```toml
//! [[case]]
//! name = "click-through is a KPI mirage"
//! proposal = { primary_kpi = "click_through_rate" }   # draft and enrichment fields
//! program = { maturity_stage = 2 }                     # fields of program health
//! queue = { queued_this_run = 8 }                      # queue counts
//! expect = { "kpi-mirage" = "fail", "stage-gate" = "fail" }
//! expect_failing = ["kpi-mirage", "stage-gate"]        # optional: exactly these rules fail
//! expect_status = "blocked"                            # optional: blocked | pending_review
//! expect_approvals = 1                                 # optional
//! expect_message = { "kpi-mirage" = "click_through_rate" }  # optional: message contains
//! ```

use super::catalog::Catalog;
use super::context::{PolicyContext, QueueCounts, RunInputs};
use super::policy::{outcome_word, PolicySet};
use super::sample;
use super::{decide, evaluate_all, ApprovalSettings, Verdict};
use crate::domain::ProposalDraft;
use crate::domain::{Enrichment, ProposalStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    proposal: Map<String, Json>,
    #[serde(default)]
    program: Map<String, Json>,
    #[serde(default)]
    queue: Option<Json>,
    /// RFC 3339; defaults to the time the tests run.
    now: Option<String>,
    #[serde(default)]
    expect: BTreeMap<String, String>,
    expect_failing: Option<Vec<String>>,
    expect_status: Option<String>,
    expect_approvals: Option<u32>,
    #[serde(default)]
    expect_message: BTreeMap<String, String>,
}

/// One thing a case expected and did not get.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseFailure {
    pub file: String,
    pub case: String,
    /// The rule concerned, when the failure is about one rule.
    pub rule: Option<String>,
    pub expected: String,
    pub actual: String,
    /// The failing rule's message, or what went wrong running the case.
    pub detail: String,
}

impl std::fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: case {:?}", self.file, self.case)?;
        if let Some(rule) = &self.rule {
            write!(f, ": rule {rule:?}")?;
        }
        write!(f, ": expected {}, got {}", self.expected, self.actual)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TestReport {
    pub files: usize,
    pub cases: usize,
    pub passed: usize,
    pub failures: Vec<CaseFailure>,
}

impl TestReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty() && self.cases > 0
    }
}

fn object_of<T: Serialize>(value: &T) -> Map<String, Json> {
    match serde_json::to_value(value) {
        Ok(Json::Object(map)) => map,
        _ => Map::new(),
    }
}

/// The sample proposal with `overrides` applied, split back into draft and enrichment.
pub fn proposal_from_overrides(
    overrides: &Map<String, Json>,
) -> Result<(ProposalDraft, Enrichment), String> {
    let mut draft = object_of(&sample::sample_draft());
    let mut enrichment = object_of(&sample::sample_enrichment());
    for (key, value) in overrides {
        if draft.contains_key(key) {
            draft.insert(key.clone(), value.clone());
        } else if enrichment.contains_key(key) {
            enrichment.insert(key.clone(), value.clone());
        } else if key == "required_purposes" || key == "latency_budget_ms" {
            return Err(format!(
                "proposal.{key} is computed from the catalog: change signals or rendering instead"
            ));
        } else {
            let mut known: Vec<&str> = draft
                .keys()
                .chain(enrichment.keys())
                .map(String::as_str)
                .collect();
            known.sort_unstable();
            return Err(format!(
                "proposal has no field {key:?} (fields: {})",
                known.join(", ")
            ));
        }
    }
    let draft: ProposalDraft =
        serde_json::from_value(Json::Object(draft)).map_err(|e| format!("proposal: {e}"))?;
    let enrichment: Enrichment =
        serde_json::from_value(Json::Object(enrichment)).map_err(|e| format!("proposal: {e}"))?;
    Ok((draft, enrichment))
}

fn failure(
    file: &str,
    case: &str,
    rule: Option<&str>,
    expected: &str,
    actual: &str,
    detail: &str,
) -> CaseFailure {
    CaseFailure {
        file: file.into(),
        case: case.into(),
        rule: rule.map(str::to_string),
        expected: expected.into(),
        actual: actual.into(),
        detail: detail.into(),
    }
}

/// Runs one case; returns what it expected and did not get.
fn run_case(
    file: &str,
    case: &Case,
    policies: &PolicySet,
    catalog: &Catalog,
    settings: &ApprovalSettings,
) -> Vec<CaseFailure> {
    let setup_error = |detail: String| {
        vec![failure(
            file,
            &case.name,
            None,
            "a runnable case",
            "an error",
            &detail,
        )]
    };
    let (draft, enrichment) = match proposal_from_overrides(&case.proposal) {
        Ok(pair) => pair,
        Err(detail) => return setup_error(detail),
    };
    let mut program = object_of(&sample::sample_program());
    for (key, value) in &case.program {
        if !program.contains_key(key) {
            return setup_error(format!("program has no field {key:?}"));
        }
        program.insert(key.clone(), value.clone());
    }
    let queue: QueueCounts = match &case.queue {
        None => QueueCounts::default(),
        Some(json) => match serde_json::from_value(json.clone()) {
            Ok(queue) => queue,
            Err(e) => return setup_error(format!("queue: {e}")),
        },
    };
    let now: DateTime<Utc> = match &case.now {
        None => Utc::now(),
        Some(text) => match DateTime::parse_from_rfc3339(text) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => return setup_error(format!("now = {text:?}: {e}")),
        },
    };
    let run = RunInputs::from_program_json(catalog, Json::Object(program));
    let context = PolicyContext::for_run(&run, &draft, &enrichment, &queue, now);
    let verdicts = match evaluate_all(policies, catalog, &context) {
        Ok(verdicts) => verdicts,
        Err(err) => return setup_error(err.to_string()),
    };
    check_expectations(file, case, &verdicts, settings)
}

fn check_expectations(
    file: &str,
    case: &Case,
    verdicts: &[Verdict],
    settings: &ApprovalSettings,
) -> Vec<CaseFailure> {
    let mut failures = Vec::new();
    let find = |rule: &str| verdicts.iter().find(|v| v.rule_id == rule);
    for (rule, expected) in &case.expect {
        if expected != "pass" && expected != "fail" {
            failures.push(failure(
                file,
                &case.name,
                Some(rule),
                "\"pass\" or \"fail\"",
                expected,
                "expect values are pass or fail",
            ));
            continue;
        }
        let verdict = find(rule);
        let actual = outcome_word(verdict);
        if actual != expected {
            let detail = match verdict {
                Some(v) => v.message.clone(),
                None => "no such rule in the policy set or consent rules".into(),
            };
            failures.push(failure(
                file,
                &case.name,
                Some(rule),
                expected,
                actual,
                &detail,
            ));
        }
    }
    if let Some(expected) = &case.expect_failing {
        let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        expected.sort_unstable();
        let mut actual: Vec<&str> = verdicts
            .iter()
            .filter(|v| v.failed())
            .map(|v| v.rule_id.as_str())
            .collect();
        actual.sort_unstable();
        if expected != actual {
            let messages: Vec<String> = verdicts
                .iter()
                .filter(|v| v.failed() && !expected.contains(&v.rule_id.as_str()))
                .map(|v| format!("{}: {}", v.rule_id, v.message))
                .collect();
            failures.push(failure(
                file,
                &case.name,
                None,
                &format!("failing rules [{}]", expected.join(", ")),
                &format!("[{}]", actual.join(", ")),
                &messages.join("; "),
            ));
        }
    }
    let decision = decide(verdicts, settings);
    if let Some(expected) = &case.expect_status {
        match ProposalStatus::parse(expected) {
            Some(status) if status == decision.status => {}
            Some(_) => failures.push(failure(
                file,
                &case.name,
                None,
                &format!("status {expected}"),
                &format!("status {}", decision.status),
                "",
            )),
            None => failures.push(failure(
                file,
                &case.name,
                None,
                "a status (blocked, pending_review)",
                expected,
                "",
            )),
        }
    }
    if let Some(expected) = case.expect_approvals {
        if expected != decision.approvals_required {
            failures.push(failure(
                file,
                &case.name,
                None,
                &format!("{expected} approvals"),
                &format!("{} approvals", decision.approvals_required),
                "",
            ));
        }
    }
    for (rule, fragment) in &case.expect_message {
        let message = find(rule).map(|v| v.message.as_str()).unwrap_or("");
        if !message.contains(fragment.as_str()) {
            failures.push(failure(
                file,
                &case.name,
                Some(rule),
                &format!("a message containing {fragment:?}"),
                &format!("{message:?}"),
                "",
            ));
        }
    }
    failures
}

/// Runs the cases of one file's text.
pub fn run_case_text(
    file: &str,
    text: &str,
    policies: &PolicySet,
    catalog: &Catalog,
    settings: &ApprovalSettings,
    report: &mut TestReport,
) {
    report.files += 1;
    let parsed: CaseFile = match toml::from_str(text) {
        Ok(parsed) => parsed,
        Err(err) => {
            report.failures.push(failure(
                file,
                "",
                None,
                "a valid test file",
                "an error",
                err.to_string().trim_end(),
            ));
            return;
        }
    };
    for case in &parsed.cases {
        report.cases += 1;
        let failures = run_case(file, case, policies, catalog, settings);
        if failures.is_empty() {
            report.passed += 1;
        }
        report.failures.extend(failures);
    }
}

/// Runs every `*.toml` in `dir` (e.g. `policies/tests`), sorted by name, with the default
/// approval settings.
pub fn run_policy_tests(dir: &Path, policies: &PolicySet, catalog: &Catalog) -> TestReport {
    run_policy_tests_with(dir, policies, catalog, &ApprovalSettings::default())
}

pub fn run_policy_tests_with(
    dir: &Path,
    policies: &PolicySet,
    catalog: &Catalog,
    settings: &ApprovalSettings,
) -> TestReport {
    let mut report = TestReport::default();
    let mut paths: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(err) => {
            report.failures.push(failure(
                &dir.display().to_string(),
                "",
                None,
                "a readable folder of test files",
                "an error",
                &err.to_string(),
            ));
            return report;
        }
    };
    paths.sort();
    for path in paths {
        let file = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => run_case_text(&file, &text, policies, catalog, settings, &mut report),
            Err(err) => report.failures.push(failure(
                &file,
                "",
                None,
                "a readable file",
                "an error",
                &err.to_string(),
            )),
        }
    }
    report
}
