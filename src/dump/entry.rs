//! A checked dump becomes an ordinary archive entry, and a line in the manifest and receipt.
//!
//! The spool is copied into the tar stream under a header with its exact size and hashed again
//! on the way; the hash must equal the one taken when the dump was checked, which catches a
//! spool that changed or a disk that lied in between. The entry goes into the manifest (and so
//! into `SHA256SUMS` and the read-back verification) like any file.

use super::{DumpError, Dumped};
use crate::config::{Compression, RequiredDump};
use crate::error::Error;
use crate::pipeline::manifest::{
    encode_path, DumpCheck, DumpRecord, Entry, EntryType, ManifestWriter, RequiredStatus, Tail,
};
use crate::pipeline::tarstream::{DataError, Header, Kind, TarWriter};
use crate::target::receipt::ReceiptDump;
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::path::Path;

/// How a failed write is classified: into the archive stream, and into the manifest spool.
pub struct Failures<'a> {
    /// A write into the archive stream failed.
    pub write: &'a dyn Fn(io::Error) -> Error,
    /// The manifest spool could not be written.
    pub manifest: &'a dyn Fn(io::Error) -> Error,
    /// The dump spool (for a read of a spooled dump that failed).
    pub spool_dir: &'a Path,
}

/// Appends every dump to `tar` and `manifest`.
pub fn append_all<W: Write>(
    tar: &mut TarWriter<W>,
    manifest: &mut ManifestWriter,
    dumps: &mut [Dumped],
    failures: &Failures<'_>,
) -> Result<(), Error> {
    for d in dumps.iter_mut() {
        append(tar, manifest, d, failures)?;
    }
    Ok(())
}

fn owner_name(uid: u32, gid: u32) -> (Option<String>, Option<String>) {
    let user = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name);
    let group = nix::unistd::Group::from_gid(gid.into())
        .ok()
        .flatten()
        .map(|g| g.name);
    (user, group)
}

fn append<W: Write>(
    tar: &mut TarWriter<W>,
    manifest: &mut ManifestWriter,
    d: &mut Dumped,
    failures: &Failures<'_>,
) -> Result<(), Error> {
    let write_error = failures.write;
    let (user, group) = owner_name(d.uid, d.gid);
    let header = Header {
        path: &d.path,
        kind: Kind::File,
        mode: d.mode,
        uid: d.uid.into(),
        gid: d.gid.into(),
        user: user.as_deref(),
        group: group.as_deref(),
        mtime: d.mtime,
        size: d.size,
        link: None,
    };
    tar.append_header(&header).map_err(write_error)?;
    let mut hasher = Sha256::new();
    let outcome = tar
        .append_file_data(&mut d.file, d.size, &mut |b| hasher.update(b))
        .map_err(|e| match e {
            DataError::Read(e) => Error::Dump {
                name: d.name.clone(),
                error: DumpError::Spool {
                    dir: failures.spool_dir.to_owned(),
                    error: e,
                },
            },
            DataError::Write(e) => write_error(e),
        })?;
    let found = crate::pipeline::io::hex(&hasher.finalize());
    if outcome.shrank || outcome.grew || found != d.sha256 {
        return Err(Error::Dump {
            name: d.name.clone(),
            error: DumpError::Changed {
                expected: d.sha256.clone(),
                found,
            },
        });
    }
    let (path, path_hex) = encode_path(&d.path);
    let entry = Entry {
        path,
        path_hex,
        kind: EntryType::File,
        mode: format!("{:04o}", d.mode),
        uid: d.uid.into(),
        gid: d.gid.into(),
        owner: format!(
            "{}:{}",
            user.unwrap_or_else(|| d.uid.to_string()),
            group.unwrap_or_else(|| d.gid.to_string())
        ),
        size: d.size,
        mtime: d.mtime,
        sha256: Some(d.sha256.clone()),
        link: None,
        link_hex: None,
        changed: false,
        read_error: None,
    };
    manifest.push(&entry).map_err(failures.manifest)
}

/// Records the dumps in the manifest's tail, and counts a non-empty SQLite snapshot as the
/// required path it is stored at (the walk left the live file out).
pub fn record_all(tail: &mut Tail, dumps: &[Dumped], required: &[RequiredDump]) {
    tail.dumps = dumps.iter().map(record).collect();
    for r in tail.required.iter_mut().filter(|r| !r.present) {
        let rel = r.path.trim_start_matches('/').as_bytes();
        r.present = dumps.iter().any(|d| d.path == rel && d.size > 0);
    }
    for r in required {
        let present = dumps.iter().any(|d| {
            d.name == r.name && d.size > 0 && (r.database.is_none() || d.database == r.database)
        });
        tail.required.push(RequiredStatus {
            path: r.to_string(),
            present,
        });
    }
}

/// Fits each dump's stock restore line (written for gzip: `tar -xzOf`, `tar -xzf`) to an archive
/// compressed with `compression`: a zstd archive needs `tar --zstd -x...`, since `tar` reading a
/// pipe does not guess.
pub fn restore_lines_for(dumps: &mut [Dumped], compression: Compression) {
    if compression == Compression::Zstd {
        for d in dumps {
            d.restore = d.restore.replace("tar -xz", "tar --zstd -x");
        }
    }
}

/// The manifest's record of a dump.
pub fn record(d: &Dumped) -> DumpRecord {
    DumpRecord {
        name: d.name.clone(),
        kind: d.kind.into(),
        database: d.database.clone(),
        path: String::from_utf8_lossy(&d.path).into_owned(),
        bytes: d.size,
        sha256: d.sha256.clone(),
        tables: d.tables,
        checks: d
            .checks
            .iter()
            .map(|c| DumpCheck {
                check: c.check.into(),
                min: c.min,
                ok: true,
            })
            .collect(),
        started: d.started.clone(),
        duration_usec: u64::try_from(d.duration.as_micros()).unwrap_or(u64::MAX),
        snapshot: (d.kind == "sqlite").then(|| "sqlite-backup-api".into()),
        restore: d.restore.clone(),
    }
}

/// The receipt's records: one per `[[dump]]`, its files counted and their bytes added up.
pub fn receipts(dumps: &[Dumped]) -> Vec<ReceiptDump> {
    let mut out: Vec<ReceiptDump> = Vec::new();
    for d in dumps {
        match out.iter_mut().find(|r| r.name == d.name) {
            Some(r) => {
                r.files += 1;
                r.bytes += d.size;
            }
            None => out.push(ReceiptDump {
                name: d.name.clone(),
                kind: d.kind.into(),
                files: 1,
                bytes: d.size,
                checked: true,
            }),
        }
    }
    out
}
