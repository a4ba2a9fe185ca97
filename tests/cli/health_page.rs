//! The runs and health page a growth lead opens on Monday (issue #26): per quarter the proven
//! hypothesis rate against its healthy 30–50 % band, the median days from idea to decision with
//! its trend, attributed revenue with its coefficient of variation, experiments per commerce
//! moment, and the maturity stage with its reasons and next steps — server-drawn SVG whose
//! numbers (its data tables and descriptions) equal `analyze --json`'s `program`, read in
//! Chromium on the sample history at a fixed clock; a small hand-built history whose figures
//! are worked out by hand below; and `/api/v1/health` answering the same struct.

use crate::browser::Browser;
use crate::serve::Daemon;
use crate::support::{Hypod, FIXED_NOW};
use crate::test_app::request;
use serde_json::Value;

/// `hypod serve` on `hypod`'s folder at the fixed clock (as `hypod.ok` runs its commands), with
/// a schedule that never fires during a test, and these overrides.
fn serve_at_fixed_time(hypod: &Hypod, overrides: &[(&str, &str)]) -> Daemon {
    let mut all = vec![
        ("HYPOD_SERVER__LISTEN", "127.0.0.1:0"),
        ("HYPOD_SCHEDULE__CRON", "0 0 3 1 1 *"),
        ("HYPOD_SCHEDULE__MISSED", "skip"),
        ("HYPOD_NOW", FIXED_NOW),
    ];
    all.extend_from_slice(overrides);
    Daemon::spawn(hypod, &all)
}

/// `1234567.4` → `1 234 567` (whole units, thousands grouped by a space).
fn grouped(amount: f64) -> String {
    let digits = format!("{:.0}", amount.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    if amount.round() < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

fn days(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0} days")
    } else {
        format!("{value:.1} days")
    }
}

/// Every quarter the per-quarter figures of `program` mention, in order.
fn quarters(program: &Value) -> Vec<String> {
    let mut all = std::collections::BTreeSet::new();
    for key in [
        "proven_rate_by_quarter",
        "idea_to_decision_days_by_quarter",
        "attributed_revenue_by_quarter",
        "experiments_by_quarter_and_moment",
    ] {
        all.extend(
            program[key]
                .as_object()
                .unwrap_or_else(|| panic!("{key} in {program}"))
                .keys()
                .cloned(),
        );
    }
    all.into_iter().collect()
}

/// A quarter as the tables label it: "2026-Q4 (partial)" for a partial one.
fn row_label(program: &Value, quarter: &str) -> String {
    let partial = program["partial_quarters"]
        .as_array()
        .expect("partial_quarters")
        .iter()
        .any(|q| q == quarter);
    if partial {
        format!("{quarter} (partial)")
    } else {
        quarter.to_string()
    }
}

/// The rows (label, cells) a chart's table should hold, from `analyze --json`'s `program`.
fn expected_rows(program: &Value, chart: &str, currency: &str) -> Vec<(String, Vec<String>)> {
    quarters(program)
        .iter()
        .map(|q| {
            let cells = match chart {
                "chart-proven-rate" => {
                    let cell = &program["proven_rate_by_quarter"][q];
                    vec![match cell["rate"].as_f64() {
                        Some(rate) => format!(
                            "{:.1}% ({} of {})",
                            rate * 100.0,
                            cell["proven"],
                            cell["valid"]
                        ),
                        None => "—".into(),
                    }]
                }
                "chart-decision-days" => vec![program["idea_to_decision_days_by_quarter"][q]
                    .as_f64()
                    .map_or("—".into(), days)],
                "chart-revenue" => vec![program["attributed_revenue_by_quarter"][q]
                    .as_f64()
                    .map_or("—".into(), |v| format!("{} {currency}", grouped(v)))],
                other => panic!("no chart {other}"),
            };
            (row_label(program, q), cells)
        })
        .collect()
}

