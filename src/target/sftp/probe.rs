//! Preflight for an sftp target, before a byte of the archive is written anywhere: `ssh` is
//! installed, the server answers, its host key is the one in `known-hosts`, the key is
//! accepted, the directory is there, and a probe file is created exclusively, written,
//! fsynced, renamed and removed, as an archive will be. Then `statvfs@openssh.com` says
//! whether the expected archive fits. What interrupted runs left is settled first: the copies
//! [`crate::target::s3::pending`] records for the target, and every `.vouch-tmp.*` file in
//! the directory that carries this backup's name, parts included (the preflight holds the run
//! lock, so no run of this backup is using them).
//!
//! Each failure maps to the exit code a directory target would get for the same cause: 14 for
//! `ssh` missing, a server that does not answer (also one that stops answering in the middle,
//! [`SftpError::Timeout`]) or a directory that is not there, 16 for a
//! host key that is unknown or changed (the hint has the fingerprint and the exact line to add
//! to `known-hosts`) or a key the server refuses or a directory it does not let us write, 15
//! for a read-only filesystem (OpenSSH answers a write there only with "Failure", so the
//! read-only flag of statvfs tells it apart), 17 for too little space.

use super::{Session, Sftp, SftpError, TEMP_PREFIX};
use crate::exit::ExitCode;
use crate::target::receipt::Receipt;
use crate::target::s3::pending;
use crate::target::s3::probe::Refused;
use std::path::Path;

/// Checks `sftp` for an archive of about `expected` bytes of backup `backup`; settles what
/// `state` records for it. Returns what was found, for the preflight's line.
pub fn check(sftp: &Sftp, state: &Path, backup: &str, expected: u64) -> Result<String, Refused> {
    let mut s = sftp.connect().map_err(|e| connect_refused(sftp, &e))?;
    let dir = &sftp.target.path;
    let url = sftp.target.url_of("");
    match s.stat(dir) {
        Ok(a) if a.is_dir() => {}
        Ok(_) => {
            return Err(missing(
                sftp,
                format!("{dir} on {} is not a directory", sftp.host_port()),
            ))
        }
        Err(e) if e.is_no_such_file() => {
            return Err(missing(
                sftp,
                format!("{dir} does not exist on {}", sftp.host_port()),
            ))
        }
        Err(e) => return Err(status_refused(sftp, &mut s, &e)),
    }
    settle(sftp, &mut s, state);
    remove_leftovers(sftp, &mut s, backup);
    write_probe(&mut s, dir).map_err(|e| status_refused(sftp, &mut s, &e))?;
    let space = match s.statvfs(dir) {
        Ok(v) if v.available_bytes() < expected || v.favail < 2 => {
            return Err(Refused {
                code: ExitCode::TargetFull,
                detail: format!(
                    "{dir} on {} has {} free and {} inodes, the archive is expected to be about {}",
                    sftp.host_port(),
                    crate::systemd::sdnotify::human_bytes(v.available_bytes()),
                    v.favail,
                    crate::systemd::sdnotify::human_bytes(expected)
                ),
                hint: format!("Free space on {} under {dir} (prune its archives with a smaller keep for [[target]] \"{}\"), or give the account a larger quota.", sftp.target.host, sftp.name),
            })
        }
        Ok(v) => format!("{} free", crate::systemd::sdnotify::human_bytes(v.available_bytes())),
        Err(SftpError::Unsupported(_)) => {
            "the server cannot tell its free space (no statvfs@openssh.com)".to_owned()
        }
        Err(e) => return Err(status_refused(sftp, &mut s, &e)),
    };
    Ok(format!(
        "{url}: the server answers and the directory takes a write; {space}"
    ))
}

/// A 14 for the directory.
fn missing(sftp: &Sftp, detail: String) -> Refused {
    Refused {
        code: ExitCode::TargetMissing,
        detail,
        hint: format!(
            "Create {} on {} for user {} (vouch never creates it), or fix path of [[target]] \"{}\".",
            sftp.target.path, sftp.target.host, sftp.target.user, sftp.name
        ),
    }
}

