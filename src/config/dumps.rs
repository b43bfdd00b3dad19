//! `[dumps]`, `[[dump]]` and `[[hook]]`: database dumps and the commands around a run.
//!
//! A dump is a source whose contents vouch proves before archiving it; a hook is an argv (no
//! shell) run before the dumps and sources are read (`before`, with an optional `cleanup`),
//! after the archive is committed (`after`), or when the run fails (`failure`). Every key that
//! belongs to one kind only is refused on the others, so a config never carries a setting that
//! does nothing.

use super::{check_name, parse_duration, parse_size, ConfigError, Context};
pub use crate::host::credential::Secret;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// `[dumps]`: where dumps are spooled and how long they may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dumps {
    /// The spool directory; `None`: `spool` in the state directory.
    pub spool_dir: Option<PathBuf>,
    /// The default time limit of one dump.
    pub timeout: Duration,
    /// The default time limit of one hook command.
    pub hook_timeout: Duration,
}

/// Default `[dumps] timeout`.
pub const DEFAULT_DUMP_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default `[dumps] hook-timeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `busy-timeout` of an SQLite dump.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Dumps {
    fn default() -> Dumps {
        Dumps {
            spool_dir: None,
            timeout: DEFAULT_DUMP_TIMEOUT,
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }
}

/// One `[[dump]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    /// Unique name; names the archive entries and the journal's `VOUCH_DUMP`.
    pub name: String,
    /// Time limit; the process group is killed past it.
    pub timeout: Duration,
    /// The smallest acceptable dump.
    pub min_size: Option<MinSize>,
    /// What to dump and how.
    pub kind: DumpKind,
    /// The running container its client runs in (postgresql, mariadb and command kinds).
    pub container: Option<Container>,
}

/// `container` and `container-engine`: the dump's client runs inside this running container
/// (`ENGINE exec -i CONTAINER ARGV...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The container's name or id.
    pub name: String,
    /// The engine that runs it.
    pub engine: Engine,
}

/// `container-engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `docker` (the default: most Compose setups use it).
    Docker,
    /// `podman`.
    Podman,
}

impl Engine {
    /// The engine's program, found on `PATH`.
    pub fn program(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }
}

/// How a `required` entry names a dump instead of a path.
pub const REQUIRED_DUMP_PREFIX: &str = "dump:";

/// `required = ["dump:NAME"]` or `["dump:NAME/DB"]`: a dump (or one database of it) that every
/// archive must hold, non-empty. With `databases = ["*"]` this is how a database that vanished
/// from the server is caught: the others still dump and the run would otherwise succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredDump {
    /// The `[[dump]]` name.
    pub name: String,
    /// One database of it, for postgresql and mariadb.
    pub database: Option<String>,
}

impl std::fmt::Display for RequiredDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.database {
            Some(db) => write!(f, "{REQUIRED_DUMP_PREFIX}{}/{db}", self.name),
            None => write!(f, "{REQUIRED_DUMP_PREFIX}{}", self.name),
        }
    }
}

/// `min-size`: bytes, or a percentage of the same dump in the latest verified archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinSize {
    /// At least this many bytes.
    Bytes(u64),
    /// At least this percentage of the last verified dump of the same name.
    Percent(u32),
}

/// The kinds of dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DumpKind {
    /// An SQLite database copied with the online backup API.
    Sqlite(SqliteDump),
    /// Any command whose standard output is the dump.
    Command(CommandDump),
    /// PostgreSQL databases through `pg_dump` (and `pg_dumpall --globals-only` for `"*"`).
    Postgresql(PostgresqlDump),
    /// MariaDB or MySQL databases through `mariadb-dump`.
    Mariadb(MariadbDump),
}

impl DumpKind {
    /// The `kind` value.
    pub fn name(&self) -> &'static str {
        match self {
            DumpKind::Sqlite(_) => "sqlite",
            DumpKind::Command(_) => "command",
            DumpKind::Postgresql(_) => "postgresql",
            DumpKind::Mariadb(_) => "mariadb",
        }
    }
}

/// `kind = "sqlite"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteDump {
    /// The live database file (absolute).
    pub path: PathBuf,
    /// Which integrity check the copy must pass.
    pub check: SqliteCheck,
    /// How long to wait for a writer's lock.
    pub busy_timeout: Duration,
    /// The fewest tables the copy may have.
    pub min_tables: u64,
}

/// The check an SQLite copy must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteCheck {
    /// `PRAGMA integrity_check`.
    Integrity,
    /// `PRAGMA quick_check` (for large files).
    Quick,
}

impl SqliteCheck {
    /// The pragma's name.
    pub fn pragma(self) -> &'static str {
        match self {
            SqliteCheck::Integrity => "integrity_check",
            SqliteCheck::Quick => "quick_check",
        }
    }
}

/// `kind = "command"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandDump {
    /// The argv; its stdout is the dump.
    pub command: Vec<String>,
    /// The file name extension in the archive: `.vouch/dumps/NAME.EXTENSION`.
    pub extension: String,
    /// A literal that must appear in the last 4 KiB of the output.
    pub expect_tail: Option<String>,
}

