//! `[notify]` end to end: the built binary against real HTTP servers on loopback (a small server
//! thread per test that records every request), real commands, and `vouch notify-failure` with
//! a stand-in for `systemctl show`.

mod util;

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use util::{assert_code, stderr, Env};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} {}: body is not JSON ({e})", self.method, self.path))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that records requests and answers each with `status`, or,
/// when `status` is 0, never answers (the connection stays open, silent).
struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    status: Arc<AtomicU16>,
}

impl Server {
    fn start(status: u16) -> Server {
        Server::start_with(status, None)
    }

    /// With `tls`, every connection is wrapped in TLS first (an https server).
    fn start_with(status: u16, tls: Option<native_tls::TlsAcceptor>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(status));
        let (reqs, st) = (requests.clone(), status.clone());
        let tls = tls.map(Arc::new);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (reqs, st, tls) = (reqs.clone(), st.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(stream, &reqs, &st),
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream) {
                            serve(stream, &reqs, &st)
                        }
                    }
                });
            }
        });
        Server {
            port,
            requests,
            status,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    fn find(&self, path: &str) -> Request {
        self.requests()
            .into_iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("no request for {path}: {:?}", self.paths()))
    }
}

/// Reads requests from one connection until it closes.
fn serve<S: Read + Write>(stream: S, requests: &Mutex<Vec<Request>>, status: &AtomicU16) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let mut body = Vec::new();
        if let Some(len) = headers.get("content-length") {
            body.resize(len.parse().unwrap(), 0);
            reader.read_exact(&mut body).unwrap();
        } else if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        requests.lock().unwrap().push(Request {
            method,
            path,
            headers,
            body,
        });
        let code = status.load(Ordering::SeqCst);
        if code == 0 {
            // Never answer; hold the connection until the client gives up.
            let _ = reader.read_to_end(&mut Vec::new());
            return;
        }
        // A redirect points at /moved on the same server.
        let location = if (300..400).contains(&code) {
            "Location: /moved\r\n"
        } else {
            ""
        };
        let reply = format!(
            "HTTP/1.1 {code} X\r\n{location}Content-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"
        );
        if reader.get_mut().write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A URL on a port nothing listens on.
fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/hook")
}

