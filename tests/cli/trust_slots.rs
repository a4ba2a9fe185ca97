//! Slots and notifications under faults (issue 23), with real processes on SQLite and
//! PostgreSQL: a `hypod run` (or API run) killed with -9 is ended as abandoned by the next
//! daemon, never run by it; with `missed = "skip"` a slot whose daemon died is taken over at
//! once; two daemons and a slow webhook send each notification once; notification links open
//! the proposal's page in the web UI; the webhook's secret path appears in no log line, stored
//! error or message; and a webhook address that is not a whole http(s) URL is refused.

use crate::fake_openai::{valid_draft, FakeOpenAi, Scripted};
use crate::support::{Hypod, SAMPLE};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The secret part of the test webhook's address, as a Slack webhook's path is.
const SECRET_PATH: &str = "/services/T0SECRET/B0SECRET/xoxSeCrEtPaTh";

/// A schedule that never fires during a test (3 a.m. on January 1st).
const NEVER: &str = "0 0 3 1 1 *";

/// Runs `check` on SQLite, then on a fresh PostgreSQL database (dropped afterwards, also when
/// the check panics; skipped loudly without a server, a failure when CI is set). `check` gets
/// the database URL to write into hypod.toml.
fn on_both_backends(check: fn(&str)) {
    check("sqlite://hypod.db");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = runtime.block_on(crate::backends::postgres_server()) else {
        return;
    };
    let db = runtime.block_on(crate::backends::PgDatabase::create(&server));
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&db.url)));
    runtime.block_on(db.drop_now());
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

/// A hypod folder on `database` (`sqlite://hypod.db` or a PostgreSQL URL) with the sample
/// history imported and `extra` appended to its hypod.toml; and the URL to open its database
/// from the test.
fn workspace(database: &str, extra: &str) -> (Hypod, String) {
    let hypod = Hypod::with_database(database);
    let path = hypod.path().join("hypod.toml");
    let mut config = std::fs::read_to_string(&path).expect("config");
    config.push_str(extra);
    std::fs::write(&path, config).expect("config");
    hypod.ok(&["import", SAMPLE]);
    let url = if database.starts_with("sqlite:") {
        format!("sqlite://{}", hypod.path().join("hypod.db").display())
    } else {
        database.to_string()
    };
    (hypod, url)
}

