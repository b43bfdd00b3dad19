//! `vouch restore` and `vouch verify --restore-to` against the built binary: round trips of real
//! trees, and archives crafted with Python's `tarfile` and the real `age` to attack the
//! destination. Each hostile case checks that nothing appeared outside the destination (a
//! sentinel directory), that the destination is exactly as before, and the exit code.

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use util::{assert_code, bash_ok, describe_tree, is_root, restored, stderr, Env};

fn require_root() {
    assert!(
        is_root(),
        "these tests restore owners and device nodes and must run as root"
    );
}

fn run_ok(env: &Env) -> PathBuf {
    env.write_config("", "");
    assert_code(&env.vouch(&["run"]), 0);
    let a = env.archives();
    a.last().unwrap().clone()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The tree at `p`, or `None` when nothing is there.
fn snapshot(p: &Path) -> Option<BTreeMap<Vec<u8>, String>> {
    p.exists().then(|| describe_tree(p))
}

/// Directory modification times, which `describe_tree` leaves out.
fn dir_mtimes(root: &Path) -> BTreeMap<PathBuf, i64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let m = fs::symlink_metadata(&d).unwrap();
        if m.is_dir() {
            out.insert(d.strip_prefix(root).unwrap().to_owned(), m.mtime());
            for e in fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

fn touch(path: &Path, stamp: &str) {
    bash_ok(&format!("touch -h -d '{stamp}' '{}'", path.display()));
}

/// A source tree with every kind of entry vouch archives and awkward names.
fn awkward_tree(env: &Env) {
    let src = &env.src;
    fs::create_dir_all(src.join("etc/app")).unwrap();
    fs::create_dir_all(src.join("private")).unwrap();
    fs::write(src.join("etc/app/config"), "key = 1\n").unwrap();
    fs::write(src.join("etc/app/secret"), "s3cret\n").unwrap();
    fs::set_permissions(
        src.join("etc/app/secret"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(src.join("private/owned"), "someone else's\n").unwrap();
    std::os::unix::fs::chown(src.join("private/owned"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(src.join("private"), Some(4321), Some(8765)).unwrap();
    std::os::unix::fs::symlink("app/config", src.join("etc/current")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
    fs::hard_link(src.join("etc/app/config"), src.join("etc/config.hard")).unwrap();
    let odd = [
        &b"caf\xe9-latin1"[..],
        b"with space and \\backslash",
        b"new\nline",
        b"\xff\xfe",
    ];
    for name in odd {
        fs::write(src.join(std::ffi::OsStr::from_bytes(name)), name).unwrap();
    }
    let long = "l".repeat(200);
    let deep = src.join(&long).join(&long);
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join(format!("{long}.txt")), "deep\n").unwrap();
    fs::write(src.join("empty"), "").unwrap();
    for (p, t) in [
        ("etc/app/config", "2001-02-03 04:05:06"),
        ("run.sh", "1999-12-31 23:59:59"),
        ("dangling", "2010-01-01 00:00:00"),
        ("etc/app", "2005-05-05 05:05:05"),
        ("private", "2006-06-06 06:06:06"),
    ] {
        touch(&src.join(p), t);
    }
}

#[test]
fn a_whole_tree_round_trips_with_modes_times_links_and_owners() {
    require_root();
    let env = Env::new();
    awkward_tree(&env);
    let archive = run_ok(&env);
    let into = env.dir.path().join("restored");
    let out = env.vouch(&["restore", s(&archive), "--to", s(&into)]);
    assert_code(&out, 0);
    let copy = restored(&into, &env.src);
    assert_eq!(describe_tree(&env.src), describe_tree(&copy));
    assert_eq!(dir_mtimes(&env.src), dir_mtimes(&copy));
    let link = fs::symlink_metadata(copy.join("dangling")).unwrap();
    assert_eq!(
        link.mtime(),
        fs::symlink_metadata(env.src.join("dangling"))
            .unwrap()
            .mtime()
    );
    let config = fs::metadata(copy.join("etc/app/config")).unwrap();
    assert_eq!(
        config.ino(),
        fs::metadata(copy.join("etc/config.hard")).unwrap().ino()
    );
    assert_eq!(
        fs::metadata(copy.join("run.sh")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(copy.join("private/owned")).unwrap().uid(),
        1234
    );
    // Only the files: the archive's own .vouch/ files and the staging directory are not left.
    let top: Vec<_> = fs::read_dir(&into)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["tmp"], "{top:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("restored"));
}

#[test]
fn selected_paths_restore_only_what_is_under_them() {
    let env = Env::new();
    awkward_tree(&env);
    let archive = run_ok(&env);
    let into = env.dir.path().join("some");
    let app = env.src.join("etc/app");
    // A leading / is dropped, as when the tree was archived.
    let out = env.vouch(&["restore", s(&archive), "--to", s(&into), s(&app)]);
    assert_code(&out, 0);
    let copy = restored(&into, &env.src);
    // The original's hard link (etc/config.hard) was not selected, so no link is expected.
    let unlinked = |t: BTreeMap<Vec<u8>, String>| -> BTreeMap<Vec<u8>, String> {
        t.into_iter()
            .map(|(k, v)| (k, v.split(" linked-with").next().unwrap().to_owned()))
            .collect()
    };
    assert_eq!(
        unlinked(describe_tree(&app)),
        describe_tree(&copy.join("etc/app"))
    );
    assert!(!copy.join("run.sh").exists());
    assert!(fs::symlink_metadata(copy.join("etc/current")).is_err());
    let etc: Vec<_> = fs::read_dir(copy.join("etc")).unwrap().collect();
    assert_eq!(etc.len(), 1);
    // A hard link whose original is not selected still gets its data.
    let into2 = env.dir.path().join("hard");
    let hard = env.src.join("etc/config.hard");
    let rel = hard.strip_prefix("/").unwrap();
    assert_code(
        &env.vouch(&["restore", s(&archive), "--to", s(&into2), s(rel)]),
        0,
    );
    assert_eq!(fs::read(restored(&into2, &hard)).unwrap(), b"key = 1\n");
    assert!(!restored(&into2, &env.src.join("etc/app")).exists());
}

#[test]
fn a_path_not_in_the_archive_is_refused_before_anything_is_written() {
    let env = Env::new();
    fs::write(env.src.join("a"), "a").unwrap();
    let archive = run_ok(&env);
    let into = env.dir.path().join("new");
    let out = env.vouch(&["restore", s(&archive), "--to", s(&into), "no/such/path"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("no/such/path"), "{}", stderr(&out));
    assert!(!into.exists());
}

#[test]
fn existing_paths_are_refused_without_in_place() {
    let env = Env::new();
    fs::write(env.src.join("a"), "archived").unwrap();
    let archive = run_ok(&env);
    let into = env.dir.path().join("busy");
    let there = restored(&into, &env.src.join("a"));
    fs::create_dir_all(there.parent().unwrap()).unwrap();
    fs::write(&there, "already here").unwrap();
    let before = snapshot(&into);
    let out = env.vouch(&["restore", s(&archive), "--to", s(&into)]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--in-place"), "{}", stderr(&out));
    assert_eq!(snapshot(&into), before);
    // The parent of a missing DIR must exist.
    let out = env.vouch(&[
        "restore",
        s(&archive),
        "--to",
        s(&env.dir.path().join("x/y")),
    ]);
    assert_code(&out, 2);
}

#[test]
fn an_archive_restores_by_name_and_by_path_without_any_config() {
    let env = Env::new();
    fs::write(env.src.join("a"), "by name").unwrap();
    let archive = run_ok(&env);
    let name = archive.file_name().unwrap().to_str().unwrap();
    let into = env.dir.path().join("by-name");
    assert_code(&env.vouch(&["restore", name, "--to", s(&into)]), 0);
    assert_eq!(
        fs::read(restored(&into, &env.src.join("a"))).unwrap(),
        b"by name"
    );
    // Another host: no config at all, only the archive and its identity.
    let elsewhere = env.dir.path().join("copied");
    fs::create_dir(&elsewhere).unwrap();
    let copy = elsewhere.join(name);
    fs::copy(&archive, &copy).unwrap();
    let into = env.dir.path().join("by-path");
    let mut cmd = env.command(&["restore", s(&copy), "--to", s(&into), "--identity"]);
    cmd.arg(&env.identity);
    // `--config` pointing nowhere: the restore must not need it.
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut cmd2 = Command::new(cmd.get_program());
    cmd2.args(&args[2..]) // without --config PATH
        .env("VOUCH_CONFIG", "/nonexistent/vouch.toml")
        .env("STATE_DIRECTORY", &env.state)
        .env("RUNTIME_DIRECTORY", &env.runtime)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("VOUCH_TEST_FAULT")
        .env_remove("JOURNAL_STREAM");
    let out = cmd2.output().unwrap();
    assert_code(&out, 0);
    assert_eq!(
        fs::read(restored(&into, &env.src.join("a"))).unwrap(),
        b"by name"
    );
    // Without --identity and without a config there is nothing to decrypt with.
    let mut cmd3 = Command::new(cmd.get_program());
    cmd3.args([
        "restore",
        s(&copy),
        "--to",
        s(&env.dir.path().join("nokey")),
    ])
    .env("VOUCH_CONFIG", "/nonexistent/vouch.toml")
    .env_remove("CREDENTIALS_DIRECTORY")
    .env_remove("JOURNAL_STREAM");
    assert_code(&cmd3.output().unwrap(), 10);
    // An unknown name is a usage error.
    assert_code(
        &env.vouch(&[
            "restore",
            "nope-20200101T000000Z.tar.gz.age",
            "--to",
            "/tmp/x",
        ]),
        2,
    );
}

#[test]
fn a_receipt_that_does_not_match_is_33_and_nothing_is_written() {
    let env = Env::new();
    fs::write(env.src.join("a"), "a").unwrap();
    let archive = run_ok(&env);
    let receipt = PathBuf::from(format!("{}.json", archive.display()));
    let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&receipt).unwrap()).unwrap();
    json["archive-size"] = serde_json::Value::from(1u64);
    fs::write(&receipt, serde_json::to_vec(&json).unwrap()).unwrap();
    let into = env.dir.path().join("r");
    let out = env.vouch(&["restore", s(&archive), "--to", s(&into)]);
    assert_code(&out, 33);
    assert!(stderr(&out).contains("receipt"), "{}", stderr(&out));
    assert!(!into.exists());
}

/// A hostile archive: `kind` from tests/restore/craft.py, aimed at `outside`, encrypted with
/// the real `age` to the test's recipient.
fn craft(env: &Env, kind: &str, outside: &Path) -> PathBuf {
    craft_into(env, kind, outside, None)
}

/// [`craft`], for kinds that name the destination `dest` inside the archive.
fn craft_into(env: &Env, kind: &str, outside: &Path, dest: Option<&Path>) -> PathBuf {
    let dir = env.dir.path().join("crafted");
    fs::create_dir_all(&dir).unwrap();
    let plain = dir.join(format!("{kind}.tar.gz"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/restore/craft.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(kind)
        .arg(&plain)
        .arg(outside)
        .args(dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "craft.py {kind}: {}", stderr(&out));
    let archive = dir.join(format!("{kind}-20200913T122640Z.tar.gz.age"));
    let out = Command::new("age")
        .args(["-r", &env.recipient, "-o"])
        .arg(&archive)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(out.status.success(), "age: {}", stderr(&out));
    archive
}

/// A world with a sentinel directory outside the destination and a destination holding one
/// file of its own.
struct Arena {
    env: Env,
    sentinel: PathBuf,
    dest: PathBuf,
}

impl Arena {
    fn new() -> Arena {
        let env = Env::new();
        env.write_config("", "");
        let sentinel = env.dir.path().join("sentinel");
        fs::create_dir(&sentinel).unwrap();
        fs::write(sentinel.join("victim"), "untouched\n").unwrap();
        let dest = env.dir.path().join("dest");
        fs::create_dir_all(dest.join("keep")).unwrap();
        fs::write(dest.join("keep/mine"), "the user's own file\n").unwrap();
        Arena {
            env,
            sentinel,
            dest,
        }
    }

    /// Restores `archive` with `extra` arguments; asserts the exit code, that the sentinel
    /// and the destination are unchanged, and that the message names `fragment`.
    fn refused(&self, archive: &Path, extra: &[&str], code: i32, fragment: &str) {
        let sentinel = snapshot(&self.sentinel);
        let dest = snapshot(&self.dest);
        let mut args = vec!["restore", s(archive), "--to", s(&self.dest)];
        args.extend_from_slice(extra);
        let out = self.env.vouch(&args);
        assert_code(&out, code);
        assert!(
            stderr(&out).contains(fragment),
            "expected {fragment:?} in:\n{}",
            stderr(&out)
        );
        assert_eq!(snapshot(&self.sentinel), sentinel, "the sentinel changed");
        assert_eq!(snapshot(&self.dest), dest, "the destination changed");
        let evil_anywhere = bash_ok(&format!(
            "find '{}' -name evil",
            self.env.dir.path().display()
        ));
        assert!(
            evil_anywhere.stdout.is_empty(),
            "{:?}",
            evil_anywhere.stdout
        );
    }
}

#[test]
fn a_crafted_archive_of_the_right_shape_restores() {
    // The control for the hostile cases below: the crafting itself is accepted.
    let a = Arena::new();
    let archive = craft(&a.env, "good", &a.sentinel);
    let out = a.env.vouch(&["restore", s(&archive), "--to", s(&a.dest)]);
    assert_code(&out, 0);
    assert_eq!(fs::read(a.dest.join("d/good.txt")).unwrap(), b"good data\n");
    assert_eq!(
        fs::read(a.dest.join("keep/mine")).unwrap(),
        b"the user's own file\n"
    );
}

#[test]
fn vouchs_own_working_names_in_an_archive_are_refused() {
    require_root();
    let a = Arena::new();
    let planted = craft_into(&a.env, "planted-journal", &a.sentinel, Some(&a.dest));
    a.refused(&planted, &[], 33, ".vouch-restore.1.deadbeef");
    a.refused(&planted, &["--in-place"], 33, ".vouch-restore.1.deadbeef");
    for kind in ["staging-prefix", "old-name"] {
        let archive = craft(&a.env, kind, &a.sentinel);
        a.refused(&archive, &[], 33, "a name vouch uses for its own files");
    }
    // Nothing was planted, so the next restore leaves the user's files alone.
    let before = snapshot(&a.dest);
    let good = craft(&a.env, "good", &a.sentinel);
    let out = a.env.vouch(&["restore", s(&good), "--to", s(&a.dest)]);
    assert_code(&out, 0);
    assert!(!stderr(&out).contains("rolled back"), "{}", stderr(&out));
    let mut after = snapshot(&a.dest).unwrap();
    after.retain(|k, _| !k.starts_with(b"d"));
    assert_eq!(Some(after), before);
}

#[test]
fn dot_dot_names_are_refused() {
    let a = Arena::new();
    let archive = craft(&a.env, "dotdot", &a.sentinel);
    a.refused(&archive, &[], 33, "`..`");
    let archive = craft(&a.env, "tar-differs", &a.sentinel);
    a.refused(&archive, &[], 33, "found where the manifest has d/evil");
}

#[test]
fn absolute_names_are_refused() {
    let a = Arena::new();
    let archive = craft(&a.env, "absolute", &a.sentinel);
    a.refused(&archive, &[], 33, "absolute");
}

#[test]
fn a_file_behind_a_symlink_of_the_archive_is_refused() {
    let a = Arena::new();
    let archive = craft(&a.env, "symlink-then-file", &a.sentinel);
    a.refused(&archive, &[], 33, "not a directory");
    a.refused(&archive, &["--in-place"], 33, "not a directory");
}

#[test]
fn a_symlink_or_file_listed_after_what_is_below_it_is_refused() {
    // Placing `a` would replace the directory the restore itself made for `a/evil`, losing it.
    let a = Arena::new();
    for (kind, what) in [
        ("child-before-symlink", "symlink"),
        ("child-before-file", "file"),
    ] {
        let archive = craft(&a.env, kind, &a.sentinel);
        let named = format!("a: refused, a {what} listed after a/evil");
        a.refused(&archive, &[], 33, &named);
        a.refused(&archive, &["--in-place"], 33, &named);
    }
    // An existing directory `a` is kept as it is.
    fs::create_dir(a.dest.join("a")).unwrap();
    fs::write(a.dest.join("a/old"), "old\n").unwrap();
    let archive = craft(&a.env, "child-before-symlink", &a.sentinel);
    a.refused(&archive, &["--in-place"], 33, "listed after a/evil");
}

#[test]
fn a_directory_listed_after_what_is_below_it_restores() {
    let a = Arena::new();
    let archive = craft(&a.env, "child-before-dir", &a.sentinel);
    let sentinel = snapshot(&a.sentinel);
    let restored_well = |how: &str| {
        assert_eq!(
            fs::read(a.dest.join("a/inside")).unwrap(),
            b"good data\n",
            "{how}"
        );
        let m = fs::symlink_metadata(a.dest.join("a")).unwrap();
        assert!(m.is_dir(), "{how}: {m:?}");
        assert_eq!(m.mode() & 0o7777, 0o750, "{how}");
        assert_eq!(m.mtime(), 1_600_000_000, "{how}");
        assert_eq!(snapshot(&a.sentinel), sentinel, "{how}");
    };
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", s(&archive), "--to", s(&a.dest)];
        args.extend_from_slice(extra);
        assert_code(&a.env.vouch(&args), 0);
    };
    // A failure once `a/inside` is in place (after `d` and `d/good.txt`), before `a` itself
    // comes: the existing `a` gets its own time back although the restore changed what is in
    // it.
    fs::create_dir(a.dest.join("a")).unwrap();
    fs::write(a.dest.join("a/inside"), "old inside\n").unwrap();
    touch(&a.dest.join("a"), "2014-04-14 14:14:14.75");
    let before = exact_tree(&a.dest);
    let out = a
        .env
        .command(&["restore", s(&archive), "--to", s(&a.dest), "--in-place"])
        .env("VOUCH_TEST_FAULT", "restore-fail-at:3")
        .output()
        .unwrap();
    assert_code(&out, 30);
    assert_eq!(exact_tree(&a.dest), before);
    fs::remove_dir_all(a.dest.join("a")).unwrap();
    restore(&[]);
    restored_well("into a new place");
    restore(&["--in-place"]);
    restored_well("over itself");
    // With --in-place, a symlink or a file in the way of the directory is replaced, even
    // though the directory comes after what is below it.
    fs::remove_dir_all(a.dest.join("a")).unwrap();
    std::os::unix::fs::symlink(&a.sentinel, a.dest.join("a")).unwrap();
    restore(&["--in-place"]);
    restored_well("over a symlink");
    fs::remove_dir_all(a.dest.join("a")).unwrap();
    fs::write(a.dest.join("a"), "a file in the way\n").unwrap();
    restore(&["--in-place"]);
    restored_well("over a file");
    assert_eq!(
        fs::read(a.dest.join("keep/mine")).unwrap(),
        b"the user's own file\n"
    );
}

#[test]
fn a_file_behind_a_symlink_already_in_the_destination_is_refused() {
    let a = Arena::new();
    std::os::unix::fs::symlink(&a.sentinel, a.dest.join("a")).unwrap();
    let archive = craft(&a.env, "file-under-existing", &a.sentinel);
    a.refused(&archive, &[], 2, "symlink");
    a.refused(&archive, &["--in-place"], 2, "symlink");
}

#[test]
fn in_place_replaces_a_symlink_in_the_way_instead_of_following_it() {
    let a = Arena::new();
    std::os::unix::fs::symlink(&a.sentinel, a.dest.join("a")).unwrap();
    let archive = craft(&a.env, "dir-over-symlink", &a.sentinel);
    // Without --in-place, `a` is in the way.
    a.refused(&archive, &[], 2, "already exists");
    let sentinel = snapshot(&a.sentinel);
    let out = a
        .env
        .vouch(&["restore", s(&archive), "--to", s(&a.dest), "--in-place"]);
    assert_code(&out, 0);
    assert_eq!(snapshot(&a.sentinel), sentinel);
    let m = fs::symlink_metadata(a.dest.join("a")).unwrap();
    assert!(m.is_dir(), "{m:?}");
    assert_eq!(fs::read(a.dest.join("a/inside")).unwrap(), b"good data\n");
}

#[test]
fn hard_links_to_outside_are_refused() {
    let a = Arena::new();
    for kind in ["hardlink-outside", "hardlink-dotdot"] {
        let archive = craft(&a.env, kind, &a.sentinel);
        a.refused(&archive, &[], 33, "hard link");
    }
    assert_eq!(fs::metadata(a.sentinel.join("victim")).unwrap().nlink(), 1);
}

#[test]
fn device_nodes_and_fifos_need_devices_as_root() {
    require_root();
    let a = Arena::new();
    let archive = craft(&a.env, "device", &a.sentinel);
    a.refused(&archive, &[], 33, "--devices");
    let fifo = craft(&a.env, "fifo", &a.sentinel);
    a.refused(&fifo, &[], 33, "--devices");
    // As root with --devices, each comes back as its tar header describes it.
    use std::os::unix::fs::FileTypeExt;
    let into = a.env.dir.path().join("dev");
    let out = a
        .env
        .vouch(&["restore", s(&archive), "--to", s(&into), "--devices"]);
    assert_code(&out, 0);
    let m = fs::symlink_metadata(into.join("d/null")).unwrap();
    assert!(m.file_type().is_char_device(), "{m:?}");
    assert_eq!(m.rdev(), fs::metadata("/dev/null").unwrap().rdev());
    assert_eq!(m.mode() & 0o7777, 0o666);
    assert_eq!(m.mtime(), 1_600_000_000);
    assert_eq!(fs::read(into.join("d/good.txt")).unwrap(), b"good data\n");
    let into = a.env.dir.path().join("fifo");
    let out = a
        .env
        .vouch(&["restore", s(&fifo), "--to", s(&into), "--devices"]);
    assert_code(&out, 0);
    let m = fs::symlink_metadata(into.join("d/pipe")).unwrap();
    assert!(m.file_type().is_fifo(), "{m:?}");
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!((m.uid(), m.gid()), (4321, 8765));
    assert_eq!(m.mtime(), 1_600_000_000);
    // Restoring only the FIFO's directory brings it too.
    let into = a.env.dir.path().join("fifo-d");
    let out = a
        .env
        .vouch(&["restore", s(&fifo), "--to", s(&into), "--devices", "d"]);
    assert_code(&out, 0);
    assert!(fs::symlink_metadata(into.join("d/pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn a_fifo_above_another_entry_is_refused() {
    require_root();
    let a = Arena::new();
    let archive = craft(&a.env, "fifo-above-a-file", &a.sentinel);
    a.refused(
        &archive,
        &["--devices"],
        33,
        "d/x: refused, a fifo at the place of another entry or above one",
    );
}

#[test]
fn devices_as_another_user_is_refused_before_anything_is_written() {
    require_root();
    let a = Arena::new();
    let fifo = craft(&a.env, "fifo", &a.sentinel);
    // nobody needs to reach the archive and its own copy of the identity, and may write in
    // `open`.
    let open = a.env.dir.path().join("shared");
    fs::create_dir(&open).unwrap();
    let copy = open.join(fifo.file_name().unwrap());
    fs::copy(&fifo, &copy).unwrap();
    let key = open.join("identity.txt");
    fs::copy(&a.env.identity, &key).unwrap();
    bash_ok(&format!(
        "chmod 755 '{}' && chmod 644 '{c}' && chown nobody '{o}' '{k}'",
        a.env.dir.path().display(),
        c = copy.display(),
        o = open.display(),
        k = key.display(),
    ));
    let into = open.join("out");
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", s(&copy), "--to", s(&into), "--identity", s(&key)];
        args.extend_from_slice(extra);
        a.env.as_nobody(&args).output().unwrap()
    };
    let out = restore(&["--devices"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("--devices: only root can create device nodes and FIFOs"),
        "{}",
        stderr(&out)
    );
    assert!(!into.exists());
    // Without --devices, the FIFO itself is refused, by name.
    let out = restore(&[]);
    assert_code(&out, 33);
    assert!(
        stderr(&out).contains("d/pipe: refused, a fifo"),
        "{}",
        stderr(&out)
    );
    assert!(!into.exists());
}

#[test]
fn a_wrong_hash_is_33_and_nothing_is_kept() {
    let a = Arena::new();
    let archive = craft(&a.env, "wrong-hash", &a.sentinel);
    a.refused(&archive, &[], 33, "d/bad.txt: content differs");
    assert!(!a.dest.join("d").exists());
}

#[test]
fn a_truncated_stream_is_33() {
    let a = Arena::new();
    let archive = craft(&a.env, "good", &a.sentinel);
    let len = fs::metadata(&archive).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap()
        .set_len(len - 40)
        .unwrap();
    // Exit 33 names the archive and says what is wrong with it, then why (age's own word).
    let broken = |archive: &Path| {
        let name = archive.file_name().unwrap().to_str().unwrap();
        format!("VERIFY: {name}: the archive is truncated or damaged")
    };
    a.refused(&archive, &[], 33, &broken(&archive));
    a.refused(&archive, &[], 33, "decryption error");
    // A real archive cut short as well.
    fs::write(a.env.src.join("data"), vec![7u8; 100_000]).unwrap();
    assert_code(&a.env.vouch(&["run"]), 0);
    let real = a.env.archives().pop().unwrap();
    let len = fs::metadata(&real).unwrap().len();
    let cut = a.env.dir.path().join("cut");
    fs::create_dir(&cut).unwrap();
    let cut = cut.join(real.file_name().unwrap());
    fs::write(&cut, &fs::read(&real).unwrap()[..len as usize / 2]).unwrap();
    a.refused(&cut, &[], 33, &broken(&cut));
    a.refused(&cut, &[], 33, "decryption error");
}

/// Runs `vouch ARGS` with its stderr on a pseudo-terminal (tests/restore/on_tty.py); returns
/// the output (stdout only) and what appeared on the terminal.
fn on_tty(env: &Env, args: &[&str]) -> (std::process::Output, String) {
    let inner = env.command(args);
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
    let text = String::from_utf8_lossy(&fs::read(&seen).unwrap()).into_owned();
    (out, text)
}

#[test]
fn progress_is_shown_on_a_terminal_and_only_there() {
    let env = Env::new();
    fs::create_dir(env.src.join("many")).unwrap();
    for i in 0..30 {
        fs::write(env.src.join(format!("many/{i}")), util::noise(20_000, i)).unwrap();
    }
    let archive = run_ok(&env);
    let phases = [
        "reading the manifest: ",
        "restoring: ",
        "moving into place: ",
    ];
    let into = env.dir.path().join("on-a-tty");
    let (out, tty) = on_tty(&env, &["restore", s(&archive), "--to", s(&into)]);
    assert_code(&out, 0);
    for phase in phases {
        assert!(tty.contains(phase), "no {phase:?} on the terminal: {tty:?}");
    }
    // Each phase ends on its full figure: "N of N" (the commit's in entries).
    for (phase, unit) in phases.into_iter().zip(["", "", " entries"]) {
        let last = tty.rsplit(phase).next().unwrap();
        let line = last.split("   ").next().unwrap();
        let (done, total) = line.split_once(" of ").unwrap();
        assert_eq!(total, format!("{done}{unit}"), "{phase}{line:?}");
    }
    // The result is on stdout, not on the terminal.
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("restored "));
    assert!(!tty.contains("restored "), "{tty:?}");
    // With stderr not a terminal, no progress at all.
    let out = env.vouch(&[
        "restore",
        s(&archive),
        "--to",
        s(&env.dir.path().join("piped")),
    ]);
    assert_code(&out, 0);
    for phase in phases {
        assert!(!stderr(&out).contains(phase), "{}", stderr(&out));
    }
}

/// A tree restored into `dest`, then changed by the user.
fn restored_then_changed(env: &Env, dest: &Path) -> PathBuf {
    fs::create_dir_all(env.src.join("app")).unwrap();
    for i in 0..40 {
        fs::write(
            env.src.join(format!("app/f{i:02}")),
            format!("version 1 of {i}\n"),
        )
        .unwrap();
    }
    let archive = run_ok(env);
    assert_code(&env.vouch(&["restore", s(&archive), "--to", s(dest)]), 0);
    let app = restored(dest, &env.src.join("app"));
    for i in 0..40 {
        fs::write(app.join(format!("f{i:02}")), format!("changed {i}\n")).unwrap();
    }
    fs::write(app.join("new-file"), "added after the backup\n").unwrap();
    fs::remove_file(app.join("f07")).unwrap();
    std::os::unix::fs::symlink("elsewhere", app.join("f08.tmp")).unwrap();
    archive
}

fn without_staging(tree: Option<BTreeMap<Vec<u8>, String>>) -> BTreeMap<Vec<u8>, String> {
    tree.unwrap()
        .into_iter()
        .filter(|(k, _)| !k.starts_with(b".vouch-restore."))
        .collect()
}

#[test]
fn in_place_replaces_the_tree_and_keeps_other_files() {
    let env = Env::new();
    let dest = env.dir.path().join("live");
    let archive = restored_then_changed(&env, &dest);
    let out = env.vouch(&["restore", s(&archive), "--to", s(&dest), "--in-place"]);
    assert_code(&out, 0);
    let app = restored(&dest, &env.src.join("app"));
    let back = describe_tree(&app);
    let mut want = describe_tree(&env.src.join("app"));
    // Files the archive does not have are left alone.
    for extra in ["new-file", "f08.tmp"] {
        let d = describe_tree(&app).remove(extra.as_bytes()).unwrap();
        want.insert(extra.as_bytes().to_vec(), d);
    }
    assert_eq!(back, want);
    let top: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        top,
        ["tmp"],
        "the staging directory was not removed: {top:?}"
    );
}

#[test]
fn a_mount_point_inside_the_destination_is_restored_across_filesystems() {
    require_root();
    let env = Env::new();
    fs::write(env.src.join("a"), "archived a\n").unwrap();
    fs::set_permissions(env.src.join("a"), fs::Permissions::from_mode(0o640)).unwrap();
    touch(&env.src.join("a"), "2003-03-03 03:03:03");
    let archive = run_ok(&env);
    let dest = env.dir.path().join("dest");
    let mnt = dest.join("tmp");
    fs::create_dir_all(&mnt).unwrap();
    let file = restored(&dest, &env.src.join("a"));
    let q = |p: &Path| format!("'{}'", p.display());
    let vouch = |extra: &str| {
        format!(
            "{} --config {} restore {} --to {} {extra}",
            q(Path::new(env!("CARGO_BIN_EXE_vouch"))),
            q(&env.config),
            q(&archive),
            q(&dest)
        )
    };
    // In a private mount namespace, DIR/tmp is a tmpfs: staged files cross a filesystem.
    let script = format!(
        "set -e; mount -t tmpfs vouch-test {m}; {first}; echo changed > {f}; \
         {second}; cat {f}; stat -c '%a %Y' {f}; ls -A {parent}; ls -A {d}",
        m = q(&mnt),
        first = vouch(""),
        second = vouch("--in-place"),
        f = q(&file),
        parent = q(file.parent().unwrap()),
        d = q(&dest),
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", &script])
        .env("STATE_DIRECTORY", &env.state)
        .env("RUNTIME_DIRECTORY", &env.runtime)
        .env_remove("JOURNAL_STREAM")
        .env_remove("VOUCH_TEST_FAULT")
        .output()
        .unwrap();
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("restored"))
        .collect();
    let mtime = fs::metadata(env.src.join("a")).unwrap().mtime();
    assert_eq!(
        lines,
        ["archived a", &format!("640 {mtime}"), "a", "tmp"],
        "{text}"
    );
}

#[test]
fn in_place_killed_halfway_leaves_the_old_tree() {
    let env = Env::new();
    let dest = env.dir.path().join("live");
    let archive = restored_then_changed(&env, &dest);
    let before = snapshot(&dest);
    let out = env
        .command(&["restore", s(&archive), "--to", s(&dest), "--in-place"])
        .env("VOUCH_TEST_FAULT", "kill:restore-mid")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
    // Only the staging directory of the killed process is new.
    assert_eq!(without_staging(snapshot(&dest)), before.clone().unwrap());
    // It holds no journal: the next restore just removes it, and goes through.
    assert_eq!(stagings(&dest).len(), 1);
    let out = env.vouch(&["restore", s(&archive), "--to", s(&dest), "--in-place"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("stopped before it changed anything"),
        "{}",
        stderr(&out)
    );
    assert!(stagings(&dest).is_empty());
}

/// Everything `lstat` says about each entry under `root`, with file contents and symlink
/// targets: equal only when the tree is exactly as it was, down to inode numbers and
/// nanoseconds. Only `root`'s own times are left out (the staging directory is made and
/// removed in it).
fn exact_tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_owned();
        let what = if m.file_type().is_symlink() {
            format!("symlink to {:?}", fs::read_link(&p).unwrap())
        } else if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            "dir".to_owned()
        } else {
            format!("file {:?}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
        };
        let times = if rel.as_os_str().is_empty() {
            String::new()
        } else {
            format!(" mtime {}.{:09}", m.mtime(), m.mtime_nsec())
        };
        out.insert(
            rel,
            format!(
                "{what} mode {:o} owner {}:{} inode {} links {}{times}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                m.ino(),
                m.nlink()
            ),
        );
    }
    out
}

/// An old tree for `--in-place` over it: [`restored_then_changed`], plus odd modes, times and a
/// symlink where the archive has a file, so that putting it back has something to get wrong.
fn old_tree(env: &Env, dest: &Path) -> PathBuf {
    let archive = restored_then_changed(env, dest);
    let app = restored(dest, &env.src.join("app"));
    fs::set_permissions(app.join("f01"), fs::Permissions::from_mode(0o600)).unwrap();
    touch(&app.join("f02"), "2011-11-11 11:11:11.123456789");
    fs::remove_file(app.join("f03")).unwrap();
    std::os::unix::fs::symlink("somewhere/else", app.join("f03")).unwrap();
    touch(&app.join("f03"), "2012-12-12 12:12:12.5");
    fs::set_permissions(&app, fs::Permissions::from_mode(0o750)).unwrap();
    touch(&app, "2013-03-13 13:13:13.25");
    archive
}

/// `vouch ARGS` with SIGINT, SIGTERM and SIGHUP at their default dispositions (a test run in
/// the background of a shell may inherit them ignored), started, not waited for.
fn spawn_vouch(env: &Env, fault: &str, args: &[&str]) -> std::process::Child {
    env.wrapped(&["env", "--default-signal=INT,TERM,HUP"], "true", args)
        .env("VOUCH_TEST_FAULT", fault)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends `signal` to the process `pid`.
fn send(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
}

/// The staging directories in `dest`.
fn stagings(dest: &Path) -> Vec<PathBuf> {
    fs::read_dir(dest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".vouch-restore.")
        })
        .collect()
}

#[test]
fn in_place_interrupted_mid_commit_puts_the_old_tree_back_exactly_and_dies_by_the_signal() {
    use nix::sys::signal::Signal;
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let dest = env.dir.path().join("live");
    let archive = old_tree(&env, &dest);
    let before = exact_tree(&dest);
    let args = ["restore", s(&archive), "--to", s(&dest), "--in-place"];
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // Stopped once 20 of the archive's entries are in place, then signalled.
        let child = spawn_vouch(&env, "stop:restore-commit:20", &args);
        let pid = child.id();
        util::wait_stopped(pid);
        assert_ne!(
            exact_tree(&dest),
            before,
            "{signal}: nothing was replaced yet"
        );
        send(pid, signal);
        send(pid, Signal::SIGCONT);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.signal(),
            Some(signal as i32),
            "{signal}: {:?}: {}",
            out.status,
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(&format!("interrupted by {}", signal.as_str())),
            "{}",
            stderr(&out)
        );
        // Contents, modes, times, symlinks, inodes: all as before, and no staging left.
        assert_eq!(exact_tree(&dest), before, "after {signal}");
    }
    // Stopped in the second pass, before the commit: only the staging directory goes.
    let child = spawn_vouch(&env, "stop:restore-mid", &args);
    util::wait_stopped(child.id());
    send(child.id(), Signal::SIGTERM);
    send(child.id(), Signal::SIGCONT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(Signal::SIGTERM as i32));
    assert_eq!(exact_tree(&dest), before, "before the commit");
    // An ignored SIGHUP (nohup) stays ignored: the restore goes through.
    let mut nohup = env.wrapped(&["nohup"], "true", &args);
    let child = nohup
        .env("VOUCH_TEST_FAULT", "stop:restore-commit:20")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_stopped(child.id());
    send(child.id(), Signal::SIGHUP);
    send(child.id(), Signal::SIGCONT);
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0);
    let f00 = restored(&dest, &env.src.join("app/f00"));
    assert_eq!(fs::read(f00).unwrap(), b"version 1 of 0\n");
}

#[test]
fn in_place_killed_mid_commit_is_rolled_back_by_the_next_restore() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let dest = env.dir.path().join("live");
    let archive = old_tree(&env, &dest);
    let before = exact_tree(&dest);
    let in_place = ["restore", s(&archive), "--to", s(&dest), "--in-place"];
    let killed = || {
        let out = env
            .command(&in_place)
            .env("VOUCH_TEST_FAULT", "kill:restore-commit:20")
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
        assert_ne!(exact_tree(&dest), before, "nothing was replaced yet");
        let left = stagings(&dest);
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].join("journal").is_file());
    };
    // Only the recovery: this restore then stops, since the path is not in the archive.
    killed();
    let out = env.vouch(&[
        "restore",
        s(&archive),
        "--to",
        s(&dest),
        "--in-place",
        "no/such/path",
    ]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    assert_eq!(exact_tree(&dest), before);
    // Killed again; the next restore rolls back and then goes through.
    killed();
    let out = env.vouch(&in_place);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    assert!(stagings(&dest).is_empty());
    let app = restored(&dest, &env.src.join("app"));
    for i in [0, 3, 39] {
        assert_eq!(
            fs::read_to_string(app.join(format!("f{i:02}"))).unwrap(),
            format!("version 1 of {i}\n")
        );
    }
    assert_eq!(
        fs::read(app.join("new-file")).unwrap(),
        b"added after the backup\n"
    );
}

#[test]
fn a_restore_killed_after_its_commit_is_only_cleaned_up() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let dest = env.dir.path().join("live");
    let archive = old_tree(&env, &dest);
    let in_place = ["restore", s(&archive), "--to", s(&dest), "--in-place"];
    let out = env
        .command(&in_place)
        .env("VOUCH_TEST_FAULT", "kill:restore-committed")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    assert_eq!(stagings(&dest).len(), 1);
    let after = exact_tree(&dest);
    // The next restore (of one file, so the rest stays as the killed one left it) only
    // removes the staging directory: the restore it belongs to had gone through.
    let f00 = env.src.join("app/f00");
    let out = env.vouch(&[
        "restore",
        s(&archive),
        "--to",
        s(&dest),
        "--in-place",
        s(&f00),
    ]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("had gone through"),
        "{}",
        stderr(&out)
    );
    assert!(stagings(&dest).is_empty());
    // The restored tree, but for f00 (restored again) and directory times.
    let unchanged = |t: BTreeMap<PathBuf, String>| -> BTreeMap<PathBuf, String> {
        t.into_iter()
            .filter(|(k, _)| k.starts_with("tmp") && !k.ends_with("f00"))
            .map(|(k, v)| (k, v.split(" mtime").next().unwrap().to_owned()))
            .collect()
    };
    assert_eq!(unchanged(exact_tree(&dest)), unchanged(after));
    let app = restored(&dest, &env.src.join("app"));
    assert_eq!(fs::read(app.join("f03")).unwrap(), b"version 1 of 3\n");
}

#[test]
fn in_place_failing_while_moving_into_place_puts_the_old_tree_back() {
    let env = Env::new();
    let dest = env.dir.path().join("live");
    let archive = restored_then_changed(&env, &dest);
    let before = snapshot(&dest);
    let out = env
        .command(&["restore", s(&archive), "--to", s(&dest), "--in-place"])
        .env("VOUCH_TEST_FAULT", "restore-fail-at:25")
        .output()
        .unwrap();
    // An I/O error in the destination is a write failure.
    assert_code(&out, 30);
    assert_eq!(snapshot(&dest), before);
    // Without the fault, the same restore succeeds.
    let out = env.vouch(&["restore", s(&archive), "--to", s(&dest), "--in-place"]);
    assert_code(&out, 0);
    let f00 = restored(&dest, &env.src.join("app/f00"));
    assert_eq!(fs::read(f00).unwrap(), b"version 1 of 0\n");
}

#[test]
fn in_place_with_a_bad_entry_late_in_the_archive_leaves_the_old_tree() {
    let a = Arena::new();
    let archive = craft(&a.env, "late-wrong-hash", &a.sentinel);
    fs::create_dir(a.dest.join("d")).unwrap();
    for i in 0..20 {
        fs::write(a.dest.join(format!("d/f{i:02}")), "old\n").unwrap();
    }
    fs::write(a.dest.join("d/good.txt"), "old good\n").unwrap();
    a.refused(&archive, &["--in-place"], 33, "d/zz-bad.txt");
}

#[test]
fn split_archives_restore_by_name_part_or_receipt_and_a_missing_part_is_33() {
    let env = Env::new();
    let data: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    fs::write(env.src.join("data.bin"), &data).unwrap();
    env.write_config("", "split = \"1MiB\"");
    assert_code(&env.vouch(&["run"]), 0);
    let parts: Vec<String> = env
        .target_files()
        .into_iter()
        .filter(|f| !f.ends_with(".json"))
        .collect();
    assert!(parts.len() >= 2, "{parts:?}");
    let name = parts[0].strip_suffix(".000").unwrap().to_owned();
    // A split archive's receipt is NAME-receipt.json.
    let receipt = format!("{name}-receipt.json");
    assert!(env.target.join(&receipt).is_file(), "{receipt}");
    // By the archive's name, and by the path of a part or of the receipt.
    let first_part = env.target.join(&parts[0]);
    let last_part = env.target.join(parts.last().unwrap());
    let by_receipt = env.target.join(&receipt);
    for (how, arg) in [
        ("whole", name.as_str()),
        ("part", s(&first_part)),
        ("last-part", s(&last_part)),
        ("receipt", s(&by_receipt)),
    ] {
        let into = env.dir.path().join(how);
        let out = env.vouch(&["restore", arg, "--to", s(&into)]);
        assert_code(&out, 0);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("from {name} into")),
            "{how}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            fs::read(restored(&into, &env.src.join("data.bin"))).unwrap(),
            data,
            "{how}"
        );
    }
    fs::remove_file(env.target.join(&parts[1])).unwrap();
    let into = env.dir.path().join("gap");
    let out = env.vouch(&["restore", &name, "--to", s(&into)]);
    assert_code(&out, 33);
    assert!(stderr(&out).contains(&parts[1]), "{}", stderr(&out));
    assert!(!into.exists());
}

