//! Health: the size of a new archive against recent ones, and the verdict `status` reports.
//!
//! Everything here reads receipts, the state directory and the target filesystems; nothing is
//! decrypted, so `vouch status` is cheap enough to run every minute from a monitoring agent.
//!
//! **Size.** An archive's size is compared with the median of the (at most [`RECENT`]) archives
//! of the same backup name written before it, taken from their receipts on every target. With
//! fewer than [`MIN_HISTORY`] earlier archives there is no verdict. The comparison is integer
//! arithmetic in `u128`, so it is exact at any size: the archive is an anomaly when
//! `|size - median| * 100 > median * tolerance`. Exactly at the tolerance is not an anomaly; a
//! median of zero makes every non-empty archive one.
//!
//! **Verdict.** Each check that finds something adds a [`Reason`] at its level; the overall
//! [`Health`] is the worst of them, `healthy` when there are none. `unknown` is reserved for
//! when vouch cannot judge at all: no usable config, or no record of any run and no archive on
//! any target (vouch never completed a run here).
//!
//! **Units.** Besides `last-run.json`, which only a vouch that ran can write, `status` reads
//! how the units' last starts ended: the `vouch.service.result` and
//! `vouch-verify.service.result` files their `ExecStopPost=` writes with the shell (so they
//! exist even when the vouch binary could not be started), `last-failure.json` from
//! `vouch notify-failure`, and `systemctl show` when systemd can be asked. The newest of them
//! per unit counts; a failure that no later run superseded and that the other checks do not
//! already report is critical.

use crate::config::{Settings, Target};
use crate::exit::Health;
use crate::host::dirs::Dirs;
use crate::pipeline::crypt::{self, Keys};
use crate::report::notify::NotifyRecord;
use crate::run::{self, LastRun};
use crate::systemd::sdnotify::human_bytes;
use crate::target::archives::{self, Archive, VerifyLog, VerifyRecord};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;

/// How many earlier archives the median is taken over, at most.
pub const RECENT: usize = 10;

/// How many earlier archives a size verdict needs, at least.
pub const MIN_HISTORY: usize = 3;

/// How long a target may go without a successful `vouch verify`: the weekly
/// `vouch-verify.timer` plus a day of slack.
pub const VERIFY_MAX_AGE: Duration = Duration::from_secs(8 * 86_400);

/// A size outside the tolerance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeAnomaly {
    /// The new archive's size.
    pub size: u64,
    /// The median of recent archives.
    pub median: u64,
    /// The tolerance in percent.
    pub tolerance: u32,
}

/// The median of `sizes`; for an even count, the mean of the two middle values rounded down.
pub fn median(sizes: &[u64]) -> Option<u64> {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => {
            let sum = u128::from(sorted[n / 2 - 1]) + u128::from(sorted[n / 2]);
            // The mean of two u64 values always fits in a u64.
            Some((sum / 2) as u64)
        }
    }
}

/// Whether `size` differs from `median` by more than `tolerance` percent of the median.
pub fn outside_tolerance(size: u64, median: u64, tolerance: u32) -> bool {
    let diff = u128::from(size.abs_diff(median));
    diff * 100 > u128::from(median) * u128::from(tolerance)
}

/// The verdict on `size` given the sizes of earlier archives, oldest first: only the last
/// [`RECENT`] count, and fewer than [`MIN_HISTORY`] give no verdict.
pub fn judge(size: u64, earlier: &[u64], tolerance: u32) -> Option<SizeAnomaly> {
    if earlier.len() < MIN_HISTORY {
        return None;
    }
    let recent = &earlier[earlier.len().saturating_sub(RECENT)..];
    let median = median(recent)?;
    outside_tolerance(size, median, tolerance).then_some(SizeAnomaly {
        size,
        median,
        tolerance,
    })
}

/// Compares a new archive's size with the recent archives on the targets: the receipts of
/// the archives of the same backup name written before it, on any target.
pub fn size_anomaly(settings: &Settings, archive: &str, size: u64) -> Option<SizeAnomaly> {
    let mut earlier: BTreeMap<String, u64> = BTreeMap::new();
    for target in &settings.targets {
        let store = crate::target::open(target);
        for a in store.scan_own(&settings.backup.name).unwrap_or_default() {
            if a.name.as_str() >= archive {
                continue;
            }
            if let Some(r) = &a.receipt {
                earlier.insert(a.name.clone(), r.archive_size);
            }
        }
    }
    let sizes: Vec<u64> = earlier.into_values().collect();
    judge(size, &sizes, settings.health.size_tolerance)
}

/// The worst level among `levels`; `healthy` when there are none.
pub fn worst(levels: impl IntoIterator<Item = Health>) -> Health {
    levels.into_iter().max().unwrap_or(Health::Healthy)
}

fn health_name<S: Serializer>(h: &Health, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.name())
}

/// One finding: what is wrong and what to do, in one plain sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Reason {
    /// `warning`, `critical` or `unknown`.
    #[serde(serialize_with = "health_name")]
    pub level: Health,
    /// The target it is about, if any.
    pub target: Option<String>,
    /// Which check found it (`age`, `last-run`, `required`, `size`, `space`, `identity`,
    /// `verify`, `notify`, `archives`, `config`, `state`, `usage`, `unit`).
    pub check: &'static str,
    /// The sentence.
    pub message: String,
}

/// What `status` knows about one archive, from its receipt and the verification log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ArchiveInfo {
    /// File name.
    pub archive: String,
    /// RFC 3339 creation time.
    pub created: Option<String>,
    /// Seconds since creation.
    pub age_seconds: Option<i64>,
    /// Encrypted size in bytes (the receipt's, else the files on disk).
    pub size: u64,
    /// Regular files archived, from the receipt.
    pub files: Option<u64>,
    /// Whether it counts as verified.
    pub verified: bool,
    /// RFC 3339 time of its last successful verification.
    pub verified_at: Option<String>,
    /// The run's read-back: `full` or `ciphertext-only`.
    pub verification: Option<String>,
    /// Required paths the receipt records as missing or empty.
    pub required_missing: Vec<String>,
    /// The database dumps it holds, from the receipt.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dumps: Vec<crate::target::receipt::ReceiptDump>,
}

/// One `vouch verify` result on a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VerifyInfo {
    /// The archive verified.
    pub archive: String,
    /// RFC 3339 time.
    pub at: String,
    /// Whether it passed.
    pub ok: bool,
    /// Whether files were also restored and compared.
    pub restore_test: bool,
    /// The first difference, when it failed.
    pub detail: Option<String>,
}

