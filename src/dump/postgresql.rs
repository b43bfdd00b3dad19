//! `kind = "postgresql"`: `pg_dump` per database, proven before it is kept.
//!
//! Before anything is dumped, `psql` logs in and reads the server's version and its databases:
//! a refused login (peer authentication for root is the usual one), a client older than the
//! server, or a configured database that does not exist is exit 20 with its own hint.
//! `databases = ["*"]` dumps every database that accepts connections and is not a template,
//! minus `exclude-databases`, each to its own file, plus the roles and tablespaces through
//! `pg_dumpall --globals-only` (`globals`, default true).
//!
//! `pg_dump` runs with `--no-password` (so it never waits for a prompt) and without `--clean`,
//! so a dump loads into a new, empty database. Its output is spooled and checked:
//! - custom format (the default): the `PGDMP` header, then a full read by
//!   `pg_restore -f /dev/null` (`pg_restore --list` alone passes a file cut in half), and the
//!   `TABLE DATA` entries of `pg_restore --list` counted for `min-tables`;
//! - plain format: the `-- PostgreSQL database dump complete` line in the last 4 KiB (it is no
//!   longer the last line: since the 2025 minor releases a `\unrestrict KEY` line follows it,
//!   and then it must match the header's `\restrict KEY`), and `CREATE TABLE` lines counted;
//! - globals: the `-- PostgreSQL database cluster dump complete` line.
//!
//! The password, when there is one, is read from `password-file` (root-only) and given to the
//! clients as `PGPASSWORD` in their environment, never in argv or the journal.

use super::child::{Finished, Owner, Stdout};
use super::container::Exec;
use super::spool::Spool;
use super::{check_min_size, Check, DumpError, Dumped, DUMPS_DIR};
use crate::config::{Dump, PgFormat, PostgresqlDump};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek};
use std::os::unix::fs::FileExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The completion line of one database's plain dump.
pub const PLAIN_MARKER: &str = "-- PostgreSQL database dump complete";
/// The completion line of `pg_dumpall`.
pub const CLUSTER_MARKER: &str = "-- PostgreSQL database cluster dump complete";
/// The first bytes of a custom-format dump.
const CUSTOM_MAGIC: &[u8] = b"PGDMP";
/// How long a query of the server may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach the server: the connection arguments and the environment of every client.
struct Server<'a> {
    spec: &'a PostgresqlDump,
    exec: Exec<'a>,
    env: Vec<(&'static str, String)>,
    owner: Owner<'a>,
    deadline: Instant,
}

/// `--no-password` and the host, port and user options of `spec`, for every PostgreSQL client.
pub fn connection(spec: &PostgresqlDump) -> Vec<String> {
    let mut out = vec!["--no-password".to_owned()];
    if let Some(h) = &spec.host {
        out.push(format!("--host={h}"));
    }
    if let Some(p) = spec.port {
        out.push(format!("--port={p}"));
    }
    if let Some(u) = &spec.user {
        out.push(format!("--username={u}"));
    }
    out
}

impl Server<'_> {
    /// `--no-password` and the host, port and user options.
    fn args(&self) -> Vec<String> {
        connection(self.spec)
    }

    /// The time left before the dump's deadline.
    fn left(&self, cap: Duration) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .min(cap)
            .max(Duration::from_secs(1))
    }

    /// Runs a client and returns its stdout.
    fn capture(&self, argv: &[String], input: Stdio) -> Result<(Finished, Vec<u8>), DumpError> {
        let mut out = Vec::new();
        let mut sink = |b: &[u8]| {
            out.extend_from_slice(b);
            Ok(())
        };
        let done = self
            .exec
            .run(
                argv,
                &self.env,
                self.left(QUERY_TIMEOUT),
                self.owner,
                input,
                Stdout::Sink(&mut sink),
            )
            .map_err(|error| DumpError::Start {
                program: argv[0].clone(),
                error,
            })?;
        Ok((done, out))
    }

    /// A one-column query through `psql` on database `postgres`.
    fn query(&self, sql: &str) -> Result<Vec<String>, DumpError> {
        let mut argv = vec!["psql".to_owned(), "-X".into(), "-A".into(), "-t".into()];
        argv.extend(self.args());
        argv.extend(["--dbname=postgres".to_owned(), "-c".into(), sql.into()]);
        let (done, out) = self.capture(&argv, Stdio::null())?;
        if done.timed_out || !done.status.success() {
            return Err(DumpError::Connect {
                detail: done
                    .last_line()
                    .unwrap_or_else(|| format!("psql {}", done.describe())),
            });
        }
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect())
    }
}

