//! Planning: a flow's entries as a tree of scopes (subflows and their controllers) and as one
//! dependency graph, and the problems either finds. Pure functions of the flow model, so
//! that `check`, the engine and the scheduler read one plan.

pub mod graph;
mod problem;
pub mod tree;

pub use problem::{Problem, ValidationError};
