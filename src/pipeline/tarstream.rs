//! A POSIX (pax) tar stream writer.
//!
//! vouch writes its own headers rather than using a tar library's builder, because the archive
//! format is a promise to stock tools: every header is a ustar header, preceded by a pax extended
//! header whenever a value does not fit ustar (names over 100 bytes, link targets over 100 bytes,
//! sizes of 8 GiB and more, large ids) or a name is not UTF-8 (then with `hdrcharset=BINARY`,
//! which GNU tar and Python's tarfile honour). The size in a header is always exactly the number
//! of data bytes that follow it, so the stream stays valid whatever happens to the source file
//! while it is read (see [`TarWriter::append_file_data`]).

use std::io::{self, Read, Write};

/// The tar block size.
pub const BLOCK: usize = 512;

/// The largest value of an 11-digit octal ustar number field (size, mtime).
const USTAR_MAX_12: u64 = 0o77777777777;
/// The largest value of a 7-digit octal ustar number field (mode, uid, gid).
const USTAR_MAX_8: u64 = 0o7777777;

/// What kind of tar entry to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file with data.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (target in `link`).
    Symlink,
    /// A hard link to an earlier entry (its path in `link`).
    Hardlink,
}

impl Kind {
    fn typeflag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::Hardlink => b'1',
            Kind::Symlink => b'2',
            Kind::Dir => b'5',
        }
    }
}

/// The metadata of one entry. Paths are raw bytes, relative (no leading `/`).
#[derive(Debug, Clone)]
pub struct Header<'a> {
    /// The entry's path inside the archive.
    pub path: &'a [u8],
    /// The kind of entry.
    pub kind: Kind,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    /// Owner id.
    pub uid: u64,
    /// Group id.
    pub gid: u64,
    /// Owner name, if known.
    pub user: Option<&'a str>,
    /// Group name, if known.
    pub group: Option<&'a str>,
    /// Seconds since the epoch (negative values are clamped to 0).
    pub mtime: i64,
    /// Data bytes that follow (files only).
    pub size: u64,
    /// The symlink target or hard link's original path.
    pub link: Option<&'a [u8]>,
}

impl<'a> Header<'a> {
    /// A root-owned 0644 regular file: vouch's own entries (`.vouch/...`, pax headers).
    pub fn own_file(path: &'a [u8], size: u64, mtime: i64) -> Header<'a> {
        Header {
            path,
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime,
            size,
            link: None,
        }
    }
}

/// How a file's data differed from what its header promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataOutcome {
    /// The source ended early; the rest of the entry is zeros.
    pub shrank: bool,
    /// The source had more data than the header's size; the excess was not archived.
    pub grew: bool,
}

/// Writes tar entries to `W`.
pub struct TarWriter<W: Write> {
    inner: W,
    written: u64,
    buf: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    /// Starts a tar stream on `inner`.
    pub fn new(inner: W) -> Self {
        TarWriter {
            inner,
            written: 0,
            buf: vec![0u8; crate::pipeline::io::BUFFER_SIZE],
        }
    }

