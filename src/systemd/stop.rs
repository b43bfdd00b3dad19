//! Stopping a run cleanly: `systemctl stop`, a start timeout, Ctrl-C or a closed terminal.
//!
//! `vouch run` holds SIGINT, SIGTERM and SIGHUP back in every thread (the mask is set before
//! any thread is spawned, so all of them inherit it) and leaves one thread waiting for them
//! with `sigwait(2)`. When one arrives, that thread waits for a commit in progress to end (the
//! commit section takes [`commit_section`]), removes this run's temporary files from every
//! target (`.vouch-tmp.RUN_ID.*`: nothing under a final name and nothing of another run),
//! records the failure (`last-run.json`, the metrics textfile, one `run-failed` journal entry
//! whose exit name is the signal's and whose code is the one a shell reports, 128 + the signal
//! number) and then lets the signal through, so the process dies by it and systemd sees
//! exactly that.
//!
//! Recording is one section ([`Watch::record`]) that the waiting thread takes first and never
//! gives back: a run that reaches its own record after a stop began waits there until the
//! process dies, so the two never both write, and a run that recorded a stop never exits 0.
//! Once the run's own outcome is recorded, a late signal only ends the process: it must not
//! replace a result that is already written. A temporary file created in
//! the instant between the last sweep and the process's death is left for the next run's
//! preflight, which removes leftovers under the lock as it always has.

use crate::config::Settings;
use crate::host::dirs::Dirs;
use crate::run::{rfc3339, LastRun};
use crate::systemd::journal::{self, Entry, Event};
use crate::systemd::signals;
use nix::sys::signal::{SigSet, Signal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use time::OffsetDateTime;

/// Held while archives get their final names, so a stop never cuts a commit in half.
static COMMIT: Mutex<()> = Mutex::new(());

/// True while a thread waits for the interrupting signals (a stop can then begin).
static WATCHING: AtomicBool = AtomicBool::new(false);

/// The signals that thread waits for (those held back; an ignored or already blocked one is
/// not among them and never begins a stop).
static HELD: OnceLock<SigSet> = OnceLock::new();

/// True once that thread has taken a signal: the stop has begun.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether a stop has begun or a signal that begins one is on its way to the waiting thread.
/// The run asks before it commits and before it records its outcome: a signal that arrived
/// while the run was busy must win even when the waiting thread has not been scheduled yet.
fn stop_begun() -> bool {
    WATCHING.load(Ordering::SeqCst)
        && (STOPPING.load(Ordering::SeqCst) || HELD.get().is_some_and(signals::interrupt_pending))
}

/// When a stop has begun, waits for the waiting thread to end the process (it removes the
/// temporary files and records the stop); otherwise returns at once.
fn yield_to_a_stop() {
    while stop_begun() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Held while the outcome is recorded; true once the run's own outcome is.
static RECORD: Mutex<bool> = Mutex::new(false);

fn record_section() -> MutexGuard<'static, bool> {
    RECORD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the commit section; a stop that arrives meanwhile waits until it is dropped. A stop
/// that began before is let through first (the run then never commits).
pub fn commit_section() -> MutexGuard<'static, ()> {
    yield_to_a_stop();
    commit_lock()
}

fn commit_lock() -> MutexGuard<'static, ()> {
    COMMIT.lock().unwrap_or_else(|e| e.into_inner())
}

/// The watch over one run's interrupting signals.
#[derive(Debug)]
pub struct Watch {
    _private: (),
}

impl Watch {
    /// Holds the interrupting signals back in this thread (and so in every thread it spawns
    /// from now on) and starts the thread that waits for them. Call before any other thread
    /// of the run is started.
    pub fn start(settings: &Settings, dirs: &Dirs) -> Watch {
        let held = signals::hold_interrupts();
        if held.iter().next().is_some() {
            let context = Context {
                settings: settings.clone(),
                dirs: dirs.clone(),
            };
            let _ = HELD.set(held);
            let spawned = std::thread::Builder::new()
                .name("vouch-stop".into())
                .spawn(move || context.wait(held));
            WATCHING.store(spawned.is_ok(), Ordering::SeqCst);
            if let Err(e) = spawned {
                log::warn!(
                    "cannot watch for SIGTERM (a stopped run will leave its temporary files): {e}"
                );
            }
        }
        Watch { _private: () }
    }

    /// Records the run's outcome with `f`, unless a stop has begun (then this waits for the
    /// process to die by the signal); a signal after this only ends the process.
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        yield_to_a_stop();
        let mut recorded = record_section();
        let out = f();
        *recorded = true;
        out
    }
}

/// What the waiting thread needs to clean up and record.
struct Context {
    settings: Settings,
    dirs: Dirs,
}

impl Context {
    fn wait(self, held: nix::sys::signal::SigSet) {
        let Ok(signal) = held.wait() else {
            WATCHING.store(false, Ordering::SeqCst);
            return;
        };
        STOPPING.store(true, Ordering::SeqCst);
        // Never released: the run must not record or end on its own after this.
        let recorded = record_section();
        if !*recorded {
            let _commit = commit_lock();
            let removed = self.sweep();
            self.record(signal, removed);
        }
        signals::die_by(signal);
    }

    /// Removes this run's temporary files from every target until a pass finds none.
    fn sweep(&self) -> usize {
        let stores: Vec<_> = self
            .settings
            .targets
            .iter()
            .map(crate::target::open)
            .collect();
        let mut total = 0;
        for _ in 0..10 {
            let removed: usize = stores
                .iter()
                .map(|s| s.remove_temporaries(journal::run_id()))
                .sum();
            total += removed;
            if removed == 0 {
                break;
            }
        }
        total
    }

    fn record(&self, signal: Signal, removed: usize) {
        let code = 128 + signal as i32;
        Entry::event(
            Event::RunFailed,
            format!(
                "{}: the run was stopped before it finished; {removed} temporary file(s) removed, no archive of this run was left half-written",
                signal.as_str()
            ),
        )
        .field("VOUCH_EXIT_CODE", code)
        .field("VOUCH_EXIT_NAME", signal.as_str())
        .field("VOUCH_HINT", hint(signal))
        .emit();
        let last = LastRun {
            run_id: journal::run_id().into(),
            finished: rfc3339(OffsetDateTime::now_utc()),
            exit_code: code as u8,
            exit_name: signal.as_str().into(),
            archive: None,
            tar_bytes: LastRun::load(&self.dirs.state).and_then(|l| l.tar_bytes),
            committed_targets: Vec::new(),
            duration_seconds: None,
        };
        if let Err(e) = last.save(&self.dirs.state) {
            log::warn!(
                "cannot record the stopped run in {}: {e}",
                self.dirs.state.display()
            );
        }
        crate::report::metrics::write(&self.settings, &self.dirs);
    }
}

/// The fix for a run stopped by `signal`.
fn hint(signal: Signal) -> &'static str {
    match signal {
        Signal::SIGTERM => "Something stopped the run (systemctl stop, a shutdown, or TimeoutStartSec= in vouch.service); if it was the timeout, see what stalled with journalctl -u vouch.service and raise TimeoutStartSec=, then systemctl start vouch.service",
        Signal::SIGHUP => "The terminal that ran vouch closed; run backups from vouch.service (systemctl start vouch.service) or under nohup",
        _ => "The run was interrupted (Ctrl-C); start it again with systemctl start vouch.service",
    }
}
