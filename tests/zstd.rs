//! `[backup] compression = "zstd"` end to end: a real `vouch run` writes `.tar.zst.age`, which
//! `vouch verify` and `vouch restore` read and the stock tools (the real `age`, `zstd` and GNU
//! `tar`) restore; a target holding gzip and zstd archives side by side is listed, verified and
//! pruned as one; damage inside the zstd data, and a name that disagrees with the data, are 33.

mod util;

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use util::{assert_code, bash_ok, describe_tree, restored, stderr, Env};

/// The first bytes of every zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// A source tree with text that compresses, bytes that do not, a symlink and an empty file.
fn fill(src: &Path) {
    fs::create_dir_all(src.join("etc/app")).unwrap();
    let text: String = (0..40_000)
        .map(|i| format!("line {i}: key{} = value{}\n", i % 97, i % 13))
        .collect();
    fs::write(src.join("etc/app/config.txt"), text).unwrap();
    fs::write(src.join("random.bin"), util::noise(2_500_000, 5)).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("etc/app/config.txt", src.join("link")).unwrap();
}

/// A world with a filled source and a config with `backup_extra` and `target_extra`.
fn world(backup_extra: &str, target_extra: &str) -> Env {
    let env = Env::new();
    fill(&env.src);
    env.write_config(backup_extra, &format!("min-free = 0\n{target_extra}"));
    env
}

/// The decrypted plaintext of the archive whose data files are `files` (a shell glob).
fn plaintext(env: &Env, files: &str) -> Vec<u8> {
    let script = format!(
        "set -o pipefail; cat {files} | age -d -i '{}'",
        env.identity.display()
    );
    bash_ok(&script).stdout
}

