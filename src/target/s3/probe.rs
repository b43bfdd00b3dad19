//! Preflight for an S3 target, before a byte of the archive is written anywhere: the bucket is
//! there and the key may use it (`HeadBucket`), the server's clock agrees with ours (SigV4
//! refuses requests more than 15 minutes off), and a write goes through without creating an
//! object: a multipart upload is started, given one byte and aborted. Uploads an interrupted
//! run left ([`super::pending`]) are aborted first.
//!
//! The write probe also asks whether the server takes `x-amz-checksum-sha256`: the upload is
//! created with `x-amz-checksum-algorithm: SHA256` and the byte sent with its checksum; a
//! server that refuses either is probed again without them, and its copies go without (the
//! signed payload hash and `Content-MD5` still cover every byte). What the probe found is kept
//! for this process ([`found`]), where the copy of the same run reads it. A target with
//! `object-lock` needs a bucket with Object Lock enabled (`GetObjectLockConfiguration`), else
//! 14, as a directory with `require-mount` that is not mounted; a default retention on the
//! bucket is a warning, since a failed upload would become undeletable.
//!
//! Each failure maps to the exit code a directory target would get for the same cause: 14 for
//! an endpoint that does not answer or a bucket that is not there, 16 for a key the server
//! refuses, 10 for an access key file that is missing or malformed, 34 for a clock too far off
//! or an answer that makes no sense. The hint names the bucket, the prefix and the server's
//! own error code.

use super::client::S3Error;
use super::{pending, S3};
use crate::exit::ExitCode;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use time::OffsetDateTime;

/// What the preflight of one target found about its server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    /// The server took `x-amz-checksum-algorithm: SHA256` and `x-amz-checksum-sha256`.
    pub checksum_sha256: bool,
}

/// What this process's preflight found, by target name.
static FOUND: Mutex<BTreeMap<String, Found>> = Mutex::new(BTreeMap::new());

/// What the preflight of `target` found in this process (nothing: [`Found::default`], every
/// optional header off).
pub fn found(target: &str) -> Found {
    FOUND
        .lock()
        .map(|m| m.get(target).copied().unwrap_or_default())
        .unwrap_or_default()
}

/// The most the server's clock may differ from ours (SigV4's limit is 15 minutes).
pub const MAX_SKEW: time::Duration = time::Duration::minutes(10);

/// Why an S3 target fails preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The exit code.
    pub code: ExitCode,
    /// What is wrong.
    pub detail: String,
    /// The fix, in one sentence.
    pub hint: String,
}

/// Checks `s3`; aborts the uploads `state` records for it.
pub fn check(s3: &S3, state: &Path) -> Result<Found, Refused> {
    abort_leftovers(s3, state);
    let date = s3.client.head_bucket().map_err(|e| refused(s3, &e))?;
    clock(s3, date.as_deref())?;
    lock(s3)?;
    let found = write_probe(s3).map_err(|e| refused(s3, &e))?;
    if let Ok(mut m) = FOUND.lock() {
        m.insert(s3.name.clone(), found);
    }
    Ok(found)
}

/// With `object-lock` set: the bucket has Object Lock enabled, and preferably no default
/// retention.
fn lock(s3: &S3) -> Result<(), Refused> {
    if s3.object_lock.is_none() {
        return Ok(());
    }
    let bucket = &s3.client.endpoint().bucket;
    let missing = |detail: String| {
        Refused {
        code: ExitCode::TargetMissing,
        detail,
        hint: format!(
            "[[target]] \"{}\" sets object-lock, but the bucket {bucket} has no Object Lock: Object Lock can only be enabled when a bucket is created, so create a new bucket with it (and no default retention), or remove object-lock.",
            s3.name
        ),
    }
    };
    match s3.client.lock_configuration() {
        Ok(Some(c)) if c.enabled => {
            if let Some(d) = c.default_retention {
                log::warn!(
                    "target {}: the bucket {bucket} has a default retention ({d}): every object gets it on upload, so a copy that fails its read-back cannot be deleted; vouch sets the retention itself after the read-back: remove the bucket's default retention",
                    s3.name
                );
            }
            Ok(())
        }
        Ok(_) => Err(missing(format!(
            "the bucket {bucket} does not have Object Lock enabled (or its server has no Object Lock)"
        ))),
        Err(e) => Err(refused(s3, &e)),
    }
}

/// The exit code and hint for a failed request.
fn refused(s3: &S3, e: &S3Error) -> Refused {
    let ep = s3.client.endpoint();
    let code = e.code().unwrap_or("");
    let (exit, hint) = match e {
        S3Error::Transport { .. } => (
            ExitCode::TargetMissing,
            format!(
                "Check that {} answers from this host (endpoint, DNS, firewall, TLS certificate) and that vouch.service may reach it; a server whose certificate comes from its own CA needs that CA as tls-ca.",
                ep.url
            ),
        ),
        _ if e.status() == Some(404) || code == "NoSuchBucket" => (
            ExitCode::TargetMissing,
            format!(
                "Create the bucket {} at {} or fix bucket (and region) in [[target]] \"{}\".",
                ep.bucket, ep.url, s3.name
            ),
        ),
        _ if e.status() == Some(403)
            || matches!(code, "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") =>
        {
            (
                ExitCode::TargetDenied,
                format!(
                    "The server refused the access key ({}): check the credential file of [[target]] \"{}\" and that the key may list, write and abort uploads in {} under \"{}\".",
                    if code.is_empty() { "403" } else { code },
                    s3.name,
                    ep.bucket,
                    s3.prefix
                ),
            )
        }
        _ if code == "RequestTimeTooSkewed" => (ExitCode::Remote, clock_hint()),
        _ => (
            ExitCode::Remote,
            format!(
                "The server at {} answered {}: check its logs and the bucket {}.",
                ep.url,
                if code.is_empty() { "with an error" } else { code },
                ep.bucket
            ),
        ),
    };
    Refused {
        code: exit,
        detail: e.to_string(),
        hint,
    }
}

