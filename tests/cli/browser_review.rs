//! A reviewer's morning in Chromium (issue #26): the queue opens on the proposals pending review
//! with a count per status and each row's approval progress; the top proposal of the builtin run
//! on the sample history (its sample fills in 1 day) is sized to a full week and says so; the
//! escalated proposal's page opens with its unmet rules in words, folds the passing ones away
//! and, after a first approval, says "1 of 2 approvals, waiting for governance", in the page and
//! in its queue row; after approval the page says what happens next — the export, or the push to
//! the GrowthBook configured in `[export.growthbook]` (a fake on 127.0.0.1, to which nothing is
//! sent without `push_on_approval`), who builds the test and, while pending, the expiry date.
//! Refreshes docs/screenshots/queue.png, proposal.png and proposal-escalated.png with
//! `UI_SCREENSHOTS=docs/screenshots`.

use crate::backends::{on_every_backend, TestDb};
use crate::browser::Browser;
use crate::fake_growthbook::{FakeGrowthbook, ASSIGNMENT_QUERY, DATASOURCE, PROJECT};
use crate::review::Reviewed;
use crate::support::Hypod;
use crate::test_app::TestApp;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The sample's top proposal: its sample fills in 1 day; `proposer.min_days` sizes it to 7.
const ONE_DAY: &str = "Try delivery promise in cart and checkout, after it won on product pages";

/// Signs `token` in on `site` through the sign-in page; the browser lands on the queue.
fn sign_in(browser: &Browser, site: &str, token: &str) {
    browser.go(&format!("{site}/ui/login"));
    browser.type_into("#token", token);
    browser.click_to("#sign-in", "/ui/queue");
}

/// Waits (up to 10 s) until `css` is on the page.
fn wait_for(browser: &Browser, css: &str) {
    let started = Instant::now();
    while browser.find(css).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no {css} on {}",
            browser.url()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The queue's rows as the browser shows them: (title, status, approval progress).
fn rows(browser: &Browser) -> Vec<(String, String, String)> {
    let found = browser.script(
        "return [...document.querySelectorAll('#queue tr.proposal')].map(r => [\
           r.querySelector('a.title').innerText, r.querySelector('.status').innerText,\
           (r.querySelector('.progress') || {innerText: ''}).innerText])",
    );
    found
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let cell = |i: usize| r[i].as_str().unwrap_or_default().to_string();
            (cell(0), cell(1), cell(2))
        })
        .collect()
}

fn listed(hypod: &Hypod, status: &str) -> Vec<Value> {
    hypod
        .ok(&["queue", "list", "--status", status, "--json"])
        .json()
        .as_array()
        .expect("a list")
        .clone()
}

fn escalates(p: &Value) -> bool {
    p["failed_rules"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["effect"] == "escalate"))
}

