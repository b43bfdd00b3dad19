//! `[[target]]` entries with `kind = "s3"`: off-site copies in S3-compatible object storage.
//!
//! A remote target is checked as strictly as a directory: an `endpoint` must be `https://`
//! unless `allow-http = true` says the server is on loopback or a trusted network, the bucket
//! and region must be given, the prefix is a key prefix that ends in `/` (or is empty), and
//! `part-size` lies between S3's 5 MiB and 5 GiB. Keys of directory targets (`path`, `split`,
//! `min-free`, `require-mount`, `mount`, `allow-volatile`) are refused on it, and its own keys
//! on a directory target, so a config never carries a setting that does nothing.

use super::{check_name, parse_size, ConfigError, Context, SizeValue};
use crate::host::credential::Secret;
use serde::Deserialize;
use toml::Spanned;

/// Default `part-size`: one part is held in memory while it is sent.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;

/// One S3 target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    /// `scheme://host[:port]`, no path, no trailing slash.
    pub endpoint: String,
    /// The signing region.
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// The key prefix, empty or ending in `/`.
    pub prefix: String,
    /// Path or virtual-host style URLs.
    pub url_style: crate::target::s3::client::UrlStyle,
    /// The access key: `credential = "NAME"`, a TOML file with `access-key-id`,
    /// `secret-access-key` and optionally `session-token`.
    pub credential: Secret,
    /// The preferred part size of multipart uploads.
    pub part_size: u64,
    /// `tls-ca`: a PEM file of CA certificates trusted besides the system's (https only).
    pub tls_ca: Option<std::path::PathBuf>,
    /// `object-lock = { mode, days }`: the retention each archive gets after its read-back.
    pub object_lock: Option<ObjectLock>,
    /// How the copy is checked before its receipt is written.
    pub readback: Readback,
}

/// The Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Nobody, not even the account's root, can shorten or remove it.
    Compliance,
    /// A user with `s3:BypassGovernanceRetention` can (vouch never does).
    Governance,
}

impl LockMode {
    /// The name S3 uses (`x-amz-object-lock-mode`, `<Mode>`).
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

/// `object-lock = { mode = "compliance", days = 30 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// The mode.
    pub mode: LockMode,
    /// Days from the copy until the archive may be deleted.
    pub days: u32,
}

/// `readback = "full" | "checksum"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Readback {
    /// Download the object and check it entry by entry, as the local read-back does.
    #[default]
    Full,
    /// No download: trust the digests the server accepted, its Complete answer and a HEAD.
    Checksum,
}

impl Readback {
    /// `full` or `checksum`, as the config, the journal and `s3-copies.json` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Readback::Full => "full",
            Readback::Checksum => "checksum",
        }
    }
}

/// The raw `object-lock` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLock {
    mode: Option<Spanned<String>>,
    days: Option<Spanned<i64>>,
}

/// The S3 keys of a raw `[[target]]`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub(super) struct RawS3 {
    pub endpoint: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub bucket: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub url_style: Option<Spanned<String>>,
    pub credential: Option<Spanned<String>>,
    pub part_size: Option<Spanned<SizeValue>>,
    pub allow_http: Option<Spanned<bool>>,
    pub tls_ca: Option<Spanned<String>>,
    pub object_lock: Option<Spanned<RawLock>>,
    pub readback: Option<Spanned<String>>,
}

impl RawS3 {
    /// The spans of the keys that are set, by name, for refusing them on a directory target.
    pub(super) fn set_keys(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut out = Vec::new();
        let mut add = |k: &'static str, s: Option<std::ops::Range<usize>>| {
            if let Some(s) = s {
                out.push((k, s));
            }
        };
        add("endpoint", self.endpoint.as_ref().map(|v| v.span()));
        add("region", self.region.as_ref().map(|v| v.span()));
        add("bucket", self.bucket.as_ref().map(|v| v.span()));
        add("prefix", self.prefix.as_ref().map(|v| v.span()));
        add("url-style", self.url_style.as_ref().map(|v| v.span()));
        add("credential", self.credential.as_ref().map(|v| v.span()));
        add("part-size", self.part_size.as_ref().map(|v| v.span()));
        add("allow-http", self.allow_http.as_ref().map(|v| v.span()));
        add("tls-ca", self.tls_ca.as_ref().map(|v| v.span()));
        add("object-lock", self.object_lock.as_ref().map(|v| v.span()));
        add("readback", self.readback.as_ref().map(|v| v.span()));
        out
    }
}

