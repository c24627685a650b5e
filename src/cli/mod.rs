//! The command line: argument definitions, the [`Context`] every command gets, and one
//! module per subcommand. Commands present; the library decides.

pub mod call;
pub mod check;
pub mod compile;
pub mod completions;
pub mod conform;
pub mod db;
pub mod describe;
pub mod exit;
pub mod log;
pub mod new;
pub mod output;
pub mod run;
pub mod runs;
pub mod schedules;
pub mod serve;
pub mod submit;
pub mod worker;
pub mod workers;

use std::path::PathBuf;
use std::sync::LazyLock;

use anyhow::{Context as _, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use flowhost::{EngineConfig, Store};
use serde_json::Value;

use exit::{InputError, UsageError};
use log::{LogFormat, LogSettings};
use output::ColorChoice;
pub use output::print_json;

/// Runs flows of sandboxed WebAssembly tasks: each task starts after the previous one
/// finished, results flow through a store of named JSON values, and a failure reverts every
/// task that ran, in reverse order.
#[derive(Debug, Parser)]
#[command(name = "flowhost", after_help = exit::EXIT_CODES)]
pub struct Cli {
    /// More log output: -v adds flowhost's debug lines (task results among them), -vv
    /// everything's, wasmtime's and cranelift's included. FLOWHOST_LOG (a tracing filter,
    /// e.g. `flowhost=debug`) replaces -v and -q.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log lines as readable text or as one JSON object per line (for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
    /// Colour on stderr: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
    /// Where compiled plugins are cached [default: the user cache directory, e.g.
    /// ~/.cache/flowhost].
    #[arg(long, global = true, value_name = "DIR", env = "FLOWHOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every plugin afresh; neither read nor write the cache. Wins over --cache-dir.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// A PEM file of CA certificates that tasks' `https` requests trust besides the
    /// system's roots (a private CA).
    #[arg(long, global = true, value_name = "FILE", env = "FLOWHOST_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Export one OpenTelemetry trace per run (`run`, `runs resume`, `serve`, `worker`) to this
    /// OTLP/HTTP collector, e.g. http://127.0.0.1:4318 (traces go to its /v1/traces).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    pub otlp_endpoint: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// `flowhost --version`: the contract versions plugins may export and the wasmtime inside.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let accepted: Vec<String> = flowhost::ACCEPTED_VERSIONS
        .iter()
        .map(|prefix| format!("{prefix}x"))
        .collect();
    format!(
        "{}\ncontract: {} (accepts plugins exporting {})\nwasmtime: {}",
        env!("CARGO_PKG_VERSION"),
        flowhost::CONTRACT,
        accepted.join(", "),
        flowhost::WASMTIME_VERSION
    )
});

impl Cli {
    /// Parses the process's arguments, with clap's help and errors coloured as `--color`
    /// says (read ahead of parsing for that reason).
    pub fn try_parse_args() -> Result<Self, clap::Error> {
        let color = ColorChoice::from_args(std::env::args_os());
        let mut matches = Self::command()
            .version(VERSION.as_str())
            .color(color.for_clap())
            .try_get_matches()?;
        Self::from_arg_matches_mut(&mut matches)
    }

