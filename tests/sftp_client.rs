//! The SFTP client against a real OpenSSH server (Debian's sshd with `internal-sftp` on
//! 127.0.0.1, tests/util/sshd.rs) through the real `ssh`: a 20 MiB file written pipelined,
//! fsynced, read back and renamed into place; the refusals an archive's commit relies on
//! (exclusive create, rename onto an existing name); listings and statvfs; a full and a
//! read-only filesystem (tmpfs in the server's own mount namespace, so root only); the host-key,
//! authentication, read-only, killed-transport and missing-ssh errors; and fake servers that
//! lie or answer reads out of order and short; an sftp subsystem that stops answering after
//! its VERSION behind a real sshd times out and ssh is ended. Every test runs under a
//! timeout, so a hang fails.

mod util;

use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use util::sshd::Sshd;
use vouch::target::sftp::{scan_host_keys, Options, Session, SftpError};

/// Runs `f` on its own thread and fails the test when it takes longer than `secs`.
fn within(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the test did not finish within {secs} s"),
    }
}

fn options(s: &Sshd) -> Options {
    let mut o = Options::new("127.0.0.1", s.port, &s.user, &s.client_key, &s.known_hosts);
    o.connect_timeout = Duration::from_secs(10);
    o
}

fn connect(s: &Sshd) -> Session {
    Session::connect(&options(s)).unwrap_or_else(|e| panic!("connect: {e}"))
}

fn remote(s: &Sshd, name: &str) -> String {
    s.root.join(name).to_str().unwrap().to_owned()
}

/// Deterministic bytes that do not compress or repeat in 32 KiB blocks.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn sha256_of(mut r: impl Read) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 50_000]; // not a multiple of the 32 KiB chunks
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            return h.finalize().into();
        }
        h.update(&buf[..n]);
    }
}

