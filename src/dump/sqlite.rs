//! `kind = "sqlite"`: a consistent copy through SQLite's online backup API, never the CLI.
//!
//! The live database is opened read-only (so a missing path fails at once and is never
//! created), with a busy timeout for a writer's lock. The copy goes into the run's private
//! spool directory: `step(-1)` copies every page under one read lock, so it never restarts
//! because of a writer; `Busy` and `Locked` are retried until the dump's deadline (rusqlite's
//! own `run_to_completion` would retry forever). The copy must then pass `integrity_check` (or
//! `quick_check`), have pages, and hold at least `min-tables` tables, because an empty file
//! passes `integrity_check`. It is archived at the database's own path, with the live file's
//! mode, owner and time, so `tar -xzf - -C /` puts it back; the walk leaves the live file and
//! its `-wal`, `-shm` and `-journal` out.

use super::spool::Spool;
use super::{check_min_size, Check, DumpError, Dumped};
use crate::config::{Dump, SqliteDump};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The pause between retries while a writer holds the database.
const RETRY: Duration = Duration::from_millis(100);

/// Copies the database, checks the copy and hands it over for archiving.
pub fn dump(spool: &Spool, dump: &Dump, spec: &SqliteDump) -> Result<Dumped, DumpError> {
    let path = &spec.path;
    let fail = |detail: String| DumpError::Sqlite {
        path: path.clone(),
        detail,
    };
    let live = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !live.is_file() {
        return Err(fail("not a regular file".into()));
    }
    writable_if_wal(path)?;
    let copy_path = spool
        .named(&format!("{}.sqlite", dump.name))
        .map_err(|error| DumpError::Spool {
            dir: spool.dir().to_owned(),
            error,
        })?;
    let deadline = Instant::now() + dump.timeout;
    copy(path, &copy_path, spec.busy_timeout, deadline, dump.timeout)?;
    let tables = check_copy(path, &copy_path, spec)?;
    let (file, size, sha256) = take(&copy_path).map_err(|error| DumpError::Spool {
        dir: spool.dir().to_owned(),
        error,
    })?;
    let mut checks = vec![
        Check {
            check: spec.check.pragma(),
            min: None,
        },
        Check {
            check: "min-tables",
            min: Some(spec.min_tables),
        },
    ];
    if let Some(min) = check_min_size(dump, size)? {
        checks.push(Check {
            check: "min-size",
            min: Some(min),
        });
    }
    let shown = path.display();
    let dir = path
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Ok(Dumped {
        name: dump.name.clone(),
        kind: "sqlite",
        database: None,
        path: super::archive_path_of(path),
        file,
        size,
        sha256,
        mode: live.mode() & 0o7777,
        uid: live.uid(),
        gid: live.gid(),
        mtime: live.mtime(),
        tables: Some(tables),
        checks,
        started: String::new(),
        duration: Duration::ZERO,
        restore: format!(
            "stop the application, rm -f {shown}-wal {shown}-shm, then age -d -i KEY ARCHIVE | tar -xzf - -C / {} (in {dir})",
            String::from_utf8_lossy(&super::archive_path_of(path))
        ),
    })
}

/// Preflight: the database opens read-only (never created) and its schema reads; returns the
/// number of tables.
pub fn probe(spec: &SqliteDump) -> Result<u64, DumpError> {
    let fail = |detail: String| DumpError::Sqlite {
        path: spec.path.clone(),
        detail,
    };
    let meta = std::fs::metadata(&spec.path).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    writable_if_wal(&spec.path)?;
    let db = Connection::open_with_flags(
        &spec.path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(e.to_string()))?;
    db.busy_timeout(spec.busy_timeout)
        .map_err(|e| fail(e.to_string()))?;
    let tables: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| fail(e.to_string()))?;
    Ok(u64::try_from(tables).unwrap_or(0))
}

/// Whether the database file's header says WAL mode (its read and write versions, bytes 18
/// and 19, are 2). A file too short for a header is not WAL; opening it reports the rest.
fn is_wal(path: &Path) -> std::io::Result<bool> {
    let mut header = [0u8; 20];
    let file = crate::host::bounded::open_regular(path, crate::host::bounded::Links::Follow)?;
    let n = file.take(20).read(&mut header)?;
    Ok(n == 20 && header.starts_with(b"SQLite format 3\0") && header[18] == 2 && header[19] == 2)
}

