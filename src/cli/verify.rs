//! `vouch verify [ARCHIVE | --latest | --all] [--target NAME]`: read archives back from their
//! targets and check every entry against the manifest, as `vouch run` does right after writing.
//!
//! This is the restore test: `vouch-verify.timer` runs `vouch verify --latest` weekly. Results
//! are recorded in `$STATE_DIRECTORY/verified.json` (archives are never rewritten), failures
//! included, and every outcome after the config is loaded rewrites the metrics textfile. A
//! target without any archive fails, since there is nothing that could be restored from it;
//! the other targets are still verified.
//!
//! verify does not take the run lock (a weekly verify must never make the daily backup exit
//! `LOCKED`), so retention may delete an archive while it is being verified. Every file of an
//! archive is opened before any is read, and the check (and the restore test) read through
//! those descriptors, so a deletion after the opening changes nothing. An archive deleted after
//! it was listed and before it was opened is reported as such and skipped, unless it is the one
//! archive named on the command line, which then fails.
//!
//! `--restore-to DIR` goes one step further: after the verification, each archive is restored
//! into DIR (into `DIR/TARGET/ARCHIVE` when several are selected) and every restored file is
//! read back from disk and compared with the manifest. DIR must be new or empty; the restored
//! files are left there for the operator to inspect. The record says `restore-test` only when
//! that step ran: an archive that failed its verification is not restored.

use crate::check::verify;
use crate::cli::restore as restore_cli;
use crate::cli::Cli;
use crate::config::{self, Compression, Settings};
use crate::error::Error;
use crate::exit::ExitCode;
use crate::host::dirs::{self, Dirs};
use crate::pipeline::crypt::Identity;
use crate::pipeline::crypt::{KeyError, Keys};
use crate::restore::{self, RestoreError};
use crate::systemd::journal::{Entry, Event};
use crate::systemd::sdnotify::Progress;
use crate::target::archives::{self, Archive, VerifyLog, VerifyRecord};
use crate::target::Configured;
use crate::target::Opened;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// A line of the per-archive table: on stdout, unless stdout is the journal.
macro_rules! table {
    ($($arg:tt)*) => {
        if table_wanted() {
            crate::out!($($arg)*);
        }
    };
}

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

/// Verifies the selected archives and records the results. Once the config is loaded, every
/// outcome (failures included) rewrites the metrics textfile.
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
    let result = verify_selected(&settings, &dirs, &selection, target, restore_to);
    // The textfile is made from the verification log, which holds every archive read above.
    crate::report::metrics::write(&settings, &dirs);
    Ok(report(result))
}

/// The one journal entry of the verification's result, and the unit's final status text;
/// returns the exit code. A failure is reported here (with its fix), not again by the caller.
fn report(result: Result<Summary, Error>) -> ExitCode {
    match result {
        Ok(s) => {
            let text = format!(
                "verified {} archive{} on {} target{}",
                s.archives,
                if s.archives == 1 { "" } else { "s" },
                s.targets,
                if s.targets == 1 { "" } else { "s" }
            );
            crate::systemd::sdnotify::status(&text);
            Entry::event(Event::VerifySucceeded, &text)
                .field("VOUCH_FILES", s.archives)
                .emit();
            ExitCode::Ok
        }
        Err(error) => {
            let code = error.exit_code();
            crate::systemd::sdnotify::status(&format!("verify failed: {} ({error})", code.name()));
            Entry::event(Event::VerifyFailed, format!("{}: {error}", code.name()))
                .field("VOUCH_EXIT_CODE", code.code())
                .field("VOUCH_EXIT_NAME", code.name())
                .field_opt("VOUCH_TARGET", error.target())
                .field_opt("VOUCH_HINT", error.hint())
                .emit();
            code
        }
    }
}

/// What a verification that passed covered.
struct Summary {
    /// Archives read back in full.
    archives: usize,
    /// Targets they were on.
    targets: usize,
}

