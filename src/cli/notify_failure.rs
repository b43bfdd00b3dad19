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
use crate::dirs::{self, Dirs};
use crate::error::Error;
use crate::exit::ExitCode;
use crate::journal;
use crate::notify::{self, Channel, ChannelFailure, NotifyRecord};
use crate::outcome::Outcome;
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::Command;

/// Test-only: a program run instead of `systemctl` (outside systemd there is no manager to
/// ask). It gets the same arguments and must print `Key=value` lines.
pub const SYSTEMCTL_VAR: &str = "VOUCH_TEST_SYSTEMCTL";

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
    /// RFC 3339 time this was recorded.
    pub recorded: String,
}

/// Parses `systemctl show -p ...` output (`Key=value` lines).
pub fn parse_show(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Asks systemd about `unit`. When that fails, says why in the journal and goes on with what
/// it has: the failure must still be reported.
fn show(unit: &str) -> BTreeMap<String, String> {
    let program = std::env::var_os(SYSTEMCTL_VAR).unwrap_or_else(|| "systemctl".into());
    let out = Command::new(&program)
        .args([
            "show",
            "-p",
            "Result,ExecMainStatus,ExecMainCode,InvocationID",
            "--",
            unit,
        ])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => parse_show(&String::from_utf8_lossy(&out.stdout)),
        Ok(out) => {
            log::warn!(
                "systemctl show {unit} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            BTreeMap::new()
        }
        Err(e) => {
            log::warn!("cannot run {} show {unit}: {e}", program.to_string_lossy());
            BTreeMap::new()
        }
    }
}

/// The vouch exit code for a unit's main process: its status when it exited
/// (`ExecMainCode=1`, CLD_EXITED) with one of vouch's non-zero codes.
fn vouch_code(props: &BTreeMap<String, String>) -> Option<ExitCode> {
    if props.get("ExecMainCode").map(String::as_str) != Some("1") {
        return None;
    }
    props
        .get("ExecMainStatus")?
        .parse::<u8>()
        .ok()
        .and_then(ExitCode::from_code)
        .filter(|c| *c != ExitCode::Ok)
}

/// How the main process ended, in words.
fn how_it_ended(props: &BTreeMap<String, String>) -> String {
    let status = props
        .get("ExecMainStatus")
        .map(String::as_str)
        .unwrap_or("");
    match props.get("ExecMainCode").map(String::as_str) {
        Some("1") => match vouch_code(props) {
            Some(c) => format!("exit status {status} ({})", c.name()),
            None => format!("exit status {status}"),
        },
        Some("2") => format!("killed by signal {status}"),
        Some("3") => format!("dumped core on signal {status}"),
        _ if status.is_empty() => "exit status unknown".into(),
        _ => format!("status {status}"),
    }
}

/// The failure as the notification channels see it. The exit code is the unit's when it is
/// one of vouch's, else INTERNAL (killed, timed out, not started): never 0.
pub fn unit_outcome(
    unit: &str,
    props: &BTreeMap<String, String>,
    name: &str,
    run_id: Option<&str>,
) -> Outcome {
    let code = vouch_code(props).unwrap_or(ExitCode::Internal);
    let mut o = Outcome::new(code, name);
    if let Some(id) = run_id {
        o.run_id = id.to_owned();
    }
    let result = props
        .get("Result")
        .filter(|r| !r.is_empty())
        .map(String::as_str)
        .unwrap_or("unknown");
    o.reasons.push(format!(
        "{unit} failed: Result={result}, {}",
        how_it_ended(props)
    ));
    o.hint = Some(format!(
        "Read `journalctl -x -u {unit}` for the cause and the fix."
    ));
    o
}

/// Records the failure of `unit` and tells the configured channels.
pub fn execute(cli: &Cli, unit: &str) -> Result<ExitCode, Error> {
    let props = show(unit);
    let get = |k: &str| props.get(k).cloned().unwrap_or_default();
    let status = get("ExecMainStatus");
    let exit_name = vouch_code(&props).map(|c| c.name().to_owned());
    let failure = UnitFailure {
        unit: unit.to_owned(),
        result: get("Result"),
        exit_status: status.clone(),
        exit_name: exit_name.clone(),
        invocation: get("InvocationID"),
        recorded: crate::run::rfc3339(time::OffsetDateTime::now_utc()),
    };
    journal::Entry::error(format!(
        "{unit} failed: result {}, exit status {}{}",
        failure.result,
        status,
        exit_name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    ))
    .field("VOUCH_UNIT", unit)
    .field("VOUCH_UNIT_RESULT", &failure.result)
    .field("VOUCH_EXIT_CODE", &status)
    .field_opt("VOUCH_EXIT_NAME", exit_name.as_deref())
    .field(
        "VOUCH_HINT",
        format!("Read `journalctl -x -u {unit}` for the cause and the fix."),
    )
    .emit();
    let dirs = Dirs::from_env();
    tell_channels(cli, &dirs, unit, &props, &failure.invocation);
    let mut json =
        serde_json::to_vec_pretty(&failure).map_err(|e| Error::Internal(e.to_string()))?;
    json.push(b'\n');
    dirs.create().map_err(|error| Error::State {
        path: dirs.state.clone(),
        error,
    })?;
    crate::sink::local::write_atomic(&dirs.state, "last-failure.json", &json, journal::run_id())
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
                        "Fix {} and run `vouch preflight` to check it.",
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
        &settings.backup.name,
        previous.as_ref().map(|r| r.run_id.as_str()),
    );
    notify::send_to(&settings.notify, dirs, &outcome, invocation, &done);
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let o = unit_outcome("vouch.service", &p, "web1", None);
        assert_eq!((o.exit_code, o.exit_name.as_str()), (32, "REQUIRED"));
        assert_eq!(
            o.reasons,
            ["vouch.service failed: Result=exit-code, exit status 32 (REQUIRED)"]
        );
        let p = parse_show("Result=timeout\nExecMainStatus=15\nExecMainCode=2\n");
        let o = unit_outcome("vouch.service", &p, "web1", Some("r1"));
        assert_eq!((o.exit_code, o.exit_name.as_str()), (1, "INTERNAL"));
        assert_eq!(o.run_id, "r1");
        assert_eq!(
            o.reasons,
            ["vouch.service failed: Result=timeout, killed by signal 15"]
        );
        for text in ["", "Result=success\nExecMainStatus=0\nExecMainCode=1\n"] {
            let o = unit_outcome("x.service", &parse_show(text), "web1", None);
            assert_ne!(o.exit_code, 0);
            assert_eq!(o.result, "failure");
        }
        let p = parse_show("Result=exit-code\nExecMainStatus=203\nExecMainCode=1\n");
        let o = unit_outcome("vouch.service", &p, "web1", None);
        assert_eq!(o.exit_code, 1);
        assert!(o.reasons[0].ends_with("exit status 203"), "{:?}", o.reasons);
    }
}
