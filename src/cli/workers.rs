//! `flowhost workers`: the workers a PostgreSQL run database knows, and what each holds.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::Context;
use super::db::{DbArgs, parse_duration};
use super::output::outln;
use super::print_json;

/// Arguments of `flowhost workers`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
flowhost workers --db postgres://flowhost@db.internal/flowhost\n  \
flowhost workers --json      # [{id, host, pid, started, heartbeat, in_flight, status, …}]")]
pub struct WorkersArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// A worker without a heartbeat for this long, holding no live lease, is shown `lost`.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "30s")]
    pub lost_after: Duration,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Lists the workers.
pub async fn workers(_ctx: &Context, args: WorkersArgs) -> anyhow::Result<ExitCode> {
    let db = args.db.open_postgres("workers")?;
    let workers = db.workers(args.lost_after)?;
    if args.json {
        print_json(&workers)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("queue: {} run(s) waiting for a worker", db.waiting()?)?;
    outln!(
        "{:<36} {:<20} {:>8} {:<25} {:<25} {:>9} {:<8}",
        "ID",
        "HOST",
        "PID",
        "STARTED",
        "HEARTBEAT",
        "IN FLIGHT",
        "STATUS"
    )?;
    for w in workers {
        outln!(
            "{:<36} {:<20} {:>8} {:<25} {:<25} {:>9} {:<8}",
            w.id,
            w.host,
            w.pid,
            w.started,
            format!("{} ({:.0} s ago)", w.heartbeat, w.heartbeat_age_s),
            format!("{}/{}", w.in_flight, w.concurrency),
            w.status
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
