//! `vouch verify`: the weekly restore test, against archives damaged in every way a disk or a
//! person can damage them.

mod util;

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use util::{assert_code, promtool_check, resume, sample, stderr, wait_stopped, Env};

fn backed_up(extra: &str) -> Env {
    let env = Env::new();
    let data: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    fs::write(env.src.join("data.bin"), data).unwrap();
    fs::write(env.src.join("notes.txt"), "notes\n").unwrap();
    env.write_config("", extra);
    assert_code(&env.vouch(&["run"]), 0);
    env
}

fn only_archive(env: &Env) -> PathBuf {
    let a = env.archives();
    assert_eq!(a.len(), 1, "{:?}", env.target_files());
    a[0].clone()
}

fn flip_byte(path: &Path, at: u64) {
    let mut data = fs::read(path).unwrap();
    data[at as usize] ^= 0x40;
    fs::write(path, data).unwrap();
}

fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A source file's path as stored in the archive (relative to `/`).
fn stored(env: &Env, file: &str) -> String {
    env.src
        .join(file)
        .strip_prefix("/")
        .unwrap()
        .display()
        .to_string()
}

/// Runs a verification that must fail with 33 on `archive`; returns the detail of its `FAIL`
/// line, after checking that the line and the journal entry (stderr) name the archive.
fn failure_detail(env: &Env, args: &[&str], archive: &Path) -> String {
    let out = env.vouch(args);
    assert_code(&out, 33);
    let text = stdout(&out);
    let name = name_of(archive);
    let prefix = format!("FAIL  local  {name}  ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no FAIL line for {name} in:\n{text}"));
    assert!(
        stderr(&out).contains(&format!("VERIFY: {name}: ")),
        "{}",
        stderr(&out)
    );
    line[prefix.len()..].to_owned()
}

/// Where the encrypted payload starts: after the age header's MAC line and the 16-byte nonce.
fn payload_start(archive: &Path) -> usize {
    let data = fs::read(archive).unwrap();
    let mac = data.windows(5).position(|w| w == b"\n--- ").unwrap();
    let end = mac + 1 + data[mac + 1..].iter().position(|&b| b == b'\n').unwrap();
    end + 1 + 16
}

/// The verification log.
fn log(env: &Env) -> Value {
    serde_json::from_slice(&fs::read(env.state.join("verified.json")).unwrap()).unwrap()
}

fn assert_verify_fails(env: &Env, args: &[&str], fragment: &str) {
    let out = env.vouch(args);
    assert_code(&out, 33);
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(all.contains(fragment), "expected {fragment:?} in:\n{all}");
}

