//! The off-site copy of one committed archive to an sftp target, in the order that keeps its
//! promise: the copy is recorded ([`crate::target::s3::pending`]), the archive goes to
//! `PATH/.vouch-tmp.RUN.NAME` (created exclusively, pipelined WRITEs, the byte count checked,
//! `fsync@openssh.com`), is read back from there through the caller's check exactly as the
//! local copy was, and only then is renamed to `PATH/NAME` with SFTP's plain RENAME, which
//! OpenSSH's server refuses over an existing name (an archive is never replaced). The receipt,
//! the remote's commit mark, comes last, through its own temporary name and rename.
//!
//! A copy that fails removes what it made (the temporary file, or the renamed archive when its
//! receipt could not be written) and forgets its record; when even that fails (the connection
//! is gone), the record stays and the next preflight settles it. A server without
//! `fsync@openssh.com` gets the copy anyway, with a warning: its bytes were read back, but may
//! still be only in the server's page cache. A directory cannot be fsynced over SFTP, so the
//! renames are as durable as the server's filesystem makes them.

use super::{Session, Sftp, SftpError, TEMP_PREFIX};
use crate::systemd::sdnotify::Progress;
use crate::target::s3::copy::{Failed, Source};
use crate::target::s3::pending;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes read from the local archive and handed to one pipelined `write_all`.
const BLOCK: usize = super::client::CHUNK * super::client::MAX_IN_FLIGHT;

/// A finished copy.
#[derive(Debug, Clone)]
pub struct Copied {
    /// `sftp://USER@HOST:PORT/PATH/NAME`.
    pub url: String,
    /// Upload, read-back and receipt.
    pub duration: Duration,
    /// Whether the server flushed the file to its disk (`fsync@openssh.com`).
    pub fsynced: bool,
}

/// What a failed step leaves on the server, to be removed.
enum Made {
    Nothing,
    Temp(String),
    Archive(String),
}

