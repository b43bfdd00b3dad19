//! `vouch status`, the size check of `vouch run` and the Prometheus textfile, against the built
//! binary: real runs into temporary targets, receipts and state edited the way time, disks and
//! people change them.

mod util;

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use util::{assert_code, noise, promtool_check, sample, stderr, Env};

/// A world with a small incompressible source and a config: `{src}` in `backup_extra` stands
/// for the source directory; `extra` goes after the target's keys (so it may open `[health]`,
/// `[metrics]`, ...).
fn world(backup_extra: &str, extra: &str) -> Env {
    let env = Env::new();
    fs::write(env.src.join("data.bin"), noise(20_000, 1)).unwrap();
    fs::write(env.src.join("vault.enc"), "secret\n").unwrap();
    let backup_extra = backup_extra.replace("{src}", &env.src.display().to_string());
    env.write_config(&backup_extra, &format!("min-free = \"1MiB\"\n{extra}"));
    env
}

fn run_ok(env: &Env) {
    assert_code(&env.vouch(&["run"]), 0);
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `vouch status --json`: the exit code and the parsed report.
fn status_json(env: &Env) -> (i32, Value) {
    let out = env.vouch(&["status", "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", stdout(&out)));
    (out.status.code().unwrap(), json)
}

/// The reasons' messages at `level`.
fn reasons(json: &Value, level: &str) -> Vec<String> {
    json["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["level"] == level)
        .map(|r| r["message"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_status(env: &Env, code: i32, word: &str, fragment: &str) -> String {
    let out = env.vouch(&["status"]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected status {code}:\n{text}{}",
        stderr(&out)
    );
    assert!(
        text.starts_with(&format!("vouch status: {word}\n")),
        "{text}"
    );
    assert!(text.contains(fragment), "expected {fragment:?} in:\n{text}");
    text
}

fn receipt_path(archive: &Path) -> PathBuf {
    PathBuf::from(format!("{}.json", archive.display()))
}

fn edit_receipt(archive: &Path, edit: impl FnOnce(&mut Value)) {
    let path = receipt_path(archive);
    let mut receipt: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut receipt);
    fs::write(&path, serde_json::to_vec_pretty(&receipt).unwrap()).unwrap();
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_good_run_is_healthy_and_the_json_has_the_details() {
    let env = world("", "");
    run_ok(&env);
    assert_status(&env, 0, "healthy", "target local (");
    let (code, json) = status_json(&env);
    assert_eq!(code, 0);
    assert_eq!(json["status"], "healthy");
    assert_eq!(json["code"], 0);
    assert_eq!(json["reasons"], Value::Array(Vec::new()));
    assert_eq!(json["config"], env.config.display().to_string());
    assert_eq!(json["last-run"]["exit-name"], "OK");
    assert!(json["last-run"]["duration-seconds"].as_f64().unwrap() > 0.0);
    let archive = env.archives().pop().unwrap();
    let receipt: Value =
        serde_json::from_slice(&fs::read(receipt_path(&archive)).unwrap()).unwrap();
    let t = &json["targets"][0];
    assert_eq!(t["name"], "local");
    assert_eq!(t["status"], "healthy");
    assert_eq!(t["archives"], 1);
    let latest = &t["latest-verified"];
    assert_eq!(latest["archive"], name_of(&archive));
    assert_eq!(latest["size"], receipt["archive-size"]);
    assert_eq!(latest["files"], receipt["files"]);
    assert_eq!(latest["verified-at"], receipt["verified-at"]);
    assert_eq!(latest["verified"], true);
    assert!(latest["age-seconds"].as_i64().unwrap() < 600);
    assert!(t["free-bytes"].as_u64().unwrap() > 0);
    assert_eq!(t["latest"], t["latest-verified"]);
}

#[test]
fn an_archive_older_than_max_age_is_critical() {
    let env = world("", "[health]\nmax-age = \"1s\"\n");
    run_ok(&env);
    std::thread::sleep(Duration::from_millis(2500));
    assert_status(&env, 2, "critical", "(max-age 1s)");
    let (code, json) = status_json(&env);
    assert_eq!((code, &json["status"]), (2, &Value::from("critical")));
    assert_eq!(json["reasons"][0]["check"], "age");
    assert_eq!(json["reasons"][0]["target"], "local");
}

#[test]
fn an_archive_dated_days_ago_is_critical_under_the_default_max_age() {
    let env = world("", "");
    run_ok(&env);
    let archive = env.archives().pop().unwrap();
    edit_receipt(&archive, |r| {
        r["created"] = "2026-01-01T00:00:00Z".into();
    });
    let text = assert_status(&env, 2, "critical", "(max-age 26h)");
    assert!(text.contains("days old"), "{text}");
}

#[test]
fn a_failed_last_run_is_critical() {
    let env = world("", "");
    run_ok(&env);
    assert_status(&env, 0, "healthy", "");
    fs::remove_dir_all(&env.src).unwrap();
    assert_code(&env.vouch(&["run"]), 12);
    assert_status(&env, 2, "critical", "failed with SOURCE (12)");
}

#[test]
fn a_required_path_missing_from_the_latest_archive_is_critical() {
    let env = world("required = [\"{src}/vault.enc\"]", "");
    run_ok(&env);
    assert_status(&env, 0, "healthy", "");
    let archive = env.archives().pop().unwrap();
    edit_receipt(&archive, |r| {
        assert_eq!(r["required"].as_array().unwrap().len(), 1);
        r["required"][0]["present"] = false.into();
    });
    let vault = env.src.join("vault.enc").display().to_string();
    let text = assert_status(&env, 2, "critical", &vault);
    assert!(text.contains("lacks required path"), "{text}");
}

/// Three runs of the small source, then one with a source about six times larger.
fn grown(env: &Env) -> std::process::Output {
    for _ in 0..3 {
        run_ok(env);
    }
    fs::write(env.src.join("more.bin"), noise(100_000, 2)).unwrap();
    env.vouch(&["run"])
}

#[test]
fn a_much_larger_archive_is_a_warning() {
    let env = world("", "");
    let out = grown(&env);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("size anomaly"), "{}", stderr(&out));
    let text = assert_status(&env, 1, "warning", "against a median of");
    assert!(text.contains("size-tolerance 20%"), "{text}");
    let (_, json) = status_json(&env);
    let t = &json["targets"][0];
    assert!(t["median-size"].as_u64().unwrap() < 30_000);
    assert!(t["latest"]["size"].as_u64().unwrap() > 100_000);
    assert_eq!(json["reasons"][0]["check"], "size");
    assert_eq!(reasons(&json, "warning").len(), 1, "{json}");
}

#[test]
fn a_size_like_the_recent_ones_is_no_anomaly() {
    let env = world("", "");
    for _ in 0..3 {
        run_ok(&env);
    }
    fs::write(env.src.join("data.bin"), noise(21_000, 3)).unwrap();
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    assert!(!stderr(&out).contains("size anomaly"), "{}", stderr(&out));
    assert_status(&env, 0, "healthy", "4 archives");
}

#[test]
fn too_little_history_gives_no_verdict() {
    let env = world("", "[health]\non-anomaly = \"fail\"\n");
    run_ok(&env);
    run_ok(&env);
    fs::write(env.src.join("more.bin"), noise(100_000, 2)).unwrap();
    run_ok(&env);
    assert_status(&env, 0, "healthy", "3 archives");
}

#[test]
fn an_anomaly_under_the_fail_policy_exits_35_and_keeps_the_archive() {
    let env = world("", "[health]\non-anomaly = \"fail\"\n");
    let out = grown(&env);
    assert_code(&out, 35);
    let archives = env.archives();
    assert_eq!(archives.len(), 4, "{:?}", env.target_files());
    let newest = archives.last().unwrap();
    assert!(fs::metadata(newest).unwrap().len() > 100_000);
    assert!(receipt_path(newest).exists());
    // The kept archive is whole: it verifies in full.
    assert_code(&env.vouch(&["verify", newest.to_str().unwrap()]), 0);
    let (code, json) = status_json(&env);
    assert_eq!(code, 2, "{json}");
    assert!(reasons(&json, "critical")
        .iter()
        .any(|m| m.contains("ANOMALY (35)")));
    assert!(reasons(&json, "warning")
        .iter()
        .any(|m| m.contains("against a median of")));
}

#[test]
fn a_failed_notification_is_a_warning() {
    let env = world("", "");
    run_ok(&env);
    fs::write(
        env.state.join("notify.json"),
        r#"{"at": "2026-11-21T03:00:00Z", "run-id": "00000000000000000000000000000000",
            "failures": [{"channel": "webhook", "error": "connection refused"}]}"#,
    )
    .unwrap();
    assert_status(&env, 1, "warning", "webhook (connection refused)");
    fs::write(
        env.state.join("notify.json"),
        r#"{"at": "2026-11-21T03:00:00Z", "run-id": "00000000000000000000000000000000",
            "failures": []}"#,
    )
    .unwrap();
    assert_status(&env, 0, "healthy", "");
}

#[test]
fn a_failed_reverification_is_critical() {
    let env = world("", "");
    run_ok(&env);
    let archive = env.archives().pop().unwrap();
    let mut data = fs::read(&archive).unwrap();
    let at = data.len() / 2;
    data[at] ^= 0x40;
    fs::write(&archive, data).unwrap();
    assert_code(&env.vouch(&["verify"]), 33);
    let (code, json) = status_json(&env);
    assert_eq!(code, 2, "{json}");
    let verify: Vec<&Value> = json["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["check"] == "verify")
        .collect();
    assert_eq!(verify.len(), 1, "{json}");
    assert_eq!(verify[0]["level"], "critical");
    assert!(verify[0]["message"]
        .as_str()
        .unwrap()
        .contains("failed verification"));
    assert_eq!(json["targets"][0]["last-verify"]["ok"], false);
}

#[test]
fn no_verification_for_over_a_week_is_a_warning_until_verify_runs() {
    let env = world("", "[health]\nmax-age = \"30d\"\n");
    run_ok(&env);
    assert_status(&env, 0, "healthy", "");
    let archive = env.archives().pop().unwrap();
    let created = time::OffsetDateTime::now_utc() - time::Duration::days(9);
    edit_receipt(&archive, |r| {
        r["created"] = vouch::run::rfc3339(created).into();
    });
    assert_status(
        &env,
        1,
        "warning",
        "no successful `vouch verify` in the last 8d",
    );
    assert_code(&env.vouch(&["verify", "--latest"]), 0);
    let text = assert_status(&env, 0, "healthy", "last verify passed");
    assert!(!text.contains("warning"), "{text}");
}

#[test]
fn an_unreadable_identity_is_critical() {
    let env = world("", "");
    run_ok(&env);
    fs::remove_file(&env.identity).unwrap();
    assert_status(&env, 2, "critical", &env.identity.display().to_string());
}

#[test]
fn without_config_or_any_trace_of_a_run_status_is_unknown() {
    let env = world("", "");
    // Configured, but never run: no state directory and no archives.
    let never = "vouch has never completed a run here";
    assert_status(&env, 3, "unknown", never);
    // preflight, doctor and verify make the state directory, and verify records what it
    // could not find; none of that is a run.
    assert_code(&env.vouch(&["preflight"]), 0);
    assert!(env.state.is_dir());
    let text = assert_status(&env, 3, "unknown", never);
    assert!(text.contains("`systemctl start vouch.service`"), "{text}");
    assert_code(&env.vouch(&["verify"]), 33);
    assert_status(&env, 3, "unknown", never);
    let (code, json) = status_json(&env);
    assert_eq!(code, 3);
    assert_eq!(json["reasons"][0]["check"], "state", "{json}");
    // A run that failed is a run: critical, not unknown.
    let src = env.src.clone();
    fs::rename(&src, env.dir.path().join("moved")).unwrap();
    assert_code(&env.vouch(&["run"]), 12);
    assert_status(&env, 2, "critical", "failed with SOURCE (12)");
    fs::rename(env.dir.path().join("moved"), &src).unwrap();
    // No config at all.
    let missing = env.dir.path().join("missing.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_vouch"))
        .arg("--config")
        .arg(&missing)
        .args(["status", "--json"])
        .env("STATE_DIRECTORY", &env.state)
        .env("RUNTIME_DIRECTORY", &env.runtime)
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["status"], "unknown");
    assert_eq!(json["reasons"][0]["check"], "config");
    let message = json["reasons"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    // An invalid config names the key.
    fs::write(&env.config, "[backup]\nsources = 5\n").unwrap();
    assert_status(&env, 3, "unknown", "backup.sources");
}

#[test]
fn run_and_status_write_a_textfile_promtool_accepts() {
    let env = Env::new();
    fs::write(env.src.join("data.bin"), noise(20_000, 1)).unwrap();
    let prom = env.dir.path().join("textfile/vouch.prom");
    fs::create_dir_all(prom.parent().unwrap()).unwrap();
    env.write_config(
        "",
        &format!(
            "min-free = \"1MiB\"\n\n[metrics]\ntextfile = \"{}\"\n",
            prom.display()
        ),
    );
    run_ok(&env);
    promtool_check(&prom);
    let text = fs::read_to_string(&prom).unwrap();
    let archive = env.archives().pop().unwrap();
    let receipt: Value =
        serde_json::from_slice(&fs::read(receipt_path(&archive)).unwrap()).unwrap();
    let t = "{target=\"local\"}";
    assert_eq!(
        sample(&text, "vouch_status").as_deref(),
        Some("0"),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("vouch_last_run_exit_code{t}")).as_deref(),
        Some("0")
    );
    assert_eq!(
        sample(&text, &format!("vouch_latest_archive_bytes{t}")),
        Some(receipt["archive-size"].to_string())
    );
    assert_eq!(
        sample(&text, &format!("vouch_latest_archive_files{t}")),
        Some(receipt["files"].to_string())
    );
    let created =
        vouch::target::archives::parse_time(receipt["created"].as_str().unwrap()).unwrap();
    assert_eq!(
        sample(&text, &format!("vouch_last_success_timestamp_seconds{t}")),
        Some(created.unix_timestamp().to_string())
    );
    assert!(sample(&text, &format!("vouch_last_run_duration_seconds{t}")).is_some());
    let names: Vec<String> = fs::read_dir(prom.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["vouch.prom"], "no temporary file may stay behind");

    // verify rewrites the textfile itself, and status exports the same record.
    fs::remove_file(&prom).unwrap();
    assert_code(&env.vouch(&["verify"]), 0);
    promtool_check(&prom);
    let text = fs::read_to_string(&prom).unwrap();
    assert_eq!(
        sample(&text, &format!("vouch_last_verify_ok{t}")).as_deref(),
        Some("1"),
        "vouch verify should write the textfile:\n{text}"
    );
    assert!(sample(&text, &format!("vouch_last_verify_timestamp_seconds{t}")).is_some());
    fs::remove_file(&prom).unwrap();
    assert_code(&env.vouch(&["status"]), 0);
    promtool_check(&prom);
    let text = fs::read_to_string(&prom).unwrap();
    assert_eq!(
        sample(&text, &format!("vouch_last_verify_ok{t}")).as_deref(),
        Some("1")
    );

    // A failed run is in the file too.
    fs::remove_dir_all(&env.src).unwrap();
    assert_code(&env.vouch(&["run"]), 12);
    promtool_check(&prom);
    let text = fs::read_to_string(&prom).unwrap();
    assert_eq!(
        sample(&text, &format!("vouch_last_run_exit_code{t}")).as_deref(),
        Some("12")
    );
    assert_eq!(sample(&text, "vouch_status").as_deref(), Some("2"));
}

#[test]
fn a_textfile_that_cannot_be_written_changes_no_exit_code() {
    let env = world(
        "",
        "[metrics]\ntextfile = \"/nonexistent/vouch-test/vouch.prom\"\n",
    );
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("cannot write the metrics textfile"),
        "{}",
        stderr(&out)
    );
    let out = env.vouch(&["status"]);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("cannot write the metrics textfile"));
}

