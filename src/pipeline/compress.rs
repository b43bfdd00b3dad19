//! Compression on every core: the archive's tar stream cut into chunks, each compressed by a
//! worker thread into an independent gzip member or zstd frame ([`Codec`]), written to the inner
//! writer in order. This page tells of gzip, the default; [`crate::pipeline::zstd`] of zstd,
//! whose frames share the threads, the ordering and the back-pressure below.
//!
//! **Why independent members.** RFC 1952 lets a gzip file be a series of members, and every
//! reader the design promises (`gzip -dc`, `tar -xzf`, flate2's `MultiGzDecoder`, which
//! `verify` uses) decodes the concatenation as one stream. A member shares nothing with its
//! neighbours, so workers need no state from each other and a chunk's output is final the moment
//! its worker is done. The price is that every member starts with an empty 32 KiB window and
//! fresh Huffman tables.
//!
//! **Why [`CHUNK_SIZE`] is 1 MiB.** That price is paid once per member, roughly 0.5 to 1 KiB of
//! output, so it shrinks with the chunk. Measured on a 95 MB tar of Rust sources against one
//! `gzip -6` stream: 256 KiB chunks cost +1.2%, 512 KiB +0.6%, 1 MiB +0.35%, 4 MiB +0.1%. Memory
//! grows with the chunk: each chunk in flight holds its input and its output. 1 MiB keeps the
//! loss well inside the 1% allowed here, and the buffers of two workers (four chunks in flight
//! plus the one being filled) at 9 MiB at most, in a program that must stay under 32 MiB.
//!
//! **Incompressible data.** Deflate is at its slowest on random or already-compressed bytes
//! (about 55 MB/s per core here, against 90 on source code) and gains nothing. Each chunk is
//! looked at in 64 KiB stretches; a stretch whose byte histogram has an entropy of at least
//! [`INCOMPRESSIBLE_BITS_PER_BYTE`] is copied into stored (level 0) deflate blocks, at memory
//! speed. Consecutive stretches that look compressible are deflated together, so a chunk of text
//! loses no context, and a chunk that mixes text with, say, the start of a JPEG deflates the text
//! and stores the JPEG, each run as a gzip member of its own. The estimate sees byte frequencies
//! only, so high-entropy data that repeats itself within 32 KiB is stored rather than deflated: a
//! small loss in a rare case, never a wrong byte.
//!
//! **Why libdeflate.** A chunk is a whole buffer in memory, which is the one case libdeflate
//! handles (it does not stream) and handles best: at level 6 it is about 2.5 times as fast as
//! zlib-rs and its output slightly smaller. The writer is generic over a [`ChunkEncoder`], chosen
//! by [`Codec`], so every format that can be cut into independent pieces shares the threads, the
//! ordering and the back-pressure below.
//!
//! **Back-pressure.** At most `threads + 2` chunks are in flight (handed to workers and not yet
//! written): one per worker, one finished early waiting for its predecessor, one spare so that a
//! worker finds its next chunk ready (zstd, with larger chunks and faster workers, keeps one
//! spare: [`Codec::spare_chunks`]). The thread that calls `write` fills the next chunk while the
//! workers compress and writes finished members as soon as they are next in order; it blocks only
//! when the limit is reached, until the oldest chunk is written. Buffers are recycled, so memory
//! does not grow with the input.
//!
//! **Errors.** An error from the inner writer is returned unchanged by the `write`, `flush` or
//! `finish` call that met it; every later call returns an error of the same kind (and the same
//! raw OS error). Dropping the writer without [`ParallelWriter::finish`] discards what was not
//! yet written and stops the workers; it never waits for more than the chunks being compressed.
//!
//! **Reading** is [`crate::pipeline::decompress`]: one streaming decoder for the whole
//! concatenation, of either format.

use crate::pipeline::{members, zstd};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Uncompressed bytes per gzip member: 1 MiB costs about 0.35% of size against one gzip stream
/// (256 KiB: 1.2%), while each chunk in flight holds only 1 MiB of input plus its output. Zstd
/// frames are larger ([`crate::pipeline::zstd::ZSTD_CHUNK_SIZE`]): [`Codec::chunk_size`].
pub const CHUNK_SIZE: usize = 1 << 20;

/// Most compression workers one writer starts; with `MAX_THREADS + 2` chunks in flight this
/// bounds the writer's buffers to about 13 MiB, and beyond four cores the thread feeding the
/// writer (reading, hashing, encrypting) is the bottleneck anyway.
pub const MAX_THREADS: usize = 4;

/// A stretch of at least this many bits of byte entropy per byte is stored, not deflated:
/// Huffman coding could save at most 1.25% of it, and random data measures about 7.997.
pub const INCOMPRESSIBLE_BITS_PER_BYTE: f64 = 7.9;

/// The unit of the incompressibility test: one histogram per 64 KiB of input.
const STRETCH_SIZE: usize = 64 * 1024;

/// Stretches shorter than this (the tail of a chunk) are always deflated: their histogram says
/// too little and deflating them costs little.
const MIN_STORED_STRETCH: usize = 4096;

/// The largest payload of one stored deflate block (its LEN field is 16 bits).
const STORED_BLOCK_MAX: usize = 65_535;

