//! The S3 client against a real server (Garage on 127.0.0.1, tests/util/s3.rs): bucket and
//! object requests, a multipart upload whose ETag is checked against the parts sent, listings
//! across pages, and the server's own error codes for a missing bucket, a wrong key and a
//! missing object.

mod util;

use std::io::Read;
use std::time::Duration;
use util::s3::S3Server;
use vouch::target::s3::client::{Client, Endpoint, UrlStyle};
use vouch::target::s3::sigv4::Credentials;
use vouch::target::s3::upload::{self, Progress};

fn client(server: &S3Server, bucket: &str, secret: Option<&str>) -> Client {
    Client::new(
        Endpoint {
            url: server.endpoint.clone(),
            region: server.region.clone(),
            bucket: bucket.to_owned(),
            style: UrlStyle::Path,
        },
        Credentials {
            access_key_id: server.access_key_id.clone(),
            secret_access_key: secret.unwrap_or(&server.secret_access_key).to_owned(),
            session_token: None,
        },
        Duration::from_secs(30),
    )
}

/// Bytes that are not all alike.
fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

#[derive(Default)]
struct Seen {
    upload_id: Option<String>,
    sent: Vec<u64>,
}

impl Progress for Seen {
    fn started(&mut self, upload_id: &str) {
        self.upload_id = Some(upload_id.to_owned());
    }
    fn sent(&mut self, sent: u64) {
        self.sent.push(sent);
    }
}

#[test]
fn objects_go_up_come_back_are_listed_and_deleted() {
    let server = S3Server::start();
    let c = client(&server, &server.bucket, None);
    assert!(
        c.head_bucket().unwrap().is_some(),
        "HeadBucket carries the server's Date"
    );
    let small = data(1000, 7);
    c.put("web1/a.json", &small, &[]).unwrap();
    assert_eq!(c.get_small("web1/a.json", 4096).unwrap(), small);
    assert!(c.get_small("web1/a.json", 10).is_err(), "the cap holds");
    let head = c.head("web1/a.json").unwrap().unwrap();
    assert_eq!(head.size, 1000);
    assert_eq!(c.head("web1/nothing").unwrap(), None);
    let e = c.get_small("web1/nothing", 10).unwrap_err();
    assert_eq!(e.code(), Some("NoSuchKey"), "{e}");

    // A multipart upload of 12 MiB and a bit in 5 MiB parts: three parts, checked ETag.
    let big = data((12 << 20) + 12345, 11);
    let mut seen = Seen::default();
    let up = upload::upload(
        &c,
        "web1/b.tar.gz.age",
        &mut &big[..],
        big.len() as u64,
        5 << 20,
        &mut seen,
    )
    .unwrap();
    assert_eq!(up.parts, 3);
    assert!(up.etag.ends_with("-3"), "{}", up.etag);
    assert!(seen.upload_id.is_some());
    assert_eq!(seen.sent.last(), Some(&(big.len() as u64)));
    let (size, mut r) = c.get("web1/b.tar.gz.age").unwrap();
    assert_eq!(size, big.len() as u64);
    let mut back = Vec::new();
    r.read_to_end(&mut back).unwrap();
    assert!(back == big, "the object reads back byte for byte");

    // A listing across pages: Garage pages at 1000 keys, so 1003 small objects.
    for i in 0..1003 {
        c.put(&format!("many/{i:04}"), b"x", &[]).unwrap();
    }
    let listed = c.list("many/").unwrap();
    assert_eq!(listed.len(), 1003);
    assert_eq!(listed[1002].key, "many/1002");
    let web1 = c.list("web1/").unwrap();
    let keys: Vec<&str> = web1.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(keys, ["web1/a.json", "web1/b.tar.gz.age"]);
    c.delete("web1/a.json").unwrap();
    assert_eq!(c.head("web1/a.json").unwrap(), None);
}

#[test]
fn an_aborted_upload_leaves_no_object_and_errors_carry_the_servers_code() {
    let server = S3Server::start();
    let c = client(&server, &server.bucket, None);
    let id = c.create_multipart("web1/c").unwrap();
    c.upload_part("web1/c", &id, 1, &data(1 << 20, 3)).unwrap();
    assert_eq!(
        c.head("web1/c").unwrap(),
        None,
        "nothing appears before Complete"
    );
    c.abort_multipart("web1/c", &id).unwrap();
    c.abort_multipart("web1/c", &id).unwrap();
    assert_eq!(c.head("web1/c").unwrap(), None);
    // Completing with a wrong ETag is refused.
    let id = c.create_multipart("web1/d").unwrap();
    c.upload_part("web1/d", &id, 1, &data(1 << 20, 4)).unwrap();
    let e = c
        .complete_multipart("web1/d", &id, &["00000000000000000000000000000000".into()])
        .unwrap_err();
    assert!(e.status().is_some(), "{e}");

    let missing = client(&server, "no-such-bucket", None);
    let e = missing.head_bucket().unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let e = missing.list("x/").unwrap_err();
    assert_eq!(e.code(), Some("NoSuchBucket"), "{e}");
    let wrong = client(
        &server,
        &server.bucket,
        Some("0000000000000000000000000000000000000000000000000000000000000000"),
    );
    let e = wrong.put("web1/e", b"x", &[]).unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.code().is_some(), "{e}");
}
