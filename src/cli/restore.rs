//! `vouch restore ARCHIVE --to DIR [PATH...]`: safe extraction, each file checked against the
//! manifest before it is moved into place (see `crate::restore` for how).
//!
//! The config is read only when it is needed: to look ARCHIVE up by name on the targets, or for
//! the identity when `--identity` is not given. So an archive copied from another host restores
//! with `--identity` alone, on a machine without any vouch config.

use crate::archives::{self, Archive};
use crate::cli::Cli;
use crate::config::{self, Settings};
use crate::crypt::{self, Identity, KeyError, CREDENTIAL_NAME};
use crate::dirs::{self, Dirs};
use crate::error::Error;
use crate::exit::ExitCode;
use crate::journal::Entry;
use crate::restore::{self, Options, RestoreError};
use std::path::{Path, PathBuf};

/// What to restore, from the command line.
#[derive(Debug, Clone)]
pub struct Request {
    /// The archive: a path, or its file name on a configured target.
    pub archive: PathBuf,
    /// The directory to restore into.
    pub to: PathBuf,
    /// Only these stored paths and what is under them; empty: everything.
    pub paths: Vec<PathBuf>,
    /// Replace an existing tree atomically.
    pub in_place: bool,
    /// Create device nodes and FIFOs (root only).
    pub devices: bool,
    /// The identity to decrypt with, instead of the config's.
    pub identity: Option<PathBuf>,
}

/// Turns a failed restore into the command's error.
pub fn classify(error: RestoreError, target: Option<&str>, archive: &str, to: &Path) -> Error {
    match error {
        RestoreError::Damaged(detail) => Error::Damaged {
            target: target.map(str::to_owned),
            archive: archive.to_owned(),
            detail,
        },
        RestoreError::Refused(msg) => Error::Usage(msg),
        // Reached only when the signal did not end the process, which it normally does.
        RestoreError::Interrupted(signal) => Error::Internal(format!(
            "the restore into {} was interrupted by {} and undone",
            to.display(),
            signal.as_str()
        )),
        RestoreError::Io { path, error } => Error::RestoreWrite {
            dir: to.to_owned(),
            path,
            error,
        },
    }
}

/// Finds the archive: a path (absolute, relative with a `/`, or an existing file in the current
/// directory), else a file name on the configured targets. Returns it with the name of the
/// target holding it.
fn locate(
    arg: &Path,
    settings: &mut Option<Settings>,
    cli: &Cli,
) -> Result<(Archive, Option<String>), Error> {
    let as_path = arg.to_string_lossy().contains('/') || arg.exists();
    let arg: PathBuf = if as_path && arg.parent().is_none_or(|p| p.as_os_str().is_empty()) {
        Path::new(".").join(arg)
    } else {
        arg.to_owned()
    };
    let dirs_of =
        |s: &Settings| -> Vec<PathBuf> { s.targets.iter().map(|t| t.path.clone()).collect() };
    let search: Vec<PathBuf> = if as_path {
        Vec::new()
    } else {
        dirs_of(load_settings(settings, cli)?)
    };
    let refs: Vec<&Path> = search.iter().map(PathBuf::as_path).collect();
    let found = archives::find(&arg, &refs)
        .map_err(|e| Error::Usage(format!("cannot look for {}: {e}", arg.display())))?;
    let Some(archive) = found else {
        return Err(Error::Usage(if as_path {
            format!("no vouch archive at {}", arg.display())
        } else {
            format!(
                "no archive {} on the configured targets ({})",
                arg.display(),
                search
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }));
    };
    let target = settings.as_ref().and_then(|s| {
        s.targets
            .iter()
            .find(|t| t.path == archive.dir)
            .map(|t| t.name.clone())
    });
    Ok((archive, target))
}

fn load_settings<'a>(slot: &'a mut Option<Settings>, cli: &Cli) -> Result<&'a Settings, Error> {
    if slot.is_none() {
        *slot = Some(config::load(&dirs::config_path(cli.config.as_deref()))?);
    }
    Ok(slot.as_ref().expect("just loaded"))
}

