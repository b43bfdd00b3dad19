//! `vouch run`: load the config, back up, and record the outcome.

use crate::cli::Cli;
use crate::config::{self, Settings};
use crate::error::Error;
use crate::exit::ExitCode;
use crate::host::dirs::{self, Dirs};
use crate::report::outcome::Outcome;
use crate::report::{metrics, notify};
use crate::run::{self, rfc3339, LastRun};
use crate::systemd::journal::{self, Entry, Event};
use crate::systemd::sdnotify::{self as systemd, human_bytes};
use time::OffsetDateTime;

/// Runs one backup (its phases, including the size check's verdict and retention after the
/// commit, are in [`run::run`]), then, once the result is final, records and reports it: the
/// state record, notifications, metrics and the journal.
pub fn execute(cli: &Cli) -> Result<ExitCode, Error> {
    let settings = config::load(&dirs::config_path(cli.config.as_deref()))?;
    let dirs = Dirs::from_env();
    // Before any thread starts: every thread of the run inherits the held-back signals.
    let watch = crate::systemd::stop::Watch::start(&settings, &dirs);
    let started = OffsetDateTime::now_utc();
    notify::run_started(&settings.notify, &dirs);
    let run::Ran {
        report,
        result,
        warnings,
    } = run::run(&settings, &dirs);
    let code = match &result {
        Ok(()) => ExitCode::Ok,
        Err(e) => e.exit_code(),
    };
    // A run refused because another holds the lock did nothing: the run that holds it runs its
    // own failure hooks if it fails (a failure hook that restarts a stopped service must not
    // fire in the middle of that run).
    if code != ExitCode::Ok && code != ExitCode::Locked {
        crate::dump::hook::failure(&settings, code);
    }
    let mut outcome = outcome(&settings, started, report.as_ref(), &result, code);
    outcome.reasons.extend(warnings);
    let partial = result.as_ref().err().and_then(Error::committed);
    let last = LastRun {
        run_id: journal::run_id().into(),
        finished: outcome.finished.clone(),
        exit_code: code.code(),
        exit_name: code.name().into(),
        archive: report
            .as_ref()
            .map(|r| r.archive.clone())
            .or_else(|| partial.map(|(a, _)| a.to_owned())),
        committed_targets: partial.map(|(_, t)| t.to_vec()).unwrap_or_default(),
        tar_bytes: report
            .as_ref()
            .map(|r| r.tar_bytes)
            .or_else(|| LastRun::load(&dirs.state).and_then(|l| l.tar_bytes)),
        duration_seconds: outcome.duration_seconds,
    };
    if let Err(e) = watch.record(|| record(&last, &dirs.state)) {
        log::warn!("cannot record the run in {}: {e}", dirs.state.display());
    }
    // Notifications first: their result (notify.json) is part of what the textfile reports,
    // so the file and `vouch status` agree.
    notify::send(&settings.notify, &dirs, &outcome);
    metrics::write(&settings, &dirs);
    result?;
    let Some(report) = report else {
        return Err(Error::Internal("a run succeeded without a report".into()));
    };
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
    Ok(ExitCode::Ok)
}

/// The run's result as notifications and metrics see it.
fn outcome(
    settings: &Settings,
    started: OffsetDateTime,
    report: Option<&run::Report>,
    result: &Result<(), Error>,
    code: ExitCode,
) -> Outcome {
    let mut o = Outcome::new(code, &settings.backup.name);
    o.started = Some(rfc3339(started));
    o.duration_seconds = Some((OffsetDateTime::now_utc() - started).as_seconds_f64());
    if let Some(r) = report {
        o.archive = Some(r.archive.clone());
        o.targets = r.committed.iter().map(|c| c.target.clone()).collect();
        o.archive_bytes = Some(r.archive_size);
        o.bytes_in = Some(r.stats.bytes);
        o.files = Some(r.stats.files);
    }
    if let Some((archive, targets)) = result.as_ref().err().and_then(Error::committed) {
        o.archive = Some(archive.to_owned());
        o.targets = targets.to_vec();
    }
    if let Err(e) = result {
        o.reasons.push(format!("{}: {e}", code.name()));
        o.hint = e.hint();
    }
    o
}

/// Logs the one journal entry for a failed `vouch preflight`.
pub fn report_preflight_failure(error: &Error, code: ExitCode) {
    Entry::event(Event::PreflightFailed, format!("{}: {error}", code.name()))
        .field("VOUCH_EXIT_CODE", code.code())
        .field("VOUCH_EXIT_NAME", code.name())
        .field_opt("VOUCH_TARGET", error.target())
        .field_opt("VOUCH_DUMP", error.dump())
        .field_opt("VOUCH_HOOK", error.hook())
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
        .field_opt("VOUCH_DUMP", error.dump())
        .field_opt("VOUCH_HOOK", error.hook())
        .field_opt(
            "VOUCH_ARCHIVE",
            error.committed().map(|(a, _)| a.to_owned()),
        )
        .field_opt(
            "VOUCH_COMMITTED_TARGETS",
            error.committed().map(|(_, t)| t.join(",")),
        )
        .field_opt("VOUCH_HINT", error.hint())
        .emit();
    systemd::status(&format!("failed: {} ({})", code.name(), error));
    let dirs = Dirs::from_env();
    // `execute` records every run that got as far as reading its config; this covers the rest.
    if LastRun::load(&dirs.state).is_some_and(|l| l.run_id == journal::run_id()) {
        return;
    }
    let last = LastRun {
        run_id: journal::run_id().into(),
        finished: rfc3339(OffsetDateTime::now_utc()),
        exit_code: code.code(),
        exit_name: code.name().into(),
        archive: error.committed().map(|(a, _)| a.to_owned()),
        committed_targets: error
            .committed()
            .map(|(_, t)| t.to_vec())
            .unwrap_or_default(),
        tar_bytes: LastRun::load(&dirs.state).and_then(|l| l.tar_bytes),
        duration_seconds: None,
    };
    if dirs.state.is_dir() {
        let _ = record(&last, &dirs.state);
    }
}

/// The state file recording the last run refused because another run held the lock.
pub const LAST_REFUSED: &str = "last-refused.json";

/// Records a run's outcome: in `last-run.json`, except for a run refused with LOCKED, which goes
/// to [`LAST_REFUSED`] instead. The refused run never held the lock, and the run that holds it
/// is still going: its result, not the refusal, is what `status` must show.
fn record(last: &LastRun, state: &std::path::Path) -> std::io::Result<()> {
    if last.exit_code == ExitCode::Locked.code() {
        let mut json = serde_json::to_vec_pretty(last).map_err(std::io::Error::other)?;
        json.push(b'\n');
        crate::target::local::write_atomic(state, LAST_REFUSED, &json, journal::run_id())
            .map(|_| ())
    } else {
        last.save(state)
    }
}
