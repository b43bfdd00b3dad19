//! `vouch restore ARCHIVE --to DIR [PATH...]`: safe extraction, each file checked against the
//! manifest before it is moved into place (see `crate::restore` for how); and
//! `vouch restore ARCHIVE --dump NAME`, which loads one dump into a database
//! (`crate::restore::dump`).
//!
//! The config is read only when it is needed: to look ARCHIVE up by name on the targets, or for
//! the identity when `--identity` is not given. So an archive copied from another host restores
//! with `--identity` alone, on a machine without any vouch config.

use crate::cli::Cli;
use crate::config::{self, Compression, Settings};
use crate::error::Error;
use crate::exit::ExitCode;
use crate::host::dirs::{self, Dirs};
use crate::pipeline::crypt::{self, Identity, KeyError, CREDENTIAL_NAME};
use crate::restore::{self, dump, Options, RestoreError};
use crate::systemd::journal::Entry;
use crate::target::archives::Archive;
use std::path::{Path, PathBuf};

/// What to restore, from the command line.
#[derive(Debug, Clone)]
pub struct Request {
    /// The archive: a path, its file name on the configured targets, or `latest`.
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
    /// Only the copy on this configured target.
    pub target: Option<String>,
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

/// One copy of the archive to restore from, the target holding it, and its name when it is a
/// configured target.
struct Copy {
    archive: Archive,
    store: Box<dyn crate::target::Target>,
    target: Option<String>,
}

/// Whether the argument names a file rather than an archive on the targets.
fn is_path(arg: &Path) -> bool {
    arg.to_string_lossy().contains('/') || arg.exists()
}

/// Finds every copy to try, in order: the file given as a path (absolute, relative with a `/`,
/// or an existing file in the current directory); else the copies of the named archive (or of
/// `latest`, the newest archive of this backup) on the configured targets, in config order,
/// or only on `--target`.
fn locate(
    arg: &Path,
    only: Option<&str>,
    settings: &mut Option<Settings>,
    cli: &Cli,
) -> Result<Vec<Copy>, Error> {
    if is_path(arg) {
        if only.is_some() {
            return Err(Error::Usage(
                "--target picks a configured target: give the archive's file name or `latest`, not a path".into(),
            ));
        }
        let arg: PathBuf = if arg.parent().is_none_or(|p| p.as_os_str().is_empty()) {
            Path::new(".").join(arg)
        } else {
            arg.to_owned()
        };
        let found = crate::target::find(&arg, &[], &Dirs::from_env())
            .map_err(|e| Error::Usage(format!("cannot look for {}: {e}", arg.display())))?;
        return match found {
            Some(found) => Ok(vec![Copy {
                archive: found.archive,
                store: found.store,
                target: None,
            }]),
            None => Err(Error::Usage(format!(
                "no vouch archive at {}",
                arg.display()
            ))),
        };
    }
    let s = load_settings(settings, cli)?;
    let dirs = Dirs::from_env();
    let targets = restore_targets(s, only)?;
    let where_ = || {
        targets
            .iter()
            .map(|t| t.location().display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let look_error = |e: std::io::Error| Error::Usage(format!("cannot look for archives: {e}"));
    let name = if arg == Path::new("latest") {
        crate::target::latest_name(&s.backup.name, &targets, &dirs)
            .map_err(look_error)?
            .ok_or_else(|| {
                Error::Usage(format!(
                    "no archive of backup {} on {} to restore as `latest`{}",
                    s.backup.name,
                    where_(),
                    remotes_note(s, only)
                ))
            })?
    } else {
        arg.to_string_lossy().into_owned()
    };
    let copies = crate::target::find_copies(&name, &targets, &dirs).map_err(look_error)?;
    if copies.is_empty() {
        return Err(Error::Usage(format!(
            "no archive {name} on the configured targets ({}){}",
            where_(),
            remotes_note(s, only)
        )));
    }
    Ok(copies
        .into_iter()
        .map(|found| Copy {
            target: found.target.map(|i| targets[i].name().to_owned()),
            store: found.store,
            archive: found.archive,
        })
        .collect())
}

/// The targets a restore looks on: the one `--target` names (of either kind), else every
/// directory target. S3 targets are asked only when named: a restore makes no network request
/// it was not told to.
fn restore_targets<'a>(
    s: &'a Settings,
    only: Option<&str>,
) -> Result<Vec<crate::target::Configured<'a>>, Error> {
    let all = crate::target::configured(s);
    let Some(name) = only else {
        return Ok(all.into_iter().filter(|t| !t.is_remote()).collect());
    };
    let targets: Vec<_> = all.iter().copied().filter(|t| t.name() == name).collect();
    if targets.is_empty() {
        return Err(Error::Usage(format!(
            "--target {name}: no such target in the config (targets: {})",
            all.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(targets)
}

/// Without `--target`, the remote targets a restore could also fetch from, as a hint.
fn remotes_note(s: &Settings, only: Option<&str>) -> String {
    if only.is_some() || (s.remotes.is_empty() && s.sftp.is_empty()) {
        return String::new();
    }
    let names: Vec<&str> = s
        .remotes
        .iter()
        .map(|r| r.name.as_str())
        .chain(s.sftp.iter().map(|r| r.name.as_str()))
        .collect();
    format!(
        "; remote targets are searched only when named: add --target {}",
        names.join(" or --target ")
    )
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
    crate::host::bounded::open_regular(path, crate::host::bounded::Links::Follow).map_err(
        |error| KeyError::IdentityUnreadable {
            path: path.to_owned(),
            error,
        },
    )?;
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

/// Runs `vouch restore`: from the first copy that passes its checks (see [`first_intact`]).
pub fn execute(cli: &Cli, request: &Request) -> Result<ExitCode, Error> {
    let mut paths = Vec::new();
    for p in &request.paths {
        paths.push(restore::stored_path(p).map_err(|e| Error::Usage(e.to_string()))?);
    }
    let mut settings = None;
    let copies = locate(
        &request.archive,
        request.target.as_deref(),
        &mut settings,
        cli,
    )?;
    let identity = identity(request.identity.as_deref(), &mut settings, cli)?;
    let options = Options {
        to: request.to.clone(),
        paths,
        in_place: request.in_place,
        devices: request.devices,
        progress: true,
        compression: Compression::default(),
        spool: std::env::temp_dir(),
    };
    let (copy, done) = first_intact(&copies, |copy| restore_copy(copy, &identity, &options))?;
    report(copy, &done);
    Ok(ExitCode::Ok)
}

/// Tries `attempt` on each copy in order until one succeeds. A copy whose check fails before
/// anything is kept (a missing part, a receipt mismatch, damaged data: the restore is undone)
/// gives way to the next copy of the same archive on another target, with a warning; any
/// other error ends the restore at once.
fn first_intact<T>(
    copies: &[Copy],
    mut attempt: impl FnMut(&Copy) -> Result<T, Error>,
) -> Result<(&Copy, T), Error> {
    let mut failed: Vec<(String, String)> = Vec::new();
    for (i, copy) in copies.iter().enumerate() {
        let error = match attempt(copy) {
            Ok(done) => {
                if !failed.is_empty() {
                    log::warn!(
                        "restored from the copy on {} instead: {}",
                        where_is(copy),
                        describe_failures(&failed)
                    );
                }
                return Ok((copy, done));
            }
            Err(e) => e,
        };
        let Error::Damaged { detail, .. } = &error else {
            return Err(error);
        };
        if let Some(next) = copies.get(i + 1) {
            log::warn!(
                "the copy of {} on {} failed its check ({detail}); nothing of it was kept, trying the copy on {}",
                copy.archive.name,
                where_is(copy),
                where_is(next)
            );
        }
        failed.push((where_is(copy), detail.clone()));
        if copies.len() == 1 {
            return Err(error);
        }
    }
    Err(Error::Damaged {
        target: None,
        archive: copies[0].archive.name.clone(),
        detail: format!(
            "every copy failed its check: {}",
            describe_failures(&failed)
        ),
    })
}

/// What to load, from the command line (`vouch restore ARCHIVE --dump NAME`).
#[derive(Debug, Clone)]
pub struct DumpRequest {
    /// The archive: a path, its file name on the configured targets, or `latest`.
    pub archive: PathBuf,
    /// `NAME` or `NAME/DB`.
    pub dump: String,
    /// The database (SQLite: the file) to load into.
    pub into: Option<String>,
    /// Replace `into` when it exists.
    pub replace: bool,
    /// The identity to decrypt with, instead of the config's.
    pub identity: Option<PathBuf>,
    /// Only the copy on this configured target.
    pub target: Option<String>,
}

/// Runs `vouch restore ARCHIVE --dump NAME` (see `crate::restore::dump`): the config's
/// `[[dump]]` and the destination first, then the dump extracted from the first intact copy,
/// then loaded.
pub fn execute_dump(cli: &Cli, request: &DumpRequest) -> Result<ExitCode, Error> {
    let selector = dump::Selector::parse(&request.dump)?;
    let mut settings = None;
    let s = load_settings(&mut settings, cli)?.clone();
    let Some(config) = s.dump.iter().find(|d| d.name == selector.name) else {
        let names: Vec<&str> = s.dump.iter().map(|d| d.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "--dump {}: {} defines no [[dump]] of that name ({}); its connection settings are needed to load it",
            selector.name,
            s.file.display(),
            if names.is_empty() { "it defines none".to_owned() } else { format!("it defines: {}", names.join(", ")) }
        )));
    };
    let prepared = dump::prepare(config, &selector, request.into.as_deref(), request.replace)?;
    let copies = locate(
        &request.archive,
        request.target.as_deref(),
        &mut settings,
        cli,
    )?;
    let identity = identity(request.identity.as_deref(), &mut settings, cli)?;
    let spool = crate::dump::spool_dir(&s, &Dirs::from_env());
    let kind = config.kind.name();
    let (copy, extracted) = first_intact(&copies, |copy| {
        let archive = &copy.archive;
        check_files(archive).map_err(|detail| Error::Damaged {
            target: copy.target.clone(),
            archive: archive.name.clone(),
            detail,
        })?;
        log::info!(
            "restore --dump {}: extracting it from {}",
            selector.name,
            archive.name
        );
        let receipt = archive
            .receipt
            .as_ref()
            .map(|r| (r.archive_sha256.as_str(), r.archive_size));
        dump::extract(
            &|| copy.store.read(archive),
            &identity,
            Compression::of_archive(&archive.name).unwrap_or_default(),
            receipt,
            archive.size_on_disk(),
            &spool,
            &selector,
            kind,
        )
        .map_err(|e| classify(e, copy.target.as_deref(), &archive.name, &spool))
    })?;
    let created = copy
        .archive
        .created
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let record = extracted.record.clone();
    let (into, replaced) = prepared.load(extracted, created)?;
    let what = if kind == "sqlite" { "file" } else { "database" };
    log::info!("restore --dump {}: done, {what} {into}", selector.name);
    crate::out!(
        "restored dump {} ({kind}{}) from {} into {what} {into}{}",
        record.name,
        record
            .database
            .as_deref()
            .map(|d| format!(", database {d}"))
            .unwrap_or_default(),
        copy.archive.name,
        if replaced { ", which it replaced" } else { "" }
    );
    Entry::error(format!(
        "restored dump {} from {} into {what} {into}",
        record.name, copy.archive.name
    ))
    .level(log::Level::Debug)
    .field(
        "VOUCH_ARCHIVE",
        copy.store.archive_path(&copy.archive.name).display(),
    )
    .field("VOUCH_DUMP", &record.name)
    .field_opt("VOUCH_TARGET", copy.target.as_deref())
    .emit();
    Ok(ExitCode::Ok)
}

/// The target holding a copy, or its directory when it is on none.
fn where_is(copy: &Copy) -> String {
    match &copy.target {
        Some(t) => format!("target {t}"),
        None => copy.archive.dir.display().to_string(),
    }
}

fn describe_failures(failed: &[(String, String)]) -> String {
    failed
        .iter()
        .map(|(at, why)| format!("{at}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks one copy's files, then restores from it.
fn restore_copy(
    copy: &Copy,
    identity: &Identity,
    options: &Options,
) -> Result<restore::Restored, Error> {
    let archive = &copy.archive;
    check_files(archive).map_err(|detail| Error::Damaged {
        target: copy.target.clone(),
        archive: archive.name.clone(),
        detail,
    })?;
    crate::systemd::sdnotify::status(&format!("restoring {}", archive.name));
    // Each copy's own name says its compression: the archive named on the command line may
    // have been found under either suffix.
    let options = &Options {
        compression: Compression::of_archive(&archive.name).unwrap_or_default(),
        ..options.clone()
    };
    let receipt = archive
        .receipt
        .as_ref()
        .map(|r| (r.archive_sha256.as_str(), r.archive_size));
    restore::restore(
        &|| copy.store.read(archive),
        identity,
        receipt,
        archive.size_on_disk(),
        options,
    )
    .map_err(|e| classify(e, copy.target.as_deref(), &archive.name, &options.to))
}

/// Says what was restored, on the terminal and in the journal.
fn report(copy: &Copy, done: &restore::Restored) {
    let archive = &copy.archive;
    let replaced = if done.replaced > 0 {
        format!(", {} existing path(s) replaced", done.replaced)
    } else {
        String::new()
    };
    crate::out!(
        "restored {} entries ({}) from {} into {}{replaced}",
        done.entries,
        crate::systemd::sdnotify::human_bytes(done.bytes),
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
    .field(
        "VOUCH_ARCHIVE",
        copy.store.archive_path(&archive.name).display(),
    )
    .field("VOUCH_FILES", done.entries)
    .field_opt("VOUCH_TARGET", copy.target.as_deref())
    .emit();
}
