//! The migrations of each backend, embedded in the binary (an installed hypod migrates its
//! database without the source tree): the files of `migrations/sqlite/` and
//! `migrations/postgres/`, listed here once. sqlx's `migrate!` macro would find them by itself,
//! but it costs every build a second compilation of sqlx's database drivers (and of SQLite's C
//! source) for the macro; a test checks that this list and the folders agree. Versions,
//! descriptions and checksums are the ones `migrate!` gives, so databases migrated by earlier
//! builds stay valid.

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::SqlSafeStr as _;

/// (version, file name, SQL) of each migration file of one backend, oldest first.
type Files = &'static [(i64, &'static str, &'static str)];

macro_rules! migration_files {
    ($dir:literal: $($version:literal $file:literal),* $(,)?) => {
        &[$(($version, $file, include_str!(concat!("../../migrations/", $dir, "/", $file)))),*]
    };
}

const SQLITE: Files = migration_files!("sqlite":
    1 "0001_initial.sql",
    2 "0002_slots.sql",
    3 "0003_outbox.sql",
    4 "0004_review.sql",
    5 "0005_queue_hygiene.sql",
    6 "0006_audit_subject.sql",
    7 "0007_sources.sql",
    8 "0008_growthbook_push.sql",
    9 "0009_review_notifications.sql",
    10 "0010_token_kind.sql",
    11 "0011_backtests.sql",
);

const POSTGRES: Files = migration_files!("postgres":
    1 "0001_initial.sql",
    2 "0002_slots.sql",
    3 "0003_outbox.sql",
    4 "0004_review.sql",
    5 "0005_queue_hygiene.sql",
    6 "0006_audit_subject.sql",
    7 "0007_sources.sql",
    8 "0008_growthbook_push.sql",
    9 "0009_review_notifications.sql",
    10 "0010_token_kind.sql",
    11 "0011_backtests.sql",
);

/// SQLite's migrations.
pub fn sqlite() -> Migrator {
    migrator(SQLITE)
}

/// PostgreSQL's migrations.
pub fn postgres() -> Migrator {
    migrator(POSTGRES)
}

fn migrator(files: Files) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|(version, file, sql)| {
                Migration::new(
                    *version,
                    description(file).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    sql.starts_with("-- no-transaction"),
                )
            })
            .collect(),
    )
}

/// What sqlx records as a migration's description: the file name after the version, without
/// `.sql`, underscores as spaces (`0005_queue_hygiene.sql` → `queue hygiene`).
fn description(file: &str) -> String {
    let name = file.split_once('_').map_or(file, |(_, rest)| rest);
    name.trim_end_matches(".sql").replace('_', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files each backend's folder holds, as (version, name).
    fn folder(dir: &str) -> Vec<(i64, String)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut files: Vec<(i64, String)> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .map(|entry| entry.expect("a folder entry").file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .map(|name| {
                let version = name
                    .split('_')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{name}: no version before `_`"));
                (version, name)
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_migration_file_is_listed_once_with_its_version() {
        for (dir, files) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let listed: Vec<(i64, String)> =
                files.iter().map(|(v, f, _)| (*v, f.to_string())).collect();
            assert_eq!(
                listed,
                folder(dir),
                "migrations/{dir}/ and src/store/migrations.rs disagree: list every file there"
            );
        }
    }

    #[test]
    fn migrations_carry_the_descriptions_and_checksums_sqlx_records() {
        let migrator = sqlite();
        let last = migrator
            .iter()
            .find(|m| m.version == 5)
            .expect("migration 5");
        assert_eq!(
            (last.version, last.description.as_ref()),
            (5, "queue hygiene")
        );
        // sqlx's checksum is the SHA-384 of the file, as `migrate!` computes it.
        use sha2::Digest as _;
        let file = include_str!("../../migrations/sqlite/0005_queue_hygiene.sql");
        assert_eq!(
            last.checksum.as_ref(),
            sha2::Sha384::digest(file).as_slice()
        );
        assert!(migrator.iter().all(|m| !m.no_tx));
    }
}
