//! Shared helpers for tests that drive the built `vouch` binary against temporary trees.
#![allow(dead_code)]

pub mod docker; // a Docker daemon on its own socket
pub mod mariadb; // a MariaDB server on a unix socket
pub mod moto; // a moto S3 server on loopback, with Object Lock
pub mod podman; // podman containers from a local image
pub mod postgresql; // a PostgreSQL cluster on a unix socket
pub mod proxy; // an HTTP proxy that lies to the S3 client on purpose
pub mod s3; // a Garage S3 server on loopback
pub mod sshd; // an OpenSSH server with internal-sftp on loopback

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temporary world for one test: sources, targets, state, runtime, keys and a config.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub target: PathBuf,
    pub state: PathBuf,
    pub runtime: PathBuf,
    pub identity: PathBuf,
    pub recipient: String,
    pub config: PathBuf,
}

impl Env {
    /// Creates the directories and an identity (mode 0600) with its recipient.
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("vouch-test.")
            .tempdir()
            .unwrap();
        let root = dir.path().to_owned();
        let env = Env {
            src: root.join("src"),
            target: root.join("target"),
            state: root.join("state"),
            runtime: root.join("run"),
            identity: root.join("identity.txt"),
            config: root.join("vouch.toml"),
            recipient: String::new(),
            dir,
        };
        for d in [&env.src, &env.target] {
            fs::create_dir_all(d).unwrap();
        }
        let (secret, recipient) = vouch::pipeline::crypt::generate();
        fs::write(&env.identity, format!("{secret}\n")).unwrap();
        fs::set_permissions(&env.identity, fs::Permissions::from_mode(0o600)).unwrap();
        Env { recipient, ..env }
    }

    /// Writes a config: `backup_extra` lines go into [backup], `extra` at the end.
    pub fn write_config(&self, backup_extra: &str, extra: &str) {
        let text = format!(
            r#"[backup]
name = "test"
sources = ["{src}"]
{backup_extra}

[encryption]
recipients = ["{recipient}"]
identity = "{identity}"

[[target]]
name = "local"
path = "{target}"
{extra}
"#,
            src = self.src.display(),
            recipient = self.recipient,
            identity = self.identity.display(),
            target = self.target.display(),
        );
        fs::write(&self.config, text).unwrap();
    }

    /// A `vouch` command with this world's config and directories and no systemd around it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vouch"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env("STATE_DIRECTORY", &self.state)
            .env("RUNTIME_DIRECTORY", &self.runtime)
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("VOUCH_CONFIG")
            .env_remove("VOUCH_TEST_FAULT")
            .stdin(Stdio::null());
        cmd
    }

    /// `PREFIX... bash -c 'set -e; SETUP; exec vouch ARGS'` with this world's environment: for
    /// runs under `ulimit`, in a mount namespace (`unshare -m ...`), or as another user.
    pub fn wrapped(&self, prefix: &[&str], setup: &str, args: &[&str]) -> Command {
        let inner = self.command(args);
        let quote =
            |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
        let mut script = format!("set -e; {setup}; exec {}", quote(inner.get_program()));
        for a in inner.get_args() {
            script.push(' ');
            script.push_str(&quote(a));
        }
        let mut cmd = Command::new(prefix.first().copied().unwrap_or("bash"));
        if !prefix.is_empty() {
            cmd.args(&prefix[1..]).arg("bash");
        }
        cmd.arg("-c").arg(script).stdin(Stdio::null());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    /// Runs `vouch ARGS` with a terminal as its standard output and error, through util-linux's
    /// `script`; what the terminal got is the output's stdout (stderr included, `\r` kept).
    pub fn on_terminal(&self, args: &[&str]) -> Output {
        let inner = self.command(args);
        let quote = |s: &OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
        let mut line = quote(inner.get_program());
        for a in inner.get_args() {
            line.push(' ');
            line.push_str(&quote(a));
        }
        let mut cmd = Command::new("script");
        cmd.args(["--quiet", "--return", "--command"])
            .arg(line)
            .arg("/dev/null")
            .stdin(Stdio::null());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.output()
            .expect("util-linux's `script` is needed for terminal tests (apt-get install bsdutils)")
    }

    /// Takes the run lock the way a running backup does (flock on its own open file), held
    /// until the returned file is dropped. Taken in this process, so it is held on return.
    pub fn hold_lock(&self) -> fs::File {
        fs::create_dir_all(&self.runtime).unwrap();
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.runtime.join("lock"))
            .unwrap();
        file.try_lock()
            .expect("the lock is free before the test takes it");
        file
    }

    /// Runs `vouch ARGS` to completion.
    pub fn vouch(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Archives under their final names in `dir`, gzip (`.tar.gz.age`) and zstd (`.tar.zst.age`).
    pub fn archives_in(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let p = p.to_string_lossy();
                p.ends_with(".tar.gz.age") || p.ends_with(".tar.zst.age")
            })
            .collect();
        out.sort();
        out
    }

    /// Archives under their final names in the target.
    pub fn archives(&self) -> Vec<PathBuf> {
        Env::archives_in(&self.target)
    }

    /// Every file name in the target directory.
    pub fn target_files(&self) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(&self.target)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    /// Restores `archive` into `into` with the real `age` and `tar`, then checks
    /// `.vouch/SHA256SUMS` with the real `sha256sum`.
    pub fn stock_restore(&self, archive: &Path, into: &Path) {
        self.stock_restore_with(&format!("'{}'", archive.display()), "tar -xzf -", into);
    }

    /// Restores a split archive (`cat NAME.*`) like [`Env::stock_restore`].
    pub fn stock_restore_parts(&self, name: &Path, into: &Path) {
        self.stock_restore_with(&format!("'{}'.*", name.display()), "tar -xzf -", into);
    }

    /// `cat FILES | age -d | UNTAR -C INTO` with the stock tools (`untar` decompresses and
    /// unpacks, e.g. `zstd -d | tar -xf -`), then `sha256sum -c .vouch/SHA256SUMS` there.
    pub fn stock_restore_with(&self, files: &str, untar: &str, into: &Path) {
        fs::create_dir_all(into).unwrap();
        let script = format!(
            "set -o pipefail; cat {files} | age -d -i '{}' | {untar} -C '{}'",
            self.identity.display(),
            into.display()
        );
        bash_ok(&script);
        let out = Command::new("sha256sum")
            .args(["--quiet", "-c", ".vouch/SHA256SUMS"])
            .current_dir(into)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sha256sum -c failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The manifest of `archive`, decrypted with the real `age`.
    pub fn manifest(&self, archive: &Path) -> serde_json::Value {
        let script = format!(
            "set -o pipefail; age -d -i '{}' '{}' | tar -xzOf - .vouch/manifest.json",
            self.identity.display(),
            archive.display()
        );
        serde_json::from_slice(&bash_ok(&script).stdout).unwrap()
    }

    /// `vouch ARGS` as the unprivileged user `nobody` (setpriv drops root).
    pub fn as_nobody(&self, args: &[&str]) -> Command {
        const SETPRIV: [&str; 5] = [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--",
        ];
        self.wrapped(&SETPRIV, "true", args)
    }
}

