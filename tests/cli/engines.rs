//! The statistics engines as a user meets them (issue #29): `analysis.engine = "bayesian"`
//! (chance to win, credible interval, risk, GrowthBook's decision), `analysis.prior`,
//! `analysis.lower_is_better` and `analysis.sequential` (confidence sequences that judge running
//! experiments), through the binary's `analyze` (JSON and text), the configuration's refusals,
//! and what reads the engine downstream: the builtin proposer's rationales, the prompt the model
//! gets and the proposal page. Expected numbers come from `tests/reference/bayesian_table.json`,
//! which gbstats 0.8 computed (`tests/reference/make_bayesian_table.py`).

use crate::review::{request, Reviewed};
use crate::support::Hypod;
use crate::test_app::TestApp;
use serde_json::Value;

fn table() -> Value {
    serde_json::from_str(include_str!("../reference/bayesian_table.json")).expect("the table")
}

/// The gbstats case called `name` in the table's `list`.
fn case(list: &str, name: &str, difference: Option<&str>) -> Value {
    table()[list]
        .as_array()
        .expect("a list")
        .iter()
        .find(|c| c["name"] == name && difference.is_none_or(|d| c["difference"] == d))
        .unwrap_or_else(|| panic!("no case {name:?} in the table"))
        .clone()
}

fn close(ours: &Value, theirs: &Value, what: &str) {
    let (a, b) = (
        ours.as_f64().unwrap_or_else(|| panic!("{what}: {ours}")),
        theirs.as_f64().expect("a number"),
    );
    assert!(
        (a - b).abs() <= 1e-9 * b.abs() + 1e-300,
        "{what}: {a:e}, gbstats {b:e}"
    );
}

/// A hypod folder whose configuration has this `[analysis]` table.
fn with_analysis(analysis: &str) -> Hypod {
    let hypod = Hypod::new();
    let path = hypod.path().join("hypod.toml");
    let mut config = std::fs::read_to_string(&path).expect("hypod.toml");
    config.push_str(&format!("[analysis]\n{analysis}\n"));
    std::fs::write(&path, config).expect("write hypod.toml");
    hypod
}

fn experiment(
    id: &str,
    kpi: &str,
    status: &str,
    control: (u64, u64),
    treatment: (u64, u64),
) -> String {
    format!(
        r#"{{"id":"{id}","name":"{id}","moment":"search","primary_kpi":"{kpi}","status":"{status}","variants":[{{"name":"control","control":true,"visitors":{},"conversions":{}}},{{"name":"treatment","control":false,"visitors":{},"conversions":{}}}]}}"#,
        control.1, control.0, treatment.1, treatment.0
    )
}

/// The design's reference test (inconclusive at p 0.0736), a bounce-rate test whose treatment
/// bounces less, a 100 % arm, and two running tests (one with an overwhelming effect).
fn history(hypod: &Hypod) {
    let lines = [
        experiment(
            "ref",
            "conversion_rate",
            "concluded",
            (500, 10_000),
            (560, 10_000),
        ),
        experiment(
            "bounce",
            "bounce_rate",
            "concluded",
            (3_000, 10_000),
            (2_800, 10_000),
        ),
        experiment(
            "all-in",
            "conversion_rate",
            "concluded",
            (50, 1_000),
            (1_000, 1_000),
        ),
        experiment(
            "run-big",
            "conversion_rate",
            "running",
            (50_000, 1_000_000),
            (60_500, 1_000_000),
        ),
        experiment(
            "run-small",
            "conversion_rate",
            "running",
            (500, 10_000),
            (560, 10_000),
        ),
    ];
    let path = hypod.path().join("history.ndjson");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write the history");
    hypod.ok(&["import", path.to_str().expect("a path")]);
}

fn analysed(hypod: &Hypod) -> Vec<Value> {
    let doc = hypod.ok(&["analyze", "--json"]).json();
    assert!(!doc.to_string().contains("NaN"));
    doc["experiments"].as_array().expect("experiments").clone()
}

fn by_id<'a>(experiments: &'a [Value], id: &str) -> &'a Value {
    experiments
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("no {id}"))
}

