//! A blocking SFTP v3 session over a child `ssh -s HOST sftp` process.
//!
//! [`Session::connect`] spawns OpenSSH's client with every security-relevant option pinned on
//! its command line ([`Options::ssh_args`]): no user or system `ssh_config`, no agent, only the
//! given key, host keys only from the given known-hosts file and never a new one accepted. The
//! SFTP packets go over its stdin and stdout; its stderr is kept (the first
//! [`STDERR_LIMIT`] bytes) to explain a failed connection ([`classify_ssh_stderr`]).
//!
//! Writes and reads are pipelined: up to [`MAX_IN_FLIGHT`] requests of [`CHUNK`] bytes are
//! outstanding at a time, so a transfer is not one round trip per chunk, and memory stays
//! bounded (nothing is kept for a WRITE once it is sent; at most the in-flight DATA replies
//! for a read). After a transport failure or a protocol violation the session is unusable and
//! says so; after an error status it goes on.
//!
//! A connection that dies is found by ssh's keepalives (`ServerAliveInterval=15`,
//! `ServerAliveCountMax=4`), after which ssh exits and the call fails as a transport error,
//! about a minute later. An `sftp-server` process that hangs while its sshd still answers
//! keepalives is caught by the client itself: every wait for an answer polls ssh's stdout and
//! gives up when no byte came for [`ANSWER_TIMEOUT`] (longer than the keepalives take, so a
//! dead network is still ssh's to report), kills ssh and fails with [`SftpError::Timeout`].

use super::error::{classify_ssh_stderr, SftpError};
use super::protocol::{
    self, kind, open, read_packet, Attrs, ReadError, Request, Response, StatusCode, Statvfs,
};
use std::borrow::BorrowMut;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bytes per READ or WRITE request (OpenSSH's `sftp` uses 32 KiB too).
pub const CHUNK: usize = 32 * 1024;

/// Requests outstanding at once in a pipelined read or write.
pub const MAX_IN_FLIGHT: usize = 16;

/// How much of ssh's stderr is kept for error messages.
pub const STDERR_LIMIT: usize = 16 * 1024;

/// Entries a directory listing may have before the server is taken to be lying.
const MAX_DIR_ENTRIES: usize = 1_000_000;

/// Bytes of file names a directory listing may have, likewise.
const MAX_DIR_BYTES: usize = 64 * 1024 * 1024;

/// How long the client waits for the next byte of an answer while a request is outstanding,
/// before it takes the server to have stopped answering. Twice ssh's keepalive limit (4 × 15
/// s), so a connection that died is reported as such first; long enough for an fsync of a
/// large file on a slow disk.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a closing ssh gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// `fsync@openssh.com`: fsync(2) of an open handle.
pub const EXT_FSYNC: &str = "fsync@openssh.com";
/// `statvfs@openssh.com`: statvfs(2) of a path.
pub const EXT_STATVFS: &str = "statvfs@openssh.com";
/// `posix-rename@openssh.com`: rename(2), which replaces the target.
pub const EXT_POSIX_RENAME: &str = "posix-rename@openssh.com";

/// Where to connect and with what.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ssh program (default `ssh`, looked up in `PATH`).
    pub program: PathBuf,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Remote user.
    pub user: String,
    /// The private key (`-i`); no other key and no agent is used.
    pub identity: PathBuf,
    /// The only known-hosts file consulted.
    pub known_hosts: PathBuf,
    /// ssh's `ConnectTimeout` (whole seconds, at least 1).
    pub connect_timeout: Duration,
    /// How long to wait for the next byte of an answer ([`ANSWER_TIMEOUT`]).
    pub answer_timeout: Duration,
}