/// Whether the per-archive table goes to stdout: not when stdout is the journal (under the
/// units), where each result already has its own entry.
fn table_wanted() -> bool {
    !systemd_journal_logger::connected_to_journal()
}

/// What checking one archive found.
enum Checked {
    /// Read in full and every entry matched; its files stay open for a restore test.
    Passed(verify::Verified, Box<dyn Opened>),
    /// The first difference.
    Failed(verify::Mismatch),
    /// Deleted after it was listed and before it was opened (retention, by a `vouch run` or
    /// `vouch prune` at the same time).
    Removed,
}

/// How one archive's verification ended, for the log and the summary line.
struct Verdict {
    /// Whether it passed.
    ok: bool,
    /// The first difference, when it failed.
    detail: Option<String>,
    /// Whether the restore step ran (the files were written out and compared).
    restore_test: bool,
}

/// One archive to verify: the configured target it counts for, the target holding it, and
/// the archive.
struct Work<'a> {
    target: Configured<'a>,
    store: Rc<dyn crate::target::Target>,
    archive: Archive,
}

/// The work of `execute` once the config is loaded.
fn verify_selected(
    settings: &Settings,
    dirs: &Dirs,
    selection: &Selection,
    target: Option<&str>,
    restore_to: Option<&Path>,
) -> Result<Summary, Error> {
    dirs.create().map_err(|error| Error::State {
        path: dirs.state.clone(),
        error,
    })?;
    let keys = Keys::load(&settings.encryption, dirs.credentials.as_deref())?;
    let identity = keys.identity.ok_or(KeyError::NoIdentity)?;
    let targets = crate::cli::select_targets(settings, target)?;
    let mut failures: Vec<Error> = Vec::new();
    let work = select(settings, dirs, &targets, selection, &mut failures)?;
    let explicit = matches!(selection, Selection::One(_));

    // A damaged log is not overwritten: it may hold failed verifications nobody has seen.
    let mut log = VerifyLog::load_strict(&dirs.state).map_err(|error| Error::State {
        path: dirs.state.join(archives::VERIFY_LOG),
        error,
    })?;
    let ctx = Ctx {
        identity: &identity,
        dirs,
        restore_to,
        several: work.len() > 1,
        explicit,
    };
    let mut tally = Tally {
        failures,
        passed: Vec::new(),
    };
    for w in work {
        verify_one(&ctx, w, &mut log, &mut tally)?;
    }
    let Tally {
        failures,
        mut passed,
    } = tally;
    save(&log, dirs);
    let mut failures = failures.into_iter();
    let first = failures.next();
    // In the journal the first failure is the verify-failed entry; the others get one each.
    for other in failures.filter(|_| !table_wanted()) {
        log::error!("also failed: {other}");
    }
    match first {
        Some(e) => Err(e),
        None => Ok(Summary {
            archives: passed.len(),
            targets: {
                passed.sort();
                passed.dedup();
                passed.len()
            },
        }),
    }
}

/// What every archive's verification needs.
struct Ctx<'a> {
    identity: &'a Identity,
    dirs: &'a Dirs,
    /// `--restore-to`: also write every file out there and read it back.
    restore_to: Option<&'a Path>,
    /// More than one archive is verified (each restore test then gets its own directory).
    several: bool,
    /// The archive was named on the command line (its deletion meanwhile is a failure).
    explicit: bool,
}

/// What the verifications found so far.
struct Tally {
    failures: Vec<Error>,
    /// The target of every archive that passed.
    passed: Vec<String>,
}