#[test]
fn as_another_user_files_belong_to_the_caller() {
    let env = Env::new();
    fs::write(env.src.join("a"), "mine now").unwrap();
    std::os::unix::fs::chown(env.src.join("a"), Some(1234), Some(1234)).unwrap();
    let archive = run_ok(&env);
    // nobody needs to reach the archive and its own copy of the identity.
    let open = env.dir.path().join("shared");
    fs::create_dir(&open).unwrap();
    let copy = open.join(archive.file_name().unwrap());
    fs::copy(&archive, &copy).unwrap();
    let key = open.join("identity.txt");
    fs::copy(&env.identity, &key).unwrap();
    let into = open.join("out");
    fs::create_dir(&into).unwrap();
    bash_ok(&format!(
        "chmod 755 '{}' '{o}' && chmod 644 '{c}' && chown nobody '{k}' '{i}'",
        env.dir.path().display(),
        o = open.display(),
        c = copy.display(),
        k = key.display(),
        i = into.display()
    ));
    let out = env
        .as_nobody(&["restore", s(&copy), "--to", s(&into), "--identity", s(&key)])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let file = restored(&into, &env.src.join("a"));
    assert_eq!(fs::read(&file).unwrap(), b"mine now");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(fs::metadata(&file).unwrap().uid(), nobody.uid.as_raw());
}

