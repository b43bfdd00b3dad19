//! Preflight: every check that can run before a byte of an archive is written.
//!
//! The seeds' backups died silently on read-only sandboxes, missing keys, unmounted disks, full
//! disks and FAT32's 4 GiB cap. Each of those has a check here with its own exit code and a fix in
//! one sentence, and `vouch run` runs them all before it starts writing. Checks report findings
//! rather than stopping at the first problem, so `vouch preflight` shows everything that is wrong
//! at once; the exit code is the first failure's.
//!
//! Target checks run in order (exists, mount point, volatile, write probe, space, file size) and
//! stop at a target's first failure, since later checks would only repeat it.

use crate::config::{Settings, Split, Target};
use crate::crypt::{KeyError, Keys};
use crate::dirs::Dirs;
use crate::error::Error;
use crate::lock::RunLock;
use crate::receipt::Receipt;
use crate::sink::local::Layout;
use crate::sink::local::TEMP_PREFIX;
use crate::systemd::human_bytes;
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
fn report_recovery(target: &Target, done: &crate::sink::local::Recovery) {
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
    let bytes = crate::bounded::read(
        &dir.join(newest),
        crate::bounded::Links::Refuse,
        crate::bounded::RECEIPT_CAP,
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
            })
        })
        .collect()
}

/// The mount that holds `path` (the last-mounted one with the longest matching mount point).
pub fn mount_of(path: &Path) -> Option<Mount> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut best: Option<Mount> = None;
    for m in parse_mountinfo(&text) {
        if path.starts_with(&m.point)
            && best
                .as_ref()
                .is_none_or(|b| m.point.as_os_str().len() >= b.point.as_os_str().len())
        {
            best = Some(m);
        }
    }
    best
}

/// True when `path` is a mount point: a mountinfo entry for it, or a device change from its
/// parent.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(path) else {
        return false;
    };
    if let Ok(text) = fs::read_to_string("/proc/self/mountinfo") {
        if parse_mountinfo(&text).iter().any(|m| m.point == canon) {
            return true;
        }
    }
    match (fs::metadata(&canon), canon.parent().map(fs::metadata)) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
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

/// The largest file `path`'s filesystem and this process's `RLIMIT_FSIZE` allow, if limited.
pub fn largest_file(path: &Path) -> Option<u64> {
    let fs_limit = nix::unistd::pathconf(path, nix::unistd::PathconfVar::FILESIZEBITS)
        .ok()
        .flatten()
        .and_then(|bits| u32::try_from(bits).ok())
        .filter(|&bits| bits < 64)
        .map(|bits| (1u64 << bits) - 1);
    let rlimit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE)
        .ok()
        .map(|(soft, _)| soft)
        .filter(|&soft| soft != libc::RLIM_INFINITY);
    match (fs_limit, rlimit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How archives are laid out on `target`: split below the largest file the filesystem and
/// `RLIMIT_FSIZE` allow (`auto`), into forced parts, or never (`off`).
pub fn layout(target: &Target) -> Layout {
    let limit = largest_file(&target.path);
    match target.split {
        Split::Off => Layout::Single,
        Split::Size(n) => {
            let n = crate::fault::part_size().unwrap_or(n);
            Layout::Parts(limit.map_or(n, |l| n.min(l)))
        }
        Split::Auto => limit.map_or(Layout::Single, Layout::PartsIfNeeded),
    }
}

/// Creates, writes, fsyncs, renames and removes a probe file in `dir`.
pub fn write_probe(dir: &Path) -> io::Result<()> {
    let name = format!("{TEMP_PREFIX}probe.{}", std::process::id());
    let probe = dir.join(&name);
    let renamed = dir.join(format!("{name}.renamed"));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&probe)?;
        f.write_all(&[0u8; 4096])?;
        f.sync_all()?;
        fs::rename(&probe, &renamed)?;
        fs::remove_file(&renamed)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&probe);
        let _ = fs::remove_file(&renamed);
    }
    result
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
        if !is_mount_point(path) {
            findings.push(fail(
                "target-mounted",
                name,
                Error::TargetNotMounted {
                    target: target.name.clone(),
                    path: path.clone(),
                },
            ));
            return;
        }
        findings.push(ok(
            "target-mounted",
            name,
            format!("{} is a mount point", path.display()),
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
        "probe file created, written, fsynced, renamed, removed",
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
    if let Some(limit) = largest_file(path) {
        if expected > limit && target.split == Split::Off {
            findings.push(fail(
                "target-filesize",
                name,
                Error::TargetFilesize {
                    target: target.name.clone(),
                    path: path.clone(),
                    limit,
                    expected,
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
        match crate::sink::local::recover(path) {
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
}
