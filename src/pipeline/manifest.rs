//! The manifest: what an archive holds, entry by entry, written as the archive's last entries.
//!
//! Two files close every archive: `.vouch/manifest.json` (path, type, mode, owner, size, mtime
//! and SHA-256 of each entry, plus what was skipped, unreadable or changed while read) and
//! `.vouch/SHA256SUMS` (in `sha256sum` format, so `sha256sum -c .vouch/SHA256SUMS` checks a
//! restored tree with stock tools).
//!
//! Neither can be written before the last entry is known, and holding them in memory would make
//! vouch's memory grow with the number of files. So entries are spooled to anonymous temporary
//! files while the archive is written, one JSON object per line, and copied into the tar stream
//! at the end. Verification walks the same spool in step with the archive it reads back.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Where the manifest lives inside the archive.
pub const MANIFEST_PATH: &str = ".vouch/manifest.json";
/// Where the checksum list lives inside the archive.
pub const SUMS_PATH: &str = ".vouch/SHA256SUMS";
/// The directory holding both.
pub const VOUCH_DIR: &str = ".vouch";

/// What `.vouch/manifest.json` or `.vouch/SHA256SUMS` may hold whatever the archive's size.
pub const CLOSING_BASE_CAP: u64 = 16 << 20;

/// How many times the encrypted bytes read so far a closing file may hold beyond
/// [`CLOSING_BASE_CAP`]. A manifest is JSON that gzip shrinks a few times, never this much; a
/// file padded to compress a thousandfold is refused long before it fills memory.
pub const CLOSING_RATIO: u64 = 64;

/// Reads a closing file of an archive (`name`, for the message) whole, failing once it holds
/// more than [`CLOSING_BASE_CAP`] plus [`CLOSING_RATIO`] times `consumed()`, the encrypted
/// bytes read so far.
pub fn read_closing_file(
    r: &mut impl Read,
    name: &str,
    consumed: &dyn Fn() -> u64,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    copy_closing_file(r, name, consumed, &mut out)?;
    Ok(out)
}

/// What a closing file was: its SHA-256 (hex) and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// SHA-256 of the bytes, in hex.
    pub sha256: String,
    /// How many bytes.
    pub len: u64,
}

impl Digest {
    /// The digest of everything `r` yields.
    pub fn of(r: &mut impl Read) -> io::Result<Digest> {
        let mut hashed = crate::pipeline::io::HashWriter::new(io::sink());
        io::copy(r, &mut hashed)?;
        let (_, sha256, len) = hashed.finish();
        Ok(Digest { sha256, len })
    }
}

/// Copies a closing file of an archive (`name`, for the message) into `out` as it is read,
/// hashing it, under the cap of [`read_closing_file`]; returns its digest. Nothing of it is
/// held in memory beyond one buffer.
pub fn copy_closing_file(
    r: &mut impl Read,
    name: &str,
    consumed: &dyn Fn() -> u64,
    out: &mut dyn Write,
) -> io::Result<Digest> {
    let mut hash = Sha256::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            out.flush()?;
            return Ok(Digest {
                sha256: crate::pipeline::io::hex(&hash.finalize()),
                len,
            });
        }
        len += n as u64;
        let cap = CLOSING_BASE_CAP.saturating_add(consumed().saturating_mul(CLOSING_RATIO));
        if len > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{name} holds more than {cap} bytes, far more than an archive of this size can list"
                ),
            ));
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
}

/// The type of an archived entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link to an earlier file entry.
    Hardlink,
}

/// One archived entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Entry {
    /// The path inside the archive (relative to `/`), lossily decoded if not UTF-8.
    pub path: String,
    /// The exact path bytes in hex, present only when the path is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// The entry's type.
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// Permission bits in octal, e.g. `"0644"`.
    pub mode: String,
    /// Owner id.
    pub uid: u64,
    /// Group id.
    pub gid: u64,
    /// `user:group` names where known, else the ids.
    pub owner: String,
    /// Data bytes in the archive (files; 0 otherwise).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// SHA-256 of the archived data (files and hard links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target or hard link's original path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The exact link bytes in hex, present only when the link is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_hex: Option<String>,
    /// The file changed while it was read (what was archived is what the hash covers).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changed: bool,
    /// Reading failed part way; the rest of the archived data is zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_error: Option<String>,
}

