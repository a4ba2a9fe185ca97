//! `/metrics` through the real server and the binary, on SQLite and PostgreSQL: a scheduled
//! run (the server's own scheduler), a `hypod run` (another process on the same database) and a
//! `POST /api/v1/runs` are all counted, by trigger, from the database; the HTTP requests are
//! counted by route template (never the raw path) and status; and the whole exposition parses
//! as Prometheus' text format, every duration a histogram with cumulative buckets ending in
//! `+Inf`.

use crate::backends::{postgres_server, PgDatabase};
use crate::support::Hypod;
use crate::test_app::{request, TestApp};
use std::collections::{BTreeMap, BTreeSet};

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// A fresh PostgreSQL database for one test, dropped when the test ends.
struct PgGuard(PgDatabase);

impl PgGuard {
    fn create() -> Option<PgGuard> {
        block_on(async {
            let server = postgres_server().await?;
            Some(PgGuard(PgDatabase::create(&server).await))
        })
    }
}

impl Drop for PgGuard {
    fn drop(&mut self) {
        block_on(self.0.drop_now());
    }
}

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: each family's declared type, and the samples in order.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="b",c="d"}` after the name: the labels and what follows the closing brace.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or(format!("no `=` in labels: {text}"))?;
        let key = &rest[..eq];
        if !valid_name(key) || key.starts_with("__") {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or(format!("label {key} not quoted: {text}"))?
            .char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?} in {text}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label value: {text}")),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} twice: {text}"));
        }
        rest = &rest[eq + 1 + 1 + end + 1..];
    }
}

/// Parses Prometheus' text format (0.0.4), refusing what a scraper would refuse.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut exposition = Exposition::default();
    let mut helped = BTreeSet::new();
    let mut series = BTreeSet::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["TYPE", name, kind] => {
                    if !valid_name(name) {
                        return Err(format!("bad metric name {name:?}"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(kind) {
                        return Err(format!("unknown type {kind:?}"));
                    }
                    if exposition
                        .samples
                        .iter()
                        .any(|s| family(s, &exposition) == *name)
                    {
                        return Err(format!("TYPE of {name} after its samples"));
                    }
                    if exposition
                        .types
                        .insert(name.to_string(), kind.to_string())
                        .is_some()
                    {
                        return Err(format!("{name} typed twice"));
                    }
                }
                ["HELP", name, _] => {
                    helped.insert(name.to_string());
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or(format!("no value: {line}"))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(after) => parse_labels(after)?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let value = match rest.trim() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse::<f64>()
                .map_err(|e| format!("bad value {v:?} ({e}): {line}"))?,
        };
        if !series.insert((name.to_string(), format!("{labels:?}"))) {
            return Err(format!("series twice: {line}"));
        }
        let sample = Sample {
            name: name.to_string(),
            labels,
            value,
        };
        let family = family(&sample, &exposition);
        if !exposition.types.contains_key(&family) {
            return Err(format!("{name}: no TYPE for its family {family}"));
        }
        if !helped.contains(&family) {
            return Err(format!("{name}: no HELP for its family {family}"));
        }
        exposition.samples.push(sample);
    }
    check_histograms(&exposition)?;
    Ok(exposition)
}

/// The family a sample belongs to (a histogram's `_bucket`, `_sum`, `_count` belong to it).
fn family(sample: &Sample, exposition: &Exposition) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.name.strip_suffix(suffix) {
            if exposition.types.get(base).map(String::as_str) == Some("histogram") {
                return base.to_string();
            }
        }
    }
    sample.name.clone()
}

