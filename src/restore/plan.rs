//! What to restore: the manifest checked as a whole, and the entries the selection covers.
//!
//! Nothing is written here. Every manifest path must be plain and relative, not a closing
//! file's, not one of vouch's working names, listed once, and not below an entry that is not a
//! directory, in either order; hard links must name an earlier file, symlinks have a target,
//! files a SHA-256. The selection then picks the entries below each wanted path and the
//! directories above them, and marks the files whose data the second pass stages.

use super::error::damaged;
use super::path::{ancestors, check_relative, show, under, working_name, working_name_refused};
use super::{Options, RestoreError};
use crate::pipeline::manifest::{Entry, EntryType, Manifest, MANIFEST_PATH, SUMS_PATH};
use std::collections::HashMap;

/// The manifest checked as a whole, with what to restore.
pub(super) struct Plan {
    /// Each entry's path, in the manifest's order.
    pub(super) paths: Vec<Vec<u8>>,
    /// Each entry's type.
    pub(super) kinds: Vec<EntryType>,
    /// Which entries are restored.
    pub(super) selected: Vec<bool>,
    /// Entries whose data must be staged: selected files, and files a selected hard link
    /// points to.
    pub(super) staged: Vec<bool>,
    /// Each path's entry.
    pub(super) index: HashMap<Vec<u8>, usize>,
    /// Special files the manifest lists as skipped, by path, with their type name.
    pub(super) skipped: HashMap<Vec<u8>, String>,
    /// Every path that has an entry below it, with the first such entry.
    pub(super) parents: HashMap<Vec<u8>, usize>,
}

impl Plan {
    /// Checks `manifest` entry by entry and selects what `wanted` names (everything when it is
    /// empty).
    pub(super) fn new(manifest: &Manifest, wanted: &[Vec<u8>]) -> Result<Plan, RestoreError> {
        let mut plan = Plan {
            paths: Vec::with_capacity(manifest.entries.len()),
            kinds: manifest.entries.iter().map(|e| e.kind).collect(),
            selected: Vec::new(),
            staged: Vec::new(),
            index: HashMap::new(),
            skipped: manifest
                .tail
                .skipped
                .iter()
                .map(|s| (s.path.as_bytes().to_vec(), s.kind.clone()))
                .collect(),
            parents: HashMap::new(),
        };
        for (i, e) in manifest.entries.iter().enumerate() {
            plan.add(manifest, i, e)?;
        }
        plan.select(wanted)?;
        plan.mark_staged(manifest);
        Ok(plan)
    }

    /// Checks entry `i` against itself and the entries before it, and adds it.
    fn add(&mut self, manifest: &Manifest, i: usize, e: &Entry) -> Result<(), RestoreError> {
        let p = e.path_bytes();
        check_name(e, &p)?;
        self.check_place(manifest, e, &p)?;
        if self.index.insert(p.clone(), i).is_some() {
            return Err(damaged(format!("{}: listed twice", e.path)));
        }
        for a in ancestors(&p) {
            self.parents.entry(a.to_vec()).or_insert(i);
        }
        self.check_kind(manifest, e)?;
        self.paths.push(p);
        Ok(())
    }

    /// Refuses an entry `e` at `p` that lies below an earlier entry that is not a directory,
    /// or that is not a directory and lies above an earlier entry.
    fn check_place(&self, manifest: &Manifest, e: &Entry, p: &[u8]) -> Result<(), RestoreError> {
        for a in ancestors(p) {
            match self.index.get(a) {
                Some(&j) if manifest.entries[j].kind != EntryType::Dir => {
                    return Err(damaged(format!(
                        "{}: refused, it would be written through {}, which is not a directory",
                        e.path,
                        show(a)
                    )));
                }
                _ => {}
            }
        }
        // The other order: `a/x` first, then a symlink or file `a`. Placing `a` would
        // have to remove the directory made for `a/x`.
        if e.kind != EntryType::Dir {
            if let Some(&j) = self.parents.get(p) {
                return Err(damaged(format!(
                    "{}: refused, a {} listed after {}, which lies below it",
                    e.path,
                    kind_name(e.kind),
                    manifest.entries[j].path
                )));
            }
        }
        Ok(())
    }

    /// Refuses a hard link that does not name an earlier file, a symlink without a target and
    /// a file without a SHA-256.
    fn check_kind(&self, manifest: &Manifest, e: &Entry) -> Result<(), RestoreError> {
        match e.kind {
            EntryType::Hardlink => {
                let link = e.link_bytes().unwrap_or_default();
                let target = check_relative(&link)
                    .ok()
                    .and_then(|_| self.index.get(link.as_slice()).copied())
                    .filter(|&j| manifest.entries[j].kind == EntryType::File);
                if target.is_none() {
                    return Err(damaged(format!(
                        "{}: refused, a hard link to {}, which is not an earlier file of the archive",
                        e.path,
                        show(&link)
                    )));
                }
            }
            EntryType::Symlink if e.link.is_none() => {
                return Err(damaged(format!("{}: a symlink without a target", e.path)));
            }
            EntryType::File if e.sha256.is_none() => {
                return Err(damaged(format!("{}: a file without a SHA-256", e.path)));
            }
            _ => {}
        }
        Ok(())
    }

