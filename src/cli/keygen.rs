//! `vouch keygen [--identity PATH] [--recipients-file PATH]`: make an age identity safely.
//!
//! The identity is written to a temporary file beside its final name (created exclusively, mode
//! 0600), fsynced, and then published with `link(2)`, which never replaces an existing file: a
//! key that archives may depend on is never overwritten, and a failed write never leaves a
//! half-written identity under the final name to block the next attempt. Missing parent
//! directories are created with mode 0700.
//!
//! When a config can be read, an identity path inside one of its targets is refused: a key kept
//! beside the archives it protects is lost with them, and whoever takes the disk can read
//! them. The recipient is printed (and appended to a recipients file when asked), and the user
//! is told to keep a copy away from the backup targets.

use crate::cli::Cli;
use crate::crypt;
use crate::error::Error;
use crate::exit::ExitCode;
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
    let mut recipients = recipients_file
        .map(|path| {
            OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o644)
                .open(path)
                .map(|f| (path, f))
                .map_err(|e| Error::Usage(format!("cannot append to {}: {e}", path.display())))
        })
        .transpose()?;

    let (secret, recipient) = crypt::generate();
    let created = time::OffsetDateTime::now_utc();
    let text = format!(
        "# created: {}\n# recipient: {recipient}\n{secret}\n",
        crate::run::rfc3339(created)
    );
    publish(&identity, text.as_bytes())?;

    if let Some((path, file)) = recipients.as_mut() {
        writeln!(file, "{recipient}")
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                Error::Usage(format!(
                    "wrote the identity {} but could not append its recipient to {}: {e}; \
                     add this line to it by hand: {recipient}",
                    identity.display(),
                    path.display()
                ))
            })?;
    }
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
    let file = crate::dirs::config_path(cli.config.as_deref());
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

/// Writes `data` to a new temporary file beside `path` and links it to `path`, which fails
/// if `path` exists. The temporary name is removed whatever happens.
fn publish(path: &Path, data: &[u8]) -> Result<(), Error> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.vouch-keygen.{}", std::process::id()));
    let result = write_new(&temp, data).and_then(|()| {
        std::fs::hard_link(&temp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                exists(path)
            } else {
                Error::Usage(format!("cannot create {}: {e}", path.display()))
            }
        })
    });
    let _ = std::fs::remove_file(&temp);
    result?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::Internal(format!("fsync {}: {e}", dir.display())))?;
    }
    Ok(())
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
        .map_err(|e| Error::Write {
            target: path
                .parent()
                .unwrap_or(Path::new("/"))
                .display()
                .to_string(),
            path: path.to_owned(),
            error: e,
        })
}
