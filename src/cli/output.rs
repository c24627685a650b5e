//! Where output goes: results on stdout (JSON or a table), messages on stderr, and whether
//! either is coloured.
//!
//! A reader that goes away early (`flowhost runs list | head -1`) is the ordinary end of a
//! Unix pipeline, not an error: writes to a closed stdout or stderr are dropped, and the
//! command finishes — a run keeps going and is recorded — and exits with the code it would
//! have had. Dying of SIGPIPE instead would abandon a run half way, unreverted.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, IsTerminal, Write};

use clap::ValueEnum;

/// Writes one line to stdout (`outln!("…", args)`); a closed stdout is not an error.
macro_rules! outln {
    () => {
        $crate::cli::output::stdout_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::stdout_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes one line to stderr (`errln!("…", args)`), dropping it if stderr is closed.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::stderr_line(format_args!($($arg)*))
    };
}
pub(crate) use errln;

/// Writes `line` and a newline to stdout.
pub fn stdout_line(line: fmt::Arguments<'_>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    closed_is_fine(out.write_fmt(line).and_then(|()| out.write_all(b"\n")))
}

/// Writes `bytes` as they are to stdout.
pub fn stdout_bytes(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    closed_is_fine(out.write_all(bytes).and_then(|()| out.flush()))
}

/// Writes `line` and a newline to stderr. Messages are best effort: there is nowhere left to
/// report a failure to write one.
pub fn stderr_line(line: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(line).and_then(|()| err.write_all(b"\n"));
}

/// A write to a pipe whose reader is gone succeeded as far as this process cares.
pub fn closed_is_fine(written: io::Result<()>) -> io::Result<()> {
    match written {
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Prints JSON to stdout, pretty.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    Ok(outln!("{}", serde_json::to_string_pretty(value)?)?)
}

/// `--color`: whether messages on stderr (log lines, help) are coloured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and `NO_COLOR` is not set.
    #[default]
    Auto,
    /// Always colour, even into a file or pipe, and whatever `NO_COLOR` says.
    Always,
    /// Never colour.
    Never,
}

impl ColorChoice {
    /// The choice in `args`, read before clap parses them, so that clap's own help and
    /// errors follow it too. The last `--color` wins; an unknown value is left for clap.
    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Self {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut choice = Self::Auto;
        for (index, arg) in args.iter().enumerate() {
            if arg == "--" {
                break;
            }
            let value = match arg.strip_prefix("--color") {
                Some("") => args.get(index + 1).map(String::as_str),
                Some(rest) => rest.strip_prefix('='),
                None => None,
            };
            if let Some(parsed) = value.and_then(|v| Self::from_str(v, true).ok()) {
                choice = parsed;
            }
        }
        choice
    }

    /// Whether stderr gets colour: `always`, `never`, or for `auto` a terminal without
    /// `NO_COLOR` (set and not empty, as no-color.org says).
    pub fn stderr_colored(self) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => {
                io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }

    /// The same choice in clap's words.
    pub fn for_clap(self) -> clap::ColorChoice {
        match self {
            Self::Auto => clap::ColorChoice::Auto,
            Self::Always => clap::ColorChoice::Always,
            Self::Never => clap::ColorChoice::Never,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(args: &[&str]) -> ColorChoice {
        ColorChoice::from_args(args.iter().map(OsString::from))
    }

    #[test]
    fn the_last_color_flag_wins_in_either_spelling() {
        assert_eq!(choice(&["flowhost", "run", "f.toml"]), ColorChoice::Auto);
        assert_eq!(
            choice(&["flowhost", "--color", "never", "run"]),
            ColorChoice::Never
        );
        assert_eq!(
            choice(&["flowhost", "--color=never", "run", "--color=always"]),
            ColorChoice::Always
        );
        assert_eq!(
            choice(&["flowhost", "--color", "purple"]),
            ColorChoice::Auto,
            "clap reports the bad value"
        );
        assert_eq!(
            choice(&["flowhost", "--", "--color=never"]),
            ColorChoice::Auto
        );
    }
}
