//! Retention: which archives `keep` keeps, and deleting the rest.
//!
//! The decision is a pure function ([`decide`]) of the archives' creation times and standings,
//! the target's `keep` and the current time, so it can be checked against any calendar. The
//! rules, per target, in UTC:
//!
//! - Only archives that verified ([`archives::is_verified`]) are counted. `last = N` keeps the
//!   newest N of them; `daily`, `weekly` (ISO weeks), `monthly` and `yearly = N` keep the newest
//!   archive of each of the N most recent days / weeks / months / years that have one.
//! - `max-age`: no rule keeps an archive older than this.
//! - The newest verified archive is always kept, whatever the rules and `max-age` say.
//! - Archives retention cannot account for are always kept, and reported: no receipt (or one
//!   that is unreadable, names another archive, or does not match the files on disk) and
//!   archives whose last verification failed. Deleting those is the operator's call.
//! - A never-verified archive with a good receipt is kept while it is newer than the newest
//!   verified one; otherwise it goes.
//!
//! Deleting an archive first renames its receipt to a deletion marker (`.vouch-deleting.`,
//! see [`crate::target::Target::delete`]), so that from then on it is no archive for `list`,
//! `status` or `verify`; then its data files (the archive or every part, only names of its own)
//! are removed, then the marker. A deletion that was interrupted is finished by the next prune, the
//! next run's retention, or the next run's preflight. Its record in the verification log goes
//! with it.

use crate::config::{Keep, Settings};
use crate::error::Error;
use crate::host::dirs::Dirs;
use crate::systemd::journal::{Entry, Event};
use crate::target::archives::{self, Archive, VerifyLog};
use crate::target::local;
use crate::target::Configured;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::{OffsetDateTime, UtcOffset};

/// How an archive stands as far as retention is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Its last verification passed: it counts towards `keep`.
    Verified,
    /// It has a good receipt and was never verified: not counted.
    Unverified,
    /// Its last verification failed (the detail): kept, the operator's call.
    Failed(String),
    /// Its receipt is missing, unreadable or does not match the files: kept, the operator's call.
    Unaccounted(String),
}

/// One archive as [`decide`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The archive's file name (orders archives created in the same second).
    pub name: String,
    /// When it was created, if known.
    pub created: Option<OffsetDateTime>,
    /// Its standing.
    pub standing: Standing,
    /// Whether its contents were proven: decrypted and checked entry by entry (by the run that
    /// wrote it, or by `vouch verify`), not only checked as ciphertext.
    pub proven: bool,
}

/// What retention does with one archive, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Keep it (else delete it).
    pub keep: bool,
    /// Why: every rule that keeps it, or the one reason it goes.
    pub reasons: Vec<String>,
}

impl Decision {
    /// `keep` or `delete`.
    pub fn action(&self) -> &'static str {
        if self.keep {
            "keep"
        } else {
            "delete"
        }
    }

    /// The reasons as one line.
    pub fn why(&self) -> String {
        self.reasons.join(", ")
    }
}

/// A period rule: how archives are grouped.
#[derive(Debug, Clone, Copy)]
enum Period {
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// The period's label (`2026-11-20`, `2026-W47`, `2026-11`, `2026`), which is also its key.
    fn label(self, t: OffsetDateTime) -> String {
        let t = t.to_offset(UtcOffset::UTC);
        match self {
            Period::Day => format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
            Period::Week => {
                let (year, week, _) = t.to_iso_week_date();
                format!("{year:04}-W{week:02}")
            }
            Period::Month => format!("{:04}-{:02}", t.year(), u8::from(t.month())),
            Period::Year => format!("{:04}", t.year()),
        }
    }
}

/// A duration as config text: `400d`, `36h`, `90m` or `30s`.
fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s > 0 && s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s > 0 && s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s > 0 && s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// The configured counting rules, as `keep.last=7, keep.daily=14`.
fn rules_text(keep: &Keep) -> String {
    let rules: Vec<String> = [
        ("last", keep.last),
        ("daily", keep.daily),
        ("weekly", keep.weekly),
        ("monthly", keep.monthly),
        ("yearly", keep.yearly),
    ]
    .iter()
    .filter_map(|(name, n)| n.map(|n| format!("keep.{name}={n}")))
    .collect();
    if rules.is_empty() {
        "no keep rule (only the newest verified archive is kept)".into()
    } else {
        format!("beyond {}", rules.join(", "))
    }
}

