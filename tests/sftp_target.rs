//! `kind = "sftp"` targets through the built binary against a real OpenSSH server (Debian's
//! sshd with `internal-sftp` on 127.0.0.1, tests/util/sshd.rs) and the real `ssh`: the run
//! copies the committed archive under a temporary name, reads it back and only then gives it
//! its final name and its receipt; the copy restores with `ssh cat | age -d | tar -x`;
//! preflight maps an unknown host key (printing the line to add), a refused key, a key file
//! others may read, no ssh, a closed port, a missing directory, a read-only server, a
//! read-only and a full filesystem to 16, 16, 10, 14, 14, 14, 16, 15 and 17; a byte flipped
//! on the server before the read-back ends the run with 34 and leaves nothing; a run killed
//! there leaves a temporary file that the next preflight removes; a file that takes the
//! archive's name during the copy is left as it is and the copy fails with 34; the
//! archives on the server are listed, verified (a flipped byte is 34), restored and pruned,
//! and `status` and `status --live` report the target. With `split`, the archive goes as
//! parts that `ssh cat PATH.*` restores and vouch lists, verifies and restores; a missing part
//! is 34 for verify; retention leaves no part behind, and one killed between the receipt and
//! the parts is settled by the next prune. An archive split locally goes to an sftp target
//! without `split` as one file.

mod util;

use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use util::sshd::Sshd;
use util::{assert_code, stderr, Env};

/// A credentials directory holding `key` as `nas` (mode 0600).
fn key_dir(env: &Env, key: &Path) -> PathBuf {
    key_dir_in(env, "credentials", key)
}