#[test]
fn a_good_archive_verifies_and_the_result_is_recorded() {
    let env = backed_up("");
    let out = env.vouch(&["verify"]);
    assert_code(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok "));
    let record = fs::read_to_string(env.state.join("verified.json")).unwrap();
    let name = only_archive(&env)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(record.contains(&format!("local/{name}")), "{record}");
    assert_code(&env.vouch(&["verify", "--all"]), 0);
    assert_code(
        &env.vouch(&["verify", only_archive(&env).to_str().unwrap()]),
        0,
    );
}

#[test]
fn on_a_terminal_verify_and_run_show_a_progress_line() {
    let env = backed_up("");
    let out = env.on_terminal(&["verify"]);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_code(&out, 0);
    assert!(
        screen.contains("\rverifying ") && screen.contains(".age: "),
        "no progress line on the terminal:\n{screen:?}"
    );
    assert!(screen.contains(" of ~"), "no expected total:\n{screen:?}");
    let out = env.on_terminal(&["run"]);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_code(&out, 0);
    assert!(screen.contains("\rarchiving: "), "{screen:?}");
    assert!(screen.contains("\rverifying: "), "{screen:?}");
    // Without a terminal there is no such line.
    let out = env.vouch(&["verify"]);
    assert_code(&out, 0);
    assert!(!stderr(&out).contains('\r'), "{}", stderr(&out));
}

#[test]
fn a_flipped_bit_anywhere_is_33_and_the_message_says_where() {
    let env = backed_up("");
    let archive = only_archive(&env);
    let len = fs::metadata(&archive).unwrap().len() as usize;
    let original = fs::read(&archive).unwrap();
    let payload = payload_start(&archive);
    let data = format!("{}: cannot read its data: ", stored(&env, "data.bin"));
    // Every entry of the archive, for damage near its end.
    let entries = [
        stored(&env, "data.bin"),
        stored(&env, "notes.txt"),
        ".vouch/manifest.json".to_owned(),
        ".vouch/SHA256SUMS".to_owned(),
    ];
    for (at, expected) in [
        (10, vec!["(in the age header, before the first entry)".to_owned()]),
        // The header's MAC line, just before the 16-byte nonce.
        (
            payload - 20,
            vec!["(in the age header, before the first entry)".to_owned()],
        ),
        (
            payload + 10,
            vec![format!(
                "the archive is damaged before the first entry: decryption error (near byte {payload} of the archive)"
            )],
        ),
        (len / 2, vec![data.clone()]),
        (
            len - 20,
            entries
                .iter()
                .map(|e| format!("{e}: "))
                .chain(["after the last entry".to_owned()])
                .collect(),
        ),
    ] {
        flip_byte(&archive, at as u64);
        let detail = failure_detail(&env, &["verify"], &archive);
        assert!(
            expected.iter().any(|e| detail.contains(e.as_str())),
            "flip at {at}: expected one of {expected:?} in {detail:?}"
        );
        fs::write(&archive, &original).unwrap();
    }
    assert_code(&env.vouch(&["verify"]), 0);
}

#[test]
fn a_truncated_archive_is_33_and_names_the_entry_being_read() {
    let env = backed_up("");
    let archive = only_archive(&env);
    let len = fs::metadata(&archive).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // The receipt no longer matches either, but the read fails first, inside data.bin.
    let detail = failure_detail(&env, &["verify"], &archive);
    assert!(
        detail.starts_with(&format!(
            "{}: cannot read its data: ",
            stored(&env, "data.bin")
        )),
        "{detail}"
    );
    assert!(detail.contains("of the archive)"), "{detail}");
}

#[test]
fn content_that_differs_from_the_manifest_names_exactly_that_file() {
    let env = Env::new();
    for (name, text) in [
        ("a.txt", "alpha 1\n"),
        ("b.txt", "bravo 2\n"),
        ("c.txt", "charlie 3\n"),
    ] {
        fs::write(env.src.join(name), text).unwrap();
    }
    env.write_config("", "");
    assert_code(&env.vouch(&["run"]), 0);
    let archive = only_archive(&env);
    // Re-encrypt the archive with one byte of b.txt's data changed: manifest, checksum list and
    // every header stay as written, only that file's content no longer matches its SHA-256.
    let plain = env.dir.path().join("plain.tar");
    util::bash_ok(&format!(
        "set -o pipefail; age -d -i '{}' '{}' | gzip -d > '{}'",
        env.identity.display(),
        archive.display(),
        plain.display()
    ));
    let mut tar = fs::read(&plain).unwrap();
    let at = tar.windows(7).position(|w| w == b"bravo 2").unwrap();
    tar[at] = b'B';
    fs::write(&plain, &tar).unwrap();
    util::bash_ok(&format!(
        "set -o pipefail; gzip -c '{}' | age -r '{}' -o '{}'",
        plain.display(),
        env.recipient,
        archive.display()
    ));
    // The receipt describes the new file, so only the contents can tell.
    let bytes = fs::read(&archive).unwrap();
    let receipt_path = PathBuf::from(format!("{}.json", archive.display()));
    let mut receipt: Value = serde_json::from_slice(&fs::read(&receipt_path).unwrap()).unwrap();
    receipt["archive-size"] = Value::from(bytes.len() as u64);
    receipt["archive-sha256"] = Value::from(vouch::pipeline::io::hex(
        &<sha2::Sha256 as sha2::Digest>::digest(&bytes),
    ));
    fs::write(&receipt_path, serde_json::to_vec_pretty(&receipt).unwrap()).unwrap();

    let detail = failure_detail(&env, &["verify"], &archive);
    assert_eq!(
        detail,
        format!(
            "{}: content differs from the manifest (SHA-256)",
            stored(&env, "b.txt")
        )
    );
    let key = format!("local/{}", name_of(&archive));
    assert_eq!(log(&env)[&key]["detail"], Value::from(detail.as_str()));
}

#[test]
fn a_receipt_that_does_not_match_is_33() {
    let env = backed_up("");
    let receipt = PathBuf::from(format!("{}.json", only_archive(&env).display()));
    let text = fs::read_to_string(&receipt).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["archive-sha256"] = serde_json::Value::String("0".repeat(64));
    fs::write(&receipt, serde_json::to_vec(&json).unwrap()).unwrap();
    assert_verify_fails(&env, &["verify"], "does not match its receipt");
}

#[test]
fn the_wrong_identity_is_33_and_an_identity_of_no_recipient_is_13() {
    let env = backed_up("");
    let archive = only_archive(&env);
    // A new key pair, and the config now names only it: the old archive cannot be decrypted.
    let (secret, recipient) = vouch::pipeline::crypt::generate();
    fs::write(&env.identity, format!("{secret}\n")).unwrap();
    let text = fs::read_to_string(&env.config)
        .unwrap()
        .replace(&env.recipient, &recipient);
    fs::write(&env.config, &text).unwrap();
    let detail = failure_detail(&env, &["verify"], &archive);
    assert_eq!(
        detail,
        "cannot decrypt: No matching keys found (in the age header, before the first entry)"
    );
    // An identity that matches none of the configured recipients is refused with the keys,
    // before any archive is read.
    let (other, _) = vouch::pipeline::crypt::generate();
    fs::write(&env.identity, format!("{other}\n")).unwrap();
    let out = env.vouch(&["verify"]);
    assert_code(&out, 13);
    assert!(
        stderr(&out).contains("matches none of the configured recipients"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("FAIL"), "{}", stdout(&out));
}

#[test]
fn a_missing_part_is_33() {
    let env = backed_up("split = \"1MiB\"");
    let parts: Vec<String> = env
        .target_files()
        .into_iter()
        .filter(|f| !f.ends_with(".json"))
        .collect();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_code(&env.vouch(&["verify"]), 0);
    fs::remove_file(env.target.join(&parts[1])).unwrap();
    assert_verify_fails(&env, &["verify"], "FAIL");
}

#[test]
fn a_target_without_archives_is_33() {
    let env = Env::new();
    fs::write(env.src.join("a"), "a").unwrap();
    env.write_config("", "");
    assert_verify_fails(&env, &["verify"], "no archive");
}

/// `vouch verify ARGS` with a `stop:POINT` fault, stdout and stderr captured.
fn spawn_stopping(env: &Env, args: &[&str], point: &str) -> Child {
    env.command(args)
        .env("VOUCH_TEST_FAULT", format!("stop:{point}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Deletes an archive the way retention does: its data files, then its receipt.
fn delete_like_retention(env: &Env, archive_name: &str) {
    let mut files = env.target_files();
    files.retain(|f| f.starts_with(archive_name));
    assert!(!files.is_empty(), "no files of {archive_name}");
    let (receipts, data): (Vec<String>, Vec<String>) =
        files.into_iter().partition(|f| f.ends_with(".json"));
    for f in data.iter().chain(&receipts) {
        fs::remove_file(env.target.join(f)).unwrap();
    }
}

#[test]
fn restore_to_after_a_failed_verification_records_no_restore_test() {
    let env = backed_up("");
    let archive = only_archive(&env);
    let len = fs::metadata(&archive).unwrap().len();
    flip_byte(&archive, len / 2);
    let scratch = env.dir.path().join("scratch");
    let detail = failure_detail(
        &env,
        &["verify", "--restore-to", scratch.to_str().unwrap()],
        &archive,
    );
    assert!(
        detail.contains("data.bin: cannot read its data"),
        "{detail}"
    );
    assert!(
        !scratch.exists(),
        "nothing may be restored from a damaged archive"
    );
    let record = &log(&env)[format!("local/{}", name_of(&archive))];
    assert_eq!(record["ok"], false, "{record}");
    assert_eq!(record["restore-test"], false, "{record}");
    let status: Value = serde_json::from_slice(&env.vouch(&["status", "--json"]).stdout).unwrap();
    assert_eq!(
        status["targets"][0]["last-restore-test"],
        Value::Null,
        "{status}"
    );
    assert_eq!(status["targets"][0]["last-verify"]["ok"], false, "{status}");
}

#[test]
fn a_restored_file_that_differs_on_disk_fails_the_restore_test_naming_it() {
    let env = backed_up("");
    let archive = only_archive(&env);
    let scratch = env.dir.path().join("scratch");
    let child = spawn_stopping(
        &env,
        &["verify", "--restore-to", scratch.to_str().unwrap()],
        "verify-before-compare",
    );
    wait_stopped(child.id());
    // The verification passed and the files are restored: change one of them on disk, keeping
    // its size, mode and modification time, so that only its content can tell.
    let notes = util::restored(&scratch, &env.src.join("notes.txt"));
    let mtime = fs::metadata(&notes).unwrap().modified().unwrap();
    fs::write(&notes, "NOTES\n").unwrap();
    fs::File::options()
        .write(true)
        .open(&notes)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    resume(child.id());
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 33);
    let text = stdout(&out);
    let expected = format!(
        "FAIL  local  {}  restore test into {}: {}: restored content differs from the manifest (SHA-256)",
        name_of(&archive),
        scratch.display(),
        stored(&env, "notes.txt")
    );
    assert!(
        text.lines().any(|l| l == expected),
        "{expected:?} not in:\n{text}"
    );
    let record = &log(&env)[format!("local/{}", name_of(&archive))];
    assert_eq!(record["ok"], false, "{record}");
    assert_eq!(record["restore-test"], true, "{record}");
    let status: Value = serde_json::from_slice(&env.vouch(&["status", "--json"]).stdout).unwrap();
    assert_eq!(
        status["targets"][0]["last-restore-test"]["ok"], false,
        "{status}"
    );
}

#[test]
fn an_archive_deleted_before_it_is_opened_is_skipped() {
    let env = backed_up("");
    assert_code(&env.vouch(&["run"]), 0);
    let archives = env.archives();
    assert_eq!(archives.len(), 2);
    let (older, newer) = (name_of(&archives[0]), name_of(&archives[1]));
    let child = spawn_stopping(&env, &["verify", "--all"], "verify-before-open");
    // Listed, not yet opened: retention deletes the older archive now.
    wait_stopped(child.id());
    delete_like_retention(&env, &older);
    resume(child.id());
    wait_stopped(child.id());
    resume(child.id());
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("skip  local  {older}  "))
                && l.contains("deleted after this verification started")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("ok    local  {newer}  "))),
        "{text}"
    );
    let log = log(&env);
    assert!(log.get(format!("local/{older}")).is_none(), "{log}");
    assert_eq!(log[format!("local/{newer}")]["ok"], true, "{log}");
}

