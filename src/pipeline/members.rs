//! Decompressing an archive's members on every core: the reading side of the independent gzip
//! members and zstd frames [`crate::pipeline::compress`] writes.
//!
//! **Finding a unit without decoding it.** A deflate stream does not say where it ends, so each
//! gzip member vouch writes carries its own length in the header's extra field (RFC 1952 FEXTRA,
//! subfield `VM`, four bytes: the member's size from its first byte to the end of its trailer),
//! as BGZF does for genomics files; `gzip`, `pigz` and every other reader skip the field. A zstd
//! frame needs nothing added: its header holds the content size and every block header its own
//! length (RFC 8878), so the frame's end is found by walking the block headers.
//!
//! **Decoding.** The thread that reads (the caller of [`Members::read`]) parses each unit's
//! header, reads the whole unit and hands it to a worker, which decodes it as one buffer:
//! libdeflate for gzip (about twice as fast as a streaming inflate, checking the member's CRC-32
//! and length), libzstd's one-shot decoder for zstd (checking the frame's checksum and content
//! size). Outputs are returned in order; at most one unit per worker and [`IN_FLIGHT_SPARE`]
//! more are in flight, each at most [`MAX_UNIT_IN`] in and [`MAX_UNIT_OUT`] out, so memory stays
//! bounded whatever the archive's size.
//!
//! **Anything else streams.** A unit this reader does not recognise (a gzip member without the
//! length, with a file name, or cut short; a zstd frame without a content size, with a
//! dictionary, or larger than the caps; skippable frames; trailing garbage) is handed, with the
//! bytes already read of it, to the streaming decoder, which reads the rest of the stream the way
//! it always did and reports its damage in its own words. Archives written before the length
//! was recorded are read that way, as a whole.
//!
//! **Errors in order.** A unit that does not decode whole is handed in its turn, after the
//! output of every unit before it, to the streaming decoder with everything after it, which
//! returns what it can decode of it and then its error, in the tar entry the damage lies in. A
//! failure reading the source (age finding a damaged chunk) comes in the middle
//! of a unit: what was read of that unit goes to the streaming decoder, which returns its bytes
//! and then the failure, so the reader meets the damage exactly where a streaming decoder would
//! have, and the tar entry it is reading is the one the damage lies in. Later reads fail the
//! same way.
//!
//! A length that lies cannot hide bytes: either the member is not taken whole (its recorded end
//! gives no plausible output size, and it streams), or the worker checks that its deflate data
//! and trailer end exactly at the recorded end ([`crate::pipeline::inflate`]), and a member
//! that does not is damaged, never skipped data.

use crate::pipeline::inflate::Inflater;
use crate::pipeline::zstd::ZSTD_WINDOW_LOG_MAX;
use flate2::read::MultiGzDecoder;
use std::collections::BTreeMap;
use std::io::{self, BufReader, Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

/// The gzip extra subfield that records a member's size (RFC 1952 section 2.3.1.1).
pub const SIZE_SUBFIELD: [u8; 2] = *b"VM";

/// A gzip member header with the size subfield: 10 fixed bytes, XLEN, and the 8-byte extra
/// field (SI1, SI2, LEN, the size).
pub const GZIP_HEADER_LEN: usize = 20;

/// The largest unit read whole: far above the 1 MiB gzip and 2 MiB zstd chunks vouch writes,
/// even stored or raw, and small enough that the units in flight stay a few MiB.
pub const MAX_UNIT_IN: usize = 4 << 20;

/// The largest output of a unit decoded whole.
pub const MAX_UNIT_OUT: usize = 4 << 20;

/// Units handed to workers and not yet returned in order, beyond one per worker: one, so that
/// a worker finds its next unit ready while the oldest waits to be read. With two workers and
/// 2 MiB zstd frames that is about 12 MiB of buffers at most.
const IN_FLIGHT_SPARE: usize = 1;

/// Most decoding workers one reader starts.
const MAX_WORKERS: usize = 4;

/// The format of the units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Gzip members carrying their size.
    Gzip,
    /// Zstd frames with a content size.
    Zstd,
}

