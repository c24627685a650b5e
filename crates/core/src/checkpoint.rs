//! Where a recorded run stood: what a run database reads back and the engine resumes from.

use std::time::{Duration, SystemTime};

use crate::contract::{Outcome, TaskError};
use crate::events::{FlowState, TaskState};

/// A recorded run's state and every task's record, in flow order.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The flow's last recorded state: PENDING, RUNNING or REVERTING can be resumed.
    pub state: FlowState,
    /// One per task entry, in flow order.
    pub tasks: Vec<TaskCheckpoint>,
    /// When the run was created: a resumed run's deadline (the flow's `timeout_ms`) counts
    /// from here, not from the resumption. `None`: the deadline counts from the resumption.
    pub created_at: Option<SystemTime>,
    /// Inside maps: each element's record of each task its iteration reached, as
    /// [`TaskCheckpoint::state`] and the rest are for a task as a whole.
    pub elements: Vec<ElementCheckpoint>,
}

/// One task's record in one element's iteration of a map.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementCheckpoint {
    /// The task's position in the flow.
    pub index: usize,
    /// The element, from 0.
    pub element: u32,
    /// Last recorded state.
    pub state: TaskState,
    /// The arguments it executed with.
    pub args: Option<String>,
    /// What its revert gets.
    pub outcome: Option<Outcome>,
    /// Why its execute failed.
    pub error: Option<TaskError>,
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
    /// The attempt last started, from 1 (0 before the first).
    pub attempt: u32,
    /// When its next attempt is due, when a failed attempt is to be retried.
    pub retry_at: Option<SystemTime>,
    /// The iterations of the subflow controllers around it, outermost first, as last
    /// recorded: the run continues in them.
    pub iterations: Vec<u32>,
}
