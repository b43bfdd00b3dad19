//! `vouch run`: one backup, from preflight to a verified archive on every target.
//!
//! The order is the product: every check that can run before a byte is written runs first
//! (lock, keys, sources, targets); the sources are read once and streamed through
//! tar -> gzip (or zstd) -> age into a temporary file on every target at the same time; the
//! manifest closes the archive; unreadable and required paths are judged; every temporary file is
//! fsynced and read back from its target; only then does each get its final name and its
//! receipt. Any failure before the rename leaves nothing under a final name.
//!
//! [`run`] is that order as a list of phases, each a function taking what the phase before it
//! produced: `preflight` (the lock and the keys), `dumps` (the before-hooks, then every
//! `[[dump]]` made and checked in the spool, before anything is written to a target), `archive`
//! (the sources and the dumps, the before-hooks' cleanups run once they are read; the pending
//! archive on every target and the `Facts` of the archive), `judge`, `verify` (how and when it
//! was verified), `commit` (where it went), then `after_commit`: a failed cleanup, the size
//! check, retention and the after-hooks, which can still fail the run but never undo the
//! commit. A new phase is one more call there.
//! Targets are reached only through [`crate::target::Target`].

use crate::check::preflight::Cleared;
use crate::check::verify::{self as check, Expected, Level};
use crate::config::{self, AnomalyPolicy, Compression, ReadErrorPolicy, Settings};
use crate::error::Error;
use crate::host::dirs::Dirs;
use crate::host::fault;
use crate::pipeline::archive::{archive_sources, ArchiveError, Archived, Stats};
use crate::pipeline::compress::{Codec, ParallelWriter};
use crate::pipeline::crypt::{self, KeyError, Keys};
use crate::pipeline::io::{FailureSlot, FanOut, HashWriter};
use crate::pipeline::manifest::{Head, ManifestWriter, Spooled, Tail, MANIFEST_PATH, SUMS_PATH};
use crate::pipeline::tarstream::{Header, TarWriter};
use crate::pipeline::walk::{Exclude, Walker};
use crate::report::health;
use crate::systemd::journal::{self, Entry, Event};
use crate::systemd::sdnotify::{self as systemd, Progress};
use crate::target::receipt::Receipt;
use crate::target::{self, local, retention, Pending, Placed, Target};
use age::stream::StreamWriter;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The gzip level, on libdeflate's scale. Measured here against `gzip -6` (the size the archive
/// is held to): on a tar of /usr/include, /usr/share/doc and /usr/share/man (305 MB) libdeflate
/// level 5 is 1.001x its size and 6 is 0.998x; on the bench's synthetic text 0.995x and 0.985x.
/// With 1 MiB members (+0.35%) level 5 stays well inside 1.03x and deflates about 10% faster,
/// which is the whole run about 10% faster, as deflating is most of its work.
pub const GZIP_LEVEL: u32 = 5;

/// The state file recording the last run's outcome.
pub const LAST_RUN: &str = "last-run.json";

/// One archive committed to one target.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The target's name.
    pub target: String,
    /// The archive's path.
    pub path: PathBuf,
}

/// What a successful run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The archive's file name (the same on every target).
    pub archive: String,
    /// Where it was committed.
    pub committed: Vec<Committed>,
    /// Counts.
    pub stats: Stats,
    /// Uncompressed tar bytes.
    pub tar_bytes: u64,
    /// Encrypted archive bytes.
    pub archive_size: u64,
    /// SHA-256 of the encrypted archive.
    pub archive_sha256: String,
    /// How it was verified.
    pub level: Level,
    /// Wall time.
    pub duration: Duration,
    /// A before-hook's cleanup that failed once the sources were read: the archive is
    /// committed and good, and the run still ends with exit 20.
    pub cleanup_failure: Option<crate::dump::hook::CleanupFailure>,
    /// The off-site copies made, by target.
    pub copies: Vec<(String, crate::target::s3::copy::Copied)>,
    /// The first off-site copy that failed (every remote is tried): the run ends with 34 once
    /// the archive is committed locally, and retention does not run.
    pub offsite_failure: Option<OffsiteFailure>,
    /// The run lock, held for as long as the report lives, so that what follows the commit
    /// (retention) runs under it.
    pub lock: std::sync::Arc<crate::host::lock::RunLock>,
}

/// An off-site copy that failed, kept until the end of the run.
#[derive(Debug, Clone)]
pub struct OffsiteFailure {
    /// The target.
    pub target: String,
    /// What went wrong.
    pub detail: String,
    /// The fix.
    pub hint: String,
}

/// The outcome of the last run, kept in the state directory for `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct LastRun {
    /// Its run id.
    pub run_id: String,
    /// RFC 3339 end time.
    pub finished: String,
    /// Exit code.
    pub exit_code: u8,
    /// Exit code name.
    pub exit_name: String,
    /// The archive, when one was committed.
    pub archive: Option<String>,
    /// Uncompressed tar bytes, used to estimate the next run's size.
    pub tar_bytes: Option<u64>,
    /// The targets holding `archive` when the run failed after committing it on some of them
    /// (absent otherwise, and in records of older versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub committed_targets: Vec<String>,
    /// Wall time of the run in seconds (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

