//! Importers for experiment history: NDJSON (one experiment per line), a JSON array, and CSV
//! (one row per variant). Input is untrusted: every record is bounded, parsed strictly and
//! validated, and every problem names the source, the line or record, and the field.
//!
//! Import is two-phase by design: [`parse_sources`] validates everything and returns the
//! experiments with the problems it found; the caller writes only when there are no problems
//! (or when the user asked to skip invalid records).

use super::model::{Experiment, Variant};
use super::strict_json::{self, StrictError};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Longest accepted NDJSON line or CSV record, in bytes.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Largest accepted JSON array file, in bytes.
pub const MAX_JSON_ARRAY_BYTES: u64 = 512 << 20;
const MAX_ID_CHARS: usize = 128;
const MAX_NAME_CHARS: usize = 300;
const MAX_HYPOTHESIS_CHARS: usize = 2_000;
const MAX_NOTES_CHARS: usize = 4_000;
const MAX_SHORT_CHARS: usize = 100;
const MAX_SIGNALS: usize = 32;
const MAX_VARIANTS: usize = 26;

/// Where import reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    pub fn from_arg(arg: &str) -> Source {
        if arg == "-" {
            Source::Stdin
        } else {
            Source::File(PathBuf::from(arg))
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Stdin => f.write_str("<stdin>"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    JsonArray,
    Csv,
}

/// Where in a source a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Line(u64),
    Record(usize),
    Whole,
}

/// One invalid record (or an unreadable source), named precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub source: String,
    pub location: Location,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        match self.location {
            Location::Line(n) => write!(f, ":{n}")?,
            Location::Record(n) => write!(f, ": record {n}")?,
            Location::Whole => {}
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    pub skip_invalid: bool,
}

/// What parsing found: the valid experiments and the problems. An id twice in one source is a
/// problem; across the sources of one import the last one wins (upsert semantics).
#[derive(Debug, Default)]
pub struct ImportReport {
    pub experiments: Vec<Experiment>,
    pub problems: Vec<Problem>,
    pub records_read: usize,
}

/// Reads and validates every source. Never writes anything.
pub fn parse_sources(sources: &[Source]) -> ImportReport {
    let mut report = ImportReport::default();
    for source in sources {
        let name = source.to_string();
        let (records_before, problems_before) = (report.records_read, report.problems.len());
        let result = match source {
            Source::Stdin => {
                let stdin = std::io::stdin();
                let mut reader = BufReader::new(stdin.lock());
                parse_reader(&name, None, &mut reader, &mut report)
            }
            Source::File(path) => match std::fs::File::open(path) {
                Ok(file) => {
                    let mut reader = BufReader::new(file);
                    parse_reader(&name, format_from_extension(path), &mut reader, &mut report)
                }
                Err(err) => Err(err),
            },
        };
        match result {
            Err(err) => report.problems.push(Problem {
                source: name,
                location: Location::Whole,
                field: None,
                message: format!("cannot read: {err}"),
            }),
            // A source with no record at all is a mistake (a wrong or truncated file), not a
            // successful import of nothing.
            Ok(())
                if report.records_read == records_before
                    && report.problems.len() == problems_before =>
            {
                report.problems.push(Problem {
                    source: name,
                    location: Location::Whole,
                    field: None,
                    message: "holds no experiment: the file is empty (or only a header)".into(),
                })
            }
            Ok(()) => {}
        }
    }
    deduplicate(&mut report.experiments);
    report
}

/// Parses text already in memory (used for the bundled sample history and by tests).
pub fn parse_text(name: &str, format: Format, text: &str) -> ImportReport {
    let mut report = ImportReport::default();
    let mut reader = BufReader::new(text.as_bytes());
    if let Err(err) = parse_reader(name, Some(format), &mut reader, &mut report) {
        report.problems.push(Problem {
            source: name.to_string(),
            location: Location::Whole,
            field: None,
            message: format!("cannot read: {err}"),
        });
    }
    deduplicate(&mut report.experiments);
    report
}

/// Parses bytes already in memory as a file of that name would be (the format sniffed when
/// `format` is `None`); for the fuzz tests, which feed it bytes that are not always UTF-8.
pub fn parse_bytes(name: &str, format: Option<Format>, bytes: &[u8]) -> ImportReport {
    let mut report = ImportReport::default();
    let mut reader = BufReader::new(bytes);
    if let Err(err) = parse_reader(name, format, &mut reader, &mut report) {
        report.problems.push(Problem {
            source: name.to_string(),
            location: Location::Whole,
            field: None,
            message: format!("cannot read: {err}"),
        });
    }
    deduplicate(&mut report.experiments);
    report
}

