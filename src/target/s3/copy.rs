//! The off-site copy of one committed archive to an S3 target, in the order that keeps its
//! promise: the object goes up (refusing a key that is taken), comes back down and is checked
//! by the caller's read-back exactly as the local copy was, and only then gets its retention
//! (with `object-lock`) and its receipt object, the remote's commit mark. A copy that fails
//! before that deletes the object version it made (nothing is locked yet) and aborts its
//! upload, so no object without a receipt is left by a failure, and what a crash leaves has no
//! receipt and is never counted as an archive.
//!
//! With `readback = "checksum"` nothing is downloaded: the copy stands on what the upload
//! proved (every part's ETag was its MD5, the server accepted its `Content-MD5`, signed
//! SHA-256 and, where the preflight saw it taken, `x-amz-checksum-sha256`; the Complete answer
//! was clean; a `HEAD` gives the size sent and the ETag the upload answered), and is recorded
//! as that weaker level.

use super::upload::{self, UploadError, Uploaded};
use super::{pending, probe, S3};
use crate::config::{ObjectLock, Readback};
use crate::systemd::sdnotify::Progress;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The archive to copy, from a directory target that committed it.
pub struct Source<'a> {
    /// Its file name (the object's name under the prefix).
    pub archive: &'a str,
    /// Its size.
    pub size: u64,
    /// Its data, all parts in order.
    pub data: Box<dyn Read + 'a>,
    /// The receipt to write as the commit mark, for this target.
    pub receipt: Vec<u8>,
}

/// A finished copy.
#[derive(Debug, Clone)]
pub struct Copied {
    /// `s3://BUCKET/KEY`.
    pub url: String,
    /// The object's ETag.
    pub etag: String,
    /// Its parts (1: a single PutObject).
    pub parts: u32,
    /// Upload, read-back and receipt.
    pub duration: Duration,
    /// The object's version, on a versioned bucket.
    pub version_id: Option<String>,
    /// The retain-until date (RFC 3339) of its Object Lock, when it has one.
    pub retain_until: Option<String>,
    /// How it was checked before its receipt was written.
    pub readback: Readback,
}

/// Why a copy failed: what, and the fix.
#[derive(Debug, Clone)]
pub struct Failed {
    /// What went wrong, naming the object.
    pub detail: String,
    /// One sentence with the fix.
    pub hint: String,
}

/// Records the upload id in the state directory before any part goes, and moves progress.
struct Tracker<'a> {
    s3: &'a S3,
    key: &'a str,
    state: &'a Path,
    run_id: &'a str,
    progress: Progress,
}

impl Tracker<'_> {
    /// Records the copy (and its upload id, once there is one) before bytes go.
    fn record(&self, upload_id: Option<&str>) {
        let record = pending::Upload {
            target: self.s3.name.clone(),
            key: self.key.to_owned(),
            upload_id: upload_id.map(str::to_owned),
        };
        if let Err(e) = pending::add(self.state, record, self.run_id) {
            log::warn!("cannot record the copy of {} in {}: {e}; a crash now would leave it for the bucket's lifecycle rule", self.key, pending::FILE);
        }
    }

    /// The copy is committed or undone: nothing to settle after a crash.
    fn forget(&self) {
        if let Err(e) = pending::remove(self.state, &self.s3.name, self.key, self.run_id) {
            log::warn!("cannot update {}: {e}", pending::FILE);
        }
    }
}

impl upload::Progress for Tracker<'_> {
    fn started(&mut self, upload_id: &str) {
        self.record(Some(upload_id));
        crate::host::fault::point("s3-after-create");
    }

    fn sent(&mut self, sent: u64) {
        self.progress.update(sent);
        crate::host::fault::point("s3-after-part");
    }
}

/// Copies `source` to `s3`; `readback` checks the downloaded object (it gets the object's
/// bytes and must read them to the end).
pub fn copy(
    s3: &S3,
    state: &Path,
    run_id: &str,
    source: Source<'_>,
    readback: &mut dyn FnMut(Box<dyn Read + Send>) -> Result<(), String>,
) -> Result<Copied, Failed> {
    let started = Instant::now();
    let key = s3.key(source.archive);
    let url = s3.client.url_of(&key);
    let again = format!(
        "The local archive is kept; the next run copies its new archive to [[target]] \"{}\" again.",
        s3.name
    );
    let fail = |detail: String| Failed {
        detail,
        hint: again.clone(),
    };
    match s3.client.head(&key) {
        Ok(None) => {}
        Ok(Some(_)) => {
            return Err(Failed {
                detail: format!("{url} exists already and is never replaced"),
                hint: format!("Look at {url}: another host may use the same bucket and prefix; give each host its own prefix."),
            })
        }
        Err(e) => return Err(fail(e.to_string())),
    }
    let mut tracker = Tracker {
        s3,
        key: &key,
        state,
        run_id,
        progress: Progress::new(format!("copying to {}", s3.name), Some(source.size)),
    };
    tracker.record(None);
    let mut data = source.data;
    let result = upload::upload_with(
        &s3.client,
        &key,
        &mut data,
        source.size,
        s3.part_size,
        probe::found(&s3.name).checksum_sha256,
        &mut tracker,
    );
    tracker.progress.finish();
    let uploaded = match result {
        Ok(u) => u,
        Err(e) => {
            // upload() aborted a multipart upload it could not finish.
            remove_object(s3, &key, &e);
            tracker.forget();
            return Err(fail(e.to_string()));
        }
    };
    let done = commit(
        s3,
        &key,
        &source.receipt,
        source.archive,
        source.size,
        &uploaded,
        readback,
    );
    if let Err(undo) = &done {
        if undo.discard {
            discard(s3, &key, uploaded.version_id.as_deref());
        }
    }
    tracker.forget();
    let retain_until = done.map_err(|undo| fail(undo.detail))?;
    Ok(Copied {
        url,
        etag: uploaded.etag,
        parts: uploaded.parts,
        duration: started.elapsed(),
        version_id: uploaded.version_id,
        retain_until,
        readback: s3.readback,
    })
}

