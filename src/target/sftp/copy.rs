//! The off-site copy of one committed archive to an sftp target, in the order that keeps its
//! promise: the copy is recorded ([`crate::target::s3::pending`]), the archive goes to
//! `PATH/.vouch-tmp.RUN.NAME` (created exclusively, pipelined WRITEs, the byte count checked,
//! `fsync@openssh.com`), is read back from there through the caller's check exactly as the
//! local copy was, and only then is renamed to `PATH/NAME` with SFTP's plain RENAME, which
//! OpenSSH's server refuses over an existing name (an archive is never replaced). The receipt,
//! the remote's commit mark, comes last, through its own temporary name and rename.
//!
//! With `split = "SIZE"` the archive goes as parts `NAME.000`, `NAME.001`, ... of at most SIZE
//! ([`layout`]), each through its own temporary name, written and fsynced; all of them are read
//! back as one stream through the same check, then renamed one by one, and the split receipt
//! `NAME-receipt.json` (listing the parts) comes last, so `cat NAME.*` on the server is the
//! archive.
//!
//! A copy that fails removes what it made (the temporary files, or the renamed files when the
//! receipt could not be written) and forgets its record; when even that fails (the connection
//! is gone), the record stays and the next preflight settles it. A server without
//! `fsync@openssh.com` gets the copy anyway, with a warning: its bytes were read back, but may
//! still be only in the server's page cache. A directory cannot be fsynced over SFTP, so the
//! renames are as durable as the server's filesystem makes them.

use super::chain::Chain;
use super::{Session, Sftp, SftpError, TEMP_PREFIX};
use crate::systemd::sdnotify::Progress;
use crate::target::local::{part_name, MAX_PARTS};
use crate::target::receipt::Receipt;
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

/// The files the archive gets on the server, in order: its own name alone, or (with
/// `split`, parts of at most that many bytes) `NAME.000`, `NAME.001`, ... with the size of each,
/// as many as `size` needs and at least one. More than [`MAX_PARTS`] is refused.
pub fn layout(archive: &str, size: u64, split: Option<u64>) -> Result<Vec<(String, u64)>, String> {
    let Some(part) = split.filter(|&p| p > 0) else {
        return Ok(vec![(archive.to_owned(), size)]);
    };
    let count = size.div_ceil(part).max(1);
    if count > MAX_PARTS as u64 {
        return Err(format!(
            "the archive ({size} bytes) would need {count} parts of {part} bytes, more than {MAX_PARTS}; use a larger split size"
        ));
    }
    Ok((0..count)
        .map(|i| {
            let len = part.min(size - i * part);
            (part_name(archive, i as usize), len)
        })
        .collect())
}

/// Copies `source` to `sftp`; `readback` checks the temporary files as one stream (it gets
/// their bytes and must read them to the end).
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
    let fail = |e: &dyn std::fmt::Display, hint: Option<String>| Failed {
        detail: e.to_string(),
        hint: hint.map_or_else(|| again.clone(), |h| format!("{h} {again}")),
    };
    let files = layout(source.archive, source.size, t.split).map_err(|d| fail(&d, None))?;
    let split = files[0].0 != source.archive;
    let receipt = receipt_for(&source.receipt, &files, split).map_err(|d| fail(&d, None))?;
    let receipt_name = Receipt::file_name(source.archive, split);
    let mut s = sftp
        .connect()
        .map_err(|e| fail(&format!("{}: {e}", sftp.host_port()), e.hint()))?;
    let final_path = t.remote_path(source.archive);
    taken(sftp, &mut s, source.archive, &files)?;
    record(sftp, state, &final_path, run_id);
    let mut made = Vec::new();
    let result =
        steps(sftp, &mut s, run_id, &files, source, readback, &mut made).and_then(|fsynced| {
            put_receipt(&mut s, t, run_id, &receipt_name, &receipt)
                .map(|()| fsynced)
                .map_err(|e| Step::new(format!("writing the receipt of {url}: {e}"), &e))
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
        Err(step) => {
            undo(sftp, &mut s, state, &final_path, run_id, &made);
            Err(fail(&step.detail, step.hint))
        }
    }
}

/// A failed step: what failed, and the fix when the error has one of its own.
struct Step {
    detail: String,
    hint: Option<String>,
}

