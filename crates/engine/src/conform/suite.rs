//! The calls of the suite: malformed input, each case, its repeat and its reverts, through
//! the runtime with the default limits and a fresh scratch directory per case, timing every
//! call for the limits check. Separate from the static inspection because this is where the
//! plugin's code runs, and where a trap, a deadline or a memory cap has to be told apart
//! from an error the plugin returned.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use flowhost_core::contract::{HostFault, Outcome, TaskError, escape};
use flowhost_core::flow::{Access, EffectiveLimits};
use flowhost_runtime::{Invocation, Plugin, Preopen, Sandbox};

use super::SCRATCH;
use super::cases::Case;
use super::report::{ConformReport, Status, list};

/// The task name used for the plugin's log lines during the suite.
const LOG_NAME: &str = "conform";

/// How one call ended, as the suite judges it.
enum Call {
    /// `execute` returned this JSON text (or `revert` succeeded: empty).
    Ok(String),
    /// The plugin returned this error.
    Error(TaskError),
    /// The host stopped the call: trap, deadline, memory cap, oversized result.
    Fault(TaskError),
}

impl Call {
    fn from(result: Result<String, TaskError>) -> Self {
        match result {
            Ok(json) => Self::Ok(json),
            Err(error) if error.host_fault().is_some_and(HostFault::stopped_by_host) => {
                Self::Fault(error)
            }
            Err(error) => Self::Error(error),
        }
    }
}

/// State shared by the checks of one run of the suite.
pub(super) struct Suite<'a> {
    plugin: &'a Plugin,
    slowest: Option<(String, Duration)>,
    over_limit: Vec<String>,
}

impl<'p> Suite<'p> {
    /// A suite calling `plugin`, no call made yet.
    pub(super) fn new(plugin: &'p Plugin) -> Self {
        Self {
            plugin,
            slowest: None,
            over_limit: Vec::new(),
        }
    }

    /// Check 7: every call the suite made ended within the default limits.
    pub(super) fn check_limits(self, report: &mut ConformReport) {
        match (self.over_limit.is_empty(), self.slowest) {
            (true, Some((call, took))) => report.push(
                "limits",
                Status::Pass,
                format!(
                    "every call ended within the default limits (slowest: {call}, {} ms)",
                    took.as_millis()
                ),
            ),
            (true, None) => report.push("limits", Status::Skip, "no call was made"),
            (false, _) => report.push(
                "limits",
                Status::Fail,
                format!("over the default limits: {}", self.over_limit.join("; ")),
            ),
        }
    }

    /// A fresh scratch directory and the sandbox granting it (pinned) at [`SCRATCH`].
    fn scratch() -> Option<(tempfile::TempDir, Sandbox)> {
        let scratch = tempfile::tempdir().ok()?;
        let dir = Preopen::pin(scratch.path(), SCRATCH, Access::ReadWrite).ok()?;
        Some((
            scratch,
            Sandbox {
                limits: EffectiveLimits::DEFAULT,
                dirs: vec![dir],
                ..Sandbox::bare()
            },
        ))
    }

    fn time(&mut self, call: &str, took: Duration, result: &Result<impl Sized, TaskError>) {
        if self
            .slowest
            .as_ref()
            .is_none_or(|(_, slowest)| took > *slowest)
        {
            self.slowest = Some((call.to_owned(), took));
        }
        if let Err(error) = result
            && error.host_fault().is_some_and(HostFault::is_limit)
        {
            self.over_limit.push(format!("{call}: {}", error.message));
        }
    }

    async fn execute(&mut self, call: &str, sandbox: &Sandbox, args: &str, config: &str) -> Call {
        let started = Instant::now();
        let invocation = Self::invocation(sandbox, args, config);
        let result = self.plugin.execute(invocation).await;
        self.time(call, started.elapsed(), &result);
        Call::from(result)
    }

    async fn revert(
        &mut self,
        call: &str,
        sandbox: &Sandbox,
        case: &Case,
        outcome: &Outcome,
    ) -> Call {
        let failures = match outcome {
            Outcome::Error(error) => vec![(case.name.clone(), error.clone())],
            Outcome::Result(_) => vec![(
                "a-later-task".to_owned(),
                TaskError {
                    code: "conformance-check".into(),
                    message: "a later task failed, so this one is reverted".into(),
                    details: None,
                },
            )],
        };
        let started = Instant::now();
        let (args, config) = (json(&case.args), json(&case.config));
        let invocation = Self::invocation(sandbox, &args, &config);
        let result = self.plugin.revert(invocation, outcome, &failures).await;
        self.time(call, started.elapsed(), &result);
        // A revert result (contract 0.2) must be JSON, like an execute result.
        let result = result.and_then(|returned| match returned {
            Some(text) if serde_json::from_str::<Value>(&text).is_err() => Err(TaskError {
                code: "invalid-revert-result".into(),
                message: format!(
                    "revert returned a result that is not JSON: {}",
                    escape(&text)
                ),
                details: None,
            }),
            _ => Ok(String::new()),
        });
        Call::from(result)
    }

