//! The run lock: one vouch run at a time per host.
//!
//! `flock(2)` on `$RUNTIME_DIRECTORY/lock` (`/run/vouch/lock`). The kernel releases it when the
//! process ends however it ends, so a killed run never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The lock file's name inside the runtime directory.
pub const LOCK_NAME: &str = "lock";

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("another vouch run holds the lock {path}")]
    Held {
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file cannot be opened or locked.
    #[error("cannot open the lock {path}: {error}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock in `runtime_dir` without waiting.
    pub fn acquire(runtime_dir: &Path) -> Result<RunLock, LockError> {
        let path = runtime_dir.join(LOCK_NAME);
        let io_err = |error| LockError::Io {
            path: path.clone(),
            error,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held { path }),
            Err(TryLockError::Error(error)) => Err(io_err(error)),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            RunLock::acquire(dir.path()),
            Err(LockError::Held { .. })
        ));
        drop(first);
        RunLock::acquire(dir.path()).unwrap();
    }
}