impl LastRun {
    /// Reads the last run's record, if any.
    pub fn load(state_dir: &Path) -> Option<LastRun> {
        let path = state_dir.join(LAST_RUN);
        let text = crate::host::bounded::read(
            &path,
            crate::host::bounded::Links::Refuse,
            crate::host::bounded::STATE_CAP,
        )
        .ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes it atomically.
    pub fn save(&self, state_dir: &Path) -> io::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        json.push(b'\n');
        local::write_atomic(state_dir, LAST_RUN, &json, journal::run_id()).map(|_| ())
    }
}

/// RFC 3339 in UTC, to the second.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&f).unwrap_or_default()
}

fn stamp(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    t.format(&f).unwrap_or_default()
}

/// The host name.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Picks a creation time whose archive name is free on every target (a run in the same second
/// as the previous one waits for the next second rather than colliding).
fn pick_name(settings: &Settings, stores: &[Box<dyn Target>]) -> (OffsetDateTime, String) {
    loop {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::now_utc());
        let name = format!(
            "{}-{}{}",
            settings.backup.name,
            stamp(now),
            settings.backup.compression.archive_suffix()
        );
        let taken = stores.iter().any(|s| s.name_taken(&name));
        if !taken {
            return (now, name);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Wraps an I/O error from preparing a target; `Error::exit_code` classifies it by errno.
fn target_write(target: &str, path: &Path, error: io::Error) -> Error {
    Error::TargetWrite {
        target: target.to_owned(),
        path: path.to_owned(),
        error,
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Ran {
    /// What the run committed, when it got that far (also when a phase after the commit
    /// failed: the archive stays committed and good).
    pub report: Option<Report>,
    /// `Ok`, or the failure that ended the run, before the commit or after it.
    pub result: Result<(), Error>,
    /// What the phases after the commit found without failing the run (a size anomaly with
    /// `on-anomaly = "warn"`), for the notifications.
    pub warnings: Vec<String>,
}

/// Runs one backup: the phases up to the commit, then the phases after it.
pub fn run(settings: &Settings, dirs: &Dirs) -> Ran {
    let report = match backup(settings, dirs) {
        Ok(report) => report,
        Err(e) => {
            return Ran {
                report: None,
                result: Err(e),
                warnings: Vec::new(),
            }
        }
    };
    let mut warnings = Vec::new();
    let result = after_commit(settings, dirs, &report, &mut warnings);
    Ran {
        report: Some(report),
        result,
        warnings,
    }
}

/// The phases up to a verified archive committed on every target, in order. A failure in any
/// of them leaves nothing under a final name, unless the commit itself failed on a target after
/// it succeeded on another (the error says which).
fn backup(settings: &Settings, dirs: &Dirs) -> Result<Report, Error> {
    let started = Instant::now();
    let cleared = preflight(settings, dirs)?;
    let stores: Vec<Box<dyn Target>> = settings.targets.iter().map(target::open).collect();
    let named = start(settings, &stores);
    let prepared = dumps(settings, dirs)?;
    let Written {
        facts,
        mut spooled,
        mut pendings,
    } = archive(settings, dirs, &cleared.keys, &stores, named, prepared)?;
    judge(settings, &facts.archived.tail)?;
    let verified = verify(settings, &cleared.keys, &facts, &mut spooled, &mut pendings)?;
    let committed = commit(settings, &facts, &verified, pendings)?;
    let (copies, offsite_failure) =
        offsite(settings, dirs, &cleared.keys, &facts, &mut spooled, &stores);
    Ok(Report {
        archive: facts.name,
        committed,
        stats: facts.archived.stats,
        tar_bytes: facts.closed.tar_bytes,
        archive_size: facts.closed.archive_size,
        archive_sha256: facts.closed.archive_sha256,
        level: verified.level,
        duration: started.elapsed(),
        cleanup_failure: facts.cleanup_failure,
        copies,
        offsite_failure,
        lock: std::sync::Arc::new(cleared.lock),
    })
}

/// Start: the archive's name, whose time is the run's start, and the run-started entry, before
/// any hook or dump runs.
fn start(settings: &Settings, stores: &[Box<dyn Target>]) -> (OffsetDateTime, String) {
    let (created, name) = pick_name(settings, stores);
    Entry::event(
        Event::RunStarted,
        format!("backup {} started", settings.backup.name),
    )
    .field("VOUCH_ARCHIVE", &name)
    .emit();
    (created, name)
}

/// The phases once the archive is committed and verified everywhere: a before-hook's failed
/// cleanup, the size check's verdict, retention, then the after-hooks. Each can still fail the
/// run (20, 35, 36); the archive stays.
fn after_commit(
    settings: &Settings,
    dirs: &Dirs,
    report: &Report,
    warnings: &mut Vec<String>,
) -> Result<(), Error> {
    cleanup_check(report)?;
    size_check(settings, report, warnings)?;
    if let Some(f) = &report.offsite_failure {
        return Err(Error::Remote {
            target: f.target.clone(),
            archive: report.archive.clone(),
            detail: f.detail.clone(),
            hint: f.hint.clone(),
        });
    }
    retention::after_run(settings, dirs)?;
    crate::dump::hook::after(settings, &report.archive)
}

/// Dumps: the before-hooks in config order, then every `[[dump]]` made and checked in the
/// spool. A failure runs the cleanups owed so far and stops the run (20) with nothing written.
fn dumps<'a>(settings: &'a Settings, dirs: &Dirs) -> Result<crate::dump::Prepared<'a>, Error> {
    crate::dump::prepare(settings, dirs)
}

/// A before-hook's cleanup that failed after the read: exit 20, the archive kept.
fn cleanup_check(report: &Report) -> Result<(), Error> {
    match &report.cleanup_failure {
        None => Ok(()),
        Some((name, error)) => Err(Error::Hook {
            name: name.clone(),
            step: "cleanup",
            error: Box::new(error.clone()),
            archive: Some(report.archive.clone()),
        }),
    }
}

/// Preflight: every check that can run before a byte is written (lock, keys, sources,
/// targets). What it clears holds the run lock.
fn preflight(settings: &Settings, dirs: &Dirs) -> Result<Cleared, Error> {
    systemd::status("preflight: checking lock, keys, sources and targets");
    crate::check::preflight::check(settings, dirs).into_result()
}

/// What the archive phase leaves for the ones after it.
struct Written {
    /// What the archive is.
    facts: Facts,
    /// The manifest, spooled, which the read-back checks every entry against.
    spooled: Spooled,
    /// The archive being written to each target, in config order.
    pendings: Vec<Box<dyn Pending>>,
}

/// One archive's name, time, counts and digests: the same on every target.
struct Facts {
    /// The archive's file name.
    name: String,
    /// Its creation time (in its name, its manifest and its receipts).
    created: OffsetDateTime,
    /// The host that wrote it.
    host: String,
    /// Counts, and the scan's unreadable, changed, skipped and required paths.
    archived: Archived,
    /// Its digests and sizes.
    closed: Closed,
    /// The dumps it holds, as receipts record them.
    dumps: Vec<crate::target::receipt::ReceiptDump>,
    /// A before-hook's cleanup that failed once everything was read.
    cleanup_failure: Option<crate::dump::hook::CleanupFailure>,
}

/// What closing the archive stream measured.
struct Closed {
    /// SHA-256 of `.vouch/manifest.json`.
    manifest_sha256: String,
    /// SHA-256 of `.vouch/SHA256SUMS`.
    sums_sha256: String,
    /// SHA-256 of the encrypted archive.
    archive_sha256: String,
    /// Encrypted archive bytes.
    archive_size: u64,
    /// Uncompressed tar bytes.
    tar_bytes: u64,
}

/// The archive stream, from tar down to every target's pending archive.
type Stream = TarWriter<ParallelWriter<StreamWriter<HashWriter<FanOut<Box<dyn Pending>>>>>>;

/// Archive: the sources are read once and streamed through tar -> gzip or zstd -> age into a
/// pending archive on every target at the same time, then the checked dumps; the before-hooks'
/// cleanups run once everything is read; the manifest closes the archive.
fn archive(
    settings: &Settings,
    dirs: &Dirs,
    keys: &Keys,
    stores: &[Box<dyn Target>],
    (created, name): (OffsetDateTime, String),
    (cleanups, mut dumps): crate::dump::Prepared<'_>,
) -> Result<Written, Error> {
    // The live files of SQLite dumps are left out: their snapshots are archived instead.
    let patterns = [
        settings.backup.exclude.clone(),
        crate::dump::live_file_excludes(settings),
    ]
    .concat();
    let exclude =
        Exclude::new(&patterns).map_err(|e| Error::Internal(format!("exclude patterns: {e}")))?;
    let walker = Walker::new(
        &settings.backup.sources,
        &exclude,
        settings.backup.one_file_system,
    );
    let host = host_name();
    let pendings = begin(settings, stores, &name)?;
    let (fan, errors) = fan_out(settings, dirs, pendings);
    let head = manifest_head(settings, &host, created);
    let mut manifest = ManifestWriter::new(head, &dirs.state).map_err(|e| errors.spool(e))?;
    let mut tar = open_stream(keys, settings.backup.compression, fan, &errors)?;
    let mut archived = write_sources(settings, dirs, &walker, &mut tar, &mut manifest, &errors)?;
    write_dumps(settings, dirs, &mut tar, &mut manifest, &mut dumps, &errors)?;
    crate::dump::entry::restore_lines_for(&mut dumps, settings.backup.compression);
    crate::dump::entry::record_all(&mut archived.tail, &dumps, &settings.backup.required_dumps);
    let cleanup_failure = cleanups.finish();
    let mut spooled = manifest
        .finish(&archived.tail)
        .map_err(|e| errors.spool(e))?;
    let (closed, pendings) = close_stream(tar, &mut spooled, created, &errors)?;
    Ok(Written {
        facts: Facts {
            name,
            created,
            host,
            archived,
            closed,
            dumps: crate::dump::entry::receipts(&dumps),
            cleanup_failure,
        },
        spooled,
        pendings,
    })
}

/// Writes every checked dump into the stream and the manifest, after the sources.
fn write_dumps(
    settings: &Settings,
    dirs: &Dirs,
    tar: &mut Stream,
    manifest: &mut ManifestWriter,
    dumps: &mut [crate::dump::Dumped],
    errors: &StreamErrors,
) -> Result<(), Error> {
    let failures = crate::dump::entry::Failures {
        write: &|e| errors.write(e),
        manifest: &|e| errors.spool(e),
        spool_dir: &crate::dump::spool_dir(settings, dirs),
    };
    crate::dump::entry::append_all(tar, manifest, dumps, &failures)
}

/// Begins the archive `name` on every target.
fn begin(
    settings: &Settings,
    stores: &[Box<dyn Target>],
    name: &str,
) -> Result<Vec<Box<dyn Pending>>, Error> {
    let mut pendings = Vec::new();
    for (t, store) in settings.targets.iter().zip(stores) {
        pendings.push(
            store
                .begin(name, journal::run_id())
                .map_err(|e| target_write(&t.name, &t.path, e))?,
        );
    }
    fault::point("after-create");
    Ok(pendings)
}

/// One writer over every pending archive, and what turns the stream's errors into the run's.
fn fan_out(
    settings: &Settings,
    dirs: &Dirs,
    pendings: Vec<Box<dyn Pending>>,
) -> (FanOut<Box<dyn Pending>>, StreamErrors) {
    let names: Vec<String> = settings.targets.iter().map(|t| t.name.clone()).collect();
    let temps: Vec<PathBuf> = pendings.iter().map(|p| p.path().to_owned()).collect();
    let fan = FanOut::new(pendings);
    let errors = StreamErrors {
        slot: fan.failure_slot(),
        names,
        temps,
        state: dirs.state.clone(),
    };
    (fan, errors)
}

/// The head of the archive's manifest.
fn manifest_head(settings: &Settings, host: &str, created: OffsetDateTime) -> Head {
    Head {
        format: "vouch-manifest".into(),
        version: 1,
        run_id: journal::run_id().into(),
        host: host.to_owned(),
        name: settings.backup.name.clone(),
        created: rfc3339(created),
    }
}

/// Stacks hash, age, the compression and tar on the fan-out.
fn open_stream(
    keys: &Keys,
    compression: Compression,
    fan: FanOut<Box<dyn Pending>>,
    errors: &StreamErrors,
) -> Result<Stream, Error> {
    let cipher = HashWriter::new(fan);
    let encrypted = crypt::encrypt(&keys.recipients, cipher).map_err(|e| errors.write(e))?;
    let codec = match compression {
        Compression::Gzip => Codec::Gzip(GZIP_LEVEL),
        Compression::Zstd => Codec::Zstd(crate::pipeline::zstd::ZSTD_LEVEL),
    };
    let compressed = ParallelWriter::with_codec(
        encrypted,
        codec,
        crate::pipeline::compress::default_threads(),
    );
    Ok(TarWriter::new(compressed))
}

/// Writes every source into the stream and the manifest, with progress.
fn write_sources(
    settings: &Settings,
    dirs: &Dirs,
    walker: &Walker<'_>,
    tar: &mut Stream,
    manifest: &mut ManifestWriter,
    errors: &StreamErrors,
) -> Result<Archived, Error> {
    let estimate = LastRun::load(&dirs.state).and_then(|l| l.tar_bytes);
    let mut progress = Progress::new("archiving", estimate);
    let mut first = true;
    let archived = archive_sources(walker, &settings.backup.required, tar, manifest, &mut |n| {
        if first && n > 0 {
            first = false;
            fault::point("mid-archive");
        }
        progress.update(n);
    })
    .map_err(|e| match e {
        ArchiveError::Source(m) => Error::Source {
            path: m.path,
            error: m.error,
        },
        ArchiveError::Write(e) => errors.write(e),
        ArchiveError::Spool(e) => errors.spool(e),
    })?;
    progress.finish();
    Ok(archived)
}

/// Closes the archive: the spooled manifest and sums go in last, then tar, the compression, age
/// and the hash are finished. Returns what was measured and the pending archives.
fn close_stream(
    mut tar: Stream,
    spooled: &mut Spooled,
    created: OffsetDateTime,
    errors: &StreamErrors,
) -> Result<(Closed, Vec<Box<dyn Pending>>), Error> {
    let write = |e| errors.write(e);
    let meta_header = |path: &'static str, size: u64| {
        Header::own_file(path.as_bytes(), size, created.unix_timestamp())
    };
    let manifest_sha256 = append_spooled(
        &mut tar,
        &meta_header(MANIFEST_PATH, spooled.manifest_len),
        spooled.manifest_reader().map_err(|e| errors.spool(e))?,
    )
    .map_err(write)?;
    let sums_sha256 = append_spooled(
        &mut tar,
        &meta_header(SUMS_PATH, spooled.sums_len),
        spooled.sums_reader().map_err(|e| errors.spool(e))?,
    )
    .map_err(write)?;
    let tar_bytes = tar.written() + 1024;
    let gz = tar.finish().map_err(write)?;
    let encrypted = gz.finish().map_err(write)?;
    let cipher = encrypted.finish().map_err(write)?;
    let (fan, archive_sha256, archive_size) = cipher.finish();
    let closed = Closed {
        manifest_sha256,
        sums_sha256,
        archive_sha256,
        archive_size,
        tar_bytes,
    };
    Ok((closed, fan.into_inner()))
}

/// Judge: the scan before anything is kept. Unreadable paths fail the run unless
/// `on-read-error = "warn"`; every required path must be in the archive.
fn judge(settings: &Settings, tail: &Tail) -> Result<(), Error> {
    if !tail.unreadable.is_empty() {
        match settings.backup.on_read_error {
            ReadErrorPolicy::Fail => return Err(Error::SourceRead(tail.unreadable.clone())),
            ReadErrorPolicy::Warn => log::warn!(
                "{} path(s) could not be read and are recorded in the manifest (on-read-error = \"warn\")",
                tail.unreadable.len()
            ),
        }
    }
    let missing: Vec<String> = tail
        .required
        .iter()
        .filter(|r| !r.present)
        .map(|r| why_required_failed(&r.path))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Required(missing));
    }
    Ok(())
}