fn format_from_extension(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "ndjson" | "jsonl" => Some(Format::Ndjson),
        "json" => None, // a .json file may be an array or NDJSON: sniff it
        "csv" => Some(Format::Csv),
        _ => None,
    }
}

fn sniff<R: BufRead>(reader: &mut R) -> std::io::Result<Format> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(Format::Ndjson);
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let format = match buf[i] {
                    b'[' => Format::JsonArray,
                    b'{' => Format::Ndjson,
                    _ => Format::Csv,
                };
                return Ok(format);
            }
            None => {
                let len = buf.len();
                reader.consume(len);
            }
        }
    }
}

/// Skips a UTF-8 byte-order mark (spreadsheet programs write one) so that it is neither taken
/// for the start of a CSV header nor refused as invalid JSON.
fn skip_bom<R: BufRead>(reader: &mut R) -> std::io::Result<()> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let mut matched = 0;
    while matched < BOM.len() {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let take = (BOM.len() - matched).min(buf.len());
        if buf[..take] != BOM[matched..matched + take] {
            // A partial match can only happen when the buffer holds fewer than three bytes at
            // the very start, which BufReader never does for files; treat it as no BOM.
            break;
        }
        reader.consume(take);
        matched += take;
    }
    Ok(())
}

/// Ids already read from one source, with where, so that a second record with the same id is
/// an error naming both places (within one file it is a mistake, not an update).
#[derive(Default)]
struct SeenIds(HashMap<String, Location>);

impl SeenIds {
    fn check(&mut self, id: &str, here: Location) -> Result<(), FieldError> {
        match self.0.get(id) {
            Some(first) => Err(field_error(
                "id",
                format!(
                    "duplicate id {id:?}: {} has the same id; an experiment may appear only once in a file",
                    match first {
                        Location::Line(n) => format!("line {n}"),
                        Location::Record(n) => format!("record {n}"),
                        Location::Whole => "another record".to_string(),
                    }
                ),
            )),
            None => {
                self.0.insert(id.to_string(), here);
                Ok(())
            }
        }
    }
}

/// Parses one JSON record strictly; a repeated key names its path.
fn strict_value(text: &str) -> Result<Value, FieldError> {
    strict_json::parse(text).map_err(|err| match err {
        StrictError::DuplicateKey(path) => (
            Some(strict_json::render_path(&path)),
            "the key appears twice in the same object; JSON readers would keep only one of them"
                .to_string(),
        ),
        StrictError::Syntax(message) => (None, format!("invalid JSON: {message}")),
    })
}

fn parse_reader<R: BufRead>(
    name: &str,
    format: Option<Format>,
    reader: &mut R,
    report: &mut ImportReport,
) -> std::io::Result<()> {
    skip_bom(reader)?;
    let format = match format {
        Some(format) => format,
        None => sniff(reader)?,
    };
    match format {
        Format::Ndjson => parse_ndjson(name, reader, report),
        Format::JsonArray => parse_json_array(name, reader, report),
        Format::Csv => parse_csv(name, reader, report),
    }
}