    /// A call of the suite: run `conform`, first attempt.
    fn invocation<'a>(sandbox: &'a Sandbox, args: &'a str, config: &'a str) -> Invocation<'a> {
        Invocation {
            task: LOG_NAME,
            sandbox,
            warm: None,
            args,
            config,
            run_id: "conform",
            attempt: 1,
            progress: None,
            order: 0,
        }
    }

    /// Check 3: every malformed input must come back as a task-error. `valid` is a case
    /// expected to succeed, whose arguments are the base that one flaw at a time is put into.
    pub(super) async fn check_inputs(&mut self, report: &mut ConformReport, valid: Option<&Case>) {
        let Some((_scratch, sandbox)) = Self::scratch() else {
            report.push("input", Status::Skip, "cannot create a scratch directory");
            return;
        };
        let base = valid.map(|c| c.args.clone()).unwrap_or_default();
        let config = valid
            .map(|c| json(&c.config))
            .unwrap_or_else(|| "{}".into());
        let requires = self.plugin.info().requires.clone();

        let mut inputs: Vec<(&str, String, String, String)> = vec![(
            "input.args-not-json",
            "args that are not JSON".into(),
            "this is { not JSON".into(),
            config.clone(),
        )];
        for name in &requires {
            let mut args = base.clone();
            args.remove(name);
            inputs.push((
                "input.missing-required",
                format!("args without `{name}`"),
                json(&args),
                config.clone(),
            ));
        }
        if let Some(case) = valid {
            for name in &requires {
                let Some(value) = case.args.get(name) else {
                    continue;
                };
                let mut args = base.clone();
                args.insert(name.clone(), wrong_type(value));
                inputs.push((
                    "input.wrong-type",
                    format!("args with `{name}` = {}", args[name]),
                    json(&args),
                    config.clone(),
                ));
            }
        }
        for bad in ["[1, 2]", "\"text\"", "42"] {
            inputs.push((
                "input.config-not-object",
                format!("config {bad}"),
                json(&base),
                bad.into(),
            ));
        }

        let mut verdicts: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut tried: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, what, args, config) in &inputs {
            *tried.entry(id).or_default() += 1;
            let problem = match self
                .execute(&format!("{id} ({what})"), &sandbox, args, config)
                .await
            {
                Call::Error(_) => continue,
                Call::Ok(result) => format!("{what}: returned {result} instead of a task-error"),
                Call::Fault(error) => format!("{what}: {error}"),
            };
            verdicts.entry(id).or_default().push(problem);
        }
        for id in [
            "input.args-not-json",
            "input.missing-required",
            "input.wrong-type",
            "input.config-not-object",
        ] {
            match (tried.get(id), verdicts.get(id)) {
                (None, _) if id == "input.missing-required" => {
                    report.push(id, Status::Skip, "the task requires no argument")
                }
                (None, _) => report.push(
                    id,
                    Status::Skip,
                    "needs a cases file with a case that succeeds, to know each argument's type",
                ),
                (Some(n), None) => report.push(
                    id,
                    Status::Pass,
                    format!("{n} malformed input(s), each answered with a task-error"),
                ),
                (Some(_), Some(problems)) => report.push(id, Status::Fail, problems.join("; ")),
            }
        }
    }

    /// Checks 4–6 for one case: the result, its repeatability, and revert.
    pub(super) async fn check_case(&mut self, report: &mut ConformReport, case: &Case) {
        let Some((_scratch, sandbox)) = Self::scratch() else {
            report.push(
                format!("case.{}", case.name),
                Status::Skip,
                "cannot create a scratch directory",
            );
            return;
        };
        let (args, config) = (json(&case.args), json(&case.config));
        let first = self
            .execute(&format!("case {}", case.name), &sandbox, &args, &config)
            .await;
        let (id, repeat_id, revert_id) = (
            format!("case.{}", case.name),
            format!("repeat.{}", case.name),
            format!("revert.{}", case.name),
        );
        let outcome = match &first {
            Call::Fault(error) => {
                report.push(
                    &id,
                    Status::Fail,
                    format!("execute did not end by itself: {error}"),
                );
                report.push(repeat_id, Status::Skip, "the case failed");
                report.push(revert_id, Status::Skip, "the case failed");
                return;
            }
            Call::Error(error) => {
                match &case.expect_error {
                    Some(code) if *code == error.code => {
                        report.push(&id, Status::Pass, format!("failed as expected: {error}"))
                    }
                    Some(code) => report.push(
                        &id,
                        Status::Fail,
                        format!("expected error `{code}`, got {error}"),
                    ),
                    None => {
                        report.push(&id, Status::Fail, format!("expected a result, got {error}"))
                    }
                }
                Outcome::Error(error.clone())
            }
            Call::Ok(result) => {
                match self.judge_result(case, result) {
                    Ok(reason) => report.push(&id, Status::Pass, reason),
                    Err(reason) => report.push(&id, Status::Fail, reason),
                }
                Outcome::Result(result.clone())
            }
        };

        if !case.deterministic {
            report.push(
                repeat_id,
                Status::Skip,
                "the case is marked `deterministic = false`",
            );
        } else {
            let second = self
                .execute(
                    &format!("case {} again", case.name),
                    &sandbox,
                    &args,
                    &config,
                )
                .await;
            match same(&first, &second) {
                Ok(()) => report.push(
                    repeat_id,
                    Status::Pass,
                    "the same input gave the same outcome",
                ),
                Err(reason) => report.push(repeat_id, Status::Fail, reason),
            }
        }

        let mut problems = Vec::new();
        if let Outcome::Result(_) = outcome {
            for attempt in ["first", "second"] {
                let call = format!("revert {} ({attempt})", case.name);
                if let Some(problem) =
                    revert_problem(self.revert(&call, &sandbox, case, &outcome).await)
                {
                    let hint = if attempt == "second" {
                        " (revert must be idempotent)"
                    } else {
                        ""
                    };
                    problems.push(format!("{attempt} revert after a success: {problem}{hint}"));
                }
            }
        }
        let failed = match &outcome {
            Outcome::Error(error) => Outcome::Error(error.clone()),
            Outcome::Result(_) => {
                Outcome::Error(HostFault::DeadlineExceeded.error("the host stopped execute"))
            }
        };
        let call = format!("revert {} (failure outcome)", case.name);
        if let Some(problem) = revert_problem(self.revert(&call, &sandbox, case, &failed).await) {
            problems.push(format!("revert with a failure outcome: {problem}"));
        }
        if problems.is_empty() {
            let what = if matches!(outcome, Outcome::Result(_)) {
                "revert succeeded twice after a success, and with a failure outcome"
            } else {
                "revert succeeded with the failure outcome"
            };
            report.push(revert_id, Status::Pass, what);
        } else {
            report.push(revert_id, Status::Fail, problems.join("; "));
        }
    }

    /// The result must be JSON, hold every provided name, and match the expectation.
    fn judge_result(&self, case: &Case, result: &str) -> Result<String, String> {
        if let Some(code) = &case.expect_error {
            return Err(format!("expected error `{code}`, got the result {result}"));
        }
        let value: Value = serde_json::from_str(result)
            .map_err(|e| format!("the result is not JSON ({e}): {result}"))?;
        let provides = &self.plugin.info().provides;
        if provides.len() > 1 {
            let missing: Vec<String> = provides
                .iter()
                .filter(|name| value.get(name.as_str()).is_none())
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "the result {result} misses provided name(s) {}: with several provides it must be an object holding each",
                    list(&missing)
                ));
            }
        }
        match &case.expect {
            Some(expected) if !same_json(expected, &value) => {
                Err(format!("expected {expected}, got {value}"))
            }
            Some(_) => Ok(format!("returned the expected {value}")),
            None => Ok(format!("returned {value}")),
        }
    }
}

