//! Signal dispositions and held-back interruptions: one of the three modules allowed `unsafe`
//! (with `pipeline::inflate` and `host::memory`), for a few libc calls that install no handler.
//!
//! A restore must not stop between two steps of its commit. While it writes, it holds SIGINT,
//! SIGTERM and SIGHUP back with the thread's signal mask ([`Deferred`]) and asks between steps
//! whether one of them has arrived ([`Deferred::arrived`], `sigpending(2)`). When one has, the
//! restore undoes what it did and lets the signal through ([`Deferred::reraise`]): still pending,
//! it is delivered at once with its default action, so the process dies by that signal and the
//! shell sees exactly that. No signal handler is ever installed, so no code runs in signal
//! context, and system calls are never interrupted with `EINTR`.
#![allow(unsafe_code)]

use nix::sys::signal::{pthread_sigmask, raise, SigSet, SigmaskHow, Signal};

/// Ignores `SIGXFSZ`, so that writing past `RLIMIT_FSIZE` fails with `EFBIG` (reported as an exit
/// code naming the cause) instead of killing the process with a core dump and no explanation.
pub fn ignore_sigxfsz() {
    use nix::sys::signal::{signal, SigHandler};
    // SAFETY: SIG_IGN installs no handler code, so nothing can run in signal context.
    let _ = unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) };
}

/// The signals that interrupt a restore: Ctrl-C, `kill`/`systemctl stop`, a closed terminal.
pub const INTERRUPTS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Whether `signal` has its default disposition (neither ignored, as under `nohup`, nor caught).
fn is_default(signal: Signal) -> bool {
    // SAFETY: an all-zero `sigaction` is a valid value of that plain C struct, and with a null
    // new action `sigaction(2)` only writes the current disposition into it; nothing is installed.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal as libc::c_int, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_DFL
    }
}

/// The signals waiting to be delivered to this thread or process.
fn pending() -> SigSet {
    // SAFETY: an all-zero `sigset_t` is a valid value of that plain C type, `sigpending(2)` only
    // writes a signal set into it, and a set the kernel filled is a valid `SigSet`.
    unsafe {
        let mut raw: libc::sigset_t = std::mem::zeroed();
        if libc::sigpending(&mut raw) != 0 {
            return SigSet::empty();
        }
        SigSet::from_sigset_t_unchecked(raw)
    }
}

/// Whether one of the interrupting signals in `held` is pending for this process (held back
/// and not yet taken by a thread waiting for it).
pub fn interrupt_pending(held: &SigSet) -> bool {
    let pending = pending();
    INTERRUPTS
        .into_iter()
        .any(|s| held.contains(s) && pending.contains(s))
}

/// SIGINT, SIGTERM and SIGHUP held back in the calling thread until this is dropped, when the
/// thread's previous signal mask comes back (and a held-back signal is delivered).
///
/// Only signals with their default disposition that were not already blocked are held: an
/// ignored SIGHUP (`nohup`) stays ignored. Meant for the main thread of a process without
/// other threads, which is how `vouch restore` and `vouch verify --restore-to` run.
#[derive(Debug)]
pub struct Deferred {
    held: SigSet,
    previous: SigSet,
}

impl Deferred {
    /// Starts holding the interrupting signals back.
    pub fn start() -> Deferred {
        let previous = SigSet::thread_get_mask().unwrap_or_else(|_| SigSet::empty());
        let mut held = SigSet::empty();
        for s in INTERRUPTS {
            if !previous.contains(s) && is_default(s) {
                held.add(s);
            }
        }
        if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&held), None).is_err() {
            held = SigSet::empty();
        }
        Deferred { held, previous }
    }

    /// The first held-back signal that has arrived, if any.
    pub fn arrived(&self) -> Option<Signal> {
        let pending = pending();
        INTERRUPTS
            .into_iter()
            .find(|&s| self.held.contains(s) && pending.contains(s))
    }

    /// Lets `signal` through: it is raised (it is normally pending already) and the previous
    /// mask restored, so the process dies by it with its default action. Returns only if the
    /// signal was not held back here.
    pub fn reraise(self, signal: Signal) {
        if self.held.contains(signal) {
            let _ = raise(signal);
        }
        drop(self);
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None);
    }
}

/// Holds SIGINT, SIGTERM and SIGHUP back in the calling thread for good (and in every thread it
/// spawns afterwards), for a thread that waits for them with `sigwait(2)`; returns the set held.
/// As with [`Deferred`], only signals with their default disposition that were not already
/// blocked are held.
pub fn hold_interrupts() -> SigSet {
    let deferred = Deferred::start();
    let held = deferred.held;
    std::mem::forget(deferred);
    held
}

/// Lets `signal` (taken with `sigwait(2)`, so no longer pending) end the process by its default
/// action: it is unblocked in this thread and raised here. Never returns; if the signal does not
/// end the process (its disposition changed meanwhile), the process exits with 128 + its number,
/// as a shell reports a death by that signal.
pub fn die_by(signal: Signal) -> ! {
    let mut only = SigSet::empty();
    only.add(signal);
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
    let _ = raise(signal);
    std::process::exit(128 + signal as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_back_signal_is_seen_as_arrived_and_not_delivered() {
        let signal = INTERRUPTS
            .into_iter()
            .find(|&s| is_default(s))
            .expect("SIGINT, SIGTERM and SIGHUP are all ignored or caught in the test process");
        // Raised in a thread of its own while held back: pending there, not delivered. It is
        // then taken off the pending set with sigwait, so the thread's old mask can come back.
        let seen = std::thread::spawn(move || {
            let deferred = Deferred::start();
            assert_eq!(deferred.arrived(), None);
            raise(signal).unwrap();
            let seen = deferred.arrived();
            let mut only = SigSet::empty();
            only.add(signal);
            assert_eq!(only.wait().unwrap(), signal);
            assert_eq!(deferred.arrived(), None);
            seen
        })
        .join()
        .unwrap();
        assert_eq!(seen, Some(signal));
    }
}
