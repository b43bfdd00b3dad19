//! `vouch verify`: the weekly restore test, against archives damaged in every way a disk or a
//! person can damage them.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use util::{assert_code, stderr, Env};

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
fn a_flipped_bit_anywhere_is_33() {
    let env = backed_up("");
    let archive = only_archive(&env);
    let len = fs::metadata(&archive).unwrap().len();
    let original = fs::read(&archive).unwrap();
    for at in [10, 200, len / 2, len - 20] {
        flip_byte(&archive, at);
        let out = env.vouch(&["verify"]);
        assert_code(&out, 33);
        fs::write(&archive, &original).unwrap();
    }
    assert_code(&env.vouch(&["verify"]), 0);
}

#[test]
fn a_truncated_archive_is_33() {
    let env = backed_up("");
    let archive = only_archive(&env);
    let len = fs::metadata(&archive).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&archive)
        .unwrap()
        .set_len(len - 1000)
        .unwrap();
    assert_verify_fails(&env, &["verify"], "FAIL");
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
fn the_wrong_identity_is_33() {
    let env = backed_up("");
    // A new key pair, and the config now names only it: the old archive cannot be decrypted.
    let (secret, recipient) = vouch::crypt::generate();
    fs::write(&env.identity, format!("{secret}\n")).unwrap();
    let text = fs::read_to_string(&env.config)
        .unwrap()
        .replace(&env.recipient, &recipient);
    fs::write(&env.config, text).unwrap();
    assert_verify_fails(&env, &["verify"], "cannot decrypt");
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
