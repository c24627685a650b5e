//! The schema: numbered migrations (`migrations/`), applied in one transaction under an
//! advisory lock so that workers starting together migrate once, and refused when the
//! database is newer than this build. Separate because it runs once, at connect, before any
//! other query.

use flowhost_runs::RunDbError;

use crate::bridge::Shared;

/// Schema migrations, applied in order; `flowhost_schema.version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_attempts.sql"),
    include_str!("migrations/0003_cancel.sql"),
    include_str!("migrations/0004_plugin_reports.sql"),
    include_str!("migrations/0005_idempotency_keys.sql"),
    include_str!("migrations/0006_traceparent.sql"),
    include_str!("migrations/0007_suspend_restart.sql"),
    include_str!("migrations/0008_maps_priorities.sql"),
    include_str!("migrations/0009_signals.sql"),
    include_str!("migrations/0010_schedules_and_queue_limits.sql"),
];

/// The advisory lock that serialises migrations ("FLWH").
const MIGRATION_LOCK: i64 = 0x464C_5748;

/// Brings the schema up to date, or fails naming why (a newer schema, a migration that failed).
pub(crate) async fn migrate(s: &Shared) -> Result<(), RunDbError> {
    let what = "migrating the schema";
    let mut client = s.client(what).await?;
    let tx = client.transaction().await.map_err(|e| s.error(what, e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| s.error(what, e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS flowhost_schema (version integer NOT NULL)")
        .await
        .map_err(|e| s.error(what, e))?;
    let version: i32 = match tx
        .query_opt("SELECT version FROM flowhost_schema", &[])
        .await
        .map_err(|e| s.error(what, e))?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO flowhost_schema VALUES (0)", &[])
                .await
                .map_err(|e| s.error(what, e))?;
            0
        }
    };
    let known = MIGRATIONS.len() as i32;
    if version > known {
        return Err(RunDbError::TooNew {
            path: s.url.clone(),
            found: version.into(),
            known: known.into(),
        });
    }
    for (number, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| s.error(&format!("applying migration {}", number + 1), e))?;
    }
    tx.execute("UPDATE flowhost_schema SET version = $1", &[&known])
        .await
        .map_err(|e| s.error(what, e))?;
    tx.commit().await.map_err(|e| s.error(what, e))
}
