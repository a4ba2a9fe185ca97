//! A queued proposal: the draft with what hypod computed for it (enrichment), its verdicts,
//! provenance and status, and the filter the queue is listed with.

use super::draft::{ProposalDraft, Strategy};
use super::experiment::Moment;
use super::verdict::Verdict;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ProposalStatus {
    PendingReview,
    Approved,
    Rejected,
    Expired,
    Blocked,
    Superseded,
}

impl ProposalStatus {
    pub const ALL: [ProposalStatus; 6] = [
        ProposalStatus::PendingReview,
        ProposalStatus::Approved,
        ProposalStatus::Rejected,
        ProposalStatus::Expired,
        ProposalStatus::Blocked,
        ProposalStatus::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProposalStatus::PendingReview => "pending_review",
            ProposalStatus::Approved => "approved",
            ProposalStatus::Rejected => "rejected",
            ProposalStatus::Expired => "expired",
            ProposalStatus::Blocked => "blocked",
            ProposalStatus::Superseded => "superseded",
        }
    }

    pub fn parse(text: &str) -> Option<ProposalStatus> {
        ProposalStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Proposals that still occupy the queue: new drafts must not duplicate them.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            ProposalStatus::PendingReview | ProposalStatus::Approved
        )
    }
}

impl fmt::Display for ProposalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a near-duplicate was found of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateKind {
    RunningExperiment,
    Experiment,
    OpenProposal,
    RejectedProposal,
}

impl DuplicateKind {
    /// How a message names it.
    pub fn describe(self) -> &'static str {
        match self {
            DuplicateKind::RunningExperiment => "the running experiment",
            DuplicateKind::Experiment => "the experiment",
            DuplicateKind::OpenProposal => "the open proposal",
            DuplicateKind::RejectedProposal => "the recently rejected proposal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateRef {
    pub kind: DuplicateKind,
    pub id: String,
    /// Similarity in 0..=1 (1 = the same lever for the same segment at the same moment).
    pub similarity: f64,
}

/// What hypod computes for a draft (see docs/architecture.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Enrichment {
    /// Control conversion rate the sample size is computed from.
    pub baseline_rate: Option<f64>,
    /// Where the baseline comes from (which experiments).
    pub baseline_source: String,
    pub required_visitors_per_arm: Option<u64>,
    pub segment_daily_visitors: Option<u64>,
    /// Share of the segment's traffic that consented to every purpose the signals need.
    pub consented_share: Option<f64>,
    /// Expected duration: the days to reach the sample rounded up to whole weeks, never below
    /// `proposer.min_days` (see docs/proposals-and-queue.md).
    pub expected_duration_days: Option<f64>,
    /// Days the segment's consented traffic needs to fill both arms (before the whole-week
    /// rounding and `proposer.min_days`). `None` on proposals stored before it was recorded.
    #[serde(default)]
    pub days_to_reach_sample: Option<f64>,
    /// Value of one conversion used for the expected value.
    pub value_per_conversion: f64,
    /// Evidence strength in 0..=1 (how well the cited experiments support the expected lift).
    pub evidence_strength: f64,
    /// Expected extra revenue per day if the hypothesis holds.
    pub expected_value_per_day: f64,
    /// Ranking score (higher first).
    pub priority: f64,
    pub duplicate_of: Option<DuplicateRef>,
    /// The builtin proposer's strategy (transfer, retest, cover, validate).
    pub strategy: Option<Strategy>,
    /// The 95 % interval the next test's lift is predicted within: the expected lift (the
    /// lever knowledge base's, see `claimed_lift`) ± 1.96 × the knowledge base's predictive
    /// spread for the lever at the moment (its pooled standard error with the between-test
    /// variance τ²; a lever never tested gets the moment's pool). `None` when the history has no
    /// valid test. What the learning loop checks the realised lift against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_interval: Option<[f64; 2]>,
    /// The expected lift the proposer wrote, when it differs from the knowledge base's (which
    /// the draft now states, and which size, value and priority come from): a model's number, or
    /// a shipped rule's own reading, is a claim kept beside the figure, never the figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_lift: Option<f64>,
    /// Why the claim is not believed, when it lies outside `predicted_interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_warning: Option<String>,
    /// The open proposal this one replaced with better evidence (marked `superseded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// Why a statistic is missing, when one is.
    pub notes: Vec<String>,
}

