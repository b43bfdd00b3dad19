//! Secrets vouch reads from files: a `credential = "NAME"` or a `password-file`.
//!
//! A credential named `NAME` is `$CREDENTIALS_DIRECTORY/NAME` when systemd passed it
//! (`LoadCredential=` or `LoadCredentialEncrypted=` in a drop-in of the unit), else
//! `/etc/vouch/credentials/NAME`. Either way the file must be a regular file that neither group
//! nor others can read, and it is read without blocking and up to a cap (see `bounded`), so a
//! FIFO or a link to `/dev/zero` under its name is an error, not a hang. The secret itself
//! never appears in an error.

use super::bounded::{self, Links};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where credentials live without `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIALS_DIR: &str = "/etc/vouch/credentials";

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A file named in the config (`password-file`).
    File(PathBuf),
    /// A credential by name (`credential = "NAME"`).
    Credential(String),
}

/// Why a secret could not be read. Each variant carries the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// No file at the path.
    #[error("{} does not exist", path.display())]
    Missing {
        /// The file looked for.
        path: PathBuf,
    },
    /// Group or others may read it.
    #[error("{} has mode {mode:04o}, which lets others read it", path.display())]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not readable, not a regular file, too large or not text.
    #[error("{}: {detail}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

impl CredentialError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            CredentialError::Missing { path }
            | CredentialError::TooOpen { path, .. }
            | CredentialError::Unreadable { path, .. } => path,
        }
    }

    /// One sentence with the fix, for `what` (e.g. `[[dump]] "app"`).
    pub fn hint(&self, secret: &Secret, what: &str) -> String {
        match (self, secret) {
            (CredentialError::Missing { .. }, Secret::Credential(name)) => format!(
                "Put the secret for {what} in {CREDENTIALS_DIR}/{name} (mode 0600, owned by root), or pass it to vouch.service with LoadCredential={name}:PATH."
            ),
            (CredentialError::Missing { path }, Secret::File(_)) => format!(
                "Create {} (mode 0600, owned by root) or fix the path in {what}.",
                path.display()
            ),
            (CredentialError::TooOpen { path, .. }, _) => format!(
                "Make {} readable by root only (chmod 0600, chown root) for {what}.",
                path.display()
            ),
            (CredentialError::Unreadable { path, .. }, _) => format!(
                "Make {} a regular text file readable by root for {what}.",
                path.display()
            ),
        }
    }
}

/// The file a secret is read from. `credentials_dir` is `$CREDENTIALS_DIRECTORY`; a name it
/// does not hold falls back to [`CREDENTIALS_DIR`].
pub fn locate(secret: &Secret, credentials_dir: Option<&Path>) -> PathBuf {
    match secret {
        Secret::File(path) => path.clone(),
        Secret::Credential(name) => credentials_dir
            .map(|d| d.join(name))
            .filter(|p| p.symlink_metadata().is_ok())
            .unwrap_or_else(|| Path::new(CREDENTIALS_DIR).join(name)),
    }
}

/// Reads the whole file of `secret` as bytes, after checking that only its owner can read it.
pub fn read(secret: &Secret, credentials_dir: Option<&Path>) -> Result<Vec<u8>, CredentialError> {
    let path = locate(secret, credentials_dir);
    let unreadable = |e: io::Error| CredentialError::Unreadable {
        path: path.clone(),
        detail: e.to_string(),
    };
    let file = match bounded::open_regular(&path, Links::Follow) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(CredentialError::Missing { path });
        }
        Err(e) => return Err(unreadable(e)),
    };
    let mode = file.metadata().map_err(unreadable)?.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredentialError::TooOpen { path, mode });
    }
    bounded::read_to_cap(file, bounded::KEY_CAP).map_err(unreadable)
}

/// The first line of `secret`'s file: a password. Trailing `\r` is dropped; an empty first
/// line is an error (a password that is not there would silently mean no password).
pub fn read_password(
    secret: &Secret,
    credentials_dir: Option<&Path>,
) -> Result<String, CredentialError> {
    let bytes = read(secret, credentials_dir)?;
    let path = || locate(secret, credentials_dir);
    let text = String::from_utf8(bytes).map_err(|_| CredentialError::Unreadable {
        path: path(),
        detail: "not UTF-8 text".into(),
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(CredentialError::Unreadable {
            path: path(),
            detail: "its first line is empty".into(),
        });
    }
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_credential_comes_from_the_credentials_directory_first() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "db", "s3cret\nignored\n", 0o600);
        let secret = Secret::Credential("db".into());
        assert_eq!(locate(&secret, Some(d.path())), d.path().join("db"));
        assert_eq!(read_password(&secret, Some(d.path())).unwrap(), "s3cret");
    }

    #[test]
    fn a_name_the_credentials_directory_lacks_falls_back_to_etc() {
        let d = tempfile::tempdir().unwrap();
        let secret = Secret::Credential("not-there-anywhere".into());
        let path = locate(&secret, Some(d.path()));
        assert_eq!(path, Path::new(CREDENTIALS_DIR).join("not-there-anywhere"));
        let e = read_password(&secret, Some(d.path())).unwrap_err();
        assert!(matches!(e, CredentialError::Missing { .. }), "{e}");
        assert!(e
            .hint(&secret, "x")
            .contains("LoadCredential=not-there-anywhere:"));
    }

    #[test]
    fn a_file_others_can_read_is_refused_without_showing_the_secret() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "pw", "hunter2\n", 0o644);
        let e = read_password(&Secret::File(p), None).unwrap_err();
        assert!(
            matches!(e, CredentialError::TooOpen { mode: 0o644, .. }),
            "{e}"
        );
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn an_empty_first_line_and_a_fifo_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "empty", "\nsecond\n", 0o600);
        assert!(read_password(&Secret::File(p), None).is_err());
        let fifo = d.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg("-m600")
            .arg(&fifo)
            .status();
        assert!(made.unwrap().success());
        let e = read_password(&Secret::File(fifo), None).unwrap_err();
        assert!(matches!(e, CredentialError::Unreadable { .. }), "{e}");
    }
}
