//! Pinned grants: a granted host directory is opened once, when its run is validated, and
//! every instance of that run reaches the directory through that open handle — never by
//! resolving the path again.
//!
//! Why: a path is re-resolved by the kernel at every use, so whatever sits at the path *then*
//! is what a task gets. A task with a read-write grant on `st` could replace `st/pub` with a
//! symlink to `/`, and a later task granted `st/pub` would be handed the host's root. A handle
//! opened once refers to one directory object whatever later happens to its name.
//!
//! The path is walked one component at a time with `O_NOFOLLOW`, so no component of it may be
//! a symlink (the grant is refused naming the symlink), `..` only ever goes up the directories
//! actually walked, and the end must be a directory (a file given as a grant is refused saying
//! so).
//!
//! wasmtime-wasi 48 only preopens a directory by host path. Each instance is therefore handed
//! `/proc/self/fd/N` (Linux; `/dev/fd/N` elsewhere) of the pinned descriptor: that name is a
//! "magic link" that the kernel resolves to the open directory object itself, not to whatever
//! path it was opened by, so every instance gets the pinned directory and nothing else.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

/// A granted directory opened once, shared by every instance of the run that opened it.
#[derive(Clone)]
pub(crate) struct PinnedDir {
    fd: Arc<OwnedFd>,
    device: u64,
    inode: u64,
}

impl PinnedDir {
    /// The name under which an instance's WASI context opens the pinned directory object.
    pub(crate) fn handle_path(&self) -> PathBuf {
        let fd = self.fd.as_raw_fd();
        if cfg!(target_os = "linux") {
            PathBuf::from(format!("/proc/self/fd/{fd}"))
        } else {
            PathBuf::from(format!("/dev/fd/{fd}"))
        }
    }

    /// The directory's device and inode: which directory object the grant is pinned to.
    pub(crate) fn identity(&self) -> (u64, u64) {
        (self.device, self.inode)
    }
}

/// Two pins are equal when they hold the same directory object: warm instances built for one
/// run may serve a later run whose grant pinned the very same directory.
impl PartialEq for PinnedDir {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for PinnedDir {}

impl fmt::Debug for PinnedDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinnedDir(device {}, inode {})", self.device, self.inode)
    }
}

/// Why a grant could not be pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PinError {
    /// The granted path, or a directory on the way to it, is a symlink.
    Symlink(PathBuf),
    /// The granted path is not a directory (or a component on the way is not).
    NotADirectory(PathBuf),
    /// Nothing exists at this path.
    Missing(PathBuf),
    /// The directory exists but could not be opened.
    Unreadable(PathBuf, String),
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Symlink(at) => write!(
                f,
                "{} is a symlink; a grant may not be or pass through a symlink (grant the directory it points to by its real path)",
                at.display()
            ),
            Self::NotADirectory(at) => write!(
                f,
                "{} is a file, not a directory; only directories can be granted",
                at.display()
            ),
            Self::Missing(at) => write!(f, "{} does not exist", at.display()),
            Self::Unreadable(at, why) => write!(f, "cannot open {}: {why}", at.display()),
        }
    }
}

/// Opens `path` as a directory without following a symlink at any component.
pub(crate) fn pin(path: &Path) -> Result<PinnedDir, PinError> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let unreadable = |at: &Path, e: Errno| PinError::Unreadable(at.to_path_buf(), e.to_string());
    let mut walked = PathBuf::new();
    let mut current: Option<OwnedFd> = None;
    let mut components = path.components().peekable();
    if components.peek().is_none() {
        return Err(PinError::Missing(path.to_path_buf()));
    }
    for component in components {
        let name: &Path = match component {
            Component::RootDir => {
                walked.push("/");
                current = Some(
                    rustix::fs::open("/", flags, Mode::empty())
                        .map_err(|e| unreadable(&walked, e))?,
                );
                continue;
            }
            Component::CurDir => Path::new("."),
            Component::ParentDir => Path::new(".."),
            Component::Normal(name) => Path::new(name),
            Component::Prefix(_) => {
                return Err(PinError::Unreadable(
                    path.to_path_buf(),
                    "unsupported path prefix".into(),
                ));
            }
        };
        walked.push(name);
        let opened = match &current {
            Some(dir) => rustix::fs::openat(dir.as_fd(), name, flags, Mode::empty()),
            None => rustix::fs::openat(CWD, name, flags, Mode::empty()),
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(errno) => {
                let parent = current.as_ref().map(|d| d.as_fd()).unwrap_or(CWD);
                return Err(explain(parent, name, &walked, errno));
            }
        };
        // `O_PATH | O_NOFOLLOW` opens a symlink itself rather than failing on it: look.
        let stat = rustix::fs::fstat(&fd).map_err(|e| unreadable(&walked, e))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => current = Some(fd),
            FileType::Symlink => return Err(PinError::Symlink(walked)),
            _ => return Err(PinError::NotADirectory(walked)),
        }
    }
    let fd = match current {
        Some(fd) => fd,
        None => rustix::fs::openat(CWD, ".", flags, Mode::empty())
            .map_err(|e| unreadable(&walked, e))?,
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| unreadable(path, e))?;
    Ok(PinnedDir {
        fd: Arc::new(fd),
        device: stat.st_dev as u64,
        inode: stat.st_ino as u64,
    })
}