/// The table of the chart `id`, opened as a reader would (its `<details>`), as (label, cells).
fn table_rows(browser: &Browser, id: &str) -> Vec<(String, Vec<String>)> {
    browser.click(&format!("#{id} details summary"));
    let labels = browser.all_texts(&format!("#{id} tbody th"));
    let columns = browser.all_texts(&format!("#{id} thead th")).len() - 1;
    let cells = browser.all_texts(&format!("#{id} tbody td"));
    assert_eq!(cells.len(), labels.len() * columns, "{id}: {cells:?}");
    labels
        .into_iter()
        .zip(cells.chunks(columns).map(<[String]>::to_vec))
        .collect()
}

#[test]
fn the_health_charts_show_analyze_figures_in_chromium() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let hypod = Hypod::at_fixed_time();
    hypod.import_sample();
    hypod.ok(&["run"]);
    let viewer = hypod.token("vera", "viewer");
    let program = hypod.ok(&["analyze", "--json"]).json()["program"].clone();
    let daemon = serve_at_fixed_time(&hypod, &[("HYPOD_PROGRAM__CURRENCY", "EUR")]);
    let site = format!("http://{}", daemon.addr);

    browser.go(&format!("{site}/ui/login"));
    browser.type_into("#token", &viewer);
    browser.click_to("#sign-in", "/ui/queue");
    browser.go(&format!("{site}/ui/runs"));

    // Each chart's table holds exactly analyze's per-quarter figures.
    for chart in ["chart-proven-rate", "chart-decision-days", "chart-revenue"] {
        assert_eq!(
            table_rows(&browser, chart),
            expected_rows(&program, chart, "EUR"),
            "{chart}"
        );
    }
    let moment_rows = table_rows(&browser, "chart-moments");
    let columns = browser.all_texts("#chart-moments thead th");
    assert_eq!(columns.first().map(String::as_str), Some("Quarter"));
    assert_eq!(columns.last().map(String::as_str), Some("total"));
    let expected: Vec<(String, Vec<String>)> = quarters(&program)
        .iter()
        .map(|q| {
            let counts = &program["experiments_by_quarter_and_moment"][q];
            let mut cells: Vec<String> = columns[1..columns.len() - 1]
                .iter()
                .map(|m| {
                    counts[m.replace(' ', "_")]
                        .as_u64()
                        .unwrap_or(0)
                        .to_string()
                })
                .collect();
            let total: u64 = counts
                .as_object()
                .map_or(0, |c| c.values().filter_map(Value::as_u64).sum());
            cells.push(total.to_string());
            (row_label(&program, q), cells)
        })
        .collect();
    assert_eq!(moment_rows, expected);
    // Every experiment of the sample is counted once, in some quarter.
    let counted: u64 = moment_rows
        .iter()
        .filter_map(|(_, cells)| cells.last()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        counted,
        program["experiments"].as_u64().expect("experiments")
    );

    // The charts are images with a name and a description that reads the same numbers.
    let described = browser.script(
        "return [...document.querySelectorAll('figure.chart svg')].map(s => [s.getAttribute('role'), s.getAttribute('aria-labelledby'), s.querySelector('desc').textContent])",
    );
    let described = described.as_array().expect("charts");
    assert_eq!(described.len(), 4, "{described:?}");
    for chart in described {
        assert_eq!(chart[0], "img");
        assert!(chart[1].as_str().is_some_and(|l| l.ends_with("-desc")));
    }
    let q2 = &program["proven_rate_by_quarter"]["2025-Q2"];
    let said = format!(
        "2025-Q2 {:.1}% ({} of {})",
        q2["rate"].as_f64().expect("a rate") * 100.0,
        q2["proven"],
        q2["valid"]
    );
    assert!(
        described[0][2].as_str().is_some_and(|d| d.contains(&said)),
        "{said} not in {}",
        described[0][2]
    );
    let cv = format!(
        "Coefficient of variation {:.2} over complete quarters",
        program["attribution_cv"].as_f64().expect("a CV")
    );
    assert!(browser.text("#chart-revenue figcaption").contains(&cv));
    let trend = program["idea_to_decision_trend_days_per_quarter"]
        .as_f64()
        .expect("a trend");
    assert!(browser
        .text("#chart-decision-days figcaption")
        .contains(&format!(
            "trend {trend:.1} days per quarter over complete quarters: faster"
        )));

    // The healthy band is drawn on the bars' scale: its edges sit at 30 % and 50 % of the
    // height a bar of rate r has at r.
    let geometry = browser.script(
        "const b = document.querySelector('#chart-proven-rate rect.band'); const q = document.querySelector('#chart-proven-rate rect.bar[data-category=\"2025-Q2\"]'); return [b.y.baseVal.value, b.height.baseVal.value, q.y.baseVal.value, q.height.baseVal.value]",
    );
    let g: Vec<f64> = geometry
        .as_array()
        .expect("numbers")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let (band_top, band_height, bar_top, bar_height) = (g[0], g[1], g[2], g[3]);
    let base = bar_top + bar_height;
    let rate = q2["rate"].as_f64().expect("a rate");
    let per_unit = bar_height / rate;
    assert!(
        ((base - band_top - band_height) / per_unit - 0.30).abs() < 0.01,
        "{g:?}"
    );
    assert!(((base - band_top) / per_unit - 0.50).abs() < 0.01, "{g:?}");
    assert!(browser
        .text("#chart-proven-rate svg")
        .contains("healthy 30–50%"));
    // ... and said in words, for the whole programme.
    assert_eq!(
        browser.text("#rate-band"),
        format!(
            "Proven hypothesis rate {:.1}% ({} of {} valid results), below the healthy 30–50% band: the programme ships noise.",
            program["proven_rate"].as_f64().expect("a rate") * 100.0,
            program["proven"],
            program["valid_concluded"]
        )
    );

    // The maturity stage with the reasons that set it and what would move it up.
    assert_eq!(
        browser.text("#maturity-stage"),
        format!(
            "Maturity: Stage {} of 4 (Strategic)",
            program["maturity_stage"]
        )
    );
    let strings = |key: &str| -> Vec<String> {
        program[key]
            .as_array()
            .expect(key)
            .iter()
            .map(|s| s.as_str().expect("text").to_string())
            .collect()
    };
    assert_eq!(
        browser.all_texts("#maturity-reasons li"),
        strings("maturity_reasons")
    );
    let next = strings("maturity_next_steps");
    assert!(!next.is_empty());
    assert_eq!(browser.all_texts("#maturity-next li"), next);
    assert_eq!(
        browser.text("#maturity-next-heading"),
        "To reach Stage 4 (Adaptive)"
    );

    // No script on the page, and none allowed.
    assert_eq!(browser.script("return document.scripts.length"), 0);
    let answer = request(
        &daemon.addr,
        "GET",
        "/ui/runs",
        &[("Cookie", &format!("hypod_token={viewer}"))],
        None,
    );
    let csp = answer
        .header("content-security-policy")
        .expect("a CSP")
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    // The charts as they open (tables folded), for docs/screenshots/health.png.
    browser.go(&format!("{site}/ui/runs"));
    browser.script("document.querySelector('.charts').scrollIntoView()");
    browser.screenshot("health");
}

