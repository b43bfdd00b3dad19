//! Notifications: a webhook, Healthchecks-style pings and a command, from `[notify]`.
//!
//! Three channels, each optional:
//!
//! - **webhook**: `POST URL` with the [`Outcome`] as JSON (see [`payload`]);
//! - **ping**: `GET PING/start` when a run starts, `POST PING/EXITCODE` with a short plain-text
//!   body when it ends. Healthchecks (and services that copy it) take `/0` as success and any
//!   other number as failure, so a run that exits non-zero can never send a success ping;
//! - **command**: the argv is started without a shell, with the outcome in `VOUCH_*`
//!   environment variables ([`environment`]) and the JSON on stdin.
//!
//! Every request has a connect and a whole-request time limit (`[notify] timeout`), and the
//! command is killed (its whole process group) when it runs longer. The channels are sent in
//! parallel, so a dead one delays the others by nothing and the run by at most its timeout.
//!
//! A channel that fails (refused, timed out, non-2xx, command failed) never changes the run's
//! exit code: it is logged as a journal warning naming the channel and the fix, and recorded in
//! `$STATE_DIRECTORY/notify.json` ([`NotifyRecord`]), which `vouch status` reads. The record also
//! keeps systemd's `$INVOCATION_ID`, so `vouch notify-failure`, started by `OnFailure=` for the
//! same failed invocation, can tell which channels already carry the failure and skip them.

use crate::config::Notify;
use crate::host::dirs::Dirs;
use crate::report::outcome::Outcome;
use crate::systemd::journal::{self, Entry};
use crate::systemd::sdnotify::human_bytes;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// The state file recording the last notification attempt, for `status`.
pub const RECORD: &str = "notify.json";

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("vouch/", env!("CARGO_PKG_VERSION"));

/// How long past `[notify] timeout` a channel may take before it is given up on. The HTTP
/// client and the command enforce the timeout themselves; this only guards against a channel
/// that would not stop (it is left behind and dies with the process).
const GRACE: Duration = Duration::from_secs(2);

/// How often a running command is checked for having exited.
const POLL: Duration = Duration::from_millis(20);

/// A failed `/start` ping, kept until the end of the run records it with the rest.
static START_FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// One way of telling someone how a run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `[notify] webhook`.
    Webhook,
    /// `[notify] ping`.
    Ping,
    /// `[notify] command`.
    Command,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 3] = [Channel::Webhook, Channel::Ping, Channel::Command];

    /// The name used in the journal and in `notify.json`.
    pub const fn name(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Ping => "ping",
            Channel::Command => "command",
        }
    }

    /// Whether the config sets this channel up.
    pub fn configured(self, notify: &Notify) -> bool {
        match self {
            Channel::Webhook => notify.webhook.is_some(),
            Channel::Ping => notify.ping.is_some(),
            Channel::Command => notify.command.is_some(),
        }
    }

    /// What to do when the channel fails, in one sentence.
    pub fn hint(self) -> &'static str {
        match self {
            Channel::Webhook => {
                "Check that [notify] webhook is the right URL and reachable from this host \
                 (try `curl -X POST URL`), or raise [notify] timeout."
            }
            Channel::Ping => {
                "Check that [notify] ping is the right check URL and reachable from this host \
                 (try `curl URL/0`), or raise [notify] timeout."
            }
            Channel::Command => {
                "Run the [notify] command by hand and make it exit 0 within [notify] timeout; \
                 it gets the result in VOUCH_* variables and the JSON on stdin."
            }
        }
    }
}

/// The last time results were sent, and what failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NotifyRecord {
    /// RFC 3339 time of the attempt.
    pub at: String,
    /// The run it was about.
    pub run_id: String,
    /// The channels that failed, with why (empty when all got through).
    pub failures: Vec<ChannelFailure>,
    /// The channels that got the result (`webhook`, `ping`, `command`).
    #[serde(default)]
    pub sent: Vec<String>,
    /// `success` or `failure`: what was sent.
    #[serde(default)]
    pub result: String,
    /// The exit code that was sent.
    #[serde(default)]
    pub exit_code: u8,
    /// systemd's `$INVOCATION_ID` of the unit run it was about, when there was one.
    #[serde(default)]
    pub invocation: Option<String>,
}

/// One channel that could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChannelFailure {
    /// `webhook`, `ping` or `command`; `config` when the channels could not even be read.
    pub channel: String,
    /// What went wrong.
    pub error: String,
}

