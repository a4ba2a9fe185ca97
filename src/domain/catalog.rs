//! The catalog governance leads edit (`policies/catalog.toml`): segments with their traffic and
//! consent coverage, signals with the purposes and identity they need, consent purposes,
//! commercial KPIs and latency budgets, and the commerce moments where each segment exists.
//! Loaded strictly: an unknown key is an error naming it.

use super::experiment::Moment;
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
    /// The commerce moments where the segment exists (`lapsed_90d` only at `re_engagement`: a
    /// customer who has just bought is no longer lapsed). Absent: every moment. Names are
    /// checked when the catalog is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moments: Option<Vec<String>>,
}

impl Segment {
    /// Whether the segment exists at `moment` (every segment exists everywhere unless the
    /// catalog lists its moments).
    pub fn exists_at(&self, moment: Moment) -> bool {
        self.moments
            .as_ref()
            .is_none_or(|moments| moments.iter().any(|m| m == moment.as_str()))
    }
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

/// Largest accepted daily visitor count of a segment (ten billion: more than any site).
pub const MAX_DAILY_VISITORS: u64 = 10_000_000_000;
/// Largest accepted latency budget, in ms (a minute).
pub const MAX_LATENCY_BUDGET_MS: f64 = 60_000.0;
/// Largest accepted value of one conversion.
pub const MAX_CONVERSION_VALUE: f64 = 1.0e9;
/// The rendering modes a latency budget can be given for.
pub const RENDERINGS: [&str; 3] = ["edge", "server", "client"];

/// One step of a key's path in the catalog file, to find its line.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// One problem of the catalog: where (a key path) and what.
#[derive(Debug)]
struct CatalogProblem {
    path: Vec<Step>,
    message: String,
}

fn key(name: &str) -> Step {
    Step::Key(name.to_string())
}

fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{}]", i + 1)),
        }
    }
    out
}

