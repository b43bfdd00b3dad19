//! Reading an archive back and checking it against its manifest.
//!
//! The file is read from the target after its cached pages were dropped, so what is checked is
//! what the storage returns. The read-back is the full reverse pipeline: SHA-256 of the
//! ciphertext (against the hash computed while writing), age decryption (which authenticates
//! every 64 KiB chunk and the end of the stream), decompression (gzip or zstd, as the archive's
//! name says, and as its first bytes must agree: [`crate::pipeline::decompress`]), and tar
//! parsing, with every
//! entry compared with the manifest in order: path, type, mode, size, link target, and the
//! SHA-256 of its data. The archive's own `.vouch/manifest.json` and `.vouch/SHA256SUMS` must be
//! the last entries and byte-identical to what was written. Reading and decrypting,
//! decompressing, and checking entries run as three stages on threads of their own, joined by
//! bounded relays (`pipeline::relay`), so a read-back uses every core.
//!
//! Without an identity, only the ciphertext can be checked (hash, length and age header); that
//! mode must be opted into and is reported as a warning on every run.
//!
//! A failure while decrypting, decompressing or parsing names where it happened ([`Position`]):
//! the tar entry being read (or that the stream broke before the first entry, between two
//! entries, or after the last one) and about where in the encrypted file, to the start of the
//! 64 KiB age chunk being read. age authenticates chunk by chunk, so a flipped bit or a cut
//! is found in the chunk that holds it, while the entry whose data lies there is being read.

use crate::check::found::{check_entry, Found, FoundSpool, Order, Place};
use crate::config::Compression;
use crate::pipeline::crypt::{self, Identity};
use crate::pipeline::decompress;
use crate::pipeline::io::{HashReader, BUFFER_SIZE};
use crate::pipeline::manifest::{
    self, Digest, Entry, EntryIter, SpoolError, Spooled, MANIFEST_PATH, SUMS_PATH,
};
use crate::pipeline::relay::{self, Feeder, Relay};
use sha2::{Digest as _, Sha256};
use std::fmt::Display;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What the archive was when it was written.
pub struct Expected<'a> {
    /// The manifest spool, in archive order.
    pub manifest: &'a mut Spooled,
    /// SHA-256 of `.vouch/manifest.json`.
    pub manifest_sha256: &'a str,
    /// SHA-256 of `.vouch/SHA256SUMS`.
    pub sums_sha256: &'a str,
    /// SHA-256 of the whole encrypted file.
    pub archive_sha256: &'a str,
    /// Size of the encrypted file.
    pub archive_size: u64,
    /// The compression the archive's name says.
    pub compression: Compression,
}

/// The first difference found. The message names the entry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Mismatch(pub String);

fn mismatch(msg: impl Into<String>) -> Mismatch {
    Mismatch(msg.into())
}

/// How much of the archive was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Decrypted, decompressed, every entry hashed.
    Full,
    /// Only the ciphertext's hash, length and header.
    CiphertextOnly,
}

impl Level {
    /// The receipt's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Full => "full",
            Level::CiphertextOnly => "ciphertext-only",
        }
    }
}

/// Checks the ciphertext of `file`: length, SHA-256 and a well-formed age header.
pub fn check_ciphertext(file: impl Read, expected: &Expected<'_>) -> Result<(), Mismatch> {
    let mut hashed = HashReader::new(file);
    {
        let mut buffered = BufReader::with_capacity(BUFFER_SIZE, &mut hashed);
        crypt::check_header(&mut buffered)
            .map_err(|e| mismatch(format!("the age header does not parse: {e}")))?;
        io::copy(&mut buffered, &mut io::sink())
            .map_err(|e| mismatch(format!("reading the archive failed: {e}")))?;
    }
    check_totals(hashed, expected)
}

fn check_totals(reader: HashReader<impl Read>, expected: &Expected<'_>) -> Result<(), Mismatch> {
    let (sha, size) = reader
        .finish()
        .map_err(|e| mismatch(format!("reading the archive failed: {e}")))?;
    if size != expected.archive_size {
        return Err(mismatch(format!(
            "the archive is {size} bytes, {} were written",
            expected.archive_size
        )));
    }
    if sha != expected.archive_sha256 {
        return Err(mismatch(format!(
            "the archive's SHA-256 is {sha}, {} was written",
            expected.archive_sha256
        )));
    }
    Ok(())
}

/// The size of one encrypted age payload chunk: 64 KiB of plaintext and a 16-byte tag.
pub const AGE_CHUNK: u64 = 64 * 1024 + 16;

/// What a read was doing when it failed, for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Reading the header of the next entry (or the padding after the previous one).
    Between,
    /// Reading the data of the entry last entered.
    Data,
    /// Past the end of the tar stream: gzip's trailer and age's last chunk.
    End,
}

/// Shared by the thread that decrypts (which counts) and the one that checks entries (which
/// says where it is), so kept in atomics and mutexes.
#[derive(Debug)]
struct PositionState {
    consumed: AtomicU64,
    /// Where the payload starts; `NO_PAYLOAD` until the age header is read.
    payload_start: AtomicU64,
    entry: Mutex<Option<String>>,
    phase: Mutex<Phase>,
}

/// `payload_start` before the age header was read.
const NO_PAYLOAD: u64 = u64::MAX;