fn parse_ndjson<R: BufRead>(
    name: &str,
    reader: &mut R,
    report: &mut ImportReport,
) -> std::io::Result<()> {
    let mut line_number = 0u64;
    let mut buf = Vec::new();
    let mut seen = SeenIds::default();
    loop {
        buf.clear();
        // Read at most one byte past the bound so an endless line cannot exhaust memory.
        let read = reader
            .by_ref()
            .take(MAX_RECORD_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if read == 0 {
            break;
        }
        line_number += 1;
        let problem = |field: Option<String>, message: String| Problem {
            source: name.to_string(),
            location: Location::Line(line_number),
            field,
            message,
        };
        if buf.len() > MAX_RECORD_BYTES && !buf.ends_with(b"\n") {
            report.problems.push(problem(
                None,
                format!("line is longer than {MAX_RECORD_BYTES} bytes"),
            ));
            // Skip the rest of the oversized line.
            let mut sink = Vec::new();
            reader.read_until(b'\n', &mut sink)?;
            continue;
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(text) => text.trim(),
            Err(_) => {
                report
                    .problems
                    .push(problem(None, "line is not valid UTF-8".into()));
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        report.records_read += 1;
        let value: Value = match strict_value(text) {
            Ok(value) => value,
            Err((field, message)) => {
                report.problems.push(problem(field, message));
                continue;
            }
        };
        match experiment_from_value(value).and_then(|experiment| {
            seen.check(&experiment.id, Location::Line(line_number))?;
            Ok(experiment)
        }) {
            Ok(experiment) => report.experiments.push(experiment),
            Err((field, message)) => report.problems.push(problem(field, message)),
        }
    }
    Ok(())
}

fn parse_json_array<R: BufRead>(
    name: &str,
    reader: &mut R,
    report: &mut ImportReport,
) -> std::io::Result<()> {
    let mut text = String::new();
    reader
        .by_ref()
        .take(MAX_JSON_ARRAY_BYTES + 1)
        .read_to_string(&mut text)?;
    let whole = |message: String| Problem {
        source: name.to_string(),
        location: Location::Whole,
        field: None,
        message,
    };
    if text.len() as u64 > MAX_JSON_ARRAY_BYTES {
        report.problems.push(whole(format!(
            "JSON array is larger than {MAX_JSON_ARRAY_BYTES} bytes: use NDJSON for large histories"
        )));
        return Ok(());
    }
    let records: Vec<Value> = match strict_json::parse(&text) {
        Ok(Value::Array(records)) => records,
        Ok(_) => {
            report.problems.push(whole(
                "not a JSON array of experiments: the file holds one JSON value that is not an array".into(),
            ));
            return Ok(());
        }
        Err(StrictError::DuplicateKey(path)) => {
            // The path starts with the record's index.
            let (location, rest) = match path.split_first() {
                Some((strict_json::Step::Index(i), rest)) => (Location::Record(i + 1), rest),
                _ => (Location::Whole, &path[..]),
            };
            report.records_read += 1;
            report.problems.push(Problem {
                source: name.to_string(),
                location,
                field: Some(strict_json::render_path(rest)),
                message: "the key appears twice in the same object; JSON readers would keep only one of them".into(),
            });
            return Ok(());
        }
        Err(StrictError::Syntax(err)) => {
            report
                .problems
                .push(whole(format!("not a JSON array of experiments: {err}")));
            return Ok(());
        }
    };
    let mut seen = SeenIds::default();
    for (index, value) in records.into_iter().enumerate() {
        report.records_read += 1;
        match experiment_from_value(value).and_then(|experiment| {
            seen.check(&experiment.id, Location::Record(index + 1))?;
            Ok(experiment)
        }) {
            Ok(experiment) => report.experiments.push(experiment),
            Err((field, message)) => report.problems.push(Problem {
                source: name.to_string(),
                location: Location::Record(index + 1),
                field,
                message,
            }),
        }
    }
    Ok(())
}

const VARIANT_COLUMNS: [&str; 7] = [
    "variant",
    "control",
    "visitors",
    "conversions",
    "orders",
    "revenue",
    "revenue_sq",
];
const EXPERIMENT_COLUMNS: [&str; 23] = [
    "id",
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

fn parse_csv<R: BufRead>(
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
    let mut header_ok = true;
    for (index, column) in headers.iter().enumerate() {
        if !VARIANT_COLUMNS.contains(&column) && !EXPERIMENT_COLUMNS.contains(&column) {
            report.problems.push(problem_at(
                1,
                Some(column.to_string()),
                format!(
                    "unknown column (header column {}); the columns are the JSON fields and {}",
                    index + 1,
                    VARIANT_COLUMNS.join(", ")
                ),
            ));
            header_ok = false;
        } else if let Some(first) = headers.iter().position(|c| c == column) {
            if first < index {
                report.problems.push(problem_at(
                    1,
                    Some(column.to_string()),
                    format!(
                        "duplicate column: the header names it twice (columns {} and {}); which one holds the data?",
                        first + 1,
                        index + 1
                    ),
                ));
                header_ok = false;
            }
        }
    }
    for required in ["id", "variant", "control", "visitors", "conversions"] {
        if !headers.iter().any(|c| c == required) {
            report.problems.push(problem_at(
                1,
                Some(required.to_string()),
                "required column is missing".into(),
            ));
            header_ok = false;
        }
    }
    if !header_ok {
        return Ok(());
    }

    let mut order: Vec<String> = Vec::new();
    let mut by_id: HashMap<String, CsvExperiment> = HashMap::new();
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
        let mut experiment_fields = Map::new();
        let mut variant = Map::new();
        let mut row_problem = None;
        for (column, raw) in headers.iter().zip(record.iter()) {
            if raw.is_empty() {
                continue;
            }
            match csv_value(column, raw) {
                Ok(value) => {
                    let key = if column == "variant" { "name" } else { column };
                    if VARIANT_COLUMNS.contains(&column) {
                        variant.insert(key.to_string(), value);
                    } else {
                        experiment_fields.insert(key.to_string(), value);
                    }
                }
                Err(message) => {
                    row_problem = Some((Some(column.to_string()), message));
                    break;
                }
            }
        }
        if let Some((field, message)) = row_problem {
            report.problems.push(problem_at(line, field, message));
            continue;
        }
        let id = match experiment_fields.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => {
                report
                    .problems
                    .push(problem_at(line, Some("id".into()), "is empty".into()));
                continue;
            }
        };
        let entry = by_id.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            CsvExperiment {
                first_line: line,
                fields: experiment_fields.clone(),
                variants: Vec::new(),
                variant_lines: Vec::new(),
                problem: None,
            }
        });
        let variant_name = variant
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if entry.problem.is_none() {
            if let Some((_, first)) = entry
                .variant_lines
                .iter()
                .find(|(name, _)| *name == variant_name)
            {
                entry.problem = Some((
                    Some("variant".into()),
                    format!(
                        "duplicate id {id:?}: line {first} already holds its variant {variant_name:?}; an experiment may appear only once in a file"
                    ),
                    line,
                ));
            }
        }
        entry.variant_lines.push((variant_name, line));
        if entry.problem.is_none() && entry.fields != experiment_fields {
            let differing = EXPERIMENT_COLUMNS
                .iter()
                .find(|c| entry.fields.get(**c) != experiment_fields.get(**c))
                .map(|c| c.to_string());
            entry.problem = Some((
                differing,
                format!(
                    "differs from the experiment's first row (line {}): the experiment's columns must repeat on each of its rows",
                    entry.first_line
                ),
                line,
            ));
        }
        entry.variants.push(Value::Object(variant));
    }

    for id in order {
        let Some(mut assembled) = by_id.remove(&id) else {
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
    Ok(())
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
        "revenue" | "revenue_sq" | "latency_ms_p75_delta" | "attributed_revenue" => {
            parse_number(raw)
        }
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

/// Strictly deserializes and validates one experiment; the error names the field.
pub fn experiment_from_value(value: Value) -> Result<Experiment, (Option<String>, String)> {
    let experiment: Experiment = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { None } else { Some(path) };
        (field, err.into_inner().to_string())
    })?;
    validate(&experiment)?;
    Ok(experiment)
}

type FieldError = (Option<String>, String);

fn field_error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    (Some(field.into()), message.into())
}

