//! The sync use case (`hypod sync`, and the start of every scheduled run): for each configured
//! `[[source]]` (or the one named), read its secret from the environment, pull its records
//! (dispatched by kind), validate every record exactly as `hypod import` validates a line —
//! all or nothing per source — and write it in one store transaction
//! ([`crate::store::SourceStates::write_sync`]) with one `history.sync` audit entry. A source
//! that fails writes nothing and does not stop the others; what a run does about it
//! (`on_failure`) is [`RunSources`]'s.

use super::{App, AppError, AppResult};
use crate::config::{Config, SourceConfig, SourceKind};
use crate::history::import::experiment_from_value;
use crate::history::Experiment;
use crate::sources::{OnFailure, Progress, Pull, SourceError};
use crate::store::{Store, SyncWrite};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;

/// How one source's sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// Read, validated and written (possibly nothing changed).
    Synced,
    /// Nothing was written: `error` says why.
    Failed,
}

/// One source's sync, as `hypod sync` shows it (`--json`: docs/commands.md).
#[derive(Debug, Clone, Serialize)]
pub struct SourceSync {
    pub source: String,
    pub kind: &'static str,
    pub status: SyncStatus,
    /// Records read (records the source reported unchanged are not read).
    pub read: usize,
    pub inserted: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Ids the source listed at its previous good sync and no longer lists: kept, never
    /// deleted.
    pub vanished: Vec<String>,
    /// Requests made to the source (HTTP requests, queries, files read).
    pub requests: u64,
    /// The SHA-256 of what was read (each record's JSON, in order).
    pub read_digest: Option<String>,
    /// Why the sync failed (never holds a secret).
    pub error: Option<String>,
    /// When the source's last good sync was (this one, when it succeeded).
    pub last_ok_at: Option<DateTime<Utc>>,
    /// What the source's `on_failure` says a run does when its sync fails.
    pub on_failure: OnFailure,
    pub seconds: f64,
    /// Whether the failure is the input's (an invalid record, a bad setting) rather than the
    /// source's being unreachable.
    #[serde(skip)]
    pub invalid_input: bool,
}

impl SourceSync {
    /// The sentence a run record says of a source whose sync failed: "history from NAME as of
    /// TIME: the sync failed: REASON".
    pub fn stale_history(&self) -> String {
        let as_of = match self.last_ok_at {
            Some(at) => crate::store::timestamp(at),
            None => "never (no sync of it has succeeded yet)".into(),
        };
        format!(
            "history from {} as of {as_of}: the sync failed: {}",
            self.source,
            self.error.as_deref().unwrap_or("unknown error")
        )
    }
}

/// What `hypod sync` did: one entry per source synced, in configuration order.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub sources: Vec<SourceSync>,
}

