//! Restoring an archive: safe extraction, every file checked against the manifest before it is
//! moved into place.
//!
//! What a restore promises: nothing is written into the destination before the manifest has
//! been checked as a whole; nothing is moved into place before every file of the archive has
//! matched its SHA-256; no name in the archive makes the restore write outside the destination
//! or through a symlink; and a restore that fails or is interrupted undoes what it changed, so
//! that the destination ends as it was.
//!
//! The steps, in order:
//!
//! 1. Recovery (`journal`, `record`). Staging directories that interrupted restores left in the
//!    destination are rolled back before anything else, provided the record kept outside the
//!    destination lists the journal's token for that directory.
//! 2. The first pass (`read`). The archive is decrypted to its end for the two files that close
//!    it, `.vouch/manifest.json` and `.vouch/SHA256SUMS`, and its ciphertext is hashed (compared
//!    with the receipt when there is one). Nothing is written during that pass. The manifest
//!    is spooled to disk and read back one entry at a time, never held whole in memory.
//! 3. The plan (`plan`). The manifest is checked as a whole. Every path must be relative and
//!    plain (no `/` at the start, no `.` or `..` component, no empty component), appear once,
//!    and not lie below an entry that is not a directory (a symlink `a` followed by a file `a/x`
//!    is refused, since writing `a/x` would follow the link, and so is `a/x` followed by a
//!    symlink or file `a`, since placing `a` would replace the directory just made for `a/x`; a
//!    directory may come after what is below it); hard links must name an earlier file of the
//!    archive. The selection picks what to restore.
//! 4. The destination (`dest`). Without `--in-place` nothing the restore would create may
//!    already exist there, and no path may pass through a symlink (or a file) already in it.
//! 5. The second pass (`staging`, `stage`). A staging directory is made inside the destination
//!    and recorded outside it. Each tar entry is compared with the manifest in order (path,
//!    type, mode, size, link target) and the data of each file is written into the staging
//!    directory, one flat file per entry, hashed as it is written. Owner (as root), mode and
//!    modification time are set on the staged file. The names in the archive are never used to
//!    open anything during this pass, so a hostile archive can write nothing but numbered files
//!    in the staging directory.
//! 6. The commit (`commit`). Only when the whole archive has been read, every file matched its
//!    SHA-256 and the ciphertext hashed the same as in the first pass does the commit start:
//!    directories are made, staged files renamed into place, symlinks and hard links created,
//!    every step taken relative to directory descriptors opened one component at a time
//!    without following a symlink (`at`), so that a directory swapped for a symlink while the
//!    restore runs is refused rather than followed. With `--in-place`, whatever is in the way is
//!    first renamed into the staging directory. Every step is recorded in a journal (in memory,
//!    and in a file in the staging directory) before it is taken; if one fails, the journal is
//!    undone in reverse (created paths removed, replaced ones renamed back), so the destination
//!    ends as it was.
//! 7. The end. The staging directory (and with it the replaced files) is removed, with its
//!    record.
//!
//! While the restore writes, SIGINT, SIGTERM and SIGHUP are held back (`crate::systemd::signals`) and
//! looked for between steps: one that arrived makes the restore undo itself and then die by
//! it. A restore killed outright leaves its staging directory with the journal file, which the
//! next restore into the same destination rolls back before anything else (see
//! `restore::journal`), provided the record kept outside the destination lists the journal's
//! token for that directory (`restore::record`).
//!
//! No entry may use vouch's own working names ([`working_name`]); extended tar headers and the
//! closing files are read only up to a cap (`tarstream::HeaderCap`,
//! `manifest::read_closing_file`), so a small archive cannot make a restore hold gigabytes.
//!
//! Device nodes and FIFOs are never in archives vouch writes (the manifest lists them as
//! skipped). An archive holding one is refused, unless `--devices` is given, the process runs as
//! root, and the manifest lists the entry among its skipped special files.
//!
//! `vouch verify --restore-to` reads a restored tree back and compares it with the manifest
//! ([`check_tree`], in `readback`).

mod at; // changes under the destination through held directory descriptors, no symlink followed
mod commit; // staged files moved into place, each step journaled first; the rollback
mod dest; // the destination checked against the plan before anything is written
pub mod dump; // `vouch restore --dump`: one dump extracted and loaded into a database
mod error; // why a restore failed
mod journal; // the commit journal, and recovery from one an interrupted restore left
mod path; // stored paths: which are valid, vouch's working names, byte-path helpers
mod plan; // the manifest checked as a whole, and what the selection restores
mod progress; // the progress line on a terminal
mod read; // the archive's stream, and the first pass, which reads the manifest
mod readback; // a restored tree read back from disk and compared with the manifest
mod record; // the record of staging directories, kept outside any destination
mod stage; // the second pass: entries compared with the manifest, file data staged
mod staging; // the staging directory, and what a restore holds while it writes

pub use error::RestoreError;
pub use path::{stored_path, working_name, working_name_refused, OLD_PREFIX, STAGING_PREFIX};
pub use read::{Listing, Opener};
pub use readback::check_tree;

use crate::config::Compression;
use crate::pipeline::crypt::Identity;
use crate::systemd::signals;
use at::Tree;
use commit::commit;
use dest::Dest;
use error::io_err;
use plan::Plan;
use staging::Staging;
use std::path::PathBuf;

