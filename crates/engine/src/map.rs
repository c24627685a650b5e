//! Map fan-out: a subflow whose tasks run once per element of a list in the store, up to
//! the run's `max_parallel` iterations at once, collecting what each iteration provided
//! last (TaskFlow's `MapFunctorTask` and `ReduceFunctorTask`, for subflows of tasks).
//!
//! The scheduler hands a map's whole range of tasks to [`Run::run_map`] when its first task
//! is due; the tasks' own records then stand for them as a whole (RUNNING while the map
//! runs, SUCCESS once every element's iteration succeeded), and each element's calls have a
//! record of their own, journaled with the element's index. So a resumed run knows which
//! elements finished and runs only the others.
//!
//! Memory stays flat in the number of elements: an iteration reads its element from the
//! store's list when it starts and sees the store through a small view built per call (its
//! element and what its own earlier tasks provided, over the run's store) — no store and no
//! instance per element. What grows is what must: each element's collected value, and the
//! arguments and outcome of each call, which a revert hands back to the plugin.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::cancel::{Signal, stopped_before, stopped_in_flight};
use super::journal::RunError;
use super::report::MapReport;
use super::run::Run;
use super::task::Attempt;
use flowhost_core::checkpoint::{ElementCheckpoint, TaskCheckpoint};
use flowhost_core::contract::{HostFault, Outcome, TaskError};
use flowhost_core::events::{TaskState, Transition};
use flowhost_core::store::{Store, quoted};

/// One call of one element's iteration: what its revert needs.
#[derive(Debug, Clone)]
struct Slot {
    state: TaskState,
    args: String,
    outcome: Option<Outcome>,
    error: Option<TaskError>,
}

impl Slot {
    const PENDING: Slot = Slot {
        state: TaskState::Pending,
        args: String::new(),
        outcome: None,
        error: None,
    };

    /// Whether its execute did something a revert must undo, not undone yet.
    fn needs_revert(&self) -> bool {
        self.outcome.is_some() && matches!(self.state, TaskState::Success | TaskState::Failure)
    }
}

/// Where one map stands: per element, the calls of its iteration (none before it started)
/// and, once it succeeded, its collected value.
#[derive(Default)]
pub(super) struct MapState {
    calls: Vec<Option<Box<[Slot]>>>,
    collected: Vec<Option<Value>>,
}

/// An element call made ready, spawned once its RUNNING is committed.
type Call = Pin<Box<dyn Future<Output = Called> + Send>>;

/// What a finished element call reports back.
struct Called {
    element: usize,
    pos: usize,
    took: Duration,
    result: Result<String, TaskError>,
}

impl MapState {
    fn slots(&mut self, element: usize, width: usize) -> &mut [Slot] {
        if self.calls.len() <= element {
            self.calls.resize(element + 1, None);
        }
        self.calls[element].get_or_insert_with(|| vec![Slot::PENDING; width].into_boxed_slice())
    }

    /// Puts back what a recorded run's elements did: a call caught RUNNING runs again, one
    /// caught REVERTING is reverted again.
    pub(super) fn restore(&mut self, width: usize, start: usize, recorded: &[&ElementCheckpoint]) {
        for record in recorded {
            let slot = &mut self.slots(record.element as usize, width)[record.index - start];
            slot.state = match record.state {
                TaskState::Running => TaskState::Pending,
                TaskState::Reverting if record.error.is_some() => TaskState::Failure,
                TaskState::Reverting => TaskState::Success,
                state => state,
            };
            slot.args = record.args.clone().unwrap_or_default();
            slot.outcome = (slot.state != TaskState::Pending)
                .then(|| record.outcome.clone())
                .flatten();
            slot.error = record.error.clone();
        }
    }
}

