//! `kind = "s3"` targets through the built binary against a real S3 server (Garage on
//! 127.0.0.1, tests/util/s3.rs): the run copies the committed archive, reads it back and only
//! then writes its receipt object; the object restores with stock tools; preflight maps a
//! missing bucket, a refused key and a missing access key file to 14, 16 and 10 and writes
//! nothing; a server that goes away after preflight ends the run with 34, the local archive kept.

mod util;

use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use util::s3::{with_key, S3Server};
use util::{assert_code, stderr, Env};

/// A credentials directory holding the access key as `offsite`.
fn key_dir(env: &Env, server: &S3Server, secret: Option<&str>) -> PathBuf {
    let dir = env.dir.path().join("credentials");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("offsite");
    fs::write(
        &file,
        format!(
            "access-key-id = \"{}\"\nsecret-access-key = \"{}\"\n",
            server.access_key_id,
            secret.unwrap_or(&server.secret_access_key)
        ),
    )
    .unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

/// The `[[target]]` of the server's bucket (or of `bucket`).
fn s3_target(server: &S3Server, bucket: &str) -> String {
    format!(
        "[[target]]\nname = \"offsite\"\nkind = \"s3\"\nendpoint = \"{}\"\nallow-http = true\nregion = \"{}\"\nbucket = \"{bucket}\"\nprefix = \"web1/\"\ncredential = \"offsite\"\npart-size = \"5MiB\"\n",
        server.endpoint, server.region
    )
}

#[test]
fn a_run_copies_the_archive_reads_it_back_and_writes_its_receipt_last() {
    let server = S3Server::start();
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"alpha").unwrap();
    // Incompressible data over two parts of 5 MiB.
    fs::write(env.src.join("blob"), util::noise(6 << 20, 5)).unwrap();
    let creds = key_dir(&env, &server, None);
    env.write_config("", &s3_target(&server, &server.bucket));
    assert_code(&with_key(&env, &creds, &["preflight"]), 0);
    assert!(server.keys().is_empty(), "preflight created no object");
    let out = with_key(&env, &creds, &["run"]);
    assert_code(&out, 0);
    let local = env.archives().pop().unwrap();
    let name = local.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(
        server.keys(),
        [format!("web1/{name}"), format!("web1/{name}.json")]
    );
    let c = server.client();
    let (_, mut body) = c.get(&format!("web1/{name}")).unwrap();
    let mut remote = Vec::new();
    std::io::Read::read_to_end(&mut body, &mut remote).unwrap();
    assert!(
        remote == fs::read(&local).unwrap(),
        "the object is the local archive, byte for byte"
    );
    let receipt: serde_json::Value =
        serde_json::from_slice(&c.get_small(&format!("web1/{name}.json"), 1 << 20).unwrap())
            .unwrap();
    assert_eq!(receipt["target"], "offsite");
    assert_eq!(receipt["archive-sha256"], hex(&Sha256::digest(&remote)));
    assert!(
        !env.state.join("s3-pending.json").exists(),
        "no upload is left recorded"
    );
    // status judges the remote offline, from the copy the run recorded.
    assert_code(&env.vouch(&["status"]), 0);
    let json: serde_json::Value =
        serde_json::from_slice(&env.vouch(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["remotes"][0]["name"], "offsite", "{json}");
    assert_eq!(
        json["remotes"][0]["last-copy"]["archive"],
        name.as_str(),
        "{json}"
    );
    fs::remove_file(env.state.join("s3-copies.json")).unwrap();
    let out = env.vouch(&["status"]);
    assert_code(&out, 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("target offsite: no copy to s3://"), "{text}");
    fs::write(
        env.state.join("s3-copies.json"),
        r#"{"offsite": {"archive": "test-20200101T000000Z.tar.gz.age", "url": "s3://b/k", "copied": "2020-01-01T00:00:00Z", "created": "2020-01-01T00:00:00Z"}}"#,
    )
    .unwrap();
    let out = env.vouch(&["status"]);
    assert_code(&out, 2);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("the newest archive copied to it"), "{text}");
    // The stock restore: the object's bytes through age and tar.
    let fetched = env.dir.path().join("fetched.age");
    fs::write(&fetched, &remote).unwrap();
    let into = env.dir.path().join("r");
    env.stock_restore(&fetched, &into);
    assert_eq!(
        fs::read(util::restored(&into, &env.src).join("a.txt")).unwrap(),
        b"alpha"
    );
}

