//! SFTP version 3 on the wire (draft-ietf-secsh-filexfer-02), plus the two OpenSSH extensions
//! vouch uses (`fsync@openssh.com`, `statvfs@openssh.com`; openssh-portable `PROTOCOL` §4).
//!
//! A packet is `uint32 length, byte type, payload`; numbers are big-endian, strings are
//! `uint32 length, bytes`. Requests are built with [`Request`]; what the server sends is read
//! with [`read_packet`] and turned into a [`Response`] by [`Response::decode`]. The server is
//! not trusted: a packet longer than [`MAX_PACKET`], a length that runs past its packet, a
//! packet cut short by the end of the stream, an unknown type or bytes left over are all a
//! [`Violation`], never a panic, and no allocation is larger than the packet limit.

use std::fmt;
use std::io::{self, Read};

/// The largest packet accepted from the server, as OpenSSH's own client limits it
/// (`SFTP_MAX_MSG_LENGTH`, 256 KiB).
pub const MAX_PACKET: u32 = 256 * 1024;

/// The protocol version vouch speaks.
pub const VERSION: u32 = 3;

/// Packet types (draft-02 §3).
pub mod kind {
    #![allow(missing_docs)]
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const OPENDIR: u8 = 11;
    pub const READDIR: u8 = 12;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const NAME: u8 = 104;
    pub const ATTRS: u8 = 105;
    pub const EXTENDED: u8 = 200;
    pub const EXTENDED_REPLY: u8 = 201;
}

/// `pflags` of an OPEN (draft-02 §6.3).
pub mod open {
    #![allow(missing_docs)]
    pub const READ: u32 = 0x01;
    pub const WRITE: u32 = 0x02;
    pub const APPEND: u32 = 0x04;
    pub const CREAT: u32 = 0x08;
    pub const TRUNC: u32 = 0x10;
    pub const EXCL: u32 = 0x20;
}

/// Which fields an ATTRS carries (draft-02 §5).
mod attr {
    pub const SIZE: u32 = 0x01;
    pub const UIDGID: u32 = 0x02;
    pub const PERMISSIONS: u32 = 0x04;
    pub const ACMODTIME: u32 = 0x08;
    pub const EXTENDED: u32 = 0x8000_0000;
}

/// `SSH_FXE_STATVFS_ST_RDONLY` in the `f_flag` of a `statvfs@openssh.com` reply.
pub const STATVFS_RDONLY: u64 = 0x1;

/// A broken rule of the protocol by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn violation<T>(what: impl Into<String>) -> Result<T, Violation> {
    Err(Violation(what.into()))
}

/// One request packet under construction: [`Request::new`] writes the type and request id,
/// the `put_*` methods the fields, [`Request::finish`] the length in front.
pub struct Request(Vec<u8>);

impl Request {
    /// A packet of type `kind`, with `id` as its first field.
    pub fn new(kind: u8, id: u32) -> Request {
        let mut r = Request::bare(kind);
        r.put_u32(id);
        r
    }

