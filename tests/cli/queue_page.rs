//! The web UI's queue and runs pages as a reviewer reads them, through the real server on
//! SQLite and PostgreSQL: the queue opens on the proposals pending review with a count per
//! status (every other status, "all" included, one click away), each row with its age and
//! expiry date and its value in the configured currency ("value units" without one); the
//! runs page shows the proven rate as an unsigned percentage.

use crate::support::{Hypod, SAMPLE};
use crate::test_app::{request, Answer, TestApp};
use serde_json::Value;

fn on_sqlite(check: fn(&Hypod)) {
    check(&Hypod::new());
}

/// `check` on a fresh PostgreSQL database (dropped after, also when the check fails); skipped
/// without PostgreSQL unless `CI` is set.
fn on_postgres(check: fn(&Hypod)) {
    crate::backends::on_fresh_postgres(|url| check(&Hypod::with_database(url)));
}

/// The sample imported, one run made and one pending proposal rejected, so
/// the queue holds several statuses.
fn queue_with_statuses(hypod: &Hypod) -> Vec<Value> {
    hypod.ok(&["import", SAMPLE]);
    hypod.ok(&["run"]);
    let all = hypod.ok(&["queue", "list", "--json"]).json();
    let pending: Vec<&Value> = all
        .as_array()
        .expect("a list")
        .iter()
        .filter(|p| p["status"] == "pending_review")
        .collect();
    assert!(pending.len() >= 2, "the sample run queues proposals: {all}");
    let id = pending[0]["id"].as_str().expect("an id").to_string();
    hypod.token("rita", "reviewer");
    hypod.ok(&[
        "queue", "reject", &id, "--as", "rita", "--reason", "not now",
    ]);
    hypod
        .ok(&["queue", "list", "--json"])
        .json()
        .as_array()
        .expect("a list")
        .clone()
}

fn page(daemon: &TestApp, cookie: &str, path: &str) -> Answer {
    request(&daemon.addr, "GET", path, &[("Cookie", cookie)], None)
}

fn count_of(all: &[Value], status: &str) -> usize {
    all.iter().filter(|p| p["status"] == status).count()
}

fn rows(body: &str) -> usize {
    body.matches("<tr class=\"proposal\">").count()
}

fn the_queue_opens_on_pending_with_counts_ages_and_expiry(hypod: &Hypod) {
    let all = queue_with_statuses(hypod);
    let admin = hypod.token("ada", "admin");
    let cookie = format!("hypod_token={admin}");
    let daemon = TestApp::spawn(hypod);
    let queue = page(&daemon, &cookie, "/ui/queue");
    assert_eq!(queue.status, 200, "{}", queue.body);
    let pending = count_of(&all, "pending_review");
    let rejected = count_of(&all, "rejected");
    assert_eq!(rejected, 1);
    // Opens on what waits for a reviewer: only pending rows, the pending filter selected.
    assert_eq!(rows(&queue.body), pending.min(50), "{}", queue.body);
    assert!(
        !queue.body.contains("class=\"status s-rejected\""),
        "{}",
        queue.body
    );
    assert!(
        queue
            .body
            .contains("<option value=\"pending_review\" selected>"),
        "{}",
        queue.body
    );
    // A count per status, each a link to that status; "all" one click away.
    assert!(
        queue
            .body
            .contains(&format!("pending review ({pending})</a>")),
        "{}",
        queue.body
    );
    assert!(
        queue
            .body
            .contains("href=\"/ui/queue?status=rejected\">rejected (1)</a>"),
        "{}",
        queue.body
    );
    assert!(
        queue.body.contains(&format!(
            "href=\"/ui/queue?status=all\">all ({})</a>",
            all.len()
        )),
        "{}",
        queue.body
    );
    // Age from the creation date (the run just made, on the database's clock) and the day
    // `proposer.expire_pending_after_days` (30) after it.
    let first = all
        .iter()
        .find(|p| p["status"] == "pending_review")
        .expect("a pending proposal");
    let shown = hypod
        .ok(&[
            "queue",
            "show",
            first["id"].as_str().expect("an id"),
            "--json",
        ])
        .json();
    let created = chrono::DateTime::parse_from_rfc3339(
        shown["proposal"]["created_at"]
            .as_str()
            .expect("created_at"),
    )
    .expect("an RFC 3339 time");
    let expires = (created + chrono::Duration::days(30))
        .format("%Y-%m-%d")
        .to_string();
    assert!(
        queue
            .body
            .contains("<td class=\"age\">less than a day</td>"),
        "{}",
        queue.body
    );
    assert!(
        queue
            .body
            .contains(&format!("<td class=\"expires\">{expires}</td>")),
        "{}",
        queue.body
    );
    // Without `program.currency`, value reads in "value units".
    assert!(queue.body.contains(" value units</td>"), "{}", queue.body);

    let everything = page(&daemon, &cookie, "/ui/queue?status=all");
    assert_eq!(everything.status, 200, "{}", everything.body);
    assert_eq!(rows(&everything.body), all.len().min(50));
    assert!(
        everything.body.contains("class=\"status s-rejected\""),
        "{}",
        everything.body
    );
    let only_rejected = page(&daemon, &cookie, "/ui/queue?status=rejected");
    assert_eq!(rows(&only_rejected.body), 1, "{}", only_rejected.body);
    // A decided proposal no longer expires.
    assert!(
        only_rejected.body.contains("<td class=\"expires\">—</td>"),
        "{}",
        only_rejected.body
    );
}

