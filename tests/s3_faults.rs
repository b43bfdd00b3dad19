//! Servers that lie: a fault-injecting proxy (tests/util/proxy.rs) in front of a real Garage
//! makes the off-site copy meet a flipped byte on the way up and on the way down, a download
//! cut short, an error inside a 200 Complete, a part ETag that is not the part's MD5, a
//! connection dropped in the middle of a part, and a clock far off. Each lie that is not
//! repaired ends in 34 (or, for the clock, in preflight), never 0; the local archive stays,
//! no receipt object is written, and no object is left without one. A dropped connection
//! that a retry repairs ends in 0, with the copy read back like any other.

mod util;

use std::fs;
use std::path::PathBuf;
use util::proxy::{Fault, Proxy, Rule};
use util::s3::S3Server;
use util::{assert_code, stderr, Env};
use vouch::target::s3::client::{Client, Endpoint, UrlStyle};
use vouch::target::s3::sigv4::Credentials;

struct World {
    server: S3Server,
    proxy: Proxy,
    env: Env,
    creds: PathBuf,
}

fn world() -> World {
    let server = S3Server::start();
    let proxy = Proxy::start(&server.host);
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"alpha").unwrap();
    // Over two parts of 5 MiB, incompressible.
    fs::write(env.src.join("blob"), util::noise(6 << 20, 9)).unwrap();
    let creds = server.key_dir(env.dir.path());
    env.write_config(
        "",
        &server.target_in(&proxy.endpoint, &server.bucket, "part-size = \"5MiB\"\n"),
    );
    World {
        server,
        proxy,
        env,
        creds,
    }
}

impl World {
    fn run(&self) -> std::process::Output {
        self.env
            .command(&["run"])
            .env("CREDENTIALS_DIRECTORY", &self.creds)
            .output()
            .unwrap()
    }

    /// Every key in the bucket, straight from the server.
    fn keys(&self) -> Vec<String> {
        Client::new(
            Endpoint {
                url: self.server.endpoint.clone(),
                region: self.server.region.clone(),
                bucket: self.server.bucket.clone(),
                style: UrlStyle::Path,
            },
            Credentials {
                access_key_id: self.server.access_key_id.clone(),
                secret_access_key: self.server.secret_access_key.clone(),
                session_token: None,
            },
            std::time::Duration::from_secs(30),
        )
        .list("")
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect()
    }

    /// The run fails with 34, the local archive stays, the bucket holds nothing.
    fn expect_34(&self, what: &str, want: &str) {
        let out = self.run();
        assert_code(&out, 34);
        let err = stderr(&out);
        assert!(err.contains(want), "{what}: {err}");
        assert_eq!(
            self.env.archives().len(),
            1,
            "{what}: the local archive stays"
        );
        assert!(self.keys().is_empty(), "{what}: left {:?}", self.keys());
    }
}

fn rule(method: &'static str, contains: &'static str, fault: Fault, times: u32) -> Rule {
    Rule {
        method,
        contains,
        fault,
        times,
    }
}

#[test]
fn a_byte_flipped_on_the_way_up_is_refused_by_the_server() {
    let w = world();
    w.proxy.add(rule(
        "PUT",
        ".tar.gz.age?partNumber=2",
        Fault::FlipRequestBody,
        99,
    ));
    w.expect_34("flipped upload", "the off-site copy of");
}

#[test]
fn a_byte_flipped_on_the_way_down_fails_the_read_back() {
    let w = world();
    w.proxy
        .add(rule("GET", ".tar.gz.age", Fault::FlipResponseBody, 99));
    w.expect_34("flipped download", "the read-back of");
}

#[test]
fn a_download_cut_short_fails_the_read_back() {
    let w = world();
    w.proxy
        .add(rule("GET", ".tar.gz.age", Fault::TruncateResponse, 99));
    w.expect_34("truncated download", "the read-back of");
}

#[test]
fn an_error_inside_a_200_complete_is_a_failure() {
    let w = world();
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>";
    w.proxy.add(rule(
        "POST",
        "uploadId=",
        Fault::Replace(200, body.into()),
        99,
    ));
    w.expect_34("error in 200", "InternalError");
}

#[test]
fn a_part_etag_that_is_not_its_md5_is_a_failure() {
    let w = world();
    w.proxy.add(rule(
        "PUT",
        ".tar.gz.age?partNumber=1",
        Fault::Header("ETag", "\"00000000000000000000000000000000\"".into()),
        99,
    ));
    w.expect_34("wrong ETag", "is not the MD5");
}

#[test]
fn a_connection_dropped_in_every_try_of_a_part_is_exit_34_and_once_is_repaired() {
    let w = world();
    w.proxy
        .add(rule("PUT", ".tar.gz.age?partNumber=2", Fault::Drop, 99));
    w.expect_34("dropped part", "no answer from the server");
    w.proxy.clear();
    w.proxy
        .add(rule("PUT", ".tar.gz.age?partNumber=2", Fault::Drop, 1));
    let out = w.run();
    assert_code(&out, 0);
    assert_eq!(
        w.keys().len(),
        2,
        "the archive and its receipt: {:?}",
        w.keys()
    );
    let seen = w.proxy.seen.lock().unwrap();
    assert!(
        seen.iter()
            .filter(|l| l.contains(".tar.gz.age?partNumber=2"))
            .count()
            >= 3,
        "part 2 was sent again after the drop: {seen:?}"
    );
}

#[test]
fn a_server_clock_far_off_fails_preflight() {
    let w = world();
    w.proxy.add(rule(
        "HEAD",
        "",
        Fault::Header("Date", "Mon, 01 Jan 2024 00:00:00 GMT".into()),
        99,
    ));
    let out = w.run();
    assert_code(&out, 34);
    let err = stderr(&out);
    assert!(err.contains("timedatectl"), "{err}");
    assert!(w.env.archives().is_empty(), "preflight wrote nothing");
}
