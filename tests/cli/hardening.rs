//! Hostile input through the real binary (issue 17): every mistake a person can make in an
//! import, a policy, the catalog, the configuration or the environment stops hypod with exit 2
//! and a message naming the file, line and field, and nothing is written; read-only commands
//! work on a read-only copy of the database.

use crate::support::{Hypod, Ran, SAMPLE};
use std::path::{Path, PathBuf};

const GOOD: &str = r#"{"id":"e1","name":"A","moment":"search","primary_kpi":"conversion_rate","status":"concluded","variants":[{"name":"control","control":true,"visitors":100,"conversions":5},{"name":"t","control":false,"visitors":100,"conversions":7}]}"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Both streams, for messages that may go to either.
fn said(ran: &Ran) -> String {
    format!("{}{}", ran.stdout, ran.stderr)
}

/// Imports `text` as `name` into a fresh folder and expects a refusal mentioning `expected`;
/// nothing may be written (the database is not even created).
fn refused_import(name: &str, text: &str, expected: &[&str]) {
    let hypod = Hypod::new();
    let file = write(hypod.path(), name, text);
    let ran = hypod.run(&["import", file.to_str().unwrap()]);
    assert_eq!(ran.code, Some(2), "{name}: {}", said(&ran));
    for part in expected {
        assert!(
            ran.stderr.contains(part),
            "{name}: {part:?} not in {}",
            ran.stderr
        );
    }
    assert!(
        ran.stderr.contains("nothing was imported"),
        "{}",
        ran.stderr
    );
    assert!(
        !hypod.path().join("hypod.db").exists(),
        "{name}: a database was written"
    );
}

#[test]
fn a_duplicate_id_in_one_file_is_refused_naming_both_lines() {
    let second = GOOD.replace("\"name\":\"A\"", "\"name\":\"B\"");
    refused_import(
        "h.ndjson",
        &format!("{GOOD}\n{GOOD}\n{second}\n"),
        &["h.ndjson:2: field `id`: duplicate id \"e1\": line 1 has the same id"],
    );
    refused_import(
        "h.json",
        &format!("[{GOOD},\n{second}]"),
        &["h.json: record 2: field `id`: duplicate id \"e1\": record 1 has the same id"],
    );
}

#[test]
fn a_key_twice_in_one_object_is_refused_with_its_path() {
    let twice = GOOD.replace(
        "\"visitors\":100,\"conversions\":7",
        "\"visitors\":100,\"conversions\":7,\"visitors\":9000",
    );
    refused_import(
        "h.ndjson",
        &twice,
        &["h.ndjson:1: field `variants[1].visitors`: the key appears twice in the same object"],
    );
    let twice_top = GOOD.replace("\"name\":\"A\"", "\"name\":\"A\",\"name\":\"B\"");
    refused_import(
        "h.json",
        &format!("[{twice_top}]"),
        &["h.json: record 1: field `name`: the key appears twice"],
    );
}

#[test]
fn dates_out_of_order_are_refused_in_ndjson_and_csv() {
    let dated = GOOD.replace(
        "\"status\"",
        "\"idea_at\":\"2025-03-01\",\"started_at\":\"2025-03-20\",\"ended_at\":\"2025-03-10\",\"status\"",
    );
    refused_import(
        "h.ndjson",
        &dated,
        &["h.ndjson:1: field `ended_at`: 2025-03-10 is before started_at 2025-03-20"],
    );
    let decided = GOOD.replace(
        "\"status\"",
        "\"idea_at\":\"2025-03-01\",\"decided_at\":\"2025-02-01\",\"status\"",
    );
    refused_import(
        "h.ndjson",
        &decided,
        &["h.ndjson:1: field `decided_at`: 2025-02-01 is before idea_at 2025-03-01"],
    );
    refused_import(
        "h.csv",
        "id,name,moment,primary_kpi,status,idea_at,decided_at,variant,control,visitors,conversions\n\
         e1,A,search,conversion_rate,concluded,2025-03-01,2025-02-01,control,true,100,5\n\
         e1,A,search,conversion_rate,concluded,2025-03-01,2025-02-01,t,false,100,7\n",
        &["h.csv:2: field `decided_at`: 2025-02-01 is before idea_at 2025-03-01"],
    );
}