impl NotifyRecord {
    /// Reads the record, if there is one.
    pub fn load(state: &Path) -> Option<NotifyRecord> {
        let path = state.join(RECORD);
        let bytes = crate::host::bounded::read(
            &path,
            crate::host::bounded::Links::Refuse,
            crate::host::bounded::STATE_CAP,
        )
        .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the record (atomically) into the state directory.
    pub fn save(&self, state: &Path) -> std::io::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        json.push(b'\n');
        std::fs::create_dir_all(state)?;
        crate::target::local::write_atomic(state, RECORD, &json, journal::run_id()).map(|_| ())
    }

    /// The channels that already carry a failure of the unit run `invocation`: empty unless
    /// this record is about that very invocation and what it sent was a failure.
    pub fn failure_sent_for(&self, invocation: &str) -> Vec<Channel> {
        if invocation.is_empty()
            || self.invocation.as_deref() != Some(invocation)
            || self.exit_code == 0
        {
            return Vec::new();
        }
        Channel::ALL
            .into_iter()
            .filter(|c| self.sent.iter().any(|s| s == c.name()))
            .collect()
    }
}

/// The webhook body (and the command's stdin): the outcome, plus vouch's version and the
/// one-line summary.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Payload<'a> {
    /// The version of vouch that sent it.
    pub vouch_version: &'static str,
    /// [`summary`] of the outcome.
    pub summary: String,
    /// Everything else.
    #[serde(flatten)]
    pub outcome: &'a Outcome,
}

/// The JSON sent to the webhook and to the command's stdin.
pub fn payload(outcome: &Outcome) -> Vec<u8> {
    let p = Payload {
        vouch_version: env!("CARGO_PKG_VERSION"),
        summary: summary(outcome),
        outcome,
    };
    let mut json = serde_json::to_vec(&p).unwrap_or_default();
    json.push(b'\n');
    json
}

/// The outcome in one line, e.g.
/// `vouch web1 on host1: success: web1-20260101T000000Z.tar.gz.age on local (12 files, ...)`.
pub fn summary(o: &Outcome) -> String {
    let who = format!("vouch {} on {}", o.name, o.host);
    if !o.succeeded() {
        return format!("{who}: failure: exit {} {}", o.exit_code, o.exit_name);
    }
    let mut line = format!("{who}: success");
    if let Some(a) = &o.archive {
        line.push_str(&format!(": {a}"));
        if !o.targets.is_empty() {
            line.push_str(&format!(" on {}", o.targets.join(", ")));
        }
    }
    let mut figures = Vec::new();
    if let Some(f) = o.files {
        figures.push(format!("{f} file{}", if f == 1 { "" } else { "s" }));
    }
    if let Some(b) = o.bytes_in {
        figures.push(format!("{} in", human_bytes(b)));
    }
    if let Some(b) = o.archive_bytes {
        figures.push(format!("{} archive", human_bytes(b)));
    }
    if !figures.is_empty() {
        line.push_str(&format!(" ({})", figures.join(", ")));
    }
    line
}

/// The ping body: the summary, then each reason and the fix on lines of their own.
pub fn text(o: &Outcome) -> String {
    let mut t = summary(o);
    t.push('\n');
    for r in &o.reasons {
        t.push_str(r);
        t.push('\n');
    }
    if let Some(h) = &o.hint {
        t.push_str(&format!("fix: {h}\n"));
    }
    t
}

/// The command's environment. Values that are unknown are empty, never unset, so scripts
/// with `set -u` work. `VOUCH_REASONS` has one reason per line.
pub fn environment(o: &Outcome) -> Vec<(&'static str, String)> {
    let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    vec![
        ("VOUCH_RESULT", o.result.clone()),
        ("VOUCH_EXIT_CODE", o.exit_code.to_string()),
        ("VOUCH_EXIT_NAME", o.exit_name.clone()),
        ("VOUCH_RUN_ID", o.run_id.clone()),
        ("VOUCH_HOST", o.host.clone()),
        ("VOUCH_NAME", o.name.clone()),
        ("VOUCH_STARTED", o.started.clone().unwrap_or_default()),
        ("VOUCH_FINISHED", o.finished.clone()),
        (
            "VOUCH_DURATION_SECONDS",
            o.duration_seconds
                .map(|d| format!("{d:.3}"))
                .unwrap_or_default(),
        ),
        ("VOUCH_ARCHIVE", o.archive.clone().unwrap_or_default()),
        ("VOUCH_TARGETS", o.targets.join(",")),
        ("VOUCH_ARCHIVE_BYTES", opt(o.archive_bytes)),
        ("VOUCH_BYTES_IN", opt(o.bytes_in)),
        ("VOUCH_FILES", opt(o.files)),
        ("VOUCH_REASONS", o.reasons.join("\n")),
        ("VOUCH_HINT", o.hint.clone().unwrap_or_default()),
        ("VOUCH_SUMMARY", summary(o)),
    ]
}

