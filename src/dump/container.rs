//! `container = "NAME"`: a dump's client runs inside a running container.
//!
//! Every program a dump starts (`psql`, `pg_dump`, `pg_restore`, `mariadb-dump`, a `command`
//! dump's argv) goes through [`Exec`]: on the host as it is, or as
//! `ENGINE exec -i -e LC_ALL -e VAR... CONTAINER timeout -s TERM -k 5 -- SECS ARGV...`.
//! - Secrets (`PGPASSWORD`, `MYSQL_PWD`) are named with `-e VAR` and no value: the engine copies
//!   the value from its own environment, which vouch sets, so it is never in an argv.
//! - Killing the `exec` client does not stop the process inside the container (docker and
//!   podman both leave it running), so the argv runs under `timeout` in the container with the
//!   same deadline, and vouch's own kill of the client comes [`ENGINE_GRACE`] later. A client
//!   that exits 124, 137 or 143 once the deadline has passed is reported as timed out.
//! - [`check`] runs before a containerized dump, in `vouch preflight` and `vouch run` alike:
//!   the engine is installed, the container exists and runs (`ENGINE container inspect`), and
//!   `timeout` and the clients are there (`sh -c 'command -v ...'` in the container).

use super::child::{self, Finished, Owner, Stdout, KILL_GRACE};
use super::DumpError;
use crate::config::{Container, Dump, DumpKind};
use std::io;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How much longer than the in-container `timeout` (and its kill grace) vouch waits before it
/// kills the engine's client itself.
pub const ENGINE_GRACE: Duration = Duration::from_secs(10);
/// How long `inspect` and the program check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// The exit codes of `timeout` (and of a client killed by it) after the deadline.
const TIMED_OUT_CODES: [i32; 3] = [124, 137, 143];

/// Where a dump's programs run: on the host, or in a container.
#[derive(Debug, Clone, Copy)]
pub struct Exec<'a> {
    container: Option<&'a Container>,
}