/// Copies `source` to `sftp`; `readback` checks the temporary file (it gets its bytes and
/// must read them to the end).
pub fn copy(
    sftp: &Sftp,
    state: &Path,
    run_id: &str,
    source: Source<'_>,
    readback: &mut dyn FnMut(&mut dyn Read) -> Result<(), String>,
) -> Result<Copied, Failed> {
    let started = Instant::now();
    let t = &sftp.target;
    let url = t.url_of(source.archive);
    let again = format!(
        "The local archive is kept; the next run copies its new archive to [[target]] \"{}\" again.",
        sftp.name
    );
    let fail = |detail: String| Failed {
        detail,
        hint: again.clone(),
    };
    let mut s = sftp
        .connect()
        .map_err(|e| fail(format!("{}: {e}", sftp.host_port())))?;
    let final_path = t.remote_path(source.archive);
    for taken in [final_path.clone(), format!("{final_path}.json")] {
        match s.stat(&taken) {
            Err(e) if e.is_no_such_file() => {}
            Ok(_) => {
                return Err(Failed {
                    detail: format!("{} exists already and is never replaced", t.url_of(&taken[t.path.len() + 1..])),
                    hint: format!("Look at {} on {}: another host may use the same directory; give each host its own path.", t.path, t.host),
                })
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    record(sftp, state, &final_path, run_id);
    let temp = t.remote_path(&format!("{TEMP_PREFIX}{run_id}.{}", source.archive));
    let receipt = source.receipt.clone();
    let archive = source.archive.to_owned();
    let result = steps(sftp, &mut s, &temp, &final_path, source, readback).and_then(|fsynced| {
        put_receipt(&mut s, t, run_id, &archive, &receipt)
            .map(|()| fsynced)
            .map_err(|e| {
                (
                    Made::Archive(final_path.clone()),
                    format!("writing the receipt of {url}: {e}"),
                )
            })
    });
    match result {
        Ok(fsynced) => {
            forget(sftp, state, &final_path, run_id);
            Ok(Copied {
                url,
                duration: started.elapsed(),
                fsynced,
            })
        }
        Err((made, detail)) => {
            let path = match made {
                Made::Nothing => String::new(),
                Made::Temp(p) | Made::Archive(p) => p,
            };
            match if path.is_empty() { Ok(()) } else { s.remove(&path) } {
                Ok(()) => forget(sftp, state, &final_path, run_id),
                Err(e) if e.is_no_such_file() => forget(sftp, state, &final_path, run_id),
                Err(e) => log::warn!("cannot remove {path} on {} after the failed copy: {e}; it has no receipt, so no command counts it as an archive, and the next preflight removes it", sftp.host_port()),
            }
            Err(fail(detail))
        }
    }
}

/// Records the copy before its first byte goes.
fn record(sftp: &Sftp, state: &Path, final_path: &str, run_id: &str) {
    let record = pending::Upload {
        target: sftp.name.clone(),
        key: final_path.to_owned(),
        upload_id: None,
    };
    if let Err(e) = pending::add(state, record, run_id) {
        log::warn!("cannot record the copy of {final_path} in {}: {e}; a crash now would leave it for the next preflight's sweep of temporary files", pending::FILE);
    }
}

/// The copy is committed or undone: nothing to settle after a crash.
fn forget(sftp: &Sftp, state: &Path, final_path: &str, run_id: &str) {
    if let Err(e) = pending::remove(state, &sftp.name, final_path, run_id) {
        log::warn!("cannot update {}: {e}", pending::FILE);
    }
}

/// Upload, fsync, read-back, rename. Returns whether the server fsynced the file.
fn steps(
    sftp: &Sftp,
    s: &mut Session,
    temp: &str,
    final_path: &str,
    source: Source<'_>,
    readback: &mut dyn FnMut(&mut dyn Read) -> Result<(), String>,
) -> Result<bool, (Made, String)> {
    let url = sftp.target.url_of(source.archive);
    let h = s
        .create_exclusive(temp)
        .map_err(|e| (Made::Nothing, e.to_string()))?;
    let in_temp = |d: String| (Made::Temp(temp.to_owned()), d);
    let sent = upload(sftp, s, &h, source.data, source.size);
    let fsynced = sent.and_then(|()| s.fsync(&h).map_err(|e| e.to_string()));
    let closed = s.close(h).map_err(|e| e.to_string());
    let fsynced = fsynced.and_then(|f| closed.map(|()| f)).map_err(in_temp)?;
    if !fsynced {
        log::warn!("target {}: the server does not offer fsync@openssh.com, so {url} may be only in its page cache when its receipt is written", sftp.name);
    }
    crate::host::fault::point("sftp-before-readback");
    read_back(sftp, s, temp, source.size, readback)
        .map_err(|d| in_temp(format!("the read-back of {url} failed: {d}")))?;
    s.rename(temp, final_path).map_err(|e| {
        let detail = if e.is_failure() {
            format!("{final_path} could not get its final name (an existing file is never replaced): {e}")
        } else {
            e.to_string()
        };
        in_temp(detail)
    })?;
    Ok(fsynced)
}

/// Streams `data` (`size` bytes) to the open file with pipelined WRITEs; the count must match.
fn upload(
    sftp: &Sftp,
    s: &mut Session,
    h: &super::Handle,
    mut data: Box<dyn Read + '_>,
    size: u64,
) -> Result<(), String> {
    let mut progress = Progress::new(format!("copying to {}", sftp.name), Some(size));
    let mut buf = vec![0u8; BLOCK];
    let mut offset = 0u64;
    let result = loop {
        let n = match data.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(format!("reading the local archive: {e}")),
        };
        if let Err(e) = s.write_all(h, offset, &buf[..n]) {
            break Err(e.to_string());
        }
        offset += n as u64;
        progress.update(offset);
    };
    progress.finish();
    result?;
    if offset != size {
        return Err(format!(
            "{offset} bytes of the local archive were read, its receipt says {size}"
        ));
    }
    Ok(())
}

/// Reads the temporary file back through `readback`; its size must be the archive's.
fn read_back(
    sftp: &Sftp,
    s: &mut Session,
    temp: &str,
    size: u64,
    readback: &mut dyn FnMut(&mut dyn Read) -> Result<(), String>,
) -> Result<(), String> {
    crate::systemd::sdnotify::status(&format!("verifying {}: reading {temp} back", sftp.name));
    let got = s.stat(temp).map_err(|e| e.to_string())?.size;
    if got != Some(size) {
        return Err(format!(
            "{temp} is {got:?} bytes on the server, the archive {size}"
        ));
    }
    let mut reader = s.open_read(temp).map_err(|e| e.to_string())?;
    readback(&mut reader)?;
    reader.close().map_err(|e| e.to_string())
}

/// The receipt through `.vouch-tmp.RUN.NAME.json`, renamed to `NAME.json` (never replacing).
fn put_receipt(
    s: &mut Session,
    t: &crate::config::SftpTarget,
    run_id: &str,
    archive: &str,
    receipt: &[u8],
) -> Result<(), SftpError> {
    let name = format!("{archive}.json");
    let temp = t.remote_path(&format!("{TEMP_PREFIX}{run_id}.{name}"));
    let h = s.create_exclusive(&temp)?;
    let written = s
        .write_all(&h, 0, receipt)
        .and_then(|()| s.fsync(&h).map(|_| ()));
    let closed = s.close(h);
    let renamed = written
        .and(closed)
        .and_then(|()| s.rename(&temp, &t.remote_path(&name)));
    if renamed.is_err() {
        let _ = s.remove(&temp);
    }
    renamed
}
