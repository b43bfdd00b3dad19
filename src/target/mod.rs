//! Where archives live: a target kind writes, commits, lists and deletes archives; the rest of
//! vouch reaches a target's files only through this folder.

pub mod archives; // the archives on a target, their receipts and verification records
pub mod local; // a directory target (local disks, mounted network filesystems)
pub mod receipt; // the unencrypted receipt beside each archive
pub mod retention; // which archives to keep; pruning the rest
