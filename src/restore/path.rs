//! Stored paths as a restore sees them: what a valid one is, the names vouch keeps for its own
//! files in a destination, and the byte-path helpers every step uses.
//!
//! A stored path is relative and plain, `/`-separated bytes with no `.`, `..` or empty
//! component. The staging directory and the files kept beside their destination have names of
//! their own ([`STAGING_PREFIX`], [`OLD_PREFIX`]) that no archive entry may use.

use super::RestoreError;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The prefix of the staging directory inside the destination.
pub const STAGING_PREFIX: &str = ".vouch-restore.";

/// The prefix of files kept beside their destination: replaced paths on another filesystem
/// than the staging directory, and copies about to be renamed into place.
pub const OLD_PREFIX: &str = ".vouch-restore-old.";

/// Normalizes a PATH argument into a stored path: leading `/` and trailing `/` dropped.
pub fn stored_path(arg: &Path) -> Result<Vec<u8>, RestoreError> {
    let bytes = arg.as_os_str().as_bytes();
    let mut p = bytes;
    while let Some(rest) = p.strip_prefix(b"/") {
        p = rest;
    }
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    check_relative(p).map_err(|why| {
        RestoreError::Refused(format!(
            "{}: not a path that can be stored in an archive ({why})",
            arg.display()
        ))
    })?;
    Ok(p.to_vec())
}

/// Checks that `p` is a plain relative path: not empty, no leading `/`, no empty, `.` or `..`
/// component, no NUL byte.
pub(super) fn check_relative(p: &[u8]) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("empty");
    }
    if p.starts_with(b"/") {
        return Err("absolute");
    }
    if p.contains(&0) {
        return Err("contains a NUL byte");
    }
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" => return Err("empty component"),
            b"." => return Err("`.` component"),
            b".." => return Err("`..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `p` names one of vouch's own working files in a destination: a first component
/// starting with `.vouch-restore` (staging directories), or any component starting with
/// `.vouch-restore-old.` (replaced paths kept beside themselves, copies about to be renamed
/// into place). No archive entry may have such a name: restored, it would be taken for the
/// leftover of an interrupted restore.
pub fn working_name(p: &[u8]) -> bool {
    let p = trim_slash(p);
    p.starts_with(b".vouch-restore")
        || p.split(|&b| b == b'/')
            .any(|c| c.starts_with(OLD_PREFIX.as_bytes()))
}

/// The refusal of an entry with a working name.
pub fn working_name_refused(name: &str) -> String {
    format!(
        "{name}: refused, a name vouch uses for its own files while it restores (.vouch-restore*); \
         no archive vouch writes holds one"
    )
}

/// A stored path for messages.
pub(super) fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// `p` without one trailing `/` (tar writes directories so).
pub(super) fn trim_slash(p: &[u8]) -> &[u8] {
    p.strip_suffix(b"/").unwrap_or(p)
}

/// The proper ancestors of a relative path, shortest first.
pub(super) fn ancestors(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(move |(i, _)| &p[..i])
}

/// Whether `path` is `prefix` or lies below it.
pub(super) fn under(path: &[u8], prefix: &[u8]) -> bool {
    path == prefix || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

/// The stored path `rel` below the directory `dir`.
pub(super) fn rel_path(dir: &Path, rel: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(rel))
}

/// `rel` with its last component replaced by `name`.
pub(super) fn beside(rel: &[u8], name: &str) -> Vec<u8> {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => [&rel[..=i], name.as_bytes()].concat(),
        None => name.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_pass() {
        assert!(check_relative(b"etc/app/x").is_ok());
        assert!(check_relative(b"..a/b..").is_ok());
        for bad in [
            &b""[..],
            b"/etc",
            b"../x",
            b"a/../../x",
            b"a//b",
            b"a/./b",
            b"a/..",
            b"a\0b",
        ] {
            assert!(check_relative(bad).is_err(), "{:?}", show(bad));
        }
    }

    #[test]
    fn path_arguments_become_stored_paths() {
        assert_eq!(stored_path(Path::new("/etc/app/")).unwrap(), b"etc/app");
        assert_eq!(stored_path(Path::new("etc")).unwrap(), b"etc");
        assert!(stored_path(Path::new("/")).is_err());
        assert!(stored_path(Path::new("/etc/../x")).is_err());
    }

    #[test]
    fn ancestors_and_prefixes() {
        let a: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(a, [&b"a"[..], b"a/b"]);
        assert!(under(b"etc/app/x", b"etc/app"));
        assert!(under(b"etc/app", b"etc/app"));
        assert!(!under(b"etc/apple", b"etc/app"));
    }
}
