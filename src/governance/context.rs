//! What a policy rule can see: the five CEL variables `proposal`, `catalog`, `program`, `queue`
//! and `now`, their shape (documented in the README, "The variables a rule can use"), and the queue counts a run keeps
//! up to date while it accepts proposals one after another. This module owns the conversion of
//! hypod's values into CEL values; the policy module only evaluates rules against them.
//!
//! Numbers keep one CEL type per field: whole-number fields (counts, visitors) are `int`,
//! fractional fields (rates, lifts, milliseconds) are `double`, so a rule compares either with
//! any number literal (`queue.queued_this_run < 8`, `proposal.expected_latency_ms <= 25.0`).

use super::catalog::Catalog;
use crate::analysis::health::ProgramHealth;
use crate::domain::ProposalDraft;
use crate::domain::{Enrichment, Proposal, ProposalStatus};
use crate::history::Moment;
use cel::objects::{Key, Map};
use cel::Value;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The names of the variables every rule may use.
pub const VARIABLES: [&str; 5] = ["proposal", "catalog", "program", "queue", "now"];

/// How many proposals occupy the queue, and how many this run has already accepted. A run
/// starts from [`QueueCounts::from_queue`] and calls [`QueueCounts::record_queued`] for every
/// proposal that is not blocked, so the governance-gap rules see proposals accepted earlier in
/// the same run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueCounts {
    /// Open proposals (pending review or approved) before this run.
    pub open_total: usize,
    pub open_by_moment: BTreeMap<String, usize>,
    pub open_by_segment: BTreeMap<String, usize>,
    /// Proposals queued in the 24 hours before `now`, this run included.
    pub queued_last_24h: usize,
    /// Proposals this run has queued so far (not blocked).
    pub queued_this_run: usize,
    pub queued_this_run_by_moment: BTreeMap<String, usize>,
    /// Proposals people rejected in the last 30 days.
    pub rejected_recently: usize,
}

/// How far back `rejected_recently` looks.
pub const RECENT_REJECTION_DAYS: i64 = 30;

impl QueueCounts {
    /// Counts from the queue as it is before a run. `recent` are proposals of any status (the
    /// store's recent window); only their status and timestamps are read.
    pub fn from_queue(proposals: &[Proposal], now: DateTime<Utc>) -> QueueCounts {
        let mut counts = QueueCounts::default();
        for proposal in proposals {
            let status = proposal.status;
            if status.is_open() {
                counts.open_total += 1;
                *counts
                    .open_by_moment
                    .entry(proposal.draft.moment.as_str().to_string())
                    .or_default() += 1;
                *counts
                    .open_by_segment
                    .entry(proposal.draft.segment.clone())
                    .or_default() += 1;
            }
            if status != ProposalStatus::Blocked && now - proposal.created_at <= Duration::hours(24)
            {
                counts.queued_last_24h += 1;
            }
            if status == ProposalStatus::Rejected
                && now - proposal.updated_at <= Duration::days(RECENT_REJECTION_DAYS)
            {
                counts.rejected_recently += 1;
            }
        }
        counts
    }

    /// Moves an open proposal in or out of the open counts: out (`open = false`) while the
    /// draft that would replace it is judged, so that a full cap does not stop a replacement
    /// that leaves the queue as full as it was; back in if the replacement does not happen.
    pub fn set_open(&mut self, draft: &ProposalDraft, open: bool) {
        let step = |n: &mut usize| {
            *n = if open { *n + 1 } else { n.saturating_sub(1) };
        };
        step(&mut self.open_total);
        step(
            self.open_by_moment
                .entry(draft.moment.as_str().to_string())
                .or_default(),
        );
        step(
            self.open_by_segment
                .entry(draft.segment.clone())
                .or_default(),
        );
    }

