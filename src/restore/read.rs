//! Reading the archive: its stream opened, decrypted, hashed and counted, and the first pass,
//! which reads it to its end for the manifest.
//!
//! The first pass writes nothing into the destination. It copies `.vouch/manifest.json` into
//! a spool file as it is read and hashes it and `.vouch/SHA256SUMS` (each read only up to a
//! cap, `manifest::copy_closing_file`), and keeps the SHA-256 and size of the ciphertext, which
//! must match the receipt when there is one. The manifest is then parsed one entry at a time
//! into the spool of a [`Listing`], which every later step reads in order; SHA256SUMS must be
//! exactly what the manifest's files make (same SHA-256, same length). Neither file is held in
//! memory. The second pass (`restore::stage`) opens the stream again the same way and must see
//! the same closing files and the same ciphertext.

use super::error::{damaged, TRUNCATED};
use super::path::show;
use super::progress::Meter;
use super::Options;
use super::RestoreError;
use crate::config::Compression;
use crate::pipeline::crypt::{self, Identity};
use crate::pipeline::decompress::{self, Decoder};
use crate::pipeline::io::{HashReader, BUFFER_SIZE};
use crate::pipeline::manifest::{
    self, Digest, Entry, EntryIter, Head, SpoolError, Spooled, Tail, MANIFEST_PATH, SUMS_PATH,
};
use crate::pipeline::relay::{self, Relay};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

/// Opens the archive's ciphertext from its start, once per pass.
pub type Opener<'a> = &'a dyn Fn() -> io::Result<Box<dyn Read + Send>>;

