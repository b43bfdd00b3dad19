//! Where archives go. Each kind of target gets a module; today that is a local directory
//! (which covers mounted disks and network filesystems).

pub mod local;
