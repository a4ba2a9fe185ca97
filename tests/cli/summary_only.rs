//! Summary-only records (issue #24, item 2; DESIGN §12), through the real binary: a history
//! mixing full records (per-arm sums) and records that carry only the result another tool
//! reported (`summary`, visitors per arm, no sums), imported as NDJSON and as CSV on SQLite and
//! PostgreSQL. `analyze --json` marks them `summary_only` with the reported figures and invents
//! no sum; program health counts them; the lever pools equal statsmodels' `combine_effects`
//! (`tests/reference/make_summary_only_table.py`, 1e-9); a run uses them as evidence, shown as
//! reported figures; and a summary that makes no sense is refused naming its field, with nothing
//! written.
//!
//! The expected outcomes are worked out here from the figures in the fixture (the decision
//! rule of docs/statistics.md), never read back from hypod's own output.

use crate::support::Hypod;
use crate::test_app::{request, TestApp};
use serde_json::{json, Value};

const HISTORY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/reference/summary_history.ndjson"
);
const HISTORY_CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/reference/summary_history.csv"
);
const POOLS: &str = include_str!("../reference/summary_only_pools.csv");
const TESTS: &str = include_str!("../reference/summary_only_tests.csv");

/// The summary-only records of the fixture.
const SHEETS: [&str; 7] = [
    "sheet-01", "sheet-02", "sheet-03", "sheet-04", "sheet-05", "sheet-06", "sheet-07",
];

/// Runs `check` with a fresh folder on SQLite, then on a fresh PostgreSQL database (skipped
/// without a server unless CI is set; the database is dropped afterwards).
fn on_both_backends(check: impl Fn(&dyn Fn() -> Hypod)) {
    check(&Hypod::new);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = runtime.block_on(crate::backends::postgres_server()) else {
        return;
    };
    let databases = std::sync::Mutex::new(Vec::new());
    let fresh = || {
        let db = runtime.block_on(crate::backends::PgDatabase::create(&server));
        let hypod = Hypod::with_database(&db.url);
        databases.lock().expect("databases").push(db);
        hypod
    };
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&fresh)));
    for db in databases.lock().expect("databases").iter() {
        runtime.block_on(db.drop_now());
    }
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