/// How the archive was verified, and when.
struct Verified {
    /// Fully, or as ciphertext only (no identity).
    level: Level,
    /// RFC 3339 time the read-back ended.
    at: String,
}

/// Verify: every pending archive is made durable, then read back from its target and checked
/// against the manifest.
fn verify(
    settings: &Settings,
    keys: &Keys,
    facts: &Facts,
    spooled: &mut Spooled,
    pendings: &mut [Box<dyn Pending>],
) -> Result<Verified, Error> {
    for (t, p) in settings.targets.iter().zip(pendings.iter_mut()) {
        p.sync().map_err(|error| Error::Write {
            target: t.name.clone(),
            path: p.path().to_owned(),
            error,
        })?;
    }
    fault::point("before-verify");
    let level = if keys.identity.is_some() {
        Level::Full
    } else {
        Level::CiphertextOnly
    };
    for (t, p) in settings.targets.iter().zip(pendings.iter()) {
        read_back(&t.name, &**p, keys, facts, spooled)?;
    }
    if level == Level::CiphertextOnly {
        log::warn!(
            "archives were checked as ciphertext only (no identity): they were not decrypted, so their contents are unproven; set [encryption] identity"
        );
    }
    Ok(Verified {
        level,
        at: rfc3339(OffsetDateTime::now_utc()),
    })
}

