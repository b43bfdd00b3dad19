//! `vouch restore ARCHIVE --dump NAME[/DB] [--into DB] [--replace]`: one dump out of an
//! archive, loaded into a database (a new one by default).
//!
//! The steps, in order:
//!
//! 1. [`prepare`], before the archive is read: the `[[dump]]` of that name gives the kind and
//!    the connection settings; a `command` dump is refused (vouch has no loader for it); the
//!    server is asked for its databases (a refused login stops here), and an `--into` that
//!    exists is refused without `--replace`. SQLite: the destination file is checked the same
//!    way.
//! 2. [`extract`]: the archive is restored as `vouch restore` restores it (both passes, every
//!    entry checked against the manifest, the receipt checked), with the selection made from
//!    the manifest's `dumps` list ([`choose`]): only the dump's entry is written, into a private
//!    directory (mode 0700) in the dump spool. The entry must match the dump's record (size and
//!    SHA-256). The file is opened and the directory removed at once, so the data is on disk
//!    under a name only for that moment, and a damaged archive is refused before any database
//!    is touched.
//! 3. [`Prepared::load`]: the database is created and loaded (`postgresql`, `mariadb`), or the
//!    file put in place (`sqlite`); see each kind's module for how a failure leaves nothing
//!    half-done. SIGINT, SIGTERM and SIGHUP are held back meanwhile: one that arrives stops the
//!    loader, drops the database this restore created, and then ends vouch.

mod client; // the clients run for a load, interruptible
mod mariadb; // MariaDB: CREATE DATABASE, then the SQL on the client's stdin
mod postgresql; // PostgreSQL: CREATE DATABASE, pg_restore or psql, the swap for --replace
mod sqlite; // SQLite: a checked temporary file renamed into place

use super::Listing;
use super::{Opener, Options, RestoreError};
use crate::config::{Dump, DumpKind};
use crate::error::Error;
use crate::pipeline::crypt::Identity;
use crate::pipeline::manifest::{DumpRecord, EntryType};
use crate::systemd::signals::Deferred;
use client::Failed;
use mariadb::Maria;
use postgresql::Pg;
use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The prefix of a private extraction directory in the spool (`restore-PID.RANDOM`).
const DIR_PREFIX: &str = "restore-";

/// Which dump: `NAME`, or `NAME/DB` for one database of a dump that holds several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The `[[dump]]` name.
    pub name: String,
    /// The database, for a dump of several.
    pub database: Option<String>,
}

impl Selector {
    /// Reads `NAME` or `NAME/DB`.
    pub fn parse(arg: &str) -> Result<Selector, Error> {
        let (name, database) = match arg.split_once('/') {
            Some((n, d)) => (n, Some(d)),
            None => (arg, None),
        };
        if name.is_empty() || database.is_some_and(|d| d.is_empty() || d.contains('/')) {
            return Err(Error::Usage(format!(
                "--dump {arg:?}: give a dump's name (NAME), or NAME/DB for one database of a dump of several"
            )));
        }
        Ok(Selector {
            name: name.to_owned(),
            database: database.map(str::to_owned),
        })
    }

    /// `NAME` or `NAME/DB`, as given.
    fn show(&self) -> String {
        match &self.database {
            Some(d) => format!("{}/{d}", self.name),
            None => self.name.clone(),
        }
    }
}

