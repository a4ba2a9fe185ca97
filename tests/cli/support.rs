//! Typed helpers for the command-line tests: a fresh hypod folder per test, a fixed clock, and
//! the normalisation that makes `--json` output comparable across runs (UUIDv7 ids, wall-clock
//! timestamps, durations).
#![allow(dead_code)]

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/sample-history.ndjson"
);

/// The instant every command of a snapshot test believes it is (`HYPOD_NOW`).
pub const FIXED_NOW: &str = "2026-10-15T09:00:00Z";

/// Every status a proposal can have, as the command line and the API write them.
pub const STATUSES: [&str; 6] = [
    "pending_review",
    "approved",
    "rejected",
    "blocked",
    "expired",
    "superseded",
];

/// A temporary folder with a hypod.toml (database inside it, the repository's policies).
pub struct Hypod {
    pub dir: tempfile::TempDir,
    pub now: Option<&'static str>,
}

/// What one command did.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn of(output: Output) -> Ran {
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }

    /// One JSON value a line (ndjson).
    pub fn json_lines(&self) -> Value {
        Value::Array(
            self.stdout
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect(),
        )
    }
}

impl Hypod {
    pub fn new() -> Hypod {
        Hypod::with_database("sqlite://hypod.db")
    }

    /// A folder whose hypod.toml names `url` as its database.
    pub fn with_database(url: &str) -> Hypod {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "[database]\nurl = \"{url}\"\n[governance]\npolicies = \"{}\"\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies")
        );
        std::fs::write(dir.path().join("hypod.toml"), config).expect("write config");
        Hypod { dir, now: None }
    }

    /// Every command runs at [`FIXED_NOW`].
    pub fn at_fixed_time() -> Hypod {
        Hypod {
            now: Some(FIXED_NOW),
            ..Hypod::new()
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        let output: Output = self.command(args).output().expect("run hypod");
        Ran::of(output)
    }

    /// The command [`Hypod::run`] runs, to start it in the background.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hypod"));
        command
            .args(args)
            .current_dir(self.path())
            .env("HYPOD_CONFIG", self.path().join("hypod.toml"))
            .env("HYPOD_AUDIT_KEY", crate::review_audit::TEST_AUDIT_KEY)
            .env_remove("OPENAI_API_KEY")
            .env_remove("HYPOD_NOW");
        if let Some(now) = self.now {
            command.env("HYPOD_NOW", now);
        }
        command
    }

    /// Runs a command that must succeed.
    pub fn ok(&self, args: &[&str]) -> Ran {
        let ran = self.run(args);
        assert_eq!(ran.code, Some(0), "hypod {args:?} failed: {}", ran.stderr);
        ran
    }

    pub fn import_sample(&self) {
        self.ok(&["import", SAMPLE]);
    }
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Replaces what differs from run to run: UUIDs become `<id-N>` (the same id the same N across
/// every snapshot normalised by one `Normaliser`), RFC 3339 timestamps `<timestamp>`, and the
/// values of duration keys `<duration>`.
#[derive(Default)]
pub struct Normaliser {
    ids: HashMap<String, usize>,
}

const DURATION_KEYS: [&str; 2] = ["seconds", "latency_ms"];

fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[..4].iter().all(u8::is_ascii_digit)
}

impl Normaliser {
    fn id(&mut self, id: &str) -> String {
        let next = self.ids.len() + 1;
        format!("<id-{}>", self.ids.entry(id.to_string()).or_insert(next))
    }

    fn text(&mut self, text: &str) -> String {
        if is_timestamp(text) {
            return "<timestamp>".into();
        }
        // The checkout's location is not part of the output a user relies on.
        let text = &text.replace(env!("CARGO_MANIFEST_DIR"), "<repo>");
        let bytes = text.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < bytes.len() {
            if i + 36 <= bytes.len() && text.is_char_boundary(i + 36) && is_uuid(&bytes[i..i + 36])
            {
                out.push_str(&self.id(&text[i..i + 36]));
                i += 36;
            } else {
                let c = text[i..].chars().next().expect("a char");
                out.push(c);
                i += c.len_utf8();
            }
        }
        out
    }

    pub fn value(&mut self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = if DURATION_KEYS.contains(&k.as_str()) && v.is_number() {
                            Value::String("<duration>".into())
                        } else if k == "audit_head" && v.is_object() {
                            // Entries hash their wall-clock times: the head's hash differs
                            // every run; its sequence number does not.
                            let mut head = v.clone();
                            head["hash"] = Value::String("<hash>".into());
                            head
                        } else {
                            self.value(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Compares `value`, normalised, with `tests/snapshots/NAME.json`; `UPDATE_SNAPSHOTS=1`
    /// writes the file instead.
    pub fn check(&mut self, name: &str, value: &Value) {
        let normal = self.value(value);
        let text = serde_json::to_string_pretty(&normal).expect("serialise") + "\n";
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots")
            .join(format!("{name}.json"));
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &text).expect("write snapshot");
            return;
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_SNAPSHOTS=1 to write it)",
                path.display()
            )
        });
        if stored != text {
            let line = stored
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| stored.lines().count().min(text.lines().count()));
            panic!(
                "{name}: --json output differs from {} at line {}:\n  stored: {}\n  now:    {}",
                path.display(),
                line + 1,
                stored.lines().nth(line).unwrap_or("<end>"),
                text.lines().nth(line).unwrap_or("<end>")
            );
        }
    }
}
