//! `vouch run` end to end: the built binary against temporary trees, restored with the real
//! `age`, `tar` and `sha256sum`.

mod util;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use util::{assert_code, describe_tree, restored, stderr, Env};

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with every kind of entry a restore must reproduce.
fn awkward_tree(src: &Path) {
    fs::create_dir_all(src.join("dir with spaces/empty dir")).unwrap();
    fs::write(src.join("dir with spaces/file with spaces.txt"), "spaces\n").unwrap();
    fs::write(
        src.join(OsStr::from_bytes(b"caf\xe9-latin1.txt")),
        "latin1 name\n",
    )
    .unwrap();
    fs::write(src.join("empty-file"), "").unwrap();
    // A path of about 250 characters below the source.
    let mut long = src.to_path_buf();
    for i in 0..5 {
        long.push(format!("{}{i}", "d".repeat(40)));
    }
    fs::create_dir_all(&long).unwrap();
    fs::write(long.join("f".repeat(40)), "deep\n").unwrap();
    fs::write(src.join("secret"), "0600\n").unwrap();
    set_mode(&src.join("secret"), 0o600);
    fs::write(src.join("tool.sh"), "#!/bin/sh\necho hi\n").unwrap();
    set_mode(&src.join("tool.sh"), 0o755);
    fs::create_dir(src.join("private")).unwrap();
    set_mode(&src.join("private"), 0o700);
    symlink(
        "dir with spaces/file with spaces.txt",
        src.join("relative-link"),
    )
    .unwrap();
    symlink("/nonexistent/dangling", src.join("dangling-link")).unwrap();
    fs::write(src.join("original"), "hard linked\n").unwrap();
    fs::hard_link(src.join("original"), src.join("second-name")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(src.join("big.bin"), big).unwrap();
}

#[test]
fn round_trip_through_stock_tools_reproduces_the_tree() {
    let env = Env::new();
    awkward_tree(&env.src);
    env.write_config("", "");
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let archives = env.archives();
    assert_eq!(archives.len(), 1, "{:?}", env.target_files());
    let name = archives[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("test-") && name.ends_with("Z.tar.gz.age"),
        "{name}"
    );
    let mode = fs::metadata(&archives[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "archives must not be readable by others");

    let into = env.dir.path().join("restore");
    env.stock_restore(&archives[0], &into);
    let before = describe_tree(&env.src);
    let after = describe_tree(&restored(&into, &env.src));
    assert_eq!(before, after);
}

#[test]
fn receipt_and_manifest_describe_the_archive() {
    let env = Env::new();
    fs::create_dir(env.src.join("d")).unwrap();
    fs::write(env.src.join("d/a.txt"), "alpha\n").unwrap();
    fs::write(env.src.join("skip.tmp"), "excluded\n").unwrap();
    nix::unistd::mkfifo(
        &env.src.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let required = env.src.join("d/a.txt");
    env.write_config(
        &format!(
            "exclude = [\"*.tmp\"]\nrequired = [\"{}\"]",
            required.display()
        ),
        "",
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let archive = &env.archives()[0];
    let receipt_path = format!("{}.json", archive.display());
    let receipt: serde_json::Value =
        serde_json::from_slice(&fs::read(&receipt_path).unwrap()).unwrap();
    let bytes = fs::read(archive).unwrap();
    assert_eq!(receipt["archive-size"], bytes.len() as u64);
    let sha = vouch::pipeline::io::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert_eq!(receipt["archive-sha256"], sha.as_str());
    assert_eq!(receipt["files"], 1);
    assert_eq!(receipt["skipped"], 1);
    assert_eq!(receipt["verification"], "full");
    assert_eq!(receipt["required"][0]["present"], true);
    assert_eq!(receipt["run-id"].as_str().unwrap().len(), 32);
    assert!(receipt["verified-at"].as_str().unwrap().ends_with('Z'));
    // The receipt names no file but the required one: with its path taken out, no name of
    // the source tree is left in it.
    let required_text = required.display().to_string();
    assert_eq!(receipt["required"][0]["path"], required_text.as_str());
    let text = fs::read_to_string(&receipt_path).unwrap();
    let rest = text.replace(&required_text, "");
    for name in ["a.txt", "skip.tmp", "pipe", &env.src.display().to_string()] {
        assert!(!rest.contains(name), "the receipt names {name}:\n{text}");
    }

    let manifest = env.manifest(archive);
    let entries = manifest["entries"].as_array().unwrap();
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.ends_with("d/a.txt")));
    assert!(
        !paths.iter().any(|p| p.ends_with("skip.tmp")),
        "excluded file archived"
    );
    assert!(
        !paths.iter().any(|p| p.starts_with('/')),
        "absolute path stored"
    );
    let file = entries
        .iter()
        .find(|e| e["path"].as_str().unwrap().ends_with("d/a.txt"))
        .unwrap();
    assert_eq!(file["type"], "file");
    assert_eq!(file["size"], 6);
    assert_eq!(
        file["sha256"],
        vouch::pipeline::io::hex(&<sha2::Sha256 as sha2::Digest>::digest(b"alpha\n")).as_str()
    );
    assert_eq!(manifest["skipped"][0]["type"], "fifo");
}

#[test]
fn every_target_gets_the_same_verified_archive() {
    let env = Env::new();
    fs::write(env.src.join("a"), "a\n").unwrap();
    let second = env.dir.path().join("second");
    fs::create_dir(&second).unwrap();
    env.write_config(
        "",
        &format!(
            "\n[[target]]\nname = \"second\"\npath = \"{}\"\n",
            second.display()
        ),
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let a = env.archives();
    let b = Env::archives_in(&second);
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    assert_eq!(fs::read(&a[0]).unwrap(), fs::read(&b[0]).unwrap());
    assert!(Path::new(&format!("{}.json", b[0].display())).exists());
}

#[test]
fn config_errors_exit_10_naming_the_key() {
    let env = Env::new();
    let cases: Vec<(String, &str)> = vec![
        (format!("[backup]\nsorces = [\"{}\"]\n", env.src.display()), "sorces"),
        ("[backup\n".to_owned(), "vouch.toml:1:"),
        (
            format!(
                "[backup]\nsources = [\"{}\"]\n[encryption]\nrecipients = [\"{}\"]\n[[target]]\nname = \"t\"\npath = \"{}\"\nmin-free = \"lots\"\n",
                env.src.display(),
                env.recipient,
                env.target.display()
            ),
            "min-free",
        ),
        (
            format!(
                "[backup]\nsources = [\"{}\"]\n[encryption]\nrecipients = [\"{}\"]\n",
                env.src.display(),
                env.recipient
            ),
            "target",
        ),
        (
            format!(
                "[backup]\nsources = [\"{}\"]\nrequired = [\"/elsewhere/x\"]\n[encryption]\nrecipients = [\"{}\"]\n[[target]]\nname = \"t\"\npath = \"{}\"\n",
                env.src.display(),
                env.recipient,
                env.target.display()
            ),
            "required",
        ),
        (
            format!(
                "[backup]\nsources = [\"{}\"]\non-read-error = \"ignore\"\n[encryption]\nrecipients = [\"{}\"]\n[[target]]\nname = \"t\"\npath = \"{}\"\n",
                env.src.display(),
                env.recipient,
                env.target.display()
            ),
            "on-read-error",
        ),
    ];
    for (text, key) in cases {
        fs::write(&env.config, &text).unwrap();
        let out = env.vouch(&["run"]);
        assert_code(&out, 10);
        let err = stderr(&out);
        assert!(
            err.contains(key),
            "message for {key:?} lacks the key: {err}"
        );
        assert!(
            err.contains(&env.config.display().to_string()),
            "message lacks the file: {err}"
        );
        assert!(env.archives().is_empty());
    }
    // A missing config file names the file.
    let out = Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args(["--config", "/nonexistent/vouch.toml", "run"])
        .output()
        .unwrap();
    assert_code(&out, 10);
    assert!(stderr(&out).contains("/nonexistent/vouch.toml"));
}

#[test]
fn bad_command_lines_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_vouch"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_code(&out, 2);
    let out = Command::new(env!("CARGO_BIN_EXE_vouch"))
        .arg("--help")
        .output()
        .unwrap();
    assert_code(&out, 0);
}

#[test]
fn a_held_lock_exits_11_at_once() {
    let env = Env::new();
    fs::write(env.src.join("a"), "a").unwrap();
    env.write_config("", "");
    fs::create_dir_all(&env.runtime).unwrap();
    let lock = File::create(env.runtime.join("lock")).unwrap();
    lock.try_lock().unwrap();
    let started = Instant::now();
    let out = env.vouch(&["run"]);
    assert_code(&out, 11);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(stderr(&out).contains("lock"));
    assert!(env.target_files().is_empty());
    drop(lock);
    assert_code(&env.vouch(&["run"]), 0);
}

#[test]
fn missing_or_empty_required_files_exit_32_and_keep_nothing() {
    let env = Env::new();
    fs::write(env.src.join("present"), "data").unwrap();
    fs::write(env.src.join("empty.db"), "").unwrap();
    for (name, why) in [("vault.enc", "missing"), ("empty.db", "empty: 0 bytes")] {
        let required = env.src.join(name);
        env.write_config(&format!("required = [\"{}\"]", required.display()), "");
        let out = env.vouch(&["run"]);
        assert_code(&out, 32);
        assert!(
            stderr(&out).contains(&format!("{} ({why})", required.display())),
            "{why}: {}",
            stderr(&out)
        );
        assert!(
            env.target_files().is_empty(),
            "{why}: {:?}",
            env.target_files()
        );
    }
    // A required directory counts when it holds something.
    fs::create_dir(env.src.join("uploads")).unwrap();
    env.write_config(
        &format!("required = [\"{}\"]", env.src.join("uploads").display()),
        "",
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 32);
    assert!(
        stderr(&out).contains("uploads (empty: nothing archived in this directory)"),
        "{}",
        stderr(&out)
    );
    fs::write(env.src.join("uploads/u1"), "u").unwrap();
    assert_code(&env.vouch(&["run"]), 0);
}

#[test]
fn a_corrupted_temporary_file_fails_verification_and_is_not_kept() {
    let env = Env::new();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(env.src.join("data"), data).unwrap();
    env.write_config("", "");
    let out = env
        .command(&["run"])
        .env("VOUCH_TEST_FAULT", "corrupt-temp")
        .output()
        .unwrap();
    assert_code(&out, 33);
    assert!(stderr(&out).contains("verification"), "{}", stderr(&out));
    assert!(env.target_files().is_empty(), "{:?}", env.target_files());
}

#[test]
fn killed_runs_leave_no_final_names_and_the_next_run_cleans_up() {
    let env = Env::new();
    let data: Vec<u8> = (0..500_000u32).map(|i| (i % 97) as u8).collect();
    fs::write(env.src.join("a"), &data).unwrap();
    fs::write(env.src.join("b"), &data).unwrap();
    env.write_config("", "");
    for point in [
        "after-create",
        "mid-archive",
        "before-verify",
        "before-commit",
    ] {
        let out = env
            .command(&["run"])
            .env("VOUCH_TEST_FAULT", format!("kill:{point}"))
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "{point}: {:?}", out.status);
        let files = env.target_files();
        assert!(
            files.iter().all(|f| f.starts_with(".vouch-tmp.")),
            "{point}: a final name appeared: {files:?}"
        );
        assert!(
            !files.is_empty(),
            "{point}: the temporary file should still be there"
        );
    }
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let files = env.target_files();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files.iter().all(|f| !f.starts_with(".vouch-tmp.")),
        "{files:?}"
    );
    assert!(stderr(&out).contains("interrupted run"), "{}", stderr(&out));
}