#[test]
fn the_one_archive_named_fails_when_it_is_deleted_before_it_is_opened() {
    let env = backed_up("");
    let archive = only_archive(&env);
    let name = name_of(&archive);
    let child = spawn_stopping(&env, &["verify", &name], "verify-before-open");
    wait_stopped(child.id());
    delete_like_retention(&env, &name);
    resume(child.id());
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 33);
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("FAIL  local  {name}  "))
            && text.contains("deleted after this verification started"),
        "{text}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("VERIFY: {name}: "))
            && err.contains("`vouch list` shows the archives that remain"),
        "{err}"
    );
    assert!(
        !env.state.join("verified.json").exists()
            || log(&env).get(format!("local/{name}")).is_none()
    );
}

#[test]
fn an_archive_deleted_once_it_is_open_is_read_to_the_end() {
    // Split into parts, all opened before any is read; the restore test reads them too.
    let env = backed_up("split = \"1MiB\"");
    let first_part = env
        .target_files()
        .into_iter()
        .find(|f| f.ends_with(".000"))
        .unwrap();
    let name = first_part.trim_end_matches(".000").to_owned();
    let scratch = env.dir.path().join("scratch");
    let child = spawn_stopping(
        &env,
        &["verify", "--restore-to", scratch.to_str().unwrap()],
        "verify-opened",
    );
    wait_stopped(child.id());
    delete_like_retention(&env, &name);
    assert!(env.target_files().is_empty());
    resume(child.id());
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("ok    local  {name}  "))),
        "{text}"
    );
    assert_eq!(
        fs::read(util::restored(&scratch, &env.src.join("data.bin"))).unwrap(),
        fs::read(env.src.join("data.bin")).unwrap()
    );
    // No record is left behind for an archive that is gone.
    assert!(
        text.contains(&format!("note  local  {name}  deleted")),
        "{text}"
    );
    assert!(
        !env.state.join("verified.json").exists()
            || log(&env).get(format!("local/{name}")).is_none()
    );
}

