//! The journal: the run's durable record, written by the engine itself.
//!
//! Like TaskFlow's storage, and unlike a listener, the journal is part of the run: every
//! transition is appended to it *before* listeners hear of it and before the next plugin
//! call, and a failed append stops the run where it stands. So nothing ever executes or reverts
//! past what is recorded, and a run stopped this way is resumed from its last committed
//! transition once the storage works again. The run database (`crate::runs`) implements it.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;

use flowhost_core::class::{Classify, ErrorClass};
use flowhost_core::events::Event;
use serde_json::Value;

/// Why the journal could not record a transition: the storage's own error (a full disk, a
/// lock that timed out, a lease taken by another executor).
pub type JournalError = Box<dyn Error + Send + Sync>;

/// The future of one [`Journal::append`].
pub type Append<'a> = Pin<Box<dyn Future<Output = Result<(), JournalError>> + Send + 'a>>;

/// The future of [`Journal::close`].
pub type Close<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The future of [`Journal::take_signal`]: the signal's data, or `None` while none came.
pub type Signalled<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Value>, JournalError>> + Send + 'a>>;

/// A run's durable record.
pub trait Journal: Send + Sync {
    /// Commits `events` (with the arguments, results or errors they carry) durably, all or
    /// none, in order; the engine stops the run on failure. The engine hands over every
    /// transition made since the last call: e.g. a task's SUCCESS with the next one's RUNNING.
    /// Asynchronous, so that a run waiting for its commit leaves its thread to other runs —
    /// which is what lets concurrent runs share commits.
    fn append<'a>(&'a self, events: &'a [Event]) -> Append<'a>;

    /// Takes, for wait entry `task`, the oldest signal `name` sent to the run that no other
    /// wait took, and gives its data (JSON `null` when it carried none); `None` while no such
    /// signal came. Signals sent before the run reached the wait are kept for it. Taking is
    /// idempotent per task: a signal `task` took before — the run was interrupted before its
    /// SUCCESS was recorded — is given again, so an interruption never loses a signal. A
    /// journal without signals (the default) never has one.
    fn take_signal<'a>(&'a self, task: &'a str, name: &'a str) -> Signalled<'a> {
        let _ = (task, name);
        Box::pin(std::future::ready(Ok(None)))
    }

    /// The run has ended — finished, or stopped by a failed append: let go of whatever the
    /// journal holds for it (e.g. a lease). Best effort.
    fn close(&self) -> Close<'_> {
        Box::pin(std::future::ready(()))
    }
}

/// A run that stopped because its journal could not record a transition.
#[derive(Debug, thiserror::Error)]
#[error("run {run} stopped: {error}. Nothing ran past the last recorded transition")]
pub struct RunError {
    /// The run's id.
    pub run: String,
    /// The transition that could not be recorded, e.g. "task `reserve` RUNNING -> SUCCESS".
    pub transition: String,
    /// The journal's error.
    pub error: JournalError,
}

impl Classify for RunError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Unavailable
    }
}
