//! `vouch restore`.

use crate::cli::Cli;
use crate::error::Error;
use crate::exit::ExitCode;
use std::path::PathBuf;

/// What to restore, from the command line.
#[derive(Debug, Clone)]
pub struct Request {
    /// The archive: a path, or its file name on a configured target.
    pub archive: PathBuf,
    /// The directory to restore into.
    pub to: PathBuf,
    /// Only these stored paths and what is under them; empty: everything.
    pub paths: Vec<PathBuf>,
    /// Replace an existing tree atomically.
    pub in_place: bool,
    /// Create device nodes and FIFOs (root only).
    pub devices: bool,
    /// The identity to decrypt with, instead of the config's.
    pub identity: Option<PathBuf>,
}

/// Runs `vouch restore`.
pub fn execute(_cli: &Cli, _request: &Request) -> Result<ExitCode, Error> {
    Err(Error::Internal("vouch restore: not built yet".into()))
}
