//! The CSV importer: one row per variant, the experiment's columns repeated on each of its
//! rows. This module owns the columns, the header checks (unknown, twice, missing), converting
//! a cell to the JSON value its column has in NDJSON, and assembling an experiment from its rows
//! (a variant twice or a row that differs from the first is a problem naming the line).

use super::validate::{experiment_from_value, FieldError};
use super::{ImportReport, Location, Problem, MAX_RECORD_BYTES};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::BufRead;

/// The columns of a variant (one per row).
const VARIANT_COLUMNS: [&str; 7] = [
    "variant",
    "control",
    "visitors",
    "conversions",
    "orders",
    "revenue",
    "revenue_sq",
];
/// The columns of a summary-only record's reported result (repeated on each of its rows), each
/// the field of `summary` after the `summary_` prefix.
const SUMMARY_COLUMNS: [&str; 7] = [
    "summary_metric",
    "summary_relative_lift",
    "summary_ci_low",
    "summary_ci_high",
    "summary_p_value",
    "summary_effect",
    "summary_standard_error",
];
/// The columns of the experiment (repeated on each of its rows).
const EXPERIMENT_COLUMNS: [&str; 24] = [
    "id",
    "external_id",
    "name",
    "hypothesis",
    "moment",
    "lever",
    "segment",
    "channel",
    "rendering",
    "region",
    "primary_kpi",
    "signals",
    "status",
    "idea_at",
    "started_at",
    "ended_at",
    "decided_at",
    "decision",
    "owner",
    "latency_ms_p75_delta",
    "allocation",
    "attributed_revenue",
    "source_proposal",
    "notes",
];

/// One experiment being assembled from its CSV rows.
struct CsvExperiment {
    first_line: u64,
    fields: Map<String, Value>,
    variants: Vec<Value>,
    /// Variant names with the line of their row.
    variant_lines: Vec<(String, u64)>,
    problem: Option<(Option<String>, String, u64)>,
}

impl CsvExperiment {
    /// Adds one row (one variant) of this experiment; the first mistake (a variant twice, an
    /// experiment column that differs from the first row's) is kept with its line.
    fn add_row(
        &mut self,
        id: &str,
        line: u64,
        fields: &Map<String, Value>,
        variant: Map<String, Value>,
    ) {
        let variant_name = variant
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if self.problem.is_none() {
            if let Some((_, first)) = self
                .variant_lines
                .iter()
                .find(|(name, _)| *name == variant_name)
            {
                self.problem = Some((
                    Some("variant".into()),
                    format!(
                        "duplicate id {id:?}: line {first} already holds its variant {variant_name:?}; an experiment may appear only once in a file"
                    ),
                    line,
                ));
            }
        }
        self.variant_lines.push((variant_name, line));
        if self.problem.is_none() && self.fields != *fields {
            let differing = EXPERIMENT_COLUMNS
                .iter()
                .find(|c| self.fields.get(**c) != fields.get(**c))
                .map(|c| c.to_string())
                .or_else(|| {
                    let (first, here) = (self.fields.get("summary"), fields.get("summary"));
                    SUMMARY_COLUMNS
                        .iter()
                        .find(|c| {
                            let key = &c["summary_".len()..];
                            first.and_then(|s| s.get(key)) != here.and_then(|s| s.get(key))
                        })
                        .map(|c| c.to_string())
                });
            self.problem = Some((
                differing,
                format!(
                    "differs from the experiment's first row (line {}): the experiment's columns must repeat on each of its rows",
                    self.first_line
                ),
                line,
            ));
        }
        self.variants.push(Value::Object(variant));
    }
}

/// The experiments of one CSV file, in the order their first rows appear.
#[derive(Default)]
struct CsvExperiments {
    order: Vec<String>,
    by_id: HashMap<String, CsvExperiment>,
}

impl CsvExperiments {
    fn add_row(
        &mut self,
        id: String,
        line: u64,
        fields: Map<String, Value>,
        variant: Map<String, Value>,
    ) {
        let order = &mut self.order;
        let entry = self.by_id.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            CsvExperiment {
                first_line: line,
                fields: fields.clone(),
                variants: Vec::new(),
                variant_lines: Vec::new(),
                problem: None,
            }
        });
        entry.add_row(&id, line, &fields, variant);
    }

    /// Validates every assembled experiment into the report, in first-row order.
    fn finish(
        mut self,
        problem_at: impl Fn(u64, Option<String>, String) -> Problem,
        report: &mut ImportReport,
    ) {
        for id in self.order {
            let Some(mut assembled) = self.by_id.remove(&id) else {
                continue;
            };
            report.records_read += 1;
            if let Some((field, message, line)) = assembled.problem {
                report.problems.push(problem_at(line, field, message));
                continue;
            }
            assembled
                .fields
                .insert("variants".into(), Value::Array(assembled.variants));
            match experiment_from_value(Value::Object(assembled.fields)) {
                Ok(experiment) => report.experiments.push(experiment),
                Err((field, message)) => {
                    report
                        .problems
                        .push(problem_at(assembled.first_line, field, message))
                }
            }
        }
    }
}

