//! The `vouch` binary: parse, set up logging, dispatch, and turn the result into an exit code.

use clap::Parser;
use vouch::cli::{self, Cli};
use vouch::exit::ExitCode;

fn main() -> std::process::ExitCode {
    vouch::signals::ignore_sigxfsz();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::Usage.into()
            } else {
                ExitCode::Ok.into()
            };
        }
    };
    vouch::journal::init(vouch::journal::new_run_id(), cli.verbose);
    match cli::execute(&cli) {
        Ok(code) => code.into(),
        Err(error) => {
            let code = error.exit_code();
            cli::report_failure(&cli, &error, code);
            code.into()
        }
    }
}
