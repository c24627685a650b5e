//! One run's trace: a listener turning the run's transitions into spans, timed by the
//! transitions themselves (a span starts at the event entering RUNNING or REVERTING and ends
//! at the event leaving it), so that a trace shows exactly what the journal recorded.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use flowhost_core::contract::{Outcome, TaskError};
use flowhost_core::events::{Event, FlowState, Listener, TaskState, Transition};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, Span};

/// The run's span: `run <flow>`.
pub const RUN_SPAN: &str = "run";
/// A task attempt's span: `execute <task path>`.
pub const EXECUTE_SPAN: &str = "execute";
/// A revert's span: `revert <task path>`.
pub const REVERT_SPAN: &str = "revert";
/// Attribute: the flow's name (every span).
pub const FLOW: &str = "flowhost.flow";
/// Attribute: the run's id (every span).
pub const RUN_ID: &str = "flowhost.run_id";
/// Attribute: the task's path in the flow, `subflow/task` inside subflows (task spans).
pub const TASK: &str = "flowhost.task";
/// Attribute: which execution of the task, from 1 (task spans; a revert's is the attempt it
/// reverts).
pub const ATTEMPT: &str = "flowhost.attempt";
/// Attribute: the state the run or the call ended in (`SUCCESS`, `FAILURE`, `RETRYING`,
/// `REVERTED`, `REVERT_FAILURE`; a run's `REVERTED` or `FAILURE` too).
pub const STATE: &str = "flowhost.state";
/// Attribute: the task error's code, when the call failed.
pub const ERROR_CODE: &str = "flowhost.error.code";

/// The listener of one run.
pub(crate) struct RunTrace {
    tracer: SdkTracer,
    /// The context the run span starts under: the caller's span, or none (a new trace).
    parent: Context,
    spans: Mutex<Spans>,
}

/// The spans still open.
#[derive(Default)]
struct Spans {
    /// The run's span (inside its context, the parent of every task span) and its last state.
    run: Option<(Context, FlowState)>,
    /// Each executing task's attempt, by index (and element, for a map's element calls,
    /// several of which run at once).
    executing: HashMap<(usize, Option<u32>), Span>,
    /// Each reverting task's revert, by index (and element).
    reverting: HashMap<(usize, Option<u32>), Span>,
}

impl RunTrace {
    pub(crate) fn new(tracer: SdkTracer, traceparent: Option<&str>) -> Self {
        let parent = match traceparent {
            Some(header) => {
                let carrier = HashMap::from([("traceparent".to_owned(), header.to_owned())]);
                TraceContextPropagator::new().extract(&carrier)
            }
            None => Context::new(),
        };
        Self {
            tracer,
            parent,
            spans: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Spans> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a span at `at` under `parent` with the run's attributes and `more`.
    fn start(
        &self,
        name: String,
        event: &Event,
        parent: &Context,
        more: impl IntoIterator<Item = KeyValue>,
    ) -> Span {
        let mut attributes = vec![
            KeyValue::new(FLOW, event.flow.clone()),
            KeyValue::new(RUN_ID, event.run_id.clone()),
        ];
        attributes.extend(more);
        self.tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(event.at)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent)
    }
}

impl Listener for RunTrace {
    fn on_event(&self, event: &Event) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut spans = self.lock();
        // The run's span opens with the first transition heard: PENDING -> RUNNING for a new
        // run, wherever a resumed one stands.
        let (run, _) = spans.run.get_or_insert_with(|| {
            let span = self.start(
                format!("{RUN_SPAN} {}", event.flow),
                event,
                &self.parent,
                [],
            );
            (self.parent.with_span(span), FlowState::Running)
        });
        let run = run.clone();
        match &event.transition {
            Transition::Flow { to, .. } => {
                if let Some((_, state)) = spans.run.as_mut() {
                    *state = *to;
                }
                if to.is_finished() {
                    spans.run = None;
                    let span = run.span();
                    span.set_attribute(KeyValue::new(STATE, to.as_str()));
                    if *to != FlowState::Success {
                        span.set_status(Status::error(to.as_str()));
                    }
                    span.end_with_timestamp(event.at);
                }
            }
            Transition::Task {
                task,
                index,
                from,
                to,
                error,
                outcome,
                attempt,
                element,
                ..
            } => {
                let key = (*index, *element);
                let open = match from {
                    TaskState::Running => spans.executing.remove(&key),
                    TaskState::Reverting => spans.reverting.remove(&key),
                    _ => None,
                };
                if let Some(span) = open {
                    let error = error.as_ref().or(match outcome {
                        Some(Outcome::Error(error)) => Some(error),
                        _ => None,
                    });
                    end(span, *to, error, event.at);
                }
                let task_attributes = || {
                    [
                        KeyValue::new(TASK, task.clone()),
                        KeyValue::new(ATTEMPT, i64::from(*attempt)),
                    ]
                };
                match to {
                    TaskState::Running => {
                        let span = self.start(
                            format!("{EXECUTE_SPAN} {task}"),
                            event,
                            &run,
                            task_attributes(),
                        );
                        spans.executing.insert(key, span);
                    }
                    TaskState::Reverting => {
                        let span = self.start(
                            format!("{REVERT_SPAN} {task}"),
                            event,
                            &run,
                            task_attributes(),
                        );
                        spans.reverting.insert(key, span);
                    }
                    _ => {}
                }
            }
            // Progress details are the task's own data: not exported.
            Transition::Progress { .. } => {}
        }
        Ok(())
    }
}

/// Ends a task span in state `to`, marking it failed with the error's code (the message may
/// quote values, so it stays out).
fn end(mut span: Span, to: TaskState, error: Option<&TaskError>, at: SystemTime) {
    span.set_attribute(KeyValue::new(STATE, to.as_str()));
    if let Some(error) = error {
        span.set_attribute(KeyValue::new(ERROR_CODE, error.code.clone()));
    }
    if matches!(
        to,
        TaskState::Failure | TaskState::Retrying | TaskState::RevertFailure
    ) {
        let code = error.map_or(to.as_str().to_owned(), |e| e.code.clone());
        span.set_status(Status::error(code));
    }
    span.end_with_timestamp(at);
}

/// A run that stopped without a final state (its journal failed, its worker handed it
/// back): its open spans end now, the run's with the last state it reached, so the trace
/// shows how far it came.
impl Drop for RunTrace {
    fn drop(&mut self) {
        let spans = std::mem::take(&mut *self.lock());
        for mut span in spans
            .executing
            .into_values()
            .chain(spans.reverting.into_values())
        {
            span.end();
        }
        if let Some((run, state)) = spans.run {
            run.span()
                .set_attribute(KeyValue::new(STATE, state.as_str()));
            run.span().end();
        }
    }
}
