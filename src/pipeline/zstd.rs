//! Zstandard for [`crate::pipeline::compress`]: each chunk becomes one complete zstd frame
//! (RFC 8878) with its content size and a checksum (the low 32 bits of XXH64 of the chunk) in
//! the frame, so `zstd -d`, `tar --zstd` and the `zstd` crate's streaming decoder read the
//! concatenation as one stream and check every frame on the way.
//!
//! **Why 2 MiB chunks ([`ZSTD_CHUNK_SIZE`]).** A frame starts with an empty window, and zstd
//! gains far more from its window than gzip does from its 32 KiB: at level 3 the window is
//! 2 MiB. Measured against one `zstd -3` stream: on a 121 MB tar of `/usr/include`, 1 MiB frames
//! cost +47% (barely better than gzip -6), 2 MiB +21%, 4 MiB +10%; on a 244 MB tar of
//! `/usr/include` and `/usr/share/doc`, 1 MiB +13%, 2 MiB +6.5%, 4 MiB +3.3%. 2 MiB is as far
//! as the memory budget goes (see [`ZSTD_MAX_THREADS`]).
//!
//! **Incompressible data** needs no test of its own: zstd notices by itself and writes raw
//! blocks, at about 1 GB/s per core on random bytes here (level 3 text: about 200 MB/s), so the
//! encoder reports no stored bytes.

use crate::pipeline::compress::ChunkEncoder;
use std::io;

/// The zstd level of `compression = "zstd"`: zstd's own default, about as small as gzip -9 and
/// several times as fast as gzip -6.
pub const ZSTD_LEVEL: i32 = 3;

/// Uncompressed bytes per zstd frame: the level 3 window, which a frame fills completely only
/// from its second half on.
pub const ZSTD_CHUNK_SIZE: usize = 2 << 20;

/// Most zstd workers one writer starts. One worker compresses text at about 200 MB/s, so two
/// already outrun the thread that feeds them (reading, hashing, encrypting); and with
/// `threads + 1` chunks in flight ([`Codec::spare_chunks`]), each holding its input and an
/// output that is as large for incompressible data, two workers keep the writer's buffers at
/// 14 MiB at most (3 in flight, 4 MiB each, plus the 2 MiB chunk being filled) in a program
/// that must stay under 32 MiB. Profiled with heaptrack on the bench's real corpus, the heap
/// peaks at 24 MiB with two spare chunks: 10.5 MiB of chunk inputs, 8.4 MiB of outputs, 2.6 MiB
/// for the two compressors' contexts, 2 MiB for the walk; the mapped binary and libraries add
/// 7 MiB to the resident set. With one spare the whole run peaks at 29-30 MiB (31-32 with two).
/// 1 MiB frames would cost as little as gzip but compress barely better than gzip.
///
/// [`Codec::spare_chunks`]: crate::pipeline::compress::Codec::spare_chunks
pub const ZSTD_MAX_THREADS: usize = 2;

/// The largest window a frame may ask of the decoder (`2^23`, 8 MiB): vouch's frames need
/// `2^21` at most, and the cap keeps a damaged or hostile frame from claiming 128 MiB.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Turns one chunk into one zstd frame.
pub(crate) struct FrameEncoder {
    compressor: zstd::bulk::Compressor<'static>,
}

impl FrameEncoder {
    /// An encoder at `level` (zstd's range, 1 to 22; 0 is zstd's default, 3).
    pub(crate) fn new(level: i32) -> io::Result<Self> {
        let mut compressor = zstd::bulk::Compressor::new(level)?;
        compressor.include_checksum(true)?;
        compressor.include_contentsize(true)?;
        Ok(FrameEncoder { compressor })
    }
}

impl ChunkEncoder for FrameEncoder {
    fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<u64> {
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(input.len()));
        self.compressor.compress_to_buffer(input, out)?;
        Ok(0)
    }
}

/// An encoder that could not be made (libzstd out of memory): every chunk fails with the
/// reason, so the writer reports it as it reports any failed chunk.
pub(crate) struct Unavailable(pub(crate) String);