/// The dump's record in the manifest for `selector`, and its entry's stored path. `kind` is
/// the config's kind, which the archive's must match.
pub fn choose(
    manifest: &Listing,
    selector: &Selector,
    kind: &str,
) -> Result<(DumpRecord, Vec<u8>), RestoreError> {
    let all = &manifest.tail.dumps;
    let named: Vec<&DumpRecord> = all.iter().filter(|d| d.name == selector.name).collect();
    if named.is_empty() {
        let mut held: Vec<String> = all
            .iter()
            .map(|d| format!("{} ({})", d.name, d.kind))
            .collect();
        held.dedup();
        return Err(RestoreError::Refused(if held.is_empty() {
            format!(
                "the archive holds no dump {}: it holds no dumps at all",
                selector.name
            )
        } else {
            format!(
                "the archive holds no dump {}; it holds: {}",
                selector.name,
                held.join(", ")
            )
        }));
    }
    if named[0].kind != kind {
        return Err(RestoreError::Refused(format!(
            "dump {} is a {} dump in the archive and kind = {kind:?} in the config",
            selector.name, named[0].kind
        )));
    }
    let databases: Vec<&DumpRecord> = named
        .iter()
        .copied()
        .filter(|d| d.database.is_some())
        .collect();
    let listed = || {
        databases
            .iter()
            .filter_map(|d| d.database.as_deref())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let record = match &selector.database {
        Some(db) => databases
            .iter()
            .find(|d| d.database.as_deref() == Some(db.as_str()))
            .copied()
            .ok_or_else(|| {
                let globals = if named.iter().any(|d| d.database.is_none())
                    && (db == "globals" || db == "_system")
                {
                    format!(
                        " ({}/{db}.sql holds the roles or users and grants and is not loaded by vouch; see the stock restore in docs/dumps.md)",
                        selector.name
                    )
                } else {
                    String::new()
                };
                RestoreError::Refused(format!(
                    "dump {} holds no database {db:?}{globals}; it holds: {}",
                    selector.name,
                    listed()
                ))
            })?,
        None if named.len() == 1 => named[0],
        None => {
            return Err(RestoreError::Refused(format!(
                "dump {name} holds several databases ({}): name one, as --dump {name}/DB",
                listed(),
                name = selector.name
            )))
        }
    };
    let entry = manifest.find(&record.path)?.ok_or_else(|| {
        damaged(format!(
            "{}: the dump's file is not in the manifest",
            record.path
        ))
    })?;
    if entry.kind != EntryType::File
        || entry.size != record.bytes
        || entry.sha256.as_deref() != Some(record.sha256.as_str())
    {
        return Err(damaged(format!(
            "{}: the manifest's entry differs from the dump's record (size or SHA-256)",
            record.path
        )));
    }
    Ok((record.clone(), entry.path_bytes()))
}

fn damaged(msg: String) -> RestoreError {
    RestoreError::Damaged(msg)
}

/// The dump's file, extracted and checked, open; its name is already gone.
#[derive(Debug)]
pub struct Extracted {
    /// The dump's record in the manifest.
    pub record: DumpRecord,
    /// Its data.
    pub file: File,
    /// The archived mode, uid and gid.
    pub meta: (u32, u32, u32),
}

/// Removes the private directories that restores which died left in `spool` (their process
/// is gone).
fn sweep(spool: &Path) {
    let Ok(entries) = fs::read_dir(spool) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('.').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A private extraction directory, removed with what it holds when dropped.
struct Private(PathBuf);

impl Drop for Private {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("restore --dump: cannot remove {}: {e}", self.0.display());
            }
        }
    }
}

/// Restores only the dump `selector` names out of the archive read by `open`, into a private
/// directory in `spool`, and returns it open (the directory removed). `compression` is what the
/// archive's name says.
#[allow(clippy::too_many_arguments)]
pub fn extract(
    open: Opener<'_>,
    identity: &Identity,
    compression: crate::config::Compression,
    receipt: Option<(&str, u64)>,
    total: u64,
    spool: &Path,
    selector: &Selector,
    kind: &str,
) -> Result<Extracted, RestoreError> {
    let io_err = |e| RestoreError::Io {
        path: spool.to_owned(),
        error: e,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(spool)
        .map_err(io_err)?;
    sweep(spool);
    let token = super::record::token().map_err(io_err)?;
    let private = Private(spool.join(format!(
        "{DIR_PREFIX}{}.{}",
        std::process::id(),
        &token[..16]
    )));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&private.0)
        .map_err(io_err)?;
    let opts = Options {
        to: private.0.clone(),
        progress: true,
        compression,
        spool: spool.to_owned(),
        ..Options::default()
    };
    let mut chosen = None;
    let mut select = |m: &Listing| {
        let (record, path) = choose(m, selector, kind)?;
        chosen = Some((record, path.clone()));
        Ok(vec![path])
    };
    super::restore_with(open, identity, receipt, total, &opts, &mut select)?;
    let (record, path) = chosen.ok_or_else(|| damaged("no dump was selected".into()))?;
    let at = private.0.join(std::ffi::OsStr::new(
        &<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(path),
    ));
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&at)
        .map_err(|e| RestoreError::Io {
            path: at.clone(),
            error: e,
        })?;
    let meta = file.metadata().map_err(|e| RestoreError::Io {
        path: at.clone(),
        error: e,
    })?;
    drop(private);
    Ok(Extracted {
        record,
        file,
        meta: (meta.mode() & 0o7777, meta.uid(), meta.gid()),
    })
}

/// Where a dump goes, looked at before the archive is read.
pub struct Prepared<'a> {
    dump: &'a Dump,
    into: Option<String>,
    replace: bool,
    server: Server<'a>,
}

