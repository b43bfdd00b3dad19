//! The commit: staged files moved into place, and everything undone if a step fails.
//!
//! It starts only when the whole archive was read and every file matched. Entries are placed
//! in the manifest's order: the missing directories above each one made, whatever is in the
//! way renamed aside (into the staging directory's `old/`, or beside itself on another
//! filesystem; only `--in-place` lets anything be in the way, see `restore::dest`), files
//! renamed from the staging directory (copied across filesystems), hard links and symlinks
//! created; special files come last, then the directories' metadata, deepest first.
//! Every step goes through the destination's [`Tree`](super::at::Tree), is recorded in the
//! journal before it is taken, and is preceded by a look for an interrupting signal. When one
//! fails, [`Staging::rollback`] undoes the journal newest step first.

use super::at::{is_dir, Stat};
use super::error::io_err;
use super::journal::{Step, JOURNAL_NAME};
use super::path::{ancestors, beside, show, OLD_PREFIX};
use super::plan::Plan;
use super::progress::Meter;
use super::read::Listing;
use super::stage::{parse_mode, Special};
use super::staging::Staging;
use super::RestoreError;
use crate::pipeline::manifest::{Entry, EntryType};
use std::collections::HashMap;
use std::io;
use std::path::Path;

/// Moves everything into place, recording each step in the journal before taking it, and
/// checking between steps for an interrupting signal. Returns the number of entries placed.
pub(super) fn commit(
    listing: &Listing,
    plan: &Plan,
    specials: &[Special],
    staging: &mut Staging,
    progress: bool,
) -> Result<u64, RestoreError> {
    let total = plan.selected.iter().filter(|s| **s).count() + specials.len();
    // The staged data durable before the first rename, so that no crash can leave a file in
    // place whose data never reached the disk.
    staging.sync_filesystem()?;
    let mut meter = Meter::entries(progress, "moving into place", total as u64);
    let mut placed = 0u64;
    let mut links = Links::default();
    // The selected directories' metadata, set at the end.
    let mut dirs = Vec::new();
    for (i, e) in listing.entries()?.enumerate() {
        let e = e.map_err(|e| listing.unreadable(e))?;
        if !plan.selected[i] {
            if plan.staged[i] {
                links.unselected.insert(i, e);
            }
            continue;
        }
        staging.interrupted()?;
        let rel: &[u8] = &plan.path(i);
        staging.parents(rel, plan)?;
        staging.place_entry(plan, i, &e, &mut links)?;
        if e.kind == EntryType::Dir {
            dirs.push(DirMeta::of(i, &e)?);
        }
        placed += 1;
        meter.update(placed);
        injected_failure(placed, &staging.full(rel))?;
        crate::host::fault::step("restore-commit", placed);
    }
    for s in specials {
        staging.interrupted()?;
        staging.place_special(s, plan)?;
        placed += 1;
        meter.update(placed);
    }
    staging.set_dir_meta(&dirs, plan)?;
    // And the renames and metadata durable before the restore counts as done.
    staging.sync_filesystem()?;
    staging
        .journal
        .mark_complete()
        .map_err(io_err(&staging.dir.join(JOURNAL_NAME)))?;
    meter.finish(placed);
    Ok(placed)
}

/// For the test suite: `VOUCH_TEST_FAULT=restore-fail-at:N` makes the commit fail with an I/O
/// error once N entries are in place, so that the rollback can be observed.
fn injected_failure(placed: u64, path: &Path) -> Result<(), RestoreError> {
    let at = crate::host::fault::fault()
        .and_then(|f| f.strip_prefix("restore-fail-at:")?.parse::<u64>().ok());
    if at == Some(placed) {
        return Err(RestoreError::Io {
            path: path.to_owned(),
            error: io::Error::from_raw_os_error(libc::EIO),
        });
    }
    Ok(())
}

/// What hard links to files that were not selected need: the staged data of such a file goes
/// to the first hard link to it, which the later ones then link to.
#[derive(Default)]
struct Links {
    /// The files that selected hard links point to but that are not selected themselves.
    unselected: HashMap<usize, Entry>,
    /// Where the data of each of them went.
    moved: HashMap<usize, Vec<u8>>,
}

/// A selected directory's metadata, kept for the end of the commit.
struct DirMeta {
    entry: usize,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
}

impl DirMeta {
    fn of(entry: usize, e: &Entry) -> Result<DirMeta, RestoreError> {
        Ok(DirMeta {
            entry,
            mode: parse_mode(e)?,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
        })
    }
}

