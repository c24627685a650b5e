//! `flowhost schedules`: the flows' schedules a run database records — next and last tick.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use flowhost::{Cron, tick_text};
use serde::Serialize;

use super::Context;
use super::db::DbArgs;
use super::output::outln;
use super::print_json;

/// Arguments of `flowhost schedules`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
flowhost schedules --db postgres://flowhost@db.internal/flowhost\n  \
flowhost schedules --json      # [{flow, index, cron, next_tick, last_tick, last_run, since}]\n\n\
A schedule is listed once a `flowhost serve` serving its flow has seen it.")]
pub struct SchedulesArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A schedule as this command shows it.
#[derive(Debug, Serialize)]
struct Shown {
    flow: String,
    index: usize,
    cron: String,
    next_tick: Option<String>,
    last_tick: Option<String>,
    last_run: Option<String>,
    since: String,
}

/// Lists the schedules.
pub async fn schedules(_ctx: &Context, args: SchedulesArgs) -> anyhow::Result<ExitCode> {
    let db = args.db.open_any(false)?;
    let now = SystemTime::now();
    let shown: Vec<Shown> = db
        .schedules()
        .schedules()?
        .into_iter()
        .map(|s| Shown {
            next_tick: Cron::parse(&s.cron)
                .ok()
                .and_then(|cron| cron.next_after(now))
                .map(tick_text),
            flow: s.flow,
            index: s.index,
            cron: s.cron,
            last_tick: s.last_tick,
            last_run: s.last_run,
            since: s.since,
        })
        .collect();
    if args.json {
        print_json(&shown)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<24} {:>3} {:<20} {:<22} {:<22} {}",
        "FLOW",
        "#",
        "CRON",
        "NEXT TICK",
        "LAST TICK",
        "LAST RUN"
    )?;
    for s in shown {
        outln!(
            "{:<24} {:>3} {:<20} {:<22} {:<22} {}",
            s.flow,
            s.index + 1,
            s.cron,
            s.next_tick.as_deref().unwrap_or("-"),
            s.last_tick.as_deref().unwrap_or("-"),
            s.last_run.as_deref().unwrap_or("-")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
