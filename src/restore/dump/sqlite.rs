//! SQLite: the snapshot put at a path of its own, never over a file without `--replace`.
//!
//! The snapshot is copied into a temporary file in the destination's directory
//! (`.NAME.vouch-restore.PID`, created exclusively, mode 0600 until it is complete), given the
//! archived mode (and, as root, owner), synced, opened through vouch's own SQLite and checked
//! with `PRAGMA integrity_check`, synced again and only then put in place: with a hard link when
//! nothing may be replaced (so a file that appeared meanwhile is not overwritten either), with
//! `rename(2)` over the old file with `--replace`; the directory is synced last. Any failure
//! removes the temporary file and leaves the destination as it was.
//!
//! A `-wal`, `-shm` or `-journal` file beside the destination refuses the restore: an old
//! write-ahead log beside a restored file is applied to it and corrupts it, and its presence
//! means an application may have the database open.

use rusqlite::{Connection, OpenFlags};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The files SQLite keeps beside a database.
const COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Why a file could not be put in place.
#[derive(Debug)]
pub(super) enum Refused {
    /// The destination cannot be used as given (exit 2): it exists, it is not a file, a
    /// companion file is beside it, its directory is missing.
    Usage(String),
    /// Writing or checking the file failed (exit 30).
    Failed(String),
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Whether the file at `dest` may be written: its directory exists, no companion file is
/// beside it, and it does not exist (or, with `replace`, is a regular file).
pub(super) fn check_dest(dest: &Path, replace: bool) -> Result<(), Refused> {
    let dir = parent(dest);
    if !dir.is_dir() {
        return Err(Refused::Usage(format!(
            "{}: its directory {} does not exist",
            dest.display(),
            dir.display()
        )));
    }
    for suffix in COMPANIONS {
        let c = with_suffix(dest, suffix);
        if fs::symlink_metadata(&c).is_ok() {
            return Err(Refused::Usage(format!(
                "{} exists beside {}: stop the application that uses the database and remove it first (an old -wal beside a restored file corrupts it)",
                c.display(),
                dest.display()
            )));
        }
    }
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Refused::Failed(format!("{}: {e}", dest.display()))),
        Ok(m) if !m.file_type().is_file() => Err(Refused::Usage(format!(
            "{} exists and is not a regular file",
            dest.display()
        ))),
        Ok(_) if !replace => Err(Refused::Usage(format!(
            "{} already exists; vouch never restores over an existing file: give another --into, or add --replace to replace it",
            dest.display()
        ))),
        Ok(_) => Ok(()),
    }
}

/// The directory holding `path`.
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Puts the snapshot `from` (mode, uid, gid as archived) at `dest` (see the module doc).
pub(super) fn place(
    from: &mut File,
    (mode, uid, gid): (u32, u32, u32),
    dest: &Path,
    replace: bool,
) -> Result<(), Refused> {
    check_dest(dest, replace)?;
    let name = dest
        .file_name()
        .ok_or_else(|| Refused::Usage(format!("{} is not a file name", dest.display())))?;
    let tmp = parent(dest).join(format!(
        ".{}.vouch-restore.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = write_checked(from, (mode, uid, gid), &tmp).and_then(|()| {
        if replace {
            fs::rename(&tmp, dest).map_err(|e| fail(dest, e))
        } else {
            match fs::hard_link(&tmp, dest) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Refused::Usage(format!(
                    "{} appeared while the restore ran; it was left alone",
                    dest.display()
                ))),
                other => other.map_err(|e| fail(dest, e)),
            }
        }
    });
    for p in std::iter::once(tmp.clone()).chain(COMPANIONS.map(|s| with_suffix(&tmp, s))) {
        let _ = fs::remove_file(p);
    }
    result?;
    File::open(parent(dest))
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(&parent(dest), e))
}

/// `path: error` as a failure.
fn fail(path: &Path, e: impl std::fmt::Display) -> Refused {
    Refused::Failed(format!("{}: {e}", path.display()))
}

/// Writes the snapshot into the new file `tmp`, gives it its mode and owner, syncs it, and
/// checks it with `PRAGMA integrity_check`.
fn write_checked(
    from: &mut File,
    (mode, uid, gid): (u32, u32, u32),
    tmp: &Path,
) -> Result<(), Refused> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)
        .map_err(|e| fail(tmp, e))?;
    io::copy(from, &mut out).map_err(|e| fail(tmp, e))?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::fchown(&out, Some(uid), Some(gid)).map_err(|e| fail(tmp, e))?;
    }
    out.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| fail(tmp, e))?;
    out.sync_all().map_err(|e| fail(tmp, e))?;
    drop(out);
    integrity(tmp)?;
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| fail(tmp, e))
}

/// `PRAGMA integrity_check` on the file at `path` must answer `ok`.
fn integrity(path: &Path) -> Result<(), Refused> {
    let bad = |e: rusqlite::Error| fail(path, format!("cannot be read by SQLite: {e}"));
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(bad)?;
    let lines: Vec<String> = {
        let mut stmt = db.prepare("PRAGMA integrity_check").map_err(bad)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(bad)?;
        rows.collect::<Result<_, _>>().map_err(bad)?
    };
    db.close().map_err(|(_, e)| bad(e))?;
    if lines.as_slice() != ["ok"] {
        return Err(fail(
            path,
            format!(
                "fails integrity_check: {}",
                lines.first().map_or("no answer", String::as_str)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(dir: &Path) -> File {
        let p = dir.join("snap.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS t(x); DELETE FROM t; INSERT INTO t VALUES (42);",
        )
        .unwrap();
        c.close().unwrap();
        File::open(p).unwrap()
    }

    #[test]
    fn a_snapshot_is_placed_checked_and_never_over_a_file_without_replace() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("app.db");
        place(&mut snapshot(dir.path()), (0o640, 0, 0), &dest, false).unwrap();
        let c = Connection::open(&dest).unwrap();
        let x: i64 = c.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 42);
        drop(c);
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(matches!(
            place(&mut snapshot(dir.path()), (0o640, 0, 0), &dest, false),
            Err(Refused::Usage(_))
        ));
        place(&mut snapshot(dir.path()), (0o600, 0, 0), &dest, true).unwrap();
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "only snap.db and app.db: {left:?}");
    }

    #[test]
    fn garbage_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        fs::write(&junk, vec![7u8; 8192]).unwrap();
        let dest = dir.path().join("app.db");
        let e = place(&mut File::open(&junk).unwrap(), (0o600, 0, 0), &dest, false);
        assert!(matches!(e, Err(Refused::Failed(_))), "{e:?}");
        assert!(!dest.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_wal_beside_the_destination_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("app.db");
        fs::write(with_suffix(&dest, "-wal"), b"x").unwrap();
        assert!(matches!(check_dest(&dest, true), Err(Refused::Usage(_))));
    }
}
