//! A directory target: archives are written as temporary files and renamed into place. [`Local`]
//! implements [`super::Target`] with the functions below.
//!
//! Writing: every file is created exclusively (`O_EXCL`, mode 0600) under a temporary name
//! `.vouch-tmp.RUN.FINAL` in the target directory itself (so no rename crosses filesystems),
//! written, `fsync`ed, read back and verified. Until the commit, no file carries a final name;
//! a killed run leaves only temporary files, which the next run removes while it holds the lock.
//!
//! The commit ([`Pending::commit`]) makes an archive and its receipt appear together, even when
//! the archive has many parts and the process dies (`SIGKILL`, power loss) between any two
//! steps:
//!
//! 1. the receipt, which lists every part, is written as `.vouch-commit.RUN.RECEIPT` (the
//!    commit marker) and `fsync`ed, and the directory is `fsync`ed;
//! 2. each part (or the single file) is renamed to its final name with [`rename_noreplace`]
//!    (`RENAME_NOREPLACE`, or its fallbacks on filesystems without it: an existing file is never
//!    replaced), then the directory is `fsync`ed;
//! 3. the marker is renamed to the receipt's final name and the directory is `fsync`ed.
//!
//! A failure inside the commit undoes it at once. A process that died inside it leaves the
//! marker, and [`recover`] (called by the next run's preflight, under the run lock) finishes
//! the commit when every file the marker lists is there, under its temporary or its final name,
//! and their sizes add up to the receipt's; otherwise it removes the files already under final
//! names, then the marker. While a marker exists, `list`, `status` and `verify` do not see the
//! archive at all. The marker deliberately does not start with `.vouch-tmp.RUN.`: removing the
//! temporary files of a run that is stopped mid-commit leaves the marker, so the next run still
//! knows which final names belong to the unfinished commit.
//!
//! Deleting an archive ([`mark_deletion`], then [`finish_deletion`]) is ordered the same way:
//! the receipt is first renamed to `.vouch-deleting.RECEIPT` (the archive stops being an archive
//! for every command), then the data files are removed, then the marker. A deletion that was
//! interrupted is finished by the next prune, retention or preflight ([`recover`]).

use nix::fcntl::{posix_fadvise, renameat2, PosixFadviseAdvice, RenameFlags};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config;
use crate::host::bounded::{self, Links};
use crate::host::fault;
use crate::target::archives::{self, Archive};
use crate::target::receipt::Receipt;

/// What [`recover`] did (defined with the [`super::Target`] trait, whose step it is).
pub use super::Recovery;

/// Every temporary file vouch creates in a target starts with this, and nothing else does.
pub const TEMP_PREFIX: &str = ".vouch-tmp.";
/// An archive's receipt while its files are being renamed into place: `.vouch-commit.RUN.RECEIPT`.
pub const COMMIT_PREFIX: &str = ".vouch-commit.";
/// An archive's receipt while its files are being deleted: `.vouch-deleting.RECEIPT`.
pub const DELETE_PREFIX: &str = ".vouch-deleting.";

/// One file being written into a target directory under a temporary name.
pub struct TempFile {
    dir: PathBuf,
    tmp: PathBuf,
    final_path: PathBuf,
    file: File,
    committed: bool,
}

impl TempFile {
    /// Creates `DIR/.vouch-tmp.RUN.NAME` exclusively with mode 0600.
    pub fn create(dir: &Path, final_name: &str, run_id: &str) -> io::Result<TempFile> {
        let tmp = dir.join(format!("{TEMP_PREFIX}{run_id}.{final_name}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        Ok(TempFile {
            dir: dir.to_owned(),
            tmp,
            final_path: dir.join(final_name),
            file,
            committed: false,
        })
    }