    /// Bytes of tar stream written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.put(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the header of an entry (and a pax header before it when needed). For files, the
    /// caller must then write exactly `size` bytes with [`TarWriter::append_file_data`] or
    /// [`TarWriter::append_bytes`].
    pub fn append_header(&mut self, h: &Header<'_>) -> io::Result<()> {
        let mut pax = Vec::new();
        let utf8_path = std::str::from_utf8(h.path).is_ok();
        let utf8_link = h.link.is_none_or(|l| std::str::from_utf8(l).is_ok());
        if !utf8_path || !utf8_link {
            pax_record(&mut pax, "hdrcharset", b"BINARY");
        }
        if h.path.len() > 100 || !utf8_path {
            pax_record(&mut pax, "path", h.path);
        }
        if let Some(link) = h.link {
            if link.len() > 100 || !utf8_link {
                pax_record(&mut pax, "linkpath", link);
            }
        }
        let size = if h.kind == Kind::File { h.size } else { 0 };
        if size > USTAR_MAX_12 {
            pax_record(&mut pax, "size", size.to_string().as_bytes());
        }
        if h.uid > USTAR_MAX_8 {
            pax_record(&mut pax, "uid", h.uid.to_string().as_bytes());
        }
        if h.gid > USTAR_MAX_8 {
            pax_record(&mut pax, "gid", h.gid.to_string().as_bytes());
        }
        for (key, name) in [("uname", h.user), ("gname", h.group)] {
            if let Some(name) = name.filter(|n| n.len() > 31) {
                pax_record(&mut pax, key, name.as_bytes());
            }
        }
        if !pax.is_empty() {
            let mut name = b"PaxHeaders/".to_vec();
            name.extend_from_slice(last_component(h.path));
            let block = ustar_block(&Header::own_file(&name, pax.len() as u64, h.mtime), b'x');
            self.put(&block)?;
            self.put(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let block = ustar_block(h, h.kind.typeflag());
        self.put(&block)
    }

    /// Writes an entry whose data is in memory.
    pub fn append_bytes(&mut self, h: &Header<'_>, data: &[u8]) -> io::Result<()> {
        debug_assert_eq!(h.size, data.len() as u64);
        self.append_header(h)?;
        self.put(data)?;
        self.pad(data.len() as u64)
    }

    /// Copies exactly `size` bytes from `src` as the data of the entry whose header was just
    /// written, passing every byte written to `observe` (for hashing).
    ///
    /// If `src` ends early the rest is filled with zeros; if it has more, the excess is left
    /// unread. Either way the tar stream stays valid, and the outcome says what happened. Read
    /// errors are returned as `Err(Ok(e))` *after* the entry has been completed with zeros, so
    /// the stream stays valid and the caller can record the file as unreadable; write errors are
    /// returned as `Err(Err(e))` and end the stream.
    pub fn append_file_data(
        &mut self,
        src: &mut dyn Read,
        size: u64,
        observe: &mut dyn FnMut(&[u8]),
    ) -> Result<DataOutcome, DataError> {
        let mut outcome = DataOutcome::default();
        let mut left = size;
        let mut read_error = None;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match src.read(&mut self.buf[..want]) {
                Ok(0) => {
                    outcome.shrank = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            };
            observe(&self.buf[..n]);
            self.inner
                .write_all(&self.buf[..n])
                .map_err(DataError::Write)?;
            self.written += n as u64;
            left -= n as u64;
        }
        if left > 0 {
            // Keep the promise the header made: fill the rest with zeros.
            self.buf[..BLOCK].fill(0);
            while left > 0 {
                let n = left.min(BLOCK as u64) as usize;
                let zeros = [0u8; BLOCK];
                observe(&zeros[..n]);
                self.put(&zeros[..n]).map_err(DataError::Write)?;
                left -= n as u64;
            }
        } else if read_error.is_none() {
            let mut probe = [0u8; 1];
            loop {
                match src.read(&mut probe) {
                    Ok(0) => break,
                    Ok(_) => {
                        outcome.grew = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }
        self.pad(size).map_err(DataError::Write)?;
        match read_error {
            Some(e) => Err(DataError::Read(e)),
            None => Ok(outcome),
        }
    }

    /// Writes the two zero blocks that end a tar stream and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[0u8; BLOCK * 2])?;
        Ok(self.inner)
    }
}

/// The largest extended header (pax `x`/`g`, GNU long name `L`/`K`) a reader accepts. vouch
/// writes one only for values that do not fit ustar: a path and a link target of at most
/// PATH_MAX (4 KiB) each, sizes, ids and names, so well under 16 KiB; GNU tar's, with extended
/// attributes and ACLs, stay far below this too.
pub const EXTENDED_HEADER_CAP: u64 = 1 << 20;

/// A reader of a plain tar stream that follows its 512-byte block framing and fails, before a
/// tar parser buffers it whole, on an extended header larger than [`EXTENDED_HEADER_CAP`].
/// A pax `size` record is applied to the entry that follows it, as tar parsers do.
pub struct HeaderCap<R> {
    inner: R,
    /// The header block being read, and how much of it is filled and handed on.
    block: [u8; BLOCK],
    filled: usize,
    handed: usize,
    /// Data bytes (with padding) of the current entry still to pass through.
    data_left: u64,
    /// The data of the current pax header, kept to find a `size` record.
    pax: Option<Vec<u8>>,
    /// A size from a pax header, for the next entry.
    next_size: Option<u64>,
}

impl<R: Read> HeaderCap<R> {
    /// Wraps a plain tar stream.
    pub fn new(inner: R) -> Self {
        HeaderCap {
            inner,
            block: [0; BLOCK],
            filled: 0,
            handed: 0,
            data_left: 0,
            pax: None,
            next_size: None,
        }
    }

    /// The wrapped stream (what follows the tar's end is read through it).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Looks at a full header block: where the entry's data ends, and whether it is too big.
    fn inspect(&mut self) -> io::Result<()> {
        if self.block.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let kind = self.block[156];
        let size = match self.next_size.take() {
            Some(size) if !matches!(kind, b'x' | b'g') => size,
            _ => header_size(&self.block[124..136]),
        };
        if matches!(kind, b'x' | b'g' | b'L' | b'K') {
            if size > EXTENDED_HEADER_CAP {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "an extended (pax) header of {size} bytes, larger than vouch ever writes (at most {EXTENDED_HEADER_CAP})"
                    ),
                ));
            }
            if kind == b'x' {
                self.pax = Some(Vec::with_capacity(size as usize));
            }
        }
        self.data_left = size
            .div_ceil(BLOCK as u64)
            .checked_mul(BLOCK as u64)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an entry of {size} bytes, more than any file can hold"),
                )
            })?;
        if self.data_left == 0 {
            self.pax_done();
        }
        Ok(())
    }

    /// At the end of a pax header's data: its `size` record, if any, for the next entry.
    fn pax_done(&mut self) {
        if let Some(data) = self.pax.take() {
            self.next_size = pax_size(&data);
        }
    }
}

