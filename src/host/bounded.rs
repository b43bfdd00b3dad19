//! Reading the small files vouch trusts least: receipts, state records, the config and keys.
//!
//! Each of them can be made to block (a FIFO under its name), to never end (a link to
//! `/dev/zero`) or to be huge, by accident or by someone who can write where it lives. So they
//! are opened without blocking (`O_NONBLOCK`), optionally without following a symbolic link
//! (`O_NOFOLLOW`), must be regular files once open (`fstat`), and are read up to a cap: past it
//! the read fails with an error that says so, instead of growing until the kernel kills vouch.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The most a receipt may hold (a real one is under 2 KiB).
pub const RECEIPT_CAP: u64 = 1 << 20;
/// The most a state record (`last-run.json`, `verified.json`, ...) may hold.
pub const STATE_CAP: u64 = 16 << 20;
/// The most a config file may hold.
pub const CONFIG_CAP: u64 = 4 << 20;
/// The most a key file (an identity or a recipients file) may hold.
pub const KEY_CAP: u64 = 1 << 20;

/// Whether a symbolic link at the path itself is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow it (files an administrator names: the config, keys).
    Follow,
    /// Refuse it (files vouch writes itself: receipts, state records).
    Refuse,
}

/// What a file that is not a regular file is, in words.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading without blocking on a FIFO and checks that it is a regular file.
/// The returned file reads normally (a regular file never blocks anyway).
pub fn open_regular(path: &Path, links: Links) -> io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if links == Links::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && links == Links::Refuse => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "it is a symbolic link, not a regular file",
            ))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is {}, not a regular file", kind_of(&meta)),
        ));
    }
    Ok(file)
}

/// Reads all of `file`, failing once more than `cap` bytes come.
pub fn read_to_cap(file: impl Read, cap: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    file.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "it is larger than {}, more than such a file ever holds",
                human(cap)
            ),
        ));
    }
    Ok(out)
}

/// Reads the regular file at `path` whole, at most `cap` bytes (see the module doc).
pub fn read(path: &Path, links: Links, cap: u64) -> io::Result<Vec<u8>> {
    read_to_cap(open_regular(path, links)?, cap)
}

/// Like [`read`], for text that must be UTF-8.
pub fn read_string(path: &Path, links: Links, cap: u64) -> io::Result<String> {
    String::from_utf8(read(path, links, cap)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()))
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_read_up_to_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read(&p, Links::Refuse, 5).unwrap(), b"12345");
        let e = read(&p, Links::Refuse, 4).unwrap_err();
        assert!(e.to_string().contains("larger than 4 bytes"), "{e}");
    }

    #[test]
    fn endless_and_blocking_files_fail_at_once() {
        let e = read(Path::new("/dev/zero"), Links::Follow, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read(&fifo, Links::Follow, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = read(dir.path(), Links::Follow, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
    }

    #[test]
    fn a_link_is_followed_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert_eq!(read(&link, Links::Follow, 10).unwrap(), b"x");
        let e = read(&link, Links::Refuse, 10).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let zero = dir.path().join("z");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read(&zero, Links::Follow, 10).is_err());
    }
}
