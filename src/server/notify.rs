//! Notifications: delivers the outbox (one row per recorded run, written in the run's own
//! transaction, and one per review that approved or rejected a proposal, written in the
//! review's) to `notify.webhook_url` as Slack-compatible JSON (`{"text": …}`), never
//! blocking a run or a review. A run's message names its escalated proposals and who must
//! approve them. Each row is held while it is sent (`notify.hold_seconds`, renewed before
//! each send of a batch; a row whose hold expired is not sent), so one daemon sends it; a
//! failure is retried with exponential backoff from `notify.retry_seconds` (capped at an
//! hour); rows older than a day are given up. Delivery is at least once: a crash between a
//! receiver's 200 and the row's update sends it again, so the text carries the run or proposal
//! id to deduplicate on. Proposals are linked to their page in the web UI under `server.public_url`.
//! The webhook's address is never logged or stored beyond its scheme and host: its path is a
//! secret.

use crate::config::Config;
use crate::domain::{
    escalates, ApprovalProgress, Proposal, ProposalFilter, ProposalStatus, Review, ReviewAction,
    RunRecord,
};
use crate::store::{Notice, OutboxItem, Store};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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
    // Drafts the run could not use (a model's invalid ones, an agent's refused submission).
    if s.dropped > 0 {
        let _ = write!(
            text,
            " {} draft(s) dropped as invalid (their reasons are in the run).",
            s.dropped
        );
    }
    if let Some(error) = &run.error {
        let _ = write!(text, "\nError: {}", escape(error));
    }
    // What the run said of its history (a source whose sync failed, a program not ready).
    for note in &run.notes {
        let _ = write!(text, "\nNote: {}", escape(note));
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
        let line = link(public_url, &p.id, &p.draft.title);
        let _ = write!(
            text,
            "\n• {line} ({}, priority {:.0})",
            p.draft.moment, p.enrichment.priority
        );
    }
    // The escalated ones cannot be approved without governance: say so, and by name.
    let mut escalated: Vec<_> = queued.iter().filter(|p| escalates(&p.verdicts)).collect();
    escalated.sort_by(|a, b| a.id.cmp(&b.id));
    if !escalated.is_empty() {
        text.push_str("\nNeeds governance approval:");
    }
    for p in escalated.iter().take(TOP) {
        let progress = ApprovalProgress::from_parts(p.status, p.approvals_required, true, &[]);
        let _ = write!(
            text,
            "\n• {} ({})",
            link(public_url, &p.id, &p.draft.title),
            progress.describe()
        );
    }
    if escalated.len() > TOP {
        let _ = write!(text, "\n• and {} more", escalated.len() - TOP);
    }
    text
}

/// A proposal's title, linked to its page in the web UI under `public_url` (when set).
fn link(public_url: &str, id: &str, title: &str) -> String {
    let title = escape(title);
    if public_url.is_empty() {
        title
    } else {
        format!(
            "<{}/ui/proposals/{id}|{title}>",
            public_url.trim_end_matches('/')
        )
    }
}

/// The message for a review that approved or rejected `proposal`: its title (linked), who
/// decided, and their note.
pub fn review_message(proposal: &Proposal, review: &Review, public_url: &str) -> String {
    let verb = match review.action {
        ReviewAction::Approve => "approved",
        ReviewAction::Reject => "rejected",
        ReviewAction::Comment => "commented on",
    };
    let mut text = format!(
        "hypod: proposal {} {verb} by {} ({}): {}",
        proposal.id,
        escape(&review.actor),
        review.role,
        link(public_url, &proposal.id, &proposal.draft.title)
    );
    if let Some(note) = review.note.as_deref().filter(|n| !n.trim().is_empty()) {
        let label = if review.action == ReviewAction::Reject {
            "Reason"
        } else {
            "Note"
        };
        let _ = write!(text, "\n{label}: {}", escape(note));
    }
    text
}

/// The body of one row's notification, built from what is stored: the run and its
/// proposals, or the review and its proposal.
async fn body(
    store: &dyn Store,
    config: &Config,
    item: &OutboxItem,
) -> Result<serde_json::Value, String> {
    let run_id = match &item.about {
        Notice::Run(run_id) => run_id,
        Notice::Review {
            proposal_id,
            review,
        } => {
            let proposal = store
                .get_proposal(proposal_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("proposal {proposal_id} is not in the database"))?;
            return Ok(serde_json::json!({
                "text": review_message(&proposal, review, &config.server.public_url),
            }));
        }
    };
    let run = store
        .get_run(run_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("run {run_id} is not in the database"))?;
    let proposals = store
        .list_proposals(&ProposalFilter {
            run_id: Some(run_id.clone()),
            ..ProposalFilter::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    // `audit_head`: the chain's head after the run, published so that anyone keeping the
    // notifications can later detect a cut-off log (`hypod audit verify --head SEQ:HASH`).
    Ok(serde_json::json!({
        "text": message(&run, &proposals, &config.server.public_url),
        "audit_head": run.audit_head.as_ref().map(ToString::to_string),
    }))
}

/// Where notifications go, and that address as it may be shown: scheme and host only, since
/// a webhook's path is a secret (a Slack webhook's path is its credential).
struct Webhook {
    url: reqwest::Url,
    shown: String,
}

impl Webhook {
    /// `error` and its causes as one line, without the webhook's address.
    fn describe(&self, error: &reqwest::Error) -> String {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        // reqwest's own text names the address; `without_url` drops it, and this makes sure
        // no cause repeats it either.
        let full = self.url.as_str();
        text.replace(full, &self.shown)
            .replace(full.trim_end_matches('/'), &self.shown)
    }

    /// Posts `body`: `Ok` on a 2xx answer, else what went wrong (never the address itself).
    async fn post(&self, http: &reqwest::Client, body: &serde_json::Value) -> Result<(), String> {
        let response = http
            .post(self.url.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "webhook {} unreachable: {}",
                    self.shown,
                    self.describe(&e.without_url())
                )
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "webhook {} answered {}",
                self.shown,
                response.status()
            ))
        }
    }
}

