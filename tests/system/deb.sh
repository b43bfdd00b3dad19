#!/usr/bin/env bash
# The .deb on a booted systemd: a fresh Debian container, the package installed with `dpkg -i`,
# vouch.service started with `systemctl`, results read with `systemctl show` and
# `journalctl -o json`. What a user of the package gets, end to end:
#   1. installing enables and starts the timers and runs no backup;
#   2. with a real config, vouch-generator opens the target in the sandbox at daemon-reload,
#      a run succeeds and says so in the journal (one run-succeeded entry with its figures)
#      and in StatusText, other users' files are in the archive, access times are untouched,
#      the archive restores with the stock age and tar and with `vouch restore` inside the
#      container, the notification endpoint (a recording HTTP server on the shared loopback)
#      got /start, /0 and the success payload, and `vouch doctor` reports the open sandbox and
#      the stopped timer;
#   3. a drop-in that empties ReadWritePaths= fails the run with 15 TARGET_READONLY and the
#      fix, writes nothing to the target, alerts once (vouch's own /15 and payload; vouch-notify@
#      does not repeat them) and vouch-notify@ records the failure; `vouch doctor` names the
#      drop-in; an ExecStart= naming a missing binary fails the unit with 203 and vouch-notify@
#      still alerts the channels; a drop-in with InaccessiblePaths= is reported by doctor as
#      hiding the target, and a run under it fails with 15 naming InaccessiblePaths=; a target
#      added without daemon-reload passes `vouch preflight` in a shell but fails
#      `vouch preflight --as-service` and the run with 15, and daemon-reload fixes it; then
#      vouch-verify.service reads both targets back and `vouch status` says healthy;
#   4. a missing identity fails with 13 KEY, and `journalctl -x` explains it from the catalog;
#   5. the installed vouch.service scores at most 2.0 in `systemd-analyze security`;
#   6. `vouch doctor` reports both timers enabled and active with systemd's next trigger;
#      `dpkg -r` keeps config, state and archives; `dpkg --purge` removes config and state,
#      and keeps the archives and the age identity.
# Usage: tests/system/deb.sh [PATH.deb]   (default: the newest target/debian/vouch_*.deb)
# Needs root. Settings: see lib.sh.
#
# Single-quoted $1 and ${Status} are for the shell inside the container and dpkg-query, on purpose.
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

REPO=$(cd "$(dirname "$0")/../.." && pwd)
# The run-succeeded and preflight-failed events' MESSAGE_IDs (src/systemd/journal.rs, vouch.catalog).
ID_RUN_SUCCEEDED=4622a3509a154d1dbafd8fc4e8ee2f43
ID_PREFLIGHT_FAILED=97b78431475446d6a39379faa9b21177
# A phrase of the preflight-failed catalog entry (packaging/vouch.catalog).
CATALOG_PHRASE="A check that runs before anything is written failed"
# systemd-analyze security's exposure limit for the installed vouch.service.
MAX_EXPOSURE=2.0
TARGET=/srv/backups
TARGET2=/srv/offsite
DROPIN_GEN=/run/systemd/generator/vouch.service.d/50-vouch-targets.conf
DROPIN_TEST=/etc/systemd/system/vouch.service.d/zz-test.conf

require_root
deb_arg "$@"
pkg=$(dpkg-deb -f "$deb" Package Version) || fail "$deb is not a Debian package (dpkg-deb -f failed)"
assert_contains "$pkg" "Package: vouch" "$deb's control file"
rootfs_ensure

# check WHAT: says what the next assertions check.
check() {
    log "check: $*"
}

