//! `flowhost check`: validation only, nothing runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{Context, StoreArgs, print_json, read_flow};

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
/// and grants.
pub async fn check(ctx: &Context, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let flow = read_flow(&args.flow)?;
    let loaded = ctx.engine(flow.needs_fuel())?.load(&flow, args.store.store()?).await?;
    if args.json {
        let tasks: Vec<_> = loaded.plan().collect();
        print_json(&serde_json::json!({ "flow": loaded.name(), "valid": true, "tasks": tasks }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("flow `{}` is valid", loaded.name());
    for (n, task) in loaded.plan().enumerate() {
        println!("{}. {} — {} {} ({})", n + 1, task.name, task.info.name, task.info.version, task.plugin.display());
        let args: Vec<String> = task
            .required
            .iter()
            .map(|(arg, key)| if arg == key { arg.clone() } else { format!("{arg} <- {key}") })
            .chain(task.optional.iter().map(|(arg, key)| {
                if arg == key { format!("{arg}?") } else { format!("{arg}? <- {key}") }
            }))
            .chain(task.inject.iter().map(|(arg, value)| format!("{arg} = {value}")))
            .collect();
        println!("   requires: {}", if args.is_empty() { "-".into() } else { args.join(", ") });
        println!("   provides: {}", if task.provides.is_empty() { "-".into() } else { task.provides.join(", ") });
        let l = &task.sandbox.limits;
        let fuel = l.fuel.map_or_else(|| "off".to_owned(), |f| f.to_string());
        println!(
            "   limits:   deadline {} ms, memory {} MiB, result {} KiB, args {} KiB, fuel {fuel}",
            l.deadline_ms, l.memory_mib, l.result_kib, l.args_kib
        );
        for dir in &task.sandbox.dirs {
            let mode = match dir.access {
                flowhost::Access::ReadOnly => "ro",
                flowhost::Access::ReadWrite => "rw",
            };
            println!("   grant:    {} -> {} ({mode})", dir.host.display(), dir.guest);
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
