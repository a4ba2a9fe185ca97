//! Sources: where a team's experiment history lives (GrowthBook, a SQL warehouse, files), read
//! into records of the import format. A source only reads: every record it returns is validated
//! afterwards exactly as `hypod import` validates a line, and written by the sync (in `app`)
//! all-or-nothing per source. This module owns the contract every kind of source meets
//! ([`Pull`], [`Record`], [`SourceError`], [`Progress`]) and each kind's settings; the kinds
//! live in `growthbook`, `sql` and `file`.

pub mod file;
pub mod growthbook;

use serde::{Deserialize, Serialize};

pub mod sql;

/// One experiment as a source read it: a JSON object in the import format
/// (docs/import-format.md), not yet validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub value: serde_json::Value,
    /// Where in the source it came from, for errors: `GrowthBook experiment exp_abc (checkout-1)`,
    /// `arms_query row 17`, `exports/q3.csv line 4`.
    pub origin: String,
}

/// What one pull of a source read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pull {
    /// The experiments read, in the import format.
    pub records: Vec<Record>,
    /// Ids the source still lists whose content did not change since the previous pull (its
    /// `state`): kept as stored, with no request made for them.
    pub unchanged: Vec<String>,
    /// What the next pull needs to be incremental (the kind's own JSON; stored per source by
    /// the sync and handed back as `previous`).
    pub state: serde_json::Value,
    /// Requests made to the source (HTTP requests, queries).
    pub requests: u64,
}

/// Told how far a long pull has come, for a progress line on a terminal.
pub trait Progress: Send + Sync {
    /// `done` items of `total` (if known) read; `what` names the items (`experiments`, `rows`).
    fn update(&self, done: u64, total: Option<u64>, what: &str);
}

/// A progress that shows nothing.
pub struct Silent;

impl Progress for Silent {
    fn update(&self, _done: u64, _total: Option<u64>, _what: &str) {}
}

/// Why a pull failed. Messages name the source and never hold a secret (an API key, a URL's
/// password).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source could not be reached, or kept failing (5xx) after bounded retries.
    #[error("source {source_name}: {message}")]
    Unreachable {
        source_name: String,
        message: String,
    },
    /// The source refused the credentials (401/403).
    #[error("source {source_name}: the credentials were refused: {message}")]
    Unauthorized {
        source_name: String,
        message: String,
    },
    /// A record the source returned cannot be made into an import record: names the record
    /// and the field.
    #[error("source {source_name}: {origin}: field `{field}`: {message}")]
    Record {
        source_name: String,
        origin: String,
        field: String,
        message: String,
    },
    /// The source's settings or environment are wrong (a variable not set, a query that fails
    /// to prepare).
    #[error("source {source_name}: {message}")]
    Setup {
        source_name: String,
        message: String,
    },
}

impl SourceError {
    /// The source the error is about.
    pub fn source_name(&self) -> &str {
        match self {
            SourceError::Unreachable { source_name, .. }
            | SourceError::Unauthorized { source_name, .. }
            | SourceError::Record { source_name, .. }
            | SourceError::Setup { source_name, .. } => source_name,
        }
    }

    /// What went wrong, without the source's name in front (for sentences that name it
    /// already).
    pub fn reason(&self) -> String {
        let full = self.to_string();
        let prefix = format!("source {}: ", self.source_name());
        full.strip_prefix(&prefix).unwrap_or(&full).to_string()
    }
}

/// What to do with a scheduled run when its source fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Run on the history already stored, and say so.
    #[default]
    UseLast,
    /// Fail the slot with the source's reason.
    Fail,
}

/// The metric ids a GrowthBook source reads (`[source.metrics]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrowthbookMetrics {
    pub conversions: String,
    pub revenue: String,
    #[serde(default)]
    pub orders: Option<String>,
}

/// `kind = "growthbook"`: GrowthBook's REST API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrowthbookSource {
    /// The host; hypod appends `/api/v1/...`.
    pub url: String,
    /// The environment variable holding the API key (sent as `Authorization: Bearer`).
    pub api_key_env: String,
    /// Only this project's experiments (`projectId`).
    #[serde(default)]
    pub project: Option<String>,
    pub metrics: GrowthbookMetrics,
    /// Requests a minute hypod allows itself against the API (GrowthBook allows an API key
    /// about 60): requests are paced to this rate. Default 60.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
}

/// `kind = "sql"`: a database speaking the PostgreSQL protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSource {
    /// The environment variable holding the database URL.
    pub url_env: String,
    /// One row per experiment, columns named as the import format's top-level fields.
    pub experiments_query: String,
    /// One row per arm: `experiment_id, name, control, visitors, conversions, orders, revenue,
    /// revenue_sq`.
    pub arms_query: String,
}

/// `kind = "file"`: a path or glob of NDJSON, JSON or CSV files in the import format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    pub path: String,
}
