//! Reading a restored tree back and comparing it with the manifest, for `vouch verify
//! --restore-to`: what the restore promises, checked on the disk rather than taken from what it
//! did.

use super::error::damaged;
use super::is_root;
use super::path::{rel_path, show};
use super::{RestoreError, Restored};
use crate::pipeline::io::BUFFER_SIZE;
use crate::pipeline::manifest::{Entry, EntryType};
use std::fs::{self, File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Compares a restored tree with the manifest: every selected entry read back from disk (type,
/// mode, owner as root, size, SHA-256, link target, hard links sharing one inode, modification
/// time). Returns the first difference.
pub fn check_tree(restored: &Restored) -> Result<(), RestoreError> {
    let root = &restored.dir;
    let mut buf = vec![0u8; BUFFER_SIZE];
    let root_check = is_root();
    let listing = &restored.listing;
    for (i, e) in listing.entries()?.enumerate() {
        let e = &e.map_err(|e| listing.unreadable(e))?;
        if !restored.plan.selected[i] {
            continue;
        }
        let rel = e.path_bytes();
        let path = rel_path(root, &rel);
        let m = fs::symlink_metadata(&path)
            .map_err(|err| damaged(format!("{}: not restored: {err}", e.path)))?;
        check_meta(e, &m, root_check)?;
        check_content(restored, i, e, &path, &m, &mut buf)?;
    }
    Ok(())
}

/// Compares the type, mode, owner (when `owner` is set) and modification time `m` of a
/// restored entry with the manifest's `e`.
fn check_meta(e: &Entry, m: &Metadata, owner: bool) -> Result<(), RestoreError> {
    let ft = m.file_type();
    let kind_ok = match e.kind {
        EntryType::File | EntryType::Hardlink => ft.is_file(),
        EntryType::Dir => ft.is_dir(),
        EntryType::Symlink => ft.is_symlink(),
    };
    if !kind_ok {
        return Err(damaged(format!(
            "{}: restored as another type than the manifest's",
            e.path
        )));
    }
    if e.kind != EntryType::Symlink && format!("{:04o}", m.mode() & 0o7777) != e.mode {
        return Err(damaged(format!(
            "{}: restored with mode {:04o}, the manifest has {}",
            e.path,
            m.mode() & 0o7777,
            e.mode
        )));
    }
    if owner && (u64::from(m.uid()) != e.uid || u64::from(m.gid()) != e.gid) {
        return Err(damaged(format!(
            "{}: restored owned by {}:{}, the manifest has {}:{}",
            e.path,
            m.uid(),
            m.gid(),
            e.uid,
            e.gid
        )));
    }
    if m.mtime() != e.mtime {
        return Err(damaged(format!(
            "{}: restored with mtime {}, the manifest has {}",
            e.path,
            m.mtime(),
            e.mtime
        )));
    }
    Ok(())
}

/// Compares what the restored entry at `path` (with metadata `m`) holds with the manifest's
/// `e`, entry `i`: a file's SHA-256, a hard link's inode, a symlink's target.
fn check_content(
    restored: &Restored,
    i: usize,
    e: &Entry,
    path: &Path,
    m: &Metadata,
    buf: &mut [u8],
) -> Result<(), RestoreError> {
    match e.kind {
        EntryType::File | EntryType::Hardlink => {
            let digest = File::open(path)
                .and_then(|mut f| crate::check::verify::hash_entry(&mut f, buf))
                .map_err(|err| damaged(format!("{}: cannot read it back: {err}", e.path)))?;
            if e.sha256.as_deref() != Some(digest.as_str()) {
                return Err(damaged(format!(
                    "{}: restored content differs from the manifest (SHA-256)",
                    e.path
                )));
            }
            if e.kind == EntryType::Hardlink {
                let link = e.link_bytes().unwrap_or_default();
                let first = rel_path(&restored.dir, &link);
                let same = fs::symlink_metadata(&first)
                    .is_ok_and(|f| f.ino() == m.ino() && f.dev() == m.dev());
                let j = restored.plan.link_target(i);
                if j.is_some_and(|j| restored.plan.selected[j]) && !same {
                    return Err(damaged(format!(
                        "{}: not a hard link to {}",
                        e.path,
                        show(&link)
                    )));
                }
            }
        }
        EntryType::Symlink => {
            let target = fs::read_link(path)
                .map_err(|err| damaged(format!("{}: cannot read it back: {err}", e.path)))?;
            if Some(target.as_os_str().as_bytes().to_vec()) != e.link_bytes() {
                return Err(damaged(format!(
                    "{}: restored symlink points elsewhere than the manifest says",
                    e.path
                )));
            }
        }
        EntryType::Dir => {}
    }
    Ok(())
}