    /// A packet without a request id (INIT).
    pub fn bare(kind: u8) -> Request {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0, 0, 0, 0, kind]);
        Request(buf)
    }

    /// Appends a `uint32`.
    pub fn put_u32(&mut self, v: u32) -> &mut Request {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a `uint64`.
    pub fn put_u64(&mut self, v: u64) -> &mut Request {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a `string` (length and bytes).
    pub fn put_str(&mut self, s: &[u8]) -> &mut Request {
        let len = u32::try_from(s.len()).expect("an SFTP string is shorter than 4 GiB");
        self.put_u32(len);
        self.0.extend_from_slice(s);
        self
    }

    /// Appends an ATTRS with only the fields that are `Some`.
    pub fn put_attrs(&mut self, attrs: &Attrs) -> &mut Request {
        let mut flags = 0;
        if attrs.size.is_some() {
            flags |= attr::SIZE;
        }
        if attrs.uid.is_some() && attrs.gid.is_some() {
            flags |= attr::UIDGID;
        }
        if attrs.permissions.is_some() {
            flags |= attr::PERMISSIONS;
        }
        if attrs.atime.is_some() && attrs.mtime.is_some() {
            flags |= attr::ACMODTIME;
        }
        self.put_u32(flags);
        if let Some(size) = attrs.size {
            self.put_u64(size);
        }
        if let (Some(uid), Some(gid)) = (attrs.uid, attrs.gid) {
            self.put_u32(uid).put_u32(gid);
        }
        if let Some(perm) = attrs.permissions {
            self.put_u32(perm);
        }
        if let (Some(a), Some(m)) = (attrs.atime, attrs.mtime) {
            self.put_u32(a).put_u32(m);
        }
        self
    }

    /// The finished packet, its length filled in.
    pub fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len() - 4).expect("a request is shorter than 4 GiB");
        self.0[..4].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

/// A packet as it came off the wire: its type and the bytes after it.
#[derive(Debug)]
pub struct Packet {
    /// The type byte.
    pub kind: u8,
    /// Everything after the type byte.
    pub body: Vec<u8>,
}

/// Why [`read_packet`] gave no packet.
#[derive(Debug)]
pub enum ReadError {
    /// The stream failed or ended (cleanly or in the middle of a packet).
    Io(io::Error),
    /// The length field broke the rules.
    Violation(Violation),
}

/// Reads one packet, refusing a length of 0 or above `max` before allocating anything. A
/// stream that ends inside a packet is an [`io::ErrorKind::UnexpectedEof`].
pub fn read_packet(r: &mut impl Read, max: u32) -> Result<Packet, ReadError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(ReadError::Io)?;
    let len = u32::from_be_bytes(len);
    if len == 0 {
        return Err(ReadError::Violation(Violation(
            "the server sent a packet of length 0".into(),
        )));
    }
    if len > max {
        return Err(ReadError::Violation(Violation(format!(
            "the server sent a packet of {len} bytes, more than the {max} allowed"
        ))));
    }
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind).map_err(ReadError::Io)?;
    let mut body = vec![0u8; len as usize - 1];
    r.read_exact(&mut body).map_err(ReadError::Io)?;
    Ok(Packet {
        kind: kind[0],
        body,
    })
}

/// Reads the fields of a packet body, every length checked against what is left.
pub struct Fields<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    /// Fields of `buf`, named `what` in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Fields<'a> {
        Fields { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Violation> {
        if self.buf.len() < n {
            return violation(format!(
                "a {} packet ends {} bytes short",
                self.what,
                n - self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A `uint32`.
    pub fn u32(&mut self) -> Result<u32, Violation> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `uint64`.
    pub fn u64(&mut self) -> Result<u64, Violation> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A `string`, borrowed from the packet.
    pub fn bytes(&mut self) -> Result<&'a [u8], Violation> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// A `string` as text (invalid UTF-8 replaced).
    pub fn text(&mut self) -> Result<String, Violation> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }

    /// Whether the body is used up.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails when bytes are left over.
    pub fn end(&self) -> Result<(), Violation> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            violation(format!(
                "a {} packet has {} bytes too many",
                self.what,
                self.buf.len()
            ))
        }
    }

    /// An ATTRS (draft-02 §5); extended attributes are read and dropped.
    pub fn attrs(&mut self) -> Result<Attrs, Violation> {
        let flags = self.u32()?;
        let mut a = Attrs::default();
        if flags & attr::SIZE != 0 {
            a.size = Some(self.u64()?);
        }
        if flags & attr::UIDGID != 0 {
            a.uid = Some(self.u32()?);
            a.gid = Some(self.u32()?);
        }
        if flags & attr::PERMISSIONS != 0 {
            a.permissions = Some(self.u32()?);
        }
        if flags & attr::ACMODTIME != 0 {
            a.atime = Some(self.u32()?);
            a.mtime = Some(self.u32()?);
        }
        if flags & attr::EXTENDED != 0 {
            let count = self.u32()?;
            for _ in 0..count {
                self.bytes()?;
                self.bytes()?;
            }
        }
        Ok(a)
    }
}

/// File attributes; a field the server did not send is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Size in bytes.
    pub size: Option<u64>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// `st_mode`: the file type bits and the permissions.
    pub permissions: Option<u32>,
    /// Last access, seconds since the epoch.
    pub atime: Option<u32>,
    /// Last modification, seconds since the epoch.
    pub mtime: Option<u32>,
}