    /// Counts a proposal this run has just queued (call it for every proposal not blocked).
    pub fn record_queued(&mut self, draft: &ProposalDraft) {
        let moment = draft.moment.as_str().to_string();
        self.queued_this_run += 1;
        self.queued_last_24h += 1;
        *self.queued_this_run_by_moment.entry(moment).or_default() += 1;
    }

    /// The `queue` variable: every moment and every catalog segment has a key (zero when
    /// empty), so `queue.open_by_moment[proposal.moment]` never fails for a lack of proposals.
    pub fn to_json(&self, catalog: &Catalog) -> Json {
        let by_moment = |counts: &BTreeMap<String, usize>| -> BTreeMap<String, usize> {
            let mut all: BTreeMap<String, usize> = Moment::ALL
                .iter()
                .map(|m| (m.as_str().to_string(), 0))
                .collect();
            all.extend(counts.iter().map(|(k, v)| (k.clone(), *v)));
            all
        };
        let mut by_segment: BTreeMap<String, usize> = catalog
            .segments
            .iter()
            .map(|s| (s.name.clone(), 0))
            .collect();
        by_segment.extend(self.open_by_segment.iter().map(|(k, v)| (k.clone(), *v)));
        json!({
            "open_total": self.open_total,
            "open_by_moment": by_moment(&self.open_by_moment),
            "open_by_segment": by_segment,
            "queued_last_24h": self.queued_last_24h,
            "queued_this_run": self.queued_this_run,
            "queued_this_run_by_moment": by_moment(&self.queued_this_run_by_moment),
            "rejected_recently": self.rejected_recently,
        })
    }
}

/// The `catalog` variable: the catalog with segments, signals and purposes as maps by name
/// (`catalog.segments[proposal.segment].identity`), plus the lists of their names.
pub fn catalog_json(catalog: &Catalog) -> Json {
    let by_name = |items: Vec<(String, Json)>| -> serde_json::Map<String, Json> {
        items.into_iter().collect()
    };
    let to_json = |value: Result<Json, serde_json::Error>| value.unwrap_or(Json::Null);
    json!({
        "commercial_kpis": catalog.commercial_kpis,
        "latency_budget_ms": catalog.latency_budget_ms,
        "default_conversion_value": catalog.default_conversion_value,
        "segments": by_name(catalog.segments.iter().map(|s| (s.name.clone(), to_json(serde_json::to_value(s)))).collect()),
        "signals": by_name(catalog.signals.iter().map(|s| (s.name.clone(), to_json(serde_json::to_value(s)))).collect()),
        "purposes": by_name(catalog.purposes.iter().map(|p| (p.name.clone(), to_json(serde_json::to_value(p)))).collect()),
        "segment_names": catalog.segments.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        "signal_names": catalog.signals.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        "purpose_names": catalog.purposes.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        "sensitive_signals": catalog.signals.iter().filter(|s| s.sensitive).map(|s| s.name.as_str()).collect::<Vec<_>>(),
    })
}

/// The `proposal` variable: every draft field, every enrichment field beside them (one flat
/// object: `proposal.primary_kpi`, `proposal.expected_duration_days`, `proposal.duplicate_of`),
/// and two derived from the catalog: `required_purposes` (what the signals need) and
/// `latency_budget_ms` (the budget for the proposal's rendering mode, or null).
pub fn proposal_json(draft: &ProposalDraft, enrichment: &Enrichment, catalog: &Catalog) -> Json {
    let mut object = match serde_json::to_value(draft) {
        Ok(Json::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    if let Ok(Json::Object(extra)) = serde_json::to_value(enrichment) {
        for (key, value) in extra {
            object.entry(key).or_insert(value);
        }
    }
    object.insert(
        "required_purposes".into(),
        json!(catalog.required_purposes(&draft.signals)),
    );
    object.insert(
        "latency_budget_ms".into(),
        json!(catalog.latency_budget_ms.get(draft.rendering.as_str())),
    );
    Json::Object(object)
}

/// The `program` variable: program health as `hypod analyze --json` prints it.
pub fn program_json(program: &ProgramHealth) -> Json {
    serde_json::to_value(program).unwrap_or(Json::Null)
}

/// JSON → CEL, keeping integers `int` and fractions `double` (see the module comment).
pub fn json_to_cel(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(json_to_cel).collect())),
        Json::Object(map) => {
            let entries: HashMap<Key, Value> = map
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), json_to_cel(v)))
                .collect();
            Value::Map(Map {
                map: Arc::new(entries),
            })
        }
    }
}

