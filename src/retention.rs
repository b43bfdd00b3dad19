//! Retention: which archives `keep` keeps, and deleting the rest.

use crate::config::Settings;
use crate::dirs::Dirs;
use crate::error::Error;

/// Applies retention to every target after a successful run. An archive that cannot be deleted
/// is [`Error::Prune`] (exit 36); the new archive is good either way.
pub fn after_run(_settings: &Settings, _dirs: &Dirs) -> Result<(), Error> {
    Ok(())
}
