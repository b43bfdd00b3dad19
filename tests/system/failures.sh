#!/usr/bin/env bash
# Failures where vouch never ran, on a booted systemd: the .deb installed with `dpkg -i` in a
# fresh Debian container, then
#   1. one good run; /usr/bin/vouch moved away: `systemctl start vouch.service` fails with
#      203/EXEC, the unit's ExecStopPost= record says so, and with the binary back
#      `vouch status` exits 2 naming the 203 failure;
#   2. a Requires= on a mount unit that fails: notify-failure's journal entry names that mount,
#      not "exit status 0"; a failing ExecStartPre= is named by `vouch doctor`;
#   3. a corrupted archive: `vouch-verify.service` fails with 33, logs exactly one
#      verify-failed entry, and `journalctl -x` shows its catalog text.
#
# Usage: tests/system/failures.sh [PATH.deb]   (default: the newest target/debian/vouch_*.deb)
# Needs root. Settings: see lib.sh.
#
# Single-quoted $1 and ${Status} are for the shell inside the container, on purpose.
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

# The verify-failed event's MESSAGE_ID (src/systemd/journal.rs, vouch.catalog).
ID_VERIFY_FAILED=4263a1cac18743a694cc811146bd5bf2
# A phrase of the verify-failed catalog entry (packaging/vouch.catalog).
CATALOG_PHRASE="A verification of archives already on the targets failed"
TARGET=/srv/backups
RESULT_FILE=/var/lib/vouch/vouch.service.result

require_root
deb_arg "$@"

check() {
    log "check: $*"
}

# prop UNIT PROP: one property's value.
prop() {
    in_ct systemctl show -p "$2" --value "$1"
}

# journal MATCH...: the matching journal entries inside, as JSON lines, after a sync.
journal() {
    in_ct journalctl --sync
    in_ct journalctl --quiet --no-pager -o json "$@"
}

indent() {
    sed 's/^/    /' >&2
}

# start UNIT: `systemctl start UNIT`; its exit status in START_RC.
start() {
    START_RC=0
    in_ct timeout 300 systemctl start "$1" >/dev/null 2>&1 || START_RC=$?
    [ "$START_RC" -ne 124 ] || fail "systemctl start $1 did not return within 300 s"
}

# wait_inactive UNIT: waits until UNIT has run and stopped (inactive or failed).
wait_inactive() {
    local deadline=$((SECONDS + 30)) state
    while :; do
        state=$(prop "$1" ActiveState)
        case $state in inactive | failed) [ "$(prop "$1" InvocationID)" != "" ] && return 0 ;; esac
        [ "$SECONDS" -lt "$deadline" ] || fail "$1 did not finish within 30 s (state '$state')"
        sleep 0.2
    done
}

share=$(mktemp -d "$VOUCH_TEST_TMP/vouch-failures-share.XXXXXX")
at_exit rm -rf --one-file-system "$share"
cp "$deb" "$share/vouch.deb"
log "package: $deb"
VOUCH_TEST_SHARE=$share
boot vouch-failures

out=$(in_ct dpkg -i /mnt/share/vouch.deb 2>&1) || { printf '%s\n' "$out" | indent; fail "dpkg -i vouch.deb failed"; }
in_ct systemctl stop vouch.timer vouch-verify.timer

in_ct sh -ec '
    age-keygen -o /etc/vouch/identity.txt 2>/dev/null
    chmod 0600 /etc/vouch/identity.txt
    install -d -m 0700 "$1"
    mkdir -p /srv/data && head -c 300000 /dev/urandom >/srv/data/blob' sh "$TARGET"
recipient=$(in_ct age-keygen -y /etc/vouch/identity.txt)
{
    printf '[backup]\nname = "fail"\nsources = ["/srv/data"]\n'
    printf '[encryption]\nrecipients = ["%s"]\nidentity = "/etc/vouch/identity.txt"\n' "$recipient"
    printf '[[target]]\nname = "local"\npath = "%s"\nmin-free = "1MiB"\n' "$TARGET"
} | in_ct sh -c 'cat >/etc/vouch/vouch.toml'
in_ct systemctl daemon-reload

# --- 1. The binary gone. ---
check "a first run succeeds and records success in $RESULT_FILE"
start vouch.service
[ "$START_RC" -eq 0 ] || fail "the first run failed: $(prop vouch.service StatusText)"
record=$(in_ct cat "$RESULT_FILE") || fail "no $RESULT_FILE after a run"
printf '%s\n' "$record" | indent
assert_contains "$record" "result=success" "$RESULT_FILE after a good run"
in_ct vouch status >/dev/null || fail "vouch status is not healthy after a good run"

check "with /usr/bin/vouch moved away, vouch.service fails with 203/EXEC"
in_ct mv /usr/bin/vouch /root/vouch.moved
sleep 1.1
start vouch.service
[ "$START_RC" -ne 0 ] || fail "systemctl start vouch.service succeeded without the binary"
assert_eq 203 "$(prop vouch.service ExecMainStatus)" "vouch.service's ExecMainStatus"
wait_inactive vouch-notify@vouch.service.service

check "the ExecStopPost= record names the 203 exit without the binary"
record=$(in_ct cat "$RESULT_FILE")
printf '%s\n' "$record" | indent
assert_contains "$record" "unit=vouch.service" "$RESULT_FILE"
assert_contains "$record" "result=exit-code" "$RESULT_FILE"
assert_contains "$record" "exit-code=exited" "$RESULT_FILE"
assert_contains "$record" "exit-status=203" "$RESULT_FILE"

