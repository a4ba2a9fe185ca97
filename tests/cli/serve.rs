//! `hypod serve` as real processes: several daemons on one SQLite file run each slot of a
//! two-second schedule exactly once, and SIGTERM leaves a consistent database.

use crate::support::Hypod;
use sqlx::Row;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `hypod serve` child, stopped with SIGTERM when dropped.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(hypod: &Hypod) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hypod"))
            .arg("serve")
            .current_dir(hypod.path())
            .env("HYPOD_CONFIG", hypod.path().join("hypod.toml"))
            .env("HYPOD_SERVER__LISTEN", "127.0.0.1:0")
            .env("HYPOD_SCHEDULE__CRON", "*/2 * * * * *")
            .env("HYPOD_SCHEDULE__MISSED", "skip")
            .env("HYPOD_SCHEDULE__LEASE_SECONDS", "6")
            .env_remove("OPENAI_API_KEY")
            .env_remove("HYPOD_NOW")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hypod serve");
        // Wait until it listens (it says so on stderr), then let stderr drain in a thread.
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let started = Instant::now();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => break,
                Some(Ok(_)) => {}
                other => panic!("hypod serve did not start: {other:?}"),
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no start");
        }
        std::thread::spawn(move || for _ in lines {});
        Daemon { child }
    }

    fn terminate(mut self) -> Option<i32> {
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
    runs_per_trigger: BTreeMap<String, usize>,
    proposals: Vec<(String, String, String)>,
}

fn read_database(hypod: &Hypod) -> Seen {
    let url = format!("sqlite://{}", hypod.path().join("hypod.db").display());
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let pool = sqlx::SqlitePool::connect(&url)
                .await
                .expect("open the database");
            let slots = sqlx::query("SELECT key, status FROM slots")
                .fetch_all(&pool)
                .await
                .expect("slots")
                .iter()
                .map(|r| (r.get::<String, _>("key"), r.get::<String, _>("status")))
                .collect();
            let mut runs_per_trigger = BTreeMap::new();
            for row in sqlx::query("SELECT trigger FROM runs")
                .fetch_all(&pool)
                .await
                .expect("runs")
            {
                *runs_per_trigger
                    .entry(row.get::<String, _>("trigger"))
                    .or_insert(0) += 1;
            }
            let proposals = sqlx::query("SELECT moment, segment, lever FROM proposals")
                .fetch_all(&pool)
                .await
                .expect("proposals")
                .iter()
                .map(|r| (r.get("moment"), r.get("segment"), r.get("lever")))
                .collect();
            Seen {
                slots,
                runs_per_trigger,
                proposals,
            }
        })
}

#[test]
fn two_daemons_on_one_sqlite_file_run_each_slot_once() {
    let hypod = Hypod::new();
    hypod.import_sample();
    let first = Daemon::start(&hypod);
    let second = Daemon::start(&hypod);
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(first.terminate(), Some(0));
    assert_eq!(second.terminate(), Some(0));

    let seen = read_database(&hypod);
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