/// Reads one pending archive back from its target and checks it: entry by entry against the
/// manifest with the identity, else as ciphertext.
fn read_back(
    target: &str,
    pending: &dyn Pending,
    keys: &Keys,
    facts: &Facts,
    spooled: &mut Spooled,
) -> Result<(), Error> {
    systemd::status(&format!("verifying {target}: reading the archive back"));
    let verify_error = |detail: String| Error::Verify {
        target: target.to_owned(),
        archive: facts.name.clone(),
        detail,
    };
    let file = pending
        .open_for_readback()
        .map_err(|e| verify_error(format!("cannot open it again: {e}")))?;
    check_stream(file, keys, facts, spooled).map_err(verify_error)
}

/// Checks the archive's bytes in `file` against what was written: entry by entry against the
/// manifest with the identity, else as ciphertext (size, digest, age header).
fn check_stream(
    file: impl Read,
    keys: &Keys,
    facts: &Facts,
    spooled: &mut Spooled,
) -> Result<(), String> {
    let closed = &facts.closed;
    let mut expected = Expected {
        manifest: spooled,
        manifest_sha256: &closed.manifest_sha256,
        sums_sha256: &closed.sums_sha256,
        archive_sha256: &closed.archive_sha256,
        archive_size: closed.archive_size,
        // The name was made from the configured compression, so it always says one.
        compression: Compression::of_archive(&facts.name).unwrap_or_default(),
    };
    let mut progress = Progress::new("verifying", Some(closed.tar_bytes));
    let result = match &keys.identity {
        Some(identity) => {
            check::verify_full(file, identity, &mut expected, &mut |n| progress.update(n))
        }
        None => check::check_ciphertext(file, &expected),
    };
    progress.finish();
    result.map_err(|m| m.0)
}

