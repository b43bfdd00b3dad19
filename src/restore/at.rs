//! Changing the destination only through directory descriptors held open, never by full path.
//!
//! A check of a path followed by a use of the same path is a race: between the two, someone
//! who can write in the destination can swap a checked directory for a symlink (atomically,
//! with `renameat2(RENAME_EXCHANGE)`), and a restore running as root would then write wherever
//! the link points. So every change a restore makes to its destination goes through a
//! [`Tree`]: the destination is opened once, each directory below it is opened from its parent
//! with `openat(O_NOFOLLOW | O_DIRECTORY)`, and every step (`mkdirat`, `renameat`, `linkat`,
//! `symlinkat`, `mknodat`, `unlinkat`, `fchownat`, `utimensat`, `fchmodat`) names one component
//! relative to such a descriptor, with symlinks at that component not followed. A symlink (or
//! anything else that is not a directory) where a directory is expected makes the step fail
//! instead of being followed.
//!
//! Directory descriptors are kept by relative path, so that a directory is looked up once;
//! renaming or removing a path through the tree forgets what was kept at and below it. A
//! directory that someone moves elsewhere while its descriptor is held keeps receiving what
//! the restore puts there: only a directory that was inside the destination when it was opened
//! is ever written to.

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// How a directory of the tree is opened: never through a symlink, usable only as the
/// directory of `*at` calls (so a directory without read permission opens as well).
fn dir_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn errno(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

/// The last component of a relative path, and the path above it (empty at the top).
pub fn split(rel: &[u8]) -> (&[u8], &OsStr) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], OsStr::from_bytes(&rel[i + 1..])),
        None => (b"", OsStr::from_bytes(rel)),
    }
}

/// The destination directory, with the descriptors of the directories opened below it.
pub struct Tree {
    path: PathBuf,
    /// Open directories by relative path; the destination itself under the empty path.
    dirs: HashMap<Vec<u8>, Rc<OwnedFd>>,
}

/// What is at a path, without following a symlink there.
pub type Stat = nix::sys::stat::FileStat;

