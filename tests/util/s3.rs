//! A real S3-compatible server on 127.0.0.1 for the tests: Garage, with a throwaway
//! configuration, data directory, access key and bucket, killed and removed when dropped.
//!
//! Garage verifies what AWS verifies on an upload (the SigV4 signature, the signed payload
//! SHA-256, `Content-MD5`, `x-amz-checksum-*`), so a request it accepts was signed right and
//! its body arrived intact. It is built once from crates.io into a cache outside the repository
//! by `scripts/setup`. A test that cannot start it fails and says what to install; it never
//! passes without a server.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The Garage release the tests run against.
pub const GARAGE_VERSION: &str = "2.5.0";

/// Where `scripts/setup` installs it (`cargo install --root`).
pub const GARAGE_CACHE: &str = "/var/cache/vouch-test/garage-2.5.0/bin/garage";

/// How long the server gets to come up and take its layout.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Garage with one bucket and one key that owns it.
pub struct S3Server {
    child: Child,
    dir: tempfile::TempDir,
    binary: PathBuf,
    /// `http://127.0.0.1:PORT`: path-style requests go to `ENDPOINT/BUCKET/KEY`.
    pub endpoint: String,
    /// `127.0.0.1:PORT`, the `Host` header that requests carry and sign.
    pub host: String,
    /// The region the server signs in.
    pub region: String,
    /// The throwaway bucket, empty at the start.
    pub bucket: String,
    /// The key's id (`GK` and 24 hex digits).
    pub access_key_id: String,
    /// The key's secret.
    pub secret_access_key: String,
}

impl S3Server {
    /// Starts Garage on free loopback ports and gives it a layout, a key (allowed to create
    /// buckets) and a bucket. Panics, naming what to install, when Garage is missing.
    pub fn start() -> S3Server {
        let binary = garage_binary();
        let dir = tempfile::Builder::new()
            .prefix("vouch-s3.")
            .tempdir()
            .unwrap();
        let [s3_port, rpc_port] = free_ports();
        let config = dir.path().join("garage.toml");
        fs::write(&config, garage_config(dir.path(), s3_port, rpc_port)).unwrap();
        let log = fs::File::create(dir.path().join("garage.log")).unwrap();
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut server = S3Server {
            child,
            dir,
            binary,
            endpoint: format!("http://127.0.0.1:{s3_port}"),
            host: format!("127.0.0.1:{s3_port}"),
            region: "garage".to_owned(),
            bucket: "vouch-test".to_owned(),
            access_key_id: format!("GK{}", random_hex(12)),
            secret_access_key: random_hex(32),
        };
        server.set_up(s3_port);
        server
    }

