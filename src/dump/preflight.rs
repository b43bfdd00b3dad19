//! The dump and hook checks of `vouch preflight`: what can be known before anything runs.
//!
//! The spool takes a file; every program a hook or a `command` dump names can be found; an
//! SQLite database opens read-only (it is never created); a PostgreSQL or MariaDB server lets
//! vouch log in, its client is installed (and for PostgreSQL not older than the server), and
//! every configured database exists. With `container`, the engine is installed, the container
//! runs and holds the clients, and the server checks run through it. Each failure is exit 20
//! with the dump's or hook's hint.
//! `vouch run` runs the same checks as part of making the dumps, before a target is touched.

use super::{spool::Spool, DumpError};
use crate::config::{Dump, DumpKind, Settings};
use crate::error::Error;
use crate::host::dirs::Dirs;
use std::path::{Path, PathBuf};

/// One check's verdict: its name, and the detail or the error.
pub type Verdict = (&'static str, Result<String, Error>);

/// Every dump and hook check, in config order.
pub fn check(settings: &Settings, dirs: &Dirs) -> Vec<Verdict> {
    let mut out = Vec::new();
    if settings.dump.is_empty() && settings.hooks.is_empty() {
        return out;
    }
    if let Some(first) = settings.dump.first() {
        let dir = super::spool_dir(settings, dirs);
        let spooled = Spool::probe(&dir)
            .map_err(|error| DumpError::Spool {
                dir: dir.clone(),
                error,
            })
            .and_then(|()| room(settings, dirs, &dir));
        out.push((
            "dump-spool",
            spooled.map_err(|error| Error::Dump {
                name: first.name.clone(),
                error,
            }),
        ));
    }
    for dump in &settings.dump {
        out.push((
            "dump",
            check_dump(dump).map_err(|error| Error::Dump {
                name: dump.name.clone(),
                error,
            }),
        ));
    }
    for hook in &settings.hooks {
        let mut argvs = vec![&hook.run];
        argvs.extend(hook.cleanup.as_ref());
        let found = argvs
            .iter()
            .map(|argv| find_program(&argv[0]).map_err(|e| (argv[0].clone(), e)))
            .collect::<Result<Vec<_>, _>>();
        out.push((
            "hook",
            match found {
                Ok(paths) => Ok(format!(
                    "hook {} ({}): {}",
                    hook.name,
                    hook.when.name(),
                    paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err((program, e)) => Err(Error::Hook {
                    name: hook.name.clone(),
                    step: if program == hook.run[0] {
                        "run"
                    } else {
                        "cleanup"
                    },
                    error: Box::new(super::HookError::Start {
                        program,
                        missing: true,
                        error: e.to_string(),
                    }),
                    archive: None,
                }),
            },
        ));
    }
    out
}

/// One dump's checks: its container first, when it has one, then its kind's own.
fn check_dump(dump: &Dump) -> Result<String, DumpError> {
    let inside = super::container::check(dump)?;
    let result = match &dump.kind {
        DumpKind::Sqlite(s) => super::sqlite::probe(s).map(|n| {
            format!(
                "dump {}: {} opens read-only, {n} tables",
                dump.name,
                s.path.display()
            )
        }),
        // The program is looked for inside the container.
        DumpKind::Command(_) if inside.is_some() => Ok(format!("dump {}", dump.name)),
        DumpKind::Command(c) => {
            find_program(&c.command[0]).map(|p| format!("dump {}: {}", dump.name, p.display()))
        }
        DumpKind::Postgresql(p) => super::postgresql::probe(dump, p).map(|dbs| {
            format!(
                "dump {}: logged in; databases {}",
                dump.name,
                dbs.join(", ")
            )
        }),
        DumpKind::Mariadb(m) => super::mariadb::probe(dump, m).map(|dbs| {
            format!(
                "dump {}: logged in; databases {}",
                dump.name,
                dbs.join(", ")
            )
        }),
    }?;
    Ok(match inside {
        Some(c) => format!("{result}; {c}"),
        None => result,
    })
}

/// The spool's free space against what the dumps took in the latest verified archive (the
/// run spools them all before archiving); without one, only that it takes a file.
fn room(settings: &Settings, dirs: &Dirs, dir: &Path) -> Result<String, DumpError> {
    let need: u64 = settings
        .dump
        .iter()
        .filter_map(|d| super::last_verified_size(settings, dirs, &d.name))
        .sum();
    let Ok(st) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(format!("{} takes a file", dir.display()));
    };
    let free = st.blocks_available().saturating_mul(st.fragment_size());
    if free < need {
        return Err(DumpError::SpoolFull {
            dir: dir.to_owned(),
            free,
            need,
        });
    }
    Ok(format!(
        "{} takes a file; {} free, the last dumps took {}",
        dir.display(),
        crate::systemd::sdnotify::human_bytes(free),
        crate::systemd::sdnotify::human_bytes(need)
    ))
}

/// Where `program` is: itself when it has a `/`, else the first executable of that name on
/// `PATH`.
pub fn find_program(program: &str) -> Result<PathBuf, DumpError> {
    let missing = || DumpError::Start {
        program: program.to_owned(),
        error: std::io::Error::from(std::io::ErrorKind::NotFound),
    };
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
        })
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(missing())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
        .ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_or_by_their_path() {
        assert!(find_program("sh").is_ok());
        assert!(find_program("/bin/sh").is_ok());
        assert!(find_program("no-such-program-anywhere").is_err());
        assert!(find_program("/nonexistent/sh").is_err());
    }
}
