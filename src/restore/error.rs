//! Why a restore failed, and the helpers every step uses to say so.

use std::io;
use std::path::{Path, PathBuf};

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The archive is damaged, does not match its manifest or receipt, or holds an entry that
    /// would be unsafe to extract. Names the first bad entry.
    #[error("{0}")]
    Damaged(String),
    /// The destination or the selection cannot be used as given (an existing path in the way,
    /// a symlink in the destination, a path that matches nothing).
    #[error("{0}")]
    Refused(String),
    /// SIGINT, SIGTERM or SIGHUP stopped the restore; what it had changed was undone.
    #[error("interrupted by {}", .0.as_str())]
    Interrupted(nix::sys::signal::Signal),
    /// Writing into the destination failed.
    #[error("{path}: {error}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
}

/// What a restore says when the archive's stream breaks off or stops decrypting.
pub(super) const TRUNCATED: &str = "the archive is truncated or damaged";

/// A [`RestoreError::Damaged`] with this message.
pub(super) fn damaged(msg: impl Into<String>) -> RestoreError {
    RestoreError::Damaged(msg.into())
}

/// Turns an I/O error about `path` into a [`RestoreError::Io`].
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |error| RestoreError::Io {
        path: path.to_owned(),
        error,
    }
}