/// What stays the same for every proposal of a run: the catalog and the program, converted
/// once into a CEL scope that every proposal's scope extends (building the CEL standard
/// environment and converting the catalog per proposal would cost most of the evaluation).
#[derive(Clone)]
pub struct RunInputs {
    pub catalog: Arc<Catalog>,
    pub catalog_json: Arc<Json>,
    pub program_json: Arc<Json>,
    root: Arc<cel::Context<'static, 'static>>,
}

impl std::fmt::Debug for RunInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunInputs")
            .field("catalog_json", &self.catalog_json)
            .field("program_json", &self.program_json)
            .finish_non_exhaustive()
    }
}

impl RunInputs {
    pub fn new(catalog: &Catalog, program: &ProgramHealth) -> RunInputs {
        RunInputs::from_program_json(catalog, program_json(program))
    }

    /// For callers that hold the program as JSON (policy test cases override fields of it).
    pub fn from_program_json(catalog: &Catalog, program_json: Json) -> RunInputs {
        let catalog_json = catalog_json(catalog);
        let mut root = cel::Context::default();
        // The evaluation cost meter every compiled rule calls (see `expression::cost`); the name
        // cannot clash with the standard library's, so this cannot fail.
        let _ = root.add_function(
            super::expression::cost::FUNCTION,
            super::expression::cost::charge,
        );
        root.add_variable_from_value("catalog", json_to_cel(&catalog_json));
        root.add_variable_from_value("program", json_to_cel(&program_json));
        RunInputs {
            catalog: Arc::new(catalog.clone()),
            catalog_json: Arc::new(catalog_json),
            program_json: Arc::new(program_json),
            root: Arc::new(root),
        }
    }
}