/// `vouch ARGS` in the test world, without systemd's or a proxy's variables from outside.
fn vouch(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = env.command(args);
    for v in [
        "INVOCATION_ID",
        "VOUCH_TEST_SYSTEMCTL",
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn notify_section(lines: &[String]) -> String {
    format!("[notify]\n{}\n", lines.join("\n"))
}

fn record(env: &Env) -> Value {
    let path = env.state.join("notify.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn failures(record: &Value) -> Vec<(String, String)> {
    record["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["channel"].as_str().unwrap().to_owned(),
                f["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn sent(record: &Value) -> Vec<String> {
    record["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn script(env: &Env, name: &str, body: &str) -> PathBuf {
    let path = env.dir.path().join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A stand-in for `systemctl show` that prints these properties (and its arguments to a file).
fn fake_systemctl(env: &Env, props: &str) -> PathBuf {
    let args = env.dir.path().join("systemctl.args");
    script(
        env,
        "systemctl",
        &format!(
            "echo \"$@\" > '{}'\nprintf '%s\\n' {}",
            args.display(),
            props
                .split_whitespace()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    )
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_good_run_posts_the_webhook_and_pings_start_then_zero() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), "alpha\n").unwrap();
    fs::write(env.src.join("b.txt"), "bravo bravo\n").unwrap();
    let server = Server::start(200);
    env.write_config(
        "",
        &notify_section(&[
            format!("webhook = \"{}\"", server.url("/hook")),
            format!("ping = \"{}\"", server.url("/ping/check-1")),
        ]),
    );
    let out = vouch(&env, &["run"], &[("INVOCATION_ID", "0123abcd")]);
    assert_code(&out, 0);

    let paths = server.paths();
    let start = paths.iter().position(|p| p == "GET /ping/check-1/start");
    let end = paths.iter().position(|p| p == "POST /ping/check-1/0");
    assert!(
        matches!((start, end), (Some(s), Some(e)) if s < e),
        "start, then /0: {paths:?}"
    );
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(!paths
        .iter()
        .any(|p| p.ends_with("/start") && p != &paths[0]));

    let hook = server.find("/hook");
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.headers["content-type"], "application/json");
    let agent = format!("vouch/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(hook.headers["user-agent"], agent);
    let body = hook.json();
    let archive = &env.archives()[0];
    let last_run: Value =
        serde_json::from_str(&fs::read_to_string(env.state.join("last-run.json")).unwrap())
            .unwrap();
    assert_eq!(body["result"], "success");
    assert_eq!(body["exit-code"], 0);
    assert_eq!(body["exit-name"], "OK");
    assert_eq!(body["name"], "test");
    assert_eq!(body["run-id"], last_run["run-id"]);
    assert_eq!(body["run-id"].as_str().unwrap().len(), 32);
    assert!(!body["host"].as_str().unwrap().is_empty());
    assert_eq!(body["archive"], file_name(archive).as_str());
    assert_eq!(body["targets"], serde_json::json!(["local"]));
    assert_eq!(body["archive-bytes"], fs::metadata(archive).unwrap().len());
    assert_eq!(body["files"], 2);
    assert_eq!(body["bytes-in"], 6 + 12);
    assert_eq!(body["reasons"], serde_json::json!([]));
    assert_eq!(body["vouch-version"], env!("CARGO_PKG_VERSION"));

    let ping = server.find("/ping/check-1/0");
    assert_eq!(ping.headers["user-agent"], agent);
    assert!(ping.headers["content-type"].starts_with("text/plain"));
    let text = ping.text();
    assert!(text.starts_with("vouch test on "), "{text}");
    assert!(
        text.contains("success") && text.contains(&file_name(archive)),
        "{text}"
    );

    let rec = record(&env);
    assert_eq!(failures(&rec), []);
    assert_eq!(sent(&rec), ["webhook", "ping"]);
    assert_eq!(rec["run-id"], body["run-id"]);
    assert_eq!(rec["exit-code"], 0);
    assert_eq!(rec["invocation"], "0123abcd");
}

#[test]
fn a_failed_run_sends_its_code_and_never_zero() {
    // A required path that is missing: exit 32.
    let env = Env::new();
    fs::write(env.src.join("a.txt"), "alpha\n").unwrap();
    let server = Server::start(200);
    let missing = env.src.join("vault.enc");
    env.write_config(
        &format!("required = [\"{}\"]", missing.display()),
        &notify_section(&[
            format!("webhook = \"{}\"", server.url("/hook")),
            format!("ping = \"{}\"", server.url("/ping")),
        ]),
    );
    let out = vouch(&env, &["run"], &[]);
    assert_code(&out, 32);
    let paths = server.paths();
    assert!(paths.contains(&"POST /ping/32".to_owned()), "{paths:?}");
    assert!(!paths.iter().any(|p| p.ends_with("/0")), "{paths:?}");
    let body = server.find("/hook").json();
    assert_eq!(body["result"], "failure");
    assert_eq!(body["exit-code"], 32);
    assert_eq!(body["exit-name"], "REQUIRED");
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("vault.enc"), "{reasons}");
    let text = server.find("/ping/32").text();
    assert!(
        text.contains("failure") && text.contains("vault.enc"),
        "{text}"
    );
    assert_eq!(record(&env)["exit-code"], 32);

    // A missing target: exit 14, still a start ping first.
    let env = Env::new();
    let server = Server::start(200);
    env.write_config(
        "",
        &notify_section(&[
            format!("webhook = \"{}\"", server.url("/hook")),
            format!("ping = \"{}\"", server.url("/ping")),
        ]),
    );
    fs::remove_dir(&env.target).unwrap();
    let out = vouch(&env, &["run"], &[]);
    assert_code(&out, 14);
    assert_eq!(
        server
            .paths()
            .iter()
            .filter(|p| p.contains("/ping"))
            .collect::<Vec<_>>(),
        ["GET /ping/start", "POST /ping/14"]
    );
    let body = server.find("/hook").json();
    assert_eq!(
        (body["exit-code"].clone(), body["exit-name"].clone()),
        (14.into(), "TARGET_MISSING".into())
    );
    assert_eq!(body["archive"], Value::Null);
    assert!(body["hint"].is_string(), "{body}");
}

#[test]
fn dead_and_silent_endpoints_do_not_change_the_exit_code() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), "alpha\n").unwrap();
    let silent = Server::start(0);
    // The webhook's port is closed; the ping server accepts and never answers; the command
    // channel works and must not wait for the others.
    let marker = env.dir.path().join("command-ran");
    let cmd = script(&env, "ok.sh", &format!("touch '{}'", marker.display()));
    env.write_config(
        "",
        &notify_section(&[
            format!("webhook = \"{}\"", closed_port_url()),
            format!("ping = \"{}\"", silent.url("/ping")),
            format!("command = [\"{}\"]", cmd.display()),
            "timeout = \"1s\"".into(),
        ]),
    );
    let t0 = Instant::now();
    let out = vouch(&env, &["run"], &[]);
    let took = t0.elapsed();
    assert_code(&out, 0);
    assert!(marker.exists(), "the command channel still ran");
    // The start ping (1 s) and the end, sent in parallel (1 s), plus the run itself.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert_eq!(
        silent.paths(),
        ["GET /ping/start", "POST /ping/0"],
        "both pings were tried"
    );
    let rec = record(&env);
    let f = failures(&rec);
    let of = |ch: &str| {
        f.iter()
            .filter(|(c, _)| c == ch)
            .map(|(_, e)| e.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(of("webhook").len(), 1, "{f:?}");
    assert!(of("webhook")[0].contains("refused"), "{f:?}");
    assert_eq!(of("ping").len(), 2, "start and end: {f:?}");
    assert!(of("ping").iter().all(|e| e.contains("1s")), "{f:?}");
    assert!(of("ping")[0].contains("start"), "{f:?}");
    assert_eq!(sent(&rec), ["command"]);
    // Paths (where webhook and ping URLs keep their secrets) are never logged or recorded.
    assert!(
        f.iter()
            .all(|(_, e)| !e.contains("/hook") && !e.contains("/ping")),
        "{f:?}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("warning: webhook notification failed"),
        "{err}"
    );
    assert!(err.contains("fix: Check that [notify] webhook"), "{err}");
    assert!(err.contains("warning: ping notification failed"), "{err}");

    // A server that answers with an error status is a failed notification too.
    let env = Env::new();
    let failing = Server::start(503);
    env.write_config(
        "",
        &notify_section(&[format!("webhook = \"{}\"", failing.url("/hook"))]),
    );
    let out = vouch(&env, &["run"], &[]);
    assert_code(&out, 0);
    let f = failures(&record(&env));
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].0 == "webhook" && f[0].1.contains("503"), "{f:?}");

    // A failing run keeps its own code too, whatever the endpoints do.
    let env = Env::new();
    fs::write(env.src.join("a.txt"), "alpha\n").unwrap();
    let silent = Server::start(0);
    env.write_config(
        &format!("required = [\"{}\"]", env.src.join("vault.enc").display()),
        &notify_section(&[
            format!("webhook = \"{}\"", closed_port_url()),
            format!("ping = \"{}\"", silent.url("/ping")),
            "timeout = \"1s\"".into(),
        ]),
    );
    let out = vouch(&env, &["run"], &[]);
    assert_code(&out, 32);
    assert_eq!(silent.paths(), ["GET /ping/start", "POST /ping/32"]);
    let rec = record(&env);
    assert_eq!(rec["exit-code"], 32);
    let channels: Vec<String> = failures(&rec).into_iter().map(|(c, _)| c).collect();
    assert_eq!(channels, ["ping", "webhook", "ping"], "{rec}");
}

#[test]
fn the_command_gets_the_outcome_in_its_environment_and_on_stdin() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), "alpha\n").unwrap();
    let dump = env.dir.path().join("dump");
    fs::create_dir(&dump).unwrap();
    let cmd = script(
        &env,
        "alert.sh",
        &format!(
            "set -eu\nenv > '{d}/env'\ncat > '{d}/stdin'\necho \"$1\" > '{d}/arg'",
            d = dump.display()
        ),
    );
    env.write_config(
        "",
        &notify_section(&[format!(
            "command = [\"{}\", \"--first arg\"]",
            cmd.display()
        )]),
    );
    let out = vouch(&env, &["run"], &[]);
    assert_code(&out, 0);
    let vars: BTreeMap<String, String> = fs::read_to_string(dump.join("env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let archive = env.archives()[0].clone();
    assert_eq!(vars["VOUCH_RESULT"], "success");
    assert_eq!(vars["VOUCH_EXIT_CODE"], "0");
    assert_eq!(vars["VOUCH_EXIT_NAME"], "OK");
    assert_eq!(vars["VOUCH_ARCHIVE"], file_name(&archive));
    assert_eq!(
        vars["VOUCH_ARCHIVE_BYTES"],
        fs::metadata(&archive).unwrap().len().to_string()
    );
    assert_eq!(vars["VOUCH_FILES"], "1");
    assert_eq!(vars["VOUCH_BYTES_IN"], "6");
    assert_eq!(vars["VOUCH_TARGETS"], "local");
    assert_eq!(vars["VOUCH_NAME"], "test");
    assert_eq!(vars["VOUCH_REASONS"], "");
    assert_eq!(vars["VOUCH_RUN_ID"].len(), 32);
    assert!(!vars["VOUCH_HOST"].is_empty());
    assert!(vars["VOUCH_SUMMARY"].contains("success"));
    let stdin: Value =
        serde_json::from_str(&fs::read_to_string(dump.join("stdin")).unwrap()).unwrap();
    assert_eq!(stdin["run-id"], vars["VOUCH_RUN_ID"].as_str());
    assert_eq!(stdin["archive"], file_name(&archive).as_str());
    assert_eq!(
        fs::read_to_string(dump.join("arg")).unwrap(),
        "--first arg\n"
    );
    assert_eq!(sent(&record(&env)), ["command"]);

    // A failed run: the reasons are in the environment; a command that exits non-zero is a
    // failed notification, and the run keeps its own code.
    fs::remove_file(dump.join("env")).unwrap();
    let cmd = script(
        &env,
        "alert.sh",
        &format!("env > '{}/env'\nexit 3", dump.display()),
    );
    env.write_config(
        &format!("required = [\"{}\"]", env.src.join("vault.enc").display()),
        &notify_section(&[format!("command = [\"{}\"]", cmd.display())]),
    );
    let out = vouch(&env, &["run"], &[]);
    assert_code(&out, 32);
    let text = fs::read_to_string(dump.join("env")).unwrap();
    assert!(text.contains("VOUCH_RESULT=failure"), "{text}");
    assert!(text.contains("VOUCH_EXIT_CODE=32\n"), "{text}");
    assert!(text.contains("VOUCH_EXIT_NAME=REQUIRED\n"), "{text}");
    assert!(
        text.contains("VOUCH_REASONS=") && text.contains("vault.enc"),
        "{text}"
    );
    let f = failures(&record(&env));
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].0 == "command" && f[0].1.contains("status 3"), "{f:?}");
}

