//! `[backup] compression`: the format of the tar stream inside the age encryption, and the
//! file name suffix that says which one an archive holds.
//!
//! The name is the only record of an archive's compression: every command that reads archives
//! (list, verify, restore, prune, status) knows both suffixes, so a target keeps serving its old
//! gzip archives after the config switched to zstd, and the reverse.

use std::fmt;

/// How the tar stream of an archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Gzip members (`.tar.gz.age`): the default, because every system can read it.
    #[default]
    Gzip,
    /// Zstandard frames (`.tar.zst.age`).
    Zstd,
}

impl Compression {
    /// Every compression an archive may have, in the order the config documents them.
    pub const ALL: [Compression; 2] = [Compression::Gzip, Compression::Zstd];

    /// The config value: `"gzip"` or `"zstd"`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The config value `text`, if it names one.
    pub fn from_name(text: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.name() == text)
    }

    /// The archive file name suffix: `.tar.gz.age` or `.tar.zst.age`.
    pub fn archive_suffix(self) -> &'static str {
        match self {
            Compression::Gzip => ".tar.gz.age",
            Compression::Zstd => ".tar.zst.age",
        }
    }

    /// The compression an archive file name (`NAME-STAMP.tar.gz.age`, `....tar.zst.age`) says,
    /// if it is an archive's name. Part and receipt names are not: strip those suffixes first.
    pub fn of_archive(name: &str) -> Option<Compression> {
        Compression::ALL
            .into_iter()
            .find(|c| name.ends_with(c.archive_suffix()))
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_suffixes_round_trip() {
        for c in Compression::ALL {
            assert_eq!(Compression::from_name(c.name()), Some(c));
            let archive = format!("web1-20260101T000000Z{}", c.archive_suffix());
            assert_eq!(Compression::of_archive(&archive), Some(c));
        }
        assert_eq!(Compression::from_name("xz"), None);
        assert_eq!(Compression::from_name("GZIP"), None);
        assert_eq!(Compression::of_archive("a.tar.gz.age.000"), None);
        assert_eq!(Compression::of_archive("a.tar.zst.age.json"), None);
        assert_eq!(Compression::of_archive("a.tar.age"), None);
        assert_eq!(Compression::default(), Compression::Gzip);
    }
}