/// A lock whose holder panicked is still good for a message.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a read through an archive is: the ciphertext bytes age has taken in so far and the tar
/// entry being read. Clones share one state, so the reader stack counts and the loop over the
/// entries says which entry it is in; a failure anywhere in between is then reported with
/// [`Position::damaged`], naming the entry and the approximate offset in the encrypted file.
#[derive(Debug, Clone)]
pub struct Position(Arc<PositionState>);

impl Default for Position {
    fn default() -> Self {
        Position(Arc::new(PositionState {
            consumed: AtomicU64::new(0),
            payload_start: AtomicU64::new(NO_PAYLOAD),
            entry: Mutex::new(None),
            phase: Mutex::new(Phase::Between),
        }))
    }
}

impl Position {
    /// A position at the start of an archive.
    pub fn new() -> Position {
        Position::default()
    }

    /// Wraps the buffered ciphertext reader that age decrypts from, counting what age takes.
    pub fn count<R: BufRead>(&self, inner: R) -> Counting<R> {
        Counting {
            inner,
            position: self.clone(),
        }
    }

    /// Marks the end of the age header: what follows is the chunked payload.
    pub fn header_done(&self) {
        let consumed = self.0.consumed.load(Ordering::Relaxed);
        self.0.payload_start.store(consumed, Ordering::Relaxed);
    }

    /// Entering the data of the entry with this path.
    pub fn enter(&self, path: &[u8]) {
        *lock(&self.0.entry) = Some(String::from_utf8_lossy(path).into_owned());
        *lock(&self.0.phase) = Phase::Data;
    }

    /// The data of the current entry has been read; next comes another header.
    pub fn leave(&self) {
        *lock(&self.0.phase) = Phase::Between;
    }

    /// The tar stream has ended; what is read now is its trailer.
    pub fn end(&self) {
        *lock(&self.0.phase) = Phase::End;
    }

    /// The start of the age chunk holding the last ciphertext byte read (0 within the header).
    pub fn offset(&self) -> u64 {
        let consumed = self.0.consumed.load(Ordering::Relaxed);
        match self.0.payload_start.load(Ordering::Relaxed) {
            NO_PAYLOAD => 0,
            start if consumed > start => start + (consumed - start - 1) / AGE_CHUNK * AGE_CHUNK,
            start => start,
        }
    }

    /// The mismatch for a read that failed here, naming the entry being read (or that the
    /// stream broke before the first entry, after an entry, or after the last one) and the
    /// approximate byte offset in the encrypted file:
    /// `X: cannot read its data: ERROR (near byte N of the archive)`,
    /// `the archive is damaged after X: ERROR (near byte N of the archive)`,
    /// `cannot decrypt: ERROR (in the age header, before the first entry)`.
    pub fn damaged(&self, what: &str, error: impl Display) -> Mismatch {
        // One line: some errors (age's "unknown format") come with a second one.
        let error = error
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if self.0.payload_start.load(Ordering::Relaxed) == NO_PAYLOAD {
            return mismatch(format!(
                "{what}: {error} (in the age header, before the first entry)"
            ));
        }
        let near = format!("near byte {} of the archive", self.offset());
        let entry = lock(&self.0.entry).clone();
        let phase = lock(&self.0.phase).clone();
        mismatch(match (&phase, entry.as_deref()) {
            (Phase::Data, Some(e)) => format!("{e}: {what}: {error} ({near})"),
            (Phase::End, Some(e)) => {
                format!("{what} after the last entry ({e}): {error} ({near})")
            }
            (Phase::End, None) => format!("{what} after the last entry: {error} ({near})"),
            (_, Some(e)) => format!("{what} after {e}: {error} ({near})"),
            (_, None) => format!("{what} before the first entry: {error} ({near})"),
        })
    }
}

/// A buffered reader that counts the bytes taken from it into a [`Position`].
pub struct Counting<R> {
    inner: R,
    position: Position,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let c = &self.position.0.consumed;
        c.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        let c = &self.position.0.consumed;
        c.fetch_add(amt as u64, Ordering::Relaxed);
    }
}

/// The read-back runs in three stages, each on a thread of its own, handing blocks of this size
/// along (at most [`RELAY_BLOCKS`] queued per hand-off, so about 3 MiB in all): reading,
/// hashing and decrypting the ciphertext; decompressing; parsing the tar and hashing every
/// entry. No stage needs more than about half of what one thread doing all three did, so on two
/// cores the read-back takes about half the time.
const RELAY_BLOCK: usize = 256 * 1024;

/// Blocks queued between two stages of the read-back.
const RELAY_BLOCKS: usize = 4;

/// The decrypted (still compressed) payload of an archive, read from the relay the reading
/// thread fills.
type Plain = age::stream::StreamReader<Counting<Relay>>;

fn open_plain(
    ciphertext: Relay,
    identity: &Identity,
    position: &Position,
) -> Result<Plain, Mismatch> {
    let counted = position.count(ciphertext);
    let plain =
        crypt::decrypt(identity, counted).map_err(|e| position.damaged("cannot decrypt", e))?;
    position.header_done();
    Ok(plain)
}