#[test]
fn a_hanging_command_is_killed_at_the_timeout() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), "alpha\n").unwrap();
    // The shell waits on a child of its own: both must die, or the child would hold vouch's
    // stderr open for a minute.
    let cmd = script(&env, "hang.sh", "sleep 60\necho done");
    env.write_config(
        "",
        &notify_section(&[
            format!("command = [\"{}\"]", cmd.display()),
            "timeout = \"1s\"".into(),
        ]),
    );
    let t0 = Instant::now();
    let out = vouch(&env, &["run"], &[]);
    let took = t0.elapsed();
    assert_code(&out, 0);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let f = failures(&record(&env));
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].0 == "command" && f[0].1.contains("killed"), "{f:?}");
    let ps = Command::new("pgrep")
        .args(["-f", &cmd.display().to_string()])
        .output()
        .unwrap_or_else(|e| {
            panic!("pgrep is needed to look for leftover processes (apt-get install procps): {e}")
        });
    // pgrep exits 1 when nothing matches, 0 when something does, 2 and up when it failed.
    assert!(
        ps.status.code() == Some(1) && ps.stdout.is_empty(),
        "still running, or pgrep failed ({:?}): {}{}",
        ps.status,
        String::from_utf8_lossy(&ps.stdout),
        stderr(&ps)
    );
}

