//! S3-compatible object storage (AWS, MinIO, Ceph, Garage, Backblaze B2) as a target.
//!
//! So far the request signing and the client: every request vouch sends to an S3 endpoint is signed with
//! AWS Signature Version 4 in the `Authorization` header, over the SHA-256 of its real payload
//! (never `UNSIGNED-PAYLOAD`), so the server checks the bytes it received against the hash the
//! signature covers. Requests go out over the blocking `ureq` client; there is no SDK and no
//! async runtime.

pub mod client; // the S3 requests, signed, sent and their answers checked
pub mod sigv4; // AWS Signature Version 4: canonical request, string to sign, Authorization
pub mod upload; // one archive into a bucket: a PutObject, or equal parts, checked
pub mod xml; // errors, listings and multipart documents
