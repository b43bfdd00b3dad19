//! Preflight: every check that can run before a byte of an archive is written.
//!
//! The seeds' backups died silently on read-only sandboxes, missing keys, unmounted disks, full
//! disks and FAT32's 4 GiB cap. Each of those has a check here with its own exit code and a fix in
//! one sentence, and `vouch run` runs them all before it starts writing. Checks report findings
//! rather than stopping at the first problem, so `vouch preflight` shows everything that is wrong
//! at once; the exit code is the first failure's.
//!
//! Target checks run in order (exists, mount point, volatile, write probe, space, file size) and
//! stop at a target's first failure, since later checks would only repeat it. They are written
//! to hold inside `vouch.service`'s sandbox as in a shell:
//!
//! - a mount point counts only when a whole filesystem of another device is mounted there
//!   ([`mounted_at`]); the bind of each `ReadWritePaths=` path onto itself that systemd makes
//!   in the unit does not, so an unplugged disk is refused by the timer's run too. The checked
//!   directory is the target's `mount`, else its path;
//! - the write probe commits its file with the archive's own commit primitive
//!   ([`crate::target::local::rename_noreplace`]), so a target on which the commit would fail
//!   (exFAT through FUSE has neither `RENAME_NOREPLACE` nor hard links) fails here, or passes
//!   here and at the commit alike;
//! - the largest file comes from vouch's table of filesystem types by `statfs` magic and from
//!   `RLIMIT_FSIZE` ([`file_limit`]), never from glibc's `pathconf(_PC_FILESIZEBITS)`, which
//!   answers 32 bits for every type it does not know.

use crate::config::{Settings, Split, Target};
use crate::error::Error;
use crate::host::dirs::Dirs;
use crate::host::lock::RunLock;
use crate::pipeline::crypt::{KeyError, Keys};
use crate::systemd::sdnotify::human_bytes;
use crate::target::local::TEMP_PREFIX;
use crate::target::local::{Layout, TempFile};
use crate::target::receipt::Receipt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// One check's result.
#[derive(Debug)]
pub struct Finding {
    /// What was checked (`lock`, `keys`, `source`, `target-writable`, ...).
    pub check: &'static str,
    /// The target it is about, if any.
    pub target: Option<String>,
    /// Passed with a detail, or failed.
    pub outcome: Result<String, Error>,
}

/// What a passed preflight hands to the run.
pub struct Cleared {
    /// The held run lock.
    pub lock: RunLock,
    /// The checked keys.
    pub keys: Keys,
    /// Every finding, all passed.
    pub findings: Vec<Finding>,
}

/// All findings, and the lock and keys when everything passed.
pub struct Outcome {
    /// Every finding, in order.
    pub findings: Vec<Finding>,
    lock: Option<RunLock>,
    keys: Option<Keys>,
}

impl Outcome {
    /// The lock and keys if every check passed, else the first failure.
    pub fn into_result(mut self) -> Result<Cleared, Error> {
        if let Some(i) = self.findings.iter().position(|f| f.outcome.is_err()) {
            let failed = self.findings.swap_remove(i);
            return Err(failed.outcome.expect_err("position found an error"));
        }
        match (self.lock, self.keys) {
            (Some(lock), Some(keys)) => Ok(Cleared {
                lock,
                keys,
                findings: self.findings,
            }),
            _ => Err(Error::Internal(
                "preflight passed without lock or keys".into(),
            )),
        }
    }
}

fn ok(check: &'static str, target: Option<&str>, detail: impl Into<String>) -> Finding {
    Finding {
        check,
        target: target.map(str::to_owned),
        outcome: Ok(detail.into()),
    }
}

fn fail(check: &'static str, target: Option<&str>, error: Error) -> Finding {
    Finding {
        check,
        target: target.map(str::to_owned),
        outcome: Err(error),
    }
}