#[test]
fn notify_failure_sends_the_units_failure() {
    let env = Env::new();
    let server = Server::start(200);
    let dump = env.dir.path().join("stdin.json");
    let cmd = script(&env, "alert.sh", &format!("cat > '{}'", dump.display()));
    env.write_config(
        "",
        &notify_section(&[
            format!("webhook = \"{}\"", server.url("/hook")),
            format!("ping = \"{}\"", server.url("/ping")),
            format!("command = [\"{}\"]", cmd.display()),
        ]),
    );
    let systemctl = fake_systemctl(
        &env,
        "Result=exit-code ExecMainStatus=13 ExecMainCode=1 InvocationID=feed01",
    );
    let out = vouch(
        &env,
        &["notify-failure", "vouch.service"],
        &[("VOUCH_TEST_SYSTEMCTL", systemctl.to_str().unwrap())],
    );
    assert_code(&out, 0);
    let args = fs::read_to_string(env.dir.path().join("systemctl.args")).unwrap();
    assert!(
        args.starts_with("show ") && args.trim_end().ends_with("vouch.service"),
        "{args}"
    );
    let mut paths = server.paths();
    paths.sort();
    assert_eq!(paths, ["POST /hook", "POST /ping/13"]);
    let body = server.find("/hook").json();
    assert_eq!(body["result"], "failure");
    assert_eq!(body["exit-code"], 13);
    assert_eq!(body["exit-name"], "KEY");
    assert_eq!(
        body["reasons"],
        serde_json::json!(["vouch.service failed: Result=exit-code, exit status 13 (KEY)"])
    );
    let text = server.find("/ping/13").text();
    assert!(text.contains("vouch.service failed"), "{text}");
    let stdin: Value = serde_json::from_str(&fs::read_to_string(&dump).unwrap()).unwrap();
    assert_eq!(stdin["exit-code"], 13);
    let rec = record(&env);
    assert_eq!(rec["invocation"], "feed01");
    assert_eq!(sent(&rec), ["webhook", "ping", "command"]);
    let last: Value =
        serde_json::from_str(&fs::read_to_string(env.state.join("last-failure.json")).unwrap())
            .unwrap();
    assert_eq!(last["unit"], "vouch.service");
    assert_eq!(last["invocation"], "feed01");

    // Killed by the start timeout: not one of vouch's codes, so INTERNAL, never /0.
    let server = Server::start(200);
    env.write_config(
        "",
        &notify_section(&[format!("ping = \"{}\"", server.url("/ping"))]),
    );
    let systemctl = fake_systemctl(
        &env,
        "Result=timeout ExecMainStatus=15 ExecMainCode=2 InvocationID=feed02",
    );
    let out = vouch(
        &env,
        &["notify-failure", "vouch-verify.service"],
        &[("VOUCH_TEST_SYSTEMCTL", systemctl.to_str().unwrap())],
    );
    assert_code(&out, 0);
    assert_eq!(server.paths(), ["POST /ping/1"]);
    let text = server.find("/ping/1").text();
    assert!(
        text.contains("vouch-verify.service failed: Result=timeout, killed by signal 15"),
        "{text}"
    );
}