/// The plaintext again: the bytes read of a unit that is not decoded whole, then the rest.
pub type Head<R> = io::Chain<Cursor<Vec<u8>>, R>;

/// The streaming decoder the rest of a stream goes to.
enum Streaming<R: Read> {
    Gzip(Box<MultiGzDecoder<Head<R>>>),
    Zstd(Box<::zstd::stream::read::Decoder<'static, BufReader<Head<R>>>>),
}

impl<R: Read> Streaming<R> {
    fn new(format: Format, head: Vec<u8>, rest: R) -> io::Result<Self> {
        let again = Cursor::new(head).chain(rest);
        Ok(match format {
            Format::Gzip => Streaming::Gzip(Box::new(MultiGzDecoder::new(again))),
            Format::Zstd => {
                let mut d = ::zstd::stream::read::Decoder::new(again)?;
                d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                Streaming::Zstd(Box::new(d))
            }
        })
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Streaming::Gzip(d) => d.read(buf),
            Streaming::Zstd(d) => d.read(buf),
        }
    }
}

/// What the next bytes of the source are.
enum Unit {
    /// The source ended at a unit boundary.
    End,
    /// A whole unit, to be decoded to `out_len` bytes.
    Whole { input: Vec<u8>, out_len: usize },
    /// The start of something to stream: the bytes read of it.
    Other(Vec<u8>),
}

/// A unit handed to a worker.
struct Job {
    seq: u64,
    input: Vec<u8>,
    out: Vec<u8>,
    out_len: usize,
}

/// A worker's answer: the output, or why the unit does not decode.
struct Done {
    seq: u64,
    result: io::Result<Vec<u8>>,
    input: Vec<u8>,
}

/// The decoding threads, started at the first unit.
struct Pool {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(format: Format, workers: usize) -> Pool {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let inbox = std::sync::Arc::new(std::sync::Mutex::new(inbox));
        let (report, done) = mpsc::channel();
        let threads = (0..workers)
            .map(|_| {
                let inbox = inbox.clone();
                let report = report.clone();
                std::thread::spawn(move || work(format, &inbox, &report))
            })
            .collect();
        Pool {
            jobs: Some(jobs),
            done,
            threads,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A worker: decodes jobs until the sending side is gone.
fn work(format: Format, inbox: &std::sync::Mutex<Receiver<Job>>, report: &Sender<Done>) {
    let mut decoder = UnitDecoder::new(format);
    loop {
        let job = match inbox.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut job) = job else { return };
        let decoded = catch_unwind(AssertUnwindSafe(|| {
            decoder.decode(&job.input, &mut job.out, job.out_len)
        }));
        let result = match decoded {
            Ok(r) => r.map(|()| job.out),
            Err(_) => {
                decoder = UnitDecoder::new(format);
                Err(io::Error::other("a decompressing thread panicked"))
            }
        };
        let done = Done {
            seq: job.seq,
            result,
            input: job.input,
        };
        if report.send(done).is_err() {
            return;
        }
    }
}

/// One worker's decoder state.
enum UnitDecoder {
    Gzip(Inflater),
    Zstd(Box<::zstd::bulk::Decompressor<'static>>),
    Broken(String),
}

impl UnitDecoder {
    fn new(format: Format) -> Self {
        match format {
            Format::Gzip => match Inflater::new() {
                Ok(i) => UnitDecoder::Gzip(i),
                Err(e) => UnitDecoder::Broken(e.to_string()),
            },
            Format::Zstd => match ::zstd::bulk::Decompressor::new() {
                Ok(d) => UnitDecoder::Zstd(Box::new(d)),
                Err(e) => UnitDecoder::Broken(e.to_string()),
            },
        }
    }

