//! The second pass: every tar entry compared with the manifest, the data of each file written
//! into the staging directory and checked against its SHA-256.
//!
//! Entries must come in the manifest's order and match it (path, type, mode, size, link
//! target), followed by the closing files, which must be the ones the first pass read; the
//! ciphertext must hash the same as then. Each staged file is one flat file in the staging
//! directory, named by its index in the manifest, hashed as it is written and given its owner
//! (as root), mode and modification time. The names in the archive are never used to open
//! anything during this pass, so a hostile archive can write nothing but numbered files in the
//! staging directory.
//!
//! Device nodes and FIFOs ([`Special`]) are kept aside for the commit, which creates them last:
//! only with `--devices`, as root, and when the manifest lists them among its skipped special
//! files.

use super::error::{damaged, io_err, TRUNCATED};
use super::path::{ancestors, check_relative, show, trim_slash, under};
use super::path::{working_name, working_name_refused};
use super::plan::Plan;
use super::progress::Meter;
use super::read::{counted, drain, with_tar, Closing, Count, Listing, Opener};
use super::staging::Staging;
use super::{is_root, Options, RestoreError};
use crate::pipeline::crypt::Identity;
use crate::pipeline::io::BUFFER_SIZE;
use crate::pipeline::manifest::{self, Entry, EntryIter, EntryType, MANIFEST_PATH, SUMS_PATH};
use crate::systemd::signals;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

/// A special file from a crafted or foreign archive.
#[derive(Debug, Clone)]
pub(super) struct Special {
    /// Its stored path.
    pub(super) path: Vec<u8>,
    /// Character device, block device or FIFO.
    pub(super) kind: nix::sys::stat::SFlag,
    /// Its permission bits.
    pub(super) mode: u32,
    /// Its owner,
    pub(super) uid: u64,
    /// group,
    pub(super) gid: u64,
    /// and modification time, from its tar header.
    pub(super) mtime: i64,
    /// The device number (0 for a FIFO).
    pub(super) rdev: u64,
}

/// The second pass as it goes: where it is in the manifest, and what it kept.
struct Pass<'a> {
    /// What the first pass read.
    closing: &'a Closing,
    /// The manifest, checked (`plan`).
    listing: &'a Listing,
    /// Its entries, read in step with the archive's.
    entries: EntryIter<'a>,
    /// What to restore.
    plan: &'a Plan,
    /// How.
    opts: &'a Options,
    /// Bytes of the archive read so far.
    count: Count,
    /// The manifest entry the next archived entry must match.
    next: usize,
    /// Whether the manifest was seen,
    seen_manifest: bool,
    /// and SHA256SUMS, after it.
    seen_sums: bool,
    /// The buffer file data is read through.
    buf: Vec<u8>,
    /// The special files to create.
    specials: Vec<Special>,
    /// Bytes of file data staged.
    bytes: u64,
}

/// The second pass: every entry compared with the manifest, file data staged and hashed.
/// Returns the special files to create and the bytes of file data staged.
#[allow(clippy::too_many_arguments)]
pub(super) fn extract(
    open: Opener<'_>,
    identity: &Identity,
    closing: &Closing,
    listing: &Listing,
    plan: &Plan,
    opts: &Options,
    staging: &mut Staging,
    total: u64,
) -> Result<(Vec<Special>, u64), RestoreError> {
    let mut meter = Meter::new(opts.progress, "restoring", total);
    let (mut hashed, count) = counted(open)?;
    let mut pass = Pass {
        closing,
        listing,
        entries: listing.entries()?,
        plan,
        opts,
        count: count.clone(),
        next: 0,
        seen_manifest: false,
        seen_sums: false,
        buf: vec![0u8; BUFFER_SIZE],
        specials: Vec::new(),
        bytes: 0,
    };
    with_tar(&mut hashed, identity, opts.compression, |mut tar| {
        let iter = tar
            .entries()
            .map_err(|e| damaged(format!("not a tar stream: {e}")))?;
        for found in iter {
            staging.interrupted()?;
            let mut found =
                found.map_err(|e| damaged(format!("{TRUNCATED}: corrupt tar entry: {e}")))?;
            meter.update(count.get());
            pass.entry(&mut found, staging)?;
        }
        pass.end()?;
        drain(tar)
    })?;
    meter.finish(count.get());
    let (sha, size) = hashed
        .finish()
        .map_err(|e| damaged(format!("reading the archive failed: {e}")))?;
    if sha != closing.sha256 || size != closing.size {
        return Err(damaged(
            "the archive changed between two reads (different SHA-256)",
        ));
    }
    Ok((pass.specials, pass.bytes))
}

