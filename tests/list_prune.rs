//! `vouch list` and retention (`vouch prune`, and pruning at the end of `vouch run`) against
//! real archives. Older archives are made from a real run's archive: its files are copied under
//! an earlier time stamp and its receipt rewritten to match, which is what the same run on an
//! earlier day would have left.

mod util;

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use time::OffsetDateTime;
use util::{assert_code, stderr, Env, Immutable};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stamp(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    t.format(&f).unwrap()
}

fn days_ago(n: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() - time::Duration::days(n)
}

/// Every receipt in the target, oldest first.
fn receipts(env: &Env) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = env
        .target_files()
        .into_iter()
        .filter(|f| f.ends_with(".json"))
        .map(|f| env.target.join(f))
        .collect();
    out.sort();
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// An archive on the target: its name and its receipt.
struct Made {
    name: String,
    receipt: PathBuf,
    parts: Vec<String>,
}

impl Made {
    fn data_files(&self) -> Vec<String> {
        if self.parts.is_empty() {
            vec![self.name.clone()]
        } else {
            self.parts.clone()
        }
    }

    fn all_files(&self) -> Vec<String> {
        let mut out = self.data_files();
        out.push(
            self.receipt
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
        out
    }
}

/// The archive a real run wrote (its receipt).
fn made_from(receipt: &Path) -> Made {
    let r = read_json(receipt);
    Made {
        name: r["archive"].as_str().unwrap().to_owned(),
        receipt: receipt.to_owned(),
        parts: r
            .get("parts")
            .and_then(Value::as_array)
            .map(|p| p.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default(),
    }
}

/// Copies a real archive (every part) and its receipt under the creation time `created`.
fn copy_as_of(env: &Env, from: &Made, created: OffsetDateTime) -> Made {
    let name = format!("test-{}.tar.gz.age", stamp(created));
    let mut receipt = read_json(&from.receipt);
    let when = vouch::run::rfc3339(created);
    receipt["archive"] = Value::from(name.clone());
    receipt["created"] = Value::from(when.clone());
    receipt["verified-at"] = Value::from(when);
    let mut parts = Vec::new();
    for (i, p) in from.parts.iter().enumerate() {
        let new = format!("{name}.{i:03}");
        fs::copy(env.target.join(p), env.target.join(&new)).unwrap();
        parts.push(new);
    }
    let receipt_name = if parts.is_empty() {
        fs::copy(env.target.join(&from.name), env.target.join(&name)).unwrap();
        format!("{name}.json")
    } else {
        receipt["parts"] = Value::from(parts.clone());
        format!("{name}-receipt.json")
    };
    let path = env.target.join(receipt_name);
    fs::write(&path, serde_json::to_vec_pretty(&receipt).unwrap()).unwrap();
    Made {
        name,
        receipt: path,
        parts,
    }
}

/// Records a verification of `archive` in the state directory.
fn record_verification(env: &Env, archive: &str, ok: bool, at: &str) {
    let path = env.state.join("verified.json");
    let mut log = if path.exists() {
        read_json(&path)
    } else {
        Value::Object(Default::default())
    };
    let mut record = serde_json::json!({"verified-at": at, "ok": ok, "restore-test": false});
    if !ok {
        record["detail"] = Value::from("entry data.bin: sha256 differs");
    }
    log[format!("local/{archive}")] = record;
    fs::write(&path, serde_json::to_vec_pretty(&log).unwrap()).unwrap();
}

/// A world with one real archive and a config whose target has `target_extra`; with
/// `required`, the source's `vault` file is a required path.
fn backed_up(required: bool, target_extra: &str, size: usize) -> (Env, Made) {
    let env = Env::new();
    fs::write(env.src.join("data.bin"), util::noise(size, 7)).unwrap();
    let vault = env.src.join("vault");
    fs::write(&vault, "secret\n").unwrap();
    let backup_extra = if required {
        format!("required = [\"{}\"]", vault.display())
    } else {
        String::new()
    };
    env.write_config(&backup_extra, &format!("min-free = 0\n{target_extra}"));
    assert_code(&env.vouch(&["run"]), 0);
    let r = receipts(&env);
    assert_eq!(r.len(), 1, "{:?}", env.target_files());
    let made = made_from(&r[0]);
    (env, made)
}

/// The line printed for an archive (the one naming it as a word of its own).
fn line_for<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().any(|w| w == name))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{out}"))
}