    /// The temporary path.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The path the file gets on commit.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Flushes the file's data and metadata to the device.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.sync_all()
    }

    /// Opens the (synced) temporary file for reading back from the device: its cached pages are
    /// dropped first, so the reads below come from the storage, not from memory.
    pub fn open_for_readback(&self) -> io::Result<File> {
        let file = File::open(&self.tmp)?;
        drop_cache(&file)?;
        Ok(file)
    }

    /// Gives the file another final name (for parts, decided once their number is known).
    pub fn rename_final(&mut self, name: &str) {
        self.final_path = self.dir.join(name);
    }

    /// Bytes written so far.
    pub fn len(&self) -> io::Result<u64> {
        self.file.metadata().map(|m| m.len())
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> io::Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// Renames the file to its final name (never over an existing file) and syncs the directory.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        let dir = File::open(&self.dir)?;
        let path = self.rename_into_place(&dir)?;
        dir.sync_all()?;
        Ok(path)
    }

    /// Renames the file to its final name (never over an existing file), without syncing.
    fn rename_into_place(&mut self, dir: &File) -> io::Result<PathBuf> {
        rename_noreplace(dir, &self.tmp, &self.final_path)?;
        self.committed = true;
        Ok(self.final_path.clone())
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Gives the file `from` the name `to` in the directory `dir`, never over an existing file: the
/// one primitive every commit uses (archive files, parts, receipts, recovery) and that
/// preflight's write probe uses too, so a target that passed preflight can take a commit.
///
/// In order of preference:
/// 1. `renameat2(RENAME_NOREPLACE)`, atomic;
/// 2. where that is not supported (EINVAL), `link` then `unlink` of the temporary name:
///    `link` fails with EEXIST just the same, so an existing file is never replaced;
/// 3. where the filesystem has no hard links either (EPERM, EOPNOTSUPP, ENOSYS: exFAT or FAT
///    through FUSE, some network filesystems), `lstat` checks that `to` is absent, then a plain
///    `renameat`. The check and the rename are two steps: this is safe against other vouch runs
///    only because every commit happens while the run lock is held. A program other than vouch
///    that creates a file of the same final name between the two steps would see it replaced;
///    the final names carry the run's timestamp, so nothing but vouch is expected to use them.
pub fn rename_noreplace(dir: &File, from: &Path, to: &Path) -> io::Result<()> {
    let (from_name, to_name) = (leaf(from), leaf(to));
    match renameat2(dir, from_name, dir, to_name, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => match fs::hard_link(from, to) {
            Ok(()) => {
                let _ = fs::remove_file(from);
                Ok(())
            }
            Err(e) if no_hard_links(&e) => rename_if_absent(dir, from_name, to),
            Err(e) => Err(e),
        },
        Err(e) => Err(e.into()),
    }
}

fn leaf(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(OsStr::new(""))
}

/// True for the errors `link` gives on a filesystem that has no hard links at all.
fn no_hard_links(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
    )
}

/// The last resort of [`rename_noreplace`]: EEXIST if `to` exists (a link is not followed),
/// else a plain rename. Only under the run lock.
fn rename_if_absent(dir: &File, from_name: &OsStr, to: &Path) -> io::Result<()> {
    match fs::symlink_metadata(to) {
        Ok(_) => Err(io::Error::from_raw_os_error(libc::EEXIST)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            nix::fcntl::renameat(dir, from_name, dir, leaf(to)).map_err(io::Error::from)
        }
        Err(e) => Err(e),
    }
}

/// How archives are laid out on `target`: split below the largest file the filesystem and
/// `RLIMIT_FSIZE` allow (`auto`), into forced parts, or never (`off`).
pub fn layout(target: &config::Target) -> Layout {
    let limit = crate::host::filesystem::largest_file(&target.path);
    match target.split {
        config::Split::Off => Layout::Single,
        config::Split::Size(n) => {
            let n = crate::host::fault::part_size().unwrap_or(n);
            Layout::Parts(limit.map_or(n, |l| n.min(l)))
        }
        config::Split::Auto => limit.map_or(Layout::Single, Layout::PartsIfNeeded),
    }
}

/// The most parts one archive may have: `.000` to `.999`, so that `cat NAME.*` (which sorts
/// names as text) concatenates them in order.
pub const MAX_PARTS: usize = 1000;

/// How an archive is laid out on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One file; fails with EFBIG if the target cannot hold it.
    Single,
    /// Parts of at most this many bytes, named `.000`, `.001`, ... even if one part suffices.
    Parts(u64),
    /// One file if it fits below this size, else parts of this size.
    PartsIfNeeded(u64),
}

/// An archive being written to one target: one or more temporary files that become the archive
/// (or its parts) on commit.
pub struct Pending {
    dir: PathBuf,
    name: String,
    run_id: String,
    layout: Layout,
    parts: Vec<TempFile>,
    current: u64,
}

/// The name of part `index` of archive `name`.
pub fn part_name(name: &str, index: usize) -> String {
    format!("{name}.{index:03}")
}

impl Pending {
    /// Starts writing archive `name` into `dir`.
    pub fn create(dir: &Path, name: &str, run_id: &str, layout: Layout) -> io::Result<Pending> {
        let first = match layout {
            Layout::Single => name.to_owned(),
            _ => part_name(name, 0),
        };
        Ok(Pending {
            dir: dir.to_owned(),
            name: name.to_owned(),
            run_id: run_id.to_owned(),
            layout,
            parts: vec![TempFile::create(dir, &first, run_id)?],
            current: 0,
        })
    }

