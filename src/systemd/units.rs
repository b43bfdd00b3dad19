//! What systemd says about vouch's units: `systemctl show` read into properties, the
//! `Exec*=` commands and how each ended, systemd's own exit statuses, the units a unit needs,
//! and one sentence on what went wrong with a failed start.
//!
//! `notify-failure`, `status` (through the health verdict), `doctor` and
//! `preflight --as-service` all ask systemd the same questions; the answers are read here.

use crate::exit::ExitCode;
use std::collections::BTreeMap;
use std::process::Command;

/// Test-only: a program run instead of `systemctl` (outside systemd there is no manager to
/// ask). It gets the same arguments and must print `Key=value` lines.
pub const SYSTEMCTL_VAR: &str = "VOUCH_TEST_SYSTEMCTL";

/// The record of the last failed unit, in the state directory.
pub const LAST_FAILURE: &str = "last-failure.json";

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
pub fn vouch_code(props: &BTreeMap<String, String>) -> Option<ExitCode> {
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
pub fn how_it_ended(props: &BTreeMap<String, String>) -> String {
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
pub fn main_did_not_fail(props: &BTreeMap<String, String>) -> bool {
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
