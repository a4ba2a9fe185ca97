//! The GrowthBook source (`hypod::sources::growthbook::pull`) against the fake GrowthBook of
//! `tests/fake_growthbook`: the sample history served in GrowthBook's shapes and pulled back
//! equal to the file, paging, the incremental second pull (list requests only, counted), the
//! rate limit waited out, 5xx retried and bounded, a refused key, the mapping's refusals, and
//! the request counts of a 10 000-experiment pull (the benchmark's figures).

use crate::backends::{on_every_backend, TestDb};
use crate::fake_growthbook::{
    draft, gb_id, sample, sample_served, to_growthbook, FakeGrowthbook, FieldStyle, RetryAfter,
    Route, Served, CONVERSIONS, ORDERS, PROJECT, REVENUE,
};
use crate::support::Hypod;
use hypod::history::import::experiment_from_value;
use hypod::sources::growthbook;
use hypod::sources::{GrowthbookMetrics, GrowthbookSource, Progress, Pull, Silent, SourceError};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "gbk_secret_4f2a9c0e71d3b8a6";
const NAME: &str = "growthbook";

fn settings(fake: &FakeGrowthbook) -> GrowthbookSource {
    GrowthbookSource {
        url: fake.url(),
        api_key_env: "GROWTHBOOK_API_KEY".into(),
        project: None,
        metrics: GrowthbookMetrics {
            conversions: CONVERSIONS.into(),
            revenue: REVENUE.into(),
            orders: Some(ORDERS.into()),
        },
        // Fast in tests; the default (60) paces a real pull to GrowthBook's limit.
        requests_per_minute: Some(600_000),
    }
}

async fn pull(fake: &FakeGrowthbook, previous: Option<&Value>) -> Result<Pull, SourceError> {
    growthbook::pull(NAME, &settings(fake), KEY, previous, &Silent).await
}

/// Progress calls, recorded.
#[derive(Default)]
struct Recorded(Mutex<Vec<(u64, Option<u64>, String)>>);

impl Progress for Recorded {
    fn update(&self, done: u64, total: Option<u64>, what: &str) {
        self.0.lock().unwrap().push((done, total, what.to_string()));
    }
}

fn close(a: f64, b: f64, relative: f64) -> bool {
    (a - b).abs() <= relative * a.abs().max(b.abs()).max(1e-300)
}

/// Every record validates as `hypod import` validates a line and equals the sample file's
/// experiment field by field: `external_id` is GrowthBook's id, `allocation` GrowthBook's
/// fractions (the same proportions), `revenue_sq` recovered from `stddev` to 1e-9 relative.
fn assert_equals_sample(pull: &Pull, gb_ids: &[String]) {
    let sample = sample();
    assert_eq!(
        pull.records.len(),
        sample.len(),
        "one record per experiment"
    );
    for ((record, line), gb_id) in pull.records.iter().zip(&sample).zip(gb_ids) {
        let got = experiment_from_value(record.value.clone())
            .unwrap_or_else(|e| panic!("{}: does not validate: {e:?}", record.origin));
        let mut expected = experiment_from_value(line.clone()).expect("a sample experiment");
        assert_eq!(got.id, expected.id, "{}", record.origin);
        assert_eq!(got.external_id.as_deref(), Some(gb_id.as_str()));
        assert!(record.origin.contains(gb_id.as_str()), "{}", record.origin);
        expected.external_id = got.external_id.clone();
        let proportions = |weights: &Option<Vec<f64>>| {
            let weights = weights.clone().expect("an allocation");
            let sum: f64 = weights.iter().sum();
            weights.iter().map(|w| w / sum).collect::<Vec<_>>()
        };
        for (g, e) in proportions(&got.allocation)
            .iter()
            .zip(proportions(&expected.allocation))
        {
            assert!(close(*g, e, 1e-12), "{}: allocation", record.origin);
        }
        expected.allocation = got.allocation.clone();
        for (g, e) in got.variants.iter().zip(expected.variants.iter_mut()) {
            let (g_sq, e_sq) = (g.revenue_sq.unwrap(), e.revenue_sq.unwrap());
            assert!(
                close(g_sq, e_sq, 1e-9),
                "{}: revenue_sq {g_sq} vs {e_sq}",
                record.origin
            );
            e.revenue_sq = g.revenue_sq;
        }
        assert_eq!(got, expected, "{}", record.origin);
    }
}