impl Pass<'_> {
    /// Takes the next archived entry: a closing file, a special file, or the next entry of the
    /// manifest, which it must match.
    fn entry<R: Read>(
        &mut self,
        found: &mut tar::Entry<'_, R>,
        staging: &mut Staging,
    ) -> Result<(), RestoreError> {
        let raw = found.path_bytes().into_owned();
        let path = trim_slash(&raw).to_vec();
        let name = show(&path);
        if self.seen_sums {
            return Err(damaged(format!(
                "{name}: unexpected entry after the manifest"
            )));
        }
        if path == MANIFEST_PATH.as_bytes() || path == SUMS_PATH.as_bytes() {
            return self.closing_file(found, &path, &name);
        }
        if self.seen_manifest {
            return Err(damaged(format!(
                "{name}: unexpected entry after the manifest"
            )));
        }
        let ty = found.header().entry_type();
        if ty.is_character_special() || ty.is_block_special() || ty.is_fifo() {
            let found = special(found, &path, self.plan, self.opts, &self.specials)?;
            self.specials.extend(found);
            return Ok(());
        }
        let want = match self.entries.next() {
            Some(want) => want.map_err(|e| self.listing.unreadable(e))?,
            None => return Err(damaged(format!("{name}: not in the manifest"))),
        };
        let i = self.next;
        self.next += 1;
        crate::check::found::check_entry(
            &want,
            &crate::check::found::Found::of(found, &path),
            None,
        )
        .map_err(damaged)?;
        if want.kind == EntryType::File {
            self.file(found, i, &want, &name, staging)?;
        }
        if i as u64 == self.listing.count() / 2 {
            crate::host::fault::point("restore-mid");
        }
        Ok(())
    }

    /// Reads a closing file at `path` and checks that it comes in its place (the manifest,
    /// then SHA256SUMS) and is the one the first pass read.
    fn closing_file(
        &mut self,
        found: &mut impl Read,
        path: &[u8],
        name: &str,
    ) -> Result<(), RestoreError> {
        let count = &self.count;
        let digest = manifest::copy_closing_file(found, name, &|| count.get(), &mut io::sink())
            .map_err(|e| damaged(format!("{name}: cannot read its data; {TRUNCATED}: {e}")))?;
        let (want, ok_order) = if path == MANIFEST_PATH.as_bytes() {
            (&self.closing.manifest, !self.seen_manifest)
        } else {
            (&self.closing.sums, self.seen_manifest)
        };
        if !ok_order || &digest != want {
            return Err(damaged(format!("{name} differs between two reads")));
        }
        if path == MANIFEST_PATH.as_bytes() {
            self.seen_manifest = true;
        } else {
            self.seen_sums = true;
        }
        Ok(())
    }

    /// Stages the data of the file entry `i` (or only hashes it, when the restore does not
    /// need it), compares its SHA-256 with the manifest's, and gives the staged file its
    /// metadata.
    fn file(
        &mut self,
        found: &mut impl Read,
        i: usize,
        want: &Entry,
        name: &str,
        staging: &mut Staging,
    ) -> Result<(), RestoreError> {
        let staged = self.plan.staged[i];
        let digest = if staged {
            let data = staging.data(i);
            let to = staging.full(&data);
            let out = staging.tree.create_file(&data).map_err(io_err(&to))?;
            let d = stage(found, name, out, &to, &mut self.buf, &staging.interrupts)?;
            self.bytes += want.size;
            d
        } else {
            crate::check::verify::hash_entry(found, &mut self.buf)
                .map_err(|e| damaged(format!("{name}: cannot read its data; {TRUNCATED}: {e}")))?
        };
        if want.sha256.as_deref() != Some(digest.as_str()) {
            return Err(damaged(format!(
                "{name}: content differs from the manifest (SHA-256)"
            )));
        }
        if staged {
            let data = staging.data(i);
            staging.set_meta(
                &data,
                Some(parse_mode(want)?),
                want.uid,
                want.gid,
                want.mtime,
            )?;
        }
        Ok(())
    }

    /// After the last archived entry: every manifest entry was seen, and SHA256SUMS closed the
    /// archive.
    fn end(&mut self) -> Result<(), RestoreError> {
        if let Some(missing) = self.entries.next() {
            let missing = missing.map_err(|e| self.listing.unreadable(e))?;
            return Err(damaged(format!(
                "{}: in the manifest but not in the archive",
                missing.path
            )));
        }
        if !self.seen_sums {
            return Err(damaged(format!(
                "{SUMS_PATH} is missing from the end of the archive"
            )));
        }
        Ok(())
    }
}