/// The fixture's records, by id, as written in the file.
fn records() -> Vec<Value> {
    std::fs::read_to_string(HISTORY)
        .expect("the fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn experiment<'a>(analysis: &'a Value, id: &str) -> &'a Value {
    analysis["experiments"]
        .as_array()
        .expect("experiments")
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not in the analysis"))
}

#[test]
fn summary_only_records_are_reported_as_reported_and_never_get_sums() {
    on_both_backends(|fresh| {
        let hypod = fresh();
        hypod.ok(&["import", HISTORY]);
        let analysis = hypod.ok(&["analyze", "--json"]).json();

        // The outcome each reported result supports (α = 0.05): a p-value decides when there
        // is one; else the interval lift ± 1.96·SE.
        let expected = [
            ("sheet-01", "proven"),       // p 0.022, lift +4.2 %
            ("sheet-02", "inconclusive"), // 0.015 / 0.012 = 1.25 standard errors
            ("sheet-03", "inconclusive"), // interval [-0.004, 0.126] holds 0
            ("sheet-04", "proven"),       // p 0.03, lift +5 % (no interval)
            ("sheet-05", "inconclusive"), // p 0.19
            ("sheet-06", "running"),
            ("sheet-07", "proven"), // p 0.0001 (a click-through rate: not commercial)
        ];
        for record in records() {
            let id = record["id"].as_str().unwrap();
            let e = experiment(&analysis, id);
            let Some(summary) = record.get("summary") else {
                // Full records keep their analysis and carry no new key.
                assert!(e.get("summary_only").is_none(), "{id}: {e}");
                assert!(e.get("not_checked").is_none(), "{id}: {e}");
                assert!(e["primary"]["control_mean"].is_f64(), "{id}: {e}");
                continue;
            };
            assert_eq!(e["summary_only"], true, "{id}");
            assert_eq!(
                &e["summary"], summary,
                "{id}: the reported figures, as imported"
            );
            let outcome = expected.iter().find(|(x, _)| *x == id).unwrap().1;
            assert_eq!(e["outcome"], outcome, "{id}");
            let p = &e["primary"];
            let lift = summary.get("relative_lift").or(summary.get("effect"));
            assert_eq!(Some(&p["relative_lift"]), lift, "{id}");
            for key in ["ci_low", "ci_high", "p_value"] {
                assert_eq!(
                    p[key],
                    summary.get(key).cloned().unwrap_or(Value::Null),
                    "{id}: {key} as reported, or null"
                );
            }
            // Nothing recomputed from sums hypod does not have.
            for key in [
                "control_mean",
                "treatment_mean",
                "absolute_diff",
                "absolute_p_value",
                "degrees_of_freedom",
                "power",
                "required_visitors_per_arm",
            ] {
                assert!(p[key].is_null(), "{id}: {key} = {}", p[key]);
            }
            assert!(e["revenue_per_visitor"].is_null() && e["average_order_value"].is_null());
            assert!(p["reason"]
                .as_str()
                .unwrap()
                .contains("as another tool reported"));
            let not_checked = e["not_checked"].as_array().expect("what is not checked");
            assert!(
                not_checked
                    .iter()
                    .any(|n| n.as_str().unwrap().contains("not recomputed")),
                "{id}: {not_checked:?}"
            );
            // The visitors per arm are real: the traffic split is still checked.
            assert_eq!(e["srm_p_value"], 1.0, "{id}: equal arms");
        }
        assert_eq!(analysis["program"]["summary_only"], json!(SHEETS));

        // Stored as imported: the visitors, the summary, and no sum.
        let token = hypod.token("vera", "viewer");
        let app = TestApp::spawn(&hypod);
        let auth = format!("Bearer {token}");
        let page = request(
            &app.addr,
            "GET",
            "/api/v1/experiments?limit=100",
            &[("Authorization", auth.as_str())],
            None,
        );
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        for record in records().iter().filter(|r| r.get("summary").is_some()) {
            let stored = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["id"] == record["id"])
                .expect("stored");
            assert_eq!(stored["summary"], record["summary"]);
            for variant in stored["variants"].as_array().unwrap() {
                let mut keys: Vec<&String> = variant.as_object().unwrap().keys().collect();
                keys.sort();
                assert_eq!(keys, ["control", "name", "visitors"], "{stored}");
            }
        }
        drop(app);

        // The text output marks each of them, and only them.
        let text = hypod.ok(&["analyze"]).stdout;
        for line in text
            .lines()
            .filter(|l| l.starts_with("sheet-") || l.starts_with("full-"))
        {
            assert_eq!(
                line.contains("reported (summary-only, not re-analysed)"),
                line.starts_with("sheet-"),
                "{line}"
            );
        }
        assert!(text.contains("summary-only records     7"), "{text}");

        // The same history as CSV (summary_* columns) is the same history.
        let from_csv = fresh();
        from_csv.ok(&["import", HISTORY_CSV]);
        assert_eq!(from_csv.ok(&["analyze", "--json"]).json(), analysis);
    });
}