fn sample_ids() -> Vec<String> {
    (0..sample().len()).map(gb_id).collect()
}

#[tokio::test]
async fn the_sample_history_pulled_back_equals_the_file() {
    // Custom fields as JSON values, as strings holding JSON, and as `key:value` tags, in turn.
    let fake = FakeGrowthbook::start(KEY, sample_served(FieldStyle::Mixed)).await;
    // Two experiments the bulk route leaves out: read one by one.
    fake.bulk_lacks(&["exp_00007", "exp_00200"]);
    let progress = Recorded::default();
    let pulled = growthbook::pull(NAME, &settings(&fake), KEY, None, &progress)
        .await
        .expect("the pull");
    assert_equals_sample(&pulled, &sample_ids());
    assert!(pulled.unchanged.is_empty());
    // 246 experiments: 3 list pages, 3 bulk pages, 2 single results.
    assert_eq!(fake.count(Route::List), 3);
    assert_eq!(fake.count(Route::Bulk), 3);
    assert_eq!(fake.count(Route::One), 2);
    assert_eq!(pulled.requests, fake.total());
    let calls = progress.0.lock().unwrap().clone();
    let listed: Vec<_> = calls.iter().filter(|c| c.2 == "experiments").collect();
    assert_eq!(
        listed.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![100, 200, 246]
    );
    assert!(listed.iter().all(|c| c.1 == Some(246)));
}

#[tokio::test]
async fn custom_fields_as_strings_holding_json_are_read() {
    let served = sample_served(FieldStyle::JsonStrings);
    assert_eq!(
        served[0].experiment["customFields"]["signals"],
        json!("[\"browsing_history\"]")
    );
    assert_eq!(
        served[0].experiment["customFields"]["moment"],
        json!("\"search\"")
    );
    let fake = FakeGrowthbook::start(KEY, served).await;
    let pulled = pull(&fake, None).await.expect("the pull");
    assert_equals_sample(&pulled, &sample_ids());
}

#[tokio::test]
async fn tags_written_key_value_are_read() {
    let served = sample_served(FieldStyle::Tags);
    assert!(served[0].experiment["customFields"]
        .as_object()
        .unwrap()
        .is_empty());
    let fake = FakeGrowthbook::start(KEY, served).await;
    let pulled = pull(&fake, None).await.expect("the pull");
    assert_equals_sample(&pulled, &sample_ids());
}

#[tokio::test]
async fn paging_follows_next_offset_over_many_pages_within_the_project() {
    let mut served = sample_served(FieldStyle::Custom);
    // An experiment of another project, which the projectId filter leaves out.
    let mut other = to_growthbook(900, &sample()[0], FieldStyle::Custom);
    other.experiment["project"] = json!("prj_other");
    other.experiment["trackingKey"] = json!("other-project-1");
    served.insert(10, other);
    let fake = FakeGrowthbook::start(KEY, served).await;
    // GrowthBook pages at most 100; this one at most 25 whatever `limit` asks.
    fake.page_cap(25);
    let mut source = settings(&fake);
    source.project = Some(PROJECT.into());
    let pulled = growthbook::pull(NAME, &source, KEY, None, &Silent)
        .await
        .expect("the pull");
    assert_equals_sample(&pulled, &sample_ids());
    assert_eq!(
        fake.count(Route::List),
        10,
        "246 experiments in pages of 25"
    );
    let list_queries: Vec<String> = fake
        .queries()
        .into_iter()
        .filter(|(route, _)| *route == Route::List)
        .map(|(_, query)| query)
        .collect();
    for (page, query) in list_queries.iter().enumerate() {
        assert!(query.contains("limit=100"), "{query}");
        assert!(query.contains(&format!("offset={}", page * 25)), "{query}");
        assert!(query.contains("projectId=prj_shop"), "{query}");
    }
}

#[tokio::test]
async fn a_server_that_always_says_has_more_cannot_keep_a_pull_paging() {
    let fake = FakeGrowthbook::start(KEY, sample_served(FieldStyle::Custom)).await;
    fake.endless_paging();
    let pulled = pull(&fake, None).await.expect("the pull ends");
    assert_equals_sample(&pulled, &sample_ids());
    assert_eq!(fake.count(Route::List), 3, "paging stops at `total`");
    assert_eq!(fake.count(Route::Bulk), 3);
}