/// The first stage after reading: the ciphertext in, the decrypted payload out. A header that
/// does not open is returned, and the payload relay dropped, which the next stage meets as a
/// stream that stopped.
fn decrypt_stage(
    ciphertext: Relay,
    payload: Feeder,
    identity: &Identity,
    position: &Position,
) -> Result<(), Mismatch> {
    let mut plain = open_plain(ciphertext, identity, position)?;
    payload.pump(&mut plain);
    Ok(())
}

/// The second stage: the decrypted payload in, the decompressed tar stream out. A payload
/// whose first bytes are not what `compression` writes fails its first read, which reaches the
/// checking stage as the error that ends its stream.
fn decompress_stage(payload: Relay, tar: Feeder, compression: Compression) {
    tar.pump(&mut decompress::open(payload, compression));
}

/// The plaintext tar stream, as the checking stage reads it.
type TarStream = tar::Archive<crate::pipeline::tarstream::HeaderCap<Relay>>;

/// Reads what follows the tar's end so that age authenticates the final chunk and gzip (zstd)
/// checks its trailer (its last frame's checksum).
fn drain(tar: TarStream, position: &Position) -> Result<(), Mismatch> {
    position.end();
    let mut rest = tar.into_inner().into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map(|_| ())
        .map_err(|e| position.damaged("the archive is damaged", e))
}

/// The next tar entry, with a failure to read its header located.
fn next_entry<'a, R: Read>(
    iter: &mut tar::Entries<'a, R>,
    position: &Position,
) -> Result<Option<tar::Entry<'a, R>>, Mismatch> {
    position.leave();
    match iter.next() {
        None => Ok(None),
        Some(Ok(e)) => {
            position.enter(&e.path_bytes());
            Ok(Some(e))
        }
        Some(Err(e)) => Err(position.damaged("the archive is damaged", e)),
    }
}

/// Fully verifies `file` against `expected`, decrypting with `identity`.
pub fn verify_full(
    file: impl Read,
    identity: &Identity,
    expected: &mut Expected<'_>,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<(), Mismatch> {
    let mut hashed = HashReader::new(file);
    let position = Position::new();
    let compression = expected.compression;
    let checking = &mut *expected;
    in_stages(&mut hashed, identity, compression, &position, |tar| {
        check_entries(tar, checking, &position, progress)
    })?;
    check_totals(hashed, expected)
}

/// Runs the stages of a read-back through `hashed`: this thread reads the archive (and hashes
/// it, in `hashed`), one thread decrypts, one decompresses (with its workers, see
/// [`crate::pipeline::members`]), and one runs `check` on the tar stream (which must read it to
/// its end, see [`drain`]). Returns what `check` returns, or the decrypting stage's failure to
/// open the archive, which comes first.
fn in_stages<R: Read, T: Send>(
    hashed: &mut HashReader<R>,
    identity: &Identity,
    compression: Compression,
    position: &Position,
    check: impl FnOnce(TarStream) -> Result<T, Mismatch> + Send,
) -> Result<T, Mismatch> {
    let (cipher_feed, ciphertext) = relay::channel(RELAY_BLOCKS, RELAY_BLOCK);
    let (payload_feed, payload) = relay::channel(RELAY_BLOCKS, RELAY_BLOCK);
    let (tar_feed, tar) = relay::channel(RELAY_BLOCKS, RELAY_BLOCK);
    std::thread::scope(|s| {
        // A stage that cannot start drops its end of the relay, which the next stage meets as
        // a stream that stopped before its end.
        let decrypting = std::thread::Builder::new()
            .name("vouch-decrypt".into())
            .spawn_scoped(s, move || {
                decrypt_stage(ciphertext, payload_feed, identity, position)
            })
            .map_err(|e| mismatch(format!("cannot start a thread to decrypt: {e}")))?;
        let _ = std::thread::Builder::new()
            .name("vouch-inflate".into())
            .spawn_scoped(s, move || decompress_stage(payload, tar_feed, compression));
        let tar = tar::Archive::new(crate::pipeline::tarstream::HeaderCap::new(tar));
        let checking = std::thread::Builder::new()
            .name("vouch-check".into())
            .spawn_scoped(s, move || check(tar))
            .map_err(|e| mismatch(format!("cannot start a thread to check entries: {e}")))?;
        cipher_feed.pump(hashed);
        let checked = checking
            .join()
            .unwrap_or_else(|_| Err(mismatch("the thread checking entries panicked")));
        let opened = decrypting
            .join()
            .unwrap_or_else(|_| Err(mismatch("the thread decrypting panicked")));
        opened.and(checked)
    })
}

