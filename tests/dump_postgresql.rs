//! PostgreSQL dumps through the built binary against a real PostgreSQL 15 that each test starts
//! on a unix socket in a temporary directory (Debian's postgresql-15; `scripts/setup` installs
//! it). Round trips restore with stock `age`, `tar`, `pg_restore` and `psql` into new databases
//! and compare rows; each failure class is exit 20 with nothing on the target.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use util::postgresql::{fill, Postgres};
use util::{assert_code, bash_ok, stderr, Env};

/// Extracts `member` of the newest archive into the restore pipeline `then`.
fn restore_member(env: &Env, member: &str, then: &str) {
    let archive = env.archives().pop().unwrap();
    bash_ok(&format!(
        "set -o pipefail; age -d -i '{}' '{}' | tar -xzOf - '{member}' | {then}",
        env.identity.display(),
        archive.display()
    ));
}

#[test]
fn a_custom_dump_restores_into_a_new_database_with_stock_tools() {
    let pg = Postgres::start();
    fill(&pg, "app", 1234);
    let env = Env::new();
    env.write_config("", &pg.dump("app", "[\"app\"]", ""));
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let archive = env.archives().pop().unwrap();
    let manifest = env.manifest(&archive);
    let d = &manifest["dumps"][0];
    assert_eq!(d["path"], ".vouch/dumps/app.pgdump");
    assert_eq!(d["database"], "app");
    assert_eq!(d["tables"], 1);
    let checks: Vec<&str> = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["exit-status", "pg_restore-read", "min-tables"]);

    pg.sql("postgres", "CREATE DATABASE app_restored");
    restore_member(
        &env,
        ".vouch/dumps/app.pgdump",
        &format!(
            "pg_restore --exit-on-error --single-transaction -h '{}' -U postgres -d app_restored",
            pg.socket_dir()
        ),
    );
    assert_eq!(pg.sql("app_restored", "SELECT count(*) FROM items"), "1234");
}

#[test]
fn every_database_in_plain_format_with_the_globals() {
    let pg = Postgres::start();
    fill(&pg, "shop", 10);
    fill(&pg, "blog", 20);
    fill(&pg, "scratch", 1);
    pg.sql("postgres", "CREATE ROLE reader LOGIN");
    let env = Env::new();
    env.write_config(
        "",
        &pg.dump(
            "all",
            "[\"*\"]",
            "format = \"plain\"\nexclude-databases = [\"scratch\", \"postgres\"]\n",
        ),
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let manifest = env.manifest(&env.archives().pop().unwrap());
    let paths: Vec<&str> = manifest["dumps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            ".vouch/dumps/all/blog.sql",
            ".vouch/dumps/all/shop.sql",
            ".vouch/dumps/all/globals.sql"
        ]
    );
    let receipt: serde_json::Value = serde_json::from_slice(
        &fs::read(format!("{}.json", env.archives().pop().unwrap().display())).unwrap(),
    )
    .unwrap();
    assert_eq!(receipt["dumps"][0]["files"], 3);

    pg.sql("postgres", "CREATE DATABASE blog_restored");
    restore_member(
        &env,
        ".vouch/dumps/all/blog.sql",
        &format!(
            "psql -X -q -v ON_ERROR_STOP=1 --single-transaction -h '{}' -U postgres -d blog_restored >/dev/null",
            pg.socket_dir()
        ),
    );
    assert_eq!(pg.sql("blog_restored", "SELECT count(*) FROM items"), "20");
    let into = env.dir.path().join("r");
    env.stock_restore(&env.archives().pop().unwrap(), &into);
    let globals = fs::read_to_string(into.join(".vouch/dumps/all/globals.sql")).unwrap();
    assert!(globals.contains("CREATE ROLE reader"), "{globals}");
}

