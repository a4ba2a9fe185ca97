//! How a proposal is sized, as a reviewer reads it (issue #26): one sample-size figure in the
//! proposer's text and under size; the expected duration in whole weeks, never below
//! `proposer.min_days`, saying so when the sample alone would take less; the consented share
//! of the segment beside the duration. Through the binary (`queue show`, text and `--json`) and
//! the real server's proposal page, on SQLite and PostgreSQL.

use crate::review::Reviewed;
use crate::support::{Hypod, SAMPLE};
use crate::test_app::{request, TestApp};
use serde_json::Value;

/// Every "at least N visitors per arm" / "needs N visitors per arm" figure in `text`.
fn stated_sizes(text: &str) -> Vec<u64> {
    let mut sizes = Vec::new();
    for lead in ["at least ", "needs "] {
        for (at, _) in text.match_indices(lead) {
            let rest = &text[at + lead.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() && rest[digits.len()..].starts_with(" visitors per arm") {
                sizes.push(digits.parse().expect("a number"));
            }
        }
    }
    sizes
}

/// `queue show --json` of every proposal in the queue.
fn shown(hypod: &Hypod) -> Vec<Value> {
    hypod
        .ok(&["queue", "list", "--json"])
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            let id = p["id"].as_str().expect("an id");
            hypod.ok(&["queue", "show", id, "--json"]).json()
        })
        .collect()
}

fn on_postgresql(check: fn(Hypod)) {
    crate::backends::on_fresh_postgres(|url| check(Hypod::with_database(url)));
}

/// The retest's change said "at least 141741 visitors per arm" while its size said 145699:
/// the strategy sized on the first test's control, the enrichment on the place's baseline.
fn the_size_in_the_text_is_the_size_shown(hypod: Hypod) {
    hypod.ok(&["import", SAMPLE]);
    hypod.ok(&["run"]);
    let mut stated = 0;
    for view in shown(&hypod) {
        let p = &view["proposal"];
        let required = p["enrichment"]["required_visitors_per_arm"].as_u64();
        for field in ["change", "rationale"] {
            let text = p["draft"][field].as_str().expect("text");
            for size in stated_sizes(text) {
                stated += 1;
                assert_eq!(
                    Some(size),
                    required,
                    "{field} of {} says {size} visitors per arm, its size {required:?}: {text}",
                    p["draft"]["title"]
                );
            }
        }
    }
    assert!(
        stated >= 2,
        "the sample history gives a retest whose change and rationale state its sample"
    );
}

#[test]
fn the_size_in_the_text_is_the_size_shown_on_sqlite() {
    the_size_in_the_text_is_the_size_shown(Hypod::new());
}

#[test]
fn the_size_in_the_text_is_the_size_shown_on_postgresql() {
    on_postgresql(the_size_in_the_text_is_the_size_shown);
}