#[test]
fn a_reviewer_decides_from_the_queue_and_the_proposal_page_in_chromium() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let setup = Reviewed::new();
    let hypod = &setup.hypod;
    let daemon = TestApp::spawn(hypod);
    let site = format!("http://{}", daemon.addr);
    let pending = listed(hypod, "pending_review");
    assert!(pending.len() >= 3, "the sample run queues proposals");

    // The queue opens on what waits for a reviewer, with a count per status.
    sign_in(&browser, &site, setup.token("reviewer"));
    assert!(browser.url().ends_with("/ui/queue"), "{}", browser.url());
    assert_eq!(
        browser.text("#count-pending_review"),
        format!("pending review ({})", pending.len())
    );
    assert_eq!(
        browser.script("return document.querySelector('#count-pending_review').className"),
        "status-count current"
    );
    let every = hypod.ok(&["queue", "list", "--json"]).json();
    assert_eq!(
        browser.text("#count-all"),
        format!("all ({})", every.as_array().expect("a list").len())
    );
    assert_eq!(
        browser.text("#count-approved"),
        "approved (0)",
        "nothing is approved yet"
    );
    let shown = rows(&browser);
    assert_eq!(shown.len(), pending.len());
    assert!(shown
        .iter()
        .all(|(_, status, _)| status == "pending review"));
    // Each row's approval progress, as `queue list --json` words it, from the one function.
    for p in &pending {
        let title = p["title"].as_str().expect("title");
        let row = shown
            .iter()
            .find(|(t, _, _)| t == title)
            .unwrap_or_else(|| panic!("{title} is not in the queue: {shown:?}"));
        let expected = if escalates(p) {
            "0 of 2 approvals, waiting for 2 more, one from governance"
        } else {
            "0 of 1 approval, waiting for 1 more"
        };
        assert_eq!(row.2, expected, "{title}");
        assert_eq!(p["progress"], expected, "{title}");
    }

    // The top proposal: escalated, its sample fills in 1 day, sized to a full week.
    let top = pending
        .iter()
        .find(|p| p["title"] == ONE_DAY)
        .expect("the 1-day proposal of the sample");
    assert!(escalates(top), "{top}");
    let id = top["id"].as_str().expect("id").to_string();
    let view = hypod.ok(&["queue", "show", &id, "--json"]).json();
    assert_eq!(view["proposal"]["enrichment"]["days_to_reach_sample"], 1.0);
    assert_eq!(
        view["proposal"]["enrichment"]["expected_duration_days"],
        7.0
    );
    browser.click_to(&format!("#queue a[href=\"/ui/proposals/{id}\"]"), &id);
    assert_eq!(browser.text("#title"), ONE_DAY);
    assert_eq!(browser.text("#duration"), "7 days");
    assert_eq!(
        browser.text("#asked-duration"),
        "7 days: a full week, although 1 day would reach the sample; 100% of the segment consented"
    );
    // Sized to a full week, the length rule passes (it warns below one: see `policy test`).
    let verdicts = view["proposal"]["verdicts"].as_array().expect("verdicts");
    let length = verdicts
        .iter()
        .find(|v| v["rule_id"] == "experiment-length")
        .expect("the length rule ran");
    assert_eq!(length["passed"], true, "{length}");

    // Its unmet rules, in words, with who must approve; the passing ones folded away.
    let unmet: Vec<&Value> = verdicts.iter().filter(|v| v["passed"] == false).collect();
    assert!(!unmet.is_empty());
    let items = browser.all_texts("#unmet li");
    assert_eq!(items.len(), unmet.len(), "{items:?}");
    for (item, verdict) in items.iter().zip(&unmet) {
        let rule = verdict["rule_id"].as_str().expect("rule");
        let message = verdict["message"].as_str().expect("message");
        assert_eq!(
            item,
            &format!("{rule} governance must approve: {message}"),
            "{items:?}"
        );
    }
    let passed = verdicts.len() - unmet.len();
    assert_eq!(
        browser.text("#passed-rules"),
        format!("{passed} rule(s) passed")
    );
    assert_eq!(
        browser.script("return document.querySelector('#passed-rules').open"),
        false
    );
    assert_eq!(
        browser.text("#progress"),
        "0 of 2 approvals, waiting for 2 more, one from governance."
    );
    let created: chrono::DateTime<chrono::Utc> = view["proposal"]["created_at"]
        .as_str()
        .expect("created_at")
        .parse()
        .expect("a time");
    // proposer.expire_pending_after_days defaults to 30.
    let expiry = (created + chrono::Duration::days(30)).format("%Y-%m-%d");
    assert_eq!(
        browser.text("#expiry"),
        format!("Expires on {expiry} unless decided before.")
    );
    browser.screenshot("proposal-escalated");

    // rita approves: one of two, waiting for governance — on the page and in the queue row.
    browser.click_to("#approve", "done=approve");
    assert_eq!(
        browser.text("#flash"),
        "Your approval is recorded: 1 of 2 approvals, waiting for governance."
    );
    assert_eq!(
        browser.text("#progress"),
        "1 of 2 approvals, waiting for governance; approved by rita (reviewer)."
    );
    assert_eq!(browser.text("#status"), "pending review");
    assert!(browser.text("#next").starts_with(
        "After approval it is ready for export (hypod export), which hands it to the experimentation platform."
    ));
    assert!(browser
        .text("#next")
        .ends_with(&format!("Expires on {expiry} unless decided before.")));
    browser.go(&format!("{site}/ui/queue"));
    let row = rows(&browser)
        .into_iter()
        .find(|(title, _, _)| title == ONE_DAY)
        .expect("still pending");
    assert_eq!(row.2, "1 of 2 approvals, waiting for governance");
    browser.screenshot("queue");
    // The API's listing and `queue list` say the same.
    let answer = crate::test_app::request(
        &daemon.addr,
        "GET",
        "/api/v1/proposals?status=pending_review",
        &[(
            "Authorization",
            &format!("Bearer {}", setup.token("viewer")),
        )],
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let item = answer.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["id"] == id.as_str())
        .cloned()
        .expect("listed");
    assert_eq!(item["progress"], "1 of 2 approvals, waiting for governance");
    assert_eq!(item["approvals"]["given"], 1);
    assert_eq!(item["approvals"]["missing_roles"][0], "governance");
    let text = hypod
        .ok(&["queue", "list", "--status", "pending_review"])
        .stdout;
    let at = text.find(ONE_DAY).expect("listed");
    assert!(
        text[at..]
            .lines()
            .nth(1)
            .is_some_and(|l| l.trim() == "1 of 2 approvals, waiting for governance"),
        "{text}"
    );

    // A plain proposal: after its one approval the page says what happens next and who builds.
    let plain = pending
        .iter()
        .find(|p| !escalates(p))
        .and_then(|p| p["id"].as_str())
        .expect("a plain proposal")
        .to_string();
    browser.go(&format!("{site}/ui/proposals/{plain}"));
    assert_eq!(browser.text("#unmet"), "Every rule passed.");
    assert_eq!(
        browser.text("#builds"),
        "The team that takes the export builds and starts the test (the export names no owner)."
    );
    browser.type_into("#approve-note", "strong evidence, small risk");
    browser.click_to("#approve", "done=approve");
    assert_eq!(
        browser.text("#flash"),
        "Your approval is recorded: 1 of 1 approval; the proposal is approved, what happens next is below."
    );
    assert_eq!(browser.text("#status"), "approved");
    assert_eq!(
        browser.text("#next"),
        "Approved: export (hypod export) now hands it to the experimentation platform."
    );
    assert_eq!(
        browser.text("#builds"),
        "The team that takes the export builds and starts the test; rita's approval made it approved (the export names no owner)."
    );
    assert!(browser.find("#expiry").is_none());
    browser.screenshot("proposal");

    // The queue counts it under approved now, one click away.
    browser.go(&format!("{site}/ui/queue"));
    assert_eq!(browser.text("#count-approved"), "approved (1)");
    assert_eq!(
        browser.text("#count-pending_review"),
        format!("pending review ({})", pending.len() - 1)
    );
    browser.click_to("#count-approved", "status=approved");
    let approved = rows(&browser);
    assert_eq!(approved.len(), 1, "{approved:?}");
    assert_eq!(approved[0].1, "approved");
    assert_eq!(approved[0].2, "1 of 1 approval");
}

