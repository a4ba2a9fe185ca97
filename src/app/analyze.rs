//! The use cases that show what hypod reads in the history: `analyze` (per-experiment
//! statistics and program health), `levers` (the lever knowledge base) and `prompt render`
//! (the exact messages the next run would send to the model).

use super::load::{analysis_settings, load, origins, Loaded};
use super::{App, AppError, AppResult};
use crate::analysis::{self, AnalysisReport, LeverBase};
use crate::proposer::openai::RenderedPrompt;
use crate::proposer::ProposalContext;
use std::sync::Arc;

impl App {
    /// `analyze`: per-experiment statistics and program health, computed as they are written.
    /// Policies and catalog are read first: a mistake in them stops the command before the
    /// database is opened.
    /// The same analysis feeds the proposal pages and the API's health and experiment views:
    /// computed once per version of the stored history, off the async workers, and shared until
    /// an import or a run changes the history (see [`super::reads`]).
    pub async fn analyze(&self) -> AppResult<Arc<AnalysisReport>> {
        let governance = self.governance()?;
        let settings = analysis_settings(&self.config, &governance, crate::now());
        let store = self.store().await?.clone();
        self.reads.analysis(store, settings).await
    }

    /// `levers`: the lever knowledge base (pooled effect per lever, per moment and segment).
    pub async fn levers(&self) -> AppResult<LeverBase> {
        Ok(self.analyze().await?.levers.clone())
    }

    /// `prompt render`: the exact messages the next run would send to the model.
    pub async fn render_prompt(&self) -> AppResult<RenderedPrompt> {
        let governance = self.governance()?;
        let store = self.store().await?;
        let now = crate::now();
        // As a run does: the queue's windows and expiry by the database's clock, and the
        // proposals it will expire are not shown as open.
        let clock = store.database_now().await?;
        let Loaded { experiments, queue } = load(store.as_ref(), &self.config, clock).await?;
        let (open_proposals, _) = super::run::expire(queue.open_proposals, &self.config, clock);
        let mut settings = analysis_settings(&self.config, &governance, now);
        settings.origins = origins(store.as_ref(), &experiments).await?;
        let analysis = analysis::analyze(&experiments, &settings);
        let context = ProposalContext {
            experiments: &experiments,
            analysis: &analysis,
            catalog: &governance.catalog,
            open_proposals: &open_proposals,
            recent_rejections: &queue.recent_rejections,
            max_proposals: self.config.proposer.max_proposals,
            per_moment: self.config.proposer.per_moment,
            now,
        };
        super::openai_proposer(&self.config, &governance)?
            .render(&context)
            .map_err(|e| AppError::config(e.to_string()))
    }
}

/// One page of the imported history, by id; `next_cursor` (the page's last id) fetches the
/// next, as the proposals' and runs' pages do.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ExperimentPage {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<crate::history::Experiment>,
    pub next_cursor: Option<String>,
}

impl App {
    /// The imported history, by id: up to `limit` experiments (see
    /// [`super::queue::page_size`]) whose id sorts after `after`, at `moment` if given. Read
    /// from the cached analysis's history: paging through the history does not load it again.
    pub async fn experiments_page(
        &self,
        after: Option<&str>,
        moment: Option<crate::domain::Moment>,
        limit: Option<usize>,
    ) -> AppResult<ExperimentPage> {
        let limit = super::queue::page_size(limit)?;
        let mut items: Vec<crate::history::Experiment> = self
            .analyze()
            .await?
            .experiments()
            .iter()
            .filter(|e| after.is_none_or(|a| e.id.as_str() > a))
            .filter(|e| moment.is_none_or(|m| e.moment == m))
            .take(limit + 1)
            .cloned()
            .collect();
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok(ExperimentPage { items, next_cursor })
    }

    /// One experiment with its statistics.
    pub async fn experiment(&self, id: &str) -> AppResult<analysis::ExperimentAnalysis> {
        self.analyze().await?.experiment(id).ok_or_else(|| {
            AppError::new(
                super::ErrorKind::NotFound,
                format!("experiment {} does not exist", crate::domain::bounded(id)),
            )
        })
    }
}
