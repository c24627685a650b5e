//! The `flowhost` command line: parse, call the library, print, exit.
//!
//! Exit codes: 0 success; 1 the flow failed and was reverted; 2 the flow failed and a revert
//! failed too (needs a person); 64 usage error; 65 invalid flow file, plugin or flow
//! (validation); 66 an input file could not be read; 70 internal error.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(cli::EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    cli::init_logging(cli.verbose, cli.quiet);
    cli::configure_engine(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(cli::EXIT_SOFTWARE);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => cli::run::run(args).await,
            Command::Check(args) => cli::check::check(args).await,
            Command::Describe(args) => cli::describe::describe(args).await,
            Command::Conform(args) => cli::conform::conform(args).await,
            Command::Runs(args) => cli::runs::runs(args).await,
            Command::Compile(args) => cli::compile::compile(args).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(cli::exit_code_for(&error))
        }
    }
}