impl ChunkEncoder for Unavailable {
    fn encode(&mut self, _input: &[u8], _out: &mut Vec<u8>) -> io::Result<u64> {
        Err(io::Error::other(format!(
            "cannot start the zstd encoder: {}",
            self.0
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::compress::{Codec, ParallelWriter};
    use std::io::{Read, Write};

    /// Text that compresses like source code: lines from a small vocabulary, numbered.
    fn text(len: usize) -> Vec<u8> {
        let words = [
            "let", "value", "match", "Some", "None", "return", "self", "io",
        ];
        let mut out = Vec::with_capacity(len + 64);
        let mut i = 0u64;
        while out.len() < len {
            i += 1;
            let w = |k: u64| words[((i * 7 + k * 13) % words.len() as u64) as usize];
            out.extend_from_slice(format!("{} {} = {}({i});\n", w(1), w(2), w(3)).as_bytes());
        }
        out.truncate(len);
        out
    }

    fn random(len: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.extend_from_slice(&seed.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn compress(data: &[u8], threads: usize) -> Vec<u8> {
        let mut w = ParallelWriter::with_codec(Vec::new(), Codec::Zstd(ZSTD_LEVEL), threads);
        for piece in data.chunks(100_000) {
            w.write_all(piece).unwrap();
        }
        w.try_finish().unwrap();
        assert_eq!(w.bytes_in(), data.len() as u64);
        assert_eq!(w.stored_bytes(), 0);
        w.finish().unwrap()
    }

    fn decompress(frames: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(frames)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// The frames of `data` one by one: each frame's compressed size from its own header.
    fn frames(mut data: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = zstd::zstd_safe::find_frame_compressed_size(data).unwrap();
            out.push(&data[..n]);
            data = &data[n..];
        }
        out
    }

    #[test]
    fn text_and_random_round_trip_through_the_crate() {
        let mut data = text(ZSTD_CHUNK_SIZE + 300_000);
        data.extend(random(ZSTD_CHUNK_SIZE, 7));
        data.extend(text(12_345));
        let out = compress(&data, 2);
        assert_eq!(decompress(&out), data);
        assert!(out.len() < data.len(), "{} >= {}", out.len(), data.len());
    }

    #[test]
    fn empty_input_is_one_empty_frame() {
        let out = compress(&[], 2);
        assert_eq!(frames(&out).len(), 1);
        assert_eq!(decompress(&out), b"");
        // Content size 0 and a checksum, so even an empty frame is checked.
        let size = zstd::zstd_safe::get_frame_content_size(&out).unwrap();
        assert_eq!(size, Some(0));
    }

    #[test]
    fn every_chunk_is_an_independent_frame_with_size_and_checksum() {
        let data = text(3 * ZSTD_CHUNK_SIZE + 1000);
        let out = compress(&data, 2);
        let frames = frames(&out);
        assert_eq!(frames.len(), 4);
        let mut start = 0;
        for frame in &frames {
            let size = zstd::zstd_safe::get_frame_content_size(frame)
                .unwrap()
                .unwrap() as usize;
            // Each frame decodes on its own to its own stretch of the input.
            let alone = zstd::bulk::decompress(frame, ZSTD_CHUNK_SIZE).unwrap();
            assert_eq!(alone.len(), size);
            assert_eq!(alone, data[start..start + size]);
            start += size;
            // The frame header's descriptor: bit 2 is the content checksum flag.
            assert_eq!(frame[4] & 0b100, 0b100, "no checksum in the frame");
        }
        assert_eq!(start, data.len());
        // Frames in another order still decode, each to its own bytes.
        let swapped = [frames[1], frames[0]].concat();
        let expected = [
            &data[ZSTD_CHUNK_SIZE..2 * ZSTD_CHUNK_SIZE],
            &data[..ZSTD_CHUNK_SIZE],
        ]
        .concat();
        assert_eq!(decompress(&swapped), expected);
    }

    #[test]
    fn a_flipped_byte_fails_the_frame_checksum() {
        let data = text(100_000);
        let mut out = compress(&data, 1);
        let last = out.len() - 1;
        out[last] ^= 0x55;
        let mut sink = Vec::new();
        let read = zstd::stream::read::Decoder::new(&out[..])
            .unwrap()
            .read_to_end(&mut sink);
        assert!(read.is_err(), "a damaged checksum decoded");
    }

    #[test]
    fn the_zstd_binary_reads_the_output() {
        let mut data = text(ZSTD_CHUNK_SIZE + 77_777);
        data.extend(random(300_000, 9));
        let out = compress(&data, 2);
        let mut child = std::process::Command::new("zstd")
            .args(["-d", "-c", "-q"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("this test needs the zstd binary (Debian package zstd)");
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || stdin.write_all(&out));
        let output = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(
            output.status.success(),
            "zstd -d failed: {:?}",
            output.status
        );
        assert!(output.stdout == data, "zstd -d returned different bytes");
    }

    #[test]
    fn frames_stay_close_to_one_stream_on_text() {
        let data = text(4 * ZSTD_CHUNK_SIZE);
        let framed = compress(&data, 2).len();
        let single = zstd::bulk::compress(&data, ZSTD_LEVEL).unwrap().len();
        let ratio = framed as f64 / single as f64;
        println!("{framed} vs {single} bytes of one stream: {ratio:.4}");
        assert!(ratio < 1.5, "{framed} vs {single}: {ratio:.4}");
    }
}