impl Options {
    /// Options with the default program (`ssh`), a 30 s connect timeout and the
    /// [`ANSWER_TIMEOUT`] (shorter when a test asks for it,
    /// [`crate::host::fault::sftp_timeout`]).
    pub fn new(
        host: &str,
        port: u16,
        user: &str,
        identity: impl Into<PathBuf>,
        known_hosts: impl Into<PathBuf>,
    ) -> Options {
        Options {
            program: PathBuf::from("ssh"),
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            identity: identity.into(),
            known_hosts: known_hosts.into(),
            connect_timeout: Duration::from_secs(30),
            answer_timeout: crate::host::fault::sftp_timeout().unwrap_or(ANSWER_TIMEOUT),
        }
    }

    /// The arguments ssh is started with.
    pub fn ssh_args(&self) -> Vec<OsString> {
        let timeout = self.connect_timeout.as_secs().max(1);
        let mut args: Vec<OsString> = vec!["-F".into(), "/dev/null".into()];
        for o in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "GlobalKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
            "ControlPath=none",
            "ServerAliveInterval=15",
            "ServerAliveCountMax=4",
        ] {
            args.extend(["-o".into(), o.into()]);
        }
        args.extend(["-o".into(), format!("ConnectTimeout={timeout}").into()]);
        // The key as `-o IdentityFile=` rather than `-i`: ssh stats a `-i` path before it
        // expands its `%` tokens, so no `-i` path with a `%` works. Both paths are quoted
        // (ssh splits option values at blanks) with `%` doubled, and made absolute.
        args.extend(["-o".into(), path_option("IdentityFile", &self.identity)]);
        args.extend([
            "-o".into(),
            path_option("UserKnownHostsFile", &self.known_hosts),
        ]);
        args.extend(["-p".into(), self.port.to_string().into()]);
        args.extend(["-l".into(), self.user.clone().into()]);
        args.extend([
            "-s".into(),
            "--".into(),
            self.host.clone().into(),
            "sftp".into(),
        ]);
        args
    }
}

/// `NAME="PATH"` for ssh's `-o`, the path absolute, quoted and its `%` doubled.
fn path_option(name: &str, path: &Path) -> OsString {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut option = format!("{name}=\"").into_bytes();
    option.extend(quoted(&percent_escaped(&path)));
    option.push(b'"');
    OsString::from_vec(option)
}

/// `path` with every `%` doubled, as ssh reads `%%` as `%`.
fn percent_escaped(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        if b == b'%' {
            out.push(b'%');
        }
        out.push(b);
    }
    out
}