/// The state of one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TargetReport {
    /// `[[target]] name`.
    pub name: String,
    /// Its directory.
    pub path: String,
    /// The worst level of the reasons about this target (and of those about every target).
    #[serde(serialize_with = "health_name")]
    pub status: Health,
    /// How many archives of this backup name it holds.
    pub archives: usize,
    /// The newest archive, verified or not.
    pub latest: Option<ArchiveInfo>,
    /// The newest verified archive.
    pub latest_verified: Option<ArchiveInfo>,
    /// The median size of up to 10 archives before the newest.
    pub median_size: Option<u64>,
    /// Free bytes for vouch on the target's filesystem.
    pub free_bytes: Option<u64>,
    /// The expected size of the next archive (the newest one's plus a fifth).
    pub next_archive_bytes: Option<u64>,
    /// The most recent `vouch verify` on this target.
    pub last_verify: Option<VerifyInfo>,
    /// The most recent restore test (`vouch verify --restore-to`) on this target.
    pub last_restore_test: Option<VerifyInfo>,
}

impl TargetReport {
    /// A target with nothing found yet.
    pub fn new(name: &str, path: &str) -> TargetReport {
        TargetReport {
            name: name.into(),
            path: path.into(),
            status: Health::Healthy,
            archives: 0,
            latest: None,
            latest_verified: None,
            median_size: None,
            free_bytes: None,
            next_archive_bytes: None,
            last_verify: None,
            last_restore_test: None,
        }
    }
}

/// Everything `status` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    /// The overall verdict: the worst reason's level.
    #[serde(serialize_with = "health_name")]
    pub status: Health,
    /// Its exit code.
    pub code: u8,
    /// RFC 3339 time of the check.
    pub checked_at: String,
    /// The config file.
    pub config: String,
    /// What needs attention, worst first.
    pub reasons: Vec<Reason>,
    /// The last run's record.
    pub last_run: Option<LastRun>,
    /// Per target.
    pub targets: Vec<TargetReport>,
    /// Per S3 target, from the state directory (absent without S3 targets).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<RemoteReport>,
}

/// What `status` knows about one S3 target, offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RemoteReport {
    /// The target's name.
    pub name: String,
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// The last copy a run recorded, if any.
    pub last_copy: Option<crate::target::s3::last::Copy>,
    /// What the bucket itself showed (`status --live` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveRemote>,
}

/// One S3 target as `status --live` found it in its bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LiveRemote {
    /// Why the bucket could not be listed, if it could not.
    pub error: Option<String>,
    /// This backup's archives there with a usable receipt.
    pub archives: usize,
    /// The newest of them.
    pub newest: Option<String>,
    /// Its creation time (RFC 3339).
    pub newest_created: Option<String>,
}

impl Report {
    /// A report that cannot judge: `unknown`, with one reason.
    pub fn unknown(config: &Path, check: &'static str, message: String) -> Report {
        Report::finish(
            config,
            OffsetDateTime::now_utc(),
            vec![Reason {
                level: Health::Unknown,
                target: None,
                check,
                message,
            }],
            None,
            Vec::new(),
        )
    }

    fn finish(
        config: &Path,
        now: OffsetDateTime,
        mut reasons: Vec<Reason>,
        last_run: Option<LastRun>,
        mut targets: Vec<TargetReport>,
    ) -> Report {
        reasons.sort_by_key(|r| std::cmp::Reverse(r.level));
        let status = worst(reasons.iter().map(|r| r.level));
        let general = worst(
            reasons
                .iter()
                .filter(|r| r.target.is_none())
                .map(|r| r.level),
        );
        for t in &mut targets {
            t.status = worst(
                reasons
                    .iter()
                    .filter(|r| r.target.as_deref() == Some(t.name.as_str()))
                    .map(|r| r.level)
                    .chain([general]),
            );
        }
        Report {
            status,
            code: status.code(),
            checked_at: run::rfc3339(now),
            config: config.display().to_string(),
            reasons,
            last_run,
            targets,
            remotes: Vec::new(),
        }
    }
}

/// A configured duration in its largest whole unit: `26h`, `8d`, `90m`, `1s`.
pub fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// A rough age: `45s`, `12 minutes`, `5 hours`, `3 days`.
pub fn age_text(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{} minutes", s / 60),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

fn info(archive: &Archive, target: &str, log: &VerifyLog, now: OffsetDateTime) -> ArchiveInfo {
    let receipt = archive.receipt.as_ref();
    ArchiveInfo {
        archive: archive.name.clone(),
        created: archive.created.map(run::rfc3339),
        age_seconds: archive.created.map(|c| (now - c).whole_seconds()),
        size: receipt
            .map(|r| r.archive_size)
            .unwrap_or_else(|| archive.size_on_disk()),
        files: receipt.map(|r| r.files),
        verified: archives::is_verified(archive, target, log),
        verified_at: archives::verified_at(archive, target, log),
        verification: receipt.map(|r| r.verification.clone()),
        required_missing: receipt
            .map(|r| {
                r.required
                    .iter()
                    .filter(|q| !q.present)
                    .map(|q| q.path.clone())
                    .collect()
            })
            .unwrap_or_default(),
        dumps: receipt.map(|r| r.dumps.clone()).unwrap_or_default(),
    }
}

fn verify_info(archive: &str, r: &VerifyRecord) -> VerifyInfo {
    VerifyInfo {
        archive: archive.to_owned(),
        at: r.verified_at.clone(),
        ok: r.ok,
        restore_test: r.restore_test,
        detail: r.detail.clone(),
    }
}

struct Checker<'a> {
    now: OffsetDateTime,
    settings: &'a Settings,
    reasons: Vec<Reason>,
    /// What `status --live` found in each S3 target's bucket, by target.
    live: BTreeMap<String, LiveRemote>,
}