/// A ustar number field: octal digits, or base-256 when the high bit of the first byte is set.
fn header_size(field: &[u8]) -> u64 {
    if field[0] & 0x80 != 0 {
        return field[1..].iter().fold(0u64, |n, &b| {
            n.saturating_mul(256).saturating_add(u64::from(b))
        });
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .filter(|b| (b'0'..=b'7').contains(b))
        .collect();
    u64::from_str_radix(std::str::from_utf8(&text).unwrap_or("0"), 8).unwrap_or(0)
}

/// The `size` record of pax header data.
fn pax_size(data: &[u8]) -> Option<u64> {
    data.split(|&b| b == b'\n').find_map(|rec| {
        let (_, kv) = rec.split_at(rec.iter().position(|&b| b == b' ')? + 1);
        std::str::from_utf8(kv.strip_prefix(b"size=")?)
            .ok()?
            .parse()
            .ok()
    })
}

impl<R: Read> Read for HeaderCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.handed < self.filled {
            let n = (self.filled - self.handed).min(buf.len());
            buf[..n].copy_from_slice(&self.block[self.handed..self.handed + n]);
            self.handed += n;
            return Ok(n);
        }
        if self.data_left > 0 {
            let want = buf
                .len()
                .min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
            let n = self.inner.read(&mut buf[..want])?;
            self.data_left -= n as u64;
            if let Some(pax) = &mut self.pax {
                pax.extend_from_slice(&buf[..n]);
            }
            if self.data_left == 0 {
                self.pax_done();
            }
            return Ok(n);
        }
        // At a header: read the whole block before handing any of it on.
        self.filled = 0;
        self.handed = 0;
        while self.filled < BLOCK {
            let n = self.inner.read(&mut self.block[self.filled..])?;
            if n == 0 {
                break;
            }
            self.filled += n;
        }
        if self.filled == BLOCK {
            self.inspect()?;
        }
        if self.filled == 0 {
            return Ok(0);
        }
        self.read(buf)
    }
}

/// Why copying a file's data into the archive stopped.
#[derive(Debug)]
pub enum DataError {
    /// The source could not be read; the entry was completed with zeros.
    Read(io::Error),
    /// The archive could not be written; the stream is broken.
    Write(io::Error),
}

fn last_component(path: &[u8]) -> &[u8] {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let name = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    &name[..name.len().min(80)]
}

/// Appends one pax record, `"<len> <key>=<value>\n"`, where len counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Writes `value` as zero-padded octal into `field`, leaving the last byte NUL. Values that do
/// not fit are written as the field's maximum; a pax record carries the real value.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let max = (1u64 << (3 * digits as u32)) - 1;
    let s = format!("{:0width$o}", value.min(max), width = digits);
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