#[test]
fn dry_run_changes_nothing_and_prune_deletes_what_it_said() {
    let (env, newest) = backed_up(false, "keep = { last = 2, daily = 3 }", 200_000);
    let older: Vec<Made> = (1..=9)
        .map(|d| copy_as_of(&env, &newest, days_ago(d)))
        .collect();
    // An archive without a receipt and one whose verification failed: never retention's call.
    let orphan = copy_as_of(&env, &newest, days_ago(20));
    fs::remove_file(&orphan.receipt).unwrap();
    let failed = copy_as_of(&env, &newest, days_ago(15));
    record_verification(&env, &failed.name, false, "2026-01-01T00:00:00Z");
    record_verification(&env, &older[4].name, true, "2026-01-01T00:00:00Z");

    let before = env.target_files();
    let out = env.vouch(&["prune", "--dry-run"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert_eq!(env.target_files(), before, "a dry run deleted something");
    assert!(line_for(&text, &newest.name).starts_with("keep "), "{text}");
    assert!(line_for(&text, &newest.name).contains("newest verified"));
    assert!(
        line_for(&text, &older[0].name).contains("last 2/2"),
        "{text}"
    );
    let daily = vouch::run::rfc3339(days_ago(2));
    assert!(
        line_for(&text, &older[1].name).contains(&format!("daily {}", &daily[..10])),
        "{text}"
    );
    for gone in &older[2..] {
        let line = line_for(&text, &gone.name);
        assert!(line.starts_with("delete "), "{line}");
        assert!(line.ends_with("beyond keep.last=2, keep.daily=3"), "{line}");
    }
    assert!(line_for(&text, &orphan.name).starts_with("keep "));
    assert!(line_for(&text, &orphan.name).contains("no receipt"));
    assert!(line_for(&text, &failed.name).contains("last verification failed"));

    let out = env.vouch(&["prune"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("pruned 7 archive(s) on local"),
        "{}",
        stderr(&out)
    );
    let mut expected: Vec<String> = [&newest, &older[0], &older[1], &failed]
        .iter()
        .flat_map(|m| m.all_files())
        .collect();
    expected.push(orphan.name.clone());
    expected.sort();
    assert_eq!(env.target_files(), expected);
    let log = fs::read_to_string(env.state.join("verified.json")).unwrap();
    assert!(!log.contains(&older[4].name), "{log}");
    assert!(log.contains(&failed.name), "{log}");
    // The survivors are intact: the newest still verifies.
    assert_code(&env.vouch(&["verify", "--latest"]), 0);
    // A second prune has nothing left to do.
    let out = env.vouch(&["prune"]);
    assert_code(&out, 0);
    assert_eq!(env.target_files(), expected);
    // A run prunes too, and says which archives it keeps only because it cannot account
    // for them.
    let out = env.vouch(&["run"]);
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("keeping {} (no receipt)", orphan.name)),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "keeping {} (its last verification failed",
            failed.name
        )),
        "{err}"
    );
    for kept in [&newest, &older[0], &older[1], &failed] {
        assert!(env.target.join(&kept.name).exists(), "{}", kept.name);
    }
    assert_eq!(receipts(&env).len(), 5);
}

