//! `vouch presign` through the built binary against a real S3 server (Garage on 127.0.0.1,
//! tests/util/s3.rs): the URL of an archive a run copied restores with the real `curl`, `age`
//! and `tar` and nothing else; once it expires the server refuses it; and every refusal (a
//! directory target, an unknown target, a missing archive, an archive without its receipt, an
//! expiry past 7 days) is a usage error that names what is wrong, with no URL printed.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use util::s3::{with_key, S3Server};
use util::{assert_code, stderr, Env};

/// An environment with an archive copied to the server; returns its name.
fn backed_up(server: &S3Server, env: &Env) -> (PathBuf, String) {
    fs::create_dir_all(env.src.join("sub")).unwrap();
    fs::write(env.src.join("a.txt"), b"alpha").unwrap();
    fs::write(env.src.join("sub/blob"), util::noise(300 << 10, 7)).unwrap();
    let creds = server.key_dir(env.dir.path());
    env.write_config("", &server.target_toml(""));
    assert_code(&with_key(env, &creds, &["run"]), 0);
    let local = env.archives().pop().unwrap();
    let name = local.file_name().unwrap().to_str().unwrap().to_owned();
    (creds, name)
}

/// The URL `vouch presign` printed: exactly one line on stdout.
fn url_of(out: &Output) -> String {
    assert_code(out, 0);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    text.trim_end().to_owned()
}

/// `curl -fsS URL | age -d -i IDENTITY | tar -xzf - -C INTO` with the real tools.
fn curl_restore(env: &Env, url: &str, into: &Path) -> Output {
    fs::create_dir_all(into).unwrap();
    let script = format!(
        "set -o pipefail; curl -fsS '{url}' | age -d -i '{}' | tar -xzf - -C '{}'",
        env.identity.display(),
        into.display()
    );
    Command::new("bash").arg("-c").arg(script).output().unwrap()
}

#[test]
fn a_presigned_url_restores_with_curl_age_and_tar_alone() {
    let server = S3Server::start();
    let env = Env::new();
    let (creds, name) = backed_up(&server, &env);
    let out = with_key(&env, &creds, &["presign", &name, "--target", "offsite"]);
    let url = url_of(&out);
    let prefix = format!("{}/{}/web1/{name}?", server.endpoint, server.bucket);
    assert!(url.starts_with(&prefix), "{url}");
    for part in [
        "X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "X-Amz-Expires=86400",
        "X-Amz-SignedHeaders=host",
        "X-Amz-Signature=",
    ] {
        assert!(url.contains(part), "{part} in {url}");
    }
    assert!(
        !url.contains(&server.secret_access_key),
        "the secret never appears"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{name} on offsite: this URL expires at")) && err.contains("(in 1d)"),
        "{err}"
    );

    let into = env.dir.path().join("restored");
    let fetched = curl_restore(&env, &url, &into);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    let restored = util::restored(&into, &env.src);
    assert_eq!(fs::read(restored.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(
        fs::read(restored.join("sub/blob")).unwrap(),
        fs::read(env.src.join("sub/blob")).unwrap()
    );
    assert_eq!(
        util::describe_tree(&restored),
        util::describe_tree(&env.src),
        "the restored tree is the source tree"
    );

    let week = url_of(&with_key(
        &env,
        &creds,
        &["presign", &name, "--target", "offsite", "--expires", "7d"],
    ));
    assert!(week.contains("X-Amz-Expires=604800"), "{week}");
}

#[test]
fn an_expired_url_is_refused_by_the_server() {
    let server = S3Server::start();
    let env = Env::new();
    let (creds, name) = backed_up(&server, &env);
    let out = with_key(
        &env,
        &creds,
        &["presign", &name, "--target", "offsite", "--expires", "1s"],
    );
    let url = url_of(&out);
    assert!(url.contains("X-Amz-Expires=1&"), "{url}");
    assert!(stderr(&out).contains("(in 1s)"), "{}", stderr(&out));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let into = env.dir.path().join("late");
    let late = curl_restore(&env, &url, &into);
    assert!(!late.status.success(), "an expired URL still fetched");
    let err = stderr(&late);
    assert!(
        err.contains("curl: (22) The requested URL returned error: 4"),
        "curl says the server refused it: {err}"
    );
    // What the server says, without -f: the URL is past its time (AWS answers 403 "Request
    // has expired", Garage 400 "Date is too old").
    let said = Command::new("curl").args(["-sS", &url]).output().unwrap();
    let body = String::from_utf8_lossy(&said.stdout).to_lowercase();
    assert!(
        body.contains("expired") || body.contains("date is too old"),
        "{body}"
    );
    assert!(
        fs::read_dir(&into).unwrap().next().is_none(),
        "nothing was restored"
    );
}

#[test]
fn presign_refuses_other_targets_missing_archives_and_long_expiries() {
    let server = S3Server::start();
    let env = Env::new();
    let (creds, name) = backed_up(&server, &env);
    let refused = |args: &[&str], code: i32, wants: &[&str]| {
        let out = with_key(&env, &creds, args);
        assert_code(&out, code);
        assert!(out.stdout.is_empty(), "no URL for {args:?}");
        let err = stderr(&out);
        for want in wants {
            assert!(err.contains(want), "{args:?}: {want:?} in {err}");
        }
    };
    refused(
        &["presign", &name, "--target", "local"],
        2,
        &[
            "--target local is a directory target",
            "S3 targets: offsite",
        ],
    );
    refused(
        &["presign", &name, "--target", "nope"],
        2,
        &["--target nope: no such target", "S3 targets: offsite"],
    );
    refused(
        &["presign", &name, "--target", "offsite", "--expires", "8d"],
        2,
        &["--expires 8d", "at most 7d"],
    );
    refused(
        &["presign", &name, "--target", "offsite", "--expires", "0s"],
        2,
        &["--expires"],
    );
    let absent = "test-20200101T000000Z.tar.gz.age";
    refused(
        &["presign", absent, "--target", "offsite"],
        2,
        &[&format!(
            "no archive {absent} on target offsite (s3://{}/web1/{absent} is not there)",
            server.bucket
        )],
    );
    refused(
        &["presign", "/etc/passwd", "--target", "offsite"],
        2,
        &["is not an archive name"],
    );
    // The archive object without its receipt is not an archive.
    server
        .client()
        .delete(&format!("web1/{name}.json"))
        .unwrap();
    refused(
        &["presign", &name, "--target", "offsite"],
        2,
        &[
            &format!("{name} on target offsite has no receipt"),
            "not an archive",
        ],
    );
    // A server that does not answer is 14, as for preflight.
    drop(server);
    refused(
        &["presign", &name, "--target", "offsite"],
        14,
        &["no answer from the server"],
    );
}