/// Off-site: the archive, committed on the first directory target, is copied to every S3
/// target in turn, then to every sftp target, each read back as the local copy was. Every
/// remote is tried; the first failure is kept for the end of the run (34), after its own
/// journal entry.
fn offsite(
    settings: &Settings,
    dirs: &Dirs,
    keys: &Keys,
    facts: &Facts,
    spooled: &mut Spooled,
    stores: &[Box<dyn Target>],
) -> (
    Vec<(String, crate::target::s3::copy::Copied)>,
    Option<OffsiteFailure>,
) {
    let mut copies = Vec::new();
    let mut first = None;
    if !settings.remotes.is_empty() || !settings.sftp.is_empty() {
        fault::point("before-offsite");
    }
    for remote in &settings.remotes {
        match copy_to(remote, dirs, keys, facts, spooled, &*stores[0]) {
            Ok(c) => {
                let readback = match c.readback {
                    crate::config::Readback::Full => "read back",
                    crate::config::Readback::Checksum => "checked by its digests, not read back",
                };
                let copy = RemoteCopy {
                    target: &remote.name,
                    url: &c.url,
                    duration: c.duration,
                    readback: c.readback.as_str(),
                };
                copied(dirs, facts, &copy, readback, |e| {
                    e.field_opt("VOUCH_REMOTE_VERSION_ID", c.version_id.as_deref())
                        .field_opt("VOUCH_RETAIN_UNTIL", c.retain_until.as_deref())
                });
                copies.push((remote.name.clone(), c));
            }
            Err(e) => failed(e, &mut first),
        }
    }
    for remote in &settings.sftp {
        match sftp_copy_to(remote, dirs, keys, facts, spooled, &*stores[0]) {
            Ok(c) => {
                let copy = RemoteCopy {
                    target: &remote.name,
                    url: &c.url,
                    duration: c.duration,
                    readback: "full",
                };
                copied(dirs, facts, &copy, "read back", |e| e);
            }
            Err(e) => failed(e, &mut first),
        }
    }
    (copies, first)
}

