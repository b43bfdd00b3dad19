//! Dumps and hooks through the built binary: a real SQLite database in WAL mode with a writer,
//! restored with stock `age` and `tar` and opened again; commands whose output is refused; hooks
//! in order, with their cleanups and their timeouts; and nothing on the targets when a dump or
//! a before-hook fails.

mod util;

use rusqlite::Connection;
use std::fs;
use std::path::{Path, PathBuf};
use util::{assert_code, stderr, Env};

/// A WAL database with one table of `rows` rows; the connection stays open as a writer.
fn wal_database(path: &Path, rows: i64) -> Connection {
    let db = Connection::open(path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);",
    )
    .unwrap();
    for i in 0..rows {
        db.execute("INSERT INTO notes(body) VALUES (?1)", [format!("note {i}")])
            .unwrap();
    }
    db
}

/// A file in the test's directory that records what the hooks did, one line each.
fn log_path(env: &Env) -> PathBuf {
    env.dir.path().join("hooks.log")
}

/// `[[hook]]` that appends `word` to the log, through `sh -c` given as argv.
fn logging_hook(env: &Env, name: &str, when: &str, word: &str, cleanup: bool) -> String {
    let log = log_path(env);
    let line = |w: &str| format!(r#"["sh", "-c", "echo {w} >> '{}'"]"#, log.display());
    let mut text = format!(
        "[[hook]]\nname = \"{name}\"\nwhen = \"{when}\"\nrun = {}\n",
        line(word)
    );
    if cleanup {
        text.push_str(&format!("cleanup = {}\n", line(&format!("{word}-cleanup"))));
    }
    text
}

fn hook_log(env: &Env) -> Vec<String> {
    fs::read_to_string(log_path(env))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_wal_sqlite_database_is_archived_at_its_path_and_restores_with_stock_tools() {
    let env = Env::new();
    let db_path = env.src.join("app.db");
    let writer = wal_database(&db_path, 500);
    fs::write(env.src.join("other.txt"), b"kept").unwrap();
    // The live file is left out of the walk; its snapshot counts as the required path.
    env.write_config(
        &format!("required = [\"{}\"]", db_path.display()),
        &format!(
            "[[dump]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"{}\"\n",
            db_path.display()
        ),
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("dump app (sqlite)"), "{err}");
    drop(writer);

    let archive = env.archives().pop().unwrap();
    let manifest = env.manifest(&archive);
    let dumps = manifest["dumps"].as_array().unwrap();
    assert_eq!(dumps.len(), 1);
    assert_eq!(dumps[0]["name"], "app");
    assert_eq!(dumps[0]["kind"], "sqlite");
    assert_eq!(dumps[0]["tables"], 1);
    assert_eq!(dumps[0]["snapshot"], "sqlite-backup-api");
    let rel = db_path.strip_prefix("/").unwrap().display().to_string();
    assert_eq!(dumps[0]["path"], rel.as_str());
    let entries = manifest["entries"].as_array().unwrap();
    let same: Vec<_> = entries
        .iter()
        .filter(|e| e["path"].as_str().unwrap_or("").starts_with(&rel))
        .collect();
    assert_eq!(
        same.len(),
        1,
        "only the snapshot, no live -wal/-shm: {same:?}"
    );

    let receipt: serde_json::Value =
        serde_json::from_slice(&fs::read(format!("{}.json", archive.display())).unwrap()).unwrap();
    assert_eq!(receipt["dumps"][0]["name"], "app");
    assert_eq!(receipt["dumps"][0]["checked"], true);

    let into = env.dir.path().join("restored");
    env.stock_restore(&archive, &into);
    let restored = into.join(&rel);
    assert!(!into.join(format!("{rel}-wal")).exists());
    let db = Connection::open(&restored).unwrap();
    let rows: i64 = db
        .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 500);
    assert_eq!(
        fs::read(
            into.join(env.src.strip_prefix("/").unwrap())
                .join("other.txt")
        )
        .unwrap(),
        b"kept"
    );
}

#[test]
fn an_empty_sqlite_file_is_refused_and_nothing_is_written() {
    let env = Env::new();
    let db_path = env.src.join("empty.db");
    fs::write(&db_path, b"").unwrap();
    env.write_config(
        "",
        &format!(
            "[[dump]]\nname = \"grafana\"\nkind = \"sqlite\"\npath = \"{}\"\n",
            db_path.display()
        ),
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    let err = stderr(&out);
    assert!(err.contains("dump grafana"), "{err}");
    assert!(err.contains("0 tables"), "{err}");
    assert!(env.target_files().is_empty(), "{:?}", env.target_files());
}

#[test]
fn a_missing_sqlite_file_is_refused_and_never_created() {
    let env = Env::new();
    let db_path = env.src.join("missing.db");
    env.write_config(
        "",
        &format!(
            "[[dump]]\nname = \"gone\"\nkind = \"sqlite\"\npath = \"{}\"\n",
            db_path.display()
        ),
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    assert!(!db_path.exists());
    assert!(env.target_files().is_empty());
}

/// Whether process `pid` still runs (a zombie waiting for a parent to reap it does not).
fn alive(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
    }
}

fn command_dump(env: &Env, name: &str, script: &str, min_size: &str, extra: &str) -> String {
    let _ = env;
    format!(
        "[[dump]]\nname = \"{name}\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"{script}\"]\nextension = \"out\"\nmin-size = \"{min_size}\"\n{extra}"
    )
}

#[test]
fn a_command_dump_is_archived_under_vouch_dumps_and_checked() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"a").unwrap();
    let dump = command_dump(
        &env,
        "ldap",
        "printf 'dn: o=x\\\\n%.0s' $(seq 1 200); echo '# end'",
        "1KiB",
        "expect-tail = \"# end\"\n",
    );
    env.write_config("", &dump);
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let archive = env.archives().pop().unwrap();
    let manifest = env.manifest(&archive);
    let d = &manifest["dumps"][0];
    assert_eq!(d["path"], ".vouch/dumps/ldap.out");
    let checks: Vec<&str> = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["exit-status", "min-size", "expect-tail"]);
    let listed = env.vouch(&["list"]);
    assert_code(&listed, 0);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(table.contains("dumps: ldap (command,"), "{table}");
    let json: serde_json::Value =
        serde_json::from_slice(&env.vouch(&["list", "--json"]).stdout).unwrap();
    let dumps = &json["targets"][0]["archives"][0]["dumps"];
    assert_eq!(dumps[0]["name"], "ldap");
    assert_eq!(dumps[0]["files"], 1);
    let into = env.dir.path().join("r");
    env.stock_restore(&archive, &into);
    let text = fs::read_to_string(into.join(".vouch/dumps/ldap.out")).unwrap();
    assert!(text.ends_with("# end\n"));
    assert_eq!(text.lines().filter(|l| *l == "dn: o=x").count(), 200);
}