impl Attrs {
    const TYPE_MASK: u32 = 0o170000;

    /// Whether the file type bits say directory.
    pub fn is_dir(&self) -> bool {
        self.permissions
            .is_some_and(|p| p & Self::TYPE_MASK == 0o040000)
    }

    /// Whether the file type bits say regular file.
    pub fn is_file(&self) -> bool {
        self.permissions
            .is_some_and(|p| p & Self::TYPE_MASK == 0o100000)
    }

    /// Whether the file type bits say symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.permissions
            .is_some_and(|p| p & Self::TYPE_MASK == 0o120000)
    }
}

/// The status codes of SFTP v3 (draft-02 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    /// `SSH_FX_OK`.
    Ok,
    /// `SSH_FX_EOF`: read past the end, or no more directory entries.
    Eof,
    /// `SSH_FX_NO_SUCH_FILE`.
    NoSuchFile,
    /// `SSH_FX_PERMISSION_DENIED`.
    PermissionDenied,
    /// `SSH_FX_FAILURE`: anything else; OpenSSH's answer for a rename onto an existing name
    /// and for a full disk.
    Failure,
    /// `SSH_FX_BAD_MESSAGE`.
    BadMessage,
    /// `SSH_FX_NO_CONNECTION`.
    NoConnection,
    /// `SSH_FX_CONNECTION_LOST`.
    ConnectionLost,
    /// `SSH_FX_OP_UNSUPPORTED`.
    OpUnsupported,
    /// A code outside version 3.
    Other(u32),
}

impl StatusCode {
    /// The code of the number on the wire.
    pub fn from_u32(v: u32) -> StatusCode {
        use StatusCode::*;
        match v {
            0 => Ok,
            1 => Eof,
            2 => NoSuchFile,
            3 => PermissionDenied,
            4 => Failure,
            5 => BadMessage,
            6 => NoConnection,
            7 => ConnectionLost,
            8 => OpUnsupported,
            n => Other(n),
        }
    }

    /// The protocol's name of the code.
    pub fn name(self) -> String {
        use StatusCode::*;
        match self {
            Ok => "SSH_FX_OK".into(),
            Eof => "SSH_FX_EOF".into(),
            NoSuchFile => "SSH_FX_NO_SUCH_FILE".into(),
            PermissionDenied => "SSH_FX_PERMISSION_DENIED".into(),
            Failure => "SSH_FX_FAILURE".into(),
            BadMessage => "SSH_FX_BAD_MESSAGE".into(),
            NoConnection => "SSH_FX_NO_CONNECTION".into(),
            ConnectionLost => "SSH_FX_CONNECTION_LOST".into(),
            OpUnsupported => "SSH_FX_OP_UNSUPPORTED".into(),
            Other(n) => format!("status {n}"),
        }
    }
}

/// One entry of a NAME reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// The file name (for READDIR: within the directory).
    pub filename: Vec<u8>,
    /// The attributes sent with it.
    pub attrs: Attrs,
}

/// The reply of `statvfs@openssh.com` (openssh-portable `PROTOCOL` §4.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statvfs {
    /// `f_bsize`.
    pub bsize: u64,
    /// `f_frsize`: the unit of the block counts.
    pub frsize: u64,
    /// `f_blocks`.
    pub blocks: u64,
    /// `f_bfree`.
    pub bfree: u64,
    /// `f_bavail`: free blocks for an unprivileged user.
    pub bavail: u64,
    /// `f_files`.
    pub files: u64,
    /// `f_ffree`.
    pub ffree: u64,
    /// `f_favail`: free inodes for an unprivileged user.
    pub favail: u64,
    /// `f_fsid`.
    pub fsid: u64,
    /// `f_flag` ([`STATVFS_RDONLY`]).
    pub flag: u64,
    /// `f_namemax`.
    pub namemax: u64,
}