/// A stored block's header: the BFINAL/BTYPE byte, LEN and NLEN.
const STORED_BLOCK_HEADER: usize = 5;

/// The gzip member header (with its size field) plus its trailer (CRC-32 and ISIZE, 8 bytes).
const MEMBER_FRAME: usize = members::GZIP_HEADER_LEN + 8;

/// The number of compression workers to use: the CPUs this process may run on, at most four.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_THREADS)
}

/// A compressing writer that encodes chunks ([`Codec::chunk_size`]) on worker threads as
/// independent members or frames.
pub struct ParallelWriter<W: Write> {
    inner: W,
    /// Uncompressed bytes per chunk, from the codec.
    chunk_size: usize,
    /// The chunk being filled by `write`.
    chunk: Vec<u8>,
    workers: Workers,
    results: Receiver<Done>,
    /// Sequence number the next dispatched chunk gets.
    next_dispatch: u64,
    /// Sequence number of the next member to write to `inner`.
    next_write: u64,
    max_in_flight: u64,
    /// Members that finished before their predecessors.
    finished: BTreeMap<u64, Done>,
    spare_inputs: Vec<Vec<u8>>,
    spare_outputs: Vec<Vec<u8>>,
    /// Buffers ever allocated (not taken from the spares): bounded by the in-flight limit.
    allocated: usize,
    bytes_in: u64,
    bytes_out: u64,
    stored_bytes: u64,
    /// Set by the first error; every later call fails the same way.
    failure: Option<Failure>,
    /// Set by `try_finish`: the last member is written, nothing more may be.
    finished_stream: bool,
}

/// One chunk handed to a worker, with the buffer its member is written into.
struct Job {
    seq: u64,
    input: Vec<u8>,
    output: Vec<u8>,
}

/// A worker's answer for one chunk: the member (or why there is none) and both buffers back.
struct Done {
    seq: u64,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Uncompressed bytes of the chunk that went into stored blocks.
    result: io::Result<u64>,
}

/// What an error looked like, to fail every call after the first one the same way.
struct Failure {
    kind: io::ErrorKind,
    raw_os_error: Option<i32>,
    message: String,
}

impl Failure {
    fn of(error: &io::Error) -> Self {
        Failure {
            kind: error.kind(),
            raw_os_error: error.raw_os_error(),
            message: error.to_string(),
        }
    }

    fn to_error(&self) -> io::Error {
        match self.raw_os_error {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(
                self.kind,
                format!("compression writer failed earlier: {}", self.message),
            ),
        }
    }
}

/// The worker threads; dropping this stops and joins them.
struct Workers {
    jobs: Option<SyncSender<Job>>,
    handles: Vec<JoinHandle<()>>,
    /// Tells workers to skip queued chunks nobody will write.
    cancel: Arc<AtomicBool>,
}

impl Workers {
    /// Stops taking chunks and waits for each worker to finish the one it holds.
    fn stop(&mut self) -> io::Result<()> {
        self.jobs = None;
        let mut panicked = false;
        for handle in self.handles.drain(..) {
            panicked |= handle.join().is_err();
        }
        if panicked {
            return Err(io::Error::other("a compression worker thread panicked"));
        }
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        let _ = self.stop();
    }
}

impl<W: Write> ParallelWriter<W> {
    /// Starts `threads` workers (clamped to `1..=MAX_THREADS`) writing gzip at `level` (0-9).
    pub fn new(inner: W, level: u32, threads: usize) -> Self {
        Self::with_codec(inner, Codec::Gzip(level.min(9)), threads)
    }

    /// Starts `threads` workers (clamped to `1..=`[`Codec::max_threads`]) encoding chunks
    /// with `codec`.
    pub fn with_codec(inner: W, codec: Codec, threads: usize) -> Self {
        let threads = threads.clamp(1, codec.max_threads());
        let max_in_flight = threads + codec.spare_chunks();
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(max_in_flight);
        let (done_tx, done_rx) = mpsc::sync_channel::<Done>(max_in_flight);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let cancel = Arc::new(AtomicBool::new(false));
        let handles = (0..threads)
            .map(|i| {
                let jobs = Arc::clone(&job_rx);
                let done = done_tx.clone();
                let cancel = Arc::clone(&cancel);
                std::thread::Builder::new()
                    .name(format!("vouch-compress-{i}"))
                    .spawn(move || compress_chunks(&jobs, &done, &cancel, codec))
            })
            // A thread that cannot be spawned leaves fewer workers; none at all is reported
            // by the first write.
            .filter_map(Result::ok)
            .collect();
        ParallelWriter {
            inner,
            chunk_size: codec.chunk_size(),
            chunk: Vec::new(),
            workers: Workers {
                jobs: Some(job_tx),
                handles,
                cancel,
            },
            results: done_rx,
            next_dispatch: 0,
            next_write: 0,
            max_in_flight: max_in_flight as u64,
            finished: BTreeMap::new(),
            spare_inputs: Vec::new(),
            spare_outputs: Vec::new(),
            allocated: 0,
            bytes_in: 0,
            bytes_out: 0,
            stored_bytes: 0,
            failure: None,
            finished_stream: false,
        }
    }

