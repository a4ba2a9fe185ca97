//! `hypod serve` as real processes: several daemons on one SQLite file (or PostgreSQL
//! database) run each slot of a two-second schedule exactly once, and `kill -9`, SIGTERM and a
//! lost database connection mid-run leave a consistent database, on both backends.

use crate::support::Hypod;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `hypod serve` child, killed when dropped.
pub(crate) struct Daemon {
    child: Child,
    /// `127.0.0.1:PORT` it listens on.
    pub(crate) addr: String,
}

impl Daemon {
    fn start(hypod: &Hypod) -> Daemon {
        Daemon::start_with(hypod, "*/2 * * * * *", "6")
    }

    fn start_with(hypod: &Hypod, cron: &str, lease_seconds: &str) -> Daemon {
        Daemon::spawn(
            hypod,
            &[
                ("HYPOD_SERVER__LISTEN", "127.0.0.1:0"),
                ("HYPOD_SCHEDULE__CRON", cron),
                ("HYPOD_SCHEDULE__MISSED", "skip"),
                ("HYPOD_SCHEDULE__LEASE_SECONDS", lease_seconds),
            ],
        )
    }

    /// `hypod serve` in `hypod`'s folder with these environment overrides, once it listens.
    pub(crate) fn spawn(hypod: &Hypod, overrides: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hypod"))
            .arg("serve")
            .current_dir(hypod.path())
            .env("HYPOD_CONFIG", hypod.path().join("hypod.toml"))
            .env("HYPOD_AUDIT_KEY", crate::review_audit::TEST_AUDIT_KEY)
            .env_remove("OPENAI_API_KEY")
            .env_remove("HYPOD_NOW")
            // After the removals: an override may fix the clock (`HYPOD_NOW`).
            .envs(overrides.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hypod serve");
        // Wait until it listens (it says so on stderr), then let stderr drain in a thread.
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let started = Instant::now();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on http://") => {
                    break line
                        .rsplit("http://")
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                }
                Some(Ok(_)) => {}
                other => panic!("hypod serve did not start: {other:?}"),
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no start");
        };
        std::thread::spawn(move || for _ in lines {});
        Daemon { child, addr }
    }

    /// `GET path`: (status code, body).
    fn get(&self, path: &str) -> (u16, String) {
        let answer = crate::test_app::request(&self.addr, "GET", path, &[], None);
        (answer.status, answer.body)
    }

    fn kill_9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub(crate) fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("hypod serve did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (slot key → status, run triggers → count, proposals per idea) read from the database.
struct Seen {
    slots: BTreeMap<String, String>,
    /// slot key → (token, takeovers)
    fencing: BTreeMap<String, (i64, i64)>,
    runs_per_trigger: BTreeMap<String, usize>,
    proposals: Vec<(String, String, String)>,
    /// slot key → its row (status, run, reason)
    slot_rows: BTreeMap<String, hypod::domain::SlotRecord>,
    runs: Vec<hypod::domain::RunRecord>,
    /// The run each proposal belongs to, in the order of `proposals`.
    proposal_runs: Vec<String>,
}

/// What the database holds, read through hypod's own store (any backend).
fn read_store(url: &str) -> Seen {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let store = hypod::store::open(url, crate::backends::audit_key())
                .await
                .expect("open the database");
            let rows = store.list_slots(100_000).await.expect("slots");
            let slots = rows
                .iter()
                .map(|r| (r.key.clone(), r.status.as_str().to_string()))
                .collect();
            let fencing = rows
                .iter()
                .map(|r| (r.key.clone(), (r.token, r.takeovers)))
                .collect();
            let slot_rows = rows.iter().map(|r| (r.key.clone(), r.clone())).collect();
            let runs = store.list_runs(100_000).await.expect("runs");
            let mut runs_per_trigger = BTreeMap::new();
            for run in &runs {
                *runs_per_trigger.entry(run.trigger.to_string()).or_insert(0) += 1;
            }
            let stored = store
                .list_proposals(&hypod::domain::ProposalFilter::default())
                .await
                .expect("proposals");
            let proposal_runs = stored.iter().map(|p| p.run_id.clone()).collect();
            let proposals = stored
                .iter()
                .map(|p| {
                    (
                        p.draft.moment.as_str().to_string(),
                        p.draft.segment.clone(),
                        p.draft.lever.clone(),
                    )
                })
                .collect();
            Seen {
                slots,
                fencing,
                runs_per_trigger,
                proposals,
                slot_rows,
                runs,
                proposal_runs,
            }
        })
}