    /// Decodes `input` into `out`, which must come to exactly `out_len` bytes.
    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, out_len: usize) -> io::Result<()> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        match self {
            UnitDecoder::Gzip(d) => {
                // A recycled buffer keeps its length: only what it lacks is zeroed, and every
                // byte is written over.
                out.resize(out_len, 0);
                d.gunzip_exact(input, out)?;
            }
            UnitDecoder::Zstd(d) => {
                out.clear();
                out.reserve(out_len);
                let n = d
                    .decompress_to_buffer(input, out)
                    .map_err(|e| bad(format!("corrupt zstd frame ({e})")))?;
                if n != out_len {
                    return Err(bad(format!(
                        "corrupt zstd frame ({n} bytes where its header says {out_len})"
                    )));
                }
            }
            UnitDecoder::Broken(e) => return Err(io::Error::other(e.clone())),
        }
        Ok(())
    }
}

/// A decompressing reader over a series of units read from `R`, decoded on worker threads.
pub struct Members<R: Read> {
    format: Format,
    workers: usize,
    source: Option<Sticky<R>>,
    pool: Option<Pool>,
    /// The next unit's number, and the next one to return.
    sent: u64,
    returned: u64,
    /// Finished units that came back before their turn.
    early: BTreeMap<u64, (io::Result<Vec<u8>>, Vec<u8>)>,
    /// What comes after the last unit sent: nothing yet, the end, something to stream, or an
    /// error reading the source.
    after: After,
    current: Vec<u8>,
    pos: usize,
    spare_in: Vec<Vec<u8>>,
    spare_out: Vec<Vec<u8>>,
    streaming: Option<Streaming<Sticky<R>>>,
    failed: Option<(io::ErrorKind, String)>,
}

/// What the source holds after the units sent so far.
enum After {
    More,
    End,
    Other(Vec<u8>),
    Error(io::Error),
}

impl<R: Read> Members<R> {
    /// A reader of the units in `source`, decoded on up to `workers` threads (at least one).
    pub fn new(source: R, format: Format, workers: usize) -> Self {
        Members {
            format,
            workers: workers.clamp(1, MAX_WORKERS),
            source: Some(Sticky {
                inner: source,
                failed: None,
            }),
            pool: None,
            sent: 0,
            returned: 0,
            early: BTreeMap::new(),
            after: After::More,
            current: Vec::new(),
            pos: 0,
            spare_in: Vec::new(),
            spare_out: Vec::new(),
            streaming: None,
            failed: None,
        }
    }

    /// Reads units from the source and hands them out until enough are in flight.
    fn fill(&mut self) {
        let limit = (self.workers + IN_FLIGHT_SPARE) as u64;
        while matches!(self.after, After::More) && self.sent - self.returned < limit {
            let Some(source) = self.source.as_mut() else {
                return;
            };
            let buf = self.spare_in.pop().unwrap_or_default();
            let unit = match self.format {
                Format::Gzip => next_member(source, buf),
                Format::Zstd => next_frame(source, buf),
            };
            match unit {
                // An empty stream is the streaming decoder's to judge, as it always was.
                Ok(Unit::End) if self.sent == 0 => self.after = After::Other(Vec::new()),
                Ok(Unit::End) => self.after = After::End,
                Ok(Unit::Other(head)) => self.after = After::Other(head),
                Ok(Unit::Whole { input, out_len }) => self.send(input, out_len),
                Err(e) => self.after = After::Error(e),
            }
        }
    }

    fn send(&mut self, input: Vec<u8>, out_len: usize) {
        let (format, workers) = (self.format, self.workers);
        let pool = self
            .pool
            .get_or_insert_with(|| Pool::start(format, workers));
        let job = Job {
            seq: self.sent,
            input,
            out: self.spare_out.pop().unwrap_or_default(),
            out_len,
        };
        self.sent += 1;
        let refused = match &pool.jobs {
            Some(jobs) => jobs.send(job).err().map(|e| e.0.input),
            None => Some(Vec::new()),
        };
        if let Some(input) = refused {
            let e = io::Error::other("the decompressing threads stopped");
            self.early.insert(self.sent - 1, (Err(e), input));
        }
    }

