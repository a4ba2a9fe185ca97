//! The program's experiment history: the validated model and the importers that build it from
//! NDJSON, JSON arrays and CSV (`strict_json` refuses a key written twice in one object).

pub mod import;
pub mod strict_json;

pub use crate::domain::experiment as model;
pub use import::{ImportReport, Problem, Source};
pub use model::{
    is_commercial_kpi, Decision, Experiment, ExperimentStatus, Moment, Summary, TestKey, Variant,
    COMMERCIAL_KPIS,
};