impl Step {
    fn new(detail: String, e: &SftpError) -> Step {
        Step {
            detail,
            hint: e.hint(),
        }
    }

    fn plain(detail: String) -> Step {
        Step { detail, hint: None }
    }
}

/// The receipt for the server: the local one (without parts), listing `files` when `split`.
fn receipt_for(local: &[u8], files: &[(String, u64)], split: bool) -> Result<Vec<u8>, String> {
    if !split {
        return Ok(local.to_vec());
    }
    let mut r: Receipt = serde_json::from_slice(local)
        .map_err(|e| format!("the local receipt cannot be read again: {e}"))?;
    r.parts = files.iter().map(|(n, _)| n.clone()).collect();
    Ok(r.to_json())
}

/// Fails when any name the archive would take (its files, either receipt) exists already.
fn taken(
    sftp: &Sftp,
    s: &mut Session,
    archive: &str,
    files: &[(String, u64)],
) -> Result<(), Failed> {
    let t = &sftp.target;
    let names = files.iter().map(|(n, _)| n.clone()).chain([
        archive.to_owned(),
        Receipt::file_name(archive, false),
        Receipt::file_name(archive, true),
    ]);
    for name in names {
        match s.stat(&t.remote_path(&name)) {
            Err(e) if e.is_no_such_file() => {}
            Ok(_) => {
                return Err(Failed {
                    detail: format!("{} exists already and is never replaced", t.url_of(&name)),
                    hint: format!("Look at {} on {}: another host may use the same directory; give each host its own path.", t.path, t.host),
                })
            }
            Err(e) => {
                return Err(Failed {
                    detail: e.to_string(),
                    hint: e.hint().unwrap_or_else(|| format!(
                        "The local archive is kept; the next run copies its new archive to [[target]] \"{}\" again.",
                        sftp.name
                    )),
                })
            }
        }
    }
    Ok(())
}

/// Removes what the failed copy made; forgets the record once nothing is left.
fn undo(
    sftp: &Sftp,
    s: &mut Session,
    state: &Path,
    final_path: &str,
    run_id: &str,
    made: &[String],
) {
    let mut left = false;
    for path in made {
        match s.remove(path) {
            Ok(()) => {}
            Err(e) if e.is_no_such_file() => {}
            Err(e) => {
                left = true;
                log::warn!("cannot remove {path} on {} after the failed copy: {e}; it has no receipt, so no command counts it as an archive, and the next preflight removes it", sftp.host_port());
            }
        }
    }
    if !left {
        forget(sftp, state, final_path, run_id);
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

/// Upload and fsync of every file, the read-back of all of them, the renames. Returns
/// whether the server fsynced them; `made` gets every path on the server to remove should
/// the copy fail.
fn steps(
    sftp: &Sftp,
    s: &mut Session,
    run_id: &str,
    files: &[(String, u64)],
    source: Source<'_>,
    readback: &mut dyn FnMut(&mut dyn Read) -> Result<(), String>,
    made: &mut Vec<String>,
) -> Result<bool, Step> {
    let t = &sftp.target;
    let url = t.url_of(source.archive);
    let temps: Vec<String> = files
        .iter()
        .map(|(n, _)| t.remote_path(&format!("{TEMP_PREFIX}{run_id}.{n}")))
        .collect();
    let mut data = source.data;
    let mut progress = Progress::new(format!("copying to {}", sftp.name), Some(source.size));
    let mut fsynced = true;
    let mut sent = 0u64;
    for (temp, (_, len)) in temps.iter().zip(files) {
        let h = s
            .create_exclusive(temp)
            .map_err(|e| Step::new(e.to_string(), &e))?;
        made.push(temp.clone());
        let part = upload(s, &h, &mut (&mut data).take(*len), &mut progress, &mut sent);
        let synced = part.and_then(|()| s.fsync(&h).map_err(|e| Step::new(e.to_string(), &e)));
        let closed = s.close(h).map_err(|e| Step::new(e.to_string(), &e));
        fsynced &= synced.and_then(|f| closed.map(|()| f))?;
    }
    progress.finish();
    let mut extra = [0u8; 1];
    let more = data
        .read(&mut extra)
        .map_err(|e| Step::plain(format!("reading the local archive: {e}")))?;
    if sent != source.size || more > 0 {
        return Err(Step::plain(format!(
            "{} bytes of the local archive were read, its receipt says {}",
            sent + more as u64,
            source.size
        )));
    }
    if !fsynced {
        log::warn!("target {}: the server does not offer fsync@openssh.com, so {url} may be only in its page cache when its receipt is written", sftp.name);
    }
    crate::host::fault::point("sftp-before-readback");
    read_back(sftp, s, &temps, source.size, readback)
        .map_err(|d| Step::plain(format!("the read-back of {url} failed: {d}")))?;
    for (temp, (name, _)) in temps.iter().zip(files) {
        let final_path = t.remote_path(name);
        s.rename(temp, &final_path).map_err(|e| {
            let detail = if e.is_failure() {
                format!("{final_path} could not get its final name (an existing file is never replaced): {e}")
            } else {
                e.to_string()
            };
            Step::new(detail, &e)
        })?;
        made.push(final_path);
        crate::host::fault::pass("sftp-part-renamed");
    }
    Ok(fsynced)
}

/// Streams `data` to the open file with pipelined WRITEs from offset 0, counting into `sent`.
fn upload(
    s: &mut Session,
    h: &super::Handle,
    data: &mut dyn Read,
    progress: &mut Progress,
    sent: &mut u64,
) -> Result<(), Step> {
    let mut buf = vec![0u8; BLOCK];
    let mut offset = 0u64;
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Step::plain(format!("reading the local archive: {e}"))),
        };
        s.write_all(h, offset, &buf[..n])
            .map_err(|e| Step::new(e.to_string(), &e))?;
        offset += n as u64;
        *sent += n as u64;
        progress.update(*sent);
    }
}

