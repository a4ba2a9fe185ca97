//! What the audit log vouches for beyond its own entries, attacked by someone who can write the
//! database but does not hold the audit key, on SQLite and PostgreSQL: token rows added,
//! un-revoked or raised by hand are refused at use (API bearer and `--as`) and reported by
//! `audit verify`; a draft edited after it was queued is not approved, not exported and
//! reported; a writer holding another key (or, on SQLite, a freshly made key file beside a log
//! that has entries) appends nothing; an import names its caller and what it wrote, and an
//! experiment edited afterwards is reported by name.

use crate::review::serve;
use crate::support::{Hypod, Ran, SAMPLE};
use crate::test_app::request;
use serde_json::Value;
use sqlx::Connection;

/// A hypod folder on one backend with the sample history, one run and a reviewer (`rita`).
struct Site {
    hypod: Hypod,
    url: String,
}

impl Site {
    fn new(url: Option<&str>) -> Site {
        let hypod = match url {
            Some(url) => Hypod::with_database(url),
            None => Hypod::new(),
        };
        let url = url
            .map(str::to_string)
            .unwrap_or_else(|| format!("sqlite://{}", hypod.path().join("hypod.db").display()));
        hypod.ok(&["import", SAMPLE]);
        hypod.ok(&["run"]);
        hypod.token("rita", "reviewer");
        Site { hypod, url }
    }

    fn sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }

    /// Runs SQL under hypod's back.
    fn sql(&self, sql: &str) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            if self.sqlite() {
                let mut conn = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            } else {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        });
    }

    /// A count the database gives (`SELECT COUNT(*) …`).
    fn count(&self, sql: &str) -> i64 {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let query = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(sql.to_string()));
            if self.sqlite() {
                let mut conn = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("connect");
                query.fetch_one(&mut conn).await.expect("a count").0
            } else {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("connect");
                sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(sql.to_string()))
                    .fetch_one(&mut conn)
                    .await
                    .expect("a count")
                    .0
            }
        })
    }

    /// Pending proposals one approval decides.
    fn plain_pending(&self) -> Vec<String> {
        let list = self
            .hypod
            .ok(&["queue", "list", "--status", "pending_review", "--json"])
            .json();
        let plain: Vec<String> = list
            .as_array()
            .expect("a list")
            .iter()
            .filter(|p| p["approvals_required"] == 1)
            .map(|p| p["id"].as_str().expect("id").to_string())
            .collect();
        assert!(plain.len() >= 2, "two plain proposals: {list}");
        plain
    }

    fn status(&self, id: &str) -> String {
        let shown = self.hypod.ok(&["queue", "show", id, "--json"]).json();
        shown["proposal"]["status"]
            .as_str()
            .expect("a status")
            .to_string()
    }

    fn reviews_of(&self, id: &str) -> i64 {
        self.count(&format!(
            "SELECT COUNT(*) FROM reviews WHERE proposal_id = '{id}'"
        ))
    }

    fn entries(&self) -> i64 {
        self.count("SELECT COUNT(*) FROM audit_log")
    }

    /// The audit log as `audit export` writes it.
    fn log(&self) -> Vec<Value> {
        let ran = self.hypod.ok(&["audit", "export"]);
        ran.json_lines().as_array().expect("lines").clone()
    }

    /// `audit verify`, which must fail: its whole output.
    fn verify_fails(&self) -> String {
        let ran = self.hypod.run(&["audit", "verify"]);
        let out = format!("{}{}", ran.stdout, ran.stderr);
        assert_eq!(ran.code, Some(1), "verify passed:\n{out}");
        assert!(out.contains("AUDIT LOG DOES NOT VERIFY"), "{out}");
        out
    }

    fn verify_intact(&self) -> String {
        let ran = self.hypod.run(&["audit", "verify"]);
        let out = format!("{}{}", ran.stdout, ran.stderr);
        assert_eq!(ran.code, Some(0), "verify failed:\n{out}");
        assert!(out.contains("audit log intact"), "{out}");
        out
    }
}

