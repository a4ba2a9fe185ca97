//! The daemon under faults, through the real server and the binary: after write errors (a
//! full disk, a transaction the database rolled back by itself) every approval, comment and run
//! succeeds again without a restart, on SQLite and PostgreSQL; a SQLite file deleted or
//! replaced under a live daemon makes `/readyz` answer 503 with the reason and every write
//! refuse, instead of committing into a file nobody can open again; and the times that decide
//! state come from the database's clock, so a process clock (`HYPOD_NOW`) 31 days ahead
//! expires nothing and no review is dated before the proposal it decides.

use crate::backends::{postgres_server, PgDatabase};
use crate::review::Reviewed;
use crate::support::{Hypod, SAMPLE};
use crate::test_app::{request, Answer, TestApp};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::Connection;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// A fresh PostgreSQL database for one test, dropped when the test ends (also when it fails).
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

/// The database a test folder names, to act under the daemon's back.
enum Backend {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Backend {
    /// Runs `statements` (separated by `;;`) on the database, outside hypod.
    fn execute(&self, statements: &str) {
        block_on(async {
            for sql in statements
                .split(";;")
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let sql = sqlx::AssertSqlSafe(sql.to_string());
                match self {
                    Backend::Sqlite(path) => {
                        let url = format!("sqlite://{}", path.display());
                        let mut conn = sqlx::SqliteConnection::connect(&url)
                            .await
                            .expect("connect");
                        sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
                        conn.close().await.expect("close");
                    }
                    Backend::Postgres(url) => {
                        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
                        sqlx::raw_sql(sql).execute(&mut conn).await.expect("sql");
                        conn.close().await.expect("close");
                    }
                }
            }
        })
    }

    /// Makes every append to the audit log — and so every review, run and import — fail as a
    /// full disk does: on SQLite the whole transaction rolled back by the database itself
    /// (what SQLite does on a full disk or an I/O error, after which the client's own
    /// `ROLLBACK` fails), on PostgreSQL the `disk_full` error.
    fn fill_disk(&self) {
        match self {
            Backend::Sqlite(_) => self.execute(
                "CREATE TRIGGER disk_full BEFORE INSERT ON audit_log \
                 BEGIN SELECT RAISE(ROLLBACK, 'database or disk is full'); END",
            ),
            Backend::Postgres(_) => self.execute(
                "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 RAISE EXCEPTION 'could not extend file: No space left on device' \
                 USING ERRCODE = 'disk_full'; END $$;; \
                 CREATE TRIGGER disk_full BEFORE INSERT ON audit_log \
                 FOR EACH ROW EXECUTE FUNCTION disk_full()",
            ),
        }
    }

    fn free_disk(&self) {
        match self {
            Backend::Sqlite(_) => self.execute("DROP TRIGGER disk_full"),
            Backend::Postgres(_) => {
                self.execute("DROP TRIGGER disk_full ON audit_log;; DROP FUNCTION disk_full()")
            }
        }
    }
}

/// Moves every stored proposal's creation `days` back, under hypod's back, as if it had been
/// waiting that long: expiry is measured by the database's clock, which `HYPOD_NOW` no longer
/// moves. `postgres` is the database URL, or `None` for the folder's SQLite file.
pub(crate) fn age_proposals(hypod: &Hypod, postgres: Option<&str>, days: i64) {
    block_on(async {
        match postgres {
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::query(
                    "UPDATE proposals SET created_at = created_at - make_interval(days => $1::int)",
                )
                .bind(days)
                .execute(&mut conn)
                .await
                .expect("age the proposals");
            }
            None => {
                let url = format!("sqlite://{}", hypod.path().join("hypod.db").display());
                let mut conn = sqlx::SqliteConnection::connect(&url)
                    .await
                    .expect("connect");
                let rows: Vec<(String, String)> =
                    sqlx::query_as("SELECT id, created_at FROM proposals")
                        .fetch_all(&mut conn)
                        .await
                        .expect("the proposals");
                for (id, created) in rows {
                    let older = DateTime::parse_from_rfc3339(&created)
                        .expect("a stored time")
                        .with_timezone(&Utc)
                        - Duration::days(days);
                    sqlx::query("UPDATE proposals SET created_at = $1 WHERE id = $2")
                        .bind(hypod::store::timestamp(older))
                        .bind(id)
                        .execute(&mut conn)
                        .await
                        .expect("age a proposal");
                }
            }
        }
    })
}

