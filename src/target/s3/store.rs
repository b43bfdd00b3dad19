//! An S3 target as a [`Target`]: the archives in its bucket under its prefix, listed, read,
//! deleted and put in order the way `list`, `verify`, `restore`, `prune` and `status --live`
//! reach a directory target's.
//!
//! The layout is flat: the archive is the object `PREFIX + NAME` (one object, also for an
//! archive that is split locally) and its receipt `PREFIX + NAME.json`, written last by the
//! off-site copy ([`super::copy`]) as the remote's commit mark. Keys below a further `/` and
//! keys that are neither are not vouch's and are ignored.
//!
//! What the trait's steps mean here:
//!
//! - **writing**: an S3 target is not written by the run's stream ([`Target::begin`] refuses);
//!   it receives a copy of the committed, verified local archive after the commit
//!   ([`super::copy`]), and its write test is the preflight's ([`super::probe`]).
//! - **listing** ([`Target::scan`]): `ListObjectsV2` under the prefix, then each receipt object
//!   read (bounded) and checked like a receipt file. A copy recorded in flight in
//!   `s3-pending.json` ([`super::pending`]) is unsettled and not listed: its object may be
//!   there before its receipt.
//! - **reading** ([`Target::read`], [`Target::open`]): one `GetObject` per pass, each checked
//!   to be exactly the listed size. Objects are never rewritten, so passes agree; an object
//!   deleted between passes makes the pass fail, never pass short.
//! - **deleting** ([`Target::delete`]): the deletion is recorded in `s3-pending.json`, then the
//!   receipt object goes (from then on it is no archive for any command), then the data, then
//!   the record. A deletion a crash cut short leaves an object without a receipt and the
//!   record, which the next prune, retention or preflight settles: the object is deleted.

use super::client::S3Error;
use super::{pending, S3};
use crate::target::archives::{self, Archive};
use crate::target::receipt::Receipt;
use crate::target::{Opened, Pending, Recovery, Target};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;

/// An S3 target and the state directory that records its copies and deletions in flight.
#[derive(Debug)]
pub struct Store {
    /// The target (shared with the archives it opens).
    pub s3: Arc<S3>,
    /// `$STATE_DIRECTORY`.
    pub state: PathBuf,
}

