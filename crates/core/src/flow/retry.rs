//! Retry policies: how often a failed task entry is executed again before its flow reverts,
//! after which pause, for which error codes.
//!
//! Control planes live on transient failures — a scheduler briefly unavailable, a lock held
//! by another writer — and without retries every blip reverts a whole flow. A policy is set
//! per entry (`retry = { … }`) or for the whole flow (a top-level `[retry]` table); each field
//! an entry leaves out falls back to the flow's, then to the built-in default.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Error codes that are never retried unless a policy's `on` names them: the input was
/// wrong, or the plugin's limits were hit in a way that repeats identically (a fuel budget,
/// a memory cap, a result too large), so another attempt would fail the same way.
pub const NOT_RETRIED_BY_DEFAULT: &[&str] = &[
    "invalid-args",
    "invalid-config",
    "missing-arguments",
    "args-too-large",
    "result-too-large",
    "invalid-result",
    "missing-provides",
    "fuel-exhausted",
    "memory-limit",
    "http-request-limit",
    "http-body-limit",
];

/// A retry policy as written: every field optional, so that an entry's policy can fall back
/// field by field to the flow's `[retry]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Executions in all, the first included (1 = no retry). Default 3 once a policy is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Pause before the second attempt, in milliseconds. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// Longest pause between attempts, in milliseconds. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
    /// Each pause is the previous one times this (at least 1.0). Default 2.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// Whether each pause is drawn at random between half of it and all of it, so that many
    /// runs failing together do not retry together. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
    /// Retry only errors with these codes (this includes codes that are otherwise never
    /// retried, see [`NOT_RETRIED_BY_DEFAULT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<String>>,
    /// Retry every error except these codes (and those of [`NOT_RETRIED_BY_DEFAULT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<Vec<String>>,
    /// Revert each failed attempt before the next one. Default false: the task is executed
    /// again as it stands, and reverted once if the flow reverts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_between: Option<bool>,
}

impl Retry {
    /// A policy of `attempts` executions in all, other fields by default.
    pub fn attempts(attempts: u32) -> Self {
        Self {
            attempts: Some(attempts),
            ..Self::default()
        }
    }

    /// Sets the first pause and the longest one.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff_ms = Some(first.as_millis() as u64);
        self.max_backoff_ms = Some(max.as_millis() as u64);
        self
    }

    /// Sets the factor between successive pauses.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = Some(multiplier);
        self
    }

    /// Randomises each pause between half of it and all of it.
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Retries only errors with these codes.
    pub fn on<I: IntoIterator<Item = S>, S: Into<String>>(mut self, codes: I) -> Self {
        self.on = Some(codes.into_iter().map(Into::into).collect());
        self
    }

    /// Retries every error but these codes (and the never-retried ones).
    pub fn except<I: IntoIterator<Item = S>, S: Into<String>>(mut self, codes: I) -> Self {
        self.except = Some(codes.into_iter().map(Into::into).collect());
        self
    }

    /// Reverts each failed attempt before the next.
    pub fn revert_between(mut self, revert: bool) -> Self {
        self.revert_between = Some(revert);
        self
    }

    /// This policy with every unset field taken from `default` (the flow's).
    pub fn over(&self, default: &Retry) -> Retry {
        // `on` and `except` are one choice: an entry choosing either replaces the flow's.
        let (on, except) = if self.on.is_some() || self.except.is_some() {
            (self.on.clone(), self.except.clone())
        } else {
            (default.on.clone(), default.except.clone())
        };
        Retry {
            attempts: self.attempts.or(default.attempts),
            backoff_ms: self.backoff_ms.or(default.backoff_ms),
            max_backoff_ms: self.max_backoff_ms.or(default.max_backoff_ms),
            multiplier: self.multiplier.or(default.multiplier),
            jitter: self.jitter.or(default.jitter),
            on,
            except,
            revert_between: self.revert_between.or(default.revert_between),
        }
    }

    /// What is wrong with this policy, as `(field, message)` pairs, the field as the flow
    /// file spells it (`retry.attempts`).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.attempts == Some(0) {
            problems.push((
                "retry.attempts",
                "`attempts` counts executions including the first: it must be at least 1".into(),
            ));
        }
        if let Some(m) = self.multiplier
            && !(m.is_finite() && m >= 1.0)
        {
            problems.push((
                "retry.multiplier",
                format!("`multiplier` must be a number of at least 1.0, not {m}"),
            ));
        }
        if let (Some(first), Some(max)) = (self.backoff_ms, self.max_backoff_ms)
            && first > max
        {
            problems.push((
                "retry.backoff_ms",
                format!("`backoff_ms` ({first}) is above `max_backoff_ms` ({max})"),
            ));
        }
        if self.on.is_some() && self.except.is_some() {
            problems.push(("retry.on", "set `on` or `except`, not both".into()));
        }
        for (field, codes) in [("retry.on", &self.on), ("retry.except", &self.except)] {
            if codes
                .as_ref()
                .is_some_and(|codes| codes.iter().any(|c| c.trim().is_empty()))
            {
                problems.push((field, format!("`{field}` holds an empty error code")));
            }
        }
        problems
    }

    /// The policy with defaults filled in.
    pub fn effective(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.attempts.unwrap_or(3).max(1),
            backoff: Duration::from_millis(self.backoff_ms.unwrap_or(100)),
            max_backoff: Duration::from_millis(self.max_backoff_ms.unwrap_or(10_000)),
            multiplier: self
                .multiplier
                .filter(|m| m.is_finite() && *m >= 1.0)
                .unwrap_or(2.0),
            jitter: self.jitter.unwrap_or(false),
            on: self.on.clone(),
            except: self.except.clone().unwrap_or_default(),
            revert_between: self.revert_between.unwrap_or(false),
        }
    }
}

