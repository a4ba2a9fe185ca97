//! The experiment model: validated types that the rest of hypod can trust.
//!
//! Everything here is built by [`crate::history::import`] from untrusted files, so the types
//! carry the invariants that import checks (at least two variants, exactly one control,
//! visitors ≥ conversions, bounded text), or, for a summary-only record, a reported result that
//! makes sense (a [`Summary`]) and visitors without sums.

use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The commerce moments of the playbook, plus `other`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Moment {
    Search,
    ProductDetail,
    CartCheckout,
    PostPurchase,
    ReEngagement,
    Other,
}

impl Moment {
    pub const ALL: [Moment; 6] = [
        Moment::Search,
        Moment::ProductDetail,
        Moment::CartCheckout,
        Moment::PostPurchase,
        Moment::ReEngagement,
        Moment::Other,
    ];

    /// The five moments the playbook names (coverage ignores `other`).
    pub const NAMED: [Moment; 5] = [
        Moment::Search,
        Moment::ProductDetail,
        Moment::CartCheckout,
        Moment::PostPurchase,
        Moment::ReEngagement,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Moment::Search => "search",
            Moment::ProductDetail => "product_detail",
            Moment::CartCheckout => "cart_checkout",
            Moment::PostPurchase => "post_purchase",
            Moment::ReEngagement => "re_engagement",
            Moment::Other => "other",
        }
    }

    pub fn parse(text: &str) -> Option<Moment> {
        Moment::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentStatus {
    Running,
    Concluded,
    Stopped,
}

impl ExperimentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentStatus::Running => "running",
            ExperimentStatus::Concluded => "concluded",
            ExperimentStatus::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Ship,
    Rollback,
    Iterate,
    None,
}

/// The KPIs the playbook accepts as commercial outcomes.
pub const COMMERCIAL_KPIS: [&str; 4] = [
    "conversion_rate",
    "revenue_per_visitor",
    "average_order_value",
    "repeat_purchase_rate",
];

pub fn is_commercial_kpi(kpi: &str) -> bool {
    COMMERCIAL_KPIS.contains(&kpi)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    pub control: bool,
    pub visitors: u64,
    /// Absent only in a summary-only record (see [`Summary`]), which carries no sums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orders: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue_sq: Option<f64>,
}

/// One experiment of the program's history, as imported (docs/import-format.md documents the import format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub id: String,
    /// The experiment's id in the tool it came from (GrowthBook's `exp_…`), when `id` is a
    /// different key (GrowthBook's tracking key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypothesis: Option<String>,
    pub moment: Moment,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lever: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendering: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub primary_kpi: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<String>,
    pub status: ExperimentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idea_at: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms_p75_delta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributed_revenue: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_proposal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    pub variants: Vec<Variant>,
    /// The result as another tool reported it, instead of per-arm sums (a summary-only record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

/// The result of a summary-only record as another tool reported it: the relative lift of the
/// treatment on `metric` with a 95 % interval and/or a p-value, or a relative effect with its
/// standard error. hypod has no per-arm sums for such a record and never re-analyses it
/// (import checks which fields may be given together; see docs/import-format.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_lift: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_low: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_high: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_error: Option<f64>,
}

/// z for a two-sided 95 % interval (scipy.stats.norm.isf(0.025)).
pub const Z_95: f64 = 1.959963984540054;

impl Summary {
    /// The reported relative effect (`relative_lift`, or `effect`).
    pub fn lift(&self) -> Option<f64> {
        self.relative_lift.or(self.effect)
    }

    /// The standard error of the effect: as reported, or from the symmetric 95 % interval as
    /// `(ci_high − ci_low)/(2·1.959963984540054)`; none with only a p-value.
    pub fn standard_error(&self) -> Option<f64> {
        match (self.standard_error, self.ci_low, self.ci_high) {
            (Some(se), _, _) => Some(se),
            (None, Some(low), Some(high)) => Some((high - low) / (2.0 * Z_95)),
            _ => None,
        }
    }
}

impl Experiment {
    pub fn control(&self) -> &Variant {
        // Import guarantees exactly one control.
        self.variants
            .iter()
            .find(|v| v.control)
            .unwrap_or(&self.variants[0])
    }

    pub fn treatments(&self) -> impl Iterator<Item = (usize, &Variant)> {
        self.variants.iter().enumerate().filter(|(_, v)| !v.control)
    }

    /// Allocation weight of variant `index` (equal weights when not given).
    pub fn weight(&self, index: usize) -> f64 {
        match &self.allocation {
            Some(weights) if weights.len() == self.variants.len() => weights[index],
            _ => 1.0,
        }
    }

    pub fn total_visitors(&self) -> u64 {
        self.variants.iter().map(|v| v.visitors).sum()
    }

    /// A record that carries its result as reported by another tool instead of per-arm sums.
    pub fn is_summary_only(&self) -> bool {
        self.summary.is_some()
    }

    pub fn is_running(&self) -> bool {
        self.status == ExperimentStatus::Running
    }

    pub fn has_commercial_kpi(&self) -> bool {
        is_commercial_kpi(&self.primary_kpi)
    }

    /// The key hypod uses to say two tests test the same thing.
    pub fn test_key(&self) -> TestKey {
        TestKey::new(
            self.moment,
            self.lever.as_deref().unwrap_or(""),
            self.segment.as_deref().unwrap_or(""),
        )
    }

    /// The date a decision (or the end of the test) is dated to, for quarterly figures.
    pub fn reference_date(&self) -> Option<NaiveDate> {
        self.decided_at
            .or(self.ended_at)
            .or(self.started_at)
            .or(self.idea_at)
    }
}

/// What a test tests: a lever, for a segment, at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TestKey {
    pub moment: Moment,
    pub lever: String,
    pub segment: String,
}

impl TestKey {
    pub fn new(moment: Moment, lever: &str, segment: &str) -> TestKey {
        TestKey {
            moment,
            lever: lever.trim().to_ascii_lowercase(),
            segment: segment.trim().to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for TestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} / {} / {}", self.moment, self.lever, self.segment)
    }
}
