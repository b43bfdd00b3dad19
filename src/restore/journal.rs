//! The commit journal of a restore, and recovery from one that an interrupted restore left.
//!
//! Every change the commit makes to the destination is first appended to `journal` in the
//! staging directory, one line per step, written (not fsynced) before the step is taken: a
//! created path, a path renamed aside, an existing directory's metadata. Undoing a step appends
//! `undone N`, and a commit that went through appends `complete`. Because the file is written
//! before each step, it survives the death of the process (SIGKILL, a crash) at any point; it
//! is not meant to survive a power loss, which may lose the last lines. The journal is made
//! with the staging directory, before anything else is put there; its first line holds the
//! destination and the staging directory's token (see `restore::record`).
//!
//! Undoing is the same code for a failed or interrupted restore and for one found later:
//! newest step first, each one tolerant of having been taken only partly or undone already
//! (a created path that is not there, an aside that was never made). Every path is relative
//! to the destination and reached through held directory descriptors (`restore::at`), so
//! nothing outside the destination is touched and no symlink is followed.
//!
//! A later restore finds leftovers only among the destination's own `.vouch-restore.*`
//! entries, and acts on one only when it is a directory owned by the same user, not in use by
//! a running restore (which holds an `flock` on it), whose journal was written for this
//! destination and carries a token that the record of this host's staging directories lists
//! for that very directory. Anything else is left alone, with a warning naming it.

use super::at::{is_dir, Tree};
use super::path::{check_relative, OLD_PREFIX, STAGING_PREFIX};
use super::record::Record;
use super::RestoreError;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The journal's name inside the staging directory.
pub const JOURNAL_NAME: &str = "journal";

/// The first word of a journal's first line, followed by the format version, the staging
/// directory's token and the destination it was written for.
const HEADER: &str = "vouch-restore-journal";

/// The journal format written and read: version 1 (without a token) is never acted on.
const VERSION: &str = "2";

/// One undoable step of the commit. Paths are relative to the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A path that did not exist before.
    Created(Vec<u8>),
    /// A path that was in the way, renamed aside: into the staging directory's `old/`, or
    /// beside itself when it is on another filesystem.
    Aside {
        /// Where it was.
        orig: Vec<u8>,
        /// Where it is kept until the restore is over.
        aside: Vec<u8>,
    },
    /// An existing directory whose metadata is about to be changed, with the metadata it had.
    DirMeta {
        /// The directory.
        path: Vec<u8>,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
        /// Its modification time: seconds,
        mtime: i64,
        /// and nanoseconds.
        mtime_nsec: i64,
    },
}

/// What a rollback did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Undone {
    /// Replaced paths renamed back.
    pub put_back: u64,
    /// Created paths removed.
    pub removed: u64,
    /// Steps that could not be undone (each one logged).
    pub failed: u64,
}

/// The commit journal: the file the steps are appended to and, once read (from a journal
/// found later, or from this restore's own when it is undone or cleaned up), the steps, which
/// of them were undone, and whether the commit went through.
///
/// A journal being written keeps its steps only in its file: a restore of many entries would
/// otherwise hold every created path a second time. It reads them back from there when they
/// are needed, through the same code that reads a journal an interrupted restore left.
#[derive(Debug, Default)]
pub struct Journal {
    file: Option<File>,
    /// The staging directory's token, from the first line.
    token: String,
    /// The destination it is written for, and the staging directory's name in it.
    root: std::path::PathBuf,
    name: Vec<u8>,
    /// Whether `steps`, `undone` and `complete` hold what the file says.
    read: bool,
    /// Until then, the paths put aside outside the staging directory, for
    /// [`Journal::drop_replaced`] (rare: only those on another filesystem than it).
    aside_beside: Vec<Vec<u8>>,
    steps: Steps,
    undone: Vec<bool>,
    complete: bool,
}