impl Checker<'_> {
    fn add(&mut self, level: Health, target: Option<&str>, check: &'static str, message: String) {
        self.reasons.push(Reason {
            level,
            target: target.map(str::to_owned),
            check,
            message,
        });
    }

    fn since(&self, rfc3339: &str) -> Option<i64> {
        archives::parse_time(rfc3339).map(|t| (self.now - t).whole_seconds())
    }

    /// Each remote target (S3 and sftp) from the last copy the state directory records: none
    /// yet is a warning, one whose archive is older than `max-age` is critical, as for a
    /// directory target.
    fn remotes(&mut self, state: &std::path::Path) {
        let copies = crate::target::s3::last::load(state);
        let verified = archives::VerifyLog::load(state);
        let max_age = self.settings.health.max_age;
        let settings = self.settings;
        for t in remote_targets(settings) {
            let name = t.name();
            let Some(c) = copies.get(name) else {
                self.add(
                    Health::Warning,
                    Some(name),
                    "remote",
                    format!("target {name}: no copy to {} is recorded yet: start a run with `systemctl start vouch.service` and check `journalctl -u vouch`", t.location().display()),
                );
                continue;
            };
            let age = self.since(&c.created);
            let max_secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            if age.is_none_or(|a| a > max_secs) {
                self.add(
                    Health::Critical,
                    Some(name),
                    "remote",
                    format!(
                        "target {name}: the newest archive copied to it, {} ({}), is {} old (max-age {}): check `journalctl -u vouch` for the failed copies",
                        c.archive,
                        c.url,
                        age.map(age_text).unwrap_or_else(|| "of unknown age".into()),
                        duration_text(max_age)
                    ),
                );
            }
            let read_back = verified.get(name, &c.archive).is_some_and(|v| v.ok);
            if c.readback.as_deref() == Some("checksum") && !read_back {
                self.add(
                    Health::Warning,
                    Some(name),
                    "remote",
                    format!(
                        "target {name}: the newest copy, {} ({}), was only checked by its digests (readback = \"checksum\") and has not been read back: a full `vouch verify` of it on this target clears this",
                        c.archive, c.url
                    ),
                );
            }
        }
    }

    /// One remote target's bucket or directory, listed (`status --live`): unreachable is a warning (the
    /// recorded copies still judge its age), no archive there or the newest one older than
    /// `max-age` is critical, and so is a recorded copy that is gone from the bucket.
    fn remote_live(&mut self, t: crate::target::Configured<'_>, dirs: &Dirs, log: &VerifyLog) {
        let name = t.name();
        let listed = t.open(dirs).and_then(|store| {
            store
                .scan_own(&self.settings.backup.name)
                .map_err(|e| t.remote_unreadable(&e))
        });
        let all = match listed {
            Ok(all) => all,
            Err(e) => {
                self.add(
                    Health::Warning,
                    Some(name),
                    "remote-live",
                    format!("target {name}: {e}: the recorded copies judge it meanwhile; check with `vouch preflight --as-service`"),
                );
                self.live.insert(
                    name.to_owned(),
                    LiveRemote {
                        error: Some(e.to_string()),
                        archives: 0,
                        newest: None,
                        newest_created: None,
                    },
                );
                return;
            }
        };
        let good: Vec<&Archive> = all.iter().filter(|a| a.receipt.is_some()).collect();
        let newest = good.iter().max_by_key(|a| (a.created, a.name.clone()));
        self.live.insert(
            name.to_owned(),
            LiveRemote {
                error: None,
                archives: good.len(),
                newest: newest.map(|a| a.name.clone()),
                newest_created: newest.and_then(|a| a.created).map(run::rfc3339),
            },
        );
        self.judge_live(t, &all, newest.copied(), dirs, log);
    }

    /// The verdicts on what [`Checker::remote_live`] listed.
    fn judge_live(
        &mut self,
        t: crate::target::Configured<'_>,
        all: &[Archive],
        newest: Option<&Archive>,
        dirs: &Dirs,
        log: &VerifyLog,
    ) {
        let name = t.name();
        let url = t.location().display().to_string();
        let recorded = crate::target::s3::last::load(&dirs.state).remove(name);
        if let Some(c) = recorded.filter(|c| {
            !all.iter()
                .any(|a| a.name == c.archive && a.receipt.is_some())
        }) {
            self.add(
                Health::Critical,
                Some(name),
                "remote-live",
                format!("target {name}: {} was copied there at {} and is no longer in {url} with its receipt: look at {} and who may delete in it", c.archive, c.copied, match t {
                    crate::target::Configured::Sftp(_) => "the server's directory",
                    _ => "the bucket's lifecycle rules",
                }),
            );
        }
        let Some(newest) = newest else {
            self.add(
                Health::Critical,
                Some(name),
                "remote-live",
                format!("target {name}: no archive with a receipt in {url}: start a run with `systemctl start vouch.service` and check `journalctl -u vouch`"),
            );
            return;
        };
        if log.get(name, &newest.name).is_some_and(|v| !v.ok) {
            self.add(
                Health::Critical,
                Some(name),
                "remote-live",
                format!("target {name}: the newest archive there, {}, failed its last verification: run `vouch verify --target {name} {}`", newest.name, newest.name),
            );
        }
        let max_age = self.settings.health.max_age;
        let age = newest.created.map(|c| (self.now - c).whole_seconds());
        let max_secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        if age.is_none_or(|a| a > max_secs) {
            self.add(
                Health::Critical,
                Some(name),
                "remote-live",
                format!(
                    "target {name}: the newest archive in {url}, {}, is {} old (max-age {}): check `journalctl -u vouch` for the failed copies",
                    newest.name,
                    age.map(age_text).unwrap_or_else(|| "of unknown age".into()),
                    duration_text(max_age)
                ),
            );
        }
    }

    /// Every check of one target; returns its details.
    fn target(&mut self, target: &Target, log: &VerifyLog) -> TargetReport {
        let name = target.name.as_str();
        let mut report = TargetReport::new(&target.name, &target.path.display().to_string());
        let store = crate::target::open(target);
        let all = match store.scan_own(&self.settings.backup.name) {
            Ok(all) => all,
            Err(e) => {
                self.add(
                    Health::Critical,
                    Some(name),
                    "archives",
                    format!(
                        "target {name}: cannot read {}: {e}: mount the target or fix its permissions, then check with `vouch doctor`",
                        target.path.display()
                    ),
                );
                return report;
            }
        };
        report.archives = all.len();
        // An archive dated in the future (a wrong clock, or a stray file) would stand for the
        // newest one for good and hide a stale backup: named, and left out of the judgement.
        let (future, all): (Vec<Archive>, Vec<Archive>) = all
            .into_iter()
            .partition(|a| a.created.is_some_and(|c| c > self.now + FUTURE_SLACK));
        for a in &future {
            self.add(
                Health::Warning,
                Some(name),
                "archives",
                format!(
                    "target {name}: {} is dated in the future ({}): check the clock (`timedatectl`) and remove the archive if it is not this host's; it is left out of this judgement",
                    a.name,
                    a.created.map(run::rfc3339).unwrap_or_default()
                ),
            );
        }
        self.age(target, &all, log, &mut report);
        if let Some(newest) = all.last() {
            self.newest(target, newest, &all, log, &mut report);
        }
        self.space(target, &*store, &mut report);
        self.verifications(target, &all, log, &mut report);
        report
    }

    /// The newest verified archive against `max-age`, and its required paths.
    fn age(
        &mut self,
        target: &Target,
        all: &[Archive],
        log: &VerifyLog,
        report: &mut TargetReport,
    ) {
        let name = target.name.as_str();
        let max_age = self.settings.health.max_age;
        let Some(latest) = all
            .iter()
            .rev()
            .find(|a| archives::is_verified(a, name, log))
        else {
            let what = if all.is_empty() {
                "holds no archives"
            } else {
                "holds no verified archive"
            };
            self.add(
                Health::Critical,
                Some(name),
                "age",
                format!(
                    "target {name}: {} {what}: start a run with `systemctl start vouch.service` and check `systemctl status vouch.service` and `journalctl -u vouch`",
                    target.path.display()
                ),
            );
            return;
        };
        let i = info(latest, name, log, self.now);
        let max_secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        match i.age_seconds {
            Some(age) if age > max_secs => self.add(
                Health::Critical,
                Some(name),
                "age",
                format!(
                    "target {name}: the newest verified archive is {} old (max-age {}): check `systemctl status vouch.timer vouch.service` and `journalctl -u vouch`",
                    age_text(age),
                    duration_text(max_age)
                ),
            ),
            Some(_) => {}
            None => self.add(
                Health::Critical,
                Some(name),
                "age",
                format!(
                    "target {name}: the newest verified archive {} has no readable creation time: check its receipt",
                    latest.name
                ),
            ),
        }
        if !i.required_missing.is_empty() {
            self.add(
                Health::Critical,
                Some(name),
                "required",
                format!(
                    "target {name}: the newest verified archive {} lacks required path(s) {}: check that they exist and are non-empty, then start a run with `systemctl start vouch.service`",
                    latest.name,
                    i.required_missing.join(", ")
                ),
            );
        }
        self.dumps(name, latest, &i);
        report.latest_verified = Some(i);
    }

    /// Each configured `[[dump]]` should be in the newest verified archive; one that is not was
    /// added to the config since, or the archive predates it: a warning until the next run.
    fn dumps(&mut self, name: &str, latest: &Archive, i: &ArchiveInfo) {
        if latest.receipt.is_none() {
            return;
        }
        let missing: Vec<&str> = self
            .settings
            .dump
            .iter()
            .map(|d| d.name.as_str())
            .filter(|d| !i.dumps.iter().any(|r| r.name == *d))
            .collect();
        if !missing.is_empty() {
            self.add(
                Health::Warning,
                Some(name),
                "dumps",
                format!(
                    "target {name}: the newest verified archive {} holds no dump {}: start a run with `systemctl start vouch.service` to back it up",
                    latest.name,
                    missing.join(", ")
                ),
            );
        }
    }

    /// The newest archive: its files, receipt, last re-verification and size.
    fn newest(
        &mut self,
        target: &Target,
        newest: &Archive,
        all: &[Archive],
        log: &VerifyLog,
        report: &mut TargetReport,
    ) {
        let name = target.name.as_str();
        let i = info(newest, name, log, self.now);
        let missing = newest.missing_files();
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
            self.add(
                Health::Critical,
                Some(name),
                "archives",
                format!(
                    "target {name}: the newest archive {} is missing {}: find out what removed it and start a run with `systemctl start vouch.service`",
                    newest.name,
                    list.join(", ")
                ),
            );
        } else if let Some(r) = newest
            .receipt
            .as_ref()
            .filter(|r| r.archive_size != newest.size_on_disk())
        {
            self.add(
                Health::Critical,
                Some(name),
                "archives",
                format!(
                    "target {name}: the newest archive {} is {} bytes on disk but its receipt says {}: it was truncated or replaced; run `vouch verify {}` and start a run with `systemctl start vouch.service`",
                    newest.name,
                    newest.size_on_disk(),
                    r.archive_size,
                    newest.name
                ),
            );
        } else if let Some(problem) = &newest.receipt_problem {
            self.add(
                Health::Warning,
                Some(name),
                "archives",
                format!(
                    "target {name}: the newest archive {} cannot be judged ({problem}): run `vouch verify {}`",
                    newest.name, newest.name
                ),
            );
        }
        let failed = log.get(name, &newest.name).filter(|r| !r.ok);
        if let Some(r) = failed.filter(|_| is_unfinished_set(newest)) {
            self.add(
                Health::Critical,
                Some(name),
                "verify",
                format!(
                    "target {name}: the newest archive {} failed verification at {} and has no receipt: it is most likely the parts of a run killed while committing them (older versions of vouch committed parts one by one), not damage; delete its parts and start a run with `systemctl start vouch.service`",
                    newest.name, r.verified_at
                ),
            );
        } else if let Some(r) = failed {
            self.add(
                Health::Critical,
                Some(name),
                "verify",
                format!(
                    "target {name}: the newest archive {} failed verification at {}{}: check the disk (`dmesg`, `smartctl`) and start a run with `systemctl start vouch.service` for a good archive",
                    newest.name,
                    r.verified_at,
                    r.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
                ),
            );
        }
        let earlier: Vec<u64> = all[..all.len() - 1]
            .iter()
            .filter_map(|a| a.receipt.as_ref().map(|r| r.archive_size))
            .collect();
        let recent = &earlier[earlier.len().saturating_sub(RECENT)..];
        report.median_size = median(recent);
        if newest.receipt.is_some() {
            if let Some(a) = judge(i.size, &earlier, self.settings.health.size_tolerance) {
                self.add(
                    Health::Warning,
                    Some(name),
                    "size",
                    format!(
                        "target {name}: the newest archive {} is {} against a median of {} for recent archives (size-tolerance {}%): check that the sources hold what they should, or raise [health] size-tolerance if the change is expected",
                        newest.name,
                        human_bytes(a.size),
                        human_bytes(a.median),
                        a.tolerance
                    ),
                );
            }
        }
        report.next_archive_bytes = Some(i.size.saturating_add(i.size / 5));
        report.latest = Some(i);
    }

    /// Free space against the next archive and `min-free`.
    fn space(
        &mut self,
        target: &Target,
        store: &dyn crate::target::Target,
        report: &mut TargetReport,
    ) {
        let name = target.name.as_str();
        report.free_bytes = store.free_bytes();
        let (Some(free), Some(next)) = (report.free_bytes, report.next_archive_bytes) else {
            return;
        };
        let need = next.saturating_add(target.min_free);
        if free < next {
            self.add(
                Health::Critical,
                Some(name),
                "space",
                format!(
                    "target {name}: {} free cannot hold the next archive (about {}): free space on {} or lower [[target]] keep",
                    human_bytes(free),
                    human_bytes(next),
                    target.path.display()
                ),
            );
        } else if free < need {
            self.add(
                Health::Warning,
                Some(name),
                "space",
                format!(
                    "target {name}: {} free is less than the next archive (about {}) plus min-free {}: free space on {} before the next run fails with TARGET_FULL",
                    human_bytes(free),
                    human_bytes(next),
                    human_bytes(target.min_free),
                    target.path.display()
                ),
            );
        }
    }

    /// The `vouch verify` records of this target's archives.
    fn verifications(
        &mut self,
        target: &Target,
        all: &[Archive],
        log: &VerifyLog,
        report: &mut TargetReport,
    ) {
        let name = target.name.as_str();
        let records: Vec<(&Archive, &VerifyRecord, i64)> = all
            .iter()
            .filter_map(|a| {
                let r = log.get(name, &a.name)?;
                Some((a, r, self.since(&r.verified_at).unwrap_or(i64::MAX)))
            })
            .collect();
        // Most recent first: the smallest age.
        let latest = records.iter().min_by_key(|(_, _, age)| *age);
        report.last_verify = latest.map(|(a, r, _)| verify_info(&a.name, r));
        report.last_restore_test = records
            .iter()
            .filter(|(_, r, _)| r.restore_test)
            .min_by_key(|(_, _, age)| *age)
            .map(|(a, r, _)| verify_info(&a.name, r));
        if let Some((a, r, _)) = latest {
            let newest = all.last().map(|n| n.name.as_str());
            if !r.ok && newest != Some(a.name.as_str()) {
                self.add(
                    Health::Critical,
                    Some(name),
                    "verify",
                    format!(
                        "target {name}: the last verification ({} at {}) failed{}: check the disk and run `vouch verify --all --target {name}`",
                        a.name,
                        r.verified_at,
                        r.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
                    ),
                );
            }
        }
        let window = VERIFY_MAX_AGE.as_secs() as i64;
        let recent_ok = records.iter().any(|(_, r, age)| r.ok && *age <= window);
        // A new installation gets one window before the first weekly verification is due.
        let oldest_age = all
            .first()
            .and_then(|a| a.created)
            .map(|c| (self.now - c).whole_seconds());
        if !recent_ok && oldest_age.is_some_and(|age| age > window) {
            self.add(
                Health::Warning,
                Some(name),
                "verify",
                format!(
                    "target {name}: no successful `vouch verify` in the last {}: check `systemctl status vouch-verify.timer` and run `vouch verify --latest --target {name}`",
                    duration_text(VERIFY_MAX_AGE)
                ),
            );
        }
    }

    /// The last run's record.
    fn last_run(&mut self, last: Option<&LastRun>, any_archive: bool) {
        match last {
            Some(l) if l.exit_code != 0 => self.add(
                Health::Critical,
                None,
                "last-run",
                format!(
                    "the last run (finished {}) failed with {} ({}): read `journalctl -u vouch` for the cause and its fix (`vouch doctor` checks the unit's sandbox too), then start a run with `systemctl start vouch.service`",
                    l.finished, l.exit_name, l.exit_code
                ),
            ),
            Some(_) => {}
            None if any_archive => self.add(
                Health::Warning,
                None,
                "last-run",
                "no record of the last run in the state directory: check that `vouch run` uses the same StateDirectory= as this command".into(),
            ),
            None => {}
        }
    }

    /// Whether runs can read their archives back in full.
    fn identity(&mut self, dirs: &Dirs, full_everywhere: Option<bool>) {
        let enc = &self.settings.encryption;
        let credential = dirs
            .credentials
            .as_ref()
            .map(|d| d.join(crypt::CREDENTIAL_NAME))
            .filter(|p| p.exists());
        if enc.identity.is_some() || credential.is_some() {
            if let Err(e) = Keys::load(enc, dirs.credentials.as_deref()) {
                self.add(
                    Health::Critical,
                    None,
                    "identity",
                    format!("{e}: {}", e.hint()),
                );
            }
            return;
        }
        // Without an identity here, it may still come as a systemd credential: the receipts
        // tell whether the runs read their archives back in full.
        if full_everywhere != Some(true) {
            self.add(
                Health::Warning,
                None,
                "identity",
                "no identity configured, so runs check only the ciphertext: set [encryption] identity (or pass the credential `identity`) so every run proves its archive decrypts".into(),
            );
        }
    }

    /// The last notification attempt.
    fn notify(&mut self, record: Option<NotifyRecord>) {
        let Some(record) = record else { return };
        if record.failures.is_empty() {
            return;
        }
        let list: Vec<String> = record
            .failures
            .iter()
            .map(|f| format!("{} ({})", f.channel, f.error))
            .collect();
        self.add(
            Health::Warning,
            None,
            "notify",
            format!(
                "notifications at {} failed: {}: check [notify] and that the host can reach them",
                record.at,
                list.join(", ")
            ),
        );
    }
}