#[test]
fn notify_failure_does_not_repeat_what_the_run_already_sent() {
    let env = Env::new();
    let server = Server::start(200);
    let hook = Server::start(500);
    env.write_config(
        "",
        &notify_section(&[
            format!("webhook = \"{}\"", hook.url("/hook")),
            format!("ping = \"{}\"", server.url("/ping")),
        ]),
    );
    fs::remove_dir(&env.target).unwrap();
    // The run fails (14) under invocation aa11; the ping gets it, the webhook answers 500.
    let out = vouch(&env, &["run"], &[("INVOCATION_ID", "aa11")]);
    assert_code(&out, 14);
    assert_eq!(server.paths(), ["GET /ping/start", "POST /ping/14"]);
    assert_eq!(hook.paths(), ["POST /hook"]);
    let run_id = record(&env)["run-id"].clone();
    hook.status.store(200, Ordering::SeqCst);

    // systemd starts notify-failure for that invocation: only the webhook is tried again.
    let systemctl = fake_systemctl(
        &env,
        "Result=exit-code ExecMainStatus=14 ExecMainCode=1 InvocationID=aa11",
    );
    let sc = systemctl.to_str().unwrap();
    let out = vouch(
        &env,
        &["notify-failure", "vouch.service"],
        &[("VOUCH_TEST_SYSTEMCTL", sc)],
    );
    assert_code(&out, 0);
    assert_eq!(server.paths(), ["GET /ping/start", "POST /ping/14"]);
    assert_eq!(hook.paths(), ["POST /hook", "POST /hook"]);
    let body = hook.requests()[1].json();
    assert_eq!(body["exit-code"], 14);
    assert_eq!(body["run-id"], run_id, "the same run");
    let rec = record(&env);
    assert_eq!(failures(&rec), []);
    assert_eq!(sent(&rec), ["ping", "webhook"]);

    // Again for the same invocation: everything has it, nothing is sent.
    let out = vouch(
        &env,
        &["notify-failure", "vouch.service"],
        &[("VOUCH_TEST_SYSTEMCTL", sc)],
    );
    assert_code(&out, 0);
    assert!(stderr(&out).contains("already sent"), "{}", stderr(&out));
    assert_eq!(server.requests().len() + hook.requests().len(), 4);
    assert!(env.state.join("last-failure.json").exists());

    // A different invocation (vouch never got to report it) is sent everywhere.
    let systemctl = fake_systemctl(
        &env,
        "Result=exit-code ExecMainStatus=203 ExecMainCode=1 InvocationID=bb22",
    );
    let out = vouch(
        &env,
        &["notify-failure", "vouch.service"],
        &[("VOUCH_TEST_SYSTEMCTL", systemctl.to_str().unwrap())],
    );
    assert_code(&out, 0);
    assert_eq!(server.paths().last().unwrap(), "POST /ping/1");
    assert_eq!(hook.requests().len(), 3);

    // A run that reported success, then failed as a unit (e.g. killed afterwards): the
    // failure is still sent.
    fs::create_dir(&env.target).unwrap();
    fs::write(env.src.join("a.txt"), "alpha\n").unwrap();
    let out = vouch(&env, &["run"], &[("INVOCATION_ID", "cc33")]);
    assert_code(&out, 0);
    assert_eq!(server.paths().last().unwrap(), "POST /ping/0");
    let systemctl = fake_systemctl(
        &env,
        "Result=timeout ExecMainStatus=9 ExecMainCode=2 InvocationID=cc33",
    );
    let out = vouch(
        &env,
        &["notify-failure", "vouch.service"],
        &[("VOUCH_TEST_SYSTEMCTL", systemctl.to_str().unwrap())],
    );
    assert_code(&out, 0);
    assert_eq!(server.paths().last().unwrap(), "POST /ping/1");
}