/// Why a copy failed after its upload, and whether its object is to be deleted (it is, unless
/// it is locked already).
struct Undo {
    detail: String,
    discard: bool,
}

/// After the upload: the read-back (with `readback = "full"`), the lock, the receipt. Returns
/// the retain-until date of the lock.
fn commit(
    s3: &S3,
    key: &str,
    receipt: &[u8],
    archive: &str,
    size: u64,
    uploaded: &Uploaded,
    readback: &mut dyn FnMut(Box<dyn Read + Send>) -> Result<(), String>,
) -> Result<Option<String>, Undo> {
    let url = s3.client.url_of(key);
    let undo = |detail: String| Undo {
        detail,
        discard: true,
    };
    if s3.readback == Readback::Full {
        read_back(s3, key, size, readback)
            .map_err(|d| undo(format!("the read-back of {url} failed: {d}")))?;
    }
    crate::host::fault::point("s3-before-receipt");
    let lock = match s3.object_lock {
        None => None,
        Some(l) => Some((apply_lock(s3, key, uploaded, l).map_err(undo)?, l)),
    };
    let locked = lock.as_ref().map(|(until, l)| (until.as_str(), *l));
    if let Err(e) = put_receipt(s3, archive, receipt, locked) {
        if lock.is_some() {
            log::warn!("{url} is locked and stays without a receipt: no command counts it as an archive, and the bucket's lifecycle rule may remove it once its retention ends");
        }
        return Err(Undo {
            detail: format!("writing the receipt of {url}: {e}"),
            discard: lock.is_none(),
        });
    }
    Ok(lock.map(|(until, _)| until))
}

/// Downloads `key` and hands it to `readback`; the size must be the archive's.
fn read_back(
    s3: &S3,
    key: &str,
    size: u64,
    readback: &mut dyn FnMut(Box<dyn Read + Send>) -> Result<(), String>,
) -> Result<(), String> {
    let url = s3.client.url_of(key);
    crate::systemd::sdnotify::status(&format!("verifying {}: reading {url} back", s3.name));
    let (got, body) = s3.client.get(key).map_err(|e| e.to_string())?;
    if got != size {
        return Err(format!("{url} is {got} bytes, the archive {size}"));
    }
    readback(body)
}

/// The retain-until date `days` from now, RFC 3339 in whole seconds.
pub fn retain_until(days: u32) -> String {
    let until = (OffsetDateTime::now_utc() + time::Duration::days(i64::from(days)))
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `PutObjectRetention` on the version the upload created; returns its retain-until date.
fn apply_lock(s3: &S3, key: &str, uploaded: &Uploaded, lock: ObjectLock) -> Result<String, String> {
    let url = s3.client.url_of(key);
    let Some(version) = uploaded.version_id.as_deref() else {
        return Err(format!(
            "{url}: the upload answered no version id, so its retention cannot be set on the version that was read back"
        ));
    };
    let until = retain_until(lock.days);
    s3.client
        .put_retention(key, Some(version), lock.mode, &until)
        .map_err(|e| format!("locking {url} until {until}: {e}"))?;
    Ok(until)
}

/// The receipt object, with the archive's lock when it has one.
fn put_receipt(
    s3: &S3,
    archive: &str,
    receipt: &[u8],
    lock: Option<(&str, ObjectLock)>,
) -> Result<(), super::client::S3Error> {
    let mode = lock.map(|(_, l)| l.mode.as_s3());
    let mut headers = Vec::new();
    if let (Some(mode), Some((until, _))) = (mode, lock) {
        headers.push(("x-amz-object-lock-mode", mode));
        headers.push(("x-amz-object-lock-retain-until-date", until));
    }
    s3.client
        .put(&s3.receipt_key(archive), receipt, &headers)
        .map(|_| ())
}

/// After a failed upload: an object that appeared anyway (a Complete that went through but
/// whose answer was wrong) is removed, since it has no receipt and was never read back.
fn remove_object(s3: &S3, key: &str, e: &UploadError) {
    if matches!(e, UploadError::TooLarge { .. } | UploadError::Read(_)) {
        return;
    }
    if let Ok(Some(h)) = s3.client.head(key) {
        discard(s3, key, h.version_id.as_deref());
    }
}

/// Removes the object a failed copy made: its version, on a versioned bucket (a plain delete
/// would only hide it behind a delete marker).
fn discard(s3: &S3, key: &str, version_id: Option<&str>) {
    let deleted = match version_id {
        Some(v) => s3.client.delete_version(key, v),
        None => s3.client.delete(key),
    };
    if let Err(e) = deleted {
        log::warn!(
            "cannot delete {} after the failed copy: {e}; it has no receipt, so no command counts it as an archive",
            s3.client.url_of(key)
        );
    }
}
