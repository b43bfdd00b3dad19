//! Crash consistency: `vouch run` killed with `SIGKILL` at every named point of its commit and
//! of retention, and at random moments, on a world with a single-file target and a target
//! split into several parts, both pruned down to one archive.
//!
//! After every kill: every archive `vouch list` shows has a good receipt (no part set without
//! one, no receipt without its files), no archive committed before the kill is gone unless
//! retention was entitled to delete it (it is older than the newest archive left), and every
//! state record parses. Every few kills a recovery run must exit 0 and leave no temporary file
//! or marker in any target, and `vouch verify --all` must pass now and then. The random kills'
//! seed is printed, and `VOUCH_CRASH_SEED` replays it.

mod util;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use util::{assert_code, noise, stderr, Env};

/// The fewest kills the test must land.
const KILLS: usize = 100;

/// Every named point, in the order a run passes them; counted points are numbered over the
/// whole process (one file on the single target, then three parts on the split one).
const POINTS: &[&str] = &[
    "after-create",
    "mid-archive",
    "before-verify",
    "before-commit",
    "commit-marked:1",
    "commit-part:1",
    "commit-renamed:1",
    "after-commit",
    "commit-marked:2",
    "commit-part:2",
    "commit-part:3",
    "commit-part:4",
    "commit-renamed:2",
    "prune-marked:1",
    "prune-delete:1",
    "prune-marked:2",
    "prune-delete:2",
    "prune-delete:3",
    "prune-delete:4",
];

/// The archives each target holds, by target name.
type Holdings = BTreeMap<String, BTreeSet<String>>;

struct World {
    env: Env,
    targets: Vec<(String, PathBuf)>,
}

impl World {
    fn new() -> World {
        let env = Env::new();
        fs::write(env.src.join("a.bin"), noise(150_000, 1)).unwrap();
        fs::write(env.src.join("b.bin"), noise(30_000, 2)).unwrap();
        fs::write(env.src.join("c.txt"), "small\n").unwrap();
        let two = env.dir.path().join("two");
        fs::create_dir(&two).unwrap();
        let text = format!(
            r#"[backup]
name = "crash"
sources = ["{src}"]

[encryption]
recipients = ["{recipient}"]
identity = "{identity}"

[[target]]
name = "one"
path = "{one}"
split = "off"
min-free = 0
keep = {{ last = 1 }}

[[target]]
name = "two"
path = "{two}"
split = "1MiB"
min-free = 0
keep = {{ last = 1 }}
"#,
            src = env.src.display(),
            recipient = env.recipient,
            identity = env.identity.display(),
            one = env.target.display(),
            two = two.display(),
        );
        fs::write(&env.config, text).unwrap();
        let targets = vec![("one".into(), env.target.clone()), ("two".into(), two)];
        World { env, targets }
    }

    /// `vouch ARGS` with parts of 64 KiB on the split target.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.env.command(args);
        cmd.env("VOUCH_TEST_PART_SIZE", "65536")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// What every target holds, from `vouch list --json`; every archive's receipt must be good.
    fn holdings(&self, context: &str) -> Holdings {
        let out = self.env.vouch(&["list", "--json"]);
        assert_code(&out, 0);
        let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut held = Holdings::new();
        for t in listing["targets"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap().to_owned();
            let set = held.entry(name.clone()).or_default();
            for a in t["archives"].as_array().unwrap() {
                assert_eq!(
                    a["receipt"],
                    "ok",
                    "{context}: target {name} holds an archive that is not whole: {a}\nfiles: {:?}",
                    self.files()
                );
                set.insert(a["name"].as_str().unwrap().to_owned());
            }
        }
        held
    }

