//! `vouch verify [ARCHIVE | --latest | --all] [--target NAME]`: read archives back from their
//! targets and check every entry against the manifest, as `vouch run` does right after writing.
//!
//! This is the restore test: `vouch-verify.timer` runs `vouch verify --latest` weekly. Results
//! are recorded in `$STATE_DIRECTORY/verified.json` (archives are never rewritten). A target
//! without any archive fails, since there is nothing that could be restored from it.

use crate::cli::Cli;
use crate::config::{self, Target};
use crate::crypt::{KeyError, Keys};
use crate::dirs::{self, Dirs};
use crate::error::Error;
use crate::exit::ExitCode;
use crate::journal::{self, Entry, Event};
use crate::receipt::Receipt;
use crate::sink::local::{drop_cache, part_name};
use crate::verify;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Which archives to verify.
#[derive(Debug, Clone)]
pub enum Selection {
    /// The newest archive on each target.
    Latest,
    /// Every archive on each target.
    All,
    /// One archive, by path or by file name.
    One(PathBuf),
}

/// One archive to check: its name, files (the parts, in order) and receipt.
struct Candidate {
    name: String,
    files: Vec<PathBuf>,
    receipt: Option<Receipt>,
}

/// Archives with a receipt in `dir`, oldest first.
fn archives_in(dir: &Path) -> io::Result<Vec<Candidate>> {
    let mut out: Vec<Candidate> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let file_name = entry?.file_name().to_string_lossy().into_owned();
        let Some(archive) = Receipt::archive_of(&file_name) else {
            continue;
        };
        let receipt: Option<Receipt> = fs::read(dir.join(&file_name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        out.push(candidate(dir, archive, receipt));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn candidate(dir: &Path, archive: &str, receipt: Option<Receipt>) -> Candidate {
    let files = match &receipt {
        Some(r) if !r.parts.is_empty() => r.parts.iter().map(|p| dir.join(p)).collect(),
        _ if !dir.join(archive).exists() && dir.join(part_name(archive, 0)).exists() => (0..)
            .map(|i| dir.join(part_name(archive, i)))
            .take_while(|p| p.exists())
            .collect(),
        _ => vec![dir.join(archive)],
    };
    Candidate {
        name: archive.to_owned(),
        files,
        receipt,
    }
}

/// Opens the parts in order, each with its cached pages dropped first.
fn open_parts(files: &[PathBuf]) -> io::Result<Box<dyn Read>> {
    let mut chain: Box<dyn Read> = Box::new(io::empty());
    for f in files {
        let file = File::open(f)?;
        drop_cache(&file)?;
        chain = Box::new(Read::chain(chain, file));
    }
    Ok(chain)
}

/// Verifies the selected archives and records the results.
pub fn execute(cli: &Cli, selection: Selection, target: Option<&str>) -> Result<ExitCode, Error> {
    let settings = config::load(&dirs::config_path(cli.config.as_deref()))?;
    let dirs = Dirs::from_env();
    dirs.create().map_err(|error| Error::State {
        path: dirs.state.clone(),
        error,
    })?;
    let keys = Keys::load(&settings.encryption, dirs.credentials.as_deref())?;
    let identity = keys.identity.ok_or(KeyError::NoIdentity)?;
    let targets: Vec<&Target> = settings
        .targets
        .iter()
        .filter(|t| target.is_none_or(|n| n == t.name))
        .collect();
    if targets.is_empty() {
        return Err(Error::Usage(format!(
            "no target called {:?} in {}",
            target.unwrap_or(""),
            settings.file.display()
        )));
    }
    let mut work: Vec<(&Target, Candidate)> = Vec::new();
    for t in &targets {
        let found = match &selection {
            Selection::One(path) => {
                let (dir, name) = match (path.parent(), path.file_name()) {
                    (Some(d), Some(n)) if !d.as_os_str().is_empty() => {
                        (d.to_path_buf(), n.to_string_lossy().into_owned())
                    }
                    _ => (t.path.clone(), path.to_string_lossy().into_owned()),
                };
                if dir != t.path && targets.len() > 1 {
                    continue;
                }
                let receipt = [false, true]
                    .iter()
                    .find_map(|&split| fs::read(dir.join(Receipt::file_name(&name, split))).ok())
                    .and_then(|b| serde_json::from_slice(&b).ok());
                vec![candidate(&dir, &name, receipt)]
            }
            _ => {
                let all = archives_in(&t.path).map_err(|error| Error::TargetWrite {
                    target: t.name.clone(),
                    path: t.path.clone(),
                    error,
                })?;
                match selection {
                    Selection::Latest => all.into_iter().last().into_iter().collect(),
                    _ => all,
                }
            }
        };
        if found.is_empty() {
            return Err(Error::Verify {
                target: t.name.clone(),
                archive: String::from("(none)"),
                detail: format!("no archive with a receipt in {}", t.path.display()),
            });
        }
        work.extend(found.into_iter().map(|c| (*t, c)));
        if matches!(selection, Selection::One(_)) {
            break;
        }
    }

    let mut record = load_record(&dirs.state);
    let mut first_failure = None;
    for (t, c) in work {
        crate::systemd::status(&format!("verifying {} on {}", c.name, t.name));
        let receipt = c
            .receipt
            .as_ref()
            .map(|r| (r.archive_sha256.as_str(), r.archive_size));
        let files = c.files.clone();
        let result =
            verify::verify_archive(&|| open_parts(&files), &identity, receipt, &dirs.state);
        let now = crate::run::rfc3339(time::OffsetDateTime::now_utc());
        let key = format!("{}/{}", t.name, c.name);
        match result {
            Ok(v) => {
                println!("ok    {}  {}  ({} entries)", t.name, c.name, v.entries);
                Entry::event(
                    Event::ArchiveVerified,
                    format!("target {}: verified {} (full)", t.name, c.name),
                )
                .field("VOUCH_TARGET", &t.name)
                .field("VOUCH_ARCHIVE", t.path.join(&c.name).display())
                .field("VOUCH_ARCHIVE_SHA256", &v.archive_sha256)
                .field("VOUCH_FILES", v.entries)
                .emit();
                record.insert(
                    key,
                    VerifyRecord {
                        verified_at: now,
                        ok: true,
                        detail: None,
                    },
                );
            }
            Err(m) => {
                println!("FAIL  {}  {}  {}", t.name, c.name, m.0);
                record.insert(
                    key,
                    VerifyRecord {
                        verified_at: now,
                        ok: false,
                        detail: Some(m.0.clone()),
                    },
                );
                first_failure.get_or_insert(Error::Verify {
                    target: t.name.clone(),
                    archive: c.name.clone(),
                    detail: m.0,
                });
            }
        }
    }
    save_record(&dirs.state, &record);
    match first_failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::Ok),
    }
}

/// The state file with every archive's last verification.
pub const RECORD: &str = "verified.json";

/// The last verification of one archive.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VerifyRecord {
    /// RFC 3339 time.
    pub verified_at: String,
    /// Whether it passed.
    pub ok: bool,
    /// The first difference, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn load_record(state: &Path) -> BTreeMap<String, VerifyRecord> {
    fs::read(state.join(RECORD))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_record(state: &Path, record: &BTreeMap<String, VerifyRecord>) {
    let mut json = serde_json::to_vec_pretty(record).unwrap_or_default();
    json.push(b'\n');
    if let Err(e) = crate::sink::local::write_atomic(state, RECORD, &json, journal::run_id()) {
        log::warn!(
            "cannot record verification results in {}: {e}",
            state.display()
        );
    }
}
