//! The journal catalog (`/usr/lib/systemd/catalog/vouch.catalog`), generated from the events and
//! exit codes, so that `journalctl -x -u vouch` explains every vouch entry and its fix.
//!
//! The committed copy in `packaging/vouch.catalog` is checked against [`render`] by a test; run
//! `VOUCH_UPDATE_DOCS=1 cargo test` to rewrite it after changing an event or an exit code.

use crate::exit::ExitCode;
use crate::systemd::journal::Event;

/// Where the catalog is installed.
pub const INSTALL_PATH: &str = "/usr/lib/systemd/catalog/vouch.catalog";

fn subject(event: Event) -> &'static str {
    match event {
        Event::RunStarted => "vouch backup started",
        Event::PreflightFailed => "vouch refused to start a backup: @VOUCH_EXIT_NAME@",
        Event::ArchiveWritten => "vouch wrote an archive to target @VOUCH_TARGET@",
        Event::ArchiveVerified => "vouch verified an archive on target @VOUCH_TARGET@",
        Event::RemoteCopied => "vouch copied an archive off-site to @VOUCH_TARGET@",
        Event::Pruned => "vouch removed old archives on target @VOUCH_TARGET@",
        Event::RunSucceeded => "vouch backup succeeded and was verified",
        Event::RunFailed => "vouch backup failed: @VOUCH_EXIT_NAME@",
        Event::VerifySucceeded => "vouch verified the archives it was asked to read back",
        Event::VerifyFailed => "vouch verify failed: @VOUCH_EXIT_NAME@",
        Event::HookRan => "vouch ran hook @VOUCH_HOOK@",
        Event::DumpWritten => "vouch made and checked dump @VOUCH_DUMP@ (@VOUCH_DUMP_KIND@)",
    }
}

fn body(event: Event) -> String {
    match event {
        Event::RunStarted => {
            "A backup run began (run @VOUCH_RUN_ID@). Its preflight checks passed: \
the lock is held, the keys and sources are usable and every target is writable with room to \
spare. Every later entry of this run carries the same VOUCH_RUN_ID."
                .into()
        }
        Event::PreflightFailed => format!(
            "A check that runs before anything is written failed, so no archive was made and \
nothing on the targets was touched. This is the failure that backups usually hide: \
a read-only sandbox, a missing key, an unmounted disk, a full disk, a filesystem that cannot \
hold large files.\n\nCause: @MESSAGE@\n\nFix: @VOUCH_HINT@\n\n\
Run `vouch preflight --as-service` to see every check, inside the unit's sandbox, with its result. The exit codes:\n\n{}",
            exit_list(|c| c.is_preflight())
        ),
        Event::ArchiveWritten => "The archive @VOUCH_ARCHIVE@ (its SHA-256 is in the entry's VOUCH_ARCHIVE_SHA256 field) \
now has its final name on target @VOUCH_TARGET@. It was fsynced and read back before it was \
renamed into place; the directory was fsynced after the rename."
            .into(),
        Event::ArchiveVerified => "The archive @VOUCH_ARCHIVE@ was read back from target \
@VOUCH_TARGET@ after its cached pages were dropped, decrypted, decompressed, and every entry \
was hashed and compared with the manifest. When this entry is a warning, no identity was \
available and only the ciphertext was checked: set [encryption] identity so every run proves \
that its archive decrypts."
            .into(),
        Event::RemoteCopied => "The archive was copied to the off-site target @VOUCH_TARGET@ \
and checked there before its receipt was written: with VOUCH_READBACK=full it was downloaded \
and checked entry by entry, as the local copy was; with VOUCH_READBACK=checksum only the \
server's digests vouch for it, and vouch status warns until a full verify of it is recorded. \
VOUCH_REMOTE_VERSION_ID names the object version; VOUCH_RETAIN_UNTIL, when set, is the end of \
its Object Lock, which was applied only after the check passed."
            .into(),
        Event::Pruned => "Retention removed archives on target @VOUCH_TARGET@ that its keep \
rules no longer need. The newest verified archive is never removed."
            .into(),
        Event::RunSucceeded => format!(
            "The backup kept its promise: a new archive (@VOUCH_ARCHIVE@, @VOUCH_FILES@ files, \
@VOUCH_BYTES_IN@ bytes in, @VOUCH_BYTES_OUT@ bytes out) is on every target, fsynced, read back, \
decrypted, decompressed and checked entry by entry, with every required path present and \
non-empty. `journalctl MESSAGE_ID={}` lists exactly the runs that did this.\n\n\
To restore with stock tools (a .tar.zst.age: `zstd -d | tar -xf - -C DIR` after age):\n\n    \
age -d -i IDENTITY ARCHIVE | tar -xzf - -C DIR\n    \
cd DIR && sha256sum -c .vouch/SHA256SUMS",
            Event::RunSucceeded.message_id()
        ),
        Event::RunFailed => format!(
            "The backup run failed after its preflight checks passed. Unless the cause names targets \
that keep this run's archive (@VOUCH_COMMITTED_TARGETS@: committed, verified, with a receipt), no \
archive from this run was given a final name on any target: temporary files were removed, and \
older archives were not touched.\n\n\
Cause: @MESSAGE@\n\nFix: @VOUCH_HINT@\n\nThe exit codes:\n\n{}",
            exit_list(|c| c.code() != 0 && !c.is_preflight())
        ),
        Event::VerifySucceeded => "Every archive `vouch verify` selected (the newest one on each \
target for the weekly vouch-verify.service) was read back from its target, decrypted, \
decompressed, and every entry was hashed and compared with the manifest: @MESSAGE@. The \
results are recorded in /var/lib/vouch/verified.json, which `vouch status` and retention read."
            .into(),
        Event::VerifyFailed => "A verification of archives already on the targets failed: an \
archive is damaged or incomplete, a target holds no archive to restore from, or the archives \
could not be read at all. A damaged archive is recorded as failed in \
/var/lib/vouch/verified.json: retention keeps it for the operator, `vouch list` marks it FAILED \
and `vouch status` is critical until a good archive is verified.\n\n\
Cause: @MESSAGE@\n\nFix: @VOUCH_HINT@\n\n\
`vouch verify --all` checks every archive (`--target NAME` limits it to one target); \
`vouch list` shows which copies are intact.".into(),
        Event::HookRan => "The [[hook]] @VOUCH_HOOK@ ran its command, without a shell, and it \
exited 0 within its timeout: @MESSAGE@. A hook that fails or runs past its timeout ends the run \
with exit 20 (HOOK) instead; a failed cleanup or after-hook leaves the new archive committed."
            .into(),
        Event::DumpWritten => "The [[dump]] @VOUCH_DUMP@ (kind @VOUCH_DUMP_KIND@) was made into \
vouch's spool and passed every check of its kind before a byte of the archive was written: the \
exit status, min-size, and the kind's own proof (an SQLite copy's integrity_check and table \
count, a command's expect-tail). It is @VOUCH_BYTES_IN@ bytes (its SHA-256 is in the entry's VOUCH_DUMP_SHA256 field), \
and becomes an ordinary archive entry under .vouch/dumps/ (an SQLite snapshot at the database's \
own path), listed in the manifest and in .vouch/SHA256SUMS. A dump that fails a check ends the \
run with exit 20 (HOOK) and nothing is written to the targets."
            .into(),
    }
}