fn clock_hint() -> String {
    "Set this host's clock right (timedatectl set-ntp true, then check timedatectl status): S3 refuses signed requests more than 15 minutes off.".to_owned()
}

/// The server's `Date` against our clock.
fn clock(s3: &S3, date: Option<&str>) -> Result<(), Refused> {
    let Some(date) = date else {
        return Ok(());
    };
    let Ok(theirs) =
        time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc2822)
    else {
        log::warn!(
            "target {}: the server's Date {date:?} does not parse; its clock is not checked",
            s3.name
        );
        return Ok(());
    };
    let skew = theirs - OffsetDateTime::now_utc();
    if skew.abs() > MAX_SKEW {
        return Err(Refused {
            code: ExitCode::Remote,
            detail: format!(
                "the clock of {} is {} s off this host's",
                s3.client.endpoint().url,
                skew.whole_seconds()
            ),
            hint: clock_hint(),
        });
    }
    Ok(())
}

/// Starts a multipart upload, sends it one byte and aborts it: write permission, proven
/// without an object ever appearing. Tried with the SHA-256 checksum first; a server that
/// refuses it (a 4xx or 501 that is not about the key) is tried again without.
pub fn write_probe(s3: &S3) -> Result<Found, S3Error> {
    match one_byte(s3, true) {
        Ok(()) => Ok(Found {
            checksum_sha256: true,
        }),
        Err(e) if checksum_refused(&e) => {
            log::info!(
                "target {}: the server does not take x-amz-checksum-sha256 ({e}); copies go with Content-MD5 and the signed payload hash only",
                s3.name
            );
            one_byte(s3, false).map(|()| Found::default())
        }
        Err(e) => Err(e),
    }
}

/// The one-byte multipart upload, with or without the SHA-256 checksum headers.
fn one_byte(s3: &S3, sha256: bool) -> Result<(), S3Error> {
    let key = s3.key(".vouch-probe");
    let algorithm: &[(&str, &str)] = if sha256 {
        &[("x-amz-checksum-algorithm", "SHA256")]
    } else {
        &[]
    };
    let sum = super::upload::checksum_sha256(b"v");
    let checksum: &[(&str, &str)] = if sha256 {
        &[("x-amz-checksum-sha256", &sum)]
    } else {
        &[]
    };
    let id = s3.client.create_multipart_with(&key, algorithm)?;
    let sent = s3.client.upload_part_with(&key, &id, 1, b"v", checksum);
    let aborted = s3.client.abort_multipart(&key, &id);
    sent?;
    aborted
}

/// Whether an error is a refusal of the checksum headers rather than of the request.
fn checksum_refused(e: &S3Error) -> bool {
    let denied = matches!(
        e.code(),
        Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "NoSuchBucket")
    );
    matches!(e.status(), Some(400 | 501)) && !denied
}

/// Settles the copies to this target that an interrupted run recorded: aborts the upload,
/// deletes an object that got no receipt (one with its receipt is a committed archive and is
/// left alone), forgets the record. What fails is a warning and is tried again next time.
fn abort_leftovers(s3: &S3, state: &Path) {
    for u in pending::load(state)
        .into_iter()
        .filter(|u| u.target == s3.name)
    {
        match settle(s3, &u) {
            Ok(what) => {
                log::info!(
                    "target {}: {what} {}, which an interrupted run left",
                    s3.name,
                    s3.client.url_of(&u.key)
                );
                if let Err(e) = pending::remove(state, &u.target, &u.key, "preflight") {
                    log::warn!("cannot update {}: {e}", pending::FILE);
                }
            }
            Err(e) => log::warn!(
                "target {}: cannot settle the copy of {} an interrupted run left: {e}",
                s3.name,
                u.key
            ),
        }
    }
}

/// Settles the one record of `key` on `s3`'s target, if there is one (a copy or a deletion an
/// interrupted run left), and forgets it; whether an object without a receipt was deleted.
pub fn settle_one(s3: &S3, state: &Path, key: &str) -> Result<bool, S3Error> {
    let Some(u) = pending::load(state)
        .into_iter()
        .find(|u| u.target == s3.name && u.key == key)
    else {
        return Ok(false);
    };
    let what = settle(s3, &u)?;
    if let Err(e) = pending::remove(state, &u.target, &u.key, "settle") {
        log::warn!("cannot update {}: {e}", pending::FILE);
    }
    Ok(what == DELETED)
}

/// What [`settle`] says when it deleted an object without a receipt.
const DELETED: &str = "deleted the object without a receipt,";

/// What settling one recorded copy did.
fn settle(s3: &S3, u: &pending::Upload) -> Result<&'static str, S3Error> {
    let mut what = "found nothing left of";
    if let Some(id) = &u.upload_id {
        s3.client.abort_multipart(&u.key, id)?;
        what = "aborted the upload of";
    }
    if s3.client.head(&format!("{}.json", u.key))?.is_some() {
        return Ok("kept the committed");
    }
    if let Some(h) = s3.client.head(&u.key)? {
        // By its version, on a versioned bucket: a plain delete would only hide it.
        match h.version_id {
            Some(v) => s3.client.delete_version(&u.key, &v)?,
            None => s3.client.delete(&u.key)?,
        }
        what = DELETED;
    }
    Ok(what)
}
