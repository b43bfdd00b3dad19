//! MariaDB dumps through the built binary against a real MariaDB 10.11 that each test starts on
//! a unix socket in a temporary directory (Debian's mariadb-server-core and mariadb-client;
//! `scripts/setup` installs them), root logging in through `unix_socket` as on a Debian host.
//! A round trip restores with stock `age`, `tar` and `mariadb` into a new database and compares
//! rows; the failure classes are exit 20 with nothing on the target.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::{assert_code, bash_ok, stderr, Env};

/// A throwaway `mariadbd` on a socket in its own directory, no TCP; killed when dropped.
struct Mariadb {
    dir: tempfile::TempDir,
    server: Child,
}

impl Mariadb {
    fn start() -> Mariadb {
        assert!(
            std::path::Path::new("/usr/sbin/mariadbd").exists(),
            "MariaDB is needed: run scripts/setup (apt-get install mariadb-server-core mariadb-client)"
        );
        assert!(util::is_root(), "the MariaDB tests run as root");
        let dir = tempfile::Builder::new()
            .prefix("vouch-maria.")
            .tempdir()
            .unwrap();
        let d = dir.path().display().to_string();
        // Each server gets its own tmpdir: servers bootstrapping at the same time in one /tmp
        // collide on their temporary table names.
        bash_ok(&format!(
            "mkdir '{d}/tmp' && TMPDIR='{d}/tmp' mariadb-install-db --no-defaults --datadir='{d}/data' --user=root \
             --auth-root-authentication-method=socket --skip-test-db >'{d}/install.log' 2>&1"
        ));
        let server = Command::new("mariadbd")
            .args(["--no-defaults", "--skip-networking", "--user=root"])
            .arg(format!("--datadir={d}/data"))
            .arg(format!("--socket={d}/sock"))
            .arg(format!("--pid-file={d}/pid"))
            .arg(format!("--log-error={d}/err.log"))
            .arg(format!("--tmpdir={d}/tmp"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = Mariadb { dir, server };
        let start = Instant::now();
        while Command::new("mariadb-admin")
            .args(["--no-defaults", "ping"])
            .arg(format!("--socket={}", m.socket()))
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "mariadbd did not start: {}",
                fs::read_to_string(m.dir.path().join("err.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        m
    }

    fn socket(&self) -> String {
        self.dir.path().join("sock").display().to_string()
    }

    fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-N", "-B"])
            .arg(format!("--socket={}", self.socket()))
            .args(["-e", sql, db])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn dump(&self, name: &str, databases: &str, extra: &str) -> String {
        format!(
            "[[dump]]\nname = \"{name}\"\nkind = \"mariadb\"\ndatabases = {databases}\nhost = \"{}\"\n{extra}",
            self.socket()
        )
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn fill(m: &Mariadb, db: &str, rows: u32) {
    m.sql("mysql", &format!("CREATE DATABASE {db}"));
    m.sql(
        db,
        &format!(
            "CREATE TABLE items(id INT PRIMARY KEY, label TEXT); \
             INSERT INTO items SELECT seq, CONCAT('item ', seq) FROM seq_1_to_{rows};"
        ),
    );
}

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
fn every_database_is_one_file_each_without_the_system_schemas() {
    let m = Mariadb::start();
    fill(&m, "shop", 5);
    fill(&m, "blog", 7);
    let env = Env::new();
    env.write_config(
        "",
        &m.dump("all", "[\"*\"]", "exclude-databases = [\"mysql\"]\n"),
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
        [".vouch/dumps/all/blog.sql", ".vouch/dumps/all/shop.sql"]
    );
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