#[test]
fn health_counts_summary_only_records_from_their_reported_figures() {
    let hypod = Hypod::new();
    hypod.ok(&["import", HISTORY]);
    let program = hypod.ok(&["analyze", "--json"]).json()["program"].clone();
    // Valid concluded: the six full records (all inconclusive) and six concluded summaries;
    // proven: sheet-01, sheet-04 and sheet-07 (see the test above).
    assert_eq!(program["valid_concluded"], 12, "{program}");
    assert_eq!(program["proven"], 3, "{program}");
    assert_eq!(program["proven_rate"], 0.25, "{program}");
    assert_eq!(program["running"], 1);

    // The interval decides without a p-value, a significant negative effect is disproven, and
    // shipping is no evidence: a ship decision on an inconclusive summary is a black-box rule.
    let more = [
        (
            "int-pos",
            json!({"metric": "conversion_rate", "relative_lift": 0.03, "ci_low": 0.01, "ci_high": 0.05}),
            "ship",
        ),
        (
            "se-neg",
            json!({"metric": "conversion_rate", "effect": -0.04, "standard_error": 0.01}),
            "rollback",
        ),
        (
            "ship-flat",
            json!({"metric": "conversion_rate", "relative_lift": 0.01, "ci_low": -0.02, "ci_high": 0.04}),
            "ship",
        ),
    ];
    let lines: Vec<String> = more
        .iter()
        .map(|(id, summary, decision)| {
            json!({
                "id": id, "name": id, "moment": "search", "primary_kpi": "conversion_rate",
                "status": "concluded", "decision": decision, "summary": summary,
                "variants": [
                    {"name": "control", "control": true, "visitors": 5000},
                    {"name": "treatment", "control": false, "visitors": 5000}
                ]
            })
            .to_string()
        })
        .collect();
    let file = hypod.path().join("more.ndjson");
    std::fs::write(&file, lines.join("\n")).unwrap();
    hypod.ok(&["import", file.to_str().unwrap()]);
    let analysis = hypod.ok(&["analyze", "--json"]).json();
    assert_eq!(experiment(&analysis, "int-pos")["outcome"], "proven");
    assert_eq!(experiment(&analysis, "se-neg")["outcome"], "disproven");
    assert_eq!(
        experiment(&analysis, "ship-flat")["outcome"],
        "inconclusive"
    );
    let program = &analysis["program"];
    assert_eq!(program["valid_concluded"], 15);
    assert_eq!(program["proven"], 4);
    assert_eq!(program["disproven"], 1);
    let black_box = program["black_box_rules"].as_array().unwrap();
    assert!(black_box.contains(&json!("ship-flat")), "{black_box:?}");
    assert!(!black_box.contains(&json!("int-pos")), "{black_box:?}");
}

/// `ours` against the reference: within 1e-9 relative (1e-12 absolute for values below 1e-3).
fn close(ours: &Value, theirs: f64, what: &str) {
    let ours = ours
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {ours} is not a number"));
    let scale = theirs.abs().max(1e-12);
    assert!(
        (ours - theirs).abs() <= 1e-9 * scale.max(1e-3),
        "{what}: {ours} vs statsmodels {theirs}"
    );
}

