//! The archives of an S3 target through the commands that read targets, against a real S3
//! server (Garage on 127.0.0.1, tests/util/s3.rs): `list` and `verify` read the bucket,
//! `restore --target` fetches from it (and a restore without it names the S3 targets), a
//! damaged object fails `verify` with 34, retention applies the remote's own `keep` and a
//! deletion killed half-way is settled by the next prune, and `status --live` lists the bucket
//! while plain `status` stays offline.

mod util;

use std::fs;
use std::process::Output;
use util::s3::{with_key, S3Server};
use util::{assert_code, stderr, Env};

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A world with a local target and the server's bucket as "offsite", and a first run done;
/// returns the credentials directory and the archive's name.
fn backed_up(
    server: &S3Server,
    env: &Env,
    local_extra: &str,
    remote_extra: &str,
) -> (std::path::PathBuf, String) {
    fs::write(env.src.join("a.txt"), b"alpha").unwrap();
    fs::write(env.src.join("blob"), util::noise(300_000, 7)).unwrap();
    let creds = server.key_dir(env.dir.path());
    env.write_config(
        "",
        &format!("{local_extra}\n{}", server.target_toml(remote_extra)),
    );
    assert_code(&with_key(env, &creds, &["run"]), 0);
    let name = newest_local(env);
    (creds, name)
}

fn newest_local(env: &Env) -> String {
    let local = env.archives().pop().unwrap();
    local.file_name().unwrap().to_str().unwrap().to_owned()
}

#[test]
fn remote_archives_are_listed_verified_and_restored_and_a_damaged_one_is_34() {
    let server = S3Server::start();
    let env = Env::new();
    let (creds, name) = backed_up(&server, &env, "", "");

    let listing = json(&with_key(
        &env,
        &creds,
        &["list", "--target", "offsite", "--json"],
    ));
    let t = &listing["targets"][0];
    assert_eq!(t["name"], "offsite", "{listing}");
    assert_eq!(
        t["path"],
        format!("s3://{}/web1/", server.bucket),
        "{listing}"
    );
    let a = &t["archives"][0];
    assert_eq!(a["name"], name.as_str(), "{listing}");
    assert_eq!(a["receipt"], "ok", "{listing}");
    assert_eq!(a["verification"], "verified", "{listing}");
    let local_size = fs::metadata(env.target.join(&name)).unwrap().len();
    assert_eq!(a["size"], local_size, "{listing}");
    // Without --target, both kinds are listed.
    let all = json(&with_key(&env, &creds, &["list", "--json"]));
    assert_eq!(all["targets"].as_array().unwrap().len(), 2, "{all}");

    // Without the key the remote fails with 10, naming the file; the local target is still
    // verified.
    let out = env.vouch(&["verify", "--latest"]);
    assert_code(&out, 10);
    assert!(stderr(&out).contains("offsite"), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("ok    local  {name}")), "{text}");
    let out = with_key(&env, &creds, &["verify", "--target", "offsite", "--latest"]);
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("ok    offsite  {name}")), "{text}");
    let log: serde_json::Value =
        serde_json::from_slice(&fs::read(env.state.join("verified.json")).unwrap()).unwrap();
    assert!(
        log.to_string().contains(&format!("offsite/{name}")),
        "the remote verification is recorded: {log}"
    );

    let into = env.dir.path().join("from-remote");
    let out = with_key(
        &env,
        &creds,
        &[
            "restore",
            &name,
            "--target",
            "offsite",
            "--to",
            into.to_str().unwrap(),
        ],
    );
    assert_code(&out, 0);
    assert_eq!(
        fs::read(util::restored(&into, &env.src).join("a.txt")).unwrap(),
        b"alpha"
    );

    // The local copy gone: a restore without --target says where else to look.
    for f in fs::read_dir(&env.target).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
    let out = with_key(
        &env,
        &creds,
        &[
            "restore",
            &name,
            "--to",
            env.dir.path().join("x").to_str().unwrap(),
        ],
    );
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("--target offsite"),
        "{}",
        stderr(&out)
    );
    let latest = env.dir.path().join("latest");
    let out = with_key(
        &env,
        &creds,
        &[
            "restore",
            "latest",
            "--target",
            "offsite",
            "--to",
            latest.to_str().unwrap(),
        ],
    );
    assert_code(&out, 0);
    assert!(util::restored(&latest, &env.src).join("blob").exists());

    // One byte changed in the object: verify of the remote is 34, and the listing says so.
    let c = server.client();
    let key = format!("web1/{name}");
    let (_, mut body) = c.get(&key).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut body, &mut bytes).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    c.put(&key, &bytes, &[]).unwrap();
    let out = with_key(&env, &creds, &["verify", "--target", "offsite", &name]);
    assert_code(&out, 34);
    let listing = json(&with_key(
        &env,
        &creds,
        &["list", "--target", "offsite", "--json"],
    ));
    assert_eq!(
        listing["targets"][0]["archives"][0]["verification"], "failed",
        "{listing}"
    );
    let damaged = env.dir.path().join("damaged");
    let out = with_key(
        &env,
        &creds,
        &[
            "restore",
            &name,
            "--target",
            "offsite",
            "--to",
            damaged.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "a damaged copy does not restore");
    assert!(
        !util::restored(&damaged, &env.src).join("a.txt").exists(),
        "nothing of a damaged archive is put in place"
    );
}

