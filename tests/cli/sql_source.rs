//! The SQL warehouse source (`sources::sql::pull`) on CI's PostgreSQL, each test in a fresh
//! database (skipped loudly without a server, failed when `CI` is set): the sample history
//! read back from plain tables equals the file, field by field; the example views of
//! examples/warehouse.sql, read through the configuration in docs/sources.md#sql-warehouse, give
//! arm sums equal to sums computed here from the same synthetic raw rows; and every refusal (an unknown
//! column, a wrong or unsupported type, orphan arms, a duplicate id, a query that fails or
//! writes, too many rows, a URL whose password must not show) says where it is.

use crate::backends::{postgres_server, with_database, PgDatabase};
use crate::support::SAMPLE;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use hypod::history::import::experiment_from_value;
use hypod::history::Experiment;
use hypod::sources::sql::pull;
use hypod::sources::{Progress, Pull, SourceError, SqlSource};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sqlx::Connection;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::Mutex;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `check` on a fresh database prepared with `setup`, and drops the database afterwards,
/// also when the check panics. Nothing runs (after a banner) without a PostgreSQL server.
async fn on_fresh_database<F, Fut>(setup: &str, check: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(server) = postgres_server().await else {
        return;
    };
    let db = PgDatabase::create(&server).await;
    execute(&db.url, setup).await;
    let outcome = tokio::spawn(check(db.url.clone())).await;
    db.drop_now().await;
    if let Err(err) = outcome {
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
        panic!("check did not finish: {err}");
    }
}

async fn connect(url: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(url).await.expect("connect")
}

/// Runs statements (several, separated by `;`).
pub(crate) async fn execute(url: &str, sql: &str) {
    if sql.trim().is_empty() {
        return;
    }
    let mut conn = connect(url).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}

async fn count(url: &str, table: &str) -> i64 {
    let mut conn = connect(url).await;
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
        .fetch_one(&mut conn)
        .await
        .expect("count");
    let _ = conn.close().await;
    n
}

/// Remembers the last progress update.
#[derive(Default)]
struct Recorded(Mutex<Option<(u64, Option<u64>, String)>>);

impl Progress for Recorded {
    fn update(&self, done: u64, total: Option<u64>, what: &str) {
        *self.0.lock().expect("progress") = Some((done, total, what.to_string()));
    }
}

fn source(experiments_query: &str, arms_query: &str) -> SqlSource {
    SqlSource {
        url_env: "WAREHOUSE_URL".into(),
        experiments_query: experiments_query.into(),
        arms_query: arms_query.into(),
    }
}

async fn pull_ok(url: &str, source: &SqlSource) -> Pull {
    pull("warehouse", source, url, &hypod::sources::Silent)
        .await
        .unwrap_or_else(|e| panic!("pull: {e}"))
}

async fn pull_err(url: &str, source: &SqlSource) -> SourceError {
    match pull("warehouse", source, url, &hypod::sources::Silent).await {
        Ok(pulled) => panic!("expected an error, read {} records", pulled.records.len()),
        Err(e) => e,
    }
}

fn valid(value: Value, origin: &str) -> Experiment {
    experiment_from_value(value)
        .unwrap_or_else(|(field, message)| panic!("{origin}: field {field:?}: {message}"))
}

pub(crate) const ARM_COLUMNS: &str =
    "experiment_id, name, control, visitors, conversions, orders, revenue, revenue_sq";

// ---------------------------------------------------------------------------------------------
// (a) The sample history through plain tables

/// Plain tables holding the sample history, with a spread of column types: an enum, varchar,
/// text[], numeric[], date, timestamptz, timestamp, float8, numeric, int4, int8, bool.
pub(crate) const SAMPLE_TABLES: &str = "
create type moment as enum
  ('search', 'product_detail', 'cart_checkout', 'post_purchase', 're_engagement', 'other');
create table experiments (
  id text primary key, name varchar(300), hypothesis text, moment moment, lever text,
  segment text, channel text, rendering text, region text, primary_kpi text, signals text[],
  status text, idea_at date, started_at date, ended_at timestamptz, decided_at timestamp,
  decision text, owner text, latency_ms_p75_delta float8, allocation numeric[],
  attributed_revenue numeric, source_proposal text, notes text);
create table arms (
  experiment_id text references experiments, position int, name text, control bool,
  visitors int8, conversions int4, orders numeric, revenue numeric, revenue_sq float8);