#[test]
fn two_daemons_on_one_sqlite_file_run_each_slot_once() {
    let hypod = Hypod::new();
    let url = format!("sqlite://{}", hypod.path().join("hypod.db").display());
    each_slot_once_with_two_daemons(&hypod, &url);
}

/// Two replicas on one PostgreSQL database: each slot once, nothing queued twice. Skipped
/// loudly without a PostgreSQL server (a failure when CI is set).
#[test]
fn two_replicas_on_postgresql_run_each_slot_once() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = runtime.block_on(crate::backends::postgres_server()) else {
        return;
    };
    let db = runtime.block_on(crate::backends::PgDatabase::create(&server));
    let hypod = Hypod::new();
    std::fs::write(
        hypod.path().join("hypod.toml"),
        format!(
            "[database]\nurl = \"{}\"\n[governance]\npolicies = \"{}\"\n",
            db.url,
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies")
        ),
    )
    .expect("config");
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        each_slot_once_with_two_daemons(&hypod, &db.url)
    }));
    runtime.block_on(db.drop_now());
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

fn each_slot_once_with_two_daemons(hypod: &Hypod, url: &str) {
    hypod.import_sample();
    let first = Daemon::start(hypod);
    let second = Daemon::start(hypod);
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(first.get("/healthz"), (200, "ok\n".to_string()));
    let (code, ready) = first.get("/readyz");
    assert_eq!(code, 200, "{ready}");
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("readyz JSON");
    assert_eq!(ready["ready"], true);
    assert!(ready["next_slot"].as_str().is_some(), "{ready}");
    let (code, metrics) = first.get("/metrics");
    assert_eq!(code, 200);
    for line in [
        "hypod_runs_total{outcome=\"succeeded\"}",
        "hypod_proposals{status=\"pending_review\"}",
        "hypod_next_slot_seconds",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    // A stage's figures exist in the process that ran it: either replica may have won every
    // slot, so they are looked for in the two together.
    let (_, other) = second.get("/metrics");
    let both = format!("{metrics}\n{other}");
    for line in [
        "hypod_stage_duration_seconds_count{stage=\"propose\"}",
        "hypod_drafts_total{verdict=\"queued\"}",
    ] {
        assert!(both.contains(line), "{line} missing from both\n{both}");
    }
    assert_eq!(first.terminate(), Some(0));
    assert_eq!(second.terminate(), Some(0));

    let seen = read_store(url);
    // The slot before start was missed (`missed = "skip"`): recorded as skipped, not run.
    let skipped: Vec<&String> = seen
        .slots
        .iter()
        .filter(|(_, status)| *status == "skipped")
        .map(|(k, _)| k)
        .collect();
    assert!(skipped.len() <= 1, "{:?}", seen.slots);
    let scheduled: Vec<&String> = seen
        .slots
        .iter()
        .filter(|(k, status)| k.starts_with("schedule:") && *status != "skipped")
        .map(|(k, _)| k)
        .collect();
    assert!(scheduled.len() >= 4, "too few slots ran: {:?}", seen.slots);
    // Every scheduled slot ran once: one run recorded per slot key, never two.
    for key in &scheduled {
        assert_eq!(
            seen.runs_per_trigger.get(*key),
            Some(&1),
            "{key}: {:?}",
            seen.runs_per_trigger
        );
    }
    assert!(seen.runs_per_trigger.values().all(|n| *n == 1));
    // Consecutive two-second slots, none skipped while both daemons were up.
    let instants: Vec<i64> = scheduled
        .iter()
        .map(|k| {
            chrono::DateTime::parse_from_rfc3339(k.trim_start_matches("schedule:"))
                .expect("a slot instant")
                .timestamp()
        })
        .collect();
    for pair in instants.windows(2) {
        assert_eq!(pair[1] - pair[0], 2, "a slot was skipped: {instants:?}");
    }
    // Nothing queued twice: the first slot's run queues the ideas, later ones find duplicates.
    let distinct: BTreeSet<_> = seen.proposals.iter().collect();
    assert_eq!(distinct.len(), seen.proposals.len(), "{:?}", seen.proposals);
    assert!(!seen.proposals.is_empty());
    // SIGTERM left no slot running.
    assert!(
        seen.slots.values().all(|s| s != "running"),
        "{:?}",
        seen.slots
    );
}

/// A daemon whose slot is due in a few seconds (and then not for a day), the openai proposer
/// pointed at `server`, and a short lease.
fn slow_model_workspace(
    server: &crate::fake_openai::FakeOpenAi,
    database_url: Option<&str>,
) -> (Hypod, String, String) {
    let hypod = Hypod::new();
    let config = format!(
        "[database]\nurl = \"{}\"\n[governance]\npolicies = \"{}\"\n\
         [proposer]\nkind = \"openai\"\nmax_proposals = 2\nper_moment = 2\n\
         [llm]\nbase_url = \"{}\"\nmodel = \"fake-model\"\napi_key_env = \"HYPOD_TEST_NO_SUCH_KEY\"\n\
         timeout_seconds = 60\nmax_attempts = 1\nmax_repairs = 0\n",
        database_url.unwrap_or("sqlite://hypod.db"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
        server.base_url()
    );
    std::fs::write(hypod.path().join("hypod.toml"), config).expect("config");
    hypod.import_sample();
    let due = chrono::Utc::now() + chrono::Duration::seconds(3);
    let cron = format!(
        "{} {} {} * * *",
        due.format("%S"),
        due.format("%M"),
        due.format("%H")
    );
    let key = format!("schedule:{}", due.format("%Y-%m-%dT%H:%M:%SZ"));
    (hypod, cron, key)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kill -9` of the daemon holding a slot mid-run (its model call hangs): another daemon
/// takes the slot over once the lease expires, runs it from scratch and commits it once; the
/// killed one wrote nothing.
#[test]
fn a_killed_holder_is_taken_over_and_the_slot_commits_once() {
    killed_holder_is_taken_over(None);
}

/// The same with two replicas on PostgreSQL (skipped loudly without a server; fails in CI).
#[test]
fn a_killed_replica_on_postgresql_is_taken_over() {
    on_postgresql(killed_holder_is_taken_over);
}

fn killed_holder_is_taken_over(database_url: Option<&str>) {
    use crate::fake_openai::{valid_draft, FakeOpenAi, Scripted};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(FakeOpenAi::start(vec![
        // The first daemon's call: it is killed long before this answer.
        Scripted::proposals(vec![valid_draft(0), valid_draft(1)]).after(Duration::from_secs(60)),
        // The second daemon's call, after the takeover.
        Scripted::proposals(vec![valid_draft(0), valid_draft(1)]),
    ]));
    let (hypod, cron, key) = slow_model_workspace(&server, database_url);
    let url = database_url
        .map(str::to_string)
        .unwrap_or_else(|| format!("sqlite://{}", hypod.path().join("hypod.db").display()));
    let holder = Daemon::start_with(&hypod, &cron, "3");
    wait_for("the holder's model call", Duration::from_secs(30), || {
        server.requests().len() == 1
    });
    let successor = Daemon::start_with(&hypod, &cron, "3");
    holder.kill_9();
    wait_for("the takeover to commit", Duration::from_secs(40), || {
        read_store(&url).slots.get(&key).map(String::as_str) == Some("succeeded")
    });
    assert_eq!(successor.terminate(), Some(0));

    let seen = read_store(&url);
    assert_eq!(
        seen.fencing.get(&key),
        Some(&(2, 1)),
        "token 2 after one takeover"
    );
    assert_eq!(
        seen.runs_per_trigger.get(&key),
        Some(&1),
        "{:?}",
        seen.runs_per_trigger
    );
    assert_eq!(
        seen.runs_per_trigger.len(),
        1,
        "{:?}",
        seen.runs_per_trigger
    );
    assert_eq!(server.requests().len(), 2);
    let distinct: BTreeSet<_> = seen.proposals.iter().collect();
    assert_eq!(distinct.len(), seen.proposals.len(), "{:?}", seen.proposals);
    assert!(!seen.proposals.is_empty() && seen.proposals.len() <= 2);
}

/// SIGTERM while a run waits on a slow model: after the grace period the daemon releases its
/// lease and exits 0, having written nothing; the slot stays claimable by another process.
#[test]
fn sigterm_mid_run_writes_nothing_and_releases_the_slot() {
    sigterm_mid_run(None);
}

/// The same on PostgreSQL (skipped loudly without a server; fails in CI).
#[test]
fn sigterm_mid_run_on_postgresql_writes_nothing_and_releases_the_slot() {
    on_postgresql(sigterm_mid_run);
}

/// Runs `check` with the URL of a fresh PostgreSQL database, dropped afterwards also when the
/// check panics (the panic is passed on). Returns without running it when there is no server
/// (after the SKIPPED banner; with `CI` set that is a failure instead).
fn on_postgresql(check: fn(Option<&str>)) {
    crate::backends::on_fresh_postgres(|url| check(Some(url)));
}

fn sigterm_mid_run(database_url: Option<&str>) {
    use crate::fake_openai::{valid_draft, FakeOpenAi, Scripted};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(FakeOpenAi::start(vec![Scripted::proposals(vec![
        valid_draft(0),
    ])
    .after(Duration::from_secs(60))]));
    let (hypod, cron, key) = slow_model_workspace(&server, database_url);
    let url = database_url
        .map(str::to_string)
        .unwrap_or_else(|| format!("sqlite://{}", hypod.path().join("hypod.db").display()));
    let daemon = Daemon::start_with(&hypod, &cron, "3");
    wait_for("the model call", Duration::from_secs(30), || {
        server.requests().len() == 1
    });
    let stopped = Instant::now();
    assert_eq!(daemon.terminate(), Some(0));
    assert!(stopped.elapsed() < Duration::from_secs(20));
    let seen = read_store(&url);
    assert!(
        seen.runs_per_trigger.is_empty(),
        "{:?}",
        seen.runs_per_trigger
    );
    assert!(seen.proposals.is_empty());
    // Still running, with its lease released: the next daemon takes it over at once.
    assert_eq!(seen.slots.get(&key).map(String::as_str), Some("running"));
}

/// PostgreSQL drops the daemon's connections while its run waits on a slow model (a restart,
/// a failover, an idle-connection reaper): when the model answers, the run either commits once
/// (the pool reconnects) or its slot ends failed with a reason or is taken over and run
/// again; never half-written, and the daemon stays ready. Skipped loudly without a server.
#[test]
fn a_lost_database_connection_mid_run_ends_the_run_cleanly_on_postgresql() {
    on_postgresql(lost_connection_mid_run);
}

/// Terminates every connection to the database `url` names but this one; how many it ended.
async fn terminate_backends(url: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to the test database");
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t WHERE ended",
    )
    .fetch_one(&mut conn)
    .await
    .expect("pg_terminate_backend");
    let _ = conn.close().await;
    ended
}

fn lost_connection_mid_run(database_url: Option<&str>) {
    use crate::fake_openai::{valid_draft, FakeOpenAi, Scripted};
    let url = database_url.expect("a PostgreSQL database");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(FakeOpenAi::start(vec![
        // Answers after the connections are gone.
        Scripted::proposals(vec![valid_draft(0), valid_draft(1)]).after(Duration::from_secs(5)),
        // A second call only if the slot was taken over (the first lease was lost).
        Scripted::proposals(vec![valid_draft(0), valid_draft(1)]),
    ]));
    let (hypod, cron, key) = slow_model_workspace(&server, Some(url));
    let daemon = Daemon::start_with(&hypod, &cron, "3");
    wait_for("the model call", Duration::from_secs(30), || {
        server.requests().len() == 1
    });
    let ended = runtime.block_on(terminate_backends(url));
    assert!(ended >= 1, "the daemon held no connection to terminate");
    wait_for("the slot to end", Duration::from_secs(40), || {
        read_store(url)
            .slots
            .get(&key)
            .is_some_and(|status| status != "running")
    });
    // The database check reconnects: the daemon is still ready.
    let (code, ready) = daemon.get("/readyz");
    assert_eq!(code, 200, "{ready}");
    assert_eq!(daemon.terminate(), Some(0));

    let seen = read_store(url);
    let slot = &seen.slot_rows[&key];
    eprintln!(
        "after the lost connection: slot {:?} (token {}, reason {:?}), {} model call(s)",
        slot.status,
        slot.token,
        slot.reason,
        server.requests().len()
    );
    let runs: Vec<_> = seen
        .runs
        .iter()
        .filter(|r| r.trigger.to_string() == key)
        .collect();
    match slot.status.as_str() {
        // Committed once: the slot names its run, which holds every proposal it counted.
        "succeeded" => {
            assert_eq!(runs.len(), 1, "{:?}", seen.runs_per_trigger);
            let run = runs[0];
            assert_eq!(slot.run_id.as_deref(), Some(run.id.as_str()), "{slot:?}");
            assert_eq!(run.status.as_str(), "succeeded", "{:?}", run.error);
            let queued = seen
                .proposal_runs
                .iter()
                .filter(|id| **id == run.id)
                .count();
            assert_eq!(queued, run.summary.queued + run.summary.blocked, "{run:?}");
            assert!(queued >= 1, "{run:?}");
        }
        // Failed with a reason the operator can read, and nothing queued for it.
        "failed" => {
            assert!(
                slot.reason.as_deref().is_some_and(|r| !r.trim().is_empty()),
                "{slot:?}"
            );
            assert!(
                runs.iter().all(|r| r.status.as_str() == "failed"),
                "{runs:?}"
            );
            assert!(seen.proposals.is_empty(), "{:?}", seen.proposals);
        }
        other => panic!("slot {key} ended {other}: {slot:?}"),
    }
    // Never half-written: no proposal without its run, no idea queued twice.
    let run_ids: BTreeSet<&str> = seen.runs.iter().map(|r| r.id.as_str()).collect();
    assert!(
        seen.proposal_runs
            .iter()
            .all(|id| run_ids.contains(id.as_str())),
        "proposals without their run: {:?} / {run_ids:?}",
        seen.proposal_runs
    );
    let distinct: BTreeSet<_> = seen.proposals.iter().collect();
    assert_eq!(distinct.len(), seen.proposals.len(), "{:?}", seen.proposals);
}

/// `schedule.max_run_seconds`: a run whose model never answers is ended after it, its slot
/// marked failed with the reason, nothing written, and the daemon goes on (ready, exits 0).
#[test]
fn a_run_past_max_run_seconds_is_ended_and_its_slot_failed() {
    use crate::fake_openai::{valid_draft, FakeOpenAi, Scripted};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(FakeOpenAi::start(vec![Scripted::proposals(vec![
        valid_draft(0),
    ])
    .after(Duration::from_secs(120))]));
    let (hypod, cron, key) = slow_model_workspace(&server, None);
    let config = hypod.path().join("hypod.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("[schedule]\nmax_run_seconds = 3\n");
    std::fs::write(&config, text).expect("config");
    let url = format!("sqlite://{}", hypod.path().join("hypod.db").display());
    let daemon = Daemon::start_with(&hypod, &cron, "30");
    wait_for("the slot to be ended", Duration::from_secs(30), || {
        read_store(&url).slots.get(&key).map(String::as_str) == Some("failed")
    });
    assert_eq!(daemon.get("/readyz").0, 200);
    assert_eq!(daemon.terminate(), Some(0));
    let seen = read_store(&url);
    let reason = seen.slot_rows[&key].reason.clone().unwrap_or_default();
    assert!(reason.contains("max_run_seconds = 3"), "{reason}");
    assert!(seen.runs.is_empty(), "{:?}", seen.runs_per_trigger);
    assert!(seen.proposals.is_empty());
}
