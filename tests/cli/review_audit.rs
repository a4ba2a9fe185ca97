//! The audit log as a hostile database writer would attack it, on SQLite and PostgreSQL:
//! every edit, deletion, insertion, reordering or status change made under hypod's back —
//! even with the hashes recomputed — makes `hypod audit verify` (and the API's verify) fail
//! and name it, and `hypod export` withholds what the log does not explain. The writer has the
//! database but not the audit key.

use crate::support::{Hypod, SAMPLE};
use sqlx::Connection;

/// The key the test processes use (the environment's `HYPOD_AUDIT_KEY`).
pub(crate) const TEST_AUDIT_KEY: &str = "test-audit-key-not-a-secret-0123456789";

/// Queues `draft` as a proposal of a new run, through hypod's own store (as a proposer's
/// answer would be queued), in `hypod`'s database.
pub(crate) fn queue_draft(hypod: &Hypod, draft: serde_json::Value) {
    queue_draft_as(hypod, draft, hypod::domain::ProposalStatus::PendingReview);
}

/// [`queue_draft`] with the status governance gave it.
pub(crate) fn queue_draft_as(
    hypod: &Hypod,
    draft: serde_json::Value,
    status: hypod::domain::ProposalStatus,
) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let config =
            hypod::app::App::load_config(Some(&hypod.path().join("hypod.toml"))).expect("config");
        let key = hypod::store::AuditKey::new(TEST_AUDIT_KEY.as_bytes()).expect("key");
        let store = hypod::store::open(&config.database_url(), key)
            .await
            .expect("store");
        let draft: hypod::domain::ProposalDraft = serde_json::from_value(draft).expect("a draft");
        let now = chrono::Utc::now();
        let run = hypod::domain::RunRecord {
            id: uuid::Uuid::now_v7().to_string(),
            trigger: hypod::domain::Trigger::Cli,
            status: hypod::domain::RunStatus::Succeeded,
            started_at: now,
            finished_at: now,
            proposer: "openai".into(),
            fell_back: None,
            error: None,
            summary: hypod::domain::RunSummary::default(),
            usage: None,
            policy_digest: "p".repeat(64),
            input_digest: "i".repeat(64),
            rejected_drafts: Vec::new(),
            notes: Vec::new(),
            audit_head: None,
            stage_seconds: Vec::new(),
        };
        let proposal = hypod::domain::Proposal {
            id: uuid::Uuid::now_v7().to_string(),
            run_id: run.id.clone(),
            status,
            created_at: now,
            updated_at: now,
            draft,
            enrichment: hypod::domain::Enrichment {
                priority: 1e9,
                ..Default::default()
            },
            verdicts: Vec::new(),
            provenance: hypod::domain::Provenance {
                proposer: "openai".into(),
                ..Default::default()
            },
            approvals_required: 1,
            superseded_by: None,
        };
        store
            .record_run(&run, &[proposal], &[], None, None)
            .await
            .expect("record");
    });
}

/// The id of the highest-priority proposal.
pub(crate) fn last_proposal(hypod: &Hypod) -> String {
    let list = hypod.ok(&["queue", "list", "--json"]).json();
    list[0]["id"].as_str().expect("a proposal").to_string()
}

/// A folder on `url` (SQLite when `None`) with the sample history, one run, one approval.
struct Tampered {
    hypod: Hypod,
    url: String,
    approved: String,
    pending: String,
}

