//! hypod: reads an ecommerce team's experiment history, analyses it, drafts the next
//! experiments worth running, checks them against governance, and queues them for people to
//! approve. It never launches anything.
//!
//! A run is a straight walk through the modules, in this order (see [`app::run`]):
//! [`history`] → [`analysis`] → [`proposer`] → [`validate`] → [`governance`] → the queue (via
//! [`store`]). The shared types live in [`domain`]; [`schedule`] says when runs are due. The
//! layers and the dependency rule are drawn in `docs/architecture.md`.

pub mod analysis;
pub mod app;
pub mod assets;
pub mod cli;
pub mod config;
pub mod domain;
pub mod governance;
pub mod history;
pub mod mcp;
pub mod proposer;
pub mod schedule;
pub mod server;
pub mod sources;
pub mod store;
pub mod validate;

/// Bounded fuzzing of every input (tests only).
#[cfg(test)]
mod fuzz;

/// The current time, or the instant in `HYPOD_NOW` (RFC 3339) when it is set: a fixed clock for
/// reproducible runs and the snapshot tests.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    std::env::var("HYPOD_NOW")
        .ok()
        .and_then(|text| chrono::DateTime::parse_from_rfc3339(text.trim()).ok())
        .map(|at| at.with_timezone(&chrono::Utc))
        .unwrap_or_else(chrono::Utc::now)
}

/// sha256 hex digest, used for provenance (inputs, prompts, policy sets).
pub fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// `text` cut to at most `max_chars` characters (not bytes), with `…` where it was cut: for
/// quoting untrusted text in messages.
pub fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max_chars).collect();
        cut.push('…');
        cut
    }
}
