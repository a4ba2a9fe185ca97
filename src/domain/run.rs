//! The record of one run: what triggered it, how it ended, what it counted, and the provenance
//! (proposer, model usage, digests) it was made with.

use super::draft::{LlmUsage, RejectedDraft};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub trigger: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub proposer: String,
    /// Why the run used the builtin proposer instead of the configured one, if it did.
    pub fell_back: Option<String>,
    pub error: Option<String>,
    pub summary: RunSummary,
    pub usage: Option<LlmUsage>,
    pub policy_digest: String,
    pub input_digest: String,
    pub rejected_drafts: Vec<RejectedDraft>,
    pub notes: Vec<String>,
}
