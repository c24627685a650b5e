//! Bounded capture of a task's stdout and stderr.
//!
//! A task may print as much as it likes: the capture keeps the first [`CAPTURE_BYTES`] of each
//! stream per call and counts the rest, which the log reports as one "… N bytes of output
//! dropped" line. Writes past the cap *succeed* for the guest — a stream that refused them
//! would make a Rust `eprintln!` panic, turning chatty output into a failed task.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of a task's stdout or stderr kept per call; beyond it output is counted and dropped.
pub(crate) const CAPTURE_BYTES: usize = 64 * 1024;

/// One captured stream, shared by the instance's WASI context and the host.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Captured>>);

/// What a stream captured since it was last taken.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Captured {
    /// The first bytes, up to the cap.
    pub(crate) kept: Vec<u8>,
    /// How many bytes past the cap were dropped.
    pub(crate) dropped: u64,
}

impl Capture {
    fn write(&self, bytes: &[u8]) {
        let mut captured = self.0.lock().expect("capture poisoned");
        let room = CAPTURE_BYTES.saturating_sub(captured.kept.len());
        let kept = bytes.len().min(room);
        captured.kept.extend_from_slice(&bytes[..kept]);
        captured.dropped += (bytes.len() - kept) as u64;
    }

    /// A copy of what was captured so far (e.g. for a panic message), leaving it in place.
    pub(crate) fn peek(&self) -> Vec<u8> {
        self.0.lock().expect("capture poisoned").kept.clone()
    }

    /// What was captured since the last take; the capture starts empty again, so a warm
    /// instance's next call has the whole cap.
    pub(crate) fn take(&self) -> Captured {
        std::mem::take(&mut *self.0.lock().expect("capture poisoned"))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    /// Written synchronously, so a call's output is complete when the call returns.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        Capture::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    /// Always room: past the cap, bytes are counted and dropped rather than refused.
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_cap_is_accepted_counted_and_dropped() {
        let capture = Capture::default();
        let mut stream = capture.clone();
        OutputStream::write(&mut stream, Bytes::from(vec![b'a'; CAPTURE_BYTES - 1])).unwrap();
        OutputStream::write(&mut stream, Bytes::from_static(b"bcd")).unwrap();
        assert!(
            stream.check_write().unwrap() > 0,
            "a full capture still takes writes"
        );
        let taken = capture.take();
        assert_eq!(taken.kept.len(), CAPTURE_BYTES);
        assert_eq!(taken.kept.last(), Some(&b'b'));
        assert_eq!(taken.dropped, 2);
        assert_eq!(
            capture.take(),
            Captured::default(),
            "taking empties it for the next call"
        );
    }
}
