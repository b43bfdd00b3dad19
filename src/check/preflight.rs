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
//!   ([`mounted_at`](crate::host::filesystem::mounted_at)); the bind of each `ReadWritePaths=` path onto itself that systemd makes
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
use crate::host::filesystem::{
    file_limit, is_mount_point, mount_of, volatile_fs, FileLimit, LimitSource, Mount,
};
use crate::host::lock::RunLock;
use crate::pipeline::crypt::{KeyError, Keys};
use crate::systemd::sdnotify::human_bytes;
use crate::target::local::TEMP_PREFIX;
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
    let mut findings = vec![check_state(dirs)];
    let (finding, lock) = check_lock(dirs);
    findings.push(finding);
    findings.extend(settings.backup.sources.iter().map(|s| check_source(s)));
    let (finding, keys) = check_keys(settings, dirs);
    findings.push(finding);
    let mut estimate = None;
    let mut largest = 0;
    for target in &settings.targets {
        let expected = expected_size(target, settings, &mut estimate);
        largest = largest.max(expected);
        check_target(target, expected, lock.is_some(), &mut findings);
    }
    for remote in &settings.remotes {
        findings.push(check_remote(remote, dirs, largest));
    }
    for remote in &settings.sftp {
        findings.push(check_sftp(remote, settings, dirs, largest));
    }
    for (check, outcome) in crate::dump::preflight::check(settings, dirs) {
        findings.push(Finding {
            check,
            target: None,
            outcome,
        });
    }
    Outcome {
        findings,
        lock,
        keys,
    }
}

/// An S3 target: the expected archive fits in one object, its access key reads, the bucket
/// answers, a write goes through (and creates nothing); uploads an interrupted run left are
/// aborted.
fn check_remote(remote: &crate::config::Remote, dirs: &Dirs, expected: u64) -> Finding {
    let name = Some(remote.name.as_str());
    let refused = |code, detail, hint| {
        fail(
            "remote",
            name,
            Error::RemoteCheck {
                target: remote.name.clone(),
                code,
                detail,
                hint,
            },
        )
    };
    use crate::target::s3::upload::{part_size, MAX_OBJECT};
    if expected > MAX_OBJECT || part_size(expected, remote.s3.part_size).is_none() {
        return refused(
            crate::exit::ExitCode::TargetFilesize,
            format!(
                "the archive is expected to be about {}, more than the {} one S3 object may hold",
                human_bytes(expected),
                human_bytes(MAX_OBJECT)
            ),
            "Back up less to this target (split the sources across two configs with their own prefixes), or copy off-site with another kind of target.".into(),
        );
    }
    let s3 = match crate::target::s3::S3::open(remote, dirs.credentials.as_deref()) {
        Ok(s3) => s3,
        Err((detail, hint)) => return refused(crate::exit::ExitCode::Config, detail, hint),
    };
    match crate::target::s3::probe::check(&s3, &dirs.state) {
        Ok(found) => ok(
            "remote",
            name,
            format!(
                "s3://{}/{} at {}: the bucket answers and takes a write{}{}",
                remote.s3.bucket,
                remote.s3.prefix,
                remote.s3.endpoint,
                if found.checksum_sha256 {
                    " with x-amz-checksum-sha256"
                } else {
                    " (without x-amz-checksum-sha256)"
                },
                if remote.s3.object_lock.is_some() {
                    "; Object Lock is enabled"
                } else {
                    ""
                }
            ),
        ),
        Err(r) => refused(r.code, r.detail, r.hint),
    }
}

/// An sftp target: its key file reads, ssh connects with the known host key and the key, the
/// directory takes a probe file the way it takes an archive, and the expected archive fits;
/// what an interrupted copy left is settled.
fn check_sftp(
    remote: &crate::config::SftpRemote,
    settings: &Settings,
    dirs: &Dirs,
    expected: u64,
) -> Finding {
    let name = Some(remote.name.as_str());
    let refused = |code, detail, hint| {
        fail(
            "remote",
            name,
            Error::RemoteCheck {
                target: remote.name.clone(),
                code,
                detail,
                hint,
            },
        )
    };
    let sftp = match crate::target::sftp::Sftp::open(remote, dirs.credentials.as_deref()) {
        Ok(s) => s,
        Err((detail, hint)) => return refused(crate::exit::ExitCode::Config, detail, hint),
    };
    match crate::target::sftp::probe::check(&sftp, &dirs.state, &settings.backup.name, expected) {
        Ok(detail) => ok("remote", name, detail),
        Err(r) => refused(r.code, r.detail, r.hint),
    }
}

