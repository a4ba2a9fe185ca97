//! Bounded fuzzing of everything a person or a model types into hypod: the importers (NDJSON,
//! JSON arrays, CSV, sniffed), the model-answer parser, the catalog and policy loaders (with
//! evaluation and `policy check` of what loads) and the configuration with its environment
//! overrides. Each target mutates real seeds (the shipped files) with byte edits and tokens of
//! its format; the property is "no panic, no abort": every input is either accepted or refused
//! with an error. Runs inside `cargo test --lib` (a few seconds); `HYPOD_FUZZ_CASES` sets the
//! cases per target for longer runs and `HYPOD_FUZZ_SEED` the seed (the README says how).

use crate::config::Config;
use crate::domain::catalog::Catalog;
use crate::governance::context::{PolicyContext, QueueCounts, RunInputs};
use crate::governance::policy::PolicySet;
use crate::governance::sample;
use crate::history::import::{self, Format};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Cases per target when `HYPOD_FUZZ_CASES` is not set: enough to shake out the shallow crashes
/// in a few seconds of CI.
const DEFAULT_CASES: usize = 300;

fn cases() -> usize {
    std::env::var("HYPOD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Prints what a target did (shown with `--nocapture`): how many inputs were accepted.
fn report(target: &str, accepted: usize, total: usize) {
    eprintln!(
        "fuzz {target}: {total} inputs, {accepted} accepted, the others refused with an error"
    );
}

fn rng(target: u64) -> StdRng {
    let seed = std::env::var("HYPOD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(17u64);
    StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(target))
}

/// Byte-level mutations with a dictionary of the format's tokens.
struct Mutator {
    rng: StdRng,
    tokens: &'static [&'static str],
}

const NUMBERS: [&str; 14] = [
    "0",
    "-1",
    "-0.0",
    "1e309",
    "-1e309",
    "nan",
    "inf",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
    "0.0000001",
    "1.7976931348623157e308",
    "99999999999999999999999999",
];

impl Mutator {
    fn new(target: u64, tokens: &'static [&'static str]) -> Mutator {
        Mutator {
            rng: rng(target),
            tokens,
        }
    }

    fn position(&mut self, bytes: &[u8]) -> usize {
        self.rng.random_range(0..=bytes.len())
    }

    /// One to six edits of `seed` (and sometimes a splice with `other`).
    fn mutate(&mut self, seed: &[u8], other: &[u8]) -> Vec<u8> {
        let mut bytes = seed.to_vec();
        let edits = self.rng.random_range(1..=6);
        for _ in 0..edits {
            let at = self.position(&bytes);
            match self.rng.random_range(0..9) {
                0 if !bytes.is_empty() => {
                    let end = (at + self.rng.random_range(1..32)).min(bytes.len());
                    bytes.drain(at.min(end)..end);
                }
                1 => {
                    let token = self.tokens[self.rng.random_range(0..self.tokens.len())];
                    bytes.splice(at..at, token.bytes());
                }
                2 => {
                    let number = NUMBERS[self.rng.random_range(0..NUMBERS.len())];
                    bytes.splice(at..at, number.bytes());
                }
                3 if !bytes.is_empty() => {
                    let start = self.rng.random_range(0..bytes.len());
                    let end = (start + self.rng.random_range(1..200)).min(bytes.len());
                    let copy = bytes[start..end].to_vec();
                    let at = self.position(&bytes);
                    let times = self.rng.random_range(1..4);
                    for _ in 0..times {
                        bytes.splice(at..at, copy.iter().copied());
                    }
                }
                4 if at < bytes.len() => bytes[at] = self.rng.random(),
                5 if !other.is_empty() => {
                    let start = self.rng.random_range(0..other.len());
                    let end = (start + self.rng.random_range(1..400)).min(other.len());
                    bytes.splice(at..at, other[start..end].iter().copied());
                }
                6 => {
                    // Repeat one token many times: deep nesting, long chains, long lines.
                    let token = self.tokens[self.rng.random_range(0..self.tokens.len())];
                    let times = self.rng.random_range(2..300);
                    bytes.splice(at..at, token.repeat(times).bytes().collect::<Vec<u8>>());
                }
                7 if at < bytes.len() => {
                    // Replace a digit run's neighbourhood with a number.
                    let number = NUMBERS[self.rng.random_range(0..NUMBERS.len())];
                    let end = (at + 3).min(bytes.len());
                    bytes.splice(at..end, number.bytes());
                }
                _ => {
                    let at = self.position(&bytes);
                    bytes.truncate(at);
                }
            }
        }
        bytes
    }

    /// A mutated text (lossily UTF-8) for the targets that take `&str`.
    fn mutate_text(&mut self, seed: &str, other: &str) -> String {
        String::from_utf8_lossy(&self.mutate(seed.as_bytes(), other.as_bytes())).into_owned()
    }
}

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "null",
    "true",
    "false",
    "\\u0000",
    "\\ud800",
    "\u{FEFF}",
    "\n",
    "\"id\":\"x\",",
    "\"variants\":[]",
    "\"control\":true",
    "\"visitors\":",
    "\"conversions\":",
    "\"revenue_sq\":",
    "\"allocation\":[0]",
    "\"idea_at\":\"2025-02-30\"",
    "\"ended_at\":\"1900-01-01\"",
    "\"decided_at\":\"9999-12-31\"",
    "\"moment\":\"x\"",
    "\"status\":\"running\"",
    "\u{202E}",
    "{\"name\":\"c\",\"control\":false,\"visitors\":1,\"conversions\":1}",
];

