//! Reviews: one person's decision on one proposal, and the state rules that decide what it does
//! (who may review, nobody approves twice, escalated proposals need governance, a rejection needs
//! a reason, a blocked proposal is approved by nobody). People are compared by their normalised
//! [`Identity`] and its confusable skeleton, so one person cannot count twice by spelling their
//! name two ways or with look-alike letters. The store
//! only persists what these rules allow.

use super::identity::{self, Identity, TextError};
use super::proposal::{Proposal, ProposalStatus};
use super::verdict::escalates;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a person may do: viewer, reviewer, governance, admin.
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
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Role {
    /// Reads the queue.
    Viewer,
    /// Approves and rejects.
    Reviewer,
    /// Approves and rejects, and counts as the governance approval an escalated proposal needs.
    Governance,
    /// Everything governance may.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Reviewer => "reviewer",
            Role::Governance => "governance",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Viewer, Role::Reviewer, Role::Governance, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == text)
    }

    /// Whether this role may approve or reject.
    pub fn may_review(self) -> bool {
        !matches!(self, Role::Viewer)
    }

    /// Whether this role's approval is the governance approval escalated proposals need.
    pub fn governs(self) -> bool {
        matches!(self, Role::Governance | Role::Admin)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whom a token stands for: a person, or an agent (an editor assistant, a chat bot) that
/// reads and suggests drafts but never approves or rejects, whatever role its token holds.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    #[default]
    Person,
    Agent,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Person => "person",
            TokenKind::Agent => "agent",
        }
    }

    pub fn parse(text: &str) -> Option<TokenKind> {
        [TokenKind::Person, TokenKind::Agent]
            .into_iter()
            .find(|k| k.as_str() == text)
    }

    /// Whether this kind may approve or reject (an agent may only comment).
    pub fn may_decide(self) -> bool {
        self == TokenKind::Person
    }
}

impl std::fmt::Display for TokenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewAction {
    Approve,
    Reject,
    /// A remark on the record; it changes no status.
    Comment,
}