#[test]
fn each_target_is_judged_on_its_own() {
    let env = Env::new();
    fs::write(env.src.join("data.bin"), noise(20_000, 1)).unwrap();
    let usb = env.dir.path().join("usb");
    fs::create_dir(&usb).unwrap();
    env.write_config(
        "",
        &format!(
            "min-free = \"1MiB\"\n\n[[target]]\nname = \"usb\"\npath = \"{}\"\nmin-free = \"1MiB\"\n",
            usb.display()
        ),
    );
    run_ok(&env);
    assert_status(&env, 0, "healthy", "target usb (");
    for archive in Env::archives_in(&usb) {
        fs::remove_file(receipt_path(&archive)).unwrap();
        fs::remove_file(&archive).unwrap();
    }
    let (code, json) = status_json(&env);
    assert_eq!(code, 2, "{json}");
    assert_eq!(json["targets"][0]["name"], "local");
    assert_eq!(json["targets"][0]["status"], "healthy");
    assert_eq!(json["targets"][1]["name"], "usb");
    assert_eq!(json["targets"][1]["status"], "critical");
    assert_eq!(json["targets"][1]["archives"], 0);
    let critical = reasons(&json, "critical");
    assert_eq!(critical.len(), 1, "{json}");
    assert!(critical[0].starts_with("target usb: "), "{}", critical[0]);
    // An unmounted target directory is critical as well.
    fs::remove_dir(&usb).unwrap();
    assert_status(&env, 2, "critical", "target usb: cannot read");
}

