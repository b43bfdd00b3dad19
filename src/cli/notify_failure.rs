//! `vouch notify-failure UNIT`: what `vouch-notify@.service` runs when a vouch unit fails.
//!
//! It works even when vouch itself never ran (a missing binary, a sandbox that kills it before
//! `main`): systemd starts it from `OnFailure=`, and it asks systemd what happened to the unit.
//! The result goes to the journal (one error entry naming the unit, its result and exit status),
//! to `$STATE_DIRECTORY/last-failure.json`, and to the `[notify]` channels of the config as a
//! failure outcome.
//!
//! When `vouch run` already sent the failure of that same invocation (its `notify.json` names
//! systemd's `InvocationID=` of the failed unit and a non-zero exit code), the channels that got
//! it are skipped, so one failure makes one alert; channels that failed then are tried again.
//! Channel failures never make this command fail: they are logged and recorded like a run's.

use crate::cli::Cli;
use crate::config;
use crate::error::Error;
use crate::exit::ExitCode;
use crate::host::dirs::{self, Dirs};
use crate::report::notify::{self, Channel, ChannelFailure, NotifyRecord};
use crate::report::outcome::Outcome;
use crate::systemd::journal;
use crate::systemd::units::{
    describe, failed_units, main_did_not_fail, needed_units, parse_show, systemctl_show,
    vouch_code, LAST_FAILURE, PROPERTIES,
};
use serde::Serialize;
use std::collections::BTreeMap;

/// What systemd says about a failed unit.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct UnitFailure {
    /// The unit's name.
    pub unit: String,
    /// `Result=` (exit-code, signal, timeout, ...).
    pub result: String,
    /// `ExecMainStatus=`: the exit code or signal number.
    pub exit_status: String,
    /// The vouch exit name for that status, when it is one of vouch's codes.
    pub exit_name: Option<String>,
    /// `InvocationID=` of the failed run.
    pub invocation: String,
    /// What went wrong, in words: the main process's end, a failed `ExecStartPre=` command,
    /// or the dependency that failed so that vouch never ran.
    pub detail: String,
    /// The unit whose failure kept this one from starting (e.g. `mnt-usb.mount`).
    pub failed_dependency: Option<String>,
    /// RFC 3339 time this was recorded.
    pub recorded: String,
}

/// Asks systemd about `unit`. When that fails, says why in the journal and goes on with what
/// it has: the failure must still be reported.
fn show(unit: &str) -> BTreeMap<String, String> {
    match systemctl_show(PROPERTIES, &[unit]) {
        Ok(text) => parse_show(&text),
        Err(e) => {
            log::warn!("asking systemd about {unit}: {e}");
            BTreeMap::new()
        }
    }
}

/// The first needed unit that is in the failed state, with its result.
fn failed_dependency(props: &BTreeMap<String, String>) -> Option<(String, String)> {
    let needed = needed_units(props);
    if needed.is_empty() {
        return None;
    }
    let names: Vec<&str> = needed.iter().map(String::as_str).collect();
    match systemctl_show("Id,ActiveState,Result", &names) {
        Ok(text) => failed_units(&text).into_iter().next(),
        Err(e) => {
            log::warn!("asking systemd about the units vouch needs: {e}");
            None
        }
    }
}

/// The failure as the notification channels see it. The exit code is the unit's when it is
/// one of vouch's, else INTERNAL (killed, timed out, not started): never 0.
pub fn unit_outcome(
    unit: &str,
    props: &BTreeMap<String, String>,
    dependency: Option<&(String, String)>,
    name: &str,
    run_id: Option<&str>,
) -> Outcome {
    let code = vouch_code(props).unwrap_or(ExitCode::Internal);
    let mut o = Outcome::new(code, name);
    if let Some(id) = run_id {
        o.run_id = id.to_owned();
    }
    o.reasons
        .push(format!("{unit} failed: {}", describe(props, dependency)));
    o.hint = Some(format!(
        "Read `journalctl -x -u {unit}` for the cause and the fix."
    ));
    o
}

