//! An sftp target as a [`Target`]: the archives in its directory on the server, listed, read,
//! deleted and put in order the way `list`, `verify`, `restore`, `prune` and the run's
//! retention reach a directory target's.
//!
//! The layout is flat and that of a directory target: the archive is `PATH/NAME` with its
//! receipt `PATH/NAME.json`, or (`split = "SIZE"`) its parts `PATH/NAME.000`, `PATH/NAME.001`,
//! ... with the split receipt `PATH/NAME-receipt.json` that lists them; the receipt is renamed
//! into place last by the off-site copy ([`super::copy`]) as the remote's commit mark. Names
//! that start with `.` (temporary files) and names that are none of these are not listed. A
//! part the receipt lists and the directory does not hold makes the archive damaged
//! ([`Archive::missing_when_listed`]).
//!
//! What the trait's steps mean here:
//!
//! - **writing**: an sftp target is not written by the run's stream ([`Target::begin`]
//!   refuses); it receives a copy of the committed, verified local archive ([`super::copy`]),
//!   and its write test is the preflight's ([`super::probe`]).
//! - **listing** ([`Target::scan`]): READDIR of the directory, then each receipt read
//!   (bounded) and checked like a receipt file. A copy or deletion recorded in flight in
//!   `s3-pending.json` ([`crate::target::s3::pending`], which holds every remote's records) is
//!   unsettled and not listed.
//! - **reading** ([`Target::read`], [`Target::open`]): each pass has its own ssh session,
//!   opens every file of the archive before reading the first ([`Chain`]) and checks they are
//!   exactly the listed size together. An archive opened by [`Target::open`] keeps its first
//!   reader's handles open, so a deletion after the opening cannot cut that pass short (the
//!   server keeps an unlinked open file).
//! - **deleting** ([`Target::delete`]): the deletion is recorded, then the receipt goes (from
//!   then on it is no archive for any command), then every data file (the archive, or each of
//!   its parts), then the record. A deletion a crash cut short leaves data without a receipt
//!   and the record, which the next prune, retention or preflight settles: the data is
//!   removed.
//!
//! Listing and deleting share one session, made on first use; a session that fails is
//! dropped and the next call makes a new one.

use super::chain::Chain;
use super::{Session, Sftp, SftpError, TEMP_PREFIX};
use crate::target::archives::{self, Archive};
use crate::target::receipt::Receipt;
use crate::target::s3::pending;
use crate::target::{Opened, Pending, Recovery, Target};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// An sftp target and the state directory that records its copies and deletions in flight.
pub struct Store {
    /// The target.
    pub sftp: Sftp,
    /// `$STATE_DIRECTORY`.
    pub state: PathBuf,
    session: RefCell<Option<Session>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("sftp", &self.sftp)
            .field("state", &self.state)
            .finish()
    }
}

