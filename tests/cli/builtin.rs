//! The builtin proposer on a history it has never seen: a synthetic program with other levers,
//! built so that each strategy has exactly one real opportunity.

use chrono::{TimeZone, Utc};
use hypod::analysis::{analyze, AnalysisSettings};
use hypod::governance::catalog::Catalog;
use hypod::history::import::{parse_text, Format};
use hypod::proposer::builtin::BuiltinProposer;
use hypod::proposer::{ProposalContext, Proposer};
use serde_json::json;

#[allow(clippy::too_many_arguments)]
pub(crate) fn experiment(
    id: &str,
    moment: &str,
    lever: &str,
    segment: &str,
    status: &str,
    decision: &str,
    control: (u64, u64),
    treatment: (u64, u64),
    started: &str,
) -> String {
    // Dates in the order of an experiment's life: the idea a month before the start, two weeks
    // of traffic, a decision three days after the end (a running test has neither yet).
    let start = chrono::NaiveDate::parse_from_str(started, "%Y-%m-%d").expect("a date");
    let idea = (start - chrono::Duration::days(30)).to_string();
    let running = status == "running";
    let ended = (!running).then(|| (start + chrono::Duration::days(14)).to_string());
    let decided = (!running).then(|| (start + chrono::Duration::days(17)).to_string());
    json!({
        "id": id, "name": format!("{lever} for {segment}"), "moment": moment, "lever": lever,
        "segment": segment, "channel": "web", "rendering": "server", "primary_kpi": "conversion_rate",
        "signals": ["page_context"], "status": status, "decision": decision,
        "idea_at": idea, "started_at": started, "ended_at": ended, "decided_at": decided,
        "variants": [
            {"name": "control", "control": true, "visitors": control.0, "conversions": control.1, "orders": control.1, "revenue": control.1 as f64 * 70.0, "revenue_sq": control.1 as f64 * 70.0 * 70.0},
            {"name": "treatment", "control": false, "visitors": treatment.0, "conversions": treatment.1, "orders": treatment.1, "revenue": treatment.1 as f64 * 70.0, "revenue_sq": treatment.1 as f64 * 70.0 * 70.0}
        ]
    })
    .to_string()
}

#[tokio::test]
#[allow(clippy::vec_init_then_push)]
async fn each_strategy_finds_its_opportunity_in_an_unseen_history() {
    let mut lines = Vec::new();
    // A clearly proven lever for one segment only: transfer it.
    lines.push(experiment(
        "u-1",
        "product_detail",
        "size_advisor",
        "logged_in_repeat",
        "concluded",
        "ship",
        (40_000, 2_000),
        (40_000, 2_400),
        "2026-02-01",
    ));
    // An underpowered test that pointed the right way: re-test it.
    lines.push(experiment(
        "u-2",
        "search",
        "synonym_boost",
        "all_visitors",
        "concluded",
        "iterate",
        (2_000, 100),
        (2_000, 110),
        "2026-02-01",
    ));
    // A rule shipped on a flat result: validate it with a holdback.
    lines.push(experiment(
        "u-3",
        "re_engagement",
        "loyalty_nudge",
        "vip_loyalty",
        "concluded",
        "ship",
        (20_000, 1_000),
        (20_000, 1_005),
        "2026-02-01",
    ));
    // Post-purchase barely touched this year, its only test a positive one: cover it.
    lines.push(experiment(
        "u-4",
        "post_purchase",
        "thank_you_offer",
        "logged_in_repeat",
        "concluded",
        "iterate",
        (10_000, 500),
        (10_000, 540),
        "2025-06-01",
    ));
    // Filler so the programme is ready (20 decided) and the other moments are busy.
    for i in 0..30 {
        let moment = ["search", "product_detail", "cart_checkout", "re_engagement"][i % 4];
        lines.push(experiment(
            &format!("f-{i}"),
            moment,
            &format!("filler_{i}"),
            "new_visitors",
            "concluded",
            "rollback",
            (30_000, 1_500),
            (30_000, 1_500),
            "2026-04-01",
        ));
    }
    // A running test that occupies the transfer to all_visitors: never proposed.
    lines.push(experiment(
        "u-9",
        "product_detail",
        "size_advisor",
        "all_visitors",
        "running",
        "none",
        (1_000, 50),
        (1_000, 50),
        "2026-05-01",
    ));

    let report = parse_text("unseen.ndjson", Format::Ndjson, &lines.join("\n"));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let experiments = report.experiments;
    let catalog = Catalog::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/catalog.toml"
    )))
    .unwrap();
    let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let analysis = analyze(&experiments, &AnalysisSettings::new(now.date_naive()));
    assert!(analysis.program.ready_for_proposals);
    let context = ProposalContext {
        experiments: &experiments,
        analysis: &analysis,
        catalog: &catalog,
        open_proposals: &[],
        recent_rejections: &[],
        max_proposals: 100,
        per_moment: 100,
        now,
    };
    let output = BuiltinProposer::default().propose(&context).await.unwrap();
    let find = |strategy: &str| {
        output
            .drafts
            .iter()
            .filter(|d| d.strategy.map(|s| s.as_str()) == Some(strategy))
            .map(|d| &d.draft)
            .collect::<Vec<_>>()
    };

    let transfers = find("transfer");
    assert!(!transfers.is_empty());
    assert!(transfers
        .iter()
        .all(|d| d.lever == "size_advisor" && d.evidence[0].experiment_id == "u-1"));
    assert!(
        transfers
            .iter()
            .all(|d| d.segment != "logged_in_repeat" && d.segment != "all_visitors"),
        "never the tested or the running segment"
    );

    let retests = find("retest");
    // u-2 is the underpowered search test; u-4 (the lone post-purchase test) is underpowered too.
    let retested: Vec<&str> = retests
        .iter()
        .map(|d| d.evidence[0].experiment_id.as_str())
        .collect();
    assert!(retested.contains(&"u-2"), "{retested:?}");
    assert!(
        retested.iter().all(|id| ["u-2", "u-4"].contains(id)),
        "{retested:?}"
    );

    let validations = find("validate");
    assert_eq!(validations.len(), 1);
    assert_eq!(validations[0].evidence[0].experiment_id, "u-3");

    let covers = find("cover");
    assert_eq!(covers.len(), 1);
    assert_eq!(covers[0].moment, hypod::history::Moment::PostPurchase);
    assert_eq!(covers[0].evidence[0].experiment_id, "u-4");

    // Every draft is well-formed by the same checks the run applies to a model's drafts.
    let refs = hypod::validate::References::new(&experiments, &catalog);
    for proposed in &output.drafts {
        let problems = hypod::validate::check_draft(&proposed.draft, &refs);
        assert!(
            problems.is_empty(),
            "{}: {problems:?}",
            proposed.draft.title
        );
    }
}