#[test]
fn the_queue_opens_on_pending_with_counts_ages_and_expiry_on_sqlite() {
    on_sqlite(the_queue_opens_on_pending_with_counts_ages_and_expiry);
}

#[test]
fn the_queue_opens_on_pending_with_counts_ages_and_expiry_on_postgresql() {
    on_postgres(the_queue_opens_on_pending_with_counts_ages_and_expiry);
}

#[test]
fn value_reads_in_the_configured_currency_and_the_proven_rate_carries_no_sign() {
    let hypod = Hypod::new();
    queue_with_statuses(&hypod);
    let admin = hypod.token("ada", "admin");
    let cookie = format!("hypod_token={admin}");
    let daemon = TestApp::spawn_with(&hypod, &[("HYPOD_PROGRAM__CURRENCY", "EUR")]);
    let queue = page(&daemon, &cookie, "/ui/queue");
    assert_eq!(queue.status, 200, "{}", queue.body);
    assert!(queue.body.contains(" EUR</td>"), "{}", queue.body);
    assert!(!queue.body.contains("value units"), "{}", queue.body);

    // A proposal's page: its value per day in the currency, once, and p-values with a floor.
    let id = row_ids(&queue.body)
        .into_iter()
        .next()
        .expect("a pending proposal");
    let proposal = page(&daemon, &cookie, &format!("/ui/proposals/{id}"));
    assert_eq!(proposal.status, 200, "{}", proposal.body);
    assert!(
        proposal.body.contains(" EUR per day</strong>") && !proposal.body.contains("; priority "),
        "{}",
        proposal.body
    );
    assert!(
        proposal.body.contains("<td class=\"p-value\">< 0.001</td>")
            || proposal
                .body
                .contains("<td class=\"p-value\">&lt; 0.001</td>"),
        "{}",
        proposal.body
    );
    assert!(!proposal.body.contains("0.0000"), "{}", proposal.body);

    // `queue list` says the unit of its value column.
    let listed = hypod
        .command(&["queue", "list"])
        .env("HYPOD_PROGRAM__CURRENCY", "EUR")
        .output()
        .expect("run hypod");
    let listed = crate::support::Ran::of(listed);
    assert!(
        listed
            .stdout
            .contains("value/day: expected value per day in EUR"),
        "{}",
        listed.stdout
    );
    let plain = hypod.ok(&["queue", "list"]);
    assert!(
        plain
            .stdout
            .contains("expected value per day in value units"),
        "{}",
        plain.stdout
    );

    let runs = page(&daemon, &cookie, "/ui/runs");
    assert_eq!(runs.status, 200, "{}", runs.body);
    let health = runs
        .body
        .split("proven rate <strong>")
        .nth(1)
        .and_then(|rest| rest.split("</strong>").next())
        .unwrap_or_else(|| panic!("no proven rate: {}", runs.body));
    assert!(
        health.ends_with('%') && !health.starts_with('+') && !health.starts_with('-'),
        "the proven rate is a rate, not a lift: {health}"
    );
}

#[test]
fn a_currency_that_is_not_one_is_refused_at_start() {
    let hypod = Hypod::new();
    let output = hypod
        .command(&["queue", "list"])
        .env("HYPOD_PROGRAM__CURRENCY", "NOT-A-CURRENCY-NAME")
        .output()
        .expect("run hypod");
    let ran = crate::support::Ran::of(output);
    assert_ne!(ran.code, Some(0), "{}", ran.stdout);
    assert!(
        ran.stderr
            .contains("key `program.currency`: must be 1 to 12 printable characters"),
        "{}",
        ran.stderr
    );
}

