//! Config parsing and validation: the shipped example, defaults, and every error class.

use super::*;

const FILE: &str = "/etc/vouch/vouch.toml";

fn parse(text: &str) -> Result<Settings, ConfigError> {
    from_str(text, Path::new(FILE))
}

fn err(text: &str) -> ConfigError {
    parse(text).expect_err("the config should be rejected")
}

const MINIMAL: &str = r#"
[backup]
sources = ["/etc"]

[encryption]
recipients = ["age1example"]

[[target]]
name = "local"
path = "/var/backups/vouch"
"#;

#[test]
fn the_shipped_example_parses() {
    let s = parse(include_str!("../../packaging/vouch.toml")).unwrap();
    assert_eq!(s.backup.sources, vec![PathBuf::from("/etc")]);
    assert_eq!(s.targets[0].keep.daily, Some(14));
    assert_eq!(s.targets[0].min_free, 1 << 30);
    assert_eq!(
        s.encryption.identity,
        Some(PathBuf::from("/etc/vouch/identity.txt"))
    );
}

#[test]
fn the_demo_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/vouch.toml");
    let s = load(&path).unwrap();
    assert_eq!(s.backup.name, "demo");
    assert!(s.targets[0].path.ends_with("target/demo/archives"));
    assert!(!s.targets[0].path.to_string_lossy().contains(".."));
}

#[test]
fn a_full_config_parses_field_by_field() {
    let s = parse(
        r#"
[backup]
name = "web1"
sources = ["/etc", "/var/lib/app/"]
exclude = ["*.tmp", "**/node_modules"]
required = ["/var/lib/app/vault.enc"]
one-file-system = true
on-read-error = "warn"

[encryption]
recipients = ["age1a", "age1b"]
recipients-file = "/etc/vouch/recipients.txt"
identity = "/etc/vouch/identity.txt"

[[target]]
name = "usb"
path = "/mnt/usb//vouch/"
require-mount = true
allow-volatile = true
split = "1GiB"
min-free = "2GiB"
keep = { last = 3, daily = 14, weekly = 8, monthly = 12, yearly = 2, max-age = "400d" }

[health]
max-age = "30h"
size-tolerance = 15
"#,
    )
    .unwrap();
    assert_eq!(s.backup.name, "web1");
    assert_eq!(
        s.backup.sources,
        vec![PathBuf::from("/etc"), PathBuf::from("/var/lib/app")]
    );
    assert_eq!(s.backup.exclude, vec!["*.tmp", "**/node_modules"]);
    assert_eq!(
        s.backup.required,
        vec![PathBuf::from("/var/lib/app/vault.enc")]
    );
    assert!(s.backup.one_file_system);
    assert_eq!(s.backup.on_read_error, ReadErrorPolicy::Warn);
    assert_eq!(s.encryption.recipients, vec!["age1a", "age1b"]);
    assert_eq!(
        s.encryption.recipients_file,
        Some(PathBuf::from("/etc/vouch/recipients.txt"))
    );
    let t = &s.targets[0];
    assert_eq!(t.name, "usb");
    assert_eq!(t.path, PathBuf::from("/mnt/usb/vouch"));
    assert!(t.require_mount && t.allow_volatile);
    assert_eq!(t.split, Split::Size(1 << 30));
    assert_eq!(t.min_free, 2 << 30);
    assert_eq!(
        t.keep,
        Keep {
            last: Some(3),
            daily: Some(14),
            weekly: Some(8),
            monthly: Some(12),
            yearly: Some(2),
            max_age: Some(Duration::from_secs(400 * 86_400)),
        }
    );
    assert_eq!(s.health.max_age, Duration::from_secs(30 * 3600));
    assert_eq!(s.health.size_tolerance, 15);
}

#[test]
fn a_minimal_config_gets_every_default() {
    let s = parse(MINIMAL).unwrap();
    assert!(!s.backup.name.is_empty());
    assert!(s.backup.exclude.is_empty() && s.backup.required.is_empty());
    assert!(!s.backup.one_file_system);
    assert_eq!(s.backup.on_read_error, ReadErrorPolicy::Fail);
    assert!(!s.encryption.verify_without_identity);
    let t = &s.targets[0];
    assert_eq!(t.split, Split::Auto);
    assert_eq!(t.min_free, DEFAULT_MIN_FREE);
    assert_eq!(t.keep.last, Some(DEFAULT_KEEP_LAST));
    assert!(!t.require_mount && !t.allow_volatile);
    assert_eq!(s.health.max_age, DEFAULT_MAX_AGE);
    assert_eq!(s.health.size_tolerance, DEFAULT_SIZE_TOLERANCE);
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let s = from_str(
        &MINIMAL
            .replace("\"/etc\"", "\"data\"")
            .replace("/var/backups/vouch", "../out"),
        Path::new("/srv/demo/vouch.toml"),
    )
    .unwrap();
    assert_eq!(s.backup.sources, vec![PathBuf::from("/srv/demo/data")]);
    assert_eq!(s.targets[0].path, PathBuf::from("/srv/out"));
}