/// The steps in the order recorded, packed so that a commit of many entries holds little
/// more than their paths: a created path as its bytes in one buffer, any other step (rarer:
/// paths put aside, directories' metadata) whole.
#[derive(Debug, Default)]
struct Steps {
    created: Vec<u8>,
    /// Per step: where its path ends in `created` (a step of another kind adds nothing).
    ends: Vec<usize>,
    /// The steps other than `Created`, by their number.
    others: std::collections::BTreeMap<usize, Step>,
}

impl Steps {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn push(&mut self, step: Step) {
        let i = self.len();
        match step {
            Step::Created(p) => self.created.extend_from_slice(&p),
            other => {
                self.others.insert(i, other);
            }
        }
        self.ends.push(self.created.len());
    }

    /// Step `i` (`i < len()`).
    fn get(&self, i: usize) -> Step {
        if let Some(step) = self.others.get(&i) {
            return step.clone();
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Step::Created(self.created[start..self.ends[i]].to_vec())
    }
}

/// Escapes a path for a journal line: bytes other than letters, digits and `/._-+,@:=~` as
/// `%XX`, so that spaces, newlines and non-UTF-8 names survive.
pub fn escape(p: &[u8]) -> String {
    let mut out = String::with_capacity(p.len());
    for &b in p {
        if b.is_ascii_alphanumeric() || b"/._-+,@:=~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape`].
fn unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

impl Step {
    /// The step as a journal line, without the newline.
    fn line(&self) -> String {
        match self {
            Step::Created(p) => format!("created {}", escape(p)),
            Step::Aside { orig, aside } => format!("aside {} {}", escape(orig), escape(aside)),
            Step::DirMeta {
                path,
                mode,
                uid,
                gid,
                mtime,
                mtime_nsec,
            } => format!(
                "dir-meta {} {mode:o} {uid} {gid} {mtime} {mtime_nsec}",
                escape(path)
            ),
        }
    }

    /// Parses a journal line (`None`: not a step). `staging` is the staging directory's name.
    fn parse(line: &str, staging: &[u8]) -> Result<Option<Step>, String> {
        let words: Vec<&str> = line.split(' ').collect();
        let path = |w: &str| -> Result<Vec<u8>, String> {
            let p = unescape(w).ok_or_else(|| format!("bad path {w:?}"))?;
            check_relative(&p).map_err(|why| format!("path {w:?} is {why}"))?;
            Ok(p)
        };
        let number =
            |w: &str| -> Result<i64, String> { w.parse().map_err(|_| format!("bad number {w:?}")) };
        let step = match words.as_slice() {
            ["created", p] => Step::Created(path(p)?),
            ["aside", orig, aside] => {
                let (orig, aside) = (path(orig)?, path(aside)?);
                if !aside_shape_ok(&orig, &aside, staging) {
                    return Err(format!(
                        "{} was not kept where vouch keeps replaced paths",
                        line
                    ));
                }
                Step::Aside { orig, aside }
            }
            ["dir-meta", p, mode, uid, gid, mtime, nsec] => Step::DirMeta {
                path: path(p)?,
                mode: u32::from_str_radix(mode, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| format!("bad mode {mode:?}"))?,
                uid: u32::try_from(number(uid)?).map_err(|e| e.to_string())?,
                gid: u32::try_from(number(gid)?).map_err(|e| e.to_string())?,
                mtime: number(mtime)?,
                mtime_nsec: number(nsec)?,
            },
            _ => return Ok(None),
        };
        Ok(Some(step))
    }
}

/// Whether `aside` is where a restore keeps the replaced `orig`: `STAGING/old/N`, or a
/// `.vouch-restore-old.*` name beside `orig`.
fn aside_shape_ok(orig: &[u8], aside: &[u8], staging: &[u8]) -> bool {
    let parent = |p: &[u8]| -> Vec<u8> {
        p.iter()
            .rposition(|&b| b == b'/')
            .map(|i| p[..i].to_vec())
            .unwrap_or_default()
    };
    let name = |p: &[u8]| -> Vec<u8> {
        p.iter()
            .rposition(|&b| b == b'/')
            .map(|i| p[i + 1..].to_vec())
            .unwrap_or_else(|| p.to_vec())
    };
    let in_old = [staging, b"/old"].concat();
    let numbered = |n: &[u8]| !n.is_empty() && n.iter().all(u8::is_ascii_digit);
    (parent(aside) == in_old && numbered(&name(aside)))
        || (parent(aside) == parent(orig) && name(aside).starts_with(OLD_PREFIX.as_bytes()))
}

impl Journal {
    /// Starts the journal file in the staging directory `dir` (held open), called `name` in
    /// the destination `root`, with the staging directory's `token`.
    pub fn create(dir: &OwnedFd, root: &Path, name: &[u8], token: &str) -> io::Result<Journal> {
        let flags = OFlag::O_RDWR
            | OFlag::O_APPEND
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(
            dir.as_fd(),
            JOURNAL_NAME,
            flags,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(io::Error::from)?;
        let mut file = File::from(fd);
        file.write_all(header(root, token).as_bytes())?;
        file.write_all(b"\n")?;
        Ok(Journal {
            file: Some(file),
            token: token.to_owned(),
            root: root.to_owned(),
            name: name.to_vec(),
            ..Journal::default()
        })
    }

    /// Reads the journal a restore left in the staging directory `dir` (held open), called
    /// `name` in `root`, and keeps it open to record what is undone. An unfinished last line
    /// (the process died while writing it) is left out: its step was never taken.
    pub fn open(dir: &OwnedFd, root: &Path, name: &[u8]) -> Result<Journal, String> {
        let flags = OFlag::O_RDWR
            | OFlag::O_APPEND
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(dir.as_fd(), JOURNAL_NAME, flags, Mode::empty())
            .map_err(|e| format!("cannot open it: {e}"))?;
        let file = File::from(fd);
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err("it is not a regular file".into());
        }
        let mut journal = Journal {
            file: Some(file),
            root: root.to_owned(),
            name: name.to_vec(),
            ..Journal::default()
        };
        journal.read_back()?;
        Ok(journal)
    }

    /// Reads the file from its start into `steps`, `undone` and `complete`, checking that it
    /// was written for this destination, and that its token is the one known, if one is.
    fn read_back(&mut self) -> Result<(), String> {
        let text = match &self.file {
            Some(file) => read_all(file).map_err(|e| format!("cannot read it: {e}"))?,
            None => return Ok(()),
        };
        let text = String::from_utf8(text).map_err(|_| "it is not text".to_owned())?;
        let mut lines: Vec<&str> = text.split('\n').collect();
        // After the last newline: empty, or a line cut short.
        lines.pop();
        let first = lines.first().copied().unwrap_or_default();
        let words: Vec<&str> = first.splitn(4, ' ').collect();
        let token = match words.as_slice() {
            [HEADER, VERSION, token, dest] if *dest == escape(self.root.as_os_str().as_bytes()) => {
                (*token).to_owned()
            }
            [HEADER, VERSION, _, _] => {
                return Err(format!("it was written for another destination ({first:?})"))
            }
            [HEADER, ..] => {
                return Err(format!(
                    "it is in a format this vouch does not act on ({first:?}), without the token that shows this host's vouch made it"
                ))
            }
            _ => return Err("it does not start like a vouch restore journal".into()),
        };
        if !self.token.is_empty() && self.token != token {
            return Err(format!("its token changed ({first:?})"));
        }
        self.token = token;
        let (mut steps, mut undone, mut complete) = (Steps::default(), Vec::new(), false);
        for (n, line) in lines.iter().enumerate().skip(1) {
            let bad = |why: String| format!("line {}: {why}", n + 1);
            if *line == "complete" {
                complete = true;
            } else if let Some(i) = line.strip_prefix("undone ") {
                let i: usize = i.parse().map_err(|_| bad(format!("bad step {i:?}")))?;
                let slot = undone
                    .get_mut(i)
                    .ok_or_else(|| bad(format!("no step {i}")))?;
                *slot = true;
            } else {
                let step = Step::parse(line, &self.name)
                    .map_err(bad)?
                    .ok_or_else(|| bad(format!("unknown record {line:?}")))?;
                steps.push(step);
                undone.push(false);
            }
        }
        (self.steps, self.undone, self.complete, self.read) = (steps, undone, complete, true);
        Ok(())
    }

    /// Reads this restore's own journal back, unless that was done: `false`, having said why,
    /// when it cannot be.
    fn ensure_read(&mut self) -> bool {
        if self.read {
            return true;
        }
        match self.read_back() {
            Ok(()) => true,
            Err(why) => {
                log::error!(
                    "restore: cannot read back the journal in {}: {why}",
                    self.root
                        .join(std::ffi::OsStr::from_bytes(&self.name))
                        .display()
                );
                false
            }
        }
    }

    /// The staging directory's token, from the journal's first line.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether any step is recorded and not undone.
    pub fn changed_anything(&self) -> bool {
        self.undone.iter().any(|u| !u)
    }

    /// Whether the commit went through.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Appends a line to the file (when there is one).
    fn write(&mut self, line: &str) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(format!("{line}\n").as_bytes()),
            None => Ok(()),
        }
    }

    /// Records `step` before it is taken (in the file only, until the steps are read back).
    pub fn record(&mut self, step: Step) -> io::Result<()> {
        self.write(&step.line())?;
        if self.read {
            self.steps.push(step);
            self.undone.push(false);
        } else if let Step::Aside { aside, .. } = step {
            if !aside.starts_with(&[&self.name[..], b"/"].concat()) {
                self.aside_beside.push(aside);
            }
        }
        Ok(())
    }

    /// Records that the commit went through: from now on, a leftover staging directory is only
    /// cleaned up, never rolled back.
    pub fn mark_complete(&mut self) -> io::Result<()> {
        self.write("complete")?;
        self.complete = true;
        Ok(())
    }

    /// Undoes every step not undone yet, newest first, recording each one. A step that cannot
    /// be undone is logged with where its data is kept (`staging`), and the rest still are.
    pub fn rollback(&mut self, tree: &mut Tree, staging: &Path) -> Undone {
        let mut done = Undone::default();
        if !self.ensure_read() {
            done.failed += 1;
            return done;
        }
        for i in (0..self.steps.len()).rev() {
            if self.undone[i] {
                continue;
            }
            let step = self.steps.get(i);
            match undo(tree, &step) {
                Ok(Some(Step::Created(_))) => done.removed += 1,
                Ok(Some(Step::Aside { .. })) => done.put_back += 1,
                Ok(_) => {}
                Err(e) => {
                    done.failed += 1;
                    log::error!(
                        "restore: undoing `{}` in {} failed: {e} (what was there is kept in {})",
                        step.line(),
                        tree.path().display(),
                        staging.display()
                    );
                    continue;
                }
            }
            self.undone[i] = true;
            if let Err(e) = self.write(&format!("undone {i}")) {
                log::warn!("restore: cannot record an undone step in the journal: {e}");
            }
        }
        done
    }

    /// Deletes the replaced paths kept beside themselves (on another filesystem than the
    /// staging directory), once the restore has gone through. Those in the staging directory
    /// go with it.
    pub fn drop_replaced(&self, tree: &mut Tree, staging: &[u8]) {
        let in_staging = [staging, b"/"].concat();
        let read = self.steps.others.values().filter_map(|step| match step {
            Step::Aside { aside, .. } if !aside.starts_with(&in_staging) => Some(aside),
            _ => None,
        });
        for aside in read.chain(&self.aside_beside) {
            if let Err(e) = tree.remove_all(aside) {
                log::warn!(
                    "cannot remove the replaced {}: {e}",
                    tree.show(aside).display()
                );
            }
        }
    }
}

/// Undoes one step; `Ok(Some(step))` when something was changed back, `Ok(None)` when there
/// was nothing to undo (the step had not been taken, or was undone already).
fn undo(tree: &mut Tree, step: &Step) -> io::Result<Option<Step>> {
    match step {
        Step::Created(p) => match tree.lstat(p)? {
            Some(_) => tree.remove_entry(p)?,
            None => return Ok(None),
        },
        Step::Aside { orig, aside } => {
            if tree.lstat(aside)?.is_none() {
                return Ok(None);
            }
            if tree.lstat(orig)?.is_some() {
                return Err(io::Error::other(format!(
                    "{} is in the way",
                    tree.show(orig).display()
                )));
            }
            tree.rename(aside, orig)?;
        }
        Step::DirMeta {
            path,
            mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
        } => {
            match tree.lstat(path)? {
                Some(st) if is_dir(&st) => {}
                _ => return Err(io::Error::other("no longer a directory")),
            }
            let owner = (u64::from(*uid), u64::from(*gid));
            tree.set_meta(path, Some(*mode), owner, (*mtime, *mtime_nsec))?;
        }
    }
    Ok(Some(step.clone()))
}

/// The whole of `file`, from its start (its offset is left alone: it is only appended to).
fn read_all(file: &File) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut text = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        match file.read_at(&mut buf, text.len() as u64) {
            Ok(0) => return Ok(text),
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The first line of a journal.
fn header(root: &Path, token: &str) -> String {
    format!(
        "{HEADER} {VERSION} {token} {}",
        escape(root.as_os_str().as_bytes())
    )
}

/// Undoes what interrupted restores left in the destination `to` (when it exists): each
/// `.vouch-restore.*` staging directory there that this host's vouch recorded is rolled back
/// by its journal and removed, or just removed when its journal is complete or records no
/// change. Says what it did on stderr or in the journal; leaves anything else alone, saying
/// so.
pub fn recover(to: &Path) -> Result<(), RestoreError> {
    let Ok(root) = fs::canonicalize(to) else {
        return Ok(());
    };
    if !root.is_dir() {
        return Ok(());
    }
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |error| RestoreError::Io { path, error }
    };
    let mut names: Vec<Vec<u8>> = Vec::new();
    for entry in fs::read_dir(&root).map_err(io_err(&root))? {
        let name = entry.map_err(io_err(&root))?.file_name();
        if name.as_bytes().starts_with(STAGING_PREFIX.as_bytes()) {
            names.push(name.as_bytes().to_vec());
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let mut tree = Tree::open(&root).map_err(io_err(&root))?;
    for name in names {
        recover_one(&mut tree, &name)?;
    }
    Ok(())
}

/// Opens a leftover staging directory and locks it, unless it is not one this user's restore
/// made. `Ok(None)`: leave it alone. Returns it with its device and inode.
fn lock_leftover(tree: &mut Tree, name: &[u8]) -> Result<Option<(File, u64, u64)>, RestoreError> {
    let dir = tree.show(name);
    let io_err = |error| RestoreError::Io {
        path: dir.clone(),
        error,
    };
    let root = tree.dir(b"").map_err(io_err)?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let handle = match nix::fcntl::openat(
        root.as_fd(),
        std::ffi::OsStr::from_bytes(name),
        flags,
        Mode::empty(),
    ) {
        Ok(fd) => File::from(fd),
        Err(nix::Error::ENOENT) => return Ok(None),
        Err(nix::Error::ENOTDIR | nix::Error::ELOOP) => {
            log::warn!(
                "restore: leaving {} alone: it is not a directory",
                dir.display()
            );
            return Ok(None);
        }
        Err(e) => return Err(io_err(io::Error::from(e))),
    };
    let m = handle.metadata().map_err(io_err)?;
    use std::os::unix::fs::MetadataExt;
    if m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o022 != 0 {
        log::warn!(
            "restore: leaving {} alone: it is not a staging directory this user's restore made",
            dir.display()
        );
        return Ok(None);
    }
    match handle.try_lock() {
        Ok(()) => Ok(Some((handle, m.dev(), m.ino()))),
        Err(fs::TryLockError::WouldBlock) => Err(RestoreError::Refused(format!(
            "another restore into {} is running (it is using {}); wait for it to finish",
            tree.path().display(),
            dir.display()
        ))),
        Err(fs::TryLockError::Error(error)) => Err(io_err(error)),
    }
}

/// Whether the directory `dir` (held open) holds nothing.
fn is_empty(dir: &File) -> bool {
    use std::os::fd::AsRawFd;
    fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .is_ok_and(|mut entries| entries.next().is_none())
}

/// Recovers one leftover staging directory, `name` in the destination.
fn recover_one(tree: &mut Tree, name: &[u8]) -> Result<(), RestoreError> {
    let dir = tree.show(name);
    let Some((lock, dev, ino)) = lock_leftover(tree, name)? else {
        return Ok(());
    };
    let io_err = |error| RestoreError::Io {
        path: dir.clone(),
        error,
    };
    tree.adopt(name, OwnedFd::from(lock.try_clone().map_err(io_err)?));
    let held = tree.dir(name).map_err(io_err)?;
    let journal = match Journal::open(&held, tree.path(), name) {
        Ok(j) => j,
        Err(_) if is_empty(&lock) => {
            // A restore that went through, killed between removing its journal and its
            // staging directory: nothing is left in it.
            remove_staging(tree, name, None)?;
            log::warn!("restore: removed the empty {}", dir.display());
            return Ok(());
        }
        Err(why) => {
            log::warn!(
                "restore: leaving {} alone: its journal cannot be used ({why}); nothing in {} was changed by it. \
                 If an interrupted restore of yours left it, the paths it replaced are in {}/old: put back what is needed, then remove it",
                dir.display(),
                tree.path().display(),
                dir.display()
            );
            return Ok(());
        }
    };
    let Some(record) = Record::find(journal.token(), &dir, dev, ino) else {
        log::warn!(
            "restore: leaving {} alone: no record of this host's vouch lists it (see {}), so its journal is not acted on. \
             If an interrupted restore of yours left it, the paths it replaced are in {}/old: put back what is needed, then remove it",
            dir.display(),
            super::record::stores()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            dir.display()
        );
        return Ok(());
    };
    settle(tree, name, journal, record)
}

/// Rolls back (or, when it went through, only cleans up) the recorded leftover `name`.
fn settle(
    tree: &mut Tree,
    name: &[u8],
    mut journal: Journal,
    record: Record,
) -> Result<(), RestoreError> {
    let dir = tree.show(name);
    let root = tree.path().to_owned();
    if journal.is_complete() {
        journal.drop_replaced(tree, name);
        remove_staging(tree, name, Some(record))?;
        log::warn!(
            "restore: removed {}, left by a restore into {} that had gone through",
            dir.display(),
            root.display()
        );
        return Ok(());
    }
    if !journal.changed_anything() {
        remove_staging(tree, name, Some(record))?;
        log::warn!(
            "restore: removed {}, left by a restore that stopped before it changed anything in {}",
            dir.display(),
            root.display()
        );
        return Ok(());
    }
    let undone = journal.rollback(tree, &dir);
    if undone.failed > 0 {
        return Err(RestoreError::Refused(format!(
            "could not undo all of the interrupted restore recorded in {} ({} step(s) failed, see above); \
             it is kept, with the paths it replaced in {}/old",
            dir.display(),
            undone.failed,
            dir.display()
        )));
    }
    remove_staging(tree, name, Some(record))?;
    log::warn!(
        "restore: rolled back an interrupted restore into {}: {} replaced path(s) put back, {} created path(s) removed, {} removed",
        root.display(),
        undone.put_back,
        undone.removed,
        dir.display()
    );
    Ok(())
}

/// Removes the staging directory `name` through the tree: everything in it but the journal,
/// then the journal, then the directory, then its record. Killed part way, what is left still
/// says what it was: a journal as long as anything else is left, then an empty directory.
pub fn remove_staging(
    tree: &mut Tree,
    name: &[u8],
    record: Option<Record>,
) -> Result<(), RestoreError> {
    let dir = tree.show(name);
    let io_err = |error| RestoreError::Io {
        path: dir.clone(),
        error,
    };
    let held = tree.dir(name).map_err(io_err)?;
    let listing = {
        use std::os::fd::AsRawFd;
        fs::read_dir(format!("/proc/self/fd/{}", held.as_raw_fd())).map_err(io_err)?
    };
    for entry in listing {
        let entry = entry.map_err(io_err)?.file_name();
        if entry.as_bytes() != JOURNAL_NAME.as_bytes() {
            let rel = [name, b"/", entry.as_bytes()].concat();
            tree.remove_all(&rel).map_err(io_err)?;
        }
    }
    let journal = [name, b"/", JOURNAL_NAME.as_bytes()].concat();
    if tree.lstat(&journal).map_err(io_err)?.is_some() {
        tree.remove(&journal, false).map_err(io_err)?;
    }
    crate::host::fault::point("restore-journal-removed");
    tree.remove(name, true).map_err(io_err)?;
    if let Some(record) = record {
        record.remove();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::rc::Rc;

    #[test]
    fn paths_survive_escaping() {
        for p in [
            &b"etc/app"[..],
            b"with space/new\nline",
            b"caf\xe9/100%",
            b"\xff\xfe",
        ] {
            let e = escape(p);
            assert!(!e.contains([' ', '\n']), "{e:?}");
            assert_eq!(unescape(&e).unwrap(), p);
        }
    }

    #[test]
    fn steps_round_trip_and_odd_ones_are_refused() {
        let staging = b".vouch-restore.1.2";
        let steps = [
            Step::Created(b"a/b c".to_vec()),
            Step::Aside {
                orig: b"a/x".to_vec(),
                aside: b".vouch-restore.1.2/old/3".to_vec(),
            },
            Step::Aside {
                orig: b"m/x".to_vec(),
                aside: b"m/.vouch-restore-old.1.4".to_vec(),
            },
            Step::DirMeta {
                path: b"a".to_vec(),
                mode: 0o2755,
                uid: 1,
                gid: 2,
                mtime: -3,
                mtime_nsec: 4,
            },
        ];
        for s in &steps {
            assert_eq!(Step::parse(&s.line(), staging).unwrap().as_ref(), Some(s));
        }
        for bad in [
            "created ../x",
            "created /etc",
            "aside etc/passwd elsewhere/x",
            "aside a/x .vouch-restore.9.9/old/1",
            "aside a/x .vouch-restore.1.2/old/../../etc",
            "dir-meta a 17777 0 0 0 0",
        ] {
            assert!(Step::parse(bad, staging).is_err(), "{bad}");
        }
    }

    /// A destination (kept alive by the first value) holding a file `f` ("old") and the
    /// staging directory `name` with its `old/`; its canonical path, the staging directory's,
    /// the destination held open, and the staging directory held.
    fn staged(name: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf, Tree, Rc<OwnedFd>) {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        let dir = root.join(std::ffi::OsStr::from_bytes(name));
        fs::create_dir_all(dir.join("old")).unwrap();
        fs::write(root.join("f"), "old").unwrap();
        let mut tree = Tree::open(&root).unwrap();
        let held = tree.dir(name).unwrap();
        (tmp, root, dir, tree, held)
    }

    #[test]
    fn a_journal_rolls_back_once_even_when_read_again() {
        let name = b".vouch-restore.1.2";
        let (_tmp, root, dir, mut tree, held) = staged(name);
        let token = "0".repeat(32);
        let mut j = Journal::create(&held, &root, name, &token).unwrap();
        let aside = b".vouch-restore.1.2/old/1".to_vec();
        j.record(Step::Aside {
            orig: b"f".to_vec(),
            aside: aside.clone(),
        })
        .unwrap();
        fs::rename(root.join("f"), root.join(".vouch-restore.1.2/old/1")).unwrap();
        j.record(Step::Created(b"f".to_vec())).unwrap();
        fs::write(root.join("f"), "new").unwrap();
        // Recorded but never taken.
        j.record(Step::Created(b"g".to_vec())).unwrap();
        drop(j);
        let mut again = Journal::open(&held, &root, name).unwrap();
        assert!(!again.is_complete());
        assert_eq!(again.token(), token);
        let undone = again.rollback(&mut tree, &dir);
        assert_eq!((undone.put_back, undone.removed, undone.failed), (1, 1, 0));
        assert_eq!(fs::read(root.join("f")).unwrap(), b"old");
        // Read once more: every step is marked undone, the restored old file stays.
        let mut third = Journal::open(&held, &root, name).unwrap();
        assert!(!third.changed_anything());
        assert_eq!(third.rollback(&mut tree, &dir), Undone::default());
        assert_eq!(fs::read(root.join("f")).unwrap(), b"old");
        // A journal written for another destination is not used.
        let other = tempfile::tempdir().unwrap();
        assert!(Journal::open(&held, other.path(), name).is_err());
    }

    #[test]
    fn a_journal_being_written_keeps_its_steps_in_its_file_and_undoes_them_from_there() {
        let name = b".vouch-restore.1.3";
        let (_tmp, root, dir, mut tree, held) = staged(name);
        let mut j = Journal::create(&held, &root, name, &"1".repeat(32)).unwrap();
        j.record(Step::Aside {
            orig: b"f".to_vec(),
            aside: b".vouch-restore.1.3/old/1".to_vec(),
        })
        .unwrap();
        fs::rename(root.join("f"), dir.join("old/1")).unwrap();
        for p in ["f", "d", "d/x"] {
            j.record(Step::Created(p.as_bytes().to_vec())).unwrap();
        }
        fs::write(root.join("f"), "new").unwrap();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/x"), "x").unwrap();
        assert_eq!(j.steps.len(), 0, "the steps are held in memory");
        let undone = j.rollback(&mut tree, &dir);
        assert_eq!((undone.put_back, undone.removed, undone.failed), (1, 3, 0));
        assert_eq!(fs::read(root.join("f")).unwrap(), b"old");
        assert!(!root.join("d").exists());
        // What it undid is in the file, for anyone who reads it later.
        let again = Journal::open(&held, &root, name).unwrap();
        assert!(!again.changed_anything());
    }

    #[test]
    fn a_journal_that_cannot_be_read_back_undoes_nothing_and_says_so() {
        let name = b".vouch-restore.1.4";
        let (_tmp, root, dir, mut tree, held) = staged(name);
        let mut j = Journal::create(&held, &root, name, &"2".repeat(32)).unwrap();
        j.record(Step::Created(b"f".to_vec())).unwrap();
        fs::write(root.join("f"), "new").unwrap();
        // Someone rewrote it meanwhile, with another token.
        let path = dir.join(JOURNAL_NAME);
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace(&"2".repeat(32), &"3".repeat(32));
        fs::write(&path, text).unwrap();
        let undone = j.rollback(&mut tree, &dir);
        assert_eq!(undone.failed, 1);
        assert_eq!(fs::read(root.join("f")).unwrap(), b"new");
    }

    #[test]
    fn a_journal_without_a_token_is_not_acted_on() {
        let root = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(root.path()).unwrap();
        let dir = root.join(".vouch-restore.1.2");
        fs::create_dir(&dir).unwrap();
        let header = format!("vouch-restore-journal 1 {}\ncreated f\n", root.display());
        fs::write(dir.join(JOURNAL_NAME), header).unwrap();
        let mut tree = Tree::open(&root).unwrap();
        let held = tree.dir(b".vouch-restore.1.2").unwrap();
        let err = Journal::open(&held, &root, b".vouch-restore.1.2").unwrap_err();
        assert!(err.contains("token"), "{err}");
    }

    #[test]
    fn nothing_is_undone_through_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("victim"), "keep").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let step = Step::Created(b"link/victim".to_vec());
        let mut tree = Tree::open(root.path()).unwrap();
        assert!(undo(&mut tree, &step).is_err());
        assert!(outside.path().join("victim").exists());
    }
}
