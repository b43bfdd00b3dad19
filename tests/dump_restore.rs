//! `vouch restore ARCHIVE --dump NAME` through the built binary: a backup made with `vouch run`
//! against a real PostgreSQL 15 or MariaDB server (each test starts its own, on a unix socket)
//! or a real SQLite file, then loaded back into a new database and compared row by row; an
//! existing database or file refused without `--replace` and left as it was; a damaged archive,
//! an unknown name, a `command` dump and a failing loader refused without exit 0.

mod util;

use rusqlite::Connection;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use util::mariadb::{self, Mariadb};
use util::postgresql::{self, Postgres};
use util::{assert_code, stderr, Env};

/// Every row of `items`, in order, as one text (PostgreSQL).
fn pg_rows(pg: &Postgres, db: &str) -> String {
    pg.sql(
        db,
        "SELECT coalesce(string_agg(id || ':' || label, ',' ORDER BY id), '') FROM items",
    )
}

/// Every database on the PostgreSQL server.
fn pg_databases(pg: &Postgres) -> Vec<String> {
    pg.sql(
        "postgres",
        "SELECT datname FROM pg_database ORDER BY datname",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Every row of `items`, in order, as one text (MariaDB).
fn maria_rows(m: &Mariadb, db: &str) -> String {
    m.sql(
        db,
        "SELECT coalesce(group_concat(concat(id, ':', label) ORDER BY id SEPARATOR ','), '') FROM items",
    )
}

fn maria_databases(m: &Mariadb) -> Vec<String> {
    m.sql("mysql", "SHOW DATABASES")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The database name in the command's last stdout line (`... into database NAME`).
fn loaded_into(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let at = line
        .find(" into database ")
        .or_else(|| line.find(" into file "))
        .unwrap_or_else(|| panic!("no `into` in {text:?}; stderr: {}", stderr(out)));
    let rest = &line[at..];
    let rest = rest
        .strip_prefix(" into database ")
        .or_else(|| rest.strip_prefix(" into file "))
        .unwrap();
    rest.split(", ").next().unwrap().to_owned()
}

/// Asserts that no private extraction directory is left in the spool.
fn assert_spool_clean(env: &Env) {
    let spool = env.state.join("spool");
    let left: Vec<String> = fs::read_dir(&spool)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("restore-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", spool.display());
}

/// A backup of the config `dumps` with `vouch run`.
fn backup(env: &Env, dumps: &str) {
    env.write_config("", dumps);
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
}

#[test]
fn a_custom_postgresql_dump_loads_into_a_new_database() {
    let pg = Postgres::start();
    postgresql::fill(&pg, "app", 1234);
    let env = Env::new();
    backup(&env, &pg.dump("app", "[\"app\"]", ""));
    let before = pg_databases(&pg);
    let out = env.vouch(&["restore", "latest", "--dump", "app"]);
    assert_code(&out, 0);
    let into = loaded_into(&out);
    assert!(into.starts_with("app_restored_"), "{into}");
    assert!(!before.contains(&into));
    assert_eq!(pg_rows(&pg, &into), pg_rows(&pg, "app"));
    assert_eq!(pg.sql(&into, "SELECT count(*) FROM items"), "1234");
    let err = stderr(&out);
    for step in ["extracting", "creating database", "loading into", "done"] {
        assert!(err.contains(step), "no {step:?} in {err}");
    }
    assert_spool_clean(&env);

    // The same archive again: another new name, never the first one.
    let out = env.vouch(&["restore", "latest", "--dump", "app"]);
    assert_code(&out, 0);
    let second = loaded_into(&out);
    assert_ne!(second, into);
    assert_eq!(pg.sql(&second, "SELECT count(*) FROM items"), "1234");
}

#[test]
fn a_plain_postgresql_dump_loads_with_psql() {
    let pg = Postgres::start();
    postgresql::fill(&pg, "app", 300);
    let env = Env::new();
    backup(&env, &pg.dump("app", "[\"app\"]", "format = \"plain\"\n"));
    let out = env.vouch(&["restore", "latest", "--dump", "app", "--into", "app copy"]);
    assert_code(&out, 0);
    assert_eq!(loaded_into(&out), "app copy");
    assert_eq!(pg_rows(&pg, "app copy"), pg_rows(&pg, "app"));
    assert!(stderr(&out).contains("(psql)"), "{}", stderr(&out));
}

#[test]
fn one_database_of_a_dump_of_several_is_named() {
    let pg = Postgres::start();
    postgresql::fill(&pg, "shop", 10);
    postgresql::fill(&pg, "blog", 20);
    let env = Env::new();
    backup(
        &env,
        &pg.dump("all", "[\"*\"]", "exclude-databases = [\"postgres\"]\n"),
    );
    let before = pg_databases(&pg);
    let out = env.vouch(&["restore", "latest", "--dump", "all"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("blog, shop") && err.contains("--dump all/DB"),
        "{err}"
    );
    let out = env.vouch(&["restore", "latest", "--dump", "all/nosuch"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("it holds: blog, shop"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        pg_databases(&pg),
        before,
        "a refused restore created nothing"
    );

    let out = env.vouch(&["restore", "latest", "--dump", "all/blog"]);
    assert_code(&out, 0);
    let into = loaded_into(&out);
    assert!(into.starts_with("blog_restored_"), "{into}");
    assert_eq!(pg_rows(&pg, &into), pg_rows(&pg, "blog"));
}

#[test]
fn an_existing_postgresql_database_is_refused_then_replaced_with_replace() {
    let pg = Postgres::start();
    postgresql::fill(&pg, "app", 50);
    let env = Env::new();
    backup(&env, &pg.dump("app", "[\"app\"]", ""));
    let archived = pg_rows(&pg, "app");
    pg.sql(
        "app",
        "DELETE FROM items WHERE id > 10; INSERT INTO items VALUES (999, 'later')",
    );
    let changed = pg_rows(&pg, "app");

    let out = env.vouch(&["restore", "latest", "--dump", "app", "--into", "app"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(
        pg_rows(&pg, "app"),
        changed,
        "the existing database is untouched"
    );

    let before = pg_databases(&pg);
    let out = env.vouch(&[
        "restore",
        "latest",
        "--dump",
        "app",
        "--into",
        "app",
        "--replace",
    ]);
    assert_code(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("which it replaced"));
    assert_eq!(pg_rows(&pg, "app"), archived);
    assert_eq!(
        pg_databases(&pg),
        before,
        "no scratch or old database is left"
    );
}

#[test]
fn a_failing_pg_restore_is_not_success_and_leaves_no_database() {
    let pg = Postgres::start();
    postgresql::fill(&pg, "app", 20);
    let env = Env::new();
    backup(&env, &pg.dump("app", "[\"app\"]", ""));
    let bin = env.dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("pg_restore");
    fs::write(
        &fake,
        "#!/bin/sh\ncat >/dev/null\necho 'pg_restore: error: could not execute query: disk full' >&2\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let before = pg_databases(&pg);
    let out = env
        .command(&["restore", "latest", "--dump", "app"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_code(&out, 30);
    let err = stderr(&out);
    assert!(err.contains("disk full"), "{err}");
    assert!(err.contains("dropped again"), "{err}");
    assert_eq!(pg_databases(&pg), before);

    // With --replace, the old database stays as it was.
    let rows = pg_rows(&pg, "app");
    let out = env
        .command(&[
            "restore",
            "latest",
            "--dump",
            "app",
            "--into",
            "app",
            "--replace",
        ])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_code(&out, 30);
    assert!(stderr(&out).contains("was not touched"), "{}", stderr(&out));
    assert_eq!(pg_rows(&pg, "app"), rows);
    assert_eq!(pg_databases(&pg), before);
    assert_spool_clean(&env);
}

/// Flips bytes in the middle of the newest archive.
fn damage(env: &Env) -> PathBuf {
    let archive = env.archives().pop().unwrap();
    let mut data = fs::read(&archive).unwrap();
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 16] {
        *b ^= 0xff;
    }
    fs::write(&archive, data).unwrap();
    archive
}

#[test]
fn a_damaged_archive_is_refused_before_a_database_is_created() {
    let pg = Postgres::start();
    postgresql::fill(&pg, "app", 5000);
    let env = Env::new();
    backup(&env, &pg.dump("app", "[\"app\"]", ""));
    damage(&env);
    let before = pg_databases(&pg);
    let out = env.vouch(&["restore", "latest", "--dump", "app"]);
    assert_code(&out, 33);
    assert_eq!(pg_databases(&pg), before);
    // Without its receipt, the damage is found by decrypting.
    let receipt = format!("{}.json", env.archives().pop().unwrap().display());
    fs::remove_file(receipt).unwrap();
    let out = env.vouch(&["restore", "latest", "--dump", "app"]);
    assert_code(&out, 33);
    assert_eq!(pg_databases(&pg), before);
    assert_spool_clean(&env);
}

#[test]
fn a_mariadb_dump_loads_into_a_new_database_and_never_over_one() {
    let m = Mariadb::start();
    mariadb::fill(&m, "shop", 400);
    let env = Env::new();
    backup(&env, &m.dump("shop", "[\"shop\"]", ""));
    let out = env.vouch(&["restore", "latest", "--dump", "shop"]);
    assert_code(&out, 0);
    let into = loaded_into(&out);
    assert!(into.starts_with("shop_restored_"), "{into}");
    assert_eq!(maria_rows(&m, &into), maria_rows(&m, "shop"));

    m.sql("shop", "DELETE FROM items WHERE id > 3");
    let changed = maria_rows(&m, "shop");
    let out = env.vouch(&["restore", "latest", "--dump", "shop", "--into", "shop"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(maria_rows(&m, "shop"), changed);

    let before = maria_databases(&m);
    let out = env.vouch(&[
        "restore",
        "latest",
        "--dump",
        "shop",
        "--into",
        "shop",
        "--replace",
    ]);
    assert_code(&out, 0);
    assert_eq!(maria_rows(&m, "shop"), maria_rows(&m, &into));
    assert_eq!(
        maria_databases(&m),
        before,
        "the scratch database is dropped"
    );

    // A name the server refuses: exit 30 with its message, and nothing created.
    let out = env.vouch(&[
        "restore",
        "latest",
        "--dump",
        "shop",
        "--into",
        "ends with space ",
    ]);
    assert_code(&out, 30);
    assert!(
        stderr(&out).contains("Incorrect database name"),
        "{}",
        stderr(&out)
    );
    assert_eq!(maria_databases(&m), before);
}

/// An SQLite database with `rows` rows in `notes`.
fn sqlite_database(path: &Path, rows: i64) {
    let db = Connection::open(path).unwrap();
    db.execute_batch("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);")
        .unwrap();
    for i in 0..rows {
        db.execute("INSERT INTO notes(body) VALUES (?1)", [format!("note {i}")])
            .unwrap();
    }
}

fn notes(path: &Path) -> Vec<String> {
    let db = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = db.prepare("SELECT body FROM notes ORDER BY id").unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

fn sqlite_dump(name: &str, path: &Path) -> String {
    format!(
        "[[dump]]\nname = \"{name}\"\nkind = \"sqlite\"\npath = \"{}\"\n",
        path.display()
    )
}

#[test]
fn an_sqlite_dump_is_written_beside_the_original_and_never_over_a_file() {
    let env = Env::new();
    let live = env.src.join("app.db");
    sqlite_database(&live, 250);
    backup(&env, &sqlite_dump("app", &live));
    let archived = notes(&live);
    let out = env.vouch(&["restore", "latest", "--dump", "app"]);
    assert_code(&out, 0);
    let into = PathBuf::from(loaded_into(&out));
    assert_eq!(into.parent(), live.parent());
    assert!(
        into.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("app.db.restored-"),
        "{}",
        into.display()
    );
    assert_eq!(notes(&into), archived);
    let beside: Vec<String> = fs::read_dir(&env.src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("vouch-restore"))
        .collect();
    assert!(beside.is_empty(), "{beside:?}");

    // Over an existing file: refused and untouched, then replaced with --replace.
    let other = env.dir.path().join("other.db");
    fs::write(&other, b"not a database, and not to be overwritten").unwrap();
    let into_arg = other.display().to_string();
    let out = env.vouch(&["restore", "latest", "--dump", "app", "--into", &into_arg]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(
        fs::read(&other).unwrap(),
        b"not a database, and not to be overwritten"
    );
    let out = env.vouch(&[
        "restore",
        "latest",
        "--dump",
        "app",
        "--into",
        &into_arg,
        "--replace",
    ]);
    assert_code(&out, 0);
    assert_eq!(notes(&other), archived);
    assert_spool_clean(&env);
}

#[test]
fn a_command_dump_is_refused_with_the_extraction_line() {
    let env = Env::new();
    backup(
        &env,
        "[[dump]]\nname = \"ldap\"\nkind = \"command\"\ncommand = [\"echo\", \"dn: dc=example\"]\nextension = \"ldif\"\nmin-size = \"1B\"\n",
    );
    let out = env.vouch(&["restore", "latest", "--dump", "ldap"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("no loader"), "{err}");
    assert!(err.contains("--to DIR .vouch/dumps/ldap.ldif"), "{err}");
}

#[test]
fn unknown_names_and_bad_command_lines_are_refused_with_what_exists() {
    let env = Env::new();
    let live = env.src.join("app.db");
    sqlite_database(&live, 3);
    backup(&env, &sqlite_dump("app", &live));

    let out = env.vouch(&["restore", "latest", "--dump", "nope"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("it defines: app"), "{}", stderr(&out));

    // Defined in the config since, but not in the archive.
    let other = env.src.join("other.db");
    sqlite_database(&other, 1);
    env.write_config(
        "",
        &format!(
            "{}{}",
            sqlite_dump("app", &live),
            sqlite_dump("other", &other)
        ),
    );
    let out = env.vouch(&["restore", "latest", "--dump", "other"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("holds no dump other; it holds: app (sqlite)"),
        "{err}"
    );

    for args in [
        &["restore", "latest", "--dump", "app", "--to", "/tmp/x"][..],
        &["restore", "latest", "--dump", "app", "etc/hosts"][..],
        &["restore", "latest", "--to", "/tmp/x", "--into", "db"][..],
        &["restore", "latest", "--to", "/tmp/x", "--replace"][..],
        &["restore", "latest"][..],
    ] {
        let out = env.vouch(args);
        assert_code(&out, 2);
    }
    assert_spool_clean(&env);
}
