//! Logging: native journald entries under systemd, readable lines on a terminal.
//!
//! Every entry carries `SYSLOG_IDENTIFIER=vouch`, `PRIORITY` and `VOUCH_RUN_ID`. Events (a run
//! started, an archive was verified, a run failed, ...) also carry a fixed `MESSAGE_ID`, so
//! `journalctl MESSAGE_ID=...` finds every occurrence and the catalog can explain it, plus the
//! `VOUCH_*` fields that apply. Plain `log::info!` lines are for people; events are for programs.

use log::kv::{Key, Source, VisitSource};
use log::{Level, LevelFilter, Log, Metadata};
use std::fmt::Display;
use std::io::Write;
use std::sync::OnceLock;

/// The journal's `SYSLOG_IDENTIFIER`.
pub const IDENTIFIER: &str = "vouch";

/// The run id of this process, set once at start-up.
static RUN_ID: OnceLock<String> = OnceLock::new();

/// Something that happened that programs and people search the journal for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A run began.
    RunStarted,
    /// A preflight check failed (exit codes 10-19); nothing was written.
    PreflightFailed,
    /// An archive was committed to a target.
    ArchiveWritten,
    /// An archive was read back and verified.
    ArchiveVerified,
    /// An archive was copied off-site and checked there.
    RemoteCopied,
    /// Retention removed old archives.
    Pruned,
    /// The run kept the promise and exited 0.
    RunSucceeded,
    /// The run failed after preflight.
    RunFailed,
    /// `vouch verify` read every selected archive back and each one matched.
    VerifySucceeded,
    /// `vouch verify` found a damaged or missing archive, or could not check one.
    VerifyFailed,
    /// A `[[hook]]` command ran and exited 0.
    HookRan,
    /// A `[[dump]]` was made, passed its checks and is ready to be archived.
    DumpWritten,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 12] = [
        Event::RunStarted,
        Event::PreflightFailed,
        Event::ArchiveWritten,
        Event::ArchiveVerified,
        Event::RemoteCopied,
        Event::Pruned,
        Event::RunSucceeded,
        Event::RunFailed,
        Event::VerifySucceeded,
        Event::VerifyFailed,
        Event::HookRan,
        Event::DumpWritten,
    ];

    /// The `VOUCH_EVENT` value.
    pub const fn name(self) -> &'static str {
        match self {
            Event::RunStarted => "run-started",
            Event::PreflightFailed => "preflight-failed",
            Event::ArchiveWritten => "archive-written",
            Event::ArchiveVerified => "archive-verified",
            Event::RemoteCopied => "remote-copied",
            Event::Pruned => "pruned",
            Event::RunSucceeded => "run-succeeded",
            Event::RunFailed => "run-failed",
            Event::VerifySucceeded => "verify-succeeded",
            Event::VerifyFailed => "verify-failed",
            Event::HookRan => "hook-ran",
            Event::DumpWritten => "dump-written",
        }
    }

    /// The `MESSAGE_ID`: fixed forever, never reused for another event.
    pub const fn message_id(self) -> &'static str {
        match self {
            Event::RunStarted => "46347231306d440f975b0dde049d52ff",
            Event::PreflightFailed => "97b78431475446d6a39379faa9b21177",
            Event::ArchiveWritten => "804e53977cd0465893f6626e2df98a1d",
            Event::ArchiveVerified => "72fdada974af441195e994a4e05e0113",
            Event::RemoteCopied => "8482606352f74b98985a62351669024e",
            Event::Pruned => "dd96f1b38d4848489e852c7931f456f4",
            Event::RunSucceeded => "4622a3509a154d1dbafd8fc4e8ee2f43",
            Event::RunFailed => "bed9d071a2b24a02ac797df75717e3ad",
            Event::VerifySucceeded => "57ea36d50c684fa2a7217221ed90cb71",
            Event::VerifyFailed => "4263a1cac18743a694cc811146bd5bf2",
            Event::HookRan => "1b9db498875141229f7d9f9af36b86d4",
            Event::DumpWritten => "1428fc3857ee47318496b8641646c407",
        }
    }

    /// The journal priority of the event.
    pub const fn level(self) -> Level {
        match self {
            Event::PreflightFailed | Event::RunFailed | Event::VerifyFailed => Level::Error,
            _ => Level::Info,
        }
    }
}

