//! The archives on a target, and what the state directory knows about them.
//!
//! A target directory holds, per run, the archive (`NAME-STAMP.tar.gz.age`, or its parts
//! `....tar.gz.age.000`, `.001`, ...; `.tar.zst.age` for zstd, see [`Compression`]) and its
//! receipt. Archives of both compressions are listed side by side: a target keeps its gzip
//! archives, and their retention, after the config switched to zstd. `list`, `status`, `verify`, `restore` and
//! `prune` all start from the listing ([`crate::target::Target::scan`]; for a directory,
//! [`scan`]), which groups those files by archive and reads each receipt without decrypting
//! anything. Archives whose receipt is missing or unreadable are listed too, so that the
//! commands can point at them instead of skipping them silently. An archive whose commit or
//! deletion is under way, or was interrupted (a `.vouch-commit.` or `.vouch-deleting.` marker
//! for it exists, see [`crate::target::local`]), is not listed: it is not an archive until the
//! commit is finished, and no longer one once its deletion has begun.
//!
//! This is the one place receipts are read. A receipt is read without following a link, without
//! blocking and up to [`bounded::RECEIPT_CAP`]; it must pass [`Receipt::check`] (format, version,
//! the archive's own part names, a creation time not in the future), else the archive is listed
//! with the reason in `receipt_problem`. Data files are opened the same way (no blocking, regular
//! files only), so a FIFO under an archive's name cannot hang a command.
//!
//! Verification results live in `$STATE_DIRECTORY/verified.json` ([`VerifyLog`]), keyed by
//! `TARGET/ARCHIVE`: archives are never rewritten after their rename.

use crate::config::Compression;
use crate::host::bounded::{self, Links};
use crate::target::local::{self, drop_cache, part_name, TEMP_PREFIX};
use crate::target::receipt::Receipt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Whether `file_name` is an archive's name (`....tar.gz.age` or `....tar.zst.age`), not that
/// of a part or a receipt.
pub fn is_archive_name(file_name: &str) -> bool {
    Compression::of_archive(file_name).is_some()
}

/// One archive on one target.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The archive's file name (`NAME-STAMP.tar.gz.age` or `.tar.zst.age`), also for a split
    /// archive.
    pub name: String,
    /// The directory holding it.
    pub dir: PathBuf,
    /// Its files in order: the archive itself, or its parts. Files that do not exist are not
    /// listed (so a split archive with a missing part has a gap only the receipt reveals).
    pub files: Vec<PathBuf>,
    /// The receipt, when one was found and parsed.
    pub receipt: Option<Receipt>,
    /// Why there is no usable receipt (missing, unreadable, or for another archive).
    pub receipt_problem: Option<String>,
    /// The receipt's file, when it exists.
    pub receipt_path: Option<PathBuf>,
    /// Creation time: the receipt's, else the time stamp in the name.
    pub created: Option<OffsetDateTime>,
    /// The data's size as the listing found it, for an archive whose files are not paths on
    /// this host (an object in a bucket, [`Archive::remote`]); `None` for a directory's, whose
    /// sizes are read from disk.
    pub listed_size: Option<u64>,
}

impl Archive {
    /// Whether the archive is split into parts.
    pub fn is_split(&self) -> bool {
        match &self.receipt {
            Some(r) => !r.parts.is_empty(),
            None => self
                .files
                .first()
                .is_some_and(|f| *f != self.dir.join(&self.name)),
        }
    }

    /// An archive listed from object storage: its one object `url` of `size` bytes (absent:
    /// only the receipt was listed), with the receipt as read from its receipt object at
    /// `receipt_url` (`None`: there is none; `Some(Err)`: the reason it is unusable).
    pub fn remote(
        name: &str,
        dir: &Path,
        size: Option<u64>,
        receipt_url: Option<PathBuf>,
        receipt: Option<Result<Receipt, String>>,
    ) -> Archive {
        let (receipt, receipt_problem) = match receipt {
            None => (None, Some("no receipt".to_owned())),
            Some(Ok(r)) => (Some(r), None),
            Some(Err(problem)) => (None, Some(problem)),
        };
        let created = receipt
            .as_ref()
            .and_then(|r| parse_time(&r.created))
            .or_else(|| created_from_name(name));
        Archive {
            name: name.to_owned(),
            dir: dir.to_owned(),
            files: size.map(|_| dir.join(name)).into_iter().collect(),
            receipt,
            receipt_problem,
            receipt_path: receipt_url,
            created,
            listed_size: Some(size.unwrap_or(0)),
        }
    }

