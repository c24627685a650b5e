//! Fault classification: turning a failed wasm call into the [`TaskError`] an operator needs.

use wasmtime::component::ResourceTableError;
use wasmtime::{Store, Trap};
use wasmtime_wasi::I32Exit;

use super::instance::InstanceState;
use super::sandbox::Sandbox;
use crate::contract::{HostFault, TaskError};

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
    HostFault::DeadlineExceeded.error(format!("deadline of {} ms exceeded {site}", sandbox.limits.deadline_ms))
}

/// Turns a failed wasm call into the reason an operator needs: the cap or deadline that was
/// hit, the exit status, or the trap with the plugin's own last words (a Rust panic message)
/// from stderr.
pub(crate) fn classify(error: &wasmtime::Error, store: &Store<InstanceState>, sandbox: &Sandbox, site: &Site<'_>) -> TaskError {
    let state = store.data();
    if error.chain().any(|cause| cause.is::<DeadlineExceeded>()) {
        return deadline_exceeded(sandbox, site);
    }
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return HostFault::Exited.error(format!("exited with status {} {site}", exit.0));
    }
    if error.chain().any(|cause| matches!(cause.downcast_ref::<ResourceTableError>(), Some(ResourceTableError::Full))) {
        return HostFault::HandleLimit.error(format!(
            "handle cap of {} exceeded {site} (open files, directories, streams and other WASI handles held at once)",
            sandbox.limits.handles
        ));
    }
    let out_of_memory = |cause: &(dyn std::error::Error + 'static)| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::OutOfMemory)
    };
    if error.chain().any(out_of_memory) {
        return HostFault::HostResources.error(format!(
            "the host could not allocate memory for the instance {site} (address space or memory exhausted): {error:#}"
        ));
    }
    if let (Some(Trap::OutOfFuel), Some(fuel)) = (error.downcast_ref::<Trap>(), sandbox.limits.fuel) {
        return HostFault::FuelExhausted.error(format!("fuel budget of {fuel} exhausted {site}"));
    }
    // Checked after the deadline and fuel: a task may survive a refused growth and fail later
    // for another reason. A trap after a refusal is the allocator giving up.
    if let Some(wanted) = state.memory.denied {
        return HostFault::MemoryLimit.error(
            format!(
                "memory cap of {} MiB exceeded {site} (it tried to grow its memory to {} MiB)",
                state.memory.max_bytes() >> 20,
                wanted.div_ceil(1 << 20)
            ),
        );
    }
    let last_words = panic_message(&String::from_utf8_lossy(&state.stderr.peek()));
    match error.downcast_ref::<Trap>() {
        Some(trap) => {
            let mut message = format!("trapped: {trap}");
            if let Some(words) = last_words {
                message.push_str(&format!("; plugin said: {words}"));
            }
            HostFault::Trap.error(message)
        }
        None => HostFault::HostError.error(format!("{error:#}")),
    }
}

/// A Rust panic's location and message from a plugin's stderr, quoted after a trap so the
/// operator sees why the plugin gave up.
fn panic_message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
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
