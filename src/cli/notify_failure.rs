//! `vouch notify-failure UNIT`: what `vouch-notify@.service` runs when a vouch unit fails.
//!
//! It works even when vouch itself never ran (a missing binary, a sandbox that kills it before
//! `main`): systemd starts it from `OnFailure=`, and it asks systemd what happened to the unit.
//! The result goes to the journal (one error entry naming the unit, its result and exit status)
//! and to `$STATE_DIRECTORY/last-failure.json`.

use crate::dirs::Dirs;
use crate::error::Error;
use crate::exit::ExitCode;
use crate::journal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::Command;

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

/// Records the failure of `unit`.
pub fn execute(unit: &str) -> Result<ExitCode, Error> {
    let out = Command::new("systemctl")
        .args([
            "show",
            "-p",
            "Result,ExecMainStatus,ExecMainCode,InvocationID",
            "--",
            unit,
        ])
        .output()
        .map_err(|e| Error::Internal(format!("cannot run systemctl show {unit}: {e}")))?;
    let props = parse_show(&String::from_utf8_lossy(&out.stdout));
    let get = |k: &str| props.get(k).cloned().unwrap_or_default();
    let status = get("ExecMainStatus");
    let exit_name = status
        .parse::<u8>()
        .ok()
        .and_then(ExitCode::from_code)
        .filter(|c| *c != ExitCode::Ok && get("ExecMainCode") == "1")
        .map(|c| c.name().to_owned());
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
}
