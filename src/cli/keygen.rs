//! `vouch keygen [--identity PATH] [--recipients-file PATH]`: make an age identity safely.
//!
//! The identity file is created exclusively with mode 0600 (an existing file is never
//! overwritten), the recipient is printed (and appended to a recipients file when asked), and
//! the user is told to keep a copy away from the backup targets: an archive is only as good as
//! the key that decrypts it.

use crate::crypt;
use crate::error::Error;
use crate::exit::ExitCode;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The identity path when none is given.
pub const DEFAULT_IDENTITY: &str = "/etc/vouch/identity.txt";

/// Creates the identity and prints its recipient.
pub fn execute(identity: &Path, recipients_file: Option<&Path>) -> Result<ExitCode, Error> {
    let (secret, recipient) = crypt::generate();
    let created = time::OffsetDateTime::now_utc();
    let text = format!(
        "# created: {}\n# recipient: {recipient}\n{secret}\n",
        crate::run::rfc3339(created)
    );
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(identity)
        .map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "it already exists and is never overwritten (archives may depend on it)".to_owned()
            } else {
                e.to_string()
            };
            Error::Usage(format!("cannot create {}: {why}", identity.display()))
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::Internal(format!("writing {}: {e}", identity.display())))?;
    if let Some(path) = recipients_file {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)
            .and_then(|mut f| writeln!(f, "{recipient}"))
            .map_err(|e| Error::Usage(format!("cannot append to {}: {e}", path.display())))?;
    }
    println!("{recipient}");
    eprintln!(
        "vouch: wrote the identity {} (mode 0600); its recipient is printed above.\n\
         vouch: keep a copy of the identity somewhere other than the backup targets: \
         without it no archive can be decrypted.",
        identity.display()
    );
    Ok(ExitCode::Ok)
}
