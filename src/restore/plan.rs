//! What to restore: the manifest checked as a whole, and the entries the selection covers.
//!
//! Nothing is written here. Every manifest path must be plain and relative, not a closing
//! file's, not one of vouch's working names, listed once, and not below an entry that is not a
//! directory, in either order; hard links must name an earlier file, symlinks have a target,
//! files a SHA-256. The selection then picks the entries below each wanted path and the
//! directories above them, and marks the files whose data the second pass stages.

use super::error::damaged;
use super::path::{ancestors, check_relative, show, under, working_name, working_name_refused};
use super::read::Listing;
use super::{Options, RestoreError};
use crate::pipeline::manifest::{Entry, EntryType, MANIFEST_PATH, SUMS_PATH};
use std::collections::hash_map::{Entry as Slot, RandomState};
use std::collections::HashMap;
use std::hash::BuildHasher;

/// No entry: the end of a chain in [`Keys`].
const NONE: u32 = u32::MAX;

/// Every 16th path is stored whole in [`Names`]; those between, after what they share with the
/// path before them.
const RESTART: usize = 16;

/// Every entry's path, one after the other in one buffer: the only copy of the paths a
/// restore holds. Paths in a manifest come directory by directory, so each is stored as the
/// length of the start it shares with the one before (a LEB128 number) and the rest of it;
/// every [`RESTART`]th is stored whole, so that reading any path decodes at most that many.
#[derive(Default)]
struct Names {
    bytes: Vec<u8>,
    /// Where each entry's record ends in `bytes`.
    ends: Vec<u32>,
    /// The path pushed last.
    last: Vec<u8>,
}

impl Names {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Entry `i`'s record: how much it shares with the path before, and the rest.
    fn record(&self, i: usize) -> (usize, &[u8]) {
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        let rec = &self.bytes[start..self.ends[i] as usize];
        let (mut shared, mut at) = (0usize, 0);
        while let Some(&b) = rec.get(at) {
            shared |= usize::from(b & 0x7f) << (7 * at);
            at += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        (shared, &rec[at..])
    }

    /// Entry `i`'s path, rebuilt from the last path stored whole.
    fn path(&self, i: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for j in i - i % RESTART..=i {
            let (shared, rest) = self.record(j);
            out.truncate(shared);
            out.extend_from_slice(rest);
        }
        out
    }

    /// Whether the first `len` bytes of entry `i`'s path are `key`.
    fn prefix_is(&self, i: u32, len: u32, key: &[u8]) -> bool {
        if key.len() != len as usize {
            return false;
        }
        let path = self.path(i as usize);
        path.get(..key.len()) == Some(key)
    }

    /// Adds the next entry's path; false when the buffer would pass 4 GiB.
    fn push(&mut self, p: &[u8]) -> bool {
        let shared = match self.len() % RESTART {
            0 => 0,
            _ => p.iter().zip(&self.last).take_while(|(a, b)| a == b).count(),
        };
        let start = self.bytes.len();
        let mut n = shared;
        loop {
            let more = n >> 7 != 0;
            self.bytes
                .push((n & 0x7f) as u8 | if more { 0x80 } else { 0 });
            n >>= 7;
            if !more {
                break;
            }
        }
        self.bytes.extend_from_slice(&p[shared..]);
        let Some(end) = u32::try_from(self.bytes.len()).ok().filter(|&e| e != NONE) else {
            self.bytes.truncate(start);
            return false;
        };
        self.ends.push(end);
        self.last.clear();
        self.last.extend_from_slice(p);
        true
    }
}

/// A set of paths that are each the start of an entry's path in [`Names`] (the path itself, or
/// one of its ancestors), kept as that entry and a length rather than as a copy, and found
/// through a hash of their bytes (keys of a random hasher, so no archive can choose
/// collisions). Paths that hash alike are chained, and compared byte for byte.
struct Keys {
    heads: HashMap<u64, u32>,
    /// Per key: its entry, its length, and the next key of the same hash.
    slots: Vec<(u32, u32, u32)>,
    hasher: RandomState,
    /// The bits of the hash kept: all of them but in tests, which make paths collide.
    mask: u64,
}

impl Default for Keys {
    fn default() -> Keys {
        Keys {
            heads: HashMap::new(),
            slots: Vec::new(),
            hasher: RandomState::new(),
            mask: u64::MAX,
        }
    }
}

impl Keys {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key) & self.mask
    }

    /// The entry of the key `key`, if it is one.
    fn get(&self, names: &Names, key: &[u8]) -> Option<usize> {
        let mut at = *self.heads.get(&self.hash(key))?;
        while at != NONE {
            let (i, len, next) = self.slots[at as usize];
            if names.prefix_is(i, len, key) {
                return Some(i as usize);
            }
            at = next;
        }
        None
    }

    /// Adds `key`, which is entry `i`'s path or a start of it, as a key; false when it already
    /// is one.
    fn insert(&mut self, names: &Names, i: u32, key: &[u8]) -> bool {
        debug_assert!(names.path(i as usize).starts_with(key));
        let len = key.len() as u32;
        if self.get(names, key).is_some() {
            return false;
        }
        let slot = self.slots.len() as u32;
        let next = match self.heads.entry(self.hash(key)) {
            Slot::Occupied(mut o) => std::mem::replace(o.get_mut(), slot),
            Slot::Vacant(v) => {
                v.insert(slot);
                NONE
            }
        };
        self.slots.push((i, len, next));
        true
    }
}

