//! Walking the sources: every path in archive order, with its metadata, never following links.
//!
//! Order is deterministic (each directory's children sorted by name bytes, a directory before
//! its contents), so two runs over the same tree produce the same entry order. Symlinks are
//! reported as symlinks; only a source root that is itself a symlink is followed, so that
//! `sources = ["/srv/app"]` archives the application even when `/srv/app` points elsewhere.
//! With `one-file-system`, a directory on another device is reported but not entered (like
//! `tar --one-file-system`). Errors reading a directory are reported as items, not fatal: the
//! caller decides with the read-error policy.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Decides which paths are left out.
///
/// A pattern without `/` matches a file name at any depth (`*.tmp`); a pattern with `/` matches
/// the whole absolute path, where `*` stays within one component and `**` spans any number
/// (`**/node_modules`, `/var/lib/app/cache/**`).
#[derive(Debug, Clone)]
pub struct Exclude {
    names: GlobSet,
    paths: GlobSet,
}

impl Exclude {
    /// Compiles the patterns.
    pub fn new(patterns: &[String]) -> Result<Self, globset::Error> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            if p.contains('/') {
                paths.add(GlobBuilder::new(p).literal_separator(true).build()?);
            } else {
                names.add(Glob::new(p)?);
            }
        }
        Ok(Exclude {
            names: names.build()?,
            paths: paths.build()?,
        })
    }

    /// True when `path` (absolute) is excluded.
    pub fn matches(&self, path: &Path) -> bool {
        let name_hit = path
            .file_name()
            .is_some_and(|n| self.names.is_match(Path::new(n)));
        name_hit || self.paths.is_match(path)
    }
}

/// What the walk found at one path.
#[derive(Debug)]
pub enum Item {
    /// A file, directory or symlink to archive.
    Entry {
        /// Absolute path.
        path: PathBuf,
        /// Its `lstat` metadata (for a symlinked source root, the target's).
        meta: Metadata,
    },
    /// A socket, fifo or device: not archived, recorded.
    Special {
        /// Absolute path.
        path: PathBuf,
        /// `fifo`, `socket`, `char-device` or `block-device`.
        kind: &'static str,
    },
    /// The path could not be read (stat or directory listing failed).
    Error {
        /// Absolute path.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
}

/// A source root that does not exist or cannot be examined.
#[derive(Debug)]
pub struct MissingSource {
    /// The configured source.
    pub path: PathBuf,
    /// Why it cannot be walked.
    pub error: io::Error,
}

/// Walks sources in archive order.
pub struct Walker<'a> {
    sources: &'a [PathBuf],
    exclude: &'a Exclude,
    one_file_system: bool,
}

fn special_kind(meta: &Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_fifo() {
        Some("fifo")
    } else if ft.is_socket() {
        Some("socket")
    } else if ft.is_char_device() {
        Some("char-device")
    } else if ft.is_block_device() {
        Some("block-device")
    } else {
        None
    }
}

impl<'a> Walker<'a> {
    /// A walker over `sources` (absolute, normalized).
    pub fn new(sources: &'a [PathBuf], exclude: &'a Exclude, one_file_system: bool) -> Self {
        Walker {
            sources,
            exclude,
            one_file_system,
        }
    }

    /// Checks that every source root exists and can be examined.
    pub fn check_sources(&self) -> Result<(), MissingSource> {
        for s in self.sources {
            if let Err(error) = fs::metadata(s) {
                return Err(MissingSource {
                    path: s.clone(),
                    error,
                });
            }
        }
        Ok(())
    }

    /// Calls `visit` for every item, in archive order. Stops at the first error `visit` returns.
    pub fn walk<E>(&self, visit: &mut dyn FnMut(Item) -> Result<(), E>) -> Result<(), E>
    where
        E: From<MissingSource>,
    {
        for root in self.sources {
            let meta = fs::metadata(root).map_err(|error| MissingSource {
                path: root.clone(),
                error,
            })?;
            let root_dev = meta.dev();
            self.visit_path(root.clone(), meta, root_dev, visit)?;
        }
        Ok(())
    }

