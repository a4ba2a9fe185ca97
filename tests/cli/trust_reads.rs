//! Reads cannot starve writes (issue #23), through the real server: a viewer's parallel
//! heavy reads of a large history (`GET /api/v1/experiments/{id}` analyses the whole history)
//! do not hold up a reviewer's approval, and analyse the history once between them
//! (`hypod_analysis_computations_total`); the analysis is shared by the API's experiment,
//! proposal and health views and the web UI's runs page until an import or a run changes the
//! history — also one made by another process (the command line) or another daemon (a
//! replica) in the same database. On SQLite and PostgreSQL.

use crate::review_audit::{last_proposal, queue_draft};
use crate::support::{fixture, Hypod, SAMPLE};
use crate::test_app::{request, Answer, TestApp};
use serde_json::Value;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Experiments in the large history: analysing them takes seconds in a debug build (what the
/// tests run), an approval milliseconds.
const LARGE: usize = 30_000;
/// Parallel heavy reads (more than the server's two async workers and its bound on them).
const READERS: usize = 4;

fn folder(url: Option<&str>) -> Hypod {
    match url {
        Some(url) => Hypod::with_database(url),
        None => Hypod::new(),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn get(daemon: &TestApp, path: &str, token: &str) -> Answer {
    request(
        &daemon.addr,
        "GET",
        path,
        &[("Authorization", &bearer(token))],
        None,
    )
}

/// One sample of `/metrics`, by its name and labels as printed.
fn metric(daemon: &TestApp, name: &str) -> f64 {
    let text = request(&daemon.addr, "GET", "/metrics", &[], None).body;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("/metrics has no {name}:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: not a number ({e})"))
}

/// Writes `experiments` as NDJSON into `hypod`'s folder and imports them with the command line.
fn import(hypod: &Hypod, name: &str, experiments: impl IntoIterator<Item = Value>) {
    let path = hypod.path().join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    for experiment in experiments {
        serde_json::to_writer(&mut file, &experiment).expect("write");
        writeln!(file).expect("write");
    }
    file.flush().expect("flush");
    drop(file);
    hypod.ok(&["import", path.to_str().expect("a path")]);
}

fn parallel_heavy_reads_leave_room_for_an_approval(url: Option<&str>) {
    let hypod = folder(url);
    import(
        &hypod,
        "large.ndjson",
        crate::synthetic::history(LARGE)
            .iter()
            .map(|e| serde_json::to_value(e).expect("an experiment")),
    );
    let draft: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("draft.json")).expect("the draft fixture"),
    )
    .expect("a draft");
    queue_draft(&hypod, draft);
    let proposal = last_proposal(&hypod);
    let viewer = hypod.token("vera", "viewer");
    let reviewer = hypod.token("rita", "reviewer");
    let daemon = TestApp::spawn(&hypod);
    assert_eq!(metric(&daemon, "hypod_analysis_computations_total"), 0.0);

    // The viewer's reads, in parallel; each counts itself when it has its answer.
    let answered = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let addr = daemon.addr.clone();
            let viewer = viewer.clone();
            let answered = answered.clone();
            std::thread::spawn(move || {
                let answer = request(
                    &addr,
                    "GET",
                    "/api/v1/experiments/syn-000007",
                    &[("Authorization", &bearer(&viewer))],
                    None,
                );
                answered.fetch_add(1, Ordering::SeqCst);
                answer
            })
        })
        .collect();
    // Until the analysis is under way (a poll, not a clock: nothing here is timed).
    while metric(&daemon, "hypod_heavy_reads_running") < 1.0 {
        assert_eq!(
            answered.load(Ordering::SeqCst),
            0,
            "a heavy read was answered before the analysis showed as running"
        );
        std::thread::yield_now();
    }

    let approved = request(
        &daemon.addr,
        "POST",
        &format!("/api/v1/proposals/{proposal}/approve"),
        &[("Authorization", &bearer(&reviewer))],
        Some(("application/json", r#"{"note": "while a viewer reads"}"#)),
    );
    let answered_before_the_approval = answered.load(Ordering::SeqCst);
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.json()["status"], "approved", "{}", approved.body);
    assert_eq!(
        answered_before_the_approval, 0,
        "the approval waited for the viewer's heavy reads"
    );
    // A light read too: the queue, with the approval in it.
    let queue = get(&daemon, "/api/v1/proposals?status=approved", &viewer);
    let answered_before_the_queue = answered.load(Ordering::SeqCst);
    assert_eq!(queue.status, 200, "{}", queue.body);
    assert_eq!(queue.json()["items"][0]["id"], proposal.as_str());
    assert_eq!(
        answered_before_the_queue, 0,
        "the queue waited for the viewer's heavy reads"
    );

    let answers: Vec<Answer> = readers
        .into_iter()
        .map(|r| r.join().expect("a reader"))
        .collect();
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["id"], "syn-000007");
        assert_eq!(answer.body, answers[0].body);
    }
    // One analysis for every parallel read of the same history, and none since.
    assert_eq!(metric(&daemon, "hypod_analysis_computations_total"), 1.0);
    assert!(metric(&daemon, "hypod_analysis_cache_hits_total") >= (READERS - 1) as f64);
    assert_eq!(metric(&daemon, "hypod_heavy_reads_running"), 0.0);
    let again = get(&daemon, "/api/v1/experiments/syn-000008", &viewer);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(metric(&daemon, "hypod_analysis_computations_total"), 1.0);
}

