//! `flowhost submit`: validate a flow here and queue a run of it for the workers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use flowhost::runs::{RunDbError, WorkerError};

use super::db::DbArgs;
use super::output::outln;
use super::{Context, StoreArgs, print_invalid, print_json, read_flow};

/// Arguments of `flowhost submit`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
flowhost submit flow.toml --store raw_size=20 --db postgres://flowhost@db.internal/flowhost\n  \
FLOWHOST_DB=postgres://flowhost@db/flowhost flowhost submit flow.toml --store-file request.json\n  \
flowhost submit flow.toml --json        # {\"run_id\": …, \"flow\": …}\n  \
flowhost submit flow.toml --key order-1042   # at most one run per key\n  \
flowhost submit flow.toml --priority 5       # claimed before runs of lower priority\n\n\
The flow is validated here, then its flow file and every plugin are stored in the database by\n\
SHA-256 (once, however many runs use them): workers need only the database URL. Directory\n\
grants stay host paths, resolved on the worker against this flow file's folder.")]
pub struct SubmitArgs {
    /// The flow file (TOML).
    pub flow: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print {run_id, flow} as JSON instead of the bare id; for an invalid flow,
    /// { state: "INVALID", problems: [...] }.
    #[arg(long)]
    pub json: bool,
    /// Idempotency key: when a run of this flow was already submitted or started with this
    /// key (and not pruned since), queue nothing and print that run's id instead.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// A W3C trace-context traceparent (00-TRACE_ID-SPAN_ID-FLAGS): the worker's trace of
    /// the run becomes a child of that span. Defaults to TRACEPARENT when set.
    #[arg(long, value_name = "TRACEPARENT", env = "TRACEPARENT", value_parser = parse_traceparent)]
    pub traceparent: Option<String>,
    /// Workers claim queued runs by priority, higher first, then in submission order.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub priority: i32,
    #[command(flatten)]
    pub db: DbArgs,
}

/// Validates, stores, queues, prints the run's id.
pub async fn submit(ctx: &Context, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    if args.db.postgres_url().is_none() {
        args.db.open_postgres("submit")?;
    }
    let flow = match read_flow(&args.flow) {
        Ok(flow) => flow,
        Err(error) => return invalid(args.json, None, error),
    };
    let store = args.store.store()?;
    let loaded = match ctx.engine(flow.needs_fuel())?.load(&flow, store).await {
        Ok(loaded) => loaded,
        Err(error) => return invalid(args.json, Some(&flow.name), error.into()),
    };
    let db = args.db.open_postgres("submit")?;
    let id = match flowhost::runs::submit(
        &db,
        &loaded,
        &args.flow,
        args.key.as_deref(),
        args.traceparent.as_deref(),
        args.priority,
    )
    .await
    {
        Ok(id) => id,
        Err(WorkerError::Db(RunDbError::Exists { run, key, .. })) => {
            return super::run::print_already_started(&flow.name, &run, &key, args.json);
        }
        Err(error) => return Err(error.into()),
    };
    if args.json {
        print_json(&serde_json::json!({ "run_id": id, "flow": flow.name }))?;
    } else {
        outln!("{id}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A traceparent the workers can use: version 00, ids not all zero, lower-case hex.
fn parse_traceparent(text: &str) -> Result<String, String> {
    if flowhost::runs::is_traceparent(text) {
        Ok(text.to_owned())
    } else {
        Err("expected a W3C traceparent: 00-<32 hex digits>-<16 hex digits>-<2 hex digits>, lower case, ids not all zero".into())
    }
}

fn invalid(json: bool, flow: Option<&str>, error: anyhow::Error) -> anyhow::Result<ExitCode> {
    if json {
        print_invalid(flow, &error)?;
    }
    Err(error)
}
