//! The scheduler: which task runs (or reverts) next, and how many at once. One scheduler
//! serves every pattern, walking the flow's dependency graph (`super::graph`): a linear
//! flow is a chain, so exactly one task is ever ready and the run is strictly sequential.
//!
//! Execute phase: a task starts once every task it depends on succeeded, up to
//! `max_parallel` calls in flight, each on its own fresh instance. A failed attempt its
//! retry policy retries waits out its pause without holding up independent tasks. On the
//! first failure for good nothing new starts (pauses are cut short); tasks already running
//! finish. Revert phase: a task is reverted once every task depending on it is reverted (or
//! never ran), so reverts go in reverse dependency order, independent ones at once.
//!
//! Plugin calls run as tokio tasks so they progress while the run commits its journal;
//! every transition is made and committed before the call it announces is spawned.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

use super::journal::RunError;
use super::run::{Failed, Run, Stopped};
use super::task::Attempt;
use flowhost_core::contract::{Outcome, Progress, TaskError};
use flowhost_core::events::{FlowState, TaskState};
use flowhost_core::plan::tree::Tree;

/// What a finished piece of work reports back.
enum Done {
    /// An `execute` call returned.
    Executed {
        index: usize,
        result: Result<String, TaskError>,
        /// The last progress the call reported, journaled with the task's next transition.
        progress: Arc<Mutex<Option<Progress>>>,
    },
    /// A `revert` call returned (with the revert's result, when the plugin gave one).
    Reverted {
        index: usize,
        result: Result<Option<String>, TaskError>,
        progress: Arc<Mutex<Option<Progress>>>,
    },
    /// The pause before a task's next attempt is over.
    Due { index: usize },
}

type Call = Pin<Box<dyn Future<Output = Done> + Send>>;

/// The work of one phase in flight: calls, bounded by `max_parallel`, and pauses.
struct Work {
    set: JoinSet<Done>,
    /// Calls made ready, spawned only once their transitions are committed.
    ready: Vec<Call>,
    /// Calls ready or in flight.
    busy: usize,
    max: usize,
    /// Each pause, with the task it is for.
    pauses: Vec<(usize, AbortHandle)>,
}

impl Work {
    fn new(max: usize) -> Self {
        Self {
            set: JoinSet::new(),
            ready: Vec::new(),
            busy: 0,
            max: max.max(1),
            pauses: Vec::new(),
        }
    }

    fn has_room(&self) -> bool {
        self.busy < self.max
    }

    fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.set.is_empty()
    }

    fn call(&mut self, call: Call) {
        self.busy += 1;
        self.ready.push(call);
    }

    /// Spawns the ready calls, in the run's span so their log lines carry the run's id.
    fn launch(&mut self) {
        for call in self.ready.drain(..) {
            self.set.spawn(call.instrument(tracing::Span::current()));
        }
    }

    /// Waits until `due`, then reports task `index` due.
    fn pause(&mut self, index: usize, due: Option<SystemTime>) {
        let left = due
            .and_then(|due| due.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        let handle = self.set.spawn(async move {
            tokio::time::sleep(left).await;
            Done::Due { index }
        });
        self.pauses.push((index, handle));
    }

    /// Cuts every pause short: the flow is failing, no further attempt is made.
    fn cancel_pauses(&mut self) {
        self.cancel_pauses_of(0..usize::MAX);
    }

    /// Cuts short the pauses of `tasks`: a subflow starts its next iteration without them.
    fn cancel_pauses_of(&mut self, tasks: Range<usize>) {
        self.pauses.retain(|(index, pause)| {
            let keep = !tasks.contains(index);
            if !keep {
                pause.abort();
            }
            keep
        });
    }

    /// The next finished piece of work; `None` when nothing is in flight.
    async fn next(&mut self) -> Option<Done> {
        loop {
            match self.set.join_next().await? {
                Ok(done) => {
                    if !matches!(done, Done::Due { .. }) {
                        self.busy -= 1;
                    }
                    return Some(done);
                }
                Err(error) if error.is_cancelled() => {}
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            }
        }
    }
}

