//! AWS Signature Version 4 for S3 requests, sent in the `Authorization` header.
//!
//! A request is signed in five steps, one function each:
//!
//! 1. [`canonical_request`]: the method, the URI-encoded path, the sorted encoded query, the
//!    lower-cased trimmed sorted headers, the list of their names, and the hex SHA-256 of the
//!    payload, one per line.
//! 2. [`string_to_sign`]: the algorithm, the request time, the credential scope
//!    (`DATE/REGION/SERVICE/aws4_request`) and the SHA-256 of the canonical request.
//! 3. [`signing_key`]: `"AWS4" + secret` HMAC-ed with the date, the region, the service and
//!    `aws4_request` in turn.
//! 4. [`signature`]: the hex HMAC-SHA256 of the string to sign under the signing key.
//! 5. [`authorization`]: the `Authorization` header naming the key, the scope, the signed
//!    headers and the signature.
//!
//! [`Signer::sign`] runs them for one request and hands back the headers to send. It always
//! signs `x-amz-date` and, for S3, `x-amz-content-sha256`: the SHA-256 of the real payload,
//! which the server recomputes from the bytes it received and refuses on a mismatch. A session
//! token is signed as `x-amz-security-token`.
//!
//! S3's rules where they differ from other services: the path is URI-encoded exactly once (the
//! key as it is, `/` kept) and never normalised (`//`, `.` and `..` are signed as they stand,
//! since an object key may contain them). Presigned URLs (signing in the query string) are made
//! from the same steps in [`super::presign`].
//!
//! Specification: <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html>
//! and <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>.

use crate::pipeline::io::hex;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use time::OffsetDateTime;

/// The algorithm name that starts the string to sign and the `Authorization` header.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The hex SHA-256 of an empty payload (GET, HEAD, DELETE and other bodiless requests).
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An access key: what the signature proves possession of.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The public half, named in the `Authorization` header (`AKIA...`).
    pub access_key_id: String,
    /// The secret half; only ever used as HMAC key material, never sent.
    pub secret_access_key: String,
    /// A temporary credential's session token, sent and signed as `x-amz-security-token`.
    pub session_token: Option<String>,
}

impl fmt::Debug for Credentials {
    /// Names the key id only: secrets stay out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// One request to sign, as the caller will send it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The HTTP method, upper case (`GET`, `PUT`, ...).
    pub method: &'a str,
    /// The path, not yet encoded, starting with `/` (path style: `/BUCKET/KEY`). The URL sent
    /// must carry [`Signed::path_and_query`], which encodes it the way it was signed.
    pub path: &'a str,
    /// Query parameters, not yet encoded; a parameter without a value has `""`.
    pub query: &'a [(&'a str, &'a str)],
    /// The headers to sign, `host` among them, in any case and order. Repeated names are
    /// signed as one header with the values joined by `,`. The headers [`Signer::sign`] adds
    /// (`x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token`) must not be here.
    pub headers: &'a [(&'a str, &'a str)],
    /// The hex SHA-256 of the payload that will be sent ([`payload_sha256`]).
    pub payload_sha256: &'a str,
}

/// What signing one request produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The encoded path and query exactly as signed, to append to the endpoint.
    pub path_and_query: String,
    /// The headers to add to the request: `x-amz-date`, `x-amz-content-sha256` (S3),
    /// `x-amz-security-token` (with a session token) and `authorization`.
    pub headers: Vec<(&'static str, String)>,
    /// Step 1, kept for diagnostics (a `SignatureDoesNotMatch` answer carries the server's).
    pub canonical_request: String,
    /// Step 2.
    pub string_to_sign: String,
    /// Step 4: the hex signature.
    pub signature: String,
}

/// Signs requests for one key, region and service.
#[derive(Debug, Clone)]
pub struct Signer {
    credentials: Credentials,
    region: String,
    service: String,
    content_sha256_header: bool,
}