/// The kind of destination.
enum Server<'a> {
    Postgresql(Pg<'a>),
    Mariadb(Maria<'a>),
    Sqlite,
}

/// An error about loading into `into` (exit 30), with the fix.
fn load_error(dump: &Dump, into: &str, detail: String, hint: impl Into<String>) -> Error {
    Error::DumpLoad {
        name: dump.name.clone(),
        into: into.to_owned(),
        detail,
        hint: hint.into(),
    }
}

/// The first step (see the module doc): the kind has a loader, the server answers, and an
/// `--into` that exists is refused without `replace`.
pub fn prepare<'a>(
    dump: &'a Dump,
    selector: &Selector,
    into: Option<&str>,
    replace: bool,
) -> Result<Prepared<'a>, Error> {
    let server = match &dump.kind {
        DumpKind::Command(c) => {
            return Err(Error::Usage(format!(
                "dump {} is kind = \"command\": vouch has no loader for it. Extract it with `vouch restore ARCHIVE --to DIR {}/{}.{}` (or `age -d -i KEY ARCHIVE | tar -xzOf - {}/{}.{}`) and feed it to the program that loads it",
                dump.name, crate::dump::DUMPS_DIR, dump.name, c.extension, crate::dump::DUMPS_DIR, dump.name, c.extension
            )))
        }
        DumpKind::Postgresql(p) => Server::Postgresql(
            Pg::new(dump, p).map_err(|d| load_error(dump, "the server", d, "Fix the [[dump]]'s password-file."))?,
        ),
        DumpKind::Mariadb(m) => Server::Mariadb(
            Maria::new(dump, m).map_err(|d| load_error(dump, "the server", d, "Fix the [[dump]]'s password-file."))?,
        ),
        DumpKind::Sqlite(_) => Server::Sqlite,
    };
    if selector.database.is_some() && matches!(server, Server::Sqlite) {
        return Err(Error::Usage(format!(
            "--dump {}: an SQLite dump holds one database; give its name alone",
            selector.show()
        )));
    }
    let prepared = Prepared {
        dump,
        into: into.map(str::to_owned),
        replace,
        server,
    };
    if let Some(into) = into {
        prepared.check_into(into)?;
    }
    Ok(prepared)
}