/// Tells the ping URL that a run started (`URL/start`). A failure is logged now and recorded
/// with the end of the run.
pub fn run_started(notify: &Notify, _dirs: &Dirs) {
    let Some(ping) = &notify.ping else {
        return;
    };
    if let Err(e) = http(notify.timeout, &ping_url(ping, "start"), None) {
        let error = format!("/start: {e}");
        warn(Channel::Ping, &format!("ping notification failed: {error}"));
        if let Ok(mut slot) = START_FAILURE.lock() {
            *slot = Some(error);
        }
    }
}

/// Sends the final result to every channel. Failures are logged and recorded for `status`;
/// they never change the run's exit code.
pub fn send(notify: &Notify, dirs: &Dirs, outcome: &Outcome) {
    let invocation = std::env::var("INVOCATION_ID")
        .ok()
        .filter(|s| !s.is_empty());
    send_to(notify, dirs, outcome, invocation, &[]);
}

/// Sends `outcome` to every configured channel except `skip` and records the attempt (for
/// systemd's invocation `invocation`, when there is one) in `notify.json`. Channels in `skip`
/// count as sent. Returns the record; without any configured channel, nothing is sent or
/// recorded and it returns `None`.
pub fn send_to(
    notify: &Notify,
    dirs: &Dirs,
    outcome: &Outcome,
    invocation: Option<String>,
    skip: &[Channel],
) -> Option<NotifyRecord> {
    if !notify.any() {
        // No channel any more: an old record's failures no longer apply.
        let _ = std::fs::remove_file(dirs.state.join(RECORD));
        return None;
    }
    let channels: Vec<Channel> = Channel::ALL
        .into_iter()
        .filter(|c| c.configured(notify) && !skip.contains(c))
        .collect();
    let mut record = NotifyRecord {
        at: crate::run::rfc3339(time::OffsetDateTime::now_utc()),
        run_id: outcome.run_id.clone(),
        failures: Vec::new(),
        sent: skip
            .iter()
            .filter(|c| c.configured(notify))
            .map(|c| c.name().to_owned())
            .collect(),
        result: outcome.result.clone(),
        exit_code: outcome.exit_code,
        invocation,
    };
    if let Some(e) = START_FAILURE.lock().ok().and_then(|mut s| s.take()) {
        record.failures.push(ChannelFailure {
            channel: Channel::Ping.name().into(),
            error: e,
        });
    }
    for (channel, result) in deliver(notify, outcome, &channels) {
        match result {
            Ok(()) => {
                log::debug!("notification sent to {}", channel.name());
                record.sent.push(channel.name().into());
            }
            Err(e) => {
                warn(
                    channel,
                    &format!("{} notification failed: {e}", channel.name()),
                );
                record.failures.push(ChannelFailure {
                    channel: channel.name().into(),
                    error: e,
                });
            }
        }
    }
    if let Err(e) = record.save(&dirs.state) {
        log::warn!(
            "cannot record notifications in {}: {e}",
            dirs.state.join(RECORD).display()
        );
    }
    Some(record)
}

/// Logs a failed channel as a journal warning with its fix.
fn warn(channel: Channel, message: &str) {
    Entry::error(message)
        .level(log::Level::Warn)
        .field("VOUCH_NOTIFY_CHANNEL", channel.name())
        .field("VOUCH_HINT", channel.hint())
        .emit();
}

/// Sends to `channels` in parallel and collects their results, in channel order. A channel
/// still busy `GRACE` after the timeout is reported as timed out and left behind.
fn deliver(
    notify: &Notify,
    outcome: &Outcome,
    channels: &[Channel],
) -> Vec<(Channel, Result<(), String>)> {
    let (tx, rx) = mpsc::channel();
    for &channel in channels {
        let notify = notify.clone();
        let outcome = outcome.clone();
        let thread_tx = tx.clone();
        let job = move || {
            let _ = thread_tx.send((channel, one(channel, &notify, &outcome)));
        };
        if let Err(e) = std::thread::Builder::new()
            .name(format!("notify-{}", channel.name()))
            .spawn(job)
        {
            let _ = tx.send((channel, Err(format!("cannot start a thread: {e}"))));
        }
    }
    drop(tx);
    let deadline = Instant::now() + notify.timeout + GRACE;
    let mut results: Vec<(Channel, Result<(), String>)> = Vec::new();
    while results.len() < channels.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => results.push(r),
            Err(_) => break,
        }
    }
    for &c in channels {
        if !results.iter().any(|(r, _)| *r == c) {
            results.push((
                c,
                Err(format!(
                    "no answer within the timeout of {}",
                    seconds(notify.timeout)
                )),
            ));
        }
    }
    results.sort_by_key(|(c, _)| Channel::ALL.iter().position(|a| a == c));
    results
}