    fn visit_path<E>(
        &self,
        path: PathBuf,
        meta: Metadata,
        root_dev: u64,
        visit: &mut dyn FnMut(Item) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.exclude.matches(&path) {
            return Ok(());
        }
        if crate::restore::working_name(path.as_os_str().as_bytes()) {
            // A restore in progress here: its staging or moved-aside files are never archived
            // (the read-back and every restore refuse such names).
            log::warn!(
                "skipped {}: a file an unfinished vouch restore is working with",
                path.display()
            );
            return Ok(());
        }
        if let Some(kind) = special_kind(&meta) {
            return visit(Item::Special { path, kind });
        }
        let is_dir = meta.is_dir();
        let enter = is_dir && !(self.one_file_system && meta.dev() != root_dev);
        visit(Item::Entry {
            path: path.clone(),
            meta,
        })?;
        if !enter {
            return Ok(());
        }
        let mut names: Vec<OsString> = match fs::read_dir(&path) {
            Ok(rd) => {
                let mut names = Vec::new();
                for ent in rd {
                    match ent {
                        Ok(e) => names.push(e.file_name()),
                        Err(error) => return visit(Item::Error { path, error }),
                    }
                }
                names
            }
            Err(error) => return visit(Item::Error { path, error }),
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child = path.join(&name);
            match fs::symlink_metadata(&child) {
                Ok(m) => self.visit_path(child, m, root_dev, visit)?,
                Err(error) => visit(Item::Error { path: child, error })?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn collect(sources: &[PathBuf], exclude: &[&str]) -> Vec<String> {
        let ex = Exclude::new(&exclude.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let w = Walker::new(sources, &ex, false);
        let mut out = Vec::new();
        w.walk(&mut |item| -> Result<(), MissingSource> {
            match item {
                Item::Entry { path, .. } => out.push(format!("E {}", path.display())),
                Item::Special { path, kind } => out.push(format!("S {} {kind}", path.display())),
                Item::Error { path, .. } => out.push(format!("X {}", path.display())),
            }
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn a_restores_working_files_are_never_walked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/.vouch-restore-old.1.2"), "aside").unwrap();
        fs::write(root.join("d/.vouch-restored-notes"), "mine").unwrap();
        let r = root.display().to_string();
        let got = collect(std::slice::from_ref(&root), &[]);
        assert_eq!(
            got,
            vec![
                format!("E {r}"),
                format!("E {r}/d"),
                format!("E {r}/d/.vouch-restored-notes"),
            ]
        );
    }

    #[test]
    fn walks_in_sorted_order_with_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        fs::create_dir_all(root.join("b/node_modules/x")).unwrap();
        fs::create_dir_all(root.join("a")).unwrap();
        fs::write(root.join("a/keep.txt"), "k").unwrap();
        fs::write(root.join("a/drop.tmp"), "d").unwrap();
        fs::write(root.join("b/node_modules/x/f"), "f").unwrap();
        symlink("/nonexistent", root.join("c")).unwrap();
        let r = root.display().to_string();
        let got = collect(std::slice::from_ref(&root), &["*.tmp", "**/node_modules"]);
        assert_eq!(
            got,
            vec![
                format!("E {r}"),
                format!("E {r}/a"),
                format!("E {r}/a/keep.txt"),
                format!("E {r}/b"),
                format!("E {r}/c"),
            ]
        );
    }

    #[test]
    fn path_patterns_match_absolute_paths() {
        let ex = Exclude::new(&[
            "/var/lib/app/cache/**".to_string(),
            "/srv/*.log".to_string(),
        ])
        .unwrap();
        assert!(ex.matches(Path::new("/var/lib/app/cache/x/y")));
        assert!(ex.matches(Path::new("/srv/a.log")));
        assert!(!ex.matches(Path::new("/srv/sub/a.log")));
        assert!(!ex.matches(Path::new("/var/lib/app/data")));
    }

    #[test]
    fn missing_source_is_an_error() {
        let ex = Exclude::new(&[]).unwrap();
        let sources = vec![PathBuf::from("/nonexistent/vouch-test")];
        let w = Walker::new(&sources, &ex, false);
        assert!(w.check_sources().is_err());
        let r = w.walk(&mut |_| -> Result<(), MissingSource> { Ok(()) });
        assert!(r.is_err());
    }

    #[test]
    fn fifos_are_reported_not_archived() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let got = collect(&[dir.path().to_path_buf()], &[]);
        assert_eq!(got[1], format!("S {} fifo", fifo.display()));
    }
}
