//! `hypod sync` (the binary) over the GrowthBook and SQL kinds, end to end, on SQLite and
//! PostgreSQL: the sample history served by the fake GrowthBook (`tests/fake_growthbook`, on
//! 127.0.0.1:0, its key in an environment variable) or held in tables of a fresh PostgreSQL
//! warehouse database, synced, analyses as `hypod import` of the file does (value for value,
//! 1e-9 relative where GrowthBook's `stddev` stands for `revenue_sq`); a second sync with nothing
//! changed makes only list requests and writes nothing; a burst past GrowthBook's rate limit is
//! waited out; a refused key or a GrowthBook failing for good fails the sync naming the source
//! and never the key, with nothing written; and a run (`hypod run` syncs first) goes on under
//! `use_last` saying so, or fails under `fail`.

use crate::fake_growthbook::{
    sample_served, FakeGrowthbook, FieldStyle, RetryAfter, Route, CONVERSIONS, ORDERS, REVENUE,
};
use crate::growthbook_source::assert_close;
use crate::support::Ran;
use crate::sync::{analysis_of_import, on_both, sample, stale_notes, Site};
use serde_json::{json, Value};
use std::time::Duration;

const KEY: &str = "gbk_e2e_secret_7c1d94aa03f2";
/// The variable the configuration names for the key (set on each `hypod` process only).
const KEY_ENV: &str = "GROWTHBOOK_E2E_API_KEY";

/// A `kind = "growthbook"` source reading the fake, paced fast (`requests_per_minute` high:
/// the fake's own rate limit, when set, is what makes a sync wait).
fn growthbook_source(fake: &FakeGrowthbook, extra: &str) -> String {
    format!(
        "[[source]]\nname = \"growthbook\"\nkind = \"growthbook\"\nurl = \"{}\"\napi_key_env = \"{KEY_ENV}\"\nrequests_per_minute = 600000\n{extra}\n[source.metrics]\nconversions = \"{CONVERSIONS}\"\nrevenue = \"{REVENUE}\"\norders = \"{ORDERS}\"\n",
        fake.url()
    )
}

/// Runs `hypod ARGS` in `site` with the GrowthBook key `key` in the environment.
fn with_key(site: &Site, key: &str, args: &[&str]) -> Ran {
    let output = site
        .hypod
        .command(args)
        .env(KEY_ENV, key)
        .output()
        .expect("run hypod");
    Ran::of(output)
}

fn sync_json(site: &Site, key: &str) -> (Ran, Value) {
    let ran = with_key(site, key, &["sync", "--json"]);
    let json = ran.json();
    (ran, json)
}

/// The fake GrowthBook serving the sample history, on a runtime of its own that lives as long
/// as the test's scenario.
fn start_fake(runtime: &tokio::runtime::Runtime) -> FakeGrowthbook {
    let fake = runtime.block_on(FakeGrowthbook::start(KEY, sample_served(FieldStyle::Mixed)));
    // Two experiments the bulk route leaves out: read one by one.
    fake.bulk_lacks(&["exp_00007", "exp_00200"]);
    fake
}

/// The sample's last experiment (running) concludes in GrowthBook, rolled back.
fn conclude_the_last(fake: &FakeGrowthbook) {
    fake.update("exp_00245", |served| {
        served.experiment["status"] = json!("stopped");
        served.experiment["phases"][1]["dateEnded"] = json!("2026-10-10T00:00:00.000Z");
        served.experiment["resultSummary"] = json!({"status": "lost", "winner": "var_245_0",
            "conclusions": "", "releasedVariationId": "var_245_0", "excludeFromPayload": false});
    });
}

/// What was written by syncs: the stored ids, the `history.sync` audit entries, the sources'
/// states.
fn written(site: &Site) -> (Vec<String>, Vec<String>, Vec<String>) {
    (
        site.ids(),
        site.strings("SELECT detail FROM audit_log WHERE action = 'history.sync' ORDER BY seq"),
        site.strings("SELECT name FROM sources ORDER BY name"),
    )
}

