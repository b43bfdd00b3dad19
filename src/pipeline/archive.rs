//! Turning the walked sources into tar entries and manifest lines.
//!
//! Each file is read exactly once: its bytes go into the tar stream and through SHA-256 in the
//! same pass. The header promises the size `fstat` gave after opening; if the file shrinks the
//! entry is completed with zeros, if it grows the excess is left out, and either way the file is
//! marked `changed` and the hash covers exactly what was archived. Hard links (same device and
//! inode seen twice) become tar hard links to the first path. Sockets, fifos and devices are
//! recorded as skipped. Read errors are collected, never fatal here.

use crate::pipeline::manifest::{
    archive_path, encode_path, Entry, EntryType, ManifestWriter, RequiredStatus, Skipped, Tail,
    Unreadable,
};
use crate::pipeline::tarstream::{DataError, Header, Kind, TarWriter};
use crate::pipeline::walk::{Item, MissingSource, Walker};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Counts for the receipt and the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Regular files (hard links included).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Hard links to files already archived.
    pub hardlinks: u64,
    /// Bytes of file data archived.
    pub bytes: u64,
}

/// Why archiving stopped.
#[derive(Debug)]
pub enum ArchiveError {
    /// A source root disappeared.
    Source(MissingSource),
    /// The archive stream could not be written.
    Write(io::Error),
    /// The manifest spool could not be written.
    Spool(io::Error),
}

impl From<MissingSource> for ArchiveError {
    fn from(e: MissingSource) -> Self {
        ArchiveError::Source(e)
    }
}

/// The result of archiving the sources.
pub struct Archived {
    /// Counts.
    pub stats: Stats,
    /// Skipped, unreadable, changed and required, for the manifest's tail.
    pub tail: Tail,
}

struct Required {
    path: PathBuf,
    present: bool,
}

/// Writes every walked item into `tar` and `manifest`. `progress` is called with the tar bytes
/// written so far after each item and after each chunk of a file's data, so that one huge file
/// moves it too (the callback rate-limits).
pub fn archive_sources<W: Write>(
    walker: &Walker<'_>,
    required: &[PathBuf],
    tar: &mut TarWriter<W>,
    manifest: &mut ManifestWriter,
    progress: &mut dyn FnMut(u64),
) -> Result<Archived, ArchiveError> {
    let mut state = State {
        tar,
        manifest,
        stats: Stats::default(),
        tail: Tail::default(),
        links: HashMap::new(),
        names: Names::default(),
        required: required
            .iter()
            .map(|p| Required {
                path: p.clone(),
                present: false,
            })
            .collect(),
        progress,
    };
    walker.walk(&mut |item| {
        state.item(item)?;
        (state.progress)(state.tar.written());
        Ok::<(), ArchiveError>(())
    })?;
    state.tail.required = state
        .required
        .iter()
        .map(|r| RequiredStatus {
            path: r.path.display().to_string(),
            present: r.present,
        })
        .collect();
    Ok(Archived {
        stats: state.stats,
        tail: state.tail,
    })
}

/// User and group names by id, looked up once each.
#[derive(Default)]
struct Names {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone()
    }
}

struct State<'a, W: Write> {
    tar: &'a mut TarWriter<W>,
    manifest: &'a mut ManifestWriter,
    stats: Stats,
    tail: Tail,
    /// (device, inode) of multiply-linked files -> their archive path and hash.
    links: HashMap<(u64, u64), (Vec<u8>, Option<String>)>,
    names: Names,
    required: Vec<Required>,
    /// Called with the tar bytes written so far, also from inside a file's data.
    progress: &'a mut dyn FnMut(u64),
}

fn open_source(path: &Path) -> io::Result<File> {
    let open = |flags| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | flags)
            .open(path)
    };
    // O_NOATIME keeps backups from touching access times; it needs ownership or
    // CAP_FOWNER, so fall back to a plain open when the kernel refuses.
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    }
}

fn changed_since(before: &Metadata, after: &Metadata) -> bool {
    before.len() != after.len()
        || before.mtime() != after.mtime()
        || before.mtime_nsec() != after.mtime_nsec()
        || before.ctime() != after.ctime()
        || before.ctime_nsec() != after.ctime_nsec()
}