    /// Uncompressed bytes accepted so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Compressed bytes written to the inner writer so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// Uncompressed bytes written so far as stored blocks, because they looked incompressible.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// Compresses and writes everything, stops the workers and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.try_finish()?;
        self.workers.stop()?;
        let ParallelWriter { inner, .. } = self;
        Ok(inner)
    }

    /// Writes everything and flushes the inner writer but keeps it, so the counters are final.
    pub fn try_finish(&mut self) -> io::Result<()> {
        self.check()?;
        if !self.finished_stream {
            // An empty input still becomes one (empty) member: a zero-byte file is not gzip.
            if !self.chunk.is_empty() || self.next_dispatch == 0 {
                self.dispatch()?;
            }
            self.write_until(self.next_dispatch)?;
            self.finished_stream = true;
        }
        self.inner.flush().map_err(|e| self.fail(e))
    }

    /// Returns the recorded failure, if any, as an error.
    fn check(&self) -> io::Result<()> {
        match &self.failure {
            Some(failure) => Err(failure.to_error()),
            None => Ok(()),
        }
    }

    /// Records `error` as the writer's failure, cancels queued work and hands the error back.
    fn fail(&mut self, error: io::Error) -> io::Error {
        if self.failure.is_none() {
            self.failure = Some(Failure::of(&error));
        }
        self.workers.cancel.store(true, Ordering::Relaxed);
        error
    }

    /// Hands the current chunk to a worker, after waiting for room under the in-flight limit,
    /// then writes whatever members are ready.
    fn dispatch(&mut self) -> io::Result<()> {
        if self.next_dispatch - self.next_write >= self.max_in_flight {
            self.write_until(self.next_dispatch + 1 - self.max_in_flight)?;
        }
        let input = std::mem::take(&mut self.chunk);
        let output = self.spare_output();
        let job = Job {
            seq: self.next_dispatch,
            input,
            output,
        };
        let sent = match &self.workers.jobs {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            let error = io::Error::other("the compression worker threads are gone");
            return Err(self.fail(error));
        }
        self.next_dispatch += 1;
        self.write_ready()
    }

    /// Blocks until every member before sequence number `end` is written.
    fn write_until(&mut self, end: u64) -> io::Result<()> {
        while self.next_write < end {
            self.write_in_order()?;
            if self.next_write >= end {
                break;
            }
            match self.results.recv() {
                Ok(done) => {
                    self.finished.insert(done.seq, done);
                }
                Err(_) => {
                    let error =
                        io::Error::other("the compression worker threads stopped unexpectedly");
                    return Err(self.fail(error));
                }
            }
        }
        Ok(())
    }

    /// Writes the members that are finished and next in order, without blocking on workers.
    fn write_ready(&mut self) -> io::Result<()> {
        loop {
            match self.results.try_recv() {
                Ok(done) => {
                    self.finished.insert(done.seq, done);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if self.next_write == self.next_dispatch {
                        break;
                    }
                    let error =
                        io::Error::other("the compression worker threads stopped unexpectedly");
                    return Err(self.fail(error));
                }
            }
        }
        self.write_in_order()
    }

    /// Writes finished members to the inner writer for as long as the next one is there.
    fn write_in_order(&mut self) -> io::Result<()> {
        while let Some(done) = self.finished.remove(&self.next_write) {
            let Done {
                mut input,
                mut output,
                result,
                ..
            } = done;
            let stored = result.map_err(|e| self.fail(e))?;
            self.inner.write_all(&output).map_err(|e| self.fail(e))?;
            self.next_write += 1;
            self.bytes_out += output.len() as u64;
            self.stored_bytes += stored;
            input.clear();
            output.clear();
            self.spare_inputs.push(input);
            self.spare_outputs.push(output);
        }
        Ok(())
    }

    fn spare_input(&mut self) -> Vec<u8> {
        let size = self.chunk_size;
        self.spare_inputs.pop().unwrap_or_else(|| {
            self.allocated += 1;
            Vec::with_capacity(size)
        })
    }

    fn spare_output(&mut self) -> Vec<u8> {
        self.spare_outputs.pop().unwrap_or_else(|| {
            self.allocated += 1;
            Vec::new()
        })
    }
}

impl<W: Write> Write for ParallelWriter<W> {
    /// Takes up to the rest of the current chunk; hands a full chunk to the workers first.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        if self.finished_stream {
            return Err(io::Error::other(
                "write to a compressed stream after try_finish",
            ));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.chunk.len() >= self.chunk_size {
            self.dispatch()?;
        }
        if self.chunk.capacity() == 0 {
            self.chunk = self.spare_input();
        }
        let n = buf.len().min(self.chunk_size - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        self.bytes_in += n as u64;
        Ok(n)
    }

    /// Ends the current member early, writes every member and flushes the inner writer.
    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        if !self.chunk.is_empty() {
            self.dispatch()?;
        }
        self.write_until(self.next_dispatch)?;
        self.inner.flush().map_err(|e| self.fail(e))
    }
}

