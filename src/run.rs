//! `vouch run`: one backup, from preflight to a verified archive on every target.
//!
//! The order is the product: every check that can run before a byte is written runs first
//! (lock, keys, sources, targets); the sources are read once and streamed through
//! tar -> gzip -> age into a temporary file on every target at the same time; the manifest
//! closes the archive; unreadable and required paths are judged; every temporary file is
//! fsynced and read back from its target; only then does each get its final name and its
//! receipt. Any failure before the rename leaves nothing under a final name.

use crate::check::preflight;
use crate::check::verify::{self, Expected, Level};
use crate::config::{ReadErrorPolicy, Settings};
use crate::error::Error;
use crate::host::dirs::Dirs;
use crate::host::fault;
use crate::pipeline::archive::{archive_sources, ArchiveError, Stats};
use crate::pipeline::compress::ParallelGzWriter;
use crate::pipeline::crypt::{self, KeyError};
use crate::pipeline::io::{FailureSlot, FanOut, HashWriter};
use crate::pipeline::manifest::{Head, ManifestWriter, MANIFEST_PATH, SUMS_PATH};
use crate::pipeline::tarstream::{Header, TarWriter};
use crate::pipeline::walk::{Exclude, Walker};
use crate::systemd::journal::{self, Entry, Event};
use crate::systemd::sdnotify::{self as systemd, Progress};
use crate::target::receipt::Receipt;
use crate::target::{self, local, Target};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The gzip level: the same as `gzip -6`, the size the archive is measured against.
pub const GZIP_LEVEL: u32 = 6;

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
    /// The run lock, held for as long as the report lives, so that what follows the commit
    /// (retention) runs under it.
    pub lock: std::sync::Arc<crate::host::lock::RunLock>,
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
        let name = format!("{}-{}.tar.gz.age", settings.backup.name, stamp(now));
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

