#!/usr/bin/env bash
# Static checks of units/ on the host, no container needed:
#   - `systemd-analyze verify` of every unit, in a temporary root that holds the units, a
#     throwaway /usr/bin/vouch (verify insists that ExecStart= is executable), this host's own
#     systemd units (for timers.target, network-online.target, ...) and a drop-in shaped like
#     vouch-generator's output; the host's /usr/bin is never touched;
#   - every man: page in Documentation= exists in man/;
#   - `systemd-analyze security --offline=true` exposure of every service at most 2.0;
#   - the design rules: no Condition*= and no Restart= in the run and verify units, every
#     service hands failures to vouch-notify@ (but that one not to itself);
#   - ExecStart= names a subcommand the built binary has (when one is built; VOUCH_BIN).
# Usage: tests/system/units.sh     (root is not needed)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"

REPO=$(cd "$(dirname "$0")/../.." && pwd)
UNITS=$REPO/units
# Exposure limit on systemd-analyze's internal scale: an integer, 10 times the printed score.
MAX_EXPOSURE=20
# Subcommands the units already name but the binary does not have yet. Remove an entry when
# it lands: the check below then fails if it goes missing again.
PENDING_SUBCOMMANDS=""

command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (apt-get install systemd)"
[ -d /usr/lib/systemd/system ] || fail "no /usr/lib/systemd/system on this host to verify against"

services=(vouch.service vouch-verify.service vouch-notify@.service)
timers=(vouch.timer vouch-verify.timer)
for u in "${services[@]}" "${timers[@]}"; do
    [ -f "$UNITS/$u" ] || fail "units/$u is missing"
done

# --- systemd-analyze verify, in a temporary root. ---
root=$(mktemp -d "${TMPDIR:-/tmp}/vouch-units.XXXXXX")
at_exit rm -rf --one-file-system "$root"
mkdir -p "$root/usr/lib/systemd" "$root/usr/bin" "$root/etc/systemd/system/vouch.service.d"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
# Debian's merged /usr: units refer to /bin/... and /lib/... as well.
ln -s usr/bin "$root/bin"
ln -s usr/lib "$root/lib"
for u in "${services[@]}" "${timers[@]}"; do
    cp "$UNITS/$u" "$root/usr/lib/systemd/system/$u"
done
printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/vouch"
chmod 0755 "$root/usr/bin/vouch"
# The shape vouch-generator writes (src/systemd/generator.rs): quoted, "-"-prefixed, % doubled.
cat >"$root/etc/systemd/system/vouch.service.d/50-vouch-targets.conf" <<'EOF'
[Unit]
RequiresMountsFor="/mnt/usb disk/vouch"

[Service]
ReadWritePaths=-"/var/backups/vouch"
ReadWritePaths=-"/mnt/usb disk/vouch"
ReadWritePaths=-"/srv/100%%/vouch"
EOF
log "systemd-analyze verify --root=$root"
to_verify=(vouch.service vouch.timer vouch-verify.service vouch-verify.timer
    vouch-notify@vouch.service.service vouch-notify@vouch-verify.service.service)