/// A worker's loop: takes chunks until the writer goes away, answers each with its member.
fn compress_chunks(
    jobs: &Mutex<Receiver<Job>>,
    done: &SyncSender<Done>,
    cancel: &AtomicBool,
    codec: Codec,
) {
    let mut encoder = codec.encoder();
    loop {
        let job = match jobs.lock() {
            Ok(jobs) => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let Job {
            seq,
            input,
            mut output,
        } = job;
        let result = catch_unwind(AssertUnwindSafe(|| encoder.encode(&input, &mut output)));
        let (result, panicked) = match result {
            Ok(result) => (result, false),
            Err(_) => (
                Err(io::Error::other(
                    "a compression worker panicked compressing a chunk",
                )),
                true,
            ),
        };
        let answer = Done {
            seq,
            input,
            output,
            result,
        };
        if done.send(answer).is_err() || panicked {
            return;
        }
    }
}

/// How a worker turns one chunk into a self-contained piece of the output stream: a piece that
/// decodes without its neighbours, so chunks can be encoded in any order and concatenated.
pub trait ChunkEncoder: Send {
    /// Writes the encoded chunk into `out` (cleared first); returns how many input bytes were
    /// stored as they are because they looked incompressible.
    fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<u64>;
}

/// The format a [`ParallelWriter`] writes, and its level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Gzip members (RFC 1952) at a level from 0 (store) to 9.
    Gzip(u32),
    /// Zstandard frames (RFC 8878) at a zstd level, 1 to 22 ([`crate::pipeline::zstd`]).
    Zstd(i32),
}

impl Codec {
    /// A fresh encoder for one worker.
    fn encoder(self) -> Box<dyn ChunkEncoder> {
        match self {
            Codec::Gzip(level) => Box::new(MemberEncoder::new(level)),
            Codec::Zstd(level) => match zstd::FrameEncoder::new(level) {
                Ok(encoder) => Box::new(encoder),
                Err(e) => Box::new(zstd::Unavailable(e.to_string())),
            },
        }
    }

    /// Uncompressed bytes per chunk: [`CHUNK_SIZE`] for gzip, whose 32 KiB window gains
    /// nothing from more, [`zstd::ZSTD_CHUNK_SIZE`] for zstd, whose 2 MiB window does.
    pub fn chunk_size(self) -> usize {
        match self {
            Codec::Gzip(_) => CHUNK_SIZE,
            Codec::Zstd(_) => zstd::ZSTD_CHUNK_SIZE,
        }
    }

    /// Chunks in flight beyond one per worker: two for gzip (one finished early, one ready
    /// for the next free worker); one for zstd, whose chunks are twice as large and whose
    /// workers outrun the thread feeding them, so a second spare buys no speed (measured: the
    /// same wall time within noise, 1.5 MiB less peak RSS on the real corpus).
    pub fn spare_chunks(self) -> usize {
        match self {
            Codec::Gzip(_) => 2,
            Codec::Zstd(_) => 1,
        }
    }

    /// Most workers a writer starts with this codec: [`MAX_THREADS`] for gzip,
    /// [`zstd::ZSTD_MAX_THREADS`] for zstd, whose larger chunks would otherwise hold twice the
    /// memory, and which is fast enough with fewer.
    pub fn max_threads(self) -> usize {
        match self {
            Codec::Gzip(_) => MAX_THREADS,
            Codec::Zstd(_) => zstd::ZSTD_MAX_THREADS,
        }
    }
}

/// Turns one chunk into gzip members: one per run of stretches that all look compressible (deflated
/// by libdeflate, which works on whole buffers and is about 2.5 times as fast as zlib at the same
/// level and size) or all incompressible (stored). A chunk is usually one run, so one member.
struct MemberEncoder {
    level: u32,
    deflate: libdeflater::Compressor,
}

impl MemberEncoder {
    fn new(level: u32) -> Self {
        // libdeflate's levels 1-9 follow zlib's; 0 is handled here as stored members.
        let lvl = libdeflater::CompressionLvl::new(level.clamp(1, 9) as i32).unwrap_or_default();
        MemberEncoder {
            level,
            deflate: libdeflater::Compressor::new(lvl),
        }
    }

    /// The member header: no name, no mtime, the level hint gzip sets, OS = Unix, and the extra
    /// field recording the member's size ([`members::SIZE_SUBFIELD`]), zero until
    /// [`MemberEncoder::member`] knows it.
    fn header(&self) -> [u8; members::GZIP_HEADER_LEN] {
        let xfl = match self.level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        let [si1, si2] = members::SIZE_SUBFIELD;
        // FLG = FEXTRA; XLEN = 8: one subfield of four bytes.
        [
            0x1f, 0x8b, 8, 4, 0, 0, 0, 0, xfl, 3, 8, 0, si1, si2, 4, 0, 0, 0, 0, 0,
        ]
    }

    /// Appends one complete member for `run`: deflated, or stored when `stored` is set.
    fn member(&mut self, run: &[u8], stored: bool, out: &mut Vec<u8>) -> io::Result<()> {
        let first = out.len();
        out.extend_from_slice(&self.header());
        if stored {
            put_stored(out, run, true);
        } else {
            let start = out.len();
            let bound = self.deflate.deflate_compress_bound(run.len());
            out.resize(start + bound, 0);
            let n = self
                .deflate
                .deflate_compress(run, &mut out[start..])
                .map_err(|e| io::Error::other(format!("deflate: {e:?}")))?;
            out.truncate(start + n);
        }
        out.extend_from_slice(&libdeflater::crc32(run).to_le_bytes());
        // ISIZE is the length modulo 2^32; a chunk is far below that.
        out.extend_from_slice(&(run.len() as u32).to_le_bytes());
        // A member is at most a chunk plus its framing, far below 2^32.
        let size = (out.len() - first) as u32;
        out[first + 16..first + 20].copy_from_slice(&size.to_le_bytes());
        Ok(())
    }
}