/// `[export.growthbook]` for the fake, pushed by an admin (no `push_on_approval`), rita and gus
/// mapped to GrowthBook members.
fn growthbook_table(fake: &FakeGrowthbook) -> String {
    format!(
        "\n[export.growthbook]\nurl = \"{}\"\napi_key_env = \"GB_REVIEW_PAGE_KEY\"\n\
         project = \"{PROJECT}\"\ndatasource_id = \"{DATASOURCE}\"\n\
         assignment_query_id = \"{ASSIGNMENT_QUERY}\"\n\
         [export.growthbook.owners]\nrita = \"rita@shop.example\"\ngus = \"u_gus\"\n",
        fake.url()
    )
}

#[test]
fn with_growthbook_configured_the_page_names_the_push_and_the_drafts_owner() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let fake = runtime.block_on(FakeGrowthbook::start("gbk_review_page", Vec::new()));
    let hypod = Hypod::new();
    let path = hypod.path().join("hypod.toml");
    let mut config = std::fs::read_to_string(&path).expect("the configuration");
    config.push_str(&growthbook_table(&fake));
    std::fs::write(&path, config).expect("write the configuration");
    let setup = Reviewed::on(hypod);
    let daemon = TestApp::spawn(&setup.hypod);
    let site = format!("http://{}", daemon.addr);
    let host = fake.url().trim_start_matches("http://").to_string();
    let plain = listed(&setup.hypod, "pending_review")
        .into_iter()
        .find(|p| !escalates(p))
        .and_then(|p| p["id"].as_str().map(str::to_string))
        .expect("a plain proposal");

    sign_in(&browser, &site, setup.token("reviewer"));
    browser.go(&format!("{site}/ui/proposals/{plain}"));
    wait_for(&browser, "#decision");
    let next = browser.text("#next");
    assert!(
        next.starts_with(&format!(
            "After approval an admin pushes it to GrowthBook ({host}) as a draft experiment with hypod export --push. Expires on "
        )),
        "{next}"
    );
    assert_eq!(
        browser.text("#builds"),
        "The reviewer whose approval completes it becomes the draft's owner in GrowthBook and builds and starts the test, when [export.growthbook.owners] maps them (it maps gus, rita)."
    );
    browser.click_to("#approve", "done=approve");
    assert_eq!(browser.text("#status"), "approved");
    assert_eq!(
        browser.text("#next"),
        format!("Approved: an admin pushes it to GrowthBook ({host}) as a draft experiment with hypod export --push.")
    );
    assert_eq!(
        browser.text("#builds"),
        "rita@shop.example builds and starts the test in GrowthBook: the draft's owner, as rita's approval made it approved ([export.growthbook.owners])."
    );
    assert!(browser.find("#expiry").is_none());
    // Without push_on_approval nothing was sent: the push waits for an admin.
    assert_eq!(fake.total(), 0);
    assert!(browser.find("#push").is_none());
    let shown = setup.hypod.ok(&["queue", "show", &plain]).stdout;
    assert!(
        shown.contains(
            "builds       rita@shop.example builds and starts the test in GrowthBook: the draft's owner"
        ),
        "{shown}"
    );
}