    /// Waits until unit `seq` has come back from its worker.
    fn wait_for(&mut self, seq: u64) -> io::Result<()> {
        while !self.early.contains_key(&seq) {
            let Some(pool) = self.pool.as_ref() else {
                return Err(io::Error::other("the decompressing threads stopped"));
            };
            let done = pool
                .done
                .recv()
                .map_err(|_| io::Error::other("a decompressing thread stopped (it panicked)"))?;
            self.early.insert(done.seq, (done.result, done.input));
        }
        Ok(())
    }

    /// The output of the next unit in order, waiting for it; `None` when it did not decode and
    /// the stream goes on from it through the streaming decoder.
    fn next_output(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.wait_for(self.returned)?;
        let Some((result, input)) = self.early.remove(&self.returned) else {
            return Err(io::Error::other("a decompressed unit went missing"));
        };
        self.returned += 1;
        match result {
            Ok(out) => {
                self.spare_in.push(input);
                Ok(Some(out))
            }
            Err(_) => {
                self.stream_from(input)?;
                Ok(None)
            }
        }
    }

    /// Hands a unit that did not decode whole to the streaming decoder, with every unit read
    /// after it and the rest of the source, so that its damage is reported where the streaming
    /// decoder finds it: after the bytes before the damage, in the entry they belong to.
    fn stream_from(&mut self, mut head: Vec<u8>) -> io::Result<()> {
        for seq in self.returned..self.sent {
            self.wait_for(seq)?;
            if let Some((_, input)) = self.early.remove(&seq) {
                head.extend_from_slice(&input);
            }
        }
        self.returned = self.sent;
        if let After::Other(bytes) = std::mem::replace(&mut self.after, After::More) {
            head.extend_from_slice(&bytes);
        }
        self.after = After::Other(head);
        self.after_units().map(|_| ())
    }

    /// Moves to whatever follows the last unit: the streaming decoder, the end, or the error.
    fn after_units(&mut self) -> io::Result<bool> {
        match std::mem::replace(&mut self.after, After::End) {
            After::More => Ok(true),
            After::End => Ok(false),
            After::Error(e) => Err(e),
            After::Other(head) => {
                let source = self
                    .source
                    .take()
                    .ok_or_else(|| io::Error::other("no source"))?;
                self.pool = None;
                self.streaming = Some(Streaming::new(self.format, head, source)?);
                Ok(true)
            }
        }
    }

    fn read_units(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.current.len() {
                let n = buf.len().min(self.current.len() - self.pos);
                buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if let Some(s) = self.streaming.as_mut() {
                return s.read(buf);
            }
            self.fill();
            if self.returned < self.sent {
                if let Some(out) = self.next_output()? {
                    let old = std::mem::replace(&mut self.current, out);
                    self.spare_out.push(old);
                    self.pos = 0;
                }
            } else if !self.after_units()? {
                return Ok(0);
            }
        }
    }
}

impl<R: Read> Read for Members<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, message)) = &self.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        self.read_units(buf).inspect_err(|e| {
            self.failed = Some((e.kind(), e.to_string()));
            self.pool = None;
        })
    }
}

/// The source, which fails every read after its first failure the same way, so that the bytes
/// of a unit read before the failure can go to the streaming decoder and the failure after them.
struct Sticky<R> {
    inner: R,
    failed: Option<(io::ErrorKind, String)>,
}

impl<R> Sticky<R> {
    fn error(&self) -> io::Error {
        match &self.failed {
            Some((kind, message)) => io::Error::new(*kind, message.clone()),
            None => io::Error::other("the archive could not be read"),
        }
    }
}