impl ChunkEncoder for MemberEncoder {
    fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<u64> {
        #[cfg(test)]
        if input.starts_with(tests::PANIC_IN_WORKER) {
            panic!("injected panic in a gzip worker");
        }
        out.clear();
        let blocks = input.len() / STORED_BLOCK_MAX + 1;
        out.reserve(MEMBER_FRAME + input.len() + blocks * STORED_BLOCK_HEADER);
        if input.is_empty() {
            self.member(&[], true, out)?;
            return Ok(0);
        }
        let mut stored = 0u64;
        // Runs of stretches that are all compressible or all incompressible.
        let store_all = self.level == 0;
        let mut stretches = input
            .chunks(STRETCH_SIZE)
            .map(|s| (s.len(), store_all || looks_incompressible(s)))
            .peekable();
        let mut start = 0;
        while let Some((len, incompressible)) = stretches.next() {
            let mut end = start + len;
            while let Some(&(len, _)) = stretches.peek().filter(|s| s.1 == incompressible) {
                end += len;
                stretches.next();
            }
            let run = &input[start..end];
            self.member(run, incompressible, out)?;
            if incompressible {
                stored += run.len() as u64;
            }
            start = end;
        }
        Ok(stored)
    }
}

/// Appends `data` as stored deflate blocks; `last` marks the final one (BFINAL). The output so
/// far must end on a byte boundary, which the member header and a sync flush both do.
fn put_stored(out: &mut Vec<u8>, data: &[u8], last: bool) {
    if data.is_empty() {
        if last {
            out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        }
        return;
    }
    let mut blocks = data.chunks(STORED_BLOCK_MAX).peekable();
    while let Some(block) = blocks.next() {
        let is_final = last && blocks.peek().is_none();
        // LEN fits in 16 bits: blocks are at most STORED_BLOCK_MAX bytes.
        let len = block.len() as u16;
        out.push(u8::from(is_final));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
}

/// Whether a stretch looks incompressible: its order-0 byte entropy is at least
/// [`INCOMPRESSIBLE_BITS_PER_BYTE`]. Costs one pass over the bytes, no compression.
fn looks_incompressible(stretch: &[u8]) -> bool {
    if stretch.len() < MIN_STORED_STRETCH {
        return false;
    }
    // Four histograms, so that runs of equal bytes do not stall on one counter.
    let mut counts = [[0u32; 256]; 4];
    let mut quads = stretch.chunks_exact(4);
    for q in &mut quads {
        counts[0][usize::from(q[0])] += 1;
        counts[1][usize::from(q[1])] += 1;
        counts[2][usize::from(q[2])] += 1;
        counts[3][usize::from(q[3])] += 1;
    }
    for &b in quads.remainder() {
        counts[0][usize::from(b)] += 1;
    }
    let n = stretch.len() as f64;
    let bits: f64 = (0..256)
        .map(|i| counts[0][i] + counts[1][i] + counts[2][i] + counts[3][i])
        .filter(|&c| c > 0)
        .map(|c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    bits >= INCOMPRESSIBLE_BITS_PER_BYTE
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;
    use std::io::Read;
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Duration;

    /// A chunk starting with these bytes makes its worker panic.
    pub(super) const PANIC_IN_WORKER: &[u8] = b"\0vouch test: panic in the gzip worker\0";

    /// ENOSPC and EFBIG on Linux.
    const ENOSPC: i32 = 28;
    const EFBIG: i32 = 27;

    /// A deterministic xorshift generator: tests need no crates and repeat exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed | 1);
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&rng.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Log- and source-like lines: timestamps, levels, identifiers from a vocabulary of a few
    /// thousand made-up words with a skewed distribution, numbers and hex ids. Compresses to
    /// about a fifth with gzip -6, like real source code and logs.
    fn text(len: usize, seed: u64) -> Vec<u8> {
        const SYLLABLES: &[&str] = &[
            "ar", "be", "con", "de", "en", "fi", "get", "ha", "in", "jo", "ka", "lo", "man", "ne",
            "or", "pre", "qu", "re", "st", "to", "un", "ve", "wr", "x", "y", "zo", "_",
        ];
        const LEVELS: &[&str] = &["INFO", "DEBUG", "WARN", "ERROR", "TRACE"];
        let mut rng = Rng(seed | 1);
        let vocabulary: Vec<String> = (0..3000)
            .map(|_| {
                (0..1 + rng.below(4))
                    .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                    .collect()
            })
            .collect();
        // Skewed towards the front of the vocabulary, as words are in real text.
        let word = |rng: &mut Rng| {
            let r = rng.below(vocabulary.len());
            vocabulary[r * rng.below(vocabulary.len()) / vocabulary.len()].as_str()
        };
        let mut out = Vec::with_capacity(len + 256);
        let mut clock = 1_700_000_000u64;
        while out.len() < len {
            clock += rng.next() % 5;
            let words: Vec<&str> = (0..2 + rng.below(10)).map(|_| word(&mut rng)).collect();
            let line = if rng.below(3) == 0 {
                let indent = "    ".repeat(rng.below(4));
                format!(
                    "{indent}let {} = {}({});\n",
                    words[0],
                    words[1],
                    words[1..].join(", ")
                )
            } else {
                format!(
                    "{clock} host{} app[{}]: {} {} id={:08x} took {}ms\n",
                    rng.below(4),
                    1000 + rng.below(50),
                    LEVELS[rng.below(LEVELS.len())],
                    words.join(" "),
                    rng.next() as u32,
                    rng.below(2000),
                )
            };
            out.extend_from_slice(line.as_bytes());
        }
        out.truncate(len);
        out
    }

    /// Compresses `data` in `piece`-sized writes; returns the output and the stored byte count.
    fn compress(data: &[u8], threads: usize, piece: usize) -> (Vec<u8>, u64) {
        let mut gz = ParallelWriter::new(Vec::new(), 6, threads);
        for p in data.chunks(piece.max(1)) {
            gz.write_all(p).unwrap();
        }
        gz.try_finish().unwrap();
        assert_eq!(gz.bytes_in(), data.len() as u64);
        assert_eq!(gz.bytes_out(), gz.inner.len() as u64);
        let stored = gz.stored_bytes();
        let out = gz.finish().unwrap();
        (out, stored)
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    /// Counts gzip members by decoding them one at a time.
    fn members(mut gz: &[u8]) -> usize {
        let mut count = 0;
        while !gz.is_empty() {
            let mut decoder = flate2::bufread::GzDecoder::new(gz);
            io::copy(&mut decoder, &mut io::sink()).unwrap();
            gz = decoder.into_inner();
            count += 1;
        }
        count
    }

    fn single_stream_len(data: &[u8], level: u32) -> usize {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        gz.write_all(data).unwrap();
        gz.finish().unwrap().len()
    }

    /// Runs `f` on its own thread and fails the test if it takes longer than `secs`.
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(Duration::from_secs(secs)) {
            Ok(value) => value,
            Err(RecvTimeoutError::Timeout) => panic!("hung for more than {secs}s"),
            Err(RecvTimeoutError::Disconnected) => panic!("the test thread panicked"),
        }
    }

    /// An inner writer that accepts `limit` bytes and then fails with a raw OS error.
    struct FailAfter {
        written: Vec<u8>,
        limit: usize,
        errno: i32,
    }

    impl Write for FailAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = self.limit - self.written.len();
            if room == 0 {
                return Err(io::Error::from_raw_os_error(self.errno));
            }
            let n = room.min(buf.len());
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Writes `data` through a writer failing after `limit` bytes; returns the first error.
    fn first_error(data: Vec<u8>, limit: usize, errno: i32) -> io::Error {
        within(30, move || {
            let inner = FailAfter {
                written: Vec::new(),
                limit,
                errno,
            };
            let mut gz = ParallelWriter::new(inner, 6, 2);
            for piece in data.chunks(10_000) {
                if let Err(e) = gz.write_all(piece) {
                    // Sticky: the next call fails the same way.
                    let again = gz.write(b"more").unwrap_err();
                    assert_eq!(again.raw_os_error(), Some(errno));
                    assert!(gz.flush().is_err());
                    return e;
                }
            }
            gz.finish().map(|_| ()).unwrap_err()
        })
    }

    #[test]
    fn empty_input_is_one_empty_member() {
        let (gz, stored) = compress(&[], 2, 1);
        assert_eq!(gunzip(&gz), b"");
        assert_eq!(members(&gz), 1);
        assert_eq!(stored, 0);
    }

    #[test]
    fn tiny_input_round_trips() {
        let (gz, _) = compress(b"hello, vouch\n", 2, 3);
        assert_eq!(gunzip(&gz), b"hello, vouch\n");
        assert_eq!(members(&gz), 1);
    }

    #[test]
    fn exact_multiple_of_chunk_size_has_no_empty_member() {
        let data = text(2 * CHUNK_SIZE, 7);
        let (gz, _) = compress(&data, 2, 4096);
        assert_eq!(gunzip(&gz), data);
        assert_eq!(members(&gz), 2);
    }

    #[test]
    fn text_over_several_chunks_round_trips_with_odd_write_sizes() {
        let data = text(3 * CHUNK_SIZE + 12_345, 11);
        let mut rng = Rng(99);
        let mut gz = ParallelWriter::new(Vec::new(), 6, 2);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(150_000)).min(rest.len());
            gz.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        let out = gz.finish().unwrap();
        assert_eq!(gunzip(&out), data);
        assert_eq!(members(&out), 4);
    }

    #[test]
    fn random_bytes_round_trip() {
        let data = random_bytes(2 * CHUNK_SIZE + 777, 3);
        let (gz, _) = compress(&data, 2, 65_536);
        assert_eq!(gunzip(&gz), data);
    }

    #[test]
    fn random_bytes_are_stored_not_deflated() {
        let data = random_bytes(3 * CHUNK_SIZE, 5);
        let (gz, stored) = compress(&data, 2, 65_536);
        assert_eq!(stored, data.len() as u64, "every stretch should be stored");
        // Stored blocks cost 5 bytes per 64 KiB plus the member frame: a little larger, never
        // smaller, and nowhere near what deflate's failed attempt would add.
        let blocks = data.len() / STORED_BLOCK_MAX + 3 * 2;
        let most = data.len() + 3 * MEMBER_FRAME + blocks * STORED_BLOCK_HEADER;
        assert!(gz.len() > data.len(), "{} <= {}", gz.len(), data.len());
        assert!(gz.len() <= most, "{} > {most}", gz.len());
        assert_eq!(gunzip(&gz), data);
    }

    #[test]
    fn mixed_text_and_random_round_trip_and_only_random_is_stored() {
        // Boundaries fall inside chunks and inside stretches, so members mix both kinds.
        let mut data = text(700_000, 1);
        data.extend(random_bytes(1_500_000, 2));
        data.extend(text(300_001, 3));
        data.extend(random_bytes(5_000, 4));
        data.extend(text(1_000_000, 5));
        let (gz, stored) = compress(&data, 2, 30_000);
        assert_eq!(gunzip(&gz), data);
        assert!(stored > 1_300_000, "random part not stored: {stored}");
        assert!(stored <= 1_505_000, "text stored: {stored}");
        // The text still compresses (to about a third): the output is well below the input.
        assert!(gz.len() < 1_505_000 + 2_000_001 / 2, "output {}", gz.len());
    }

    #[test]
    fn gzip_binary_reads_the_output() {
        let mut data = text(CHUNK_SIZE + 100_000, 21);
        data.extend(random_bytes(CHUNK_SIZE / 2, 22));
        data.extend(text(50_000, 23));
        let (gz, _) = compress(&data, 2, 8192);
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("this test needs the gzip binary (Debian package gzip)");
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || stdin.write_all(&gz));
        let output = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(
            output.status.success(),
            "gzip -dc failed: {:?}",
            output.status
        );
        assert!(output.stdout == data, "gzip -dc returned different bytes");
    }

    #[test]
    fn text_size_is_within_one_percent_of_a_single_stream() {
        let data = text(6 * CHUNK_SIZE, 31);
        let (gz, stored) = compress(&data, 2, 65_536);
        let single = single_stream_len(&data, 6);
        assert_eq!(stored, 0);
        let ratio = gz.len() as f64 / single as f64;
        println!("{} vs {single} bytes of one stream: {ratio:.4}", gz.len());
        assert!(ratio <= 1.01, "{} vs {single}: {ratio:.4}", gz.len());
    }

    #[test]
    fn enospc_from_the_inner_writer_surfaces_with_its_errno() {
        let error = first_error(text(8 * CHUNK_SIZE, 41), 100_000, ENOSPC);
        assert_eq!(error.raw_os_error(), Some(ENOSPC));
        assert_eq!(error.kind(), io::Error::from_raw_os_error(ENOSPC).kind());
    }

    #[test]
    fn efbig_at_finish_surfaces_with_its_errno() {
        // Half a chunk is only compressed and written by finish, so finish must report it.
        let error = within(30, || {
            let inner = FailAfter {
                written: Vec::new(),
                limit: 1000,
                errno: EFBIG,
            };
            let mut gz = ParallelWriter::new(inner, 6, 2);
            gz.write_all(&random_bytes(CHUNK_SIZE / 2, 43)).unwrap();
            gz.finish().map(|_| ()).unwrap_err()
        });
        assert_eq!(error.raw_os_error(), Some(EFBIG));
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn error_on_the_very_first_byte_surfaces() {
        let error = first_error(random_bytes(20 * CHUNK_SIZE, 44), 0, ENOSPC);
        assert_eq!(error.raw_os_error(), Some(ENOSPC));
    }

    #[test]
    fn a_panicking_worker_is_an_error_not_a_hang() {
        for threads in [1, 2] {
            let message = within(30, move || {
                let mut gz = ParallelWriter::new(Vec::new(), 6, threads);
                let mut data = PANIC_IN_WORKER.to_vec();
                data.extend(text(6 * CHUNK_SIZE, 52));
                let error = match gz.write_all(&data) {
                    Err(e) => e,
                    Ok(()) => gz.finish().map(|_| ()).unwrap_err(),
                };
                error.to_string()
            });
            assert!(
                message.contains("compression worker"),
                "{threads} threads: {message}"
            );
        }
    }

    #[test]
    fn dropping_without_finish_stops_the_workers() {
        within(30, || {
            let mut gz = ParallelWriter::new(Vec::new(), 6, 2);
            gz.write_all(&text(5 * CHUNK_SIZE + 1, 51)).unwrap();
            drop(gz);
        });
    }

    #[test]
    fn one_thread_works() {
        let mut data = text(2 * CHUNK_SIZE + 3, 61);
        data.extend(random_bytes(CHUNK_SIZE, 62));
        let (gz, stored) = compress(&data, 1, 100_000);
        assert_eq!(gunzip(&gz), data);
        assert!(stored >= (CHUNK_SIZE - STRETCH_SIZE) as u64);
    }

    #[test]
    fn zero_threads_means_one_and_level_zero_stores_everything() {
        let data = text(CHUNK_SIZE + 5, 63);
        let mut gz = ParallelWriter::new(Vec::new(), 0, 0);
        gz.write_all(&data).unwrap();
        assert_eq!(gz.workers.handles.len(), 1);
        gz.try_finish().unwrap();
        assert_eq!(gz.stored_bytes(), data.len() as u64);
        let out = gz.finish().unwrap();
        assert!(out.len() > data.len());
        assert_eq!(gunzip(&out), data);
    }

    #[test]
    fn try_finish_completes_the_counters_and_refuses_more_input() {
        let data = random_bytes(CHUNK_SIZE / 2, 65);
        let mut gz = ParallelWriter::new(Vec::new(), 6, 2);
        gz.write_all(&data).unwrap();
        assert_eq!(gz.bytes_out(), 0, "half a chunk is still being filled");
        gz.try_finish().unwrap();
        assert_eq!(gz.stored_bytes(), data.len() as u64);
        assert_eq!(gz.bytes_out(), gz.inner.len() as u64);
        assert!(gz.write(b"late").is_err());
        gz.try_finish().unwrap();
        assert_eq!(gunzip(&gz.finish().unwrap()), data);
    }

    #[test]
    fn counters_match_what_was_written() {
        let data = text(2 * CHUNK_SIZE + 999, 71);
        let mut gz = ParallelWriter::new(Vec::new(), 6, 2);
        gz.write_all(&data).unwrap();
        gz.flush().unwrap();
        assert_eq!(gz.bytes_in(), data.len() as u64);
        assert_eq!(gz.bytes_out(), gz.inner.len() as u64);
        assert!(gz.bytes_out() > 0 && gz.bytes_out() < gz.bytes_in() / 2);
    }

    #[test]
    fn flush_writes_a_decodable_prefix() {
        let first = text(CHUNK_SIZE / 3, 81);
        let second = text(CHUNK_SIZE, 82);
        let mut gz = ParallelWriter::new(Vec::new(), 6, 2);
        gz.write_all(&first).unwrap();
        gz.flush().unwrap();
        assert_eq!(gunzip(&gz.inner), first);
        gz.write_all(&second).unwrap();
        let out = gz.finish().unwrap();
        assert_eq!(gunzip(&out), [first, second].concat());
    }

    #[test]
    fn buffers_stay_bounded_by_the_in_flight_limit() {
        // An inner writer slower than the workers: they run ahead as far as they are allowed.
        struct Slow(u64);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_millis(30));
                self.0 += buf.len() as u64;
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = random_bytes(CHUNK_SIZE, 91);
        let mut gz = ParallelWriter::new(Slow(0), 6, 2);
        let mut most_in_flight = 0;
        for _ in 0..30 {
            gz.write_all(&data).unwrap();
            most_in_flight = most_in_flight.max(gz.next_dispatch - gz.next_write);
        }
        // Two workers: four chunks in flight, each with an input and an output buffer, and the
        // chunk being filled.
        assert_eq!(
            most_in_flight, 4,
            "the limit was not reached or was exceeded"
        );
        assert!(gz.allocated <= 9, "{} buffers allocated", gz.allocated);
        let member = MEMBER_FRAME + data.len().div_ceil(STORED_BLOCK_MAX) * STORED_BLOCK_HEADER;
        assert_eq!(gz.finish().unwrap().0, 30 * (data.len() + member) as u64);
    }

    #[test]
    fn entropy_estimate_tells_random_from_text_and_runs() {
        assert!(looks_incompressible(&random_bytes(STRETCH_SIZE, 101)));
        assert!(looks_incompressible(&random_bytes(MIN_STORED_STRETCH, 102)));
        assert!(!looks_incompressible(&random_bytes(
            MIN_STORED_STRETCH - 1,
            103
        )));
        assert!(!looks_incompressible(&text(STRETCH_SIZE, 104)));
        assert!(!looks_incompressible(&vec![0u8; STRETCH_SIZE]));
        // Base64-like data (6 bits per byte) still deflates.
        let base64: Vec<u8> = random_bytes(STRETCH_SIZE, 105)
            .iter()
            .map(|b| {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [usize::from(b & 63)]
            })
            .collect();
        assert!(!looks_incompressible(&base64));
    }

    #[test]
    fn zstd_writers_use_their_own_chunk_size_and_thread_limit() {
        let mut w = ParallelWriter::with_codec(Vec::new(), Codec::Zstd(3), 8);
        assert_eq!(w.workers.handles.len(), zstd::ZSTD_MAX_THREADS);
        assert_eq!(w.max_in_flight, zstd::ZSTD_MAX_THREADS as u64 + 1);
        // A write fills one 2 MiB chunk before anything is dispatched.
        let data = text(zstd::ZSTD_CHUNK_SIZE + 10, 111);
        let n = w.write(&data).unwrap();
        assert_eq!(n, zstd::ZSTD_CHUNK_SIZE);
        assert_eq!(w.next_dispatch, 0);
        w.write_all(&data[n..]).unwrap();
        assert_eq!(w.next_dispatch, 1);
        // Gzip keeps its 1 MiB and four workers.
        let g = ParallelWriter::with_codec(Vec::new(), Codec::Gzip(6), 8);
        assert_eq!(g.workers.handles.len(), MAX_THREADS);
        assert_eq!(g.chunk_size, CHUNK_SIZE);
        assert!(!w.finish().unwrap().is_empty());
    }

    #[test]
    fn default_threads_is_within_bounds() {
        let n = default_threads();
        assert!((1..=MAX_THREADS).contains(&n));
    }
}