/// The ids of the page's rows, in order.
fn row_ids(body: &str) -> Vec<String> {
    body.split("<a href=\"/ui/proposals/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

fn sorting_by_age_and_expiry_and_a_bad_sort_refused(hypod: &Hypod) {
    let all = queue_with_statuses(hypod);
    let admin = hypod.token("ada", "admin");
    let cookie = format!("hypod_token={admin}");
    let daemon = TestApp::spawn(hypod);
    // By value (the default): highest priority first, as `queue list` orders them.
    let by_value: Vec<String> = all
        .iter()
        .filter(|p| p["status"] == "pending_review")
        .map(|p| p["id"].as_str().expect("an id").to_string())
        .collect();
    let default = page(&daemon, &cookie, "/ui/queue");
    assert_eq!(row_ids(&default.body), by_value);
    assert!(
        default
            .body
            .contains("<option value=\"value\" selected>by value</option>"),
        "{}",
        default.body
    );
    // One run made them all at one instant: by age and by expiry the tie goes by id.
    let mut by_id = by_value.clone();
    by_id.sort();
    for sort in ["age", "expiry"] {
        let sorted = page(&daemon, &cookie, &format!("/ui/queue?sort={sort}"));
        assert_eq!(sorted.status, 200, "{}", sorted.body);
        assert_eq!(row_ids(&sorted.body), by_id, "sort={sort}");
        assert!(
            sorted.body.contains(&format!(
                "<option value=\"{sort}\" selected>by {sort}</option>"
            )),
            "{}",
            sorted.body
        );
    }
    // A sort hypod does not know is refused, named, with the ones it knows.
    let bad = page(&daemon, &cookie, "/ui/queue?sort=priority%3Cb%3E");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body.contains("unknown sort") && bad.body.contains("sort by value, age or expiry"),
        "{}",
        bad.body
    );
    assert!(
        !bad.body.contains("<b>"),
        "the echo is escaped: {}",
        bad.body
    );
    // A cursor of one order does not continue another.
    let value_cursor = format!("{:016x}.{}", 1.0f64.to_bits(), by_value[0]);
    let mixed = page(
        &daemon,
        &cookie,
        &format!("/ui/queue?sort=age&cursor={value_cursor}"),
    );
    assert_eq!(mixed.status, 400, "{}", mixed.body);
    assert!(mixed.body.contains("for this order"), "{}", mixed.body);
}

#[test]
fn sorting_by_age_and_expiry_and_a_bad_sort_refused_on_sqlite() {
    on_sqlite(sorting_by_age_and_expiry_and_a_bad_sort_refused);
}

#[test]
fn sorting_by_age_and_expiry_and_a_bad_sort_refused_on_postgresql() {
    on_postgres(sorting_by_age_and_expiry_and_a_bad_sort_refused);
}

/// Every page of `GET /api/v1/proposals?sort=SORT` walked three at a time: the ids, in order.
fn walk(daemon: &TestApp, auth: &str, sort: &str) -> Vec<String> {
    let mut walked = Vec::new();
    let mut path = format!("/api/v1/proposals?limit=3&sort={sort}");
    loop {
        let page = request(&daemon.addr, "GET", &path, &[("Authorization", auth)], None);
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        walked.extend(
            items
                .iter()
                .map(|p| p["id"].as_str().expect("an id").to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/proposals?limit=3&sort={sort}&cursor={cursor}"),
            None => return walked,
        }
    }
}

/// Two runs at two moments (the first proposing 3, the second the 5 others): keyset pages
/// walk the whole queue once in each order.
fn keyset_pages_walk_the_queue_once_in_every_order(hypod: &Hypod) {
    hypod.ok(&["import", SAMPLE]);
    let first = hypod
        .command(&["run"])
        .env("HYPOD_PROPOSER__MAX_PROPOSALS", "3")
        .output()
        .expect("run hypod");
    assert!(first.status.success(), "{first:?}");
    hypod.ok(&["run"]);
    let admin = hypod.token("ada", "admin");
    let auth = format!("Bearer {admin}");
    let daemon = TestApp::spawn(hypod);
    let all = request(
        &daemon.addr,
        "GET",
        "/api/v1/proposals?limit=200",
        &[("Authorization", auth.as_str())],
        None,
    )
    .json();
    let ids: Vec<String> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["id"].as_str().expect("an id").to_string())
        .collect();
    assert!(ids.len() >= 4, "{all}");
    // The creation time of each, from `queue show`.
    let created = |id: &str| {
        hypod.ok(&["queue", "show", id, "--json"]).json()["proposal"]["created_at"]
            .as_str()
            .expect("created_at")
            .to_string()
    };
    let mut keyed: Vec<(chrono::DateTime<chrono::FixedOffset>, String)> = ids
        .iter()
        .map(|id| {
            (
                chrono::DateTime::parse_from_rfc3339(&created(id)).expect("a time"),
                id.clone(),
            )
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let oldest_first: Vec<String> = keyed.iter().map(|(_, id)| id.clone()).collect();
    keyed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let newest_first: Vec<String> = keyed.iter().map(|(_, id)| id.clone()).collect();
    assert_ne!(oldest_first, newest_first, "two runs, two creation times");
    assert_eq!(walk(&daemon, &auth, "value"), ids);
    assert_eq!(walk(&daemon, &auth, "expiry"), oldest_first);
    assert_eq!(walk(&daemon, &auth, "age"), newest_first);
    let bad = request(
        &daemon.addr,
        "GET",
        "/api/v1/proposals?sort=newest",
        &[("Authorization", auth.as_str())],
        None,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
}

#[test]
fn keyset_pages_walk_the_queue_once_in_every_order_on_sqlite() {
    on_sqlite(keyset_pages_walk_the_queue_once_in_every_order);
}

#[test]
fn keyset_pages_walk_the_queue_once_in_every_order_on_postgresql() {
    on_postgres(keyset_pages_walk_the_queue_once_in_every_order);
}
