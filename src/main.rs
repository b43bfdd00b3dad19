//! The `vouch` binary: parse, set up logging, dispatch, and turn the result into an exit code.

use clap::Parser;
use vouch::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    vouch::host::memory::map_large_buffers();
    vouch::systemd::signals::ignore_sigxfsz();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return cli::refused(&args, &e).into();
        }
    };
    vouch::systemd::journal::init(vouch::systemd::journal::new_run_id(), cli.verbose);
    let done = match cli::execute(&cli) {
        Ok(code) => code.into(),
        Err(error) => {
            let code = error.exit_code();
            cli::report_failure(&cli, &error, code);
            code.into()
        }
    };
    vouch::systemd::journal::settle();
    done
}
