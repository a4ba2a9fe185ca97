//! Every test but the opt-in real-model one, in one test binary (one link on CI, where each
//! extra binary costs a link of the whole crate). `support` and `common` hold the typed
//! helpers, `snapshots` the `--json` outputs pinned as files, `storage` the storage suite that
//! runs on every backend (`backends` makes the databases), `concurrency` several `hypod`
//! processes on one database at once, `serve` the daemon as real processes (`test_app` builds it
//! in-process on port 0 for the API and web UI tests: `review`, `browser`); `spine`,
//! `policy_cli`, `governance`, `builtin` and `llm_*` the stages and the end-to-end behaviour,
//! `hardening` hostile input (imports, policies, catalog, configuration, read-only use),
//! `layering` the dependency rule of docs/architecture.md over every import in `src/`, `docs`
//! the documentation checked against the binary (commands, configuration keys, links).
//! Run one part with `cargo test --test cli spine::` (a module path filter).

#[path = "../common/mod.rs"]
mod common;
#[path = "../synthetic/mod.rs"]
mod synthetic;

mod backends;
mod backtest;
mod browser;
mod browser_review;
mod builtin;
mod claims;
mod concurrency;
mod decision_page;
mod docs;
mod engines;
#[path = "../fake_growthbook/mod.rs"]
mod fake_growthbook;
#[path = "../fake_openai/mod.rs"]
mod fake_openai;
mod governance;
mod growthbook_push;
mod growthbook_source;
mod hardening;
mod health_page;
mod hygiene;
mod layering;
mod learning;
mod llm_prompt;
mod llm_proposer;
mod llm_run;
mod mcp;
mod notify;
mod openapi;
mod pipes;
mod policy_cli;
mod queue_page;
mod review;
mod review_audit;
mod review_notify;
mod run_metrics;
mod serve;
mod sizing;
mod snapshots;
mod speed_caches;
mod spine;
mod sql_source;
mod storage;
mod summary_only;
mod support;
mod sync;
mod sync_sources;
mod test_app;
mod trust_audit;
mod trust_daemon;
mod trust_reads;
mod trust_slots;
mod trust_web;