/// Sends to one channel.
fn one(channel: Channel, notify: &Notify, outcome: &Outcome) -> Result<(), String> {
    match channel {
        Channel::Webhook => match &notify.webhook {
            Some(url) => http(
                notify.timeout,
                url,
                Some(("application/json", payload(outcome))),
            ),
            None => Ok(()),
        },
        Channel::Ping => match &notify.ping {
            Some(ping) => http(
                notify.timeout,
                &ping_url(ping, &outcome.exit_code.to_string()),
                Some(("text/plain; charset=utf-8", text(outcome).into_bytes())),
            ),
            None => Ok(()),
        },
        Channel::Command => match &notify.command {
            Some(argv) => command(argv, outcome, notify.timeout),
            None => Ok(()),
        },
    }
}

/// `PING/SUFFIX`, keeping a query string (`?create=1`) at the end.
pub fn ping_url(ping: &str, suffix: &str) -> String {
    let (base, query) = match ping.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (ping, None),
    };
    let mut url = format!("{}/{suffix}", base.trim_end_matches('/'));
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// The scheme, host and port of `url`, for messages: paths of webhook and ping URLs often
/// carry the secret that authorizes them, and logs and `notify.json` must not.
/// `user:password@` before the host is left out too.
pub fn origin(url: &str) -> String {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[after_scheme..];
    let end = rest.find(['/', '?', '#']);
    let authority = &rest[..end.unwrap_or(rest.len())];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let shown = format!("{}{host}", &url[..after_scheme]);
    match end {
        Some(_) => format!("{shown}/..."),
        None => shown,
    }
}

