//! The use cases around the history and the installation: import, analyse, render the prompt
//! the next run would send, verify the audit log, migrate, write a starter folder, and the demo.

use super::{load_governance, open_store, open_store_read_only, AppError, AppResult};
use crate::analysis::{self, AnalysisReport};
use crate::config::Config;
use crate::domain::Trigger;
use crate::history::import::{self, Location, Source};
use crate::proposer::openai::RenderedPrompt;
use crate::proposer::ProposalContext;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A record `import --skip-invalid` skipped.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub problem: String,
    pub field: Option<String>,
}

/// `import`: what was read and written.
#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    pub records: usize,
    pub inserted: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
    /// Valid experiments read.
    #[serde(skip)]
    pub experiments: usize,
}

/// Imports `files` (`-` is stdin). Nothing is written unless every record is valid, or
/// `skip_invalid` (then the invalid ones are reported).
pub async fn import(
    config: &Config,
    files: &[String],
    skip_invalid: bool,
) -> AppResult<ImportSummary> {
    if files.is_empty() {
        return Err(AppError::input(
            "hypod import needs at least one FILE (or - for stdin)",
        ));
    }
    let sources: Vec<Source> = files.iter().map(|f| Source::from_arg(f)).collect();
    let started = std::time::Instant::now();
    let report = import::parse_sources(&sources);
    // Refused input never opens (or creates) the database.
    refuse_invalid(&report, skip_invalid)?;
    let store = open_store(config).await?;
    store_import(store.as_ref(), report, skip_invalid, started).await
}

/// `POST /api/v1/experiments`: an uploaded body, validated like a file, all or nothing.
pub async fn import_body(
    store: &dyn crate::store::Store,
    format: import::Format,
    text: &str,
) -> AppResult<ImportSummary> {
    let started = std::time::Instant::now();
    if text.trim().is_empty() {
        return Err(AppError::input(
            "nothing was imported: the request body holds no experiment",
        ));
    }
    let report = import::parse_text("request body", format, text);
    store_import(store, report, false, started).await
}

async fn store_import(
    store: &dyn crate::store::Store,
    report: import::ImportReport,
    skip_invalid: bool,
    started: std::time::Instant,
) -> AppResult<ImportSummary> {
    refuse_invalid(&report, skip_invalid)?;
    let counts = store.upsert_experiments(&report.experiments).await?;
    Ok(ImportSummary {
        records: report.records_read,
        inserted: counts.inserted,
        updated: counts.updated,
        unchanged: counts.unchanged,
        skipped: report
            .problems
            .iter()
            .map(|p| Skipped {
                problem: p.to_string(),
                field: p.field.clone(),
            })
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
        experiments: report.experiments.len(),
    })
}

/// The error an import with invalid records ends with (unless `skip_invalid` and every source
/// could be read): every problem, the first 20 listed.
fn refuse_invalid(report: &import::ImportReport, skip_invalid: bool) -> AppResult<()> {
    let unreadable = report
        .problems
        .iter()
        .any(|p| p.location == Location::Whole);
    if !report.problems.is_empty() && (!skip_invalid || unreadable) {
        let mut message = format!(
            "nothing was imported: {} problem(s) in the input",
            report.problems.len()
        );
        for problem in report.problems.iter().take(20) {
            let _ = write!(message, "\n  {problem}");
        }
        if report.problems.len() > 20 {
            let _ = write!(message, "\n  … and {} more", report.problems.len() - 20);
        }
        if !unreadable {
            message.push_str("\nFix the records above, or pass --skip-invalid to import the valid ones and skip these.");
        }
        return Err(AppError::input(message));
    }
    Ok(())
}

/// `analyze`: per-experiment statistics and program health, computed as they are written.
pub async fn analyze(config: &Config) -> AppResult<AnalysisReport> {
    // Policies and catalog first: a mistake in them stops the command before the database.
    load_governance(config)?;
    let store = open_store_read_only(config).await?;
    analyze_with(config, store.as_ref()).await
}

/// `analyze` from an open store (the server's).
pub async fn analyze_with(
    config: &Config,
    store: &dyn crate::store::Store,
) -> AppResult<AnalysisReport> {
    let governance = load_governance(config)?;
    let experiments = store.load_experiments().await?;
    let mut settings = super::run::analysis_settings(config, &governance, crate::now());
    settings.origins = origins(store, &experiments).await?;
    Ok(AnalysisReport::new(experiments, settings))
}