/// Bytes read from the archive so far, shared with the progress meter (the reading thread
/// counts, the restoring thread reads the count).
#[derive(Clone, Default)]
pub(super) struct Count(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Count {
    /// The bytes read so far.
    pub(super) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The archive's ciphertext, hashed and counted.
pub(super) type Source = HashReader<Counted<Box<dyn Read + Send>>>;

/// The tar stream inside the archive, with its extended headers capped, read from the relay
/// the decrypting thread fills.
pub(super) type Tar = tar::Archive<crate::pipeline::tarstream::HeaderCap<Decoder<Relay>>>;

/// The decrypted payload handed from the reading thread, in blocks of this size (at most
/// [`RELAY_BLOCKS`] queued: 1 MiB).
const RELAY_BLOCK: usize = 256 * 1024;

/// Blocks queued between the reading thread and the restoring one.
const RELAY_BLOCKS: usize = 4;

/// A reader that counts what passes through it.
pub(super) struct Counted<R> {
    inner: R,
    count: Count,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.add(n as u64);
        Ok(n)
    }
}

/// An archive's manifest as a restore holds it: the head and tail parsed, the entries in a
/// spool file, read back one at a time in the archive's order.
pub struct Listing {
    /// What the manifest says before its entries.
    pub head: Head,
    /// What it says after them (skipped files, dumps).
    pub tail: Tail,
    entries: Spooled,
    spool: PathBuf,
}

impl Listing {
    /// Parses the manifest text `raw` one entry at a time into a spool in `spool`.
    pub(super) fn read(raw: impl Read, spool: &Path) -> Result<Listing, RestoreError> {
        let (head, tail, entries) = manifest::spool_manifest(raw, spool).map_err(|e| match e {
            SpoolError::Json(e) if e.is_io() => spool_err(spool)(io::Error::other(e)),
            SpoolError::Json(e) => damaged(format!("{MANIFEST_PATH} is not a vouch manifest: {e}")),
            SpoolError::Spool(e) => spool_err(spool)(e),
        })?;
        Ok(Listing {
            head,
            tail,
            entries,
            spool: spool.to_owned(),
        })
    }

    /// The number of entries.
    pub fn count(&self) -> u64 {
        self.entries.count
    }

    /// The entries in the archive's order, read from the spool.
    pub fn entries(&self) -> Result<EntryIter<'_>, RestoreError> {
        self.entries.entries().map_err(|e| self.unreadable(e))
    }

    /// The first entry whose `path` is `path`.
    pub fn find(&self, path: &str) -> Result<Option<Entry>, RestoreError> {
        for e in self.entries()? {
            let e = e.map_err(|e| self.unreadable(e))?;
            if e.path == path {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// The failure to read the spool back.
    pub(super) fn unreadable(&self, error: io::Error) -> RestoreError {
        RestoreError::Io {
            path: self.spool.clone(),
            error,
        }
    }
}

/// The closing files of an archive and the hash of its ciphertext, from the first pass.
pub(super) struct Closing {
    /// `.vouch/manifest.json`'s digest.
    pub(super) manifest: Digest,
    /// `.vouch/SHA256SUMS`' digest.
    pub(super) sums: Digest,
    /// The SHA-256 of the ciphertext.
    pub(super) sha256: String,
    /// The size of the ciphertext.
    pub(super) size: u64,
}

/// Opens the archive with `open`, hashed and counted.
pub(super) fn counted(open: Opener<'_>) -> Result<(Source, Count), RestoreError> {
    let inner = open().map_err(|e| damaged(format!("cannot open the archive: {e}")))?;
    let count = Count::default();
    Ok((
        HashReader::new(Counted {
            inner,
            count: count.clone(),
        }),
        count,
    ))
}

/// Runs `body` on the tar stream of the ciphertext `hashed`, decrypted with `identity` and
/// decompressed as `compression` (which its first bytes must be). A thread of its own reads,
/// hashes and decrypts, handing the payload over through a relay, while this one decompresses
/// (with its workers) and runs `body`, which stays on the calling thread with everything it
/// borrows. A header that does not decrypt is the error returned, whatever `body` made of the
/// stream that then stopped. Threads start with the signal mask of the thread that starts
/// them, so during the second pass, which runs with SIGINT, SIGTERM and SIGHUP held back
/// (`signals::Deferred`), the reading thread and the decompressing workers hold them back too.
pub(super) fn with_tar<T>(
    hashed: &mut Source,
    identity: &Identity,
    compression: Compression,
    body: impl FnOnce(Tar) -> Result<T, RestoreError>,
) -> Result<T, RestoreError> {
    let (feed, payload) = relay::channel(RELAY_BLOCKS, RELAY_BLOCK);
    std::thread::scope(|s| {
        let decrypting = std::thread::Builder::new()
            .name("vouch-decrypt".into())
            .spawn_scoped(s, move || {
                let buffered = BufReader::with_capacity(BUFFER_SIZE, hashed);
                let mut plain = crypt::decrypt(identity, buffered)
                    .map_err(|e| damaged(format!("cannot decrypt: {e}")))?;
                feed.pump(&mut plain);
                Ok(())
            })
            .map_err(|e| damaged(format!("cannot start a thread to read the archive: {e}")))?;
        let tar = tar::Archive::new(crate::pipeline::tarstream::HeaderCap::new(
            decompress::open(payload, compression),
        ));
        let done = body(tar);
        let opened = decrypting
            .join()
            .unwrap_or_else(|_| Err(damaged("the thread reading the archive panicked")));
        opened.and(done)
    })
}

/// Reads what follows the tar stream to the end of the archive, so that the whole ciphertext
/// is decrypted and hashed; a stream that breaks off there is damaged.
pub(super) fn drain(tar: Tar) -> Result<(), RestoreError> {
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
) -> Result<(Closing, Listing), RestoreError> {
    let mut meter = Meter::new(opts.progress, "reading the manifest", total);
    let read = read_manifest(
        open,
        (identity, opts.compression),
        receipt,
        opts,
        &mut meter,
    );
    match &read {
        Ok((closing, _)) => meter.finish(closing.size),
        Err(_) => meter.done(),
    }
    read
}

/// Where the restore spools the manifest: `opts.spool`, or the system's temporary directory.
fn spool_dir(opts: &Options) -> PathBuf {
    if opts.spool.as_os_str().is_empty() {
        std::env::temp_dir()
    } else {
        opts.spool.clone()
    }
}

/// Reads the archive to its end, copying its manifest into a spool file in `spool` (returned
/// at its start) and keeping the digests of its closing files and of its ciphertext.
fn read_closing(
    open: Opener<'_>,
    (identity, compression): (&Identity, Compression),
    spool: &Path,
    meter: &mut Meter,
) -> Result<(Closing, File), RestoreError> {
    let (mut hashed, count) = counted(open)?;
    let mut manifest = None;
    let mut sums = None;
    with_tar(&mut hashed, identity, compression, |mut tar| {
        let iter = tar
            .entries()
            .map_err(|e| damaged(format!("not a tar stream: {e}")))?;
        for found in iter {
            let mut found =
                found.map_err(|e| damaged(format!("{TRUNCATED}: corrupt tar entry: {e}")))?;
            let path = found.path_bytes().into_owned();
            let cut = |e| damaged(format!("{}: cannot read it; {TRUNCATED}: {e}", show(&path)));
            let consumed = || count.get();
            if path == MANIFEST_PATH.as_bytes() {
                let mut file = manifest::spool_file(spool).map_err(spool_err(spool))?;
                let mut out = io::BufWriter::new(&mut file);
                let digest =
                    manifest::copy_closing_file(&mut found, MANIFEST_PATH, &consumed, &mut out);
                drop(out);
                manifest = Some((digest.map_err(cut)?, file));
            } else if path == SUMS_PATH.as_bytes() {
                let digest =
                    manifest::copy_closing_file(&mut found, SUMS_PATH, &consumed, &mut io::sink());
                sums = Some(digest.map_err(cut)?);
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
        drain(tar)
    })?;
    let (sha256, size) = hashed
        .finish()
        .map_err(|e| damaged(format!("reading the archive failed: {e}")))?;
    let (manifest, mut file) =
        manifest.ok_or_else(|| damaged(format!("{MANIFEST_PATH} is missing")))?;
    file.seek(io::SeekFrom::Start(0))
        .map_err(spool_err(spool))?;
    let closing = Closing {
        manifest,
        sums: sums.ok_or_else(|| damaged(format!("{SUMS_PATH} is missing")))?,
        sha256,
        size,
    };
    Ok((closing, file))
}

/// A failure to write or read the spool in `dir`.
fn spool_err(dir: &Path) -> impl Fn(io::Error) -> RestoreError + '_ {
    move |error| RestoreError::Io {
        path: dir.to_owned(),
        error,
    }
}

/// Reads the manifest of an archive (first pass only) and checks it against the receipt's size
/// and SHA-256 when given; its entries are spooled in `opts.spool`, one at a time.
fn read_manifest(
    open: Opener<'_>,
    key: (&Identity, Compression),
    receipt: Option<(&str, u64)>,
    opts: &Options,
    meter: &mut Meter,
) -> Result<(Closing, Listing), RestoreError> {
    let spool = spool_dir(opts);
    let (closing, raw) = read_closing(open, key, &spool, meter)?;
    if let Some((sha, size)) = receipt {
        if sha != closing.sha256 || size != closing.size {
            return Err(damaged(format!(
                "the archive ({} bytes, SHA-256 {}) does not match its receipt ({size} bytes, SHA-256 {sha})",
                closing.size, closing.sha256
            )));
        }
    }
    let mut listing = Listing::read(raw, &spool)?;
    let sums = listing
        .entries
        .sums_reader()
        .and_then(|mut r| Digest::of(&mut r))
        .map_err(spool_err(&spool))?;
    if sums != closing.sums {
        return Err(damaged(format!(
            "{SUMS_PATH} disagrees with {MANIFEST_PATH}"
        )));
    }
    Ok((closing, listing))
}
