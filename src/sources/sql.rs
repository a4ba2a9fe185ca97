//! The SQL warehouse source (`kind = "sql"`): a database speaking the PostgreSQL protocol
//! (PostgreSQL, Redshift…) read through two queries, `experiments_query` (one row per
//! experiment, columns named as the import format's top-level fields) and `arms_query` (one row
//! per arm: `experiment_id, name, control, visitors, conversions, orders, revenue,
//! revenue_sq`). This module owns the connection (one, short connect timeout, a read-only
//! transaction where the server allows one), decoding each column by its PostgreSQL type into
//! the import format's JSON, attaching arms to their experiments, and the bounds on what is
//! read. The aggregation from raw exposures runs in the warehouse
//! (docs/sources.md#sql-warehouse).

use super::{Progress, Pull, Record, SourceError, SqlSource};
use crate::history::strict_json;
use chrono::{DateTime, NaiveDate};
use futures_util::TryStreamExt;
use serde_json::{Map, Number, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow, PgTypeKind, PgValueFormat};
use sqlx::{Column, ConnectOptions, Connection, Row, TypeInfo, ValueRef};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// At most this many rows are read from `experiments_query`; more is an error (a wrong query
/// must not exhaust memory).
pub const MAX_EXPERIMENT_ROWS: u64 = 200_000;
/// At most this many rows are read from `arms_query`.
pub const MAX_ARM_ROWS: u64 = 1_000_000;
/// At most this many bytes in one value (the import format's bound on a whole record).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// How long connecting (TCP, TLS, authentication) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often (in rows) the progress is told.
const PROGRESS_EVERY: u64 = 1_000;

/// What an import field holds, which decides the column types it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Date,
    Whole,
    Number,
    Bool,
    TextList,
    NumberList,
    /// A JSON object (json or jsonb), such as a summary-only record's `summary`.
    Object,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Text => "text (text, varchar or an enum)",
            Kind::Date => "a date (date, timestamp, timestamptz or YYYY-MM-DD text)",
            Kind::Whole => "a whole number (int2, int4, int8 or numeric)",
            Kind::Number => "a number (int, float4, float8 or numeric)",
            Kind::Bool => "a boolean (bool)",
            Kind::TextList => "a list of text (text[] or `|`-separated text)",
            Kind::NumberList => "a list of numbers (a numeric array or `|`-separated text)",
            Kind::Object => "a JSON object (json or jsonb)",
        }
    }
}

/// The columns `experiments_query` may return: the import format's top-level fields but
/// `variants` (the arms come from `arms_query`).
const EXPERIMENT_FIELDS: [(&str, Kind); 25] = [
    ("id", Kind::Text),
    ("name", Kind::Text),
    ("hypothesis", Kind::Text),
    ("moment", Kind::Text),
    ("lever", Kind::Text),
    ("segment", Kind::Text),
    ("channel", Kind::Text),
    ("rendering", Kind::Text),
    ("region", Kind::Text),
    ("primary_kpi", Kind::Text),
    ("signals", Kind::TextList),
    ("status", Kind::Text),
    ("idea_at", Kind::Date),
    ("started_at", Kind::Date),
    ("ended_at", Kind::Date),
    ("decided_at", Kind::Date),
    ("decision", Kind::Text),
    ("owner", Kind::Text),
    ("latency_ms_p75_delta", Kind::Number),
    ("allocation", Kind::NumberList),
    ("attributed_revenue", Kind::Number),
    ("source_proposal", Kind::Text),
    ("notes", Kind::Text),
    ("summary", Kind::Object),
    ("external_id", Kind::Text),
];

/// The columns `arms_query` may return.
const ARM_FIELDS: [(&str, Kind); 8] = [
    ("experiment_id", Kind::Text),
    ("name", Kind::Text),
    ("control", Kind::Bool),
    ("visitors", Kind::Whole),
    ("conversions", Kind::Whole),
    ("orders", Kind::Whole),
    ("revenue", Kind::Number),
    ("revenue_sq", Kind::Number),
];

/// The PostgreSQL types a column may have (decoded from the binary format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Text,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Bool,
    Date,
    Timestamp,
    Timestamptz,
    Json,
    Jsonb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnType {
    Scalar(Scalar),
    Array(Scalar),
}

