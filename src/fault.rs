//! Fault injection for the test suite.
//!
//! `VOUCH_TEST_FAULT` makes a run misbehave at a named point, so tests can prove what a crash or
//! a bad disk leaves behind without racing a signal against the run:
//! `kill:POINT` sends the process `SIGKILL` there; `corrupt-temp` flips one byte in the middle of
//! each written temporary archive before it is read back; `stop-before-data:NAME` stops the
//! process (`SIGSTOP`) after the tar header of the file called NAME is written and before its
//! data is read, so a test can change the file and then continue the run with `SIGCONT`;
//! `stop:POINT` stops the process at a named point (every time it passes it), so a test can
//! change what the command is about to read (delete an archive under `vouch verify`, alter a
//! restored file before it is compared) and then continue it. Unset (always, outside tests),
//! every function here does nothing.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The variable tests set.
pub const VAR: &str = "VOUCH_TEST_FAULT";

/// Named points in a run where a test can kill it.
pub const POINTS: [&str; 5] = [
    "after-create",
    "mid-archive",
    "before-verify",
    "before-commit",
    "after-commit",
];

fn fault() -> Option<String> {
    std::env::var(VAR).ok()
}

/// Points in `vouch verify` where a test can stop it: before an archive's files are opened,
/// once all of them are open and none is read yet, and (with `--restore-to`) after the restore
/// and before the restored files are compared with the manifest.
pub const VERIFY_POINTS: [&str; 3] = [
    "verify-before-open",
    "verify-opened",
    "verify-before-compare",
];

/// Kills the process with SIGKILL (`kill:POINT`) or stops it with SIGSTOP (`stop:POINT`) when
/// the test asked for it at `point`.
pub fn point(point: &str) {
    let Some(f) = fault() else { return };
    if f.strip_prefix("kill:") == Some(point) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    if f.strip_prefix("stop:") == Some(point) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}

/// Flips a byte in the middle of `path` when the test asked for corruption.
pub fn corrupt(path: &Path) {
    if fault().as_deref() != Some("corrupt-temp") {
        return;
    }
    let Ok(mut f) = OpenOptions::new().read(true).write(true).open(path) else {
        return;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut byte = [0u8; 1];
    let at = len / 2;
    if f.seek(SeekFrom::Start(at)).is_ok() && f.read_exact(&mut byte).is_ok() {
        byte[0] ^= 0x01;
        let _ = f.seek(SeekFrom::Start(at)).and_then(|_| f.write_all(&byte));
        let _ = f.sync_all();
    }
}

/// Stops the process when the test asked to, before the data of a file named like `path`.
pub fn stop_before_data(path: &Path) {
    let Some(f) = fault() else { return };
    let Some(name) = f.strip_prefix("stop-before-data:") else {
        return;
    };
    if path.file_name().is_some_and(|n| n == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }
}
