//! A real OpenSSH server on 127.0.0.1 for the SFTP tests: Debian's `/usr/sbin/sshd` in the
//! foreground with a throwaway host key, a throwaway client key pair allowed to log in as the
//! current user, and `internal-sftp` (read-only with `-R` on request); killed when dropped,
//! and by the kernel (`setpriv --pdeathsig KILL`) when the thread that started it ends first.
//!
//! Nothing of the system's sshd is used: its own config (`-f`), no PAM, no pid file, keys and
//! `AuthorizedKeysFile` in its temporary directory. A test that cannot start it fails and says
//! what to install.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Debian's sshd.
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd with one client key.
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// The user the client logs in as (the one running the tests).
    pub user: String,
    /// The client's private key (its public half is authorized).
    pub client_key: PathBuf,
    /// A known-hosts file with the server's host key.
    pub known_hosts: PathBuf,
    /// The server's public host key line (`ssh-ed25519 AAAA...`).
    pub host_public_key: String,
    /// A directory for the test's remote files (served as any other path).
    pub root: PathBuf,
}

impl Sshd {
    /// Starts sshd with a writable `internal-sftp`.
    pub fn start() -> Sshd {
        Sshd::start_with("internal-sftp", None)
    }

    /// Starts sshd whose SFTP subsystem refuses every change (`internal-sftp -R`).
    pub fn start_read_only() -> Sshd {
        Sshd::start_with("internal-sftp -R", None)
    }

    /// Starts sshd whose SFTP subsystem is the command `subsystem` (run by the user's shell),
    /// for servers that misbehave.
    pub fn start_with_subsystem(subsystem: &str) -> Sshd {
        Sshd::start_with(subsystem, None)
    }

    /// Starts sshd in a private mount namespace (needs root) after running the shell
    /// snippet `setup` there, with `$ROOT` the remote directory: mounts it makes are seen by
    /// the server only and vanish with it.
    pub fn start_with_mounts(setup: &str) -> Sshd {
        assert!(
            super::is_root(),
            "this test needs root (a mount namespace for the server's tmpfs); run it as root, as CI does"
        );
        Sshd::start_with("internal-sftp", Some(setup))
    }