impl Run {
    /// Runs map `m` (its first task being due): every element not yet done, iterations at
    /// once up to `max_parallel`, each iteration's tasks in order. True when every element
    /// succeeded: its tasks are SUCCESS and the store holds `collect`. On the first failure
    /// nothing new starts; once the calls in flight are done, every iteration that ran is
    /// reverted, newest element first, each one's tasks in reverse order — and false is
    /// returned for the flow's usual revert of what ran before.
    pub(super) async fn run_map(&mut self, m: usize, cancel: &Signal) -> Result<bool, RunError> {
        let scope = self.loaded.maps[m].clone();
        let (start, width) = (scope.tasks.start, scope.tasks.len());
        for index in scope.tasks.clone() {
            self.start(index, 1, None);
        }
        let count = match self.store.fetch(&scope.map.over) {
            Some(Value::Array(list)) => list.len(),
            found => {
                let what = match found {
                    None => "the store lacks it".to_owned(),
                    Some(value) => format!("it holds {}", kind(value)),
                };
                let error = HostFault::MissingArguments.error(format!(
                    "map `{}`: `{}` must be an array in the store, but {what}",
                    scope.path, scope.map.over
                ));
                self.map_failed(m, start, error, true);
                self.flush().await?;
                return Ok(false);
            }
        };
        let state = &mut self.maps[m];
        state.collected.resize(count, None);
        // A resumed map whose iteration had failed goes on reverting.
        let mut failure: Option<(usize, TaskError)> =
            state.calls.iter().flatten().find_map(|calls| {
                calls
                    .iter()
                    .enumerate()
                    .find_map(|(pos, s)| s.error.clone().map(|e| (pos, e)))
            });
        let mut set: JoinSet<Called> = JoinSet::new();
        let mut ready: Vec<Call> = Vec::new();
        let mut next = 0usize;
        let max = self.loaded.max_parallel.max(1);
        loop {
            while failure.is_none() && set.len() + ready.len() < max && next < count {
                let element = next;
                next += 1;
                let Some(pos) = self.next_call(m, element, width) else {
                    continue;
                };
                if let Some(why) = self.loaded.cancellations.requested(&self.loaded.id) {
                    let index = start + pos;
                    self.element_start(m, element, index, None);
                    let error = stopped_before(&self.loaded.tasks[index].name, why);
                    self.element_failed(m, element, index, error.clone(), None, Duration::ZERO);
                    failure = Some((pos, error));
                    break;
                }
                if let Err(error) = self.call(m, element, pos, &mut ready, cancel) {
                    failure = Some((pos, error));
                }
            }
            if set.is_empty() && ready.is_empty() {
                break;
            }
            self.flush().await?;
            for call in ready.drain(..) {
                set.spawn(call.instrument(tracing::Span::current()));
            }
            let called = match set.join_next().await {
                Some(Ok(called)) => called,
                Some(Err(error)) if error.is_cancelled() => continue,
                Some(Err(error)) => std::panic::resume_unwind(error.into_panic()),
                None => break,
            };
            let Called {
                element,
                pos,
                took,
                result,
            } = called;
            let index = start + pos;
            match self.element_executed(m, element, index, result, took) {
                Ok(()) if pos + 1 < width => {
                    if failure.is_none()
                        && let Err(error) = self.call(m, element, pos + 1, &mut ready, cancel)
                    {
                        failure = Some((pos + 1, error));
                    }
                }
                Ok(()) => {}
                Err(error) => {
                    failure.get_or_insert((pos, error));
                }
            }
        }
        if let Some((pos, error)) = failure {
            self.flush().await?;
            let reverted = self
                .revert_elements(
                    m,
                    vec![(self.loaded.tasks[start + pos].name.clone(), error.clone())],
                )
                .await?;
            self.map_failed(m, start + pos, error, reverted);
            self.flush().await?;
            return Ok(false);
        }
        let collected = std::mem::take(&mut self.maps[m].collected);
        let value = Value::Array(
            collected
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect(),
        );
        let last = scope.tasks.end - 1;
        for index in scope.tasks.clone() {
            let result = (index == last).then(|| value.clone());
            self.map_task_to(index, TaskState::Success, result, None);
        }
        self.records[last].outcome = Some(Outcome::Result(value.to_string()));
        self.store.insert(scope.map.collect.clone(), value);
        Ok(true)
    }