#[test]
fn a_20_mib_file_is_written_pipelined_fsynced_read_back_and_renamed_into_place() {
    within(180, || {
        let s = Sshd::start();
        let mut c = connect(&s);
        let data = noise(20 * 1024 * 1024);
        let tmp = remote(&s, ".vouch-tmp.1.a");
        let fin = remote(&s, "a");
        let h = c.create_exclusive(&tmp).unwrap();
        c.write_all(&h, 0, &data).unwrap();
        assert!(c.fsync(&h).unwrap(), "OpenSSH advertises fsync@openssh.com");
        assert_eq!(c.fstat(&h).unwrap().size, Some(data.len() as u64));
        c.close(h).unwrap();
        let mut reader = c.open_read(&tmp).unwrap();
        assert_eq!(
            sha256_of(&mut reader),
            <[u8; 32]>::from(Sha256::digest(&data))
        );
        reader.close().unwrap();
        c.rename(&tmp, &fin).unwrap();
        assert!(c.stat(&tmp).unwrap_err().is_no_such_file());
        let on_disk = fs::read(&fin).unwrap();
        assert!(on_disk == data, "the file on the server differs");
        let attrs = c.stat(&fin).unwrap();
        assert_eq!(attrs.size, Some(data.len() as u64));
        assert_eq!(attrs.permissions.map(|p| p & 0o777), Some(0o600));
        // Writes at an offset, and a read of a file shorter than one chunk.
        let h = c.create_exclusive(&remote(&s, "small")).unwrap();
        c.write_all(&h, 0, b"hello ").unwrap();
        c.write_all(&h, 6, b"world").unwrap();
        c.close(h).unwrap();
        let mut text = String::new();
        c.open_read(&remote(&s, "small"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello world");
    });
}

#[test]
fn an_exclusive_create_and_a_plain_rename_never_replace_a_file() {
    within(60, || {
        let s = Sshd::start();
        let mut c = connect(&s);
        fs::write(s.root.join("old"), b"old archive").unwrap();
        fs::write(s.root.join("new"), b"new archive").unwrap();
        let e = c.create_exclusive(&remote(&s, "old")).unwrap_err();
        assert!(e.is_failure(), "{e}");
        let e = c
            .rename(&remote(&s, "new"), &remote(&s, "old"))
            .unwrap_err();
        assert!(e.is_failure(), "{e}");
        assert!(matches!(e, SftpError::Status { .. }));
        assert_eq!(fs::read(s.root.join("old")).unwrap(), b"old archive");
        assert_eq!(fs::read(s.root.join("new")).unwrap(), b"new archive");
        // The session goes on after an error status; posix-rename does replace.
        c.posix_rename(&remote(&s, "new"), &remote(&s, "old"))
            .unwrap();
        assert_eq!(fs::read(s.root.join("old")).unwrap(), b"new archive");
        assert!(!s.root.join("new").exists());
    });
}

#[test]
fn stat_read_dir_mkdir_and_remove() {
    within(60, || {
        let s = Sshd::start();
        let mut c = connect(&s);
        let d = remote(&s, "d");
        c.mkdir(&d).unwrap();
        assert!(c.stat(&d).unwrap().is_dir());
        assert!(c.mkdir(&d).unwrap_err().is_failure());
        for i in 0..250 {
            fs::write(s.root.join("d").join(format!("f{i:03}")), vec![7u8; i]).unwrap();
        }
        std::os::unix::fs::symlink("f001", s.root.join("d/link")).unwrap();
        let mut entries = c.read_dir(&d).unwrap();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(entries.len(), 251, "more than one READDIR reply's worth");
        assert_eq!(entries[10].0, "f010");
        assert_eq!(entries[10].1.size, Some(10));
        assert!(entries[10].1.is_file());
        assert!(
            entries[250].1.is_symlink(),
            "read_dir gives lstat attributes"
        );
        assert!(c.lstat(&format!("{d}/link")).unwrap().is_symlink());
        assert!(c.stat(&format!("{d}/link")).unwrap().is_file());
        c.remove(&format!("{d}/f010")).unwrap();
        let e = c.stat(&format!("{d}/f010")).unwrap_err();
        assert!(e.is_no_such_file(), "{e}");
        assert!(c
            .remove(&format!("{d}/f010"))
            .unwrap_err()
            .is_no_such_file());
        assert!(c
            .read_dir(&remote(&s, "nothing"))
            .unwrap_err()
            .is_no_such_file());
        assert!(c
            .open_read(&remote(&s, "nothing"))
            .err()
            .unwrap()
            .is_no_such_file());
        assert_eq!(c.read_dir(&d).unwrap().len(), 250);
        let empty = remote(&s, "e");
        c.mkdir(&empty).unwrap();
        c.rmdir(&empty).unwrap();
        assert!(c.stat(&empty).unwrap_err().is_no_such_file());
    });
}

/// `df -B1 --output=FIELD DIR` as a number.
fn df(dir: &Path, field: &str) -> u64 {
    let out = Command::new("df")
        .args(["-B1", &format!("--output={field}")])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

#[test]
fn statvfs_agrees_with_df() {
    within(60, || {
        let s = Sshd::start();
        let mut c = connect(&s);
        let names: Vec<&str> = c.extensions().iter().map(|(n, _)| n.as_str()).collect();
        for ext in [
            "fsync@openssh.com",
            "statvfs@openssh.com",
            "posix-rename@openssh.com",
        ] {
            assert!(names.contains(&ext), "{ext} not in {names:?}");
        }
        let v = c.statvfs(s.root.to_str().unwrap()).unwrap();
        let (avail, size) = (df(&s.root, "avail"), df(&s.root, "size"));
        let (iavail, itotal) = (df(&s.root, "iavail"), df(&s.root, "itotal"));
        assert_eq!(v.total_bytes(), size, "{v:?}");
        let slack = 512 * 1024 * 1024; // other tests write meanwhile
        assert!(
            v.available_bytes().abs_diff(avail) < slack,
            "{v:?} vs df {avail}"
        );
        assert!(v.available_bytes() <= v.total_bytes());
        assert_eq!(v.files, itotal, "{v:?}");
        assert!(v.favail.abs_diff(iavail) < 100_000, "{v:?} vs df {iavail}");
        assert!(!v.read_only());
        assert!(c
            .statvfs(&remote(&s, "nothing"))
            .unwrap_err()
            .is_no_such_file());
    });
}

/// Connects with a known-hosts file holding `content`; expects the host-key error, then adds
/// the scanned lines and connects.
fn host_key_error_then_scan(s: &Sshd, content: &str, changed: bool) {
    let known = s.dir().join("known_hosts_test");
    fs::write(&known, content).unwrap();
    let mut o = options(s);
    o.known_hosts = known.clone();
    match Session::connect(&o) {
        Err(SftpError::HostKey {
            changed: c,
            message,
        }) => {
            assert_eq!(c, changed, "{message}");
            assert!(
                message.contains("Host key verification failed"),
                "{message}"
            );
        }
        Err(e) => panic!("not a host-key error: {e}"),
        Ok(_) => panic!("connected with a wrong known-hosts file"),
    }
    let keys = scan_host_keys(&o).unwrap();
    let expected = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(s.dir().join("host_key.pub"))
        .output()
        .unwrap();
    let expected = String::from_utf8(expected.stdout).unwrap();
    let fp = expected.split_whitespace().nth(1).unwrap();
    let key = keys
        .iter()
        .find(|k| k.fingerprint == fp)
        .unwrap_or_else(|| {
            panic!("{fp} not among the scanned keys {keys:?}");
        });
    assert_eq!(key.key_type, "ED25519");
    assert!(key
        .known_hosts_line
        .starts_with(&format!("[127.0.0.1]:{} ", s.port)));
    fs::write(&known, format!("{}\n", key.known_hosts_line)).unwrap();
    let mut c = Session::connect(&o).unwrap_or_else(|e| panic!("after adding the key: {e}"));
    c.stat(s.root.to_str().unwrap()).unwrap();
}

#[test]
fn an_unknown_host_key_is_refused_and_the_scanned_line_lets_the_next_connect_in() {
    within(60, || {
        let s = Sshd::start();
        host_key_error_then_scan(&s, "", false);
    });
}

#[test]
fn a_changed_host_key_is_refused_and_the_scanned_line_lets_the_next_connect_in() {
    within(60, || {
        let s = Sshd::start();
        let other = format!("[127.0.0.1]:{} {}\n", s.port, s.other_host_key());
        host_key_error_then_scan(&s, &other, true);
    });
}

#[test]
fn a_key_the_server_does_not_know_is_the_authentication_error() {
    within(60, || {
        let s = Sshd::start();
        let mut o = options(&s);
        o.identity = s.stranger_key("stranger");
        match Session::connect(&o) {
            Err(SftpError::AuthRefused { message }) => {
                assert!(
                    message.contains("Permission denied (publickey"),
                    "{message}"
                )
            }
            Err(e) => panic!("not the authentication error: {e}"),
            Ok(_) => panic!("connected with an unknown key"),
        }
    });
}

#[test]
fn a_read_only_server_refuses_to_create_with_permission_denied() {
    within(60, || {
        let s = Sshd::start_read_only();
        let mut c = connect(&s);
        fs::write(s.root.join("a"), b"x").unwrap();
        let e = c.create_exclusive(&remote(&s, "b")).unwrap_err();
        assert!(e.is_permission_denied(), "{e}");
        assert!(c
            .rename(&remote(&s, "a"), &remote(&s, "c"))
            .unwrap_err()
            .is_permission_denied());
        assert!(c
            .remove(&remote(&s, "a"))
            .unwrap_err()
            .is_permission_denied());
        assert!(
            c.stat(&remote(&s, "a")).unwrap().is_file(),
            "reads still work"
        );
        assert!(!s.root.join("b").exists());
    });
}

#[test]
fn ssh_killed_in_the_middle_of_a_write_is_a_transport_error() {
    within(120, || {
        let s = Sshd::start();
        let mut c = connect(&s);
        let pid = c.ssh_pid();
        let h = c.create_exclusive(&remote(&s, "big")).unwrap();
        let chunk = noise(4 * 1024 * 1024);
        let killer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
        });
        let mut offset = 0u64;
        let e = loop {
            match c.write_all(&h, offset, &chunk) {
                Ok(()) => offset += chunk.len() as u64,
                Err(e) => break e,
            }
            assert!(offset < 8 << 30, "8 GiB written and ssh still alive");
        };
        killer.join().unwrap();
        assert!(matches!(e, SftpError::Transport { .. }), "{e}");
        let again = c.stat(&remote(&s, "big")).unwrap_err();
        assert!(again.to_string().contains("unusable"), "{again}");
    });
}

#[test]
fn key_and_known_hosts_paths_with_blanks_percent_signs_and_quotes_reach_ssh_intact() {
    within(60, || {
        let s = Sshd::start();
        let odd = s.dir().join("a b%d\"c\\%%h");
        fs::create_dir(&odd).unwrap();
        let mut o = options(&s);
        o.identity = odd.join("key %u");
        o.known_hosts = odd.join("known hosts");
        fs::copy(&s.client_key, &o.identity).unwrap();
        fs::copy(&s.known_hosts, &o.known_hosts).unwrap();
        let mut c = Session::connect(&o).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.stat(s.root.to_str().unwrap()).unwrap().is_dir());
    });
}