/// `kind = "postgresql"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresqlDump {
    /// The databases, or empty for every database (`"*"`).
    pub databases: Vec<String>,
    /// With `"*"`: databases left out.
    pub exclude_databases: Vec<String>,
    /// With `"*"`: also the roles and tablespaces (`pg_dumpall --globals-only`).
    pub globals: bool,
    /// `pg_dump`'s output format.
    pub format: PgFormat,
    /// Socket directory or host name.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Database user.
    pub user: Option<String>,
    /// Where the password comes from (`password-file` or `credential`); passed as
    /// `PGPASSWORD`, never in argv. `None`: peer authentication, or `~/.pgpass`.
    pub password: Option<Secret>,
    /// The fewest tables each database's dump may hold.
    pub min_tables: u64,
}

impl PostgresqlDump {
    /// Whether every database is dumped (`databases = ["*"]`).
    pub fn all(&self) -> bool {
        self.databases.is_empty()
    }
}

/// `kind = "mariadb"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MariadbDump {
    /// The databases, or empty for every database (`"*"`, without the server's own schemas).
    pub databases: Vec<String>,
    /// With `"*"`: databases left out.
    pub exclude_databases: Vec<String>,
    /// A socket path (starting with `/`) or a host name.
    pub host: Option<String>,
    /// Port (TCP).
    pub port: Option<u16>,
    /// Database user.
    pub user: Option<String>,
    /// Where the password comes from (`password-file` or `credential`); passed as
    /// `MYSQL_PWD`, never in argv. `None`: `unix_socket` authentication as root.
    pub password: Option<Secret>,
    /// The fewest tables each database's dump may hold.
    pub min_tables: u64,
}

impl MariadbDump {
    /// Whether every database is dumped (`databases = ["*"]`).
    pub fn all(&self) -> bool {
        self.databases.is_empty()
    }
}

/// `pg_dump --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgFormat {
    /// `--format=custom`: compressed, read in full by `pg_restore` before it is kept.
    Custom,
    /// `--format=plain`: SQL text with a completion line.
    Plain,
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Before the dumps and the sources are read.
    Before,
    /// After the archive is committed and verified, when the run succeeded.
    After,
    /// When the run failed.
    Failure,
}

impl When {
    /// The `when` value.
    pub fn name(self) -> &'static str {
        match self {
            When::Before => "before",
            When::After => "after",
            When::Failure => "failure",
        }
    }
}

