//! MariaDB: a dump loaded into a database made for it with `mariadb --database=NAME`.
//!
//! The clients reach the server with the `[[dump]]`'s socket or host, port and user
//! (`crate::dump::mariadb::connection`, as the dump did), and the password, when there is
//! one, as `MYSQL_PWD` in their environment. The dumps hold no `CREATE DATABASE` or `USE`, so
//! the file loads into the database it is given: `CREATE DATABASE \`NAME\`` first (a quoted
//! identifier), then the file on the client's standard input, which stops at the first error
//! and exits 1.
//!
//! A MariaDB load is not one transaction (DDL commits as it goes) and a database cannot be
//! renamed, so a load that fails is dropped, and `--replace` first loads the dump into a scratch
//! database beside the old one: only when that went through is the old database dropped,
//! created again and loaded. Should that second load fail, the scratch database, which holds
//! the complete copy, is kept and named in the error.

use super::client::{self, Failed};
use crate::config::{Dump, MariadbDump};
use crate::dump::child::Owner;
use crate::systemd::signals::Deferred;
use std::fs::File;

/// The longest database name MariaDB accepts.
pub(super) const MAX_NAME: usize = 64;

/// How to reach the server of a `[[dump]]`.
pub(super) struct Maria<'a> {
    spec: &'a MariadbDump,
    env: Vec<(&'static str, String)>,
    owner: Owner<'a>,
}

/// `name` as a quoted identifier.
pub(super) fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl<'a> Maria<'a> {
    /// The clients' settings for `dump`; a password file that cannot be used is an error.
    pub(super) fn new(dump: &'a Dump, spec: &'a MariadbDump) -> Result<Maria<'a>, String> {
        let mut env = Vec::new();
        if let Some(p) = crate::dump::password(spec.password.as_ref()).map_err(|e| e.to_string())? {
            env.push(("MYSQL_PWD", p));
        }
        Ok(Maria {
            spec,
            env,
            owner: Owner {
                field: "VOUCH_DUMP",
                name: &dump.name,
            },
        })
    }

    /// Runs one statement and returns its output lines.
    fn sql(&self, sql: &str) -> Result<Vec<String>, Failed> {
        let mut argv = vec!["mariadb".to_owned()];
        argv.extend(crate::dump::mariadb::connection(self.spec));
        argv.extend(["-N".into(), "-B".into(), "-e".into(), sql.into()]);
        client::query(&argv, &self.env, self.owner)
    }

    /// Every database on the server.
    pub(super) fn databases(&self) -> Result<Vec<String>, Failed> {
        self.sql("SHOW DATABASES")
    }

    /// Creates the empty database `name`.
    pub(super) fn create(&self, name: &str) -> Result<(), Failed> {
        self.sql(&format!("CREATE DATABASE {}", quote_ident(name)))
            .map(drop)
    }

    /// Drops the database `name`, if it exists.
    pub(super) fn drop_database(&self, name: &str) -> Result<(), Failed> {
        self.sql(&format!("DROP DATABASE IF EXISTS {}", quote_ident(name)))
            .map(drop)
    }

    /// Loads the SQL in `file` into the database `name`.
    pub(super) fn load(&self, name: &str, file: File, interrupts: &Deferred) -> Result<(), Failed> {
        let mut argv = vec!["mariadb".to_owned()];
        argv.extend(crate::dump::mariadb::connection(self.spec));
        argv.push(format!("--database={name}"));
        client::load(&argv, &self.env, file, self.owner, interrupts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_as_identifiers() {
        assert_eq!(quote_ident("shop"), "`shop`");
        assert_eq!(quote_ident("a`b"), "`a``b`");
    }
}
