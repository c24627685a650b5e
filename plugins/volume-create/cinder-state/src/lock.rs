//! An exclusive lock on a state file, shared by every task of every run that is granted the
//! same state directory: runs of one batch, of one service, or of separate `flowhost`
//! processes.
//!
//! The lock is the file `<name>.lock` beside the file `<name>.json` it guards
//! (`/state/quota.lock` for the ledger), created with `O_CREAT|O_EXCL`
//! ([`OpenOptions::create_new`]): whoever creates it holds the lock, and releases it by
//! deleting it. It holds the holder's random token, run and task, so a holder can tell its
//! lock from another's and a waiter that gives up can say who holds it.
//!
//! **The stale-lock rule.** A holder must be done within [`LEASE`] (2 s) of taking the lock:
//! right before it writes, it checks that the lock file still holds its token and that it is
//! inside its lease, and writes nothing otherwise. A lock file last modified more than
//! [`STALE_AFTER`] (5 s) ago is therefore a dead holder's (a task stopped at its deadline or
//! trapped, a host killed) and is broken by the first waiter that sees it. Breaking is itself
//! exclusive: the breaker first creates `<name>.lock.break-<fingerprint>` (the fingerprint of
//! the stale lock file's bytes and modification time), then deletes the lock only if it is
//! still that same file, then deletes the marker; so of many waiters that find one dead lock
//! at once exactly one deletes it, and none deletes a lock taken after it. A marker older
//! than [`STALE_AFTER`] (its breaker died too) is deleted. What the rule assumes: no holder
//! stalls for more than `STALE_AFTER - LEASE` (3 s) between its check and its write.
//!
//! A waiter retries with jittered sleeps (1 ms, doubling up to 100 ms: every try costs the
//! host a few calls, and hundreds of waiters trying every few milliseconds starve the
//! holder) for at most [`WAIT_FOR`] (3 s), below a task's deadline (the example's is 5 s),
//! then fails with `unavailable`, naming the holder; nothing is written then, so a retry
//! policy may try the task again.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use flowhost_guest::{Invocation, TaskError};
use serde::{Deserialize, Serialize};

use crate::id::{fingerprint, new_id};

/// How long a holder may keep the lock; it writes nothing after this.
pub const LEASE: Duration = Duration::from_secs(2);
/// Age (since its last modification) at which a lock is taken to be a dead holder's.
pub const STALE_AFTER: Duration = Duration::from_secs(5);
/// How long a waiter tries before it fails with `unavailable`.
pub const WAIT_FOR: Duration = Duration::from_secs(3);

/// First and longest pause between two tries (see the module's documentation).
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

/// What the lock file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    token: String,
    #[serde(default)]
    run_id: String,
    #[serde(default)]
    task: String,
}

fn io_error(path: &Path, error: impl std::fmt::Display) -> TaskError {
    TaskError::new("state-io", format!("{}: {error}", path.display()))
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct FileLock {
    path: PathBuf,
    token: String,
    taken: Instant,
}

/// The lock file as a waiter sees it.
struct Seen {
    /// Identifies this very lock file (its bytes and modification time), so breakers agree
    /// on which lock they break.
    fingerprint: String,
    age: Duration,
    holder: Option<Holder>,
}

/// Reads the lock at `path`; `None` if there is none.
fn look(path: &Path) -> Result<Option<Seen>, TaskError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    let modified = match fs::metadata(path).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    let nanos = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // A clock reading before the file's time counts as a fresh lock: never break on doubt.
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO);
    Ok(Some(Seen {
        fingerprint: fingerprint(&[&bytes, nanos.to_string().as_bytes()]),
        age,
        // Empty while its creator has not written it yet.
        holder: serde_json::from_slice(&bytes).ok(),
    }))
}

/// The token in the lock file at `path`, if any.
fn token_at(path: &Path) -> Result<Option<String>, TaskError> {
    Ok(look(path)?.and_then(|s| s.holder).map(|h| h.token))
}

