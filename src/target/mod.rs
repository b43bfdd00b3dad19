//! Where archives live: a target kind writes, commits, lists and deletes archives; the rest of
//! vouch reaches a target's files only through this folder, by the [`Target`] trait.
//!
//! [`open`] turns a `[[target]]` of the config into a `Box<dyn Target>`; a directory
//! ([`local`]) is the only kind so far. A target's steps, in the order a run takes them, and
//! what each promises:
//!
//! - [`Target::probe`] writes, syncs, commits and removes a probe the way an archive is
//!   committed, so a target that passes takes the commit too; it leaves nothing on success.
//! - [`Target::begin`] starts a [`Pending`] archive under temporary names: nothing under a final
//!   name, nothing any command lists. Its bytes (it is a `Write`) go to the temporary names, cut
//!   into parts as the target's layout says.
//! - [`Pending::sync`]: every byte written is on the device before it is read back.
//! - [`Pending::open_for_readback`] reads the synced bytes back from the device, not from the
//!   page cache.
//! - [`Pending::commit`]: the archive and its receipt appear together under their final names,
//!   never replacing an existing file; once it returns `Ok`, both are durable.
//! - [`Target::scan`], [`Target::find`]: nothing temporary and nothing whose commit or deletion
//!   is under way ([`Target::unsettled`]) is listed; archives without a usable receipt are
//!   listed with the reason.
//! - [`Target::read`], [`Target::open`]: an archive's data, part after part, from the device;
//!   [`Target::open`] holds it open, so a deletion after the opening cannot cut a pass short.
//! - [`Target::delete`]: the archive stops being one, for every command, before any of its data
//!   goes.
//! - [`Target::recover`] settles whatever interrupted runs and deletions left; only under the
//!   run lock. [`Target::remove_temporaries`] removes one run's temporary files (a stopped
//!   run's cleanup).
//!
//! **Atomicity.** A final name appears only for complete, synced data, by a rename that
//! refuses to replace an existing file ([`local::rename_noreplace`]). The receipt is the commit
//! marker: it is renamed into place last, so an archive with its receipt is complete. Before
//! any data file gets its final name, the receipt is written under a marker name
//! (`.vouch-commit.RUN.RECEIPT`); while a marker exists, the archive is not listed. Deletion is
//! the same the other way round: the receipt is renamed to `.vouch-deleting.RECEIPT` first.
//!
//! **Durability** (a directory target). Each part is fsynced when the next one is started and
//! all of them by [`Pending::sync`]; the temporary names themselves are not made durable (a
//! temporary file lost in a power cut is nothing to lose). The commit marker is fsynced, then
//! the directory; after the data files are renamed the directory is fsynced; after the receipt
//! is renamed into place the directory is fsynced again. A deletion fsyncs the directory after
//! the receipt is renamed to the deletion marker, after the data files are removed, and after
//! the marker is removed.
//!
//! **What a crash leaves, and who cleans it up** (a directory target):
//!
//! - killed (`SIGKILL`, power loss) between [`Target::begin`] and the start of the commit:
//!   temporary files `.vouch-tmp.RUN.*`, never listed; the next run's preflight removes every
//!   temporary file in the target while it holds the run lock ([`Target::recover`]). A run
//!   that fails on its own drops its [`Pending`]s, and a dropped pending removes its temporary
//!   files at once. A run stopped by SIGTERM, SIGINT or SIGHUP waits until a commit in
//!   progress has ended, then removes its own temporary files ([`Target::remove_temporaries`],
//!   called from [`crate::systemd::stop`]).
//! - killed inside the commit (after the marker is written, between two renames, or before the
//!   receipt is renamed into place): the marker, and the data files under their temporary or
//!   final names. The archive is not listed. The next run's preflight ([`Target::recover`])
//!   finishes the commit when every file the marker's receipt lists is there and their sizes
//!   add up to its `archive-size` (the archive had been read back before the marker was
//!   written), and otherwise removes the files already under final names, then the marker; the
//!   temporary files go with the other leftovers. A marker that cannot be read as a receipt of
//!   its archive, or whose receipt is already in place, is removed alone.
//! - a commit that fails with an error undoes itself at once: the data files already renamed
//!   and the marker are removed, and what was not renamed stays temporary (removed when the
//!   pending is dropped). Only a failure of the last directory fsync, after the receipt is in
//!   place, is reported while the archive stays committed.
//! - killed inside a deletion: the deletion marker and perhaps some data files; the archive is
//!   not listed. The next prune or run's retention ([`Target::finish_deletions`]), or the next
//!   run's preflight ([`Target::recover`]), finishes the deletion. A data file that cannot be
//!   removed fails the deletion (after every other data file is gone) and leaves the marker,
//!   so the next attempt finishes it.
//! - killed inside the probe: a file whose name starts with `.vouch-tmp.`, removed like any
//!   other temporary file.
//!
//! Remote kinds implement the same steps with their own means. An S3 target
//! ([`s3::store::Store`]) is not written by the run's stream: it gets a copy of the committed
//! archive (an object that appears only once its upload completes, read back, then a receipt
//! object written last as the commit marker, [`s3::copy`]); listing, reading, deleting and
//! recovering go through this trait like a directory's. The commands reach the configured
//! targets of every kind as [`Configured`]. An sftp target also gets a copy of the committed
//! archive ([`sftp::copy`]): a temporary name, `fsync@openssh.com`, the read-back, then a
//! rename that refuses to replace and the receipt last (see DESIGN.md, "Remote targets").

