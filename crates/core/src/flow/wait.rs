//! Waits: an entry without a plugin that holds its run, durably, until a signal arrives (an
//! approval, an event from outside) or a due time passes (a durable timer).
//!
//! A wait is data, not a task: nothing is called. Its due time is journaled when the wait
//! begins, so a run interrupted during the wait resumes it and waits only what is left; while
//! only waits remain, the run holds no executor (it is WAITING) and whoever resumes it —
//! `runs resume`, a worker, `serve` — finds the signal or the due time in its record.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A wait entry's `wait = { … }` as written: exactly one of `signal`, `for_ms` and `until`,
/// and `timeout_ms` only with `signal`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// Wait for the signal of this name (`flowhost runs signal ID NAME`, `POST
    /// /v1/runs/{id}/signals/{name}`); its data goes into the store under the entry's
    /// `provides`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// How long a signal wait lasts, in milliseconds from when it begins; then the entry fails
    /// `signal-timeout` and the flow reverts. Default: no limit. Signed so that validation
    /// names a negative value rather than the parser refusing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    /// Wait this many milliseconds from when the wait begins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_ms: Option<i64>,
    /// Wait until this time (RFC 3339: `2026-12-24T18:00:00Z`, `2026-12-24T19:00:00+01:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// What a valid [`Wait`] waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// A signal of this name, for at most `timeout` (from when the wait begins).
    Signal {
        /// The signal's name.
        name: String,
        /// How long the wait lasts before the entry fails `signal-timeout`.
        timeout: Option<Duration>,
    },
    /// A due time `for_ms` after the wait begins.
    For(Duration),
    /// A due time fixed in the flow.
    Until(SystemTime),
}

impl Wait {
    /// Waits for the signal `name`.
    pub fn signal(name: impl Into<String>) -> Self {
        Self {
            signal: Some(name.into()),
            ..Self::default()
        }
    }

    /// Waits `ms` milliseconds.
    pub fn for_ms(ms: i64) -> Self {
        Self {
            for_ms: Some(ms),
            ..Self::default()
        }
    }

    /// Waits until `time` (RFC 3339).
    pub fn until(time: impl Into<String>) -> Self {
        Self {
            until: Some(time.into()),
            ..Self::default()
        }
    }

    /// Bounds a signal wait to `ms` milliseconds.
    pub fn timeout_ms(mut self, ms: i64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// What the wait waits for, or each problem with it as `(field, message)`, the field as
    /// the flow file names it (`wait.until`).
    pub fn resolve(&self) -> Result<WaitFor, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let set = [
            self.signal.is_some(),
            self.for_ms.is_some(),
            self.until.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            problems.push((
                "wait",
                "a `wait` holds exactly one of `signal`, `for_ms` and `until`".to_owned(),
            ));
        }
        if self.timeout_ms.is_some() && self.signal.is_none() {
            problems.push((
                "wait.timeout_ms",
                "`timeout_ms` bounds a signal wait: it needs `signal`".to_owned(),
            ));
        }
        let positive = |field: &'static str, ms: Option<i64>, problems: &mut Vec<_>| match ms {
            Some(ms) if ms <= 0 => {
                problems.push((field, format!("`{field}` must be above 0, not {ms}")));
                None
            }
            ms => ms.map(|ms| Duration::from_millis(ms.unsigned_abs())),
        };
        let timeout = positive("wait.timeout_ms", self.timeout_ms, &mut problems);
        let for_ms = positive("wait.for_ms", self.for_ms, &mut problems);
        if let Some(name) = &self.signal
            && !signal_name_ok(name)
        {
            problems.push((
                "wait.signal",
                format!(
                    "signal name `{}` is not allowed: it starts with a letter or digit and holds only ASCII letters, digits, `_`, `-` and `.` (at most 128)",
                    name.escape_debug()
                ),
            ));
        }
        let until = match &self.until {
            Some(text) => match parse_rfc3339(text) {
                Ok(at) => Some(at),
                Err(why) => {
                    problems.push((
                        "wait.until",
                        format!("`until` is not an RFC 3339 time (`2026-12-24T18:00:00Z`): {why}"),
                    ));
                    None
                }
            },
            None => None,
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(match (&self.signal, for_ms, until) {
            (Some(name), _, _) => WaitFor::Signal {
                name: name.clone(),
                timeout,
            },
            (None, Some(pause), _) => WaitFor::For(pause),
            (None, None, Some(at)) => WaitFor::Until(at),
            (None, None, None) => unreachable!("exactly one was checked to be set"),
        })
    }
}

/// Whether `name` may name a signal: it travels in URL paths and command lines, so the
/// characters of task names only.
pub fn signal_name_ok(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Parses an RFC 3339 time, with `Z` or a numeric offset (`+01:00`).
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    let (local, offset) = match text.len().checked_sub(6).map(|i| text.split_at(i)) {
        Some((local, offset))
            if offset.len() == 6
                && matches!(offset.as_bytes()[0], b'+' | b'-')
                && offset.as_bytes()[3] == b':' =>
        {
            let hours: u64 = offset[1..3].parse().map_err(|_| "bad offset hours")?;
            let minutes: u64 = offset[4..6].parse().map_err(|_| "bad offset minutes")?;
            if hours > 23 || minutes > 59 {
                return Err(format!("offset `{offset}` is out of range"));
            }
            let shift = Duration::from_secs(hours * 3600 + minutes * 60);
            (
                local.to_owned(),
                Some((offset.as_bytes()[0] == b'+', shift)),
            )
        }
        _ => (text.to_owned(), None),
    };
    let utc = match offset {
        Some(_) => format!("{local}Z"),
        None => local.replace('z', "Z"),
    };
    let at = humantime::parse_rfc3339(&utc).map_err(|e| e.to_string())?;
    Ok(match offset {
        // 19:00+01:00 is 18:00Z.
        Some((true, shift)) => at - shift,
        Some((false, shift)) => at + shift,
        None => at,
    })
}

/// `at` as RFC 3339 in UTC, to the millisecond: how due times are shown.
pub fn format_rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// `at` as unix seconds (the run database's `retry_at`).
pub fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_with_z_and_with_offsets() {
        let z = parse_rfc3339("2026-12-24T18:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2026-12-24T19:00:00+01:00").unwrap(), z);
        assert_eq!(parse_rfc3339("2026-12-24T16:30:00-01:30").unwrap(), z);
        assert_eq!(format_rfc3339(z), "2026-12-24T18:00:00.000Z");
        assert!(parse_rfc3339("tomorrow").is_err());
        assert!(parse_rfc3339("2026-12-24T18:00:00+25:00").is_err());
    }

    #[test]
    fn a_wait_holds_exactly_one_thing_to_wait_for() {
        let fields = |wait: Wait| -> Vec<&'static str> {
            wait.resolve()
                .unwrap_err()
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        assert_eq!(fields(Wait::default()), ["wait"]);
        assert_eq!(fields(Wait::for_ms(5).timeout_ms(10)), ["wait.timeout_ms"]);
        assert_eq!(fields(Wait::until("soon")), ["wait.until"]);
        assert_eq!(fields(Wait::for_ms(0)), ["wait.for_ms"]);
        assert_eq!(fields(Wait::signal("a b")), ["wait.signal"]);
        assert_eq!(
            Wait::signal("approved").timeout_ms(1000).resolve().unwrap(),
            WaitFor::Signal {
                name: "approved".into(),
                timeout: Some(Duration::from_secs(1))
            }
        );
    }
}
