//! vouch: backups for systemd hosts that fail loudly.
//!
//! The binary (`src/main.rs`) parses the command line and turns results into exit codes; all the
//! work lives here so that tests can drive the pieces directly.

pub mod archive; // sources -> tar entries + manifest lines, each file read once
pub mod archives; // the archives on a target, their receipts and verification records
pub mod bounded; // small files read without blocking, following links or growing without end
pub mod catalog; // the journal catalog, generated from events and exit codes
pub mod cli; // one module per subcommand
pub mod compress; // gzip on every core, as independent members
pub mod config; // vouch.toml: parse, then validate into typed settings
pub mod crypt; // age recipients, identities, encryption
pub mod dirs; // state, runtime and config locations
pub mod error; // the error type and the error policy
pub mod exit; // exit codes: the only place their numbers live
pub mod fault; // fault injection for the test suite
pub mod generator; // the systemd generator: the sandbox follows the config
pub mod health; // size anomalies and the status verdict
pub mod io; // hashing, counting and fan-out adapters
pub mod journal; // journald entries, MESSAGE_IDs, terminal lines
pub mod lock; // one run at a time
pub mod manifest; // .vouch/manifest.json and .vouch/SHA256SUMS
pub mod metrics; // the Prometheus textfile
pub mod notify; // webhook, pings and command
pub mod outcome; // a run's result as the reporting channels see it
pub mod preflight; // every check before a byte is written
pub mod receipt; // the unencrypted receipt beside each archive
pub mod restore; // safe extraction, every file checked before it is moved into place
pub mod retention; // which archives to keep; pruning the rest
pub mod run; // `vouch run`: the whole backup
pub mod signals; // SIGXFSZ must become EFBIG, not death
pub mod sink; // targets archives are written to
pub mod stop; // SIGTERM and Ctrl-C during a run: temporary files removed, the failure recorded
pub mod systemd; // sd_notify status and timeout extension
pub mod tarstream; // the pax tar writer
pub mod verify; // reading archives back against their manifest
pub mod walk; // walking the sources