impl Run {
    /// Executes every task not yet done; true when some task failed for good (the flow
    /// must revert). Picks up where a resumed run stood, pauses between attempts and a
    /// subflow's next iteration included. A task failing for good inside a subflow whose
    /// controller has an iteration left holds up that subflow's tasks; once none of them is
    /// in flight, the subflow is reverted and starts again.
    pub(super) async fn execute_tasks(&mut self) -> Result<bool, RunError> {
        let count = self.loaded.tasks.len();
        let mut work = Work::new(self.loaded.max_parallel);
        let mut failing = false;
        // Subflows to start again once their calls in flight are done.
        let mut restarting: Vec<usize> = Vec::new();
        for index in 0..count {
            if self.records[index].error.is_some() {
                self.escalate(index, &mut restarting, &mut failing);
            }
        }
        let mut due = vec![false; count];
        if !failing {
            for index in 0..count {
                match self.records[index].state {
                    TaskState::Retrying => self.between_attempts(index, &mut work),
                    TaskState::Reverted if self.records[index].retry_at.is_some() => {
                        work.pause(index, self.records[index].retry_at)
                    }
                    _ => {}
                }
            }
        }
        loop {
            if failing {
                restarting.clear();
            }
            let in_flight = |index: usize| {
                matches!(
                    self.records[index].state,
                    TaskState::Running | TaskState::Reverting
                )
            };
            if !restarting.is_empty()
                && !(0..count).any(|i| self.held(&restarting, i) && in_flight(i))
            {
                let scopes = std::mem::take(&mut restarting);
                for scope in outermost(&self.loaded.scopes, scopes) {
                    work.cancel_pauses_of(self.loaded.scopes[scope].tasks.clone());
                    if self.restart(scope).await? {
                        due[self.loaded.scopes[scope].tasks.clone()].fill(false);
                    } else {
                        failing = true;
                    }
                }
                continue;
            }
            if !failing {
                for (index, due) in due.iter_mut().enumerate() {
                    if !work.has_room() {
                        break;
                    }
                    if self.held(&restarting, index) {
                        continue;
                    }
                    let ready = match self.records[index].state {
                        TaskState::Pending => self.loaded.deps[index]
                            .iter()
                            .all(|&d| self.records[d].state == TaskState::Success),
                        TaskState::Retrying | TaskState::Reverted => *due,
                        _ => false,
                    };
                    if ready {
                        *due = false;
                        if self.loaded.cancellations.is_requested(&self.loaded.id) {
                            // Cancelled: this task fails without being called, and no
                            // controller retries it — the operator asked the run to stop.
                            self.start(index, self.records[index].attempt + 1, None);
                            let error = super::cancel::cancelled(&self.loaded.tasks[index].name);
                            self.fail(
                                index,
                                Failed {
                                    outcome: None,
                                    error,
                                    called: false,
                                },
                            );
                            failing = true;
                            break;
                        }
                        if !self.start_attempt(index, &mut work) {
                            self.escalate(index, &mut restarting, &mut failing);
                        }
                    }
                }
            }
            if failing {
                work.cancel_pauses();
            }
            if work.is_idle() && restarting.is_empty() {
                break;
            }
            self.flush().await?;
            work.launch();
            let Some(done) = work.next().await else {
                continue;
            };
            match done {
                Done::Due { index } => due[index] = true,
                Done::Executed {
                    index,
                    result,
                    progress,
                } => {
                    self.progressed(index, &progress);
                    let Some(failed) = self.executed(index, result) else {
                        continue;
                    };
                    let attempt = self.records[index].attempt;
                    let retry = &self.loaded.tasks[index].retry;
                    let stopping = failing || self.held(&restarting, index);
                    match retry
                        .delay_after(attempt, &failed.error.code)
                        .filter(|_| !stopping)
                    {
                        Some(pause) => {
                            self.retrying(index, failed, pause);
                            self.between_attempts(index, &mut work);
                        }
                        None => {
                            self.fail(index, failed);
                            self.escalate(index, &mut restarting, &mut failing);
                        }
                    }
                }
                Done::Reverted {
                    index,
                    result,
                    progress,
                } => {
                    self.progressed(index, &progress);
                    if self.reverted(index, result).is_ok() {
                        if !failing {
                            work.pause(index, self.records[index].retry_at);
                        }
                    } else {
                        // The failed attempt could not be undone: no further attempt; the
                        // flow reverts with the attempt's error.
                        let record = &mut self.records[index];
                        record.error = record.attempt_error.take();
                        record.retry_at = None;
                        failing = true;
                    }
                }
            }
        }
        debug_assert!(failing || self.records.iter().all(|r| r.state == TaskState::Success));
        Ok(failing)
    }