    /// The first call of `element`'s iteration not done yet, if any; an element already done
    /// gets its collected value back from its last call's outcome.
    fn next_call(&mut self, m: usize, element: usize, width: usize) -> Option<usize> {
        let start = self.loaded.maps[m].tasks.start;
        let slots = self.maps[m].slots(element, width);
        match slots.iter().position(|s| s.state != TaskState::Success) {
            Some(pos) => Some(pos),
            None => {
                let last = slots[width - 1].outcome.clone();
                let value = self.provided(start + width - 1, last.as_ref());
                self.maps[m].collected[element] = Some(value);
                None
            }
        }
    }

    /// What task `index` provided with `outcome`: its one provided value, an object of
    /// several, or null when it provides nothing.
    fn provided(&self, index: usize, outcome: Option<&Outcome>) -> Value {
        let Some(Outcome::Result(text)) = outcome else {
            return Value::Null;
        };
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Value::Null;
        };
        match self.loaded.tasks[index].binding.outputs(value) {
            Ok(outputs) if outputs.len() == 1 => outputs
                .into_iter()
                .next()
                .map(|(_, v)| v)
                .unwrap_or_default(),
            Ok(outputs) if outputs.is_empty() => Value::Null,
            Ok(outputs) => Value::Object(outputs.into_iter().collect()),
            Err(_) => Value::Null,
        }
    }

    /// Starts the call of `element`'s task at `pos`: RUNNING with its arguments, read through
    /// the iteration's view of the store. An error when they cannot be built (the call then
    /// failed without being made).
    fn call(
        &mut self,
        m: usize,
        element: usize,
        pos: usize,
        ready: &mut Vec<Call>,
        cancel: &Signal,
    ) -> Result<(), TaskError> {
        let start = self.loaded.maps[m].tasks.start;
        let index = start + pos;
        let args = self.element_arguments(m, element, pos);
        let args = match args {
            Ok(args) => args,
            Err(error) => {
                self.element_start(m, element, index, None);
                self.element_failed(m, element, index, error.clone(), None, Duration::ZERO);
                return Err(error);
            }
        };
        self.element_start(m, element, index, Some(args.clone()));
        let task = self.loaded.tasks[index].clone();
        let run_id = self.loaded.id.clone();
        let order = self.order;
        let mut cancel = cancel.clone();
        let call = async move {
            let begun = Instant::now();
            let attempt = Attempt {
                run_id: &run_id,
                number: 1,
                progress: None,
                order,
            };
            let result = tokio::select! {
                result = task.execute(&args, attempt) => result,
                why = cancel.requested() => Err(stopped_in_flight(&task.name, why)),
            };
            Called {
                element,
                pos,
                took: begun.elapsed(),
                result,
            }
        };
        ready.push(Box::pin(call));
        Ok(())
    }

    /// The arguments of `element`'s task at `pos`: the names it reads, from its iteration
    /// (the element, what the iteration's earlier tasks provided) over the run's store.
    fn element_arguments(&self, m: usize, element: usize, pos: usize) -> Result<String, TaskError> {
        let scope = &self.loaded.maps[m];
        let index = scope.tasks.start + pos;
        let mut own: BTreeMap<String, Value> = BTreeMap::new();
        let item = self
            .store
            .fetch(&scope.map.over)
            .and_then(|list| list.get(element))
            .cloned()
            .ok_or_else(|| {
                HostFault::MissingArguments.error(format!(
                    "map `{}`: `{}` holds no element {element}",
                    scope.path, scope.map.over
                ))
            })?;
        own.insert(scope.map.each.clone(), item);
        if let Some(Some(slots)) = self.maps[m].calls.get(element) {
            for (before, slot) in slots.iter().enumerate().take(pos) {
                if let Some(Outcome::Result(text)) = &slot.outcome
                    && let Ok(value) = serde_json::from_str::<Value>(text)
                    && let Ok(outputs) = self.loaded.tasks[scope.tasks.start + before]
                        .binding
                        .outputs(value)
                {
                    own.extend(outputs);
                }
            }
        }
        let task = &self.loaded.tasks[index];
        let binding = &task.binding;
        let view: Store = binding
            .required
            .iter()
            .chain(&binding.optional)
            .filter_map(|(_, key)| {
                own.get(key)
                    .or_else(|| self.store.fetch(key))
                    .map(|v| (key.clone(), v.clone()))
            })
            .collect();
        binding
            .arguments(&view)
            .map_err(|missing| {
                let names: Vec<String> = missing.into_iter().map(|(_, key)| key).collect();
                HostFault::MissingArguments.error(format!("store lacks {}", quoted(&names)))
            })
            .map(|args| args.to_string())
            .and_then(|args| task.sandbox.limits.check_args(&args).map(|()| args))
    }

    /// Takes what `element`'s call of task `index` returned: SUCCESS (collecting the value
    /// when it is the iteration's last task), or the error that fails the map.
    fn element_executed(
        &mut self,
        m: usize,
        element: usize,
        index: usize,
        result: Result<String, TaskError>,
        took: Duration,
    ) -> Result<(), TaskError> {
        let scope = &self.loaded.maps[m];
        let last = index + 1 == scope.tasks.end;
        let task = &self.loaded.tasks[index];
        let (text, error) = match result {
            Ok(text) => {
                let checked = serde_json::from_str::<Value>(&text)
                    .map_err(|e| {
                        HostFault::InvalidResult.error(format!("result is not valid JSON: {e}"))
                    })
                    .and_then(|value| Ok((task.binding.outputs(value.clone())?, value)));
                match checked {
                    Ok((_, value)) => {
                        let outcome = Outcome::Result(text);
                        self.element_to(m, element, index, TaskState::Success, took, |t| {
                            t.result = Some(value);
                            t.outcome = Some(outcome);
                        });
                        if last {
                            let outcome = self.maps[m].calls[element].as_ref().and_then(|s| {
                                s[index - self.loaded.maps[m].tasks.start].outcome.clone()
                            });
                            let value = self.provided(index, outcome.as_ref());
                            self.maps[m].collected[element] = Some(value);
                        }
                        return Ok(());
                    }
                    Err(error) => (Some(text), error),
                }
            }
            Err(error) => (None, error),
        };
        let outcome = Some(text.map_or_else(|| Outcome::Error(error.clone()), Outcome::Result));
        self.element_failed(m, element, index, error.clone(), outcome, took);
        Err(error)
    }

    /// Reverts every element's iteration that did something, newest element first, each
    /// one's tasks in reverse order, one call at a time; true when every revert succeeded.
    /// `failures` are what each revert is told went wrong.
    pub(super) async fn revert_elements(
        &mut self,
        m: usize,
        failures: Vec<(String, TaskError)>,
    ) -> Result<bool, RunError> {
        let start = self.loaded.maps[m].tasks.start;
        let mut all = true;
        for element in (0..self.maps[m].calls.len()).rev() {
            let Some(width) = self.maps[m].calls[element].as_ref().map(|s| s.len()) else {
                continue;
            };
            for pos in (0..width).rev() {
                let slot = self.maps[m].calls[element].as_ref().map(|s| s[pos].clone());
                let Some(slot) = slot.filter(Slot::needs_revert) else {
                    continue;
                };
                let index = start + pos;
                self.element_to(
                    m,
                    element,
                    index,
                    TaskState::Reverting,
                    Duration::ZERO,
                    |_| {},
                );
                self.flush().await?;
                let task = self.loaded.tasks[index].clone();
                let outcome = slot.outcome.clone().unwrap_or_else(|| {
                    Outcome::Error(HostFault::HostError.error("no outcome".to_owned()))
                });
                let begun = Instant::now();
                let attempt = Attempt {
                    run_id: &self.loaded.id,
                    number: 1,
                    progress: None,
                    order: self.order,
                };
                let result = task.revert(&slot.args, attempt, &outcome, &failures).await;
                let took = begun.elapsed();
                match result {
                    Ok(result) => {
                        let result = result
                            .map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text)));
                        self.element_to(m, element, index, TaskState::Reverted, took, |t| {
                            t.result = result;
                        });
                    }
                    Err(error) => {
                        all = false;
                        self.element_to(m, element, index, TaskState::RevertFailure, took, |t| {
                            t.error = Some(error);
                        });
                    }
                }
            }
        }
        self.flush().await?;
        Ok(all)
    }

    /// Reverts map `m` as a whole, its tasks having succeeded (the flow reverts after a later
    /// failure): every element's iteration, then its tasks REVERTED (or REVERT_FAILURE).
    pub(super) async fn revert_map(&mut self, m: usize) -> Result<bool, RunError> {
        let tasks = self.loaded.maps[m].tasks.clone();
        for index in tasks.clone() {
            if self.records[index].state == TaskState::Success {
                self.map_task_to(index, TaskState::Reverting, None, None);
            }
        }
        let failures: Vec<(String, TaskError)> = self
            .records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.error
                    .as_deref()
                    .map(|e| (self.loaded.tasks[i].name.clone(), e.clone()))
            })
            .collect();
        let all = self.revert_elements(m, failures).await?;
        let collect = self.loaded.maps[m].map.collect.clone();
        self.store.remove(&collect);
        for index in tasks {
            if self.records[index].state == TaskState::Reverting {
                let to = if all {
                    TaskState::Reverted
                } else {
                    TaskState::RevertFailure
                };
                let error = (!all).then(|| {
                    HostFault::HostError.error("a revert of one of its elements failed".to_owned())
                });
                self.map_task_to(index, to, None, error.clone());
                self.records[index].revert_error = error.map(Box::new);
            }
            self.records[index].outcome = None;
        }
        Ok(all)
    }

    /// The map failed at task `failed` with `error`, its iterations reverted (`reverted`:
    /// all with success): that task FAILURE, the others REVERTED (or REVERT_FAILURE).
    fn map_failed(&mut self, m: usize, failed: usize, error: TaskError, reverted: bool) {
        for index in self.loaded.maps[m].tasks.clone() {
            if index == failed {
                self.map_task_to(index, TaskState::Failure, None, Some(error.clone()));
                self.records[index].error = Some(Box::new(error.clone()));
                if !reverted {
                    let why = HostFault::HostError
                        .error("a revert of one of its elements failed".to_owned());
                    self.map_task_to(index, TaskState::Reverting, None, None);
                    self.map_task_to(index, TaskState::RevertFailure, None, Some(why.clone()));
                    self.records[index].revert_error = Some(Box::new(why));
                }
            } else if reverted {
                self.map_task_to(index, TaskState::Reverted, None, None);
            } else {
                let why =
                    HostFault::HostError.error("a revert of one of its elements failed".to_owned());
                self.map_task_to(index, TaskState::RevertFailure, None, Some(why.clone()));
                self.records[index].revert_error = Some(Box::new(why));
            }
        }
    }

    /// Moves `element`'s call of task `index` to RUNNING with its arguments.
    fn element_start(&mut self, m: usize, element: usize, index: usize, args: Option<String>) {
        self.element_to(m, element, index, TaskState::Running, Duration::ZERO, |t| {
            t.args = args;
        });
    }

    /// Moves `element`'s call of task `index` to FAILURE.
    fn element_failed(
        &mut self,
        m: usize,
        element: usize,
        index: usize,
        error: TaskError,
        outcome: Option<Outcome>,
        took: Duration,
    ) {
        self.element_to(m, element, index, TaskState::Failure, took, |t| {
            t.error = Some(error);
            t.outcome = outcome;
        });
    }

    /// Moves `element`'s call of task `index` to `to`, journaling it with the element; what
    /// `fill` sets (arguments, result, outcome, error) goes on the element's record too.
    fn element_to(
        &mut self,
        m: usize,
        element: usize,
        index: usize,
        to: TaskState,
        duration: Duration,
        fill: impl FnOnce(&mut Fill),
    ) {
        let mut detail = Fill::default();
        fill(&mut detail);
        let start = self.loaded.maps[m].tasks.start;
        let width = self.loaded.maps[m].tasks.len();
        let slot = &mut self.maps[m].slots(element, width)[index - start];
        let from = slot.state;
        debug_assert!(from.can_move_to(to), "element transition {from} -> {to}");
        slot.state = to;
        if let Some(args) = &detail.args {
            slot.args.clone_from(args);
        }
        if to == TaskState::Running {
            slot.outcome = None;
            slot.error = None;
        }
        if detail.outcome.is_some() {
            slot.outcome.clone_from(&detail.outcome);
        }
        if to == TaskState::Failure {
            slot.error.clone_from(&detail.error);
        }
        let task = self.loaded.tasks[index].name.clone();
        self.emit(
            Transition::Task {
                task,
                index,
                from,
                to,
                duration,
                result: detail.result,
                error: detail.error,
                args: detail.args,
                outcome: detail.outcome,
                attempt: 1,
                retry_at: None,
                iterations: Vec::new(),
                element: Some(element as u32),
            },
            SystemTime::now(),
        );
    }

    /// Moves a map's task as a whole (not one element's call) to `to`.
    fn map_task_to(
        &mut self,
        index: usize,
        to: TaskState,
        result: Option<Value>,
        error: Option<TaskError>,
    ) {
        let outcome = result.as_ref().map(|v| Outcome::Result(v.to_string()));
        self.whole_task_to(index, to, result, error, outcome);
    }

    /// Puts map `m`'s task `index` back where its record says it stood as a whole: caught
    /// RUNNING, the map runs again (its finished elements are not); SUCCESS (or caught
    /// REVERTING after it), the store holds `collect` again.
    pub(super) fn restore_map_task(&mut self, m: usize, index: usize, task: TaskCheckpoint) {
        let record = &mut self.records[index];
        record.state = match task.state {
            TaskState::Running => TaskState::Pending,
            TaskState::Reverting if task.error.is_some() => TaskState::Failure,
            TaskState::Reverting => TaskState::Success,
            state => state,
        };
        record.attempt = u32::from(record.state != TaskState::Pending);
        if record.state != TaskState::Pending {
            record.error = task.error.map(Box::new);
            record.revert_error = task.revert_error.map(Box::new);
        }
        record.duration = task.duration;
        let scope = &self.loaded.maps[m];
        if index + 1 == scope.tasks.end
            && record.state == TaskState::Success
            && let Some(Outcome::Result(text)) = &task.outcome
            && let Ok(value) = serde_json::from_str::<Value>(text)
        {
            record.outcome = task.outcome.clone();
            self.store.insert(scope.map.collect.clone(), value);
        }
    }

    /// The report of each map: how many elements there were and how they ended.
    pub(super) fn map_reports(&self) -> Vec<MapReport> {
        self.loaded
            .maps
            .iter()
            .zip(&self.maps)
            .map(|(scope, state)| {
                let elements = self
                    .store
                    .fetch(&scope.map.over)
                    .and_then(Value::as_array)
                    .map_or(state.calls.len(), Vec::len);
                let mut succeeded = 0;
                let mut failed = Vec::new();
                for (element, calls) in state.calls.iter().enumerate() {
                    let Some(calls) = calls else { continue };
                    if calls.iter().any(|s| s.error.is_some()) {
                        failed.push(element);
                    } else if calls
                        .iter()
                        .all(|s| matches!(s.state, TaskState::Success | TaskState::Reverted))
                    {
                        succeeded += 1;
                    }
                }
                MapReport {
                    path: scope.path.clone(),
                    elements,
                    succeeded,
                    failed,
                }
            })
            .collect()
    }
}

/// What an element transition carries besides its states.
#[derive(Default)]
struct Fill {
    result: Option<Value>,
    error: Option<TaskError>,
    args: Option<String>,
    outcome: Option<Outcome>,
}

/// A JSON value's kind, as a message names it.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
