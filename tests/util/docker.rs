//! A throwaway Docker daemon for tests (Debian's docker.io, installed by `scripts/setup`):
//! `dockerd` on its own socket, with its data root, exec root and managed containerd in a
//! temporary directory, no bridge and no iptables, the vfs storage driver, and container
//! rlimits at or below this host's (a root without `CAP_SYS_RESOURCE` cannot raise them). The
//! image is the same local tarball as podman's (see [`super::podman::rootfs_tar`]). Set
//! [`Docker::env`] (`DOCKER_HOST`) on every command, vouch's too. Dropping it removes the
//! containers and stops the daemon.

use super::stderr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The image every container runs.
pub const IMAGE: &str = "localhost/vouch-test-rootfs";

/// A private `dockerd` with one imported image.
pub struct Docker {
    dir: tempfile::TempDir,
    daemon: Child,
    containers: std::cell::RefCell<Vec<String>>,
}

impl Docker {
    /// Starts the daemon, waits for it, and imports the image.
    pub fn new() -> Docker {
        assert!(
            std::path::Path::new("/usr/sbin/dockerd").exists(),
            "dockerd is needed: run scripts/setup (apt-get install docker.io)"
        );
        assert!(super::is_root(), "the container tests run as root");
        let dir = tempfile::Builder::new()
            .prefix("vouch-docker.")
            .tempdir()
            .unwrap();
        let d = dir.path().display().to_string();
        let log = std::fs::File::create(format!("{d}/dockerd.log")).unwrap();
        let daemon = Command::new("dockerd")
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
                "--default-ulimit=nofile=1024:1024",
                "--default-ulimit=nproc=1000:1000",
            ])
            .arg(format!("--data-root={d}/root"))
            .arg(format!("--exec-root={d}/exec"))
            .arg(format!("--pidfile={d}/docker.pid"))
            .arg(format!("--host=unix://{d}/docker.sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let docker = Docker {
            dir,
            daemon,
            containers: Default::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !docker.run(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                std::fs::read_to_string(format!("{d}/dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let tar = super::podman::rootfs_tar(docker.dir.path());
        docker.ok(&["import", &tar, IMAGE]);
        docker
    }

    /// `DOCKER_HOST` for this daemon, for docker and for vouch.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![(
            "DOCKER_HOST",
            format!("unix://{}/docker.sock", self.dir.path().display()),
        )]
    }

    /// Runs `docker ARGS` against this daemon.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("docker");
        cmd.args(args).stdin(Stdio::null());
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Runs `docker ARGS` and returns its stdout; panics when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Starts container `name` (no network, the host's /usr read-only) running `argv` as root;
    /// it is removed when this is dropped.
    pub fn start(&self, name: &str, argv: &[&str]) {
        self.containers.borrow_mut().push(name.to_owned());
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "-v",
            "/usr:/usr:ro",
            IMAGE,
        ];
        args.extend(argv);
        self.ok(&args);
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        for name in self.containers.borrow().iter() {
            let _ = self.run(&["rm", "-f", name]);
        }
        let _ = Command::new("kill")
            .arg(self.daemon.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}
