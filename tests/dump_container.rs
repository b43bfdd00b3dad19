//! Dumps whose client runs inside a container (`container`, `container-engine`), through the
//! built binary against real containers: podman (tests/util/podman.rs) and a private dockerd
//! (tests/util/docker.rs), each test starting its own from a local image and removing them when
//! it ends.
//!
//! A PostgreSQL server that exists only inside its container is dumped with the container's own
//! clients and restored with stock tools on the host; a `command` dump runs in a container;
//! a missing container, a stopped one, a missing engine and an unreachable daemon are each exit
//! 20 with a hint naming the container and nothing on the target; a password reaches the client
//! through the engine's environment and never an argv; a dump past its timeout leaves nothing
//! running inside; and podman works from a sandbox like vouch.service's only through its API
//! service.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use util::docker::Docker;
use util::podman::Podman;
use util::postgresql::{Postgres, PGBIN};
use util::{assert_code, bash_ok, stderr, Env};

/// `vouch ARGS` in `env` with the storage of `podman`.
fn vouch(env: &Env, podman: &Podman, args: &[&str]) -> std::process::Output {
    vouch_with(env, &podman.env(), args)
}

/// `vouch ARGS` in `env` with the engine's environment `engine`.
fn vouch_with(env: &Env, engine: &[(&str, String)], args: &[&str]) -> std::process::Output {
    let mut cmd = env.command(args);
    for (k, v) in engine {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A unique container name for one test.
fn name(test: &str) -> String {
    format!("vouch-{test}-{}", std::process::id())
}

#[test]
fn a_postgresql_server_in_a_container_is_dumped_and_restores_on_the_host() {
    let podman = Podman::new();
    let c = name("pg");
    podman.start_postgres(&c);
    podman.sql(&c, "postgres", "CREATE DATABASE app");
    podman.sql(
        &c,
        "app",
        "CREATE TABLE items(id int PRIMARY KEY, label text); \
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 777) g;",
    );
    let env = Env::new();
    env.write_config(
        "",
        &format!(
            "[[dump]]\nname = \"app\"\nkind = \"postgresql\"\ndatabases = [\"app\"]\n\
             user = \"postgres\"\ncontainer = \"{c}\"\ncontainer-engine = \"podman\"\n"
        ),
    );
    let out = vouch(&env, &podman, &["preflight"]);
    assert_code(&out, 0);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(text.contains(&format!("container {c} running")), "{text}");
    let out = vouch(&env, &podman, &["run"]);
    assert_code(&out, 0);
    let archive = env.archives().pop().unwrap();
    let manifest = env.manifest(&archive);
    assert_eq!(manifest["dumps"][0]["path"], ".vouch/dumps/app.pgdump");
    assert_eq!(manifest["dumps"][0]["tables"], 1);

    let host = Postgres::start();
    host.sql("postgres", "CREATE DATABASE app_restored");
    bash_ok(&format!(
        "set -o pipefail; age -d -i '{}' '{}' | tar -xzOf - .vouch/dumps/app.pgdump | \
         {PGBIN}/pg_restore --exit-on-error --single-transaction -h '{}' -U postgres -d app_restored",
        env.identity.display(),
        archive.display(),
        host.socket_dir()
    ));
    assert_eq!(
        host.sql("app_restored", "SELECT count(*), sum(id) FROM items"),
        podman.sql(&c, "app", "SELECT count(*), sum(id) FROM items")
    );
}

#[test]
fn a_command_dump_runs_inside_its_container() {
    let podman = Podman::new();
    let c = name("cmd");
    podman.start(
        &c,
        "root",
        &[
            "sh",
            "-c",
            "echo 'only in the container' > /srv/data.txt && exec sleep 3600",
        ],
    );
    let env = Env::new();
    env.write_config(
        "",
        &format!(
            "[[dump]]\nname = \"data\"\nkind = \"command\"\n\
             command = [\"sh\", \"-c\", \"cat /srv/data.txt; echo \\\"end of $VOUCH_DUMP\\\"\"]\n\
             extension = \"txt\"\nmin-size = 10\nexpect-tail = \"end of data\"\n\
             container = \"{c}\"\ncontainer-engine = \"podman\"\n"
        ),
    );
    let out = vouch(&env, &podman, &["run"]);
    assert_code(&out, 0);
    let archive = env.archives().pop().unwrap();
    let got = bash_ok(&format!(
        "set -o pipefail; age -d -i '{}' '{}' | tar -xzOf - .vouch/dumps/data.txt",
        env.identity.display(),
        archive.display()
    ));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "only in the container\nend of data\n"
    );
}

/// A command dump of container `c` with engine `engine`.
fn command_dump(c: &str, engine: &str, timeout: &str, argv: &str) -> String {
    format!(
        "[[dump]]\nname = \"data\"\nkind = \"command\"\ncommand = {argv}\nextension = \"txt\"\n\
         min-size = 1\ntimeout = \"{timeout}\"\ncontainer = \"{c}\"\ncontainer-engine = \"{engine}\"\n"
    )
}

/// Runs preflight and run; both must be exit 20 with `hint` in stderr and nothing written.
fn refused(env: &Env, podman: &Podman, hint: &str) {
    refused_with(env, &podman.env(), hint)
}

/// [`refused`] with the engine's environment `engine`.
fn refused_with(env: &Env, engine: &[(&str, String)], hint: &str) {
    for step in ["preflight", "run"] {
        let out = vouch_with(env, engine, &[step]);
        assert_code(&out, 20);
        assert!(stderr(&out).contains(hint), "{step}: {}", stderr(&out));
    }
    assert!(env.target_files().is_empty(), "{:?}", env.target_files());
}

#[test]
fn a_missing_container_is_exit_20_with_its_name() {
    let podman = Podman::new();
    let env = Env::new();
    let c = name("missing");
    env.write_config("", &command_dump(&c, "podman", "1m", "[\"true\"]"));
    refused(
        &env,
        &podman,
        &format!("podman has no container \"{c}\": start it"),
    );
}

#[test]
fn a_stopped_container_is_exit_20_with_its_name() {
    let podman = Podman::new();
    let c = name("stopped");
    podman.start(&c, "root", &["sleep", "3600"]);
    podman.ok(&["stop", "-t", "0", &c]);
    let env = Env::new();
    env.write_config("", &command_dump(&c, "podman", "1m", "[\"true\"]"));
    refused(
        &env,
        &podman,
        &format!("Container \"{c}\" is not running: start it (podman start {c}"),
    );
}

#[test]
fn a_missing_engine_is_exit_20_with_the_container_named() {
    let podman = Podman::new();
    let env = Env::new();
    let empty = env.dir.path().join("empty-path");
    fs::create_dir_all(&empty).unwrap();
    env.write_config("", &command_dump("app-db-1", "podman", "1m", "[\"true\"]"));
    for step in ["preflight", "run"] {
        let mut cmd = env.command(&[step]);
        cmd.env("PATH", &empty);
        let out = cmd.output().unwrap();
        assert_code(&out, 20);
        assert!(
            stderr(&out).contains("Install podman (the client of [[dump]] \"data\" runs in its container \"app-db-1\")"),
            "{step}: {}",
            stderr(&out)
        );
    }
    assert!(env.target_files().is_empty());
    drop(podman);
}

#[test]
fn a_program_missing_in_the_container_is_exit_20() {
    let podman = Podman::new();
    let c = name("noprog");
    podman.start(&c, "root", &["sleep", "3600"]);
    let env = Env::new();
    env.write_config(
        "",
        &command_dump(&c, "podman", "1m", "[\"no-such-dumper\", \"--all\"]"),
    );
    refused(
        &env,
        &podman,
        &format!("no-such-dumper is not installed in container \"{c}\""),
    );
}

#[test]
fn a_password_reaches_the_client_in_the_container_and_no_argv() {
    let podman = Podman::new();
    let c = name("secret");
    podman.start_postgres(&c);
    let secret = "s3cret-Zq81-never-in-argv";
    podman.sql(
        &c,
        "postgres",
        &format!("CREATE ROLE dumper LOGIN PASSWORD '{secret}'; GRANT pg_read_all_data TO dumper"),
    );
    podman.sql(&c, "postgres", "CREATE DATABASE app OWNER dumper");
    podman.sql(&c, "app", "CREATE TABLE t(x int); INSERT INTO t VALUES (1)");
    let env = Env::new();
    let pass = env.dir.path().join("app.pass");
    fs::write(&pass, format!("{secret}\n")).unwrap();
    fs::set_permissions(&pass, fs::Permissions::from_mode(0o600)).unwrap();
    // A podman that records its argv, and whether PGPASSWORD was in its environment, then
    // runs the real one.
    let bin = env.dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let log = env.dir.path().join("argv.log");
    let wrapper = bin.join("podman");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"argv: $*\" \"env: ${{PGPASSWORD:+set}}\" >> '{}'\nexec /usr/bin/podman \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    env.write_config(
        "",
        &format!(
            "[[dump]]\nname = \"app\"\nkind = \"postgresql\"\ndatabases = [\"app\"]\n\
             host = \"127.0.0.1\"\nuser = \"dumper\"\npassword-file = \"{}\"\n\
             container = \"{c}\"\ncontainer-engine = \"podman\"\n",
            pass.display()
        ),
    );
    let mut cmd = env.command(&["run"]);
    for (k, v) in podman.env() {
        cmd.env(k, v);
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = cmd.env("PATH", path).output().unwrap();
    assert_code(&out, 0);
    let log = fs::read_to_string(&log).unwrap();
    assert!(!log.contains(secret), "{log}");
    assert!(!stderr(&out).contains(secret));
    let dumps: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" pg_dump --lock-wait-timeout"))
        .collect();
    assert_eq!(dumps.len(), 1, "{log}");
    assert!(
        dumps[0].contains(&format!(
            "exec -i -e LC_ALL -e PGCONNECT_TIMEOUT -e PGPASSWORD {c} timeout"
        )),
        "{log}"
    );
    assert!(log.contains("env: set"), "{log}");

    // Without the password the same server refuses the login: the dump above had it.
    env.write_config(
        "",
        &format!(
            "[[dump]]\nname = \"app\"\nkind = \"postgresql\"\ndatabases = [\"app\"]\n\
             host = \"127.0.0.1\"\nuser = \"dumper\"\ncontainer = \"{c}\"\ncontainer-engine = \"podman\"\n"
        ),
    );
    let out = vouch(&env, &podman, &["run"]);
    assert_code(&out, 20);
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
}

