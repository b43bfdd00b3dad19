//! Checks that prove something before or after a run: preflight (before a byte is written) and
//! verification (an archive read back against its manifest).

pub mod found; // what a read-back found, entry by entry, checked against the manifest
pub mod preflight; // every check before a byte is written
pub mod verify; // reading archives back against their manifest