/// Every histogram series: buckets in ascending `le`, cumulative, the last `+Inf` and equal to
/// `_count`, with a `_sum`.
fn check_histograms(exposition: &Exposition) -> Result<(), String> {
    for (name, kind) in &exposition.types {
        if kind == "summary" {
            return Err(format!("{name} is a summary: durations must be histograms"));
        }
        if kind != "histogram" {
            continue;
        }
        // labels without `le` → [(le, count)], sum, count
        type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
        let mut all: BTreeMap<String, Series> = BTreeMap::new();
        for sample in &exposition.samples {
            let mut labels = sample.labels.clone();
            let le = labels.remove("le");
            let key = format!("{labels:?}");
            let entry = all.entry(key).or_default();
            if sample.name == format!("{name}_bucket") {
                let le = le.ok_or(format!("{name}_bucket without le"))?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse::<f64>().map_err(|e| format!("le {le:?}: {e}"))?
                };
                entry.0.push((bound, sample.value));
            } else if sample.name == format!("{name}_sum") {
                entry.1 = Some(sample.value);
            } else if sample.name == format!("{name}_count") {
                entry.2 = Some(sample.value);
            } else if sample.name == *name {
                return Err(format!("{name}: a bare sample of a histogram"));
            }
        }
        for (labels, (buckets, sum, count)) in all {
            if buckets.is_empty() && sum.is_none() && count.is_none() {
                continue;
            }
            let count = count.ok_or(format!("{name}{labels}: no _count"))?;
            sum.ok_or(format!("{name}{labels}: no _sum"))?;
            let last = buckets.last().ok_or(format!("{name}{labels}: no bucket"))?;
            if last.0 != f64::INFINITY {
                return Err(format!("{name}{labels}: the last bucket is not +Inf"));
            }
            if last.1 != count {
                return Err(format!("{name}{labels}: +Inf {} != _count {count}", last.1));
            }
            for pair in buckets.windows(2) {
                if pair[1].0 <= pair[0].0 || pair[1].1 < pair[0].1 {
                    return Err(format!(
                        "{name}{labels}: buckets not cumulative: {buckets:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn metrics(app: &TestApp) -> Exposition {
    let answer = request(&app.addr, "GET", "/metrics", &[], None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    parse(&answer.body).unwrap_or_else(|e| panic!("not valid exposition: {e}\n{}", answer.body))
}

/// `hypod_recorded_runs_total` summed over statuses, by trigger.
fn runs_by_trigger(exposition: &Exposition) -> BTreeMap<String, f64> {
    let mut by = BTreeMap::new();
    for s in &exposition.samples {
        if s.name == "hypod_recorded_runs_total" {
            *by.entry(s.labels["trigger"].clone()).or_insert(0.0) += s.value;
        }
    }
    by
}

fn sample<'a>(
    exposition: &'a Exposition,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a Sample> {
    exposition.samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

fn three_runs_are_counted(hypod: Hypod) {
    hypod.import_sample();
    let admin = format!("Bearer {}", hypod.token("ada", "admin"));
    // The server's schedule fires once a year; with `missed = "run_once"` it runs the slot it
    // missed (the last one before now) as soon as it starts: the scheduled run.
    let app = TestApp::spawn_with(&hypod, &[("HYPOD_SCHEDULE__MISSED", "run_once")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut seen = runs_by_trigger(&metrics(&app));
    while seen.get("schedule").copied().unwrap_or(0.0) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the missed slot never ran: {seen:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        seen = runs_by_trigger(&metrics(&app));
    }
    assert_eq!(seen.values().sum::<f64>(), 1.0, "{seen:?}");

    // A run by the command line: another process on the same database.
    hypod.ok(&["run"]);
    // A run through the API.
    let run = request(
        &app.addr,
        "POST",
        "/api/v1/runs",
        &[("Authorization", &admin)],
        None,
    );
    assert_eq!(run.status, 201, "{}", run.body);
    // A proposal read, a proposal that does not exist, and a path no route matches.
    let id = crate::review_audit::last_proposal(&hypod);
    let read = request(
        &app.addr,
        "GET",
        &format!("/api/v1/proposals/{id}"),
        &[("Authorization", &admin)],
        None,
    );
    assert_eq!(read.status, 200, "{}", read.body);
    let missing = request(
        &app.addr,
        "GET",
        "/api/v1/proposals/no-such-proposal",
        &[("Authorization", &admin)],
        None,
    );
    assert_eq!(missing.status, 404, "{}", missing.body);
    let nowhere = request(&app.addr, "GET", "/no/such/path/8c1f", &[], None);
    assert_eq!(nowhere.status, 404, "{}", nowhere.body);

    // The audit log names who asked for each run: the scheduler, the command line, and the
    // API's caller.
    let audit = hypod.ok(&["audit", "export"]).json_lines();
    let mut actors: Vec<String> = audit
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "run.succeeded")
        .map(|e| e["actor"].as_str().unwrap_or("").to_string())
        .collect();
    actors.sort();
    assert_eq!(actors, ["api:ada", "cli", "scheduler"], "{actors:?}");
    assert_eq!(run.json()["run"]["trigger"], "api:ada", "{}", run.body);
    // One proposal rejected, so that the queue's gauge has two statuses to tell apart.
    hypod.ok(&["queue", "reject", &id, "--as", "ada", "--reason", "not now"]);

    let exposition = metrics(&app);
    let by_trigger = runs_by_trigger(&exposition);
    assert_eq!(
        by_trigger,
        BTreeMap::from([
            ("api".to_string(), 1.0),
            ("cli".to_string(), 1.0),
            ("schedule".to_string(), 1.0),
        ]),
        "one run of each trigger, three in all"
    );
    for trigger in ["api", "cli", "schedule"] {
        let count = sample(
            &exposition,
            "hypod_recorded_run_duration_seconds_count",
            &[("trigger", trigger)],
        )
        .unwrap_or_else(|| panic!("no duration histogram for {trigger}"));
        assert_eq!(count.value, 1.0, "{trigger}");
    }
    assert_eq!(
        exposition.types["hypod_recorded_run_duration_seconds"],
        "histogram"
    );
    for name in [
        "hypod_run_duration_seconds",
        "hypod_stage_duration_seconds",
        "hypod_model_latency_seconds",
        "hypod_http_request_duration_seconds",
    ] {
        assert_eq!(exposition.types[name], "histogram", "{name}");
    }
    // The scheduled run was this process's: its stages are timed here.
    assert!(
        sample(
            &exposition,
            "hypod_stage_duration_seconds_count",
            &[("stage", "propose")]
        )
        .is_some_and(|s| s.value >= 1.0),
        "the scheduled run's stages"
    );

    // HTTP: by route template and status, never by raw path.
    for (route, method, status) in [
        ("/api/v1/proposals/{id}", "GET", "200"),
        ("/api/v1/proposals/{id}", "GET", "404"),
        ("/api/v1/runs", "POST", "201"),
        ("/metrics", "GET", "200"),
        ("unmatched", "GET", "404"),
    ] {
        let labels = [("route", route), ("method", method), ("status", status)];
        let total = sample(&exposition, "hypod_http_requests_total", &labels)
            .unwrap_or_else(|| panic!("no request count for {labels:?}"));
        assert!(total.value >= 1.0, "{labels:?}");
        let count = sample(
            &exposition,
            "hypod_http_request_duration_seconds_count",
            &labels,
        )
        .unwrap_or_else(|| panic!("no latency histogram for {labels:?}"));
        assert_eq!(count.value, total.value, "{labels:?}");
        let inf = [
            ("route", route),
            ("method", method),
            ("status", status),
            ("le", "+Inf"),
        ];
        assert!(
            sample(
                &exposition,
                "hypod_http_request_duration_seconds_bucket",
                &inf
            )
            .is_some(),
            "{labels:?}"
        );
    }
    for s in &exposition.samples {
        if let Some(route) = s.labels.get("route") {
            assert!(
                !route.contains(&id) && !route.contains("no-such") && !route.contains("8c1f"),
                "a raw path as a label: {s:?}"
            );
        }
    }
    // The queue's gauge: every status named, each count the queue's own.
    let queue = hypod.ok(&["queue", "list", "--json"]).json();
    let queue = queue.as_array().expect("the queue");
    for status in crate::support::STATUSES {
        let listed = queue.iter().filter(|p| p["status"] == status).count();
        let gauge = sample(&exposition, "hypod_proposals", &[("status", status)])
            .unwrap_or_else(|| panic!("no hypod_proposals for {status}"));
        assert_eq!(gauge.value, listed as f64, "{status}");
    }
    for status in ["pending_review", "rejected"] {
        assert!(queue.iter().any(|p| p["status"] == status), "none {status}");
    }
    let cost = exposition
        .samples
        .iter()
        .position(|s| s.name == "hypod_model_cost_total");
    assert!(cost.is_some(), "hypod_model_cost_total is exposed");
    let text = request(&app.addr, "GET", "/metrics", &[], None).body;
    assert!(
        text.contains("# HELP hypod_model_cost_total")
            && text
                .lines()
                .any(|l| l.starts_with("# HELP hypod_model_cost_total") && l.contains("US dollars")),
        "the cost's currency in its help text:\n{text}"
    );
    drop(app);
}

#[test]
fn metrics_count_scheduled_cli_and_api_runs_on_sqlite() {
    three_runs_are_counted(Hypod::new());
}

#[test]
fn metrics_count_scheduled_cli_and_api_runs_on_postgresql() {
    let Some(db) = PgGuard::create() else {
        return;
    };
    three_runs_are_counted(Hypod::with_database(&db.0.url));
}

#[test]
fn the_parser_refuses_what_a_scraper_refuses() {
    let good = "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
    assert!(parse(good).is_ok(), "{:?}", parse(good));
    for (bad, why) in [
        (
            good.replace("h_bucket{le=\"+Inf\"} 2", "h_bucket{le=\"+Inf\"} 0"),
            "not cumulative",
        ),
        (good.replace("h_count 2", "h_count 5"), "+Inf != count"),
        (good.replace("h_bucket{le=\"+Inf\"} 2\n", ""), "no +Inf"),
        (good.replace("histogram", "summary"), "a summary"),
        (good.replace("# TYPE h histogram\n", ""), "untyped"),
        (
            "# HELP c x\n# TYPE c counter\nc{a=\"b} 1\n".to_string(),
            "unterminated",
        ),
        (
            "# HELP c x\n# TYPE c counter\nc 1\nc 2\n".to_string(),
            "twice",
        ),
    ] {
        assert!(parse(&bad).is_err(), "{why} accepted:\n{bad}");
    }
}

/// The value of `Key=` in the unit (the last one, as systemd reads it).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
}

/// The systemd unit, the install line in the docs and the container agree on where the binary
/// is, and the unit keeps its state in its `StateDirectory` as a dynamic user; where
/// `systemd-analyze` is installed, its exposure score is at most 2.0.
#[test]
fn the_systemd_unit_matches_the_docs_and_scores_at_most_two() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
    let unit = read("deploy/hypod.service");
    let exec = unit_value(&unit, "ExecStart").expect("ExecStart");
    let binary = exec.split_whitespace().next().expect("a command");
    let docs = read("docs/deployment.md");
    assert!(
        docs.contains(&format!("install -m 0755 target/release/hypod {binary}")),
        "docs/deployment.md installs the binary where ExecStart ({binary}) points"
    );
    let container = read("deploy/Containerfile");
    assert!(
        container.contains(&format!(
            "COPY --from=build /src/target/release/hypod {binary}"
        )) && container.contains(&format!("ENTRYPOINT [\"{binary}\"]")),
        "the Containerfile puts the binary at {binary}"
    );
    assert_eq!(unit_value(&unit, "DynamicUser"), Some("yes"));
    assert_eq!(unit_value(&unit, "StateDirectory"), Some("hypod"));
    assert_eq!(
        unit_value(&unit, "WorkingDirectory"),
        Some("/var/lib/hypod")
    );
    assert!(
        unit.contains("Environment=HYPOD_CONFIG=/var/lib/hypod/hypod.toml"),
        "the configuration (and so the SQLite database and key file beside it) in the state directory"
    );
    for directive in [
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == directive),
            "{directive} missing"
        );
    }
    let analyzed = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(root.join("deploy/hypod.service"))
        .output();
    let Ok(analyzed) = analyzed else {
        eprintln!("systemd-analyze is not installed: the unit's exposure score was NOT checked");
        return;
    };
    let text = String::from_utf8_lossy(&analyzed.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for hypod.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no score from systemd-analyze: {text}{}",
                String::from_utf8_lossy(&analyzed.stderr)
            )
        });
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}