#[test]
fn missing_identity_exits_13_unless_ciphertext_only_is_allowed() {
    let env = Env::new();
    fs::write(env.src.join("a"), "a").unwrap();
    let text = |extra: &str| {
        format!(
            "[backup]\nsources = [\"{}\"]\n[encryption]\nrecipients = [\"{}\"]\n{extra}\n[[target]]\nname = \"t\"\npath = \"{}\"\n",
            env.src.display(),
            env.recipient,
            env.target.display()
        )
    };
    fs::write(&env.config, text("")).unwrap();
    let out = env.vouch(&["run"]);
    assert_code(&out, 13);
    assert!(stderr(&out).contains("identity"));
    assert!(env.target_files().is_empty());

    fs::write(&env.config, text("verify-without-identity = true")).unwrap();
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("ciphertext only"), "{}", stderr(&out));
    let receipt = format!("{}.json", env.archives()[0].display());
    assert!(fs::read_to_string(receipt)
        .unwrap()
        .contains("\"ciphertext-only\""));
}

#[test]
fn an_identity_readable_by_others_exits_13() {
    let env = Env::new();
    fs::write(env.src.join("a"), "a").unwrap();
    env.write_config("", "");
    set_mode(&env.identity, 0o644);
    let out = env.vouch(&["run"]);
    assert_code(&out, 13);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(env.target_files().is_empty());
}

