//! Where an interrupted run stood, as a run database recorded it: what
//! [`crate::LoadedFlow::resume`] needs to carry on without executing a succeeded task again.

use std::time::Duration;

use crate::error::TaskError;
use crate::events::{FlowState, TaskState};
use crate::plugin::Outcome;

/// A recorded run's state and every task's record, in flow order.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The flow's last recorded state: PENDING, RUNNING or REVERTING can be resumed.
    pub state: FlowState,
    /// One per task entry, in flow order.
    pub tasks: Vec<TaskCheckpoint>,
}

/// One task's record in a [`Checkpoint`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskCheckpoint {
    /// The entry's name; must match the flow being resumed.
    pub name: String,
    /// Last recorded state. RUNNING means the task may have run partly: it runs again.
    pub state: TaskState,
    /// The arguments it executed with, which its revert gets again.
    pub args: Option<String>,
    /// What its execute returned or why it failed, which its revert gets.
    pub outcome: Option<Outcome>,
    /// Why its execute failed.
    pub error: Option<TaskError>,
    /// Why its revert failed.
    pub revert_error: Option<TaskError>,
    /// How long its execute took.
    pub duration: Duration,
}

/// A checkpoint that cannot be resumed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResumeError {
    /// The run already ended; resuming would run nothing or undo a finished outcome.
    #[error("run {run} already finished ({state}); there is nothing to resume")]
    Finished {
        /// The run's id.
        run: String,
        /// How it ended.
        state: FlowState,
    },
    /// The flow's task entries are not those the run was recorded with.
    #[error("run {run} was recorded with tasks [{}] but the flow now has [{}]; it cannot be resumed", recorded.join(", "), current.join(", "))]
    TasksChanged {
        /// The run's id.
        run: String,
        /// Entry names in the record.
        recorded: Vec<String>,
        /// Entry names in the flow now.
        current: Vec<String>,
    },
    /// A task's record lacks what resuming it needs (a damaged or hand-edited record).
    #[error("run {run}: task `{task}` is recorded {state} but {problem}")]
    Incomplete {
        /// The run's id.
        run: String,
        /// The entry at fault.
        task: String,
        /// Its recorded state.
        state: TaskState,
        /// What is missing or wrong.
        problem: String,
    },
}