/// `queue list` (text and `--json`) carries each proposal's approval progress, read for the
/// whole listing at once — also past the 500 ids one statement names — on every backend.
async fn the_listing_carries_each_rows_approval_progress(db: std::sync::Arc<TestDb>) {
    let url = db.url.clone();
    let (id, others) = tokio::task::spawn_blocking(move || {
        let hypod = Hypod::with_database(&url);
        let setup = Reviewed::on(hypod);
        let pending = listed(&setup.hypod, "pending_review");
        let top = pending
            .iter()
            .find(|p| escalates(p))
            .expect("an escalated proposal");
        let id = top["id"].as_str().expect("id").to_string();
        setup.hypod.ok(&["queue", "approve", &id, "--as", "rita"]);
        let listing = listed(&setup.hypod, "pending_review");
        for p in &listing {
            let expected = if p["id"] == id.as_str() {
                "1 of 2 approvals, waiting for governance"
            } else if escalates(p) {
                "0 of 2 approvals, waiting for 2 more, one from governance"
            } else {
                "0 of 1 approval, waiting for 1 more"
            };
            assert_eq!(p["progress"], expected, "{p}");
        }
        let item = listing
            .iter()
            .find(|p| p["id"] == id.as_str())
            .expect("still pending");
        assert_eq!(
            item["approvals"],
            serde_json::json!({"given": 1, "required": 2, "missing": 1,
                "missing_roles": ["governance"],
                "approvers": [{"actor": "rita", "role": "reviewer"}]})
        );
        // A blocked proposal shows no progress: nobody may approve it, its deny rule says why.
        let draft = std::fs::read_to_string(crate::support::fixture("draft.json")).expect("draft");
        crate::review_audit::queue_draft_as(
            &setup.hypod,
            serde_json::from_str(&draft).expect("JSON"),
            hypod::domain::ProposalStatus::Blocked,
        );
        let blocked = setup
            .hypod
            .ok(&["queue", "list", "--status", "blocked"])
            .stdout;
        assert!(blocked.contains(" blocked "), "{blocked}");
        assert!(!blocked.contains("approval"), "{blocked}");
        let text = setup
            .hypod
            .ok(&["queue", "list", "--status", "pending_review"])
            .stdout;
        assert!(
            text.contains("1 of 2 approvals, waiting for governance\n"),
            "{text}"
        );
        let others: Vec<String> = listing
            .iter()
            .filter(|p| p["id"] != id.as_str())
            .map(|p| p["id"].as_str().expect("id").to_string())
            .collect();
        (id, others)
    })
    .await
    .expect("the CLI checks");
    // 600 ids, the approved one in the second statement's share: found all the same, once.
    let mut ids: Vec<String> = (0..550).map(|i| format!("no-such-proposal-{i}")).collect();
    ids.push(id.clone());
    ids.extend(others);
    ids.extend((550..600).map(|i| format!("no-such-proposal-{i}")));
    let approvals = db.store().approvals_of(&ids).await.expect("approvals");
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0].0, id);
    assert_eq!(approvals[0].1.actor, "rita");
}

