//! `flowhost compile`: fills the compiled-component cache ahead of time.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use super::Context;
use super::exit::UsageError;
use super::output::errln;

/// Arguments of `flowhost compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The plugin components (.wasm) to compile.
    #[arg(required = true)]
    pub plugins: Vec<PathBuf>,
}

/// Compiles (or finds in the cache) and checks each plugin; a plugin already cached costs a
/// load only. Fails on the first plugin that is not a valid task.
pub async fn compile(ctx: &Context, args: CompileArgs) -> anyhow::Result<ExitCode> {
    let engine = ctx.engine(false)?;
    let Some(dir) = engine.cache_dir().map(|d| d.to_path_buf()) else {
        bail!(UsageError(
            "nothing to compile into: the cache is off (--no-cache)".into()
        ));
    };
    for path in &args.plugins {
        let plugin = engine.plugin(path).await?;
        let info = plugin.info();
        errln!(
            "compiled {} ({} {})",
            path.display(),
            info.name,
            info.version
        );
    }
    errln!("cache: {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
