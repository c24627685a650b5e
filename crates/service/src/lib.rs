//! `flowhost serve`: an HTTP API, live events, Prometheus metrics and a web console over one
//! run database.
//!
//! The flow files of one folder are served by name (the file stem). Runs are started through
//! a [`RunStarter`]: [`InProcess`] runs them on this process's engine and records them in
//! the run database like `flowhost run` does (SQLite, or PostgreSQL without workers);
//! [`Queue`] queues them in a PostgreSQL run database for `flowhost worker`s, like
//! `flowhost submit`. The routes are the same either way. Every transition reaches the
//! service through a [`Listener`](crate::Listener) registered on the engine, after the
//! journal committed it, which is what the event streams and the metrics are built from.
//!
//! Security is decided here, not left to a proxy: the service listens on loopback unless
//! told otherwise, refuses any other address without a bearer token, requires the token for
//! every request that changes something, shows what plugins produced (store values, results,
//! progress and error details, which may hold secrets) only to token holders, and caps
//! request bodies, connections, their timeouts and event streams ([`Limits`]). What a caller
//! without the token can read costs the service little: lists and counts are answered by
//! the database, values are left out without being read, and every event stream of a run
//! shares one reader of it.

mod api;
mod auth;
mod conn;
mod console;
mod error;
mod events;
mod followed;
mod live;
mod metrics;
mod origin;
mod schedules;
mod starter;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::atomic::AtomicUsize;

use axum::Router;
use tokio::sync::watch;

use flowhost_engine::Engine;
use flowhost_executor::{Executor, Policy};
use flowhost_runs::{RunDb, ScheduleDb};
use flowhost_runs_postgres::PgRunDb;

pub use auth::Token;
pub use conn::{Limits, connections_for_open_files};
pub use error::StartError;
pub use starter::{InProcess, Queue, RunStarter, Started};

use live::Live;
use metrics::Metrics;

/// The largest request body accepted; larger ones are answered 413 before being read.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What `serve` needs: where the flows are, how runs start and where they are recorded, who
/// may change things, and where to listen.
pub struct ServeConfig {
    /// The folder of flow files (`NAME.toml`), served as flow `NAME`.
    pub flows_dir: PathBuf,
    /// The run database runs are recorded in, and this process as their executor.
    pub executor: Executor,
    /// The same database, where the flows' schedules record their ticks.
    pub schedules: Arc<dyn ScheduleDb>,
    /// The engine runs execute on (it gets the service's listener).
    pub engine: Engine,
    /// An engine with fuel metering, for flows that set a `fuel` budget.
    pub fuel_engine: Engine,
    /// The bearer token, when mutating requests and store values need one.
    pub token: Option<Token>,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// A PostgreSQL run database whose workers execute the runs: runs are queued there
    /// instead of executed here.
    pub queue: Option<Arc<PgRunDb>>,
    /// Connection timeouts and caps.
    pub limits: Limits,
    /// With `queue`: what queued runs may grant (the workers' `--allow-*`); a start outside
    /// it is refused as invalid (422) before anything is queued.
    pub policy: Policy,
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without a token would let anyone on the network start runs.
    #[error(
        "refusing to listen on {0} without a token: every host that can reach it could start and cancel runs; give --token-file FILE, or listen on a loopback address such as 127.0.0.1"
    )]
    Exposed(SocketAddr),
    /// The flows folder is not a readable folder.
    #[error("flows folder {}: {source}", path.display())]
    FlowsDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The address could not be bound (in use, not ours).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What every request handler shares.