/// The delivery loop of `hypod serve`, until `stop`. Rows are claimed ten at a time and held
/// for `notify.hold_seconds`; before each send the holds of the batch still to send are
/// renewed, and a row whose hold expired (another daemon may have it now) is not sent. A send
/// is given at most half the hold, so it ends while the row is still held.
pub async fn run(config: Config, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    let hold = Duration::from_secs(config.notify.hold_seconds);
    let webhook = match reqwest::Url::parse(&config.notify.webhook_url) {
        Ok(url) => Webhook {
            url,
            shown: crate::config::redact_url(&config.notify.webhook_url),
        },
        Err(e) => {
            tracing::error!(error = %e, "notify.webhook_url is not a valid address; notifications are off");
            return;
        }
    };
    let http = match reqwest::Client::builder()
        .timeout(send_timeout(hold))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e.without_url(), "cannot build the webhook client; notifications are off");
            return;
        }
    };
    while !*stop.borrow() {
        match store.claim_notifications(10, hold, MAX_AGE).await {
            Ok(batch) => send_batch(&http, &webhook, store.as_ref(), &config, batch, &stop).await,
            Err(e) => tracing::warn!(error = %e, "cannot read the notification outbox"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

/// The longest a send may take with holds of `hold`: half of it (so it ends while the row is
/// still held, with time left to record it), at most ten seconds.
fn send_timeout(hold: Duration) -> Duration {
    (hold / 2).min(Duration::from_secs(10))
}

/// Sends a claimed batch one row at a time, renewing the holds of the rows still to send
/// before each send; a row no longer held is left to whoever holds it now.
async fn send_batch(
    http: &reqwest::Client,
    webhook: &Webhook,
    store: &dyn Store,
    config: &Config,
    mut batch: Vec<OutboxItem>,
    stop: &watch::Receiver<bool>,
) {
    let base = Duration::from_secs(config.notify.retry_seconds);
    let hold = Duration::from_secs(config.notify.hold_seconds);
    batch.reverse();
    while let Some(item) = batch.pop() {
        if *stop.borrow() {
            // The rest stay held until their hold expires; then any daemon sends them.
            return;
        }
        let outcome = match body(store, config, &item).await {
            Ok(body) => {
                let mut pending = batch.clone();
                pending.push(item.clone());
                let held = match store.renew_notifications(&pending, hold).await {
                    Ok(held) => held,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the hold on notifications; sending none of this batch");
                        return;
                    }
                };
                batch.retain(|i| held.contains(&i.id));
                if !held.contains(&item.id) {
                    tracing::info!(
                        subject = item.about.subject(),
                        "the hold on this notification expired; not sent here (another daemon may send it)"
                    );
                    continue;
                }
                webhook.post(http, &body).await
            }
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(()) => tracing::info!(subject = item.about.subject(), "notification delivered"),
            Err(e) => {
                tracing::warn!(subject = item.about.subject(), attempt = item.attempts, error = %e, "notification failed; will retry")
            }
        }
        let retry_in = backoff(base, item.attempts);
        if let Err(e) = store.finish_notification(item.id, outcome, retry_in).await {
            tracing::warn!(error = %e, "cannot record a notification attempt");
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

    fn proposal(title: &str) -> Proposal {
        let at = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let mut draft = crate::domain::draft::tests_support::draft();
        draft.title = title.into();
        Proposal {
            id: "p1".into(),
            run_id: "r1".into(),
            status: ProposalStatus::Rejected,
            created_at: at,
            updated_at: at,
            draft,
            enrichment: crate::domain::proposal::Enrichment::default(),
            verdicts: Vec::new(),
            provenance: crate::domain::proposal::Provenance::default(),
            approvals_required: 1,
            superseded_by: None,
        }
    }

    #[test]
    fn a_review_message_names_the_decision_and_escapes_what_people_wrote() {
        let review = Review {
            proposal_id: "p1".into(),
            actor: "gus".into(),
            role: crate::domain::Role::Governance,
            action: ReviewAction::Reject,
            note: Some("<https://evil|ok> & <!here>".into()),
            at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
        };
        let p = proposal("Free <b>shipping</b>");
        assert_eq!(
            review_message(&p, &review, "https://hypod.example.com/"),
            "hypod: proposal p1 rejected by gus (governance): \
             <https://hypod.example.com/ui/proposals/p1|Free &lt;b&gt;shipping&lt;/b&gt;>\n\
             Reason: &lt;https://evil|ok&gt; &amp; &lt;!here&gt;"
        );
        // Without `server.public_url`: the title alone, and no note line without a note.
        let approval = Review {
            action: ReviewAction::Approve,
            note: None,
            ..review
        };
        assert_eq!(
            review_message(&p, &approval, ""),
            "hypod: proposal p1 approved by gus (governance): Free &lt;b&gt;shipping&lt;/b&gt;"
        );
    }

    #[test]
    fn untrusted_text_cannot_forge_links_or_mentions() {
        assert_eq!(
            escape("<!channel> <https://evil|Approved> &\u{1b}[2J"),
            "&lt;!channel&gt; &lt;https://evil|Approved&gt; &amp;[2J"
        );
    }
}
