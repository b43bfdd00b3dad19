//! The SigV4 signer against AWS's published test vectors: the Signature Version 4 test suite
//! (tests/data/sigv4/, see its README for the source and the cases left out) and the S3
//! examples of the Amazon S3 API Reference. Every expected value is AWS's, none is the
//! signer's own output.

use std::fs;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use vouch::target::s3::sigv4::{payload_sha256, Credentials, Request, Signer};

/// One case of the test suite, read from its folder.
struct Case {
    name: String,
    signer: Signer,
    now: OffsetDateTime,
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigv4/aws-signing-test-suite")
}

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
}

/// Decodes `%XX` escapes (the suite's request lines carry some).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The signer, time and credentials a case's context.json gives.
fn context(dir: &Path) -> (Signer, OffsetDateTime) {
    let ctx: serde_json::Value = serde_json::from_str(&read(dir, "context.json")).unwrap();
    let creds = &ctx["credentials"];
    let credentials = Credentials {
        access_key_id: creds["access_key_id"].as_str().unwrap().into(),
        secret_access_key: creds["secret_access_key"].as_str().unwrap().into(),
        session_token: creds["token"].as_str().map(String::from),
    };
    let signer = Signer::new(
        credentials,
        ctx["region"].as_str().unwrap(),
        ctx["service"].as_str().unwrap(),
        ctx["sign_body"].as_bool().unwrap(),
    );
    let stamp = ctx["timestamp"].as_str().unwrap();
    let now = OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).unwrap();
    (signer, now)
}

/// Reads a case: request.txt is `METHOD TARGET HTTP/1.1`, `Name:value` lines, and after a
/// blank line the body. The target may hold spaces (get-space-*).
fn load(name: &str) -> Case {
    let dir = suite_dir().join(name);
    let (signer, now) = context(&dir);
    let request = read(&dir, "request.txt");
    let (head, body) = match request.split_once("\n\n") {
        Some((head, body)) => (head, body.as_bytes().to_vec()),
        None => (request.as_str(), Vec::new()),
    };
    let mut lines = head.lines();
    let first = lines.next().unwrap();
    let (method, rest) = first.split_once(' ').unwrap();
    let (target, _version) = rest.rsplit_once(' ').unwrap();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    Case {
        name: name.to_owned(),
        signer,
        now,
        method: method.to_owned(),
        path: percent_decode(path),
        query,
        headers,
        body,
    }
}

/// Signs a case and compares every step with the suite's expected files.
fn check(case: &Case) {
    let dir = suite_dir().join(&case.name);
    let query: Vec<(&str, &str)> = case.query.iter().map(|(k, v)| (&**k, &**v)).collect();
    let headers: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (&**k, &**v)).collect();
    let payload = payload_sha256(&case.body);
    let request = Request {
        method: &case.method,
        path: &case.path,
        query: &query,
        headers: &headers,
        payload_sha256: &payload,
    };
    let signed = case.signer.sign(&request, case.now);
    let name = &case.name;
    assert_eq!(
        signed.canonical_request,
        read(&dir, "header-canonical-request.txt"),
        "{name}: canonical request"
    );
    assert_eq!(
        signed.string_to_sign,
        read(&dir, "header-string-to-sign.txt"),
        "{name}: string to sign"
    );
    assert_eq!(
        signed.signature,
        read(&dir, "header-signature.txt"),
        "{name}: signature"
    );
    let expected = read(&dir, "header-signed-request.txt");
    let expected = expected
        .lines()
        .find_map(|l| l.strip_prefix("Authorization:"))
        .unwrap();
    let authorization = &signed.headers.last().unwrap();
    assert_eq!(authorization.0, "authorization");
    assert_eq!(authorization.1, expected, "{name}: Authorization");
}

#[test]
fn every_vendored_case_of_the_aws_test_suite_signs_as_published() {
    let mut names: Vec<String> = fs::read_dir(suite_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        30,
        "cases vendored in tests/data/sigv4: {names:?}"
    );
    for name in &names {
        check(&load(name));
    }
}

#[test]
fn the_signer_adds_date_payload_hash_and_token_headers() {
    let case = load("get-vanilla-with-session-token");
    let request = Request {
        method: "GET",
        path: "/",
        query: &[],
        headers: &[("Host", "example.amazonaws.com")],
        payload_sha256: vouch::target::s3::sigv4::EMPTY_PAYLOAD_SHA256,
    };
    let signed = case.signer.sign(&request, case.now);
    let names: Vec<&str> = signed.headers.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["x-amz-date", "x-amz-security-token", "authorization"]
    );
    assert_eq!(signed.headers[0].1, "20150830T123600Z");
}