/// A world with a textfile: `[metrics] textfile` in the config, and a backup made.
fn backed_up_with_textfile(extra: &str) -> (Env, PathBuf) {
    let env = Env::new();
    fs::write(env.src.join("data.bin"), util::noise(50_000, 3)).unwrap();
    let prom = env.dir.path().join("vouch.prom");
    env.write_config(
        "",
        &format!("{extra}\n\n[metrics]\ntextfile = \"{}\"\n", prom.display()),
    );
    assert_code(&env.vouch(&["run"]), 0);
    (env, prom)
}

#[test]
fn a_failed_verify_is_in_the_textfile_and_promtool_accepts_it() {
    let (env, prom) = backed_up_with_textfile("");
    let archive = only_archive(&env);
    let len = fs::metadata(&archive).unwrap().len();
    flip_byte(&archive, len / 2);
    fs::remove_file(&prom).unwrap();
    failure_detail(&env, &["verify"], &archive);
    promtool_check(&prom);
    let text = fs::read_to_string(&prom).unwrap();
    let t = "{target=\"local\"}";
    assert_eq!(
        sample(&text, &format!("vouch_last_verify_ok{t}")).as_deref(),
        Some("0"),
        "{text}"
    );
    assert!(sample(&text, &format!("vouch_last_verify_timestamp_seconds{t}")).is_some());
    assert_eq!(
        sample(&text, "vouch_status").as_deref(),
        Some("2"),
        "{text}"
    );
}

