//! `[[target]]` entries with `kind = "sftp"`: off-site copies on an SSH server, through the
//! system's OpenSSH client.
//!
//! An sftp target names the server (`host`, `port`, default 22, `user`), the directory the
//! archives go to there (`path`, absolute on the server), the private key (`credential =
//! "NAME"`, read as the S3 access key is: owner-only) and the one known-hosts file its host key
//! is checked against (`known-hosts`, absolute on this host; vouch never accepts a new key).
//! `split = "SIZE"` uploads the archive as parts `NAME.000`, `NAME.001`, ... of at most SIZE
//! each; absent or `"off"`, it is one file. `"auto"` is refused: SFTP cannot tell the largest
//! file the server's filesystem takes, so the size must be given. Every key of the other kinds
//! is refused; the sftp-only keys are refused on them.

use super::{check_name, ConfigError, Context};
use crate::host::credential::Secret;
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

/// The port when none is given.
pub const DEFAULT_PORT: u16 = 22;

/// One sftp target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpTarget {
    /// Host name or address of the server.
    pub host: String,
    /// Its SSH port.
    pub port: u16,
    /// The user vouch logs in as.
    pub user: String,
    /// The directory on the server, absolute, without a trailing `/`.
    pub path: String,
    /// The private key: `credential = "NAME"`.
    pub credential: Secret,
    /// The only known-hosts file consulted.
    pub known_hosts: PathBuf,
    /// Parts of at most this many bytes (`split = "SIZE"`); `None`: one file.
    pub split: Option<u64>,
}

impl SftpTarget {
    /// `sftp://USER@HOST:PORT/PATH/NAME`, as the journal and messages name an archive.
    pub fn url_of(&self, name: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "sftp://{}@{host}:{}{}",
            self.user,
            self.port,
            self.remote_path(name)
        )
    }

    /// `PATH/NAME` on the server.
    pub fn remote_path(&self, name: &str) -> String {
        format!("{}/{name}", self.path)
    }
}

/// The sftp-only keys of a raw `[[target]]` (`path`, `credential` and `keep` are shared).
#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub(super) struct RawSftp {
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub user: Option<Spanned<String>>,
    pub known_hosts: Option<Spanned<String>>,
}

impl RawSftp {
    /// The spans of the keys that are set, by name, for refusing them on other kinds.
    pub(super) fn set_keys(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut out = Vec::new();
        let mut add = |k: &'static str, s: Option<std::ops::Range<usize>>| {
            if let Some(s) = s {
                out.push((k, s));
            }
        };
        add("host", self.host.as_ref().map(|v| v.span()));
        add("port", self.port.as_ref().map(|v| v.span()));
        add("user", self.user.as_ref().map(|v| v.span()));
        add("known-hosts", self.known_hosts.as_ref().map(|v| v.span()));
        out
    }
}

/// What an sftp target takes from the keys it shares with the other kinds.
pub(super) struct Shared<'a> {
    pub path: Option<&'a Spanned<String>>,
    pub credential: Option<&'a Spanned<String>>,
    pub split: Option<&'a Spanned<String>>,
}

