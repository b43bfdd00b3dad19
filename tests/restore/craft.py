#!/usr/bin/env python3
"""Builds a gzip-compressed tar stream in vouch's archive layout, with one hostile member.

usage: craft.py KIND OUTPUT.tar.gz OUTSIDE [DEST]

The stream holds the chosen members, then `.vouch/manifest.json` and `.vouch/SHA256SUMS`
describing exactly those members, so that vouch's manifest checks pass and only the restore's
own safety rules stand between the member and the filesystem. OUTSIDE is an absolute directory
outside the restore destination that the hostile member aims at; DEST, when given, is the
restore destination itself (for members that name it). Encrypt the output with
`age -r RECIPIENT` to get an archive vouch can read.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MTIME = 1_600_000_000


def member(name, kind, data=b"", link=None, mode=0o644, devmajor=0, devminor=0):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = 0
    info.gid = 0
    info.uname = "root"
    info.gname = "root"
    info.mtime = MTIME
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if link is not None:
        info.linkname = link
    info.devmajor = devmajor
    info.devminor = devminor
    return info, data


def manifest_entry(info, data, sha_of=None):
    kinds = {
        tarfile.REGTYPE: "file",
        tarfile.DIRTYPE: "dir",
        tarfile.SYMTYPE: "symlink",
        tarfile.LNKTYPE: "hardlink",
    }
    entry = {
        "path": info.name,
        "type": kinds[info.type],
        "mode": "%04o" % info.mode,
        "uid": 0,
        "gid": 0,
        "owner": "root:root",
        "size": info.size,
        "mtime": MTIME,
    }
    if info.type == tarfile.REGTYPE:
        entry["sha256"] = sha_of or hashlib.sha256(data).hexdigest()
    if info.type == tarfile.LNKTYPE:
        entry["sha256"] = sha_of
    if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        entry["link"] = info.linkname
    return entry


def build(kind, outside, dest):
    """Returns (members, manifest entries, skipped special files)."""
    members = []
    entries = []
    skipped = []

    def add(info, data=b"", sha_of=None, in_manifest=True):
        members.append((info, data))
        if in_manifest:
            entries.append(manifest_entry(info, data, sha_of))

    evil = b"written by a hostile archive\n"
    good = b"good data\n"
    add(*member("d", tarfile.DIRTYPE, mode=0o755))
    add(*member("d/good.txt", tarfile.REGTYPE, good))
    if kind == "good":
        pass
    elif kind == "dotdot":
        rel = os.path.relpath(os.path.join(outside, "evil"), "/")
        add(*member("d/../../../../../../../../" + rel, tarfile.REGTYPE, evil))
    elif kind == "absolute":
        add(*member(os.path.join(outside, "evil"), tarfile.REGTYPE, evil))
    elif kind == "symlink-then-file":
        add(*member("a", tarfile.SYMTYPE, link=outside, mode=0o777))
        add(*member("a/evil", tarfile.REGTYPE, evil))
    elif kind == "child-before-symlink":
        # The other order: `a/evil` first, then `a` as a symlink out of the destination.
        add(*member("a/evil", tarfile.REGTYPE, evil))
        add(*member("a", tarfile.SYMTYPE, link=outside, mode=0o777))
    elif kind == "child-before-file":
        add(*member("a/evil", tarfile.REGTYPE, evil))
        add(*member("a", tarfile.REGTYPE, evil))
    elif kind == "child-before-dir":
        # Harmless: a directory listed after what is below it.
        add(*member("a/inside", tarfile.REGTYPE, good))
        add(*member("a", tarfile.DIRTYPE, mode=0o750))
    elif kind == "file-under-existing":
        # No entry for `a`: the test puts a symlink `a` into the destination beforehand.
        add(*member("a/evil", tarfile.REGTYPE, evil))
    elif kind == "dir-over-symlink":
        # Harmless on its own; the test puts a symlink `a` into the destination beforehand.
        add(*member("a", tarfile.DIRTYPE, mode=0o755))
        add(*member("a/inside", tarfile.REGTYPE, good))
    elif kind == "hardlink-outside":
        target = os.path.join(outside, "victim")
        add(*member("h", tarfile.LNKTYPE, link=target), sha_of=hashlib.sha256(b"").hexdigest())
    elif kind == "hardlink-dotdot":
        target = "../" + os.path.basename(outside) + "/victim"
        add(*member("h", tarfile.LNKTYPE, link=target), sha_of=hashlib.sha256(b"").hexdigest())
    elif kind == "device":
        # The same device as this machine's /dev/null.
        rdev = os.stat("/dev/null").st_rdev
        info, data = member(
            "d/null", tarfile.CHRTYPE, mode=0o666, devmajor=os.major(rdev), devminor=os.minor(rdev)
        )
        add(info, data, in_manifest=False)
        skipped.append({"path": "d/null", "type": "char-device"})
    elif kind == "fifo":
        info, data = member("d/pipe", tarfile.FIFOTYPE, mode=0o640)
        info.uid, info.gid = 4321, 8765
        add(info, data, in_manifest=False)
        skipped.append({"path": "d/pipe", "type": "fifo"})
    elif kind == "fifo-above-a-file":
        # A FIFO `d/x` and then a file below it: the FIFO, made last, would not fit.
        info, data = member("d/x", tarfile.FIFOTYPE, mode=0o644)
        add(info, data, in_manifest=False)
        skipped.append({"path": "d/x", "type": "fifo"})
        add(*member("d/x/evil", tarfile.REGTYPE, evil))
    elif kind == "tar-differs":
        # The manifest says `d/evil`; the tar member climbs out of the destination instead.
        rel = os.path.relpath(os.path.join(outside, "evil"), "/")
        info, data = member("d/../../../../../../../../" + rel, tarfile.REGTYPE, evil)
        add(info, data, in_manifest=False)
        entries.append(manifest_entry(member("d/evil", tarfile.REGTYPE, evil)[0], evil))
    elif kind == "planted-journal":
        # vouch's own staging directory, holding a journal that would "put back" attacker
        # content over a file the archive never names, and chmod a directory.
        staging = ".vouch-restore.1.deadbeef"
        journal = (
            "vouch-restore-journal 1 %s\n"
            "aside keep/mine %s/old/1\n"
            "created keep/mine\n"
            "dir-meta keep 7777 4242 4242 0 0\n" % (dest, staging)
        ).encode()
        add(*member(staging, tarfile.DIRTYPE, mode=0o700))
        add(*member(staging + "/old", tarfile.DIRTYPE, mode=0o700))
        add(*member(staging + "/old/1", tarfile.REGTYPE, b"ATTACKER CONTENT\n", mode=0o4755))
        add(*member(staging + "/journal", tarfile.REGTYPE, journal, mode=0o600))
    elif kind == "staging-prefix":
        # Any first component starting with vouch's staging prefix.
        add(*member(".vouch-restore-anything", tarfile.REGTYPE, evil))
    elif kind == "old-name":
        # A name vouch gives replaced paths kept beside themselves, deeper down.
        add(*member("d/.vouch-restore-old.1.2", tarfile.REGTYPE, evil))
    elif kind == "many":
        # One directory with a few thousand small files: a long commit to race against.
        for i in range(1500):
            add(*member("d/f%04d" % i, tarfile.REGTYPE, b"%d\n" % i))
    elif kind == "huge-pax":
        # One pax record of 200 MiB (a comment, which tar parsers read and ignore).
        info, data = member("d/padded.txt", tarfile.REGTYPE, good)
        info.pax_headers = {"comment": "x" * (200 << 20)}
        add(info, data)
    elif kind == "huge-manifest":
        pass
    elif kind == "wrong-hash":
        add(*member("d/bad.txt", tarfile.REGTYPE, evil), sha_of="0" * 64)
    elif kind == "late-wrong-hash":
        for i in range(20):
            add(*member("d/f%02d" % i, tarfile.REGTYPE, b"%d\n" % i))
        add(*member("d/zz-bad.txt", tarfile.REGTYPE, evil), sha_of="1" * 64)
    else:
        raise SystemExit("unknown kind " + kind)
    return members, entries, skipped


def main():
    kind, output, outside = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3])
    dest = os.path.abspath(sys.argv[4]) if len(sys.argv) > 4 else "/nonexistent"
    members, entries, skipped = build(kind, outside, dest)
    manifest = {
        "format": "vouch-manifest",
        "version": 1,
        "run-id": "00" * 16,
        "host": "crafted",
        "name": "crafted",
        "created": "2020-09-13T12:26:40Z",
        "entries": entries,
        "skipped": skipped,
        "unreadable": [],
        "changed": [],
        "required": [],
    }
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    if kind == "huge-manifest":
        # Valid JSON padded with 200 MiB of spaces: it compresses to almost nothing.
        manifest_bytes += b" " * (200 << 20)
    sums = b"".join(
        e["sha256"].encode() + b"  " + e["path"].encode() + b"\n" for e in entries if "sha256" in e
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
        for name, data in ((".vouch/manifest.json", manifest_bytes), (".vouch/SHA256SUMS", sums)):
            info, _ = member(name, tarfile.REGTYPE, data)
            tar.addfile(info, io.BytesIO(data))
    with open(output, "wb") as out:
        out.write(gzip.compress(buf.getvalue()))


if __name__ == "__main__":
    main()