/// `value` with `\` and `"` backslash-escaped, for inside double quotes of an ssh option.
fn quoted(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in value {
        if b == b'\\' || b == b'"' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// An open remote file.
#[derive(Debug)]
pub struct Handle {
    raw: Vec<u8>,
    path: String,
}

impl Handle {
    /// The path it was opened as.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// One SFTP session: an `ssh` child and the protocol state.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<Answers>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    next_id: u32,
    extensions: Vec<(String, Vec<u8>)>,
    broken: Option<String>,
}

impl Session {
    /// Starts ssh, sends INIT and takes the server's VERSION. Fails with
    /// [`SftpError::NotInstalled`], [`SftpError::HostKey`], [`SftpError::AuthRefused`],
    /// [`SftpError::Unreachable`] or [`SftpError::Transport`] as ssh's exit tells.
    pub fn connect(opts: &Options) -> Result<Session, SftpError> {
        // Its own process group: a Ctrl-C meant for vouch does not cut the connection that
        // vouch's cleanup still needs. ssh still ends with vouch: its stdin closes.
        let mut child = Command::new(&opts.program)
            .args(opts.ssh_args())
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => SftpError::NotInstalled {
                    program: opts.program.clone(),
                },
                _ => SftpError::Transport {
                    message: format!("cannot start {}: {e}", opts.program.display()),
                },
            })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_thread = Some(spawn_stderr_reader(stderr_pipe, Arc::clone(&stderr)));
        let mut session = Session {
            child,
            stdin: Some(stdin),
            stdout: BufReader::with_capacity(
                64 * 1024,
                Answers {
                    pipe: stdout,
                    timeout: opts.answer_timeout,
                },
            ),
            stderr,
            stderr_thread,
            next_id: 1,
            extensions: Vec::new(),
            broken: None,
        };
        session.init()?;
        Ok(session)
    }

    fn init(&mut self) -> Result<(), SftpError> {
        let mut init = Request::bare(kind::INIT);
        init.put_u32(protocol::VERSION);
        self.send(&init.finish())?;
        match self.recv()? {
            Response::Version {
                version: protocol::VERSION,
                extensions,
            } => {
                self.extensions = extensions;
                Ok(())
            }
            Response::Version { version, .. } => Err(self.violation(format!(
                "the server speaks SFTP version {version}, not {}",
                protocol::VERSION
            ))),
            other => Err(self.violation(format!(
                "the server answered INIT with {}",
                other.type_name()
            ))),
        }
    }

    /// The extensions the server advertised in its VERSION (name, data).
    pub fn extensions(&self) -> &[(String, Vec<u8>)] {
        &self.extensions
    }

    /// Whether the server advertised the extension `name`.
    pub fn has_extension(&self, name: &str) -> bool {
        self.extensions.iter().any(|(n, _)| n == name)
    }

    /// Waits at most `timeout` for each byte of an answer from now on.
    pub fn set_answer_timeout(&mut self, timeout: Duration) {
        self.stdout.get_mut().timeout = timeout;
    }

    /// The process id of the ssh child.
    pub fn ssh_pid(&self) -> u32 {
        self.child.id()
    }

    /// The attributes of `path`, following symbolic links.
    pub fn stat(&mut self, path: &str) -> Result<Attrs, SftpError> {
        self.path_attrs(kind::STAT, "stat", path)
    }

    /// The attributes of `path` itself.
    pub fn lstat(&mut self, path: &str) -> Result<Attrs, SftpError> {
        self.path_attrs(kind::LSTAT, "lstat", path)
    }

    /// The attributes of an open file.
    pub fn fstat(&mut self, handle: &Handle) -> Result<Attrs, SftpError> {
        let id = self.id();
        let mut r = Request::new(kind::FSTAT, id);
        r.put_str(&handle.raw);
        let op = format!("fstat {}", handle.path);
        match self.call(id, r, &op)? {
            Response::Attrs { attrs, .. } => Ok(attrs),
            other => Err(self.unexpected(&op, other)),
        }
    }

    fn path_attrs(&mut self, k: u8, name: &str, path: &str) -> Result<Attrs, SftpError> {
        let id = self.id();
        let mut r = Request::new(k, id);
        r.put_str(path.as_bytes());
        let op = format!("{name} {path}");
        match self.call(id, r, &op)? {
            Response::Attrs { attrs, .. } => Ok(attrs),
            other => Err(self.unexpected(&op, other)),
        }
    }

    /// The entries of the directory `path` without `.` and `..`, in the server's order.
    pub fn read_dir(&mut self, path: &str) -> Result<Vec<(String, Attrs)>, SftpError> {
        let id = self.id();
        let mut r = Request::new(kind::OPENDIR, id);
        r.put_str(path.as_bytes());
        let handle = self.handle_reply(id, r, &format!("opendir {path}"), path)?;
        let listed = self.read_dir_entries(&handle);
        let closed = self.close(handle);
        let entries = listed?;
        closed?;
        Ok(entries)
    }

    fn read_dir_entries(&mut self, handle: &Handle) -> Result<Vec<(String, Attrs)>, SftpError> {
        let op = format!("readdir {}", handle.path);
        let mut entries = Vec::new();
        let mut bytes = 0;
        loop {
            let id = self.id();
            let mut r = Request::new(kind::READDIR, id);
            r.put_str(&handle.raw);
            match self.call_raw(id, r)? {
                Response::Name { names, .. } => {
                    for n in names {
                        if n.filename != b"." && n.filename != b".." {
                            bytes += n.filename.len();
                            let name = String::from_utf8_lossy(&n.filename).into_owned();
                            entries.push((name, n.attrs));
                        }
                    }
                    if entries.len() > MAX_DIR_ENTRIES || bytes > MAX_DIR_BYTES {
                        return Err(self.violation(format!(
                            "{} lists more than {MAX_DIR_ENTRIES} entries or {MAX_DIR_BYTES} bytes of names",
                            handle.path
                        )));
                    }
                }
                Response::Status {
                    code: StatusCode::Eof,
                    ..
                } => return Ok(entries),
                other => return Err(self.unexpected(&op, other)),
            }
        }
    }

    /// Creates `path` (mode 0600) for writing; fails when anything exists under that name.
    pub fn create_exclusive(&mut self, path: &str) -> Result<Handle, SftpError> {
        self.open(path, open::CREAT | open::EXCL | open::WRITE, Some(0o600))
    }

    /// Opens `path` with the OPEN flags `pflags` ([`protocol::open`]), creating it with
    /// `mode` when it is given and the flags create.
    pub fn open(
        &mut self,
        path: &str,
        pflags: u32,
        mode: Option<u32>,
    ) -> Result<Handle, SftpError> {
        let id = self.id();
        let mut r = Request::new(kind::OPEN, id);
        r.put_str(path.as_bytes()).put_u32(pflags);
        r.put_attrs(&Attrs {
            permissions: mode,
            ..Attrs::default()
        });
        self.handle_reply(id, r, &format!("open {path}"), path)
    }

    fn handle_reply(
        &mut self,
        id: u32,
        r: Request,
        op: &str,
        path: &str,
    ) -> Result<Handle, SftpError> {
        match self.call(id, r, op)? {
            Response::Handle { handle, .. } => Ok(Handle {
                raw: handle,
                path: path.to_owned(),
            }),
            other => Err(self.unexpected(op, other)),
        }
    }

    /// Writes `data` at `offset`, in [`CHUNK`]-sized WRITEs with up to [`MAX_IN_FLIGHT`]
    /// outstanding. Returns when the server has answered every one; the first error status
    /// is the error (the other answers are still collected, so the session goes on).
    pub fn write_all(
        &mut self,
        handle: &Handle,
        offset: u64,
        data: &[u8],
    ) -> Result<(), SftpError> {
        let mut in_flight: VecDeque<u32> = VecDeque::new();
        let mut first_error = None;
        let mut pos = 0;
        // After an error status no more WRITEs go out, but the outstanding ones are answered.
        let more = |pos: usize, failed: bool| !failed && pos < data.len();
        while more(pos, first_error.is_some()) || !in_flight.is_empty() {
            if more(pos, first_error.is_some()) && in_flight.len() < MAX_IN_FLIGHT {
                let n = CHUNK.min(data.len() - pos);
                let id = self.id();
                let mut r = Request::new(kind::WRITE, id);
                r.put_str(&handle.raw)
                    .put_u64(offset + pos as u64)
                    .put_str(&data[pos..pos + n]);
                self.send(&r.finish())?;
                in_flight.push_back(id);
                pos += n;
                continue;
            }
            let reply = self.recv_one_of(&mut in_flight)?;
            match reply {
                Response::Status {
                    code: StatusCode::Ok,
                    ..
                } => {}
                Response::Status { code, message, .. } => {
                    first_error.get_or_insert(SftpError::Status {
                        op: format!("write {}", handle.path),
                        code,
                        message,
                    });
                }
                other => return Err(self.unexpected(&format!("write {}", handle.path), other)),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Flushes an open file to the server's disk with `fsync@openssh.com`. Returns `false`
    /// (and sends nothing) when the server did not advertise it.
    pub fn fsync(&mut self, handle: &Handle) -> Result<bool, SftpError> {
        if !self.has_extension(EXT_FSYNC) {
            return Ok(false);
        }
        let id = self.id();
        let mut r = Request::new(kind::EXTENDED, id);
        r.put_str(EXT_FSYNC.as_bytes()).put_str(&handle.raw);
        self.status_reply(id, r, &format!("fsync {}", handle.path))?;
        Ok(true)
    }

    /// Closes an open file or directory.
    pub fn close(&mut self, handle: Handle) -> Result<(), SftpError> {
        let id = self.id();
        let mut r = Request::new(kind::CLOSE, id);
        r.put_str(&handle.raw);
        self.status_reply(id, r, &format!("close {}", handle.path))
    }

    /// Opens `path` for reading, as a [`std::io::Read`] with pipelined READs.
    pub fn open_read(&mut self, path: &str) -> Result<RemoteReader<'_>, SftpError> {
        Reader::new(self, path)
    }

    /// [`Session::open_read`] for a reader that owns the session: it lives on its own (for a
    /// `Box<dyn Read + Send>`), and the session ends when it is dropped.
    pub fn into_reader(self, path: &str) -> Result<Reader<Session>, SftpError> {
        Reader::new(self, path)
    }

    /// SFTP v3 RENAME. OpenSSH's server does it as link(2) + unlink(2), so it fails
    /// (`SSH_FX_FAILURE`) when `to` exists and never replaces a file.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), SftpError> {
        let id = self.id();
        let mut r = Request::new(kind::RENAME, id);
        r.put_str(from.as_bytes()).put_str(to.as_bytes());
        self.status_reply(id, r, &format!("rename {from} {to}"))
    }

    /// rename(2) through `posix-rename@openssh.com`: replaces `to` when it exists.
    pub fn posix_rename(&mut self, from: &str, to: &str) -> Result<(), SftpError> {
        if !self.has_extension(EXT_POSIX_RENAME) {
            return Err(SftpError::Unsupported(EXT_POSIX_RENAME));
        }
        let id = self.id();
        let mut r = Request::new(kind::EXTENDED, id);
        r.put_str(EXT_POSIX_RENAME.as_bytes())
            .put_str(from.as_bytes())
            .put_str(to.as_bytes());
        self.status_reply(id, r, &format!("posix-rename {from} {to}"))
    }

    /// Removes the file `path`.
    pub fn remove(&mut self, path: &str) -> Result<(), SftpError> {
        self.path_status(kind::REMOVE, "remove", path)
    }

    /// Removes the empty directory `path`.
    pub fn rmdir(&mut self, path: &str) -> Result<(), SftpError> {
        self.path_status(kind::RMDIR, "rmdir", path)
    }

    /// Creates the directory `path` with mode 0700.
    pub fn mkdir(&mut self, path: &str) -> Result<(), SftpError> {
        let id = self.id();
        let mut r = Request::new(kind::MKDIR, id);
        r.put_str(path.as_bytes()).put_attrs(&Attrs {
            permissions: Some(0o700),
            ..Attrs::default()
        });
        self.status_reply(id, r, &format!("mkdir {path}"))
    }

    fn path_status(&mut self, k: u8, name: &str, path: &str) -> Result<(), SftpError> {
        let id = self.id();
        let mut r = Request::new(k, id);
        r.put_str(path.as_bytes());
        self.status_reply(id, r, &format!("{name} {path}"))
    }

    /// statvfs(2) of the filesystem holding `path`, through `statvfs@openssh.com`.
    pub fn statvfs(&mut self, path: &str) -> Result<Statvfs, SftpError> {
        if !self.has_extension(EXT_STATVFS) {
            return Err(SftpError::Unsupported(EXT_STATVFS));
        }
        let id = self.id();
        let mut r = Request::new(kind::EXTENDED, id);
        r.put_str(EXT_STATVFS.as_bytes()).put_str(path.as_bytes());
        let op = format!("statvfs {path}");
        match self.call(id, r, &op)? {
            Response::ExtendedReply { data, .. } => Statvfs::decode(&data).map_err(|v| {
                self.broken = Some(v.0.clone());
                SftpError::from(v)
            }),
            other => Err(self.unexpected(&op, other)),
        }
    }

    // --- The request/response machinery. ---

    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Sends `r` and takes the reply to `id`; an error status is the error, named `op`.
    fn call(&mut self, id: u32, r: Request, op: &str) -> Result<Response, SftpError> {
        match self.call_raw(id, r)? {
            Response::Status { code, message, .. } if code != StatusCode::Ok => {
                Err(SftpError::Status {
                    op: op.to_owned(),
                    code,
                    message,
                })
            }
            reply => Ok(reply),
        }
    }

    /// Sends `r` and takes the reply to `id`, whatever it is.
    fn call_raw(&mut self, id: u32, r: Request) -> Result<Response, SftpError> {
        self.send(&r.finish())?;
        let mut pending = VecDeque::from([id]);
        self.recv_one_of(&mut pending)
    }

    fn status_reply(&mut self, id: u32, r: Request, op: &str) -> Result<(), SftpError> {
        match self.call(id, r, op)? {
            Response::Status { .. } => Ok(()),
            other => Err(self.unexpected(op, other)),
        }
    }

    /// The error for a reply of the wrong type (an error status keeps its meaning).
    fn unexpected(&mut self, op: &str, reply: Response) -> SftpError {
        match reply {
            Response::Status { code, message, .. } if code != StatusCode::Ok => SftpError::Status {
                op: op.to_owned(),
                code,
                message,
            },
            other => self.violation(format!("{op}: the server answered {}", other.type_name())),
        }
    }

    fn violation(&mut self, message: String) -> SftpError {
        self.broken = Some(message.clone());
        SftpError::Protocol(message)
    }

    fn usable(&self) -> Result<(), SftpError> {
        match &self.broken {
            Some(why) => Err(SftpError::Transport {
                message: format!("the session is unusable after an earlier failure: {why}"),
            }),
            None => Ok(()),
        }
    }

    fn send(&mut self, packet: &[u8]) -> Result<(), SftpError> {
        self.usable()?;
        let stdin = self.stdin.as_mut().expect("stdin is open while usable");
        if let Err(e) = stdin.write_all(packet).and_then(|()| stdin.flush()) {
            return Err(self.transport_failure(&format!("sending a request failed ({e})")));
        }
        Ok(())
    }

    /// Takes the next packet; it must answer one of the ids in `pending`, which it is
    /// removed from.
    fn recv_one_of(&mut self, pending: &mut VecDeque<u32>) -> Result<Response, SftpError> {
        let reply = self.recv()?;
        let Some(id) = reply.id() else {
            return Err(self.violation("the server sent a second VERSION".into()));
        };
        match pending.iter().position(|&p| p == id) {
            Some(i) => {
                pending.remove(i);
                Ok(reply)
            }
            None => Err(self.violation(format!(
                "the server answered request {id}, which is not outstanding"
            ))),
        }
    }

    fn recv(&mut self) -> Result<Response, SftpError> {
        self.usable()?;
        match read_packet(&mut self.stdout, protocol::MAX_PACKET) {
            Ok(packet) => Response::decode(&packet).map_err(|v| self.violation(v.0)),
            Err(ReadError::Violation(v)) => Err(self.violation(v.0)),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.transport_failure("the connection closed"))
            }
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
                Err(self.stopped_answering())
            }
            Err(ReadError::Io(e)) => {
                Err(self.transport_failure(&format!("reading a reply failed ({e})")))
            }
        }
    }

    /// Kills ssh after the server sent nothing for the answer timeout.
    fn stopped_answering(&mut self) -> SftpError {
        let waited = self.stdout.get_ref().timeout;
        let _ = self.child.kill();
        self.shut_down();
        let e = SftpError::Timeout { waited };
        self.broken = Some(e.to_string());
        e
    }

    /// Ends ssh and explains the failure from its stderr and exit status.
    fn transport_failure(&mut self, what: &str) -> SftpError {
        let status = self.shut_down();
        let stderr = self.stderr_text();
        let what = match status {
            Some(s) => format!("{what}; ssh exited with {s}"),
            None => what.to_owned(),
        };
        self.broken = Some(what.clone());
        classify_ssh_stderr(&stderr, &what)
    }

    /// Closes ssh's stdin, waits up to [`EXIT_GRACE`] for it to exit, kills it otherwise.
    fn shut_down(&mut self) -> Option<std::process::ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + EXIT_GRACE;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        if let Some(t) = self.stderr_thread.take() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        status
    }

    fn stderr_text(&self) -> String {
        let buf = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// ssh's stdout, where the answers come: each read waits at most `timeout` for a byte (poll(2)
/// on the pipe), then fails with [`io::ErrorKind::TimedOut`].
struct Answers {
    pipe: ChildStdout,
    timeout: Duration,
}

impl Read for Answers {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.pipe.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, wait) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer for {} s", self.timeout.as_secs()),
                    ))
                }
                Ok(_) => return self.pipe.read(buf),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }
}