impl Statvfs {
    /// Decodes the data of the EXTENDED_REPLY.
    pub fn decode(data: &[u8]) -> Result<Statvfs, Violation> {
        let mut f = Fields::new(data, "statvfs reply");
        let s = Statvfs {
            bsize: f.u64()?,
            frsize: f.u64()?,
            blocks: f.u64()?,
            bfree: f.u64()?,
            bavail: f.u64()?,
            files: f.u64()?,
            ffree: f.u64()?,
            favail: f.u64()?,
            fsid: f.u64()?,
            flag: f.u64()?,
            namemax: f.u64()?,
        };
        f.end()?;
        Ok(s)
    }

    /// Bytes free for an unprivileged user.
    pub fn available_bytes(&self) -> u64 {
        self.bavail.saturating_mul(self.frsize)
    }

    /// Size of the filesystem in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.frsize)
    }

    /// Whether the filesystem is mounted read-only.
    pub fn read_only(&self) -> bool {
        self.flag & STATVFS_RDONLY != 0
    }
}

/// A decoded server packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// VERSION: the server's version and its extensions (name, data).
    Version {
        /// The version the server speaks.
        version: u32,
        /// Its extensions in the order sent.
        extensions: Vec<(String, Vec<u8>)>,
    },
    /// STATUS.
    Status {
        /// Request id.
        id: u32,
        /// The code.
        code: StatusCode,
        /// The server's message (empty when it sent none).
        message: String,
    },
    /// HANDLE.
    Handle {
        /// Request id.
        id: u32,
        /// The opaque handle.
        handle: Vec<u8>,
    },
    /// DATA.
    Data {
        /// Request id.
        id: u32,
        /// The bytes read.
        data: Vec<u8>,
    },
    /// NAME.
    Name {
        /// Request id.
        id: u32,
        /// The entries.
        names: Vec<Name>,
    },
    /// ATTRS.
    Attrs {
        /// Request id.
        id: u32,
        /// The attributes.
        attrs: Attrs,
    },
    /// EXTENDED_REPLY.
    ExtendedReply {
        /// Request id.
        id: u32,
        /// The extension's data.
        data: Vec<u8>,
    },
}

impl Response {
    /// Decodes a packet the server sent; a type no server sends is a violation.
    pub fn decode(packet: &Packet) -> Result<Response, Violation> {
        let body = &packet.body;
        match packet.kind {
            kind::VERSION => decode_version(body),
            kind::STATUS => decode_status(body),
            kind::HANDLE => {
                let mut f = Fields::new(body, "HANDLE");
                let id = f.u32()?;
                let handle = f.bytes()?.to_vec();
                f.end()?;
                if handle.len() > 256 {
                    return violation("the server sent a handle longer than 256 bytes");
                }
                Ok(Response::Handle { id, handle })
            }
            kind::DATA => {
                let mut f = Fields::new(body, "DATA");
                let id = f.u32()?;
                let data = f.bytes()?.to_vec();
                f.end()?;
                Ok(Response::Data { id, data })
            }
            kind::NAME => decode_name(body),
            kind::ATTRS => {
                let mut f = Fields::new(body, "ATTRS");
                let id = f.u32()?;
                let attrs = f.attrs()?;
                f.end()?;
                Ok(Response::Attrs { id, attrs })
            }
            kind::EXTENDED_REPLY => {
                let mut f = Fields::new(body, "EXTENDED_REPLY");
                let id = f.u32()?;
                Ok(Response::ExtendedReply {
                    id,
                    data: f.buf.to_vec(),
                })
            }
            other => violation(format!("the server sent a packet of unknown type {other}")),
        }
    }

    /// The request id the response answers (`None` for VERSION).
    pub fn id(&self) -> Option<u32> {
        match self {
            Response::Version { .. } => None,
            Response::Status { id, .. }
            | Response::Handle { id, .. }
            | Response::Data { id, .. }
            | Response::Name { id, .. }
            | Response::Attrs { id, .. }
            | Response::ExtendedReply { id, .. } => Some(*id),
        }
    }

    /// The packet type's name, for errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            Response::Version { .. } => "VERSION",
            Response::Status { .. } => "STATUS",
            Response::Handle { .. } => "HANDLE",
            Response::Data { .. } => "DATA",
            Response::Name { .. } => "NAME",
            Response::Attrs { .. } => "ATTRS",
            Response::ExtendedReply { .. } => "EXTENDED_REPLY",
        }
    }
}