/// A finished off-site copy, as the journal and `s3-copies.json` record it.
struct RemoteCopy<'a> {
    target: &'a str,
    url: &'a str,
    duration: std::time::Duration,
    readback: &'static str,
}

/// The `remote-copied` entry (with the kind's own fields from `more`) and the last-copy record.
fn copied(
    dirs: &Dirs,
    facts: &Facts,
    c: &RemoteCopy<'_>,
    how: &str,
    more: impl FnOnce(Entry) -> Entry,
) {
    let entry = Entry::event(
        Event::RemoteCopied,
        format!("archive {} copied to {} and {how}", facts.name, c.url),
    )
    .field("VOUCH_TARGET", c.target)
    .field("VOUCH_ARCHIVE", c.url)
    .field("VOUCH_ARCHIVE_SHA256", &facts.closed.archive_sha256)
    .field("VOUCH_BYTES_OUT", facts.closed.archive_size)
    .field("VOUCH_DURATION_USEC", c.duration.as_micros())
    .field("VOUCH_READBACK", c.readback);
    more(entry).emit();
    let last = crate::target::s3::last::Copy {
        archive: facts.name.clone(),
        url: c.url.to_owned(),
        copied: rfc3339(OffsetDateTime::now_utc()),
        created: rfc3339(facts.created),
        readback: Some(c.readback.to_owned()),
    };
    if let Err(e) = crate::target::s3::last::record(&dirs.state, c.target, last, journal::run_id())
    {
        log::warn!("cannot record the copy to {} for status: {e}", c.target);
    }
}

/// A failed off-site copy: logged, and kept when it is the first.
fn failed(e: Error, first: &mut Option<OffsiteFailure>) {
    log::error!("{e}");
    if let Error::Remote {
        target,
        detail,
        hint,
        ..
    } = e
    {
        first.get_or_insert(OffsiteFailure {
            target,
            detail,
            hint,
        });
    }
}

/// The committed archive on the first target, its receipt made for `target`, and its data.
fn local_source<'a>(
    target: &str,
    facts: &'a Facts,
    local: &'a dyn Target,
    failed: &dyn Fn(String, String) -> Error,
) -> Result<crate::target::s3::copy::Source<'a>, Error> {
    let local_hint = || {
        "The local archive could not be read for its off-site copy: run `vouch verify --latest` and check the disk.".to_owned()
    };
    let archive = local
        .find(&facts.name)
        .map_err(|e| failed(e.to_string(), local_hint()))?
        .ok_or_else(|| {
            failed(
                "the committed archive is not on the first target".into(),
                local_hint(),
            )
        })?;
    let mut receipt = archive
        .receipt
        .clone()
        .ok_or_else(|| failed("the committed archive has no receipt".into(), local_hint()))?;
    receipt.target = target.to_owned();
    receipt.parts = Vec::new();
    let data = local
        .read(&archive)
        .map_err(|e| failed(e.to_string(), local_hint()))?;
    Ok(crate::target::s3::copy::Source {
        archive: &facts.name,
        size: facts.closed.archive_size,
        data,
        receipt: receipt.to_json(),
    })
}

