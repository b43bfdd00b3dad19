//! `vouch doctor`: the weekly checks of a careful operator, in one command, for a person.
//!
//! It runs every preflight check, then asks systemd what the backups really run under: the
//! installed `vouch.service`'s sandbox against the config's targets (a target the sandbox makes
//! read-only, hides, or replaces with a private directory is a backup that cannot be written,
//! or one written where nobody will find it), `vouch.timer` (enabled, active, its next and last
//! trigger), the service's last result, and the state directory's record of the last run. For
//! every sftp target it also checks, without connecting, what ssh needs on this host
//! ([`sftp`]): the program, the key file and a known-hosts entry for the server.
//! Every line is `ok`, `warn` or `FAIL`, failures with the fix. Without systemd it says which
//! checks it could not make instead of passing them.
//!
//! The exit status follows `vouch status`: 0 all ok, 1 warnings, 2 failures, 3 no config.

mod sftp; // the offline checks of sftp targets: ssh, the key file, known-hosts

use crate::check::preflight;
use crate::cli::Cli;
use crate::config::{self, Settings};
use crate::error::Error;
use crate::exit::Health;
use crate::host::dirs::{self, Dirs};
use crate::run::LastRun;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The service that runs backups.
pub const SERVICE: &str = "vouch.service";
/// The timer that starts it.
pub const TIMER: &str = "vouch.timer";
/// The timer of the weekly restore test.
pub const VERIFY_TIMER: &str = "vouch-verify.timer";

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// ok, warn or FAIL.
    pub level: Level,
    /// What was checked.
    pub check: String,
    /// What was found.
    pub detail: String,
    /// The fix, for warnings and failures.
    pub fix: Option<String>,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Passed.
    Ok,
    /// Needs attention, or could not be checked.
    Warn,
    /// Backups are not (or will not be) good until it is fixed.
    Fail,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

fn line(level: Level, check: impl Into<String>, detail: impl Into<String>) -> Line {
    Line {
        level,
        check: check.into(),
        detail: detail.into(),
        fix: None,
    }
}

fn with_fix(mut l: Line, fix: impl Into<String>) -> Line {
    l.fix = Some(fix.into());
    l
}

/// Runs every check and prints the report.
pub fn execute(cli: &Cli) -> Health {
    let config_path = dirs::config_path(cli.config.as_deref());
    let mut lines = Vec::new();
    let settings = match config::load(&config_path) {
        Ok(s) => {
            lines.push(line(
                Level::Ok,
                "config",
                format!("{} is valid", config_path.display()),
            ));
            s
        }
        Err(e) => {
            let error = Error::from(e);
            lines.push(with_fix(
                line(Level::Fail, "config", error.to_string()),
                error.hint().unwrap_or_default(),
            ));
            print(&lines);
            return Health::Unknown;
        }
    };
    let dirs = Dirs::from_env();
    lines.extend(preflight_lines(&settings, &dirs));
    lines.extend(sftp::lines(&settings, &dirs));
    lines.extend(same_disk_lines(&settings));
    lines.extend(systemd_lines(&settings));
    lines.extend(last_run_lines(&dirs));
    lines.extend(status_lines(&settings, &dirs));
    print(&lines);
    match lines.iter().map(|l| l.level).max() {
        Some(Level::Fail) => Health::Critical,
        Some(Level::Warn) => Health::Warning,
        _ => Health::Healthy,
    }
}

fn print(lines: &[Line]) {
    let width = lines.iter().map(|l| l.check.len()).max().unwrap_or(8);
    for l in lines {
        crate::out!("{:4}  {:width$}  {}", l.level.word(), l.check, l.detail);
        if let Some(fix) = &l.fix {
            crate::out!("{:4}  {:width$}  fix: {fix}", "", "");
        }
    }
}

/// A warning for each target on the same filesystem (`st_dev`) as a source: one disk failure
/// would lose the data and its backup together.
fn same_disk_lines(settings: &Settings) -> Vec<Line> {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| m.dev());
    let mut lines = Vec::new();
    for t in &settings.targets {
        let Some(target_dev) = dev(&t.path) else {
            continue;
        };
        let shared: Vec<String> = settings
            .backup
            .sources
            .iter()
            .filter(|s| dev(s) == Some(target_dev))
            .map(|s| s.display().to_string())
            .collect();
        if shared.is_empty() {
            continue;
        }
        lines.push(with_fix(
            line(
                Level::Warn,
                format!("same-disk {}", t.name),
                format!(
                    "target {} ({}) is on the same filesystem as source(s) {}: one disk failure loses both",
                    t.name,
                    t.path.display(),
                    shared.join(", ")
                ),
            ),
            "Add a target on another disk or host (a USB disk, a network mount), so that a copy survives the loss of this one.",
        ));
    }
    lines
}