check "with the binary back, vouch status exits 2 naming the 203 failure"
in_ct mv /root/vouch.moved /usr/bin/vouch
STATUS_RC=0
out=$(in_ct vouch status 2>&1) || STATUS_RC=$?
printf '%s\n' "$out" | indent
assert_eq 2 "$STATUS_RC" "vouch status's exit status after the 203 failure"
assert_contains "$out" "vouch.service failed: 203/EXEC (the vouch binary could not be started)" "vouch status"

check "a good run clears it"
sleep 1.1
start vouch.service
[ "$START_RC" -eq 0 ] || fail "the run after the binary came back failed"
in_ct vouch status >/dev/null || fail "vouch status is not healthy after a good run again"

# --- 2. A failed mount dependency. ---
check "a Requires= on a failing mount makes notify-failure name the mount"
in_ct sh -ec '
    mkdir -p /mnt/failme /etc/systemd/system/vouch.service.d
    # A filesystem type no kernel has: the mount fails at once (no device to wait for).
    printf "[Mount]\nWhat=none\nWhere=/mnt/failme\nType=vouchnofs\n" >/etc/systemd/system/mnt-failme.mount
    printf "[Unit]\nRequiresMountsFor=/mnt/failme\n" >/etc/systemd/system/vouch.service.d/zz-mount.conf
    systemctl daemon-reload'
since=$(in_ct date '+%F %T')
start vouch.service
[ "$START_RC" -ne 0 ] || fail "vouch.service started although its mount failed"
sleep 1
wait_inactive vouch-notify@vouch.service.service
entries=$(journal --since "$since" _SYSTEMD_UNIT=vouch-notify@vouch.service.service SYSLOG_IDENTIFIER=vouch |
    jq -c 'select(.VOUCH_UNIT == "vouch.service")')
printf '%s\n' "$entries" | jq -r .MESSAGE | indent
[ "$(printf '%s' "$entries" | grep -c .)" -eq 1 ] || fail "expected one notify-failure entry, got: $entries"
message=$(jq -r .MESSAGE <<<"$entries")
assert_contains "$message" mnt-failme.mount "notify-failure's entry"
assert_not_contains "$message" "exit status 0" "notify-failure's entry"
assert_eq mnt-failme.mount "$(jq -r .VOUCH_FAILED_UNIT <<<"$entries")" "VOUCH_FAILED_UNIT"
out=$(in_ct vouch status 2>&1) || true
assert_contains "$out" mnt-failme.mount "vouch status after the mount failed"
in_ct sh -ec 'rm /etc/systemd/system/vouch.service.d/zz-mount.conf; systemctl daemon-reload; systemctl reset-failed'

check "a failing ExecStartPre=: vouch doctor names the command, not \"has not run since boot\""
in_ct sh -ec '
    printf "[Service]\nExecStartPre=/bin/false\n" >/etc/systemd/system/vouch.service.d/zz-pre.conf
    systemctl daemon-reload'
start vouch.service
[ "$START_RC" -ne 0 ] || fail "vouch.service started although its ExecStartPre= failed"
wait_inactive vouch-notify@vouch.service.service
out=$(in_ct vouch doctor 2>&1) || true
printf '%s\n' "$out" | grep 'last result' | indent
assert_contains "$out" "the ExecStartPre= command /bin/false failed with exit status 1" "vouch doctor"
assert_not_contains "$out" "has not run since boot" "vouch doctor"
in_ct sh -ec 'rm /etc/systemd/system/vouch.service.d/zz-pre.conf; systemctl daemon-reload; systemctl reset-failed'

# --- 3. A corrupted archive found by the weekly verify. ---
check "vouch-verify.service finds a corrupted archive: one verify-failed entry with its catalog text"
archive=$(in_ct sh -c "ls -t $TARGET/fail-*.tar.gz.age | head -n 1")
size=$(in_ct stat -c %s "$archive")
in_ct sh -ec 'printf "\377" | dd of="$1" bs=1 seek=$(($2 / 2)) conv=notrunc status=none' sh "$archive" "$size"
start vouch-verify.service
[ "$START_RC" -ne 0 ] || fail "vouch-verify.service passed a corrupted archive"
assert_eq 33 "$(prop vouch-verify.service ExecMainStatus)" "vouch-verify.service's ExecMainStatus"
inv=$(prop vouch-verify.service InvocationID)
entries=$(journal "_SYSTEMD_INVOCATION_ID=$inv" SYSLOG_IDENTIFIER=vouch)
printf '%s\n' "$entries" | jq -r .MESSAGE | indent
failed=$(printf '%s\n' "$entries" | jq -c 'select(.PRIORITY == "3")')
[ "$(printf '%s' "$failed" | grep -c .)" -eq 1 ] || fail "expected exactly one error entry from the verify, got: $failed"
assert_eq "$ID_VERIFY_FAILED" "$(jq -r .MESSAGE_ID <<<"$failed")" "MESSAGE_ID of the verify failure"
assert_eq verify-failed "$(jq -r .VOUCH_EVENT <<<"$failed")" "VOUCH_EVENT of the verify failure"
explained=$(in_ct journalctl --no-pager -x -u vouch-verify.service "_SYSTEMD_INVOCATION_ID=$inv")
assert_contains "$explained" "$CATALOG_PHRASE" "journalctl -x -u vouch-verify.service"
assert_contains "$(prop vouch-verify.service StatusText)" "verify failed: VERIFY" "vouch-verify.service's StatusText"

log "PASS: failures.sh"
