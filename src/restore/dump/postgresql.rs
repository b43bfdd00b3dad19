//! PostgreSQL: a dump loaded into a database made for it, or swapped in for an existing one.
//!
//! The clients reach the server with the `[[dump]]`'s host, port and user (the options the dump
//! itself used), `--no-password`, and the password, when there is one, as `PGPASSWORD` in their
//! environment. A database is created by `psql` on the maintenance database `postgres` with
//! `CREATE DATABASE "NAME" TEMPLATE template0` (a dump assumes an empty template0 copy, not
//! whatever template1 holds); every name is a quoted identifier, and reaches `pg_restore` and
//! `psql` as a quoted `dbname='...'` connection string, so no name is ever read as options.
//!
//! A custom-format dump (it starts with `PGDMP`) loads with `pg_restore --exit-on-error
//! --single-transaction`, a plain one with `psql -X -q -v ON_ERROR_STOP=1 --single-transaction
//! -f -`: a load that fails changes nothing in the database, which is then dropped. Owners and
//! grants are restored as dumped (no `--no-owner`): the copy should be the original, and a role
//! that does not exist stops the load with its name (load the dump's `globals.sql` first).
//!
//! `--replace` loads into a new database beside the old one and swaps the two names in one
//! transaction (`ALTER DATABASE ... RENAME`, which PostgreSQL allows in a transaction block)
//! only once the load went through; the old database is dropped after the swap. A failed load
//! or a refused swap (a session still connected to the old database) leaves the old database
//! exactly as it was.

use super::client::{self, Failed};
use crate::config::{Dump, PostgresqlDump};
use crate::dump::child::Owner;
use crate::systemd::signals::Deferred;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// The longest database name PostgreSQL keeps (NAMEDATALEN - 1): a longer one would be
/// truncated in silence, and could then name another database.
pub(super) const MAX_NAME: usize = 63;

/// How to reach the server of a `[[dump]]`.
pub(super) struct Pg<'a> {
    spec: &'a PostgresqlDump,
    env: Vec<(&'static str, String)>,
    owner: Owner<'a>,
}

/// `name` as a quoted SQL identifier.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `name` as a `dbname='...'` connection string, so that no name is taken for one.
fn conninfo(name: &str) -> String {
    format!(
        "--dbname=dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

impl<'a> Pg<'a> {
    /// The clients' settings for `dump`; a password file that cannot be used is an error.
    pub(super) fn new(dump: &'a Dump, spec: &'a PostgresqlDump) -> Result<Pg<'a>, String> {
        let mut env = vec![("PGCONNECT_TIMEOUT", "30".to_owned())];
        if let Some(p) = crate::dump::password(spec.password.as_ref()).map_err(|e| e.to_string())? {
            env.push(("PGPASSWORD", p));
        }
        Ok(Pg {
            spec,
            env,
            owner: Owner {
                field: "VOUCH_DUMP",
                name: &dump.name,
            },
        })
    }

    /// `--no-password` and the host, port and user options, as the dump used them.
    fn args(&self) -> Vec<String> {
        crate::dump::postgresql::connection(self.spec)
    }

    /// Runs `sql` through `psql` on the maintenance database and returns its output lines.
    fn psql(&self, sql: &str) -> Result<Vec<String>, Failed> {
        let mut argv = vec![
            "psql".to_owned(),
            "-X".into(),
            "-q".into(),
            "-A".into(),
            "-t".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
        ];
        argv.extend(self.args());
        argv.extend(["--dbname=postgres".to_owned(), "-c".into(), sql.into()]);
        client::query(&argv, &self.env, self.owner)
    }

    /// Every database on the server.
    pub(super) fn databases(&self) -> Result<Vec<String>, Failed> {
        self.psql("SELECT datname FROM pg_database ORDER BY datname")
    }

    /// Creates the empty database `name`.
    pub(super) fn create(&self, name: &str) -> Result<(), Failed> {
        self.psql(&format!(
            "CREATE DATABASE {} TEMPLATE template0",
            quote_ident(name)
        ))
        .map(drop)
    }

    /// Drops the database `name`, if it exists.
    pub(super) fn drop_database(&self, name: &str) -> Result<(), Failed> {
        self.psql(&format!("DROP DATABASE IF EXISTS {}", quote_ident(name)))
            .map(drop)
    }

    /// In one transaction: `into` becomes `old` and `new` becomes `into`.
    pub(super) fn swap(&self, new: &str, into: &str, old: &str) -> Result<(), Failed> {
        self.psql(&format!(
            "BEGIN; ALTER DATABASE {into_q} RENAME TO {old_q}; ALTER DATABASE {new_q} RENAME TO {into_q}; COMMIT",
            into_q = quote_ident(into),
            old_q = quote_ident(old),
            new_q = quote_ident(new)
        ))
        .map(drop)
    }

    /// Loads the dump in `file` into the database `name` in one transaction: `pg_restore` for
    /// the custom format, `psql` for plain SQL.
    pub(super) fn load(&self, name: &str, file: File, interrupts: &Deferred) -> Result<(), Failed> {
        let mut argv = if is_custom(&file) {
            vec![
                "pg_restore".to_owned(),
                "--exit-on-error".into(),
                "--single-transaction".into(),
            ]
        } else {
            vec![
                "psql".to_owned(),
                "-X".into(),
                "-q".into(),
                "-v".into(),
                "ON_ERROR_STOP=1".into(),
                "--single-transaction".into(),
                "-f".into(),
                "-".into(),
            ]
        };
        argv.extend(self.args());
        argv.push(conninfo(name));
        client::load(&argv, &self.env, file, self.owner, interrupts)
    }
}

/// Whether the dump in `file` is in the custom format (it starts with `PGDMP`).
pub(super) fn is_custom(file: &File) -> bool {
    let mut magic = [0u8; 5];
    file.read_exact_at(&mut magic, 0).is_ok() && &magic == b"PGDMP"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_as_identifiers_and_connection_strings() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(conninfo("a'b\\c"), "--dbname=dbname='a\\'b\\\\c'");
        assert_eq!(conninfo("x=y"), "--dbname=dbname='x=y'");
    }
}
