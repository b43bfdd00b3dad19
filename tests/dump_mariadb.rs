//! MariaDB dumps through the built binary against a real MariaDB 10.11 that each test starts on
//! a unix socket in a temporary directory (Debian's mariadb-server-core and mariadb-client;
//! `scripts/setup` installs them), root logging in through `unix_socket` as on a Debian host.
//! A round trip restores with stock `age`, `tar` and `mariadb` into a new database and compares
//! rows; the failure classes are exit 20 with nothing on the target.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use util::mariadb::{fill, Mariadb};
use util::{assert_code, bash_ok, stderr, Env};

#[test]
fn a_dump_restores_into_a_new_database_with_stock_tools() {
    let m = Mariadb::start();
    fill(&m, "shop", 321);
    let env = Env::new();
    env.write_config("", &m.dump("shop", "[\"shop\"]", ""));
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let archive = env.archives().pop().unwrap();
    let manifest = env.manifest(&archive);
    let d = &manifest["dumps"][0];
    assert_eq!(d["path"], ".vouch/dumps/shop.sql");
    assert_eq!(d["tables"], 1);
    m.sql("mysql", "CREATE DATABASE shop_restored");
    bash_ok(&format!(
        "set -o pipefail; age -d -i '{}' '{}' | tar -xzOf - .vouch/dumps/shop.sql | mariadb --no-defaults --socket='{}' shop_restored",
        env.identity.display(),
        archive.display(),
        m.socket()
    ));
    assert_eq!(m.sql("shop_restored", "SELECT count(*) FROM items"), "321");
}

#[test]
fn every_database_is_one_file_each_with_the_users_and_grants_instead_of_the_system_schemas() {
    let m = Mariadb::start();
    fill(&m, "shop", 5);
    fill(&m, "blog", 7);
    m.sql(
        "mysql",
        "CREATE USER 'shopper'@'localhost' IDENTIFIED BY 'pw'; GRANT SELECT ON shop.* TO 'shopper'@'localhost';",
    );
    let env = Env::new();
    env.write_config("", &m.dump("all", "[\"*\"]", ""));
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let archive = env.archives().pop().unwrap();
    let manifest = env.manifest(&archive);
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
            ".vouch/dumps/all/_system.sql"
        ]
    );
    // The users and grants load into a fresh server that already has its own root.
    let other = Mariadb::start();
    let into = env.dir.path().join("r");
    env.stock_restore(&archive, &into);
    let system = into.join(".vouch/dumps/all/_system.sql");
    let load = std::process::Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!("--socket={}", other.socket()))
        .stdin(fs::File::open(&system).unwrap())
        .output()
        .unwrap();
    assert!(load.status.success(), "{}", stderr(&load));
    let grants = other.sql("mysql", "SHOW GRANTS FOR 'shopper'@'localhost'");
    assert!(grants.contains("GRANT SELECT ON `shop`.*"), "{grants}");
}

#[test]
fn a_missing_database_and_an_empty_one_are_refused() {
    let m = Mariadb::start();
    m.sql("mysql", "CREATE DATABASE empty");
    let env = Env::new();
    env.write_config("", &m.dump("app", "[\"nosuchdb\"]", ""));
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    assert!(
        stderr(&out).contains("\"nosuchdb\" does not exist"),
        "{}",
        stderr(&out)
    );
    env.write_config("", &m.dump("app", "[\"empty\"]", ""));
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    assert!(stderr(&out).contains("has 0 tables"), "{}", stderr(&out));
    assert!(env.target_files().is_empty());
}

/// A `mariadb-dump` that passes on all but the last lines of the real one's output and exits 0.
fn truncating_dump(env: &Env) -> PathBuf {
    let bin = env.dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let script = bin.join("mariadb-dump");
    fs::write(
        &script,
        "#!/bin/sh\n/usr/bin/mariadb-dump \"$@\" | head -n -3\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn a_dump_cut_short_is_refused_by_its_completion_line() {
    let m = Mariadb::start();
    fill(&m, "shop", 100);
    let env = Env::new();
    env.write_config("", &m.dump("shop", "[\"shop\"]", ""));
    let bin = truncating_dump(&env);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = env.command(&["run"]).env("PATH", path).output().unwrap();
    assert_code(&out, 20);
    assert!(
        stderr(&out).contains("-- Dump completed"),
        "{}",
        stderr(&out)
    );
    assert!(env.target_files().is_empty());
}

#[test]
fn a_refused_login_is_exit_20() {
    let m = Mariadb::start();
    fill(&m, "shop", 1);
    let env = Env::new();
    env.write_config("", &m.dump("shop", "[\"shop\"]", "user = \"nobody\"\n"));
    let out = env.vouch(&["run"]);
    assert_code(&out, 20);
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    assert!(env.target_files().is_empty());
}