/// Records the failure of `unit` and tells the configured channels.
pub fn execute(cli: &Cli, unit: &str) -> Result<ExitCode, Error> {
    let props = show(unit);
    let dependency = if main_did_not_fail(&props) {
        failed_dependency(&props)
    } else {
        None
    };
    let get = |k: &str| props.get(k).cloned().unwrap_or_default();
    let status = get("ExecMainStatus");
    let exit_name = vouch_code(&props).map(|c| c.name().to_owned());
    let detail = describe(&props, dependency.as_ref());
    let failure = UnitFailure {
        unit: unit.to_owned(),
        result: get("Result"),
        exit_status: status.clone(),
        exit_name: exit_name.clone(),
        invocation: get("InvocationID"),
        detail: detail.clone(),
        failed_dependency: dependency.as_ref().map(|(d, _)| d.clone()),
        recorded: crate::run::rfc3339(time::OffsetDateTime::now_utc()),
    };
    journal::Entry::error(format!("{unit} failed: {detail}"))
        .field("VOUCH_UNIT", unit)
        .field("VOUCH_UNIT_RESULT", &failure.result)
        .field("VOUCH_EXIT_CODE", &status)
        .field_opt("VOUCH_EXIT_NAME", exit_name.as_deref())
        .field_opt("VOUCH_FAILED_UNIT", failure.failed_dependency.as_deref())
        .field(
            "VOUCH_HINT",
            format!("Read `journalctl -x -u {unit}` for the cause and the fix."),
        )
        .emit();
    let dirs = Dirs::from_env();
    tell_channels(
        cli,
        &dirs,
        unit,
        &props,
        dependency.as_ref(),
        &failure.invocation,
    );
    let mut json =
        serde_json::to_vec_pretty(&failure).map_err(|e| Error::Internal(e.to_string()))?;
    json.push(b'\n');
    dirs.create().map_err(|error| Error::State {
        path: dirs.state.clone(),
        error,
    })?;
    crate::target::local::write_atomic(&dirs.state, LAST_FAILURE, &json, journal::run_id())
        .map_err(|error| Error::State {
            path: dirs.state.clone(),
            error,
        })?;
    Ok(ExitCode::Ok)
}