/// Checks a device node or FIFO found at `path` in the archive, returning it when the
/// selection covers it. Refused unless `--devices` is given, the process runs as root, and the
/// manifest lists it among its skipped special files at a place no other entry takes.
fn special<R: Read>(
    found: &mut tar::Entry<'_, R>,
    path: &[u8],
    plan: &Plan,
    opts: &Options,
    earlier: &[Special],
) -> Result<Option<Special>, RestoreError> {
    use nix::sys::stat::SFlag;
    let name = show(path);
    let h = found.header();
    let ty = h.entry_type();
    let (kind, type_name) = if ty.is_character_special() {
        (SFlag::S_IFCHR, "char-device")
    } else if ty.is_block_special() {
        (SFlag::S_IFBLK, "block-device")
    } else {
        (SFlag::S_IFIFO, "fifo")
    };
    if !opts.devices || !is_root() {
        return Err(damaged(format!(
            "{name}: refused, a {type_name}; device nodes and FIFOs are restored only with --devices, as root"
        )));
    }
    check_relative(path).map_err(|why| damaged(format!("{name}: refused, the path is {why}")))?;
    if working_name(path) {
        return Err(damaged(working_name_refused(&name)));
    }
    if plan.skipped.get(path).map(String::as_str) != Some(type_name) {
        return Err(damaged(format!(
            "{name}: a {type_name} the manifest does not list"
        )));
    }
    if ancestors(path).any(|a| {
        plan.find(a)
            .is_some_and(|j| plan.kinds[j] != EntryType::Dir)
    }) {
        return Err(damaged(format!(
            "{name}: refused, it would be created through an entry that is not a directory"
        )));
    }
    // Created last, a special file must not replace what the restore itself placed.
    if plan.find(path).is_some()
        || plan.has_below(path)
        || earlier
            .iter()
            .any(|s| under(&s.path, path) || under(path, &s.path))
    {
        return Err(damaged(format!(
            "{name}: refused, a {type_name} at the place of another entry or above one"
        )));
    }
    if !plan.wanted_special(path, &opts.paths) {
        return Ok(None);
    }
    let bad = |e: io::Error| damaged(format!("{name}: bad header: {e}"));
    let (major, minor) = if kind == SFlag::S_IFIFO {
        (0, 0)
    } else {
        (
            h.device_major().map_err(bad)?.unwrap_or(0),
            h.device_minor().map_err(bad)?.unwrap_or(0),
        )
    };
    Ok(Some(Special {
        path: path.to_vec(),
        kind,
        mode: h.mode().map_err(bad)? & 0o7777,
        uid: h.uid().map_err(bad)?,
        gid: h.gid().map_err(bad)?,
        mtime: i64::try_from(h.mtime().map_err(bad)?).unwrap_or(i64::MAX),
        rdev: nix::sys::stat::makedev(major.into(), minor.into()),
    }))
}

/// Writes the data of the entry `name` into `out`, a new staging file, returning its
/// SHA-256. Closing `out` reports a late write error (NFS, quota) to nobody, so the commit's
/// `syncfs` is what catches those. Stops between two reads when an interrupting signal has arrived.
fn stage(
    r: &mut impl Read,
    name: &str,
    mut out: File,
    to: &Path,
    buf: &mut [u8],
    interrupts: &signals::Deferred,
) -> Result<String, RestoreError> {
    let mut h = Sha256::new();
    loop {
        if let Some(signal) = interrupts.arrived() {
            return Err(RestoreError::Interrupted(signal));
        }
        let n = r
            .read(buf)
            .map_err(|e| damaged(format!("{name}: cannot read its data; {TRUNCATED}: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err(to))?;
    }
    // Not synced here: the commit makes the whole filesystem durable once, before it
    // completes (`Tree::sync_filesystem`).
    Ok(crate::pipeline::io::hex(&h.finalize()))
}

/// The manifest's mode of `e` as permission bits.
pub(super) fn parse_mode(e: &Entry) -> Result<u32, RestoreError> {
    u32::from_str_radix(&e.mode, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| damaged(format!("{}: bad mode {:?} in the manifest", e.path, e.mode)))
}
