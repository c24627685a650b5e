//! The command line: argument definitions, the [`Context`] every command gets, and one
//! module per subcommand. Commands present; the library decides.

pub mod check;
pub mod compile;
pub mod conform;
pub mod db;
pub mod describe;
pub mod exit;
pub mod run;
pub mod runs;

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use flowhost::{EngineConfig, Store};
use serde_json::Value;

use exit::{InputError, UsageError};

/// Runs flows of sandboxed WebAssembly tasks: each task starts after the previous one
/// finished, results flow through a store of named JSON values, and a failure reverts every
/// task that ran, in reverse order.
#[derive(Debug, Parser)]
#[command(name = "flowhost", version, after_help = exit::EXIT_CODES)]
pub struct Cli {
    /// More log output (debug level). Overridden by FLOWHOST_LOG.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Where compiled plugins are cached [default: the user cache directory, e.g.
    /// ~/.cache/flowhost].
    #[arg(long, global = true, value_name = "DIR", env = "FLOWHOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every plugin afresh; neither read nor write the cache. Wins over --cache-dir.
    #[arg(long, global = true)]
    pub no_cache: bool,
    #[command(subcommand)]
    pub command: Command,
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
            let text = std::fs::read_to_string(path)
                .map_err(|e| InputError(format!("cannot read store file {}: {e}", path.display())))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| UsageError(format!("store file {} is not valid JSON: {e}", path.display())))?;
            let Value::Object(map) = value else {
                bail!(UsageError(format!("store file {} must hold a JSON object", path.display())));
            };
            store.extend(map.into_iter().collect());
        }
        for pair in &self.values {
            let (name, raw) = pair.split_once('=').filter(|(n, _)| !n.is_empty()).ok_or_else(|| {
                UsageError(format!("--store `{pair}`: expected NAME=VALUE, e.g. --store raw_size=10"))
            })?;
            let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
            store.insert(name, value);
        }
        Ok(store)
    }
}

/// What every command is handed: the engine settings the global flags chose.
#[derive(Clone)]
pub struct Context {
    config: EngineConfig,
}

impl Context {
    /// Reads the global flags (`--cache-dir`, `--no-cache`).
    pub fn new(cli: &Cli) -> Self {
        let config = match (&cli.cache_dir, cli.no_cache) {
            (_, true) => EngineConfig::default().no_cache(),
            (Some(dir), false) if !dir.as_os_str().is_empty() => EngineConfig::default().cache_dir(dir),
            _ => EngineConfig::default(),
        };
        Self { config }
    }

    /// Refuses, at validation, grants that reach `path` (the run database).
    pub fn protect(&mut self, path: impl Into<PathBuf>) {
        self.config.protected.push(path.into());
    }

    /// An engine for many runs at once (`run --batch`): pooled instances, no listener; with
    /// fuel metering only when `fuel` (a flow sets a fuel budget), since metering slows every
    /// task.
    pub fn batch_engine(&self, fuel: bool) -> anyhow::Result<flowhost::Engine> {
        flowhost::Engine::with_config(&self.config.clone().fuel(fuel)).context("starting the engine")
    }

    /// An engine for one run or one plugin, logging every transition. Its instances are
    /// allocated on demand: setting up the pool (a thousand slots, a guard page per stack)
    /// costs more than the handful of instances one run makes.
    pub fn engine(&self, fuel: bool) -> anyhow::Result<flowhost::Engine> {
        let mut engine = flowhost::Engine::with_config(&self.config.clone().fuel(fuel).pooling(false))
            .context("starting the engine")?;
        engine.listen(std::sync::Arc::new(flowhost::LogListener));
        Ok(engine)
    }
}

/// Loads the flow file; errors keep their type for the exit code.
pub fn read_flow(path: &PathBuf) -> anyhow::Result<flowhost::FlowSpec> {
    Ok(flowhost::FlowSpec::from_file(path)?)
}

/// Logs to stderr; `FLOWHOST_LOG` (tracing filter syntax) overrides -v / -q.
pub fn init_logging(verbose: bool, quiet: bool) {
    let default = if verbose { "debug" } else if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Text a plugin provided (names, descriptions, messages), escaped for the terminal.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    flowhost::escape(text)
}

/// Prints JSON to stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
