//! What can go wrong talking SFTP through `ssh`, told apart so a caller can map each case to
//! its own exit code and hint: `ssh` missing, host key unknown or changed, key refused, server
//! unreachable, the transport lost, a server that stopped answering, a status the server
//! answered, a protocol violation.
//!
//! `ssh` reports the connection problems only on its stderr, so [`classify_ssh_stderr`] reads
//! its messages (OpenSSH 9.2's wording; the same since OpenSSH 7).

use super::protocol::{StatusCode, Violation};
use std::path::PathBuf;

/// An SFTP operation that failed, and why.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    /// The ssh program is not there (spawning it failed with `ENOENT`).
    #[error("{program} is not installed (apt-get install openssh-client)", program = .program.display())]
    NotInstalled {
        /// The program that was spawned.
        program: PathBuf,
    },
    /// The server's host key is not in the known-hosts file, or another one is.
    #[error("host key verification failed ({}): {message}", if *.changed { "the server's key has changed" } else { "the server's key is not known" })]
    HostKey {
        /// True when known-hosts has another key for the host ("REMOTE HOST IDENTIFICATION
        /// HAS CHANGED"), false when it has none.
        changed: bool,
        /// What ssh said.
        message: String,
    },
    /// The server refused the client key ("Permission denied (publickey)").
    #[error("the server refused the key: {message}")]
    AuthRefused {
        /// What ssh said.
        message: String,
    },
    /// No connection: refused, timed out, no route, unknown host name.
    #[error("cannot connect: {message}")]
    Unreachable {
        /// What ssh said.
        message: String,
    },
    /// The ssh process failed, ended or was cut off in the middle of the session.
    #[error("the ssh connection failed: {message}")]
    Transport {
        /// What failed, with what ssh said.
        message: String,
    },
    /// The server answered a request with an error status.
    #[error("{op}: {} ({message})", .code.name())]
    Status {
        /// The request and its path, e.g. `open /backups/x`.
        op: String,
        /// The status code.
        code: StatusCode,
        /// The server's message.
        message: String,
    },
    /// The server broke the protocol (a bad length, a wrong id, an unexpected packet).
    #[error("the SFTP server broke the protocol: {0}")]
    Protocol(String),
    /// The server sent nothing for the answer timeout while a request was outstanding
    /// (a hung `sftp-server` behind an sshd that still answers keepalives); ssh was killed.
    #[error("the SFTP server stopped answering: nothing came for {} s while a request was outstanding (ssh was ended)", .waited.as_secs_f64().round())]
    Timeout {
        /// How long the client waited.
        waited: std::time::Duration,
    },
    /// The server did not advertise an extension the operation needs.
    #[error("the SFTP server does not support {0}")]
    Unsupported(&'static str),
}

impl SftpError {
    /// The fix this error carries of its own, when it has one (else the caller's applies).
    pub fn hint(&self) -> Option<String> {
        match self {
            SftpError::Timeout { .. } => Some("The SFTP server stopped answering while its ssh connection stood: look at the server (a hung sftp-server process, a stuck disk or network filesystem under the target's directory, the server's log), then run `vouch preflight`.".to_owned()),
            _ => None,
        }
    }

    /// The server's status code, for a [`SftpError::Status`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            SftpError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// `SSH_FX_NO_SUCH_FILE`.
    pub fn is_no_such_file(&self) -> bool {
        self.status() == Some(StatusCode::NoSuchFile)
    }

    /// `SSH_FX_PERMISSION_DENIED`.
    pub fn is_permission_denied(&self) -> bool {
        self.status() == Some(StatusCode::PermissionDenied)
    }

    /// `SSH_FX_FAILURE`: OpenSSH's answer for a rename onto an existing name, an exclusive
    /// create of an existing file and a full disk.
    pub fn is_failure(&self) -> bool {
        self.status() == Some(StatusCode::Failure)
    }
}

impl From<Violation> for SftpError {
    fn from(v: Violation) -> SftpError {
        SftpError::Protocol(v.0)
    }
}

/// The error that ssh's stderr explains, or a [`SftpError::Transport`] naming `what` failed
/// and quoting the stderr.
pub fn classify_ssh_stderr(stderr: &str, what: &str) -> SftpError {
    let message = summary(stderr);
    if stderr.contains("Host key verification failed")
        || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || (stderr.contains("host key is known for") && stderr.contains("strict checking"))
    {
        let changed = stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("has changed and you have requested strict checking");
        return SftpError::HostKey { changed, message };
    }
    if stderr.contains("Permission denied (") || stderr.contains("Too many authentication failures")
    {
        return SftpError::AuthRefused { message };
    }
    const UNREACHABLE: [&str; 7] = [
        "Connection refused",
        "Connection timed out",
        "Operation timed out",
        "No route to host",
        "Network is unreachable",
        "Could not resolve hostname",
        "Name or service not known",
    ];
    if UNREACHABLE.iter().any(|m| stderr.contains(m)) {
        return SftpError::Unreachable { message };
    }
    SftpError::Transport {
        message: if message.is_empty() {
            format!("{what} (ssh said nothing)")
        } else {
            format!("{what}: {message}")
        },
    }
}

/// ssh's stderr on one line, without the warning banner's `@` lines and blank lines.
fn summary(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('@'))
        .collect::<Vec<_>>()
        .join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_messages_map_to_their_errors() {
        let unknown = "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested \
                       strict checking.\r\nHost key verification failed.\r\n";
        assert!(matches!(
            classify_ssh_stderr(unknown, "x"),
            SftpError::HostKey { changed: false, .. }
        ));
        let changed = "@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                       Host key for [127.0.0.1]:2222 has changed and you have requested strict \
                       checking.\nHost key verification failed.\n";
        let e = classify_ssh_stderr(changed, "x");
        assert!(matches!(e, SftpError::HostKey { changed: true, .. }), "{e}");
        assert!(!e.to_string().contains("@@"));
        let denied = "root@127.0.0.1: Permission denied (publickey).\r\n";
        assert!(matches!(
            classify_ssh_stderr(denied, "x"),
            SftpError::AuthRefused { .. }
        ));
        let refused = "ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n";
        assert!(matches!(
            classify_ssh_stderr(refused, "x"),
            SftpError::Unreachable { .. }
        ));
        let e = classify_ssh_stderr("", "the server closed the connection");
        assert!(matches!(e, SftpError::Transport { .. }));
        assert!(e.to_string().contains("ssh said nothing"), "{e}");
    }

    #[test]
    fn statuses_are_told_apart() {
        let e = SftpError::Status {
            op: "rename /a /b".into(),
            code: StatusCode::Failure,
            message: "Failure".into(),
        };
        assert!(e.is_failure() && !e.is_no_such_file() && !e.is_permission_denied());
        assert_eq!(e.to_string(), "rename /a /b: SSH_FX_FAILURE (Failure)");
        assert_eq!(SftpError::Protocol("x".into()).status(), None);
    }
}