/// One journal entry about to be sent.
#[derive(Debug, Clone)]
pub struct Entry {
    level: Level,
    event: Option<Event>,
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl Entry {
    /// An event entry at the event's priority.
    pub fn event(event: Event, message: impl Into<String>) -> Entry {
        Entry {
            level: event.level(),
            event: Some(event),
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// An error entry that is not one of vouch's events (so it has no `MESSAGE_ID`).
    pub fn error(message: impl Into<String>) -> Entry {
        Entry {
            level: Level::Error,
            event: None,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// Overrides the priority (e.g. a warning attached to an event).
    pub fn level(mut self, level: Level) -> Entry {
        self.level = level;
        self
    }

    /// Adds a `VOUCH_*` field.
    pub fn field(mut self, key: &'static str, value: impl Display) -> Entry {
        self.fields.push((key, value.to_string()));
        self
    }

    /// Adds a field when `value` is present.
    pub fn field_opt(self, key: &'static str, value: Option<impl Display>) -> Entry {
        match value {
            Some(v) => self.field(key, v),
            None => self,
        }
    }

    /// The message text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Every structured field the logger is given (besides `MESSAGE` and `PRIORITY`, which come
    /// from the message and level, and `SYSLOG_IDENTIFIER`, which the journal logger adds).
    pub fn journal_fields(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(self.fields.len() + 3);
        if let Some(event) = self.event {
            out.push(("MESSAGE_ID".to_owned(), event.message_id().to_owned()));
            out.push(("VOUCH_EVENT".to_owned(), event.name().to_owned()));
        }
        out.push(("VOUCH_RUN_ID".to_owned(), run_id().to_owned()));
        out.extend(
            self.fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone())),
        );
        out
    }

    /// Sends the entry to the installed logger.
    pub fn emit(self) {
        let fields = self.journal_fields();
        log::logger().log(
            &log::Record::builder()
                .level(self.level)
                .target(IDENTIFIER)
                .args(format_args!("{}", self.message))
                .key_values(&fields)
                .build(),
        );
    }
}

/// The current run id (32 hex digits).
pub fn run_id() -> &'static str {
    RUN_ID.get().map(String::as_str).unwrap_or("")
}

/// Makes a new run id from the kernel's random source.
pub fn new_run_id() -> String {
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes.copy_from_slice(&(nanos ^ u128::from(std::process::id())).to_le_bytes());
    }
    crate::pipeline::io::hex(&bytes)
}

/// Where log lines go.
enum Sink {
    Journal(systemd_journal_logger::JournalLog),
    Terminal,
}

struct Logger {
    sink: Sink,
    level: LevelFilter,
}

/// A record's own fields followed by the run id, for records that do not carry it.
struct WithRunId<'a>(&'a dyn Source);

impl Source for WithRunId<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), log::kv::Error> {
        self.0.visit(visitor)?;
        visitor.visit_pair(Key::from("VOUCH_RUN_ID"), run_id().into())
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match &self.sink {
            Sink::Journal(journal) => {
                let has_id = record.key_values().get(Key::from("VOUCH_RUN_ID")).is_some();
                let result = if has_id {
                    journal.journal_send(record)
                } else {
                    let both = WithRunId(record.key_values());
                    journal.journal_send(&record.to_builder().key_values(&both).build())
                };
                if result.is_err() {
                    let _ = writeln!(std::io::stderr(), "vouch: {}", record.args());
                }
                SENT.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Sink::Terminal => {
                let prefix = match record.level() {
                    Level::Error => "error: ",
                    Level::Warn => "warning: ",
                    _ => "",
                };
                let mut line = format!("vouch: {prefix}{}\n", record.args());
                if let Some(hint) = record.key_values().get(Key::from("VOUCH_HINT")) {
                    line.push_str(&format!("  fix: {hint}\n"));
                }
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Set once an entry went to journald natively.
static SENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long a process that logged to journald stays alive before it exits.
///
/// journald learns which unit (and invocation) an entry belongs to by reading the sender's
/// `/proc/PID/cgroup` when it processes the datagram. A process that exits right after its
/// last entry, as a failing preflight does, can be gone by then, and the entry loses
/// `_SYSTEMD_UNIT` and `_SYSTEMD_INVOCATION_ID`: `journalctl -u vouch.service` would not show
/// the one entry that names the cause. Waiting this long before exiting gives journald the
/// time to attach them (measured: lost now and then on a loaded two-core machine without it).
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(150);

/// Called last, just before the process exits: when entries went to journald, waits
/// [`SETTLE`] so that journald can attribute them to the unit (see there).
pub fn settle() {
    if SENT.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(SETTLE);
    }
}

/// Installs the logger: journald when stderr is the journal (`$JOURNAL_STREAM` matches it),
/// else stderr. Call once, first thing.
pub fn init(run_id: String, verbose: bool) {
    let _ = RUN_ID.set(run_id);
    let to_journal = systemd_journal_logger::connected_to_journal();
    let sink = if to_journal {
        match systemd_journal_logger::JournalLog::empty() {
            Ok(j) => Sink::Journal(j.with_syslog_identifier(IDENTIFIER.to_owned())),
            Err(_) => Sink::Terminal,
        }
    } else {
        Sink::Terminal
    };
    let level = if verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    if log::set_boxed_logger(Box::new(Logger { sink, level })).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn message_ids_are_unique_128_bit_hex() {
        let mut seen = HashSet::new();
        for e in Event::ALL {
            let id = e.message_id();
            assert_eq!(id.len(), 32, "{id}");
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(seen.insert(id), "{id} reused");
        }
    }

    #[test]
    fn event_entries_carry_id_event_run_and_fields() {
        let _ = RUN_ID.set("0123456789abcdef0123456789abcdef".into());
        let entry = Entry::event(Event::RunFailed, "run failed")
            .field("VOUCH_EXIT_CODE", 15)
            .field("VOUCH_EXIT_NAME", "TARGET_READONLY")
            .field("VOUCH_TARGET", "local")
            .field("VOUCH_HINT", "add ReadWritePaths=/x");
        let fields = entry.journal_fields();
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("MESSAGE_ID"), Some(Event::RunFailed.message_id()));
        assert_eq!(get("VOUCH_EVENT"), Some("run-failed"));
        assert_eq!(get("VOUCH_RUN_ID"), Some(run_id()));
        assert_eq!(run_id().len(), 32);
        assert_eq!(get("VOUCH_EXIT_CODE"), Some("15"));
        assert_eq!(get("VOUCH_EXIT_NAME"), Some("TARGET_READONLY"));
        assert_eq!(get("VOUCH_TARGET"), Some("local"));
        assert_eq!(get("VOUCH_HINT"), Some("add ReadWritePaths=/x"));
        for (k, _) in &fields {
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{k} is not a valid journal field name"
            );
        }
    }

    #[test]
    fn run_ids_are_32_hex_and_differ() {
        let a = new_run_id();
        let b = new_run_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