    /// The files the receipt says should exist and do not (missing parts, or the archive). An
    /// archive in object storage is judged by its listing.
    pub fn missing_files(&self) -> Vec<PathBuf> {
        if self.listed_size.is_some() {
            return self.missing_when_listed();
        }
        let expected: Vec<PathBuf> = match &self.receipt {
            Some(r) if !r.parts.is_empty() => r.parts.iter().map(|p| self.dir.join(p)).collect(),
            _ if self.is_split() => return Vec::new(),
            _ => vec![self.dir.join(&self.name)],
        };
        expected.into_iter().filter(|p| !p.exists()).collect()
    }

    /// Every file that belongs to the archive on disk: data files and the receipt.
    pub fn all_files(&self) -> Vec<PathBuf> {
        let mut out = self.files.clone();
        out.extend(self.receipt_path.iter().cloned());
        out
    }

    /// The total size of its data files on disk (in object storage: as listed).
    pub fn size_on_disk(&self) -> u64 {
        if let Some(size) = self.listed_size {
            return size;
        }
        self.files
            .iter()
            .filter_map(|f| fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Opens the data files as one stream, in order, each with its cached pages dropped first
    /// so that the bytes come from the device ([`crate::target::Target::read`]).
    pub(in crate::target) fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        open_files(&self.files)
    }

    /// Opens every data file before any is read, for as many passes as a check needs. An open
    /// file stays readable after it is unlinked, so an archive that retention deletes while it
    /// is being read (`vouch verify` does not take the run lock) is read to its end
    /// ([`crate::target::Target::open`]).
    pub(in crate::target) fn open_all(&self) -> io::Result<OpenFiles> {
        let mut files = Vec::with_capacity(self.files.len());
        for f in &self.files {
            let file = open_data(f)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", f.display())))?;
            files.push(std::sync::Arc::new(file));
        }
        Ok(OpenFiles { files })
    }

    /// The files the receipt names that did not exist when the archive was listed (by
    /// [`scan`]), unlike [`Archive::missing_files`], which looks again now.
    pub fn missing_when_listed(&self) -> Vec<PathBuf> {
        let expected: Vec<PathBuf> = match &self.receipt {
            Some(r) if !r.parts.is_empty() => r.parts.iter().map(|p| self.dir.join(p)).collect(),
            _ if self.is_split() => return Vec::new(),
            _ => vec![self.dir.join(&self.name)],
        };
        expected
            .into_iter()
            .filter(|p| !self.files.contains(p))
            .collect()
    }

    /// Whether the archive is being deleted or is gone: retention renames its receipt to a
    /// deletion marker before it removes any data file, so either the marker exists or none of
    /// the data files listed for the archive does ([`crate::target::Target::is_gone`]).
    pub(in crate::target) fn is_gone(&self) -> bool {
        let marked = self.receipt_path.as_ref().is_some_and(|r| {
            r.file_name().is_some_and(|n| {
                let marker = format!("{}{}", local::DELETE_PREFIX, n.to_string_lossy());
                fs::symlink_metadata(self.dir.join(marker)).is_ok()
            })
        });
        marked
            || self.files.iter().all(|f| {
                fs::symlink_metadata(f).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
            })
    }
}

/// An archive's data files, all open: each [`OpenFiles::reader`] reads them from the start, in
/// order, through the same descriptors, whatever happened to their names meanwhile.
#[derive(Debug, Clone)]
pub(in crate::target) struct OpenFiles {
    files: Vec<std::sync::Arc<File>>,
}

impl OpenFiles {
    /// One pass over the archive from its first byte, with the cached pages of every file
    /// dropped first so that the bytes come from the device. Passes may overlap: each reads at
    /// its own offsets.
    pub fn reader(&self) -> io::Result<Box<dyn Read + Send>> {
        let mut chain: Box<dyn Read + Send> = Box::new(io::empty());
        for f in &self.files {
            drop_cache(f)?;
            chain = Box::new(Read::chain(
                chain,
                ReadAt {
                    file: f.clone(),
                    offset: 0,
                },
            ));
        }
        Ok(chain)
    }
}

impl crate::target::Opened for OpenFiles {
    fn reader(&self) -> io::Result<Box<dyn Read + Send>> {
        OpenFiles::reader(self)
    }
}

/// Reads a shared open file from its own offset (`pread`), leaving the descriptor's alone.
struct ReadAt {
    file: std::sync::Arc<File>,
    offset: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(&*self.file, buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Opens one data file of an archive: without blocking (a FIFO under its name fails at once)
/// and only when it is a regular file.
fn open_data(path: &Path) -> io::Result<File> {
    bounded::open_regular(path, Links::Follow)
}

/// Opens `files` as one stream, in order, each with its cached pages dropped first.
fn open_files(files: &[PathBuf]) -> io::Result<Box<dyn Read + Send>> {
    let mut chain: Box<dyn Read + Send> = Box::new(io::empty());
    for f in files {
        let file = open_data(f)?;
        drop_cache(&file)?;
        chain = Box::new(Read::chain(chain, file));
    }
    Ok(chain)
}

/// The creation time in an archive name `NAME-YYYYMMDDTHHMMSSZ.tar.gz.age` (or `.tar.zst.age`).
pub fn created_from_name(name: &str) -> Option<OffsetDateTime> {
    let stem = name.strip_suffix(Compression::of_archive(name)?.archive_suffix())?;
    let stamp = stem.rsplit('-').next()?;
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(stamp, &f)
        .ok()
        .map(|t| t.assume_utc())
}

/// Whether an archive file name belongs to the backup `name` (`NAME-YYYYMMDDTHHMMSSZ...`).
/// Targets may be shared between hosts: every command judges, verifies and prunes only the
/// archives of its own backup name.
pub fn is_own(archive: &str, name: &str) -> bool {
    archive
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| !rest.contains('-'))
        && created_from_name(archive).is_some()
}

/// Parses an RFC 3339 time as written by vouch.
pub fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// What a directory entry's name says it is.
enum Kind<'a> {
    Archive(&'a str),
    Part(&'a str, usize),
    Receipt(&'a str),
}

fn classify(file_name: &str) -> Option<Kind<'_>> {
    if file_name.starts_with('.') || file_name.starts_with(TEMP_PREFIX) {
        return None;
    }
    if let Some(a) = Receipt::archive_of(file_name) {
        return Some(Kind::Receipt(a));
    }
    if is_archive_name(file_name) {
        return Some(Kind::Archive(file_name));
    }
    let (stem, index) = file_name.rsplit_once('.')?;
    if is_archive_name(stem) && index.len() == 3 && index.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Kind::Part(stem, index.parse().ok()?));
    }
    None
}

/// Every archive in `dir`, oldest first (by name, which sorts by time for one backup name): the
/// listing of a directory target, which the commands reach as [`crate::target::Target::scan`].
pub fn scan(dir: &Path) -> io::Result<Vec<Archive>> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut plain: BTreeSet<String> = BTreeSet::new();
    let mut parts: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut receipts: BTreeMap<String, PathBuf> = BTreeMap::new();
    let unsettled: BTreeSet<String> = local::unsettled(dir)?.into_iter().collect();
    let now = OffsetDateTime::now_utc();
    for entry in fs::read_dir(dir)? {
        let file_name = entry?.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        match classify(file_name) {
            Some(Kind::Archive(a)) => {
                names.insert(a.to_owned());
                plain.insert(a.to_owned());
            }
            Some(Kind::Part(a, i)) => {
                names.insert(a.to_owned());
                parts.entry(a.to_owned()).or_default().insert(i);
            }
            Some(Kind::Receipt(a)) => {
                names.insert(a.to_owned());
                receipts.insert(a.to_owned(), dir.join(file_name));
            }
            None => {}
        }
    }
    let mut out = Vec::new();
    for name in names.into_iter().filter(|n| !unsettled.contains(n)) {
        let receipt_path = receipts.get(&name).cloned();
        let (receipt, receipt_problem) = match &receipt_path {
            None => (None, Some("no receipt".to_owned())),
            Some(p) => match read_receipt(p, &name, now) {
                Ok(r) => (Some(r), None),
                Err(problem) => (None, Some(problem)),
            },
        };
        let files: Vec<PathBuf> = match &receipt {
            Some(r) if !r.parts.is_empty() => r
                .parts
                .iter()
                .map(|p| dir.join(p))
                .filter(|p| p.exists())
                .collect(),
            _ if plain.contains(&name) => vec![dir.join(&name)],
            _ => parts
                .get(&name)
                .map(|set| set.iter().map(|&i| dir.join(part_name(&name, i))).collect())
                .unwrap_or_default(),
        };
        let created = receipt
            .as_ref()
            .and_then(|r| parse_time(&r.created))
            .or_else(|| created_from_name(&name));
        out.push(Archive {
            name,
            dir: dir.to_owned(),
            files,
            receipt,
            receipt_problem,
            receipt_path,
            created,
            listed_size: None,
        });
    }
    Ok(out)
}