/// The manifest checked as a whole, with what to restore. Each path is held once, in
/// [`Names`]; the lookups by path refer to it.
pub(super) struct Plan {
    names: Names,
    /// Each entry's type.
    pub(super) kinds: Vec<EntryType>,
    /// Which entries are restored.
    pub(super) selected: Vec<bool>,
    /// Entries whose data must be staged: selected files, and files a selected hard link
    /// points to.
    pub(super) staged: Vec<bool>,
    /// Each path's entry.
    index: Keys,
    /// Every path that has an entry below it, with the first such entry.
    parents: Keys,
    /// Each hard link's entry, with the entry of the file it links to.
    links: HashMap<u32, u32>,
    /// Special files the manifest lists as skipped, by path, with their type name.
    pub(super) skipped: HashMap<Vec<u8>, String>,
}

impl Plan {
    /// Checks the entries of `listing` one by one and selects what `wanted` names (everything
    /// when it is empty).
    pub(super) fn new(listing: &Listing, wanted: &[Vec<u8>]) -> Result<Plan, RestoreError> {
        let mut plan = Plan {
            names: Names::default(),
            kinds: Vec::new(),
            selected: Vec::new(),
            staged: Vec::new(),
            index: Keys::default(),
            parents: Keys::default(),
            links: HashMap::new(),
            skipped: listing
                .tail
                .skipped
                .iter()
                .map(|s| (s.path.as_bytes().to_vec(), s.kind.clone()))
                .collect(),
        };
        for e in listing.entries()? {
            plan.add(&e.map_err(|e| listing.unreadable(e))?)?;
        }
        plan.names.bytes.shrink_to_fit();
        plan.select(wanted)?;
        plan.mark_staged();
        Ok(plan)
    }

    /// The number of entries.
    pub(super) fn len(&self) -> usize {
        self.names.len()
    }

    /// Entry `i`'s path.
    pub(super) fn path(&self, i: usize) -> Vec<u8> {
        self.names.path(i)
    }

    /// The entry at `path`.
    pub(super) fn find(&self, path: &[u8]) -> Option<usize> {
        self.index.get(&self.names, path)
    }

    /// Whether some entry lies below `path`.
    pub(super) fn has_below(&self, path: &[u8]) -> bool {
        self.parents.get(&self.names, path).is_some()
    }