    /// What the global flags ask of the log.
    pub fn log_settings(&self) -> LogSettings {
        LogSettings {
            verbose: self.verbose,
            quiet: self.quiet,
            format: self.log_format,
            color: self.color,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate and run a flow; print the final store (or the fetched names) on stdout and
    /// every state transition on stderr.
    Run(run::RunArgs),
    /// Validate a flow without running anything: load and describe every plugin, check every
    /// requirement, show each task's arguments, limits and grants.
    Check(check::CheckArgs),
    /// Show what a plugin declares: name, version, requires, optional, provides.
    Describe(describe::DescribeArgs),
    /// Compile plugins into the cache, so that later runs start without compiling.
    Compile(compile::CompileArgs),
    /// Check that a plugin honours the task contract: one line per check, exit 1 when any
    /// check fails.
    Conform(conform::ConformArgs),
    /// Inspect, resume and prune the runs recorded in the run database.
    Runs(runs::RunsArgs),
    /// Call one function of a plugin (execute, revert, describe) under a task's sandbox and
    /// limits, printing the result or the error as JSON; or replay a recorded task's call
    /// with --from-run RUN_ID --task NAME.
    Call(call::CallArgs),
    /// Create a plugin project in Rust, Python, JavaScript or C that builds on its own and
    /// passes `flowhost conform`.
    New(new::NewArgs),
    /// Validate a flow and queue a run of it in a PostgreSQL run database, for the workers;
    /// print the run's id.
    Submit(submit::SubmitArgs),
    /// Claim queued runs from a PostgreSQL run database and execute them, until SIGTERM.
    Worker(worker::WorkerArgs),
    /// List the workers of a PostgreSQL run database: id, host, heartbeat, runs in flight.
    Workers(workers::WorkersArgs),
    /// List the flows' schedules a run database records: cron, next tick, last tick and the
    /// run it started.
    Schedules(schedules::SchedulesArgs),
    /// Serve the flows of a folder over HTTP: a JSON API to start, follow, resume and cancel
    /// runs, live events, Prometheus metrics and a web console.
    Serve(serve::ServeArgs),
    /// Print a shell completion script: `flowhost completions bash > ~/.local/share/bash-completion/completions/flowhost`.
    Completions(completions::CompletionsArgs),
}

/// The initial store given on the command line.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Set a store value: NAME=JSON (falls back to a plain string when not JSON). Wins over the
    /// flow file's [store] and --store-file. Repeatable.
    #[arg(long = "store", value_name = "NAME=JSON")]
    pub values: Vec<String>,
    /// Read store values from a JSON object file; wins over the flow file's [store].
    #[arg(long, value_name = "FILE")]
    pub store_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The initial store: --store-file, then each --store over it.
    pub fn store(&self) -> anyhow::Result<Store> {
        let mut store = Store::new();
        if let Some(path) = &self.store_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                InputError(format!("cannot read store file {}: {e}", path.display()))
            })?;
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                UsageError(format!(
                    "store file {} is not valid JSON: {e}",
                    path.display()
                ))
            })?;
            if let Some(inexact) = flowhost::inexact_integer(&text) {
                bail!(UsageError(format!(
                    "store file {}: {inexact}",
                    path.display()
                )));
            }
            let Value::Object(map) = value else {
                bail!(UsageError(format!(
                    "store file {} must hold a JSON object",
                    path.display()
                )));
            };
            store.extend(map.into_iter().collect());
        }
        for pair in &self.values {
            let (name, raw) = pair
                .split_once('=')
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| {
                    UsageError(format!(
                        "--store `{pair}`: expected NAME=VALUE, e.g. --store raw_size=10"
                    ))
                })?;
            let value =
                store_value(raw).map_err(|why| UsageError(format!("--store `{pair}`: {why}")))?;
            store.insert(name, value);
        }
        Ok(store)
    }
}

/// A `--store` value: JSON, or a plain string when the text is not meant as JSON
/// (`--store zone=nova`). Text that looks like JSON but does not parse, or parses into
/// something else than it says, is refused rather than silently taken as a string or
/// rounded: `010` (JSON has no leading zeros), an object nested deeper than serde_json's
/// 128 levels, an integer beyond 64 bits (it would become an inexact float).
fn store_value(raw: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(raw) {
        Ok(value) => {
            if let Some(inexact) = flowhost::inexact_integer(raw) {
                return Err(inexact.to_string());
            }
            Ok(value)
        }
        Err(error) if error.to_string().starts_with("recursion limit exceeded") => {
            Err("the JSON is nested deeper than 128 levels, the most flowhost reads".into())
        }
        Err(error) if raw.trim_start().starts_with(['{', '[', '"']) => Err(format!(
            "the value looks like JSON but is not valid JSON ({error}); quote it as a JSON string to pass it as text"
        )),
        Err(_) if looks_numeric(raw) => Err(format!(
            "`{raw}` looks like a number but is not a JSON number (no leading zeros, `+` signs or bare `.`); \
             write the number as JSON, or pass the text as a JSON string (NAME='\"{raw}\"')"
        )),
        Err(_) => Ok(Value::String(raw.to_owned())),
    }
}

/// Text that reads as a number everywhere but in JSON (`010`, `+5`, `.5`, `5.`), where a
/// version such as `1.2.3` does not.
fn looks_numeric(raw: &str) -> bool {
    raw.chars().any(|c| c.is_ascii_digit())
        && raw
            .chars()
            .all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
        && raw.parse::<f64>().is_ok()
}

/// What every command is handed: the engine settings the global flags chose, and the trace
/// exporter when there is a collector.
#[derive(Clone)]
pub struct Context {
    config: EngineConfig,
    traces: Option<flowhost::telemetry::Traces>,
}

impl Context {
    /// Reads the global flags (`--cache-dir`, `--no-cache`, `--ca-file`, `--otlp-endpoint`).
    pub fn new(cli: &Cli) -> anyhow::Result<Self> {
        let config = match (&cli.cache_dir, cli.no_cache) {
            (_, true) => EngineConfig::default().no_cache(),
            (Some(dir), false) if !dir.as_os_str().is_empty() => {
                EngineConfig::default().cache_dir(dir)
            }
            _ => EngineConfig::default(),
        };
        let config = match &cli.ca_file {
            Some(file) if !file.as_os_str().is_empty() => config.ca_file(file),
            _ => config,
        };
        // A task that could write the workers' plugin folder could replace the plugin every
        // later run of some flow executes: refused wherever the folder lives, like the cache
        // (`worker --plugin-dir` protects its own too).
        let config = config.protect(worker::plugin_dir(None));
        let traces = match cli.otlp_endpoint.as_deref().map(str::trim) {
            Some(endpoint) if !endpoint.is_empty() => Some(
                flowhost::telemetry::Traces::otlp(endpoint)
                    .map_err(|e| UsageError(format!("--otlp-endpoint: {e}")))?,
            ),
            _ => None,
        };
        Ok(Self { config, traces })
    }