    fn part_limit(&self) -> Option<u64> {
        match self.layout {
            Layout::Single => None,
            Layout::Parts(n) | Layout::PartsIfNeeded(n) => Some(n),
        }
    }

    /// The first (or only) temporary file.
    pub fn temp_path(&self) -> &Path {
        self.parts[0].temp_path()
    }

    /// Every temporary file, in order.
    pub fn temp_paths(&self) -> Vec<PathBuf> {
        self.parts
            .iter()
            .map(|p| p.temp_path().to_owned())
            .collect()
    }

    /// Flushes every part to the device.
    pub fn sync(&mut self) -> io::Result<()> {
        self.parts.iter_mut().try_for_each(TempFile::sync)
    }

    /// Opens the synced parts for reading back from the device, in order, as one stream.
    pub fn open_for_readback(&self) -> io::Result<Box<dyn std::io::Read + Send>> {
        let mut chain: Box<dyn std::io::Read + Send> = Box::new(std::io::empty());
        for p in &self.parts {
            chain = Box::new(std::io::Read::chain(chain, p.open_for_readback()?));
        }
        Ok(chain)
    }

    /// The final file names, in order (the archive's name alone, or its parts).
    pub fn final_names(&self) -> Vec<String> {
        let split = match self.layout {
            Layout::Single => false,
            Layout::Parts(_) => true,
            Layout::PartsIfNeeded(_) => self.parts.len() > 1,
        };
        if split {
            (0..self.parts.len())
                .map(|i| part_name(&self.name, i))
                .collect()
        } else {
            vec![self.name.clone()]
        }
    }

    /// Whether the archive ends up in parts (its receipt is then the split receipt).
    pub fn is_split(&self) -> bool {
        self.final_names()[0] != self.name
    }

    /// Commits the archive with its receipt `receipt` (JSON) named `receipt_name`, in the order
    /// the module doc describes, and returns the data files' final paths. A failure undoes what
    /// the commit did: nothing is left under a final name.
    pub fn commit(mut self, receipt_name: &str, receipt: &[u8]) -> io::Result<Vec<PathBuf>> {
        let dir = File::open(&self.dir)?;
        let marker = write_marker(&self.dir, &self.run_id, receipt_name, receipt)?;
        fault::pass("commit-marked");
        let names = self.final_names();
        let mut renamed = Vec::new();
        let result = (|| {
            for (part, name) in self.parts.iter_mut().zip(&names) {
                part.rename_final(name);
                renamed.push(part.rename_into_place(&dir)?);
                fault::pass("commit-part");
            }
            dir.sync_all()?;
            fault::pass("commit-renamed");
            rename_noreplace(&dir, &marker, &self.dir.join(receipt_name))
        })();
        if let Err(e) = result {
            for path in &renamed {
                let _ = fs::remove_file(path);
            }
            let _ = dir.sync_all();
            let _ = fs::remove_file(&marker);
            let _ = dir.sync_all();
            return Err(e);
        }
        dir.sync_all()?;
        Ok(renamed)
    }
}

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut room = self.part_limit().map(|l| l - self.current);
        if room == Some(0) {
            if self.parts.len() >= MAX_PARTS {
                return Err(io::Error::other(format!(
                    "the archive would need more than {MAX_PARTS} parts; use a larger split size"
                )));
            }
            let last = self.parts.last_mut().expect("at least one part");
            last.sync()?;
            let next = part_name(&self.name, self.parts.len());
            self.parts
                .push(TempFile::create(&self.dir, &next, &self.run_id)?);
            self.current = 0;
            room = self.part_limit();
        }
        let n = room.map_or(buf.len(), |r| buf.len().min(r as usize));
        let written = self
            .parts
            .last_mut()
            .expect("at least one part")
            .write(&buf[..n])?;
        self.current += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.parts.last_mut().expect("at least one part").flush()
    }
}

/// Asks the kernel to drop `file`'s cached pages (they must be clean, i.e. synced).
pub fn drop_cache(file: &File) -> io::Result<()> {
    posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).map_err(io::Error::from)
}

