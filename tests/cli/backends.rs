//! The databases the storage tests run on: a SQLite file in a temporary folder, and a fresh
//! PostgreSQL database per test (`hypod_test_<random>`, created through the server's
//! `postgres` database and dropped at the end, also when the test fails).
//!
//! PostgreSQL comes from `HYPOD_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When it cannot be reached the PostgreSQL
//! tests are SKIPPED with a banner on stderr, unless `CI` is set: there a missing PostgreSQL
//! fails them.

use hypod::store::postgres::PostgresStore;
use hypod::store::sqlite::SqliteStore;
use hypod::store::Store;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::future::Future;
use std::io::Write;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The audit key of the stores the tests open themselves (the CLI's is the same).
pub fn audit_key() -> hypod::store::AuditKey {
    hypod::store::AuditKey::new(crate::review_audit::TEST_AUDIT_KEY.as_bytes()).expect("key")
}

pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server URL the PostgreSQL tests use.
pub fn postgres_base_url() -> String {
    std::env::var("HYPOD_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES.to_string())
}

/// `CI` set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// `url` with its database name replaced by `name` (query string kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

/// Whether PostgreSQL answers, asked once per test binary: `Err` says why not.
async fn postgres_reachable() -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Some(result) = PROBED.get() {
        return result.clone();
    }
    let url = postgres_base_url();
    let result = match PgConnectOptions::from_str(&url) {
        Err(e) => Err(format!("{url} is not a PostgreSQL URL: {e}")),
        Ok(options) => {
            match tokio::time::timeout(Duration::from_secs(5), options.connect()).await {
                Err(_) => Err(format!("no answer from {url} within 5 s")),
                Ok(Err(e)) => Err(format!("cannot connect to {url}: {e}")),
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    Ok(())
                }
            }
        }
    };
    PROBED.get_or_init(|| result).clone()
}

/// Says loudly, once per test binary, that the PostgreSQL tests did not run. Written straight
/// to stderr (not through `eprintln!`, which the test harness captures for passing tests).
fn skipped_banner(why: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let line = "=".repeat(78);
        let _ = writeln!(
            std::io::stderr(),
            "\n{line}\n  PostgreSQL tests SKIPPED: {why}\n  \
             Start it (pg_ctlcluster --skip-systemctl-redirect 15 main start) or point\n  \
             HYPOD_TEST_DATABASE_URL at a server; with CI set, this is a failure.\n{line}\n"
        );
    });
}

/// A PostgreSQL server to make test databases on, or `None` (after the banner) when there is
/// none and `CI` is not set.
pub async fn postgres_server() -> Option<String> {
    match postgres_reachable().await {
        Ok(()) => Some(postgres_base_url()),
        Err(why) if in_ci() => panic!("PostgreSQL is required when CI is set: {why}"),
        Err(why) => {
            skipped_banner(&why);
            None
        }
    }
}

/// Runs one statement on the server's maintenance database (CREATE/DROP DATABASE).
async fn admin(sql: String) {
    let mut conn = PgConnectOptions::from_str(&postgres_base_url())
        .expect("a PostgreSQL URL")
        .connect()
        .await
        .expect("connect to the PostgreSQL server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}

/// A fresh, empty PostgreSQL database; dropped by [`PgDatabase::drop_now`].
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create(server: &str) -> PgDatabase {
        let name = format!("hypod_test_{:016x}", rand::random::<u64>());
        admin(format!("CREATE DATABASE {name}")).await;
        PgDatabase {
            url: with_database(server, &name),
            name,
        }
    }

    pub async fn drop_now(&self) {
        admin(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .await;
    }
}

/// Runs `check` (a blocking test) on a fresh PostgreSQL database given by its URL, dropping the
/// database afterwards whether `check` passed or panicked; skipped loudly without PostgreSQL,
/// outside CI.
pub fn on_fresh_postgres(check: impl FnOnce(&str)) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = runtime.block_on(postgres_server()) else {
        return;
    };
    let db = runtime.block_on(PgDatabase::create(&server));
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&db.url)));
    runtime.block_on(db.drop_now());
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

/// A migrated store on one backend, and what a test needs to reach under it.
pub struct TestDb {
    pub backend: &'static str,
    pub store: Arc<dyn Store>,
    pub url: String,
    pg: Option<PgDatabase>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("hypod.db").display());
        let store = SqliteStore::connect(&url, audit_key())
            .await
            .expect("open SQLite");
        store.migrate().await.expect("migrate SQLite");
        TestDb {
            backend: "sqlite",
            store: Arc::new(store),
            url,
            pg: None,
            _dir: Some(dir),
        }
    }

    /// `None` when the PostgreSQL tests are skipped.
    pub async fn postgres() -> Option<TestDb> {
        let server = postgres_server().await?;
        let db = PgDatabase::create(&server).await;
        let store = PostgresStore::connect(&db.url, audit_key())
            .await
            .expect("open PostgreSQL");
        store.migrate().await.expect("migrate PostgreSQL");
        Some(TestDb {
            backend: "postgres",
            store: Arc::new(store),
            url: db.url.clone(),
            pg: Some(db),
            _dir: None,
        })
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Runs SQL under the store's back (to tamper with the audit log).
    pub async fn execute(&self, sql: &'static str) {
        if self.backend == "sqlite" {
            let mut conn = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect("connect");
            sqlx::query(sql).execute(&mut conn).await.expect(sql);
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connect");
            sqlx::query(sql).execute(&mut conn).await.expect(sql);
        }
    }

    async fn finish(&self) {
        if let Some(db) = &self.pg {
            db.drop_now().await;
        }
    }
}

/// Runs `check` on `db` and then drops the database, also when the check panics (the panic is
/// passed on afterwards).
pub async fn run_check<F, Fut>(db: TestDb, check: F)
where
    F: FnOnce(Arc<TestDb>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = Arc::new(db);
    let outcome = tokio::spawn(check(db.clone())).await;
    db.finish().await;
    if let Err(err) = outcome {
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
        panic!("check did not finish: {err}");
    }
}

/// Instantiates each named check (an `async fn(Arc<TestDb>)` in the invoking module) once per
/// backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_every_backend {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let db = $crate::backends::TestDb::sqlite().await;
                    $crate::backends::run_check(db, super::$check).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(db) = $crate::backends::TestDb::postgres().await else {
                        return;
                    };
                    $crate::backends::run_check(db, super::$check).await;
                }
            )*
        }
    };
}
pub(crate) use on_every_backend;

#[test]
fn the_database_name_is_replaced_and_the_query_kept() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgresql://u:p@db/app?sslmode=disable", "t2"),
        "postgresql://u:p@db/t2?sslmode=disable"
    );
    assert_eq!(with_database("postgres://db", "t3"), "postgres://db/t3");
}

#[test]
fn both_postgres_schemes_are_accepted_by_the_configuration() {
    let dir = tempfile::tempdir().expect("temp dir");
    for url in ["postgres://u@db/hypod", "postgresql://u@db:5433/hypod"] {
        let path = dir.path().join("hypod.toml");
        std::fs::write(&path, format!("[database]\nurl = \"{url}\"\n")).expect("write");
        let config = hypod::config::Config::load_with_env(Some(&path), &[])
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(config.database_url(), url, "used as written");
        assert_eq!(
            hypod::store::Backend::of_url(url),
            Some(hypod::store::Backend::Postgres)
        );
    }
    assert_eq!(hypod::store::Backend::of_url("mysql://db/x"), None);
}
