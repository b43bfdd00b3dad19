//! The command line: one module per subcommand.

pub mod as_service; // `vouch preflight --as-service`: the checks in vouch.service's sandbox
pub mod doctor; // `vouch doctor`
pub mod keygen; // `vouch keygen`
pub mod list; // `vouch list`
pub mod notify_failure; // `vouch notify-failure`, run by vouch-notify@.service
pub mod output; // standard output that a closed pipe cannot turn into a panic
pub mod preflight; // `vouch preflight`
pub mod presign; // `vouch presign`: a time-limited URL of an archive on an S3 target
pub mod prune; // `vouch prune`
pub mod restore; // `vouch restore`
pub mod run; // `vouch run`
pub mod status; // `vouch status`
pub mod verify; // `vouch verify`

use crate::error::Error;
use crate::exit::{Done, ExitCode};
use clap::{CommandFactory, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Backups for systemd hosts that fail loudly: encrypted, atomic, read back and verified.
#[derive(Debug, Parser)]
#[command(name = "vouch", version, about, long_about = None)]
pub struct Cli {
    /// The config file [default: $VOUCH_CONFIG, else /etc/vouch/vouch.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Also log debug messages. It may be given more than once (-vv): more adds nothing.
    #[arg(short, long, global = true, overrides_with = "verbose")]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up: preflight, archive, verify every target, report. Exit 0 only when a new
    /// archive is on every target and verified.
    Run,
    /// Run only the preflight checks and print each with ok/FAIL and the fix; exit with the
    /// first failure's code.
    Preflight {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Run the checks inside a transient unit with vouch.service's sandbox, settings and
        /// credentials (through systemd-run), as a timer run would see the system.
        #[arg(long)]
        as_service: bool,
    },
    /// Read archives back from their targets and check every entry against the manifest
    /// (decrypt, decompress, hash); exit 33 on any difference. Default: --latest.
    Verify {
        /// An archive file (or its name on the target).
        #[arg(conflicts_with_all = ["latest", "all"])]
        archive: Option<PathBuf>,
        /// The newest archive on each target.
        #[arg(long, conflicts_with = "all")]
        latest: bool,
        /// Every archive on each target.
        #[arg(long)]
        all: bool,
        /// Only this target.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Also write the files into DIR (a new or empty scratch directory) and compare them
        /// with the manifest: a restore test.
        #[arg(long, value_name = "DIR")]
        restore_to: Option<PathBuf>,
    },
    /// Health of every target from receipts and the state directory: healthy, warning or
    /// critical with the reasons; exit 0, 1 or 2 (3 when it cannot tell).
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also list each S3 target's bucket (network requests; without it, the state
        /// directory's records of the copies judge them).
        #[arg(long)]
        live: bool,
    },
    /// List the archives on each target with time, size, files, required paths and
    /// verification.
    List {
        /// Only this target.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Restore an archive (or the named paths in it) into DIR, checking every file against the
    /// manifest before it is moved into place; or, with --dump, load one database dump out of
    /// it into a new database.
    Restore {
        /// The archive: a path, its file name on the configured targets, or `latest` (the
        /// newest archive of this backup).
        archive: PathBuf,
        /// The directory to restore into (required without --dump).
        #[arg(long, value_name = "DIR", required_unless_present = "dump")]
        to: Option<PathBuf>,
        /// Only these paths (as stored: relative to /, a leading / is dropped) and what is
        /// under them.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Replace an existing tree in DIR, keeping the replaced files aside until the whole
        /// restore has checked out.
        #[arg(long)]
        in_place: bool,
        /// Also create device nodes and FIFOs (root only).
        #[arg(long)]
        devices: bool,
        /// Load the dump of this [[dump]] into a database instead (NAME/DB for one database
        /// of a dump of several), with the config's connection settings.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["to", "paths", "in_place", "devices"])]
        dump: Option<String>,
        /// With --dump: the database to create and load (SQLite: the file to write)
        /// [default: a new name, DB_restored_STAMP; SQLite: PATH.restored-STAMP].
        #[arg(long, value_name = "DB", requires = "dump", conflicts_with_all = ["to", "paths", "in_place", "devices"])]
        into: Option<String>,
        /// With --dump: replace the --into database (or file) when it exists, once the dump
        /// has loaded completely beside it.
        #[arg(long, requires = "dump", conflicts_with_all = ["to", "paths", "in_place", "devices"])]
        replace: bool,
        /// The age identity to decrypt with [default: the config's].
        #[arg(long, value_name = "PATH")]
        identity: Option<PathBuf>,
        /// Use only the copy on this configured target (with `latest`: its newest archive).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
    /// Print a time-limited URL of an archive on an S3 target, to fetch it with plain curl
    /// (`curl -fsS URL | age -d -i IDENTITY | tar -xzf - -C DIR`). The archive and its receipt
    /// must both be on the target. Anyone holding the URL can download the encrypted archive
    /// until it expires.
    Presign {
        /// The archive's file name, as `vouch list` prints it (NAME-STAMP.tar.gz.age, or
        /// .tar.zst.age: then `| zstd -d | tar -x` after age).
        archive: String,
        /// The S3 target holding it.
        #[arg(long, value_name = "NAME")]
        target: String,
        /// How long the URL works, from 1s to 7d (e.g. 90m, 24h, 7d).
        #[arg(long, value_name = "DURATION", default_value = presign::DEFAULT_EXPIRES)]
        expires: String,
    },
    /// Apply the retention policy (`keep`) to every target's archives.
    Prune {
        /// Print what would be kept and deleted, and why, without deleting.
        #[arg(long)]
        dry_run: bool,
        /// Only this target.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
    /// Everything preflight checks, plus the installed units, the timer, the last run and
    /// the status: each line ok, warn or fail with the fix.
    Doctor,
    /// Make an age identity (mode 0600, never overwriting) and print its recipient. Keep a copy
    /// of the identity somewhere other than the backup targets: without it no archive can be
    /// decrypted.
    Keygen {
        /// Where to write the identity.
        #[arg(long, value_name = "PATH", default_value = keygen::DEFAULT_IDENTITY)]
        identity: PathBuf,
        /// Also append the recipient to this file.
        #[arg(long, value_name = "PATH")]
        recipients_file: Option<PathBuf>,
    },
    /// Record that a systemd unit failed (run by vouch-notify@.service from OnFailure=).
    NotifyFailure {
        /// The failed unit.
        unit: String,
    },
}

impl Command {
    /// The subcommand's name.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run => "run",
            Command::Preflight { .. } => "preflight",
            Command::NotifyFailure { .. } => "notify-failure",
            Command::Verify { .. } => "verify",
            Command::Keygen { .. } => "keygen",
            Command::Status { .. } => "status",
            Command::List { .. } => "list",
            Command::Restore { .. } => "restore",
            Command::Presign { .. } => "presign",
            Command::Prune { .. } => "prune",
            Command::Doctor => "doctor",
        }
    }
}

/// Runs the chosen subcommand. `Ok` carries how a command that finished ended (not always
/// with 0: `status` reports health); `Err` is classified into an exit code by `main`.
pub fn execute(cli: &Cli) -> Result<Done, Error> {
    let code = match cli.command {
        // status never fails: what it cannot tell is its `unknown` verdict.
        Command::Status { json, live } => {
            return Ok(Done::Health(status::execute(cli, json, live)))
        }
        Command::Run => run::execute(cli),
        Command::Preflight { json, as_service } if as_service => {
            as_service::preflight(cli.config.as_deref(), cli.verbose, json)
        }
        Command::Preflight { json, .. } => preflight::execute(cli, json),
        Command::NotifyFailure { ref unit } => notify_failure::execute(cli, unit),
        Command::Keygen {
            ref identity,
            ref recipients_file,
        } => keygen::execute(cli, identity, recipients_file.as_deref()),
        Command::Verify {
            ref archive,
            all,
            ref target,
            ref restore_to,
            ..
        } => {
            let selection = match (archive, all) {
                (Some(a), _) => verify::Selection::One(a.clone()),
                (None, true) => verify::Selection::All,
                (None, false) => verify::Selection::Latest,
            };
            verify::execute(cli, selection, target.as_deref(), restore_to.as_deref())
        }
        Command::List { ref target, json } => list::execute(cli, target.as_deref(), json),
        Command::Restore {
            ref archive,
            dump: Some(ref dump),
            ref into,
            replace,
            ref identity,
            ref target,
            ..
        } => restore::execute_dump(
            cli,
            &restore::DumpRequest {
                archive: archive.clone(),
                dump: dump.clone(),
                into: into.clone(),
                replace,
                identity: identity.clone(),
                target: target.clone(),
            },
        ),
        Command::Restore {
            ref archive,
            ref to,
            ref paths,
            in_place,
            devices,
            ref identity,
            ref target,
            ..
        } => restore::execute(
            cli,
            &restore::Request {
                archive: archive.clone(),
                to: to.clone().unwrap_or_default(),
                paths: paths.clone(),
                in_place,
                devices,
                identity: identity.clone(),
                target: target.clone(),
            },
        ),
        Command::Presign {
            ref archive,
            ref target,
            ref expires,
        } => presign::execute(
            cli,
            &presign::Request {
                archive: archive.clone(),
                target: target.clone(),
                expires: expires.clone(),
            },
        ),
        Command::Prune {
            dry_run,
            ref target,
        } => prune::execute(cli, dry_run, target.as_deref()),
        Command::Doctor => return Ok(Done::Health(doctor::execute(cli))),
    };
    code.map(Done::Exit)
}

/// What a command line that did not parse says, as far as it can be read: the subcommand (its
/// first word that is neither an option nor an option's value) and the `--config` value.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Words {
    /// The subcommand, when one is there.
    pub command: Option<String>,
    /// `--config PATH`.
    pub config: Option<PathBuf>,
    /// Whether `--json` is among the words after the subcommand.
    pub json: bool,
}

