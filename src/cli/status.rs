//! `vouch status`.

use crate::cli::Cli;
use crate::exit::Health;

/// Runs `vouch status`.
pub fn execute(_cli: &Cli, _json: bool) -> Health {
    eprintln!("vouch status: not built yet");
    Health::Unknown
}

/// The status verdict as `vouch doctor` lines.
pub fn doctor_lines(
    _settings: &crate::config::Settings,
    _dirs: &crate::dirs::Dirs,
) -> Vec<crate::cli::doctor::Line> {
    Vec::new()
}
