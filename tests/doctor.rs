//! `vouch doctor` against the built binary, outside systemd (the booted-systemd checks are in
//! tests/system/deb.sh): it reports preflight failures with their fixes, says which checks it
//! could not make, folds in the status verdict, and exits on the status scale.

mod util;

use std::fs;
use std::path::Path;
use util::{assert_code, Env};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The report's line for `check`, which must have `level` (`ok`, `warn` or `FAIL`).
fn line<'a>(report: &'a str, level: &str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| {
            l.starts_with(level)
                && l[level.len()..]
                    .trim_start()
                    .starts_with(&format!("{check}  "))
        })
        .unwrap_or_else(|| panic!("no {level} line for {check:?} in:\n{report}"))
}

fn world() -> Env {
    let env = Env::new();
    fs::write(env.src.join("file.txt"), "doctor\n").unwrap();
    env.write_config("", "min-free = \"1MiB\"");
    env
}

#[test]
fn a_good_backup_is_ok_except_what_could_not_be_checked() {
    let env = world();
    assert_code(&env.vouch(&["run"]), 0);
    let out = env.vouch(&["doctor"]);
    let report = stdout(&out);
    line(&report, "ok", "config");
    line(&report, "ok", "target-writable local");
    assert!(
        line(&report, "ok", "last run").contains(".tar.gz.age"),
        "{report}"
    );
    assert!(
        line(&report, "ok", "status").contains("healthy"),
        "{report}"
    );
    if Path::new("/run/systemd/system").is_dir() {
        // On a host booted with systemd the unit checks run instead; deb.sh covers them.
        return;
    }
    let systemd = line(&report, "warn", "systemd");
    assert!(systemd.contains("were not checked"), "{report}");
    assert!(
        !report.contains("sandbox local"),
        "no sandbox verdict can be given without systemd:\n{report}"
    );
    // Warnings only: the status scale's 1.
    assert_code(&out, 1);
}

#[test]
fn preflight_failures_and_a_failed_run_are_failures_with_fixes() {
    let env = world();
    assert_code(&env.vouch(&["run"]), 0);
    fs::remove_dir_all(&env.target).unwrap();
    assert_code(&env.vouch(&["run"]), 14);
    let out = env.vouch(&["doctor"]);
    let report = stdout(&out);
    let missing = line(&report, "FAIL", "target-exists local");
    assert!(missing.contains("TARGET_MISSING (14)"), "{report}");
    // The fix follows its line.
    let fix = report
        .lines()
        .skip_while(|l| !l.starts_with("FAIL") || !l.contains("target-exists local"))
        .nth(1)
        .unwrap_or("");
    assert!(
        fix.trim_start().starts_with("fix: Create"),
        "the fix should follow the failure:\n{report}"
    );
    assert!(
        line(&report, "FAIL", "last run").contains("exit 14 (TARGET_MISSING)"),
        "{report}"
    );
    assert_code(&out, 2);
}

#[test]
fn a_run_in_progress_is_a_warning_not_a_failure() {
    let env = world();
    assert_code(&env.vouch(&["run"]), 0);
    let holder = env.hold_lock();
    let out = env.vouch(&["doctor"]);
    drop(holder);
    let report = stdout(&out);
    assert!(
        line(&report, "warn", "lock").contains("in progress"),
        "{report}"
    );
    assert!(!report.contains("FAIL"), "{report}");
}

#[test]
fn no_config_means_nothing_can_be_judged() {
    let env = world();
    fs::remove_file(&env.config).unwrap();
    let out = env.vouch(&["doctor"]);
    let report = stdout(&out);
    assert!(
        line(&report, "FAIL", "config").contains("cannot read the config"),
        "{report}"
    );
    assert_code(&out, 3);
}

#[test]
fn a_target_on_the_same_filesystem_as_a_source_is_a_warning() {
    let env = world();
    let out = env.vouch(&["doctor"]);
    let report = stdout(&out);
    let same = line(&report, "warn", "same-disk local");
    assert!(
        same.contains(&format!(
            "same filesystem as source(s) {}",
            env.src.display()
        )) && same.contains("one disk failure loses both"),
        "{report}"
    );
}