/// The major version in `pg_dump --version` output (`pg_dump (PostgreSQL) 15.18 (Debian ...)`).
fn client_major(text: &str) -> Option<u32> {
    let after = text.split(')').nth(1)?.trim();
    after.split(['.', ' ']).next()?.parse().ok()
}

/// How to reach the server of `dump`.
fn server<'a>(dump: &'a Dump, spec: &'a PostgresqlDump) -> Result<Server<'a>, DumpError> {
    let mut env = vec![("PGCONNECT_TIMEOUT", "30".to_owned())];
    if let Some(p) = super::password(spec.password.as_ref())? {
        env.push(("PGPASSWORD", p));
    }
    Ok(Server {
        spec,
        exec: Exec::of(dump),
        env,
        owner: Owner {
            field: "VOUCH_DUMP",
            name: &dump.name,
        },
        deadline: Instant::now() + dump.timeout,
    })
}

/// Preflight: logs in, checks the client against the server, and returns the databases that
/// would be dumped.
pub fn probe(dump: &Dump, spec: &PostgresqlDump) -> Result<Vec<String>, DumpError> {
    databases(&server(dump, spec)?)
}

/// Dumps every database of the entry, then the globals for `"*"`.
pub fn dump(spool: &Spool, dump: &Dump, spec: &PostgresqlDump) -> Result<Vec<Dumped>, DumpError> {
    let server = server(dump, spec)?;
    let databases = databases(&server)?;
    let single = !spec.all() && databases.len() == 1;
    let mut out = Vec::new();
    for db in &databases {
        let ext = match spec.format {
            PgFormat::Custom => "pgdump",
            PgFormat::Plain => "sql",
        };
        let path = if single {
            format!("{DUMPS_DIR}/{}.{ext}", dump.name)
        } else {
            format!("{DUMPS_DIR}/{}/{db}.{ext}", dump.name)
        };
        out.push(database(&server, spool, dump, db, path)?);
    }
    if spec.all() && spec.globals {
        out.push(globals(&server, spool, dump)?);
    }
    Ok(out)
}