/// Dates every stored proposal of the folder's SQLite file at `at`, under hypod's back (a test
/// of what follows a proposal's creation, with a history written for that date).
pub(crate) fn date_proposals(hypod: &Hypod, at: &str) {
    let at = DateTime::parse_from_rfc3339(at)
        .expect("an RFC 3339 time")
        .with_timezone(&Utc);
    block_on(async {
        let url = format!("sqlite://{}", hypod.path().join("hypod.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        sqlx::query("UPDATE proposals SET created_at = $1")
            .bind(hypod::store::timestamp(at))
            .execute(&mut conn)
            .await
            .expect("date the proposals");
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn post(app: &TestApp, token: &str, path: &str, body: Option<&str>) -> Answer {
    request(
        &app.addr,
        "POST",
        path,
        &[("Authorization", &bearer(token))],
        body.map(|b| ("application/json", b)),
    )
}

fn get(app: &TestApp, token: &str, path: &str) -> Answer {
    request(
        &app.addr,
        "GET",
        path,
        &[("Authorization", &bearer(token))],
        None,
    )
}

fn comment(app: &TestApp, token: &str, id: &str, text: &str) -> Answer {
    post(
        app,
        token,
        &format!("/api/v1/proposals/{id}/comments"),
        Some(&serde_json::json!({ "text": text }).to_string()),
    )
}

/// How many reviews (of any kind) the store holds for `id`, as `queue show` reads them.
fn review_count(hypod: &Hypod, id: &str) -> usize {
    hypod.ok(&["queue", "show", id, "--json"]).json()["reviews"]
        .as_array()
        .map_or(0, Vec::len)
}

fn run_count(app: &TestApp, token: &str) -> usize {
    let runs = get(app, token, "/api/v1/runs?limit=200");
    assert_eq!(runs.status, 200, "{}", runs.body);
    runs.json()["items"].as_array().expect("a page").len()
}

/// Write errors, then the disk freed: every write through the live daemon succeeds again.
fn the_daemon_recovers_from_write_errors(hypod: Hypod, backend: Backend) {
    let setup = Reviewed::on(hypod);
    let hypod = &setup.hypod;
    let app = TestApp::spawn(hypod);
    let (reviewer, governance, admin) = (
        setup.token("reviewer"),
        setup.token("governance"),
        setup.token("admin"),
    );
    let pending = setup.pending();
    assert!(pending.len() >= 2, "the sample run queues proposals");
    let (first, _) = pending[0].clone();
    let runs_before = run_count(&app, admin);

    backend.fill_disk();
    // More failed writes than the pool has connections: each failed transaction would leave
    // its connection behind.
    for n in 0..10 {
        let failed = comment(
            &app,
            reviewer,
            &first,
            &format!("while the disk is full {n}"),
        );
        assert_eq!(failed.status, 500, "{}", failed.body);
        assert!(
            failed.body.contains("full") || failed.body.contains("No space"),
            "the error says why: {}",
            failed.body
        );
    }
    let approval = post(
        &app,
        reviewer,
        &format!("/api/v1/proposals/{first}/approve"),
        Some("{}"),
    );
    assert_eq!(approval.status, 500, "{}", approval.body);
    let run = post(&app, admin, "/api/v1/runs", None);
    assert_ne!(
        run.status, 201,
        "a run cannot commit on a full disk: {}",
        run.body
    );
    backend.free_disk();

    // Nothing of the failed writes was kept, and the log still verifies.
    assert_eq!(review_count(hypod, &first), 0);
    assert_eq!(run_count(&app, admin), runs_before);
    let verify = hypod.run(&["audit", "verify"]);
    assert_eq!(verify.code, Some(0), "{}{}", verify.stdout, verify.stderr);

    // Freed: every write succeeds, on every pooled connection, without a restart.
    for n in 0..12 {
        let ok = comment(
            &app,
            reviewer,
            &first,
            &format!("after the disk was freed {n}"),
        );
        assert_eq!(
            ok.status, 200,
            "write {n} after the disk was freed: {}",
            ok.body
        );
    }
    assert_eq!(review_count(hypod, &first), 12);
    for (id, escalated) in &pending {
        let approved = post(
            &app,
            reviewer,
            &format!("/api/v1/proposals/{id}/approve"),
            Some("{}"),
        );
        assert_eq!(approved.status, 200, "{id}: {}", approved.body);
        if *escalated {
            let approved = post(
                &app,
                governance,
                &format!("/api/v1/proposals/{id}/approve"),
                Some("{}"),
            );
            assert_eq!(approved.status, 200, "{id}: {}", approved.body);
        }
    }
    for _ in 0..3 {
        let run = post(&app, admin, "/api/v1/runs", None);
        assert_eq!(run.status, 201, "{}", run.body);
    }
    assert_eq!(run_count(&app, admin), runs_before + 3);
    wait_ready(&app);
    drop(app);
    let verify = hypod.run(&["audit", "verify"]);
    assert_eq!(verify.code, Some(0), "{}{}", verify.stdout, verify.stderr);
}

#[test]
fn after_write_errors_the_daemon_writes_again_without_a_restart_on_sqlite() {
    let hypod = Hypod::new();
    let path = hypod.path().join("hypod.db");
    the_daemon_recovers_from_write_errors(hypod, Backend::Sqlite(path));
}

#[test]
fn after_write_errors_the_daemon_writes_again_without_a_restart_on_postgresql() {
    let Some(db) = PgGuard::create() else {
        return;
    };
    the_daemon_recovers_from_write_errors(
        Hypod::with_database(&db.0.url),
        Backend::Postgres(db.0.url.clone()),
    );
}

/// `hypod serve` as a process whose file writes the test can make fail as on a full disk:
/// `SIGXFSZ` ignored (so a write past the file-size limit fails with `EFBIG` instead of
/// killing the process), and the limit lowered and raised again from outside with
/// `prlimit --pid`. Killed when dropped.
struct LimitedDaemon {
    child: std::process::Child,
    addr: String,
}

impl LimitedDaemon {
    fn start(hypod: &Hypod) -> LimitedDaemon {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "trap '' XFSZ; exec \"$0\" serve",
                env!("CARGO_BIN_EXE_hypod"),
            ])
            .current_dir(hypod.path())
            .env("HYPOD_CONFIG", hypod.path().join("hypod.toml"))
            .env("HYPOD_AUDIT_KEY", crate::review_audit::TEST_AUDIT_KEY)
            .env("HYPOD_SERVER__LISTEN", "127.0.0.1:0")
            .env("HYPOD_SCHEDULE__CRON", "0 0 3 1 1 *")
            .env("HYPOD_SCHEDULE__MISSED", "skip")
            .env_remove("OPENAI_API_KEY")
            .env_remove("HYPOD_NOW")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start hypod serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
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
        };
        std::thread::spawn(move || for _ in lines {});
        LimitedDaemon { child, addr }
    }

    /// Sets the daemon's file-size limit (`prlimit --fsize`): `0` fails every file write.
    fn file_size_limit(&self, limit: &str) {
        let done = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", self.child.id()))
            .arg(format!("--fsize={limit}:unlimited"))
            .output()
            .expect("prlimit (util-linux) runs");
        assert!(
            done.status.success(),
            "prlimit: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
}

impl Drop for LimitedDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real write error: the daemon's every file write fails (`EFBIG`, SQLite's "disk I/O
/// error", after which SQLite has rolled the transaction back itself), then the disk is
/// freed: every comment, approval and run succeeds again, without a restart.
#[test]
fn after_a_real_write_failure_the_sqlite_daemon_writes_again_without_a_restart() {
    let setup = Reviewed::new();
    let hypod = &setup.hypod;
    let (reviewer, governance, admin) = (
        setup.token("reviewer"),
        setup.token("governance"),
        setup.token("admin"),
    );
    let pending = setup.pending();
    let (first, _) = pending[0].clone();
    let daemon = LimitedDaemon::start(hypod);
    let send = |token: &str, path: &str, body: Option<&str>| {
        request(
            &daemon.addr,
            "POST",
            path,
            &[("Authorization", &bearer(token))],
            body.map(|b| ("application/json", b)),
        )
    };
    let comment_path = format!("/api/v1/proposals/{first}/comments");

    daemon.file_size_limit("0");
    for n in 0..10 {
        let failed = send(
            reviewer,
            &comment_path,
            Some(&format!(r#"{{"text":"while the disk is full {n}"}}"#)),
        );
        assert_eq!(failed.status, 500, "{}", failed.body);
        assert!(failed.body.contains("disk I/O error"), "{}", failed.body);
    }
    let run = send(admin, "/api/v1/runs", None);
    assert_ne!(run.status, 201, "{}", run.body);
    daemon.file_size_limit("unlimited");

    for n in 0..12 {
        let ok = send(
            reviewer,
            &comment_path,
            Some(&format!(r#"{{"text":"after the disk was freed {n}"}}"#)),
        );
        assert_eq!(
            ok.status, 200,
            "write {n} after the disk was freed: {}",
            ok.body
        );
    }
    for (id, escalated) in &pending {
        let path = format!("/api/v1/proposals/{id}/approve");
        let approved = send(reviewer, &path, Some("{}"));
        assert_eq!(approved.status, 200, "{id}: {}", approved.body);
        if *escalated {
            let approved = send(governance, &path, Some("{}"));
            assert_eq!(approved.status, 200, "{id}: {}", approved.body);
        }
    }
    let run = send(admin, "/api/v1/runs", None);
    assert_eq!(run.status, 201, "{}", run.body);
    drop(daemon);

    // What the daemon said it wrote is there, the failed writes are not, the log verifies.
    assert_eq!(
        review_count(hypod, &first),
        12 + 1 + usize::from(pending[0].1)
    );
    assert!(setup.with_status("pending_review").is_empty());
    let verify = hypod.run(&["audit", "verify"]);
    assert_eq!(verify.code, Some(0), "{}{}", verify.stdout, verify.stderr);
}

/// Waits until `/readyz` answers 200 (the scheduler's first tick follows the start).
fn wait_ready(app: &TestApp) {
    let mut last = String::new();
    for _ in 0..600 {
        let ready = request(&app.addr, "GET", "/readyz", &[], None);
        if ready.status == 200 {
            return;
        }
        last = ready.body;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the daemon never got ready: {last}");
}

/// `/readyz`'s status and its database check.
fn readiness(app: &TestApp) -> (u16, Value) {
    let ready = request(&app.addr, "GET", "/readyz", &[], None);
    let body = ready.json();
    (ready.status, body["database"].clone())
}

#[test]
fn a_sqlite_file_replaced_or_deleted_under_the_daemon_is_not_ready_and_takes_no_writes() {
    let setup = Reviewed::new();
    let hypod = &setup.hypod;
    let (reviewer, admin) = (setup.token("reviewer"), setup.token("admin"));
    let (first, _) = setup.pending()[0].clone();
    let head_before = hypod.ok(&["audit", "head"]).stdout;
    let app = TestApp::spawn(hypod);
    wait_ready(&app);
    let file = hypod.path().join("hypod.db");
    // The file the daemon opened stays reachable under another name, to look into afterwards.
    let kept = hypod.path().join("kept.db");
    std::fs::hard_link(&file, &kept).expect("link the database");

    // Replaced: another file (a copy) renamed over it.
    let copy = hypod.path().join("copy.db");
    std::fs::copy(&file, &copy).expect("copy the database");
    std::fs::rename(&copy, &file).expect("replace the database");
    let (status, database) = readiness(&app);
    assert_eq!(status, 503, "{database}");
    assert_eq!(database["ok"], false);
    let error = database["error"].as_str().expect("a reason");
    assert!(
        error.contains("hypod.db") && error.contains("was replaced"),
        "{error}"
    );
    let run = post(&app, admin, "/api/v1/runs", None);
    assert_eq!(run.status, 500, "{}", run.body);
    assert!(run.body.contains("was replaced"), "{}", run.body);
    let refused = comment(&app, reviewer, &first, "into the old file");
    assert_eq!(refused.status, 500, "{}", refused.body);
    assert!(refused.body.contains("was replaced"), "{}", refused.body);

    // Deleted.
    std::fs::remove_file(&file).expect("delete the database");
    let (status, database) = readiness(&app);
    assert_eq!(status, 503, "{database}");
    let error = database["error"].as_str().expect("a reason");
    assert!(error.contains("was removed"), "{error}");
    let run = post(&app, admin, "/api/v1/runs", None);
    assert_eq!(run.status, 500, "{}", run.body);
    assert!(
        run.body.contains("was removed") && run.body.contains("restart hypod"),
        "the refusal says what happened and what to do: {}",
        run.body
    );
    let refused = comment(&app, reviewer, &first, "into the deleted file");
    assert_eq!(refused.status, 500, "{}", refused.body);
    assert!(
        !hypod.path().join("hypod.db").exists(),
        "no empty database was created in its place"
    );
    drop(app);

    // The file the daemon had open holds nothing of the refused writes.
    std::fs::rename(&kept, &file).expect("restore the database");
    assert_eq!(hypod.ok(&["audit", "head"]).stdout, head_before);
    assert_eq!(review_count(hypod, &first), 0);
    let verify = hypod.run(&["audit", "verify"]);
    assert_eq!(verify.code, Some(0), "{}{}", verify.stdout, verify.stderr);
}

/// `hypod …` with `HYPOD_NOW` set to `at`.
fn at(hypod: &Hypod, at: DateTime<Utc>, args: &[&str]) -> crate::support::Ran {
    let output = hypod
        .command(args)
        .env("HYPOD_NOW", at.to_rfc3339())
        .output()
        .expect("run hypod");
    crate::support::Ran::of(output)
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("a time: {value}")))
        .unwrap_or_else(|e| panic!("{value}: {e}"))
        .with_timezone(&Utc)
}

/// A process clock far ahead or behind decides nothing: no proposal is dated in the future,
/// none expires early, no review is dated before the proposal it decides.
fn process_clocks_decide_nothing(hypod: Hypod) {
    let now = Utc::now();
    hypod.ok(&["import", SAMPLE]);
    hypod.token("rita", "reviewer");
    // A run whose clock is 400 days ahead: its proposals are dated by the database.
    let ahead = at(&hypod, now + Duration::days(400), &["run", "--json"]);
    assert_eq!(ahead.code, Some(0), "{}", ahead.stderr);
    let pending: Vec<Value> = hypod
        .ok(&["queue", "list", "--status", "pending_review", "--json"])
        .json()
        .as_array()
        .expect("a list")
        .clone();
    assert!(!pending.is_empty(), "the sample run queues proposals");
    let ids: Vec<String> = pending
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_string())
        .collect();

    // 31 days later still, past `expire_pending_after_days = 30`: nothing expires.
    let later = at(&hypod, now + Duration::days(431), &["run", "--json"]);
    assert_eq!(later.code, Some(0), "{}", later.stderr);
    let summary = &later.json()["run"]["summary"];
    assert_eq!(summary["expired"], 0, "{summary}");
    let expired = hypod
        .ok(&["queue", "list", "--status", "expired", "--json"])
        .json();
    assert_eq!(expired, serde_json::json!([]), "no proposal expired");
    let still: Vec<String> = hypod
        .ok(&["queue", "list", "--status", "pending_review", "--json"])
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_string())
        .collect();
    for id in &ids {
        assert!(still.contains(id), "{id} is still pending: {still:?}");
    }

    // A review by a process 400 days behind: stamped by the database, after the proposal.
    let id = &ids[0];
    let behind = at(
        &hypod,
        now - Duration::days(400),
        &["queue", "approve", id, "--as", "rita", "--json"],
    );
    assert_eq!(behind.code, Some(0), "{}", behind.stderr);
    let shown = hypod.ok(&["queue", "show", id, "--json"]).json();
    let created = time(&shown["proposal"]["created_at"]);
    let reviewed = time(&shown["reviews"][0]["at"]);
    let done = Utc::now();
    for (what, t) in [("created", created), ("reviewed", reviewed)] {
        assert!(
            t >= now - Duration::minutes(5) && t <= done + Duration::minutes(5),
            "{what} at {t}, not by the database's clock (between {now} and {done})"
        );
    }
    assert!(
        reviewed >= created,
        "reviewed {reviewed} before created {created}"
    );
}

#[test]
fn a_process_clock_ahead_or_behind_decides_no_state_on_sqlite() {
    process_clocks_decide_nothing(Hypod::new());
}

#[test]
fn a_process_clock_ahead_or_behind_decides_no_state_on_postgresql() {
    let Some(db) = PgGuard::create() else {
        return;
    };
    process_clocks_decide_nothing(Hypod::with_database(&db.0.url));
}
