//! `vouch status`: the health of every target, for people and for monitoring.
//!
//! Text goes to stdout: the verdict, one line per reason (worst first), then a line per target.
//! `--json` prints the whole [`Report`]. The exit code is the verdict (0/1/2/3). With
//! `[metrics] textfile`, the textfile is rewritten from the same report.
//!
//! S3 targets are judged offline, from the copies the state directory records; `--live` also
//! lists each bucket ([`health::evaluate_live`]).

use crate::cli::Cli;
use crate::config;
use crate::exit::Health;
use crate::host::dirs::{self, Dirs};
use crate::report::health::{self, age_text, Report, TargetReport};
use crate::report::metrics;
use crate::systemd::sdnotify::human_bytes;
use time::OffsetDateTime;

/// Runs `vouch status`.
pub fn execute(cli: &Cli, json: bool, live: bool) -> Health {
    let path = dirs::config_path(cli.config.as_deref());
    let report = match config::load(&path) {
        Ok(settings) => {
            let (dirs, now) = (Dirs::from_env(), OffsetDateTime::now_utc());
            let report = if live {
                health::evaluate_live(&settings, &dirs, now)
            } else {
                health::evaluate(&settings, &dirs, now)
            };
            metrics::write_report(&settings, &report);
            report
        }
        Err(e) => Report::unknown(
            &path,
            "config",
            format!("cannot judge without a usable config: {e}: fix it, then check with `vouch preflight --as-service`"),
        ),
    };
    print_report(&report, json)
}

/// The verdict on a `vouch status` command line that did not parse: `unknown`, printed like
/// any other report (text, or JSON when `--json` was among the words), so that a monitoring
/// system shows why the check could not run.
pub fn refused(config: Option<&std::path::Path>, json: bool, problem: &str) -> Health {
    let path = dirs::config_path(config);
    let report = Report::unknown(
        &path,
        "usage",
        format!("bad command line: {problem}: fix the check's command (`vouch status --help` shows the options)"),
    );
    print_report(&report, json)
}

/// Prints a report as text or JSON; returns its verdict (`unknown` when it cannot be printed).
fn print_report(report: &Report, json: bool) -> Health {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => crate::out!("{text}"),
            Err(e) => {
                eprintln!("vouch status: cannot write JSON: {e}");
                return Health::Unknown;
            }
        }
    } else {
        crate::out_part!("{}", text(report));
    }
    report.status
}

/// The human-readable report.
pub fn text(report: &Report) -> String {
    let mut out = format!("vouch status: {}\n", report.status);
    for r in &report.reasons {
        out.push_str(&format!("{}: {}\n", r.level, r.message));
    }
    for t in &report.targets {
        out.push_str(&target_line(t));
        out.push('\n');
    }
    for r in &report.remotes {
        out.push_str(&remote_line(r));
        out.push('\n');
    }
    if let Some(l) = &report.last_run {
        out.push_str(&format!(
            "last run: {} ({}), finished {}\n",
            l.exit_name, l.exit_code, l.finished
        ));
    }
    out
}

/// One S3 target's line: the last copy recorded and, with `--live`, what its bucket holds.
pub fn remote_line(r: &health::RemoteReport) -> String {
    let mut line = format!("target {} ({}): ", r.name, r.url);
    match &r.last_copy {
        Some(c) => line.push_str(&format!("last copy {} at {}", c.archive, c.copied)),
        None => line.push_str("no copy recorded"),
    }
    match &r.live {
        None => {}
        Some(l) => match (&l.error, &l.newest) {
            (Some(e), _) => line.push_str(&format!("; live: {e}")),
            (None, Some(n)) => line.push_str(&format!(
                "; live: {} archive{}, newest {n}",
                l.archives,
                if l.archives == 1 { "" } else { "s" }
            )),
            (None, None) => line.push_str("; live: no archive"),
        },
    }
    line
}

/// One target's line of the text report: name, path, verdict, archive count and the newest
/// verified archive.
pub fn target_line(t: &TargetReport) -> String {
    let mut line = format!(
        "target {} ({}): {}, {} archive{}",
        t.name,
        t.path,
        t.status,
        t.archives,
        if t.archives == 1 { "" } else { "s" }
    );
    if let Some(a) = &t.latest_verified {
        line.push_str(&format!(
            "; newest verified {} ({} old, {}{}, verified {})",
            a.archive,
            a.age_seconds.map(age_text).unwrap_or_else(|| "?".into()),
            human_bytes(a.size),
            a.files
                .map(|f| format!(", {f} file{}", if f == 1 { "" } else { "s" }))
                .unwrap_or_default(),
            a.verified_at.as_deref().unwrap_or("?")
        ));
        if !a.dumps.is_empty() {
            let dumps: Vec<String> = a.dumps.iter().map(|d| d.summary()).collect();
            line.push_str(&format!(", dumps {}", dumps.join(", ")));
        }
    }
    if let Some(free) = t.free_bytes {
        line.push_str(&format!("; {} free", human_bytes(free)));
    }
    if let Some(v) = &t.last_verify {
        line.push_str(&format!(
            "; last verify {} {}",
            if v.ok { "passed" } else { "FAILED" },
            v.at
        ));
    }
    line
}
