//! `vouch-generator NORMAL_DIR [EARLY_DIR LATE_DIR]`: systemd calls this at boot and at every
//! `daemon-reload`; it writes `vouch.service`'s `ReadWritePaths=` drop-in from the config.
//! It always exits 0: a generator must never fail boot.

use std::path::PathBuf;

fn main() {
    let Some(normal_dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        vouch::systemd::generator::log_kmsg("called without an output directory; nothing written");
        return;
    };
    let config = vouch::host::dirs::config_path(None);
    if let Err(e) = vouch::systemd::generator::generate(&config, &normal_dir) {
        vouch::systemd::generator::log_kmsg(&format!(
            "not writing vouch.service's ReadWritePaths= drop-in: {e}"
        ));
    }
}