/// Whether an archive is a part set without any receipt: what a run killed between two part
/// renames left before receipts were written ahead of the parts.
pub fn is_unfinished_set(archive: &Archive) -> bool {
    archive.receipt_path.is_none() && archive.is_split()
}

/// How far in the future an archive's time stamp may be before it counts as wrong (clocks of
/// hosts sharing a target differ a little).
const FUTURE_SLACK: time::Duration = time::Duration::minutes(5);

/// State files that exist but cannot be parsed: each file's name and why.
fn corrupt_state(state: &Path) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for file in [
        crate::run::LAST_RUN,
        archives::VERIFY_LOG,
        crate::report::notify::RECORD,
    ] {
        let path = state.join(file);
        let read = crate::host::bounded::read(
            &path,
            crate::host::bounded::Links::Refuse,
            crate::host::bounded::STATE_CAP,
        );
        let problem = match read {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => format!("cannot be read: {e}"),
            Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(v) if v.is_object() => continue,
                Ok(_) => "is not a JSON object".to_owned(),
                Err(e) => format!("is not valid JSON: {e}"),
            },
        };
        out.push((file, problem));
    }
    out
}

/// The vouch units whose results `status` reads.
pub const UNITS: [&str; 2] = ["vouch.service", "vouch-verify.service"];

