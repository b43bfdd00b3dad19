//! `vouch verify [ARCHIVE | --latest | --all] [--target NAME]`: read archives back from their
//! targets and check every entry against the manifest, as `vouch run` does right after writing.
//!
//! This is the restore test: `vouch-verify.timer` runs `vouch verify --latest` weekly. Results
//! are recorded in `$STATE_DIRECTORY/verified.json` (archives are never rewritten). A target
//! without any archive fails, since there is nothing that could be restored from it.
//!
//! `--restore-to DIR` goes one step further: after the verification, each archive is restored
//! into DIR (into `DIR/TARGET/ARCHIVE` when several are selected) and every restored file is
//! read back from disk and compared with the manifest. DIR must be new or empty; the restored
//! files are left there for the operator to inspect.

use crate::archives::{self, Archive, VerifyLog, VerifyRecord};
use crate::cli::restore as restore_cli;
use crate::cli::Cli;
use crate::config::{self, Target};
use crate::crypt::Identity;
use crate::crypt::{KeyError, Keys};
use crate::dirs::{self, Dirs};
use crate::error::Error;
use crate::exit::ExitCode;
use crate::journal::{Entry, Event};
use crate::restore::{self, RestoreError};
use crate::verify;
use std::path::{Path, PathBuf};

/// Which archives to verify.
#[derive(Debug, Clone)]
pub enum Selection {
    /// The newest archive on each target.
    Latest,
    /// Every archive on each target.
    All,
    /// One archive, by path or by file name.
    One(PathBuf),
}