/// Deletes a file; already gone counts as done.
fn remove(path: &Path) -> Result<(), TaskError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io_error(path, e)),
        _ => Ok(()),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Breaks the stale lock `seen` at `path` unless another waiter is breaking it (see the
/// module's rule); true if the lock is gone, so the caller may try to take it at once.
fn break_stale(path: &Path, seen: &Seen) -> Result<bool, TaskError> {
    let marker = with_suffix(path, &format!(".break-{}", seen.fingerprint));
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            // Another waiter is breaking it; its marker is stale only if it died doing so.
            if let Some(m) = look(&marker)?
                && m.age > STALE_AFTER
            {
                remove(&marker)?;
            }
            return Ok(false);
        }
        Err(e) => return Err(io_error(&marker, e)),
    }
    // Only this waiter breaks this lock now. It is still the dead holder's unless that
    // holder released it, in which case it is gone or a new holder's, with another
    // fingerprint.
    let outcome = match look(path) {
        Ok(Some(now)) if now.fingerprint == seen.fingerprint => remove(path).map(|()| true),
        Ok(None) => Ok(true),
        Ok(Some(_)) => Ok(false),
        Err(e) => Err(e),
    };
    remove(&marker)?;
    outcome
}

/// A pause from `pause` (jittered to between half of it and all of it) and the next one.
fn pause(pause: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let jitter = if getrandom::fill(&mut byte).is_ok() {
        f64::from(byte[0]) / 255.0
    } else {
        1.0
    };
    sleep(pause.mul_f64(0.5 + jitter / 2.0));
    (pause * 2).min(LONGEST_PAUSE)
}

