//! Reading the archive: its stream opened, decrypted, hashed and counted, and the first pass,
//! which reads it to its end for the manifest.
//!
//! The first pass writes nothing. It keeps the two closing files, `.vouch/manifest.json` and
//! `.vouch/SHA256SUMS` (each read only up to a cap, `manifest::read_closing_file`), and the
//! SHA-256 and size of the ciphertext, which must match the receipt when there is one. The
//! manifest must parse, and SHA256SUMS must be exactly what the manifest's files make. The
//! second pass (`restore::stage`) opens the stream again the same way and must see the same
//! closing files and the same ciphertext.

use super::error::{damaged, TRUNCATED};
use super::path::show;
use super::progress::Meter;
use super::Options;
use super::RestoreError;
use crate::config::Compression;
use crate::pipeline::crypt::{self, Identity};
use crate::pipeline::decompress::{self, Decoder};
use crate::pipeline::io::{HashReader, BUFFER_SIZE};
use crate::pipeline::manifest::{sums_line, Manifest, MANIFEST_PATH, SUMS_PATH};
use std::io::{self, BufReader, Read};

/// Opens the archive's ciphertext from its start, once per pass.
pub type Opener<'a> = &'a dyn Fn() -> io::Result<Box<dyn Read>>;

/// Bytes read from the archive so far, shared with the progress meter.
pub(super) type Count = std::rc::Rc<std::cell::Cell<u64>>;

/// The archive's ciphertext, hashed and counted.
pub(super) type Source = HashReader<Counted<Box<dyn Read>>>;

/// The tar stream inside the archive, with its extended headers capped.
pub(super) type Tar<'a> = tar::Archive<
    crate::pipeline::tarstream::HeaderCap<
        Decoder<age::stream::StreamReader<BufReader<&'a mut Source>>>,
    >,
>;

/// A reader that counts what passes through it.
pub(super) struct Counted<R> {
    inner: R,
    count: Count,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The closing files of an archive and the hash of its ciphertext, from the first pass.
pub(super) struct Closing {
    /// `.vouch/manifest.json`, as read.
    pub(super) manifest: Vec<u8>,
    /// `.vouch/SHA256SUMS`, as read.
    pub(super) sums: Vec<u8>,
    /// The SHA-256 of the ciphertext.
    pub(super) sha256: String,
    /// The size of the ciphertext.
    pub(super) size: u64,
}

/// Opens the archive with `open`, hashed and counted.
pub(super) fn counted(open: Opener<'_>) -> Result<(Source, Count), RestoreError> {
    let inner = open().map_err(|e| damaged(format!("cannot open the archive: {e}")))?;
    let count = std::rc::Rc::new(std::cell::Cell::new(0));
    Ok((
        HashReader::new(Counted {
            inner,
            count: count.clone(),
        }),
        count,
    ))
}

/// The tar stream of the ciphertext `hashed`, decrypted with `identity` and decompressed as
/// `compression` (which its first bytes must be).
pub(super) fn open_tar<'a>(
    hashed: &'a mut Source,
    identity: &Identity,
    compression: Compression,
) -> Result<Tar<'a>, RestoreError> {
    let buffered = BufReader::with_capacity(BUFFER_SIZE, hashed);
    let plain =
        crypt::decrypt(identity, buffered).map_err(|e| damaged(format!("cannot decrypt: {e}")))?;
    Ok(tar::Archive::new(
        crate::pipeline::tarstream::HeaderCap::new(decompress::open(plain, compression)),
    ))
}

/// Reads what follows the tar stream to the end of the archive, so that the whole ciphertext
/// is decrypted and hashed; a stream that breaks off there is damaged.
pub(super) fn drain(tar: Tar<'_>) -> Result<(), RestoreError> {
    let mut rest = tar.into_inner().into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map(|_| ())
        .map_err(|e| damaged(format!("{TRUNCATED} at its end: {e}")))
}

