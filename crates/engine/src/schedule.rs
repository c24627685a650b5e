//! The scheduler: which task runs (or reverts) next, and how many at once. One scheduler
//! serves every pattern, walking the flow's dependency graph (`super::graph`): a linear
//! flow is a chain, so exactly one task is ever ready and the run is strictly sequential.
//!
//! Execute phase: a task starts once every task it depends on succeeded, up to
//! `max_parallel` calls in flight, each on its own fresh instance; among tasks ready
//! together, higher `priority` first, then file order. A failed attempt its
//! retry policy retries waits out its pause without holding up independent tasks. On the
//! first failure for good nothing new starts (pauses are cut short); tasks already running
//! finish. A cancel stops the calls in flight at once. Revert phase: a task is reverted once
//! every task depending on it is reverted (or never ran), so reverts go in reverse
//! dependency order, independent ones at once.
//!
//! Both phases count, per task, what it still waits for (dependencies not done, dependents
//! not reverted) and queue it when the count reaches zero: the cost is linear in tasks and
//! edges, never a rescan of the flow per finished call.
//!
//! Plugin calls run as tokio tasks so they progress while the run commits its journal;
//! every transition is made and committed before the call it announces is spawned.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

use super::cancel::{Signal, stopped_before, stopped_in_flight};
use super::journal::RunError;
use super::run::{Failed, Run, Stopped};
use super::task::Attempt;
use flowhost_core::contract::{Outcome, Progress, TaskError};
use flowhost_core::events::{FlowState, TaskState};
use flowhost_core::plan::tree::Tree;

/// What a finished piece of work reports back.
pub(super) enum Done {
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
    /// A timer's due time came (`super::wait`).
    Woken { index: usize },
    /// The journal answered whether a waiting task's signal came.
    Signalled {
        index: usize,
        taken: Result<Option<serde_json::Value>, super::JournalError>,
    },
}

type Call = Pin<Box<dyn Future<Output = Done> + Send>>;

/// The work of one phase in flight: calls, bounded by `max_parallel`, and pauses.
pub(super) struct Work {
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

    /// Looks for a waiting task's signal, once the transitions made so far are committed; not
    /// a call, so `max_parallel` does not count it.
    pub(super) fn watch(&mut self, look: Call) {
        self.ready.push(look);
    }

