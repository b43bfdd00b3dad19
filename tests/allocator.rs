//! The allocator setting `vouch` makes first thing (`host::memory::map_large_buffers`), checked
//! in a process of its own. glibc only consults its mmap threshold when a heap has no free space
//! for a request, so the check needs a heap that other tests have not left free space in; this
//! file holds one test, and its thread gets an arena of its own.
#![allow(unsafe_code)]

/// Whether glibc gave the allocation at `p` a mapping of its own: the IS_MMAPPED bit of its
/// chunk header, in the word just before the pointer.
fn is_mapped(p: *const u8) -> bool {
    // SAFETY: `p` is a live allocation from glibc's malloc, which keeps the chunk's size and
    // flags in the word just before it.
    unsafe { *(p as *const usize).sub(1) & 2 != 0 }
}

#[test]
fn a_large_buffer_stays_mapped_after_a_larger_one_is_freed() {
    assert!(
        vouch::host::memory::map_large_buffers(),
        "mallopt(M_MMAP_THRESHOLD) was refused"
    );
    // With glibc's default, freeing this raises the threshold to 4 MiB, and the next buffer
    // would be carved from the heap.
    drop(std::hint::black_box(vec![1u8; 4 << 20]));
    let buffer: Vec<u8> = Vec::with_capacity(2 * vouch::host::memory::MMAP_THRESHOLD);
    assert!(
        is_mapped(buffer.as_ptr()),
        "a 512 KiB buffer came from a heap, not a mapping of its own"
    );
}
