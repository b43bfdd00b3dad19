//! `vouch keygen`: a private identity, never overwritten, never half-written, never beside the
//! archives it protects.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use util::{assert_code, stderr, Env};

/// `vouch keygen ARGS` with no config around it.
fn keygen(args: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vouch"));
    cmd.args(["--config", "/nonexistent/vouch.toml", "keygen"]);
    cmd.env_remove("VOUCH_CONFIG");
    let mut flag = ["--identity", "--recipients-file"].into_iter();
    for a in args {
        cmd.arg(flag.next().unwrap()).arg(a);
    }
    cmd.output().unwrap()
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn keygen_makes_a_private_identity_and_never_overwrites_it() {
    let env = Env::new();
    let identity = env.dir.path().join("new-identity.txt");
    let recipients = env.dir.path().join("recipients.txt");
    let out = keygen(&[&identity, &recipients]);
    assert_code(&out, 0);
    let recipient = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    assert!(stderr(&out).contains("somewhere other than the backup targets"));
    assert_eq!(
        fs::metadata(&identity).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::read_to_string(&recipients).unwrap().trim(), recipient);
    // The stock tool agrees on the recipient.
    let derived = Command::new("age-keygen")
        .arg("-y")
        .arg(&identity)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&derived.stdout).trim(), recipient);
    let before = fs::read(&identity).unwrap();
    let again = keygen(&[&identity]);
    assert_code(&again, 2);
    assert!(
        stderr(&again).contains("never overwritten"),
        "{}",
        stderr(&again)
    );
    assert_eq!(fs::read(&identity).unwrap(), before);
    // A dangling symlink in the way is not followed either.
    let link = env.dir.path().join("link.txt");
    std::os::unix::fs::symlink(env.dir.path().join("elsewhere.txt"), &link).unwrap();
    assert_code(&keygen(&[&link]), 2);
    assert!(!env.dir.path().join("elsewhere.txt").exists());
}

#[test]
fn keygen_creates_missing_directories_privately() {
    let env = Env::new();
    let identity = env.dir.path().join("keys/vouch/identity.txt");
    assert_code(&keygen(&[&identity]), 0);
    let dir = env.dir.path().join("keys/vouch");
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(names(&dir), ["identity.txt"]);
}

#[test]
fn a_failed_write_leaves_no_identity_and_a_retry_works() {
    let env = Env::new();
    let identity = env.dir.path().join("keys/identity.txt");
    // With a file size limit of 0, the identity's first byte fails with EFBIG.
    let out = env
        .wrapped(
            &[],
            "ulimit -f 0",
            &["keygen", "--identity", identity.to_str().unwrap()],
        )
        .output()
        .unwrap();
    assert_code(&out, 30);
    assert!(stderr(&out).contains("File too large"), "{}", stderr(&out));
    assert!(names(&env.dir.path().join("keys")).is_empty());
    assert_code(&keygen(&[&identity]), 0);
    assert_eq!(names(&env.dir.path().join("keys")), ["identity.txt"]);
}

#[test]
fn an_unwritable_recipients_file_stops_keygen_before_it_makes_a_key() {
    let env = Env::new();
    let identity = env.dir.path().join("identity-new.txt");
    let recipients = env.dir.path().join("no-such-dir/recipients.txt");
    let out = keygen(&[&identity, &recipients]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("cannot append to"),
        "{}",
        stderr(&out)
    );
    assert!(!identity.exists());
}

#[test]
fn keygen_refuses_to_put_the_key_inside_a_target() {
    let env = Env::new();
    env.write_config("", "");
    let identity = env.target.join("identity.txt");
    let out = env
        .command(&["keygen", "--identity", identity.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("inside target \"local\""),
        "{}",
        stderr(&out)
    );
    assert!(!identity.exists());
    // Outside the targets, the same config is no obstacle.
    let elsewhere = env.dir.path().join("keys/identity.txt");
    let out = env
        .command(&["keygen", "--identity", elsewhere.to_str().unwrap()])
        .output()
        .unwrap();
    assert_code(&out, 0);
}

#[test]
fn a_full_recipients_file_is_a_write_error_and_leaves_no_identity() {
    let env = Env::new();
    let identity = env.dir.path().join("keys/identity.txt");
    let out = keygen(&[&identity, Path::new("/dev/full")]);
    assert_code(&out, 30);
    let text = stderr(&out);
    assert!(
        text.contains("/dev/full") && text.contains("No space left on device"),
        "{text}"
    );
    assert!(text.contains("no identity was written"), "{text}");
    assert!(
        text.contains("run vouch keygen again") && !text.contains("archives"),
        "the fix speaks of keys, not archives: {text}"
    );
    assert!(names(&env.dir.path().join("keys")).is_empty());
    assert!(out.stdout.is_empty(), "no recipient is printed");
}

#[test]
fn a_recipients_file_that_is_a_fifo_without_reader_stops_keygen_at_once() {
    let env = Env::new();
    let identity = env.dir.path().join("identity-new.txt");
    let fifo = env.dir.path().join("recipients.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vouch"))
        .args([
            "--config",
            "/nonexistent/vouch.toml",
            "keygen",
            "--identity",
        ])
        .arg(&identity)
        .arg("--recipients-file")
        .arg(&fifo)
        .env_remove("VOUCH_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("keygen blocked on a FIFO without a reader");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("cannot append to"),
        "{}",
        stderr(&out)
    );
    assert!(!identity.exists());
}
