#!/usr/bin/env bash
# Preflight's guards inside vouch.service's sandbox, on a booted systemd: the .deb installed in
# a fresh Debian container with `dpkg -i`, runs started with `systemctl start vouch.service`.
#   1. a target with `require-mount = true` whose disk is not mounted: vouch-generator puts it
#      in ReadWritePaths=, so systemd binds the empty directory onto itself inside the unit;
#      the run must still fail with 14 TARGET_MISSING, name the mount unit in its fix, never
#      suggest turning the guard off, and write nothing;
#   2. the same with the archives in a directory below the mount point (`mount = PATH`);
#   3. with a filesystem really mounted at the mount point, the same config runs and commits.
# Usage: tests/system/guards.sh [PATH.deb]   (default: the newest target/debian/vouch_*.deb)
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

POINT=/mnt/usb

require_root
deb_arg "$@"
rootfs_ensure

# RUN_PROPS, RUN_INV: what systemd says about the last run_vouch.
RUN_PROPS=""
RUN_INV=""

# run_vouch: `systemctl start vouch.service` (a oneshot: returns when the run ended).
run_vouch() {
    log "systemctl start vouch.service"
    in_ct timeout 300 systemctl start vouch.service >/dev/null 2>&1 || true
    RUN_PROPS=$(in_ct systemctl show -p Result,ExecMainStatus,InvocationID vouch.service)
    RUN_INV=$(printf '%s\n' "$RUN_PROPS" | sed -n 's/^InvocationID=//p')
    printf '%s\n' "$RUN_PROPS" | sed 's/^/    /' >&2
}

# expect_status STATUS: the last run exited with STATUS; else fails showing its journal.
expect_status() {
    local status
    status=$(printf '%s\n' "$RUN_PROPS" | sed -n 's/^ExecMainStatus=//p')
    if [ "$status" != "$1" ]; then
        in_ct journalctl --no-pager -o short-precise "_SYSTEMD_INVOCATION_ID=$RUN_INV" >&2 || true
        fail "vouch.service: expected ExecMainStatus=$1, got $status"
    fi
}

# failure_hint: the exit name and VOUCH_HINT of the last run's entry with an exit name,
# waiting up to 10 s for journald to have it.
failure_hint() {
    local found="" deadline=$((SECONDS + 10))
    while [ -z "$found" ] && [ "$SECONDS" -lt "$deadline" ]; do
        in_ct journalctl --sync
        found=$(in_ct journalctl --quiet --no-pager -o json "_SYSTEMD_INVOCATION_ID=$RUN_INV" |
            jq -r 'select(.VOUCH_EXIT_NAME != null) | "\(.VOUCH_EXIT_NAME) \(.VOUCH_HINT)"')
        [ -n "$found" ] || sleep 0.2
    done
    printf '%s\n' "$found"
}

# write_config PATH [EXTRA]: one source, one target at PATH with require-mount and EXTRA lines.
write_config() {
    {
        printf '[backup]\nname = "guards"\nsources = ["/srv/data"]\n'
        printf '[encryption]\nrecipients = ["%s"]\nidentity = "/etc/vouch/identity.txt"\n' "$recipient"
        printf '[[target]]\nname = "usb"\npath = "%s"\nmin-free = "1MiB"\nrequire-mount = true\n' "$1"
        printf '%s\n' "${2:-}"
    } | in_ct sh -c 'cat >/etc/vouch/vouch.toml'
    in_ct systemctl daemon-reload
}

# files_below DIR: every file below DIR, hidden ones too.
files_below() {
    in_ct find "$1" -mindepth 1 -type f
}

share=$(mktemp -d "$VOUCH_TEST_TMP/vouch-guards-share.XXXXXX")
at_exit rm -rf --one-file-system "$share"
cp "$deb" "$share/vouch.deb"
VOUCH_TEST_SHARE=$share
boot vouch-guards

log "dpkg -i vouch.deb; timers stopped so that no timer run lands between the checks"
in_ct dpkg -i /mnt/share/vouch.deb >/dev/null 2>&1 || fail "dpkg -i vouch.deb failed"
in_ct systemctl stop vouch.timer vouch-verify.timer
in_ct sh -ec '
    age-keygen -o /etc/vouch/identity.txt 2>/dev/null
    chmod 0600 /etc/vouch/identity.txt
    mkdir -p /srv/data "$1"
    echo "some data" >/srv/data/file' sh "$POINT"
recipient=$(in_ct age-keygen -y /etc/vouch/identity.txt)

# --- 1. The disk is not mounted; the sandbox binds the empty directory onto itself. ---
write_config "$POINT"
log "check: the generator opens $POINT in the sandbox (the self-bind the guard must see through)"
assert_contains "$(in_ct systemctl show -p ReadWritePaths --value vouch.service)" "$POINT" \
    "vouch.service's ReadWritePaths="
log "check: an unmounted require-mount target fails the service with 14 and nothing written"
run_vouch
expect_status 14
hint=$(failure_hint)
printf '    %s\n' "$hint" >&2
assert_contains "$hint" "TARGET_MISSING" "the failed run's exit name"
assert_contains "$hint" "systemctl status mnt-usb.mount" "the fix"
assert_not_contains "$hint" "require-mount = false" "the fix (never to turn the guard off)"
assert_eq "" "$(files_below "$POINT")" "files in the unmounted mount point $POINT"

# --- 2. The archives go below the mount point. ---
in_ct mkdir -p "$POINT/backups"
write_config "$POINT/backups" "mount = \"$POINT\""
log "check: with mount = $POINT and the target below it, still 14 and nothing written"
run_vouch
expect_status 14
assert_contains "$(failure_hint)" "mount it at $POINT (" "the fix (naming the mount point, not the target)"
assert_eq "" "$(files_below "$POINT")" "files below the unmounted mount point $POINT"

# --- 3. A filesystem really mounted there: the same guard lets the run through. ---
log "check: with a filesystem mounted at $POINT the run commits an archive below it"
in_ct rmdir "$POINT/backups"
in_ct mount -t tmpfs -o size=16m,mode=0755 tmpfs "$POINT"
in_ct mkdir "$POINT/backups"
write_config "$POINT/backups" "mount = \"$POINT\"
allow-volatile = true"
run_vouch
expect_status 0
archives=$(in_ct find "$POINT/backups" -name '*.tar.gz.age' | grep -c . || true)
assert_eq 1 "$archives" "archives in $POINT/backups"
in_ct umount "$POINT"
assert_eq "" "$(files_below "$POINT")" "files in $POINT under the tmpfs"

log "guards.sh: all checks passed"
