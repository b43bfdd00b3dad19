//! `vouch list [--target NAME] [--json]`: the archives on each target, from their receipts and
//! the verification log, without decrypting anything.
//!
//! Every archive the target holds is listed, also those without a usable receipt, marked with
//! what is wrong: no receipt, a receipt for another archive, a part missing, or a size on disk
//! other than the receipt's. A target directory that cannot be read is reported in the output
//! and ends the command with its error's code once everything else is printed.
//!
//! S3 targets are listed too, from the bucket (`ListObjectsV2` under the prefix, each receipt
//! object read): an endpoint that does not answer is reported like an unreadable directory
//! (14, 16 or 34, see [`crate::target::Configured::remote_unreadable`]).

use crate::cli::Cli;
use crate::config;
use crate::error::Error;
use crate::exit::ExitCode;
use crate::host::dirs::{self, Dirs};
use crate::pipeline::manifest::RequiredStatus;
use crate::run::rfc3339;
use crate::systemd::sdnotify::human_bytes;
use crate::target::archives::{self, Archive, VerifyLog};
use crate::target::{retention, Configured};
use serde::Serialize;

/// The JSON document: `{"targets": [...]}`.
#[derive(Debug, Serialize)]
pub struct Listing {
    /// One entry per selected target, in config order.
    pub targets: Vec<TargetListing>,
}

/// One target's archives.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TargetListing {
    /// The target's name.
    pub name: String,
    /// Its directory, or `s3://BUCKET/PREFIX` for an S3 target.
    pub path: String,
    /// Why it could not be read, if it could not (then `archives` is empty).
    pub error: Option<String>,
    /// Its archives (of this config's backup name), oldest first.
    pub archives: Vec<ArchiveListing>,
    /// Archives of other backup names in the same directory (other hosts), not listed.
    pub others: usize,
}

/// One archive.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ArchiveListing {
    /// The archive's file name.
    pub name: String,
    /// RFC 3339 creation time (the receipt's, else the name's), if known.
    pub created: Option<String>,
    /// Bytes on disk (all parts).
    pub size: u64,
    /// Number of parts (0: a single file).
    pub parts: usize,
    /// Regular files archived, from the receipt.
    pub files: Option<u64>,
    /// Required paths and whether each is present, from the receipt.
    pub required: Option<Vec<RequiredStatus>>,
    /// Whether every required path is present (null without a receipt).
    pub required_ok: Option<bool>,
    /// `verified`, `failed` or `unverified`.
    pub verification: &'static str,
    /// RFC 3339 time of the last passed verification (the log's, else the receipt's).
    pub verified_at: Option<String>,
    /// The last failed verification's detail, when it failed.
    pub verify_detail: Option<String>,
    /// `ok`, `missing` (no receipt), `invalid` (unreadable or for another archive) or
    /// `mismatch` (a part missing, or the size on disk differs from the receipt's).
    pub receipt: &'static str,
    /// What is wrong with the receipt, when it is not `ok`.
    pub problem: Option<String>,
    /// The database dumps in the archive, from the receipt (absent without dumps).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dumps: Vec<crate::target::receipt::ReceiptDump>,
}

fn describe(archive: &Archive, target: &str, log: &VerifyLog) -> ArchiveListing {
    let receipt = archive.receipt.as_ref();
    let problem = retention::receipt_problem(archive);
    let receipt_state = match (&problem, receipt, archive.receipt_path.is_some()) {
        (None, _, _) => "ok",
        (Some(_), Some(_), _) => "mismatch",
        (Some(_), None, true) => "invalid",
        (Some(_), None, false) => "missing",
    };
    let record = log.get(target, &archive.name);
    let verification = match record {
        Some(r) if !r.ok => "failed",
        _ if archives::is_verified(archive, target, log) => "verified",
        _ => "unverified",
    };
    ArchiveListing {
        name: archive.name.clone(),
        created: archive.created.map(rfc3339),
        size: archive.size_on_disk(),
        parts: if archive.is_split() {
            archive.files.len()
        } else {
            0
        },
        files: receipt.map(|r| r.files),
        required: receipt.map(|r| r.required.clone()),
        required_ok: receipt.map(|r| r.required.iter().all(|s| s.present)),
        verification,
        verified_at: archives::verified_at(archive, target, log),
        verify_detail: record.filter(|r| !r.ok).and_then(|r| r.detail.clone()),
        receipt: receipt_state,
        problem,
        dumps: receipt.map(|r| r.dumps.clone()).unwrap_or_default(),
    }
}

