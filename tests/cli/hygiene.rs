//! Queue hygiene (issue #16, item 5), through the real binary on SQLite and PostgreSQL: a
//! proposal pending longer than `proposer.expire_pending_after_days` is `expired` by the next
//! run, and a new draft of the same idea on better evidence marks the open one `superseded`,
//! the two linked. Both changes are in the audit log, so `audit verify` still explains every
//! proposal's status, and neither can then be approved.

use crate::review_audit::queue_draft;
use crate::support::{Hypod, FIXED_NOW};
use serde_json::Value;
use std::collections::BTreeSet;

/// 36 days after [`FIXED_NOW`]: past the default of 30.
const LATER: &str = "2026-11-20T09:00:00Z";

fn folder(url: Option<&str>) -> Hypod {
    match url {
        Some(url) => Hypod::with_database(url),
        None => Hypod::new(),
    }
}

fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|p| p["id"].as_str().expect("an id").to_string())
        .collect()
}

/// The ids `queue list --status STATUS` shows.
fn listed(hypod: &Hypod, status: &str) -> BTreeSet<String> {
    ids(&hypod
        .ok(&["queue", "list", "--status", status, "--json"])
        .json())
}

fn assert_verified(hypod: &Hypod) -> Value {
    let verified = hypod.run(&["audit", "verify", "--json"]);
    assert_eq!(
        verified.code,
        Some(0),
        "{}{}",
        verified.stdout,
        verified.stderr
    );
    let report = verified.json();
    assert_eq!(report["intact"], true, "{report:#}");
    report
}

fn pending_proposals_expire_at_the_next_run(url: Option<&str>) {
    let mut hypod = folder(url);
    hypod.now = Some(FIXED_NOW);
    hypod.ok(&["import", crate::support::SAMPLE]);
    let first = hypod.ok(&["run", "--json"]).json();
    assert!(
        first["run"]["summary"]["queued"].as_u64().unwrap() >= 2,
        "{first:#}"
    );
    assert_eq!(first["run"]["summary"]["expired"], 0);
    let pending = listed(&hypod, "pending_review");
    hypod.token("rita", "reviewer");
    let plain = hypod
        .ok(&["queue", "list", "--status", "pending_review", "--json"])
        .json();
    let approved = plain
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["approvals_required"] == 1)
        .and_then(|p| p["id"].as_str())
        .expect("a proposal one approval decides")
        .to_string();
    hypod.ok(&["queue", "approve", &approved, "--as", "rita"]);

    // A run the next day expires nothing: 30 days have not passed.
    hypod.now = Some("2026-10-16T09:00:00Z");
    let next_day = hypod.ok(&["run", "--json"]).json();
    assert_eq!(next_day["run"]["summary"]["expired"], 0, "{next_day:#}");
    assert_eq!(next_day["run"]["summary"]["queued"], 0, "{next_day:#}");

    // 36 days later every proposal still pending expires; the approved one stays approved.
    // Expiry is measured by the database's clock, so the proposals are made 36 days older.
    crate::trust_daemon::age_proposals(&hypod, url, 36);
    hypod.now = Some(LATER);
    let later = hypod.ok(&["run", "--json"]).json();
    let expected: BTreeSet<String> = pending
        .iter()
        .filter(|id| **id != approved)
        .cloned()
        .collect();
    assert_eq!(
        later["run"]["summary"]["expired"].as_u64(),
        Some(expected.len() as u64),
        "{later:#}"
    );
    let expired = listed(&hypod, "expired");
    assert_eq!(expired, expected);
    let kept = hypod.ok(&["queue", "show", &approved, "--json"]).json();
    assert_eq!(kept["proposal"]["status"], "approved");
    // The expired ideas no longer occupy the queue: the same history queues them afresh, while
    // the approved one is still a duplicate.
    assert!(
        later["run"]["summary"]["queued"].as_u64().unwrap() >= 1,
        "{later:#}"
    );
    assert!(
        later["run"]["summary"]["duplicates"].as_u64().unwrap() >= 1,
        "{later:#}"
    );
    let fresh = ids(&later["proposals"]);
    assert!(fresh.is_disjoint(&expired));

    // A run whose model fails still expires what has waited too long (and says so).
    let config = hypod.path().join("hypod.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(
        "[proposer]\nkind = \"openai\"\n[llm]\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"HYPOD_TEST_NO_KEY\"\nmax_attempts = 1\ntimeout_seconds = 5\n",
    );
    std::fs::write(&config, text).expect("config");
    let waiting = listed(&hypod, "pending_review");
    assert!(!waiting.is_empty());
    crate::trust_daemon::age_proposals(&hypod, url, 46);
    hypod.now = Some("2027-01-05T09:00:00Z");
    let failed = hypod.run(&["run", "--json"]);
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    let failed = failed.json();
    assert_eq!(failed["run"]["status"], "failed", "{failed:#}");
    assert_eq!(
        failed["run"]["summary"]["expired"].as_u64(),
        Some(waiting.len() as u64),
        "{failed:#}"
    );
    assert!(listed(&hypod, "expired").is_superset(&waiting));

    // An expired proposal can no longer be reviewed.
    let gone = expired.iter().next().expect("an expired proposal");
    let refused = hypod.run(&["queue", "approve", gone, "--as", "rita"]);
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("expired"), "{}", refused.stderr);

    // The log explains every status, the expirations included.
    let report = assert_verified(&hypod);
    let all = ids(&hypod.ok(&["queue", "list", "--json"]).json());
    assert_eq!(
        report["proposals_explained"].as_u64(),
        Some(all.len() as u64)
    );
    let export = hypod.ok(&["audit", "export"]).stdout;
    for id in &expected {
        assert!(
            export.contains(id.as_str()),
            "the audit export names expired proposal {id}"
        );
    }
    // The first batch, then what the failed run expired.
    assert_eq!(
        export.matches("\"action\":\"proposal.expired\"").count(),
        expected.len() + waiting.len()
    );
}

