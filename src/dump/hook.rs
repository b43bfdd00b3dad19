//! `[[hook]]`: argv commands (no shell) run around a backup.
//!
//! - `before` hooks run in config order after preflight, before the dumps and the sources are
//!   read. A failure stops the run with exit 20 before anything is written.
//! - A before-hook's `cleanup` runs whatever happened, as soon as the sources and dumps are
//!   read (or the run stopped earlier), in reverse order: the downtime of a "stop the app, copy,
//!   start it" pair is the read time, not the verification time. The cleanup of a hook whose own
//!   `run` failed runs too, since it may have half done its work. A failed cleanup leaves the
//!   archive committed and turns the run into exit 20, like a failed retention does with 36.
//! - `after` hooks run once the archive is committed and everything after it succeeded; a
//!   failure is exit 20 with the archive kept.
//! - `failure` hooks run when the run failed, with its exit code in their environment; their
//!   own failures are logged and change nothing.
//!
//! Each hook gets `VOUCH_HOOK`, `VOUCH_HOOK_WHEN` and `VOUCH_RUN_ID` in its environment, after-
//! hooks `VOUCH_ARCHIVE`, failure hooks `VOUCH_EXIT_CODE` and `VOUCH_EXIT_NAME`. Every
//! successful command logs a `hook-ran` event.

use super::child::{self, Owner, Stdout};
use super::HookError;
use crate::config::{Hook, Settings, When};
use crate::error::Error;
use crate::exit::ExitCode;
use crate::systemd::journal::{self, Entry, Event};
use std::time::Instant;

/// The cleanups still owed by the before-hooks that ran. Dropping it runs them (a run that
/// stopped early still restarts what its hooks stopped); [`Cleanups::finish`] runs them and
/// returns the first failure.
#[derive(Debug, Default)]
pub struct Cleanups<'a> {
    pending: Vec<&'a Hook>,
}

/// A failed cleanup: the hook and why.
pub type CleanupFailure = (String, HookError);

impl Cleanups<'_> {
    /// Runs every owed cleanup, newest first, and returns the first failure.
    pub fn finish(mut self) -> Option<CleanupFailure> {
        self.run_all()
    }

    fn run_all(&mut self) -> Option<CleanupFailure> {
        let mut first = None;
        while let Some(hook) = self.pending.pop() {
            let Some(argv) = &hook.cleanup else { continue };
            if let Err(e) = command(hook, "cleanup", argv, &[]) {
                Entry::error(format!("hook {} cleanup failed: {e}", hook.name))
                    .field("VOUCH_HOOK", &hook.name)
                    .emit();
                first.get_or_insert((hook.name.clone(), e));
            }
        }
        first
    }
}

impl Drop for Cleanups<'_> {
    fn drop(&mut self) {
        let _ = self.run_all();
    }
}

/// Runs the before-hooks in config order. On a failure the cleanups owed so far run at once
/// and the failure is returned.
pub fn before(settings: &Settings) -> Result<Cleanups<'_>, Error> {
    let mut owed = Cleanups::default();
    for hook in settings.hooks.iter().filter(|h| h.when == When::Before) {
        if hook.cleanup.is_some() {
            owed.pending.push(hook);
        }
        crate::systemd::sdnotify::status(&format!("hook {}: running", hook.name));
        if let Err(error) = command(hook, "run", &hook.run, &[]) {
            drop(owed);
            return Err(Error::Hook {
                name: hook.name.clone(),
                step: "run",
                error: Box::new(error),
                archive: None,
            });
        }
    }
    Ok(owed)
}

/// Runs the after-hooks for the committed `archive`; the first failure is returned, the
/// archive stays.
pub fn after(settings: &Settings, archive: &str) -> Result<(), Error> {
    let mut first = None;
    for hook in settings.hooks.iter().filter(|h| h.when == When::After) {
        let env = [("VOUCH_ARCHIVE", archive.to_owned())];
        if let Err(error) = command(hook, "run", &hook.run, &env) {
            first.get_or_insert(Error::Hook {
                name: hook.name.clone(),
                step: "run",
                error: Box::new(error),
                archive: Some(archive.to_owned()),
            });
        }
    }
    first.map_or(Ok(()), Err)
}

/// Runs the failure hooks of a run that ended with `code`. Their failures are logged only.
pub fn failure(settings: &Settings, code: ExitCode) {
    for hook in settings.hooks.iter().filter(|h| h.when == When::Failure) {
        let env = [
            ("VOUCH_EXIT_CODE", code.code().to_string()),
            ("VOUCH_EXIT_NAME", code.name().to_owned()),
        ];
        if let Err(e) = command(hook, "run", &hook.run, &env) {
            Entry::error(format!("failure hook {} failed: {e}", hook.name))
                .field("VOUCH_HOOK", &hook.name)
                .field_opt("VOUCH_HINT", Some(e.hint(&hook.name, "run", None)))
                .emit();
        }
    }
}

/// Runs one hook command and logs `hook-ran` when it succeeds.
fn command(
    hook: &Hook,
    step: &str,
    argv: &[String],
    extra: &[(&str, String)],
) -> Result<(), HookError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut env = vec![
        ("VOUCH_HOOK", hook.name.clone()),
        ("VOUCH_HOOK_WHEN", hook.when.name().to_owned()),
        ("VOUCH_RUN_ID", journal::run_id().to_owned()),
    ];
    env.extend(extra.iter().cloned());
    let started = Instant::now();
    let owner = Owner {
        field: "VOUCH_HOOK",
        name: &hook.name,
    };
    let done = child::run(argv, &env, hook.timeout, owner, Stdout::ToStderr).map_err(|e| {
        HookError::Start {
            program: program.clone(),
            missing: e.kind() == std::io::ErrorKind::NotFound,
            error: e.to_string(),
        }
    })?;
    if done.timed_out {
        return Err(HookError::TimedOut {
            timeout: hook.timeout,
        });
    }
    if !done.status.success() {
        return Err(HookError::Exited {
            program,
            status: done.describe(),
            stderr: done.last_line(),
        });
    }
    let what = if step == "run" {
        format!("hook {} ({})", hook.name, hook.when.name())
    } else {
        format!("hook {} cleanup", hook.name)
    };
    Entry::event(
        Event::HookRan,
        format!(
            "{what}: {program} exited 0 in {:.1}s",
            started.elapsed().as_secs_f64()
        ),
    )
    .field("VOUCH_HOOK", &hook.name)
    .field("VOUCH_DURATION_USEC", started.elapsed().as_micros())
    .emit();
    Ok(())
}
