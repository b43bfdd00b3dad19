//! Keys and age encryption.
//!
//! Archives are encrypted to every configured x25519 recipient (`age1...`), from the config's
//! `recipients` and `recipients-file`. The identity (`AGE-SECRET-KEY-1...`) is needed only to read
//! archives back; it comes from the config's `identity` or, for `LoadCredential=identity:...`,
//! from `$CREDENTIALS_DIRECTORY/identity`. An identity file readable by group or others, or one
//! that matches none of the recipients (the seeds' "keys in two directories"), is refused before
//! anything is written.

use crate::config::Encryption;
use crate::host::bounded::{self, Links};
use age::x25519;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The name of the identity credential under `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIAL_NAME: &str = "identity";

/// Why the keys cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Neither `recipients` nor `recipients-file` names a recipient.
    #[error("no recipients configured: set [encryption] recipients or recipients-file")]
    NoRecipients,
    /// A recipient string does not parse.
    #[error("{origin}: not an age x25519 recipient: {value:?}")]
    BadRecipient {
        /// Where it came from (config key or file and line).
        origin: String,
        /// The text.
        value: String,
    },
    /// The recipients file cannot be read.
    #[error("cannot read recipients file {path}: {error}")]
    RecipientsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The identity file cannot be read.
    #[error("cannot read identity {path}: {error}")]
    IdentityUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The identity file has group or other permission bits.
    #[error(
        "identity {path} is too open (mode {mode:04o}); it must not be readable by group or others"
    )]
    IdentityTooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The identity file holds something that is not an x25519 identity.
    #[error("identity {path}, line {line}: not an age x25519 identity (AGE-SECRET-KEY-1...)")]
    IdentityInvalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// No key in the identity file belongs to any recipient.
    #[error("identity {path} matches none of the configured recipients, so archives could not be decrypted with it")]
    IdentityMismatch {
        /// The file.
        path: PathBuf,
    },
    /// No identity is configured or passed as a credential.
    #[error("no identity to read archives back with: set [encryption] identity, pass the credential `identity`, or set verify-without-identity = true")]
    NoIdentity,
}

impl KeyError {
    /// The fix, in one sentence.
    pub fn hint(&self) -> String {
        match self {
            KeyError::NoRecipients => {
                "Run `vouch keygen` and put the printed recipient into [encryption] recipients.".into()
            }
            KeyError::BadRecipient { .. } => {
                "Use the recipient that `age-keygen -y IDENTITY` prints (it starts with age1).".into()
            }
            KeyError::RecipientsFile { path, error } if not_a_key_file(error) => format!(
                "Point [encryption] recipients-file at a regular file of age1... recipients, one per line, not {}.",
                path.display()
            ),
            KeyError::RecipientsFile { path, .. } => {
                format!("Create {} with one age1... recipient per line, or fix its permissions.", path.display())
            }
            KeyError::IdentityUnreadable { path, error } if not_a_key_file(error) => format!(
                "Point [encryption] identity (or --identity) at the age identity file itself, a regular file from `age-keygen` or `vouch keygen`, not {}.",
                path.display()
            ),
            KeyError::IdentityUnreadable { path, .. } => format!(
                "Check that {} exists and is readable by the user vouch runs as; under systemd, pass it with LoadCredential=identity:{}.",
                path.display(),
                path.display()
            ),
            KeyError::IdentityTooOpen { path, .. } => {
                format!("Run `chmod 600 {}`.", path.display())
            }
            KeyError::IdentityInvalid { path, .. } => format!(
                "Point [encryption] identity at an age identity file (from `age-keygen` or `vouch keygen`), not {}.",
                path.display()
            ),
            KeyError::IdentityMismatch { path } => format!(
                "Add the recipient printed by `age-keygen -y {}` to [encryption] recipients, or point identity at the matching key.",
                path.display()
            ),
            KeyError::NoIdentity => {
                "Set [encryption] identity to the age identity file so every run can prove its archive decrypts.".into()
            }
        }
    }
}

/// Whether a key file was refused for what it is (a FIFO, a device, a directory, too large)
/// rather than for whether it could be opened.
fn not_a_key_file(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::InvalidData
}

/// The loaded keys.
pub struct Keys {
    /// Archives are encrypted to all of these.
    pub recipients: Vec<x25519::Recipient>,
    /// The identity for reading back, if one is available.
    pub identity: Option<Identity>,
}

/// A loaded identity file.
pub struct Identity {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its keys.
    pub keys: Vec<x25519::Identity>,
}

impl Keys {
    /// Loads and checks recipients and identity. `credentials_dir` is `$CREDENTIALS_DIRECTORY`.
    pub fn load(enc: &Encryption, credentials_dir: Option<&Path>) -> Result<Keys, KeyError> {
        let mut recipients = Vec::new();
        for (i, value) in enc.recipients.iter().enumerate() {
            recipients.push(parse_recipient(value, || {
                format!("[encryption] recipients[{i}]")
            })?);
        }
        // Read like the identity: a regular file up to the cap, never a FIFO or a device.
        if let Some(path) = &enc.recipients_file {
            let text =
                bounded::read_string(path, Links::Follow, bounded::KEY_CAP).map_err(|error| {
                    KeyError::RecipientsFile {
                        path: path.clone(),
                        error,
                    }
                })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                recipients.push(parse_recipient(line, || {
                    format!("{}, line {}", path.display(), n + 1)
                })?);
            }
        }
        if recipients.is_empty() {
            return Err(KeyError::NoRecipients);
        }
        let identity_path = enc.identity.clone().or_else(|| {
            credentials_dir
                .map(|d| d.join(CREDENTIAL_NAME))
                .filter(|p| p.exists())
        });
        let identity = match identity_path {
            Some(path) => {
                let identity = load_identity(&path)?;
                let publics: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
                let matches = identity
                    .keys
                    .iter()
                    .any(|k| publics.contains(&k.to_public().to_string()));
                if !matches {
                    return Err(KeyError::IdentityMismatch { path });
                }
                Some(identity)
            }
            None => None,
        };
        Ok(Keys {
            recipients,
            identity,
        })
    }
}

fn parse_recipient(
    value: &str,
    origin: impl FnOnce() -> String,
) -> Result<x25519::Recipient, KeyError> {
    x25519::Recipient::from_str(value.trim()).map_err(|_| KeyError::BadRecipient {
        origin: origin(),
        value: value.to_owned(),
    })
}

/// Reads an identity file: `AGE-SECRET-KEY-1...` lines, `#` comments and blank lines. It must
/// be a regular file (a FIFO, device or directory is refused at once, never waited on) of at
/// most [`bounded::KEY_CAP`] bytes.
pub fn load_identity(path: &Path) -> Result<Identity, KeyError> {
    let unreadable = |error| KeyError::IdentityUnreadable {
        path: path.to_owned(),
        error,
    };
    let file = bounded::open_regular(path, Links::Follow).map_err(unreadable)?;
    let mode = file.metadata().map_err(unreadable)?.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::IdentityTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let bytes = bounded::read_to_cap(file, bounded::KEY_CAP).map_err(unreadable)?;
    let text = String::from_utf8(bytes).map_err(|_| KeyError::IdentityInvalid {
        path: path.to_owned(),
        line: 1,
    })?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = x25519::Identity::from_str(line).map_err(|_| KeyError::IdentityInvalid {
            path: path.to_owned(),
            line: n + 1,
        })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(KeyError::IdentityInvalid {
            path: path.to_owned(),
            line: 1,
        });
    }
    Ok(Identity {
        path: path.to_owned(),
        keys,
    })
}

