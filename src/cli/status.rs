//! `vouch status`.

use crate::cli::Cli;
use crate::exit::Health;

/// Runs `vouch status`.
pub fn execute(_cli: &Cli, _json: bool) -> Health {
    eprintln!("vouch status: not built yet");
    Health::Unknown
}