/// The sample history's records.
fn sample() -> Vec<Value> {
    std::fs::read_to_string(SAMPLE)
        .expect("the sample")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a record"))
        .collect()
}

/// The sample history with `exp-2024-0003`'s treatment converting `conversions` times.
fn sample_with(conversions: u64) -> Vec<Value> {
    let mut records = sample();
    for e in records.iter_mut().filter(|e| e["id"] == "exp-2024-0003") {
        e["variants"][1]["conversions"] = conversions.into();
        e["variants"][1]["orders"] = conversions.into();
    }
    records
}

/// `exp-2024-0003`'s treatment conversion rate as the API shows it, and its visitors.
fn treatment_rate(daemon: &TestApp, token: &str) -> f64 {
    let shown = get(daemon, "/api/v1/experiments/exp-2024-0003", token);
    assert_eq!(shown.status, 200, "{}", shown.body);
    shown.json()["primary"]["treatment_mean"]
        .as_f64()
        .unwrap_or_else(|| panic!("a treatment mean: {}", shown.body))
}

fn an_import_changes_what_the_next_read_shows(url: Option<&str>) {
    let hypod = folder(url);
    hypod.ok(&["import", SAMPLE]);
    let treatment = sample()
        .iter()
        .find(|e| e["id"] == "exp-2024-0003")
        .expect("exp-2024-0003")["variants"][1]
        .clone();
    let visitors = treatment["visitors"].as_f64().expect("visitors");
    let conversions = treatment["conversions"].as_f64().expect("conversions");
    let draft: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("draft.json")).expect("the draft fixture"),
    )
    .expect("a draft");
    queue_draft(&hypod, draft);
    let proposal = last_proposal(&hypod);
    let viewer = hypod.token("vera", "viewer");
    let daemon = TestApp::spawn(&hypod);
    let computations = || metric(&daemon, "hypod_analysis_computations_total");

    // Every view of the history shares one analysis.
    let before = treatment_rate(&daemon, &viewer);
    let page = get(&daemon, &format!("/api/v1/proposals/{proposal}"), &viewer);
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.json()["evidence"][0]["statistics"]["primary"]["treatment_mean"],
        before
    );
    let health = get(&daemon, "/api/v1/health", &viewer).json();
    let experiments = health["experiments"].as_u64().expect("a count");
    let runs_page = request(
        &daemon.addr,
        "GET",
        "/ui/runs",
        &[("Cookie", &format!("hypod_token={viewer}"))],
        None,
    );
    assert_eq!(runs_page.status, 200, "{}", runs_page.body);
    let listed = get(&daemon, "/api/v1/experiments?limit=200", &viewer).json();
    assert!(listed["items"].as_array().is_some_and(|i| !i.is_empty()));
    assert_eq!(computations(), 1.0);

    // The command line, another process, imports into the daemon's database: twice the
    // treatment's conversions, and one new experiment.
    let doubled = (2.0 * conversions) as u64;
    let mut changed = sample_with(doubled);
    let mut new = changed[0].clone();
    new["id"] = "exp-2099-0001".into();
    changed.push(new);
    import(&hypod, "changed.ndjson", changed.clone());
    let after = treatment_rate(&daemon, &viewer);
    assert!(
        (after - doubled as f64 / visitors).abs() < 1e-9,
        "the new numbers: {after} (was {before})"
    );
    let page = get(&daemon, &format!("/api/v1/proposals/{proposal}"), &viewer).json();
    assert_eq!(
        page["evidence"][0]["statistics"]["primary"]["treatment_mean"],
        after
    );
    let health = get(&daemon, "/api/v1/health", &viewer).json();
    assert_eq!(health["experiments"].as_u64(), Some(experiments + 1));
    assert_eq!(computations(), 2.0);

    // The same records again change nothing: the analysis stays.
    import(&hypod, "same.ndjson", changed.clone());
    assert_eq!(treatment_rate(&daemon, &viewer), after);
    assert_eq!(computations(), 2.0);

    // Another daemon on the same database (a replica) imports through its API: this one sees it.
    let replica = TestApp::spawn(&hypod);
    let admin = hypod.token("ada", "admin");
    let tripled = (3.0 * conversions) as u64;
    let body: String = changed
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if e["id"] == "exp-2024-0003" {
                e["variants"][1]["conversions"] = tripled.into();
                e["variants"][1]["orders"] = tripled.into();
            }
            format!("{e}\n")
        })
        .collect();
    let imported = request(
        &replica.addr,
        "POST",
        "/api/v1/experiments",
        &[("Authorization", &bearer(&admin))],
        Some(("application/x-ndjson", &body)),
    );
    assert_eq!(imported.status, 200, "{}", imported.body);
    let after = treatment_rate(&daemon, &viewer);
    assert!(
        (after - tripled as f64 / visitors).abs() < 1e-9,
        "the replica's numbers: {after}"
    );
    assert_eq!(computations(), 3.0);
    drop(replica);

    // A review is no change of the history; a run is (its proposals are the learning loop's).
    let reviewer = hypod.token("rita", "reviewer");
    let approved = request(
        &daemon.addr,
        "POST",
        &format!("/api/v1/proposals/{proposal}/approve"),
        &[("Authorization", &bearer(&reviewer))],
        Some(("application/json", "{}")),
    );
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(treatment_rate(&daemon, &viewer), after);
    assert_eq!(computations(), 3.0);
    hypod.ok(&["run"]);
    assert_eq!(treatment_rate(&daemon, &viewer), after);
    assert_eq!(computations(), 4.0);
}

/// Runs `check` on a fresh PostgreSQL database (skipped loudly without PostgreSQL, outside CI).
fn on_postgres(check: fn(Option<&str>)) {
    crate::backends::on_fresh_postgres(|url| check(Some(url)));
}

#[test]
fn parallel_heavy_reads_leave_room_for_an_approval_and_analyse_once_on_sqlite() {
    parallel_heavy_reads_leave_room_for_an_approval(None);
}

#[test]
fn parallel_heavy_reads_leave_room_for_an_approval_and_analyse_once_on_postgresql() {
    on_postgres(parallel_heavy_reads_leave_room_for_an_approval);
}

#[test]
fn an_import_changes_what_the_next_read_shows_on_sqlite() {
    an_import_changes_what_the_next_read_shows(None);
}

#[test]
fn an_import_changes_what_the_next_read_shows_on_postgresql() {
    on_postgres(an_import_changes_what_the_next_read_shows);
}