#[test]
fn a_command_that_exits_0_with_nothing_is_refused_by_min_size() {
    let env = Env::new();
    env.write_config("", &command_dump(&env, "redis", "true", "1KiB", ""));
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    let err = stderr(&out);
    assert!(err.contains("dump redis"), "{err}");
    assert!(err.contains("below its min-size"), "{err}");
    assert!(env.target_files().is_empty());
}

#[test]
fn a_command_that_fails_is_refused_with_its_last_stderr_line() {
    let env = Env::new();
    env.write_config(
        "",
        &command_dump(
            &env,
            "vault",
            "echo partial; echo 'permission denied: token expired' >&2; exit 2",
            "1",
            "",
        ),
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    let err = stderr(&out);
    assert!(err.contains("sh exited 2"), "{err}");
    assert!(err.contains("token expired"), "{err}");
    assert!(env.target_files().is_empty());
}

#[test]
fn a_truncated_command_dump_is_refused_by_its_tail() {
    let env = Env::new();
    env.write_config(
        "",
        &command_dump(&env, "cut", "seq 1 5000", "1", "expect-tail = \"-- end\"\n"),
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    assert!(stderr(&out).contains("ended without"), "{}", stderr(&out));
    assert!(env.target_files().is_empty());
}

#[test]
fn a_command_past_its_timeout_is_killed_with_its_group() {
    let env = Env::new();
    let marker = env.dir.path().join("child.pid");
    let script = format!("sleep 300 & echo $! > '{}'; wait", marker.display());
    env.write_config(
        "",
        &command_dump(&env, "slow", &script, "1", "timeout = \"1s\"\n"),
    );
    let started = std::time::Instant::now();
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(stderr(&out).contains("timeout"), "{}", stderr(&out));
    let pid = fs::read_to_string(&marker).unwrap();
    assert!(!alive(pid.trim()), "the dump's child {pid} is still alive");
    assert!(env.target_files().is_empty());
}

#[test]
fn hooks_run_in_order_with_cleanup_as_soon_as_the_sources_are_read() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"a").unwrap();
    let log = log_path(&env);
    // The dump records when it ran, between the before-hooks and their cleanups.
    let dump = command_dump(
        &env,
        "d",
        &format!("echo dump >> '{}'; echo data", log.display()),
        "1",
        "",
    );
    let config = [
        logging_hook(&env, "first", "before", "first", true),
        logging_hook(&env, "second", "before", "second", true),
        logging_hook(&env, "done", "after", "after", false),
        logging_hook(&env, "oops", "failure", "failure", false),
        dump,
    ]
    .concat();
    env.write_config("", &config);
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    assert_eq!(
        hook_log(&env),
        [
            "first",
            "second",
            "dump",
            "second-cleanup",
            "first-cleanup",
            "after"
        ]
    );
    assert!(
        stderr(&out).contains("hook first (before)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_failing_before_hook_writes_nothing_runs_the_cleanups_and_the_failure_hooks() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"a").unwrap();
    let config = [
        logging_hook(&env, "first", "before", "first", true),
        "[[hook]]\nname = \"broken\"\nwhen = \"before\"\nrun = [\"sh\", \"-c\", \"echo cannot stop >&2; exit 3\"]\n".to_owned(),
        logging_hook(&env, "done", "after", "after", false),
        format!(
            "[[hook]]\nname = \"alert\"\nwhen = \"failure\"\nrun = [\"sh\", \"-c\", \"echo failure $VOUCH_EXIT_CODE $VOUCH_EXIT_NAME >> '{}'\"]\n",
            log_path(&env).display()
        ),
    ]
    .concat();
    env.write_config("", &config);
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    let err = stderr(&out);
    assert!(
        err.contains("hook broken run: sh exited 3: cannot stop"),
        "{err}"
    );
    assert_eq!(
        hook_log(&env),
        ["first", "first-cleanup", "failure 20 HOOK"]
    );
    assert!(env.target_files().is_empty());
}

#[test]
fn a_run_refused_by_the_lock_runs_no_hook_at_all() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"a").unwrap();
    let config = [
        logging_hook(&env, "quiesce", "before", "before", true),
        logging_hook(&env, "alert", "failure", "failure", false),
    ]
    .concat();
    env.write_config("", &config);
    fs::create_dir_all(&env.runtime).unwrap();
    let lock = fs::File::create(env.runtime.join("lock")).unwrap();
    lock.try_lock().unwrap();
    let out = env.vouch(&["run"]);
    assert_code(&out, 11);
    assert!(hook_log(&env).is_empty(), "{:?}", hook_log(&env));
    drop(lock);
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    assert_eq!(hook_log(&env), ["before", "before-cleanup"]);
    // The run's first entry is run-started; the hooks' entries follow it.
    let err = stderr(&out);
    let started = err.find("started").expect("a run-started line");
    let hook = err.find("exited 0 in").expect("a hook-ran line");
    assert!(started < hook, "{err}");
}