impl SyncReport {
    /// A sync with a failed source is a failure once the report has been shown: invalid input
    /// (exit 2) when a source's records or settings are at fault, else a runtime failure.
    pub fn outcome(&self) -> AppResult<()> {
        let failed: Vec<&SourceSync> = self
            .sources
            .iter()
            .filter(|s| s.status == SyncStatus::Failed)
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let message = failed
            .iter()
            .map(|s| {
                format!(
                    "source {}: nothing was written: {}",
                    s.source,
                    s.error.as_deref().unwrap_or("unknown error")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        if failed.iter().any(|s| s.invalid_input) {
            Err(AppError::input(message))
        } else {
            Err(AppError::runtime(message))
        }
    }
}

impl App {
    /// `hypod sync [--source NAME]`: syncs every configured source, or the one named, as `by`.
    pub async fn sync(
        &self,
        only: Option<&str>,
        by: &str,
        progress: &dyn Progress,
    ) -> AppResult<SyncReport> {
        let config = self.config();
        if config.sources.is_empty() {
            return Err(AppError::config(
                "no source is configured: add a [[source]] table to hypod.toml (docs/sources.md)",
            ));
        }
        if let Some(name) = only {
            if !config.sources.iter().any(|s| s.name == name) {
                let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
                return Err(AppError::input(format!(
                    "--source {name}: no source of that name; the configured sources are {}",
                    names.join(", ")
                )));
            }
        }
        let store = self.store().await?;
        Ok(sync_sources(store.as_ref(), config, only, by, progress).await)
    }
}

/// Syncs the configured sources (or the one named), each on its own: a source that fails
/// writes nothing and does not stop the others.
pub async fn sync_sources(
    store: &dyn Store,
    config: &Config,
    only: Option<&str>,
    by: &str,
    progress: &dyn Progress,
) -> SyncReport {
    let mut sources = Vec::new();
    for source in &config.sources {
        if only.is_some_and(|name| name != source.name) {
            continue;
        }
        sources.push(sync_one(store, config, source, by, progress).await);
    }
    SyncReport { sources }
}

async fn sync_one(
    store: &dyn Store,
    config: &Config,
    source: &SourceConfig,
    by: &str,
    progress: &dyn Progress,
) -> SourceSync {
    let started = std::time::Instant::now();
    let mut view = SourceSync {
        source: source.name.clone(),
        kind: source.kind.as_str(),
        status: SyncStatus::Failed,
        read: 0,
        inserted: 0,
        updated: 0,
        unchanged: 0,
        vanished: Vec::new(),
        requests: 0,
        read_digest: None,
        error: None,
        last_ok_at: None,
        on_failure: source.on_failure,
        seconds: 0.0,
        invalid_input: false,
    };
    let previous = match store.source_state(&source.name).await {
        Ok(previous) => previous,
        Err(e) => {
            view.error = Some(format!("cannot read its stored state: {e}"));
            return view;
        }
    };
    view.last_ok_at = previous.as_ref().map(|p| p.last_ok_at);
    let outcome = async {
        let pull = pull(
            config,
            source,
            previous.as_ref().map(|p| &p.state),
            progress,
        )
        .await?;
        let experiments = validate(&source.name, &pull)?;
        Ok::<_, SourceError>((pull, experiments))
    }
    .await;
    let (pull, experiments) = match outcome {
        Ok(done) => done,
        Err(e) => {
            view.invalid_input =
                matches!(e, SourceError::Record { .. } | SourceError::Setup { .. });
            view.error = Some(e.reason());
            view.seconds = started.elapsed().as_secs_f64();
            tracing::warn!(source = source.name, error = %e, "the sync of a source failed; nothing was written");
            return view;
        }
    };
    let read_digest = read_digest(&pull);
    let mut listed: Vec<String> = experiments.iter().map(|e| e.id.clone()).collect();
    listed.extend(pull.unchanged.iter().cloned());
    view.read = pull.records.len();
    view.requests = pull.requests;
    let write = SyncWrite {
        source: &source.name,
        by,
        experiments: &experiments,
        listed: &listed,
        state: &pull.state,
        read: pull.records.len(),
        requests: pull.requests,
        read_digest: &read_digest,
    };
    match store.write_sync(&write).await {
        Ok(counts) => {
            view.status = SyncStatus::Synced;
            view.inserted = counts.inserted;
            view.updated = counts.updated;
            view.unchanged = counts.unchanged;
            view.vanished = counts.vanished;
            view.read_digest = Some(read_digest);
            view.last_ok_at = Some(Utc::now());
        }
        Err(e) => view.error = Some(format!("nothing was written: {e}")),
    }
    view.seconds = started.elapsed().as_secs_f64();
    view
}

/// The value of the environment variable a source names for its secret. The message names
/// the variable, never a value.
fn secret(source: &str, var: &str) -> Result<String, SourceError> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(SourceError::Setup {
            source_name: source.to_string(),
            message: format!(
                "the environment variable {var} is not set (or empty); set it to the source's secret"
            ),
        }),
    }
}

/// One pull of a source, by kind.
async fn pull(
    config: &Config,
    source: &SourceConfig,
    previous: Option<&serde_json::Value>,
    progress: &dyn Progress,
) -> Result<Pull, SourceError> {
    let name = source.name.as_str();
    match &source.kind {
        SourceKind::File(settings) => {
            crate::sources::file::pull(name, settings, &config.base_dir, progress)
        }
        SourceKind::Growthbook(settings) => {
            let api_key = secret(name, &settings.api_key_env)?;
            crate::sources::growthbook::pull(name, settings, &api_key, previous, progress).await
        }
        SourceKind::Sql(settings) => {
            let url = secret(name, &settings.url_env)?;
            crate::sources::sql::pull(name, settings, &url, progress).await
        }
    }
}

/// Every record validated as `hypod import` validates a line: the experiments, the later of
/// two records with one id winning; or the first invalid record, named with its origin and
/// field.
fn validate(source: &str, pull: &Pull) -> Result<Vec<Experiment>, SourceError> {
    let mut experiments: Vec<Experiment> = Vec::with_capacity(pull.records.len());
    let mut at: HashMap<String, usize> = HashMap::new();
    for record in &pull.records {
        let experiment =
            experiment_from_value(record.value.clone()).map_err(|(field, message)| {
                SourceError::Record {
                    source_name: source.to_string(),
                    origin: record.origin.clone(),
                    field: field.unwrap_or_else(|| "(record)".into()),
                    message,
                }
            })?;
        match at.get(&experiment.id) {
            Some(&i) => experiments[i] = experiment,
            None => {
                at.insert(experiment.id.clone(), experiments.len());
                experiments.push(experiment);
            }
        }
    }
    Ok(experiments)
}

/// The SHA-256 of what a pull read: each record's JSON, in order, and the ids it reported
/// unchanged.
fn read_digest(pull: &Pull) -> String {
    let values: Vec<&serde_json::Value> = pull.records.iter().map(|r| &r.value).collect();
    crate::digest(&serde_json::to_vec(&(values, &pull.unchanged)).unwrap_or_default())
}

/// What a run does about its sources: sync them first when `schedule.sync` is on and there are
/// any, then go on with a sentence per failed source (`on_failure = "use_last"`), or fail with
/// the reason (`"fail"`).
#[derive(Debug, Clone, Default)]
pub struct RunSources {
    /// "history from NAME as of TIME: the sync failed: REASON", one per failed source that
    /// lets the run go on.
    pub stale: Vec<String>,
    /// Why the run must fail (a source with `on_failure = "fail"` failed).
    pub refused: Option<String>,
}

/// Syncs before a run, as `by` (`schedule`, `cli:USER`, an API principal).
pub async fn sync_before_run(store: &dyn Store, config: &Config, by: &str) -> RunSources {
    let mut outcome = RunSources::default();
    if !config.schedule.sync || config.sources.is_empty() {
        return outcome;
    }
    let report = sync_sources(store, config, None, by, &crate::sources::Silent).await;
    let mut refused = Vec::new();
    for source in report.sources {
        if source.status == SyncStatus::Synced {
            continue;
        }
        match source.on_failure {
            OnFailure::UseLast => outcome.stale.push(source.stale_history()),
            OnFailure::Fail => refused.push(format!(
                "source {} failed to sync and its on_failure is \"fail\": {}",
                source.source,
                source.error.as_deref().unwrap_or("unknown error")
            )),
        }
    }
    if !refused.is_empty() {
        outcome.refused = Some(refused.join("; "));
    }
    outcome
}