fn scalar_of(name: &str) -> Option<Scalar> {
    Some(match name {
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "UNKNOWN" | "CITEXT" | "citext" => Scalar::Text,
        "INT2" => Scalar::Int2,
        "INT4" => Scalar::Int4,
        "INT8" => Scalar::Int8,
        "FLOAT4" => Scalar::Float4,
        "FLOAT8" => Scalar::Float8,
        "NUMERIC" => Scalar::Numeric,
        "BOOL" => Scalar::Bool,
        "DATE" => Scalar::Date,
        "TIMESTAMP" => Scalar::Timestamp,
        "TIMESTAMPTZ" => Scalar::Timestamptz,
        "JSON" => Scalar::Json,
        "JSONB" => Scalar::Jsonb,
        _ => return None,
    })
}

fn column_type(info: &sqlx::postgres::PgTypeInfo) -> Option<ColumnType> {
    if let PgTypeKind::Enum(_) = info.kind() {
        // An enum's binary form is its label.
        return Some(ColumnType::Scalar(Scalar::Text));
    }
    let name = info.name();
    if let Some(element) = name.strip_suffix("[]") {
        return match scalar_of(element)? {
            s @ (Scalar::Text
            | Scalar::Int2
            | Scalar::Int4
            | Scalar::Int8
            | Scalar::Float4
            | Scalar::Float8
            | Scalar::Numeric) => Some(ColumnType::Array(s)),
            _ => None,
        };
    }
    scalar_of(name).map(ColumnType::Scalar)
}

/// Whether a column of type `column` can hold a field of kind `kind`.
fn accepts(kind: Kind, column: ColumnType) -> bool {
    use Scalar::*;
    match column {
        // JSON is passed on as it is, and validated with the record.
        ColumnType::Scalar(Json | Jsonb) => true,
        ColumnType::Scalar(s) => match kind {
            Kind::Text => s == Text,
            Kind::Date => matches!(s, Date | Timestamp | Timestamptz | Text),
            Kind::Whole | Kind::Number => {
                matches!(s, Int2 | Int4 | Int8 | Float4 | Float8 | Numeric)
            }
            Kind::Bool => s == Bool,
            Kind::TextList | Kind::NumberList => s == Text,
            Kind::Object => false,
        },
        ColumnType::Array(s) => match kind {
            Kind::TextList => s == Text,
            Kind::NumberList => s != Text,
            _ => false,
        },
    }
}

/// How one column of a query's rows is read.
struct Plan {
    field: &'static str,
    kind: Kind,
    column: ColumnType,
}

/// Which query a row came from.
#[derive(Debug, Clone, Copy)]
enum Query {
    Experiments,
    Arms,
}

impl Query {
    fn name(self) -> &'static str {
        match self {
            Query::Experiments => "experiments_query",
            Query::Arms => "arms_query",
        }
    }

    fn fields(self) -> &'static [(&'static str, Kind)] {
        match self {
            Query::Experiments => &EXPERIMENT_FIELDS,
            Query::Arms => &ARM_FIELDS,
        }
    }

    fn max_rows(self) -> u64 {
        match self {
            Query::Experiments => MAX_EXPERIMENT_ROWS,
            Query::Arms => MAX_ARM_ROWS,
        }
    }
}

/// Reads the source: connects to `url` (from `url_env`; never shown with its password), runs
/// both queries in one read-only transaction where the server allows one, and returns one
/// record per row of `experiments_query` with its arms attached, in the query's order.
pub async fn pull(
    name: &str,
    source: &SqlSource,
    url: &str,
    progress: &dyn Progress,
) -> Result<Pull, SourceError> {
    let secrets = Secrets::of(url);
    let mut conn = connect(name, url, &secrets).await?;
    let result = read(name, source, &mut conn, &secrets, progress).await;
    // Nothing was written: the transaction (if any) is rolled back with the connection.
    let _ = conn.close().await;
    result
}