/// The preflight checks. A held lock is a run in progress: worth knowing, not a failure.
fn preflight_lines(settings: &Settings, dirs: &Dirs) -> Vec<Line> {
    let outcome = preflight::check(settings, dirs);
    outcome
        .findings
        .into_iter()
        .map(|f| {
            let check = match &f.target {
                Some(t) => format!("{} {t}", f.check),
                None => f.check.to_owned(),
            };
            match f.outcome {
                Ok(detail) => line(Level::Ok, check, detail),
                Err(Error::Lock(crate::host::lock::LockError::Held { .. })) => with_fix(
                    line(Level::Warn, check, "a vouch run is in progress"),
                    "Run `vouch doctor` again when it has finished (`systemctl status vouch.service`).",
                ),
                Err(e) => {
                    let detail = format!("{e} ({})", e.exit_code());
                    with_fix(line(Level::Fail, check, detail), e.hint().unwrap_or_default())
                }
            }
        })
        .collect()
}

/// Whether systemd is the running init system (`sd_booted()`).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// `systemctl show -p ... UNIT` as a map, or why it could not be asked.
fn show(unit: &str, props: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let out = Command::new("systemctl")
        .arg("show")
        .arg("-p")
        .arg(props.join(","))
        .arg("--")
        .arg(unit)
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "systemctl show {unit} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(crate::systemd::units::parse_show(&String::from_utf8_lossy(
        &out.stdout,
    )))
}

fn systemd_lines(settings: &Settings) -> Vec<Line> {
    if !systemd_running() {
        return vec![with_fix(
            line(
                Level::Warn,
                "systemd",
                "systemd is not running here (no /run/systemd/system): the service's sandbox, the timers and the service's last result were not checked",
            ),
            "Run `vouch doctor` on the host that runs vouch.timer.",
        )];
    }
    let mut lines = Vec::new();
    match show(SERVICE, SANDBOX_PROPS) {
        Ok(p) if p.get("LoadState").map(String::as_str) != Some("loaded") => {
            lines.push(with_fix(
                line(
                    Level::Fail,
                    "service",
                    format!(
                        "{SERVICE} is not installed (LoadState={})",
                        p.get("LoadState").map(String::as_str).unwrap_or("?")
                    ),
                ),
                "Install the vouch package, or copy units/ into /etc/systemd/system and run `systemctl daemon-reload`.",
            ));
        }
        Ok(p) => {
            let sandbox = Sandbox::from_show(&p);
            let drop_ins = p.get("DropInPaths").cloned().unwrap_or_default();
            for t in &settings.targets {
                lines.push(sandbox_line(&sandbox, &t.name, &t.path, &drop_ins));
            }
            // What the service reads must be visible to it: a source or identity that the
            // sandbox hides or replaces with a private directory would be backed up empty.
            let mut reads: Vec<(String, &Path)> = settings
                .backup
                .sources
                .iter()
                .map(|s| (format!("source {}", s.display()), s.as_path()))
                .collect();
            if let Some(id) = &settings.encryption.identity {
                reads.push(("identity".to_owned(), id.as_path()));
            }
            for (what, path) in reads {
                if let Some(l) = read_line(&sandbox, &what, path, &drop_ins) {
                    lines.push(l);
                }
            }
            if let Some(l) = &settings.metrics.textfile {
                if let Some(dir) = l.parent() {
                    let mut l = sandbox_line(&sandbox, "metrics", dir, &drop_ins);
                    if l.level == Level::Fail {
                        l.level = Level::Warn;
                    }
                    lines.push(l);
                }
            }
        }
        Err(e) => lines.push(line(Level::Warn, "service", e)),
    }
    lines.push(timer_line(TIMER, Level::Fail));
    lines.push(timer_line(VERIFY_TIMER, Level::Warn));
    lines.push(service_result_line());
    lines
}

const SANDBOX_PROPS: &[&str] = &[
    "LoadState",
    "FragmentPath",
    "DropInPaths",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "TemporaryFileSystem",
];