/// Asserts an error's key, line and a fragment of its message.
fn check(e: &ConfigError, key: &str, line: Option<usize>, fragment: &str) {
    assert_eq!(e.key.as_deref(), Some(key), "{e}");
    assert_eq!(e.line, line, "{e}");
    assert!(e.message.contains(fragment), "{e}");
    assert_eq!(e.file, PathBuf::from(FILE));
    let shown = e.to_string();
    assert!(shown.starts_with(FILE) && shown.contains(key), "{shown}");
}

#[test]
fn unknown_keys_are_rejected_in_every_section() {
    let cases = [
        ("[backup]\nsorces = [\"/etc\"]\n", "backup.sorces", 2),
        (&format!("{MINIMAL}[extra]\n") as &str, "extra", 11),
        (
            &MINIMAL.replace("recipients = ", "recipient = ") as &str,
            "encryption.recipient",
            6,
        ),
        (
            &format!("{MINIMAL}colour = \"red\"\n") as &str,
            "target.colour",
            11,
        ),
        (
            &format!("{MINIMAL}keep = {{ hourly = 1 }}\n") as &str,
            "target.hourly",
            11,
        ),
        (
            &format!("{MINIMAL}[health]\nmaxage = \"1h\"\n") as &str,
            "health.maxage",
            12,
        ),
    ];
    for (text, key, line) in cases {
        let e = err(text);
        assert_eq!(e.line, Some(line), "{e}");
        assert!(
            e.key
                .as_deref()
                .unwrap_or("")
                .contains(key.rsplit('.').next().unwrap()),
            "{key}: {e}"
        );
        assert!(e.message.contains("unknown"), "{e}");
    }
}

#[test]
fn syntax_and_type_errors_name_the_line() {
    let e = err("[backup\n");
    assert_eq!(e.line, Some(1), "{e}");
    let e = err(&MINIMAL.replace("sources = [\"/etc\"]", "sources = \"/etc\""));
    assert_eq!(e.line, Some(3), "{e}");
    assert_eq!(e.key.as_deref(), Some("backup.sources"), "{e}");
    let e = err(&format!("{MINIMAL}require-mount = \"yes\"\n"));
    assert_eq!(e.line, Some(11), "{e}");
    assert_eq!(e.key.as_deref(), Some("target.require-mount"), "{e}");
}

#[test]
fn missing_and_empty_required_keys() {
    let e = err("[backup]\n[encryption]\n[[target]]\nname = \"a\"\npath = \"/b\"\n");
    assert!(e.key.as_deref().unwrap_or("").contains("sources"), "{e}");
    assert!(e.message.contains("missing"), "{e}");
    let e = err(&MINIMAL.replace("[\"/etc\"]", "[]"));
    check(&e, "backup.sources", Some(3), "at least one source");
    let e = err("[backup]\nsources = [\"/etc\"]\n[encryption]\n");
    check(&e, "target", None, "at least one [[target]]");
    let e = err(&MINIMAL.replace("path = \"/var/backups/vouch\"\n", ""));
    assert!(e.key.as_deref().unwrap_or("").contains("path"), "{e}");
}

