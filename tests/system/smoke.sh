#!/usr/bin/env bash
# Smoke test of the booted-systemd test bed: the container boots to a working systemd, and a
# unit sandbox there behaves as vouch's units rely on (ProtectSystem=strict makes /var
# read-only unless ReadWritePaths= names it; journald records what the unit printed).
# Needs root. Usage: tests/system/smoke.sh   (settings: see lib.sh)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"

require_root
rootfs_ensure
boot vouch-smoke

# PID 1 inside is systemd, not a shell or an init stub.
assert_eq systemd "$(in_ct cat /proc/1/comm)" "the container's PID 1"
assert_eq vouch-smoke "$(in_ct cat /proc/sys/kernel/hostname)" "the container's host name"

state=$(in_ct systemctl is-system-running) || true
case $state in
    running) log "system state: running" ;;
    degraded)
        failed=$(in_ct systemctl --failed --no-legend --plain | awk '{print $1}' | paste -sd' ')
        log "system state: degraded; failed units: ${failed:-none listed}"
        ;;
    *) fail "systemctl is-system-running: expected running or degraded, got '$state'" ;;
esac

# A transient service with ProtectSystem=strict must not be able to write to /var.
unit=smoke-erofs-$$.service
log "systemd-run --wait -p ProtectSystem=strict touch /var/x (as $unit)"
rc=0
out=$(in_ct systemd-run --wait --unit="$unit" -p ProtectSystem=strict touch /var/x 2>&1) || rc=$?
printf '%s\n' "$out" | sed 's/^/    /' >&2
[ "$rc" -ne 0 ] || fail "touch /var/x under ProtectSystem=strict succeeded; the sandbox is not applied"
assert_contains "$out" "Finished with result: exit-code" "systemd-run's summary"
assert_eq exit-code "$(in_ct systemctl show -p Result --value "$unit")" "$unit's Result"
assert_eq "1" "$(in_ct systemctl show -p ExecMainStatus --value "$unit")" "$unit's ExecMainStatus (touch's exit code)"
if in_ct test -e /var/x; then
    fail "/var/x exists although the unit failed"
fi

# The reason is in the journal, from that unit: EROFS, not a missing binary or a denied path.
in_ct journalctl --sync
json=$(in_ct journalctl -o json --no-pager "_SYSTEMD_UNIT=$unit")
[ -n "$json" ] || fail "journalctl has no entries for _SYSTEMD_UNIT=$unit"
messages=$(printf '%s\n' "$json" | jq -r 'select(.MESSAGE | type == "string") | .MESSAGE')
log "journal of $unit: $messages"
assert_contains "$messages" "/var/x" "the unit's journal"
assert_contains "$messages" "Read-only file system" "the unit's journal"

# Control: the same command may write where ReadWritePaths= allows it, so the failure above
# came from the sandbox and not from touch or the container.
unit2=smoke-rw-$$.service
log "systemd-run --wait -p ProtectSystem=strict -p ReadWritePaths=/var/tmp touch /var/tmp/x (as $unit2)"
out=$(in_ct systemd-run --wait --unit="$unit2" -p ProtectSystem=strict -p ReadWritePaths=/var/tmp \
    touch /var/tmp/x 2>&1) || fail "touch /var/tmp/x with ReadWritePaths=/var/tmp failed: $out"
in_ct test -e /var/tmp/x || fail "/var/tmp/x missing after a successful unit"

poweroff_ct