/// [`key_dir`] under another name.
fn key_dir_in(env: &Env, name: &str, key: &Path) -> PathBuf {
    let dir = env.dir.path().join(name);
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("nas");
    fs::copy(key, &file).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

/// The `[[target]]` of `dir` on the server, with `known_hosts`.
fn sftp_target(s: &Sshd, dir: &Path, known_hosts: &Path) -> String {
    format!(
        "[[target]]\nname = \"nas\"\nkind = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\npath = \"{}\"\ncredential = \"nas\"\nknown-hosts = \"{}\"\n",
        s.port,
        s.user,
        dir.display(),
        known_hosts.display()
    )
}

/// `vouch ARGS` with `creds` as `$CREDENTIALS_DIRECTORY`.
fn with_key(env: &Env, creds: &Path, args: &[&str]) -> std::process::Output {
    env.command(args)
        .env("CREDENTIALS_DIRECTORY", creds)
        .output()
        .unwrap()
}

/// A world with sources, the server's `backups` directory and a config pointing at it.
fn world(s: &Sshd) -> (Env, PathBuf, PathBuf) {
    let env = Env::new();
    fs::write(env.src.join("a.txt"), b"alpha").unwrap();
    fs::write(env.src.join("blob"), util::noise(3 << 20, 7)).unwrap();
    let remote = s.root.join("backups");
    fs::create_dir(&remote).unwrap();
    let creds = key_dir(&env, &s.client_key);
    env.write_config("", &sftp_target(s, &remote, &s.known_hosts));
    (env, remote, creds)
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stock restore, with nothing of vouch: `ssh HOST REMOTE | age -d | tar -xz` into `into`,
/// where `REMOTE` (quoted for the local shell) prints the archive on the server.
fn stock_restore(s: &Sshd, env: &Env, remote: &str, into: &Path) {
    util::bash_ok(&format!(
        "set -o pipefail; ssh -F /dev/null -o BatchMode=yes -i '{key}' -o UserKnownHostsFile='{kh}' -p {port} {user}@127.0.0.1 {remote} | age -d -i '{id}' | tar -xzf - -C '{into}'",
        key = s.client_key.display(),
        kh = s.known_hosts.display(),
        port = s.port,
        user = s.user,
        id = env.identity.display(),
        into = into.display(),
    ));
}

#[test]
fn a_run_copies_the_archive_reads_it_back_and_renames_it_into_place() {
    let s = Sshd::start();
    let (env, remote, creds) = world(&s);
    let out = with_key(&env, &creds, &["preflight"]);
    assert_code(&out, 0);
    assert!(
        names(&remote).is_empty(),
        "preflight left {:?}",
        names(&remote)
    );
    let out = with_key(&env, &creds, &["run"]);
    assert_code(&out, 0);
    let local = env.archives().pop().unwrap();
    let name = local.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(names(&remote), [name.clone(), format!("{name}.json")]);
    let copy = fs::read(remote.join(&name)).unwrap();
    assert!(
        copy == fs::read(&local).unwrap(),
        "the remote archive is the local one, byte for byte"
    );
    let receipt: serde_json::Value =
        serde_json::from_slice(&fs::read(remote.join(format!("{name}.json"))).unwrap()).unwrap();
    assert_eq!(receipt["target"], "nas");
    assert_eq!(receipt["archive-sha256"], hex(&Sha256::digest(&copy)));
    assert!(
        !env.state.join("s3-pending.json").exists(),
        "no copy is left recorded"
    );
    let last: serde_json::Value =
        serde_json::from_slice(&fs::read(env.state.join("s3-copies.json")).unwrap()).unwrap();
    assert_eq!(last["nas"]["archive"], name.as_str(), "{last}");
    assert_eq!(
        last["nas"]["url"],
        format!(
            "sftp://{}@127.0.0.1:{}{}/{name}",
            s.user,
            s.port,
            remote.display()
        ),
        "{last}"
    );
    // status judges the remote offline from the recorded copy, and --live lists it.
    assert_code(&with_key(&env, &creds, &["status"]), 0);
    let status = json(&with_key(&env, &creds, &["status", "--live", "--json"]));
    assert_eq!(status["remotes"][0]["name"], "nas", "{status}");
    assert_eq!(
        status["remotes"][0]["last-copy"]["archive"],
        name.as_str(),
        "{status}"
    );
    assert_eq!(
        status["remotes"][0]["live"]["newest"],
        name.as_str(),
        "{status}"
    );
    // The stock restore, with nothing of vouch: ssh cat | age -d | tar -x.
    let into = env.dir.path().join("r");
    fs::create_dir_all(&into).unwrap();
    stock_restore(
        &s,
        &env,
        &format!("cat '{}'", remote.join(&name).display()),
        &into,
    );
    let restored = util::restored(&into, &env.src);
    assert_eq!(fs::read(restored.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(
        fs::read(restored.join("blob")).unwrap(),
        fs::read(env.src.join("blob")).unwrap()
    );
}

#[test]
fn preflight_shows_the_host_key_to_add_and_maps_a_refused_key_and_a_missing_directory() {
    let s = Sshd::start();
    let (env, remote, creds) = world(&s);
    let known = env.dir.path().join("known_hosts");
    fs::write(&known, "").unwrap();
    env.write_config("", &sftp_target(&s, &remote, &known));
    let out = with_key(&env, &creds, &["preflight"]);
    assert_code(&out, 16);
    let text = stderr(&out);
    let line = format!("[127.0.0.1]:{} {}", s.port, s.host_public_key);
    assert!(
        text.contains(&line),
        "the known-hosts line is shown: {text}"
    );
    assert!(text.contains("SHA256:"), "the fingerprint is shown: {text}");
    // A known-hosts file that knows another key for the server: a changed host key is 16
    // too, naming the change, and is never accepted.
    fs::write(
        &known,
        format!("[127.0.0.1]:{} {}\n", s.port, s.other_host_key()),
    )
    .unwrap();
    let out = with_key(&env, &creds, &["preflight"]);
    assert_code(&out, 16);
    let text = stderr(&out);
    assert!(text.contains("changed"), "a changed key is named: {text}");
    assert!(text.contains(&line), "the server's line is shown: {text}");
    fs::write(&known, format!("{line}\n")).unwrap();
    assert_code(&with_key(&env, &creds, &["preflight"]), 0);
    // Another key than the one the server authorized.
    let stranger = key_dir_in(&env, "stranger", &s.stranger_key("stranger"));
    let out = with_key(&env, &stranger, &["preflight"]);
    assert_code(&out, 16);
    assert!(stderr(&out).contains("refused the key"), "{}", stderr(&out));
    // A key file others may read is a config error (10), before any connection.
    fs::set_permissions(stranger.join("nas"), fs::Permissions::from_mode(0o644)).unwrap();
    assert_code(&with_key(&env, &stranger, &["preflight"]), 10);
    // No ssh on PATH: 14 with the package to install.
    let empty = env.dir.path().join("empty-path");
    fs::create_dir_all(&empty).unwrap();
    let out = env
        .command(&["preflight"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert_code(&out, 14);
    assert!(
        stderr(&out).contains("apt-get install openssh-client"),
        "{}",
        stderr(&out)
    );
    // Nothing listening: 14 naming HOST:PORT.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let text = sftp_target(&s, &remote, &known)
        .replace(&format!("port = {}", s.port), &format!("port = {port}"));
    env.write_config("", &text);
    let out = with_key(&env, &creds, &["preflight"]);
    assert_code(&out, 14);
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    // A directory that is not there.
    env.write_config("", &sftp_target(&s, &s.root.join("nowhere"), &known));
    let out = with_key(&env, &creds, &["preflight"]);
    assert_code(&out, 14);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(env.archives().is_empty(), "nothing was archived");
}

#[test]
fn a_read_only_sftp_subsystem_is_denied_16() {
    // internal-sftp -R refuses every change with SSH_FX_PERMISSION_DENIED while statvfs says
    // the filesystem is writable: the account may not write there, which is 16, not 15.
    let s = Sshd::start_read_only();
    let (env, _remote, creds) = world(&s);
    let out = with_key(&env, &creds, &["preflight"]);
    assert_code(&out, 16);
    assert!(
        stderr(&out).contains("PERMISSION_DENIED") || stderr(&out).contains("permission"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_read_only_filesystem_is_15_and_a_full_one_17() {
    let s = Sshd::start_with_mounts(
        "mkdir -p \"$ROOT/full\" \"$ROOT/ro\"\n\
         mount -t tmpfs -o size=1m tmpfs \"$ROOT/full\"\n\
         mount -t tmpfs -o ro,size=1m tmpfs \"$ROOT/ro\"",
    );
    let env = Env::new();
    fs::write(env.src.join("blob"), util::noise(3 << 20, 9)).unwrap();
    let creds = key_dir(&env, &s.client_key);
    env.write_config("", &sftp_target(&s, &s.root.join("ro"), &s.known_hosts));
    let out = with_key(&env, &creds, &["preflight"]);
    assert_code(&out, 15);
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    env.write_config("", &sftp_target(&s, &s.root.join("full"), &s.known_hosts));
    let out = with_key(&env, &creds, &["preflight"]);
    assert_code(&out, 17);
    assert!(stderr(&out).contains("free"), "{}", stderr(&out));
}

/// The temporary files in `dir`.
fn temps(dir: &Path) -> Vec<PathBuf> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(".vouch-tmp."))
        .map(|n| dir.join(n))
        .collect()
}

#[test]
fn a_byte_flipped_on_the_server_before_the_read_back_fails_the_copy_with_34() {
    let s = Sshd::start();
    let (env, remote, creds) = world(&s);
    let child = env
        .command(&["run"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("VOUCH_TEST_FAULT", "stop:sftp-before-readback")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_stopped(child.id());
    let temp = temps(&remote);
    assert_eq!(temp.len(), 1, "one temporary file: {:?}", names(&remote));
    let mut bytes = fs::read(&temp[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&temp[0], &bytes).unwrap();
    util::resume(child.id());
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 34);
    assert!(stderr(&out).contains("read-back"), "{}", stderr(&out));
    assert!(
        names(&remote).is_empty(),
        "nothing is left: {:?}",
        names(&remote)
    );
    assert_eq!(env.archives().len(), 1, "the local archive is kept");
    assert!(!env.state.join("s3-pending.json").exists());
}

#[test]
fn a_run_killed_before_the_read_back_leaves_a_temporary_file_the_next_preflight_removes() {
    let s = Sshd::start();
    let (env, remote, creds) = world(&s);
    let out = env
        .command(&["run"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("VOUCH_TEST_FAULT", "kill:sftp-before-readback")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "killed: {}", stderr(&out));
    assert_eq!(temps(&remote).len(), 1, "{:?}", names(&remote));
    assert!(
        env.state.join("s3-pending.json").exists(),
        "the copy is recorded"
    );
    assert_code(&with_key(&env, &creds, &["preflight"]), 0);
    assert!(names(&remote).is_empty(), "{:?}", names(&remote));
    assert!(!env.state.join("s3-pending.json").exists());
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert_code(out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_archives_on_the_server_are_listed_verified_restored_and_pruned() {
    let s = Sshd::start();
    let (env, remote, creds) = world(&s);
    let keep = "keep = { last = 5 }\n";
    env.write_config(
        "",
        &format!("{keep}{}{keep}", sftp_target(&s, &remote, &s.known_hosts)),
    );
    assert_code(&with_key(&env, &creds, &["run"]), 0);
    let name = env.archives().pop().unwrap();
    let name = name.file_name().unwrap().to_str().unwrap().to_owned();

    let listing = json(&with_key(
        &env,
        &creds,
        &["list", "--target", "nas", "--json"],
    ));
    let t = &listing["targets"][0];
    assert_eq!(t["name"], "nas", "{listing}");
    assert_eq!(t["archives"][0]["name"], name.as_str(), "{listing}");
    assert_eq!(t["archives"][0]["receipt"], "ok", "{listing}");
    assert_eq!(
        t["archives"][0]["size"],
        fs::metadata(remote.join(&name)).unwrap().len(),
        "{listing}"
    );

    let out = with_key(&env, &creds, &["verify", "--target", "nas", "--latest"]);
    assert_code(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("ok    nas  {name}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let into = env.dir.path().join("from-remote");
    let out = with_key(
        &env,
        &creds,
        &[
            "restore",
            &name,
            "--target",
            "nas",
            "--to",
            into.to_str().unwrap(),
        ],
    );
    assert_code(&out, 0);
    assert_eq!(
        fs::read(util::restored(&into, &env.src).join("a.txt")).unwrap(),
        b"alpha"
    );

    // Two more runs, then the remote keeps one and the local target its five.
    for _ in 0..2 {
        assert_code(&with_key(&env, &creds, &["run"]), 0);
    }
    assert_eq!(names(&remote).len(), 6, "{:?}", names(&remote));
    let newest = env.archives().pop().unwrap();
    let newest = newest.file_name().unwrap().to_str().unwrap().to_owned();
    env.write_config(
        "",
        &format!(
            "{keep}{}keep = {{ last = 1 }}\n",
            sftp_target(&s, &remote, &s.known_hosts)
        ),
    );
    let out = with_key(&env, &creds, &["prune", "--target", "nas"]);
    assert_code(&out, 0);
    assert_eq!(names(&remote), [newest.clone(), format!("{newest}.json")]);
    assert_eq!(env.archives().len(), 3, "the local target keeps its own");
    assert!(!env.state.join("s3-pending.json").exists());

    // A byte flipped on the server: verify of the remote copy is 34.
    let file = remote.join(&newest);
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&file, &bytes).unwrap();
    let out = with_key(&env, &creds, &["verify", "--target", "nas", &newest]);
    assert_code(&out, 34);
}

#[test]
fn a_final_name_taken_during_the_copy_is_never_replaced() {
    let s = Sshd::start();
    let (env, remote, creds) = world(&s);
    let child = env
        .command(&["run"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("VOUCH_TEST_FAULT", "stop:sftp-before-readback")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_stopped(child.id());
    let name = env.archives().pop().unwrap();
    let name = name.file_name().unwrap().to_str().unwrap().to_owned();
    // Someone else's file appears under the archive's name before the rename.
    fs::write(remote.join(&name), b"not vouch's").unwrap();
    util::resume(child.id());
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 34);
    assert!(stderr(&out).contains("never replaced"), "{}", stderr(&out));
    assert_eq!(fs::read(remote.join(&name)).unwrap(), b"not vouch's");
    assert_eq!(names(&remote), [name], "no temporary file and no receipt");
}

/// Runs `script` in the server's mount namespace (where `start_with_mounts` mounted its
/// filesystems).
fn in_server(s: &Sshd, script: &str) -> std::process::Output {
    std::process::Command::new("nsenter")
        .args(["-t", &s.pid().to_string(), "-m", "--", "sh", "-c", script])
        .output()
        .unwrap()
}

#[test]
fn a_remote_that_fills_up_during_the_copy_is_34_and_the_temporary_file_goes() {
    let s = Sshd::start_with_mounts(
        "mkdir -p \"$ROOT/small\"\nmount -t tmpfs -o size=16m tmpfs \"$ROOT/small\"",
    );
    let env = Env::new();
    fs::write(env.src.join("blob"), util::noise(3 << 20, 7)).unwrap();
    let creds = key_dir(&env, &s.client_key);
    let remote = s.root.join("small");
    env.write_config("", &sftp_target(&s, &remote, &s.known_hosts));
    let child = env
        .command(&["run"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("VOUCH_TEST_FAULT", "stop:before-offsite")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_stopped(child.id());
    // Filled after preflight passed: only the copy's writes find out.
    let fill = in_server(&s, &format!("cat /dev/zero >'{}/filler'", remote.display()));
    assert!(!fill.status.success(), "the filler stops at a full disk");
    util::resume(child.id());
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 34);
    let left = in_server(&s, &format!("ls -A '{}'", remote.display()));
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "filler",
        "only the filler is left on the server"
    );
    assert_eq!(env.archives().len(), 1, "the local archive is kept");
    assert!(!env.state.join("s3-pending.json").exists());
}

#[test]
fn a_connection_cut_during_the_copy_is_34_and_the_next_preflight_cleans_up() {
    let s = Sshd::start();
    let (env, remote, creds) = world(&s);
    let child = env
        .command(&["run"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("VOUCH_TEST_FAULT", "stop:sftp-before-readback")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_stopped(child.id());
    // The ssh under the stopped run goes away, as when the network drops.
    let ssh = util::pids_matching(|argv| {
        argv.first().is_some_and(|a| a.ends_with("ssh"))
            && argv.iter().any(|a| a == &s.port.to_string())
    });
    assert!(!ssh.is_empty(), "the run's ssh is found");
    for pid in ssh {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    util::resume(child.id());
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 34);
    assert_eq!(env.archives().len(), 1, "the local archive is kept");
    assert!(
        !names(&remote).iter().any(|n| !n.starts_with(".vouch-tmp.")),
        "no archive or receipt under a final name: {:?}",
        names(&remote)
    );
    assert_code(&with_key(&env, &creds, &["preflight"]), 0);
    assert!(names(&remote).is_empty(), "{:?}", names(&remote));
    assert!(!env.state.join("s3-pending.json").exists());
}

/// The config of `world` with the sftp target splitting into parts of 1 MiB, `keep` on it.
fn split_world(s: &Sshd, keep: &str) -> (Env, PathBuf, PathBuf) {
    let (env, remote, creds) = world(s);
    env.write_config(
        "",
        &format!(
            "{}split = \"1MiB\"\n{keep}",
            sftp_target(s, &remote, &s.known_hosts)
        ),
    );
    (env, remote, creds)
}

/// The newest local archive's file name.
fn newest_local(env: &Env) -> String {
    let a = env.archives().pop().expect("a local archive");
    a.file_name().unwrap().to_str().unwrap().to_owned()
}

#[test]
fn a_split_sftp_target_gets_parts_that_restore_with_ssh_cat_and_vouch() {
    let s = Sshd::start();
    let (env, remote, creds) = split_world(&s, "");
    assert_code(&with_key(&env, &creds, &["preflight"]), 0);
    assert_code(&with_key(&env, &creds, &["run"]), 0);
    let name = newest_local(&env);
    let local = fs::read(env.target.join(&name)).unwrap();
    let parts: Vec<String> = (0..local.len().div_ceil(1 << 20))
        .map(|i| format!("{name}.{i:03}"))
        .collect();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let mut want = parts.clone();
    want.push(format!("{name}-receipt.json"));
    want.sort();
    assert_eq!(names(&remote), want, "the parts and the split receipt only");
    let mut joined = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let bytes = fs::read(remote.join(p)).unwrap();
        if i + 1 < parts.len() {
            assert_eq!(bytes.len(), 1 << 20, "{p} is a full part");
        }
        joined.extend(bytes);
    }
    assert!(joined == local, "the parts in order are the local archive");
    let receipt: serde_json::Value =
        serde_json::from_slice(&fs::read(remote.join(format!("{name}-receipt.json"))).unwrap())
            .unwrap();
    assert_eq!(receipt["target"], "nas");
    assert_eq!(receipt["parts"], serde_json::json!(parts), "{receipt}");
    assert_eq!(receipt["archive-sha256"], hex(&Sha256::digest(&joined)));
    // The stock restore: ssh cat of every part (the shell's glob sorts them) | age | tar.
    let into = env.dir.path().join("stock");
    fs::create_dir_all(&into).unwrap();
    stock_restore(
        &s,
        &env,
        &format!("'cat {}.*'", remote.join(&name).display()),
        &into,
    );
    assert_eq!(
        fs::read(util::restored(&into, &env.src).join("blob")).unwrap(),
        fs::read(env.src.join("blob")).unwrap()
    );
    // vouch lists, verifies and restores it from the server.
    let listing = json(&with_key(
        &env,
        &creds,
        &["list", "--target", "nas", "--json"],
    ));
    let a = &listing["targets"][0]["archives"][0];
    assert_eq!(a["name"], name.as_str(), "{listing}");
    assert_eq!(a["receipt"], "ok", "{listing}");
    assert_eq!(a["size"], local.len(), "{listing}");
    let out = with_key(&env, &creds, &["verify", "--target", "nas", "--latest"]);
    assert_code(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("ok    nas  {name}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let into = env.dir.path().join("vouch");
    let to = into.to_str().unwrap();
    let out = with_key(
        &env,
        &creds,
        &["restore", &name, "--target", "nas", "--to", to],
    );
    assert_code(&out, 0);
    assert_eq!(
        fs::read(util::restored(&into, &env.src).join("a.txt")).unwrap(),
        b"alpha"
    );
    let status = json(&with_key(&env, &creds, &["status", "--live", "--json"]));
    assert_eq!(
        status["remotes"][0]["live"]["newest"],
        name.as_str(),
        "{status}"
    );
}

#[test]
fn a_split_remote_archive_missing_a_part_fails_verify_with_34() {
    let s = Sshd::start();
    let (env, remote, creds) = split_world(&s, "");
    assert_code(&with_key(&env, &creds, &["run"]), 0);
    let name = newest_local(&env);
    fs::remove_file(remote.join(format!("{name}.001"))).unwrap();
    let out = with_key(&env, &creds, &["verify", "--target", "nas", &name]);
    assert_code(&out, 34);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(text.contains(&format!("{name}.001")), "{text}");
    assert!(text.contains("missing"), "{text}");
}

#[test]
fn retention_on_a_split_sftp_target_leaves_no_part_behind() {
    let s = Sshd::start();
    let (env, remote, creds) = split_world(&s, "keep = { last = 1 }\n");
    assert_code(&with_key(&env, &creds, &["run"]), 0);
    let first = newest_local(&env);
    assert_code(&with_key(&env, &creds, &["run"]), 0);
    let second = newest_local(&env);
    assert_ne!(first, second);
    let left = names(&remote);
    assert!(
        left.iter().all(|n| n.starts_with(&second)),
        "the run's retention removed every file of {first}: {left:?}"
    );
    assert!(left.contains(&format!("{second}-receipt.json")), "{left:?}");
    assert!(!env.state.join("s3-pending.json").exists());
    // The run's retention killed after the receipt went and before the parts: the next
    // prune settles it.
    let out = env
        .command(&["run"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("VOUCH_TEST_FAULT", "kill:prune-marked")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9), "killed: {}", stderr(&out));
    let third = newest_local(&env);
    assert_ne!(third, second);
    assert!(
        names(&remote).iter().any(|n| n.starts_with(&second)),
        "the parts are still there: {:?}",
        names(&remote)
    );
    assert!(!remote.join(format!("{second}-receipt.json")).exists());
    let listing = json(&with_key(
        &env,
        &creds,
        &["list", "--target", "nas", "--json"],
    ));
    assert_eq!(
        listing["targets"][0]["archives"].as_array().map(Vec::len),
        Some(1),
        "the half-deleted archive is not listed: {listing}"
    );
    assert_code(&with_key(&env, &creds, &["prune", "--target", "nas"]), 0);
    let left = names(&remote);
    assert!(left.iter().all(|n| n.starts_with(&third)), "{left:?}");
    assert!(!env.state.join("s3-pending.json").exists());
}

#[test]
fn an_archive_split_locally_goes_to_an_unsplit_sftp_target_as_one_file() {
    let s = Sshd::start();
    let (env, remote, creds) = world(&s);
    env.write_config(
        "",
        &format!(
            "split = \"1MiB\"\n{}",
            sftp_target(&s, &remote, &s.known_hosts)
        ),
    );
    assert_code(&with_key(&env, &creds, &["run"]), 0);
    let mut local_parts: Vec<String> = env
        .target_files()
        .into_iter()
        .filter(|n| n.contains(".tar.gz.age.0"))
        .collect();
    local_parts.sort();
    assert!(local_parts.len() >= 3, "split locally: {local_parts:?}");
    let name = local_parts[0].trim_end_matches(".000").to_owned();
    assert_eq!(names(&remote), [name.clone(), format!("{name}.json")]);
    let mut joined = Vec::new();
    for p in &local_parts {
        joined.extend(fs::read(env.target.join(p)).unwrap());
    }
    assert!(fs::read(remote.join(&name)).unwrap() == joined);
    let out = with_key(&env, &creds, &["verify", "--target", "nas", "--latest"]);
    assert_code(&out, 0);
}

#[test]
fn a_server_that_stops_answering_during_the_copy_is_34_not_a_hang() {
    let programs = tempfile::tempdir().unwrap();
    let flag = programs.path().join("hang");
    let subsystem = util::sshd::hangs_when(programs.path(), &flag);
    let s = Sshd::start_with_subsystem(subsystem.to_str().unwrap());
    let (env, remote, creds) = world(&s);
    let child = env
        .command(&["run"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("VOUCH_TEST_FAULT", "stop:before-offsite")
        .env("VOUCH_TEST_SFTP_TIMEOUT", "3000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_stopped(child.id());
    // Preflight passed; from now on the server's sftp subsystem takes requests and answers
    // none, while its sshd stays up.
    fs::write(&flag, b"").unwrap();
    let started = std::time::Instant::now();
    util::resume(child.id());
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert_code(&out, 34);
    assert!(
        stderr(&out).contains("stopped answering"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("sftp-server"),
        "the hint: {}",
        stderr(&out)
    );
    assert_eq!(env.archives().len(), 1, "the local archive is kept");
    // Preflight against the hung server fails too, as a server that does not answer (14).
    let out = env
        .command(&["preflight"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("VOUCH_TEST_SFTP_TIMEOUT", "3000")
        .output()
        .unwrap();
    assert_code(&out, 14);
    assert!(
        stderr(&out).contains("stopped answering"),
        "{}",
        stderr(&out)
    );
    // Once the server answers again, preflight passes and nothing of the copy is left.
    fs::remove_file(&flag).unwrap();
    assert_code(&with_key(&env, &creds, &["preflight"]), 0);
    assert!(names(&remote).is_empty(), "{:?}", names(&remote));
    assert!(!env.state.join("s3-pending.json").exists());
}
