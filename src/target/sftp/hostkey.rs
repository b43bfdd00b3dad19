//! The server's host keys as the admin has to add them: `ssh-keyscan -p PORT HOST` for the
//! known-hosts lines, `ssh-keygen -lf -` for each key's fingerprint.
//!
//! vouch never trusts a key on first use; when [`super::Session::connect`] fails with
//! [`SftpError::HostKey`], a preflight or `doctor` calls [`scan_host_keys`] to show the
//! fingerprints (to compare with the server's own `ssh-keygen -lf`) and the exact lines to
//! put in the known-hosts file.

use super::client::Options;
use super::error::SftpError;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// One host key the server offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// The key type as `ssh-keygen` names it, e.g. `ED25519`.
    pub key_type: String,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The known-hosts line (`[HOST]:PORT TYPE KEY`, or `HOST TYPE KEY` on port 22).
    pub known_hosts_line: String,
}

/// The host keys the server at `opts.host`:`opts.port` offers, scanned without
/// authenticating (and without trusting them). `ssh-keyscan` waits at most
/// `opts.connect_timeout`.
pub fn scan_host_keys(opts: &Options) -> Result<Vec<HostKey>, SftpError> {
    let timeout = opts.connect_timeout.as_secs().max(1).to_string();
    let port = opts.port.to_string();
    let scan = run(
        Path::new("ssh-keyscan"),
        &["-T", &timeout, "-p", &port, "--", &opts.host],
        None,
    )?;
    let text = String::from_utf8_lossy(&scan.stdout);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if lines.is_empty() {
        let stderr = String::from_utf8_lossy(&scan.stderr);
        return Err(SftpError::Unreachable {
            message: format!(
                "ssh-keyscan got no host key from {}:{} ({})",
                opts.host,
                opts.port,
                stderr.trim()
            ),
        });
    }
    lines.into_iter().map(fingerprint).collect()
}

/// The fingerprint of one known-hosts line.
fn fingerprint(line: &str) -> Result<HostKey, SftpError> {
    let out = run(Path::new("ssh-keygen"), &["-l", "-f", "-"], Some(line))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "256 SHA256:abc... [127.0.0.1]:2222 (ED25519)"
    let words: Vec<&str> = text.split_whitespace().collect();
    match (words.get(1), words.last()) {
        (Some(fp), Some(ty)) if out.status.success() && fp.starts_with("SHA256:") => Ok(HostKey {
            key_type: ty.trim_matches(|c| c == '(' || c == ')').to_owned(),
            fingerprint: (*fp).to_owned(),
            known_hosts_line: line.to_owned(),
        }),
        _ => Err(SftpError::Transport {
            message: format!(
                "ssh-keygen -lf could not read the scanned key {line:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}

/// Runs `program` with `args`, feeding it `input`; ENOENT is [`SftpError::NotInstalled`].
fn run(program: &Path, args: &[&str], input: Option<&str>) -> Result<Output, SftpError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SftpError::NotInstalled {
                program: program.to_owned(),
            },
            _ => SftpError::Transport {
                message: format!("cannot start {}: {e}", program.display()),
            },
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A failed write shows as the program's own error below.
        let _ = stdin.write_all(format!("{text}\n").as_bytes());
    }
    child.wait_with_output().map_err(|e| SftpError::Transport {
        message: format!("{} failed: {e}", program.display()),
    })
}