/// Runs every check. The lock is taken and kept in the outcome.
pub fn check(settings: &Settings, dirs: &Dirs) -> Outcome {
    let mut findings = Vec::new();
    let mut lock = None;
    let mut keys = None;

    match dirs_writable(dirs) {
        Ok(()) => findings.push(ok(
            "state",
            None,
            format!(
                "{} and {} writable",
                dirs.state.display(),
                dirs.runtime.display()
            ),
        )),
        Err(e) => findings.push(fail("state", None, e)),
    }
    match RunLock::acquire(&dirs.runtime) {
        Ok(l) => {
            findings.push(ok("lock", None, format!("holding {}", l.path().display())));
            lock = Some(l);
        }
        Err(e) => findings.push(fail("lock", None, e.into())),
    }
    for source in &settings.backup.sources {
        findings.push(match source_readable(source) {
            Ok(detail) => ok("source", None, detail),
            Err(error) => fail(
                "source",
                None,
                Error::Source {
                    path: source.clone(),
                    error,
                },
            ),
        });
    }
    match Keys::load(&settings.encryption, dirs.credentials.as_deref()) {
        Ok(k) if k.identity.is_none() && !settings.encryption.verify_without_identity => {
            findings.push(fail("keys", None, KeyError::NoIdentity.into()));
        }
        Ok(k) => {
            let detail = match &k.identity {
                Some(id) => format!(
                    "{} recipient(s); identity {} matches",
                    k.recipients.len(),
                    id.path.display()
                ),
                None => format!(
                    "{} recipient(s); no identity: ciphertext-only verification",
                    k.recipients.len()
                ),
            };
            findings.push(ok("keys", None, detail));
            keys = Some(k);
        }
        Err(e) => findings.push(fail("keys", None, e.into())),
    }
    let mut estimate = None;
    for target in &settings.targets {
        let expected = expected_size(target, settings, &mut estimate);
        check_target(target, expected, lock.is_some(), &mut findings);
    }
    Outcome {
        findings,
        lock,
        keys,
    }
}

fn dirs_writable(dirs: &Dirs) -> Result<(), Error> {
    dirs.create().map_err(|error| Error::State {
        path: dirs.state.clone(),
        error,
    })?;
    for dir in [&dirs.state, &dirs.runtime] {
        let probe = dir.join(format!("{TEMP_PREFIX}probe.{}", std::process::id()));
        let result = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&probe)
            .and_then(|mut f| f.write_all(b"probe"));
        let _ = fs::remove_file(&probe);
        result.map_err(|error| Error::State {
            path: dir.clone(),
            error,
        })?;
    }
    Ok(())
}

fn source_readable(path: &Path) -> io::Result<String> {
    let meta = fs::metadata(path)?;
    if meta.is_dir() {
        fs::read_dir(path)?;
        Ok(format!("{} readable", path.display()))
    } else {
        fs::File::open(path)?;
        Ok(format!(
            "{} readable ({})",
            path.display(),
            human_bytes(meta.len())
        ))
    }
}

/// Logs what the recovery of a target after interrupted runs did, one warning per thing.
fn report_recovery(target: &Target, done: &crate::target::local::Recovery) {
    let t = &target.name;
    for a in &done.finished {
        log::warn!("target {t}: finished the commit of {a}, which an interrupted run had begun");
    }
    for a in &done.undone {
        log::warn!(
            "target {t}: removed the incomplete {a}, whose commit an interrupted run had begun"
        );
    }
    for a in &done.deleted {
        log::warn!("target {t}: finished deleting {a}, which an interrupted prune had begun");
    }
    for p in &done.removed {
        log::warn!(
            "target {t}: removed {} left by an interrupted run",
            p.display()
        );
    }
}

/// The archive size to plan for: the newest receipt's size plus a fifth, else the sources' size.
fn expected_size(target: &Target, settings: &Settings, estimate: &mut Option<u64>) -> u64 {
    if let Some(size) = newest_receipt(&target.path).map(|r| r.archive_size) {
        return size + size / 5;
    }
    *estimate.get_or_insert_with(|| sources_size(&settings.backup.sources))
}