    /// The file the hard link `i` links to.
    pub(super) fn link_target(&self, i: usize) -> Option<usize> {
        let i = u32::try_from(i).ok()?;
        self.links.get(&i).map(|&j| j as usize)
    }

    /// Checks the next entry, `e`, against itself and the entries before it, and adds it.
    fn add(&mut self, e: &Entry) -> Result<(), RestoreError> {
        let p = e.path_bytes();
        check_name(e, &p)?;
        self.check_place(e, &p)?;
        let i = self.names.len() as u32;
        if !self.names.push(&p) || i == NONE - 1 {
            return Err(damaged(
                "the manifest lists more entries, or longer paths, than a restore can hold",
            ));
        }
        self.kinds.push(e.kind);
        if !self.index.insert(&self.names, i, &p) {
            return Err(damaged(format!("{}: listed twice", e.path)));
        }
        for a in ancestors(&p) {
            self.parents.insert(&self.names, i, a);
        }
        self.check_kind(i, e)
    }

    /// Refuses an entry `e` at `p` that lies below an earlier entry that is not a directory,
    /// or that is not a directory and lies above an earlier entry.
    fn check_place(&self, e: &Entry, p: &[u8]) -> Result<(), RestoreError> {
        for a in ancestors(p) {
            match self.find(a) {
                Some(j) if self.kinds[j] != EntryType::Dir => {
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
            if let Some(j) = self.parents.get(&self.names, p) {
                return Err(damaged(format!(
                    "{}: refused, a {} listed after {}, which lies below it",
                    e.path,
                    kind_name(e.kind),
                    show(&self.path(j))
                )));
            }
        }
        Ok(())
    }

    /// Refuses a hard link that does not name an earlier file, a symlink without a target and
    /// a file without a SHA-256; records the file a hard link, entry `i`, links to.
    fn check_kind(&mut self, i: u32, e: &Entry) -> Result<(), RestoreError> {
        match e.kind {
            EntryType::Hardlink => {
                let link = e.link_bytes().unwrap_or_default();
                let target = check_relative(&link)
                    .ok()
                    .and_then(|_| self.find(&link))
                    .filter(|&j| self.kinds[j] == EntryType::File);
                let Some(j) = target else {
                    return Err(damaged(format!(
                        "{}: refused, a hard link to {}, which is not an earlier file of the archive",
                        e.path,
                        show(&link)
                    )));
                };
                self.links.insert(i, j as u32);
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
        let n = self.len();
        let mut selected = vec![wanted.is_empty(); n];
        for w in wanted {
            let mut hit = false;
            for (i, chosen) in selected.iter_mut().enumerate() {
                if under(&self.path(i), w) {
                    *chosen = true;
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
            for i in 0..n {
                if selected[i] {
                    for a in ancestors(&self.path(i)) {
                        if let Some(j) = self.find(a) {
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
    fn mark_staged(&mut self) {
        let mut staged = vec![false; self.len()];
        for (i, kind) in self.kinds.iter().enumerate() {
            if !self.selected[i] {
                continue;
            }
            match kind {
                EntryType::File => staged[i] = true,
                EntryType::Hardlink => {
                    if let Some(j) = self.link_target(i) {
                        staged[j] = true;
                    }
                }
                _ => {}
            }
        }
        self.staged = staged;
    }

    /// Whether the restore puts a directory at `path` (so whatever is there may be replaced).
    pub(super) fn replaces_with_dir(&self, path: &[u8]) -> bool {
        self.find(path)
            .is_some_and(|i| self.selected[i] && self.kinds[i] == EntryType::Dir)
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
    fn manifest_of(entries: &[(&str, &str)]) -> Listing {
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
        let text = serde_json::to_vec(&serde_json::json!({
            "format": "vouch-manifest", "version": 1, "run-id": "00", "host": "h",
            "name": "n", "created": "2020-01-01T00:00:00Z", "entries": entries,
            "skipped": [], "unreadable": [], "changed": [], "required": [],
        }))
        .unwrap();
        Listing::read(&text[..], &std::env::temp_dir()).unwrap()
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

    #[test]
    fn paths_are_found_through_their_hash_even_when_hashes_collide() {
        for mask in [u64::MAX, 0x7] {
            let mut names = Names::default();
            let mut keys = Keys {
                mask,
                ..Keys::default()
            };
            let paths: Vec<Vec<u8>> = (0..500)
                .map(|i| format!("d{}/f{i}", i % 7).into_bytes())
                .collect();
            for (i, p) in paths.iter().enumerate() {
                assert!(names.push(p));
                assert!(keys.insert(&names, i as u32, p));
                // An ancestor is a key of its own, held as the start of the path.
                keys.insert(&names, i as u32, &p[..2]);
            }
            for (i, p) in paths.iter().enumerate() {
                assert_eq!(&names.path(i), p);
                assert_eq!(keys.get(&names, p), Some(i), "{mask:x}");
                assert!(!keys.insert(&names, i as u32, p));
            }
            // The first entry below each directory is the one it keeps.
            for d in 0..7 {
                assert_eq!(keys.get(&names, format!("d{d}").as_bytes()), Some(d));
            }
            assert_eq!(keys.get(&names, b"d1/f2"), None);
            assert_eq!(keys.get(&names, b"d1/f"), None);
            assert_eq!(keys.get(&names, b"d7"), None);
        }
    }

    #[test]
    fn names_give_back_every_path_whatever_it_shares_with_the_one_before() {
        let long = "d".repeat(300);
        let mut paths: Vec<Vec<u8>> = vec![b"a".to_vec(), b"a/b".to_vec(), b"ab".to_vec()];
        for i in 0..40 {
            // Shares more than 127 bytes (a two-byte length), then less, then nothing.
            paths.push(format!("{long}/f{i}").into_bytes());
            paths.push(format!("{long}/f{i}/g").into_bytes());
            paths.push(vec![b'x', 0xff, i]);
        }
        let mut names = Names::default();
        for p in &paths {
            assert!(names.push(p));
        }
        assert_eq!(names.len(), paths.len());
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(&names.path(i), p, "entry {i}");
            assert!(names.prefix_is(i as u32, 1, &p[..1]));
            assert!(!names.prefix_is(i as u32, 1, b"q"));
        }
    }

    #[test]
    fn the_plan_holds_each_path_once_and_finds_every_entry() {
        let mut entries = vec![("a", "dir")];
        let files: Vec<String> = (0..300).map(|i| format!("a/f{i}")).collect();
        entries.extend(files.iter().map(|f| (f.as_str(), "file")));
        let plan = Plan::new(&manifest_of(&entries), &[b"a/f7".to_vec()]).unwrap();
        assert_eq!(plan.len(), 301);
        // Stored after what they share with the path before: `a/f`, here.
        let whole: usize = entries.iter().map(|e| e.0.len()).sum();
        assert!(
            plan.names.bytes.len() < whole / 2,
            "{}",
            plan.names.bytes.len()
        );
        for (i, (p, _)) in entries.iter().enumerate() {
            assert_eq!(plan.path(i), p.as_bytes());
            assert_eq!(plan.find(p.as_bytes()), Some(i));
        }
        assert!(plan.has_below(b"a") && !plan.has_below(b"a/f1"));
        let chosen: Vec<usize> = (0..plan.len()).filter(|&i| plan.selected[i]).collect();
        assert_eq!(chosen, [0, 8]);
        assert_eq!(plan.staged.iter().filter(|s| **s).count(), 1);
        let twice = Plan::new(
            &manifest_of(&[("a", "dir"), ("a/x", "file"), ("a/x", "file")]),
            &[],
        );
        assert!(
            matches!(&twice, Err(RestoreError::Damaged(m)) if m == "a/x: listed twice"),
            "{:?}",
            twice.err()
        );
    }
}