#[test]
fn verify_restore_to_records_a_restore_test() {
    let env = Env::new();
    awkward_tree(&env);
    let archive = run_ok(&env);
    let scratch = env.dir.path().join("scratch");
    let out = env.vouch(&["verify", "--restore-to", s(&scratch)]);
    assert_code(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(s(&scratch)));
    assert_eq!(
        describe_tree(&env.src),
        describe_tree(&restored(&scratch, &env.src))
    );
    let log: serde_json::Value =
        serde_json::from_slice(&fs::read(env.state.join("verified.json")).unwrap()).unwrap();
    let key = format!("local/{}", archive.file_name().unwrap().to_str().unwrap());
    assert_eq!(log[&key]["restore-test"], true, "{log}");
    assert_eq!(log[&key]["ok"], true, "{log}");
    // The scratch directory must be new or empty.
    assert_code(&env.vouch(&["verify", "--restore-to", s(&scratch)]), 2);
    // Several archives: one subdirectory each.
    assert_code(&env.vouch(&["run"]), 0);
    let many = env.dir.path().join("many");
    assert_code(
        &env.vouch(&["verify", "--all", "--restore-to", s(&many)]),
        0,
    );
    for a in env.archives() {
        let sub = many.join("local").join(a.file_name().unwrap());
        assert!(
            restored(&sub, &env.src).join("etc/app/config").is_file(),
            "{sub:?}"
        );
    }
}

