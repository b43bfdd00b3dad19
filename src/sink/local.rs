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

/// A file being written into a target directory under a temporary name.
pub struct Pending {
    dir: PathBuf,
    tmp: PathBuf,
    final_path: PathBuf,
    file: File,
    committed: bool,
}

impl Pending {
    /// Creates `DIR/.vouch-tmp.RUN.NAME` exclusively with mode 0600.
    pub fn create(dir: &Path, final_name: &str, run_id: &str) -> io::Result<Pending> {
        let tmp = dir.join(format!("{TEMP_PREFIX}{run_id}.{final_name}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        Ok(Pending {
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

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Asks the kernel to drop `file`'s cached pages (they must be clean, i.e. synced).
pub fn drop_cache(file: &File) -> io::Result<()> {
    posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).map_err(io::Error::from)
}

/// Writes `bytes` to `DIR/NAME` atomically (temporary file, fsync, rename, directory fsync),
/// replacing an existing file of that name.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], run_id: &str) -> io::Result<PathBuf> {
    let mut pending = Pending::create(dir, name, run_id)?;
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
        let mut p = Pending::create(dir.path(), "a.tar.gz.age", "run1").unwrap();
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
        let p = Pending::create(dir.path(), "a", "run1").unwrap();
        drop(p);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_never_replaces_an_existing_archive() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "old").unwrap();
        let mut p = Pending::create(dir.path(), "a", "run1").unwrap();
        p.write_all(b"new").unwrap();
        assert!(p.commit().is_err());
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"old");
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