/// The parts of a service's sandbox that decide whether a path is writable inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// `ProtectSystem=`: no, yes, full or strict.
    pub protect_system: String,
    /// `ProtectHome=`: no, yes, read-only or tmpfs.
    pub protect_home: String,
    /// `PrivateTmp=`.
    pub private_tmp: bool,
    /// `ReadWritePaths=`.
    pub read_write: Vec<PathBuf>,
    /// `ReadOnlyPaths=`.
    pub read_only: Vec<PathBuf>,
    /// `InaccessiblePaths=`.
    pub inaccessible: Vec<PathBuf>,
    /// `TemporaryFileSystem=` mount points.
    pub tmpfs: Vec<PathBuf>,
}

/// What a path is inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Writable, with the setting that makes it so.
    Writable(String),
    /// Read-only, and why.
    ReadOnly(String),
    /// Hidden (inaccessible), and why.
    Hidden(String),
    /// Writable but private to the service: files written there vanish when it stops.
    Private(String),
}

/// Splits a path list from `systemctl show` (`-/a /b +/c`) into paths.
fn path_list(value: &str) -> Vec<PathBuf> {
    value
        .split_whitespace()
        .map(|p| p.trim_start_matches(['-', '+']))
        .map(|p| p.split(':').next().unwrap_or(p))
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

impl Sandbox {
    /// Reads the sandbox from `systemctl show` properties.
    pub fn from_show(p: &BTreeMap<String, String>) -> Sandbox {
        let get = |k: &str| p.get(k).cloned().unwrap_or_default();
        Sandbox {
            protect_system: get("ProtectSystem"),
            protect_home: get("ProtectHome"),
            private_tmp: get("PrivateTmp") == "yes",
            read_write: path_list(&get("ReadWritePaths")),
            read_only: path_list(&get("ReadOnlyPaths")),
            inaccessible: path_list(&get("InaccessiblePaths")),
            tmpfs: path_list(&get("TemporaryFileSystem")),
        }
    }

    /// What `path` is inside the sandbox: the most specific rule covering it wins; on a tie
    /// the more restrictive one (as a careful reading of systemd's precedence).
    pub fn access(&self, path: &Path) -> Access {
        // (prefix length, restrictiveness, verdict) of every rule covering `path`.
        let mut rules: Vec<(usize, u8, Access)> = self
            .rules()
            .into_iter()
            .filter(|rule| path.starts_with(&rule.prefix))
            .map(|rule| (rule.prefix.components().count(), rule.rank, rule.verdict))
            .collect();
        // A private mount (PrivateTmp=, ProtectHome=tmpfs, TemporaryFileSystem=) or a hiding
        // one (InaccessiblePaths=, ProtectHome=yes) replaces everything below it: systemd 252
        // was seen to leave `InaccessiblePaths=/srv` + `ReadWritePaths=/srv/backups` and
        // `ProtectHome=yes` + `ReadWritePaths=/home/x` without the deeper path at all. The
        // outermost such mount decides; a ReadWritePaths= below it does not reopen anything.
        if let Some(i) = rules
            .iter()
            .enumerate()
            .filter(|(_, (_, _, v))| matches!(v, Access::Private(_) | Access::Hidden(_)))
            .min_by_key(|(_, (len, rank, _))| (*len, u8::MAX - rank))
            .map(|(i, _)| i)
        {
            return rules.swap_remove(i).2;
        }
        rules
            .into_iter()
            .max_by_key(|(len, rank, _)| (*len, *rank))
            .map(|(_, _, verdict)| verdict)
            .unwrap_or_else(|| Access::Writable("no sandbox rule covers it".into()))
    }

    /// Every rule of the sandbox, whatever path it covers.
    fn rules(&self) -> Vec<Rule> {
        let mut rules = self.system_rules();
        rules.extend(self.home_rules());
        if self.private_tmp {
            for d in ["/tmp", "/var/tmp"] {
                rules.push(Rule::new(
                    d,
                    2,
                    Access::Private(format!("PrivateTmp=yes gives the service its own {d}")),
                ));
            }
        }
        rules.extend(self.path_rules());
        rules
    }

    /// What `ProtectSystem=` makes read-only.
    fn system_rules(&self) -> Vec<Rule> {
        let dirs: &[&str] = match self.protect_system.as_str() {
            "strict" => {
                return vec![Rule::new(
                    "/",
                    1,
                    Access::ReadOnly(
                        "ProtectSystem=strict makes the whole file system read-only".into(),
                    ),
                )]
            }
            "full" => &["/usr", "/boot", "/efi", "/etc"],
            "yes" => &["/usr", "/boot", "/efi"],
            _ => &[],
        };
        dirs.iter()
            .map(|d| {
                Rule::new(
                    d,
                    1,
                    Access::ReadOnly(format!(
                        "ProtectSystem={} makes {d} read-only",
                        self.protect_system
                    )),
                )
            })
            .collect()
    }

    /// What `ProtectHome=` does to the home directories.
    fn home_rules(&self) -> Vec<Rule> {
        ["/home", "/root", "/run/user"]
            .into_iter()
            .filter_map(|d| match self.protect_home.as_str() {
                "yes" => Some(Rule::new(
                    d,
                    3,
                    Access::Hidden(format!("ProtectHome=yes hides {d}")),
                )),
                "read-only" => Some(Rule::new(
                    d,
                    1,
                    Access::ReadOnly(format!("ProtectHome=read-only makes {d} read-only")),
                )),
                "tmpfs" => Some(Rule::new(
                    d,
                    2,
                    Access::Private(format!(
                        "ProtectHome=tmpfs replaces {d} with an empty tmpfs"
                    )),
                )),
                _ => None,
            })
            .collect()
    }

    /// The rules of the path lists: `ReadWritePaths=`, `ReadOnlyPaths=`,
    /// `TemporaryFileSystem=`, `InaccessiblePaths=`.
    fn path_rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        for p in &self.read_write {
            rules.push(Rule::new(
                p,
                0,
                Access::Writable(format!("ReadWritePaths={}", p.display())),
            ));
        }
        for p in &self.read_only {
            rules.push(Rule::new(
                p,
                1,
                Access::ReadOnly(format!("ReadOnlyPaths={} makes it read-only", p.display())),
            ));
        }
        for p in &self.tmpfs {
            rules.push(Rule::new(
                p,
                2,
                Access::Private(format!(
                    "TemporaryFileSystem={} replaces it with an empty tmpfs",
                    p.display()
                )),
            ));
        }
        for p in &self.inaccessible {
            rules.push(Rule::new(
                p,
                3,
                Access::Hidden(format!("InaccessiblePaths={} hides it", p.display())),
            ));
        }
        rules
    }
}