/// A request's failure as I/O: a 404 (no such bucket or key) is `NotFound`, a 403
/// `PermissionDenied`, a server that does not answer `NotConnected`.
fn io_error(e: S3Error) -> io::Error {
    let kind = match (&e, e.status()) {
        (S3Error::Transport { .. }, _) => io::ErrorKind::NotConnected,
        (_, Some(404)) => io::ErrorKind::NotFound,
        (_, Some(403)) => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

/// What the listing found under the prefix, by archive name.
#[derive(Default)]
struct Listing {
    /// Archive objects and their sizes.
    data: BTreeMap<String, u64>,
    /// Archives whose receipt object is there.
    receipts: BTreeSet<String>,
}

impl Store {
    /// The target `s3`, with its in-flight records in `state`.
    pub fn new(s3: S3, state: &Path) -> Store {
        Store {
            s3: Arc::new(s3),
            state: state.to_owned(),
        }
    }

    /// `s3://BUCKET/PREFIX`, as messages name the target.
    pub fn location(&self) -> PathBuf {
        PathBuf::from(self.s3.client.url_of(&self.s3.prefix))
    }

    fn list(&self) -> io::Result<Listing> {
        let mut out = Listing::default();
        for object in self.s3.client.list(&self.s3.prefix).map_err(io_error)? {
            let Some(name) = object.key.strip_prefix(&self.s3.prefix) else {
                continue;
            };
            if name.contains('/') || name.starts_with('.') {
                continue;
            }
            if let Some(archive) = Receipt::archive_of(name) {
                if !name.ends_with(crate::target::receipt::SPLIT_SUFFIX) {
                    out.receipts.insert(archive.to_owned());
                }
            } else if archives::is_archive_name(name) {
                out.data.insert(name.to_owned(), object.size);
            }
        }
        Ok(out)
    }

    fn receipt_of(&self, archive: &str, now: OffsetDateTime) -> Result<Receipt, String> {
        let bytes = self
            .s3
            .client
            .get_small(
                &self.s3.receipt_key(archive),
                crate::host::bounded::RECEIPT_CAP,
            )
            .map_err(|e| format!("receipt unreadable: {e}"))?;
        let receipt = archives::parse_receipt(&bytes, archive, false, now)?;
        if !receipt.parts.is_empty() {
            return Err("receipt lists parts, and an S3 archive is one object".into());
        }
        Ok(receipt)
    }

    /// The names of the copies and deletions of this target recorded in flight.
    fn in_flight(&self) -> Vec<String> {
        pending::load(&self.state)
            .into_iter()
            .filter(|u| u.target == self.s3.name)
            .filter_map(|u| u.key.strip_prefix(&self.s3.prefix).map(str::to_owned))
            .collect()
    }

    fn object_key(&self, archive: &Archive) -> String {
        self.s3.key(&archive.name)
    }

    /// One GET of the archive's object, checked against the size it was listed with.
    fn get(&self, archive: &Archive) -> io::Result<Box<dyn Read + Send>> {
        get(&self.s3, &self.object_key(archive), archive.listed_size)
    }

    /// Deletes `key` for good: on a versioned bucket (Object Lock needs one) by its version,
    /// since a plain delete only hides the object behind a delete marker. Gone already is
    /// done.
    fn delete_key(&self, key: &str) -> Result<(), S3Error> {
        match self.s3.client.head(key)? {
            None => Ok(()),
            Some(head) => match head.version_id.filter(|v| v != "null") {
                Some(version) => self.s3.client.delete_version(key, &version),
                None => self.s3.client.delete(key),
            },
        }
    }

    /// Settles this target's records in flight (see [`super::probe`]): returns the archives
    /// whose object without a receipt was deleted.
    fn settle(&self) -> io::Result<Vec<String>> {
        let mut deleted = Vec::new();
        for name in self.in_flight() {
            match super::probe::settle_one(&self.s3, &self.state, &self.s3.key(&name)) {
                Ok(true) => deleted.push(name),
                Ok(false) => {}
                Err(e) => return Err(io_error(e)),
            }
        }
        Ok(deleted)
    }
}

impl Target for Store {
    fn probe(&self) -> io::Result<()> {
        super::probe::write_probe(&self.s3)
            .map(|_| ())
            .map_err(io_error)
    }

    fn name_taken(&self, archive: &str) -> bool {
        let taken = |key: String| !matches!(self.s3.client.head(&key), Ok(None));
        taken(self.s3.key(archive)) || taken(self.s3.receipt_key(archive))
    }

    fn begin(&self, _archive: &str, _run_id: &str) -> io::Result<Box<dyn Pending>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "target {} is S3: it receives a copy of the committed archive after the commit, not the run's stream",
                self.s3.name
            ),
        ))
    }

    fn archive_path(&self, archive: &str) -> PathBuf {
        PathBuf::from(self.s3.client.url_of(&self.s3.key(archive)))
    }

    fn present(&self) -> bool {
        true
    }

    fn scan(&self) -> io::Result<Vec<Archive>> {
        let listing = self.list()?;
        let unsettled: BTreeSet<String> = self.in_flight().into_iter().collect();
        let names: BTreeSet<&String> = listing.data.keys().chain(&listing.receipts).collect();
        let now = OffsetDateTime::now_utc();
        let dir = self.location();
        let mut out = Vec::new();
        for name in names.into_iter().filter(|n| !unsettled.contains(*n)) {
            let has_receipt = listing.receipts.contains(name);
            let receipt_url = has_receipt
                .then(|| PathBuf::from(self.s3.client.url_of(&self.s3.receipt_key(name))));
            let receipt = has_receipt.then(|| self.receipt_of(name, now));
            let size = listing.data.get(name).copied();
            out.push(Archive::remote(name, &dir, size, receipt_url, receipt));
        }
        Ok(out)
    }

    fn read(&self, archive: &Archive) -> io::Result<Box<dyn Read + Send>> {
        self.get(archive)
    }

    fn open(&self, archive: &Archive) -> io::Result<Box<dyn Opened>> {
        // The first GET proves the object is there; later passes get it again.
        let first = self.get(archive)?;
        Ok(Box::new(Fetched {
            s3: Arc::clone(&self.s3),
            key: self.object_key(archive),
            size: archive.listed_size,
            first: std::cell::RefCell::new(Some(first)),
        }))
    }

    fn is_gone(&self, archive: &Archive) -> bool {
        let gone = |key: String| matches!(self.s3.client.head(&key), Ok(None));
        gone(self.s3.receipt_key(&archive.name)) || gone(self.object_key(archive))
    }

    fn locked_until(&self, archive: &Archive) -> io::Result<Option<OffsetDateTime>> {
        let until = match self.s3.client.retention(&self.object_key(archive)) {
            Ok(Some((_, until))) => until,
            Ok(None) => return Ok(None),
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        OffsetDateTime::parse(&until, &time::format_description::well_known::Rfc3339)
            .map(Some)
            .map_err(|e| io::Error::other(format!("its retain-until date {until:?}: {e}")))
    }

    fn free_bytes(&self) -> Option<u64> {
        None
    }

    fn delete(&self, archive: &Archive) -> Result<(), (PathBuf, io::Error)> {
        let key = self.object_key(archive);
        let url = PathBuf::from(self.s3.client.url_of(&key));
        if archive.receipt.is_none() {
            return Err((
                url,
                io::Error::other(
                    "it has no usable receipt, and only archives with one are deleted",
                ),
            ));
        }
        let record = pending::Upload {
            target: self.s3.name.clone(),
            key: key.clone(),
            upload_id: None,
        };
        let run = crate::systemd::journal::run_id();
        pending::add(&self.state, record, run).map_err(|e| (self.state.join(pending::FILE), e))?;
        let receipt = self.s3.receipt_key(&archive.name);
        let receipt_url = PathBuf::from(self.s3.client.url_of(&receipt));
        self.delete_key(&receipt)
            .map_err(|e| (receipt_url, io_error(e)))?;
        crate::host::fault::pass("prune-marked");
        self.delete_key(&key)
            .map_err(|e| (url.clone(), io_error(e)))?;
        pending::remove(&self.state, &self.s3.name, &key, run)
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

    fn remove_temporaries(&self, _run_id: &str) -> usize {
        // A copy stopped by a signal stays recorded in flight; the next preflight settles it.
        0
    }
}

/// One GET of `key`, which must be `listed` bytes when that is known.
fn get(s3: &S3, key: &str, listed: Option<u64>) -> io::Result<Box<dyn Read + Send>> {
    let (size, body) = s3.client.get(key).map_err(io_error)?;
    if let Some(listed) = listed.filter(|&l| l != size) {
        return Err(io::Error::other(format!(
            "{} is {size} bytes now, {listed} when it was listed",
            s3.client.url_of(key)
        )));
    }
    Ok(Box::new(body))
}

/// An S3 archive opened for several passes: the first pass reads the GET that proved it is
/// there, every later one makes its own.
struct Fetched {
    s3: Arc<S3>,
    key: String,
    size: Option<u64>,
    first: std::cell::RefCell<Option<Box<dyn Read + Send>>>,
}

impl Opened for Fetched {
    fn reader(&self) -> io::Result<Box<dyn Read + Send>> {
        match self.first.borrow_mut().take() {
            Some(first) => Ok(first),
            None => get(&self.s3, &self.key, self.size),
        }
    }
}