/// A number of seconds as people write it: `1s`, `2.5s`.
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// One request: `GET URL` without a body, `POST URL` with one. Any 2xx is success.
fn http(timeout: Duration, url: &str, body: Option<(&str, Vec<u8>)>) -> Result<(), String> {
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::NativeTls)
        // native-tls with the platform's roots: OpenSSL's store, on Debian the
        // ca-certificates bundle in /etc/ssl/certs.
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    let agent = ureq::Agent::config_builder()
        .timeout_connect(Some(timeout))
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // A redirect would turn the POST into a GET without the payload and still look like
        // success: an answer of 3xx is reported as a failure instead.
        .max_redirects(0)
        .user_agent(USER_AGENT)
        .tls_config(tls)
        .build()
        .new_agent();
    let (method, response) = match body {
        None => ("GET", agent.get(url).call()),
        Some((content_type, bytes)) => (
            "POST",
            agent
                .post(url)
                .header("Content-Type", content_type)
                .send(&bytes[..]),
        ),
    };
    let site = origin(url);
    let mut response =
        response.map_err(|e| format!("{method} {site}: {}", describe(&e, timeout)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let said = response
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    let said: String = said
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    Err(if said.is_empty() {
        format!("{method} {site}: answered HTTP {status}")
    } else {
        format!("{method} {site}: answered HTTP {status}: {said}")
    })
}

/// An HTTP client error in words.
fn describe(e: &ureq::Error, timeout: Duration) -> String {
    match e {
        ureq::Error::Timeout(_) => format!("no answer within the timeout of {}", seconds(timeout)),
        ureq::Error::Io(io) => format!("{io}"),
        other => other.to_string(),
    }
}

/// Runs the command with the outcome in its environment and the JSON on stdin; kills its
/// process group when it runs past `timeout`. Its stdout goes to vouch's stderr (the journal
/// under systemd), so it cannot mix with vouch's own output.
fn command(argv: &[String], outcome: &Outcome, timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("the command is empty".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(environment(outcome))
        // It may not speak for vouch to systemd.
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0);
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => cmd.stdout(Stdio::from(fd)),
        Err(_) => cmd.stdout(Stdio::null()),
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let json = payload(outcome);
        // A command that never reads stdin must not block vouch: the writer is left behind
        // and ends with a broken pipe once the command is gone.
        let _ = std::thread::Builder::new()
            .name("notify-stdin".into())
            .spawn(move || {
                let _ = stdin.write_all(&json);
            });
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(match (status.code(), status.signal()) {
                    (Some(code), _) => format!("{program} exited with status {code}"),
                    (None, Some(sig)) => format!("{program} was killed by signal {sig}"),
                    _ => format!("{program} failed: {status}"),
                })
            }
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for {program}: {e}")),
        }
        if Instant::now() >= deadline {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{program} was still running after the timeout of {} and was killed",
                seconds(timeout)
            ));
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitCode;

    fn outcome(code: ExitCode) -> Outcome {
        let mut o = Outcome::new(code, "web1");
        o.host = "host1".into();
        o
    }

    #[test]
    fn ping_urls_keep_their_query() {
        assert_eq!(ping_url("https://hc/x", "start"), "https://hc/x/start");
        assert_eq!(ping_url("https://hc/x/", "0"), "https://hc/x/0");
        assert_eq!(
            ping_url("https://hc/x?create=1", "32"),
            "https://hc/x/32?create=1"
        );
    }

    #[test]
    fn messages_show_only_the_origin_of_urls() {
        assert_eq!(
            origin("https://hooks.example/services/T0/SECRET"),
            "https://hooks.example/..."
        );
        assert_eq!(origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(origin("http://h:1?token=x"), "http://h:1/...");
        assert_eq!(
            origin("https://user:s3cret@hooks.example:8443/x"),
            "https://hooks.example:8443/..."
        );
        assert_eq!(origin("http://u:p@[::1]:9"), "http://[::1]:9");
    }

    #[test]
    fn summaries_say_the_result() {
        let mut ok = outcome(ExitCode::Ok);
        ok.archive = Some("web1-20260101T000000Z.tar.gz.age".into());
        ok.targets = vec!["local".into(), "nas".into()];
        ok.files = Some(12);
        assert_eq!(
            summary(&ok),
            "vouch web1 on host1: success: web1-20260101T000000Z.tar.gz.age on local, nas (12 files)"
        );
        let mut bad = outcome(ExitCode::Required);
        bad.reasons = vec!["REQUIRED: /x is missing".into()];
        bad.hint = Some("add it".into());
        assert_eq!(
            summary(&bad),
            "vouch web1 on host1: failure: exit 32 REQUIRED"
        );
        assert_eq!(
            text(&bad),
            "vouch web1 on host1: failure: exit 32 REQUIRED\nREQUIRED: /x is missing\nfix: add it\n"
        );
    }

    #[test]
    fn payload_is_the_outcome_with_version_and_summary() {
        let o = outcome(ExitCode::TargetMissing);
        let v: serde_json::Value = serde_json::from_slice(&payload(&o)).unwrap();
        assert_eq!(v["exit-code"], 14);
        assert_eq!(v["exit-name"], "TARGET_MISSING");
        assert_eq!(v["result"], "failure");
        assert_eq!(v["host"], "host1");
        assert_eq!(v["vouch-version"], env!("CARGO_PKG_VERSION"));
        assert!(v["summary"].as_str().unwrap().contains("exit 14"));
    }

    #[test]
    fn environment_has_every_value_set() {
        let env = environment(&outcome(ExitCode::Ok));
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("VOUCH_RESULT"), Some("success"));
        assert_eq!(get("VOUCH_EXIT_CODE"), Some("0"));
        assert_eq!(get("VOUCH_ARCHIVE"), Some(""));
        assert!(env.iter().all(|(k, _)| k.starts_with("VOUCH_")));
    }

    #[test]
    fn only_a_sent_failure_of_the_same_invocation_counts() {
        let mut r = NotifyRecord {
            at: "2026-01-01T00:00:00Z".into(),
            run_id: "r".into(),
            failures: vec![ChannelFailure {
                channel: "command".into(),
                error: "x".into(),
            }],
            sent: vec!["webhook".into(), "ping".into()],
            result: "failure".into(),
            exit_code: 32,
            invocation: Some("abc".into()),
        };
        assert_eq!(
            r.failure_sent_for("abc"),
            vec![Channel::Webhook, Channel::Ping]
        );
        assert!(r.failure_sent_for("other").is_empty());
        assert!(r.failure_sent_for("").is_empty());
        r.exit_code = 0;
        assert!(r.failure_sent_for("abc").is_empty());
    }

    #[test]
    fn old_records_still_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(RECORD),
            r#"{"at":"2026-01-01T00:00:00Z","run-id":"r","failures":[]}"#,
        )
        .unwrap();
        let r = NotifyRecord::load(dir.path()).unwrap();
        assert_eq!(r.run_id, "r");
        assert!(r.invocation.is_none());
    }
}
