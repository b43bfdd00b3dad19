//! A directory target: archives are written as temporary files and renamed into place.
//!
//! The commit protocol is the one that survives power loss and `SIGKILL` at any instant:
//! the temporary file is created exclusively (`O_EXCL`, mode 0600) in the target directory itself
//! (so the rename never crosses filesystems), written, `fsync`ed, read back and verified, then
//! renamed to its final name with `RENAME_NOREPLACE` (an existing archive is never replaced) and
//! the directory is `fsync`ed so the rename itself is durable. Until the rename, no file carries a
//! final name; a killed run leaves only a temporary file, which the next run removes while it
//! holds the lock.

use nix::fcntl::{posix_fadvise, renameat2, PosixFadviseAdvice, RenameFlags};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Every temporary file vouch creates in a target starts with this, and nothing else does.
pub const TEMP_PREFIX: &str = ".vouch-tmp.";

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
        let renamed = renameat2(
            &dir,
            self.tmp.file_name().unwrap_or(OsStr::new("")),
            &dir,
            self.final_path.file_name().unwrap_or(OsStr::new("")),
            RenameFlags::RENAME_NOREPLACE,
        );
        match renamed {
            Ok(()) => {}
            // Filesystems without RENAME_NOREPLACE: link(2) fails with EEXIST just the same.
            Err(nix::errno::Errno::EINVAL) => {
                fs::hard_link(&self.tmp, &self.final_path)?;
                let _ = fs::remove_file(&self.tmp);
            }
            Err(e) => return Err(e.into()),
        }
        self.committed = true;
        dir.sync_all()?;
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
    pub fn open_for_readback(&self) -> io::Result<Box<dyn std::io::Read>> {
        let mut chain: Box<dyn std::io::Read> = Box::new(std::io::empty());
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

    /// Renames every part to its final name and returns the paths.
    pub fn commit(mut self) -> io::Result<Vec<PathBuf>> {
        let names = self.final_names();
        let mut out = Vec::new();
        for (part, name) in self.parts.drain(..).zip(names) {
            let mut part = part;
            part.rename_final(&name);
            out.push(part.commit()?);
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
        let paths = p.commit().unwrap();
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
}
