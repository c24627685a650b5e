//! `flowhost call`: one function of one plugin, under the sandbox and limits of a flow's
//! task, without writing a flow; or a recorded task's call replayed from the run database.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use flowhost::runs::{RunDb, RunRecord, sha256_hex};
use flowhost::{
    Access, DirGrant, DirectCall, FlowSpec, Outcome, Progress, ProgressSink, Sandbox, TaskError,
    TaskSpec,
};
use serde_json::{Value, json};

use super::db::DbArgs;
use super::exit::{self, UsageError};
use super::output::errln;
use super::{Context, print_json, shown};

/// The plugin function to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Function {
    /// `execute(args, config)`.
    Execute,
    /// `revert(args, config, outcome, failures)`.
    Revert,
    /// `describe()`.
    Describe,
}

/// Arguments of `flowhost call`.
#[derive(Debug, Args)]
#[command(
    after_help = "Prints one JSON object on stdout: {\"result\": …} when the function returned, \
{\"error\": {code, message, details}} when it failed (a task error, or the host stopping it: \
trap, deadline, memory cap), plus \"progress\": [{fraction, details}] when the plugin reported any. \
Logs and what the plugin printed go to stderr.\n\n\
Exit codes: 0 the function returned, 1 it failed, 64 usage error or a refused grant, 65 invalid plugin, \
66 unreadable plugin or run database.\n\n\
Examples:\n  \
flowhost call stamp.wasm describe\n  \
flowhost call stamp.wasm execute --args '{\"ledger\": []}' --config '{\"stamp\": \"a\"}'\n  \
flowhost call task.wasm execute --args '{}' --dir ./state:/state:rw --env REGION=eu\n  \
flowhost call stamp.wasm revert --args '{\"ledger\": []}' --config '{\"stamp\": \"a\"}' --outcome '{\"result\": [\"a\"]}'\n  \
flowhost call fixed.wasm execute --from-run 0193c2d4-… --task reserve_quota"
)]
pub struct CallArgs {
    /// The plugin component (.wasm). With --from-run, the recorded task's plugin or a fixed
    /// build of it.
    pub plugin: PathBuf,
    /// The function to call.
    #[arg(value_enum)]
    pub function: Function,
    /// The arguments object (JSON) [default: {}, or the recorded arguments with --from-run].
    #[arg(long, value_name = "JSON")]
    pub args: Option<String>,
    /// The config object (JSON) [default: {}, or the flow entry's config with --from-run].
    #[arg(long, value_name = "JSON")]
    pub config: Option<String>,
    /// Grant a host directory at a guest path, read-only unless `:rw`. Repeatable.
    #[arg(long = "dir", value_name = "HOST:GUEST[:rw]")]
    pub dirs: Vec<String>,
    /// Set an environment variable the plugin sees. Repeatable.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// For revert: how execute ended, {"result": <value>} or {"error": {"code": …,
    /// "message": …}} [with --from-run: the recorded outcome].
    #[arg(long, value_name = "JSON")]
    pub outcome: Option<String>,
    /// Replay the call of a recorded run's task: its arguments, its flow entry's config,
    /// grants and limits, and (for revert) its outcome and the run's failures.
    #[arg(long, value_name = "RUN_ID", requires = "task")]
    pub from_run: Option<String>,
    /// The task entry of --from-run.
    #[arg(long, value_name = "NAME", requires = "from_run")]
    pub task: Option<String>,
    /// With --from-run: take the entry from the run's flow file even though the file changed
    /// since the run was recorded (its grants, config and limits are then today's, not the
    /// run's); without it such a file is refused, as `runs resume` refuses it.
    #[arg(long, requires = "from_run")]
    pub force: bool,
    #[command(flatten)]
    pub db: DbArgs,
}

