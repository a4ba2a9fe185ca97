//! The decision a reviewer is asked to take on one proposal, read in one look: what stands in
//! the way (the rules that did not pass), the approval progress in words, and what happens
//! after approval (export or the GrowthBook push, who builds the test, and the expiry date
//! before it). The proposal
//! page and `queue show` both open with it; it is computed here once, from the proposal, its
//! reviews and the configuration.

use crate::config::{Config, GrowthbookExport};
use crate::domain::{ApprovalProgress, Effect, Proposal, ProposalStatus, Review};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// A rule that did not pass.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Unmet {
    pub rule_id: String,
    /// `escalate` (it needs governance) or `deny` (nobody may approve it).
    pub effect: Effect,
    /// What the effect means for the reviewer: "governance must approve", "nobody may
    /// approve it", "a warning".
    pub means: String,
    pub message: String,
}

/// What a reviewer decides on, and what follows.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Decision {
    /// The rules that did not pass; the passing ones are left to the verdict list.
    pub unmet: Vec<Unmet>,
    pub approvals: ApprovalProgress,
    /// The approval progress in words: "1 of 2 approvals, waiting for governance".
    pub progress: String,
    /// Who approved, in words ("approved by rob (reviewer)"), once someone has.
    pub approved_by: Option<String>,
    /// What happens once it is approved (or, when it is, what happens now): the export, or
    /// the push to GrowthBook (on approval, or by an admin's `hypod export --push`).
    pub after_approval: String,
    /// Who builds and starts the test once it is approved: the draft's owner in GrowthBook (the
    /// approver whose approval made it approved, through `[export.growthbook.owners]`), or the
    /// team that takes the export.
    pub builds: String,
    /// When it expires unless decided (`proposer.expire_pending_after_days` after it was
    /// proposed); only while pending review and expiry is on.
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The expected duration in words, with why it is longer than the sample needs and the
    /// consented share of the segment that drives it ("7 days: a full week, although 1 day
    /// would reach the sample; 100% of the segment consented"); `None` without a duration.
    pub duration: Option<String>,
}

impl Decision {
    pub fn of(proposal: &Proposal, reviews: &[Review], config: &Config) -> Decision {
        let approvals = ApprovalProgress::of(proposal, reviews);
        let unmet = proposal
            .verdicts
            .iter()
            .filter(|v| !v.passed)
            .map(|v| Unmet {
                rule_id: v.rule_id.clone(),
                effect: v.effect,
                means: match v.effect {
                    Effect::Escalate => "governance must approve",
                    Effect::Deny => "nobody may approve it",
                    Effect::Warn => "a warning",
                }
                .to_string(),
                message: v.message.clone(),
            })
            .collect();
        let approved = proposal.status == ProposalStatus::Approved;
        let growthbook = config.export.growthbook.as_ref();
        // A proposal nobody may approve any more (blocked, rejected, expired, superseded) has
        // no next step and nobody builds it; saying what approval would do would mislead.
        let closed = !matches!(
            proposal.status,
            ProposalStatus::PendingReview | ProposalStatus::Approved
        );
        let (after_approval, builds) = if closed {
            closed_words(proposal.status)
        } else {
            (
                after_approval(approved, growthbook),
                builds(approved, growthbook, super::push::approver(reviews)),
            )
        };
        let days = config.proposer.expire_pending_after_days;
        let expires_at = (proposal.status == ProposalStatus::PendingReview && days > 0)
            .then(|| proposal.created_at + Duration::days(i64::from(days)));
        Decision {
            unmet,
            progress: approvals.describe(),
            approved_by: approvals.approved_by(),
            approvals,
            after_approval,
            builds,
            expires_at,
            duration: proposal.enrichment.duration_words(),
        }
    }
}

/// The next step and the builder of a proposal that can no longer be approved.
fn closed_words(status: ProposalStatus) -> (String, String) {
    let next = match status {
        ProposalStatus::Blocked => {
            "Nobody may approve it: a deny rule blocks it, so it is neither exported nor pushed."
                .to_string()
        }
        other => format!(
            "It is {}: no approval follows, so it is neither exported nor pushed.",
            other.as_str().replace('_', " ")
        ),
    };
    (next, "Nobody: no test is built from it.".to_string())
}

