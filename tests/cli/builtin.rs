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
fn experiment(
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
