//! The catalog governance leads edit (`policies/catalog.toml`): segments with their traffic and
//! consent coverage, signals with the purposes and identity they need, consent purposes,
//! commercial KPIs and latency budgets. Loaded strictly: an unknown key is an error naming it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    Anonymous,
    LoggedIn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IdentityRequirement {
    #[default]
    Any,
    LoggedIn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub daily_visitors: u64,
    pub identity: Identity,
    #[serde(default = "global")]
    pub region: String,
    /// Share of the segment's visitors who granted each purpose (0..=1).
    #[serde(default)]
    pub consent: BTreeMap<String, f64>,
}

fn global() -> String {
    "global".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Consent purposes a visitor must have granted for this signal to be used.
    #[serde(default)]
    pub purposes: Vec<String>,
    #[serde(default)]
    pub identity: IdentityRequirement,
    /// Special categories (GDPR Art. 9) and sensitive personal information: never usable.
    #[serde(default)]
    pub sensitive: bool,
    /// Regions where this signal may not be used (e.g. `eu`).
    #[serde(default)]
    pub restricted_regions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purpose {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub commercial_kpis: Vec<String>,
    /// Latency budget per rendering mode (edge, server, client), in ms at p75.
    pub latency_budget_ms: BTreeMap<String, f64>,
    /// Value of one conversion, in the program's currency, when history has no revenue.
    #[serde(default = "default_conversion_value")]
    pub default_conversion_value: f64,
    #[serde(default, rename = "segment")]
    pub segments: Vec<Segment>,
    #[serde(default, rename = "signal")]
    pub signals: Vec<Signal>,
    #[serde(default, rename = "purpose")]
    pub purposes: Vec<Purpose>,
}

fn default_conversion_value() -> f64 {
    80.0
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: cannot read the catalog: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Catalog {
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Catalog::parse(&path.display().to_string(), &text)
    }

    pub fn parse(name: &str, text: &str) -> Result<Catalog, CatalogError> {
        let invalid = |message: String| CatalogError::Invalid {
            path: name.to_string(),
            message,
        };
        let catalog: Catalog = toml::from_str(text).map_err(|err| invalid(err.to_string()))?;
        catalog.check().map_err(invalid)?;
        Ok(catalog)
    }

    fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for segment in &self.segments {
            if !seen.insert(("segment", segment.name.as_str())) {
                return Err(format!("segment {:?} is defined twice", segment.name));
            }
            for (purpose, share) in &segment.consent {
                if !(0.0..=1.0).contains(share) {
                    return Err(format!(
                        "segment {:?}: consent.{purpose} = {share} is not a share between 0 and 1",
                        segment.name
                    ));
                }
                if self.purpose(purpose).is_none() {
                    return Err(format!(
                        "segment {:?}: consent purpose {purpose:?} is not a [[purpose]]",
                        segment.name
                    ));
                }
            }
        }
        for signal in &self.signals {
            if !seen.insert(("signal", signal.name.as_str())) {
                return Err(format!("signal {:?} is defined twice", signal.name));
            }
            for purpose in &signal.purposes {
                if self.purpose(purpose).is_none() {
                    return Err(format!(
                        "signal {:?}: purpose {purpose:?} is not a [[purpose]]",
                        signal.name
                    ));
                }
            }
        }
        for rendering in ["edge", "server", "client"] {
            if !self.latency_budget_ms.contains_key(rendering) {
                return Err(format!("latency_budget_ms.{rendering} is missing"));
            }
        }
        Ok(())
    }

    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    pub fn signal(&self, name: &str) -> Option<&Signal> {
        self.signals.iter().find(|s| s.name == name)
    }

    pub fn purpose(&self, name: &str) -> Option<&Purpose> {
        self.purposes.iter().find(|p| p.name == name)
    }

    pub fn is_commercial(&self, kpi: &str) -> bool {
        self.commercial_kpis.iter().any(|k| k == kpi)
    }

    /// Purposes the given signals require, deduplicated and sorted.
    pub fn required_purposes<'a>(&'a self, signals: &'a [String]) -> Vec<&'a str> {
        let mut purposes: Vec<&str> = signals
            .iter()
            .filter_map(|name| self.signal(name))
            .flat_map(|s| s.purposes.iter().map(String::as_str))
            .collect();
        purposes.sort_unstable();
        purposes.dedup();
        purposes
    }

    /// Share of a segment's visitors who granted every purpose the signals need: the lowest
    /// coverage among those purposes (a conservative bound on the consented traffic).
    pub fn consented_share(&self, segment: &Segment, signals: &[String]) -> f64 {
        self.required_purposes(signals)
            .iter()
            .map(|p| segment.consent.get(*p).copied().unwrap_or(0.0))
            .fold(1.0, f64::min)
    }
}
