//! `tls-ca`: an extra certificate authority an S3 endpoint's certificate may chain to, for a
//! self-hosted server with its own CA.
//!
//! The file is PEM, one or more `CERTIFICATE` blocks, read when the target is opened (bounded,
//! like every small file vouch trusts: [`crate::host::bounded`]). A file that is missing, holds
//! no certificate or a block that is not a DER certificate is refused, naming the file.
//!
//! OpenSSL (through native-tls) is given a fixed set of roots once any root is added by hand,
//! so the roots are the system's store (`$SSL_CERT_FILE` when set, as OpenSSL reads it, else
//! Debian's bundle [`SYSTEM_BUNDLE`]) followed by the `tls-ca` certificates: both are trusted.

use crate::host::bounded::{self, Links};
use std::path::Path;
use ureq::tls::{Certificate, PemItem};

/// The system store's bundle on Debian (`update-ca-certificates` writes it).
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The most a CA file may hold (the whole system bundle is about 200 KiB).
pub const CA_CAP: u64 = 4 << 20;

/// The certificates of the PEM file at `path`; the error names the file.
pub fn read_ca(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let shown = path.display();
    let bytes = bounded::read(path, Links::Follow, CA_CAP)
        .map_err(|e| format!("tls-ca {shown} cannot be read: {e}"))?;
    let certs = parse(&bytes).map_err(|e| format!("tls-ca {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "tls-ca {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

/// The certificates of PEM text, each checked to be one whole DER structure.
fn parse(pem: &[u8]) -> Result<Vec<Certificate<'static>>, String> {
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item.map_err(|e| format!("not PEM: {e}"))? {
            PemItem::Certificate(c) => {
                if !whole_der_sequence(c.der()) {
                    return Err(format!(
                        "certificate {} is not a DER certificate",
                        out.len() + 1
                    ));
                }
                out.push(c);
            }
            _ => return Err("it holds a private key: give only the CA's certificate".into()),
        }
    }
    Ok(out)
}

/// Whether `der` is exactly one DER `SEQUENCE` (as every X.509 certificate is).
fn whole_der_sequence(der: &[u8]) -> bool {
    let (Some(&0x30), Some(&first)) = (der.first(), der.get(1)) else {
        return false;
    };
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || der.len() < 2 + n {
            return false;
        }
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (2 + n, len)
    };
    der.len() == header + len
}

/// The roots to trust with `extra` added: the system's store, then `extra`. A system store
/// that cannot be read adds nothing (the `tls-ca` roots still apply).
pub fn roots_with(extra: &[Certificate<'static>]) -> Vec<Certificate<'static>> {
    let bundle = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| SYSTEM_BUNDLE.into());
    roots_from(&bundle, extra)
}

/// The certificates of the bundle at `bundle` (none when it cannot be read), then `extra`.
fn roots_from(bundle: &Path, extra: &[Certificate<'static>]) -> Vec<Certificate<'static>> {
    let mut roots: Vec<Certificate<'static>> = bounded::read(bundle, Links::Follow, CA_CAP)
        .ok()
        .map(|bytes| {
            ureq::tls::parse_pem(&bytes)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    roots.extend(extra.iter().cloned());
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_is_missing_empty_or_not_a_certificate_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("missing.pem");
        let e = read_ca(&missing).unwrap_err();
        assert!(e.contains("missing.pem cannot be read"), "{e}");
        let p = d.path().join("ca.pem");
        std::fs::write(&p, "just text\n").unwrap();
        let e = read_ca(&p).unwrap_err();
        assert!(e.contains("ca.pem holds no PEM certificate"), "{e}");
        std::fs::write(
            &p,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = read_ca(&p).unwrap_err();
        assert!(e.contains("certificate 1 is not a DER certificate"), "{e}");
    }

    #[test]
    fn the_system_bundle_comes_first_and_the_extra_roots_are_added() {
        let d = tempfile::tempdir().unwrap();
        let block = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        let bundle = d.path().join("bundle.pem");
        std::fs::write(&bundle, format!("{block}{block}")).unwrap();
        let extra = [Certificate::from_der(&[0x30, 0x01, 0x00]).to_owned()];
        let roots = roots_from(&bundle, &extra);
        assert_eq!(roots.len(), 3);
        assert_eq!(roots[2].der(), [0x30, 0x01, 0x00]);
        assert_eq!(roots_from(&d.path().join("none"), &extra).len(), 1);
    }

    #[test]
    fn der_sequences_are_measured_whole() {
        assert!(whole_der_sequence(&[0x30, 0x02, 0x05, 0x00]));
        assert!(!whole_der_sequence(&[0x30, 0x03, 0x05, 0x00]));
        assert!(!whole_der_sequence(&[0x31, 0x00]));
        let mut long = vec![0x30, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(0u8, 256));
        assert!(whole_der_sequence(&long));
        assert!(!whole_der_sequence(&long[..long.len() - 1]));
    }
}