/// What a replay takes from the run database and the run's flow file.
struct Recorded {
    run_id: String,
    entry: TaskSpec,
    flow: FlowSpec,
    args: Option<String>,
    outcome: Option<Outcome>,
    failures: Vec<(String, TaskError)>,
}

/// Calls the function and prints how it ended.
pub async fn call(ctx: &Context, args: CallArgs) -> anyhow::Result<ExitCode> {
    let engine = ctx.engine(false)?;
    let plugin = engine.plugin(&args.plugin).await?;
    if args.function == Function::Describe {
        print_json(&json!({ "result": plugin.info(), "contract": plugin.contract_version() }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let recorded = match (&args.from_run, &args.task) {
        (Some(run), Some(task)) => Some(replay(&args.db, run, task, plugin.sha256(), args.force)?),
        _ => None,
    };
    let (mut entry, flow) = match &recorded {
        Some(r) => (r.entry.clone(), r.flow.clone()),
        None => (
            TaskSpec::new(plugin.info().name.clone(), args.plugin.clone()),
            FlowSpec::linear("call"),
        ),
    };
    // Relative to the working directory, also when a replay resolves its entry's own grants
    // against the run's flow file.
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    for grant in &args.dirs {
        let mut grant = dir_grant(grant)?;
        grant.host = cwd.join(&grant.host);
        entry.dirs.push(grant);
    }
    for var in &args.env {
        let (name, value) = var
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--env {var}: expected K=V")))?;
        entry.env_set.insert(name.to_owned(), value.to_owned());
    }
    let (sandbox, problems) = Sandbox::for_entry(&entry, &flow, engine.protected());
    if !problems.is_empty() {
        return Err(anyhow::Error::new(UsageError(problems.join("; ")))
            .context("the call's grants are refused"));
    }
    let call_args = match (&args.args, recorded.as_ref().and_then(|r| r.args.clone())) {
        (Some(text), _) => json_text(text, "--args")?,
        (None, Some(text)) => text,
        (None, None) if recorded.is_some() => {
            return Err(UsageError(format!(
                "task `{}` never started in that run, so it has no recorded arguments: give --args",
                entry.name
            ))
            .into());
        }
        (None, None) => "{}".to_owned(),
    };
    let config = match &args.config {
        Some(text) => json_text(text, "--config")?,
        None => entry.config.to_string(),
    };
    let reports: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let kept = reports.clone();
    let progress: ProgressSink = Arc::new(move |report: Progress| {
        tracing::info!(target: "flowhost::plugin", "progress {:.0}%", report.fraction * 100.0);
        kept.lock().unwrap_or_else(|p| p.into_inner()).push(report);
    });
    let direct = DirectCall {
        task: entry.name.clone(),
        run_id: recorded.as_ref().map_or_else(
            || format!("call-{}", std::process::id()),
            |r| r.run_id.clone(),
        ),
        attempt: 1,
        sandbox,
        args: call_args,
        config,
        progress: Some(progress),
    };
    let ended = match args.function {
        Function::Execute => direct.execute(&plugin).await.and_then(|text| {
            serde_json::from_str::<Value>(&text).map_err(|e| TaskError {
                code: flowhost::HostFault::InvalidResult.code().to_owned(),
                message: format!("result is not valid JSON: {e}"),
                details: Some(json!({ "result": text })),
            })
        }),
        Function::Revert => {
            let (outcome, failures) = match (&args.outcome, &recorded) {
                (Some(text), _) => {
                    let outcome = parse_outcome(text)?;
                    let failures = match &outcome {
                        Outcome::Error(error) => vec![(entry.name.clone(), error.clone())],
                        Outcome::Result(_) => Vec::new(),
                    };
                    (
                        outcome,
                        recorded.as_ref().map_or(failures, |r| r.failures.clone()),
                    )
                }
                (
                    None,
                    Some(Recorded {
                        outcome: Some(outcome),
                        failures,
                        ..
                    }),
                ) => (outcome.clone(), failures.clone()),
                (None, _) => {
                    return Err(UsageError(
                        "revert needs the outcome of execute: give --outcome '{\"result\": …}' or '{\"error\": {\"code\": …, \"message\": …}}'"
                            .into(),
                    )
                    .into());
                }
            };
            direct
                .revert(&plugin, &outcome, &failures)
                .await
                .map(|result| {
                    result.map_or(Value::Null, |text| {
                        serde_json::from_str(&text).unwrap_or(Value::String(text))
                    })
                })
        }
        Function::Describe => unreachable!("answered above"),
    };
    let reports = std::mem::take(&mut *reports.lock().unwrap_or_else(|p| p.into_inner()));
    let mut shown_json = match &ended {
        Ok(result) => json!({ "result": result }),
        Err(error) => json!({ "error": error }),
    };
    if !reports.is_empty() {
        shown_json["progress"] = serde_json::to_value(reports)?;
    }
    print_json(&shown_json)?;
    Ok(match ended {
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(exit::TASK_ERROR),
    })
}

/// The recorded call of `task` in run `run_id`: its arguments and outcome from the run
/// database, its entry (config, grants, limits) from the run's flow file, which must be the
/// file the run was recorded with (or, with `force`, whatever it is now, saying so).
fn replay(
    db: &DbArgs,
    run_id: &str,
    task: &str,
    plugin_sha256: &str,
    force: bool,
) -> anyhow::Result<Recorded> {
    let record: RunRecord = db
        .open(false)?
        .get(run_id)?
        .ok_or_else(|| UsageError(format!("no run `{run_id}` in {}", db.shown())))?;
    let Some(recorded) = record.tasks.iter().find(|t| t.name == task) else {
        let names: Vec<&str> = record.tasks.iter().map(|t| t.name.as_str()).collect();
        return Err(UsageError(format!(
            "run `{run_id}` has no task `{task}`; its tasks: {}",
            names.join(", ")
        ))
        .into());
    };
    let flow_path = record.origin.flow_path.clone().ok_or_else(|| {
        UsageError(format!(
            "run `{run_id}` was built in code, not from a flow file: give --config and --dir"
        ))
    })?;
    // Hashed and parsed from the same bytes: the entry used is the one whose hash is compared.
    let text = std::fs::read(&flow_path).map_err(|source| flowhost::FlowFileError::Read {
        path: flow_path.clone(),
        source,
    })?;
    let hash = sha256_hex(&text);
    if record.origin.flow_hash.as_deref() != Some(hash.as_str()) {
        let differs = format!(
            "flow file {} changed since run {run_id} was recorded (its SHA-256 was {}, it is now {hash}): the grants, config and limits of its entry `{task}` may not be the run's",
            flow_path.display(),
            record.origin.flow_hash.as_deref().unwrap_or("not recorded"),
        );
        if !force {
            return Err(exit::Mismatch(differs).into());
        }
        errln!("warning: {differs}; taking the entry as it is now (--force)");
    }
    let mut flow = std::str::from_utf8(&text)
        .map_err(|e| e.to_string())
        .and_then(FlowSpec::from_toml)
        .map_err(|message| flowhost::FlowFileError::Parse {
            path: flow_path.clone(),
            message,
        })?;
    flow.base_dir = flow_path.parent().map(PathBuf::from).unwrap_or_default();
    // Tasks inside subflows are named by their path (`schedule/volume_cast`), as recorded.
    let entry = flow
        .task_paths()
        .into_iter()
        .find(|(path, _)| path == task)
        .map(|(_, spec)| spec.clone())
        .with_context(|| format!("{} no longer has a task `{task}`", flow_path.display()))?;
    if let Some(plugin) = record.origin.plugins.iter().find(|p| p.task == task)
        && plugin.sha256 != plugin_sha256
    {
        errln!(
            "note: calling a plugin other than the one the run recorded ({})",
            shown(&plugin.path.display().to_string())
        );
    }
    let failures = record
        .tasks
        .iter()
        .filter_map(|t| t.error.clone().map(|e| (t.name.clone(), e)))
        .collect();
    Ok(Recorded {
        run_id: run_id.to_owned(),
        entry,
        flow,
        args: recorded.args.clone(),
        outcome: recorded.outcome.clone(),
        failures,
    })
}

/// `HOST:GUEST[:rw]` (or `:ro`) as a grant; the guest path starts with `/`, so a host path
/// may itself hold colons.
fn dir_grant(text: &str) -> Result<DirGrant, UsageError> {
    let (rest, mode) = match text.rsplit_once(':') {
        Some((rest, "rw")) => (rest, Access::ReadWrite),
        Some((rest, "ro")) => (rest, Access::ReadOnly),
        _ => (text, Access::ReadOnly),
    };
    let bad = || {
        UsageError(format!(
            "--dir {text}: expected HOST:GUEST[:rw] with an absolute GUEST path, e.g. ./state:/state:rw"
        ))
    };
    let split = rest.rfind(":/").ok_or_else(bad)?;
    let (host, guest) = (&rest[..split], &rest[split + 1..]);
    if host.is_empty() {
        return Err(bad());
    }
    Ok(DirGrant {
        host: PathBuf::from(host),
        guest: guest.to_owned(),
        mode,
    })
}

/// Checks that `text` is JSON; returns it as it was given.
fn json_text(text: &str, flag: &str) -> Result<String, UsageError> {
    serde_json::from_str::<Value>(text)
        .map_err(|e| UsageError(format!("{flag} is not JSON: {e}")))?;
    Ok(text.to_owned())
}

/// `{"result": <value>}` or `{"error": {code, message, details?}}`.
fn parse_outcome(text: &str) -> Result<Outcome, UsageError> {
    let bad = |why: String| {
        UsageError(format!(
            "--outcome {why}: expected {{\"result\": …}} or {{\"error\": {{\"code\": …, \"message\": …}}}}"
        ))
    };
    let value: BTreeMap<String, Value> =
        serde_json::from_str(text).map_err(|e| bad(format!("is not a JSON object ({e})")))?;
    match (value.get("result"), value.get("error"), value.len()) {
        (Some(result), None, 1) => Ok(Outcome::Result(result.to_string())),
        (None, Some(error), 1) => serde_json::from_value(error.clone())
            .map(Outcome::Error)
            .map_err(|e| bad(format!("has a bad error ({e})"))),
        _ => Err(bad("holds neither or both".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_grant_reads_host_guest_and_mode_and_allows_colons_in_the_host_path() {
        let grant = dir_grant("./state:/state:rw").unwrap();
        assert_eq!(
            (grant.host, grant.guest.as_str(), grant.mode),
            (PathBuf::from("./state"), "/state", Access::ReadWrite)
        );
        let grant = dir_grant("/tmp/a:b:/data").unwrap();
        assert_eq!(
            (grant.host, grant.guest.as_str(), grant.mode),
            (PathBuf::from("/tmp/a:b"), "/data", Access::ReadOnly)
        );
        assert!(dir_grant("state").is_err());
        assert!(dir_grant(":/state").is_err());
        assert!(dir_grant("state:relative").is_err());
    }

    #[test]
    fn an_outcome_is_a_result_or_an_error() {
        assert_eq!(
            parse_outcome(r#"{"result": [1]}"#).unwrap(),
            Outcome::Result("[1]".into())
        );
        let Outcome::Error(error) =
            parse_outcome(r#"{"error": {"code": "x", "message": "m"}}"#).unwrap()
        else {
            panic!("an error outcome")
        };
        assert_eq!(error.code, "x");
        assert!(parse_outcome(r#"{"result": 1, "error": {}}"#).is_err());
        assert!(parse_outcome("[]").is_err());
    }
}