const CSV_TOKENS: &[&str] = &[
    ",",
    "\"",
    "\n",
    "\r\n",
    "|",
    "\"\"",
    "id",
    "variant",
    "control",
    "visitors",
    "conversions",
    "orders",
    "revenue",
    "revenue_sq",
    "allocation",
    "signals",
    "idea_at",
    "ended_at",
    "true",
    "false",
    "2025-01-01",
    "\u{FEFF}",
    "\0",
    ",,,,,,,,,,",
    "e1,A,search,conversion_rate,concluded,",
];

const TOML_TOKENS: &[&str] = &[
    "[[segment]]\n",
    "[[purpose]]\n",
    "[[signal]]\n",
    "[[rule]]\n",
    "[latency_budget_ms]\n",
    "name = \"x\"\n",
    " = ",
    "nan",
    "inf",
    "-inf",
    "\"",
    "'''",
    "\"\"\"",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\n",
    "#",
    "consent = { personalization = 1.5 }\n",
    "daily_visitors = 18446744073709551615\n",
    "purposes = [\"nope\"]\n",
    "identity = \"logged_in\"\n",
    "effect = \"deny\"\n",
    "expr = \"",
    "when = \"",
    "message = \"{{ ",
    " }}\"",
    "id = \"r\"\n",
    "\\u0000",
    "1979-05-27T07:32:00Z",
];

const CEL_TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "+",
    "-",
    "*",
    "/",
    "%",
    "!",
    "&&",
    "||",
    "==",
    "!=",
    "<",
    ">=",
    "?",
    ":",
    ".",
    ",",
    " in ",
    "proposal.",
    "catalog.segments",
    "catalog.signals",
    "program.",
    "queue.",
    "now",
    ".all(x, ",
    ".exists(x, ",
    ".map(x, ",
    ".filter(x, ",
    ".exists_one(x, ",
    "has(",
    "size(",
    "int(",
    "uint(",
    "double(",
    "string(",
    "bytes(",
    "timestamp(",
    "duration(",
    "dyn(",
    "type(",
    ".matches('",
    ".startsWith(",
    "'",
    "\"",
    "'''",
    "r'",
    "b'",
    "\\",
    "x",
    "1",
    "1.5",
    "1u",
    "-9223372036854775808",
    "9223372036854775807",
    "18446744073709551615u",
    "1e308",
    "null",
    "true",
    "[1,2,3]",
    "{'a': 1}",
    "'a' * 3",
];

const CONFIG_TOKENS: &[&str] = &[
    "[database]\n",
    "[schedule]\n",
    "[proposer]\n",
    "[llm]\n",
    "[analysis]\n",
    "[governance]\n",
    "[server]\n",
    "[notify]\n",
    "url = \"",
    "sqlite:",
    "sqlite://",
    "postgres://",
    ":memory:",
    "?mode=memory",
    "cron = \"",
    "* * * * *",
    "*/0",
    "60",
    "L",
    "#",
    "1-0",
    "0 0 31 2 *",
    "timezone = \"",
    "Mars/Olympus",
    "max_proposals = ",
    "per_moment = ",
    "alpha = ",
    "power = ",
    "listen = \"",
    "[::1]:99999",
    "lease_seconds = ",
    "max_run_seconds = ",
    "policies = \"",
    "webhook_url = \"",
    "prompt_token_budget = ",
    "timeout_seconds = ",
    "\"\n",
    "\n",
    "=",
    "[",
    "]",
    "{",
    "}",
    "'",
    "\\",
];