/// Reads and checks the receipt at `path` for `archive` (see the module doc).
fn read_receipt(path: &Path, archive: &str, now: OffsetDateTime) -> Result<Receipt, String> {
    let bytes = bounded::read(path, Links::Refuse, bounded::RECEIPT_CAP)
        .map_err(|e| format!("receipt unreadable: {e}"))?;
    let split = path.file_name().is_some_and(|n| {
        n.to_string_lossy()
            .ends_with(crate::target::receipt::SPLIT_SUFFIX)
    });
    parse_receipt(&bytes, archive, split, now)
}

/// Parses and checks the receipt `bytes` of `archive` (`split`: read under the split receipt's
/// name), as of `now`; the error is the reason it is unusable.
pub fn parse_receipt(
    bytes: &[u8],
    archive: &str,
    split: bool,
    now: OffsetDateTime,
) -> Result<Receipt, String> {
    let receipt: Receipt =
        serde_json::from_slice(bytes).map_err(|e| format!("receipt is not valid: {e}"))?;
    receipt.check(archive, split, now)?;
    Ok(receipt)
}

/// The archive a file name names: the archive itself, one of its parts, or its receipt; any
/// other name is taken as an archive's.
pub fn archive_of_file(file_name: &str) -> String {
    match classify(file_name) {
        Some(Kind::Archive(a)) | Some(Kind::Part(a, _)) | Some(Kind::Receipt(a)) => a.to_owned(),
        None => file_name.to_owned(),
    }
}