pub(super) fn parse_csv<R: BufRead>(
    name: &str,
    reader: &mut R,
    report: &mut ImportReport,
) -> std::io::Result<()> {
    let mut csv_reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let problem_at = |line: u64, field: Option<String>, message: String| Problem {
        source: name.to_string(),
        location: Location::Line(line),
        field,
        message,
    };
    let headers = match csv_reader.headers() {
        Ok(headers) => headers.clone(),
        Err(err) => {
            report.problems.push(problem_at(
                1,
                None,
                format!("cannot read the CSV header: {err}"),
            ));
            return Ok(());
        }
    };
    let header_problems = header_problems(&headers);
    if !header_problems.is_empty() {
        report.problems.extend(
            header_problems
                .into_iter()
                .map(|(field, message)| problem_at(1, Some(field), message)),
        );
        return Ok(());
    }

    let mut experiments = CsvExperiments::default();
    let mut record = csv::StringRecord::new();
    loop {
        match csv_reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(err) => {
                let line = err.position().map(|p| p.line()).unwrap_or(0);
                report
                    .problems
                    .push(problem_at(line, None, format!("invalid CSV: {err}")));
                // A malformed record (wrong field count) is reported; the reader can go on.
                if matches!(err.kind(), csv::ErrorKind::Io(_)) {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.as_slice().len() > MAX_RECORD_BYTES {
            report.problems.push(problem_at(
                line,
                None,
                format!("record is longer than {MAX_RECORD_BYTES} bytes"),
            ));
            continue;
        }
        let (fields, variant) = match split_row(&headers, &record) {
            Ok(split) => split,
            Err((field, message)) => {
                report.problems.push(problem_at(line, field, message));
                continue;
            }
        };
        let Some(id) = fields.get("id").and_then(Value::as_str).map(str::to_string) else {
            report
                .problems
                .push(problem_at(line, Some("id".into()), "is empty".into()));
            continue;
        };
        experiments.add_row(id, line, fields, variant);
    }
    experiments.finish(problem_at, report);
    Ok(())
}

/// The header's mistakes, each with the column it is about: an unknown column, a column
/// twice, a required column missing.
fn header_problems(headers: &csv::StringRecord) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (index, column) in headers.iter().enumerate() {
        if !VARIANT_COLUMNS.contains(&column)
            && !EXPERIMENT_COLUMNS.contains(&column)
            && !SUMMARY_COLUMNS.contains(&column)
        {
            problems.push((
                column.to_string(),
                format!(
                    "unknown column (header column {}); the columns are the JSON fields, {} and {}",
                    index + 1,
                    VARIANT_COLUMNS.join(", "),
                    SUMMARY_COLUMNS.join(", ")
                ),
            ));
        } else if let Some(first) = headers.iter().position(|c| c == column) {
            if first < index {
                problems.push((
                    column.to_string(),
                    format!(
                        "duplicate column: the header names it twice (columns {} and {}); which one holds the data?",
                        first + 1,
                        index + 1
                    ),
                ));
            }
        }
    }
    // A file of summary-only records has no sums, so no `conversions` column.
    let summaries = headers.iter().any(|c| SUMMARY_COLUMNS.contains(&c));
    for required in ["id", "variant", "control", "visitors", "conversions"] {
        if required == "conversions" && summaries {
            continue;
        }
        if !headers.iter().any(|c| c == required) {
            problems.push((required.to_string(), "required column is missing".into()));
        }
    }
    problems
}

/// Cells of one row as JSON values, by column (or field) name.
type Cells = Map<String, Value>;

/// One row's cells as JSON: the experiment's columns, and the variant's (`variant` becomes
/// the variant's `name`); the `summary_` columns make the experiment's `summary` object. Empty
/// cells are absent; the first cell that does not convert is the row's problem.
fn split_row(
    headers: &csv::StringRecord,
    record: &csv::StringRecord,
) -> Result<(Cells, Cells), FieldError> {
    let mut experiment_fields = Map::new();
    let mut variant = Map::new();
    for (column, raw) in headers.iter().zip(record.iter()) {
        if raw.is_empty() {
            continue;
        }
        let value =
            csv_value(column, raw).map_err(|message| (Some(column.to_string()), message))?;
        let key = if column == "variant" { "name" } else { column };
        if let Some(summary_key) = column
            .strip_prefix("summary_")
            .filter(|_| SUMMARY_COLUMNS.contains(&column))
        {
            if let Value::Object(summary) = experiment_fields
                .entry("summary")
                .or_insert_with(|| Value::Object(Map::new()))
            {
                summary.insert(summary_key.to_string(), value);
            }
        } else if VARIANT_COLUMNS.contains(&column) {
            variant.insert(key.to_string(), value);
        } else {
            experiment_fields.insert(key.to_string(), value);
        }
    }
    Ok((experiment_fields, variant))
}

/// Converts one CSV cell to the JSON value its column has in the NDJSON format.
fn csv_value(column: &str, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    match column {
        "control" => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Bool(true)),
            "false" | "0" | "no" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, found {raw:?}")),
        },
        "visitors" | "conversions" | "orders" => raw
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| format!("expected a whole number ≥ 0, found {raw:?}")),
        "revenue"
        | "revenue_sq"
        | "latency_ms_p75_delta"
        | "attributed_revenue"
        | "summary_relative_lift"
        | "summary_ci_low"
        | "summary_ci_high"
        | "summary_p_value"
        | "summary_effect"
        | "summary_standard_error" => parse_number(raw),
        "signals" => Ok(Value::Array(
            raw.split('|')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        "allocation" => raw
            .split('|')
            .map(|part| parse_number(part.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        _ => Ok(Value::String(raw.to_string())),
    }
}

fn parse_number(raw: &str) -> Result<Value, String> {
    let number: f64 = raw
        .parse()
        .map_err(|_| format!("expected a number, found {raw:?}"))?;
    serde_json::Number::from_f64(number)
        .map(Value::Number)
        .ok_or_else(|| format!("expected a finite number, found {raw:?}"))
}
