//! The plugin conformance suite: does a component honour the `flowhost:task` contract?
//!
//! A plugin author's promise is checked the way the engine will rely on it, by calling the
//! plugin through the same runtime, sandbox and limits a flow uses:
//!
//! 1. the file is a component exporting the contract at a version the host accepts, and it
//!    imports nothing the host does not provide (every offending import is named);
//! 2. `describe()` gives a name, a version, valid and distinct argument names and at least
//!    one provided name (unless the cases file allows none);
//! 3. malformed input (arguments that are not JSON, lack a required name or hold a wrong
//!    type; config that is not an object) comes back as a `task-error`, never a trap;
//! 4. each case of the cases file returns JSON holding every provided name and matching the
//!    expectation, or fails with the expected error code;
//! 5. the same input twice gives the same result (unless the case says it is not
//!    deterministic);
//! 6. `revert` succeeds after a success, again for the same outcome (idempotence), and
//!    with a failure outcome;
//! 7. every call finishes within the default limits.
//!
//! [`conform`] returns a [`ConformReport`], so a plugin author can run the suite from
//! `cargo test`; `flowhost conform` prints the same report.
//!
//! Every call gets a writable scratch directory at [`SCRATCH`], fresh for each case and
//! shared by that case's `execute` and `revert` calls, so a task with file side effects can
//! show that its revert undoes them and can run twice.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Engine;
use flowhost_core::class::{Classify, ErrorClass};
use flowhost_core::contract::{CONTRACT, HostFault, Outcome, TaskError, accepts_export, escape};
use flowhost_core::flow::{Access, EffectiveLimits};
use flowhost_runtime::{Invocation, Plugin, PluginError, Preopen, Sandbox};

/// Where the scratch directory appears inside the plugin during the suite.
pub const SCRATCH: &str = "/scratch";

/// WASI 0.2 packages the host links (`wasmtime_wasi::p2::add_to_linker_async`); an import
/// from anywhere else cannot be satisfied.
const HOST_PACKAGES: [&str; 6] = [
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
];

/// The task name used for the plugin's log lines during the suite.
const LOG_NAME: &str = "conform";

/// The cases file: known inputs with their expected outcome. Without one the suite still
/// checks the component, `describe()` and malformed input, but skips what needs a valid input.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cases {
    /// Set when the task deliberately provides no name (it works only by side effect).
    #[serde(default)]
    pub allow_no_provides: bool,
    /// The cases, in file order.
    #[serde(default, rename = "case")]
    pub cases: Vec<Case>,
}

/// One known input of the cases file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Names the case in the report.
    pub name: String,
    /// The `args` object handed to `execute`.
    #[serde(default)]
    pub args: Map<String, Value>,
    /// The `config` object handed to `execute`.
    #[serde(default)]
    pub config: Map<String, Value>,
    /// The exact result expected, when the result is known in advance.
    pub expect: Option<Value>,
    /// The error code expected instead of a result.
    pub expect_error: Option<String>,
    /// False for tasks whose result differs between runs (e.g. they mint ids): the repeat
    /// check is skipped for this case.
    #[serde(default = "yes")]
    pub deterministic: bool,
}

fn yes() -> bool {
    true
}

/// The cases file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    /// The file could not be read.
    #[error("cannot read cases file {}: {source}", path.display())]
    Read {
        /// The cases file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, holds unknown keys, or a case contradicts itself.
    #[error("invalid cases file {}: {message}", path.display())]
    Parse {
        /// The cases file.
        path: PathBuf,
        /// What is wrong, with line and column where the parser gave them.
        message: String,
    },
}

impl Cases {
    /// Reads a cases file (TOML, one `[[case]]` table per case).
    pub fn from_file(path: &Path) -> Result<Self, CasesError> {
        let text = std::fs::read_to_string(path).map_err(|source| CasesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse = |message: String| CasesError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let cases: Self = toml::from_str(&text).map_err(|e| parse(e.to_string()))?;
        let mut names = HashSet::new();
        for case in &cases.cases {
            if !names.insert(case.name.as_str()) {
                return Err(parse(format!("case `{}` appears twice", case.name)));
            }
            if case.expect.is_some() && case.expect_error.is_some() {
                return Err(parse(format!(
                    "case `{}` sets both `expect` and `expect_error`",
                    case.name
                )));
            }
        }
        Ok(cases)
    }
}

/// How one check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The plugin honours this part of the contract.
    Pass,
    /// It does not; the reason says how.
    Fail,
    /// The check could not run (no cases file, or an earlier check failed).
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::Skip => "skip",
        })
    }
}

/// One check of the suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `imports`, `input.args-not-json`, `revert.small-order`.
    pub id: String,
    /// How it ended.
    pub status: Status,
    /// Why, in a sentence an author can act on.
    pub reason: String,
}