/// The exit code and hint for a failed connection.
pub fn connect_refused(sftp: &Sftp, e: &SftpError) -> Refused {
    let t = &sftp.target;
    let (code, hint) = match e {
        SftpError::NotInstalled { .. } => (
            ExitCode::TargetMissing,
            "Install the OpenSSH client: apt-get install openssh-client.".to_owned(),
        ),
        SftpError::HostKey { changed, .. } => (ExitCode::TargetDenied, host_key_hint(sftp, *changed)),
        SftpError::Timeout { .. } => (ExitCode::TargetMissing, e.hint().unwrap_or_default()),
        SftpError::AuthRefused { .. } => (
            ExitCode::TargetDenied,
            format!(
                "Authorize the public half of {} for user {} on {} (its ~/.ssh/authorized_keys), or fix credential and user of [[target]] \"{}\".",
                sftp.options.identity.display(),
                t.user,
                t.host,
                sftp.name
            ),
        ),
        _ => (
            ExitCode::TargetMissing,
            format!(
                "Check that {}:{} answers ssh from this host (host, port, DNS, firewall) and that vouch.service may reach it.",
                t.host, t.port
            ),
        ),
    };
    Refused {
        code,
        detail: format!("{}:{}: {e}", t.host, t.port),
        hint,
    }
}

/// The fingerprints the server offers and the exact known-hosts lines to add.
fn host_key_hint(sftp: &Sftp, changed: bool) -> String {
    let file = sftp.target.known_hosts.display();
    let lead = if changed {
        format!("{file} has another host key for {}: if the server's key really changed, replace that line; otherwise someone may be in between.", sftp.host_port())
    } else {
        format!(
            "{file} has no host key for {}: vouch never trusts a key on first use.",
            sftp.host_port()
        )
    };
    match super::scan_host_keys(&sftp.options) {
        Ok(keys) if !keys.is_empty() => {
            let mut out = format!("{lead} The server offers");
            for k in &keys {
                out.push_str(&format!(" {} {}", k.key_type, k.fingerprint));
                out.push(';');
            }
            out.push_str(&format!(" compare with `ssh-keygen -lf` of its key files on the server, then add to {file}:"));
            for k in &keys {
                out.push('\n');
                out.push_str(&k.known_hosts_line);
            }
            out
        }
        Ok(_) | Err(_) => format!("{lead} Add the server's key to {file} (`ssh-keyscan -p {} {}`, checked against the server's `ssh-keygen -lf`).", sftp.target.port, sftp.target.host),
    }
}

/// The exit code and hint for a request the server refused.
fn status_refused(sftp: &Sftp, s: &mut Session, e: &SftpError) -> Refused {
    let dir = &sftp.target.path;
    let read_only = s.statvfs(dir).is_ok_and(|v| v.read_only());
    let (code, hint) = if read_only {
        (
            ExitCode::TargetReadonly,
            format!("{dir} on {} is on a read-only filesystem: remount it read-write, or point path of [[target]] \"{}\" elsewhere.", sftp.target.host, sftp.name),
        )
    } else if let Some(hint) = e.hint() {
        (ExitCode::TargetMissing, hint)
    } else if matches!(e, SftpError::Status { .. }) {
        (
            ExitCode::TargetDenied,
            format!("Let user {} create, rename and remove files in {dir} on {} (a read-only sftp subsystem, `internal-sftp -R`, refuses every change).", sftp.target.user, sftp.target.host),
        )
    } else {
        (
            ExitCode::TargetMissing,
            format!(
                "Check that {} answers ssh from this host and that its sftp subsystem works.",
                sftp.host_port()
            ),
        )
    };
    Refused {
        code,
        detail: format!("{}: {e}", sftp.host_port()),
        hint,
    }
}

/// `.vouch-tmp.probe.PID`: created exclusively, written, fsynced, renamed, removed.
pub(super) fn write_probe(s: &mut Session, dir: &str) -> Result<(), SftpError> {
    let pid = std::process::id();
    let first = format!("{dir}/{TEMP_PREFIX}probe.{pid}");
    let second = format!("{dir}/{TEMP_PREFIX}probe.{pid}.renamed");
    let h = s.create_exclusive(&first)?;
    let written = s
        .write_all(&h, 0, b"vouch probe\n")
        .and_then(|()| s.fsync(&h).map(|_| ()));
    let closed = s.close(h);
    let renamed = written.and(closed).and_then(|()| s.rename(&first, &second));
    let last = if renamed.is_ok() { &second } else { &first };
    let removed = s.remove(last);
    renamed.and(removed)
}

/// Settles the copies `state` records for this target: a copy whose receipt is there is
/// committed; an archive without its receipt (read back, never committed) is removed. Its
/// temporary files go with the other leftovers.
fn settle(sftp: &Sftp, s: &mut Session, state: &Path) {
    for record in pending::load(state)
        .into_iter()
        .filter(|u| u.target == sftp.name)
    {
        if let Err(e) = settle_one(sftp, s, state, &record.key) {
            log::warn!("target {}: cannot settle the interrupted copy {}: {e}; the next preflight tries again", sftp.name, record.key);
        }
    }
}