/// Encodes raw path bytes into the `path`/`path_hex` pair.
pub fn encode_path(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(crate::pipeline::io::hex(bytes)),
        ),
    }
}

fn decode(text: &str, hex: Option<&str>) -> Vec<u8> {
    match hex {
        Some(h) => (0..h.len() / 2)
            .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
            .collect(),
        None => text.as_bytes().to_vec(),
    }
}

impl Entry {
    /// The exact path bytes.
    pub fn path_bytes(&self) -> Vec<u8> {
        decode(&self.path, self.path_hex.as_deref())
    }

    /// The exact link bytes, if any.
    pub fn link_bytes(&self) -> Option<Vec<u8>> {
        self.link
            .as_ref()
            .map(|l| decode(l, self.link_hex.as_deref()))
    }
}

/// A non-regular file that was not archived (sockets, fifos, devices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Skipped {
    /// Its path (relative to `/`).
    pub path: String,
    /// `fifo`, `socket`, `char-device` or `block-device`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A file or directory that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Unreadable {
    /// Its absolute path on the source host.
    pub path: String,
    /// The error.
    pub error: String,
}

/// Whether a required path made it into the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RequiredStatus {
    /// The configured path (absolute).
    pub path: String,
    /// Present and non-empty.
    pub present: bool,
}

/// The part of the manifest written after the entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Tail {
    /// Special files that were not archived.
    pub skipped: Vec<Skipped>,
    /// Files and directories that could not be read.
    pub unreadable: Vec<Unreadable>,
    /// Paths (relative to `/`) of files that changed while read.
    pub changed: Vec<String>,
    /// Required paths and whether each is present.
    pub required: Vec<RequiredStatus>,
    /// The database dumps in the archive and the checks each passed (absent without dumps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dumps: Vec<DumpRecord>,
}

/// One dump in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DumpRecord {
    /// The `[[dump]]` name.
    pub name: String,
    /// Its kind (`sqlite`, `command`, `postgresql`).
    pub kind: String,
    /// The database this file holds, for the kinds that dump several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Its entry's path in the archive.
    pub path: String,
    /// Bytes.
    pub bytes: u64,
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// Tables counted, for the kinds that count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<u64>,
    /// The checks it passed, in order.
    pub checks: Vec<DumpCheck>,
    /// RFC 3339 start time.
    pub started: String,
    /// How long it took.
    pub duration_usec: u64,
    /// `sqlite-backup-api` for an SQLite snapshot stored at the database's own path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The stock command that restores it.
    pub restore: String,
}

/// One check a dump passed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DumpCheck {
    /// `exit-status`, `min-size`, `expect-tail`, `integrity_check`, `min-tables`, ...
    pub check: String,
    /// The threshold, for the checks that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// Always true: a dump that failed a check is not archived.
    pub ok: bool,
}

/// The part of the manifest written before the entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Head {
    /// Always `"vouch-manifest"`.
    pub format: String,
    /// Format version, 1.
    pub version: u32,
    /// The run that wrote the archive.
    pub run_id: String,
    /// Host name.
    pub host: String,
    /// Archive name prefix.
    pub name: String,
    /// RFC 3339 creation time.
    pub created: String,
}

/// A whole manifest, as parsed from `.vouch/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Manifest {
    /// See [`Head`].
    #[serde(flatten)]
    pub head: Head,
    /// Every archived entry in archive order.
    pub entries: Vec<Entry>,
    /// See [`Tail`].
    #[serde(flatten)]
    pub tail: Tail,
}

/// Why a manifest could not be read entry by entry.
#[derive(Debug)]
pub enum StreamError<E> {
    /// The text is not a manifest: not JSON, cut short, a field missing or of the wrong type,
    /// an unknown field in an entry, or reading it failed (see `serde_json::Error::is_io`).
    Json(serde_json::Error),
    /// What was given each entry refused it.
    Each(E),
}

