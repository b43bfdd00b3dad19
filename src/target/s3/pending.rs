//! The multipart uploads in flight, recorded in `$STATE_DIRECTORY/s3-pending.json` before the
//! first part is sent and removed once the upload completed or was aborted. An upload a crash
//! (SIGKILL, power loss) left is listed there, and the next run's preflight aborts it: S3 keeps
//! the parts of an unfinished upload, billed, until someone does.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file, in the state directory.
pub const FILE: &str = "s3-pending.json";

/// One upload in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Upload {
    /// The target's name.
    pub target: String,
    /// The object key.
    pub key: String,
    /// The upload id.
    pub upload_id: String,
}

fn path(state: &Path) -> PathBuf {
    state.join(FILE)
}

/// The uploads recorded; an unreadable record is reported and read as empty.
pub fn load(state: &Path) -> Vec<Upload> {
    let p = path(state);
    match crate::host::bounded::read(
        &p,
        crate::host::bounded::Links::Refuse,
        crate::host::bounded::STATE_CAP,
    ) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            log::warn!("{}: {e}; uploads it recorded are not aborted", p.display());
            Vec::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            log::warn!("{}: {e}; uploads it recorded are not aborted", p.display());
            Vec::new()
        }
    }
}

fn save(state: &Path, uploads: &[Upload], run_id: &str) -> std::io::Result<()> {
    if uploads.is_empty() {
        return match std::fs::remove_file(path(state)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let bytes = serde_json::to_vec_pretty(uploads).map_err(std::io::Error::other)?;
    crate::target::local::write_atomic(state, FILE, &bytes, run_id).map(|_| ())
}

/// Records `upload` (durably, before a part is sent).
pub fn add(state: &Path, upload: Upload, run_id: &str) -> std::io::Result<()> {
    let mut all = load(state);
    all.retain(|u| u != &upload);
    all.push(upload);
    save(state, &all, run_id)
}

/// Forgets `upload_id` (completed or aborted).
pub fn remove(state: &Path, upload_id: &str, run_id: &str) -> std::io::Result<()> {
    let mut all = load(state);
    let before = all.len();
    all.retain(|u| u.upload_id != upload_id);
    if all.len() == before {
        return Ok(());
    }
    save(state, &all, run_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_added_and_removed_and_the_file_goes_with_the_last() {
        let d = tempfile::tempdir().unwrap();
        let up = |id: &str| Upload {
            target: "off".into(),
            key: "web1/a".into(),
            upload_id: id.into(),
        };
        add(d.path(), up("1"), "r").unwrap();
        add(d.path(), up("2"), "r").unwrap();
        assert_eq!(load(d.path()), [up("1"), up("2")]);
        remove(d.path(), "1", "r").unwrap();
        assert_eq!(load(d.path()), [up("2")]);
        remove(d.path(), "2", "r").unwrap();
        assert!(!d.path().join(FILE).exists());
    }
}
