//! The S3 requests vouch makes, each signed (SigV4 over the real payload) and sent over the
//! blocking `ureq` client, with the answer checked before it is believed.
//!
//! Every request that carries a body also carries its `Content-MD5`, so the server checks the
//! bytes twice (the signed payload hash, and MD5). An answer is success only when its status
//! says so **and** its body is what that request returns: a `CompleteMultipartUpload` that
//! answers 200 with an `<Error>` inside, or an upload answered without an `ETag`, is a failure.
//! Errors carry the server's own code (`NoSuchBucket`, `AccessDenied`, `SignatureDoesNotMatch`,
//! `RequestTimeTooSkewed`, ...) so that preflight can map them to exit codes and hints.
//!
//! Object bodies are read as streams ([`Client::get`]); every other answer is small and read
//! whole, up to [`SMALL_BODY`] bytes.

use super::sigv4::{payload_sha256, Credentials, Request, Signer};
use super::xml;
use base64::Engine;
use md5::{Digest, Md5};
use std::io::Read;
use std::time::Duration;
use time::OffsetDateTime;

/// The most a non-object answer may hold (a listing page of 1000 keys is about 300 KiB).
pub const SMALL_BODY: u64 = 8 << 20;

/// How the bucket appears in request URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlStyle {
    /// `ENDPOINT/BUCKET/KEY` (MinIO, Garage, Ceph, most self-hosted servers).
    Path,
    /// `BUCKET.ENDPOINT/KEY` (AWS's default).
    VirtualHost,
}

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://host[:port]` or `http://...`, without a trailing slash or path.
    pub url: String,
    /// The region requests are signed for.
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// Path or virtual-host style.
    pub style: UrlStyle,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// No answer: the connection failed, timed out or broke.
    #[error("{method} {what}: no answer from the server: {detail}")]
    Transport {
        /// The method.
        method: &'static str,
        /// The object or bucket.
        what: String,
        /// ureq's message.
        detail: String,
    },
    /// The server answered with an error.
    #[error("{method} {what}: HTTP {status}{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Status {
        /// The method.
        method: &'static str,
        /// The object or bucket.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The S3 error code from the body, when there was one.
        code: Option<String>,
        /// The server's message, or the start of its body.
        message: String,
    },
    /// The answer said success but is not what the request returns.
    #[error("{method} {what}: the answer is not what was asked for: {detail}")]
    Bad {
        /// The method.
        method: &'static str,
        /// The object or bucket.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl S3Error {
    /// The S3 error code, when the server gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            S3Error::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            S3Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An answer read whole.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a HEAD of an object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `Content-Length`.
    pub size: u64,
    /// The ETag, quotes removed.
    pub etag: String,
    /// `x-amz-version-id`, on a versioned bucket.
    pub version_id: Option<String>,
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The whole key.
    pub key: String,
    /// Its size.
    pub size: u64,
}

/// A client of one bucket with one key.
pub struct Client {
    endpoint: Endpoint,
    signer: Signer,
    agent: ureq::Agent,
    host: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The `Content-MD5` header of `body`: its MD5, base64.
pub fn content_md5(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(body))
}

/// One request before it is signed.
pub(super) struct Call<'a> {
    pub(super) method: &'static str,
    pub(super) key: Option<&'a str>,
    pub(super) query: &'a [(&'a str, &'a str)],
    pub(super) headers: &'a [(&'a str, &'a str)],
    pub(super) body: &'a [u8],
}

/// What an upload (`PutObject`, `CompleteMultipartUpload`) answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The object's ETag, quotes removed.
    pub etag: String,
    /// `x-amz-version-id`, on a versioned bucket.
    pub version_id: Option<String>,
}

impl Client {
    /// A client; `timeout` bounds each request (connect, and each read or write stall).
    pub fn new(endpoint: Endpoint, credentials: Credentials, timeout: Duration) -> Client {
        Client::with_roots(endpoint, credentials, timeout, &[])
    }

