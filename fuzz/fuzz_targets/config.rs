//! Fuzzes `vouch.toml` parsing and validation: any bytes must give settings or a `ConfigError`,
//! never a panic, and an error must name the config file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// A config path under a directory that does not exist, so relative paths resolve without
/// touching anything real.
const FILE: &str = "/nonexistent/vouch-fuzz/vouch.toml";

fuzz_target!(|data: &[u8]| {
    if let Err(e) = vouch::config::from_bytes(data, Path::new(FILE)) {
        assert_eq!(e.file, Path::new(FILE));
        let shown = e.to_string();
        assert!(shown.starts_with(FILE), "{shown}");
    }
});