# show UNIT PROPS: `systemctl show -p PROPS UNIT` inside (KEY=VALUE lines).
show() {
    in_ct systemctl show -p "$2" "$1"
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

# indent: the input, indented, on stderr (output shown as evidence).
indent() {
    sed 's/^/    /' >&2
}

# RUN_INV, RUN_PROPS, RUN_RC: the last run_vouch's invocation, properties and `systemctl start`
# exit status.
RUN_INV=""
RUN_PROPS=""
RUN_RC=0

# run_vouch: `systemctl start vouch.service` (a oneshot: returns when the run ended), and what
# systemd then says about it.
run_vouch() {
    log "systemctl start vouch.service"
    RUN_RC=0
    # TimeoutStartSec=15min would hold a hung run that long; no run here takes a minute.
    in_ct timeout 300 systemctl start vouch.service >/dev/null 2>&1 || RUN_RC=$?
    [ "$RUN_RC" -ne 124 ] || fail "systemctl start vouch.service did not return within 300 s"
    RUN_PROPS=$(show vouch.service Result,ExecMainCode,ExecMainStatus,StatusText,InvocationID)
    RUN_INV=$(printf '%s\n' "$RUN_PROPS" | sed -n 's/^InvocationID=//p')
    printf '%s\n' "$RUN_PROPS" | indent
    [ -n "$RUN_INV" ] || fail "vouch.service has no InvocationID after systemctl start"
}

# run_journal: every journal entry the last run's processes wrote (JSON lines).
run_journal() {
    journal "_SYSTEMD_INVOCATION_ID=$RUN_INV"
}

# fail_run MESSAGE: fails, showing the last run's journal (with catalog explanations).
fail_run() {
    printf -- '--- journalctl -x _SYSTEMD_INVOCATION_ID=%s ---\n' "$RUN_INV" >&2
    in_ct journalctl --no-pager -x -o short-precise "_SYSTEMD_INVOCATION_ID=$RUN_INV" >&2 || true
    printf -- '---\n' >&2
    fail "$@"
}

# expect_run RESULT STATUS: the last run ended with Result=RESULT and exit status STATUS.
expect_run() {
    local result status
    result=$(printf '%s\n' "$RUN_PROPS" | sed -n 's/^Result=//p')
    status=$(printf '%s\n' "$RUN_PROPS" | sed -n 's/^ExecMainStatus=//p')
    if [ "$result" != "$1" ] || [ "$status" != "$2" ]; then
        fail_run "vouch.service: expected Result=$1 ExecMainStatus=$2, got Result=$result ExecMainStatus=$status"
    fi
    if [ "$1" = success ]; then
        [ "$RUN_RC" -eq 0 ] || fail_run "systemctl start vouch.service exited $RUN_RC after a successful run"
    else
        [ "$RUN_RC" -ne 0 ] || fail_run "systemctl start vouch.service exited 0 although the run failed"
        assert_eq 1 "$(printf '%s\n' "$RUN_PROPS" | sed -n 's/^ExecMainCode=//p')" \
            "vouch.service's ExecMainCode (1: exited, not killed)"
    fi
}

# expect_one_failure NAME CODE EVENT: the last run logged exactly one entry with an exit name,
# and it is NAME/CODE from EVENT, with a hint. Prints that entry (JSON).
expect_one_failure() {
    local entries n entry
    entries=$(run_journal | jq -c 'select(.VOUCH_EXIT_NAME != null)')
    n=$(printf '%s' "$entries" | grep -c . || true)
    [ "$n" -eq 1 ] || fail_run "expected exactly one journal entry with VOUCH_EXIT_NAME for the run, found $n"
    entry=$entries
    assert_eq "$1" "$(jq -r .VOUCH_EXIT_NAME <<<"$entry")" "VOUCH_EXIT_NAME of the failed run"
    assert_eq "$2" "$(jq -r .VOUCH_EXIT_CODE <<<"$entry")" "VOUCH_EXIT_CODE of the failed run"
    assert_eq "$3" "$(jq -r .VOUCH_EVENT <<<"$entry")" "VOUCH_EVENT of the failed run"
    [ -n "$(jq -r '.VOUCH_HINT // empty' <<<"$entry")" ] || fail_run "the $1 entry has no VOUCH_HINT: $entry"
    printf '%s\n' "$entry"
}

# listing DIR...: every file below DIR (hidden ones too) with size and mtime, for comparisons.
listing() {
    in_ct find "$@" -printf '%p %s %T@\n' | sort
}

# wait_notify: waits until vouch-notify@vouch.service.service recorded the last run's failure
# in /var/lib/vouch/last-failure.json and finished; prints the record.
wait_notify() {
    local deadline=$((SECONDS + 30)) record="" state
    while :; do
        record=$(in_ct cat /var/lib/vouch/last-failure.json 2>/dev/null) || record=""
        state=$(prop vouch-notify@vouch.service.service ActiveState)
        case $record in
            *"\"$RUN_INV\""*)
                case $state in inactive | failed) break ;; esac
                ;;
        esac
        if [ "$SECONDS" -ge "$deadline" ]; then
            in_ct systemctl status --no-pager vouch-notify@vouch.service.service >&2 || true
            fail "vouch-notify@vouch.service.service did not record invocation $RUN_INV within 30 s (state '$state'; last-failure.json: ${record:-missing})"
        fi
        sleep 0.2
    done
    printf '%s\n' "$record"
}

# write_config TARGET...: /etc/vouch/vouch.toml with /etc, a directory only its owner may read,
# and /home as sources, one required file, and the given targets. Keeps the conffile's mode.
write_config() {
    local t
    {
        printf '[backup]\nname = "deb"\n'
        printf 'sources = ["/etc", "/srv/data", "/home"]\n'
        printf 'required = ["/srv/data/secret"]\n'
        printf '[encryption]\nrecipients = ["%s"]\nidentity = "/etc/vouch/identity.txt"\n' "$recipient"
        for t in "$@"; do
            printf '[[target]]\nname = "%s"\npath = "%s"\nmin-free = "1MiB"\n' "${t##*/}" "$t"
        done
        printf '[notify]\nwebhook = "%s/hook"\nping = "%s/ping"\ntimeout = "5s"\n' "$HOOK_URL" "$HOOK_URL"
    } | in_ct sh -c 'cat >/etc/vouch/vouch.toml'
}

# run_doctor: `vouch doctor` inside; its output in DOCTOR_OUT, its exit status in DOCTOR_RC.
run_doctor() {
    DOCTOR_RC=0
    DOCTOR_OUT=$(in_ct vouch doctor 2>&1) || DOCTOR_RC=$?
    printf '%s\n' "$DOCTOR_OUT" | indent
}

# doctor_line LEVEL CHECK: the doctor's line for CHECK, which must have LEVEL (ok, warn, FAIL).
doctor_line() {
    local found
    found=$(printf '%s\n' "$DOCTOR_OUT" | grep -E "^$1 +$2  " | head -n 1) ||
        fail "vouch doctor has no '$1' line for '$2'"
    printf '%s' "$found"
}

# hooks: the requests the recording endpoint got so far (JSON lines: method, path, body).
hooks() {
    cat "$HOOK_LOG"
}

