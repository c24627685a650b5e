//! `flowhost workers`: the workers a PostgreSQL run database knows, and what each holds.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use flowhost::runs::FlowLimitState;

use super::Context;
use super::db::{DbArgs, parse_duration};
use super::output::outln;
use super::print_json;

/// Arguments of `flowhost workers`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
flowhost workers --db postgres://flowhost@db.internal/flowhost\n  \
flowhost workers --json      # [{id, host, pid, started, heartbeat, in_flight, status, …}]\n\n\
Under the queue's line, each flow whose queue limits (`concurrency`, `rate`) hold back queued\n\
runs says so and why.")]
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
    for limited in db.flow_limits()? {
        if let Some(line) = held_back(&limited) {
            outln!("{line}")?;
        }
    }
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

/// What a flow's queue limits hold back, in a line, when they hold back anything:
/// `volume-create: 2 running (concurrency 2), 5 queued held back`, or for its rate
/// `…: 100 started in the last 60000 ms (rate 100 per 60000 ms), 5 queued held back; next start allowed at T`.
fn held_back(limited: &FlowLimitState) -> Option<String> {
    if limited.held_back == 0 {
        return None;
    }
    // The limits that leave the least room are the ones holding runs back.
    let room = limited.waiting - limited.held_back;
    let mut why = Vec::new();
    if let Some(n) = limited
        .concurrency
        .filter(|n| (n - limited.running).max(0) == room)
    {
        why.push(format!("{} running (concurrency {n})", limited.running));
    }
    if let Some(rate) = limited
        .rate
        .filter(|r| (r.runs - limited.started_in_period).max(0) == room)
    {
        why.push(format!(
            "{} started in the last {} ms (rate {} per {} ms)",
            limited.started_in_period, rate.per_ms, rate.runs, rate.per_ms
        ));
    }
    let mut line = format!(
        "{}: {}, {} queued held back",
        limited.flow,
        why.join(", "),
        limited.held_back
    );
    if let Some(at) = &limited.next_start_at {
        line.push_str(&format!("; next start allowed at {at}"));
    }
    Some(line)
}
