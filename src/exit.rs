//! Exit codes: the only place in vouch where their numbers live.
//!
//! Monitoring, `RestartPreventExitStatus=`, the man page and the journal catalog all depend on
//! these numbers, so they are part of the interface. Everything else (documentation, unit files,
//! tests) is generated from [`ExitCode::ALL`] or checked against it.

use std::fmt;

/// Why a vouch command ended. (`status` uses the monitoring scale 0/1/2/3 instead.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitCode {
    /// The promise holds: a new archive is on every target, read back and verified.
    Ok,
    /// A bug or an unexpected error.
    Internal,
    /// Bad command line.
    Usage,
    /// Config missing, unparsable or invalid.
    Config,
    /// Another vouch run holds the lock.
    Locked,
    /// A source path is missing or unreadable at preflight.
    Source,
    /// Recipient missing or invalid; identity unreadable, too open, or matching no recipient.
    Key,
    /// Target directory missing, or not a mount point when the config says it must be.
    TargetMissing,
    /// Target is on a read-only mount.
    TargetReadonly,
    /// Permission denied writing to the target.
    TargetDenied,
    /// Not enough free space, inodes or quota for the expected archive.
    TargetFull,
    /// The target filesystem's largest file is smaller than the expected archive.
    TargetFilesize,
    /// Target is on tmpfs/ramfs or a container overlay.
    TargetVolatile,
    /// A hook or database dump failed, timed out, or failed its checks; after a failing
    /// after-hook or cleanup the new archive stays in place.
    Hook,
    /// Writing the archive failed mid-run.
    Write,
    /// Files could not be read during the run and the policy says fail.
    SourceRead,
    /// A required path is missing or empty in the archive.
    Required,
    /// Read-back verification failed.
    Verify,
    /// The off-site copy, or its verification, failed.
    Remote,
    /// Archive size outside the tolerance against recent history.
    Anomaly,
    /// Retention failed (the new archive itself is good).
    Prune,
}

impl ExitCode {
    /// Every code, in numeric order.
    pub const ALL: [ExitCode; 21] = [
        ExitCode::Ok,
        ExitCode::Internal,
        ExitCode::Usage,
        ExitCode::Config,
        ExitCode::Locked,
        ExitCode::Source,
        ExitCode::Key,
        ExitCode::TargetMissing,
        ExitCode::TargetReadonly,
        ExitCode::TargetDenied,
        ExitCode::TargetFull,
        ExitCode::TargetFilesize,
        ExitCode::TargetVolatile,
        ExitCode::Hook,
        ExitCode::Write,
        ExitCode::SourceRead,
        ExitCode::Required,
        ExitCode::Verify,
        ExitCode::Remote,
        ExitCode::Anomaly,
        ExitCode::Prune,
    ];

    /// The process exit status.
    pub const fn code(self) -> u8 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Internal => 1,
            ExitCode::Usage => 2,
            ExitCode::Config => 10,
            ExitCode::Locked => 11,
            ExitCode::Source => 12,
            ExitCode::Key => 13,
            ExitCode::TargetMissing => 14,
            ExitCode::TargetReadonly => 15,
            ExitCode::TargetDenied => 16,
            ExitCode::TargetFull => 17,
            ExitCode::TargetFilesize => 18,
            ExitCode::TargetVolatile => 19,
            ExitCode::Hook => 20,
            ExitCode::Write => 30,
            ExitCode::SourceRead => 31,
            ExitCode::Required => 32,
            ExitCode::Verify => 33,
            ExitCode::Remote => 34,
            ExitCode::Anomaly => 35,
            ExitCode::Prune => 36,
        }
    }

    /// The name used in `VOUCH_EXIT_NAME`, the man page and the catalog.
    pub const fn name(self) -> &'static str {
        match self {
            ExitCode::Ok => "OK",
            ExitCode::Internal => "INTERNAL",
            ExitCode::Usage => "USAGE",
            ExitCode::Config => "CONFIG",
            ExitCode::Locked => "LOCKED",
            ExitCode::Source => "SOURCE",
            ExitCode::Key => "KEY",
            ExitCode::TargetMissing => "TARGET_MISSING",
            ExitCode::TargetReadonly => "TARGET_READONLY",
            ExitCode::TargetDenied => "TARGET_DENIED",
            ExitCode::TargetFull => "TARGET_FULL",
            ExitCode::TargetFilesize => "TARGET_FILESIZE",
            ExitCode::TargetVolatile => "TARGET_VOLATILE",
            ExitCode::Hook => "HOOK",
            ExitCode::Write => "WRITE",
            ExitCode::SourceRead => "SOURCE_READ",
            ExitCode::Required => "REQUIRED",
            ExitCode::Verify => "VERIFY",
            ExitCode::Remote => "REMOTE",
            ExitCode::Anomaly => "ANOMALY",
            ExitCode::Prune => "PRUNE",
        }
    }

    /// One sentence: when this code is returned.
    pub const fn description(self) -> &'static str {
        match self {
            ExitCode::Ok => "a new archive is on every target, read back and verified",
            ExitCode::Internal => "a bug or an unexpected error",
            ExitCode::Usage => "bad command line",
            ExitCode::Config => "config missing, unparsable or invalid",
            ExitCode::Locked => "another vouch run holds the lock",
            ExitCode::Source => "a source path is missing or unreadable at preflight",
            ExitCode::Key => {
                "recipient missing or invalid; identity unreadable, too open, or matching no recipient"
            }
            ExitCode::TargetMissing => {
                "target directory missing, or not a mount point when the config requires one"
            }
            ExitCode::TargetReadonly => "target is on a read-only mount",
            ExitCode::TargetDenied => "permission denied writing to the target",
            ExitCode::TargetFull => "not enough free space, inodes or quota for the expected archive",
            ExitCode::TargetFilesize => {
                "the target filesystem's largest file is smaller than the expected archive"
            }
            ExitCode::TargetVolatile => "target is on tmpfs/ramfs or a container overlay",
            ExitCode::Hook => "a hook or database dump failed, timed out, or failed its checks",
            ExitCode::Write => "writing the archive failed mid-run",
            ExitCode::SourceRead => "files could not be read during the run and the policy says fail",
            ExitCode::Required => "a required path is missing or empty in the archive",
            ExitCode::Verify => "read-back verification failed",
            ExitCode::Remote => "the off-site copy, or its verification, failed",
            ExitCode::Anomaly => "archive size outside the tolerance against recent history",
            ExitCode::Prune => "retention failed; the new archive itself is good",
        }
    }

    /// True for the codes of checks that run before a byte is written (10-19).
    pub const fn is_preflight(self) -> bool {
        matches!(self.code(), 10..=19)
    }

    /// The code for a number, if vouch ever returns it.
    pub fn from_code(code: u8) -> Option<ExitCode> {
        ExitCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

/// The health of the backups, as `vouch status` reports it: the monitoring-plugin scale
/// (Nagios, Icinga, Sensu), separate from [`ExitCode`] and used by no other command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Every target has a recent verified archive and nothing needs attention.
    Healthy,
    /// Something needs attention soon; the backups are still good.
    Warning,
    /// A backup is stale, failed or incomplete: act now.
    Critical,
    /// vouch cannot tell (no config, no state).
    Unknown,
}

