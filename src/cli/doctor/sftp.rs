//! `vouch doctor`'s own lines for each sftp target, made without connecting (the preflight
//! lines before them are the ones that talk to the server): `ssh` is installed, the private
//! key is found where the run will look and only its owner can read it, and the known-hosts
//! file holds a key for the server's host and port. Each problem is a `FAIL` with the fix,
//! since every run would fail on it.
//!
//! The known-hosts lookup is `ssh-keygen -F` (it reads hashed entries too, and the
//! `[HOST]:PORT` form for another port than 22); without ssh-keygen the file is read as text,
//! which finds unhashed entries only.

use super::{line, with_fix, Level, Line};
use crate::config::{Settings, SftpRemote};
use crate::host::credential;
use crate::host::dirs::Dirs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The lines of every sftp target.
pub(super) fn lines(settings: &Settings, dirs: &Dirs) -> Vec<Line> {
    let mut out = Vec::new();
    for remote in &settings.sftp {
        out.push(ssh_line(remote));
        out.push(key_line(remote, dirs));
        out.push(known_hosts_line(remote));
    }
    out
}

/// The first executable `name` on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn ssh_line(remote: &SftpRemote) -> Line {
    let check = format!("ssh {}", remote.name);
    match on_path("ssh") {
        Some(ssh) => {
            let version = Command::new(&ssh)
                .arg("-V")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
                .filter(|v| !v.is_empty());
            let detail = match version {
                Some(v) => format!("{} ({v})", ssh.display()),
                None => ssh.display().to_string(),
            };
            line(Level::Ok, check, detail)
        }
        None => with_fix(
            line(
                Level::Fail,
                check,
                "ssh is not on PATH: the target cannot be reached",
            ),
            "Install the OpenSSH client: apt-get install openssh-client.",
        ),
    }
}

fn key_line(remote: &SftpRemote, dirs: &Dirs) -> Line {
    let check = format!("ssh-key {}", remote.name);
    let secret = &remote.sftp.credential;
    let path = credential::locate(secret, dirs.credentials.as_deref());
    match credential::read(secret, dirs.credentials.as_deref()) {
        Err(e) => with_fix(
            line(Level::Fail, check, e.to_string()),
            e.hint(secret, "this sftp target's private key"),
        ),
        Ok(bytes) if !looks_like_private_key(&bytes) => with_fix(
            line(
                Level::Fail,
                check,
                format!("{} is not an OpenSSH private key", path.display()),
            ),
            format!(
                "Put the private key there (`ssh-keygen -t ed25519 -N '' -f {}` makes one; its .pub goes into the server's authorized_keys).",
                path.display()
            ),
        ),
        Ok(_) => line(
            Level::Ok,
            check,
            format!(
                "{} is a private key only its owner can read",
                path.display()
            ),
        ),
    }
}

/// Whether `bytes` start like a private key file (OpenSSH's own format or PEM).
fn looks_like_private_key(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    first.starts_with("-----BEGIN ") && first.contains("PRIVATE KEY-----")
}

/// The name ssh looks the server up by: `HOST` on port 22, else `[HOST]:PORT`.
pub(super) fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

fn known_hosts_line(remote: &SftpRemote) -> Line {
    let t = &remote.sftp;
    let check = format!("known-hosts {}", remote.name);
    let file = &t.known_hosts;
    let name = lookup_name(&t.host, t.port);
    let scan = format!(
        "Run `vouch preflight`: it shows the server's fingerprints and the exact line to add to {} (or `ssh-keyscan -p {} {}`, compared with `ssh-keygen -lf` of the server's host keys).",
        file.display(),
        t.port,
        t.host
    );
    if let Err(e) = crate::host::bounded::open_regular(file, crate::host::bounded::Links::Follow) {
        return with_fix(
            line(Level::Fail, check, format!("{}: {e}", file.display())),
            scan,
        );
    }
    match has_entry(file, &name) {
        Ok(true) => line(
            Level::Ok,
            check,
            format!("{} has a host key for {name}", file.display()),
        ),
        Ok(false) => with_fix(
            line(
                Level::Fail,
                check,
                format!(
                    "{} has no host key for {name}: preflight and every run fail with 16",
                    file.display()
                ),
            ),
            scan,
        ),
        Err(e) => with_fix(
            line(Level::Fail, check, format!("{}: {e}", file.display())),
            scan,
        ),
    }
}

/// Whether the known-hosts `file` has a key for `name` (`HOST` or `[HOST]:PORT`).
fn has_entry(file: &Path, name: &str) -> Result<bool, String> {
    let Some(keygen) = on_path("ssh-keygen") else {
        let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
        return Ok(plain_entry(&text, name));
    };
    let out = Command::new(keygen)
        .args(["-F", name, "-f"])
        .arg(file)
        .output()
        .map_err(|e| format!("ssh-keygen -F: {e}"))?;
    // ssh-keygen -F: 0 with the matching lines when found, 1 when not.
    Ok(out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| !l.starts_with('#') && !l.starts_with("@revoked") && !l.trim().is_empty()))
}

/// Whether the text of a known-hosts file has an unhashed, unrevoked line for `name`.
fn plain_entry(text: &str, name: &str) -> bool {
    text.lines().map(str::trim).any(|l| {
        let l = l.strip_prefix("@cert-authority ").unwrap_or(l);
        !l.starts_with('#')
            && !l.starts_with('@')
            && l.split_whitespace().count() >= 3
            && l.split_whitespace()
                .next()
                .is_some_and(|hosts| hosts.split(',').any(|h| h == name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_looked_up_as_ssh_does_and_plain_lines_are_read() {
        assert_eq!(lookup_name("nas.lan", 22), "nas.lan");
        assert_eq!(lookup_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
        let text = "# comment\nnas.lan,10.0.0.2 ssh-ed25519 AAAA\n[127.0.0.1]:2222 ssh-ed25519 AAAA\n@revoked other ssh-ed25519 AAAA\n";
        assert!(plain_entry(text, "nas.lan"));
        assert!(plain_entry(text, "10.0.0.2"));
        assert!(plain_entry(text, "[127.0.0.1]:2222"));
        assert!(!plain_entry(text, "127.0.0.1"), "another port");
        assert!(!plain_entry(text, "other"), "revoked");
        assert!(!plain_entry("nas.lan\n", "nas.lan"), "no key on the line");
    }

    #[test]
    fn private_keys_are_told_from_other_files() {
        assert!(looks_like_private_key(
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn...\n"
        ));
        assert!(looks_like_private_key(
            b"\n-----BEGIN RSA PRIVATE KEY-----\n"
        ));
        assert!(!looks_like_private_key(b"ssh-ed25519 AAAA vouch@web1\n"));
        assert!(!looks_like_private_key(b"access-key-id = \"x\"\n"));
    }
}
