//! How a dump or a hook fails, and the one-sentence fix for each way.
//!
//! Both become exit 20 (`HOOK`) through [`crate::error::Error::Dump`] and
//! [`crate::error::Error::Hook`], which carry the dump's or hook's name; the hints here name it
//! too, so the journal entry alone says what to fix.

use crate::config::format_duration;
use crate::host::credential::{CredentialError, Secret};
use crate::systemd::sdnotify::human_bytes;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a dump was refused.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The spool could not be created or written.
    #[error("the spool {} could not be written: {error}", dir.display())]
    Spool {
        /// The spool directory.
        dir: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// The spool has less room than the last verified dumps took.
    #[error("the spool {} has {} free and the last verified dumps took {}", dir.display(), human_bytes(*free), human_bytes(*need))]
    SpoolFull {
        /// The spool directory.
        dir: PathBuf,
        /// Bytes available there.
        free: u64,
        /// The last verified archive's dumps, added up.
        need: u64,
    },
    /// The dump's program could not be started.
    #[error("{program} could not be started: {error}")]
    Start {
        /// The program.
        program: String,
        /// Why.
        error: io::Error,
    },
    /// The dump's program failed.
    #[error("{program} {status}{}", stderr.as_ref().map(|l| format!(": {l}")).unwrap_or_default())]
    Exited {
        /// The program.
        program: String,
        /// "exited 1" or "was killed by signal 9".
        status: String,
        /// Its last stderr line.
        stderr: Option<String>,
    },
    /// The dump ran past its time limit and was killed.
    #[error("it ran past its timeout of {} and was killed with its process group", format_duration(*timeout))]
    TimedOut {
        /// The limit.
        timeout: Duration,
    },
    /// The dump is smaller than its minimum.
    #[error("it is {} ({bytes} bytes), below its min-size of {}{}", human_bytes(*bytes), human_bytes(*min), reference.map(|r| format!(" (the last verified one was {})", human_bytes(r))).unwrap_or_default())]
    TooSmall {
        /// Its size.
        bytes: u64,
        /// The minimum.
        min: u64,
        /// The last verified dump's size, when the minimum is a percentage of it.
        reference: Option<u64>,
    },
    /// The output does not end with what every complete dump ends with.
    #[error("it ended without {expected:?} in its last 4 KiB")]
    NoTail {
        /// The expected literal.
        expected: String,
    },
    /// The SQLite database could not be opened or copied.
    #[error("SQLite {}: {detail}", path.display())]
    Sqlite {
        /// The live database.
        path: PathBuf,
        /// SQLite's message.
        detail: String,
    },
    /// A WAL database whose directory this process cannot write: SQLite cannot make the
    /// `-shm` it needs, and a read then fails or (an old CLI) spins.
    #[error("{} is in WAL mode and {} is read-only here", path.display(), dir.display())]
    WalReadOnly {
        /// The live database.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
    },
    /// The SQLite copy failed its integrity check.
    #[error("the copy of {} fails {pragma}: {first}", path.display())]
    Integrity {
        /// The live database.
        path: PathBuf,
        /// `integrity_check` or `quick_check`.
        pragma: &'static str,
        /// The check's first line.
        first: String,
    },
    /// The SQLite copy has fewer tables than required.
    #[error("the copy of {} has {tables} tables (min-tables {min})", path.display())]
    Tables {
        /// The live database.
        path: PathBuf,
        /// Tables found.
        tables: u64,
        /// The minimum.
        min: u64,
    },
    /// The database server refused the connection or the login.
    #[error("cannot connect: {detail}")]
    Connect {
        /// The client's last stderr line.
        detail: String,
    },
    /// A configured database does not exist.
    #[error("database {database:?} does not exist")]
    NoDatabase {
        /// The database.
        database: String,
    },
    /// The client is older than the server, so it cannot dump it.
    #[error("{client} cannot dump server version {server}")]
    ClientTooOld {
        /// The client and its version.
        client: String,
        /// The server's major version.
        server: u32,
    },
    /// A password file or credential that is missing, unreadable or open to others.
    #[error("password: {error}")]
    Credential {
        /// Where the password was to come from.
        secret: Secret,
        /// What is wrong.
        error: CredentialError,
    },
    /// The dump lacks the line every complete dump of its format has.
    #[error("the dump of {database:?} ended without {expected:?}")]
    NoMarker {
        /// The database.
        database: String,
        /// The line.
        expected: String,
    },
    /// A full read of the dump by its own restore tool failed.
    #[error("{program} could not read the dump of {database:?} to its end: {detail}")]
    ReadBack {
        /// The reader (`pg_restore`).
        program: String,
        /// The database.
        database: String,
        /// Its last stderr line.
        detail: String,
    },
    /// A database's dump holds fewer tables than required.
    #[error("the dump of {database:?} has {tables} tables (min-tables {min})")]
    DatabaseTables {
        /// The database.
        database: String,
        /// Tables found.
        tables: u64,
        /// The minimum.
        min: u64,
    },
    /// The container engine is not installed.
    #[error(
        "{engine} is not installed or not on PATH, and the client runs in container {container:?}"
    )]
    NoEngine {
        /// `docker` or `podman`.
        engine: &'static str,
        /// The container.
        container: String,
    },
    /// The engine knows no such container.
    #[error("{engine} has no container {container:?}")]
    NoContainer {
        /// `docker` or `podman`.
        engine: &'static str,
        /// The container.
        container: String,
    },
    /// The container exists but does not run.
    #[error("container {container:?} is {state}, not running")]
    ContainerStopped {
        /// `docker` or `podman`.
        engine: &'static str,
        /// The container.
        container: String,
        /// Its state (`exited`, `created`, `paused`, ...).
        state: String,
    },
    /// The engine failed otherwise (its daemon unreachable, ...).
    #[error("{engine} failed on container {container:?}: {detail}")]
    Engine {
        /// `docker` or `podman`.
        engine: &'static str,
        /// The container.
        container: String,
        /// Its last stderr line.
        detail: String,
    },
    /// A program the dump needs is not in the container.
    #[error("{program} is not installed in container {container:?}")]
    NotInContainer {
        /// The program.
        program: String,
        /// The container.
        container: String,
    },
    /// The spooled dump changed between its check and the archive.
    #[error("the spooled dump changed before it was archived (SHA-256 {expected} checked, {found} read)")]
    Changed {
        /// The hash when it was checked.
        expected: String,
        /// The hash when it was archived.
        found: String,
    },
}

