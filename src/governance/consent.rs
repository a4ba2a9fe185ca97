//! The always-on consent rules (see docs/architecture.md): a proposal may only use signals the catalog
//! knows, never sensitive ones, only with every purpose they need declared and covered by the
//! segment's consent, identity-bound signals only on signed-in segments, never where the
//! catalog restricts a signal by region, and only at a moment where the catalog says the segment
//! exists. This module owns those seven rules and their messages; it reads the catalog and the
//! draft and returns one verdict per rule, passed or not.

use super::catalog::{Catalog, Identity, IdentityRequirement, Segment};
use super::{Effect, RuleSource, Verdict};
use crate::domain::ProposalDraft;

/// The ids of the consent rules, in the order they are evaluated.
pub const CONSENT_RULE_IDS: [&str; 7] = [
    KNOWN_SIGNALS,
    NOT_SENSITIVE,
    PURPOSES_DECLARED,
    PURPOSES_COVERED,
    IDENTITY,
    REGION,
    SEGMENT_MOMENT,
];

pub const KNOWN_SIGNALS: &str = "consent.known-signals";
pub const NOT_SENSITIVE: &str = "consent.not-sensitive";
pub const PURPOSES_DECLARED: &str = "consent.purposes-declared";
pub const PURPOSES_COVERED: &str = "consent.purposes-covered";
pub const IDENTITY: &str = "consent.identity";
pub const REGION: &str = "consent.region";
/// The catalog's `moments` of a segment: a proposal targets it only where it exists.
pub const SEGMENT_MOMENT: &str = "consent.segment-moment";

/// The region name meaning "every region": a signal restricted anywhere is restricted there.
pub const GLOBAL_REGION: &str = "global";

fn verdict(rule_id: &str, problems: Vec<String>, ok: &str) -> Verdict {
    Verdict {
        rule_id: rule_id.to_string(),
        source: RuleSource::Consent,
        effect: Effect::Deny,
        passed: problems.is_empty(),
        message: if problems.is_empty() {
            ok.to_string()
        } else {
            problems.join("; ")
        },
    }
}

/// Whether a signal restricted in `restricted` may reach visitors of `segment`'s region.
fn restricted_region_hit<'a>(segment: &Segment, restricted: &'a [String]) -> Option<&'a str> {
    restricted
        .iter()
        .find(|region| segment.region == GLOBAL_REGION || segment.region == **region)
        .map(String::as_str)
}

/// The signals of an experiment that `segment` may lawfully use by the consent rules below
/// (known, not sensitive, identity, region — a `global` segment reaches every region —, and
/// coverage for every purpose), or `None` when one of them may not. The builtin proposer asks
/// this before it drafts, so it never drafts what these rules would deny.
pub fn usable_signals(
    signals: &[String],
    segment: &Segment,
    catalog: &Catalog,
) -> Option<Vec<String>> {
    let mut usable = Vec::new();
    for name in signals {
        let signal = catalog.signal(name)?;
        if signal.sensitive
            || (signal.identity == IdentityRequirement::LoggedIn
                && segment.identity != Identity::LoggedIn)
            || restricted_region_hit(segment, &signal.restricted_regions).is_some()
        {
            return None;
        }
        usable.push(name.clone());
    }
    let covered = catalog
        .required_purposes(&usable)
        .iter()
        .all(|p| segment.consent.get(*p).copied().unwrap_or(0.0) > 0.0);
    covered.then_some(usable)
}