# hook_posts: the webhook payloads received so far, one JSON object per line.
hook_posts() {
    jq -c 'select(.path == "/hook") | .body | fromjson' "$HOOK_LOG"
}

# The notification endpoint: a recording HTTP server on the host's loopback, which the
# container shares (systemd-nspawn without --private-network).
HOOK_LOG=$(mktemp "$VOUCH_TEST_TMP/vouch-hooks.XXXXXX")
hook_port=$HOOK_LOG.port
python3 "$REPO/tests/system/hook-server.py" "$HOOK_LOG" "$hook_port" &
hook_pid=$!
at_exit kill "$hook_pid"
at_exit rm -f "$HOOK_LOG" "$hook_port"
for _ in $(seq 50); do [ -s "$hook_port" ] && break; sleep 0.1; done
[ -s "$hook_port" ] || fail "the recording HTTP server (tests/system/hook-server.py) did not start"
HOOK_URL="http://127.0.0.1:$(cat "$hook_port")"
log "notification endpoint: $HOOK_URL"

# The package, seen read-only at /mnt/share inside; a copy, so a rebuild meanwhile changes nothing.
share=$(mktemp -d "$VOUCH_TEST_TMP/vouch-deb-share.XXXXXX")
at_exit rm -rf --one-file-system "$share"
cp "$deb" "$share/vouch.deb"
log "package: $deb ($(printf '%s' "$pkg" | sed -n 's/^Version: //p'), built $(date -r "$deb" '+%F %T'))"
VOUCH_TEST_SHARE=$share
boot vouch-deb

# --- 1. dpkg -i: timers on, no backup. ---
check "dpkg -i installs the package without errors or warnings"
out=$(in_ct dpkg -i /mnt/share/vouch.deb 2>&1) || { printf '%s\n' "$out" | indent; fail "dpkg -i vouch.deb failed"; }
printf '%s\n' "$out" | indent
assert_not_contains "$out" "warning" "dpkg -i's output"
assert_eq "install ok installed" "$(in_ct dpkg-query -W -f='${Status}' vouch)" "vouch's dpkg status"

check "the docs are installed beside the README"
for doc in "$REPO"/docs/*.md; do
    doc=docs/${doc##*/}
    in_ct test -s "/usr/share/doc/vouch/$doc" || fail "/usr/share/doc/vouch/$doc is not in the package"
done

for t in vouch.timer vouch-verify.timer; do
    check "$t is enabled and active"
    props=$(show "$t" UnitFileState,ActiveState,SubState,NextElapseUSecRealtime)
    printf '%s\n' "$props" | indent
    assert_contains "$props" "UnitFileState=enabled" "$t"
    assert_contains "$props" "ActiveState=active" "$t"
done

check "no backup ran during the install"
assert_eq 0 "$(prop vouch.service ExecMainStartTimestampMonotonic)" \
    "vouch.service's ExecMainStartTimestampMonotonic (0: never started)"
assert_eq inactive "$(prop vouch.service ActiveState)" "vouch.service's ActiveState"
entries=$(journal SYSLOG_IDENTIFIER=vouch)
[ -z "$entries" ] || fail "vouch logged during the install: $(jq -r .MESSAGE <<<"$entries")"
entries=$(journal _SYSTEMD_UNIT=vouch.service)
[ -z "$entries" ] || fail "vouch.service logged during the install: $(jq -r .MESSAGE <<<"$entries")"
assert_eq "" "$(in_ct find /var/backups/vouch -mindepth 1)" "files in the packaged target /var/backups/vouch"

# OnCalendar=daily fires between 00:00 and 01:00 (RandomizedDelaySec=1h): stopped, so that no
# timer run lands between the checks below. Started again before dpkg -r, which must stop them.
in_ct systemctl stop vouch.timer vouch-verify.timer

# --- 2. A real config: a run in the sandbox succeeds and restores with stock tools. ---
log "writing an identity (age-keygen), sources, the target $TARGET and /etc/vouch/vouch.toml"
in_ct sh -ec '
    age-keygen -o /etc/vouch/identity.txt 2>/dev/null
    chmod 0600 /etc/vouch/identity.txt
    cp -p /etc/vouch/identity.txt /root/identity.txt
    install -d -m 0700 "$1"
    # Sources only their owners may read: vouch needs CAP_DAC_READ_SEARCH for them, and /home
    # is read-only in the sandbox (ProtectHome=read-only), not hidden.
    mkdir -p /srv/data /home/alice
    echo "the vault" >/srv/data/secret
    echo "alice notes" >/home/alice/notes
    chown -R 65534:65534 /srv/data && chmod 0700 /srv/data && chmod 0600 /srv/data/secret
    chown -R 1000:1000 /home/alice && chmod 0700 /home/alice && chmod 0600 /home/alice/notes
    # Access times older than a day, which a plain read would update (relatime).
    touch -a -d 2001-01-01T00:00:00Z /srv/data/secret /home/alice/notes' sh "$TARGET"
assert_eq 600 "$(in_ct stat -c %a /etc/vouch/identity.txt)" "/etc/vouch/identity.txt's mode"
recipient=$(in_ct age-keygen -y /etc/vouch/identity.txt)
old_atime=$(in_ct stat -c %X /srv/data/secret)
write_config "$TARGET"
in_ct systemctl daemon-reload