/// One sandbox setting's effect below a prefix, with how restrictive it is (0 writable, 1 read
/// only, 2 private, 3 hidden): on a tie at the same depth the more restrictive one wins.
struct Rule {
    prefix: PathBuf,
    rank: u8,
    verdict: Access,
}

impl Rule {
    fn new(prefix: impl AsRef<Path>, rank: u8, verdict: Access) -> Rule {
        Rule {
            prefix: prefix.as_ref().to_owned(),
            rank,
            verdict,
        }
    }
}

/// What an `ExecMainStatus=` means: a signal's name when the process was killed
/// (`ExecMainCode=2`, CLD_KILLED, or 3, CLD_DUMPED), else vouch's exit name, else the name
/// systemd gives its own codes (systemd.exec(5), "Process Exit Codes"), else `?`.
fn status_name(code: &str, status: &str) -> String {
    let Ok(n) = status.parse::<i32>() else {
        return "?".into();
    };
    if matches!(code, "2" | "3") {
        return nix::sys::signal::Signal::try_from(n)
            .map_or_else(|_| format!("signal {n}"), |s| s.as_str().to_owned());
    }
    if let Some(c) = u8::try_from(n)
        .ok()
        .and_then(crate::exit::ExitCode::from_code)
    {
        return c.name().to_owned();
    }
    const SYSTEMD: &[(i32, &str)] = &[
        (200, "CHDIR"),
        (201, "NICE"),
        (202, "FDS"),
        (203, "EXEC"),
        (204, "MEMORY"),
        (205, "LIMITS"),
        (206, "OOM_ADJUST"),
        (207, "SIGNAL_MASK"),
        (208, "STDIN"),
        (209, "STDOUT"),
        (210, "CHROOT"),
        (211, "IOPRIO"),
        (212, "TIMERSLACK"),
        (213, "SECUREBITS"),
        (214, "SETSCHEDULER"),
        (215, "CPUAFFINITY"),
        (216, "GROUP"),
        (217, "USER"),
        (218, "CAPABILITIES"),
        (219, "CGROUP"),
        (220, "SETSID"),
        (221, "CONFIRM"),
        (222, "STDERR"),
        (224, "PAM"),
        (225, "NETWORK"),
        (226, "NAMESPACE"),
        (227, "NO_NEW_PRIVILEGES"),
        (228, "SECCOMP"),
        (229, "SELINUX_CONTEXT"),
        (230, "PERSONALITY"),
        (231, "APPARMOR_PROFILE"),
        (232, "ADDRESS_FAMILIES"),
        (233, "RUNTIME_DIRECTORY"),
        (235, "CHOWN"),
        (236, "SMACK_PROCESS_LABEL"),
        (237, "KEYRING"),
        (238, "STATE_DIRECTORY"),
        (239, "CACHE_DIRECTORY"),
        (240, "LOGS_DIRECTORY"),
        (241, "CONFIGURATION_DIRECTORY"),
        (242, "NUMA_POLICY"),
        (243, "CREDENTIALS"),
        (245, "BPF"),
    ];
    SYSTEMD
        .iter()
        .find(|(c, _)| *c == n)
        .map_or_else(|| "?".into(), |(_, name)| format!("systemd's {name}"))
}