#[test]
fn verify_restore_to_with_a_flipped_bit_is_33() {
    let env = Env::new();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(7919) >> 3) as u8)
        .collect();
    fs::write(env.src.join("data.bin"), data).unwrap();
    let archive = run_ok(&env);
    let mut bytes = fs::read(&archive).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x04;
    fs::write(&archive, bytes).unwrap();
    let scratch = env.dir.path().join("scratch");
    let out = env.vouch(&["verify", "--restore-to", s(&scratch)]);
    assert_code(&out, 33);
    let log: serde_json::Value =
        serde_json::from_slice(&fs::read(env.state.join("verified.json")).unwrap()).unwrap();
    let key = format!("local/{}", archive.file_name().unwrap().to_str().unwrap());
    assert_eq!(log[&key]["ok"], false, "{log}");
    // The read-back failed, so no restore was attempted: it is not recorded as a restore test.
    assert_eq!(log[&key]["restore-test"], false, "{log}");
}

#[test]
fn an_identity_that_is_a_fifo_is_refused_at_once() {
    let env = Env::new();
    fs::write(env.src.join("a"), "a").unwrap();
    let archive = run_ok(&env);
    let fifo = env.dir.path().join("identity.fifo");
    bash_ok(&format!("mkfifo -m 600 '{}'", fifo.display()));
    let into = env.dir.path().join("into");
    let args = [
        "restore",
        s(&archive),
        "--to",
        s(&into),
        "--identity",
        s(&fifo),
    ];
    let out = env
        .wrapped(&["timeout", "20"], "true", &args)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(124), "blocked on the FIFO");
    assert_code(&out, 13);
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
    assert!(!into.exists());
}