/// Writes `bytes` to `DIR/NAME` atomically (temporary file, fsync, rename, directory fsync),
/// replacing an existing file of that name.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], run_id: &str) -> io::Result<PathBuf> {
    let mut pending = TempFile::create(dir, name, run_id)?;
    pending.write_all(bytes)?;
    pending.sync()?;
    fs::rename(&pending.tmp, &pending.final_path)?;
    pending.committed = true;
    File::open(dir)?.sync_all()?;
    Ok(pending.final_path.clone())
}

/// Writes the commit marker `DIR/.vouch-commit.RUN.RECEIPT` (exclusively, mode 0600), syncs it
/// and the directory, and returns its path.
fn write_marker(
    dir: &Path,
    run_id: &str,
    receipt_name: &str,
    receipt: &[u8],
) -> io::Result<PathBuf> {
    let path = dir.join(format!("{COMMIT_PREFIX}{run_id}.{receipt_name}"));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)?;
    let written = file.write_all(receipt).and_then(|()| file.sync_all());
    if let Err(e) = written.and_then(|()| File::open(dir)?.sync_all()) {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Puts a target directory back in order after interrupted runs and prunes: finishes or undoes
/// every interrupted commit, finishes every interrupted deletion, then removes the temporary
/// files that are left. Call only while holding the run lock.
pub fn recover(dir: &Path) -> io::Result<Recovery> {
    let mut out = Recovery::default();
    for (run_id, receipt_name) in markers(dir, COMMIT_PREFIX)? {
        let (archive, finished) = recover_commit(dir, &run_id, &receipt_name)?;
        if finished {
            out.finished.push(archive);
        } else {
            out.undone.push(archive);
        }
    }
    out.deleted = finish_deletions(dir)?;
    out.removed = remove_leftovers(dir)?;
    Ok(out)
}

/// The markers with `prefix` in `dir`: for a commit marker the run id and the receipt's name,
/// for a deletion marker an empty run id and the receipt's name.
fn markers(dir: &Path, prefix: &str) -> io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let found = if prefix == COMMIT_PREFIX {
            rest.split_once('.')
                .map(|(run, receipt)| (run.to_owned(), receipt.to_owned()))
        } else {
            Some((String::new(), rest.to_owned()))
        };
        out.extend(found);
    }
    out.sort();
    Ok(out)
}

/// The names of the archives whose commit or deletion is under way (or was interrupted) in
/// `dir`: not archives for any command until [`recover`] has settled them.
pub fn unsettled(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for prefix in [COMMIT_PREFIX, DELETE_PREFIX] {
        for (_, receipt_name) in markers(dir, prefix)? {
            out.extend(Receipt::archive_of(&receipt_name).map(str::to_owned));
        }
    }
    Ok(out)
}

/// Whether something exists at `path` (a link is not followed).
fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Finishes or undoes the commit of the marker `.vouch-commit.RUN.RECEIPT`; returns the
/// archive's name and whether it was finished.
fn recover_commit(dir: &Path, run_id: &str, receipt_name: &str) -> io::Result<(String, bool)> {
    let marker = dir.join(format!("{COMMIT_PREFIX}{run_id}.{receipt_name}"));
    let archive = Receipt::archive_of(receipt_name)
        .unwrap_or(receipt_name)
        .to_owned();
    let split = receipt_name.ends_with(crate::target::receipt::SPLIT_SUFFIX);
    let receipt = bounded::read(&marker, Links::Refuse, bounded::RECEIPT_CAP)
        .ok()
        .and_then(|b| serde_json::from_slice::<Receipt>(&b).ok())
        .filter(|_| Receipt::archive_of(receipt_name).is_some())
        .filter(|r| {
            r.check(&archive, split, time::OffsetDateTime::now_utc())
                .is_ok()
        });
    let handle = File::open(dir)?;
    let final_receipt = dir.join(receipt_name);
    let Some(receipt) = receipt.filter(|_| !exists(&final_receipt)) else {
        // A marker that cannot be read was never complete, so no file was renamed on its
        // strength (or the commit already ended): it goes alone.
        remove(&marker)?;
        handle.sync_all()?;
        return Ok((archive, false));
    };
    let names = receipt.data_names();
    let temp = |n: &str| dir.join(format!("{TEMP_PREFIX}{run_id}.{n}"));
    let size_of = |n: &String| {
        [dir.join(n), temp(n)]
            .iter()
            .find_map(|p| fs::symlink_metadata(p).ok().filter(|m| m.is_file()))
            .map(|m| m.len())
    };
    let sizes: Option<Vec<u64>> = names.iter().map(size_of).collect();
    let complete = sizes.is_some_and(|s| s.iter().sum::<u64>() == receipt.archive_size);
    if complete {
        for n in &names {
            if !exists(&dir.join(n)) {
                rename_noreplace(&handle, &temp(n), &dir.join(n))?;
            }
        }
        handle.sync_all()?;
        rename_noreplace(&handle, &marker, &final_receipt)?;
        handle.sync_all()?;
        return Ok((archive, true));
    }
    for n in &names {
        remove(&dir.join(n))?;
    }
    handle.sync_all()?;
    remove(&marker)?;
    handle.sync_all()?;
    Ok((archive, false))
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether `file` is the name of a part of the archive `archive` (`ARCHIVE.NNN`).
pub fn is_part_name(archive: &str, file: &str) -> bool {
    file.strip_prefix(archive)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|index| index.len() == 3 && index.bytes().all(|b| b.is_ascii_digit()))
}

