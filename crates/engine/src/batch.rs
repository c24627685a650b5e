//! Batches: one flow run once per input (an initial store), many runs at once on one engine.
//!
//! The usual shape of real work: the same flow for every line of a JSON Lines file. The flow
//! is prepared once for the whole batch (plugins described, entries bound); each input is
//! its own run, checked against its store and run on its own, so a bad input fails that run
//! alone.
//! At most `concurrency` runs are in flight; outcomes arrive as runs finish (not in input
//! order), each tagged with its input's line number.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;

use super::journal::{JournalError, RunError};
use super::report::RunReport;
use super::{Engine, LoadedFlow, Prepared};
use flowhost_core::events::FlowState;
use flowhost_core::flow::FlowSpec;
use flowhost_core::plan::ValidationError;
use flowhost_core::store::Store;

/// What a batch does to each loaded run before it starts, e.g. record it in a run database.
pub type Prepare = dyn Fn(&mut LoadedFlow) -> Result<(), JournalError> + Send + Sync;

/// One input of a batch: where it came from and the initial store it holds.
#[derive(Debug, Clone)]
pub struct BatchInput {
    /// Its 1-based line number in the input file.
    pub line: usize,
    /// The initial store, or why the line is not one.
    pub store: Result<Store, String>,
}

impl BatchInput {
    /// Reads JSON Lines: every non-blank line must be a JSON object, the initial store of
    /// one run. A line that is not — not JSON, not an object, not even UTF-8 — becomes an
    /// input that fails on its own; the other lines still run.
    pub fn parse_lines(text: impl AsRef<[u8]>) -> Vec<BatchInput> {
        text.as_ref()
            .split(|byte| *byte == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.trim_ascii().is_empty())
            .map(|(index, line)| {
                let store = std::str::from_utf8(line)
                    .map_err(|e| {
                        format!("not UTF-8 (invalid byte at column {})", e.valid_up_to() + 1)
                    })
                    .and_then(parse_store);
                BatchInput {
                    line: index + 1,
                    store,
                }
            })
            .collect()
    }
}

fn parse_store(line: &str) -> Result<Store, String> {
    if let Some(inexact) = flowhost_core::store::inexact_integer(line) {
        return Err(inexact.to_string());
    }
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(map)) => Ok(map.into_iter().collect()),
        Ok(other) => Err(format!(
            "expected a JSON object (an initial store), found {}",
            flowhost_core::store::kind_of(&other)
        )),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// Why one input of a batch did not run.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The input line is not an initial store.
    #[error("input line {line}: {reason}")]
    Input {
        /// The input's line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The flow is invalid with this input's store (e.g. a required name is missing).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The run could not be prepared (e.g. recorded) before it started; nothing ran.
    #[error("run {run} did not start: {error}")]
    Prepare {
        /// The run's id.
        run: String,
        /// Why.
        error: JournalError,
    },
    /// The run's journal failed mid-run; the run stopped at its last recorded transition.
    #[error(transparent)]
    Stopped(#[from] RunError),
}

/// How one input ended.
#[derive(Debug)]
pub struct BatchOutcome {
    /// The input's line number.
    pub line: usize,
    /// The run's report, or why it did not run.
    pub result: Result<RunReport, BatchError>,
}

/// Counts of a finished batch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchSummary {
    /// Runs that ended SUCCESS.
    pub succeeded: usize,
    /// Runs that ended REVERTED (a task failed, everything was undone).
    pub reverted: usize,
    /// Runs that ended FAILURE (a revert failed), and inputs that could not run.
    pub failed: usize,
    /// Wall time of the whole batch.
    pub elapsed: Duration,
}

impl BatchSummary {
    /// Every input, whatever became of it.
    pub fn total(&self) -> usize {
        self.succeeded + self.reverted + self.failed
    }