impl ReviewAction {
    pub const ALL: [ReviewAction; 3] = [
        ReviewAction::Approve,
        ReviewAction::Reject,
        ReviewAction::Comment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReviewAction::Approve => "approve",
            ReviewAction::Reject => "reject",
            ReviewAction::Comment => "comment",
        }
    }

    pub fn parse(text: &str) -> Option<ReviewAction> {
        ReviewAction::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// One person's decision on one proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub proposal_id: String,
    pub actor: String,
    pub role: Role,
    pub action: ReviewAction,
    pub note: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReviewError {
    #[error("proposal {} does not exist", identity::bounded(.0))]
    NotFound(String),
    #[error("proposal {id} is {status}: only pending_review proposals can be reviewed")]
    NotReviewable { id: String, status: ProposalStatus },
    #[error("{actor} has already approved proposal {id}: nobody approves twice")]
    AlreadyApproved { id: String, actor: String },
    #[error("a rejection needs a reason")]
    ReasonRequired,
    #[error("the reviewer name must not be empty")]
    ActorRequired,
    #[error("role {0}: only reviewer, governance or admin may review")]
    RoleMayNotReview(Role),
    #[error("proposal {id} is blocked by a deny verdict: nobody may approve it, admin included")]
    Blocked { id: String },
    #[error(transparent)]
    Text(#[from] TextError),
}

/// Decides what a review does to a proposal; returns the new status.
///
/// `previous` are the reviews already recorded for the proposal.
pub fn apply_review(
    proposal: &Proposal,
    previous: &[Review],
    review: &Review,
) -> Result<ProposalStatus, ReviewError> {
    let actor = match Identity::parse(&review.actor) {
        Ok(actor) => actor,
        Err(TextError::Empty { .. }) => return Err(ReviewError::ActorRequired),
        Err(other) => return Err(other.into()),
    };
    if !review.role.may_review() {
        return Err(ReviewError::RoleMayNotReview(review.role));
    }
    match review.action {
        ReviewAction::Comment => {
            identity::note("comment", review.note.as_deref(), true)?;
            return Ok(proposal.status);
        }
        ReviewAction::Reject => {
            let required = identity::note("reason", review.note.as_deref(), true);
            if let Err(TextError::Empty { .. }) = required {
                return Err(ReviewError::ReasonRequired);
            }
            required?;
        }
        ReviewAction::Approve => {
            identity::note("note", review.note.as_deref(), false)?;
        }
    }
    if proposal.status == ProposalStatus::Blocked {
        return Err(ReviewError::Blocked {
            id: proposal.id.clone(),
        });
    }
    if proposal.status != ProposalStatus::PendingReview {
        return Err(ReviewError::NotReviewable {
            id: proposal.id.clone(),
            status: proposal.status,
        });
    }
    match review.action {
        ReviewAction::Reject => Ok(ProposalStatus::Rejected),
        ReviewAction::Comment => Ok(proposal.status),
        ReviewAction::Approve => {
            let approvals: Vec<&Review> = previous
                .iter()
                .filter(|r| r.action == ReviewAction::Approve)
                .collect();
            // People are compared by their confusable skeletons (`rob` and a Cyrillic `rоb` are
            // one person). Stored names are folded again as records: a row written by an older
            // version, before mixed scripts were refused, cannot count as a second person.
            let same_person = |r: &&Review| {
                Identity::of_record(&r.actor).map_or(r.actor == review.actor, |a| a == actor)
            };
            if approvals.iter().any(same_person) {
                return Err(ReviewError::AlreadyApproved {
                    id: proposal.id.clone(),
                    actor: actor.to_string(),
                });
            }
            let count = approvals.len() as u32 + 1;
            let escalated = escalates(&proposal.verdicts);
            let governance_approved = !escalated
                || approvals
                    .iter()
                    .map(|r| r.role)
                    .chain(std::iter::once(review.role))
                    .any(Role::governs);
            if count >= proposal.approvals_required && governance_approved {
                Ok(ProposalStatus::Approved)
            } else {
                Ok(ProposalStatus::PendingReview)
            }
        }
    }
}

/// Someone who approved a proposal, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Approver {
    pub actor: String,
    pub role: Role,
}

/// Where a proposal stands on its way to approval: one reading for the API's answer to a
/// review, the proposal page and `queue show`. Approvals count distinct PEOPLE, compared as
/// [`Identity`] compares them (by confusable skeleton), not rows.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApprovalProgress {
    /// Distinct people who approved it.
    pub given: u32,
    /// How many it needs.
    pub required: u32,
    /// How many more it needs before it is approved (0 once it is no longer pending review).
    pub missing: u32,
    /// Roles one of the missing approvals must come from (`governance` — or `admin` — for an
    /// escalated proposal that no governance approval has reached yet).
    pub missing_roles: Vec<Role>,
    /// Who approved it, in the order they did (one entry per person).
    pub approvers: Vec<Approver>,
}

impl ApprovalProgress {
    /// The progress of `proposal`, given its recorded `reviews`.
    pub fn of(proposal: &Proposal, reviews: &[Review]) -> ApprovalProgress {
        ApprovalProgress::from_parts(
            proposal.status,
            proposal.approvals_required,
            escalates(&proposal.verdicts),
            reviews,
        )
    }

    /// The same from a proposal's status, required approvals and whether it is escalated (what a
    /// summary carries).
    pub fn from_parts(
        status: ProposalStatus,
        required: u32,
        escalated: bool,
        reviews: &[Review],
    ) -> ApprovalProgress {
        ApprovalProgress::from_approvals(
            status,
            required,
            escalated,
            reviews
                .iter()
                .filter(|r| r.action == ReviewAction::Approve)
                .map(|r| Approver {
                    actor: r.actor.clone(),
                    role: r.role,
                }),
        )
    }

