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
    assert!(
        stderr(&out).contains("not a mount point"),
        "{}",
        stderr(&out)
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
    let (_, other) = vouch::crypt::generate();
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
