//! The use cases that set an installation up: `migrate`, `init` (a starter folder) and `demo`
//! (a new folder with the bundled sample history imported and one run made).

use super::{App, AppError, AppResult};
use crate::config::Config;
use crate::domain::Trigger;
use crate::history::import;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `migrate`: opens (and so migrates) the database; returns its URL.
impl App {
    pub async fn migrate(&self) -> AppResult<String> {
        self.store().await?;
        Ok(self.config.database_url())
    }
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
    let app = App::new(config);
    let counts = app
        .store()
        .await?
        .upsert_experiments(&report.experiments, "setup")
        .await?;
    let run = app.run_now(Trigger::Demo).await?;
    run.outcome()?;
    Ok(Demo {
        dir,
        config_path,
        imported: report.experiments.len(),
        inserted: counts.inserted,
        run,
    })
}
