//! Approved proposals as GrowthBook drafts (DESIGN §12 "Platforms"): the request body of
//! GrowthBook's `POST /api/v1/experiments` built from a proposal and `[export.growthbook]`
//! ([`growthbook_draft`]: `export --format growthbook`), and the push of the push outbox
//! ([`App::push_due`]: `hypod serve`'s worker and `hypod export --push`). A push posts the
//! draft once per proposal: the proposal's row is held while it is posted; a `400` saying the
//! tracking key exists counts as pushed once a `GET` by tracking key finds the experiment
//! (an earlier attempt whose answer was lost); any other `4xx` is recorded as refused with
//! GrowthBook's message; `429`, `5xx` and lost answers are retried with backoff, a `429` no sooner
//! than its `Retry-After` (seconds or an HTTP date, at most an hour). A draft the
//! audit log does not vouch for ([`App::vouch_draft`]) is refused without being sent. The API
//! key is sent only in the `Authorization` header and never appears in a message.

use super::{App, AppError, AppResult, ErrorKind};
use crate::config::GrowthbookExport;
use crate::domain::{Proposal, ProposalStatus, Review, ReviewAction};
use crate::store::{PushItem, PushOutcome, PushRecord};
use serde::Serialize;
use std::time::Duration;

/// The platform name stored with each push.
pub const PLATFORM: &str = "growthbook";
/// GrowthBook's limit on `description` (and a variation's), in UTF-16 code units as its
/// validator counts them.
pub const MAX_DESCRIPTION: usize = 10_000;
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Pushes claimed per pass.
const BATCH: usize = 10;

/// One variation of a GrowthBook draft (`{key, name, description?}`: nothing else).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GrowthbookVariation {
    pub key: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The body of GrowthBook's `POST /api/v1/experiments` for one proposal: only fields its
/// strict schema knows.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrowthbookDraft {
    pub tracking_key: String,
    pub name: String,
    /// Always `draft`: hypod never starts an experiment.
    pub status: &'static str,
    pub variations: Vec<GrowthbookVariation>,
    pub hypothesis: String,
    pub description: String,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub guardrail_metrics: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datasource_id: Option<String>,
    pub assignment_query_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `bayesian` or `frequentist`: GrowthBook analyses the experiment with the engine hypod
    /// judged its evidence with (`analysis.engine`), not the organisation's default.
    pub stats_engine: &'static str,
    /// Under the frequentist engine: whether GrowthBook's sequential testing is on
    /// (`analysis.sequential`), and its tuning parameter when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequential_testing_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequential_testing_tuning_parameter: Option<f64>,
}

/// The tracking key of a proposal's experiment.
pub fn tracking_key(proposal_id: &str) -> String {
    format!("hypod-{proposal_id}")
}

/// `text` cut to at most `max` UTF-16 code units (GrowthBook counts lengths as JavaScript
/// does), ending in `…` when cut.
fn at_most(text: &str, max: usize) -> String {
    if text.encode_utf16().count() <= max {
        return text.to_string();
    }
    let mut out = String::new();
    let mut units = 0;
    for c in text.chars() {
        if units + c.len_utf16() > max - 1 {
            break;
        }
        units += c.len_utf16();
        out.push(c);
    }
    out.push('…');
    out
}

/// The approver whose approval made `reviews`' proposal approved (the last approval).
pub fn approver(reviews: &[Review]) -> Option<&str> {
    reviews
        .iter()
        .rev()
        .find(|r| r.action == ReviewAction::Approve)
        .map(|r| r.actor.as_str())
}

