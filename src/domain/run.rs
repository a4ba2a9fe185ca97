//! The record of one run: what triggered it, how it ended, what it counted, and the provenance
//! (proposer, model usage, digests) it was made with.

use super::draft::{LlmUsage, RejectedDraft};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What started a run. Serialised as `cli`, `api` (`api:<user>` since the caller is kept), `demo`,
/// `schedule:<slot>` or `mcp:<user>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Trigger {
    /// `hypod run`.
    Cli,
    /// `POST /api/v1/runs`, with the user who asked (absent in runs recorded before it was
    /// kept).
    Api(Option<String>),
    /// `hypod demo`.
    Demo,
    /// The scheduler, with the slot key (the UTC instant of the scheduled fire).
    Schedule(String),
    /// One draft an agent submitted over MCP (`submit_draft`), with the user it acts for: the
    /// draft takes a run's path (validate, enrich, govern, queue) as a run of its own.
    Mcp(String),
}

impl Trigger {
    /// Who the audit log names as a run's actor: `scheduler` for a scheduled run, else the
    /// trigger as written (`cli`, `api:<user>` for one asked through the API, `demo`,
    /// `mcp:<user>` for an agent's submission).
    pub fn actor(&self) -> String {
        match self {
            Trigger::Schedule(_) => "scheduler".to_string(),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Cli => f.write_str("cli"),
            Trigger::Api(None) => f.write_str("api"),
            Trigger::Api(Some(user)) => write!(f, "api:{user}"),
            Trigger::Demo => f.write_str("demo"),
            Trigger::Schedule(slot) => write!(f, "schedule:{slot}"),
            Trigger::Mcp(user) => write!(f, "mcp:{user}"),
        }
    }
}

impl From<Trigger> for String {
    fn from(trigger: Trigger) -> String {
        trigger.to_string()
    }
}

impl TryFrom<String> for Trigger {
    type Error = String;

    fn try_from(text: String) -> Result<Trigger, String> {
        match text.as_str() {
            "cli" => Ok(Trigger::Cli),
            "api" => Ok(Trigger::Api(None)),
            "demo" => Ok(Trigger::Demo),
            other => {
                if let Some(slot) = other.strip_prefix("schedule:") {
                    Ok(Trigger::Schedule(slot.to_string()))
                } else if let Some(user) = other.strip_prefix("mcp:") {
                    Ok(Trigger::Mcp(user.to_string()))
                } else if let Some(user) = other.strip_prefix("api:") {
                    Ok(Trigger::Api(Some(user.to_string())))
                } else {
                    Err(format!("unknown run trigger {other:?}"))
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Proposals were drafted, governed and queued.
    Succeeded,
    /// The program is not ready for agentic proposals: a report, no proposals.
    NotReady,
    /// Nothing was queued; `error` says why.
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::NotReady => "not_ready",
            RunStatus::Failed => "failed",
        }
    }
}

/// Counts a run reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub experiments: usize,
    pub drafts: usize,
    pub queued: usize,
    pub blocked: usize,
    pub escalated: usize,
    /// Drafts not queued because an open proposal already covers them.
    pub duplicates: usize,
    /// Drafts the proposer dropped as invalid.
    pub dropped: usize,
    /// Pending proposals this run expired (older than `proposer.expire_pending_after_days`).
    #[serde(default)]
    pub expired: usize,
    /// Pending proposals this run replaced with a draft of the same idea on better evidence.
    #[serde(default)]
    pub superseded: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRecord {
    pub id: String,
    /// `cli`, `api`, `demo` or `schedule:<slot>`.
    #[schema(value_type = String)]
    pub trigger: Trigger,
    #[schema(value_type = String)]
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub proposer: String,
    /// Why the run used the builtin proposer instead of the configured one, if it did.
    pub fell_back: Option<String>,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub summary: RunSummary,
    #[schema(value_type = Option<Object>)]
    pub usage: Option<LlmUsage>,
    pub policy_digest: String,
    pub input_digest: String,
    #[schema(value_type = Vec<Object>)]
    pub rejected_drafts: Vec<RejectedDraft>,
    pub notes: Vec<String>,
    /// The audit chain's head after this run's entries: keep it to detect later that entries
    /// were cut off or the database rolled back. Set by the store when the run is recorded.
    #[serde(default)]
    pub audit_head: Option<super::audit::AuditHead>,
    /// Seconds each stage took in this process (`load`, `analyse`, `propose`,
    /// `validate_govern`, `queue`), for the daemon's metrics; not stored.
    #[serde(skip)]
    pub stage_seconds: Vec<(&'static str, f64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_reads_back_as_it_was_written_and_names_its_actor() {
        let all = [
            (Trigger::Cli, "cli", "cli"),
            (Trigger::Api(None), "api", "api"),
            (Trigger::Api(Some("ada".into())), "api:ada", "api:ada"),
            (Trigger::Demo, "demo", "demo"),
            (
                Trigger::Schedule("2026-12-05T03:00:00Z".into()),
                "schedule:2026-12-05T03:00:00Z",
                "scheduler",
            ),
            (Trigger::Mcp("rita".into()), "mcp:rita", "mcp:rita"),
        ];
        for (trigger, text, actor) in all {
            assert_eq!(trigger.to_string(), text);
            assert_eq!(Trigger::try_from(text.to_string()), Ok(trigger.clone()));
            assert_eq!(trigger.actor(), actor);
        }
        assert!(Trigger::try_from("cron".to_string()).is_err());
    }
}