check "vouch-generator's drop-in gives vouch.service ReadWritePaths= for $TARGET"
rwp=$(prop vouch.service ReadWritePaths)
log "ReadWritePaths=$rwp"
assert_contains " $rwp " "$TARGET " "vouch.service's ReadWritePaths"
assert_contains "$(in_ct cat "$DROPIN_GEN")" "ReadWritePaths=-\"$TARGET\"" "vouch-generator's drop-in $DROPIN_GEN"

check "vouch preflight passes from a shell, and in vouch.service's sandbox (--as-service, the README's step before the first run)"
out=$(in_ct vouch preflight 2>&1) || { printf '%s\n' "$out" | indent; fail "vouch preflight failed with the config above"; }
out=$(in_ct vouch preflight --as-service 2>&1) || { printf '%s\n' "$out" | indent; fail "vouch preflight --as-service failed with the config above"; }
assert_contains "$out" "target-writable" "vouch preflight --as-service's table"

check "vouch doctor sees the sandbox open for $TARGET and the stopped timer"
run_doctor
assert_contains "$(doctor_line ok "sandbox ${TARGET##*/}")" "ReadWritePaths=$TARGET" "vouch doctor's sandbox line"
timer=$(doctor_line FAIL vouch.timer)
assert_contains "$timer" "vouch.timer is enabled and inactive" "vouch doctor's vouch.timer line"
assert_contains "$DOCTOR_OUT" "systemctl start vouch.timer" "vouch doctor's fix for the stopped timer"
assert_eq 2 "$DOCTOR_RC" "vouch doctor's exit status with a stopped timer"

run_vouch
check "the run succeeded"
expect_run success 0
check "StatusText is 'last run succeeded: ARCHIVE'"
status_text=$(printf '%s\n' "$RUN_PROPS" | sed -n 's/^StatusText=//p')
assert_contains "$status_text" "last run succeeded: " "vouch.service's StatusText (its STATUS= messages arrive)"

check "an archive and its receipt are in $TARGET"
archives=$(in_ct find "$TARGET" -maxdepth 1 -name 'deb-*.tar.gz.age')
[ "$(printf '%s' "$archives" | grep -c .)" -eq 1 ] || fail "expected one deb-*.tar.gz.age in $TARGET, found: $(listing "$TARGET")"
archive=$archives
in_ct test -s "$archive.json" || fail "no receipt $archive.json beside the archive; $TARGET holds: $(listing "$TARGET")"
receipt=$(in_ct cat "$archive.json")
jq -e . >/dev/null <<<"$receipt" || fail "the receipt $archive.json is not JSON: $receipt"
assert_contains "$status_text" "${archive##*/}" "vouch.service's StatusText"
sha=$(in_ct sha256sum "$archive" | cut -d' ' -f1)
assert_eq "$sha" "$(jq -r '."archive-sha256"' <<<"$receipt")" "the receipt's archive-sha256 against sha256sum of the archive"

check "the journal holds exactly one run-succeeded entry for invocation $RUN_INV, with its figures"
all=$(run_journal)
[ -n "$all" ] || fail_run "no journal entries with _SYSTEMD_INVOCATION_ID=$RUN_INV"
log "events: $(jq -r '.VOUCH_EVENT // empty' <<<"$all" | paste -sd' ')"
succeeded=$(jq -c 'select(.VOUCH_EVENT == "run-succeeded")' <<<"$all")
n=$(printf '%s' "$succeeded" | grep -c . || true)
[ "$n" -eq 1 ] || fail_run "expected exactly one VOUCH_EVENT=run-succeeded entry for the run, found $n"
assert_eq "$ID_RUN_SUCCEEDED" "$(jq -r .MESSAGE_ID <<<"$succeeded")" "MESSAGE_ID of run-succeeded"
for f in VOUCH_RUN_ID VOUCH_ARCHIVE VOUCH_ARCHIVE_SHA256 VOUCH_FILES VOUCH_BYTES_IN VOUCH_BYTES_OUT VOUCH_DURATION_USEC; do
    v=$(jq -r --arg f "$f" '.[$f] // empty' <<<"$succeeded")
    [ -n "$v" ] || fail_run "run-succeeded has no $f: $succeeded"
    case $f in
        VOUCH_FILES | VOUCH_BYTES_* | VOUCH_DURATION_USEC)
            case $v in '' | *[!0-9]*) fail_run "run-succeeded: $f=$v is not a number" ;; esac
            ;;
    esac
    printf '%s=%s\n' "$f" "$v" | indent
done
assert_eq "$sha" "$(jq -r .VOUCH_ARCHIVE_SHA256 <<<"$succeeded")" "run-succeeded's VOUCH_ARCHIVE_SHA256"
assert_contains "$(jq -r .VOUCH_ARCHIVE <<<"$succeeded")" "${archive##*/}" "run-succeeded's VOUCH_ARCHIVE"
run_id=$(jq -r .VOUCH_RUN_ID <<<"$succeeded")
assert_eq "$run_id" "$(jq -r '."run-id"' <<<"$receipt")" "the receipt's run-id against the journal's VOUCH_RUN_ID"
check "every entry of the run is vouch's own, with PRIORITY and the same VOUCH_RUN_ID (nothing raw on stderr)"
stray=$(jq -c --arg id "$run_id" \
    'select(.SYSLOG_IDENTIFIER != "vouch" or .PRIORITY == null or .VOUCH_RUN_ID != $id) | {SYSLOG_IDENTIFIER, PRIORITY, VOUCH_RUN_ID, MESSAGE}' <<<"$all")
