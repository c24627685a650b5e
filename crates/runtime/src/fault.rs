//! Fault classification: turning a failed wasm call into the [`TaskError`] an operator needs.

use wasmtime::component::ResourceTableError;
use wasmtime::{Store, Trap};
use wasmtime_wasi::I32Exit;

use super::instance::InstanceState;
use super::sandbox::Sandbox;
use flowhost_core::contract::{HostFault, TaskError};

/// Which call into a plugin failed, for messages: "… by task `t` in execute".
pub(crate) enum Site<'a> {
    /// The plugin's `describe()`, at load.
    Describe,
    /// A task's `execute`.
    Execute(&'a str),
    /// A task's `revert`.
    Revert(&'a str),
}

impl std::fmt::Display for Site<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Site::Describe => f.write_str("in describe()"),
            Site::Execute(task) => write!(f, "by task `{task}` in execute"),
            Site::Revert(task) => write!(f, "by task `{task}` in revert"),
        }
    }
}

/// The error a deadline callback raises, recognised when classifying a failed call.
#[derive(Debug)]
pub(crate) struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// The error of a call that ran past its deadline, whether the epoch callback stopped it
/// inside wasm or the host's timer stopped it waiting in the host.
pub(crate) fn deadline_exceeded(sandbox: &Sandbox, site: &Site<'_>) -> TaskError {
    HostFault::DeadlineExceeded.error(format!(
        "deadline of {} ms exceeded {site}",
        sandbox.limits.deadline_ms
    ))
}

/// Turns a failed wasm call into the reason an operator needs: the cap or deadline that was
/// hit, the exit status, or the trap with the plugin's own last words (a Rust panic message)
/// from stderr.
pub(crate) fn classify(
    error: &wasmtime::Error,
    store: &Store<InstanceState>,
    sandbox: &Sandbox,
    site: &Site<'_>,
) -> TaskError {
    let state = store.data();
    if error.chain().any(|cause| cause.is::<DeadlineExceeded>()) {
        return deadline_exceeded(sandbox, site);
    }
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return HostFault::Exited.error(format!("exited with status {} {site}", exit.0));
    }
    if error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ResourceTableError>(),
            Some(ResourceTableError::Full)
        )
    }) {
        return HostFault::HandleLimit.error(format!(
            "handle cap of {} exceeded {site} (open files, directories, streams and other WASI handles held at once)",
            sandbox.limits.handles
        ));
    }
    let out_of_memory = |cause: &(dyn std::error::Error + 'static)| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::OutOfMemory)
    };
    if error.chain().any(out_of_memory) {
        return HostFault::HostResources.error(format!(
            "the host could not allocate memory for the instance {site} (address space or memory exhausted): {error:#}"
        ));
    }
    if let (Some(Trap::OutOfFuel), Some(fuel)) = (error.downcast_ref::<Trap>(), sandbox.limits.fuel)
    {
        return HostFault::FuelExhausted.error(format!("fuel budget of {fuel} exhausted {site}"));
    }
    // Checked after the deadline and fuel: a task may survive a refused growth and fail later
    // for another reason. A trap after a refusal is the allocator giving up.
    if let Some(wanted) = state.memory.denied {
        return HostFault::MemoryLimit.error(format!(
            "memory cap of {} MiB exceeded {site} (it tried to grow its memory to {} MiB)",
            state.memory.max_bytes() >> 20,
            wanted.div_ceil(1 << 20)
        ));
    }
    let stderr = String::from_utf8_lossy(&state.stderr.peek()).into_owned();
    match error.downcast_ref::<Trap>() {
        Some(trap) => {
            if let Some(uncaught) = python_exception(&stderr) {
                return uncaught.error(site);
            }
            let mut message = format!("trapped: {trap}");
            if let Some(words) = panic_message(&stderr) {
                message.push_str(&format!("; plugin said: {words}"));
            } else if let Some(hint) = javascript_throw(&stderr) {
                message.push_str(&format!("; {hint}"));
            }
            HostFault::Trap.error(message)
        }
        None => HostFault::HostError.error(format!("{error:#}")),
    }
}

/// An exception that escaped a task written in a language with exceptions.
#[derive(Debug, PartialEq)]
struct Uncaught {
    language: &'static str,
    exception: String,
    message: String,
    traceback: String,
}

impl Uncaught {
    fn error(self, site: &Site<'_>) -> TaskError {
        let language = match self.language {
            "python" => "Python",
            other => other,
        };
        let mut error = HostFault::UncaughtException.error(format!(
            "{}: {} (uncaught {language} exception {site})",
            self.exception, self.message
        ));
        error.details = Some(serde_json::json!({
            "exception": self.exception,
            "message": self.message,
            "language": self.language,
            "traceback": self.traceback,
        }));
        error
    }
}

