//! Runs stopped from outside (`systemctl stop`, a start timeout, Ctrl-C) and runs refused
//! because another holds the lock: what each leaves on the targets and in the state directory.

mod util;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use util::{assert_code, stderr, Env};

fn last_run(env: &Env) -> serde_json::Value {
    let text = fs::read(env.state.join("last-run.json")).expect("no last-run.json");
    serde_json::from_slice(&text).unwrap()
}

/// A world with a second, split target, so a stop finds several temporary parts.
fn two_targets() -> Env {
    let env = Env::new();
    fs::write(env.src.join("a"), util::noise(1_300_000, 1)).unwrap();
    fs::write(env.src.join("b"), util::noise(1_300_000, 2)).unwrap();
    let parts = env.dir.path().join("parts");
    fs::create_dir(&parts).unwrap();
    env.write_config(
        "",
        &format!(
            "\n[[target]]\nname = \"parts\"\npath = \"{}\"\nsplit = \"1MiB\"\n",
            parts.display()
        ),
    );
    env
}

fn temporaries(env: &Env) -> Vec<String> {
    let mut out = Vec::new();
    for dir in [env.target.clone(), env.dir.path().join("parts")] {
        for e in fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with(".vouch-tmp.") {
                out.push(format!("{}/{name}", dir.display()));
            }
        }
    }
    out
}

/// Stops `vouch run` at `point` (SIGSTOP), sends it `signal`, continues it, and returns what
/// it left. The run starts with SIGINT, SIGTERM and SIGHUP at their default dispositions: a
/// test run in the background of a shell inherits SIGINT ignored (and under `nohup`, SIGHUP),
/// and vouch rightly leaves an ignored signal ignored.
fn stop_at(env: &Env, point: &str, signal: nix::sys::signal::Signal) -> std::process::Output {
    let child = env
        .wrapped(&["env", "--default-signal=INT,TERM,HUP"], "true", &["run"])
        .env("VOUCH_TEST_FAULT", format!("stop:{point}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_stopped(child.id());
    assert!(
        !temporaries(env).is_empty(),
        "{point}: the run should have temporary files by now"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    util::resume(child.id());
    // A point passed once per target stops the run again: continue it until it ends.
    let mut child = child;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "{point}: vouch never ended"
        );
        let stat = fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim()
            .starts_with('T')
        {
            util::resume(child.id());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_stopped_run_removes_its_temporaries_records_the_failure_and_dies_by_the_signal() {
    use nix::sys::signal::Signal;
    for (point, signal) in [
        ("mid-archive", Signal::SIGTERM),
        ("before-verify", Signal::SIGINT),
        ("after-create", Signal::SIGHUP),
    ] {
        let env = two_targets();
        let out = stop_at(&env, point, signal);
        assert_eq!(
            out.status.signal(),
            Some(signal as i32),
            "{point}: {:?}: {}",
            out.status,
            stderr(&out)
        );
        assert_eq!(temporaries(&env), Vec::<String>::new(), "{point}");
        assert!(env.archives().is_empty(), "{point}: {:?}", env.archives());
        let last = last_run(&env);
        assert_eq!(last["exit-name"], signal.as_str(), "{point}: {last}");
        assert_eq!(last["exit-code"], 128 + signal as i32, "{point}: {last}");
        let err = stderr(&out);
        assert_eq!(
            err.matches("the run was stopped before it finished")
                .count(),
            1,
            "{point}: {err}"
        );
        // status reports the stopped run as a failure, and the next run succeeds.
        let status = env.vouch(&["status"]);
        assert_code(&status, 2);
        assert!(
            String::from_utf8_lossy(&status.stdout).contains(signal.as_str()),
            "{point}: {}",
            String::from_utf8_lossy(&status.stdout)
        );
        assert_code(&env.vouch(&["run"]), 0);
    }
}

#[test]
fn a_stop_during_the_commit_waits_for_it_to_finish() {
    // Stopped after the commit: the stop waits for the commit section, so what is committed
    // stays whole, and nothing temporary is left.
    let env = two_targets();
    let out = stop_at(&env, "after-commit", nix::sys::signal::Signal::SIGTERM);
    assert_eq!(out.status.signal(), Some(15), "{}", stderr(&out));
    assert_eq!(temporaries(&env), Vec::<String>::new());
    assert_code(&env.vouch(&["verify", "--all"]), 0);
}

#[test]
fn a_run_refused_with_locked_leaves_the_holders_record_alone() {
    let env = Env::new();
    fs::write(env.src.join("a"), "a\n").unwrap();
    env.write_config("", "");
    assert_code(&env.vouch(&["run"]), 0);
    let before = fs::read(env.state.join("last-run.json")).unwrap();

    let holder = env.hold_lock();
    let out = env.vouch(&["run"]);
    assert_code(&out, 11);
    assert_eq!(
        fs::read(env.state.join("last-run.json")).unwrap(),
        before,
        "the refused run rewrote last-run.json"
    );
    let refused: serde_json::Value =
        serde_json::from_slice(&fs::read(env.state.join("last-refused.json")).unwrap()).unwrap();
    assert_eq!(refused["exit-name"], "LOCKED", "{refused}");
    assert_code(&env.vouch(&["status"]), 0);
    drop(holder);
    assert_code(&env.vouch(&["run"]), 0);
}