/// A retry policy with every field decided: what the engine applies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Executions in all, the first included.
    pub attempts: u32,
    /// Pause after the first failed attempt.
    #[serde(rename = "backoff_ms", serialize_with = "millis")]
    pub backoff: Duration,
    /// Longest pause.
    #[serde(rename = "max_backoff_ms", serialize_with = "millis")]
    pub max_backoff: Duration,
    /// Factor between successive pauses.
    pub multiplier: f64,
    /// Whether pauses are drawn between half and all of their length.
    pub jitter: bool,
    /// When set, only these codes are retried.
    pub on: Option<Vec<String>>,
    /// Codes not retried besides [`NOT_RETRIED_BY_DEFAULT`].
    pub except: Vec<String>,
    /// Whether each failed attempt is reverted before the next.
    pub revert_between: bool,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl RetryPolicy {
    /// No retry: one attempt.
    pub fn none() -> Self {
        Retry::attempts(1).effective()
    }

    /// Whether an error with `code` may be retried at all under this policy.
    pub fn retries_code(&self, code: &str) -> bool {
        match &self.on {
            Some(on) => on.iter().any(|c| c == code),
            None => {
                !NOT_RETRIED_BY_DEFAULT.contains(&code) && !self.except.iter().any(|c| c == code)
            }
        }
    }

    /// The pause before attempt `failed + 1`, when attempt `failed` (from 1) failed with
    /// `code`; `None` when it is not retried (the code is not retried, or no attempt is left).
    pub fn delay_after(&self, failed: u32, code: &str) -> Option<Duration> {
        if failed >= self.attempts || !self.retries_code(code) {
            return None;
        }
        let exponent = i32::try_from(failed.saturating_sub(1)).unwrap_or(i32::MAX);
        let nominal = self.backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = nominal.min(self.max_backoff.as_secs_f64());
        let pause = if self.jitter {
            capped * (0.5 + 0.5 * unit_random())
        } else {
            capped
        };
        Some(Duration::from_secs_f64(pause.max(0.0)))
    }
}

/// A random number in [0, 1) from the standard library's per-process random hash keys:
/// jitter needs spread, not cryptographic quality, and this needs no dependency.
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_by_the_multiplier_up_to_the_cap() {
        let policy = Retry::attempts(6)
            .backoff(Duration::from_millis(100), Duration::from_millis(500))
            .effective();
        let pauses: Vec<_> = (1..6)
            .map(|k| policy.delay_after(k, "unavailable").unwrap().as_millis())
            .collect();
        assert_eq!(pauses, [100, 200, 400, 500, 500]);
        assert_eq!(
            policy.delay_after(6, "unavailable"),
            None,
            "the sixth attempt was the last"
        );
    }

    #[test]
    fn input_errors_are_not_retried_unless_named_in_on() {
        let default = Retry::attempts(3).effective();
        assert!(default.retries_code("unavailable"));
        assert!(!default.retries_code("invalid-args"));
        let except = Retry::attempts(3).except(["over-quota"]).effective();
        assert!(!except.retries_code("over-quota") && !except.retries_code("invalid-config"));
        let on = Retry::attempts(3).on(["invalid-args"]).effective();
        assert!(on.retries_code("invalid-args") && !on.retries_code("unavailable"));
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_pause() {
        let policy = Retry::attempts(2)
            .backoff(Duration::from_millis(1000), Duration::from_millis(1000))
            .jitter(true)
            .effective();
        for _ in 0..100 {
            let ms = policy.delay_after(1, "x").unwrap().as_millis();
            assert!((500..=1000).contains(&ms), "{ms}");
        }
    }

    #[test]
    fn an_entry_falls_back_to_the_flow_field_by_field() {
        let flow = Retry::attempts(5).on(["unavailable"]).revert_between(true);
        let entry = Retry {
            backoff_ms: Some(7),
            ..Retry::default()
        }
        .over(&flow);
        assert_eq!(
            (entry.attempts, entry.backoff_ms, entry.revert_between),
            (Some(5), Some(7), Some(true))
        );
        assert_eq!(entry.on, Some(vec!["unavailable".to_owned()]));
        let own = Retry::default().except(["x"]).over(&flow);
        assert_eq!((own.on, own.except), (None, Some(vec!["x".to_owned()])));
    }

    #[test]
    fn impossible_policies_name_their_field() {
        let bad = Retry {
            attempts: Some(0),
            multiplier: Some(0.5),
            backoff_ms: Some(10),
            max_backoff_ms: Some(5),
            ..Retry::default()
        }
        .on(["a"])
        .except(["b"]);
        let fields: Vec<_> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "retry.attempts",
                "retry.multiplier",
                "retry.backoff_ms",
                "retry.on"
            ]
        );
    }
}
