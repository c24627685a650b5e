//! `flowhost serve`: the HTTP API, live events, metrics and the web console over the run
//! database.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use flowhost::service::{Limits, ServeConfig, Server, Token, connections_for_open_files};

use super::Context;
use super::db::{AnyDb, DbArgs, parse_duration};
use super::exit::{InputError, UsageError};
use super::output::{errln, outln};

/// Arguments of `flowhost serve`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
flowhost serve --flows examples/volume-create            # http://127.0.0.1:8080: console and API\n  \
flowhost serve --flows flows/ --listen 127.0.0.1:0       # any free port (printed on stdout)\n  \
flowhost serve --flows flows/ --listen 0.0.0.0:8080 --token-file /etc/flowhost/token\n  \
flowhost serve --flows flows/ --db postgres://flowhost@db/flowhost   # runs go to `flowhost worker`s\n  \
curl -X POST -d '{\"raw_size\": 20}' http://127.0.0.1:8080/v1/flows/flow/runs\n\n\
The API is described at /v1/openapi.json. SIGTERM or Ctrl-C stops accepting requests and waits\n\
for the runs in flight; a second signal stops at once (the runs stay resumable).")]
pub struct ServeArgs {
    /// The folder of flow files: each NAME.toml is served as flow NAME.
    #[arg(long, value_name = "DIR")]
    pub flows: PathBuf,
    #[command(flatten)]
    pub db: DbArgs,
    /// The address to listen on. Anything but a loopback address needs --token-file.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A file holding the bearer token (e.g. `openssl rand -hex 32`) that starting, resuming and
    /// cancelling runs, and reading store values, then need.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// With a PostgreSQL --db, execute runs in this process instead of queueing them for
    /// `flowhost worker`s (the default there). SQLite databases are always served in-process.
    #[arg(long)]
    pub in_process: bool,
    /// How long a client has to send a request's headers, from connecting or from its
    /// previous answer; slower connections are closed.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "10s")]
    pub header_timeout: Duration,
    /// A connection on which no bytes move for this long is closed, unless an answer is
    /// still being worked out (event streams send a keep-alive every 15 s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "60s")]
    pub idle_timeout: Duration,
    /// Connections open at once. At the cap, a new connection closes the oldest one without
    /// a request in progress. Default: the open-file limit (`ulimit -n`) less a quarter of it
    /// (at least 128), left for the database and plugins.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Event streams (`GET /v1/runs/{id}/events`) open at once; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub max_event_streams: usize,
    /// In queue mode, what queued runs may grant (as the workers' flags): a start granting
    /// anything else is refused (422) before it is queued.
    #[command(flatten)]
    pub policy: super::worker::PolicyArgs,
}

/// Serves until SIGTERM or SIGINT.
pub async fn serve(ctx: &Context, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let token = match &args.token_file {
        Some(path) => Some(Token::from_file(path).map_err(|e| InputError(e.to_string()))?),
        None => None,
    };
    if !args.listen.ip().is_loopback() && token.is_none() {
        bail!(UsageError(
            flowhost::service::ServeError::Exposed(args.listen).to_string()
        ));
    }
    let db = args.db.open_any(true)?;
    let executor = ctx.traced(args.db.executor(db.shared()));
    let queue = match &db {
        AnyDb::Postgres(db) if !args.in_process => Some(db.clone()),
        _ => None,
    };
    let queued = queue.is_some();
    let policy = args.policy.policy()?;
    if queued && !policy.is_restricted() {
        tracing::warn!(
            "no --allow-dir, --allow-env or --allow-net: the flows served may grant their tasks any directory, variable or network destination of the workers' hosts"
        );
    }
    let mut ctx = ctx.clone();
    if let AnyDb::Sqlite(_) = db {
        ctx.protect(args.db.path());
    }
    let config = ServeConfig {
        flows_dir: args.flows.clone(),
        executor,
        schedules: db.schedules(),
        engine: ctx.engine(false)?,
        fuel_engine: ctx.engine(true)?,
        token,
        listen: args.listen,
        queue,
        limits: Limits {
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args
                .max_connections
                .map_or_else(connections_for_open_files, |n| {
                    usize::try_from(n).unwrap_or(usize::MAX)
                }),
            max_event_streams: args.max_event_streams,
        },
        policy,
    };
    let server = Server::bind(config).await.map_err(|e| match e {
        flowhost::service::ServeError::FlowsDir { .. } => {
            anyhow::Error::new(InputError(e.to_string()))
        }
        other => anyhow::Error::new(other),
    })?;
    outln!(
        "flowhost serving {} on http://{}",
        args.flows.display(),
        server.local_addr()
    )?;
    match &db {
        AnyDb::Sqlite(_) => tracing::info!("database {}", args.db.shown()),
        AnyDb::Postgres(_) if queued => {
            tracing::info!("queueing runs for the workers of the PostgreSQL database")
        }
        AnyDb::Postgres(_) => {
            tracing::info!("executing runs here, recorded in the PostgreSQL database")
        }
    }
    let left = server.run(shutdown_signal).await?;
    if left > 0 {
        errln!("stopped with {left} run(s) unfinished; `flowhost runs resume ID` continues them");
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
