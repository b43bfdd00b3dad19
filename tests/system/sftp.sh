#!/usr/bin/env bash
# An SFTP target inside vouch.service on a booted systemd: the .deb installed with `dpkg -i` in
# a fresh Debian container (with Debian's openssh-client), Debian's sshd on the host's loopback,
# which the container shares.
#   1. the private key reaches the unit only through LoadCredential= in a drop-in (the file is
#      in /root, which the config never names), the host key only from the configured
#      known-hosts file; `vouch preflight --as-service` passes; `systemctl start vouch.service`
#      succeeds with exactly one remote-copied entry (VOUCH_TARGET, VOUCH_ARCHIVE as
#      sftp://root@127.0.0.1:PORT/DIR/NAME, VOUCH_ARCHIVE_SHA256 equal to the local archive's);
#      the server's directory holds the archive, byte for byte, and its receipt, and no
#      temporary file;
#   2. with a known-hosts file that does not know the server, the unit fails with 16
#      TARGET_DENIED before writing anything, and the preflight-failed entry's VOUCH_HINT gives
#      the known_hosts line to add.
#
# Usage: tests/system/sftp.sh [PATH.deb]   (default: the newest target/debian/vouch_*.deb)
# Needs root. Settings: see lib.sh.
#
# Single-quoted $1 is for the shell inside the container, on purpose.
# shellcheck disable=SC2016
set -euo pipefail
case ${1:-} in
    -h | --help)
        sed -n '2,/^# Needs root/s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
esac
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
# shellcheck source=unit.sh source-path=SCRIPTDIR
. "$(dirname "$0")/unit.sh"

REMOTE_COPIED=8482606352f74b98985a62351669024e
# openssh-client and what it needs beyond the minbase rootfs.
SSH_DEBS=(openssh-client libedit2 libbsd0 libfido2-1 libcbor0.8 libgssapi-krb5-2 libk5crypto3
    libkeyutils1 libkrb5-3 libkrb5support0)

require_root
deb_arg "$@"
[ -x /usr/sbin/sshd ] || fail "sshd is needed on the host: run scripts/setup (apt-get install openssh-server)"
tools_ensure jq=jq python3=python3 ssh-keygen=openssh-client
rootfs_ensure