#[test]
fn files_growing_or_shrinking_during_the_run_keep_the_archive_valid() {
    for grow in [true, false] {
        let env = Env::new();
        let original: Vec<u8> = (0..1_000_000u32).map(|i| (i % 13) as u8 + b'a').collect();
        let path = env.src.join("moving.log");
        fs::write(&path, &original).unwrap();
        fs::write(env.src.join("steady"), "steady\n").unwrap();
        env.write_config("", "");
        let child = env
            .command(&["run"])
            .env("VOUCH_TEST_FAULT", "stop-before-data:moving.log")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        util::wait_stopped(child.id());
        if grow {
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            std::io::Write::write_all(&mut f, &[b'z'; 50_000]).unwrap();
        } else {
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(1000)
                .unwrap();
        }
        util::resume(child.id());
        let out = child.wait_with_output().unwrap();
        assert_code(&out, 0);
        assert!(stderr(&out).contains("changed while"), "{}", stderr(&out));
        let archive = &env.archives()[0];
        let into = env.dir.path().join("restore");
        env.stock_restore(archive, &into);
        let restored_file = fs::read(restored(&into, &path)).unwrap();
        assert_eq!(restored_file.len(), original.len(), "grow={grow}");
        if grow {
            assert_eq!(restored_file, original);
        } else {
            assert_eq!(&restored_file[..1000], &original[..1000]);
            assert!(restored_file[1000..].iter().all(|&b| b == 0));
        }
        let manifest = env.manifest(archive);
        let changed = manifest["changed"].as_array().unwrap();
        assert_eq!(changed.len(), 1, "grow={grow}: {manifest}");
        assert!(changed[0].as_str().unwrap().ends_with("moving.log"));
    }
}