";

/// The sample history's lines, parsed.
fn sample_lines() -> Vec<Value> {
    std::fs::read_to_string(SAMPLE)
        .expect("read the sample history")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

pub(crate) async fn load_sample(url: &str) {
    let mut experiments = Vec::new();
    let mut arms = Vec::new();
    for mut line in sample_lines() {
        let object = line.as_object_mut().expect("an object");
        let id = object["id"].clone();
        let Some(Value::Array(variants)) = object.remove("variants") else {
            panic!("variants");
        };
        for (position, mut arm) in variants.into_iter().enumerate() {
            let arm_object = arm.as_object_mut().expect("an arm");
            arm_object.insert("experiment_id".into(), id.clone());
            arm_object.insert("position".into(), Value::from(position));
            arms.push(arm);
        }
        experiments.push(line);
    }
    let mut conn = connect(url).await;
    for (table, rows) in [("experiments", experiments), ("arms", arms)] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "insert into {table} select * from jsonb_populate_recordset(null::{table}, $1)"
        )))
        .bind(Value::Array(rows))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("load {table}: {e}"));
    }
    let _ = conn.close().await;
}

/// Every record `pull` read equals the sample file's experiment with that id, field by field,
/// and every experiment of the file was read.
fn assert_equals_sample(pulled: &Pull) {
    let expected: BTreeMap<String, Experiment> = sample_lines()
        .into_iter()
        .map(|line| {
            let experiment = valid(line, "sample");
            (experiment.id.clone(), experiment)
        })
        .collect();
    assert_eq!(
        pulled.records.len(),
        expected.len(),
        "one record per experiment"
    );
    for record in &pulled.records {
        let got = valid(record.value.clone(), &record.origin);
        let want = expected
            .get(&got.id)
            .unwrap_or_else(|| panic!("{}: not in the sample", record.origin));
        assert_eq!(&got, want, "{}", record.origin);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_history_read_from_tables_equals_the_file_field_by_field() {
    on_fresh_database(SAMPLE_TABLES, |url| async move {
        load_sample(&url).await;
        let source = source(
            "select * from experiments order by id",
            &format!("select {ARM_COLUMNS} from arms order by experiment_id, position"),
        );
        let progress = Recorded::default();
        let pulled = pull("warehouse", &source, &url, &progress)
            .await
            .unwrap_or_else(|e| panic!("pull: {e}"));
        assert_equals_sample(&pulled);
        assert_eq!(
            pulled.records[0].origin, "experiments_query row 1 (id exp-2024-0001)",
            "the origin names the query, the row and the id"
        );
        assert_eq!(pulled.requests, 2, "two queries");
        let arms = count(&url, "arms").await as u64;
        assert_eq!(
            *progress.0.lock().expect("progress"),
            Some((246 + arms, Some(246 + arms), "rows".to_string())),
            "the progress counts every row read"
        );

        // The same history with the lists as `|`-separated text and the dates as text and
        // timestamps reads the same.
        let as_text = source_with_text_lists();
        let pulled = pull_ok(&url, &as_text).await;
        assert_equals_sample(&pulled);
    })
    .await;
}

fn source_with_text_lists() -> SqlSource {
    source(
        "select id, name, hypothesis, moment, lever, segment, channel, rendering, region, \
         primary_kpi, array_to_string(signals, '|') as signals, status, \
         to_char(idea_at, 'YYYY-MM-DD') as idea_at, started_at::timestamp as started_at, \
         ended_at, decided_at, decision, owner, latency_ms_p75_delta, \
         array_to_string(allocation, '|') as allocation, attributed_revenue, notes \
         from experiments order by id",
        &format!("select {ARM_COLUMNS} from arms order by experiment_id, position"),
    )
}

// ---------------------------------------------------------------------------------------------
// (b) The example views over raw exposures and orders

const RAW_TABLES: &str = "
create table exposures (experiment_id text, variation int, user_id text,
  first_exposed_at timestamptz);
create table orders (user_id text, ordered_at timestamptz, revenue numeric(12,2));
create table experiment_meta (experiment_id text primary key, name text, hypothesis text,
  moment text, lever text, segment text, channel text, rendering text, region text,
  primary_kpi text, signals text, status text, idea_at date, started_at date, ended_at date,
  decided_at date, decision text, owner text, variation_names text, allocation text);
insert into experiment_meta values
  ('exp-a', 'Delivery promise on PDP', 'If we promise a date, more will buy.', 'product_detail',
   'delivery_promise', 'all_visitors', 'web', 'edge', 'global', 'conversion_rate',
   'coarse_location|weather', 'concluded', '2025-02-20', '2025-03-01', '2025-03-10',
   '2025-03-14', 'ship', 'growth-pdp', null, '1|1'),
  ('exp-b', 'Search ranking by margin', null, 'search', 'ranking', 'returning', 'web', 'server',
   'eu', 'revenue_per_visitor', null, 'running', null, '2025-03-05', null, null, null, null,
   'control|red|blue', '2|1|1'),
  ('exp-c', 'Not started', null, 'search', 'ranking', 'new', 'web', 'server', 'eu',
   'conversion_rate', null, 'running', null, null, null, null, null, null, null, null);
";

/// The documented configuration of the example views: the ```toml block of a page in docs/
/// (docs/sources.md#sql-warehouse, or wherever the page is) that reads `hypod_arms`, as the SQL
/// source's settings.
fn documented_source() -> SqlSource {
    let docs = Path::new(ROOT).join("docs");
    let mut pages: Vec<_> = std::fs::read_dir(&docs)
        .expect("docs/")
        .map(|entry| entry.expect("a docs entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    let mut found = Vec::new();
    for path in pages {
        let page = std::fs::read_to_string(&path).expect("read a page");
        let mut rest = page.as_str();
        while let Some(start) = rest.find("```toml\n") {
            let body = &rest[start + "```toml\n".len()..];
            let end = body.find("```").expect("the block's end");
            if body[..end].contains("from hypod_arms") {
                found.push((path.display().to_string(), body[..end].to_string()));
            }
            rest = &body[end..];
        }
    }
    assert_eq!(
        found.len(),
        1,
        "one documented configuration reads hypod_arms: {found:?}"
    );
    let (page, block) = &found[0];
    let config: toml::Value = toml::from_str(block).unwrap_or_else(|e| panic!("{page}: {e}"));
    let sources = config["source"].as_array().expect("[[source]]");
    let table = sources
        .iter()
        .find(|s| s["kind"].as_str() == Some("sql"))
        .expect("a kind = \"sql\" source");
    // The kind's own settings: what the configuration hands to the source.
    let mut settings = table.as_table().expect("a table").clone();
    for common in ["name", "kind", "on_failure"] {
        settings.remove(common);
    }
    toml::Value::Table(settings)
        .try_into()
        .expect("a SQL source's settings")
}

/// One synthetic user's raw rows.
struct Exposure {
    experiment: &'static str,
    variation: i32,
    user: String,
    at: DateTime<Utc>,
}

struct Order {
    user: String,
    at: DateTime<Utc>,
    cents: i64,
}

/// Per arm: visitors, conversions, orders, revenue (cents), revenue² (cents²).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct ArmSums {
    visitors: u64,
    conversions: u64,
    orders: u64,
    cents: i64,
    cents_sq: i128,
}

fn day(text: &str) -> DateTime<Utc> {
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("a date");
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight"))
}

/// A few thousand exposures over two experiments, with the awkward cases: users exposed twice
/// (the first exposure counts), orders before the exposure and after the end (not counted),
/// several orders per user, users who never buy, buyers never exposed.
fn synthetic_rows() -> (Vec<Exposure>, Vec<Order>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(24);
    let mut exposures = Vec::new();
    let mut orders = Vec::new();
    // (experiment, arms, start, end of the window: the day after ended_at, or open)
    let experiments = [
        ("exp-a", 2, day("2025-03-01"), Some(day("2025-03-11"))),
        ("exp-b", 3, day("2025-03-05"), None),
    ];
    for user in 0..2_500 {
        let user_id = format!("u{user:05}");
        for (experiment, arms, start, _) in experiments {
            if rng.random_range(0..10) < 2 {
                continue;
            }
            let at = start + Duration::minutes(rng.random_range(0..60 * 24 * 9));
            let variation = rng.random_range(0..arms);
            exposures.push(Exposure {
                experiment,
                variation,
                user: user_id.clone(),
                at,
            });
            if rng.random_range(0..20) == 0 {
                // Seen again later, in another arm: the first exposure counts.
                exposures.push(Exposure {
                    experiment,
                    variation: (variation + 1) % arms,
                    user: user_id.clone(),
                    at: at + Duration::hours(rng.random_range(1..48)),
                });
            }
        }
        for _ in 0..rng.random_range(0..4) {
            if rng.random_range(0..3) == 0 {
                continue;
            }
            orders.push(Order {
                user: user_id.clone(),
                at: day("2025-02-25") + Duration::minutes(rng.random_range(0..60 * 24 * 30)),
                cents: rng.random_range(100..50_000),
            });
        }
    }
    (exposures, orders)
}

/// The arm sums computed here, independently of the views.
fn expected_sums(exposures: &[Exposure], orders: &[Order]) -> BTreeMap<(String, i32), ArmSums> {
    let ends: HashMap<&str, Option<DateTime<Utc>>> =
        [("exp-a", Some(day("2025-03-11"))), ("exp-b", None)]
            .into_iter()
            .collect();
    let mut first: BTreeMap<(&str, &str), (DateTime<Utc>, i32)> = BTreeMap::new();
    for e in exposures {
        let entry = first
            .entry((e.experiment, &e.user))
            .or_insert((e.at, e.variation));
        if (e.at, e.variation) < *entry {
            *entry = (e.at, e.variation);
        }
    }
    let mut sums: BTreeMap<(String, i32), ArmSums> = BTreeMap::new();
    for ((experiment, user), (at, variation)) in first {
        let end = ends[experiment];
        let mine: Vec<&Order> = orders
            .iter()
            .filter(|o| o.user == user && o.at >= at && end.is_none_or(|end| o.at < end))
            .collect();
        let cents: i64 = mine.iter().map(|o| o.cents).sum();
        let arm = sums.entry((experiment.to_string(), variation)).or_default();
        arm.visitors += 1;
        arm.conversions += u64::from(!mine.is_empty());
        arm.orders += mine.len() as u64;
        arm.cents += cents;
        arm.cents_sq += i128::from(cents) * i128::from(cents);
    }
    sums
}

async fn load_raw(url: &str, exposures: &[Exposure], orders: &[Order]) {
    let mut conn = connect(url).await;
    sqlx::query(
        "insert into exposures select * from unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[])",
    )
    .bind(exposures.iter().map(|e| e.experiment.to_string()).collect::<Vec<_>>())
    .bind(exposures.iter().map(|e| e.variation).collect::<Vec<_>>())
    .bind(exposures.iter().map(|e| e.user.clone()).collect::<Vec<_>>())
    .bind(exposures.iter().map(|e| e.at).collect::<Vec<_>>())
    .execute(&mut conn)
    .await
    .expect("load exposures");
    sqlx::query(
        "insert into orders select u, t, c::numeric(12,2) / 100 from unnest($1::text[], $2::timestamptz[], $3::int8[]) as r(u, t, c)",
    )
    .bind(orders.iter().map(|o| o.user.clone()).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.at).collect::<Vec<_>>())
    .bind(orders.iter().map(|o| o.cents).collect::<Vec<_>>())
    .execute(&mut conn)
    .await
    .expect("load orders");
    let _ = conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_views_sum_raw_exposures_into_the_arms_computed_independently() {
    let views = std::fs::read_to_string(Path::new(ROOT).join("examples/warehouse.sql"))
        .expect("read examples/warehouse.sql");
    on_fresh_database(&format!("{RAW_TABLES}\n{views}"), |url| async move {
        let (exposures, orders) = synthetic_rows();
        assert!(exposures.len() > 3_000, "a few thousand exposures");
        load_raw(&url, &exposures, &orders).await;
        let expected = expected_sums(&exposures, &orders);

        let pulled = pull_ok(&url, &documented_source()).await;
        let ids: Vec<&str> = pulled
            .records
            .iter()
            .map(|r| r.value["id"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(ids, ["exp-a", "exp-b"], "exp-c has no exposures");

        let names: HashMap<(&str, i32), &str> = [
            (("exp-a", 0), "control"),
            (("exp-a", 1), "variation_1"),
            (("exp-b", 0), "control"),
            (("exp-b", 1), "red"),
            (("exp-b", 2), "blue"),
        ]
        .into_iter()
        .collect();
        let mut seen = 0;
        for record in &pulled.records {
            let experiment = valid(record.value.clone(), &record.origin);
            for (variation, arm) in experiment.variants.iter().enumerate() {
                let key = (experiment.id.clone(), variation as i32);
                let want = expected
                    .get(&key)
                    .unwrap_or_else(|| panic!("{key:?}: no expected sums"));
                let at = format!("{} arm {variation}", experiment.id);
                assert_eq!(
                    arm.name,
                    names[&(experiment.id.as_str(), variation as i32)],
                    "{at}"
                );
                assert_eq!(arm.control, variation == 0, "{at}");
                assert_eq!(arm.visitors, want.visitors, "{at}: visitors");
                assert_eq!(arm.conversions, Some(want.conversions), "{at}: conversions");
                assert_eq!(arm.orders, Some(want.orders), "{at}: orders");
                assert_eq!(
                    arm.revenue,
                    Some(want.cents as f64 / 100.0),
                    "{at}: revenue"
                );
                assert_eq!(
                    arm.revenue_sq,
                    Some(want.cents_sq as f64 / 10_000.0),
                    "{at}: revenue_sq"
                );
                seen += 1;
            }
        }
        assert_eq!(seen, expected.len(), "every arm with exposures was read");
        assert!(
            expected
                .values()
                .all(|a| a.orders > a.conversions && a.conversions > 0),
            "the data has repeat buyers in every arm"
        );

        let a = valid(pulled.records[0].value.clone(), "exp-a");
        assert_eq!(a.signals, ["coarse_location", "weather"]);
        assert_eq!(a.allocation, Some(vec![1.0, 1.0]));
        assert_eq!(a.ended_at, NaiveDate::from_ymd_opt(2025, 3, 10));
        let b = valid(pulled.records[1].value.clone(), "exp-b");
        assert_eq!(b.allocation, Some(vec![2.0, 1.0, 1.0]));
        assert!(b.is_running() && b.ended_at.is_none() && b.hypothesis.is_none());
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// (c) What the source refuses, and where it says the problem is

const SMALL_TABLES: &str = "
create table experiments (id text, name text, moment text, primary_kpi text, status text);
insert into experiments values
  ('exp-1', 'One', 'search', 'conversion_rate', 'concluded'),
  ('exp-2', 'Two', 'search', 'conversion_rate', 'running');
create table arms (experiment_id text, name text, control bool, visitors int8,
  conversions int8);
insert into arms values
  ('exp-1', 'control', true, 100, 10), ('exp-1', 'treatment', false, 100, 12),
  ('exp-2', 'control', true, 50, 5), ('exp-2', 'treatment', false, 50, 6);
";

const ARMS: &str = "select * from arms order by experiment_id, name";

/// The record error's origin, field and message (and its whole text, which names the source).
fn record_error(err: SourceError) -> (String, String, String, String) {
    let text = err.to_string();
    match err {
        SourceError::Record {
            source_name,
            origin,
            field,
            message,
        } => {
            assert_eq!(source_name, "warehouse");
            (origin, field, message, text)
        }
        other => panic!("expected a record error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_small_tables_read_as_two_valid_experiments() {
    on_fresh_database(SMALL_TABLES, |url| async move {
        let pulled = pull_ok(&url, &source("select * from experiments order by id", ARMS)).await;
        assert_eq!(pulled.records.len(), 2);
        for record in &pulled.records {
            valid(record.value.clone(), &record.origin);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_the_import_format_does_not_know_is_named_with_its_query_and_row() {
    on_fresh_database(SMALL_TABLES, |url| async move {
        let err = pull_err(
            &url,
            &source(
                "select *, 'blue' as colour from experiments order by id",
                ARMS,
            ),
        )
        .await;
        let (origin, field, message, text) = record_error(err);
        assert_eq!(origin, "experiments_query row 1");
        assert_eq!(field, "colour");
        assert!(message.contains("does not know"), "{message}");
        assert!(
            text.starts_with("source warehouse: experiments_query row 1: field `colour`"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_of_the_wrong_type_is_named_with_its_type() {
    on_fresh_database(SMALL_TABLES, |url| async move {
        let experiments = "select * from experiments order by id";
        let err = pull_err(
            &url,
            &source(
                experiments,
                "select experiment_id, name, control, visitors::text as visitors, conversions \
                 from arms order by experiment_id, name",
            ),
        )
        .await;
        let (origin, field, message, _) = record_error(err);
        assert_eq!(
            (origin.as_str(), field.as_str()),
            ("arms_query row 1", "visitors")
        );
        assert!(
            message.contains("TEXT") && message.contains("whole number"),
            "{message}"
        );

        // A type hypod does not read at all: cast it.
        let err = pull_err(
            &url,
            &source(
                "select *, gen_random_uuid() as notes from experiments order by id",
                ARMS,
            ),
        )
        .await;
        let (origin, field, message, _) = record_error(err);
        assert_eq!(
            (origin.as_str(), field.as_str()),
            ("experiments_query row 1", "notes")
        );
        assert!(message.contains("UUID is not supported"), "{message}");

        // A number that is not whole, where the import format counts.
        let err = pull_err(
            &url,
            &source(
                experiments,
                "select experiment_id, name, control, visitors / 3.0 as visitors, conversions \
                 from arms order by experiment_id, name",
            ),
        )
        .await;
        let (origin, field, message, _) = record_error(err);
        assert_eq!(
            (origin.as_str(), field.as_str()),
            ("arms_query row 1 (experiment exp-1)", "visitors")
        );
        assert!(message.contains("not a whole number"), "{message}");

        // A column twice.
        let err = pull_err(
            &url,
            &source("select *, name from experiments order by id", ARMS),
        )
        .await;
        let (_, field, message, _) = record_error(err);
        assert_eq!(field, "name");
        assert!(message.contains("twice"), "{message}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arms_whose_experiment_is_not_read_are_refused_naming_the_experiment() {
    on_fresh_database(SMALL_TABLES, |url| async move {
        let err = pull_err(
            &url,
            &source(
                "select * from experiments order by id",
                "select * from (select * from arms union all \
                 select 'exp-9', 'control', true, 1, 0) a order by experiment_id, name",
            ),
        )
        .await;
        let (origin, field, message, _) = record_error(err);
        assert_eq!(origin, "arms_query row 5 (experiment exp-9)");
        assert_eq!(field, "experiment_id");
        assert!(
            message.contains("experiment exp-9 is not among"),
            "{message}"
        );

        // An experiment that comes twice.
        let err = pull_err(
            &url,
            &source(
                "select * from experiments union all \
                 select * from experiments where id = 'exp-1'",
                ARMS,
            ),
        )
        .await;
        let (origin, field, message, _) = record_error(err);
        assert_eq!(
            (origin.as_str(), field.as_str()),
            ("experiments_query row 3 (id exp-1)", "id")
        );
        assert!(message.contains("experiments_query row 1"), "{message}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_fails_or_would_write_is_refused_and_nothing_changes() {
    on_fresh_database(SMALL_TABLES, |url| async move {
        let err = pull_err(&url, &source("selec * from experiments", ARMS)).await;
        let SourceError::Setup { message, .. } = &err else {
            panic!("expected a setup error, got {err:?}");
        };
        assert!(
            message.starts_with("experiments_query failed:") && message.contains("syntax error"),
            "{message}"
        );

        // The queries run in a read-only transaction: a query that writes fails.
        let err = pull_err(
            &url,
            &source(
                "insert into experiments values \
                 ('exp-3', 'Three', 'search', 'conversion_rate', 'running') returning *",
                ARMS,
            ),
        )
        .await;
        assert!(err.to_string().contains("read-only transaction"), "{err}");
        assert_eq!(count(&url, "experiments").await, 2, "nothing was written");

        // One statement per query.
        let err = pull_err(
            &url,
            &source("select * from experiments; drop table arms", ARMS),
        )
        .await;
        assert!(matches!(err, SourceError::Setup { .. }), "{err}");
        assert_eq!(
            count(&url, "arms").await,
            4,
            "the second statement did not run"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_returning_more_rows_than_the_bound_is_refused() {
    on_fresh_database("", |url| async move {
        let limit = hypod::sources::sql::MAX_EXPERIMENT_ROWS;
        let err = pull_err(
            &url,
            &source(
                &format!(
                    "select 'e' || g as id from generate_series(1, {}) g",
                    limit + 1
                ),
                "select null::text as experiment_id where false",
            ),
        )
        .await;
        let SourceError::Setup { message, .. } = &err else {
            panic!("expected a setup error, got {err:?}");
        };
        assert!(
            message.contains(&format!("more than {limit} rows")),
            "{message}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_whose_connection_fails_never_shows_its_password() {
    const PASSWORD: &str = "S3cret-Pw_9";
    let queries = source("select 1", "select 1");

    // Nothing listens on port 1.
    let url = format!("postgres://reader:{PASSWORD}@127.0.0.1:1/warehouse");
    let err = pull_err(&url, &queries).await;
    let text = err.to_string();
    assert!(matches!(err, SourceError::Unreachable { .. }), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(
        text.contains("postgres://reader:***@127.0.0.1:1/warehouse"),
        "{text}"
    );

    // Not a URL hypod can read.
    let err = pull_err(&format!("postgres://reader:{PASSWORD}@[::1/wh"), &queries).await;
    let text = err.to_string();
    assert!(matches!(err, SourceError::Setup { .. }), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");

    // The server answers, and refuses: the database does not exist.
    let Some(server) = postgres_server().await else {
        return;
    };
    let missing = with_database(&server, "hypod_no_such_database");
    let url = match missing.split_once('@') {
        Some((user, rest)) => format!("{user}:{PASSWORD}@{rest}"),
        None => missing.replacen("://", &format!("://postgres:{PASSWORD}@"), 1),
    };
    let err = pull_err(&url, &queries).await;
    let text = err.to_string();
    assert!(text.contains("hypod_no_such_database"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_column_type_reads_as_its_field() {
    on_fresh_database(
        "create type kpi as enum ('conversion_rate', 'revenue_per_visitor');",
        |url| async move {
            let experiments = "select 'exp-1'::varchar(20) as id, 'One'::char(3) as name, \
                 'search'::name as moment, 'revenue_per_visitor'::kpi as primary_kpi, \
                 'concluded'::text as status, '[\"a\", \"b\"]'::jsonb as signals, \
                 array[3, 1]::int2[] as allocation, 2.5::float4 as latency_ms_p75_delta, \
                 0.1::float4 as attributed_revenue, \
                 timestamptz '2025-01-02 23:30:00-05' as started_at, \
                 timestamp '2025-01-20 08:00:00' as ended_at, date '2025-01-25' as decided_at, \
                 null::text as notes";
            let arms = "select * from (values \
                 ('exp-1'::text, 'control'::text, true, 100::int2, 10::int4, 12::numeric, \
                  '120.5'::json, 9000.25::float8), \
                 ('exp-1', 'treatment', false, 100, 11, 11.000, '130'::json, 1e4::float8)) \
                 as a(experiment_id, name, control, visitors, conversions, orders, revenue, \
                 revenue_sq)";
            let pulled = pull_ok(&url, &source(experiments, arms)).await;
            assert_eq!(pulled.records.len(), 1);
            let value = &pulled.records[0].value;
            assert_eq!(
                value,
                &serde_json::json!({
                    "id": "exp-1", "name": "One", "moment": "search",
                    "primary_kpi": "revenue_per_visitor", "status": "concluded",
                    "signals": ["a", "b"], "allocation": [3, 1],
                    "latency_ms_p75_delta": 2.5, "attributed_revenue": 0.1,
                    "started_at": "2025-01-03", "ended_at": "2025-01-20",
                    "decided_at": "2025-01-25",
                    "variants": [
                        {"name": "control", "control": true, "visitors": 100,
                         "conversions": 10, "orders": 12, "revenue": 120.5,
                         "revenue_sq": 9000.25},
                        {"name": "treatment", "control": false, "visitors": 100,
                         "conversions": 11, "orders": 11, "revenue": 130,
                         "revenue_sq": 10000.0}
                    ]
                }),
                "NULL is left out, timestamptz is dated in UTC, whole numerics are integers"
            );
            valid(value.clone(), "the record");

            // A list holding NULL, and JSON with a key twice, are named.
            let err = pull_err(
                &url,
                &source(
                    "select 'exp-1' as id, array['a', null] as signals",
                    "select 'exp-1' as experiment_id",
                ),
            )
            .await;
            let (origin, field, message, _) = record_error(err);
            assert_eq!(
                (origin.as_str(), field.as_str()),
                ("experiments_query row 1 (id exp-1)", "signals")
            );
            assert!(message.contains("NULL element"), "{message}");
            let err = pull_err(
                &url,
                &source(
                    "select 'exp-1' as id, '[1, 2]'::json as allocation \
                     union all select 'exp-2', '{\"a\": 1, \"a\": 2}'::json",
                    "select 'exp-1' as experiment_id",
                ),
            )
            .await;
            let (origin, field, message, _) = record_error(err);
            assert_eq!(
                (origin.as_str(), field.as_str()),
                ("experiments_query row 2 (id exp-2)", "allocation")
            );
            assert!(message.contains("twice"), "{message}");
        },
    )
    .await;
}
