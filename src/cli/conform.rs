//! `flowhost conform`: does a plugin honour the task contract?

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use flowhost::PluginError;
use flowhost::conform::{Cases, conform as run_suite};

use super::output::outln;
use super::{Context, print_json};

/// Exit code when at least one check failed.
pub const EXIT_NONCONFORMING: u8 = 1;

/// Arguments of `flowhost conform`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 every check passed (or was skipped), 1 a check failed, \
64 usage error, 65 invalid cases file, 66 unreadable cases file.\n\n\
A cases file holds [[case]] tables: name, args = {...}, config = {...}, and either \
expect = <result> or expect_error = \"code\"; deterministic = false skips the repeat check. \
A top-level allow_no_provides = true accepts a task that provides nothing."
)]
pub struct ConformArgs {
    /// The plugin component (.wasm, or .wat text).
    pub plugin: PathBuf,
    /// Known inputs and their expected results or error codes (TOML); without it, the
    /// checks that need a valid input are skipped.
    #[arg(long, value_name = "CASES.toml")]
    pub cases: Option<PathBuf>,
    /// Print the report as JSON: { plugin, checks: [{id, status, reason}] }.
    #[arg(long)]
    pub json: bool,
}

/// Runs the suite and prints one line per check.
pub async fn conform(ctx: &Context, args: ConformArgs) -> anyhow::Result<ExitCode> {
    readable(&args.plugin)?;
    let cases = args.cases.as_deref().map(Cases::from_file).transpose()?;
    let report = run_suite(&ctx.engine(false)?, &args.plugin, cases.as_ref()).await;
    if args.json {
        print_json(&report)?;
    } else {
        outln!("{report}")?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NONCONFORMING)
    })
}

/// A plugin that cannot be read is an input error (exit 66), not a plugin that fails the
/// suite: there is nothing to check.
fn readable(path: &Path) -> Result<(), PluginError> {
    let read = std::fs::File::open(path).and_then(|mut file| file.read(&mut [0; 1]));
    read.map(drop).map_err(|source| PluginError::Read {
        path: path.to_path_buf(),
        source,
    })
}