#[test]
fn free_space_is_judged_against_the_next_archive_and_min_free() {
    let env = world("", "");
    run_ok(&env);
    // A min-free larger than any disk here: the next run would fail, so warn now.
    let text = fs::read_to_string(&env.config).unwrap();
    fs::write(
        &env.config,
        text.replace("min-free = \"1MiB\"", "min-free = \"100000TiB\""),
    )
    .unwrap();
    assert_status(&env, 1, "warning", "plus min-free");
    fs::write(&env.config, &text).unwrap();
    assert_status(&env, 0, "healthy", "");
    // An archive bigger than the free space: the next one cannot even be written.
    let archive = env.archives().pop().unwrap();
    edit_receipt(&archive, |r| {
        r["archive-size"] = (1u64 << 60).into();
    });
    assert_status(&env, 2, "critical", "cannot hold the next archive");
}

#[test]
fn runs_without_an_identity_are_a_warning() {
    let env = world("", "");
    let text = fs::read_to_string(&env.config).unwrap();
    let identity_line = format!("identity = \"{}\"", env.identity.display());
    assert!(text.contains(&identity_line));
    fs::write(
        &env.config,
        text.replace(&identity_line, "verify-without-identity = true"),
    )
    .unwrap();
    run_ok(&env);
    let receipt: Value =
        serde_json::from_slice(&fs::read(receipt_path(&env.archives()[0])).unwrap()).unwrap();
    assert_eq!(receipt["verification"], "ciphertext-only");
    assert_status(&env, 1, "warning", "no identity configured");
}