#[test]
fn validation_errors_name_key_and_line() {
    let dup = format!("{MINIMAL}\n[[target]]\nname = \"local\"\npath = \"/other\"\n");
    check(&err(&dup), "target.local.name", Some(13), "two targets");
    let dup_path = format!("{MINIMAL}\n[[target]]\nname = \"b\"\npath = \"/var/backups/vouch/\"\n");
    check(&err(&dup_path), "target.b.path", Some(14), "already uses");
    let bad_size = format!("{MINIMAL}min-free = \"lots\"\n");
    check(
        &err(&bad_size),
        "target.local.min-free",
        Some(11),
        "not a size",
    );
    let bad_split = format!("{MINIMAL}split = \"1KiB\"\n");
    check(
        &err(&bad_split),
        "target.local.split",
        Some(11),
        "at least 1MiB",
    );
    let bad_dur = format!("{MINIMAL}[health]\nmax-age = \"soon\"\n");
    check(&err(&bad_dur), "health.max-age", Some(12), "not a duration");
    let bad_tol = format!("{MINIMAL}[health]\nsize-tolerance = 0\n");
    check(
        &err(&bad_tol),
        "health.size-tolerance",
        Some(12),
        "percentage",
    );
    let bad_glob = MINIMAL.replace(
        "sources = [\"/etc\"]",
        "sources = [\"/etc\"]\nexclude = [\"a[\"]",
    );
    check(&err(&bad_glob), "backup.exclude", Some(4), "bad pattern");
    let outside = MINIMAL.replace(
        "sources = [\"/etc\"]",
        "sources = [\"/etc\"]\nrequired = [\"/var/x\"]",
    );
    check(
        &err(&outside),
        "backup.required",
        Some(4),
        "not under any source",
    );
    let excluded_required = MINIMAL.replace(
        "sources = [\"/etc\"]",
        "sources = [\"/etc\"]\nexclude = [\"*.tmp\"]\nrequired = [\"/etc/db/dump.tmp\"]",
    );
    check(
        &err(&excluded_required),
        "backup.required",
        Some(5),
        "left out by an exclude",
    );
    let inside = MINIMAL.replace("/var/backups/vouch", "/etc/backups");
    check(
        &err(&inside),
        "target.local.path",
        Some(10),
        "inside a source",
    );
    let excluded = MINIMAL
        .replace("/var/backups/vouch", "/etc/backups")
        .replace(
            "sources = [\"/etc\"]",
            "sources = [\"/etc\"]\nexclude = [\"/etc/backups\"]",
        );
    assert!(parse(&excluded).is_ok());
    let bad_name = MINIMAL.replace("name = \"local\"", "name = \"bad name\"");
    check(
        &err(&bad_name),
        "target.bad name.name",
        Some(9),
        "use 1 to 64",
    );
    let nested = MINIMAL.replace("[\"/etc\"]", "[\"/etc\", \"/etc/app\"]");
    check(&err(&nested), "backup.sources", Some(3), "overlaps");
    let policy = MINIMAL.replace(
        "sources = [\"/etc\"]",
        "sources = [\"/etc\"]\non-read-error = \"skip\"",
    );
    check(&err(&policy), "backup.on-read-error", Some(4), "not one of");
    let empty = MINIMAL.replace("\"/var/backups/vouch\"", "\"\"");
    check(
        &err(&empty),
        "target.local.path",
        Some(10),
        "must not be empty",
    );
}

#[test]
fn a_missing_file_names_the_file() {
    let e = load(Path::new("/nonexistent/vouch.toml")).unwrap_err();
    assert_eq!(e.file, PathBuf::from("/nonexistent/vouch.toml"));
    assert!(e.message.contains("cannot read"), "{e}");
}

