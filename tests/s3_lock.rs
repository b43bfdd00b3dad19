//! Object Lock, the checksum read-back level and `x-amz-checksum-sha256`, against real servers:
//! moto on 127.0.0.1 (tests/util/moto.rs: Object Lock and versions, SigV4 checked) and Garage
//! (tests/util/s3.rs: digests verified). A locked archive's version cannot be deleted; the lock
//! is set only after the read-back passed, so an archive whose download was corrupted is
//! deleted and never locked; a bucket without Object Lock fails preflight with 14;
//! `readback = "checksum"` copies without a download and `status` warns until a full verify is
//! recorded; Garage verifies `x-amz-checksum-sha256` on every part, moto does not, and a server
//! that refuses the checksum headers is probed again without them; a copy killed before its
//! lock is deleted by its version.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;
use util::moto::Moto;
use util::proxy::{Fault, Proxy, Rule};
use util::s3::S3Server;
use util::{assert_code, stderr, Env};
use vouch::config::LockMode;
use vouch::target::s3::client::{Client, Endpoint, UrlStyle};
use vouch::target::s3::sigv4::Credentials;
use vouch::target::s3::upload::checksum_sha256;

fn client(url: &str, region: &str, bucket: &str, id: &str, secret: &str) -> Client {
    Client::new(
        Endpoint {
            url: url.to_owned(),
            region: region.to_owned(),
            bucket: bucket.to_owned(),
            style: UrlStyle::Path,
        },
        Credentials {
            access_key_id: id.to_owned(),
            secret_access_key: secret.to_owned(),
            session_token: None,
        },
        std::time::Duration::from_secs(30),
    )
}

fn moto_client(m: &Moto, bucket: &str) -> Client {
    client(
        &m.endpoint,
        &m.region,
        bucket,
        &m.access_key_id,
        &m.secret_access_key,
    )
}

fn garage_client(g: &S3Server) -> Client {
    client(
        &g.endpoint,
        &g.region,
        &g.bucket,
        &g.access_key_id,
        &g.secret_access_key,
    )
}

/// A world with sources, a local target and an access key file for `id`/`secret`.
fn world(id: &str, secret: &str) -> (Env, PathBuf) {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"alpha").unwrap();
    fs::write(env.src.join("blob"), util::noise(6 << 20, 11)).unwrap();
    let creds = env.dir.path().join("credentials");
    fs::create_dir_all(&creds).unwrap();
    let file = creds.join("offsite");
    fs::write(
        &file,
        format!("access-key-id = \"{id}\"\nsecret-access-key = \"{secret}\"\n"),
    )
    .unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    (env, creds)
}

fn target(endpoint: &str, region: &str, bucket: &str, extra: &str) -> String {
    format!(
        "[[target]]\nname = \"offsite\"\nkind = \"s3\"\nendpoint = \"{endpoint}\"\nallow-http = true\nregion = \"{region}\"\nbucket = \"{bucket}\"\nprefix = \"web1/\"\ncredential = \"offsite\"\npart-size = \"5MiB\"\n{extra}"
    )
}

fn run(env: &Env, creds: &PathBuf, args: &[&str]) -> Output {
    env.command(args)
        .env("CREDENTIALS_DIRECTORY", creds)
        .output()
        .unwrap()
}

fn archive_name(env: &Env) -> String {
    let local = env.archives().pop().expect("a local archive");
    local.file_name().unwrap().to_str().unwrap().to_owned()
}

const LOCK: &str = "object-lock = { mode = \"compliance\", days = 2 }\n";

#[test]
fn the_lock_primitives_against_moto_and_a_locked_version_cannot_be_deleted() {
    let m = Moto::start();
    let locked = moto_client(&m, &m.locked_bucket);
    let plain = moto_client(&m, &m.plain_bucket);
    let config = locked
        .lock_configuration()
        .unwrap()
        .expect("a lock configuration");
    assert!(config.enabled, "{config:?}");
    assert_eq!(config.default_retention, None);
    assert_eq!(plain.lock_configuration().unwrap(), None);

    // A bucket and an object without lock: no retention.
    plain.put("k", b"plain", &[]).unwrap();
    assert_eq!(plain.retention("k").unwrap(), None);
    let stored = locked.put_object("k", b"locked", &[]).unwrap();
    let version = stored
        .version_id
        .expect("a versioned bucket names the version");
    assert_eq!(locked.retention("k").unwrap(), None, "not locked yet");

    let until = vouch::target::s3::copy::retain_until(1);
    locked
        .put_retention("k", Some(&version), LockMode::Compliance, &until)
        .unwrap();
    let (mode, got) = locked.retention("k").unwrap().expect("a retention");
    assert_eq!(mode, LockMode::Compliance);
    assert_eq!(
        got.trim_end_matches('Z').split('.').next(),
        until.trim_end_matches('Z').split('.').next(),
        "{got} vs {until}"
    );

    let e = locked.delete_version("k", &version).unwrap_err();
    assert_eq!(e.code(), Some("AccessDenied"), "{e}");
    assert_eq!(e.status(), Some(403), "{e}");
    let head = locked.head("k").unwrap().expect("the locked object stays");
    assert_eq!(head.version_id.as_deref(), Some(version.as_str()));
    assert_eq!(
        m.versions(&m.locked_bucket),
        [("k".to_owned(), version.clone())]
    );

    // An unlocked version goes for good.
    let other = locked.put_object("u", b"free", &[]).unwrap();
    locked
        .delete_version("u", other.version_id.as_deref().unwrap())
        .unwrap();
    assert_eq!(locked.head("u").unwrap(), None);
}