    /// A client that also trusts the CA certificates `extra_roots` (`tls-ca`) besides the
    /// system's store ([`super::tls::roots_with`]).
    pub fn with_roots(
        endpoint: Endpoint,
        credentials: Credentials,
        timeout: Duration,
        extra_roots: &[ureq::tls::Certificate<'static>],
    ) -> Client {
        let host = endpoint
            .url
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&endpoint.url)
            .to_owned();
        let host = match endpoint.style {
            UrlStyle::Path => host,
            UrlStyle::VirtualHost => format!("{}.{host}", endpoint.bucket),
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(if extra_roots.is_empty() {
                ureq::tls::RootCerts::PlatformVerifier
            } else {
                super::tls::roots_with(extra_roots).into()
            })
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_send_body(Some(timeout))
            .timeout_recv_body(Some(timeout))
            .user_agent(concat!("vouch/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build()
            .new_agent();
        Client {
            signer: Signer::s3(credentials, &endpoint.region),
            endpoint,
            agent,
            host,
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `s3://BUCKET/KEY`, as messages name an object.
    pub fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.endpoint.bucket)
    }

    /// A presigned `GET` URL of `key`, good for `expires` seconds from `now` (1 to
    /// [`super::presign::MAX_EXPIRES`]).
    pub fn presigned_get(&self, key: &str, expires: u64, now: OffsetDateTime) -> String {
        let path = self.path(Some(key));
        let get = super::presign::Get {
            host: &self.host,
            path: &path,
            region: &self.endpoint.region,
            expires,
        };
        let signed = super::presign::presign_get(self.signer.credentials(), &get, now);
        self.url(&signed.path_and_query)
    }

    /// The unencoded path of `key` (or of the bucket) as it is signed.
    fn path(&self, key: Option<&str>) -> String {
        match (self.endpoint.style, key) {
            (UrlStyle::Path, Some(k)) => format!("/{}/{k}", self.endpoint.bucket),
            (UrlStyle::Path, None) => format!("/{}", self.endpoint.bucket),
            (UrlStyle::VirtualHost, Some(k)) => format!("/{k}"),
            (UrlStyle::VirtualHost, None) => "/".to_owned(),
        }
    }

    /// What an error names: the object's URL or the bucket's.
    fn what(&self, key: Option<&str>) -> String {
        match key {
            Some(k) => self.url_of(k),
            None => format!("s3://{}", self.endpoint.bucket),
        }
    }

    /// The full URL of a signed path and query.
    fn url(&self, path_and_query: &str) -> String {
        match self.endpoint.style {
            UrlStyle::Path => format!("{}{path_and_query}", self.endpoint.url),
            UrlStyle::VirtualHost => {
                let (scheme, rest) = self
                    .endpoint
                    .url
                    .split_once("://")
                    .unwrap_or(("https", &self.endpoint.url));
                format!("{scheme}://{}.{rest}{path_and_query}", self.endpoint.bucket)
            }
        }
    }

    /// Signs and sends `call`; returns the raw response.
    pub(super) fn send(
        &self,
        call: &Call<'_>,
    ) -> Result<ureq::http::Response<ureq::Body>, S3Error> {
        let payload = payload_sha256(call.body);
        let md5 = (!call.body.is_empty() || call.method == "PUT").then(|| content_md5(call.body));
        let mut headers = vec![("host", self.host.as_str())];
        if let Some(m) = &md5 {
            headers.push(("content-md5", m.as_str()));
        }
        headers.extend_from_slice(call.headers);
        let path = self.path(call.key);
        let request = Request {
            method: call.method,
            path: &path,
            query: call.query,
            headers: &headers,
            payload_sha256: &payload,
        };
        let signed = self.signer.sign(&request, OffsetDateTime::now_utc());
        let url = self.url(&signed.path_and_query);
        let mut builder = ureq::http::Request::builder().method(call.method).uri(&url);
        for (name, value) in headers.iter().filter(|(n, _)| *n != "host") {
            builder = builder.header(*name, *value);
        }
        for (name, value) in &signed.headers {
            builder = builder.header(*name, value.as_str());
        }
        let transport = |detail: String| S3Error::Transport {
            method: call.method,
            what: self.what(call.key),
            detail,
        };
        let request = builder
            .body(call.body)
            .map_err(|e| transport(e.to_string()))?;
        self.agent
            .run(request)
            .map_err(|e| transport(e.to_string()))
    }

    /// Sends `call` and reads the whole answer; a status outside 2xx is an error with the
    /// server's code.
    pub(super) fn call(&self, call: &Call<'_>) -> Result<Answer, S3Error> {
        let mut response = self.send(call)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(SMALL_BODY)
            .read_to_vec()
            .map_err(|e| S3Error::Transport {
                method: call.method,
                what: self.what(call.key),
                detail: e.to_string(),
            })?;
        let answer = Answer {
            status,
            headers,
            body,
        };
        if (200..300).contains(&status) {
            return Ok(answer);
        }
        Err(self.status_error(call, &answer))
    }

    /// The error for an answer outside 2xx.
    pub(super) fn status_error(&self, call: &Call<'_>, answer: &Answer) -> S3Error {
        let parsed = xml::error(&answer.body);
        let message = match &parsed {
            Some(e) if !e.message.is_empty() => e.message.clone(),
            _ => String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
                .trim()
                .to_owned(),
        };
        let code = parsed.map(|e| e.code).or(match answer.status {
            404 if call.method == "HEAD" && call.key.is_none() => Some("NoSuchBucket".to_owned()),
            404 if call.method == "HEAD" => Some("NoSuchKey".to_owned()),
            403 if call.method == "HEAD" => Some("AccessDenied".to_owned()),
            _ => None,
        });
        S3Error::Status {
            method: call.method,
            what: self.what(call.key),
            status: answer.status,
            code,
            message,
        }
    }

    pub(super) fn bad(
        &self,
        method: &'static str,
        key: Option<&str>,
        detail: impl Into<String>,
    ) -> S3Error {
        S3Error::Bad {
            method,
            what: self.what(key),
            detail: detail.into(),
        }
    }

    /// `HeadBucket`: the bucket is there and this key may use it. Returns the server's `Date`,
    /// for the clock check.
    pub fn head_bucket(&self) -> Result<Option<String>, S3Error> {
        let a = self.call(&Call {
            method: "HEAD",
            key: None,
            query: &[],
            headers: &[],
            body: &[],
        })?;
        Ok(a.header("date").map(str::to_owned))
    }

    /// `PutObject` of a small body in one request; returns the ETag, which must be the body's MD5.
    pub fn put(&self, key: &str, body: &[u8], extra: &[(&str, &str)]) -> Result<String, S3Error> {
        self.put_object(key, body, extra).map(|s| s.etag)
    }

    /// [`Client::put`], returning the version id too.
    pub fn put_object(
        &self,
        key: &str,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> Result<Stored, S3Error> {
        let a = self.call(&Call {
            method: "PUT",
            key: Some(key),
            query: &[],
            headers: extra,
            body,
        })?;
        let etag = etag_of(&a).ok_or_else(|| self.bad("PUT", Some(key), "no ETag"))?;
        let md5 = hex(&Md5::digest(body));
        if etag != md5 {
            return Err(self.bad(
                "PUT",
                Some(key),
                format!("ETag {etag} is not the MD5 {md5} of what was sent"),
            ));
        }
        Ok(Stored {
            etag,
            version_id: a.header("x-amz-version-id").map(str::to_owned),
        })
    }

    /// `CreateMultipartUpload`; returns the upload id.
    pub fn create_multipart(&self, key: &str) -> Result<String, S3Error> {
        self.create_multipart_with(key, &[])
    }

    /// [`Client::create_multipart`] with extra headers (`x-amz-checksum-algorithm`).
    pub fn create_multipart_with(
        &self,
        key: &str,
        headers: &[(&str, &str)],
    ) -> Result<String, S3Error> {
        let a = self.call(&Call {
            method: "POST",
            key: Some(key),
            query: &[("uploads", "")],
            headers,
            body: &[],
        })?;
        xml::text(&a.body, "UploadId")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| self.bad("POST", Some(key), "no UploadId in the answer"))
    }

    /// `UploadPart` number `part` (from 1); returns its ETag, which must be the part's MD5.
    pub fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: u32,
        body: &[u8],
    ) -> Result<String, S3Error> {
        self.upload_part_with(key, upload_id, part, body, &[])
    }

    /// [`Client::upload_part`] with extra headers (`x-amz-checksum-sha256`).
    pub fn upload_part_with(
        &self,
        key: &str,
        upload_id: &str,
        part: u32,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<String, S3Error> {
        let n = part.to_string();
        let a = self.call(&Call {
            method: "PUT",
            key: Some(key),
            query: &[("partNumber", &n), ("uploadId", upload_id)],
            headers,
            body,
        })?;
        let etag = etag_of(&a).ok_or_else(|| self.bad("PUT", Some(key), "no ETag for a part"))?;
        let md5 = hex(&Md5::digest(body));
        if etag != md5 {
            return Err(self.bad(
                "PUT",
                Some(key),
                format!("part {part}: ETag {etag} is not the MD5 {md5} of what was sent"),
            ));
        }
        Ok(etag)
    }

    /// `CompleteMultipartUpload` with the parts' ETags in order; returns the object's ETag.
    /// An `<Error>` in a 200 answer is an error.
    pub fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<String, S3Error> {
        self.complete_multipart_with(key, upload_id, etags, None)
            .map(|s| s.etag)
    }

    /// [`Client::complete_multipart`], naming each part's SHA-256 (base64) when the upload
    /// was created with that checksum; returns the version id too.
    pub fn complete_multipart_with(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
        sha256s: Option<&[String]>,
    ) -> Result<Stored, S3Error> {
        let body = xml::complete_body_with(etags, sha256s);
        let a = self.call(&Call {
            method: "POST",
            key: Some(key),
            query: &[("uploadId", upload_id)],
            headers: &[("content-type", "application/xml")],
            body: body.as_bytes(),
        })?;
        if let Some(e) = xml::error(&a.body) {
            return Err(S3Error::Status {
                method: "POST",
                what: self.what(Some(key)),
                status: a.status,
                code: Some(e.code),
                message: format!("inside a {} answer: {}", a.status, e.message),
            });
        }
        let etag = xml::text(&a.body, "ETag")
            .map(|e| e.trim_matches('"').to_owned())
            .filter(|e| !e.is_empty())
            .ok_or_else(|| self.bad("POST", Some(key), "no ETag in the Complete answer"))?;
        Ok(Stored {
            etag,
            version_id: a.header("x-amz-version-id").map(str::to_owned),
        })
    }

    /// `AbortMultipartUpload`. An upload already gone (`NoSuchUpload`) counts as aborted.
    pub fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        match self.call(&Call {
            method: "DELETE",
            key: Some(key),
            query: &[("uploadId", upload_id)],
            headers: &[],
            body: &[],
        }) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `HeadObject`; `None` when there is no such object.
    pub fn head(&self, key: &str) -> Result<Option<Head>, S3Error> {
        let a = match self.call(&Call {
            method: "HEAD",
            key: Some(key),
            query: &[],
            headers: &[],
            body: &[],
        }) {
            Ok(a) => a,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = a
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.bad("HEAD", Some(key), "no Content-Length"))?;
        let etag = etag_of(&a).ok_or_else(|| self.bad("HEAD", Some(key), "no ETag"))?;
        Ok(Some(Head {
            size,
            etag,
            version_id: a.header("x-amz-version-id").map(str::to_owned),
        }))
    }

    /// `GetObject` as a stream of exactly `Content-Length` bytes: a body that ends early is
    /// an error when it is read, not a short object.
    pub fn get(&self, key: &str) -> Result<(u64, Box<dyn Read + Send>), S3Error> {
        let call = Call {
            method: "GET",
            key: Some(key),
            query: &[],
            headers: &[],
            body: &[],
        };
        let response = self.send(&call)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let mut response = response;
            let body = response
                .body_mut()
                .with_config()
                .limit(SMALL_BODY)
                .read_to_vec()
                .unwrap_or_default();
            let answer = Answer {
                status,
                headers: Vec::new(),
                body,
            };
            return Err(self.status_error(&call, &answer));
        }
        let size = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .ok_or_else(|| self.bad("GET", Some(key), "no Content-Length"))?;
        let reader = response
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader();
        Ok((size, Box::new(Exact::new(reader, size))))
    }

    /// `GetObject` of a small object (a receipt), read whole up to `cap` bytes.
    pub fn get_small(&self, key: &str, cap: u64) -> Result<Vec<u8>, S3Error> {
        let (size, mut reader) = self.get(key)?;
        if size > cap {
            return Err(self.bad("GET", Some(key), format!("{size} bytes, more than {cap}")));
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader
            .read_to_end(&mut out)
            .map_err(|e| self.bad("GET", Some(key), e.to_string()))?;
        Ok(out)
    }

    /// `ListObjectsV2` of every key under `prefix`, page after page.
    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                query.push(("continuation-token", t.as_str()));
            }
            let a = self.call(&Call {
                method: "GET",
                key: None,
                query: &query,
                headers: &[],
                body: &[],
            })?;
            let page = xml::list_page(&a.body).map_err(|d| {
                self.bad("GET", None, format!("a listing that does not parse: {d}"))
            })?;
            out.extend(page.objects);
            match page.next {
                Some(t) if page.truncated => token = Some(t),
                None if page.truncated => {
                    return Err(self.bad("GET", None, "a truncated listing without a token"))
                }
                _ => return Ok(out),
            }
        }
    }

