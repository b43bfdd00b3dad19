//! PLACEHOLDER single-threaded gzip writer (replaced by the parallel one).
#![allow(missing_docs)]
use std::io::{self, Write};
pub struct ParallelGzWriter<W: Write>(flate2::write::GzEncoder<W>);
impl<W: Write> ParallelGzWriter<W> {
    pub fn new(inner: W, level: u32, _threads: usize) -> Self {
        ParallelGzWriter(flate2::write::GzEncoder::new(
            inner,
            flate2::Compression::new(level),
        ))
    }
    pub fn finish(self) -> io::Result<W> {
        self.0.finish()
    }
}
impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
pub fn default_threads() -> usize {
    2
}