/// A failure as I/O: no such file is `NotFound`, a refusal (the key, the host key, a
/// permission) `PermissionDenied`, a server that cannot be reached `NotConnected`, one that
/// stopped answering `TimedOut` (so `verify`, `list` and `restore` report it as 34).
pub fn io_error(e: SftpError) -> io::Error {
    let kind = match &e {
        _ if e.is_no_such_file() => io::ErrorKind::NotFound,
        _ if e.is_permission_denied() => io::ErrorKind::PermissionDenied,
        SftpError::HostKey { .. } | SftpError::AuthRefused { .. } => {
            io::ErrorKind::PermissionDenied
        }
        SftpError::Unreachable { .. }
        | SftpError::NotInstalled { .. }
        | SftpError::Transport { .. } => io::ErrorKind::NotConnected,
        SftpError::Timeout { .. } => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

/// What the listing found in the directory, by archive name.
#[derive(Default)]
struct Listing {
    /// Archive files and their sizes.
    data: BTreeMap<String, Option<u64>>,
    /// Parts of split archives: index -> size.
    parts: BTreeMap<String, BTreeMap<usize, u64>>,
    /// Archives whose receipt is there: whether it is the split receipt.
    receipts: BTreeMap<String, bool>,
}

impl Store {
    /// The target `sftp`, with its in-flight records in `state`.
    pub fn new(sftp: Sftp, state: &Path) -> Store {
        Store {
            sftp,
            state: state.to_owned(),
            session: RefCell::new(None),
        }
    }

    /// `sftp://USER@HOST:PORT/PATH/`, as messages name the target.
    pub fn location(&self) -> PathBuf {
        PathBuf::from(self.sftp.target.url_of(""))
    }

    /// Runs `f` with the shared session (made on first use); a session that failed below
    /// the protocol is dropped.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Session) -> Result<T, SftpError>,
    ) -> Result<T, SftpError> {
        let mut slot = self.session.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.sftp.connect()?);
        }
        let result = f(slot.as_mut().expect("connected above"));
        if matches!(
            result,
            Err(SftpError::Transport { .. } | SftpError::Protocol(_) | SftpError::Timeout { .. })
        ) {
            *slot = None;
        }
        result
    }

    fn path(&self, name: &str) -> String {
        self.sftp.target.remote_path(name)
    }

    fn list(&self) -> io::Result<Listing> {
        let entries = self
            .with(|s| s.read_dir(&self.sftp.target.path))
            .map_err(io_error)?;
        let mut out = Listing::default();
        for (name, attrs) in entries {
            if name.starts_with('.') || name.contains('/') {
                continue;
            }
            if let Some(archive) = Receipt::archive_of(&name) {
                let split = name.ends_with(crate::target::receipt::SPLIT_SUFFIX);
                let was = out.receipts.entry(archive.to_owned()).or_insert(split);
                *was |= split;
            } else if archives::is_archive_name(&name) {
                out.data.insert(name, attrs.size);
            } else if let Some((archive, index)) = part_of(&name) {
                out.parts
                    .entry(archive.to_owned())
                    .or_default()
                    .insert(index, attrs.size.unwrap_or(0));
            }
        }
        Ok(out)
    }

    fn receipt_of(
        &self,
        archive: &str,
        split: bool,
        now: OffsetDateTime,
    ) -> Result<Receipt, String> {
        let cap = crate::host::bounded::RECEIPT_CAP;
        let path = self.path(&Receipt::file_name(archive, split));
        let bytes = self
            .with(|s| {
                let mut r = s.open_read(&path)?;
                let mut bytes = Vec::new();
                (&mut r)
                    .take(cap + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| SftpError::Transport {
                        message: e.to_string(),
                    })?;
                Ok(bytes)
            })
            .map_err(|e| format!("receipt unreadable: {e}"))?;
        if bytes.len() as u64 > cap {
            return Err(format!("receipt larger than {cap} bytes"));
        }
        archives::parse_receipt(&bytes, archive, split, now)
    }

    /// The names of the copies and deletions of this target recorded in flight.
    fn in_flight(&self) -> Vec<String> {
        let dir = format!("{}/", self.sftp.target.path);
        pending::load(&self.state)
            .into_iter()
            .filter(|u| u.target == self.sftp.name)
            .filter_map(|u| u.key.strip_prefix(&dir).map(str::to_owned))
            .collect()
    }

    /// The paths on the server of a listed archive's data files, in order.
    fn data_paths(&self, archive: &Archive) -> Vec<String> {
        archive
            .files
            .iter()
            .filter_map(|f| f.file_name())
            .map(|n| self.path(&n.to_string_lossy()))
            .collect()
    }

    /// A reader of the archive's files on its own session, checked against the listed size.
    fn get(&self, archive: &Archive) -> io::Result<Chain<Session>> {
        reader(&self.sftp, &self.data_paths(archive), archive.listed_size)
    }

    /// Settles this target's records in flight: returns the archives whose data without a
    /// receipt was removed.
    fn settle(&self) -> io::Result<Vec<String>> {
        let mut deleted = Vec::new();
        for name in self.in_flight() {
            let key = self.path(&name);
            let removed = self
                .with(|s| super::probe::settle_one(&self.sftp, s, &self.state, &key))
                .map_err(io_error)?;
            if removed {
                deleted.push(name);
            }
        }
        Ok(deleted)
    }

    fn exists(&self, name: &str) -> Result<bool, SftpError> {
        let path = self.path(name);
        self.with(|s| match s.stat(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.is_no_such_file() => Ok(false),
            Err(e) => Err(e),
        })
    }

    /// Removes every data file of `archive` in the directory: the archive itself and each of
    /// its parts (only names of its own, whatever a receipt says). The error names the file.
    fn remove_data(&self, archive: &str) -> Result<(), (String, io::Error)> {
        let entries = self
            .with(|s| s.read_dir(&self.sftp.target.path))
            .map_err(|e| (archive.to_owned(), io_error(e)))?;
        for (name, _) in entries {
            if name == archive || crate::target::local::is_part_name(archive, &name) {
                self.remove(&name).map_err(|e| (name.clone(), e))?;
            }
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let path = self.path(name);
        self.with(|s| match s.remove(&path) {
            Err(e) if e.is_no_such_file() => Ok(()),
            other => other,
        })
        .map_err(io_error)
    }
}