#[test]
fn reporting_sections_parse_with_defaults() {
    let s = parse(MINIMAL).unwrap();
    assert_eq!(s.health.on_anomaly, AnomalyPolicy::Warn);
    assert_eq!(s.metrics.textfile, None);
    assert!(!s.notify.any());
    assert_eq!(s.notify.timeout, DEFAULT_NOTIFY_TIMEOUT);

    let s = parse(&format!(
        "{MINIMAL}
[health]
on-anomaly = \"fail\"

[metrics]
textfile = \"/var/lib/prometheus/node-exporter/vouch.prom\"

[notify]
webhook = \"https://alerts.example.org/hook/\"
ping = \"http://127.0.0.1:8000/ping/abc\"
command = [\"/usr/local/bin/alert\", \"--quiet\"]
timeout = \"3s\"
"
    ))
    .unwrap();
    assert_eq!(s.health.on_anomaly, AnomalyPolicy::Fail);
    assert_eq!(
        s.metrics.textfile,
        Some(PathBuf::from(
            "/var/lib/prometheus/node-exporter/vouch.prom"
        ))
    );
    // The webhook is used as written (a trailing slash can matter to the server).
    assert_eq!(
        s.notify.webhook.as_deref(),
        Some("https://alerts.example.org/hook/")
    );
    assert_eq!(
        s.notify.ping.as_deref(),
        Some("http://127.0.0.1:8000/ping/abc")
    );
    assert_eq!(
        s.notify.command,
        Some(vec![
            "/usr/local/bin/alert".to_owned(),
            "--quiet".to_owned()
        ])
    );
    assert_eq!(s.notify.timeout, Duration::from_secs(3));
    assert!(s.notify.any());
}

#[test]
fn bad_reporting_settings_name_their_key_and_line() {
    let cases = [
        ("[health]\non-anomaly = \"panic\"", "health.on-anomaly"),
        (
            "[notify]\nwebhook = \"ftp://example.org\"",
            "notify.webhook",
        ),
        ("[notify]\nping = \"https://\"", "notify.ping"),
        ("[notify]\nwebhook = \"http://a b\"", "notify.webhook"),
        ("[notify]\ncommand = []", "notify.command"),
        ("[notify]\ncommand = [\"\"]", "notify.command"),
        ("[notify]\ntimeout = \"0s\"", "notify.timeout"),
        ("[notify]\ntimeout = \"2h\"", "notify.timeout"),
        ("[metrics]\ntextfile = \"\"", "metrics.textfile"),
        ("[metrics]\nport = 9100", "metrics.port"),
    ];
    let lines = MINIMAL.lines().count() + 3;
    for (extra, key) in cases {
        let e = err(&format!("{MINIMAL}\n{extra}\n"));
        assert_eq!(e.key.as_deref(), Some(key), "{extra}: {e}");
        assert_eq!(e.line, Some(lines), "{extra}: {e}");
    }
}

#[test]
fn text_that_is_not_utf8_names_the_line_of_the_first_bad_byte() {
    let mut bytes = MINIMAL.as_bytes().to_vec();
    let at = MINIMAL.find("/var/backups").unwrap();
    bytes[at + 1] = 0xff;
    let e = from_bytes(&bytes, Path::new(FILE)).unwrap_err();
    assert_eq!(e.line, Some(10), "{e}");
    assert!(
        e.message.contains("0xff") && e.message.contains("not UTF-8"),
        "{e}"
    );
    assert!(e.message.contains("byte 10 of the line"), "{e}");
    assert!(e.to_string().starts_with(&format!("{FILE}:10: ")), "{e}");
    assert!(from_bytes(MINIMAL.as_bytes(), Path::new(FILE)).is_ok());
}

#[test]
fn a_config_that_is_not_a_regular_file_or_too_large_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let big = dir.path().join("big.toml");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(crate::host::bounded::CONFIG_CAP + 1).unwrap();
    let cases: [(&Path, &str); 4] = [
        (&fifo, "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
        (dir.path(), "a directory"),
        (&big, "larger than 4 MiB"),
    ];
    for (path, what) in cases {
        let e = load(path).unwrap_err();
        assert_eq!(e.file, path, "{e}");
        assert!(e.message.contains("cannot read the config"), "{e}");
        assert!(e.message.contains(what), "{what}: {e}");
    }
}

#[test]
fn a_table_given_twice_is_named() {
    for table in ["backup", "encryption", "health"] {
        let text = format!("{MINIMAL}\n[health]\n\n[{table}]\n");
        let e = err(&text);
        check(&e, table, Some(text.lines().count()), "appears twice");
        assert!(e.message.contains(&format!("[{table}]")), "{e}");
    }
    let e = err(&format!("{MINIMAL}\n[target]\nname = \"b\"\n"));
    check(&e, "target", Some(12), "[[target]]");
    let e = err(&format!("{MINIMAL}keep = {{ last = 1, last = 2 }}\n"));
    check(&e, "target.last", Some(11), "set twice");
    let e = err(&MINIMAL.replace("[backup]\n", "[backup]\nname = \"a\"\nname = \"b\"\n"));
    check(&e, "backup.name", Some(4), "set twice in [backup]");
}

#[test]
fn unknown_and_missing_tables_read_as_tables() {
    let e = err(&format!("{MINIMAL}\n[w]\nwhatever = 1\n"));
    check(&e, "w", Some(12), "unknown table [w]");
    assert!(e.message.contains("[encryption]"), "{e}");
    let e = err(&format!("{MINIMAL}\n[backup.extra]\n"));
    check(&e, "backup.extra", Some(12), "unknown table [backup.extra]");
    let no_encryption = MINIMAL.replace("[encryption]\nrecipients = [\"age1example\"]\n", "");
    check(
        &err(&no_encryption),
        "encryption",
        None,
        "missing table [encryption]",
    );
    check(&err(""), "backup", None, "missing table [backup]");
    let no_path = format!("{MINIMAL}\n[[target]]\nname = \"b\"\n");
    check(
        &err(&no_path),
        "target.b.path",
        Some(13),
        "a directory target needs path",
    );
}

#[test]
fn a_path_with_a_nul_byte_is_refused() {
    let text = MINIMAL.replace(
        "sources = [\"/etc\"]",
        "sources = [\"/etc\"]\nrequired = [\"/etc/a\\u0000b\"]",
    );
    check(&err(&text), "backup.required", Some(4), "NUL byte");
    let text = MINIMAL.replace("/var/backups/vouch", "/var/back\\u0000ups");
    check(&err(&text), "target.local.path", Some(10), "NUL byte");
}

#[test]
fn a_metrics_textfile_that_is_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{MINIMAL}\n[metrics]\ntextfile = {:?}\n", dir.path());
    let e = err(&text);
    check(&e, "metrics.textfile", Some(13), "is a directory");
    let file = dir.path().join("vouch.prom");
    let text = format!("{MINIMAL}\n[metrics]\ntextfile = {file:?}\n");
    assert_eq!(parse(&text).unwrap().metrics.textfile, Some(file));
}

