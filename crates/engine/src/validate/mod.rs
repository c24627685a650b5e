//! Validation: before anything runs, every plugin is loaded and described and every entry
//! checked against it, all problems of a flow reported at once.
//!
//! Two halves: `prepare` walks the flow and does what has effects (loading and describing
//! plugins, building sandboxes, binding arguments and results to store names, warm pools);
//! `checks` holds the checks, each a small pure function returning the problems it found, so
//! that each is tested on its own, without a runtime or a component.

mod checks;
mod prepare;

pub(crate) use prepare::{RunStart, Static, check_run, prepare};