#[test]
fn notify_failure_without_a_config_still_logs_and_records() {
    let env = Env::new();
    // No config file at all.
    let systemctl = fake_systemctl(
        &env,
        "Result=exit-code ExecMainStatus=10 ExecMainCode=1 InvocationID=dd44",
    );
    let out = vouch(
        &env,
        &["notify-failure", "vouch.service"],
        &[("VOUCH_TEST_SYSTEMCTL", systemctl.to_str().unwrap())],
    );
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("vouch.service failed"), "{err}");
    assert!(
        err.contains("no notification channel could be reached"),
        "{err}"
    );
    let rec = record(&env);
    let f = failures(&rec);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "config");
    assert!(f[0].1.contains("vouch.toml"), "{f:?}");
    assert_eq!(rec["exit-code"], 10);
    assert!(env.state.join("last-failure.json").exists());

    // systemctl itself failing does not stop the report either.
    let server = Server::start(200);
    env.write_config(
        "",
        &notify_section(&[format!("ping = \"{}\"", server.url("/ping"))]),
    );
    let broken = script(
        &env,
        "broken-systemctl",
        "echo 'Failed to connect to bus' >&2\nexit 1",
    );
    let out = vouch(
        &env,
        &["notify-failure", "vouch.service"],
        &[("VOUCH_TEST_SYSTEMCTL", broken.to_str().unwrap())],
    );
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("Failed to connect to bus"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.paths(), ["POST /ping/1"]);
    assert!(server.find("/ping/1").text().contains("Result=unknown"));
}

#[test]
fn https_is_verified_against_the_ca_store() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), "alpha\n").unwrap();
    let (ca, identity) = util::test_certificates(env.dir.path());
    let server = Server::start_with(200, Some(native_tls::TlsAcceptor::new(identity).unwrap()));
    let url = format!("https://localhost:{}", server.port);
    env.write_config(
        "",
        &notify_section(&[
            format!("webhook = \"{url}/hook\""),
            format!("ping = \"{url}/ping\""),
        ]),
    );
    // The system store does not know the test CA: the certificate is refused, nothing is
    // sent, and the run's exit code stays 0.
    let out = vouch(&env, &["run"], &[]);
    assert_code(&out, 0);
    assert_eq!(server.paths(), Vec::<String>::new());
    let f = failures(&record(&env));
    assert_eq!(f.len(), 3, "start, webhook, end: {f:?}");
    assert!(
        f.iter()
            .all(|(_, e)| e.to_lowercase().contains("certificate")),
        "{f:?}"
    );

    // With the CA in the store OpenSSL reads (SSL_CERT_FILE names it), it gets through.
    let out = vouch(&env, &["run"], &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    assert_code(&out, 0);
    let mut paths = server.paths();
    paths.sort();
    assert_eq!(paths, ["GET /ping/start", "POST /hook", "POST /ping/0"]);
    assert_eq!(server.find("/hook").json()["result"], "success");
    let rec = record(&env);
    assert_eq!(failures(&rec), []);
    assert_eq!(sent(&rec), ["webhook", "ping"]);
}