/// Verifies one archive on one target, prints its line and records the result. An error ends
/// the whole command (the restore test's scratch directory failed).
fn verify_one(ctx: &Ctx, w: Work, log: &mut VerifyLog, tally: &mut Tally) -> Result<(), Error> {
    let Work {
        target: t,
        store,
        archive: c,
    } = w;
    let t = &t;
    crate::systemd::sdnotify::status(&format!("verifying {} on {}", c.name, t.name()));
    let receipt = c
        .receipt
        .as_ref()
        .map(|r| (r.archive_sha256.as_str(), r.archive_size));
    let verdict = match check(&*store, &c, ctx.identity, receipt, &ctx.dirs.state) {
        Checked::Removed => {
            removed(ctx, t, &c, tally);
            return Ok(());
        }
        Checked::Failed(m) => Verdict {
            ok: false,
            detail: Some(m.0),
            restore_test: false,
        },
        Checked::Passed(v, opened) => {
            let verdict = Verdict {
                ok: true,
                detail: None,
                restore_test: false,
            };
            let Some(dir) = ctx.restore_to else {
                report_passed(t, &*store, &c, &v);
                tally.passed.push(t.name().to_owned());
                record(log, &*store, t, &c, verdict);
                return Ok(());
            };
            let into = if ctx.several {
                dir.join(t.name()).join(&c.name)
            } else {
                dir.to_owned()
            };
            match restore_test(&c, &*opened, ctx.identity, receipt, &into) {
                Ok(entries) => {
                    crate::out!(
                        "restored {entries} entries of {} into {}",
                        c.name,
                        into.display()
                    );
                    report_passed(t, &*store, &c, &v);
                    tally.passed.push(t.name().to_owned());
                    Verdict {
                        restore_test: true,
                        ..verdict
                    }
                }
                Err(RestoreError::Damaged(detail)) => Verdict {
                    ok: false,
                    detail: Some(format!("restore test into {}: {detail}", into.display())),
                    restore_test: true,
                },
                Err(e) => {
                    // The archive verified; writing it out failed for a reason of the
                    // scratch directory's, so no restore test is on record.
                    report_passed(t, &*store, &c, &v);
                    record(log, &*store, t, &c, verdict);
                    save(log, ctx.dirs);
                    return Err(restore_cli::classify(e, Some(t.name()), &c.name, &into));
                }
            }
        }
    };
    if let Some(detail) = &verdict.detail {
        table!("FAIL  {}  {}  {detail}", t.name(), c.name);
        tally.failures.push(damaged(t, &c.name, detail.clone()));
    }
    record(log, &*store, t, &c, verdict);
    Ok(())
}

/// A failed verification: 33 for an archive on a directory target, 34 (REMOTE) for one in
/// object storage, whose copy is what failed.
fn damaged(t: &Configured, archive: &str, detail: String) -> Error {
    if !t.is_remote() {
        return Error::Damaged {
            target: Some(t.name().to_owned()),
            archive: archive.to_owned(),
            detail,
        };
    }
    Error::RemoteCheck {
        target: t.name().to_owned(),
        code: ExitCode::Remote,
        detail: format!("{archive} failed its verification: {detail}"),
        hint: format!(
            "Do not rely on this copy: restore from a directory target or another archive (`vouch list --target {}` shows them), and check the bucket; the next `vouch run` copies a new archive there.",
            t.name()
        ),
    }
}

/// An archive deleted between the listing and its opening: a failure when it was named on the
/// command line, else skipped with a warning.
fn removed(ctx: &Ctx, t: &Configured, c: &Archive, tally: &mut Tally) {
    let detail = format!(
        "{} was deleted after this verification started and before it was opened (retention by a `vouch run` or `vouch prune` running at the same time deletes archives); nothing was checked",
        c.name
    );
    if ctx.explicit {
        table!("FAIL  {}  {}  {detail}", t.name(), c.name);
        tally.failures.push(Error::Removed {
            target: t.name().to_owned(),
            archive: c.name.clone(),
            detail,
        });
    } else {
        table!("skip  {}  {}  {detail}", t.name(), c.name);
        log::warn!("target {}: skipped {detail}", t.name());
    }
}

