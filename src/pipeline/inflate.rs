//! Gzip members inflated whole by libdeflate, reporting exactly how much input each took: one of
//! the three modules allowed `unsafe` (with `systemd::signals` and `host::memory`), for three
//! calls into libdeflate (allocate, decompress, free) that the `libdeflater` binding does not
//! offer in this form.
//!
//! [`crate::pipeline::members`] hands a worker a member whose length the member's header
//! records. libdeflate checks the member's CRC-32 and length against its trailer, and this
//! module checks that the trailer ends exactly where the recorded length says: a member whose
//! deflate data ends earlier would otherwise hide the bytes after it from vouch while `gzip`
//! reads them as the start of another member.
#![allow(unsafe_code)]

use libdeflate_sys::{
    libdeflate_alloc_decompressor, libdeflate_decompressor, libdeflate_free_decompressor,
    libdeflate_gzip_decompress_ex, libdeflate_result_LIBDEFLATE_SUCCESS,
};
use std::io;
use std::ptr::NonNull;

/// One libdeflate decompressor (about 10 KiB of tables), for one thread.
pub struct Inflater(NonNull<libdeflate_decompressor>);

impl Inflater {
    /// A decompressor; fails only when libdeflate cannot allocate one.
    pub fn new() -> io::Result<Inflater> {
        // SAFETY: takes no arguments; returns an owned decompressor or null.
        let raw = unsafe { libdeflate_alloc_decompressor() };
        NonNull::new(raw)
            .map(Inflater)
            .ok_or_else(|| io::Error::other("libdeflate could not allocate a decompressor"))
    }

    /// Inflates `member`, which must be exactly one gzip member, into `out`, whose length must
    /// be exactly its uncompressed size.
    pub fn gunzip_exact(&mut self, member: &[u8], out: &mut [u8]) -> io::Result<()> {
        let (mut used, mut made) = (0usize, 0usize);
        // SAFETY: the decompressor is ours and used by this thread only; both buffers are valid
        // for the lengths given; libdeflate writes only within `out` and the two counters.
        let result = unsafe {
            libdeflate_gzip_decompress_ex(
                self.0.as_ptr(),
                member.as_ptr().cast(),
                member.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut used,
                &mut made,
            )
        };
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        if result != libdeflate_result_LIBDEFLATE_SUCCESS {
            return Err(bad(format!(
                "corrupt gzip member (libdeflate result {result})"
            )));
        }
        if used != member.len() || made != out.len() {
            return Err(bad(format!(
                "corrupt gzip member (its header records {} bytes and {} of output, its data \
                 took {used} and made {made})",
                member.len(),
                out.len()
            )));
        }
        Ok(())
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: allocated by `libdeflate_alloc_decompressor` and freed only here.
        unsafe { libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(data: &[u8]) -> Vec<u8> {
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
        let mut out = vec![0; c.gzip_compress_bound(data.len())];
        let n = c.gzip_compress(data, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn a_whole_member_inflates_and_anything_around_it_is_refused() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        let gz = member(&data);
        let mut i = Inflater::new().unwrap();
        let mut out = vec![0; data.len()];
        i.gunzip_exact(&gz, &mut out).unwrap();
        assert_eq!(out, data);
        // Bytes after the trailer are not part of the member.
        let mut longer = gz.clone();
        longer.extend_from_slice(&gz[gz.len() - 8..]);
        let e = i.gunzip_exact(&longer, &mut out).unwrap_err();
        assert!(e.to_string().contains("its data took"), "{e}");
        // A cut member, a wrong output size, a flipped bit.
        assert!(i.gunzip_exact(&gz[..gz.len() - 1], &mut out).is_err());
        assert!(i.gunzip_exact(&gz, &mut out[1..]).is_err());
        let mut bigger = vec![0; data.len() + 1];
        assert!(i.gunzip_exact(&gz, &mut bigger).is_err());
        let mut flipped = gz.clone();
        flipped[gz.len() / 2] ^= 0x10;
        assert!(i.gunzip_exact(&flipped, &mut out).is_err());
    }
}
