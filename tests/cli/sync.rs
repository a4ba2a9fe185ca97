//! `hypod sync` and the sync before a run, through the binary on SQLite and PostgreSQL: a file
//! source (NDJSON and CSV) of the sample history gives the `analyze --json` an import of the
//! same file gives; a second sync with nothing changed writes nothing and says so; a changed
//! record is replaced and a vanished one kept and reported; one invalid record writes nothing
//! from its source and names the source, the record and the field; a failing source lets a run
//! (by hand and scheduled) go on with the stored history and say so under `use_last`, and fails
//! it under `fail`; `audit verify` reports a synced experiment edited by hand; no secret appears
//! in any output.

use crate::support::{Hypod, Ran, SAMPLE};
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use sqlx::Connection;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A hypod folder on one backend (`None`: SQLite) whose hypod.toml gains `sources`.
pub(crate) struct Site {
    pub(crate) hypod: Hypod,
    pub(crate) url: String,
}

impl Site {
    pub(crate) fn new(url: Option<&str>, sources: &str) -> Site {
        let mut hypod = match url {
            Some(url) => Hypod::with_database(url),
            None => Hypod::new(),
        };
        hypod.now = Some(crate::support::FIXED_NOW);
        let url = url
            .map(str::to_string)
            .unwrap_or_else(|| format!("sqlite://{}", hypod.path().join("hypod.db").display()));
        let site = Site { hypod, url };
        site.set_sources(sources);
        site
    }

    /// Replaces the `[[source]]` tables of hypod.toml.
    pub(crate) fn set_sources(&self, sources: &str) {
        let path = self.hypod.path().join("hypod.toml");
        let text = std::fs::read_to_string(&path).expect("hypod.toml");
        let base = text
            .split("\n[[source]]")
            .next()
            .unwrap_or_default()
            .to_string();
        std::fs::write(&path, format!("{}\n{sources}", base.trim_end())).expect("write config");
    }

    /// Adds `section` (TOML tables) to hypod.toml, before the `[[source]]` tables.
    pub(crate) fn add_section(&self, section: &str) {
        let path = self.hypod.path().join("hypod.toml");
        let text = std::fs::read_to_string(&path).expect("hypod.toml");
        let (base, sources) = text.split_once("\n[[source]]").unwrap_or((&text, ""));
        let sources = if sources.is_empty() {
            String::new()
        } else {
            format!("\n[[source]]{sources}")
        };
        std::fs::write(&path, format!("{}\n{section}\n{sources}", base.trim_end()))
            .expect("write config");
    }

    pub(crate) fn write(&self, name: &str, text: &str) {
        let path = self.hypod.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("folder");
        }
        std::fs::write(path, text).expect("write");
    }

    pub(crate) fn sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    /// The first column of every row `sql` returns, as text.
    pub(crate) fn strings(&self, sql: &str) -> Vec<String> {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let text = || sqlx::AssertSqlSafe(sql.to_string());
            let rows: Result<Vec<(String,)>, sqlx::Error> = if self.sqlite() {
                let mut conn = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::query_as(text()).fetch_all(&mut conn).await
            } else {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::query_as(text()).fetch_all(&mut conn).await
            };
            rows.unwrap_or_else(|e| panic!("{sql}: {e}"))
                .into_iter()
                .map(|(s,)| s)
                .collect()
        })
    }

    pub(crate) fn sql(&self, sql: &str) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let query = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()));
            let done = if self.sqlite() {
                let mut conn = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                query.execute(&mut conn).await.map(|_| ())
            } else {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect");
                query.execute(&mut conn).await.map(|_| ())
            };
            done.unwrap_or_else(|e| panic!("{sql}: {e}"));
        });
    }

    pub(crate) fn sync_json(&self, args: &[&str]) -> (Ran, Value) {
        let mut all = vec!["sync", "--json"];
        all.extend_from_slice(args);
        let ran = self.hypod.run(&all);
        let json = ran.json();
        (ran, json)
    }

    /// The stored experiment ids.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.strings("SELECT id FROM experiments ORDER BY id")
    }
}

