//! flowhost runs *flows* — ordered lists of tasks — where every task is a sandboxed
//! WebAssembly component implementing the `flowhost:task` contract (`wit/task.wit`).
//!
//! It brings OpenStack TaskFlow's `linear_flow` to WebAssembly: tasks start asynchronously
//! but run strictly in order, a store of named JSON values flows through the run, and when a
//! task fails the engine reverts it and every task that ran before it, in reverse order.
//!
//! ```no_run
//! use flowhost::{Engine, FlowSpec, Store, TaskSpec};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let flow = FlowSpec::linear("volume_create_api")
//!     .add(TaskSpec::new("extract", "extract_volume_request.wasm").rebind("size", "raw_size"))
//!     .add(TaskSpec::new("entry_create", "entry_create.wasm"));
//! let mut store = Store::new();
//! store.insert("raw_size", json!(10));
//!
//! let engine = Engine::new()?;
//! let report = engine.load(&flow, store).await?.run().await?;
//! println!("{:?}", report.fetch("volume"));
//! # Ok(()) }
//! ```
//!
//! This crate is the facade: one curated list of what the layers below offer, each crate
//! depending only on those before it. `flowhost-core`: the contract's types ([`TaskInfo`],
//! [`Outcome`], [`TaskError`], [`HostFault`]), flows ([`FlowSpec`], read from TOML or built in
//! code, its entries tasks or [`Subflow`]s with a retry [`Controller`]) and the [`Store`];
//! `flowhost-runtime`: the wasmtime runtime ([`Plugin`], [`Sandbox`], [`EngineConfig`]);
//! `flowhost-engine`: the [`Engine`] (validation, the run state machine, its [`Journal`],
//! [`Listener`]s) and the conformance suite ([`conform`]); `flowhost-runs` and its backends,
//! with `flowhost-executor`: the run database ([`runs`]: records, leases, the journal adapter,
//! resume, workers); `flowhost-service`: `flowhost serve` ([`service`]); `flowhost-telemetry`:
//! OpenTelemetry traces of runs ([`telemetry`]).
//!
//! Features: `sqlite` (default) the embedded run database, `postgres` (default) the one many
//! hosts share and its workers, `service` the HTTP service, `otlp` (default) traces exported
//! over OTLP/HTTP. With default features off the engine and the run database contract remain,
//! and neither rusqlite, tokio-postgres, axum nor the OpenTelemetry SDK is compiled.

pub use flowhost_core::checkpoint::{Checkpoint, ElementCheckpoint, TaskCheckpoint};
pub use flowhost_core::class::{Classify, ErrorClass};
pub use flowhost_core::contract::{
    ACCEPTED_VERSIONS, CONTRACT, HostFault, Outcome, Progress, TaskError, TaskInfo, escape,
};
pub use flowhost_core::events::{Event, FlowState, Listener, LogListener, TaskState, Transition};
pub use flowhost_core::flow::{
    Access, CatchUp, Controller, Cron, DirGrant, EffectiveLimits, Entry, FlowFileError, FlowSpec,
    ForEach, Instances, Iterations, Limits, MAX_CATCH_UP, Map, NOT_RETRIED_BY_DEFAULT,
    ParameterizedForEach, Pattern, Rate, Retry, RetryPolicy, Schedule, Strategy, Subflow,
    SubflowHead, TaskSpec, Wait, WaitFor, format_rfc3339, parse_rfc3339, signal_name_ok, tick_text,
};
pub use flowhost_core::plan::{Problem, ValidationError};
pub use flowhost_core::store::{InexactInteger, Store, inexact_integer};
/// The error code of a signal wait whose `timeout_ms` passed before its signal came.
pub use flowhost_engine::SIGNAL_TIMEOUT;
pub use flowhost_engine::{
    Append, Batch, BatchError, BatchInput, BatchOutcome, BatchSummary, Close, Engine, FlowError,
    Journal, JournalError, LoadedFlow, MapPlan, MapReport, PREPARED_FLOWS, Prepare, Prepared,
    ResumeError, RunError, RunReport, Signalled, SubflowPlan, SubflowReport, TaskPlan, TaskReport,
};
/// The error codes of a task a cancel stopped ([`Engine::cancel`]) and of a task whose
/// `when` could not be decided.
pub use flowhost_engine::{CANCELLED, CONDITION_FAILED, RUN_TIMEOUT};
pub use flowhost_engine::{CopiedTask, Suspender};
pub use flowhost_engine::{conform, scaffold};
pub use flowhost_runtime::{
    COMPILE_TARGET, DirectCall, EngineConfig, EnvSource, EnvVar, GrantError, MAX_PLUGIN_BYTES,
    Pinned, Plugin, PluginError, Preopen, ProgressSink, Sandbox, SetupError, WASMTIME_VERSION,
};
#[cfg(feature = "service")]
pub use flowhost_service as service;
#[cfg(feature = "otlp")]
pub use flowhost_telemetry as telemetry;

/// The run database: every run's record (flow, hashes, initial store, every transition,
/// arguments, results, errors) and its lease, so that an interrupted run can be resumed by
/// exactly one executor and operators can inspect runs afterwards.
///
/// Backends implement [`RunDb`](runs::RunDb); `SqliteRunDb` (feature `sqlite`) is the
/// default, `PgRunDb` (feature `postgres`) the one many hosts share, where `submit` queues
/// runs for `Worker`s. An [`Executor`](runs::Executor) records a run with
/// [`record`](runs::record) and continues an interrupted one with [`resume`](runs::resume).
pub mod runs {
    pub use flowhost_executor::{
        Executor, Policy, Restart, Restarted, ResumeFailure, Resumption, RunListener,
        already_started, is_traceparent, origin_of, record, resume,
    };
    #[cfg(feature = "postgres")]
    pub use flowhost_executor::{Worker, WorkerError, WorkerSummary, submit};
    pub use flowhost_runs::{
        Attempt, DEFAULT_LEASE_TTL, FIRST_TOKEN, Lease, LeaseHolder, NewRun, Omitted, Origin,
        Owner, PluginHash, PruneFilter, Pruned, RestartLinks, RunCount, RunDb, RunDbError,
        RunFilter, RunRecord, RunSummary, ScheduleDb, ScheduleRecord, StateChange, TaskRecord,
        hash_file, holder_may_be_alive, host_name, mask_passwords, sha256_hex,
    };
    #[cfg(feature = "postgres")]
    pub use flowhost_runs_postgres::{
        Claimed, FlowLimitState, PgRunDb, QUERY_DEADLINE, WorkerRecord, is_postgres_url,
    };
    #[cfg(feature = "sqlite")]
    pub use flowhost_runs_sqlite::{Durability, SqliteRunDb};
}
