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
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::Command;

/// Test-only: a program run instead of `systemctl` (outside systemd there is no manager to
/// ask). It gets the same arguments and must print `Key=value` lines.
pub const SYSTEMCTL_VAR: &str = "VOUCH_TEST_SYSTEMCTL";

/// The record of the last failed unit, in the state directory.
pub const LAST_FAILURE: &str = "last-failure.json";

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

/// Parses `systemctl show -p ...` output (`Key=value` lines).
pub fn parse_show(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The properties notify-failure reads: the result, the main process, every start command and
/// the units this one needs.
pub const PROPERTIES: &str =
    "Result,ExecMainStatus,ExecMainCode,InvocationID,ExecStartPre,ExecStart,Requires,Requisite,BindsTo";

/// Runs `systemctl show -p PROPERTIES -- UNITS...` (or the test's stand-in) and returns its
/// output, or why it could not.
pub fn systemctl_show(properties: &str, units: &[&str]) -> Result<String, String> {
    systemctl_show_with(&[], properties, units)
}

/// [`systemctl_show`] with more options (`--timestamp=unix`).
pub fn systemctl_show_with(
    options: &[&str],
    properties: &str,
    units: &[&str],
) -> Result<String, String> {
    let program = std::env::var_os(SYSTEMCTL_VAR).unwrap_or_else(|| "systemctl".into());
    let out = Command::new(&program)
        .arg("show")
        .args(options)
        .args(["-p", properties, "--"])
        .args(units)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!(
            "systemctl show failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

/// The units `props` says this one needs (`Requires=`, `Requisite=`, `BindsTo=`, which
/// include those added by `RequiresMountsFor=`).
pub fn needed_units(props: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = ["Requires", "Requisite", "BindsTo"]
        .iter()
        .filter_map(|k| props.get(*k))
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The failed units in the output of `systemctl show -p Id,ActiveState,Result` for several
/// units (one block per unit, separated by empty lines): each failed unit's name and result.
pub fn failed_units(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .map(parse_show)
        .filter(|p| p.get("ActiveState").map(String::as_str) == Some("failed"))
        .filter_map(|p| {
            let id = p.get("Id")?.clone();
            Some((id, p.get("Result").cloned().unwrap_or_default()))
        })
        .collect()
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

/// One command of an `Exec*=` property as `systemctl show` prints it:
/// `{ path=/bin/sh ; argv[]=... ; ... ; code=exited ; status=2 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    /// The program.
    pub path: String,
    /// `exited`, `killed`, `dumped`, or empty when it never ran.
    pub code: String,
    /// The exit status or signal (`2`, `203/EXEC`, `TERM`), `0` or empty when it never ran.
    pub status: String,
}

impl ExecCommand {
    /// Whether it ran and failed.
    pub fn failed(&self) -> bool {
        match self.code.as_str() {
            "exited" => !self.status.is_empty() && self.status != "0",
            "killed" | "dumped" => true,
            _ => false,
        }
    }

    /// How it ended, in words.
    pub fn ending(&self) -> String {
        let number = self.status.split('/').next().unwrap_or("");
        match self.code.as_str() {
            "exited" => match number.parse::<u8>().ok().and_then(systemd_exit_name) {
                Some(name) if !self.status.contains('/') => format!("exit status {number}/{name}"),
                _ => format!("exit status {}", self.status),
            },
            "killed" => format!("killed by signal {}", self.status),
            "dumped" => format!("dumped core on signal {}", self.status),
            _ => "did not run".into(),
        }
    }
}

/// Parses an `Exec*=` property value: one entry per `{ ... }` group.
pub fn parse_exec(value: &str) -> Vec<ExecCommand> {
    value
        .split('{')
        .filter_map(|group| group.split_once('}').map(|(inside, _)| inside))
        .map(|inside| {
            let field = |name: &str| {
                inside
                    .split(" ; ")
                    .map(str::trim)
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or("")
                    .to_owned()
            };
            ExecCommand {
                path: field("path"),
                code: field("code"),
                status: field("status"),
            }
        })
        .collect()
}

/// systemd's name for the exit statuses it gives a service whose process it could not start
/// (`man systemd.exec`, "Process Exit Codes").
pub fn systemd_exit_name(status: u8) -> Option<&'static str> {
    Some(match status {
        200 => "CHDIR",
        201 => "NICE",
        202 => "FDS",
        203 => "EXEC",
        204 => "MEMORY",
        205 => "LIMITS",
        208 => "STDIN",
        209 => "STDOUT",
        210 => "CHROOT",
        211 => "IOPRIO",
        214 => "SETSCHEDULER",
        216 => "GROUP",
        217 => "USER",
        218 => "CAPABILITIES",
        219 => "CGROUP",
        222 => "STDERR",
        225 => "NETWORK",
        226 => "NAMESPACE",
        227 => "NO_NEW_PRIVILEGES",
        228 => "SECCOMP",
        232 => "ADDRESS_FAMILIES",
        233 => "RUNTIME_DIRECTORY",
        238 => "STATE_DIRECTORY",
        241 => "CONFIGURATION_DIRECTORY",
        243 => "CREDENTIALS",
        _ => return None,
    })
}

/// What an exit status systemd gave means, when it is one of its own.
pub fn systemd_exit_meaning(status: u8) -> Option<&'static str> {
    Some(match status {
        203 => "the vouch binary could not be started",
        200 | 226 | 233 | 238 | 241 => "systemd could not set up the unit's sandbox or directories",
        _ => return None,
    })
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
            None => match status.parse::<u8>().ok().and_then(systemd_exit_name) {
                Some(name) => format!(
                    "exit status {status}/{name}{}",
                    status
                        .parse::<u8>()
                        .ok()
                        .and_then(systemd_exit_meaning)
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ),
                None => format!("exit status {status}"),
            },
        },
        Some("2") => format!("killed by signal {status}"),
        Some("3") => format!("dumped core on signal {status}"),
        _ if status.is_empty() => "exit status unknown".into(),
        _ => format!("status {status}"),
    }
}