    /// Every file name in every target.
    fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, dir) in &self.targets {
            for e in fs::read_dir(dir).unwrap() {
                out.push(format!(
                    "{name}/{}",
                    e.unwrap().file_name().to_string_lossy()
                ));
            }
        }
        out.sort();
        out
    }

    /// Every state record parses.
    fn check_state(&self, context: &str) {
        let Ok(entries) = fs::read_dir(&self.env.state) else {
            return;
        };
        for e in entries {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let bytes = fs::read(&path).unwrap();
            if let Err(err) = serde_json::from_slice::<Value>(&bytes) {
                panic!("{context}: state record {name} does not parse: {err}");
            }
        }
    }

    /// A run that must succeed and leave every target in order.
    fn recover(&self, context: &str) -> Holdings {
        let out = self.command(&["run"]).output().unwrap();
        assert_code(&out, 0);
        let stray: Vec<String> = self
            .files()
            .into_iter()
            .filter(|f| f.contains("/.vouch-"))
            .collect();
        assert!(
            stray.is_empty(),
            "{context}: the recovery run left {stray:?}: {}",
            stderr(&out)
        );
        self.check_state(context);
        self.holdings(context)
    }
}

/// Asserts that every archive of `before` is still held, unless it is older than the newest
/// archive its target holds now (retention, keeping one, may delete those).
fn assert_nothing_lost(before: &Holdings, after: &Holdings, context: &str) {
    for (target, had) in before {
        let now = after.get(target).cloned().unwrap_or_default();
        let newest = now.iter().next_back();
        for a in had.difference(&now) {
            assert!(
                newest.is_some_and(|n| n > a),
                "{context}: target {target} lost {a}, which retention was not entitled to delete (holds {now:?})"
            );
        }
    }
}

/// A small xorshift generator, so that a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// How a run was ended.
enum Kill {
    /// At a named point (`VOUCH_TEST_FAULT=kill:POINT`).
    At(&'static str),
    /// This long after it started.
    After(Duration),
}

impl Kill {
    fn describe(&self) -> String {
        match self {
            Kill::At(p) => format!("kill at {p}"),
            Kill::After(d) => format!("kill after {} ms", d.as_millis()),
        }
    }
}

/// Runs `vouch run` and kills it as `kill` says; returns whether it died by `SIGKILL` (a run
/// that ended first does not count as a kill, and must have succeeded).
fn run_and_kill(world: &World, kill: &Kill, context: &str) -> bool {
    let mut cmd = world.command(&["run"]);
    if let Kill::At(point) = kill {
        cmd.env("VOUCH_TEST_FAULT", format!("kill:{point}"));
    }
    let mut child = cmd.spawn().unwrap();
    if let Kill::After(delay) = kill {
        std::thread::sleep(*delay);
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    if out.status.signal() == Some(9) {
        return true;
    }
    assert!(
        out.status.success(),
        "{context}: the run ended by itself with {:?}: {}",
        out.status,
        stderr(&out)
    );
    false
}

#[test]
fn runs_killed_anywhere_leave_every_target_consistent() {
    let started = Instant::now();
    let seed = std::env::var("VOUCH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash test seed: {seed} (VOUCH_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let world = World::new();

    // Two good runs: both targets hold an archive, and the split one has several parts.
    let t0 = Instant::now();
    world.recover("first run");
    let full_run = t0.elapsed();
    let mut before = world.recover("second run");
    let parts = world
        .files()
        .iter()
        .filter(|f| f.contains(".age.0"))
        .count();
    assert!(
        parts >= 3,
        "the split target should hold 3 parts or more: {:?}",
        world.files()
    );

    let mut plan: Vec<Kill> = POINTS
        .iter()
        .chain(POINTS.iter())
        .copied()
        .map(Kill::At)
        .collect();
    plan.reverse();
    // Random kills land within a run's length; a run that ends first shortens the span (the
    // first run may have been slowed by a busy machine).
    let mut span = (full_run.as_millis() as u64 * 6 / 5).max(50);
    let mut kills = 0;
    let mut attempts = 0;
    while kills < KILLS {
        attempts += 1;
        assert!(
            attempts < KILLS * 4,
            "only {kills} of {attempts} runs could be killed"
        );
        let kill = plan
            .pop()
            .unwrap_or_else(|| Kill::After(Duration::from_millis(rng.below(span))));
        let context = format!("seed {seed}, attempt {attempts}, {}", kill.describe());
        if !run_and_kill(&world, &kill, &context) {
            if matches!(kill, Kill::After(_)) {
                span = (span * 3 / 4).max(50);
            }
            let after = world.holdings(&context);
            assert_nothing_lost(&before, &after, &context);
            before = after;
            continue;
        }
        kills += 1;
        let after = world.holdings(&context);
        assert_nothing_lost(&before, &after, &context);
        world.check_state(&context);
        before = after;
        if kills % 10 == 0 {
            let out = world.env.vouch(&["verify", "--all"]);
            assert_code(&out, 0);
        }
        if kills % 3 == 0 {
            let after = world.recover(&context);
            assert_nothing_lost(&before, &after, &context);
            before = after;
        }
    }
    let after = world.recover("final recovery");
    assert_nothing_lost(&before, &after, "final recovery");
    assert_code(&world.env.vouch(&["verify", "--all"]), 0);
    println!(
        "{kills} kills in {attempts} runs, {} s",
        started.elapsed().as_secs()
    );
}

/// Runs `vouch ARGS` with `VOUCH_TEST_FAULT=kill:POINT`; it must die by the kill.
fn killed_at(world: &World, args: &[&str], point: &str) {
    let out = world
        .command(args)
        .env("VOUCH_TEST_FAULT", format!("kill:{point}"))
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{point}: {}", stderr(&out));
}

#[test]
fn a_commit_killed_between_two_part_renames_is_finished_or_undone_by_the_next_run() {
    let world = World::new();
    let before = world.recover("first run");
    // Killed after the single target's archive was committed and one part of the split
    // target's was renamed: the split target still holds only what it held.
    killed_at(&world, &["run"], "commit-part:2");
    assert_eq!(world.holdings("after the kill")["two"], before["two"]);
    assert!(world.files().iter().any(|f| f.contains("/.vouch-commit.")));
    let out = world.command(&["run"]).output().unwrap();
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("finished the commit of"),
        "{}",
        stderr(&out)
    );
    assert_code(&world.env.vouch(&["verify", "--all"]), 0);

    // The same kill, and the run's temporary files removed afterwards (as a stop signal's
    // cleanup does): the parts under final names cannot be completed and are removed.
    let before = world.holdings("before the second kill");
    killed_at(&world, &["run"], "commit-part:3");
    for (_, dir) in &world.targets {
        for e in fs::read_dir(dir).unwrap() {
            if e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".vouch-tmp.")
            {
                fs::remove_file(e.unwrap().path()).unwrap();
            }
        }
    }
    assert_eq!(
        world.holdings("after the second kill")["two"],
        before["two"]
    );
    let out = world.command(&["run"]).output().unwrap();
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("removed the incomplete"),
        "{}",
        stderr(&out)
    );
    assert!(world.files().iter().all(|f| !f.contains("/.vouch-")));
    assert_code(&world.env.vouch(&["verify", "--all"]), 0);
}

