//! `vouch preflight --as-service`: the checks inside a transient unit that has vouch.service's
//! sandbox, so that what passes here also passes when the timer starts the service.
//!
//! A check run from a root shell sees the whole file system writable and no file size limit;
//! vouch.service sees `ProtectSystem=strict` with only its `ReadWritePaths=` open, its
//! `LimitFSIZE=`, its capabilities and its credentials. This reads those settings from systemd
//! (`systemctl show vouch.service`, so drop-ins and vouch-generator's are included) and starts
//! the same binary as the unit's `ExecStart=` with them through
//! `systemd-run --wait --pipe`: the output arrives here and the exit code is the checks' own.
//!
//! Copied: the sandbox, the directories systemd makes (`StateDirectory=` and the like), the
//! user, the environment, the resource limits that decide what a run can write, and
//! `LoadCredential=` (read over D-Bus, which `systemctl show` does not print). Not copied:
//! `SetCredential=` (its secret would go on a command line), dependencies, timeouts, `Nice=`
//! and the I/O class, which change nothing a check can see.

use crate::error::Error;
use crate::exit::ExitCode;
use crate::systemd::units::{parse_exec, parse_show, systemctl_show, systemd_exit_name};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// The unit whose sandbox the checks run in.
pub const SERVICE: &str = "vouch.service";

/// The properties copied from the unit, as `systemctl show` prints and `systemd-run -p` reads
/// them back.
const COPIED: &[&str] = &[
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateMounts",
    "PrivateDevices",
    "DevicePolicy",
    "ProtectProc",
    "ProcSubset",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "PrivateIPC",
    "PrivateNetwork",
    "PrivateUsers",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "RestrictAddressFamilies",
    "NoNewPrivileges",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallErrorNumber",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "BindPaths",
    "BindReadOnlyPaths",
    "TemporaryFileSystem",
    "RootDirectory",
    "WorkingDirectory",
    "LimitFSIZE",
    "LimitNOFILE",
    "StateDirectory",
    "StateDirectoryMode",
    "RuntimeDirectory",
    "RuntimeDirectoryPreserve",
    "ConfigurationDirectory",
    "UMask",
    "User",
    "Group",
    "DynamicUser",
    "Environment",
];

/// What `systemctl show` prints for a value it cannot show; never passed on.
const UNPRINTABLE: &str = "[unprintable]";

/// Runs `vouch preflight [--json]` inside a transient copy of vouch.service's sandbox and
/// returns the checks' exit code.
pub fn preflight(config: Option<&Path>, verbose: bool, json: bool) -> Result<ExitCode, Error> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Err(failure(
            ExitCode::Usage,
            "--as-service needs systemd: this host was not booted with it (no /run/systemd/system)",
            "Run `vouch preflight` without --as-service here, or on the host that runs vouch.timer.",
        ));
    }
    let props = unit_properties()?;
    let mut args = properties_as_args(&props);
    args.extend(credential_args());
    let exe = service_binary(&props)?;
    if !Path::new(&exe).is_file() {
        return Err(failure(
            ExitCode::Internal,
            format!("{SERVICE} starts {exe}, which does not exist: every run of the unit fails with 203/EXEC"),
            format!("Reinstall the package (`apt-get install --reinstall vouch`), or fix ExecStart= (`systemctl cat {SERVICE}` shows where it is set)."),
        ));
    }
    let mut command = Command::new("systemd-run");
    command
        .args(["--wait", "--pipe", "--quiet", "--collect"])
        .arg(format!("--unit=vouch-preflight-{}", std::process::id()))
        .arg(format!(
            "--description=vouch preflight in {SERVICE}'s sandbox"
        ))
        .args(&args)
        .arg("--")
        .arg(&exe)
        .args(preflight_argv(config, verbose, json));
    if !json {
        log::info!(
            "checking inside a transient unit with {SERVICE}'s sandbox ({} settings copied from `systemctl show {SERVICE}`)",
            args.len()
        );
    }
    let status = command.status().map_err(|e| {
        failure(
            ExitCode::Internal,
            format!("cannot run systemd-run: {e}"),
            "Install systemd (systemd-run is part of it) and run this as root.",
        )
    })?;
    outcome(status.code(), &exe)
}

/// The unit's settings, or why they cannot be read.
fn unit_properties() -> Result<BTreeMap<String, String>, Error> {
    let wanted = format!("LoadState,ExecStart,{}", COPIED.join(","));
    let text = systemctl_show(&wanted, &[SERVICE]).map_err(|e| {
        failure(
            ExitCode::Internal,
            format!("cannot read {SERVICE}'s settings: {e}"),
            "Run this as root on the host that runs vouch.timer.",
        )
    })?;
    let props = parse_show(&text);
    match props.get("LoadState").map(String::as_str) {
        Some("loaded") => Ok(props),
        state => Err(failure(
            ExitCode::Usage,
            format!(
                "{SERVICE} is not installed here (LoadState={})",
                state.unwrap_or("?")
            ),
            "Install the vouch package (or copy units/ into /etc/systemd/system and run `systemctl daemon-reload`), then check again.",
        )),
    }
}

/// `-p KEY=VALUE` for each copied setting that has a value.
pub fn properties_as_args(props: &BTreeMap<String, String>) -> Vec<String> {
    COPIED
        .iter()
        .filter_map(|key| {
            let value = props.get(*key)?;
            if value.is_empty() || value == UNPRINTABLE {
                return None;
            }
            Some(format!("--property={key}={value}"))
        })
        .collect()
}

