//! `flowhost worker`: claim queued runs from a PostgreSQL run database and execute them until
//! SIGTERM or Ctrl-C, then drain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use flowhost::runs::{Policy, Worker};

use super::Context;
use super::db::{DbArgs, parse_duration};
use super::exit::UsageError;
use super::output::errln;

/// Arguments of `flowhost worker`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
flowhost worker --db postgres://flowhost@db.internal/flowhost --concurrency 16\n  \
flowhost worker --db postgres://… --flow volume_create_api --flow volume_delete\n  \
flowhost worker --db postgres://… --lease-ttl 30s --heartbeat 10s\n  \
flowhost worker --db postgres://… --allow-dir /srv/volumes --allow-env OS_REGION --allow-net https://quota.internal\n\n\
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
    /// user cache directory, e.g. ~/.cache/flowhost/plugins]. It must be this user's and
    /// writable by no one else; no flow may be granted it.
    #[arg(long, value_name = "DIR", env = "FLOWHOST_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// What submitted flows may grant on this host (`worker`, and `serve` queueing for workers).
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Accept runs granting directories inside these (and secret files there). Any --allow-*
    /// flag turns the policy on: a run granting anything it does not list ends FAILURE,
    /// naming the grant. Without any, submitters may grant any directory, variable or
    /// network destination of this host.
    #[arg(long = "allow-dir", value_name = "PATH", num_args = 1..)]
    pub dirs: Vec<PathBuf>,
    /// Accept runs reading these host variables (`env`, and secrets `{ env = … }`).
    #[arg(long = "allow-env", value_name = "NAME", num_args = 1..)]
    pub env: Vec<String>,
    /// Accept runs granting network destinations within these: HTTP origins
    /// (`https://*.example.org`, `http://10.0.0.5:8776/v3/`) and TCP endpoints (`db.internal:5432`).
    #[arg(long = "allow-net", value_name = "GRANT", num_args = 1..)]
    pub net: Vec<String>,
}

impl PolicyArgs {
    /// The policy these flags choose: none (every grant accepted) without any flag.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        if self.dirs.is_empty() && self.env.is_empty() && self.net.is_empty() {
            return Ok(Policy::default());
        }
        Policy::allow(self.dirs.clone(), self.env.clone(), self.net.clone())
            .map_err(|e| anyhow::Error::new(UsageError(format!("--allow-net {e}"))))
    }
}

/// Where a worker keeps its plugins: `given` (`--plugin-dir`), else `FLOWHOST_PLUGIN_DIR`,
/// else `flowhost/plugins` in the user cache directory. Every command protects it from
/// grants, whichever folder it is.
pub fn plugin_dir(given: Option<&Path>) -> PathBuf {
    given
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("FLOWHOST_PLUGIN_DIR")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| {
            dirs::cache_dir()
                .unwrap_or_else(std::env::temp_dir)
                .join("flowhost")
                .join("plugins")
        })
}

/// Runs the worker until a signal asks it to drain.
pub async fn worker(ctx: &Context, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let db = args.db.open_postgres("worker")?;
    let executor = ctx.traced(args.db.executor(db.clone()).heartbeat(args.heartbeat));
    let policy = args.policy.policy()?;
    let plugin_dir = plugin_dir(args.plugin_dir.as_deref());
    let worker = Worker::new(db, executor, ctx.worker_config(), plugin_dir)
        .policy(policy)
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
