//! The receipt: an unencrypted JSON file beside each archive (`NAME.tar.gz.age.json`).
//!
//! It lets `status`, `list` and people check an archive without its key: who wrote it, when, how
//! big it is, its SHA-256, how many files and bytes went in, whether each required path was
//! present, and when and how it was verified. It names no files beyond the required paths.
//!
//! A single-file archive's receipt is `NAME.tar.gz.age.json`. A split archive's receipt is
//! `NAME.tar.gz.age-receipt.json`, so that `cat NAME.tar.gz.age.*` matches exactly the parts and
//! the stock-tool restore (`cat NAME.tar.gz.age.* | age -d ...`) works as written.

use crate::manifest::RequiredStatus;
use serde::{Deserialize, Serialize};

/// The receipt's file name suffix, appended to a single-file archive's name.
pub const SUFFIX: &str = ".json";
/// The receipt's file name suffix, appended to a split archive's name.
pub const SPLIT_SUFFIX: &str = "-receipt.json";

/// The receipt of one archive on one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Receipt {
    /// Always `"vouch-receipt"`.
    pub format: String,
    /// Format version, 1.
    pub version: u32,
    /// The run that wrote the archive.
    pub run_id: String,
    /// Host name.
    pub host: String,
    /// Archive name prefix (`[backup] name`).
    pub name: String,
    /// The target's name.
    pub target: String,
    /// The archive's file name.
    pub archive: String,
    /// When the archive is split: its parts' file names in order (`cat` them to get the
    /// archive). Empty for a single file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    /// RFC 3339 creation time.
    pub created: String,
    /// The vouch version that wrote it.
    pub vouch_version: String,
    /// Size of the encrypted archive in bytes.
    pub archive_size: u64,
    /// SHA-256 of the encrypted archive.
    pub archive_sha256: String,
    /// Regular files archived (hard links included).
    pub files: u64,
    /// Directories archived.
    pub dirs: u64,
    /// Symbolic links archived.
    pub symlinks: u64,
    /// Bytes of file data archived.
    pub bytes_in: u64,
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// Required paths and whether each is present and non-empty.
    pub required: Vec<RequiredStatus>,
    /// Paths that could not be read (counted, not named).
    pub unreadable: u64,
    /// Files that changed while read (counted, not named).
    pub changed: u64,
    /// Special files skipped (counted, not named).
    pub skipped: u64,
    /// RFC 3339 time of the read-back verification.
    pub verified_at: String,
    /// `full` or `ciphertext-only`.
    pub verification: String,
}

impl Receipt {
    /// The receipt's file name for an archive file name.
    pub fn file_name(archive: &str, split: bool) -> String {
        if split {
            format!("{archive}{SPLIT_SUFFIX}")
        } else {
            format!("{archive}{SUFFIX}")
        }
    }

    /// The archive name a receipt file name belongs to, if it is a receipt's name.
    pub fn archive_of(file_name: &str) -> Option<&str> {
        file_name
            .strip_suffix(SPLIT_SUFFIX)
            .or_else(|| file_name.strip_suffix(SUFFIX))
            .filter(|a| a.ends_with(".tar.gz.age") && !a.starts_with('.'))
    }

    /// The receipt as pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("receipts always serialize");
        out.push(b'\n');
        out
    }
}