#[test]
fn a_hook_past_its_timeout_is_killed_and_fails_the_run() {
    let env = Env::new();
    env.write_config(
        "",
        "[[hook]]\nname = \"stuck\"\nwhen = \"before\"\nrun = [\"sleep\", \"300\"]\ntimeout = \"1s\"\n",
    );
    let started = std::time::Instant::now();
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let err = stderr(&out);
    assert!(err.contains("hook stuck run"), "{err}");
    assert!(err.contains("timeout of 1s"), "{err}");
    assert!(env.target_files().is_empty());
}

#[test]
fn a_failing_cleanup_keeps_the_archive_and_exits_20() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"a").unwrap();
    env.write_config(
        "",
        "[[hook]]\nname = \"app\"\nwhen = \"before\"\nrun = [\"true\"]\ncleanup = [\"false\"]\n",
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    let err = stderr(&out);
    assert!(err.contains("hook app cleanup"), "{err}");
    assert!(err.contains("is good and was kept"), "{err}");
    assert_eq!(env.archives().len(), 1);
}

#[test]
fn hook_arguments_are_never_given_to_a_shell() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"a").unwrap();
    let out_file = env.dir.path().join("args");
    env.write_config(
        "",
        &format!(
            "[[hook]]\nname = \"literal\"\nwhen = \"before\"\nrun = [\"sh\", \"-c\", \"printf '%s|' \\\"$@\\\" > '{}'\", \"sh\", \"$HOME\", \"a;b\", \"`id`\"]\n",
            out_file.display()
        ),
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    assert_eq!(fs::read_to_string(&out_file).unwrap(), "$HOME|a;b|`id`|");
}