/// How one start of a vouch unit ended, as one of its records tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitEnd {
    /// The unit.
    pub unit: String,
    /// When it ended (or was recorded).
    pub at: OffsetDateTime,
    /// Whether systemd counted it a success.
    pub ok: bool,
    /// The exit status when the process exited with one (`203`, `15`).
    pub exit_status: Option<u8>,
    /// What happened, in words.
    pub detail: String,
    /// The unit's invocation the record is about (`$INVOCATION_ID`), when it says.
    pub invocation: Option<String>,
    /// Whether the record is notify-failure's (else the unit's own or systemd's).
    pub notified: bool,
}

/// An exit status in words: vouch's own name, or systemd's with what it means.
fn exit_words(status: u8) -> String {
    use crate::systemd::units::{systemd_exit_meaning, systemd_exit_name};
    if let Some(c) = crate::exit::ExitCode::from_code(status) {
        return format!("exit status {status} ({})", c.name());
    }
    match systemd_exit_name(status) {
        Some(name) => format!(
            "{status}/{name}{}",
            systemd_exit_meaning(status)
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ),
        None => format!("exit status {status}"),
    }
}

/// The ending described by systemd's result, exit kind and status (`exit-code`, `exited`,
/// `203`; `timeout`, `killed`, `TERM`).
fn ending(result: &str, kind: &str, status: &str) -> (Option<u8>, String) {
    let number = status.parse::<u8>().ok().filter(|_| kind == "exited");
    let how = match (kind, number) {
        ("exited", Some(n)) => exit_words(n),
        ("killed", _) => format!("killed by signal {status}"),
        ("dumped", _) => format!("dumped core on signal {status}"),
        _ => format!("exit status {status}"),
    };
    let detail = if result == "exit-code" {
        how
    } else {
        format!("{how}, result {result}")
    };
    (number, detail)
}

