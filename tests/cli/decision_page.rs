//! The decision a reviewer takes, as they see it (issue #26): the proposal page and
//! `queue show` open with what stands in the way (the unmet rule, who must approve), the
//! approval progress in words, what happens after approval and the expiry date before it;
//! passing rules fold away. Through the real server (TestApp) and the binary, on SQLite and
//! PostgreSQL.

use crate::review::Reviewed;
use crate::support::Hypod;
use crate::test_app::{request, TestApp};

fn page(app: &TestApp, id: &str, token: &str) -> String {
    let answer = request(
        &app.addr,
        "GET",
        &format!("/ui/proposals/{id}"),
        &[("Cookie", &format!("hypod_token={token}"))],
        None,
    );
    assert_eq!(answer.status, 200, "page {id}: {}", answer.body);
    answer.body
}

fn approve(app: &TestApp, id: &str, token: &str) -> serde_json::Value {
    let answer = request(
        &app.addr,
        "POST",
        &format!("/api/v1/proposals/{id}/approve"),
        &[("Authorization", &format!("Bearer {token}"))],
        Some(("application/json", "{}")),
    );
    assert_eq!(answer.status, 200, "approve {id}: {}", answer.body);
    answer.json()
}

/// The text of the element with this `id` in `html`, up to its closing tag (enough for the
/// flat paragraphs the decision card is made of).
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} on the page:\n{html}"));
    let rest = &html[start..];
    let end = rest
        .find("</p>")
        .or_else(|| rest.find("</ul>"))
        .unwrap_or(rest.len());
    &rest[..end]
}

fn the_decision_opens_the_page_and_queue_show(hypod: Hypod) {
    let setup = Reviewed::on(hypod);
    let list = setup
        .hypod
        .ok(&["queue", "list", "--status", "pending_review", "--json"])
        .json();
    let escalated = list
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| {
            p["failed_rules"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["effect"] == "escalate"))
        })
        .expect("the sample history gives an escalated proposal")
        .clone();
    let id = escalated["id"].as_str().expect("id").to_string();
    let rule = escalated["failed_rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["effect"] == "escalate"))
        .and_then(|r| r["rule_id"].as_str())
        .expect("the escalating rule")
        .to_string();
    let shown = setup.hypod.ok(&["queue", "show", &id, "--json"]).json();
    let created: chrono::DateTime<chrono::Utc> = shown["proposal"]["created_at"]
        .as_str()
        .expect("created_at")
        .parse()
        .expect("a timestamp");
    // proposer.expire_pending_after_days defaults to 30.
    let expiry = (created + chrono::Duration::days(30))
        .format("%Y-%m-%d")
        .to_string();
    let app = TestApp::spawn(&setup.hypod);

    // Before anyone approved: the unmet rule, in words, with who must approve; passing rules
    // folded away.
    let before = page(&app, &id, setup.token("reviewer"));
    let decision = before.find("id=\"decision\"").expect("a decision card");
    let hypothesis = before.find("<h2>Hypothesis</h2>").expect("the hypothesis");
    assert!(decision < hypothesis, "the decision opens the page");
    let unmet = section(&before, "unmet");
    assert!(unmet.contains(&rule), "{unmet}");
    assert!(unmet.contains("governance must approve"), "{unmet}");
    assert!(
        section(&before, "progress")
            .contains("0 of 2 approvals, waiting for 2 more, one from governance"),
        "{}",
        section(&before, "progress")
    );
    assert!(before.contains("<details id=\"passed-rules\"><summary>"));
    let next = section(&before, "next");
    assert!(
        next.contains("After approval it is ready for export (hypod export)"),
        "{next}"
    );
    assert!(
        next.contains(&format!(
            "Expires on <strong>{expiry}</strong> unless decided before"
        )),
        "{next}"
    );

    // After the first (reviewer) approval: one of two, waiting for governance.
    let answer = approve(&app, &id, setup.token("reviewer"));
    assert_eq!(answer["approvals"]["given"], 1);
    assert_eq!(answer["approvals"]["missing_roles"][0], "governance");
    let after_one = page(&app, &id, setup.token("reviewer"));
    let progress = section(&after_one, "progress");
    assert!(
        progress.contains("1 of 2 approvals, waiting for governance")
            && progress.contains("approved by rita (reviewer)"),
        "{progress}"
    );
    let text = setup.hypod.ok(&["queue", "show", &id]).stdout;
    let head: Vec<&str> = text.lines().take(10).collect();
    let head = head.join("\n");
    assert!(
        head.contains(&format!("in the way   {rule} (governance must approve): ")),
        "{text}"
    );
    assert!(
        head.contains(
            "approvals    1 of 2 approvals, waiting for governance; approved by rita (reviewer)"
        ),
        "{text}"
    );
    assert!(
        head.contains("next         After approval it is ready for export (hypod export)"),
        "{text}"
    );
    assert!(
        head.contains(&format!("expires      on {expiry} unless decided before")),
        "{text}"
    );

    // Governance approves: the page says what happens now, and no expiry any more.
    let answer = approve(&app, &id, setup.token("governance"));
    assert_eq!(answer["approvals"]["missing"], 0);
    let approved = page(&app, &id, setup.token("reviewer"));
    let progress = section(&approved, "progress");
    assert!(
        progress.contains("2 of 2 approvals")
            && progress.contains("approved by rita (reviewer), gus (governance)")
            && !progress.contains("waiting"),
        "{progress}"
    );
    let next = section(&approved, "next");
    assert!(
        next.contains("Approved: export (hypod export) now hands it"),
        "{next}"
    );
    assert!(!approved.contains("id=\"expiry\""), "{next}");
    let text = setup.hypod.ok(&["queue", "show", &id]).stdout;
    assert!(
        text.contains("next         Approved: export (hypod export) now hands it"),
        "{text}"
    );
    assert!(!text.contains("expires      "), "{text}");
}

