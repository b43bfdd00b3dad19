//! `vouch doctor`.

use crate::cli::Cli;
use crate::exit::Health;

/// Runs `vouch doctor`.
pub fn execute(_cli: &Cli) -> Health {
    eprintln!("vouch doctor: not built yet");
    Health::Unknown
}
