//! The exit codes, in one table: which error ends the process with which code.

use flowhost::conform::CasesError;
use flowhost::runs::{ResumeFailure, RunDbError, WorkerError};
use flowhost::scaffold::ScaffoldError;
use flowhost::{
    Classify, ErrorClass, FlowFileError, PluginError, ResumeError, RunError, ValidationError,
};

/// The flow succeeded.
pub const SUCCESS: u8 = 0;
/// A task failed and every task was reverted.
pub const REVERTED: u8 = 1;
/// A task failed and a revert failed too: a person must look.
pub const REVERT_FAILED: u8 = 2;
/// The run is SUSPENDED (asked to, or a task with `on_failure = "suspend"` failed for good):
/// nothing was reverted; it waits for `flowhost runs resume` or `flowhost runs revert`.
pub const SUSPENDED: u8 = 3;
/// `flowhost call`: the called function failed (a task error, or the host stopped it).
pub const TASK_ERROR: u8 = 1;
/// The run is WAITING — for a signal, or a timer longer than this process holds on to — and
/// holds no executor: `runs signal` and `runs resume` (or a worker, or `serve`) go on with it.
pub const WAITING: u8 = 4;
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
failed (needs a person), 3 the run is suspended (resume or revert it), 4 the run is WAITING for a signal (`runs signal`, then `runs resume`), 64 usage error, 65 invalid flow/plugin, 66 unreadable input file or run database, \
70 internal error, 75 the run database failed or the run is held by another executor (retry later).";

/// A command-line mistake (exit 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A flow file or plugin that differs from the one a run recorded, where the command uses
/// only the recorded one unless forced (exit 65, like `runs resume`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Mismatch(pub String);

/// An input file that could not be read (exit 66).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// An error and its causes in one line, each cause once, then what to do about it
/// ([`advice`]): most errors already quote their cause's text (`cannot read plugin p.wasm: No such file or directory`), which anyhow's
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
    match advice(error) {
        Some(advice) if text.contains('\n') => text.push_str(&format!("\n{advice}")),
        Some(advice) => text.push_str(&format!(" ({advice})")),
        None => {}
    }
    text
}

/// Maps an error to the documented exit code: by the class its library gives it
/// ([`ErrorClass`]), the one classification the HTTP API reads too.
pub fn code_for(error: &anyhow::Error) -> u8 {
    if error.is::<UsageError>() {
        return USAGE;
    }
    if error.is::<InputError>() {
        return NOINPUT;
    }
    if error.is::<Mismatch>() {
        return INVALID;
    }
    class_of(error).map_or(SOFTWARE, code)
}

/// The exit code of each class.
fn code(class: ErrorClass) -> u8 {
    match class {
        ErrorClass::Usage | ErrorClass::NotFound | ErrorClass::Conflict => USAGE,
        ErrorClass::Invalid | ErrorClass::Mismatch => INVALID,
        ErrorClass::Unreadable => NOINPUT,
        ErrorClass::Held | ErrorClass::Unavailable => TEMPFAIL,
        ErrorClass::Internal => SOFTWARE,
    }
}

/// The class of the library error `error` is, or wraps.
fn class_of(error: &anyhow::Error) -> Option<ErrorClass> {
    macro_rules! first_of {
        ($($error:ty),+) => {
            $(if let Some(error) = error.downcast_ref::<$error>() {
                return Some(error.class());
            })+
        };
    }
    first_of!(
        ResumeFailure,
        WorkerError,
        RunDbError,
        RunError,
        ValidationError,
        PluginError,
        ResumeError,
        FlowFileError,
        CasesError,
        ScaffoldError
    );
    None
}

/// What the command line adds to a library error: the library states the facts, the
/// command line says which of its commands and flags go on from there.
pub fn advice(error: &anyhow::Error) -> Option<String> {
    if error.is::<Mismatch>() {
        return Some("use it anyway with --force".into());
    }
    if let Some(stopped) = error.downcast_ref::<RunError>() {
        return Some(resume_later(&stopped.run));
    }
    if let Some(failure) = error.downcast_ref::<ResumeFailure>() {
        return match failure {
            ResumeFailure::Unknown(_) => Some("see `flowhost runs list`".into()),
            ResumeFailure::Changed { .. } => Some("resume it anyway with --force".into()),
            ResumeFailure::Db(db) => db_advice(db),
            ResumeFailure::Resume(ResumeError::Stopped(stopped)) => {
                Some(resume_later(&stopped.run))
            }
            _ => None,
        };
    }
    if let Some(WorkerError::Db(db)) = error.downcast_ref::<WorkerError>() {
        return db_advice(db);
    }
    error.downcast_ref::<RunDbError>().and_then(db_advice)
}

fn resume_later(run: &str) -> String {
    format!("resume it with `flowhost runs resume {run}` once the run database works again")
}

fn db_advice(error: &RunDbError) -> Option<String> {
    match error {
        RunDbError::Missing { .. } => Some("`flowhost run` creates it unless --no-db".into()),
        RunDbError::Open { .. } => {
            Some("choose another place with --db or FLOWHOST_DB, or run with --no-db".into())
        }
        _ => None,
    }
}

/// The exit code of a finished run: 0 success, 1 reverted, 2 a revert failed, 3 suspended.
pub fn for_state(state: flowhost::FlowState) -> u8 {
    match state {
        flowhost::FlowState::Success => SUCCESS,
        flowhost::FlowState::Reverted => REVERTED,
        flowhost::FlowState::Suspended => SUSPENDED,
        flowhost::FlowState::Waiting => WAITING,
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
