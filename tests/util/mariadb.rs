//! A throwaway MariaDB 10.11 server for tests (Debian's mariadb-server-core and mariadb-client,
//! installed by `scripts/setup`): `mariadbd` on a unix socket in its own temporary directory, no
//! TCP, root logging in through `unix_socket` as on a Debian host; killed when dropped.

use super::{bash_ok, stderr};
use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A throwaway `mariadbd` on a socket in its own directory, no TCP; killed when dropped.
pub struct Mariadb {
    dir: tempfile::TempDir,
    server: Child,
}

impl Mariadb {
    pub fn start() -> Mariadb {
        assert!(
            std::path::Path::new("/usr/sbin/mariadbd").exists(),
            "MariaDB is needed: run scripts/setup (apt-get install mariadb-server-core mariadb-client)"
        );
        assert!(super::is_root(), "the MariaDB tests run as root");
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

    pub fn socket(&self) -> String {
        self.dir.path().join("sock").display().to_string()
    }

    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-N", "-B"])
            .arg(format!("--socket={}", self.socket()))
            .args(["-e", sql, db])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn dump(&self, name: &str, databases: &str, extra: &str) -> String {
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

pub fn fill(m: &Mariadb, db: &str, rows: u32) {
    m.sql("mysql", &format!("CREATE DATABASE {db}"));
    m.sql(
        db,
        &format!(
            "CREATE TABLE items(id INT PRIMARY KEY, label TEXT); \
             INSERT INTO items SELECT seq, CONCAT('item ', seq) FROM seq_1_to_{rows};"
        ),
    );
}