/// Runs `scenario` on SQLite, then on a fresh PostgreSQL database (dropped afterwards, also on
/// failure; skipped without a server unless `CI` is set).
pub(crate) fn on_both(scenario: fn(Option<&str>)) {
    scenario(None);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = runtime.block_on(crate::backends::postgres_server()) else {
        return;
    };
    let db = runtime.block_on(crate::backends::PgDatabase::create(&server));
    let url = db.url.clone();
    let checked = std::panic::catch_unwind(|| scenario(Some(&url)));
    runtime.block_on(db.drop_now());
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

pub(crate) fn sample() -> String {
    std::fs::read_to_string(SAMPLE).expect("the sample history")
}

/// The sample history as CSV in the import format (one row per variant).
fn sample_csv() -> String {
    let records: Vec<Value> = sample()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record"))
        .collect();
    let mut columns: Vec<String> = Vec::new();
    for record in &records {
        for key in record.as_object().expect("an object").keys() {
            if key != "variants" && !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    let variant_columns = [
        "control",
        "visitors",
        "conversions",
        "orders",
        "revenue",
        "revenue_sq",
    ];
    let cell = |value: Option<&Value>| -> String {
        let text = match value {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("|"),
            Some(other) => other.to_string(),
        };
        format!("\"{}\"", text.replace('"', "\"\""))
    };
    let mut header: Vec<String> = columns.clone();
    header.push("variant".into());
    header.extend(variant_columns.iter().map(|c| c.to_string()));
    let mut out = header.join(",") + "\n";
    for record in &records {
        for variant in record["variants"].as_array().expect("variants") {
            let mut row: Vec<String> = columns.iter().map(|c| cell(record.get(c))).collect();
            row.push(cell(variant.get("name")));
            row.extend(variant_columns.iter().map(|c| cell(variant.get(*c))));
            out.push_str(&row.join(","));
            out.push('\n');
        }
    }
    out
}

/// `analyze --json` after `hypod import FILE` of `text` (written as `name`) on a fresh SQLite
/// folder at the same fixed time.
pub(crate) fn analysis_of_import(name: &str, text: &str) -> Value {
    let reference = Hypod::at_fixed_time();
    std::fs::write(reference.path().join(name), text).expect("write");
    reference.ok(&["import", name]);
    reference.ok(&["analyze", "--json"]).json()
}

fn file_source(name: &str, path: &str, extra: &str) -> String {
    format!("[[source]]\nname = \"{name}\"\nkind = \"file\"\npath = \"{path}\"\n{extra}\n")
}

fn the_sample_through_a_file_source_analyses_as_its_import(
    url: Option<&str>,
    file: &str,
    text: String,
    pattern: &str,
) {
    {
        let site = Site::new(url, &file_source("sheet", pattern, ""));
        site.write(file, &text);
        let (ran, first) = site.sync_json(&[]);
        assert_eq!(ran.code, Some(0), "{}", ran.stderr);
        let synced = &first["sources"][0];
        assert_eq!(synced["source"], "sheet", "{first}");
        assert_eq!(synced["status"], "synced", "{first}");
        assert_eq!(synced["read"], 246, "{first}");
        assert_eq!(synced["inserted"], 246, "{first}");
        let analysed = site.hypod.ok(&["analyze", "--json"]).json();
        let name = file.rsplit('/').next().unwrap_or(file);
        assert_eq!(
            analysed,
            analysis_of_import(name, &text),
            "{file}: the synced history does not analyse as its import"
        );
        assert_eq!(
            site.strings("SELECT DISTINCT source FROM experiments WHERE source IS NOT NULL"),
            vec!["sheet".to_string()],
            "provenance"
        );

        // A second sync with nothing changed writes no experiment and says so.
        let entries_before = site.strings("SELECT hash FROM audit_log").len();
        let again = site.hypod.ok(&["sync"]);
        assert!(
            again
                .stdout
                .contains("nothing changed: no experiment written"),
            "{}",
            again.stdout
        );
        let (_, second) = site.sync_json(&[]);
        let synced = &second["sources"][0];
        assert_eq!(
            (
                &synced["inserted"],
                &synced["updated"],
                &synced["unchanged"]
            ),
            (&Value::from(0), &Value::from(0), &Value::from(246)),
            "{second}"
        );
        // Each sync logs one history.sync entry, and it wrote nothing.
        let details = site.strings(
            "SELECT detail FROM audit_log WHERE action = 'history.sync' ORDER BY seq DESC",
        );
        assert_eq!(details.len(), 3, "history.sync entries");
        let last: Value = serde_json::from_str(&details[0]).expect("detail");
        assert_eq!(last["written"], serde_json::json!({}), "{last}");
        assert_eq!(last["source"], "sheet");
        assert_eq!(last["read"], 246);
        assert!(last["read_digest"].as_str().is_some_and(|d| d.len() == 64));
        assert_eq!(
            site.strings("SELECT hash FROM audit_log").len(),
            entries_before + 2
        );
        let verify = site.hypod.ok(&["audit", "verify"]);
        assert!(
            verify.stdout.contains("audit log intact"),
            "{}",
            verify.stdout
        );
    }
}

#[test]
fn the_sample_through_an_ndjson_source_analyses_as_its_import_on_both_backends() {
    on_both(|url| {
        the_sample_through_a_file_source_analyses_as_its_import(
            url,
            "exports/history.ndjson",
            sample(),
            "exports/*.ndjson",
        )
    });
}

#[test]
fn the_sample_through_a_csv_source_analyses_as_its_import_on_both_backends() {
    on_both(|url| {
        the_sample_through_a_file_source_analyses_as_its_import(
            url,
            "exports/history.csv",
            sample_csv(),
            "exports/history.csv",
        )
    });
}

fn changed_records_are_replaced_and_vanished_ones_kept(url: Option<&str>) {
    let site = Site::new(url, &file_source("sheet", "history.ndjson", ""));
    site.write("history.ndjson", &sample());
    site.hypod.ok(&["sync"]);
    // exp-2026-0243 concludes; exp-2024-0002 is no longer listed.
    let edited: Vec<String> = sample()
        .lines()
        .filter(|l| !l.contains("\"id\":\"exp-2024-0002\""))
        .map(|l| {
            if l.contains("\"id\":\"exp-2026-0243\"") {
                l.replace("\"status\":\"running\"", "\"status\":\"concluded\"")
                    .replace("\"ended_at\":null", "\"ended_at\":\"2026-10-05\"")
                    .replace("\"decided_at\":null", "\"decided_at\":\"2026-10-06\"")
                    .replace("\"decision\":\"none\"", "\"decision\":\"rollback\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    site.write("history.ndjson", &(edited.join("\n") + "\n"));
    let (ran, report) = site.sync_json(&[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let synced = &report["sources"][0];
    assert_eq!(synced["updated"], 1, "{report}");
    assert_eq!(synced["inserted"], 0, "{report}");
    assert_eq!(synced["unchanged"], 244, "{report}");
    assert_eq!(synced["vanished"], serde_json::json!(["exp-2024-0002"]));
    // Replaced, and the vanished one kept.
    let status = site.strings("SELECT status FROM experiments WHERE id = 'exp-2026-0243'");
    assert_eq!(status, vec!["concluded".to_string()]);
    assert!(site.ids().contains(&"exp-2024-0002".to_string()));
    assert_eq!(site.ids().len(), 246);
    // The text says so too (the next sync: it is still not listed, and not reported again).
    let text = site.hypod.ok(&["sync"]).stdout;
    assert!(text.contains("nothing changed"), "{text}");
    site.write("history.ndjson", &sample());
    site.hypod.ok(&["sync"]);
    let mut without = edited.clone();
    without.retain(|l| !l.contains("\"id\":\"exp-2024-0003\""));
    site.write("history.ndjson", &(without.join("\n") + "\n"));
    let text = site.hypod.ok(&["sync"]).stdout;
    assert!(
        text.contains("no longer listed by sheet (kept, not deleted)")
            && text.contains("exp-2024-0002")
            && text.contains("exp-2024-0003"),
        "{text}"
    );
}

#[test]
fn changed_records_are_replaced_and_vanished_ones_kept_on_both_backends() {
    on_both(changed_records_are_replaced_and_vanished_ones_kept);
}

fn an_invalid_record_writes_nothing_from_its_source(url: Option<&str>) {
    let sources = format!(
        "{}{}",
        file_source("good", "good.ndjson", ""),
        file_source("bad", "bad/*.ndjson", "")
    );
    let site = Site::new(url, &sources);
    let text = sample();
    let lines: Vec<&str> = text.lines().collect();
    site.write("good.ndjson", &(lines[..10].join("\n") + "\n"));
    // New ids, the third record impossible (negative visitors).
    let bad: Vec<String> = lines[10..13]
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let record = l.replacen("\"id\":\"exp-", "\"id\":\"x-exp-", 1);
            if i == 2 {
                record.replacen("\"visitors\":", "\"visitors\":-", 1)
            } else {
                record
            }
        })
        .collect();
    site.write("bad/b.ndjson", &(bad.join("\n") + "\n"));
    let ran = site.hypod.run(&["sync"]);
    assert_eq!(ran.code, Some(2), "{}\n{}", ran.stdout, ran.stderr);
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert!(
        said.contains("source bad: nothing was written")
            && said.contains("bad/b.ndjson line 3")
            && said.contains("variants[0].visitors"),
        "{said}"
    );
    // The good source synced; nothing of the bad one was written, not even its valid records.
    let ids = site.ids();
    assert_eq!(ids.len(), 10, "{ids:?}");
    assert!(!ids.iter().any(|id| id.starts_with("x-")), "{ids:?}");
    assert_eq!(
        site.strings("SELECT subject FROM audit_log WHERE action = 'history.sync'"),
        vec!["good".to_string()]
    );
    assert!(site
        .strings("SELECT name FROM sources WHERE name = 'bad'")
        .is_empty());
    // --source syncs the one named; an unknown name is refused with the configured ones.
    let (ran, report) = site.sync_json(&["--source", "good"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(report["sources"].as_array().map(Vec::len), Some(1));
    let ran = site.hypod.run(&["sync", "--source", "nope"]);
    assert_eq!(ran.code, Some(2));
    assert!(ran.stderr.contains("good, bad"), "{}", ran.stderr);
}

#[test]
fn an_invalid_record_writes_nothing_from_its_source_on_both_backends() {
    on_both(an_invalid_record_writes_nothing_from_its_source);
}

/// The `history from … as of …: the sync failed: …` notes of a run's JSON.
pub(crate) fn stale_notes(run: &Value) -> Vec<String> {
    run["run"]["notes"]
        .as_array()
        .map(|notes| {
            notes
                .iter()
                .filter_map(Value::as_str)
                .filter(|n| n.starts_with("history from "))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn a_failing_source_lets_a_run_go_on_or_fails_it(url: Option<&str>) {
    let use_last = format!(
        "{}[[source]]\nname = \"warehouse\"\nkind = \"sql\"\nurl_env = \"WAREHOUSE_URL_UNSET_FOR_HYPOD\"\nexperiments_query = \"select 1\"\narms_query = \"select 1\"\n",
        file_source("sheet", "history.ndjson", "")
    );
    let site = Site::new(url, &use_last);
    site.write("history.ndjson", &sample());
    // The warehouse fails from the start; the sheet syncs.
    let ran = site.hypod.run(&["sync"]);
    assert_eq!(ran.code, Some(2), "{}", ran.stdout);
    let synced_at = site.strings("SELECT last_ok_at FROM sources WHERE name = 'sheet'");
    assert_eq!(synced_at.len(), 1);
    std::fs::remove_file(site.hypod.path().join("history.ndjson")).expect("remove");
    let before = site.ids();

    // use_last: the run goes on with the stored history, and says so.
    let ran = site.hypod.run(&["run", "--json"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let run = ran.json();
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    assert_eq!(run["run"]["summary"]["experiments"], 246);
    let notes = stale_notes(&run);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].starts_with(&format!(
            "history from sheet as of {}: the sync failed: path \"history.ndjson\": no such file",
            synced_at[0]
        )),
        "{notes:?}"
    );
    assert!(
        notes[1].starts_with("history from warehouse as of never (no sync of it has succeeded yet): the sync failed: the environment variable WAREHOUSE_URL_UNSET_FOR_HYPOD is not set"),
        "{notes:?}"
    );
    let text = site.hypod.ok(&["run"]).stdout;
    assert!(text.contains("note: history from sheet as of "), "{text}");
    // --no-sync runs on the stored history without trying.
    let quiet = site.hypod.ok(&["run", "--json", "--no-sync"]).json();
    assert!(stale_notes(&quiet).is_empty(), "{quiet}");
    assert_eq!(site.ids(), before, "nothing half-written");

    // fail: the run fails with the source's reason, and nothing is queued.
    site.set_sources(&file_source(
        "sheet",
        "history.ndjson",
        "on_failure = \"fail\"",
    ));
    let ran = site.hypod.run(&["run", "--json"]);
    assert_eq!(ran.code, Some(1), "{}", ran.stdout);
    let run = ran.json();
    assert_eq!(run["run"]["status"], "failed", "{run}");
    let error = run["run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("source sheet failed to sync and its on_failure is \"fail\"")
            && error.contains("no such file"),
        "{error}"
    );
    assert_eq!(run["proposals"], serde_json::json!([]));
    let failed = site.strings(&format!(
        "SELECT status FROM slots WHERE key LIKE 'cli:%' AND run_id = '{}'",
        run["run"]["id"].as_str().unwrap_or_default()
    ));
    assert_eq!(failed, vec!["failed".to_string()]);
}

#[test]
fn a_failing_source_lets_a_run_go_on_or_fails_it_on_both_backends() {
    on_both(a_failing_source_lets_a_run_go_on_or_fails_it);
}

/// A webhook that records the text of every message it is sent.
fn webhook(runtime: &tokio::runtime::Runtime) -> (String, Arc<Mutex<Vec<String>>>) {
    async fn hook(
        State(seen): State<Arc<Mutex<Vec<String>>>>,
        body: axum::Json<Value>,
    ) -> axum::http::StatusCode {
        let text = body.0["text"].as_str().unwrap_or_default().to_string();
        seen.lock().expect("hook").push(text);
        axum::http::StatusCode::OK
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the webhook");
    let addr = listener.local_addr().expect("address");
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(seen.clone());
    runtime.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), seen)
}

/// `hypod serve`'s scheduled runs sync first: a source that fails under `use_last` leaves a run
/// that went on and says so (its record, the web UI's runs page, the webhook); under `fail` the
/// slot fails with the reason.
fn scheduled_runs_sync_first(url: Option<&str>) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (hook, messages) = webhook(&runtime);
    let mut site = Site::new(url, &file_source("sheet", "history.ndjson", ""));
    site.hypod.now = None;
    site.add_section(&format!(
        "[notify]\nwebhook_url = \"{hook}\"\nretry_seconds = 1\n"
    ));
    site.write("history.ndjson", &sample());
    site.hypod.ok(&["sync"]);
    let viewer = site.hypod.token("vera", "viewer");
    std::fs::remove_file(site.hypod.path().join("history.ndjson")).expect("remove");
    for (on_failure, expected) in [("use_last", "succeeded"), ("fail", "failed")] {
        site.set_sources(&file_source(
            "sheet",
            "history.ndjson",
            &format!("on_failure = \"{on_failure}\""),
        ));
        let daemon = crate::serve::Daemon::spawn(
            &site.hypod,
            &[
                ("HYPOD_SERVER__LISTEN", "127.0.0.1:0"),
                ("HYPOD_SCHEDULE__CRON", "*/2 * * * * *"),
                ("HYPOD_SCHEDULE__MISSED", "skip"),
            ],
        );
        let started = Instant::now();
        let record = loop {
            let records = site.strings(&format!(
                "SELECT CAST(record AS TEXT) FROM runs WHERE trigger LIKE 'schedule:%' AND status = '{expected}' ORDER BY started_at DESC"
            ));
            if let Some(record) = records.into_iter().next() {
                break record;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no scheduled run {expected} under {on_failure}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let record: Value = serde_json::from_str(&record).expect("a run record");
        let id = record["id"].as_str().unwrap_or_default().to_string();
        let said = if on_failure == "use_last" {
            let notes = stale_notes(&serde_json::json!({ "run": record }));
            assert!(
                notes.len() == 1
                    && notes[0].starts_with("history from sheet as of ")
                    && notes[0].contains("the sync failed: path \"history.ndjson\": no such file"),
                "{record}"
            );
            "history from sheet as of ".to_string()
        } else {
            let error = record["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("source sheet failed to sync and its on_failure is \"fail\"")
                    && error.contains("no such file"),
                "{record}"
            );
            "source sheet failed to sync".to_string()
        };
        // The webhook's message for this run says it.
        let started = Instant::now();
        loop {
            let sent = messages.lock().expect("hook").clone();
            if let Some(text) = sent.iter().find(|t| t.contains(&id)) {
                assert!(text.contains(&said), "{text}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no webhook message for run {id}: {sent:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // So does the web UI's runs page.
        let page = crate::test_app::request(
            &daemon.addr,
            "GET",
            "/ui/runs",
            &[("Cookie", &format!("hypod_token={viewer}"))],
            None,
        );
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains(&said), "{}", page.body);
        assert_eq!(daemon.terminate(), Some(0));
    }
    assert_eq!(site.ids().len(), 246, "nothing half-written, nothing lost");
}

/// A daemon's cached analysis sees what a sync (another process) wrote.
fn a_daemon_sees_what_a_sync_wrote(url: Option<&str>) {
    let site = Site::new(url, &file_source("sheet", "history.ndjson", ""));
    let text = sample();
    let lines: Vec<&str> = text.lines().collect();
    site.write("history.ndjson", &(lines[..100].join("\n") + "\n"));
    site.hypod.ok(&["sync"]);
    let viewer = site.hypod.token("vera", "viewer");
    let daemon = crate::test_app::TestApp::spawn(&site.hypod);
    let experiments = || {
        let answer = crate::test_app::request(
            &daemon.addr,
            "GET",
            "/api/v1/health",
            &[("Authorization", &format!("Bearer {viewer}"))],
            None,
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["experiments"].as_u64().expect("a count")
    };
    assert_eq!(experiments(), 100);
    site.write("history.ndjson", &text);
    site.hypod.ok(&["sync"]);
    assert_eq!(experiments(), 246);
}

#[test]
fn a_daemon_sees_what_a_sync_wrote_on_both_backends() {
    on_both(a_daemon_sees_what_a_sync_wrote);
}

#[test]
fn scheduled_runs_sync_first_on_both_backends() {
    on_both(scheduled_runs_sync_first);
}

fn an_edited_synced_experiment_is_reported_by_verify(url: Option<&str>) {
    let site = Site::new(url, &file_source("sheet", "history.ndjson", ""));
    site.write("history.ndjson", &sample());
    site.hypod.ok(&["sync"]);
    if site.sqlite() {
        site.sql(
            "UPDATE experiments SET body = json_set(body, '$.variants[1].conversions', 2960) \
             WHERE id = 'exp-2024-0001'",
        );
    } else {
        site.sql(
            "UPDATE experiments SET body = jsonb_set(body, '{variants,1,conversions}', '2960') \
             WHERE id = 'exp-2024-0001'",
        );
    }
    let ran = site.hypod.run(&["audit", "verify"]);
    assert_ne!(ran.code, Some(0), "{}", ran.stdout);
    let out = format!("{}{}", ran.stdout, ran.stderr);
    assert!(
        out.contains("experiment exp-2024-0001: its stored record is not the one the sync of source sheet at entry"),
        "{out}"
    );
    assert!(!out.contains("exp-2024-0002"), "{out}");
    // A sync writes it again (the file still holds the original), and the log vouches again.
    site.hypod.ok(&["sync"]);
    let verify = site.hypod.ok(&["audit", "verify"]);
    assert!(
        verify.stdout.contains("audit log intact"),
        "{}",
        verify.stdout
    );
}

#[test]
fn an_edited_synced_experiment_is_reported_by_verify_on_both_backends() {
    on_both(an_edited_synced_experiment_is_reported_by_verify);
}

/// Secrets named by `api_key_env` and `url_env` never appear in any output, logs included.
#[test]
fn no_secret_appears_in_any_output() {
    let secret = "sekret-123";
    // A GrowthBook that refuses the key it is sent (an unreachable one would be retried with
    // backoff for seconds by every command below).
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let growthbook = runtime.block_on(crate::fake_growthbook::FakeGrowthbook::start(
        "another-key",
        Vec::new(),
    ));
    let sources = format!(
        "[[source]]\nname = \"gb\"\nkind = \"growthbook\"\nurl = \"{}\"\napi_key_env = \"GB_TEST_KEY_FOR_HYPOD\"\n[source.metrics]\nconversions = \"met_c\"\nrevenue = \"met_r\"\n\n[[source]]\nname = \"warehouse\"\nkind = \"sql\"\nurl_env = \"WAREHOUSE_TEST_URL_FOR_HYPOD\"\nexperiments_query = \"select 1\"\narms_query = \"select 1\"\n{}",
        growthbook.url(),
        file_source("sheet", "missing.ndjson", "")
    );
    let site = Site::new(None, &sources);
    let mut seen = String::new();
    for args in [
        vec!["sync"],
        vec!["sync", "--json"],
        vec!["sync", "--source", "gb"],
        vec!["run", "--json"],
        vec!["run"],
        vec!["audit", "verify"],
        vec!["audit", "export"],
    ] {
        let output = site
            .hypod
            .command(&args)
            .env("GB_TEST_KEY_FOR_HYPOD", secret)
            .env(
                "WAREHOUSE_TEST_URL_FOR_HYPOD",
                format!("postgres://u:{secret}@127.0.0.1:9/db"),
            )
            .env("HYPOD_LOG", "debug")
            .output()
            .expect("run hypod");
        let ran = Ran::of(output);
        seen.push_str(&ran.stdout);
        seen.push_str(&ran.stderr);
    }
    assert!(seen.contains("source gb"), "{seen}");
    assert!(
        growthbook.unauthorized() > 0,
        "the key was sent and refused"
    );
    assert!(!seen.contains(secret), "a secret was shown:\n{seen}");
    let records = site
        .strings("SELECT CAST(record AS TEXT) FROM runs")
        .join("\n");
    let audit = site.strings("SELECT detail FROM audit_log").join("\n");
    assert!(!records.contains(secret) && !audit.contains(secret));
}

/// `[[source]]` tables are checked when the configuration loads: every error names
/// `source[N].key` and the source.
#[test]
fn source_settings_are_checked_when_the_configuration_loads() {
    let site = Site::new(None, "");
    for (sources, expected) in [
        (
            format!("{}{}", file_source("a", "x.csv", ""), file_source("a", "y.csv", "")),
            "key `source[1].name`: \"a\" is already the name of source[0]",
        ),
        (
            file_source("bad name", "x.csv", ""),
            "key `source[0].name`: \"bad name\" is not a safe name",
        ),
        (
            file_source("a", "x.csv", "colour = \"red\""),
            "key `source[0].colour` (source a): unknown field `colour`",
        ),
        (
            file_source("a", "x.csv", "on_failure = \"ignore\""),
            "key `source[0].on_failure` (source a)",
        ),
        (
            "[[source]]\nname = \"a\"\nkind = \"ftp\"\n".to_string(),
            "key `source[0].kind` (source a): \"ftp\" is not one of",
        ),
        (
            "[[source]]\nname = \"w\"\nkind = \"sql\"\nurl_env = \"postgres://u:p@h/db\"\nexperiments_query = \"q\"\narms_query = \"q\"\n".to_string(),
            "key `source[0].url_env` (source w): ",
        ),
        (
            "[[source]]\nname = \"g\"\nkind = \"growthbook\"\nurl = \"api.growthbook.io\"\napi_key_env = \"K\"\n[source.metrics]\nconversions = \"c\"\nrevenue = \"r\"\n".to_string(),
            "key `source[0].url`",
        ),
        (
            "[[source]]\nname = \"g\"\nkind = \"growthbook\"\nurl = \"https://api.growthbook.io\"\napi_key_env = \"secret_abc-sekret-123\"\n[source.metrics]\nconversions = \"c\"\nrevenue = \"r\"\n".to_string(),
            "key `source[0].api_key_env` (source g): must be the name of an environment variable",
        ),
        (
            "[[source]]\nname = \"w\"\nkind = \"sql\"\nurl_env = \"HYPOD_WAREHOUSE\"\nexperiments_query = \"q\"\narms_query = \"q\"\n".to_string(),
            "key `source[0].url_env` (source w): \"HYPOD_WAREHOUSE\" starts with HYPOD_",
        ),
        (
            file_source("a", "ex*/x.csv", ""),
            "key `source[0].path` (source a): ",
        ),
    ] {
        site.set_sources(&sources);
        let ran = site.hypod.run(&["sync"]);
        assert_eq!(ran.code, Some(2), "{sources}: {}", ran.stdout);
        assert!(ran.stderr.contains(expected), "{sources}\n{}", ran.stderr);
        assert!(
            !ran.stderr.contains("u:p@") && !ran.stderr.contains("sekret-123"),
            "{}",
            ran.stderr
        );
    }
    site.set_sources("");
    let ran = site.hypod.run(&["sync"]);
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr.contains("no source is configured"),
        "{}",
        ran.stderr
    );
}