/// The newest receipt in a target directory, if any.
pub fn newest_receipt(dir: &Path) -> Option<Receipt> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| Receipt::archive_of(n).is_some())
        .collect();
    names.sort_by(|a, b| Receipt::archive_of(a).cmp(&Receipt::archive_of(b)));
    let newest = names.pop()?;
    let bytes = crate::host::bounded::read(
        &dir.join(newest),
        crate::host::bounded::Links::Refuse,
        crate::host::bounded::RECEIPT_CAP,
    )
    .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The total size of the files under `sources` (not following symlinks).
pub fn sources_size(sources: &[PathBuf]) -> u64 {
    fn walk(path: &Path) -> u64 {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return 0;
        };
        if meta.is_dir() {
            fs::read_dir(path)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| walk(&e.path())).sum())
                .unwrap_or(0)
        } else if meta.is_file() {
            meta.len()
        } else {
            0
        }
    }
    sources
        .iter()
        .map(|s| match fs::metadata(s) {
            Ok(m) if m.is_dir() => walk(s),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// Per-mount options (`ro`, `rw`, `nosuid`, ...).
    pub options: String,
    /// Filesystem type.
    pub fstype: String,
    /// The mounted source.
    pub source: String,
    /// The directory of the source filesystem that is mounted (`/` for a whole filesystem).
    pub root: String,
    /// The filesystem's device number, `MAJOR:MINOR`.
    pub device: String,
}

impl Mount {
    /// True for a read-only mount.
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }

    /// True for one of systemd's inaccessible nodes, which `InaccessiblePaths=` and
    /// `ProtectHome=yes` mount over what they hide: `/run/systemd/inaccessible/dir` on a host,
    /// `/run/host/inaccessible/dir` in a container (the mount's root, within /run's tmpfs).
    pub fn is_inaccessible_node(&self) -> bool {
        self.root.ends_with("/inaccessible/dir")
    }
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                point: PathBuf::from(unescape_mount(l.get(4)?)),
                options: (*l.get(5)?).to_owned(),
                fstype: (*r.first()?).to_owned(),
                source: unescape_mount(r.get(1).unwrap_or(&"")),
                root: unescape_mount(l.get(3)?),
                device: (*l.get(2)?).to_owned(),
            })
        })
        .collect()
}

/// The mount that holds `path` among `mounts`: the last-mounted one with the longest mount
/// point that `path` starts with.
fn holding<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts.iter().filter(|m| path.starts_with(&m.point)) {
        if best.is_none_or(|b| m.point.as_os_str().len() >= b.point.as_os_str().len()) {
            best = Some(m);
        }
    }
    best
}

/// The mount that holds `path` (the last-mounted one with the longest matching mount point).
pub fn mount_of(path: &Path) -> Option<Mount> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    holding(&parse_mountinfo(&text), &path).cloned()
}

/// True when a filesystem is really mounted at `point` (absolute, canonical) according to
/// `mounts`: the topmost mount there shows a whole filesystem (its root is `/`) and another
/// device than the mount holding the parent directory. A bind of a directory onto itself, as
/// `ReadWritePaths=` makes for every path it names inside a unit, has the parent's device and a
/// root that is not `/`, so an empty mount-point directory is not taken for the disk. On btrfs
/// the root of a mount is the subvolume it shows, so there a subvolume of another device counts.
pub fn mounted_at(mounts: &[Mount], point: &Path) -> bool {
    let Some(parent) = point.parent() else {
        return true;
    };
    let Some(top) = mounts.iter().rev().find(|m| m.point == point) else {
        return false;
    };
    let whole = top.root == "/" || top.fstype == "btrfs";
    whole && holding(mounts, parent).is_none_or(|p| p.device != top.device)
}

/// True when a filesystem is mounted at `path` (see [`mounted_at`]). Without a readable
/// `/proc/self/mountinfo`, a device change from the parent directory decides.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(path) else {
        return false;
    };
    if let Ok(text) = fs::read_to_string("/proc/self/mountinfo") {
        return mounted_at(&parse_mountinfo(&text), &canon);
    }
    match (fs::metadata(&canon), canon.parent().map(fs::metadata)) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
}