#[test]
fn a_split_archive_goes_with_every_part_and_a_failed_deletion_is_36() {
    let (env, newest) = backed_up(false, "split = \"1MiB\"\nkeep = { last = 1 }", 3_000_000);
    assert!(newest.parts.len() >= 3, "{:?}", env.target_files());
    let one = copy_as_of(&env, &newest, days_ago(1));
    let two = copy_as_of(&env, &newest, days_ago(2));
    let three = copy_as_of(&env, &newest, days_ago(3));
    let stuck = env.target.join(&two.parts[1]);
    let guard = Immutable::set(&stuck);

    let out = env.vouch(&["prune"]);
    assert_code(&out, 36);
    assert!(stderr(&out).contains(&two.parts[1]), "{}", stderr(&out));
    // The other archives went in full. Of the stuck one only the immutable part is left, with
    // its receipt renamed to the deletion marker: it is no archive any more for any command.
    let receipt_name = |m: &Made| {
        m.receipt
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let marker = format!(".vouch-deleting.{}", receipt_name(&two));
    let mut expected = newest.all_files();
    expected.push(two.parts[1].clone());
    expected.push(marker.clone());
    expected.sort();
    assert_eq!(env.target_files(), expected);
    for m in [&one, &three] {
        assert!(m.all_files().iter().all(|f| !env.target.join(f).exists()));
    }
    let listed: Value = serde_json::from_slice(&env.vouch(&["list", "--json"]).stdout).unwrap();
    let archives = listed["targets"][0]["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 1, "{archives:?}");
    assert_eq!(archives[0]["name"], Value::from(newest.name.clone()));
    assert_code(&env.vouch(&["verify", "--all"]), 0);
    drop(guard);

    // The next prune finishes the deletion it began.
    let out = env.vouch(&["prune"]);
    assert_code(&out, 0);
    let mut expected = newest.all_files();
    expected.sort();
    assert_eq!(env.target_files(), expected);
}

#[test]
fn a_failed_run_prunes_nothing_and_a_good_run_prunes_even_past_a_failure() {
    let (env, first) = backed_up(true, "keep = { last = 1 }", 50_000);
    let one = copy_as_of(&env, &first, days_ago(1));
    let two = copy_as_of(&env, &first, days_ago(2));

    // A run that fails (a required path missing) leaves every archive alone.
    fs::remove_file(env.src.join("vault")).unwrap();
    let before = env.target_files();
    assert_code(&env.vouch(&["run"]), 32);
    assert_eq!(env.target_files(), before);

    // A good run prunes; one archive that cannot be deleted makes it 36, and the new archive
    // and the other deletions stand.
    fs::write(env.src.join("vault"), "secret\n").unwrap();
    let guard = Immutable::set(&env.target.join(&two.name));
    let out = env.vouch(&["run"]);
    assert_code(&out, 36);
    assert!(stderr(&out).contains("PRUNE"), "{}", stderr(&out));
    drop(guard);
    let now: Vec<Made> = receipts(&env).iter().map(|r| made_from(r)).collect();
    let names: Vec<&str> = now.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{:?}", env.target_files());
    assert_eq!(names[0], two.name);
    assert!(names[1] > first.name.as_str(), "{names:?}");
    assert!(!env.target.join(&one.name).exists());
    assert!(!env.target.join(&first.name).exists());
    let last_run = fs::read_to_string(env.state.join("last-run.json")).unwrap();
    assert!(last_run.contains("\"exit-code\": 36"), "{last_run}");
    assert!(last_run.contains(&now[1].name), "{last_run}");
    assert_code(&env.vouch(&["verify", "--latest"]), 0);
}

#[test]
fn list_shows_every_archive_and_marks_bad_receipts() {
    let (env, newest) = backed_up(false, "", 100_000);
    let good = copy_as_of(&env, &newest, days_ago(1));
    let missing = copy_as_of(&env, &newest, days_ago(2));
    fs::remove_file(&missing.receipt).unwrap();
    let resized = copy_as_of(&env, &newest, days_ago(3));
    let mut bytes = fs::read(env.target.join(&resized.name)).unwrap();
    bytes.push(0);
    fs::write(env.target.join(&resized.name), bytes).unwrap();
    let other = copy_as_of(&env, &newest, days_ago(4));
    let mut r = read_json(&other.receipt);
    r["archive"] = Value::from(good.name.clone());
    fs::write(&other.receipt, serde_json::to_vec(&r).unwrap()).unwrap();
    record_verification(&env, &good.name, false, "2026-01-02T00:00:00Z");
    record_verification(&env, &newest.name, true, "2030-01-01T00:00:00Z");

    let out = env.vouch(&["list", "--json"]);
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["targets"][0];
    assert_eq!(t["name"], "local");
    assert_eq!(t["path"], Value::from(env.target.display().to_string()));
    assert!(t["error"].is_null());
    let a = t["archives"].as_array().unwrap();
    let names: Vec<&str> = a.iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            &other.name,
            &resized.name,
            &missing.name,
            &good.name,
            &newest.name
        ]
    );
    let receipt = read_json(&newest.receipt);
    let n = &a[4];
    assert_eq!(n["created"], receipt["created"]);
    assert_eq!(n["size"], receipt["archive-size"]);
    assert_eq!(n["files"], receipt["files"]);
    assert_eq!(n["parts"], 0);
    assert_eq!(n["required"], serde_json::json!([]));
    assert_eq!(n["required-ok"], true);
    assert_eq!(n["verification"], "verified");
    assert_eq!(n["verified-at"], "2030-01-01T00:00:00Z");
    assert_eq!(n["receipt"], "ok");
    assert!(n["problem"].is_null());
    assert_eq!(a[3]["verification"], "failed");
    assert!(a[3]["verified-at"].is_null());
    assert!(a[3]["verify-detail"].as_str().unwrap().contains("sha256"));
    assert_eq!(a[3]["receipt"], "ok");
    assert_eq!(a[2]["receipt"], "missing");
    assert!(a[2]["files"].is_null());
    assert_eq!(
        a[2]["created"],
        Value::from(vouch::run::rfc3339(days_ago(2)))
    );
    assert_eq!(a[1]["receipt"], "mismatch");
    assert!(a[1]["problem"].as_str().unwrap().contains("bytes on disk"));
    assert_eq!(a[0]["receipt"], "invalid");
    assert!(a[0]["problem"]
        .as_str()
        .unwrap()
        .contains("another archive"));

    let out = env.vouch(&["list"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        line_for(&text, &missing.name).contains("RECEIPT MISSING"),
        "{text}"
    );
    assert!(line_for(&text, &resized.name).contains("RECEIPT MISMATCH"));
    assert!(line_for(&text, &good.name).contains("FAILED"));
    assert!(line_for(&text, &newest.name).contains("2030-01-01T00:00:00Z"));
}

#[test]
fn unknown_targets_are_usage_errors_and_a_held_lock_is_11() {
    let (env, newest) = backed_up(false, "keep = { last = 1 }", 10_000);
    let old = copy_as_of(&env, &newest, days_ago(1));
    for args in [
        &["list", "--target", "nope"][..],
        &["list", "--json", "--target", "nope"],
        &["prune", "--target", "nope"],
        &["prune", "--dry-run", "--target", "nope"],
    ] {
        let out = env.vouch(args);
        assert_code(&out, 2);
        assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    }
    assert_code(&env.vouch(&["list", "--target", "local"]), 0);

    let lock = fs::File::create(env.runtime.join("lock")).unwrap();
    lock.try_lock().unwrap();
    assert_code(&env.vouch(&["prune"]), 11);
    assert!(env.target.join(&old.name).exists());
    // A dry run deletes nothing, so it does not wait for the lock.
    assert_code(&env.vouch(&["prune", "--dry-run"]), 0);
    drop(lock);
    assert_code(&env.vouch(&["prune", "--target", "local"]), 0);
    assert!(!env.target.join(&old.name).exists());
    assert!(env.target.join(&newest.name).exists());
}

#[test]
fn list_of_a_missing_target_directory_says_so_and_exits_14() {
    let (env, _) = backed_up(false, "", 10_000);
    fs::rename(&env.target, env.dir.path().join("moved")).unwrap();
    let out = env.vouch(&["list", "--json"]);
    assert_code(&out, 14);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["targets"][0]["error"]
        .as_str()
        .unwrap()
        .contains("missing"));
    assert_code(&env.vouch(&["prune"]), 14);
}

