//! The learning loop (issue #16, item 4), through the real binary: experiments whose
//! `source_proposal` names a queued proposal link back to it; `analyze --json` reports the track
//! record of hypod's own proposals (tested, proven rate, decision time, calibration against the
//! predicted interval) beside the rest of the program; a transfer that failed makes its lever
//! lose weight; reviewers' rejection reasons, summarised per strategy, reach the builtin
//! proposer's rationale and the model's prompt.
//!
//! The expected figures are worked out here from the experiments the test writes (their lifts
//! are chosen, not computed by hypod), never read back from hypod's own output.

use crate::support::{Hypod, FIXED_NOW, SAMPLE};
use serde_json::{json, Value};

/// 36 days after [`FIXED_NOW`]: the first run's pending proposals have expired by then.
const LATER: &str = "2026-11-20T09:00:00Z";

/// A concluded two-arm test of `proposal`'s place with `control` and `treatment` conversions
/// out of 100 000 visitors each.
fn follow_up(id: &str, proposal: &Value, source: &str, control: u64, treatment: u64) -> String {
    let d = &proposal["proposal"]["draft"];
    json!({
        "id": id, "name": format!("Follow-up of {}", d["title"].as_str().unwrap_or("")),
        "moment": d["moment"], "lever": d["lever"], "segment": d["segment"],
        "primary_kpi": "conversion_rate", "status": "concluded",
        "started_at": "2026-10-20", "ended_at": "2026-11-05", "decided_at": "2026-11-10",
        "decision": "none", "source_proposal": source,
        "variants": [
            {"name": "control", "control": true, "visitors": 100000, "conversions": control},
            {"name": "treatment", "control": false, "visitors": 100000, "conversions": treatment}
        ]
    })
    .to_string()
}

fn show(hypod: &Hypod, id: &str) -> Value {
    hypod.ok(&["queue", "show", id, "--json"]).json()
}

