//! The JSON importers: NDJSON (one experiment per line, each line bounded) and a JSON array
//! (the whole file bounded), both parsed strictly (a key twice in one object is refused).

use super::validate::{experiment_from_value, FieldError};
use super::{ImportReport, Location, Problem, SeenIds, MAX_JSON_ARRAY_BYTES, MAX_RECORD_BYTES};
use crate::history::strict_json::{self, StrictError};
use serde_json::Value;
use std::io::{BufRead, Read};

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

pub(super) fn parse_ndjson<R: BufRead>(
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

pub(super) fn parse_json_array<R: BufRead>(
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