fn revert_problem(call: Call) -> Option<String> {
    match call {
        Call::Ok(_) => None,
        Call::Error(error) | Call::Fault(error) => Some(error.to_string()),
    }
}

/// Whether two executions of the same input ended the same way.
fn same(first: &Call, second: &Call) -> Result<(), String> {
    match (first, second) {
        (Call::Ok(a), Call::Ok(b)) => {
            let (a, b) = (
                serde_json::from_str::<Value>(a).ok(),
                serde_json::from_str::<Value>(b).ok(),
            );
            let equal = match (&a, &b) {
                (Some(a), Some(b)) => same_json(a, b),
                (a, b) => a == b,
            };
            if equal {
                Ok(())
            } else {
                Err(format!(
                    "the same input gave {} then {} (mark the case `deterministic = false` if that is intended)",
                    shown(a),
                    shown(b)
                ))
            }
        }
        (Call::Error(a), Call::Error(b)) if a.code == b.code => Ok(()),
        (a, b) => Err(format!(
            "the same input ended {} then {}",
            describe_call(a),
            describe_call(b)
        )),
    }
}

/// JSON equality with numbers compared by value: `1` and `1.0` are the same number, though
/// languages write them differently (JavaScript has no integers, Python and Rust keep the
/// float they computed), and JSON itself does not tell them apart.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| same_json(x, y)))
        }
        _ => a == b,
    }
}

fn shown(value: Option<Value>) -> String {
    value.map_or_else(|| "non-JSON text".into(), |v| v.to_string())
}

fn describe_call(call: &Call) -> String {
    match call {
        Call::Ok(result) => format!("with the result {result}"),
        Call::Error(error) | Call::Fault(error) => format!("with {error}"),
    }
}

/// A value of another JSON type than `value`, to test type checking of arguments.
fn wrong_type(value: &Value) -> Value {
    match value {
        Value::String(_) => Value::from(12345),
        _ => Value::from("not the expected type"),
    }
}

fn json(map: &Map<String, Value>) -> String {
    Value::Object(map.clone()).to_string()
}