    fn start_with(subsystem: &str, setup: Option<&str>) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: apt-get install openssh-server (or run scripts/setup)"
        );
        // The privilege separation directory sshd insists on.
        fs::create_dir_all("/run/sshd").expect("cannot create /run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("vouch-sshd.")
            .tempdir()
            .unwrap();
        let host_key = dir.path().join("host_key");
        let client_key = dir.path().join("client_key");
        keygen(&host_key);
        keygen(&client_key);
        let authorized = dir.path().join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
        let root = dir.path().join("remote");
        fs::create_dir(&root).unwrap();
        let host_public_key = public_key(&host_key);
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            fs::write(
                &config,
                config_text(&host_key, &authorized, port, subsystem),
            )
            .unwrap();
            if let Some(child) = spawn(&config, &root, setup) {
                let known_hosts = dir.path().join("known_hosts");
                fs::write(
                    &known_hosts,
                    format!("[127.0.0.1]:{port} {host_public_key}\n"),
                )
                .unwrap();
                return Sshd {
                    child,
                    dir,
                    port,
                    user: current_user(),
                    client_key,
                    known_hosts,
                    host_public_key,
                    root,
                };
            }
        }
        panic!("sshd did not start on any of 5 free ports");
    }

    /// Where this server's files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id (in the mount namespace of `start_with_mounts`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new key pair the server does not know; returns the private key.
    pub fn stranger_key(&self, name: &str) -> PathBuf {
        let key = self.dir.path().join(name);
        keygen(&key);
        key
    }

    /// Another host key's public line, as a key the server does not have.
    pub fn other_host_key(&self) -> String {
        let key = self.dir.path().join("other_host_key");
        keygen(&key);
        public_key(&key)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(host_key: &Path, authorized: &Path, port: u16, subsystem: &str) -> String {
    format!(
        "ListenAddress 127.0.0.1:{port}\n\
         HostKey {host}\n\
         AuthorizedKeysFile {auth}\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         StrictModes no\n\
         UsePAM no\n\
         PidFile none\n\
         PrintMotd no\n\
         LogLevel INFO\n\
         Subsystem sftp {subsystem}\n",
        host = host_key.display(),
        auth = authorized.display(),
    )
}

/// Starts sshd (after `setup` in a private mount namespace, when given) and waits for
/// "Server listening"; `None` when it exits first (the port was taken meanwhile).
fn spawn(config: &Path, root: &Path, setup: Option<&str>) -> Option<Child> {
    // setpriv --pdeathsig: the server dies with the thread that started it, also when a
    // test times out and its thread never drops the server.
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "KILL", "--"]);
    match setup {
        None => command.arg(SSHD),
        Some(setup) => command
            .args(["unshare", "-m", "--propagation", "private", "sh", "-ec"])
            .arg(format!("{setup}\nexec {SSHD} \"$@\""))
            .arg("sh")
            .env("ROOT", root),
    };
    let mut child = command
        .args(["-D", "-e", "-f"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {SSHD} under setpriv (util-linux): {e}"));
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("Server listening on") {
                let _ = tx.send(Ok(()));
            }
            log.push_str(&line);
            log.push('\n');
        }
        let _ = tx.send(Err(log));
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(())) => Some(child),
        Ok(Err(log)) if log.contains("Address already in use") => {
            let _ = child.wait();
            None
        }
        Ok(Err(log)) => {
            let _ = child.wait();
            panic!("sshd exited at start:\n{log}");
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sshd did not say it listens within 20 s");
        }
    }
}

/// An ed25519 key pair without passphrase at `path` and `path.pub`.
pub fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "vouch-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen is missing: apt-get install openssh-client");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

/// `TYPE KEY` of a key pair's public half, without the comment.
fn public_key(private: &Path) -> String {
    let text = fs::read_to_string(private.with_extension("pub")).unwrap();
    let mut words = text.split_whitespace();
    format!("{} {}", words.next().unwrap(), words.next().unwrap())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A program for sshd's `Subsystem sftp`: it answers INIT with VERSION 3, then takes every
/// request and answers none, like a hung `sftp-server` behind a live sshd. It ends when the
/// channel closes.
pub const HUNG_SFTP_SERVER: &str = r#"#!/usr/bin/python3
import struct, sys
i, o = sys.stdin.buffer, sys.stdout.buffer
n = struct.unpack(">I", i.read(4))[0]
i.read(n)
o.write(struct.pack(">IBI", 5, 2, 3)); o.flush()
while i.read(65536):
    pass
"#;

/// Debian's own sftp-server, for subsystem scripts that serve normally.
pub const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// [`HUNG_SFTP_SERVER`] as an executable file in `dir`.
pub fn hung_sftp_server(dir: &Path) -> PathBuf {
    executable(dir, "hung-sftp-server", HUNG_SFTP_SERVER)
}

/// A subsystem that serves as [`SFTP_SERVER`] does until the file `flag` exists, and from then
/// on as [`HUNG_SFTP_SERVER`] (for new sessions).
pub fn hangs_when(dir: &Path, flag: &Path) -> PathBuf {
    assert!(
        Path::new(SFTP_SERVER).exists(),
        "{SFTP_SERVER} is missing: apt-get install openssh-server"
    );
    let hung = hung_sftp_server(dir);
    executable(
        dir,
        "sometimes-hung-sftp-server",
        &format!(
            "#!/bin/sh\nif [ -e '{}' ]; then exec '{}'; fi\nexec {SFTP_SERVER}\n",
            flag.display(),
            hung.display()
        ),
    )
}

fn executable(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}