/// A path the service only reads: fine when writable or read-only inside the sandbox; a
/// failure when hidden or private. `None` when all is well (the targets' lines say enough).
fn read_line(sandbox: &Sandbox, what: &str, path: &Path, drop_ins: &str) -> Option<Line> {
    let (verdict, why) = match sandbox.access(path) {
        Access::Writable(_) | Access::ReadOnly(_) => return None,
        Access::Hidden(why) => ("hidden from", why),
        Access::Private(why) => ("replaced by a private, empty directory in", why),
    };
    let drop_ins = drop_ins.trim();
    Some(with_fix(
        line(
            Level::Fail,
            format!("sandbox {what}"),
            format!(
                "{} is {verdict} {SERVICE}: {why}{}",
                path.display(),
                if drop_ins.is_empty() {
                    String::new()
                } else {
                    format!(" (drop-ins: {drop_ins})")
                }
            ),
        ),
        format!(
            "Move it out of the sandbox's private or hidden places, or change that setting in a drop-in (`systemctl cat {SERVICE}` shows where it is)."
        ),
    ))
}

fn sandbox_line(sandbox: &Sandbox, name: &str, path: &Path, drop_ins: &str) -> Line {
    let check = format!("sandbox {name}");
    let where_set = if drop_ins.trim().is_empty() {
        String::new()
    } else {
        format!(" (drop-ins: {})", drop_ins.trim())
    };
    let add_rw = format!(
        "Add `ReadWritePaths={}` in a drop-in (`systemctl edit {SERVICE}`), or run `systemctl daemon-reload` so vouch-generator adds the config's targets; check the drop-ins with `systemctl cat {SERVICE}`.",
        path.display()
    );
    match sandbox.access(path) {
        Access::Writable(why) => line(
            Level::Ok,
            check,
            format!("{} is writable in {SERVICE} ({why})", path.display()),
        ),
        Access::ReadOnly(why) => with_fix(
            line(
                Level::Fail,
                check,
                format!("{} is read-only in {SERVICE}: {why}{where_set}", path.display()),
            ),
            add_rw,
        ),
        Access::Hidden(why) => with_fix(
            line(
                Level::Fail,
                check,
                format!("{} is hidden from {SERVICE}: {why}{where_set}", path.display()),
            ),
            format!(
                "Remove that setting from {SERVICE}'s drop-ins (`systemctl cat {SERVICE}` shows where it is), then `systemctl daemon-reload`."
            ),
        ),
        Access::Private(why) => with_fix(
            line(
                Level::Fail,
                check,
                format!(
                    "{} is private to {SERVICE}: {why}, so archives written there vanish when the service stops{where_set}",
                    path.display()
                ),
            ),
            "Put the target on persistent storage outside /tmp, /var/tmp and the service's temporary file systems.",
        ),
    }
}

/// A systemd time stamp that means "never" (`n/a`, empty, or 0).
fn never(value: Option<&String>) -> bool {
    value.is_none_or(|v| v.is_empty() || v == "n/a" || v == "0")
}