impl DumpError {
    /// The fix, in one sentence, for the dump `name`.
    pub fn hint(&self, name: &str) -> String {
        match self {
            DumpError::Spool { dir, error } if error.raw_os_error() == Some(libc::ENOSPC) => format!(
                "The spool {} filled up while dumping \"{name}\": free space there or move [dumps] spool-dir.",
                dir.display()
            ),
            DumpError::Spool { dir, .. } => format!(
                "Make {} writable for vouch (ReadWritePaths=) or set [dumps] spool-dir.",
                dir.display()
            ),
            DumpError::SpoolFull { dir, free, need } => format!(
                "The spool {} has {} free and the last dumps took {}: free space there or set [dumps] spool-dir.",
                dir.display(),
                human_bytes(*free),
                human_bytes(*need)
            ),
            DumpError::Start { program, error } if error.kind() == io::ErrorKind::NotFound => format!(
                "{program} is not installed or not on PATH: install it, or give its absolute path in [[dump]] \"{name}\"."
            ),
            DumpError::Start { program, .. } => format!(
                "Make {program} executable by vouch, or fix the command of [[dump]] \"{name}\"."
            ),
            DumpError::Exited { program, status, stderr } => format!(
                "{program} {status}{}: fix the command of [[dump]] \"{name}\" and run it by hand to see its errors.",
                stderr.as_ref().map(|l| format!(" ({l})")).unwrap_or_default()
            ),
            DumpError::TimedOut { timeout } => format!(
                "Dump \"{name}\" ran past its {} timeout and was killed: raise its timeout, or find what blocks it (a lock holder, a hung server).",
                format_duration(*timeout)
            ),
            DumpError::TooSmall { .. } => format!(
                "The dump of \"{name}\" is smaller than its min-size: check that it reads the right database, or lower min-size if the data really shrank."
            ),
            DumpError::NoTail { expected } => format!(
                "The dump of \"{name}\" ended without {expected:?}: it was cut off (killed, a full disk, a broken pipe), or expect-tail is wrong."
            ),
            DumpError::Sqlite { path, .. } => format!(
                "Check that {} exists and is an SQLite database vouch can read (its directory must be writable for a WAL database: ReadWritePaths=-{}).",
                path.display(),
                path.parent().map(|p| p.display().to_string()).unwrap_or_default()
            ),
            DumpError::WalReadOnly { dir, .. } => format!(
                "Give vouch write access to {}: under systemd run systemctl daemon-reload so vouch-generator adds ReadWritePaths=-{} to vouch.service (check with vouch doctor), or switch the database out of WAL mode.",
                dir.display(),
                dir.display()
            ),
            DumpError::Integrity { path, pragma, .. } => format!(
                "The live database {} is damaged: check it with sqlite3 {} \"PRAGMA {pragma}\" and repair it from its application or an older archive.",
                path.display(),
                path.display()
            ),
            DumpError::Tables { path, .. } => format!(
                "{} holds fewer tables than min-tables of [[dump]] \"{name}\": is this the right file? Lower min-tables if it is.",
                path.display()
            ),
            DumpError::Connect { detail } if detail.contains("Peer authentication failed") => format!(
                "vouch connects as root: in psql run CREATE ROLE root LOGIN; GRANT pg_read_all_data TO root; or set user in [[dump]] \"{name}\" and map root to it in pg_ident.conf."
            ),
            DumpError::Connect { .. } => format!(
                "Check that the server runs and that host, port, user and password-file of [[dump]] \"{name}\" let vouch log in."
            ),
            DumpError::NoDatabase { database } => format!(
                "Database {database:?} does not exist on that server: fix databases in [[dump]] \"{name}\"."
            ),
            DumpError::ClientTooOld { server, .. } => format!(
                "Install postgresql-client-{server} (a client at least as new as the server) so pg_dump can dump it for [[dump]] \"{name}\"."
            ),
            DumpError::Credential { secret, error } => {
                error.hint(secret, &format!("[[dump]] \"{name}\""))
            }
            DumpError::NoMarker { expected, .. } => format!(
                "The dump of \"{name}\" ended without {expected:?}: it was cut off (killed, a full disk, a broken pipe); run it again and check the server's log."
            ),
            DumpError::ReadBack { program, .. } => format!(
                "{program} could not read the dump of \"{name}\" to its end: it is truncated or corrupt; run it again and check the server's log and the spool's disk."
            ),
            DumpError::DatabaseTables { database, .. } => format!(
                "The dump of {database:?} holds fewer tables than min-tables of [[dump]] \"{name}\": is this the right database? Lower min-tables if it is."
            ),
            DumpError::NoEngine { engine, container } => format!(
                "Install {engine} (the client of [[dump]] \"{name}\" runs in its container {container:?}), or set container-engine to the engine that runs it."
            ),
            DumpError::NoContainer { engine, container } => format!(
                "{engine} has no container {container:?}: start it (docker compose up -d) or fix container in [[dump]] \"{name}\" (`{engine} ps` lists the names)."
            ),
            DumpError::ContainerStopped { engine, container, .. } => format!(
                "Container {container:?} is not running: start it ({engine} start {container}, or docker compose up -d) before the backup of [[dump]] \"{name}\" runs."
            ),
            DumpError::Engine { engine, container, .. } => format!(
                "{engine} could not reach container {container:?} for [[dump]] \"{name}\": check that its daemon or service runs and that vouch.service may use it (see Containers in docs/dumps.md)."
            ),
            DumpError::NotInContainer { program, container } => format!(
                "{program} is not installed in container {container:?}: use an image that has it for [[dump]] \"{name}\", or run the client on the host without container."
            ),
            DumpError::Changed { .. } => format!(
                "The spool of \"{name}\" was changed or damaged while the run was going on: check the disk under [dumps] spool-dir."
            ),
        }
    }
}