// The S3 examples: Amazon S3 API Reference, "Authenticating Requests: Using the Authorization
// Header (AWS Signature Version 4)", section "Examples: Signature Calculations"
// (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html). Key
// AKIAIOSFODNN7EXAMPLE, region us-east-1, 20130524T000000Z, bucket examplebucket
// (virtual-hosted style, so the path is the key).

const S3_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const S3_HOST: &str = "examplebucket.s3.amazonaws.com";

fn s3_signer() -> Signer {
    let credentials = Credentials {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: S3_SECRET.into(),
        session_token: None,
    };
    Signer::s3(credentials, "us-east-1")
}

fn s3_time() -> OffsetDateTime {
    time::macros::datetime!(2013-05-24 00:00:00 UTC)
}

/// The documented `Authorization` header, which the page writes without spaces after commas.
fn s3_authorization(signed_headers: &str, signature: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
         SignedHeaders={signed_headers},Signature={signature}"
    )
}

fn signed_authorization(signed: &vouch::target::s3::sigv4::Signed) -> String {
    signed.headers.last().unwrap().1.replace(", ", ",")
}

/// "Example: GET Object": the first 10 bytes of test.txt.
#[test]
fn s3_example_get_object() {
    let empty = payload_sha256(b"");
    let request = Request {
        method: "GET",
        path: "/test.txt",
        query: &[],
        headers: &[("Host", S3_HOST), ("Range", "bytes=0-9")],
        payload_sha256: &empty,
    };
    let signed = s3_signer().sign(&request, s3_time());
    assert_eq!(
        signed.canonical_request,
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
         x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        signed.string_to_sign,
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
         7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    );
    assert_eq!(
        signed_authorization(&signed),
        s3_authorization(
            "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        )
    );
    assert_eq!(signed.path_and_query, "/test.txt");
}

/// "Example: PUT Object": "Welcome to Amazon S3." as test$file.text, whose `$` is encoded once.
#[test]
fn s3_example_put_object() {
    let payload = payload_sha256(b"Welcome to Amazon S3.");
    assert_eq!(
        payload,
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    );
    let request = Request {
        method: "PUT",
        path: "/test$file.text",
        query: &[],
        headers: &[
            ("Host", S3_HOST),
            ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ],
        payload_sha256: &payload,
    };
    let signed = s3_signer().sign(&request, s3_time());
    assert_eq!(
        signed.canonical_request,
        "PUT\n/test%24file.text\n\ndate:Fri, 24 May 2013 00:00:00 GMT\n\
         host:examplebucket.s3.amazonaws.com\n\
         x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n\
         x-amz-date:20130524T000000Z\nx-amz-storage-class:REDUCED_REDUNDANCY\n\n\
         date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n\
         44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    );
    assert_eq!(
        signed.string_to_sign,
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
         9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d"
    );
    assert_eq!(
        signed_authorization(&signed),
        s3_authorization(
            "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        )
    );
    assert_eq!(signed.path_and_query, "/test%24file.text");
}

/// "Example: GET Bucket Lifecycle": a query parameter without a value signs as `lifecycle=`.
#[test]
fn s3_example_get_bucket_lifecycle() {
    let empty = payload_sha256(b"");
    let request = Request {
        method: "GET",
        path: "/",
        query: &[("lifecycle", "")],
        headers: &[("Host", S3_HOST)],
        payload_sha256: &empty,
    };
    let signed = s3_signer().sign(&request, s3_time());
    assert_eq!(
        signed.canonical_request,
        "GET\n/\nlifecycle=\nhost:examplebucket.s3.amazonaws.com\n\
         x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         x-amz-date:20130524T000000Z\n\nhost;x-amz-content-sha256;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        signed.string_to_sign,
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
         9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca"
    );
    assert_eq!(
        signed_authorization(&signed),
        s3_authorization(
            "host;x-amz-content-sha256;x-amz-date",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        )
    );
}

/// "Example: Get Bucket (List Objects)": `max-keys=2&prefix=J`, given out of order here.
#[test]
fn s3_example_list_objects() {
    let empty = payload_sha256(b"");
    let request = Request {
        method: "GET",
        path: "/",
        query: &[("prefix", "J"), ("max-keys", "2")],
        headers: &[("Host", S3_HOST)],
        payload_sha256: &empty,
    };
    let signed = s3_signer().sign(&request, s3_time());
    assert_eq!(
        signed.canonical_request,
        "GET\n/\nmax-keys=2&prefix=J\nhost:examplebucket.s3.amazonaws.com\n\
         x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         x-amz-date:20130524T000000Z\n\nhost;x-amz-content-sha256;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        signed.string_to_sign,
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
         df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7"
    );
    assert_eq!(
        signed_authorization(&signed),
        s3_authorization(
            "host;x-amz-content-sha256;x-amz-date",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        )
    );
    assert_eq!(signed.path_and_query, "/?max-keys=2&prefix=J");
}
