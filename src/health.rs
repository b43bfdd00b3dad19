//! Health: the size of a new archive against recent ones, and the verdict `status` reports.

use crate::config::Settings;

/// A size outside the tolerance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeAnomaly {
    /// The new archive's size.
    pub size: u64,
    /// The median of recent archives.
    pub median: u64,
    /// The tolerance in percent.
    pub tolerance: u32,
}

/// Compares a new archive's size with the recent archives on the targets.
pub fn size_anomaly(_settings: &Settings, _archive: &str, _size: u64) -> Option<SizeAnomaly> {
    None
}