/// The line of the deepest key of `path` that the file has (1-based).
fn line_of(text: &str, path: &[Step]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let document = DeTable::parse(text).ok()?;
    let mut span = document.span();
    let mut current: Option<&DeValue<'_>> = None;
    let mut table: Option<&DeTable<'_>> = Some(document.get_ref());
    for step in path {
        let next = match (step, table, current) {
            (Step::Key(k), Some(t), _) => t
                .iter()
                .find(|(name, _)| {
                    let name: &str = name.get_ref();
                    name == k.as_str()
                })
                .map(|(name, value)| {
                    span = name.span();
                    value
                }),
            (Step::Index(i), _, Some(DeValue::Array(items))) => {
                items.as_ref().get(*i).inspect(|v| span = v.span())
            }
            _ => None,
        };
        let Some(next) = next else { break };
        current = Some(next.get_ref());
        table = match next.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    Some(text[..span.start.min(text.len())].matches('\n').count() + 1)
}

impl Catalog {
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Catalog::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates the catalog as a whole: every problem is reported, each with its
    /// line and key (`FILE:LINE: key `segment[2].consent.analytics`: ...`).
    pub fn parse(name: &str, text: &str) -> Result<Catalog, CatalogError> {
        let catalog: Catalog = toml::from_str(text).map_err(|err| CatalogError::Invalid {
            path: name.to_string(),
            message: err.to_string().trim_end().to_string(),
        })?;
        let problems = catalog.problems();
        if problems.is_empty() {
            return Ok(catalog);
        }
        let lines: Vec<String> = problems
            .iter()
            .map(|p| {
                let at = match line_of(text, &p.path) {
                    Some(line) => format!("{name}:{line}"),
                    None => name.to_string(),
                };
                format!("{at}: key `{}`: {}", render(&p.path), p.message)
            })
            .collect();
        let (first, rest) = lines.split_at(1);
        let mut message = first[0].clone();
        // The first problem's location is the error's; the others follow, one per line.
        if let Some(colon) = message.find(": key `") {
            message = message[colon + 2..].to_string();
        }
        for more in rest {
            message.push_str("\n  ");
            message.push_str(more);
        }
        let path = match line_of(text, &problems[0].path) {
            Some(line) => format!("{name}:{line}"),
            None => name.to_string(),
        };
        Err(CatalogError::Invalid { path, message })
    }

    /// Every problem of the catalog: numbers that are not finite, negative or absurd, shares
    /// outside [0, 1], names defined twice, references to purposes that do not exist.
    fn problems(&self) -> Vec<CatalogProblem> {
        let mut problems = Vec::new();
        let mut problem = |path: Vec<Step>, message: String| {
            problems.push(CatalogProblem { path, message });
        };
        if self.commercial_kpis.is_empty() {
            problem(
                vec![key("commercial_kpis")],
                "is empty: proposals need at least one commercial KPI".into(),
            );
        }
        for (i, kpi) in self.commercial_kpis.iter().enumerate() {
            if kpi.trim().is_empty() {
                problem(
                    vec![key("commercial_kpis"), Step::Index(i)],
                    "is empty".into(),
                );
            } else if self.commercial_kpis[..i].contains(kpi) {
                problem(
                    vec![key("commercial_kpis"), Step::Index(i)],
                    format!("{kpi:?} is listed twice"),
                );
            }
        }
        for (rendering, budget) in &self.latency_budget_ms {
            let path = vec![key("latency_budget_ms"), key(rendering)];
            if !RENDERINGS.contains(&rendering.as_str()) {
                problem(
                    path,
                    format!(
                        "{rendering:?} is not a rendering mode; they are {}",
                        RENDERINGS.join(", ")
                    ),
                );
            } else if !(0.0..=MAX_LATENCY_BUDGET_MS).contains(budget) {
                problem(
                    path,
                    format!(
                        "{budget} is not a latency budget: give milliseconds between 0 and {MAX_LATENCY_BUDGET_MS}"
                    ),
                );
            }
        }
        for rendering in RENDERINGS {
            if !self.latency_budget_ms.contains_key(rendering) {
                problem(
                    vec![key("latency_budget_ms"), key(rendering)],
                    "is missing: every rendering mode needs a budget".into(),
                );
            }
        }
        let value = self.default_conversion_value;
        if !(0.0..=MAX_CONVERSION_VALUE).contains(&value) {
            problem(
                vec![key("default_conversion_value")],
                format!(
                    "{value} is not a value: give a number between 0 and {MAX_CONVERSION_VALUE}"
                ),
            );
        }
        for (i, purpose) in self.purposes.iter().enumerate() {
            let path = vec![key("purpose"), Step::Index(i), key("name")];
            if purpose.name.trim().is_empty() {
                problem(path, "is empty".into());
            } else if let Some(first) = self.purposes[..i]
                .iter()
                .position(|p| p.name == purpose.name)
            {
                problem(
                    path,
                    format!(
                        "purpose {:?} is defined twice (first as purpose {}); names must be unique",
                        purpose.name,
                        first + 1
                    ),
                );
            }
        }
        for (i, segment) in self.segments.iter().enumerate() {
            let at = |rest: &[Step]| {
                let mut path = vec![key("segment"), Step::Index(i)];
                path.extend_from_slice(rest);
                path
            };
            if segment.name.trim().is_empty() {
                problem(at(&[key("name")]), "is empty".into());
            } else if let Some(first) = self.segments[..i]
                .iter()
                .position(|s| s.name == segment.name)
            {
                problem(
                    at(&[key("name")]),
                    format!(
                        "segment {:?} is defined twice (first as segment {}); names must be unique",
                        segment.name,
                        first + 1
                    ),
                );
            }
            if segment.daily_visitors > MAX_DAILY_VISITORS {
                problem(
                    at(&[key("daily_visitors")]),
                    format!(
                        "{} is not a daily visitor count: at most {MAX_DAILY_VISITORS}",
                        segment.daily_visitors
                    ),
                );
            }
            if segment.region.trim().is_empty() {
                problem(at(&[key("region")]), "is empty (use \"global\")".into());
            }
            if let Some(moments) = &segment.moments {
                if moments.is_empty() {
                    problem(
                        at(&[key("moments")]),
                        "is empty: a segment exists at one moment at least (leave `moments` out for every moment)".into(),
                    );
                }
                for (j, moment) in moments.iter().enumerate() {
                    let path = at(&[key("moments"), Step::Index(j)]);
                    if Moment::parse(moment).is_none() {
                        let names: Vec<&str> = Moment::ALL.iter().map(|m| m.as_str()).collect();
                        problem(
                            path,
                            format!(
                                "{moment:?} is not a commerce moment; they are {}",
                                names.join(", ")
                            ),
                        );
                    } else if moments[..j].contains(moment) {
                        problem(path, format!("{moment:?} is listed twice"));
                    }
                }
            }
            for (purpose, share) in &segment.consent {
                let path = at(&[key("consent"), key(purpose)]);
                if !(0.0..=1.0).contains(share) {
                    problem(path, format!("{share} is not a share between 0 and 1"));
                } else if self.purpose(purpose).is_none() {
                    problem(
                        path,
                        format!("consent purpose {purpose:?} is not a [[purpose]]"),
                    );
                }
            }
        }
        for (i, signal) in self.signals.iter().enumerate() {
            let at = |rest: &[Step]| {
                let mut path = vec![key("signal"), Step::Index(i)];
                path.extend_from_slice(rest);
                path
            };
            if signal.name.trim().is_empty() {
                problem(at(&[key("name")]), "is empty".into());
            } else if let Some(first) = self.signals[..i].iter().position(|s| s.name == signal.name)
            {
                problem(
                    at(&[key("name")]),
                    format!(
                        "signal {:?} is defined twice (first as signal {}); names must be unique",
                        signal.name,
                        first + 1
                    ),
                );
            }
            for (j, purpose) in signal.purposes.iter().enumerate() {
                if self.purpose(purpose).is_none() {
                    problem(
                        at(&[key("purposes"), Step::Index(j)]),
                        format!("purpose {purpose:?} is not a [[purpose]]"),
                    );
                }
            }
            for (j, region) in signal.restricted_regions.iter().enumerate() {
                if region.trim().is_empty() {
                    problem(
                        at(&[key("restricted_regions"), Step::Index(j)]),
                        "is empty".into(),
                    );
                }
            }
        }
        problems
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