#[test]
fn the_frequentist_default_is_unchanged_and_says_nothing_of_the_other_engines() {
    let hypod = Hypod::new();
    history(&hypod);
    let experiments = analysed(&hypod);
    let reference = by_id(&experiments, "ref");
    assert_eq!(reference["outcome"], "inconclusive");
    assert!((reference["primary"]["p_value"].as_f64().unwrap() - 0.0735868).abs() < 1e-6);
    for e in &experiments {
        for key in ["bayesian", "sequential", "lower_is_better"] {
            assert!(e["primary"].get(key).is_none(), "{key} in {}", e["primary"]);
        }
    }
    // A significant fall in bounces is a loss while nobody said lower is better.
    assert_eq!(by_id(&experiments, "bounce")["outcome"], "disproven");
    assert_eq!(by_id(&experiments, "run-big")["outcome"], "running");
    let text = hypod.ok(&["analyze"]).stdout;
    assert!(text.contains("95% CI") && !text.contains("ctw"), "{text}");
}

#[test]
fn the_bayesian_engine_reports_gbstats_chance_to_win_and_decides_on_it() {
    let hypod = with_analysis("engine = \"bayesian\"\nlower_is_better = [\"bounce_rate\"]");
    history(&hypod);
    let experiments = analysed(&hypod);

    // The reference test: 96.3 % chance to win, so GrowthBook calls it won (p was 0.074).
    let reference = by_id(&experiments, "ref");
    let expected = case("bayesian", "flat, design reference", None);
    let bayesian = &reference["primary"]["bayesian"];
    for field in [
        "chance_to_win",
        "ci_low",
        "ci_high",
        "mean",
        "stddev",
        "risk_control",
        "risk_treatment",
    ] {
        close(&bayesian[field], &expected[field], field);
    }
    assert_eq!(reference["outcome"], "proven");
    // The frequentist figures stay beside it.
    assert!((reference["primary"]["p_value"].as_f64().unwrap() - 0.0735868).abs() < 1e-6);

    // Lower is better: fewer bounces win, with gbstats' flipped chance and swapped risks.
    let bounce = by_id(&experiments, "bounce");
    let expected = case("bayesian", "inverse, bounce rate", None);
    assert_eq!(bounce["primary"]["lower_is_better"], true);
    for field in ["chance_to_win", "risk_control", "risk_treatment"] {
        close(
            &bounce["primary"]["bayesian"][field],
            &expected[field],
            field,
        );
    }
    assert!(expected["chance_to_win"].as_f64().unwrap() > 0.99);
    assert_eq!(bounce["outcome"], "proven");

    // A 100 % arm: gbstats declines it, hypod says null and why.
    let all_in = by_id(&experiments, "all-in");
    assert!(
        all_in["primary"]["bayesian"].is_null(),
        "{}",
        all_in["primary"]
    );
    assert!(all_in["primary"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("100 % conversion")));
    assert_eq!(all_in["outcome"], "not_computable");
    // The Bayesian engine does not judge running tests.
    assert_eq!(by_id(&experiments, "run-big")["outcome"], "running");

    // The text table speaks the engine: credible interval and chance to win.
    let text = hypod.ok(&["analyze"]).stdout;
    let row = text
        .lines()
        .find(|l| l.starts_with("ref "))
        .expect("the reference row");
    assert!(text.contains("95% CrI") && text.contains("ctw"), "{text}");
    assert!(row.contains("96.3%") && row.contains("proven"), "{row}");
}

#[test]
fn a_proper_prior_shrinks_the_posterior_as_gbstats_does() {
    let hypod = with_analysis("engine = \"bayesian\"\nprior = { mean = 0.0, stddev = 0.3 }");
    history(&hypod);
    let experiments = analysed(&hypod);
    let bayesian = &by_id(&experiments, "ref")["primary"]["bayesian"];
    let expected = case("bayesian", "prior N(0.0, 0.3^2), design reference", None);
    for field in ["chance_to_win", "mean", "stddev", "ci_low", "ci_high"] {
        close(&bayesian[field], &expected[field], field);
    }
    assert!(bayesian["mean"].as_f64().unwrap() < 0.12);
}