/// The identity: `--identity`, else the config's `[encryption] identity`, else
/// `$CREDENTIALS_DIRECTORY/identity`. It is not checked against the config's recipients: the
/// archive may come from another host, and decryption itself says whether the key fits.
pub fn identity(
    flag: Option<&Path>,
    settings: &mut Option<Settings>,
    cli: &Cli,
) -> Result<Identity, Error> {
    if let Some(path) = flag {
        return load_identity(path);
    }
    let credentials = Dirs::from_env()
        .credentials
        .map(|d| d.join(CREDENTIAL_NAME))
        .filter(|p| p.exists());
    let configured = match load_settings(settings, cli) {
        Ok(s) => s.encryption.identity.clone(),
        // Without a config, a credential still does.
        Err(_) if credentials.is_some() => None,
        Err(e) => return Err(e),
    };
    match configured.or(credentials) {
        Some(path) => load_identity(&path),
        None => Err(KeyError::NoIdentity.into()),
    }
}

/// Loads an identity file once it is known to be a regular file, so that a FIFO (or a device)
/// under its name is refused at once instead of blocking the restore.
fn load_identity(path: &Path) -> Result<Identity, Error> {
    crate::bounded::open_regular(path, crate::bounded::Links::Follow).map_err(|error| {
        KeyError::IdentityUnreadable {
            path: path.to_owned(),
            error,
        }
    })?;
    Ok(crypt::load_identity(path)?)
}

/// Checks what can be checked about an archive's files without reading them: missing parts
/// and a receipt that exists but cannot be used.
pub fn check_files(archive: &Archive) -> Result<(), String> {
    if archive.receipt_path.is_some() && archive.receipt.is_none() {
        if let Some(problem) = &archive.receipt_problem {
            return Err(problem.clone());
        }
    }
    let missing = archive.missing_files();
    if let Some(first) = missing.first() {
        return Err(format!(
            "{} is missing ({} file(s) of the archive are gone)",
            first.display(),
            missing.len()
        ));
    }
    if archive.files.is_empty() {
        return Err("none of the archive's files exist".into());
    }
    Ok(())
}

/// Runs `vouch restore`.
pub fn execute(cli: &Cli, request: &Request) -> Result<ExitCode, Error> {
    let mut paths = Vec::new();
    for p in &request.paths {
        paths.push(restore::stored_path(p).map_err(|e| Error::Usage(e.to_string()))?);
    }
    let mut settings = None;
    let (archive, target) = locate(&request.archive, &mut settings, cli)?;
    let identity = identity(request.identity.as_deref(), &mut settings, cli)?;
    check_files(&archive).map_err(|detail| Error::Damaged {
        target: target.clone(),
        archive: archive.name.clone(),
        detail,
    })?;
    crate::systemd::status(&format!("restoring {}", archive.name));
    let receipt = archive
        .receipt
        .as_ref()
        .map(|r| (r.archive_sha256.as_str(), r.archive_size));
    let options = Options {
        to: request.to.clone(),
        paths,
        in_place: request.in_place,
        devices: request.devices,
        progress: true,
    };
    let done = restore::restore(
        &|| archive.open(),
        &identity,
        receipt,
        archive.size_on_disk(),
        &options,
    )
    .map_err(|e| classify(e, target.as_deref(), &archive.name, &request.to))?;
    let replaced = if done.replaced > 0 {
        format!(", {} existing path(s) replaced", done.replaced)
    } else {
        String::new()
    };
    crate::out!(
        "restored {} entries ({}) from {} into {}{replaced}",
        done.entries,
        crate::systemd::human_bytes(done.bytes),
        archive.name,
        done.dir.display()
    );
    Entry::error(format!(
        "restored {} entries from {} into {}",
        done.entries,
        archive.name,
        done.dir.display()
    ))
    .level(log::Level::Debug)
    .field("VOUCH_ARCHIVE", archive.dir.join(&archive.name).display())
    .field("VOUCH_FILES", done.entries)
    .field_opt("VOUCH_TARGET", target.as_deref())
    .emit();
    Ok(ExitCode::Ok)
}