#[test]
fn a_failed_write_speaks_of_the_destination_directory() {
    let env = Env::new();
    fs::write(env.src.join("a"), "a").unwrap();
    let archive = run_ok(&env);
    let into = env.dir.path().join("into");
    let out = env
        .command(&["restore", s(&archive), "--to", s(&into)])
        .env("VOUCH_TEST_FAULT", "restore-fail-at:1")
        .output()
        .unwrap();
    assert_code(&out, 30);
    let err = stderr(&out);
    assert!(err.contains("restoring into"), "{err}");
    assert!(err.contains("destination directory"), "{err}");
    assert!(!err.contains("target"), "{err}");
    assert!(!err.contains("older archives"), "{err}");
    assert!(!into.exists());
}

/// Every name below `root` (not following symlinks) starting with `prefix`.
fn names_below(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(e.path());
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_directory_swapped_for_a_symlink_during_the_commit_is_never_written_through() {
    require_root();
    const TRIALS: usize = 8;
    let env = Env::new();
    env.write_config("", "");
    let outside = env.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let archive = craft(&env, "many", &outside);
    let attacker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/restore/exchange.py");
    bash_ok(&format!("chmod 755 '{}'", env.dir.path().display()));
    let mut outcomes = Vec::new();
    for trial in 0..TRIALS {
        // The destination belongs to an unprivileged user, who swaps the restore's `d` with a
        // symlink to a root-owned directory outside it, over and over.
        let dest = env.dir.path().join(format!("dest{trial}"));
        fs::create_dir(&dest).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("dlink")).unwrap();
        bash_ok(&format!(
            "chown -h 65534:65534 '{d}' '{d}/dlink'",
            d = dest.display()
        ));
        let stop = env.dir.path().join(format!("stop{trial}"));
        let swapper = Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            // The system's interpreter: one under root's home is out of the attacker's reach.
            .arg("/usr/bin/python3")
            .arg(&attacker)
            .arg(dest.join("d"))
            .arg(dest.join("dlink"))
            .arg(&stop)
            .arg("60")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = env.vouch(&["restore", s(&archive), "--to", s(&dest)]);
        fs::write(&stop, "").unwrap();
        let swapped = swapper.wait_with_output().unwrap();
        assert!(swapped.status.success(), "the attacker failed");
        let written_outside: Vec<_> = fs::read_dir(&outside).unwrap().collect();
        assert!(
            written_outside.is_empty(),
            "trial {trial}: {} entries written outside the destination (exit {:?}, {} swaps)",
            written_outside.len(),
            out.status.code(),
            String::from_utf8_lossy(&swapped.stdout).trim()
        );
        let files = names_below(&dest, "f").len();
        let staging = names_below(&dest, ".vouch-restore");
        match out.status.code() {
            Some(0) => assert_eq!(files, 1500, "trial {trial}: a restore that went through"),
            Some(30) | Some(33) => {
                assert_eq!(files, 0, "trial {trial}: {}", stderr(&out));
                // The attacker may keep the rollback from removing what it made (the swapped
                // path moves faster than the retries); then the staging directory is kept,
                // private to root, and the restore says so.
                for kept in &staging {
                    assert!(
                        stderr(&out).contains("is kept"),
                        "trial {trial}: {staging:?} left unannounced: {}",
                        stderr(&out)
                    );
                    let meta = fs::symlink_metadata(kept).unwrap();
                    assert_eq!(
                        (meta.uid(), meta.mode() & 0o7777),
                        (0, 0o700),
                        "trial {trial}: {kept:?}"
                    );
                }
            }
            code => panic!("trial {trial}: exit {code:?}: {}", stderr(&out)),
        }
        outcomes.push(out.status.code());
    }
    eprintln!("outcomes: {outcomes:?}");
}