#[test]
fn preflight_maps_a_missing_bucket_a_refused_key_and_a_missing_key_file() {
    let server = S3Server::start();
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"alpha").unwrap();
    let creds = key_dir(&env, &server, None);
    env.write_config("", &s3_target(&server, "no-such-bucket"));
    let out = with_key(&env, &creds, &["run"]);
    assert_code(&out, 14);
    assert!(
        stderr(&out).contains("Create the bucket no-such-bucket"),
        "{}",
        stderr(&out)
    );

    env.write_config("", &s3_target(&server, &server.bucket));
    let wrong = key_dir(
        &env,
        &server,
        Some("00000000000000000000000000000000000000000000000000000000000000ff"),
    );
    let out = with_key(&env, &wrong, &["preflight"]);
    assert_code(&out, 16);
    assert!(
        stderr(&out).contains("refused the access key"),
        "{}",
        stderr(&out)
    );

    fs::remove_file(wrong.join("offsite")).unwrap();
    let out = with_key(&env, &wrong, &["run"]);
    assert_code(&out, 10);
    assert!(
        stderr(&out).contains("/etc/vouch/credentials/offsite"),
        "{}",
        stderr(&out)
    );
    assert!(
        env.archives().is_empty(),
        "no failed preflight wrote an archive"
    );
    assert!(server.keys().is_empty());
}

#[test]
fn a_server_gone_after_preflight_is_exit_34_with_the_local_archive_kept() {
    let server = S3Server::start();
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"alpha").unwrap();
    let creds = key_dir(&env, &server, None);
    env.write_config("", &s3_target(&server, &server.bucket));
    let child = env
        .command(&["run"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("VOUCH_TEST_FAULT", "stop:before-offsite")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_stopped(child.id());
    drop(server);
    util::resume(child.id());
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 34);
    let err = stderr(&out);
    assert!(err.contains("the off-site copy of"), "{err}");
    assert!(err.contains("local archive is kept"), "{err}");
    assert_eq!(
        env.archives().len(),
        1,
        "the local archive is committed and stays"
    );
}

/// The archive objects among `keys` whose receipt object is not there.
fn without_receipt(keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter(|k| !k.ends_with(".json") && !keys.contains(&format!("{k}.json")))
        .cloned()
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_copy_killed_at_any_point_is_settled_by_the_next_run_and_never_counted() {
    let server = S3Server::start();
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"alpha").unwrap();
    fs::write(env.src.join("blob"), util::noise(6 << 20, 6)).unwrap();
    let creds = key_dir(&env, &server, None);
    env.write_config("", &s3_target(&server, &server.bucket));
    let c = server.client();
    for point in ["s3-after-create", "s3-after-part", "s3-before-receipt"] {
        let out = env
            .command(&["run"])
            .env("CREDENTIALS_DIRECTORY", &creds)
            .env("VOUCH_TEST_FAULT", format!("kill:{point}"))
            .output()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9),
            "{point}: {}",
            stderr(&out)
        );
        let orphans = without_receipt(&server.keys());
        assert!(
            env.state.join("s3-pending.json").exists(),
            "{point}: the copy is recorded"
        );
        if point == "s3-before-receipt" {
            assert_eq!(orphans.len(), 1, "the object is there, without its receipt");
        } else {
            assert!(
                orphans.is_empty(),
                "{point}: nothing appears before Complete: {orphans:?}"
            );
            assert!(
                !c.list_uploads("web1/").unwrap().is_empty(),
                "{point}: an upload is open"
            );
        }
        // The next run settles what the killed one left, then copies its own archive.
        let out = with_key(&env, &creds, &["run"]);
        assert_code(&out, 0);
        assert!(
            c.list_uploads("web1/").unwrap().is_empty(),
            "{point}: the upload was aborted"
        );
        let left = server.keys();
        let receipts = left.iter().filter(|k| k.ends_with(".json")).count();
        assert_eq!(
            left.len(),
            2 * receipts,
            "{point}: every object has its receipt: {left:?}"
        );
        assert!(
            !env.state.join("s3-pending.json").exists(),
            "{point}: nothing left recorded"
        );
    }
    assert_eq!(server.keys().len(), 6, "three settled runs, three copies");
}

#[test]
fn an_archive_too_large_for_one_s3_object_is_18_at_preflight() {
    let server = S3Server::start();
    let env = Env::new();
    // A sparse 6 TiB file: the sources' size is the estimate before any archive exists.
    let big = fs::File::create(env.src.join("disk.img")).unwrap();
    big.set_len(6 << 40).unwrap();
    let creds = server.key_dir(env.dir.path());
    env.write_config("", &server.target_toml(""));
    let out = with_key(&env, &creds, &["preflight", "--json"]);
    assert!(!out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let remote = rows["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("{rows}"))
        .iter()
        .find(|r| r["target"] == "offsite")
        .unwrap_or_else(|| panic!("{rows}"));
    assert_eq!(remote["exit-code"], 18, "{remote}");
    assert!(
        remote["detail"]
            .as_str()
            .unwrap()
            .contains("one S3 object may hold"),
        "{remote}"
    );
    assert!(server.keys().is_empty(), "nothing was sent");
}
