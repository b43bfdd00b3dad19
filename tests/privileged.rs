//! Preflight against real kernels and filesystems: read-only bind mounts, tmpfs, loop-mounted
//! ext4, immutable directories, unprivileged users. These need root (mount namespaces, loop
//! devices, chattr); CI runs as root. Without root they fail and say so, never pass quietly.

mod util;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use util::{assert_code, stderr, Env};

fn require_root() {
    assert!(
        util::is_root(),
        "this test needs root (mount namespaces, loop devices, chattr); run the suite as root, as CI does"
    );
}

/// Runs `SETUP; exec vouch ARGS` as a shell script inside a private mount namespace, so mounts
/// made by SETUP vanish with the process.
fn in_namespace(env: &Env, setup: &str, args: &[&str]) -> Output {
    env.wrapped(&["unshare", "-m", "--propagation", "private"], setup, args)
        .output()
        .expect("unshare (util-linux) is needed")
}

fn setup_env() -> Env {
    let env = Env::new();
    fs::write(env.src.join("data"), "some data\n").unwrap();
    env
}

fn assert_nothing_written(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "files were written to {}: {left:?}",
        dir.display()
    );
}

#[test]
fn a_read_only_bind_mount_is_15_with_the_read_write_paths_fix() {
    require_root();
    let env = setup_env();
    env.write_config("", "min-free = 0");
    let t = env.target.display();
    let setup = format!("mount --bind '{t}' '{t}'; mount -o remount,bind,ro '{t}'");
    let out = in_namespace(&env, &setup, &["run"]);
    assert_code(&out, 15);
    let err = stderr(&out);
    assert!(err.contains("read-only"), "{err}");
    assert!(
        err.contains(&format!("Remount {t}")),
        "terminal runs name the mount: {err}"
    );
    // Under systemd ($INVOCATION_ID) the fix is the sandbox line.
    let setup = format!("export INVOCATION_ID=0123; {setup}");
    let out = in_namespace(&env, &setup, &["run"]);
    assert_code(&out, 15);
    assert!(
        stderr(&out).contains(&format!("ReadWritePaths={t}")),
        "{}",
        stderr(&out)
    );
    assert_nothing_written(&env.target);
}

#[test]
fn a_tmpfs_target_is_19_unless_allowed() {
    require_root();
    let env = setup_env();
    env.write_config("", "min-free = 0");
    let setup = format!("mount -t tmpfs -o size=4m tmpfs '{}'", env.target.display());
    let out = in_namespace(&env, &setup, &["run"]);
    assert_code(&out, 19);
    assert!(stderr(&out).contains("tmpfs"), "{}", stderr(&out));
    env.write_config("", "min-free = 0\nallow-volatile = true");
    let out = in_namespace(&env, &setup, &["run"]);
    assert_code(&out, 0);
    // The tmpfs vanished with the namespace; the real directory below it was never touched.
    assert_nothing_written(&env.target);
}

#[test]
fn require_mount_on_a_plain_directory_is_14() {
    require_root();
    let env = setup_env();
    env.write_config("", "min-free = 0\nrequire-mount = true");
    let out = env.vouch(&["run"]);
    assert_code(&out, 14);
    let err = stderr(&out);
    assert!(err.contains("not a mount point"), "{err}");
    assert!(
        err.contains("systemctl status"),
        "the fix says how to see why: {err}"
    );
    assert!(
        !err.contains("require-mount = false"),
        "the fix is never to turn the guard off: {err}"
    );
    assert_nothing_written(&env.target);
    // Mounted, the same config works.
    let setup = format!("mount -t tmpfs -o size=4m tmpfs '{}'", env.target.display());
    env.write_config(
        "",
        "min-free = 0\nrequire-mount = true\nallow-volatile = true",
    );
    assert_code(&in_namespace(&env, &setup, &["run"]), 0);
}