#[test]
fn remote_retention_keeps_its_own_count_and_a_killed_deletion_is_settled() {
    let server = S3Server::start();
    let env = Env::new();
    let (creds, _) = backed_up(
        &server,
        &env,
        "keep = { last = 5 }",
        "keep = { last = 5 }\n",
    );
    for _ in 0..2 {
        assert_code(&with_key(&env, &creds, &["run"]), 0);
    }
    let names: Vec<String> = env
        .archives()
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 3);
    assert_eq!(server.keys().len(), 6, "three archives and their receipts");

    // The remote keeps one; the local target keeps its five.
    env.write_config(
        "",
        &format!(
            "keep = {{ last = 5 }}\n{}",
            server.target_toml("keep = { last = 1 }\n")
        ),
    );
    // Killed right after the first receipt is deleted.
    let out = env
        .command(&["prune", "--target", "offsite"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("VOUCH_TEST_FAULT", "kill:prune-marked")
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "{}",
        stderr(&out)
    );
    let orphan = format!("web1/{}", names[0]);
    assert!(server.keys().contains(&orphan), "{:?}", server.keys());
    assert!(!server.keys().contains(&format!("{orphan}.json")));
    let listing = json(&with_key(
        &env,
        &creds,
        &["list", "--target", "offsite", "--json"],
    ));
    let listed: Vec<&str> = listing["targets"][0]["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [&names[1], &names[2]],
        "a deletion under way is no archive"
    );

    let out = with_key(&env, &creds, &["prune", "--target", "offsite"]);
    assert_code(&out, 0);
    assert_eq!(
        server.keys(),
        [
            format!("web1/{}", names[2]),
            format!("web1/{}.json", names[2])
        ]
    );
    assert_eq!(env.archives().len(), 3, "the local target keeps its own");
    assert!(
        !env.state.join("s3-pending.json").exists(),
        "the deletion's record is settled"
    );

    // A run's retention prunes the remote too.
    assert_code(&with_key(&env, &creds, &["run"]), 0);
    let newest = newest_local(&env);
    assert_eq!(
        server.keys(),
        [format!("web1/{newest}"), format!("web1/{newest}.json")]
    );
}

#[test]
fn status_live_lists_the_bucket_and_plain_status_stays_offline() {
    let server = S3Server::start();
    let env = Env::new();
    let (creds, name) = backed_up(&server, &env, "", "");

    let out = with_key(&env, &creds, &["status", "--live", "--json"]);
    assert_code(&out, 0);
    let report = json(&out);
    assert_eq!(report["remotes"][0]["live"]["archives"], 1, "{report}");
    assert_eq!(
        report["remotes"][0]["live"]["newest"],
        name.as_str(),
        "{report}"
    );
    let out = with_key(&env, &creds, &["status", "--live"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("live: 1 archive, newest"), "{text}");

    // Deleted behind vouch's back: only the live status can tell.
    let c = server.client();
    c.delete(&format!("web1/{name}.json")).unwrap();
    c.delete(&format!("web1/{name}")).unwrap();
    assert_code(&with_key(&env, &creds, &["status"]), 0);
    let out = with_key(&env, &creds, &["status", "--live"]);
    assert_code(&out, 2);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("is no longer in"), "{text}");

    // The server gone: a warning, while the recorded copy is recent; list fails with 14.
    drop(server);
    let out = with_key(&env, &creds, &["status", "--live"]);
    assert_code(&out, 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("target offsite: cannot read s3://"), "{text}");
    let out = with_key(&env, &creds, &["list"]);
    assert_code(&out, 14);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("target local ({})", env.target.display())),
        "{text}"
    );
}
