//! `kind = "command"`: any program whose standard output is the dump.
//!
//! `slapcat`, `redis-cli --rdb -`, `vault operator raft snapshot save /dev/stdout`: vouch runs
//! the argv (no shell), spools its stdout to `.vouch/dumps/NAME.EXTENSION`, and keeps it only
//! when the program exited 0 within its timeout, the output reaches `min-size` (required for
//! this kind: vouch cannot guess what a complete dump weighs) and, with `expect-tail`, the last
//! 4 KiB hold that literal.

use super::child::{self, Owner, Stdout};
use super::container::Exec;
use super::spool::Spool;
use super::{check_min_size, Check, DumpError, Dumped, Spooling, DUMPS_DIR};
use crate::config::{CommandDump, Dump};
use std::time::Duration;

/// Runs the command and checks what it wrote.
pub fn dump(spool: &Spool, dump: &Dump, spec: &CommandDump) -> Result<Dumped, DumpError> {
    let spool_error = |error| DumpError::Spool {
        dir: spool.dir().to_owned(),
        error,
    };
    let file = spool.anonymous().map_err(spool_error)?;
    let mut spooling = Spooling::new(file);
    let program = spec.command[0].clone();
    let finished = {
        let mut sink = |b: &[u8]| spooling.push(b);
        Exec::of(dump)
            .run(
                &spec.command,
                &[("VOUCH_DUMP", dump.name.clone())],
                dump.timeout,
                Owner {
                    field: "VOUCH_DUMP",
                    name: &dump.name,
                },
                std::process::Stdio::null(),
                Stdout::Sink(&mut sink),
            )
            .map_err(|error| DumpError::Start {
                program: program.clone(),
                error,
            })?
    };
    if let Some(error) = finished.sink_error {
        return Err(spool_error(error));
    }
    if finished.timed_out {
        return Err(DumpError::TimedOut {
            timeout: dump.timeout,
        });
    }
    if !finished.status.success() {
        return Err(DumpError::Exited {
            program,
            status: child::describe(finished.status),
            stderr: finished.last_line(),
        });
    }
    let (file, size, sha256, tail) = spooling.finish().map_err(spool_error)?;
    let mut checks = vec![Check {
        check: "exit-status",
        min: None,
    }];
    if let Some(min) = check_min_size(dump, size)? {
        checks.push(Check {
            check: "min-size",
            min: Some(min),
        });
    }
    if let Some(expected) = &spec.expect_tail {
        if !contains(&tail, expected.as_bytes()) {
            return Err(DumpError::NoTail {
                expected: expected.clone(),
            });
        }
        checks.push(Check {
            check: "expect-tail",
            min: None,
        });
    }
    let path = format!("{DUMPS_DIR}/{}.{}", dump.name, spec.extension);
    Ok(Dumped {
        name: dump.name.clone(),
        kind: "command",
        database: None,
        restore: format!(
            "age -d -i KEY ARCHIVE | tar -xzOf - {path} > {}.{}",
            dump.name, spec.extension
        ),
        path: path.into_bytes(),
        file,
        size,
        sha256,
        mode: 0o600,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        mtime: time::OffsetDateTime::now_utc().unix_timestamp(),
        tables: None,
        checks,
        started: String::new(),
        duration: Duration::ZERO,
    })
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_are_found_anywhere_in_the_window() {
        assert!(contains(b"abc\n# end\n", b"# end"));
        assert!(!contains(b"abc", b"abcd"));
    }
}