/// A proposal as GrowthBook's request body, under `config` (`approver`: who approved it, sent
/// as `owner` only when `[export.growthbook.owners]` maps them), analysed in GrowthBook with
/// hypod's engine (`analysis`).
pub fn growthbook_draft(
    p: &Proposal,
    approver: Option<&str>,
    config: &GrowthbookExport,
    analysis: &crate::config::AnalysisConfig,
) -> GrowthbookDraft {
    use crate::analysis::engines::Engine;
    let sequential = match analysis.engine {
        Engine::Bayesian => None,
        Engine::Frequentist => Some(analysis.sequential),
    };
    let d = &p.draft;
    let mut description = format!("{}\n\nEvidence:\n", d.rationale.trim());
    for e in &d.evidence {
        description.push_str(&format!("- {}: {}\n", e.experiment_id, e.finding.trim()));
    }
    description.push_str(&format!(
        "\nRollback plan: {}\n\nProposed by hypod (proposal {}).",
        d.rollback_plan.trim(),
        p.id
    ));
    let metric = |kpi: &String| config.metrics.get(kpi).cloned();
    let mut guardrails: Vec<String> = d.guardrail_kpis.iter().filter_map(metric).collect();
    guardrails.dedup();
    GrowthbookDraft {
        tracking_key: tracking_key(&p.id),
        name: d.title.clone(),
        status: "draft",
        variations: vec![
            GrowthbookVariation {
                key: "0".into(),
                name: "control".into(),
                description: None,
            },
            GrowthbookVariation {
                key: "1".into(),
                name: "treatment".into(),
                description: Some(at_most(&d.change, MAX_DESCRIPTION)),
            },
        ],
        hypothesis: d.hypothesis.clone(),
        description: at_most(&description, MAX_DESCRIPTION),
        tags: vec![
            "hypod".into(),
            format!("moment:{}", d.moment),
            format!("lever:{}", d.lever),
            format!("segment:{}", d.segment),
        ],
        metrics: metric(&d.primary_kpi).into_iter().collect(),
        guardrail_metrics: guardrails,
        datasource_id: config.datasource_id.clone(),
        assignment_query_id: config.assignment_query_id.clone(),
        project: config.project.clone(),
        owner: approver.and_then(|user| config.owners.get(user).cloned()),
        stats_engine: analysis.engine.as_str(),
        sequential_testing_enabled: sequential.map(|s| s.is_some()),
        sequential_testing_tuning_parameter: sequential.flatten().map(|s| s.tuning),
    }
}

/// The delay before attempt `attempts + 1`: `base · 2^(attempts−1)`, at most an hour.
pub fn backoff(base: Duration, attempts: i64) -> Duration {
    let doublings = attempts.clamp(1, 20) - 1;
    base.saturating_mul(1u32 << doublings).min(MAX_BACKOFF)
}

/// What a push pass did with one proposal.
#[derive(Debug, Clone, Serialize)]
pub struct PushResult {
    pub proposal_id: String,
    /// The push as stored after the attempt (`None` when another process holds it now).
    pub push: Option<PushRecord>,
}

/// The GrowthBook client of the push: the configuration and the API key from the environment.
pub struct PushClient {
    config: GrowthbookExport,
    key: String,
    http: reqwest::Client,
    hold: Duration,
}

impl PushClient {
    /// `text` with the API key blotted out (a message never carries it).
    fn clean(&self, text: &str) -> String {
        let text: String = text.chars().filter(|c| !c.is_control()).collect();
        let text = if self.key.len() >= 4 {
            text.replace(&self.key, "[redacted]")
        } else {
            text
        };
        at_most(&text, 2000)
    }

    fn endpoint(&self) -> String {
        format!(
            "{}/api/v1/experiments",
            self.config.url.trim_end_matches('/')
        )
    }

    /// A reqwest error as one line, without the address's query or the key.
    fn describe(&self, error: reqwest::Error) -> String {
        let error = error.without_url();
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        self.clean(&text)
    }