impl Words {
    /// Reads `args` (with the program name first) knowing which of vouch's global options
    /// take a value.
    pub fn read(args: &[OsString]) -> Words {
        let cmd = Cli::command();
        let takes_value = |a: &clap::Arg| a.get_action().takes_values();
        let long = |name: &str| {
            cmd.get_arguments()
                .find(|a| a.get_long() == Some(name))
                .is_some_and(takes_value)
        };
        let short = |c: char| {
            cmd.get_arguments()
                .find(|a| a.get_short() == Some(c))
                .is_some_and(takes_value)
        };
        let mut words = Words::default();
        let mut it = args.iter().skip(1);
        while let Some(arg) = it.next() {
            let text = arg.to_string_lossy();
            if words.command.is_some() {
                words.json |= text == "--json";
                if text == "--config" {
                    words.config = it.next().map(PathBuf::from);
                } else if let Some(value) = text.strip_prefix("--config=") {
                    words.config = Some(value.into());
                }
                continue;
            }
            if text == "--" {
                words.command = it.next().map(|a| a.to_string_lossy().into_owned());
            } else if let Some(name) = text.strip_prefix("--") {
                match name.split_once('=') {
                    Some(("config", value)) => words.config = Some(value.into()),
                    Some(_) => {}
                    None if name == "config" => words.config = it.next().map(PathBuf::from),
                    None if long(name) => {
                        it.next();
                    }
                    None => {}
                }
            } else if let Some(cluster) = text.strip_prefix('-').filter(|c| !c.is_empty()) {
                // `-v`, or a cluster whose option with a value takes the rest (or the next word).
                if let Some(i) = cluster.chars().position(short) {
                    if i + 1 == cluster.chars().count() {
                        it.next();
                    }
                }
            } else {
                words.command = Some(text.into_owned());
            }
        }
        words
    }
}