rc=0
out=$(systemd-analyze verify --man=no --root="$root" "${to_verify[@]}" 2>&1) || rc=$?
[ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/    /' >&2
[ "$rc" -eq 0 ] || fail "systemd-analyze verify failed (exit $rc)"
[ -z "$out" ] || fail "systemd-analyze verify printed warnings (above)"
log "systemd-analyze verify: no complaints about ${to_verify[*]}"

# --- Documentation=man:... pages exist in man/. ---
for u in "${services[@]}" "${timers[@]}"; do
    # shellcheck disable=SC2013 # Documentation= is a list of words, not lines.
    for page in $(sed -n 's/^Documentation=//p' "$UNITS/$u"); do
        case $page in
            man:*\(*\))
                name=${page#man:}
                name=${name%%(*}
                section=${page##*(}
                section=${section%)}
                [ -f "$REPO/man/$name.$section" ] ||
                    fail "$u: Documentation=$page, but man/$name.$section does not exist"
                ;;
            *) fail "$u: Documentation=$page is not a man: page; check it by hand and extend this test" ;;
        esac
    done
done
log "Documentation= man pages: all present in man/"

# --- Exposure. ---
for u in "${services[@]}"; do
    score=$(systemd-analyze security --offline=true "$UNITS/$u" 2>/dev/null |
        sed -n 's/^→ Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    [ -n "$score" ] || fail "$u: no exposure score from systemd-analyze security"
    if ! systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE" "$UNITS/$u" >/dev/null 2>&1; then
        systemd-analyze security --offline=true "$UNITS/$u" 2>&1 | grep -v '✓' >&2 || true
        fail "$u: exposure $score is above $((MAX_EXPOSURE / 10)).$((MAX_EXPOSURE % 10))"
    fi
    log "exposure $u: $score"
done

# --- Design rules (DESIGN.md, systemd). ---
for u in vouch.service vouch-verify.service; do
    if grep -Eq '^[[:space:]]*(Condition|Assert)[A-Za-z]*=' "$UNITS/$u"; then
        fail "$u has a Condition*=/Assert*=: a skipped run would look green"
    fi
    if grep -Eq '^[[:space:]]*Restart=' "$UNITS/$u"; then
        fail "$u has Restart=: a oneshot backup is not restarted, its failure is reported"
    fi
    grep -qx 'OnFailure=vouch-notify@%n.service' "$UNITS/$u" ||
        fail "$u: no OnFailure=vouch-notify@%n.service"
    grep -qx 'Type=oneshot' "$UNITS/$u" || fail "$u: not Type=oneshot"
    grep -qx 'NotifyAccess=main' "$UNITS/$u" || fail "$u: no NotifyAccess=main (STATUS= and EXTEND_TIMEOUT_USEC= would be dropped)"
    # How a start ended is recorded without vouch, so a missing binary is still seen.
    stop_post=$(grep '^ExecStopPost=' "$UNITS/$u") || fail "$u: no ExecStopPost= recording the unit's result"
    # shellcheck disable=SC2016 # the $$VAR are literal: systemd passes them to the shell as $VAR.
    case $stop_post in
        "ExecStopPost=-/bin/sh -c "*'%n.result'*'$$SERVICE_RESULT'*'$$EXIT_CODE'*'$$EXIT_STATUS'*) ;;
        *) fail "$u: ExecStopPost= does not record \$SERVICE_RESULT/\$EXIT_CODE/\$EXIT_STATUS in %n.result: $stop_post" ;;
    esac
    case $stop_post in
        *vouch\ *|*/usr/bin/vouch*) fail "$u: ExecStopPost= needs the vouch binary: $stop_post" ;;
    esac
done
if grep -q '^OnFailure=' "$UNITS/vouch-notify@.service"; then
    fail "vouch-notify@.service has OnFailure=: a failing notification would start itself again"
fi
log "design rules: ok"

# --- ExecStart= subcommands exist in the built binary. ---
bin=${VOUCH_BIN:-$REPO/target/debug/vouch}
if [ -x "$bin" ]; then
    for u in "${services[@]}"; do
        sub=$(sed -n 's|^ExecStart=/usr/bin/vouch \([a-z-]*\).*|\1|p' "$UNITS/$u")
        [ -n "$sub" ] || fail "$u: ExecStart= does not run /usr/bin/vouch SUBCOMMAND"
        if "$bin" "$sub" --help >/dev/null 2>&1; then
            case " $PENDING_SUBCOMMANDS " in
                *" $sub "*) fail "$u: 'vouch $sub' exists now; remove it from PENDING_SUBCOMMANDS in $0" ;;
            esac
            log "ExecStart of $u: 'vouch $sub' exists in $bin"
        else
            case " $PENDING_SUBCOMMANDS " in
                *" $sub "*) log "ExecStart of $u: 'vouch $sub' is not in $bin yet (listed as pending)" ;;
                *) fail "$u: ExecStart= runs 'vouch $sub', which $bin does not know" ;;
            esac
        fi
    done
else
    log "ExecStart subcommands: not checked, no binary at $bin (build it, or set VOUCH_BIN)"
fi
