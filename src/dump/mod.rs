//! Database dumps that prove their output, and the hooks around a run.
//!
//! A `vouch run` with `[[dump]]` entries makes every dump before a byte of the archive is
//! written: each is spooled ([`spool`]), checked by its kind ([`sqlite`], [`command`]), and only
//! then becomes an ordinary archive entry of known size ([`entry`]). With `container`, the
//! clients run inside a running container ([`container`]). Any failure is exit 20
//! with the dump named; the targets are not touched. [`hook`] runs the `[[hook]]` commands:
//! before the dumps, their cleanups once everything is read, after the commit, or when the run
//! failed. [`child`] is the one place a program is started, with its own process group and a
//! deadline.

pub mod child;
pub mod command;
pub mod container;
pub mod entry;
pub mod error;
pub mod hook;
pub mod mariadb;
pub mod postgresql;
pub mod preflight;
pub mod spool;
pub mod sqlite;

pub use error::{DumpError, HookError};

use crate::config::{Dump, DumpKind, MinSize, Settings};
use crate::error::Error;
use crate::host::credential::{self, Secret};
use crate::host::dirs::Dirs;
use crate::systemd::journal::{Entry, Event};
use sha2::{Digest, Sha256};
use spool::Spool;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How much of a dump's end is kept for the tail checks.
pub const TAIL_BYTES: usize = 4096;

/// Where `.vouch/dumps/` entries live in the archive.
pub const DUMPS_DIR: &str = ".vouch/dumps";

/// One check a dump passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Its name (`exit-status`, `min-size`, `integrity_check`, ...).
    pub check: &'static str,
    /// The threshold it was held to, if any.
    pub min: Option<u64>,
}

/// A dump that passed its checks, spooled and ready to be archived.
#[derive(Debug)]
pub struct Dumped {
    /// The `[[dump]]` name.
    pub name: String,
    /// Its kind.
    pub kind: &'static str,
    /// The database it holds, for the kinds with several (`None` for a cluster's globals).
    pub database: Option<String>,
    /// Its path in the archive (relative to `/`).
    pub path: Vec<u8>,
    /// The spooled bytes, rewound.
    pub file: File,
    /// Their size.
    pub size: u64,
    /// Their SHA-256.
    pub sha256: String,
    /// Mode, owner and time of the entry.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Modification time.
    pub mtime: i64,
    /// Tables counted, when the kind counts them.
    pub tables: Option<u64>,
    /// The checks it passed.
    pub checks: Vec<Check>,
    /// When it started (RFC 3339).
    pub started: String,
    /// How long it took.
    pub duration: Duration,
    /// The stock command that restores it.
    pub restore: String,
}

/// A writer into a spool file that hashes, counts and keeps the last [`TAIL_BYTES`].
pub struct Spooling {
    file: File,
    hasher: Sha256,
    size: u64,
    tail: Vec<u8>,
}

impl Spooling {
    /// Starts writing into `file`.
    pub fn new(file: File) -> Spooling {
        Spooling {
            file,
            hasher: Sha256::new(),
            size: 0,
            tail: Vec::with_capacity(2 * TAIL_BYTES),
        }
    }

    /// Appends `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * TAIL_BYTES {
            self.tail.drain(..self.tail.len() - TAIL_BYTES);
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes and rewinds: the file, its size, its SHA-256 and its last bytes.
    pub fn finish(mut self) -> io::Result<(File, u64, String, Vec<u8>)> {
        self.file.flush()?;
        self.file.rewind()?;
        let keep = self.tail.len().saturating_sub(TAIL_BYTES);
        let tail = self.tail.split_off(keep);
        let sha = crate::pipeline::io::hex(&self.hasher.finalize());
        Ok((self.file, self.size, sha, tail))
    }
}

