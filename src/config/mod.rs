//! `vouch.toml`: parse, then validate into typed settings.
//!
//! Parsing uses raw serde structs that reject unknown keys at every level and keep the position
//! of every value a later check may complain about. Validation turns them into [`Settings`]:
//! absolute paths, sizes in bytes, durations, defaults filled in. Every error is a
//! [`ConfigError`] naming the file, the line and the key, displayed as `FILE:LINE: KEY: message`.
//!
//! Relative paths are resolved against the directory holding the config file, so a config
//! shipped inside a project (the demo) works from any checkout; the packaged config uses
//! absolute paths. `.` and `..` are resolved lexically, without following symlinks.

mod compression;
mod dumps;
mod remote;
mod sftp;
mod units;

pub use dumps::{
    CommandDump, Container, Dump, DumpKind, Dumps, Engine, Hook, MariadbDump, MinSize, PgFormat,
    PostgresqlDump, RequiredDump, Secret, SqliteCheck, SqliteDump, When, DEFAULT_BUSY_TIMEOUT,
    DEFAULT_DUMP_TIMEOUT, DEFAULT_HOOK_TIMEOUT, REQUIRED_DUMP_PREFIX,
};

pub use compression::Compression;
pub use remote::{LockMode, ObjectLock, Readback, S3Target, DEFAULT_PART_SIZE};
pub use sftp::SftpTarget;
pub use units::{format_duration, parse_duration, parse_size};

use crate::host::bounded::Links;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A config that cannot be used: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place.
    pub line: Option<usize>,
    /// The dotted key, e.g. `target.local.min-free`.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything vouch needs from the config, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The config file it came from.
    pub file: PathBuf,
    /// `[backup]`.
    pub backup: Backup,
    /// `[encryption]`.
    pub encryption: Encryption,
    /// `[[target]]`, at least one.
    pub targets: Vec<Target>,
    /// The `[[target]]`s with `kind = "s3"`, in config order: copied to after the directory
    /// targets have committed the archive.
    pub remotes: Vec<Remote>,
    /// The `[[target]]`s with `kind = "sftp"`, in config order: copied to after the S3
    /// targets.
    pub sftp: Vec<SftpRemote>,
    /// `[health]`.
    pub health: Health,
    /// `[metrics]`.
    pub metrics: Metrics,
    /// `[notify]`.
    pub notify: Notify,
    /// `[dumps]`.
    pub dumps: Dumps,
    /// `[[dump]]`, in config order.
    pub dump: Vec<Dump>,
    /// `[[hook]]`, in config order.
    pub hooks: Vec<Hook>,
}

/// What to back up.
#[derive(Debug, Clone, PartialEq)]
pub struct Backup {
    /// Archive name prefix; default: the host name.
    pub name: String,
    /// Absolute paths to archive.
    pub sources: Vec<PathBuf>,
    /// Glob patterns to leave out.
    pub exclude: Vec<String>,
    /// Paths that must be in every archive and non-empty.
    pub required: Vec<PathBuf>,
    /// Dumps (`"dump:NAME"`, `"dump:NAME/DB"` in `required`) that must be in every archive.
    pub required_dumps: Vec<RequiredDump>,
    /// Stay on each source's filesystem.
    pub one_file_system: bool,
    /// What unreadable files do to the run.
    pub on_read_error: ReadErrorPolicy,
    /// How the tar stream is compressed (`compression`), which the archive's name then says.
    pub compression: Compression,
}

/// What unreadable files do to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadErrorPolicy {
    /// Fail with exit 31 after the scan, naming them.
    Fail,
    /// Record them in the manifest and the journal, and go on.
    Warn,
}

/// Keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Encryption {
    /// `age1...` recipients, unparsed (the key checks report bad ones with exit 13).
    pub recipients: Vec<String>,
    /// A file of recipients, one per line.
    pub recipients_file: Option<PathBuf>,
    /// The identity to read archives back with.
    pub identity: Option<PathBuf>,
    /// Allow ciphertext-only read-back when no identity is available.
    pub verify_without_identity: bool,
}

/// One place archives go.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Unique name.
    pub name: String,
    /// Absolute directory.
    pub path: PathBuf,
    /// Refuse unless the target's mount point (`mount`, else `path`) has a filesystem mounted.
    pub require_mount: bool,
    /// The mount point `require-mount` checks, when it is a directory above `path` (`mount`;
    /// setting it implies `require-mount = true`).
    pub mount: Option<PathBuf>,
    /// Allow tmpfs, ramfs and overlay.
    pub allow_volatile: bool,
    /// Splitting into parts.
    pub split: Split,
    /// Free space that must remain after the archive.
    pub min_free: u64,
    /// Retention.
    pub keep: Keep,
}

/// An off-site target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Unique name, among all targets.
    pub name: String,
    /// Its own retention.
    pub keep: Keep,
    /// Where and how.
    pub s3: S3Target,
}