fn copy_truncated(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn ustar_block(h: &Header<'_>, typeflag: u8) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let mut path = h.path.to_vec();
    if h.kind == Kind::Dir && !path.ends_with(b"/") && path.len() < 100 {
        path.push(b'/');
    }
    copy_truncated(&mut b[0..100], &path);
    octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    octal(&mut b[108..116], h.uid);
    octal(&mut b[116..124], h.gid);
    octal(
        &mut b[124..136],
        if h.kind == Kind::File { h.size } else { 0 },
    );
    octal(&mut b[136..148], h.mtime.max(0) as u64);
    b[156] = typeflag;
    if let Some(link) = h.link {
        copy_truncated(&mut b[157..257], link);
    }
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if let Some(user) = h.user {
        copy_truncated(&mut b[265..296], user.as_bytes());
    }
    if let Some(group) = h.group {
        copy_truncated(&mut b[297..328], group.as_bytes());
    }
    // Checksum: the sum of all bytes with the checksum field taken as spaces.
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_field_near_the_largest_number_is_an_error_not_an_overflow() {
        // Found by fuzzing the archive reader: a base-256 size of eleven 0xff bytes.
        let mut block = [0u8; BLOCK];
        block[..4].copy_from_slice(b"file");
        block[124] = 0x80;
        block[125..136].fill(0xff);
        block[156] = b'0';
        let mut stream = block.to_vec();
        stream.extend_from_slice(&[0u8; BLOCK * 2]);
        let mut out = Vec::new();
        let e = HeaderCap::new(&stream[..])
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(e.to_string().contains("more than any file can hold"), "{e}");
    }

    fn header<'a>(path: &'a [u8], kind: Kind, size: u64, link: Option<&'a [u8]>) -> Header<'a> {
        Header {
            path,
            kind,
            mode: 0o640,
            uid: 1000,
            gid: 1000,
            user: Some("alice"),
            group: Some("staff"),
            mtime: 1_700_000_000,
            size,
            link,
        }
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for value_len in [0usize, 1, 5, 90, 95, 96, 97, 994, 995, 996, 9990] {
            let mut out = Vec::new();
            pax_record(&mut out, "path", &vec![b'a'; value_len]);
            let space = out.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..space]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value length {value_len}");
        }
    }

    #[test]
    fn entries_read_back_with_the_tar_crate() {
        let long: Vec<u8> = (0..250).map(|i| b'a' + (i % 26) as u8).collect();
        let non_utf8 = b"dir/caf\xe9".to_vec();
        let mut w = TarWriter::new(Vec::new());
        w.append_header(&header(b"dir", Kind::Dir, 0, None))
            .unwrap();
        w.append_bytes(&header(&long, Kind::File, 5, None), b"hello")
            .unwrap();
        w.append_bytes(&header(&non_utf8, Kind::File, 3, None), b"abc")
            .unwrap();
        w.append_header(&header(b"dir/link", Kind::Symlink, 0, Some(&long)))
            .unwrap();
        w.append_header(&header(b"dir/hard", Kind::Hardlink, 0, Some(&non_utf8)))
            .unwrap();
        let data = w.finish().unwrap();
        assert_eq!(data.len() % BLOCK, 0);

        let mut archive = tar::Archive::new(&data[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path_bytes().into_owned();
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            let kind = entry.header().entry_type();
            let mode = entry.header().mode().unwrap();
            let mut body = Vec::new();
            entry.read_to_end(&mut body).unwrap();
            seen.push((path, kind, link, body, mode));
        }
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0].0, b"dir/");
        assert!(seen[0].1.is_dir());
        assert_eq!(seen[1].0, long);
        assert_eq!(seen[1].3, b"hello");
        assert_eq!(seen[1].4, 0o640);
        assert_eq!(seen[2].0, non_utf8);
        assert_eq!(seen[2].3, b"abc");
        assert!(seen[3].1.is_symlink());
        assert_eq!(seen[3].2.as_deref(), Some(&long[..]));
        assert!(seen[4].1.is_hard_link());
        assert_eq!(seen[4].2.as_deref(), Some(&non_utf8[..]));
    }

    #[test]
    fn shrinking_and_growing_sources_keep_the_header_size() {
        let mut w = TarWriter::new(Vec::new());
        let mut hashed = 0usize;
        w.append_header(&header(b"shrank", Kind::File, 10, None))
            .unwrap();
        let out = w
            .append_file_data(&mut &b"abc"[..], 10, &mut |b| hashed += b.len())
            .unwrap();
        assert!(out.shrank && !out.grew);
        assert_eq!(hashed, 10);
        w.append_header(&header(b"grew", Kind::File, 2, None))
            .unwrap();
        let out = w
            .append_file_data(&mut &b"abcdef"[..], 2, &mut |_| {})
            .unwrap();
        assert!(out.grew && !out.shrank);
        let data = w.finish().unwrap();
        let mut archive = tar::Archive::new(&data[..]);
        let bodies: Vec<Vec<u8>> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut body = Vec::new();
                e.unwrap().read_to_end(&mut body).unwrap();
                body
            })
            .collect();
        assert_eq!(bodies, vec![b"abc\0\0\0\0\0\0\0".to_vec(), b"ab".to_vec()]);
    }

    #[test]
    fn checksum_is_valid_for_gnu_tar() {
        let mut w = TarWriter::new(Vec::new());
        w.append_bytes(&header(b"f", Kind::File, 1, None), b"x")
            .unwrap();
        let data = w.finish().unwrap();
        let stored = u32::from_str_radix(std::str::from_utf8(&data[148..154]).unwrap(), 8).unwrap();
        let mut copy = data[..BLOCK].to_vec();
        copy[148..156].fill(b' ');
        assert_eq!(stored, copy.iter().map(|&b| u32::from(b)).sum::<u32>());
    }
}