/// Everything the suite found about one plugin.
#[derive(Debug, Clone, Serialize)]
pub struct ConformReport {
    /// The plugin file.
    pub plugin: PathBuf,
    /// Every check, in the order run.
    pub checks: Vec<Check>,
}

impl ConformReport {
    /// True when no check failed (skipped checks do not fail the plugin).
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// The check with this id, to assert on in tests.
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    fn push(&mut self, id: impl Into<String>, status: Status, reason: impl Into<String>) {
        self.checks.push(Check {
            id: id.into(),
            status,
            reason: reason.into(),
        });
    }
}

impl fmt::Display for ConformReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
        for check in &self.checks {
            // Reasons quote the plugin's own errors: escaped, one line per check.
            writeln!(
                f,
                "{:<4}  {:<width$}  {}",
                check.status,
                escape(&check.id),
                escape(&check.reason)
            )?;
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        write!(
            f,
            "{}: {} passed, {} failed, {} skipped",
            self.plugin.display(),
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Skip)
        )
    }
}

/// Runs the whole suite on the plugin at `path`, with `cases` when given. Never fails: a
/// plugin that cannot even be loaded gets a report naming why, with the later checks skipped.
pub async fn conform(engine: &Engine, path: &Path, cases: Option<&Cases>) -> ConformReport {
    let mut report = ConformReport {
        plugin: path.to_path_buf(),
        checks: Vec::new(),
    };
    let plugin = match engine.plugin(path).await {
        Ok(plugin) => plugin,
        Err(error) => {
            report_load_failure(&mut report, path, &error);
            for id in ["describe", "input", "cases", "revert", "limits"] {
                report.push(id, Status::Skip, "the plugin did not load");
            }
            return report;
        }
    };
    report.push("component", Status::Pass, "a valid WebAssembly component");
    report.push(
        "contract",
        Status::Pass,
        contract_note(plugin.contract_version()),
    );
    report.push(
        "imports",
        Status::Pass,
        "imports only what the host provides",
    );
    check_describe(&mut report, &plugin, cases);
    let mut suite = Suite {
        plugin: &plugin,
        slowest: None,
        over_limit: Vec::new(),
    };
    suite
        .check_inputs(
            &mut report,
            cases.and_then(|c| c.cases.iter().find(|c| c.expect_error.is_none())),
        )
        .await;
    match cases {
        Some(cases) if !cases.cases.is_empty() => {
            for case in &cases.cases {
                suite.check_case(&mut report, case).await;
            }
        }
        _ => {
            report.push(
                "cases",
                Status::Skip,
                "no cases file: give one with --cases to check results",
            );
            report.push(
                "revert",
                Status::Skip,
                "no cases file: revert needs the outcome of a known input",
            );
        }
    }
    match (suite.over_limit.is_empty(), suite.slowest) {
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
            format!("over the default limits: {}", suite.over_limit.join("; ")),
        ),
    }
    report
}

/// What the contract check says of a plugin that loaded, by the version it speaks.
fn contract_note(version: &str) -> String {
    if CONTRACT.ends_with(&format!("@{version}.0")) {
        format!("exports `{CONTRACT}` (contract {version}, the current one)")
    } else {
        format!(
            "exports contract {version}, which this host still accepts; the current one is `{CONTRACT}` \
             (revert results, progress, structured logs, the run id and attempt)"
        )
    }
}