/// Reads a manifest's JSON text from `r`, handing each entry to `each` in order as soon as it
/// is parsed, so that no more than one entry is held at a time; returns its head and tail.
/// It accepts what parsing a whole [`Manifest`] accepts (fields in any order, unknown fields
/// outside the entries ignored) and refuses what that refuses; `each` failing stops it.
pub fn stream_manifest<E>(
    r: impl Read,
    mut each: impl FnMut(Entry) -> Result<(), E>,
) -> Result<(Head, Tail), StreamError<E>> {
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 << 10, r));
    let seed = ManifestSeed {
        each: &mut each,
        failed: &mut failed,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|_| v));
    match (parsed, failed) {
        (_, Some(e)) => Err(StreamError::Each(e)),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(StreamError::Json(e)),
    }
}

/// The whole manifest object: the entries streamed, every other field kept for [`Head`] and
/// [`Tail`], which are read from them at the end (as `#[serde(flatten)]` does).
struct ManifestSeed<'a, E> {
    each: &'a mut dyn FnMut(Entry) -> Result<(), E>,
    failed: &'a mut Option<E>,
}

impl<'de, E> DeserializeSeed<'de> for ManifestSeed<'_, E> {
    type Value = (Head, Tail);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, E> Visitor<'de> for ManifestSeed<'_, E> {
    type Value = (Head, Tail);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct Manifest")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut rest = serde_json::Map::new();
        let mut entries = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "entries" {
                if entries {
                    return Err(de::Error::duplicate_field("entries"));
                }
                entries = true;
                map.next_value_seed(EntriesSeed {
                    each: &mut *self.each,
                    failed: &mut *self.failed,
                })?;
            } else {
                let value: serde_json::Value = map.next_value()?;
                rest.insert(key, value);
            }
        }
        if !entries {
            return Err(de::Error::missing_field("entries"));
        }
        let rest = serde_json::Value::Object(rest);
        let head = Head::deserialize(&rest).map_err(de::Error::custom)?;
        let tail = Tail::deserialize(&rest).map_err(de::Error::custom)?;
        Ok((head, tail))
    }
}

/// The `entries` array, each element handed on as it is parsed.
struct EntriesSeed<'a, E> {
    each: &'a mut dyn FnMut(Entry) -> Result<(), E>,
    failed: &'a mut Option<E>,
}