/// Reads ssh's stderr to its end, keeping the first [`STDERR_LIMIT`] bytes.
fn spawn_stderr_reader(
    mut pipe: std::process::ChildStderr,
    into: Arc<Mutex<Vec<u8>>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut buf = into.lock().unwrap_or_else(|p| p.into_inner());
                    let room = STDERR_LIMIT.saturating_sub(buf.len());
                    buf.extend_from_slice(&chunk[..n.min(room)]);
                }
            }
        }
    })
}

/// A remote file opened by [`Session::open_read`] (borrowing the session) or
/// [`Session::into_reader`] (owning it): [`Read`] with up to [`MAX_IN_FLIGHT`] READs
/// outstanding. Dropping it collects the outstanding replies and closes the handle.
pub struct Reader<S: BorrowMut<Session>> {
    /// Always there but while [`Reader::into_session`] hands it back.
    session: Option<S>,
    handle: Option<Handle>,
    /// The offset of the next READ to send.
    next: u64,
    /// Outstanding READs, oldest first: id, offset, length.
    in_flight: VecDeque<(u32, u64, usize)>,
    /// Replies that came before an older one's.
    early: HashMap<u32, Response>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

/// A reader that borrows its session.
pub type RemoteReader<'a> = Reader<&'a mut Session>;

impl<S: BorrowMut<Session>> Reader<S> {
    fn new(mut session: S, path: &str) -> Result<Reader<S>, SftpError> {
        let handle = session.borrow_mut().open(path, open::READ, None)?;
        Ok(Reader::opened(session, handle))
    }

