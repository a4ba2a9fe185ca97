//! Run notifications: delivers the outbox (one row per recorded run, written in the run's own
//! transaction) to `notify.webhook_url` as Slack-compatible JSON (`{"text": …}`), never
//! blocking a run. Each row is held while it is sent, so one daemon sends it; a failure is
//! retried with exponential backoff from `notify.retry_seconds` (capped at an hour); rows
//! older than a day are given up. Delivery is at least once: a crash between a receiver's 200
//! and the row's update sends it again, so the text carries the run id to deduplicate on.

use crate::config::Config;
use crate::domain::{ProposalFilter, ProposalStatus, RunRecord};
use crate::store::{OutboxItem, Store};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a claimed row is held before another daemon may try it.
const HOLD: Duration = Duration::from_secs(60);
/// Rows older than this are given up rather than announced late.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Proposals listed in a notification.
const TOP: usize = 5;

/// The delay before attempt `attempts + 1`: `base · 2^(attempts−1)`, at most an hour.
pub fn backoff(base: Duration, attempts: i64) -> Duration {
    let doublings = attempts.clamp(1, 20) - 1;
    base.saturating_mul(1u32 << doublings).min(MAX_BACKOFF)
}

/// Slack's three escapes for text it shows (model-written titles are untrusted).
fn escape(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The message for one run.
pub fn message(run: &RunRecord, proposals: &[crate::domain::Proposal], public_url: &str) -> String {
    let s = &run.summary;
    let mut text = format!(
        "hypod run {} {} ({}): {} queued for review, {} escalated, {} blocked, {} duplicates of open proposals.",
        run.id,
        run.status.as_str(),
        escape(&run.trigger.to_string()),
        s.queued,
        s.escalated,
        s.blocked,
        s.duplicates
    );
    if let Some(error) = &run.error {
        let _ = write!(text, "\nError: {}", escape(error));
    }
    let mut queued: Vec<_> = proposals
        .iter()
        .filter(|p| p.status == ProposalStatus::PendingReview)
        .collect();
    queued.sort_by(|a, b| b.enrichment.priority.total_cmp(&a.enrichment.priority));
    if !queued.is_empty() {
        text.push_str("\nTop proposals:");
    }
    for p in queued.iter().take(TOP) {
        let title = escape(&p.draft.title);
        let line = if public_url.is_empty() {
            title
        } else {
            format!(
                "<{}/proposals/{}|{title}>",
                public_url.trim_end_matches('/'),
                p.id
            )
        };
        let _ = write!(
            text,
            "\n• {line} ({}, priority {:.0})",
            p.draft.moment, p.enrichment.priority
        );
    }
    text
}

/// Delivers one row: builds its message from the stored run and posts it.
async fn deliver(
    http: &reqwest::Client,
    store: &dyn Store,
    config: &Config,
    item: &OutboxItem,
) -> Result<(), String> {
    let run = store
        .get_run(&item.run_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("run {} is not in the database", item.run_id))?;
    let proposals = store
        .list_proposals(&ProposalFilter {
            run_id: Some(item.run_id.clone()),
            ..ProposalFilter::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    // `audit_head`: the chain's head after the run, published so that anyone keeping the
    // notifications can later detect a cut-off log (`hypod audit verify --head SEQ:HASH`).
    let body = serde_json::json!({
        "text": message(&run, &proposals, &config.server.public_url),
        "audit_head": run.audit_head.as_ref().map(ToString::to_string),
    });
    let response = http
        .post(&config.notify.webhook_url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("webhook unreachable: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("webhook answered {}", response.status()))
    }
}

/// The delivery loop of `hypod serve`, until `stop`.
pub async fn run(config: Config, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    let base = Duration::from_secs(config.notify.retry_seconds);
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client; notifications are off");
            return;
        }
    };
    while !*stop.borrow() {
        match store.claim_notifications(10, HOLD, MAX_AGE).await {
            Ok(items) => {
                for item in items {
                    let outcome = deliver(&http, store.as_ref(), &config, &item).await;
                    match &outcome {
                        Ok(()) => tracing::info!(run = item.run_id, "notification delivered"),
                        Err(e) => {
                            tracing::warn!(run = item.run_id, attempt = item.attempts, error = %e, "notification failed; will retry")
                        }
                    }
                    let retry_in = backoff(base, item.attempts);
                    if let Err(e) = store.finish_notification(item.id, outcome, retry_in).await {
                        tracing::warn!(error = %e, "cannot record a notification attempt");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the notification outbox"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(30);
        assert_eq!(backoff(base, 1), Duration::from_secs(30));
        assert_eq!(backoff(base, 3), Duration::from_secs(120));
        assert_eq!(backoff(base, 50), MAX_BACKOFF);
    }

    #[test]
    fn untrusted_text_cannot_forge_links_or_mentions() {
        assert_eq!(
            escape("<!channel> <https://evil|Approved> &\u{1b}[2J"),
            "&lt;!channel&gt; &lt;https://evil|Approved&gt; &amp;[2J"
        );
    }
}
