//! The SigV4 signer against a real S3 server (Garage on 127.0.0.1, tests/util/s3.rs), with
//! nothing but the signer and ureq: a bucket is created, an object PUT with `Content-MD5` and
//! its signed payload hash and read back byte for byte, and requests the server must refuse
//! are refused: one signed with a wrong secret (403, for its signature), one whose body is
//! not the one signed (400, for its payload hash).

mod util;

use base64::Engine;
use md5::{Digest, Md5};
use time::OffsetDateTime;
use util::s3::S3Server;
use vouch::target::s3::sigv4::{payload_sha256, Credentials, Request, Signer};

/// What the server answered.
struct Answer {
    status: u16,
    etag: Option<String>,
    body: Vec<u8>,
}

/// A client of one server with one key.
struct Client<'a> {
    server: &'a S3Server,
    signer: Signer,
    agent: ureq::Agent,
}

impl<'a> Client<'a> {
    /// A client with the server's key, or with its id and `secret` instead of the real one.
    fn new(server: &'a S3Server, secret: Option<&str>) -> Client<'a> {
        let credentials = Credentials {
            access_key_id: server.access_key_id.clone(),
            secret_access_key: secret.unwrap_or(&server.secret_access_key).to_owned(),
            session_token: None,
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .new_agent();
        Client {
            server,
            signer: Signer::s3(credentials, &server.region),
            agent,
        }
    }

    /// Signs and sends one request: `headers` besides `host` are the caller's (signed too),
    /// `signed_body` is what the payload hash covers and `sent_body` what goes out (the same
    /// unless a test tampers with it).
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        signed_body: &[u8],
        sent_body: &[u8],
    ) -> Answer {
        let payload = payload_sha256(signed_body);
        let mut all = vec![("host", self.server.host.as_str())];
        all.extend_from_slice(headers);
        let request = Request {
            method,
            path,
            query: &[],
            headers: &all,
            payload_sha256: &payload,
        };
        let signed = self.signer.sign(&request, OffsetDateTime::now_utc());
        let url = self.server.url(&signed.path_and_query);
        let extra = headers
            .iter()
            .map(|(n, v)| (*n, v.to_string()))
            .chain(signed.headers.iter().map(|(n, v)| (*n, v.clone())));
        let response = match method {
            "PUT" => {
                let mut r = self.agent.put(&url);
                for (name, value) in extra {
                    r = r.header(name, value);
                }
                r.send(sent_body)
            }
            "GET" => {
                let mut r = self.agent.get(&url);
                for (name, value) in extra {
                    r = r.header(name, value);
                }
                r.call()
            }
            other => panic!("no {other} in this test"),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let etag = response
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        Answer {
            status: response.status().as_u16(),
            etag,
            body: response.body_mut().read_to_vec().unwrap(),
        }
    }

    fn put(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        self.send("PUT", path, headers, body, body)
    }

    fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], b"", b"")
    }
}

/// The `Content-MD5` header of `body`: its MD5, base64.
fn content_md5(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(body))
}

/// 1 MiB and a bit of bytes that are not all alike.
fn payload() -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..(1 << 20) + 123)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn text(answer: &Answer) -> String {
    String::from_utf8_lossy(&answer.body).into_owned()
}

#[test]
fn a_signed_upload_reads_back_and_bad_signatures_are_refused() {
    let server = S3Server::start();
    let client = Client::new(&server, None);

    // CreateBucket, signed with the empty payload's hash.
    let made = client.put("/vouch-signing", &[], b"");
    assert_eq!(made.status, 200, "CreateBucket: {}", text(&made));

    // A key that needs encoding (space, '+', '$', non-ASCII): signed and sent encoded once.
    let path = "/vouch-signing/web1/test 1+$ä.tar.gz.age";
    let body = payload();
    let md5 = content_md5(&body);
    let put = client.put(path, &[("content-md5", &md5)], &body);
    assert_eq!(put.status, 200, "PutObject: {}", text(&put));
    let md5_hex = vouch::pipeline::io::hex(&Md5::digest(&body));
    assert_eq!(put.etag.as_deref(), Some(format!("\"{md5_hex}\"").as_str()));

    let got = client.get(path);
    assert_eq!(got.status, 200, "GetObject: {}", text(&got));
    assert!(
        got.body == body,
        "GetObject returned {} bytes, not the {} put",
        got.body.len(),
        body.len()
    );

    // The same object in the bucket the server was started with.
    let fixture = format!("/{}/plain", server.bucket);
    let put = client.put(&fixture, &[("content-md5", &content_md5(b"x"))], b"x");
    assert_eq!(
        put.status,
        200,
        "PutObject into {}: {}",
        server.bucket,
        text(&put)
    );

    // A wrong secret: refused, and for the signature. AWS answers `SignatureDoesNotMatch`;
    // Garage answers `AccessDenied` with "Invalid signature" (the key id itself is valid).
    let stranger = Client::new(&server, Some(&"0".repeat(64)));
    let refused = stranger.get(path);
    assert_eq!(
        refused.status,
        403,
        "a wrong secret got: {}",
        text(&refused)
    );
    let code = element(&refused, "Code");
    let message = element(&refused, "Message").to_lowercase();
    assert!(
        code == "SignatureDoesNotMatch"
            || (code == "AccessDenied" && message.contains("signature")),
        "a wrong secret was refused for another reason: {}",
        text(&refused)
    );

    // A body that is not the one whose hash was signed (its Content-MD5 matches it, so only
    // the signed payload hash can tell): refused, and nothing is stored.
    let other = "/vouch-signing/tampered";
    let mut tampered = body.clone();
    tampered[1000] ^= 1;
    let md5 = content_md5(&tampered);
    let answer = client.send("PUT", other, &[("content-md5", &md5)], &body, &tampered);
    assert_eq!(
        answer.status,
        400,
        "a body unlike its signed hash got: {}",
        text(&answer)
    );
    let code = element(&answer, "Code");
    assert!(
        ["XAmzContentSHA256Mismatch", "InvalidDigest", "BadDigest"].contains(&code.as_str()),
        "{}",
        text(&answer)
    );
    assert_eq!(client.get(other).status, 404);
}

/// The text of the first `<NAME>` element of an S3 error body, or "".
fn element(answer: &Answer, name: &str) -> String {
    let body = text(answer);
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    body.split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&close))
        .map(|(inner, _)| inner.to_owned())
        .unwrap_or_default()
}