impl Tampered {
    fn new(url: Option<&str>) -> Tampered {
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
        let list = hypod
            .ok(&["queue", "list", "--status", "pending_review", "--json"])
            .json();
        let plain: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["approvals_required"] == 1)
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect();
        assert!(plain.len() >= 2, "two plain proposals: {list}");
        let approved = plain[0].clone();
        hypod.ok(&[
            "queue", "approve", &approved, "--as", "rita", "--note", "ship it",
        ]);
        let verified = hypod.run(&["audit", "verify"]);
        assert_eq!(
            verified.code,
            Some(0),
            "{}{}",
            verified.stdout,
            verified.stderr
        );
        assert!(verified.stdout.contains("audit log intact"));
        Tampered {
            hypod,
            url,
            approved,
            pending: plain[1].clone(),
        }
    }

    fn sql(&self, sql: &str) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            if self.url.starts_with("sqlite:") {
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

    /// Rewrites every hash from `seq` on as the chain's formula gives them (what someone who
    /// read the source but lacks the key can do).
    fn recompute_hashes(&self) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let rows: Vec<(i64, String, String, String, String, String)> = runtime.block_on(async {
            let sql = "SELECT seq, CAST(at AS TEXT) AS at, actor, action, subject, detail FROM audit_log ORDER BY seq";
            if self.url.starts_with("sqlite:") {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.expect("connect");
                sqlx::query_as(sql).fetch_all(&mut conn).await.expect("rows")
            } else {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("connect");
                let rows: Vec<(i64, chrono::DateTime<chrono::Utc>, String, String, String, String)> = sqlx::query_as(
                    "SELECT seq, at, actor, action, subject, detail FROM audit_log ORDER BY seq",
                )
                .fetch_all(&mut conn)
                .await
                .expect("rows");
                rows.into_iter()
                    .map(|(s, at, a, ac, su, d)| (s, hypod::store::timestamp(at), a, ac, su, d))
                    .collect()
            }
        });
        let mut prev = String::new();
        let mut updates = String::new();
        for (seq, at, actor, action, subject, detail) in rows {
            let hash = hypod::store::audit_hash(&prev, &at, &actor, &action, &subject, &detail);
            updates.push_str(&format!(
                "UPDATE audit_log SET prev_hash = '{prev}', hash = '{hash}' WHERE seq = {seq};\n"
            ));
            prev = hash;
        }
        self.sql(&updates);
    }

    /// `audit verify`: exit code and output.
    fn verify(&self) -> (Option<i32>, String) {
        let ran = self.hypod.run(&["audit", "verify"]);
        (ran.code, format!("{}{}", ran.stdout, ran.stderr))
    }

    fn assert_detected(&self, what: &str, expected: &str) {
        let (code, out) = self.verify();
        assert_eq!(code, Some(1), "{what}: verify passed:\n{out}");
        assert!(out.contains("AUDIT LOG DOES NOT VERIFY"), "{what}: {out}");
        assert!(
            out.contains(expected),
            "{what}: expected {expected:?} in:\n{out}"
        );
    }
}

fn every_tampering_is_detected(database: &dyn Fn() -> Option<String>) {
    let fresh = || Tampered::new(database().as_deref());

    let t = fresh();
    t.sql("DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)");
    t.assert_detected("the last entry deleted", "cut off the end");

    let t = fresh();
    t.sql("DELETE FROM audit_log");
    t.assert_detected("every entry deleted", "cut off the end");

    let t = fresh();
    t.sql("DELETE FROM audit_log; DELETE FROM audit_head");
    t.assert_detected(
        "the log and its head deleted",
        "the audit log never recorded it",
    );

    let t = fresh();
    t.sql("UPDATE audit_log SET detail = replace(detail, 'ship it', 'the CFO said yes') WHERE action = 'review.approve'");
    t.assert_detected("a note edited", "its hash does not match its content");

    let t = fresh();
    t.sql("UPDATE audit_log SET detail = replace(detail, 'ship it', 'the CFO said yes') WHERE action = 'review.approve'");
    t.recompute_hashes();
    t.assert_detected("a note edited, hashes recomputed", "its MAC does not match");

    let t = fresh();
    t.sql(&format!(
        "INSERT INTO audit_log (at, actor, action, subject, detail, prev_hash, hash, mac) \
         SELECT at, 'mallory', 'review.approve', '{}', '{{\"status\":\"approved\"}}', hash, hash, mac \
         FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)",
        t.pending
    ));
    t.recompute_hashes();
    t.assert_detected(
        "a forged approval with recomputed hashes",
        "its MAC does not match",
    );

    let t = fresh();
    t.sql("UPDATE audit_log SET mac = NULL WHERE seq = 2");
    t.assert_detected("a MAC removed", "it has no MAC");

    let t = fresh();
    // Reorder: the first two entries swap places (their contents swapped through a copy).
    t.sql(
        "CREATE TEMP TABLE pair AS SELECT * FROM audit_log WHERE seq IN (1, 2); \
         UPDATE audit_log SET (at, actor, action, subject, detail, prev_hash, hash, mac) = \
           (SELECT at, actor, action, subject, detail, prev_hash, hash, mac FROM pair WHERE pair.seq = 3 - audit_log.seq) \
         WHERE seq IN (1, 2)",
    );
    t.assert_detected(
        "two entries swapped",
        "link to the previous entry is broken",
    );

    // A status changed in the database: detected, and export does not ship it.
    let t = fresh();
    t.sql(&format!(
        "UPDATE proposals SET status = 'approved' WHERE id = '{}'",
        t.pending
    ));
    t.assert_detected(
        "a status set by hand",
        "the audit log leaves it pending_review",
    );
    let export = t.hypod.run(&["export", "--format", "ndjson"]);
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    assert!(
        export.stdout.contains(&t.approved),
        "the reviewed approval ships: {}",
        export.stdout
    );
    assert!(
        !export.stdout.contains(&t.pending),
        "the hand-made approval does not ship"
    );
    assert!(
        export
            .stderr
            .contains(&format!("withheld proposal {}", t.pending)),
        "{}",
        export.stderr
    );

    // A review row deleted: the status no longer has its reasons.
    let t = fresh();
    t.sql("DELETE FROM reviews");
    t.assert_detected("the review rows deleted", "not stored (deleted?)");

    // A broken chain exports nothing.
    let t = fresh();
    t.sql("DELETE FROM audit_log WHERE seq = 3");
    let export = t.hypod.run(&["export"]);
    assert_eq!(export.code, Some(1));
    assert!(
        export.stderr.contains("nothing was exported"),
        "{}",
        export.stderr
    );
}

