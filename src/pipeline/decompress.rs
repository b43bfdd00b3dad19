//! The reading side of [`crate::pipeline::compress`]: the plaintext of an archive (what age
//! decryption yields) decompressed as one stream, by the decoder its name asks for.
//!
//! The archive's name says its compression ([`Compression::of_archive`]); the plaintext's first
//! bytes must agree. A `.tar.zst.age` that holds gzip, or the reverse, or one that holds neither,
//! fails the decoder's first read with an [`io::ErrorKind::InvalidData`] error saying what was
//! found, which the callers report as a damaged archive: a renamed file is not silently read as
//! something it does not claim to be. The check waits for that first read, so that an archive
//! whose very first age chunk is damaged fails where it always did, in the tar reader's first
//! header, with age's own error.
//!
//! The members (frames) vouch writes are decoded whole on every core by
//! [`crate::pipeline::members`]; anything else, such as an archive written before gzip members
//! recorded their size, goes from there to a streaming decoder: flate2's `MultiGzDecoder` for a
//! series of gzip members, the `zstd` crate's for a series of frames, which checks each frame's
//! checksum, fails on a frame cut short, and refuses a frame that asks for a window over
//! [`crate::pipeline::zstd::ZSTD_WINDOW_LOG_MAX`], so a damaged header cannot make it allocate
//! 128 MiB. Memory does not grow with the archive either way.

use crate::config::Compression;
use crate::pipeline::compress::default_threads;
use crate::pipeline::members::{Format, Members};
use std::io::{self, Cursor, Read};

/// The first bytes of every gzip member (RFC 1952: ID1, ID2).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The first bytes of every zstd frame (RFC 8878: 0xFD2FB528, little-endian).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The plaintext again: the bytes [`open`] looked at, then the rest.
type Head<R> = io::Chain<Cursor<Vec<u8>>, R>;

/// A decompressing reader over the plaintext of an archive ([`open`]).
pub struct Decoder<R: Read> {
    state: State<R>,
}

/// Where a [`Decoder`] is: not read yet, decoding one format, or failed for good.
enum State<R: Read> {
    /// Nothing read yet: the plaintext and the compression the name says.
    Unopened(R, Compression),
    /// A series of gzip members or zstd frames.
    Units(Box<Members<Head<R>>>),
    /// The first read failed; every later one fails the same way.
    Failed(io::ErrorKind, String),
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if matches!(self.state, State::Unopened(..)) {
            let gone = State::Failed(io::ErrorKind::Other, "the decoder did not start".into());
            if let State::Unopened(plain, compression) = std::mem::replace(&mut self.state, gone) {
                match start(plain, compression) {
                    Ok(state) => self.state = state,
                    Err(e) => {
                        self.state = State::Failed(e.kind(), e.to_string());
                        return Err(e);
                    }
                }
            }
        }
        match &mut self.state {
            State::Units(d) => d.read(buf),
            State::Failed(kind, message) => Err(io::Error::new(*kind, message.clone())),
            State::Unopened(..) => Err(io::Error::other("the decoder did not start")),
        }
    }
}

/// What the first bytes of a plaintext say it is.
fn sniff(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&ZSTD_MAGIC) {
        Some(Compression::Zstd)
    } else if head.starts_with(&GZIP_MAGIC) {
        Some(Compression::Gzip)
    } else {
        None
    }
}

