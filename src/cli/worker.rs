//! `flowhost worker`: claim queued runs from a PostgreSQL run database and execute them until
//! SIGTERM or Ctrl-C, then drain.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use flowhost::runs::Worker;

use super::Context;
use super::db::{DbArgs, parse_duration};
use super::output::errln;

/// Arguments of `flowhost worker`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
flowhost worker --db postgres://flowhost@db.internal/flowhost --concurrency 16\n  \
flowhost worker --db postgres://… --flow volume_create_api --flow volume_delete\n  \
flowhost worker --db postgres://… --lease-ttl 30s --heartbeat 10s\n\n\
A worker claims queued runs (SELECT … FOR UPDATE SKIP LOCKED), holds each run's lease while it\n\
runs it, and takes over runs whose worker died once their lease expired, resuming them from\n\
their journal. A worker that lost a lease (paused, cut off) is fenced: its writes fail and it\n\
abandons the run. SIGTERM or Ctrl-C: stop claiming, finish the runs in flight, exit 0. A\n\
second SIGTERM or Ctrl-C hands the runs in flight back: they stop and their leases are\n\
released, so that other workers resume them at once.")]
pub struct WorkerArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// How many runs it executes at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub concurrency: usize,
    /// Claim only runs of this flow (its name). Repeatable; none: every flow.
    #[arg(long = "flow", value_name = "NAME")]
    pub flows: Vec<String>,
    /// How often it renews its leases while a task runs and records that it is alive.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "10s")]
    pub heartbeat: Duration,
    /// How often it looks for work when no notification arrives (runs whose lease expired
    /// notify nobody).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "1s")]
    pub poll: Duration,
    /// Where plugins fetched from the database are kept, by SHA-256 [default: plugins/ in the
    /// user cache directory, e.g. ~/.cache/flowhost/plugins].
    #[arg(long, value_name = "DIR", env = "FLOWHOST_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
}

/// Runs the worker until a signal asks it to drain.
pub async fn worker(ctx: &Context, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let db = args.db.open_postgres("worker")?;
    let executor = ctx.traced(args.db.executor(db.clone()).heartbeat(args.heartbeat));
    let plugin_dir = args.plugin_dir.clone().unwrap_or_else(|| {
        dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("flowhost")
            .join("plugins")
    });
    let worker = Worker::new(db, executor, ctx.worker_config(), plugin_dir)
        .concurrency(args.concurrency)
        .flows(args.flows)
        .heartbeat(args.heartbeat)
        .poll(args.poll);
    let (drain, hand_back) = signals();
    let summary = worker
        .run(
            async move {
                let _ = drain.await;
                errln!("draining: no new runs; the runs in flight finish (signal again to hand them back)");
            },
            async move {
                let _ = hand_back.await;
            },
        )
        .await?;
    errln!(
        "worker stopped: {} run(s) claimed, {} finished, {} abandoned to other workers",
        summary.claimed,
        summary.finished,
        summary.abandoned
    );
    Ok(ExitCode::SUCCESS)
}

/// Two futures: the first completes at the first SIGTERM or SIGINT (drain), the second at the
/// next one (hand back the runs in flight).
fn signals() -> (
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (drain, drained) = tokio::sync::oneshot::channel();
    let (hand_back, handed_back) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return std::future::pending().await;
            };
            for sender in [drain, hand_back] {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                let _ = sender.send(());
            }
        }
        #[cfg(not(unix))]
        for sender in [drain, hand_back] {
            let _ = tokio::signal::ctrl_c().await;
            let _ = sender.send(());
        }
    });
    (drained, handed_back)
}