# --- The server, on the host. ---
sdir=$(mktemp -d "$VOUCH_TEST_TMP/vouch-sftp-server.XXXXXX")
at_exit rm -rf --one-file-system "$sdir"
mkdir -p "$sdir/remote" /run/sshd
port=$(python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ssh-keygen -q -t ed25519 -N '' -f "$sdir/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$sdir/client_key"
cp "$sdir/client_key.pub" "$sdir/authorized_keys"
cat >"$sdir/sshd_config" <<CONF
ListenAddress 127.0.0.1:$port
HostKey $sdir/host_key
AuthorizedKeysFile $sdir/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PidFile none
Subsystem sftp internal-sftp
CONF
/usr/sbin/sshd -D -e -f "$sdir/sshd_config" 2>"$sdir/sshd.log" &
sshd_pid=$!
at_exit kill "$sshd_pid"
for _ in $(seq 1 100); do
    grep -q "Server listening" "$sdir/sshd.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "Server listening" "$sdir/sshd.log" || fail "sshd did not start: $(cat "$sdir/sshd.log")"
log "server: sshd on 127.0.0.1:$port, directory $sdir/remote"

share=$(mktemp -d "$VOUCH_TEST_TMP/vouch-sftp-share.XXXXXX")
at_exit rm -rf --one-file-system "$share"
cp "$deb" "$share/vouch.deb"
debs_into "$share" "${SSH_DEBS[@]}"
cp "$sdir/client_key" "$share/sftp-key"
printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$sdir/host_key.pub")" >"$share/known_hosts"
VOUCH_TEST_SHARE=$share
boot vouch-sftp
out=$(in_ct sh -c 'dpkg -i /mnt/share/*.deb' 2>&1) || { printf '%s\n' "$out" | indent; fail "dpkg -i of vouch.deb and openssh-client failed"; }
in_ct systemctl stop vouch.timer vouch-verify.timer
in_ct sh -ec '
    age-keygen -o /etc/vouch/identity.txt 2>/dev/null
    chmod 0600 /etc/vouch/identity.txt
    mkdir -p /srv/data /srv/backups /etc/systemd/system/vouch.service.d
    head -c 300000 /dev/urandom >/srv/data/blob
    install -m 0600 /mnt/share/sftp-key /root/sftp-key
    install -m 0644 /mnt/share/known_hosts /etc/vouch/known_hosts
    printf "[Service]\nLoadCredential=offsite:/root/sftp-key\n" >/etc/systemd/system/vouch.service.d/credential.conf'
recipient=$(in_ct age-keygen -y /etc/vouch/identity.txt)
{
    printf '[backup]\nname = "sftp"\nsources = ["/srv/data"]\n'
    printf '[encryption]\nrecipients = ["%s"]\nidentity = "/etc/vouch/identity.txt"\n' "$recipient"
    printf '[[target]]\nname = "local"\npath = "/srv/backups"\nmin-free = "1MiB"\n'
    printf '[[target]]\nname = "offsite"\nkind = "sftp"\nhost = "127.0.0.1"\nport = %s\nuser = "root"\n' "$port"
    printf 'path = "%s"\ncredential = "offsite"\nknown-hosts = "/etc/vouch/known_hosts"\n' "$sdir/remote"
} | in_ct sh -c 'cat >/etc/vouch/vouch.toml'
in_ct systemctl daemon-reload

# --- 1. The copy, from inside the unit. ---
check "preflight inside the unit's sandbox reaches sshd with the LoadCredential= key"
out=$(in_ct vouch preflight --as-service 2>&1) || { printf '%s\n' "$out" | indent; fail "vouch preflight --as-service failed"; }
check "the run inside vouch.service copies the archive over SFTP and reads it back"
run_vouch
expect_status 0
copied=$(journal "_SYSTEMD_INVOCATION_ID=$RUN_INV" "MESSAGE_ID=$REMOTE_COPIED")
[ "$(printf '%s' "$copied" | grep -c .)" -eq 1 ] || fail "expected one remote-copied entry, got: ${copied:-none}"
printf '%s\n' "$copied" | jq -c '{VOUCH_TARGET, VOUCH_ARCHIVE, VOUCH_BYTES_OUT}' | indent
archive=$(field "$(run_entry run-succeeded)" VOUCH_ARCHIVE)
assert_eq offsite "$(field "$copied" VOUCH_TARGET)" "VOUCH_TARGET of remote-copied"
assert_eq "sftp://root@127.0.0.1:$port$sdir/remote/$archive" "$(field "$copied" VOUCH_ARCHIVE)" "VOUCH_ARCHIVE of remote-copied"
local_sha=$(in_ct sha256sum "/srv/backups/$archive" | cut -d' ' -f1)
assert_eq "$local_sha" "$(field "$copied" VOUCH_ARCHIVE_SHA256)" "VOUCH_ARCHIVE_SHA256 of remote-copied"
assert_eq "$local_sha" "$(sha256sum "$sdir/remote/$archive" | cut -d' ' -f1)" "SHA-256 of the server's copy"
assert_eq "$(printf '%s\n%s' "$archive" "$archive.json")" "$(find "$sdir/remote" -mindepth 1 -printf '%P\n' | sort)" "the server's directory"

# --- 2. A server the known-hosts file does not know: 16, nothing written. ---
check "with a known-hosts file that does not know the server, the unit fails with 16"
in_ct sh -c ': >/etc/vouch/known_hosts'
before=$(files_below /srv/backups | sort)
run_vouch
expect_status 16
entry=$(run_entry preflight-failed)
assert_contains "$(field "$entry" VOUCH_HINT)" "[127.0.0.1]:$port ssh-ed25519" "VOUCH_HINT of preflight-failed"
assert_eq "$before" "$(files_below /srv/backups | sort)" "the local target after the refused run"
assert_eq 2 "$(find "$sdir/remote" -mindepth 1 | grep -c .)" "files in the server's directory after the refused run"

log "PASS: an SFTP target inside vouch.service"
