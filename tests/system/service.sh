#!/usr/bin/env bash
# vouch's own units under a real systemd: the built binary and units/ installed in a booted
# container, vouch.service started with systemctl, results read with `systemctl show` and
# `journalctl -o json`. Proves that the sandbox in units/vouch.service still lets vouch do its
# job (read files of every owner, write its target, lock, notify, log to journald), that
# vouch-generator's drop-in opens new targets after a daemon-reload and nothing else, and that
# a failed run starts vouch-notify@.
#
# Until the .deb exists this installs the binaries and units by hand (what dpkg -i will do).
# Needs root, `age` and a built vouch: VOUCH_BIN (default target/debug/vouch) and
# VOUCH_GENERATOR (default: vouch-generator next to VOUCH_BIN).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"

REPO=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VOUCH_BIN:-$REPO/target/debug/vouch}
generator=${VOUCH_GENERATOR:-$(dirname "$bin")/vouch-generator}
[ -x "$bin" ] || fail "no vouch binary at $bin: run \`cargo build\` first, or set VOUCH_BIN"
[ -x "$generator" ] || fail "no vouch-generator at $generator: run \`cargo build\` first, or set VOUCH_GENERATOR"
require_root
command -v age-keygen >/dev/null || fail "age-keygen is missing: apt-get install age (scripts/setup does)"

rootfs_ensure