/// Wraps `output` in an age encryptor to all `recipients`. The returned writer must be
/// `finish()`ed, or the archive is truncated.
pub fn encrypt<W: Write>(
    recipients: &[x25519::Recipient],
    output: W,
) -> io::Result<age::stream::StreamWriter<W>> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(io::Error::other)?;
    encryptor.wrap_output(output)
}

/// Opens an age stream for reading with `identity`.
pub fn decrypt<R: BufRead>(
    identity: &Identity,
    input: R,
) -> Result<age::stream::StreamReader<R>, age::DecryptError> {
    let decryptor = age::Decryptor::new_buffered(input)?;
    decryptor.decrypt(identity.keys.iter().map(|k| k as &dyn age::Identity))
}

/// Checks that `input` starts with a well-formed age header (for ciphertext-only checking).
pub fn check_header<R: BufRead>(input: R) -> Result<(), age::DecryptError> {
    age::Decryptor::new_buffered(input).map(|_| ())
}

/// Generates a new identity: its file text and its recipient.
pub fn generate() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let key = x25519::Identity::generate();
    let recipient = key.to_public().to_string();
    (key.to_string().expose_secret().to_owned(), recipient)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    fn encryption(recipients: Vec<String>, identity: Option<PathBuf>) -> Encryption {
        Encryption {
            recipients,
            recipients_file: None,
            identity,
            verify_without_identity: false,
        }
    }

    fn write_identity(dir: &Path, mode: u32) -> (PathBuf, String) {
        let (secret, recipient) = generate();
        let path = dir.join("identity.txt");
        fs::write(&path, format!("# test key\n{secret}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        (path, recipient)
    }

    #[test]
    fn round_trip_through_age() {
        let dir = tempfile::tempdir().unwrap();
        let (path, recipient) = write_identity(dir.path(), 0o600);
        let keys = Keys::load(&encryption(vec![recipient], Some(path)), None).unwrap();
        let mut w = encrypt(&keys.recipients, Vec::new()).unwrap();
        w.write_all(b"secret data").unwrap();
        let ciphertext = w.finish().unwrap();
        let mut r = decrypt(keys.identity.as_ref().unwrap(), &ciphertext[..]).unwrap();
        let mut plain = Vec::new();
        r.read_to_end(&mut plain).unwrap();
        assert_eq!(plain, b"secret data");
    }

    #[test]
    fn identity_checks() {
        let dir = tempfile::tempdir().unwrap();
        let (path, recipient) = write_identity(dir.path(), 0o644);
        let err = Keys::load(
            &encryption(vec![recipient.clone()], Some(path.clone())),
            None,
        )
        .err()
        .unwrap();
        assert!(
            matches!(err, KeyError::IdentityTooOpen { mode: 0o644, .. }),
            "{err}"
        );

        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let (_, other) = generate();
        let err = Keys::load(&encryption(vec![other], Some(path.clone())), None)
            .err()
            .unwrap();
        assert!(matches!(err, KeyError::IdentityMismatch { .. }), "{err}");

        let err = Keys::load(&encryption(vec!["age1garbage".into()], None), None)
            .err()
            .unwrap();
        assert!(matches!(err, KeyError::BadRecipient { .. }), "{err}");

        let err = Keys::load(&encryption(vec![], None), None).err().unwrap();
        assert!(matches!(err, KeyError::NoRecipients));

        fs::write(&path, "not a key\n").unwrap();
        let err = Keys::load(&encryption(vec![recipient], Some(path)), None)
            .err()
            .unwrap();
        assert!(
            matches!(err, KeyError::IdentityInvalid { line: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn key_files_that_are_not_regular_files_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = load_identity(&fifo).err().unwrap();
        assert!(matches!(err, KeyError::IdentityUnreadable { .. }), "{err}");
        assert!(err.to_string().contains("a FIFO"), "{err}");
        assert!(err.hint().contains("regular file"), "{}", err.hint());
        let err = load_identity(dir.path()).err().unwrap();
        assert!(err.to_string().contains("a directory"), "{err}");
        let huge = dir.path().join("huge-identity.txt");
        fs::File::create(&huge)
            .unwrap()
            .set_len(bounded::KEY_CAP + 1)
            .unwrap();
        fs::set_permissions(&huge, fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_identity(&huge).err().unwrap();
        assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
        let (_, recipient) = generate();
        let mut enc = encryption(vec![recipient], None);
        enc.recipients_file = Some(PathBuf::from("/dev/zero"));
        let err = Keys::load(&enc, None).err().unwrap();
        assert!(matches!(err, KeyError::RecipientsFile { .. }), "{err}");
        assert!(err.to_string().contains("character device"), "{err}");
        let big = dir.path().join("recipients.txt");
        fs::File::create(&big)
            .unwrap()
            .set_len(bounded::KEY_CAP + 1)
            .unwrap();
        enc.recipients_file = Some(big);
        let err = Keys::load(&enc, None).err().unwrap();
        assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
    }

    #[test]
    fn identity_from_credentials_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, recipient) = generate();
        let cred = dir.path().join(CREDENTIAL_NAME);
        fs::write(&cred, format!("{secret}\n")).unwrap();
        fs::set_permissions(&cred, fs::Permissions::from_mode(0o400)).unwrap();
        let keys = Keys::load(&encryption(vec![recipient], None), Some(dir.path())).unwrap();
        assert_eq!(keys.identity.unwrap().path, cred);
    }
}
