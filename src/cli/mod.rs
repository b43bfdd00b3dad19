//! The command line: one module per subcommand.

pub mod keygen; // `vouch keygen`
pub mod notify_failure; // `vouch notify-failure`, run by vouch-notify@.service
pub mod preflight; // `vouch preflight`
pub mod run; // `vouch run`
pub mod verify; // `vouch verify`

use crate::error::Error;
use crate::exit::ExitCode;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Backups for systemd hosts that fail loudly: encrypted, atomic, read back and verified.
#[derive(Debug, Parser)]
#[command(name = "vouch", version, about, long_about = None)]
pub struct Cli {
    /// The config file [default: $VOUCH_CONFIG, else /etc/vouch/vouch.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Also log debug messages.
    #[arg(short, long, global = true)]
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
    },
    /// Make an age identity (mode 0600, never overwriting) and print its recipient.
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
        }
    }
}

/// Runs the chosen subcommand. `Ok` carries the exit code of a command that finished (which is
/// not always 0); `Err` is classified into an exit code by `main`.
pub fn execute(cli: &Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Run => run::execute(cli),
        Command::Preflight { json } => preflight::execute(cli, json),
        Command::NotifyFailure { ref unit } => notify_failure::execute(unit),
        Command::Keygen {
            ref identity,
            ref recipients_file,
        } => keygen::execute(identity, recipients_file.as_deref()),
        Command::Verify {
            ref archive,
            all,
            ref target,
            ..
        } => {
            let selection = match (archive, all) {
                (Some(a), _) => verify::Selection::One(a.clone()),
                (None, true) => verify::Selection::All,
                (None, false) => verify::Selection::Latest,
            };
            verify::execute(cli, selection, target.as_deref())
        }
    }
}

/// Reports a failed command: the journal entry that names the cause and the fix.
pub fn report_failure(cli: &Cli, error: &Error, code: ExitCode) {
    match cli.command {
        Command::Run => run::report_failure(error, code),
        Command::Preflight { .. } => run::report_preflight_failure(error, code),
        Command::NotifyFailure { .. } | Command::Verify { .. } | Command::Keygen { .. } => {
            crate::journal::Entry::error(format!("{}: {error}", code.name()))
                .field("VOUCH_EXIT_CODE", code.code())
                .field("VOUCH_EXIT_NAME", code.name())
                .field_opt("VOUCH_TARGET", error.target())
                .field_opt("VOUCH_HINT", error.hint())
                .emit();
        }
    }
}