    /// A reader of `handle`, a file `session` opened for reading.
    pub fn opened(session: S, handle: Handle) -> Reader<S> {
        Reader {
            session: Some(session),
            handle: Some(handle),
            next: 0,
            in_flight: VecDeque::new(),
            early: HashMap::new(),
            buf: Vec::new(),
            pos: 0,
            eof: false,
        }
    }

    fn s(&mut self) -> &mut Session {
        self.session
            .as_mut()
            .expect("the session is there until handed back")
            .borrow_mut()
    }

    /// Closes the file and hands the session back (for the next file of a chain).
    pub fn into_session(mut self) -> Result<S, SftpError> {
        self.drain()?;
        let handle = self.handle.take().expect("the handle is open until closed");
        self.s().close(handle)?;
        Ok(self
            .session
            .take()
            .expect("the session is there until handed back"))
    }

    /// Closes the file, reporting a failed close.
    pub fn close(mut self) -> Result<(), SftpError> {
        self.drain()?;
        let handle = self.handle.take().expect("the handle is open until closed");
        self.s().close(handle)
    }

    fn handle(&self) -> &Handle {
        self.handle
            .as_ref()
            .expect("the handle is open until closed")
    }

    /// The reply to `id`, which is outstanding.
    fn reply(&mut self, id: u32) -> Result<Response, SftpError> {
        if let Some(r) = self.early.remove(&id) {
            return Ok(r);
        }
        loop {
            let mut ids: VecDeque<u32> = self.in_flight.iter().map(|f| f.0).collect();
            ids.push_back(id);
            ids.retain(|i| !self.early.contains_key(i));
            let reply = self.s().recv_one_of(&mut ids)?;
            let got = reply.id().expect("recv_one_of checked the id");
            if got == id {
                return Ok(reply);
            }
            self.early.insert(got, reply);
        }
    }