/// A Python exception that escaped the task. componentize-py prints the traceback on stderr
/// and then panics ("Python function threw an unexpected exception"), which traps; the last
/// traceback before that panic is the exception (its last line: `ValueError: bad size`).
fn python_exception(stderr: &str) -> Option<Uncaught> {
    const HEADER: &str = "Traceback (most recent call last):";
    let panic = stderr.rfind("panicked at")?;
    let start = stderr[..panic].rfind(HEADER)?;
    let block = &stderr[start..panic];
    // The traceback ends where the runtime's panic line (`thread '…' panicked at`) begins.
    let block = block
        .rfind('\n')
        .map_or(block, |end| &block[..end])
        .trim_end();
    let mut lines = block
        .lines()
        .skip(1)
        .skip_while(|l| l.starts_with(' ') || l.is_empty());
    let first = lines.next()?;
    let (exception, message) = first.split_once(": ").unwrap_or((first, ""));
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
    };
    if !is_name(exception) {
        return None;
    }
    let message = std::iter::once(message)
        .chain(lines)
        .collect::<Vec<_>>()
        .join("\n");
    Some(Uncaught {
        language: "python",
        exception: exception.to_owned(),
        message,
        traceback: block.to_owned(),
    })
}

/// What a JavaScript plugin's last words say when it threw something that is not a
/// `task-error` (`throw new Error(…)`): componentize-js cannot turn it into the contract's
/// error and aborts, and the thrown value is lost. Says how to keep it.
fn javascript_throw(stderr: &str) -> Option<&'static str> {
    (stderr.contains("export_task_") && stderr.contains("expected a string, received")).then_some(
        "the JavaScript task threw a value that is not a task-error `{ code, message }` (e.g. `throw new Error(…)`), \
         so its message is lost; wrap the task with plugins/js/flowhost-task.js, which reports such exceptions",
    )
}

/// A Rust panic's location and message from a plugin's stderr, quoted after a trap so the
/// operator sees why the plugin gave up.
fn panic_message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(at) = lines.iter().position(|l| l.contains("panicked at")) {
        let words: Vec<&str> = lines[at..]
            .iter()
            .take_while(|l| !l.starts_with("note: run with"))
            .copied()
            .collect();
        return Some(words.join(" "));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTHON: &str = "stamp: starting\n\
Traceback (most recent call last):\n  File \"/0/app.py\", line 11, in execute\n  File \"/0/app.py\", line 5, in helper\n\
ValueError: bad size 3\n\
thread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\n\
Python function threw an unexpected exception\n\
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";

    #[test]
    fn a_python_traceback_before_the_runtimes_panic_is_the_exception() {
        let uncaught = python_exception(PYTHON).expect("an exception");
        assert_eq!(uncaught.exception, "ValueError");
        assert_eq!(uncaught.message, "bad size 3");
        assert!(
            uncaught
                .traceback
                .starts_with("Traceback (most recent call last):"),
            "{}",
            uncaught.traceback
        );
        assert!(
            uncaught.traceback.ends_with("ValueError: bad size 3"),
            "{}",
            uncaught.traceback
        );
        let error = uncaught.error(&Site::Execute("t"));
        assert_eq!(error.code, "uncaught-exception");
        assert_eq!(
            error.message,
            "ValueError: bad size 3 (uncaught Python exception by task `t` in execute)"
        );
        assert_eq!(error.details.as_ref().unwrap()["exception"], "ValueError");
    }

    #[test]
    fn a_chained_exception_is_the_last_one_and_a_bare_one_has_no_message() {
        let chained = PYTHON.replace(
            "ValueError: bad size 3\n",
            "ValueError: bad size 3\n\nDuring handling of the above exception, another exception occurred:\n\n\
             Traceback (most recent call last):\n  File \"/0/app.py\", line 9, in execute\nKeyError: 'gone'\n",
        );
        let uncaught = python_exception(&chained).expect("an exception");
        assert_eq!(
            (uncaught.exception.as_str(), uncaught.message.as_str()),
            ("KeyError", "'gone'")
        );
        let bare = python_exception(&PYTHON.replace("ValueError: bad size 3", "StopIteration"))
            .expect("an exception");
        assert_eq!(
            (bare.exception.as_str(), bare.message.as_str()),
            ("StopIteration", "")
        );
    }

    #[test]
    fn without_a_traceback_or_a_panic_there_is_no_exception() {
        assert_eq!(
            python_exception("thread 'main' panicked at src/lib.rs:1:1:\nboom\n"),
            None,
            "a Rust panic"
        );
        assert_eq!(
            python_exception(
                "Traceback (most recent call last):\n  File \"x\"\nValueError: handled\n"
            ),
            None
        );
    }
}
