//! How the C allocator is asked to treat large buffers.
//!
//! The pipeline's large buffers (the compressors' 1 and 2 MiB chunks and their outputs, the
//! read-back's decoded units, the relays' blocks) are allocated on one thread and freed on
//! another. glibc's malloc gives an allocation above its mmap threshold a mapping of its own,
//! returned to the kernel when it is freed, but by default it raises that threshold to the size
//! of each mapped block freed; after the first 2 MiB buffer is freed, later ones are carved from
//! the per-thread heaps instead, and what they leave behind stays resident. A fixed threshold
//! keeps every large buffer in a mapping of its own. Measured with `compression = "zstd"` on
//! 650 MB of small text files: peak RSS of `vouch run` 34 MiB with the default, 30 MiB with
//! the threshold fixed at 256 KiB, wall time and page faults no higher.
//!
//! One of the three modules allowed `unsafe` (with `systemd::signals` and `pipeline::inflate`),
//! for the one `mallopt(3)` call.
#![allow(unsafe_code)]

/// Allocations at least this large get a mapping of their own.
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// Fixes the allocator's mmap threshold at [`MMAP_THRESHOLD`]. Call it first thing, before any
/// thread starts. Returns whether the allocator took it (always, with glibc).
///
/// `tests/allocator.rs` checks the effect in a process of its own: the threshold only decides
/// once a heap has no free space for a request, so other tests' frees in a shared process make
/// the outcome depend on them.
pub fn map_large_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter, and is called before other threads
        // exist; the value is a valid size.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