/// `-p LoadCredential=ID:PATH` for each credential the unit loads, read over D-Bus with
/// `busctl --json=short` (systemctl prints them as unprintable). None when busctl cannot say:
/// the checks then report a missing credential themselves.
fn credential_args() -> Vec<String> {
    ["LoadCredential", "LoadCredentialEncrypted"]
        .iter()
        .flat_map(|property| {
            let pairs = busctl_pairs(property).unwrap_or_else(|e| {
                log::warn!("cannot read {SERVICE}'s {property}= over D-Bus: {e}");
                Vec::new()
            });
            pairs
                .into_iter()
                .map(move |(id, path)| format!("--property={property}={id}:{path}"))
        })
        .collect()
}

/// An `a(ss)` property of the service over D-Bus.
fn busctl_pairs(property: &str) -> Result<Vec<(String, String)>, String> {
    let out = Command::new("busctl")
        .args([
            "--json=short",
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1/unit/vouch_2eservice",
            "org.freedesktop.systemd1.Service",
            property,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run busctl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    parse_pairs(&out.stdout)
}

/// The pairs of busctl's JSON for an `a(ss)` value: `{"type":"a(ss)","data":[["a","b"]]}`.
pub fn parse_pairs(json: &[u8]) -> Result<Vec<(String, String)>, String> {
    #[derive(serde::Deserialize)]
    struct Value {
        data: Vec<(String, String)>,
    }
    serde_json::from_slice::<Value>(json)
        .map(|v| v.data)
        .map_err(|e| format!("unexpected busctl output: {e}"))
}

/// The binary the unit starts (its first `ExecStart=`), which is what a timer run executes.
fn service_binary(props: &BTreeMap<String, String>) -> Result<String, Error> {
    let exec = props
        .get("ExecStart")
        .map(|v| parse_exec(v))
        .unwrap_or_default();
    exec.into_iter().next().map(|c| c.path).ok_or_else(|| {
        failure(
            ExitCode::Internal,
            format!("{SERVICE} has no ExecStart= that systemd shows"),
            format!("Check the unit with `systemctl cat {SERVICE}`."),
        )
    })
}

/// The arguments after the binary: the same checks, the same output format.
pub fn preflight_argv(config: Option<&Path>, verbose: bool, json: bool) -> Vec<String> {
    let mut argv = Vec::new();
    if let Some(path) = config {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        argv.push("--config".to_owned());
        argv.push(absolute.to_string_lossy().into_owned());
    }
    if verbose {
        argv.push("--verbose".to_owned());
    }
    argv.push("preflight".to_owned());
    if json {
        argv.push("--json".to_owned());
    }
    argv
}

/// The checks' exit code, from systemd-run's (which is the unit's main process's).
pub fn outcome(code: Option<i32>, exe: &str) -> Result<ExitCode, Error> {
    let Some(code) = code.and_then(|c| u8::try_from(c).ok()) else {
        return Err(failure(
            ExitCode::Internal,
            "systemd-run was killed before the checks ended",
            "Run it again; `journalctl -n 50` shows what stopped it.",
        ));
    };
    if let Some(c) = ExitCode::from_code(code) {
        return Ok(c);
    }
    let meaning = systemd_exit_name(code)
        .map(|n| format!("systemd's {n}"))
        .unwrap_or_else(|| "not one of vouch's codes".into());
    Err(failure(
        ExitCode::Internal,
        format!("{SERVICE}'s sandbox could not run {exe}: exit status {code} ({meaning})"),
        format!("A timer run would fail the same way: fix what `journalctl -n 20` says about the transient unit (a missing binary, a sandbox setting of {SERVICE}), then check again."),
    ))
}

fn failure(code: ExitCode, message: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::Service {
        message: message.into(),
        hint: hint.into(),
        code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_settings_skip_empty_and_unprintable_values() {
        let props = parse_show(
            "ProtectSystem=strict\nReadWritePaths=-/var/backups/vouch /srv/b\nUser=\nLimitFSIZE=1048576\nEnvironment=\nLoadState=loaded\n",
        );
        assert_eq!(
            properties_as_args(&props),
            [
                "--property=ProtectSystem=strict",
                "--property=ReadWritePaths=-/var/backups/vouch /srv/b",
                "--property=LimitFSIZE=1048576",
            ]
        );
        let mut odd = BTreeMap::new();
        odd.insert("SystemCallFilter".to_owned(), UNPRINTABLE.to_owned());
        assert!(properties_as_args(&odd).is_empty());
    }

    #[test]
    fn busctl_pairs_parse_and_bad_output_is_an_error() {
        let pairs =
            parse_pairs(br#"{"type":"a(ss)","data":[["identity","/etc/vouch/identity.txt"]]}"#);
        assert_eq!(
            pairs.unwrap(),
            [("identity".to_owned(), "/etc/vouch/identity.txt".to_owned())]
        );
        assert!(parse_pairs(b"{\"type\":\"s\",\"data\":\"x\"}").is_err());
    }

    #[test]
    fn the_checks_get_the_same_options() {
        assert_eq!(preflight_argv(None, false, false), ["preflight"]);
        assert_eq!(
            preflight_argv(Some(Path::new("/etc/vouch/other.toml")), true, true),
            [
                "--config",
                "/etc/vouch/other.toml",
                "--verbose",
                "preflight",
                "--json"
            ]
        );
    }

    #[test]
    fn exit_statuses_become_vouch_codes_or_a_named_failure() {
        assert_eq!(outcome(Some(0), "/usr/bin/vouch").unwrap(), ExitCode::Ok);
        assert_eq!(
            outcome(Some(15), "/usr/bin/vouch").unwrap(),
            ExitCode::TargetReadonly
        );
        let e = outcome(Some(203), "/usr/bin/vouch").unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Internal);
        assert!(e.to_string().contains("EXEC"), "{e}");
        assert!(outcome(None, "/usr/bin/vouch").is_err());
    }
}
