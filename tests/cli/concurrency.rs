//! Several `hypod` processes on one database at once: parallel imports, approvals and listings
//! on one SQLite file all succeed (they wait for the write lock instead of failing with
//! "database is locked"), and concurrent runs never queue the same idea twice, on SQLite and on
//! PostgreSQL.

use crate::backends::{postgres_server, PgDatabase};
use crate::support::{Hypod, Ran, SAMPLE};
use serde_json::Value;
use std::collections::HashSet;
use std::process::{Child, Stdio};

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// A fresh PostgreSQL database for a test, dropped when the test ends (also when it fails).
struct PgGuard(PgDatabase);

impl PgGuard {
    /// `None` when the PostgreSQL tests are skipped.
    fn create() -> Option<PgGuard> {
        block_on(async {
            let server = postgres_server().await?;
            Some(PgGuard(PgDatabase::create(&server).await))
        })
    }
}

impl Drop for PgGuard {
    fn drop(&mut self) {
        block_on(self.0.drop_now());
    }
}

fn start(hypod: &Hypod, args: &[&str]) -> Child {
    hypod
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hypod")
}

/// Starts every command at once, then waits for all of them.
fn all_at_once(hypod: &Hypod, commands: &[Vec<String>]) -> Vec<Ran> {
    let children: Vec<Child> = commands
        .iter()
        .map(|args| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            start(hypod, &args)
        })
        .collect();
    children
        .into_iter()
        .map(|child| Ran::of(child.wait_with_output().expect("hypod ends")))
        .collect()
}

/// The sample history with every id suffixed: `copies` files of experiments new to the database.
fn renamed_copies(hypod: &Hypod, copies: usize) -> Vec<String> {
    let text = std::fs::read_to_string(SAMPLE).expect("the sample");
    (0..copies)
        .map(|k| {
            let lines: Vec<String> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|line| {
                    let mut value: Value = serde_json::from_str(line).expect("a sample line");
                    let id = format!("{}-copy{k}", value["id"].as_str().expect("an id"));
                    value["id"] = Value::String(id);
                    value.to_string()
                })
                .collect();
            let path = hypod.path().join(format!("copy{k}.ndjson"));
            std::fs::write(&path, lines.join("\n") + "\n").expect("write a copy");
            path.display().to_string()
        })
        .collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn parallel_imports_approvals_and_listings_on_one_sqlite_file_all_succeed() {
    let hypod = Hypod::at_fixed_time();
    hypod.import_sample();
    let run = hypod.ok(&["run", "--json"]).json();
    let pending: Vec<String> = run["proposals"]
        .as_array()
        .expect("proposals")
        .iter()
        .filter(|p| p["status"] == "pending_review" && p["approvals_required"] == 1)
        .map(|p| p["id"].as_str().expect("an id").to_string())
        .collect();
    assert!(pending.len() >= 3, "{run:#}");

    for k in 0..pending.len().min(4) {
        hypod.ok(&[
            "token",
            "create",
            "--user",
            &format!("reviewer{k}"),
            "--role",
            "reviewer",
        ]);
    }
    let copies = renamed_copies(&hypod, 4);
    let mut commands: Vec<Vec<String>> = Vec::new();
    for (k, copy) in copies.iter().enumerate() {
        commands.push(args(&["import", copy]));
        commands.push(args(&["import", SAMPLE]));
        if let Some(id) = pending.get(k) {
            commands.push(args(&[
                "queue",
                "approve",
                id,
                "--as",
                &format!("reviewer{k}"),
                "--note",
                "parallel",
            ]));
        }
        commands.push(args(&["queue", "list", "--json"]));
    }
    let ran = all_at_once(&hypod, &commands);
    for (command, ran) in commands.iter().zip(&ran) {
        assert_eq!(
            ran.code,
            Some(0),
            "hypod {command:?} failed next to the others: {}",
            ran.stderr
        );
    }

    let approved = hypod
        .ok(&["queue", "list", "--status", "approved", "--json"])
        .json();
    assert_eq!(
        approved.as_array().map(Vec::len),
        Some(pending.len().min(copies.len()))
    );
    let analyzed = hypod.ok(&["analyze", "--json"]).json();
    let experiments = analyzed["program"]["experiments"]
        .as_u64()
        .or_else(|| analyzed["experiments"].as_array().map(|a| a.len() as u64));
    assert_eq!(experiments, Some(246 * 5), "every import landed");
    let verify = hypod.ok(&["audit", "verify"]);
    assert!(verify.stdout.contains("intact"), "{}", verify.stdout);
}

/// Starts `runs` `hypod run`s at once on one database and checks that the ideas were queued once.
fn concurrent_runs_queue_each_idea_once(hypod: &Hypod, runs: usize) {
    hypod.import_sample();
    let commands: Vec<Vec<String>> = (0..runs).map(|_| args(&["run", "--json"])).collect();
    let ran = all_at_once(hypod, &commands);
    let records: Vec<Value> = ran
        .iter()
        .map(|r| {
            assert_eq!(r.code, Some(0), "a concurrent run failed: {}", r.stderr);
            r.json()
        })
        .collect();
    let stored = |r: &Value| {
        r["run"]["summary"]["queued"].as_u64().expect("queued")
            + r["run"]["summary"]["blocked"].as_u64().expect("blocked")
    };
    let mut by_stored: Vec<&Value> = records.iter().collect();
    by_stored.sort_by_key(|r| std::cmp::Reverse(stored(r)));
    let first = stored(by_stored[0]);
    assert!(first >= 3, "{:#}", by_stored[0]);
    for late in &by_stored[1..] {
        assert_eq!(stored(late), 0, "a later run queued again: {late:#}");
        assert_eq!(
            late["run"]["summary"]["duplicates"].as_u64(),
            Some(first),
            "a later run counts every draft as a duplicate: {late:#}"
        );
    }

    let queue = hypod.ok(&["queue", "list", "--json"]).json();
    let queue = queue.as_array().expect("a list");
    assert_eq!(queue.len() as u64, first, "{queue:#?}");
    let places: HashSet<(String, String, String)> = queue
        .iter()
        .map(|p| {
            (
                p["moment"].to_string(),
                p["segment"].to_string(),
                p["lever"].to_string(),
            )
        })
        .collect();
    assert_eq!(places.len(), queue.len(), "one proposal per idea");
    hypod.ok(&["audit", "verify"]);
}

#[test]
fn concurrent_runs_on_one_sqlite_file_queue_each_idea_once() {
    concurrent_runs_queue_each_idea_once(&Hypod::at_fixed_time(), 3);
}

#[test]
fn concurrent_runs_on_one_postgres_database_queue_each_idea_once() {
    let Some(db) = PgGuard::create() else {
        return;
    };
    let hypod = Hypod {
        now: Some(crate::support::FIXED_NOW),
        ..Hypod::with_database(&db.0.url)
    };
    concurrent_runs_queue_each_idea_once(&hypod, 3);
}