#[test]
fn a_journal_planted_in_the_destination_is_never_rolled_back() {
    require_root();
    // As someone who can write in the destination would leave it: vouch's name, owner and
    // mode, a journal written for this destination, but no record of this host's vouch.
    for header in [
        "vouch-restore-journal 1",
        "vouch-restore-journal 2 0123456789abcdef0123456789abcdef",
    ] {
        let a = Arena::new();
        let dest = fs::canonicalize(&a.dest).unwrap();
        let staging = dest.join(".vouch-restore.1.deadbeef");
        fs::create_dir_all(staging.join("old")).unwrap();
        fs::write(staging.join("old/1"), "ATTACKER CONTENT\n").unwrap();
        fs::write(
            staging.join("journal"),
            format!(
                "{header} {}\naside keep/mine .vouch-restore.1.deadbeef/old/1\ncreated keep/mine\n\
                 dir-meta keep 7777 4242 4242 0 0\n",
                dest.display()
            ),
        )
        .unwrap();
        bash_ok(&format!(
            "chmod 700 '{s}' '{s}/old' && chmod 4755 '{s}/old/1'",
            s = staging.display()
        ));
        let before = snapshot(&a.dest.join("keep"));
        let good = craft(&a.env, "good", &a.sentinel);
        let out = a.env.vouch(&["restore", s(&good), "--to", s(&a.dest)]);
        assert_code(&out, 0);
        let err = stderr(&out);
        assert!(!err.contains("rolled back"), "{err}");
        assert!(
            err.contains("leaving") && err.contains(".vouch-restore.1.deadbeef"),
            "{err}"
        );
        assert_eq!(
            snapshot(&a.dest.join("keep")),
            before,
            "{header}: keep/ changed"
        );
        assert_eq!(
            fs::read(a.dest.join("keep/mine")).unwrap(),
            b"the user's own file\n"
        );
        assert!(staging.join("journal").is_file(), "left alone");
    }
}