/// The data files of `archive` in `dir`: the archive file itself and every part of its name.
/// Only names of its own are ever returned, whatever a receipt says.
pub fn data_files(dir: &Path, archive: &str) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name == archive || is_part_name(archive, name) {
            out.push(dir.join(name));
        }
    }
    out.sort();
    Ok(out)
}

/// Starts deleting an archive: renames its receipt `receipt` (a path in `dir`) to the deletion
/// marker and syncs the directory. From then on the archive is no archive for any command, and
/// [`finish_deletion`] (or a later [`recover`]) removes its files. Returns the marker's path.
pub fn mark_deletion(dir: &Path, receipt: &Path) -> io::Result<PathBuf> {
    let name = receipt
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a receipt's name"))?;
    let marker = dir.join(format!("{DELETE_PREFIX}{name}"));
    fs::rename(receipt, &marker)?;
    File::open(dir)?.sync_all()?;
    fault::pass("prune-marked");
    Ok(marker)
}

/// Removes the data files of the archive whose deletion marker is `marker`, syncs the directory,
/// then removes every receipt of it and the marker. A file that cannot be removed makes it fail
/// (the error names the first such file) once every other data file is gone; the marker stays,
/// so the next attempt finishes the job.
pub fn finish_deletion(dir: &Path, marker: &Path) -> Result<String, (PathBuf, io::Error)> {
    let receipt_name = marker
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(DELETE_PREFIX))
        .unwrap_or_default();
    let Some(archive) = Receipt::archive_of(receipt_name) else {
        return Err((
            marker.to_owned(),
            io::Error::new(io::ErrorKind::InvalidInput, "not a deletion marker"),
        ));
    };
    let at = |p: &Path| {
        let p = p.to_owned();
        move |e| (p, e)
    };
    let files = data_files(dir, archive).map_err(at(dir))?;
    let mut first = None;
    for f in &files {
        if let Err(e) = remove(f) {
            first.get_or_insert((f.clone(), e));
        }
        fault::pass("prune-delete");
    }
    if let Some(failed) = first {
        return Err(failed);
    }
    let sync = || File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir));
    sync()?;
    for r in [
        Receipt::file_name(archive, false),
        Receipt::file_name(archive, true),
    ] {
        remove(&dir.join(&r)).map_err(at(&dir.join(&r)))?;
    }
    remove(marker).map_err(at(marker))?;
    sync()?;
    Ok(archive.to_owned())
}