/// Decides, for each candidate (in the order given), whether to keep or delete it and why.
/// `now` only matters for `keep.max-age`.
pub fn decide(candidates: &[Candidate], keep: &Keep, now: OffsetDateTime) -> Vec<Decision> {
    let mut out: Vec<Decision> = candidates
        .iter()
        .map(|_| Decision {
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    let verified = verified_newest_first(candidates);
    let newest = verified.first().copied();
    keep_newest(&mut out, candidates, &verified);
    // A cutoff before the start of time is no cutoff.
    let cutoff = keep.max_age.and_then(|d| {
        now.checked_sub(time::Duration::seconds(
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        ))
    });
    let eligible: Vec<(usize, OffsetDateTime)> = verified
        .iter()
        .copied()
        .filter(|(_, t)| cutoff.is_none_or(|c| *t >= c))
        .collect();
    keep_by_rules(&mut out, &eligible, keep);
    for (i, c) in candidates.iter().enumerate() {
        let d = &mut out[i];
        if d.keep {
            continue;
        }
        let (keep_it, reason) = the_rest(c, newest, cutoff, keep);
        d.keep = keep_it;
        d.reasons.push(reason);
    }
    out
}

/// The verified candidates with a creation time, newest first; archives of the same second by
/// name, the later name first.
fn verified_newest_first(candidates: &[Candidate]) -> Vec<(usize, OffsetDateTime)> {
    let mut verified: Vec<(usize, OffsetDateTime)> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.standing == Standing::Verified)
        .filter_map(|(i, c)| c.created.map(|t| (i, t)))
        .collect();
    verified.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| candidates[b.0].name.cmp(&candidates[a.0].name))
    });
    verified
}

/// Keeps the newest verified archive, and the newest whose contents were proven: an archive
/// checked only as ciphertext (no identity at the time) counts as verified, but the newest
/// archive whose contents were proven is kept as well.
fn keep_newest(
    out: &mut [Decision],
    candidates: &[Candidate],
    verified: &[(usize, OffsetDateTime)],
) {
    let newest = verified.first().copied();
    if let Some((i, _)) = newest {
        out[i].keep = true;
        out[i].reasons.push("newest verified".into());
    }
    if let Some(&(i, _)) = verified.iter().find(|(i, _)| candidates[*i].proven) {
        if Some(i) != newest.map(|(n, _)| n) {
            out[i].keep = true;
            out[i].reasons.push("newest fully verified".into());
        }
    }
}

/// Keeps what `keep.last` and the period rules select among `eligible` (newest first).
fn keep_by_rules(out: &mut [Decision], eligible: &[(usize, OffsetDateTime)], keep: &Keep) {
    let last = keep.last.unwrap_or(0) as usize;
    for (n, &(i, _)) in eligible.iter().take(last).enumerate() {
        out[i].keep = true;
        out[i].reasons.push(format!("last {}/{last}", n + 1));
    }
    for (period, count) in [
        (Period::Day, keep.daily),
        (Period::Week, keep.weekly),
        (Period::Month, keep.monthly),
        (Period::Year, keep.yearly),
    ] {
        let count = count.unwrap_or(0) as usize;
        let mut seen: Vec<String> = Vec::new();
        for &(i, t) in eligible {
            let label = period.label(t);
            if seen.last() == Some(&label) {
                continue;
            }
            if seen.len() == count {
                break;
            }
            out[i].keep = true;
            out[i].reasons.push(format!("{} {label}", period.name()));
            seen.push(label);
        }
    }
}