async fn connect(name: &str, url: &str, secrets: &Secrets) -> Result<PgConnection, SourceError> {
    let options = PgConnectOptions::from_str(url).map_err(|e| SourceError::Setup {
        source_name: name.to_string(),
        message: format!(
            "the database URL {} is not a PostgreSQL URL: {}",
            secrets.shown_url(),
            secrets.scrub(&e.to_string())
        ),
    })?;
    let options = options.application_name("hypod");
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Err(_) => Err(SourceError::Unreachable {
            source_name: name.to_string(),
            message: format!(
                "no answer from {} within {} s",
                secrets.shown_url(),
                CONNECT_TIMEOUT.as_secs()
            ),
        }),
        Ok(Err(e)) => {
            let message = format!(
                "cannot connect to {}: {}",
                secrets.shown_url(),
                secrets.scrub(&e.to_string())
            );
            let refused = e
                .as_database_error()
                .and_then(|db| db.code())
                .is_some_and(|code| code.starts_with("28"));
            Err(if refused {
                SourceError::Unauthorized {
                    source_name: name.to_string(),
                    message,
                }
            } else {
                SourceError::Unreachable {
                    source_name: name.to_string(),
                    message,
                }
            })
        }
        Ok(Ok(conn)) => Ok(conn),
    }
}

async fn read(
    name: &str,
    source: &SqlSource,
    conn: &mut PgConnection,
    secrets: &Secrets,
    progress: &dyn Progress,
) -> Result<Pull, SourceError> {
    // Both queries see one snapshot, and nothing they run can write. A server that refuses
    // this (Redshift may: it has its own isolation levels) gets a plain transaction, or none.
    for begin in [
        "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        "BEGIN",
    ] {
        if sqlx::raw_sql(begin).execute(&mut *conn).await.is_ok() {
            break;
        }
    }
    let mut rows_read = 0u64;
    let experiment_rows = run(
        name,
        Query::Experiments,
        &source.experiments_query,
        conn,
        secrets,
        progress,
        &mut rows_read,
    )
    .await?;
    let arm_rows = run(
        name,
        Query::Arms,
        &source.arms_query,
        conn,
        secrets,
        progress,
        &mut rows_read,
    )
    .await?;
    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    progress.update(rows_read, Some(rows_read), "rows");

    let record_error = |origin: String, field: &str, message: String| SourceError::Record {
        source_name: name.to_string(),
        origin,
        field: field.to_string(),
        message,
    };

    // The experiments, by id, in the query's order.
    let mut experiments: Vec<(String, Map<String, Value>, Vec<Value>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (row, fields) in experiment_rows {
        let origin = format!("experiments_query row {row}");
        let id = match fields.get("id") {
            Some(Value::String(id)) => id.clone(),
            Some(_) => {
                return Err(record_error(
                    origin,
                    "id",
                    "must be text (the experiment's id)".into(),
                ))
            }
            None => return Err(record_error(origin, "id", "is missing or NULL".into())),
        };
        if let Some(&first) = index.get(&id) {
            return Err(record_error(
                format!("{origin} (id {id})"),
                "id",
                format!(
                    "experiment {id} is also in {}: each experiment must come once",
                    experiments[first].0
                ),
            ));
        }
        index.insert(id.clone(), experiments.len());
        experiments.push((format!("{origin} (id {id})"), fields, Vec::new()));
    }
    for (row, mut fields) in arm_rows {
        let origin = format!("arms_query row {row}");
        let experiment_id = match fields.remove("experiment_id") {
            Some(Value::String(id)) => id,
            Some(_) => {
                return Err(record_error(
                    origin,
                    "experiment_id",
                    "must be text (the id of the arm's experiment)".into(),
                ))
            }
            None => {
                return Err(record_error(
                    origin,
                    "experiment_id",
                    "is missing or NULL".into(),
                ))
            }
        };
        let Some(&at) = index.get(&experiment_id) else {
            return Err(record_error(
                format!("{origin} (experiment {experiment_id})"),
                "experiment_id",
                format!(
                    "experiment {experiment_id} is not among experiments_query's rows: every arm needs its experiment"
                ),
            ));
        };
        experiments[at].2.push(Value::Object(fields));
    }

    let records = experiments
        .into_iter()
        .map(|(origin, mut fields, arms)| {
            fields.insert("variants".into(), Value::Array(arms));
            Record {
                value: Value::Object(fields),
                origin,
            }
        })
        .collect();
    Ok(Pull {
        records,
        unchanged: Vec::new(),
        state: Value::Null,
        requests: 2,
    })
}

/// Runs one query and decodes its rows (numbered from 1) into the import format's fields;
/// NULL values are left out.
async fn run(
    name: &str,
    query: Query,
    sql: &str,
    conn: &mut PgConnection,
    secrets: &Secrets,
    progress: &dyn Progress,
    rows_read: &mut u64,
) -> Result<Vec<(u64, Map<String, Value>)>, SourceError> {
    let mut out = Vec::new();
    let mut plan: Option<Vec<Plan>> = None;
    // A named (persistent) statement: an unnamed one is lost when sqlx looks up a custom type
    // (an enum column) between preparing and executing it.
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).fetch(&mut *conn);
    let mut number = 0u64;
    loop {
        let row = match rows.try_next().await {
            Ok(Some(row)) => row,
            Ok(None) => break,
            Err(e) => {
                let message = format!("{} failed: {}", query.name(), secrets.scrub(&e.to_string()));
                let source_name = name.to_string();
                // The server refused the query (syntax, a missing table, a permission): the
                // settings are wrong. Anything else (the connection dropped) is the source
                // being unreachable.
                return Err(if e.as_database_error().is_some() {
                    SourceError::Setup {
                        source_name,
                        message,
                    }
                } else {
                    SourceError::Unreachable {
                        source_name,
                        message,
                    }
                });
            }
        };
        number += 1;
        if number > query.max_rows() {
            return Err(SourceError::Setup {
                source_name: name.to_string(),
                message: format!(
                    "{} returned more than {} rows, the most hypod reads from it: check the query (aggregate in the warehouse: one row per {})",
                    query.name(),
                    query.max_rows(),
                    match query {
                        Query::Experiments => "experiment",
                        Query::Arms => "arm",
                    }
                ),
            });
        }
        let origin = format!("{} row {number}", query.name());
        if plan.is_none() {
            plan = Some(plan_of(name, query, &row, &origin)?);
        }
        let Some(plan) = plan.as_ref() else {
            continue;
        };
        let mut fields = Map::new();
        for (i, column) in plan.iter().enumerate() {
            let value = decode(&row, i, column).map_err(|message| SourceError::Record {
                source_name: name.to_string(),
                origin: with_id(&origin, query, &row, plan),
                field: column.field.to_string(),
                message,
            })?;
            if let Some(value) = value {
                fields.insert(column.field.to_string(), value);
            }
        }
        out.push((number, fields));
        *rows_read += 1;
        if rows_read.is_multiple_of(PROGRESS_EVERY) {
            progress.update(*rows_read, None, "rows");
        }
    }
    Ok(out)
}