/// One sftp target's copy of the archive.
fn sftp_copy_to(
    remote: &crate::config::SftpRemote,
    dirs: &Dirs,
    keys: &Keys,
    facts: &Facts,
    spooled: &mut Spooled,
    local: &dyn Target,
) -> Result<crate::target::sftp::copy::Copied, Error> {
    let failed = |detail: String, hint: String| Error::Remote {
        target: remote.name.clone(),
        archive: facts.name.clone(),
        detail,
        hint,
    };
    let sftp = crate::target::sftp::Sftp::open(remote, dirs.credentials.as_deref())
        .map_err(|(d, h)| failed(d, h))?;
    let source = local_source(&remote.name, facts, local, &failed)?;
    crate::target::sftp::copy::copy(&sftp, &dirs.state, journal::run_id(), source, &mut |body| {
        check_stream(body, keys, facts, spooled)
    })
    .map_err(|f| failed(f.detail, f.hint))
}

/// One S3 target's copy of the archive.
fn copy_to(
    remote: &crate::config::Remote,
    dirs: &Dirs,
    keys: &Keys,
    facts: &Facts,
    spooled: &mut Spooled,
    local: &dyn Target,
) -> Result<crate::target::s3::copy::Copied, Error> {
    let failed = |detail: String, hint: String| Error::Remote {
        target: remote.name.clone(),
        archive: facts.name.clone(),
        detail,
        hint,
    };
    let s3 = crate::target::s3::S3::open(remote, dirs.credentials.as_deref())
        .map_err(|(d, h)| failed(d, h))?;
    let source = local_source(&remote.name, facts, local, &failed)?;
    crate::target::s3::copy::copy(&s3, &dirs.state, journal::run_id(), source, &mut |body| {
        check_stream(body, keys, facts, spooled)
    })
    .map_err(|f| failed(f.detail, f.hint))
}

/// Commit: each target's archive gets its final names and its receipt, target after target.
/// A stop (SIGTERM) waits until every target is done.
fn commit(
    settings: &Settings,
    facts: &Facts,
    verified: &Verified,
    pendings: Vec<Box<dyn Pending>>,
) -> Result<Vec<Committed>, Error> {
    fault::point("before-commit");
    let _commit = crate::systemd::stop::commit_section();
    let mut committed = Vec::new();
    for (i, p) in pendings.into_iter().enumerate() {
        let t = &settings.targets[i];
        let temp = p.path().to_owned();
        let split = p.is_split();
        let receipt_name = Receipt::file_name(&facts.name, split);
        let receipt = receipt(settings, t, facts, verified, p.final_names(), split);
        // The archive's files and its receipt appear together, or not at all.
        let placed = p
            .commit(&receipt_name, &receipt.to_json())
            .map_err(|error| commit_failed(settings, i, &facts.name, &committed, temp, error))?;
        fault::point("after-commit");
        announce(t, facts, verified.level, &placed);
        committed.push(Committed {
            target: t.name.clone(),
            path: placed.path,
        });
    }
    Ok(committed)
}

/// The receipt of the archive on target `t`, whose final file names are `parts`.
fn receipt(
    settings: &Settings,
    t: &config::Target,
    facts: &Facts,
    verified: &Verified,
    parts: Vec<String>,
    split: bool,
) -> Receipt {
    let (stats, tail, closed) = (&facts.archived.stats, &facts.archived.tail, &facts.closed);
    Receipt {
        format: crate::target::receipt::FORMAT.into(),
        version: crate::target::receipt::VERSION,
        run_id: journal::run_id().into(),
        host: facts.host.clone(),
        name: settings.backup.name.clone(),
        target: t.name.clone(),
        archive: facts.name.clone(),
        parts: if split { parts } else { Vec::new() },
        created: rfc3339(facts.created),
        vouch_version: env!("CARGO_PKG_VERSION").into(),
        archive_size: closed.archive_size,
        archive_sha256: closed.archive_sha256.clone(),
        files: stats.files,
        dirs: stats.dirs,
        symlinks: stats.symlinks,
        bytes_in: stats.bytes,
        tar_bytes: closed.tar_bytes,
        required: tail.required.clone(),
        unreadable: tail.unreadable.len() as u64,
        changed: tail.changed.len() as u64,
        skipped: tail.skipped.len() as u64,
        verified_at: verified.at.clone(),
        verification: verified.level.name().into(),
        dumps: facts.dumps.clone(),
    }
}

/// The journal entries of an archive committed on target `t`: written, then verified.
fn announce(t: &config::Target, facts: &Facts, level: Level, placed: &Placed) {
    let path = placed.path.display();
    Entry::event(
        Event::ArchiveWritten,
        format!("target {}: wrote {}", t.name, placed.wrote),
    )
    .field("VOUCH_TARGET", &t.name)
    .field("VOUCH_ARCHIVE", &path)
    .field("VOUCH_ARCHIVE_SHA256", &facts.closed.archive_sha256)
    .field("VOUCH_BYTES_OUT", facts.closed.archive_size)
    .emit();
    let verified = Entry::event(
        Event::ArchiveVerified,
        format!(
            "target {}: verified {} ({})",
            t.name,
            facts.name,
            level.name()
        ),
    )
    .field("VOUCH_TARGET", &t.name)
    .field("VOUCH_ARCHIVE", &path)
    .field("VOUCH_ARCHIVE_SHA256", &facts.closed.archive_sha256)
    .field("VOUCH_FILES", facts.archived.stats.files);
    let verified = if level == Level::CiphertextOnly {
        verified
            .level(log::Level::Warn)
            .field("VOUCH_HINT", KeyError::NoIdentity.hint())
    } else {
        verified
    };
    verified.emit();
}