#[test]
fn a_missing_ssh_is_the_not_installed_error() {
    within(30, || {
        let s = Sshd::start();
        let mut o = options(&s);
        o.program = "/nonexistent/vouch-test/ssh".into();
        match Session::connect(&o) {
            Err(e @ SftpError::NotInstalled { .. }) => {
                assert!(e.to_string().contains("openssh-client"), "{e}")
            }
            Err(e) => panic!("not the not-installed error: {e}"),
            Ok(_) => panic!("connected without ssh"),
        }
    });
}

#[test]
fn a_closed_port_is_the_unreachable_error() {
    within(30, || {
        let s = Sshd::start();
        let mut o = options(&s);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        o.port = listener.local_addr().unwrap().port();
        drop(listener);
        match Session::connect(&o) {
            Err(SftpError::Unreachable { message }) => {
                assert!(message.contains("Connection refused"), "{message}")
            }
            Err(e) => panic!("not the unreachable error: {e}"),
            Ok(_) => panic!("connected to a closed port"),
        }
    });
}

/// A fake "ssh" that answers INIT properly and then lies as its host argument says.
const LIAR: &str = r#"#!/usr/bin/python3
import struct, sys
i, o = sys.stdin.buffer, sys.stdout.buffer
mode = sys.argv[-2]
def send(t, body):
    o.write(struct.pack(">IB", len(body) + 1, t) + body); o.flush()