/// Reads up to `n` bytes from the start of `plain`: fewer only at its end.
fn read_head(plain: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    plain.by_ref().take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Why `head` cannot be the start of `expected` data.
fn wrong_start(head: &[u8], expected: Compression) -> io::Error {
    let what = match sniff(head) {
        Some(found) => format!(
            "its name ({}) says {expected}, but it holds {found} data",
            expected.archive_suffix()
        ),
        None if head.is_empty() => format!("it holds no {expected} data: nothing was encrypted"),
        None => {
            let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "it holds no {expected} data (its first bytes are {})",
                hex.join(" ")
            )
        }
    };
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// The decoder for `plain`, the plaintext of an archive whose name says `compression`. Its first
/// read checks that the first bytes are that format's.
pub fn open<R: Read>(plain: R, compression: Compression) -> Decoder<R> {
    Decoder {
        state: State::Unopened(plain, compression),
    }
}

/// Reads the first bytes of `plain`, checks them against `compression` and starts its decoder.
fn start<R: Read>(mut plain: R, compression: Compression) -> io::Result<State<R>> {
    let head = read_head(&mut plain, ZSTD_MAGIC.len())?;
    if sniff(&head) != Some(compression) {
        return Err(wrong_start(&head, compression));
    }
    let again = Cursor::new(head).chain(plain);
    let format = match compression {
        Compression::Gzip => Format::Gzip,
        Compression::Zstd => Format::Zstd,
    };
    Ok(State::Units(Box::new(Members::new(
        again,
        format,
        default_threads(),
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::compress::{Codec, ParallelWriter};
    use std::io::Write;

    fn data() -> Vec<u8> {
        (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    fn compressed(data: &[u8], compression: Compression) -> Vec<u8> {
        let codec = match compression {
            Compression::Gzip => Codec::Gzip(6),
            Compression::Zstd => Codec::Zstd(3),
        };
        let mut w = ParallelWriter::with_codec(Vec::new(), codec, 2);
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn decode(bytes: &[u8], compression: Compression) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        open(bytes, compression).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn both_formats_round_trip() {
        let data = data();
        for c in Compression::ALL {
            assert_eq!(decode(&compressed(&data, c), c).unwrap(), data, "{c}");
        }
    }

    #[test]
    fn the_other_format_is_named_not_decoded() {
        let data = data();
        let gz = compressed(&data, Compression::Gzip);
        let e = decode(&gz, Compression::Zstd).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string()
                .contains("(.tar.zst.age) says zstd, but it holds gzip data"),
            "{e}"
        );
        let zst = compressed(&data, Compression::Zstd);
        let e = decode(&zst, Compression::Gzip).unwrap_err();
        assert!(
            e.to_string()
                .contains("(.tar.gz.age) says gzip, but it holds zstd data"),
            "{e}"
        );
        // Every later read fails the same way; none returns data or end of stream.
        let mut d = open(&zst[..], Compression::Gzip);
        let mut buf = [0u8; 16];
        let first = d.read(&mut buf).unwrap_err();
        let again = d.read(&mut buf).unwrap_err();
        assert_eq!(first.kind(), again.kind());
        assert_eq!(first.to_string(), again.to_string());
    }

    #[test]
    fn an_error_reading_the_first_bytes_is_passed_on_unchanged() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "decryption error",
                ))
            }
        }
        let e = open(Broken, Compression::Zstd)
            .read(&mut [0u8; 4])
            .unwrap_err();
        assert_eq!(e.to_string(), "decryption error");
    }

    #[test]
    fn empty_short_and_foreign_plaintexts_are_errors() {
        for c in Compression::ALL {
            let e = decode(b"", c).unwrap_err();
            assert!(e.to_string().contains("nothing was encrypted"), "{e}");
            let e = decode(b"\x28", c).unwrap_err();
            assert!(e.to_string().contains("first bytes are 28"), "{e}");
            let e = decode(b"ustar\0 tar", c).unwrap_err();
            assert!(e.to_string().contains("75 73 74 61"), "{e}");
        }
    }

    #[test]
    fn a_cut_or_extended_zstd_stream_is_an_error() {
        let zst = compressed(&data(), Compression::Zstd);
        assert!(decode(&zst[..zst.len() - 3], Compression::Zstd).is_err());
        assert!(decode(&zst[..zst.len() / 2], Compression::Zstd).is_err());
        let mut extended = zst.clone();
        extended.extend_from_slice(b"garbage after the last frame");
        assert!(decode(&extended, Compression::Zstd).is_err());
    }

    #[test]
    fn a_frame_asking_for_a_huge_window_is_refused() {
        // One frame of zeros written with a 128 MiB window and no content size, so the
        // decoder cannot shrink the window to the content.
        let mut c = ::zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        c.window_log(27).unwrap();
        c.include_contentsize(false).unwrap();
        c.write_all(&vec![7u8; 1 << 20]).unwrap();
        let frame = c.finish().unwrap();
        let e = decode(&frame, Compression::Zstd).unwrap_err();
        assert!(e.to_string().contains("memory"), "{e}");
        // The same frame decodes when the cap allows it: it is the window, not damage.
        let mut out = Vec::new();
        let mut d = ::zstd::stream::read::Decoder::new(&frame[..]).unwrap();
        d.window_log_max(27).unwrap();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 1 << 20);
    }
}
