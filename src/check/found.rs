//! What a read-back found in an archive, entry by entry, and how that is checked against the
//! manifest.
//!
//! [`Found`] holds the fields of a tar entry that the manifest fixes: path, type, mode, size and
//! link target; [`check_entry`] compares them (and the SHA-256 of the data, when the caller has
//! it) with a manifest entry and names the first difference. [`Order`] enforces that the
//! archive's `.vouch/manifest.json` and `.vouch/SHA256SUMS` close it, in that order.
//!
//! `vouch run` knows its manifest before it reads the archive back, and checks each entry as it
//! is read. `vouch verify` meets the manifest only at the end of the archive; rather than read
//! the archive twice, it writes what it found to a [`FoundSpool`] (a file, so memory does not grow
//! with the number of entries) and checks the records against the manifest once the pass is over.
//! A record is the path (length and bytes), the tar type byte, the mode (or why it does not
//! parse), the size, the link target if any, and the hex SHA-256 of the data.

use crate::pipeline::manifest::{self, Entry, EntryType, MANIFEST_PATH, SUMS_PATH};
use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

/// The fields of one tar entry that the manifest fixes.
pub struct Found<'a> {
    /// The path as the tar header has it (a directory's may end in `/`).
    pub path: &'a [u8],
    /// The tar entry type.
    pub kind: tar::EntryType,
    /// The permission bits (with the type bits, as tar stores them), or why they do not parse.
    pub mode: Result<u32, String>,
    /// The data size the header gives.
    pub size: u64,
    /// The link target, for symbolic and hard links.
    pub link: Option<Cow<'a, [u8]>>,
}