#[test]
fn an_archive_dated_in_the_future_is_named_and_does_not_hide_a_stale_backup() {
    let env = world("", "[health]\nmax-age = \"1h\"\n");
    run_ok(&env);
    let real = env.archives().pop().unwrap();
    // A copy from a host with a wrong clock (or a stray file), dated 2099.
    let name = "test-20990101T000000Z.tar.gz.age";
    fs::copy(&real, env.target.join(name)).unwrap();
    let mut receipt: Value =
        serde_json::from_slice(&fs::read(receipt_path(&real)).unwrap()).unwrap();
    receipt["archive"] = Value::from(name);
    receipt["created"] = Value::from("2099-01-01T00:00:00Z");
    fs::write(
        env.target.join(format!("{name}.json")),
        serde_json::to_vec_pretty(&receipt).unwrap(),
    )
    .unwrap();
    assert_status(&env, 1, "warning", "is dated in the future");
    // The real newest archive is made two hours old: the future one must not stand in for it.
    edit_receipt(&real, |r| {
        let old = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
        r["created"] = Value::from(vouch::run::rfc3339(old));
    });
    assert_status(&env, 2, "critical", "old (max-age 1h)");
}

#[test]
fn a_truncated_newest_archive_is_critical() {
    let env = world("", "");
    run_ok(&env);
    run_ok(&env);
    let newest = env.archives().pop().unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert_status(
        &env,
        2,
        "critical",
        "100 bytes on disk but its receipt says",
    );
}