#[test]
fn run_proposals_link_back_and_their_outcomes_feed_the_next_run() {
    let mut hypod = Hypod::new();
    hypod.now = Some(FIXED_NOW);
    hypod.ok(&["import", SAMPLE]);
    hypod.ok(&["run"]);
    let pending = hypod
        .ok(&["queue", "list", "--status", "pending_review", "--json"])
        .json();
    let pending = pending.as_array().expect("a list");
    let transfer = pending
        .iter()
        .find(|p| p["strategy"] == "transfer")
        .expect("a pending transfer");
    let transfer = show(&hypod, transfer["id"].as_str().unwrap());
    let other = pending
        .iter()
        .find(|p| p["id"] != transfer["proposal"]["id"] && p["approvals_required"] == 1)
        .expect("a second pending proposal");
    let other = show(&hypod, other["id"].as_str().unwrap());
    let (transfer_id, other_id) = (
        transfer["proposal"]["id"].as_str().unwrap().to_string(),
        other["proposal"]["id"].as_str().unwrap().to_string(),
    );
    let interval = other["proposal"]["enrichment"]["predicted_interval"]
        .as_array()
        .map(|i| (i[0].as_f64().unwrap(), i[1].as_f64().unwrap()))
        .expect("the proposal carries its predicted interval");

    // People ran both: the transfer came out flat (+0.2 %, inconclusive), the other idea won
    // clearly (+10 %); a third experiment names a proposal this database never held.
    let lines = [
        follow_up("exp-follow-1", &transfer, &transfer_id, 5000, 5010),
        follow_up("exp-follow-2", &other, &other_id, 5000, 5500),
        follow_up("exp-follow-3", &other, "no-such-proposal", 5000, 5000),
    ];
    let file = hypod.path().join("follow-ups.ndjson");
    std::fs::write(&file, lines.join("\n")).expect("write");
    hypod.ok(&["import", file.to_str().unwrap()]);

    // A reviewer rejects a third proposal, with a reason.
    hypod.token("rita", "reviewer");
    // A third proposal whose strategy has another idea left, so that the next run proposes
    // that strategy again.
    let rest: Vec<&Value> = pending
        .iter()
        .filter(|p| p["id"] != transfer_id.as_str() && p["id"] != other_id.as_str())
        .collect();
    let third = rest
        .iter()
        .find(|p| {
            p["approvals_required"] == 1
                && rest
                    .iter()
                    .filter(|q| q["strategy"] == p["strategy"])
                    .count()
                    >= 2
        })
        .expect("a third pending proposal whose strategy has another idea");
    let rejected_strategy = third["strategy"].as_str().expect("a strategy").to_string();
    hypod.ok(&[
        "queue",
        "reject",
        third["id"].as_str().unwrap(),
        "--as",
        "rita",
        "--reason",
        "segment too small to read within a quarter",
    ]);

    // Proposals are dated by the database's clock; the history above was written for
    // proposals queued on FIXED_NOW.
    crate::trust_daemon::date_proposals(&hypod, FIXED_NOW);
    hypod.now = Some(LATER);
    let analysis = hypod.ok(&["analyze", "--json"]).json();
    let learning = &analysis["learning"];
    let builtin = &learning["hypod"][0];
    assert_eq!(builtin["source"], "builtin", "{learning:#}");
    assert_eq!(builtin["experiments"], 2);
    assert_eq!(builtin["tested"], 2);
    assert_eq!(builtin["proven"], 1);
    assert_eq!(builtin["proven_rate"], 0.5);
    // Queued 2026-10-15, decided 2026-11-10.
    assert_eq!(builtin["median_decision_days"], 26.0);
    let lift = 0.1;
    let inside = interval.0 <= lift && lift <= interval.1;
    let flat_inside = {
        let i = transfer["proposal"]["enrichment"]["predicted_interval"]
            .as_array()
            .map(|i| (i[0].as_f64().unwrap(), i[1].as_f64().unwrap()));
        i.map(|(low, high)| low <= 0.002 && 0.002 <= high)
    };
    let with_interval = 1 + usize::from(flat_inside.is_some());
    let inside_count = usize::from(inside) + usize::from(flat_inside == Some(true));
    assert_eq!(
        builtin["with_interval"].as_u64().unwrap_or(0),
        with_interval as u64
    );
    assert_eq!(
        builtin["inside_interval"].as_u64().unwrap_or(0),
        inside_count as u64
    );
    assert_eq!(
        builtin["calibration"].as_f64(),
        Some(inside_count as f64 / with_interval as f64)
    );
    // The rest of the program: the sample's 246 experiments and the one with an unknown source.
    assert_eq!(learning["program"]["experiments"], 247);
    assert_eq!(learning["unknown_sources"], json!(["exp-follow-3"]));
    let links = learning["links"].as_array().expect("links");
    assert_eq!(links.len(), 2);
    let link = links
        .iter()
        .find(|l| l["experiment_id"] == "exp-follow-2")
        .expect("the winner's link");
    assert_eq!(link["proposal_id"], other_id.as_str());
    assert_eq!(link["outcome"], "proven");
    assert_eq!(link["inside_interval"], inside);
    let lever = transfer["proposal"]["draft"]["lever"]
        .as_str()
        .unwrap()
        .to_ascii_lowercase();
    assert_eq!(learning["failed_transfers"], json!({ lever.clone(): 1 }));
    // The proposal links to the experiment that tested it.
    let shown = show(&hypod, &other_id);
    assert_eq!(
        shown["tested_as"][0]["experiment_id"], "exp-follow-2",
        "{shown:#}"
    );
    let text = hypod.ok(&["queue", "show", &other_id]).stdout;
    assert!(
        text.contains("tested as    exp-follow-2: proven, realised +10.0%"),
        "{text}"
    );
    let token = hypod.token("vera", "viewer");
    let daemon = crate::review::serve(&hypod);
    let page = crate::review::request(
        &daemon.addr,
        "GET",
        &format!("/ui/proposals/{other_id}"),
        &[("Cookie", &format!("hypod_token={token}"))],
        None,
    );
    drop(daemon);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("<td class=\"mono\">exp-follow-2</td><td>proven</td><td>+10.0%</td>"),
        "{}",
        page.body
    );
    // The analysis text view says it too.
    let text = hypod.ok(&["analyze"]).stdout;
    assert!(text.contains("hypod's own proposals"), "{text}");

    // The model reads the same: rejections per strategy, the track record, the failed transfer.
    let rendered = hypod.ok(&["prompt", "render", "--json"]).json();
    let user = rendered["user"].as_str().expect("the user message");
    assert!(
        user.contains(&format!("\"rejected_strategy\":\"{rejected_strategy}\"")),
        "{user}"
    );
    assert!(user.contains("segment too small to read within a quarter"));
    assert!(user.contains("\"track_record\":\"builtin\""), "{user}");
    assert!(
        user.contains(&format!("\"failed_transfers_of\":\"{lever}\"")),
        "{user}"
    );

    // The next run (the first run's pending proposals have expired): the builtin proposer's
    // ideas of the rejected strategy say they were weighed down, and any transfer of the lever
    // whose transfer failed says so too.
    let next = hypod.ok(&["run", "--json"]).json();
    let mut noted = 0;
    for p in next["proposals"].as_array().expect("proposals") {
        let shown = show(&hypod, p["id"].as_str().unwrap());
        let rationale = shown["proposal"]["draft"]["rationale"].as_str().unwrap();
        if p["strategy"] == rejected_strategy.as_str() {
            assert!(
                rationale.contains(&format!(
                    "Reviewers rejected 1 {rejected_strategy} proposal(s) lately"
                )),
                "{rationale}"
            );
            noted += 1;
        }
        if p["strategy"] == "transfer"
            && p["lever"].as_str().map(str::to_ascii_lowercase) == Some(lever.clone())
        {
            assert!(rationale.contains("Earlier transfers of"), "{rationale}");
        }
    }
    assert!(
        noted >= 1,
        "an idea of the rejected strategy was proposed again: {next:#}"
    );
}