impl Signer {
    /// A signer for S3 in `region`: every request carries and signs `x-amz-content-sha256`.
    pub fn s3(credentials: Credentials, region: &str) -> Signer {
        Signer::new(credentials, region, "s3", true)
    }

    /// A signer for any service; `content_sha256_header` says whether the payload hash is also
    /// sent and signed as the `x-amz-content-sha256` header (S3 requires it).
    pub fn new(
        credentials: Credentials,
        region: &str,
        service: &str,
        content_sha256_header: bool,
    ) -> Signer {
        Signer {
            credentials,
            region: region.to_owned(),
            service: service.to_owned(),
            content_sha256_header,
        }
    }

    /// The key it signs with.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Signs `request` as made at `now` (the server refuses a time more than 15 minutes off
    /// its own clock).
    pub fn sign(&self, request: &Request<'_>, now: OffsetDateTime) -> Signed {
        let amz_date = amz_date(now);
        let date = &amz_date[..8];
        let added = self.added_headers(&amz_date, request.payload_sha256);
        let mut headers: Vec<(&str, &str)> = request.headers.to_vec();
        headers.extend(added.iter().map(|(name, value)| (*name, value.as_str())));
        let (canonical_headers, signed_headers) = canonical_headers(&headers);
        let path = uri_encode_path(request.path);
        let query = canonical_query(request.query);
        let canonical_request = canonical_request(
            request.method,
            &path,
            &query,
            &canonical_headers,
            &signed_headers,
            request.payload_sha256,
        );
        let scope = credential_scope(date, &self.region, &self.service);
        let string_to_sign = string_to_sign(&amz_date, &scope, &canonical_request);
        let key = signing_key(
            &self.credentials.secret_access_key,
            date,
            &self.region,
            &self.service,
        );
        let signature = signature(&key, &string_to_sign);
        let authorization = authorization(
            &self.credentials.access_key_id,
            &scope,
            &signed_headers,
            &signature,
        );
        let mut headers = added;
        headers.push(("authorization", authorization));
        let path_and_query = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        Signed {
            path_and_query,
            headers,
            canonical_request,
            string_to_sign,
            signature,
        }
    }

    /// The headers the signer sends and signs besides the caller's.
    fn added_headers(&self, amz_date: &str, payload_sha256: &str) -> Vec<(&'static str, String)> {
        let mut added = vec![("x-amz-date", amz_date.to_owned())];
        if self.content_sha256_header {
            added.push(("x-amz-content-sha256", payload_sha256.to_owned()));
        }
        if let Some(token) = &self.credentials.session_token {
            added.push(("x-amz-security-token", token.clone()));
        }
        added
    }
}

/// The hex SHA-256 of a payload, for [`Request::payload_sha256`].
pub fn payload_sha256(payload: &[u8]) -> String {
    hex(&Sha256::digest(payload))
}

/// The request time as SigV4 writes it: `YYYYMMDDTHHMMSSZ`, in UTC.
pub fn amz_date(now: OffsetDateTime) -> String {
    let t = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Percent-encodes `text` the SigV4 way: every byte but `A-Z a-z 0-9 - _ . ~` as `%XX` (upper
/// case hex), and `/` too unless `keep_slash`.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else if b == b'/' && keep_slash {
            out.push('/');
        } else {
            out.push('%');
            out.push(DIGITS[(b >> 4) as usize] as char);
            out.push(DIGITS[(b & 15) as usize] as char);
        }
    }
    out
}

/// The canonical URI of an S3 path: encoded once, `/` kept, nothing normalised. An empty path
/// is `/`.
pub fn uri_encode_path(path: &str) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        uri_encode(path, true)
    }
}

/// The canonical query string: every name and value encoded (`/` too), sorted by name, then
/// value, joined as `name=value` with `&`; a parameter without a value is `name=`.
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(name, value)| (uri_encode(name, false), uri_encode(value, false)))
        .collect();
    pairs.sort();
    let pairs: Vec<String> = pairs
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    pairs.join("&")
}