impl Enrichment {
    /// The expected duration in words, with why it is longer than the sample needs and the
    /// consented share of the segment that drives it: "7 days: a full week, although 1 day
    /// would reach the sample; 86% of the segment consented". `None` without a duration.
    pub fn duration_words(&self) -> Option<String> {
        let days = self.expected_duration_days?;
        let plural = |n: f64| if n == 1.0 { "day" } else { "days" };
        let mut words = format!("{days:.0} {}", plural(days));
        if let Some(reach) = self.days_to_reach_sample.filter(|r| *r < days) {
            let weeks = (days / 7.0).round();
            let whole = if weeks == 1.0 {
                "a full week".to_string()
            } else {
                format!("{weeks:.0} full weeks")
            };
            words.push_str(&format!(
                ": {whole}, although {reach:.0} {} would reach the sample",
                plural(reach)
            ));
        }
        if let Some(share) = self.consented_share {
            words.push_str(&format!("; {:.0}% of the segment consented", share * 100.0));
        }
        Some(words)
    }
}

/// Where a proposal came from, for audit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub proposer: String,
    pub model: Option<String>,
    pub prompt_digest: Option<String>,
    pub policy_digest: String,
    pub input_digest: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
    /// The MCP client that submitted it (its name and version from the MCP initialize), for a
    /// proposal an agent submitted (`proposer` is then `mcp:<user>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: String,
    pub run_id: String,
    pub status: ProposalStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub draft: ProposalDraft,
    pub enrichment: Enrichment,
    pub verdicts: Vec<Verdict>,
    pub provenance: Provenance,
    pub approvals_required: u32,
    /// The proposal that replaced this one, when its status is `superseded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

/// Why a run closes an open proposal without a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Closing {
    /// Pending longer than `proposer.expire_pending_after_days`.
    Expired,
    /// A new draft of the same idea arrived with better evidence.
    Superseded,
}

impl Closing {
    pub fn status(self) -> ProposalStatus {
        match self {
            Closing::Expired => ProposalStatus::Expired,
            Closing::Superseded => ProposalStatus::Superseded,
        }
    }
}

/// A status change a run makes to a proposal already in the queue (queue hygiene), written in
/// the run's own transaction with its audit entry. It applies only while the proposal is still
/// `pending_review`: one reviewed meanwhile keeps its review.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusChange {
    pub proposal_id: String,
    pub closing: Closing,
    /// The proposal that replaces it (for `superseded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// In words, for the audit entry and the run's notes.
    pub reason: String,
}

/// Filters for listing the queue, highest priority first (ties by id).
#[derive(Debug, Clone, Default)]
pub struct ProposalFilter {
    pub status: Option<ProposalStatus>,
    pub moment: Option<Moment>,
    pub segment: Option<String>,
    pub run_id: Option<String>,
    /// Case-insensitive words that must appear in the title or hypothesis.
    pub text: Option<String>,
    /// The listing's order (highest priority first unless said).
    pub order: QueueOrder,
    /// Keyset pagination: only proposals after this one in the listing order.
    pub after: Option<PageCursor>,
    pub limit: Option<usize>,
}

/// The order a listing of the queue is in (`sort` in the web UI), each with its tie-break by id
/// so that keyset pagination is exact.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum QueueOrder {
    /// Highest priority (expected value per day) first.
    #[default]
    Value,
    /// Newest first.
    Age,
    /// Expiring soonest first: the oldest first, as a pending proposal expires a fixed number of
    /// days after its creation.
    Expiry,
}

impl QueueOrder {
    pub const ALL: [QueueOrder; 3] = [QueueOrder::Value, QueueOrder::Age, QueueOrder::Expiry];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueOrder::Value => "value",
            QueueOrder::Age => "age",
            QueueOrder::Expiry => "expiry",
        }
    }

    pub fn parse(text: &str) -> Option<QueueOrder> {
        QueueOrder::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// What a page of the queue ended on in its order: the last proposal's priority (by value)
/// or creation time (by age or expiry).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CursorKey {
    Priority(f64),
    Created(DateTime<Utc>),
}

/// Where a page of the queue ended: the last proposal's key in the listing's order, and its id.
#[derive(Debug, Clone, PartialEq)]
pub struct PageCursor {
    pub key: CursorKey,
    pub id: String,
}

