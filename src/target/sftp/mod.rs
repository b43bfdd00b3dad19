//! SFTP servers (any OpenSSH `sftp-server` or `internal-sftp`) as an off-site target: the
//! client, the preflight ([`probe`]), the run's copy of the committed archive ([`copy`]) and
//! the archives on the server as a [`super::Target`] ([`store`]).
//!
//! The transport is the system's OpenSSH client, `ssh -s HOST sftp`, as a child process;
//! vouch speaks SFTP version 3 (draft-ietf-secsh-filexfer-02) over its stdin and stdout with a
//! small blocking client ([`client::Session`]), plus OpenSSH's `fsync@openssh.com`,
//! `statvfs@openssh.com` and `posix-rename@openssh.com`. No crate, no async runtime: the
//! protocol subset is a few hundred lines ([`protocol`]), and ssh brings its own hardening
//! (ciphers, host keys). ssh is pinned to one key, one known-hosts file and strict host key
//! checking; a host key is never accepted on first use ([`hostkey`] shows what to add).
//!
//! What OpenSSH's server does that an archive's commit relies on (measured with OpenSSH
//! 9.2p1, Debian 12, in `tests/sftp_client.rs`): an OPEN with `CREAT|EXCL` fails on an existing
//! name; plain RENAME is link(2) + unlink(2) and fails with `SSH_FX_FAILURE` when the target
//! exists, leaving it unchanged (`posix-rename@openssh.com` replaces it); `fsync@openssh.com`
//! and `statvfs@openssh.com` are advertised, and statvfs gives what `df` gives and the
//! read-only flag of the mount. A WRITE to a full filesystem and an OPEN on a read-only mount
//! are `SSH_FX_FAILURE` too (only `internal-sftp -R` says `SSH_FX_PERMISSION_DENIED`), so the
//! preflight tells them apart by statvfs. A directory cannot be fsynced over SFTP.

pub mod chain; // the files of one archive (alone, or its parts) read as one stream
pub mod client; // the session over a child ssh: requests, pipelined reads and writes
pub mod copy; // the run's copy: temporary name, fsync, read-back, rename, receipt
pub mod error; // what failed: ssh, the host key, the key, the server's status, the protocol
pub mod hostkey; // the server's host keys and fingerprints, for the known-hosts hint
pub mod probe; // preflight: key, ssh, host key, directory, a probe file, space, leftovers
pub mod protocol; // SFTP v3 packets: framing, encoding, checked decoding
pub mod store; // the archives on the server as a Target: list, read, delete, settle

pub use client::{Handle, Options, Reader, RemoteReader, Session};
pub use error::SftpError;
pub use hostkey::{scan_host_keys, HostKey};
pub use protocol::{Attrs, StatusCode, Statvfs};

use crate::config::{SftpRemote, SftpTarget};
use crate::host::credential;
use std::path::Path;

/// The prefix of every temporary name vouch makes in an sftp target's directory.
pub const TEMP_PREFIX: &str = ".vouch-tmp.";

/// One configured sftp target, its key file found and checked.
#[derive(Debug, Clone)]
pub struct Sftp {
    /// The target's name.
    pub name: String,
    /// Where the archives go.
    pub target: SftpTarget,
    /// How ssh is started.
    pub options: Options,
}

impl Sftp {
    /// The target `remote` with its private key found (`$CREDENTIALS_DIRECTORY`, else
    /// `/etc/vouch/credentials`) and checked: a regular file only its owner may read. Fails
    /// with what is wrong and the fix.
    pub fn open(
        remote: &SftpRemote,
        credentials_dir: Option<&Path>,
    ) -> Result<Sftp, (String, String)> {
        let secret = &remote.sftp.credential;
        let path = credential::locate(secret, credentials_dir);
        credential::read(secret, credentials_dir).map_err(|e| {
            (
                e.to_string(),
                e.hint(secret, "this sftp target's private key"),
            )
        })?;
        let t = &remote.sftp;
        Ok(Sftp {
            name: remote.name.clone(),
            target: remote.sftp.clone(),
            options: Options::new(&t.host, t.port, &t.user, path, &t.known_hosts),
        })
    }

    /// A new session.
    pub fn connect(&self) -> Result<Session, SftpError> {
        Session::connect(&self.options)
    }

    /// `HOST:PORT`, for messages.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.target.host, self.target.port)
    }
}
