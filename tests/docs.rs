//! Documentation that restates the interface must agree with the code.

use std::collections::BTreeMap;
use vouch::exit::ExitCode;

/// Rows `| N | NAME | ... |` of the first table that has them.
fn exit_table(text: &str) -> BTreeMap<u8, String> {
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let n = cells.get(1)?.parse::<u8>().ok()?;
            let name = cells.get(2)?;
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                .then(|| (n, name.to_string()))
        })
        .collect()
}

#[test]
fn the_readme_exit_table_matches_the_enum() {
    let readme = include_str!("../README.md");
    let table = exit_table(readme);
    let code: BTreeMap<u8, String> = ExitCode::ALL
        .iter()
        .map(|c| (c.code(), c.name().to_owned()))
        .collect();
    assert_eq!(table, code);
}

/// Escapes text for roff.
fn roff(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// How `arg` is written in the man page: `\fB--flag\fR \fIVALUE\fR` or `\fIVALUE\fR`.
fn arg_name(arg: &clap::Arg) -> String {
    let value = arg
        .get_value_names()
        .map(|v| {
            v.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
    let takes_value = arg.get_num_args().is_none_or(|n| n.takes_values());
    match arg.get_long() {
        Some(long) if takes_value && arg.get_action().takes_values() => {
            format!("\\fB\\-\\-{}\\fR \\fI{}\\fR", roff(long), roff(&value))
        }
        Some(long) => format!("\\fB\\-\\-{}\\fR", roff(long)),
        None => format!("\\fI{}\\fR", roff(&value)),
    }
}

/// A subcommand's arguments in one line, ` [--flag] [--opt VALUE] ARG...`.
fn synopsis(sub: &clap::Command) -> String {
    let mut line = String::new();
    for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
        let name = arg_name(arg);
        let many = matches!(arg.get_action(), clap::ArgAction::Append);
        let name = if many { format!("{name}...") } else { name };
        if arg.is_required_set() {
            line.push_str(&format!(" {name}"));
        } else {
            line.push_str(&format!(" [{name}]"));
        }
    }
    line
}

/// vouch(8)'s EXAMPLES: a first setup, a restore with stock tools only, a USB disk.
const EXAMPLES: &str = r#"First setup, as root, after installing the package:
.PP
.RS
.nf
vouch keygen
$EDITOR /etc/vouch/vouch.toml
systemctl daemon\-reload
vouch preflight \-\-as\-service && systemctl start vouch.service
journalctl \-x \-u vouch.service
vouch status
.fi
.RE
.PP
\fBvouch keygen\fR writes the identity and prints the recipient to put in the config;
\fBdaemon\-reload\fR lets vouch\-generator open the targets in the unit's sandbox;
\fB\-\-as\-service\fR runs the checks inside that sandbox, as the timer's runs see it.
Copy the identity off the host.
.PP
Restoring without vouch, with the stock tools (for a split archive, feed age the parts in order: \fBcat NAME.tar.gz.age.0* | age \-d ...\fR):
.PP
.RS
.nf
age \-d \-i identity.txt /var/backups/vouch/host\-20261201T030000Z.tar.gz.age |
    tar \-xz \-C /srv/restore
cd /srv/restore && sha256sum \-c .vouch/SHA256SUMS
.fi
.RE
.PP
The same with vouch, checked entry by entry against the manifest and staged before anything
is replaced: \fBvouch restore latest \-\-to /srv/restore\fR.
One database dump of it, loaded into a new database with the config's connection settings
(its name is printed): \fBvouch restore latest \-\-dump app\fR.
.PP
A USB disk that is not always plugged in: in \fBvouch.toml\fR(5),
.PP
.RS
.nf
[[target]]
name = "usb"
path = "/mnt/usb/backups"
mount = "/mnt/usb"
split = "auto"
.fi
.RE
.PP
With the disk unplugged a run fails with 14 (TARGET_MISSING) and writes nothing, instead of
filling the root filesystem; on FAT32 "auto" splits archives below 4 GiB. Check a stick
before trusting it with \fBvouch preflight \-\-as\-service\fR.
"#;

/// vouch(8): the command line from clap, then the sections that restate the interface,
/// generated from the code.
fn render_vouch_8() -> String {
    use clap::CommandFactory;
    let man = clap_mangen::Man::new(vouch::cli::Cli::command())
        .section("8")
        .date("")
        .manual("System Administration");
    let mut out = Vec::new();
    man.render_title(&mut out).unwrap();
    man.render_name_section(&mut out).unwrap();
    man.render_synopsis_section(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    man.render_options_section(&mut out).unwrap();
    let mut text = String::from_utf8(out).unwrap();
    text.push_str(".SH COMMANDS\n");
    for sub in vouch::cli::Cli::command().get_subcommands() {
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string());
        text.push_str(&format!(
            ".TP\n\\fBvouch {}\\fR{}\n{}\n",
            sub.get_name(),
            synopsis(sub),
            roff(&about.unwrap_or_default())
        ));
        let args: Vec<&clap::Arg> = sub.get_arguments().filter(|a| !a.is_hide_set()).collect();
        if !args.is_empty() {
            text.push_str(".RS\n");
            for arg in args {
                let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if let Some(default) = arg.get_default_values().first() {
                    help.push_str(&format!(" [default: {}]", default.to_string_lossy()));
                }
                text.push_str(&format!(".TP\n{}\n{}\n", arg_name(arg), roff(&help)));
            }
            text.push_str(".RE\n");
        }
    }
    text.push_str(".SH \"EXIT STATUS\"\n");
    text.push_str(
        "\\fBvouch status\\fR uses the monitoring-plugin convention: \
0 healthy, 1 warning, 2 critical, 3 unknown (no usable config, no run and no archive yet, or a bad command line). \
\\fBvouch doctor\\fR uses 0, 1 and 2 the same way, and 3 when the config cannot be read. \
Every other command exits with the codes below; \\fBvouch run\\fR exits 0 only when a new archive is on every target, read back and verified.\n",
    );
    for c in ExitCode::ALL {
        text.push_str(&format!(
            ".TP\n\\fB{}\\fR {}\n{}\n",
            c.code(),
            roff(c.name()),
            roff(c.description())
        ));
    }
    text.push_str(
        ".SH FILES\n\
.TP\n/etc/vouch/vouch.toml\nThe config; see \\fBvouch.toml\\fR(5).\n\
.TP\n/var/lib/vouch/last\\-run.json\nThe last run's result (in \\fB$STATE_DIRECTORY\\fR).\n\
.TP\n/run/vouch/lock\nThe run lock (in \\fB$RUNTIME_DIRECTORY\\fR).\n\
.TP\nTARGET/NAME\\-YYYYMMDDTHHMMSSZ.tar.gz.age\nAn archive: tar, gzip, age. Split archives are \\fI.000\\fR, \\fI.001\\fR, ... parts.\n\
.TP\nTARGET/NAME\\-YYYYMMDDTHHMMSSZ.tar.gz.age.json\nIts unencrypted receipt (\\fI\\-receipt.json\\fR for split archives).\n",
    );
    text.push_str(
        ".SH ENVIRONMENT\n\
.TP\nVOUCH_CONFIG\nThe config file when \\fB\\-\\-config\\fR is not given.\n\
.TP\nSTATE_DIRECTORY, RUNTIME_DIRECTORY\nState and runtime directories (set by systemd; default /var/lib/vouch and /run/vouch).\n\
.TP\nCREDENTIALS_DIRECTORY\nWhere systemd puts credentials; \\fIidentity\\fR there is used when the config names none.\n\
.TP\nJOURNAL_STREAM, NOTIFY_SOCKET, INVOCATION_ID\nSet by systemd: log to the journal, report status and progress, and give sandbox fixes.\n",
    );
    text.push_str(".SH \"JOURNAL FIELDS\"\nEvery entry: SYSLOG_IDENTIFIER=vouch, PRIORITY, VOUCH_RUN_ID. Events add MESSAGE_ID and VOUCH_EVENT:\n");
    for e in vouch::systemd::journal::Event::ALL {
        text.push_str(&format!(
            ".TP\n{}\nMESSAGE_ID={}\n",
            roff(e.name()),
            e.message_id()
        ));
    }
    text.push_str("and the fields that apply: VOUCH_EXIT_CODE, VOUCH_EXIT_NAME, VOUCH_TARGET, VOUCH_ARCHIVE, VOUCH_ARCHIVE_SHA256, VOUCH_FILES, VOUCH_BYTES_IN, VOUCH_BYTES_OUT, VOUCH_DURATION_USEC, VOUCH_HINT, VOUCH_COMMITTED_TARGETS (a failed run whose archive some targets kept), VOUCH_DUMP, VOUCH_DUMP_KIND and VOUCH_DUMP_SHA256 (dump-written, and a failed dump), VOUCH_HOOK (hook-ran, and a failed hook), VOUCH_UNIT and VOUCH_FAILED_UNIT (notify-failure: the failed unit and the dependency that failed).\n");
    text.push_str(&format!(
        ".SH UNITS\n\\fBvouch.service\\fR runs \\fBvouch run\\fR; \\fBvouch.timer\\fR starts it daily. \
\\fBvouch\\-verify.timer\\fR verifies the latest archive weekly. \\fBvouch\\-notify@.service\\fR reports failed units.\n\
.SH EXAMPLES\n{EXAMPLES}.SH \"SEE ALSO\"\n\\fBvouch.toml\\fR(5), \\fBage\\fR(1), \\fBtar\\fR(1), \\fBjournalctl\\fR(1), \\fBsystemd.exec\\fR(5)\n"
    ));
    text
}

#[test]
fn the_committed_man_page_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man/vouch.8");
    let fresh = render_vouch_8();
    if std::env::var_os("VOUCH_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "man/vouch.8 is out of date: run `VOUCH_UPDATE_DOCS=1 cargo test --test docs`"
    );
}

#[test]
fn every_config_key_is_documented_in_vouch_toml_5() {
    let page = include_str!("../man/vouch.toml.5");
    let example = include_str!("../packaging/vouch.toml");
    let mut keys = Vec::new();
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some((key, value)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                keys.push(key.to_owned());
            }
            if let Some(inline) = value.trim().strip_prefix('{') {
                for part in inline.trim_end_matches('}').split(',') {
                    if let Some((k, _)) = part.split_once('=') {
                        keys.push(k.trim().to_owned());
                    }
                }
            }
        }
    }
    assert!(keys.len() > 15, "too few keys found: {keys:?}");
    for key in keys {
        assert!(
            page.contains(&format!("\\fB{}\\fR", roff(&key))),
            "vouch.toml(5) does not document {key}"
        );
    }
}

/// The roff requests the man pages use; a text line that starts with `.` or `'`
/// would be read as an unknown request and dropped from the page.
const REQUESTS: &[&str] = &[
    "TH", "SH", "SS", "PP", "TP", "RS", "RE", "nf", "fi", "ie", "el", "br", "IP",
];

#[test]
fn no_man_page_line_is_read_as_an_unknown_request() {
    for (name, page) in [
        ("vouch.8", include_str!("../man/vouch.8")),
        ("vouch.toml.5", include_str!("../man/vouch.toml.5")),
    ] {
        for (n, line) in page.lines().enumerate() {
            let Some(rest) = line.strip_prefix('.').or_else(|| line.strip_prefix('\'')) else {
                continue;
            };
            let request: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(
                REQUESTS.contains(&request.as_str()),
                "{name}:{}: {line:?} starts like a roff request; escape it with \\&",
                n + 1
            );
        }
    }
}
