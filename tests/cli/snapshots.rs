//! Every `--json` output on the bundled sample history at a fixed clock, compared with the
//! files in `tests/snapshots/`. These pin the stable output the design promises; a change to
//! one of them is a change to a public format and must be deliberate
//! (`UPDATE_SNAPSHOTS=1 cargo test --test cli snapshots` rewrites them).

use crate::support::{fixture, Hypod, Normaliser, SAMPLE};

#[test]
fn every_json_output_on_the_sample_is_unchanged() {
    let hypod = Hypod::at_fixed_time();
    let mut snap = Normaliser::default();

    snap.check("import", &hypod.ok(&["import", SAMPLE, "--json"]).json());
    snap.check("analyze", &hypod.ok(&["analyze", "--json"]).json());
    snap.check("run", &hypod.ok(&["run", "--json"]).json());

    let queue = hypod.ok(&["queue", "list", "--json"]).json();
    snap.check("queue_list", &queue);
    snap.check(
        "queue_list_pending_product_detail",
        &hypod
            .ok(&[
                "queue",
                "list",
                "--status",
                "pending_review",
                "--moment",
                "product_detail",
                "--json",
            ])
            .json(),
    );
    let items = queue.as_array().expect("a list");
    let pending = items
        .iter()
        .find(|p| p["status"] == "pending_review" && p["approvals_required"] == 1)
        .expect("a pending proposal that one approval decides")["id"]
        .as_str()
        .expect("an id")
        .to_string();

    snap.check(
        "queue_show",
        &hypod.ok(&["queue", "show", &pending, "--json"]).json(),
    );
    snap.check(
        "policy_explain",
        &hypod.ok(&["policy", "explain", &pending, "--json"]).json(),
    );
    hypod.ok(&["token", "create", "--user", "ada", "--role", "reviewer"]);
    snap.check(
        "queue_approve",
        &hypod
            .ok(&[
                "queue", "approve", &pending, "--as", "ada", "--note", "worth it", "--json",
            ])
            .json(),
    );
    snap.check(
        "export",
        &hypod.ok(&["export", "--status", "approved"]).json(),
    );
    snap.check(
        "export_ndjson",
        &hypod
            .ok(&["export", "--status", "approved", "--format", "ndjson"])
            .json_lines(),
    );
    snap.check(
        "policy_check",
        &hypod.ok(&["policy", "check", "--json"]).json(),
    );
    snap.check(
        "policy_test",
        &hypod.ok(&["policy", "test", "--json"]).json(),
    );
    let draft = fixture("draft.json");
    snap.check(
        "policy_eval",
        &hypod
            .ok(&["policy", "eval", draft.to_str().expect("utf-8"), "--json"])
            .json(),
    );
    snap.check(
        "policy_replay",
        &hypod.ok(&["policy", "replay", "--json"]).json(),
    );
    snap.check(
        "prompt_render",
        &hypod.ok(&["prompt", "render", "--json"]).json(),
    );
}