/// Turns a failed open of one component into the reason an operator needs.
fn explain(
    parent: rustix::fd::BorrowedFd<'_>,
    name: &Path,
    walked: &Path,
    errno: Errno,
) -> PinError {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
            FileType::Symlink => PinError::Symlink(walked.to_path_buf()),
            FileType::Directory => PinError::Unreadable(walked.to_path_buf(), errno.to_string()),
            _ => PinError::NotADirectory(walked.to_path_buf()),
        },
        Err(Errno::NOENT) => PinError::Missing(walked.to_path_buf()),
        Err(_) => PinError::Unreadable(walked.to_path_buf(), errno.to_string()),
    }
}

/// Whether a grant of `grant` would reach `protected` (the compiled-code cache, the run
/// database): the protected path is the grant or lies below it, or the grant lies inside a
/// protected directory. Both are compared as absolute paths with `.` and `..` resolved
/// lexically and symlinks resolved where the path exists (a grant has none by then).
pub(crate) fn covers(grant: &Path, protected: &Path) -> bool {
    let (grant, protected) = (absolute(grant), absolute(protected));
    protected.starts_with(&grant) || (protected.is_dir() && grant.starts_with(&protected))
}

/// `path` made absolute, its existing part canonicalised and the rest normalised lexically.
fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut full = real;
            for part in rest.iter().rev() {
                full.push(part);
            }
            return full;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_pinned_and_symlinks_files_and_missing_paths_are_named() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("st/pub");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(root.path().join("file"), "x").unwrap();
        std::os::unix::fs::symlink(root.path().join("st"), root.path().join("link")).unwrap();

        let pinned = pin(&dir).unwrap();
        assert_eq!(
            pin(&root.path().join("st/../st/pub")).unwrap(),
            pinned,
            "`..` walks real directories"
        );
        assert_eq!(
            pin(&root.path().join("link/pub")),
            Err(PinError::Symlink(root.path().join("link")))
        );
        assert_eq!(
            pin(&root.path().join("link")),
            Err(PinError::Symlink(root.path().join("link")))
        );
        assert_eq!(
            pin(&root.path().join("file")),
            Err(PinError::NotADirectory(root.path().join("file")))
        );
        assert_eq!(
            pin(&root.path().join("nope/x")),
            Err(PinError::Missing(root.path().join("nope")))
        );
    }

    #[test]
    fn the_pinned_handle_keeps_the_directory_after_its_path_is_swapped_for_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        let granted = root.path().join("pub");
        std::fs::create_dir(&granted).unwrap();
        std::fs::write(granted.join("mine"), "pinned").unwrap();
        let pinned = pin(&granted).unwrap();
        std::fs::rename(&granted, root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink("/etc", &granted).unwrap();
        let through = std::fs::read_to_string(pinned.handle_path().join("mine")).unwrap();
        assert_eq!(through, "pinned");
    }

    #[test]
    fn a_grant_covers_what_lies_below_it_and_may_not_sit_inside_a_protected_directory() {
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        assert!(covers(root.path(), &cache));
        assert!(covers(&cache, &cache));
        assert!(covers(&cache.join("sub"), &cache));
        assert!(
            covers(root.path(), &root.path().join("db/runs.db")),
            "a database not created yet"
        );
        assert!(!covers(&root.path().join("other"), &cache));
    }
}