def request():
    n = struct.unpack(">I", i.read(4))[0]
    d = i.read(n)
    return struct.unpack(">I", d[1:5])[0] if len(d) >= 5 else None
request()
send(2, struct.pack(">I", 3))
rid = request()
if mode == "wrong-id":
    send(105, struct.pack(">II", rid + 1000, 0))
elif mode == "wrong-type":
    send(102, struct.pack(">II", rid, 1) + b"h")
elif mode == "huge":
    o.write(struct.pack(">I", 0xfffffff0)); o.flush()
elif mode == "truncated":
    o.write(struct.pack(">IB", 100, 105) + b"abc"); o.flush()
    sys.exit(0)
elif mode == "short-field":
    send(105, struct.pack(">IIQ", rid, 1, 5)[:-3])
i.read()
"#;

#[test]
fn a_server_that_lies_is_a_protocol_or_transport_error_never_a_hang() {
    within(60, || {
        let dir = tempfile::tempdir().unwrap();
        let liar = dir.path().join("liar");
        fs::write(&liar, LIAR).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        fs::set_permissions(&liar, mode).unwrap();
        for (mode, protocol) in [
            ("wrong-id", true),
            ("wrong-type", true),
            ("huge", true),
            ("short-field", true),
            ("truncated", false),
        ] {
            let mut o = Options::new(mode, 22, "u", "/dev/null", "/dev/null");
            o.program = liar.clone();
            let mut c = Session::connect(&o).unwrap_or_else(|e| panic!("{mode}: {e}"));
            let e = c.stat("/x").unwrap_err();
            if protocol {
                assert!(matches!(e, SftpError::Protocol(_)), "{mode}: {e}");
            } else {
                assert!(matches!(e, SftpError::Transport { .. }), "{mode}: {e}");
            }
            let again = c.stat("/x").unwrap_err();
            assert!(again.to_string().contains("unusable"), "{mode}: {again}");
        }
    });
}

#[test]
fn a_full_disk_is_failure_and_a_read_only_mount_is_flagged() {
    within(60, || {
        let s = Sshd::start_with_mounts(
            "mkdir \"$ROOT/full\" \"$ROOT/ro\"\n\
             mount -t tmpfs -o size=1m tmpfs \"$ROOT/full\"\n\
             mount -t tmpfs -o ro,size=1m tmpfs \"$ROOT/ro\"",
        );
        let mut c = connect(&s);
        let full = remote(&s, "full");
        let v = c.statvfs(&full).unwrap();
        assert_eq!(v.total_bytes(), 1024 * 1024, "{v:?}");
        assert!(!v.read_only());
        let h = c.create_exclusive(&format!("{full}/big")).unwrap();
        let e = c.write_all(&h, 0, &noise(2 * 1024 * 1024)).unwrap_err();
        assert!(e.is_failure(), "{e}");
        c.close(h).unwrap();
        assert_eq!(c.statvfs(&full).unwrap().available_bytes(), 0);
        let ro = remote(&s, "ro");
        assert!(c.statvfs(&ro).unwrap().read_only());
        let e = c.create_exclusive(&format!("{ro}/x")).unwrap_err();
        assert!(e.is_failure(), "{e}");
    });
}

/// A fake "ssh" serving one file of [`ODD_SIZE`] bytes whose byte at offset `i` is
/// `(i * 7 + i / 251) % 256`: it answers the requests waiting at a time in reverse order, and
/// cuts every third READ short; WRITEs it accepts without keeping. At the end it writes the
/// most READs and WRITEs it found waiting at once to the file its `-l` argument names.
const ODD_SERVER: &str = r#"#!/usr/bin/python3
import os, select, struct, sys
SIZE = int(sys.argv[-2])
REPORT = sys.argv[sys.argv.index("-l") + 1]
most = {5: 0, 6: 0}
o = sys.stdout.buffer
buf = b""
def send(t, body):
    o.write(struct.pack(">IB", len(body) + 1, t) + body)