#[test]
fn a_self_bind_like_read_write_paths_makes_is_not_a_mount_but_a_real_disk_is() {
    require_root();
    let env = setup_env();
    env.write_config("", "min-free = 0\nrequire-mount = true");
    let t = env.target.display();
    // What ReadWritePaths= does inside vouch.service: the empty directory bound onto itself.
    let out = in_namespace(&env, &format!("mount --bind '{t}' '{t}'"), &["run"]);
    assert_code(&out, 14);
    assert!(
        stderr(&out).contains("not a mount point"),
        "{}",
        stderr(&out)
    );
    assert_nothing_written(&env.target);
    // A real disk there, bound onto itself the same way, is a mount.
    let disk = ext4_image(&env, 16);
    let out = in_namespace(&env, &format!("{disk}; mount --bind '{t}' '{t}'"), &["run"]);
    assert_code(&out, 0);
    assert_nothing_written(&env.target);
}

/// Rewrites the config's target to `BELOW` under the target directory, with `mount` naming the
/// target directory.
fn target_below_mount(env: &Env, below: &str) {
    let t = env.target.display().to_string();
    let text = fs::read_to_string(&env.config).unwrap().replace(
        &format!("path = \"{t}\""),
        &format!("path = \"{t}/{below}\"\nmount = \"{t}\""),
    );
    fs::write(&env.config, text).unwrap();
}

#[test]
fn mount_names_a_mount_point_above_the_target() {
    require_root();
    let env = setup_env();
    env.write_config("", "min-free = 0");
    target_below_mount(&env, "backups");
    let t = env.target.display();
    let disk = ext4_image(&env, 16);
    let bind = format!("mkdir -p '{t}/backups'; mount --bind '{t}/backups' '{t}/backups'");
    let out = in_namespace(&env, &format!("{disk}; {bind}"), &["run"]);
    assert_code(&out, 0);
    // Unmounted, with the target directory present and self-bound: 14, naming the mount point.
    let out = in_namespace(&env, &bind, &["run"]);
    assert_code(&out, 14);
    let err = stderr(&out);
    assert!(err.contains(&format!("{t} is not a mount point")), "{err}");
    let backups = env.target.join("backups");
    assert_nothing_written(&backups);
}

/// Makes a small ext4 image and returns the shell that loop-mounts it on the target.
fn ext4_image(env: &Env, size_mib: u32) -> String {
    let image = env.dir.path().join("disk.img");
    let status = Command::new("truncate")
        .args(["-s", &format!("{size_mib}M")])
        .arg(&image)
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0"])
        .arg(&image)
        .output()
        .expect("mkfs.ext4 (e2fsprogs) is needed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "mount -o loop '{}' '{}'",
        image.display(),
        env.target.display()
    )
}