    /// Makes `loaded` export its trace, when there is a collector.
    pub fn trace(&self, loaded: &mut flowhost::LoadedFlow) {
        if let Some(traces) = &self.traces {
            loaded.listen(traces.listener(None));
        }
    }

    /// `executor`, giving every run it starts, resumes or claims a trace when there is a
    /// collector: under the traceparent the run was started with, if any.
    pub fn traced(&self, executor: flowhost::runs::Executor) -> flowhost::runs::Executor {
        match self.traces.clone() {
            Some(traces) => {
                executor.run_listener(std::sync::Arc::new(move |parent: Option<&str>| {
                    traces.listener(parent)
                }))
            }
            None => executor,
        }
    }

    /// Exports the traces still queued, waiting a few seconds at most: a collector that is
    /// down delays the exit, never fails it.
    pub fn shutdown(&self) {
        if let Some(traces) = &self.traces {
            traces.shutdown(std::time::Duration::from_secs(5));
        }
    }

    /// Refuses, at validation, grants that reach `path` (the run database).
    pub fn protect(&mut self, path: impl Into<PathBuf>) {
        self.config.protected.push(path.into());
    }

    /// An engine for many runs at once (`run --batch`): pooled instances, no listener; with
    /// fuel metering only when `fuel` (a flow sets a fuel budget), since metering slows every
    /// task.
    pub fn batch_engine(&self, fuel: bool) -> anyhow::Result<flowhost::Engine> {
        flowhost::Engine::with_config(&self.config.clone().fuel(fuel))
            .context("starting the engine")
    }

    /// An engine configuration for a worker: pooled instances, since a worker runs many runs
    /// at once for a long time.
    pub fn worker_config(&self) -> EngineConfig {
        self.config.clone()
    }

    /// An engine for one run or one plugin, logging every transition. Its instances are
    /// allocated on demand: setting up the pool (a thousand slots, a guard page per stack)
    /// costs more than the handful of instances one run makes.
    pub fn engine(&self, fuel: bool) -> anyhow::Result<flowhost::Engine> {
        let mut engine =
            flowhost::Engine::with_config(&self.config.clone().fuel(fuel).pooling(false))
                .context("starting the engine")?;
        engine.listen(std::sync::Arc::new(flowhost::LogListener));
        Ok(engine)
    }
}

/// Loads the flow file; errors keep their type for the exit code.
pub fn read_flow(path: &PathBuf) -> anyhow::Result<flowhost::FlowSpec> {
    Ok(flowhost::FlowSpec::from_file(path)?)
}

/// What `check --json` and `run --json` print for a flow that is invalid: the problems, each
/// `{task, field, message}`, so that tools need not parse the human message.
pub fn print_invalid(flow: Option<&str>, error: &anyhow::Error) -> anyhow::Result<()> {
    let problems = match (
        error.downcast_ref::<flowhost::ValidationError>(),
        error.downcast_ref::<flowhost::FlowFileError>(),
    ) {
        (Some(invalid), _) => serde_json::to_value(&invalid.problems)?,
        (None, Some(file @ flowhost::FlowFileError::Parse { .. })) => {
            serde_json::json!([{ "task": null, "field": null, "message": file.to_string() }])
        }
        _ => return Ok(()),
    };
    let flow = error
        .downcast_ref::<flowhost::ValidationError>()
        .map(|e| e.flow.as_str())
        .or(flow);
    output::print_json(
        &serde_json::json!({ "flow": flow, "state": "INVALID", "problems": problems }),
    )
}

/// Text a plugin provided (names, descriptions, messages), escaped for the terminal.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    flowhost::escape(text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn store_values_are_json_or_plain_strings() {
        assert_eq!(store_value("10"), Ok(json!(10)));
        assert_eq!(store_value("{\"a\": [1]}"), Ok(json!({"a": [1]})));
        assert_eq!(store_value("nova"), Ok(json!("nova")));
        assert_eq!(
            store_value("1.2.3"),
            Ok(json!("1.2.3")),
            "a version is text"
        );
        assert_eq!(store_value("\"010\""), Ok(json!("010")));
        assert_eq!(store_value("18446744073709551615"), Ok(json!(u64::MAX)));
        assert_eq!(store_value("-9223372036854775808"), Ok(json!(i64::MIN)));
    }

    #[test]
    fn store_values_that_would_silently_change_are_refused() {
        assert!(
            store_value("010")
                .unwrap_err()
                .contains("looks like a number")
        );
        assert!(
            store_value("+5")
                .unwrap_err()
                .contains("looks like a number")
        );
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(store_value(&deep).unwrap_err().contains("deeper than 128"));
        assert!(
            store_value("{\"a\": 1,}")
                .unwrap_err()
                .contains("not valid JSON")
        );
        let big = store_value("{\"n\": [18446744073709551616]}").unwrap_err();
        assert!(
            big.contains("18446744073709551616 does not fit in 64 bits"),
            "{big}"
        );
    }
}