/// The pids on this host whose argv is `argv` (processes in containers included).
fn running(argv: &[&str]) -> Vec<u32> {
    util::pids_matching(|a| a == argv)
}

#[test]
fn a_timeout_leaves_nothing_running_inside_the_container() {
    let podman = Podman::new();
    let c = name("timeout");
    podman.start(&c, "root", &["sleep", "3600"]);
    let env = Env::new();
    // The shell and its sleep ignore SIGTERM: only the SIGKILL after the grace ends them.
    env.write_config(
        "",
        &command_dump(
            &c,
            "podman",
            "2s",
            "[\"sh\", \"-c\", \"trap '' TERM; sleep 6173; sleep 6173\"]",
        ),
    );
    let started = Instant::now();
    let out = vouch(&env, &podman, &["run"]);
    assert_code(&out, 20);
    assert!(
        stderr(&out).contains("ran past its 2s timeout and was killed"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(env.target_files().is_empty());
    assert_eq!(running(&["sleep", "6173"]), Vec::<u32>::new());
    assert_eq!(
        podman.ok(&[
            "exec",
            &c,
            "sh",
            "-c",
            "ps -eo args= | grep -c '^sleep 6173' || true"
        ]),
        "0"
    );
}

#[test]
fn a_container_on_an_sqlite_dump_is_a_config_error_with_its_line() {
    let env = Env::new();
    env.write_config(
        "",
        "[[dump]]\nname = \"grafana\"\nkind = \"sqlite\"\npath = \"/var/lib/grafana/grafana.db\"\ncontainer = \"grafana\"\n",
    );
    let line = fs::read_to_string(&env.config)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("container = "))
        .unwrap()
        + 1;
    for step in ["preflight", "run"] {
        let out = env.vouch(&[step]);
        assert_code(&out, 10);
        let text = stderr(&out);
        assert!(
            text.contains(&format!("{}:{line}", env.config.display())),
            "{text}"
        );
        assert!(
            text.contains("dump.grafana.container: container does not apply to kind = \"sqlite\""),
            "{text}"
        );
    }
}

/// `vouch ARGS` in a sandbox like vouch.service's: a mount namespace where everything but the
/// test's own directory is read-only (`ProtectSystem=strict`), and only
/// `CAP_DAC_READ_SEARCH` and no new privileges (`CapabilityBoundingSet=`, `NoNewPrivileges=`).
fn sandboxed(
    env: &Env,
    podman: &Podman,
    host: Option<&str>,
    args: &[&str],
) -> std::process::Output {
    let dir = env.dir.path().display().to_string();
    let prefix = [
        "unshare",
        "-m",
        "sh",
        "-c",
        "mount --make-rprivate / && mount --bind \"$0\" \"$0\" && mount -o remount,bind,ro / && exec \"$@\"",
        &dir,
        "setpriv",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all,+dac_read_search",
        "--no-new-privs",
        "--",
    ];
    let mut cmd = env.wrapped(
        &prefix,
        "touch /vouch-sandbox-probe 2>/dev/null && exit 99 || true",
        args,
    );
    for (k, v) in podman.env() {
        cmd.env(k, v);
    }
    match host {
        Some(url) => cmd.env("CONTAINER_HOST", url),
        None => cmd.env_remove("CONTAINER_HOST"),
    };
    cmd.output().unwrap()
}

#[test]
fn from_a_sandbox_podman_needs_its_service() {
    let podman = Podman::new();
    let c = name("sandbox");
    podman.start_postgres(&c);
    podman.sql(&c, "postgres", "CREATE DATABASE app");
    podman.sql(
        &c,
        "app",
        "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2)",
    );
    let env = Env::new();
    env.write_config(
        "",
        &format!(
            "[[dump]]\nname = \"app\"\nkind = \"postgresql\"\ndatabases = [\"app\"]\n\
             user = \"postgres\"\ncontainer = \"{c}\"\ncontainer-engine = \"podman\"\n"
        ),
    );
    // The podman client alone needs root's capabilities and its storage writable.
    let out = sandboxed(&env, &podman, None, &["run"]);
    assert_code(&out, 20);
    assert!(
        stderr(&out).contains(&format!("podman could not reach container \"{c}\"")),
        "{}",
        stderr(&out)
    );
    assert!(env.target_files().is_empty());
    // Through the API service it needs neither.
    let service = podman.service();
    let out = sandboxed(&env, &podman, Some(&service.url), &["run"]);
    assert_code(&out, 0);
    let manifest = env.manifest(&env.archives().pop().unwrap());
    assert_eq!(manifest["dumps"][0]["tables"], 1);
}

#[test]
fn docker_is_the_default_engine_and_behaves_the_same() {
    let docker = Docker::new();
    let engine = docker.env();
    let c = name("docker");
    docker.start(
        &c,
        &[
            "sh",
            "-c",
            "echo 'only in the container' > /srv/data.txt && exec sleep 3600",
        ],
    );
    let env = Env::new();
    // No container-engine: docker.
    env.write_config(
        "",
        &format!(
            "[[dump]]\nname = \"data\"\nkind = \"command\"\n\
             command = [\"sh\", \"-c\", \"cat /srv/data.txt; echo \\\"end of $VOUCH_DUMP\\\"\"]\n\
             extension = \"txt\"\nmin-size = 10\nexpect-tail = \"end of data\"\ncontainer = \"{c}\"\n"
        ),
    );
    assert_code(&vouch_with(&env, &engine, &["preflight"]), 0);
    assert_code(&vouch_with(&env, &engine, &["run"]), 0);
    let got = bash_ok(&format!(
        "set -o pipefail; age -d -i '{}' '{}' | tar -xzOf - .vouch/dumps/data.txt",
        env.identity.display(),
        env.archives().pop().unwrap().display()
    ));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "only in the container\nend of data\n"
    );

    let env = Env::new();
    env.write_config(
        "",
        &command_dump(
            &c,
            "docker",
            "2s",
            "[\"sh\", \"-c\", \"trap '' TERM; sleep 6174; sleep 6174\"]",
        ),
    );
    let out = vouch_with(&env, &engine, &["run"]);
    assert_code(&out, 20);
    assert!(
        stderr(&out).contains("ran past its 2s timeout and was killed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(running(&["sleep", "6174"]), Vec::<u32>::new());
    assert!(env.target_files().is_empty());

    let missing = name("docker-missing");
    env.write_config("", &command_dump(&missing, "docker", "1m", "[\"true\"]"));
    refused_with(
        &env,
        &engine,
        &format!("docker has no container \"{missing}\": start it"),
    );
    docker.ok(&["stop", "-t", "0", &c]);
    env.write_config("", &command_dump(&c, "docker", "1m", "[\"true\"]"));
    refused_with(
        &env,
        &engine,
        &format!("Container \"{c}\" is not running: start it (docker start {c}"),
    );
}

#[test]
fn an_unreachable_docker_daemon_is_exit_20_with_the_container_named() {
    let env = Env::new();
    env.write_config("", &command_dump("app-db-1", "docker", "1m", "[\"true\"]"));
    let sock = env.dir.path().join("no-daemon.sock");
    refused_with(
        &env,
        &[("DOCKER_HOST", format!("unix://{}", sock.display()))],
        "docker could not reach container \"app-db-1\" for [[dump]] \"data\": check that its daemon or service runs",
    );
}
