//! Standard output that a closed reader cannot turn into a panic.
//!
//! `println!` panics when a write fails, and the first line of `vouch status --json | head -1`
//! is enough for `head` to close the pipe. Every command prints through [`out!`](crate::out)
//! instead: once standard output is closed (`EPIPE`), the rest of the output is dropped in
//! silence and the command ends with its own exit code, as it would have with a reader that
//! read everything. Any other write error is reported once, on standard error.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to standard output has failed: nothing more is written.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `args` to standard output, unless it is closed (see the module doc).
pub fn write(args: fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe {
            log::warn!("cannot write to standard output: {e}; the rest of the output is dropped");
        }
    }
}

/// `println!` for command output: never panics (see [`crate::cli::output`]).
#[macro_export]
macro_rules! out {
    () => {
        $crate::cli::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for command output: never panics (see [`crate::cli::output`]).
#[macro_export]
macro_rules! out_part {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*))
    };
}