impl<W: Write> State<'_, W> {
    fn item(&mut self, item: Item) -> Result<(), ArchiveError> {
        match item {
            Item::Entry { path, meta } => self.entry(&path, &meta),
            Item::Special { path, kind } => {
                self.tail.skipped.push(Skipped {
                    path: String::from_utf8_lossy(&archive_path(&path)).into_owned(),
                    kind: kind.to_owned(),
                });
                log::info!("skipped {kind} {}", path.display());
                Ok(())
            }
            Item::Error { path, error } => {
                self.unreadable(&path, &error);
                Ok(())
            }
        }
    }

    fn unreadable(&mut self, path: &Path, error: &io::Error) {
        log::warn!("cannot read {}: {error}", path.display());
        self.tail.unreadable.push(Unreadable {
            path: path.display().to_string(),
            error: error.to_string(),
        });
    }

    fn mark_required(&mut self, path: &Path, non_empty: bool) {
        for r in &mut self.required {
            if r.present {
                continue;
            }
            if (r.path == path && non_empty) || (path != r.path && path.starts_with(&r.path)) {
                r.present = true;
            }
        }
    }

    fn entry(&mut self, path: &Path, meta: &Metadata) -> Result<(), ArchiveError> {
        let apath = archive_path(path);
        let user = self.names.user(meta.uid());
        let group = self.names.group(meta.gid());
        let owner = format!(
            "{}:{}",
            user.clone().unwrap_or_else(|| meta.uid().to_string()),
            group.clone().unwrap_or_else(|| meta.gid().to_string())
        );
        let mut header = Header {
            path: &apath,
            kind: Kind::Dir,
            mode: meta.mode() & 0o7777,
            uid: meta.uid().into(),
            gid: meta.gid().into(),
            user: user.as_deref(),
            group: group.as_deref(),
            mtime: meta.mtime(),
            size: 0,
            link: None,
        };
        let (path_text, path_hex) = encode_path(&apath);
        let mut entry = Entry {
            path: path_text,
            path_hex,
            kind: EntryType::Dir,
            mode: format!("{:04o}", meta.mode() & 0o7777),
            uid: meta.uid().into(),
            gid: meta.gid().into(),
            owner,
            size: 0,
            mtime: meta.mtime(),
            sha256: None,
            link: None,
            link_hex: None,
            changed: false,
            read_error: None,
        };
        let ft = meta.file_type();
        // A required directory counts as present once something inside it is archived.
        let mut non_empty = false;
        if ft.is_dir() {
            self.tar
                .append_header(&header)
                .map_err(ArchiveError::Write)?;
            self.stats.dirs += 1;
        } else if ft.is_symlink() {
            let target = match std::fs::read_link(path) {
                Ok(t) => t,
                Err(e) => {
                    self.unreadable(path, &e);
                    return Ok(());
                }
            };
            let target = target.as_os_str().as_bytes().to_vec();
            header.kind = Kind::Symlink;
            header.link = Some(&target);
            self.tar
                .append_header(&header)
                .map_err(ArchiveError::Write)?;
            entry.kind = EntryType::Symlink;
            (entry.link, entry.link_hex) = {
                let (t, h) = encode_path(&target);
                (Some(t), h)
            };
            self.stats.symlinks += 1;
            non_empty = true;
        } else if let Some((first, sha)) = (meta.nlink() > 1)
            .then(|| self.links.get(&(meta.dev(), meta.ino())).cloned())
            .flatten()
        {
            header.kind = Kind::Hardlink;
            header.link = Some(&first);
            self.tar
                .append_header(&header)
                .map_err(ArchiveError::Write)?;
            entry.kind = EntryType::Hardlink;
            entry.sha256 = sha;
            (entry.link, entry.link_hex) = {
                let (t, h) = encode_path(&first);
                (Some(t), h)
            };
            self.stats.files += 1;
            self.stats.hardlinks += 1;
            non_empty = meta.len() > 0;
        } else {
            return self.file(path, meta, header, entry);
        }
        self.mark_required(path, non_empty);
        self.manifest.push(&entry).map_err(ArchiveError::Spool)
    }

    fn file(
        &mut self,
        path: &Path,
        walked: &Metadata,
        mut header: Header<'_>,
        mut entry: Entry,
    ) -> Result<(), ArchiveError> {
        let mut file = match open_source(path) {
            Ok(f) => f,
            Err(e) => {
                self.unreadable(path, &e);
                return Ok(());
            }
        };
        let before = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.unreadable(path, &e);
                return Ok(());
            }
        };
        if !before.is_file() {
            // Replaced by something else between the walk and the open.
            self.unreadable(path, &io::Error::other("changed type while being archived"));
            return Ok(());
        }
        header.kind = Kind::File;
        header.size = before.len();
        header.mode = before.mode() & 0o7777;
        header.mtime = before.mtime();
        self.tar
            .append_header(&header)
            .map_err(ArchiveError::Write)?;
        crate::host::fault::stop_before_data(path);
        let mut hasher = Sha256::new();
        let mut written = self.tar.written();
        let progress = &mut *self.progress;
        let result = self
            .tar
            .append_file_data(&mut file, before.len(), &mut |b| {
                hasher.update(b);
                written += b.len() as u64;
                progress(written);
            });
        let sha = crate::pipeline::io::hex(&hasher.finalize());
        entry.kind = EntryType::File;
        entry.size = before.len();
        entry.mode = format!("{:04o}", before.mode() & 0o7777);
        entry.mtime = before.mtime();
        entry.sha256 = Some(sha.clone());
        let mut archived_ok = true;
        match result {
            Ok(outcome) => {
                let after = file.metadata().ok();
                let moved = after.is_none_or(|a| changed_since(&before, &a));
                if outcome.shrank || outcome.grew || moved {
                    entry.changed = true;
                    self.tail.changed.push(entry.path.clone());
                    log::warn!(
                        "{} changed while it was archived; the archive holds what was read",
                        path.display()
                    );
                }
            }
            Err(DataError::Read(e)) => {
                entry.read_error = Some(e.to_string());
                archived_ok = false;
                self.unreadable(path, &e);
            }
            Err(DataError::Write(e)) => return Err(ArchiveError::Write(e)),
        }
        if walked.nlink() > 1 {
            self.links.insert(
                (walked.dev(), walked.ino()),
                (entry.path_bytes(), Some(sha)),
            );
        }
        self.stats.files += 1;
        self.stats.bytes += before.len();
        self.mark_required(path, archived_ok && before.len() > 0);
        self.manifest.push(&entry).map_err(ArchiveError::Spool)
    }
}
