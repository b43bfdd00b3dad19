//! The receipt: an unencrypted JSON file beside each archive (`NAME.tar.gz.age.json`, or
//! `NAME.tar.zst.age.json` beside a zstd archive: every name below works for both).
//!
//! It lets `status`, `list` and people check an archive without its key: who wrote it, when, how
//! big it is, its SHA-256, how many files and bytes went in, whether each required path was
//! present, and when and how it was verified. It names no files beyond the required paths.
//!
//! A single-file archive's receipt is `NAME.tar.gz.age.json`. A split archive's receipt is
//! `NAME.tar.gz.age-receipt.json`, so that `cat NAME.tar.gz.age.*` matches exactly the parts and
//! the stock-tool restore (`cat NAME.tar.gz.age.* | age -d ...`) works as written.
//!
//! Receipts are unauthenticated plain text on a target that other hosts may share, so nothing
//! in one is taken on trust: [`Receipt::check`] refuses a receipt of another format or version,
//! one whose part names are not the archive's own `NAME.NNN` (in order, in the same directory),
//! and one dated more than a day ahead of now.

use crate::pipeline::manifest::RequiredStatus;
use crate::target::local::{part_name, MAX_PARTS};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The `format` every receipt carries.
pub const FORMAT: &str = "vouch-receipt";
/// The only receipt `version` this vouch reads and writes.
pub const VERSION: u32 = 1;
/// How far ahead of now a receipt's `created` may be (clocks of hosts sharing a target differ)
/// before the receipt counts as invalid.
pub const FUTURE_LIMIT: time::Duration = time::Duration::days(1);

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
    /// The dumps in the archive, by config name only (absent without dumps).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dumps: Vec<ReceiptDump>,
}

/// One dump in a receipt: names from the config, no database names, hosts or paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReceiptDump {
    /// The `[[dump]]` name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Files it put in the archive.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Every check passed before it was archived.
    pub checked: bool,
}

impl ReceiptDump {
    /// `NAME (KIND, SIZE)`, as `list` and `status` show it.
    pub fn summary(&self) -> String {
        format!(
            "{} ({}, {})",
            self.name,
            self.kind,
            crate::systemd::sdnotify::human_bytes(self.bytes)
        )
    }
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
            .filter(|a| crate::target::archives::is_archive_name(a) && !a.starts_with('.'))
    }

    /// Why this receipt cannot be the receipt of `archive` in its file (`split`: under the split
    /// receipt's name), as of `now`; `Ok` when it can.
    pub fn check(&self, archive: &str, split: bool, now: OffsetDateTime) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "receipt has format {:?}, not {FORMAT:?}",
                self.format
            ));
        }
        if self.version != VERSION {
            return Err(format!(
                "receipt has version {}, this vouch reads version {VERSION}",
                self.version
            ));
        }
        if self.archive != archive {
            return Err(format!("receipt names another archive ({})", self.archive));
        }
        self.check_parts(archive, split)?;
        let created = OffsetDateTime::parse(
            &self.created,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| format!("receipt has no valid creation time ({:?})", self.created))?;
        if created > now + FUTURE_LIMIT {
            return Err(format!(
                "receipt is dated in the future ({}): check the clock of the host that wrote it",
                self.created
            ));
        }
        Ok(())
    }

    /// The part list: none for a single file; for a split archive between one and
    /// [`MAX_PARTS`] names, each `ARCHIVE.NNN` in order.
    fn check_parts(&self, archive: &str, split: bool) -> Result<(), String> {
        match (split, self.parts.len()) {
            (false, 0) => return Ok(()),
            (false, _) => {
                return Err(format!(
                    "receipt of a single-file archive lists parts ({:?}, ...)",
                    self.parts[0]
                ))
            }
            (true, 0) => return Err("receipt of a split archive lists no parts".into()),
            (true, n) if n > MAX_PARTS => {
                return Err(format!("receipt lists {n} parts, more than {MAX_PARTS}"))
            }
            _ => {}
        }
        for (i, p) in self.parts.iter().enumerate() {
            let expected = part_name(archive, i);
            if *p != expected {
                return Err(format!("receipt names {p:?} as part {i}, not {expected:?}"));
            }
        }
        Ok(())
    }

    /// The file names of the archive's data: its parts, or the archive alone.
    pub fn data_names(&self) -> Vec<String> {
        if self.parts.is_empty() {
            vec![self.archive.clone()]
        } else {
            self.parts.clone()
        }
    }

    /// The receipt as pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("receipts always serialize");
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(parts: &[&str]) -> Receipt {
        Receipt {
            format: FORMAT.into(),
            version: VERSION,
            run_id: "r".into(),
            host: "h".into(),
            name: "a".into(),
            target: "t".into(),
            archive: "a-20260101T000000Z.tar.gz.age".into(),
            parts: parts.iter().map(|p| p.to_string()).collect(),
            created: "2026-01-01T00:00:00Z".into(),
            vouch_version: "0".into(),
            archive_size: 0,
            archive_sha256: String::new(),
            files: 0,
            dirs: 0,
            symlinks: 0,
            bytes_in: 0,
            tar_bytes: 0,
            required: Vec::new(),
            unreadable: 0,
            changed: 0,
            skipped: 0,
            verified_at: String::new(),
            verification: "full".into(),
            dumps: Vec::new(),
        }
    }

    const A: &str = "a-20260101T000000Z.tar.gz.age";

    #[test]
    fn a_good_receipt_passes() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(receipt(&[]).check(A, false, now), Ok(()));
        let split = receipt(&[&format!("{A}.000"), &format!("{A}.001")]);
        assert_eq!(split.check(A, true, now), Ok(()));
    }

    #[test]
    fn parts_must_be_the_archives_own_names_in_order() {
        let now = OffsetDateTime::now_utc();
        let outside = receipt(&["../other/a-20260101T000000Z.tar.gz.age.000"]);
        assert!(outside
            .check(A, true, now)
            .unwrap_err()
            .contains("as part 0"));
        let swapped = receipt(&[&format!("{A}.001"), &format!("{A}.000")]);
        assert!(swapped.check(A, true, now).is_err());
        assert!(receipt(&[])
            .check(A, true, now)
            .unwrap_err()
            .contains("no parts"));
        assert!(receipt(&[&format!("{A}.000")])
            .check(A, false, now)
            .is_err());
        let many: Vec<String> = (0..=MAX_PARTS).map(|i| format!("{A}.{i:03}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(receipt(&many)
            .check(A, true, now)
            .unwrap_err()
            .contains("more than"));
    }

    #[test]
    fn unknown_formats_versions_and_future_dates_are_refused() {
        let now = OffsetDateTime::now_utc();
        let mut r = receipt(&[]);
        r.format = "something".into();
        assert!(r.check(A, false, now).unwrap_err().contains("format"));
        let mut r = receipt(&[]);
        r.version = 2;
        assert!(r.check(A, false, now).unwrap_err().contains("version 2"));
        let mut r = receipt(&[]);
        r.created = "2099-01-01T00:00:00Z".into();
        assert!(r.check(A, false, now).unwrap_err().contains("future"));
        let mut r = receipt(&[]);
        r.created = "yesterday".into();
        assert!(r
            .check(A, false, now)
            .unwrap_err()
            .contains("creation time"));
        let mut r = receipt(&[]);
        r.archive = "b-20260101T000000Z.tar.gz.age".into();
        assert!(r
            .check(A, false, now)
            .unwrap_err()
            .contains("another archive"));
    }
}