/// The size check: a new archive whose size is outside `size-tolerance` of recent ones fails
/// the run (`on-anomaly = "fail"`, exit 35) or is a warning, logged and added to `warnings` so
/// that notifications carry it.
fn size_check(
    settings: &Settings,
    report: &Report,
    warnings: &mut Vec<String>,
) -> Result<(), Error> {
    let Some(a) = health::size_anomaly(settings, &report.archive, report.archive_size) else {
        return Ok(());
    };
    let error = Error::Anomaly {
        archive: report.archive.clone(),
        size: a.size,
        median: a.median,
        tolerance: a.tolerance,
    };
    match settings.health.on_anomaly {
        AnomalyPolicy::Fail => Err(error),
        AnomalyPolicy::Warn => {
            warnings.push(format!("size anomaly: {error}"));
            Entry::error(format!("size anomaly: {error}"))
                .level(log::Level::Warn)
                .field("VOUCH_ARCHIVE", &report.archive)
                .field_opt("VOUCH_HINT", error.hint())
                .emit();
            Ok(())
        }
    }
}

/// A required path that is not in the archive, with the reason as it stands now: missing,
/// empty (a 0-byte file or a directory with nothing archived in it), or present and still not
/// archived (excluded, unreadable, or another file type).
fn why_required_failed(path: &str) -> String {
    if path.starts_with(crate::config::REQUIRED_DUMP_PREFIX) {
        return format!("{path} (not in the archive: that database is no longer on the server, or it is excluded)");
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => format!("{path} (missing)"),
        Err(e) => format!("{path} (cannot be examined: {e})"),
        Ok(m) if m.is_file() && m.len() == 0 => format!("{path} (empty: 0 bytes)"),
        Ok(m) if m.is_dir() => format!("{path} (empty: nothing archived in this directory)"),
        Ok(_) => format!("{path} (not archived: excluded, unreadable or not a regular file)"),
    }
}

/// The error for a commit that failed on target `index`: a plain write error when no target
/// holds the archive yet, else one that names the targets that do and the ones that do not.
fn commit_failed(
    settings: &Settings,
    index: usize,
    archive: &str,
    committed: &[Committed],
    temp: PathBuf,
    error: io::Error,
) -> Error {
    let target = settings.targets[index].name.clone();
    if committed.is_empty() {
        return Error::Write {
            target,
            path: temp,
            error,
        };
    }
    Error::PartialCommit {
        target,
        archive: archive.to_owned(),
        committed: committed.iter().map(|c| c.target.clone()).collect(),
        failed: settings.targets[index..]
            .iter()
            .map(|t| t.name.clone())
            .collect(),
        error,
    }
}

/// Copies a spooled `.vouch/` file into the archive and returns its SHA-256.
fn append_spooled<W: Write>(
    tar: &mut TarWriter<W>,
    header: &Header<'_>,
    mut data: impl Read,
) -> io::Result<String> {
    use sha2::Digest;
    tar.append_header(header)?;
    let mut hasher = sha2::Sha256::new();
    match tar.append_file_data(&mut data, header.size, &mut |b| hasher.update(b)) {
        Ok(outcome) if !outcome.shrank && !outcome.grew => {
            Ok(crate::pipeline::io::hex(&hasher.finalize()))
        }
        Ok(_) => Err(io::Error::other("the manifest spool changed size")),
        Err(crate::pipeline::tarstream::DataError::Read(e))
        | Err(crate::pipeline::tarstream::DataError::Write(e)) => Err(e),
    }
}

/// Turns the errors that surface from the archive stream into the run's: a write error naming
/// the target that failed, or a state error for the manifest's spool.
struct StreamErrors {
    /// Where the fan-out keeps its first failure.
    slot: FailureSlot,
    /// The targets' names, in fan-out order.
    names: Vec<String>,
    /// Their (first) temporary files.
    temps: Vec<PathBuf>,
    /// The state directory, which holds the spool.
    state: PathBuf,
}

impl StreamErrors {
    /// An error that surfaced from the archive stream: the failing target's write error, when
    /// a target failed.
    fn write(&self, error: io::Error) -> Error {
        let failure = self.slot.lock().ok().and_then(|mut f| f.take());
        match failure {
            Some(f) => Error::Write {
                target: self.names.get(f.index).cloned().unwrap_or_default(),
                path: self.temps.get(f.index).cloned().unwrap_or_default(),
                error: f.error,
            },
            None => Error::Internal(format!("the archive stream failed: {error}")),
        }
    }

    /// An error of the manifest's spool in the state directory.
    fn spool(&self, error: io::Error) -> Error {
        Error::State {
            path: self.state.clone(),
            error,
        }
    }
}