    /// Posts `draft` and reads the answer as an outcome.
    async fn post(&self, draft: &GrowthbookDraft, attempts: i64) -> PushOutcome {
        let base = Duration::from_secs(self.config.retry_seconds);
        let retry = |status: Option<u16>, error: String, after: Option<Duration>| {
            let retry_in = backoff(base, attempts).max(after.unwrap_or_default());
            PushOutcome::Retry {
                http_status: status,
                error,
                retry_in,
            }
        };
        let response = match self
            .http
            .post(self.endpoint())
            .bearer_auth(&self.key)
            .json(draft)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                return retry(
                    None,
                    format!("GrowthBook did not answer: {}", self.describe(e)),
                    None,
                )
            }
        };
        let status = response.status();
        // Seconds or an HTTP date, as GrowthBook writes either on a `429`; believed up to the
        // longest backoff.
        let retry_after = crate::sources::growthbook::retry_after(response.headers(), MAX_BACKOFF);
        let body: Option<serde_json::Value> = response.json().await.ok();
        let message = body
            .as_ref()
            .and_then(|b| b.get("message"))
            .and_then(|m| m.as_str())
            .map(|m| self.clean(m))
            .unwrap_or_else(|| format!("GrowthBook answered {status} without a message"));
        let code = Some(status.as_u16());
        if status.is_success() {
            return match body
                .as_ref()
                .and_then(|b| b.pointer("/experiment/id"))
                .and_then(|id| id.as_str())
            {
                Some(id) => PushOutcome::Pushed {
                    experiment_id: id.to_string(),
                    experiment_url: self.config.experiment_url(id),
                    confirmed_duplicate: false,
                },
                // Created, but the answer names no id: read it back by tracking key.
                None => self.confirm(draft, attempts, code, &message).await,
            };
        }
        if status.as_u16() == 429 || status.is_server_error() {
            return retry(
                code,
                format!("GrowthBook answered {status}: {message}"),
                retry_after,
            );
        }
        if status.as_u16() == 400 && message.contains("tracking key already exists") {
            return self.confirm(draft, attempts, code, &message).await;
        }
        PushOutcome::Refused {
            http_status: code,
            message,
        }
    }

    /// After GrowthBook said the tracking key exists: the experiment read back by tracking key
    /// is this proposal's (an earlier attempt created it and its answer was lost).
    async fn confirm(
        &self,
        draft: &GrowthbookDraft,
        attempts: i64,
        code: Option<u16>,
        message: &str,
    ) -> PushOutcome {
        let base = Duration::from_secs(self.config.retry_seconds);
        let response = self
            .http
            .get(self.endpoint())
            .query(&[("trackingKey", draft.tracking_key.as_str())])
            .bearer_auth(&self.key)
            .send()
            .await;
        let retry = |error: String| PushOutcome::Retry {
            http_status: code,
            error,
            retry_in: backoff(base, attempts),
        };
        let response = match response {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                return retry(format!(
                    "{message}; reading it back by tracking key answered {}",
                    r.status()
                ))
            }
            Err(e) => {
                return retry(format!(
                    "{message}; reading it back by tracking key failed: {}",
                    self.describe(e)
                ))
            }
        };
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let found = body
            .get("experiments")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .find(|e| e.get("trackingKey").and_then(|k| k.as_str()) == Some(&draft.tracking_key))
            .and_then(|e| e.get("id"))
            .and_then(|id| id.as_str());
        match found {
            Some(id) => PushOutcome::Pushed {
                experiment_id: id.to_string(),
                experiment_url: self.config.experiment_url(id),
                confirmed_duplicate: true,
            },
            None => PushOutcome::Refused {
                http_status: code,
                message: format!(
                    "{message} (no experiment with tracking key {} could be read with this API key)",
                    draft.tracking_key
                ),
            },
        }
    }
}

impl App {
    /// `[export.growthbook]`, or the error saying it is missing.
    pub fn growthbook_config(&self) -> AppResult<&GrowthbookExport> {
        self.config().export.growthbook.as_ref().ok_or_else(|| {
            AppError::config(
                "key `export.growthbook`: not configured; add an [export.growthbook] table (url, api_key_env, assignment_query_id …, docs/configuration.md) to export or push GrowthBook drafts",
            )
        })
    }