    /// Throughput of the batch.
    pub fn runs_per_second(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn count(&mut self, outcome: &BatchOutcome) {
        match &outcome.result {
            Ok(report) if report.state == FlowState::Success => self.succeeded += 1,
            Ok(report) if report.state == FlowState::Reverted => self.reverted += 1,
            _ => self.failed += 1,
        }
    }
}

/// One flow, run once per input on one engine.
pub struct Batch {
    engine: Engine,
    flow: Arc<FlowSpec>,
    concurrency: usize,
    prepare: Option<Arc<Prepare>>,
}

impl Batch {
    /// Runs `flow` on `engine`, 64 runs at a time unless told otherwise.
    pub fn new(engine: &Engine, flow: &FlowSpec) -> Self {
        Self {
            engine: engine.clone(),
            flow: Arc::new(flow.clone()),
            concurrency: 64,
            prepare: None,
        }
    }

    /// At most `runs` runs in flight at once (at least one).
    pub fn concurrency(mut self, runs: usize) -> Self {
        self.concurrency = runs.max(1);
        self
    }

    /// Calls `prepare` on each run after it is loaded and before it starts — e.g.
    /// `flowhost::runs::record`, so that every run of the batch is recorded and resumable. A
    /// run it fails for does not start.
    pub fn prepare_each(
        mut self,
        prepare: impl Fn(&mut LoadedFlow) -> Result<(), JournalError> + Send + Sync + 'static,
    ) -> Self {
        self.prepare = Some(Arc::new(prepare));
        self
    }

    /// Runs every input; `on_outcome` sees each as it finishes. Must be called within a tokio
    /// runtime: runs are spawned so that they spread over its worker threads.
    pub async fn run(
        &self,
        inputs: impl IntoIterator<Item = BatchInput>,
        mut on_outcome: impl FnMut(&BatchOutcome),
    ) -> BatchSummary {
        let started = Instant::now();
        let mut summary = BatchSummary::default();
        let mut inputs = inputs.into_iter();
        let mut running = JoinSet::new();
        // Prepared at the first input, once for every run of the batch.
        let mut prepared: Option<Arc<Prepared>> = None;
        loop {
            while running.len() < self.concurrency {
                let Some(input) = inputs.next() else { break };
                let engine = self.engine.clone();
                let prepared = match &prepared {
                    Some(prepared) => prepared.clone(),
                    None => prepared
                        .insert(self.engine.prepare(&self.flow).await)
                        .clone(),
                };
                let prepare = self.prepare.clone();
                running.spawn(async move {
                    let result = match input.store {
                        Ok(store) => run_one(&engine, &prepared, store, prepare.as_deref()).await,
                        Err(reason) => Err(BatchError::Input {
                            line: input.line,
                            reason,
                        }),
                    };
                    BatchOutcome {
                        line: input.line,
                        result,
                    }
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            // A run never panics by design (listener panics are caught); if one did, the
            // panic is the engine's bug and must not be mistaken for an outcome.
            let outcome = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            summary.count(&outcome);
            on_outcome(&outcome);
        }
        summary.elapsed = started.elapsed();
        summary
    }
}

async fn run_one(
    engine: &Engine,
    prepared: &Prepared,
    store: Store,
    prepare: Option<&Prepare>,
) -> Result<RunReport, BatchError> {
    let mut loaded = engine.load_prepared(prepared, store)?;
    if let Some(prepare) = prepare {
        prepare(&mut loaded).map_err(|error| BatchError::Prepare {
            run: loaded.run_id().to_owned(),
            error,
        })?;
    }
    Ok(loaded.run().await?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_line_that_is_not_utf8_fails_alone() {
        let inputs = BatchInput::parse_lines(b"{\"a\": 1}\r\n{\"b\": \"\xff\"}\n\n  \n{\"c\": 3}");
        let lines: Vec<usize> = inputs.iter().map(|i| i.line).collect();
        assert_eq!(
            lines,
            [1, 2, 5],
            "blank lines are skipped, numbering is kept"
        );
        assert_eq!(
            inputs[0].store.as_ref().unwrap().fetch("a"),
            Some(&json!(1)),
            "a CRLF line is fine"
        );
        assert_eq!(
            inputs[1].store,
            Err("not UTF-8 (invalid byte at column 8)".into())
        );
        assert!(inputs[2].store.is_ok());
    }
}