/// Parses the record a unit's `ExecStopPost=` writes (`unit=`, `result=`, `exit-code=`,
/// `exit-status=`, `at=` lines).
pub fn parse_unit_record(text: &str) -> Option<UnitEnd> {
    let map: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let result = map.get("result").copied().unwrap_or("");
    let (exit_status, detail) = ending(
        result,
        map.get("exit-code").copied().unwrap_or(""),
        map.get("exit-status").copied().unwrap_or(""),
    );
    Some(UnitEnd {
        unit: (*map.get("unit")?).to_owned(),
        at: archives::parse_time(map.get("at")?)?,
        ok: result == "success",
        exit_status,
        detail,
        invocation: map
            .get("invocation")
            .filter(|i| !i.is_empty())
            .map(|i| (*i).to_owned()),
        notified: false,
    })
}

/// The file a unit's `ExecStopPost=` writes into the state directory.
pub fn unit_record_path(state: &Path, unit: &str) -> std::path::PathBuf {
    state.join(format!("{unit}.result"))
}

/// Reads `last-failure.json`, written by `vouch notify-failure`.
fn last_failure(state: &Path) -> Option<UnitEnd> {
    let path = state.join(crate::systemd::units::LAST_FAILURE);
    let bytes = crate::host::bounded::read(
        &path,
        crate::host::bounded::Links::Refuse,
        crate::host::bounded::STATE_CAP,
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("");
    let detail = match text("detail") {
        "" => format!(
            "result {}, exit status {}",
            text("result"),
            text("exit-status")
        ),
        d => d.to_owned(),
    };
    Some(UnitEnd {
        unit: text("unit").to_owned(),
        at: archives::parse_time(text("recorded"))?,
        ok: false,
        exit_status: text("exit-status").parse().ok().filter(|s| *s != 0),
        detail,
        invocation: Some(text("invocation").to_owned()).filter(|i| !i.is_empty()),
        notified: true,
    })
}

/// What systemd itself says about `unit`'s last start, when it can be asked.
fn systemd_end(unit: &str) -> Option<UnitEnd> {
    use crate::systemd::units::{parse_show, systemctl_show_with};
    let text = systemctl_show_with(
        &["--timestamp=unix"],
        "Result,ExecMainStatus,ExecMainCode,InactiveExitTimestamp,InvocationID",
        &[unit],
    )
    .ok()?;
    systemd_show_end(unit, &parse_show(&text))
}

/// The last start from `systemctl show --timestamp=unix` properties; `None` when the unit is
/// unknown or never started.
pub fn systemd_show_end(unit: &str, props: &BTreeMap<String, String>) -> Option<UnitEnd> {
    let started: i64 = props
        .get("InactiveExitTimestamp")?
        .strip_prefix('@')?
        .parse()
        .ok()?;
    let at = OffsetDateTime::from_unix_timestamp(started).ok()?;
    let result = props.get("Result").map(String::as_str).unwrap_or("");
    let kind = match props.get("ExecMainCode").map(String::as_str) {
        Some("1") => "exited",
        Some("2") => "killed",
        Some("3") => "dumped",
        _ => "",
    };
    let status = props
        .get("ExecMainStatus")
        .map(String::as_str)
        .unwrap_or("");
    let (exit_status, detail) = ending(result, kind, status);
    Some(UnitEnd {
        unit: unit.to_owned(),
        at,
        ok: result == "success",
        exit_status,
        detail,
        invocation: props.get("InvocationID").filter(|i| !i.is_empty()).cloned(),
        notified: false,
    })
}

/// Every record of how the vouch units ended: their `ExecStopPost=` files, notify-failure's
/// record and systemd's own view.
fn unit_ends(state: &Path) -> Vec<UnitEnd> {
    let mut out: Vec<UnitEnd> = UNITS
        .iter()
        .filter_map(|u| {
            let path = unit_record_path(state, u);
            let text = crate::host::bounded::read_string(
                &path,
                crate::host::bounded::Links::Refuse,
                crate::host::bounded::STATE_CAP,
            )
            .ok()?;
            parse_unit_record(&text).filter(|r| r.unit == *u)
        })
        .collect();
    out.extend(last_failure(state).filter(|f| UNITS.contains(&f.unit.as_str())));
    out.extend(UNITS.iter().filter_map(|u| systemd_end(u)));
    out
}

/// The unit's newest invocation: systemd's, else the one its own `ExecStopPost=` record names.
fn latest_invocation<'a>(ends: &'a [UnitEnd], unit: &str) -> Option<&'a str> {
    // `unit_ends` lists systemd's view last, so the reverse order asks systemd first.
    ends.iter()
        .rev()
        .filter(|e| e.unit == unit && !e.notified)
        .find_map(|e| e.invocation.as_deref())
}