/// The canonical headers (`name:value\n` for each, sorted by lower-cased name) and the signed
/// header list (`name;name;...`). Values are trimmed and runs of spaces or tabs inside them
/// become one space; repeated names are joined with `,` in the order given.
pub fn canonical_headers(headers: &[(&str, &str)]) -> (String, String) {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let value = trim_value(value);
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            None => merged.push((name, value)),
        }
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let canonical: String = merged
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let signed: Vec<&str> = merged.iter().map(|(name, _)| name.as_str()).collect();
    (canonical, signed.join(";"))
}

/// A header value with its ends trimmed and inner runs of whitespace made one space.
fn trim_value(value: &str) -> String {
    value
        .split([' ', '\t'])
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Step 1: the canonical request. `canonical_headers` ends with its own newline, so a blank
/// line follows it, as the specification has it.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    canonical_headers: &str,
    signed_headers: &str,
    payload_sha256: &str,
) -> String {
    format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_sha256}"
    )
}

/// The credential scope: `DATE/REGION/SERVICE/aws4_request`, `DATE` as `YYYYMMDD`.
pub fn credential_scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// Step 2: the string to sign for a canonical request made at `amz_date` within `scope`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hashed = hex(&Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hashed}")
}

/// Step 3: the signing key for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// Step 4: the hex signature of `string_to_sign` under `key`.
pub fn signature(key: &[u8; 32], string_to_sign: &str) -> String {
    hex(&hmac_sha256(key, string_to_sign.as_bytes()))
}

/// Step 5: the `Authorization` header value.
pub fn authorization(
    access_key_id: &str,
    scope: &str,
    signed_headers: &str,
    signature: &str,
) -> String {
    format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// HMAC-SHA256 of `data` under `key`.
fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    //! The expected values are published by AWS (sources named per test); the request-level
    //! test suite is in `tests/sigv4.rs`.
    use super::*;

    /// AWS General Reference, "Examples of how to derive a signing key for Signature Version
    /// 4" (signature-v4-examples.html): the documented `kSigning` for these inputs.
    #[test]
    fn signing_key_matches_the_published_derivation() {
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex(&key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn the_empty_payload_hash_is_sha256_of_nothing() {
        assert_eq!(payload_sha256(b""), EMPTY_PAYLOAD_SHA256);
    }

    #[test]
    fn paths_are_encoded_once_with_slashes_kept() {
        assert_eq!(uri_encode_path("/test$file.text"), "/test%24file.text");
        assert_eq!(uri_encode_path("/b/a b+c%41"), "/b/a%20b%2Bc%2541");
        assert_eq!(uri_encode_path("/b//./../k"), "/b//./../k");
        assert_eq!(uri_encode_path("/ключ"), "/%D0%BA%D0%BB%D1%8E%D1%87");
        assert_eq!(uri_encode_path(""), "/");
    }

    #[test]
    fn query_values_encode_slashes_and_sort() {
        let query = [("prefix", "web1/"), ("list-type", "2"), ("uploads", "")];
        assert_eq!(
            canonical_query(&query),
            "list-type=2&prefix=web1%2F&uploads="
        );
        assert_eq!(
            canonical_query(&[("a", "x y"), ("a", "+")]),
            "a=%2B&a=x%20y"
        );
    }

    #[test]
    fn headers_are_lowered_trimmed_merged_and_sorted() {
        let (canonical, signed) =
            canonical_headers(&[("X-B", "  two \t words "), ("Host", "h"), ("x-b", "again")]);
        assert_eq!(canonical, "host:h\nx-b:two words,again\n");
        assert_eq!(signed, "host;x-b");
    }

    #[test]
    fn amz_date_is_utc() {
        let t = time::macros::datetime!(2013-05-24 02:00:00 +02:00);
        assert_eq!(amz_date(t), "20130524T000000Z");
    }

    #[test]
    fn credentials_hide_their_secrets_in_debug_output() {
        let c = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: Some("t0ken".into()),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("AKID"));
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("t0ken"),
            "{shown}"
        );
    }
}
