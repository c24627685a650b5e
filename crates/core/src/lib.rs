//! flowhost's concepts, shared by every other crate: the task contract's types, the store and
//! its bindings, events and states, the flow model read from TOML or built in code, and
//! planning (the tree of subflows, the dependency graph, validation problems).
//!
//! It depends on no wasmtime and no async runtime, so the flow model and the plan can be
//! read, checked and stored by anything: the runtime, the engine and the run databases all
//! build on it, and nothing here points up at them.

pub mod checkpoint;
pub mod class;
pub mod contract;
pub mod events;
pub mod flow;
pub mod plan;
pub mod store;
