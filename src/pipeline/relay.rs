//! A byte stream handed from one thread to another in blocks, so that the stages of a reverse
//! pipeline (decrypting, decompressing, checking) each run on a core of their own.
//!
//! [`channel`] gives a [`Feeder`], which [`Feeder::pump`]s everything one reader yields into
//! blocks, and a [`Relay`], which reads those blocks back in order as an ordinary `Read` and
//! `BufRead`. At most `blocks` blocks are queued, and the reading side hands each finished block
//! back to be filled again, so memory stays at `blocks` blocks plus the two in use, whatever the
//! stream's length.
//!
//! **Errors travel in order.** A read error on the feeding side is queued behind the good
//! blocks before it, so the reading side meets it exactly where a single-threaded reader would
//! have, with the same kind, raw OS error and message. The end of the stream is an explicit
//! message: a feeder that disappears without one (a panic, a thread that could not start) is
//! an error on the reading side, never a short stream that looks complete. Dropping the
//! [`Relay`] stops the feeder at its next block.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

/// What one message carries: a block, the end of the stream, or the error that ended it.
enum Message {
    Block(Vec<u8>),
    End,
    Failed(io::Error),
}

/// The feeding half: fills blocks from a reader and queues them.
pub struct Feeder {
    queue: SyncSender<Message>,
    spares: Receiver<Vec<u8>>,
    block_size: usize,
}

/// The reading half: the blocks in order, as one stream.
pub struct Relay {
    queue: Receiver<Message>,
    spares: Sender<Vec<u8>>,
    block: Vec<u8>,
    pos: usize,
    /// Set once the stream ended (`None`: cleanly) or failed; later reads answer the same.
    finished: Option<Option<(io::ErrorKind, String)>>,
}

/// A relay of at most `blocks` queued blocks of `block_size` bytes.
pub fn channel(blocks: usize, block_size: usize) -> (Feeder, Relay) {
    let (queue_tx, queue_rx) = mpsc::sync_channel(blocks.max(1));
    let (spare_tx, spare_rx) = mpsc::channel();
    let feeder = Feeder {
        queue: queue_tx,
        spares: spare_rx,
        block_size: block_size.max(1),
    };
    let relay = Relay {
        queue: queue_rx,
        spares: spare_tx,
        block: Vec::new(),
        pos: 0,
        finished: None,
    };
    (feeder, relay)
}

impl Feeder {
    /// Reads `from` to its end, queueing what it yields, then the end of the stream (or the
    /// error that stopped it). Returns early, quietly, when the reading side is gone.
    pub fn pump(self, from: &mut impl Read) {
        loop {
            let mut block = self
                .spares
                .try_recv()
                .unwrap_or_else(|_| vec![0; self.block_size]);
            block.resize(self.block_size, 0);
            let (n, error) = fill(from, &mut block);
            block.truncate(n);
            if n > 0 && self.queue.send(Message::Block(block)).is_err() {
                return;
            }
            if n == 0 || error.is_some() {
                let _ = self.queue.send(match error {
                    Some(e) => Message::Failed(e),
                    None => Message::End,
                });
                return;
            }
        }
    }
}

/// Reads into `block` until it is full or `from` ends (0 bytes) or fails; the bytes read
/// before an error are returned with it, to be delivered first.
fn fill(from: &mut impl Read, block: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut n = 0;
    while n < block.len() {
        match from.read(&mut block[n..]) {
            Ok(0) => return (n, None),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

impl Relay {
    /// Takes the next block once the current one is used up; false at the end of the stream.
    fn next_block(&mut self) -> io::Result<bool> {
        while self.pos == self.block.len() {
            if let Some(finished) = &self.finished {
                return match finished {
                    None => Ok(false),
                    Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
                };
            }
            let old = std::mem::take(&mut self.block);
            if old.capacity() > 0 {
                let _ = self.spares.send(old);
            }
            self.pos = 0;
            match self.queue.recv() {
                Ok(Message::Block(block)) => self.block = block,
                Ok(Message::End) => self.finished = Some(None),
                Ok(Message::Failed(e)) => {
                    self.finished = Some(Some((e.kind(), e.to_string())));
                    return Err(e);
                }
                Err(_) => {
                    let message = "the stage feeding this stream stopped before its end";
                    self.finished = Some(Some((io::ErrorKind::Other, message.into())));
                    return Err(io::Error::other(message));
                }
            }
        }
        Ok(true)
    }
}

impl Read for Relay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || !self.next_block()? {
            return Ok(0);
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl BufRead for Relay {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if !self.next_block()? {
            return Ok(&[]);
        }
        Ok(&self.block[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.block.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields `data` in reads of at most `step` bytes, then fails with `error` if given.
    struct Source {
        data: Vec<u8>,
        pos: usize,
        step: usize,
        error: Option<io::ErrorKind>,
    }

    impl Read for Source {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return match self.error {
                    Some(kind) => Err(io::Error::new(kind, "the source broke")),
                    None => Ok(0),
                };
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn source(len: usize, step: usize, error: Option<io::ErrorKind>) -> Source {
        Source {
            data: (0..len).map(|i| (i * 7 % 251) as u8).collect(),
            pos: 0,
            step,
            error,
        }
    }

    #[test]
    fn every_byte_arrives_in_order() {
        let mut from = source(1_000_003, 4093, None);
        let want = from.data.clone();
        let (feeder, mut relay) = channel(2, 65_536);
        let got = std::thread::scope(|s| {
            s.spawn(|| feeder.pump(&mut from));
            let mut got = Vec::new();
            relay.read_to_end(&mut got).map(|_| got)
        });
        assert_eq!(got.unwrap(), want);
    }

    #[test]
    fn an_error_comes_after_the_bytes_before_it() {
        let mut from = source(100_000, 1000, Some(io::ErrorKind::InvalidData));
        let (feeder, mut relay) = channel(2, 30_000);
        let (got, err) = std::thread::scope(|s| {
            s.spawn(|| feeder.pump(&mut from));
            let mut got = Vec::new();
            let mut buf = [0u8; 777];
            loop {
                match relay.read(&mut buf) {
                    Ok(0) => return (got, None),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => return (got, Some(e)),
                }
            }
        });
        assert_eq!(got.len(), 100_000, "every good byte before the error");
        let err = err.expect("the error must reach the reader");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(err.to_string(), "the source broke");
        // And stays: the next read fails the same way.
        let again = relay.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_feeder_that_vanishes_is_an_error_not_an_end() {
        let (feeder, mut relay) = channel(2, 1024);
        drop(feeder);
        let err = relay.read(&mut [0u8; 8]).unwrap_err();
        assert!(err.to_string().contains("stopped before its end"), "{err}");
    }

    #[test]
    fn dropping_the_relay_stops_the_feeder() {
        // An endless source: pump returns only because the reading side went away.
        struct Endless;
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(1);
                Ok(buf.len())
            }
        }
        let (feeder, mut relay) = channel(2, 4096);
        std::thread::scope(|s| {
            let pumping = s.spawn(|| feeder.pump(&mut Endless));
            let mut first = [0u8; 10];
            relay.read_exact(&mut first).unwrap();
            assert_eq!(first, [1; 10]);
            drop(relay);
            pumping.join().unwrap();
        });
    }
}
