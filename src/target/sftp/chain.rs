//! The files of one archive on an SFTP server, read as one stream: the archive alone, or its
//! parts `NAME.000`, `NAME.001`, ... in order, on one session.
//!
//! Every file is opened (and its size taken) before the first byte is read, so the whole
//! archive is what the server held at that moment: a deletion that starts after the opening
//! cannot cut the pass short (OpenSSH's server keeps an unlinked open file readable), and a
//! size that is not the expected one fails before any byte is handed on. The files are then
//! read one after the other, each with pipelined READs ([`Reader`]).

use super::{Handle, Reader, Session, SftpError};
use std::borrow::BorrowMut;
use std::collections::VecDeque;
use std::io::{self, Read};

/// The files of one archive, all open, read in order as one stream.
pub struct Chain<S: BorrowMut<Session>> {
    /// The file being read.
    current: Option<Reader<S>>,
    /// The files after it, open.
    rest: VecDeque<Handle>,
}

impl<S: BorrowMut<Session>> Chain<S> {
    /// Opens `paths` (at least one) on `session`; together they must be `expected` bytes
    /// when that is given. Fails before any byte is read.
    pub fn open(mut session: S, paths: &[String], expected: Option<u64>) -> io::Result<Chain<S>> {
        let s = session.borrow_mut();
        let mut total = 0u64;
        let mut handles = VecDeque::new();
        let result = (|| {
            for path in paths {
                let h = s.open(path, super::protocol::open::READ, None)?;
                let size = s.fstat(&h);
                handles.push_back(h);
                total += size?.size.unwrap_or(0);
            }
            Ok::<(), SftpError>(())
        })();
        if let Err(e) = result {
            close_all(s, &mut handles);
            return Err(super::store::io_error(e));
        }
        if let Some(expected) = expected.filter(|&e| e != total) {
            close_all(s, &mut handles);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is {total} bytes on the server, {expected} were expected",
                    describe(paths)
                ),
            ));
        }
        let first = handles.pop_front().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "an archive without files")
        })?;
        Ok(Chain {
            current: Some(Reader::opened(session, first)),
            rest: handles,
        })
    }

    /// Closes every file and reports a failed close.
    pub fn close(mut self) -> Result<(), SftpError> {
        let Some(current) = self.current.take() else {
            return Ok(());
        };
        let mut session = current.into_session()?;
        let s = session.borrow_mut();
        while let Some(h) = self.rest.pop_front() {
            s.close(h)?;
        }
        Ok(())
    }
}

/// `PATH`, or `PATH.000 to PATH.NNN`, for messages.
fn describe(paths: &[String]) -> String {
    match paths {
        [] => String::new(),
        [one] => one.clone(),
        [first, .., last] => format!("{first} to {last}"),
    }
}

/// Closes what was opened, ignoring failures (the session may be gone).
fn close_all(s: &mut Session, handles: &mut VecDeque<Handle>) {
    while let Some(h) = handles.pop_front() {
        let _ = s.close(h);
    }
}

impl<S: BorrowMut<Session>> Read for Chain<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(current) = self.current.as_mut() else {
                return Ok(0);
            };
            let n = current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let Some(next) = self.rest.pop_front() else {
                return Ok(0);
            };
            let done = self.current.take().expect("read above");
            let session = done.into_session().map_err(io::Error::other)?;
            self.current = Some(Reader::opened(session, next));
        }
    }
}

impl<S: BorrowMut<Session>> Drop for Chain<S> {
    fn drop(&mut self) {
        if self.rest.is_empty() {
            return;
        }
        if let Some(current) = self.current.take() {
            if let Ok(mut session) = current.into_session() {
                close_all(session.borrow_mut(), &mut self.rest);
            }
        }
    }
}