/// Runs a bash script; panics with its stderr if it fails.
pub fn bash_ok(script: &str) -> Output {
    let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The text of a command's stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing stderr when it differs.
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}, got {:?}; stderr:\n{}",
        out.status,
        stderr(out)
    );
}

/// What a tree holds, for comparison: per relative path, a description of the entry.
pub fn describe_tree(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    describe(root, root, &mut out, &mut inodes);
    out
}

fn describe(
    root: &Path,
    path: &Path,
    out: &mut BTreeMap<Vec<u8>, String>,
    inodes: &mut BTreeMap<(u64, u64), Vec<u8>>,
) {
    let rel = path
        .strip_prefix(root)
        .unwrap()
        .as_os_str()
        .as_bytes()
        .to_vec();
    let meta = fs::symlink_metadata(path).unwrap();
    let mode = meta.mode() & 0o7777;
    let desc = if meta.file_type().is_symlink() {
        format!("symlink -> {:?}", fs::read_link(path).unwrap())
    } else if meta.is_dir() {
        format!("dir {mode:o} {}:{}", meta.uid(), meta.gid())
    } else {
        let data = fs::read(path).unwrap();
        let link = if meta.nlink() > 1 {
            let first = inodes
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| rel.clone());
            format!(" linked-with {:?}", OsStr::from_bytes(first))
        } else {
            String::new()
        };
        format!(
            "file {mode:o} {}:{} mtime {} len {} data {:?}{link}",
            meta.uid(),
            meta.gid(),
            meta.mtime(),
            data.len(),
            data
        )
    };
    out.insert(rel, desc);
    if meta.is_dir() && !meta.file_type().is_symlink() {
        let mut children: Vec<PathBuf> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        children.sort();
        for c in children {
            describe(root, &c, out, inodes);
        }
    }
}

