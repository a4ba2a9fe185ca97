//! The policy set in plain words for the prompt (`[deny] commercial-kpi: Engagement is not a
//! KPI`): governance enforces the rules itself; the model reads them so that it can avoid a
//! denial rather than be repaired after one.

use super::lines::{bound_text, REASON_CHARS};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A policy rule in plain words, for the prompt (`[deny] commercial-kpi: Engagement is not a KPI`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySummary {
    pub id: String,
    /// `deny`, `escalate` or `warn`.
    pub effect: String,
    pub message: String,
}

impl PolicySummary {
    pub(super) fn line(&self) -> String {
        format!(
            "[{}] {}: {}",
            bound_text(&self.effect, 16),
            bound_text(&self.id, 64),
            bound_text(&self.message, REASON_CHARS)
        )
    }
}

/// Reads `id`, `effect` and `description` (else `message`) of every `[[rule]]` in `DIR/*.toml`
/// (except `catalog.toml`), for the prompt only: governance compiles and enforces the rules
/// itself, so a file this cannot read is skipped here, not reported. (The binary takes the
/// summaries from the loaded policy set instead, which also covers the built-in defaults.)
pub fn policy_summaries_from_dir(dir: &Path) -> Vec<PolicySummary> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && p.file_name().is_some_and(|n| n != "catalog.toml")
        })
        .collect();
    files.sort();
    let mut summaries = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(value) = text.parse::<toml::Table>() else {
            continue;
        };
        let Some(rules) = value.get("rule").and_then(toml::Value::as_array) else {
            continue;
        };
        for rule in rules {
            let field = |key: &str| {
                rule.get(key)
                    .and_then(toml::Value::as_str)
                    .map(str::to_string)
            };
            let text = field("description")
                .filter(|d| !d.trim().is_empty())
                .or_else(|| field("message"));
            if let (Some(id), Some(message)) = (field("id"), text) {
                summaries.push(PolicySummary {
                    id,
                    effect: field("effect").unwrap_or_else(|| "deny".into()),
                    message,
                });
            }
        }
    }
    summaries
}