[ -z "$stray" ] || fail_run "entries of the run without SYSLOG_IDENTIFIER=vouch, PRIORITY or VOUCH_RUN_ID=$run_id: $stray"
successes=("$RUN_INV")

check "the run pinged /start and /0 and posted a success payload with its run id"
log "requests: $(jq -c '{method, path}' "$HOOK_LOG" | tr '\n' ' ')"
assert_eq "/ping/start /ping/0" "$(jq -r 'select(.path | startswith("/ping")) | .path' "$HOOK_LOG" | tr '\n' ' ' | sed 's/ $//')" "ping requests of the successful run"
post=$(hook_posts | tail -n 1)
assert_eq "success 0 OK $run_id" "$(jq -r '"\(.result) \(."exit-code") \(."exit-name") \(."run-id")"' <<<"$post")" "the webhook payload"
assert_eq "${archive##*/}" "$(jq -r .archive <<<"$post")" "the webhook payload's archive"

check "the archive restores inside the container with the stock age and tar, and sha256sum -c passes"
out=$(in_ct bash -o pipefail -ec '
    rm -rf /var/tmp/restore && mkdir /var/tmp/restore
    age -d -i /etc/vouch/identity.txt "$1" | tar -xzf - -C /var/tmp/restore
    cd /var/tmp/restore && sha256sum -c --quiet .vouch/SHA256SUMS && wc -l <.vouch/SHA256SUMS' sh "$archive" 2>&1) ||
    { printf '%s\n' "$out" | indent; fail "restoring $archive with age -d | tar -xz, then sha256sum -c, failed"; }
log "sha256sum -c: $out files OK"
assert_eq "the vault" "$(in_ct cat /var/tmp/restore/srv/data/secret)" "srv/data/secret restored (readable only by its owner)"
assert_eq "alice notes" "$(in_ct cat /var/tmp/restore/home/alice/notes)" "home/alice/notes restored (under ProtectHome=read-only)"
check "the restored etc/ is identical to /etc"
out=$(in_ct diff -r --no-dereference /etc /var/tmp/restore/etc 2>&1) ||
    { printf '%s\n' "$out" | indent; fail "the restored etc/ differs from /etc (above)"; }
in_ct rm -rf /var/tmp/restore

check "vouch restore of etc/ from the archive equals /etc"
out=$(in_ct sh -ec '
    rm -rf /var/tmp/vrestore
    vouch restore "$1" --to /var/tmp/vrestore etc
    diff -r --no-dereference /etc /var/tmp/vrestore/etc' sh "$archive" 2>&1) ||
    { printf '%s\n' "$out" | indent; fail "vouch restore $archive --to /var/tmp/vrestore etc, then diff with /etc, failed"; }
in_ct rm -rf /var/tmp/vrestore

check "the backup left access times alone (sources are read-only in the sandbox)"
assert_eq "$old_atime" "$(in_ct stat -c %X /srv/data/secret)" "/srv/data/secret's atime after the backup"
assert_eq "$old_atime" "$(in_ct stat -c %X /home/alice/notes)" "/home/alice/notes's atime after the backup"
# Control: a plain read does update it here, so the check above is not vacuous.
in_ct cat /srv/data/secret >/dev/null
[ "$(in_ct stat -c %X /srv/data/secret)" != "$old_atime" ] ||
    fail "a plain read left the atime alone too; the atime check above proves nothing on this mount"

# --- 3. ReadWritePaths= emptied by a drop-in: 15, the fix, nothing written, notify. ---
log "adding $DROPIN_TEST with an empty ReadWritePaths= (resets the list)"
printf '[Service]\nReadWritePaths=\n' |
    in_ct sh -c 'mkdir -p "${1%/*}" && cat >"$1"' sh "$DROPIN_TEST"
in_ct systemctl daemon-reload
check "the drop-in empties vouch.service's ReadWritePaths="
dropins=$(prop vouch.service DropInPaths)
log "DropInPaths=$dropins"
assert_contains "$dropins" "$DROPIN_TEST" "vouch.service's DropInPaths"
assert_contains "$dropins" "$DROPIN_GEN" "vouch.service's DropInPaths"
assert_eq "" "$(prop vouch.service ReadWritePaths)" "vouch.service's ReadWritePaths with $DROPIN_TEST"
before=$(listing "$TARGET")

run_vouch
check "the run failed with 15 TARGET_READONLY, one journal entry, and a hint naming ReadWritePaths=$TARGET"
expect_run exit-code 15
entry=$(expect_one_failure TARGET_READONLY 15 preflight-failed)
log "journal: $(jq -c '{MESSAGE, VOUCH_HINT}' <<<"$entry")"
assert_eq "$ID_PREFLIGHT_FAILED" "$(jq -r .MESSAGE_ID <<<"$entry")" "MESSAGE_ID of preflight-failed"
assert_contains "$(jq -r .VOUCH_HINT <<<"$entry")" "ReadWritePaths=$TARGET" "VOUCH_HINT of TARGET_READONLY"
check "nothing new in $TARGET"
after=$(listing "$TARGET")
[ "$before" = "$after" ] || fail "$TARGET changed during a run that failed its preflight: before:
$before
after:
$after"
check "vouch doctor names the drop-in that made $TARGET read-only"
run_doctor
sandbox=$(doctor_line FAIL "sandbox ${TARGET##*/}")
assert_contains "$sandbox" "$TARGET is read-only in vouch.service" "vouch doctor's sandbox line"
assert_contains "$sandbox" "$DROPIN_TEST" "vouch doctor's sandbox line"
assert_contains "$(doctor_line FAIL "last result")" "exit status 15 (TARGET_READONLY)" "vouch doctor's last result"
assert_contains "$(doctor_line FAIL "last run")" "exit 15 (TARGET_READONLY)" "vouch doctor's last run"
assert_eq 2 "$DOCTOR_RC" "vouch doctor's exit status"
check "vouch-notify@vouch.service.service ran and recorded the failure"
record=$(wait_notify)
log "last-failure.json: $(jq -c . <<<"$record")"
assert_eq "success" "$(prop vouch-notify@vouch.service.service Result)" "vouch-notify@vouch.service.service's Result"
assert_eq "TARGET_READONLY" "$(jq -r '."exit-name"' <<<"$record")" "last-failure.json's exit-name"
assert_eq "15" "$(jq -r '."exit-status"' <<<"$record")" "last-failure.json's exit-status"
notified=$(journal _SYSTEMD_UNIT=vouch-notify@vouch.service.service VOUCH_UNIT=vouch.service | jq -r .MESSAGE | tail -n 1)
assert_contains "$notified" "TARGET_READONLY" "vouch-notify@'s journal entry"
# The instance is the failed unit's name as is: a "-" in it must not turn into "/" (%i, not %I).
check "vouch-notify@vouch-verify.service.service records the unit name with its '-'"
in_ct systemctl start vouch-notify@vouch-verify.service.service
assert_eq "vouch-verify.service" "$(in_ct cat /var/lib/vouch/last-failure.json | jq -r .unit)" \
    "last-failure.json's unit from vouch-notify@vouch-verify.service.service"
# RuntimeDirectoryPreserve=yes: the lock's directory outlives the units that share it.
in_ct test -d /run/vouch || fail "/run/vouch was removed when a vouch unit stopped"

log "replacing $DROPIN_TEST with one whose ExecStart= names a binary that is not installed"
printf '[Service]\nExecStart=\nExecStart=/usr/bin/vouch-not-installed run\n' | in_ct sh -c 'cat >"$1"' sh "$DROPIN_TEST"
in_ct systemctl reset-failed
in_ct systemctl daemon-reload
before_posts=$(hook_posts | grep -c . || true)
before_pings=$(jq -r 'select(.path == "/ping/1") | .path' "$HOOK_LOG" | grep -c . || true)
run_vouch
check "a missing binary fails the unit (203) and vouch-notify@ still alerts through the channels"
expect_run exit-code 203
wait_notify >/dev/null
post=$(hook_posts | tail -n 1)
[ "$(hook_posts | grep -c .)" -eq $((before_posts + 1)) ] || fail "expected one new webhook payload for the missing binary; requests: $(hooks)"
log "payload: $(jq -c '{result, "exit-code", "exit-name", reasons}' <<<"$post")"
assert_eq "failure 1 INTERNAL" "$(jq -r '"\(.result) \(."exit-code") \(."exit-name")"' <<<"$post")" "the webhook payload for a unit that never ran vouch"
assert_contains "$(jq -r '.reasons[]' <<<"$post")" "vouch.service failed" "the payload's reasons"
assert_eq $((before_pings + 1)) "$(jq -r 'select(.path == "/ping/1") | .path' "$HOOK_LOG" | grep -c . || true)" "/ping/1 requests"

log "replacing $DROPIN_TEST with one that hides $TARGET (InaccessiblePaths=)"
printf '[Service]\nInaccessiblePaths=%s\n' "$TARGET" | in_ct sh -c 'cat >"$1"' sh "$DROPIN_TEST"
in_ct systemctl daemon-reload
check "vouch doctor reports $TARGET hidden by the drop-in"
run_doctor
sandbox=$(doctor_line FAIL "sandbox ${TARGET##*/}")
assert_contains "$sandbox" "$TARGET is hidden from vouch.service: InaccessiblePaths=$TARGET" "vouch doctor's sandbox line"
assert_contains "$(doctor_line FAIL "last result")" "exit status 203 (systemd's EXEC)" "vouch doctor's last result after the missing binary"
before=$(listing "$TARGET")
run_vouch
check "a run under that drop-in fails with 15, the hint naming InaccessiblePaths= (not a tmpfs target)"
expect_run exit-code 15
entry=$(expect_one_failure TARGET_READONLY 15 preflight-failed)
log "journal: $(jq -c '{MESSAGE, VOUCH_HINT}' <<<"$entry")"
assert_contains "$(jq -r .MESSAGE <<<"$entry")" "$TARGET is hidden from this process" "the failed run's message"
assert_contains "$(jq -r .VOUCH_HINT <<<"$entry")" "InaccessiblePaths=" "VOUCH_HINT for a hidden target"
assert_eq "$before" "$(listing "$TARGET")" "$TARGET after a run that could not see it"
wait_notify >/dev/null

in_ct rm -r "${DROPIN_TEST%/*}"
in_ct systemctl reset-failed
in_ct systemctl daemon-reload
assert_contains " $(prop vouch.service ReadWritePaths) " "$TARGET " "vouch.service's ReadWritePaths without $DROPIN_TEST"

# A target added to the config without daemon-reload: the sandbox still lacks it.
write_config "$TARGET" "$TARGET2"
in_ct install -d -m 0700 "$TARGET2"
log "config with a second target $TARGET2, no daemon-reload yet"
check "vouch preflight passes from a shell, and --as-service fails with the unit's 15, naming ReadWritePaths=$TARGET2"
out=$(in_ct vouch preflight 2>&1) || { printf '%s\n' "$out" | indent; fail "vouch preflight from a shell failed: the sandbox is what should make the difference"; }
rc=0
out=$(in_ct vouch preflight --as-service 2>&1) || rc=$?
printf '%s\n' "$out" | indent
assert_eq 15 "$rc" "vouch preflight --as-service's exit status"
assert_contains "$out" "ReadWritePaths=$TARGET2" "vouch preflight --as-service's fix"
assert_contains "$out" "vouch.service's sandbox" "vouch preflight --as-service's output"
rc=0
json=$(in_ct vouch preflight --as-service --json 2>/dev/null) || rc=$?
assert_eq 15 "$rc" "vouch preflight --as-service --json's exit status"
assert_eq TARGET_READONLY "$(jq -r '."exit-name"' <<<"$json")" "vouch preflight --as-service --json's exit-name"
run_vouch
check "a target the generator's drop-in does not list yet fails with 15, naming the read-only mount"
expect_run exit-code 15
entry=$(expect_one_failure TARGET_READONLY 15 preflight-failed)
assert_contains "$(jq -r .VOUCH_HINT <<<"$entry")" "ReadWritePaths=$TARGET2" "VOUCH_HINT for $TARGET2"
# The read-only mount is named from /proc/self/mountinfo: readable under ProtectProc=invisible.
assert_contains "$RUN_PROPS" "(mount / is read-only)" "vouch.service's StatusText"
wait_notify >/dev/null
in_ct systemctl reset-failed
in_ct systemctl daemon-reload
check "after daemon-reload the generator opens $TARGET2 and the run succeeds on both targets"
assert_contains "$(in_ct cat "$DROPIN_GEN")" "ReadWritePaths=-\"$TARGET2\"" "vouch-generator's drop-in after daemon-reload"
# Started at once: the failure's records and this good run's are stamped in the same second,
# and status tells them apart by their invocation ids.
run_vouch
expect_run success 0
successes+=("$RUN_INV")
[ "$(in_ct find "$TARGET" -maxdepth 1 -name 'deb-*.tar.gz.age' | grep -c .)" -eq 2 ] ||
    fail "expected 2 archives in $TARGET after the second successful run: $(listing "$TARGET")"
in_ct find "$TARGET2" -maxdepth 1 -name 'deb-*.tar.gz.age' | grep -q . ||
    fail "no archive in $TARGET2: $(listing "$TARGET2")"

check "vouch-verify.service (the weekly restore test) reads back the latest archive on both targets"
out=0
in_ct timeout 300 systemctl start vouch-verify.service >/dev/null 2>&1 || out=$?
props=$(show vouch-verify.service Result,ExecMainStatus,InvocationID)
printf '%s\n' "$props" | indent
assert_contains "$props" "Result=success" "vouch-verify.service"
assert_contains "$props" "ExecMainStatus=0" "vouch-verify.service"
assert_eq 0 "$out" "systemctl start vouch-verify.service"
verify_inv=$(printf '%s\n' "$props" | sed -n 's/^InvocationID=//p')
verified=$(journal "_SYSTEMD_INVOCATION_ID=$verify_inv" VOUCH_EVENT=archive-verified | jq -r .VOUCH_TARGET | sort | paste -sd' ')
assert_eq "${TARGET##*/} ${TARGET2##*/}" "$verified" "targets with an archive-verified entry from vouch-verify.service"
newest=$(in_ct sh -c 'ls "$1"/deb-*.tar.gz.age | sort | tail -n 1' sh "$TARGET")
assert_contains "$(in_ct cat /var/lib/vouch/verified.json)" "${newest##*/}" "/var/lib/vouch/verified.json after vouch-verify.service"

check "vouch status inside: healthy (exit 0), both targets verified just now"
status_rc=0
status_json=$(in_ct vouch status --json) || status_rc=$?
jq -c '{status, reasons}' <<<"$status_json" | indent
assert_eq 0 "$status_rc" "vouch status's exit code after a good run and a verification"
assert_eq healthy "$(jq -r .status <<<"$status_json")" "vouch status's verdict"

check "journalctl MESSAGE_ID=$ID_RUN_SUCCEEDED lists exactly the ${#successes[@]} runs that exited 0"
listed=$(journal "MESSAGE_ID=$ID_RUN_SUCCEEDED" | jq -r ._SYSTEMD_INVOCATION_ID | sort)
assert_eq "$(printf '%s\n' "${successes[@]}" | sort)" "$listed" "invocations of the run-succeeded entries"

# --- 4. A missing identity: 13 KEY, explained by the catalog. ---
in_ct rm /etc/vouch/identity.txt
cursor=$(journal -n 1 | jq -r .__CURSOR)
run_vouch
check "the run failed with 13 KEY"
expect_run exit-code 13
entry=$(expect_one_failure KEY 13 preflight-failed)
log "journal: $(jq -c '{MESSAGE, VOUCH_HINT}' <<<"$entry")"
check "journalctl -x -u vouch.service shows the preflight-failed catalog text"
explained=$(in_ct journalctl --no-pager -x -u vouch.service --after-cursor="$cursor")
assert_contains "$explained" "vouch refused to start a backup: KEY" "journalctl -x's catalog subject"
assert_contains "$explained" "$CATALOG_PHRASE" "journalctl -x -u vouch.service"
printf '%s\n' "$explained" | grep -F -A2 "$CATALOG_PHRASE" | cut -c1-150 | indent
wait_notify >/dev/null
in_ct systemctl reset-failed
in_ct cp -p /root/identity.txt /etc/vouch/identity.txt

# --- 5. The installed unit's exposure. ---
check "systemd-analyze security vouch.service (installed, with the generator's drop-in) is at most $MAX_EXPOSURE"
out=$(in_ct systemd-analyze security --no-pager vouch.service 2>&1) || true
score=$(printf '%s\n' "$out" | sed -n 's/^→ Overall exposure level for vouch.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { printf '%s\n' "$out" | tail -n 5 | indent; fail "no 'Overall exposure level' line from systemd-analyze security vouch.service"; }
log "exposure: $score"
awk -v s="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(s + 0 <= max + 0) }' || {
    printf '%s\n' "$out" | grep -v '✓' | indent
    fail "installed vouch.service: exposure $score is above $MAX_EXPOSURE"
}
check "systemd-analyze verify of the installed units is silent"
out=$(in_ct systemd-analyze verify --man=no vouch.service vouch.timer vouch-verify.service \
    vouch-verify.timer vouch-notify@vouch.service.service 2>&1) || fail "systemd-analyze verify inside failed: $out"
[ -z "$out" ] || fail "systemd-analyze verify inside complained: $out"

# --- 6. dpkg -r keeps config, state and archives; dpkg --purge keeps only the archives (and keys). ---
in_ct systemctl start vouch.timer vouch-verify.timer
check "vouch doctor reports both timers enabled and active, with systemd's next trigger"
run_doctor
next=$(prop vouch.timer NextElapseUSecRealtime)
assert_contains "$(doctor_line ok vouch.timer)" "vouch.timer is enabled and active; next $next" "vouch doctor's vouch.timer line"
doctor_line ok vouch-verify.timer >/dev/null
doctor_line ok "sandbox ${TARGET2##*/}" >/dev/null
# The KEY failure above was reset (reset-failed sets Result=success): the exit status still counts.
assert_contains "$(doctor_line FAIL "last result")" "exit status 13 (KEY)" "vouch doctor's last result after reset-failed"
archives_before=$(listing "$TARGET" "$TARGET2")
log "dpkg -r vouch"
out=$(in_ct dpkg -r vouch 2>&1) || { printf '%s\n' "$out" | indent; fail "dpkg -r vouch failed"; }
printf '%s\n' "$out" | indent
check "after dpkg -r: program gone, timers stopped; config, state and archives kept"
assert_eq "deinstall ok config-files" "$(in_ct dpkg-query -W -f='${Status}' vouch)" "vouch's dpkg status after dpkg -r"
in_ct test ! -e /usr/bin/vouch || fail "/usr/bin/vouch still exists after dpkg -r"
for t in vouch.timer vouch-verify.timer; do
    assert_eq inactive "$(prop "$t" ActiveState)" "$t's ActiveState after dpkg -r"
done
assert_contains "$(in_ct cat /etc/vouch/vouch.toml)" 'name = "deb"' "/etc/vouch/vouch.toml after dpkg -r (a conffile, with the admin's changes)"
in_ct test -d /var/lib/vouch || fail "/var/lib/vouch was removed by dpkg -r"
assert_eq "$archives_before" "$(listing "$TARGET" "$TARGET2")" "archives after dpkg -r"

log "dpkg --purge vouch"
out=$(in_ct dpkg --purge vouch 2>&1) || { printf '%s\n' "$out" | indent; fail "dpkg --purge vouch failed"; }
printf '%s\n' "$out" | indent
check "after dpkg --purge: config and state gone; archives and the age identity kept"
status=$(in_ct dpkg-query -W -f='${Status}' vouch 2>/dev/null) || status="(unknown to dpkg)"
case $status in "(unknown to dpkg)" | "unknown ok not-installed" | "purge ok not-installed") ;;
    *) fail "vouch's dpkg status after --purge: expected not installed, got '$status'" ;;
esac
in_ct test ! -e /etc/vouch/vouch.toml || fail "/etc/vouch/vouch.toml still exists after dpkg --purge"
in_ct test ! -e /var/lib/vouch || fail "/var/lib/vouch still exists after dpkg --purge"
assert_eq "$archives_before" "$(listing "$TARGET" "$TARGET2")" "archives after dpkg --purge"
in_ct test -s /etc/vouch/identity.txt || fail "dpkg --purge removed /etc/vouch/identity.txt: the archives cannot be decrypted any more"
check "no vouch unit links or deb-systemd-helper state left after dpkg --purge"
left=$(in_ct find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
    /var/lib/systemd/deb-systemd-helper-masked -name '*vouch*' 2>/dev/null || true)
assert_eq "" "$left" "vouch's leftovers in /etc/systemd/system and deb-systemd-helper's state"

poweroff_ct
