//! Command-line tests through the real binary, in one test binary (one link on CI).
//! `support` holds the typed helpers, `snapshots` the `--json` outputs pinned as files.

#[path = "../fake_openai/mod.rs"]
mod fake_openai;
mod pipes;
mod serve;
mod snapshots;
mod support;
