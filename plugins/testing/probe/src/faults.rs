//! Misbehaviour on request: traps, panics, runaway CPU, memory and stack, oversized results,
//! and reaching for files, environment and network the host may or may not grant.

use std::hint::black_box;
use std::io::{Error, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;
use std::{env, fs, thread};

use flowhost_guest::bindings::exports::flowhost::task::task::TaskError;
use serde_json::Value;

use crate::config::{Config, Mode};
use crate::error;

/// Length of the `huge` result: well past any sane result limit.
const HUGE: usize = 100 << 20;

fn io(what: &str, e: Error) -> TaskError {
    error("io", format!("{what}: {e}"))
}

/// Never returns; the condition only stops rustc from rejecting the recursion as unconditional.
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let frame = black_box([depth; 16]);
    recurse(depth + 1) + frame[0]
}

fn grow() -> ! {
    let mut chunks = Vec::new();
    loop {
        chunks.push(black_box(vec![1u8; 1 << 20]));
        black_box(&chunks);
    }
}

/// Applies the configured fault. `Some` is a result to return from execute (`huge`,
/// `read_file`, `env`, `tcp`); `None` means carry on, after an effect (`write_file`, `sleep`,
/// `wait_file`) or when no fault is configured.
pub fn apply(config: &Config) -> Result<Option<String>, TaskError> {
    if config.trap {
        core::arch::wasm32::unreachable();
    }
    if let Some(message) = &config.panic {
        panic!("{message}");
    }
    let Some(mode) = config.mode else {
        return Ok(None);
    };
    match mode {
        Mode::Loop => loop {
            black_box(());
        },
        Mode::Grow => grow(),
        Mode::Recurse => Ok(Some(recurse(0).to_string())),
        Mode::Huge => {
            // Built in place: one allocation of the final size, not a copy of a copy.
            let mut text = String::with_capacity(HUGE + 2);
            text.push('"');
            text.extend(std::iter::repeat_n('a', HUGE));
            text.push('"');
            Ok(Some(text))
        }
        Mode::ReadFile => {
            let path = config.need(&config.path, "path")?;
            let content = fs::read_to_string(path).map_err(|e| io(path, e))?;
            Ok(Some(Value::String(content).to_string()))
        }
        Mode::WriteFile => {
            let path = config.need(&config.path, "path")?;
            let content = config.need(&config.content, "content")?;
            fs::write(path, content).map_err(|e| io(path, e))?;
            Ok(None)
        }
        Mode::Env => {
            let name = config.need(&config.name, "name")?;
            Ok(Some(Value::from(env::var(name).ok()).to_string()))
        }
        Mode::Tcp => {
            let addr = config.need(&config.addr, "addr")?;
            TcpStream::connect(addr).map_err(|e| io(addr, e))?;
            Ok(Some("\"connected\"".into()))
        }
        Mode::Sleep => {
            thread::sleep(Duration::from_millis(config.ms));
            Ok(None)
        }
        Mode::WaitFile => {
            let path = config.need(&config.path, "path")?;
            while !Path::new(path).exists() {
                thread::sleep(Duration::from_millis(20));
            }
            Ok(None)
        }
        Mode::OpenMany => {
            let path = config.need(&config.path, "path")?;
            let mut open = Vec::new();
            for i in 0..config.n {
                open.push(fs::File::open(path).map_err(|e| io(&format!("{path} (open #{i})"), e))?);
            }
            Ok(Some(open.len().to_string()))
        }
        Mode::Flood => {
            let line = "x".repeat(1023);
            let mut out = std::io::stdout().lock();
            for _ in 0..config.n / 1024 {
                writeln!(out, "{line}").map_err(|e| io("stdout", e))?;
            }
            drop(out);
            for _ in 0..config.n / 1024 {
                eprintln!("{line}");
            }
            Ok(None)
        }
        // `std::process::exit` would report only failure (WASI 0.2's `exit`); the status
        // itself needs `exit-with-code`.
        Mode::Exit => {
            wasip2::cli::exit::exit_with_code(config.n as u8);
            unreachable!("exit-with-code returned")
        }
        Mode::Print => {
            let content = config.need(&config.content, "content")?;
            println!("{content}");
            eprintln!("{content}");
            Ok(None)
        }
        Mode::Symlink => {
            let path = config.need(&config.path, "path")?;
            let target = config.need(&config.content, "content")?;
            let _ = fs::remove_dir_all(path);
            let _ = fs::remove_file(path);
            #[allow(deprecated, reason = "the one portable symlink call that WASI's std implements")]
            fs::soft_link(target, path).map_err(|e| io(path, e))?;
            Ok(None)
        }
    }
}