#[test]
fn a_restore_killed_while_cleaning_up_is_not_said_to_have_changed_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    fs::write(env.src.join("a"), "a").unwrap();
    let archive = run_ok(&env);
    let into = env.dir.path().join("into");
    let out = env
        .command(&["restore", s(&archive), "--to", s(&into)])
        .env("VOUCH_TEST_FAULT", "kill:restore-journal-removed")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", stderr(&out));
    assert_eq!(stagings(&into).len(), 1);
    assert_eq!(fs::read(restored(&into, &env.src.join("a"))).unwrap(), b"a");
    let out = env.vouch(&["restore", s(&archive), "--to", s(&into), "--in-place"]);
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(!err.contains("stopped before it changed anything"), "{err}");
    assert!(err.contains("removed the empty"), "{err}");
    assert!(stagings(&into).is_empty());
}

/// Runs `vouch ARGS` and returns its output with its peak resident set size in KiB.
fn with_peak_rss(env: &Env, args: &[&str]) -> (std::process::Output, u64) {
    const MEASURE: &str = "import resource, subprocess, sys; \
        code = subprocess.run(sys.argv[1:]).returncode; \
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); \
        sys.exit(code)";
    let out = env
        .wrapped(&["/usr/bin/python3", "-c", MEASURE], "true", args)
        .output()
        .unwrap();
    let err = stderr(&out);
    let rss = err.lines().last().and_then(|l| l.trim().parse().ok());
    (out, rss.unwrap_or_else(|| panic!("no peak RSS in: {err}")))
}