fn decode_version(body: &[u8]) -> Result<Response, Violation> {
    let mut f = Fields::new(body, "VERSION");
    let version = f.u32()?;
    let mut extensions = Vec::new();
    while !f.is_empty() {
        let name = f.text()?;
        let data = f.bytes()?.to_vec();
        extensions.push((name, data));
    }
    Ok(Response::Version {
        version,
        extensions,
    })
}

/// A STATUS; the message and language tag are optional, as some servers leave them out.
fn decode_status(body: &[u8]) -> Result<Response, Violation> {
    let mut f = Fields::new(body, "STATUS");
    let id = f.u32()?;
    let code = StatusCode::from_u32(f.u32()?);
    let mut message = String::new();
    if !f.is_empty() {
        message = f.text()?;
        if !f.is_empty() {
            f.bytes()?;
        }
    }
    f.end()?;
    Ok(Response::Status { id, code, message })
}

fn decode_name(body: &[u8]) -> Result<Response, Violation> {
    let mut f = Fields::new(body, "NAME");
    let id = f.u32()?;
    let count = f.u32()?;
    // Each entry takes at least 12 bytes, so a count beyond that is a lie.
    if count as usize > body.len() / 12 {
        return violation(format!(
            "a NAME packet of {} bytes claims {count} entries",
            body.len()
        ));
    }
    let mut names = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let filename = f.bytes()?.to_vec();
        f.bytes()?; // longname, for humans
        let attrs = f.attrs()?;
        names.push(Name { filename, attrs });
    }
    f.end()?;
    Ok(Response::Name { id, names })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(bytes: &[u8]) -> Result<Packet, ReadError> {
        read_packet(&mut &bytes[..], MAX_PACKET)
    }

    fn wire(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        v.push(kind);
        v.extend_from_slice(body);
        v
    }

    fn decode(kind: u8, body: &[u8]) -> Result<Response, Violation> {
        Response::decode(&packet(&wire(kind, body)).unwrap())
    }

    #[test]
    fn requests_carry_their_length_type_id_and_fields() {
        let mut r = Request::new(kind::OPEN, 7);
        r.put_str(b"/a")
            .put_u32(open::CREAT | open::EXCL | open::WRITE);
        r.put_attrs(&Attrs {
            permissions: Some(0o600),
            ..Attrs::default()
        });
        let p = r.finish();
        let mut expected = vec![0, 0, 0, 23, kind::OPEN, 0, 0, 0, 7, 0, 0, 0, 2, b'/', b'a'];
        expected.extend_from_slice(&[0, 0, 0, 0x2a, 0, 0, 0, 4, 0, 0, 0x01, 0x80]);
        assert_eq!(p, expected);
        let mut init = Request::bare(kind::INIT);
        init.put_u32(3);
        assert_eq!(init.finish(), vec![0, 0, 0, 5, kind::INIT, 0, 0, 0, 3]);
    }

    #[test]
    fn attrs_round_trip() {
        let a = Attrs {
            size: Some(1 << 40),
            uid: Some(1),
            gid: Some(2),
            permissions: Some(0o100644),
            atime: Some(3),
            mtime: Some(4),
        };
        let mut r = Request::bare(0);
        r.put_attrs(&a);
        let bytes = r.finish();
        let mut f = Fields::new(&bytes[5..], "test");
        assert_eq!(f.attrs().unwrap(), a);
        f.end().unwrap();
        assert!(a.is_file() && !a.is_dir() && !a.is_symlink());
    }

    #[test]
    fn version_status_handle_data_name_decode() {
        let mut body = 3u32.to_be_bytes().to_vec();
        for s in [&b"fsync@openssh.com"[..], b"1"] {
            body.extend_from_slice(&(s.len() as u32).to_be_bytes());
            body.extend_from_slice(s);
        }
        assert_eq!(
            decode(kind::VERSION, &body).unwrap(),
            Response::Version {
                version: 3,
                extensions: vec![("fsync@openssh.com".into(), b"1".to_vec())]
            }
        );
        let status = [0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0, 2, b'n', b'o', 0, 0, 0, 0];
        assert_eq!(
            decode(kind::STATUS, &status).unwrap(),
            Response::Status {
                id: 9,
                code: StatusCode::Failure,
                message: "no".into()
            }
        );
        // Without message and language tag.
        assert!(matches!(
            decode(kind::STATUS, &status[..8]).unwrap(),
            Response::Status {
                code: StatusCode::Failure,
                ..
            }
        ));
        let handle = [0, 0, 0, 1, 0, 0, 0, 1, 0xab];
        assert_eq!(
            decode(kind::HANDLE, &handle).unwrap(),
            Response::Handle {
                id: 1,
                handle: vec![0xab]
            }
        );
        let data = [0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3];
        assert_eq!(
            decode(kind::DATA, &data).unwrap(),
            Response::Data {
                id: 2,
                data: vec![1, 2, 3]
            }
        );
        let mut name = vec![0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 1, b'x', 0, 0, 0, 0];
        name.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 42]);
        let Response::Name { id: 5, names } = decode(kind::NAME, &name).unwrap() else {
            panic!("not a NAME");
        };
        assert_eq!(names[0].filename, b"x");
        assert_eq!(names[0].attrs.size, Some(42));
    }

    #[test]
    fn statvfs_decodes_and_refuses_short_data() {
        let mut data = Vec::new();
        for v in [4096u64, 4096, 1000, 500, 400, 100, 50, 40, 9, 1, 255] {
            data.extend_from_slice(&v.to_be_bytes());
        }
        let s = Statvfs::decode(&data).unwrap();
        assert_eq!(s.available_bytes(), 400 * 4096);
        assert_eq!(s.total_bytes(), 1000 * 4096);
        assert_eq!(s.favail, 40);
        assert!(s.read_only());
        assert!(Statvfs::decode(&data[..80]).is_err());
        data.push(0);
        assert!(Statvfs::decode(&data).is_err());
    }

    #[test]
    fn a_huge_or_zero_length_is_refused_before_allocating() {
        for len in [u32::MAX, MAX_PACKET + 1, 0] {
            let bytes = len.to_be_bytes();
            assert!(
                matches!(packet(&bytes), Err(ReadError::Violation(_))),
                "{len}"
            );
        }
        assert!(packet(&wire(kind::DATA, &[0; 100])).is_ok());
    }

    #[test]
    fn a_truncated_packet_is_an_unexpected_eof() {
        let full = wire(kind::DATA, &[0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3]);
        for cut in 1..full.len() {
            match packet(&full[..cut]) {
                Err(ReadError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn lying_fields_are_violations() {
        // A string length beyond the packet.
        assert!(decode(kind::DATA, &[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 1]).is_err());
        // Bytes left over.
        assert!(decode(kind::HANDLE, &[0, 0, 0, 1, 0, 0, 0, 1, 0xab, 0]).is_err());
        // A NAME count no packet of this size can hold.
        assert!(decode(kind::NAME, &[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]).is_err());
        // A NAME with fewer entries than it claims.
        assert!(decode(
            kind::NAME,
            &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
        )
        .is_err());
        // Extended attributes claiming more pairs than there are.
        let mut attrs = vec![0, 0, 0, 1, 0x80, 0, 0, 0, 0, 0, 0, 9];
        attrs.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(decode(kind::ATTRS, &attrs).is_err());
        // A packet type no server sends, and one only clients send.
        assert!(decode(250, &[0, 0, 0, 1]).is_err());
        assert!(decode(kind::OPEN, &[0, 0, 0, 1]).is_err());
        // An empty body where an id belongs.
        assert!(decode(kind::STATUS, &[]).is_err());
        // A handle longer than the protocol allows.
        let mut h = vec![0, 0, 0, 1, 0, 0, 1, 1];
        h.extend_from_slice(&[0; 257]);
        assert!(decode(kind::HANDLE, &h).is_err());
    }

    #[test]
    fn status_codes_have_their_names() {
        assert_eq!(StatusCode::from_u32(4), StatusCode::Failure);
        assert_eq!(StatusCode::from_u32(2).name(), "SSH_FX_NO_SUCH_FILE");
        assert_eq!(StatusCode::from_u32(77), StatusCode::Other(77));
    }
}