#[test]
fn a_small_disk_is_17_at_preflight_and_30_when_it_fills_mid_run() {
    require_root();
    let env = Env::new();
    let mount = ext4_image(&env, 8);
    // Expected size from the sources (12 MB) is more than the disk: 17 before writing.
    let random: Vec<u8> = (0..12_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8 ^ (i >> 3) as u8)
        .collect();
    fs::write(env.src.join("big.bin"), &random).unwrap();
    env.write_config("", "min-free = 0");
    let out = in_namespace(&env, &mount, &["run"]);
    assert_code(&out, 17);
    assert!(stderr(&out).contains("free"), "{}", stderr(&out));

    // A small first archive makes the estimate small; then incompressible data fills the disk.
    fs::write(env.src.join("big.bin"), b"small").unwrap();
    let out = in_namespace(&env, &mount, &["run"]);
    assert_code(&out, 0);
    let check = format!(
        "{mount}; ls -A '{}' > '{}/listing'",
        env.target.display(),
        env.dir.path().display()
    );
    let listing = |env: &Env| {
        let out = in_namespace(env, &check, &["--version"]);
        assert_code(&out, 0);
        fs::read_to_string(env.dir.path().join("listing")).unwrap()
    };
    let before = listing(&env);
    assert_eq!(
        before
            .lines()
            .filter(|l| l.ends_with(".tar.gz.age"))
            .count(),
        1,
        "{before}"
    );
    let mut x: u64 = 88172645463325252;
    let noise: Vec<u8> = (0..12_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(env.src.join("big.bin"), &noise).unwrap();
    let out = in_namespace(&env, &mount, &["run"]);
    assert_code(&out, 30);
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    let after = listing(&env);
    assert_eq!(
        before, after,
        "the old archive must be untouched and no temporary file left"
    );
}

#[test]
fn an_immutable_directory_is_16() {
    require_root();
    let env = setup_env();
    env.write_config("", "min-free = 0");
    let status = Command::new("chattr").arg("+i").arg(&env.target).status();
    let status = status.expect("chattr (e2fsprogs) is needed");
    assert!(
        status.success(),
        "chattr +i failed on {}",
        env.target.display()
    );
    let out = env.vouch(&["run"]);
    let _ = Command::new("chattr").arg("-i").arg(&env.target).status();
    assert_code(&out, 16);
    let err = stderr(&out);
    assert!(
        err.contains("permission denied") && err.contains("uid 0"),
        "{err}"
    );
    assert_nothing_written(&env.target);
}

#[test]
fn a_user_without_write_permission_is_16() {
    require_root();
    let env = setup_env();
    env.write_config("", "min-free = 0");
    // Everything readable and the state writable by nobody, but the target stays root's 0755.
    for p in [env.dir.path(), env.src.as_path()] {
        fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    fs::create_dir_all(&env.state).unwrap();
    fs::create_dir_all(&env.runtime).unwrap();
    let status = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&env.state)
        .arg(&env.runtime)
        .arg(&env.identity)
        .arg(&env.config)
        .status()
        .unwrap();
    assert!(status.success());
    let out = env
        .as_nobody(&["run"])
        .output()
        .expect("setpriv (util-linux) is needed");
    assert_code(&out, 16);
    let err = stderr(&out);
    assert!(
        err.contains("owned by uid 0") && err.contains("0755"),
        "{err}"
    );
    assert_nothing_written(&env.target);
}

#[test]
fn preflight_prints_every_check_and_exits_with_the_first_failure() {
    let env = setup_env();
    env.write_config("", "min-free = 0");
    let out = env.vouch(&["preflight"]);
    assert_code(&out, 0);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    for check in [
        "config",
        "lock",
        "source",
        "keys",
        "target-writable",
        "target-space",
    ] {
        assert!(table.contains(check), "{check} missing from:\n{table}");
    }
    fs::remove_file(&env.identity).unwrap();
    let out = env.vouch(&["preflight", "--json"]);
    assert_code(&out, 13);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit-name"], "KEY");
    let failed: Vec<_> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{doc}");
    assert!(failed[0]["fix"].as_str().unwrap().contains("identity"));
    assert_nothing_written(&env.target);
}

#[test]
fn an_identity_of_another_key_or_a_garbage_recipient_is_13() {
    let env = setup_env();
    let (_, other) = vouch::pipeline::crypt::generate();
    let good = env.recipient.clone();
    for (recipient, fragment) in [
        (other.as_str(), "matches none"),
        ("age1garbage", "not an age"),
    ] {
        let text = fs::read_to_string({
            env.write_config("", "");
            &env.config
        })
        .unwrap()
        .replace(&good, recipient);
        fs::write(&env.config, text).unwrap();
        let out = env.vouch(&["run"]);
        assert_code(&out, 13);
        assert!(stderr(&out).contains(fragment), "{}", stderr(&out));
        assert_nothing_written(&env.target);
    }
}

#[test]
fn a_missing_source_is_12() {
    let env = setup_env();
    env.write_config("", "");
    fs::remove_dir_all(&env.src).unwrap();
    let out = env.vouch(&["run"]);
    assert_code(&out, 12);
    assert!(stderr(&out).contains(&env.src.display().to_string()));
    assert_nothing_written(&env.target);
}

#[test]
fn a_missing_target_is_14_and_is_not_created() {
    let env = setup_env();
    env.write_config("", "");
    fs::remove_dir(&env.target).unwrap();
    let out = env.vouch(&["run"]);
    assert_code(&out, 14);
    assert!(
        !env.target.exists(),
        "vouch must not create target directories"
    );
}

/// Mounts an empty, mode-000, read-only directory named like systemd's inaccessible node over
/// `over`, as `InaccessiblePaths=` and `ProtectHome=yes` do (a shell snippet for `in_namespace`).
fn inaccessible_over(env: &Env, over: &Path) -> String {
    let node = env.dir.path().join("run/systemd/inaccessible/dir");
    fs::create_dir_all(&node).unwrap();
    fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let (n, o) = (node.display(), over.display());
    format!("mount --bind '{n}' '{o}'; mount -o remount,bind,ro '{o}'")
}

#[test]
fn a_target_hidden_by_the_sandbox_is_15_naming_the_setting() {
    require_root();
    let env = setup_env();
    env.write_config("", "min-free = 0");
    // InaccessiblePaths=TARGET: the target is an empty, unwritable directory.
    let out = in_namespace(&env, &inaccessible_over(&env, &env.target), &["run"]);
    assert_code(&out, 15);
    let err = stderr(&out);
    assert!(err.contains("is hidden from this process"), "{err}");
    assert!(err.contains("InaccessiblePaths="), "{err}");
    assert!(!err.contains("tmpfs"), "not a volatile target: {err}");
    assert_nothing_written(&env.target);

    // ProtectHome=yes over a directory above the target: the target does not exist inside.
    let home = env.dir.path().join("home");
    let below = home.join("backups");
    fs::create_dir_all(&below).unwrap();
    let text = fs::read_to_string(&env.config).unwrap().replace(
        &format!("path = \"{}\"", env.target.display()),
        &format!("path = \"{}\"", below.display()),
    );
    fs::write(&env.config, text).unwrap();
    let out = in_namespace(&env, &inaccessible_over(&env, &home), &["preflight"]);
    assert_code(&out, 15);
    let err = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        err.contains(&format!("mounted at {}", home.display())),
        "{err}"
    );
    assert_nothing_written(&below);
}

