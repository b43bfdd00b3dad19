//! `vouch run`: load the config, back up, and record the outcome.

use crate::cli::Cli;
use crate::config;
use crate::dirs::{self, Dirs};
use crate::error::Error;
use crate::exit::ExitCode;
use crate::journal::{self, Entry, Event};
use crate::run::{self, rfc3339, LastRun};
use crate::systemd::{self, human_bytes};
use time::OffsetDateTime;

/// Runs one backup and reports success.
pub fn execute(cli: &Cli) -> Result<ExitCode, Error> {
    let settings = config::load(&dirs::config_path(cli.config.as_deref()))?;
    let dirs = Dirs::from_env();
    let report = run::run(&settings, &dirs)?;
    let targets: Vec<&str> = report.committed.iter().map(|c| c.target.as_str()).collect();
    let message = format!(
        "backup {} succeeded: {} files, {} in, {} archive on {} ({}), verified {}",
        report.archive,
        report.stats.files,
        human_bytes(report.stats.bytes),
        human_bytes(report.archive_size),
        targets.join(", "),
        report.archive_sha256.get(..12).unwrap_or(""),
        report.level.name(),
    );
    Entry::event(Event::RunSucceeded, message)
        .field("VOUCH_ARCHIVE", &report.archive)
        .field("VOUCH_ARCHIVE_SHA256", &report.archive_sha256)
        .field("VOUCH_TARGET", targets.join(","))
        .field("VOUCH_FILES", report.stats.files)
        .field("VOUCH_BYTES_IN", report.stats.bytes)
        .field("VOUCH_BYTES_OUT", report.archive_size)
        .field("VOUCH_DURATION_USEC", report.duration.as_micros())
        .emit();
    systemd::status(&format!("last run succeeded: {}", report.archive));
    let last = LastRun {
        run_id: journal::run_id().into(),
        finished: rfc3339(OffsetDateTime::now_utc()),
        exit_code: ExitCode::Ok.code(),
        exit_name: ExitCode::Ok.name().into(),
        archive: Some(report.archive.clone()),
        tar_bytes: Some(report.tar_bytes),
    };
    if let Err(e) = last.save(&dirs.state) {
        log::warn!("cannot record the run in {}: {e}", dirs.state.display());
    }
    Ok(ExitCode::Ok)
}

/// Logs the one journal entry for a failed `vouch preflight`.
pub fn report_preflight_failure(error: &Error, code: ExitCode) {
    Entry::event(Event::PreflightFailed, format!("{}: {error}", code.name()))
        .field("VOUCH_EXIT_CODE", code.code())
        .field("VOUCH_EXIT_NAME", code.name())
        .field_opt("VOUCH_TARGET", error.target())
        .field_opt("VOUCH_HINT", error.hint())
        .emit();
}

/// Logs the one journal entry for a failed run and records it in the state directory.
pub fn report_failure(error: &Error, code: ExitCode) {
    let event = if code.is_preflight() {
        Event::PreflightFailed
    } else {
        Event::RunFailed
    };
    Entry::event(event, format!("{}: {error}", code.name()))
        .field("VOUCH_EXIT_CODE", code.code())
        .field("VOUCH_EXIT_NAME", code.name())
        .field_opt("VOUCH_TARGET", error.target())
        .field_opt("VOUCH_HINT", error.hint())
        .emit();
    systemd::status(&format!("failed: {} ({})", code.name(), error));
    let dirs = Dirs::from_env();
    let last = LastRun {
        run_id: journal::run_id().into(),
        finished: rfc3339(OffsetDateTime::now_utc()),
        exit_code: code.code(),
        exit_name: code.name().into(),
        archive: None,
        tar_bytes: LastRun::load(&dirs.state).and_then(|l| l.tar_bytes),
    };
    if dirs.state.is_dir() {
        let _ = last.save(&dirs.state);
    }
}