#[test]
fn early_verify_failures_still_write_the_textfile() {
    // A second target without any archive: 33, but the first target is verified, recorded and
    // in the textfile.
    let (env, prom) = backed_up_with_textfile("");
    let usb = env.dir.path().join("usb");
    fs::create_dir(&usb).unwrap();
    let config = fs::read_to_string(&env.config).unwrap();
    let with_usb = config.replace(
        "\n[metrics]",
        &format!(
            "[[target]]\nname = \"usb\"\npath = \"{}\"\n\n[metrics]",
            usb.display()
        ),
    );
    fs::write(&env.config, &with_usb).unwrap();
    fs::remove_file(&prom).unwrap();
    let out = env.vouch(&["verify"]);
    assert_code(&out, 33);
    let text = stdout(&out);
    assert!(
        text.contains("FAIL  usb  (none)  target usb: no archive in"),
        "{text}"
    );
    assert!(
        text.contains(&format!("ok    local  {}", name_of(&only_archive(&env)))),
        "{text}"
    );
    promtool_check(&prom);
    let metrics = fs::read_to_string(&prom).unwrap();
    assert_eq!(
        sample(&metrics, "vouch_last_verify_ok{target=\"local\"}").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "vouch_status").as_deref(),
        Some("2"),
        "{metrics}"
    );
    fs::write(&env.config, &config).unwrap();

    // A key error after the config loaded (the identity is gone): 13, and the textfile.
    fs::remove_file(&prom).unwrap();
    let identity = fs::read(&env.identity).unwrap();
    fs::remove_file(&env.identity).unwrap();
    assert_code(&env.vouch(&["verify"]), 13);
    promtool_check(&prom);
    fs::write(&env.identity, identity).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&env.identity, fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_restore_test_that_cannot_write_records_the_verification_but_no_restore_test() {
    let (env, prom) = backed_up_with_textfile("");
    let archive = only_archive(&env);
    // An immutable scratch directory: nothing can be created in it, not even by root.
    let scratch = env.dir.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    let guard = util::Immutable::set(&scratch);
    fs::remove_file(&prom).unwrap();
    let out = env.vouch(&["verify", "--restore-to", scratch.to_str().unwrap()]);
    drop(guard);
    assert_code(&out, 30);
    let record = &log(&env)[format!("local/{}", name_of(&archive))];
    assert_eq!(record["ok"], true, "{record}");
    assert_eq!(record["restore-test"], false, "{record}");
    promtool_check(&prom);
    assert_eq!(
        sample(
            &fs::read_to_string(&prom).unwrap(),
            "vouch_last_verify_ok{target=\"local\"}"
        )
        .as_deref(),
        Some("1")
    );
}