impl PageCursor {
    pub fn of(p: &Proposal, order: QueueOrder) -> PageCursor {
        let key = match order {
            QueueOrder::Value => CursorKey::Priority(p.enrichment.priority),
            QueueOrder::Age | QueueOrder::Expiry => CursorKey::Created(p.created_at),
        };
        PageCursor {
            key,
            id: p.id.clone(),
        }
    }

    /// Whether this cursor can continue a listing in `order`.
    pub fn fits(&self, order: QueueOrder) -> bool {
        matches!(
            (self.key, order),
            (CursorKey::Priority(_), QueueOrder::Value)
                | (CursorKey::Created(_), QueueOrder::Age | QueueOrder::Expiry)
        )
    }

    /// The priority it ended on (by value).
    pub fn priority(&self) -> Option<f64> {
        match self.key {
            CursorKey::Priority(p) => Some(p),
            CursorKey::Created(_) => None,
        }
    }

    /// The creation time it ended on (by age or expiry).
    pub fn created(&self) -> Option<DateTime<Utc>> {
        match self.key {
            CursorKey::Created(t) => Some(t),
            CursorKey::Priority(_) => None,
        }
    }

    /// An opaque text form for URLs: the priority's bits in hex (or `t` and the creation time
    /// in microseconds), a dot, the id.
    pub fn encode(&self) -> String {
        match self.key {
            CursorKey::Priority(p) => format!("{:016x}.{}", p.to_bits(), self.id),
            CursorKey::Created(t) => format!("t{}.{}", t.timestamp_micros(), self.id),
        }
    }

    pub fn decode(text: &str) -> Option<PageCursor> {
        let (head, id) = text.split_once('.')?;
        if id.is_empty() || id.len() > 64 {
            return None;
        }
        let key = if let Some(micros) = head.strip_prefix('t') {
            CursorKey::Created(DateTime::from_timestamp_micros(micros.parse().ok()?)?)
        } else {
            let priority = f64::from_bits(u64::from_str_radix(head, 16).ok()?);
            if head.len() != 16 || !priority.is_finite() {
                return None;
            }
            CursorKey::Priority(priority)
        };
        Some(PageCursor {
            key,
            id: id.to_string(),
        })
    }
}

#[cfg(test)]
mod cursor_tests {
    use super::*;

    #[test]
    fn cursors_carry_their_order_and_come_back_whole() {
        let at = DateTime::from_timestamp_micros(1_790_000_000_123_456).expect("a time");
        for cursor in [
            PageCursor {
                key: CursorKey::Priority(16224.5),
                id: "a-1".into(),
            },
            PageCursor {
                key: CursorKey::Created(at),
                id: "b-2".into(),
            },
        ] {
            assert_eq!(PageCursor::decode(&cursor.encode()), Some(cursor));
        }
        let by_time = PageCursor::decode(&format!("t{}.x", at.timestamp_micros())).expect("one");
        assert!(by_time.fits(QueueOrder::Age) && by_time.fits(QueueOrder::Expiry));
        assert!(!by_time.fits(QueueOrder::Value));
        assert_eq!(QueueOrder::parse("expiry"), Some(QueueOrder::Expiry));
        assert_eq!(QueueOrder::parse("Value"), None);
        for bad in ["", "t.x", "tabc.x", "7ff0000000000000.x", "00.x", "t1."] {
            assert_eq!(PageCursor::decode(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_duration_says_why_it_is_longer_than_the_sample_needs() {
        let e = |duration, reach, share| Enrichment {
            expected_duration_days: duration,
            days_to_reach_sample: reach,
            consented_share: share,
            ..Enrichment::default()
        };
        assert_eq!(
            e(Some(7.0), Some(1.0), Some(1.0)).duration_words().as_deref(),
            Some("7 days: a full week, although 1 day would reach the sample; 100% of the segment consented")
        );
        assert_eq!(
            e(Some(42.0), Some(39.0), Some(0.74)).duration_words().as_deref(),
            Some("42 days: 6 full weeks, although 39 days would reach the sample; 74% of the segment consented")
        );
        assert_eq!(
            e(Some(7.0), Some(7.0), None).duration_words().as_deref(),
            Some("7 days")
        );
        // A proposal stored before the reach was recorded says what it knows.
        assert_eq!(
            e(Some(3.0), None, Some(0.5)).duration_words().as_deref(),
            Some("3 days; 50% of the segment consented")
        );
        assert_eq!(e(None, None, Some(1.0)).duration_words(), None);
    }
}