/// What approval leads to under the configuration: the GrowthBook push (on approval, or by an
/// admin), or the export.
fn after_approval(approved: bool, growthbook: Option<&GrowthbookExport>) -> String {
    let when = if approved {
        "Approved:"
    } else {
        "After approval"
    };
    match growthbook {
        Some(g) if g.push_on_approval => format!(
            "{when} hypod pushes it to GrowthBook ({}) as a draft experiment (push_on_approval).",
            host(&g.url)
        ),
        Some(g) => format!(
            "{when} an admin pushes it to GrowthBook ({}) as a draft experiment with hypod \
             export --push.",
            host(&g.url)
        ),
        None if approved => "Approved: export (hypod export) now hands it to the \
            experimentation platform."
            .to_string(),
        None => "After approval it is ready for export (hypod export), which hands it to the \
            experimentation platform."
            .to_string(),
    }
}

/// Who builds the test: the approver's GrowthBook member (`[export.growthbook.owners]`), or
/// the team that takes the export.
fn builds(approved: bool, growthbook: Option<&GrowthbookExport>, approver: Option<&str>) -> String {
    match (growthbook, approved.then_some(approver).flatten()) {
        (Some(g), Some(user)) => match g.owners.get(user) {
            Some(member) => format!(
                "{member} builds and starts the test in GrowthBook: the draft's owner, as \
                 {user}'s approval made it approved ([export.growthbook.owners])."
            ),
            None => format!(
                "{user}'s approval made it approved, but [export.growthbook.owners] does not \
                 map {user}: the draft has no owner in GrowthBook and the team names who builds \
                 and starts the test there."
            ),
        },
        (Some(g), None) if g.owners.is_empty() => "The draft gets no owner in GrowthBook \
            ([export.growthbook.owners] is empty): the team names who builds and starts the test \
            there."
            .to_string(),
        (Some(g), None) => format!(
            "The reviewer whose approval completes it becomes the draft's owner in GrowthBook and \
             builds and starts the test, when [export.growthbook.owners] maps them (it maps {}).",
            g.owners.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        (None, Some(user)) => format!(
            "The team that takes the export builds and starts the test; {user}'s approval made \
             it approved (the export names no owner)."
        ),
        (None, None) => "The team that takes the export builds and starts the test (the export \
            names no owner)."
            .to_string(),
    }
}

/// The host of a URL (`https://api.growthbook.io/` → `api.growthbook.io`), without any
/// credentials written into it.
fn host(url: &str) -> &str {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::proposal::{Enrichment, Provenance};
    use crate::domain::{ReviewAction, Role, RuleSource, Verdict};

    fn proposal(status: ProposalStatus) -> Proposal {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let verdict = |rule: &str, effect, passed| Verdict {
            rule_id: rule.into(),
            source: RuleSource::Policy,
            effect,
            passed,
            message: format!("{rule} said so"),
        };
        Proposal {
            id: "p1".into(),
            run_id: "r1".into(),
            status,
            created_at: at,
            updated_at: at,
            draft: crate::domain::draft::tests_support::draft(),
            enrichment: Enrichment::default(),
            verdicts: vec![
                verdict("cart-risk", Effect::Escalate, false),
                verdict("consent", Effect::Deny, true),
            ],
            provenance: Provenance::default(),
            approvals_required: 2,
            superseded_by: None,
        }
    }

    fn pushing() -> Config {
        let mut config = Config::default();
        config.export.growthbook = Some(GrowthbookExport {
            url: "https://api.growthbook.io".into(),
            api_key_env: "GB".into(),
            app_url: None,
            project: None,
            datasource_id: None,
            assignment_query_id: "aq".into(),
            push_on_approval: true,
            metrics: Default::default(),
            owners: Default::default(),
            retry_seconds: 30,
            hold_seconds: 60,
        });
        config
    }

    #[test]
    fn only_unmet_rules_stand_in_the_way_and_pending_ones_expire() {
        let mut config = Config::default();
        config.proposer.expire_pending_after_days = 30;
        let review = Review {
            proposal_id: "p1".into(),
            actor: "rita".into(),
            role: Role::Reviewer,
            action: ReviewAction::Approve,
            note: None,
            at: DateTime::<Utc>::UNIX_EPOCH,
        };
        let d = Decision::of(&proposal(ProposalStatus::PendingReview), &[review], &config);
        assert_eq!(d.unmet.len(), 1);
        assert_eq!(d.unmet[0].rule_id, "cart-risk");
        assert_eq!(d.progress, "1 of 2 approvals, waiting for governance");
        assert_eq!(
            d.approved_by.as_deref(),
            Some("approved by rita (reviewer)")
        );
        assert!(
            d.after_approval.contains("hypod export"),
            "{}",
            d.after_approval
        );
        assert_eq!(
            d.expires_at.map(|at| at.format("%Y-%m-%d").to_string()),
            Some("1970-01-31".into())
        );
        // Expiry off (0 days), or no longer pending: no date.
        config.proposer.expire_pending_after_days = 0;
        let off = Decision::of(&proposal(ProposalStatus::PendingReview), &[], &config);
        assert_eq!(off.expires_at, None);
        let decided = Decision::of(&proposal(ProposalStatus::Approved), &[], &pushing());
        assert_eq!(decided.expires_at, None);
    }

    fn approval(actor: &str, role: Role) -> Review {
        Review {
            proposal_id: "p1".into(),
            actor: actor.into(),
            role,
            action: ReviewAction::Approve,
            note: None,
            at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_owner_who_builds_it_is_the_last_approver_mapped_in_growthbook() {
        let mut config = pushing();
        if let Some(g) = config.export.growthbook.as_mut() {
            g.owners = [("gus".to_string(), "gus@shop.example".to_string())].into();
        }
        let reviews = [
            approval("rita", Role::Reviewer),
            approval("gus", Role::Governance),
        ];
        let pending = Decision::of(
            &proposal(ProposalStatus::PendingReview),
            &reviews[..1],
            &config,
        );
        assert_eq!(
            pending.builds,
            "The reviewer whose approval completes it becomes the draft's owner in GrowthBook \
             and builds and starts the test, when [export.growthbook.owners] maps them (it maps \
             gus)."
        );
        let approved = Decision::of(&proposal(ProposalStatus::Approved), &reviews, &config);
        assert!(
            approved.builds.starts_with(
                "gus@shop.example builds and starts the test in GrowthBook: the draft's owner, \
                 as gus's approval made it approved"
            ),
            "{}",
            approved.builds
        );
        // rita approved last and is not mapped: no owner, and the page says so.
        let unmapped = Decision::of(
            &proposal(ProposalStatus::Approved),
            &[reviews[1].clone(), reviews[0].clone()],
            &config,
        );
        assert!(
            unmapped
                .builds
                .contains("does not map rita: the draft has no owner in GrowthBook"),
            "{}",
            unmapped.builds
        );
        // Without [export.growthbook]: the team that takes the export.
        let exported = Decision::of(
            &proposal(ProposalStatus::Approved),
            &reviews,
            &Config::default(),
        );
        assert_eq!(
            exported.builds,
            "The team that takes the export builds and starts the test; gus's approval made it \
             approved (the export names no owner)."
        );
    }

    #[test]
    fn a_closed_proposal_has_no_next_step_and_nobody_builds_it() {
        let blocked = Decision::of(&proposal(ProposalStatus::Blocked), &[], &pushing());
        assert_eq!(
            blocked.after_approval,
            "Nobody may approve it: a deny rule blocks it, so it is neither exported nor pushed."
        );
        assert_eq!(blocked.builds, "Nobody: no test is built from it.");
        let rejected = Decision::of(&proposal(ProposalStatus::Rejected), &[], &Config::default());
        assert_eq!(
            rejected.after_approval,
            "It is rejected: no approval follows, so it is neither exported nor pushed."
        );
        assert_eq!(rejected.expires_at, None);
    }

    #[test]
    fn growthbook_without_push_on_approval_is_pushed_by_an_admin() {
        let mut config = pushing();
        if let Some(g) = config.export.growthbook.as_mut() {
            g.push_on_approval = false;
            g.url = "https://key:secret@gb.shop.example/api".into();
        }
        let d = Decision::of(&proposal(ProposalStatus::PendingReview), &[], &config);
        assert_eq!(
            d.after_approval,
            "After approval an admin pushes it to GrowthBook (gb.shop.example) as a draft \
             experiment with hypod export --push."
        );
        assert!(!d.after_approval.contains("secret"));
    }

    #[test]
    fn with_push_on_approval_the_next_step_is_the_growthbook_push() {
        let pending = Decision::of(&proposal(ProposalStatus::PendingReview), &[], &pushing());
        assert!(
            pending
                .after_approval
                .starts_with("After approval hypod pushes it to GrowthBook"),
            "{}",
            pending.after_approval
        );
        let approved = Decision::of(&proposal(ProposalStatus::Approved), &[], &pushing());
        assert!(
            approved
                .after_approval
                .starts_with("Approved: hypod pushes it to GrowthBook"),
            "{}",
            approved.after_approval
        );
    }
}