impl Prepared<'_> {
    /// The databases on the server (exit 30 when it cannot be asked).
    fn databases(&self) -> Result<Vec<String>, Error> {
        let listed = match &self.server {
            Server::Postgresql(pg) => pg.databases(),
            Server::Mariadb(m) => m.databases(),
            Server::Sqlite => return Ok(Vec::new()),
        };
        listed.map_err(|f| {
            load_error(
                self.dump,
                "the server",
                format!("cannot list its databases: {}", f.detail()),
                format!(
                    "Check that the server is running and that the [[dump]] {}'s host, port, user and password-file let vouch log in (`vouch preflight` checks the same login).",
                    self.dump.name
                ),
            )
        })
    }

    /// Refuses `into` when it cannot be a name, or exists and may not be replaced.
    fn check_into(&self, into: &str) -> Result<bool, Error> {
        let max = match &self.server {
            Server::Postgresql(_) => postgresql::MAX_NAME,
            Server::Mariadb(_) => mariadb::MAX_NAME,
            Server::Sqlite => {
                return sqlite::check_dest(Path::new(into), self.replace)
                    .map(|()| Path::new(into).exists())
                    .map_err(|r| self.sqlite_refused(into, r));
            }
        };
        if into.is_empty() || into.len() > max || into.contains('\0') {
            return Err(Error::Usage(format!(
                "--into {into:?}: a database name is 1 to {max} bytes"
            )));
        }
        let exists = self.databases()?.iter().any(|d| d == into);
        if exists && !self.replace {
            return Err(Error::Usage(format!(
                "database {into} already exists; vouch never loads a dump over an existing database: give another --into, or add --replace to replace it"
            )));
        }
        Ok(exists)
    }

    fn sqlite_refused(&self, into: &str, r: sqlite::Refused) -> Error {
        match r {
            sqlite::Refused::Usage(msg) => Error::Usage(msg),
            sqlite::Refused::Failed(detail) => load_error(
                self.dump,
                into,
                detail,
                "Nothing was put in place; check that the directory is writable and has room.",
            ),
        }
    }

    /// Loads the extracted dump: into `--into`, or a new name made from the dumped database
    /// (or file) and `created`, the archive's time. Returns where it went and whether an
    /// existing one was replaced.
    pub fn load(self, mut x: Extracted, created: OffsetDateTime) -> Result<(String, bool), Error> {
        if let Server::Sqlite = self.server {
            let into = match &self.into {
                Some(p) => p.clone(),
                None => free_file(&format!(
                    "/{}.restored-{}",
                    x.record.path,
                    stamp(created, true)
                )),
            };
            let replacing = Path::new(&into).exists();
            log::info!("restore --dump {}: writing {into}", self.dump.name);
            sqlite::place(&mut x.file, x.meta, Path::new(&into), self.replace)
                .map_err(|r| self.sqlite_refused(&into, r))?;
            return Ok((into, replacing));
        }
        let (into, replacing) = match &self.into {
            Some(n) => (n.clone(), self.check_into(n)?),
            None => {
                let base = format!(
                    "{}_restored_{}",
                    x.record.database.as_deref().unwrap_or(&self.dump.name),
                    stamp(created, false)
                );
                (free_name(&base, &self.databases()?, self.max()), false)
            }
        };
        let interrupts = Deferred::start();
        let done = if replacing {
            self.replace_with(&into, x.file, &interrupts)
        } else {
            self.create_and_load(&into, x.file, &interrupts)
        };
        match done {
            Ok(()) => Ok((into, replacing)),
            Err((Failed::Interrupted(signal), hint)) => {
                log::warn!(
                    "restore --dump {}: interrupted by {}. {hint}",
                    self.dump.name,
                    signal.as_str()
                );
                interrupts.reraise(signal);
                Err(Error::Internal(format!(
                    "interrupted by {}",
                    signal.as_str()
                )))
            }
            Err((f, hint)) => Err(load_error(self.dump, &into, f.detail(), hint)),
        }
    }

    fn max(&self) -> usize {
        match self.server {
            Server::Postgresql(_) => postgresql::MAX_NAME,
            _ => mariadb::MAX_NAME,
        }
    }

    fn create(&self, name: &str) -> Result<(), Failed> {
        log::info!(
            "restore --dump {}: creating database {name}",
            self.dump.name
        );
        match &self.server {
            Server::Postgresql(pg) => pg.create(name),
            Server::Mariadb(m) => m.create(name),
            Server::Sqlite => Ok(()),
        }
    }

    fn drop_database(&self, name: &str) -> Result<(), Failed> {
        match &self.server {
            Server::Postgresql(pg) => pg.drop_database(name),
            Server::Mariadb(m) => m.drop_database(name),
            Server::Sqlite => Ok(()),
        }
    }

    fn load_into(&self, name: &str, file: File, interrupts: &Deferred) -> Result<(), Failed> {
        let how = match &self.server {
            Server::Postgresql(_) if postgresql::is_custom(&file) => "pg_restore",
            Server::Postgresql(_) => "psql",
            _ => "mariadb",
        };
        log::info!(
            "restore --dump {}: loading into {name} ({how})",
            self.dump.name
        );
        match &self.server {
            Server::Postgresql(pg) => pg.load(name, file, interrupts),
            Server::Mariadb(m) => m.load(name, file, interrupts),
            Server::Sqlite => Ok(()),
        }
    }

    /// Creates `name` and loads `file` into it; a load that fails drops it again.
    fn create_and_load(
        &self,
        name: &str,
        file: File,
        interrupts: &Deferred,
    ) -> Result<(), (Failed, String)> {
        self.create(name).map_err(|f| {
            (f, "Nothing was created; check that the [[dump]]'s user may create databases (CREATEDB) and that the server accepts the name.".to_owned())
        })?;
        if let Err(f) = self.load_into(name, file, interrupts) {
            let cleanup = match self.drop_database(name) {
                Ok(()) => format!("database {name} was dropped again"),
                Err(e) => format!(
                    "database {name} could not be dropped ({}): drop it by hand",
                    e.detail()
                ),
            };
            return Err((f, format!("The dump did not load; {cleanup}. The loader's messages are in the journal (VOUCH_DUMP={}).", self.dump.name)));
        }
        Ok(())
    }

    /// `--replace` of the existing database `into` (see each kind's module doc).
    fn replace_with(
        &self,
        into: &str,
        file: File,
        interrupts: &Deferred,
    ) -> Result<(), (Failed, String)> {
        let existing = self
            .databases()
            .map_err(|e| (Failed::Client(e.to_string()), String::new()))?;
        let scratch = free_name(&format!("{into}_vouch_new"), &existing, self.max());
        let again = file.try_clone();
        self.create_and_load(&scratch, file, interrupts)
            .map_err(|(f, hint)| (f, format!("{hint} Database {into} was not touched.")))?;
        match &self.server {
            Server::Postgresql(pg) => {
                let old = free_name(&format!("{into}_vouch_old"), &existing, self.max());
                log::info!(
                    "restore --dump {}: swapping {scratch} in for {into}",
                    self.dump.name
                );
                if let Err(f) = pg.swap(&scratch, into, &old) {
                    let _ = pg.drop_database(&scratch);
                    return Err((f, format!("Database {into} was not touched; close the sessions connected to it (stop the application) and run the restore again.")));
                }
                if let Err(f) = pg.drop_database(&old) {
                    log::warn!("restore --dump {}: the old database, renamed {old}, could not be dropped: {}", self.dump.name, f.detail());
                }
                Ok(())
            }
            _ => self.reload(into, &scratch, again, interrupts),
        }
    }

    /// MariaDB `--replace`, once the dump loaded into `scratch`: `into` dropped, created and
    /// loaded again; `scratch` dropped when that went through, kept otherwise.
    fn reload(
        &self,
        into: &str,
        scratch: &str,
        again: std::io::Result<File>,
        interrupts: &Deferred,
    ) -> Result<(), (Failed, String)> {
        let keep = format!("Database {scratch} holds the complete copy of the dump and is kept.");
        let mut file = again.map_err(|e| (Failed::Client(e.to_string()), keep.clone()))?;
        std::io::Seek::rewind(&mut file)
            .map_err(|e| (Failed::Client(e.to_string()), keep.clone()))?;
        log::info!(
            "restore --dump {}: dropping {into} to load it again",
            self.dump.name
        );
        self.drop_database(into)
            .map_err(|f| (f, format!("{keep} Database {into} was not touched.")))?;
        self.create(into).map_err(|f| (f, keep.clone()))?;
        self.load_into(into, file, interrupts)
            .map_err(|f| (f, keep.clone()))?;
        if let Err(f) = self.drop_database(scratch) {
            log::warn!(
                "restore --dump {}: {scratch} could not be dropped: {}",
                self.dump.name,
                f.detail()
            );
        }
        Ok(())
    }
}