#[test]
fn an_error_at_a_multibyte_character_is_reported_not_a_panic() {
    for text in ["é = 1\n", "[backup]\né = 1\n", "[backup]\nsources = [é]\n"] {
        let e = err(text);
        assert!(e.line.is_some(), "{text}: {e}");
    }
}

#[test]
fn mount_names_a_mount_point_above_the_target_and_implies_require_mount() {
    let s = parse(&MINIMAL.replace(
        "path = \"/var/backups/vouch\"",
        "path = \"/mnt/usb/backups\"\nmount = \"/mnt/usb/\"",
    ))
    .unwrap();
    let t = &s.targets[0];
    assert_eq!(t.mount.as_deref(), Some(Path::new("/mnt/usb")));
    assert!(t.require_mount);
    let s = parse(&MINIMAL.replace(
        "path = \"/var/backups/vouch\"",
        "path = \"/mnt/usb\"\nmount = \"/mnt/usb\"",
    ))
    .unwrap();
    assert_eq!(s.targets[0].mount.as_deref(), Some(Path::new("/mnt/usb")));
}

#[test]
fn a_mount_that_is_not_above_the_target_or_contradicts_require_mount_is_refused() {
    for other in ["/mnt/usb2", "/mnt/usb/backups/deeper", "/srv"] {
        let e = err(&MINIMAL.replace(
            "path = \"/var/backups/vouch\"",
            &format!("path = \"/mnt/usb/backups\"\nmount = \"{other}\""),
        ));
        assert_eq!(e.key.as_deref(), Some("target.local.mount"), "{e}");
        assert!(
            e.message
                .contains("not /mnt/usb/backups or a directory above it"),
            "{e}"
        );
    }
    let e = err(&MINIMAL.replace(
        "path = \"/var/backups/vouch\"",
        "path = \"/mnt/usb/backups\"\nmount = \"/mnt/usb\"\nrequire-mount = false",
    ));
    assert_eq!(e.key.as_deref(), Some("target.local.require-mount"), "{e}");
}

#[test]
fn compression_is_gzip_by_default_and_zstd_when_asked() {
    assert_eq!(
        parse(MINIMAL).unwrap().backup.compression,
        Compression::Gzip
    );
    let with = |value: &str| {
        MINIMAL.replace(
            "sources = [\"/etc\"]",
            &format!("sources = [\"/etc\"]\ncompression = {value}"),
        )
    };
    let gzip = parse(&with("\"gzip\"")).unwrap();
    assert_eq!(gzip.backup.compression, Compression::Gzip);
    let zstd = parse(&with("\"zstd\"")).unwrap();
    assert_eq!(zstd.backup.compression, Compression::Zstd);
}

#[test]
fn an_unknown_compression_names_both_allowed_values() {
    for bad in ["\"xz\"", "\"ZSTD\"", "\"\""] {
        let text = MINIMAL.replace(
            "sources = [\"/etc\"]",
            &format!("sources = [\"/etc\"]\ncompression = {bad}"),
        );
        let e = err(&text);
        check(&e, "backup.compression", Some(4), "not one of");
        assert!(
            e.message.contains("\"gzip\"") && e.message.contains("\"zstd\""),
            "{bad}: {e}"
        );
    }
    // Not a string at all: the parser's own type error, still on the key.
    let number = MINIMAL.replace(
        "sources = [\"/etc\"]",
        "sources = [\"/etc\"]\ncompression = 3",
    );
    let e = err(&number);
    assert_eq!(e.key.as_deref(), Some("backup.compression"), "{e}");
}
