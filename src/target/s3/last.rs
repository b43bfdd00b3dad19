//! The last off-site copy of each remote target, recorded in `$STATE_DIRECTORY/s3-copies.json`
//! after its receipt is written, so that `vouch status` judges the remotes offline, as it
//! judges directory targets from their receipts, without a request to any server. The file
//! holds every remote kind's records (S3 and sftp), keyed by target name; its name stays.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The file, in the state directory.
pub const FILE: &str = "s3-copies.json";

/// One target's last copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Copy {
    /// The archive.
    pub archive: String,
    /// `s3://BUCKET/KEY` or `sftp://USER@HOST:PORT/PATH/NAME`.
    pub url: String,
    /// RFC 3339 time its receipt was written.
    pub copied: String,
    /// The archive's creation time, from its receipt (RFC 3339).
    pub created: String,
    /// How the copy was checked: `full` (read back) or `checksum` (digests only); absent in
    /// records written before it was recorded, which were all read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readback: Option<String>,
}

/// Every target's last copy, by target name; an unreadable record reads as empty.
pub fn load(state: &Path) -> BTreeMap<String, Copy> {
    use crate::host::bounded::{read, Links, STATE_CAP};
    read(&state.join(FILE), Links::Refuse, STATE_CAP)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records `copy` as `target`'s last.
pub fn record(state: &Path, target: &str, copy: Copy, run_id: &str) -> std::io::Result<()> {
    let mut all = load(state);
    all.insert(target.to_owned(), copy);
    let bytes = serde_json::to_vec_pretty(&all).map_err(std::io::Error::other)?;
    crate::target::local::write_atomic(state, FILE, &bytes, run_id).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_copy_of_each_target_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let copy = |a: &str| Copy {
            archive: a.into(),
            url: format!("s3://b/{a}"),
            copied: "2026-12-01T00:00:00Z".into(),
            created: "2026-12-01T00:00:00Z".into(),
            readback: Some("checksum".into()),
        };
        record(d.path(), "off", copy("a"), "r").unwrap();
        record(d.path(), "other", copy("b"), "r").unwrap();
        record(d.path(), "off", copy("c"), "r").unwrap();
        let all = load(d.path());
        assert_eq!(all["off"].archive, "c");
        assert_eq!(all["other"].archive, "b");
        assert_eq!(all["off"].readback.as_deref(), Some("checksum"));
    }

    #[test]
    fn a_record_without_a_readback_level_still_loads() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(FILE),
            r#"{"off": {"archive": "a", "url": "s3://b/a", "copied": "2026-12-01T00:00:00Z", "created": "2026-12-01T00:00:00Z"}}"#,
        )
        .unwrap();
        let all = load(d.path());
        assert_eq!(all["off"].archive, "a");
        assert_eq!(all["off"].readback, None);
    }
}