/// One verdict per consent rule for `draft` (all with effect `deny`, source `consent`).
pub fn consent_verdicts(draft: &ProposalDraft, catalog: &Catalog) -> Vec<Verdict> {
    let segment = catalog.segment(&draft.segment);
    let unknown_segment = || {
        format!(
            "segment {:?} is not in the catalog, so its consent cannot be checked",
            draft.segment
        )
    };

    let unknown: Vec<String> = draft
        .signals
        .iter()
        .filter(|name| catalog.signal(name).is_none())
        .map(|name| format!("signal {name:?} is not in the catalog: add it there (with the purposes it needs) before using it"))
        .collect();

    let known: Vec<_> = draft
        .signals
        .iter()
        .filter_map(|name| catalog.signal(name))
        .collect();

    let sensitive: Vec<String> = known
        .iter()
        .filter(|signal| signal.sensitive)
        .map(|signal| {
            format!(
                "signal {:?} is sensitive (a special category under GDPR Art. 9): it is never usable",
                signal.name
            )
        })
        .collect();

    let mut undeclared = Vec::new();
    for signal in &known {
        for purpose in &signal.purposes {
            if !draft.consent_purposes.iter().any(|p| p == purpose) {
                undeclared.push(format!(
                    "signal {:?} needs consent purpose {purpose:?}, which consent_purposes does not declare",
                    signal.name
                ));
            }
        }
    }

    let required = catalog.required_purposes(&draft.signals);
    let uncovered: Vec<String> = match segment {
        None if !required.is_empty() => vec![unknown_segment()],
        None => Vec::new(),
        Some(segment) => required
            .iter()
            .filter(|purpose| segment.consent.get(**purpose).copied().unwrap_or(0.0) <= 0.0)
            .map(|purpose| {
                format!(
                    "segment {:?} has no consent coverage for purpose {purpose:?}: none of its visitors can be targeted with the signals that need it",
                    segment.name
                )
            })
            .collect(),
    };

    let identity_bound: Vec<_> = known
        .iter()
        .filter(|signal| signal.identity == IdentityRequirement::LoggedIn)
        .collect();
    let identity_problems: Vec<String> = match segment {
        None if !identity_bound.is_empty() => vec![unknown_segment()],
        None => Vec::new(),
        Some(segment) if segment.identity == Identity::Anonymous => identity_bound
            .iter()
            .map(|signal| {
                format!(
                    "signal {:?} exists only for signed-in customers, but segment {:?} is anonymous",
                    signal.name, segment.name
                )
            })
            .collect(),
        Some(_) => Vec::new(),
    };

    let region_bound: Vec<_> = known
        .iter()
        .filter(|signal| !signal.restricted_regions.is_empty())
        .collect();
    let region_problems: Vec<String> = match segment {
        None if !region_bound.is_empty() => vec![unknown_segment()],
        None => Vec::new(),
        Some(segment) => region_bound
            .iter()
            .filter_map(|signal| {
                restricted_region_hit(segment, &signal.restricted_regions).map(|region| {
                    if segment.region == GLOBAL_REGION {
                        format!(
                            "signal {:?} may not be used in region {region:?}, and segment {:?} is global (it includes {region} visitors)",
                            signal.name, segment.name
                        )
                    } else {
                        format!(
                            "signal {:?} may not be used in region {region:?}, where segment {:?} is",
                            signal.name, segment.name
                        )
                    }
                })
            })
            .collect(),
    };

    let moment_problems: Vec<String> = match segment {
        Some(segment) if !segment.exists_at(draft.moment) => vec![format!(
            "segment {:?} does not exist at the {} moment: the catalog lists it only at {}",
            segment.name,
            draft.moment,
            segment.moments.as_deref().unwrap_or_default().join(", ")
        )],
        _ => Vec::new(),
    };

    vec![
        verdict(KNOWN_SIGNALS, unknown, "every signal is in the catalog"),
        verdict(NOT_SENSITIVE, sensitive, "no sensitive signal is used"),
        verdict(
            PURPOSES_DECLARED,
            undeclared,
            "every purpose the signals need is declared",
        ),
        verdict(
            PURPOSES_COVERED,
            uncovered,
            "the segment has consent coverage for every purpose the signals need",
        ),
        verdict(
            IDENTITY,
            identity_problems,
            "no identity-bound signal on an anonymous segment",
        ),
        verdict(
            REGION,
            region_problems,
            "no signal is used where its region restricts it",
        ),
        verdict(
            SEGMENT_MOMENT,
            moment_problems,
            "the segment exists at the proposal's moment",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::sample::{default_catalog, sample_draft};

    fn sample_catalog() -> Catalog {
        default_catalog().expect("the shipped catalog parses")
    }

    fn failed(verdicts: &[Verdict]) -> Vec<(String, String)> {
        verdicts
            .iter()
            .filter(|v| v.failed())
            .map(|v| (v.rule_id.clone(), v.message.clone()))
            .collect()
    }

    #[test]
    fn a_clean_draft_passes_every_consent_rule() {
        let verdicts = consent_verdicts(&sample_draft(), &sample_catalog());
        assert_eq!(verdicts.len(), CONSENT_RULE_IDS.len());
        assert!(verdicts.iter().all(|v| v.passed), "{verdicts:#?}");
        assert!(verdicts
            .iter()
            .all(|v| v.effect == Effect::Deny && v.source == RuleSource::Consent));
    }

    #[test]
    fn unknown_signal_is_denied_by_name() {
        let mut draft = sample_draft();
        draft.signals.push("shoe_size".into());
        let verdicts = consent_verdicts(&draft, &sample_catalog());
        let failed = failed(&verdicts);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, KNOWN_SIGNALS);
        assert!(failed[0].1.contains("\"shoe_size\""));
    }

    #[test]
    fn sensitive_signal_is_denied() {
        let mut draft = sample_draft();
        draft.signals = vec!["health_inferences".into()];
        let verdicts = consent_verdicts(&draft, &sample_catalog());
        let failed = failed(&verdicts);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, NOT_SENSITIVE);
        assert!(failed[0].1.contains("health_inferences"));
        assert!(failed[0].1.contains("Art. 9"));
    }

    #[test]
    fn undeclared_purpose_is_denied() {
        let mut draft = sample_draft();
        draft.consent_purposes.clear();
        let failed_rules = failed(&consent_verdicts(&draft, &sample_catalog()));
        assert_eq!(failed_rules.len(), 1, "{failed_rules:?}");
        assert_eq!(failed_rules[0].0, PURPOSES_DECLARED);
        assert!(failed_rules[0].1.contains("\"personalization\""));
        assert!(failed_rules[0].1.contains("\"browsing_history\""));
    }

    #[test]
    fn uncovered_purpose_is_denied_naming_the_segment() {
        let mut draft = sample_draft();
        draft.segment = "returning_anonymous".into();
        draft.signals = vec!["ad_audience".into()];
        draft.consent_purposes = vec!["ad_personalization".into()];
        let mut catalog = sample_catalog();
        let segment = catalog
            .segments
            .iter_mut()
            .find(|s| s.name == "returning_anonymous")
            .expect("sample catalog has returning_anonymous");
        segment.consent.remove("ad_personalization");
        let failed_rules = failed(&consent_verdicts(&draft, &catalog));
        assert_eq!(failed_rules.len(), 1, "{failed_rules:?}");
        assert_eq!(failed_rules[0].0, PURPOSES_COVERED);
        assert!(failed_rules[0].1.contains("returning_anonymous"));
        assert!(failed_rules[0].1.contains("ad_personalization"));
    }

    #[test]
    fn identity_bound_signal_on_anonymous_segment_is_denied() {
        let mut draft = sample_draft();
        draft.segment = "new_visitors".into();
        draft.signals = vec!["purchase_history".into()];
        let failed_rules = failed(&consent_verdicts(&draft, &sample_catalog()));
        assert_eq!(failed_rules.len(), 1, "{failed_rules:?}");
        assert_eq!(failed_rules[0].0, IDENTITY);
        assert!(failed_rules[0].1.contains("purchase_history"));
        assert!(failed_rules[0].1.contains("new_visitors"));
    }

    #[test]
    fn region_restriction_applies_to_the_region_and_to_global_segments() {
        let catalog = sample_catalog();
        let mut draft = sample_draft();
        draft.signals = vec!["precise_geolocation".into()];
        draft.consent_purposes = vec!["precise_geolocation".into(), "personalization".into()];

        draft.segment = "eu_visitors".into();
        let failed_rules = failed(&consent_verdicts(&draft, &catalog));
        assert!(failed_rules
            .iter()
            .any(|(rule, message)| *rule == REGION && message.contains("eu_visitors")));

        draft.segment = "all_visitors".into();
        let failed_rules = failed(&consent_verdicts(&draft, &catalog));
        assert_eq!(failed_rules.len(), 1, "{failed_rules:?}");
        assert_eq!(failed_rules[0].0, REGION);
        assert!(failed_rules[0].1.contains("global"));

        draft.segment = "us_visitors".into();
        assert!(failed(&consent_verdicts(&draft, &catalog)).is_empty());
    }

    #[test]
    fn a_segment_is_targeted_only_at_the_moments_where_it_exists() {
        let catalog = sample_catalog();
        let mut draft = sample_draft();
        draft.segment = "lapsed_90d".into();
        draft.moment = crate::domain::Moment::PostPurchase;
        let failed_rules = failed(&consent_verdicts(&draft, &catalog));
        assert_eq!(failed_rules.len(), 1, "{failed_rules:?}");
        assert_eq!(failed_rules[0].0, SEGMENT_MOMENT);
        assert!(failed_rules[0].1.contains("post_purchase"));
        assert!(failed_rules[0].1.contains("re_engagement"));
        draft.moment = crate::domain::Moment::ReEngagement;
        assert!(failed(&consent_verdicts(&draft, &catalog)).is_empty());
    }

    #[test]
    fn unknown_segment_fails_the_rules_that_need_it() {
        let mut draft = sample_draft();
        draft.segment = "martians".into();
        let failed_rules = failed(&consent_verdicts(&draft, &sample_catalog()));
        assert_eq!(failed_rules.len(), 1, "{failed_rules:?}");
        assert_eq!(failed_rules[0].0, PURPOSES_COVERED);
        assert!(failed_rules[0].1.contains("martians"));
    }
}
