//! The config and the keys are read without blocking or growing: a FIFO, a device, a directory
//! or an oversized file under their names ends the command at once with CONFIG (10) or KEY (13),
//! naming the file and what it is.

mod util;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use util::{assert_code, Env};

/// Runs `cmd` with at most 2 GiB of address space (so that reading without end fails fast
/// instead of filling the machine's memory), killing it and failing the test when it has not
/// ended within 30 s.
fn finishes(cmd: Command) -> Output {
    let mut limited = Command::new("bash");
    limited
        .arg("-c")
        .arg("ulimit -v 2097152; exec \"$0\" \"$@\"")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => limited.env(k, v),
            None => limited.env_remove(k),
        };
    }
    let mut child = limited
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "vouch was still running after 30 s (blocked or reading without end); stderr:\n{}",
                util::stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Everything the command printed.
fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts the exit code and that the output names `path` and `what` it is.
fn refused(out: &Output, code: i32, path: &Path, what: &str) {
    assert_code(out, code);
    let text = said(out);
    assert!(
        text.contains(&path.display().to_string()) && text.contains(what),
        "expected {} and {what:?} in:\n{text}",
        path.display()
    );
}

fn fifo(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    path
}

/// `vouch --config CONFIG ARGS` in `env`'s world: its state and runtime directories.
fn with_config(env: &Env, config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vouch"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("STATE_DIRECTORY", &env.state)
        .env("RUNTIME_DIRECTORY", &env.runtime)
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("VOUCH_CONFIG")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn a_config_that_is_a_device_fifo_directory_or_huge_is_a_config_error() {
    let env = Env::new();
    let pipe = fifo(env.dir.path(), "vouch.toml.fifo");
    let big = env.dir.path().join("big.toml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(vouch::host::bounded::CONFIG_CAP + 1)
        .unwrap();
    let cases: [(&Path, &str); 4] = [
        (Path::new("/dev/zero"), "character device"),
        (&pipe, "FIFO"),
        (env.dir.path(), "directory"),
        (&big, "larger than 4 MiB"),
    ];
    for (config, what) in cases {
        for args in [&["preflight"][..], &["run"], &["status"]] {
            let out = finishes(with_config(&env, config, args));
            // status reports what it cannot tell as `unknown` (3).
            let code = if args[0] == "status" { 3 } else { 10 };
            refused(&out, code, config, what);
        }
    }
}

#[test]
fn a_recipients_file_or_identity_that_is_not_a_regular_file_is_a_key_error() {
    let env = Env::new();
    env.write_config("", "");
    let config = std::fs::read_to_string(&env.config).unwrap();
    let recipients = format!("recipients = [\"{}\"]", env.recipient);
    let pipe = fifo(env.dir.path(), "identity.fifo");
    let cases = [
        (
            config.replace(
                &recipients,
                &format!("{recipients}\nrecipients-file = \"/dev/zero\""),
            ),
            Path::new("/dev/zero"),
            "character device",
        ),
        (
            config.replace(
                &env.identity.display().to_string(),
                &pipe.display().to_string(),
            ),
            pipe.as_path(),
            "FIFO",
        ),
    ];
    for (text, path, what) in cases {
        std::fs::write(&env.config, text).unwrap();
        let out = finishes(env.command(&["preflight"]));
        refused(&out, 13, path, what);
        let out = finishes(env.command(&["run"]));
        refused(&out, 13, path, what);
    }
}

#[test]
fn restore_with_an_identity_that_is_a_fifo_is_a_key_error() {
    let env = Env::new();
    std::fs::write(env.src.join("a.txt"), b"hello").unwrap();
    env.write_config("", "");
    assert_code(&env.vouch(&["run"]), 0);
    let archive = env.archives().remove(0);
    let pipe = fifo(env.dir.path(), "identity.fifo");
    let to = env.dir.path().join("restored");
    let out = finishes(env.command(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--identity",
        pipe.to_str().unwrap(),
    ]));
    refused(&out, 13, &pipe, "FIFO");
}