/// Whether the unit's record shows no failure of vouch's own process: it never ran
/// (`ExecMainCode=0`), or `Result=success` (what systemd leaves from the previous run when a
/// dependency failed and this start never began).
fn main_did_not_fail(props: &BTreeMap<String, String>) -> bool {
    let never_ran = props
        .get("ExecMainCode")
        .is_none_or(|c| c.is_empty() || c == "0");
    let success = props
        .get("Result")
        .is_none_or(|r| r.is_empty() || r == "success");
    never_ran || success
}

/// What went wrong with a unit, from its properties and the failed dependency (if any):
/// `Result=`, then the first failed `ExecStartPre=` command, else the main process's end, or,
/// when vouch's process never ran, the dependency that failed.
pub fn describe(props: &BTreeMap<String, String>, dependency: Option<&(String, String)>) -> String {
    let result = props
        .get("Result")
        .filter(|r| !r.is_empty())
        .map(String::as_str)
        .unwrap_or("unknown");
    let pre = props
        .get("ExecStartPre")
        .map(|v| parse_exec(v))
        .unwrap_or_default();
    if let Some(cmd) = pre.iter().find(|c| c.failed()) {
        return format!(
            "Result={result}, the ExecStartPre= command {} failed with {}, so vouch never ran",
            cmd.path,
            cmd.ending()
        );
    }
    if !main_did_not_fail(props) {
        return format!("Result={result}, {}", how_it_ended(props));
    }
    match dependency {
        Some((unit, dep_result)) => format!(
            "the unit it needs, {unit}, failed (its result: {dep_result}), so vouch never ran: read `journalctl -u {unit}`"
        ),
        None if props.get("ExecMainCode").is_none_or(|c| c.is_empty() || c == "0") => {
            format!("Result={result}, vouch's process did not run")
        }
        None => format!(
            "Result={result}, {} (systemd records no failure of this start; its journal around this time tells why it was reported)",
            how_it_ended(props)
        ),
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
