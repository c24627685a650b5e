//! Atomic, deterministic JSON files under the state directory.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use flowhost_guest::TaskError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::STATE_DIR;
use crate::id::new_id;

fn io_error(path: &Path, error: impl std::fmt::Display) -> TaskError {
    TaskError::new("state-io", format!("{}: {error}", path.display()))
}

/// `/state/<dir>/<id>.json`, refusing ids that could name a file outside `dir`: ids arrive
/// through the flow's store, so they are input like any other.
pub(crate) fn record_path(dir: &str, id: &str) -> Result<PathBuf, TaskError> {
    let valid = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(TaskError::new(
            "invalid-id",
            format!("`{id}` is not a valid id"),
        ));
    }
    Ok(Path::new(STATE_DIR).join(dir).join(format!("{id}.json")))
}

/// Reads a JSON file; `None` if it does not exist.
pub(crate) fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, TaskError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io_error(path, e)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Writes pretty JSON to a temporary file of its own beside `path` (`path.<random>.tmp`),
/// then renames it over `path`, so a reader (or a crash) sees the old file or the new one,
/// never half of one. The temporary name is unique to the call, so writers of one file never
/// write into each other's temporary file.
pub(crate) fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), TaskError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    let mut text = serde_json::to_string_pretty(value).map_err(|e| io_error(path, e))?;
    text.push('\n');
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", new_id()?));
    let tmp = PathBuf::from(tmp);
    if let Err(e) = fs::write(&tmp, text) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error(path, e)
    })
}

/// Deletes a file; already gone counts as done, which keeps reverts idempotent.
pub(crate) fn remove(path: &Path) -> Result<(), TaskError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io_error(path, e)),
        _ => Ok(()),
    }
}
