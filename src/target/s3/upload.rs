//! Putting one archive into a bucket: a single `PutObject` when it fits in one part, else a
//! multipart upload of equal parts, each held in memory once (so memory stays at one part
//! however large the archive), sent with its MD5 and signed SHA-256, and retried on its own.
//!
//! The upload is believed only when every part's ETag was its MD5, the Complete answer carried
//! no `<Error>`, its ETag is the MD5 of the parts' MD5s followed by `-N` (where the server gives
//! one of that shape), and a `HEAD` of the key reports the size that was sent. The caller
//! records the upload id ([`Progress::started`]) before any part goes, so that whatever a
//! crash leaves can be aborted by the next run.

use super::client::{hex, Client, S3Error, Stored};
use base64::Engine;
use md5::{Digest, Md5};
use sha2::Sha256;
use std::io::Read;
use std::time::Duration;

/// The smallest part S3 takes (every part but the last).
pub const MIN_PART: u64 = 5 << 20;
/// The largest part S3 takes.
pub const MAX_PART: u64 = 5 << 30;
/// The largest object S3 stores (AWS's limit; most compatible stores share it).
pub const MAX_OBJECT: u64 = 5 << 40;
/// The most parts one upload may have.
pub const MAX_PARTS: u64 = 10_000;
/// Tries per part (and for a single `PutObject`).
const TRIES: u32 = 3;

/// The part size for an archive of `size` bytes: `preferred`, grown (in MiB steps) until the
/// archive fits in [`MAX_PARTS`] parts; `None` when even [`MAX_PART`] is too small.
pub fn part_size(size: u64, preferred: u64) -> Option<u64> {
    let preferred = preferred.clamp(MIN_PART, MAX_PART);
    let needed = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    let part = preferred.max(needed);
    (part <= MAX_PART).then_some(part)
}

/// What the caller learns while an upload runs.
pub trait Progress {
    /// A multipart upload was created: record `upload_id` before any part is sent.
    fn started(&mut self, upload_id: &str);
    /// `sent` of the archive's bytes are on the server.
    fn sent(&mut self, sent: u64);
}

/// A finished upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The object's ETag.
    pub etag: String,
    /// How many parts (1 for a single `PutObject`).
    pub parts: u32,
    /// The part size used.
    pub part_size: u64,
    /// The multipart upload id, if there was one (to abort on a later failure).
    pub upload_id: Option<String>,
    /// The version the upload created, on a versioned bucket (from its answer, confirmed by
    /// the `HEAD`).
    pub version_id: Option<String>,
    /// Whether every request carried `x-amz-checksum-sha256`.
    pub checksum_sha256: bool,
}

/// The `x-amz-checksum-sha256` of `body`: its SHA-256, base64.
pub fn checksum_sha256(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Reading the local archive failed.
    #[error("reading the archive to upload: {0}")]
    Read(std::io::Error),
    /// The server refused or garbled a request.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The object on the server is not what was sent.
    #[error("{0}")]
    Mismatch(String),
    /// The archive is too large for one object at any part size.
    #[error("{size} bytes do not fit in {MAX_PARTS} parts of at most 5 GiB")]
    TooLarge {
        /// The archive's size.
        size: u64,
    },
}

/// Uploads the `size` bytes of `data` to `key`, in parts of about `preferred` bytes.
pub fn upload(
    client: &Client,
    key: &str,
    data: &mut dyn Read,
    size: u64,
    preferred: u64,
    progress: &mut dyn Progress,
) -> Result<Uploaded, UploadError> {
    upload_with(client, key, data, size, preferred, false, progress)
}

/// [`upload`]; with `sha256`, every request also carries `x-amz-checksum-sha256` (the multipart
/// upload is created with `x-amz-checksum-algorithm: SHA256`), for a server the preflight saw
/// take it.
pub fn upload_with(
    client: &Client,
    key: &str,
    data: &mut dyn Read,
    size: u64,
    preferred: u64,
    sha256: bool,
    progress: &mut dyn Progress,
) -> Result<Uploaded, UploadError> {
    let part = part_size(size, preferred).ok_or(UploadError::TooLarge { size })?;
    let mut uploaded = if size <= part {
        let body = read_part(data, size)?;
        let sum = sha256.then(|| checksum_sha256(&body));
        let headers: Vec<(&str, &str)> = sum
            .iter()
            .map(|s| ("x-amz-checksum-sha256", s.as_str()))
            .collect();
        let stored = retry(|| client.put_object(key, &body, &headers))?;
        progress.sent(size);
        Uploaded {
            etag: stored.etag,
            parts: 1,
            part_size: part,
            upload_id: None,
            version_id: stored.version_id,
            checksum_sha256: sha256,
        }
    } else {
        multipart(client, key, data, size, part, sha256, progress)?
    };
    uploaded.version_id = check_head(client, key, size, &uploaded)?;
    Ok(uploaded)
}

/// The multipart path: create, the parts in order, complete; aborted on any failure.
fn multipart(
    client: &Client,
    key: &str,
    data: &mut dyn Read,
    size: u64,
    part: u64,
    sha256: bool,
    progress: &mut dyn Progress,
) -> Result<Uploaded, UploadError> {
    let algorithm: &[(&str, &str)] = if sha256 {
        &[("x-amz-checksum-algorithm", "SHA256")]
    } else {
        &[]
    };
    let upload_id = client.create_multipart_with(key, algorithm)?;
    progress.started(&upload_id);
    let shape = Shape { size, part, sha256 };
    let result = parts(client, key, &upload_id, data, shape, progress);
    match result {
        Ok(uploaded) => Ok(uploaded),
        Err(e) => {
            if let Err(abort) = client.abort_multipart(key, &upload_id) {
                log::warn!(
                    "could not abort the failed upload of {key}: {abort}; the next run aborts it"
                );
            }
            Err(e)
        }
    }
}

