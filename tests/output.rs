//! Commands whose standard output is closed by its reader (`vouch status --json | head -1`):
//! no panic, and the same exit code as with a reader that reads everything.

mod util;

use std::fs;
use std::process::{Output, Stdio};
use util::{assert_code, Env};

/// Runs `vouch ARGS` with standard output a pipe whose reading end is already closed, so the
/// first write fails with EPIPE.
fn closed_stdout(env: &Env, args: &[&str]) -> Output {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    env.command(args)
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn null_stdout(env: &Env, args: &[&str]) -> Output {
    env.command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_is_a_quiet_end_with_the_commands_own_code() {
    let env = Env::new();
    fs::write(env.src.join("a"), "a\n").unwrap();
    env.write_config("", "[health]\nmax-age = \"1d\"\n");
    assert_code(&env.vouch(&["run"]), 0);
    let archive = env.archives()[0].to_string_lossy().into_owned();
    let keys = env.dir.path().join("keys");
    let restore_to = |n: u32| env.dir.path().join(format!("restored{n}"));
    let commands: Vec<Vec<String>> = vec![
        vec!["status".into()],
        vec!["status".into(), "--json".into()],
        vec!["list".into()],
        vec!["list".into(), "--json".into()],
        vec!["preflight".into()],
        vec!["preflight".into(), "--json".into()],
        vec!["verify".into(), "--all".into()],
        vec!["prune".into(), "--dry-run".into()],
        vec!["doctor".into()],
        vec!["run".into()],
    ];
    for args in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let expected = null_stdout(&env, &args);
        let got = closed_stdout(&env, &args);
        let err = String::from_utf8_lossy(&got.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(got.status.code(), expected.status.code(), "{args:?}: {err}");
    }
    // Commands that create something: each gets its own fresh destination.
    for n in 0..2 {
        let to = restore_to(n);
        let to = to.to_string_lossy();
        let args = ["restore", archive.as_str(), "--to", &to];
        let got = if n == 0 {
            null_stdout(&env, &args)
        } else {
            closed_stdout(&env, &args)
        };
        let err = String::from_utf8_lossy(&got.stderr);
        assert!(!err.contains("panicked"), "restore: {err}");
        assert_code(&got, 0);
        let identity = keys.join(format!("id{n}"));
        let identity = identity.to_string_lossy();
        let args = ["keygen", "--identity", &identity];
        let got = if n == 0 {
            null_stdout(&env, &args)
        } else {
            closed_stdout(&env, &args)
        };
        let err = String::from_utf8_lossy(&got.stderr);
        assert!(!err.contains("panicked"), "keygen: {err}");
        assert_code(&got, 0);
    }
}