    /// The same from the approvals alone, oldest first (what the queue's listing reads for a
    /// whole page in one query): the one reading every other constructor goes through.
    pub fn from_approvals(
        status: ProposalStatus,
        required: u32,
        escalated: bool,
        approvals: impl IntoIterator<Item = Approver>,
    ) -> ApprovalProgress {
        let mut seen: Vec<String> = Vec::new();
        let mut approvers = Vec::new();
        for a in approvals {
            // A name that no longer parses (an older row) is compared as written.
            let person = Identity::of_record(&a.actor)
                .map(|i| i.skeleton().to_string())
                .unwrap_or_else(|_| a.actor.clone());
            if seen.contains(&person) {
                continue;
            }
            seen.push(person);
            approvers.push(a);
        }
        let given = approvers.len() as u32;
        let pending = status == ProposalStatus::PendingReview;
        let needs_governance = pending && escalated && !approvers.iter().any(|a| a.role.governs());
        let missing = if pending {
            required
                .saturating_sub(given)
                .max(u32::from(needs_governance))
        } else {
            0
        };
        ApprovalProgress {
            given,
            required,
            missing,
            missing_roles: if needs_governance {
                vec![Role::Governance]
            } else {
                Vec::new()
            },
            approvers,
        }
    }

    /// In words: "1 of 2 approvals, waiting for governance".
    pub fn describe(&self) -> String {
        let noun = if self.required == 1 {
            "approval"
        } else {
            "approvals"
        };
        let mut text = format!("{} of {} {noun}", self.given, self.required);
        let governance = !self.missing_roles.is_empty();
        match (self.missing, governance) {
            (0, _) => {}
            (1, true) => text.push_str(", waiting for governance"),
            (n, true) => text.push_str(&format!(", waiting for {n} more, one from governance")),
            (n, false) => text.push_str(&format!(", waiting for {n} more")),
        }
        text
    }

