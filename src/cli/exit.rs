//! The exit codes, in one table: which error ends the process with which code.

use flowhost::conform::CasesError;
use flowhost::runs::{ResumeFailure, RunDbError, WorkerError};
use flowhost::scaffold::ScaffoldError;
use flowhost::{FlowFileError, PluginError, ResumeError, RunError, ValidationError};

/// The flow succeeded.
pub const SUCCESS: u8 = 0;
/// A task failed and every task was reverted.
pub const REVERTED: u8 = 1;
/// A task failed and a revert failed too: a person must look.
pub const REVERT_FAILED: u8 = 2;
/// `flowhost call`: the called function failed (a task error, or the host stopped it).
pub const TASK_ERROR: u8 = 1;
/// Wrong use of the command line.
pub const USAGE: u8 = 64;
/// The flow file, a plugin or the flow as a whole is invalid.
pub const INVALID: u8 = 65;
/// An input file could not be read.
pub const NOINPUT: u8 = 66;
/// A fault inside flowhost itself.
pub const SOFTWARE: u8 = 70;
/// The run database failed, or another executor holds the run: retry later.
pub const TEMPFAIL: u8 = 75;

/// The table as `--help` shows it.
pub const EXIT_CODES: &str = "Exit codes: 0 success, 1 flow failed and was reverted, 2 flow failed and a revert \
failed (needs a person), 64 usage error, 65 invalid flow/plugin, 66 unreadable input file or run database, \
70 internal error, 75 the run database failed or the run is held by another executor (retry later).";

/// A command-line mistake (exit 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An input file that could not be read (exit 66).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// An error and its causes in one line, each cause once: most errors already quote their
/// cause's text (`cannot read plugin p.wasm: No such file or directory`), which anyhow's
/// `{:#}` would repeat after them.
pub fn render(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Maps an error to the documented exit code.
pub fn code_for(error: &anyhow::Error) -> u8 {
    if let Some(failure) = error.downcast_ref::<ResumeFailure>() {
        return match failure {
            ResumeFailure::Unknown(_) | ResumeFailure::BuiltInCode(_) => USAGE,
            ResumeFailure::Changed { .. } | ResumeFailure::Invalid(_) => INVALID,
            ResumeFailure::Db(db) => db_code(db),
            ResumeFailure::FlowFile(FlowFileError::Read { .. }) => NOINPUT,
            ResumeFailure::FlowFile(_) => INVALID,
            ResumeFailure::Resume(ResumeError::Finished { .. }) => USAGE,
            ResumeFailure::Resume(ResumeError::Stopped(_)) => TEMPFAIL,
            ResumeFailure::Resume(_) => INVALID,
        };
    }
    if let Some(failure) = error.downcast_ref::<WorkerError>() {
        return match failure {
            WorkerError::Db(db) => db_code(db),
            WorkerError::Invalid(_) | WorkerError::Resume(_) => INVALID,
            WorkerError::FlowFile { .. } | WorkerError::PluginDir { .. } => NOINPUT,
            WorkerError::Stopped(_) => TEMPFAIL,
            WorkerError::Stored { .. } | WorkerError::Engine(_) => SOFTWARE,
        };
    }
    if let Some(db) = error.downcast_ref::<RunDbError>() {
        return db_code(db);
    }
    if error.is::<RunError>() {
        return TEMPFAIL;
    }
    // The host, not the flow, lacked memory or address space for a plugin: retry later.
    if matches!(
        error.downcast_ref(),
        Some(ValidationError {
            host_unavailable: true,
            ..
        })
    ) || matches!(error.downcast_ref(), Some(PluginError::Unavailable { .. }))
    {
        return TEMPFAIL;
    }
    if error.is::<UsageError>()
        || matches!(error.downcast_ref(), Some(ResumeError::Finished { .. }))
        || matches!(
            error.downcast_ref(),
            Some(ScaffoldError::BadName(_) | ScaffoldError::Exists(_))
        )
    {
        return USAGE;
    }
    if error.is::<InputError>()
        || matches!(error.downcast_ref(), Some(FlowFileError::Read { .. }))
        || matches!(error.downcast_ref(), Some(PluginError::Read { .. }))
        || matches!(error.downcast_ref(), Some(CasesError::Read { .. }))
    {
        return NOINPUT;
    }
    if error.is::<ValidationError>()
        || error.is::<FlowFileError>()
        || error.is::<PluginError>()
        || error.is::<CasesError>()
        || error.is::<ResumeError>()
    {
        return INVALID;
    }
    SOFTWARE
}

/// A database that cannot be opened is an input problem (66); one that fails while in use,
/// or a run held by another executor, is temporary (75).
fn db_code(error: &RunDbError) -> u8 {
    match error {
        RunDbError::Missing { .. }
        | RunDbError::Open { .. }
        | RunDbError::Foreign { .. }
        | RunDbError::TooNew { .. } => NOINPUT,
        RunDbError::Hash { .. } => NOINPUT,
        RunDbError::Query { .. } | RunDbError::Held { .. } | RunDbError::Fenced { .. } => TEMPFAIL,
    }
}

/// The exit code of a finished run: 0 success, 1 reverted, 2 a revert failed.
pub fn for_state(state: flowhost::FlowState) -> u8 {
    match state {
        flowhost::FlowState::Success => SUCCESS,
        flowhost::FlowState::Reverted => REVERTED,
        _ => REVERT_FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let io = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file or directory (os error 2)",
        );
        let error = anyhow::Error::new(PluginError::Read {
            path: "p.wasm".into(),
            source: io,
        });
        assert_eq!(
            render(&error),
            "cannot read plugin p.wasm: No such file or directory (os error 2)"
        );
        assert_eq!(code_for(&error), NOINPUT);
        let wrapped = anyhow::anyhow!("outer").context("starting");
        assert_eq!(render(&wrapped), "starting: outer");
    }
}