/// How a command line that clap refused ends. Help and version are not errors (0). `status` is
/// a monitoring check, so a bad command line is its `unknown` (3), the monitoring-plugin
/// convention, with an `unknown` report on stdout; every other command exits `USAGE` (2).
/// clap has printed its message to stderr already.
pub fn refused(args: &[OsString], error: &clap::Error) -> Done {
    if !error.use_stderr() {
        return Done::Exit(ExitCode::Ok);
    }
    let words = Words::read(args);
    if words.command.as_deref() != Some("status") {
        return Done::Exit(ExitCode::Usage);
    }
    let first = error.to_string();
    let first = first.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    Done::Health(status::refused(words.config.as_deref(), words.json, first))
}

/// The configured targets a `--target NAME` option selects: all of them without one (the
/// directory targets, then the S3 targets), else the one with that name (a usage error when
/// there is none).
pub fn select_targets<'a>(
    settings: &'a crate::config::Settings,
    name: Option<&str>,
) -> Result<Vec<crate::target::Configured<'a>>, Error> {
    let targets: Vec<_> = crate::target::configured(settings)
        .into_iter()
        .filter(|t| name.is_none_or(|n| n == t.name()))
        .collect();
    if targets.is_empty() {
        return Err(Error::Usage(format!(
            "no target called {:?} in {}",
            name.unwrap_or(""),
            settings.file.display()
        )));
    }
    Ok(targets)
}