/// Whether a stat is of a directory.
pub fn is_dir(st: &Stat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

impl Tree {
    /// Opens the destination `path` (which must be a directory, not a symlink).
    pub fn open(path: &Path) -> io::Result<Tree> {
        let fd = nix::fcntl::open(path, dir_flags(), Mode::empty()).map_err(errno)?;
        let mut dirs = HashMap::new();
        dirs.insert(Vec::new(), Rc::new(fd));
        Ok(Tree {
            path: path.to_owned(),
            dirs,
        })
    }

    /// The destination's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The full path of `rel`, for messages only: nothing is opened by it.
    pub fn show(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.path.clone()
        } else {
            self.path.join(OsStr::from_bytes(rel))
        }
    }

    /// Keeps `fd` as the directory at `rel` (one the caller opened and checked itself).
    pub fn adopt(&mut self, rel: &[u8], fd: OwnedFd) {
        debug_assert!(
            self.dirs.contains_key(split(rel).0),
            "adopted below an unkept directory"
        );
        self.dirs.insert(rel.to_vec(), Rc::new(fd));
    }

    /// Makes everything written to the destination's filesystem so far durable at once
    /// (`syncfs(2)` on the destination): the staged files' data, and the renames that put them
    /// in place. One call instead of an `fsync` per file.
    pub fn sync_filesystem(&self) -> io::Result<()> {
        let root = self
            .dirs
            .get(&[][..])
            .ok_or_else(|| io::Error::other("the destination is not open"))?;
        // The held descriptor is O_PATH, which syncfs refuses: open the same directory again,
        // through it, for reading.
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(root.as_fd(), ".", flags, Mode::empty()).map_err(errno)?;
        nix::unistd::syncfs(&fd).map_err(errno)
    }

    /// The directory at `rel`, opened component by component without following a symlink.
    pub fn dir(&mut self, rel: &[u8]) -> io::Result<Rc<OwnedFd>> {
        if let Some(fd) = self.dirs.get(rel) {
            return Ok(fd.clone());
        }
        let (parent, name) = split(rel);
        let up = self.dir(parent)?;
        let fd = nix::fcntl::openat(up.as_fd(), name, dir_flags(), Mode::empty())
            .map_err(|e| not_a_dir(e, &self.show(rel)))?;
        let fd = Rc::new(fd);
        self.dirs.insert(rel.to_vec(), fd.clone());
        Ok(fd)
    }

    /// The directory above `rel`, and its last component.
    pub fn parent<'r>(&mut self, rel: &'r [u8]) -> io::Result<(Rc<OwnedFd>, &'r OsStr)> {
        let (parent, name) = split(rel);
        Ok((self.dir(parent)?, name))
    }

    /// Forgets the directories kept at and below `rel`, which is about to change.
    ///
    /// A directory is kept only with every directory above it (`dir` opens them on the way
    /// down, `adopt` takes one whose parent is kept, and this forgets whole subtrees), so when
    /// `rel` itself is not kept nothing below it is: the common case, a file, costs one lookup
    /// rather than a look at every kept directory.
    fn forget(&mut self, rel: &[u8]) {
        if !self.dirs.contains_key(rel) {
            return;
        }
        self.dirs.retain(|k, _| {
            !(k.as_slice() == rel || (k.starts_with(rel) && k.get(rel.len()) == Some(&b'/')))
        });
    }

    /// What is at `rel` (not following a symlink there), or `None` when nothing is.
    pub fn lstat(&mut self, rel: &[u8]) -> io::Result<Option<Stat>> {
        let (dir, name) = self.parent(rel)?;
        match nix::sys::stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(nix::Error::ENOENT) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    /// Makes the directory `rel`.
    pub fn mkdir(&mut self, rel: &[u8], mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        nix::sys::stat::mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(mode)).map_err(errno)
    }

    /// Renames `from` to `to` (both relative to the destination), replacing a file at `to`.
    pub fn rename(&mut self, from: &[u8], to: &[u8]) -> io::Result<()> {
        let (a, an) = self.parent(from)?;
        let (b, bn) = self.parent(to)?;
        nix::fcntl::renameat(a.as_fd(), an, b.as_fd(), bn).map_err(errno)?;
        self.forget(from);
        self.forget(to);
        Ok(())
    }

    /// Removes the file, symlink or empty directory at `rel`.
    pub fn remove(&mut self, rel: &[u8], dir: bool) -> io::Result<()> {
        let (up, name) = self.parent(rel)?;
        let how = if dir {
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        nix::unistd::unlinkat(up.as_fd(), name, how).map_err(errno)?;
        self.forget(rel);
        Ok(())
    }

    /// Removes the file, symlink or empty directory at `rel`, whichever it turns out to be
    /// (it may change under a restore between a look and the removal).
    pub fn remove_entry(&mut self, rel: &[u8]) -> io::Result<()> {
        let mut dir = false;
        for _ in 0..4 {
            match self.remove(rel, dir) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::ENOTDIR)) => {
                    dir = !dir;
                }
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && !dir => dir = true,
                done => return done,
            }
        }
        self.remove(rel, dir)
    }

    /// Removes whatever is at `rel`, with everything below it when it is a directory.
    pub fn remove_all(&mut self, rel: &[u8]) -> io::Result<()> {
        let Some(st) = self.lstat(rel)? else {
            return Ok(());
        };
        if !is_dir(&st) {
            return self.remove(rel, false);
        }
        let (up, name) = self.parent(rel)?;
        // std's remove_dir_all opens the last component with O_NOFOLLOW and works below it
        // with descriptors; the directory above is reached through the held descriptor.
        let via = fd_path(&up).join(name);
        std::fs::remove_dir_all(via)?;
        self.forget(rel);
        Ok(())
    }

    /// Makes a hard link `to` to the file `from`.
    pub fn hard_link(&mut self, from: &[u8], to: &[u8]) -> io::Result<()> {
        let (a, an) = self.parent(from)?;
        let (b, bn) = self.parent(to)?;
        nix::unistd::linkat(a.as_fd(), an, b.as_fd(), bn, AtFlags::empty()).map_err(errno)
    }

    /// Makes a symlink at `rel` pointing at `target`.
    pub fn symlink(&mut self, target: &[u8], rel: &[u8]) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        nix::unistd::symlinkat(OsStr::from_bytes(target), dir.as_fd(), name).map_err(errno)
    }

    /// Makes a device node or FIFO at `rel` (mode 0600 until its metadata is set).
    pub fn mknod(&mut self, rel: &[u8], kind: SFlag, rdev: u64) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        nix::sys::stat::mknodat(
            dir.as_fd(),
            name,
            kind,
            Mode::from_bits_truncate(0o600),
            rdev,
        )
        .map_err(errno)
    }

    /// Creates the new file `rel` (mode 0600) for writing.
    pub fn create_file(&mut self, rel: &[u8]) -> io::Result<File> {
        let (dir, name) = self.parent(rel)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(dir.as_fd(), name, flags, Mode::from_bits_truncate(0o600))
            .map_err(errno)?;
        Ok(File::from(fd))
    }

    /// Opens the file `rel` for reading, not through a symlink at `rel`.
    pub fn open_file(&mut self, rel: &[u8]) -> io::Result<File> {
        let (dir, name) = self.parent(rel)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = nix::fcntl::openat(dir.as_fd(), name, flags, Mode::empty()).map_err(errno)?;
        Ok(File::from(fd))
    }

    /// Sets owner (as root), modification time and permission bits of `rel`, without
    /// following a symlink there. `mode` must be `None` for a symlink, which has none.
    pub fn set_meta(
        &mut self,
        rel: &[u8],
        mode: Option<u32>,
        owner: (u64, u64),
        mtime: (i64, i64),
    ) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        if super::is_root() {
            let id = |v: u64| u32::try_from(v).map_err(|_| io::Error::other("id out of range"));
            nix::unistd::fchownat(
                dir.as_fd(),
                name,
                Some(nix::unistd::Uid::from_raw(id(owner.0)?)),
                Some(nix::unistd::Gid::from_raw(id(owner.1)?)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(errno)?;
        }
        let t = nix::sys::time::TimeSpec::new(mtime.0, mtime.1);
        nix::sys::stat::utimensat(dir.as_fd(), name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(errno)?;
        if let Some(mode) = mode {
            nix::sys::stat::fchmodat(
                dir.as_fd(),
                name,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::NoFollowSymlink,
            )
            .map_err(errno)?;
        }
        Ok(())
    }

    /// Checks that every directory above `rel` is a real directory, opening each one.
    #[cfg(test)]
    pub fn reach(&mut self, rel: &[u8]) -> io::Result<()> {
        for a in super::path::ancestors(rel) {
            self.dir(a)?;
        }
        Ok(())
    }
}

/// The path through which the kernel reaches an open descriptor's file.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The error for a directory that could not be opened: a symlink or a file where a directory
/// should be is said so.
fn not_a_dir(e: nix::Error, full: &Path) -> io::Error {
    match e {
        nix::Error::ELOOP | nix::Error::ENOTDIR => io::Error::other(format!(
            "{} is not a directory (a symlink or a file is there now); the restore does not write through it",
            full.display()
        )),
        e => io::Error::other(format!("cannot open {}: {}", full.display(), errno(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_symlink_is_never_followed_on_the_way_down() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let mut tree = Tree::open(root.path()).unwrap();
        tree.create_file(b"d/inside").unwrap();
        assert!(root.path().join("d/inside").is_file());
        for step in [
            tree.create_file(b"link/evil").map(drop),
            tree.mkdir(b"link/evil", 0o755),
            tree.symlink(b"x", b"link/evil"),
        ] {
            let err = step.unwrap_err();
            assert!(err.to_string().contains("not a directory"), "{err}");
        }
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // The link itself is changed, not what it points at.
        tree.set_meta(b"link", None, (0, 0), (5, 0)).unwrap();
        assert_ne!(
            nix::sys::stat::stat(outside.path()).unwrap().st_mtime,
            5,
            "followed the link"
        );
    }

    #[test]
    fn a_held_directory_stays_the_one_that_was_checked() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("d")).unwrap();
        let mut tree = Tree::open(root.path()).unwrap();
        tree.reach(b"d/x").unwrap();
        // Swapped for a symlink after it was opened: the held directory is used.
        fs::rename(root.path().join("d"), root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("d")).unwrap();
        tree.create_file(b"d/x").unwrap();
        assert!(root.path().join("moved/x").is_file());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // Once it was renamed through the tree, it is looked up again, and refused.
        tree.rename(b"moved/x", b"moved/y").unwrap();
        tree.rename(b"moved", b"again").unwrap();
        let _ = tree.rename(b"d", b"d2");
        std::os::unix::fs::symlink(outside.path(), root.path().join("d")).unwrap();
        assert!(tree.create_file(b"d/z").is_err());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn changing_a_directory_forgets_every_directory_kept_below_it() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("a/b/c")).unwrap();
        fs::create_dir_all(root.path().join("ab")).unwrap();
        let mut tree = Tree::open(root.path()).unwrap();
        tree.dir(b"a/b/c").unwrap();
        tree.dir(b"ab").unwrap();
        let kept = |tree: &Tree| {
            let mut k: Vec<String> = tree
                .dirs
                .keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            k.sort();
            k
        };
        assert_eq!(kept(&tree), ["", "a", "a/b", "a/b/c", "ab"]);
        // A file renamed, or a path that is not kept, changes nothing kept.
        fs::write(root.path().join("a/f"), "").unwrap();
        tree.rename(b"a/f", b"a/g").unwrap();
        tree.remove(b"a/g", false).unwrap();
        assert_eq!(kept(&tree), ["", "a", "a/b", "a/b/c", "ab"]);
        // A directory renamed takes what is kept below it, and nothing beside it.
        tree.rename(b"a", b"z").unwrap();
        assert_eq!(kept(&tree), ["", "ab"]);
        // What is then at the old path is looked up again: a symlink there is refused.
        std::os::unix::fs::symlink(outside.path(), root.path().join("a")).unwrap();
        assert!(tree.create_file(b"a/b/c/x").is_err());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