/// The archive's time for a new name: `20261201_1403`, or `20261201T140305Z` for a file.
fn stamp(t: OffsetDateTime, file: bool) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    if file {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    } else {
        format!(
            "{:04}{:02}{:02}_{:02}{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        )
    }
}

/// `base` cut to `max` bytes, or with `_2`, `_3`, ... when that is taken.
fn free_name(base: &str, taken: &[String], max: usize) -> String {
    let cut = |s: &str, n: usize| {
        let mut end = n.min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    };
    let first = cut(base, max);
    if !taken.contains(&first) {
        return first;
    }
    (2u32..)
        .map(|i| {
            let suffix = format!("_{i}");
            format!("{}{suffix}", cut(base, max - suffix.len()))
        })
        .find(|n| !taken.contains(n))
        .expect("some suffix is free")
}

/// `path`, or with `-2`, `-3`, ... when a file (or a companion of one) is there.
fn free_file(path: &str) -> String {
    let used = |p: &str| {
        ["", "-wal", "-shm", "-journal"]
            .iter()
            .any(|s| fs::symlink_metadata(format!("{p}{s}")).is_ok())
    };
    if !used(path) {
        return path.to_owned();
    }
    (2u32..)
        .map(|i| format!("{path}-{i}"))
        .find(|p| !used(p))
        .expect("some suffix is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_name_a_dump_or_one_of_its_databases() {
        assert_eq!(
            Selector::parse("app").unwrap(),
            Selector {
                name: "app".into(),
                database: None
            }
        );
        assert_eq!(
            Selector::parse("all/blog").unwrap().database.as_deref(),
            Some("blog")
        );
        for bad in ["", "/x", "a/", "a/b/c"] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn free_names_fit_and_do_not_collide() {
        let taken = vec!["app_restored".to_owned(), "app_restored_2".to_owned()];
        assert_eq!(free_name("app_restored", &taken, 63), "app_restored_3");
        assert_eq!(free_name("fresh", &taken, 63), "fresh");
        let long = "x".repeat(70);
        assert_eq!(free_name(&long, &[], 63).len(), 63);
        let taken = vec!["x".repeat(63)];
        let n = free_name(&long, &taken, 63);
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("_2"));
    }

    #[test]
    fn stamps_are_utc() {
        let t = OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap();
        assert_eq!(stamp(t, false), "20261118_1106");
        assert_eq!(stamp(t, true), "20261118T110640Z");
    }
}
