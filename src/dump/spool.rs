//! The spool: where a dump waits, checked, until it becomes an archive entry of known size.
//!
//! A tar header carries its entry's size before the data, and the archive stream cannot be
//! rewound to patch one, so a dump of unknown length is written here first. Pipe-fed dumps go
//! to an anonymous `O_TMPFILE` (no name, so a crash leaves nothing behind); where the
//! filesystem has no `O_TMPFILE`, a named file is created exclusively and removed at once.
//! SQLite needs a path for its copy, so SQLite dumps get a private directory per run
//! (`run-RUNID`, mode 0700) that is removed when the run is done; [`Spool::open`] sweeps the
//! ones a crashed run left.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The prefix of a run's private directory.
const RUN_DIR_PREFIX: &str = "run-";

/// The spool directory of this run.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    run_dir: PathBuf,
}

impl Spool {
    /// Creates `dir` (mode 0700) if missing and removes the private directories of runs that
    /// crashed. Only a run holding the run lock may call it.
    pub fn open(dir: &Path, run_id: &str) -> io::Result<Spool> {
        create(dir)?;
        for entry in fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(RUN_DIR_PREFIX) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(Spool {
            dir: dir.to_owned(),
            run_dir: dir.join(format!("{RUN_DIR_PREFIX}{run_id}")),
        })
    }

    /// Whether `dir` can be created and take an anonymous file, without touching what is in
    /// it (a run holding the lock may be using it).
    pub fn probe(dir: &Path) -> io::Result<()> {
        create(dir)?;
        anonymous_in(dir).map(drop)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An anonymous file, open for reading and writing.
    pub fn anonymous(&self) -> io::Result<File> {
        anonymous_in(&self.dir)
    }

    /// A path in this run's private directory (created on first use), for tools that need one.
    pub fn named(&self, name: &str) -> io::Result<PathBuf> {
        match fs::DirBuilder::new().mode(0o700).create(&self.run_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        Ok(self.run_dir.join(name))
    }
}

/// Creates the spool directory, mode 0700, with its parents.
fn create(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// An anonymous file in `dir`: `O_TMPFILE`, else a named file removed at once.
fn anonymous_in(dir: &Path) -> io::Result<File> {
    let tmpfile = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match tmpfile {
        Ok(f) => Ok(f),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR)
            ) =>
        {
            named_then_removed(dir)
        }
        Err(e) => Err(e),
    }
}

/// A file created exclusively under a fresh name in `dir` and unlinked at once.
fn named_then_removed(dir: &Path) -> io::Result<File> {
    for n in 0..100u32 {
        let path = dir.join(format!(".dump-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => {
                fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free spool file name"))
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.run_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn anonymous_files_have_no_name_and_private_dirs_go_away() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("run-old")).unwrap();
        let spool = Spool::open(dir.path(), "abc").unwrap();
        assert!(!dir.path().join("run-old").exists());
        let mut f = spool.anonymous().unwrap();
        f.write_all(b"dump").unwrap();
        f.rewind().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "dump");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let named = spool.named("db.sqlite").unwrap();
        fs::write(&named, b"x").unwrap();
        drop(spool);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_fallback_unlinks_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), "abc").unwrap();
        let _f = named_then_removed(spool.dir()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