    /// Whether task `index` is in a subflow waiting to start again: it starts nothing new.
    fn held(&self, restarting: &[usize], index: usize) -> bool {
        restarting
            .iter()
            .any(|&s| self.loaded.scopes[s].tasks.contains(&index))
    }

    /// Task `index` failed for good: the innermost subflow around it whose controller has an
    /// iteration left starts again (a controller out of iterations hands the failure
    /// outwards with `revert`, or stops there with `revert_all`); with none, the flow fails.
    fn escalate(&self, index: usize, restarting: &mut Vec<usize>, failing: &mut bool) {
        let mut catcher = None;
        for s in Tree::scopes_of(&self.loaded.scopes, index) {
            let scope = &self.loaded.scopes[s];
            if self.iteration[s] < scope.iterations(&self.store) {
                catcher = Some(s);
                break;
            }
            if scope.reverts_all() {
                break;
            }
        }
        match catcher {
            Some(s) if !restarting.contains(&s) => restarting.push(s),
            Some(_) => {}
            None => *failing = true,
        }
    }

    /// Starts subflow `scope`'s next iteration: reverts its tasks that did something (in
    /// reverse dependency order), then puts them all back to PENDING in the next iteration,
    /// and subflows inside it back to their first. False when a revert failed: the flow
    /// then fails, as nothing can be retried over a task that could not be undone.
    async fn restart(&mut self, scope: usize) -> Result<bool, RunError> {
        let tasks = self.loaded.scopes[scope].tasks.clone();
        if !self.revert_range(tasks.clone()).await? {
            return Ok(false);
        }
        self.iteration[scope] += 1;
        for (s, inner) in self.loaded.scopes.iter().enumerate() {
            if s != scope && tasks.contains(&inner.tasks.start) {
                self.iteration[s] = 1;
            }
        }
        for index in tasks {
            self.reset(index);
        }
        Ok(true)
    }

    /// Starts the next attempt of task `index`; false when it failed before its plugin was
    /// called (its arguments could not be built), which is never retried.
    fn start_attempt(&mut self, index: usize, work: &mut Work) -> bool {
        let attempt = self.records[index].attempt + 1;
        match self.give(index).and_then(|()| self.arguments(index)) {
            Ok(args) => {
                self.start(index, attempt, Some(args.clone()));
                let task = self.loaded.tasks[index].clone();
                let (sink, progress) = self.progress(index);
                let run_id = self.loaded.id.clone();
                work.call(Box::pin(async move {
                    let call = Attempt {
                        run_id: &run_id,
                        number: attempt,
                        progress: Some(&sink),
                    };
                    let result = task.execute(&args, call).await;
                    Done::Executed {
                        index,
                        result,
                        progress,
                    }
                }));
                true
            }
            Err(error) => {
                self.start(index, attempt, None);
                self.fail(
                    index,
                    Failed {
                        outcome: None,
                        error,
                        called: false,
                    },
                );
                false
            }
        }
    }

    /// After a failed attempt: reverts it first when its policy says `revert_between`,
    /// else waits for the next.
    fn between_attempts(&mut self, index: usize, work: &mut Work) {
        let record = &self.records[index];
        let revert = self.loaded.tasks[index].retry.revert_between;
        match (revert, record.outcome.clone(), record.attempt_error.clone()) {
            (true, Some(outcome), Some(error)) => {
                let failures = vec![(self.loaded.tasks[index].name.clone(), error)];
                self.reverting(index);
                self.revert_call(index, outcome, failures, work);
            }
            _ => work.pause(index, record.retry_at),
        }
    }

