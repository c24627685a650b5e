//! The `flowhost` command line: parse, call the library, print, exit. The exit codes are in
//! one table, `cli/exit.rs`.

mod cli;

use std::process::ExitCode;

use cli::output::errln;
use cli::{Cli, Command, Context, exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse_args() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(error) = cli.log_settings().init() {
        errln!("error: {error}");
        return ExitCode::from(exit::USAGE);
    }
    let ctx = match Context::new(&cli) {
        Ok(ctx) => ctx,
        Err(error) => {
            errln!("error: {}", exit::render(&error));
            return ExitCode::from(exit::code_for(&error));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            errln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => cli::run::run(&ctx, args).await,
            Command::Check(args) => cli::check::check(&ctx, args).await,
            Command::Describe(args) => cli::describe::describe(&ctx, args).await,
            Command::Conform(args) => cli::conform::conform(&ctx, args).await,
            Command::Runs(args) => cli::runs::runs(&ctx, args).await,
            Command::Submit(args) => cli::submit::submit(&ctx, args).await,
            Command::Worker(args) => cli::worker::worker(&ctx, args).await,
            Command::Workers(args) => cli::workers::workers(&ctx, args).await,
            Command::Schedules(args) => cli::schedules::schedules(&ctx, args).await,
            Command::Serve(args) => cli::serve::serve(&ctx, args).await,
            Command::Compile(args) => cli::compile::compile(&ctx, args).await,
            Command::Call(args) => cli::call::call(&ctx, args).await,
            Command::New(args) => cli::new::new(args),
            Command::Completions(args) => cli::completions::completions(args),
        }
    });
    // A WASI call blocked in a host thread past its task's deadline (a read of a FIFO no one
    // writes) cannot be interrupted; its task has failed already. Exit without waiting for it.
    runtime.shutdown_background();
    ctx.shutdown();
    match outcome {
        Ok(code) => code,
        Err(error) => {
            errln!("error: {}", exit::render(&error));
            ExitCode::from(exit::code_for(&error))
        }
    }
}