/// Whether a notify-failure record is about an earlier invocation than the unit's newest one:
/// the unit started again after that failure, so the failure is no longer the news, however
/// close in time (records are stamped to the second). A failed dependency starts no new
/// invocation, so its record names the newest one and stands.
fn superseded(e: &UnitEnd, latest: Option<&str>) -> bool {
    match (e.notified, e.invocation.as_deref(), latest) {
        (true, Some(own), Some(latest)) => own != latest,
        _ => false,
    }
}

/// The unit failures nothing else in the report explains: per unit, the newest record, when
/// it is a failure that no later run superseded and that is not the last run's own failure
/// (which `last-run` reports) or a damaged archive found by verify (which `verify` reports).
pub fn unexplained_failures(ends: &[UnitEnd], last: Option<&LastRun>) -> Vec<UnitEnd> {
    let finished = last.and_then(|l| archives::parse_time(&l.finished));
    UNITS
        .iter()
        .filter_map(|u| {
            let latest = latest_invocation(ends, u);
            ends.iter()
                .filter(|e| e.unit == *u)
                .filter(|e| !superseded(e, latest))
                .max_by_key(|e| (e.at, !e.ok))
        })
        .filter(|e| !e.ok)
        .filter(|e| match (e.unit.as_str(), last, finished) {
            ("vouch.service", Some(l), Some(f)) => {
                let superseded = f > e.at;
                let own = l.exit_code != 0
                    && e.exit_status == Some(l.exit_code)
                    && (e.at - f).whole_seconds().abs() <= 300;
                !superseded && !own
            }
            ("vouch-verify.service", _, _) => {
                e.exit_status != Some(crate::exit::ExitCode::Verify.code())
            }
            _ => true,
        })
        .cloned()
        .collect()
}

/// Judges every target from the receipts and the state directory, as of `now`; S3 targets
/// from what the state directory recorded of their copies (no request leaves the host).
pub fn evaluate(settings: &Settings, dirs: &Dirs, now: OffsetDateTime) -> Report {
    evaluate_with(settings, dirs, now, false)
}

/// [`evaluate`], with each S3 target's bucket also listed (`status --live`).
pub fn evaluate_live(settings: &Settings, dirs: &Dirs, now: OffsetDateTime) -> Report {
    evaluate_with(settings, dirs, now, true)
}

fn evaluate_with(settings: &Settings, dirs: &Dirs, now: OffsetDateTime, live: bool) -> Report {
    let mut c = Checker {
        now,
        settings,
        reasons: Vec::new(),
        live: BTreeMap::new(),
    };
    let log = VerifyLog::load(&dirs.state);
    let last = LastRun::load(&dirs.state);
    let targets: Vec<TargetReport> = settings.targets.iter().map(|t| c.target(t, &log)).collect();
    let any_archive = targets.iter().any(|t| t.archives > 0);
    // `preflight`, `doctor` and `verify` create the state directory too, so only a record of a
    // run (even a damaged one, reported below), or an archive, shows that vouch has ever
    // backed up here.
    let run_recorded = dirs.state.join(crate::run::LAST_RUN).exists();
    let unit_failures = unexplained_failures(&unit_ends(&dirs.state), last.as_ref());
    if !run_recorded && !any_archive && unit_failures.is_empty() {
        return Report::unknown(
            &settings.file,
            "state",
            format!(
                "vouch has never completed a run here: no record of one in {} and no archives on any target; run one with `systemctl start vouch.service`, then check again",
                dirs.state.join(crate::run::LAST_RUN).display()
            ),
        );
    }
    c.remotes(&dirs.state);
    if live {
        for t in remote_targets(settings) {
            c.remote_live(t, dirs, &log);
        }
    }
    c.last_run(last.as_ref(), any_archive);
    for f in &unit_failures {
        c.add(
            Health::Critical,
            None,
            "unit",
            format!(
                "{} failed: {} (at {}): read `journalctl -x -u {}`, fix the cause, then run `systemctl start {}`",
                f.unit,
                f.detail,
                run::rfc3339(f.at),
                f.unit,
                f.unit
            ),
        );
    }
    let verifications: Vec<&str> = targets
        .iter()
        .filter_map(|t| t.latest_verified.as_ref()?.verification.as_deref())
        .collect();
    let full = (!verifications.is_empty()).then(|| verifications.iter().all(|v| *v == "full"));
    c.identity(dirs, full);
    c.notify(NotifyRecord::load(&dirs.state));
    for (file, problem) in corrupt_state(&dirs.state) {
        // A lost verification log can hide a failed verification: retention refuses to run
        // on it, and so must nobody believe the verdict.
        let level = if file == archives::VERIFY_LOG {
            Health::Critical
        } else {
            Health::Warning
        };
        c.add(
            level,
            None,
            "state",
            format!(
                "{} {problem}: vouch ignores it{}; look at it, then move it aside",
                dirs.state.join(file).display(),
                if file == archives::VERIFY_LOG {
                    ", so failed verifications may be hidden, and retention will not delete anything until it is fixed"
                } else {
                    ""
                }
            ),
        );
    }
    let mut found = std::mem::take(&mut c.live);
    let mut report = Report::finish(&settings.file, now, c.reasons, last, targets);
    let copies = crate::target::s3::last::load(&dirs.state);
    report.remotes = remote_targets(settings)
        .map(|t| RemoteReport {
            name: t.name().to_owned(),
            url: t.location().display().to_string(),
            last_copy: copies.get(t.name()).cloned(),
            live: found.remove(t.name()),
        })
        .collect();
    report
}

