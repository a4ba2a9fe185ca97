//! Governance tooling through the real binary: the shipped policies pass their own tests, a
//! broken policy file stops a run with nothing queued, and `policy replay` shows the impact of
//! an edit before it merges.

use crate::common::{stderr, Workspace};
use std::path::Path;

/// A workspace with its own copy of the shipped policies, so a test can edit them.
fn workspace_with_own_policies() -> Workspace {
    let ws = Workspace::with_config("");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let target = ws.path().join("policies");
    copy_dir(&source, &target);
    std::fs::write(
        ws.path().join("hypod.toml"),
        "[database]\nurl = \"sqlite://hypod.db\"\n[governance]\npolicies = \"policies\"\n",
    )
    .unwrap();
    ws
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn the_shipped_policies_lint_clean_and_pass_their_tests() {
    let ws = Workspace::new();
    let check = ws.json(&["policy", "check", "--json"]);
    assert_eq!(check["errors"], 0, "{check:#}");
    assert!(check["rules"].as_u64().unwrap() >= 7);
    let test = ws.json(&["policy", "test", "--json"]);
    assert!(test["cases"].as_u64().unwrap() >= 7);
    assert_eq!(test["failures"].as_array().unwrap().len(), 0, "{test:#}");
}

#[test]
fn a_broken_policy_file_stops_the_run_and_nothing_is_queued() {
    let ws = workspace_with_own_policies();
    ws.import_sample();
    let file = ws.path().join("policies/kpi-mirage.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let broken = text.replacen("expr = \"", "expr = \"(((", 1);
    assert_ne!(text, broken);
    std::fs::write(&file, broken).unwrap();

    let output = ws.hypod(&["run"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("kpi-mirage.toml"), "{err}");
    assert!(err.contains("kpi-mirage"), "{err}");
    let queue = ws.json(&["queue", "list", "--json"]);
    assert_eq!(queue.as_array().unwrap().len(), 0);
    let check = ws.hypod(&["policy", "check"]);
    assert_eq!(check.status.code(), Some(2));
}

#[test]
fn replay_shows_the_verdicts_an_edit_would_change() {
    let ws = workspace_with_own_policies();
    ws.import_sample();
    let run = ws.json(&["run", "--json"]);
    assert!(run["run"]["summary"]["queued"].as_u64().unwrap() > 0);
    let unchanged = ws.json(&["policy", "replay", "--json"]);
    assert_eq!(
        unchanged["changed"].as_array().unwrap().len(),
        0,
        "{unchanged:#}"
    );

    // A governance lead tightens the latency budget rule to 1 ms.
    let file = ws.path().join("policies/latency-leak.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let first_expr = text
        .lines()
        .find(|l| l.starts_with("expr = "))
        .expect("an expr line")
        .to_string();
    let edited = text.replacen(
        &first_expr,
        "expr = \"proposal.expected_latency_ms <= 1.0\"",
        1,
    );
    std::fs::write(&file, edited).unwrap();

    let replay = ws.json(&["policy", "replay", "--since", "30d", "--json"]);
    let changed = replay["changed"].as_array().unwrap();
    assert!(!changed.is_empty(), "{replay:#}");
    let first = &changed[0];
    assert_eq!(first["old_status"], "pending_review");
    assert_eq!(first["new_status"], "blocked");
    assert!(first["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["rule_id"] == "latency-leak"
            && c["old_outcome"] == "pass"
            && c["new_outcome"] == "fail"));
    // Replay changes nothing in the queue: it only reports.
    let still = ws.json(&[
        "queue",
        "show",
        first["proposal_id"].as_str().unwrap(),
        "--json",
    ]);
    assert_eq!(still["proposal"]["status"], "pending_review");
}

#[test]
fn eval_and_explain_show_why() {
    let ws = Workspace::new();
    ws.import_sample();
    let run = ws.json(&["run", "--json"]);
    let id = run["proposals"][0]["id"].as_str().unwrap().to_string();
    let shown = ws.json(&["queue", "show", &id, "--json"]);
    let mut draft = shown["proposal"]["draft"].clone();
    draft["primary_kpi"] = "click_through_rate".into();
    draft["segment"] = "vip_loyalty".into();
    let file = ws.file("draft.json", &draft.to_string());
    let eval = ws.json(&["policy", "eval", file.to_str().unwrap(), "--json"]);
    assert_eq!(eval["decision"]["status"], "blocked");
    assert!(eval["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["rule_id"] == "kpi-mirage" && v["passed"] == false));

    let explained = ws.json(&["policy", "explain", &id, "--json"]);
    assert_eq!(explained["proposal_id"], id.as_str());
    assert_eq!(explained["same_policy_set"], true);
    assert!(!explained["verdicts"].as_array().unwrap().is_empty());

    // A draft claiming to be approved is not a draft.
    draft["status"] = "approved".into();
    let file = ws.file("claims.json", &draft.to_string());
    let output = ws.hypod(&["policy", "eval", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("status"), "{}", stderr(&output));
}