pub mod archives; // the archives on a target, their receipts and verification records
pub mod local; // a directory target (local disks, mounted network filesystems)
pub mod receipt; // the unencrypted receipt beside each archive
pub mod retention; // which archives to keep; pruning the rest
pub mod s3; // S3-compatible object storage: request signing so far
pub mod sftp; // SFTP servers over the system ssh: the client, preflight and the run's copy

use crate::config;
use crate::error::Error;
use crate::exit::ExitCode;
use crate::host::dirs::Dirs;
use archives::Archive;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// One place archives are written to, listed on and deleted from. Every method may be called
/// without the run lock unless it says otherwise.
pub trait Target: std::fmt::Debug {
    /// The preflight write test: creates, writes, syncs and commits a probe exactly as an
    /// archive is committed, then removes it. Leaves nothing behind when it succeeds.
    fn probe(&self) -> io::Result<()>;

    /// Whether any file of an archive called `archive` (its data, its first part or either
    /// receipt name) exists already, so that a run picks another name.
    fn name_taken(&self, archive: &str) -> bool;

    /// Starts writing the archive `archive` for the run `run_id`, under temporary names and
    /// laid out as the target is configured (one file or parts).
    fn begin(&self, archive: &str, run_id: &str) -> io::Result<Box<dyn Pending>>;

    /// Where the archive `archive` is (or would be) on this target, as messages and the
    /// journal (`VOUCH_ARCHIVE`) name it.
    fn archive_path(&self, archive: &str) -> PathBuf;

    /// Whether the target is there to be listed at all (a directory target: its directory
    /// exists). Commands that look an archive up across targets skip those that are not.
    fn present(&self) -> bool;

    /// Every committed archive on the target, of any backup name, oldest first (see
    /// [`archives`] for how files are grouped and receipts read). Fails when the target cannot
    /// be read, also when it is not there.
    fn scan(&self) -> io::Result<Vec<Archive>>;

    /// The archives of backup `backup` ([`archives::is_own`]), oldest first.
    fn scan_own(&self, backup: &str) -> io::Result<Vec<Archive>> {
        Ok(self
            .scan()?
            .into_iter()
            .filter(|a| archives::is_own(&a.name, backup))
            .collect())
    }

    /// The archive whose file name is `name`, when the target is there and holds it.
    fn find(&self, name: &str) -> io::Result<Option<Archive>> {
        if !self.present() {
            return Ok(None);
        }
        Ok(self.scan()?.into_iter().find(|a| a.name == name))
    }

    /// One pass over a listed archive's data, its files in order, opened as the pass starts.
    fn read(&self, archive: &Archive) -> io::Result<Box<dyn Read + Send>>;

    /// Opens every data file of a listed archive before any is read, for as many passes as a
    /// check needs: an archive deleted after this (`vouch verify` does not take the run lock)
    /// is still read to its end.
    fn open(&self, archive: &Archive) -> io::Result<Box<dyn Opened>>;

    /// Whether a listed archive is being deleted or is gone.
    fn is_gone(&self, archive: &Archive) -> bool;

    /// Until when the storage itself refuses to delete a listed archive (S3 Object Lock), if
    /// it does; retention keeps such an archive. A directory never locks.
    fn locked_until(&self, _archive: &Archive) -> io::Result<Option<time::OffsetDateTime>> {
        Ok(None)
    }

    /// Free bytes for an unprivileged writer, when the target can tell.
    fn free_bytes(&self) -> Option<u64>;

    /// Deletes a listed archive: its receipt is turned into the deletion marker first, then
    /// its data goes, then the marker. An archive without a receipt is refused. The error names
    /// the file it is about.
    fn delete(&self, archive: &Archive) -> Result<(), (PathBuf, io::Error)>;

    /// Finishes every deletion that was interrupted; returns the archives.
    fn finish_deletions(&self) -> io::Result<Vec<String>>;

    /// The archives whose commit or deletion is under way, or was interrupted: not archives for
    /// any command until [`Target::recover`] has settled them.
    fn unsettled(&self) -> io::Result<Vec<String>>;

