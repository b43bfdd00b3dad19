//! The staging directory inside the destination, and what a restore holds while it writes.
//!
//! The staging directory (`.vouch-restore.` with the process id and a time, mode 0700) is made
//! at the top of the destination before anything else is written there, locked with `flock` for as long as the
//! restore runs, and recorded outside the destination (`restore::record`). It holds one flat
//! file per staged entry (named by the entry's index in the manifest), `old/` for paths the
//! commit replaces, and the journal (`restore::journal`). [`Staging`] also holds the
//! destination open as a [`Tree`], through which every change is made, and the interrupting
//! signals held back while the restore writes. It is removed at the end, with its record.

use super::at::{Stat, Tree};
use super::error::io_err;
use super::journal::{self, Journal, Step, JOURNAL_NAME};
use super::path::STAGING_PREFIX;
use super::record::{self, Record};
use super::RestoreError;
use crate::systemd::signals;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The staging directory inside the destination, the commit journal, and the interrupting
/// signals held back while the restore writes. Every change goes through `tree`.
pub(super) struct Staging {
    /// The destination, held open.
    pub(super) tree: Tree,
    /// The staging directory's path, for messages.
    pub(super) dir: PathBuf,
    /// Its name in the destination.
    pub(super) name: Vec<u8>,
    /// The staging directory, open and locked (`flock`) while this restore runs, so that
    /// another restore into the same destination does not take it for a leftover.
    _lock: File,
    /// Its record outside the destination, when one could be written.
    record: Option<Record>,
    /// Paths renamed aside so far, for their names in `old/`.
    pub(super) aside_count: u64,
    /// Paths that were in the way and were renamed aside.
    pub(super) replaced: u64,
    /// Existing directories whose metadata the journal already holds.
    pub(super) kept_meta: HashSet<Vec<u8>>,
    /// Directories this commit made.
    pub(super) made: HashSet<Vec<u8>>,
    /// Every step of the commit, recorded before it is taken.
    pub(super) journal: Journal,
    /// SIGINT, SIGTERM and SIGHUP, held back until the restore is over.
    pub(super) interrupts: signals::Deferred,
}

/// Opens the directory `name` just made in `tree`'s top, for locking, without following a
/// symlink there.
fn open_locked(tree: &mut Tree, name: &[u8]) -> io::Result<File> {
    use nix::fcntl::OFlag;
    use std::os::fd::AsFd;
    let root = tree.dir(b"")?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(
        root.as_fd(),
        OsStr::from_bytes(name),
        flags,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let lock = File::from(fd);
    lock.try_lock().map_err(io::Error::from)?;
    Ok(lock)
}

impl Staging {
    /// Makes the staging directory (mode 0700, with `old/` for replaced paths and the journal)
    /// at the top of the destination `tree`, and records it outside the destination.
    pub(super) fn create(
        mut tree: Tree,
        interrupts: signals::Deferred,
    ) -> Result<Staging, RestoreError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("{STAGING_PREFIX}{}.{nanos:08x}", std::process::id()).into_bytes();
        let dir = tree.show(&name);
        tree.mkdir(&name, 0o700).map_err(io_err(&dir))?;
        let made = (|| {
            let lock = open_locked(&mut tree, &name)?;
            tree.adopt(&name, std::os::fd::OwnedFd::from(lock.try_clone()?));
            tree.mkdir(&[&name[..], b"/old"].concat(), 0o700)?;
            let token = record::token()?;
            let m = lock.metadata()?;
            let record = Record::create(&token, &dir, m.dev(), m.ino());
            let journal = Journal::create(&*tree.dir(&name)?, tree.path(), &name, &token);
            let journal = match journal {
                Ok(j) => j,
                Err(e) => {
                    if let Some(r) = record {
                        r.remove();
                    }
                    return Err(e);
                }
            };
            Ok((lock, record, journal))
        })();
        let (lock, record, journal) = match made {
            Ok(made) => made,
            Err(e) => {
                let _ = tree.remove_all(&name);
                return Err(io_err(&dir)(e));
            }
        };
        Ok(Staging {
            tree,
            dir,
            name,
            _lock: lock,
            record,
            aside_count: 0,
            replaced: 0,
            kept_meta: HashSet::new(),
            made: HashSet::new(),
            journal,
            interrupts,
        })
    }

    /// Flushes the destination's filesystem (see [`Tree::sync_filesystem`]).
    pub(super) fn sync_filesystem(&self) -> Result<(), RestoreError> {
        self.tree
            .sync_filesystem()
            .map_err(io_err(self.tree.path()))
    }

    /// An interrupting signal that arrived, as an error.
    pub(super) fn interrupted(&self) -> Result<(), RestoreError> {
        match self.interrupts.arrived() {
            Some(signal) => Err(RestoreError::Interrupted(signal)),
            None => Ok(()),
        }
    }

    /// Where the data of entry `i` is staged, relative to the destination.
    pub(super) fn data(&self, i: usize) -> Vec<u8> {
        [&self.name[..], b"/", i.to_string().as_bytes()].concat()
    }

    /// The destination path of `rel`, for messages.
    pub(super) fn full(&self, rel: &[u8]) -> PathBuf {
        self.tree.show(rel)
    }

    /// Turns an I/O error about `rel` into a [`RestoreError::Io`] naming its full path.
    pub(super) fn io(&self, rel: &[u8]) -> impl FnOnce(io::Error) -> RestoreError {
        let path = self.full(rel);
        move |error| RestoreError::Io { path, error }
    }

    /// What is at `rel` in the destination, not following a symlink there.
    pub(super) fn lstat(&mut self, rel: &[u8]) -> Result<Option<Stat>, RestoreError> {
        let err = self.io(rel);
        self.tree.lstat(rel).map_err(err)
    }

    /// Sets owner (as root), modification time and, unless `None`, permission bits of `rel`.
    pub(super) fn set_meta(
        &mut self,
        rel: &[u8],
        mode: Option<u32>,
        uid: u64,
        gid: u64,
        mtime: i64,
    ) -> Result<(), RestoreError> {
        let err = self.io(rel);
        self.tree
            .set_meta(rel, mode, (uid, gid), (mtime, 0))
            .map_err(err)
    }

    /// Records a step in the journal, before it is taken.
    pub(super) fn record(&mut self, step: Step) -> Result<(), RestoreError> {
        self.journal
            .record(step)
            .map_err(io_err(&self.dir.join(JOURNAL_NAME)))
    }

    /// Removes the staging directory (and the replaced files in it) and its record.
    pub(super) fn remove(&mut self) {
        let record = self.record.take();
        if let Err(e) = journal::remove_staging(&mut self.tree, &self.name, record) {
            log::warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}