/// The restored copy of `src` under a restore root (paths are stored relative to `/`).
pub fn restored(into: &Path, src: &Path) -> PathBuf {
    into.join(src.strip_prefix("/").unwrap())
}

/// True when running as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Bytes that gzip cannot shrink (xorshift from `seed`), so archive sizes follow source sizes.
pub fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 11) as u8
        })
        .collect()
}

/// Waits until process `pid` is stopped (state `T` in /proc), e.g. by a `stop:POINT` fault.
pub fn wait_stopped(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim().chars().next();
        match state {
            Some('T') => return,
            Some('Z') | None => panic!("vouch ended before it reached the fault point: {stat}"),
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "vouch never stopped: {stat}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Continues a stopped process (SIGCONT).
pub fn resume(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
}

/// `promtool check metrics` on a textfile; the test fails when promtool is missing.
pub fn promtool_check(path: &Path) {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no metrics textfile at {}: {e}", path.display()));
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(fs::File::open(path).unwrap())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is needed for this test (apt-get install -y prometheus): {e}")
        });
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics failed on:\n{text}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

/// The value of one series (`name{labels}`) in a textfile.
pub fn sample(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
}

/// A file made immutable (`chattr +i`), so that deleting it fails even for root; the flag is
/// cleared again on drop, also when the test fails. Needs root: fails with the reason without.
pub struct Immutable(PathBuf);

impl Immutable {
    /// Sets the flag on `path`.
    pub fn set(path: &Path) -> Immutable {
        assert!(
            is_root(),
            "this test needs root to make a file immutable (chattr +i)"
        );
        let out = Command::new("chattr").arg("+i").arg(path).output().unwrap();
        assert!(
            out.status.success(),
            "chattr +i {} failed: {}",
            path.display(),
            stderr(&out)
        );
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// The pids on this host (processes in containers included) whose argv `matches`.
pub fn pids_matching(matches: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let argv: Vec<String> = c
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                !argv.is_empty() && matches(&argv)
            })
        })
        .collect()
}

/// Makes a test CA and a certificate for localhost and 127.0.0.1 signed by it, with the real
/// `openssl`: the CA's PEM file and the server's identity, for an https server in a test.
pub fn test_certificates(dir: &Path) -> (PathBuf, native_tls::Identity) {
    let ext = dir.join("san.ext");
    fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (apt-get install openssl) is needed for the https test");
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem"],
        &["-days", "2", "-subj", "/CN=vouch test CA"],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &["-keyout", "server.key", "-out", "server.csr"],
        &["-subj", "/CN=localhost"],
    ]
    .concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    let identity = native_tls::Identity::from_pkcs8(
        &fs::read(dir.join("server.pem")).unwrap(),
        &fs::read(dir.join("server.key")).unwrap(),
    )
    .unwrap();
    (dir.join("ca.pem"), identity)
}