impl Staging {
    /// Places the manifest entry `i`, `e`, at its path, whose parents are in place. A hard
    /// link links to its file where that was placed: its own path when it is selected, else
    /// where `links` says the first hard link to it took its staged data.
    fn place_entry(
        &mut self,
        plan: &Plan,
        i: usize,
        e: &Entry,
        links: &mut Links,
    ) -> Result<(), RestoreError> {
        let rel: &[u8] = &plan.path(i);
        let err = self.io(rel);
        match e.kind {
            EntryType::Dir => match self.lstat(rel)? {
                Some(m) if is_dir(&m) => self.keep_dir_meta(rel, &m)?,
                _ => {
                    self.clear(rel)?;
                    self.record(Step::Created(rel.to_vec()))?;
                    self.mkdir(rel, 0o700)?;
                }
            },
            EntryType::File => {
                self.clear(rel)?;
                self.record(Step::Created(rel.to_vec()))?;
                self.place(&self.data(i), rel, e)?;
            }
            EntryType::Hardlink => {
                let j = plan.link_target(i).ok_or_else(|| {
                    super::error::damaged(format!("{}: a hard link to no file", e.path))
                })?;
                self.clear(rel)?;
                self.record(Step::Created(rel.to_vec()))?;
                let first = match plan.selected[j] {
                    true => Some(plan.path(j)),
                    false => links.moved.get(&j).cloned(),
                };
                match (first, links.unselected.get(&j)) {
                    (Some(first), _) => self.tree.hard_link(&first, rel).map_err(err)?,
                    (None, Some(file)) => {
                        self.place(&self.data(j), rel, file)?;
                        links.moved.insert(j, rel.to_vec());
                    }
                    (None, None) => {
                        return Err(super::error::damaged(format!(
                            "{}: a hard link to a file that was not staged",
                            e.path
                        )))
                    }
                }
            }
            EntryType::Symlink => {
                let target = e.link_bytes().unwrap_or_default();
                self.clear(rel)?;
                self.record(Step::Created(rel.to_vec()))?;
                self.tree.symlink(&target, rel).map_err(err)?;
                self.set_meta(rel, None, e.uid, e.gid, e.mtime)?;
            }
        }
        Ok(())
    }

    /// Creates the special file `s`, with the directories above it.
    fn place_special(&mut self, s: &Special, plan: &Plan) -> Result<(), RestoreError> {
        self.parents(&s.path, plan)?;
        self.clear(&s.path)?;
        self.record(Step::Created(s.path.clone()))?;
        let err = self.io(&s.path);
        self.tree.mknod(&s.path, s.kind, s.rdev).map_err(err)?;
        self.set_meta(&s.path, Some(s.mode), s.uid, s.gid, s.mtime)
    }

    /// Gives the selected directories their metadata: last, deepest first, so that placing
    /// their contents does not change the times set here.
    fn set_dir_meta(&mut self, dirs: &[DirMeta], plan: &Plan) -> Result<(), RestoreError> {
        for d in dirs.iter().rev() {
            self.interrupted()?;
            self.set_meta(&plan.path(d.entry), Some(d.mode), d.uid, d.gid, d.mtime)?;
        }
        Ok(())
    }

    /// Records the metadata of the existing directory `rel` (lstat'ed as `m`), once, before
    /// anything in or about it changes, so that a rollback gives it back.
    fn keep_dir_meta(&mut self, rel: &[u8], m: &Stat) -> Result<(), RestoreError> {
        if !self.kept_meta.insert(rel.to_vec()) {
            return Ok(());
        }
        self.record(Step::DirMeta {
            path: rel.to_vec(),
            mode: m.st_mode & 0o7777,
            uid: m.st_uid,
            gid: m.st_gid,
            mtime: m.st_mtime,
            mtime_nsec: m.st_mtime_nsec,
        })
    }

    /// Fails when `rel`, a directory this commit made, is no longer one: someone else
    /// changed the destination while the restore ran, and nothing of it is replaced.
    fn untouched(&mut self, rel: &[u8], now: Option<&Stat>) -> Result<(), RestoreError> {
        if self.made.contains(rel) && !now.is_some_and(is_dir) {
            return Err(self.io(rel)(io::Error::other(
                "the directory this restore made there was replaced while it ran",
            )));
        }
        Ok(())
    }

    /// Makes the directory `rel` (already journaled as created).
    fn mkdir(&mut self, rel: &[u8], mode: u32) -> Result<(), RestoreError> {
        self.kept_meta.insert(rel.to_vec());
        let err = self.io(rel);
        self.tree.mkdir(rel, mode).map_err(err)?;
        self.made.insert(rel.to_vec());
        Ok(())
    }