impl<'de, E> DeserializeSeed<'de> for EntriesSeed<'_, E> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, E> Visitor<'de> for EntriesSeed<'_, E> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sequence of entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(entry) = seq.next_element::<Entry>()? {
            if let Err(e) = (self.each)(entry) {
                *self.failed = Some(e);
                return Err(de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

/// Why a manifest could not be spooled.
#[derive(Debug)]
pub enum SpoolError {
    /// The text is not a manifest ([`StreamError::Json`]).
    Json(serde_json::Error),
    /// Writing the spool failed.
    Spool(io::Error),
}

/// Reads a manifest's JSON text from `r` entry by entry into a new spool in `spool_dir`
/// (which holds it on disk, not in memory), with the head and tail it read.
pub fn spool_manifest(r: impl Read, spool_dir: &Path) -> Result<(Head, Tail, Spooled), SpoolError> {
    let mut writer = ManifestWriter::new(Head::default(), spool_dir).map_err(SpoolError::Spool)?;
    let (head, tail) = stream_manifest(r, |e| writer.push(&e)).map_err(|e| match e {
        StreamError::Json(e) => SpoolError::Json(e),
        StreamError::Each(e) => SpoolError::Spool(e),
    })?;
    writer.head = head.clone();
    let spooled = writer.finish(&tail).map_err(SpoolError::Spool)?;
    Ok((head, tail, spooled))
}

/// Creates an anonymous temporary file in `dir` (falling back to the system temp dir).
pub fn spool_file(dir: &Path) -> io::Result<File> {
    let open = |d: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(d)
    };
    open(dir).or_else(|_| open(&std::env::temp_dir()))
}

/// Spools manifest entries and checksum lines while an archive is written.
pub struct ManifestWriter {
    head: Head,
    entries: BufWriter<File>,
    entries_len: u64,
    count: u64,
    sums: BufWriter<File>,
    sums_len: u64,
}

/// The finished manifest, ready to be copied into the archive and to drive verification.
pub struct Spooled {
    /// The full `.vouch/manifest.json` text length.
    pub manifest_len: u64,
    head: Vec<u8>,
    entries: File,
    entries_len: u64,
    tail: Vec<u8>,
    /// The number of entries.
    pub count: u64,
    sums: File,
    /// The `.vouch/SHA256SUMS` length.
    pub sums_len: u64,
}

impl ManifestWriter {
    /// Starts a manifest whose spool files live in `spool_dir`.
    pub fn new(head: Head, spool_dir: &Path) -> io::Result<Self> {
        Ok(ManifestWriter {
            head,
            entries: BufWriter::new(spool_file(spool_dir)?),
            entries_len: 0,
            count: 0,
            sums: BufWriter::new(spool_file(spool_dir)?),
            sums_len: 0,
        })
    }

    /// Records one entry (in archive order).
    pub fn push(&mut self, entry: &Entry) -> io::Result<()> {
        let mut line = Vec::with_capacity(256);
        line.extend_from_slice(if self.count == 0 { b"\n" } else { b",\n" });
        serde_json::to_writer(&mut line, entry).map_err(io::Error::other)?;
        self.entries.write_all(&line)?;
        self.entries_len += line.len() as u64;
        self.count += 1;
        if let Some(sha) = &entry.sha256 {
            let sums = sums_line(sha, &entry.path_bytes());
            self.sums.write_all(&sums)?;
            self.sums_len += sums.len() as u64;
        }
        Ok(())
    }

    /// Closes the entry list with `tail`.
    pub fn finish(self, tail: &Tail) -> io::Result<Spooled> {
        let mut head = serde_json::to_vec(&self.head).map_err(io::Error::other)?;
        head.pop(); // the closing brace: entries follow
        head.extend_from_slice(b",\"entries\":[");
        let tail_json = serde_json::to_vec(tail).map_err(io::Error::other)?;
        let mut tail_bytes = b"\n],".to_vec();
        tail_bytes.extend_from_slice(&tail_json[1..]); // drop the opening brace
        tail_bytes.push(b'\n');
        let mut entries = self.entries.into_inner().map_err(|e| e.into_error())?;
        let mut sums = self.sums.into_inner().map_err(|e| e.into_error())?;
        entries.seek(SeekFrom::Start(0))?;
        sums.seek(SeekFrom::Start(0))?;
        Ok(Spooled {
            manifest_len: head.len() as u64 + self.entries_len + tail_bytes.len() as u64,
            head,
            entries,
            entries_len: self.entries_len,
            tail: tail_bytes,
            count: self.count,
            sums,
            sums_len: self.sums_len,
        })
    }
}

impl Spooled {
    /// A reader over the full `.vouch/manifest.json` text.
    pub fn manifest_reader(&mut self) -> io::Result<impl Read + '_> {
        self.entries.seek(SeekFrom::Start(0))?;
        Ok((&self.head[..])
            .chain((&self.entries).take(self.entries_len))
            .chain(&self.tail[..]))
    }

    /// A reader over the `.vouch/SHA256SUMS` text.
    pub fn sums_reader(&mut self) -> io::Result<impl Read + '_> {
        self.sums.seek(SeekFrom::Start(0))?;
        Ok((&self.sums).take(self.sums_len))
    }

    /// The entries, in archive order, read back from the spool. Several may be read at once.
    pub fn entries(&self) -> io::Result<EntryIter<'_>> {
        Ok(EntryIter {
            lines: BufReader::new(ReadAt {
                file: &self.entries,
                pos: 0,
                end: self.entries_len,
            }),
            line: Vec::new(),
        })
    }
}

/// Reads a file from `pos` to `end` with positional reads, leaving its offset alone.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Entries read back from a spool, one line each.
pub struct EntryIter<'a> {
    lines: BufReader<ReadAt<'a>>,
    line: Vec<u8>,
}

impl Iterator for EntryIter<'_> {
    type Item = io::Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.line.clear();
            match self.lines.read_until(b'\n', &mut self.line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
            let text = self.line.trim_ascii();
            let text = text.strip_suffix(b",").unwrap_or(text);
            if text.is_empty() {
                continue;
            }
            return Some(serde_json::from_slice(text).map_err(io::Error::other));
        }
    }
}

