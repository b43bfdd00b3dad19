//! Fault injection for the test suite.
//!
//! `VOUCH_TEST_FAULT` makes a run misbehave at a named point, so tests can prove what a crash or
//! a bad disk leaves behind without racing a signal against the run:
//! `kill:POINT` sends the process `SIGKILL` there and `stop:POINT` sends it `SIGSTOP` (a test
//! then signals the stopped process and continues it with `SIGCONT`); `kill:POINT:N` and
//! `stop:POINT:N` do the same at the Nth pass through a counted point (`restore-commit`: once
//! N entries of a restore are in place); `corrupt-temp` flips one byte in the middle of each
//! written temporary archive before it is read back; `stop-before-data:NAME` stops the process
//! (`SIGSTOP`) after the tar header of the file called NAME is written and before its data is
//! read, so a test can change the file and then continue the run with `SIGCONT`. The verify
//! points ([`VERIFY_POINTS`]) let a test change what `vouch verify` is about to read (delete an
//! archive, alter a restored file before it is compared). The commit and deletion points
//! ([`COMMIT_POINTS`], [`PRUNE_POINTS`]) cut an archive's commit or deletion between two of its
//! steps. The sftp point ([`SFTP_POINTS`]) lets a test change or keep the uploaded temporary
//! file before it is read back. `VOUCH_TEST_PART_SIZE=BYTES` ([`part_size`]) makes split targets cut parts of that
//! size, below the smallest `split` the config accepts, so that tests get many parts from small
//! sources. `VOUCH_TEST_SFTP_TIMEOUT=MS` ([`sftp_timeout`]) shortens how long the SFTP client
//! waits for an answer, so a test of a hung server ends in seconds. Unset (always, outside
//! tests), every function here does nothing.

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

/// Points in an archive's commit, in order: the receipt is written under its marker name; the
/// Nth file is renamed; every file is renamed and the receipt is not yet in place. All are
/// counted over the whole process ([`pass`]): `kill:commit-part:3` is the third file renamed,
/// whichever target it is on.
pub const COMMIT_POINTS: [&str; 3] = ["commit-marked", "commit-part", "commit-renamed"];

/// Points in the deletion of an archive: its receipt is renamed to the deletion marker; a data
/// file is removed. Counted like [`COMMIT_POINTS`].
pub const PRUNE_POINTS: [&str; 2] = ["prune-marked", "prune-delete"];

/// The variable that sets the part size of split targets in tests.
pub const PART_SIZE_VAR: &str = "VOUCH_TEST_PART_SIZE";

/// The part size a test asked for, if any.
pub fn part_size() -> Option<u64> {
    std::env::var(PART_SIZE_VAR)
        .ok()?
        .parse()
        .ok()
        .filter(|&n| n > 0)
}

/// The variable that shortens the SFTP client's wait for an answer in tests (milliseconds).
pub const SFTP_TIMEOUT_VAR: &str = "VOUCH_TEST_SFTP_TIMEOUT";

/// The SFTP answer timeout a test asked for, if any.
pub fn sftp_timeout() -> Option<std::time::Duration> {
    std::env::var(SFTP_TIMEOUT_VAR)
        .ok()?
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .map(std::time::Duration::from_millis)
}

/// The fault asked for, read once.
pub fn fault() -> Option<&'static str> {
    static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FAULT.get_or_init(|| std::env::var(VAR).ok()).as_deref()
}

/// Points in `vouch verify` where a test can stop it: before an archive's files are opened,
/// once all of them are open and none is read yet, and (with `--restore-to`) after the restore
/// and before the restored files are compared with the manifest.
pub const VERIFY_POINTS: [&str; 3] = [
    "verify-before-open",
    "verify-opened",
    "verify-before-compare",
];

/// Points in the copy to an sftp target: the archive is uploaded under its temporary name,
/// fsynced and closed, and not yet read back.
pub const SFTP_POINTS: [&str; 1] = ["sftp-before-readback"];

/// Kills the process with SIGKILL (`kill:POINT`) or stops it with SIGSTOP (`stop:POINT`) when
/// the test asked for it at `point`.
pub fn point(point: &str) {
    let Some((action, at)) = fault().and_then(|f| f.split_once(':')) else {
        return;
    };
    if at == point {
        act(action);
    }
}

/// Sends the process SIGKILL for `kill`, SIGSTOP for `stop`.
fn act(action: &str) {
    let signal = match action {
        "kill" => nix::sys::signal::Signal::SIGKILL,
        "stop" => nix::sys::signal::Signal::SIGSTOP,
        _ => return,
    };
    let _ = nix::sys::signal::raise(signal);
}

/// Kills (`kill:POINT:N`) or stops (`stop:POINT:N`) the process when the test asked for it at
/// the Nth pass through `point`.
pub fn step(point: &str, n: u64) {
    let Some((action, rest)) = fault().and_then(|f| f.split_once(':')) else {
        return;
    };
    let Some((at, count)) = rest.rsplit_once(':') else {
        return;
    };
    if at == point && count.parse::<u64>() == Ok(n) {
        act(action);
    }
}

/// Kills or stops the process at a pass through `point` that the test named: `kill:POINT` at
/// the first pass, `kill:POINT:N` at the Nth, counting every pass in this process (so the Nth
/// part renamed over all targets, or the Nth file deleted over all archives).
pub fn pass(point: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let Some((action, rest)) = fault().and_then(|f| f.split_once(':')) else {
        return;
    };
    let (at, wanted) = match rest.rsplit_once(':') {
        Some((at, n)) => (at, n.parse::<u64>().ok()),
        None => (rest, Some(1)),
    };
    if at == point && wanted == Some(PASSES.fetch_add(1, Ordering::SeqCst) + 1) {
        act(action);
    }
}

/// Flips a byte in the middle of `path` when the test asked for corruption.
pub fn corrupt(path: &Path) {
    if fault() != Some("corrupt-temp") {
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