on_every_backend!(the_listing_carries_each_rows_approval_progress);

/// With the minimum test duration off (`proposer.min_days = 0`) the sample's top proposal is
/// planned at the 1 day its sample needs, and the shipped experiment-length rule warns, quoting
/// the days and the full week; the page shows the warning among the unmet rules.
#[test]
fn below_a_full_week_governance_warns_in_words() {
    let hypod = Hypod::new();
    let path = hypod.path().join("hypod.toml");
    let config = std::fs::read_to_string(&path).expect("the configuration");
    let config = if config.contains("[proposer]") {
        config.replacen("[proposer]", "[proposer]\nmin_days = 0", 1)
    } else {
        format!("{config}\n[proposer]\nmin_days = 0\n")
    };
    std::fs::write(&path, config).expect("write the configuration");
    let setup = Reviewed::on(hypod);
    let top = listed(&setup.hypod, "pending_review")
        .into_iter()
        .find(|p| p["title"] == ONE_DAY)
        .expect("the 1-day proposal");
    assert_eq!(top["expected_duration_days"], 1.0);
    let warning = top["failed_rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["rule_id"] == "experiment-length"))
        .cloned()
        .expect("the length rule warns");
    assert_eq!(warning["effect"], "warn");
    assert_eq!(
        warning["message"],
        "Planned 1 day; a test shorter than 7 days (one full week) reads a weekday mix, not the customer: run at least a full week (proposer.min_days)."
    );
    let id = top["id"].as_str().expect("id");
    let daemon = TestApp::spawn(&setup.hypod);
    let page = crate::test_app::request(
        &daemon.addr,
        "GET",
        &format!("/ui/proposals/{id}"),
        &[("Cookie", &format!("hypod_token={}", setup.token("viewer")))],
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(
            "<span class=\"mono\">experiment-length</span> <span class=\"v-warn\">a warning</span>: Planned 1 day; a test shorter than 7 days (one full week) reads a weekday mix"
        ),
        "{}",
        page.body
    );
}