#[test]
fn lever_pools_with_summary_only_records_equal_statsmodels() {
    on_both_backends(|fresh| {
        let hypod = fresh();
        hypod.ok(&["import", HISTORY]);
        let levers = hypod.ok(&["levers", "--json"]).json();
        assert_eq!(
            hypod.ok(&["analyze", "--json"]).json()["levers"],
            levers,
            "analyze --json shows the same pools"
        );
        let lever = |name: &str| -> &Value {
            levers["levers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["lever"] == name)
                .unwrap_or_else(|| panic!("no lever {name}"))
        };
        let mut rows = 0;
        for line in POOLS.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let pool: &Value = match f[0] {
                "lever" => lever(f[1]),
                "lever_moment" | "lever_segment" => {
                    let (name, group) = f[1].split_once('/').unwrap();
                    let by = if f[0] == "lever_moment" {
                        "by_moment"
                    } else {
                        "by_segment"
                    };
                    &lever(name)[by][group]
                }
                "moment" => &levers["moments"][f[1]],
                "overall" => &levers["overall"],
                other => panic!("{other}"),
            };
            assert_eq!(pool["k"], f[2].parse::<u64>().unwrap(), "k of {line}");
            for (i, key) in ["effect", "se", "ci_low", "ci_high", "tau2", "i2", "q"]
                .iter()
                .enumerate()
            {
                close(
                    &pool[key],
                    f[3 + i].parse().unwrap(),
                    &format!("{key} of {line}"),
                );
            }
            rows += 1;
        }
        assert_eq!(rows, 18);
        // The tests that enter the pools: the reported effect with its standard error (as
        // reported, or from the symmetric interval) beside the full records' delta method.
        let mut tests = 0;
        for line in TESTS.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let test = lever(f[0])["tests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["id"] == f[1])
                .unwrap_or_else(|| panic!("{} is not pooled", f[1]))
                .clone();
            close(&test["effect"], f[2].parse().unwrap(), line);
            close(&test["se"], f[3].parse().unwrap(), line);
            assert_eq!(
                test["summary_only"] == true,
                f[1].starts_with("sheet-"),
                "{test}"
            );
            tests += 1;
        }
        assert_eq!(tests, 10);
        // Not pooled: a p-value without an interval (no standard error), a running test, a
        // non-commercial KPI.
        let pooled: Vec<&Value> = levers["levers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["tests"].as_array().unwrap())
            .map(|t| &t["id"])
            .collect();
        for id in ["sheet-04", "sheet-06", "sheet-07"] {
            assert!(!pooled.contains(&&json!(id)), "{id} is pooled");
        }
    });
}

#[test]
fn a_run_uses_summary_only_records_as_reported_evidence() {
    let hypod = Hypod::new();
    let config = hypod.path().join("hypod.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    // The fixture has 12 decided experiments; the default bar is 20.
    text.push_str("[analysis]\nmin_decided_experiments = 5\n");
    std::fs::write(&config, text).unwrap();
    hypod.ok(&["import", HISTORY]);
    let run = hypod.ok(&["run", "--json"]).json();
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    let drafts = run["run"]["summary"]["drafts"].as_u64().unwrap();
    assert!(drafts > 0, "{run}");

    let mut reported_evidence = 0;
    let mut citing = None;
    let ids: Vec<String> = run["proposals"]
        .as_array()
        .expect("the run's proposals")
        .iter()
        .map(|p| p["id"].as_str().expect("an id").to_string())
        .collect();
    assert!(!ids.is_empty(), "no proposal stored: {run}");
    for id in ids {
        let shown = hypod.ok(&["queue", "show", &id, "--json"]).json();
        for item in shown["evidence"].as_array().unwrap() {
            let from_summary = item["experiment_id"]
                .as_str()
                .is_some_and(|e| e.starts_with("sheet-"));
            assert_eq!(
                item["finding"].as_str().unwrap().contains(": reported "),
                from_summary,
                "{item}"
            );
            if from_summary {
                assert_eq!(item["statistics"]["summary_only"], true);
                reported_evidence += 1;
                citing = Some(id.clone());
            }
        }
    }
    assert!(
        reported_evidence > 0,
        "no proposal cites a summary-only record"
    );

    // The proposal's page marks the reported figures as such.
    let citing = citing.expect("a proposal citing a summary");
    let cookie = format!("hypod_token={}", hypod.token("vera", "viewer"));
    let app = TestApp::spawn(&hypod);
    let page = request(
        &app.addr,
        "GET",
        &format!("/ui/proposals/{citing}"),
        &[("Cookie", cookie.as_str())],
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("reported (summary-only)"),
        "{}",
        page.body
    );
    drop(app);

    // The model's prompt shows them under `reported`, never as hypod's statistics.
    let prompt = hypod.ok(&["prompt", "render"]).stdout;
    let line = prompt
        .lines()
        .find(|l| l.contains("\"id\":\"sheet-01\""))
        .expect("sheet-01 in the prompt's evidence");
    assert!(
        line.contains(r#""reported":{"lift":0.042,"ci":[0.006,0.078],"p":0.022}"#),
        "{line}"
    );
    assert_eq!(
        line.matches("\"lift\"").count(),
        1,
        "only the reported lift: {line}"
    );
    assert!(!line.contains("\"power\""), "{line}");
    let full = prompt
        .lines()
        .find(|l| l.contains("\"id\":\"full-01\""))
        .expect("full-01 in the prompt's evidence");
    assert!(!full.contains("reported"), "{full}");
}

/// A summary-only record with `summary` replaced, and `variant` merged into the treatment.
fn record(summary: Value, treatment_extra: Value) -> String {
    let mut treatment = json!({"name": "treatment", "control": false, "visitors": 9000});
    for (k, v) in treatment_extra.as_object().unwrap() {
        treatment[k] = v.clone();
    }
    json!({
        "id": "bad-1", "name": "Reported elsewhere", "moment": "search",
        "primary_kpi": "conversion_rate", "status": "concluded", "summary": summary,
        "variants": [{"name": "control", "control": true, "visitors": 9000}, treatment]
    })
    .to_string()
}

fn good() -> Value {
    json!({"metric": "conversion_rate", "relative_lift": 0.04, "ci_low": 0.01, "ci_high": 0.07, "p_value": 0.01})
}

fn with(changes: Value) -> Value {
    let mut summary = good();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            summary.as_object_mut().unwrap().remove(k);
        } else {
            summary[k] = v.clone();
        }
    }
    summary
}

#[test]
fn invalid_summaries_are_refused_naming_the_field_and_nothing_is_written() {
    let none = json!({});
    let cases: Vec<(String, &str, &str)> = vec![
        (
            record(good(), json!({"conversions": 400})),
            "variants[1].conversions",
            "carries visitors per arm and no sums",
        ),
        (
            record(good(), json!({"revenue": 10.0})),
            "variants[1].revenue",
            "carries visitors per arm and no sums",
        ),
        (
            record(with(json!({"effect": 0.04})), none.clone()),
            "summary.effect",
            "not both",
        ),
        (
            record(with(json!({"relative_lift": null})), none.clone()),
            "summary.relative_lift",
            "missing",
        ),
        (
            record(with(json!({"ci_high": null})), none.clone()),
            "summary.ci_high",
            "given together",
        ),
        (
            record(
                with(json!({"ci_low": null, "ci_high": null, "p_value": null})),
                none.clone(),
            ),
            "summary.ci_low",
            "or its `p_value`",
        ),
        (
            record(with(json!({"ci_high": 0.09})), none.clone()),
            "summary.ci_high",
            "is not symmetric around 0.04 (0.03 below, 0.05 above)",
        ),
        (
            record(
                with(json!({"relative_lift": 0.2, "ci_low": 0.0, "ci_high": 0.1})),
                none.clone(),
            ),
            "summary.relative_lift",
            "lies outside its interval [0, 0.1]",
        ),
        (
            record(with(json!({"ci_low": 0.07, "ci_high": 0.01})), none.clone()),
            "summary.ci_high",
            "is not above ci_low",
        ),
        (
            record(with(json!({"p_value": 1.5})), none.clone()),
            "summary.p_value",
            "must be between 0 and 1",
        ),
        (
            record(with(json!({"p_value": "0.01"})), none.clone()),
            "summary.p_value",
            "invalid type",
        ),
        (
            record(
                with(json!({"relative_lift": -1.5, "ci_low": -1.8, "ci_high": -1.2})),
                none.clone(),
            ),
            "summary.relative_lift",
            "below −1",
        ),
        (
            record(
                json!({"metric": "conversion_rate", "effect": 0.02}),
                none.clone(),
            ),
            "summary.standard_error",
            "missing: `effect` needs",
        ),
        (
            record(
                json!({"metric": "conversion_rate", "effect": 0.02, "standard_error": 0.0}),
                none.clone(),
            ),
            "summary.standard_error",
            "must be > 0",
        ),
        (
            record(
                json!({"metric": "conversion_rate", "effect": 0.02, "standard_error": -0.01}),
                none.clone(),
            ),
            "summary.standard_error",
            "must be > 0",
        ),
        (
            record(
                json!({"metric": "conversion_rate", "effect": 0.02, "standard_error": 0.01, "ci_low": 0.0}),
                none.clone(),
            ),
            "summary.ci_low",
            "goes with `relative_lift`",
        ),
        (
            record(with(json!({"standard_error": 0.01})), none.clone()),
            "summary.standard_error",
            "goes with `effect`",
        ),
        (
            record(with(json!({"metric": "revenue_per_visitor"})), none.clone()),
            "summary.metric",
            "the experiment's primary_kpi is \"conversion_rate\"",
        ),
        (
            record(with(json!({"metric": null})), none.clone()),
            "summary",
            "missing field `metric`",
        ),
        (
            record(with(json!({"lift": 0.04})), none.clone()),
            "summary.lift",
            "unknown field `lift`",
        ),
    ];
    on_both_backends(|fresh| {
        let hypod = fresh();
        hypod.ok(&["migrate"]);
        for (line, field, message) in &cases {
            let file = hypod.path().join("h.ndjson");
            std::fs::write(&file, format!("{line}\n")).unwrap();
            let ran = hypod.run(&["import", file.to_str().unwrap()]);
            assert_eq!(ran.code, Some(2), "{line} was accepted: {}", ran.stdout);
            let expected = format!("h.ndjson:1: field `{field}`: ");
            let problem = ran
                .stderr
                .lines()
                .find(|l| l.contains(&expected))
                .unwrap_or_else(|| panic!("{expected} not in {}", ran.stderr));
            assert!(problem.contains(message), "{problem}");
        }
        // A full record without conversions is refused as before (serde's words).
        let full = json!({
            "id": "full-1", "name": "Sums forgotten", "moment": "search",
            "primary_kpi": "conversion_rate", "status": "concluded",
            "variants": [
                {"name": "control", "control": true, "visitors": 9000},
                {"name": "treatment", "control": false, "visitors": 9000}
            ]
        })
        .to_string();
        let file = hypod.path().join("h.ndjson");
        std::fs::write(&file, format!("{full}\n")).unwrap();
        let ran = hypod.run(&["import", file.to_str().unwrap()]);
        assert!(
            ran.stderr
                .contains("h.ndjson:1: field `variants[0]`: missing field `conversions`"),
            "{}",
            ran.stderr
        );
        // Nothing was written by any of them.
        let program = hypod.ok(&["analyze", "--json"]).json()["program"].clone();
        assert_eq!(program["experiments"], 0, "{program}");
    });
}

#[test]
fn invalid_summaries_in_csv_name_the_line_and_the_column_or_field() {
    let header = "id,name,moment,primary_kpi,status,summary_metric,summary_relative_lift,summary_ci_low,summary_ci_high,summary_p_value,variant,control,visitors";
    let row = |variant: &str, control: bool, ci_high: &str, p: &str| {
        format!("c1,A,search,conversion_rate,concluded,conversion_rate,0.04,0.01,{ci_high},{p},{variant},{control},9000")
    };
    let cases = [
        (
            vec![
                row("control", true, "x", "0.01"),
                row("t", false, "x", "0.01"),
            ],
            "h.csv:2: field `summary_ci_high`: expected a number, found \"x\"",
        ),
        (
            vec![
                row("control", true, "0.09", "0.01"),
                row("t", false, "0.09", "0.01"),
            ],
            "h.csv:2: field `summary.ci_high`: the interval [0.01, 0.09] is not symmetric",
        ),
        (
            vec![
                row("control", true, "0.07", "0.01"),
                row("t", false, "0.07", "0.02"),
            ],
            "h.csv:3: field `summary_p_value`: differs from the experiment's first row (line 2)",
        ),
    ];
    let hypod = Hypod::new();
    for (rows, expected) in cases {
        let file = hypod.path().join("h.csv");
        std::fs::write(&file, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
        let ran = hypod.run(&["import", file.to_str().unwrap()]);
        assert_eq!(ran.code, Some(2), "{rows:?} accepted");
        assert!(ran.stderr.contains(expected), "{expected}\n{}", ran.stderr);
    }
    // Sums beside a summary are refused in CSV too; a file of summaries needs no
    // `conversions` column, a file of sums still does.
    let file = hypod.path().join("h.csv");
    std::fs::write(
        &file,
        format!(
            "{header},conversions\n{},400\n{},420\n",
            row("control", true, "0.07", "0.01"),
            row("t", false, "0.07", "0.01")
        ),
    )
    .unwrap();
    let ran = hypod.run(&["import", file.to_str().unwrap()]);
    assert!(
        ran.stderr
            .contains("h.csv:2: field `variants[0].conversions`: a summary-only record"),
        "{}",
        ran.stderr
    );
    std::fs::write(
        &file,
        "id,name,moment,primary_kpi,status,variant,control,visitors\nc1,A,search,conversion_rate,concluded,control,true,9000\n",
    )
    .unwrap();
    let ran = hypod.run(&["import", file.to_str().unwrap()]);
    assert!(
        ran.stderr
            .contains("h.csv:1: field `conversions`: required column is missing"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        hypod.ok(&["analyze", "--json"]).json()["program"]["experiments"],
        0
    );
    std::fs::write(
        &file,
        format!(
            "{header}\n{}\n{}\n",
            row("control", true, "0.07", "0.01"),
            row("t", false, "0.07", "0.01")
        ),
    )
    .unwrap();
    hypod.ok(&["import", file.to_str().unwrap()]);
    let analysis = hypod.ok(&["analyze", "--json"]).json();
    assert_eq!(experiment(&analysis, "c1")["summary_only"], true);
}