#[test]
fn a_receipt_naming_files_outside_its_archive_is_never_acted_on() {
    let (env, newest) = backed_up(false, "keep = { last = 1 }", 10_000);
    let victim = env.dir.path().join("victim");
    fs::write(&victim, "not an archive\n").unwrap();
    let old = copy_as_of(&env, &newest, days_ago(3));
    let mut r = read_json(&old.receipt);
    r["parts"] = serde_json::json!(["../victim"]);
    fs::write(&old.receipt, serde_json::to_vec(&r).unwrap()).unwrap();

    let out = env.vouch(&["prune"]);
    assert_code(&out, 0);
    let line = line_for(&stdout(&out), &old.name).to_owned();
    assert!(line.starts_with("keep "), "{line}");
    assert!(line.contains("../victim"), "{line}");
    assert!(victim.exists());
    assert!(env.target.join(&old.name).exists());
    let v: Value = serde_json::from_slice(&env.vouch(&["list", "--json"]).stdout).unwrap();
    assert_eq!(v["targets"][0]["archives"][0]["receipt"], "invalid");
}

#[test]
fn a_target_shared_with_another_backup_name_keeps_its_archives() {
    let (env, ours) = backed_up(false, "keep = { last = 1 }", 2_000);
    // Another host's backup in the same directory, encrypted to another key.
    let other = Env::new();
    fs::write(other.src.join("x"), "other host\n").unwrap();
    other.write_config("", "min-free = 0\nkeep = { last = 1 }");
    let text = fs::read_to_string(&other.config)
        .unwrap()
        .replace("name = \"test\"", "name = \"web-2\"")
        .replace(
            &other.target.display().to_string(),
            &env.target.display().to_string(),
        );
    fs::write(&other.config, text).unwrap();
    assert_code(&other.vouch(&["run"]), 0);
    assert_code(&other.vouch(&["run"]), 0);
    let foreign: Vec<String> = env
        .target_files()
        .into_iter()
        .filter(|f| f.starts_with("web-2-"))
        .collect();
    assert!(!foreign.is_empty());

    // Our prune and our runs never touch the other backup's archives, and theirs never ours.
    assert!(
        env.target.join(&ours.name).exists(),
        "{:?}",
        env.target_files()
    );
    let out = env.vouch(&["prune"]);
    assert_code(&out, 0);
    assert_code(&env.vouch(&["run"]), 0);
    for f in &foreign {
        assert!(
            env.target.join(f).exists(),
            "{f} was deleted by another backup's retention"
        );
    }
    // verify --latest checks our newest archive, not theirs (which our key cannot open).
    assert_code(&env.vouch(&["verify", "--latest"]), 0);
    assert_code(&env.vouch(&["verify", "--all"]), 0);
    let out = env.vouch(&["list"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(!text.contains("web-2-"), "{text}");
    assert!(text.contains("of other backup names, not listed"), "{text}");
}

#[test]
fn a_damaged_verification_log_stops_retention_and_is_not_overwritten() {
    let (env, first) = backed_up(false, "keep = { last = 1 }", 2_000);
    let older = copy_as_of(&env, &first, days_ago(3));
    let log = env.state.join("verified.json");
    fs::write(&log, b"{\"local/broken\": {\"verified-at\": ").unwrap();
    let before = env.target_files();

    let out = env.vouch(&["prune"]);
    assert_code(&out, 36);
    assert!(stderr(&out).contains("verified.json"), "{}", stderr(&out));
    assert_eq!(env.target_files(), before, "nothing may be deleted");
    assert!(env.target.join(&older.name).exists());

    // A run still succeeds in making its archive, but retention refuses: 36.
    assert_code(&env.vouch(&["run"]), 36);
    assert!(env.target.join(&older.name).exists());

    // verify does not overwrite the damaged log.
    let out = env.vouch(&["verify"]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read(&log).unwrap(),
        b"{\"local/broken\": {\"verified-at\": "
    );

    // status says so, as a critical reason.
    let out = env.vouch(&["status"]);
    assert_code(&out, 2);
    assert!(stdout(&out).contains("verified.json"), "{}", stdout(&out));

    // Moved aside, everything works again.
    fs::rename(&log, env.state.join("verified.json.bad")).unwrap();
    assert_code(&env.vouch(&["prune"]), 0);
    assert!(!env.target.join(&older.name).exists());
}

#[test]
fn list_shows_required_paths_and_marks_an_archive_that_lacks_one() {
    let (env, newest) = backed_up(true, "", 10_000);
    let vault = env.src.join("vault").display().to_string();
    let lacking = copy_as_of(&env, &newest, days_ago(1));
    let mut r = read_json(&lacking.receipt);
    assert_eq!(r["required"][0]["present"], true, "{r}");
    r["required"][0]["present"] = Value::from(false);
    fs::write(&lacking.receipt, serde_json::to_vec(&r).unwrap()).unwrap();

    let out = env.vouch(&["list", "--json"]);
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = v["targets"][0]["archives"].as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[1]["name"], Value::from(newest.name.clone()));
    assert_eq!(a[1]["required-ok"], true);
    let path = vault.trim_start_matches('/');
    let stored = a[1]["required"][0]["path"].as_str().unwrap();
    assert!(
        stored.trim_start_matches('/') == path,
        "{stored} vs {vault}"
    );
    assert_eq!(a[1]["required"][0]["present"], true);
    assert_eq!(a[0]["name"], Value::from(lacking.name.clone()));
    assert_eq!(a[0]["required-ok"], false);
    assert_eq!(a[0]["required"][0]["present"], false);

    let text = stdout(&env.vouch(&["list"]));
    assert!(line_for(&text, &newest.name).contains(" 1/1 "), "{text}");
    assert!(!line_for(&text, &newest.name).contains("REQUIRED PATH MISSING"));
    let line = line_for(&text, &lacking.name);
    assert!(line.contains(" 0/1 "), "{text}");
    assert!(line.contains("REQUIRED PATH MISSING"), "{text}");
}
