//! Fuzzes the reader that decodes an archive's gzip members and zstd frames on worker threads
//! (`pipeline::members`) against the streaming decoders it falls back to. The first byte picks
//! the format (even: gzip, odd: zstd); the rest is the plaintext. The reader must not panic or
//! hang, and whatever it decodes without an error, the streaming decoder must decode to the same
//! bytes: a recorded member size can never make vouch read something `gzip -d` or `zstd -d`
//! would not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Read;
use vouch::pipeline::members::{Format, Members};

/// More output than this is not compared (a tiny input can claim gigabytes).
const MAX_OUT: u64 = 64 << 20;

fn streamed(format: Format, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match format {
        Format::Gzip => {
            flate2::read::MultiGzDecoder::new(data)
                .take(MAX_OUT)
                .read_to_end(&mut out)?;
        }
        Format::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(data)?;
            d.window_log_max(vouch::pipeline::zstd::ZSTD_WINDOW_LOG_MAX)?;
            d.take(MAX_OUT).read_to_end(&mut out)?;
        }
    }
    Ok(out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let format = if first % 2 == 0 { Format::Gzip } else { Format::Zstd };
    let mut out = Vec::new();
    let ours = Members::new(data, format, 2)
        .take(MAX_OUT)
        .read_to_end(&mut out);
    if ours.is_ok() && (out.len() as u64) < MAX_OUT {
        let theirs = streamed(format, data).expect("vouch decoded what the streaming decoder refuses");
        assert!(theirs == out, "vouch decoded other bytes than the streaming decoder");
    }
});