/// The systemd mount unit of the mount point `path` (as `systemd-escape --path --suffix=mount`).
pub fn mount_unit(path: &Path) -> String {
    let trimmed = path.to_string_lossy().trim_matches('/').to_owned();
    if trimmed.is_empty() {
        return "-.mount".into();
    }
    let mut out = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b":_.".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out + ".mount"
}

const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

/// The name of a volatile filesystem type, if `path` is on one.
pub fn volatile_fs(path: &Path) -> Option<&'static str> {
    let st = nix::sys::statfs::statfs(path).ok()?;
    match st.filesystem_type().0 as i64 {
        TMPFS_MAGIC => Some("tmpfs"),
        RAMFS_MAGIC => Some("ramfs"),
        OVERLAYFS_MAGIC => Some("overlay"),
        _ => None,
    }
}

/// What limits the size of one file on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// The filesystem's format (named by its type).
    Filesystem(&'static str),
    /// This process's `RLIMIT_FSIZE` (under systemd, the unit's `LimitFSIZE=`).
    Process,
}

/// The largest file a target can hold, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// Bytes.
    pub bytes: u64,
    /// Where the limit comes from.
    pub source: LimitSource,
}

const FAT_LARGEST_FILE: u64 = (4 << 30) - 1;

/// Filesystem types by `statfs` magic, with the largest file their format allows (`None`: no
/// limit an archive could reach). Only types listed with a limit have one; a type not listed
/// has none, and a file too large for it fails the run with EFBIG (30) when it happens. glibc's
/// `pathconf(_PC_FILESIZEBITS)` is not used: it answers 32 for every type it does not know
/// (exFAT, FUSE, NFS, SMB, ZFS, ...), which would split or refuse archives for nothing.
const FILESYSTEMS: &[(u32, &str, Option<u64>)] = &[
    (0x4d44, "FAT", Some(FAT_LARGEST_FILE)),
    (0xef53, "ext2/ext3/ext4", None),
    (0x5846_5342, "xfs", None),
    (0x9123_683e, "btrfs", None),
    (0x2011_bab0, "exFAT", None),
    (0xf2f5_2010, "f2fs", None),
    (0x5346_544e, "NTFS", None),
    (0x6969, "NFS", None),
    (0xfe53_4d42, "SMB2", None),
    (0xff53_4d42, "CIFS", None),
    (0x2fc1_2fc1, "ZFS", None),
    (0x6573_5546, "FUSE", None),
    (0x0102_1994, "tmpfs", None),
];

/// The name and largest file of the filesystem type with `statfs` magic `magic`.
pub fn filesystem_limit(magic: u32) -> (Option<&'static str>, Option<u64>) {
    FILESYSTEMS
        .iter()
        .find(|(m, _, _)| *m == magic)
        .map_or((None, None), |&(_, name, limit)| (Some(name), limit))
}