/// An exFAT image on a loop device, mounted through FUSE by `mount.exfat-fuse`, as a Debian host
/// with exfat-fuse mounts a stick: no `RENAME_NOREPLACE`, no hard links. Unmounted and detached
/// on drop.
struct ExfatDisk {
    point: std::path::PathBuf,
    device: String,
}

impl ExfatDisk {
    fn mount(env: &Env, point: &Path) -> ExfatDisk {
        let image = env.dir.path().join("exfat.img");
        let run = |cmd: &mut Command| {
            let out = cmd
                .output()
                .expect("exfatprogs, exfat-fuse and util-linux are needed");
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        run(Command::new("truncate").arg("-s").arg("64M").arg(&image));
        run(Command::new("mkfs.exfat").arg(&image));
        let device = run(Command::new("losetup").args(["-f", "--show"]).arg(&image));
        let disk = ExfatDisk {
            point: point.to_owned(),
            device,
        };
        run(Command::new("mount.exfat-fuse")
            .arg(&disk.device)
            .arg(point));
        disk
    }
}

impl Drop for ExfatDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

#[test]
fn an_exfat_stick_through_fuse_takes_the_commit_and_has_no_file_size_limit() {
    require_root();
    let env = setup_env();
    let _disk = ExfatDisk::mount(&env, &env.target);
    let link = Command::new("ln")
        .arg(env.src.join("data"))
        .arg(env.target.join("link"))
        .output()
        .unwrap();
    assert!(
        !link.status.success(),
        "this exFAT is expected to have no hard links"
    );
    assert_eq!(vouch::host::filesystem::file_limit(&env.target), None);
    env.write_config("", "min-free = 0\nsplit = \"off\"");
    let out = env.vouch(&["preflight"]);
    assert_code(&out, 0);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        !table.contains("largest file"),
        "no 4 GiB limit is guessed: {table}"
    );
    for _ in 0..2 {
        assert_code(&env.vouch(&["run"]), 0);
        // Archive names carry the second they were made in.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(Env::archives_in(&env.target).len(), 2);
    let left: Vec<String> = env
        .target_files()
        .into_iter()
        .filter(|n| n.starts_with(".vouch-"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    assert_code(&env.vouch(&["verify", "--all"]), 0);
}

#[test]
fn a_process_file_size_limit_is_18_naming_limitfsize_and_split() {
    require_root();
    let env = setup_env();
    fs::write(env.src.join("big.bin"), util::noise(3 << 20, 7)).unwrap();
    env.write_config("", "min-free = 0\nsplit = \"off\"");
    let out = env
        .wrapped(&[], "ulimit -f 1024", &["run"])
        .output()
        .unwrap();
    assert_code(&out, 18);
    let err = stderr(&out);
    assert!(err.contains("LimitFSIZE="), "{err}");
    assert!(err.contains("split = \"auto\""), "{err}");
    assert!(
        !err.contains("not FAT32"),
        "the filesystem is not to blame: {err}"
    );
    assert_nothing_written(&env.target);
}