/// Everything one proposal's rules are evaluated against.
#[derive(Debug, Clone)]
pub struct PolicyContext {
    /// The typed draft (the consent rules read it).
    pub draft: ProposalDraft,
    pub proposal_json: Json,
    pub queue_json: Json,
    pub now: DateTime<Utc>,
    run: RunInputs,
    variables: [(&'static str, Value); 3],
}

impl PolicyContext {
    /// Builds the context for one proposal from scratch (converts the catalog and program too;
    /// a run evaluating many proposals should use [`PolicyContext::for_run`]).
    pub fn new(
        draft: &ProposalDraft,
        enrichment: &Enrichment,
        catalog: &Catalog,
        program: &ProgramHealth,
        queue: &QueueCounts,
        now: DateTime<Utc>,
    ) -> PolicyContext {
        PolicyContext::for_run(
            &RunInputs::new(catalog, program),
            draft,
            enrichment,
            queue,
            now,
        )
    }

    pub fn for_run(
        run: &RunInputs,
        draft: &ProposalDraft,
        enrichment: &Enrichment,
        queue: &QueueCounts,
        now: DateTime<Utc>,
    ) -> PolicyContext {
        let proposal_json = proposal_json(draft, enrichment, &run.catalog);
        let queue_json = queue.to_json(&run.catalog);
        PolicyContext::from_parts(run, draft.clone(), proposal_json, queue_json, now)
    }

    /// From already-built JSON values (test cases override fields of them).
    pub fn from_parts(
        run: &RunInputs,
        draft: ProposalDraft,
        proposal_json: Json,
        queue_json: Json,
        now: DateTime<Utc>,
    ) -> PolicyContext {
        let variables = [
            ("proposal", json_to_cel(&proposal_json)),
            ("queue", json_to_cel(&queue_json)),
            ("now", Value::Timestamp(now.fixed_offset())),
        ];
        PolicyContext {
            draft,
            proposal_json,
            queue_json,
            now,
            run: run.clone(),
            variables,
        }
    }

    /// A CEL scope holding the five variables (catalog and program from the run's scope).
    pub(crate) fn cel_context(&self) -> cel::Context<'_, 'static> {
        let mut context = self.run.root.new_inner_scope();
        for (name, value) in &self.variables {
            context.add_variable_from_value(*name, value.clone());
        }
        context
    }

    /// The five variables as JSON, as a rule sees them (for `policy eval` and `explain`).
    pub fn to_json(&self) -> Json {
        json!({
            "proposal": self.proposal_json,
            "catalog": *self.run.catalog_json,
            "program": *self.run.program_json,
            "queue": self.queue_json,
            "now": self.now.to_rfc3339(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::sample::{
        default_catalog, sample_draft, sample_enrichment, sample_program,
    };

    #[test]
    fn a_proposal_being_replaced_leaves_the_open_counts_and_can_come_back() {
        let draft = sample_draft();
        let mut counts = QueueCounts::default();
        counts.set_open(&draft, true);
        counts.set_open(&draft, true);
        counts.set_open(&draft, false);
        assert_eq!(counts.open_total, 1);
        assert_eq!(counts.open_by_moment["product_detail"], 1);
        assert_eq!(counts.open_by_segment[&draft.segment], 1);
        counts.set_open(&draft, false);
        counts.set_open(&draft, false);
        assert_eq!(
            (counts.open_total, counts.open_by_moment["product_detail"]),
            (0, 0)
        );
    }

    #[test]
    fn proposal_merges_draft_and_enrichment_with_derived_fields() {
        let catalog = default_catalog().expect("catalog");
        let json = proposal_json(&sample_draft(), &sample_enrichment(), &catalog);
        assert_eq!(json["primary_kpi"], "conversion_rate");
        assert_eq!(json["rendering"], "edge");
        assert_eq!(json["moment"], "product_detail");
        assert_eq!(json["required_visitors_per_arm"], 31234);
        assert_eq!(json["duplicate_of"], Json::Null);
        assert_eq!(json["required_purposes"], json!(["personalization"]));
        assert_eq!(json["latency_budget_ms"], json!(25.0));
    }

    #[test]
    fn queue_has_a_key_for_every_moment_and_segment() {
        let catalog = default_catalog().expect("catalog");
        let json = QueueCounts::default().to_json(&catalog);
        for moment in Moment::ALL {
            assert_eq!(json["open_by_moment"][moment.as_str()], 0);
            assert_eq!(json["queued_this_run_by_moment"][moment.as_str()], 0);
        }
        for segment in &catalog.segments {
            assert_eq!(json["open_by_segment"][segment.name.as_str()], 0);
        }
    }

    #[test]
    fn record_queued_counts_per_run_and_moment() {
        let mut counts = QueueCounts::default();
        counts.record_queued(&sample_draft());
        counts.record_queued(&sample_draft());
        assert_eq!(counts.queued_this_run, 2);
        assert_eq!(counts.queued_this_run_by_moment["product_detail"], 2);
        assert_eq!(counts.queued_last_24h, 2);
    }

    #[test]
    fn run_inputs_and_contexts_can_cross_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RunInputs>();
        assert_send_sync::<PolicyContext>();
    }

    #[test]
    fn numbers_keep_int_and_double_apart() {
        assert_eq!(json_to_cel(&json!(3)), Value::Int(3));
        assert_eq!(json_to_cel(&json!(3.0)), Value::Float(3.0));
        let context = PolicyContext::new(
            &sample_draft(),
            &sample_enrichment(),
            &default_catalog().expect("catalog"),
            &sample_program(),
            &QueueCounts::default(),
            Utc::now(),
        );
        assert_eq!(context.to_json()["program"]["maturity_stage"], 3);
    }
}