#[test]
fn preflight_checks_dumps_and_hooks_before_anything_runs() {
    let env = Env::new();
    let db_path = env.src.join("app.db");
    drop(wal_database(&db_path, 3));
    env.write_config(
        "",
        &format!(
            "[[dump]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"{}\"\n[[hook]]\nname = \"stop\"\nwhen = \"before\"\nrun = [\"true\"]\n",
            db_path.display()
        ),
    );
    let out = env.vouch(&["preflight"]);
    assert_code(&out, 0);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(text.contains("opens read-only, 1 tables"), "{text}");

    let missing = env.src.join("missing.db");
    env.write_config(
        "",
        &format!(
            "[[dump]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"{}\"\n[[hook]]\nname = \"stop\"\nwhen = \"before\"\nrun = [\"no-such-program-here\"]\n",
            missing.display()
        ),
    );
    let out = env.vouch(&["preflight"]);
    assert_code(&out, 20);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(text.contains("no-such-program-here"), "{text}");
    assert!(!missing.exists(), "preflight created the database");
}

#[test]
fn a_config_with_dumps_needs_no_sources() {
    let env = Env::new();
    let db_path = env.dir.path().join("only.db");
    drop(wal_database(&db_path, 7));
    let config = format!(
        "[backup]\nname = \"test\"\nsources = []\n\n[encryption]\nrecipients = [\"{}\"]\nidentity = \"{}\"\n\n[[target]]\nname = \"local\"\npath = \"{}\"\n\n[[dump]]\nname = \"only\"\nkind = \"sqlite\"\npath = \"{}\"\n",
        env.recipient,
        env.identity.display(),
        env.target.display(),
        db_path.display()
    );
    fs::write(&env.config, config).unwrap();
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let manifest = env.manifest(&env.archives().pop().unwrap());
    assert_eq!(manifest["dumps"][0]["name"], "only");
    let out = env.vouch(&["verify", "--latest"]);
    assert_code(&out, 0);
}

#[test]
fn preflight_refuses_a_spool_smaller_than_the_last_dumps() {
    assert!(
        util::is_root(),
        "this test mounts a small tmpfs and runs as root"
    );
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"a").unwrap();
    let spool = env.dir.path().join("spool");
    let dump = format!(
        "[dumps]\nspool-dir = \"{}\"\n{}",
        spool.display(),
        command_dump(&env, "big", "head -c 300000 /dev/zero", "1", "")
    );
    env.write_config("", &dump);
    assert_code(&env.vouch(&["run"]), 0);
    // The next run's spool is a 64 KiB tmpfs, less than the 300000 bytes the last dump took.
    let setup = format!("mount -t tmpfs -o size=64k tmpfs '{}'", spool.display());
    let out = env
        .wrapped(
            &["unshare", "-m", "--propagation", "private"],
            &setup,
            &["run"],
        )
        .output()
        .unwrap();
    assert_code(&out, 20);
    let err = stderr(&out);
    assert!(err.contains("the last dumps took"), "{err}");
    assert_eq!(env.archives().len(), 1);
}

#[test]
fn a_percentage_min_size_holds_the_dump_to_the_last_verified_one() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"a").unwrap();
    let data = env.dir.path().join("export");
    fs::write(&data, vec![b'x'; 10_000]).unwrap();
    let script = format!("cat '{}'", data.display());
    env.write_config("", &command_dump(&env, "export", &script, "50%", ""));
    assert_code(&env.vouch(&["run"]), 0);
    fs::write(&data, vec![b'x'; 6_000]).unwrap();
    assert_code(&env.vouch(&["run"]), 0);
    // 2000 bytes is below 50% of the last verified 6000.
    fs::write(&data, vec![b'x'; 2_000]).unwrap();
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    let err = stderr(&out);
    assert!(err.contains("below its min-size of 2.9 KiB"), "{err}");
    assert!(err.contains("the last verified one was 5.9 KiB"), "{err}");
    assert_eq!(env.archives().len(), 2);
}

