//! `flowhost describe`: what a plugin declares.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::output::outln;
use super::{Context, print_json};

/// Arguments of `flowhost describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The plugin component (.wasm).
    pub plugin: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Loads the plugin (which checks it against the contract) and prints its declaration.
pub async fn describe(ctx: &Context, args: DescribeArgs) -> anyhow::Result<ExitCode> {
    let plugin = ctx.engine(false)?.plugin(&args.plugin).await?;
    let info = plugin.info();
    if args.json {
        print_json(info)?;
    } else {
        outln!("{} {}", info.name, info.version)?;
        if !info.description.is_empty() {
            outln!("  {}", info.description)?;
        }
        let list = |names: &[String]| if names.is_empty() { "-".to_owned() } else { names.join(", ") };
        outln!("  requires: {}", list(&info.requires))?;
        outln!("  optional: {}", list(&info.optional))?;
        outln!("  provides: {}", list(&info.provides))?;
    }
    Ok(ExitCode::SUCCESS)
}