/// Verifies the selected archives and records the results.
pub fn execute(
    cli: &Cli,
    selection: Selection,
    target: Option<&str>,
    restore_to: Option<&Path>,
) -> Result<ExitCode, Error> {
    if let Some(dir) = restore_to {
        check_scratch(dir)?;
    }
    let settings = config::load(&dirs::config_path(cli.config.as_deref()))?;
    let dirs = Dirs::from_env();
    dirs.create().map_err(|error| Error::State {
        path: dirs.state.clone(),
        error,
    })?;
    let keys = Keys::load(&settings.encryption, dirs.credentials.as_deref())?;
    let identity = keys.identity.ok_or(KeyError::NoIdentity)?;
    let targets = crate::cli::select_targets(&settings, target)?;
    let mut work: Vec<(&Target, Archive)> = Vec::new();
    for t in &targets {
        let found: Vec<Archive> = match &selection {
            Selection::One(path) => {
                let dirs: Vec<&Path> = targets.iter().map(|t| t.path.as_path()).collect();
                let found = archives::find(path, &dirs).map_err(|error| Error::TargetWrite {
                    target: t.name.clone(),
                    path: t.path.clone(),
                    error,
                })?;
                let Some(a) = found else {
                    return Err(Error::Usage(format!(
                        "no archive {} on {}",
                        path.display(),
                        dirs.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                // An archive outside every target is checked under the first target's name.
                let owner = targets.iter().find(|t| t.path == a.dir).unwrap_or(t);
                work.push((owner, a));
                break;
            }
            _ => {
                let all = archives::scan_own(&t.path, &settings.backup.name).map_err(|error| {
                    Error::TargetWrite {
                        target: t.name.clone(),
                        path: t.path.clone(),
                        error,
                    }
                })?;
                match selection {
                    Selection::Latest => all.into_iter().last().into_iter().collect(),
                    _ => all,
                }
            }
        };
        if found.is_empty() {
            return Err(Error::Damaged {
                target: Some(t.name.clone()),
                archive: String::from("(none)"),
                detail: format!(
                    "target {}: no archive in {}, so nothing could be restored from it",
                    t.name,
                    t.path.display()
                ),
            });
        }
        work.extend(found.into_iter().map(|a| (*t, a)));
    }

    // A damaged log is not overwritten: it may hold failed verifications nobody has seen.
    let mut log = VerifyLog::load_strict(&dirs.state).map_err(|error| Error::State {
        path: dirs.state.join(archives::VERIFY_LOG),
        error,
    })?;
    let mut first_failure = None;
    let several = work.len() > 1;
    for (t, c) in work {
        crate::systemd::status(&format!("verifying {} on {}", c.name, t.name));
        let receipt = c
            .receipt
            .as_ref()
            .map(|r| (r.archive_sha256.as_str(), r.archive_size));
        let missing = c.missing_files();
        // A missing receipt only means the archive's own hash cannot be compared (the
        // contents are still checked against the manifest); a broken one is a failure.
        let broken_receipt = c.receipt_path.is_some() && c.receipt.is_none();
        let result = if let (true, Some(problem)) = (broken_receipt, &c.receipt_problem) {
            Err(verify::Mismatch(problem.clone()))
        } else if let Some(first) = missing.first() {
            Err(verify::Mismatch(format!(
                "{} is missing ({} file(s) of the archive are gone)",
                first.display(),
                missing.len()
            )))
        } else {
            verify::verify_archive(&|| c.open(), &identity, receipt, &dirs.state)
        };
        // The restore test: write every file out and read it back against the manifest.
        let result = match (result, restore_to) {
            (Ok(v), Some(dir)) => {
                let into = if several {
                    dir.join(&t.name).join(&c.name)
                } else {
                    dir.to_owned()
                };
                match restore_test(&c, &identity, receipt, &into) {
                    Ok(entries) => {
                        println!(
                            "restored {entries} entries of {} into {}",
                            c.name,
                            into.display()
                        );
                        Ok(v)
                    }
                    Err(RestoreError::Damaged(detail)) => Err(verify::Mismatch(format!(
                        "restore test into {}: {detail}",
                        into.display()
                    ))),
                    Err(e) => {
                        if let Err(e) = log.save(&dirs.state) {
                            log::warn!(
                                "cannot record verification results in {}: {e}",
                                dirs.state.display()
                            );
                        }
                        return Err(restore_cli::classify(e, Some(&t.name), &c.name, &into));
                    }
                }
            }
            (result, _) => result,
        };
        let restore_test = restore_to.is_some();
        let now = crate::run::rfc3339(time::OffsetDateTime::now_utc());
        match result {
            Ok(v) => {
                println!("ok    {}  {}  ({} entries)", t.name, c.name, v.entries);
                Entry::event(
                    Event::ArchiveVerified,
                    format!("target {}: verified {} (full)", t.name, c.name),
                )
                .field("VOUCH_TARGET", &t.name)
                .field("VOUCH_ARCHIVE", t.path.join(&c.name).display())
                .field("VOUCH_ARCHIVE_SHA256", &v.archive_sha256)
                .field("VOUCH_FILES", v.entries)
                .emit();
                log.insert(
                    &t.name,
                    &c.name,
                    VerifyRecord {
                        verified_at: now,
                        ok: true,
                        detail: None,
                        restore_test,
                    },
                );
            }
            Err(m) => {
                println!("FAIL  {}  {}  {}", t.name, c.name, m.0);
                log.insert(
                    &t.name,
                    &c.name,
                    VerifyRecord {
                        verified_at: now,
                        ok: false,
                        detail: Some(m.0.clone()),
                        restore_test,
                    },
                );
                first_failure.get_or_insert(Error::Damaged {
                    target: Some(t.name.clone()),
                    archive: c.name.clone(),
                    detail: m.0,
                });
            }
        }
    }
    if let Err(e) = log.save(&dirs.state) {
        log::warn!(
            "cannot record verification results in {}: {e}",
            dirs.state.display()
        );
    }
    crate::metrics::write(&settings, &dirs);
    match first_failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::Ok),
    }
}

/// Refuses a scratch directory that holds anything, or whose parent is missing.
fn check_scratch(dir: &Path) -> Result<(), Error> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Usage(format!(
                    "--restore-to {} is not empty; give a new or empty scratch directory",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            if parent.is_some_and(|p| !p.is_dir()) {
                return Err(Error::Usage(format!(
                    "--restore-to {}: its parent directory does not exist",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) => Err(Error::Usage(format!("--restore-to {}: {e}", dir.display()))),
    }
}

/// Restores the whole archive into `into` and compares the restored tree with the manifest.
fn restore_test(
    archive: &Archive,
    identity: &Identity,
    receipt: Option<(&str, u64)>,
    into: &Path,
) -> Result<u64, RestoreError> {
    if let Some(parent) = into.parent() {
        std::fs::create_dir_all(parent).map_err(|error| RestoreError::Io {
            path: parent.to_owned(),
            error,
        })?;
    }
    let options = restore::Options {
        to: into.to_owned(),
        progress: true,
        ..restore::Options::default()
    };
    let done = restore::restore(
        &|| archive.open(),
        identity,
        receipt,
        archive.size_on_disk(),
        &options,
    )?;
    restore::check_tree(&done)?;
    Ok(done.entries)
}