    fn revert_call(
        &mut self,
        index: usize,
        outcome: Outcome,
        failures: Vec<(String, TaskError)>,
        work: &mut Work,
    ) {
        let task = self.loaded.tasks[index].clone();
        let args = self.records[index].args.clone();
        let (sink, progress) = self.progress(index);
        let (run_id, attempt) = (self.loaded.id.clone(), self.records[index].attempt.max(1));
        work.call(Box::pin(async move {
            let call = Attempt {
                run_id: &run_id,
                number: attempt,
                progress: Some(&sink),
            };
            let result = task.revert(&args, call, &outcome, &failures).await;
            Done::Reverted {
                index,
                result,
                progress,
            }
        }));
    }

    /// Whether task `index` did something a revert must undo and has not been reverted.
    fn needs_revert(&self, index: usize) -> bool {
        let record = &self.records[index];
        record.outcome.is_some()
            && matches!(
                record.state,
                TaskState::Success | TaskState::Failure | TaskState::Retrying
            )
    }

    /// Reverts every task that did something, each once every task depending on it is
    /// reverted; a revert that fails is recorded and the rest still go on. Then the flow ends
    /// REVERTED, or FAILURE when a revert failed. A resumed revert skips the tasks already
    /// reverted (or whose revert already failed).
    pub(super) async fn revert_tasks(&mut self) -> Stopped {
        if self.state != FlowState::Reverting {
            self.flow_to(FlowState::Reverting);
        }
        self.revert_range(0..self.loaded.tasks.len()).await?;
        self.reverts_done();
        Ok(())
    }

    /// Reverts the tasks of `tasks` that did something, in reverse dependency order, each
    /// given the failures among them; true when every revert succeeded.
    async fn revert_range(&mut self, tasks: Range<usize>) -> Result<bool, RunError> {
        let count = self.loaded.tasks.len();
        let failures: Arc<[(String, TaskError)]> = tasks
            .clone()
            .filter_map(|i| {
                self.records[i]
                    .error
                    .clone()
                    .map(|e| (self.loaded.tasks[i].name.clone(), e))
            })
            .collect();
        let mut dependents = vec![Vec::new(); count];
        for (index, deps) in self.loaded.deps.iter().enumerate() {
            for &dep in deps {
                dependents[dep].push(index);
            }
        }
        let mut all_reverted = true;
        let mut work = Work::new(self.loaded.max_parallel);
        loop {
            for index in tasks.clone().rev() {
                if !work.has_room() {
                    break;
                }
                let settled = |j: usize| {
                    !self.needs_revert(j) && self.records[j].state != TaskState::Reverting
                };
                if self.needs_revert(index) && dependents[index].iter().all(|&j| settled(j)) {
                    let Some(outcome) = self.records[index].outcome.clone() else {
                        continue;
                    };
                    self.reverting(index);
                    self.revert_call(index, outcome, failures.to_vec(), &mut work);
                }
            }
            if work.is_idle() {
                break;
            }
            self.flush().await?;
            work.launch();
            let Some(done) = work.next().await else { break };
            if let Done::Reverted {
                index,
                result,
                progress,
            } = done
            {
                self.progressed(index, &progress);
                // A failed revert is on the task's record; the others still go on.
                all_reverted &= self.reverted(index, result).is_ok();
            }
        }
        Ok(all_reverted)
    }
}

/// Of the subflows to start again, those not inside another: starting the outer one starts
/// the inner ones too.
fn outermost(scopes: &[flowhost_core::plan::tree::Scope], restarting: Vec<usize>) -> Vec<usize> {
    // Scopes are listed outer before inner, so `o < s` tells which of two equal ranges is outer.
    let inside = |s: usize, o: usize| {
        o < s
            && scopes[o].tasks.start <= scopes[s].tasks.start
            && scopes[s].tasks.end <= scopes[o].tasks.end
    };
    restarting
        .iter()
        .copied()
        .filter(|&s| !restarting.iter().any(|&o| inside(s, o)))
        .collect()
}