impl Context<'_> {
    /// A required sftp key, not empty.
    fn sftp_needed<'v>(
        &self,
        v: Option<&'v Spanned<String>>,
        name_span: std::ops::Range<usize>,
        key: &str,
        what: &str,
    ) -> Result<&'v Spanned<String>, ConfigError> {
        match v {
            Some(s) if !s.get_ref().trim().is_empty() => Ok(s),
            Some(s) => Err(self.error(Some(s.span()), key, "must not be empty".into())),
            None => Err(self.error(Some(name_span), key, format!("an sftp target needs {what}"))),
        }
    }

    /// The sftp part of a `kind = "sftp"` target.
    pub(super) fn sftp_target(
        &self,
        raw: &RawSftp,
        shared: Shared<'_>,
        tname: &str,
        name_span: std::ops::Range<usize>,
    ) -> Result<SftpTarget, ConfigError> {
        let key = |k: &str| format!("target.{tname}.{k}");
        let split = match shared.split {
            None => None,
            Some(v) => match self.split(v, &key("split"))? {
                super::Split::Off => None,
                super::Split::Size(n) => Some(n),
                super::Split::Auto => return Err(self.error(
                    Some(v.span()),
                    &key("split"),
                    "split = \"auto\" cannot work on an sftp target: SFTP cannot tell the largest file the server's filesystem takes; give the part size (split = \"1GiB\") or split = \"off\"".into(),
                )),
            },
        };
        let host = self.sftp_needed(
            raw.host.as_ref(),
            name_span.clone(),
            &key("host"),
            "host = \"HOST\"",
        )?;
        check_host(host.get_ref()).map_err(|m| self.error(Some(host.span()), &key("host"), m))?;
        let port = match &raw.port {
            None => DEFAULT_PORT,
            Some(p) => u16::try_from(*p.get_ref())
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    self.error(
                        Some(p.span()),
                        &key("port"),
                        format!("{} is not a port from 1 to 65535", p.get_ref()),
                    )
                })?,
        };
        let user = self.sftp_needed(
            raw.user.as_ref(),
            name_span.clone(),
            &key("user"),
            "user = \"NAME\"",
        )?;
        check_user(user.get_ref()).map_err(|m| self.error(Some(user.span()), &key("user"), m))?;
        let path = self.sftp_needed(
            shared.path,
            name_span.clone(),
            &key("path"),
            "path = \"/DIR\" (the directory on the server)",
        )?;
        let remote = check_remote_path(path.get_ref())
            .map_err(|m| self.error(Some(path.span()), &key("path"), m))?;
        let credential = self.sftp_needed(
            shared.credential,
            name_span.clone(),
            &key("credential"),
            "credential = \"NAME\" (the private key file, see vouch.toml(5))",
        )?;
        check_name(credential.get_ref())
            .map_err(|m| self.error(Some(credential.span()), &key("credential"), m))?;
        let known = self.sftp_needed(
            raw.known_hosts.as_ref(),
            name_span,
            &key("known-hosts"),
            "known-hosts = \"/etc/vouch/known_hosts\" (vouch never accepts a new host key)",
        )?;
        if !known.get_ref().starts_with('/') {
            return Err(self.error(
                Some(known.span()),
                &key("known-hosts"),
                format!("{:?} is not an absolute path", known.get_ref()),
            ));
        }
        Ok(SftpTarget {
            host: host.get_ref().clone(),
            port,
            user: user.get_ref().clone(),
            path: remote,
            credential: Secret::Credential(credential.get_ref().clone()),
            known_hosts: self.path(known, &key("known-hosts"))?,
            split,
        })
    }
}

/// A host name or address ssh takes as one: no blank, no control character, not starting with
/// `-` (it would be read as an option) and no `@` (the user is `user`).
fn check_host(host: &str) -> Result<(), String> {
    let ok = !host.starts_with('-')
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a host name or address (letters, digits, - . _ : only)"
        ))
    }
}

/// A user name: printable, no blank, `@`, `:` or leading `-`.
fn check_user(user: &str) -> Result<(), String> {
    let ok = !user.starts_with('-')
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._$".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{user:?} is not a user name (letters, digits, - . _ only)"
        ))
    }
}

