//! Restoring an archive: safe extraction, every file checked against the manifest before it is
//! moved into place.
//!
//! A restore reads the archive twice. The first pass decrypts it to its end for the two files
//! that close it, `.vouch/manifest.json` and `.vouch/SHA256SUMS`, and hashes the ciphertext
//! (compared with the receipt when there is one). Nothing is written during that pass: the
//! manifest is checked as a whole first. Every path must be relative and plain (no `/` at the
//! start, no `.` or `..` component, no empty component), appear once, and not lie below an
//! entry that is not a directory (a symlink `a` followed by a file `a/x` is refused, since
//! writing `a/x` would follow the link, and so is `a/x` followed by a symlink or file `a`, since
//! placing `a` would replace the directory just made for `a/x`; a directory may come after
//! what is below it); hard links must name an earlier file of the archive.
//! Then the destination is checked: without `--in-place` nothing the restore would create may
//! already exist there, and no path may pass through a symlink (or a file) already in it.
//!
//! The second pass compares each tar entry with the manifest in order (path, type, mode, size,
//! link target) and writes the data of each file into a staging directory inside the
//! destination, one flat file per entry, hashing it as it is written. Owner (as root), mode and
//! modification time are set on the staged file. The names in the archive are never used to
//! open anything during this pass, so a hostile archive can write nothing but numbered files in
//! the staging directory.
//!
//! Only when the whole archive has been read, every file matched its SHA-256 and the ciphertext
//! hashed the same as in the first pass does the commit start: directories are made, staged
//! files renamed into place, symlinks and hard links created, every step taken relative to
//! directory descriptors opened one component at a time without following a symlink
//! (`restore::at`), so that a directory swapped for a symlink while the restore runs is refused
//! rather than followed. With `--in-place`, whatever is in the way is first renamed into the staging
//! directory. Every step is recorded in a journal (in memory, and in a file in the staging
//! directory) before it is taken; if one fails, the journal is undone in reverse (created paths
//! removed, replaced ones renamed back), so the destination ends as it was. The staging
//! directory (and with it the replaced files) is removed at the end.
//!
//! While the restore writes, SIGINT, SIGTERM and SIGHUP are held back (`crate::systemd::signals`) and
//! looked for between steps: one that arrived makes the restore undo itself and then die by
//! it. A restore killed outright leaves its staging directory with the journal file, which the
//! next restore into the same destination rolls back before anything else (see
//! `restore::journal`), provided the record kept outside the destination lists the journal's
//! token for that directory (`restore::record`).
//!
//! No entry may use vouch's own working names ([`working_name`]); extended tar headers and the
//! closing files are read only up to a cap (`tarstream::HeaderCap`,
//! `manifest::read_closing_file`), so a small archive cannot make a restore hold gigabytes.
//!
//! Device nodes and FIFOs are never in archives vouch writes (the manifest lists them as
//! skipped). An archive holding one is refused, unless `--devices` is given, the process runs as
//! root, and the manifest lists the entry among its skipped special files.

mod at;
mod journal;
mod record;

use crate::pipeline::crypt::{self, Identity};
use crate::pipeline::io::{HashReader, BUFFER_SIZE};
use crate::pipeline::manifest::{sums_line, Entry, EntryType, Manifest, MANIFEST_PATH, SUMS_PATH};
use crate::systemd::signals;
use at::{is_dir, Stat, Tree};
use flate2::read::MultiGzDecoder;
use journal::{Journal, Step, JOURNAL_NAME};
use record::Record;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The prefix of the staging directory inside the destination.
pub const STAGING_PREFIX: &str = ".vouch-restore.";

/// The prefix of files kept beside their destination: replaced paths on another filesystem
/// than the staging directory, and copies about to be renamed into place.
pub const OLD_PREFIX: &str = ".vouch-restore-old.";

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The archive is damaged, does not match its manifest or receipt, or holds an entry that
    /// would be unsafe to extract. Names the first bad entry.
    #[error("{0}")]
    Damaged(String),
    /// The destination or the selection cannot be used as given (an existing path in the way,
    /// a symlink in the destination, a path that matches nothing).
    #[error("{0}")]
    Refused(String),
    /// SIGINT, SIGTERM or SIGHUP stopped the restore; what it had changed was undone.
    #[error("interrupted by {}", .0.as_str())]
    Interrupted(nix::sys::signal::Signal),
    /// Writing into the destination failed.
    #[error("{path}: {error}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// What the kernel said.
        error: io::Error,
    },
}

/// What a restore says when the archive's stream breaks off or stops decrypting.
const TRUNCATED: &str = "the archive is truncated or damaged";

fn damaged(msg: impl Into<String>) -> RestoreError {
    RestoreError::Damaged(msg.into())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |error| RestoreError::Io {
        path: path.to_owned(),
        error,
    }
}

/// What to restore and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The destination directory (created when missing; its parent must exist).
    pub to: PathBuf,
    /// Stored paths to restore, with what is under them; empty: everything.
    pub paths: Vec<Vec<u8>>,
    /// Replace what is already in the destination.
    pub in_place: bool,
    /// Create device nodes and FIFOs (root only).
    pub devices: bool,
    /// Print progress on stderr (only when it is a terminal).
    pub progress: bool,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The destination, canonical.
    pub dir: PathBuf,
    /// The manifest of the archive.
    pub manifest: Manifest,
    /// Which manifest entries were restored.
    pub selected: Vec<bool>,
    /// Entries placed.
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Paths that existed and were replaced (`--in-place`).
    pub replaced: u64,
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Normalizes a PATH argument into a stored path: leading `/` and trailing `/` dropped.
pub fn stored_path(arg: &Path) -> Result<Vec<u8>, RestoreError> {
    let bytes = arg.as_os_str().as_bytes();
    let mut p = bytes;
    while let Some(rest) = p.strip_prefix(b"/") {
        p = rest;
    }
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    check_relative(p).map_err(|why| {
        RestoreError::Refused(format!(
            "{}: not a path that can be stored in an archive ({why})",
            arg.display()
        ))
    })?;
    Ok(p.to_vec())
}