/// The state file with every archive's last verification.
pub const VERIFY_LOG: &str = "verified.json";

/// The last verification of one archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VerifyRecord {
    /// RFC 3339 time.
    pub verified_at: String,
    /// Whether it passed.
    pub ok: bool,
    /// The first difference, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Whether the files were also written out and compared (`verify --restore-to`).
    #[serde(default)]
    pub restore_test: bool,
}

/// `$STATE_DIRECTORY/verified.json`: `TARGET/ARCHIVE` -> its last verification.
#[derive(Debug, Clone, Default)]
pub struct VerifyLog {
    /// The records.
    pub records: BTreeMap<String, VerifyRecord>,
    /// What this process changed (`None`: removed), replayed onto the file as it is on disk
    /// when saving, so that a `verify` and a `prune` running side by side keep each other's
    /// records.
    changes: Vec<(String, Option<VerifyRecord>)>,
}

impl VerifyLog {
    /// The key of an archive on a target.
    pub fn key(target: &str, archive: &str) -> String {
        format!("{target}/{archive}")
    }

    /// Reads the log for a command that deletes or rewrites on its strength: a missing log is
    /// empty, but one that exists and cannot be read or parsed is an error, since it may have
    /// held the record of a failed verification.
    pub fn load_strict(state: &Path) -> io::Result<VerifyLog> {
        let path = state.join(VERIFY_LOG);
        let bytes = match bounded::read(&path, Links::Refuse, bounded::STATE_CAP) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(VerifyLog::default()),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            Ok(bytes) => bytes,
        };
        let records: BTreeMap<String, VerifyRecord> = serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is damaged ({e}); it may hold failed verifications: look at it, then move it aside",
                    path.display()
                ),
            )
        })?;
        Ok(VerifyLog {
            records,
            changes: Vec::new(),
        })
    }

    /// Reads the log; a missing or unreadable one is empty.
    pub fn load(state: &Path) -> VerifyLog {
        let records = bounded::read(&state.join(VERIFY_LOG), Links::Refuse, bounded::STATE_CAP)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        VerifyLog {
            records,
            changes: Vec::new(),
        }
    }

    /// The last verification of an archive on a target.
    pub fn get(&self, target: &str, archive: &str) -> Option<&VerifyRecord> {
        self.records.get(&Self::key(target, archive))
    }

    /// Records a verification.
    pub fn insert(&mut self, target: &str, archive: &str, record: VerifyRecord) {
        let key = Self::key(target, archive);
        self.records.insert(key.clone(), record.clone());
        self.changes.push((key, Some(record)));
    }

    /// Forgets an archive (after it was pruned).
    pub fn remove(&mut self, target: &str, archive: &str) {
        let key = Self::key(target, archive);
        self.records.remove(&key);
        self.changes.push((key, None));
    }

    /// Writes this process's changes atomically onto the log as it is on disk now (another
    /// command may have recorded something since this one read it). A log that has become
    /// unreadable meanwhile is an error, not overwritten.
    pub fn save(&self, state: &Path) -> io::Result<()> {
        let mut merged = VerifyLog::load_strict(state)?;
        for (key, change) in &self.changes {
            match change {
                Some(r) => merged.records.insert(key.clone(), r.clone()),
                None => merged.records.remove(key),
            };
        }
        let mut json = serde_json::to_vec_pretty(&merged.records).map_err(io::Error::other)?;
        json.push(b'\n');
        crate::target::local::write_atomic(
            state,
            VERIFY_LOG,
            &json,
            crate::systemd::journal::run_id(),
        )
        .map(|_| ())
    }
}