    /// Puts the target in order after interrupted runs and deletions: finishes or undoes every
    /// interrupted commit, finishes every interrupted deletion, removes every temporary file.
    /// Only while holding the run lock.
    fn recover(&self) -> io::Result<Recovery>;

    /// Removes the temporary files of the run `run_id`; returns how many went. Never fails:
    /// what it cannot remove is left for the next run's [`Target::recover`].
    fn remove_temporaries(&self, run_id: &str) -> usize;
}

/// An archive being written to one target. Dropped without [`Pending::commit`], it removes
/// what it wrote.
pub trait Pending: Write {
    /// The (first) temporary file, as errors name it.
    fn path(&self) -> &Path;

    /// Makes every byte written so far durable.
    fn sync(&mut self) -> io::Result<()>;

    /// Reads the synced archive back from the target's storage, its parts in order.
    fn open_for_readback(&self) -> io::Result<Box<dyn Read + Send>>;

    /// The archive's final file names, in order: its own name alone, or its parts.
    fn final_names(&self) -> Vec<String>;

    /// Whether the archive ends up in parts (its receipt is then the split receipt).
    fn is_split(&self) -> bool;

    /// Commits the archive with its receipt `receipt` (JSON) named `receipt_name`: the
    /// receipt under its marker name, the data under its final names, then the receipt under
    /// its own (see the module doc). A failure undoes what the commit did.
    fn commit(self: Box<Self>, receipt_name: &str, receipt: &[u8]) -> io::Result<Placed>;
}

/// An archive opened for several passes.
pub trait Opened {
    /// One pass from its first byte; passes may overlap.
    fn reader(&self) -> io::Result<Box<dyn Read + Send>>;
}

/// Where a commit put an archive.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The archive's path (for a split archive, the name its parts share).
    pub path: PathBuf,
    /// The files it wrote, as the run's "wrote" line names them.
    pub wrote: String,
}

/// What [`Target::recover`] did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Archives whose interrupted commit was finished.
    pub finished: Vec<String>,
    /// Archives whose interrupted commit was undone (files under final names removed).
    pub undone: Vec<String>,
    /// Archives whose interrupted deletion was finished.
    pub deleted: Vec<String>,
    /// Temporary files of interrupted runs that were removed.
    pub removed: Vec<PathBuf>,
}

impl Recovery {
    /// Whether anything was done.
    pub fn is_empty(&self) -> bool {
        self.finished.is_empty()
            && self.undone.is_empty()
            && self.deleted.is_empty()
            && self.removed.is_empty()
    }
}

/// The target a `[[target]]` of the config describes.
pub fn open(config: &config::Target) -> Box<dyn Target> {
    Box::new(local::Local::new(config))
}

/// A configured target of any kind, as the commands that read archives reach it: a
/// directory (`[[target]]` with a `path`), S3 object storage (`kind = "s3"`) or a directory
/// on an SSH server (`kind = "sftp"`).
#[derive(Debug, Clone, Copy)]
pub enum Configured<'a> {
    /// A directory target.
    Dir(&'a config::Target),
    /// An S3 target.
    S3(&'a config::Remote),
    /// An sftp target.
    Sftp(&'a config::SftpRemote),
}

impl<'a> Configured<'a> {
    /// The target's name.
    pub fn name(&self) -> &'a str {
        match self {
            Configured::Dir(t) => &t.name,
            Configured::S3(r) => &r.name,
            Configured::Sftp(r) => &r.name,
        }
    }

    /// Its retention.
    pub fn keep(&self) -> &'a config::Keep {
        match self {
            Configured::Dir(t) => &t.keep,
            Configured::S3(r) => &r.keep,
            Configured::Sftp(r) => &r.keep,
        }
    }

    /// Where its archives are, as messages name it: the directory, `s3://BUCKET/PREFIX` or
    /// `sftp://USER@HOST:PORT/PATH/`.
    pub fn location(&self) -> PathBuf {
        match self {
            Configured::Dir(t) => t.path.clone(),
            Configured::S3(r) => PathBuf::from(format!("s3://{}/{}", r.s3.bucket, r.s3.prefix)),
            Configured::Sftp(r) => PathBuf::from(r.sftp.url_of("")),
        }
    }

    /// Whether it is reached over the network (its archives are not files on this host).
    pub fn is_remote(&self) -> bool {
        matches!(self, Configured::S3(_) | Configured::Sftp(_))
    }

    /// The target, ready to list and read. An S3 target needs its access key: a key file that
    /// is missing or malformed is [`Error::RemoteCheck`] with exit 10, naming the file.
    pub fn open(&self, dirs: &Dirs) -> Result<Box<dyn Target>, Error> {
        match self {
            Configured::Dir(t) => Ok(open(t)),
            Configured::S3(r) => {
                let s3 =
                    s3::S3::open(r, dirs.credentials.as_deref()).map_err(|(detail, hint)| {
                        Error::RemoteCheck {
                            target: r.name.clone(),
                            code: ExitCode::Config,
                            detail,
                            hint,
                        }
                    })?;
                Ok(Box::new(s3::store::Store::new(s3, &dirs.state)))
            }
            Configured::Sftp(r) => {
                let sftp = sftp::Sftp::open(r, dirs.credentials.as_deref()).map_err(
                    |(detail, hint)| Error::RemoteCheck {
                        target: r.name.clone(),
                        code: ExitCode::Config,
                        detail,
                        hint,
                    },
                )?;
                Ok(Box::new(sftp::store::Store::new(sftp, &dirs.state)))
            }
        }
    }
}

