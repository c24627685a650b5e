//! Row code both run databases share, so that what is written and what is read back mean
//! the same in either: the encodings of times, durations and JSON columns (here), a
//! transition turned into the values the statements bind ([`Write`], in `write`), and a
//! run's rows turned back into its records ([`RunRows::record`], in `read`). The SQL differs
//! per backend; what is written and read does not.

mod read;
mod write;

pub use read::{
    Columns, ELEMENT_COLUMNS, ElementColumns, Held, LeaseColumns, RowError, RunColumns, RunRows,
    SUMMARY_WIDTH, SummaryColumns, TRANSITION_COLUMNS, TaskColumns, TransitionColumns,
    origin_columns, state, task_columns,
};
pub use write::Write;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix seconds, as the databases store times.
pub fn seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Milliseconds, as the databases store durations.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A JSON column's text (`null` for a value that cannot be serialised, which values built
/// from JSON never are).
pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}