/// One experiment of the hand-built history (a proven one converts 6.5 % against 5 % on
/// 10 000 visitors an arm; an inconclusive one 5.2 % against 5 % on 1 000).
fn record(id: &str, moment: &str, idea: &str, decided: &str, proven: bool, revenue: f64) -> String {
    let (visitors, control, treatment) = if proven {
        (10_000, 500, 650)
    } else {
        (1_000, 50, 52)
    };
    format!(
        r#"{{"id":"{id}","name":"{id}","moment":"{moment}","primary_kpi":"conversion_rate","status":"concluded","idea_at":"{idea}","started_at":"{idea}","decided_at":"{decided}","attributed_revenue":{revenue},"variants":[{{"name":"control","control":true,"visitors":{visitors},"conversions":{control}}},{{"name":"treatment","control":false,"visitors":{visitors},"conversions":{treatment}}}]}}"#
    )
}

#[test]
fn a_hand_built_history_gives_the_figures_worked_out_by_hand() {
    let hypod = Hypod::at_fixed_time(); // today: 2026-10-15, in 2026-Q4
    let lines = [
        // 2026-Q1 (complete: the history starts on 2025-12-20): 31 and 40 days.
        record("h1", "search", "2025-12-20", "2026-01-20", true, 10_000.0),
        record("h2", "product_detail", "2026-01-10", "2026-02-19", false, 2_000.0),
        // 2026-Q2: 40, 30 and 60 days.
        record("h3", "cart_checkout", "2026-03-01", "2026-04-10", true, 12_000.0),
        record("h4", "search", "2026-04-01", "2026-05-01", false, 3_000.0),
        record("h5", "re_engagement", "2026-04-15", "2026-06-14", false, 1_000.0),
        // 2026-Q3: 30 and 50 days.
        record("h6", "post_purchase", "2026-06-01", "2026-07-01", true, 8_000.0),
        record("h7", "search", "2026-07-01", "2026-08-20", false, 2_000.0),
        // 2026-Q4, partial (today is in it): 34 days.
        record("h8", "product_detail", "2026-09-01", "2026-10-05", true, 5_000.0),
        // Running: dated by its start, counted per moment, in no rate.
        r#"{"id":"h9","name":"h9","moment":"cart_checkout","primary_kpi":"conversion_rate","status":"running","started_at":"2026-10-01","variants":[{"name":"control","control":true,"visitors":100,"conversions":5},{"name":"treatment","control":false,"visitors":100,"conversions":6}]}"#.to_string(),
    ];
    let file = hypod.path().join("hand.ndjson");
    std::fs::write(&file, lines.join("\n")).expect("write the history");
    hypod.ok(&["import", file.to_str().expect("a path")]);
    let program = hypod.ok(&["analyze", "--json"]).json()["program"].clone();

    // Proven rate per quarter: proven / valid concluded.
    let rates: Vec<(&str, u64, u64)> = vec![
        ("2026-Q1", 1, 2),
        ("2026-Q2", 1, 3),
        ("2026-Q3", 1, 2),
        ("2026-Q4", 1, 1),
    ];
    for (q, proven, valid) in rates {
        let cell = &program["proven_rate_by_quarter"][q];
        assert_eq!(
            (cell["proven"].as_u64(), cell["valid"].as_u64()),
            (Some(proven), Some(valid)),
            "{q}"
        );
        let rate = cell["rate"].as_f64().expect("a rate");
        assert!(
            (rate - proven as f64 / valid as f64).abs() < 1e-12,
            "{q}: {rate}"
        );
    }
    assert_eq!(program["proven_rate"], 0.5); // 4 of 8: the top of the healthy band
    assert_eq!(program["proven_rate_band"], "healthy");
    assert_eq!(program["partial_quarters"], serde_json::json!(["2026-Q4"]));

    // Medians by the quarter of the decision: (31+40)/2, 40, (30+50)/2, 34; overall the
    // median of 30 30 31 34 40 40 50 60 = (34+40)/2.
    assert_eq!(
        program["idea_to_decision_days_by_quarter"],
        serde_json::json!({"2026-Q1": 35.5, "2026-Q2": 40.0, "2026-Q3": 40.0, "2026-Q4": 34.0})
    );
    assert_eq!(program["median_idea_to_decision_days"], 37.0);
    // Trend over the complete quarters 35.5, 40, 40 at x = 0, 1, 2: Σdx·dy / Σdx² =
    // ((−1)(−3) + 0 + (1)(1.5)) / 2 = 2.25 days per quarter.
    let trend = program["idea_to_decision_trend_days_per_quarter"]
        .as_f64()
        .expect("a trend");
    assert!((trend - 2.25).abs() < 1e-12, "{trend}");

    // Attributed revenue: 12 000, 16 000, 10 000 in complete quarters, 5 000 in the partial
    // one. Mean 38 000/3; squared deviations (−2 000/3)², (10 000/3)², (−8 000/3)² sum to
    // 168·10⁶/9; sample variance 84·10⁶/9; CV = √(84/9)·1 000 / (38 000/3) = 0.24119.
    assert_eq!(
        program["attributed_revenue_by_quarter"],
        serde_json::json!({"2026-Q1": 12000.0, "2026-Q2": 16000.0, "2026-Q3": 10000.0, "2026-Q4": 5000.0})
    );
    let cv = program["attribution_cv"].as_f64().expect("a CV");
    let by_hand = (84.0f64 / 9.0).sqrt() * 1000.0 / (38_000.0 / 3.0);
    assert!((cv - by_hand).abs() < 1e-12, "{cv} vs {by_hand}");
    assert!((cv - 0.241_19).abs() < 1e-5, "{cv}");

    assert_eq!(
        program["experiments_by_quarter_and_moment"],
        serde_json::json!({
            "2026-Q1": {"search": 1, "product_detail": 1},
            "2026-Q2": {"cart_checkout": 1, "search": 1, "re_engagement": 1},
            "2026-Q3": {"post_purchase": 1, "search": 1},
            "2026-Q4": {"product_detail": 1, "cart_checkout": 1},
        })
    );

    // Stage 3: no KPI mirage, no black-box rule, a 37-day median, a 50 % rate. Not Stage 4:
    // four moments have fewer than 3 experiments in 12 months (search has 3), 37 days is
    // more than 14, and 8 valid results are 42 short of 50; the rate and the CV (≤ 0.30) pass.
    assert_eq!(program["maturity_stage"], 3);
    assert_eq!(
        program["maturity_next_steps"],
        serde_json::json!([
            "cover the neglected moments (product_detail, cart_checkout, post_purchase, re_engagement): at least 3 experiments each in 12 months, and at least 25% of the busiest moment's count",
            "decide within 14 days of the idea (median now 37 days)",
            "decide 42 more experiment(s) with a valid result (at least 50)",
        ])
    );
    assert_eq!(
        program["maturity_reasons"],
        serde_json::json!([
            "Stage 3 (Strategic): hypotheses are formalised and decided on commercial KPIs",
            "idea to decision takes 37 days (median)",
            "proven hypothesis rate 50%",
            "not Stage 4: neglected moments in the last 12 months: product_detail, cart_checkout, post_purchase, re_engagement",
            "not Stage 4: decisions take longer than two weeks",
        ])
    );

    // The API answers the same struct; the page says the same steps, and escapes a currency
    // made of markup.
    let daemon = serve_at_fixed_time(&hypod, &[("HYPOD_PROGRAM__CURRENCY", "<b>€</b>")]);
    let token = hypod.token("vera", "viewer");
    let api = request(
        &daemon.addr,
        "GET",
        "/api/v1/health",
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    );
    assert_eq!(api.status, 200, "{}", api.body);
    assert_eq!(api.json(), program);
    let page = request(
        &daemon.addr,
        "GET",
        "/ui/runs",
        &[("Cookie", &format!("hypod_token={token}"))],
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page
        .body
        .contains("<li>decide within 14 days of the idea (median now 37 days)</li>"));
    assert!(
        page.body.contains("<td>12 000 &lt;b&gt;€&lt;/b&gt;</td>"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<b>€"), "{}", page.body);
    assert!(page
        .body
        .contains("Coefficient of variation 0.24 over complete quarters"));
    assert!(page
        .body
        .contains("<th scope=\"row\">2026-Q4 (partial)</th>"));
}
