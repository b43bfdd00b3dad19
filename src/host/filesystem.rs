//! What the kernel says about the filesystem under a path: the mount that holds it (from
//! `/proc/self/mountinfo`), whether a filesystem is really mounted at a mount point, whether it
//! is volatile, and the largest file it and this process may write.
//!
//! These are facts about the host, shared by preflight, the error hints (which name the mount
//! and its systemd unit) and `doctor`; they decide nothing themselves.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// Per-mount options (`ro`, `rw`, `nosuid`, ...).
    pub options: String,
    /// Filesystem type.
    pub fstype: String,
    /// The mounted source.
    pub source: String,
    /// The directory of the source filesystem that is mounted (`/` for a whole filesystem).
    pub root: String,
    /// The filesystem's device number, `MAJOR:MINOR`.
    pub device: String,
}

impl Mount {
    /// True for a read-only mount.
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }

    /// True for one of systemd's inaccessible nodes, which `InaccessiblePaths=` and
    /// `ProtectHome=yes` mount over what they hide: `/run/systemd/inaccessible/dir` on a host,
    /// `/run/host/inaccessible/dir` in a container (the mount's root, within /run's tmpfs).
    pub fn is_inaccessible_node(&self) -> bool {
        self.root.ends_with("/inaccessible/dir")
    }
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                point: PathBuf::from(unescape_mount(l.get(4)?)),
                options: (*l.get(5)?).to_owned(),
                fstype: (*r.first()?).to_owned(),
                source: unescape_mount(r.get(1).unwrap_or(&"")),
                root: unescape_mount(l.get(3)?),
                device: (*l.get(2)?).to_owned(),
            })
        })
        .collect()
}

/// The mount that holds `path` among `mounts`: the last-mounted one with the longest mount
/// point that `path` starts with.
fn holding<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts.iter().filter(|m| path.starts_with(&m.point)) {
        if best.is_none_or(|b| m.point.as_os_str().len() >= b.point.as_os_str().len()) {
            best = Some(m);
        }
    }
    best
}

/// The mount that holds `path` (the last-mounted one with the longest matching mount point).
pub fn mount_of(path: &Path) -> Option<Mount> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    holding(&parse_mountinfo(&text), &path).cloned()
}

/// True when a filesystem is really mounted at `point` (absolute, canonical) according to
/// `mounts`: the topmost mount there shows a whole filesystem (its root is `/`) and another
/// device than the mount holding the parent directory. A bind of a directory onto itself, as
/// `ReadWritePaths=` makes for every path it names inside a unit, has the parent's device and a
/// root that is not `/`, so an empty mount-point directory is not taken for the disk. On btrfs
/// the root of a mount is the subvolume it shows, so there a subvolume of another device counts.
pub fn mounted_at(mounts: &[Mount], point: &Path) -> bool {
    let Some(parent) = point.parent() else {
        return true;
    };
    let Some(top) = mounts.iter().rev().find(|m| m.point == point) else {
        return false;
    };
    let whole = top.root == "/" || top.fstype == "btrfs";
    whole && holding(mounts, parent).is_none_or(|p| p.device != top.device)
}

/// True when a filesystem is mounted at `path` (see [`mounted_at`]). Without a readable
/// `/proc/self/mountinfo`, a device change from the parent directory decides.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(path) else {
        return false;
    };
    if let Ok(text) = fs::read_to_string("/proc/self/mountinfo") {
        return mounted_at(&parse_mountinfo(&text), &canon);
    }
    match (fs::metadata(&canon), canon.parent().map(fs::metadata)) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
}

/// The systemd mount unit of the mount point `path` (as `systemd-escape --path --suffix=mount`).
pub fn mount_unit(path: &Path) -> String {
    let trimmed = path.to_string_lossy().trim_matches('/').to_owned();
    if trimmed.is_empty() {
        return "-.mount".into();
    }
    let mut out = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b":_.".contains(&b) => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out + ".mount"
}

const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

/// The name of a volatile filesystem type, if `path` is on one.
pub fn volatile_fs(path: &Path) -> Option<&'static str> {
    let st = nix::sys::statfs::statfs(path).ok()?;
    match st.filesystem_type().0 as i64 {
        TMPFS_MAGIC => Some("tmpfs"),
        RAMFS_MAGIC => Some("ramfs"),
        OVERLAYFS_MAGIC => Some("overlay"),
        _ => None,
    }
}