#[test]
fn a_missing_database_is_refused_before_anything_is_dumped() {
    let pg = Postgres::start();
    let env = Env::new();
    env.write_config("", &pg.dump("app", "[\"nosuchdb\"]", ""));
    let out = env.vouch(&["preflight"]);
    assert_code(&out, 20);
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    assert!(
        stderr(&out).contains("\"nosuchdb\" does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(env.target_files().is_empty());
}

#[test]
fn an_empty_database_is_refused_by_min_tables() {
    let pg = Postgres::start();
    pg.sql("postgres", "CREATE DATABASE empty");
    let env = Env::new();
    env.write_config("", &pg.dump("app", "[\"empty\"]", ""));
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    assert!(stderr(&out).contains("has 0 tables"), "{}", stderr(&out));
    assert!(env.target_files().is_empty());
}

/// A directory holding a `pg_dump` that runs the real one and passes on only half its output,
/// exiting 0: a dump cut short that its exit status does not betray.
fn truncating_pg_dump(env: &Env) -> PathBuf {
    let bin = env.dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let script = bin.join("pg_dump");
    let full = env.dir.path().join("full.dump");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && exec /usr/bin/pg_dump --version\n/usr/bin/pg_dump \"$@\" > '{f}' || exit $?\nhead -c $(( $(stat -c %s '{f}') / 2 )) '{f}'\n",
            f = full.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn a_custom_dump_cut_in_half_is_refused_by_the_full_read() {
    let pg = Postgres::start();
    fill(&pg, "app", 50_000);
    let env = Env::new();
    env.write_config("", &pg.dump("app", "[\"app\"]", ""));
    let bin = truncating_pg_dump(&env);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = env.command(&["run"]).env("PATH", path).output().unwrap();
    assert_code(&out, 20);
    let err = stderr(&out);
    assert!(err.contains("pg_restore could not read the dump"), "{err}");
    assert!(env.target_files().is_empty());
}

#[test]
fn a_plain_dump_cut_in_half_is_refused_by_its_marker() {
    let pg = Postgres::start();
    fill(&pg, "app", 50_000);
    let env = Env::new();
    env.write_config("", &pg.dump("app", "[\"app\"]", "format = \"plain\"\n"));
    let bin = truncating_pg_dump(&env);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = env.command(&["run"]).env("PATH", path).output().unwrap();
    assert_code(&out, 20);
    assert!(stderr(&out).contains("ended without"), "{}", stderr(&out));
    assert!(env.target_files().is_empty());
}

#[test]
fn a_server_that_does_not_answer_and_a_missing_client_are_exit_20() {
    let pg = Postgres::start();
    let env = Env::new();
    let nowhere = env.dir.path().join("no-server");
    fs::create_dir_all(&nowhere).unwrap();
    env.write_config(
        "",
        &format!(
            "[[dump]]\nname = \"app\"\nkind = \"postgresql\"\ndatabases = [\"app\"]\nhost = \"{}\"\n",
            nowhere.display()
        ),
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));

    env.write_config("", &pg.dump("app", "[\"app\"]", ""));
    let out = env
        .command(&["run"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_code(&out, 20);
    assert!(
        stderr(&out).contains("psql is not installed"),
        "{}",
        stderr(&out)
    );
    assert!(env.target_files().is_empty());
}

/// A `[[dump]]` for `app` that logs in as `role` with the secret from `credential`.
fn dump_as(pg: &Postgres, role: &str, credential: &str) -> String {
    format!(
        "[[dump]]\nname = \"app\"\nkind = \"postgresql\"\ndatabases = [\"app\"]\nhost = \"{}\"\nuser = \"{role}\"\ncredential = \"{credential}\"\n",
        pg.socket_dir()
    )
}

#[test]
fn a_password_from_a_credential_logs_in_and_a_wrong_or_missing_one_is_exit_20() {
    let pg = Postgres::start();
    fill(&pg, "app", 7);
    pg.require_password("backup", "right-horse-battery");
    let env = Env::new();
    let creds = env.dir.path().join("credentials");
    fs::create_dir(&creds).unwrap();
    let secret = creds.join("app-db");
    fs::write(&secret, "right-horse-battery\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    env.write_config("", &dump_as(&pg, "backup", "app-db"));
    let run = |args: &[&str]| {
        env.command(args)
            .env("CREDENTIALS_DIRECTORY", &creds)
            .output()
            .unwrap()
    };
    let out = run(&["run"]);
    assert_code(&out, 0);
    assert!(!stderr(&out).contains("right-horse-battery"));
    pg.sql("postgres", "CREATE DATABASE app_back");
    restore_member(
        &env,
        ".vouch/dumps/app.pgdump",
        &format!(
            "pg_restore --exit-on-error --no-owner -h '{}' -U postgres -d app_back",
            pg.socket_dir()
        ),
    );
    assert_eq!(pg.sql("app_back", "SELECT count(*) FROM items"), "7");

    fs::write(&secret, "wrong-horse\n").unwrap();
    let out = run(&["preflight"]);
    assert_code(&out, 20);
    assert!(
        stderr(&out).contains("password authentication failed"),
        "{}",
        stderr(&out)
    );

    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["run"]);
    assert_code(&out, 20);
    assert!(stderr(&out).contains("chmod 0600"), "{}", stderr(&out));

    env.write_config("", &dump_as(&pg, "backup", "nowhere-db"));
    let out = run(&["run"]);
    assert_code(&out, 20);
    assert!(
        stderr(&out).contains("/etc/vouch/credentials/nowhere-db")
            && stderr(&out).contains("LoadCredential=nowhere-db:"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        env.archives().len(),
        1,
        "no archive was added by the failed runs"
    );
}

#[test]
fn a_required_database_that_vanished_from_a_star_dump_is_exit_32() {
    let pg = Postgres::start();
    fill(&pg, "shop", 3);
    fill(&pg, "blog", 4);
    let env = Env::new();
    env.write_config(
        "required = [\"dump:all/shop\", \"dump:all\"]",
        &pg.dump("all", "[\"*\"]", "exclude-databases = [\"postgres\"]\n"),
    );
    assert_code(&env.vouch(&["run"]), 0);
    let manifest = env.manifest(&env.archives().pop().unwrap());
    let required = manifest["required"].to_string();
    assert!(
        required.contains("\"dump:all/shop\"") && !required.contains("false"),
        "{required}"
    );
    // The database is dropped: every other database still dumps, so only `required` sees it.
    pg.sql("postgres", "DROP DATABASE shop");
    let out = env.vouch(&["run"]);
    assert_code(&out, 32);
    assert!(
        stderr(&out).contains("dump:all/shop (not in the archive"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.archives().len(), 1, "the failed run kept no archive");
}