/// The `[proposer]` and `[llm]` sections of a run whose model is `server`.
fn model_at(server: &FakeOpenAi) -> String {
    format!(
        "[proposer]\nkind = \"openai\"\nmax_proposals = 2\nper_moment = 2\n\
         [llm]\nbase_url = \"{}\"\nmodel = \"fake-model\"\napi_key_env = \"HYPOD_TEST_NO_SUCH_KEY\"\n\
         timeout_seconds = 60\nmax_attempts = 1\nmax_repairs = 0\n",
        server.base_url()
    )
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A port nothing listens on now (bound, then released), for a daemon to listen on.
fn free_port() -> u16 {
    crate::fake_openai::closed_port()
}

/// A `hypod serve` child whose log lines are kept; killed when dropped.
struct Daemon {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// `hypod serve` in `hypod`'s folder with these overrides (besides a schedule that never
    /// fires, `missed = "skip"`, a free port and info logs), once it listens.
    fn spawn(hypod: &Hypod, overrides: &[(&str, &str)]) -> Daemon {
        let mut child = hypod
            .command(&["serve"])
            .env("HYPOD_LOG", "info")
            .env("HYPOD_SCHEDULE__CRON", NEVER)
            .env("HYPOD_SCHEDULE__MISSED", "skip")
            .env("HYPOD_SERVER__LISTEN", "127.0.0.1:0")
            .envs(overrides.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start hypod serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on http://") {
                    if let Some(tx) = tx.take() {
                        let addr = line.rsplit("http://").next().unwrap_or("").trim();
                        let _ = tx.send(addr.to_string());
                    }
                }
                kept.lock().expect("log").push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("hypod serve did not start: {:?}", log.lock().expect("log"));
            }
        };
        Daemon { child, addr, log }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    fn kill_9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM, then its exit code and its whole log.
    fn terminate(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        let code = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status.code();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "hypod serve did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread has the last lines once the pipe closes.
        std::thread::sleep(Duration::from_millis(200));
        (code, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the database holds, read through hypod's own store.
struct Seen {
    slots: BTreeMap<String, hypod::domain::SlotRecord>,
    runs: Vec<hypod::domain::RunRecord>,
    proposals: usize,
    /// (delivered, pending) notifications.
    notifications: (usize, usize),
}

fn read_store(url: &str) -> Seen {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let store = hypod::store::open(url, crate::backends::audit_key())
                .await
                .expect("open the database");
            let slots = store
                .list_slots(1000)
                .await
                .expect("slots")
                .into_iter()
                .map(|s| (s.key.clone(), s))
                .collect();
            let runs = store.list_runs(1000).await.expect("runs");
            let proposals = store
                .list_proposals(&hypod::domain::ProposalFilter::default())
                .await
                .expect("proposals")
                .len();
            let notifications = store.notification_counts().await.expect("outbox");
            Seen {
                slots,
                runs,
                proposals,
                notifications,
            }
        })
}

/// Every stored `outbox.last_error`, read with SQL.
fn outbox_errors(url: &str) -> Vec<Option<String>> {
    use sqlx::Connection;
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let sql = "SELECT last_error FROM outbox ORDER BY id";
            if url.starts_with("sqlite:") {
                let mut conn = sqlx::SqliteConnection::connect(url).await.expect("open");
                let rows: Vec<(Option<String>,)> = sqlx::query_as(sql)
                    .fetch_all(&mut conn)
                    .await
                    .expect("read");
                rows.into_iter().map(|(e,)| e).collect()
            } else {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("open");
                let rows: Vec<(Option<String>,)> = sqlx::query_as(sql)
                    .fetch_all(&mut conn)
                    .await
                    .expect("read");
                rows.into_iter().map(|(e,)| e).collect()
            }
        })
}

// ---------------------------------------------------------------------------------------------
// 1. A killed `hypod run` (or API run) is ended, never run by a daemon.

/// `hypod run` killed with -9 while its model call hangs leaves its `cli:` slot running; a
/// daemon started once the lease expired ends it as failed, naming the dead process, and runs
/// nothing (before: it took the slot over and ran it as `schedule:cli:…`).
#[test]
fn a_killed_hypod_run_is_ended_by_the_next_daemon_not_run() {
    on_both_backends(killed_cli_run_is_ended);
}

