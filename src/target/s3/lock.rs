//! S3 Object Lock: the requests that read a bucket's lock configuration, put a retention on
//! one object version, read an object's retention back, and delete one version.
//!
//! An archive is locked only after its read-back passed ([`super::copy`]), by
//! `PutObjectRetention` on the version its upload created, so a bad upload can still be
//! deleted and a good one cannot: a locked version refuses `DeleteObject?versionId=` with
//! `AccessDenied` until its retain-until date. vouch never sends
//! `x-amz-bypass-governance-retention`.
//!
//! Servers differ in what they implement: Garage 2.5 has no Object Lock (501 to each of these
//! requests, and it ignores the lock headers on `PutObject`, so only the preflight's
//! `GetObjectLockConfiguration` tells); moto 5.2.5 has no `GetObjectRetention` (a
//! `GET KEY?retention` is answered with the object itself) but reports the lock on `HEAD`, as
//! AWS does for a caller allowed to read it; [`Client::retention`] reads the `HEAD` first and
//! asks `GetObjectRetention` only when it shows none.

use super::client::{Call, Client, S3Error};
use super::xml;
use crate::config::LockMode;

/// The largest `GetObjectRetention` answer that is read (a `<Retention>` is ~200 bytes).
const RETENTION_BODY: u64 = 64 << 10;

/// A bucket's Object Lock configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfig {
    /// `<ObjectLockEnabled>Enabled</ObjectLockEnabled>`.
    pub enabled: bool,
    /// The default retention new objects get, as `MODE DAYS|YEARS`, when the bucket has one.
    pub default_retention: Option<String>,
}

/// The body of `PutObjectRetention`.
pub fn retention_body(mode: LockMode, retain_until: &str) -> String {
    format!(
        "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{retain_until}</RetainUntilDate></Retention>",
        mode.as_s3()
    )
}

/// The mode S3 names.
fn mode_of(text: &str) -> Option<LockMode> {
    match text.trim() {
        "COMPLIANCE" => Some(LockMode::Compliance),
        "GOVERNANCE" => Some(LockMode::Governance),
        _ => None,
    }
}

/// Whether an error says the bucket or object has no lock (rather than that the request
/// failed): no configuration, no retention, or a server without Object Lock (Garage 2.5
/// answers 501 `NotImplemented`).
fn no_lock(e: &S3Error) -> bool {
    matches!(
        e.code(),
        Some(
            "ObjectLockConfigurationNotFoundError"
                | "NoSuchObjectLockConfiguration"
                | "InvalidRequest"
                | "NotImplemented"
        )
    ) || matches!(e.status(), Some(404 | 501))
}

