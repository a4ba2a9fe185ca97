//! What the audit log records: the actions, typed, with the one text form each is hashed and
//! stored under (`experiments.upsert`, `proposal.<status>`, `run.<status>`,
//! `review.<action>`).

use super::{ProposalStatus, ReviewAction, RunStatus};
use serde::{Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// An import wrote experiments.
    ExperimentsUpsert,
    /// A run stored a proposal with this status.
    Proposal(ProposalStatus),
    /// A run ended with this status.
    Run(RunStatus),
    /// A person reviewed a proposal.
    Review(ReviewAction),
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditAction::ExperimentsUpsert => f.write_str("experiments.upsert"),
            AuditAction::Proposal(status) => write!(f, "proposal.{}", status.as_str()),
            AuditAction::Run(status) => write!(f, "run.{}", status.as_str()),
            AuditAction::Review(action) => write!(f, "review.{}", action.as_str()),
        }
    }
}

impl AuditAction {
    /// The action a stored text stands for, `None` for a text hypod never writes.
    pub fn parse(text: &str) -> Option<AuditAction> {
        if text == "experiments.upsert" {
            return Some(AuditAction::ExperimentsUpsert);
        }
        let (kind, value) = text.split_once('.')?;
        match kind {
            "proposal" => ProposalStatus::parse(value).map(AuditAction::Proposal),
            "run" => [RunStatus::Succeeded, RunStatus::NotReady, RunStatus::Failed]
                .into_iter()
                .find(|s| s.as_str() == value)
                .map(AuditAction::Run),
            "review" => [ReviewAction::Approve, ReviewAction::Reject]
                .into_iter()
                .find(|a| a.as_str() == value)
                .map(AuditAction::Review),
            _ => None,
        }
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
        let mut all = vec![AuditAction::ExperimentsUpsert];
        all.extend(ProposalStatus::ALL.map(AuditAction::Proposal));
        all.extend(
            [RunStatus::Succeeded, RunStatus::NotReady, RunStatus::Failed].map(AuditAction::Run),
        );
        all.extend([ReviewAction::Approve, ReviewAction::Reject].map(AuditAction::Review));
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