/// Whether an archive counts as verified: its last recorded verification passed, or (when it
/// was never re-verified) its receipt records the read-back verification of the run that
/// wrote it.
pub fn is_verified(archive: &Archive, target: &str, log: &VerifyLog) -> bool {
    match log.get(target, &archive.name) {
        Some(r) => r.ok,
        None => archive
            .receipt
            .as_ref()
            .is_some_and(|r| !r.verified_at.is_empty()),
    }
}

/// Whether an archive's contents were proven: its last `vouch verify` (always a full check)
/// passed, or, never re-verified, the run that wrote it decrypted and checked it (`full`), not
/// only its ciphertext.
pub fn is_proven(archive: &Archive, target: &str, log: &VerifyLog) -> bool {
    match log.get(target, &archive.name) {
        Some(r) => r.ok,
        None => archive
            .receipt
            .as_ref()
            .is_some_and(|r| !r.verified_at.is_empty() && r.verification == "full"),
    }
}

/// The time an archive was last verified successfully: the log's, else the receipt's.
pub fn verified_at(archive: &Archive, target: &str, log: &VerifyLog) -> Option<String> {
    match log.get(target, &archive.name) {
        Some(r) if r.ok => Some(r.verified_at.clone()),
        Some(_) => None,
        None => archive
            .receipt
            .as_ref()
            .map(|r| r.verified_at.clone())
            .filter(|v| !v.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saving_keeps_what_another_process_recorded_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let rec = |ok| VerifyRecord {
            verified_at: "2026-11-22T00:00:00Z".into(),
            ok,
            detail: None,
            restore_test: false,
        };
        let mut first = VerifyLog::load(state);
        first.insert("t", "a", rec(true));
        first.insert("t", "gone", rec(true));
        first.save(state).unwrap();
        // A prune reads the log, a verify records a result, then the prune saves.
        let mut prune = VerifyLog::load_strict(state).unwrap();
        let mut verify = VerifyLog::load_strict(state).unwrap();
        verify.insert("t", "b", rec(false));
        verify.save(state).unwrap();
        prune.remove("t", "gone");
        prune.save(state).unwrap();
        let now = VerifyLog::load_strict(state).unwrap();
        assert!(now.get("t", "a").is_some_and(|r| r.ok));
        assert!(now.get("t", "b").is_some_and(|r| !r.ok));
        assert!(now.get("t", "gone").is_none());
        // A log damaged meanwhile is not overwritten.
        fs::write(state.join(VERIFY_LOG), "{").unwrap();
        assert!(prune.save(state).is_err());
        assert_eq!(fs::read(state.join(VERIFY_LOG)).unwrap(), b"{");
    }

    #[test]
    fn names_carry_their_creation_time() {
        let t = created_from_name("web1-20261121T030405Z.tar.gz.age").unwrap();
        assert_eq!(crate::run::rfc3339(t), "2026-11-21T03:04:05Z");
        assert!(created_from_name("web1.tar.gz.age").is_none());
        assert!(created_from_name("web1-20261121T030405Z.tar").is_none());
    }

    #[test]
    fn zstd_names_are_archives_too() {
        let t = created_from_name("web1-20261121T030405Z.tar.zst.age").unwrap();
        assert_eq!(crate::run::rfc3339(t), "2026-11-21T03:04:05Z");
        assert!(is_own("web1-20261121T030405Z.tar.zst.age", "web1"));
        assert!(!is_own("web1-20261121T030405Z.tar.xz.age", "web1"));
        assert!(is_archive_name("a.tar.zst.age") && is_archive_name("a.tar.gz.age"));
        assert!(!is_archive_name("a.tar.zst.age.000") && !is_archive_name("a.tar.zst"));
        for (file, archive) in [
            (
                "a-20260101T000000Z.tar.zst.age.003",
                "a-20260101T000000Z.tar.zst.age",
            ),
            (
                "a-20260101T000000Z.tar.zst.age.json",
                "a-20260101T000000Z.tar.zst.age",
            ),
            (
                "a-20260101T000000Z.tar.zst.age-receipt.json",
                "a-20260101T000000Z.tar.zst.age",
            ),
        ] {
            assert_eq!(archive_of_file(file), archive);
        }
    }

    #[test]
    fn scan_lists_gzip_and_zstd_archives_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "web1-20260101T000000Z.tar.gz.age",
            "web1-20260101T000000Z.tar.gz.age.json",
            "web1-20260102T000000Z.tar.zst.age",
            "web1-20260103T000000Z.tar.zst.age.000",
            "web1-20260103T000000Z.tar.zst.age.001",
            "web1-20260104T000000Z.tar.zst.age.json",
            ".vouch-tmp.x.web1-20260105T000000Z.tar.zst.age",
            "web1-20260106T000000Z.tar.xz.age",
        ] {
            fs::write(d.join(f), b"x").unwrap();
        }
        let all = scan(d).unwrap();
        let names: Vec<&str> = all.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "web1-20260101T000000Z.tar.gz.age",
                "web1-20260102T000000Z.tar.zst.age",
                "web1-20260103T000000Z.tar.zst.age",
                "web1-20260104T000000Z.tar.zst.age"
            ]
        );
        assert!(all[0].receipt_path.is_some());
        assert_eq!(all[1].files.len(), 1);
        assert!(all[2].is_split() && all[2].files.len() == 2);
        assert!(all[3].files.is_empty() && all[3].receipt_path.is_some());
        assert!(all.iter().all(|a| a.created.is_some()));
    }

    #[test]
    fn scan_groups_parts_receipts_and_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "a-20260101T000000Z.tar.gz.age",
            "b-20260102T000000Z.tar.gz.age.000",
            "b-20260102T000000Z.tar.gz.age.001",
            "c-20260103T000000Z.tar.gz.age.json",
            ".vouch-tmp.x.a.tar.gz.age",
            "notes.txt",
        ] {
            fs::write(d.join(f), b"x").unwrap();
        }
        let all = scan(d).unwrap();
        let names: Vec<&str> = all.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "a-20260101T000000Z.tar.gz.age",
                "b-20260102T000000Z.tar.gz.age",
                "c-20260103T000000Z.tar.gz.age"
            ]
        );
        assert_eq!(all[0].receipt_problem.as_deref(), Some("no receipt"));
        assert_eq!(all[1].files.len(), 2);
        assert!(all[1].is_split());
        assert!(all[2].files.is_empty());
        assert!(all[2]
            .receipt_problem
            .as_deref()
            .unwrap()
            .contains("not valid"));
    }
}
