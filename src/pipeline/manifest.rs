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

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
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
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        let cap = CLOSING_BASE_CAP.saturating_add(consumed().saturating_mul(CLOSING_RATIO));
        if out.len() as u64 > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{name} holds more than {cap} bytes, far more than an archive of this size can list"
                ),
            ));
        }
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

    /// The entries, in archive order, read back from the spool.
    pub fn entries(&mut self) -> io::Result<EntryIter<'_>> {
        self.entries.seek(SeekFrom::Start(0))?;
        Ok(EntryIter {
            lines: BufReader::new((&self.entries).take(self.entries_len)),
            line: Vec::new(),
        })
    }
}

/// Entries read back from a spool, one line each.
pub struct EntryIter<'a> {
    lines: BufReader<io::Take<&'a File>>,
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
        let mut text = Vec::new();
        spooled
            .manifest_reader()
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();
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
        let mut text = Vec::new();
        spooled
            .manifest_reader()
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();
        let parsed: Manifest = serde_json::from_slice(&text).unwrap();
        assert!(parsed.entries.is_empty());
    }

    #[test]
    fn sums_lines_escape_like_sha256sum() {
        assert_eq!(sums_line("ab", b"a b"), b"ab  a b\n");
        assert_eq!(sums_line("ab", b"a\nb"), b"\\ab  a\\nb\n");
        assert_eq!(sums_line("ab", b"a\\b"), b"\\ab  a\\\\b\n");
    }
}
