//! The record of the staging directories this host's vouch made, kept outside any destination.
//!
//! A leftover staging directory in a destination is only rolled back when vouch can tell it
//! made it itself: a directory of the right name and owner is not enough, since whoever can
//! write in the destination (or a hostile archive, before such names were refused) could put
//! one there, with a journal that would "put back" their own files. So each restore draws a
//! random token, writes it into its journal's first line, and records the token, with the
//! staging directory's path, device and inode, in a file of its own in the record directory:
//! `restore-staging/` in the state directory (`$STATE_DIRECTORY`, else `/var/lib/vouch`), or,
//! when that cannot be written (a restore as an ordinary user), in the per-user state
//! directory (`$XDG_STATE_HOME/vouch`, else `~/.local/state/vouch`). A recovery acts on a
//! leftover only when one of them holds a record for its token that names that very
//! directory. The record is removed with the staging directory.
//!
//! When no record can be written anywhere, the restore goes ahead and says that, if it is
//! interrupted, its leftover will have to be dealt with by hand.

use super::journal::escape;
use crate::host::dirs::Dirs;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The record directory's name inside a state directory.
pub const DIR_NAME: &str = "restore-staging";

/// The most a record holds (one line with a path).
const RECORD_CAP: u64 = 64 << 10;

/// A staging directory's record, removed once the directory is gone.
#[derive(Debug)]
pub struct Record {
    file: PathBuf,
}

/// The places a record may be kept, in the order they are tried.
pub fn stores() -> Vec<PathBuf> {
    let mut out = vec![Dirs::from_env().state.join(DIR_NAME)];
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let user = std::env::var_os("XDG_STATE_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".local/state"))
        });
    if let Some(user) = user {
        let p = user.join("vouch").join(DIR_NAME);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// A new random token: 128 bits from the kernel, in hex.
pub fn token() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(crate::pipeline::io::hex(&bytes))
}

/// Whether `t` has the shape of a token (so it can name a file).
fn token_shaped(t: &str) -> bool {
    t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The text of a record for the staging directory at `path`, device `dev`, inode `ino`.
fn text(path: &Path, dev: u64, ino: u64) -> String {
    use std::os::unix::ffi::OsStrExt;
    format!(
        "vouch-restore-staging 1 {dev} {ino} {}\n",
        escape(path.as_os_str().as_bytes())
    )
}

/// Whether `store` is a directory of this user that nobody else can write in.
fn trusted(store: &Path) -> io::Result<()> {
    let m = fs::symlink_metadata(store)?;
    if !m.is_dir() || m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{} is not a directory of this user that only it can write in",
            store.display()
        )));
    }
    Ok(())
}

fn write_in(store: &Path, token: &str, text: &str) -> io::Result<PathBuf> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(store)?;
    trusted(store)?;
    let file = store.join(token);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&file)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::File::open(store)?.sync_all()?;
    Ok(file)
}

impl Record {
    /// Records the staging directory at `path` (device `dev`, inode `ino`) under `token`, in
    /// the first record directory that can be written. `None` (with a warning) when none can.
    pub fn create(token: &str, path: &Path, dev: u64, ino: u64) -> Option<Record> {
        let text = text(path, dev, ino);
        let mut failed = Vec::new();
        for store in stores() {
            match write_in(&store, token, &text) {
                Ok(file) => return Some(Record { file }),
                Err(e) => failed.push(format!("{}: {e}", store.display())),
            }
        }
        log::warn!(
            "restore: cannot record the staging directory {} ({}); if this restore is interrupted, \
             the next one will leave what it left alone, to be put back by hand",
            path.display(),
            failed.join("; ")
        );
        None
    }

    /// The record of `token`, when a record directory holds one naming the staging directory
    /// at `path` (device `dev`, inode `ino`).
    pub fn find(token: &str, path: &Path, dev: u64, ino: u64) -> Option<Record> {
        if !token_shaped(token) {
            return None;
        }
        let want = text(path, dev, ino);
        stores().into_iter().find_map(|store| {
            trusted(&store).ok()?;
            let file = store.join(token);
            let f = crate::host::bounded::open_regular(&file, crate::host::bounded::Links::Refuse)
                .ok()?;
            let mine = f.metadata().ok()?.uid() == nix::unistd::geteuid().as_raw();
            let got = crate::host::bounded::read_to_cap(f, RECORD_CAP).ok()?;
            (mine && got == want.as_bytes()).then_some(Record { file })
        })
    }

    /// Removes the record (its staging directory is gone).
    pub fn remove(self) {
        if let Err(e) = fs::remove_file(&self.file) {
            log::warn!("cannot remove {}: {e}", self.file.display());
        }
    }
}
