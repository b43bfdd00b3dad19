//! Fuzzes the small files vouch reads back from a target and its state directory: the input is
//! written as an archive's receipt (beside the archive and one part), as `last-run.json` and as
//! `verified.json`, then read through the public entry points `archives::scan`,
//! `run::LastRun::load` and `archives::VerifyLog::load`. None of them may panic.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The archive whose receipt the input becomes (the seed receipts name it).
const ARCHIVE: &str = "seed-20261201T091707Z.tar.gz.age";

/// One scratch directory for the whole run, standing for both a target and the state directory.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let path = scratch::dir("state");
        std::fs::write(path.join(ARCHIVE), b"not really an archive").unwrap();
        std::fs::write(path.join(format!("{ARCHIVE}.000")), b"part").unwrap();
        path
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    let receipt = vouch::target::receipt::Receipt::file_name(ARCHIVE, false);
    for name in [
        &receipt as &str,
        vouch::run::LAST_RUN,
        vouch::target::archives::VERIFY_LOG,
    ] {
        std::fs::write(dir.join(name), data).unwrap();
    }
    if let Ok(archives) = vouch::target::archives::scan(dir) {
        assert!(
            archives.len() <= 1,
            "one archive, whatever its receipt says"
        );
    }
    let _ = vouch::run::LastRun::load(dir);
    let _ = vouch::target::archives::VerifyLog::load(dir);
});