/// Reads the temporary files back through `readback` as one stream; together they must be
/// the archive's size.
fn read_back(
    sftp: &Sftp,
    s: &mut Session,
    temps: &[String],
    size: u64,
    readback: &mut dyn FnMut(&mut dyn Read) -> Result<(), String>,
) -> Result<(), String> {
    crate::systemd::sdnotify::status(&format!(
        "verifying {}: reading {} back",
        sftp.name, temps[0]
    ));
    let mut reader = Chain::open(s, temps, Some(size)).map_err(|e| e.to_string())?;
    readback(&mut reader)?;
    reader.close().map_err(|e| e.to_string())
}

/// The receipt through `.vouch-tmp.RUN.NAME.json`, renamed to `NAME.json` (never replacing).
fn put_receipt(
    s: &mut Session,
    t: &crate::config::SftpTarget,
    run_id: &str,
    name: &str,
    receipt: &[u8],
) -> Result<(), SftpError> {
    let temp = t.remote_path(&format!("{TEMP_PREFIX}{run_id}.{name}"));
    let h = s.create_exclusive(&temp)?;
    let written = s
        .write_all(&h, 0, receipt)
        .and_then(|()| s.fsync(&h).map(|_| ()));
    let closed = s.close(h);
    let renamed = written
        .and(closed)
        .and_then(|()| s.rename(&temp, &t.remote_path(name)));
    if renamed.is_err() {
        let _ = s.remove(&temp);
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_full_but_the_last_and_never_more_than_max_parts() {
        let a = "web-20261201T030000Z.tar.gz.age";
        assert_eq!(layout(a, 10, None).unwrap(), [(a.to_owned(), 10)]);
        let parts = layout(a, 10, Some(4)).unwrap();
        let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [format!("{a}.000"), format!("{a}.001"), format!("{a}.002")]
        );
        assert_eq!(parts.iter().map(|p| p.1).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(
            layout(a, 8, Some(4)).unwrap().len(),
            2,
            "no empty last part"
        );
        assert_eq!(layout(a, 3, Some(4)).unwrap(), [(format!("{a}.000"), 3)]);
        assert_eq!(layout(a, 1000, Some(1)).unwrap().len(), MAX_PARTS);
        let e = layout(a, 1001, Some(1)).unwrap_err();
        assert!(
            e.contains("more than 1000") && e.contains("larger split size"),
            "{e}"
        );
    }
}