/// Sends the failure to the `[notify]` channels that do not have it yet.
fn tell_channels(
    cli: &Cli,
    dirs: &Dirs,
    unit: &str,
    props: &BTreeMap<String, String>,
    dependency: Option<&(String, String)>,
    invocation: &str,
) {
    let previous = NotifyRecord::load(&dirs.state)
        .filter(|r| !invocation.is_empty() && r.invocation.as_deref() == Some(invocation));
    let done = previous
        .as_ref()
        .map(|r| r.failure_sent_for(invocation))
        .unwrap_or_default();
    let invocation = Some(invocation.to_owned()).filter(|i| !i.is_empty());
    let path = dirs::config_path(cli.config.as_deref());
    let settings = match config::load(&path) {
        Ok(s) => s,
        Err(e) => {
            if previous
                .as_ref()
                .is_some_and(|r| !done.is_empty() && r.failures.is_empty())
            {
                log::info!("vouch already sent this failure of {unit} to every channel");
                return;
            }
            let error =
                format!("cannot load the config, so no notification channel could be reached: {e}");
            journal::Entry::error(format!("notifying the failure of {unit}: {error}"))
                .level(log::Level::Warn)
                .field("VOUCH_NOTIFY_CHANNEL", "config")
                .field(
                    "VOUCH_HINT",
                    format!(
                        "Fix {} and check it with `vouch preflight --as-service`.",
                        path.display()
                    ),
                )
                .emit();
            let code = vouch_code(props).unwrap_or(ExitCode::Internal);
            let record = NotifyRecord {
                at: crate::run::rfc3339(time::OffsetDateTime::now_utc()),
                run_id: journal::run_id().to_owned(),
                failures: vec![ChannelFailure {
                    channel: "config".into(),
                    error,
                }],
                sent: Vec::new(),
                result: "failure".into(),
                exit_code: code.code(),
                invocation,
            };
            if let Err(e) = record.save(&dirs.state) {
                log::warn!(
                    "cannot record notifications in {}: {e}",
                    dirs.state.display()
                );
            }
            return;
        }
    };
    let configured: Vec<Channel> = Channel::ALL
        .into_iter()
        .filter(|c| c.configured(&settings.notify))
        .collect();
    if configured.is_empty() {
        log::info!("no [notify] channel is configured; the failure of {unit} is only logged");
        return;
    }
    let names = |cs: &[Channel]| cs.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
    if configured.iter().all(|c| done.contains(c)) {
        log::info!(
            "vouch already sent this failure of {unit} to {}; not sending it again",
            names(&configured)
        );
        return;
    }
    if !done.is_empty() {
        log::info!(
            "vouch already sent this failure of {unit} to {}; sending it to the others",
            names(&done)
        );
    }
    let outcome = unit_outcome(
        unit,
        props,
        dependency,
        &settings.backup.name,
        previous.as_ref().map(|r| r.run_id.as_str()),
    );
    notify::send_to(&settings.notify, dirs, &outcome, invocation, &done);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::units::parse_exec;

    #[test]
    fn show_output_parses() {
        let p =
            parse_show("Result=exit-code\nExecMainStatus=15\nExecMainCode=1\nInvocationID=ab\n");
        assert_eq!(p["Result"], "exit-code");
        assert_eq!(p["ExecMainStatus"], "15");
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn outcomes_carry_vouch_codes_and_never_zero() {
        let p = parse_show("Result=exit-code\nExecMainStatus=32\nExecMainCode=1\n");
        let o = unit_outcome("vouch.service", &p, None, "web1", None);
        assert_eq!((o.exit_code, o.exit_name.as_str()), (32, "REQUIRED"));
        assert_eq!(
            o.reasons,
            ["vouch.service failed: Result=exit-code, exit status 32 (REQUIRED)"]
        );
        let p = parse_show("Result=timeout\nExecMainStatus=15\nExecMainCode=2\n");
        let o = unit_outcome("vouch.service", &p, None, "web1", Some("r1"));
        assert_eq!((o.exit_code, o.exit_name.as_str()), (1, "INTERNAL"));
        assert_eq!(o.run_id, "r1");
        assert_eq!(
            o.reasons,
            ["vouch.service failed: Result=timeout, killed by signal 15"]
        );
        for text in ["", "Result=success\nExecMainStatus=0\nExecMainCode=1\n"] {
            let o = unit_outcome("x.service", &parse_show(text), None, "web1", None);
            assert_ne!(o.exit_code, 0);
            assert_eq!(o.result, "failure");
        }
        let p = parse_show("Result=exit-code\nExecMainStatus=203\nExecMainCode=1\n");
        let o = unit_outcome("vouch.service", &p, None, "web1", None);
        assert_eq!(o.exit_code, 1);
        assert!(
            o.reasons[0].ends_with("exit status 203/EXEC (the vouch binary could not be started)"),
            "{:?}",
            o.reasons
        );
    }

    /// `systemctl show` of a unit whose `ExecStartPre=` failed, as systemd 252 prints it.
    const PRE_FAILED: &str = "Result=exit-code\nExecMainStatus=0\nExecMainCode=0\n\
ExecStartPre={ path=/bin/sh ; argv[]=/bin/sh -c pg_dump app > /var/lib/app/dumps/db.sql ; ignore_errors=no ; start_time=[Tue 2026-12-01 10:00:00 UTC] ; stop_time=[Tue 2026-12-01 10:00:00 UTC] ; pid=412 ; code=exited ; status=2 }\n\
ExecStart={ path=/usr/bin/vouch ; argv[]=/usr/bin/vouch run ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }\n\
Requires=system.slice sysinit.target -.mount\n";

    /// A unit that last ran fine and then could not start because a mount failed.
    const DEPENDENCY_FAILED: &str = "Result=success\nExecMainStatus=0\nExecMainCode=1\n\
ExecStart={ path=/usr/bin/vouch ; argv[]=/usr/bin/vouch run ; ignore_errors=no ; start_time=[Tue 2026-12-01 09:00:00 UTC] ; stop_time=[Tue 2026-12-01 09:00:05 UTC] ; pid=300 ; code=exited ; status=0 }\n\
Requires=system.slice mnt-stick.mount sysinit.target -.mount\nRequisite=\nBindsTo=\n";

    #[test]
    fn exec_properties_parse() {
        let p = parse_show(PRE_FAILED);
        let pre = parse_exec(&p["ExecStartPre"]);
        assert_eq!(pre.len(), 1);
        assert_eq!(
            (
                pre[0].path.as_str(),
                pre[0].code.as_str(),
                pre[0].status.as_str()
            ),
            ("/bin/sh", "exited", "2")
        );
        assert!(pre[0].failed());
        let main = parse_exec(&p["ExecStart"]);
        assert!(!main[0].failed(), "{main:?}");
        assert_eq!(main[0].ending(), "did not run");
        let killed = parse_exec(
            "{ path=/a ; code=killed ; status=9 } { path=/b ; code=exited ; status=203 }",
        );
        assert_eq!(killed[0].ending(), "killed by signal 9");
        assert_eq!(killed[1].ending(), "exit status 203/EXEC");
    }

    #[test]
    fn a_failed_start_command_is_named_not_exit_status_0() {
        let p = parse_show(PRE_FAILED);
        let text = describe(&p, None);
        assert_eq!(
            text,
            "Result=exit-code, the ExecStartPre= command /bin/sh failed with exit status 2, so vouch never ran"
        );
        let o = unit_outcome("vouch.service", &p, None, "web1", None);
        assert_eq!(o.reasons, [format!("vouch.service failed: {text}")]);
    }

    #[test]
    fn a_failed_dependency_is_named() {
        let p = parse_show(DEPENDENCY_FAILED);
        assert_eq!(
            needed_units(&p),
            [
                "-.mount",
                "mnt-stick.mount",
                "sysinit.target",
                "system.slice"
            ]
        );
        let shown = "Id=-.mount\nActiveState=active\nResult=success\n\n\
Id=mnt-stick.mount\nActiveState=failed\nResult=exit-code\n\n\
Id=sysinit.target\nActiveState=active\nResult=success\n";
        let failed = failed_units(shown);
        assert_eq!(
            failed,
            [("mnt-stick.mount".to_owned(), "exit-code".to_owned())]
        );
        let text = describe(&p, failed.first());
        assert!(text.starts_with("the unit it needs, mnt-stick.mount, failed (its result: exit-code), so vouch never ran"), "{text}");
        assert!(!text.contains("exit status 0"), "{text}");
        // Without a failed dependency, a success record is not passed off as the cause.
        let text = describe(&p, None);
        assert!(
            text.contains("systemd records no failure of this start"),
            "{text}"
        );
    }
}
