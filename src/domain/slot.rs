//! Slots: the unit of "exactly once". Every run — scheduled, manual or API — first claims a
//! slot by its key (a scheduled slot's key is the UTC instant of its fire), holds a lease on it
//! measured on the database's clock, and commits its results only while the fencing token it
//! was given is still the slot's. A replica that lost its lease can therefore never commit.

use serde::{Deserialize, Serialize};

/// What a run holds while it runs: the slot and the token its claim was given. A takeover
/// increments the token, so the earlier holder's commits are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub slot: String,
    pub token: i64,
}

/// Where a slot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotStatus {
    Running,
    Succeeded,
    Failed,
    /// Missed while everything was down, and `schedule.missed = "skip"`.
    Skipped,
}

impl SlotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Running => "running",
            SlotStatus::Succeeded => "succeeded",
            SlotStatus::Failed => "failed",
            SlotStatus::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<SlotStatus> {
        [
            SlotStatus::Running,
            SlotStatus::Succeeded,
            SlotStatus::Failed,
            SlotStatus::Skipped,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The slot is ours (first claim).
    Claimed(Fence),
    /// The slot's holder let its lease expire: it is ours now, to run from scratch.
    TakenOver(Fence),
    /// Another process holds a live lease on it.
    Held,
    /// The slot has ended already.
    Ended(SlotStatus),
}

/// One slot as stored, for listings and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotRecord {
    pub key: String,
    pub status: SlotStatus,
    pub owner: String,
    pub token: i64,
    pub takeovers: i64,
    pub run_id: Option<String>,
    pub reason: Option<String>,
}
