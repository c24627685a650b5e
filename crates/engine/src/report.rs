//! The report of a finished run: its state, every task's outcome, and the final store.

use std::time::Duration;

use serde::{Serialize, Serializer};
use serde_json::Value;

use flowhost_core::contract::{Progress, TaskError};
use flowhost_core::events::{FlowState, TaskState};
use flowhost_core::flow::EffectiveLimits;
use flowhost_core::store::Store;

/// How a run ended. Returned by [`super::LoadedFlow::run`]; serialises to the CLI's `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id.
    pub run_id: String,
    /// The flow's name.
    pub flow: String,
    /// SUCCESS, REVERTED (a task failed, all undone) or FAILURE (a revert failed too); or
    /// WAITING: only waits were left (a signal, a timer longer than
    /// [`super::LoadedFlow::hold_timers`]), and the run stopped there, holding nothing, for
    /// whoever resumes it.
    pub state: FlowState,
    /// The final store. After a revert it no longer holds the reverted tasks' results.
    pub store: Store,
    /// Every task, in flow order.
    pub tasks: Vec<TaskReport>,
    /// Every subflow with a retry controller, outermost first, and the iteration it ended in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subflows: Vec<SubflowReport>,
    /// Every subflow that maps over a list, with how its elements ended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub maps: Vec<MapReport>,
    /// Wall time of the whole run.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
}

/// One task's part in a run.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    /// Entry name.
    pub name: String,
    /// Final state.
    pub state: TaskState,
    /// How long `execute` ran.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// Why `execute` failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Why `revert` failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revert_error: Option<TaskError>,
    /// What `revert` returned, when the plugin (contract 0.2) said what it undid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revert_result: Option<Value>,
    /// The last progress the task reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The attempt of `execute` made last, from 1: how many were made (0 when it never ran,
    /// more than 1 when its retry policy tried again). `runs show` lists each one.
    pub attempt: u32,
    /// Inside subflows with a retry controller: the iteration of each it last ran in,
    /// outermost first. The task's name is its path (`schedule/volume_cast`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub iterations: Vec<u32>,
    /// The limits its calls ran under, so a report of a deadline or cap failure shows the
    /// figure it was held to.
    pub limits: EffectiveLimits,
    /// While the task is WAITING: what for (`signal`, or a timer's `for_ms` / `until`) and,
    /// when the wait has an end, `due` (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Value>,
}

/// How far a map's elements came, for the report and `runs show`.
#[derive(Debug, Clone, Serialize)]
pub struct MapReport {
    /// The subflow's path (`attach`).
    pub path: String,
    /// How many elements its list held (0 before it started).
    pub elements: usize,
    /// How many elements' iterations succeeded.
    pub succeeded: usize,
    /// The elements whose iteration failed, from 0.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<usize>,
}

/// A subflow's retry controller in a run.
#[derive(Debug, Clone, Serialize)]
pub struct SubflowReport {
    /// The subflow's path (`schedule`, `reserve/quota`).
    pub path: String,
    /// The iteration it ended in, from 1.
    pub iteration: u32,
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

impl RunReport {
    /// A value of the final store: TaskFlow's `engine.storage.fetch(name)`.
    pub fn fetch(&self, name: &str) -> Option<&Value> {
        self.store.fetch(name)
    }

    /// Whether every task succeeded.
    pub fn succeeded(&self) -> bool {
        self.state == FlowState::Success
    }
}