/// A row's origin with the id of its experiment, when the row has a readable one:
/// `experiments_query row 12 (id exp-1)`, `arms_query row 3 (experiment exp-1)`.
fn with_id(origin: &str, query: Query, row: &PgRow, plan: &[Plan]) -> String {
    let (field, label) = match query {
        Query::Experiments => ("id", "id"),
        Query::Arms => ("experiment_id", "experiment"),
    };
    let id = plan
        .iter()
        .position(|p| p.field == field)
        .and_then(|i| decode(row, i, &plan[i]).ok().flatten());
    match id {
        Some(Value::String(id)) => format!("{origin} ({label} {id})"),
        _ => origin.to_string(),
    }
}

/// How each column is read, from the first row's columns: a column the import format does not
/// know, one named twice, or a type that cannot hold its field is an error.
fn plan_of(name: &str, query: Query, row: &PgRow, origin: &str) -> Result<Vec<Plan>, SourceError> {
    let error = |field: &str, message: String| SourceError::Record {
        source_name: name.to_string(),
        origin: origin.to_string(),
        field: field.to_string(),
        message,
    };
    let mut plan: Vec<Plan> = Vec::new();
    for column in row.columns() {
        let column_name = column.name();
        let Some(&(field, kind)) = query.fields().iter().find(|(f, _)| *f == column_name) else {
            let known: Vec<&str> = query.fields().iter().map(|(f, _)| *f).collect();
            return Err(error(
                column_name,
                format!(
                    "{} has a column `{column_name}` the import format does not know; its columns are {}",
                    query.name(),
                    known.join(", ")
                ),
            ));
        };
        if plan.iter().any(|p| p.field == field) {
            return Err(error(
                field,
                format!("{} returns the column `{field}` twice", query.name()),
            ));
        }
        let info = column.type_info();
        let Some(column_type) = column_type(info) else {
            return Err(error(
                field,
                format!(
                    "the column's type {} is not supported; cast it to {}",
                    info.name(),
                    kind.describe()
                ),
            ));
        };
        if !accepts(kind, column_type) {
            return Err(error(
                field,
                format!(
                    "the column's type {} cannot hold `{field}`, which is {}: cast it in the query",
                    info.name(),
                    kind.describe()
                ),
            ));
        }
        plan.push(Plan {
            field,
            kind,
            column: column_type,
        });
    }
    Ok(plan)
}

