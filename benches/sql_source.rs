//! The SQL source over a warehouse built from raw exposures: time in the database against time
//! in hypod. Builds, in a fresh PostgreSQL database on HYPOD_TEST_DATABASE_URL (default
//! postgres://postgres@127.0.0.1:5432/postgres; skipped with a note when unreachable),
//! HYPOD_BENCH_EXPOSURES raw exposure rows (default 10 000 000) over HYPOD_BENCH_EXPERIMENTS
//! experiments (default 1 000, two arms each) with generate_series, one user in five buying,
//! and the views of examples/warehouse.sql. Then, HYPOD_BENCH_REPEAT times (default 3):
//!
//! - `database`: both queries of the configuration in docs/sources.md#sql-warehouse run to
//!   completion in the database (`CREATE TEMP TABLE … AS`, so nothing crosses the wire);
//! - `pull`: `sources::sql::pull` over the same views, i.e. the database's work plus hypod's
//!   (connection, transfer, decoding, assembling the records);
//! - `pull (sums)`: the pull over the sums materialised in tables: hypod's own cost.
//!
//! Run with `cargo bench --bench sql_source`.

use sqlx::Connection;
use std::time::{Duration, Instant};

const EXPERIMENTS_QUERY: &str = "select * from hypod_experiments order by id";
const ARMS_QUERY: &str = "select experiment_id, name, control, visitors, conversions, orders, \
     revenue, revenue_sq from hypod_arms order by experiment_id, variation";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

async fn execute(url: &str, sql: &str) -> Result<Duration, sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let started = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await?;
    let took = started.elapsed();
    let _ = conn.close().await;
    Ok(took)
}

fn source(experiments_query: &str, arms_query: &str) -> hypod::sources::SqlSource {
    hypod::sources::SqlSource {
        url_env: "WAREHOUSE_URL".into(),
        experiments_query: experiments_query.into(),
        arms_query: arms_query.into(),
    }
}

async fn timed_pull(url: &str, source: &hypod::sources::SqlSource) -> (Duration, usize, usize) {
    let started = Instant::now();
    let pulled = hypod::sources::sql::pull("bench", source, url, &hypod::sources::Silent)
        .await
        .expect("pull");
    let took = started.elapsed();
    let arms = pulled
        .records
        .iter()
        .map(|r| r.value["variants"].as_array().map_or(0, Vec::len))
        .sum();
    (took, pulled.records.len(), arms)
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

async fn bench(url: &str, exposures: u64, experiments: u64, repeat: usize) {
    let users = (exposures / 5).max(1);
    let buyers = (users / 5).max(1);
    let views = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/warehouse.sql"
    ))
    .expect("examples/warehouse.sql");
    let build = format!(
        "create unlogged table exposures (experiment_id text, variation int, user_id text,
           first_exposed_at timestamptz);
         create unlogged table orders (user_id text, ordered_at timestamptz,
           revenue numeric(12,2));
         create table experiment_meta (experiment_id text primary key, name text,
           hypothesis text, moment text, lever text, segment text, channel text, rendering text,
           region text, primary_kpi text, signals text, status text, idea_at date,
           started_at date, ended_at date, decided_at date, decision text, owner text,
           variation_names text, allocation text);
         insert into experiment_meta
           select 'exp-' || lpad(e::text, 6, '0'), 'Experiment ' || e, null, 'search',
                  'lever_' || (e % 7), 'all_visitors', 'web', 'server', 'global',
                  'conversion_rate', 'page_context', 'concluded', date '2025-01-01',
                  date '2025-01-02', date '2025-02-15', date '2025-02-20', 'iterate', null,
                  null, '1|1'
           from generate_series(0::bigint, {experiments} - 1) e;
         insert into exposures
           select 'exp-' || lpad((g % {experiments})::text, 6, '0'), ((g / {experiments}) % 2)::int,
                  'u' || ((g * 7919) % {users}),
                  timestamptz '2025-01-02' + make_interval(mins => (g % 60000)::int)
           from generate_series(0::bigint, {exposures} - 1) g;
         insert into orders
           select 'u' || ((g * 104729) % {users}),
                  timestamptz '2025-01-01' + make_interval(mins => ((g * 31) % 70000)::int),
                  ((g * 37) % 20000 + 100) / 100.0
           from generate_series(0::bigint, {buyers} - 1) g;
         analyze exposures; analyze orders; analyze experiment_meta;
         {views}"
    );
    let started = Instant::now();
    execute(url, &build).await.expect("build the warehouse");
    println!(
        "warehouse: {exposures} exposure rows, {experiments} experiments, {users} users, \
         {buyers} orders, built in {}",
        seconds(started.elapsed())
    );

    let in_database =
        format!("create temp table e as {EXPERIMENTS_QUERY}; create temp table a as {ARMS_QUERY};");
    let views = source(EXPERIMENTS_QUERY, ARMS_QUERY);
    let sums = source(
        "select * from sums_experiments order by id",
        "select experiment_id, name, control, visitors, conversions, orders, revenue, \
         revenue_sq from sums_arms order by experiment_id, variation",
    );
    execute(
        url,
        "create table sums_experiments as select * from hypod_experiments; \
         create table sums_arms as select * from hypod_arms;",
    )
    .await
    .expect("materialise the sums");

    let (mut database, mut pulls, mut pulls_of_sums) = (Vec::new(), Vec::new(), Vec::new());
    let mut read = (0, 0);
    for round in 0..repeat {
        let db = execute(url, &in_database).await.expect("the queries");
        let (pull, records, arms) = timed_pull(url, &views).await;
        let (pull_of_sums, _, _) = timed_pull(url, &sums).await;
        println!(
            "round {}: database {}, pull {}, pull (sums) {}",
            round + 1,
            seconds(db),
            seconds(pull),
            seconds(pull_of_sums)
        );
        database.push(db);
        pulls.push(pull);
        pulls_of_sums.push(pull_of_sums);
        read = (records, arms);
    }
    let (db, pull, of_sums) = (median(database), median(pulls), median(pulls_of_sums));
    // The pull over the views is the database's work plus hypod's; the pull over the
    // materialised sums is hypod's own (connection, transfer, decoding, records).
    println!(
        "read {} experiments, {} arms; median of {repeat}: database {}, pull over the views {}, \
         pull over the materialised sums (hypod's own cost) {}",
        read.0,
        read.1,
        seconds(db),
        seconds(pull),
        seconds(of_sums)
    );
}

fn main() {
    let exposures = env_number("HYPOD_BENCH_EXPOSURES", 10_000_000);
    let experiments = env_number("HYPOD_BENCH_EXPERIMENTS", 1_000).max(1);
    let repeat = env_number("HYPOD_BENCH_REPEAT", 3).max(1) as usize;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = std::env::var("HYPOD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("hypod_bench_sql_{}", std::process::id());
    if let Err(e) = runtime.block_on(execute(&server, &format!("CREATE DATABASE {name}"))) {
        println!("sql source skipped: {server} is not reachable ({e})");
        return;
    }
    let url = match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => server.clone(),
    };
    // The database is dropped also when the benchmark fails.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(bench(&url, exposures, experiments, repeat))
    }));
    let _ = runtime.block_on(execute(
        &server,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    ));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
