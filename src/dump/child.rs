//! Running a dump's or a hook's program: argv only, its own process group, a deadline.
//!
//! The child gets `/dev/null` as stdin, `LC_ALL=C` (so the messages it prints are the ones the
//! hints expect) and no `NOTIFY_SOCKET` (it may not speak for vouch to systemd). Its stderr is
//! read line by line: each line goes to the journal with the dump's or hook's name (the first
//! [`LOGGED_LINES`] of them), and the last [`KEPT_LINES`] are kept for the failure's hint.
//!
//! Past its deadline the whole process group gets `SIGTERM`, then `SIGKILL` [`KILL_GRACE`]
//! later. Once the leader has exited (and before it is reaped, so its group id cannot be
//! reused), whatever is left of the group is killed: a dump or hook never leaves a process
//! behind.

use crate::systemd::journal::Entry;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// How often a running child is reported to systemd (`STATUS=`, `EXTEND_TIMEOUT_USEC=`).
pub const ALIVE_EVERY: Duration = Duration::from_secs(30);
/// How long a group has between `SIGTERM` and `SIGKILL`.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// Stderr lines kept for the hint.
pub const KEPT_LINES: usize = 20;
/// Stderr lines logged to the journal; the rest are counted.
pub const LOGGED_LINES: usize = 200;
/// The read size for a child's stdout.
const CHUNK: usize = 64 * 1024;

/// Who a child works for, for its journal lines: (`VOUCH_DUMP` or `VOUCH_HOOK`, the name).
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// `VOUCH_DUMP` or `VOUCH_HOOK`.
    pub field: &'static str,
    /// The dump's or hook's name.
    pub name: &'a str,
}

/// How a child ended.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// It ran past its deadline and was killed.
    pub timed_out: bool,
    /// The last lines of its stderr.
    pub stderr: Vec<String>,
    /// The error the stdout sink returned, if it failed (the child was killed then).
    pub sink_error: Option<io::Error>,
}

impl Finished {
    /// "exited 3" or "was killed by signal 9".
    pub fn describe(&self) -> String {
        describe(self.status)
    }

    /// The last non-empty stderr line.
    pub fn last_line(&self) -> Option<String> {
        self.stderr
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
    }
}

/// "exited 3" or "was killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("failed ({status})"),
    }
}

/// What becomes of the child's stdout.
pub enum Stdout<'a> {
    /// Inherited from vouch's stderr (hooks: their output is for the journal).
    ToStderr,
    /// Read and handed to the sink in chunks (dumps).
    Sink(&'a mut dyn FnMut(&[u8]) -> io::Result<()>),
}

/// Runs `argv` to its end or its deadline, with `/dev/null` as stdin. An error is returned only
/// when it cannot start.
pub fn run(
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
    owner: Owner<'_>,
    stdout: Stdout<'_>,
) -> io::Result<Finished> {
    run_with_input(argv, env, timeout, owner, Stdio::null(), stdout)
}

/// [`run`] with `stdin` as the child's standard input (a spooled dump for a reader to check).
pub fn run_with_input(
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
    owner: Owner<'_>,
    stdin: Stdio,
    stdout: Stdout<'_>,
) -> io::Result<Finished> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::other("empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LC_ALL", "C")
        .env_remove("NOTIFY_SOCKET")
        .stdin(stdin)
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match &stdout {
        Stdout::Sink(_) => {
            cmd.stdout(Stdio::piped());
        }
        Stdout::ToStderr => {
            use std::os::fd::AsFd;
            match io::stderr().as_fd().try_clone_to_owned() {
                Ok(fd) => cmd.stdout(Stdio::from(fd)),
                Err(_) => cmd.stdout(Stdio::null()),
            };
        }
    }
    let mut child = cmd.spawn()?;
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(io::Error::other)?);
    let stderr = child.stderr.take().map(|e| read_stderr(e, owner));
    let timed_out = Arc::new(AtomicBool::new(false));
    let label = format!(
        "{} {}",
        if owner.field == "VOUCH_HOOK" {
            "hook"
        } else {
            "dump"
        },
        owner.name
    );
    let (done, watch) = watchdog(pid, timeout, timed_out.clone(), label);
    let mut sink_error = None;
    if let (Some(out), Stdout::Sink(sink)) = (child.stdout.take(), stdout) {
        if let Err(e) = pump(out, sink) {
            // The dump cannot be kept: stop the child now rather than at its deadline.
            let _ = killpg(pid, Signal::SIGKILL);
            sink_error = Some(e);
        }
    }
    // Wait for the leader without reaping it, so its group id stays ours while the rest of
    // the group is killed.
    let _ = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
    drop(done);
    let _ = watch.join();
    let _ = killpg(pid, Signal::SIGKILL);
    let status = child.wait()?;
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Finished {
        status,
        timed_out: timed_out.load(Ordering::SeqCst),
        stderr,
        sink_error,
    })
}

