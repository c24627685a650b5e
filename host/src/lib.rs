//! flowhost runs *flows* — ordered lists of tasks — where every task is a sandboxed
//! WebAssembly component implementing the `flowhost:task` contract (`wit/task.wit`).
//!
//! It brings OpenStack TaskFlow's `linear_flow` to WebAssembly: tasks start asynchronously
//! but run strictly in order, a store of named JSON values flows through the run, and when a
//! task fails the engine reverts it and every task that ran before it, in reverse order.
//!
//! ```no_run
//! use flowhost::{Engine, Flow, Store, TaskSpec};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let flow = Flow::linear("volume_create_api")
//!     .add(TaskSpec::new("extract", "extract_volume_request.wasm").rebind("size", "raw_size"))
//!     .add(TaskSpec::new("entry_create", "entry_create.wasm"));
//! let mut store = Store::new();
//! store.insert("raw_size", json!(10));
//!
//! let engine = Engine::new()?;
//! let report = engine.load(&flow, store).await?.run().await;
//! println!("{:?}", report.fetch("volume"));
//! # Ok(()) }
//! ```
//!
//! The pieces, in the order data flows through them: [`flow`] (flow files and the builder),
//! [`Engine::load`] (validation: plugins described, every requirement checked), [`Engine`]
//! runs, [`events`] (every transition to [`Listener`]s), [`RunReport`] (the final store).

pub mod batch;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod conform;
pub mod engine;
pub mod error;
pub mod events;
pub mod flow;
pub mod plugin;
mod pool;
pub mod report;
pub mod runs;
pub mod sandbox;
pub mod store;

pub use batch::{Batch, BatchInput, BatchOutcome, BatchSummary};
pub use cache::ComponentCache;
pub use checkpoint::{Checkpoint, ResumeError, TaskCheckpoint};
pub use config::EngineConfig;
pub use engine::{Engine, LoadedFlow, TaskPlan};
pub use error::{FlowFileError, PluginError, Problem, SetupError, TaskError, ValidationError};
pub use events::{Event, FlowState, Listener, LogListener, TaskState, Transition};
pub use flow::{Access, DirGrant, Flow, FlowSpec, Instances, TaskSpec};
pub use plugin::{Outcome, Plugin, TaskInfo};
pub use report::{RunReport, TaskReport};
pub use sandbox::{EffectiveLimits, EnvSource, EnvVar, Limits, Sandbox};
pub use store::Store;