/// The top proposal of the sample reaches its sample in 1 day: it is sized to a full week, and
/// `queue show` (text and JSON) and the proposal page say why, with the consented share of the
/// segment beside the duration.
fn the_one_day_test_is_sized_to_a_full_week(hypod: Hypod) {
    let setup = Reviewed::on(hypod);
    let views = shown(&setup.hypod);
    for view in &views {
        let days = view["proposal"]["enrichment"]["expected_duration_days"]
            .as_f64()
            .expect("every sample proposal has a duration");
        assert!(
            days >= 7.0 && days % 7.0 == 0.0,
            "{days} days is not whole weeks of at least 7: {}",
            view["proposal"]["draft"]["title"]
        );
    }
    let top = views
        .iter()
        .max_by(|a, b| {
            let value = |v: &Value| {
                v["proposal"]["enrichment"]["expected_value_per_day"]
                    .as_f64()
                    .unwrap_or(0.0)
            };
            value(a).total_cmp(&value(b))
        })
        .expect("proposals");
    let id = top["proposal"]["id"].as_str().expect("id");
    let enrichment = &top["proposal"]["enrichment"];
    assert_eq!(enrichment["expected_duration_days"], 7.0, "{enrichment}");
    assert_eq!(enrichment["days_to_reach_sample"], 1.0, "{enrichment}");
    let words =
        "7 days: a full week, although 1 day would reach the sample; 100% of the segment consented";
    assert_eq!(top["decision"]["duration"], words, "{}", top["decision"]);
    let text = setup.hypod.ok(&["queue", "show", id]).stdout;
    let asked = text
        .lines()
        .find(|l| l.starts_with("asked "))
        .expect("an asked line");
    assert!(
        asked.ends_with(&format!("visitors per arm; {words}")),
        "{asked}"
    );

    // A segment only partly consented: its share beside the duration, in the text and JSON.
    let partial = views
        .iter()
        .find(|v| {
            v["proposal"]["enrichment"]["consented_share"]
                .as_f64()
                .is_some_and(|s| s < 1.0)
        })
        .expect("the sample history gives a proposal for a partly consented segment");
    let share = partial["proposal"]["enrichment"]["consented_share"]
        .as_f64()
        .expect("a share");
    let consented = format!("{:.0}% of the segment consented", share * 100.0);
    assert!(
        partial["decision"]["duration"]
            .as_str()
            .is_some_and(|d| d.ends_with(&consented)),
        "{}",
        partial["decision"]
    );
    let partial_id = partial["proposal"]["id"].as_str().expect("id");
    let text = setup.hypod.ok(&["queue", "show", partial_id]).stdout;
    assert!(text.contains(&consented), "{text}");

    // The proposal page: beside the duration, in the decision card and under size.
    let app = TestApp::spawn(&setup.hypod);
    let page = |id: &str| {
        let answer = request(
            &app.addr,
            "GET",
            &format!("/ui/proposals/{id}"),
            &[(
                "Cookie",
                &format!("hypod_token={}", setup.token("reviewer")),
            )],
            None,
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body
    };
    let html = page(id);
    assert!(
        html.contains(&format!("<span id=\"asked-duration\">{words}</span>")),
        "{html}"
    );
    assert!(
        html.contains("<strong id=\"duration\">7 days</strong> (<span id=\"consented-share\">100% of the segment consented</span>)"),
        "{html}"
    );
    let html = page(partial_id);
    assert!(
        html.contains(&format!("<span id=\"consented-share\">{consented}</span>")),
        "{html}"
    );
}

#[test]
fn the_one_day_test_is_sized_to_a_full_week_on_sqlite() {
    the_one_day_test_is_sized_to_a_full_week(Hypod::new());
}

#[test]
fn the_one_day_test_is_sized_to_a_full_week_on_postgresql() {
    on_postgresql(the_one_day_test_is_sized_to_a_full_week);
}

fn with_proposer(hypod: &Hypod, section: &str) {
    let path = hypod.path().join("hypod.toml");
    let mut config = std::fs::read_to_string(&path).expect("config");
    config.push_str(section);
    std::fs::write(&path, config).expect("write config");
}

/// `proposer.min_days = 0` turns the minimum and the rounding to weeks off: the top proposal
/// takes the 1 day its sample needs again, and says nothing more.
#[test]
fn min_days_zero_sizes_to_the_sample_alone() {
    let hypod = Hypod::new();
    with_proposer(&hypod, "[proposer]\nmin_days = 0\n");
    hypod.ok(&["import", SAMPLE]);
    hypod.ok(&["run"]);
    let views = shown(&hypod);
    let one_day = views
        .iter()
        .find(|v| v["proposal"]["enrichment"]["days_to_reach_sample"] == 1.0)
        .expect("the 1-day proposal");
    assert_eq!(
        one_day["proposal"]["enrichment"]["expected_duration_days"],
        1.0
    );
    assert_eq!(
        one_day["decision"]["duration"],
        "1 day; 100% of the segment consented"
    );
}

/// A minimum that is not whole weeks is refused before anything is read or written, naming
/// the key and what to write instead.
#[test]
fn min_days_not_in_whole_weeks_is_refused() {
    let hypod = Hypod::new();
    with_proposer(&hypod, "[proposer]\nmin_days = 10\n");
    for args in [vec!["import", SAMPLE], vec!["run"]] {
        let ran = hypod.run(&args);
        assert_ne!(ran.code, Some(0), "{args:?} ran with min_days = 10");
        assert!(
            ran.stderr.contains("proposer.min_days") && ran.stderr.contains("multiple of 7"),
            "{}",
            ran.stderr
        );
    }
    assert!(
        !hypod.path().join("hypod.db").exists(),
        "nothing was written"
    );
}

/// Governance can warn below the minimum: the days to reach the sample are a policy field, so
/// a rule can flag a test whose sample alone would take less than a week.
#[test]
fn a_policy_can_warn_when_the_sample_alone_takes_less_than_a_week() {
    let hypod = Hypod::new();
    let policies = hypod.path().join("policies");
    std::fs::create_dir(&policies).expect("policies dir");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    for entry in std::fs::read_dir(shipped).expect("shipped policies") {
        let entry = entry.expect("entry");
        if entry.path().is_file() {
            std::fs::copy(entry.path(), policies.join(entry.file_name())).expect("copy");
        }
    }
    std::fs::write(
        policies.join("full-week.toml"),
        r#"[[rule]]
id = "full-week"
effect = "warn"
description = "A test whose sample alone takes less than a week reads a weekday mix."
when = "proposal.days_to_reach_sample != null"
expr = "proposal.days_to_reach_sample >= 7.0"
message = "The sample alone takes {{ proposal.days_to_reach_sample }} day(s): run whole weeks."
"#,
    )
    .expect("write rule");
    let path = hypod.path().join("hypod.toml");
    let config = std::fs::read_to_string(&path)
        .expect("config")
        .replace(shipped, &policies.to_string_lossy());
    std::fs::write(&path, config).expect("write config");
    hypod.ok(&["import", SAMPLE]);
    hypod.ok(&["run"]);
    let views = shown(&hypod);
    let verdict = |v: &Value| {
        v["proposal"]["verdicts"]
            .as_array()
            .expect("verdicts")
            .iter()
            .find(|r| r["rule_id"] == "full-week")
            .cloned()
            .expect("the full-week verdict")
    };
    let one_day = views
        .iter()
        .find(|v| v["proposal"]["enrichment"]["days_to_reach_sample"] == 1.0)
        .expect("the 1-day proposal");
    let warned = verdict(one_day);
    assert_eq!(warned["passed"], false, "{warned}");
    assert_eq!(warned["effect"], "warn", "{warned}");
    let long = views
        .iter()
        .find(|v| {
            v["proposal"]["enrichment"]["days_to_reach_sample"]
                .as_f64()
                .is_some_and(|d| d >= 7.0)
        })
        .expect("a proposal whose sample takes a week or more");
    assert_eq!(verdict(long)["passed"], true);
}

/// Every "would run N days" the run records for a dropped draft, with the draft's title.
fn too_long(run: &Value) -> Vec<(String, f64)> {
    run["run"]["rejected_drafts"]
        .as_array()
        .expect("rejected_drafts")
        .iter()
        .filter_map(|d| {
            let reason = d["reasons"][0].as_str()?;
            let days = reason.split(" would run ").nth(1)?.split(" days").next()?;
            Some((d["raw"]["title"].as_str()?.to_string(), days.parse().ok()?))
        })
        .collect()
}

/// The sample's holdback of the hero banner, sized for its lever's pooled +1 %, would take
/// months: with `proposer.max_days = 42` (the stage gate's six weeks) the builtin does not
/// queue a test longer than that, and the run says which idea it dropped and how long it
/// would run. By default (no limit) the same idea is queued and the stage gate's rule warns.
#[test]
fn the_builtin_queues_no_test_longer_than_max_days() {
    let hypod = Hypod::new();
    with_proposer(&hypod, "[proposer]\nmax_days = 42\n");
    hypod.ok(&["import", SAMPLE]);
    let run = hypod.ok(&["run", "--json"]).json();
    let dropped = too_long(&run);
    assert!(
        dropped
            .iter()
            .any(|(title, days)| title.contains("holdback") && *days > 42.0),
        "the long holdback is recorded as dropped: {:#}",
        run["run"]["rejected_drafts"]
    );
    assert!(
        run["run"]["rejected_drafts"][0]["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("longer than proposer.max_days (42)")),
        "{:#}",
        run["run"]["rejected_drafts"]
    );
    assert_eq!(
        run["run"]["summary"]["dropped"].as_u64(),
        Some(dropped.len() as u64)
    );
    let views = shown(&hypod);
    assert!(!views.is_empty(), "something is queued");
    for view in &views {
        let days = view["proposal"]["enrichment"]["expected_duration_days"].as_f64();
        assert!(
            days.is_none_or(|d| d <= 42.0),
            "{} is planned for {days:?} days",
            view["proposal"]["draft"]["title"]
        );
    }

    // Without the limit (the default), the same idea is queued for the months it needs, and
    // the stage gate's rule warns about it.
    let unlimited = Hypod::new();
    unlimited.ok(&["import", SAMPLE]);
    let run = unlimited.ok(&["run", "--json"]).json();
    assert!(
        too_long(&run).is_empty(),
        "{:#}",
        run["run"]["rejected_drafts"]
    );
    let (title, days) = &dropped[0];
    let queued = shown(&unlimited)
        .into_iter()
        .find(|v| v["proposal"]["draft"]["title"] == title.as_str())
        .unwrap_or_else(|| panic!("{title} is queued with max_days = 0"));
    let planned = queued["proposal"]["enrichment"]["expected_duration_days"]
        .as_f64()
        .expect("a duration");
    assert_eq!(planned.round(), days.round());
    let warned = queued["proposal"]["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .any(|v| v["rule_id"] == "experiment-length" && v["passed"] == false);
    assert!(warned, "{:#}", queued["proposal"]["verdicts"]);
}

/// A limit below the minimum would drop every test, and one past ten years is a typo: both
/// refused, naming the key (and the other key it contradicts).
#[test]
fn max_days_below_min_days_or_past_ten_years_is_refused() {
    for (section, named) in [
        (
            "[proposer]\nmin_days = 14\nmax_days = 7\n",
            "proposer.min_days",
        ),
        ("[proposer]\nmax_days = 3651\n", "3650"),
    ] {
        let hypod = Hypod::new();
        with_proposer(&hypod, section);
        let ran = hypod.run(&["run"]);
        assert_ne!(ran.code, Some(0), "{section}");
        assert!(
            ran.stderr.contains("proposer.max_days") && ran.stderr.contains(named),
            "{section}: {}",
            ran.stderr
        );
    }
}