    /// Collects every outstanding reply and forgets them.
    fn drain(&mut self) -> Result<(), SftpError> {
        while let Some((id, _, _)) = self.in_flight.pop_front() {
            self.reply(id)?;
        }
        self.early.clear();
        Ok(())
    }

    /// Tops the pipeline up, then takes the oldest READ's reply into `buf`.
    fn fill(&mut self) -> Result<(), SftpError> {
        while !self.eof && self.in_flight.len() < MAX_IN_FLIGHT {
            let id = self.s().id();
            let mut r = Request::new(kind::READ, id);
            r.put_str(&self.handle().raw)
                .put_u64(self.next)
                .put_u32(CHUNK as u32);
            self.s().send(&r.finish())?;
            self.in_flight.push_back((id, self.next, CHUNK));
            self.next += CHUNK as u64;
        }
        let Some((id, offset, len)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let op = format!("read {}", self.handle().path);
        match self.reply(id)? {
            Response::Data { data, .. } if data.is_empty() || data.len() > len => Err(self
                .s()
                .violation(format!("{op}: {} bytes for a READ of {len}", data.len()))),
            Response::Data { data, .. } => {
                if data.len() < len {
                    // A short read: the later READs are past a gap; ask again from here.
                    self.drain()?;
                    self.next = offset + data.len() as u64;
                }
                self.buf = data;
                self.pos = 0;
                Ok(())
            }
            Response::Status {
                code: StatusCode::Eof,
                ..
            } => {
                self.eof = true;
                self.drain()
            }
            other => Err(self.s().unexpected(&op, other)),
        }
    }
}

impl<S: BorrowMut<Session>> Read for Reader<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.buf.len() {
                let n = out.len().min(self.buf.len() - self.pos);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.eof && self.in_flight.is_empty() {
                return Ok(0);
            }
            self.fill().map_err(io::Error::other)?;
        }
    }
}

impl<S: BorrowMut<Session>> Drop for Reader<S> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            if self.drain().is_ok() {
                let _ = self.s().close(handle);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_is_pinned_to_its_key_known_hosts_and_strict_checking() {
        let mut o = Options::new("-oProxyCommand=x", 2222, "backup", "/k %h", "/kh \"q\"");
        o.connect_timeout = Duration::from_millis(200);
        let args: Vec<String> = o
            .ssh_args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        for pinned in [
            "-F /dev/null",
            "-o BatchMode=yes",
            "-o StrictHostKeyChecking=yes",
            "-o GlobalKnownHostsFile=/dev/null",
            "-o IdentitiesOnly=yes",
            "-o IdentityAgent=none",
            "-o ControlPath=none",
            "-o ConnectTimeout=1",
            "-o IdentityFile=\"/k %%h\"",
            "-o UserKnownHostsFile=\"/kh \\\"q\\\"\"",
            "-p 2222",
            "-l backup",
        ] {
            assert!(joined.contains(pinned), "{pinned} not in {joined}");
        }
        // The host comes after `--`, so it cannot be taken for an option.
        assert_eq!(
            args[args.len() - 4..],
            ["-s", "--", "-oProxyCommand=x", "sftp"]
        );
    }
}
