//! Progress of a restore on a terminal: one line on stderr per phase (reading the manifest,
//! restoring, moving into place), rewritten at most twice a second. Nothing is shown when
//! stderr is not a terminal or progress was not asked for.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

/// Progress on a terminal: one line on stderr, rewritten at most twice a second.
pub(super) struct Meter {
    /// Whether anything is shown.
    on: bool,
    /// What the restore is doing.
    phase: &'static str,
    /// The amount at the end.
    total: u64,
    /// How an amount is shown: bytes, or a number of entries,
    unit: fn(u64) -> String,
    /// and what follows the total.
    suffix: &'static str,
    /// When the line was last written.
    last: Option<Instant>,
}

impl Meter {
    /// A meter of bytes.
    pub(super) fn new(on: bool, phase: &'static str, total: u64) -> Meter {
        Meter {
            on: on && io::stderr().is_terminal(),
            phase,
            total,
            unit: crate::systemd::sdnotify::human_bytes,
            suffix: "",
            last: None,
        }
    }

    /// A meter of entries.
    pub(super) fn entries(on: bool, phase: &'static str, total: u64) -> Meter {
        Meter {
            unit: |n| n.to_string(),
            suffix: " entries",
            ..Meter::new(on, phase, total)
        }
    }

    /// Shows `done`, unless the line was rewritten less than half a second ago.
    pub(super) fn update(&mut self, done: u64) {
        if !self.on
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        self.show(done);
    }

    /// Rewrites the line with `done`.
    fn show(&mut self, done: u64) {
        self.last = Some(Instant::now());
        let _ = write!(
            io::stderr(),
            "\r{}: {} of {}{}   ",
            self.phase,
            (self.unit)(done),
            (self.unit)(self.total),
            self.suffix
        );
    }

    /// Ends the line, if one was shown.
    pub(super) fn done(&mut self) {
        if self.on && self.last.is_some() {
            let _ = writeln!(io::stderr());
        }
    }

    /// Shows the final figure, then ends the line.
    pub(super) fn finish(&mut self, done: u64) {
        if self.on && self.last.is_some() {
            self.show(done);
        }
        self.done();
    }
}
