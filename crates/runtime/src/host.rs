//! The contract's `host` import (0.2): what a task may ask of the host during a call beside
//! WASI — who is calling (run id, task, attempt), progress reports and structured logs.
//!
//! Each call's [`CallContext`] is set on its store before the call starts (a warm instance
//! gets the new call's), so a task always sees the invocation it is serving. The import is
//! implemented on the call's context alone, the narrow view of the store's data that it
//! needs, the way wasmtime-wasi's views work; the linker hands it that part of the state.

use std::sync::Arc;

use super::net::Redactor;
use super::wit::host_import as wit;
use flowhost_core::contract::{Progress, escape};

/// Receives a call's progress reports as they come. Called on the call's thread while the
/// plugin waits: keep it short.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// Who a call serves, as the task sees it through `invocation()`, and where its progress goes.
#[derive(Clone, Default)]
pub(crate) struct CallContext {
    pub(crate) run_id: String,
    pub(crate) task: String,
    pub(crate) attempt: u32,
    pub(crate) progress: Option<ProgressSink>,
    /// Progress reports and log records this call made so far, against [`SIGNALS_PER_CALL`].
    pub(crate) signals: Signals,
    /// The run's secrets, cut out of what the task reports and logs.
    pub(crate) redact: Redactor,
    /// The run's place in line for an instance slot ([`crate::Invocation::order`]).
    pub(crate) order: u64,
}

/// What one call has said through the `host` import so far.
#[derive(Clone, Copy, Default)]
pub(crate) struct Signals {
    progress: u32,
    logs: u32,
}

/// Progress reports, and log records, heard from one call: a task looping over `progress` or
/// `log` cannot flood the operator's log or the listeners. Past it the call goes on, a line
/// says that more were dropped, and the last report heard is the one recorded.
pub(crate) const SIGNALS_PER_CALL: u32 = 256;

/// Bytes of a progress report's details or of one log record kept; past it the text is cut
/// (a task cannot flood the operator's log or the run's record through these imports).
const SIGNAL_BYTES: usize = 16 << 10;

/// Fields of one log record kept.
const LOG_FIELDS: usize = 32;

fn cut(text: &str) -> &str {
    if text.len() <= SIGNAL_BYTES {
        return text;
    }
    let end = (0..=SIGNAL_BYTES)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    &text[..end]
}

impl wit::Host for CallContext {
    fn invocation(&mut self) -> wit::InvocationInfo {
        wit::InvocationInfo {
            run_id: self.run_id.clone(),
            task: self.task.clone(),
            attempt: self.attempt,
        }
    }

    fn progress(&mut self, fraction: f32, details: Option<String>) {
        self.signals.progress = self.signals.progress.saturating_add(1);
        if self.signals.progress > SIGNALS_PER_CALL {
            if self.signals.progress == SIGNALS_PER_CALL + 1 {
                tracing::warn!(target: "flowhost::plugin", task = %escape(&self.task), "… further progress reports of this call dropped (at most {SIGNALS_PER_CALL} are heard per call)");
            }
            return;
        }
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        let details = details.map(|d| {
            let d = self.redact.text(cut(&d));
            serde_json::from_str(&d).unwrap_or(serde_json::Value::String(d))
        });
        tracing::debug!(target: "flowhost::plugin", task = %escape(&self.task), "progress {:.0}%", fraction * 100.0);
        if let Some(sink) = &self.progress {
            sink(Progress { fraction, details });
        }
    }

    fn log(&mut self, level: wit::Level, message: String, fields: Vec<(String, String)>) {
        self.signals.logs = self.signals.logs.saturating_add(1);
        if self.signals.logs > SIGNALS_PER_CALL {
            if self.signals.logs == SIGNALS_PER_CALL + 1 {
                tracing::warn!(target: "flowhost::plugin", task = %escape(&self.task), "… further log records of this call dropped (at most {SIGNALS_PER_CALL} are kept per call)");
            }
            return;
        }
        let task = self.task.as_str();
        let fields: Vec<String> = fields
            .iter()
            .take(LOG_FIELDS)
            .map(|(k, v)| {
                let (k, v) = (self.redact.text(cut(k)), self.redact.text(cut(v)));
                format!("{}={}", escape(&k), escape(&v))
            })
            .collect();
        let fields = fields.join(" ");
        let message = self.redact.text(cut(&message));
        let message = escape(&message);
        match level {
            wit::Level::Trace => {
                tracing::trace!(target: "flowhost::plugin", task, stream = "log", fields, "{message}")
            }
            wit::Level::Debug => {
                tracing::debug!(target: "flowhost::plugin", task, stream = "log", fields, "{message}")
            }
            wit::Level::Info => {
                tracing::info!(target: "flowhost::plugin", task, stream = "log", fields, "{message}")
            }
            wit::Level::Warn => {
                tracing::warn!(target: "flowhost::plugin", task, stream = "log", fields, "{message}")
            }
            wit::Level::Error => {
                tracing::error!(target: "flowhost::plugin", task, stream = "log", fields, "{message}")
            }
        }
    }
}