/// Checks that `p` is a plain relative path: not empty, no leading `/`, no empty, `.` or `..`
/// component, no NUL byte.
fn check_relative(p: &[u8]) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("empty");
    }
    if p.starts_with(b"/") {
        return Err("absolute");
    }
    if p.contains(&0) {
        return Err("contains a NUL byte");
    }
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" => return Err("empty component"),
            b"." => return Err("`.` component"),
            b".." => return Err("`..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `p` names one of vouch's own working files in a destination: a first component
/// starting with `.vouch-restore` (staging directories), or any component starting with
/// `.vouch-restore-old.` (replaced paths kept beside themselves, copies about to be renamed
/// into place). No archive entry may have such a name: restored, it would be taken for the
/// leftover of an interrupted restore.
pub fn working_name(p: &[u8]) -> bool {
    let p = trim_slash(p);
    p.starts_with(b".vouch-restore")
        || p.split(|&b| b == b'/')
            .any(|c| c.starts_with(OLD_PREFIX.as_bytes()))
}

/// The refusal of an entry with a working name.
pub fn working_name_refused(name: &str) -> String {
    format!(
        "{name}: refused, a name vouch uses for its own files while it restores (.vouch-restore*); \
         no archive vouch writes holds one"
    )
}

/// The manifest's word for an entry type.
fn kind_name(kind: EntryType) -> &'static str {
    match kind {
        EntryType::File => "file",
        EntryType::Dir => "directory",
        EntryType::Symlink => "symlink",
        EntryType::Hardlink => "hard link",
    }
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn trim_slash(p: &[u8]) -> &[u8] {
    p.strip_suffix(b"/").unwrap_or(p)
}

/// The proper ancestors of a relative path, shortest first.
fn ancestors(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(move |(i, _)| &p[..i])
}

fn under(path: &[u8], prefix: &[u8]) -> bool {
    path == prefix || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

/// A special file from a crafted or foreign archive.
#[derive(Debug, Clone)]
struct Special {
    path: Vec<u8>,
    kind: nix::sys::stat::SFlag,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    rdev: u64,
}

/// The manifest checked as a whole, with what to restore.
struct Plan {
    paths: Vec<Vec<u8>>,
    kinds: Vec<EntryType>,
    selected: Vec<bool>,
    /// Entries whose data must be staged: selected files, and files a selected hard link
    /// points to.
    staged: Vec<bool>,
    index: HashMap<Vec<u8>, usize>,
    /// Special files the manifest lists as skipped, by path, with their type name.
    skipped: HashMap<Vec<u8>, String>,
    /// Every path that has an entry below it, with the first such entry.
    parents: HashMap<Vec<u8>, usize>,
}

impl Plan {
    fn new(manifest: &Manifest, wanted: &[Vec<u8>]) -> Result<Plan, RestoreError> {
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut parents: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut paths = Vec::with_capacity(manifest.entries.len());
        for (i, e) in manifest.entries.iter().enumerate() {
            let p = e.path_bytes();
            check_relative(&p)
                .map_err(|why| damaged(format!("{}: refused, the path is {why}", e.path)))?;
            if p == MANIFEST_PATH.as_bytes() || p == SUMS_PATH.as_bytes() {
                return Err(damaged(format!("{}: listed as an archived entry", e.path)));
            }
            if working_name(&p) {
                return Err(damaged(working_name_refused(&e.path)));
            }
            for a in ancestors(&p) {
                match index.get(a) {
                    Some(&j) if manifest.entries[j].kind != EntryType::Dir => {
                        return Err(damaged(format!(
                            "{}: refused, it would be written through {}, which is not a directory",
                            e.path,
                            show(a)
                        )));
                    }
                    _ => {}
                }
            }
            // The other order: `a/x` first, then a symlink or file `a`. Placing `a` would
            // have to remove the directory made for `a/x`.
            if e.kind != EntryType::Dir {
                if let Some(&j) = parents.get(&p) {
                    return Err(damaged(format!(
                        "{}: refused, a {} listed after {}, which lies below it",
                        e.path,
                        kind_name(e.kind),
                        manifest.entries[j].path
                    )));
                }
            }
            if index.insert(p.clone(), i).is_some() {
                return Err(damaged(format!("{}: listed twice", e.path)));
            }
            for a in ancestors(&p) {
                parents.entry(a.to_vec()).or_insert(i);
            }
            match e.kind {
                EntryType::Hardlink => {
                    let link = e.link_bytes().unwrap_or_default();
                    let target = check_relative(&link)
                        .ok()
                        .and_then(|_| index.get(link.as_slice()).copied())
                        .filter(|&j| manifest.entries[j].kind == EntryType::File);
                    if target.is_none() {
                        return Err(damaged(format!(
                            "{}: refused, a hard link to {}, which is not an earlier file of the archive",
                            e.path,
                            show(&link)
                        )));
                    }
                }
                EntryType::Symlink if e.link.is_none() => {
                    return Err(damaged(format!("{}: a symlink without a target", e.path)));
                }
                EntryType::File if e.sha256.is_none() => {
                    return Err(damaged(format!("{}: a file without a SHA-256", e.path)));
                }
                _ => {}
            }
            paths.push(p);
        }
        let mut selected = vec![wanted.is_empty(); paths.len()];
        for w in wanted {
            let mut hit = false;
            for (i, p) in paths.iter().enumerate() {
                if under(p, w) {
                    selected[i] = true;
                    hit = true;
                }
            }
            if !hit {
                return Err(RestoreError::Refused(format!(
                    "{}: no such path in the archive's manifest",
                    show(w)
                )));
            }
        }
        // The directories above what was chosen come back with their own metadata.
        if !wanted.is_empty() {
            for i in 0..paths.len() {
                if selected[i] {
                    for a in ancestors(&paths[i]) {
                        if let Some(&j) = index.get(a) {
                            selected[j] = true;
                        }
                    }
                }
            }
        }
        let mut staged = vec![false; paths.len()];
        for (i, e) in manifest.entries.iter().enumerate() {
            if !selected[i] {
                continue;
            }
            match e.kind {
                EntryType::File => staged[i] = true,
                EntryType::Hardlink => {
                    let link = e.link_bytes().unwrap_or_default();
                    staged[index[&link]] = true;
                }
                _ => {}
            }
        }
        let skipped = manifest
            .tail
            .skipped
            .iter()
            .map(|s| (s.path.as_bytes().to_vec(), s.kind.clone()))
            .collect();
        Ok(Plan {
            paths,
            kinds: manifest.entries.iter().map(|e| e.kind).collect(),
            selected,
            staged,
            index,
            skipped,
            parents,
        })
    }

    /// Whether the restore puts a directory at `path` (so whatever is there may be replaced).
    fn replaces_with_dir(&self, path: &[u8]) -> bool {
        self.index
            .get(path)
            .is_some_and(|&i| self.selected[i] && self.kinds[i] == EntryType::Dir)
    }

    fn wanted_special(&self, path: &[u8], wanted: &[Vec<u8>]) -> bool {
        wanted.is_empty() || wanted.iter().any(|w| under(path, w))
    }
}

/// Progress on a terminal: one line on stderr, rewritten at most twice a second.
struct Meter {
    on: bool,
    phase: &'static str,
    total: u64,
    /// How an amount is shown: bytes, or a number of entries,
    unit: fn(u64) -> String,
    /// and what follows the total.
    suffix: &'static str,
    last: Option<Instant>,
}

impl Meter {
    /// A meter of bytes.
    fn new(on: bool, phase: &'static str, total: u64) -> Meter {
        Meter {
            on: on && io::stderr().is_terminal(),
            phase,
            total,
            unit: crate::systemd::sdnotify::human_bytes,
            suffix: "",
            last: None,
        }
    }

    /// A meter of entries.
    fn entries(on: bool, phase: &'static str, total: u64) -> Meter {
        Meter {
            unit: |n| n.to_string(),
            suffix: " entries",
            ..Meter::new(on, phase, total)
        }
    }

    fn update(&mut self, done: u64) {
        if !self.on
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        self.show(done);
    }

    fn show(&mut self, done: u64) {
        self.last = Some(Instant::now());
        let _ = write!(
            io::stderr(),
            "\r{}: {} of {}{}   ",
            self.phase,
            (self.unit)(done),
            (self.unit)(self.total),
            self.suffix
        );
    }

    fn done(&mut self) {
        if self.on && self.last.is_some() {
            let _ = writeln!(io::stderr());
        }
    }

    /// Shows the final figure, then ends the line.
    fn finish(&mut self, done: u64) {
        if self.on && self.last.is_some() {
            self.show(done);
        }
        self.done();
    }
}

/// A reader that counts what passes through it.
struct Counted<R> {
    inner: R,
    count: Count,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

type Tar<'a> = tar::Archive<
    crate::pipeline::tarstream::HeaderCap<
        MultiGzDecoder<age::stream::StreamReader<BufReader<&'a mut Source>>>,
    >,
>;

fn open_tar<'a>(hashed: &'a mut Source, identity: &Identity) -> Result<Tar<'a>, RestoreError> {
    let buffered = BufReader::with_capacity(BUFFER_SIZE, hashed);
    let plain =
        crypt::decrypt(identity, buffered).map_err(|e| damaged(format!("cannot decrypt: {e}")))?;
    Ok(tar::Archive::new(
        crate::pipeline::tarstream::HeaderCap::new(MultiGzDecoder::new(plain)),
    ))
}

fn drain(tar: Tar<'_>) -> Result<(), RestoreError> {
    let mut rest = tar.into_inner().into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map(|_| ())
        .map_err(|e| damaged(format!("{TRUNCATED} at its end: {e}")))
}

fn sha256_hex(data: &[u8]) -> String {
    crate::pipeline::io::hex(&Sha256::digest(data))
}

/// The closing files of an archive and the hash of its ciphertext, from the first pass.
struct Closing {
    manifest: Vec<u8>,
    sums: Vec<u8>,
    sha256: String,
    size: u64,
}

type Opener<'a> = &'a dyn Fn() -> io::Result<Box<dyn Read>>;

/// Bytes read from the archive so far, shared with the progress meter.
type Count = std::rc::Rc<std::cell::Cell<u64>>;

/// The archive's ciphertext, hashed and counted.
type Source = HashReader<Counted<Box<dyn Read>>>;

fn counted(open: Opener<'_>) -> Result<(Source, Count), RestoreError> {
    let inner = open().map_err(|e| damaged(format!("cannot open the archive: {e}")))?;
    let count = std::rc::Rc::new(std::cell::Cell::new(0));
    Ok((
        HashReader::new(Counted {
            inner,
            count: count.clone(),
        }),
        count,
    ))
}

fn read_closing(
    open: Opener<'_>,
    identity: &Identity,
    meter: &mut Meter,
) -> Result<Closing, RestoreError> {
    let (mut hashed, count) = counted(open)?;
    let mut manifest = None;
    let mut sums = None;
    {
        let mut tar = open_tar(&mut hashed, identity)?;
        let iter = tar
            .entries()
            .map_err(|e| damaged(format!("not a tar stream: {e}")))?;
        for found in iter {
            let mut found =
                found.map_err(|e| damaged(format!("{TRUNCATED}: corrupt tar entry: {e}")))?;
            let path = found.path_bytes().into_owned();
            if path == MANIFEST_PATH.as_bytes() || path == SUMS_PATH.as_bytes() {
                let data =
                    crate::pipeline::manifest::read_closing_file(&mut found, &show(&path), &|| {
                        count.get()
                    })
                    .map_err(|e| {
                        damaged(format!("{}: cannot read it; {TRUNCATED}: {e}", show(&path)))
                    })?;
                if path == MANIFEST_PATH.as_bytes() {
                    manifest = Some(data);
                } else {
                    sums = Some(data);
                }
            } else {
                io::copy(&mut found, &mut io::sink()).map_err(|e| {
                    damaged(format!(
                        "{}: cannot read its data; {TRUNCATED}: {e}",
                        show(&path)
                    ))
                })?;
            }
            meter.update(count.get());
        }
        drain(tar)?;
    }
    let (sha256, size) = hashed
        .finish()
        .map_err(|e| damaged(format!("reading the archive failed: {e}")))?;
    Ok(Closing {
        manifest: manifest.ok_or_else(|| damaged(format!("{MANIFEST_PATH} is missing")))?,
        sums: sums.ok_or_else(|| damaged(format!("{SUMS_PATH} is missing")))?,
        sha256,
        size,
    })
}

/// Reads the manifest of an archive (first pass only) and checks it against the receipt's size
/// and SHA-256 when given.
fn read_manifest(
    open: Opener<'_>,
    identity: &Identity,
    receipt: Option<(&str, u64)>,
    meter: &mut Meter,
) -> Result<(Closing, Manifest), RestoreError> {
    let closing = read_closing(open, identity, meter)?;
    if let Some((sha, size)) = receipt {
        if sha != closing.sha256 || size != closing.size {
            return Err(damaged(format!(
                "the archive ({} bytes, SHA-256 {}) does not match its receipt ({size} bytes, SHA-256 {sha})",
                closing.size, closing.sha256
            )));
        }
    }
    let manifest: Manifest = serde_json::from_slice(&closing.manifest)
        .map_err(|e| damaged(format!("{MANIFEST_PATH} is not a vouch manifest: {e}")))?;
    let mut sums = Vec::new();
    for e in &manifest.entries {
        if let Some(sha) = &e.sha256 {
            sums.extend_from_slice(&sums_line(sha, &e.path_bytes()));
        }
    }
    if sums != closing.sums {
        return Err(damaged(format!(
            "{SUMS_PATH} disagrees with {MANIFEST_PATH}"
        )));
    }
    Ok((closing, manifest))
}

/// The destination, before anything is written.
struct Dest {
    dir: PathBuf,
    /// Created by this restore (removed again if it fails).
    created: bool,
}

fn prepare_dest(to: &Path) -> Result<Dest, RestoreError> {
    match fs::symlink_metadata(to) {
        Ok(_) => {
            let dir = fs::canonicalize(to).map_err(io_err(to))?;
            if !dir.is_dir() {
                return Err(RestoreError::Refused(format!(
                    "{} exists and is not a directory",
                    to.display()
                )));
            }
            Ok(Dest {
                dir,
                created: false,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = match to.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            if !parent.is_dir() {
                return Err(RestoreError::Refused(format!(
                    "{} does not exist and its parent {} is not a directory",
                    to.display(),
                    parent.display()
                )));
            }
            let parent = fs::canonicalize(&parent).map_err(io_err(&parent))?;
            let name = to.file_name().ok_or_else(|| {
                RestoreError::Refused(format!("{} is not a directory name", to.display()))
            })?;
            Ok(Dest {
                dir: parent.join(name),
                created: true,
            })
        }
        Err(e) => Err(io_err(to)(e)),
    }
}

fn rel_path(dir: &Path, rel: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(rel))
}

/// Checks the destination against the plan: nothing in the way (without `--in-place`), no
/// path passing through a symlink or file that the restore does not itself replace.
fn check_dest(
    dest: &Dest,
    plan: &Plan,
    specials: &[Vec<u8>],
    in_place: bool,
) -> Result<(), RestoreError> {
    if dest.created {
        return Ok(());
    }
    let replaced = |p: &[u8]| in_place && plan.index.get(p).is_some_and(|&i| plan.selected[i]);
    // Ancestors already looked at: `true` when nothing below them needs looking at, because
    // they do not exist or the restore replaces them (`lstat` below a symlink would follow it).
    let mut seen: HashMap<&[u8], bool> = HashMap::new();
    let chosen = plan
        .paths
        .iter()
        .enumerate()
        .filter(|(i, _)| plan.selected[*i])
        .map(|(_, p)| p)
        .chain(specials.iter());
    'paths: for p in chosen {
        for a in ancestors(p) {
            let stop = match seen.get(a) {
                Some(&stop) => stop,
                None => {
                    let full = rel_path(&dest.dir, a);
                    let stop = match fs::symlink_metadata(&full) {
                        Ok(m) if m.is_dir() => false,
                        Ok(_) if replaced(a) => true,
                        Ok(m) => {
                            let what = if m.file_type().is_symlink() {
                                "a symlink"
                            } else {
                                "not a directory"
                            };
                            return Err(RestoreError::Refused(format!(
                                "{}: refused, {} in the destination is {what}, and the restore will not write through it",
                                show(p),
                                full.display()
                            )));
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                        Err(e) => return Err(io_err(&full)(e)),
                    };
                    seen.insert(a, stop);
                    stop
                }
            };
            if stop {
                continue 'paths;
            }
        }
        let full = rel_path(&dest.dir, p);
        match fs::symlink_metadata(&full) {
            Ok(_) if !in_place => {
                return Err(RestoreError::Refused(format!(
                    "{} already exists; restore into a new or empty directory, or pass --in-place to replace it",
                    full.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&full)(e)),
        }
    }
    Ok(())
}

fn parse_mode(e: &Entry) -> Result<u32, RestoreError> {
    u32::from_str_radix(&e.mode, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| damaged(format!("{}: bad mode {:?} in the manifest", e.path, e.mode)))
}

/// `rel` with its last component replaced by `name`.
fn beside(rel: &[u8], name: &str) -> Vec<u8> {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => [&rel[..=i], name.as_bytes()].concat(),
        None => name.as_bytes().to_vec(),
    }
}

/// The staging directory inside the destination, the commit journal, and the interrupting
/// signals held back while the restore writes. Every change goes through `tree`.
struct Staging {
    /// The destination, held open.
    tree: Tree,
    /// The staging directory's path, for messages.
    dir: PathBuf,
    /// Its name in the destination.
    name: Vec<u8>,
    /// The staging directory, open and locked (`flock`) while this restore runs, so that
    /// another restore into the same destination does not take it for a leftover.
    _lock: File,
    /// Its record outside the destination, when one could be written.
    record: Option<Record>,
    aside_count: u64,
    /// Paths that were in the way and were renamed aside.
    replaced: u64,
    /// Existing directories whose metadata the journal already holds.
    kept_meta: std::collections::HashSet<Vec<u8>>,
    /// Directories this commit made.
    made: std::collections::HashSet<Vec<u8>>,
    journal: Journal,
    interrupts: signals::Deferred,
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
    fn create(mut tree: Tree, interrupts: signals::Deferred) -> Result<Staging, RestoreError> {
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
            let journal = Journal::create(&*tree.dir(&name)?, tree.path(), &token);
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
            kept_meta: std::collections::HashSet::new(),
            made: std::collections::HashSet::new(),
            journal,
            interrupts,
        })
    }

    /// An interrupting signal that arrived, as an error.
    fn interrupted(&self) -> Result<(), RestoreError> {
        match self.interrupts.arrived() {
            Some(signal) => Err(RestoreError::Interrupted(signal)),
            None => Ok(()),
        }
    }

    /// Where the data of entry `i` is staged, relative to the destination.
    fn data(&self, i: usize) -> Vec<u8> {
        [&self.name[..], b"/", i.to_string().as_bytes()].concat()
    }

    /// The destination path of `rel`, for messages.
    fn full(&self, rel: &[u8]) -> PathBuf {
        self.tree.show(rel)
    }

    fn io(&self, rel: &[u8]) -> impl FnOnce(io::Error) -> RestoreError {
        let path = self.full(rel);
        move |error| RestoreError::Io { path, error }
    }

    /// What is at `rel` in the destination, not following a symlink there.
    fn lstat(&mut self, rel: &[u8]) -> Result<Option<Stat>, RestoreError> {
        let err = self.io(rel);
        self.tree.lstat(rel).map_err(err)
    }

    /// Sets owner (as root), modification time and, unless `None`, permission bits of `rel`.
    fn set_meta(
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
    fn record(&mut self, step: Step) -> Result<(), RestoreError> {
        self.journal
            .record(step)
            .map_err(io_err(&self.dir.join(JOURNAL_NAME)))
    }

    /// Records the metadata of the existing directory `rel` (lstat'ed as `m`), once, before
    /// anything in or about it changes, so that a rollback gives it back.
    fn keep_dir_meta(&mut self, rel: &[u8], m: &Stat) -> Result<(), RestoreError> {
        if !self.kept_meta.insert(rel.to_vec()) {
            return Ok(());
        }
        self.record(Step::DirMeta {
            path: rel.to_vec(),
            mode: m.st_mode & 0o7777,
            uid: m.st_uid,
            gid: m.st_gid,
            mtime: m.st_mtime,
            mtime_nsec: m.st_mtime_nsec,
        })
    }

    /// Fails when `rel`, a directory this commit made, is no longer one: someone else
    /// changed the destination while the restore ran, and nothing of it is replaced.
    fn untouched(&mut self, rel: &[u8], now: Option<&Stat>) -> Result<(), RestoreError> {
        if self.made.contains(rel) && !now.is_some_and(is_dir) {
            return Err(self.io(rel)(io::Error::other(
                "the directory this restore made there was replaced while it ran",
            )));
        }
        Ok(())
    }

    /// Makes the directory `rel` (already journaled as created).
    fn mkdir(&mut self, rel: &[u8], mode: u32) -> Result<(), RestoreError> {
        self.kept_meta.insert(rel.to_vec());
        let err = self.io(rel);
        self.tree.mkdir(rel, mode).map_err(err)?;
        self.made.insert(rel.to_vec());
        Ok(())
    }

    /// Renames whatever is at `rel` aside (with `--in-place`), checking that what was moved is
    /// what was looked at.
    fn clear(&mut self, rel: &[u8]) -> Result<(), RestoreError> {
        let Some(before) = self.lstat(rel)? else {
            return Ok(());
        };
        self.untouched(rel, Some(&before))?;
        let aside = self.move_aside(rel)?;
        match self.lstat(&aside)? {
            Some(moved) if (moved.st_dev, moved.st_ino) == (before.st_dev, before.st_ino) => {
                self.replaced += 1;
                Ok(())
            }
            // Swapped between the look and the rename: the rollback puts it back.
            _ => Err(self.io(rel)(io::Error::other(
                "it was replaced while the restore ran",
            ))),
        }
    }

    /// Renames `rel` into the staging directory's `old/`, or beside itself across
    /// filesystems, returning where it went.
    fn move_aside(&mut self, rel: &[u8]) -> Result<Vec<u8>, RestoreError> {
        self.aside_count += 1;
        let aside = format!("{}/old/{}", show(&self.name), self.aside_count).into_bytes();
        self.record(Step::Aside {
            orig: rel.to_vec(),
            aside: aside.clone(),
        })?;
        if let Err(e) = self.tree.rename(rel, &aside) {
            if e.raw_os_error() != Some(libc::EXDEV) {
                return Err(self.io(rel)(e));
            }
            // Another filesystem is mounted inside the destination: keep the replaced path
            // beside itself instead.
            let aside = beside(
                rel,
                &format!("{OLD_PREFIX}{}.{}", std::process::id(), self.aside_count),
            );
            self.record(Step::Aside {
                orig: rel.to_vec(),
                aside: aside.clone(),
            })?;
            let err = self.io(rel);
            self.tree.rename(rel, &aside).map_err(err)?;
            return Ok(aside);
        }
        Ok(aside)
    }

    /// Moves staged data to `rel` (already journaled as created). Across filesystems (a mount
    /// point inside the destination), it is copied to a temporary name beside it, synced,
    /// given its metadata, and renamed.
    fn place(&mut self, staged: &[u8], rel: &[u8], e: &Entry) -> Result<(), RestoreError> {
        match self.tree.rename(staged, rel) {
            Ok(()) => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EXDEV) => {}
            Err(err) => return Err(self.io(rel)(err)),
        }
        let temp = beside(rel, &format!("{OLD_PREFIX}{}.new", std::process::id()));
        self.record(Step::Created(temp.clone()))?;
        let tree = &mut self.tree;
        let copied = (|| -> io::Result<()> {
            let mut from = tree.open_file(staged)?;
            let mut to = tree.create_file(&temp)?;
            io::copy(&mut from, &mut to)?;
            to.sync_all()?;
            drop(to);
            let mode = u32::from_str_radix(&e.mode, 8).map_err(io::Error::other)?;
            tree.set_meta(&temp, Some(mode), (e.uid, e.gid), (e.mtime, 0))?;
            tree.rename(&temp, rel)
        })();
        if let Err(err) = copied {
            let _ = self.tree.remove(&temp, false);
            return Err(self.io(rel)(err));
        }
        Ok(())
    }

    /// Makes the missing directories above `rel` and checks that each existing one is a real
    /// directory. With `--in-place`, a non-directory in the way of a directory the archive
    /// lists later than what is below it is replaced here already.
    fn parents(&mut self, rel: &[u8], plan: &Plan) -> Result<(), RestoreError> {
        for a in ancestors(rel) {
            let now = self.lstat(a)?;
            self.untouched(a, now.as_ref())?;
            let mode = match now {
                // An archived directory listed after what is below it: its time changes as
                // entries are placed in it, so its metadata is kept now.
                Some(m) if is_dir(&m) && plan.replaces_with_dir(a) => {
                    self.keep_dir_meta(a, &m)?;
                    continue;
                }
                Some(m) if is_dir(&m) => continue,
                Some(_) if plan.replaces_with_dir(a) => {
                    self.clear(a)?;
                    0o700
                }
                Some(_) => {
                    return Err(RestoreError::Refused(format!(
                        "{}: refused, {} is not a directory",
                        show(rel),
                        self.full(a).display()
                    )))
                }
                None => 0o755,
            };
            self.record(Step::Created(a.to_vec()))?;
            self.mkdir(a, mode)?;
        }
        Ok(())
    }

    /// Undoes the journal, newest step first. False when something could not be undone: the
    /// staging directory then holds what was not put back and must be kept.
    fn rollback(&mut self) -> bool {
        self.journal.rollback(&mut self.tree, &self.dir).failed == 0
    }

    /// Removes the staging directory (and the replaced files in it) and its record.
    fn remove(&mut self) {
        let record = self.record.take();
        if let Err(e) = journal::remove_staging(&mut self.tree, &self.name, record) {
            log::warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// Restores the archive read by `open` according to `opts`. `receipt` gives the size and
/// SHA-256 the archive must have, when it has a receipt.
///
/// Staging directories that interrupted restores left in the destination are dealt with
/// first (see `restore::journal`). From the moment the restore writes into the destination until it
/// is over, SIGINT, SIGTERM and SIGHUP are held back; one that arrives makes the restore undo
/// what it did, remove its staging directory and then die by that signal.
pub fn restore(
    open: Opener<'_>,
    identity: &Identity,
    receipt: Option<(&str, u64)>,
    total: u64,
    opts: &Options,
) -> Result<Restored, RestoreError> {
    if opts.devices && !is_root() {
        return Err(RestoreError::Refused(
            "--devices: only root can create device nodes and FIFOs; run the restore as root, or leave --devices out".into(),
        ));
    }
    journal::recover(&opts.to)?;
    let mut meter = Meter::new(opts.progress, "reading the manifest", total);
    let read = read_manifest(open, identity, receipt, &mut meter);
    match &read {
        Ok((closing, _)) => meter.finish(closing.size),
        Err(_) => meter.done(),
    }
    let (closing, manifest) = read?;
    let plan = Plan::new(&manifest, &opts.paths)?;
    // Special files named in the manifest as skipped that the selection covers: they can only
    // come back with --devices, and the stream decides whether they are there.
    let dest = prepare_dest(&opts.to)?;
    let special_paths: Vec<Vec<u8>> = plan
        .skipped
        .keys()
        .filter(|p| opts.devices && plan.wanted_special(p, &opts.paths))
        .cloned()
        .collect();
    check_dest(&dest, &plan, &special_paths, opts.in_place)?;
    let interrupts = signals::Deferred::start();
    if dest.created {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&dest.dir)
            .map_err(io_err(&dest.dir))?;
    }
    let tree = Tree::open(&dest.dir).map_err(io_err(&dest.dir));
    let mut staging = match tree.and_then(|tree| Staging::create(tree, interrupts)) {
        Ok(s) => s,
        Err(e) => {
            if dest.created {
                let _ = fs::remove_dir(&dest.dir);
            }
            return Err(e);
        }
    };
    let result = extract(
        open,
        identity,
        &closing,
        &manifest,
        &plan,
        opts,
        &mut staging,
        total,
    )
    .and_then(|(specials, bytes)| {
        commit(&manifest, &plan, &specials, &mut staging, opts.progress)
            .map(|placed| (placed, bytes))
    });
    match result {
        Ok((placed, bytes)) => {
            crate::host::fault::point("restore-committed");
            staging
                .journal
                .drop_replaced(&mut staging.tree, &staging.name);
            staging.remove();
            if let Some(signal) = staging.interrupts.arrived() {
                log::warn!(
                    "restore: {} arrived after the restore into {} had gone through",
                    signal.as_str(),
                    dest.dir.display()
                );
            }
            Ok(Restored {
                dir: dest.dir,
                selected: plan.selected,
                manifest,
                entries: placed,
                bytes,
                replaced: staging.replaced,
            })
        }
        Err(e) => {
            let undone = staging.rollback();
            if undone {
                staging.remove();
                if dest.created {
                    let _ = fs::remove_dir(&dest.dir);
                }
            } else {
                log::error!(
                    "restore: {} is kept: it holds what could not be put back into {}",
                    staging.dir.display(),
                    dest.dir.display()
                );
            }
            if let RestoreError::Interrupted(signal) = e {
                if undone {
                    log::warn!(
                        "restore: interrupted by {}; every change to {} was undone",
                        signal.as_str(),
                        dest.dir.display()
                    );
                }
                staging.interrupts.reraise(signal);
            }
            Err(e)
        }
    }
}

/// The second pass: every entry compared with the manifest, file data staged and hashed.
#[allow(clippy::too_many_arguments)]
fn extract(
    open: Opener<'_>,
    identity: &Identity,
    closing: &Closing,
    manifest: &Manifest,
    plan: &Plan,
    opts: &Options,
    staging: &mut Staging,
    total: u64,
) -> Result<(Vec<Special>, u64), RestoreError> {
    let mut meter = Meter::new(opts.progress, "restoring", total);
    let (mut hashed, count) = counted(open)?;
    let mut specials = Vec::new();
    let mut bytes = 0u64;
    {
        let mut tar = open_tar(&mut hashed, identity)?;
        let iter = tar
            .entries()
            .map_err(|e| damaged(format!("not a tar stream: {e}")))?;
        let mut next = 0usize;
        let mut seen_manifest = false;
        let mut seen_sums = false;
        let mut buf = vec![0u8; BUFFER_SIZE];
        let half = manifest.entries.len() / 2;
        for found in iter {
            staging.interrupted()?;
            let mut found =
                found.map_err(|e| damaged(format!("{TRUNCATED}: corrupt tar entry: {e}")))?;
            meter.update(count.get());
            let raw = found.path_bytes().into_owned();
            let path = trim_slash(&raw).to_vec();
            let name = show(&path);
            if seen_sums {
                return Err(damaged(format!(
                    "{name}: unexpected entry after the manifest"
                )));
            }
            if path == MANIFEST_PATH.as_bytes() || path == SUMS_PATH.as_bytes() {
                let data = crate::pipeline::manifest::read_closing_file(&mut found, &name, &|| {
                    count.get()
                })
                .map_err(|e| damaged(format!("{name}: cannot read its data; {TRUNCATED}: {e}")))?;
                let (want, ok_order) = if path == MANIFEST_PATH.as_bytes() {
                    (&closing.manifest, !seen_manifest)
                } else {
                    (&closing.sums, seen_manifest)
                };
                if !ok_order || sha256_hex(&data) != sha256_hex(want) {
                    return Err(damaged(format!("{name} differs between two reads")));
                }
                if path == MANIFEST_PATH.as_bytes() {
                    seen_manifest = true;
                } else {
                    seen_sums = true;
                }
                continue;
            }
            if seen_manifest {
                return Err(damaged(format!(
                    "{name}: unexpected entry after the manifest"
                )));
            }
            let ty = found.header().entry_type();
            if ty.is_character_special() || ty.is_block_special() || ty.is_fifo() {
                let found = special(&mut found, &path, plan, opts, &specials)?;
                specials.extend(found);
                continue;
            }
            let Some(want) = manifest.entries.get(next) else {
                return Err(damaged(format!("{name}: not in the manifest")));
            };
            let i = next;
            next += 1;
            crate::check::verify::check_entry(want, &found, &path, None).map_err(damaged)?;
            if want.kind == EntryType::File {
                let digest = if plan.staged[i] {
                    let staged = staging.data(i);
                    let to = staging.full(&staged);
                    let out = staging.tree.create_file(&staged).map_err(io_err(&to))?;
                    let d = stage(&mut found, &name, out, &to, &mut buf, &staging.interrupts)?;
                    bytes += want.size;
                    d
                } else {
                    crate::check::verify::hash_entry(&mut found, &mut buf).map_err(|e| {
                        damaged(format!("{name}: cannot read its data; {TRUNCATED}: {e}"))
                    })?
                };
                if want.sha256.as_deref() != Some(digest.as_str()) {
                    return Err(damaged(format!(
                        "{name}: content differs from the manifest (SHA-256)"
                    )));
                }
                if plan.staged[i] {
                    let staged = staging.data(i);
                    staging.set_meta(
                        &staged,
                        Some(parse_mode(want)?),
                        want.uid,
                        want.gid,
                        want.mtime,
                    )?;
                }
            }
            if i == half {
                crate::host::fault::point("restore-mid");
            }
        }
        if let Some(missing) = manifest.entries.get(next) {
            return Err(damaged(format!(
                "{}: in the manifest but not in the archive",
                missing.path
            )));
        }
        if !seen_sums {
            return Err(damaged(format!(
                "{SUMS_PATH} is missing from the end of the archive"
            )));
        }
        drain(tar)?;
    }
    meter.finish(count.get());
    let (sha, size) = hashed
        .finish()
        .map_err(|e| damaged(format!("reading the archive failed: {e}")))?;
    if sha != closing.sha256 || size != closing.size {
        return Err(damaged(
            "the archive changed between two reads (different SHA-256)",
        ));
    }
    Ok((specials, bytes))
}

fn special<R: Read>(
    found: &mut tar::Entry<'_, R>,
    path: &[u8],
    plan: &Plan,
    opts: &Options,
    earlier: &[Special],
) -> Result<Option<Special>, RestoreError> {
    use nix::sys::stat::SFlag;
    let name = show(path);
    let h = found.header();
    let ty = h.entry_type();
    let (kind, type_name) = if ty.is_character_special() {
        (SFlag::S_IFCHR, "char-device")
    } else if ty.is_block_special() {
        (SFlag::S_IFBLK, "block-device")
    } else {
        (SFlag::S_IFIFO, "fifo")
    };
    if !opts.devices || !is_root() {
        return Err(damaged(format!(
            "{name}: refused, a {type_name}; device nodes and FIFOs are restored only with --devices, as root"
        )));
    }
    check_relative(path).map_err(|why| damaged(format!("{name}: refused, the path is {why}")))?;
    if working_name(path) {
        return Err(damaged(working_name_refused(&name)));
    }
    if plan.skipped.get(path).map(String::as_str) != Some(type_name) {
        return Err(damaged(format!(
            "{name}: a {type_name} the manifest does not list"
        )));
    }
    if ancestors(path).any(|a| {
        plan.index
            .get(a)
            .is_some_and(|&j| plan.kinds[j] != EntryType::Dir)
    }) {
        return Err(damaged(format!(
            "{name}: refused, it would be created through an entry that is not a directory"
        )));
    }
    // Created last, a special file must not replace what the restore itself placed.
    if plan.index.contains_key(path)
        || plan.parents.contains_key(path)
        || earlier
            .iter()
            .any(|s| under(&s.path, path) || under(path, &s.path))
    {
        return Err(damaged(format!(
            "{name}: refused, a {type_name} at the place of another entry or above one"
        )));
    }
    if !plan.wanted_special(path, &opts.paths) {
        return Ok(None);
    }
    let bad = |e: io::Error| damaged(format!("{name}: bad header: {e}"));
    let (major, minor) = if kind == SFlag::S_IFIFO {
        (0, 0)
    } else {
        (
            h.device_major().map_err(bad)?.unwrap_or(0),
            h.device_minor().map_err(bad)?.unwrap_or(0),
        )
    };
    Ok(Some(Special {
        path: path.to_vec(),
        kind,
        mode: h.mode().map_err(bad)? & 0o7777,
        uid: h.uid().map_err(bad)?,
        gid: h.gid().map_err(bad)?,
        mtime: i64::try_from(h.mtime().map_err(bad)?).unwrap_or(i64::MAX),
        rdev: nix::sys::stat::makedev(major.into(), minor.into()),
    }))
}

/// Writes the data of the entry `name` into `out`, a new staging file, returning its
/// SHA-256. Stops between two reads when an interrupting signal has arrived.
fn stage(
    r: &mut impl Read,
    name: &str,
    mut out: File,
    to: &Path,
    buf: &mut [u8],
    interrupts: &signals::Deferred,
) -> Result<String, RestoreError> {
    let mut h = Sha256::new();
    loop {
        if let Some(signal) = interrupts.arrived() {
            return Err(RestoreError::Interrupted(signal));
        }
        let n = r
            .read(buf)
            .map_err(|e| damaged(format!("{name}: cannot read its data; {TRUNCATED}: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err(to))?;
    }
    out.sync_all().map_err(io_err(to))?;
    Ok(crate::pipeline::io::hex(&h.finalize()))
}

/// For the test suite: `VOUCH_TEST_FAULT=restore-fail-at:N` makes the commit fail with an I/O
/// error once N entries are in place, so that the rollback can be observed.
fn injected_failure(placed: u64, path: &Path) -> Result<(), RestoreError> {
    let at = crate::host::fault::fault()
        .and_then(|f| f.strip_prefix("restore-fail-at:")?.parse::<u64>().ok());
    if at == Some(placed) {
        return Err(RestoreError::Io {
            path: path.to_owned(),
            error: io::Error::from_raw_os_error(libc::EIO),
        });
    }
    Ok(())
}

/// Moves everything into place, recording each step in the journal before taking it, and
/// checking between steps for an interrupting signal. Returns the number of entries placed.
fn commit(
    manifest: &Manifest,
    plan: &Plan,
    specials: &[Special],
    staging: &mut Staging,
    progress: bool,
) -> Result<u64, RestoreError> {
    let total = plan.selected.iter().filter(|s| **s).count() + specials.len();
    let mut meter = Meter::entries(progress, "moving into place", total as u64);
    let mut placed = 0u64;
    // Where the data of a file that a selected hard link needs, but that was not itself
    // selected, ended up: the first such hard link gets the staged file.
    let mut moved: HashMap<usize, Vec<u8>> = HashMap::new();
    for (i, e) in manifest.entries.iter().enumerate() {
        if !plan.selected[i] {
            continue;
        }
        staging.interrupted()?;
        let rel = &plan.paths[i];
        staging.parents(rel, plan)?;
        let err = staging.io(rel);
        match e.kind {
            EntryType::Dir => match staging.lstat(rel)? {
                Some(m) if is_dir(&m) => staging.keep_dir_meta(rel, &m)?,
                _ => {
                    staging.clear(rel)?;
                    staging.record(Step::Created(rel.clone()))?;
                    staging.mkdir(rel, 0o700)?;
                }
            },
            EntryType::File => {
                staging.clear(rel)?;
                staging.record(Step::Created(rel.clone()))?;
                staging.place(&staging.data(i), rel, e)?;
                moved.insert(i, rel.clone());
            }
            EntryType::Hardlink => {
                let link = e.link_bytes().unwrap_or_default();
                let j = plan.index[&link];
                staging.clear(rel)?;
                staging.record(Step::Created(rel.clone()))?;
                match moved.get(&j) {
                    Some(first) => staging.tree.hard_link(first, rel).map_err(err)?,
                    None => {
                        staging.place(&staging.data(j), rel, &manifest.entries[j])?;
                        moved.insert(j, rel.clone());
                    }
                }
            }
            EntryType::Symlink => {
                let target = e.link_bytes().unwrap_or_default();
                staging.clear(rel)?;
                staging.record(Step::Created(rel.clone()))?;
                staging.tree.symlink(&target, rel).map_err(err)?;
                staging.set_meta(rel, None, e.uid, e.gid, e.mtime)?;
            }
        }
        placed += 1;
        meter.update(placed);
        injected_failure(placed, &staging.full(rel))?;
        crate::host::fault::step("restore-commit", placed);
    }
    for s in specials {
        staging.interrupted()?;
        staging.parents(&s.path, plan)?;
        staging.clear(&s.path)?;
        staging.record(Step::Created(s.path.clone()))?;
        let err = staging.io(&s.path);
        staging.tree.mknod(&s.path, s.kind, s.rdev).map_err(err)?;
        staging.set_meta(&s.path, Some(s.mode), s.uid, s.gid, s.mtime)?;
        placed += 1;
        meter.update(placed);
    }
    // Directories last, deepest first, so that placing their contents does not change the
    // times set here.
    for (i, e) in manifest.entries.iter().enumerate().rev() {
        if plan.selected[i] && e.kind == EntryType::Dir {
            staging.interrupted()?;
            staging.set_meta(&plan.paths[i], Some(parse_mode(e)?), e.uid, e.gid, e.mtime)?;
        }
    }
    staging
        .journal
        .mark_complete()
        .map_err(io_err(&staging.dir.join(JOURNAL_NAME)))?;
    meter.finish(placed);
    Ok(placed)
}

/// Compares a restored tree with the manifest: every selected entry read back from disk (type,
/// mode, owner as root, size, SHA-256, link target, hard links sharing one inode, modification
/// time). Returns the first difference.
pub fn check_tree(restored: &Restored) -> Result<(), RestoreError> {
    let root = &restored.dir;
    let mut buf = vec![0u8; BUFFER_SIZE];
    let root_check = is_root();
    for (i, e) in restored.manifest.entries.iter().enumerate() {
        if !restored.selected[i] {
            continue;
        }
        let rel = e.path_bytes();
        let path = rel_path(root, &rel);
        let m = fs::symlink_metadata(&path)
            .map_err(|err| damaged(format!("{}: not restored: {err}", e.path)))?;
        let ft = m.file_type();
        let kind_ok = match e.kind {
            EntryType::File | EntryType::Hardlink => ft.is_file(),
            EntryType::Dir => ft.is_dir(),
            EntryType::Symlink => ft.is_symlink(),
        };
        if !kind_ok {
            return Err(damaged(format!(
                "{}: restored as another type than the manifest's",
                e.path
            )));
        }
        if e.kind != EntryType::Symlink && format!("{:04o}", m.mode() & 0o7777) != e.mode {
            return Err(damaged(format!(
                "{}: restored with mode {:04o}, the manifest has {}",
                e.path,
                m.mode() & 0o7777,
                e.mode
            )));
        }
        if root_check && (u64::from(m.uid()) != e.uid || u64::from(m.gid()) != e.gid) {
            return Err(damaged(format!(
                "{}: restored owned by {}:{}, the manifest has {}:{}",
                e.path,
                m.uid(),
                m.gid(),
                e.uid,
                e.gid
            )));
        }
        if m.mtime() != e.mtime {
            return Err(damaged(format!(
                "{}: restored with mtime {}, the manifest has {}",
                e.path,
                m.mtime(),
                e.mtime
            )));
        }
        match e.kind {
            EntryType::File | EntryType::Hardlink => {
                let digest = File::open(&path)
                    .and_then(|mut f| crate::check::verify::hash_entry(&mut f, &mut buf))
                    .map_err(|err| damaged(format!("{}: cannot read it back: {err}", e.path)))?;
                if e.sha256.as_deref() != Some(digest.as_str()) {
                    return Err(damaged(format!(
                        "{}: restored content differs from the manifest (SHA-256)",
                        e.path
                    )));
                }
                if e.kind == EntryType::Hardlink {
                    let link = e.link_bytes().unwrap_or_default();
                    let first = rel_path(root, &link);
                    let same = fs::symlink_metadata(&first)
                        .is_ok_and(|f| f.ino() == m.ino() && f.dev() == m.dev());
                    let j = restored
                        .manifest
                        .entries
                        .iter()
                        .position(|x| x.path_bytes() == link);
                    if j.is_some_and(|j| restored.selected[j]) && !same {
                        return Err(damaged(format!(
                            "{}: not a hard link to {}",
                            e.path,
                            show(&link)
                        )));
                    }
                }
            }
            EntryType::Symlink => {
                let target = fs::read_link(&path)
                    .map_err(|err| damaged(format!("{}: cannot read it back: {err}", e.path)))?;
                if Some(target.as_os_str().as_bytes().to_vec()) != e.link_bytes() {
                    return Err(damaged(format!(
                        "{}: restored symlink points elsewhere than the manifest says",
                        e.path
                    )));
                }
            }
            EntryType::Dir => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_pass() {
        assert!(check_relative(b"etc/app/x").is_ok());
        assert!(check_relative(b"..a/b..").is_ok());
        for bad in [
            &b""[..],
            b"/etc",
            b"../x",
            b"a/../../x",
            b"a//b",
            b"a/./b",
            b"a/..",
            b"a\0b",
        ] {
            assert!(check_relative(bad).is_err(), "{:?}", show(bad));
        }
    }

    #[test]
    fn path_arguments_become_stored_paths() {
        assert_eq!(stored_path(Path::new("/etc/app/")).unwrap(), b"etc/app");
        assert_eq!(stored_path(Path::new("etc")).unwrap(), b"etc");
        assert!(stored_path(Path::new("/")).is_err());
        assert!(stored_path(Path::new("/etc/../x")).is_err());
    }

    /// A manifest of `(path, type)` entries, as craft.py would write it.
    fn manifest_of(entries: &[(&str, &str)]) -> Manifest {
        let entries: Vec<serde_json::Value> = entries
            .iter()
            .map(|(path, kind)| {
                let mut e = serde_json::json!({
                    "path": path, "type": kind, "mode": "0755", "uid": 0, "gid": 0,
                    "owner": "root:root", "size": 0, "mtime": 0,
                });
                match *kind {
                    "file" => e["sha256"] = "0".repeat(64).into(),
                    "symlink" => e["link"] = "elsewhere".into(),
                    _ => {}
                }
                e
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "format": "vouch-manifest", "version": 1, "run-id": "00", "host": "h",
            "name": "n", "created": "2020-01-01T00:00:00Z", "entries": entries,
            "skipped": [], "unreadable": [], "changed": [], "required": [],
        }))
        .unwrap()
    }

    #[test]
    fn a_non_directory_above_an_entry_is_refused_in_either_order() {
        for kind in ["symlink", "file"] {
            for order in [
                [("a", kind), ("a/x", "file")],
                [("a/x", "file"), ("a", kind)],
            ] {
                let err = Plan::new(&manifest_of(&order), &[]).err();
                assert!(
                    matches!(&err, Some(RestoreError::Damaged(m)) if m.contains("refused")),
                    "{order:?}: {err:?}"
                );
            }
        }
        let late = Plan::new(&manifest_of(&[("a/b/x", "file"), ("a", "symlink")]), &[]);
        assert!(
            matches!(&late, Err(RestoreError::Damaged(m)) if m.starts_with("a: refused, a symlink listed after a/b/x")),
            "{:?}",
            late.err()
        );
        // A directory may come after what is below it.
        let plan = Plan::new(&manifest_of(&[("a/x", "file"), ("a", "dir")]), &[]).unwrap();
        assert!(plan.replaces_with_dir(b"a"));
        assert!(!plan.replaces_with_dir(b"a/x"));
    }

    #[test]
    fn ancestors_and_prefixes() {
        let a: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(a, [&b"a"[..], b"a/b"]);
        assert!(under(b"etc/app/x", b"etc/app"));
        assert!(under(b"etc/app", b"etc/app"));
        assert!(!under(b"etc/apple", b"etc/app"));
    }
}
