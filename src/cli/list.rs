//! `vouch list`.

use crate::cli::Cli;
use crate::error::Error;
use crate::exit::ExitCode;

/// Runs `vouch list`.
pub fn execute(_cli: &Cli, _target: Option<&str>, _json: bool) -> Result<ExitCode, Error> {
    Err(Error::Internal("vouch list: not built yet".into()))
}
