//! `vouch preflight [--json]`: every check, a table of results, the first failure's exit code.

use crate::check::preflight::{self, Finding};
use crate::cli::Cli;
use crate::config;
use crate::error::Error;
use crate::exit::ExitCode;
use crate::host::dirs::{self, Dirs};
use serde::Serialize;

/// One row of the JSON output.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Row<'a> {
    check: &'a str,
    target: Option<&'a str>,
    ok: bool,
    detail: String,
    exit_code: Option<u8>,
    exit_name: Option<&'static str>,
    fix: Option<String>,
}

fn row(f: &Finding) -> Row<'_> {
    match &f.outcome {
        Ok(detail) => Row {
            check: f.check,
            target: f.target.as_deref(),
            ok: true,
            detail: detail.clone(),
            exit_code: None,
            exit_name: None,
            fix: None,
        },
        Err(e) => Row {
            check: f.check,
            target: f.target.as_deref(),
            ok: false,
            detail: e.to_string(),
            exit_code: Some(e.exit_code().code()),
            exit_name: Some(e.exit_code().name()),
            fix: e.hint(),
        },
    }
}

/// Runs the checks, prints them, and fails with the first failure.
pub fn execute(cli: &Cli, json: bool) -> Result<ExitCode, Error> {
    let config_path = dirs::config_path(cli.config.as_deref());
    let settings = match config::load(&config_path) {
        Ok(s) => s,
        Err(e) => {
            let e = Error::from(e);
            if json {
                print_json(&[Finding {
                    check: "config",
                    target: None,
                    outcome: Err(e),
                }]);
                return Ok(ExitCode::Config);
            }
            return Err(e);
        }
    };
    let mut findings = vec![Finding {
        check: "config",
        target: None,
        outcome: Ok(format!("{} is valid", config_path.display())),
    }];
    let outcome = preflight::check(&settings, &Dirs::from_env());
    findings.extend(outcome.findings);
    if json {
        print_json(&findings);
    } else {
        print_table(&findings);
    }
    match findings.into_iter().find_map(|f| f.outcome.err()) {
        Some(e) if json => {
            crate::cli::run::report_preflight_failure(&e, e.exit_code());
            Ok(e.exit_code())
        }
        Some(e) => Err(e),
        None => Ok(ExitCode::Ok),
    }
}

fn print_json(findings: &[Finding]) {
    let rows: Vec<Row<'_>> = findings.iter().map(row).collect();
    let first = rows.iter().find(|r| !r.ok);
    let doc = serde_json::json!({
        "ok": first.is_none(),
        "exit-code": first.and_then(|r| r.exit_code).unwrap_or(0),
        "exit-name": first.and_then(|r| r.exit_name).unwrap_or("OK"),
        "checks": rows,
    });
    crate::out!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}

fn print_table(findings: &[Finding]) {
    let width = findings
        .iter()
        .map(|f| f.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let twidth = findings
        .iter()
        .map(|f| f.target.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(6)
        .max(6);
    crate::out!("{:width$}  {:twidth$}  RESULT  DETAIL", "CHECK", "TARGET");
    for f in findings {
        let target = f.target.as_deref().unwrap_or("-");
        match &f.outcome {
            Ok(detail) => crate::out!("{:width$}  {target:twidth$}  ok      {detail}", f.check),
            Err(e) => {
                crate::out!(
                    "{:width$}  {target:twidth$}  FAIL    {} ({})",
                    f.check,
                    e,
                    e.exit_code()
                );
                if let Some(hint) = e.hint() {
                    crate::out!("{:width$}  {:twidth$}          fix: {hint}", "", "");
                }
            }
        }
    }
}