/// The archives to verify, per target. A target that cannot be read or holds no archive is a
/// failure in `failures` (the other targets are still verified); an archive named on the
/// command line that is nowhere is a usage error.
fn select<'a>(
    settings: &Settings,
    dirs: &Dirs,
    targets: &[Configured<'a>],
    selection: &Selection,
    failures: &mut Vec<Error>,
) -> Result<Vec<Work<'a>>, Error> {
    let first = targets[0];
    if let Selection::One(path) = selection {
        let found =
            crate::target::find(path, targets, dirs).map_err(|error| Error::TargetWrite {
                target: first.name().to_owned(),
                path: first.location(),
                error,
            })?;
        let Some(found) = found else {
            return Err(Error::Usage(format!(
                "no archive {} on {}",
                path.display(),
                targets
                    .iter()
                    .map(|t| t.location().display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        // An archive outside every target is checked under the first target's name.
        return Ok(vec![Work {
            target: found.target.map_or(first, |i| targets[i]),
            store: found.store.into(),
            archive: found.archive,
        }]);
    }
    let mut work = Vec::new();
    for &t in targets {
        let scanned = t.open(dirs).and_then(|store| {
            let holder: Rc<dyn crate::target::Target> = store.into();
            match holder.scan_own(&settings.backup.name) {
                Ok(all) => Ok((holder, all)),
                Err(error) if t.is_remote() => Err(t.remote_unreadable(&error)),
                Err(error) => Err(Error::TargetWrite {
                    target: t.name().to_owned(),
                    path: t.location(),
                    error,
                }),
            }
        });
        let (holder, all) = match scanned {
            Ok(found) => found,
            Err(e) => {
                table!("FAIL  {}  (none)  {e}", t.name());
                failures.push(e);
                continue;
            }
        };
        let found: Vec<Archive> = match selection {
            Selection::Latest => all.into_iter().last().into_iter().collect(),
            _ => all,
        };
        if found.is_empty() {
            let detail = format!(
                "target {}: no archive in {}, so nothing could be restored from it",
                t.name(),
                t.location().display()
            );
            table!("FAIL  {}  (none)  {detail}", t.name());
            failures.push(damaged(&t, "(none)", detail));
        }
        work.extend(found.into_iter().map(|archive| Work {
            target: t,
            store: Rc::clone(&holder),
            archive,
        }));
    }
    Ok(work)
}

/// Checks one archive: its receipt and files as listed, then every part opened before any is
/// read (so that retention deleting it meanwhile cannot cut the read short), then the full
/// read-back.
fn check(
    store: &dyn crate::target::Target,
    c: &Archive,
    identity: &Identity,
    receipt: Option<(&str, u64)>,
    spool: &Path,
) -> Checked {
    // A missing receipt only means the archive's own hash cannot be compared (the contents
    // are still checked against the manifest); a broken one is a failure.
    if let (true, Some(problem)) = (
        c.receipt_path.is_some() && c.receipt.is_none(),
        &c.receipt_problem,
    ) {
        return Checked::Failed(verify::Mismatch(problem.clone()));
    }
    let missing = c.missing_when_listed();
    if let Some(first) = missing.first() {
        return Checked::Failed(verify::Mismatch(format!(
            "{} is missing ({} file(s) of the archive are gone)",
            first.display(),
            missing.len()
        )));
    }
    crate::host::fault::point("verify-before-open");
    let opened = match store.open(c) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Retention deletes every data file, one after the other, then the receipt: a
            // moment later they are all gone. Anything less is a damaged archive.
            if store.is_gone(c) || {
                std::thread::sleep(std::time::Duration::from_millis(200));
                store.is_gone(c)
            } {
                return Checked::Removed;
            }
            return Checked::Failed(verify::Mismatch(format!(
                "a file of the archive is missing: {e}"
            )));
        }
        Err(e) => {
            return Checked::Failed(verify::Mismatch(format!("cannot open the archive: {e}")))
        }
    };
    crate::host::fault::point("verify-opened");
    // One pass reads the whole archive: progress counts its bytes.
    let total = receipt.map(|(_, size)| size);
    let progress = Arc::new(Mutex::new(Counted {
        done: 0,
        progress: Progress::new(format!("verifying {}", c.name), total),
    }));
    let compression = Compression::of_archive(&c.name).unwrap_or_default();
    let result = match opened.reader() {
        Ok(inner) => {
            let file = CountingReader {
                inner,
                counted: Arc::clone(&progress),
            };
            verify::verify_archive(file, identity, compression, receipt, spool)
        }
        Err(e) => Err(verify::Mismatch(format!("cannot open the archive: {e}"))),
    };
    lock(&progress).progress.finish();
    match result {
        Ok(v) => Checked::Passed(v, opened),
        Err(m) if crate::report::health::is_unfinished_set(c) => Checked::Failed(verify::Mismatch(format!(
            "{}; it is split and has no receipt, most likely the parts of a run killed while committing them (older versions of vouch committed parts one by one), not damage: delete its parts",
            m.0
        ))),
        Err(m) => Checked::Failed(m),
    }
}

/// The bytes read so far of the archive being verified, and where they are reported.
struct Counted {
    done: u64,
    progress: Progress,
}

/// A reader that reports every read to the verification's progress (systemd's status and
/// start timeout, and the terminal line), so a huge archive never looks stuck.
struct CountingReader {
    inner: Box<dyn Read + Send>,
    counted: Arc<Mutex<Counted>>,
}

/// The counter, also after a thread panicked holding it (it holds only numbers).
fn lock(c: &Mutex<Counted>) -> std::sync::MutexGuard<'_, Counted> {
    c.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut c = lock(&self.counted);
        c.done += n as u64;
        let done = c.done;
        c.progress.update(done);
        Ok(n)
    }
}

