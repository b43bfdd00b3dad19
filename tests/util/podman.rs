//! Throwaway podman containers for tests (Debian's podman and runc, installed by
//! `scripts/setup`), with no registry: the image is imported from a tarball of a few empty
//! directories and the host's `/etc/passwd`, and every container bind-mounts the host's `/usr`
//! read-only (Debian 12 is merged-/usr, so that is every program and library).
//!
//! Each [`Podman`] has its own storage (vfs), run root and temporary directory in a temporary
//! directory, selected through `CONTAINERS_CONF` and `CONTAINERS_STORAGE_CONF` (set them on
//! every command, vouch's too, with [`Podman::env`]). The runtime is runc, and the containers'
//! rlimits are set to values at or below this host's: a root without `CAP_SYS_RESOURCE` cannot
//! raise them, and crun refuses hybrid cgroup hierarchies. Dropping it removes every container.

use super::{bash_ok, stderr};
use std::fs;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The image every container runs, inside this storage.
pub const IMAGE: &str = "localhost/vouch-test-rootfs";

/// Writes the image's tarball into `dir`: a few empty directories (with `/run/postgresql` and
/// `/var/lib/postgresql` for the `postgres` user), `/var/run` pointing to `/run`, the usual
/// merged-/usr links, and the host's `/etc/passwd` and `/etc/group`. Returns its path.
pub fn rootfs_tar(dir: &std::path::Path) -> String {
    let d = dir.display();
    let root = format!("{d}/rootfs");
    bash_ok(&format!(
        "set -e; mkdir -p '{root}' && cd '{root}'; \
         mkdir -p usr etc proc sys dev run/postgresql var/lib/postgresql srv; mkdir -m 1777 tmp; \
         ln -s ../run var/run; for l in bin sbin lib lib64; do ln -s usr/$l $l; done; \
         cp /etc/passwd /etc/group etc/; chown postgres: run/postgresql var/lib/postgresql; \
         tar -cf '{d}/rootfs.tar' ."
    ));
    format!("{d}/rootfs.tar")
}

/// A private podman storage with one imported image; removes its containers when dropped.
pub struct Podman {
    dir: tempfile::TempDir,
    containers: std::cell::RefCell<Vec<String>>,
}

impl Podman {
    /// Writes the configuration and imports the image.
    pub fn new() -> Podman {
        assert!(
            std::path::Path::new("/usr/bin/podman").exists()
                && std::path::Path::new("/usr/sbin/runc").exists(),
            "podman and runc are needed: run scripts/setup (apt-get install podman runc)"
        );
        assert!(super::is_root(), "the container tests run as root");
        let dir = tempfile::Builder::new()
            .prefix("vouch-podman.")
            .tempdir()
            .unwrap();
        let d = dir.path().display().to_string();
        // File locks, private to this storage: with the default shm locks every podman on
        // the host shares /dev/shm/libpod_lock, and two tests starting at once race to create
        // it ("failed to create 2048 locks in /libpod_lock: file exists").
        fs::write(
            dir.path().join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\nlock_type = \"file\"\ntmp_dir = \"{d}/tmp\"\n"
            ),
        )
        .unwrap();
        fs::write(
            dir.path().join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/graph\"\nrunroot = \"{d}/run\"\n"
            ),
        )
        .unwrap();
        let podman = Podman {
            dir,
            containers: Default::default(),
        };
        let tar = rootfs_tar(podman.dir.path());
        let out = podman.run(&["import", &tar, IMAGE]);
        assert!(out.status.success(), "podman import: {}", stderr(&out));
        podman
    }

    /// The environment that selects this storage, for podman and for vouch.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let d = self.dir.path().display();
        vec![
            ("CONTAINERS_CONF", format!("{d}/containers.conf")),
            ("CONTAINERS_STORAGE_CONF", format!("{d}/storage.conf")),
        ]
    }

    /// A `podman ARGS` command on this storage.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(args);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `podman ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `podman ARGS` and returns its stdout; panics when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Starts container `name` (no network, the host's /usr read-only) running `argv` as
    /// `user`; it is removed when this is dropped.
    pub fn start(&self, name: &str, user: &str, argv: &[&str]) {
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
            "--user",
            user,
            IMAGE,
        ];
        args.extend(argv);
        self.ok(&args);
    }

    /// Starts container `name` with a PostgreSQL 15 server: trust on its socket in
    /// /run/postgresql, scram-sha-256 on 127.0.0.1 inside the container. Waits until it
    /// accepts connections.
    pub fn start_postgres(&self, name: &str) {
        let bin = super::postgresql::PGBIN;
        let script = format!(
            "{bin}/initdb -D /var/lib/postgresql/data -U postgres --auth-local=trust \
             --auth-host=scram-sha-256 --no-sync >/dev/null && exec {bin}/postgres \
             -D /var/lib/postgresql/data -k /run/postgresql -c listen_addresses=127.0.0.1 \
             -c fsync=off"
        );
        self.start(name, "postgres", &["sh", "-c", &script]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.run(&["exec", name, "pg_isready", "-q", "-h", "/run/postgresql"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL in {name} did not start: {}",
                self.ok(&["logs", name])
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs SQL as the superuser on `db` in container `name`, with the container's psql.
    pub fn sql(&self, name: &str, db: &str, sql: &str) -> String {
        self.ok(&[
            "exec",
            name,
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "/run/postgresql",
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ])
    }
}

/// `podman system service` on a socket of this storage: the API that the podman client talks to
/// with `CONTAINER_HOST=unix://...` (as `podman.socket` provides it on a host). Stopped when
/// dropped.
pub struct Service {
    child: std::process::Child,
    /// The value for `CONTAINER_HOST`.
    pub url: String,
}

impl Podman {
    /// Starts the API service on `sock` in this storage's directory and waits for its socket.
    pub fn service(&self) -> Service {
        let sock = self.dir.path().join("podman.sock");
        let url = format!("unix://{}", sock.display());
        let child = self
            .command(&["system", "service", "--time=0", &url])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let service = Service { child, url };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "podman system service did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        service
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in self.containers.borrow().iter() {
            let _ = self.run(&["rm", "-f", "-t", "0", name]);
        }
        let _ = self.run(&["rmi", "-f", IMAGE]);
        // conmon stays up to 5 minutes after an exec through the API service, waiting for the
        // service to collect the exit code: stop the ones of this storage.
        let dir = self.dir.path().display().to_string();
        for pid in super::pids_matching(|argv| argv.iter().any(|a| a.contains(&dir))) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}