#[test]
fn status_shows_the_dumps_and_warns_of_a_dump_the_newest_archive_lacks() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"a").unwrap();
    let ldap = command_dump(&env, "ldap", "seq 1 300", "100", "");
    env.write_config("", &ldap);
    assert_code(&env.vouch(&["run"]), 0);
    let out = env.vouch(&["status"]);
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(", dumps ldap (command, "), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&env.vouch(&["status", "--json"]).stdout).unwrap();
    let dumps = &json["targets"][0]["latest-verified"]["dumps"];
    assert_eq!(dumps[0]["name"], "ldap", "{json}");
    assert_eq!(dumps[0]["checked"], true);

    // A dump configured after the newest archive was made: a warning, gone after the next run.
    let vault = command_dump(&env, "vault", "seq 1 300", "100", "");
    env.write_config("", &format!("{ldap}{vault}"));
    let out = env.vouch(&["status"]);
    assert_code(&out, 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("holds no dump vault"), "{text}");
    assert_code(&env.vouch(&["run"]), 0);
    assert_code(&env.vouch(&["status"]), 0);
}

/// `vouch ARGS` in a private mount namespace where `dir` is a read-only bind mount of itself,
/// as `ProtectSystem=strict` makes a directory without `ReadWritePaths=`.
fn with_read_only(env: &Env, dir: &Path, args: &[&str]) -> std::process::Output {
    let d = dir.display();
    let setup = format!("mount --bind '{d}' '{d}' && mount -o remount,bind,ro '{d}'");
    env.wrapped(&["unshare", "-m", "--propagation", "private"], &setup, args)
        .output()
        .unwrap()
}

#[test]
fn a_wal_database_in_a_read_only_directory_is_refused_with_the_read_write_paths_fix() {
    assert!(
        util::is_root(),
        "this test bind-mounts read-only and runs as root"
    );
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"a").unwrap();
    let dir = env.dir.path().join("app");
    fs::create_dir(&dir).unwrap();
    let wal = dir.join("wal.db");
    drop(wal_database(&wal, 10));
    let rollback = dir.join("rollback.db");
    let db = Connection::open(&rollback).unwrap();
    db.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(db);
    let config = |path: &Path| {
        format!(
            "[[dump]]\nname = \"app\"\nkind = \"sqlite\"\npath = \"{}\"\n",
            path.display()
        )
    };
    env.write_config("", &config(&wal));
    for args in [&["preflight"][..], &["run"]] {
        let out = with_read_only(&env, &dir, args);
        assert_code(&out, 20);
        let err = stderr(&out);
        assert!(
            err.contains("is in WAL mode and")
                && err.contains(&format!("ReadWritePaths=-{}", dir.display())),
            "{err}"
        );
    }
    assert!(env.archives().is_empty());
    // A rollback-journal database reads fine from a read-only directory.
    env.write_config("", &config(&rollback));
    assert_code(&with_read_only(&env, &dir, &["run"]), 0);
    // And the WAL one does once the directory is writable.
    env.write_config("", &config(&wal));
    assert_code(&env.vouch(&["run"]), 0);
}

#[test]
fn a_spool_that_fills_up_during_a_dump_is_exit_20_and_writes_no_archive() {
    assert!(
        util::is_root(),
        "this test mounts a small tmpfs and runs as root"
    );
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"a").unwrap();
    let spool = env.dir.path().join("spool");
    fs::create_dir(&spool).unwrap();
    let dump = format!(
        "[dumps]\nspool-dir = \"{}\"\n{}",
        spool.display(),
        command_dump(&env, "big", "head -c 300000 /dev/zero", "1", "")
    );
    env.write_config("", &dump);
    // No earlier dump to estimate from, so preflight lets it start; the 64 KiB spool fills up.
    let d = spool.display();
    let out = env
        .wrapped(
            &["unshare", "-m", "--propagation", "private"],
            &format!("mount -t tmpfs -o size=64k tmpfs '{d}'"),
            &["run"],
        )
        .output()
        .unwrap();
    assert_code(&out, 20);
    let err = stderr(&out);
    assert!(err.contains("filled up while dumping \"big\""), "{err}");
    assert!(env.archives().is_empty());
    assert!(env.target_files().is_empty(), "{:?}", env.target_files());
}