    /// The push's client: `[export.growthbook]` and its API key from the environment.
    pub fn push_client(&self) -> AppResult<PushClient> {
        let config = self.growthbook_config()?.clone();
        let key = std::env::var(&config.api_key_env)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                AppError::config(format!(
                    "the environment variable {} (key `export.growthbook.api_key_env`) is not set: set it to a GrowthBook API key to push drafts",
                    config.api_key_env
                ))
            })?;
        let hold = Duration::from_secs(config.hold_seconds);
        let http = reqwest::Client::builder()
            .timeout((hold / 2).min(Duration::from_secs(30)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AppError::runtime(format!("cannot build the GrowthBook client: {e}")))?;
        Ok(PushClient {
            config,
            key,
            http,
            hold,
        })
    }

    /// One pass of the push outbox: up to ten due pushes claimed, each posted and its outcome
    /// recorded (with its audit entry, by `actor`). What became of each.
    pub async fn push_due(&self, client: &PushClient, actor: &str) -> AppResult<Vec<PushResult>> {
        let store = self.store().await?;
        let items = store.claim_pushes(BATCH, client.hold).await?;
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let outcome = self.attempt(client, &item).await?;
            match &outcome {
                PushOutcome::Pushed { experiment_id, .. } => {
                    tracing::info!(
                        proposal = item.proposal_id,
                        experiment = experiment_id,
                        "pushed to GrowthBook"
                    )
                }
                PushOutcome::Refused { message, .. } => {
                    tracing::warn!(proposal = item.proposal_id, error = %message, "GrowthBook refused the draft")
                }
                PushOutcome::Retry { error, .. } => {
                    tracing::warn!(proposal = item.proposal_id, attempt = item.attempts, error = %error, "push failed; will retry")
                }
            }
            let held = store.finish_push(&item, &outcome, actor).await?;
            if !held {
                tracing::info!(
                    proposal = item.proposal_id,
                    "the hold on this push expired; its outcome is left to whoever holds it now"
                );
            }
            results.push(PushResult {
                push: if held {
                    store.push_of(&item.proposal_id).await?
                } else {
                    None
                },
                proposal_id: item.proposal_id,
            });
        }
        Ok(results)
    }

    /// One attempt at a claimed push.
    async fn attempt(&self, client: &PushClient, item: &PushItem) -> AppResult<PushOutcome> {
        let store = self.store().await?;
        let refused = |message: String| PushOutcome::Refused {
            http_status: None,
            message,
        };
        let Some(proposal) = store.get_proposal(&item.proposal_id).await? else {
            return Ok(refused(format!(
                "proposal {} is not in the database",
                item.proposal_id
            )));
        };
        if proposal.status != ProposalStatus::Approved {
            return Ok(refused(format!(
                "proposal {} is {}, not approved: not sent",
                proposal.id, proposal.status
            )));
        }
        // The one check of a draft before it leaves hypod, as export does.
        match self.vouch_draft(&proposal).await {
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::Conflict => return Ok(refused(e.message)),
            Err(e) => return Err(e),
        }
        let reviews = store.proposal_reviews(&proposal.id).await?;
        let draft = growthbook_draft(
            &proposal,
            approver(&reviews),
            &client.config,
            &self.config().analysis,
        );
        Ok(client.post(&draft, item.attempts).await)
    }

    /// `export --push`: every approved proposal the audit log explains is queued for a push
    /// (one never queued, or one refused before), then every due push is posted through the
    /// same outbox as `hypod serve`'s (so a proposal is still pushed at most once). The pushes
    /// of the approved proposals as they stand after, and those withheld.
    pub async fn push_approved(&self, actor: &str) -> AppResult<PushReport> {
        let client = self.push_client()?;
        let (proposals, withheld) = self.vouched(ProposalStatus::Approved).await?;
        let ids: Vec<String> = proposals.iter().map(|p| p.id.clone()).collect();
        let store = self.store().await?;
        store.enqueue_pushes(&ids, PLATFORM).await?;
        // Each due push is claimed once per pass; one retried is not due again at once.
        while !self.push_due(&client, actor).await?.is_empty() {}
        let mut pushes = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(push) = store.push_of(id).await? {
                pushes.push(push);
            }
        }
        Ok(PushReport { pushes, withheld })
    }
}

/// What `export --push` did: each approved proposal's push, and those withheld.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub pushes: Vec<PushRecord>,
    pub withheld: Vec<crate::store::AuditProblem>,
}