impl Client {
    /// `GetObjectLockConfiguration`; `None` when the bucket has none (Object Lock was not
    /// enabled when it was created).
    pub fn lock_configuration(&self) -> Result<Option<LockConfig>, S3Error> {
        let a = match self.call(&Call {
            method: "GET",
            key: None,
            query: &[("object-lock", "")],
            headers: &[],
            body: &[],
        }) {
            Ok(a) => a,
            Err(e) if no_lock(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        if xml::root_name(&a.body).as_deref() != Some("ObjectLockConfiguration") {
            return Err(self.bad("GET", None, "no <ObjectLockConfiguration> in the answer"));
        }
        let enabled =
            xml::text(&a.body, "ObjectLockEnabled").is_some_and(|t| t.trim() == "Enabled");
        let default_retention = xml::text(&a.body, "DefaultRetention").map(|_| {
            let mode = xml::text(&a.body, "Mode").unwrap_or_default();
            match (xml::text(&a.body, "Days"), xml::text(&a.body, "Years")) {
                (Some(d), _) => format!("{} {} days", mode.trim(), d.trim()),
                (None, Some(y)) => format!("{} {} years", mode.trim(), y.trim()),
                (None, None) => mode.trim().to_owned(),
            }
        });
        Ok(Some(LockConfig {
            enabled,
            default_retention,
        }))
    }

    /// `PutObjectRetention` on `key` (the version `version_id`, else the newest), with
    /// `Content-MD5` on its body as S3 requires.
    pub fn put_retention(
        &self,
        key: &str,
        version_id: Option<&str>,
        mode: LockMode,
        retain_until: &str,
    ) -> Result<(), S3Error> {
        let body = retention_body(mode, retain_until);
        let mut query = vec![("retention", "")];
        if let Some(v) = version_id {
            query.push(("versionId", v));
        }
        self.call(&Call {
            method: "PUT",
            key: Some(key),
            query: &query,
            headers: &[("content-type", "application/xml")],
            body: body.as_bytes(),
        })
        .map(|_| ())
    }

    /// The retention of `key`'s newest version: its mode and retain-until date as the server
    /// gives it; `None` for an object (or a bucket) without one.
    pub fn retention(&self, key: &str) -> Result<Option<(LockMode, String)>, S3Error> {
        let head = self.call(&Call {
            method: "HEAD",
            key: Some(key),
            query: &[],
            headers: &[],
            body: &[],
        })?;
        let mode = head.header("x-amz-object-lock-mode").and_then(mode_of);
        let until = head.header("x-amz-object-lock-retain-until-date");
        if let (Some(mode), Some(until)) = (mode, until) {
            return Ok(Some((mode, until.to_owned())));
        }
        self.get_retention(key)
    }

    /// `GetObjectRetention`; an answer that is not a `<Retention>` (a server that ignores the
    /// subresource and serves the object) is `None`, like an object without one.
    fn get_retention(&self, key: &str) -> Result<Option<(LockMode, String)>, S3Error> {
        let call = Call {
            method: "GET",
            key: Some(key),
            query: &[("retention", "")],
            headers: &[],
            body: &[],
        };
        let mut response = self.send(&call)?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(RETENTION_BODY)
            .read_to_vec()
            .unwrap_or_default();
        if !(200..300).contains(&status) {
            let answer = super::client::Answer {
                status,
                headers: Vec::new(),
                body,
            };
            let e = self.status_error(&call, &answer);
            return if no_lock(&e) { Ok(None) } else { Err(e) };
        }
        if xml::root_name(&body).as_deref() != Some("Retention") {
            return Ok(None);
        }
        let mode = xml::text(&body, "Mode").as_deref().and_then(mode_of);
        let until = xml::text(&body, "RetainUntilDate").map(|t| t.trim().to_owned());
        match (mode, until) {
            (Some(m), Some(u)) if !u.is_empty() => Ok(Some((m, u))),
            _ => Err(self.bad("GET", Some(key), "a <Retention> without a mode or date")),
        }
    }

    /// `DeleteObject?versionId=`: removes that version for good (a plain delete on a
    /// versioned bucket only adds a delete marker). A locked version is refused by the server
    /// (`AccessDenied`), which is returned as the error.
    pub fn delete_version(&self, key: &str, version_id: &str) -> Result<(), S3Error> {
        self.call(&Call {
            method: "DELETE",
            key: Some(key),
            query: &[("versionId", version_id)],
            headers: &[],
            body: &[],
        })
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_body_names_the_mode_and_date() {
        let b = retention_body(LockMode::Compliance, "2027-01-01T00:00:00Z");
        assert_eq!(xml::root_name(b.as_bytes()).as_deref(), Some("Retention"));
        assert_eq!(
            xml::text(b.as_bytes(), "Mode").as_deref(),
            Some("COMPLIANCE")
        );
        assert_eq!(
            xml::text(b.as_bytes(), "RetainUntilDate").as_deref(),
            Some("2027-01-01T00:00:00Z")
        );
        assert_eq!(mode_of("GOVERNANCE"), Some(LockMode::Governance));
        assert_eq!(mode_of("none"), None);
    }
}