/// Settles the record of `key` (an archive's path on the server), a copy or a deletion that
/// was cut short: with its receipt (either name) there, the archive stands (a copy that
/// committed, or a deletion that had not begun); without it, the archive's data (the file, or
/// every part of it) is removed. Then the record goes. Returns whether data was removed.
pub(super) fn settle_one(
    sftp: &Sftp,
    s: &mut Session,
    state: &Path,
    key: &str,
) -> Result<bool, SftpError> {
    let mut has_receipt = false;
    for split in [false, true] {
        match s.stat(&Receipt::file_name(key, split)) {
            Ok(_) => has_receipt = true,
            Err(e) if e.is_no_such_file() => {}
            Err(e) => return Err(e),
        }
    }
    let removed = !has_receipt && remove_data(sftp, s, key)?;
    if let Err(e) = pending::remove(state, &sftp.name, key, crate::systemd::journal::run_id()) {
        log::warn!("cannot update {}: {e}", pending::FILE);
    }
    Ok(removed)
}

/// Removes the data files of the archive at `key` (`DIR/NAME`): `NAME` and every `NAME.NNN`
/// in `DIR`. Returns whether any was there.
fn remove_data(sftp: &Sftp, s: &mut Session, key: &str) -> Result<bool, SftpError> {
    let (dir, archive) = key.rsplit_once('/').unwrap_or(("", key));
    let mut removed = false;
    for (name, _) in s.read_dir(dir)? {
        if name != archive && !crate::target::local::is_part_name(archive, &name) {
            continue;
        }
        let path = format!("{dir}/{name}");
        match s.remove(&path) {
            Ok(()) => {
                log::info!(
                    "target {}: removed {path}, whose receipt is not there (its copy or deletion was cut short)",
                    sftp.name
                );
                removed = true;
            }
            Err(e) if e.is_no_such_file() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Removes every `.vouch-tmp.*` file in the directory that carries backup `backup`'s name.
fn remove_leftovers(sftp: &Sftp, s: &mut Session, backup: &str) {
    let dir = &sftp.target.path;
    let entries = match s.read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            log::warn!("target {}: cannot list {dir} for leftovers: {e}", sftp.name);
            return;
        }
    };
    for (name, _) in entries {
        if !is_own_temporary(&name, backup) {
            continue;
        }
        let path = format!("{dir}/{name}");
        match s.remove(&path) {
            Ok(()) => log::info!("target {}: removed the leftover {path}", sftp.name),
            Err(e) => log::warn!(
                "target {}: cannot remove the leftover {path}: {e}",
                sftp.name
            ),
        }
    }
}

/// Whether `name` is a temporary file of a copy of backup `backup`:
/// `.vouch-tmp.RUN.ARCHIVE`, `.vouch-tmp.RUN.ARCHIVE.NNN` (a part) or the same with a
/// receipt's suffix, with ARCHIVE one of its archives.
fn is_own_temporary(name: &str, backup: &str) -> bool {
    let Some((_run, rest)) = name
        .strip_prefix(TEMP_PREFIX)
        .and_then(|r| r.split_once('.'))
    else {
        return false;
    };
    crate::target::archives::is_own(&crate::target::archives::archive_of_file(rest), backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_backups_temporary_files_are_leftovers() {
        let run = "0123456789abcdef0123456789abcdef";
        let a = "web-20261201T030000Z.tar.gz.age";
        assert!(is_own_temporary(&format!(".vouch-tmp.{run}.{a}"), "web"));
        assert!(is_own_temporary(
            &format!(".vouch-tmp.{run}.{a}.json"),
            "web"
        ));
        assert!(!is_own_temporary(&format!(".vouch-tmp.{run}.{a}"), "web-1"));
        let other = "web-1-20261201T030000Z.tar.gz.age";
        assert!(!is_own_temporary(
            &format!(".vouch-tmp.{run}.{other}"),
            "web"
        ));
        assert!(!is_own_temporary(a, "web"));
        assert!(!is_own_temporary(".vouch-tmp.probe.1234", "web"));
        assert!(is_own_temporary(
            &format!(".vouch-tmp.{run}.{a}.007"),
            "web"
        ));
        assert!(is_own_temporary(
            &format!(".vouch-tmp.{run}.{a}-receipt.json"),
            "web"
        ));
        assert!(!is_own_temporary(&format!(".vouch-tmp.{run}.{a}.7"), "web"));
    }
}