impl Configured<'_> {
    /// The error of an S3 target whose archives cannot be listed or read: 14 for a bucket that
    /// is not there, 16 for a key the server refuses, else 34.
    pub fn remote_unreadable(&self, error: &io::Error) -> Error {
        let code = match error.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotConnected => ExitCode::TargetMissing,
            io::ErrorKind::PermissionDenied => ExitCode::TargetDenied,
            _ => ExitCode::Remote,
        };
        Error::RemoteCheck {
            target: self.name().to_owned(),
            code,
            detail: format!("cannot read {}: {error}", self.location().display()),
            hint: match self {
                Configured::Sftp(_) => format!(
                    "Check that the server of [[target]] \"{}\" answers ssh from this host with its host key in known-hosts, and that its user may list and read the directory; `vouch preflight` checks all of it.",
                    self.name()
                ),
                _ => format!(
                    "Check that the endpoint of [[target]] \"{}\" answers from this host and that its key may list and read the bucket under its prefix; `vouch preflight` checks both.",
                    self.name()
                ),
            },
        }
    }
}

/// Every configured target: the directory targets, then the S3 targets, then the sftp
/// targets, each in config order.
pub fn configured(settings: &config::Settings) -> Vec<Configured<'_>> {
    let dirs = settings.targets.iter().map(Configured::Dir);
    dirs.chain(settings.remotes.iter().map(Configured::S3))
        .chain(settings.sftp.iter().map(Configured::Sftp))
        .collect()
}

/// A directory holding archives that is no configured target: an archive given on the command
/// line by its path.
pub fn open_dir(dir: &Path) -> Box<dyn Target> {
    Box::new(local::Local::dir(dir))
}

/// An archive found on a target.
#[derive(Debug)]
pub struct Found {
    /// The configured target it is on (an index into the targets searched), if any.
    pub target: Option<usize>,
    /// The target holding it.
    pub store: Box<dyn Target>,
    /// The archive.
    pub archive: Archive,
}

/// Finds one archive given on the command line: a path to the archive (or a part, or its
/// receipt), looked up in the directory it names, or a bare file name looked up on each of
/// `targets` in turn. A path is on the configured target whose directory it names, if any.
pub fn find(arg: &Path, targets: &[Configured], dirs: &Dirs) -> io::Result<Option<Found>> {
    let file_name = arg
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = archives::archive_of_file(&file_name);
    match arg.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && arg.to_string_lossy().contains('/') => {
            let store = open_dir(dir);
            Ok(store.find(&name)?.map(|archive| Found {
                target: targets
                    .iter()
                    .position(|t| !t.is_remote() && t.location() == dir),
                store,
                archive,
            }))
        }
        _ => Ok(find_copies(&name, targets, dirs)?.into_iter().next()),
    }
}

/// Every copy of the archive called `name` (a file name, not a path) on `targets`, in their
/// order.
pub fn find_copies(name: &str, targets: &[Configured], dirs: &Dirs) -> io::Result<Vec<Found>> {
    let mut copies = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let store = open_io(t, dirs)?;
        if let Some(archive) = store.find(name)? {
            copies.push(Found {
                target: Some(i),
                store,
                archive,
            });
        }
    }
    Ok(copies)
}

/// The file name of the newest archive of backup `backup` on any of `targets` (by creation
/// time, then by name).
pub fn latest_name(
    backup: &str,
    targets: &[Configured],
    dirs: &Dirs,
) -> io::Result<Option<String>> {
    let mut newest: Option<Archive> = None;
    for t in targets {
        let store = open_io(t, dirs)?;
        if !store.present() {
            continue;
        }
        for a in store.scan_own(backup)? {
            let key = |a: &Archive| (a.created, a.name.clone());
            if newest.as_ref().is_none_or(|n| key(&a) > key(n)) {
                newest = Some(a);
            }
        }
    }
    Ok(newest.map(|a| a.name))
}

/// [`Configured::open`] for the lookups that fail as I/O.
fn open_io(t: &Configured, dirs: &Dirs) -> io::Result<Box<dyn Target>> {
    t.open(dirs).map_err(|e| io::Error::other(e.to_string()))
}
