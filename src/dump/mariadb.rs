//! `kind = "mariadb"`: `mariadb-dump` per database, kept only with its completion line.
//!
//! Before anything is dumped, `mariadb` logs in and lists the databases: a refused login or a
//! configured database that does not exist is exit 20 with its own hint. `databases = ["*"]`
//! dumps every database except the server's own `information_schema`, `performance_schema`,
//! `sys` and `mysql`, minus `exclude-databases`, each to its own file, plus `NAME/_system.sql`:
//! the users, grants, functions and servers (`mariadb-dump --system=users,udfs,servers
//! --insert-ignore`, so `CREATE USER IF NOT EXISTS` loads on a server that has root already),
//! which is what the `mysql` schema would hold, in a form that loads into another server.
//!
//! `mariadb-dump --single-transaction --routines --events --triggers DB` runs without
//! `--databases` and without `--add-drop-database`, so the file has no `CREATE DATABASE` or
//! `USE` and loads into a database of any name. It is kept when it exited 0, starts with the
//! `-- MariaDB dump` (or `-- MySQL dump`) header, ends with `-- Dump completed` (an unknown
//! database exits 2 after writing a header, so a size check alone would pass it), reaches
//! `min-size`, and has at least `min-tables` `CREATE TABLE` lines.
//!
//! As root on a Debian host, `unix_socket` authentication needs no password. Otherwise the
//! password is read from `password-file` (owner-only) and given to the clients as `MYSQL_PWD`
//! in their environment, never in argv or the journal.

use super::child::{Owner, Stdout};
use super::container::Exec;
use super::spool::Spool;
use super::{check_min_size, Check, DumpError, Dumped, DUMPS_DIR};
use crate::config::{Dump, MariadbDump};
use std::io::{BufRead, BufReader, Seek};
use std::time::{Duration, Instant};

/// The last line of a complete dump starts with this.
pub const MARKER: &str = "-- Dump completed";
/// The server's own schemas, never part of `"*"` (`mysql`'s users and grants go to
/// `_system.sql` instead).
const SYSTEM_SCHEMAS: [&str; 4] = ["information_schema", "performance_schema", "sys", "mysql"];
/// The `database` of the users-and-grants file, and its name under `NAME/`.
pub const SYSTEM: &str = "_system";
/// How long a query of the server may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The connection options shared by every client.
pub fn connection(spec: &MariadbDump) -> Vec<String> {
    let mut out = Vec::new();
    match &spec.host {
        Some(h) if h.starts_with('/') => out.push(format!("--socket={h}")),
        Some(h) => {
            out.push(format!("--host={h}"));
            out.push("--protocol=tcp".into());
        }
        None => {}
    }
    if let Some(p) = spec.port {
        out.push(format!("--port={p}"));
    }
    if let Some(u) = &spec.user {
        out.push(format!("--user={u}"));
    }
    out
}

/// Preflight: logs in and returns the databases that would be dumped.
pub fn probe(dump: &Dump, spec: &MariadbDump) -> Result<Vec<String>, DumpError> {
    let mut env = Vec::new();
    if let Some(p) = super::password(spec.password.as_ref())? {
        env.push(("MYSQL_PWD", p));
    }
    let owner = Owner {
        field: "VOUCH_DUMP",
        name: &dump.name,
    };
    databases(Exec::of(dump), spec, &env, owner)
}

/// Dumps every database of the entry.
pub fn dump(spool: &Spool, dump: &Dump, spec: &MariadbDump) -> Result<Vec<Dumped>, DumpError> {
    let mut env = Vec::new();
    if let Some(p) = super::password(spec.password.as_ref())? {
        env.push(("MYSQL_PWD", p));
    }
    let owner = Owner {
        field: "VOUCH_DUMP",
        name: &dump.name,
    };
    let deadline = Instant::now() + dump.timeout;
    let exec = Exec::of(dump);
    let databases = databases(exec, spec, &env, owner)?;
    let single = !spec.all() && databases.len() == 1;
    let mut out = Vec::new();
    for db in &databases {
        let path = if single {
            format!("{DUMPS_DIR}/{}.sql", dump.name)
        } else {
            format!("{DUMPS_DIR}/{}/{db}.sql", dump.name)
        };
        crate::systemd::sdnotify::status(&format!("dumping {}/{db} (mariadb)", dump.name));
        let mut argv = vec![
            "mariadb-dump".to_owned(),
            "--single-transaction".into(),
            "--routines".into(),
            "--events".into(),
            "--triggers".into(),
        ];
        argv.extend(connection(spec));
        argv.push("--".into());
        argv.push(db.clone());
        let limit = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let spooled = super::spool_command(exec, spool, &argv, &env, limit, dump.timeout, owner)?;
        out.push(check(spool, dump, spec.min_tables, db, path, spooled)?);
    }
    if spec.all() {
        let limit = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        out.push(system(exec, spool, dump, spec, &env, limit, owner)?);
    }
    Ok(out)
}