#[test]
fn a_redirect_is_a_failed_notification_and_the_payload_is_not_resent_elsewhere() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), "alpha\n").unwrap();
    let server = Server::start(302);
    env.write_config(
        "",
        &notify_section(&[format!("webhook = \"{}\"", server.url("/hook/"))]),
    );
    assert_code(&vouch(&env, &["run"], &[]), 0);
    // The URL is used as written (trailing slash kept), and the redirect is not followed.
    assert_eq!(server.paths(), ["POST /hook/"]);
    let rec = record(&env);
    let f = failures(&rec);
    assert_eq!(f.len(), 1, "{rec}");
    assert_eq!(f[0].0, "webhook");
    assert!(f[0].1.contains("HTTP 302"), "{rec}");
}

#[test]
fn credentials_in_a_url_never_reach_the_record_and_no_channel_clears_it() {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), "alpha\n").unwrap();
    let url = closed_port_url().replace("http://", "http://user:s3cret@");
    env.write_config("", &notify_section(&[format!("webhook = \"{url}\"")]));
    let out = vouch(&env, &["run"], &[]);
    assert_code(&out, 0);
    let text = fs::read_to_string(env.state.join("notify.json")).unwrap();
    assert!(
        !text.contains("s3cret") && !text.contains("user:"),
        "{text}"
    );
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
    assert_eq!(failures(&record(&env)).len(), 1);
    // The channel is removed from the config: its old failure no longer applies.
    env.write_config("", "");
    assert_code(&vouch(&env, &["run"], &[]), 0);
    assert!(!env.state.join("notify.json").exists());
}

/// Three good runs of a small source into a config without notifications (the history a size
/// verdict needs), then the source grown about sixfold and the config replaced by one with
/// `target_extra` (after the target's keys) and `extra` (sections of its own).
fn grown_after_three_runs(env: &Env, target_extra: &str, extra: &str) {
    fs::write(env.src.join("data.bin"), util::noise(20_000, 1)).unwrap();
    env.write_config("", "min-free = \"1MiB\"\n");
    for _ in 0..3 {
        assert_code(&vouch(env, &["run"], &[]), 0);
    }
    assert_eq!(env.archives().len(), 3);
    fs::write(env.src.join("more.bin"), util::noise(100_000, 2)).unwrap();
    env.write_config(
        "",
        &format!("min-free = \"1MiB\"\n{target_extra}\n\n{extra}"),
    );
}

/// Webhook and ping on `server`.
fn webhook_and_ping(server: &Server) -> String {
    notify_section(&[
        format!("webhook = \"{}\"", server.url("/hook")),
        format!("ping = \"{}\"", server.url("/ping")),
    ])
}

#[test]
fn a_size_anomaly_that_fails_the_run_alerts_35_and_prunes_nothing() {
    let env = Env::new();
    let server = Server::start(200);
    // keep = { last = 1 } would delete the three older archives after a good run.
    grown_after_three_runs(
        &env,
        "keep = { last = 1 }",
        &format!(
            "[health]\non-anomaly = \"fail\"\n\n{}",
            webhook_and_ping(&server)
        ),
    );
    let before = env.target_files();
    let out = vouch(&env, &["run"], &[]);
    assert_code(&out, 35);

    let paths = server.paths();
    let pings: Vec<&String> = paths.iter().filter(|p| p.contains("/ping")).collect();
    assert_eq!(pings, ["GET /ping/start", "POST /ping/35"], "{paths:?}");
    assert!(!paths.iter().any(|p| p.ends_with("/0")), "{paths:?}");
    let body = server.find("/hook").json();
    assert_eq!(body["result"], "failure");
    assert_eq!(body["exit-code"], 35);
    assert_eq!(body["exit-name"], "ANOMALY");
    // The archive was kept and committed: the payload names it, and its size warning is the
    // reason.
    let newest = env.archives().pop().unwrap();
    assert_eq!(body["archive"], file_name(&newest).as_str());
    let reasons = body["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{body}");
    let reason = reasons[0].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("ANOMALY: {} is ", file_name(&newest)))
            && reason.contains("where recent archives are about")
            && reason.ends_with("(more than 20% apart)"),
        "{reason}"
    );
    let text = server.find("/ping/35").text();
    assert!(
        text.contains("failure") && text.contains("ANOMALY"),
        "{text}"
    );
    assert_eq!(record(&env)["exit-code"], 35);

    // Retention did not run after the failed run: everything is still there, plus the new
    // archive and its receipt.
    let after = env.target_files();
    assert_eq!(after.len(), before.len() + 2, "{after:?}");
    assert!(before.iter().all(|f| after.contains(f)), "{after:?}");
    assert_eq!(env.archives().len(), 4);
}