/// The contract versions this host accepts, for messages: "`flowhost:task/task@0.1.x`, …".
fn accepted() -> String {
    flowhost_core::contract::ACCEPTED_VERSIONS
        .iter()
        .map(|v| format!("`{v}x`"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Names what is wrong with a component that did not load: not a component, the wrong
/// contract, or every import the host cannot satisfy.
fn report_load_failure(report: &mut ConformReport, path: &Path, error: &PluginError) {
    match error {
        PluginError::Read { .. }
        | PluginError::NotAPluginFile { .. }
        | PluginError::NotAComponent { .. } => {
            report.push("component", Status::Fail, error.to_string());
            report.push("contract", Status::Skip, "not a component");
            report.push("imports", Status::Skip, "not a component");
        }
        PluginError::UnsupportedImport { import, .. }
        | PluginError::NotATask { reason: import, .. } => {
            report.push("component", Status::Pass, "a valid WebAssembly component");
            let (imports, exports) = match component_world(path) {
                Ok(world) => world,
                Err(reason) => {
                    report.push("contract", Status::Fail, reason);
                    return;
                }
            };
            match exports.iter().find(|e| e.starts_with("flowhost:task/")) {
                Some(name) if accepts_export(name) => {
                    report.push("contract", Status::Pass, format!("exports `{name}`"))
                }
                Some(name) => report.push(
                    "contract",
                    Status::Fail,
                    format!(
                        "exports `{name}`, but this host accepts only {}",
                        accepted()
                    ),
                ),
                None => report.push(
                    "contract",
                    Status::Fail,
                    format!(
                        "does not export `{CONTRACT}`; it exports: {}",
                        list(&exports)
                    ),
                ),
            }
            let mut offending: Vec<String> = imports.into_iter().filter(|i| !provided(i)).collect();
            if matches!(error, PluginError::UnsupportedImport { .. }) {
                let named = import.split('#').next().unwrap_or(import).to_owned();
                if !offending.contains(&named) {
                    offending.push(named);
                }
            }
            if offending.is_empty() {
                report.push(
                    "imports",
                    Status::Pass,
                    "imports only what the host provides",
                );
            } else {
                report.push(
                    "imports",
                    Status::Fail,
                    format!(
                        "imports what the host does not provide: {}",
                        list(&offending)
                    ),
                );
            }
        }
        PluginError::Describe { reason, .. } => {
            report.push("component", Status::Pass, "a valid WebAssembly component");
            report.push(
                "contract",
                Status::Pass,
                "exports an accepted version of the task contract",
            );
            report.push(
                "imports",
                Status::Pass,
                "imports only what the host provides",
            );
            report.push(
                "describe",
                Status::Fail,
                format!("describe() failed: {reason}"),
            );
        }
        PluginError::Unavailable { .. } => {
            report.push("component", Status::Pass, "a valid WebAssembly component");
            report.push("describe", Status::Skip, error.to_string());
        }
    }
}

/// The component's top-level import and export names, read with a plain engine (only on
/// the failure path, so the runtime's compiled-component handling stays the only one).
fn component_world(path: &Path) -> Result<(Vec<String>, Vec<String>), String> {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, path)
        .map_err(|e| format!("cannot read the component's imports and exports: {e:#}"))?;
    let ty = component.component_type();
    let imports = ty
        .imports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports = ty
        .exports(&engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    Ok((imports, exports))
}

fn provided(import: &str) -> bool {
    (HOST_PACKAGES.iter().any(|p| import.starts_with(p)) && import.contains("@0.2."))
        || import.starts_with("flowhost:task/host@0.2.")
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "nothing".into();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn check_describe(report: &mut ConformReport, plugin: &Plugin, cases: Option<&Cases>) {
    let info = plugin.info();
    let mut problems = Vec::new();
    if info.name.trim().is_empty() {
        problems.push("the name is empty".to_owned());
    }
    if info.version.trim().is_empty() {
        problems.push("the version is empty".to_owned());
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (list, names) in [
        ("requires", &info.requires),
        ("optional", &info.optional),
        ("provides", &info.provides),
    ] {
        let mut in_list = HashSet::new();
        for name in names {
            if !valid_name(name) {
                problems.push(format!(
                    "{list} name `{name}` is not a valid name (a letter or `_`, then letters, digits, `_`, `-`, `.`)"
                ));
            }
            if !in_list.insert(name.as_str()) {
                problems.push(format!("{list} lists `{name}` twice"));
            } else if list != "provides"
                && let Some(other) = seen.insert(name, list)
            {
                problems.push(format!("`{name}` is in both {other} and {list}"));
            }
        }
    }
    if info.provides.is_empty() && !cases.is_some_and(|c| c.allow_no_provides) {
        problems.push(
            "provides is empty: the result would be dropped (set `allow_no_provides = true` in the cases file if the task works only by side effect)"
                .to_owned(),
        );
    }
    if problems.is_empty() {
        report.push(
            "describe",
            Status::Pass,
            format!(
                "{} {}: requires [{}], optional [{}], provides [{}]",
                info.name,
                info.version,
                info.requires.join(", "),
                info.optional.join(", "),
                info.provides.join(", ")
            ),
        );
    } else {
        report.push("describe", Status::Fail, problems.join("; "));
    }
}

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
struct Suite<'a> {
    plugin: &'a Plugin,
    slowest: Option<(String, Duration)>,
    over_limit: Vec<String>,
}

impl Suite<'_> {
    /// A fresh scratch directory and the sandbox granting it (pinned) at [`SCRATCH`].
    fn scratch() -> Option<(tempfile::TempDir, Sandbox)> {
        let scratch = tempfile::tempdir().ok()?;
        let dir = Preopen::pin(scratch.path(), SCRATCH, Access::ReadWrite).ok()?;
        Some((
            scratch,
            Sandbox {
                limits: EffectiveLimits::DEFAULT,
                dirs: vec![dir],
                env: Vec::new(),
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
        }
    }

    /// Check 3: every malformed input must come back as a task-error. `valid` is a case
    /// expected to succeed, whose arguments are the base that one flaw at a time is put into.
    async fn check_inputs(&mut self, report: &mut ConformReport, valid: Option<&Case>) {
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
    async fn check_case(&mut self, report: &mut ConformReport, case: &Case) {
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

impl Classify for CasesError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Read { .. } => ErrorClass::Unreadable,
            _ => ErrorClass::Invalid,
        }
    }
}