/// Finishes every interrupted deletion in `dir`; returns the archives.
pub fn finish_deletions(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for (_, receipt_name) in markers(dir, DELETE_PREFIX)? {
        let marker = dir.join(format!("{DELETE_PREFIX}{receipt_name}"));
        let archive = finish_deletion(dir, &marker)
            .map_err(|(path, e)| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        out.push(archive);
    }
    Ok(out)
}

/// Removes temporary files left by runs that were killed. Call only while holding the lock.
pub fn remove_leftovers(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .as_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
            && entry.file_type()?.is_file()
        {
            fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    if !removed.is_empty() {
        File::open(dir)?.sync_all()?;
    }
    Ok(removed)
}

/// A directory target: a `[[target]]` of the config, or a directory named on the command line.
#[derive(Debug)]
pub struct Local {
    dir: PathBuf,
    /// The target's config; `None` for a directory that is not configured.
    config: Option<crate::config::Target>,
}

impl Local {
    /// The directory target `config` describes.
    pub fn new(config: &crate::config::Target) -> Local {
        Local {
            dir: config.path.clone(),
            config: Some(config.clone()),
        }
    }

    /// A directory that is no configured target; archives begun in it are one file.
    pub fn dir(dir: &Path) -> Local {
        Local {
            dir: dir.to_owned(),
            config: None,
        }
    }

    /// How archives are laid out here (see [`layout`]).
    fn layout(&self) -> Layout {
        self.config.as_ref().map_or(Layout::Single, layout)
    }
}

impl super::Target for Local {
    fn probe(&self) -> io::Result<()> {
        probe(&self.dir)
    }

    fn name_taken(&self, archive: &str) -> bool {
        [
            archive.to_owned(),
            Receipt::file_name(archive, false),
            Receipt::file_name(archive, true),
            part_name(archive, 0),
        ]
        .iter()
        .any(|n| self.dir.join(n).exists())
    }

    fn begin(&self, archive: &str, run_id: &str) -> io::Result<Box<dyn super::Pending>> {
        let pending = Pending::create(&self.dir, archive, run_id, self.layout())?;
        Ok(Box::new(pending))
    }

    fn archive_path(&self, archive: &str) -> PathBuf {
        self.dir.join(archive)
    }

    fn present(&self) -> bool {
        self.dir.is_dir()
    }

    fn scan(&self) -> io::Result<Vec<Archive>> {
        archives::scan(&self.dir)
    }

    fn read(&self, archive: &Archive) -> io::Result<Box<dyn io::Read + Send>> {
        archive.open()
    }

    fn open(&self, archive: &Archive) -> io::Result<Box<dyn super::Opened>> {
        Ok(Box::new(archive.open_all()?))
    }

    fn is_gone(&self, archive: &Archive) -> bool {
        archive.is_gone()
    }

    fn free_bytes(&self) -> Option<u64> {
        let st = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        Some(st.blocks_available().saturating_mul(st.fragment_size()))
    }

    fn delete(&self, archive: &Archive) -> Result<(), (PathBuf, io::Error)> {
        let Some(receipt) = &archive.receipt_path else {
            return Err((
                archive.dir.join(&archive.name),
                io::Error::new(io::ErrorKind::NotFound, "it has no receipt to mark it with"),
            ));
        };
        let marker = mark_deletion(&archive.dir, receipt).map_err(|e| (receipt.clone(), e))?;
        finish_deletion(&archive.dir, &marker).map(|_| ())
    }

    fn finish_deletions(&self) -> io::Result<Vec<String>> {
        finish_deletions(&self.dir)
    }

    fn unsettled(&self) -> io::Result<Vec<String>> {
        unsettled(&self.dir)
    }

    fn recover(&self) -> io::Result<Recovery> {
        recover(&self.dir)
    }

    fn remove_temporaries(&self, run_id: &str) -> usize {
        remove_with_prefix(&self.dir, &format!("{TEMP_PREFIX}{run_id}."))
    }
}

impl super::Pending for Pending {
    fn path(&self) -> &Path {
        self.temp_path()
    }

    fn sync(&mut self) -> io::Result<()> {
        Pending::sync(self)?;
        fault::corrupt(self.temp_path());
        Ok(())
    }

    fn open_for_readback(&self) -> io::Result<Box<dyn io::Read + Send>> {
        Pending::open_for_readback(self)
    }

    fn final_names(&self) -> Vec<String> {
        Pending::final_names(self)
    }

    fn is_split(&self) -> bool {
        Pending::is_split(self)
    }

    fn commit(self: Box<Self>, receipt_name: &str, receipt: &[u8]) -> io::Result<super::Placed> {
        let wrote = written_files(&self.dir, &self.final_names(), receipt_name);
        let path = self.dir.join(&self.name);
        Pending::commit(*self, receipt_name, receipt)?;
        Ok(super::Placed { path, wrote })
    }
}

/// The files a commit put in `dir`, as the "wrote" line names them: the archive itself, or for
/// a split archive its first and last parts and the receipt that lists them.
fn written_files(dir: &Path, parts: &[String], receipt: &str) -> String {
    match parts {
        [one] => dir.join(one).display().to_string(),
        [first, .., last] => format!(
            "{} to {} ({} parts, listed in {})",
            dir.join(first).display(),
            last,
            parts.len(),
            receipt
        ),
        [] => dir.display().to_string(),
    }
}

/// Creates, writes and fsyncs a probe file in `dir`, commits it with the archive's own commit
/// ([`TempFile::commit`], so [`rename_noreplace`] and its fallbacks), removes it and fsyncs the
/// directory. Both of its names start with the temporary prefix, so a probe left by a killed
/// run is removed like any other leftover.
pub fn probe(dir: &Path) -> io::Result<()> {
    let name = format!("{TEMP_PREFIX}probe.{}", std::process::id());
    let mut probe = TempFile::create(dir, &name, "probe")?;
    probe.write_all(&[0u8; 4096])?;
    probe.sync()?;
    let committed = probe.commit()?;
    fs::remove_file(&committed)?;
    File::open(dir)?.sync_all()
}

/// Removes the regular files in `dir` whose names start with `prefix`; returns how many.
fn remove_with_prefix(dir: &Path, prefix: &str) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let doomed: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().as_bytes().starts_with(prefix.as_bytes()))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    let removed = doomed.iter().filter(|p| fs::remove_file(p).is_ok()).count();
    if removed > 0 {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_last_resort_rename_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let handle = File::open(dir.path()).unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        fs::write(&from, "new").unwrap();
        fs::write(&to, "old").unwrap();
        let e = rename_if_absent(&handle, leaf(&from), &to).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(fs::read_to_string(&to).unwrap(), "old");
        fs::remove_file(&to).unwrap();
        std::os::unix::fs::symlink("/nonexistent", &to).unwrap();
        let e = rename_if_absent(&handle, leaf(&from), &to).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EEXIST),
            "a dangling link exists too"
        );
        fs::remove_file(&to).unwrap();
        rename_if_absent(&handle, leaf(&from), &to).unwrap();
        assert_eq!(fs::read_to_string(&to).unwrap(), "new");
        assert!(!from.exists());
    }

    #[test]
    fn pending_is_private_and_invisible_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = TempFile::create(dir.path(), "a.tar.gz.age", "run1").unwrap();
        p.write_all(b"data").unwrap();
        p.sync().unwrap();
        let mode = fs::metadata(p.temp_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("a.tar.gz.age").exists());
        let final_path = p.commit().unwrap();
        assert_eq!(fs::read(final_path).unwrap(), b"data");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_pending_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = TempFile::create(dir.path(), "a", "run1").unwrap();
        drop(p);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_never_replaces_an_existing_archive() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "old").unwrap();
        let mut p = TempFile::create(dir.path(), "a", "run1").unwrap();
        p.write_all(b"new").unwrap();
        assert!(p.commit().is_err());
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"old");
    }

    fn write_parts(layout: Layout, len: usize) -> (tempfile::TempDir, Vec<String>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut p = Pending::create(dir.path(), "a.tar.gz.age", "r", layout).unwrap();
        p.write_all(&data).unwrap();
        p.sync().unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut p.open_for_readback().unwrap(), &mut back).unwrap();
        assert_eq!(back, data);
        let paths = p.commit("a.tar.gz.age.json", b"{}\n").unwrap();
        let names = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        (dir, names, data)
    }

    #[test]
    fn parts_are_cut_at_the_size_and_named_in_order() {
        let (dir, names, data) = write_parts(Layout::Parts(1000), 2500);
        assert_eq!(
            names,
            ["a.tar.gz.age.000", "a.tar.gz.age.001", "a.tar.gz.age.002"]
        );
        let mut joined = Vec::new();
        for n in &names {
            let part = fs::read(dir.path().join(n)).unwrap();
            assert!(part.len() <= 1000);
            joined.extend(part);
        }
        assert_eq!(joined, data);
        let (_, names, _) = write_parts(Layout::Parts(1000), 1000);
        assert_eq!(names, ["a.tar.gz.age.000"]);
    }

    #[test]
    fn parts_if_needed_stay_one_file_when_it_fits() {
        let (_, names, _) = write_parts(Layout::PartsIfNeeded(1000), 1000);
        assert_eq!(names, ["a.tar.gz.age"]);
        let (_, names, _) = write_parts(Layout::PartsIfNeeded(1000), 1001);
        assert_eq!(names, ["a.tar.gz.age.000", "a.tar.gz.age.001"]);
    }

    #[test]
    fn leftovers_are_only_our_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".vouch-tmp.x.a"), "").unwrap();
        fs::write(dir.path().join("keep.tar.gz.age"), "").unwrap();
        let removed = remove_leftovers(dir.path()).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(dir.path().join("keep.tar.gz.age").exists());
    }

    /// A split archive of three parts written and read back, ready to commit, and its receipt.
    fn ready(dir: &Path) -> (Pending, Vec<u8>) {
        let name = "a-20260101T000000Z.tar.gz.age";
        let mut p = Pending::create(dir, name, "run1", Layout::Parts(100)).unwrap();
        p.write_all(&[7u8; 250]).unwrap();
        p.sync().unwrap();
        let receipt = serde_json::json!({
            "format": "vouch-receipt", "version": 1, "run-id": "run1", "host": "h",
            "name": "a", "target": "t", "archive": name,
            "parts": [format!("{name}.000"), format!("{name}.001"), format!("{name}.002")],
            "created": "2026-01-01T00:00:00Z", "vouch-version": "0", "archive-size": 250,
            "archive-sha256": "", "files": 0, "dirs": 0, "symlinks": 0, "bytes-in": 0,
            "tar-bytes": 0, "required": [], "unreadable": 0, "changed": 0, "skipped": 0,
            "verified-at": "2026-01-01T00:00:01Z", "verification": "full"
        });
        (p, serde_json::to_vec(&receipt).unwrap())
    }

    const RECEIPT: &str = "a-20260101T000000Z.tar.gz.age-receipt.json";

    fn names(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    /// What a process killed after `renamed` of the parts' renames leaves, with the marker.
    fn killed_mid_commit(dir: &Path, renamed: usize) {
        let (mut p, receipt) = ready(dir);
        let d = File::open(dir).unwrap();
        write_marker(dir, "run1", RECEIPT, &receipt).unwrap();
        let names = p.final_names();
        for (part, name) in p.parts.iter_mut().zip(&names).take(renamed) {
            part.rename_final(name);
            part.rename_into_place(&d).unwrap();
        }
        // The process dies: nothing else is removed.
        for part in &mut p.parts {
            part.committed = true;
        }
    }

    #[test]
    fn commit_puts_the_receipt_in_place_last_and_leaves_no_marker() {
        let dir = tempfile::tempdir().unwrap();
        let (p, receipt) = ready(dir.path());
        p.commit(RECEIPT, &receipt).unwrap();
        let n = names(dir.path());
        assert_eq!(n.len(), 4, "{n:?}");
        assert!(n.contains(&RECEIPT.to_owned()));
        assert!(n.iter().all(|f| !f.starts_with('.')), "{n:?}");
    }

    #[test]
    fn a_failed_commit_leaves_nothing_under_a_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let (p, receipt) = ready(dir.path());
        // The receipt's name is taken: the last step fails, and the parts are taken back.
        fs::write(dir.path().join(RECEIPT), "other").unwrap();
        assert!(p.commit(RECEIPT, &receipt).is_err());
        assert_eq!(names(dir.path()), [RECEIPT]);
    }

    #[test]
    fn recovery_finishes_a_commit_whose_files_are_all_there() {
        for renamed in 0..=3 {
            let dir = tempfile::tempdir().unwrap();
            killed_mid_commit(dir.path(), renamed);
            let done = recover(dir.path()).unwrap();
            assert_eq!(done.finished.len(), 1, "{renamed}: {done:?}");
            let n = names(dir.path());
            assert_eq!(n.len(), 4, "{renamed}: {n:?}");
            assert!(n.iter().all(|f| !f.starts_with('.')), "{n:?}");
        }
    }

    #[test]
    fn recovery_undoes_a_commit_whose_files_are_not_all_there() {
        for renamed in 0..=2 {
            let dir = tempfile::tempdir().unwrap();
            killed_mid_commit(dir.path(), renamed);
            // The temporary files of the run were removed (a stop signal's cleanup).
            for f in names(dir.path()) {
                if f.starts_with(TEMP_PREFIX) {
                    fs::remove_file(dir.path().join(f)).unwrap();
                }
            }
            assert!(!unsettled(dir.path()).unwrap().is_empty());
            let done = recover(dir.path()).unwrap();
            assert_eq!(done.undone.len(), 1, "{renamed}: {done:?}");
            assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
        }
    }

    #[test]
    fn an_interrupted_deletion_is_finished_and_touches_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (p, receipt) = ready(dir.path());
        p.commit(RECEIPT, &receipt).unwrap();
        fs::write(dir.path().join("b-20260102T000000Z.tar.gz.age"), "b").unwrap();
        let marker = mark_deletion(dir.path(), &dir.path().join(RECEIPT)).unwrap();
        assert_eq!(
            unsettled(dir.path()).unwrap(),
            ["a-20260101T000000Z.tar.gz.age"]
        );
        // Killed after the first data file went.
        fs::remove_file(dir.path().join("a-20260101T000000Z.tar.gz.age.000")).unwrap();
        assert!(marker.exists());
        let done = recover(dir.path()).unwrap();
        assert_eq!(done.deleted, ["a-20260101T000000Z.tar.gz.age"]);
        assert_eq!(names(dir.path()), ["b-20260102T000000Z.tar.gz.age"]);
    }
}