/// The third stage: every entry of the tar stream checked against the manifest, in order, then
/// the stream read to its end.
fn check_entries(
    mut tar: TarStream,
    expected: &mut Expected<'_>,
    position: &Position,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<(), Mismatch> {
    {
        let mut entries = expected
            .manifest
            .entries()
            .map_err(|e| mismatch(format!("cannot read the manifest spool: {e}")))?;
        let mut order = Order::default();
        let mut buf = vec![0u8; BUFFER_SIZE];
        let mut done = 0u64;
        let mut iter = tar
            .entries()
            .map_err(|e| position.damaged("not a tar stream", e))?;
        while let Some(mut found) = next_entry(&mut iter, position)? {
            let path = found.path_bytes().into_owned();
            let place = order.place(&path).map_err(mismatch)?;
            let digest =
                hash_entry_with_progress(&mut found, &mut buf, &mut |n| progress(done + n))
                    .map_err(|e| position.damaged("cannot read its data", e))?;
            done += found.size();
            progress(done);
            match place {
                Place::Manifest if digest != expected.manifest_sha256 => {
                    return Err(mismatch(format!(
                        "{MANIFEST_PATH} differs from the one written"
                    )));
                }
                Place::Sums if digest != expected.sums_sha256 => {
                    return Err(mismatch(format!(
                        "{SUMS_PATH} differs from the one written"
                    )));
                }
                Place::Manifest | Place::Sums => {}
                Place::Entry => {
                    let want = next_wanted(&mut entries, &path)?;
                    check_entry(&want, &Found::of(&found, &path), Some(&digest))
                        .map_err(mismatch)?;
                }
            }
        }
        all_found(&mut entries)?;
        order.closed().map_err(mismatch)?;
    }
    drain(tar, position)
}

/// The manifest's next entry, which the archive's entry at `path` must match.
fn next_wanted(entries: &mut EntryIter<'_>, path: &[u8]) -> Result<Entry, Mismatch> {
    match entries.next() {
        Some(Ok(e)) => Ok(e),
        Some(Err(e)) => Err(mismatch(format!("manifest spool unreadable: {e}"))),
        None => Err(mismatch(format!(
            "{}: not in the manifest",
            String::from_utf8_lossy(path)
        ))),
    }
}

/// Fails on the first manifest entry left once every archived entry has been matched.
fn all_found(entries: &mut EntryIter<'_>) -> Result<(), Mismatch> {
    match entries.next() {
        None => Ok(()),
        Some(missing) => {
            let name = missing.map(|e| e.path).unwrap_or_default();
            Err(mismatch(format!(
                "{name}: in the manifest but not in the archive"
            )))
        }
    }
}

/// The SHA-256 of everything `r` yields, read through `buf`.
pub fn hash_entry(r: &mut impl Read, buf: &mut [u8]) -> io::Result<String> {
    hash_entry_with_progress(r, buf, &mut |_| {})
}

/// [`hash_entry`], calling `progress` with the bytes hashed so far after each read, so that a
/// huge entry moves progress (and systemd's start timeout) while it is read.
pub fn hash_entry_with_progress(
    r: &mut impl Read,
    buf: &mut [u8],
    progress: &mut dyn FnMut(u64),
) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut hashed = 0u64;
    loop {
        let n = r.read(buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        hashed += n as u64;
        progress(hashed);
    }
    Ok(crate::pipeline::io::hex(&h.finalize()))
}

/// What a standalone verification found.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Entries checked.
    pub entries: u64,
    /// Size of the encrypted archive.
    pub archive_size: u64,
    /// Its SHA-256.
    pub archive_sha256: String,
}

/// What one pass over an archive found: its `.vouch/` files (the manifest copied into a spool
/// file, both hashed, neither held in memory), every other entry recorded in a [`FoundSpool`],
/// and the ciphertext's digest.
struct Pass {
    manifest: std::fs::File,
    manifest_digest: Digest,
    sums_digest: Digest,
    found: FoundSpool,
    archive_sha256: String,
    archive_size: u64,
}

/// Reads the archive once through every stage, recording what each entry holds, and the
/// closing files, for [`check_pass`] to compare once the manifest is known. Damage is found
/// (and located) here, while the entry that holds it is read.
fn read_once(
    file: impl Read,
    identity: &Identity,
    compression: Compression,
    spool_dir: &Path,
) -> Result<Pass, Mismatch> {
    let mut hashed = HashReader::new(file);
    let position = Position::new();
    let spool_failed = |e| mismatch(format!("cannot spool what the archive holds: {e}"));
    let mut found = FoundSpool::create(spool_dir).map_err(spool_failed)?;
    let spool = &mut found;
    let (manifest, sums) = in_stages(&mut hashed, identity, compression, &position, |mut tar| {
        let mut manifest = None;
        let mut sums = None;
        let mut order = Order::default();
        let mut buf = vec![0u8; BUFFER_SIZE];
        let mut iter = tar
            .entries()
            .map_err(|e| position.damaged("not a tar stream", e))?;
        while let Some(mut found) = next_entry(&mut iter, &position)? {
            let path = found.path_bytes().into_owned();
            let unreadable = |e| position.damaged("cannot read its data", e);
            let consumed = || position.offset();
            match order.place(&path).map_err(mismatch)? {
                Place::Manifest => {
                    let mut spool = manifest::spool_file(spool_dir)
                        .map_err(|e| mismatch(format!("cannot spool the manifest: {e}")))?;
                    let mut out = io::BufWriter::new(&mut spool);
                    let digest =
                        manifest::copy_closing_file(&mut found, MANIFEST_PATH, &consumed, &mut out)
                            .map_err(unreadable)?;
                    drop(out);
                    manifest = Some((spool, digest));
                }
                Place::Sums => {
                    let digest = manifest::copy_closing_file(
                        &mut found,
                        SUMS_PATH,
                        &consumed,
                        &mut io::sink(),
                    )
                    .map_err(unreadable)?;
                    sums = Some(digest);
                }
                Place::Entry => {
                    let digest = hash_entry(&mut found, &mut buf).map_err(unreadable)?;
                    spool
                        .push(&Found::of(&found, &path), &digest)
                        .map_err(spool_failed)?;
                }
            }
        }
        drain(tar, &position)?;
        order.closed().map_err(mismatch)?;
        Ok((manifest, sums))
    })?;
    let (archive_sha256, archive_size) = hashed
        .finish()
        .map_err(|e| mismatch(format!("reading the archive failed: {e}")))?;
    let missing = |name| mismatch(format!("{name} is missing"));
    let (manifest, manifest_digest) = manifest.ok_or_else(|| missing(MANIFEST_PATH))?;
    Ok(Pass {
        manifest,
        manifest_digest,
        sums_digest: sums.ok_or_else(|| missing(SUMS_PATH))?,
        found,
        archive_sha256,
        archive_size,
    })
}

