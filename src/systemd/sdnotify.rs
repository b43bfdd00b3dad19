//! Telling systemd how a run is going. These functions never fail: without `$NOTIFY_SOCKET`
//! they do nothing, and a failure to notify is logged, not raised.

use std::time::{Duration, Instant};

/// How far each progress message pushes the start timeout out. A run that makes no progress
/// for this long is left to `TimeoutStartSec=`; one that keeps moving is never killed.
pub const EXTEND_BY: Duration = Duration::from_secs(300);

/// The minimum time between two progress notifications.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// The minimum time between two rewrites of the progress line on a terminal.
const TTY_INTERVAL: Duration = Duration::from_millis(500);

/// The variable with which tests shorten [`PROGRESS_INTERVAL`] (milliseconds), so that a few
/// seconds of work show several notifications. Unset outside tests.
pub const TEST_INTERVAL_VAR: &str = "VOUCH_TEST_PROGRESS_MS";

fn progress_interval() -> Duration {
    std::env::var(TEST_INTERVAL_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(PROGRESS_INTERVAL)
}

fn send(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        log::debug!("sd_notify failed: {e}");
    }
}

/// Sets the unit's status text (`systemctl status vouch` shows it).
pub fn status(text: &str) {
    send(&[sd_notify::NotifyState::Status(text)]);
}

/// Sets the status text and extends the start timeout by [`EXTEND_BY`].
pub fn progress_status(text: &str) {
    send(&[
        sd_notify::NotifyState::Status(text),
        sd_notify::NotifyState::ExtendTimeoutUsec(EXTEND_BY.as_micros() as u32),
    ]);
}

/// Rate-limits progress messages for a long phase: to systemd (status text and a start timeout
/// extension) and, when stderr is a terminal, as one line rewritten in place.
pub struct Progress {
    phase: String,
    total: Option<u64>,
    last: Option<Instant>,
    last_done: u64,
    interval: Duration,
    /// When the terminal line was last written (`None`: not yet); no line without a terminal.
    tty: Option<Option<Instant>>,
}

impl Progress {
    /// Starts a phase (`archiving`, `verifying local`) with an expected total in bytes.
    pub fn new(phase: impl Into<String>, total: Option<u64>) -> Progress {
        let phase = phase.into();
        status(&format!("{phase}..."));
        use std::io::IsTerminal;
        Progress {
            phase,
            total,
            last: None,
            last_done: 0,
            interval: progress_interval(),
            tty: std::io::stderr().is_terminal().then_some(None),
        }
    }

    /// Ends the terminal line, if one was written, so that what follows starts on its own line.
    pub fn finish(&mut self) {
        if let Some(Some(_)) = self.tty {
            eprintln!();
            self.tty = Some(None);
        }
    }

    fn show_on_tty(&mut self, done: u64) {
        let Some(last) = self.tty else { return };
        if last.is_some_and(|t| t.elapsed() < TTY_INTERVAL) {
            return;
        }
        self.tty = Some(Some(Instant::now()));
        eprint!("\r{}   ", self.text(done));
    }

    /// Reports `done` bytes; sends at most one message per interval, and only when work moved.
    pub fn update(&mut self, done: u64) {
        self.show_on_tty(done);
        let due = self.last.is_none_or(|t| t.elapsed() >= self.interval);
        if !due || done == self.last_done {
            return;
        }
        self.last = Some(Instant::now());
        self.last_done = done;
        progress_status(&self.text(done));
    }

    /// The status text for `done` bytes.
    pub fn text(&self, done: u64) -> String {
        match self.total {
            Some(total) if total > 0 => format!(
                "{}: {} of ~{}",
                self.phase,
                human_bytes(done),
                human_bytes(total)
            ),
            _ => format!("{}: {}", self.phase, human_bytes(done)),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `1.2 GiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_text_reads_well() {
        let p = Progress::new("archiving", Some(5 * 1024 * 1024 * 1024));
        assert_eq!(p.text(1288490189), "archiving: 1.2 GiB of ~5.0 GiB");
        let p = Progress::new("verifying", None);
        assert_eq!(p.text(512), "verifying: 512 B");
    }
}