pub(crate) struct AppState {
    flows_dir: PathBuf,
    db: Arc<dyn RunDb>,
    schedules: Arc<dyn ScheduleDb>,
    engine: Engine,
    starter: Arc<dyn RunStarter>,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    token: Option<Token>,
    /// The readers of runs executed elsewhere, one per run followed.
    watchers: followed::Watchers,
    /// Event streams open now, and how many may be.
    streams: Arc<AtomicUsize>,
    max_streams: usize,
    /// Turns true when the service begins to shut down: open event streams end.
    shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// The flow file serving flow `name`: `name.toml` when the name is a plain flow name (no
    /// path separators, no leading dot) and the file exists; otherwise the one flow file of
    /// the folder whose flow is named `name` (`volume_create_api` for
    /// `examples/volume-create/flow.toml`).
    fn flow_file(&self, name: &str) -> Option<PathBuf> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !plain {
            return None;
        }
        let path = self.flows_dir.join(format!("{name}.toml"));
        if path.is_file() {
            return Some(path);
        }
        let mut named = self.served_files().into_iter().filter(|path| {
            flowhost_core::flow::FlowSpec::from_file(path).is_ok_and(|spec| spec.name == name)
        });
        match (named.next(), named.next()) {
            (Some(path), None) => Some(path),
            _ => None,
        }
    }

    /// The stems of the folder's flow files, sorted.
    fn served(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .served_files()
            .iter()
            .filter_map(|path| path.file_stem()?.to_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    /// The folder's `*.toml` files.
    fn served_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.flows_dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file())
            .collect()
    }
}

/// A bound, not yet serving, service.
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    live: Arc<Live>,
    limits: Limits,
    shutdown: watch::Sender<bool>,
}

impl Server {
    /// Checks the configuration and binds the address (port 0 picks a free one).
    pub async fn bind(config: ServeConfig) -> Result<Self, ServeError> {
        if !config.listen.ip().is_loopback() && config.token.is_none() {
            return Err(ServeError::Exposed(config.listen));
        }
        check_flows_dir(&config.flows_dir)?;
        let metrics = Arc::new(Metrics::new());
        let live = Arc::new(Live::new(metrics.clone()));
        let (mut engine, mut fuel_engine) = (config.engine, config.fuel_engine);
        engine.listen(live.clone());
        fuel_engine.listen(live.clone());
        let starter: Arc<dyn RunStarter> = match config.queue {
            Some(db) => Arc::new(Queue::new(db, engine.clone(), fuel_engine).policy(config.policy)),
            None => Arc::new(InProcess::new(
                config.executor.clone(),
                engine.clone(),
                fuel_engine,
                live.clone(),
            )),
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = Arc::new(AppState {
            flows_dir: config.flows_dir,
            db: config.executor.db().clone(),
            schedules: config.schedules,
            engine,
            starter,
            live: live.clone(),
            metrics,
            token: config.token,
            watchers: followed::Watchers::default(),
            streams: Arc::new(AtomicUsize::new(0)),
            max_streams: config.limits.max_event_streams,
            shutdown: shutdown_rx,
        });
        Ok(Self {
            listener,
            addr,
            state,
            live,
            limits: config.limits,
            shutdown,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `signal()` resolves, then stops accepting requests, ends the open event
    /// streams and waits for the runs in flight to end. A second `signal()` stops waiting:
    /// the runs left are then interrupted where their journal stands, and `flowhost runs
    /// resume` (or `POST /v1/runs/{id}/resume` on the next service) continues them. Returns
    /// how many runs were left unfinished.
    pub async fn run<F, Fut>(self, signal: F) -> Result<usize, ServeError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let app = router(self.state.clone()).layer(axum::middleware::from_fn_with_state(
            origin::Origins::new(self.addr),
            origin::check,
        ));
        let shutdown = self.shutdown;
        let first = signal();
        let stopping = shutdown.subscribe();
        let ticking = tokio::spawn(schedules::tick(self.state.clone(), shutdown.subscribe()));
        tokio::spawn(async move {
            first.await;
            let _ = shutdown.send(true);
        });
        conn::serve(self.listener, app, self.limits, stopping).await;
        // A tick being started finishes starting; no tick starts after this.
        let _ = ticking.await;
        let running = self.live.running();
        if running > 0 {
            tracing::info!(
                "waiting for {running} run(s) in flight to end; signal again to stop now (they stay resumable)"
            );
            tokio::select! {
                () = self.live.idle() => {}
                () = signal() => {}
            }
        }
        Ok(self.live.running())
    }
}

fn check_flows_dir(path: &Path) -> Result<(), ServeError> {
    std::fs::read_dir(path)
        .map(drop)
        .map_err(|source| ServeError::FlowsDir {
            path: path.to_path_buf(),
            source,
        })
}

/// Every route: the API under `/v1`, `/metrics`, `/healthz` and the console.
fn router(state: Arc<AppState>) -> Router {
    api::routes(state.clone())
        .merge(console::routes())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}