/// Runs a dump program's `argv` (on the host or in the dump's container) into a fresh spool
/// file within `limit` and checks that it exited 0 (`timeout` is the configured limit the error names): the spooled file (rewound),
/// its size, SHA-256 and last bytes.
pub fn spool_command(
    exec: container::Exec<'_>,
    spool: &Spool,
    argv: &[String],
    env: &[(&str, String)],
    limit: Duration,
    timeout: Duration,
    owner: child::Owner<'_>,
) -> Result<(File, u64, String, Vec<u8>), DumpError> {
    let spool_error = |error| DumpError::Spool {
        dir: spool.dir().to_owned(),
        error,
    };
    let mut spooling = Spooling::new(spool.anonymous().map_err(spool_error)?);
    let done = {
        let mut sink = |b: &[u8]| spooling.push(b);
        exec.run(
            argv,
            env,
            limit,
            owner,
            std::process::Stdio::null(),
            child::Stdout::Sink(&mut sink),
        )
        .map_err(|error| DumpError::Start {
            program: argv[0].clone(),
            error,
        })?
    };
    if let Some(error) = done.sink_error {
        return Err(spool_error(error));
    }
    if done.timed_out {
        return Err(DumpError::TimedOut { timeout });
    }
    if !done.status.success() {
        return Err(DumpError::Exited {
            program: argv[0].clone(),
            status: done.describe(),
            stderr: done.last_line(),
        });
    }
    spooling.finish().map_err(spool_error)
}

/// The password of a server dump: the first line of its `password-file` or `credential`.
pub fn password(secret: Option<&Secret>) -> Result<Option<String>, DumpError> {
    let Some(secret) = secret else {
        return Ok(None);
    };
    let dir = Dirs::from_env().credentials;
    credential::read_password(secret, dir.as_deref())
        .map(Some)
        .map_err(|error| DumpError::Credential {
            secret: secret.clone(),
            error,
        })
}

/// The spool directory for `settings`: `[dumps] spool-dir`, else `spool` in the state directory.
pub fn spool_dir(settings: &Settings, dirs: &Dirs) -> PathBuf {
    settings
        .dumps
        .spool_dir
        .clone()
        .unwrap_or_else(|| dirs.state.join("spool"))
}

/// Exclude patterns that keep the live files of SQLite dumps (and their `-wal`, `-shm` and
/// `-journal` files) out of the walk: their snapshot is archived at their path instead.
pub fn live_file_excludes(settings: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    for d in &settings.dump {
        if let DumpKind::Sqlite(s) = &d.kind {
            let base = s.path.display().to_string();
            for suffix in ["", "-wal", "-shm", "-journal"] {
                out.push(globset::escape(&format!("{base}{suffix}")));
            }
        }
    }
    out
}

/// The dump `name`'s size in the latest verified archive on the first target, if any.
pub fn last_verified_size(settings: &Settings, dirs: &Dirs, name: &str) -> Option<u64> {
    let target = settings.targets.first()?;
    let log = crate::target::archives::VerifyLog::load(&dirs.state);
    let archives = crate::target::open(target)
        .scan_own(&settings.backup.name)
        .ok()?;
    archives
        .iter()
        .rev()
        .filter(|a| crate::target::archives::is_verified(a, &target.name, &log))
        .find_map(|a| {
            let r = a.receipt.as_ref()?;
            r.dumps.iter().find(|d| d.name == name).map(|d| d.bytes)
        })
}

/// An absolute `min-size`, held against each file of a dump: the threshold it applied, or the
/// error. (A percentage is held against the whole dump by [`check_share`].)
pub fn check_min_size(dump: &Dump, size: u64) -> Result<Option<u64>, DumpError> {
    let Some(MinSize::Bytes(min)) = dump.min_size else {
        return Ok(None);
    };
    if size < min {
        return Err(DumpError::TooSmall {
            bytes: size,
            min,
            reference: None,
        });
    }
    Ok(Some(min))
}

/// A percentage `min-size`: the dump's files together against the same dump in the latest
/// verified archive (with none yet, only "not empty"). Records the check on each file.
fn check_share(
    settings: &Settings,
    dirs: &Dirs,
    dump: &Dump,
    files: &mut [Dumped],
) -> Result<(), DumpError> {
    let Some(MinSize::Percent(p)) = dump.min_size else {
        return Ok(());
    };
    let total: u64 = files.iter().map(|f| f.size).sum();
    let reference = last_verified_size(settings, dirs, &dump.name);
    let min = reference.map_or(1, |last| last.saturating_mul(u64::from(p)) / 100);
    if total < min {
        return Err(DumpError::TooSmall {
            bytes: total,
            min,
            reference,
        });
    }
    for f in files {
        f.checks.push(Check {
            check: "min-size",
            min: Some(min),
        });
    }
    Ok(())
}