/// Why a hook failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HookError {
    /// Its program could not be started.
    #[error("{program} could not be started: {error}")]
    Start {
        /// The program.
        program: String,
        /// Why.
        error: String,
        /// The program does not exist.
        missing: bool,
    },
    /// Its program failed.
    #[error("{program} {status}{}", stderr.as_ref().map(|l| format!(": {l}")).unwrap_or_default())]
    Exited {
        /// The program.
        program: String,
        /// "exited 1" or "was killed by signal 9".
        status: String,
        /// Its last stderr line.
        stderr: Option<String>,
    },
    /// It ran past its time limit and was killed.
    #[error("it ran past its timeout of {} and was killed with its process group", format_duration(*timeout))]
    TimedOut {
        /// The limit.
        timeout: Duration,
    },
}

impl HookError {
    /// The fix, in one sentence, for the hook `name`'s `step` (`run` or `cleanup`); `archive`
    /// is the committed archive when the failure came after the commit.
    pub fn hint(&self, name: &str, step: &str, archive: Option<&str>) -> String {
        let fix = match self {
            HookError::Start { program, missing: true, .. } => format!(
                "{program} does not exist: install it or fix {step} of [[hook]] \"{name}\""
            ),
            HookError::Start { program, .. } => format!(
                "make {program} executable by vouch or fix {step} of [[hook]] \"{name}\""
            ),
            HookError::Exited { program, status, stderr } => format!(
                "hook \"{name}\" {step}: {program} {status}{}; run it by hand to see why",
                stderr.as_ref().map(|l| format!(" ({l})")).unwrap_or_default()
            ),
            HookError::TimedOut { timeout } => format!(
                "hook \"{name}\" {step} ran past its {} timeout and was killed: raise its timeout or find what it waits for",
                format_duration(*timeout)
            ),
        };
        match archive {
            Some(a) => format!("Archive {a} is good and was kept, but {fix}."),
            None => {
                let mut s = fix;
                if let Some(first) = s.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                format!("{s}.")
            }
        }
    }
}