#[test]
fn every_tampering_is_detected_on_sqlite() {
    every_tampering_is_detected(&|| None);
}

#[test]
fn every_tampering_is_detected_on_postgresql() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = runtime.block_on(crate::backends::postgres_server()) else {
        return;
    };
    // One database per scenario, each starting from an untouched log; all dropped at the end.
    let databases = std::sync::Mutex::new(Vec::new());
    let fresh = || {
        let db = runtime.block_on(crate::backends::PgDatabase::create(&server));
        let url = db.url.clone();
        databases.lock().expect("databases").push(db);
        Some(url)
    };
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        every_tampering_is_detected(&fresh)
    }));
    for db in databases.lock().expect("databases").iter() {
        runtime.block_on(db.drop_now());
    }
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_kept_head_detects_a_database_rolled_back_to_an_earlier_copy() {
    let t = Tampered::new(None);
    let db = t.hypod.path().join("hypod.db");
    // Checkpoint the WAL so that the file alone is the database, then keep a copy.
    t.sql("PRAGMA wal_checkpoint(TRUNCATE)");
    let copy = t.hypod.path().join("copy.db");
    std::fs::copy(&db, &copy).expect("copy");
    t.hypod.ok(&[
        "queue", "reject", &t.pending, "--as", "rita", "--reason", "not now",
    ]);
    let head = t.hypod.ok(&["audit", "head"]).stdout.trim().to_string();
    assert!(head.contains(':'), "{head}");
    // The database is put back as it was before the rejection: self-consistent, but the head
    // someone kept is gone.
    t.sql("PRAGMA wal_checkpoint(TRUNCATE)");
    std::fs::copy(&copy, &db).expect("restore");
    let _ = std::fs::remove_file(t.hypod.path().join("hypod.db-wal"));
    let _ = std::fs::remove_file(t.hypod.path().join("hypod.db-shm"));
    assert_eq!(
        t.verify().0,
        Some(0),
        "the rolled-back copy is consistent in itself"
    );
    let kept = t.hypod.run(&["audit", "verify", "--head", &head]);
    assert_eq!(kept.code, Some(1), "{}", kept.stdout);
    assert!(
        kept.stdout.contains("no longer in the log"),
        "{}",
        kept.stdout
    );
    // Every run publishes the head after its entries.
    let run = t.hypod.ok(&["run", "--json"]).json();
    let published = run["run"]["audit_head"]["seq"]
        .as_i64()
        .expect("a published head");
    let now = t.hypod.ok(&["audit", "head", "--json"]).json();
    assert_eq!(now["seq"].as_i64(), Some(published));
}

#[test]
fn the_audit_log_exports_as_ndjson_with_every_kind_of_entry() {
    let t = Tampered::new(None);
    let lines = t.hypod.ok(&["audit", "export"]).json_lines();
    let actions: std::collections::BTreeSet<String> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for expected in [
        "experiments.upsert",
        "policies.changed",
        "proposal.pending_review",
        "run.succeeded",
        "token.create",
        "review.approve",
    ] {
        assert!(
            actions.contains(expected),
            "{expected} missing from {actions:?}"
        );
    }
    let first = &lines[0];
    for field in [
        "seq",
        "at",
        "actor",
        "action",
        "subject",
        "detail",
        "prev_hash",
        "hash",
        "mac",
    ] {
        assert!(first.get(field).is_some(), "{field} missing: {first}");
    }
}
