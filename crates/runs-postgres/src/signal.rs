//! Signals: what `flowhost runs signal` and `POST /v1/runs/{id}/signals/{name}` send to a run,
//! kept until a wait entry of the run takes it. Sending wakes the workers: a WAITING run whose
//! signal came is claimable (see `flowhost_wakes` in the schema and [`PgRunDb::claim`]).

use flowhost_core::events::FlowState;
use serde_json::Value;

use crate::PgRunDb;
use crate::queue::CHANNEL;
use flowhost_runs::RunDbError;

impl PgRunDb {
    /// [`flowhost_runs::RunDb::signal`]: stores the signal of an unfinished run and notifies
    /// the workers, in one transaction.
    pub(crate) fn send_signal(
        &self,
        run_id: &str,
        name: &str,
        data: &Value,
    ) -> Result<Option<FlowState>, RunDbError> {
        let (id, name, data) = (run_id.to_owned(), name.to_owned(), data.to_string());
        self.block("sending a signal", move |s| async move {
            let what = "sending a signal";
            let mut client = s.client(what).await?;
            let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
            let row = tx
                .query_opt("SELECT state FROM runs WHERE id = $1 FOR UPDATE", &[&id])
                .await
                .map_err(|e| s.error(what, e))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let state: FlowState = flowhost_runs::row::state("runs.state", row.get(0))
                .map_err(|e| s.error(what, e))?;
            if !state.is_finished() {
                tx.execute(
                    "INSERT INTO signals (run_id, name, data, at)
                     VALUES ($1, $2, $3, flowhost_ts(flowhost_now()))",
                    &[&id, &name, &data],
                )
                .await
                .map_err(|e| s.error(what, e))?;
                tx.execute(&format!("NOTIFY {CHANNEL}"), &[])
                    .await
                    .map_err(|e| s.error(what, e))?;
            }
            tx.commit().await.map_err(|e| s.error(what, e))?;
            Ok(Some(state))
        })
    }

    /// [`flowhost_runs::RunDb::take_signal`].
    pub(crate) fn take_signal_for(
        &self,
        run_id: &str,
        task: &str,
        name: &str,
    ) -> Result<Option<Value>, RunDbError> {
        let (id, task, name) = (run_id.to_owned(), task.to_owned(), name.to_owned());
        self.block("taking a signal", move |s| async move {
            let what = "taking a signal";
            let mut client = s.client(what).await?;
            let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
            // The one this task took before, else the oldest nobody took.
            let row = tx
                .query_opt(
                    "SELECT seq, data FROM signals WHERE run_id = $1 AND name = $2
                       AND (taken_by = $3 OR taken_by IS NULL)
                     ORDER BY taken_by IS NULL, seq LIMIT 1 FOR UPDATE",
                    &[&id, &name, &task],
                )
                .await
                .map_err(|e| s.error(what, e))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let (seq, data): (i64, String) = (row.get(0), row.get(1));
            tx.execute(
                "UPDATE signals SET taken_by = $2 WHERE seq = $1",
                &[&seq, &task],
            )
            .await
            .map_err(|e| s.error(what, e))?;
            tx.commit().await.map_err(|e| s.error(what, e))?;
            serde_json::from_str(&data)
                .map(Some)
                .map_err(|e| s.error(what, format!("damaged JSON column `signals.data`: {e}")))
        })
    }
}
