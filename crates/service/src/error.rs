//! Why a run was not started: shared by the starters, which produce it, the live registry
//! that hands it to waiting callers, and the API, which maps it to a status.

use flowhost_core::class::{Classify, ErrorClass};
use flowhost_core::flow::FlowFileError;
use flowhost_core::plan::ValidationError;
use flowhost_engine::RunError;
use flowhost_executor::{ResumeFailure, WorkerError};
use flowhost_runs::RunDbError;

/// Why a run was not started (or resumed).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The flow file cannot be read or parsed.
    #[error(transparent)]
    FlowFile(#[from] FlowFileError),
    /// The flow does not validate with this store; nothing ran.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The run database refused or failed.
    #[error(transparent)]
    Db(#[from] RunDbError),
    /// The run stopped before its first transition was recorded.
    #[error(transparent)]
    Stopped(#[from] RunError),
    /// The recorded run cannot be resumed.
    #[error(transparent)]
    Resume(#[from] ResumeFailure),
    /// The run could not be queued for the workers.
    #[error(transparent)]
    Queue(#[from] WorkerError),
    /// The run cannot be handed to the workers.
    #[error(
        "run {0} cannot be queued for the workers: it is finished, unknown, or was started from a local flow file that only its host can resume"
    )]
    NotQueueable(String),
    /// What was asked runs only where the run's flow file is, not through the workers.
    #[error(
        "run {run}: {what} is not done by the workers; run `flowhost runs {what} {run}` on a host with its flow file"
    )]
    NotForWorkers {
        /// The run's id.
        run: String,
        /// The `flowhost runs` subcommand that does it.
        what: &'static str,
    },
    /// This service is running that run already.
    #[error("run {0} is already going on in this service")]
    AlreadyRunning(String),
}

impl Classify for StartError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::FlowFile(file) => file.class(),
            Self::Invalid(invalid) => invalid.class(),
            Self::Db(db) => db.class(),
            Self::Stopped(stopped) => stopped.class(),
            Self::Resume(resume) => resume.class(),
            Self::Queue(queue) => queue.class(),
            Self::NotQueueable(_) | Self::AlreadyRunning(_) | Self::NotForWorkers { .. } => {
                ErrorClass::Conflict
            }
        }
    }
}