/// Copies `out` into `sink` until end of file.
fn pump(mut out: impl Read, sink: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match out.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => sink(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A thread that kills the group `pid` once `timeout` passes without a word on the channel
/// (dropping the sender is the word). While it waits, it tells systemd every
/// [`ALIVE_EVERY`] that the child is running and extends the unit's start timeout, so vouch's
/// own deadline fires first (even while a dump prints nothing, as pg_dump reading catalogs).
fn watchdog(
    pid: Pid,
    timeout: Duration,
    timed_out: Arc<AtomicBool>,
    label: String,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left.min(ALIVE_EVERY)) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    crate::systemd::sdnotify::progress_status(&format!(
                        "{label}: running ({}s of {})",
                        started.elapsed().as_secs(),
                        crate::config::format_duration(timeout)
                    ));
                }
                _ => return,
            }
        }
        timed_out.store(true, Ordering::SeqCst);
        let _ = killpg(pid, Signal::SIGTERM);
        if rx.recv_timeout(KILL_GRACE) == Err(mpsc::RecvTimeoutError::Timeout) {
            let _ = killpg(pid, Signal::SIGKILL);
        }
    });
    (tx, handle)
}

/// A thread that logs `stderr` line by line and returns its last lines.
pub fn read_stderr(
    stderr: impl Read + Send + 'static,
    owner: Owner<'_>,
) -> std::thread::JoinHandle<Vec<String>> {
    let field = owner.field;
    let name = owner.name.to_owned();
    std::thread::spawn(move || {
        let mut kept: std::collections::VecDeque<String> = Default::default();
        let mut seen = 0usize;
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            line.clear();
            seen += 1;
            if seen <= LOGGED_LINES {
                Entry::error(format!("{name}: {text}"))
                    .level(log::Level::Info)
                    .field(field, &name)
                    .emit();
            }
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            kept.push_back(text);
        }
        if seen > LOGGED_LINES {
            log::info!(
                "{name}: {} more stderr lines not logged",
                seen - LOGGED_LINES
            );
        }
        kept.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn owner() -> Owner<'static> {
        Owner {
            field: "VOUCH_HOOK",
            name: "t",
        }
    }

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stdout_reaches_the_sink_and_stderr_is_kept() {
        let mut got = Vec::new();
        let mut sink = |b: &[u8]| {
            got.extend_from_slice(b);
            Ok(())
        };
        let done = run(
            &argv(&["sh", "-c", "echo out; echo err1 >&2; echo err2 >&2; exit 3"]),
            &[],
            Duration::from_secs(10),
            owner(),
            Stdout::Sink(&mut sink),
        )
        .unwrap();
        assert_eq!(got, b"out\n");
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.last_line().as_deref(), Some("err2"));
        assert_eq!(done.describe(), "exited 3");
        assert!(!done.timed_out);
    }

    #[test]
    fn a_hang_is_killed_with_its_group() {
        let start = Instant::now();
        let done = run(
            &argv(&["sh", "-c", "sleep 60 & sleep 60"]),
            &[],
            Duration::from_millis(300),
            owner(),
            Stdout::ToStderr,
        )
        .unwrap();
        assert!(done.timed_out);
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(!done.status.success());
    }

    #[test]
    fn a_missing_program_does_not_start() {
        let e = run(
            &argv(&["/nonexistent/program"]),
            &[],
            Duration::from_secs(1),
            owner(),
            Stdout::ToStderr,
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