/// An off-site target on an SSH server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpRemote {
    /// Unique name, among all targets.
    pub name: String,
    /// Its own retention.
    pub keep: Keep,
    /// Where and how.
    pub sftp: SftpTarget,
}

/// Splitting archives into parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Below the filesystem's largest file, when needed.
    Auto,
    /// Never; a filesystem that cannot hold the archive is an error.
    Off,
    /// Parts of this many bytes.
    Size(u64),
}

/// Retention: how many archives to keep per period.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keep {
    /// The newest N.
    pub last: Option<u32>,
    /// One per day for N days.
    pub daily: Option<u32>,
    /// One per week for N weeks.
    pub weekly: Option<u32>,
    /// One per month for N months.
    pub monthly: Option<u32>,
    /// One per year for N years.
    pub yearly: Option<u32>,
    /// Nothing older than this (beyond the newest verified archive).
    pub max_age: Option<Duration>,
}

/// `[health]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// A latest verified archive older than this is critical.
    pub max_age: Duration,
    /// Percent the size may differ from recent archives.
    pub size_tolerance: u32,
    /// What a size outside the tolerance does to a run.
    pub on_anomaly: AnomalyPolicy,
}

/// What a new archive whose size is outside `size-tolerance` does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyPolicy {
    /// A journal warning and a `warning` status; the run still exits 0.
    Warn,
    /// The run exits 35 (the verified archive is kept).
    Fail,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metrics {
    /// A Prometheus textfile for node_exporter's textfile collector.
    pub textfile: Option<PathBuf>,
}

/// `[notify]`: where results are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// A URL that gets a JSON POST with the result.
    pub webhook: Option<String>,
    /// A Healthchecks-style ping URL: `URL/start` when a run starts, `URL/CODE` when it ends.
    pub ping: Option<String>,
    /// A command run with the result in its environment (argv, no shell).
    pub command: Option<Vec<String>>,
    /// Time limit for each request or command.
    pub timeout: Duration,
}

/// Default `[notify] timeout`.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Notify {
    fn default() -> Notify {
        Notify {
            webhook: None,
            ping: None,
            command: None,
            timeout: DEFAULT_NOTIFY_TIMEOUT,
        }
    }
}

impl Notify {
    /// Whether any channel is configured.
    pub fn any(&self) -> bool {
        self.webhook.is_some() || self.ping.is_some() || self.command.is_some()
    }
}