impl Context<'_> {
    /// A required S3 key.
    fn needed<'v>(
        &self,
        v: &'v Option<Spanned<String>>,
        name_span: std::ops::Range<usize>,
        key: &str,
        what: &str,
    ) -> Result<&'v Spanned<String>, ConfigError> {
        match v {
            Some(s) if !s.get_ref().trim().is_empty() => Ok(s),
            Some(s) => Err(self.error(Some(s.span()), key, "must not be empty".into())),
            None => Err(self.error(Some(name_span), key, format!("an s3 target needs {what}"))),
        }
    }

    /// The S3 part of a `kind = "s3"` target.
    pub(super) fn s3_target(
        &self,
        raw: &RawS3,
        tname: &str,
        name_span: std::ops::Range<usize>,
    ) -> Result<S3Target, ConfigError> {
        let key = |k: &str| format!("target.{tname}.{k}");
        let endpoint = self.needed(
            &raw.endpoint,
            name_span.clone(),
            &key("endpoint"),
            "endpoint = \"https://HOST\"",
        )?;
        let allow_http = raw.allow_http.as_ref().is_some_and(|v| *v.get_ref());
        let url = self.endpoint(endpoint, allow_http, &key("endpoint"))?;
        let region = self.needed(
            &raw.region,
            name_span.clone(),
            &key("region"),
            "region (e.g. \"us-east-1\"; self-hosted servers name theirs)",
        )?;
        let bucket = self.needed(&raw.bucket, name_span.clone(), &key("bucket"), "bucket")?;
        check_bucket(bucket.get_ref())
            .map_err(|m| self.error(Some(bucket.span()), &key("bucket"), m))?;
        let prefix = match &raw.prefix {
            None => String::new(),
            Some(p) => {
                check_prefix(p.get_ref())
                    .map_err(|m| self.error(Some(p.span()), &key("prefix"), m))?;
                p.get_ref().clone()
            }
        };
        let url_style = match raw
            .url_style
            .as_ref()
            .map(|v| (v.get_ref().as_str(), v.span()))
        {
            None | Some(("path", _)) => crate::target::s3::client::UrlStyle::Path,
            Some(("virtual-host", _)) => crate::target::s3::client::UrlStyle::VirtualHost,
            Some((other, span)) => {
                return Err(self.error(
                    Some(span),
                    &key("url-style"),
                    format!("{other:?} is not \"path\" or \"virtual-host\""),
                ))
            }
        };
        let credential = self.needed(
            &raw.credential,
            name_span,
            &key("credential"),
            "credential = \"NAME\" (the access key file, see vouch.toml(5))",
        )?;
        check_name(credential.get_ref())
            .map_err(|m| self.error(Some(credential.span()), &key("credential"), m))?;
        let part_size = match &raw.part_size {
            None => DEFAULT_PART_SIZE,
            Some(v) => {
                let n = match v.get_ref() {
                    SizeValue::Bytes(n) => *n,
                    SizeValue::Text(t) => parse_size(t)
                        .map_err(|m| self.error(Some(v.span()), &key("part-size"), m))?,
                };
                if !(5 << 20..=5 << 30).contains(&n) {
                    return Err(self.error(
                        Some(v.span()),
                        &key("part-size"),
                        "use a part size from 5MiB to 5GiB (S3's limits)".into(),
                    ));
                }
                n
            }
        };
        let tls_ca = self.tls_ca(raw, &url, &key("tls-ca"))?;
        Ok(S3Target {
            tls_ca,
            endpoint: url,
            region: region.get_ref().clone(),
            bucket: bucket.get_ref().clone(),
            prefix,
            url_style,
            credential: Secret::Credential(credential.get_ref().clone()),
            part_size,
            object_lock: self.object_lock(raw.object_lock.as_ref(), &key("object-lock"))?,
            readback: self.readback(raw.readback.as_ref(), &key("readback"))?,
        })
    }

    /// `tls-ca`, resolved like every path of the config; refused beside an `http://` endpoint,
    /// which has no certificate to check.
    fn tls_ca(
        &self,
        raw: &RawS3,
        url: &str,
        key: &str,
    ) -> Result<Option<std::path::PathBuf>, ConfigError> {
        let Some(v) = &raw.tls_ca else {
            return Ok(None);
        };
        if url.starts_with("http://") {
            return Err(self.error(
                Some(v.span()),
                key,
                "tls-ca applies to an https:// endpoint; this one is http://, with no certificate to check".into(),
            ));
        }
        self.path(v, key).map(Some)
    }

    /// `object-lock = { mode = "compliance" | "governance", days = N }`, N at least 1.
    fn object_lock(
        &self,
        v: Option<&Spanned<RawLock>>,
        key: &str,
    ) -> Result<Option<ObjectLock>, ConfigError> {
        let Some(v) = v else { return Ok(None) };
        let lock = v.get_ref();
        let mode = match lock.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            Some(("compliance", _)) => LockMode::Compliance,
            Some(("governance", _)) => LockMode::Governance,
            Some((other, span)) => {
                return Err(self.error(
                    Some(span),
                    &format!("{key}.mode"),
                    format!("{other:?} is not \"compliance\" or \"governance\""),
                ))
            }
            None => {
                return Err(self.error(
                    Some(v.span()),
                    &format!("{key}.mode"),
                    "object-lock needs mode = \"compliance\" or \"governance\"".into(),
                ))
            }
        };
        let days = match &lock.days {
            Some(d) => u32::try_from(*d.get_ref())
                .ok()
                .filter(|&n| (1..=36_500).contains(&n))
                .ok_or_else(|| {
                    self.error(
                        Some(d.span()),
                        &format!("{key}.days"),
                        format!("{} is not a number of days from 1 to 36500", d.get_ref()),
                    )
                })?,
            None => {
                return Err(self.error(
                    Some(v.span()),
                    &format!("{key}.days"),
                    "object-lock needs days = N (how long each archive stays undeletable)".into(),
                ))
            }
        };
        Ok(Some(ObjectLock { mode, days }))
    }

    /// `readback = "full"` (the default) or `"checksum"`.
    fn readback(&self, v: Option<&Spanned<String>>, key: &str) -> Result<Readback, ConfigError> {
        match v.map(|r| (r.get_ref().as_str(), r.span())) {
            None | Some(("full", _)) => Ok(Readback::Full),
            Some(("checksum", _)) => Ok(Readback::Checksum),
            Some((other, span)) => Err(self.error(
                Some(span),
                key,
                format!("{other:?} is not \"full\" or \"checksum\""),
            )),
        }
    }

    /// `https://HOST[:PORT]` (or `http://` with `allow-http`), without path, query or user.
    fn endpoint(
        &self,
        v: &Spanned<String>,
        allow_http: bool,
        key: &str,
    ) -> Result<String, ConfigError> {
        let fail = |m: String| self.error(Some(v.span()), key, m);
        let text = v.get_ref().trim_end_matches('/');
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| fail(format!("{text:?} is not a URL: use https://HOST[:PORT]")))?;
        match scheme {
            "https" => {}
            "http" if allow_http => {}
            "http" => return Err(fail("http:// sends the archive and the signed requests in the clear: use https://, or allow-http = true for a server on loopback".into())),
            other => return Err(fail(format!("{other}:// is not https://"))),
        }
        let ok = !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if !ok {
            return Err(fail(format!(
                "{text:?}: give only the scheme, host and port (no path, user or query)"
            )));
        }
        Ok(format!("{scheme}://{rest}"))
    }
}