impl FileLock {
    /// Takes the lock guarding `file` (`quota.lock` for `quota.json`), waiting at most
    /// [`WAIT_FOR`].
    pub fn acquire(file: &Path, caller: &Invocation) -> Result<FileLock, TaskError> {
        let path = file.with_extension("lock");
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        }
        let token = new_id()?;
        let holder = serde_json::to_vec(&Holder {
            token: token.clone(),
            run_id: caller.run_id.clone(),
            task: caller.task.clone(),
        })
        .map_err(|e| io_error(&path, e))?;
        let started = Instant::now();
        let mut next = FIRST_PAUSE;
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let taken = Instant::now();
                    if let Err(e) = f.write_all(&holder).and_then(|()| f.flush()) {
                        // Just created, so still this waiter's: take it back at once.
                        let _ = remove(&path);
                        return Err(io_error(&path, e));
                    }
                    return Ok(FileLock { path, token, taken });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error(&path, e)),
            }
            let seen = look(&path)?;
            if let Some(seen) = &seen
                && seen.age > STALE_AFTER
                && break_stale(&path, seen)?
            {
                continue;
            }
            if started.elapsed() >= WAIT_FOR {
                let by = match seen.as_ref().and_then(|s| s.holder.as_ref()) {
                    Some(h) => format!(" by run `{}` (task `{}`)", h.run_id, h.task),
                    None => String::new(),
                };
                let age = seen.map_or(0, |s| s.age.as_millis());
                return Err(TaskError::new(
                    "unavailable",
                    format!(
                        "{} is held{by} for {age} ms; gave up after {} ms",
                        path.display(),
                        WAIT_FOR.as_millis()
                    ),
                ));
            }
            next = pause(next);
        }
    }

    /// Fails unless this lock is still held and inside its [`LEASE`]; call it right before
    /// each write the lock guards, so a holder that lost the lock writes nothing.
    pub fn ensure_held(&self) -> Result<(), TaskError> {
        let held = self.taken.elapsed();
        if held > LEASE {
            return Err(TaskError::new(
                "unavailable",
                format!(
                    "held {} for {} ms, over its {} ms lease; nothing written",
                    self.path.display(),
                    held.as_millis(),
                    LEASE.as_millis()
                ),
            ));
        }
        if token_at(&self.path)?.as_deref() != Some(self.token.as_str()) {
            return Err(TaskError::new(
                "unavailable",
                format!(
                    "{} was broken while held; nothing written",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }
}

impl Drop for FileLock {
    /// Deletes the lock file if it is still this holder's; a lock broken and taken by another
    /// is left alone.
    fn drop(&mut self) {
        if let Ok(Some(token)) = token_at(&self.path)
            && token == self.token
        {
            let _ = remove(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::sync::Arc;

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "cinder-lock-{name}-{}-{}",
            std::process::id(),
            new_id().unwrap()
        ));
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn caller(run: &str) -> Invocation {
        Invocation {
            run_id: run.into(),
            task: "quota_reserve".into(),
            attempt: 1,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn concurrent_read_modify_writes_lose_nothing() {
        let dir = scratch("count");
        let file = Arc::new(dir.join("count.json"));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let file = Arc::clone(&file);
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let lock = FileLock::acquire(&file, &caller(&format!("run-{t}"))).unwrap();
                        let n: u64 = crate::files::read(&file).unwrap().unwrap_or(0);
                        std::thread::yield_now();
                        lock.ensure_held().unwrap();
                        crate::files::write(&file, &(n + 1)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(crate::files::read::<u64>(&file).unwrap(), Some(320));
        assert_eq!(
            names(&dir),
            ["count.json"],
            "no lock or temporary file is left"
        );
    }

    /// Writes a dead holder's lock for `file`, last modified longer ago than the stale age.
    fn dead_lock(file: &Path) {
        let path = file.with_extension("lock");
        fs::write(
            &path,
            br#"{"token":"dead","run_id":"gone","task":"quota_reserve"}"#,
        )
        .unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::now() - STALE_AFTER - Duration::from_secs(1))
            .unwrap();
    }

    #[test]
    fn many_waiters_on_one_dead_lock_break_it_once_and_lose_nothing() {
        let dir = scratch("stampede");
        let file = Arc::new(dir.join("count.json"));
        dead_lock(&file);
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let file = Arc::clone(&file);
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let lock = FileLock::acquire(&file, &caller(&format!("run-{t}"))).unwrap();
                        let n: u64 = crate::files::read(&file).unwrap().unwrap_or(0);
                        lock.ensure_held().unwrap();
                        crate::files::write(&file, &(n + 1)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(crate::files::read::<u64>(&file).unwrap(), Some(80));
        assert_eq!(names(&dir), ["count.json"]);
    }

    #[test]
    fn a_lock_older_than_the_stale_age_is_broken() {
        let dir = scratch("stale");
        let file = dir.join("quota.json");
        dead_lock(&file);
        let started = Instant::now();
        let lock = FileLock::acquire(&file, &caller("next")).unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        lock.ensure_held().unwrap();
        assert_eq!(names(&dir), ["quota.lock"], "no break marker is left");
        drop(lock);
        assert!(names(&dir).is_empty());
    }

    #[test]
    fn a_live_lock_is_waited_for_then_named_and_its_holder_is_past_its_lease() {
        let dir = scratch("live");
        let file = dir.join("quota.json");
        let held = FileLock::acquire(&file, &caller("holder-run")).unwrap();
        let started = Instant::now();
        let err = FileLock::acquire(&file, &caller("waiter")).unwrap_err();
        assert!(started.elapsed() >= WAIT_FOR);
        assert_eq!(err.code, "unavailable");
        assert!(err.message.contains("run `holder-run`"), "{}", err.message);
        let late = held.ensure_held().unwrap_err();
        assert!(
            late.message.contains("lease"),
            "past its lease: {}",
            late.message
        );
    }

    #[test]
    fn a_holder_whose_lock_was_broken_writes_nothing_and_leaves_the_new_lock() {
        let dir = scratch("broken");
        let file = dir.join("quota.json");
        let first = FileLock::acquire(&file, &caller("slow")).unwrap();
        fs::remove_file(dir.join("quota.lock")).unwrap();
        let second = FileLock::acquire(&file, &caller("next")).unwrap();
        let err = first.ensure_held().unwrap_err();
        assert_eq!(err.code, "unavailable");
        drop(first);
        second.ensure_held().unwrap();
    }
}