/// The remote targets (S3, then sftp), in config order.
fn remote_targets(settings: &Settings) -> impl Iterator<Item = crate::target::Configured<'_>> {
    crate::target::configured(settings)
        .into_iter()
        .filter(|t| t.is_remote())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_same_second_failure_of_an_earlier_invocation_gives_way_but_a_failed_dependency_stands() {
        let at = time::macros::datetime!(2026-12-01 10:00:00 UTC);
        let end = |ok: bool, invocation: &str, notified| UnitEnd {
            unit: "vouch.service".into(),
            at,
            ok,
            exit_status: (!ok).then_some(30),
            detail: "failed".into(),
            invocation: Some(invocation.into()),
            notified,
        };
        // A failed run (notify-failure's record of it), then a good run in the same second:
        // the unit's record and systemd's name the newer invocation.
        let ends = [
            end(true, "b", false),
            end(false, "a", true),
            end(true, "b", false),
        ];
        assert!(unexplained_failures(&ends, None).is_empty());
        // A good run, then a mount it needs fails in the same second: no new invocation.
        let ends = [
            end(true, "b", false),
            end(false, "b", true),
            end(true, "b", false),
        ];
        assert_eq!(unexplained_failures(&ends, None).len(), 1);
        // Records without invocations (older versions) keep the old rule: the failure wins.
        let mut old = [end(true, "b", false), end(false, "a", true)];
        old.iter_mut().for_each(|e| e.invocation = None);
        assert_eq!(unexplained_failures(&old, None).len(), 1);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7]), Some(7));
        assert_eq!(median(&[9, 1, 5]), Some(5));
        assert_eq!(median(&[1, 2, 3, 10]), Some(2));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
        assert_eq!(median(&[u64::MAX, u64::MAX]), Some(u64::MAX));
        assert_eq!(median(&[u64::MAX - 1, u64::MAX]), Some(u64::MAX - 1));
    }

    #[test]
    fn exactly_at_the_tolerance_is_not_an_anomaly() {
        assert!(!outside_tolerance(120, 100, 20));
        assert!(outside_tolerance(121, 100, 20));
        assert!(!outside_tolerance(80, 100, 20));
        assert!(outside_tolerance(79, 100, 20));
        // One byte past 20% of an odd median: 20% of 1001 is 200.2.
        assert!(!outside_tolerance(1201, 1001, 20));
        assert!(outside_tolerance(1202, 1001, 20));
    }

    #[test]
    fn a_zero_median_flags_any_content() {
        assert!(!outside_tolerance(0, 0, 20));
        assert!(outside_tolerance(1, 0, 20));
        assert!(outside_tolerance(0, 1, 20));
        assert!(!outside_tolerance(0, 1, 100));
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        assert!(!outside_tolerance(u64::MAX, u64::MAX, 1));
        let half = 1u64 << 63;
        assert!(outside_tolerance(u64::MAX - 1, half, 99));
        // Exactly double: 100% above, at the edge of a 100% tolerance.
        assert!(!outside_tolerance(u64::MAX - 1, half, 100));
        assert!(outside_tolerance(u64::MAX, half - 1, 100));
        assert!(outside_tolerance(0, u64::MAX, 99));
        assert!(!outside_tolerance(0, u64::MAX, 100));
        assert!(!outside_tolerance(u64::MAX, u64::MAX - 1, u32::MAX));
    }

    #[test]
    fn judge_needs_history_and_uses_the_recent_part() {
        assert_eq!(judge(1000, &[10, 10], 20), None);
        let a = judge(1000, &[10, 10, 10], 20).unwrap();
        assert_eq!((a.size, a.median, a.tolerance), (1000, 10, 20));
        assert_eq!(judge(11, &[10, 10, 10], 20), None);
        // Old huge archives fall out of the window of the last RECENT.
        let mut history = vec![1_000_000; 5];
        history.extend([100; RECENT]);
        assert_eq!(judge(100, &history, 20), None);
        assert!(judge(1_000_000, &history, 20).is_some());
    }

    #[test]
    fn own_archives_are_recognised_by_name_and_stamp() {
        use crate::target::archives::is_own;
        assert!(is_own("web1-20261121T030405Z.tar.gz.age", "web1"));
        assert!(is_own("web-1-20261121T030405Z.tar.gz.age", "web-1"));
        assert!(!is_own("web-1-20261121T030405Z.tar.gz.age", "web"));
        assert!(!is_own("web10-20261121T030405Z.tar.gz.age", "web1"));
        assert!(!is_own("web1-junk.tar.gz.age", "web1"));
    }

    fn reason(level: Health, target: Option<&str>) -> Reason {
        Reason {
            level,
            target: target.map(str::to_owned),
            check: "test",
            message: String::new(),
        }
    }

    fn target(name: &str) -> TargetReport {
        TargetReport::new(name, &format!("/{name}"))
    }

    #[test]
    fn the_verdict_is_the_worst_reason() {
        assert_eq!(worst([]), Health::Healthy);
        assert_eq!(worst([Health::Warning, Health::Healthy]), Health::Warning);
        assert_eq!(worst([Health::Warning, Health::Critical]), Health::Critical);
        let now = OffsetDateTime::now_utc();
        let cfg = Path::new("/etc/vouch/vouch.toml");
        let r = Report::finish(cfg, now, Vec::new(), None, vec![target("a")]);
        assert_eq!((r.status, r.code), (Health::Healthy, 0));
        let r = Report::finish(
            cfg,
            now,
            vec![
                reason(Health::Warning, None),
                reason(Health::Critical, Some("b")),
                reason(Health::Warning, Some("a")),
            ],
            None,
            vec![target("a"), target("b"), target("c")],
        );
        assert_eq!((r.status, r.code), (Health::Critical, 2));
        assert_eq!(r.reasons[0].level, Health::Critical, "worst first");
        let per: Vec<Health> = r.targets.iter().map(|t| t.status).collect();
        assert_eq!(per, [Health::Warning, Health::Critical, Health::Warning]);
        let u = Report::unknown(cfg, "config", "no config".into());
        assert_eq!((u.status, u.code), (Health::Unknown, 3));
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age_text(-5), "0s");
        assert_eq!(age_text(90), "90s");
        assert_eq!(age_text(3600), "60 minutes");
        assert_eq!(age_text(3 * 86_400 + 5), "3 days");
        assert_eq!(age_text(30 * 3600), "30 hours");
        assert_eq!(duration_text(Duration::from_secs(26 * 3600)), "26h");
        assert_eq!(duration_text(VERIFY_MAX_AGE), "8d");
        assert_eq!(duration_text(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(duration_text(Duration::from_secs(61)), "61s");
    }
}