fn list_target(
    t: &Configured,
    dirs: &Dirs,
    name: &str,
    log: &VerifyLog,
) -> (TargetListing, Option<Error>) {
    let mut listing = TargetListing {
        name: t.name().to_owned(),
        path: t.location().display().to_string(),
        error: None,
        archives: Vec::new(),
        others: 0,
    };
    let scanned = t.open(dirs).and_then(|store| {
        store.scan().map_err(|error| match t {
            _ if t.is_remote() => t.remote_unreadable(&error),
            _ => match retention::scan_error(t, error) {
                Error::Prune {
                    target,
                    path,
                    error,
                } => Error::TargetWrite {
                    target,
                    path,
                    error,
                },
                other => other,
            },
        })
    });
    match scanned {
        Ok(found) => {
            let (own, others): (Vec<_>, Vec<_>) =
                found.iter().partition(|a| archives::is_own(&a.name, name));
            listing.archives = own.iter().map(|a| describe(a, t.name(), log)).collect();
            listing.others = others.len();
            (listing, None)
        }
        Err(e) => {
            listing.error = Some(e.to_string());
            (listing, Some(e))
        }
    }
}

fn print_table(listing: &Listing) {
    for t in &listing.targets {
        match &t.error {
            Some(e) => {
                crate::out!("target {} ({}): cannot be read: {e}", t.name, t.path);
                continue;
            }
            None => crate::out!(
                "target {} ({}): {} archive(s){}",
                t.name,
                t.path,
                t.archives.len(),
                match t.others {
                    0 => String::new(),
                    n => format!(" (and {n} of other backup names, not listed)"),
                }
            ),
        }
        if t.archives.is_empty() {
            continue;
        }
        crate::out!(
            "  {:<40}  {:<20}  {:>10}  {:>7}  {:<8}  {:<20}  NOTE",
            "ARCHIVE",
            "CREATED",
            "SIZE",
            "FILES",
            "REQUIRED",
            "VERIFIED"
        );
        for a in &t.archives {
            let required = match &a.required {
                None => "-".to_owned(),
                Some(r) if r.is_empty() => "-".to_owned(),
                Some(r) => {
                    let present = r.iter().filter(|s| s.present).count();
                    format!("{present}/{}", r.len())
                }
            };
            let verified = match a.verification {
                "failed" => "FAILED".to_owned(),
                _ => a.verified_at.clone().unwrap_or_else(|| "never".into()),
            };
            let mut notes = Vec::new();
            if a.receipt != "ok" {
                notes.push(format!(
                    "RECEIPT {}: {}",
                    a.receipt.to_uppercase(),
                    a.problem.as_deref().unwrap_or("")
                ));
            }
            if a.required_ok == Some(false) {
                notes.push("REQUIRED PATH MISSING".into());
            }
            if let Some(d) = &a.verify_detail {
                notes.push(format!("verification failed: {d}"));
            }
            if a.parts > 0 {
                notes.push(format!("{} parts", a.parts));
            }
            if !a.dumps.is_empty() {
                let dumps: Vec<String> = a.dumps.iter().map(|d| d.summary()).collect();
                notes.push(format!("dumps: {}", dumps.join(", ")));
            }
            crate::out!(
                "  {:<40}  {:<20}  {:>10}  {:>7}  {:<8}  {:<20}  {}",
                a.name,
                a.created.as_deref().unwrap_or("?"),
                human_bytes(a.size),
                a.files.map_or("?".into(), |f| f.to_string()),
                required,
                verified,
                notes.join("; ")
            );
        }
    }
}

/// Runs `vouch list`.
pub fn execute(cli: &Cli, target: Option<&str>, json: bool) -> Result<ExitCode, Error> {
    let settings = config::load(&dirs::config_path(cli.config.as_deref()))?;
    let targets = crate::cli::select_targets(&settings, target)?;
    let dirs = Dirs::from_env();
    let log = VerifyLog::load(&dirs.state);
    let mut first_error = None;
    let mut listing = Listing {
        targets: Vec::new(),
    };
    for t in targets {
        let (l, e) = list_target(&t, &dirs, &settings.backup.name, &log);
        listing.targets.push(l);
        if let Some(e) = e {
            first_error.get_or_insert(e);
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&listing)
            .map_err(|e| Error::Internal(format!("cannot serialize the listing: {e}")))?;
        crate::out!("{text}");
    } else {
        print_table(&listing);
    }
    first_error.map_or(Ok(ExitCode::Ok), Err)
}