fn killed_cli_run_is_ended(database: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(FakeOpenAi::start(vec![
        // The killed run's call: it never sees this answer.
        Scripted::proposals(vec![valid_draft(0), valid_draft(1)]).after(Duration::from_secs(60)),
        // What a daemon that wrongly re-ran the slot would be answered.
        Scripted::proposals(vec![valid_draft(0), valid_draft(1)]),
    ]));
    let (hypod, url) = workspace(database, &model_at(&server));
    let mut run = hypod
        .command(&["run"])
        .env("HYPOD_SCHEDULE__LEASE_SECONDS", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hypod run");
    let pid = run.id();
    wait_for("the run's model call", Duration::from_secs(30), || {
        server.requests().len() == 1
    });
    let _ = run.kill(); // SIGKILL
    let _ = run.wait();
    let seen = read_store(&url);
    let (key, slot) = seen.slots.iter().next().expect("the run's slot");
    assert!(key.starts_with("cli:"), "{key}");
    assert_eq!(slot.status.as_str(), "running");
    let key = key.clone();

    let daemon = Daemon::spawn(&hypod, &[("HYPOD_SCHEDULE__LEASE_SECONDS", "3")]);
    wait_for("the slot to be ended", Duration::from_secs(30), || {
        read_store(&url).slots[&key].status.as_str() != "running"
    });
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");

    let seen = read_store(&url);
    let slot = &seen.slots[&key];
    assert_eq!(slot.status.as_str(), "failed", "{slot:?}");
    let reason = slot.reason.as_deref().unwrap_or("");
    assert!(
        reason.contains("abandoned") && reason.contains(&format!(":{pid})")),
        "the reason names the process that died: {reason}"
    );
    assert_eq!(
        (slot.token, slot.takeovers, slot.run_id.as_deref()),
        (1, 0, None)
    );
    // Besides it, only the slot the daemon's catch-up skipped (a schedule that never fires).
    assert!(
        seen.slots
            .values()
            .all(|s| s.key == key || s.status.as_str() == "skipped"),
        "{:?}",
        seen.slots
    );
    // Nothing ran: no run recorded, no proposal, no second model call.
    assert!(
        seen.runs.is_empty(),
        "{:?}",
        seen.runs
            .iter()
            .map(|r| r.trigger.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(seen.proposals, 0);
    assert_eq!(server.requests().len(), 1);
    assert!(
        log.contains("ended a run whose process died") && log.contains(&key),
        "the daemon says what it ended: {log}"
    );
}

/// Without any daemon, the next `hypod run` ends the slot of one killed earlier, says so, and
/// runs its own slot as usual.
#[test]
fn the_next_hypod_run_ends_the_slot_of_a_killed_one() {
    on_both_backends(next_run_ends_killed_run);
}

fn next_run_ends_killed_run(database: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(FakeOpenAi::start(vec![Scripted::proposals(vec![
        valid_draft(0),
    ])
    .after(Duration::from_secs(60))]));
    let (hypod, url) = workspace(database, &model_at(&server));
    let mut run = hypod
        .command(&["run"])
        .env("HYPOD_SCHEDULE__LEASE_SECONDS", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hypod run");
    wait_for("the run's model call", Duration::from_secs(30), || {
        server.requests().len() == 1
    });
    let _ = run.kill(); // SIGKILL
    let _ = run.wait();
    let killed = read_store(&url)
        .slots
        .keys()
        .next()
        .expect("a slot")
        .clone();
    // Past the killed run's lease (3 s on the database's clock).
    std::thread::sleep(Duration::from_secs(4));
    let next = hypod
        .command(&["run", "--json"])
        .env("HYPOD_PROPOSER__KIND", "builtin")
        .output()
        .expect("hypod run");
    let stderr = String::from_utf8_lossy(&next.stderr);
    assert_eq!(next.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("ended a run whose process died") && stderr.contains(&killed),
        "{stderr}"
    );
    let seen = read_store(&url);
    assert_eq!(seen.slots[&killed].status.as_str(), "failed");
    assert_eq!(seen.runs.len(), 1, "only the second run is recorded");
    let own = seen
        .slots
        .values()
        .find(|s| s.key != killed)
        .expect("the second run's slot");
    assert_eq!(own.status.as_str(), "succeeded");
    assert_eq!(own.run_id.as_deref(), Some(seen.runs[0].id.as_str()));
}

/// A daemon killed with -9 during `POST /api/v1/runs` leaves an `api:` slot; another daemon
/// ends it as abandoned and runs nothing.
#[test]
fn a_killed_api_run_is_ended_by_another_daemon_not_run() {
    on_both_backends(killed_api_run_is_ended);
}

fn killed_api_run_is_ended(database: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(FakeOpenAi::start(vec![
        Scripted::proposals(vec![valid_draft(0)]).after(Duration::from_secs(60)),
        Scripted::proposals(vec![valid_draft(0)]),
    ]));
    let (hypod, url) = workspace(database, &model_at(&server));
    let token = hypod.token("ada", "admin");
    let first = Daemon::spawn(&hypod, &[("HYPOD_SCHEDULE__LEASE_SECONDS", "3")]);
    // The request waits on the run; it is cut off when its daemon dies.
    let addr = first.addr.clone();
    let request = format!(
        "POST /api/v1/runs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    std::thread::spawn(move || {
        if let Ok(mut stream) = std::net::TcpStream::connect(&addr) {
            let _ = stream.write_all(request.as_bytes());
            let _ = stream.read_to_end(&mut Vec::new());
        }
    });
    wait_for("the API run's model call", Duration::from_secs(30), || {
        server.requests().len() == 1
    });
    first.kill_9();
    let key = read_store(&url)
        .slots
        .keys()
        .next()
        .expect("a slot")
        .clone();
    assert!(key.starts_with("api:"), "{key}");

    let second = Daemon::spawn(&hypod, &[("HYPOD_SCHEDULE__LEASE_SECONDS", "3")]);
    wait_for("the slot to be ended", Duration::from_secs(30), || {
        read_store(&url).slots[&key].status.as_str() != "running"
    });
    let (code, log) = second.terminate();
    assert_eq!(code, Some(0), "{log}");
    let seen = read_store(&url);
    let slot = &seen.slots[&key];
    assert_eq!(slot.status.as_str(), "failed", "{slot:?}");
    assert!(
        slot.reason.as_deref().unwrap_or("").contains("abandoned"),
        "{slot:?}"
    );
    assert!(seen.runs.is_empty());
    assert_eq!(seen.proposals, 0);
    assert_eq!(server.requests().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 2. `missed = "skip"` and a slot whose daemon died.

/// A daemon killed with -9 mid-run leaves its scheduled slot running; a daemon started after
/// the lease expired, with `missed = "skip"` and a long lease of its own, takes the slot over
/// at once and runs it (before: the catch-up claimed it for a whole lease of its own and left
/// it running, so the takeover waited that lease out).
#[test]
fn with_missed_skip_a_dead_daemons_slot_is_taken_over_at_once() {
    on_both_backends(skip_takes_over_at_once);
}

fn skip_takes_over_at_once(database: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(FakeOpenAi::start(vec![
        Scripted::proposals(vec![valid_draft(0), valid_draft(1)]).after(Duration::from_secs(60)),
        Scripted::proposals(vec![valid_draft(0), valid_draft(1)]),
    ]));
    let (hypod, url) = workspace(database, &model_at(&server));
    let due = chrono::Utc::now() + chrono::Duration::seconds(5);
    let cron = due.format("%S %M %H * * *").to_string();
    let key = format!("schedule:{}", due.format("%Y-%m-%dT%H:%M:%SZ"));
    let holder = Daemon::spawn(
        &hypod,
        &[
            ("HYPOD_SCHEDULE__CRON", cron.as_str()),
            ("HYPOD_SCHEDULE__LEASE_SECONDS", "3"),
        ],
    );
    wait_for("the holder's model call", Duration::from_secs(30), || {
        server.requests().len() == 1
    });
    holder.kill_9();
    // Past the holder's lease (3 s on the database's clock): the slot is to be taken over.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(read_store(&url).slots[&key].status.as_str(), "running");

    let successor = Daemon::spawn(
        &hypod,
        &[
            ("HYPOD_SCHEDULE__CRON", cron.as_str()),
            ("HYPOD_SCHEDULE__LEASE_SECONDS", "600"),
        ],
    );
    wait_for(
        "the takeover to commit (well within the successor's 600 s lease)",
        Duration::from_secs(40),
        || read_store(&url).slots[&key].status.as_str() == "succeeded",
    );
    let (code, log) = successor.terminate();
    assert_eq!(code, Some(0), "{log}");
    let seen = read_store(&url);
    let slot = &seen.slots[&key];
    assert_eq!(
        (slot.token, slot.takeovers),
        (2, 1),
        "one takeover: {slot:?}"
    );
    assert_eq!(seen.runs.len(), 1);
    assert_eq!(seen.runs[0].trigger.to_string(), key);
    assert_eq!(slot.run_id.as_deref(), Some(seen.runs[0].id.as_str()));
    assert_eq!(server.requests().len(), 2);
    assert!(log.contains("taken over"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// 3–5. Notifications: once each with two daemons and a slow webhook; links that open; no
// secret in logs or stored errors.

/// A local webhook receiver: every body it was sent, after `delay` each.
struct Receiver {
    addr: std::net::SocketAddr,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(delay: Duration) -> Receiver {
        use axum::routing::post;
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            SECRET_PATH,
            post(move |body: axum::Json<serde_json::Value>| {
                let kept = kept.clone();
                async move {
                    kept.lock().expect("bodies").push(body.0);
                    tokio::time::sleep(delay).await;
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the webhook");
        let addr = listener.local_addr().expect("address");
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            bodies,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}{SECRET_PATH}", self.addr)
    }

    fn texts(&self) -> Vec<String> {
        self.bodies
            .lock()
            .expect("bodies")
            .iter()
            .map(|b| b["text"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// Twelve runs and two daemons sharing the outbox, with a webhook that takes 0.8 s an answer
/// and holds of 4 s: a batch of ten outlives its hold, so without renewal the other daemon
/// claimed and sent rows still in the first one's batch. Each run is announced exactly once.
#[test]
fn two_daemons_and_a_slow_webhook_send_each_notification_once() {
    on_both_backends(each_notification_once);
}

fn each_notification_once(database: &str) {
    let receiver = Receiver::start(Duration::from_millis(800));
    let (hypod, url) = workspace(
        database,
        &format!(
            "[notify]\nwebhook_url = \"{}\"\nretry_seconds = 1\nhold_seconds = 4\n",
            receiver.url()
        ),
    );
    let mut runs = Vec::new();
    for _ in 0..12 {
        let ran = hypod.ok(&["run", "--json"]).json();
        runs.push(ran["run"]["id"].as_str().expect("a run id").to_string());
    }
    assert!(receiver.texts().is_empty());
    let first = Daemon::spawn(&hypod, &[]);
    let second = Daemon::spawn(&hypod, &[]);
    wait_for(
        "every notification delivered",
        Duration::from_secs(90),
        || read_store(&url).notifications == (12, 0),
    );
    // Time for a second send, had a row been claimed twice.
    std::thread::sleep(Duration::from_secs(3));
    let (code, first_log) = first.terminate();
    assert_eq!(code, Some(0), "{first_log}");
    let (code, second_log) = second.terminate();
    assert_eq!(code, Some(0), "{second_log}");

    let texts = receiver.texts();
    for id in &runs {
        let sent = texts.iter().filter(|t| t.contains(id.as_str())).count();
        assert_eq!(sent, 1, "run {id} announced {sent} times");
    }
    assert_eq!(texts.len(), 12, "{texts:#?}");
    assert!(outbox_errors(&url).iter().all(Option::is_none));
    for log in [&first_log, &second_log] {
        assert!(
            !log.contains("T0SECRET"),
            "the webhook's path is in the log: {log}"
        );
    }
}

/// The hold's renewal is fenced: a claim whose hold expired, or that a later claim replaced,
/// renews nothing (so its daemon does not send), while the current claim renews its own rows.
#[test]
fn a_notification_hold_is_renewed_only_by_the_claim_that_holds_it() {
    on_both_backends(hold_renewal_is_fenced);
}

fn hold_renewal_is_fenced(database: &str) {
    let (hypod, url) = workspace(database, "");
    hypod.ok(&["run"]);
    hypod.ok(&["run"]);
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let store = hypod::store::open(&url, crate::backends::audit_key())
                .await
                .expect("open the database");
            let day = Duration::from_secs(86_400);
            let hold = Duration::from_secs(600);
            // A hold of zero has expired as soon as it is taken.
            let lapsed = store
                .claim_notifications(10, Duration::ZERO, day)
                .await
                .expect("claim");
            assert_eq!(lapsed.len(), 2);
            assert!(store
                .renew_notifications(&lapsed, hold)
                .await
                .expect("renew")
                .is_empty());
            // Another daemon claims the rows; the first claim can no longer renew them.
            let current = store
                .claim_notifications(10, hold, day)
                .await
                .expect("claim");
            assert_eq!(current.len(), 2);
            assert!(current.iter().all(|item| item.attempts == 2));
            assert!(store
                .renew_notifications(&lapsed, hold)
                .await
                .expect("renew")
                .is_empty());
            let ids: Vec<i64> = current.iter().map(|item| item.id).collect();
            assert_eq!(
                store
                    .renew_notifications(&current, hold)
                    .await
                    .expect("renew"),
                ids
            );
            // Held: nobody else can claim them meanwhile.
            assert!(store
                .claim_notifications(10, hold, day)
                .await
                .expect("claim")
                .is_empty());
            // A delivered row is not renewed either.
            store
                .finish_notification(current[0].id, Ok(()), hold)
                .await
                .expect("delivered");
            assert_eq!(
                store
                    .renew_notifications(&current, hold)
                    .await
                    .expect("renew"),
                vec![current[1].id]
            );
        });
}

/// The links in a notification open the proposal's page in the web UI of the running server
/// (before: `/proposals/ID`, a 404), under `server.public_url`.
#[test]
fn notification_links_open_the_proposal_page() {
    let receiver = Receiver::start(Duration::ZERO);
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let (hypod, _) = workspace(
        "sqlite://hypod.db",
        &format!(
            "[server]\npublic_url = \"{public}\"\n[notify]\nwebhook_url = \"{}\"\n",
            receiver.url()
        ),
    );
    let token = hypod.token("ada", "viewer");
    let ran = hypod.ok(&["run", "--json"]).json();
    let daemon = Daemon::spawn(
        &hypod,
        &[("HYPOD_SERVER__LISTEN", format!("127.0.0.1:{port}").as_str())],
    );
    wait_for("the notification", Duration::from_secs(30), || {
        !receiver.texts().is_empty()
    });
    let text = receiver.texts().remove(0);
    let links: Vec<&str> = text
        .split('<')
        .skip(1)
        .filter_map(|rest| rest.split('|').next())
        .collect();
    let queued = ran["proposals"].as_array().map(Vec::len).unwrap_or(0);
    assert!(queued > 0 && !links.is_empty(), "{text}");
    let cookie = format!("hypod_token={token}");
    for link in &links {
        let path = link
            .strip_prefix(&public)
            .unwrap_or_else(|| panic!("{link} is not under {public}"));
        let id = path
            .strip_prefix("/ui/proposals/")
            .unwrap_or_else(|| panic!("{link} is not a proposal page"));
        let page =
            crate::test_app::request(&daemon.addr, "GET", path, &[("cookie", &cookie)], None);
        assert_eq!(page.status, 200, "{link}: {}", page.body);
        let title = ran["proposals"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["id"] == id)
            .and_then(|p| p["title"].as_str())
            .unwrap_or_else(|| panic!("{id} is not a proposal of the run: {ran}"));
        assert!(
            page.body
                .contains(&format!("<h1 id=\"title\">{}</h1>", html(title))),
            "{link}: not the page of {title:?}"
        );
    }
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
}

/// `text` as the web UI's templates escape it.
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2f;")
}

/// A webhook nothing answers at: the failure is logged and stored with the address cut to its
/// scheme and host, never its secret path (before: reqwest's message held the whole URL).
#[test]
fn an_unreachable_webhook_leaves_its_secret_path_out_of_logs_and_stored_errors() {
    on_both_backends(unreachable_webhook_is_redacted);
}

fn unreachable_webhook_is_redacted(database: &str) {
    let port = crate::fake_openai::closed_port();
    let (hypod, url) = workspace(
        database,
        &format!(
            "[notify]\nwebhook_url = \"http://127.0.0.1:{port}{SECRET_PATH}?token=xoxQuErY\"\nretry_seconds = 1\n"
        ),
    );
    hypod.ok(&["run"]);
    let daemon = Daemon::spawn(&hypod, &[("HYPOD_LOG", "debug")]);
    wait_for("a failed attempt recorded", Duration::from_secs(30), || {
        outbox_errors(&url).iter().any(Option::is_some)
    });
    let (code, log) = daemon.terminate();
    assert_eq!(code, Some(0), "{log}");
    let errors = outbox_errors(&url);
    let stored = errors[0].as_deref().expect("the stored error");
    let shown = format!("http://127.0.0.1:{port}/…");
    assert!(
        stored.contains(&shown) && stored.contains("unreachable"),
        "{stored}"
    );
    assert!(
        log.contains("notification failed") && log.contains(&shown),
        "{log}"
    );
    for secret in ["T0SECRET", "xoxSeCrEtPaTh", "xoxQuErY"] {
        assert!(!stored.contains(secret), "stored: {stored}");
        assert!(!log.contains(secret), "logged: {log}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Webhook addresses are parsed whole.

/// `http://`, an address with spaces, another scheme: refused when the configuration loads
/// (here by `hypod policy check`; every command loads it) with a message naming the key and
/// never repeating the address; a whole address passes.
#[test]
fn a_webhook_address_that_is_not_a_whole_http_url_is_refused() {
    let hypod = Hypod::new();
    let path = hypod.path().join("hypod.toml");
    let base = std::fs::read_to_string(&path).expect("config");
    for (bad, why) in [
        ("http://", "empty host"),
        ("http://hooks example/x y", "space"),
        (
            "https://hooks.example.com/services/T0SECRET/with space",
            "space",
        ),
        ("ftp://hooks.example.com/T0SECRET", "http:// or https://"),
        ("hooks.example.com/T0SECRET", "not a valid http(s) address"),
    ] {
        std::fs::write(&path, format!("{base}[notify]\nwebhook_url = \"{bad}\"\n"))
            .expect("config");
        let checked = hypod.run(&["policy", "check"]);
        assert_eq!(checked.code, Some(2), "{bad:?} passed: {}", checked.stdout);
        assert!(
            checked.stderr.contains("key `notify.webhook_url`") && checked.stderr.contains(why),
            "{bad:?}: {}",
            checked.stderr
        );
        assert!(!checked.stderr.contains("T0SECRET"), "{}", checked.stderr);
        // The same through the environment, which is named.
        std::fs::write(&path, &base).expect("config");
        let checked = hypod
            .command(&["policy", "check"])
            .env("HYPOD_NOTIFY__WEBHOOK_URL", bad)
            .output()
            .expect("hypod policy check");
        let stderr = String::from_utf8_lossy(&checked.stderr);
        assert_eq!(checked.status.code(), Some(2), "{bad:?}: {stderr}");
        assert!(
            stderr.contains("HYPOD_NOTIFY__WEBHOOK_URL") && stderr.contains("notify.webhook_url"),
            "{stderr}"
        );
        assert!(!stderr.contains("T0SECRET"), "{stderr}");
    }
    // A line the TOML parser quotes in its message: shown without its path.
    std::fs::write(
        &path,
        format!("{base}[notify]\nwebhook_url = \"https://hooks.example.com/services/T0SECRET\n"),
    )
    .expect("config");
    let checked = hypod.run(&["policy", "check"]);
    assert_eq!(checked.code, Some(2), "{}", checked.stdout);
    assert!(
        checked.stderr.contains("https://hooks.example.com/…")
            && !checked.stderr.contains("T0SECRET"),
        "{}",
        checked.stderr
    );
    std::fs::write(
        &path,
        format!("{base}[notify]\nwebhook_url = \"https://hooks.example.com/services/T0/B0/x\"\n"),
    )
    .expect("config");
    hypod.ok(&["policy", "check"]);
}