#[test]
fn csv_header_mistakes_are_named_as_header_mistakes() {
    // `visitors` twice: not "9000 stored", not "conversions exceed visitors".
    let header =
        "id,name,moment,primary_kpi,status,variant,control,visitors,conversions,visitors\n";
    for rows in [
        "e1,A,search,conversion_rate,concluded,control,true,100,5,9000\n\
         e1,A,search,conversion_rate,concluded,t,false,100,7,9000\n",
        "e1,A,search,conversion_rate,concluded,control,true,100,50,5\n\
         e1,A,search,conversion_rate,concluded,t,false,100,7,100\n",
    ] {
        let hypod = Hypod::new();
        let file = write(hypod.path(), "h.csv", &format!("{header}{rows}"));
        let ran = hypod.run(&["import", file.to_str().unwrap()]);
        assert_eq!(ran.code, Some(2), "{}", said(&ran));
        assert!(
            ran.stderr.contains(
                "h.csv:1: field `visitors`: duplicate column: the header names it twice (columns 8 and 10)"
            ),
            "{}",
            ran.stderr
        );
        assert!(!ran.stderr.contains("exceed"), "{}", ran.stderr);
        assert!(!hypod.path().join("hypod.db").exists());
    }
    refused_import(
        "h.csv",
        "id,name,moment,primary_kpi,status,variant,control,visitors,conversions,colour\n\
         e1,A,search,conversion_rate,concluded,control,true,100,5,red\n",
        &["h.csv:1: field `colour`: unknown column (header column 10)"],
    );
}

#[test]
fn a_byte_order_mark_is_skipped_and_empty_input_refused() {
    for (name, text) in [
        ("bom.json", format!("\u{FEFF}[{GOOD}]")),
        ("bom.ndjson", format!("\u{FEFF}{GOOD}\n")),
        (
            "bom.csv",
            "\u{FEFF}id,name,moment,primary_kpi,status,variant,control,visitors,conversions\n\
             e1,A,search,conversion_rate,concluded,control,true,100,5\n\
             e1,A,search,conversion_rate,concluded,t,false,100,7\n"
                .to_string(),
        ),
    ] {
        let hypod = Hypod::new();
        let file = write(hypod.path(), name, &text);
        let ran = hypod.run(&["import", "--json", file.to_str().unwrap()]);
        assert_eq!(ran.code, Some(0), "{name}: {}", said(&ran));
        assert_eq!(ran.json()["inserted"], 1, "{name}");
    }
    refused_import("empty.ndjson", "", &["empty.ndjson", "holds no experiment"]);
}

#[test]
fn an_in_memory_database_is_refused() {
    let hypod = Hypod::with_database("sqlite::memory:");
    let ran = hypod.run(&["import", SAMPLE]);
    assert_eq!(ran.code, Some(2), "{}", said(&ran));
    assert!(ran.stderr.contains("in-memory"), "{}", ran.stderr);
}

/// A policies folder with the shipped catalog and one extra policy file.
fn with_policy(hypod: &Hypod, policy: &str) -> PathBuf {
    let dir = hypod.path().join("policies");
    let catalog = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/catalog.toml"
    ))
    .unwrap();
    write(&dir, "catalog.toml", &catalog);
    write(&dir, "hostile.toml", policy);
    write(
        hypod.path(),
        "hypod.toml",
        "[database]\nurl = \"sqlite://hypod.db\"\n[governance]\npolicies = \"policies\"\n",
    );
    dir
}

fn rule(expr: &str) -> String {
    format!(
        "[[rule]]\nid = \"hostile\"\neffect = \"deny\"\ndescription = \"test\"\nexpr = {}\nmessage = \"no\"\n",
        toml_string(expr)
    )
}

fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

#[test]
fn a_huge_rule_is_refused_naming_file_and_rule_not_a_stack_overflow() {
    let hypod = Hypod::new();
    with_policy(
        &hypod,
        &rule(&format!(
            "proposal.expected_relative_lift{}",
            " + 1".repeat(8_000)
        )),
    );
    for args in [&["policy", "check"][..], &["run"][..]] {
        let ran = hypod.run(args);
        assert_eq!(ran.code, Some(2), "{args:?}: {}", said(&ran));
        assert!(
            ran.stderr
                .contains("hostile.toml:5: rule \"hostile\": expr is too large")
                && ran.stderr.contains("limit is 2048"),
            "{}",
            ran.stderr
        );
    }
    with_policy(
        &hypod,
        &rule(&format!("{}true{}", "(".repeat(5_000), ")".repeat(5_000))),
    );
    let ran = hypod.run(&["policy", "check"]);
    assert_eq!(ran.code, Some(2), "{}", said(&ran));
    assert!(ran.stderr.contains("expr is too large"), "{}", ran.stderr);
}