#[test]
fn huge_pax_headers_and_manifests_are_refused_with_little_memory() {
    let a = Arena::new();
    for (kind, fragment) in [
        ("huge-pax", "larger than vouch ever writes"),
        (
            "huge-manifest",
            "far more than an archive of this size can list",
        ),
    ] {
        let archive = craft(&a.env, kind, &a.sentinel);
        let before = snapshot(&a.dest);
        let (out, rss) = with_peak_rss(&a.env, &["restore", s(&archive), "--to", s(&a.dest)]);
        assert_code(&out, 33);
        assert!(stderr(&out).contains(fragment), "{kind}: {}", stderr(&out));
        assert!(rss < 100 << 10, "{kind}: peak RSS {rss} KiB");
        assert_eq!(snapshot(&a.dest), before);
    }
}

/// A world with targets `local` and `second`, one run's archive on both, and its file name.
fn two_copies(env: &Env) -> (PathBuf, String) {
    let second = env.dir.path().join("second");
    fs::create_dir(&second).unwrap();
    fs::write(env.src.join("f"), "contents\n").unwrap();
    env.write_config(
        "",
        &format!(
            "\n[[target]]\nname = \"second\"\npath = \"{}\"\n",
            second.display()
        ),
    );
    assert_code(&env.vouch(&["run"]), 0);
    let a = env.archives();
    let name = a[0].file_name().unwrap().to_string_lossy().into_owned();
    (second, name)
}

/// Flips one byte in the middle of `path`.
fn flip_middle(path: &Path) {
    let mut data = fs::read(path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(path, data).unwrap();
}

#[test]
fn a_damaged_copy_gives_way_to_the_intact_one_on_another_target() {
    let env = Env::new();
    let (_second, name) = two_copies(&env);
    flip_middle(&env.target.join(&name));
    let dest = env.dir.path().join("out");
    let out = env.vouch(&["restore", &name, "--to", s(&dest)]);
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "the copy of {name} on target local failed its check"
        )) && err.contains("trying the copy on target second"),
        "{err}"
    );
    assert!(
        err.contains("restored from the copy on target second instead: target local: "),
        "{err}"
    );
    assert_eq!(
        fs::read(restored(&dest, &env.src).join("f")).unwrap(),
        b"contents\n"
    );
}

#[test]
fn when_every_copy_is_damaged_each_is_named_and_nothing_is_kept() {
    let env = Env::new();
    let (second, name) = two_copies(&env);
    flip_middle(&env.target.join(&name));
    fs::remove_file(second.join(&name)).unwrap();
    let dest = env.dir.path().join("out");
    let out = env.vouch(&["restore", &name, "--to", s(&dest)]);
    assert_code(&out, 33);
    let err = stderr(&out);
    assert!(
        err.contains("every copy failed its check: target local: ")
            && err.contains("; target second: ")
            && err.contains("is missing"),
        "{err}"
    );
    assert!(snapshot(&dest).is_none_or(|t| without_staging(Some(t)).is_empty()));
}

#[test]
fn target_and_latest_choose_the_copy() {
    let env = Env::new();
    let (second, first_name) = two_copies(&env);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(env.src.join("f"), "newer\n").unwrap();
    assert_code(&env.vouch(&["run"]), 0);
    // The newest archive exists only on local.
    let newest = env.archives().last().unwrap().clone();
    let newest_name = newest.file_name().unwrap().to_string_lossy().into_owned();
    assert_ne!(newest_name, first_name);
    for f in Env::archives_in(&second) {
        if f.file_name().unwrap().to_string_lossy() == newest_name {
            fs::remove_file(&f).unwrap();
            fs::remove_file(format!("{}.json", f.display())).unwrap();
        }
    }
    let restore = |args: &[&str], dest: &str| {
        let dest = env.dir.path().join(dest);
        let mut all = vec!["restore"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--to", s(&dest)]);
        let out = env.vouch(&all);
        assert_code(&out, 0);
        fs::read_to_string(restored(&dest, &env.src).join("f")).unwrap()
    };
    assert_eq!(restore(&["latest"], "a"), "newer\n");
    assert_eq!(
        restore(&["latest", "--target", "second"], "b"),
        "contents\n"
    );
    // With --target, a damaged copy there is not replaced by another target's.
    flip_middle(&env.target.join(&first_name));
    let dest = env.dir.path().join("c");
    let out = env.vouch(&[
        "restore",
        &first_name,
        "--target",
        "local",
        "--to",
        s(&dest),
    ]);
    assert_code(&out, 33);
    assert_eq!(
        restore(&[&first_name, "--target", "second"], "d"),
        "contents\n"
    );
    let out = env.vouch(&["restore", "latest", "--target", "nope", "--to", s(&dest)]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("--target nope: no such target"),
        "{}",
        stderr(&out)
    );
}