#[test]
fn sequential_testing_reports_confidence_sequences_and_judges_running_tests() {
    let hypod = with_analysis("sequential = { tuning = 5000 }");
    history(&hypod);
    let doc = hypod.ok(&["analyze", "--json"]).json();
    let experiments = doc["experiments"].as_array().expect("experiments");

    let reference = by_id(experiments, "ref");
    let expected = case("sequential", "design reference", Some("relative"));
    assert_eq!(reference["primary"]["sequential"], true);
    for field in ["ci_low", "ci_high", "p_value"] {
        close(&reference["primary"][field], &expected[field], field);
    }
    let absolute = case("sequential", "design reference", Some("absolute"));
    close(
        &reference["primary"]["absolute_ci_low"],
        &absolute["ci_low"],
        "absolute_ci_low",
    );
    assert_eq!(reference["outcome"], "inconclusive");

    // Valid at every peek: an overwhelming running test is decided now; a weak one runs on.
    let big = by_id(experiments, "run-big");
    let expected = case(
        "sequential",
        "extreme 50000/1000000 vs 60500/1000000",
        Some("relative"),
    );
    close(&big["primary"]["p_value"], &expected["p_value"], "p_value");
    assert_eq!(big["outcome"], "proven");
    assert_eq!(by_id(experiments, "run-small")["outcome"], "running");
    // It counts as proven, and the running count is still the history's.
    assert_eq!(doc["program"]["proven"], 1);
    assert_eq!(doc["program"]["running"], 2);

    let text = hypod.ok(&["analyze"]).stdout;
    assert!(
        text.contains("p (seq)") && text.contains("95% CS"),
        "{text}"
    );
}

#[test]
fn the_configuration_refuses_what_the_engines_cannot_do() {
    for (analysis, key) in [
        (
            "engine = \"bayesian\"\nsequential = { tuning = 5000 }",
            "analysis.sequential",
        ),
        (
            "engine = \"bayesian\"\nprior = { mean = 0.0, stddev = 0.0 }",
            "analysis.prior.stddev",
        ),
        ("sequential = { tuning = 0 }", "analysis.sequential.tuning"),
        ("engine = \"bayes\"", "bayesian"),
        ("prior = { mean = 0.1 }", "stddev"),
    ] {
        let hypod = with_analysis(analysis);
        let ran = hypod.run(&["analyze", "--json"]);
        assert_eq!(ran.code, Some(2), "{analysis}: {}", ran.stderr);
        assert!(ran.stderr.contains(key), "{analysis}: {}", ran.stderr);
    }
}

#[test]
fn downstream_reads_the_bayesian_engine() {
    let setup = Reviewed::on(with_analysis("engine = \"bayesian\""));
    let hypod = &setup.hypod;

    // The builtin proposer's rationales cite chance to win, never a p-value.
    let list = hypod.ok(&["queue", "list", "--json"]).json();
    let proposals = list.as_array().expect("a list");
    assert!(!proposals.is_empty());
    let mut cited = 0;
    let mut page_id = None;
    for p in proposals {
        let id = p["id"].as_str().expect("id");
        let shown = hypod.ok(&["queue", "show", id, "--json"]).json();
        let rationale = shown["proposal"]["draft"]["rationale"]
            .as_str()
            .expect("text");
        assert!(
            !rationale.contains("p = ") && !rationale.contains("p < 0.001"),
            "{rationale}"
        );
        if rationale.contains("% chance to win") {
            cited += 1;
        }
        let evidence = shown["evidence"].as_array().expect("evidence");
        if evidence
            .iter()
            .any(|e| !e["statistics"]["primary"]["bayesian"].is_null())
        {
            page_id.get_or_insert(id.to_string());
        }
    }
    assert!(cited >= 1, "no rationale cites a chance to win");

    // The model is told the engine's words, and its evidence lines carry them.
    let rendered = hypod.ok(&["prompt", "render", "--json"]).json();
    let user = rendered["user"].as_str().expect("the user message");
    assert!(user.contains("ctw = chance to win"), "{user}");
    assert!(
        user.contains("\"ctw\":") && !user.contains("\"p\":"),
        "{user}"
    );

    // The proposal page: credible interval and chance to win in the evidence table.
    let id = page_id.expect("a proposal citing analysed evidence");
    let app = TestApp::spawn(hypod);
    let page = request(
        &app.addr,
        "GET",
        &format!("/ui/proposals/{id}"),
        &[(
            "Cookie",
            &format!("hypod_token={}", setup.token("reviewer")),
        )],
        None,
    );
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<th>Chance to win</th>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("chance to win</td>"), "{}", page.body);
    assert!(!page.body.contains("class=\"p-value\""), "{}", page.body);
}

#[test]
fn the_frequentist_prompt_keeps_its_words() {
    let hypod = Hypod::new();
    hypod.import_sample();
    let rendered = hypod.ok(&["prompt", "render", "--json"]).json();
    let user = rendered["user"].as_str().expect("the user message");
    // The legend line as it always was, its line break included.
    let legend = "Fields: outcome (proven, disproven, inconclusive, invalid), lift = relative lift of the primary KPI with its 95% ci, p = p-value, power = achieved power, n = visitors.\n";
    assert!(user.contains(legend) && !user.contains("ctw"), "{user}");
}