#[tokio::test]
async fn a_second_pull_without_change_makes_only_list_requests() {
    let fake = FakeGrowthbook::start(KEY, sample_served(FieldStyle::Mixed)).await;
    let first = pull(&fake, None).await.expect("the first pull");
    assert_eq!(first.records.len(), 246);

    fake.reset_counts();
    let second = pull(&fake, Some(&first.state)).await.expect("the second");
    assert!(second.records.is_empty(), "nothing changed");
    let ids: Vec<String> = sample()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(second.unchanged, ids);
    assert_eq!(fake.count(Route::List), 3);
    assert_eq!(fake.count(Route::Bulk), 0, "no results asked for");
    assert_eq!(fake.count(Route::One), 0, "no results asked for");
    assert_eq!(second.requests, 3);

    // One experiment concludes (GrowthBook bumps its dateUpdated): only it is read again, with
    // one request (cheaper than the bulk route's 3 pages).
    fake.update("exp_00245", |served| {
        served.experiment["status"] = json!("stopped");
        served.experiment["phases"][1]["dateEnded"] = json!("2026-11-20T00:00:00.000Z");
        served.experiment["resultSummary"] = json!({"status": "won", "winner": "var_245_1",
            "conclusions": "", "releasedVariationId": "var_245_1", "excludeFromPayload": false});
        let treatment = &mut served.results.as_mut().unwrap()["results"][1]["metrics"][0]
            ["variations"][1]["analyses"][0]["numerator"];
        *treatment = json!(treatment.as_f64().unwrap() + 3.0);
    });
    fake.reset_counts();
    let third = pull(&fake, Some(&second.state)).await.expect("the third");
    assert_eq!(third.records.len(), 1);
    let record = &third.records[0].value;
    assert_eq!(record["id"], "exp-2026-0246");
    assert_eq!(record["status"], "concluded");
    assert_eq!(record["decision"], "ship");
    assert_eq!(record["ended_at"], "2026-11-20");
    let sample_conversions = sample()[245]["variants"][1]["conversions"]
        .as_u64()
        .unwrap();
    assert_eq!(record["variants"][1]["conversions"], sample_conversions + 3);
    assert_eq!(third.unchanged.len(), 245);
    assert!(!third.unchanged.contains(&"exp-2026-0246".to_string()));
    assert_eq!(
        (
            fake.count(Route::List),
            fake.count(Route::Bulk),
            fake.count(Route::One)
        ),
        (3, 0, 1)
    );

    // Other metric ids shape other records: the state of the old ones is not reused.
    fake.reset_counts();
    let mut source = settings(&fake);
    source.metrics.orders = None;
    let fourth = growthbook::pull(NAME, &source, KEY, Some(&third.state), &Silent)
        .await
        .expect("the fourth");
    assert_eq!(fourth.records.len(), 246);
    assert!(fourth.records[0].value["variants"][0]
        .get("orders")
        .is_none());
}

