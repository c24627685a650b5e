//! Schedules and queue limits: when `flowhost serve` starts runs of a flow by itself (cron
//! ticks, in UTC), and how many runs of a flow the workers execute at once or start per
//! period. Data and time arithmetic only; the service ticks, the run databases record.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most missed ticks `catch_up = "all"` starts runs for, the latest ones: a schedule every
/// second left alone for a day must not flood the queue with 86,400 runs.
pub const MAX_CATCH_UP: usize = 100;

/// One entry of a flow's `schedule`: a cron expression and the store its runs start from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// A cron expression, evaluated in UTC: five fields (minute hour day-of-month month
    /// day-of-week), or six with seconds first; `@hourly`-style aliases too.
    pub cron: String,
    /// Initial store values of the runs it starts, over the flow's `[store]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub store: BTreeMap<String, Value>,
    /// What to do about ticks that passed while no `serve` was running.
    #[serde(default)]
    pub catch_up: CatchUp,
}

impl Schedule {
    /// Why this entry — the `index`th of its flow's `schedule`, from 0 — cannot tick: its cron
    /// expression does not parse. Names the entry as people count (from 1) and the expression.
    pub fn problem(&self, index: usize) -> Option<String> {
        let reason = Cron::parse(&self.cron).err()?;
        Some(format!(
            "schedule {} has cron `{}`, which is not a cron expression: {reason} (five fields, minute hour day-of-month month day-of-week, or six with seconds first)",
            index + 1,
            self.cron.escape_debug()
        ))
    }
}

/// Ticks missed while nothing ran the schedule (no `serve` was up), found when one starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Start nothing for them: the next run is at the next tick.
    None,
    /// One run, for the latest missed tick (the default).
    #[default]
    One,
    /// One run per missed tick, oldest first, at most the latest [`MAX_CATCH_UP`].
    All,
}

impl CatchUp {
    /// The name, as the flow file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::One => "one",
            Self::All => "all",
        }
    }

    /// Of the missed ticks (oldest first), those to start runs for.
    pub fn pick(self, mut missed: Vec<SystemTime>) -> Vec<SystemTime> {
        match self {
            Self::None => Vec::new(),
            Self::One => missed.pop().into_iter().collect(),
            Self::All => missed,
        }
    }
}

/// A flow's `rate`: at most `runs` runs started by the workers in any `per_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Starts allowed per period (signed so that validation names a negative value).
    pub runs: i64,
    /// The period, in milliseconds.
    pub per_ms: i64,
}

/// A parsed cron expression, ticking in UTC.
#[derive(Debug, Clone)]
pub struct Cron(croner::Cron);

impl Cron {
    /// Parses `expression`: five fields, or six with seconds first. The error is croner's
    /// reason.
    pub fn parse(expression: &str) -> Result<Self, String> {
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(expression)
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// The first tick strictly after `time`, if the expression ever ticks again.
    pub fn next_after(&self, time: SystemTime) -> Option<SystemTime> {
        self.0
            .find_next_occurrence(&utc(time), false)
            .ok()
            .map(SystemTime::from)
    }

    /// The ticks in (`after`, `until`], oldest first; only the latest `most` of them.
    pub fn ticks_between(
        &self,
        after: SystemTime,
        until: SystemTime,
        most: usize,
    ) -> Vec<SystemTime> {
        let after = utc(after);
        let mut ticks: Vec<SystemTime> = self
            .0
            .iter_from(utc(until), croner::Direction::Backward)
            .take_while(|tick| *tick > after)
            .take(most)
            .map(SystemTime::from)
            .collect();
        ticks.reverse();
        ticks
    }
}

fn utc(time: SystemTime) -> chrono::DateTime<chrono::Utc> {
    // Ticks have whole seconds: a time inside a second is that second for the expression.
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    chrono::DateTime::from(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A tick as it is recorded and shown: RFC 3339 in UTC, whole seconds
/// (`2026-12-07T06:45:00Z`).
pub fn tick_text(tick: SystemTime) -> String {
    humantime::format_rfc3339_seconds(tick).to_string()
}

/// A recorded tick read back.
pub fn parse_tick(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// The idempotency key of the run schedule `index` of a flow starts at `tick`: starts of
/// one tick by several `serve` processes record one run.
pub fn tick_key(index: usize, tick: SystemTime) -> String {
    format!("schedule:{index}:{}", tick_text(tick))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        parse_tick(text).unwrap()
    }

    #[test]
    fn five_and_six_field_expressions_tick_in_utc() {
        let every_five = Cron::parse("*/5 * * * *").unwrap();
        assert_eq!(
            every_five.next_after(at("2026-12-07T06:41:03Z")),
            Some(at("2026-12-07T06:45:00Z"))
        );
        let every_second = Cron::parse("* * * * * *").unwrap();
        assert_eq!(
            every_second.next_after(at("2026-12-07T06:41:03Z")),
            Some(at("2026-12-07T06:41:04Z"))
        );
        assert!(Cron::parse("61 * * * *").is_err());
        assert!(Cron::parse("every minute").is_err());
    }

    #[test]
    fn ticks_between_keeps_the_latest_ones_oldest_first() {
        let hourly = Cron::parse("0 * * * *").unwrap();
        let ticks = hourly.ticks_between(at("2026-12-07T01:00:00Z"), at("2026-12-07T05:30:00Z"), 3);
        assert_eq!(
            ticks,
            vec![
                at("2026-12-07T03:00:00Z"),
                at("2026-12-07T04:00:00Z"),
                at("2026-12-07T05:00:00Z")
            ]
        );
        assert_eq!(
            CatchUp::One.pick(ticks.clone()),
            vec![at("2026-12-07T05:00:00Z")]
        );
        assert!(CatchUp::None.pick(ticks).is_empty());
        assert_eq!(
            tick_key(2, at("2026-12-07T05:00:00Z")),
            "schedule:2:2026-12-07T05:00:00Z"
        );
    }
}