impl<'a> Found<'a> {
    /// What the header of `entry`, whose path is `path`, says.
    pub fn of<R: Read>(entry: &'a tar::Entry<'_, R>, path: &'a [u8]) -> Found<'a> {
        let header = entry.header();
        Found {
            path,
            kind: header.entry_type(),
            mode: header.mode().map_err(|e| e.to_string()),
            size: entry.size(),
            link: entry.link_name_bytes(),
        }
    }
}

/// Checks a tar entry against its manifest entry: path, type, mode, size, link target and,
/// when given, the SHA-256 of its data. The message names the entry and the first difference.
pub fn check_entry(want: &Entry, found: &Found<'_>, digest: Option<&str>) -> Result<(), String> {
    let name = &want.path;
    let path = found.path;
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    if crate::restore::working_name(trimmed) {
        return Err(crate::restore::working_name_refused(
            &String::from_utf8_lossy(trimmed),
        ));
    }
    if want.path_bytes() != trimmed {
        return Err(format!(
            "{}: found where the manifest has {name}",
            String::from_utf8_lossy(path)
        ));
    }
    let ty = found.kind;
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
        .mode
        .as_ref()
        .map_err(|e| format!("{name}: bad mode: {e}"))?;
    if format!("{:04o}", mode & 0o7777) != want.mode {
        return Err(format!("{name}: mode differs from the manifest"));
    }
    if want.kind == EntryType::File {
        if found.size != want.size {
            return Err(format!(
                "{name}: {} bytes in the archive, {} in the manifest",
                found.size, want.size
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
    if matches!(want.kind, EntryType::Symlink | EntryType::Hardlink)
        && found.link.as_deref() != want.link_bytes().as_deref()
    {
        return Err(format!("{name}: link target differs from the manifest"));
    }
    Ok(())
}

/// Where an entry stands in an archive's closing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// An archived entry, to be checked against the manifest.
    Entry,
    /// `.vouch/manifest.json`.
    Manifest,
    /// `.vouch/SHA256SUMS`.
    Sums,
}

/// Tracks the closing files as entries go by: every archived entry first, then the manifest,
/// then the checksum list, then nothing.
#[derive(Debug, Default)]
pub struct Order {
    manifest: bool,
    sums: bool,
}

impl Order {
    /// Where the entry at `path` stands, or why it cannot stand there.
    pub fn place(&mut self, path: &[u8]) -> Result<Place, String> {
        let after = || {
            format!(
                "unexpected entry {} after the manifest",
                String::from_utf8_lossy(path)
            )
        };
        if self.sums {
            return Err(after());
        }
        if path == MANIFEST_PATH.as_bytes() {
            if self.manifest {
                return Err(format!("{MANIFEST_PATH} appears twice"));
            }
            self.manifest = true;
            return Ok(Place::Manifest);
        }
        if path == SUMS_PATH.as_bytes() {
            if !self.manifest {
                return Err(format!("{SUMS_PATH} comes before {MANIFEST_PATH}"));
            }
            self.sums = true;
            return Ok(Place::Sums);
        }
        if self.manifest {
            return Err(after());
        }
        Ok(Place::Entry)
    }

    /// Whether the archive was closed: both closing files seen.
    pub fn closed(&self) -> Result<(), String> {
        if !self.manifest {
            return Err(format!("{MANIFEST_PATH} is missing"));
        }
        if !self.sums {
            return Err(format!("{SUMS_PATH} is missing"));
        }
        Ok(())
    }
}

/// Found entries written one after another to an anonymous file, read back in the same order.
pub struct FoundSpool {
    out: BufWriter<File>,
    count: u64,
}

impl FoundSpool {
    /// A new, empty spool in `dir` (or the system's temporary directory).
    pub fn create(dir: &Path) -> io::Result<FoundSpool> {
        Ok(FoundSpool {
            out: BufWriter::with_capacity(256 << 10, manifest::spool_file(dir)?),
            count: 0,
        })
    }

    /// Entries recorded so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Records `found`, whose data has the hex SHA-256 `digest`.
    pub fn push(&mut self, found: &Found<'_>, digest: &str) -> io::Result<()> {
        let out = &mut self.out;
        put_bytes(out, found.path)?;
        out.write_all(&[found.kind.as_byte()])?;
        match &found.mode {
            Ok(mode) => {
                out.write_all(&[0])?;
                out.write_all(&mode.to_le_bytes())?;
            }
            Err(why) => {
                out.write_all(&[1])?;
                put_bytes(out, why.as_bytes())?;
            }
        }
        out.write_all(&found.size.to_le_bytes())?;
        match &found.link {
            None => out.write_all(&[0])?,
            Some(link) => {
                out.write_all(&[1])?;
                put_bytes(out, link)?;
            }
        }
        put_bytes(out, digest.as_bytes())?;
        self.count += 1;
        Ok(())
    }

    /// The records, from the first.
    pub fn records(self) -> io::Result<Records> {
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok(Records {
            input: BufReader::with_capacity(256 << 10, file),
            left: self.count,
        })
    }
}

fn put_bytes(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a field over 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

/// The records of a [`FoundSpool`], in the order they were pushed.
pub struct Records {
    input: BufReader<File>,
    left: u64,
}

/// One record read back: what [`Found`] borrows, owned.
pub struct Record {
    path: Vec<u8>,
    kind: u8,
    mode: Result<u32, String>,
    size: u64,
    link: Option<Vec<u8>>,
    digest: String,
}

impl Record {
    /// The entry as it was found.
    pub fn found(&self) -> Found<'_> {
        Found {
            path: &self.path,
            kind: tar::EntryType::new(self.kind),
            mode: self.mode.clone(),
            size: self.size,
            link: self.link.as_deref().map(Cow::Borrowed),
        }
    }

    /// The hex SHA-256 of its data.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl Records {
    fn read(&mut self) -> io::Result<Record> {
        let r = &mut self.input;
        let path = get_bytes(r)?;
        let kind = get::<1>(r)?[0];
        let mode = match get::<1>(r)?[0] {
            0 => Ok(u32::from_le_bytes(get(r)?)),
            _ => Err(String::from_utf8_lossy(&get_bytes(r)?).into_owned()),
        };
        let size = u64::from_le_bytes(get(r)?);
        let link = match get::<1>(r)?[0] {
            0 => None,
            _ => Some(get_bytes(r)?),
        };
        let digest = String::from_utf8(get_bytes(r)?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a digest that is not text"))?;
        Ok(Record {
            path,
            kind,
            mode,
            size,
            link,
            digest,
        })
    }
}

impl Iterator for Records {
    type Item = io::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(self.read())
    }
}

fn get<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn get_bytes(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let len = u32::from_le_bytes(get(r)?) as usize;
    let mut b = vec![0u8; len];
    r.read_exact(&mut b)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found<'a>(path: &'a [u8], kind: tar::EntryType, link: Option<&'a [u8]>) -> Found<'a> {
        Found {
            path,
            kind,
            mode: Ok(0o100644),
            size: 5,
            link: link.map(Cow::Borrowed),
        }
    }

    #[test]
    fn records_come_back_as_they_were_pushed() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = FoundSpool::create(dir.path()).unwrap();
        spool
            .push(&found(b"a/b", tar::EntryType::Regular, None), "ab12")
            .unwrap();
        let mut odd = found(b"l\xff", tar::EntryType::Symlink, Some(b"../t\xfe"));
        odd.mode = Err("bad octal".into());
        odd.size = 0;
        spool.push(&odd, "").unwrap();
        assert_eq!(spool.count(), 2);
        let records: Vec<Record> = spool.records().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(records.len(), 2);
        let first = records[0].found();
        assert_eq!(
            (first.path, first.kind, first.mode.clone(), first.size),
            (&b"a/b"[..], tar::EntryType::Regular, Ok(0o100644), 5)
        );
        assert!(first.link.is_none());
        assert_eq!(records[0].digest(), "ab12");
        let second = records[1].found();
        assert_eq!(second.path, b"l\xff");
        assert_eq!(second.kind, tar::EntryType::Symlink);
        assert_eq!(second.mode, Err("bad octal".to_string()));
        assert_eq!(second.link.as_deref(), Some(&b"../t\xfe"[..]));
        assert_eq!(records[1].digest(), "");
    }

    #[test]
    fn the_closing_files_come_last_and_in_order() {
        let mut order = Order::default();
        assert_eq!(order.place(b"etc/x"), Ok(Place::Entry));
        assert_eq!(order.closed(), Err(format!("{MANIFEST_PATH} is missing")));
        assert_eq!(
            Order::default().place(SUMS_PATH.as_bytes()),
            Err(format!("{SUMS_PATH} comes before {MANIFEST_PATH}"))
        );
        assert_eq!(order.place(MANIFEST_PATH.as_bytes()), Ok(Place::Manifest));
        assert_eq!(order.closed(), Err(format!("{SUMS_PATH} is missing")));
        let mut twice = Order::default();
        twice.place(MANIFEST_PATH.as_bytes()).unwrap();
        assert_eq!(
            twice.place(MANIFEST_PATH.as_bytes()),
            Err(format!("{MANIFEST_PATH} appears twice"))
        );
        assert_eq!(
            twice.place(b"etc/y"),
            Err("unexpected entry etc/y after the manifest".to_string())
        );
        assert_eq!(order.place(SUMS_PATH.as_bytes()), Ok(Place::Sums));
        assert_eq!(order.closed(), Ok(()));
        assert_eq!(
            order.place(b"etc/z"),
            Err("unexpected entry etc/z after the manifest".to_string())
        );
    }
}
