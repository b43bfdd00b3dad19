//! Everything that speaks systemd's language: journald entries and their catalog, the
//! generator, sd_notify status and timeouts, and signals (how systemd stops a run).

pub mod catalog; // the journal catalog, generated from events and exit codes
pub mod generator; // the systemd generator: the sandbox follows the config
pub mod journal; // journald entries, MESSAGE_IDs, terminal lines
pub mod sdnotify; // sd_notify status and timeout extension, progress
pub mod signals; // SIGXFSZ must become EFBIG, not death
pub mod stop; // SIGTERM and Ctrl-C during a run: temporary files removed, the failure recorded
pub mod units; // what systemd says about vouch's units: properties, Exec*= results, exit statuses