/// Whether a candidate no rule kept is deleted, and why: only verified archives beyond the
/// rules and unverified ones older than the newest verified archive go.
fn the_rest(
    c: &Candidate,
    newest: Option<(usize, OffsetDateTime)>,
    cutoff: Option<OffsetDateTime>,
    keep: &Keep,
) -> (bool, String) {
    match (&c.standing, c.created) {
        (Standing::Unaccounted(problem), _) => (true, format!("{problem}: left for the operator")),
        (Standing::Failed(detail), _) => (
            true,
            format!("last verification failed ({detail}): left for the operator"),
        ),
        (_, None) => (
            true,
            "creation time unknown: not retention's to delete".into(),
        ),
        (Standing::Unverified, Some(t)) => match newest {
            Some((_, n)) if t <= n => (
                false,
                "never verified and older than the newest verified archive".into(),
            ),
            Some(_) => (
                true,
                "never verified, newer than the newest verified".into(),
            ),
            None => (true, "never verified, and no archive is".into()),
        },
        (Standing::Verified, Some(t)) => match cutoff {
            Some(c) if t < c => (
                false,
                format!(
                    "older than keep.max-age={}",
                    duration_text(keep.max_age.unwrap_or_default())
                ),
            ),
            _ => (false, rules_text(keep)),
        },
    }
}

/// Why the receipt cannot vouch for the archive, if it cannot: missing, unreadable, naming
/// another archive, a missing part, or a size on disk other than the receipt's.
pub fn receipt_problem(archive: &Archive) -> Option<String> {
    let Some(receipt) = &archive.receipt else {
        return Some(
            archive
                .receipt_problem
                .clone()
                .unwrap_or_else(|| "no receipt".into()),
        );
    };
    if let Some(p) = receipt
        .parts
        .iter()
        .find(|p| !local::is_part_name(&archive.name, p))
    {
        return Some(format!("the receipt names {p:?} as a part"));
    }
    let missing = archive.missing_files();
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        return Some(format!("missing {}", names.join(", ")));
    }
    let size = archive.size_on_disk();
    if size != receipt.archive_size {
        return Some(format!(
            "{size} bytes on disk, the receipt says {}",
            receipt.archive_size
        ));
    }
    None
}

/// An archive's standing from its receipt and the verification log.
pub fn standing(archive: &Archive, target: &str, log: &VerifyLog) -> Standing {
    if let Some(problem) = receipt_problem(archive) {
        return Standing::Unaccounted(problem);
    }
    match log.get(target, &archive.name) {
        Some(r) if !r.ok => {
            Standing::Failed(r.detail.clone().unwrap_or_else(|| "no detail".into()))
        }
        _ if archives::is_verified(archive, target, log) => Standing::Verified,
        _ => Standing::Unverified,
    }
}

/// Retention's plan for one target.
#[derive(Debug)]
pub struct Plan {
    /// The target's name.
    pub target: String,
    /// Its directory.
    pub dir: PathBuf,
    /// The target the archives are on.
    pub store: Box<dyn crate::target::Target>,
    /// Every archive on it, oldest first.
    pub archives: Vec<Planned>,
}

/// One archive in a [`Plan`].
#[derive(Debug)]
pub struct Planned {
    /// The archive.
    pub archive: Archive,
    /// How it stands.
    pub standing: Standing,
    /// What retention does with it.
    pub decision: Decision,
}

impl Plan {
    /// The archives to delete.
    pub fn deletions(&self) -> impl Iterator<Item = &Archive> {
        self.archives
            .iter()
            .filter(|p| !p.decision.keep)
            .map(|p| &p.archive)
    }
}

/// A target that cannot be read: missing (14), or anything else (36).
pub fn scan_error(target: &Configured, error: io::Error) -> Error {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Error::TargetMissing {
            target: target.name().to_owned(),
            path: target.location(),
        },
        _ => Error::Prune {
            target: target.name().to_owned(),
            path: target.location(),
            error,
        },
    }
}

