//! Where the run database is (`--db`, `FLOWHOST_DB`, `--no-db`) and how this process executes
//! runs in it (`--lease-ttl`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use flowhost::runs::{
    DEFAULT_LEASE_TTL, Durability, Executor, PgRunDb, PruneFilter, Pruned, RunDb, RunDbError,
    ScheduleDb, SqliteRunDb,
};

/// Where runs are recorded when neither --db nor FLOWHOST_DB says otherwise: `flowhost` in
/// the user's data directory (`$XDG_DATA_HOME`, else `~/.local/share` on Linux), so that
/// `flowhost runs list` finds a user's runs from any working directory. Without a home
/// directory, `.flowhost/runs.db` in the working directory.
pub fn default_db() -> PathBuf {
    match dirs::data_dir() {
        Some(dir) => dir.join("flowhost").join("runs.db"),
        None => PathBuf::from(".flowhost").join("runs.db"),
    }
}

/// Where the run database is.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// The run database: a SQLite file, or a PostgreSQL URL (postgres://user@host:port/db)
    /// that many hosts share [default: flowhost/runs.db in the user data directory, e.g.
    /// ~/.local/share/flowhost/runs.db].
    #[arg(long, value_name = "PATH", env = "FLOWHOST_DB", global = true)]
    pub db: Option<PathBuf>,
    /// How long this process's lease on a run it executes lasts without renewal (renewed at
    /// every transition and every third of it meanwhile): 500ms, 30s, 2m. Another process
    /// may take over a run whose lease expired.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", env = "FLOWHOST_LEASE_TTL", global = true)]
    pub lease_ttl: Option<Duration>,
}

/// Where `flowhost run` records, or whether it does.
#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Record nothing: a purely in-memory run that cannot be resumed or inspected later.
    #[arg(long, conflicts_with = "db")]
    pub no_db: bool,
}

impl DbArgs {
    /// The database these flags choose, as messages show it: without its password.
    pub fn shown(&self) -> String {
        flowhost::runs::mask_passwords(&self.path().to_string_lossy()).into_owned()
    }

    /// The database file these flags choose.
    pub fn path(&self) -> PathBuf {
        self.db
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(default_db)
    }

    /// Opens the SQLite database; `create` makes it (and its folder) when missing.
    pub fn open(&self, create: bool) -> anyhow::Result<Arc<SqliteRunDb>> {
        if let Some(url) = self.postgres_url() {
            anyhow::bail!(super::exit::UsageError(format!(
                "this command keeps its runs in SQLite only, not in {}",
                flowhost::runs::mask_passwords(&url)
            )));
        }
        Ok(Arc::new(SqliteRunDb::open(
            &self.path(),
            create,
            Durability::Normal,
        )?))
    }

    /// The PostgreSQL URL these flags choose, if they choose one.
    pub fn postgres_url(&self) -> Option<String> {
        let db = self.db.as_ref()?.to_str()?;
        flowhost::runs::is_postgres_url(db).then(|| db.to_owned())
    }

    /// Opens the database these flags choose, SQLite or PostgreSQL; `create` makes a missing
    /// SQLite file (a PostgreSQL database must exist; its schema is created on first use).
    pub fn open_any(&self, create: bool) -> anyhow::Result<AnyDb> {
        match self.postgres_url() {
            Some(url) => Ok(AnyDb::Postgres(Arc::new(PgRunDb::connect(&url)?))),
            None => Ok(AnyDb::Sqlite(self.open(create)?)),
        }
    }

    /// The PostgreSQL database these flags choose; a usage error for anything else.
    pub fn open_postgres(&self, verb: &str) -> anyhow::Result<Arc<PgRunDb>> {
        let Some(url) = self.postgres_url() else {
            anyhow::bail!(super::exit::UsageError(format!(
                "`flowhost {verb}` needs a shared PostgreSQL run database: --db postgres://user@host:port/db (or FLOWHOST_DB)"
            )));
        };
        Ok(Arc::new(PgRunDb::connect(&url)?))
    }

    /// An executor of this process on `db`, with the chosen lease duration.
    pub fn executor(&self, db: Arc<dyn RunDb>) -> Executor {
        Executor::new(db).lease_ttl(self.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL))
    }
}

impl RecordArgs {
    /// The executor recording into the database, unless --no-db.
    pub fn executor(&self) -> anyhow::Result<Option<Executor>> {
        if self.no_db {
            Ok(None)
        } else {
            Ok(Some(self.db.executor(self.db.open_any(true)?.shared())))
        }
    }
}

/// An open run database of either kind.
pub enum AnyDb {
    /// A SQLite file.
    Sqlite(Arc<SqliteRunDb>),
    /// A shared PostgreSQL database.
    Postgres(Arc<PgRunDb>),
}

impl AnyDb {
    /// The database behind the common interface.
    pub fn shared(&self) -> Arc<dyn RunDb> {
        match self {
            AnyDb::Sqlite(db) => db.clone(),
            AnyDb::Postgres(db) => db.clone(),
        }
    }

    /// The database where schedules record their ticks.
    pub fn schedules(&self) -> Arc<dyn ScheduleDb> {
        match self {
            AnyDb::Sqlite(db) => db.clone(),
            AnyDb::Postgres(db) => db.clone(),
        }
    }

    /// Prunes (or with `dry_run` lists) the runs `filter` matches; held runs are kept.
    pub fn prune_runs(&self, filter: &PruneFilter, dry_run: bool) -> Result<Pruned, RunDbError> {
        match self {
            AnyDb::Sqlite(db) => db.prune_runs(filter, dry_run),
            AnyDb::Postgres(db) => db.prune_runs(filter, dry_run),
        }
    }
}

/// `500ms`, `30s`, `15m`, `12h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number and a unit, e.g. 30s or 7d"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{text}`: unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_millis(n.saturating_mul(millis)))
}