/// The largest file `path`'s filesystem and this process's `RLIMIT_FSIZE` allow, if limited,
/// with the tighter of the two as the source.
pub fn file_limit(path: &Path) -> Option<FileLimit> {
    let fs_limit = nix::sys::statfs::statfs(path).ok().and_then(|st| {
        let (name, limit) = filesystem_limit(st.filesystem_type().0 as u32);
        Some(FileLimit {
            bytes: limit?,
            source: LimitSource::Filesystem(name?),
        })
    });
    let rlimit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE)
        .ok()
        .map(|(soft, _)| soft)
        .filter(|&soft| soft != libc::RLIM_INFINITY)
        .map(|bytes| FileLimit {
            bytes,
            source: LimitSource::Process,
        });
    match (fs_limit, rlimit) {
        (Some(a), Some(b)) => Some(if b.bytes < a.bytes { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The largest file `path`'s filesystem and this process's `RLIMIT_FSIZE` allow, if limited.
pub fn largest_file(path: &Path) -> Option<u64> {
    file_limit(path).map(|l| l.bytes)
}

/// How archives are laid out on `target`: split below the largest file the filesystem and
/// `RLIMIT_FSIZE` allow (`auto`), into forced parts, or never (`off`).
pub fn layout(target: &Target) -> Layout {
    let limit = largest_file(&target.path);
    match target.split {
        Split::Off => Layout::Single,
        Split::Size(n) => {
            let n = crate::host::fault::part_size().unwrap_or(n);
            Layout::Parts(limit.map_or(n, |l| n.min(l)))
        }
        Split::Auto => limit.map_or(Layout::Single, Layout::PartsIfNeeded),
    }
}

/// Creates, writes and fsyncs a probe file in `dir`, commits it with the archive's own commit
/// ([`TempFile::commit`], so [`rename_noreplace`](crate::target::local::rename_noreplace) and its
/// fallbacks), removes it and fsyncs the directory. Both of its names start with the temporary
/// prefix, so a probe left by a killed run is removed like any other leftover.
pub fn write_probe(dir: &Path) -> io::Result<()> {
    let name = format!("{TEMP_PREFIX}probe.{}", std::process::id());
    let mut probe = TempFile::create(dir, &name, "probe")?;
    probe.write_all(&[0u8; 4096])?;
    probe.sync()?;
    let committed = probe.commit()?;
    fs::remove_file(&committed)?;
    fs::File::open(dir)?.sync_all()
}

/// The directory `require-mount` checks for `target`: its `mount`, else its path.
pub fn mount_point(target: &Target) -> &Path {
    target.mount.as_deref().unwrap_or(&target.path)
}

fn check_target(target: &Target, expected: u64, locked: bool, findings: &mut Vec<Finding>) {
    let name = Some(target.name.as_str());
    let path = &target.path;
    if let Some(mount) = mount_of(path).filter(Mount::is_inaccessible_node) {
        findings.push(fail(
            "target-exists",
            name,
            Error::TargetHidden {
                target: target.name.clone(),
                path: path.clone(),
                mount: mount.point,
            },
        ));
        return;
    }
    if !path.is_dir() {
        findings.push(fail(
            "target-exists",
            name,
            Error::TargetMissing {
                target: target.name.clone(),
                path: path.clone(),
            },
        ));
        return;
    }
    findings.push(ok(
        "target-exists",
        name,
        format!("{} is a directory", path.display()),
    ));
    if target.require_mount {
        let point = mount_point(target);
        if !is_mount_point(point) {
            findings.push(fail(
                "target-mounted",
                name,
                Error::TargetNotMounted {
                    target: target.name.clone(),
                    path: point.to_owned(),
                },
            ));
            return;
        }
        findings.push(ok(
            "target-mounted",
            name,
            format!("a filesystem is mounted at {}", point.display()),
        ));
    }
    if let Some(fstype) = volatile_fs(path) {
        if !target.allow_volatile {
            findings.push(fail(
                "target-durable",
                name,
                Error::TargetVolatile {
                    target: target.name.clone(),
                    path: path.clone(),
                    fstype,
                },
            ));
            return;
        }
        findings.push(ok(
            "target-durable",
            name,
            format!("{fstype}, allowed by allow-volatile"),
        ));
    }
    if let Err(error) = write_probe(path) {
        let err = if error.raw_os_error() == Some(libc::EROFS) {
            Error::TargetReadonly {
                target: target.name.clone(),
                path: path.clone(),
                mount: mount_of(path).filter(Mount::read_only).map(Box::new),
                under_systemd: std::env::var_os("INVOCATION_ID").is_some(),
            }
        } else if matches!(error.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
            let meta = fs::metadata(path).ok();
            Error::TargetDenied {
                target: target.name.clone(),
                path: path.clone(),
                uid: nix::unistd::geteuid().as_raw(),
                owner: meta.as_ref().map(|m| m.uid()).unwrap_or(0),
                mode: meta.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(0),
                error,
            }
        } else {
            Error::TargetWrite {
                target: target.name.clone(),
                path: path.clone(),
                error,
            }
        };
        findings.push(fail("target-writable", name, err));
        return;
    }
    findings.push(ok(
        "target-writable",
        name,
        "probe file created, written, fsynced, committed as archives are, removed",
    ));
    if let Ok(st) = nix::sys::statvfs::statvfs(path) {
        let free = st.blocks_available().saturating_mul(st.fragment_size());
        let need = expected.saturating_add(target.min_free);
        let inodes = st.files_available();
        // Filesystems without inode accounting report zero files in total.
        if free < need || (st.files() > 0 && inodes < 16) {
            findings.push(fail(
                "target-space",
                name,
                Error::TargetFull {
                    target: target.name.clone(),
                    path: path.clone(),
                    free,
                    need,
                    inodes,
                },
            ));
            return;
        }
        findings.push(ok(
            "target-space",
            name,
            format!(
                "{} free; about {} needed (archive ~{} + min-free {})",
                human_bytes(free),
                human_bytes(need),
                human_bytes(expected),
                human_bytes(target.min_free)
            ),
        ));
    }
    if let Some(FileLimit {
        bytes: limit,
        source,
    }) = file_limit(path)
    {
        if expected > limit && target.split == Split::Off {
            findings.push(fail(
                "target-filesize",
                name,
                Error::TargetFilesize {
                    target: target.name.clone(),
                    path: path.clone(),
                    limit,
                    expected,
                    by_process: source == LimitSource::Process,
                },
            ));
            return;
        }
        let detail = if expected > limit {
            format!(
                "largest file {}: the archive (~{}) will be split into parts",
                human_bytes(limit),
                human_bytes(expected)
            )
        } else {
            format!("largest file {} is enough", human_bytes(limit))
        };
        findings.push(ok("target-filesize", name, detail));
    }
    if locked {
        match crate::target::local::recover(path) {
            Ok(done) if !done.is_empty() => {
                report_recovery(target, &done);
                findings.push(ok(
                    "target-leftovers",
                    name,
                    format!(
                        "put in order after interrupted runs: {} commit(s) finished, {} undone, {} deletion(s) finished, {} temporary file(s) removed",
                        done.finished.len(),
                        done.undone.len(),
                        done.deleted.len(),
                        done.removed.len()
                    ),
                ));
            }
            Ok(_) => {}
            Err(error) => findings.push(fail(
                "target-leftovers",
                name,
                Error::TargetWrite {
                    target: target.name.clone(),
                    path: path.clone(),
                    error,
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    95 22 0:5 / /mnt/my\\040disk ro,nosuid - vfat /dev/sdb1 ro\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[1].point, PathBuf::from("/mnt/my disk"));
        assert!(mounts[1].read_only());
        assert!(!mounts[0].read_only());
        assert_eq!(mounts[1].fstype, "vfat");
        assert_eq!(mounts[1].source, "/dev/sdb1");
        assert_eq!(mounts[1].root, "/");
        assert!(!mounts[1].is_inaccessible_node());
    }

    #[test]
    fn systemds_inaccessible_nodes_are_recognised() {
        // As seen inside a service with InaccessiblePaths=/srv/backups (host and container).
        let text = "300 22 0:25 /systemd/inaccessible/dir /srv/backups ro,nosuid,nodev,noexec shared:117 - tmpfs tmpfs rw\n\
                    301 22 0:25 /host/inaccessible/dir /home ro,nosuid,nodev,noexec shared:115 - tmpfs tmpfs rw\n\
                    302 22 0:25 /srv/data /srv/data rw shared:118 - ext4 /dev/sda1 rw\n";
        let mounts = parse_mountinfo(text);
        assert!(mounts[0].is_inaccessible_node());
        assert!(mounts[1].is_inaccessible_node());
        assert!(!mounts[2].is_inaccessible_node());
    }

    #[test]
    fn the_root_is_a_mount_point_and_a_subdirectory_is_not() {
        assert!(is_mount_point(Path::new("/")));
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        assert!(!is_mount_point(&sub));
    }

    #[test]
    fn the_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        write_probe(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Mountinfo as inside vouch.service with `ProtectSystem=strict` and
    /// `ReadWritePaths=/mnt/usb /mnt/stick/backups`: the root, a real disk at /mnt/stick, and
    /// the self-binds systemd makes for each path it opens.
    const SANDBOX: &str = "22 1 254:0 / / ro,relatime shared:1 - ext4 /dev/vda rw\n\
        40 22 8:17 / /mnt/stick ro,relatime shared:20 - exfat /dev/sdb1 rw\n\
        41 22 254:0 /mnt/usb /mnt/usb rw,relatime shared:1 - ext4 /dev/vda rw\n\
        42 40 8:17 /backups /mnt/stick/backups rw,relatime shared:20 - exfat /dev/sdb1 rw\n\
        43 40 8:17 / /mnt/stick rw,relatime shared:20 - exfat /dev/sdb1 rw\n";

    #[test]
    fn a_self_bind_of_an_empty_mount_point_is_not_a_mount() {
        let mounts = parse_mountinfo(SANDBOX);
        assert!(
            !mounted_at(&mounts, Path::new("/mnt/usb")),
            "self-bind of the root fs"
        );
        assert!(
            mounted_at(&mounts, Path::new("/mnt/stick")),
            "the disk, bound onto itself"
        );
        assert!(
            !mounted_at(&mounts, Path::new("/mnt/stick/backups")),
            "a directory of the disk bound onto itself is not the disk's mount point"
        );
        assert!(!mounted_at(&mounts, Path::new("/mnt")), "no entry at all");
        assert!(mounted_at(&mounts, Path::new("/")));
    }

    #[test]
    fn a_bind_of_another_filesystems_subdirectory_is_not_a_mount() {
        let text = "22 1 254:0 / / rw - ext4 /dev/vda rw\n\
                    30 22 8:1 / /srv rw - ext4 /dev/sda1 rw\n\
                    31 22 8:1 /data /mnt/usb rw - ext4 /dev/sda1 rw\n";
        let mounts = parse_mountinfo(text);
        assert!(mounted_at(&mounts, Path::new("/srv")));
        assert!(!mounted_at(&mounts, Path::new("/mnt/usb")));
    }

    #[test]
    fn a_btrfs_subvolume_of_another_disk_is_a_mount_and_one_of_the_root_disk_bound_is_not() {
        let text = "22 1 0:30 /@ / rw - btrfs /dev/vda2 rw,subvol=/@\n\
                    30 22 0:41 /@backups /mnt/usb rw - btrfs /dev/sdb1 rw,subvol=/@backups\n\
                    31 22 0:30 /@/srv/b /srv/b rw - btrfs /dev/vda2 rw,subvol=/@\n";
        let mounts = parse_mountinfo(text);
        assert!(mounted_at(&mounts, Path::new("/mnt/usb")));
        assert!(
            !mounted_at(&mounts, Path::new("/srv/b")),
            "a self-bind on the root disk"
        );
    }

    #[test]
    fn mount_units_are_named_as_systemd_escape_names_them() {
        assert_eq!(mount_unit(Path::new("/mnt/usb")), "mnt-usb.mount");
        assert_eq!(mount_unit(Path::new("/")), "-.mount");
        assert_eq!(
            mount_unit(Path::new("/mnt/my disk")),
            "mnt-my\\x20disk.mount"
        );
        assert_eq!(mount_unit(Path::new("/srv/a-b/.x")), "srv-a\\x2db-.x.mount");
    }

    #[test]
    fn only_fat_has_a_file_size_limit_and_unknown_types_have_none() {
        assert_eq!(filesystem_limit(0x4d44), (Some("FAT"), Some((4 << 30) - 1)));
        for magic in [
            0xef53,
            0x2011_bab0,
            0x6969,
            0xfe53_4d42,
            0x2fc1_2fc1,
            0x6573_5546,
        ] {
            let (name, limit) = filesystem_limit(magic);
            assert!(name.is_some(), "{magic:#x} is known");
            assert_eq!(limit, None, "{magic:#x} has no limit");
        }
        assert_eq!(filesystem_limit(0x1234_5678), (None, None));
    }

    #[test]
    fn an_ext4_or_tmpfs_directory_has_no_file_size_limit_without_an_rlimit() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(file_limit(dir.path()), None);
    }
}
