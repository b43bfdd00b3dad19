//! The destination, checked against the plan before anything is written.
//!
//! A missing destination is made (its parent must exist) and removed again when the restore
//! fails. In an existing one, without `--in-place` nothing the restore would create may
//! already be there, and no path may pass through a symlink (or a file) already in it, unless
//! the restore replaces that very path. A symlink that appears after these checks is not
//! followed either: the commit reaches every path through held directory descriptors
//! (`restore::at`).

use super::error::io_err;
use super::path::{ancestors, rel_path, show};
use super::plan::Plan;
use super::RestoreError;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The destination, before anything is written.
pub(super) struct Dest {
    /// The destination, canonical (its parent canonical, when it is missing).
    pub(super) dir: PathBuf,
    /// Created by this restore (removed again if it fails).
    pub(super) created: bool,
}

impl Dest {
    /// Looks at the destination `to`: an existing directory, or a missing one in an existing
    /// parent.
    pub(super) fn prepare(to: &Path) -> Result<Dest, RestoreError> {
        match fs::symlink_metadata(to) {
            Ok(_) => {
                let dir = fs::canonicalize(to).map_err(io_err(to))?;
                if !dir.is_dir() {
                    return Err(RestoreError::Refused(format!(
                        "{} exists and is not a directory",
                        to.display()
                    )));
                }
                Ok(Dest {
                    dir,
                    created: false,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = match to.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                    _ => PathBuf::from("."),
                };
                if !parent.is_dir() {
                    return Err(RestoreError::Refused(format!(
                        "{} does not exist and its parent {} is not a directory",
                        to.display(),
                        parent.display()
                    )));
                }
                let parent = fs::canonicalize(&parent).map_err(io_err(&parent))?;
                let name = to.file_name().ok_or_else(|| {
                    RestoreError::Refused(format!("{} is not a directory name", to.display()))
                })?;
                Ok(Dest {
                    dir: parent.join(name),
                    created: true,
                })
            }
            Err(e) => Err(io_err(to)(e)),
        }
    }

    /// Makes the destination (mode 0755) when this restore creates it.
    pub(super) fn make(&self) -> Result<(), RestoreError> {
        if self.created {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&self.dir)
                .map_err(io_err(&self.dir))?;
        }
        Ok(())
    }

    /// Removes the destination again when this restore created it (only if it is empty).
    pub(super) fn unmake(&self) {
        if self.created {
            let _ = fs::remove_dir(&self.dir);
        }
    }

    /// Checks the destination against the plan: nothing in the way (without `--in-place`), no
    /// path passing through a symlink or file that the restore does not itself replace.
    /// `specials` are the special files the restore may create besides the plan's entries.
    pub(super) fn check(
        &self,
        plan: &Plan,
        specials: &[Vec<u8>],
        in_place: bool,
    ) -> Result<(), RestoreError> {
        if self.created {
            return Ok(());
        }
        let replaced = |p: &[u8]| in_place && plan.find(p).is_some_and(|i| plan.selected[i]);
        // Ancestors already looked at: `true` when nothing below them needs looking at, because
        // they do not exist or the restore replaces them (`lstat` below a symlink would follow it).
        let mut seen: HashMap<Vec<u8>, bool> = HashMap::new();
        let chosen = (0..plan.len())
            .filter(|&i| plan.selected[i])
            .map(|i| plan.path(i))
            .chain(specials.iter().cloned());
        'paths: for p in chosen {
            let p = &p[..];
            for a in ancestors(p) {
                let stop = match seen.get(a) {
                    Some(&stop) => stop,
                    None => {
                        let stop = self.nothing_below(p, a, replaced(a))?;
                        seen.insert(a.to_vec(), stop);
                        stop
                    }
                };
                if stop {
                    continue 'paths;
                }
            }
            let full = rel_path(&self.dir, p);
            match fs::symlink_metadata(&full) {
                Ok(_) if !in_place => {
                    return Err(RestoreError::Refused(format!(
                        "{} already exists; restore into a new or empty directory, or pass --in-place to replace it",
                        full.display()
                    )));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&full)(e)),
            }
        }
        Ok(())
    }

    /// Looks at `a`, an ancestor of the chosen path `p`, in the destination: `true` when nothing
    /// below it needs looking at (it does not exist, or it is `replaced`), `false` for a
    /// directory; a symlink or file that stays is refused.
    fn nothing_below(&self, p: &[u8], a: &[u8], replaced: bool) -> Result<bool, RestoreError> {
        let full = rel_path(&self.dir, a);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => Ok(false),
            Ok(_) if replaced => Ok(true),
            Ok(m) => {
                let what = if m.file_type().is_symlink() {
                    "a symlink"
                } else {
                    "not a directory"
                };
                Err(RestoreError::Refused(format!(
                    "{}: refused, {} in the destination is {what}, and the restore will not write through it",
                    show(p),
                    full.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(io_err(&full)(e)),
        }
    }
}
