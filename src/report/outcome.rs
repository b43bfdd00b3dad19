//! The result of a run (or of a unit that failed before vouch could report), as the reporting
//! channels see it: notifications, metrics and the state directory.
//!
//! It is built only once the final exit code is known, so no channel can ever announce success
//! for a run that exits non-zero.

use crate::exit::ExitCode;
use serde::Serialize;

/// What happened, in the words every channel uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Outcome {
    /// The run's id (`VOUCH_RUN_ID`).
    pub run_id: String,
    /// The host.
    pub host: String,
    /// `[backup] name`.
    pub name: String,
    /// `success` when the exit code is 0, else `failure`.
    pub result: String,
    /// The exit code.
    pub exit_code: u8,
    /// Its name (`OK`, `TARGET_FULL`, ...).
    pub exit_name: String,
    /// RFC 3339 start time, when known.
    pub started: Option<String>,
    /// RFC 3339 end time.
    pub finished: String,
    /// Wall time in seconds, when known.
    pub duration_seconds: Option<f64>,
    /// The archive's file name, when one was committed.
    pub archive: Option<String>,
    /// The targets it was committed to.
    pub targets: Vec<String>,
    /// Encrypted archive bytes.
    pub archive_bytes: Option<u64>,
    /// File data bytes read from the sources.
    pub bytes_in: Option<u64>,
    /// Regular files archived.
    pub files: Option<u64>,
    /// What went wrong or needs attention, one plain sentence each (empty on a clean success).
    pub reasons: Vec<String>,
    /// The fix for the failure, when there is one.
    pub hint: Option<String>,
}

impl Outcome {
    /// An outcome with just the result filled in.
    pub fn new(code: ExitCode, name: &str) -> Outcome {
        Outcome {
            run_id: crate::systemd::journal::run_id().to_owned(),
            host: crate::run::host_name(),
            name: name.to_owned(),
            result: if code == ExitCode::Ok {
                "success".into()
            } else {
                "failure".into()
            },
            exit_code: code.code(),
            exit_name: code.name().to_owned(),
            started: None,
            finished: crate::run::rfc3339(time::OffsetDateTime::now_utc()),
            duration_seconds: None,
            archive: None,
            targets: Vec::new(),
            archive_bytes: None,
            bytes_in: None,
            files: None,
            reasons: Vec::new(),
            hint: None,
        }
    }

    /// Whether the run succeeded.
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exit_zero_is_success() {
        assert_eq!(Outcome::new(ExitCode::Ok, "web1").result, "success");
        for code in ExitCode::ALL.into_iter().filter(|c| *c != ExitCode::Ok) {
            let o = Outcome::new(code, "web1");
            assert_eq!(o.result, "failure", "{code}");
            assert!(!o.succeeded());
        }
    }
}
