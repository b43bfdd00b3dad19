//! `vouch keygen [--identity PATH] [--recipients-file PATH]`: make an age identity safely.
//!
//! The identity is written to a temporary file beside its final name (created exclusively, mode
//! 0600), fsynced, and then published with `link(2)`, which never replaces an existing file: a
//! key that archives may depend on is never overwritten, and a failed write never leaves a
//! half-written identity under the final name to block the next attempt. Missing parent
//! directories are created with mode 0700. With a recipients file, the recipient line is
//! appended and fsynced between the two steps: when appending fails (exit 30, WRITE) no identity
//! is published and the line is taken back, so keygen never leaves a key that nothing encrypts
//! to.
//!
//! When a config can be read, an identity path inside one of its targets is refused: a key kept
//! beside the archives it protects is lost with them, and whoever takes the disk can read
//! them. The recipient is printed (and appended to a recipients file when asked), and the user
//! is told to keep a copy away from the backup targets.

use crate::cli::Cli;
use crate::error::Error;
use crate::exit::ExitCode;
use crate::pipeline::crypt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The identity path when none is given.
pub const DEFAULT_IDENTITY: &str = "/etc/vouch/identity.txt";

/// Creates the identity and prints its recipient.
pub fn execute(
    cli: &Cli,
    identity: &Path,
    recipients_file: Option<&Path>,
) -> Result<ExitCode, Error> {
    let identity = absolute(identity)?;
    refuse_inside_a_target(cli, &identity)?;
    if identity.symlink_metadata().is_ok() {
        return Err(exists(&identity));
    }
    let parent = identity.parent().unwrap_or(Path::new("/"));
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(|e| Error::Usage(format!("cannot create {}: {e}", parent.display())))?;
    // Opened before the identity exists, so that a recipients file that cannot be written
    // stops keygen before it has made a key nobody will encrypt to.
    let mut recipients = recipients_file.map(open_recipients).transpose()?;

    let (secret, recipient) = crypt::generate();
    let created = time::OffsetDateTime::now_utc();
    let text = format!(
        "# created: {}\n# recipient: {recipient}\n{secret}\n",
        crate::run::rfc3339(created)
    );
    // The identity is staged, the recipient appended, and only then is the identity published:
    // a failure at any step leaves neither a key without its recipient line nor the reverse.
    let staged = Staged::write(&identity, text.as_bytes())?;
    if let Some(file) = recipients.as_mut() {
        file.append(&recipient)?;
    }
    if let Err(e) = staged.publish() {
        if let Some(file) = recipients.as_mut() {
            file.undo();
        }
        return Err(e);
    }
    sync_parent(&identity)?;
    crate::out!("{recipient}");
    eprintln!(
        "vouch: wrote the identity {} (mode 0600); its recipient is printed above.\n\
         vouch: keep a copy of the identity somewhere other than the backup targets: \
         without it no archive can be decrypted.",
        identity.display()
    );
    Ok(ExitCode::Ok)
}

/// The error for an identity path that is already taken.
fn exists(identity: &Path) -> Error {
    Error::Usage(format!(
        "cannot create {}: it already exists and is never overwritten (archives may depend on it)",
        identity.display()
    ))
}

/// `path` made absolute against the current directory (lexically; nothing is resolved).
fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(path)
        .map_err(|e| Error::Usage(format!("cannot use {}: {e}", path.display())))
}

/// Refuses an identity path inside a configured target directory. Without a readable config
/// (keygen usually runs before one is written) there is nothing to compare with.
fn refuse_inside_a_target(cli: &Cli, identity: &Path) -> Result<(), Error> {
    let file = crate::host::dirs::config_path(cli.config.as_deref());
    let Ok(settings) = crate::config::load(&file) else {
        log::debug!("keygen: no usable config at {}", file.display());
        return Ok(());
    };
    for target in &settings.targets {
        if identity.starts_with(&target.path) {
            return Err(Error::Usage(format!(
                "{} is inside target {:?} ({}): a key kept beside the archives it protects is \
                 lost with them and opens them for whoever takes the disk; put it elsewhere, \
                 e.g. {DEFAULT_IDENTITY}",
                identity.display(),
                target.name,
                target.path.display()
            )));
        }
    }
    Ok(())
}

/// The recipients file, opened for appending.
struct Recipients<'a> {
    path: &'a Path,
    file: File,
    /// Its length before keygen wrote to it (a regular file's), to take a failed line back.
    len: Option<u64>,
}

/// Opens the recipients file for appending, creating it (mode 0644) when missing. A FIFO
/// without a reader fails at once instead of blocking.
fn open_recipients(path: &Path) -> Result<Recipients<'_>, Error> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::Usage(format!("cannot append to {}: {e}", path.display())))?;
    let len = file
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    Ok(Recipients { path, file, len })
}

impl Recipients<'_> {
    /// Appends `recipient` as a line and fsyncs. On failure, what was written is taken back and
    /// the user is told that no identity was created.
    fn append(&mut self, recipient: &str) -> Result<(), Error> {
        let result = writeln!(self.file, "{recipient}").and_then(|()| self.file.sync_all());
        result.map_err(|error| {
            self.undo();
            log::warn!(
                "no identity was written: keygen publishes it only once its recipient is in {}",
                self.path.display()
            );
            Error::KeyWrite {
                path: self.path.to_owned(),
                error,
            }
        })
    }

    /// Cuts the file back to its length before keygen appended to it.
    fn undo(&mut self) {
        if let Some(len) = self.len {
            if let Err(e) = self.file.set_len(len).and_then(|()| self.file.sync_all()) {
                log::warn!(
                    "could not take back the line appended to {}: {e}; remove its last line by hand",
                    self.path.display()
                );
            }
        }
    }
}

/// An identity written and fsynced under a temporary name beside its final one, not yet
/// published. Dropping it removes the temporary name.
struct Staged<'a> {
    path: &'a Path,
    temp: PathBuf,
}

impl<'a> Staged<'a> {
    /// Writes `data` to a new temporary file beside `path`.
    fn write(path: &'a Path, data: &[u8]) -> Result<Staged<'a>, Error> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = path.with_file_name(format!(".{name}.vouch-keygen.{}", std::process::id()));
        let staged = Staged { path, temp };
        write_new(&staged.temp, data)?;
        Ok(staged)
    }

    /// Links the identity to its final name, which fails if that name exists.
    fn publish(self) -> Result<(), Error> {
        std::fs::hard_link(&self.temp, self.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                exists(self.path)
            } else {
                Error::Usage(format!("cannot create {}: {e}", self.path.display()))
            }
        })
    }
}

/// Fsyncs the directory holding `path`, so that its new name survives a crash.
fn sync_parent(path: &Path) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::Internal(format!("fsync {}: {e}", dir.display())))?;
    }
    Ok(())
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// Creates `path` exclusively with mode 0600 and writes and fsyncs `data`.
fn write_new(path: &Path, data: &[u8]) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Usage(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::KeyWrite {
            path: path.to_owned(),
            error: e,
        })
}