/// What limits the size of one file on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// The filesystem's format (named by its type).
    Filesystem(&'static str),
    /// This process's `RLIMIT_FSIZE` (under systemd, the unit's `LimitFSIZE=`).
    Process,
}

/// The largest file a target can hold, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// Bytes.
    pub bytes: u64,
    /// Where the limit comes from.
    pub source: LimitSource,
}

const FAT_LARGEST_FILE: u64 = (4 << 30) - 1;

/// Filesystem types by `statfs` magic, with the largest file their format allows (`None`: no
/// limit an archive could reach). Only types listed with a limit have one; a type not listed
/// has none, and a file too large for it fails the run with EFBIG (30) when it happens. glibc's
/// `pathconf(_PC_FILESIZEBITS)` is not used: it answers 32 for every type it does not know
/// (exFAT, FUSE, NFS, SMB, ZFS, ...), which would split or refuse archives for nothing.
const FILESYSTEMS: &[(u32, &str, Option<u64>)] = &[
    (0x4d44, "FAT", Some(FAT_LARGEST_FILE)),
    (0xef53, "ext2/ext3/ext4", None),
    (0x5846_5342, "xfs", None),
    (0x9123_683e, "btrfs", None),
    (0x2011_bab0, "exFAT", None),
    (0xf2f5_2010, "f2fs", None),
    (0x5346_544e, "NTFS", None),
    (0x6969, "NFS", None),
    (0xfe53_4d42, "SMB2", None),
    (0xff53_4d42, "CIFS", None),
    (0x2fc1_2fc1, "ZFS", None),
    (0x6573_5546, "FUSE", None),
    (0x0102_1994, "tmpfs", None),
];

/// The name and largest file of the filesystem type with `statfs` magic `magic`.
pub fn filesystem_limit(magic: u32) -> (Option<&'static str>, Option<u64>) {
    FILESYSTEMS
        .iter()
        .find(|(m, _, _)| *m == magic)
        .map_or((None, None), |&(_, name, limit)| (Some(name), limit))
}

