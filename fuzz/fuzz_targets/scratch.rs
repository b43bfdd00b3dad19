//! The scratch directory a fuzz target works in, one per process. libFuzzer ends the process
//! with `exit`, so nothing is dropped: each process removes the directories of earlier ones
//! that are gone when it starts.

use std::path::{Path, PathBuf};

/// Where scratch directories go: memory (`/dev/shm`) when there is one, for speed.
fn root() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// A fresh, empty `vouch-fuzz-TARGET.PID` directory, after removing those of processes that
/// no longer run.
pub fn dir(target: &str) -> PathBuf {
    let root = root();
    let prefix = format!("vouch-fuzz-{target}.");
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = root.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).expect("a scratch directory");
    dir
}
