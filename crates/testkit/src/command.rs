//! The `flowhost` binary under test, run as a user would run it, and what the tests check of
//! a finished run: its exit code, its streams; and the processes the tests start and stop.

use std::ffi::OsStr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary every command of the testkit runs, once named ([`use_binary`]).
static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Names the `flowhost` binary under test; every command the testkit builds runs it. Cargo
/// tells where it built the binary (`CARGO_BIN_EXE_flowhost`) only to the root package's
/// integration tests and benches, at their compile time, so they hand the path over —
/// [`binary_under_test!`] does — before building a command. Naming the same path again is a
/// no-op; naming another one is a mistake and panics.
pub fn use_binary(path: impl Into<PathBuf>) {
    let path = path.into();
    let named = BINARY.get_or_init(|| path.clone());
    assert_eq!(
        named, &path,
        "the binary under test was already named as another file"
    );
}

/// Names the binary cargo built for the calling crate (`env!("CARGO_BIN_EXE_flowhost")`,
/// read where the macro is expanded) as the one under test: see [`use_binary`].
#[macro_export]
macro_rules! binary_under_test {
    () => {
        $crate::use_binary(env!("CARGO_BIN_EXE_flowhost"))
    };
}

/// The `flowhost` binary under test, as named by [`use_binary`].
pub fn flowhost_bin() -> PathBuf {
    let bin = BINARY.get().unwrap_or_else(|| {
        panic!(
            "the binary under test was never named: call `flowhost_testkit::binary_under_test!()` \
             before building a command (tests/all does in its `kit` module)"
        )
    });
    assert!(bin.is_file(), "{} was not built", bin.display());
    bin.clone()
}

/// The `flowhost` command as a user would type it in a clean shell: none of flowhost's own
/// environment variables set (but the test suite's shared plugin cache), standard input
/// closed, a home directory of its own (so the default run database, in the user data
/// directory, is never the real user's) and — unless [`Flowhost::dir`] says otherwise — a
/// fresh empty working directory of its own, so a test never writes into the source tree.
/// Derefs to the [`Command`] for anything else (pipes, `spawn`).
pub struct Flowhost {
    command: Command,
    /// The default working directory, removed when the command is dropped.
    _scratch: Option<tempfile::TempDir>,
    /// The default home directory, removed when the command is dropped.
    _home: Option<tempfile::TempDir>,
}

/// `flowhost ARGS…`, ready to run.
pub fn flowhost<I, S>(args: I) -> Flowhost
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let home = tempfile::tempdir().expect("a home directory");
    let mut command = Command::new(flowhost_bin());
    command
        .args(args)
        .current_dir(scratch.path())
        .stdin(Stdio::null());
    for var in [
        "FLOWHOST_LOG",
        "FLOWHOST_DB",
        "FLOWHOST_LEASE_TTL",
        "NO_COLOR",
    ] {
        command.env_remove(var);
    }
    let mut flowhost = Flowhost {
        command,
        _scratch: Some(scratch),
        _home: None,
    };
    flowhost = flowhost.home(home.path());
    flowhost._home = Some(home);
    flowhost
}

impl Flowhost {
    /// Uses `home` as the home directory (`HOME`, and `XDG_DATA_HOME` below it): where the
    /// default run database goes. Commands given the same home share it.
    pub fn home(mut self, home: &Path) -> Self {
        self.command
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join(".local/share"));
        self._home = None;
        self
    }

    /// The default run database of this command's home.
    pub fn default_db(&self) -> PathBuf {
        let data = self
            .command
            .get_envs()
            .find(|(name, _)| *name == "XDG_DATA_HOME")
            .and_then(|(_, value)| value);
        PathBuf::from(data.expect("XDG_DATA_HOME is set")).join("flowhost/runs.db")
    }

    /// Runs in `dir` instead of a scratch directory.
    pub fn dir(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self._scratch = None;
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(name, value);
        self
    }

    /// Runs to the end and returns what it printed.
    pub fn run(mut self) -> Output {
        self.command.output().expect("run flowhost")
    }

    /// Starts it in the background, its output thrown away.
    pub fn start(self) -> Child {
        self.spawn(Stdio::null(), Stdio::null())
    }

    /// Starts it in the background, both streams piped for `wait_with_output`.
    pub fn start_piped(self) -> Child {
        self.spawn(Stdio::piped(), Stdio::piped())
    }

    fn spawn(mut self, stdout: Stdio, stderr: Stdio) -> Child {
        self.command
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start flowhost")
    }
}

impl Deref for Flowhost {
    type Target = Command;
    fn deref(&self) -> &Command {
        &self.command
    }
}

impl DerefMut for Flowhost {
    fn deref_mut(&mut self) -> &mut Command {
        &mut self.command
    }
}

/// What a finished `flowhost` printed on stderr.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What a finished `flowhost` printed on stdout, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What a finished `flowhost` printed on stdout, parsed as JSON (panics with both streams
/// when it is not).
pub fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            stderr(output)
        )
    })
}

/// Asserts that a finished `flowhost` exited with `code`; otherwise panics showing what it
/// printed (stderr, and the start of stdout).
#[track_caller]
pub fn assert_exit(output: &Output, code: i32) {
    let out = stdout(output);
    let start = out.char_indices().nth(4096).map_or(out.len(), |(at, _)| at);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}; stdout:\n{}\nstderr:\n{}",
        output.status,
        &out[..start],
        stderr(output)
    );
}

/// Asserts that `text` (a log, a page, a message) contains `part`; otherwise panics showing
/// all of `text`.
#[track_caller]
pub fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "no `{part}` in:\n{text}");
}

/// Asserts that `text` starts with `start`; otherwise panics showing all of `text`.
#[track_caller]
pub fn assert_starts_with(text: &str, start: &str) {
    assert!(
        text.starts_with(start),
        "`{text}` does not start with `{start}`"
    );
}

/// The first line of `text` containing `part` (panics, showing `text`, when none does).
#[track_caller]
pub fn line_with<'a>(text: &'a str, part: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(part))
        .unwrap_or_else(|| panic!("no line with `{part}` in:\n{text}"))
}

/// Asserts that a finished `flowhost` exited with `code`, and returns what it printed on
/// stdout, parsed as JSON (a `--json` report, a listing).
#[track_caller]
pub fn exit_json(output: &Output, code: i32) -> Value {
    assert_exit(output, code);
    stdout_json(output)
}

/// The JSON lines a finished `flowhost` printed on stdout (a batch's results), blank lines
/// skipped.
pub fn stdout_json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`, `-KILL`…) to `child` with kill(1).
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
}

/// Asks `child` to stop (SIGTERM) and waits for it to end.
pub fn stop(mut child: Child) {
    signal(&child, "-TERM");
    child.wait().unwrap();
}

/// Kills `child` (SIGKILL) and reaps it.
pub fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Polls `done` until it holds, failing the test naming `what` after `limit`.
#[track_caller]
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether this process runs as root (network namespaces, tmpfs mounts and chown need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