/// Runs `scenario` on a fresh PostgreSQL database (dropped afterwards, also on failure); skipped
/// without a server unless `CI` is set.
fn on_postgresql(scenario: fn(Option<&str>)) {
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

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A refused `queue approve --as USER`: its stderr.
fn approve_refused(site: &Site, id: &str, user: &str) -> String {
    let ran: Ran = site
        .hypod
        .run(&["queue", "approve", id, "--as", user, "--note", "ok"]);
    assert_ne!(ran.code, Some(0), "{user} approved {id}: {}", ran.stdout);
    ran.stderr
}

fn tokens_the_log_does_not_explain_are_refused_and_reported(url: Option<&str>) {
    let site = Site::new(url);
    let pending = site.plain_pending();
    let target = &pending[0];
    let vera = site.hypod.token("vera", "viewer");
    let olga = site
        .hypod
        .ok(&[
            "token", "create", "--user", "olga", "--role", "reviewer", "--json",
        ])
        .json();
    let (olga_id, olga_secret) = (
        olga["id"].as_str().expect("id").to_string(),
        olga["token"].as_str().expect("token").to_string(),
    );
    site.hypod.ok(&["token", "revoke", &olga_id]);

    // 1. A row inserted by SQL: an admin token under a name of the attacker's choosing.
    let forged = "hypod_forged_0123456789abcdef0123456789abcdef";
    site.sql(&format!(
        "INSERT INTO tokens (id, user_name, role, hash, created_at, created_by) \
         VALUES ('forged-1', 'mallory', 'admin', '{}', '2026-01-01T00:00:00.000000Z', 'cli:root')",
        hypod::store::token_hash(forged)
    ));
    // 2. A revoked token un-revoked.
    site.sql(&format!(
        "UPDATE tokens SET revoked_at = NULL WHERE id = '{olga_id}'"
    ));
    // 3. A viewer raised to admin.
    site.sql("UPDATE tokens SET role = 'admin' WHERE user_name = 'vera'");
    let before = site.entries();

    let daemon = serve(&site.hypod);
    for (secret, why) in [
        (forged, "never recorded its creation"),
        (olga_secret.as_str(), "un-revoked by hand"),
        (vera.as_str(), "role changed by hand"),
    ] {
        let me = request(
            &daemon.addr,
            "GET",
            "/api/v1/me",
            &[("authorization", &bearer(secret))],
            None,
        );
        assert_eq!(me.status, 401, "{why}: {}", me.body);
        assert!(me.body.contains("is refused"), "{why}: {}", me.body);
        assert!(me.body.contains(why), "{why}: {}", me.body);
        let approve = request(
            &daemon.addr,
            "POST",
            &format!("/api/v1/proposals/{target}/approve"),
            &[("authorization", &bearer(secret))],
            Some(("application/json", r#"{"note":"ok"}"#)),
        );
        assert_eq!(approve.status, 401, "{why}: {}", approve.body);
    }
    // A token the log explains still works.
    let rita = site.hypod.token("rita", "reviewer");
    let me = request(
        &daemon.addr,
        "GET",
        "/api/v1/me",
        &[("authorization", &bearer(&rita))],
        None,
    );
    assert_eq!(me.status, 200, "{}", me.body);
    drop(daemon);

    // The command line's `--as` believes the same tokens only.
    for (user, why) in [
        ("mallory", "never recorded its creation"),
        ("olga", "un-revoked by hand"),
        ("vera", "role changed by hand"),
    ] {
        let stderr = approve_refused(&site, target, user);
        assert!(stderr.contains("is refused"), "{user}: {stderr}");
        assert!(stderr.contains(why), "{user}: {stderr}");
    }
    // Nothing was written by any of them (the one new entry is rita's second token).
    assert_eq!(site.status(target), "pending_review");
    assert_eq!(site.reviews_of(target), 0);
    assert_eq!(site.entries(), before + 1);

    let out = site.verify_fails();
    for expected in [
        "token forged-1: stored for mallory as admin, but the audit log never recorded its creation",
        &format!("token {olga_id}: the audit log revoked it at entry"),
        "it is stored as admin but the audit log created it as viewer (a role changed by hand?)",
    ] {
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
}

#[test]
fn tokens_the_log_does_not_explain_are_refused_and_reported_on_sqlite() {
    tokens_the_log_does_not_explain_are_refused_and_reported(None);
}

#[test]
fn tokens_the_log_does_not_explain_are_refused_and_reported_on_postgresql() {
    on_postgresql(tokens_the_log_does_not_explain_are_refused_and_reported);
}

/// Edits a proposal's stored draft: new change text and the sensitive signal
/// `health_inferences`.
fn edit_draft(site: &Site, id: &str) {
    if site.sqlite() {
        site.sql(&format!(
            "UPDATE proposals SET body = json_set(body, '$.draft.change', 'show the diagnosis', \
             '$.draft.signals', json('[\"health_inferences\"]')) WHERE id = '{id}'"
        ));
    } else {
        site.sql(&format!(
            "UPDATE proposals SET body = jsonb_set(jsonb_set(body, '{{draft,change}}', \
             '\"show the diagnosis\"'), '{{draft,signals}}', '[\"health_inferences\"]') \
             WHERE id = '{id}'"
        ));
    }
}

fn an_edited_draft_is_not_approved_not_exported_and_reported(url: Option<&str>) {
    let site = Site::new(url);
    let pending = site.plain_pending();
    let (approved, waiting) = (&pending[0], &pending[1]);
    site.hypod.ok(&[
        "queue", "approve", approved, "--as", "rita", "--note", "ship it",
    ]);
    let export = site.hypod.ok(&["export", "--format", "ndjson"]);
    assert!(
        export.stdout.contains(approved.as_str()),
        "{}",
        export.stdout
    );
    site.verify_intact();

    edit_draft(&site, approved);
    edit_draft(&site, waiting);
    let before = site.entries();

    // The approval of an edited draft is refused, and only the refusal is logged.
    let stderr = approve_refused(&site, waiting, "rita");
    assert!(stderr.contains("cannot be approved"), "{stderr}");
    assert!(stderr.contains("edited after it was queued"), "{stderr}");
    assert_eq!(site.status(waiting), "pending_review");
    assert_eq!(site.reviews_of(waiting), 0);
    assert_eq!(site.entries(), before + 1);
    let log = site.log();
    let refusal = log.last().expect("an entry");
    assert_eq!(refusal["action"], "review.refused", "{refusal}");
    assert_eq!(refusal["subject"], waiting.as_str());
    assert_eq!(refusal["actor"], "rita");

    // Through the API: refused too, nothing reviewed.
    let rita = site.hypod.token("rita", "reviewer");
    let daemon = serve(&site.hypod);
    let answer = request(
        &daemon.addr,
        "POST",
        &format!("/api/v1/proposals/{waiting}/approve"),
        &[("authorization", &bearer(&rita))],
        Some(("application/json", r#"{"note":"ok"}"#)),
    );
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(
        answer.body.contains("cannot be approved"),
        "{}",
        answer.body
    );
    drop(daemon);
    assert_eq!(site.reviews_of(waiting), 0);

    // The approved proposal's edited draft is not shipped, and export says so.
    let export = site.hypod.run(&["export", "--format", "ndjson"]);
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    assert!(
        !export.stdout.contains(approved.as_str()),
        "the edited draft ships: {}",
        export.stdout
    );
    assert!(!export.stdout.contains("health_inferences"));
    assert!(
        export
            .stderr
            .contains(&format!("withheld proposal {approved}")),
        "{}",
        export.stderr
    );
    assert!(
        export.stderr.contains("edited after it was queued"),
        "{}",
        export.stderr
    );

    let out = site.verify_fails();
    for id in [approved, waiting] {
        assert!(
            out.contains(&format!(
                "proposal {id}: its stored draft is not the one logged when it was created"
            )),
            "{id} in:\n{out}"
        );
    }
}

#[test]
fn an_edited_draft_is_not_approved_not_exported_and_reported_on_sqlite() {
    an_edited_draft_is_not_approved_not_exported_and_reported(None);
}

#[test]
fn an_edited_draft_is_not_approved_not_exported_and_reported_on_postgresql() {
    on_postgresql(an_edited_draft_is_not_approved_not_exported_and_reported);
}

const OTHER_KEY: &str = "another-audit-key-entirely-0123456789";

fn a_writer_with_another_key_appends_nothing(url: Option<&str>) {
    let site = Site::new(url);
    let pending = site.plain_pending();
    // A changed record, so that the import has something to write.
    let changed = site.hypod.path().join("changed.ndjson");
    let first = std::fs::read_to_string(SAMPLE).expect("sample");
    let first = first.lines().next().expect("a record");
    std::fs::write(&changed, first.replace("exp-2024-0001", "exp-2099-0001")).expect("write");
    let changed = changed.display().to_string();
    let before = site.entries();
    let with_other_key = |args: &[&str]| {
        Ran::of(
            site.hypod
                .command(args)
                .env("HYPOD_AUDIT_KEY", OTHER_KEY)
                .output()
                .expect("run hypod"),
        )
    };
    for args in [
        vec!["token", "create", "--user", "eve", "--role", "admin"],
        vec!["import", &changed],
        vec!["run"],
        vec![
            "queue",
            "approve",
            &pending[0],
            "--as",
            "rita",
            "--note",
            "ok",
        ],
    ] {
        let ran = with_other_key(&args);
        assert_ne!(ran.code, Some(0), "{args:?} ran: {}", ran.stdout);
        // (`--as` is refused first: rita's token entry does not verify under that key.)
        assert!(
            ran.stderr
                .contains("differs from the one that wrote this log")
                || ran
                    .stderr
                    .contains("another key than the one that wrote the log"),
            "{args:?}: {}",
            ran.stderr
        );
    }
    assert_eq!(site.entries(), before, "an entry was appended");
    assert_eq!(site.reviews_of(&pending[0]), 0);
    let tokens = site.hypod.ok(&["token", "list", "--json"]).json();
    assert!(!tokens.to_string().contains("eve"), "{tokens}");
    site.verify_intact();
}

#[test]
fn a_writer_with_another_key_appends_nothing_on_sqlite() {
    a_writer_with_another_key_appends_nothing(None);
}

#[test]
fn a_writer_with_another_key_appends_nothing_on_postgresql() {
    on_postgresql(a_writer_with_another_key_appends_nothing);
}

#[test]
fn a_lost_sqlite_key_file_stops_writers_instead_of_making_a_new_key() {
    let hypod = Hypod::new();
    let without_key = |args: &[&str]| {
        Ran::of(
            hypod
                .command(args)
                .env_remove("HYPOD_AUDIT_KEY")
                .output()
                .expect("run hypod"),
        )
    };
    // A new database gets its key file.
    let imported = without_key(&["import", SAMPLE]);
    assert_eq!(imported.code, Some(0), "{}", imported.stderr);
    let key_file = hypod.path().join("hypod.db.audit-key");
    let key = std::fs::read(&key_file).expect("the key file");
    let verified = without_key(&["audit", "verify"]);
    assert_eq!(verified.code, Some(0), "{}", verified.stdout);

    std::fs::remove_file(&key_file).expect("lose the key file");
    for args in [
        vec!["token", "create", "--user", "eve", "--role", "admin"],
        vec!["import", SAMPLE],
        vec!["audit", "verify"],
    ] {
        let ran = without_key(&args);
        assert_ne!(ran.code, Some(0), "{args:?} ran: {}", ran.stdout);
        assert!(
            ran.stderr.contains("hypod.db.audit-key is missing"),
            "{args:?}: {}",
            ran.stderr
        );
        assert!(
            ran.stderr.contains("Restore the key file"),
            "{}",
            ran.stderr
        );
        assert!(!key_file.exists(), "{args:?} made a new key file");
    }
    // With the key file back, the log is whole and nothing was added.
    std::fs::write(&key_file, key).expect("restore the key file");
    let verified = without_key(&["audit", "verify"]);
    assert_eq!(verified.code, Some(0), "{}", verified.stdout);
    let tokens = without_key(&["token", "list", "--json"]);
    assert!(!tokens.stdout.contains("eve"), "{}", tokens.stdout);
}

fn imports_name_their_caller_and_an_edited_experiment_is_reported(url: Option<&str>) {
    let site = Site::new(url);
    // The command-line import names the shell account and every record it wrote.
    let log = site.log();
    let cli_import = log
        .iter()
        .find(|e| e["action"] == "experiments.upsert")
        .expect("the import's entry");
    assert!(
        cli_import["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("cli:")),
        "{cli_import}"
    );
    let detail: Value =
        serde_json::from_str(cli_import["detail"].as_str().expect("detail")).expect("JSON");
    let written = detail["written"].as_object().expect("written records");
    let digest = written["exp-2024-0001"].as_str().expect("a digest");
    assert_eq!(digest.len(), 16, "{digest}");
    assert_eq!(
        written.len() as u64,
        detail["inserted"].as_u64().expect("inserted"),
        "{detail}"
    );
    site.verify_intact();

    // An API import names its principal and the ids it wrote.
    let ada = site.hypod.token("ada", "admin");
    let first = std::fs::read_to_string(SAMPLE)
        .expect("sample")
        .lines()
        .next()
        .expect("a record")
        .replace("exp-2024-0001", "exp-2099-0001");
    let daemon = serve(&site.hypod);
    let answer = request(
        &daemon.addr,
        "POST",
        "/api/v1/experiments",
        &[("authorization", &bearer(&ada))],
        Some(("application/x-ndjson", &first)),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    drop(daemon);
    let log = site.log();
    let api_import = log
        .iter()
        .rev()
        .find(|e| e["action"] == "experiments.upsert")
        .expect("the API import's entry");
    assert_eq!(api_import["actor"], "ada", "{api_import}");
    let detail: Value =
        serde_json::from_str(api_import["detail"].as_str().expect("detail")).expect("JSON");
    let ids: Vec<&String> = detail["written"]
        .as_object()
        .expect("written")
        .keys()
        .collect();
    assert_eq!(ids, ["exp-2099-0001"], "{detail}");
    site.verify_intact();

    // An experiment's numbers edited by SQL are reported, by name.
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
    // One edited past reading is reported the same way, not a failed verification.
    if site.sqlite() {
        site.sql(
            "UPDATE experiments SET body = json_set(body, '$.variants', 'none') \
             WHERE id = 'exp-2024-0003'",
        );
    } else {
        site.sql(
            "UPDATE experiments SET body = jsonb_set(body, '{variants}', '\"none\"') \
             WHERE id = 'exp-2024-0003'",
        );
    }
    let out = site.verify_fails();
    assert!(
        out.contains("experiment exp-2024-0003: its stored record is not the one"),
        "{out}"
    );
    assert!(
        out.contains(
            "experiment exp-2024-0001: its stored record is not the one the import at entry"
        ),
        "{out}"
    );
    assert!(!out.contains("exp-2024-0002"), "{out}");

    // Importing the record again writes it again, and the log vouches for it once more.
    site.hypod.ok(&["import", SAMPLE]);
    site.verify_intact();
}

#[test]
fn imports_name_their_caller_and_an_edited_experiment_is_reported_on_sqlite() {
    imports_name_their_caller_and_an_edited_experiment_is_reported(None);
}

#[test]
fn imports_name_their_caller_and_an_edited_experiment_is_reported_on_postgresql() {
    on_postgresql(imports_name_their_caller_and_an_edited_experiment_is_reported);
}
