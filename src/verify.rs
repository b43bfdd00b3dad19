//! Reading an archive back and checking it against its manifest.
//!
//! The file is read from the target after its cached pages were dropped, so what is checked is
//! what the storage returns. The read-back is the full reverse pipeline: SHA-256 of the
//! ciphertext (against the hash computed while writing), age decryption (which authenticates
//! every 64 KiB chunk and the end of the stream), gzip decompression, and tar parsing, with every
//! entry compared with the manifest in order: path, type, mode, size, link target, and the
//! SHA-256 of its data. The archive's own `.vouch/manifest.json` and `.vouch/SHA256SUMS` must be
//! the last entries and byte-identical to what was written.
//!
//! Without an identity, only the ciphertext can be checked (hash, length and age header); that
//! mode must be opted into and is reported as a warning on every run.

use crate::crypt::{self, Identity};
use crate::io::{HashReader, BUFFER_SIZE};
use crate::manifest::{Entry, EntryType, Spooled, MANIFEST_PATH, SUMS_PATH};
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use std::io::{self, BufReader, Read};

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

/// The plaintext tar stream of an age + gzip archive read through `hashed`.
type TarStream<'a, R> =
    tar::Archive<MultiGzDecoder<age::stream::StreamReader<BufReader<&'a mut HashReader<R>>>>>;

fn open_tar<'a, R: Read>(
    hashed: &'a mut HashReader<R>,
    identity: &Identity,
) -> Result<TarStream<'a, R>, Mismatch> {
    let buffered = BufReader::with_capacity(BUFFER_SIZE, hashed);
    let plain =
        crypt::decrypt(identity, buffered).map_err(|e| mismatch(format!("cannot decrypt: {e}")))?;
    Ok(tar::Archive::new(MultiGzDecoder::new(plain)))
}

/// Reads what follows the tar's end so that age authenticates the final chunk and gzip checks
/// its trailer.
fn drain<R: Read>(tar: TarStream<'_, R>) -> Result<(), Mismatch> {
    let mut rest = tar.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map(|_| ())
        .map_err(|e| mismatch(format!("the end of the archive is damaged: {e}")))
}

