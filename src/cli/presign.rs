//! `vouch presign ARCHIVE --target NAME [--expires DURATION]`: a time-limited URL of an
//! archive on an S3 target, so that a host without vouch or an access key can fetch it with
//! plain `curl` and restore it with the stock tools (`curl URL | age -d | tar -xz`).
//!
//! The URL is signed locally (SigV4 in the query string, [`crate::target::s3::presign`]), but
//! only after `HEAD` requests found both the archive object and its receipt object: an object
//! without its receipt is an interrupted or failed copy, not an archive, and gets no URL. The
//! URL alone goes to standard output; when it expires goes to standard error. Anyone holding
//! the URL can download the (encrypted) archive until then; the age identity is still needed
//! to read it.

use crate::cli::Cli;
use crate::config::{self, format_duration, parse_duration, Settings};
use crate::error::Error;
use crate::exit::ExitCode;
use crate::host::dirs::{self, Dirs};
use crate::target::s3::client::S3Error;
use crate::target::s3::presign::MAX_EXPIRES;
use crate::target::s3::S3;
use std::time::Duration;
use time::OffsetDateTime;

/// `--expires` when it is not given.
pub const DEFAULT_EXPIRES: &str = "24h";

/// What to presign.
#[derive(Debug, Clone)]
pub struct Request {
    /// The archive's file name, as `vouch list` prints it.
    pub archive: String,
    /// The S3 target.
    pub target: String,
    /// `--expires`, as given.
    pub expires: String,
}

/// Prints the URL of `request.archive` on `request.target`.
pub fn execute(cli: &Cli, request: &Request) -> Result<ExitCode, Error> {
    let expires = expires(&request.expires)?;
    check_archive_name(&request.archive)?;
    let settings = config::load(&dirs::config_path(cli.config.as_deref()))?;
    let remote = s3_target(&settings, &request.target)?;
    let dirs = Dirs::from_env();
    let s3 = S3::open(remote, dirs.credentials.as_deref()).map_err(|(detail, hint)| {
        Error::RemoteCheck {
            target: remote.name.clone(),
            code: ExitCode::Config,
            detail,
            hint,
        }
    })?;
    check_objects(&s3, &request.archive)?;
    let now = OffsetDateTime::now_utc();
    let url = s3
        .client
        .presigned_get(&s3.key(&request.archive), expires.as_secs(), now);
    crate::out!("{url}");
    eprintln!(
        "{} on {}: this URL expires at {} (in {})",
        request.archive,
        remote.name,
        crate::run::rfc3339(now + expires),
        format_duration(expires)
    );
    Ok(ExitCode::Ok)
}

/// `--expires`: a config duration from 1 second to 7 days.
pub fn expires(text: &str) -> Result<Duration, Error> {
    let d = parse_duration(text).map_err(|e| Error::Usage(format!("--expires: {e}")))?;
    if d.as_secs() > MAX_EXPIRES {
        return Err(Error::Usage(format!(
            "--expires {text}: a presigned URL lives at most 7d (604800 seconds), as S3 allows"
        )));
    }
    Ok(d)
}

/// ARCHIVE is a file name `NAME-STAMP.tar.gz.age`, not a path.
fn check_archive_name(archive: &str) -> Result<(), Error> {
    if archive.contains('/') || crate::target::archives::created_from_name(archive).is_none() {
        return Err(Error::Usage(format!(
            "{archive:?} is not an archive name: give it as `vouch list` prints it (NAME-STAMP.tar.gz.age)"
        )));
    }
    Ok(())
}

/// The S3 target called `name`; a directory target or an unknown name is a usage error that
/// names the S3 targets there are.
fn s3_target<'a>(settings: &'a Settings, name: &str) -> Result<&'a config::Remote, Error> {
    if let Some(r) = settings.remotes.iter().find(|r| r.name == name) {
        return Ok(r);
    }
    let names: Vec<&str> = settings.remotes.iter().map(|r| r.name.as_str()).collect();
    let there = if names.is_empty() {
        format!("{} has no S3 target", settings.file.display())
    } else {
        format!("S3 targets: {}", names.join(", "))
    };
    let why = if settings.targets.iter().any(|t| t.name == name) {
        format!("--target {name} is a directory target; presign needs an S3 target ({there})")
    } else {
        format!(
            "--target {name}: no such target in {} ({there})",
            settings.file.display()
        )
    };
    Err(Error::Usage(why))
}

/// The archive object and its receipt object are both there.
fn check_objects(s3: &S3, archive: &str) -> Result<(), Error> {
    let key = s3.key(archive);
    let receipt = s3.receipt_key(archive);
    let failed = |e: S3Error| request_error(s3, e);
    if s3.client.head(&key).map_err(failed)?.is_none() {
        return Err(Error::Usage(format!(
            "no archive {archive} on target {} ({} is not there)",
            s3.name,
            s3.client.url_of(&key)
        )));
    }
    if s3.client.head(&receipt).map_err(failed)?.is_none() {
        return Err(Error::Usage(format!(
            "{archive} on target {} has no receipt ({} is not there): it is an interrupted or failed copy, not an archive",
            s3.name,
            s3.client.url_of(&receipt)
        )));
    }
    Ok(())
}

/// A `HEAD` that failed: 14 without an answer, 16 for a refused key, else 34.
fn request_error(s3: &S3, e: S3Error) -> Error {
    let url = &s3.client.endpoint().url;
    let (code, hint) = match &e {
        S3Error::Transport { .. } => (
            ExitCode::TargetMissing,
            format!("Check that {url} answers from this host (endpoint, DNS, firewall, TLS certificate)."),
        ),
        _ if e.status() == Some(403) => (
            ExitCode::TargetDenied,
            format!(
                "The server refused the access key: check the credential file of [[target]] \"{}\".",
                s3.name
            ),
        ),
        _ => (
            ExitCode::Remote,
            format!("The server at {url} answered with an error: check its logs."),
        ),
    };
    Error::RemoteCheck {
        target: s3.name.clone(),
        code,
        detail: e.to_string(),
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_takes_config_durations_from_a_second_to_seven_days() {
        assert_eq!(expires("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(expires("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(expires("7d").unwrap(), Duration::from_secs(MAX_EXPIRES));
        assert_eq!(expires("1s").unwrap(), Duration::from_secs(1));
        for bad in ["8d", "7d1s", "0s", "soon", ""] {
            assert!(matches!(expires(bad), Err(Error::Usage(_))), "{bad}");
        }
        let e = expires("8d").unwrap_err().to_string();
        assert!(e.contains("at most 7d"), "{e}");
    }

    #[test]
    fn an_archive_is_named_not_given_as_a_path() {
        assert!(check_archive_name("web1-20261121T030405Z.tar.gz.age").is_ok());
        for bad in [
            "/var/backups/vouch/web1-20261121T030405Z.tar.gz.age",
            "web1.tar.gz.age",
            "latest",
        ] {
            assert!(check_archive_name(bad).is_err(), "{bad}");
        }
    }
}
