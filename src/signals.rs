//! Signal dispositions: the only module allowed `unsafe`, for one libc call.
#![allow(unsafe_code)]

/// Ignores `SIGXFSZ`, so that writing past `RLIMIT_FSIZE` fails with `EFBIG` (reported as an exit
/// code naming the cause) instead of killing the process with a core dump and no explanation.
pub fn ignore_sigxfsz() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN installs no handler code, so nothing can run in signal context.
    let _ = unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) };
}