/// Checks every entry the pass recorded against the manifest, in order, as
/// [`check_entries`] does while `vouch run` reads its archive back.
fn check_pass(found: FoundSpool, spooled: &Spooled) -> Result<(), Mismatch> {
    let unreadable = |e| mismatch(format!("cannot read the spool: {e}"));
    let mut entries = spooled
        .entries()
        .map_err(|e| mismatch(format!("cannot read the manifest spool: {e}")))?;
    for record in found.records().map_err(unreadable)? {
        let record = record.map_err(unreadable)?;
        let found = record.found();
        let want = next_wanted(&mut entries, found.path)?;
        check_entry(&want, &found, Some(record.digest())).map_err(mismatch)?;
    }
    all_found(&mut entries)
}

/// Reads the manifest text `raw` entry by entry into a new spool in `spool_dir` and checks it
/// against what the archive holds: the checksum list the spooled entries make must have
/// `sums`' digest, and the manifest rebuilt from them `manifest`'s (byte for byte the same
/// text, compared by SHA-256 and length). Neither text is held in memory.
fn respool(
    raw: impl Read,
    manifest: &Digest,
    sums: &Digest,
    spool_dir: &Path,
) -> Result<Spooled, Mismatch> {
    let (_, _, mut spooled) = manifest::spool_manifest(raw, spool_dir).map_err(|e| match e {
        SpoolError::Json(e) if e.is_io() => mismatch(format!("cannot read the spool: {e}")),
        SpoolError::Json(e) => mismatch(format!("{MANIFEST_PATH} is not a vouch manifest: {e}")),
        SpoolError::Spool(e) => mismatch(format!("cannot spool the manifest: {e}")),
    })?;
    let unreadable = |e| mismatch(format!("cannot read the spool: {e}"));
    // The checksum list must say what the manifest says.
    let rebuilt = spooled
        .sums_reader()
        .and_then(|mut r| Digest::of(&mut r))
        .map_err(unreadable)?;
    if &rebuilt != sums {
        return Err(mismatch(format!(
            "{SUMS_PATH} disagrees with {MANIFEST_PATH}"
        )));
    }
    // The manifest read back must be byte for byte the one in the archive: compare through
    // the same spool the entries are checked against.
    let rebuilt = spooled
        .manifest_reader()
        .and_then(|mut r| Digest::of(&mut r))
        .map_err(unreadable)?;
    if &rebuilt != manifest {
        return Err(mismatch(format!(
            "{MANIFEST_PATH} is not in the form vouch writes (edited, or from another version)"
        )));
    }
    Ok(spooled)
}