/// The quality benchmark (docs/proposals-and-queue.md, "The builtin proposer's quality"): on
/// realistic histories of about 420 experiments over three years (tests/synthetic `realistic`), under three
/// vocabularies and three seeds each, the builtin proposer's top 8 (the default caps) holds
/// every planted opportunity, and never carries a lever whose true effect is negative.
#[tokio::test]
async fn the_top_8_holds_every_planted_opportunity_on_every_seed_and_vocabulary() {
    use crate::synthetic::{realistic, VOCABULARIES};
    let mut failures = Vec::new();
    for vocabulary in &VOCABULARIES {
        for seed in 1..=3u64 {
            let history = realistic(seed, vocabulary);
            assert!(history.experiments.len() >= 400);
            let catalog = Catalog::parse("synthetic catalog", &history.catalog_toml).unwrap();
            let now = Utc.from_utc_datetime(&history.today.and_hms_opt(6, 0, 0).unwrap());
            let analysis = analyze(&history.experiments, &AnalysisSettings::new(history.today));
            let context = ProposalContext {
                experiments: &history.experiments,
                analysis: &analysis,
                catalog: &catalog,
                open_proposals: &[],
                recent_rejections: &[],
                max_proposals: 8,
                per_moment: 3,
                now,
            };
            let output = BuiltinProposer::default().propose(&context).await.unwrap();
            let drafts: Vec<(&str, &hypod::proposer::ProposalDraft)> = output
                .drafts
                .iter()
                .map(|d| (d.strategy.map(|s| s.as_str()).unwrap_or(""), &d.draft))
                .collect();
            let planted = &history.planted;
            let has = |what: &str, found: bool| {
                if !found {
                    Some(format!("{} seed {seed}: no {what}", vocabulary.name))
                } else {
                    None
                }
            };
            let cites = |d: &hypod::proposer::ProposalDraft, id: &str| {
                d.evidence.iter().any(|e| e.experiment_id == id)
            };
            failures.extend(has(
                "segment transfer",
                drafts.iter().any(|(s, d)| {
                    *s == "transfer"
                        && d.lever == planted.transfer_segments.0
                        && d.moment == planted.transfer_segments.1
                }),
            ));
            failures.extend(has(
                "moment transfer",
                drafts.iter().any(|(s, d)| {
                    *s == "transfer"
                        && d.lever == planted.transfer_moment.0
                        && d.moment == planted.transfer_moment.1
                }),
            ));
            failures.extend(has(
                "retest",
                drafts
                    .iter()
                    .any(|(s, d)| *s == "retest" && cites(d, &planted.retest)),
            ));
            failures.extend(has(
                "validation",
                drafts
                    .iter()
                    .any(|(s, d)| *s == "validate" && cites(d, &planted.validate)),
            ));
            failures.extend(has(
                "cover",
                drafts
                    .iter()
                    .any(|(s, d)| *s == "cover" && d.moment == planted.cover),
            ));
            for (strategy, draft) in &drafts {
                if matches!(*strategy, "transfer" | "cover")
                    && planted.negative_levers.contains(&draft.lever)
                {
                    failures.push(format!(
                        "{} seed {seed}: carries {}, whose true effect is negative",
                        vocabulary.name, draft.lever
                    ));
                }
            }
            // One proposal per idea: no lever twice for the same strategy and moment.
            let mut ideas = std::collections::HashSet::new();
            for (strategy, draft) in &drafts {
                assert!(
                    ideas.insert((*strategy, draft.lever.clone(), draft.moment)),
                    "{} seed {seed}: two proposals for one idea: {}",
                    vocabulary.name,
                    draft.title
                );
            }
            let show = std::env::var_os("HYPOD_SHOW_TOP8").is_some();
            if show || failures.iter().any(|f| f.contains(&format!("seed {seed}"))) {
                eprintln!(
                    "{} seed {seed} ({} experiments):",
                    vocabulary.name,
                    history.experiments.len()
                );
                for (strategy, draft) in &drafts {
                    eprintln!("  {strategy:<9} {}", draft.title);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