#[test]
fn damaged_state_files_are_reported() {
    let env = world("", "");
    run_ok(&env);
    fs::write(env.state.join("last-run.json"), "not json").unwrap();
    assert_status(&env, 1, "warning", "last-run.json is not valid JSON");
    fs::write(env.state.join("verified.json"), "[]").unwrap();
    assert_status(&env, 2, "critical", "verified.json is not a JSON object");
}

#[test]
fn the_textfile_after_a_run_agrees_with_status_about_failed_notifications() {
    let env = Env::new();
    fs::write(env.src.join("data.bin"), noise(20_000, 1)).unwrap();
    let prom = env.dir.path().join("vouch.prom");
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    env.write_config(
        "",
        &format!(
            "min-free = \"1MiB\"\n\n[metrics]\ntextfile = \"{}\"\n\n[notify]\nwebhook = \"http://127.0.0.1:1/hook\"\ntimeout = \"2s\"\n",
            prom.display()
        ),
    );
    run_ok(&env);
    let text = fs::read_to_string(&prom).unwrap();
    assert_eq!(
        sample(&text, "vouch_status").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_status(&env, 1, "warning", "webhook");
}

#[test]
fn a_bad_status_command_line_is_unknown() {
    let env = world("", "");
    run_ok(&env);
    for args in [
        &["status", "--bogus"][..],
        &["status", "extra"],
        &["status", "--json", "--json"],
    ] {
        let out = env.vouch(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("error:"),
            "{args:?}: {}",
            stderr(&out)
        );
        if args.contains(&"--json") {
            let json: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(json["status"], "unknown");
            assert_eq!(json["code"], 3);
            assert_eq!(json["reasons"][0]["check"], "usage", "{json}");
            assert_eq!(json["config"], env.config.display().to_string());
        } else {
            let text = stdout(&out);
            assert!(text.starts_with("vouch status: unknown\n"), "{text}");
            assert!(text.contains("unknown: bad command line: "), "{text}");
        }
    }
    // Help is not an error; other commands keep USAGE.
    assert_code(&env.vouch(&["status", "--help"]), 0);
    assert_code(&env.vouch(&["run", "--bogus"]), 2);
    assert_code(&env.vouch(&["list", "--bogus"]), 2);
    assert_code(&env.vouch(&["status"]), 0);
}

#[test]
fn a_receipt_dated_far_in_the_future_is_named_as_the_problem() {
    let env = world("", "");
    run_ok(&env);
    let archive = env.archives()[0].clone();
    edit_receipt(&archive, |r| {
        r["created"] = Value::from("2099-01-01T00:00:00Z")
    });
    let text = assert_status(
        &env,
        2,
        "critical",
        "dated in the future (2099-01-01T00:00:00Z)",
    );
    assert!(!text.contains("holds no archives"), "{text}");
    assert!(text.contains("holds no verified archive"), "{text}");
    let listed = stdout(&env.vouch(&["list"]));
    assert!(listed.contains("RECEIPT INVALID"), "{listed}");
}

/// The shell command of `ExecStopPost=` in units/vouch.service, as systemd would run it for
/// that unit: specifiers expanded, `$$` unescaped.
fn stop_post_script(unit_file: &str, unit: &str) -> String {
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(unit_file)).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStopPost=-/bin/sh -c '"))
        .expect("an ExecStopPost= shell command");
    let script = line
        .strip_suffix('\'')
        .expect("quoted to the end of the line");
    assert!(
        !script.contains("vouch "),
        "the record must not need vouch: {script}"
    );
    script
        .replace("%%", "\u{0}")
        .replace("%n", unit)
        .replace('\u{0}', "%")
        .replace("$$", "$")
}