/// Verifies an archive on its own, in one pass: the archive is read through every stage once,
/// each entry recorded as it is found ([`read_once`]); its closing manifest and checksum list
/// are then checked against each other and against the archive ([`respool`]), and every
/// recorded entry against the manifest ([`check_pass`]), which is what `vouch run` checks right
/// after writing. `file` reads the archive (its parts in order) from the storage;
/// `compression` is what the archive's name says; `receipt` gives the size and SHA-256 the
/// archive must have, when there is one. The manifest and the records are kept in spool files
/// in `spool_dir`, so memory does not grow with the number of entries.
pub fn verify_archive(
    file: impl Read,
    identity: &Identity,
    compression: Compression,
    receipt: Option<(&str, u64)>,
    spool_dir: &Path,
) -> Result<Verified, Mismatch> {
    let mut pass = read_once(file, identity, compression, spool_dir)?;
    if let Some((sha, size)) = receipt {
        if sha != pass.archive_sha256 || size != pass.archive_size {
            return Err(mismatch(format!(
                "the archive ({} bytes, SHA-256 {}) does not match its receipt ({size} bytes, SHA-256 {sha})",
                pass.archive_size, pass.archive_sha256
            )));
        }
    }
    pass.manifest
        .seek(io::SeekFrom::Start(0))
        .map_err(|e| mismatch(format!("cannot read the spool: {e}")))?;
    let spooled = respool(
        &pass.manifest,
        &pass.manifest_digest,
        &pass.sums_digest,
        spool_dir,
    )?;
    drop(pass.manifest);
    check_pass(pass.found, &spooled)?;
    Ok(Verified {
        entries: spooled.count,
        archive_size: pass.archive_size,
        archive_sha256: pass.archive_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::manifest::EntryType;
    use std::io::Write;
    use std::str::FromStr;

    /// A key pair: the identity and its recipient.
    fn keys() -> (Identity, age::x25519::Recipient) {
        let (secret, recipient) = crypt::generate();
        let key = age::x25519::Identity::from_str(&secret).unwrap();
        let identity = Identity {
            path: "test".into(),
            keys: vec![key],
        };
        (
            identity,
            age::x25519::Recipient::from_str(&recipient).unwrap(),
        )
    }

    /// A tar of `files`, handed to `tamper` as plain tar bytes, then gzip'ed, handed to
    /// `tamper_gz`, and encrypted.
    fn archive(
        recipient: &age::x25519::Recipient,
        files: &[(&str, Vec<u8>)],
        tamper: impl FnOnce(&mut Vec<u8>),
        tamper_gz: impl FnOnce(&mut Vec<u8>),
    ) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, name, &data[..]).unwrap();
        }
        let mut plain = builder.into_inner().unwrap();
        tamper(&mut plain);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let mut gz = gz.finish().unwrap();
        tamper_gz(&mut gz);
        let mut w = crypt::encrypt(std::slice::from_ref(recipient), Vec::new()).unwrap();
        w.write_all(&gz).unwrap();
        w.finish().unwrap()
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9u32;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 11) as u8
            })
            .collect()
    }

    fn failure(ciphertext: &[u8], identity: &Identity) -> String {
        let dir = tempfile::tempdir().unwrap();
        match read_once(ciphertext, identity, Compression::Gzip, dir.path()) {
            Ok(_) => panic!("the damaged archive was read without an error"),
            Err(m) => m.0,
        }
    }

    /// A manifest entry for a file of `size` bytes with the hex SHA-256 `sha256`.
    fn file_entry(path: &str, size: u64, sha256: String) -> Entry {
        Entry {
            path: path.into(),
            path_hex: None,
            kind: EntryType::File,
            mode: "0644".into(),
            uid: 0,
            gid: 0,
            owner: "root:root".into(),
            size,
            mtime: 1,
            sha256: Some(sha256),
            link: None,
            link_hex: None,
            changed: false,
            read_error: None,
        }
    }

    /// The manifest of `entries` as vouch writes it, and its SHA256SUMS.
    fn manifest_of(entries: impl IntoIterator<Item = Entry>) -> (Vec<u8>, Vec<u8>) {
        let head = manifest::Head {
            format: "vouch-manifest".into(),
            version: 1,
            run_id: "00".repeat(16),
            host: "h".into(),
            ..manifest::Head::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut w = manifest::ManifestWriter::new(head, dir.path()).unwrap();
        for entry in entries {
            w.push(&entry).unwrap();
        }
        let mut spooled = w.finish(&manifest::Tail::default()).unwrap();
        let (mut text, mut sums) = (Vec::new(), Vec::new());
        spooled
            .manifest_reader()
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();
        spooled
            .sums_reader()
            .unwrap()
            .read_to_end(&mut sums)
            .unwrap();
        (text, sums)
    }

    /// A manifest of `n` files as vouch writes it, and its SHA256SUMS.
    fn closing_files(n: usize) -> (Vec<u8>, Vec<u8>) {
        manifest_of((0..n).map(|i| file_entry(&format!("srv/f{i}"), 1, format!("{i:064x}"))))
    }

    /// The manifest `vouch run` would write for `files`.
    fn closing_for(files: &[(&str, Vec<u8>)]) -> (Vec<u8>, Vec<u8>) {
        manifest_of(files.iter().map(|(name, data)| {
            let sha = crate::pipeline::io::hex(&Sha256::digest(data));
            file_entry(name, data.len() as u64, sha)
        }))
    }

    /// `vouch verify`'s result for an archive of `files` closed by `closing`, then `after`.
    fn verified(
        files: &[(&str, Vec<u8>)],
        closing: (Vec<u8>, Vec<u8>),
        after: &[(&str, Vec<u8>)],
    ) -> Result<Verified, String> {
        let (identity, recipient) = keys();
        let mut all = files.to_vec();
        all.push((MANIFEST_PATH, closing.0));
        all.push((SUMS_PATH, closing.1));
        all.extend_from_slice(after);
        let data = archive(&recipient, &all, |_| {}, |_| {});
        let dir = tempfile::tempdir().unwrap();
        verify_archive(&data[..], &identity, Compression::Gzip, None, dir.path()).map_err(|m| m.0)
    }

    #[test]
    fn one_pass_checks_every_entry_it_recorded_against_the_closing_manifest() {
        let files = [
            ("srv/a", b"a\n".to_vec()),
            ("srv/b", noise(300_000)),
            ("srv/c", Vec::new()),
        ];
        let ok = verified(&files, closing_for(&files), &[]).unwrap();
        assert_eq!(ok.entries, 3);
        let mut changed = files.clone();
        changed[1].1[7] ^= 1;
        assert_eq!(
            verified(&changed, closing_for(&files), &[]).map(|v| v.entries),
            Err("srv/b: content differs from the manifest (SHA-256)".into())
        );
        assert_eq!(
            verified(&files[..2], closing_for(&files), &[]).map(|v| v.entries),
            Err("srv/c: in the manifest but not in the archive".into())
        );
        assert_eq!(
            verified(&files, closing_for(&files[..2]), &[]).map(|v| v.entries),
            Err("srv/c: not in the manifest".into())
        );
        let mut swapped = files.clone();
        swapped.swap(0, 2);
        assert_eq!(
            verified(&swapped, closing_for(&files), &[]).map(|v| v.entries),
            Err("srv/c: found where the manifest has srv/a".into())
        );
        assert_eq!(
            verified(&files, closing_for(&files), &[("late", b"x".to_vec())]).map(|v| v.entries),
            Err("unexpected entry late after the manifest".into())
        );
    }

    #[test]
    fn a_receipt_that_does_not_match_fails_before_any_entry_is_compared() {
        let (identity, recipient) = keys();
        let files = [("srv/a", b"a\n".to_vec())];
        let mut all = files.to_vec();
        let (text, sums) = closing_for(&[("srv/a", b"changed".to_vec())]);
        all.push((MANIFEST_PATH, text));
        all.push((SUMS_PATH, sums));
        let data = archive(&recipient, &all, |_| {}, |_| {});
        let dir = tempfile::tempdir().unwrap();
        let sha = crate::pipeline::io::hex(&Sha256::digest(&data));
        let size = data.len() as u64;
        let got = verify_archive(
            &data[..],
            &identity,
            Compression::Gzip,
            Some((&sha, size + 1)),
            dir.path(),
        );
        let message = got.map(|_| ()).unwrap_err().0;
        assert!(
            message.starts_with(&format!(
                "the archive ({size} bytes, SHA-256 {sha}) does not match its receipt"
            )),
            "{message}"
        );
        let got = verify_archive(
            &data[..],
            &identity,
            Compression::Gzip,
            Some((&sha, size)),
            dir.path(),
        );
        assert_eq!(
            got.map(|_| ()).unwrap_err().0,
            "srv/a: 2 bytes in the archive, 7 in the manifest"
        );
    }

    /// What the pass makes of `text` and `sums`: the spool, or the refusal.
    fn respooled(text: &[u8], sums: &[u8]) -> Result<Spooled, String> {
        let dir = tempfile::tempdir().unwrap();
        let digest = |b: &[u8]| Digest::of(&mut &b[..]).unwrap();
        respool(text, &digest(text), &digest(sums), dir.path()).map_err(|m| m.0)
    }

    #[test]
    fn the_manifest_is_respooled_entry_by_entry_and_checked_whole() {
        let (text, sums) = closing_files(2000);
        let spooled = respooled(&text, &sums).unwrap();
        assert_eq!(spooled.count, 2000);
        let paths: Vec<String> = spooled
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path)
            .collect();
        assert_eq!(paths.len(), 2000);
        assert_eq!(paths[1999], "srv/f1999");
        let text = String::from_utf8(text).unwrap();
        let not_vouch = format!("{MANIFEST_PATH} is not a vouch manifest: ");
        let not_the_form = format!("{MANIFEST_PATH} is not in the form vouch writes");
        let extra_entry_field = text.replacen("\"owner\":", "\"extra\":1,\"owner\":", 1);
        let extra_field = text.replacen("\"entries\":", "\"extra\":1,\"entries\":", 1);
        let spaced = text.replacen(",\n", ", \n", 1);
        let cases = [
            ("not json".to_owned(), &not_vouch),
            (text[..text.len() / 2].to_owned(), &not_vouch),
            (extra_entry_field, &not_vouch),
            (extra_field, &not_the_form),
            (spaced, &not_the_form),
            (text.replacen("\"h\"", "\"h\" ", 1), &not_the_form),
        ];
        for (bad, want) in cases {
            // SHA256SUMS is the one these entries make, so only the manifest is wrong.
            let got = respooled(bad.as_bytes(), &sums).err().unwrap_or_default();
            assert!(got.starts_with(want.as_str()), "{got}");
        }
        let mut other = sums.clone();
        other[0] ^= 1;
        let got = respooled(text.as_bytes(), &other).err().unwrap_or_default();
        assert_eq!(got, format!("{SUMS_PATH} disagrees with {MANIFEST_PATH}"));
        let got = respooled(text.as_bytes(), &sums[..sums.len() - 1])
            .err()
            .unwrap_or_default();
        assert_eq!(got, format!("{SUMS_PATH} disagrees with {MANIFEST_PATH}"));
    }

    #[test]
    fn a_flipped_bit_names_the_entry_and_its_chunk() {
        let (identity, recipient) = keys();
        let files = [
            ("small", b"small\n".to_vec()),
            ("big", noise(600_000)),
            ("last", b"last\n".to_vec()),
        ];
        let mut data = archive(&recipient, &files, |_| {}, |_| {});
        let at = data.len() / 2;
        data[at] ^= 0x01;
        let message = failure(&data, &identity);
        assert!(
            message.starts_with("big: cannot read its data: decryption error (near byte "),
            "{message}"
        );
        let near: u64 = message
            .rsplit("near byte ")
            .next()
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no offset in {message}"));
        let at = at as u64;
        assert!(
            near <= at && at < near + AGE_CHUNK,
            "byte {at} is not in the chunk at {near}"
        );
    }

    #[test]
    fn a_broken_header_names_the_entry_before_it() {
        let (identity, recipient) = keys();
        let files = [("first", b"one\n".to_vec()), ("second", b"two\n".to_vec())];
        // The second header starts after the first header and its one block of data.
        let data = archive(&recipient, &files, |tar| tar[1024 + 100] ^= 0x01, |_| {});
        let message = failure(&data, &identity);
        assert!(
            message.starts_with("the archive is damaged after first: "),
            "{message}"
        );
        // A broken first header is before the first entry.
        let data = archive(&recipient, &files, |tar| tar[100] ^= 0x01, |_| {});
        let message = failure(&data, &identity);
        assert!(
            message.starts_with("the archive is damaged before the first entry: "),
            "{message}"
        );
    }

    #[test]
    fn damage_past_the_tar_end_is_after_the_last_entry() {
        let (identity, recipient) = keys();
        let files = [("first", b"one\n".to_vec()), ("second", b"two\n".to_vec())];
        // The gzip trailer's CRC no longer matches: found only once the tar has ended.
        let data = archive(
            &recipient,
            &files,
            |_| {},
            |gz| {
                let n = gz.len();
                gz[n - 8] ^= 0x01;
            },
        );
        let message = failure(&data, &identity);
        assert!(
            message.starts_with("the archive is damaged after the last entry (second): "),
            "{message}"
        );
    }

    /// `files` as a tar in zstd frames (as `compression = "zstd"` writes it), handed to
    /// `tamper` as compressed bytes, and encrypted.
    fn zstd_archive(
        recipient: &age::x25519::Recipient,
        files: &[(&str, Vec<u8>)],
        tamper: impl FnOnce(&mut Vec<u8>),
    ) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, name, &data[..]).unwrap();
        }
        let plain = builder.into_inner().unwrap();
        let codec = crate::pipeline::compress::Codec::Zstd(3);
        let mut z = crate::pipeline::compress::ParallelWriter::with_codec(Vec::new(), codec, 1);
        z.write_all(&plain).unwrap();
        let mut zst = z.finish().unwrap();
        tamper(&mut zst);
        let mut w = crypt::encrypt(std::slice::from_ref(recipient), Vec::new()).unwrap();
        w.write_all(&zst).unwrap();
        w.finish().unwrap()
    }

    fn failure_as(ciphertext: &[u8], identity: &Identity, compression: Compression) -> String {
        let dir = tempfile::tempdir().unwrap();
        match read_once(ciphertext, identity, compression, dir.path()) {
            Ok(_) => panic!("the damaged archive was read without an error"),
            Err(m) => m.0,
        }
    }

    #[test]
    fn a_zstd_archive_reads_to_its_end_and_its_damage_is_located() {
        let (identity, recipient) = keys();
        let files = [("first", b"one\n".to_vec()), ("big", noise(300_000))];
        // Undamaged: read to the end, where only the closing files are found missing.
        let data = zstd_archive(&recipient, &files, |_| {});
        let message = failure_as(&data, &identity, Compression::Zstd);
        assert_eq!(message, format!("{MANIFEST_PATH} is missing"));
        // The last frame's checksum no longer matches: found once the tar has ended.
        let data = zstd_archive(&recipient, &files, |z| {
            let n = z.len();
            z[n - 1] ^= 0x01;
        });
        let message = failure_as(&data, &identity, Compression::Zstd);
        assert!(
            message.starts_with("the archive is damaged after the last entry (big): "),
            "{message}"
        );
    }

    #[test]
    fn a_name_that_disagrees_with_the_data_is_damage_not_a_panic() {
        let (identity, recipient) = keys();
        let files = [("first", b"one\n".to_vec())];
        let gz = archive(&recipient, &files, |_| {}, |_| {});
        let message = failure_as(&gz, &identity, Compression::Zstd);
        assert!(
            message.starts_with("the archive is damaged")
                && message.contains("says zstd, but it holds gzip data"),
            "{message}"
        );
        let zst = zstd_archive(&recipient, &files, |_| {});
        let message = failure_as(&zst, &identity, Compression::Gzip);
        assert!(
            message.contains("says gzip, but it holds zstd data"),
            "{message}"
        );
    }

    #[test]
    fn a_damaged_age_header_is_before_the_first_entry() {
        let (identity, recipient) = keys();
        let files = [("first", b"one\n".to_vec())];
        let mut data = archive(&recipient, &files, |_| {}, |_| {});
        data[30] ^= 0x01;
        let message = failure(&data, &identity);
        assert!(
            message.starts_with("cannot decrypt: ")
                && message.ends_with("(in the age header, before the first entry)"),
            "{message}"
        );
        // A damaged MAC line is not even an age header any more; age says so on two lines,
        // the message keeps to one.
        let mut data = archive(&recipient, &files, |_| {}, |_| {});
        let mac = data.windows(5).position(|w| w == b"\n--- ").unwrap();
        data[mac + 2] ^= 0x40;
        let message = failure(&data, &identity);
        assert!(
            !message.contains('\n')
                && message.ends_with("(in the age header, before the first entry)"),
            "{message}"
        );
        // Cut short inside the payload: the chunk that ends early is where it is found.
        let data = archive(&recipient, &[("big", noise(300_000))], |_| {}, |_| {});
        let cut = &data[..data.len() - 1000];
        let message = failure(cut, &identity);
        assert!(
            message.starts_with("big: cannot read its data: "),
            "{message}"
        );
    }
}
