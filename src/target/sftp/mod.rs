//! SFTP servers (any OpenSSH `sftp-server` or `internal-sftp`) as an off-site target: the
//! client so far, not yet a [`super::Target`].
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

pub mod client; // the session over a child ssh: requests, pipelined reads and writes
pub mod error; // what failed: ssh, the host key, the key, the server's status, the protocol
pub mod hostkey; // the server's host keys and fingerprints, for the known-hosts hint
pub mod protocol; // SFTP v3 packets: framing, encoding, checked decoding

pub use client::{Handle, Options, RemoteReader, Session};
pub use error::SftpError;
pub use hostkey::{scan_host_keys, HostKey};
pub use protocol::{Attrs, StatusCode, Statvfs};