/// Fully verifies `file` against `expected`, decrypting with `identity`.
pub fn verify_full(
    file: impl Read,
    identity: &Identity,
    expected: &mut Expected<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<(), Mismatch> {
    let mut hashed = HashReader::new(file);
    {
        let mut tar = open_tar(&mut hashed, identity)?;
        let mut entries = expected
            .manifest
            .entries()
            .map_err(|e| mismatch(format!("cannot read the manifest spool: {e}")))?;
        let mut seen_manifest = false;
        let mut seen_sums = false;
        let mut buf = vec![0u8; BUFFER_SIZE];
        let mut done = 0u64;
        let iter = tar
            .entries()
            .map_err(|e| mismatch(format!("not a tar stream: {e}")))?;
        for found in iter {
            let mut found = found.map_err(|e| mismatch(format!("corrupt tar entry: {e}")))?;
            let path = found.path_bytes().into_owned();
            let path_str = String::from_utf8_lossy(&path).into_owned();
            if seen_sums {
                return Err(mismatch(format!(
                    "unexpected entry {path_str} after the manifest"
                )));
            }
            let digest = hash_entry(&mut found, &mut buf)
                .map_err(|e| mismatch(format!("{path_str}: cannot read its data: {e}")))?;
            done += found.size();
            progress(done);
            if path == MANIFEST_PATH.as_bytes() {
                if seen_manifest || digest != expected.manifest_sha256 {
                    return Err(mismatch(format!(
                        "{MANIFEST_PATH} differs from the one written"
                    )));
                }
                seen_manifest = true;
                continue;
            }
            if path == SUMS_PATH.as_bytes() {
                if !seen_manifest || digest != expected.sums_sha256 {
                    return Err(mismatch(format!(
                        "{SUMS_PATH} differs from the one written"
                    )));
                }
                seen_sums = true;
                continue;
            }
            if seen_manifest {
                return Err(mismatch(format!(
                    "unexpected entry {path_str} after the manifest"
                )));
            }
            let want = match entries.next() {
                Some(Ok(e)) => e,
                Some(Err(e)) => return Err(mismatch(format!("manifest spool unreadable: {e}"))),
                None => return Err(mismatch(format!("{path_str}: not in the manifest"))),
            };
            compare(&want, &found, &path, &digest)?;
        }
        if let Some(missing) = entries.next() {
            let name = missing.map(|e| e.path).unwrap_or_default();
            return Err(mismatch(format!(
                "{name}: in the manifest but not in the archive"
            )));
        }
        if !seen_sums {
            return Err(mismatch(format!("{SUMS_PATH} is missing")));
        }
        drain(tar)?;
    }
    check_totals(hashed, expected)
}

/// The SHA-256 of everything `r` yields, read through `buf`.
pub fn hash_entry(r: &mut impl Read, buf: &mut [u8]) -> io::Result<String> {
    let mut h = Sha256::new();
    loop {
        let n = r.read(buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::io::hex(&h.finalize()))
}

fn compare<R: Read>(
    want: &Entry,
    found: &tar::Entry<'_, R>,
    path: &[u8],
    digest: &str,
) -> Result<(), Mismatch> {
    check_entry(want, found, path, Some(digest)).map_err(mismatch)
}

/// Checks a tar entry against its manifest entry: path, type, mode, size, link target and,
/// when given, the SHA-256 of its data. The message names the entry and the first difference.
pub fn check_entry<R: Read>(
    want: &Entry,
    found: &tar::Entry<'_, R>,
    path: &[u8],
    digest: Option<&str>,
) -> Result<(), String> {
    let name = &want.path;
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    if want.path_bytes() != trimmed {
        return Err(format!(
            "{}: found where the manifest has {name}",
            String::from_utf8_lossy(path)
        ));
    }
    let ty = found.header().entry_type();
    let kind_ok = match want.kind {
        EntryType::File => ty.is_file(),
        EntryType::Dir => ty.is_dir(),
        EntryType::Symlink => ty.is_symlink(),
        EntryType::Hardlink => ty.is_hard_link(),
    };
    if !kind_ok {
        return Err(format!("{name}: type differs from the manifest"));
    }
    let mode = found
        .header()
        .mode()
        .map_err(|e| format!("{name}: bad mode: {e}"))?;
    if format!("{:04o}", mode & 0o7777) != want.mode {
        return Err(format!("{name}: mode differs from the manifest"));
    }
    if want.kind == EntryType::File {
        if found.size() != want.size {
            return Err(format!(
                "{name}: {} bytes in the archive, {} in the manifest",
                found.size(),
                want.size
            ));
        }
        if let Some(digest) = digest {
            if want.sha256.as_deref() != Some(digest) {
                return Err(format!(
                    "{name}: content differs from the manifest (SHA-256)"
                ));
            }
        }
    }
    if matches!(want.kind, EntryType::Symlink | EntryType::Hardlink) {
        let link = found.link_name_bytes().map(|l| l.into_owned());
        if link != want.link_bytes() {
            return Err(format!("{name}: link target differs from the manifest"));
        }
    }
    Ok(())
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

/// The `.vouch/` files of an archive, read in a first pass.
struct Closing {
    manifest: Vec<u8>,
    sums: Vec<u8>,
    archive_sha256: String,
    archive_size: u64,
}

fn read_closing(file: impl Read, identity: &Identity) -> Result<Closing, Mismatch> {
    let mut hashed = HashReader::new(file);
    let mut manifest = None;
    let mut sums = None;
    {
        let mut tar = open_tar(&mut hashed, identity)?;
        let iter = tar
            .entries()
            .map_err(|e| mismatch(format!("not a tar stream: {e}")))?;
        for found in iter {
            let mut found = found.map_err(|e| mismatch(format!("corrupt tar entry: {e}")))?;
            let path = found.path_bytes().into_owned();
            if path == MANIFEST_PATH.as_bytes() || path == SUMS_PATH.as_bytes() {
                let mut data = Vec::new();
                found.read_to_end(&mut data).map_err(|e| {
                    mismatch(format!(
                        "cannot read {}: {e}",
                        String::from_utf8_lossy(&path)
                    ))
                })?;
                if path == MANIFEST_PATH.as_bytes() {
                    manifest = Some(data);
                } else {
                    sums = Some(data);
                }
            }
        }
        drain(tar)?;
    }
    let (archive_sha256, archive_size) = hashed
        .finish()
        .map_err(|e| mismatch(format!("reading the archive failed: {e}")))?;
    Ok(Closing {
        manifest: manifest.ok_or_else(|| mismatch(format!("{MANIFEST_PATH} is missing")))?,
        sums: sums.ok_or_else(|| mismatch(format!("{SUMS_PATH} is missing")))?,
        archive_sha256,
        archive_size,
    })
}

fn sha256_hex(data: &[u8]) -> String {
    crate::io::hex(&Sha256::digest(data))
}

/// Verifies an archive on its own: a first pass reads its manifest and checksum list (they close
/// the archive), a second pass checks every entry against them, exactly as `vouch run` does
/// right after writing. `open` opens the archive (its parts in order) for reading from the
/// storage; `receipt` gives the size and SHA-256 the archive must have, when there is one.
pub fn verify_archive(
    open: &dyn Fn() -> io::Result<Box<dyn Read>>,
    identity: &Identity,
    receipt: Option<(&str, u64)>,
    spool_dir: &std::path::Path,
) -> Result<Verified, Mismatch> {
    let reopen = || open().map_err(|e| mismatch(format!("cannot open the archive: {e}")));
    let closing = read_closing(reopen()?, identity)?;
    if let Some((sha, size)) = receipt {
        if sha != closing.archive_sha256 || size != closing.archive_size {
            return Err(mismatch(format!(
                "the archive ({} bytes, SHA-256 {}) does not match its receipt ({size} bytes, SHA-256 {sha})",
                closing.archive_size, closing.archive_sha256
            )));
        }
    }
    let manifest: crate::manifest::Manifest = serde_json::from_slice(&closing.manifest)
        .map_err(|e| mismatch(format!("{MANIFEST_PATH} is not a vouch manifest: {e}")))?;
    let mut writer = crate::manifest::ManifestWriter::new(manifest.head.clone(), spool_dir)
        .map_err(|e| mismatch(format!("cannot spool the manifest: {e}")))?;
    for e in &manifest.entries {
        writer
            .push(e)
            .map_err(|e| mismatch(format!("cannot spool the manifest: {e}")))?;
    }
    let mut spooled = writer
        .finish(&manifest.tail)
        .map_err(|e| mismatch(format!("cannot spool the manifest: {e}")))?;
    // The checksum list must say what the manifest says.
    let mut sums = Vec::new();
    spooled
        .sums_reader()
        .and_then(|mut r| r.read_to_end(&mut sums))
        .map_err(|e| mismatch(format!("cannot read the spool: {e}")))?;
    if sums != closing.sums {
        return Err(mismatch(format!(
            "{SUMS_PATH} disagrees with {MANIFEST_PATH}"
        )));
    }
    let manifest_sha256 = sha256_hex(&closing.manifest);
    let sums_sha256 = sha256_hex(&closing.sums);
    let mut expected = Expected {
        manifest: &mut spooled,
        manifest_sha256: &manifest_sha256,
        sums_sha256: &sums_sha256,
        archive_sha256: &closing.archive_sha256,
        archive_size: closing.archive_size,
    };
    // The manifest read back must be byte for byte the one in the archive: compare through
    // the same spool the second pass uses.
    let mut rebuilt = Vec::new();
    expected
        .manifest
        .manifest_reader()
        .and_then(|mut r| r.read_to_end(&mut rebuilt))
        .map_err(|e| mismatch(format!("cannot read the spool: {e}")))?;
    if rebuilt != closing.manifest {
        return Err(mismatch(format!(
            "{MANIFEST_PATH} is not in the form vouch writes (edited, or from another version)"
        )));
    }
    verify_full(reopen()?, identity, &mut expected, &mut |_| {})?;
    Ok(Verified {
        entries: manifest.entries.len() as u64,
        archive_size: closing.archive_size,
        archive_sha256: closing.archive_sha256,
    })
}