/// Runs the unit's record command as systemd does after a start that ended so.
fn record_unit_end(env: &Env, unit_file: &str, unit: &str, result: &str, kind: &str, status: &str) {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(stop_post_script(unit_file, unit))
        .env("STATE_DIRECTORY", &env.state)
        .env("SERVICE_RESULT", result)
        .env("EXIT_CODE", kind)
        .env("EXIT_STATUS", status)
        .output()
        .unwrap();
    assert_code(&out, 0);
}

#[test]
fn a_unit_that_could_not_start_vouch_is_critical_until_a_later_run() {
    let env = world("", "");
    run_ok(&env);
    assert_status(&env, 0, "healthy", "");
    // One second later, so the record is clearly newer than the run.
    std::thread::sleep(Duration::from_millis(1100));
    record_unit_end(
        &env,
        "units/vouch.service",
        "vouch.service",
        "exit-code",
        "exited",
        "203",
    );
    let record = fs::read_to_string(env.state.join("vouch.service.result")).unwrap();
    assert!(
        record.contains("result=exit-code\n") && record.contains("exit-status=203\n"),
        "{record}"
    );
    let text = assert_status(
        &env,
        2,
        "critical",
        "vouch.service failed: 203/EXEC (the vouch binary could not be started)",
    );
    assert!(
        text.contains("last run: OK"),
        "the last run itself stays what it was:\n{text}"
    );
    // A run after it supersedes the failure.
    std::thread::sleep(Duration::from_millis(1100));
    run_ok(&env);
    assert_status(&env, 0, "healthy", "");
    // A success recorded by the unit also clears it.
    record_unit_end(
        &env,
        "units/vouch.service",
        "vouch.service",
        "exit-code",
        "exited",
        "203",
    );
    std::thread::sleep(Duration::from_millis(1100));
    record_unit_end(
        &env,
        "units/vouch.service",
        "vouch.service",
        "success",
        "exited",
        "0",
    );
    assert_status(&env, 0, "healthy", "");
}