/// What to restore and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The destination directory (created when missing; its parent must exist).
    pub to: PathBuf,
    /// Stored paths to restore, with what is under them; empty: everything.
    pub paths: Vec<Vec<u8>>,
    /// Replace what is already in the destination.
    pub in_place: bool,
    /// Create device nodes and FIFOs (root only).
    pub devices: bool,
    /// Print progress on stderr (only when it is a terminal).
    pub progress: bool,
    /// The compression the archive's name says (its first bytes must agree).
    pub compression: Compression,
    /// Where the manifest is spooled while the restore runs (empty: the system's temporary
    /// directory). It is held there, on disk, rather than in memory.
    pub spool: PathBuf,
}

/// What a restore did.
pub struct Restored {
    /// The destination, canonical.
    pub dir: PathBuf,
    /// The manifest of the archive.
    pub listing: Listing,
    /// Its entries' paths, and which of them were restored.
    plan: Plan,
    /// Entries placed.
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Paths that existed and were replaced (`--in-place`).
    pub replaced: u64,
}

/// Whether the process runs as root: only then are owners set, and device nodes made.
fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Restores the archive read by `open` according to `opts`. `receipt` gives the size and
/// SHA-256 the archive must have, when it has a receipt.
///
/// Staging directories that interrupted restores left in the destination are dealt with
/// first (see `restore::journal`). From the moment the restore writes into the destination until it
/// is over, SIGINT, SIGTERM and SIGHUP are held back; one that arrives makes the restore undo
/// what it did, remove its staging directory and then die by that signal.
pub fn restore(
    open: Opener<'_>,
    identity: &Identity,
    receipt: Option<(&str, u64)>,
    total: u64,
    opts: &Options,
) -> Result<Restored, RestoreError> {
    restore_with(open, identity, receipt, total, opts, &mut |_| {
        Ok(opts.paths.clone())
    })
}

/// Picks the stored paths to restore once the manifest has been read and checked against the
/// receipt (the first pass), before anything is written; an error stops the restore there.
pub type Select<'a> = &'a mut dyn FnMut(&Listing) -> Result<Vec<Vec<u8>>, RestoreError>;

/// [`restore`], with the selection made by `select` from the manifest instead of
/// `opts.paths`: `vouch restore --dump` learns from the manifest which entries hold the dump.
pub fn restore_with(
    open: Opener<'_>,
    identity: &Identity,
    receipt: Option<(&str, u64)>,
    total: u64,
    opts: &Options,
    select: Select<'_>,
) -> Result<Restored, RestoreError> {
    if opts.devices && !is_root() {
        return Err(RestoreError::Refused(
            "--devices: only root can create device nodes and FIFOs; run the restore as root, or leave --devices out".into(),
        ));
    }
    journal::recover(&opts.to)?;
    let (closing, listing) = read::first_pass(open, identity, receipt, total, opts)?;
    let opts = &Options {
        paths: select(&listing)?,
        ..opts.clone()
    };
    let plan = Plan::new(&listing, &opts.paths)?;
    let dest = Dest::prepare(&opts.to)?;
    dest.check(&plan, &plan.special_paths(opts), opts.in_place)?;
    let interrupts = signals::Deferred::start();
    let mut staging = start_staging(&dest, interrupts)?;
    let result = stage::extract(
        open,
        identity,
        &closing,
        &listing,
        &plan,
        opts,
        &mut staging,
        total,
    )
    .and_then(|(specials, bytes)| {
        commit(&listing, &plan, &specials, &mut staging, opts.progress)
            .map(|placed| (placed, bytes))
    });
    match result {
        Ok((placed, bytes)) => {
            finish(&mut staging, &dest);
            Ok(Restored {
                dir: dest.dir,
                plan,
                listing,
                entries: placed,
                bytes,
                replaced: staging.replaced,
            })
        }
        Err(e) => Err(undo(staging, &dest, e)),
    }
}

/// Makes the destination when it is missing, opens it and makes the staging directory in it;
/// a destination this restore made is removed again when that fails.
fn start_staging(dest: &Dest, interrupts: signals::Deferred) -> Result<Staging, RestoreError> {
    dest.make()?;
    let tree = Tree::open(&dest.dir).map_err(io_err(&dest.dir));
    match tree.and_then(|tree| Staging::create(tree, interrupts)) {
        Ok(s) => Ok(s),
        Err(e) => {
            dest.unmake();
            Err(e)
        }
    }
}

/// After a commit that went through: the replaced paths and the staging directory removed.
/// A signal that arrived after the last step is logged; the restore is not undone.
fn finish(staging: &mut Staging, dest: &Dest) {
    crate::host::fault::point("restore-committed");
    staging
        .journal
        .drop_replaced(&mut staging.tree, &staging.name);
    staging.remove();
    if let Some(signal) = staging.interrupts.arrived() {
        log::warn!(
            "restore: {} arrived after the restore into {} had gone through",
            signal.as_str(),
            dest.dir.display()
        );
    }
}

/// After the error `e`: the journal undone and the staging directory removed (kept, with
/// what it holds, when something could not be put back), and a destination this restore made
/// removed. An interrupting signal is raised again once everything is undone. Returns `e`.
fn undo(mut staging: Staging, dest: &Dest, e: RestoreError) -> RestoreError {
    let undone = staging.rollback();
    if undone {
        staging.remove();
        dest.unmake();
    } else {
        log::error!(
            "restore: {} is kept: it holds what could not be put back into {}",
            staging.dir.display(),
            dest.dir.display()
        );
    }
    if let RestoreError::Interrupted(signal) = e {
        if undone {
            log::warn!(
                "restore: interrupted by {}; every change to {} was undone",
                signal.as_str(),
                dest.dir.display()
            );
        }
        staging.interrupts.reraise(signal);
    }
    e
}