impl<'a> Exec<'a> {
    /// Where the programs of `dump` run.
    pub fn of(dump: &'a Dump) -> Exec<'a> {
        Exec {
            container: dump.container.as_ref(),
        }
    }

    /// [`child::run_with_input`] on the host, or through the container's engine with the same
    /// deadline inside the container.
    pub fn run(
        &self,
        argv: &[String],
        env: &[(&str, String)],
        limit: Duration,
        owner: Owner<'_>,
        stdin: Stdio,
        stdout: Stdout<'_>,
    ) -> io::Result<Finished> {
        let Some(container) = self.container else {
            return child::run_with_input(argv, env, limit, owner, stdin, stdout);
        };
        let names: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
        let wrapped = exec_argv(container, &names, limit, argv);
        let started = Instant::now();
        let outer = limit + KILL_GRACE + ENGINE_GRACE;
        let mut done = child::run_with_input(&wrapped, env, outer, owner, stdin, stdout)?;
        if !done.timed_out
            && started.elapsed() >= limit
            && done
                .status
                .code()
                .is_some_and(|c| TIMED_OUT_CODES.contains(&c))
        {
            done.timed_out = true;
        }
        Ok(done)
    }
}

/// `ENGINE exec -i -e LC_ALL -e NAME... CONTAINER timeout -s TERM -k GRACE -- SECS ARGV...`:
/// the variables are named without values, so the engine copies them from its environment.
pub fn exec_argv(
    container: &Container,
    env_names: &[&str],
    limit: Duration,
    argv: &[String],
) -> Vec<String> {
    let mut out = vec![
        container.engine.program().to_owned(),
        "exec".into(),
        "-i".into(),
    ];
    for name in std::iter::once(&"LC_ALL").chain(env_names) {
        out.push("-e".into());
        out.push((*name).to_owned());
    }
    let secs = limit.as_secs() + u64::from(limit.subsec_nanos() > 0);
    out.extend([
        container.name.clone(),
        "timeout".into(),
        "-s".into(),
        "TERM".into(),
        "-k".into(),
        KILL_GRACE.as_secs().to_string(),
        "--".into(),
        secs.max(1).to_string(),
    ]);
    out.extend(argv.iter().cloned());
    out
}

/// The programs a dump of `kind` runs in its container.
pub fn programs(kind: &DumpKind) -> Vec<String> {
    let owned = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    match kind {
        DumpKind::Postgresql(p) if p.all() && p.globals => {
            owned(&["psql", "pg_dump", "pg_restore", "pg_dumpall"])
        }
        DumpKind::Postgresql(_) => owned(&["psql", "pg_dump", "pg_restore"]),
        DumpKind::Mariadb(_) => owned(&["mariadb", "mariadb-dump"]),
        DumpKind::Command(c) => vec![c.command[0].clone()],
        DumpKind::Sqlite(_) => Vec::new(),
    }
}

/// Checks the container of `dump`, if it has one: the engine is installed, the container
/// exists and runs, and `timeout` and the dump's programs are in it. The detail for preflight.
pub fn check(dump: &Dump) -> Result<Option<String>, DumpError> {
    let Some(c) = &dump.container else {
        return Ok(None);
    };
    let engine = c.engine.program();
    let owner = Owner {
        field: "VOUCH_DUMP",
        name: &dump.name,
    };
    let path = super::preflight::find_program(engine).map_err(|_| DumpError::NoEngine {
        engine,
        container: c.name.clone(),
    })?;
    let inspect = [
        engine.to_owned(),
        "container".into(),
        "inspect".into(),
        "--format".into(),
        "{{.State.Status}}".into(),
        c.name.clone(),
    ];
    let (done, out) = capture(&inspect, owner)?;
    if !done.status.success() || done.timed_out {
        let detail = done.last_line().unwrap_or_else(|| done.describe());
        if detail.to_ascii_lowercase().contains("no such container") {
            return Err(DumpError::NoContainer {
                engine,
                container: c.name.clone(),
            });
        }
        return Err(DumpError::Engine {
            engine,
            container: c.name.clone(),
            detail,
        });
    }
    let state = out.trim();
    if state != "running" {
        return Err(DumpError::ContainerStopped {
            engine,
            container: c.name.clone(),
            state: state.to_owned(),
        });
    }
    let mut wanted = vec!["timeout".to_owned()];
    wanted.extend(programs(&dump.kind));
    find_inside(c, &wanted, owner)?;
    Ok(Some(format!(
        "container {} running ({}), with {}",
        c.name,
        path.display(),
        wanted.join(", ")
    )))
}

/// Finds every program of `wanted` in the container with `sh -c 'command -v'`.
fn find_inside(c: &Container, wanted: &[String], owner: Owner<'_>) -> Result<(), DumpError> {
    let mut argv = vec![
        c.engine.program().to_owned(),
        "exec".into(),
        c.name.clone(),
        "sh".into(),
        "-c".into(),
        "for p; do command -v \"$p\" >/dev/null || { echo \"$p\"; exit 3; }; done".into(),
        "sh".into(),
    ];
    argv.extend(wanted.iter().cloned());
    let (done, out) = capture(&argv, owner)?;
    if done.status.success() && !done.timed_out {
        return Ok(());
    }
    let program = match (done.status.code(), out.trim()) {
        (Some(3), missing) if !missing.is_empty() => missing.to_owned(),
        (Some(126 | 127), _) => "sh".to_owned(),
        _ => {
            return Err(DumpError::Engine {
                engine: c.engine.program(),
                container: c.name.clone(),
                detail: done.last_line().unwrap_or_else(|| done.describe()),
            })
        }
    };
    Err(DumpError::NotInContainer {
        program,
        container: c.name.clone(),
    })
}

/// Runs an engine command on the host and returns its stdout.
fn capture(argv: &[String], owner: Owner<'_>) -> Result<(Finished, String), DumpError> {
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| {
        out.extend_from_slice(b);
        Ok(())
    };
    let done =
        child::run(argv, &[], CHECK_TIMEOUT, owner, Stdout::Sink(&mut sink)).map_err(|error| {
            DumpError::Start {
                program: argv[0].clone(),
                error,
            }
        })?;
    Ok((done, String::from_utf8_lossy(&out).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Engine;

    #[test]
    fn the_exec_argv_names_variables_without_their_values() {
        let c = Container {
            name: "app-db-1".into(),
            engine: Engine::Podman,
        };
        let argv = exec_argv(
            &c,
            &["PGPASSWORD"],
            Duration::from_millis(2500),
            &["pg_dump".into(), "--dbname=app".into()],
        );
        assert_eq!(
            argv.join(" "),
            "podman exec -i -e LC_ALL -e PGPASSWORD app-db-1 timeout -s TERM -k 5 -- 3 pg_dump --dbname=app"
        );
    }

    #[test]
    fn each_kind_names_the_programs_it_needs() {
        let cmd = DumpKind::Command(crate::config::CommandDump {
            command: vec!["redis-cli".into(), "--rdb".into(), "-".into()],
            extension: "rdb".into(),
            expect_tail: None,
        });
        assert_eq!(programs(&cmd), vec!["redis-cli".to_owned()]);
    }
}
