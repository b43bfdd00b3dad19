//! The host vouch runs on: its directories, the run lock, reading small untrusted files and
//! secrets, the allocator's settings, and the fault points the test suite uses.

pub mod bounded; // small files read without blocking, following links or growing without end
pub mod credential; // secrets from $CREDENTIALS_DIRECTORY, /etc/vouch/credentials or a file
pub mod dirs; // state, runtime and config locations
pub mod fault; // fault injection for the test suite
pub mod filesystem; // mounts, volatile filesystems and the largest file, as the kernel says
pub mod lock; // one run at a time
pub mod memory; // large buffers in mappings of their own, returned when freed