impl<R: Read> Read for Sticky<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(self.error());
        }
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed = Some((e.kind(), e.to_string()));
            }
        })
    }
}

/// Appends up to `n` bytes of `source` to `buf`; true when all `n` came. A failure of the
/// source counts as fewer: what was read stays in `buf`, and the source fails again.
fn take<R: Read>(source: &mut Sticky<R>, buf: &mut Vec<u8>, n: usize) -> io::Result<bool> {
    match source.by_ref().take(n as u64).read_to_end(buf) {
        Ok(got) => Ok(got == n),
        Err(_) if source.failed.is_some() => Ok(false),
        Err(e) => Err(e),
    }
}

fn le16(b: &[u8]) -> usize {
    usize::from(u16::from_le_bytes([b[0], b[1]]))
}

fn le32(b: &[u8]) -> usize {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// The next gzip member: whole when it records its size, otherwise the bytes read of it.
fn next_member<R: Read>(source: &mut Sticky<R>, mut buf: Vec<u8>) -> io::Result<Unit> {
    buf.clear();
    if !take(source, &mut buf, GZIP_HEADER_LEN)? {
        return Ok(if buf.is_empty() {
            Unit::End
        } else {
            Unit::Other(buf)
        });
    }
    let h = &buf[..];
    let ours = h[..4] == [0x1f, 0x8b, 8, 0x04]
        && le16(&h[10..]) == 8
        && h[12..14] == SIZE_SUBFIELD
        && le16(&h[14..]) == 4;
    let size = le32(&h[16..]);
    if !ours || !(GZIP_HEADER_LEN + 8 + 2..=MAX_UNIT_IN).contains(&size) {
        return Ok(Unit::Other(buf));
    }
    if !take(source, &mut buf, size - GZIP_HEADER_LEN)? {
        return Ok(Unit::Other(buf));
    }
    let out_len = le32(&buf[size - 4..]);
    if out_len > MAX_UNIT_OUT {
        return Ok(Unit::Other(buf));
    }
    Ok(Unit::Whole {
        input: buf,
        out_len,
    })
}

/// The zstd frame magic number, little-endian (RFC 8878 section 3.1.1).
const ZSTD_FRAME_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The largest block a frame may hold (RFC 8878: 128 KiB).
const ZSTD_BLOCK_MAX: usize = 128 << 10;

/// The next zstd frame: whole when its header gives its content size, otherwise the bytes read.
fn next_frame<R: Read>(source: &mut Sticky<R>, mut buf: Vec<u8>) -> io::Result<Unit> {
    buf.clear();
    if !take(source, &mut buf, 5)? {
        return Ok(if buf.is_empty() {
            Unit::End
        } else {
            Unit::Other(buf)
        });
    }
    let Some(out_len) = frame_header(source, &mut buf)? else {
        return Ok(Unit::Other(buf));
    };
    let checksum = buf[4] & 0x04 != 0;
    loop {
        if !take(source, &mut buf, 3)? {
            return Ok(Unit::Other(buf));
        }
        let n = buf.len();
        let block = le32(&[buf[n - 3], buf[n - 2], buf[n - 1], 0]);
        let (last, kind, size) = (block & 1 == 1, (block >> 1) & 3, block >> 3);
        let payload = match kind {
            0 | 2 => size,
            1 => 1,
            _ => return Ok(Unit::Other(buf)),
        };
        if size > ZSTD_BLOCK_MAX || buf.len() + payload > MAX_UNIT_IN {
            return Ok(Unit::Other(buf));
        }
        if !take(source, &mut buf, payload)? {
            return Ok(Unit::Other(buf));
        }
        if last {
            break;
        }
    }
    if checksum && !take(source, &mut buf, 4)? {
        return Ok(Unit::Other(buf));
    }
    Ok(Unit::Whole {
        input: buf,
        out_len,
    })
}

/// Reads the rest of a frame header whose first five bytes (magic and descriptor) are in
/// `buf`; its content size when the frame is one to decode whole.
fn frame_header<R: Read>(source: &mut Sticky<R>, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let fhd = buf[4];
    // Reserved bit set, or a dictionary: the streaming decoder says what is wrong.
    if buf[..4] != ZSTD_FRAME_MAGIC || fhd & 0x08 != 0 || fhd & 0x03 != 0 {
        return Ok(None);
    }
    let single_segment = fhd & 0x20 != 0;
    let fcs_len = match fhd >> 6 {
        0 if single_segment => 1,
        0 => return Ok(None),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let rest = usize::from(!single_segment) + fcs_len;
    if !take(source, buf, rest)? {
        return Ok(None);
    }
    let fcs = &buf[buf.len() - fcs_len..];
    let mut size = [0u8; 8];
    size[..fcs_len].copy_from_slice(fcs);
    let mut content = u64::from_le_bytes(size);
    if fcs_len == 2 {
        content += 256;
    }
    Ok(usize::try_from(content).ok().filter(|&n| n <= MAX_UNIT_OUT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::compress::{Codec, ParallelWriter};
    use std::io::Write;

    fn text(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut x = 12345u64;
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word = ["alpha ", "beta ", "gamma\n", "delta ", "epsilon "][(x % 5) as usize];
            out.extend_from_slice(word.as_bytes());
            if x.is_multiple_of(7) {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }

    fn written(data: &[u8], codec: Codec) -> Vec<u8> {
        let mut w = ParallelWriter::with_codec(Vec::new(), codec, 2);
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn decoded(bytes: &[u8], format: Format, workers: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Members::new(bytes, format, workers).read_to_end(&mut out)?;
        Ok(out)
    }

    /// How many units a stream holds that this reader decodes whole.
    fn whole_units(bytes: &[u8], format: Format) -> usize {
        let mut bytes = Sticky {
            inner: bytes,
            failed: None,
        };
        let mut n = 0;
        loop {
            let unit = match format {
                Format::Gzip => next_member(&mut bytes, Vec::new()),
                Format::Zstd => next_frame(&mut bytes, Vec::new()),
            };
            match unit.unwrap() {
                Unit::Whole { .. } => n += 1,
                Unit::End => return n,
                Unit::Other(_) => panic!("a unit vouch wrote is not decoded whole"),
            }
        }
    }

    #[test]
    fn what_vouch_writes_is_decoded_whole_in_both_formats() {
        let data = text(5_300_000);
        for (codec, format) in [
            (Codec::Gzip(6), Format::Gzip),
            (Codec::Zstd(3), Format::Zstd),
        ] {
            let bytes = written(&data, codec);
            assert!(whole_units(&bytes, format) >= 3, "{format:?}");
            for workers in [1, 2, 3] {
                assert!(
                    decoded(&bytes, format, workers).unwrap() == data,
                    "{format:?}"
                );
            }
        }
    }

    #[test]
    fn stored_members_and_empty_input_are_decoded() {
        let mut data = text(700_000);
        let mut x = 99u64;
        data.extend((0..1_500_000).map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        }));
        let bytes = written(&data, Codec::Gzip(6));
        assert!(decoded(&bytes, Format::Gzip, 2).unwrap() == data);
        let empty = written(b"", Codec::Gzip(6));
        assert_eq!(whole_units(&empty, Format::Gzip), 1);
        assert_eq!(decoded(&empty, Format::Gzip, 2).unwrap(), b"");
    }

    #[test]
    fn foreign_gzip_after_vouch_members_streams_on() {
        let first = text(2_500_000);
        let mut bytes = written(&first, Codec::Gzip(6));
        let second = text(300_000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&second).unwrap();
        bytes.extend(gz.finish().unwrap());
        bytes.extend(written(&first, Codec::Gzip(6)));
        let mut want = first.clone();
        want.extend(&second);
        want.extend(&first);
        assert!(decoded(&bytes, Format::Gzip, 2).unwrap() == want);
    }

    #[test]
    fn zstd_from_the_stock_tool_streams() {
        let data = text(1_000_000);
        let mut e = ::zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.write_all(&data).unwrap();
        let bytes = e.finish().unwrap();
        assert!(decoded(&bytes, Format::Zstd, 2).unwrap() == data);
    }

    /// Overwrites the size subfield of the first member.
    fn with_first_size(bytes: &[u8], size: usize) -> Vec<u8> {
        let mut b = bytes.to_vec();
        b[16..20].copy_from_slice(&(size as u32).to_le_bytes());
        b
    }

    #[test]
    fn a_recorded_size_that_lies_is_damage_or_streams_never_lost_data() {
        let data = text(3_000_000);
        let bytes = written(&data, Codec::Gzip(6));
        let size = le32(&bytes[16..20]);
        // A size whose end holds no plausible trailer: the stream is read as it is.
        for wrong in [size - 1, size + 1, size + 30, 31, MAX_UNIT_IN + 1] {
            match decoded(&with_first_size(&bytes, wrong), Format::Gzip, 2) {
                Ok(out) => assert!(out == data, "size {wrong} of {size}: other data"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{wrong}: {e}"),
            }
        }
        // A size that ends at a copy of the trailer, 8 bytes past the real one: refused.
        let mut forged = with_first_size(&bytes[..size], size + 8);
        forged.extend_from_slice(&bytes[size - 8..size]);
        forged.extend_from_slice(&bytes[size..]);
        // The member does not decode whole, and the streaming decoder, reading the stream as
        // gzip does, meets the copy as a member header that is not one.
        let mut out = Vec::new();
        let e = Members::new(&forged[..], Format::Gzip, 2)
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(e.to_string().contains("header"), "{e}");
        assert!(
            data.starts_with(&out),
            "{} bytes, not the data's start",
            out.len()
        );
    }

    #[test]
    fn cut_and_extended_streams_are_errors_after_the_data_before_them() {
        for (codec, format) in [
            (Codec::Gzip(6), Format::Gzip),
            (Codec::Zstd(3), Format::Zstd),
        ] {
            let data = text(4_500_000);
            let bytes = written(&data, codec);
            for cut in [bytes.len() - 1, bytes.len() - 5, bytes.len() / 2, 3] {
                let mut out = Vec::new();
                let mut r = Members::new(&bytes[..cut], format, 2);
                let e = r.read_to_end(&mut out).unwrap_err();
                assert!(data.starts_with(&out), "{format:?} cut at {cut}");
                let again = r.read(&mut [0u8; 8]).unwrap_err();
                assert_eq!(again.to_string(), e.to_string());
            }
            let mut extended = bytes.clone();
            extended.extend_from_slice(b"garbage after the last unit");
            assert!(decoded(&extended, format, 2).is_err(), "{format:?}");
        }
    }

    #[test]
    fn a_source_error_comes_after_every_byte_before_it() {
        struct FailAt(Cursor<Vec<u8>>, u64);
        impl Read for FailAt {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.position() >= self.1 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "decryption error",
                    ));
                }
                let room = (self.1 - self.0.position()) as usize;
                let n = buf.len().min(room);
                self.0.read(&mut buf[..n])
            }
        }
        let data = text(4_000_000);
        let bytes = written(&data, Codec::Gzip(6));
        let second = 20 + le32(&bytes[16..20]);
        let mut r = Members::new(
            FailAt(Cursor::new(bytes), second as u64 + 100),
            Format::Gzip,
            2,
        );
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.to_string(), "decryption error");
        // The first member whole, then what the 100 bytes read of the second one hold.
        assert!(out.len() > 1 << 20, "{} bytes", out.len());
        assert!(
            data.starts_with(&out),
            "{} bytes, not the data's start",
            out.len()
        );
    }
}