/// A WAL database needs its directory writable here (for the `-shm` file), even read-only:
/// checked with `access(W_OK)`, which sees read-only mounts such as `ProtectSystem=strict`.
fn writable_if_wal(path: &Path) -> Result<(), DumpError> {
    if !is_wal(path).unwrap_or(false) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK) {
        Ok(()) => Ok(()),
        Err(_) => Err(DumpError::WalReadOnly {
            path: path.to_owned(),
            dir: dir.to_owned(),
        }),
    }
}

/// Copies `src` into a new database at `dst` with the backup API, retrying while a writer
/// holds a lock, until `deadline`.
fn copy(
    src: &Path,
    dst: &Path,
    busy: Duration,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), DumpError> {
    let fail = |e: rusqlite::Error| DumpError::Sqlite {
        path: src.to_owned(),
        detail: e.to_string(),
    };
    let source = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    source.busy_timeout(busy).map_err(fail)?;
    // Reading the schema proves it is a database before anything is copied.
    source
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(fail)?;
    let mut target = Connection::open(dst).map_err(fail)?;
    let backup = Backup::new(&source, &mut target).map_err(fail)?;
    loop {
        match backup.step(-1).map_err(fail)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            // Busy, Locked, and whatever a later SQLite may add: wait and try again.
            _ => {
                if Instant::now() >= deadline {
                    return Err(DumpError::TimedOut { timeout });
                }
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// Runs the integrity check on the copy and counts its tables.
fn check_copy(live: &Path, copy: &Path, spec: &SqliteDump) -> Result<u64, DumpError> {
    let fail = |e: rusqlite::Error| DumpError::Sqlite {
        path: live.to_owned(),
        detail: format!("the copy cannot be read: {e}"),
    };
    let db = Connection::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(fail)?;
    let pragma = spec.check.pragma();
    let mut stmt = db.prepare(&format!("PRAGMA {pragma}")).map_err(fail)?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(fail)?
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    drop(stmt);
    if lines.as_slice() != ["ok"] {
        return Err(DumpError::Integrity {
            path: live.to_owned(),
            pragma,
            first: lines.first().cloned().unwrap_or_else(|| "no answer".into()),
        });
    }
    let pages: i64 = db
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(fail)?;
    let tables: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(fail)?;
    let tables = u64::try_from(tables).unwrap_or(0);
    if pages <= 0 || tables < spec.min_tables {
        return Err(DumpError::Tables {
            path: live.to_owned(),
            tables,
            min: spec.min_tables,
        });
    }
    db.close().map_err(|(_, e)| fail(e))?;
    Ok(tables)
}

/// Opens the finished copy, hashes it, and removes its name: the open file is the spool.
fn take(copy: &Path) -> io::Result<(File, u64, String)> {
    let mut file = File::open(copy)?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = copy.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    file.rewind()?;
    Ok((file, size, crate::pipeline::io::hex(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SqliteCheck;

    fn spec(path: &Path) -> SqliteDump {
        SqliteDump {
            path: path.to_owned(),
            check: SqliteCheck::Integrity,
            busy_timeout: Duration::from_secs(1),
            min_tables: 1,
        }
    }

    #[test]
    fn a_wal_database_with_a_writer_is_copied_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("app.db");
        let writer = Connection::open(&live).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);",
            )
            .unwrap();
        let copy_path = dir.path().join("copy.db");
        let deadline = Instant::now() + Duration::from_secs(10);
        copy(
            &live,
            &copy_path,
            Duration::from_secs(1),
            deadline,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(check_copy(&live, &copy_path, &spec(&live)).unwrap(), 1);
        let (_, size, _) = take(&copy_path).unwrap();
        assert!(size > 0);
        assert!(!copy_path.exists());
        drop(writer);
    }

    #[test]
    fn an_empty_file_is_refused_and_a_missing_one_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("empty.db");
        std::fs::write(&live, b"").unwrap();
        let copy_path = dir.path().join("copy.db");
        let deadline = Instant::now() + Duration::from_secs(10);
        copy(
            &live,
            &copy_path,
            Duration::from_secs(1),
            deadline,
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(matches!(
            check_copy(&live, &copy_path, &spec(&live)),
            Err(DumpError::Tables { tables: 0, .. })
        ));
        let missing = dir.path().join("missing.db");
        let other = dir.path().join("copy2.db");
        assert!(copy(
            &missing,
            &other,
            Duration::from_secs(1),
            deadline,
            Duration::from_secs(10)
        )
        .is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn garbage_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("junk.db");
        std::fs::write(&live, vec![7u8; 8192]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let e = copy(
            &live,
            &dir.path().join("c.db"),
            Duration::from_secs(1),
            deadline,
            Duration::from_secs(10),
        );
        assert!(matches!(e, Err(DumpError::Sqlite { .. })));
    }
}
