//! Errors, and the policy for them.
//!
//! - Each domain has its own error type (`ConfigError`, `KeyError`, `LockError`, ...) carrying the
//!   path or target it is about; [`Error`] gathers them for the commands.
//! - Per-file problems while archiving (unreadable files, files that changed, special files) are
//!   not errors at the point they happen: they are collected into the manifest and decided on
//!   once the scan is over, so one bad file never hides the next.
//! - Only `main.rs` turns an [`Error`] into an exit code, in one function; everything else
//!   describes what went wrong ([`Error::hint`] says how to fix it, in one sentence).
//! - An error never leaves a file under an archive's final name: temporary files are removed on
//!   every error path (see `sink::local`).

use crate::config::ConfigError;
use crate::crypt::KeyError;
use crate::lock::LockError;
use crate::manifest::Unreadable;
use std::io;
use std::path::PathBuf;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line was wrong.
    #[error("{0}")]
    Usage(String),
    /// The config could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The run lock was not taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A source is missing or cannot be examined.
    #[error("source {path} cannot be read: {error}")]
    Source {
        /// The configured source.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// Keys are missing, invalid or unsafe.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The target directory is missing or is not a directory.
    #[error("target {target}: {path} is missing or not a directory")]
    TargetMissing {
        /// The target's name.
        target: String,
        /// Its directory.
        path: PathBuf,
    },
    /// The target could not be prepared for writing (classified by errno).
    #[error("target {target}: cannot write in {path}: {error}")]
    TargetWrite {
        /// The target's name.
        target: String,
        /// Its directory.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// Writing the archive failed mid-run.
    #[error("target {target}: writing {path} failed: {error}")]
    Write {
        /// The target's name.
        target: String,
        /// The file being written.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// Files could not be read and the policy says fail.
    #[error("{} path(s) could not be read: {}", .0.len(), list_unreadable(.0))]
    SourceRead(Vec<Unreadable>),
    /// Required paths are missing or empty.
    #[error("required path(s) missing or empty in the archive: {}", .0.join(", "))]
    Required(Vec<String>),
    /// Read-back verification failed.
    #[error("target {target}: verification of {archive} failed: {detail}")]
    Verify {
        /// The target's name.
        target: String,
        /// The archive file.
        archive: String,
        /// The first difference found.
        detail: String,
    },
    /// The state directory or a spool file could not be used.
    #[error("state directory {path}: {error}")]
    State {
        /// The path involved.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// Anything else: a bug or an unexpected condition.
    #[error("{0}")]
    Internal(String),
}

fn list_unreadable(items: &[Unreadable]) -> String {
    let shown: Vec<String> = items
        .iter()
        .take(5)
        .map(|u| format!("{} ({})", u.path, u.error))
        .collect();
    let more = items.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

impl Error {
    /// The target this error is about, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            Error::TargetMissing { target, .. }
            | Error::TargetWrite { target, .. }
            | Error::Write { target, .. }
            | Error::Verify { target, .. } => Some(target),
            _ => None,
        }
    }

    /// The fix, in one sentence.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Usage(_) => "Run `vouch --help` for the commands and options.".into(),
            Error::Config(e) => format!("Fix {} and run `vouch preflight` to check it.", e.file.display()),
            Error::Lock(LockError::Held { .. }) => {
                "Wait for the other run to finish (`systemctl status vouch.service`); the lock is released when it exits.".into()
            }
            Error::Lock(LockError::Io { path, .. }) => format!(
                "Make {} writable (under systemd, RuntimeDirectory=vouch provides it).",
                path.parent().unwrap_or(path).display()
            ),
            Error::Source { path, .. } => format!(
                "Restore {} or remove it from [backup] sources.",
                path.display()
            ),
            Error::Key(e) => e.hint(),
            Error::TargetMissing { path, .. } => format!(
                "Create {} (or mount the disk that holds it).",
                path.display()
            ),
            Error::TargetWrite { path, error, .. } => match error.raw_os_error() {
                Some(libc::EROFS) => format!(
                    "Make {} writable; under systemd add `ReadWritePaths={}` to vouch.service (`systemctl edit vouch.service`).",
                    path.display(),
                    path.display()
                ),
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                    format!("Free space on the filesystem holding {}.", path.display())
                }
                _ => format!(
                    "Give the user vouch runs as write permission on {}.",
                    path.display()
                ),
            },
            Error::Write { path, error, .. } => match error.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => format!(
                    "Free space on the filesystem holding {}; older archives were left untouched.",
                    path.parent().unwrap_or(path).display()
                ),
                Some(libc::EFBIG) => {
                    "The target cannot hold a file this large: set split for the target or raise the file size limit.".into()
                }
                _ => "Check the target device (`dmesg`, `journalctl -k`); older archives were left untouched.".into(),
            },
            Error::SourceRead(_) => {
                "Give vouch read access to these paths, exclude them, or set on-read-error = \"warn\".".into()
            }
            Error::Required(_) => {
                "Check that the application writing these paths is working; the archive was not kept.".into()
            }
            Error::Verify { .. } => {
                "The target returned different bytes than were written: check the device and its filesystem; the archive was not kept.".into()
            }
            Error::State { path, .. } => format!(
                "Make {} writable (under systemd, StateDirectory=vouch provides it).",
                path.display()
            ),
            Error::Internal(_) => return None,
        })
    }
}
