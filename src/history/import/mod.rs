//! Importers for experiment history: NDJSON (one experiment per line), a JSON array, and CSV
//! (one row per variant). Input is untrusted: every record is bounded, parsed strictly and
//! validated, and every problem names the source, the line or record, and the field.
//!
//! Import is two-phase by design: [`parse_sources`] validates everything and returns the
//! experiments with the problems it found; the caller writes only when there are no problems
//! (or when the user asked to skip invalid records).
//!
//! This module owns the sources, format detection, problems and the report; `json` and
//! `csv_rows` read the formats, `validate` checks one experiment whatever its format.

mod csv_rows;
mod json;
mod validate;

pub use validate::experiment_from_value;

use super::model::Experiment;
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use validate::{field_error, FieldError};

/// Longest accepted NDJSON line or CSV record, in bytes.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Largest accepted JSON array file, in bytes.
pub const MAX_JSON_ARRAY_BYTES: u64 = 512 << 20;

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
    parse_bytes(name, Some(format), text.as_bytes())
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
        Format::Ndjson => json::parse_ndjson(name, reader, report),
        Format::JsonArray => json::parse_json_array(name, reader, report),
        Format::Csv => csv_rows::parse_csv(name, reader, report),
    }
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
