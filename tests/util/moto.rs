//! moto, the S3 server for the Object Lock tests: started on a free port of 127.0.0.1 per test,
//! with SigV4 checked, one bucket created with Object Lock enabled and one without, stopped when
//! dropped.
//!
//! moto 5.2.5 is the one loopback server with Object Lock and object versions (Garage has
//! neither). It checks signatures only in its IAM mode: `INITIAL_NO_AUTH_ACTION_COUNT` lets the
//! first calls through unsigned (they create an IAM user, its access key and an allow-all
//! policy), and every later request must be signed with that key. It does **not** check
//! `Content-MD5`, `x-amz-checksum-*` or the signed payload hash, so the integrity tests stay on
//! Garage (tests/util/s3.rs). `scripts/setup` installs it with pip into a virtualenv outside the
//! repository; a test that cannot start it fails and says how to install it.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The moto release the tests run against.
pub const MOTO_VERSION: &str = "5.2.5";

/// The virtualenv `scripts/setup` installs it into.
pub const MOTO_VENV: &str = "/var/cache/vouch-test/moto/venv";

/// How many unsigned calls the set-up makes before moto checks every signature.
const UNSIGNED_CALLS: u32 = 3;

/// How long the server gets to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The set-up, in moto's own Python (boto3 comes with `moto[server]`): the IAM user, its key
/// and an allow-all policy (the unsigned calls), then the two buckets with that key, then a
/// check that a wrong secret is refused. Prints the key id and the secret.
const SET_UP: &str = r#"
import sys, boto3
ep, locked, plain = sys.argv[1:4]
iam = boto3.client("iam", endpoint_url=ep, region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="vouch-test")
key = iam.create_access_key(UserName="vouch-test")["AccessKey"]
iam.put_user_policy(UserName="vouch-test", PolicyName="all", PolicyDocument=
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}')
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
s3.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
s3.create_bucket(Bucket=plain)
bad = boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                   aws_access_key_id=key["AccessKeyId"], aws_secret_access_key="wrong")
try:
    bad.list_buckets()
    sys.exit("moto accepted a wrong secret: it is not checking signatures")
except bad.exceptions.ClientError as e:
    if e.response["Error"]["Code"] != "SignatureDoesNotMatch":
        sys.exit("a wrong secret got %r, not SignatureDoesNotMatch" % e.response["Error"])
print(key["AccessKeyId"], key["SecretAccessKey"])
"#;

/// A running moto with two buckets and one key allowed everything.
pub struct Moto {
    child: Child,
    log: tempfile::NamedTempFile,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The region requests are signed for.
    pub region: String,
    /// A bucket created with Object Lock enabled (and so versioned), no default retention.
    pub locked_bucket: String,
    /// A bucket without Object Lock.
    pub plain_bucket: String,
    /// The IAM user's key id.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
}

impl Moto {
    /// Starts moto on a free loopback port and sets up the key and the buckets. Panics, naming
    /// what to install, when moto is missing.
    pub fn start() -> Moto {
        let bin = venv_bin();
        let port = free_port();
        let log = tempfile::Builder::new()
            .prefix("vouch-moto.")
            .suffix(".log")
            .tempfile()
            .unwrap();
        let child = Command::new(bin.join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", UNSIGNED_CALLS.to_string())
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}/moto_server: {e}", bin.display()));
        let mut moto = Moto {
            child,
            log,
            endpoint: format!("http://127.0.0.1:{port}"),
            host: format!("127.0.0.1:{port}"),
            region: "us-east-1".to_owned(),
            locked_bucket: "vouch-locked".to_owned(),
            plain_bucket: "vouch-plain".to_owned(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
        };
        moto.wait_listening(port);
        let out = Command::new(bin.join("python"))
            .args([
                "-c",
                SET_UP,
                &moto.endpoint,
                &moto.locked_bucket,
                &moto.plain_bucket,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "setting up moto failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            moto.log_tail()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        moto.access_key_id = words.next().expect("the key id").to_owned();
        moto.secret_access_key = words.next().expect("the secret").to_owned();
        moto
    }

    fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("moto exited during start-up: {status}{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "moto did not listen on port {port} within {START_TIMEOUT:?}{}",
                self.log_tail()
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// Every version of every object in `bucket` (delete markers left out), as
    /// `(key, version id)`, from `ListObjectVersions` (which vouch's client does not send).
    pub fn versions(&self, bucket: &str) -> Vec<(String, String)> {
        const LIST: &str = r#"
import sys, boto3
ep, key, secret, bucket = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                  aws_access_key_id=key, aws_secret_access_key=secret)
for v in s3.list_object_versions(Bucket=bucket).get("Versions", []):
    print(v["Key"], v["VersionId"])
"#;
        let out = Command::new(venv_bin().join("python"))
            .args([
                "-c",
                LIST,
                &self.endpoint,
                &self.access_key_id,
                &self.secret_access_key,
                bucket,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "listing the versions in {bucket}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = self.log.reopen() {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(3000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        format!("\n--- moto log (end) ---\n{}", &text[start..])
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The virtualenv's `bin`: `$VOUCH_TEST_MOTO_VENV`, else [`MOTO_VENV`]. Panics with the
/// install command when `moto_server` is not in it.
fn venv_bin() -> PathBuf {
    let venv = std::env::var_os("VOUCH_TEST_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MOTO_VENV));
    let bin = venv.join("bin");
    if bin.join("moto_server").is_file() && bin.join("python").exists() {
        return bin;
    }
    panic!(
        "the Object Lock tests need moto {MOTO_VERSION} and found no {}/moto_server: run \
         scripts/setup, which installs it with `python3 -m venv {MOTO_VENV} && \
         {MOTO_VENV}/bin/pip install 'moto[server]=={MOTO_VERSION}'`",
        bin.display()
    );
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