impl Health {
    /// Every level, in numeric order.
    pub const ALL: [Health; 4] = [
        Health::Healthy,
        Health::Warning,
        Health::Critical,
        Health::Unknown,
    ];

    /// The exit status of `vouch status`.
    pub const fn code(self) -> u8 {
        match self {
            Health::Healthy => 0,
            Health::Warning => 1,
            Health::Critical => 2,
            Health::Unknown => 3,
        }
    }

    /// The word used in text and JSON output.
    pub const fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Warning => "warning",
            Health::Critical => "critical",
            Health::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a command that did not fail ended: an [`ExitCode`], or a [`Health`] for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// A regular command's code.
    Exit(ExitCode),
    /// `vouch status`'s verdict.
    Health(Health),
}

impl From<ExitCode> for Done {
    fn from(code: ExitCode) -> Done {
        Done::Exit(code)
    }
}

impl From<Done> for std::process::ExitCode {
    fn from(done: Done) -> Self {
        match done {
            Done::Exit(code) => code.into(),
            Done::Health(h) => std::process::ExitCode::from(h.code()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn numbers_and_names_are_unique_and_ordered() {
        let mut numbers = HashSet::new();
        let mut names = HashSet::new();
        let mut last = None;
        for code in ExitCode::ALL {
            assert!(
                numbers.insert(code.code()),
                "duplicate number {}",
                code.code()
            );
            assert!(names.insert(code.name()), "duplicate name {}", code.name());
            if let Some(prev) = last {
                assert!(code.code() > prev, "ALL is not in numeric order at {code}");
            }
            last = Some(code.code());
            assert_eq!(ExitCode::from_code(code.code()), Some(code));
        }
    }

    #[test]
    fn reserved_ranges_are_never_used() {
        for code in ExitCode::ALL {
            let n = code.code();
            assert!(!(64..=78).contains(&n), "{code} collides with sysexits");
            assert!(
                n < 126,
                "{code} collides with shell, signal or systemd codes"
            );
        }
    }

    #[test]
    fn numbers_match_the_design_table() {
        let table = [
            (0, "OK"),
            (1, "INTERNAL"),
            (2, "USAGE"),
            (10, "CONFIG"),
            (11, "LOCKED"),
            (12, "SOURCE"),
            (13, "KEY"),
            (14, "TARGET_MISSING"),
            (15, "TARGET_READONLY"),
            (16, "TARGET_DENIED"),
            (17, "TARGET_FULL"),
            (18, "TARGET_FILESIZE"),
            (19, "TARGET_VOLATILE"),
            (20, "HOOK"),
            (30, "WRITE"),
            (31, "SOURCE_READ"),
            (32, "REQUIRED"),
            (33, "VERIFY"),
            (34, "REMOTE"),
            (35, "ANOMALY"),
            (36, "PRUNE"),
        ];
        assert_eq!(table.len(), ExitCode::ALL.len());
        for (n, name) in table {
            let code = ExitCode::from_code(n).unwrap_or_else(|| panic!("no code {n}"));
            assert_eq!(code.name(), name);
        }
    }
}