    /// Waits for the node, applies a one-node layout, imports the key and creates the bucket.
    fn set_up(&mut self, s3_port: u16) {
        let deadline = Instant::now() + START_TIMEOUT;
        self.retry_until(deadline, &["status"]);
        let node = self.garage(&["node", "id", "-q"]);
        let node = String::from_utf8_lossy(&node.stdout);
        let node = node.trim().split('@').next().unwrap().to_owned();
        self.retry_until(
            deadline,
            &["layout", "assign", "-z", "dc1", "-c", "1G", &node],
        );
        self.retry_until(deadline, &["layout", "apply", "--version", "1"]);
        let (id, secret) = (self.access_key_id.clone(), self.secret_access_key.clone());
        self.retry_until(
            deadline,
            &["key", "import", "--yes", "-n", "vouch-test", &id, &secret],
        );
        self.retry_until(deadline, &["key", "allow", "--create-bucket", &id]);
        let bucket = self.bucket.clone();
        self.retry_until(deadline, &["bucket", "create", &bucket]);
        self.retry_until(
            deadline,
            &[
                "bucket", "allow", "--read", "--write", "--owner", &bucket, "--key", &id,
            ],
        );
        while TcpStream::connect(("127.0.0.1", s3_port)).is_err() {
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "Garage's S3 API did not listen on port {s3_port}{}",
                self.log_tail()
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// Runs `garage ARGS` against this server; panics with its output when it fails.
    pub fn garage(&self, args: &[&str]) -> Output {
        let out = self.garage_command(args);
        assert!(
            out.status.success(),
            "garage {}: {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        out
    }

    fn garage_command(&self, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `garage ARGS` until it succeeds (the node takes a moment to accept each step).
    fn retry_until(&mut self, deadline: Instant, args: &[&str]) {
        loop {
            let out = self.garage_command(args);
            if out.status.success() {
                return;
            }
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "garage {} kept failing for {START_TIMEOUT:?}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
            sleep(Duration::from_millis(200));
        }
    }

    /// Panics with the server's log when it has exited.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("Garage exited during start-up: {status}{}", self.log_tail());
        }
    }

    /// The end of the server's log, for failure messages.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.path().join("garage.log")) {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        format!("\n--- garage.log (end) ---\n{}", &text[start..])
    }

    /// The URL of an encoded path and query ([`Signed::path_and_query`]) on this server.
    ///
    /// [`Signed::path_and_query`]: vouch::target::s3::sigv4::Signed::path_and_query
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.endpoint)
    }

    /// A credentials directory under `dir` holding the server's access key as `offsite`.
    pub fn key_dir(&self, dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let creds = dir.join("credentials");
        fs::create_dir_all(&creds).unwrap();
        let file = creds.join("offsite");
        fs::write(
            &file,
            format!(
                "access-key-id = \"{}\"\nsecret-access-key = \"{}\"\n",
                self.access_key_id, self.secret_access_key
            ),
        )
        .unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        creds
    }

    /// The `[[target]]` "offsite" of the server's bucket under `web1/`, plus `extra` lines.
    pub fn target_toml(&self, extra: &str) -> String {
        self.target_in(&self.endpoint, &self.bucket, extra)
    }

    /// The `[[target]]` "offsite" of `bucket` under `web1/`, reached at `endpoint` (http: the
    /// server itself, or a proxy in front of it), plus `extra` lines.
    pub fn target_in(&self, endpoint: &str, bucket: &str, extra: &str) -> String {
        format!(
            "[[target]]\nname = \"offsite\"\nkind = \"s3\"\nendpoint = \"{endpoint}\"\nallow-http = true\nregion = \"{}\"\nbucket = \"{bucket}\"\nprefix = \"web1/\"\ncredential = \"offsite\"\n{extra}",
            self.region
        )
    }

    /// A client of the server's bucket with its key.
    pub fn client(&self) -> vouch::target::s3::client::Client {
        use vouch::target::s3::client::{Client, Endpoint, UrlStyle};
        Client::new(
            Endpoint {
                url: self.endpoint.clone(),
                region: self.region.clone(),
                bucket: self.bucket.clone(),
                style: UrlStyle::Path,
            },
            vouch::target::s3::sigv4::Credentials {
                access_key_id: self.access_key_id.clone(),
                secret_access_key: self.secret_access_key.clone(),
                session_token: None,
            },
            Duration::from_secs(30),
        )
    }

    /// Every key under `web1/`.
    pub fn keys(&self) -> Vec<String> {
        self.client()
            .list("web1/")
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Garage binary: `$VOUCH_TEST_GARAGE`, else the cache `scripts/setup` fills, else `garage`
/// on `PATH`. Panics with the install command when none is there.
fn garage_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("VOUCH_TEST_GARAGE") {
        return PathBuf::from(path);
    }
    if Path::new(GARAGE_CACHE).is_file() {
        return PathBuf::from(GARAGE_CACHE);
    }
    if let Ok(out) = Command::new("garage").arg("--version").output() {
        if out.status.success() {
            return PathBuf::from("garage");
        }
    }
    panic!(
        "the S3 tests need Garage {GARAGE_VERSION} and found none (not in $VOUCH_TEST_GARAGE, \
         {GARAGE_CACHE} or PATH): run scripts/setup, which builds it once with \
         `cargo install garage --version {GARAGE_VERSION} --locked --root \
         /var/cache/vouch-test/garage-{GARAGE_VERSION}` (8 minutes on 2 idle cores, half an hour on busy ones)"
    );
}

/// A one-node Garage configuration with everything under `dir`.
fn garage_config(dir: &Path, s3_port: u16, rpc_port: u16) -> String {
    format!(
        r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"
"#,
        dir = dir.display(),
        secret = random_hex(32),
    )
}

/// Two distinct ports nothing listens on right now, never handed out before in this process.
///
/// They come from 20000-32767, below Linux's default range of ephemeral ports (32768-60999), so
/// no client socket of any process can hold one by chance between this check and Garage's bind;
/// and a port is handed out once per process, so a server never gets the port of one that an
/// earlier test stopped and that may still be shutting down (its peers would answer Garage's
/// RPC with "No handler / shutting down").
fn free_ports() -> [u16; 2] {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut seed = u16::from_str_radix(&random_hex(2), 16).unwrap();
    let mut pick = || loop {
        seed = seed.wrapping_mul(25173).wrapping_add(13849);
        let port = 20000 + seed % 12768;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    };
    let a = pick();
    let b = pick();
    [a, b]
}

/// `bytes` random bytes as hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    vouch::pipeline::io::hex(&buf)
}

/// `vouch ARGS` in `env` with the access keys in `creds` as `$CREDENTIALS_DIRECTORY`.
pub fn with_key(env: &super::Env, creds: &Path, args: &[&str]) -> Output {
    env.command(args)
        .env("CREDENTIALS_DIRECTORY", creds)
        .output()
        .unwrap()
}
