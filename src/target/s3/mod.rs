//! S3-compatible object storage (AWS, MinIO, Ceph, Garage, Backblaze B2) as an off-site target.
//!
//! An S3 target gets a copy of the archive after the directory targets committed it: the
//! committed local file is uploaded ([`copy`]), downloaded again and checked entry by entry
//! against the manifest exactly as the local read-back is, and only then is the receipt object
//! (`KEY.json`) written beside it: the receipt is the remote's commit mark, and an object
//! without one is not an archive. A multipart upload in flight is recorded in the state
//! directory first ([`pending`]), so the next preflight aborts what a crash left.
//!
//! Every request is signed with AWS Signature Version 4 over the SHA-256 of its real payload
//! (never `UNSIGNED-PAYLOAD`) and carries its `Content-MD5`, so the server checks the bytes it
//! received twice ([`sigv4`], [`client`]). Requests go out over the blocking `ureq` client;
//! there is no SDK and no async runtime. The one exception to the payload rule is not a
//! request vouch sends: the presigned `GET` URLs of `vouch presign` ([`presign`]), which have
//! no payload and are signed `UNSIGNED-PAYLOAD` as the specification requires. An endpoint
//! with its own CA is trusted through `tls-ca` ([`tls`]).

pub mod client; // the S3 requests, signed, sent and their answers checked
pub mod copy; // the off-site copy of one committed archive: upload, read-back, receipt
pub mod last; // the last copy of each target, for status
pub mod lock; // Object Lock: bucket configuration, retention of a version, version deletes
pub mod pending; // multipart uploads in flight, recorded so a crash's can be aborted
pub mod presign; // presigned GET URLs: SigV4 in the query string, for `vouch presign`
pub mod probe; // preflight: bucket, key, clock and a write that creates nothing
pub mod sigv4; // AWS Signature Version 4: canonical request, string to sign, Authorization
pub mod store; // the archives in the bucket as a Target: listed, read, deleted
pub mod tls; // tls-ca: an extra CA for a self-hosted endpoint's certificate
pub mod upload; // one archive into a bucket: a PutObject, or equal parts, checked
pub mod xml; // errors, listings and multipart documents

use crate::config::Remote;
use crate::host::credential::{self, Secret};
use client::{Client, Endpoint};
use serde::Deserialize;
use sigv4::Credentials;
use std::path::Path;
use std::time::Duration;

/// How long one request may stall (connect, or no byte moving either way).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// An S3 target, ready to send requests.
#[derive(Debug)]
pub struct S3 {
    /// The target's name.
    pub name: String,
    /// The client of its bucket.
    pub client: Client,
    /// The key prefix.
    pub prefix: String,
    /// The preferred part size.
    pub part_size: u64,
    /// The retention each archive gets after its read-back.
    pub object_lock: Option<crate::config::ObjectLock>,
    /// How a copy is checked before its receipt is written.
    pub readback: crate::config::Readback,
}

/// The access key file: TOML, owner-only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KeyFile {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// Reads and parses the access key of `secret`; the error names the file, never a secret.
pub fn credentials(
    secret: &Secret,
    credentials_dir: Option<&Path>,
) -> Result<Credentials, (String, String)> {
    let path = credential::locate(secret, credentials_dir);
    let hint_of = |e: &credential::CredentialError| e.hint(secret, "this s3 target");
    let bytes =
        credential::read(secret, credentials_dir).map_err(|e| (e.to_string(), hint_of(&e)))?;
    let shown = path.display().to_string();
    let fix = format!(
        "Write {shown} as TOML with access-key-id = \"...\" and secret-access-key = \"...\" (mode 0600, owned by root)."
    );
    let text = String::from_utf8(bytes)
        .map_err(|_| (format!("{shown} is not UTF-8 text"), fix.clone()))?;
    let key: KeyFile = toml::from_str(&text).map_err(|e| {
        // toml's message quotes the offending line, which may hold the secret: only its first line.
        let first = e.message().lines().next().unwrap_or("").to_owned();
        (
            format!("{shown} is not an access key file: {first}"),
            fix.clone(),
        )
    })?;
    if key.access_key_id.trim().is_empty() || key.secret_access_key.trim().is_empty() {
        return Err((
            format!("{shown}: access-key-id or secret-access-key is empty"),
            fix,
        ));
    }
    Ok(Credentials {
        access_key_id: key.access_key_id.trim().to_owned(),
        secret_access_key: key.secret_access_key.trim().to_owned(),
        session_token: key.session_token.map(|t| t.trim().to_owned()),
    })
}

impl S3 {
    /// The target of `remote` with the key from its credential and the CA of its `tls-ca`.
    pub fn open(remote: &Remote, credentials_dir: Option<&Path>) -> Result<S3, (String, String)> {
        let credentials = credentials(&remote.s3.credential, credentials_dir)?;
        let endpoint = Endpoint {
            url: remote.s3.endpoint.clone(),
            region: remote.s3.region.clone(),
            bucket: remote.s3.bucket.clone(),
            style: remote.s3.url_style,
        };
        let roots = match &remote.s3.tls_ca {
            Some(path) => tls::read_ca(path).map_err(|detail| {
                let hint = format!(
                    "Give tls-ca of [[target]] \"{}\" the PEM certificate of the CA that signed the endpoint's certificate (-----BEGIN CERTIFICATE-----), or remove it.",
                    remote.name
                );
                (detail, hint)
            })?,
            None => Vec::new(),
        };
        Ok(S3 {
            name: remote.name.clone(),
            client: Client::with_roots(endpoint, credentials, REQUEST_TIMEOUT, &roots),
            prefix: remote.s3.prefix.clone(),
            part_size: remote.s3.part_size,
            object_lock: remote.s3.object_lock,
            readback: remote.s3.readback,
        })
    }

    /// The key of an archive (or of any name) under the prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The key of an archive's receipt.
    pub fn receipt_key(&self, archive: &str) -> String {
        self.key(&format!("{archive}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_access_key_file_parses_and_its_errors_keep_the_secret_out() {
        let d = tempfile::tempdir().unwrap();
        let write = |text: &str| {
            let p = d.path().join("s3");
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        let secret = Secret::Credential("s3".into());
        write("access-key-id = \"GK1\"\nsecret-access-key = \"abc\"\n");
        let c = credentials(&secret, Some(d.path())).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("GK1", "abc")
        );
        write("access-key-id = \"GK1\"\nsecret-access-key = supersecret\n");
        let (detail, hint) = credentials(&secret, Some(d.path())).unwrap_err();
        assert!(
            !detail.contains("supersecret") && !hint.contains("supersecret"),
            "{detail}"
        );
        assert!(hint.contains("access-key-id"), "{hint}");
    }
}
