//! `flowhost check`: validation only, nothing runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::db::default_db;
use super::output::{errln, outln};
use super::{Context, StoreArgs, print_invalid, print_json, read_flow, shown};

/// Arguments of `flowhost check`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
flowhost check flow.toml                         # the plan: arguments, provides, limits, grants\n  \
flowhost check flow.toml --store raw_size=20     # with the store a run would start from\n  \
flowhost check flow.toml --json | jq .problems   # machine-readable, also when invalid (exit 65)")]
pub struct CheckArgs {
    /// The flow file (TOML).
    pub flow: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the plan as JSON: { flow, state: "VALID", valid, tasks }, or for an invalid flow
    /// { flow, state: "INVALID", valid, problems: [{task, field, message}] }.
    #[arg(long)]
    pub json: bool,
}

/// Prints each task as it would run: arguments and where they come from, provides, limits
/// and grants (pinned: the directory object each grant was opened to). Grants reaching the
/// run database `run` would use (`FLOWHOST_DB` or the default) are refused as `run` refuses
/// them.
pub async fn check(ctx: &Context, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let loaded = match load(ctx, &args).await {
        Ok(loaded) => loaded,
        Err((flow, error)) => {
            if args.json {
                print_invalid(flow.as_deref(), &error)?;
            }
            return Err(error);
        }
    };
    if args.json {
        let tasks: Vec<_> = loaded.plan().collect();
        let subflows: Vec<_> = loaded.subflows().collect();
        let maps: Vec<_> = loaded.maps().collect();
        let warnings: Vec<String> = tasks
            .iter()
            .flat_map(|task| {
                task.sandbox.net.wide_local_grants().into_iter().map(move |wide| {
                    format!("task `{}` is granted {wide}: every port of a local address, so every service on it", task.name)
                })
            })
            .collect();
        let doc = serde_json::json!({ "flow": loaded.name(), "state": "VALID", "valid": true, "tasks": tasks, "subflows": subflows, "maps": maps, "warnings": warnings });
        print_json(&doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("flow `{}` is valid", loaded.name())?;
    for (n, task) in loaded.plan().enumerate() {
        match (task.info, task.plugin, &task.wait) {
            (Some(info), Some(plugin), _) => outln!(
                "{}. {} — {} {} ({})",
                n + 1,
                task.name,
                shown(&info.name),
                shown(&info.version),
                plugin.display()
            )?,
            (_, _, wait) => outln!(
                "{}. {} — waits for {}",
                n + 1,
                task.name,
                wait.as_ref().map(waits_for).unwrap_or_default()
            )?,
        }
        let args: Vec<String> = task
            .required
            .iter()
            .map(|(arg, key)| {
                if arg == key {
                    arg.clone()
                } else {
                    format!("{arg} <- {key}")
                }
            })
            .chain(task.optional.iter().map(|(arg, key)| {
                if arg == key {
                    format!("{arg}?")
                } else {
                    format!("{arg}? <- {key}")
                }
            }))
            .chain(
                task.inject
                    .iter()
                    .map(|(arg, value)| format!("{arg} = {value}")),
            )
            .collect();
        // Argument and result names come from the plugin's describe(): escaped.
        let list = |names: &[String]| {
            if names.is_empty() {
                "-".to_owned()
            } else {
                shown(&names.join(", ")).into_owned()
            }
        };
        outln!("   requires: {}", list(&args))?;
        // Renamed results are stored by position: show which declared name each one takes.
        let declared = task.info.map(|i| i.provides.as_slice()).unwrap_or_default();
        let provides: Vec<String> =
            if task.provides.len() > 1 && declared.len() == task.provides.len() {
                task.provides
                    .iter()
                    .zip(declared)
                    .map(|(name, key)| {
                        if name == key {
                            name.clone()
                        } else {
                            format!("{name} <- {key}")
                        }
                    })
                    .collect()
            } else {
                task.provides.to_vec()
            };
        outln!("   provides: {}", list(&provides))?;
        if !task.depends_on.is_empty() {
            outln!("   after:    {}", task.depends_on.join(", "))?;
        }
        if let Some(when) = task.when {
            // The flow author's text: escaped like the plugin's names.
            outln!(
                "   when:     {} (reads {}; false: IGNORE)",
                shown(when),
                list(task.when_reads)
            )?;
        }
        if task.priority != 0 {
            outln!("   priority: {}", task.priority)?;
        }
        let retry = task.retry;
        if retry.attempts > 1 {
            let codes = match (&retry.on, retry.except.is_empty()) {
                (Some(on), _) => format!("on {}", on.join(", ")),
                (None, true) => "on every error but input errors".to_owned(),
                (None, false) => format!(
                    "on every error but input errors and {}",
                    retry.except.join(", ")
                ),
            };
            outln!(
                "   retry:    {} attempts, backoff {} ms x{} up to {} ms{}, {codes}{}",
                retry.attempts,
                retry.backoff.as_millis(),
                retry.multiplier,
                retry.max_backoff.as_millis(),
                if retry.jitter { " with jitter" } else { "" },
                if retry.revert_between {
                    ", reverting between attempts"
                } else {
                    ""
                }
            )?;
        }
        let l = &task.sandbox.limits;
        let fuel = l.fuel.map_or_else(|| "off".to_owned(), |f| f.to_string());
        outln!(
            "   limits:   deadline {} ms, memory {} MiB, result {} KiB, args {} KiB, fuel {fuel}, handles {}, http_requests {}, http_body_mib {}",
            l.deadline_ms,
            l.memory_mib,
            l.result_kib,
            l.args_kib,
            l.handles,
            l.http_requests,
            l.http_body_mib
        )?;
        for dir in &task.sandbox.dirs {
            let mode = match dir.access {
                flowhost::Access::ReadOnly => "ro",
                flowhost::Access::ReadWrite => "rw",
            };
            outln!(
                "   grant:    {} -> {} ({mode}, pinned: device {}, inode {})",
                dir.host.display(),
                dir.guest,
                dir.pinned.device,
                dir.pinned.inode
            )?;
        }
        let env: Vec<String> = task
            .sandbox
            .env
            .iter()
            .map(|var| match var.source {
                flowhost::EnvSource::Host => format!("{} (from host)", var.name),
                flowhost::EnvSource::Flow => format!("{} (set by flow)", var.name),
                flowhost::EnvSource::Secret => {
                    format!("{} (a secret, readable by the task)", var.name)
                }
            })
            .collect();
        outln!(
            "   env:      {}",
            if env.is_empty() {
                "-".into()
            } else {
                env.join(", ")
            }
        )?;
        let net = &task.sandbox.net;
        if net.http.is_empty() && net.tcp.is_empty() {
            outln!("   network:  none")?;
        }
        for grant in &net.http {
            outln!("   http:     {grant}")?;
        }
        for grant in &net.tcp {
            outln!("   tcp:      {grant}")?;
        }
        if !net.secrets.is_empty() {
            outln!(
                "   secrets:  {} (in HTTP headers, never seen by the task)",
                net.secrets.join(", ")
            )?;
        }
        for wide in net.wide_local_grants() {
            errln!(
                "warning: task `{}` is granted {wide}: every port of a local address, so every service on it",
                task.name
            );
        }
    }
    for subflow in loaded.subflows() {
        outln!(
            "subflow `{}` retried by its controller: {}",
            subflow.path,
            controller(subflow.retry)
        )?;
        outln!("   tasks:    {}", subflow.tasks.join(", "))?;
    }
    for map in loaded.maps() {
        outln!(
            "subflow `{}` maps over `{}`: each element as `{}`, collected into `{}`",
            map.path,
            map.map.over,
            map.map.each,
            map.map.collect
        )?;
        outln!("   tasks:    {}", map.tasks.join(", "))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The flow file and the flow loaded (validated); on failure, the flow's name when known.
async fn load(
    ctx: &Context,
    args: &CheckArgs,
) -> Result<flowhost::LoadedFlow, (Option<String>, anyhow::Error)> {
    let flow = read_flow(&args.flow).map_err(|e| (None, e))?;
    let named = |error: anyhow::Error| (Some(flow.name.clone()), error);
    let store = args.store.store().map_err(named)?;
    // A task granted the run database could rewrite any run's record and lease.
    let mut ctx = ctx.clone();
    ctx.protect(
        std::env::var_os("FLOWHOST_DB")
            .filter(|p| !p.is_empty())
            .map_or_else(default_db, PathBuf::from),
    );
    let engine = ctx.engine(flow.needs_fuel()).map_err(named)?;
    engine.load(&flow, store).await.map_err(|e| named(e.into()))
}

/// A subflow's controller in words: how many iterations, what each gets, what exhaustion does.
fn controller(retry: &flowhost::Controller) -> String {
    let iterations = match retry.iterations() {
        Ok(flowhost::Iterations::Times(n)) => format!("up to {n} times"),
        Ok(flowhost::Iterations::Values(values, provides)) => {
            format!(
                "once per value of {} as `{provides}`",
                serde_json::Value::from(values.to_vec())
            )
        }
        Ok(flowhost::Iterations::FromStore { from, provides }) => {
            format!("once per element of `{from}` as `{provides}`")
        }
        Err(message) => message,
    };
    let strategy = match retry.strategy {
        flowhost::Strategy::Revert => "revert the subflow, then the enclosing controller decides",
        flowhost::Strategy::RevertAll => "revert the whole flow",
    };
    format!("{iterations}; when all failed: {strategy}")
}

/// What a wait entry waits for, as `check` shows it: `signal `approved` (timeout 3600000 ms)`,
/// `5000 ms`, `2026-12-24T18:00:00.000Z`.
pub fn waits_for(wait: &serde_json::Value) -> String {
    let timeout = wait["timeout_ms"]
        .as_u64()
        .map(|ms| format!(" (timeout {ms} ms)"))
        .unwrap_or_default();
    match (
        wait["signal"].as_str(),
        wait["for_ms"].as_u64(),
        wait["until"].as_str(),
    ) {
        (Some(name), _, _) => format!("signal `{name}`{timeout}"),
        (_, Some(ms), _) => format!("{ms} ms (a durable timer)"),
        (_, _, Some(at)) => format!("{at} (a durable timer)"),
        _ => String::new(),
    }
}
