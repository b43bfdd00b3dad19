//! The byte path of an archive: sources walked, tarred, compressed, encrypted and hashed on the
//! way to a target, and the manifest that says what went in. Nothing here knows where the bytes
//! end up (that is [`crate::target`]) or what a run decides about them (that is [`crate::run`]).

pub mod archive; // walked sources -> tar entries + manifest lines, each file read once
pub mod compress; // gzip or zstd on every core, as independent members or frames
pub mod crypt; // age recipients, identities, encryption
pub mod decompress; // the reading side: the decoder an archive's name asks for, checked
pub mod inflate; // libdeflate inflating one whole gzip member, exactly
pub mod io; // hashing, counting and fan-out adapters
pub mod manifest; // .vouch/manifest.json and .vouch/SHA256SUMS
pub mod members; // gzip members and zstd frames decoded whole, on every core
pub mod relay; // a byte stream handed between threads in blocks, errors in order
pub mod tarstream; // the pax tar writer
pub mod walk; // walking the sources
pub mod zstd; // the zstd frame encoder, its level, chunk size and limits