/// Logs in, checks the client against the server, and returns the databases to dump.
fn databases(server: &Server<'_>) -> Result<Vec<String>, DumpError> {
    let version = server.query("SHOW server_version_num")?;
    let server_major = version
        .first()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map(|n| n / 10_000)
        .unwrap_or(0);
    let (done, out) = server.capture(&["pg_dump".into(), "--version".into()], Stdio::null())?;
    let text = String::from_utf8_lossy(&out).trim().to_owned();
    if done.status.success() {
        if let Some(client) = client_major(&text) {
            if client < server_major {
                return Err(DumpError::ClientTooOld {
                    client: text,
                    server: server_major,
                });
            }
        }
    }
    let existing = server.query(
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
    )?;
    let spec = server.spec;
    if spec.all() {
        return Ok(existing
            .into_iter()
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

/// Runs `argv` into a fresh spool file and checks its exit.
fn spool_run(
    server: &Server<'_>,
    spool: &Spool,
    argv: &[String],
    timeout: Duration,
) -> Result<(File, u64, String, Vec<u8>), DumpError> {
    super::spool_command(
        server.exec,
        spool,
        argv,
        &server.env,
        server.left(timeout),
        timeout,
        server.owner,
    )
}

/// Dumps and checks one database.
fn database(
    server: &Server<'_>,
    spool: &Spool,
    dump: &Dump,
    db: &str,
    path: String,
) -> Result<Dumped, DumpError> {
    let spec = server.spec;
    crate::systemd::sdnotify::status(&format!("dumping {}/{db} (postgresql)", dump.name));
    let format = match spec.format {
        PgFormat::Custom => "custom",
        PgFormat::Plain => "plain",
    };
    let mut argv = vec![
        "pg_dump".to_owned(),
        "--lock-wait-timeout=300s".into(),
        format!("--format={format}"),
    ];
    argv.extend(server.args());
    argv.push(format!("--dbname={db}"));
    let (mut file, size, sha256, tail) = spool_run(server, spool, &argv, dump.timeout)?;
    let mut checks = vec![Check {
        check: "exit-status",
        min: None,
    }];
    let tables = match spec.format {
        PgFormat::Custom => check_custom(server, spool, &file, db, &mut checks)?,
        PgFormat::Plain => check_plain(spool, &mut file, &tail, db, &mut checks)?,
    };
    if tables < spec.min_tables {
        return Err(DumpError::DatabaseTables {
            database: db.to_owned(),
            tables,
            min: spec.min_tables,
        });
    }
    checks.push(Check {
        check: "min-tables",
        min: Some(spec.min_tables),
    });
    if let Some(min) = check_min_size(dump, size)? {
        checks.push(Check {
            check: "min-size",
            min: Some(min),
        });
    }
    let restore = match spec.format {
        PgFormat::Custom => format!(
            "createdb NEWDB && age -d -i KEY ARCHIVE | tar -xzOf - {path} | pg_restore --exit-on-error --single-transaction -d NEWDB"
        ),
        PgFormat::Plain => format!(
            "createdb NEWDB && age -d -i KEY ARCHIVE | tar -xzOf - {path} | psql -X -v ON_ERROR_STOP=1 --single-transaction -d NEWDB"
        ),
    };
    Ok(entry(
        dump,
        Some(db),
        path,
        (file, size, sha256),
        Some(tables),
        checks,
        restore,
    ))
}

/// A spooled file as a [`Dumped`].
fn entry(
    dump: &Dump,
    db: Option<&str>,
    path: String,
    (file, size, sha256): (File, u64, String),
    tables: Option<u64>,
    checks: Vec<Check>,
    restore: String,
) -> Dumped {
    Dumped {
        name: dump.name.clone(),
        kind: "postgresql",
        database: db.map(str::to_owned),
        path: path.into_bytes(),
        file,
        size,
        sha256,
        mode: 0o600,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        mtime: time::OffsetDateTime::now_utc().unix_timestamp(),
        tables,
        checks,
        started: String::new(),
        duration: Duration::ZERO,
        restore,
    }
}

/// A second handle on the spooled file, at its start, for a reader's stdin.
fn reread(spool: &Spool, file: &File) -> Result<File, DumpError> {
    let spool_error = |error| DumpError::Spool {
        dir: spool.dir().to_owned(),
        error,
    };
    // Opened again through /proc, so the reader gets its own file offset.
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    let again = File::open(format!("/proc/self/fd/{fd}")).map_err(spool_error)?;
    Ok(again)
}

/// Custom format: the header, a full read by `pg_restore`, and the tables in its list.
fn check_custom(
    server: &Server<'_>,
    spool: &Spool,
    file: &File,
    db: &str,
    checks: &mut Vec<Check>,
) -> Result<u64, DumpError> {
    let mut magic = [0u8; 5];
    let read_back = |detail: String| DumpError::ReadBack {
        program: "pg_restore".into(),
        database: db.to_owned(),
        detail,
    };
    if file.read_exact_at(&mut magic, 0).is_err() || magic != CUSTOM_MAGIC {
        return Err(read_back("it does not start with the PGDMP header".into()));
    }
    let full = ["pg_restore".to_owned(), "-f".into(), "/dev/null".into()];
    let (done, _) = server.capture(&full, Stdio::from(reread(spool, file)?))?;
    if done.timed_out || !done.status.success() {
        return Err(read_back(
            done.last_line().unwrap_or_else(|| done.describe()),
        ));
    }
    checks.push(Check {
        check: "pg_restore-read",
        min: None,
    });
    let list = ["pg_restore".to_owned(), "--list".into()];
    let (done, out) = server.capture(&list, Stdio::from(reread(spool, file)?))?;
    if !done.status.success() {
        return Err(read_back(
            done.last_line().unwrap_or_else(|| done.describe()),
        ));
    }
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains(" TABLE DATA "))
        .count() as u64)
}

/// Plain format: the completion line (and `\unrestrict` matching `\restrict`), and the
/// `CREATE TABLE` lines.
fn check_plain(
    spool: &Spool,
    file: &mut File,
    tail: &[u8],
    db: &str,
    checks: &mut Vec<Check>,
) -> Result<u64, DumpError> {
    let spool_error = |error: io::Error| DumpError::Spool {
        dir: spool.dir().to_owned(),
        error,
    };
    let mut tables = 0u64;
    let mut restrict = None;
    let mut reader = BufReader::new(&mut *file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(spool_error)? == 0 {
            break;
        }
        if line.starts_with(b"CREATE TABLE ") {
            tables += 1;
        } else if restrict.is_none() && line.starts_with(b"\\restrict ") {
            restrict = Some(String::from_utf8_lossy(&line[10..]).trim().to_owned());
        }
    }
    drop(reader);
    file.rewind().map_err(spool_error)?;
    let tail = String::from_utf8_lossy(tail);
    let at = tail
        .rfind(PLAIN_MARKER)
        .ok_or_else(|| DumpError::NoMarker {
            database: db.to_owned(),
            expected: PLAIN_MARKER.into(),
        })?;
    if let Some(key) = restrict {
        let want = format!("\\unrestrict {key}");
        if !tail[at..].contains(&want) {
            return Err(DumpError::NoMarker {
                database: db.to_owned(),
                expected: want,
            });
        }
    }
    checks.push(Check {
        check: "marker",
        min: None,
    });
    Ok(tables)
}

/// `pg_dumpall --globals-only`: roles and tablespaces, with its completion line.
fn globals(server: &Server<'_>, spool: &Spool, dump: &Dump) -> Result<Dumped, DumpError> {
    let mut argv = vec!["pg_dumpall".to_owned(), "--globals-only".into()];
    argv.extend(server.args());
    let (file, size, sha256, tail) = spool_run(server, spool, &argv, dump.timeout)?;
    if !String::from_utf8_lossy(&tail).contains(CLUSTER_MARKER) {
        return Err(DumpError::NoMarker {
            database: "globals".into(),
            expected: CLUSTER_MARKER.into(),
        });
    }
    let path = format!("{DUMPS_DIR}/{}/globals.sql", dump.name);
    let checks = vec![
        Check {
            check: "exit-status",
            min: None,
        },
        Check {
            check: "marker",
            min: None,
        },
    ];
    let restore = format!(
        "on a fresh cluster only: age -d -i KEY ARCHIVE | tar -xzOf - {path} | psql -X -d postgres"
    );
    Ok(entry(
        dump,
        None,
        path,
        (file, size, sha256),
        None,
        checks,
        restore,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_major_is_read_from_its_version_line() {
        assert_eq!(
            client_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(client_major("pg_dump (PostgreSQL) 17.6"), Some(17));
        assert_eq!(client_major("nonsense"), None);
    }
}