/// Runs `vouch run` as the unprivileged user `nobody` when the tests run as root, so that file
/// permissions apply (root reads everything).
fn run_unprivileged(env: &Env) -> std::process::Output {
    if !util::is_root() {
        return env.vouch(&["run"]);
    }
    let status = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(env.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    set_mode(env.dir.path(), 0o755);
    env.as_nobody(&["run"])
        .output()
        .expect("setpriv (util-linux) is needed to drop root")
}

#[test]
fn unreadable_files_fail_with_31_or_are_recorded_with_warn() {
    let env = Env::new();
    fs::write(env.src.join("readable"), "ok").unwrap();
    fs::write(env.src.join("locked"), "no").unwrap();
    set_mode(&env.src.join("locked"), 0o000);
    fs::create_dir(env.src.join("closed-dir")).unwrap();
    fs::write(env.src.join("closed-dir/inner"), "x").unwrap();
    set_mode(&env.src.join("closed-dir"), 0o000);

    env.write_config("", "");
    let out = run_unprivileged(&env);
    assert_code(&out, 31);
    let err = stderr(&out);
    assert!(
        err.contains("locked") && err.contains("closed-dir"),
        "{err}"
    );
    assert!(env.target_files().is_empty(), "{:?}", env.target_files());

    env.write_config("on-read-error = \"warn\"", "");
    let out = run_unprivileged(&env);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    let archive = &env.archives()[0];
    // Read the manifest as root or as the owner: the archive belongs to whoever ran vouch.
    let manifest = env.manifest(archive);
    let unreadable = manifest["unreadable"].as_array().unwrap();
    let text = format!("{unreadable:?}");
    assert!(
        text.contains("locked") && text.contains("closed-dir"),
        "{text}"
    );
    set_mode(&env.src.join("closed-dir"), 0o755);
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs `vouch run` under `ulimit -f BLOCKS` (1 KiB blocks).
fn run_with_file_limit(env: &Env, blocks: u32) -> std::process::Output {
    env.wrapped(&[], &format!("ulimit -f {blocks}"), &["run"])
        .output()
        .unwrap()
}

#[test]
fn a_file_size_limit_ends_in_exit_18_or_30_never_a_signal() {
    let env = Env::new();
    env.write_config("", "min-free = 0\nsplit = \"off\"");
    // Known in advance: the sources are bigger than the limit -> 18 before writing.
    fs::write(env.src.join("random.bin"), random_bytes(2_000_000, 7)).unwrap();
    let out = run_with_file_limit(&env, 1024);
    assert_code(&out, 18);
    assert!(stderr(&out).contains("largest file"), "{}", stderr(&out));
    assert!(env.target_files().is_empty(), "{:?}", env.target_files());

    // A limit below even the target's 4 KiB probe file: 18, and the fix is the limit, not
    // permissions.
    let out = run_with_file_limit(&env, 1);
    assert_code(&out, 18);
    assert!(stderr(&out).contains("LimitFSIZE="), "{}", stderr(&out));
    assert!(!stderr(&out).contains("permission"), "{}", stderr(&out));
    assert!(env.target_files().is_empty(), "{:?}", env.target_files());

    // Only found out mid-run: the last archive was small, this one is not -> 30.
    fs::write(env.src.join("random.bin"), random_bytes(1000, 7)).unwrap();
    assert_code(&env.vouch(&["run"]), 0);
    let before = env.target_files();
    fs::write(env.src.join("random.bin"), random_bytes(2_000_000, 9)).unwrap();
    fs::write(env.src.join("small"), "x").unwrap();
    let out = run_with_file_limit(&env, 1024);
    assert_code(&out, 30);
    assert!(stderr(&out).contains("File too large"), "{}", stderr(&out));
    assert_eq!(
        env.target_files(),
        before,
        "the old archive must stay untouched"
    );
}

#[test]
fn systemd_hears_every_phase_and_progress() {
    use std::os::unix::net::UnixDatagram;
    let env = Env::new();
    fs::write(env.src.join("a"), vec![7u8; 300_000]).unwrap();
    env.write_config("", "");
    let socket_path = env.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_nonblocking(true).unwrap();
    let out = env
        .command(&["run"])
        .env("NOTIFY_SOCKET", &socket_path)
        .output()
        .unwrap();
    assert_code(&out, 0);
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let all = messages.join("\n---\n");
    for expected in [
        "STATUS=preflight",
        "STATUS=archiving",
        "STATUS=verifying",
        "STATUS=last run succeeded",
    ] {
        assert!(all.contains(expected), "no {expected:?} in:\n{all}");
    }
    assert!(
        messages
            .iter()
            .any(|m| m.contains("STATUS=archiving: ") && m.contains("EXTEND_TIMEOUT_USEC=")),
        "no progress with a timeout extension in:\n{all}"
    );
}

#[test]
fn archives_split_below_the_file_size_limit_and_restore_with_cat() {
    let env = Env::new();
    env.write_config("", "min-free = 0");
    let data = random_bytes(2_500_000, 11);
    fs::write(env.src.join("random.bin"), &data).unwrap();
    let out = run_with_file_limit(&env, 1024);
    assert_code(&out, 0);
    let files = env.target_files();
    let parts: Vec<&String> = files.iter().filter(|f| !f.ends_with(".json")).collect();
    assert_eq!(parts.len(), 3, "{files:?}");
    for (i, p) in parts.iter().enumerate() {
        assert!(p.ends_with(&format!(".tar.gz.age.{i:03}")), "{p}");
        let len = fs::metadata(env.target.join(p)).unwrap().len();
        assert!(len <= 1024 * 1024, "{p} is {len} bytes");
    }
    let base = parts[0].trim_end_matches(".000");
    let receipt: serde_json::Value =
        serde_json::from_slice(&fs::read(env.target.join(format!("{base}-receipt.json"))).unwrap())
            .unwrap();
    assert_eq!(receipt["parts"].as_array().unwrap().len(), 3);
    let into = env.dir.path().join("restore");
    env.stock_restore_parts(&env.target.join(base), &into);
    assert_eq!(
        fs::read(restored(&into, &env.src.join("random.bin"))).unwrap(),
        data
    );

    // A forced part size splits even without a limit.
    let env = Env::new();
    env.write_config("", "min-free = 0\nsplit = \"1MiB\"");
    fs::write(env.src.join("random.bin"), random_bytes(1_500_000, 3)).unwrap();
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    // The "wrote" line names files that exist: the parts and the receipt listing them.
    let wrote = stderr(&out)
        .lines()
        .find(|l| l.contains("target local: wrote "))
        .unwrap_or_default()
        .to_owned();
    let first = env.target.join(
        env.target_files()
            .into_iter()
            .find(|f| f.ends_with(".000"))
            .expect("a first part"),
    );
    assert!(
        wrote.contains(&format!("wrote {} to ", first.display()))
            && wrote.contains("(2 parts, listed in ")
            && wrote.contains("-receipt.json)"),
        "{wrote}"
    );
    let parts = env
        .target_files()
        .into_iter()
        .filter(|f| !f.ends_with(".json"))
        .count();
    assert_eq!(parts, 2);
}

/// Runs `vouch run` stopped before the commit (SIGSTOP), makes the directory `blocked`
/// immutable, continues it, and returns its output.
fn run_with_target_blocked_at_commit(env: &Env, blocked: &Path) -> std::process::Output {
    let child = env
        .command(&["run"])
        .env("VOUCH_TEST_FAULT", "stop:before-commit")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_stopped(child.id());
    let _frozen = util::Immutable::set(blocked);
    util::resume(child.id());
    child.wait_with_output().unwrap()
}

#[test]
fn a_commit_failing_on_a_later_target_names_the_targets_that_keep_the_archive() {
    let env = Env::new();
    fs::write(env.src.join("a"), "a\n").unwrap();
    let second = env.dir.path().join("second");
    fs::create_dir(&second).unwrap();
    env.write_config(
        "",
        &format!(
            "\n[[target]]\nname = \"second\"\npath = \"{}\"\n",
            second.display()
        ),
    );
    let out = run_with_target_blocked_at_commit(&env, &second);
    assert_code(&out, 30);
    let err = stderr(&out);
    let archives = env.archives();
    assert_eq!(archives.len(), 1, "{err}");
    let kept_on_second = Env::archives_in(&second)
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(kept_on_second, 0, "{err}");
    let name = archives[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        err.contains(&format!(
            "target second: committing {name} failed: Operation not permitted"
        )),
        "{err}"
    );
    assert!(
        err.contains("the archive is kept on local (committed and verified) and is not on second"),
        "{err}"
    );
    let last: serde_json::Value =
        serde_json::from_slice(&fs::read(env.state.join("last-run.json")).unwrap()).unwrap();
    assert_eq!(last["exit-code"], 30);
    assert_eq!(last["archive"], name.as_str());
    assert_eq!(last["committed-targets"], serde_json::json!(["local"]));
    let status = env.vouch(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("failed with WRITE (30)"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
}

/// `STATUS=PHASE: AMOUNT...` messages' amounts in bytes (approximate above 1 KiB), in order.
fn progress_amounts(messages: &[String], phase: &str) -> Vec<f64> {
    let prefix = format!("STATUS={phase}: ");
    messages
        .iter()
        .filter(|m| m.contains("EXTEND_TIMEOUT_USEC="))
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix(prefix.as_str())))
        .map(|text| {
            let mut words = text.split(' ');
            let value: f64 = words.next().unwrap().parse().unwrap();
            let unit = match words.next().unwrap() {
                "B" => 1.0,
                "KiB" => 1024.0,
                "MiB" => 1024.0 * 1024.0,
                other => panic!("unexpected unit {other:?} in {text:?}"),
            };
            value * unit
        })
        .collect()
}

#[test]
fn progress_advances_within_one_large_file_while_archiving_and_reading_back() {
    use std::os::unix::net::UnixDatagram;
    let env = Env::new();
    let size = 12 * 1024 * 1024;
    fs::write(env.src.join("big"), util::noise(size, 5)).unwrap();
    env.write_config("", "");
    let socket_path = env.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_nonblocking(true).unwrap();
    // Read while the run goes on: a full socket queue would block its notifications.
    let mut child = env
        .command(&["run"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("VOUCH_TEST_PROGRESS_MS", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 65536];
    let status = loop {
        while let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(status.code(), Some(0));
    // The tree has one directory and one file (plus the manifest and sums when read back): a
    // count per entry gives at most four figures, so more can only come from within the file.
    for phase in ["archiving", "verifying"] {
        let amounts = progress_amounts(&messages, phase);
        let below_the_file: Vec<&f64> = amounts.iter().filter(|a| **a < size as f64).collect();
        assert!(
            below_the_file.len() >= 5,
            "{phase}: too few figures within the file: {amounts:?}"
        );
        assert!(
            // The text rounds to a tenth of a unit: equal neighbours are fine, a drop is not.
            amounts.windows(2).all(|w| w[0] <= w[1]) && amounts[0] < amounts[amounts.len() - 1],
            "{phase}: figures do not increase: {amounts:?}"
        );
    }
}

#[test]
fn run_shows_a_progress_line_on_a_terminal_and_only_there() {
    let env = Env::new();
    fs::write(env.src.join("a"), util::noise(300_000, 1)).unwrap();
    env.write_config("", "");
    let inner = env.command(&["run"]);
    let seen = env.dir.path().join("tty-output");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/restore/on_tty.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg(&seen)
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdin(std::process::Stdio::null());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    assert_code(&out, 0);
    let tty = String::from_utf8_lossy(&fs::read(&seen).unwrap()).into_owned();
    for phase in ["\rarchiving: ", "\rverifying: "] {
        assert!(tty.contains(phase), "no {phase:?} on the terminal: {tty:?}");
    }
    // The progress line is ended before the next log line.
    let wrote = tty.find("target local: wrote").expect("the wrote line");
    let before = &tty[..wrote];
    let line_start = before.rfind(['\n', '\r']).unwrap();
    assert_eq!(&before[line_start..line_start + 1], "\n", "{tty:?}");
    let piped = env.vouch(&["run"]);
    assert_code(&piped, 0);
    assert!(
        !stderr(&piped).contains("archiving: "),
        "{}",
        stderr(&piped)
    );
}