/// An absolute directory on the server: no empty, `.` or `..` segment, no control character,
/// the trailing `/` dropped; `/` alone is refused (archives do not belong in the root).
fn check_remote_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "{path:?} is not an absolute directory on the server"
        ));
    }
    if path.chars().any(char::is_control) || path.len() > 1024 {
        return Err(format!(
            "{path:?}: at most 1024 bytes, no control characters"
        ));
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("\"/\": give the directory for the archives, not the server's root".into());
    }
    if trimmed
        .split('/')
        .skip(1)
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!("{path:?}: no empty, . or .. segment"));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_parse as parse;
    use std::path::Path;

    const SFTP: &str = "[[target]]\nname = \"nas\"\nkind = \"sftp\"\nhost = \"nas.lan\"\nuser = \"backup\"\ncredential = \"nas-key\"\nknown-hosts = \"/etc/vouch/known_hosts\"\n";

    #[test]
    fn an_sftp_target_parses_with_its_defaults() {
        let s = parse(&format!(
            "{SFTP}path = \"/volume1/backups/web1/\"\nkeep = {{ last = 3 }}\n"
        ))
        .unwrap();
        assert_eq!(s.targets.len(), 1);
        assert!(s.remotes.is_empty());
        let r = &s.sftp[0];
        assert_eq!(r.name, "nas");
        assert_eq!(r.sftp.host, "nas.lan");
        assert_eq!(r.sftp.port, 22);
        assert_eq!(r.sftp.user, "backup");
        assert_eq!(r.sftp.path, "/volume1/backups/web1");
        assert_eq!(r.sftp.credential, Secret::Credential("nas-key".into()));
        assert_eq!(r.sftp.known_hosts, Path::new("/etc/vouch/known_hosts"));
        assert_eq!(r.keep.last, Some(3));
        assert_eq!(
            r.sftp.url_of("a.tar.gz.age"),
            "sftp://backup@nas.lan:22/volume1/backups/web1/a.tar.gz.age"
        );
        let s = parse(&format!(
            "{SFTP}path = \"/b\"\nport = 2222\nsplit = \"off\"\n"
        ))
        .unwrap();
        assert_eq!(s.sftp[0].sftp.port, 2222);
        assert_eq!(s.sftp[0].sftp.split, None, "split = \"off\": one file");
        assert_eq!(
            parse(&format!("{SFTP}path = \"/b\"\n")).unwrap().sftp[0]
                .sftp
                .split,
            None,
            "absent: one file"
        );
        let s = parse(&format!("{SFTP}path = \"/b\"\nsplit = \"2GiB\"\n")).unwrap();
        assert_eq!(s.sftp[0].sftp.split, Some(2 << 30));
    }

    #[test]
    fn sftp_mistakes_name_the_key() {
        let cases = [
            (
                "path = \"/b\"\nsplit = \"auto\"\n",
                "target.nas.split: split = \"auto\" cannot work on an sftp target: SFTP cannot tell the largest file",
            ),
            (
                "path = \"/b\"\nsplit = \"100KiB\"\n",
                "target.nas.split: parts must be at least 1MiB",
            ),
            (
                "path = \"/b\"\nsplit = \"lots\"\n",
                "target.nas.split:",
            ),
            (
                "path = \"/b\"\nport = 0\n",
                "target.nas.port: 0 is not a port",
            ),
            (
                "path = \"/b\"\nport = 65536\n",
                "target.nas.port: 65536 is not a port",
            ),
            ("", "target.nas.path: an sftp target needs path"),
            ("path = \"b\"\n", "not an absolute directory on the server"),
            ("path = \"/a/../b\"\n", "no empty, . or .. segment"),
            ("path = \"/\"\n", "not the server's root"),
            (
                "path = \"/b\"\nbucket = \"x\"\n",
                "target.nas.bucket: bucket does not apply to kind = \"sftp\"",
            ),
            (
                "path = \"/b\"\nmin-free = \"1GiB\"\n",
                "target.nas.min-free: min-free does not apply to kind = \"sftp\"",
            ),
            (
                "path = \"/b\"\nrequire-mount = true\n",
                "require-mount does not apply",
            ),
            (
                "path = \"/b\"\nreadback = \"full\"\n",
                "readback does not apply",
            ),
        ];
        for (extra, want) in cases {
            let e = parse(&format!("{SFTP}{extra}"))
                .expect_err(extra)
                .to_string();
            assert!(e.contains(want), "{extra} -> {e}");
        }
        let no_host = SFTP.replace("host = \"nas.lan\"\n", "host = \"-oProxyCommand=x\"\n");
        let e = parse(&format!("{no_host}path = \"/b\"\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("target.nas.host: \"-oProxyCommand=x\" is not a host"),
            "{e}"
        );
        let no_kh = SFTP.replace("known-hosts = \"/etc/vouch/known_hosts\"\n", "");
        let e = parse(&format!("{no_kh}path = \"/b\"\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("target.nas.known-hosts: an sftp target needs known-hosts"),
            "{e}"
        );
        let rel = SFTP.replace("\"/etc/vouch/known_hosts\"", "\"known_hosts\"");
        let e = parse(&format!("{rel}path = \"/b\"\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("target.nas.known-hosts: \"known_hosts\" is not an absolute path"),
            "{e}"
        );
        let no_user = SFTP.replace("user = \"backup\"\n", "");
        let e = parse(&format!("{no_user}path = \"/b\"\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("target.nas.user: an sftp target needs user"),
            "{e}"
        );
        for (kind, extra) in [
            ("dir", "path = \"/srv/x\"\n"),
            (
                "s3",
                "endpoint = \"https://h\"\nregion = \"r\"\nbucket = \"bkt\"\ncredential = \"c\"\n",
            ),
        ] {
            for key in [
                "host = \"h\"",
                "port = 22",
                "user = \"u\"",
                "known-hosts = \"/k\"",
            ] {
                let e = parse(&format!(
                    "[[target]]\nname = \"x\"\nkind = \"{kind}\"\n{extra}{key}\n"
                ))
                .unwrap_err();
                let k = key.split(' ').next().unwrap();
                assert!(
                    e.to_string().contains(&format!(
                        "target.x.{k}: {k} does not apply to kind = \"{kind}\""
                    )),
                    "{kind} {key} -> {e}"
                );
            }
        }
    }
}