fn better_evidence_supersedes_the_open_proposal(url: Option<&str>) {
    // What the builtin proposer drafts from the sample history, found in a scratch folder.
    let scratch = Hypod::new();
    scratch.ok(&["import", crate::support::SAMPLE]);
    let run = scratch.ok(&["run", "--json"]).json();
    let (old_draft, cited) = run["proposals"]
        .as_array()
        .expect("proposals")
        .iter()
        .filter(|p| p["status"] == "pending_review")
        .find_map(|p| {
            let id = p["id"].as_str()?;
            let shown = scratch.ok(&["queue", "show", id, "--json"]).json();
            let draft = shown["proposal"]["draft"].clone();
            let n = draft["evidence"].as_array()?.len();
            (n >= 2).then_some((draft, n))
        })
        .expect("a pending proposal citing two experiments or more");
    // The same idea queued earlier on thinner evidence: one experiment, no strength.
    let mut thin = old_draft.clone();
    thin["evidence"] = Value::Array(vec![old_draft["evidence"][0].clone()]);

    let hypod = folder(url);
    hypod.ok(&["import", crate::support::SAMPLE]);
    queue_draft(&hypod, thin);
    let old = ids(&hypod.ok(&["queue", "list", "--json"]).json())
        .into_iter()
        .next()
        .expect("the queued draft");

    let replaced = hypod.ok(&["run", "--json"]).json();
    assert_eq!(replaced["run"]["summary"]["superseded"], 1, "{replaced:#}");
    let shown = hypod.ok(&["queue", "show", &old, "--json"]).json();
    assert_eq!(shown["proposal"]["status"], "superseded", "{shown:#}");
    let new = shown["proposal"]["superseded_by"]
        .as_str()
        .expect("a link to the replacement")
        .to_string();
    let successor = hypod.ok(&["queue", "show", &new, "--json"]).json();
    assert_eq!(successor["proposal"]["status"], "pending_review");
    assert_eq!(
        successor["proposal"]["enrichment"]["supersedes"],
        old.as_str()
    );
    assert_eq!(
        successor["proposal"]["draft"]["evidence"]
            .as_array()
            .map(Vec::len),
        Some(cited)
    );
    assert_eq!(successor["proposal"]["draft"]["lever"], old_draft["lever"]);
    let text = hypod.ok(&["queue", "show", &old]).stdout;
    assert!(
        text.contains(&new),
        "the text view names the replacement:\n{text}"
    );

    // The same evidence again replaces nothing: the new proposal is a duplicate now.
    let again = hypod.ok(&["run", "--json"]).json();
    assert_eq!(again["run"]["summary"]["superseded"], 0, "{again:#}");
    assert_eq!(listed(&hypod, "superseded").len(), 1);
    assert_verified(&hypod);
}

#[test]
fn pending_proposals_expire_at_the_next_run_on_sqlite() {
    pending_proposals_expire_at_the_next_run(None);
}

#[test]
fn better_evidence_supersedes_the_open_proposal_on_sqlite() {
    better_evidence_supersedes_the_open_proposal(None);
}

/// Runs `check` on a fresh PostgreSQL database (skipped loudly without PostgreSQL, outside CI).
fn on_postgres(check: fn(Option<&str>)) {
    crate::backends::on_fresh_postgres(|url| check(Some(url)));
}

#[test]
fn pending_proposals_expire_at_the_next_run_on_postgresql() {
    on_postgres(pending_proposals_expire_at_the_next_run);
}

#[test]
fn better_evidence_supersedes_the_open_proposal_on_postgresql() {
    on_postgres(better_evidence_supersedes_the_open_proposal);
}
