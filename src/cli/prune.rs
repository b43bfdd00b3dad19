//! `vouch prune`.

use crate::cli::Cli;
use crate::error::Error;
use crate::exit::ExitCode;

/// Runs `vouch prune`.
pub fn execute(_cli: &Cli, _dry_run: bool, _target: Option<&str>) -> Result<ExitCode, Error> {
    Err(Error::Internal("vouch prune: not built yet".into()))
}