# What the container sees at /mnt/share: a snapshot of the binaries (a rebuild during the test
# does not change them), the units, a key pair and the config.
share=$(mktemp -d "$VOUCH_TEST_TMP/vouch-share.XXXXXX")
at_exit rm -rf --one-file-system "$share"
cp "$bin" "$share/vouch"
cp "$generator" "$share/vouch-generator"
mkdir "$share/units"
cp "$REPO"/units/*.service "$REPO"/units/*.timer "$share/units/"
age-keygen -o "$share/identity.txt" 2>/dev/null
recipient=$(age-keygen -y "$share/identity.txt")
write_config() { # write_config TARGET_PATH...
    local t
    {
        printf '[backup]\nname = "ct"\n'
        printf 'sources = ["/etc", "/srv/data", "/home"]\n'
        printf 'required = ["/srv/data/secret"]\n'
        printf '[encryption]\nrecipients = ["%s"]\nidentity = "/etc/vouch/identity.txt"\n' "$recipient"
        for t in "$@"; do
            printf '[[target]]\nname = "%s"\npath = "%s"\nmin-free = "1MiB"\n' "$(basename "$t")" "$t"
        done
    } >"$share/vouch.toml"
}
write_config /var/backups/vouch

VOUCH_TEST_SHARE=$share
boot vouch-service

log "installing vouch, vouch-generator, units, config and key (what dpkg -i will do)"
in_ct install -m 0755 /mnt/share/vouch /usr/bin/vouch
in_ct install -D -m 0755 /mnt/share/vouch-generator /usr/lib/systemd/system-generators/vouch-generator
in_ct sh -c 'install -m 0644 /mnt/share/units/* /usr/lib/systemd/system/'
in_ct install -d -m 0700 /etc/vouch /var/backups/vouch
in_ct install -m 0600 /mnt/share/identity.txt /etc/vouch/identity.txt
in_ct install -m 0644 /mnt/share/vouch.toml /etc/vouch/vouch.toml
# Sources only their owners may read: vouch needs CAP_DAC_READ_SEARCH for them, and /home is
# only read-only (ProtectHome=read-only), not hidden.
in_ct sh -ec '
    mkdir -p /srv/data /home/alice
    echo "the vault" >/srv/data/secret
    echo "alice notes" >/home/alice/notes
    chown -R 65534:65534 /srv/data && chmod 0700 /srv/data && chmod 0600 /srv/data/secret
    chown -R 1000:1000 /home/alice && chmod 0700 /home/alice && chmod 0600 /home/alice/notes'
# Access times older than a day, which a plain read would update (relatime).
in_ct touch -a -d 2001-01-01T00:00:00Z /srv/data/secret /home/alice/notes
old_atime=$(in_ct stat -c %X /srv/data/secret)
in_ct systemctl daemon-reload
# As the .deb's postinst does. It also keeps vouch.service loaded between runs (the timer
# refers to it), so `systemctl show` reports the last run and not an unloaded unit's defaults.
in_ct systemctl enable --now vouch.timer vouch-verify.timer 2>/dev/null
for t in vouch.timer vouch-verify.timer; do
    next=$(in_ct systemctl show -p NextElapseUSecRealtime --value "$t")
    case $next in "" | n/a) fail "$t has no next elapse time (got '$next')" ;; esac
    log "$t: active, next run $next"
done

dropin=/run/systemd/generator/vouch.service.d/50-vouch-targets.conf
assert_contains "$(in_ct cat "$dropin")" 'ReadWritePaths=-"/var/backups/vouch"' "vouch-generator's drop-in"
out=$(in_ct systemd-analyze verify --man=no vouch.service vouch.timer vouch-verify.timer \
    vouch-notify@vouch.service.service 2>&1) || fail "systemd-analyze verify inside failed: $out"
[ -z "$out" ] || fail "systemd-analyze verify inside complained: $out"
exposure=$(in_ct systemd-analyze security vouch.service | sed -n 's/^→ Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
log "installed vouch.service (with the generator's drop-in): exposure $exposure"
in_ct systemd-analyze security --threshold=20 vouch.service >/dev/null ||
    fail "installed vouch.service: exposure $exposure is above 2.0"

# start_vouch: starts vouch.service, prints Result/ExecMainStatus/StatusText as KEY=VALUE.
start_vouch() {
    in_ct systemctl start vouch.service >/dev/null 2>&1 || true
    in_ct systemctl show -p Result,ExecMainStatus,StatusText,InvocationID vouch.service
}

# journal_of INVOCATION: vouch's journal entries of one run, as JSON lines.
journal_of() {
    in_ct journalctl --sync
    in_ct journalctl -o json --no-pager "_SYSTEMD_INVOCATION_ID=$1" SYSLOG_IDENTIFIER=vouch
}

# --- 1. A run in the sandbox succeeds. ---
log "systemctl start vouch.service"
props=$(start_vouch)
printf '%s\n' "$props" | sed 's/^/    /' >&2
invocation=$(printf '%s\n' "$props" | sed -n 's/^InvocationID=//p')
if ! printf '%s\n' "$props" | grep -qx 'Result=success'; then
    in_ct journalctl --no-pager -u vouch.service -n 30 >&2 || true
    fail "vouch.service did not succeed in its sandbox: $(printf '%s ' "$props")"
fi
assert_contains "$props" "ExecMainStatus=0" "vouch.service's exit status"
# STATUS= arrived, so NotifyAccess=main and $NOTIFY_SOCKET work from inside the sandbox.
status_text=$(printf '%s\n' "$props" | sed -n 's/^StatusText=//p')
[ -n "$status_text" ] || fail "vouch.service has no StatusText: its STATUS= messages did not arrive"
log "StatusText: $status_text"
events=$(journal_of "$invocation" | jq -r 'select(.VOUCH_EVENT) | .VOUCH_EVENT' | paste -sd' ')
log "journal events of the run: $events"
assert_contains "$events" "run-succeeded" "the run's journal events"
archive=$(in_ct sh -c 'ls /var/backups/vouch/ct-*.tar.gz.age' | head -n 1)
[ -n "$archive" ] || fail "no archive in /var/backups/vouch after a successful run"
# Restorable with stock tools, and the files only their owners could read are in it.
listing=$(age -d -i "$share/identity.txt" "$CT_ROOT$archive" | tar -tzf -)
assert_contains "$listing" "srv/data/secret" "the archive's listing"
assert_contains "$listing" "home/alice/notes" "the archive's listing"
assert_eq "the vault" "$(age -d -i "$share/identity.txt" "$CT_ROOT$archive" | tar -xzOf - srv/data/secret)" \
    "srv/data/secret restored with age and tar"
log "archive $archive: restorable with age and tar, other users' files included"
# Backups leave access times alone. vouch.service has no CAP_FOWNER, so its O_NOATIME falls
# back to a plain open on other users' files; the sources are on read-only mounts in the
# sandbox (ProtectSystem=strict, ProtectHome=read-only), where atime is never updated.
assert_eq "$old_atime" "$(in_ct stat -c %X /srv/data/secret)" "/srv/data/secret's atime after the backup"
assert_eq "$old_atime" "$(in_ct stat -c %X /home/alice/notes)" "/home/alice/notes's atime after the backup"
# Control: a plain read does update it here, so the check above is not vacuous.
in_ct cat /srv/data/secret >/dev/null
[ "$(in_ct stat -c %X /srv/data/secret)" != "$old_atime" ] ||
    fail "a plain read left the atime alone too; the atime check above proves nothing on this mount"
log "atimes of other users' files untouched by the backup (read-only mounts in the sandbox)"

# --- 2. A new target without daemon-reload: the sandbox refuses it, the run fails loudly. ---
write_config /var/backups/vouch /srv/offsite
in_ct install -m 0644 /mnt/share/vouch.toml /etc/vouch/vouch.toml
in_ct install -d -m 0700 /srv/offsite
log "systemctl start vouch.service with a target the drop-in does not list yet"
props=$(start_vouch)
printf '%s\n' "$props" | sed 's/^/    /' >&2
invocation=$(printf '%s\n' "$props" | sed -n 's/^InvocationID=//p')
assert_contains "$props" "Result=exit-code" "vouch.service's result"
assert_contains "$props" "ExecMainStatus=15" "vouch.service's exit status (15 TARGET_READONLY)"
# The read-only mount is named from /proc/self/mountinfo: readable under ProtectProc=invisible.
assert_contains "$props" "(mount / is read-only)" "vouch.service's StatusText"
failed=$(journal_of "$invocation" | jq -c 'select(.VOUCH_EXIT_NAME) | {VOUCH_EXIT_NAME, VOUCH_HINT}' | head -n 1)
log "journal: $failed"
assert_contains "$failed" '"VOUCH_EXIT_NAME":"TARGET_READONLY"' "the failure's journal entry"
assert_contains "$failed" "ReadWritePaths=" "the failure's hint"
# OnFailure= started vouch-notify@vouch.service.service, which records the failure.
deadline=$((SECONDS + 30))
until in_ct test -s /var/lib/vouch/last-failure.json; do
    [ "$SECONDS" -lt "$deadline" ] || {
        in_ct systemctl status --no-pager vouch-notify@vouch.service.service >&2 || true
        fail "vouch-notify@vouch.service.service did not record the failure within 30 s"
    }
    sleep 0.2
done
record=$(in_ct cat /var/lib/vouch/last-failure.json)
log "vouch-notify@ recorded: $record"
assert_contains "$record" "TARGET_READONLY" "last-failure.json"
assert_eq "success" "$(in_ct systemctl show -p Result --value vouch-notify@vouch.service.service)" \
    "vouch-notify@vouch.service.service's result"

# The instance is the failed unit's name as is: a "-" in it must not turn into "/" (%i, not %I).
in_ct systemctl start vouch-notify@vouch-verify.service.service
assert_contains "$(in_ct cat /var/lib/vouch/last-failure.json)" '"unit": "vouch-verify.service"' \
    "last-failure.json from vouch-notify@vouch-verify.service.service"
# RuntimeDirectoryPreserve=yes: the lock's directory outlives the units that share it.
in_ct test -d /run/vouch || fail "/run/vouch was removed when a vouch unit stopped"

# --- 3. daemon-reload: the generator opens the new target, and the run succeeds. ---
in_ct systemctl reset-failed vouch.service
in_ct systemctl daemon-reload
assert_contains "$(in_ct cat "$dropin")" 'ReadWritePaths=-"/srv/offsite"' "vouch-generator's drop-in after daemon-reload"
log "systemctl start vouch.service after daemon-reload"
props=$(start_vouch)
printf '%s\n' "$props" | sed 's/^/    /' >&2
assert_contains "$props" "Result=success" "vouch.service's result after daemon-reload"
in_ct sh -c 'ls /srv/offsite/ct-*.tar.gz.age' >/dev/null || fail "no archive in /srv/offsite"

poweroff_ct
