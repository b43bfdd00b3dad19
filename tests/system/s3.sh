#!/usr/bin/env bash
# An S3 target inside vouch.service on a booted systemd: the .deb installed with `dpkg -i` in a
# fresh Debian container, Garage (the S3 server the tests build once into the cache, see
# scripts/setup) on the host's loopback, which the container shares.
#   1. the access key reaches the unit only through LoadCredential= in a drop-in (the file is
#      in /root, which ProtectHome=read-only would not hide but the config never names);
#      `vouch preflight --as-service` passes; `systemctl start vouch.service` succeeds; the
#      journal has exactly one remote-copied entry for the run (MESSAGE_ID, VOUCH_TARGET,
#      VOUCH_ARCHIVE as s3://BUCKET/KEY, VOUCH_ARCHIVE_SHA256 equal to the local archive's);
#      the bucket holds the archive and its receipt;
#   2. vouch-verify.service (the weekly restore test) reads the S3 archive back too: without
#      the key it fails with 10, and its verify-failed entry names the credential; with the
#      same LoadCredential= drop-in it passes with an archive-verified entry for each target,
#      and `vouch list --target offsite` lists the archive from the bucket;
#   3. with the server stopped, the unit fails with 14 TARGET_MISSING before writing anything,
#      and the preflight-failed entry's VOUCH_HINT names the endpoint.
#
# Usage: tests/system/s3.sh [PATH.deb]   (default: the newest target/debian/vouch_*.deb)
# Needs root. Settings: see lib.sh; VOUCH_TEST_GARAGE names another Garage binary.
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

GARAGE=${VOUCH_TEST_GARAGE:-$VOUCH_TEST_CACHE/garage-2.5.0/bin/garage}
BUCKET=vouch-system
REMOTE_COPIED=8482606352f74b98985a62351669024e

require_root
deb_arg "$@"
[ -x "$GARAGE" ] || fail "Garage is needed at $GARAGE: run scripts/setup (it builds it once into the cache)"
tools_ensure jq=jq python3=python3
rootfs_ensure

# --- The server, on the host. ---
gdir=$(mktemp -d "$VOUCH_TEST_TMP/vouch-s3-garage.XXXXXX")
at_exit rm -rf --one-file-system "$gdir"
read -r s3_port rpc_port < <(python3 -c 'import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')
cat >"$gdir/garage.toml" <<CONF
metadata_dir = "$gdir/meta"
data_dir = "$gdir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"
CONF
garage() {
    RUST_LOG=warn "$GARAGE" -c "$gdir/garage.toml" "$@"
}
# retry CMD...: the node takes a moment to accept each step.
retry() {
    local i
    for i in $(seq 1 150); do
        if out=$("$@" 2>&1); then
            return 0
        fi
        sleep 0.2
    done
    fail "$* kept failing: $out"
}
RUST_LOG=warn "$GARAGE" -c "$gdir/garage.toml" server >"$gdir/log" 2>&1 &
garage_pid=$!
# stop_garage: case 2 stops it on purpose; the cleanup then finds nothing to stop.
stop_garage() {
    kill "$garage_pid" 2>/dev/null || true
}
at_exit stop_garage
retry garage status
node=$(garage node id -q 2>/dev/null | cut -d@ -f1)
retry garage layout assign -z dc1 -c 1G "$node"
retry garage layout apply --version 1
key_id=GK$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
retry garage key import --yes -n vouch-system "$key_id" "$secret"
retry garage key allow --create-bucket "$key_id"
retry garage bucket create "$BUCKET"
retry garage bucket allow --read --write --owner "$BUCKET" --key "$key_id"
log "server: Garage on 127.0.0.1:$s3_port, bucket $BUCKET"

share=$(mktemp -d "$VOUCH_TEST_TMP/vouch-s3-share.XXXXXX")
at_exit rm -rf --one-file-system "$share"
cp "$deb" "$share/vouch.deb"
printf 'access-key-id = "%s"\nsecret-access-key = "%s"\n' "$key_id" "$secret" >"$share/offsite.toml"
VOUCH_TEST_SHARE=$share
boot vouch-s3
out=$(in_ct dpkg -i /mnt/share/vouch.deb 2>&1) || { printf '%s\n' "$out" | indent; fail "dpkg -i vouch.deb failed"; }
in_ct systemctl stop vouch.timer vouch-verify.timer
in_ct sh -ec '
    age-keygen -o /etc/vouch/identity.txt 2>/dev/null
    chmod 0600 /etc/vouch/identity.txt
    mkdir -p /srv/data /srv/backups /etc/systemd/system/vouch.service.d
    head -c 300000 /dev/urandom >/srv/data/blob
    install -m 0600 /mnt/share/offsite.toml /root/offsite.toml
    printf "[Service]\nLoadCredential=offsite:/root/offsite.toml\n" >/etc/systemd/system/vouch.service.d/credential.conf'
