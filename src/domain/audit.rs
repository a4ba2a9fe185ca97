//! What the audit log records: the actions, typed, with the one text form each is hashed and
//! stored under (`experiments.upsert`, `history.sync`, `proposal.<status>`, `run.<status>`,
//! `review.<action>`, `review.refused`, `token.create`, `token.revoke`, `policies.changed`, `push.delivered`, `push.refused`).

use super::{ProposalStatus, ReviewAction, RunStatus};
use serde::{Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// An import wrote experiments.
    ExperimentsUpsert,
    /// A sync of one history source (subject: its name; detail: the counts, a digest of what
    /// was read and the digest of every record written, as an import's).
    HistorySync,
    /// A run stored a proposal with this status.
    Proposal(ProposalStatus),
    /// A run ended with this status.
    Run(RunStatus),
    /// A person reviewed a proposal.
    Review(ReviewAction),
    /// An approval was refused because the log does not vouch for the proposal's stored draft
    /// (nothing else was written; detail: who and why).
    ReviewRefused,
    /// An API token was created (subject: its id; detail: user, role, the SHA-256 of its
    /// secret and its creator).
    TokenCreate,
    /// An API token was revoked.
    TokenRevoke,
    /// A run evaluated its drafts against a policy set other than the last one logged
    /// (subject: the policy-set digest).
    PoliciesChanged,
    /// An approved proposal was created as a draft experiment on the platform (subject: the
    /// proposal; detail: the platform, its experiment id and URL, the attempts).
    PushDelivered,
    /// The platform refused an approved proposal's draft, or hypod would not send it (subject:
    /// the proposal; detail: the HTTP status and the platform's message).
    PushRefused,
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditAction::ExperimentsUpsert => f.write_str("experiments.upsert"),
            AuditAction::HistorySync => f.write_str("history.sync"),
            AuditAction::Proposal(status) => write!(f, "proposal.{}", status.as_str()),
            AuditAction::Run(status) => write!(f, "run.{}", status.as_str()),
            AuditAction::Review(action) => write!(f, "review.{}", action.as_str()),
            AuditAction::ReviewRefused => f.write_str("review.refused"),
            AuditAction::TokenCreate => f.write_str("token.create"),
            AuditAction::TokenRevoke => f.write_str("token.revoke"),
            AuditAction::PoliciesChanged => f.write_str("policies.changed"),
            AuditAction::PushDelivered => f.write_str("push.delivered"),
            AuditAction::PushRefused => f.write_str("push.refused"),
        }
    }
}

impl AuditAction {
    /// The action a stored text stands for, `None` for a text hypod never writes.
    pub fn parse(text: &str) -> Option<AuditAction> {
        match text {
            "experiments.upsert" => return Some(AuditAction::ExperimentsUpsert),
            "history.sync" => return Some(AuditAction::HistorySync),
            "token.create" => return Some(AuditAction::TokenCreate),
            "token.revoke" => return Some(AuditAction::TokenRevoke),
            "policies.changed" => return Some(AuditAction::PoliciesChanged),
            "review.refused" => return Some(AuditAction::ReviewRefused),
            "push.delivered" => return Some(AuditAction::PushDelivered),
            "push.refused" => return Some(AuditAction::PushRefused),
            _ => {}
        }
        let (kind, value) = text.split_once('.')?;
        match kind {
            "proposal" => ProposalStatus::parse(value).map(AuditAction::Proposal),
            "run" => [RunStatus::Succeeded, RunStatus::NotReady, RunStatus::Failed]
                .into_iter()
                .find(|s| s.as_str() == value)
                .map(AuditAction::Run),
            "review" => ReviewAction::parse(value).map(AuditAction::Review),
            _ => None,
        }
    }
}

/// The head of the audit chain: the last entry's sequence number and hash. Keep one elsewhere
/// to detect later that entries were cut off or the database rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditHead {
    pub seq: i64,
    pub hash: String,
}

impl fmt::Display for AuditHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl std::str::FromStr for AuditHead {
    type Err = String;

    /// `SEQ:HASH`, as `hypod audit head` prints it.
    fn from_str(text: &str) -> Result<AuditHead, String> {
        let (seq, hash) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not an audit head: expected SEQ:HASH"))?;
        let seq = seq
            .parse::<i64>()
            .map_err(|_| format!("{seq:?} is not a sequence number"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{hash:?} is not a SHA-256 hash (64 hex digits)"));
        }
        Ok(AuditHead {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

impl Serialize for AuditAction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_reads_back_as_itself() {
        let mut all = vec![AuditAction::ExperimentsUpsert, AuditAction::HistorySync];
        all.extend(ProposalStatus::ALL.map(AuditAction::Proposal));
        all.extend(
            [RunStatus::Succeeded, RunStatus::NotReady, RunStatus::Failed].map(AuditAction::Run),
        );
        all.extend(ReviewAction::ALL.map(AuditAction::Review));
        all.extend([
            AuditAction::TokenCreate,
            AuditAction::TokenRevoke,
            AuditAction::PoliciesChanged,
            AuditAction::ReviewRefused,
            AuditAction::PushDelivered,
            AuditAction::PushRefused,
        ]);
        for action in all {
            assert_eq!(AuditAction::parse(&action.to_string()), Some(action));
        }
        assert_eq!(
            AuditAction::Proposal(ProposalStatus::PendingReview).to_string(),
            "proposal.pending_review"
        );
        assert_eq!(AuditAction::parse("run.exploded"), None);
    }
}