/// The largest file `path`'s filesystem and this process's `RLIMIT_FSIZE` allow, if limited,
/// with the tighter of the two as the source.
pub fn file_limit(path: &Path) -> Option<FileLimit> {
    let fs_limit = nix::sys::statfs::statfs(path).ok().and_then(|st| {
        let (name, limit) = filesystem_limit(st.filesystem_type().0 as u32);
        Some(FileLimit {
            bytes: limit?,
            source: LimitSource::Filesystem(name?),
        })
    });
    let rlimit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE)
        .ok()
        .map(|(soft, _)| soft)
        .filter(|&soft| soft != libc::RLIM_INFINITY)
        .map(|bytes| FileLimit {
            bytes,
            source: LimitSource::Process,
        });
    match (fs_limit, rlimit) {
        (Some(a), Some(b)) => Some(if b.bytes < a.bytes { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The largest file `path`'s filesystem and this process's `RLIMIT_FSIZE` allow, if limited.
pub fn largest_file(path: &Path) -> Option<u64> {
    file_limit(path).map(|l| l.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    95 22 0:5 / /mnt/my\\040disk ro,nosuid - vfat /dev/sdb1 ro\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[1].point, PathBuf::from("/mnt/my disk"));
        assert!(mounts[1].read_only());
        assert!(!mounts[0].read_only());
        assert_eq!(mounts[1].fstype, "vfat");
        assert_eq!(mounts[1].source, "/dev/sdb1");
        assert_eq!(mounts[1].root, "/");
        assert!(!mounts[1].is_inaccessible_node());
    }

    #[test]
    fn systemds_inaccessible_nodes_are_recognised() {
        // As seen inside a service with InaccessiblePaths=/srv/backups (host and container).
        let text = "300 22 0:25 /systemd/inaccessible/dir /srv/backups ro,nosuid,nodev,noexec shared:117 - tmpfs tmpfs rw\n\
                    301 22 0:25 /host/inaccessible/dir /home ro,nosuid,nodev,noexec shared:115 - tmpfs tmpfs rw\n\
                    302 22 0:25 /srv/data /srv/data rw shared:118 - ext4 /dev/sda1 rw\n";
        let mounts = parse_mountinfo(text);
        assert!(mounts[0].is_inaccessible_node());
        assert!(mounts[1].is_inaccessible_node());
        assert!(!mounts[2].is_inaccessible_node());
    }

    #[test]
    fn the_root_is_a_mount_point_and_a_subdirectory_is_not() {
        assert!(is_mount_point(Path::new("/")));
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        assert!(!is_mount_point(&sub));
    }

    /// Mountinfo as inside vouch.service with `ProtectSystem=strict` and
    /// `ReadWritePaths=/mnt/usb /mnt/stick/backups`: the root, a real disk at /mnt/stick, and
    /// the self-binds systemd makes for each path it opens.
    const SANDBOX: &str = "22 1 254:0 / / ro,relatime shared:1 - ext4 /dev/vda rw\n\
        40 22 8:17 / /mnt/stick ro,relatime shared:20 - exfat /dev/sdb1 rw\n\
        41 22 254:0 /mnt/usb /mnt/usb rw,relatime shared:1 - ext4 /dev/vda rw\n\
        42 40 8:17 /backups /mnt/stick/backups rw,relatime shared:20 - exfat /dev/sdb1 rw\n\
        43 40 8:17 / /mnt/stick rw,relatime shared:20 - exfat /dev/sdb1 rw\n";

    #[test]
    fn a_self_bind_of_an_empty_mount_point_is_not_a_mount() {
        let mounts = parse_mountinfo(SANDBOX);
        assert!(
            !mounted_at(&mounts, Path::new("/mnt/usb")),
            "self-bind of the root fs"
        );
        assert!(
            mounted_at(&mounts, Path::new("/mnt/stick")),
            "the disk, bound onto itself"
        );
        assert!(
            !mounted_at(&mounts, Path::new("/mnt/stick/backups")),
            "a directory of the disk bound onto itself is not the disk's mount point"
        );
        assert!(!mounted_at(&mounts, Path::new("/mnt")), "no entry at all");
        assert!(mounted_at(&mounts, Path::new("/")));
    }

    #[test]
    fn a_bind_of_another_filesystems_subdirectory_is_not_a_mount() {
        let text = "22 1 254:0 / / rw - ext4 /dev/vda rw\n\
                    30 22 8:1 / /srv rw - ext4 /dev/sda1 rw\n\
                    31 22 8:1 /data /mnt/usb rw - ext4 /dev/sda1 rw\n";
        let mounts = parse_mountinfo(text);
        assert!(mounted_at(&mounts, Path::new("/srv")));
        assert!(!mounted_at(&mounts, Path::new("/mnt/usb")));
    }

    #[test]
    fn a_btrfs_subvolume_of_another_disk_is_a_mount_and_one_of_the_root_disk_bound_is_not() {
        let text = "22 1 0:30 /@ / rw - btrfs /dev/vda2 rw,subvol=/@\n\
                    30 22 0:41 /@backups /mnt/usb rw - btrfs /dev/sdb1 rw,subvol=/@backups\n\
                    31 22 0:30 /@/srv/b /srv/b rw - btrfs /dev/vda2 rw,subvol=/@\n";
        let mounts = parse_mountinfo(text);
        assert!(mounted_at(&mounts, Path::new("/mnt/usb")));
        assert!(
            !mounted_at(&mounts, Path::new("/srv/b")),
            "a self-bind on the root disk"
        );
    }

    #[test]
    fn mount_units_are_named_as_systemd_escape_names_them() {
        assert_eq!(mount_unit(Path::new("/mnt/usb")), "mnt-usb.mount");
        assert_eq!(mount_unit(Path::new("/")), "-.mount");
        assert_eq!(
            mount_unit(Path::new("/mnt/my disk")),
            "mnt-my\\x20disk.mount"
        );
        assert_eq!(mount_unit(Path::new("/srv/a-b/.x")), "srv-a\\x2db-.x.mount");
    }

    #[test]
    fn only_fat_has_a_file_size_limit_and_unknown_types_have_none() {
        assert_eq!(filesystem_limit(0x4d44), (Some("FAT"), Some((4 << 30) - 1)));
        for magic in [
            0xef53,
            0x2011_bab0,
            0x6969,
            0xfe53_4d42,
            0x2fc1_2fc1,
            0x6573_5546,
        ] {
            let (name, limit) = filesystem_limit(magic);
            assert!(name.is_some(), "{magic:#x} is known");
            assert_eq!(limit, None, "{magic:#x} has no limit");
        }
        assert_eq!(filesystem_limit(0x1234_5678), (None, None));
    }

    #[test]
    fn an_ext4_or_tmpfs_directory_has_no_file_size_limit_without_an_rlimit() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(file_limit(dir.path()), None);
    }
}