    /// Who approved, in words: "approved by ada (reviewer)", or `None` before anyone did.
    pub fn approved_by(&self) -> Option<String> {
        if self.approvers.is_empty() {
            return None;
        }
        let names: Vec<String> = self
            .approvers
            .iter()
            .map(|a| format!("{} ({})", a.actor, a.role))
            .collect();
        Some(format!("approved by {}", names.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::draft::tests_support::draft;
    use crate::domain::proposal::{Enrichment, Provenance};
    use crate::domain::verdict::{Effect, RuleSource, Verdict};

    fn proposal(status: ProposalStatus, escalated: bool, approvals_required: u32) -> Proposal {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        Proposal {
            id: "p1".into(),
            run_id: "r1".into(),
            status,
            created_at: at,
            updated_at: at,
            draft: draft(),
            enrichment: Enrichment::default(),
            verdicts: vec![Verdict {
                rule_id: "cart-checkout-risk".into(),
                source: RuleSource::Policy,
                effect: Effect::Escalate,
                passed: !escalated,
                message: "escalated".into(),
            }],
            provenance: Provenance::default(),
            approvals_required,
            superseded_by: None,
        }
    }

    fn review(actor: &str, role: Role, action: ReviewAction, note: Option<&str>) -> Review {
        Review {
            proposal_id: "p1".into(),
            actor: actor.into(),
            role,
            action,
            note: note.map(str::to_string),
            at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    const PENDING: ProposalStatus = ProposalStatus::PendingReview;

    #[test]
    fn progress_counts_people_not_rows_and_names_the_missing_governance() {
        let p = proposal(PENDING, true, 2);
        let reviews = [
            review("rob", Role::Reviewer, ReviewAction::Approve, None),
            // The same person under a Cyrillic look-alike spelling, and a comment: no approval.
            review("r\u{043e}b", Role::Reviewer, ReviewAction::Approve, None),
            review("eve", Role::Reviewer, ReviewAction::Comment, Some("hm")),
        ];
        let progress = ApprovalProgress::of(&p, &reviews);
        assert_eq!(progress.given, 1);
        assert_eq!(progress.missing, 1);
        assert_eq!(progress.missing_roles, vec![Role::Governance]);
        assert_eq!(
            progress.describe(),
            "1 of 2 approvals, waiting for governance"
        );
        assert_eq!(
            progress.approved_by().as_deref(),
            Some("approved by rob (reviewer)")
        );
    }

    #[test]
    fn progress_of_an_escalated_proposal_two_reviewers_short_of_governance() {
        let p = proposal(PENDING, true, 2);
        let reviews = [
            review("rob", Role::Reviewer, ReviewAction::Approve, None),
            review("ada", Role::Reviewer, ReviewAction::Approve, None),
        ];
        let progress = ApprovalProgress::of(&p, &reviews);
        assert_eq!((progress.given, progress.missing), (2, 1));
        assert_eq!(
            progress.describe(),
            "2 of 2 approvals, waiting for governance"
        );
        let none = ApprovalProgress::of(&p, &[]);
        assert_eq!(
            none.describe(),
            "0 of 2 approvals, waiting for 2 more, one from governance"
        );
    }

    #[test]
    fn progress_of_a_plain_and_of_a_decided_proposal() {
        let plain = ApprovalProgress::of(&proposal(PENDING, false, 1), &[]);
        assert_eq!(plain.describe(), "0 of 1 approval, waiting for 1 more");
        assert!(plain.missing_roles.is_empty());
        assert_eq!(plain.approved_by(), None);
        let approved = proposal(ProposalStatus::Approved, true, 2);
        let reviews = [
            review("rob", Role::Reviewer, ReviewAction::Approve, None),
            review("gov", Role::Governance, ReviewAction::Approve, None),
        ];
        let done = ApprovalProgress::of(&approved, &reviews);
        assert_eq!((done.given, done.missing), (2, 0));
        assert!(done.missing_roles.is_empty());
        assert_eq!(done.describe(), "2 of 2 approvals");
        // Once decided nothing is missing, whatever was approved.
        let rejected = ApprovalProgress::of(&proposal(ProposalStatus::Rejected, true, 2), &[]);
        assert_eq!(rejected.missing, 0);
    }

    #[test]
    fn one_approval_approves_a_plain_proposal() {
        let p = proposal(PENDING, false, 1);
        let r = review("ada", Role::Reviewer, ReviewAction::Approve, None);
        assert_eq!(apply_review(&p, &[], &r), Ok(ProposalStatus::Approved));
    }

    #[test]
    fn a_rejection_needs_a_reason() {
        let p = proposal(PENDING, false, 1);
        let blank = review("ada", Role::Reviewer, ReviewAction::Reject, Some("  "));
        assert_eq!(
            apply_review(&p, &[], &blank),
            Err(ReviewError::ReasonRequired)
        );
        let reasoned = review(
            "ada",
            Role::Reviewer,
            ReviewAction::Reject,
            Some("too risky"),
        );
        assert_eq!(
            apply_review(&p, &[], &reasoned),
            Ok(ProposalStatus::Rejected)
        );
    }

    #[test]
    fn an_escalated_proposal_needs_governance_among_its_approvals() {
        let p = proposal(PENDING, true, 2);
        let first = review("ada", Role::Reviewer, ReviewAction::Approve, None);
        assert_eq!(apply_review(&p, &[], &first), Ok(PENDING));
        // Two reviewers are enough approvals, but neither is governance.
        let second = review("bob", Role::Reviewer, ReviewAction::Approve, None);
        assert_eq!(
            apply_review(&p, std::slice::from_ref(&first), &second),
            Ok(PENDING)
        );
        // With governance it is approved.
        let governance = review("gus", Role::Governance, ReviewAction::Approve, None);
        assert_eq!(
            apply_review(&p, std::slice::from_ref(&first), &governance),
            Ok(ProposalStatus::Approved)
        );
        let admin = review("ann", Role::Admin, ReviewAction::Approve, None);
        assert_eq!(
            apply_review(&p, &[first], &admin),
            Ok(ProposalStatus::Approved)
        );
    }

    #[test]
    fn one_person_under_two_spellings_approves_once() {
        let p = proposal(PENDING, true, 2);
        let first = review("alice", Role::Reviewer, ReviewAction::Approve, None);
        for again in ["Alice", "alice ", " ALICE", "ａｌｉｃｅ"] {
            let second = review(again, Role::Governance, ReviewAction::Approve, None);
            assert!(
                matches!(
                    apply_review(&p, std::slice::from_ref(&first), &second),
                    Err(ReviewError::AlreadyApproved { .. })
                ),
                "{again:?}"
            );
        }
    }

    #[test]
    fn look_alike_names_approve_once() {
        let p = proposal(PENDING, true, 2);
        let first = review("scope", Role::Reviewer, ReviewAction::Approve, None);
        // All-Cyrillic ѕсоре: a name of one script, the same skeleton.
        let second = review(
            "\u{0455}\u{0441}\u{043E}\u{0440}\u{0435}",
            Role::Governance,
            ReviewAction::Approve,
            None,
        );
        assert!(matches!(
            apply_review(&p, std::slice::from_ref(&first), &second),
            Err(ReviewError::AlreadyApproved { .. })
        ));
        // A stored approval by a mixed-script `rоb` (written before they were refused) is rob's.
        let stored = review("r\u{043E}b", Role::Reviewer, ReviewAction::Approve, None);
        let rob = review("rob", Role::Governance, ReviewAction::Approve, None);
        assert!(matches!(
            apply_review(&p, &[stored], &rob),
            Err(ReviewError::AlreadyApproved { .. })
        ));
        // A new review under a mixed-script name is refused outright.
        let mixed = review("r\u{03BF}b", Role::Governance, ReviewAction::Approve, None);
        assert!(matches!(
            apply_review(&p, &[first], &mixed),
            Err(ReviewError::Text(TextError::MixedScript { .. }))
        ));
    }

    #[test]
    fn a_comment_changes_nothing_and_an_invisible_reason_is_no_reason() {
        let p = proposal(PENDING, false, 1);
        let comment = review(
            "ada",
            Role::Reviewer,
            ReviewAction::Comment,
            Some("why Q4?"),
        );
        assert_eq!(apply_review(&p, &[], &comment), Ok(PENDING));
        let zero_width = review(
            "ada",
            Role::Reviewer,
            ReviewAction::Reject,
            Some("\u{200B}"),
        );
        assert!(matches!(
            apply_review(&p, &[], &zero_width),
            Err(ReviewError::Text(TextError::Invisible { .. }))
        ));
        let long_name = review(
            &"a".repeat(100_000),
            Role::Reviewer,
            ReviewAction::Approve,
            None,
        );
        assert!(matches!(
            apply_review(&p, &[], &long_name),
            Err(ReviewError::Text(TextError::TooLong { .. }))
        ));
    }

    #[test]
    fn nobody_approves_twice() {
        let p = proposal(PENDING, false, 2);
        let first = review("ada", Role::Reviewer, ReviewAction::Approve, None);
        let again = review("ada", Role::Governance, ReviewAction::Approve, None);
        assert!(matches!(
            apply_review(&p, &[first], &again),
            Err(ReviewError::AlreadyApproved { .. })
        ));
    }

    #[test]
    fn blocked_and_decided_proposals_cannot_be_reviewed() {
        let blocked = proposal(ProposalStatus::Blocked, false, 1);
        let admin = review("ada", Role::Admin, ReviewAction::Approve, None);
        assert_eq!(
            apply_review(&blocked, &[], &admin),
            Err(ReviewError::Blocked { id: "p1".into() })
        );
        for status in [ProposalStatus::Approved, ProposalStatus::Rejected] {
            let p = proposal(status, false, 1);
            let r = review("ada", Role::Admin, ReviewAction::Approve, None);
            assert!(matches!(
                apply_review(&p, &[], &r),
                Err(ReviewError::NotReviewable { .. })
            ));
        }
    }

    #[test]
    fn a_viewer_may_not_review_and_a_name_is_required() {
        let p = proposal(PENDING, false, 1);
        let viewer = review("vic", Role::Viewer, ReviewAction::Approve, None);
        assert_eq!(
            apply_review(&p, &[], &viewer),
            Err(ReviewError::RoleMayNotReview(Role::Viewer))
        );
        let nameless = review(" ", Role::Reviewer, ReviewAction::Approve, None);
        assert_eq!(
            apply_review(&p, &[], &nameless),
            Err(ReviewError::ActorRequired)
        );
    }

    #[test]
    fn roles_keep_their_names() {
        for role in [Role::Viewer, Role::Reviewer, Role::Governance, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_value(role).ok(),
                Some(serde_json::Value::String(role.as_str().into()))
            );
        }
    }
}