#[tokio::test]
async fn a_burst_past_the_rate_limit_waits_for_retry_after_and_completes() {
    let fake = FakeGrowthbook::start(KEY, sample_served(FieldStyle::Custom)).await;
    // Two requests per 4 s window: a loaded CI machine still sends a third inside it.
    fake.rate_limit(2, Duration::from_secs(4), RetryAfter::Seconds);
    let pulled = pull(&fake, None)
        .await
        .expect("a rate limit never fails a pull");
    assert_equals_sample(&pulled, &sample_ids());
    assert!(fake.rate_limited() >= 1, "the burst went past the limit");
    assert_eq!(fake.too_early(), 0, "no request before Retry-After");
    assert_eq!(pulled.requests, fake.total());
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_waited_out() {
    let fake = FakeGrowthbook::start(KEY, sample_served(FieldStyle::Custom)).await;
    fake.rate_limit(2, Duration::from_secs(4), RetryAfter::HttpDate);
    let pulled = pull(&fake, None)
        .await
        .expect("a rate limit never fails a pull");
    assert_eq!(pulled.records.len(), 246);
    assert!(fake.rate_limited() >= 1);
    assert_eq!(
        fake.too_early(),
        0,
        "no request before the date Retry-After gave"
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_the_pull_succeeds() {
    let fake = FakeGrowthbook::start(KEY, sample_served(FieldStyle::Custom)).await;
    fake.fail_next(3);
    let pulled = pull(&fake, None).await.expect("retried past the 503s");
    assert_equals_sample(&pulled, &sample_ids());
    assert_eq!(fake.server_errors(), 3);
    assert_eq!(
        fake.count(Route::List),
        3 + 3,
        "3 pages, the first asked 4 times"
    );
    assert_eq!(pulled.requests, fake.total());
}

#[tokio::test]
async fn persistent_server_errors_fail_as_unreachable_after_bounded_retries() {
    let fake = FakeGrowthbook::start(KEY, sample_served(FieldStyle::Custom)).await;
    fake.fail_always(true);
    let error = pull(&fake, None)
        .await
        .expect_err("the source keeps failing");
    let message = error.to_string();
    assert!(
        matches!(error, SourceError::Unreachable { .. }),
        "{message}"
    );
    assert_eq!(
        fake.count(Route::List),
        5,
        "five attempts, then it gives up"
    );
    assert!(message.starts_with("source growthbook: "), "{message}");
    assert!(message.contains("failed 5 times"), "{message}");
    assert!(message.contains("502"), "{message}");
    assert!(!message.contains(KEY), "{message}");
}

#[tokio::test]
async fn an_unreachable_host_fails_as_unreachable() {
    let fake = FakeGrowthbook::start(KEY, Vec::new()).await;
    let mut source = settings(&fake);
    source.url = format!("http://127.0.0.1:{}", crate::fake_openai::closed_port());
    let error = growthbook::pull(NAME, &source, KEY, None, &Silent)
        .await
        .expect_err("nothing listens");
    let message = error.to_string();
    assert!(
        matches!(error, SourceError::Unreachable { .. }),
        "{message}"
    );
    assert!(message.contains("could not connect"), "{message}");
    assert!(!message.contains(KEY), "{message}");
}

#[tokio::test]
async fn a_refused_key_is_unauthorized_and_never_shown() {
    let fake = FakeGrowthbook::start(KEY, sample_served(FieldStyle::Custom)).await;
    let wrong = "gbk_secret_wrong_9e8d7c6b5a";
    let error = growthbook::pull(NAME, &settings(&fake), wrong, None, &Silent)
        .await
        .expect_err("the key is refused");
    let message = error.to_string();
    assert!(
        matches!(error, SourceError::Unauthorized { .. }),
        "{message}"
    );
    assert!(message.contains("401"), "{message}");
    assert!(message.contains("GROWTHBOOK_API_KEY"), "{message}");
    assert!(!message.contains(wrong), "{message}");
    assert!(!format!("{error:?}").contains(wrong));
    assert_eq!(fake.unauthorized(), 1, "a refused key is not retried");
}

#[tokio::test]
async fn a_missing_required_playbook_field_names_the_experiment_and_the_field() {
    let mut served = sample_served(FieldStyle::Mixed);
    // exp_00003 holds its fields as custom fields (index 3 % 3 == 0): take `moment` away, and
    // write no tag for it either.
    served[3].experiment["customFields"]
        .as_object_mut()
        .unwrap()
        .remove("moment");
    let fake = FakeGrowthbook::start(KEY, served).await;
    let error = pull(&fake, None)
        .await
        .expect_err("a required field is missing");
    let message = error.to_string();
    match &error {
        SourceError::Record { origin, field, .. } => {
            assert_eq!(origin, "GrowthBook experiment exp_00003 (exp-2024-0004)");
            assert_eq!(field, "moment");
        }
        other => panic!("not a record error: {other}"),
    }
    assert!(message.contains("custom field `moment`"), "{message}");
    assert!(message.contains("tag `moment:…`"), "{message}");

    // The same through tags: exp_00005 (index 5 % 3 == 2) loses its `primary_kpi:` tag.
    let mut served = sample_served(FieldStyle::Mixed);
    let tags = served[5].experiment["tags"].as_array_mut().unwrap();
    tags.retain(|t| !t.as_str().unwrap().starts_with("primary_kpi:"));
    let fake = FakeGrowthbook::start(KEY, served).await;
    match pull(&fake, None).await {
        Err(SourceError::Record { origin, field, .. }) => {
            assert!(origin.contains("exp_00005"), "{origin}");
            assert_eq!(field, "primary_kpi");
        }
        other => panic!("expected a record error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_custom_field_of_the_wrong_shape_is_refused_not_guessed() {
    let mut served = sample_served(FieldStyle::Custom);
    served[0].experiment["customFields"]["latency_ms_p75_delta"] = json!("fast");
    let fake = FakeGrowthbook::start(KEY, served).await;
    match pull(&fake, None).await {
        Err(SourceError::Record { field, message, .. }) => {
            assert_eq!(field, "latency_ms_p75_delta");
            assert!(message.contains("not a number"), "{message}");
        }
        other => panic!("expected a record error, got {other:?}"),
    }
}

#[tokio::test]
async fn two_experiments_with_one_tracking_key_are_refused() {
    let mut served = sample_served(FieldStyle::Custom);
    served[9].experiment["trackingKey"] = served[2].experiment["trackingKey"].clone();
    let fake = FakeGrowthbook::start(KEY, served).await;
    match pull(&fake, None).await {
        Err(SourceError::Record {
            origin,
            field,
            message,
            ..
        }) => {
            assert!(origin.contains("exp_00009"), "{origin}");
            assert_eq!(field, "id");
            assert!(message.contains("exp_00002"), "{message}");
        }
        other => panic!("expected a record error, got {other:?}"),
    }
}

#[tokio::test]
async fn drafts_are_skipped_and_never_asked_for_results() {
    let mut served = sample_served(FieldStyle::Mixed);
    // Drafts have no playbook fields, no phase, no results: none of it is history.
    for (at, index) in [(0, 1000), (50, 1001), (248, 1002)] {
        served.insert(at, draft(index));
    }
    let fake = FakeGrowthbook::start(KEY, served).await;
    let pulled = pull(&fake, None).await.expect("drafts are not errors");
    assert_equals_sample(&pulled, &sample_ids());
    assert!(pulled
        .records
        .iter()
        .all(|r| !r.value["id"].as_str().unwrap().starts_with("draft-")));
    assert_eq!(fake.count(Route::One), 0, "no results asked for a draft");
    let state = pulled.state["experiments"].as_object().unwrap();
    assert!(!state.contains_key("exp_01000"));
}

#[tokio::test]
async fn an_experiment_without_results_yet_is_not_history_and_not_asked_again_unchanged() {
    let mut served = sample_served(FieldStyle::Custom);
    served[245].results = None;
    let fake = FakeGrowthbook::start(KEY, served).await;
    let first = pull(&fake, None).await.expect("the pull");
    assert_eq!(first.records.len(), 245);
    assert_eq!(
        fake.count(Route::One),
        1,
        "the bulk route lacked it: asked once"
    );
    fake.reset_counts();
    let second = pull(&fake, Some(&first.state)).await.expect("the second");
    assert!(second.records.is_empty());
    assert_eq!(second.unchanged.len(), 245);
    assert_eq!(fake.total(), fake.count(Route::List));
}

/// The benchmark's figures: the requests of a first pull and a no-change pull of N experiments
/// (2 000 in the test suite; `HYPOD_GB_BENCH_EXPERIMENTS=10000` for the documented figure),
/// counted by the fake, paced fast here: one list and one bulk page per 100 experiments, then
/// the list pages alone. At GrowthBook's 60 requests a minute, where the pace dominates, the
/// wall time is the request count in seconds.
#[tokio::test]
async fn a_first_pull_takes_two_requests_per_hundred_experiments_then_one() {
    let n: usize = std::env::var("HYPOD_GB_BENCH_EXPERIMENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);
    let pages = n.div_ceil(100) as u64;
    let sample = sample();
    let served: Vec<Served> = (0..n)
        .map(|i| {
            let mut record = sample[i % sample.len()].clone();
            record["id"] = json!(format!("bench-{i:05}"));
            let mut served = to_growthbook(i, &record, FieldStyle::Custom);
            // The `All` row only: the counts do not depend on the results' size.
            if let Some(Value::Array(rows)) = served.results.as_mut().map(|r| r["results"].take()) {
                served.results.as_mut().unwrap()["results"] =
                    Value::Array(rows.into_iter().skip(1).collect());
            }
            served
        })
        .collect();
    let fake = FakeGrowthbook::start(KEY, served).await;
    let first = pull(&fake, None).await.expect("the first pull");
    assert_eq!(first.records.len(), n);
    let first_requests = fake.total();
    assert_eq!(
        (
            fake.count(Route::List),
            fake.count(Route::Bulk),
            first_requests
        ),
        (pages, pages, 2 * pages)
    );
    fake.reset_counts();
    let second = pull(&fake, Some(&first.state)).await.expect("the second");
    assert_eq!(second.unchanged.len(), n);
    let second_requests = fake.total();
    assert_eq!(second_requests, pages);
    // At 60 a minute the pace spaces requests 1 s apart: the wall time is the request count
    // in seconds, less one.
    println!(
        "{n} experiments: first pull {first_requests} requests (~{} s at 60/min), no-change pull {second_requests} requests (~{} s at 60/min)",
        first_requests - 1,
        second_requests - 1
    );
}

#[tokio::test]
async fn requests_are_paced_to_the_default_sixty_a_minute() {
    // A GrowthBook that allows one request per half second: paced at one a second (the default
    // 60 a minute), a pull is never told to wait.
    let served: Vec<Served> = sample_served(FieldStyle::Custom)
        .into_iter()
        .take(10)
        .collect();
    let fake = FakeGrowthbook::start(KEY, served).await;
    fake.rate_limit(1, Duration::from_millis(500), RetryAfter::Seconds);
    fake.bulk_lacks(&["exp_00001", "exp_00002"]);
    let mut source = settings(&fake);
    source.requests_per_minute = None;
    let pulled = growthbook::pull(NAME, &source, KEY, None, &Silent)
        .await
        .expect("the pull");
    assert_eq!(pulled.records.len(), 10);
    assert_eq!(
        fake.total(),
        4,
        "a list page, a bulk page, two single results"
    );
    assert_eq!(fake.rate_limited(), 0, "paced below the limit");
}

#[test]
fn external_id_is_optional_bounded_text_in_the_import_format() {
    let mut line = sample()[0].clone();
    line["external_id"] = json!("exp_19g61ikl1m3p5h1s");
    let experiment = experiment_from_value(line.clone()).expect("valid");
    assert_eq!(
        experiment.external_id.as_deref(),
        Some("exp_19g61ikl1m3p5h1s")
    );
    line["external_id"] = json!("x".repeat(129));
    let (field, message) = experiment_from_value(line.clone()).expect_err("too long");
    assert_eq!(field.as_deref(), Some("external_id"), "{message}");
    line["external_id"] = json!(" ");
    let (field, _) = experiment_from_value(line).expect_err("empty");
    assert_eq!(field.as_deref(), Some("external_id"));
}

/// `a` and `b` equal, numbers to `relative` (the sums recovered from `stddev` differ from the
/// file's in the last digits).
pub(crate) fn assert_close(a: &Value, b: &Value, path: &str, relative: f64) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= relative * x.abs().max(y.abs()) + 1e-12,
                "{path}: {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_close(x, y, &format!("{path}[{i}]"), relative);
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(x), keys(y), "{path}: keys");
            for (key, value) in x {
                assert_close(value, &y[key], &format!("{path}.{key}"), relative);
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

/// The sample history served by the fake GrowthBook, pulled, imported through the binary:
/// `analyze --json` equals, value for value, the analysis of the file imported directly.
async fn the_sample_through_growthbook_analyzes_as_the_file(db: Arc<TestDb>) {
    let fake = FakeGrowthbook::start(KEY, sample_served(FieldStyle::Mixed)).await;
    let pulled = pull(&fake, None).await.expect("the pull");
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let hypod = Hypod::with_database(&url);
        let file = hypod.path().join("growthbook.ndjson");
        let lines: Vec<String> = pulled.records.iter().map(|r| r.value.to_string()).collect();
        std::fs::write(&file, lines.join("\n")).expect("write the records");
        hypod.ok(&["import", file.to_str().unwrap()]);
        let got = hypod.ok(&["analyze", "--json"]).json();

        let reference = Hypod::new();
        reference.import_sample();
        let expected = reference.ok(&["analyze", "--json"]).json();
        assert_eq!(got["experiments"].as_array().map(Vec::len), Some(246));
        assert_close(&got, &expected, "$", 1e-9);
    })
    .await
    .expect("the check");
}

on_every_backend!(the_sample_through_growthbook_analyzes_as_the_file);
