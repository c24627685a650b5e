//! `flowhost check`: validation only, nothing runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::db::DEFAULT_DB;
use super::{Context, StoreArgs, print_json, read_flow, shown};

/// Arguments of `flowhost check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The flow file (TOML).
    pub flow: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints each task as it would run: arguments and where they come from, provides, limits
/// and grants (pinned: the directory object each grant was opened to). Grants reaching the
/// run database `run` would use (`FLOWHOST_DB` or the default) are refused as `run` refuses
/// them.
pub async fn check(ctx: &Context, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let flow = read_flow(&args.flow)?;
    let mut ctx = ctx.clone();
    ctx.protect(std::env::var_os("FLOWHOST_DB").filter(|p| !p.is_empty()).map_or_else(|| PathBuf::from(DEFAULT_DB), PathBuf::from));
    let loaded = ctx.engine(flow.needs_fuel())?.load(&flow, args.store.store()?).await?;
    if args.json {
        let tasks: Vec<_> = loaded.plan().collect();
        print_json(&serde_json::json!({ "flow": loaded.name(), "valid": true, "tasks": tasks }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("flow `{}` is valid", loaded.name());
    for (n, task) in loaded.plan().enumerate() {
        println!(
            "{}. {} — {} {} ({})",
            n + 1,
            task.name,
            shown(&task.info.name),
            shown(&task.info.version),
            task.plugin.display()
        );
        let args: Vec<String> = task
            .required
            .iter()
            .map(|(arg, key)| if arg == key { arg.clone() } else { format!("{arg} <- {key}") })
            .chain(task.optional.iter().map(|(arg, key)| {
                if arg == key { format!("{arg}?") } else { format!("{arg}? <- {key}") }
            }))
            .chain(task.inject.iter().map(|(arg, value)| format!("{arg} = {value}")))
            .collect();
        // Argument and result names come from the plugin's describe(): escaped.
        let list = |names: &[String]| if names.is_empty() { "-".to_owned() } else { shown(&names.join(", ")).into_owned() };
        println!("   requires: {}", list(&args));
        println!("   provides: {}", list(task.provides));
        let l = &task.sandbox.limits;
        let fuel = l.fuel.map_or_else(|| "off".to_owned(), |f| f.to_string());
        println!(
            "   limits:   deadline {} ms, memory {} MiB, result {} KiB, args {} KiB, fuel {fuel}, handles {}",
            l.deadline_ms, l.memory_mib, l.result_kib, l.args_kib, l.handles
        );
        for dir in &task.sandbox.dirs {
            let mode = match dir.access {
                flowhost::Access::ReadOnly => "ro",
                flowhost::Access::ReadWrite => "rw",
            };
            println!(
                "   grant:    {} -> {} ({mode}, pinned: device {}, inode {})",
                dir.host.display(),
                dir.guest,
                dir.pinned.device,
                dir.pinned.inode
            );
        }
        let env: Vec<String> = task
            .sandbox
            .env
            .iter()
            .map(|var| match var.source {
                flowhost::EnvSource::Host => format!("{} (from host)", var.name),
                flowhost::EnvSource::Flow => format!("{} (set by flow)", var.name),
            })
            .collect();
        println!("   env:      {}", if env.is_empty() { "-".into() } else { env.join(", ") });
        println!("   network:  none");
    }
    Ok(ExitCode::SUCCESS)
}