    /// Selects the entries at and below each wanted path, and the directories above them;
    /// everything when nothing is wanted. A wanted path that matches nothing is refused.
    fn select(&mut self, wanted: &[Vec<u8>]) -> Result<(), RestoreError> {
        let paths = &self.paths;
        let mut selected = vec![wanted.is_empty(); paths.len()];
        for w in wanted {
            let mut hit = false;
            for (i, p) in paths.iter().enumerate() {
                if under(p, w) {
                    selected[i] = true;
                    hit = true;
                }
            }
            if !hit {
                return Err(RestoreError::Refused(format!(
                    "{}: no such path in the archive's manifest",
                    show(w)
                )));
            }
        }
        // The directories above what was chosen come back with their own metadata.
        if !wanted.is_empty() {
            for i in 0..paths.len() {
                if selected[i] {
                    for a in ancestors(&paths[i]) {
                        if let Some(&j) = self.index.get(a) {
                            selected[j] = true;
                        }
                    }
                }
            }
        }
        self.selected = selected;
        Ok(())
    }

    /// Marks the files whose data is staged: the selected ones, and those a selected hard
    /// link points to.
    fn mark_staged(&mut self, manifest: &Manifest) {
        let mut staged = vec![false; self.paths.len()];
        for (i, e) in manifest.entries.iter().enumerate() {
            if !self.selected[i] {
                continue;
            }
            match e.kind {
                EntryType::File => staged[i] = true,
                EntryType::Hardlink => {
                    let link = e.link_bytes().unwrap_or_default();
                    staged[self.index[&link]] = true;
                }
                _ => {}
            }
        }
        self.staged = staged;
    }

    /// Whether the restore puts a directory at `path` (so whatever is there may be replaced).
    pub(super) fn replaces_with_dir(&self, path: &[u8]) -> bool {
        self.index
            .get(path)
            .is_some_and(|&i| self.selected[i] && self.kinds[i] == EntryType::Dir)
    }

    /// Whether the selection `wanted` covers the special file at `path`.
    pub(super) fn wanted_special(&self, path: &[u8], wanted: &[Vec<u8>]) -> bool {
        wanted.is_empty() || wanted.iter().any(|w| under(path, w))
    }

    /// The special files the manifest lists as skipped that the selection covers: they can
    /// only come back with `--devices`, and the stream decides whether they are there.
    pub(super) fn special_paths(&self, opts: &Options) -> Vec<Vec<u8>> {
        self.skipped
            .keys()
            .filter(|p| opts.devices && self.wanted_special(p, &opts.paths))
            .cloned()
            .collect()
    }
}

/// Refuses an entry `e` at `p` whose path is not plain and relative, is a closing file's, or
/// is one of vouch's working names.
fn check_name(e: &Entry, p: &[u8]) -> Result<(), RestoreError> {
    check_relative(p).map_err(|why| damaged(format!("{}: refused, the path is {why}", e.path)))?;
    if p == MANIFEST_PATH.as_bytes() || p == SUMS_PATH.as_bytes() {
        return Err(damaged(format!("{}: listed as an archived entry", e.path)));
    }
    if working_name(p) {
        return Err(damaged(working_name_refused(&e.path)));
    }
    Ok(())
}

/// The manifest's word for an entry type.
fn kind_name(kind: EntryType) -> &'static str {
    match kind {
        EntryType::File => "file",
        EntryType::Dir => "directory",
        EntryType::Symlink => "symlink",
        EntryType::Hardlink => "hard link",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest of `(path, type)` entries, as craft.py would write it.
    fn manifest_of(entries: &[(&str, &str)]) -> Manifest {
        let entries: Vec<serde_json::Value> = entries
            .iter()
            .map(|(path, kind)| {
                let mut e = serde_json::json!({
                    "path": path, "type": kind, "mode": "0755", "uid": 0, "gid": 0,
                    "owner": "root:root", "size": 0, "mtime": 0,
                });
                match *kind {
                    "file" => e["sha256"] = "0".repeat(64).into(),
                    "symlink" => e["link"] = "elsewhere".into(),
                    _ => {}
                }
                e
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "format": "vouch-manifest", "version": 1, "run-id": "00", "host": "h",
            "name": "n", "created": "2020-01-01T00:00:00Z", "entries": entries,
            "skipped": [], "unreadable": [], "changed": [], "required": [],
        }))
        .unwrap()
    }

    #[test]
    fn a_non_directory_above_an_entry_is_refused_in_either_order() {
        for kind in ["symlink", "file"] {
            for order in [
                [("a", kind), ("a/x", "file")],
                [("a/x", "file"), ("a", kind)],
            ] {
                let err = Plan::new(&manifest_of(&order), &[]).err();
                assert!(
                    matches!(&err, Some(RestoreError::Damaged(m)) if m.contains("refused")),
                    "{order:?}: {err:?}"
                );
            }
        }
        let late = Plan::new(&manifest_of(&[("a/b/x", "file"), ("a", "symlink")]), &[]);
        assert!(
            matches!(&late, Err(RestoreError::Damaged(m)) if m.starts_with("a: refused, a symlink listed after a/b/x")),
            "{:?}",
            late.err()
        );
        // A directory may come after what is below it.
        let plan = Plan::new(&manifest_of(&[("a/x", "file"), ("a", "dir")]), &[]).unwrap();
        assert!(plan.replaces_with_dir(b"a"));
        assert!(!plan.replaces_with_dir(b"a/x"));
    }
}