/// A new session's reader of `paths`, which must be `listed` bytes when that is known.
fn reader(sftp: &Sftp, paths: &[String], listed: Option<u64>) -> io::Result<Chain<Session>> {
    if paths.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "none of the archive's files is on the server",
        ));
    }
    let s = sftp.connect().map_err(io_error)?;
    Chain::open(s, paths, listed)
}

/// The archive and index of a part's name `ARCHIVE.NNN`.
fn part_of(name: &str) -> Option<(&str, usize)> {
    let (archive, index) = name.rsplit_once('.')?;
    (archives::is_archive_name(archive) && crate::target::local::is_part_name(archive, name))
        .then(|| index.parse().ok())
        .flatten()
        .map(|i| (archive, i))
}

/// The one listed archive `name`: its data files as the receipt (or, without one, the
/// listing) has them, the receipt read through `receipt`.
fn listed(store: &Store, listing: &Listing, name: &str, now: OffsetDateTime) -> Archive {
    let dir = store.location();
    let split = listing.receipts.get(name).copied();
    let receipt_url = split
        .map(|split| PathBuf::from(store.sftp.target.url_of(&Receipt::file_name(name, split))));
    let receipt = split.map(|split| store.receipt_of(name, split, now));
    let parts = listing.parts.get(name);
    let want_parts = match &receipt {
        Some(Ok(r)) => !r.parts.is_empty(),
        _ => split == Some(true) || (parts.is_some() && !listing.data.contains_key(name)),
    };
    if !want_parts {
        let size = listing.data.get(name).map(|s| s.unwrap_or(0));
        return Archive::remote(name, &dir, size, receipt_url, receipt);
    }
    let parts = parts.cloned().unwrap_or_default();
    let present: Vec<(String, u64)> = match &receipt {
        Some(Ok(r)) => r
            .parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| parts.get(&i).map(|&size| (p.clone(), size)))
            .collect(),
        _ => parts
            .iter()
            .map(|(&i, &size)| (crate::target::local::part_name(name, i), size))
            .collect(),
    };
    let mut archive = Archive::remote(name, &dir, None, receipt_url, receipt);
    archive.listed_size = Some(present.iter().map(|(_, s)| s).sum());
    archive.files = present.into_iter().map(|(p, _)| dir.join(p)).collect();
    archive
}

impl Target for Store {
    fn probe(&self) -> io::Result<()> {
        self.with(|s| super::probe::write_probe(s, &self.sftp.target.path))
            .map_err(io_error)
    }

    fn name_taken(&self, archive: &str) -> bool {
        let taken = |n: String| !matches!(self.exists(&n), Ok(false));
        taken(archive.to_owned())
            || taken(Receipt::file_name(archive, false))
            || taken(Receipt::file_name(archive, true))
            || taken(crate::target::local::part_name(archive, 0))
    }