/// Scans a target and decides about each of its archives, by the target's own `keep`.
pub fn plan(
    target: &Configured,
    dirs: &Dirs,
    name: &str,
    log: &VerifyLog,
    now: OffsetDateTime,
) -> Result<Plan, Error> {
    let store = target.open(dirs)?;
    let found = store
        .scan_own(name)
        .map_err(|error| scan_error(target, error))?;
    let candidates: Vec<Candidate> = found
        .iter()
        .map(|a| Candidate {
            name: a.name.clone(),
            created: a.created,
            standing: standing(a, target.name(), log),
            proven: archives::is_proven(a, target.name(), log),
        })
        .collect();
    let mut decisions = decide(&candidates, target.keep(), now);
    for (archive, decision) in found.iter().zip(decisions.iter_mut()) {
        if !decision.keep {
            keep_if_locked(&*store, archive, decision, now);
        }
    }
    let archives = found
        .into_iter()
        .zip(candidates)
        .zip(decisions)
        .map(|((archive, c), decision)| Planned {
            archive,
            standing: c.standing,
            decision,
        })
        .collect();
    Ok(Plan {
        target: target.name().to_owned(),
        dir: target.location(),
        store,
        archives,
    })
}

/// Keeps an archive retention would delete when its storage locks it (or cannot say).
fn keep_if_locked(
    store: &dyn crate::target::Target,
    archive: &Archive,
    decision: &mut Decision,
    now: OffsetDateTime,
) {
    let reason = match store.locked_until(archive) {
        Ok(Some(until)) if until > now => format!(
            "locked until {} (the storage refuses to delete it before then)",
            crate::run::rfc3339(until)
        ),
        Ok(_) => return,
        Err(e) => format!("its lock could not be read ({e}), so it is not deleted this time"),
    };
    *decision = Decision {
        keep: true,
        reasons: vec![reason],
    };
}

/// Deletes one archive of the target `target`: its receipt is renamed to the deletion marker
/// first (from then on it is no archive for any command), then its data files go, then the
/// marker ([`crate::target::Target::delete`]). Retention deletes only archives with a good
/// receipt; one without a receipt is refused. An interrupted deletion is finished by the next
/// prune, retention or run.
pub fn delete_archive(
    store: &dyn crate::target::Target,
    target: &str,
    archive: &Archive,
) -> Result<(), Error> {
    store.delete(archive).map_err(|(path, error)| Error::Prune {
        target: target.to_owned(),
        path,
        error,
    })
}

/// What applying one target's plan did.
#[derive(Debug, Default)]
pub struct Applied {
    /// The archives deleted.
    pub deleted: Vec<String>,
    /// The deletions that failed.
    pub failed: Vec<Error>,
}

/// Deletes what the plan says, records it in the verification log (not saved here), and logs
/// one `pruned` journal entry when anything went. Failures are returned, not logged.
pub fn apply(plan: &Plan, log: &mut VerifyLog) -> Applied {
    let mut applied = Applied::default();
    // Deletions an interrupted prune began are finished first.
    match plan.store.finish_deletions() {
        Ok(done) => {
            for name in done {
                log.remove(&plan.target, &name);
                applied.deleted.push(name);
            }
        }
        Err(error) => applied.failed.push(Error::Prune {
            target: plan.target.clone(),
            path: plan.dir.clone(),
            error,
        }),
    }
    for archive in plan.deletions() {
        match delete_archive(&*plan.store, &plan.target, archive) {
            Ok(()) => {
                log.remove(&plan.target, &archive.name);
                applied.deleted.push(archive.name.clone());
            }
            Err(e) => applied.failed.push(e),
        }
    }
    if !applied.deleted.is_empty() {
        Entry::event(
            Event::Pruned,
            format!(
                "pruned {} archive(s) on {}: {}",
                applied.deleted.len(),
                plan.target,
                applied.deleted.join(", ")
            ),
        )
        .field("VOUCH_TARGET", &plan.target)
        .field("VOUCH_ARCHIVE", applied.deleted.join(","))
        .emit();
    }
    applied
}

/// Logs a warning for every archive kept only because retention cannot account for it.
fn report_unaccounted(plan: &Plan) {
    for p in &plan.archives {
        let a = &p.archive;
        let problem = match &p.standing {
            Standing::Failed(detail) => format!("its last verification failed: {detail}"),
            Standing::Unaccounted(problem) => problem.clone(),
            Standing::Verified | Standing::Unverified => continue,
        };
        Entry::error(format!(
            "target {}: keeping {} ({problem}): retention never deletes an archive it cannot account for; look at it with `vouch list` and delete it by hand if it should go",
            plan.target, a.name
        ))
        .level(log::Level::Warn)
        .field("VOUCH_TARGET", &plan.target)
        .field("VOUCH_ARCHIVE", &a.name)
        .emit();
    }
}