/// A world with an sftp target on a port nothing listens on: the key `nas` in a credentials
/// directory, and a known-hosts file holding `known` for 127.0.0.1 on that port.
fn sftp_world(known: &str) -> (Env, std::path::PathBuf, std::path::PathBuf, u16) {
    let env = world();
    let creds = env.dir.path().join("credentials");
    fs::create_dir_all(&creds).unwrap();
    let key = creds.join("nas");
    util::sshd::keygen(&key);
    let known_hosts = env.dir.path().join("known_hosts");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    fs::write(&known_hosts, known.replace("PORT", &port.to_string())).unwrap();
    env.write_config(
        "",
        &format!(
            "min-free = \"1MiB\"\n[[target]]\nname = \"nas\"\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"backup\"\npath = \"/srv/backups\"\ncredential = \"nas\"\nknown-hosts = \"{}\"\n",
            known_hosts.display()
        ),
    );
    (env, creds, known_hosts, port)
}

fn doctor_with(env: &Env, creds: &Path, path: Option<&Path>) -> String {
    let mut cmd = env.command(&["doctor"]);
    cmd.env("CREDENTIALS_DIRECTORY", creds);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    stdout(&cmd.output().unwrap())
}

#[test]
fn an_sftp_target_gets_its_ssh_key_and_known_hosts_checked_offline() {
    let key_line =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHl0dVXbZv8CpN7G2q8l5PdxBb0p8PxpbMwv0WXbbu1b";
    let (env, creds, known_hosts, port) = sftp_world(&format!("[127.0.0.1]:PORT {key_line}\n"));
    let report = doctor_with(&env, &creds, None);
    assert!(
        line(&report, "ok", "ssh nas").contains("OpenSSH"),
        "{report}"
    );
    assert!(
        line(&report, "ok", "ssh-key nas").contains("only its owner can read"),
        "{report}"
    );
    assert!(
        line(&report, "ok", "known-hosts nas").contains(&format!("[127.0.0.1]:{port}")),
        "{report}"
    );
    // The preflight line is the one that connects, and nothing listens there.
    line(&report, "FAIL", "remote nas");

    // Hashed entries are found too.
    let hashed = std::process::Command::new("ssh-keygen")
        .args(["-H", "-f"])
        .arg(&known_hosts)
        .output()
        .unwrap();
    assert!(hashed.status.success(), "{hashed:?}");
    assert!(fs::read_to_string(&known_hosts).unwrap().starts_with("|1|"));
    let report = doctor_with(&env, &creds, None);
    line(&report, "ok", "known-hosts nas");

    // A key for the host on another port is no key for this server; a key file others may
    // read is refused, as the run refuses it.
    fs::write(&known_hosts, format!("127.0.0.1 {key_line}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(creds.join("nas"), fs::Permissions::from_mode(0o644)).unwrap();
    let report = doctor_with(&env, &creds, None);
    let kh = line(&report, "FAIL", "known-hosts nas");
    assert!(
        kh.contains(&format!("has no host key for [127.0.0.1]:{port}")),
        "{report}"
    );
    assert!(report.contains("fix: Run `vouch preflight`"), "{report}");
    assert!(
        line(&report, "FAIL", "ssh-key nas").contains("lets others read it"),
        "{report}"
    );
    // A missing key file and a missing known-hosts file.
    fs::remove_file(creds.join("nas")).unwrap();
    fs::remove_file(&known_hosts).unwrap();
    let report = doctor_with(&env, &creds, None);
    assert!(
        line(&report, "FAIL", "ssh-key nas").contains("does not exist"),
        "{report}"
    );
    line(&report, "FAIL", "known-hosts nas");

    // No ssh on PATH.
    let empty = env.dir.path().join("empty-path");
    fs::create_dir_all(&empty).unwrap();
    let report = doctor_with(&env, &creds, Some(&empty));
    assert!(
        line(&report, "FAIL", "ssh nas").contains("not on PATH"),
        "{report}"
    );
    assert!(
        report.contains("fix: Install the OpenSSH client: apt-get install openssh-client."),
        "{report}"
    );
}