/// The archive's part files in the target, in order.
fn parts_of(env: &Env) -> Vec<String> {
    env.target_files()
        .into_iter()
        .filter(|f| !f.ends_with(".json"))
        .collect()
}

#[test]
fn a_receipt_naming_parts_outside_the_target_is_33_and_they_are_never_read() {
    let env = backed_up("split = \"1MiB\"");
    let parts = parts_of(&env);
    assert_eq!(parts.len(), 2, "{parts:?}");
    let name = parts[0].strip_suffix(".000").unwrap().to_owned();
    // The good parts elsewhere, garbage under the archive's own names, and a receipt that
    // points at the good copy.
    let elsewhere = env.dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    for p in &parts {
        fs::copy(env.target.join(p), elsewhere.join(p)).unwrap();
        fs::write(env.target.join(p), util::noise(1000, 7)).unwrap();
    }
    let receipt = env.target.join(format!("{name}-receipt.json"));
    let mut r: Value = serde_json::from_slice(&fs::read(&receipt).unwrap()).unwrap();
    r["parts"] = parts.iter().map(|p| format!("../elsewhere/{p}")).collect();
    fs::write(&receipt, serde_json::to_vec(&r).unwrap()).unwrap();
    assert_verify_fails(&env, &["verify", &name], "as part 0");
    assert_eq!(log(&env)[format!("local/{name}")]["ok"], false);
    // An absolute or climbing path is refused the same way, and never opened.
    r["parts"] = serde_json::json!(["../../../../etc/passwd"]);
    fs::write(&receipt, serde_json::to_vec(&r).unwrap()).unwrap();
    let out = env.vouch(&["verify", &name]);
    assert_code(&out, 33);
    assert!(stdout(&out).contains("etc/passwd"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("sha256"), "{}", stdout(&out));
}

#[test]
fn a_receipt_of_an_unknown_format_or_version_is_33() {
    let env = backed_up("");
    let archive = only_archive(&env);
    let receipt = PathBuf::from(format!("{}.json", archive.display()));
    let good = fs::read(&receipt).unwrap();
    for (field, value, fragment) in [
        ("format", Value::from("something"), "format \"something\""),
        ("version", Value::from(2), "version 2"),
        ("created", Value::from("yesterday"), "creation time"),
    ] {
        let mut r: Value = serde_json::from_slice(&good).unwrap();
        r[field] = value;
        fs::write(&receipt, serde_json::to_vec(&r).unwrap()).unwrap();
        assert_verify_fails(&env, &["verify", &name_of(&archive)], fragment);
        let listed = env.vouch(&["list"]);
        assert!(
            stdout(&listed).contains("RECEIPT INVALID"),
            "{field}: {}",
            stdout(&listed)
        );
    }
}

/// Runs `vouch ARGS` and fails the test if it has not ended within `secs` seconds.
fn within(env: &Env, args: &[&str], secs: u64) -> Output {
    let mut child = env
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`vouch {}` did not end within {secs} s", args.join(" "));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_fifo_or_endless_file_under_a_receipt_name_ends_every_command_promptly() {
    let env = backed_up("keep = { last = 1 }");
    let archive = only_archive(&env);
    let name = name_of(&archive);
    let receipt = PathBuf::from(format!("{}.json", archive.display()));
    for (kind, fragment) in [("fifo", "FIFO"), ("zero", "symbolic link")] {
        fs::remove_file(&receipt).unwrap();
        match kind {
            "fifo" => {
                nix::unistd::mkfifo(&receipt, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .unwrap()
            }
            _ => std::os::unix::fs::symlink("/dev/zero", &receipt).unwrap(),
        }
        let out = within(&env, &["list"], 20);
        assert_code(&out, 0);
        assert!(stdout(&out).contains("RECEIPT INVALID"), "{}", stdout(&out));
        assert!(stdout(&out).contains(fragment), "{kind}: {}", stdout(&out));
        let out = within(&env, &["status"], 20);
        assert_code(&out, 2);
        assert!(stdout(&out).contains(fragment), "{kind}: {}", stdout(&out));
        let out = within(&env, &["prune"], 20);
        assert_code(&out, 0);
        assert!(stdout(&out).contains(fragment), "{kind}: {}", stdout(&out));
        let out = within(&env, &["verify", &name], 20);
        assert_code(&out, 33);
        assert!(stdout(&out).contains(fragment), "{kind}: {}", stdout(&out));
        // A run reads the newest receipt to plan for the next archive's size.
        let out = within(&env, &["run"], 60);
        assert_code(&out, 0);
        assert!(
            archive.exists(),
            "{kind}: an archive it cannot account for was deleted"
        );
        // Only the old archive and its receipt stay in question for the next kind.
        for f in env.target_files() {
            let f = env.target.join(f);
            if f != archive && f != receipt {
                fs::remove_file(f).unwrap();
            }
        }
    }
}

#[test]
fn a_fifo_under_a_part_name_is_33_at_once() {
    let env = backed_up("split = \"1MiB\"");
    let parts = parts_of(&env);
    let name = parts[0].strip_suffix(".000").unwrap().to_owned();
    fs::remove_file(env.target.join(&parts[1])).unwrap();
    nix::unistd::mkfifo(
        &env.target.join(&parts[1]),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let out = within(&env, &["verify", &name], 20);
    assert_code(&out, 33);
    assert!(stdout(&out).contains("FIFO"), "{}", stdout(&out));
}

#[test]
fn a_part_set_without_a_receipt_is_not_blamed_on_the_disk() {
    // What a run killed between two part renames left before receipts came first.
    let env = backed_up("split = \"1MiB\"");
    let parts = parts_of(&env);
    let name = parts[0].strip_suffix(".000").unwrap().to_owned();
    fs::remove_file(env.target.join(format!("{name}-receipt.json"))).unwrap();
    fs::remove_file(env.target.join(&parts[1])).unwrap();
    assert_verify_fails(&env, &["verify", &name], "not damage: delete its parts");
    let status = stdout(&env.vouch(&["status"]));
    assert!(status.contains("not damage"), "{status}");
    assert!(!status.contains("check the disk"), "{status}");
}