def content(off, n):
    return bytes(((i * 7) + i // 251) & 255 for i in range(off, off + n))
count = 0
def answer(t, d):
    global count
    rid = struct.unpack(">I", d[:4])[0]
    if t == 1:
        send(2, struct.pack(">I", 3))
    elif t == 3:
        send(102, struct.pack(">II", rid, 1) + b"h")
    elif t == 4:
        send(101, struct.pack(">IIII", rid, 0, 0, 0))
    elif t == 6:
        send(101, struct.pack(">IIII", rid, 0, 0, 0))
    elif t == 5:
        off, n = struct.unpack(">QI", d[9:21])
        count += 1
        if count % 3 == 0:
            n = max(1, n // 3)
        n = min(n, SIZE - off) if off < SIZE else 0
        if n == 0:
            send(101, struct.pack(">IIII", rid, 1, 0, 0))
        else:
            send(103, struct.pack(">II", rid, n) + content(off, n))
while True:
    ready = select.select([0], [], [], 0.05)[0]
    if ready:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        buf += chunk
        continue
    reqs = []
    while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
        n = struct.unpack(">I", buf[:4])[0]
        reqs.append((buf[4], buf[5:4 + n]))
        buf = buf[4 + n:]
    for t in most:
        most[t] = max(most[t], sum(1 for r in reqs if r[0] == t))
    for t, d in reversed(reqs):
        answer(t, d)
    o.flush()
open(REPORT, "w").write("%d %d" % (most[5], most[6]))
"#;

const ODD_SIZE: usize = 1_000_003;

#[test]
fn reads_and_writes_are_pipelined_and_reads_answered_out_of_order_and_short_give_the_exact_bytes() {
    within(120, || {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("odd");
        fs::write(&server, ODD_SERVER).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        fs::set_permissions(&server, mode).unwrap();
        let report = dir.path().join("report");
        let user = report.to_str().unwrap();
        let mut o = Options::new(&ODD_SIZE.to_string(), 22, user, "/dev/null", "/dev/null");
        o.program = server;
        let mut c = Session::connect(&o).unwrap();
        let h = c.create_exclusive("/w").unwrap();
        c.write_all(&h, 0, &noise(2 * 1024 * 1024)).unwrap();
        c.close(h).unwrap();
        let mut got = Vec::new();
        let mut r = c.open_read("/f").unwrap();
        r.read_to_end(&mut got).unwrap();
        r.close().unwrap();
        let expected: Vec<u8> = (0..ODD_SIZE)
            .map(|i| ((i * 7 + i / 251) % 256) as u8)
            .collect();
        assert_eq!(got.len(), ODD_SIZE);
        assert!(got == expected, "the bytes read differ");
        drop(c); // the server writes its report when its stdin closes
        let report = fs::read_to_string(&report).unwrap();
        let most: Vec<usize> = report.split(' ').map(|n| n.parse().unwrap()).collect();
        assert!(
            most[0] >= 8,
            "at most {} READs were in flight at once",
            most[0]
        );
        assert!(
            most[1] >= 8,
            "at most {} WRITEs were in flight at once",
            most[1]
        );
        assert!(
            most.iter().all(|&n| n <= 16),
            "more than 16 in flight: {report}"
        );
    });
}

#[test]
fn a_server_that_stops_answering_times_out_and_ssh_is_ended() {
    within(60, || {
        let dir = tempfile::tempdir().unwrap();
        let script = util::sshd::hung_sftp_server(dir.path());
        let s = Sshd::start_with_subsystem(script.to_str().unwrap());
        let mut session = connect(&s);
        session.set_answer_timeout(Duration::from_secs(2));
        let pid = session.ssh_pid();
        let started = std::time::Instant::now();
        let e = session.stat("/").unwrap_err();
        let waited = started.elapsed();
        assert!(matches!(e, SftpError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("stopped answering"), "{e}");
        assert!(
            e.hint().unwrap().contains("stopped answering"),
            "{:?}",
            e.hint()
        );
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(10),
            "gave up after {waited:?}"
        );
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "ssh ({pid}) was ended"
        );
        // The session stays unusable, and says why, without waiting again.
        let started = std::time::Instant::now();
        let e = session.stat("/").unwrap_err();
        assert!(e.to_string().contains("stopped answering"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
        // The default is two minutes.
        assert_eq!(
            vouch::target::sftp::client::ANSWER_TIMEOUT,
            Duration::from_secs(120)
        );
    });
}