/// Reports a failed command: the journal entry that names the cause and the fix.
pub fn report_failure(cli: &Cli, error: &Error, code: ExitCode) {
    match cli.command {
        Command::Run => run::report_failure(error, code),
        Command::Preflight { .. } => run::report_preflight_failure(error, code),
        // status and doctor print their own verdicts; their exit code says the rest.
        Command::Status { .. } | Command::Doctor => {}
        Command::NotifyFailure { .. }
        | Command::Verify { .. }
        | Command::Keygen { .. }
        | Command::List { .. }
        | Command::Restore { .. }
        | Command::Presign { .. }
        | Command::Prune { .. } => {
            crate::systemd::journal::Entry::error(format!("{}: {error}", code.name()))
                .field("VOUCH_EXIT_CODE", code.code())
                .field("VOUCH_EXIT_NAME", code.name())
                .field_opt("VOUCH_TARGET", error.target())
                .field_opt("VOUCH_HINT", error.hint())
                .emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Words {
        let args: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        Words::read(&args)
    }

    #[test]
    fn the_subcommand_of_a_refused_command_line_is_found() {
        assert_eq!(
            words("vouch status --bogus").command.as_deref(),
            Some("status")
        );
        // The value of --config is not the subcommand, whatever it is called.
        let w = words("vouch --config status status --json --nope");
        assert_eq!(w.command.as_deref(), Some("status"));
        assert_eq!(w.config, Some(PathBuf::from("status")));
        assert!(w.json);
        let w = words("vouch -v --config=/etc/x.toml run --json");
        assert_eq!(w.command.as_deref(), Some("run"));
        assert_eq!(w.config, Some(PathBuf::from("/etc/x.toml")));
        assert!(w.json);
        let w = words("vouch status extra --config /tmp/c.toml");
        assert_eq!(w.config, Some(PathBuf::from("/tmp/c.toml")));
        assert!(!w.json);
        assert_eq!(words("vouch --verbose").command, None);
        assert_eq!(
            words("vouch --json status").command.as_deref(),
            Some("status")
        );
        assert!(!words("vouch --json status").json);
    }

    #[test]
    fn verbose_may_be_repeated() {
        for line in [
            "vouch -v -v status",
            "vouch -vv run",
            "vouch --verbose run -v",
        ] {
            let args: Vec<&str> = line.split_whitespace().collect();
            let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(cli.verbose, "{line}");
        }
        assert!(!Cli::try_parse_from(["vouch", "run"]).unwrap().verbose);
    }

    #[test]
    fn a_bad_status_command_line_is_unknown_and_others_are_usage() {
        let refuse = |line: &str| {
            let args: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
            let error = Cli::try_parse_from(&args).unwrap_err();
            refused(&args, &error)
        };
        assert_eq!(refuse("vouch run --bogus"), Done::Exit(ExitCode::Usage));
        assert_eq!(refuse("vouch bogus"), Done::Exit(ExitCode::Usage));
        assert_eq!(refuse("vouch status --help"), Done::Exit(ExitCode::Ok));
        assert_eq!(
            refuse("vouch status --bogus"),
            Done::Health(crate::exit::Health::Unknown)
        );
    }
}
