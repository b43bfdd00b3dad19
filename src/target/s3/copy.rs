//! The off-site copy of one committed archive to an S3 target, in the order that keeps its
//! promise: the object goes up (refusing a key that is taken), comes back down and is checked
//! by the caller's read-back exactly as the local copy was, and only then gets its receipt
//! object, the remote's commit mark. A copy that fails at any step deletes the object it made
//! (nothing is locked yet) and aborts its upload, so no object without a receipt is left by a
//! failure, and what a crash leaves has no receipt and is never counted as an archive.

use super::upload::{self, UploadError};
use super::{pending, S3};
use crate::systemd::sdnotify::Progress;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

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
    let result = upload::upload(
        &s3.client,
        &key,
        &mut data,
        source.size,
        s3.part_size,
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
    crate::systemd::sdnotify::status(&format!("verifying {}: reading {url} back", s3.name));
    let checked = s3
        .client
        .get(&key)
        .map_err(|e| e.to_string())
        .and_then(|(size, body)| {
            if size != source.size {
                return Err(format!(
                    "{url} is {size} bytes, the archive {}",
                    source.size
                ));
            }
            readback(body)
        });
    if let Err(detail) = checked {
        delete_quietly(s3, &key);
        tracker.forget();
        return Err(fail(format!("the read-back of {url} failed: {detail}")));
    }
    crate::host::fault::point("s3-before-receipt");
    if let Err(e) = s3
        .client
        .put(&s3.receipt_key(source.archive), &source.receipt, &[])
    {
        delete_quietly(s3, &key);
        tracker.forget();
        return Err(fail(format!("writing the receipt of {url}: {e}")));
    }
    tracker.forget();
    Ok(Copied {
        url,
        etag: uploaded.etag,
        parts: uploaded.parts,
        duration: started.elapsed(),
    })
}

/// After a failed upload: an object that appeared anyway (a Complete that went through but
/// whose answer was wrong) is removed, since it has no receipt and was never read back.
fn remove_object(s3: &S3, key: &str, e: &UploadError) {
    if matches!(e, UploadError::TooLarge { .. } | UploadError::Read(_)) {
        return;
    }
    if let Ok(Some(_)) = s3.client.head(key) {
        delete_quietly(s3, key);
    }
}

fn delete_quietly(s3: &S3, key: &str) {
    if let Err(e) = s3.client.delete(key) {
        log::warn!(
            "cannot delete {} after the failed copy: {e}; it has no receipt, so no command counts it as an archive",
            s3.client.url_of(key)
        );
    }
}
