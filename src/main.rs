//! The `vouch` binary: parse, set up logging, dispatch, and turn the result into an exit code.

use clap::Parser;
use std::io;
use vouch::cli::{self, Cli};
use vouch::error::Error;
use vouch::exit::ExitCode;
use vouch::lock::LockError;

fn main() -> std::process::ExitCode {
    vouch::signals::ignore_sigxfsz();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::Usage.into()
            } else {
                ExitCode::Ok.into()
            };
        }
    };
    vouch::journal::init(vouch::journal::new_run_id(), cli.verbose);
    match cli::execute(&cli) {
        Ok(code) => code.into(),
        Err(error) => {
            let code = exit_code(&error);
            cli::report_failure(&cli, &error, code);
            code.into()
        }
    }
}

/// The one place an error becomes an exit code.
fn exit_code(error: &Error) -> ExitCode {
    match error {
        Error::Usage(_) => ExitCode::Usage,
        Error::Config(_) => ExitCode::Config,
        Error::Lock(LockError::Held { .. }) => ExitCode::Locked,
        Error::Lock(LockError::Io { .. }) | Error::State { .. } | Error::Internal(_) => {
            ExitCode::Internal
        }
        Error::Source { .. } => ExitCode::Source,
        Error::Key(_) => ExitCode::Key,
        Error::TargetMissing { .. } => ExitCode::TargetMissing,
        Error::TargetWrite { error, .. } => target_errno(error),
        Error::Write { .. } => ExitCode::Write,
        Error::SourceRead(_) => ExitCode::SourceRead,
        Error::Required(_) => ExitCode::Required,
        Error::Verify { .. } => ExitCode::Verify,
    }
}

/// Classifies the errno of a failure to start writing in a target.
fn target_errno(error: &io::Error) -> ExitCode {
    match error.raw_os_error() {
        Some(libc::EROFS) => ExitCode::TargetReadonly,
        Some(libc::EACCES) | Some(libc::EPERM) => ExitCode::TargetDenied,
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ExitCode::TargetFull,
        Some(libc::EFBIG) => ExitCode::TargetFilesize,
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => ExitCode::TargetMissing,
        _ => ExitCode::Write,
    }
}
