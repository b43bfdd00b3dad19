//! Fuzzes the archive reader that `vouch verify` and `vouch restore` use. The input is the
//! plaintext of an archive: a gzip stream when it starts with gzip's magic bytes, a series of
//! zstd frames (read as a `.tar.zst.age`) when it starts with zstd's, else a raw tar stream that
//! is gzipped here (so mutations reach the tar and manifest checks instead of dying in gzip's
//! CRC). It is encrypted in memory to a fixed test identity and read back with
//! `verify::verify_archive`, then restored with `restore::restore` into a scratch directory.
//! Neither may panic, and a restore never writes outside its destination.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use libfuzzer_sys::fuzz_target;
use std::io::{self, Cursor, Read, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;
use vouch::config::Compression;

/// A key made for fuzzing only; the seed archives are encrypted to its recipient.
const SECRET: &str = "AGE-SECRET-KEY-1TS9ML20XE8D0HP4NGM7KUDNUPZ6NLAR3SLW9T8PPD5DPHDL0HMFQ2JRZ2J";

/// What every run shares: the key and a scratch directory.
struct World {
    identity: vouch::pipeline::crypt::Identity,
    recipient: age::x25519::Recipient,
    scratch: PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let key = age::x25519::Identity::from_str(SECRET).expect("the test identity parses");
        let recipient = key.to_public();
        World {
            identity: vouch::pipeline::crypt::Identity {
                path: PathBuf::from("/nonexistent/vouch-fuzz/identity.txt"),
                keys: vec![key],
            },
            recipient,
            scratch: scratch::dir("archive"),
        }
    })
}

/// The input as a compressed stream, and the compression an archive holding it is named for.
fn compressed(data: &[u8]) -> (Vec<u8>, Compression) {
    if data.starts_with(&vouch::pipeline::decompress::ZSTD_MAGIC) {
        return (data.to_vec(), Compression::Zstd);
    }
    (gzipped(data), Compression::Gzip)
}

/// The input as a gzip stream.
fn gzipped(data: &[u8]) -> Vec<u8> {
    if data.starts_with(&vouch::pipeline::decompress::GZIP_MAGIC) {
        return data.to_vec();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// `plain` encrypted to the test recipient.
fn encrypted(plain: &[u8], recipient: &age::x25519::Recipient) -> Vec<u8> {
    let mut w = vouch::pipeline::crypt::encrypt(std::slice::from_ref(recipient), Vec::new()).unwrap();
    w.write_all(plain).unwrap();
    w.finish().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let (plain, compression) = compressed(data);
    let ciphertext = encrypted(&plain, &world.recipient);
    let open = || -> io::Result<Box<dyn Read + Send>> { Ok(Box::new(Cursor::new(ciphertext.clone()))) };
    let spool = tempfile::tempdir_in(&world.scratch).unwrap();
    let _ = vouch::check::verify::verify_archive(
        &ciphertext[..],
        &world.identity,
        compression,
        None,
        spool.path(),
    );
    drop(spool);

    let dest = world.scratch.join("restore");
    let options = vouch::restore::Options {
        to: dest.clone(),
        compression,
        ..Default::default()
    };
    let total = ciphertext.len() as u64;
    let _ = vouch::restore::restore(&open, &world.identity, None, total, &options);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).unwrap();
    }
    let left: Vec<_> = std::fs::read_dir(&world.scratch)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "the restore left {left:?} beside its destination"
    );
});
