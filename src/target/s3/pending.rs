//! The off-site copies in flight, recorded in `$STATE_DIRECTORY/s3-pending.json` before the
//! first byte is sent (with the multipart upload id once there is one) and removed once the
//! receipt object is written or the copy undone. A copy a crash (SIGKILL, power loss) cut short
//! is listed there, and the next run's preflight settles it: the upload is aborted (S3 keeps
//! the parts of an unfinished upload, billed, until someone does) and an object that got no
//! receipt is deleted. An object whose receipt is there is a committed archive and is never
//! touched.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file, in the state directory.
pub const FILE: &str = "s3-pending.json";

/// One copy in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Upload {
    /// The target's name.
    pub target: String,
    /// The object key.
    pub key: String,
    /// The multipart upload id, once the upload was created (none for a single PutObject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
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

/// Records `upload` (durably, before its bytes are sent), replacing a record of the same
/// target and key.
pub fn add(state: &Path, upload: Upload, run_id: &str) -> std::io::Result<()> {
    let mut all = load(state);
    all.retain(|u| !(u.target == upload.target && u.key == upload.key));
    all.push(upload);
    save(state, &all, run_id)
}

/// Forgets the copy of `key` to `target` (committed, or undone).
pub fn remove(state: &Path, target: &str, key: &str, run_id: &str) -> std::io::Result<()> {
    let mut all = load(state);
    let before = all.len();
    all.retain(|u| !(u.target == target && u.key == key));
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
        let up = |key: &str, id: Option<&str>| Upload {
            target: "off".into(),
            key: key.into(),
            upload_id: id.map(str::to_owned),
        };
        add(d.path(), up("web1/a", None), "r").unwrap();
        add(d.path(), up("web1/b", None), "r").unwrap();
        add(d.path(), up("web1/a", Some("1")), "r").unwrap();
        assert_eq!(
            load(d.path()),
            [up("web1/b", None), up("web1/a", Some("1"))]
        );
        remove(d.path(), "off", "web1/a", "r").unwrap();
        assert_eq!(load(d.path()), [up("web1/b", None)]);
        remove(d.path(), "off", "web1/b", "r").unwrap();
        assert!(!d.path().join(FILE).exists());
    }
}