/// `"*"`: the users, grants, functions and servers as `NAME/_system.sql`, with the same header
/// and completion checks as a database (no tables to count).
#[allow(clippy::too_many_arguments)]
fn system(
    exec: Exec<'_>,
    spool: &Spool,
    dump: &Dump,
    spec: &MariadbDump,
    env: &[(&str, String)],
    limit: Duration,
    owner: Owner<'_>,
) -> Result<Dumped, DumpError> {
    crate::systemd::sdnotify::status(&format!("dumping {}/{SYSTEM} (mariadb)", dump.name));
    let mut argv = vec![
        "mariadb-dump".to_owned(),
        "--system=users,udfs,servers".into(),
        "--insert-ignore".into(),
        "--no-data".into(),
    ];
    argv.extend(connection(spec));
    let spooled = super::spool_command(exec, spool, &argv, env, limit, dump.timeout, owner)?;
    let path = format!("{DUMPS_DIR}/{}/{SYSTEM}.sql", dump.name);
    let mut d = check(spool, dump, 0, SYSTEM, path.clone(), spooled)?;
    // Not a database: like PostgreSQL's globals, recorded without one.
    d.database = None;
    d.tables = None;
    d.checks.retain(|c| c.check != "min-tables");
    d.restore = format!("age -d -i KEY ARCHIVE | tar -xzOf - {path} | mariadb");
    Ok(d)
}

/// Logs in and returns the databases to dump.
fn databases(
    exec: Exec<'_>,
    spec: &MariadbDump,
    env: &[(&str, String)],
    owner: Owner<'_>,
) -> Result<Vec<String>, DumpError> {
    let mut argv = vec!["mariadb".to_owned()];
    argv.extend(connection(spec));
    argv.extend([
        "-N".into(),
        "-B".into(),
        "-e".into(),
        "SHOW DATABASES".into(),
    ]);
    let mut out = Vec::new();
    let mut sink = |b: &[u8]| {
        out.extend_from_slice(b);
        Ok(())
    };
    let done = exec
        .run(
            &argv,
            env,
            QUERY_TIMEOUT,
            owner,
            std::process::Stdio::null(),
            Stdout::Sink(&mut sink),
        )
        .map_err(|error| DumpError::Start {
            program: "mariadb".into(),
            error,
        })?;
    if done.timed_out || !done.status.success() {
        return Err(DumpError::Connect {
            detail: done
                .last_line()
                .unwrap_or_else(|| format!("mariadb {}", done.describe())),
        });
    }
    let existing: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    if spec.all() {
        return Ok(existing
            .into_iter()
            .filter(|d| !SYSTEM_SCHEMAS.contains(&d.as_str()))
            .filter(|d| !spec.exclude_databases.contains(d))
            .collect());
    }
    if let Some(missing) = spec.databases.iter().find(|d| !existing.contains(d)) {
        return Err(DumpError::NoDatabase {
            database: missing.clone(),
        });
    }
    Ok(spec.databases.clone())
}

/// Checks one spooled database dump: header, completion line, tables, size.
fn check(
    spool: &Spool,
    dump: &Dump,
    min_tables: u64,
    db: &str,
    path: String,
    (mut file, size, sha256, tail): (std::fs::File, u64, String, Vec<u8>),
) -> Result<Dumped, DumpError> {
    let spool_error = |error| DumpError::Spool {
        dir: spool.dir().to_owned(),
        error,
    };
    let mut header = false;
    let mut tables = 0u64;
    let mut reader = BufReader::new(&mut file);
    let mut line = Vec::new();
    let mut n = 0usize;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(spool_error)? == 0 {
            break;
        }
        n += 1;
        if n <= 5 && (line.starts_with(b"-- MariaDB dump") || line.starts_with(b"-- MySQL dump")) {
            header = true;
        }
        if line.starts_with(b"CREATE TABLE `") {
            tables += 1;
        }
    }
    drop(reader);
    file.rewind().map_err(spool_error)?;
    let tail_text = String::from_utf8_lossy(&tail);
    let last = tail_text.lines().rev().find(|l| !l.trim().is_empty());
    if !header || !last.is_some_and(|l| l.starts_with(MARKER)) {
        return Err(DumpError::NoMarker {
            database: db.to_owned(),
            expected: MARKER.into(),
        });
    }
    let mut checks = vec![
        Check {
            check: "exit-status",
            min: None,
        },
        Check {
            check: "marker",
            min: None,
        },
    ];
    if tables < min_tables {
        return Err(DumpError::DatabaseTables {
            database: db.to_owned(),
            tables,
            min: min_tables,
        });
    }
    checks.push(Check {
        check: "min-tables",
        min: Some(min_tables),
    });
    if let Some(min) = check_min_size(dump, size)? {
        checks.push(Check {
            check: "min-size",
            min: Some(min),
        });
    }
    Ok(Dumped {
        name: dump.name.clone(),
        kind: "mariadb",
        database: Some(db.to_owned()),
        restore: format!(
            "mariadb -e 'CREATE DATABASE NEWDB' && age -d -i KEY ARCHIVE | tar -xzOf - {path} | mariadb NEWDB"
        ),
        path: path.into_bytes(),
        file,
        size,
        sha256,
        mode: 0o600,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        mtime: time::OffsetDateTime::now_utc().unix_timestamp(),
        tables: Some(tables),
        checks,
        started: String::new(),
        duration: Duration::ZERO,
    })
}