#[test]
fn a_run_locks_the_archive_and_its_receipt_after_the_read_back() {
    let m = Moto::start();
    let (env, creds) = world(&m.access_key_id, &m.secret_access_key);
    env.write_config("", &target(&m.endpoint, &m.region, &m.locked_bucket, LOCK));
    let out = run(&env, &creds, &["preflight"]);
    assert_code(&out, 0);
    let out = run(&env, &creds, &["run"]);
    assert_code(&out, 0);
    let name = archive_name(&env);
    let c = moto_client(&m, &m.locked_bucket);
    for key in [format!("web1/{name}"), format!("web1/{name}.json")] {
        let (mode, until) = c
            .retention(&key)
            .unwrap()
            .unwrap_or_else(|| panic!("{key} is locked"));
        assert_eq!(mode, LockMode::Compliance, "{key}");
        let until = vouch::target::archives::parse_time(&until).expect(&until);
        let days = (until - time::OffsetDateTime::now_utc()).whole_hours();
        assert!((47..=48).contains(&days), "{key} locked for {days} hours");
        let version = c.head(&key).unwrap().unwrap().version_id.unwrap();
        let e = c.delete_version(&key, &version).unwrap_err();
        assert_eq!(e.code(), Some("AccessDenied"), "{key}: {e}");
    }
    let copies: serde_json::Value =
        serde_json::from_slice(&fs::read(env.state.join("s3-copies.json")).unwrap()).unwrap();
    assert_eq!(copies["offsite"]["readback"], "full", "{copies}");
    assert_eq!(copies["offsite"]["archive"], name.as_str());
}

