//! Errors, and the policy for them.
//!
//! - Each domain has its own error type (`ConfigError`, `KeyError`, `LockError`, ...) carrying the
//!   path or target it is about; [`Error`] gathers them for the commands.
//! - Per-file problems while archiving (unreadable files, files that changed, special files) are
//!   not errors at the point they happen: they are collected into the manifest and decided on
//!   once the scan is over, so one bad file never hides the next.
//! - [`Error::exit_code`] is the one function that turns an error into an exit code (`main.rs`
//!   and `preflight --json` use it); everything else
//!   describes what went wrong ([`Error::hint`] says how to fix it, in one sentence). A command
//!   line that clap refuses never becomes an [`Error`]: `cli::refused` classifies it at the edge
//!   (`USAGE`, or `unknown` for `status`).
//! - An error never leaves a file under an archive's final name: temporary files are removed on
//!   every error path (see `sink::local`).

use crate::config::ConfigError;
use crate::exit::ExitCode;
use crate::host::lock::LockError;
use crate::pipeline::crypt::KeyError;
use crate::pipeline::manifest::Unreadable;
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
    /// The target must be a mount point and is not.
    #[error("target {target}: {path} is not a mount point (require-mount = true)")]
    TargetNotMounted {
        /// The target's name.
        target: String,
        /// Its directory.
        path: PathBuf,
    },
    /// The target is on a filesystem that does not survive a reboot.
    #[error("target {target}: {path} is on {fstype}, which does not survive a reboot")]
    TargetVolatile {
        /// The target's name.
        target: String,
        /// Its directory.
        path: PathBuf,
        /// tmpfs, ramfs or overlay.
        fstype: &'static str,
    },
    /// The target is hidden by the sandbox: one of systemd's inaccessible nodes is mounted over
    /// it or over a directory above it (`InaccessiblePaths=`, `ProtectHome=yes`).
    #[error("target {target}: {path} is hidden from this process: an inaccessible, read-only node is mounted at {} (systemd's InaccessiblePaths= or ProtectHome=yes)", mount.display())]
    TargetHidden {
        /// The target's name.
        target: String,
        /// Its directory.
        path: PathBuf,
        /// Where the inaccessible node is mounted (the target or a directory above it).
        mount: PathBuf,
    },
    /// The target is on a read-only mount.
    #[error("target {target}: {path} is read-only{}", match mount { Some(m) => format!(" (mount {} is read-only)", m.point.display()), None => String::new() })]
    TargetReadonly {
        /// The target's name.
        target: String,
        /// Its directory.
        path: PathBuf,
        /// The read-only mount holding it, when found.
        mount: Option<Box<crate::host::filesystem::Mount>>,
        /// Running as a systemd service (`$INVOCATION_ID`), where the sandbox is the usual cause.
        under_systemd: bool,
    },
    /// Writing into the target is not permitted.
    #[error("target {target}: permission denied in {path} (running as uid {uid}; the directory is owned by uid {owner}, mode {mode:04o}): {error}")]
    TargetDenied {
        /// The target's name.
        target: String,
        /// Its directory.
        path: PathBuf,
        /// The effective uid.
        uid: u32,
        /// The directory's owner.
        owner: u32,
        /// The directory's mode.
        mode: u32,
        /// What the kernel said.
        error: io::Error,
    },
    /// Not enough space or inodes for the expected archive.
    #[error("target {target}: {path} has {} free and about {} is needed, {inodes} inodes free", crate::systemd::sdnotify::human_bytes(*free), crate::systemd::sdnotify::human_bytes(*need))]
    TargetFull {
        /// The target's name.
        target: String,
        /// Its directory.
        path: PathBuf,
        /// Bytes available.
        free: u64,
        /// Bytes needed (expected archive plus min-free).
        need: u64,
        /// Inodes available.
        inodes: u64,
    },
    /// The target cannot hold a file as large as the expected archive.
    #[error("target {target}: the largest file {path} can hold is {} and the archive is expected to be about {}", crate::systemd::sdnotify::human_bytes(*limit), crate::systemd::sdnotify::human_bytes(*expected))]
    TargetFilesize {
        /// The target's name.
        target: String,
        /// Its directory.
        path: PathBuf,
        /// The filesystem's (or RLIMIT_FSIZE's) largest file.
        limit: u64,
        /// The expected archive size.
        expected: u64,
        /// The limit is the process's `RLIMIT_FSIZE` (the unit's `LimitFSIZE=`), not the
        /// filesystem's.
        by_process: bool,
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
    /// The commit failed on one target after earlier targets had committed the archive: those
    /// keep it (complete, verified, with its receipt); the failed target and the ones after it
    /// do not.
    #[error("target {target}: committing {archive} failed: {error}; the archive is kept on {} (committed and verified) and is not on {}", committed.join(", "), failed.join(", "))]
    PartialCommit {
        /// The target whose commit failed.
        target: String,
        /// The archive's file name.
        archive: String,
        /// Targets that hold the archive under its final name.
        committed: Vec<String>,
        /// Targets that do not (the failed one first).
        failed: Vec<String>,
        /// What the kernel said.
        error: io::Error,
    },
    /// Writing into a restore's destination directory failed (what the restore had changed
    /// there was undone).
    #[error("restoring into {}: {}: {error}", dir.display(), path.display())]
    RestoreWrite {
        /// The destination directory.
        dir: PathBuf,
        /// The path being written.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// `vouch keygen` could not write the identity or append to the recipients file (what it
    /// had written was taken back, and no identity was published).
    #[error("writing {}: {error}", path.display())]
    KeyWrite {
        /// The identity or recipients file.
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
    /// An archive already on a target failed its check (`vouch verify`, `vouch restore`).
    #[error("{archive}: {detail}")]
    Damaged {
        /// The target's name, when the archive was found on one.
        target: Option<String>,
        /// The archive file.
        archive: String,
        /// The first bad entry or difference.
        detail: String,
    },
    /// The one archive named for verification was deleted (by retention) after the command
    /// found it and before it could be opened.
    #[error("{archive}: {detail}")]
    Removed {
        /// The target's name.
        target: String,
        /// The archive file.
        archive: String,
        /// What happened, in words.
        detail: String,
    },
    /// The new archive's size is outside the tolerance and `on-anomaly = "fail"`.
    #[error("{archive} is {} where recent archives are about {} (more than {tolerance}% apart)", crate::systemd::sdnotify::human_bytes(*size), crate::systemd::sdnotify::human_bytes(*median))]
    Anomaly {
        /// The new archive.
        archive: String,
        /// Its size.
        size: u64,
        /// The median of recent archives.
        median: u64,
        /// `[health] size-tolerance`.
        tolerance: u32,
    },
    /// Retention could not delete an archive; the new archive is good.
    #[error("target {target}: pruning {path} failed: {error}")]
    Prune {
        /// The target's name.
        target: String,
        /// The file that could not be removed.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// Retention would not run: the verification log it depends on is damaged.
    #[error("retention did not run: {error}")]
    PruneRefused {
        /// The verification log.
        path: PathBuf,
        /// What is wrong with it.
        error: io::Error,
    },
    /// The state directory or a spool file could not be used.
    #[error("state directory {path}: {error}")]
    State {
        /// The path involved.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
    /// A command could not be run inside vouch.service's sandbox (`preflight --as-service`).
    #[error("{message}")]
    Service {
        /// What went wrong.
        message: String,
        /// The fix.
        hint: String,
        /// Usage when this host cannot do it at all, else internal.
        code: ExitCode,
    },
    /// A `[[dump]]` failed, timed out or failed its checks; nothing was written.
    #[error("dump {name}: {error}")]
    Dump {
        /// The dump's name.
        name: String,
        /// What went wrong.
        error: crate::dump::DumpError,
    },
    /// A `[[hook]]` command failed or timed out.
    #[error("hook {name} {step}: {error}")]
    Hook {
        /// The hook's name.
        name: String,
        /// `run` or `cleanup`.
        step: &'static str,
        /// What went wrong.
        error: Box<crate::dump::HookError>,
        /// The archive this run committed before the hook failed (a cleanup or an after-hook):
        /// it stays, good.
        archive: Option<String>,
    },
    /// `vouch restore --dump`: the database or file the dump goes into could not be made,
    /// replaced or loaded (a client that exits non-zero, a refused login, a write that failed).
    #[error("dump {name}: loading it into {into} failed: {detail}")]
    DumpLoad {
        /// The dump's name.
        name: String,
        /// The database (or SQLite file) it was going into.
        into: String,
        /// What failed, with the client's last stderr line.
        detail: String,
        /// What was left behind and what to do.
        hint: String,
    },
    /// An S3 target failed preflight (14 missing, 16 denied, 10 a bad access key file, 34 a
    /// clock too far off or an answer that makes no sense).
    #[error("target {target}: {detail}")]
    RemoteCheck {
        /// The target's name.
        target: String,
        /// The exit code.
        code: ExitCode,
        /// What is wrong.
        detail: String,
        /// The fix.
        hint: String,
    },
    /// The off-site copy of a committed archive failed: upload, read-back or receipt. The local
    /// archive stays.
    #[error("target {target}: the off-site copy of {archive} failed: {detail}")]
    Remote {
        /// The target's name.
        target: String,
        /// The archive.
        archive: String,
        /// What went wrong.
        detail: String,
        /// The fix.
        hint: String,
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

/// Whether an unreadable path failed because it is longer than the kernel opens (PATH_MAX).
fn too_long(item: &Unreadable) -> bool {
    item.path.len() >= libc::PATH_MAX as usize
        || item
            .error
            .ends_with(&format!("(os error {})", libc::ENAMETOOLONG))
}

/// The fix for unreadable source paths: access, unless the paths are too long to open at all.
fn source_read_hint(items: &[Unreadable]) -> String {
    let long = items.iter().filter(|u| too_long(u)).count();
    let limit = libc::PATH_MAX;
    if long == 0 {
        "Give vouch read access to these paths, exclude them, or set on-read-error = \"warn\"."
            .into()
    } else if long == items.len() {
        format!("These paths are longer than the kernel can open (PATH_MAX, {limit} bytes): shorten or move them, exclude them in [backup] exclude, or set on-read-error = \"warn\".")
    } else {
        format!("Paths longer than the kernel can open (PATH_MAX, {limit} bytes) must be shortened or excluded; give vouch read access to the others; or set on-read-error = \"warn\".")
    }
}

impl Error {
    /// The target this error is about, if any.
    pub fn target(&self) -> Option<&str> {
        match self {
            Error::TargetMissing { target, .. }
            | Error::TargetNotMounted { target, .. }
            | Error::TargetVolatile { target, .. }
            | Error::TargetReadonly { target, .. }
            | Error::TargetHidden { target, .. }
            | Error::TargetDenied { target, .. }
            | Error::TargetFull { target, .. }
            | Error::TargetFilesize { target, .. }
            | Error::TargetWrite { target, .. }
            | Error::Write { target, .. }
            | Error::PartialCommit { target, .. }
            | Error::Verify { target, .. }
            | Error::Removed { target, .. }
            | Error::Prune { target, .. }
            | Error::RemoteCheck { target, .. }
            | Error::Remote { target, .. } => Some(target),
            Error::Damaged { target, .. } => target.as_deref(),
            _ => None,
        }
    }

    /// The fix, in one sentence.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::Usage(_) => "Run `vouch --help` for the commands and options.".into(),
            Error::Config(e) => format!("Fix {} and check it with `vouch preflight --as-service`.", e.file.display()),
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
            Error::TargetNotMounted { path, .. } => format!(
                "Plug in the disk and mount it at {} (`systemctl status {}` and `journalctl -k` say why it is not mounted); vouch never writes into an empty mount-point directory.",
                path.display(),
                crate::host::filesystem::mount_unit(path)
            ),
            Error::TargetVolatile { path, .. } => format!(
                "Point the target at persistent storage instead of {} (if it is volatile only inside vouch.service, remove the ProtectHome=tmpfs, PrivateTmp= or TemporaryFileSystem= that covers it; `vouch doctor` names it), or set allow-volatile = true if losing it at reboot is intended.",
                path.display()
            ),
            Error::TargetHidden { mount, .. } => format!(
                "Remove the InaccessiblePaths= or ProtectHome=yes that covers {} from vouch.service's drop-ins (`systemctl cat vouch.service` shows them, `vouch doctor` names the setting); a ReadWritePaths= below it does not reopen it.",
                mount.display()
            ),
            Error::TargetReadonly { path, mount, under_systemd, .. } => {
                if *under_systemd {
                    format!(
                        "vouch.service's sandbox makes it read-only: add `ReadWritePaths={}` in a drop-in (`systemctl edit vouch.service`), or run `systemctl daemon-reload` so vouch-generator adds the config's targets.",
                        path.display()
                    )
                } else if let Some(m) = mount {
                    format!(
                        "Remount {} ({} from {}) read-write, or choose a writable target.",
                        m.point.display(),
                        m.fstype,
                        m.source
                    )
                } else {
                    format!("Make {} writable, or choose a writable target.", path.display())
                }
            }
            Error::TargetDenied { path, .. } => format!(
                "Give the user vouch runs as write permission on {} (check its owner, mode and attributes: `lsattr -d`).",
                path.display()
            ),
            Error::TargetFull { path, .. } => format!(
                "Free space on the filesystem holding {}, lower min-free, or prune old archives.",
                path.display()
            ),
            Error::TargetFilesize { target, by_process, .. } => {
                let cause = if *by_process {
                    "the limit is the process's file size limit (RLIMIT_FSIZE; under systemd, vouch.service's LimitFSIZE=), so raise it"
                } else {
                    "the limit is the filesystem's, so use one that holds files this large (ext4, xfs, exFAT; not FAT32)"
                };
                format!("Set split = \"auto\" (or a part size) for target {target}, or {cause}.")
            }
            Error::TargetWrite { path, error, .. } => match error.raw_os_error() {
                Some(libc::EROFS) => format!(
                    "Make {} writable; under systemd add `ReadWritePaths={}` to vouch.service (`systemctl edit vouch.service`).",
                    path.display(),
                    path.display()
                ),
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                    format!("Free space on the filesystem holding {}.", path.display())
                }
                Some(libc::EFBIG) => format!(
                    "A file size limit stopped even the small probe file in {}: raise the process's limit (under systemd, vouch.service's LimitFSIZE=, see `systemctl show -p LimitFSIZE vouch.service`; in a shell, `ulimit -f`).",
                    path.display()
                ),
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
            Error::PartialCommit { committed, failed, .. } => format!(
                "Check the device and permissions of {} (`dmesg`, `journalctl -k`, `lsattr -d`); the copies on {} are good and `vouch restore --target` can use them.",
                failed.join(", "),
                committed.join(", ")
            ),
            Error::RestoreWrite { dir, error, .. } => match error.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => format!(
                    "Free space on the filesystem holding the destination directory {}, or restore into another one; unless a message above says otherwise, what the restore had changed there was undone.",
                    dir.display()
                ),
                _ => format!(
                    "Check that the destination directory {} is writable and its device healthy (`dmesg`, `journalctl -k`); unless a message above says otherwise, what the restore had changed there was undone.",
                    dir.display()
                ),
            },
            Error::KeyWrite { path, .. } => format!(
                "Free space on the filesystem holding {}, or make it writable, then run vouch keygen again; no identity was written.",
                path.display()
            ),
            Error::SourceRead(items) => source_read_hint(items),
            Error::Required(_) => {
                "Check that the application writing these paths is working; the archive was not kept.".into()
            }
            Error::Verify { .. } => {
                "The target returned different bytes than were written: check the device and its filesystem; the archive was not kept.".into()
            }
            Error::Damaged { .. } => {
                "Do not rely on this archive: restore from another one (`vouch list` shows them), check the target's device, and run `vouch verify --all` to check the rest.".into()
            }
            Error::Removed { .. } => {
                "Retention (`vouch prune`, or the end of `vouch run`) deleted it while this command ran; `vouch list` shows the archives that remain.".into()
            }
            Error::Anomaly { .. } => {
                "Check that the sources hold what they should (an empty dump, a missing mount); if the change is expected, nothing needs doing (later archives are compared with the new size once it is the usual one) or raise [health] size-tolerance. The archive was kept.".into()
            }
            Error::Prune { path, .. } => format!(
                "Check permissions on {} and remove it by hand if it should go; the new archive is good.",
                path.display()
            ),
            Error::PruneRefused { path, .. } => format!(
                "Look at {} (it records failed verifications, which retention must not forget), move it aside, then run `vouch verify --all` to rebuild it; the new archive is good.",
                path.display()
            ),
            Error::State { path, error } if error.raw_os_error() == Some(libc::EFBIG) => format!(
                "A file size limit stopped a small file in {}: raise the process's limit (under systemd, vouch.service's LimitFSIZE=; in a shell, `ulimit -f`).",
                path.display()
            ),
            Error::State { path, .. } => format!(
                "Make {} writable (under systemd, StateDirectory=vouch provides it).",
                path.display()
            ),
            Error::Service { hint, .. } => hint.clone(),
            Error::Dump { name, error } => error.hint(name),
            Error::DumpLoad { hint, .. } => hint.clone(),
            Error::RemoteCheck { hint, .. } | Error::Remote { hint, .. } => hint.clone(),
            Error::Hook { name, step, error, archive } => error.hint(name, step, archive.as_deref()),
            Error::Internal(_) => return None,
        })
    }
}

impl Error {
    /// The dump this error is about, if any.
    pub fn dump(&self) -> Option<&str> {
        match self {
            Error::Dump { name, .. } | Error::DumpLoad { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The hook this error is about, if any.
    pub fn hook(&self) -> Option<&str> {
        match self {
            Error::Hook { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The targets that hold this run's archive although the run failed, with its name.
    pub fn committed(&self) -> Option<(&str, &[String])> {
        match self {
            Error::PartialCommit {
                archive, committed, ..
            } => Some((archive, committed)),
            _ => None,
        }
    }

    /// The one place an error becomes an exit code.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Config(_) => ExitCode::Config,
            Error::Lock(LockError::Held { .. }) => ExitCode::Locked,
            Error::Lock(LockError::Io { .. }) | Error::State { .. } | Error::Internal(_) => {
                ExitCode::Internal
            }
            Error::Source { .. } => ExitCode::Source,
            Error::Key(_) => ExitCode::Key,
            Error::TargetMissing { .. } | Error::TargetNotMounted { .. } => ExitCode::TargetMissing,
            Error::TargetVolatile { .. } => ExitCode::TargetVolatile,
            Error::TargetReadonly { .. } | Error::TargetHidden { .. } => ExitCode::TargetReadonly,
            Error::TargetDenied { .. } => ExitCode::TargetDenied,
            Error::TargetFull { .. } => ExitCode::TargetFull,
            Error::TargetFilesize { .. } => ExitCode::TargetFilesize,
            Error::TargetWrite { error, .. } => target_errno(error),
            Error::Write { .. }
            | Error::PartialCommit { .. }
            | Error::RestoreWrite { .. }
            | Error::DumpLoad { .. }
            | Error::KeyWrite { .. } => ExitCode::Write,
            Error::SourceRead(_) => ExitCode::SourceRead,
            Error::Required(_) => ExitCode::Required,
            Error::Verify { .. } | Error::Damaged { .. } | Error::Removed { .. } => {
                ExitCode::Verify
            }
            Error::Anomaly { .. } => ExitCode::Anomaly,
            Error::Prune { .. } | Error::PruneRefused { .. } => ExitCode::Prune,
            Error::Service { code, .. } => *code,
            Error::Dump { .. } | Error::Hook { .. } => ExitCode::Hook,
            Error::RemoteCheck { code, .. } => *code,
            Error::Remote { .. } => ExitCode::Remote,
        }
    }
}

/// Classifies the errno of a failure to start writing in a target.
fn target_errno(error: &io::Error) -> ExitCode {
    match error.raw_os_error() {
        Some(libc::EROFS) => ExitCode::TargetReadonly,
        Some(libc::EACCES) | Some(libc::EPERM) => ExitCode::TargetDenied,
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ExitCode::TargetFull,
        Some(libc::EFBIG) => ExitCode::TargetFilesize,
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => ExitCode::TargetMissing,
        _ => ExitCode::Write,
    }
}