/// Saves the verification log after deletions; a failure only leaves stale records behind.
pub fn save_log(log: &VerifyLog, dirs: &Dirs) {
    if let Err(e) = log.save(&dirs.state) {
        log::warn!(
            "cannot update {}: {e}; records of pruned archives stay in it",
            dirs.state.join(archives::VERIFY_LOG).display()
        );
    }
}

/// The verification log retention decides by. A damaged one stops retention (exit 36): it may
/// have recorded that an archive failed its verification, and without that record the damaged
/// archive would count as good and a good one could be deleted in its place.
pub fn load_log(state: &Path) -> Result<VerifyLog, Error> {
    VerifyLog::load_strict(state).map_err(|error| Error::PruneRefused {
        path: state.join(archives::VERIFY_LOG),
        error,
    })
}

/// Applies retention to every target after a successful run (the run still holds the lock).
/// An archive that cannot be deleted is [`Error::Prune`] (exit 36); the new archive is good
/// either way, and every other deletion still happens.
pub fn after_run(settings: &Settings, dirs: &Dirs) -> Result<(), Error> {
    let now = OffsetDateTime::now_utc();
    let mut log = load_log(&dirs.state)?;
    let mut errors = Vec::new();
    let mut deleted_any = false;
    for t in crate::target::configured(settings) {
        crate::systemd::sdnotify::status(&format!("pruning {}", t.name()));
        let plan = match plan(&t, dirs, &settings.backup.name, &log, now) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        report_unaccounted(&plan);
        let applied = apply(&plan, &mut log);
        deleted_any |= !applied.deleted.is_empty();
        errors.extend(applied.failed);
    }
    if deleted_any {
        save_log(&log, dirs);
    }
    first_of(errors)
}