/// The state and runtime directories exist and take a file.
fn check_state(dirs: &Dirs) -> Finding {
    match dirs_writable(dirs) {
        Ok(()) => ok(
            "state",
            None,
            format!(
                "{} and {} writable",
                dirs.state.display(),
                dirs.runtime.display()
            ),
        ),
        Err(e) => fail("state", None, e),
    }
}

/// The run lock is free; taken, it is kept until the run ends.
fn check_lock(dirs: &Dirs) -> (Finding, Option<RunLock>) {
    match RunLock::acquire(&dirs.runtime) {
        Ok(l) => (
            ok("lock", None, format!("holding {}", l.path().display())),
            Some(l),
        ),
        Err(e) => (fail("lock", None, e.into()), None),
    }
}

/// A source exists and can be read (a directory listed, a file opened).
fn check_source(source: &Path) -> Finding {
    match source_readable(source) {
        Ok(detail) => ok("source", None, detail),
        Err(error) => fail(
            "source",
            None,
            Error::Source {
                path: source.to_owned(),
                error,
            },
        ),
    }
}

/// The recipients parse and the identity matches one of them (or its absence is allowed).
fn check_keys(settings: &Settings, dirs: &Dirs) -> (Finding, Option<Keys>) {
    match Keys::load(&settings.encryption, dirs.credentials.as_deref()) {
        Ok(k) if k.identity.is_none() && !settings.encryption.verify_without_identity => {
            (fail("keys", None, KeyError::NoIdentity.into()), None)
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
            (ok("keys", None, detail), Some(k))
        }
        Err(e) => (fail("keys", None, e.into()), None),
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
fn report_recovery(target: &Target, done: &crate::target::Recovery) {
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
    if let Some(size) = newest_receipt(crate::target::open(target).as_ref()).map(|r| r.archive_size)
    {
        return size + size / 5;
    }
    *estimate.get_or_insert_with(|| sources_size(&settings.backup.sources))
}

/// The newest receipt on a target (the archive with the greatest name that has one), if any.
pub fn newest_receipt(target: &dyn crate::target::Target) -> Option<Receipt> {
    let archives = target.scan().ok()?;
    archives
        .into_iter()
        .filter(|a| a.receipt_path.is_some())
        .max_by(|a, b| a.name.cmp(&b.name))?
        .receipt
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

/// Creates, writes and fsyncs a probe file in `dir`, commits it as archives are committed and
/// removes it ([`crate::target::Target::probe`]).
pub fn write_probe(dir: &Path) -> io::Result<()> {
    crate::target::open_dir(dir).probe()
}

/// The directory `require-mount` checks for `target`: its `mount`, else its path.
pub fn mount_point(target: &Target) -> &Path {
    target.mount.as_deref().unwrap_or(&target.path)
}

/// A target check's verdict.
enum Step {
    /// Passed: show the line and go on.
    Pass(Finding),
    /// Does not apply to this target: go on.
    Skip,
    /// Failed: show the failure and stop this target's checks (later ones would only repeat it).
    Stop(Finding),
}

/// The checks of one target, in order, each with its own exit code; the first failure ends them.
fn check_target(target: &Target, expected: u64, locked: bool, findings: &mut Vec<Finding>) {
    let checks: [&dyn Fn() -> Step; 7] = [
        &|| target_exists(target),
        &|| target_mounted(target),
        &|| target_durable(target),
        &|| target_writable(target),
        &|| target_space(target, expected),
        &|| target_filesize(target, expected),
        &|| target_leftovers(target, locked),
    ];
    for check in checks {
        match check() {
            Step::Pass(finding) => findings.push(finding),
            Step::Skip => {}
            Step::Stop(finding) => {
                findings.push(finding);
                return;
            }
        }
    }
}

/// The target directory exists and is not hidden by the sandbox (`InaccessiblePaths=`).
fn target_exists(target: &Target) -> Step {
    let name = Some(target.name.as_str());
    let path = &target.path;
    if let Some(mount) = mount_of(path).filter(Mount::is_inaccessible_node) {
        return Step::Stop(fail(
            "target-exists",
            name,
            Error::TargetHidden {
                target: target.name.clone(),
                path: path.clone(),
                mount: mount.point,
            },
        ));
    }
    if !path.is_dir() {
        return Step::Stop(fail(
            "target-exists",
            name,
            Error::TargetMissing {
                target: target.name.clone(),
                path: path.clone(),
            },
        ));
    }
    Step::Pass(ok(
        "target-exists",
        name,
        format!("{} is a directory", path.display()),
    ))
}

/// With `require-mount`, a filesystem is really mounted at the mount point.
fn target_mounted(target: &Target) -> Step {
    if !target.require_mount {
        return Step::Skip;
    }
    let name = Some(target.name.as_str());
    let point = mount_point(target);
    if !is_mount_point(point) {
        return Step::Stop(fail(
            "target-mounted",
            name,
            Error::TargetNotMounted {
                target: target.name.clone(),
                path: point.to_owned(),
            },
        ));
    }
    Step::Pass(ok(
        "target-mounted",
        name,
        format!("a filesystem is mounted at {}", point.display()),
    ))
}

/// The target is not on a filesystem that is gone at reboot, unless that is allowed.
fn target_durable(target: &Target) -> Step {
    let Some(fstype) = volatile_fs(&target.path) else {
        return Step::Skip;
    };
    let name = Some(target.name.as_str());
    if !target.allow_volatile {
        return Step::Stop(fail(
            "target-durable",
            name,
            Error::TargetVolatile {
                target: target.name.clone(),
                path: target.path.clone(),
                fstype,
            },
        ));
    }
    Step::Pass(ok(
        "target-durable",
        name,
        format!("{fstype}, allowed by allow-volatile"),
    ))
}

/// A probe file goes through the archive's own write and commit (see [`write_probe`]).
fn target_writable(target: &Target) -> Step {
    let name = Some(target.name.as_str());
    match write_probe(&target.path) {
        Ok(()) => Step::Pass(ok(
            "target-writable",
            name,
            "probe file created, written, fsynced, committed as archives are, removed",
        )),
        Err(error) => Step::Stop(fail("target-writable", name, probe_error(target, error))),
    }
}

/// What a failed write probe means: read-only, denied, or another write error.
fn probe_error(target: &Target, error: io::Error) -> Error {
    let path = &target.path;
    if error.raw_os_error() == Some(libc::EROFS) {
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
    }
}

/// Free space and inodes for the expected archive plus `min-free`.
fn target_space(target: &Target, expected: u64) -> Step {
    let Ok(st) = nix::sys::statvfs::statvfs(&target.path) else {
        return Step::Skip;
    };
    let name = Some(target.name.as_str());
    let free = st.blocks_available().saturating_mul(st.fragment_size());
    let need = expected.saturating_add(target.min_free);
    let inodes = st.files_available();
    // Filesystems without inode accounting report zero files in total.
    if free < need || (st.files() > 0 && inodes < 16) {
        return Step::Stop(fail(
            "target-space",
            name,
            Error::TargetFull {
                target: target.name.clone(),
                path: target.path.clone(),
                free,
                need,
                inodes,
            },
        ));
    }
    Step::Pass(ok(
        "target-space",
        name,
        format!(
            "{} free; about {} needed (archive ~{} + min-free {})",
            human_bytes(free),
            human_bytes(need),
            human_bytes(expected),
            human_bytes(target.min_free)
        ),
    ))
}

/// The largest file the filesystem and the process allow, against the expected archive.
fn target_filesize(target: &Target, expected: u64) -> Step {
    let Some(FileLimit {
        bytes: limit,
        source,
    }) = file_limit(&target.path)
    else {
        return Step::Skip;
    };
    let name = Some(target.name.as_str());
    if expected > limit && target.split == Split::Off {
        return Step::Stop(fail(
            "target-filesize",
            name,
            Error::TargetFilesize {
                target: target.name.clone(),
                path: target.path.clone(),
                limit,
                expected,
                by_process: source == LimitSource::Process,
            },
        ));
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
    Step::Pass(ok("target-filesize", name, detail))
}

/// Under the lock, what interrupted runs left is put in order (commits finished or undone,
/// deletions finished, temporary files removed).
fn target_leftovers(target: &Target, locked: bool) -> Step {
    if !locked {
        return Step::Skip;
    }
    let name = Some(target.name.as_str());
    match crate::target::open(target).recover() {
        Ok(done) if !done.is_empty() => {
            report_recovery(target, &done);
            Step::Pass(ok(
                "target-leftovers",
                name,
                format!(
                    "put in order after interrupted runs: {} commit(s) finished, {} undone, {} deletion(s) finished, {} temporary file(s) removed",
                    done.finished.len(),
                    done.undone.len(),
                    done.deleted.len(),
                    done.removed.len()
                ),
            ))
        }
        Ok(_) => Step::Skip,
        Err(error) => Step::Stop(fail(
            "target-leftovers",
            name,
            Error::TargetWrite {
                target: target.name.clone(),
                path: target.path.clone(),
                error,
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        write_probe(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