    /// Renames whatever is at `rel` aside (with `--in-place`), checking that what was moved is
    /// what was looked at.
    fn clear(&mut self, rel: &[u8]) -> Result<(), RestoreError> {
        let Some(before) = self.lstat(rel)? else {
            return Ok(());
        };
        self.untouched(rel, Some(&before))?;
        let aside = self.move_aside(rel)?;
        match self.lstat(&aside)? {
            Some(moved) if (moved.st_dev, moved.st_ino) == (before.st_dev, before.st_ino) => {
                self.replaced += 1;
                Ok(())
            }
            // Swapped between the look and the rename: the rollback puts it back.
            _ => Err(self.io(rel)(io::Error::other(
                "it was replaced while the restore ran",
            ))),
        }
    }

    /// Renames `rel` into the staging directory's `old/`, or beside itself across
    /// filesystems, returning where it went.
    fn move_aside(&mut self, rel: &[u8]) -> Result<Vec<u8>, RestoreError> {
        self.aside_count += 1;
        let aside = format!("{}/old/{}", show(&self.name), self.aside_count).into_bytes();
        self.record(Step::Aside {
            orig: rel.to_vec(),
            aside: aside.clone(),
        })?;
        if let Err(e) = self.tree.rename(rel, &aside) {
            if e.raw_os_error() != Some(libc::EXDEV) {
                return Err(self.io(rel)(e));
            }
            // Another filesystem is mounted inside the destination: keep the replaced path
            // beside itself instead.
            let aside = beside(
                rel,
                &format!("{OLD_PREFIX}{}.{}", std::process::id(), self.aside_count),
            );
            self.record(Step::Aside {
                orig: rel.to_vec(),
                aside: aside.clone(),
            })?;
            let err = self.io(rel);
            self.tree.rename(rel, &aside).map_err(err)?;
            return Ok(aside);
        }
        Ok(aside)
    }

    /// Moves staged data to `rel` (already journaled as created). Across filesystems (a mount
    /// point inside the destination), it is copied to a temporary name beside it, synced,
    /// given its metadata, and renamed.
    fn place(&mut self, staged: &[u8], rel: &[u8], e: &Entry) -> Result<(), RestoreError> {
        match self.tree.rename(staged, rel) {
            Ok(()) => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EXDEV) => {}
            Err(err) => return Err(self.io(rel)(err)),
        }
        let temp = beside(rel, &format!("{OLD_PREFIX}{}.new", std::process::id()));
        self.record(Step::Created(temp.clone()))?;
        let tree = &mut self.tree;
        let copied = (|| -> io::Result<()> {
            let mut from = tree.open_file(staged)?;
            let mut to = tree.create_file(&temp)?;
            io::copy(&mut from, &mut to)?;
            to.sync_all()?;
            drop(to);
            let mode = u32::from_str_radix(&e.mode, 8).map_err(io::Error::other)?;
            tree.set_meta(&temp, Some(mode), (e.uid, e.gid), (e.mtime, 0))?;
            tree.rename(&temp, rel)
        })();
        if let Err(err) = copied {
            let _ = self.tree.remove(&temp, false);
            return Err(self.io(rel)(err));
        }
        Ok(())
    }

    /// Makes the missing directories above `rel` and checks that each existing one is a real
    /// directory. With `--in-place`, a non-directory in the way of a directory the archive
    /// lists later than what is below it is replaced here already.
    fn parents(&mut self, rel: &[u8], plan: &Plan) -> Result<(), RestoreError> {
        for a in ancestors(rel) {
            let now = self.lstat(a)?;
            self.untouched(a, now.as_ref())?;
            let mode = match now {
                // An archived directory listed after what is below it: its time changes as
                // entries are placed in it, so its metadata is kept now.
                Some(m) if is_dir(&m) && plan.replaces_with_dir(a) => {
                    self.keep_dir_meta(a, &m)?;
                    continue;
                }
                Some(m) if is_dir(&m) => continue,
                Some(_) if plan.replaces_with_dir(a) => {
                    self.clear(a)?;
                    0o700
                }
                Some(_) => {
                    return Err(RestoreError::Refused(format!(
                        "{}: refused, {} is not a directory",
                        show(rel),
                        self.full(a).display()
                    )))
                }
                None => 0o755,
            };
            self.record(Step::Created(a.to_vec()))?;
            self.mkdir(a, mode)?;
        }
        Ok(())
    }

    /// Undoes the journal, newest step first. False when something could not be undone: the
    /// staging directory then holds what was not put back and must be kept.
    pub(super) fn rollback(&mut self) -> bool {
        self.journal.rollback(&mut self.tree, &self.dir).failed == 0
    }
}