/// One `sha256sum` line. Names with a backslash or newline use the tool's escaped form: the
/// line starts with `\`, and `\` and newline in the name become `\\` and `\n`.
pub fn sums_line(sha: &str, path: &[u8]) -> Vec<u8> {
    let escape = path.iter().any(|&b| b == b'\\' || b == b'\n');
    let mut line = Vec::with_capacity(path.len() + 70);
    if escape {
        line.push(b'\\');
    }
    line.extend_from_slice(sha.as_bytes());
    line.extend_from_slice(b"  ");
    for &b in path {
        match b {
            b'\\' if escape => line.extend_from_slice(b"\\\\"),
            b'\n' => line.extend_from_slice(b"\\n"),
            _ => line.push(b),
        }
    }
    line.push(b'\n');
    line
}

/// The archive path (bytes, no leading `/`) for an absolute source path.
pub fn archive_path(abs: &Path) -> Vec<u8> {
    let bytes = abs.as_os_str().as_bytes();
    let trimmed = bytes.strip_prefix(b"/").unwrap_or(bytes);
    trimmed.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The manifest a spool writes, read back whole.
    fn spooled_text(spooled: &mut Spooled) -> Vec<u8> {
        let mut text = Vec::new();
        spooled
            .manifest_reader()
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();
        text
    }

    fn entry(path: &[u8], sha: Option<&str>) -> Entry {
        let (path, path_hex) = encode_path(path);
        Entry {
            path,
            path_hex,
            kind: EntryType::File,
            mode: "0644".into(),
            uid: 0,
            gid: 0,
            owner: "root:root".into(),
            size: 3,
            mtime: 1,
            sha256: sha.map(str::to_owned),
            link: None,
            link_hex: None,
            changed: false,
            read_error: None,
        }
    }

    #[test]
    fn spooled_manifest_is_one_valid_json_document() {
        let head = Head {
            format: "vouch-manifest".into(),
            version: 1,
            run_id: "00".repeat(16),
            host: "h".into(),
            name: "n".into(),
            created: "2026-01-01T00:00:00Z".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut w = ManifestWriter::new(head.clone(), dir.path()).unwrap();
        let a = entry(b"etc/a", Some("aa"));
        let b = entry(b"etc/caf\xe9", Some("bb"));
        w.push(&a).unwrap();
        w.push(&b).unwrap();
        let tail = Tail {
            changed: vec!["etc/a".into()],
            ..Tail::default()
        };
        let mut spooled = w.finish(&tail).unwrap();
        let text = spooled_text(&mut spooled);
        assert_eq!(text.len() as u64, spooled.manifest_len);
        let parsed: Manifest = serde_json::from_slice(&text).unwrap();
        assert_eq!(parsed.head, head);
        assert_eq!(parsed.entries, vec![a.clone(), b.clone()]);
        assert_eq!(parsed.tail, tail);
        assert_eq!(parsed.entries[1].path_bytes(), b"etc/caf\xe9");
        let again: Vec<Entry> = spooled.entries().unwrap().map(Result::unwrap).collect();
        assert_eq!(again, vec![a, b]);
        let mut sums = Vec::new();
        spooled
            .sums_reader()
            .unwrap()
            .read_to_end(&mut sums)
            .unwrap();
        assert_eq!(sums, b"aa  etc/a\nbb  etc/caf\xe9\n");
    }

    #[test]
    fn empty_manifest_is_valid_json() {
        let head = Head {
            format: "vouch-manifest".into(),
            version: 1,
            run_id: String::new(),
            host: String::new(),
            name: String::new(),
            created: String::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let w = ManifestWriter::new(head, dir.path()).unwrap();
        let mut spooled = w.finish(&Tail::default()).unwrap();
        let text = spooled_text(&mut spooled);
        let parsed: Manifest = serde_json::from_slice(&text).unwrap();
        assert!(parsed.entries.is_empty());
    }

    /// A manifest of `n` entries as vouch writes it (one with a path that is not UTF-8, one
    /// hard link), its tail listing a dump, and its text.
    fn written(n: usize) -> (Manifest, Vec<u8>) {
        let head = Head {
            format: "vouch-manifest".into(),
            version: 1,
            run_id: "ab".repeat(16),
            host: "h".into(),
            name: "n".into(),
            created: "2026-01-01T00:00:00Z".into(),
        };
        let mut entries: Vec<Entry> = (0..n)
            .map(|i| entry(format!("srv/f{i}").as_bytes(), Some(&format!("{i:064x}"))))
            .collect();
        entries.push(entry(b"srv/caf\xe9", Some("cc")));
        let mut link = entry(b"srv/link", Some("cc"));
        link.kind = EntryType::Hardlink;
        link.link = Some("srv/f0".into());
        entries.push(link);
        let tail = Tail {
            changed: vec!["srv/f1".into()],
            dumps: vec![DumpRecord {
                name: "db".into(),
                ..DumpRecord::default()
            }],
            ..Tail::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut w = ManifestWriter::new(head.clone(), dir.path()).unwrap();
        for e in &entries {
            w.push(e).unwrap();
        }
        let mut spooled = w.finish(&tail).unwrap();
        let text = spooled_text(&mut spooled);
        let manifest = Manifest {
            head,
            entries,
            tail,
        };
        (manifest, text)
    }

    fn streamed(text: &[u8]) -> Result<Manifest, StreamError<()>> {
        let mut entries = Vec::new();
        let (head, tail) = stream_manifest(text, |e| {
            entries.push(e);
            Ok(())
        })?;
        Ok(Manifest {
            head,
            entries,
            tail,
        })
    }

    #[test]
    fn streamed_entries_are_the_parsed_ones() {
        let (manifest, text) = written(1000);
        let parsed: Manifest = serde_json::from_slice(&text).unwrap();
        assert_eq!(parsed, manifest);
        assert_eq!(streamed(&text).unwrap(), parsed);
        // Fields in another order are still a manifest (parsing it whole accepts that too).
        let mut value: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let entries = value["entries"].take();
        let object = value.as_object_mut().unwrap();
        object.remove("entries");
        let mut reordered = serde_json::Map::new();
        reordered.insert("entries".into(), entries);
        reordered.extend(object.clone());
        let reordered = serde_json::to_vec(&reordered).unwrap();
        assert_eq!(streamed(&reordered).unwrap(), manifest);
        // Spooled, it is written back in the form vouch writes.
        let dir = tempfile::tempdir().unwrap();
        let (head, tail, mut spooled) = spool_manifest(&reordered[..], dir.path()).unwrap();
        assert_eq!((head, tail), (manifest.head, manifest.tail));
        assert_eq!(spooled.count, manifest.entries.len() as u64);
        let again = spooled_text(&mut spooled);
        assert_eq!(again, text);
    }

    #[test]
    fn what_a_whole_parse_refuses_a_stream_refuses() {
        let (_, text) = written(3);
        let text = String::from_utf8(text).unwrap();
        let truncated = &text[..text.len() - 40];
        let extra = text.replacen("\"owner\":", "\"extra\":1,\"owner\":", 1);
        let no_entries = text.replacen("\"entries\":", "\"entrees\":", 1);
        let twice = text.replacen("\"entries\":[", "\"entries\":[],\"entries\":[", 1);
        let no_host = text.replacen("\"host\":", "\"hast\":", 1);
        let trailing = format!("{text}{{}}");
        for bad in [
            "not json",
            "[]",
            truncated,
            &extra,
            &no_entries,
            &twice,
            &no_host,
            &trailing,
        ] {
            assert!(
                serde_json::from_str::<Manifest>(bad).is_err(),
                "a whole parse took {bad}"
            );
            match streamed(bad.as_bytes()) {
                Err(StreamError::Json(e)) => assert!(!e.is_io(), "{e}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_refused_entry_stops_the_stream() {
        let (_, text) = written(10);
        let mut seen = 0;
        let result = stream_manifest(&text[..], |e| {
            seen += 1;
            if e.path == "srv/f3" {
                Err(e.path)
            } else {
                Ok(())
            }
        });
        assert!(matches!(result, Err(StreamError::Each(p)) if p == "srv/f3"));
        assert_eq!(seen, 4);
    }

    #[test]
    fn sums_lines_escape_like_sha256sum() {
        assert_eq!(sums_line("ab", b"a b"), b"ab  a b\n");
        assert_eq!(sums_line("ab", b"a\nb"), b"\\ab  a\\nb\n");
        assert_eq!(sums_line("ab", b"a\\b"), b"\\ab  a\\\\b\n");
    }
}
