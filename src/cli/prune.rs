//! `vouch prune [--dry-run] [--target NAME]`: apply the retention policy now.
//!
//! Prints one line per archive: `keep` or `delete`, its name, and why. It takes the run lock
//! (another run: exit 11), so it never deletes under a run that is writing or pruning; a dry
//! run changes nothing and does not need it. A deletion that fails is exit 36, after every other
//! deletion was done.

use crate::cli::Cli;
use crate::config;
use crate::error::Error;
use crate::exit::ExitCode;
use crate::host::dirs::{self, Dirs};
use crate::host::lock::RunLock;
use crate::target::retention;
use time::OffsetDateTime;

/// Runs `vouch prune`.
pub fn execute(cli: &Cli, dry_run: bool, target: Option<&str>) -> Result<ExitCode, Error> {
    let settings = config::load(&dirs::config_path(cli.config.as_deref()))?;
    let targets = crate::cli::select_targets(&settings, target)?;
    let dirs = Dirs::from_env();
    let _lock = if dry_run {
        None
    } else {
        dirs.create().map_err(|error| Error::State {
            path: dirs.runtime.clone(),
            error,
        })?;
        Some(RunLock::acquire(&dirs.runtime)?)
    };
    let now = OffsetDateTime::now_utc();
    let mut log = retention::load_log(&dirs.state)?;
    let mut errors = Vec::new();
    let mut deleted_any = false;
    for t in targets {
        let plan = match retention::plan(&t, &dirs, &settings.backup.name, &log, now) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        crate::out!(
            "target {} ({}): {} archive(s){}",
            plan.target,
            plan.dir.display(),
            plan.archives.len(),
            if dry_run { ", dry run" } else { "" }
        );
        for p in &plan.archives {
            crate::out!(
                "{:<6}  {}  {}",
                p.decision.action(),
                p.archive.name,
                p.decision.why()
            );
        }
        if dry_run {
            continue;
        }
        let applied = retention::apply(&plan, &mut log);
        deleted_any |= !applied.deleted.is_empty();
        let failed = applied.failed.len();
        crate::out!(
            "target {}: {} deleted{}",
            plan.target,
            applied.deleted.len(),
            if failed > 0 {
                format!(", {failed} could not be deleted")
            } else {
                String::new()
            }
        );
        errors.extend(applied.failed);
    }
    if deleted_any {
        retention::save_log(&log, &dirs);
    }
    retention::first_of(errors).map(|()| ExitCode::Ok)
}