/// One `[[hook]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Unique name (`VOUCH_HOOK`).
    pub name: String,
    /// When it runs.
    pub when: When,
    /// The argv, no shell.
    pub run: Vec<String>,
    /// Before-hooks: the argv run once the sources are read, whatever happened.
    pub cleanup: Option<Vec<String>>,
    /// Time limit of `run` and of `cleanup`, each.
    pub timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDumps {
    spool_dir: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    hook_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDump {
    name: Spanned<String>,
    kind: Spanned<String>,
    timeout: Option<Spanned<String>>,
    min_size: Option<Spanned<super::SizeValue>>,
    min_tables: Option<Spanned<i64>>,
    path: Option<Spanned<String>>,
    check: Option<Spanned<String>>,
    busy_timeout: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    extension: Option<Spanned<String>>,
    expect_tail: Option<Spanned<String>>,
    databases: Option<Spanned<Vec<String>>>,
    exclude_databases: Option<Spanned<Vec<String>>>,
    globals: Option<Spanned<bool>>,
    format: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    user: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    credential: Option<Spanned<String>>,
    container: Option<Spanned<String>>,
    container_engine: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawHook {
    name: Spanned<String>,
    when: Spanned<String>,
    run: Spanned<Vec<String>>,
    cleanup: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
}

/// The longest `expect-tail`: it must fit in the 4 KiB tail that is searched.
const MAX_EXPECT_TAIL: usize = 1024;

impl Context<'_> {
    /// A time limit from 1 s to 24 h.
    fn limit(&self, v: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        let d = parse_duration(v.get_ref()).map_err(|m| self.error(Some(v.span()), key, m))?;
        if d.is_zero() || d > Duration::from_secs(86_400) {
            return Err(self.error(
                Some(v.span()),
                key,
                "use a time limit from 1s to 24h".into(),
            ));
        }
        Ok(d)
    }

    /// An argv: a non-empty list whose first item names a program.
    fn argv(&self, v: &Spanned<Vec<String>>, key: &str) -> Result<Vec<String>, ConfigError> {
        let argv = v.get_ref();
        if argv.is_empty() || argv[0].trim().is_empty() {
            return Err(self.error(
                Some(v.span()),
                key,
                "give the program and its arguments as a list, e.g. [\"systemctl\", \"stop\", \"app.service\"] (no shell)".into(),
            ));
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(self.error(Some(v.span()), key, "an argument holds a NUL byte".into()));
        }
        Ok(argv.clone())
    }

    pub(super) fn dumps(&self, raw: Option<RawDumps>) -> Result<Dumps, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Dumps::default());
        };
        Ok(Dumps {
            spool_dir: raw
                .spool_dir
                .as_ref()
                .map(|p| self.path(p, "dumps.spool-dir"))
                .transpose()?,
            timeout: match &raw.timeout {
                None => DEFAULT_DUMP_TIMEOUT,
                Some(v) => self.limit(v, "dumps.timeout")?,
            },
            hook_timeout: match &raw.hook_timeout {
                None => DEFAULT_HOOK_TIMEOUT,
                Some(v) => self.limit(v, "dumps.hook-timeout")?,
            },
        })
    }

    pub(super) fn dump_list(
        &self,
        raw: Vec<RawDump>,
        defaults: &Dumps,
    ) -> Result<Vec<Dump>, ConfigError> {
        let mut names = HashSet::new();
        let mut out: Vec<Dump> = Vec::new();
        for d in raw {
            let name = d.name.get_ref().clone();
            let key = |k: &str| format!("dump.{name}.{k}");
            check_name(&name).map_err(|m| self.error(Some(d.name.span()), &key("name"), m))?;
            if !names.insert(name.clone()) {
                return Err(self.error(
                    Some(d.name.span()),
                    &key("name"),
                    format!("two dumps are called {name:?}"),
                ));
            }
            let dump = self.dump(&d, &name, defaults)?;
            if let DumpKind::Sqlite(s) = &dump.kind {
                let same = out
                    .iter()
                    .find(|o| matches!(&o.kind, DumpKind::Sqlite(t) if t.path == s.path));
                if let (Some(other), Some(p)) = (same, &d.path) {
                    return Err(self.error(
                        Some(p.span()),
                        &key("path"),
                        format!("dump {} already copies {}", other.name, s.path.display()),
                    ));
                }
            }
            out.push(dump);
        }
        Ok(out)
    }

    /// Refuses the keys present in `d` that `kind` does not use.
    fn only_for(&self, d: &RawDump, name: &str, kind: &str) -> Result<(), ConfigError> {
        let sqlite = kind == "sqlite";
        let command = kind == "command";
        let pg = kind == "postgresql";
        let server = pg || kind == "mariadb";
        let keys: [(&str, Option<std::ops::Range<usize>>, bool); 17] = [
            ("path", d.path.as_ref().map(|v| v.span()), sqlite),
            ("check", d.check.as_ref().map(|v| v.span()), sqlite),
            (
                "busy-timeout",
                d.busy_timeout.as_ref().map(|v| v.span()),
                sqlite,
            ),
            (
                "min-tables",
                d.min_tables.as_ref().map(|v| v.span()),
                sqlite || server,
            ),
            ("command", d.command.as_ref().map(|v| v.span()), command),
            ("extension", d.extension.as_ref().map(|v| v.span()), command),
            (
                "expect-tail",
                d.expect_tail.as_ref().map(|v| v.span()),
                command,
            ),
            ("databases", d.databases.as_ref().map(|v| v.span()), server),
            (
                "exclude-databases",
                d.exclude_databases.as_ref().map(|v| v.span()),
                server,
            ),
            ("globals", d.globals.as_ref().map(|v| v.span()), pg),
            ("format", d.format.as_ref().map(|v| v.span()), pg),
            ("host", d.host.as_ref().map(|v| v.span()), server),
            ("port", d.port.as_ref().map(|v| v.span()), server),
            ("user", d.user.as_ref().map(|v| v.span()), server),
            (
                "password-file",
                d.password_file.as_ref().map(|v| v.span()),
                server,
            ),
            (
                "credential",
                d.credential.as_ref().map(|v| v.span()),
                server,
            ),
            (
                "container",
                d.container.as_ref().map(|v| v.span()),
                server || command,
            ),
        ];
        for (k, span, allowed) in keys {
            if let (Some(span), false) = (span, allowed) {
                return Err(self.error(
                    Some(span),
                    &format!("dump.{name}.{k}"),
                    match k {
                        "container" => format!("container does not apply to kind = {kind:?}: vouch reads the database at its path on this host (give the path where the container's volume is on the host)"),
                        _ => format!("{k} does not apply to kind = {kind:?}: remove it"),
                    },
                ));
            }
        }
        Ok(())
    }

    /// `container` and `container-engine`.
    fn container(&self, d: &RawDump, name: &str) -> Result<Option<Container>, ConfigError> {
        let key = |k: &str| format!("dump.{name}.{k}");
        let Some(c) = &d.container else {
            if let Some(e) = &d.container_engine {
                return Err(self.error(
                    Some(e.span()),
                    &key("container-engine"),
                    "container-engine goes with container = \"NAME\": add the container or remove it".into(),
                ));
            }
            return Ok(None);
        };
        let text = c.get_ref();
        let ok = text.len() <= 128
            && text
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(self.error(
                Some(c.span()),
                &key("container"),
                format!("{text:?}: give the container's name or id (1 to 128 of A-Z a-z 0-9 _ . -, starting with a letter or digit)"),
            ));
        }
        let engine = match &d.container_engine {
            None => Engine::Docker,
            Some(v) => match v.get_ref().as_str() {
                "docker" => Engine::Docker,
                "podman" => Engine::Podman,
                other => {
                    return Err(self.error(
                        Some(v.span()),
                        &key("container-engine"),
                        format!("{other:?} is not one of \"docker\", \"podman\""),
                    ))
                }
            },
        };
        Ok(Some(Container {
            name: text.clone(),
            engine,
        }))
    }

    fn dump(&self, d: &RawDump, name: &str, defaults: &Dumps) -> Result<Dump, ConfigError> {
        let key = |k: &str| format!("dump.{name}.{k}");
        let kind_text = d.kind.get_ref().as_str();
        if !matches!(kind_text, "sqlite" | "command" | "postgresql" | "mariadb") {
            return Err(self.error(
                Some(d.kind.span()),
                &key("kind"),
                format!("{kind_text:?} is not one of \"sqlite\", \"command\", \"postgresql\", \"mariadb\""),
            ));
        }
        self.only_for(d, name, kind_text)?;
        let timeout = match &d.timeout {
            None => defaults.timeout,
            Some(v) => self.limit(v, &key("timeout"))?,
        };
        let min_size = d
            .min_size
            .as_ref()
            .map(|v| self.min_size(v, &key("min-size")))
            .transpose()?;
        let kind = match kind_text {
            "sqlite" => DumpKind::Sqlite(self.sqlite(d, name)?),
            "postgresql" => DumpKind::Postgresql(self.postgresql(d, name)?),
            "mariadb" => DumpKind::Mariadb(self.mariadb(d, name)?),
            _ => {
                if min_size.is_none() {
                    return Err(self.error(
                        Some(d.kind.span()),
                        &key("min-size"),
                        "a command dump needs min-size (e.g. \"1KiB\" or \"50%\"): vouch cannot guess what a complete dump weighs".into(),
                    ));
                }
                DumpKind::Command(self.command_dump(d, name)?)
            }
        };
        Ok(Dump {
            name: name.to_owned(),
            timeout,
            min_size,
            kind,
            container: self.container(d, name)?,
        })
    }

    fn min_size(&self, v: &Spanned<super::SizeValue>, key: &str) -> Result<MinSize, ConfigError> {
        let text = match v.get_ref() {
            super::SizeValue::Bytes(n) => return Ok(MinSize::Bytes(*n)),
            super::SizeValue::Text(t) => t.trim(),
        };
        if let Some(p) = text.strip_suffix('%') {
            return match p.trim().parse::<u32>() {
                Ok(n) if (1..=100).contains(&n) => Ok(MinSize::Percent(n)),
                _ => Err(self.error(
                    Some(v.span()),
                    key,
                    format!("{text:?} is not a percentage from 1% to 100%"),
                )),
            };
        }
        parse_size(text)
            .map(MinSize::Bytes)
            .map_err(|m| self.error(Some(v.span()), key, m))
    }

    fn sqlite(&self, d: &RawDump, name: &str) -> Result<SqliteDump, ConfigError> {
        let key = |k: &str| format!("dump.{name}.{k}");
        let Some(path) = &d.path else {
            return Err(self.error(
                Some(d.kind.span()),
                &key("path"),
                "an sqlite dump needs path = \"/var/lib/APP/DB.sqlite\"".into(),
            ));
        };
        let path = self.path(path, &key("path"))?;
        let check = match &d.check {
            None => SqliteCheck::Integrity,
            Some(v) => match v.get_ref().as_str() {
                "integrity" => SqliteCheck::Integrity,
                "quick" => SqliteCheck::Quick,
                other => {
                    return Err(self.error(
                        Some(v.span()),
                        &key("check"),
                        format!("{other:?} is not one of \"integrity\", \"quick\""),
                    ))
                }
            },
        };
        let busy_timeout = match &d.busy_timeout {
            None => DEFAULT_BUSY_TIMEOUT,
            Some(v) => self.limit(v, &key("busy-timeout"))?,
        };
        let min_tables = self.min_tables(d, name)?;
        Ok(SqliteDump {
            path,
            check,
            busy_timeout,
            min_tables,
        })
    }

    /// `min-tables`, default 1.
    fn min_tables(&self, d: &RawDump, name: &str) -> Result<u64, ConfigError> {
        match &d.min_tables {
            None => Ok(1),
            Some(v) => u64::try_from(*v.get_ref()).map_err(|_| {
                self.error(
                    Some(v.span()),
                    &format!("dump.{name}.min-tables"),
                    "use 0 (no table count) or more".into(),
                )
            }),
        }
    }

    /// The databases of a postgresql dump: names, or `["*"]` alone.
    fn pg_databases(&self, d: &RawDump, name: &str) -> Result<Vec<String>, ConfigError> {
        let key = format!("dump.{name}.databases");
        let Some(dbs) = &d.databases else {
            return Err(self.error(
                Some(d.kind.span()),
                &key,
                format!(
                    "a {} dump needs databases = [\"app\"], or [\"*\"] for every database",
                    d.kind.get_ref()
                ),
            ));
        };
        let list = dbs.get_ref();
        if list.len() == 1 && list[0] == "*" {
            return Ok(Vec::new());
        }
        let bad =
            |n: &String| n.is_empty() || n.len() > 63 || n == "*" || n.contains(['/', '=', '\0']);
        if list.is_empty() || list.iter().any(bad) {
            return Err(self.error(
                Some(dbs.span()),
                &key,
                "list database names (1 to 63 bytes, no / or =), or [\"*\"] alone for every database"
                    .into(),
            ));
        }
        let mut seen = HashSet::new();
        if let Some(dup) = list.iter().find(|n| !seen.insert(*n)) {
            return Err(self.error(Some(dbs.span()), &key, format!("{dup:?} is listed twice")));
        }
        Ok(list.clone())
    }

    fn postgresql(&self, d: &RawDump, name: &str) -> Result<PostgresqlDump, ConfigError> {
        let key = |k: &str| format!("dump.{name}.{k}");
        let databases = self.pg_databases(d, name)?;
        let only_all = [
            (
                "exclude-databases",
                d.exclude_databases.as_ref().map(|v| v.span()),
            ),
            ("globals", d.globals.as_ref().map(|v| v.span())),
        ];
        for (k, span) in only_all {
            if let (Some(span), false) = (span, databases.is_empty()) {
                return Err(self.error(
                    Some(span),
                    &key(k),
                    format!("{k} applies to databases = [\"*\"] only: remove it"),
                ));
            }
        }
        let format = match &d.format {
            None => PgFormat::Custom,
            Some(v) => match v.get_ref().as_str() {
                "custom" => PgFormat::Custom,
                "plain" => PgFormat::Plain,
                other => {
                    return Err(self.error(
                        Some(v.span()),
                        &key("format"),
                        format!("{other:?} is not one of \"custom\", \"plain\""),
                    ))
                }
            },
        };
        let port = match &d.port {
            None => None,
            Some(v) => Some(
                u16::try_from(*v.get_ref())
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        self.error(
                            Some(v.span()),
                            &key("port"),
                            "use a port from 1 to 65535".into(),
                        )
                    })?,
            ),
        };
        let text = |v: &Option<Spanned<String>>, k: &str| -> Result<Option<String>, ConfigError> {
            match v {
                Some(s) if s.get_ref().trim().is_empty() || s.get_ref().contains('\0') => {
                    Err(self.error(Some(s.span()), &key(k), "must not be empty".into()))
                }
                Some(s) => Ok(Some(s.get_ref().clone())),
                None => Ok(None),
            }
        };
        Ok(PostgresqlDump {
            databases,
            exclude_databases: d
                .exclude_databases
                .as_ref()
                .map(|v| v.get_ref().clone())
                .unwrap_or_default(),
            globals: d.globals.as_ref().is_none_or(|v| *v.get_ref()),
            format,
            host: text(&d.host, "host")?,
            port,
            user: text(&d.user, "user")?,
            password: self.password(d, name)?,
            min_tables: self.min_tables(d, name)?,
        })
    }

    /// The same server keys as postgresql (format and globals are refused for this kind before).
    fn mariadb(&self, d: &RawDump, name: &str) -> Result<MariadbDump, ConfigError> {
        let p = self.postgresql(d, name)?;
        Ok(MariadbDump {
            databases: p.databases,
            exclude_databases: p.exclude_databases,
            host: p.host,
            port: p.port,
            user: p.user,
            password: p.password,
            min_tables: p.min_tables,
        })
    }

    /// The `required` entries that name dumps: each names a `[[dump]]`, and a database only
    /// for a server kind that dumps it (listed, or `"*"`).
    pub(super) fn required_dumps(
        &self,
        raw: &[&Spanned<String>],
        dumps: &[Dump],
    ) -> Result<Vec<RequiredDump>, ConfigError> {
        raw.iter()
            .map(|r| {
                let fail = |m: String| self.error(Some(r.span()), "backup.required", m);
                let text = &r.get_ref()[REQUIRED_DUMP_PREFIX.len()..];
                let (name, database) = match text.split_once('/') {
                    Some((n, db)) => (n, Some(db.to_owned())),
                    None => (text, None),
                };
                let Some(dump) = dumps.iter().find(|d| d.name == name) else {
                    let known: Vec<&str> = dumps.iter().map(|d| d.name.as_str()).collect();
                    return Err(fail(format!(
                        "{:?} names no [[dump]] (there are: {})",
                        r.get_ref(),
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    )));
                };
                if let Some(db) = &database {
                    let listed = match &dump.kind {
                        DumpKind::Postgresql(p) => p.all() || p.databases.contains(db),
                        DumpKind::Mariadb(m) => m.all() || m.databases.contains(db),
                        _ => return Err(fail(format!(
                            "[[dump]] \"{name}\" is kind = {:?}, which has no databases: use \"dump:{name}\"",
                            dump.kind.name()
                        ))),
                    };
                    if db.is_empty() || !listed {
                        return Err(fail(format!(
                            "[[dump]] \"{name}\" does not dump database {db:?}"
                        )));
                    }
                }
                Ok(RequiredDump {
                    name: name.to_owned(),
                    database,
                })
            })
            .collect()
    }

    /// `password-file` or `credential` (not both).
    fn password(&self, d: &RawDump, name: &str) -> Result<Option<Secret>, ConfigError> {
        let key = |k: &str| format!("dump.{name}.{k}");
        match (&d.password_file, &d.credential) {
            (Some(_), Some(c)) => Err(self.error(
                Some(c.span()),
                &key("credential"),
                "give password-file or credential, not both".into(),
            )),
            (Some(p), None) => Ok(Some(Secret::File(self.path(p, &key("password-file"))?))),
            (None, Some(c)) => {
                check_name(c.get_ref())
                    .map_err(|m| self.error(Some(c.span()), &key("credential"), m))?;
                Ok(Some(Secret::Credential(c.get_ref().clone())))
            }
            (None, None) => Ok(None),
        }
    }

    fn command_dump(&self, d: &RawDump, name: &str) -> Result<CommandDump, ConfigError> {
        let key = |k: &str| format!("dump.{name}.{k}");
        let Some(command) = &d.command else {
            return Err(self.error(
                Some(d.kind.span()),
                &key("command"),
                "a command dump needs command = [\"PROGRAM\", \"ARG\", ...]; its standard output is the dump".into(),
            ));
        };
        let command = self.argv(command, &key("command"))?;
        let Some(ext) = &d.extension else {
            return Err(self.error(
                Some(d.kind.span()),
                &key("extension"),
                "a command dump needs extension (e.g. \"ldif\"): the archive holds .vouch/dumps/NAME.EXTENSION".into(),
            ));
        };
        let text = ext.get_ref();
        if text.is_empty()
            || text.len() > 16
            || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
            || text.starts_with('.')
            || text.ends_with('.')
        {
            return Err(self.error(
                Some(ext.span()),
                &key("extension"),
                format!("{text:?}: use 1 to 16 of A-Z a-z 0-9 and inner dots, e.g. \"ldif\" or \"tar.gz\""),
            ));
        }
        let expect_tail = match &d.expect_tail {
            None => None,
            Some(v) if v.get_ref().is_empty() || v.get_ref().len() > MAX_EXPECT_TAIL => {
                return Err(self.error(
                    Some(v.span()),
                    &key("expect-tail"),
                    format!("give 1 to {MAX_EXPECT_TAIL} bytes that end every complete dump"),
                ))
            }
            Some(v) => Some(v.get_ref().clone()),
        };
        Ok(CommandDump {
            command,
            extension: text.clone(),
            expect_tail,
        })
    }

    pub(super) fn hook_list(
        &self,
        raw: Vec<RawHook>,
        defaults: &Dumps,
    ) -> Result<Vec<Hook>, ConfigError> {
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for h in raw {
            let name = h.name.get_ref().clone();
            let key = |k: &str| format!("hook.{name}.{k}");
            check_name(&name).map_err(|m| self.error(Some(h.name.span()), &key("name"), m))?;
            if !names.insert(name.clone()) {
                return Err(self.error(
                    Some(h.name.span()),
                    &key("name"),
                    format!("two hooks are called {name:?}"),
                ));
            }
            let when = match h.when.get_ref().as_str() {
                "before" => When::Before,
                "after" => When::After,
                "failure" => When::Failure,
                other => {
                    return Err(self.error(
                        Some(h.when.span()),
                        &key("when"),
                        format!("{other:?} is not one of \"before\", \"after\", \"failure\""),
                    ))
                }
            };
            let run = self.argv(&h.run, &key("run"))?;
            let cleanup = match &h.cleanup {
                None => None,
                Some(c) if when != When::Before => {
                    return Err(self.error(
                        Some(c.span()),
                        &key("cleanup"),
                        "cleanup belongs to before-hooks (it undoes what run did): remove it or set when = \"before\"".into(),
                    ))
                }
                Some(c) => Some(self.argv(c, &key("cleanup"))?),
            };
            let timeout = match &h.timeout {
                None => defaults.hook_timeout,
                Some(v) => self.limit(v, &key("timeout"))?,
            };
            out.push(Hook {
                name,
                when,
                run,
                cleanup,
                timeout,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{from_str, Settings};
    use std::path::Path;

    const BASE: &str = r#"
[backup]
sources = ["/etc"]

[encryption]
recipients = ["age1example"]

[[target]]
name = "local"
path = "/var/backups/vouch"
"#;

    fn parse(extra: &str) -> Result<Settings, ConfigError> {
        from_str(
            &format!("{BASE}\n{extra}"),
            Path::new("/etc/vouch/vouch.toml"),
        )
    }

    fn err(extra: &str) -> String {
        parse(extra).expect_err("should be rejected").to_string()
    }

    #[test]
    fn dumps_and_hooks_parse_with_their_defaults() {
        let s = parse(
            r##"
[dumps]
spool-dir = "/var/spool/vouch"
timeout = "30m"

[[dump]]
name = "grafana"
kind = "sqlite"
path = "/var/lib/grafana/grafana.db"

[[dump]]
name = "ldap"
kind = "command"
command = ["slapcat", "-n", "1"]
extension = "ldif"
min-size = "50%"
expect-tail = "# end"

[[hook]]
name = "quiesce"
when = "before"
run = ["systemctl", "stop", "app.service"]
cleanup = ["systemctl", "start", "app.service"]
timeout = "2m"
"##,
        )
        .unwrap();
        assert_eq!(s.dumps.spool_dir, Some(PathBuf::from("/var/spool/vouch")));
        assert_eq!(s.dump[0].timeout, Duration::from_secs(1800));
        let DumpKind::Sqlite(g) = &s.dump[0].kind else {
            panic!("not sqlite")
        };
        assert_eq!(g.check, SqliteCheck::Integrity);
        assert_eq!(g.min_tables, 1);
        assert_eq!(g.busy_timeout, DEFAULT_BUSY_TIMEOUT);
        assert_eq!(s.dump[1].min_size, Some(MinSize::Percent(50)));
        assert_eq!(s.hooks[0].when, When::Before);
        assert_eq!(s.hooks[0].timeout, Duration::from_secs(120));
        assert!(s.hooks[0].cleanup.is_some());
    }

    #[test]
    fn each_mistake_names_its_key() {
        let cases = [
            (
                "[[dump]]\nname = \"a\"\nkind = \"oracle\"\n",
                "dump.a.kind: \"oracle\" is not one of",
            ),
            (
                "[[dump]]\nname = \"a\"\nkind = \"command\"\ncommand = [\"x\"]\nextension = \"out\"\n",
                "dump.a.min-size: a command dump needs min-size",
            ),
            (
                "[[dump]]\nname = \"a\"\nkind = \"sqlite\"\npath = \"/x.db\"\nextension = \"db\"\n",
                "dump.a.extension: extension does not apply to kind = \"sqlite\"",
            ),
            (
                "[[dump]]\nname = \"a\"\nkind = \"sqlite\"\n",
                "dump.a.path: an sqlite dump needs path",
            ),
            (
                "[[dump]]\nname = \"a\"\nkind = \"command\"\ncommand = []\nextension = \"x\"\nmin-size = 1\n",
                "dump.a.command: give the program",
            ),
            (
                "[[dump]]\nname = \"a\"\nkind = \"command\"\ncommand = [\"x\"]\nextension = \"../x\"\nmin-size = 1\n",
                "dump.a.extension:",
            ),
            (
                "[[dump]]\nname = \"a\"\nkind = \"sqlite\"\npath = \"/x.db\"\nmin-size = \"150%\"\n",
                "dump.a.min-size: \"150%\" is not a percentage",
            ),
            (
                "[[dump]]\nname = \"a\"\nkind = \"sqlite\"\npath = \"/x.db\"\n[[dump]]\nname = \"a\"\nkind = \"sqlite\"\npath = \"/y.db\"\n",
                "two dumps are called \"a\"",
            ),
            (
                "[[dump]]\nname = \"a\"\nkind = \"sqlite\"\npath = \"/x.db\"\n[[dump]]\nname = \"b\"\nkind = \"sqlite\"\npath = \"/x.db\"\n",
                "dump.b.path: dump a already copies /x.db",
            ),
            (
                "[[hook]]\nname = \"h\"\nwhen = \"after\"\nrun = [\"true\"]\ncleanup = [\"true\"]\n",
                "hook.h.cleanup: cleanup belongs to before-hooks",
            ),
            (
                "[[hook]]\nname = \"h\"\nwhen = \"sometimes\"\nrun = [\"true\"]\n",
                "hook.h.when: \"sometimes\" is not one of",
            ),
            (
                "[[hook]]\nname = \"h\"\nwhen = \"before\"\nrun = [\"true\"]\ntimeout = \"2d\"\n",
                "hook.h.timeout: use a time limit from 1s to 24h",
            ),
            (
                "[[hook]]\nname = \"h\"\nwhen = \"before\"\nrun = \"systemctl stop app\"\n",
                "hook.run",
            ),
            ("[dumps]\nspool = \"/x\"\n", "unknown"),
        ];
        for (extra, want) in cases {
            let got = err(extra);
            assert!(got.contains(want), "{extra}\n-> {got}\nwanted {want}");
        }
    }
}

#[cfg(test)]
mod postgresql_tests {
    use crate::config::{from_str, DumpKind, PgFormat, Secret};
    use std::path::Path;

    fn parse(extra: &str) -> Result<crate::config::Settings, crate::config::ConfigError> {
        let base = "[backup]\nsources = [\"/etc\"]\n[encryption]\nrecipients = [\"age1x\"]\n[[target]]\nname = \"l\"\npath = \"/var/backups/vouch\"\n";
        from_str(
            &format!("{base}{extra}"),
            Path::new("/etc/vouch/vouch.toml"),
        )
    }

    #[test]
    fn postgresql_dumps_parse_and_their_mistakes_name_the_key() {
        let s = parse("[[dump]]\nname = \"app\"\nkind = \"postgresql\"\ndatabases = [\"*\"]\nexclude-databases = [\"scratch\"]\nformat = \"plain\"\nport = 5433\nmin-tables = 0\n").unwrap();
        let DumpKind::Postgresql(p) = &s.dump[0].kind else {
            panic!("not postgresql")
        };
        assert!(p.all() && p.globals);
        assert_eq!(p.format, PgFormat::Plain);
        assert_eq!(p.port, Some(5433));
        assert_eq!(p.min_tables, 0);
        assert_eq!(p.password, None);
        let c = parse("[[dump]]\nname = \"app\"\nkind = \"postgresql\"\ndatabases = [\"app\"]\ncredential = \"app-db\"\n").unwrap();
        assert!(
            matches!(&c.dump[0].kind, DumpKind::Postgresql(x) if x.password == Some(Secret::Credential("app-db".into())))
        );
        let cases = [
            (
                "databases = [\"app\"]\nglobals = false\n",
                "globals applies to databases = [\"*\"] only",
            ),
            (
                "databases = [\"*\", \"app\"]\n",
                "dump.app.databases: list database names",
            ),
            (
                "databases = [\"app\", \"app\"]\n",
                "\"app\" is listed twice",
            ),
            (
                "databases = [\"app\"]\nformat = \"tar\"\n",
                "dump.app.format",
            ),
            ("databases = [\"app\"]\nport = 70000\n", "dump.app.port"),
            (
                "databases = [\"app\"]\npath = \"/x\"\n",
                "path does not apply to kind = \"postgresql\"",
            ),
            ("", "dump.app.databases: a postgresql dump needs databases"),
            (
                "databases = [\"app\"]\ncredential = \"db\"\npassword-file = \"/etc/pw\"\n",
                "dump.app.credential: give password-file or credential, not both",
            ),
            (
                "databases = [\"app\"]\ncredential = \"../shadow\"\n",
                "dump.app.credential",
            ),
        ];
        let m = parse("[[dump]]\nname = \"db\"\nkind = \"mariadb\"\ndatabases = [\"shop\"]\nhost = \"/run/mysqld/mysqld.sock\"\n").unwrap();
        assert!(
            matches!(&m.dump[0].kind, DumpKind::Mariadb(x) if x.host.as_deref() == Some("/run/mysqld/mysqld.sock"))
        );
        let e = parse("[[dump]]\nname = \"db\"\nkind = \"mariadb\"\ndatabases = [\"shop\"]\nformat = \"plain\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("format does not apply to kind = \"mariadb\""),
            "{e}"
        );
        for (extra, want) in cases {
            let text = format!("[[dump]]\nname = \"app\"\nkind = \"postgresql\"\n{extra}");
            let got = parse(&text).expect_err(extra).to_string();
            assert!(got.contains(want), "{extra} -> {got}");
        }
    }

    #[test]
    fn required_may_name_a_dump_or_one_of_its_databases() {
        let dump = "[[dump]]\nname = \"all\"\nkind = \"postgresql\"\ndatabases = [\"*\"]\n[[dump]]\nname = \"lite\"\nkind = \"sqlite\"\npath = \"/etc/app.db\"\n";
        let with = |required: &str| {
            let base = format!("[backup]\nsources = [\"/etc\"]\nrequired = {required}\n[encryption]\nrecipients = [\"age1x\"]\n[[target]]\nname = \"l\"\npath = \"/var/backups/vouch\"\n{dump}");
            from_str(&base, Path::new("/etc/vouch/vouch.toml"))
        };
        let s = with("[\"dump:all/shop\", \"dump:lite\", \"/etc/app.db\"]").unwrap();
        let names: Vec<String> = s
            .backup
            .required_dumps
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(names, ["dump:all/shop", "dump:lite"]);
        assert_eq!(s.backup.required, [Path::new("/etc/app.db")]);
        for (required, want) in [
            (
                "[\"dump:nope\"]",
                "\"dump:nope\" names no [[dump]] (there are: all, lite)",
            ),
            (
                "[\"dump:lite/main\"]",
                "kind = \"sqlite\", which has no databases",
            ),
            ("[\"dump:all/\"]", "does not dump database \"\""),
        ] {
            let e = with(required).expect_err(required).to_string();
            assert!(
                e.contains("backup.required") && e.contains(want),
                "{required} -> {e}"
            );
        }
    }
}

#[cfg(test)]
mod container_tests {
    use crate::config::{from_str, Container, Engine};
    use std::path::Path;

    fn parse(extra: &str) -> Result<crate::config::Settings, crate::config::ConfigError> {
        let base = "[backup]\nsources = [\"/etc\"]\n[encryption]\nrecipients = [\"age1x\"]\n[[target]]\nname = \"l\"\npath = \"/var/backups/vouch\"\n";
        from_str(
            &format!("{base}{extra}"),
            Path::new("/etc/vouch/vouch.toml"),
        )
    }

    #[test]
    fn a_container_defaults_to_docker_and_is_refused_where_it_cannot_apply() {
        let s = parse("[[dump]]\nname = \"app\"\nkind = \"postgresql\"\ndatabases = [\"app\"]\ncontainer = \"app-db-1\"\n").unwrap();
        assert_eq!(
            s.dump[0].container,
            Some(Container {
                name: "app-db-1".into(),
                engine: Engine::Docker
            })
        );
        let s = parse("[[dump]]\nname = \"ldap\"\nkind = \"command\"\ncommand = [\"slapcat\"]\nextension = \"ldif\"\nmin-size = 1\ncontainer = \"ldap\"\ncontainer-engine = \"podman\"\n").unwrap();
        assert_eq!(s.dump[0].container.as_ref().unwrap().engine, Engine::Podman);
        let s = parse("[[dump]]\nname = \"shop\"\nkind = \"mariadb\"\ndatabases = [\"shop\"]\n")
            .unwrap();
        assert_eq!(s.dump[0].container, None);
        let cases = [
            (
                "kind = \"sqlite\"\npath = \"/x.db\"\ncontainer = \"app\"\n",
                "dump.a.container: container does not apply to kind = \"sqlite\"",
            ),
            (
                "kind = \"mariadb\"\ndatabases = [\"x\"]\ncontainer-engine = \"podman\"\n",
                "dump.a.container-engine: container-engine goes with container",
            ),
            (
                "kind = \"mariadb\"\ndatabases = [\"x\"]\ncontainer = \"db\"\ncontainer-engine = \"lxc\"\n",
                "dump.a.container-engine: \"lxc\" is not one of \"docker\", \"podman\"",
            ),
            (
                "kind = \"mariadb\"\ndatabases = [\"x\"]\ncontainer = \"-u\"\n",
                "dump.a.container: \"-u\": give the container's name or id",
            ),
            (
                "kind = \"mariadb\"\ndatabases = [\"x\"]\ncontainer = \"\"\n",
                "dump.a.container: \"\": give",
            ),
            (
                "kind = \"mariadb\"\ndatabases = [\"x\"]\ncontainer = \"a b\"\n",
                "dump.a.container: \"a b\": give",
            ),
        ];
        for (extra, want) in cases {
            let text = format!("[[dump]]\nname = \"a\"\n{extra}");
            let got = parse(&text).expect_err(extra).to_string();
            assert!(got.contains(want), "{extra} -> {got}");
        }
    }
}
