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
//! The layers, each depending only on those before it: the contract's types
//! ([`TaskInfo`], [`Outcome`], [`TaskError`], [`HostFault`]); flows ([`FlowSpec`], read from
//! TOML or built in code, its entries tasks or [`Subflow`]s with a retry [`Controller`]) and
//! the [`Store`]; the wasmtime runtime ([`Plugin`], [`Sandbox`],
//! [`EngineConfig`]); the [`Engine`] (validation, the run state machine, its [`Journal`],
//! [`Listener`]s); then the run database ([`runs`]: journal, lease, resume) and the
//! conformance suite ([`conform`]).

mod contract;
mod engine;
mod events;
mod flow;
mod runtime;
mod store;

pub mod conform;
pub mod runs;
pub mod scaffold;
pub mod service;

pub use contract::{
    ACCEPTED_VERSIONS, CONTRACT, HostFault, Outcome, Progress, TaskError, TaskInfo, escape,
};
/// The error code of the task a cancelled run stopped before ([`Engine::cancel`]).
pub use engine::CANCELLED;
pub use engine::{
    Append, Batch, BatchError, BatchInput, BatchOutcome, BatchSummary, Checkpoint, Close, Engine,
    FlowError, Journal, JournalError, LoadedFlow, Prepare, Problem, ResumeError, RunError,
    RunReport, SubflowPlan, SubflowReport, TaskCheckpoint, TaskPlan, TaskReport, ValidationError,
};
pub use events::{Event, FlowState, Listener, LogListener, TaskState, Transition};
pub use flow::{
    Access, Controller, DirGrant, EffectiveLimits, Entry, FlowFileError, FlowSpec, ForEach,
    Instances, Iterations, Limits, NOT_RETRIED_BY_DEFAULT, ParameterizedForEach, Pattern, Retry,
    RetryPolicy, Strategy, Subflow, SubflowHead, TaskSpec,
};
pub use runtime::{
    COMPILE_TARGET, DirectCall, EngineConfig, EnvSource, EnvVar, GrantError, MAX_PLUGIN_BYTES,
    Pinned, Plugin, PluginError, Preopen, ProgressSink, Sandbox, SetupError,
};
pub use store::Store;

/// The wasmtime version this flowhost runs plugins with (compiled plugins are cached per
/// wasmtime version).
pub const WASMTIME_VERSION: &str = env!("FLOWHOST_WASMTIME_VERSION");