/// S3's bucket naming rules: 3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit.
fn check_bucket(name: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a bucket name: 3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit"))
    }
}

/// A key prefix: empty, or printable segments ending in `/`, none of them `.` or `..`.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| Err(format!("{prefix:?}: {why}"));
    if !prefix.ends_with('/') {
        return bad("a prefix ends with / (e.g. \"web1/\")");
    }
    if prefix.starts_with('/') || prefix.contains("//") {
        return bad("no leading / and no empty segment");
    }
    if prefix.len() > 512 || prefix.chars().any(|c| c.is_control()) {
        return bad("at most 512 bytes, no control characters");
    }
    if prefix
        .trim_end_matches('/')
        .split('/')
        .any(|s| s == "." || s == "..")
    {
        return bad("no . or .. segment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_str;
    use crate::config::test_parse as parse;
    use std::path::Path;

    const S3: &str = "[[target]]\nname = \"off\"\nkind = \"s3\"\nregion = \"eu\"\nbucket = \"acme\"\ncredential = \"off\"\n";

    #[test]
    fn an_s3_target_parses_with_its_defaults() {
        let s = parse(&format!(
            "{S3}endpoint = \"https://s3.example.org/\"\nprefix = \"web1/\"\n"
        ))
        .unwrap();
        assert_eq!(s.targets.len(), 1);
        let r = &s.remotes[0];
        assert_eq!(r.name, "off");
        assert_eq!(r.s3.endpoint, "https://s3.example.org");
        assert_eq!(r.s3.prefix, "web1/");
        assert_eq!(r.s3.part_size, DEFAULT_PART_SIZE);
        assert_eq!(r.s3.url_style, crate::target::s3::client::UrlStyle::Path);
        assert_eq!(r.s3.credential, Secret::Credential("off".into()));
        assert_eq!(r.s3.object_lock, None);
        assert_eq!(r.s3.readback, Readback::Full);
        let s = parse(&format!(
            "{S3}endpoint = \"https://h\"\nobject-lock = {{ mode = \"governance\", days = 30 }}\nreadback = \"checksum\"\n"
        ))
        .unwrap();
        let lock = s.remotes[0].s3.object_lock.unwrap();
        assert_eq!((lock.mode, lock.days), (LockMode::Governance, 30));
        assert_eq!(s.remotes[0].s3.readback, Readback::Checksum);
        let e = parse("[[target]]\nname = \"x\"\npath = \"/srv/x\"\nreadback = \"full\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("readback does not apply"), "{e}");
    }

    #[test]
    fn s3_mistakes_name_the_key() {
        let cases = [
            (
                "endpoint = \"http://10.0.0.1:9000\"\n",
                "target.off.endpoint: http:// sends",
            ),
            (
                "endpoint = \"https://h/path\"\n",
                "give only the scheme, host and port",
            ),
            (
                "endpoint = \"https://h\"\npath = \"/x\"\n",
                "target.off.path: path does not apply to kind = \"s3\"",
            ),
            (
                "endpoint = \"https://h\"\npart-size = \"1MiB\"\n",
                "from 5MiB to 5GiB",
            ),
            (
                "endpoint = \"https://h\"\nurl-style = \"vhost\"\n",
                "target.off.url-style",
            ),
            (
                "endpoint = \"https://h\"\nprefix = \"web1\"\n",
                "a prefix ends with /",
            ),
            ("", "target.off.endpoint: an s3 target needs endpoint"),
            (
                "endpoint = \"https://h\"\nobject-lock = { mode = \"strict\", days = 3 }\n",
                "target.off.object-lock.mode: \"strict\" is not",
            ),
            (
                "endpoint = \"https://h\"\nobject-lock = { mode = \"compliance\", days = 0 }\n",
                "target.off.object-lock.days: 0 is not a number of days",
            ),
            (
                "endpoint = \"https://h\"\nobject-lock = { mode = \"compliance\" }\n",
                "target.off.object-lock.days: object-lock needs days",
            ),
            (
                "endpoint = \"https://h\"\nobject-lock = { days = 3 }\n",
                "target.off.object-lock.mode",
            ),
            (
                "endpoint = \"https://h\"\nobject-lock = { mode = \"compliance\", days = 3, legal-hold = true }\n",
                "legal-hold",
            ),
            (
                "endpoint = \"https://h\"\nreadback = \"none\"\n",
                "target.off.readback: \"none\" is not",
            ),
        ];
        for (extra, want) in cases {
            let e = parse(&format!("{S3}{extra}")).expect_err(extra).to_string();
            assert!(e.contains(want), "{extra} -> {e}");
        }
        let ok = parse(&format!(
            "{S3}endpoint = \"http://127.0.0.1:3900\"\nallow-http = true\n"
        ));
        assert!(ok.is_ok(), "{ok:?}");
        let e = parse(&format!(
            "{S3}endpoint = \"http://127.0.0.1:3900\"\nallow-http = true\ntls-ca = \"/etc/ca.pem\"\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("target.off.tls-ca: tls-ca applies to an https:// endpoint"),
            "{e}"
        );
        let tls = parse(&format!(
            "{S3}endpoint = \"https://h\"\ntls-ca = \"/etc/vouch/ca.pem\"\n"
        ))
        .unwrap();
        assert_eq!(
            tls.remotes[0].s3.tls_ca.as_deref(),
            Some(Path::new("/etc/vouch/ca.pem"))
        );
        let e =
            parse("[[target]]\nname = \"x\"\npath = \"/srv/x\"\ntls-ca = \"/c\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("tls-ca does not apply to kind = \"dir\""),
            "{e}"
        );
        let e = parse("[[target]]\nname = \"x\"\npath = \"/srv/x\"\nbucket = \"b\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("bucket does not apply to kind = \"dir\""),
            "{e}"
        );
        let e = parse("[[target]]\nname = \"x\"\nkind = \"sftp\"\n").unwrap_err();
        assert!(e.to_string().contains("an sftp target needs host"), "{e}");
        let only = from_str(&format!("[backup]\nsources = [\"/etc\"]\n[encryption]\nrecipients = [\"age1x\"]\n{S3}endpoint = \"https://h\"\n"), Path::new("/x.toml")).unwrap_err();
        assert!(
            only.to_string()
                .contains("at least one directory [[target]]"),
            "{only}"
        );
    }

    #[test]
    fn buckets_and_prefixes_follow_s3s_rules() {
        assert!(check_bucket("acme-backups").is_ok());
        assert!(check_bucket("ab").is_err());
        assert!(check_bucket("Acme").is_err());
        assert!(check_bucket("-acme").is_err());
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("web1/").is_ok());
        assert!(check_prefix("fleet/web1/").is_ok());
        assert!(check_prefix("web1").is_err());
        assert!(check_prefix("/web1/").is_err());
        assert!(check_prefix("a//b/").is_err());
        assert!(check_prefix("../x/").is_err());
    }
}