#[test]
fn fuzz_importers() {
    let sample: Vec<&str> = crate::assets::SAMPLE_HISTORY.lines().take(6).collect();
    let ndjson = sample.join("\n");
    let array = format!("[{}]", sample.join(",\n"));
    let csv = "id,name,moment,primary_kpi,status,signals,allocation,idea_at,started_at,ended_at,decided_at,variant,control,visitors,conversions,orders,revenue,revenue_sq\n\
               e1,\"A, quoted\",search,conversion_rate,concluded,a|b,1|1,2025-01-01,2025-01-02,2025-01-20,2025-01-21,control,true,100,5,5,500,60000\n\
               e1,\"A, quoted\",search,conversion_rate,concluded,a|b,1|1,2025-01-01,2025-01-02,2025-01-20,2025-01-21,t,false,100,7,7,700,80000\n";
    let mut json = Mutator::new(1, JSON_TOKENS);
    let mut table = Mutator::new(2, CSV_TOKENS);
    let mut accepted = 0;
    for case in 0..cases() {
        let (seed, other) = match case % 4 {
            0 => (ndjson.as_str(), array.as_str()),
            1 => (array.as_str(), ndjson.as_str()),
            2 => (csv, ndjson.as_str()),
            // One record: most mutations of it are still one record away from valid.
            _ => (sample[case % sample.len()], ndjson.as_str()),
        };
        let bytes = if case % 4 == 2 {
            table.mutate(seed.as_bytes(), other.as_bytes())
        } else {
            json.mutate(seed.as_bytes(), other.as_bytes())
        };
        for format in [
            None,
            Some(Format::Ndjson),
            Some(Format::JsonArray),
            Some(Format::Csv),
        ] {
            let parsed = import::parse_bytes("fuzz", format, &bytes);
            accepted += usize::from(parsed.problems.is_empty());
            // What is accepted is what validation accepts, and every problem names its source.
            for experiment in &parsed.experiments {
                let value = serde_json::to_value(experiment).expect("serialisable");
                assert!(
                    import::experiment_from_value(value).is_ok(),
                    "accepted an invalid experiment from {:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            assert!(parsed.problems.iter().all(|p| p.source == "fuzz"));
        }
    }
    report("importers", accepted, cases() * 4);
}

#[test]
fn fuzz_model_answers() {
    let draft = include_str!("../tests/fixtures/draft.json");
    let answer = format!("{{\"proposals\": [{draft}, {draft}]}}");
    let fenced = format!("```json\n{answer}\n```");
    let history = import::parse_text(
        "sample-history.ndjson",
        Format::Ndjson,
        crate::assets::SAMPLE_HISTORY,
    );
    let catalog = sample::default_catalog().expect("shipped catalog");
    let refs = crate::validate::References::new(&history.experiments, &catalog);
    let mut mutator = Mutator::new(3, JSON_TOKENS);
    let mut accepted = 0;
    for case in 0..cases() {
        let seed = if case % 2 == 0 { &answer } else { &fenced };
        let text = mutator.mutate_text(seed, draft);
        if let Ok(items) = crate::proposer::openai::response::parse_answer(&text) {
            for item in &items {
                accepted +=
                    usize::from(crate::proposer::openai::response::check_item(item, &refs).is_ok());
                let _ = crate::proposer::openai::response::bounded_copy(item);
            }
        }
    }
    report("model answers (drafts)", accepted, cases());
}

#[test]
fn fuzz_catalog() {
    let seed = sample::DEFAULT_CATALOG;
    let mut mutator = Mutator::new(4, TOML_TOKENS);
    let mut accepted = 0;
    for _ in 0..cases() {
        let text = mutator.mutate_text(seed, seed);
        if let Ok(catalog) = Catalog::parse("catalog.toml", &text) {
            accepted += 1;
            // A catalog that loads is usable: numbers finite, shares in [0, 1].
            assert!(catalog.default_conversion_value.is_finite());
            for segment in &catalog.segments {
                assert!(segment.consent.values().all(|s| (0.0..=1.0).contains(s)));
            }
            let _ = RunInputs::new(&catalog, &sample::sample_program());
        }
    }
    report("catalog", accepted, cases());
}

#[test]
fn fuzz_policies() {
    let catalog = sample::default_catalog().expect("shipped catalog");
    let program = sample::sample_program();
    let run = RunInputs::new(&catalog, &program);
    let draft = sample::sample_draft();
    let enrichment = sample::sample_enrichment_populated();
    let context = PolicyContext::for_run(
        &run,
        &draft,
        &enrichment,
        &QueueCounts::default(),
        chrono::Utc::now(),
    );
    let files: Vec<(String, String)> = sample::DEFAULT_POLICY_FILES
        .iter()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect();
    let all: String = files.iter().map(|(_, text)| text.as_str()).collect();
    let mut toml = Mutator::new(5, TOML_TOKENS);
    let mut cel = Mutator::new(6, CEL_TOKENS);
    let expressions = [
        "proposal.expected_relative_lift > 0.0",
        "catalog.segments.exists(s, s.name == proposal.segment)",
        "proposal.signals.all(s, s in catalog.signals.map(x, x.name))",
        "size(proposal.rationale) > 10 && proposal.evidence.size() > 0",
    ];
    let mut checked = 0;
    let mut accepted = 0;
    for case in 0..cases() {
        let (name, text) = &files[case % files.len()];
        let sources = if case % 2 == 0 {
            vec![(name.clone(), toml.mutate_text(text, &all))]
        } else {
            // A rule whose expression is mutated CEL.
            let expr = cel.mutate_text(expressions[case % expressions.len()], "");
            let expr = toml::Value::String(expr);
            vec![(
                "fuzz.toml".to_string(),
                format!("[[rule]]\nid = \"fuzz\"\neffect = \"deny\"\nexpr = {expr}\nmessage = \"m {{{{ proposal.title }}}}\"\n"),
            )]
        };
        if let Ok(set) = PolicySet::from_sources(sources, None) {
            accepted += 1;
            let _ = set.evaluate(&context);
            // `policy check` evaluates against every sample: now and then.
            if checked < cases() / 10 {
                checked += 1;
                let _ = set.check(&catalog, &program);
            }
        }
    }
    report("policies", accepted, cases());
}

#[test]
fn fuzz_configuration() {
    let seed = include_str!("../examples/hypod.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hypod.toml");
    std::fs::create_dir(dir.path().join("policies")).expect("policies folder");
    let mut file = Mutator::new(7, CONFIG_TOKENS);
    let mut values = Mutator::new(8, CONFIG_TOKENS);
    const VARS: [&str; 10] = [
        "HYPOD_DATABASE__URL",
        "HYPOD_SCHEDULE__CRON",
        "HYPOD_SCHEDULE__TIMEZONE",
        "HYPOD_PROPOSER__MAX_PROPOSALS",
        "HYPOD_ANALYSIS__ALPHA",
        "HYPOD_LLM__MAX_ATTEMPTS",
        "HYPOD_LLM__BASE_URL",
        "HYPOD_SERVER__LISTEN",
        "HYPOD_GOVERNANCE__APPROVALS_REQUIRED",
        "HYPOD_NOW",
    ];
    let mut accepted = 0;
    let env_seeds = [
        "8",
        "0.05",
        "* * * * *",
        "sqlite://h.db",
        "Europe/Berlin",
        "2026-01-01T00:00:00Z",
    ];
    for case in 0..cases() {
        let text = file.mutate(seed.as_bytes(), seed.as_bytes());
        std::fs::write(&path, &text).expect("write");
        let var = VARS[case % VARS.len()];
        let value = values.mutate_text(env_seeds[case % env_seeds.len()], "");
        let env = if case % 3 == 0 {
            Vec::new()
        } else {
            vec![(var.to_string(), value)]
        };
        if let Ok(config) = Config::load_with_env(Some(&path), &env) {
            accepted += 1;
            let _ = config.database_url();
            let _ = config.sqlite_file();
            let _ =
                crate::schedule::Schedule::parse(&config.schedule.cron, &config.schedule.timezone);
        }
    }
    report("configuration", accepted, cases());
}

/// Random well-formed CEL: the mutation target mostly exercises the parser, this one the
/// interpreter (overflows, conversions, regexes, macros over the context's lists, the cost
/// meter), through the same loading and evaluation a run uses.
struct CelGenerator {
    rng: StdRng,
}

impl CelGenerator {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    fn expr(&mut self, depth: usize, bound: &[&str]) -> String {
        const LEAVES: &[&str] = &[
            "0",
            "1",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
            "1u",
            "18446744073709551615u",
            "0.0",
            "-0.5",
            "1e308",
            "'a'",
            "''",
            "'2026-01-01T00:00:00Z'",
            "'1h'",
            "b'x'",
            "true",
            "false",
            "null",
            "[]",
            "{}",
            "now",
            "proposal.title",
            "proposal.expected_relative_lift",
            "proposal.signals",
            "proposal.evidence",
            "proposal.duplicate_of",
            "proposal.risk",
            "proposal.moment",
            "catalog.segment_names",
            "catalog.segments",
            "catalog.latency_budget_ms",
            "catalog.commercial_kpis",
            "program.maturity_stage",
            "program.proven_rate",
            "queue",
        ];
        if depth == 0 || self.rng.random_range(0..4) == 0 {
            if !bound.is_empty() && self.rng.random_range(0..3) == 0 {
                return bound[self.rng.random_range(0..bound.len())].to_string();
            }
            return self.pick(LEAVES).to_string();
        }
        let d = depth - 1;
        match self.rng.random_range(0..9) {
            0 => {
                let op = self.pick(&["!", "-"]);
                format!("{op}({})", self.expr(d, bound))
            }
            1 | 2 => {
                let op = self.pick(&[
                    "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "in",
                ]);
                format!("({} {op} {})", self.expr(d, bound), self.expr(d, bound))
            }
            3 => format!(
                "({} ? {} : {})",
                self.expr(d, bound),
                self.expr(d, bound),
                self.expr(d, bound)
            ),
            4 => {
                let f = self.pick(&[
                    "size",
                    "int",
                    "uint",
                    "double",
                    "string",
                    "bytes",
                    "timestamp",
                    "duration",
                    "dyn",
                    "type",
                ]);
                format!("{f}({})", self.expr(d, bound))
            }
            5 => {
                let m = self.pick(&["matches", "startsWith", "endsWith", "contains"]);
                let arg = if m == "matches" {
                    self.pick(&["'(a+)+$'", "'['", "'.*'", "'^\\\\d{1,1000}$'"])
                        .to_string()
                } else {
                    self.expr(d, bound)
                };
                format!("{}.{m}({arg})", self.expr(d, bound))
            }
            6 => {
                let var = ["x", "y", "z"][bound.len().min(2)];
                let mut inner: Vec<&str> = bound.to_vec();
                inner.push(var);
                let m = self.pick(&["all", "exists", "exists_one", "map", "filter"]);
                format!(
                    "{}.{m}({var}, {})",
                    self.expr(d, bound),
                    self.expr(d, &inner)
                )
            }
            7 => format!("{}[{}]", self.expr(d, bound), self.expr(d, bound)),
            _ => format!("[{}, {}]", self.expr(d, bound), self.expr(d, bound)),
        }
    }
}

#[test]
fn fuzz_cel_evaluation() {
    let catalog = sample::default_catalog().expect("shipped catalog");
    let run = RunInputs::new(&catalog, &sample::sample_program());
    let draft = sample::sample_draft();
    let enrichment = sample::sample_enrichment_populated();
    let mut queue = QueueCounts::default();
    queue.record_queued(&draft);
    let context = PolicyContext::for_run(&run, &draft, &enrichment, &queue, chrono::Utc::now());
    let mut generator = CelGenerator { rng: rng(9) };
    let (mut compiled, mut evaluated) = (0, 0);
    for _ in 0..cases() {
        let depth = generator.rng.random_range(1..6);
        let expr = toml::Value::String(generator.expr(depth, &[]));
        let file = format!(
            "[[rule]]\nid = \"gen\"\neffect = \"deny\"\nexpr = {expr}\nmessage = \"{{{{ {expr_msg} }}}}\"\n",
            expr_msg = "proposal.title"
        );
        if let Ok(set) = PolicySet::from_sources(vec![("gen.toml".to_string(), file)], None) {
            compiled += 1;
            evaluated += usize::from(set.evaluate(&context).is_ok());
        }
    }
    eprintln!(
        "fuzz cel evaluation: {} generated, {compiled} compiled, {evaluated} evaluated to a verdict, the others refused with an error",
        cases()
    );
}