    /// Sleeps until `due`, then reports waiting task `index` woken; ended like a pause.
    pub(super) fn wake(&mut self, index: usize, due: Option<SystemTime>) {
        let left = due
            .and_then(|due| due.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        let handle = self.set.spawn(async move {
            tokio::time::sleep(left).await;
            Done::Woken { index }
        });
        self.pauses.push((index, handle));
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

    /// Ends every pause now, returning the tasks they were for: the run was cancelled, and
    /// each of them fails at once instead of waiting for an attempt that will not be made.
    fn end_pauses(&mut self) -> Vec<usize> {
        self.pauses
            .drain(..)
            .map(|(index, pause)| {
                pause.abort();
                index
            })
            .collect()
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
                    if matches!(done, Done::Executed { .. } | Done::Reverted { .. }) {
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
    /// in flight, the subflow is reverted and starts again. A cancel request stops the calls
    /// in flight at once (each fails `cancelled`) and starts nothing new.
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
        let priorities = self.loaded.tasks.iter().map(|t| t.priority).collect();
        let mut queue = Queue::new(&self.loaded.deps, priorities);
        queue.refill(&self.records, &due);
        if !failing {
            for index in 0..count {
                match self.records[index].state {
                    TaskState::Retrying => self.between_attempts(index, &mut work),
                    TaskState::Reverted if self.records[index].retry_at.is_some() => {
                        work.pause(index, self.records[index].retry_at)
                    }
                    TaskState::Waiting => self.watch(index, &mut work),
                    _ => {}
                }
            }
        }
        let mut cancel = self.loaded.cancellations.watch(&self.loaded.id);
        let mut cancel_seen = false;
        let mut suspend = self.loaded.suspensions.watch(&self.loaded.id);
        let mut suspending = false;
        loop {
            // A failure for good of tasks whose entries say `on_failure = "suspend"` reverts
            // nothing: the run suspends with the failure recorded (never when it is being
            // cancelled or its deadline passed: it is to stop).
            let stopped = self
                .loaded
                .cancellations
                .requested(&self.loaded.id)
                .is_some();
            if failing && !stopped && self.failure_suspends() {
                failing = false;
                suspending = true;
                self.suspend_now(&mut work);
            }
            if !failing && !suspending && self.loaded.suspensions.requested(&self.loaded.id) {
                suspending = true;
                self.suspend_now(&mut work);
            }
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
                && !restarting
                    .iter()
                    .any(|&s| self.loaded.scopes[s].tasks.clone().any(in_flight))
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
                // The tasks held up while the subflow waited go back to the queue.
                queue.refill(&self.records, &due);
                continue;
            }
            while !failing && !suspending && work.has_room() {
                let Some(index) = queue.pop() else { break };
                // A held task is queued again by the refill after its subflow restarts.
                if self.held(&restarting, index) {
                    continue;
                }
                let ready = match self.records[index].state {
                    TaskState::Pending => queue.waiting[index] == 0,
                    TaskState::Retrying | TaskState::Reverted | TaskState::Waiting => due[index],
                    _ => false,
                };
                if !ready {
                    continue;
                }
                due[index] = false;
                // A map's first task due: the map runs all its elements now.
                if let Some(m) = Tree::map_of(&self.loaded.maps, index)
                    .filter(|&m| self.loaded.maps[m].tasks.start == index)
                {
                    if self.run_map(m, &cancel).await? {
                        for done in self.loaded.maps[m].tasks.clone() {
                            queue.done(done, &self.records);
                        }
                    } else {
                        failing = true;
                    }
                    continue;
                }
                let cancelled = self.loaded.cancellations.requested(&self.loaded.id);
                // A wait is taken from the queue only to be stopped.
                if cancelled.is_none() && self.records[index].state == TaskState::Waiting {
                    continue;
                }
                if cancelled.is_none() && self.records[index].state == TaskState::Pending {
                    match self.decide(index) {
                        Ok(true) => {}
                        Ok(false) => {
                            queue.done(index, &self.records);
                            continue;
                        }
                        Err(error) => {
                            self.start(index, self.records[index].attempt + 1, None);
                            let failed = Failed {
                                outcome: None,
                                error,
                                called: false,
                            };
                            self.fail(index, failed);
                            self.escalate(index, &mut restarting, &mut failing);
                            continue;
                        }
                    }
                }
                if let Some(why) = cancelled {
                    // Cancelled (or past its deadline): this task fails without being
                    // called, and no controller retries it — the run is to stop. An attempt
                    // that failed before the pause did run: it is reverted with its outcome.
                    let record = &self.records[index];
                    let earlier = (record.state == TaskState::Retrying)
                        .then(|| record.outcome.clone())
                        .flatten();
                    if record.state != TaskState::Waiting {
                        self.start(index, self.records[index].attempt + 1, None);
                    }
                    let error = stopped_before(&self.loaded.tasks[index].name, why);
                    self.fail(
                        index,
                        Failed {
                            called: earlier.is_some(),
                            outcome: earlier,
                            error,
                        },
                    );
                    failing = true;
                    break;
                }
                if self.is_wait(index) {
                    self.begin_wait(index, &mut work);
                    continue;
                }
                if !self.start_attempt(index, &mut work, &cancel) {
                    self.escalate(index, &mut restarting, &mut failing);
                }
            }
            if failing {
                work.cancel_pauses();
                self.abandon_waits();
            }
            if work.is_idle() && restarting.is_empty() {
                if failing || self.waiting().is_empty() {
                    break;
                }
                // Stopped (cancelled, past its deadline) with only waits left: they fail
                // `cancelled` (`run-timeout`) when taken from the queue.
                if self
                    .loaded
                    .cancellations
                    .requested(&self.loaded.id)
                    .is_some()
                {
                    for index in self.waiting() {
                        due[index] = true;
                        queue.push(index);
                    }
                    continue;
                }
                // Only waits are left: those that can end now do; the others leave the run
                // to park (`super::wait`).
                let (waited, timed_out) = self.settle_waits(&mut work).await?;
                for &index in &waited {
                    queue.done(index, &self.records);
                }
                for &index in &timed_out {
                    self.escalate(index, &mut restarting, &mut failing);
                }
                if waited.is_empty() && timed_out.is_empty() && work.is_idle() {
                    break;
                }
                continue;
            }
            self.flush().await?;
            work.launch();
            let done = tokio::select! {
                done = work.next() => done,
                _ = cancel.requested(), if !cancel_seen => {
                    cancel_seen = true;
                    // Pauses end now: their tasks fail `cancelled` when taken from the queue,
                    // and so do the waits.
                    for index in work.end_pauses().into_iter().chain(self.waiting()) {
                        due[index] = true;
                        queue.push(index);
                    }
                    continue;
                }
                _ = suspend.requested(), if !suspending && !failing => continue,
            };
            let Some(done) = done else {
                continue;
            };
            match done {
                Done::Due { index } => {
                    due[index] = true;
                    queue.push(index);
                }
                Done::Woken { index } => {
                    if self.woken(index) {
                        queue.done(index, &self.records);
                    }
                }
                Done::Signalled { index, taken } => {
                    if self.signalled(index, taken)? {
                        queue.done(index, &self.records);
                    }
                }
                Done::Executed {
                    index,
                    result,
                    progress,
                } => {
                    self.progressed(index, &progress);
                    let Some(failed) = self.executed(index, result) else {
                        queue.done(index, &self.records);
                        continue;
                    };
                    let attempt = self.records[index].attempt;
                    let retry = &self.loaded.tasks[index].retry;
                    let cancelled = self
                        .loaded
                        .cancellations
                        .requested(&self.loaded.id)
                        .is_some();
                    let stopping = failing || cancelled || self.held(&restarting, index);
                    match retry
                        .delay_after(attempt, &failed.error.code)
                        .filter(|_| !stopping)
                    {
                        // Suspending: the attempt is due after its pause, which a resume
                        // waits out (or reverts first, with `revert_between`).
                        Some(pause) if suspending => self.retrying(index, failed, pause),
                        Some(pause) => {
                            self.retrying(index, failed, pause);
                            self.between_attempts(index, &mut work);
                        }
                        None => {
                            self.fail(index, failed);
                            if cancelled {
                                failing = true;
                            } else {
                                self.escalate(index, &mut restarting, &mut failing);
                            }
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
                        if cancel_seen {
                            due[index] = true;
                            queue.push(index);
                        } else if !failing && !suspending {
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
        // Done, unless it failed, was suspended or waits (what depends on a wait is still
        // PENDING).
        debug_assert!(
            failing
                || suspending
                || !self.waiting().is_empty()
                || self.records.iter().all(|r| r.state.is_done())
        );
        if suspending && !failing {
            self.flow_to(FlowState::Suspended);
        }
        Ok(failing)
    }

    /// Whether the tasks that failed for good all say `on_failure = "suspend"` (and there is
    /// one): the run then suspends instead of reverting. A failed revert is never suspended
    /// over: what it left behind is for the flow's revert to report.
    fn failure_suspends(&self) -> bool {
        let mut failed = self
            .records
            .iter()
            .zip(self.loaded.tasks.iter())
            .filter(|(record, _)| record.error.is_some())
            .peekable();
        failed.peek().is_some()
            && failed.all(|(record, task)| record.state == TaskState::Failure && task.suspends)
    }

    /// The run is to suspend: SUSPENDING is recorded, pauses before retries end (their tasks
    /// stay RETRYING with their due time, for a resume), and nothing new starts while the
    /// calls in flight finish.
    fn suspend_now(&mut self, work: &mut Work) {
        if self.state != FlowState::Suspending {
            self.flow_to(FlowState::Suspending);
        }
        work.end_pauses();
    }

    /// Whether pending task `index`, due to start, runs: false when a task whose results it
    /// needs (or that it runs `after`) was ignored, or its `when` is false — it is then
    /// IGNORE. An error when its `when` cannot be evaluated.
    fn decide(&mut self, index: usize) -> Result<bool, TaskError> {
        let ignored = self.loaded.ignored_with[index]
            .iter()
            .find(|&&d| self.records[d].state == TaskState::Ignore);
        if let Some(&because) = ignored {
            let with = self.loaded.tasks[because].name.clone();
            self.ignore(index, serde_json::json!({ "ignored_with": with }));
            return Ok(false);
        }
        let Some(condition) = &self.loaded.tasks[index].condition else {
            return Ok(true);
        };
        if condition.holds(&self.store)? {
            return Ok(true);
        }
        let when = condition.source.clone();
        self.ignore(index, serde_json::json!({ "when": when }));
        Ok(false)
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
    /// A cancel request (`cancel`) drops the call at once: the attempt fails `cancelled`.
    fn start_attempt(&mut self, index: usize, work: &mut Work, cancel: &Signal) -> bool {
        let attempt = self.records[index].attempt + 1;
        match self.give(index).and_then(|()| self.arguments(index)) {
            Ok(args) => {
                self.start(index, attempt, Some(args.clone()));
                let task = self.loaded.tasks[index].clone();
                let (sink, progress) = self.progress(index);
                let (run_id, order) = (self.loaded.id.clone(), self.order);
                let mut cancel = cancel.clone();
                work.call(Box::pin(async move {
                    let call = Attempt {
                        run_id: &run_id,
                        number: attempt,
                        progress: Some(&sink),
                        order,
                    };
                    // Dropping the call drops its instance, as a deadline does.
                    let result = tokio::select! {
                        result = task.execute(&args, call) => result,
                        why = cancel.requested() => Err(stopped_in_flight(&task.name, why)),
                    };
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
        match (
            revert,
            record.outcome.clone(),
            record.attempt_error.as_deref().cloned(),
        ) {
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
        let order = self.order;
        work.call(Box::pin(async move {
            let call = Attempt {
                run_id: &run_id,
                number: attempt,
                progress: Some(&sink),
                order,
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

    /// Visits the tasks whose dependents are all cleared: one with something to revert in
    /// `tasks` is ready to revert; one outside `tasks` stays uncleared (holding up what it
    /// needs); any other is cleared at once, in turn.
    fn settle(
        &self,
        tasks: &Range<usize>,
        ready: &mut BinaryHeap<usize>,
        left: &mut [usize],
        visit: &mut Vec<usize>,
    ) {
        while let Some(index) = visit.pop() {
            if self.needs_revert(index) {
                if tasks.contains(&index) {
                    ready.push(index);
                }
            } else {
                clear(&self.loaded.deps[index], left, visit);
            }
        }
    }

    /// Reverts the tasks of `tasks` that did something, in reverse dependency order, each
    /// given the failures among them; true when every revert succeeded. Each task counts the
    /// dependents it still waits for, so the walk is linear in tasks and edges.
    async fn revert_range(&mut self, tasks: Range<usize>) -> Result<bool, RunError> {
        let count = self.loaded.tasks.len();
        let failures: Arc<[(String, TaskError)]> = tasks
            .clone()
            .filter_map(|i| {
                self.records[i]
                    .error
                    .as_deref()
                    .map(|e| (self.loaded.tasks[i].name.clone(), e.clone()))
            })
            .collect();
        // For each task, its dependents not cleared yet. A task is cleared once reverted, or
        // — when it has nothing to revert (never ran, ignored, already reverted), or lies
        // outside `tasks` — as soon as its own dependents are: so the order passes through
        // it, and a linear flow reverts strictly backwards past an ignored task.
        let mut left = vec![0usize; count];
        for deps in self.loaded.deps.iter() {
            for &dep in deps {
                left[dep] += 1;
            }
        }
        // Highest index first: with one call at a time, reverse file order.
        let mut ready: BinaryHeap<usize> = BinaryHeap::new();
        let mut visit: Vec<usize> = (0..count).filter(|&i| left[i] == 0).collect();
        self.settle(&tasks, &mut ready, &mut left, &mut visit);
        let mut all_reverted = true;
        let mut work = Work::new(self.loaded.max_parallel);
        loop {
            while work.has_room() {
                let Some(index) = ready.pop() else { break };
                // A map's last task: the map is reverted as a whole, element by element.
                if let Some(m) = Tree::map_of(&self.loaded.maps, index) {
                    all_reverted &= self.revert_map(m).await?;
                    clear(&self.loaded.deps[index], &mut left, &mut visit);
                    self.settle(&tasks, &mut ready, &mut left, &mut visit);
                    continue;
                }
                let Some(outcome) = self.records[index].outcome.clone() else {
                    continue;
                };
                self.reverting(index);
                self.revert_call(index, outcome, failures.to_vec(), &mut work);
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
                clear(&self.loaded.deps[index], &mut left, &mut visit);
                self.settle(&tasks, &mut ready, &mut left, &mut visit);
            }
        }
        Ok(all_reverted)
    }
}

/// A task is cleared for the revert order: each task it depends on waits for one dependent
/// less, and is visited once it waits for none.
fn clear(deps: &[usize], left: &mut [usize], visit: &mut Vec<usize>) {
    for &dep in deps {
        left[dep] -= 1;
        if left[dep] == 0 {
            visit.push(dep);
        }
    }
}

/// The tasks that may start, for the execute phase: each task counts the tasks it depends
/// on that are not done yet, and enters the queue when that count reaches zero, so
/// scheduling costs one look per task and edge rather than a rescan of the flow per event.
/// Entries may be stale (a task queued twice, or no longer startable): the scheduler checks
/// each one it takes.
struct Queue {
    /// For each task, the tasks depending on it.
    dependents: Vec<Vec<usize>>,
    /// For each task, how many of the tasks it depends on are not done.
    waiting: Vec<usize>,
    /// Each task's `priority`.
    priorities: Vec<i32>,
    /// Startable tasks, highest priority first, then lowest index (file order).
    ready: BinaryHeap<(i32, Reverse<usize>)>,
}

impl Queue {
    fn new(deps: &[Vec<usize>], priorities: Vec<i32>) -> Self {
        let mut dependents = vec![Vec::new(); deps.len()];
        for (index, deps) in deps.iter().enumerate() {
            for &dep in deps {
                dependents[dep].push(index);
            }
        }
        Self {
            dependents,
            waiting: vec![0; deps.len()],
            priorities,
            ready: BinaryHeap::new(),
        }
    }

    /// Counts again from the tasks' states (at the start, and after a subflow restarted):
    /// queues every pending task whose dependencies are done, and every task `due`.
    fn refill(&mut self, records: &[super::run::Record], due: &[bool]) {
        self.waiting.fill(0);
        for (index, dependents) in self.dependents.iter().enumerate() {
            if !records[index].state.is_done() {
                for &dependent in dependents {
                    self.waiting[dependent] += 1;
                }
            }
        }
        self.ready.clear();
        for (index, record) in records.iter().enumerate() {
            if (record.state == TaskState::Pending && self.waiting[index] == 0) || due[index] {
                self.push(index);
            }
        }
    }

    fn push(&mut self, index: usize) {
        self.ready.push((self.priorities[index], Reverse(index)));
    }

    fn pop(&mut self) -> Option<usize> {
        self.ready.pop().map(|(_, Reverse(index))| index)
    }

    /// Task `index` is done: its dependents wait for one task less.
    fn done(&mut self, index: usize, records: &[super::run::Record]) {
        for &dependent in &self.dependents[index] {
            self.waiting[dependent] -= 1;
            if self.waiting[dependent] == 0 && records[dependent].state == TaskState::Pending {
                self.ready
                    .push((self.priorities[dependent], Reverse(dependent)));
            }
        }
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
