//! One classification of failures, read by every edge: the command line turns a class into
//! its exit code, the HTTP API into a status. Each library error says which class it is
//! ([`Classify`]), next to where it is defined, so a new error variant is classified once
//! and both edges agree.

/// What kind of failure an error is, as whoever must act on it sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request itself is wrong: a malformed name, id or argument.
    Usage,
    /// What was asked for does not exist (an unknown run).
    NotFound,
    /// The run's state does not allow it: it finished, or is already going on here.
    Conflict,
    /// The recorded run no longer matches its flow (the file, a plugin or the entries
    /// changed since it was recorded).
    Mismatch,
    /// The flow, a plugin or the flow's input is invalid: nothing ran, nothing will until it
    /// is fixed.
    Invalid,
    /// An input (a flow file, a plugin, a run database, a cases file) cannot be read.
    Unreadable,
    /// Another executor holds the run, or this one lost it: retry later.
    Held,
    /// Storage or the host failed for now (a database write, memory for a plugin): retry
    /// later.
    Unavailable,
    /// A fault inside flowhost itself.
    Internal,
}

/// An error that knows its [`ErrorClass`].
pub trait Classify {
    /// This error's class.
    fn class(&self) -> ErrorClass;
}