    fn begin(&self, _archive: &str, _run_id: &str) -> io::Result<Box<dyn Pending>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "target {} is sftp: it receives a copy of the committed archive after the commit, not the run's stream",
                self.sftp.name
            ),
        ))
    }

    fn archive_path(&self, archive: &str) -> PathBuf {
        PathBuf::from(self.sftp.target.url_of(archive))
    }

    fn present(&self) -> bool {
        true
    }

    fn scan(&self) -> io::Result<Vec<Archive>> {
        let listing = self.list()?;
        let unsettled: BTreeSet<String> = self.in_flight().into_iter().collect();
        let names: BTreeSet<&String> = listing
            .data
            .keys()
            .chain(listing.parts.keys())
            .chain(listing.receipts.keys())
            .collect();
        let now = OffsetDateTime::now_utc();
        Ok(names
            .into_iter()
            .filter(|n| !unsettled.contains(*n))
            .map(|name| listed(self, &listing, name, now))
            .collect())
    }

    fn read(&self, archive: &Archive) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(self.get(archive)?))
    }

    fn open(&self, archive: &Archive) -> io::Result<Box<dyn Opened>> {
        let first = self.get(archive)?;
        Ok(Box::new(Fetched {
            sftp: self.sftp.clone(),
            paths: self.data_paths(archive),
            size: archive.listed_size,
            first: RefCell::new(Some(first)),
        }))
    }

    fn is_gone(&self, archive: &Archive) -> bool {
        let gone = |n: &str| matches!(self.exists(n), Ok(false));
        let name_of = |p: &PathBuf| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let receipt = archive
            .receipt_path
            .as_ref()
            .map(name_of)
            .unwrap_or_else(|| Receipt::file_name(&archive.name, archive.is_split()));
        gone(&receipt) || archive.files.iter().all(|f| gone(&name_of(f)))
    }

    fn free_bytes(&self) -> Option<u64> {
        self.with(|s| s.statvfs(&self.sftp.target.path))
            .ok()
            .map(|v| v.available_bytes())
    }

    fn delete(&self, archive: &Archive) -> Result<(), (PathBuf, io::Error)> {
        let url = self.archive_path(&archive.name);
        if archive.receipt.is_none() {
            return Err((
                url,
                io::Error::other(
                    "it has no usable receipt, and only archives with one are deleted",
                ),
            ));
        }
        let key = self.path(&archive.name);
        let record = pending::Upload {
            target: self.sftp.name.clone(),
            key: key.clone(),
            upload_id: None,
        };
        let run = crate::systemd::journal::run_id();
        pending::add(&self.state, record, run).map_err(|e| (self.state.join(pending::FILE), e))?;
        let receipt = Receipt::file_name(&archive.name, archive.is_split());
        self.remove(&receipt)
            .map_err(|e| (self.archive_path(&receipt), e))?;
        crate::host::fault::pass("prune-marked");
        self.remove_data(&archive.name)
            .map_err(|(name, e)| (self.archive_path(&name), e))?;
        pending::remove(&self.state, &self.sftp.name, &key, run)
            .map_err(|e| (self.state.join(pending::FILE), e))
    }

    fn finish_deletions(&self) -> io::Result<Vec<String>> {
        self.settle()
    }

    fn unsettled(&self) -> io::Result<Vec<String>> {
        Ok(self.in_flight())
    }

    fn recover(&self) -> io::Result<Recovery> {
        Ok(Recovery {
            deleted: self.settle()?,
            ..Recovery::default()
        })
    }

    fn remove_temporaries(&self, run_id: &str) -> usize {
        let prefix = format!("{TEMP_PREFIX}{run_id}.");
        let Ok(entries) = self.with(|s| s.read_dir(&self.sftp.target.path)) else {
            return 0;
        };
        entries
            .into_iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .filter(|(n, _)| self.remove(n).is_ok())
            .count()
    }
}

/// An sftp archive opened for several passes: the first pass reads the files opened when the
/// archive was, every later one opens them again on a session of its own.
struct Fetched {
    sftp: Sftp,
    paths: Vec<String>,
    size: Option<u64>,
    first: RefCell<Option<Chain<Session>>>,
}

impl Opened for Fetched {
    fn reader(&self) -> io::Result<Box<dyn Read + Send>> {
        match self.first.borrow_mut().take() {
            Some(first) => Ok(Box::new(first)),
            None => Ok(Box::new(reader(&self.sftp, &self.paths, self.size)?)),
        }
    }
}