#[test]
fn an_expensive_rule_is_cut_by_the_cost_bound() {
    let hypod = Hypod::new();
    let loops = "catalog.segment_names.all(a, ".repeat(8);
    with_policy(&hypod, &rule(&format!("{loops}a != ''{}", ")".repeat(8))));
    let started = std::time::Instant::now();
    let ran = hypod.run(&["policy", "check"]);
    assert_eq!(ran.code, Some(2), "{}", said(&ran));
    assert!(
        said(&ran).contains("evaluation cost limit exceeded"),
        "{}",
        said(&ran)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn policy_check_reports_a_rule_no_proposal_can_pass() {
    let hypod = Hypod::new();
    with_policy(
        &hypod,
        &rule("proposal.expected_relative_lift > 1.0 && proposal.expected_relative_lift < 0.0"),
    );
    let ran = hypod.run(&["policy", "check", "--json"]);
    assert_eq!(ran.code, Some(2), "{}", said(&ran));
    let report = ran.json();
    let lint = report["lints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rule"] == "hostile" && l["severity"] == "error")
        .unwrap_or_else(|| panic!("{report}"));
    let message = lint["message"].as_str().unwrap();
    assert!(
        message.contains("is false for every one of the")
            && message.contains("block every proposal"),
        "{message}"
    );
    assert!(lint["file"].as_str().unwrap().ends_with("hostile.toml"));
}

#[test]
fn an_invalid_catalog_is_refused_with_file_line_and_key() {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/catalog.toml"
    ))
    .unwrap();
    let line_of =
        |text: &str, needle: &str| text[..text.find(needle).unwrap()].matches('\n').count() + 1;
    let cases: Vec<(String, &str, &str)> =
        vec![
        (
            shipped.replace("edge = 25.0", "edge = -5.0"),
            "edge = ",
            "key `latency_budget_ms.edge`: -5 is not a latency budget",
        ),
        (
            shipped.replace("edge = 25.0", "edge = nan"),
            "edge = ",
            "key `latency_budget_ms.edge`: NaN is not a latency budget",
        ),
        (
            shipped.replace("default_conversion_value = 86.0", "default_conversion_value = -1.0"),
            "default_conversion_value",
            "key `default_conversion_value`: -1 is not a value",
        ),
        (
            shipped.replace("default_conversion_value = 86.0", "default_conversion_value = inf"),
            "default_conversion_value",
            "key `default_conversion_value`: inf is not a value",
        ),
        (
            shipped.replace("daily_visitors = 42000", "daily_visitors = 18446744073709551615"),
            "daily_visitors = 1844",
            "key `segment[1].daily_visitors`: 18446744073709551615 is not a daily visitor count",
        ),
        (
            shipped.replacen(
                "[[purpose]]\nname = \"analytics\"",
                "[[purpose]]\nname = \"personalization\"",
                1,
            ),
            "name = \"personalization\"\ndescription = \"Measure",
            "key `purpose[2].name`: purpose \"personalization\" is defined twice",
        ),
    ];
    for (text, needle, expected) in cases {
        assert_ne!(text, shipped, "{expected}");
        let hypod = Hypod::new();
        let dir = with_policy(&hypod, "");
        write(&dir, "catalog.toml", &text);
        let line = line_of(&text, needle);
        for args in [&["policy", "check"][..], &["analyze"][..]] {
            let ran = hypod.run(args);
            assert_eq!(ran.code, Some(2), "{args:?} {expected}: {}", said(&ran));
            let want = format!("catalog.toml:{line}: {expected}");
            assert!(
                ran.stderr.contains(&want),
                "want {want:?} in {}",
                ran.stderr
            );
        }
        assert!(!hypod.path().join("hypod.db").exists());
    }
}

