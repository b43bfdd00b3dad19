# shellcheck shell=bash
# Helpers for the booted tests that drive vouch.service in the test bed's container: start the
# unit and read its result, find the run's journal entries, and fetch Debian packages once for
# installing inside. Source it after lib.sh:
#
#   . "$(dirname "$0")/lib.sh"
#   . "$(dirname "$0")/unit.sh"
#
# DEB_CACHE (default $VOUCH_TEST_CACHE/debs) keeps the downloaded .debs between runs.

DEB_CACHE=${DEB_CACHE:-$VOUCH_TEST_CACHE/debs}

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

# run_vouch: `systemctl start vouch.service` (a oneshot: returns when the run ended); sets
# RUN_STATUS (ExecMainStatus) and RUN_INV (its invocation).
run_vouch() {
    log "systemctl start vouch.service"
    in_ct timeout 300 systemctl start vouch.service >/dev/null 2>&1 || true
    RUN_STATUS=$(prop vouch.service ExecMainStatus)
    RUN_INV=$(prop vouch.service InvocationID)
    printf 'ExecMainStatus=%s InvocationID=%s\n' "$RUN_STATUS" "$RUN_INV" | indent
}

# expect_status STATUS: the last run exited with STATUS; else fails showing its journal.
expect_status() {
    if [ "$RUN_STATUS" != "$1" ]; then
        in_ct journalctl --no-pager -o short-precise "_SYSTEMD_INVOCATION_ID=$RUN_INV" >&2 || true
        fail "vouch.service: expected ExecMainStatus=$1, got $RUN_STATUS"
    fi
}

# run_entry EVENT: the last run's journal entry with VOUCH_EVENT=EVENT (JSON); fails unless
# there is exactly one.
run_entry() {
    local entries
    entries=$(journal "_SYSTEMD_INVOCATION_ID=$RUN_INV" SYSLOG_IDENTIFIER=vouch "VOUCH_EVENT=$1")
    [ "$(printf '%s' "$entries" | grep -c .)" -eq 1 ] ||
        fail "expected one $1 entry from invocation $RUN_INV, got: ${entries:-none}"
    printf '%s\n' "$entries"
}

# field JSON NAME: a field of a journal entry ("" when absent).
field() {
    jq -r --arg f "$2" '.[$f] // ""' <<<"$1"
}

# files_below DIR: every file below DIR, hidden ones too, one name a line (relative to DIR).
files_below() {
    in_ct find "$1" -mindepth 1 -type f -printf '%P\n'
}

# debs_into DIR PACKAGE...: the newest .deb of each PACKAGE, downloaded with apt-get into
# $DEB_CACHE once (apt-get update first when the lists lack one), copied into DIR.
debs_into() {
    local dir=$1 p missing=()
    shift
    mkdir -p "$DEB_CACHE"
    for p in "$@"; do
        compgen -G "$DEB_CACHE/${p}_*.deb" >/dev/null || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get download ${missing[*]} into $DEB_CACHE"
        if ! (cd "$DEB_CACHE" && apt-get download -q "${missing[@]}" >/dev/null 2>&1); then
            apt-get update -qq || fail "apt-get update failed; cannot download ${missing[*]}"
            (cd "$DEB_CACHE" && apt-get download -q "${missing[@]}" >/dev/null) ||
                fail "apt-get download ${missing[*]} failed"
        fi
    fi
    for p in "$@"; do
        cp "$(compgen -G "$DEB_CACHE/${p}_*.deb" | sort -V | tail -n 1)" "$dir/"
    done
}