/// Logs every failure but the first, which is returned for the command to report (so each
/// failure is logged once).
pub fn first_of(errors: Vec<Error>) -> Result<(), Error> {
    let mut errors = errors.into_iter();
    let Some(first) = errors.next() else {
        return Ok(());
    };
    for e in errors {
        Entry::error(format!("{}: {e}", e.exit_code().name()))
            .field_opt("VOUCH_TARGET", e.target())
            .field_opt("VOUCH_HINT", e.hint())
            .emit();
    }
    Err(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use time::macros::datetime;

    const DAY: i64 = 86_400;

    fn at(t: OffsetDateTime, standing: Standing) -> Candidate {
        Candidate {
            name: format!("web1-{}.tar.gz.age", crate::run::rfc3339(t)),
            created: Some(t),
            proven: standing == Standing::Verified,
            standing,
        }
    }

    fn day(t: OffsetDateTime) -> String {
        Period::Day.label(t)
    }

    /// The days (`YYYY-MM-DD`) of the archives kept.
    fn kept_days(c: &[Candidate], d: &[Decision]) -> BTreeSet<String> {
        c.iter()
            .zip(d)
            .filter(|(_, d)| d.keep)
            .map(|(c, _)| day(c.created.unwrap()))
            .collect()
    }

    fn set(days: &[&str]) -> BTreeSet<String> {
        days.iter().map(|d| d.to_string()).collect()
    }

    fn keep(last: u32, daily: u32, weekly: u32, monthly: u32, yearly: u32) -> Keep {
        let some = |n: u32| (n > 0).then_some(n);
        Keep {
            last: some(last),
            daily: some(daily),
            weekly: some(weekly),
            monthly: some(monthly),
            yearly: some(yearly),
            max_age: None,
        }
    }

    #[test]
    fn four_hundred_days_keep_exactly_the_grandfather_father_son_set() {
        // One archive a day at 03:00, the newest on Saturday 2026-11-21; oldest first, as
        // `scan` returns them.
        let now = datetime!(2026-11-21 04:00 UTC);
        let newest = datetime!(2026-11-21 03:00 UTC);
        let candidates: Vec<Candidate> = (0..400i64)
            .rev()
            .map(|back| {
                let standing = match back {
                    1 | 2 | 100 => Standing::Unverified,
                    5 => Standing::Failed("entry etc/passwd differs".into()),
                    200 => Standing::Unaccounted("no receipt".into()),
                    _ => Standing::Verified,
                };
                at(newest - time::Duration::seconds(back * DAY), standing)
            })
            .collect();
        let d = decide(&candidates, &keep(3, 7, 4, 6, 2), now);
        let expected = set(&[
            // last 3 verified (11-20 and 11-19 never verified, so not counted), and the
            // newest of the 7 most recent days with a verified archive.
            "2026-11-21",
            "2026-11-18",
            "2026-11-17",
            "2026-11-15",
            "2026-11-14",
            "2026-11-13",
            "2026-11-12",
            // weekly: W47 (11-21), W46 (11-15, already daily), W45, W44.
            "2026-11-08",
            "2026-11-01",
            // monthly: 2026-11 (11-21), then the last day of the five months before.
            "2026-10-31",
            "2026-09-30",
            "2026-08-31",
            "2026-07-31",
            "2026-06-30",
            // yearly: 2026 (11-21), 2025.
            "2025-12-31",
            // failed and unaccounted: the operator's call.
            "2026-11-16",
            day(newest - time::Duration::seconds(200 * DAY)).as_str(),
        ]);
        assert_eq!(kept_days(&candidates, &d), expected);
        let reasons = |date: &str| {
            let i = candidates
                .iter()
                .position(|c| day(c.created.unwrap()) == date)
                .unwrap();
            d[i].why()
        };
        assert_eq!(
            reasons("2026-11-21"),
            "newest verified, last 1/3, daily 2026-11-21, weekly 2026-W47, monthly 2026-11, yearly 2026"
        );
        assert_eq!(reasons("2026-11-15"), "daily 2026-11-15, weekly 2026-W46");
        assert_eq!(reasons("2025-12-31"), "yearly 2025");
        assert!(reasons("2026-11-16").contains("last verification failed"));
        assert!(reasons("2026-11-20").contains("never verified"));
        assert_eq!(
            reasons("2026-11-11"),
            "beyond keep.last=3, keep.daily=7, keep.weekly=4, keep.monthly=6, keep.yearly=2"
        );
        // The oldest archives are deleted too: nothing before 2025-12-31 survives but the
        // unaccounted one.
        assert_eq!(d.iter().filter(|d| d.keep).count(), expected.len());
    }

    #[test]
    fn never_verified_archives_fill_no_slot_and_go_once_a_newer_one_verified() {
        let t0 = datetime!(2026-03-01 03:00 UTC);
        let c: Vec<Candidate> = (0..6)
            .map(|i| {
                let s = if i % 2 == 0 {
                    Standing::Unverified
                } else {
                    Standing::Verified
                };
                at(t0 + time::Duration::seconds(i * DAY), s)
            })
            .collect();
        let d = decide(&c, &keep(2, 0, 0, 0, 0), t0);
        // Verified: days 1, 3, 5. last 2 -> 5 and 3; unverified 0, 2, 4 are older than 5.
        let kept: Vec<bool> = d.iter().map(|d| d.keep).collect();
        assert_eq!(kept, [false, false, false, true, false, true]);
        // An unverified archive newer than every verified one stays.
        let mut c2 = c.clone();
        c2.push(at(
            t0 + time::Duration::seconds(6 * DAY),
            Standing::Unverified,
        ));
        let d2 = decide(&c2, &keep(2, 0, 0, 0, 0), t0);
        assert!(d2[6].keep, "{:?}", d2[6]);
        // With nothing verified at all, nothing is deleted.
        let none: Vec<Candidate> = c
            .iter()
            .map(|c| Candidate {
                standing: Standing::Unverified,
                ..c.clone()
            })
            .collect();
        assert!(decide(&none, &keep(1, 0, 0, 0, 0), t0)
            .iter()
            .all(|d| d.keep));
    }

    #[test]
    fn max_age_limits_every_rule() {
        let now = datetime!(2026-06-30 12:00 UTC);
        let c: Vec<Candidate> = (0..60)
            .rev()
            .map(|back| {
                at(
                    now - time::Duration::seconds(back * DAY + 3600),
                    Standing::Verified,
                )
            })
            .collect();
        let mut k = keep(20, 30, 10, 12, 5);
        k.max_age = Some(Duration::from_secs(10 * 86_400));
        let d = decide(&c, &k, now);
        for (c, d) in c.iter().zip(&d) {
            let age = now - c.created.unwrap();
            assert_eq!(d.keep, age <= time::Duration::days(10), "{} {d:?}", c.name);
            if !d.keep {
                assert_eq!(d.why(), "older than keep.max-age=10d");
            }
        }
        assert_eq!(d.iter().filter(|d| d.keep).count(), 10);
    }

    #[test]
    fn the_newest_verified_archive_survives_when_everything_is_old() {
        let now = datetime!(2026-06-30 12:00 UTC);
        let old = now - time::Duration::days(100);
        let c = vec![
            at(old - time::Duration::days(2), Standing::Verified),
            at(old - time::Duration::days(1), Standing::Verified),
            at(old, Standing::Verified),
            at(old + time::Duration::hours(1), Standing::Unverified),
        ];
        let mut k = keep(7, 7, 0, 0, 0);
        k.max_age = Some(Duration::from_secs(7 * 86_400));
        let d = decide(&c, &k, now);
        let kept: Vec<bool> = d.iter().map(|d| d.keep).collect();
        assert_eq!(kept, [false, false, true, true]);
        assert_eq!(d[2].why(), "newest verified");
        // No counting rule at all still keeps it.
        let d = decide(&c, &Keep::default(), now);
        assert_eq!(d.iter().filter(|d| d.keep).count(), 2);
        assert!(d[2].keep);
    }

    #[test]
    fn the_newest_archive_of_a_day_stands_for_it() {
        let base = datetime!(2026-05-10 00:00 UTC);
        let c = vec![
            at(base + time::Duration::hours(1), Standing::Verified),
            at(base + time::Duration::hours(13), Standing::Verified),
            // Two archives of the same second: the later name wins.
            Candidate {
                name: "a-20260510T230000Z.tar.gz.age".into(),
                ..at(base + time::Duration::hours(23), Standing::Verified)
            },
            Candidate {
                name: "b-20260510T230000Z.tar.gz.age".into(),
                ..at(base + time::Duration::hours(23), Standing::Verified)
            },
            at(base + time::Duration::hours(25), Standing::Verified),
            // 23:30 on the 11th is still the 11th in UTC.
            at(
                base + time::Duration::minutes(47 * 60 + 30),
                Standing::Verified,
            ),
        ];
        let d = decide(&c, &keep(0, 2, 0, 0, 0), base);
        let kept: Vec<bool> = d.iter().map(|d| d.keep).collect();
        assert_eq!(kept, [false, false, false, true, false, true]);
        assert_eq!(d[3].why(), "daily 2026-05-10");
        assert_eq!(d[5].why(), "newest verified, daily 2026-05-11");
    }

    #[test]
    fn iso_weeks_run_across_the_new_year() {
        let c = vec![
            at(datetime!(2020-12-28 03:00 UTC), Standing::Verified), // Mon, 2020-W53
            at(datetime!(2020-12-31 03:00 UTC), Standing::Verified), // Thu, 2020-W53
            at(datetime!(2021-01-01 03:00 UTC), Standing::Verified), // Fri, 2020-W53
            at(datetime!(2021-01-03 03:00 UTC), Standing::Verified), // Sun, 2020-W53
            at(datetime!(2021-01-04 03:00 UTC), Standing::Verified), // Mon, 2021-W01
        ];
        let d = decide(&c, &keep(0, 0, 2, 0, 0), datetime!(2021-01-05 00:00 UTC));
        let kept: Vec<bool> = d.iter().map(|d| d.keep).collect();
        assert_eq!(kept, [false, false, false, true, true]);
        assert_eq!(d[3].why(), "weekly 2020-W53");
        assert_eq!(d[4].why(), "newest verified, weekly 2021-W01");
        // 2024-12-30 is a Monday in ISO 2025-W01; the Sunday before is 2024-W52.
        assert_eq!(
            Period::Week.label(datetime!(2024-12-30 00:00 UTC)),
            "2025-W01"
        );
        assert_eq!(
            Period::Week.label(datetime!(2024-12-29 23:59 UTC)),
            "2024-W52"
        );
        // Yearly and monthly go by the calendar year, not the ISO one.
        assert_eq!(Period::Year.label(datetime!(2024-12-30 00:00 UTC)), "2024");
        assert_eq!(
            Period::Month.label(datetime!(2024-12-30 00:00 UTC)),
            "2024-12"
        );
    }

    #[test]
    fn periods_without_archives_take_no_slot() {
        // Archives only in January, April and May: monthly = 3 keeps one in each.
        let c = vec![
            at(datetime!(2026-01-05 03:00 UTC), Standing::Verified),
            at(datetime!(2026-01-20 03:00 UTC), Standing::Verified),
            at(datetime!(2026-04-02 03:00 UTC), Standing::Verified),
            at(datetime!(2026-05-01 03:00 UTC), Standing::Verified),
        ];
        let d = decide(&c, &keep(0, 0, 0, 3, 0), datetime!(2026-05-02 00:00 UTC));
        let kept: Vec<bool> = d.iter().map(|d| d.keep).collect();
        assert_eq!(kept, [false, true, true, true]);
    }

    #[test]
    fn the_newest_fully_verified_archive_survives_ciphertext_only_ones() {
        let now = datetime!(2026-05-10 00:00 UTC);
        let mut c: Vec<Candidate> = (0..4)
            .map(|n| at(now - time::Duration::days(4 - n), Standing::Verified))
            .collect();
        // The two newest were checked as ciphertext only.
        c[2].proven = false;
        c[3].proven = false;
        let d = decide(&c, &keep(1, 0, 0, 0, 0), now);
        let kept: Vec<bool> = d.iter().map(|d| d.keep).collect();
        assert_eq!(kept, [false, true, false, true]);
        assert!(d[1].reasons.contains(&"newest fully verified".to_owned()));
        // Once a newer archive is proven, the older proven one is no longer special.
        c[3].proven = true;
        let kept: Vec<bool> = decide(&c, &keep(1, 0, 0, 0, 0), now)
            .iter()
            .map(|d| d.keep)
            .collect();
        assert_eq!(kept, [false, false, false, true]);
    }

    #[test]
    fn a_max_age_beyond_the_start_of_time_is_no_limit() {
        let now = datetime!(2026-05-10 00:00 UTC);
        let c = vec![at(now - time::Duration::days(3), Standing::Verified)];
        let k = Keep {
            last: Some(1),
            max_age: Some(std::time::Duration::from_secs(u64::MAX / 2)),
            ..Keep::default()
        };
        assert!(decide(&c, &k, now)[0].keep);
    }

    #[test]
    fn archives_of_unknown_age_or_standing_are_never_deleted() {
        let now = datetime!(2026-05-02 00:00 UTC);
        let c = vec![
            Candidate {
                name: "odd.tar.gz.age".into(),
                created: None,
                standing: Standing::Verified,
                proven: true,
            },
            at(
                datetime!(2020-01-01 00:00 UTC),
                Standing::Unaccounted("no receipt".into()),
            ),
            at(
                datetime!(2020-01-02 00:00 UTC),
                Standing::Failed("bad".into()),
            ),
            at(datetime!(2026-05-01 00:00 UTC), Standing::Verified),
        ];
        let mut k = keep(1, 0, 0, 0, 0);
        k.max_age = Some(Duration::from_secs(86_400));
        let d = decide(&c, &k, now);
        assert!(d.iter().all(|d| d.keep), "{d:?}");
        assert!(d[1].why().starts_with("no receipt"));
    }
}
