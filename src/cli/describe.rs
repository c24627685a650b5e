//! `flowhost describe`: what a plugin declares.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::output::outln;
use super::{Context, print_json, shown};

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
        // Every word here is the plugin's own: escaped, so it cannot write to the terminal.
        outln!("{} {}", shown(&info.name), shown(&info.version))?;
        if !info.description.is_empty() {
            outln!("  {}", shown(&info.description))?;
        }
        let list = |names: &[String]| {
            if names.is_empty() {
                "-".to_owned()
            } else {
                shown(&names.join(", ")).into_owned()
            }
        };
        outln!("  requires: {}", list(&info.requires))?;
        outln!("  optional: {}", list(&info.optional))?;
        outln!("  provides: {}", list(&info.provides))?;
    }
    Ok(ExitCode::SUCCESS)
}