#[test]
fn an_archive_whose_download_was_corrupted_is_deleted_and_never_locked() {
    let m = Moto::start();
    let proxy = Proxy::start(&m.host);
    let (env, creds) = world(&m.access_key_id, &m.secret_access_key);
    env.write_config(
        "",
        &target(&proxy.endpoint, &m.region, &m.locked_bucket, LOCK),
    );
    proxy.add(Rule {
        method: "GET",
        contains: ".tar.gz.age",
        fault: Fault::FlipResponseBody,
        times: 10,
    });
    let out = run(&env, &creds, &["run"]);
    assert_code(&out, 34);
    assert!(
        stderr(&out).contains("the read-back of s3://"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.archives().len(), 1, "the local archive stays");
    assert_eq!(
        m.versions(&m.locked_bucket),
        [],
        "the corrupted archive's version is deleted, not hidden behind a delete marker"
    );
    let seen = proxy.seen.lock().unwrap();
    assert!(
        !seen.iter().any(|l| l.contains("retention")),
        "no retention was set: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("GET ") && l.contains(".tar.gz.age")),
        "{seen:?}"
    );
}

#[test]
fn a_copy_killed_before_its_lock_is_deleted_by_version_by_the_next_run() {
    let m = Moto::start();
    let (env, creds) = world(&m.access_key_id, &m.secret_access_key);
    env.write_config("", &target(&m.endpoint, &m.region, &m.locked_bucket, LOCK));
    let out = env
        .command(&["run"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("VOUCH_TEST_FAULT", "kill:s3-before-receipt")
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "{}",
        stderr(&out)
    );
    let left = m.versions(&m.locked_bucket);
    assert_eq!(
        left.len(),
        1,
        "the archive, unlocked and without receipt: {left:?}"
    );
    assert_eq!(
        moto_client(&m, &m.locked_bucket)
            .retention(&left[0].0)
            .unwrap(),
        None,
        "not locked before its receipt would be written"
    );
    assert_code(&run(&env, &creds, &["run"]), 0);
    let now: Vec<String> = m
        .versions(&m.locked_bucket)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        now.len(),
        2,
        "only the new archive and its receipt: {now:?}"
    );
    assert!(
        !now.contains(&left[0].0),
        "the killed run's version is gone: {now:?}"
    );
}

#[test]
fn object_lock_on_a_bucket_without_it_is_14_naming_the_bucket() {
    let m = Moto::start();
    let (env, creds) = world(&m.access_key_id, &m.secret_access_key);
    env.write_config("", &target(&m.endpoint, &m.region, &m.plain_bucket, LOCK));
    for args in [&["preflight"][..], &["run"]] {
        let out = run(&env, &creds, args);
        assert_code(&out, 14);
        let err = stderr(&out);
        assert!(err.contains("does not have Object Lock enabled"), "{err}");
        assert!(
            err.contains("the bucket vouch-plain has no Object Lock"),
            "{err}"
        );
    }
    assert!(moto_client(&m, &m.plain_bucket)
        .list("")
        .unwrap()
        .is_empty());
    // Garage has no Object Lock at all: also 14.
    let g = S3Server::start();
    let (env, creds) = world(&g.access_key_id, &g.secret_access_key);
    env.write_config("", &target(&g.endpoint, &g.region, &g.bucket, LOCK));
    let out = run(&env, &creds, &["preflight"]);
    assert_code(&out, 14);
    assert!(
        stderr(&out).contains("the bucket vouch-test has no Object Lock"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_checksum_readback_copies_without_a_download_and_status_warns_until_a_full_verify() {
    let g = S3Server::start();
    let proxy = Proxy::start(&g.host);
    let (env, creds) = world(&g.access_key_id, &g.secret_access_key);
    env.write_config(
        "",
        &target(
            &proxy.endpoint,
            &g.region,
            &g.bucket,
            "readback = \"checksum\"\n",
        ),
    );
    let out = run(&env, &creds, &["run"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("checked by its digests, not read back"),
        "{}",
        stderr(&out)
    );
    let name = archive_name(&env);
    {
        let seen = proxy.seen.lock().unwrap();
        // Retention lists the bucket and reads receipts; the archive itself is never fetched.
        let download = format!("GET /{}/web1/{name} ", g.bucket);
        assert!(
            !seen.iter().any(|l| l.starts_with(&download)),
            "no download: {seen:?}"
        );
        // Preflight found the checksum taken, so every part carried it.
        assert!(
            seen.iter()
                .any(|l| l.starts_with("PUT ") && l.contains("partNumber=2")),
            "{seen:?}"
        );
    }
    let keys: Vec<String> = garage_client(&g)
        .list("web1/")
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(keys, [format!("web1/{name}"), format!("web1/{name}.json")]);
    let copies: serde_json::Value =
        serde_json::from_slice(&fs::read(env.state.join("s3-copies.json")).unwrap()).unwrap();
    assert_eq!(copies["offsite"]["readback"], "checksum", "{copies}");

    let out = env.vouch(&["status"]);
    assert_code(&out, 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("only checked by its digests"), "{text}");
    assert!(text.contains(&name), "{text}");
    // A full verify of that archive on that target, recorded as VerifyLog records it.
    let mut log = vouch::target::archives::VerifyLog::load(&env.state);
    log.insert(
        "offsite",
        &name,
        vouch::target::archives::VerifyRecord {
            verified_at: "2026-12-01T00:00:00Z".into(),
            ok: true,
            detail: None,
            restore_test: false,
        },
    );
    log.save(&env.state).unwrap();
    let out = env.vouch(&["status"]);
    assert_code(&out, 0);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("only checked by its digests"));
}

#[test]
fn garage_verifies_the_part_sha256_and_moto_takes_it_unchecked() {
    let g = S3Server::start();
    let c = garage_client(&g);
    let id = c
        .create_multipart_with("m", &[("x-amz-checksum-algorithm", "SHA256")])
        .unwrap();
    let wrong = checksum_sha256(b"w");
    let e = c
        .upload_part_with("m", &id, 1, b"v", &[("x-amz-checksum-sha256", &wrong)])
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert_eq!(
        e.code(),
        Some("InvalidDigest"),
        "Garage refuses a wrong part checksum: {e}"
    );
    let right = checksum_sha256(b"v");
    c.upload_part_with("m", &id, 1, b"v", &[("x-amz-checksum-sha256", &right)])
        .unwrap();
    c.abort_multipart("m", &id).unwrap();
    let e = c
        .put("p", b"v", &[("x-amz-checksum-sha256", &wrong)])
        .unwrap_err();
    assert_eq!(
        e.status(),
        Some(400),
        "Garage refuses a wrong PutObject checksum: {e}"
    );
    // Garage has no Object Lock: no configuration, no retention (it answers 501).
    assert_eq!(c.lock_configuration().unwrap(), None);
    c.put("p", b"v", &[]).unwrap();
    assert_eq!(c.retention("p").unwrap(), None);

    let m = Moto::start();
    let c = moto_client(&m, &m.plain_bucket);
    let id = c
        .create_multipart_with("m", &[("x-amz-checksum-algorithm", "SHA256")])
        .unwrap();
    c.upload_part_with("m", &id, 1, b"v", &[("x-amz-checksum-sha256", &wrong)])
        .expect("moto 5.2.5 does not check a part's checksum");
    c.abort_multipart("m", &id).unwrap();
}

#[test]
fn a_multipart_copy_with_part_checksums_completes_on_garage_and_moto() {
    let g = S3Server::start();
    let (env, creds) = world(&g.access_key_id, &g.secret_access_key);
    env.write_config("", &target(&g.endpoint, &g.region, &g.bucket, ""));
    let out = run(&env, &creds, &["preflight"]);
    assert_code(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("with x-amz-checksum-sha256"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_code(&run(&env, &creds, &["run"]), 0);

    let m = Moto::start();
    let (env, creds) = world(&m.access_key_id, &m.secret_access_key);
    env.write_config("", &target(&m.endpoint, &m.region, &m.plain_bucket, ""));
    assert_code(&run(&env, &creds, &["run"]), 0);
    let name = archive_name(&env);
    let head = moto_client(&m, &m.plain_bucket)
        .head(&format!("web1/{name}"))
        .unwrap()
        .unwrap();
    assert!(head.etag.ends_with("-2"), "two parts: {}", head.etag);
}

#[test]
fn a_server_that_refuses_the_checksum_headers_gets_copies_without_them() {
    let g = S3Server::start();
    let proxy = Proxy::start(&g.host);
    let (env, creds) = world(&g.access_key_id, &g.secret_access_key);
    env.write_config("", &target(&proxy.endpoint, &g.region, &g.bucket, ""));
    // The probe's first Create (the one with x-amz-checksum-algorithm) is refused as a
    // provider without the header refuses it.
    proxy.add(Rule {
        method: "POST",
        contains: ".vouch-probe?uploads",
        fault: Fault::Replace(
            400,
            "<Error><Code>InvalidArgument</Code><Message>Unsupported header 'x-amz-checksum-algorithm'</Message></Error>".into(),
        ),
        times: 1,
    });
    let out = run(&env, &creds, &["preflight"]);
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(without x-amz-checksum-sha256)"), "{text}");
    let seen = proxy.seen.lock().unwrap().clone();
    let creates = seen
        .iter()
        .filter(|l| l.starts_with("POST ") && l.contains(".vouch-probe?uploads"))
        .count();
    assert_eq!(creates, 2, "tried with, then without: {seen:?}");
    // A key the server refuses is not taken for a missing checksum feature.
    proxy.add(Rule {
        method: "POST",
        contains: ".vouch-probe?uploads",
        fault: Fault::Replace(
            403,
            "<Error><Code>AccessDenied</Code><Message>no</Message></Error>".into(),
        ),
        times: 1,
    });
    assert_code(&run(&env, &creds, &["preflight"]), 16);
}

#[test]
fn retention_deletes_an_unlocked_archive_by_version_and_keeps_a_locked_one() {
    let m = Moto::start();
    let (env, creds) = world(&m.access_key_id, &m.secret_access_key);
    let bucket = &m.locked_bucket;
    let keep_one = "keep = { last = 1 }\n";
    // Two copies without a lock: the run's retention deletes the older one by its version,
    // so no version of it stays behind a delete marker.
    env.write_config("", &target(&m.endpoint, &m.region, bucket, keep_one));
    assert_code(&run(&env, &creds, &["run"]), 0);
    let a = archive_name(&env);
    assert_code(&run(&env, &creds, &["run"]), 0);
    let b = archive_name(&env);
    let versioned = |name: &str| {
        m.versions(bucket)
            .iter()
            .any(|(k, _)| k.starts_with(&format!("web1/{name}")))
    };
    assert!(
        !versioned(&a),
        "{a} is gone with every version: {:?}",
        m.versions(bucket)
    );
    assert!(versioned(&b));
    // Locked copies from now on: the unlocked one goes, the locked older one stays.
    env.write_config(
        "",
        &target(&m.endpoint, &m.region, bucket, &format!("{LOCK}{keep_one}")),
    );
    assert_code(&run(&env, &creds, &["run"]), 0);
    let c = archive_name(&env);
    assert_code(&run(&env, &creds, &["run"]), 0);
    let d = archive_name(&env);
    assert!(!versioned(&b), "{b} was not locked and goes");
    assert!(versioned(&c) && versioned(&d));
    let out = run(&env, &creds, &["prune", "--target", "offsite", "--dry-run"]);
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(&c))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with("keep") && line.contains("locked until"),
        "{text}"
    );
    let out = run(&env, &creds, &["prune", "--target", "offsite"]);
    assert_code(&out, 0);
    assert!(versioned(&c), "a locked archive is never deleted");
}
