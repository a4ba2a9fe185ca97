//! The import use cases: experiments from files (`hypod import`) or a request body
//! (`POST /api/v1/experiments`), validated as a whole and written all or nothing (or, with
//! `--skip-invalid`, the valid ones with the others reported). The import's audit entry names
//! its caller (`by`: the shell account, or the API's principal) and what it wrote.

use super::{App, AppError, AppResult};
use crate::history::import::{self, Location, Source};
use serde::Serialize;
use std::fmt::Write as _;

/// A record `import --skip-invalid` skipped.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub problem: String,
    pub field: Option<String>,
}

/// `import`: what was read and written.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImportSummary {
    pub records: usize,
    pub inserted: usize,
    pub updated: usize,
    pub unchanged: usize,
    #[schema(value_type = Vec<Object>)]
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
    /// Valid experiments read.
    #[serde(skip)]
    pub experiments: usize,
}

/// Imports `files` (`-` is stdin). Nothing is written unless every record is valid, or
/// `skip_invalid` (then the invalid ones are reported).
impl App {
    pub async fn import(
        &self,
        files: &[String],
        skip_invalid: bool,
        by: &str,
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
        let store = self.store().await?;
        store_import(store.as_ref(), report, skip_invalid, by, started).await
    }

    /// `POST /api/v1/experiments`: an uploaded body, validated like a file, all or nothing.
    pub async fn import_body(
        &self,
        format: import::Format,
        text: &str,
        by: &str,
    ) -> AppResult<ImportSummary> {
        let started = std::time::Instant::now();
        if text.trim().is_empty() {
            return Err(AppError::input(
                "nothing was imported: the request body holds no experiment",
            ));
        }
        let report = import::parse_text("request body", format, text);
        store_import(self.store().await?.as_ref(), report, false, by, started).await
    }
}

async fn store_import(
    store: &dyn crate::store::Store,
    report: import::ImportReport,
    skip_invalid: bool,
    by: &str,
    started: std::time::Instant,
) -> AppResult<ImportSummary> {
    refuse_invalid(&report, skip_invalid)?;
    let counts = store.upsert_experiments(&report.experiments, by).await?;
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
