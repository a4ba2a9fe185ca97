//! Command-line and storage tests, in one test binary (one link on CI). `support` holds the
//! typed helpers, `snapshots` the `--json` outputs pinned as files, `storage` the storage suite
//! that runs on every backend (`backends` makes the databases), `concurrency` several `hypod`
//! processes on one database at once.

mod backends;
mod concurrency;
#[path = "../fake_openai/mod.rs"]
mod fake_openai;
mod pipes;
mod serve;
mod snapshots;
mod storage;
mod support;