    /// `ListMultipartUploads` under `prefix`: the (key, upload id) of every upload not yet
    /// completed or aborted (the first page, up to 1000: enough to find leftovers).
    pub fn list_uploads(&self, prefix: &str) -> Result<Vec<(String, String)>, S3Error> {
        let a = self.call(&Call {
            method: "GET",
            key: None,
            query: &[("uploads", ""), ("prefix", prefix)],
            headers: &[],
            body: &[],
        })?;
        xml::uploads(&a.body).map_err(|d| {
            self.bad(
                "GET",
                None,
                format!("an upload listing that does not parse: {d}"),
            )
        })
    }

    /// `DeleteObject`. Deleting a key that is not there succeeds, as S3 says.
    pub fn delete(&self, key: &str) -> Result<(), S3Error> {
        self.call(&Call {
            method: "DELETE",
            key: Some(key),
            query: &[],
            headers: &[],
            body: &[],
        })
        .map(|_| ())
    }
}

/// The ETag header without its quotes.
fn etag_of(a: &Answer) -> Option<String> {
    a.header("etag")
        .map(|e| e.trim().trim_matches('"').to_owned())
        .filter(|e| !e.is_empty())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A reader that must yield exactly `size` bytes: an early end is `UnexpectedEof`, more bytes
/// than announced is `InvalidData`.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Exact<R> {
    fn new(inner: R, size: u64) -> Exact<R> {
        Exact { inner, left: size }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut one = [0u8; 1];
            return match self.inner.read(&mut one)? {
                0 => Ok(0),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the server sent more bytes than its Content-Length",
                )),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the object ended {} bytes before its Content-Length",
                    self.left
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_reader_refuses_a_short_and_a_long_body() {
        let mut out = Vec::new();
        let e = Exact::new(&b"abc"[..], 5)
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        let mut out = Vec::new();
        let e = Exact::new(&b"abcdef"[..], 5)
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let mut out = Vec::new();
        Exact::new(&b"abcde"[..], 5).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn content_md5_is_base64_of_the_digest() {
        // MD5("") is d41d8cd98f00b204e9800998ecf8427e (RFC 1321's test suite).
        assert_eq!(hex(&Md5::digest(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }
}