/// Runs one backup.
pub fn run(settings: &Settings, dirs: &Dirs) -> Result<Report, Error> {
    let started = Instant::now();
    systemd::status("preflight: checking lock, keys, sources and targets");
    let cleared = preflight::check(settings, dirs).into_result()?;
    let lock = cleared.lock;
    let keys = cleared.keys;
    let exclude = Exclude::new(&settings.backup.exclude)
        .map_err(|e| Error::Internal(format!("exclude patterns: {e}")))?;
    let walker = Walker::new(
        &settings.backup.sources,
        &exclude,
        settings.backup.one_file_system,
    );

    let stores: Vec<Box<dyn Target>> = settings.targets.iter().map(target::open).collect();
    let (created, archive_name) = pick_name(settings, &stores);
    let host = host_name();
    Entry::event(
        Event::RunStarted,
        format!("backup {} started", settings.backup.name),
    )
    .field("VOUCH_ARCHIVE", &archive_name)
    .emit();

    let mut pendings = Vec::new();
    for (t, store) in settings.targets.iter().zip(&stores) {
        pendings.push(
            store
                .begin(&archive_name, journal::run_id())
                .map_err(|e| target_write(&t.name, &t.path, e))?,
        );
    }
    fault::point("after-create");

    let names: Vec<String> = settings.targets.iter().map(|t| t.name.clone()).collect();
    let temps: Vec<PathBuf> = pendings.iter().map(|p| p.path().to_owned()).collect();
    let fan = FanOut::new(pendings);
    let slot = fan.failure_slot();
    let write_error = |error: io::Error| -> Error { classify_write(&slot, &names, &temps, error) };

    let head = Head {
        format: "vouch-manifest".into(),
        version: 1,
        run_id: journal::run_id().into(),
        host: host.clone(),
        name: settings.backup.name.clone(),
        created: rfc3339(created),
    };
    let spool_error = |error| Error::State {
        path: dirs.state.clone(),
        error,
    };
    let mut manifest = ManifestWriter::new(head, &dirs.state).map_err(spool_error)?;
    let cipher = HashWriter::new(fan);
    let encrypted = crypt::encrypt(&keys.recipients, cipher).map_err(write_error)?;
    let gz = ParallelGzWriter::new(
        encrypted,
        GZIP_LEVEL,
        crate::pipeline::compress::default_threads(),
    );
    let mut tar = TarWriter::new(gz);

    let estimate = LastRun::load(&dirs.state).and_then(|l| l.tar_bytes);
    let mut progress = Progress::new("archiving", estimate);
    let mut first = true;
    let archived = archive_sources(
        &walker,
        &settings.backup.required,
        &mut tar,
        &mut manifest,
        &mut |n| {
            if first && n > 0 {
                first = false;
                fault::point("mid-archive");
            }
            progress.update(n);
        },
    )
    .map_err(|e| match e {
        ArchiveError::Source(m) => Error::Source {
            path: m.path,
            error: m.error,
        },
        ArchiveError::Write(e) => write_error(e),
        ArchiveError::Spool(e) => spool_error(e),
    })?;
    progress.finish();

    let mut spooled = manifest.finish(&archived.tail).map_err(spool_error)?;
    let meta_header = |path: &'static str, size: u64| {
        Header::own_file(path.as_bytes(), size, created.unix_timestamp())
    };
    let manifest_sha256 = append_spooled(
        &mut tar,
        &meta_header(MANIFEST_PATH, spooled.manifest_len),
        spooled.manifest_reader().map_err(spool_error)?,
    )
    .map_err(write_error)?;
    let sums_sha256 = append_spooled(
        &mut tar,
        &meta_header(SUMS_PATH, spooled.sums_len),
        spooled.sums_reader().map_err(spool_error)?,
    )
    .map_err(write_error)?;
    let tar_bytes = tar.written() + 1024;
    let gz = tar.finish().map_err(write_error)?;
    let encrypted = gz.finish().map_err(write_error)?;
    let cipher = encrypted.finish().map_err(write_error)?;
    let (fan, archive_sha256, archive_size) = cipher.finish();
    let mut pendings = fan.into_inner();

    // Judge the scan before anything is kept.
    let tail = &archived.tail;
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

    // Make every copy durable, then read every copy back from its target.
    for (i, p) in pendings.iter_mut().enumerate() {
        p.sync().map_err(|error| Error::Write {
            target: settings.targets[i].name.clone(),
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
    for (i, p) in pendings.iter().enumerate() {
        let target = &settings.targets[i].name;
        systemd::status(&format!("verifying {target}: reading the archive back"));
        let verify_error = |detail: String| Error::Verify {
            target: target.clone(),
            archive: archive_name.clone(),
            detail,
        };
        let file = p
            .open_for_readback()
            .map_err(|e| verify_error(format!("cannot open it again: {e}")))?;
        let mut expected = Expected {
            manifest: &mut spooled,
            manifest_sha256: &manifest_sha256,
            sums_sha256: &sums_sha256,
            archive_sha256: &archive_sha256,
            archive_size,
        };
        let mut vprogress = Progress::new("verifying", Some(tar_bytes));
        let result = match &keys.identity {
            Some(identity) => {
                verify::verify_full(file, identity, &mut expected, &mut |n| vprogress.update(n))
            }
            None => verify::check_ciphertext(file, &expected),
        };
        vprogress.finish();
        result.map_err(|m| verify_error(m.0))?;
    }
    if level == Level::CiphertextOnly {
        log::warn!(
            "archives were checked as ciphertext only (no identity): they were not decrypted, so their contents are unproven; set [encryption] identity"
        );
    }
    let verified_at = rfc3339(OffsetDateTime::now_utc());
    fault::point("before-commit");

    // Commit: final names, then receipts. A stop (SIGTERM) waits until every target is done.
    let _commit = crate::systemd::stop::commit_section();
    let mut committed = Vec::new();
    for (i, p) in pendings.into_iter().enumerate() {
        let t = &settings.targets[i];
        let temp = p.path().to_owned();
        let parts = p.final_names();
        let split = p.is_split();
        let receipt_name = Receipt::file_name(&archive_name, split);
        let receipt = Receipt {
            format: crate::target::receipt::FORMAT.into(),
            version: crate::target::receipt::VERSION,
            run_id: journal::run_id().into(),
            host: host.clone(),
            name: settings.backup.name.clone(),
            target: t.name.clone(),
            archive: archive_name.clone(),
            parts: if split { parts } else { Vec::new() },
            created: rfc3339(created),
            vouch_version: env!("CARGO_PKG_VERSION").into(),
            archive_size,
            archive_sha256: archive_sha256.clone(),
            files: archived.stats.files,
            dirs: archived.stats.dirs,
            symlinks: archived.stats.symlinks,
            bytes_in: archived.stats.bytes,
            tar_bytes,
            required: tail.required.clone(),
            unreadable: tail.unreadable.len() as u64,
            changed: tail.changed.len() as u64,
            skipped: tail.skipped.len() as u64,
            verified_at: verified_at.clone(),
            verification: level.name().into(),
        };
        // The archive's files and its receipt appear together, or not at all.
        let placed = match p.commit(&receipt_name, &receipt.to_json()) {
            Ok(placed) => placed,
            Err(error) => {
                return Err(commit_failed(
                    settings,
                    i,
                    &archive_name,
                    &committed,
                    temp,
                    error,
                ))
            }
        };
        let path = placed.path;
        fault::point("after-commit");
        Entry::event(
            Event::ArchiveWritten,
            format!("target {}: wrote {}", t.name, placed.wrote),
        )
        .field("VOUCH_TARGET", &t.name)
        .field("VOUCH_ARCHIVE", path.display())
        .field("VOUCH_ARCHIVE_SHA256", &archive_sha256)
        .field("VOUCH_BYTES_OUT", archive_size)
        .emit();
        let verified = Entry::event(
            Event::ArchiveVerified,
            format!(
                "target {}: verified {} ({})",
                t.name,
                archive_name,
                level.name()
            ),
        )
        .field("VOUCH_TARGET", &t.name)
        .field("VOUCH_ARCHIVE", path.display())
        .field("VOUCH_ARCHIVE_SHA256", &archive_sha256)
        .field("VOUCH_FILES", archived.stats.files);
        let verified = if level == Level::CiphertextOnly {
            verified
                .level(log::Level::Warn)
                .field("VOUCH_HINT", KeyError::NoIdentity.hint())
        } else {
            verified
        };
        verified.emit();
        committed.push(Committed {
            target: t.name.clone(),
            path,
        });
    }

    Ok(Report {
        archive: archive_name,
        committed,
        stats: archived.stats,
        tar_bytes,
        archive_size,
        archive_sha256,
        level,
        duration: started.elapsed(),
        lock: std::sync::Arc::new(lock),
    })
}

/// A required path that is not in the archive, with the reason as it stands now: missing,
/// empty (a 0-byte file or a directory with nothing archived in it), or present and still not
/// archived (excluded, unreadable, or another file type).
fn why_required_failed(path: &str) -> String {
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

/// Turns an error that surfaced from the archive stream into a write error naming the target
/// that failed, when a target failed.
fn classify_write(
    slot: &FailureSlot,
    names: &[String],
    temps: &[PathBuf],
    error: io::Error,
) -> Error {
    let failure = slot.lock().ok().and_then(|mut f| f.take());
    match failure {
        Some(f) => Error::Write {
            target: names.get(f.index).cloned().unwrap_or_default(),
            path: temps.get(f.index).cloned().unwrap_or_default(),
            error: f.error,
        },
        None => Error::Internal(format!("the archive stream failed: {error}")),
    }
}