fn the_sample_through_growthbook_syncs_as_its_import(url: Option<&str>) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let fake = start_fake(&runtime);
    let site = Site::new(url, &growthbook_source(&fake, ""));

    let (ran, first) = sync_json(&site, KEY);
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let synced = &first["sources"][0];
    assert_eq!(
        (&synced["source"], &synced["kind"], &synced["status"]),
        (&json!("growthbook"), &json!("growthbook"), &json!("synced")),
        "{first}"
    );
    assert_eq!(
        (&synced["read"], &synced["inserted"]),
        (&json!(246), &json!(246)),
        "{first}"
    );
    // 246 experiments: 3 list pages, 3 bulk results pages, 2 single results.
    assert_eq!(
        (
            fake.count(Route::List),
            fake.count(Route::Bulk),
            fake.count(Route::One)
        ),
        (3, 3, 2)
    );
    assert_eq!(synced["requests"], json!(fake.total()), "{first}");

    let got = site.hypod.ok(&["analyze", "--json"]).json();
    let expected = analysis_of_import("history.ndjson", &sample());
    assert_eq!(got["experiments"].as_array().map(Vec::len), Some(246));
    assert_close(&got, &expected, "$", 1e-9);
    assert_eq!(
        site.strings("SELECT DISTINCT source FROM experiments WHERE source IS NOT NULL"),
        vec!["growthbook".to_string()],
        "provenance"
    );

    // A second sync with nothing changed: list requests only, no experiment written.
    fake.reset_counts();
    let (ran, second) = sync_json(&site, KEY);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let synced = &second["sources"][0];
    assert_eq!(
        (
            &synced["read"],
            &synced["inserted"],
            &synced["updated"],
            &synced["unchanged"],
            &synced["requests"]
        ),
        (&json!(0), &json!(0), &json!(0), &json!(246), &json!(3)),
        "{second}"
    );
    assert_eq!(
        (
            fake.count(Route::List),
            fake.count(Route::Bulk),
            fake.count(Route::One),
            fake.total()
        ),
        (3, 0, 0, 3),
        "only the list pages"
    );
    let text = with_key(&site, KEY, &["sync"]);
    assert!(
        text.stdout
            .contains("growthbook (growthbook): read 0 experiments, nothing changed: no experiment written (246 unchanged, 3 requests)"),
        "{}",
        text.stdout
    );
    let details = written(&site).1;
    assert_eq!(details.len(), 3, "one history.sync entry per sync");
    let last: Value = serde_json::from_str(&details[2]).expect("detail");
    assert_eq!(last["written"], json!({}), "{last}");
    assert_eq!(last["requests"], 3, "{last}");

    // One experiment concludes in GrowthBook: it alone is read again and replaced.
    conclude_the_last(&fake);
    fake.reset_counts();
    let (ran, third) = sync_json(&site, KEY);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let synced = &third["sources"][0];
    assert_eq!(
        (
            &synced["read"],
            &synced["inserted"],
            &synced["updated"],
            &synced["unchanged"]
        ),
        (&json!(1), &json!(0), &json!(1), &json!(245)),
        "{third}"
    );
    assert_eq!((fake.count(Route::List), fake.count(Route::One)), (3, 1));
    assert_eq!(
        site.strings("SELECT status FROM experiments WHERE id = 'exp-2026-0246'"),
        vec!["concluded".to_string()]
    );
    let verify = site.hypod.ok(&["audit", "verify"]);
    assert!(
        verify.stdout.contains("audit log intact"),
        "{}",
        verify.stdout
    );
}

#[test]
fn the_sample_through_growthbook_syncs_as_its_import_on_both_backends() {
    on_both(the_sample_through_growthbook_syncs_as_its_import);
}

fn a_burst_past_the_rate_limit_is_waited_out(url: Option<&str>) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let fake = start_fake(&runtime);
    // 2 requests per 4 s window, then 429 with `Retry-After`; hypod's own pace allows far more,
    // so the burst goes past the limit even on a loaded machine (at 4 per second it did not).
    fake.rate_limit(2, Duration::from_secs(4), RetryAfter::Seconds);
    let site = Site::new(url, &growthbook_source(&fake, ""));
    let (ran, report) = sync_json(&site, KEY);
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let synced = &report["sources"][0];
    assert_eq!(
        (&synced["status"], &synced["inserted"]),
        (&json!("synced"), &json!(246)),
        "{report}"
    );
    assert!(fake.rate_limited() >= 1, "the burst went past the limit");
    assert_eq!(fake.too_early(), 0, "no request before Retry-After");
    assert_eq!(synced["requests"], json!(fake.total()), "{report}");
    assert_eq!(site.ids().len(), 246);
}

#[test]
fn a_burst_past_the_rate_limit_is_waited_out_on_both_backends() {
    on_both(a_burst_past_the_rate_limit_is_waited_out);
}

