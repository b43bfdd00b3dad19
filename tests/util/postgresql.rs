//! A throwaway PostgreSQL 15 cluster for tests (Debian's postgresql-15, installed by
//! `scripts/setup`): owned by the `postgres` user, listening only on a unix socket in its own
//! temporary directory, stopped when dropped.

use super::{bash_ok, stderr};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

pub const PGBIN: &str = "/usr/lib/postgresql/15/bin";

/// A throwaway PostgreSQL cluster owned by the `postgres` user, listening only on a unix socket
/// in its own directory; stopped when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        assert!(
            Path::new(&format!("{PGBIN}/initdb")).exists(),
            "PostgreSQL 15 is needed: run scripts/setup (apt-get install postgresql)"
        );
        assert!(super::is_root(), "the PostgreSQL tests run as root");
        let dir = tempfile::Builder::new()
            .prefix("vouch-pg.")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path().display().to_string();
        bash_ok(&format!(
            "set -e; chown postgres: '{d}'; cd /; \
             runuser -u postgres -- env LC_ALL=C {PGBIN}/initdb -D '{d}/data' -A trust -U postgres --no-sync >/dev/null; \
             runuser -u postgres -- {PGBIN}/pg_ctl -D '{d}/data' -l '{d}/log' -w \
               -o \"-c listen_addresses='' -k {d} -c fsync=off\" start >/dev/null"
        ));
        Postgres { dir }
    }

    pub fn socket_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Runs SQL as the superuser on `db`.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Makes `role` a superuser that must log in with `password` (scram-sha-256 on the socket),
    /// while `postgres` keeps logging in without one.
    pub fn require_password(&self, role: &str, password: &str) {
        self.sql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'"),
        );
        let hba = self.dir.path().join("data/pg_hba.conf");
        let old = fs::read_to_string(&hba).unwrap();
        fs::write(&hba, format!("local all {role} scram-sha-256\n{old}")).unwrap();
        let d = self.socket_dir();
        bash_ok(&format!(
            "cd /; runuser -u postgres -- {PGBIN}/pg_ctl -D '{d}/data' reload >/dev/null"
        ));
    }

    /// The `[[dump]]` lines that reach this server.
    pub fn dump(&self, name: &str, databases: &str, extra: &str) -> String {
        format!(
            "[[dump]]\nname = \"{name}\"\nkind = \"postgresql\"\ndatabases = {databases}\nhost = \"{}\"\nuser = \"postgres\"\n{extra}",
            self.socket_dir()
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let d = self.dir.path().display();
        let _ = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "cd /; runuser -u postgres -- {PGBIN}/pg_ctl -D '{d}/data' -m immediate -w stop >/dev/null 2>&1"
            ))
            .status();
    }
}

/// A database `db` with `rows` rows in table `items`.
pub fn fill(pg: &Postgres, db: &str, rows: u32) {
    pg.sql("postgres", &format!("CREATE DATABASE {db}"));
    pg.sql(
        db,
        &format!(
            "CREATE TABLE items(id int PRIMARY KEY, label text); \
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, {rows}) g;"
        ),
    );
}