/// Prints the `ok` line and logs the verification event.
fn report_passed(
    t: &Configured,
    store: &dyn crate::target::Target,
    c: &Archive,
    v: &verify::Verified,
) {
    table!("ok    {}  {}  ({} entries)", t.name(), c.name, v.entries);
    Entry::event(
        Event::ArchiveVerified,
        format!("target {}: verified {} (full)", t.name(), c.name),
    )
    .field("VOUCH_TARGET", t.name())
    .field("VOUCH_ARCHIVE", store.archive_path(&c.name).display())
    .field("VOUCH_ARCHIVE_SHA256", &v.archive_sha256)
    .field("VOUCH_FILES", v.entries)
    .emit();
}

/// Records a verification in the log, unless the archive has been deleted meanwhile (a record
/// for an archive that is gone would never be cleared).
fn record(
    log: &mut VerifyLog,
    store: &dyn crate::target::Target,
    t: &Configured,
    c: &Archive,
    verdict: Verdict,
) {
    if store.is_gone(c) {
        crate::out!(
            "note  {}  {}  deleted by retention while it was being verified; not recorded",
            t.name(),
            c.name
        );
        return;
    }
    log.insert(
        t.name(),
        &c.name,
        VerifyRecord {
            verified_at: crate::run::rfc3339(time::OffsetDateTime::now_utc()),
            ok: verdict.ok,
            detail: verdict.detail,
            restore_test: verdict.restore_test,
        },
    );
}

/// Saves the log; a failure is a warning (the results were printed and logged).
fn save(log: &VerifyLog, dirs: &Dirs) {
    if let Err(e) = log.save(&dirs.state) {
        log::warn!(
            "cannot record verification results in {}: {e}",
            dirs.state.display()
        );
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

/// Restores the whole archive (from its files opened for the verification) into `into` and
/// compares the restored tree with the manifest.
fn restore_test(
    archive: &Archive,
    opened: &dyn Opened,
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
        compression: Compression::of_archive(&archive.name).unwrap_or_default(),
        ..restore::Options::default()
    };
    let done = restore::restore(
        &|| opened.reader(),
        identity,
        receipt,
        archive.size_on_disk(),
        &options,
    )?;
    crate::host::fault::point("verify-before-compare");
    restore::check_tree(&done)?;
    Ok(done.entries)
}