/// A failed sync's text and JSON: it names the source, never the key.
fn assert_failed(site: &Site, key: &str, reason: &[&str]) {
    let ran = with_key(site, key, &["sync"]);
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert!(
        said.contains("source growthbook: nothing was written: "),
        "{said}"
    );
    for part in reason {
        assert!(said.contains(part), "{part}: {said}");
    }
    let (ran, report) = sync_json(site, key);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let synced = &report["sources"][0];
    assert_eq!(synced["status"], "failed", "{report}");
    assert_eq!(synced["source"], "growthbook", "{report}");
    let everything = format!("{said}{}{}", ran.stdout, ran.stderr);
    assert!(!everything.contains(key), "the key was shown: {everything}");
    assert!(!everything.contains(KEY), "the key was shown: {everything}");
}

fn a_refused_key_or_a_failing_growthbook_writes_nothing(url: Option<&str>) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let fake = start_fake(&runtime);
    let site = Site::new(url, &growthbook_source(&fake, ""));

    // A key GrowthBook refuses: 401, not retried, named by its variable.
    let wrong = "gbk_e2e_wrong_55aa10b3";
    assert_failed(&site, wrong, &["401", KEY_ENV]);
    assert_eq!(fake.unauthorized(), 2, "one request per sync, not retried");
    assert_eq!(
        written(&site),
        (vec![], vec![], vec![]),
        "nothing was written"
    );

    // A GrowthBook answering 502 to every request: retried, bounded, then unreachable.
    fake.fail_always(true);
    fake.reset_counts();
    assert_failed(&site, KEY, &["failed 5 times", "502"]);
    assert_eq!(fake.count(Route::List), 10, "five attempts per sync");
    assert_eq!(written(&site), (vec![], vec![], vec![]));

    // After a good sync, GrowthBook failing while an experiment changed leaves the stored
    // history, the source's state and the audit log as they were; the next good sync reads the
    // change.
    fake.fail_always(false);
    let ran = with_key(&site, KEY, &["sync"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let before = written(&site);
    assert_eq!((before.0.len(), before.1.len()), (246, 1));
    let state = || site.strings("SELECT CAST(state AS TEXT) FROM sources");
    let status = || site.strings("SELECT status FROM experiments WHERE id = 'exp-2026-0246'");
    let (state_before, status_before) = (state(), status());
    assert_eq!(status_before, vec!["running".to_string()]);
    conclude_the_last(&fake);
    fake.fail_always(true);
    assert_failed(&site, KEY, &["failed 5 times", "502"]);
    assert_eq!(written(&site), before, "nothing half-written");
    assert_eq!((state(), status()), (state_before, status_before));
    fake.fail_always(false);
    let (ran, report) = sync_json(&site, KEY);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(report["sources"][0]["updated"], 1, "{report}");
    assert_eq!(status(), vec!["concluded".to_string()]);
}

#[test]
fn a_refused_key_or_a_failing_growthbook_writes_nothing_on_both_backends() {
    on_both(a_refused_key_or_a_failing_growthbook_writes_nothing);
}

fn a_failing_growthbook_lets_a_run_go_on_or_fails_it(url: Option<&str>) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let fake = start_fake(&runtime);
    let site = Site::new(url, &growthbook_source(&fake, ""));
    let ran = with_key(&site, KEY, &["sync"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let synced_at = site.strings("SELECT last_ok_at FROM sources WHERE name = 'growthbook'");
    assert_eq!(synced_at.len(), 1);
    let before = written(&site);

    // GrowthBook fails for good: under use_last (the default) the run goes on with the stored
    // history and its record says so.
    fake.fail_always(true);
    let ran = with_key(&site, KEY, &["run", "--json"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let run = ran.json();
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    assert_eq!(run["run"]["summary"]["experiments"], 246, "{run}");
    let notes = stale_notes(&run);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with(&format!(
            "history from growthbook as of {}: the sync failed: ",
            synced_at[0]
        )) && notes[0].contains("failed 5 times")
            && notes[0].contains("502"),
        "{notes:?}"
    );
    assert!(!ran.stdout.contains(KEY) && !ran.stderr.contains(KEY));
    let text = with_key(&site, KEY, &["run"]).stdout;
    assert!(
        text.contains("note: history from growthbook as of "),
        "{text}"
    );
    assert_eq!(written(&site), before, "the failed syncs wrote nothing");

    // Under "fail" the run fails with the reason and queues nothing.
    site.set_sources(&growthbook_source(&fake, "on_failure = \"fail\""));
    let ran = with_key(&site, KEY, &["run", "--json"]);
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    let run = ran.json();
    assert_eq!(run["run"]["status"], "failed", "{run}");
    let error = run["run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("source growthbook failed to sync and its on_failure is \"fail\"")
            && error.contains("502"),
        "{error}"
    );
    assert_eq!(run["proposals"], json!([]));
    assert_eq!(written(&site), before);
    let records = site
        .strings("SELECT CAST(record AS TEXT) FROM runs")
        .join("\n");
    let audit = site.strings("SELECT detail FROM audit_log").join("\n");
    assert!(!records.contains(KEY) && !audit.contains(KEY));
}

#[test]
fn a_failing_growthbook_lets_a_run_go_on_or_fails_it_on_both_backends() {
    on_both(a_failing_growthbook_lets_a_run_go_on_or_fails_it);
}

// ---------------------------------------------------------------------------------------------
// The SQL kind

/// The variable the configuration names for the warehouse's URL.
const WAREHOUSE_ENV: &str = "WAREHOUSE_E2E_URL";

fn the_sample_through_a_sql_source_syncs_as_its_import(url: Option<&str>, warehouse: &str) {
    let sources = format!(
        "[[source]]\nname = \"warehouse\"\nkind = \"sql\"\nurl_env = \"{WAREHOUSE_ENV}\"\nexperiments_query = \"select * from experiments order by id\"\narms_query = \"select {} from arms order by experiment_id, position\"\n",
        crate::sql_source::ARM_COLUMNS
    );
    let site = Site::new(url, &sources);
    let sync = |args: &[&str]| {
        let output = site
            .hypod
            .command(args)
            .env(WAREHOUSE_ENV, warehouse)
            .output()
            .expect("run hypod");
        Ran::of(output)
    };
    let ran = sync(&["sync", "--json"]);
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let report = ran.json();
    let synced = &report["sources"][0];
    assert_eq!(
        (
            &synced["kind"],
            &synced["status"],
            &synced["read"],
            &synced["inserted"],
            &synced["requests"]
        ),
        (
            &json!("sql"),
            &json!("synced"),
            &json!(246),
            &json!(246),
            &json!(2)
        ),
        "{report}"
    );
    let got = site.hypod.ok(&["analyze", "--json"]).json();
    let expected = analysis_of_import("history.ndjson", &sample());
    assert_eq!(
        got, expected,
        "the history synced from the warehouse does not analyse as its import"
    );
    assert_eq!(
        site.strings("SELECT DISTINCT source FROM experiments WHERE source IS NOT NULL"),
        vec!["warehouse".to_string()]
    );
    // Nothing changed in the warehouse: nothing written.
    let ran = sync(&["sync", "--json"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let report = ran.json();
    let synced = &report["sources"][0];
    assert_eq!(
        (
            &synced["inserted"],
            &synced["updated"],
            &synced["unchanged"]
        ),
        (&json!(0), &json!(0), &json!(246)),
        "{report}"
    );
}

/// The warehouse: a fresh PostgreSQL database holding the sample history in plain tables
/// (sql_source's loader). Needs CI's PostgreSQL (skipped loudly without it, failed under CI).
#[test]
fn the_sample_through_a_sql_source_syncs_as_its_import_on_both_backends() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = runtime.block_on(crate::backends::postgres_server()) else {
        return;
    };
    let warehouse = runtime.block_on(crate::backends::PgDatabase::create(&server));
    let checked = std::panic::catch_unwind(|| {
        runtime.block_on(async {
            crate::sql_source::execute(&warehouse.url, crate::sql_source::SAMPLE_TABLES).await;
            crate::sql_source::load_sample(&warehouse.url).await;
        });
        let url = warehouse.url.clone();
        on_both_with(&url, the_sample_through_a_sql_source_syncs_as_its_import);
    });
    runtime.block_on(warehouse.drop_now());
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

/// [`on_both`] for a scenario that also takes the warehouse's URL.
fn on_both_with(warehouse: &str, scenario: fn(Option<&str>, &str)) {
    scenario(None, warehouse);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = runtime.block_on(crate::backends::postgres_server()) else {
        return;
    };
    let db = runtime.block_on(crate::backends::PgDatabase::create(&server));
    let url = db.url.clone();
    let checked = std::panic::catch_unwind(|| scenario(Some(&url), warehouse));
    runtime.block_on(db.drop_now());
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}