/// Encrypts `plain` to the world's recipient with the real `age` into `path`.
fn encrypt_to(env: &Env, plain: &[u8], path: &Path) {
    let mut child = Command::new("age")
        .args(["-r", &env.recipient, "-o"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("this test needs the age binary");
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, plain).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success(), "age -r failed");
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_zstd_run_writes_tar_zst_age_that_vouch_and_the_stock_tools_restore() {
    let env = world("compression = \"zstd\"", "");
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let archives = env.archives();
    assert_eq!(archives.len(), 1, "{:?}", env.target_files());
    let archive = &archives[0];
    let name = file_name(archive);
    assert!(
        name.starts_with("test-") && name.ends_with("Z.tar.zst.age"),
        "{name}"
    );
    assert_eq!(
        env.target_files(),
        [name.clone(), format!("{name}.json")],
        "the receipt sits beside the archive under its name"
    );
    let receipt = read_json(&env.target.join(format!("{name}.json")));
    assert_eq!(receipt["archive"], Value::from(name.clone()));

    // Inside the encryption: zstd frames, not gzip.
    let plain = plaintext(&env, &format!("'{}'", archive.display()));
    assert_eq!(plain[..4], ZSTD_MAGIC, "the plaintext is not zstd");

    let out = env.vouch(&["verify"]);
    assert_code(&out, 0);
    let log = read_json(&env.state.join("verified.json"));
    assert_eq!(
        log[format!("local/{name}")]["ok"],
        Value::Bool(true),
        "{log}"
    );

    let before = describe_tree(&env.src);
    let into = env.dir.path().join("vouch-restore");
    let out = env.vouch(&["restore", &name, "--to", into.to_str().unwrap()]);
    assert_code(&out, 0);
    assert_eq!(describe_tree(&restored(&into, &env.src)), before);

    let quoted = format!("'{}'", archive.display());
    for (untar, dir) in [
        ("zstd -d | tar -xf -", "stock-zstd"),
        ("tar --zstd -xf -", "stock-tar-zstd"),
    ] {
        let into = env.dir.path().join(dir);
        env.stock_restore_with(&quoted, untar, &into);
        assert_eq!(describe_tree(&restored(&into, &env.src)), before, "{untar}");
    }
}

#[test]
fn split_zstd_archives_restore_with_cat_and_verify() {
    let env = world("compression = \"zstd\"", "split = \"1MiB\"");
    assert_code(&env.vouch(&["run"]), 0);
    let files = env.target_files();
    let parts: Vec<&String> = files.iter().filter(|f| !f.ends_with(".json")).collect();
    assert!(parts.len() >= 2, "{files:?}");
    for (i, p) in parts.iter().enumerate() {
        assert!(p.ends_with(&format!(".tar.zst.age.{i:03}")), "{p}");
    }
    let base = parts[0].trim_end_matches(".000").to_owned();
    assert!(files.contains(&format!("{base}-receipt.json")), "{files:?}");
    assert_code(&env.vouch(&["verify"]), 0);
    let into = env.dir.path().join("stock");
    let glob = format!("'{}'.*", env.target.join(&base).display());
    env.stock_restore_with(&glob, "zstd -d | tar -xf -", &into);
    assert_eq!(
        describe_tree(&restored(&into, &env.src)),
        describe_tree(&env.src)
    );
}

#[test]
fn gzip_and_zstd_archives_on_one_target_are_listed_verified_restored_and_pruned() {
    let env = world("", "keep = { last = 2 }");
    assert_code(&env.vouch(&["run"]), 0);
    let gzip = env.archives();
    assert_eq!(gzip.len(), 1);
    let gzip = file_name(&gzip[0]);
    assert!(gzip.ends_with(".tar.gz.age"), "{gzip}");

    // The operator switches to zstd; the next run's archive must be newer by its name.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.write_config(
        "compression = \"zstd\"",
        "min-free = 0\nkeep = { last = 2 }",
    );
    assert_code(&env.vouch(&["run"]), 0);
    let names: Vec<String> = env.archives().iter().map(|p| file_name(p)).collect();
    assert_eq!(names.len(), 2, "{:?}", env.target_files());
    let zstd = names.iter().find(|n| n.ends_with(".tar.zst.age")).unwrap();
    assert!(names.contains(&gzip), "the run removed the gzip archive");

    let out = env.vouch(&["list"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains(&gzip) && text.contains(zstd.as_str()),
        "{text}"
    );

    let out = env.vouch(&["verify", "--all"]);
    assert_code(&out, 0);
    let log = read_json(&env.state.join("verified.json"));
    for n in [&gzip, zstd] {
        assert_eq!(
            log[format!("local/{n}")]["ok"],
            Value::Bool(true),
            "{n}: {log}"
        );
    }

    // The old gzip archive still restores with the zstd config.
    let into = env.dir.path().join("old");
    let out = env.vouch(&["restore", &gzip, "--to", into.to_str().unwrap()]);
    assert_code(&out, 0);
    assert_eq!(
        describe_tree(&restored(&into, &env.src)),
        describe_tree(&env.src)
    );

    // Retention counts both kinds: keeping one leaves only the newer, zstd, archive.
    env.write_config(
        "compression = \"zstd\"",
        "min-free = 0\nkeep = { last = 1 }",
    );
    let out = env.vouch(&["prune", "--dry-run"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let line = |n: &str| {
        text.lines()
            .find(|l| l.split_whitespace().any(|w| w == n))
            .unwrap_or_else(|| panic!("no line for {n} in:\n{text}"))
            .to_owned()
    };
    assert!(line(&gzip).starts_with("delete "), "{text}");
    assert!(line(zstd).starts_with("keep "), "{text}");
    assert_code(&env.vouch(&["prune"]), 0);
    assert_eq!(env.target_files(), [zstd.clone(), format!("{zstd}.json")]);
    assert_code(&env.vouch(&["verify", "--all"]), 0);
}

/// The zstd archive of a fresh zstd run, its plaintext, and the path of its receipt.
fn zstd_archive() -> (Env, PathBuf, Vec<u8>, PathBuf) {
    let env = world("compression = \"zstd\"", "");
    assert_code(&env.vouch(&["run"]), 0);
    let archive = env.archives().remove(0);
    let plain = plaintext(&env, &format!("'{}'", archive.display()));
    let receipt = PathBuf::from(format!("{}.json", archive.display()));
    (env, archive, plain, receipt)
}

#[test]
fn damage_inside_the_zstd_data_is_33_for_verify_and_restore() {
    let (env, archive, mut plain, receipt) = zstd_archive();
    // Re-encrypted after the damage, so age authenticates it and only zstd can find it: a
    // byte in the middle of the first frame's compressed data.
    let frame = zstd_frame_len(&plain);
    plain[frame / 2] ^= 0x20;
    encrypt_to(&env, &plain, &archive);
    // Without its receipt, whose size and hash no longer match, the damage is what is found.
    fs::remove_file(&receipt).unwrap();
    let out = env.vouch(&["verify"]);
    assert_code(&out, 33);
    // The byte lies in random.bin's data, which zstd stores as raw blocks: only the frame's
    // checksum can tell, and the entry being read is named.
    let err = stderr(&out);
    assert!(
        err.contains("random.bin: cannot read its data") && err.contains("checksum"),
        "{err}"
    );
    let name = file_name(&archive);
    let into = env.dir.path().join("restore");
    let out = env.vouch(&["restore", &name, "--to", into.to_str().unwrap()]);
    assert_code(&out, 33);
    assert!(stderr(&out).contains("checksum"), "{}", stderr(&out));
    assert!(
        !into.join("src").exists(),
        "a damaged restore left files behind"
    );
}

/// The compressed size of the first zstd frame in `data`, from the frame's own header and
/// blocks (libzstd, through the crate vouch links).
fn zstd_frame_len(data: &[u8]) -> usize {
    zstd::zstd_safe::find_frame_compressed_size(data).expect("the plaintext starts with a frame")
}

#[test]
fn a_name_that_disagrees_with_its_data_is_33_naming_both() {
    // gzip data under a zstd name.
    let env = world("", "");
    assert_code(&env.vouch(&["run"]), 0);
    let gz = env.archives().remove(0);
    let plain = plaintext(&env, &format!("'{}'", gz.display()));
    let renamed = env
        .target
        .join(file_name(&gz).replace(".tar.gz.age", ".tar.zst.age"));
    encrypt_to(&env, &plain, &renamed);
    fs::remove_file(&gz).unwrap();
    fs::remove_file(format!("{}.json", gz.display())).unwrap();
    let out = env.vouch(&["verify"]);
    assert_code(&out, 33);
    let err = stderr(&out);
    assert!(err.contains("says zstd, but it holds gzip data"), "{err}");

    // zstd data under a gzip name.
    let (env, zst, plain, receipt) = zstd_archive();
    let renamed = env
        .target
        .join(file_name(&zst).replace(".tar.zst.age", ".tar.gz.age"));
    encrypt_to(&env, &plain, &renamed);
    fs::remove_file(&zst).unwrap();
    fs::remove_file(&receipt).unwrap();
    let out = env.vouch(&["verify"]);
    assert_code(&out, 33);
    let err = stderr(&out);
    assert!(err.contains("says gzip, but it holds zstd data"), "{err}");
    let into = env.dir.path().join("restore");
    let out = env.vouch(&[
        "restore",
        &file_name(&renamed),
        "--to",
        into.to_str().unwrap(),
    ]);
    assert_code(&out, 33);
    assert!(
        stderr(&out).contains("says gzip, but it holds zstd data"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_dump_s_stock_restore_line_fits_a_zstd_archive_and_works() {
    let env = world("compression = \"zstd\"", "");
    let dump = "[[dump]]\nname = \"ldap\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"seq 1 5000; echo '# end'\"]\nextension = \"ldif\"\nmin-size = \"1KiB\"\nexpect-tail = \"# end\"\n";
    env.write_config("compression = \"zstd\"", &format!("min-free = 0\n\n{dump}"));
    assert_code(&env.vouch(&["run"]), 0);
    let archive = env.archives().remove(0);
    let script = format!(
        "set -o pipefail; age -d -i '{}' '{}' | zstd -d | tar -xOf - .vouch/manifest.json",
        env.identity.display(),
        archive.display()
    );
    let manifest: Value = serde_json::from_slice(&bash_ok(&script).stdout).unwrap();
    let line = manifest["dumps"][0]["restore"].as_str().unwrap().to_owned();
    assert!(line.contains("tar --zstd -xOf"), "{line}");
    assert!(!line.contains("-xz"), "{line}");
    // The line as the manifest gives it, with KEY and ARCHIVE filled in, run in a scratch
    // directory, writes the dump.
    let scratch = env.dir.path().join("dump-restore");
    fs::create_dir_all(&scratch).unwrap();
    let filled = line
        .replace("KEY", &format!("'{}'", env.identity.display()))
        .replace("ARCHIVE", &format!("'{}'", archive.display()));
    bash_ok(&format!(
        "set -o pipefail; cd '{}' && {filled}",
        scratch.display()
    ));
    let text = fs::read_to_string(scratch.join("ldap.ldif")).unwrap();
    assert!(
        text.starts_with("1\n2\n") && text.ends_with("5000\n# end\n"),
        "{text:.40}"
    );
}