/// What a run holds between its before-hooks and the end of its read: the cleanups owed and
/// the checked dumps.
pub type Prepared<'a> = (hook::Cleanups<'a>, Vec<Dumped>);

/// Runs the before-hooks, then makes every dump. On a failure the owed cleanups run before the
/// error is returned.
pub fn prepare<'a>(settings: &'a Settings, dirs: &Dirs) -> Result<Prepared<'a>, Error> {
    let cleanups = hook::before(settings)?;
    let dumps = make_all(settings, dirs)?;
    Ok((cleanups, dumps))
}

/// Makes every configured dump, in config order, and checks each. The first failure stops the
/// run (exit 20); nothing has been written to a target by then.
pub fn make_all(settings: &Settings, dirs: &Dirs) -> Result<Vec<Dumped>, Error> {
    if settings.dump.is_empty() {
        return Ok(Vec::new());
    }
    let dir = spool_dir(settings, dirs);
    let first = settings.dump[0].name.clone();
    let spool =
        Spool::open(&dir, crate::systemd::journal::run_id()).map_err(|error| Error::Dump {
            name: first,
            error: DumpError::Spool {
                dir: dir.clone(),
                error,
            },
        })?;
    let mut out = Vec::new();
    for dump in &settings.dump {
        crate::systemd::sdnotify::status(&format!("dumping {} ({})", dump.name, dump.kind.name()));
        let started = Instant::now();
        let start_time = crate::run::rfc3339(time::OffsetDateTime::now_utc());
        let made = container::check(dump).and_then(|_| match &dump.kind {
            DumpKind::Sqlite(s) => sqlite::dump(&spool, dump, s).map(|d| vec![d]),
            DumpKind::Command(c) => command::dump(&spool, dump, c).map(|d| vec![d]),
            DumpKind::Postgresql(p) => postgresql::dump(&spool, dump, p),
            DumpKind::Mariadb(m) => mariadb::dump(&spool, dump, m),
        });
        let fail = |error| Error::Dump {
            name: dump.name.clone(),
            error,
        };
        let mut files = made.map_err(fail)?;
        check_share(settings, dirs, dump, &mut files).map_err(fail)?;
        for mut dumped in files {
            dumped.started = start_time.clone();
            dumped.duration = started.elapsed();
            announce(&dumped);
            out.push(dumped);
        }
    }
    Ok(out)
}

/// The `dump-written` event.
fn announce(d: &Dumped) {
    Entry::event(
        Event::DumpWritten,
        format!(
            "dump {} ({}): {} checked ({}), {}",
            d.name,
            d.kind,
            crate::systemd::sdnotify::human_bytes(d.size),
            d.checks
                .iter()
                .map(|c| c.check)
                .collect::<Vec<_>>()
                .join(", "),
            String::from_utf8_lossy(&d.path)
        ),
    )
    .field("VOUCH_DUMP", &d.name)
    .field("VOUCH_DUMP_KIND", d.kind)
    .field("VOUCH_DUMP_SHA256", &d.sha256)
    .field("VOUCH_BYTES_IN", d.size)
    .field("VOUCH_DURATION_USEC", d.duration.as_micros())
    .emit();
}

/// The archive path (relative to `/`) of a file at absolute `path`.
pub fn archive_path_of(path: &Path) -> Vec<u8> {
    crate::pipeline::manifest::archive_path(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn spooling_keeps_the_tail_hash_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), "t").unwrap();
        let mut s = Spooling::new(spool.anonymous().unwrap());
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(777) {
            s.push(chunk).unwrap();
        }
        let (mut file, size, sha, tail) = s.finish().unwrap();
        assert_eq!(size, 20_000);
        assert_eq!(tail, &data[data.len() - TAIL_BYTES..]);
        assert_eq!(sha, crate::pipeline::io::hex(&Sha256::digest(&data)));
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn live_sqlite_files_are_escaped_patterns() {
        let ex = crate::pipeline::walk::Exclude::new(&[globset::escape("/a/b[1].db-wal")]).unwrap();
        assert!(ex.matches(Path::new("/a/b[1].db-wal")));
        assert!(!ex.matches(Path::new("/a/b1.db-wal")));
    }
}