#[test]
fn a_prune_killed_between_two_deletions_leaves_nothing_that_counts_and_is_finished() {
    let world = World::new();
    world.recover("first run");
    let kept = world.recover("second run");
    // A third run killed as retention marks its first deletion (on the single target): the
    // split target holds two archives, the single one only the new one.
    killed_at(&world, &["run"], "prune-marked:1");
    let held = world.holdings("after the kill");
    assert_eq!(held["one"].len(), 1, "{held:?}");
    assert_eq!(held["two"].len(), 2, "{held:?}");
    // A prune finishes that deletion (the first file deleted), then is killed after the second
    // of the three parts it deletes on the split target.
    killed_at(&world, &["prune"], "prune-delete:3");
    let residue: Vec<String> = world
        .files()
        .into_iter()
        .filter(|f| f.contains("/.vouch-deleting."))
        .collect();
    assert_eq!(residue.len(), 1, "{:?}", world.files());
    let held = world.holdings("after the killed prune");
    assert_eq!(held["two"].len(), 1, "{held:?}");
    assert_code(&world.env.vouch(&["verify", "--all"]), 0);
    let status = world.env.vouch(&["status"]);
    assert_code(&status, 0);
    let out = world.command(&["prune"]).output().unwrap();
    assert_code(&out, 0);
    assert!(world.files().iter().all(|f| !f.contains("/.vouch-")));
    let held = world.holdings("after the next prune");
    assert!(held.values().all(|a| a.len() == 1), "{held:?}");
    assert!(kept
        .values()
        .all(|a| a.iter().all(|n| !held["one"].contains(n))));
}