/// Default `min-free`: 1 GiB.
pub const DEFAULT_MIN_FREE: u64 = 1 << 30;
/// Default `[health] max-age`: 26 hours (a daily timer plus its randomized delay).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(26 * 3600);
/// Default `[health] size-tolerance` in percent.
pub const DEFAULT_SIZE_TOLERANCE: u32 = 20;
/// Default `keep.last`.
pub const DEFAULT_KEEP_LAST: u32 = 7;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    backup: RawBackup,
    encryption: RawEncryption,
    target: Option<Vec<RawTarget>>,
    health: Option<RawHealth>,
    metrics: Option<RawMetrics>,
    notify: Option<RawNotify>,
    dumps: Option<dumps::RawDumps>,
    dump: Option<Vec<dumps::RawDump>>,
    hook: Option<Vec<dumps::RawHook>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMetrics {
    textfile: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNotify {
    webhook: Option<Spanned<String>>,
    ping: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBackup {
    name: Option<Spanned<String>>,
    sources: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    required: Vec<Spanned<String>>,
    #[serde(default)]
    one_file_system: bool,
    on_read_error: Option<Spanned<String>>,
    compression: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawEncryption {
    #[serde(default)]
    recipients: Vec<String>,
    recipients_file: Option<Spanned<String>>,
    identity: Option<Spanned<String>>,
    #[serde(default)]
    verify_without_identity: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTarget {
    name: Spanned<String>,
    kind: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    bucket: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    url_style: Option<Spanned<String>>,
    credential: Option<Spanned<String>>,
    part_size: Option<Spanned<SizeValue>>,
    allow_http: Option<Spanned<bool>>,
    tls_ca: Option<Spanned<String>>,
    object_lock: Option<Spanned<remote::RawLock>>,
    readback: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    user: Option<Spanned<String>>,
    known_hosts: Option<Spanned<String>>,
    require_mount: Option<Spanned<bool>>,
    mount: Option<Spanned<String>>,
    #[serde(default)]
    allow_volatile: bool,
    split: Option<Spanned<String>>,
    min_free: Option<Spanned<SizeValue>>,
    keep: Option<RawKeep>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawKeep {
    last: Option<u32>,
    daily: Option<u32>,
    weekly: Option<u32>,
    monthly: Option<u32>,
    yearly: Option<u32>,
    max_age: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawHealth {
    max_age: Option<Spanned<String>>,
    size_tolerance: Option<Spanned<i64>>,
    on_anomaly: Option<Spanned<String>>,
}

/// Reads and validates the config at `path`. The file is read with [`crate::host::bounded`]: a
/// FIFO, a device, a directory or a file over [`crate::host::bounded::CONFIG_CAP`] is refused at once.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let bytes = crate::host::bounded::read(path, Links::Follow, crate::host::bounded::CONFIG_CAP)
        .map_err(|e| ConfigError {
        file: path.to_owned(),
        line: None,
        key: None,
        message: format!("cannot read the config: {e}"),
    })?;
    from_bytes(&bytes, path)
}

/// Parses and validates config `bytes` that came from `path`; text that is not UTF-8 is an
/// error at the line of its first invalid byte.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Settings, ConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|e| not_utf8(bytes, &e, path))?;
    from_str(text, path)
}

/// The error for config bytes that are not UTF-8: the line and column of the first bad byte.
fn not_utf8(bytes: &[u8], error: &std::str::Utf8Error, path: &Path) -> ConfigError {
    let good = &bytes[..error.valid_up_to()];
    let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = good.len() - line_start + 1;
    ConfigError {
        file: path.to_owned(),
        line: Some(good.iter().filter(|&&b| b == b'\n').count() + 1),
        key: None,
        message: format!(
            "byte 0x{:02x} (byte {column} of the line) is not UTF-8: save the file as UTF-8",
            bytes[error.valid_up_to()]
        ),
    }
}

/// Parses and validates config `text` that came from `path`.
pub fn from_str(text: &str, path: &Path) -> Result<Settings, ConfigError> {
    let cx = Context { text, file: path };
    let raw: RawConfig = toml::from_str(text).map_err(|e| cx.parse_error(&e))?;
    cx.validate(raw)
}

struct Context<'a> {
    text: &'a str,
    file: &'a Path,
}

/// Moves the S3 keys out of a raw target.
fn take_s3(t: &mut RawTarget) -> remote::RawS3 {
    remote::RawS3 {
        endpoint: t.endpoint.take(),
        region: t.region.take(),
        bucket: t.bucket.take(),
        prefix: t.prefix.take(),
        url_style: t.url_style.take(),
        credential: t.credential.take(),
        part_size: t.part_size.take(),
        allow_http: t.allow_http.take(),
        tls_ca: t.tls_ca.take(),
        object_lock: t.object_lock.take(),
        readback: t.readback.take(),
    }
}

/// The directory, S3 and sftp targets, in config order within each kind.
type AllTargets = (Vec<Target>, Vec<Remote>, Vec<SftpRemote>);

/// Moves the sftp-only keys out of a raw target.
fn take_sftp(t: &mut RawTarget) -> sftp::RawSftp {
    sftp::RawSftp {
        host: t.host.take(),
        port: t.port.take(),
        user: t.user.take(),
        known_hosts: t.known_hosts.take(),
    }
}

/// `text` up to byte `offset`, moved back to a character boundary when it falls inside one.
fn prefix(text: &str, offset: usize) -> &str {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` up to the end of the line holding byte `offset`.
fn through_line(text: &str, offset: usize) -> &str {
    let start = prefix(text, offset).len();
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    &text[..end]
}

/// The name in a table header line (`[backup]`, `[[target]]`), if `line` is one.
fn header_name(line: &str) -> Option<String> {
    let l = line.trim();
    let inner = l.strip_prefix("[[").and_then(|r| r.split("]]").next());
    let inner = inner.or_else(|| l.strip_prefix('[').and_then(|r| r.split(']').next()));
    inner.map(|s| s.trim().to_owned())
}

/// The table header (`backup`, `target`, ...) in force on the line holding byte `offset`.
fn section_at(text: &str, offset: usize) -> Option<String> {
    through_line(text, offset)
        .lines()
        .rev()
        .find_map(header_name)
}

/// The tables a config may have at its top level; only the first two are required.
const TABLES: &str =
    "[backup], [encryption], [[target]], [health], [metrics], [notify], [dumps], [[dump]], [[hook]]";

/// The text between the first pair of backticks in `message`, after `prefix`.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.split(prefix).nth(1)?;
    let start = rest.find('`')? + 1;
    let len = rest[start..].find('`')?;
    Some(rest[start..start + len].to_owned())
}

impl Context<'_> {
    fn line_of(&self, offset: usize) -> usize {
        prefix(self.text, offset)
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn error(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        message: String,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: span.map(|s| self.line_of(s.start)),
            key: Some(key.to_owned()),
            message,
        }
    }

    /// A parser error, with its line and the key or table it is about.
    fn parse_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim().to_owned();
        let span = e.span();
        let at = span.as_ref().map(|s| s.start);
        let line = at.map(|offset| self.line_of(offset));
        let section = at.and_then(|offset| section_at(self.text, offset));
        let (line, key, message) = if let Some((table, name)) = duplicate(&message) {
            let (key, message) = duplicate_error(table.unwrap_or(section), name);
            (line, Some(key), message)
        } else if let Some(unknown) = quoted_after(&message, "unknown field") {
            let (key, message) = self.unknown_error(at, section, unknown, &message);
            (line, Some(key), message)
        } else if let Some(field) = quoted_after(&message, "missing field") {
            if TABLES.contains(&format!("[{field}]")) {
                let says = format!(
                    "missing table [{field}]: every config needs [backup] and [encryption]"
                );
                (None, Some(field), says)
            } else {
                (line, Some(dotted(section, field)), message)
            }
        } else {
            (line, section.map(|s| self.key_on_line(span, s)), message)
        };
        ConfigError {
            file: self.file.to_owned(),
            line,
            key,
            message,
        }
    }

    /// An unknown key, or an unknown table when the error is on a table header: the key and
    /// the message.
    fn unknown_error(
        &self,
        at: Option<usize>,
        section: Option<String>,
        unknown: String,
        message: &str,
    ) -> (String, String) {
        let header = at
            .and_then(|offset| through_line(self.text, offset).lines().last())
            .and_then(header_name)
            .filter(|h| h == &unknown || h.ends_with(&format!(".{unknown}")));
        let Some(table) = header else {
            return (dotted(section, unknown), format!("unknown key: {message}"));
        };
        let expected = if table.contains('.') {
            let keys = message.split(", expected ").nth(1).unwrap_or("nothing");
            format!("a key: {keys}")
        } else {
            TABLES.to_owned()
        };
        let says = format!("unknown table [{table}] (expected {expected})");
        (table, says)
    }

    /// For a bad value in table `section`: the key on the error's line, when there is one.
    fn key_on_line(&self, span: Option<std::ops::Range<usize>>, section: String) -> String {
        let line_text = span
            .and_then(|sp| prefix(self.text, sp.start).lines().last())
            .unwrap_or("");
        match line_text.split_once('=') {
            Some((k, _)) if !k.trim().is_empty() => format!("{section}.{}", k.trim()),
            _ => section,
        }
    }

    fn path(&self, value: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
        let raw = value.get_ref();
        let fail = |m: String| self.error(Some(value.span()), key, m);
        if raw.trim().is_empty() {
            return Err(fail("a path must not be empty".into()));
        }
        if raw.contains('\0') {
            return Err(fail(format!(
                "{raw:?} holds a NUL byte, which no path can contain"
            )));
        }
        let joined = if Path::new(raw).is_absolute() {
            PathBuf::from(raw)
        } else {
            self.file
                .parent()
                .map(|d| {
                    if d.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        d
                    }
                })
                .unwrap_or(Path::new("."))
                .join(raw)
        };
        let joined = if joined.is_absolute() {
            joined
        } else {
            std::env::current_dir()
                .map_err(|e| fail(format!("cannot resolve {raw:?}: {e}")))?
                .join(joined)
        };
        Ok(normalize(&joined))
    }

    /// A target's `require-mount` and `mount`: `mount` must be `path` or a directory above it,
    /// and implies `require-mount = true` (an explicit `false` beside it is a contradiction).
    /// Every `[[target]]`: the directory targets, the S3 and the sftp targets, each name
    /// unique. At least one directory target is needed.
    fn targets(
        &self,
        raw_targets: Vec<RawTarget>,
        sources: &[PathBuf],
        exclude_set: &crate::pipeline::walk::Exclude,
    ) -> Result<AllTargets, ConfigError> {
        let missing = |message: &str| ConfigError {
            file: self.file.to_owned(),
            line: None,
            key: Some("target".into()),
            message: message.into(),
        };
        if raw_targets.is_empty() {
            return Err(missing("at least one [[target]] is needed"));
        }
        let mut targets: Vec<Target> = Vec::new();
        let mut remotes: Vec<Remote> = Vec::new();
        let mut sftps: Vec<SftpRemote> = Vec::new();
        let mut names = HashSet::new();
        for mut t in raw_targets {
            let tname = t.name.get_ref().clone();
            let key = |k: &str| format!("target.{tname}.{k}");
            check_name(&tname).map_err(|m| self.error(Some(t.name.span()), &key("name"), m))?;
            if !names.insert(tname.clone()) {
                return Err(self.error(
                    Some(t.name.span()),
                    &key("name"),
                    format!("two targets are called {tname:?}"),
                ));
            }
            let s3 = take_s3(&mut t);
            let sftp = take_sftp(&mut t);
            match self.target_kind(&t, &s3, &sftp, &key)? {
                "s3" => remotes.push(Remote {
                    name: tname.clone(),
                    s3: self.s3_target(&s3, &tname, t.name.span())?,
                    keep: self.keep(t.keep, &key)?,
                }),
                "sftp" => {
                    let shared = sftp::Shared {
                        path: t.path.as_ref(),
                        credential: s3.credential.as_ref(),
                        split: t.split.as_ref(),
                    };
                    sftps.push(SftpRemote {
                        name: tname.clone(),
                        sftp: self.sftp_target(&sftp, shared, &tname, t.name.span())?,
                        keep: self.keep(t.keep, &key)?,
                    });
                }
                _ => {
                    let target = self.dir_target(t, &tname, &targets, sources, exclude_set)?;
                    targets.push(target);
                }
            }
        }
        if targets.is_empty() {
            return Err(missing("at least one directory [[target]] (kind = \"dir\") is needed: an s3 or sftp target gets a copy of the archive a directory target committed"));
        }
        Ok((targets, remotes, sftps))
    }

    /// One directory target, checked against the sources and the targets before it.
    fn dir_target(
        &self,
        t: RawTarget,
        tname: &str,
        targets: &[Target],
        sources: &[PathBuf],
        exclude_set: &crate::pipeline::walk::Exclude,
    ) -> Result<Target, ConfigError> {
        let key = |k: &str| format!("target.{tname}.{k}");
        let Some(path_value) = &t.path else {
            return Err(self.error(
                Some(t.name.span()),
                &key("path"),
                "a directory target needs path = \"/ABSOLUTE/DIR\"".into(),
            ));
        };
        let path = self.path(path_value, &key("path"))?;
        if let Some(other) = targets.iter().find(|o| o.path == path) {
            return Err(self.error(
                Some(path_value.span()),
                &key("path"),
                format!("target {} already uses {}", other.name, path.display()),
            ));
        }
        if sources.iter().any(|s| path.starts_with(s)) && !exclude_set.matches(&path) {
            return Err(self.error(
                Some(path_value.span()),
                &key("path"),
                format!(
                    "{} is inside a source, so archives would back themselves up: move it or add it to [backup] exclude",
                    path.display()
                ),
            ));
        }
        let (require_mount, mount) = self.mount_guard(&t, &path, &key)?;
        let split = match &t.split {
            None => Split::Auto,
            Some(v) => self.split(v, &key("split"))?,
        };
        let min_free = match &t.min_free {
            None => DEFAULT_MIN_FREE,
            Some(v) => match v.get_ref() {
                SizeValue::Bytes(n) => *n,
                SizeValue::Text(s) => {
                    parse_size(s).map_err(|m| self.error(Some(v.span()), &key("min-free"), m))?
                }
            },
        };
        let keep = self.keep(t.keep, &key)?;
        Ok(Target {
            name: tname.to_owned(),
            path,
            require_mount,
            mount,
            allow_volatile: t.allow_volatile,
            split,
            min_free,
            keep,
        })
    }

    /// A `split` value: `"auto"`, `"off"` or a part size of at least 1 MiB.
    pub(super) fn split(&self, v: &Spanned<String>, key: &str) -> Result<Split, ConfigError> {
        Ok(match v.get_ref().as_str() {
            "auto" => Split::Auto,
            "off" => Split::Off,
            text => {
                let size = parse_size(text).map_err(|m| self.error(Some(v.span()), key, m))?;
                if size < 1 << 20 {
                    return Err(self.error(
                        Some(v.span()),
                        key,
                        "parts must be at least 1MiB".into(),
                    ));
                }
                Split::Size(size)
            }
        })
    }

    /// A target's retention; `keep` absent: the newest [`DEFAULT_KEEP_LAST`].
    fn keep(&self, k: Option<RawKeep>, key: &dyn Fn(&str) -> String) -> Result<Keep, ConfigError> {
        Ok(match k {
            None => Keep {
                last: Some(DEFAULT_KEEP_LAST),
                ..Keep::default()
            },
            Some(k) => Keep {
                last: k.last,
                daily: k.daily,
                weekly: k.weekly,
                monthly: k.monthly,
                yearly: k.yearly,
                max_age: k
                    .max_age
                    .as_ref()
                    .map(|v| {
                        parse_duration(v.get_ref())
                            .map_err(|m| self.error(Some(v.span()), &key("keep.max-age"), m))
                    })
                    .transpose()?,
            },
        })
    }

    /// `kind` (`"dir"` by default, `"s3"` or `"sftp"`), after refusing the keys of the other
    /// kinds.
    fn target_kind(
        &self,
        t: &RawTarget,
        s3: &remote::RawS3,
        sftp: &sftp::RawSftp,
        key: &dyn Fn(&str) -> String,
    ) -> Result<&'static str, ConfigError> {
        let kind = match t.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
            None | Some(("dir", _)) => "dir",
            Some(("s3", _)) => "s3",
            Some(("sftp", _)) => "sftp",
            Some((other, span)) => {
                return Err(self.error(
                    Some(span),
                    &key("kind"),
                    format!("{other:?} is not \"dir\", \"s3\" or \"sftp\""),
                ))
            }
        };
        let mut dir_keys = Vec::new();
        let mut add = |k: &'static str, s: Option<std::ops::Range<usize>>| {
            if let Some(s) = s {
                dir_keys.push((k, s));
            }
        };
        if kind == "s3" {
            add("path", t.path.as_ref().map(|v| v.span()));
            add("split", t.split.as_ref().map(|v| v.span()));
        }
        if kind != "dir" {
            add("min-free", t.min_free.as_ref().map(|v| v.span()));
            add("require-mount", t.require_mount.as_ref().map(|v| v.span()));
            add("mount", t.mount.as_ref().map(|v| v.span()));
        }
        let mut wrong = dir_keys;
        match kind {
            "s3" => wrong.extend(sftp.set_keys()),
            "sftp" => wrong.extend(
                s3.set_keys()
                    .into_iter()
                    .filter(|(k, _)| *k != "credential"),
            ),
            _ => {
                wrong.extend(s3.set_keys());
                wrong.extend(sftp.set_keys());
            }
        }
        wrong.sort_by_key(|(_, span)| span.start);
        if let Some((k, span)) = wrong.into_iter().next() {
            return Err(self.error(
                Some(span),
                &key(k),
                format!("{k} does not apply to kind = {kind:?}: remove it"),
            ));
        }
        Ok(kind)
    }

    fn mount_guard(
        &self,
        t: &RawTarget,
        path: &Path,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(bool, Option<PathBuf>), ConfigError> {
        let required = t.require_mount.as_ref().map(|v| *v.get_ref());
        let Some(raw) = &t.mount else {
            return Ok((required.unwrap_or(false), None));
        };
        let mount = self.path(raw, &key("mount"))?;
        if !path.starts_with(&mount) {
            return Err(self.error(
                Some(raw.span()),
                &key("mount"),
                format!(
                    "{} is not {} or a directory above it: mount names the mount point that holds the target",
                    mount.display(),
                    path.display()
                ),
            ));
        }
        if let (Some(false), Some(v)) = (required, &t.require_mount) {
            return Err(self.error(
                Some(v.span()),
                &key("require-mount"),
                "mount = PATH asks for the mount check: drop require-mount = false or the mount key"
                    .into(),
            ));
        }
        Ok((true, Some(mount)))
    }

    /// `[metrics] textfile`: a file path, never an existing directory.
    fn textfile(&self, value: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        let path = self.path(value, "metrics.textfile")?;
        if path.is_dir() {
            return Err(self.error(
                Some(value.span()),
                "metrics.textfile",
                format!(
                    "{} is a directory: name the file itself, e.g. {}/vouch.prom",
                    path.display(),
                    path.display()
                ),
            ));
        }
        Ok(path)
    }

    fn validate(&self, raw: RawConfig) -> Result<Settings, ConfigError> {
        let b = raw.backup;
        let name = self.backup_name(&b)?;
        // A config that only dumps databases needs no sources.
        let dumps_only = raw.dump.as_ref().is_some_and(|d| !d.is_empty());
        let sources = self.sources(&b, dumps_only)?;
        let (exclude, exclude_set) = self.excludes(&b)?;
        let (required, required_dumps) = self.required(&b, &sources, &exclude_set)?;
        let on_read_error = self.on_read_error(&b)?;
        let compression = self.compression(&b)?;
        let encryption = self.encryption(raw.encryption)?;
        let (targets, remotes, sftp) =
            self.targets(raw.target.unwrap_or_default(), &sources, &exclude_set)?;
        let health = self.health(raw.health)?;
        let metrics = Metrics {
            textfile: raw
                .metrics
                .as_ref()
                .and_then(|m| m.textfile.as_ref())
                .map(|p| self.textfile(p))
                .transpose()?,
        };
        let notify = self.notify(raw.notify)?;
        let dumps = self.dumps(raw.dumps)?;
        let dump = self.dump_list(raw.dump.unwrap_or_default(), &dumps)?;
        let hooks = self.hook_list(raw.hook.unwrap_or_default(), &dumps)?;
        let required_dumps = self.required_dumps(&required_dumps, &dump)?;
        Ok(Settings {
            file: self.file.to_owned(),
            backup: Backup {
                name,
                sources,
                exclude,
                required,
                required_dumps,
                one_file_system: b.one_file_system,
                on_read_error,
                compression,
            },
            encryption,
            targets,
            remotes,
            sftp,
            health,
            metrics,
            notify,
            dumps,
            dump,
            hooks,
        })
    }

    /// `backup.name`, else the host's name.
    fn backup_name(&self, b: &RawBackup) -> Result<String, ConfigError> {
        Ok(match &b.name {
            Some(n) => {
                check_name(n.get_ref())
                    .map_err(|m| self.error(Some(n.span()), "backup.name", m))?;
                n.get_ref().clone()
            }
            None => host_name(),
        })
    }

    /// `backup.sources`: absolute, not overlapping, at least one unless only dumps are made.
    fn sources(&self, b: &RawBackup, dumps_only: bool) -> Result<Vec<PathBuf>, ConfigError> {
        if b.sources.get_ref().is_empty() && !dumps_only {
            return Err(self.error(
                Some(b.sources.span()),
                "backup.sources",
                "at least one source is needed".into(),
            ));
        }
        let mut sources: Vec<PathBuf> = Vec::new();
        for s in b.sources.get_ref() {
            let p = self.path(s, "backup.sources")?;
            if let Some(other) = sources
                .iter()
                .find(|o| p.starts_with(o) || o.starts_with(&p))
            {
                return Err(self.error(
                    Some(s.span()),
                    "backup.sources",
                    format!(
                        "{} overlaps {}: list each tree once",
                        p.display(),
                        other.display()
                    ),
                ));
            }
            sources.push(p);
        }
        Ok(sources)
    }

    /// `backup.exclude`: the patterns, and the set that matches them.
    fn excludes(
        &self,
        b: &RawBackup,
    ) -> Result<(Vec<String>, crate::pipeline::walk::Exclude), ConfigError> {
        let mut exclude = Vec::new();
        for e in &b.exclude {
            globset::Glob::new(e.get_ref()).map_err(|err| {
                self.error(
                    Some(e.span()),
                    "backup.exclude",
                    format!("bad pattern {:?}: {}", e.get_ref(), err.kind()),
                )
            })?;
            exclude.push(e.get_ref().clone());
        }
        let exclude_set = crate::pipeline::walk::Exclude::new(&exclude).map_err(|e| {
            self.error(None, "backup.exclude", format!("bad pattern: {}", e.kind()))
        })?;
        Ok((exclude, exclude_set))
    }

    /// `backup.required`: paths under a source and not excluded, and the `dump:` entries,
    /// which are checked against the dumps later.
    fn required<'r>(
        &self,
        b: &'r RawBackup,
        sources: &[PathBuf],
        exclude_set: &crate::pipeline::walk::Exclude,
    ) -> Result<(Vec<PathBuf>, Vec<&'r Spanned<String>>), ConfigError> {
        let mut required = Vec::new();
        let mut required_dumps = Vec::new();
        for r in &b.required {
            if r.get_ref().starts_with(dumps::REQUIRED_DUMP_PREFIX) {
                required_dumps.push(r);
                continue;
            }
            let p = self.path(r, "backup.required")?;
            if !sources.iter().any(|s| p.starts_with(s)) {
                return Err(self.error(
                    Some(r.span()),
                    "backup.required",
                    format!("{} is not under any source", p.display()),
                ));
            }
            if let Some(hit) = p
                .ancestors()
                .take_while(|a| !sources.iter().any(|s| s.starts_with(a) && s != a))
                .find(|a| exclude_set.matches(a))
            {
                return Err(self.error(
                    Some(r.span()),
                    "backup.required",
                    format!(
                        "{} is left out by an exclude pattern matching {}",
                        p.display(),
                        hit.display()
                    ),
                ));
            }
            required.push(p);
        }
        Ok((required, required_dumps))
    }

    /// `backup.on-read-error`.
    fn on_read_error(&self, b: &RawBackup) -> Result<ReadErrorPolicy, ConfigError> {
        Ok(match &b.on_read_error {
            None => ReadErrorPolicy::Fail,
            Some(v) => match v.get_ref().as_str() {
                "fail" => ReadErrorPolicy::Fail,
                "warn" => ReadErrorPolicy::Warn,
                other => {
                    return Err(self.error(
                        Some(v.span()),
                        "backup.on-read-error",
                        format!("{other:?} is not one of \"fail\", \"warn\""),
                    ))
                }
            },
        })
    }

    /// `backup.compression`: `"gzip"` (the default) or `"zstd"`.
    fn compression(&self, b: &RawBackup) -> Result<Compression, ConfigError> {
        let Some(v) = &b.compression else {
            return Ok(Compression::default());
        };
        Compression::from_name(v.get_ref()).ok_or_else(|| {
            self.error(
                Some(v.span()),
                "backup.compression",
                format!(
                    "{:?} is not one of \"gzip\", \"zstd\"",
                    v.get_ref().as_str()
                ),
            )
        })
    }

    /// `[encryption]`.
    fn encryption(&self, enc: RawEncryption) -> Result<Encryption, ConfigError> {
        Ok(Encryption {
            recipients: enc.recipients,
            recipients_file: enc
                .recipients_file
                .as_ref()
                .map(|p| self.path(p, "encryption.recipients-file"))
                .transpose()?,
            identity: enc
                .identity
                .as_ref()
                .map(|p| self.path(p, "encryption.identity"))
                .transpose()?,
            verify_without_identity: enc.verify_without_identity,
        })
    }

    /// `[health]`.
    fn health(&self, h: Option<RawHealth>) -> Result<Health, ConfigError> {
        let max_age = match h.as_ref().and_then(|h| h.max_age.as_ref()) {
            None => DEFAULT_MAX_AGE,
            Some(v) => parse_duration(v.get_ref())
                .map_err(|m| self.error(Some(v.span()), "health.max-age", m))?,
        };
        let size_tolerance = match h.as_ref().and_then(|h| h.size_tolerance.as_ref()) {
            None => DEFAULT_SIZE_TOLERANCE,
            Some(v) => match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => {
                    return Err(self.error(
                        Some(v.span()),
                        "health.size-tolerance",
                        format!("{} is not a percentage from 1 to 1000", v.get_ref()),
                    ))
                }
            },
        };

        let on_anomaly = match h.as_ref().and_then(|h| h.on_anomaly.as_ref()) {
            None => AnomalyPolicy::Warn,
            Some(v) => match v.get_ref().as_str() {
                "warn" => AnomalyPolicy::Warn,
                "fail" => AnomalyPolicy::Fail,
                other => {
                    return Err(self.error(
                        Some(v.span()),
                        "health.on-anomaly",
                        format!("{other:?} is not one of \"warn\", \"fail\""),
                    ))
                }
            },
        };
        Ok(Health {
            max_age,
            size_tolerance,
            on_anomaly,
        })
    }

    /// `[notify]`.
    fn notify(&self, n: Option<RawNotify>) -> Result<Notify, ConfigError> {
        Ok(match n {
            None => Notify::default(),
            Some(n) => {
                let url = |v: &Option<Spanned<String>>,
                           key: &str|
                 -> Result<Option<String>, ConfigError> {
                    match v {
                        None => Ok(None),
                        Some(v) => {
                            let u = v.get_ref().trim();
                            let rest = u
                                .strip_prefix("http://")
                                .or_else(|| u.strip_prefix("https://"));
                            match rest {
                                Some(r)
                                    if !r.is_empty()
                                        && !r.starts_with('/')
                                        && !u.contains(char::is_whitespace) =>
                                {
                                    Ok(Some(u.to_owned()))
                                }
                                _ => Err(self.error(
                                    Some(v.span()),
                                    key,
                                    format!("{u:?} is not an http:// or https:// URL"),
                                )),
                            }
                        }
                    }
                };
                let command = match &n.command {
                    None => None,
                    Some(c) if c.get_ref().is_empty() || c.get_ref()[0].is_empty() => {
                        return Err(self.error(
                            Some(c.span()),
                            "notify.command",
                            "give the program and its arguments as a list, e.g. [\"/usr/local/bin/alert\", \"--quiet\"]".into(),
                        ))
                    }
                    Some(c) => Some(c.get_ref().clone()),
                };
                let timeout = match &n.timeout {
                    None => DEFAULT_NOTIFY_TIMEOUT,
                    Some(v) => {
                        let d = parse_duration(v.get_ref())
                            .map_err(|m| self.error(Some(v.span()), "notify.timeout", m))?;
                        if d.is_zero() || d > Duration::from_secs(600) {
                            return Err(self.error(
                                Some(v.span()),
                                "notify.timeout",
                                "use a time limit from 1s to 10min".into(),
                            ));
                        }
                        d
                    }
                };
                Notify {
                    webhook: url(&n.webhook, "notify.webhook")?,
                    ping: url(&n.ping, "notify.ping")?,
                    command,
                    timeout,
                }
            }
        })
    }
}

