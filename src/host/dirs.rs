//! The directories vouch uses, from the variables systemd sets (tests set them too).

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The default config file.
pub const DEFAULT_CONFIG: &str = "/etc/vouch/vouch.toml";
/// The state directory without `$STATE_DIRECTORY`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vouch";
/// The runtime directory without `$RUNTIME_DIRECTORY`.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/vouch";

/// The directories of one invocation.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Persistent state (`StateDirectory=vouch`).
    pub state: PathBuf,
    /// Runtime files and the lock (`RuntimeDirectory=vouch`).
    pub runtime: PathBuf,
    /// `$CREDENTIALS_DIRECTORY`, when systemd passed credentials.
    pub credentials: Option<PathBuf>,
}

/// systemd may pass several colon-separated directories; vouch uses the first.
fn first_of(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next().map(PathBuf::from))
        })
        .filter(|p| !p.as_os_str().is_empty())
}

impl Dirs {
    /// Reads `$STATE_DIRECTORY`, `$RUNTIME_DIRECTORY` and `$CREDENTIALS_DIRECTORY`.
    pub fn from_env() -> Dirs {
        Dirs {
            state: first_of("STATE_DIRECTORY").unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            runtime: first_of("RUNTIME_DIRECTORY").unwrap_or_else(|| DEFAULT_RUNTIME_DIR.into()),
            credentials: first_of("CREDENTIALS_DIRECTORY"),
        }
    }

    /// Creates the state (0700) and runtime (0755) directories if missing.
    pub fn create(&self) -> io::Result<()> {
        create_dir(&self.state, 0o700)?;
        create_dir(&self.runtime, 0o755)
    }
}

fn create_dir(path: &Path, mode: u32) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}

/// The config file: `--config`, else `$VOUCH_CONFIG`, else the default.
pub fn config_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_owned)
        .or_else(|| std::env::var_os("VOUCH_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| DEFAULT_CONFIG.into())
}