#[test]
fn configuration_mistakes_are_named() {
    // A named policies folder that does not exist.
    let hypod = Hypod::new();
    write(
        hypod.path(),
        "hypod.toml",
        "[governance]\npolicies = \"polcies\"\n",
    );
    let ran = hypod.run(&["policy", "check"]);
    assert_eq!(ran.code, Some(2), "{}", said(&ran));
    assert!(
        ran.stderr.contains("governance.policies") && ran.stderr.contains("polcies"),
        "{}",
        ran.stderr
    );
    // A PostgreSQL URL that cannot be one.
    let hypod = Hypod::with_database("postgres://user@localhost:notaport/db");
    let ran = hypod.run(&["queue", "list"]);
    assert_eq!(ran.code, Some(2), "{}", said(&ran));
    assert!(
        ran.stderr.contains("key `database.url`")
            && ran.stderr.contains("not a valid PostgreSQL URL"),
        "{}",
        ran.stderr
    );
    // A database folder that does not exist.
    let hypod = Hypod::with_database("sqlite://missing/folder/h.db");
    let ran = hypod.run(&["import", SAMPLE]);
    assert_eq!(ran.code, Some(2), "{}", said(&ran));
    assert!(
        ran.stderr.contains("missing/folder") && ran.stderr.contains("does not exist"),
        "{}",
        ran.stderr
    );
    // A database folder that cannot be written (sysfs refuses new files, even to root).
    if Path::new("/sys").is_dir() {
        let hypod = Hypod::with_database("sqlite:///sys/hypod-test.db");
        let ran = hypod.run(&["import", SAMPLE]);
        assert_eq!(ran.code, Some(2), "{}", said(&ran));
        assert!(
            ran.stderr.contains("its folder /sys is not writable"),
            "{}",
            ran.stderr
        );
    }
    // An environment value with trailing text.
    let hypod = Hypod::new();
    for (var, value) in [
        ("HYPOD_PROPOSER__MAX_PROPOSALS", "8abc"),
        ("HYPOD_PROPOSER__MAX_PROPOSALS", "8 # eight"),
        ("HYPOD_ANALYSIS__ALPHA", "0.05x"),
        ("HYPOD_LLM__MAX_ATTEMPTS", "nan"),
    ] {
        let ran = Ran::of(
            hypod
                .command(&["queue", "list"])
                .env(var, value)
                .output()
                .unwrap(),
        );
        assert_eq!(ran.code, Some(2), "{var}={value}: {}", said(&ran));
        assert!(
            ran.stderr.contains(var) && ran.stderr.contains(&format!("{value:?}")),
            "{}",
            ran.stderr
        );
    }
    let ran = Ran::of(
        hypod
            .command(&["queue", "list"])
            .env("HYPOD_NOSUCH__KEY", "1")
            .output()
            .unwrap(),
    );
    assert_eq!(ran.code, Some(2), "{}", said(&ran));
    assert!(ran.stderr.contains("HYPOD_NOSUCH__KEY"), "{}", ran.stderr);
}

#[test]
fn a_relative_sqlite_path_follows_the_configuration_file() {
    for url in ["sqlite:h.db", "sqlite://h.db"] {
        let hypod = Hypod::with_database(url);
        let elsewhere = tempfile::tempdir().unwrap();
        let ran = Ran::of(
            hypod
                .command(&["import", SAMPLE])
                .current_dir(elsewhere.path())
                .output()
                .unwrap(),
        );
        assert_eq!(ran.code, Some(0), "{url}: {}", said(&ran));
        assert!(hypod.path().join("h.db").exists(), "{url}");
        assert!(!elsewhere.path().join("h.db").exists(), "{url}");
    }
}

fn digest(path: &Path) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn read_only_commands_work_on_a_read_only_copy() {
    let hypod = Hypod::at_fixed_time();
    hypod.import_sample();
    hypod.ok(&["run"]);
    let id = hypod.ok(&["queue", "list", "--json"]).json()[0]["id"]
        .as_str()
        .expect("a proposal")
        .to_string();
    // The auditor's copy: a read-only file in a folder of its own.
    let audit = tempfile::tempdir().unwrap();
    let copy = audit.path().join("copy.db");
    std::fs::copy(hypod.path().join("hypod.db"), &copy).unwrap();
    // The write-ahead log holds what the last writer has not checkpointed yet: it belongs to
    // the copy (read-only too).
    let wal = hypod.path().join("hypod.db-wal");
    let copies = if wal.exists() {
        let copied_wal = audit.path().join("copy.db-wal");
        std::fs::copy(&wal, &copied_wal).unwrap();
        vec![copy.clone(), copied_wal]
    } else {
        vec![copy.clone()]
    };
    for file in &copies {
        let mut permissions = std::fs::metadata(file).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(file, permissions).unwrap();
    }
    let before = digest(&copy);
    let reader = Hypod::with_database(&format!("sqlite://{}", copy.display()));
    for args in [
        &["queue", "list", "--json"][..],
        &["queue", "show", &id, "--json"][..],
        &["analyze", "--json"][..],
        &["audit", "verify"][..],
        &["export"][..],
    ] {
        let ran = reader.run(args);
        assert_eq!(ran.code, Some(0), "{args:?}: {}", said(&ran));
    }
    assert_eq!(
        digest(&copy),
        before,
        "a read-only command changed the file"
    );
}

#[test]
fn read_only_commands_never_migrate_and_say_so() {
    let hypod = Hypod::new();
    // An empty file is an empty SQLite database: no table, no migration.
    std::fs::write(hypod.path().join("hypod.db"), b"").unwrap();
    let ran = hypod.run(&["queue", "list"]);
    assert_eq!(ran.code, Some(1), "{}", said(&ran));
    assert!(
        ran.stderr.contains("is at migration 0") && ran.stderr.contains("run `hypod migrate`"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        std::fs::metadata(hypod.path().join("hypod.db"))
            .unwrap()
            .len(),
        0
    );
    hypod.ok(&["migrate"]);
    hypod.ok(&["queue", "list"]);
}
