//! `flowhost completions`: a shell completion script for flowhost's commands and flags.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;
use super::output::stdout_bytes;

/// Arguments of `flowhost completions`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
flowhost completions bash > ~/.local/share/bash-completion/completions/flowhost\n  \
flowhost completions zsh > ~/.zfunc/_flowhost   # with `fpath+=~/.zfunc` before compinit\n  \
flowhost completions fish > ~/.config/fish/completions/flowhost.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the script on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    // Generated into memory first: the generator panics on a failed write, and a closed
    // stdout is no failure here (see `output`).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "flowhost", &mut script);
    stdout_bytes(&script)?;
    Ok(ExitCode::SUCCESS)
}