/// The stored proposals the history's experiments name as their `source_proposal`, for the
/// learning loop (looked up in batches; an id no proposal has is reported by the analysis as an
/// unknown source).
pub async fn origins(
    store: &dyn crate::store::Store,
    experiments: &[crate::history::Experiment],
) -> Result<Vec<analysis::ProposalOrigin>, crate::store::StoreError> {
    let ids: std::collections::BTreeSet<&str> = experiments
        .iter()
        .filter_map(|e| e.source_proposal.as_deref())
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = ids.into_iter().map(str::to_string).collect();
    let origins = store
        .get_proposals(&ids)
        .await?
        .into_iter()
        .map(|p| analysis::ProposalOrigin {
            id: p.id,
            proposer: p.provenance.proposer,
            model: p.provenance.model,
            strategy: p.enrichment.strategy,
            lever: p.draft.lever,
            moment: p.draft.moment,
            expected_lift: p.draft.expected_relative_lift,
            predicted_interval: p.enrichment.predicted_interval,
            created_at: p.created_at,
        })
        .collect();
    Ok(origins)
}

/// `levers`: the lever knowledge base (pooled effect per lever, per moment and per segment).
pub async fn levers(config: &Config) -> AppResult<crate::analysis::LeverBase> {
    Ok(analyze(config).await?.levers)
}

/// `prompt render`: the exact messages the next run would send to the model.
pub async fn render_prompt(config: &Config) -> AppResult<RenderedPrompt> {
    let governance = load_governance(config)?;
    let store = open_store_read_only(config).await?;
    let now = crate::now();
    let super::run::Loaded {
        experiments,
        open_proposals,
        recent_rejections,
        ..
    } = super::run::load(store.as_ref(), config, now).await?;
    // As a run does: proposals it will expire are not shown as open.
    let (open_proposals, _) = super::run::expire(open_proposals, config, now);
    let mut settings = super::run::analysis_settings(config, &governance, now);
    settings.origins = origins(store.as_ref(), &experiments).await?;
    let analysis = analysis::analyze(&experiments, &settings);
    let context = ProposalContext {
        experiments: &experiments,
        analysis: &analysis,
        catalog: &governance.catalog,
        open_proposals: &open_proposals,
        recent_rejections: &recent_rejections,
        max_proposals: config.proposer.max_proposals,
        per_moment: config.proposer.per_moment,
        now,
    };
    super::openai_proposer(config, &governance)?
        .render(&context)
        .map_err(|e| AppError::config(e.to_string()))
}

/// `migrate`: opens (and so migrates) the database; returns its URL.
pub async fn migrate(config: &Config) -> AppResult<String> {
    open_store(config).await?;
    Ok(config.database_url())
}

const STARTER_CONFIG: &str = include_str!("../../examples/hypod.toml");

/// `init`: writes a starter configuration, policies and prompts into `dir` (never overwrites);
/// returns the files written.
pub fn init(dir: &Path) -> AppResult<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut files: Vec<(String, &str)> = vec![("hypod.toml".into(), STARTER_CONFIG)];
    for (path, text) in crate::assets::DEFAULT_FILES {
        files.push((path.to_string(), text));
    }
    for (relative, text) in files {
        let path = dir.join(&relative);
        if path.exists() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                AppError::runtime(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        std::fs::write(&path, text)
            .map_err(|e| AppError::runtime(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

fn demo_dir(requested: Option<&Path>) -> PathBuf {
    if let Some(dir) = requested {
        return dir.to_path_buf();
    }
    let base = std::env::current_dir().unwrap_or_else(|_| std::env::temp_dir());
    (1..)
        .map(|n| {
            if n == 1 {
                base.join("hypod-demo")
            } else {
                base.join(format!("hypod-demo-{n}"))
            }
        })
        .find(|p| !p.exists())
        .unwrap_or_else(|| std::env::temp_dir().join("hypod-demo"))
}

/// What `demo` did.
#[derive(Debug, Clone, Serialize)]
pub struct Demo {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub imported: usize,
    pub inserted: usize,
    pub run: super::run::RunView,
}

/// `demo`: a new folder with a starter configuration, the bundled sample history imported and
/// one run made.
pub async fn demo(requested: Option<&Path>) -> AppResult<Demo> {
    let dir = demo_dir(requested);
    std::fs::create_dir_all(&dir)
        .map_err(|e| AppError::runtime(format!("cannot create {}: {e}", dir.display())))?;
    init(&dir)?;
    let config_path = dir.join("hypod.toml");
    let config = Config::load_with_env(Some(&config_path), &[])
        .map_err(|e| AppError::runtime(e.to_string()))?;
    let report = import::parse_text(
        "sample-history.ndjson",
        import::Format::Ndjson,
        crate::assets::SAMPLE_HISTORY,
    );
    if let Some(problem) = report.problems.first() {
        return Err(AppError::runtime(format!(
            "the bundled sample history is invalid: {problem}"
        )));
    }
    let store = open_store(&config).await?;
    let counts = store.upsert_experiments(&report.experiments).await?;
    drop(store);
    let run = super::run::run_now(&config, Trigger::Demo).await?;
    run.outcome()?;
    Ok(Demo {
        dir,
        config_path,
        imported: report.experiments.len(),
        inserted: counts.inserted,
        run,
    })
}
