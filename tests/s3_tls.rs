//! `tls-ca` on an S3 target, against a real S3 server (Garage on 127.0.0.1) behind a proxy
//! that serves https with a certificate from a test CA made by the real `openssl`: with the CA
//! given, the run copies and reads back the archive over https and a presigned URL fetches it
//! with `curl --cacert`; without it, preflight fails with 14 and names the certificate
//! problem; the system's store still counts beside it; a CA file that is missing or not a
//! certificate is a config error (10) naming it.

mod util;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use util::proxy::Proxy;
use util::s3::S3Server;
use util::{assert_code, stderr, Env};
use vouch::target::s3::client::{Client, Endpoint, UrlStyle};
use vouch::target::s3::sigv4::Credentials;

/// The `[[target]]` of the server's bucket at `endpoint` (https), with `extra` lines.
fn s3_target(server: &S3Server, endpoint: &str, extra: &str) -> String {
    format!(
        "[[target]]\nname = \"offsite\"\nkind = \"s3\"\nendpoint = \"{endpoint}\"\nregion = \"{}\"\nbucket = \"{}\"\nprefix = \"web1/\"\ncredential = \"offsite\"\n{extra}",
        server.region, server.bucket
    )
}

fn vouch(env: &Env, creds: &Path, args: &[&str]) -> Output {
    vouch_with_store(env, creds, None, args)
}

/// `vouch ARGS` with `store` as the system's CA bundle (`SSL_CERT_FILE`), or the real one.
fn vouch_with_store(env: &Env, creds: &Path, store: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = env.command(args);
    cmd.env("CREDENTIALS_DIRECTORY", creds)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some(store) = store {
        cmd.env("SSL_CERT_FILE", store);
    }
    cmd.output().unwrap()
}

/// Another CA, which signed nothing the server shows.
fn unrelated_ca(dir: &Path) -> PathBuf {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-keyout", "other.key", "-out", "other.pem", "-days", "2"])
        .args(["-subj", "/CN=an unrelated CA"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", stderr(&out));
    dir.join("other.pem")
}

#[test]
fn tls_ca_lets_an_https_endpoint_with_its_own_ca_through() {
    let server = S3Server::start();
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"alpha").unwrap();
    let (ca, identity) = util::test_certificates(env.dir.path());
    let proxy = Proxy::start_tls(
        &server.host,
        native_tls::TlsAcceptor::new(identity).unwrap(),
    );
    assert!(proxy.endpoint.starts_with("https://"), "{}", proxy.endpoint);
    let creds = server.key_dir(env.dir.path());

    // Without tls-ca, the system store does not know the test CA.
    env.write_config("", &s3_target(&server, &proxy.endpoint, ""));
    let out = vouch(&env, &creds, &["preflight"]);
    assert_code(&out, 14);
    let err = stderr(&out);
    assert!(err.contains("certificate verify failed"), "{err}");
    assert!(env.archives().is_empty());

    // With it, the run goes through over https.
    let line = format!("tls-ca = \"{}\"\n", ca.display());
    env.write_config("", &s3_target(&server, &proxy.endpoint, &line));
    assert_code(&vouch(&env, &creds, &["run"]), 0);
    let local = env.archives().pop().unwrap();
    let name = local.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        proxy
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("PUT ") && l.contains(&name)),
        "the archive went through the https proxy"
    );
    let client = Client::with_roots(
        Endpoint {
            url: proxy.endpoint.clone(),
            region: server.region.clone(),
            bucket: server.bucket.clone(),
            style: UrlStyle::Path,
        },
        Credentials {
            access_key_id: server.access_key_id.clone(),
            secret_access_key: server.secret_access_key.clone(),
            session_token: None,
        },
        std::time::Duration::from_secs(30),
        &vouch::target::s3::tls::read_ca(&ca).unwrap(),
    );
    let (_, mut body) = client.get(&format!("web1/{name}")).unwrap();
    let mut remote = Vec::new();
    body.read_to_end(&mut remote).unwrap();
    assert!(
        remote == fs::read(&local).unwrap(),
        "the object read back over https is the local archive"
    );

    // A presigned URL of it, over https, with curl trusting the same CA.
    let out = vouch(&env, &creds, &["presign", &name, "--target", "offsite"]);
    assert_code(&out, 0);
    let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(url.starts_with(&proxy.endpoint), "{url}");
    let into = env.dir.path().join("restored");
    fs::create_dir_all(&into).unwrap();
    let script = format!(
        "set -o pipefail; curl -fsS --cacert '{}' '{url}' | age -d -i '{}' | tar -xzf - -C '{}'",
        ca.display(),
        env.identity.display(),
        into.display()
    );
    let fetched = Command::new("bash").arg("-c").arg(script).output().unwrap();
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    assert_eq!(
        fs::read(util::restored(&into, &env.src).join("a.txt")).unwrap(),
        b"alpha"
    );

    // tls-ca adds to the system's store: with an unrelated CA as tls-ca, the server's CA in
    // the system store (SSL_CERT_FILE) still lets it through, and not without it.
    let other = unrelated_ca(env.dir.path());
    let line = format!("tls-ca = \"{}\"\n", other.display());
    env.write_config("", &s3_target(&server, &proxy.endpoint, &line));
    assert_code(
        &vouch_with_store(&env, &creds, Some(&ca), &["preflight"]),
        0,
    );
    let out = vouch(&env, &creds, &["preflight"]);
    assert_code(&out, 14);
    assert!(
        stderr(&out).contains("certificate verify failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_tls_ca_that_is_missing_or_not_a_certificate_is_a_config_error() {
    let server = S3Server::start();
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"alpha").unwrap();
    let creds = server.key_dir(env.dir.path());
    let endpoint = "https://127.0.0.1:9";
    let missing = env.dir.path().join("no-such-ca.pem");
    let line = format!("tls-ca = \"{}\"\n", missing.display());
    env.write_config("", &s3_target(&server, endpoint, &line));
    let out = vouch(&env, &creds, &["preflight"]);
    assert_code(&out, 10);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("tls-ca {} cannot be read", missing.display())),
        "{err}"
    );

    let junk = env.dir.path().join("junk.pem");
    fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let line = format!("tls-ca = \"{}\"\n", junk.display());
    env.write_config("", &s3_target(&server, endpoint, &line));
    let out = vouch(&env, &creds, &["run"]);
    assert_code(&out, 10);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "tls-ca {}: certificate 1 is not a DER certificate",
            junk.display()
        )),
        "{err}"
    );
    assert!(env.archives().is_empty(), "no archive was written");

    // tls-ca beside an http:// endpoint is refused when the config is read.
    let plain = format!("allow-http = true\n{line}");
    env.write_config("", &s3_target(&server, &server.endpoint, &plain));
    let out = vouch(&env, &creds, &["preflight"]);
    assert_code(&out, 10);
    assert!(
        stderr(&out).contains("tls-ca applies to an https:// endpoint"),
        "{}",
        stderr(&out)
    );
}