/// One value as the import format's JSON; `None` for NULL.
fn decode(row: &PgRow, index: usize, plan: &Plan) -> Result<Option<Value>, String> {
    let raw = row.try_get_raw(index).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(None);
    }
    if raw.format() != PgValueFormat::Binary {
        return Err("the server sent the value as text, where hypod reads binary values".into());
    }
    let bytes = raw.as_bytes().map_err(|e| e.to_string())?;
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "the value is {} bytes long; the limit is {MAX_VALUE_BYTES}",
            bytes.len()
        ));
    }
    let value = match plan.column {
        ColumnType::Scalar(Scalar::Json | Scalar::Jsonb) => {
            let text = match plan.column {
                // jsonb's binary form is a version byte (1) and the text.
                ColumnType::Scalar(Scalar::Jsonb) => match bytes.split_first() {
                    Some((1, rest)) => rest,
                    _ => return Err("unknown jsonb format version".into()),
                },
                _ => bytes,
            };
            let text = std::str::from_utf8(text).map_err(|_| "is not UTF-8".to_string())?;
            strict_json::parse(text).map_err(|e| match e {
                strict_json::StrictError::DuplicateKey(path) => format!(
                    "the key `{}` is written twice in the JSON",
                    strict_json::render_path(&path)
                ),
                strict_json::StrictError::Syntax(message) => message,
            })?
        }
        ColumnType::Scalar(scalar) => {
            let value = scalar_value(scalar, bytes)?;
            match (plan.kind, value) {
                (Kind::Whole, Value::Number(n)) => Value::Number(whole(&n)?),
                (Kind::Date, value) => date_value(scalar, value),
                (Kind::TextList, Value::String(text)) => Value::Array(
                    text.split('|')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                ),
                (Kind::NumberList, Value::String(text)) => Value::Array(
                    text.split('|')
                        .map(|part| {
                            let part = part.trim();
                            part.parse::<f64>()
                                .ok()
                                .and_then(Number::from_f64)
                                .map(Value::Number)
                                .ok_or_else(|| {
                                    format!("expected `|`-separated numbers, found {part:?}")
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                (_, value) => value,
            }
        }
        ColumnType::Array(element) => Value::Array(
            array_elements(bytes)?
                .into_iter()
                .map(|element_bytes| match element_bytes {
                    None => Err("holds a NULL element".to_string()),
                    Some(b) => scalar_value(element, b),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(Some(value))
}

/// A number the import format reads as a whole number (`visitors`, `conversions`, `orders`).
fn whole(n: &Number) -> Result<Number, String> {
    if n.is_i64() || n.is_u64() {
        return Ok(n.clone());
    }
    match n.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 => {
            Ok(Number::from(x as i64))
        }
        _ => Err(format!("{n} is not a whole number")),
    }
}

/// Timestamps are dated (in UTC for `timestamptz`): the import format holds dates.
fn date_value(scalar: Scalar, value: Value) -> Value {
    match (scalar, &value) {
        (Scalar::Timestamp | Scalar::Timestamptz, Value::String(text)) => {
            Value::String(text.chars().take(10).collect())
        }
        _ => value,
    }
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], String> {
    bytes
        .try_into()
        .map_err(|_| format!("expected {N} bytes, found {}", bytes.len()))
}

/// Microseconds or days since PostgreSQL's epoch, 2000-01-01.
fn pg_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default()
}

/// One binary value of a scalar type as JSON (dates and timestamps as ISO text).
fn scalar_value(scalar: Scalar, bytes: &[u8]) -> Result<Value, String> {
    let float = |x: f64| {
        Number::from_f64(x)
            .map(Value::Number)
            .ok_or_else(|| format!("{x} is not a finite number"))
    };
    Ok(match scalar {
        Scalar::Text => Value::String(
            std::str::from_utf8(bytes)
                .map_err(|_| "is not UTF-8".to_string())?
                .to_string(),
        ),
        Scalar::Int2 => Value::from(i16::from_be_bytes(fixed(bytes)?)),
        Scalar::Int4 => Value::from(i32::from_be_bytes(fixed(bytes)?)),
        Scalar::Int8 => Value::from(i64::from_be_bytes(fixed(bytes)?)),
        Scalar::Float4 => {
            // Through its shortest text, so 0.1::float4 reads as 0.1, not 0.10000000149.
            let x = f32::from_be_bytes(fixed(bytes)?);
            float(x.to_string().parse::<f64>().map_err(|e| e.to_string())?)?
        }
        Scalar::Float8 => float(f64::from_be_bytes(fixed(bytes)?))?,
        Scalar::Numeric => numeric(bytes)?,
        Scalar::Bool => Value::Bool(fixed::<1>(bytes)?[0] != 0),
        Scalar::Date => {
            let days = i32::from_be_bytes(fixed(bytes)?);
            let date = pg_epoch()
                .checked_add_signed(chrono::Duration::days(days.into()))
                .ok_or_else(|| "the date is out of range".to_string())?;
            Value::String(date.format("%Y-%m-%d").to_string())
        }
        Scalar::Timestamp | Scalar::Timestamptz => {
            let micros = i64::from_be_bytes(fixed(bytes)?);
            let epoch = pg_epoch()
                .and_hms_opt(0, 0, 0)
                .unwrap_or_default()
                .and_utc();
            let at: Option<DateTime<chrono::Utc>> =
                epoch.checked_add_signed(chrono::Duration::microseconds(micros));
            let at = at.ok_or_else(|| "the timestamp is out of range".to_string())?;
            Value::String(at.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string())
        }
        Scalar::Json | Scalar::Jsonb => return Err("JSON inside an array".into()),
    })
}

/// PostgreSQL's binary `numeric`: digit count, weight, sign, display scale, then base-10000
/// digits. A whole value that fits is a JSON integer; anything else the nearest f64.
fn numeric(bytes: &[u8]) -> Result<Value, String> {
    let word = |i: usize| -> Result<u16, String> {
        bytes
            .get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a truncated numeric".to_string())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i64;
    let sign = word(2)?;
    match sign {
        0x0000 | 0x4000 => {}
        _ => return Err("NaN or an infinity is not a finite number".into()),
    }
    let digits = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<_>, _>>()?;
    let group = |i: i64| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut integer = String::new();
    for i in 0..=weight {
        if integer.is_empty() {
            integer.push_str(&group(i).to_string());
        } else {
            integer.push_str(&format!("{:04}", group(i)));
        }
    }
    if integer.is_empty() {
        integer.push('0');
    }
    let mut fraction = String::new();
    let last = ndigits as i64 - 1;
    for i in (weight + 1)..=last {
        fraction.push_str(&format!("{:04}", group(i)));
    }
    let negative = sign == 0x4000;
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        if let Ok(n) = integer.parse::<i64>() {
            return Ok(Value::from(if negative { -n } else { n }));
        }
    }
    let text = format!(
        "{}{integer}.{}",
        if negative { "-" } else { "" },
        if fraction.is_empty() { "0" } else { fraction }
    );
    let x: f64 = text.parse().map_err(|_| format!("cannot read {text}"))?;
    Number::from_f64(x)
        .filter(|_| x.is_finite())
        .map(Value::Number)
        .ok_or_else(|| format!("{text} is not a finite number"))
}

/// The elements of a one-dimensional binary array (`None` for NULL).
fn array_elements(bytes: &[u8]) -> Result<Vec<Option<&[u8]>>, String> {
    let int = |at: usize| -> Result<i32, String> {
        bytes
            .get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "a truncated array".to_string())
    };
    let dimensions = int(0)?;
    if dimensions == 0 {
        return Ok(Vec::new());
    }
    if dimensions != 1 {
        return Err(format!(
            "a {dimensions}-dimensional array; a list is one-dimensional"
        ));
    }
    let length = usize::try_from(int(12)?).map_err(|_| "a negative array length".to_string())?;
    let mut at = 20;
    let mut out = Vec::with_capacity(length.min(1024));
    for _ in 0..length {
        let size = int(at)?;
        at += 4;
        if size < 0 {
            out.push(None);
            continue;
        }
        let size = size as usize;
        let element = bytes
            .get(at..at + size)
            .ok_or_else(|| "a truncated array".to_string())?;
        out.push(Some(element));
        at += size;
    }
    Ok(out)
}

/// The secrets a URL holds (its password, as written and decoded), kept out of every message.
struct Secrets {
    shown: String,
    passwords: Vec<String>,
}

impl Secrets {
    fn of(url: &str) -> Secrets {
        let mut passwords = Vec::new();
        let mut shown = url.to_string();
        if let Some(scheme_end) = url.find("://") {
            let rest = &url[scheme_end + 3..];
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            if let Some(at) = authority.rfind('@') {
                if let Some(colon) = authority[..at].find(':') {
                    let password = &authority[colon + 1..at];
                    if !password.is_empty() {
                        passwords.push(password.to_string());
                        shown = format!(
                            "{}{}:***{}",
                            &url[..scheme_end + 3],
                            &authority[..colon],
                            &url[scheme_end + 3 + at..]
                        );
                    }
                }
            }
        }
        if let Some((_, query)) = url.split_once('?') {
            for pair in query.split('&') {
                if let Some(password) = pair.strip_prefix("password=") {
                    if !password.is_empty() {
                        passwords.push(password.to_string());
                        shown = shown.replace(pair, "password=***");
                    }
                }
            }
        }
        let decoded: Vec<String> = passwords.iter().map(|p| percent_decode(p)).collect();
        passwords.extend(decoded);
        passwords.retain(|p| !p.is_empty());
        // Longest first, so a password that holds another is replaced whole.
        passwords.sort_by_key(|p| std::cmp::Reverse(p.len()));
        passwords.dedup();
        Secrets { shown, passwords }
    }

    fn shown_url(&self) -> &str {
        &self.shown
    }

    fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for password in &self.passwords {
            out = out.replace(password.as_str(), "***");
        }
        out
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        let secrets = Secrets::of("postgres://reader:s3cr%40t@db.example:5432/wh?sslmode=require");
        assert_eq!(
            secrets.shown_url(),
            "postgres://reader:***@db.example:5432/wh?sslmode=require"
        );
        assert_eq!(secrets.scrub("bad s3cr@t and s3cr%40t"), "bad *** and ***");
        let secrets = Secrets::of("postgres://db/wh?user=r&password=hunter2");
        assert_eq!(secrets.shown_url(), "postgres://db/wh?user=r&password=***");
        assert_eq!(secrets.scrub("x hunter2 y"), "x *** y");
        let secrets = Secrets::of("postgres://reader@db/wh");
        assert_eq!(secrets.shown_url(), "postgres://reader@db/wh");
    }

    fn numeric_bytes(ndigits: &[u16], weight: i16, negative: bool, scale: u16) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((ndigits.len() as u16).to_be_bytes());
        out.extend(weight.to_be_bytes());
        out.extend((if negative { 0x4000u16 } else { 0 }).to_be_bytes());
        out.extend(scale.to_be_bytes());
        for d in ndigits {
            out.extend(d.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_are_read_exactly() {
        // 22816.26 = 2 2816 . 2600
        assert_eq!(
            numeric(&numeric_bytes(&[2, 2816, 2600], 1, false, 2)).ok(),
            Some(serde_json::json!(22816.26))
        );
        // 7443 (a sum of integers), whole
        assert_eq!(
            numeric(&numeric_bytes(&[7443], 0, false, 0)).ok(),
            Some(serde_json::json!(7443))
        );
        // 100000000 = 1 0000 0000 with trailing zero groups left out
        assert_eq!(
            numeric(&numeric_bytes(&[1], 2, false, 0)).ok(),
            Some(serde_json::json!(100_000_000))
        );
        // -0.00015 = weight -1: 0.0001|5000
        assert_eq!(
            numeric(&numeric_bytes(&[1, 5000], -1, true, 5)).ok(),
            Some(serde_json::json!(-0.00015))
        );
        // 0.000012 = weight -2: 0.0000|1200
        assert_eq!(
            numeric(&numeric_bytes(&[1200], -2, false, 6)).ok(),
            Some(serde_json::json!(0.000012))
        );
        assert_eq!(
            numeric(&numeric_bytes(&[], 0, false, 0)).ok(),
            Some(serde_json::json!(0))
        );
        assert!(numeric(&[0, 0, 0, 0, 0xC0, 0, 0, 0]).is_err(), "NaN");
        assert!(numeric(&[0, 1]).is_err(), "truncated");
    }

    #[test]
    fn whole_numbers_refuse_fractions() {
        assert_eq!(
            whole(&Number::from_f64(12.0).unwrap_or(Number::from(0))).ok(),
            Some(Number::from(12))
        );
        assert!(whole(&Number::from_f64(12.5).unwrap_or(Number::from(0))).is_err());
    }
}