fn exit_list(filter: impl Fn(ExitCode) -> bool) -> String {
    ExitCode::ALL
        .into_iter()
        .filter(|c| filter(*c))
        .map(|c| format!("    {:>3} {:<16} {}", c.code(), c.name(), c.description()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole catalog text.
pub fn render() -> String {
    let mut out = String::from(
        "# vouch's journal catalog: one entry per MESSAGE_ID.\n\
         # Generated from src/systemd/catalog.rs; do not edit by hand.\n",
    );
    for event in Event::ALL {
        out.push_str(&format!(
            "\n-- {}\nSubject: {}\nDefined-By: vouch\nDocumentation: man:vouch(8)\n\n{}\n",
            event.message_id(),
            subject(event),
            body(event)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_and_exit_code_is_in_the_catalog() {
        let text = render();
        for e in Event::ALL {
            assert!(text.contains(&format!("-- {}\n", e.message_id())), "{e:?}");
        }
        for c in ExitCode::ALL.into_iter().filter(|c| c.code() != 0) {
            assert!(text.contains(&format!(" {} ", c.name())), "{c}");
        }
    }

    #[test]
    fn verify_results_have_their_own_entries_with_the_fix() {
        let text = render();
        let entry = |e: Event| {
            let start = text.find(&format!("-- {}\n", e.message_id())).unwrap();
            let rest = &text[start + 3..];
            rest[..rest.find("\n-- ").unwrap_or(rest.len())].to_owned()
        };
        let failed = entry(Event::VerifyFailed);
        assert!(
            failed.contains("Subject: vouch verify failed: @VOUCH_EXIT_NAME@"),
            "{failed}"
        );
        assert!(
            failed.contains("Cause: @MESSAGE@\n\nFix: @VOUCH_HINT@"),
            "{failed}"
        );
        assert!(failed.contains("verified.json"), "{failed}");
        let ok = entry(Event::VerifySucceeded);
        assert!(ok.contains("@MESSAGE@"), "{ok}");
        assert_eq!(Event::VerifyFailed.name(), "verify-failed");
        assert_eq!(Event::VerifySucceeded.name(), "verify-succeeded");
        assert_eq!(Event::VerifyFailed.level(), log::Level::Error);
    }

    #[test]
    fn journalctl_accepts_the_catalog() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("usr/lib/systemd/catalog");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vouch.catalog"), render()).unwrap();
        let run = |args: &[&str]| {
            std::process::Command::new("journalctl")
                .arg(format!("--root={}", root.path().display()))
                .args(args)
                .output()
                .expect("journalctl (systemd) is needed to check the catalog")
        };
        let out = run(&["--update-catalog"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(&["--list-catalog"]);
        let listed = String::from_utf8_lossy(&out.stdout);
        for e in Event::ALL {
            assert!(
                listed.contains(e.message_id()),
                "{e:?} not accepted:\n{listed}"
            );
        }
    }

    #[test]
    fn catalog_variables_are_names_journalctl_can_fill() {
        // journalctl substitutes @NAME@ only where NAME is made of letters and underscores;
        // any other @...@ is printed as it is.
        let text = render();
        let mut rest = text.as_str();
        while let Some(start) = rest.find('@') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('@') else { break };
            let name = &after[..end];
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                assert!(
                    name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                    "catalog variable @{name}@ would be printed literally"
                );
            }
            rest = &after[end + 1..];
        }
    }

    #[test]
    fn the_committed_catalog_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/vouch.catalog");
        let fresh = render();
        if std::env::var_os("VOUCH_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &fresh).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fresh,
            "packaging/vouch.catalog is out of date: run `VOUCH_UPDATE_DOCS=1 cargo test catalog`"
        );
    }
}
