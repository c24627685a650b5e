//! The bridge between the synchronous [`RunDb`](flowhost_runs::RunDb) and the async driver:
//! every query runs on the backend's own small tokio runtime, under [`QUERY_DEADLINE`];
//! synchronous callers wait for it on a channel ([`PgRunDb::block`]), async ones await it
//! ([`PgRunDb::spawn`]). Separate because it is the one place that knows about the runtime:
//! everything else is a future over [`Shared`], written as if the trait were async.

use std::future::Future;
use std::path::PathBuf;

use deadpool_postgres::Pool;

use flowhost_runs::RunDbError;

use crate::{PgRunDb, QUERY_DEADLINE};

/// What every query needs: the pools, and the URL (without password) to name in errors.
#[derive(Clone)]
pub(crate) struct Shared {
    /// Connections for writes and the queue.
    pub(crate) pool: Pool,
    /// Connections for reads only.
    pub(crate) reads: Pool,
    pub(crate) url: PathBuf,
}

impl Shared {
    pub(crate) fn error(&self, what: &str, reason: impl std::fmt::Display) -> RunDbError {
        RunDbError::Query {
            path: self.url.clone(),
            what: what.to_owned(),
            reason: reason.to_string(),
        }
    }

    pub(crate) async fn client(&self, what: &str) -> Result<deadpool_postgres::Object, RunDbError> {
        self.pool.get().await.map_err(|e| self.error(what, e))
    }

    /// A connection of the read pool.
    pub(crate) async fn reader(&self, what: &str) -> Result<deadpool_postgres::Object, RunDbError> {
        self.reads.get().await.map_err(|e| self.error(what, e))
    }
}

impl PgRunDb {
    /// Runs `op` on the database runtime and waits for it, from any thread.
    pub(crate) fn block<T, F, Fut>(&self, what: &str, op: F) -> Result<T, RunDbError>
    where
        T: Send + 'static,
        F: FnOnce(Shared) -> Fut,
        Fut: Future<Output = Result<T, RunDbError>> + Send + 'static,
    {
        let (send, receive) = std::sync::mpsc::sync_channel(1);
        let work = deadline(
            self.shared.clone(),
            what.to_owned(),
            op(self.shared.clone()),
        );
        self.handle.spawn(async move {
            let _ = send.send(work.await);
        });
        receive
            .recv()
            .unwrap_or_else(|_| Err(self.shared.error(what, "the database runtime stopped")))
    }

    /// Runs `op` on the database runtime and awaits it.
    pub(crate) async fn spawn<T, F, Fut>(&self, what: &str, op: F) -> Result<T, RunDbError>
    where
        T: Send + 'static,
        F: FnOnce(Shared) -> Fut,
        Fut: Future<Output = Result<T, RunDbError>> + Send + 'static,
    {
        let work = deadline(
            self.shared.clone(),
            what.to_owned(),
            op(self.shared.clone()),
        );
        self.handle
            .spawn(work)
            .await
            .unwrap_or_else(|e| Err(self.shared.error(what, e)))
    }
}

impl Drop for PgRunDb {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which is refused inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `op`, failing after [`QUERY_DEADLINE`].
pub(crate) async fn deadline<T>(
    s: Shared,
    what: String,
    op: impl Future<Output = Result<T, RunDbError>>,
) -> Result<T, RunDbError> {
    match tokio::time::timeout(QUERY_DEADLINE, op).await {
        Ok(done) => done,
        Err(_) => Err(s.error(
            &what,
            format!("no answer within {} s", QUERY_DEADLINE.as_secs()),
        )),
    }
}
