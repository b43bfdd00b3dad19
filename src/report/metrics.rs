//! The Prometheus textfile for node_exporter's textfile collector (`[metrics] textfile`).
//!
//! `run`, `verify` and `status` rewrite it from the same judgement `status` makes
//! ([`health::evaluate`]), so the file and `vouch status` never disagree. It is written the way
//! the collector needs: a temporary file in the same directory whose name does not end in
//! `.prom` (so the collector never reads it half-written), fsynced, then renamed over the old
//! one. A file that cannot be written is a logged warning; it never changes an exit code.

use crate::config::Settings;
use crate::host::dirs::Dirs;
use crate::report::health::{self, Report};
use crate::target::archives;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use time::OffsetDateTime;

/// Rewrites the textfile from the receipts and the state directory (atomic rename). Failures
/// are logged; they never change a command's exit code.
pub fn write(settings: &Settings, dirs: &Dirs) {
    if settings.metrics.textfile.is_none() {
        return;
    }
    let report = health::evaluate(settings, dirs, OffsetDateTime::now_utc());
    write_report(settings, &report);
}

/// Writes the textfile for a report `status` already made.
pub fn write_report(settings: &Settings, report: &Report) {
    let Some(path) = &settings.metrics.textfile else {
        return;
    };
    if let Err(e) = write_atomic(path, render(report).as_bytes()) {
        log::warn!(
            "cannot write the metrics textfile {}: {e}; make its directory writable for vouch (under systemd, add it to ReadWritePaths=)",
            path.display()
        );
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, mode 0644.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("the textfile path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family: its help, and its samples as (target label, value).
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Option<String>, String)>,
}

fn seconds_of(rfc3339: Option<&str>) -> Option<String> {
    rfc3339
        .and_then(archives::parse_time)
        .map(|t| t.unix_timestamp().to_string())
}

/// The textfile's text for a report.
pub fn render(report: &Report) -> String {
    let last = report.last_run.as_ref();
    let mut families = vec![Family {
        name: "vouch_status",
        help: "Overall health as vouch status reports it: 0 healthy, 1 warning, 2 critical, 3 unknown.",
        samples: vec![(None, report.code.to_string())],
    }];
    let mut per_target =
        |name: &'static str,
         help: &'static str,
         value: &dyn Fn(&health::TargetReport) -> Option<String>| {
            let samples = report
                .targets
                .iter()
                .filter_map(|t| value(t).map(|v| (Some(t.name.clone()), v)))
                .collect();
            families.push(Family {
                name,
                help,
                samples,
            });
        };
    per_target(
        "vouch_target_status",
        "Health of the target: 0 healthy, 1 warning, 2 critical, 3 unknown.",
        &|t| Some(t.status.code().to_string()),
    );
    per_target(
        "vouch_archives",
        "Archives of this backup name on the target.",
        &|t| Some(t.archives.to_string()),
    );
    per_target(
        "vouch_last_success_timestamp_seconds",
        "Creation time of the newest verified archive on the target.",
        &|t| seconds_of(t.latest_verified.as_ref()?.created.as_deref()),
    );
    per_target(
        "vouch_latest_archive_bytes",
        "Size of the newest archive on the target.",
        &|t| Some(t.latest.as_ref()?.size.to_string()),
    );
    per_target(
        "vouch_latest_archive_files",
        "Regular files in the newest archive on the target.",
        &|t| Some(t.latest.as_ref()?.files?.to_string()),
    );
    per_target(
        "vouch_last_run_exit_code",
        "Exit code of the last vouch run (one run covers every target).",
        &|_| Some(last?.exit_code.to_string()),
    );
    per_target(
        "vouch_last_run_timestamp_seconds",
        "End time of the last vouch run (one run covers every target).",
        &|_| seconds_of(Some(&last?.finished)),
    );
    per_target(
        "vouch_last_run_duration_seconds",
        "Wall time of the last vouch run (one run covers every target).",
        &|_| Some(format!("{:.3}", last?.duration_seconds?)),
    );
    per_target(
        "vouch_last_verify_timestamp_seconds",
        "Time of the most recent vouch verify of an archive on the target.",
        &|t| seconds_of(Some(&t.last_verify.as_ref()?.at)),
    );
    per_target(
        "vouch_last_verify_ok",
        "Whether the most recent vouch verify on the target passed (1) or failed (0).",
        &|t| Some(u8::from(t.last_verify.as_ref()?.ok).to_string()),
    );
    per_target(
        "vouch_last_restore_test_timestamp_seconds",
        "Time of the most recent restore test (vouch verify --restore-to) on the target.",
        &|t| seconds_of(Some(&t.last_restore_test.as_ref()?.at)),
    );
    per_target(
        "vouch_target_free_bytes",
        "Free bytes on the target's filesystem.",
        &|t| Some(t.free_bytes?.to_string()),
    );
    families.push(Family {
        name: "vouch_remote_last_success_timestamp_seconds",
        help:
            "Time the newest archive copied to the remote (S3 or sftp) target got its receipt (the copy read back).",
        samples: report
            .remotes
            .iter()
            .filter_map(|r| {
                let t = seconds_of(Some(&r.last_copy.as_ref()?.copied))?;
                Some((Some(r.name.clone()), t))
            })
            .collect(),
    });
    let mut out = String::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} gauge", f.name);
        for (target, value) in &f.samples {
            match target {
                Some(t) => {
                    let _ = writeln!(out, "{}{{target=\"{}\"}} {value}", f.name, escape_label(t));
                }
                None => {
                    let _ = writeln!(out, "{} {value}", f.name);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Health;
    use crate::report::health::{ArchiveInfo, Reason, TargetReport};
    use crate::run::LastRun;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("usb"), "usb");
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
    }

    fn target(name: &str) -> TargetReport {
        TargetReport {
            name: name.into(),
            path: "/backups".into(),
            status: Health::Healthy,
            archives: 2,
            latest: Some(ArchiveInfo {
                archive: "web1-20261121T030405Z.tar.gz.age".into(),
                created: Some("2026-11-21T03:04:05Z".into()),
                age_seconds: Some(60),
                size: 12345,
                files: Some(42),
                verified: true,
                verified_at: Some("2026-11-21T03:04:09Z".into()),
                verification: Some("full".into()),
                required_missing: Vec::new(),
                dumps: Vec::new(),
            }),
            latest_verified: None,
            median_size: None,
            free_bytes: Some(1 << 30),
            next_archive_bytes: None,
            last_verify: None,
            last_restore_test: None,
        }
    }

    #[test]
    fn the_textfile_has_help_type_and_escaped_labels() {
        let mut t = target("usb \"left\"");
        t.latest_verified = t.latest.clone();
        let report = Report {
            status: Health::Warning,
            code: 1,
            checked_at: "2026-11-21T04:00:00Z".into(),
            config: "/etc/vouch/vouch.toml".into(),
            reasons: vec![Reason {
                level: Health::Warning,
                target: None,
                check: "notify",
                message: "x".into(),
            }],
            last_run: Some(LastRun {
                run_id: "0".repeat(32),
                finished: "2026-11-21T03:04:10Z".into(),
                exit_code: 0,
                exit_name: "OK".into(),
                archive: None,
                tar_bytes: None,
                committed_targets: Vec::new(),
                duration_seconds: Some(5.25),
            }),
            targets: vec![t, target("local")],
            remotes: vec![crate::report::health::RemoteReport {
                name: "offsite".into(),
                url: "s3://b/web1/".into(),
                last_copy: Some(crate::target::s3::last::Copy {
                    archive: "a".into(),
                    url: "s3://b/web1/a".into(),
                    copied: "2026-11-21T03:05:00Z".into(),
                    created: "2026-11-21T03:04:00Z".into(),
                    readback: None,
                }),
                live: None,
            }],
        };
        let text = render(&report);
        assert!(
            text.contains(
                "vouch_remote_last_success_timestamp_seconds{target=\"offsite\"} 1795230300\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE vouch_status gauge\nvouch_status 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "vouch_last_success_timestamp_seconds{target=\"usb \\\"left\\\"\"} 1795230245\n"
            ),
            "{text}"
        );
        assert!(text.contains("vouch_latest_archive_bytes{target=\"local\"} 12345\n"));
        assert!(text.contains("vouch_latest_archive_files{target=\"local\"} 42\n"));
        assert!(text.contains("vouch_last_run_duration_seconds{target=\"local\"} 5.250\n"));
        assert!(text.contains("vouch_last_run_exit_code{target=\"local\"} 0\n"));
        // Families without samples are left out, not written empty.
        assert!(!text.contains("vouch_last_verify_ok"), "{text}");
        // Every family is announced once, before its samples.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{name}");
        }
    }

    #[test]
    fn the_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vouch.prom");
        fs::write(&path, "old\n").unwrap();
        write_atomic(&path, b"new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("vouch.prom")]);
        assert!(write_atomic(&dir.path().join("missing/vouch.prom"), b"x").is_err());
    }
}