#[test]
fn the_last_runs_own_failure_is_reported_once() {
    let env = world("", "");
    run_ok(&env);
    fs::remove_dir_all(&env.src).unwrap();
    assert_code(&env.vouch(&["run"]), 12);
    record_unit_end(
        &env,
        "units/vouch.service",
        "vouch.service",
        "exit-code",
        "exited",
        "12",
    );
    let (code, json) = status_json(&env);
    assert_eq!(code, 2);
    let critical = reasons(&json, "critical");
    assert!(
        critical.iter().any(|r| r.contains("SOURCE (12)")),
        "{critical:?}"
    );
    assert!(
        !critical.iter().any(|r| r.contains("vouch.service failed")),
        "{critical:?}"
    );
}

#[test]
fn a_failed_restore_test_unit_is_critical() {
    let env = world("", "");
    run_ok(&env);
    record_unit_end(
        &env,
        "units/vouch-verify.service",
        "vouch-verify.service",
        "exit-code",
        "exited",
        "13",
    );
    assert_status(
        &env,
        2,
        "critical",
        "vouch-verify.service failed: exit status 13 (KEY)",
    );
}

#[test]
fn notify_failures_record_of_a_failed_dependency_is_critical() {
    let env = world("", "");
    run_ok(&env);
    std::thread::sleep(Duration::from_millis(1100));
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let record = serde_json::json!({
        "unit": "vouch.service",
        "result": "success",
        "exit-status": "0",
        "exit-name": null,
        "invocation": "",
        "detail": "the unit it needs, mnt-stick.mount, failed (its result: exit-code), so vouch never ran: read `journalctl -u mnt-stick.mount`",
        "failed-dependency": "mnt-stick.mount",
        "recorded": now,
    });
    fs::write(env.state.join("last-failure.json"), record.to_string()).unwrap();
    assert_status(&env, 2, "critical", "mnt-stick.mount, failed");
}

#[test]
fn systemds_own_record_of_a_failed_start_is_read() {
    let env = world("", "");
    run_ok(&env);
    let later = time::OffsetDateTime::now_utc().unix_timestamp() + 2;
    let fake = env.state.parent().unwrap().join("fake-systemctl");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncase \"$*\" in *vouch.service) printf 'Result=exit-code\\nExecMainStatus=203\\nExecMainCode=1\\nInactiveExitTimestamp=@{later}\\n';; *) printf 'Result=success\\n';; esac\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = env
        .command(&["status"])
        .env("VOUCH_TEST_SYSTEMCTL", &fake)
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(
        stdout(&out).contains("vouch.service failed: 203/EXEC"),
        "{}",
        stdout(&out)
    );
}