/// The config of the remote-target tests: one directory target, then `extra`.
#[cfg(test)]
pub(crate) fn test_parse(extra: &str) -> Result<Settings, ConfigError> {
    const BASE: &str = "[backup]\nsources = [\"/etc\"]\n[encryption]\nrecipients = [\"age1x\"]\n[[target]]\nname = \"l\"\npath = \"/var/backups/vouch\"\n";
    from_str(
        &format!("{BASE}{extra}"),
        Path::new("/etc/vouch/vouch.toml"),
    )
}

/// A duplicate-key message from the parser: the key, and the table it is in when the message
/// names one (`Some(None)` for the top level).
type Duplicate = (Option<Option<String>>, String);

fn duplicate(message: &str) -> Option<Duplicate> {
    let name = quoted_after(message, "duplicate key")?;
    if message.contains("in document root") {
        return Some((Some(None), name));
    }
    Some((quoted_after(message, "in table").map(Some), name))
}

/// `section.key`, or `key` at the top level.
fn dotted(section: Option<String>, key: String) -> String {
    match section {
        Some(s) => format!("{s}.{key}"),
        None => key,
    }
}

/// The key and message for a duplicate: a key given twice in `table`, or (without a table) a
/// top-level table that appears twice.
fn duplicate_error(table: Option<String>, name: String) -> (String, String) {
    match table {
        None => {
            let says = duplicate_table(&name);
            (name, says)
        }
        Some(t) => {
            let says = format!("{name} is set twice in [{t}]: keep one");
            (format!("{t}.{name}"), says)
        }
    }
}

/// What to say about a top-level table that appears twice.
fn duplicate_table(name: &str) -> String {
    if name == "target" {
        "[target] conflicts with another [target] or [[target]]: write each target as its own [[target]], with two brackets".into()
    } else {
        format!("the table [{name}] appears twice: merge the two into one [{name}]")
    }
}

/// Removes `.` components, repeated or trailing slashes, and resolves `..` lexically (without
/// following symlinks, so the result is the path the config spells out).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 64 || !ok_chars || name.starts_with(['.', '-']) {
        return Err(format!(
            "{name:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with . or -)"
        ));
    }
    Ok(())
}

fn host_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let clean: String = host
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let clean = clean.trim_start_matches('-').to_owned();
    if clean.is_empty() {
        "backup".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests;
