//! Helpers shared by the integration tests: a fresh hypod folder per test and a way to run
//! the real binary in it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/sample-history.ndjson"
);

/// A temporary folder with a hypod.toml whose database lives inside it.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace::with_config("")
    }

    /// `extra` is appended to a minimal hypod.toml.
    pub fn with_config(extra: &str) -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "[database]\nurl = \"sqlite://hypod.db\"\n[governance]\npolicies = \"{}\"\n{extra}",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies")
        );
        std::fs::write(dir.path().join("hypod.toml"), config).expect("write config");
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    pub fn hypod(&self, args: &[&str]) -> Output {
        hypod_in(self.path(), &self.path().join("hypod.toml"), args)
    }

    /// Runs hypod and parses its stdout as JSON, failing the test with stderr if it fails.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let output = self.hypod(args);
        assert!(
            output.status.success(),
            "hypod {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "hypod {args:?} did not print JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    pub fn import_sample(&self) {
        let output = self.hypod(&["import", SAMPLE]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

pub fn hypod_in(cwd: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hypod"))
        .args(args)
        .current_dir(cwd)
        .env("HYPOD_CONFIG", config)
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("run hypod")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The sample history's experiments, by id.
pub fn sample_experiments() -> Vec<serde_json::Value> {
    std::fs::read_to_string(SAMPLE)
        .expect("sample history")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("sample line"))
        .collect()
}