fn timer_line(timer: &str, severity: Level) -> Line {
    let props = match show(
        timer,
        &[
            "LoadState",
            "UnitFileState",
            "ActiveState",
            "NextElapseUSecRealtime",
            "LastTriggerUSec",
        ],
    ) {
        Ok(p) => p,
        Err(e) => return line(Level::Warn, timer, e),
    };
    let get = |k: &str| props.get(k).cloned().unwrap_or_default();
    if get("LoadState") != "loaded" {
        return with_fix(
            line(severity, timer, format!("{timer} is not installed")),
            "Install the vouch package (it ships the timers).",
        );
    }
    let next = if never(props.get("NextElapseUSecRealtime")) {
        "none scheduled".to_owned()
    } else {
        get("NextElapseUSecRealtime")
    };
    let last = if never(props.get("LastTriggerUSec")) {
        "never".to_owned()
    } else {
        get("LastTriggerUSec")
    };
    let detail = format!(
        "{timer} is {} and {}; next {next}, last {last}",
        get("UnitFileState"),
        get("ActiveState")
    );
    if get("UnitFileState") != "enabled" {
        return with_fix(
            line(severity, timer, detail),
            format!("Enable it: `systemctl enable --now {timer}` (a disabled timer never runs after a reboot)."),
        );
    }
    if get("ActiveState") != "active" {
        return with_fix(
            line(severity, timer, detail),
            format!("Start it: `systemctl start {timer}`."),
        );
    }
    line(Level::Ok, timer, detail)
}

fn service_result_line() -> Line {
    let props = match show(
        SERVICE,
        &[
            "Result",
            "ExecMainStatus",
            "ExecMainCode",
            "ExecMainExitTimestamp",
            "ActiveState",
            "ExecStartPre",
        ],
    ) {
        Ok(p) => p,
        Err(e) => return line(Level::Warn, "last result", e),
    };
    result_line(&props)
}

/// The service's last result from its properties: running, never started, failed before
/// vouch ran (an `ExecStartPre=` command), or how vouch's process ended.
fn result_line(props: &BTreeMap<String, String>) -> Line {
    let get = |k: &str| props.get(k).cloned().unwrap_or_default();
    if get("ActiveState") == "activating" {
        return line(
            Level::Ok,
            "last result",
            format!("{SERVICE} is running now"),
        );
    }
    let pre_failed = props.get("ExecStartPre").is_some_and(|v| {
        crate::systemd::units::parse_exec(v)
            .iter()
            .any(|c| c.failed())
    });
    let never_ran = never(props.get("ExecMainExitTimestamp"));
    if never_ran || pre_failed {
        if !matches!(get("Result").as_str(), "" | "success") {
            return with_fix(
                line(
                    Level::Fail,
                    "last result",
                    format!(
                        "{SERVICE}'s last start failed: {}",
                        crate::systemd::units::describe(props, None)
                    ),
                ),
                format!("Read `journalctl -x -u {SERVICE}` for the cause and the fix."),
            );
        }
        return line(
            Level::Warn,
            "last result",
            format!("{SERVICE} has not run since boot; the state directory's record is below"),
        );
    }
    let status = get("ExecMainStatus");
    let name = status_name(&get("ExecMainCode"), &status);
    let detail = format!(
        "{SERVICE} ended at {}: Result={}, exit status {status} ({name})",
        get("ExecMainExitTimestamp"),
        get("Result")
    );
    if service_failed(&get("Result"), &get("ExecMainCode"), &status) {
        with_fix(
            line(Level::Fail, "last result", detail),
            format!("Read `journalctl -x -u {SERVICE}` for the cause and the fix."),
        )
    } else {
        line(Level::Ok, "last result", detail)
    }
}

/// Whether the service's last run failed. `systemctl reset-failed` sets `Result=success` but
/// keeps the exit status, so a non-zero status (or a kill: `ExecMainCode` other than 1,
/// CLD_EXITED) counts as a failure whatever `Result=` says.
fn service_failed(result: &str, main_code: &str, status: &str) -> bool {
    result != "success" || (!main_code.is_empty() && main_code != "1") || status != "0"
}

fn last_run_lines(dirs: &Dirs) -> Vec<Line> {
    match LastRun::load(&dirs.state) {
        None => vec![with_fix(
            line(
                Level::Warn,
                "last run",
                format!("no run recorded in {}", dirs.state.display()),
            ),
            "Start one: `systemctl start vouch.service`.",
        )],
        Some(l) if l.exit_code == 0 => vec![line(
            Level::Ok,
            "last run",
            format!(
                "succeeded at {}{}",
                l.finished,
                l.archive
                    .as_deref()
                    .map(|a| format!(": {a}"))
                    .unwrap_or_default()
            ),
        )],
        Some(l) => vec![with_fix(
            line(
                Level::Fail,
                "last run",
                format!(
                    "failed at {} with exit {} ({})",
                    l.finished, l.exit_code, l.exit_name
                ),
            ),
            "Read `journalctl -x -u vouch.service` (or run `vouch preflight --as-service`) for the cause and the fix.",
        )],
    }
}