fn check_text(field: &str, text: &str, max_chars: usize, required: bool) -> Result<(), FieldError> {
    if required && text.trim().is_empty() {
        return Err(field_error(field, "must not be empty"));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(field_error(
            field,
            format!("is {chars} characters long; the limit is {max_chars}"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(field_error(field, "contains control characters"));
    }
    Ok(())
}

fn check_finite(field: &str, value: Option<f64>, non_negative: bool) -> Result<(), FieldError> {
    if let Some(value) = value {
        if !value.is_finite() {
            return Err(field_error(field, "must be a finite number"));
        }
        if non_negative && value < 0.0 {
            return Err(field_error(field, format!("must be ≥ 0, found {value}")));
        }
    }
    Ok(())
}

fn validate(experiment: &Experiment) -> Result<(), FieldError> {
    let id = &experiment.id;
    check_text("id", id, MAX_ID_CHARS, true)?;
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
    {
        return Err(field_error(
            "id",
            "may only hold letters, digits and - _ . : /",
        ));
    }
    check_text("name", &experiment.name, MAX_NAME_CHARS, true)?;
    if let Some(text) = &experiment.hypothesis {
        check_text("hypothesis", text, MAX_HYPOTHESIS_CHARS, false)?;
    }
    if let Some(text) = &experiment.notes {
        check_text("notes", text, MAX_NOTES_CHARS, false)?;
    }
    check_text(
        "primary_kpi",
        &experiment.primary_kpi,
        MAX_SHORT_CHARS,
        true,
    )?;
    for (field, value) in [
        ("lever", &experiment.lever),
        ("segment", &experiment.segment),
        ("channel", &experiment.channel),
        ("rendering", &experiment.rendering),
        ("region", &experiment.region),
        ("owner", &experiment.owner),
        ("source_proposal", &experiment.source_proposal),
    ] {
        if let Some(text) = value {
            check_text(field, text, MAX_SHORT_CHARS, false)?;
        }
    }
    if experiment.signals.len() > MAX_SIGNALS {
        return Err(field_error(
            "signals",
            format!(
                "has {} entries; the limit is {MAX_SIGNALS}",
                experiment.signals.len()
            ),
        ));
    }
    for (i, signal) in experiment.signals.iter().enumerate() {
        check_text(&format!("signals[{i}]"), signal, MAX_SHORT_CHARS, true)?;
    }
    check_finite(
        "latency_ms_p75_delta",
        experiment.latency_ms_p75_delta,
        false,
    )?;
    check_finite("attributed_revenue", experiment.attributed_revenue, false)?;
    check_dates(experiment)?;

    let variants = &experiment.variants;
    if variants.len() < 2 {
        return Err(field_error(
            "variants",
            format!("needs at least two variants, found {}", variants.len()),
        ));
    }
    if variants.len() > MAX_VARIANTS {
        return Err(field_error(
            "variants",
            format!(
                "has {} variants; the limit is {MAX_VARIANTS}",
                variants.len()
            ),
        ));
    }
    let controls = variants.iter().filter(|v| v.control).count();
    if controls != 1 {
        return Err(field_error(
            "variants",
            format!("needs exactly one variant with \"control\": true, found {controls}"),
        ));
    }
    for (i, variant) in variants.iter().enumerate() {
        validate_variant(i, variant)?;
        if variants[..i].iter().any(|other| other.name == variant.name) {
            return Err(field_error(
                format!("variants[{i}].name"),
                format!("duplicate variant name {:?}", variant.name),
            ));
        }
    }
    if let Some(weights) = &experiment.allocation {
        if weights.len() != variants.len() {
            return Err(field_error(
                "allocation",
                format!(
                    "has {} weights for {} variants",
                    weights.len(),
                    variants.len()
                ),
            ));
        }
        if weights.iter().any(|w| !w.is_finite() || *w <= 0.0) {
            return Err(field_error(
                "allocation",
                "weights must be positive numbers",
            ));
        }
    }
    Ok(())
}

/// Dates follow the life of an experiment: idea, start, end; a decision comes after the idea
/// and the start. Out of order, the time-to-decision figures would be nonsense (or negative).
fn check_dates(experiment: &Experiment) -> Result<(), FieldError> {
    let dates = [
        ("idea_at", experiment.idea_at),
        ("started_at", experiment.started_at),
        ("ended_at", experiment.ended_at),
    ];
    // Each later date against every earlier one that is given.
    let mut checks: Vec<(&str, chrono::NaiveDate, &str, chrono::NaiveDate)> = Vec::new();
    for (i, (later, later_date)) in dates.iter().enumerate() {
        for (earlier, earlier_date) in &dates[..i] {
            if let (Some(l), Some(e)) = (later_date, earlier_date) {
                checks.push((*later, *l, *earlier, *e));
            }
        }
    }
    if let Some(decided) = experiment.decided_at {
        for (earlier, date) in &dates[..2] {
            if let Some(date) = date {
                checks.push(("decided_at", decided, *earlier, *date));
            }
        }
    }
    for (later, later_date, earlier, earlier_date) in checks {
        if later_date < earlier_date {
            return Err(field_error(
                later,
                format!("{later_date} is before {earlier} {earlier_date}"),
            ));
        }
    }
    Ok(())
}

fn validate_variant(index: usize, variant: &Variant) -> Result<(), FieldError> {
    let field = |name: &str| format!("variants[{index}].{name}");
    check_text(&field("name"), &variant.name, MAX_SHORT_CHARS, true)?;
    if variant.conversions > variant.visitors {
        return Err(field_error(
            field("conversions"),
            format!(
                "{} conversions exceed {} visitors",
                variant.conversions, variant.visitors
            ),
        ));
    }
    check_finite(&field("revenue"), variant.revenue, true)?;
    check_finite(&field("revenue_sq"), variant.revenue_sq, true)?;
    // Numbers that no real tracking can produce: each would turn into a "result".
    if let Some(orders) = variant.orders {
        if orders < variant.conversions {
            return Err(field_error(
                field("orders"),
                format!(
                    "{orders} orders are fewer than {} conversions (every converting visitor placed an order)",
                    variant.conversions
                ),
            ));
        }
        if orders > 0 && variant.conversions == 0 {
            return Err(field_error(
                field("orders"),
                format!("{orders} orders but no conversion"),
            ));
        }
    }
    if variant.visitors == 0 {
        for (name, value) in [
            ("revenue", variant.revenue),
            ("revenue_sq", variant.revenue_sq),
        ] {
            if value.is_some_and(|v| v > 0.0) {
                return Err(field_error(field(name), "is positive with 0 visitors"));
            }
        }
    }
    if let (Some(sum), Some(sum_sq)) = (variant.revenue, variant.revenue_sq) {
        // Σx² ≥ (Σx)²/n for any n values (Cauchy–Schwarz): below it the variance is negative.
        let minimum = sum * sum / variant.visitors.max(1) as f64;
        if sum_sq < minimum * (1.0 - 1e-9) {
            return Err(field_error(
                field("revenue_sq"),
                format!(
                    "{sum_sq} is below revenue²/visitors = {minimum}: revenue_sq must be the sum over visitors of the squared revenue per visitor, which can never be smaller"
                ),
            ));
        }
    }
    Ok(())
}

/// Keeps the last record of each id, in first-seen order (upsert semantics within one import).
fn deduplicate(experiments: &mut Vec<Experiment>) {
    let mut last_index: HashMap<&str, usize> = HashMap::with_capacity(experiments.len());
    for (i, e) in experiments.iter().enumerate() {
        last_index.insert(e.id.as_str(), i);
    }
    if last_index.len() == experiments.len() {
        return;
    }
    let keep: Vec<bool> = experiments
        .iter()
        .enumerate()
        .map(|(i, e)| last_index[e.id.as_str()] == i)
        .collect();
    let mut i = 0;
    experiments.retain(|_| {
        let k = keep[i];
        i += 1;
        k
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"id":"e1","name":"A","moment":"search","primary_kpi":"conversion_rate","status":"concluded","variants":[{"name":"control","control":true,"visitors":100,"conversions":5},{"name":"t","control":false,"visitors":100,"conversions":7}]}"#;

    #[test]
    fn ndjson_problem_names_line_and_field() {
        let bad = GOOD.replace("\"conversions\":7", "\"conversions\":700");
        let text = format!("{GOOD}\n\n{bad}\n");
        let report = parse_text("h.ndjson", Format::Ndjson, &text);
        assert_eq!(report.experiments.len(), 1);
        assert_eq!(report.problems.len(), 1);
        assert_eq!(
            report.problems[0].to_string(),
            "h.ndjson:3: field `variants[1].conversions`: 700 conversions exceed 100 visitors"
        );
    }

    #[test]
    fn impossible_numbers_are_rejected_with_their_field() {
        let cases = [
            (
                r#""orders":4,"#,
                "variants[1].orders",
                "4 orders are fewer than 7 conversions",
            ),
            (
                r#""revenue":1000.0,"revenue_sq":9000.0,"#,
                "variants[1].revenue_sq",
                "below revenue²/visitors = 10000",
            ),
        ];
        for (extra, field, message) in cases {
            let text = GOOD.replace(
                r#""visitors":100,"conversions":7"#,
                &format!(r#"{extra}"visitors":100,"conversions":7"#),
            );
            assert_ne!(text, GOOD);
            let report = parse_text("h.ndjson", Format::Ndjson, &text);
            assert!(report.experiments.is_empty(), "{extra} was accepted");
            let problem = &report.problems[0];
            assert_eq!(problem.field.as_deref(), Some(field), "{problem}");
            assert!(problem.to_string().contains(message), "{problem}");
            assert!(problem.to_string().starts_with("h.ndjson:1:"), "{problem}");
        }
        // Exactly at the bound (every visitor paid the same) is possible, and kept.
        let text = GOOD.replace(
            r#""visitors":100,"conversions":7"#,
            r#""revenue":1000.0,"revenue_sq":10000.0,"visitors":100,"conversions":7"#,
        );
        assert!(parse_text("h.ndjson", Format::Ndjson, &text)
            .problems
            .is_empty());
    }

    #[test]
    fn an_empty_source_is_a_problem_not_an_import_of_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("empty.ndjson", ""),
            ("blank.json", "  \n"),
            (
                "header.csv",
                "id,name,moment,primary_kpi,status,variant,control,visitors,conversions\n",
            ),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let report = parse_sources(&[Source::File(path)]);
            assert_eq!(report.problems.len(), 1, "{name}: {:?}", report.problems);
            let problem = report.problems[0].to_string();
            assert!(
                problem.contains(name) && problem.contains("holds no experiment"),
                "{problem}"
            );
        }
    }

    #[test]
    fn wrong_type_names_the_nested_field() {
        let bad = GOOD.replace(
            "\"visitors\":100,\"conversions\":7",
            "\"visitors\":\"many\",\"conversions\":7",
        );
        let report = parse_text("h.ndjson", Format::Ndjson, &bad);
        assert_eq!(
            report.problems[0].field.as_deref(),
            Some("variants[1].visitors")
        );
    }

    #[test]
    fn unknown_moment_and_unknown_field_are_rejected() {
        let bad = GOOD.replace("\"search\"", "\"homepage\"");
        let report = parse_text("h.ndjson", Format::Ndjson, &bad);
        assert_eq!(report.problems[0].field.as_deref(), Some("moment"));
        let extra = GOOD.replace("\"name\":\"A\"", "\"name\":\"A\",\"colour\":\"red\"");
        let report = parse_text("h.ndjson", Format::Ndjson, &extra);
        assert!(report.problems[0]
            .message
            .contains("unknown field `colour`"));
    }

    #[test]
    fn csv_groups_rows_and_splits_lists() {
        let text = "id,name,moment,primary_kpi,status,signals,allocation,variant,control,visitors,conversions\n\
                    e1,\"A, quoted\",search,conversion_rate,concluded,a|b,1|1,control,true,100,5\n\
                    e1,\"A, quoted\",search,conversion_rate,concluded,a|b,1|1,t,false,100,7\n";
        let report = parse_text("h.csv", Format::Csv, text);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let e = &report.experiments[0];
        assert_eq!(e.name, "A, quoted");
        assert_eq!(e.signals, vec!["a", "b"]);
        assert_eq!(e.variants.len(), 2);
    }

    #[test]
    fn csv_bad_number_names_line_and_column() {
        let text = "id,name,moment,primary_kpi,status,variant,control,visitors,conversions\n\
                    e1,A,search,conversion_rate,concluded,control,true,100,5\n\
                    e1,A,search,conversion_rate,concluded,t,false,ten,7\n";
        let report = parse_text("h.csv", Format::Csv, text);
        assert_eq!(
            report.problems[0].to_string(),
            "h.csv:3: field `visitors`: expected a whole number ≥ 0, found \"ten\""
        );
    }

    #[test]
    fn a_duplicate_id_in_one_file_names_both_places() {
        let second = GOOD.replace("\"name\":\"A\"", "\"name\":\"B\"");
        let report = parse_text("h.ndjson", Format::Ndjson, &format!("{GOOD}\n{second}\n"));
        assert_eq!(report.experiments.len(), 1);
        assert_eq!(
            report.problems[0].to_string(),
            "h.ndjson:2: field `id`: duplicate id \"e1\": line 1 has the same id; an experiment may appear only once in a file"
        );
        let report = parse_text("h.json", Format::JsonArray, &format!("[{GOOD},{second}]"));
        assert_eq!(
            report.problems[0].to_string(),
            "h.json: record 2: field `id`: duplicate id \"e1\": record 1 has the same id; an experiment may appear only once in a file"
        );
        let csv = "id,name,moment,primary_kpi,status,variant,control,visitors,conversions\n\
                   e1,A,search,conversion_rate,concluded,control,true,100,5\n\
                   e1,A,search,conversion_rate,concluded,t,false,100,7\n\
                   e1,A,search,conversion_rate,concluded,control,true,100,5\n\
                   e1,A,search,conversion_rate,concluded,t,false,100,7\n";
        let report = parse_text("h.csv", Format::Csv, csv);
        assert!(report.experiments.is_empty());
        assert_eq!(
            report.problems[0].to_string(),
            "h.csv:4: field `variant`: duplicate id \"e1\": line 2 already holds its variant \"control\"; an experiment may appear only once in a file"
        );
    }

    #[test]
    fn a_key_twice_in_one_object_is_refused_with_its_path() {
        let twice = GOOD.replace(
            "\"visitors\":100,\"conversions\":7",
            "\"visitors\":100,\"conversions\":7,\"visitors\":9000",
        );
        let report = parse_text("h.ndjson", Format::Ndjson, &twice);
        assert!(report.experiments.is_empty());
        assert_eq!(
            report.problems[0].to_string(),
            "h.ndjson:1: field `variants[1].visitors`: the key appears twice in the same object; JSON readers would keep only one of them"
        );
        let report = parse_text("h.json", Format::JsonArray, &format!("[{GOOD},\n{twice}]"));
        assert!(report.experiments.is_empty());
        assert_eq!(
            report.problems[0].to_string(),
            "h.json: record 2: field `variants[1].visitors`: the key appears twice in the same object; JSON readers would keep only one of them"
        );
    }

    #[test]
    fn dates_out_of_order_name_the_later_field() {
        let dated = |dates: &str| GOOD.replace("\"status\"", &format!("{dates},\"status\""));
        for (dates, expected) in [
            (
                r#""started_at":"2025-03-10","ended_at":"2025-03-01""#,
                "field `ended_at`: 2025-03-01 is before started_at 2025-03-10",
            ),
            (
                r#""idea_at":"2025-03-10","decided_at":"2025-03-01""#,
                "field `decided_at`: 2025-03-01 is before idea_at 2025-03-10",
            ),
            (
                r#""started_at":"2025-03-10","decided_at":"2025-03-01""#,
                "field `decided_at`: 2025-03-01 is before started_at 2025-03-10",
            ),
            (
                r#""idea_at":"2025-03-10","started_at":"2025-03-01""#,
                "field `started_at`: 2025-03-01 is before idea_at 2025-03-10",
            ),
        ] {
            let report = parse_text("h.ndjson", Format::Ndjson, &dated(dates));
            assert!(report.experiments.is_empty(), "{dates}");
            assert_eq!(
                report.problems[0].to_string(),
                format!("h.ndjson:1: {expected}")
            );
        }
        let ok = dated(
            r#""idea_at":"2025-03-01","started_at":"2025-03-01","ended_at":"2025-03-20","decided_at":"2025-03-20""#,
        );
        assert!(parse_text("h.ndjson", Format::Ndjson, &ok)
            .problems
            .is_empty());
        let csv = "id,name,moment,primary_kpi,status,started_at,ended_at,variant,control,visitors,conversions\n\
                   e1,A,search,conversion_rate,concluded,2025-03-10,2025-03-01,control,true,100,5\n\
                   e1,A,search,conversion_rate,concluded,2025-03-10,2025-03-01,t,false,100,7\n";
        let report = parse_text("h.csv", Format::Csv, csv);
        assert_eq!(
            report.problems[0].to_string(),
            "h.csv:2: field `ended_at`: 2025-03-01 is before started_at 2025-03-10"
        );
    }

    #[test]
    fn csv_header_mistakes_are_named_as_such() {
        let csv =
            "id,name,moment,primary_kpi,status,variant,control,visitors,conversions,visitors\n\
                   e1,A,search,conversion_rate,concluded,control,true,100,5,9000\n\
                   e1,A,search,conversion_rate,concluded,t,false,100,7,9000\n";
        let report = parse_text("h.csv", Format::Csv, csv);
        assert!(report.experiments.is_empty());
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert_eq!(
            report.problems[0].to_string(),
            "h.csv:1: field `visitors`: duplicate column: the header names it twice (columns 8 and 10); which one holds the data?"
        );
        let csv = "id,name,moment,primary_kpi,status,variant,control,visitors,conversions,colour\n";
        let report = parse_text("h.csv", Format::Csv, csv);
        assert!(report.problems[0]
            .to_string()
            .starts_with("h.csv:1: field `colour`: unknown column (header column 10)"));
    }

    #[test]
    fn a_byte_order_mark_is_skipped_in_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let csv = "id,name,moment,primary_kpi,status,variant,control,visitors,conversions\n\
                   e1,A,search,conversion_rate,concluded,control,true,100,5\n\
                   e1,A,search,conversion_rate,concluded,t,false,100,7\n";
        for (name, text) in [
            ("a.json", format!("[{GOOD}]")),
            ("b.json", format!("{GOOD}\n")),
            ("c.ndjson", format!("{GOOD}\n")),
            ("d.csv", csv.to_string()),
            ("e.txt", csv.to_string()),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("\u{FEFF}{text}")).unwrap();
            let report = parse_sources(&[Source::File(path)]);
            assert!(report.problems.is_empty(), "{name}: {:?}", report.problems);
            assert_eq!(report.experiments.len(), 1, "{name}");
        }
    }
}
