//! Running a database client for `vouch restore --dump`: short queries, and the load itself.
//!
//! Queries (listing, creating, dropping and renaming databases) go through
//! [`crate::dump::child::run`], like the ones a dump makes: argv only, `LC_ALL=C`, their own
//! process group, a deadline. The load can take hours and has no deadline of its own; it reads
//! the extracted dump on its standard input and its stderr goes to the journal line by line
//! (the last line is kept for the error). While it runs, SIGINT, SIGTERM and SIGHUP are held
//! back (`crate::systemd::signals::Deferred`): one that arrives stops the client's whole
//! process group, so that a Ctrl-C or `kill` of vouch never leaves a loader running on its
//! own, and the caller then cleans up and dies by that signal.

use crate::dump::child::{self, Owner, Stdout};
use crate::systemd::signals::Deferred;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a query of the server may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a running load is looked at (exit, held-back signal).
const POLL: Duration = Duration::from_millis(50);

/// How a client failed.
#[derive(Debug)]
pub(super) enum Failed {
    /// It could not start, exited non-zero or ran past its deadline: what it said.
    Client(String),
    /// A held-back signal arrived while it ran; it was stopped.
    Interrupted(Signal),
}

impl Failed {
    /// The failure in words (an interruption names its signal).
    pub(super) fn detail(&self) -> String {
        match self {
            Failed::Client(s) => s.clone(),
            Failed::Interrupted(s) => format!("interrupted by {}", s.as_str()),
        }
    }
}

/// The program of `argv` and what went wrong with it, with its last stderr line.
fn describe(argv: &[String], done: &child::Finished) -> String {
    let program = argv.first().map(String::as_str).unwrap_or("?");
    let how = if done.timed_out {
        "ran past its timeout".to_owned()
    } else {
        done.describe()
    };
    match done.last_line() {
        Some(line) => format!("{program} {how}: {line}"),
        None => format!("{program} {how}"),
    }
}

/// Runs a short client command and returns its stdout lines (empty ones dropped).
pub(super) fn query(
    argv: &[String],
    env: &[(&str, String)],
    owner: Owner<'_>,
) -> Result<Vec<String>, Failed> {
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| {
        out.extend_from_slice(b);
        Ok(())
    };
    let done = child::run(argv, env, QUERY_TIMEOUT, owner, Stdout::Sink(&mut sink))
        .map_err(|e| Failed::Client(start_error(argv, &e)))?;
    if done.timed_out || !done.status.success() {
        return Err(Failed::Client(describe(argv, &done)));
    }
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// "psql could not be started: ..." (`is not installed` when it is not found).
fn start_error(argv: &[String], e: &std::io::Error) -> String {
    let program = argv.first().map(String::as_str).unwrap_or("?");
    if e.kind() == std::io::ErrorKind::NotFound {
        format!("{program} is not installed (not found in PATH)")
    } else {
        format!("{program} could not be started: {e}")
    }
}

/// Runs the loader `argv` with `input` as its standard input and its stdout discarded, until
/// it ends or a held-back signal arrives (then its process group is stopped: SIGTERM, SIGKILL
/// after [`child::KILL_GRACE`]).
pub(super) fn load(
    argv: &[String],
    env: &[(&str, String)],
    input: File,
    owner: Owner<'_>,
    interrupts: &Deferred,
) -> Result<(), Failed> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Failed::Client("empty command".into()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LC_ALL", "C")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::from(input))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut spawned = cmd
        .spawn()
        .map_err(|e| Failed::Client(start_error(argv, &e)))?;
    let pid = Pid::from_raw(i32::try_from(spawned.id()).unwrap_or(i32::MAX));
    let stderr = spawned.stderr.take().map(|e| child::read_stderr(e, owner));
    let mut interrupted = None;
    // The leader is waited for without being reaped, so its group id stays ours until the
    // rest of the group is killed.
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    while let Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) =
        waitid(Id::Pid(pid), flags)
    {
        if interrupted.is_none() {
            if let Some(signal) = interrupts.arrived() {
                interrupted = Some((signal, Instant::now()));
                let _ = killpg(pid, Signal::SIGTERM);
            }
        } else if let Some((_, since)) = interrupted {
            if since.elapsed() > child::KILL_GRACE {
                let _ = killpg(pid, Signal::SIGKILL);
            }
        }
        std::thread::sleep(POLL);
    }
    // Whatever is left of its group goes with it.
    let _ = killpg(pid, Signal::SIGKILL);
    let status = spawned.wait();
    let kept = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    if let Some((signal, _)) = interrupted {
        return Err(Failed::Interrupted(signal));
    }
    let status = status.map_err(|e| Failed::Client(format!("{program}: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let last = kept.iter().rev().find(|l| !l.trim().is_empty());
    let how = child::describe(status);
    Err(Failed::Client(match last {
        Some(line) => format!("{program} {how}: {}", line.trim()),
        None => format!("{program} {how}"),
    }))
}