/// The first pass, with progress shown as "reading the manifest" against `total` bytes (when
/// `opts.progress`): the closing files and the manifest, checked against the receipt when given.
pub(super) fn first_pass(
    open: Opener<'_>,
    identity: &Identity,
    receipt: Option<(&str, u64)>,
    total: u64,
    opts: &Options,
) -> Result<(Closing, Manifest), RestoreError> {
    let mut meter = Meter::new(opts.progress, "reading the manifest", total);
    let read = read_manifest(open, (identity, opts.compression), receipt, &mut meter);
    match &read {
        Ok((closing, _)) => meter.finish(closing.size),
        Err(_) => meter.done(),
    }
    read
}

/// Reads the archive to its end, keeping its closing files and the hash of its ciphertext.
fn read_closing(
    open: Opener<'_>,
    (identity, compression): (&Identity, Compression),
    meter: &mut Meter,
) -> Result<Closing, RestoreError> {
    let (mut hashed, count) = counted(open)?;
    let mut manifest = None;
    let mut sums = None;
    {
        let mut tar = open_tar(&mut hashed, identity, compression)?;
        let iter = tar
            .entries()
            .map_err(|e| damaged(format!("not a tar stream: {e}")))?;
        for found in iter {
            let mut found =
                found.map_err(|e| damaged(format!("{TRUNCATED}: corrupt tar entry: {e}")))?;
            let path = found.path_bytes().into_owned();
            if path == MANIFEST_PATH.as_bytes() || path == SUMS_PATH.as_bytes() {
                let data =
                    crate::pipeline::manifest::read_closing_file(&mut found, &show(&path), &|| {
                        count.get()
                    })
                    .map_err(|e| {
                        damaged(format!("{}: cannot read it; {TRUNCATED}: {e}", show(&path)))
                    })?;
                if path == MANIFEST_PATH.as_bytes() {
                    manifest = Some(data);
                } else {
                    sums = Some(data);
                }
            } else {
                io::copy(&mut found, &mut io::sink()).map_err(|e| {
                    damaged(format!(
                        "{}: cannot read its data; {TRUNCATED}: {e}",
                        show(&path)
                    ))
                })?;
            }
            meter.update(count.get());
        }
        drain(tar)?;
    }
    let (sha256, size) = hashed
        .finish()
        .map_err(|e| damaged(format!("reading the archive failed: {e}")))?;
    Ok(Closing {
        manifest: manifest.ok_or_else(|| damaged(format!("{MANIFEST_PATH} is missing")))?,
        sums: sums.ok_or_else(|| damaged(format!("{SUMS_PATH} is missing")))?,
        sha256,
        size,
    })
}

/// Reads the manifest of an archive (first pass only) and checks it against the receipt's size
/// and SHA-256 when given.
fn read_manifest(
    open: Opener<'_>,
    key: (&Identity, Compression),
    receipt: Option<(&str, u64)>,
    meter: &mut Meter,
) -> Result<(Closing, Manifest), RestoreError> {
    let closing = read_closing(open, key, meter)?;
    if let Some((sha, size)) = receipt {
        if sha != closing.sha256 || size != closing.size {
            return Err(damaged(format!(
                "the archive ({} bytes, SHA-256 {}) does not match its receipt ({size} bytes, SHA-256 {sha})",
                closing.size, closing.sha256
            )));
        }
    }
    let manifest: Manifest = serde_json::from_slice(&closing.manifest)
        .map_err(|e| damaged(format!("{MANIFEST_PATH} is not a vouch manifest: {e}")))?;
    let mut sums = Vec::new();
    for e in &manifest.entries {
        if let Some(sha) = &e.sha256 {
            sums.extend_from_slice(&sums_line(sha, &e.path_bytes()));
        }
    }
    if sums != closing.sums {
        return Err(damaged(format!(
            "{SUMS_PATH} disagrees with {MANIFEST_PATH}"
        )));
    }
    Ok((closing, manifest))
}