/// The archive's size, the part size, and whether parts carry their SHA-256.
#[derive(Clone, Copy)]
struct Shape {
    size: u64,
    part: u64,
    sha256: bool,
}

fn parts(
    client: &Client,
    key: &str,
    upload_id: &str,
    data: &mut dyn Read,
    shape: Shape,
    progress: &mut dyn Progress,
) -> Result<Uploaded, UploadError> {
    let Shape { size, part, sha256 } = shape;
    let count = size.div_ceil(part);
    let mut etags = Vec::new();
    let mut sums = Vec::new();
    let mut md5s = Md5::new();
    let mut sent = 0u64;
    for n in 1..=count {
        let len = part.min(size - sent);
        let body = read_part(data, len)?;
        md5s.update(Md5::digest(&body));
        let number = u32::try_from(n).unwrap_or(u32::MAX);
        let sum = sha256.then(|| checksum_sha256(&body));
        let headers: Vec<(&str, &str)> = sum
            .iter()
            .map(|s| ("x-amz-checksum-sha256", s.as_str()))
            .collect();
        etags.push(retry(|| {
            client.upload_part_with(key, upload_id, number, &body, &headers)
        })?);
        sums.extend(sum);
        sent += len;
        progress.sent(sent);
    }
    let Stored { etag, version_id } = client.complete_multipart_with(
        key,
        upload_id,
        &etags,
        sha256.then_some(sums.as_slice()),
    )?;
    let expected = format!("{}-{count}", hex(&md5s.finalize()));
    if etag.contains('-') && etag != expected {
        return Err(UploadError::Mismatch(format!(
            "{}: the server's ETag {etag} is not {expected}, the digest of the parts sent",
            client.url_of(key)
        )));
    }
    Ok(Uploaded {
        etag,
        parts: u32::try_from(count).unwrap_or(u32::MAX),
        part_size: part,
        upload_id: Some(upload_id.to_owned()),
        version_id,
        checksum_sha256: sha256,
    })
}

/// Reads exactly `len` bytes of the archive.
fn read_part(data: &mut dyn Read, len: u64) -> Result<Vec<u8>, UploadError> {
    let mut body = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    data.take(len)
        .read_to_end(&mut body)
        .map_err(UploadError::Read)?;
    if body.len() as u64 != len {
        return Err(UploadError::Read(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the archive ended {} bytes early", len - body.len() as u64),
        )));
    }
    Ok(body)
}

/// Runs `f` up to [`TRIES`] times while it fails without a definite answer from the server
/// (no answer at all, a 5xx, or a reply that does not parse), with a pause that doubles.
fn retry<T>(mut f: impl FnMut() -> Result<T, S3Error>) -> Result<T, S3Error> {
    let mut pause = Duration::from_millis(500);
    let mut tries = 1;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if tries < TRIES && transient(&e) => {
                log::warn!("{e}; trying again in {} ms", pause.as_millis());
                std::thread::sleep(pause);
                pause *= 2;
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether trying again may help.
fn transient(e: &S3Error) -> bool {
    match e {
        S3Error::Transport { .. } | S3Error::Bad { .. } => true,
        S3Error::Status { status, code, .. } => {
            *status >= 500 || matches!(code.as_deref(), Some("RequestTimeout" | "SlowDown"))
        }
    }
}

/// The object is there with the size that was sent, the ETag its upload answered and (on a
/// versioned bucket) the version it created; returns that version.
fn check_head(
    client: &Client,
    key: &str,
    size: u64,
    uploaded: &Uploaded,
) -> Result<Option<String>, UploadError> {
    let url = client.url_of(key);
    match client.head(key)? {
        Some(h) if h.size != size => Err(UploadError::Mismatch(format!(
            "{url}: the server holds {} bytes, {size} were sent",
            h.size
        ))),
        Some(h) if h.etag != uploaded.etag => Err(UploadError::Mismatch(format!(
            "{url}: the server's ETag is {}, its upload answered {}",
            h.etag, uploaded.etag
        ))),
        Some(h) => match (&uploaded.version_id, h.version_id) {
            (Some(ours), Some(theirs)) if *ours != theirs => Err(UploadError::Mismatch(format!(
                "{url}: the newest version is {theirs}, the upload created {ours}"
            ))),
            (ours, theirs) => Ok(ours.clone().or(theirs)),
        },
        None => Err(UploadError::Mismatch(format!(
            "{}: not there after its upload completed",
            client.url_of(key)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_at_least_5_mib_and_never_more_than_10000() {
        assert_eq!(part_size(1, 1), Some(MIN_PART));
        assert_eq!(part_size(100 << 20, 16 << 20), Some(16 << 20));
        // 1 TiB in 16 MiB parts would be 65536 parts: the part grows to 105 MiB.
        let p = part_size(1 << 40, 16 << 20).unwrap();
        assert!((1u64 << 40).div_ceil(p) <= MAX_PARTS, "{p}");
        assert_eq!(p % (1 << 20), 0);
        assert_eq!(
            part_size(60 << 40, 16 << 20),
            None,
            "60 TiB needs parts over 5 GiB"
        );
    }
}
