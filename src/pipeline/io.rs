//! Small `Read`/`Write` adapters that the archive and verify pipelines are built from.
//!
//! Each adapter does one thing (hash, count, fan out) around an inner reader or writer and hands
//! back what it learned from `finish()`.

use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

/// The size of every copy buffer in vouch.
///
/// 256 KiB is large enough that per-call overhead (syscalls, hashing setup) disappears against
/// the work per byte, and small enough that the whole pipeline stays far below its 32 MiB
/// memory budget even with several buffers alive at once.
pub const BUFFER_SIZE: usize = 256 * 1024;

/// A SHA-256 digest as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Passes writes through to `inner`, hashing and counting every byte that was accepted.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Returns the inner writer, the hex SHA-256 and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Passes reads through from `inner`, hashing and counting every byte returned.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reads `inner` to its end (hashing the rest) and returns the hex SHA-256 and byte count.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        let mut buf = vec![0u8; BUFFER_SIZE];
        while self.read(&mut buf)? > 0 {}
        Ok((hex(&self.hasher.finalize()), self.bytes))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// An I/O error from one of the writers behind a [`FanOut`], with the writer's index.
#[derive(Debug)]
pub struct FanOutError {
    /// Which writer failed.
    pub index: usize,
    /// What it said.
    pub error: io::Error,
}

/// Where a [`FanOut`] keeps its first failure; shared, because by the time an error surfaces the
/// fan-out is buried under the compressor and the encryptor.
pub type FailureSlot = Arc<Mutex<Option<FanOutError>>>;

/// Writes every byte to all of its writers: one archive stream, many targets.
///
/// When a writer fails, the failure and its index are kept in a [`FailureSlot`] so that the
/// error can name the target; the write itself returns the same error kind.
pub struct FanOut<W> {
    writers: Vec<W>,
    failure: FailureSlot,
}

impl<W: Write> FanOut<W> {
    /// Fans out to `writers`.
    pub fn new(writers: Vec<W>) -> Self {
        FanOut {
            writers,
            failure: FailureSlot::default(),
        }
    }

    /// The slot that receives the first failure.
    pub fn failure_slot(&self) -> FailureSlot {
        Arc::clone(&self.failure)
    }

    /// The first failure, if any writer failed.
    pub fn take_failure(&mut self) -> Option<FanOutError> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }

    /// Returns the writers.
    pub fn into_inner(self) -> Vec<W> {
        self.writers
    }

    fn fail(&mut self, index: usize, error: io::Error) -> io::Error {
        let copy = match error.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(error.kind(), error.to_string()),
        };
        if let Ok(mut slot) = self.failure.lock() {
            if slot.is_none() {
                *slot = Some(FanOutError { index, error });
            }
        }
        copy
    }
}

impl<W: Write> Write for FanOut<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for i in 0..self.writers.len() {
            if let Err(e) = self.writers[i].write_all(buf) {
                return Err(self.fail(i, e));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        for i in 0..self.writers.len() {
            if let Err(e) = self.writers[i].flush() {
                return Err(self.fail(i, e));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_writer_hashes_what_passed() {
        let mut w = HashWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (inner, digest, n) = w.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(n, 3);
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hash_reader_drains_and_hashes() {
        let r = HashReader::new(&b"abc"[..]);
        let (digest, n) = r.finish().unwrap();
        assert_eq!(n, 3);
        assert!(digest.starts_with("ba7816bf"));
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn fan_out_names_the_failing_writer() {
        let mut ok = Vec::new();
        let mut broken = Broken;
        let writers: Vec<&mut dyn Write> = vec![&mut ok, &mut broken];
        let mut fan = FanOut::new(writers);
        let err = fan.write(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        let failure = fan.take_failure().unwrap();
        assert_eq!(failure.index, 1);
        assert_eq!(failure.error.raw_os_error(), Some(libc::ENOSPC));
    }
}