/// The status verdict as `vouch doctor` lines: one per reason (a reason's sentence already
/// says what to do), or one `ok` line when there is nothing to report.
fn status_lines(settings: &Settings, dirs: &Dirs) -> Vec<Line> {
    let report = crate::report::health::evaluate(settings, dirs, time::OffsetDateTime::now_utc());
    crate::report::metrics::write_report(settings, &report);
    if report.reasons.is_empty() {
        return vec![Line {
            level: Level::Ok,
            check: "status".into(),
            detail: format!(
                "healthy: {}",
                report
                    .targets
                    .iter()
                    .map(crate::cli::status::target_line)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            fix: None,
        }];
    }
    report
        .reasons
        .iter()
        .map(|r| Line {
            level: match r.level {
                Health::Healthy => Level::Ok,
                Health::Warning => Level::Warn,
                Health::Critical | Health::Unknown => Level::Fail,
            },
            check: match &r.target {
                Some(t) => format!("status {t}"),
                None => "status".into(),
            },
            detail: r.message.clone(),
            fix: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hardened() -> Sandbox {
        Sandbox {
            protect_system: "strict".into(),
            protect_home: "read-only".into(),
            private_tmp: true,
            read_write: path_list("-/var/backups/vouch /srv/backups"),
            ..Sandbox::default()
        }
    }

    #[test]
    fn a_failed_start_command_is_a_failed_result_not_never_run() {
        let props = crate::systemd::units::parse_show(
            "Result=exit-code\nExecMainStatus=0\nExecMainCode=0\nExecMainExitTimestamp=\nActiveState=failed\n\
ExecStartPre={ path=/usr/local/bin/dump-db ; argv[]=/usr/local/bin/dump-db ; ignore_errors=no ; start_time=[Tue 2026-12-01 10:00:00 UTC] ; stop_time=[Tue 2026-12-01 10:00:00 UTC] ; pid=412 ; code=exited ; status=2 }\n",
        );
        let l = result_line(&props);
        assert_eq!(l.level, Level::Fail);
        assert!(
            l.detail
                .contains("/usr/local/bin/dump-db failed with exit status 2"),
            "{}",
            l.detail
        );
        assert!(l.fix.is_some());
        let idle = crate::systemd::units::parse_show(
            "Result=success\nExecMainStatus=0\nExecMainCode=0\nExecMainExitTimestamp=\nActiveState=inactive\n",
        );
        assert_eq!(result_line(&idle).level, Level::Warn);
    }

    #[test]
    fn a_reset_failure_is_still_a_failure() {
        assert!(!service_failed("success", "1", "0"));
        assert!(service_failed("exit-code", "1", "15"));
        // After `systemctl reset-failed`: Result=success, the exit status stays.
        assert!(service_failed("success", "1", "13"));
        // Killed by a signal (CLD_KILLED): the status is the signal number.
        assert!(service_failed("signal", "2", "9"));
        assert!(service_failed("success", "2", "15"));
    }

    #[test]
    fn exit_statuses_are_named_for_vouch_systemd_and_signals() {
        assert_eq!(status_name("1", "15"), "TARGET_READONLY");
        assert_eq!(status_name("1", "203"), "systemd's EXEC");
        assert_eq!(status_name("1", "226"), "systemd's NAMESPACE");
        assert_eq!(status_name("2", "9"), "SIGKILL");
        assert_eq!(status_name("2", "15"), "SIGTERM");
        assert_eq!(status_name("1", "99"), "?");
        assert_eq!(status_name("1", ""), "?");
    }

    #[test]
    fn show_path_lists_drop_prefixes_and_options() {
        assert_eq!(
            path_list("-/var/backups +/srv /mnt/usb:ro"),
            [
                PathBuf::from("/var/backups"),
                PathBuf::from("/srv"),
                PathBuf::from("/mnt/usb")
            ]
        );
        assert!(path_list("").is_empty());
    }

    #[test]
    fn read_write_paths_open_strict_sandboxes() {
        let s = hardened();
        assert!(matches!(
            s.access(Path::new("/var/backups/vouch")),
            Access::Writable(_)
        ));
        assert!(matches!(
            s.access(Path::new("/srv/backups/host1")),
            Access::Writable(_)
        ));
        assert!(matches!(
            s.access(Path::new("/mnt/usb")),
            Access::ReadOnly(_)
        ));
        assert!(matches!(
            s.access(Path::new("/var/backups")),
            Access::ReadOnly(_)
        ));
    }

    #[test]
    fn more_specific_rules_win() {
        let mut s = hardened();
        s.inaccessible = vec![PathBuf::from("/srv/backups")];
        assert!(matches!(
            s.access(Path::new("/srv/backups/host1")),
            Access::Hidden(_)
        ));
        s.read_only = vec![PathBuf::from("/var/backups/vouch/old")];
        assert!(matches!(
            s.access(Path::new("/var/backups/vouch/old")),
            Access::ReadOnly(_)
        ));
        assert!(matches!(
            s.access(Path::new("/var/backups/vouch")),
            Access::Writable(_)
        ));
        s.read_write.push(PathBuf::from("/home/backup"));
        assert!(matches!(
            s.access(Path::new("/home/backup/x")),
            Access::Writable(_)
        ));
        assert!(matches!(
            s.access(Path::new("/home/other")),
            Access::ReadOnly(_)
        ));
    }

    #[test]
    fn private_places_are_not_backups() {
        let mut s = hardened();
        s.read_write.push(PathBuf::from("/tmp/backups"));
        // ReadWritePaths= inside PrivateTmp= still names the service's own /tmp.
        assert!(matches!(
            s.access(Path::new("/tmp/backups")),
            Access::Private(_)
        ));
        assert!(matches!(
            s.access(Path::new("/var/tmp/b")),
            Access::Private(_)
        ));
        s.tmpfs = vec![PathBuf::from("/mnt")];
        assert!(matches!(
            s.access(Path::new("/mnt/usb")),
            Access::Private(_)
        ));
        let open = Sandbox::default();
        assert!(matches!(
            open.access(Path::new("/mnt/usb")),
            Access::Writable(_)
        ));
    }

    #[test]
    fn sources_and_identities_must_be_visible_but_may_be_read_only() {
        let mut s = hardened();
        assert!(read_line(&s, "source /etc", Path::new("/etc"), "").is_none());
        assert!(read_line(&s, "source /home", Path::new("/home/alice"), "").is_none());
        let l = read_line(&s, "source /tmp/db", Path::new("/tmp/db"), "").unwrap();
        assert_eq!(l.level, Level::Fail);
        assert!(l.detail.contains("private"), "{}", l.detail);
        s.protect_home = "yes".into();
        let l = read_line(&s, "identity", Path::new("/root/id.txt"), "/x.conf").unwrap();
        assert!(
            l.detail.contains("hidden from vouch.service"),
            "{}",
            l.detail
        );
        assert!(l.detail.contains("/x.conf"), "{}", l.detail);
    }

    #[test]
    fn a_deeper_read_write_path_does_not_reopen_a_hidden_one() {
        let mut s = hardened();
        s.inaccessible = vec![PathBuf::from("/srv")];
        assert!(matches!(
            s.access(Path::new("/srv/backups")),
            Access::Hidden(_)
        ));
        s.protect_home = "yes".into();
        s.read_write.push(PathBuf::from("/home/backup"));
        assert!(matches!(
            s.access(Path::new("/home/backup/x")),
            Access::Hidden(_)
        ));
        s.protect_home = "tmpfs".into();
        assert!(matches!(
            s.access(Path::new("/home/backup/x")),
            Access::Private(_)
        ));
        // A hidden path inside a private one: the private mount, outermost, is what counts.
        s.tmpfs = vec![PathBuf::from("/mnt")];
        s.inaccessible = vec![PathBuf::from("/mnt/usb")];
        assert!(matches!(
            s.access(Path::new("/mnt/usb/x")),
            Access::Private(_)
        ));
        // ReadOnlyPaths= is different: a deeper ReadWritePaths= does open it.
        s.read_only = vec![PathBuf::from("/var")];
        assert!(matches!(
            s.access(Path::new("/var/backups/vouch")),
            Access::Writable(_)
        ));
    }

    #[test]
    fn tie_goes_to_the_more_restrictive_rule() {
        let mut s = hardened();
        s.inaccessible = vec![PathBuf::from("/srv/backups")];
        assert!(matches!(
            s.access(Path::new("/srv/backups")),
            Access::Hidden(_)
        ));
    }
}