impl PushReport {
    /// Exit 1 when a push was refused or is still pending.
    pub fn outcome(&self) -> AppResult<()> {
        let open = self
            .pushes
            .iter()
            .filter(|p| p.state != crate::store::PushState::Pushed)
            .count();
        if open == 0 {
            Ok(())
        } else {
            Err(AppError::new(
                ErrorKind::Runtime,
                format!("{open} proposal(s) not pushed (see above)"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_in_utf16_units() {
        let text = "é".repeat(20) + &"𝄞".repeat(20);
        let cut = at_most(&text, 30);
        assert!(cut.encode_utf16().count() <= 30, "{cut}");
        assert!(cut.ends_with('…'));
        assert_eq!(at_most("short", 30), "short");
    }

    fn config() -> GrowthbookExport {
        GrowthbookExport {
            url: "https://api.growthbook.io".into(),
            api_key_env: "GB".into(),
            app_url: None,
            project: None,
            datasource_id: Some("ds".into()),
            assignment_query_id: "aq".into(),
            push_on_approval: false,
            metrics: [("conversion_rate".to_string(), "met_c".to_string())].into(),
            owners: [("rita".to_string(), "rita@shop.example".to_string())].into(),
            retry_seconds: 30,
            hold_seconds: 60,
        }
    }

    fn proposal() -> Proposal {
        let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let mut draft = crate::domain::draft::tests_support::draft();
        draft.rationale = "x".repeat(20_000);
        draft.primary_kpi = "conversion_rate".into();
        draft.guardrail_kpis = vec!["not_mapped".into()];
        Proposal {
            id: "p1".into(),
            run_id: "r1".into(),
            status: ProposalStatus::Approved,
            created_at: at,
            updated_at: at,
            draft,
            enrichment: Default::default(),
            verdicts: Vec::new(),
            provenance: Default::default(),
            approvals_required: 1,
            superseded_by: None,
        }
    }

    #[test]
    fn the_draft_holds_only_what_growthbook_takes() {
        let config = config();
        let body = serde_json::to_value(growthbook_draft(
            &proposal(),
            Some("rita"),
            &config,
            &Default::default(),
        ))
        .expect("json");
        assert_eq!(body["trackingKey"], "hypod-p1");
        assert_eq!(body["status"], "draft");
        assert_eq!(body["owner"], "rita@shop.example");
        assert_eq!(body["metrics"], serde_json::json!(["met_c"]));
        // An unmapped KPI is left out, and so is an empty list and an absent project.
        assert!(body.get("guardrailMetrics").is_none(), "{body}");
        assert!(body.get("project").is_none(), "{body}");
        let description = body["description"].as_str().expect("a description");
        assert!(description.encode_utf16().count() <= MAX_DESCRIPTION);
        let keys: Vec<&str> = body
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        for key in &keys {
            assert!(
                [
                    "trackingKey",
                    "name",
                    "status",
                    "variations",
                    "hypothesis",
                    "description",
                    "tags",
                    "metrics",
                    "datasourceId",
                    "assignmentQueryId",
                    "owner",
                    "statsEngine",
                    "sequentialTestingEnabled",
                ]
                .contains(key),
                "{key}"
            );
        }
        // An approver not mapped: no owner at all.
        let body = serde_json::to_value(growthbook_draft(
            &proposal(),
            Some("ada"),
            &config,
            &Default::default(),
        ))
        .expect("json");
        assert!(body.get("owner").is_none(), "{body}");
        // hypod's engine goes with the draft: frequentist, fixed horizon by default.
        assert_eq!(body["statsEngine"], "frequentist");
        assert_eq!(body["sequentialTestingEnabled"], false);
        let sequential = crate::config::AnalysisConfig {
            sequential: Some(crate::analysis::engines::Sequential { tuning: 2000.0 }),
            ..Default::default()
        };
        let body = serde_json::to_value(growthbook_draft(&proposal(), None, &config, &sequential))
            .expect("json");
        assert_eq!(body["sequentialTestingEnabled"], true);
        assert_eq!(body["sequentialTestingTuningParameter"], 2000.0);
        let bayesian = crate::config::AnalysisConfig {
            engine: crate::analysis::engines::Engine::Bayesian,
            ..Default::default()
        };
        let body = serde_json::to_value(growthbook_draft(&proposal(), None, &config, &bayesian))
            .expect("json");
        assert_eq!(body["statsEngine"], "bayesian");
        assert!(body.get("sequentialTestingEnabled").is_none(), "{body}");
        assert_eq!(
            config.experiment_url("exp_1"),
            "https://app.growthbook.io/experiment/exp_1"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(30);
        assert_eq!(backoff(base, 1), base);
        assert_eq!(backoff(base, 3), Duration::from_secs(120));
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
    }
}