recipient=$(in_ct age-keygen -y /etc/vouch/identity.txt)
{
    printf '[backup]\nname = "s3"\nsources = ["/srv/data"]\n'
    printf '[encryption]\nrecipients = ["%s"]\nidentity = "/etc/vouch/identity.txt"\n' "$recipient"
    printf '[[target]]\nname = "local"\npath = "/srv/backups"\nmin-free = "1MiB"\n'
    printf '[[target]]\nname = "offsite"\nkind = "s3"\nendpoint = "http://127.0.0.1:%s"\n' "$s3_port"
    printf 'allow-http = true\nregion = "garage"\nbucket = "%s"\nprefix = "web1/"\ncredential = "offsite"\n' "$BUCKET"
} | in_ct sh -c 'cat >/etc/vouch/vouch.toml'
in_ct systemctl daemon-reload

# --- 1. The copy, from inside the unit. ---
check "preflight inside the unit's sandbox reaches the bucket with the LoadCredential= key"
out=$(in_ct vouch preflight --as-service 2>&1) || { printf '%s\n' "$out" | indent; fail "vouch preflight --as-service failed"; }
check "the run inside vouch.service copies the archive to S3 and reads it back"
run_vouch
expect_status 0
copied=$(journal "_SYSTEMD_INVOCATION_ID=$RUN_INV" "MESSAGE_ID=$REMOTE_COPIED")
[ "$(printf '%s' "$copied" | grep -c .)" -eq 1 ] || fail "expected one remote-copied entry, got: ${copied:-none}"
printf '%s\n' "$copied" | jq -c '{VOUCH_TARGET, VOUCH_ARCHIVE, VOUCH_BYTES_OUT}' | indent
archive=$(field "$(run_entry run-succeeded)" VOUCH_ARCHIVE)
assert_eq offsite "$(field "$copied" VOUCH_TARGET)" "VOUCH_TARGET of remote-copied"
assert_eq "s3://$BUCKET/web1/$archive" "$(field "$copied" VOUCH_ARCHIVE)" "VOUCH_ARCHIVE of remote-copied"
local_sha=$(in_ct sha256sum "/srv/backups/$archive" | cut -d' ' -f1)
assert_eq "$local_sha" "$(field "$copied" VOUCH_ARCHIVE_SHA256)" "VOUCH_ARCHIVE_SHA256 of remote-copied"
objects=$(garage bucket info "$BUCKET" | sed -n 's/^ *Objects: *\([0-9]*\).*/\1/p' | head -n 1)
assert_eq 2 "$objects" "objects in $BUCKET (the archive and its receipt)"

# --- 2. The weekly verify reads the remote archive back, from inside its own unit. ---
# start_verify: `systemctl start vouch-verify.service`; sets VERIFY_STATUS and VERIFY_INV.
start_verify() {
    in_ct timeout 300 systemctl start vouch-verify.service >/dev/null 2>&1 || true
    VERIFY_STATUS=$(prop vouch-verify.service ExecMainStatus)
    VERIFY_INV=$(prop vouch-verify.service InvocationID)
}
check "vouch-verify.service without the key fails with 10 and names the credential"
start_verify
assert_eq 10 "$VERIFY_STATUS" "vouch-verify.service's exit status without the credential"
failed=$(journal "_SYSTEMD_INVOCATION_ID=$VERIFY_INV" VOUCH_EVENT=verify-failed)
assert_contains "$(field "$failed" MESSAGE)" "offsite" "the verify-failed entry"
check "with the same LoadCredential= drop-in, vouch-verify.service reads both targets back"
in_ct sh -ec 'mkdir -p /etc/systemd/system/vouch-verify.service.d
    cp /etc/systemd/system/vouch.service.d/credential.conf /etc/systemd/system/vouch-verify.service.d/
    systemctl daemon-reload'
start_verify
if [ "$VERIFY_STATUS" != 0 ]; then
    in_ct journalctl --no-pager -o short-precise "_SYSTEMD_INVOCATION_ID=$VERIFY_INV" >&2 || true
    fail "vouch-verify.service: expected ExecMainStatus=0, got $VERIFY_STATUS"
fi
verified=$(journal "_SYSTEMD_INVOCATION_ID=$VERIFY_INV" VOUCH_EVENT=archive-verified | jq -r .VOUCH_TARGET | sort | paste -sd' ')
assert_eq "local offsite" "$verified" "targets with an archive-verified entry from vouch-verify.service"
listed=$(in_ct sh -ec 'd=$(mktemp -d); install -m 0600 /root/offsite.toml "$d/offsite"
    CREDENTIALS_DIRECTORY=$d vouch list --target offsite --json' | jq -r '.targets[0].archives[].name')
assert_eq "$archive" "$listed" "vouch list --target offsite"

# --- 3. The server gone: preflight, 14, nothing written. ---
check "with the server stopped, the unit fails with 14 before writing anything"
stop_garage
wait "$garage_pid" 2>/dev/null || true
before=$(files_below /srv/backups | sort)
run_vouch
expect_status 14
entry=$(run_entry preflight-failed)
assert_contains "$(field "$entry" VOUCH_HINT)" "127.0.0.1:$s3_port" "VOUCH_HINT of preflight-failed"
assert_eq "$before" "$(files_below /srv/backups | sort)" "the local target after the refused run"

log "PASS: an S3 target inside vouch.service"
