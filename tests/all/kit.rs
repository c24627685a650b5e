//! The testkit as every test here uses it: all of `flowhost_testkit`, with the `flowhost`
//! binary under test named to it before any command is built. Cargo gives the binary's path
//! (`CARGO_BIN_EXE_flowhost`) only to this crate, at compile time, so each way into a command
//! — [`flowhost`], [`flowhost_bin`], [`Workspace::new`] — names it first.

use std::ffi::OsStr;
use std::ops::Deref;
use std::path::PathBuf;

pub use flowhost_testkit::*;

/// Names `CARGO_BIN_EXE_flowhost` as the binary the testkit runs (once; later calls are
/// no-ops).
fn named() {
    flowhost_testkit::binary_under_test!();
}

/// `flowhost ARGS…` of the binary under test, ready to run ([`flowhost_testkit::flowhost`]).
pub fn flowhost<I, S>(args: I) -> Flowhost
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    named();
    flowhost_testkit::flowhost(args)
}

/// The binary under test.
pub fn flowhost_bin() -> PathBuf {
    named();
    flowhost_testkit::flowhost_bin()
}

/// A [`flowhost_testkit::Workspace`] whose commands run the binary under test.
pub struct Workspace(flowhost_testkit::Workspace);

impl Workspace {
    /// An empty workspace ([`flowhost_testkit::Workspace::new`]).
    pub fn new() -> Self {
        named();
        Self(flowhost_testkit::Workspace::new())
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for Workspace {
    type Target = flowhost_testkit::Workspace;
    fn deref(&self) -> &flowhost_testkit::Workspace {
        &self.0
    }
}

/// Waits until `journal` shows `call` of `label` exactly `times` times, polling off the async
/// workers so that an async test's run goes on meanwhile on the same runtime.
pub async fn until_journaled(journal: &Journal, what: &str, call: &str, label: &str, times: usize) {
    let dir = journal.path().to_path_buf();
    let (what, call, label) = (what.to_owned(), call.to_owned(), label.to_owned());
    tokio::task::spawn_blocking(move || {
        wait_until(&what, std::time::Duration::from_secs(60), || {
            Journal::at(&dir).count(&call, &label) == times
        })
    })
    .await
    .unwrap();
}