#[test]
fn a_failed_prune_alerts_36_with_the_size_warning() {
    let env = Env::new();
    let server = Server::start(200);
    // Warn (the default) on the anomaly, and retention that must delete three archives.
    grown_after_three_runs(&env, "keep = { last = 1 }", &webhook_and_ping(&server));
    let stuck = env.archives()[0].clone();
    let guard = util::Immutable::set(&stuck);
    let out = vouch(&env, &["run"], &[]);
    drop(guard);
    assert_code(&out, 36);

    let paths = server.paths();
    let pings: Vec<&String> = paths.iter().filter(|p| p.contains("/ping")).collect();
    assert_eq!(pings, ["GET /ping/start", "POST /ping/36"], "{paths:?}");
    assert!(!paths.iter().any(|p| p.ends_with("/0")), "{paths:?}");
    let body = server.find("/hook").json();
    assert_eq!(body["result"], "failure");
    assert_eq!(body["exit-code"], 36);
    assert_eq!(body["exit-name"], "PRUNE");
    let newest = env.archives().pop().unwrap();
    assert_eq!(body["archive"], file_name(&newest).as_str());
    let reasons: Vec<&str> = body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{body}");
    assert!(
        reasons[0].starts_with("PRUNE: ") && reasons[0].contains(&file_name(&stuck)),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with(&format!("size anomaly: {} is ", file_name(&newest))),
        "{reasons:?}"
    );
    let text = server.find("/ping/36").text();
    assert!(
        text.contains("failure") && text.contains("PRUNE") && text.contains("size anomaly"),
        "{text}"
    );
    assert_eq!(record(&env)["exit-code"], 36);
    // The other two old archives went; the stuck one and the new one stay.
    let left: Vec<String> = env.archives().iter().map(|a| file_name(a)).collect();
    assert_eq!(left, [file_name(&stuck), file_name(&newest)]);
}

/// A stand-in for `systemctl show` of a unit that last ran fine and then could not start
/// because a mount it needs failed: the unit's properties, then the needed units' states.
fn systemctl_with_failed_mount(env: &Env) -> PathBuf {
    script(
        env,
        "systemctl",
        "case \"$*\" in\n\
         *Id,ActiveState,Result*) printf 'Id=-.mount\\nActiveState=active\\nResult=success\\n\\nId=mnt-usb.mount\\nActiveState=failed\\nResult=exit-code\\n' ;;\n\
         *) printf 'Result=success\\nExecMainStatus=0\\nExecMainCode=1\\nInvocationID=dep01\\nExecStart={ path=/usr/bin/vouch ; argv[]=/usr/bin/vouch run ; code=exited ; status=0 }\\nRequires=-.mount mnt-usb.mount\\n' ;;\n\
         esac",
    )
}

#[test]
fn a_failed_mount_is_named_instead_of_exit_status_0() {
    let env = Env::new();
    env.write_config("", "");
    let systemctl = systemctl_with_failed_mount(&env);
    let out = vouch(
        &env,
        &["notify-failure", "vouch.service"],
        &[("VOUCH_TEST_SYSTEMCTL", systemctl.to_str().unwrap())],
    );
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("vouch.service failed: the unit it needs, mnt-usb.mount, failed (its result: exit-code), so vouch never ran"),
        "{err}"
    );
    assert!(!err.contains("exit status 0"), "{err}");
    let last: Value =
        serde_json::from_str(&fs::read_to_string(env.state.join("last-failure.json")).unwrap())
            .unwrap();
    assert_eq!(last["failed-dependency"], "mnt-usb.mount");
    assert!(
        last["detail"].as_str().unwrap().contains("mnt-usb.mount"),
        "{last}"
    );
}
