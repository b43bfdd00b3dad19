//! vouch: backups for systemd hosts that fail loudly.
//!
//! The binary (`src/main.rs`) parses the command line and turns results into exit codes; all the
//! work lives here so that tests can drive the pieces directly. Each folder is one domain;
//! `docs/architecture.md` draws how a run and a restore pass through them and what may import
//! what.

pub mod check; // preflight and verification: what is proven before and after writing
pub mod cli; // one module per subcommand
pub mod config; // vouch.toml: parse, then validate into typed settings
pub mod dump; // database dumps that prove their output, and the hooks around a run
pub mod error; // the error type and the error policy
pub mod exit; // exit codes: the only place their numbers live
pub mod host; // directories, the run lock, bounded reads, fault injection
pub mod pipeline; // the byte path: walk, tar, compress, encrypt, hash, manifest
pub mod report; // health, metrics, notifications and the outcome they report
pub mod restore; // safe extraction, every file checked before it is moved into place
pub mod run; // `vouch run`: the whole backup, phase by phase
pub mod systemd; // journald, the catalog, the generator, sd_notify, signals
pub mod target; // where archives live: write, commit, list, delete