#[test]
fn the_decision_opens_the_page_and_queue_show_on_sqlite() {
    the_decision_opens_the_page_and_queue_show(Hypod::new());
}

#[test]
fn the_decision_opens_the_page_and_queue_show_on_postgresql() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = runtime.block_on(crate::backends::postgres_server()) else {
        return;
    };
    let db = runtime.block_on(crate::backends::PgDatabase::create(&server));
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        the_decision_opens_the_page_and_queue_show(Hypod::with_database(&db.url))
    }));
    runtime.block_on(db.drop_now());
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

/// The decision card repeats model-written text (the change) and policy text (the unmet rule's
/// message): both stay escaped, on the page and under the unchanged CSP.
#[test]
fn the_decision_card_escapes_what_the_model_wrote() {
    let setup = Reviewed::new();
    let draft = std::fs::read_to_string(crate::support::fixture("draft.json")).expect("draft");
    let mut draft: serde_json::Value = serde_json::from_str(&draft).expect("JSON");
    draft["title"] = "A change with markup in it".into();
    draft["change"] = "<script>window.__pwned=1</script><b>bold</b> change".into();
    crate::review_audit::queue_draft(&setup.hypod, draft);
    let id = setup
        .hypod
        .ok(&["queue", "list", "--json"])
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| p["title"] == "A change with markup in it")
        .and_then(|p| p["id"].as_str())
        .expect("the queued draft")
        .to_string();
    let app = TestApp::spawn(&setup.hypod);
    let answer = request(
        &app.addr,
        "GET",
        &format!("/ui/proposals/{id}"),
        &[("Cookie", &format!("hypod_token={}", setup.token("viewer")))],
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let asked = section(&answer.body, "asked");
    assert!(
        asked.contains("&lt;script&gt;window.__pwned=1&lt;&#x2f;script&gt;&lt;b&gt;bold")
            || asked.contains("&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;b&gt;bold"),
        "{asked}"
    );
    assert!(!answer.body.contains("<script>"), "{}", answer.body);
    assert!(!answer.body.contains("<b>bold"), "{}", answer.body);
    let csp = answer.header("content-security-policy").expect("a CSP");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
}
