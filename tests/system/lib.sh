# shellcheck shell=bash
# The booted-systemd test bed: a cached Debian rootfs, booted with `systemd-nspawn -b` in a
# private mount namespace, reached with `nsenter`. Source it from a test script:
#
#   . "$(dirname "$0")/lib.sh"
#   rootfs_ensure
#   boot NAME            # sets CT_PID (the container's PID 1 as seen from the host)
#   in_ct CMD...         # runs CMD inside, with a clean environment
#   poweroff_ct          # clean shutdown; the EXIT trap does it too, whatever happened
#
# The recipe and why each step is there: /work/shared/notes/systemd-in-a-container.md.
# Needs root. Every failure says why; nothing passes silently.
#
# Settings (environment):
#   VOUCH_TEST_CACHE   cache directory outside the repo   (/var/cache/vouch-test)
#   VOUCH_TEST_ROOTFS  the cached rootfs                  ($VOUCH_TEST_CACHE/rootfs-bookworm)
#   VOUCH_TEST_TMP     where per-run copies go            (/var/tmp)
#   VOUCH_TEST_SHARE   host directory seen read-only at /mnt/share inside (a fresh empty one)
#   VOUCH_TEST_KEEP=1  keep the container's copy and log after the run, for a post-mortem
#   VOUCH_TEST_NSPAWN_ARGS  extra systemd-nspawn options for boot, one per line (a line may
#                      hold spaces), e.g. `--bind=/dev/fuse` to give the container a device
#   MIRROR             Debian mirror for debootstrap      (the URI apt already uses)

set -euo pipefail

VOUCH_TEST_CACHE=${VOUCH_TEST_CACHE:-/var/cache/vouch-test}
VOUCH_TEST_ROOTFS=${VOUCH_TEST_ROOTFS:-$VOUCH_TEST_CACHE/rootfs-bookworm}
VOUCH_TEST_TMP=${VOUCH_TEST_TMP:-/var/tmp}
SUITE=bookworm
# Packages debootstrap adds to minbase: systemd as PID 1 and its bus; age for restores with
# the stock tool inside the container (deb.sh), as a user without vouch would do them.
ROOTFS_PACKAGES=systemd,systemd-sysv,dbus,age
# Bump when the rootfs recipe below changes: an older cache is then rebuilt.
# 2: age added to ROOTFS_PACKAGES.
ROOTFS_RECIPE=2
# Written last by rootfs_ensure; a rootfs without it (an interrupted debootstrap) is rebuilt.
ROOTFS_STAMP=.vouch-test-rootfs

# Per-container state, set by boot and cleared by poweroff_ct.
CT_NAME=""
CT_DIR=""
CT_ROOT=""
CT_LOG=""
CT_NSPAWN_PID=""
CT_PID=""
SHARE_DIR=""

T0=$SECONDS

# log MESSAGE...: what is happening, with seconds since the script started.
log() {
    printf '[system %4ds] %s\n' "$((SECONDS - T0))" "$*" >&2
}

# fail MESSAGE...: stops the test with a reason (the EXIT trap then tears down).
fail() {
    printf '[system %4ds] FAIL: %s\n' "$((SECONDS - T0))" "$*" >&2
    exit 1
}

# assert_eq EXPECTED ACTUAL WHAT
assert_eq() {
    [ "$1" = "$2" ] || fail "$3: expected '$1', got '$2'"
}

# assert_contains HAYSTACK NEEDLE WHAT
assert_contains() {
    case $1 in
        *"$2"*) ;;
        *) fail "$3: '$2' not found in: $1" ;;
    esac
}

# assert_not_contains HAYSTACK NEEDLE WHAT
assert_not_contains() {
    case $1 in
        *"$2"*) fail "$3: '$2' unexpectedly found in: $1" ;;
        *) ;;
    esac
}

# deb_arg [PATH.deb]: sets `deb` to the package a test installs: the one given, else the newest
# target/debian/vouch_*.deb of this checkout; fails naming how to build one.
deb_arg() {
    local repo
    [ $# -le 1 ] || fail "usage: $0 [PATH.deb]"
    if [ $# -eq 1 ]; then
        deb=$1
    else
        repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
        # shellcheck disable=SC2012 # the names are vouch_VERSION_ARCH.deb, no odd characters.
        deb=$(ls -t "$repo"/target/debian/vouch_*.deb 2>/dev/null | head -n 1) || true
        [ -n "$deb" ] || fail "no .deb given and none in $repo/target/debian/: build it with \`cargo build --release --locked && cargo deb --no-build\`, or pass its path"
    fi
    [ -f "$deb" ] || fail "no such .deb: $deb"
}

require_root() {
    [ "$(id -u)" -eq 0 ] || fail "the system tests need root (debootstrap, mount namespaces, systemd-nspawn); run them as root"
}

# tools_ensure [COMMAND=PACKAGE...]: installs what the test bed uses from Debian's packages,
# and each PACKAGE whose COMMAND a test needs besides, only what is missing.
# shellcheck disable=SC2120 # rootfs_ensure passes none; tests pass their own tools.
tools_ensure() {
    require_root
    local need=() pair
    command -v systemd-nspawn >/dev/null || need+=(systemd-container)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v jq >/dev/null || need+=(jq)
    command -v nsenter >/dev/null || need+=(util-linux)
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null || need+=("${pair#*=}")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || fail "missing ${need[*]} and no apt-get to install them"
    log "installing ${need[*]} with apt-get"
    apt-get update -qq || fail "apt-get update failed; cannot install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
        fail "apt-get install ${need[*]} failed"
}

# mirror: the Debian mirror apt already uses (deb822 sources first, then sources.list).
mirror() {
    if [ -n "${MIRROR:-}" ]; then
        printf '%s\n' "$MIRROR"
        return
    fi
    local m=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
        m=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit}' /etc/apt/sources.list)
    fi
    [ -n "$m" ] || fail "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list; set MIRROR"
    printf '%s\n' "$m"
}

# unmount_below DIR: unmounts everything mounted at or below DIR, innermost first.
unmount_below() {
    local dir mnt
    [ -d "$1" ] || return 0
    dir=$(realpath "$1")
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r |
        while read -r mnt; do
            log "unmounting $mnt (left by an interrupted run)"
            umount -l "$mnt" || fail "cannot unmount $mnt"
        done
}

# rootfs_complete: true when the cached rootfs was built to the end by this recipe.
rootfs_complete() {
    [ -f "$VOUCH_TEST_ROOTFS/$ROOTFS_STAMP" ] &&
        [ "$(sed -n 's/^recipe=//p' "$VOUCH_TEST_ROOTFS/$ROOTFS_STAMP")" = "$ROOTFS_RECIPE" ] &&
        [ -x "$VOUCH_TEST_ROOTFS/lib/systemd/systemd" ] &&
        [ -x "$VOUCH_TEST_ROOTFS/bin/systemctl" ] &&
        [ -e "$VOUCH_TEST_ROOTFS/sbin/init" ]
}

# rootfs_ensure: a bookworm rootfs with systemd in the cache, built when missing or incomplete.
# Built beside the cache and renamed into place, so an interrupted build never looks complete.
rootfs_ensure() {
    # shellcheck disable=SC2119 # the test bed's own tools only.
    tools_ensure
    local lock_fd
    mkdir -p "$VOUCH_TEST_CACHE"
    # One builder at a time; a second test run waits for the first one's rootfs.
    exec {lock_fd}>>"$VOUCH_TEST_CACHE/.lock"
    flock "$lock_fd"
    if rootfs_complete; then
        log "rootfs: cached at $VOUCH_TEST_ROOTFS"
        exec {lock_fd}>&-
        return 0
    fi
    local m build start
    m=$(mirror)
    build="$VOUCH_TEST_ROOTFS.build"
    # An interrupted debootstrap leaves /proc and /sys mounted inside its tree.
    unmount_below "$build"
    rm -rf --one-file-system "$build"
    if [ -e "$VOUCH_TEST_ROOTFS" ]; then
        log "rootfs: $VOUCH_TEST_ROOTFS is incomplete or from an older recipe; rebuilding"
    fi
    log "rootfs: debootstrap --variant=minbase --include=$ROOTFS_PACKAGES $SUITE from $m into $build (30-80 s, 250 MB)"
    start=$SECONDS
    if ! debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" \
        "$SUITE" "$build" "$m" >"$VOUCH_TEST_CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$VOUCH_TEST_CACHE/debootstrap.log" >&2
        fail "debootstrap failed (full log: $VOUCH_TEST_CACHE/debootstrap.log)"
    fi
    printf 'recipe=%s\nsuite=%s\npackages=%s\nmirror=%s\nbuilt=%s\n' \
        "$ROOTFS_RECIPE" "$SUITE" "$ROOTFS_PACKAGES" "$m" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$build/$ROOTFS_STAMP"
    # Copies in progress hold the lock shared (boot), so none of them sees the swap.
    rm -rf --one-file-system "$VOUCH_TEST_ROOTFS"
    mv "$build" "$VOUCH_TEST_ROOTFS"
    log "rootfs: built in $((SECONDS - start)) s ($(du -sh "$VOUCH_TEST_ROOTFS" | cut -f1))"
    exec {lock_fd}>&-
}


# nspawn_child_init: prints the PID of the container's PID 1, the `systemd` child of nspawn.
nspawn_child_init() {
    local stat line pid fields
    for stat in /proc/[0-9]*/stat; do
        line=$(cat "$stat" 2>/dev/null) || continue
        pid=${line%% *}
        # The command name may contain spaces; the fields after it are "state ppid ...".
        read -r -a fields <<<"${line##*) }"
        if [ "${fields[1]}" = "$CT_NSPAWN_PID" ] &&
            [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ]; then
            printf '%s\n' "$pid"
            return 0
        fi
    done
    return 1
}

# nspawn_alive: true while the nspawn process of this run exists.
nspawn_alive() {
    [ -n "$CT_NSPAWN_PID" ] && kill -0 "$CT_NSPAWN_PID" 2>/dev/null
}

# show_ct_log: the last lines nspawn and the container's console printed.
show_ct_log() {
    if [ -n "$CT_LOG" ] && [ -s "$CT_LOG" ]; then
        printf -- '--- last lines of %s ---\n' "$CT_LOG" >&2
        tail -n 30 "$CT_LOG" >&2
        printf -- '---\n' >&2
    fi
}

# boot NAME: boots a fresh copy of the cached rootfs and waits until systemd inside finished
# booting. Sets and exports CT_PID (the container's PID 1 as the host sees it), CT_ROOT (its
# root directory on the host) and SHARE_DIR (mounted read-only at /mnt/share inside).
boot() {
    local name=${1:?boot needs a machine name}
    local start state deadline lock_fd
    require_root
    # Shared: any number of copies at once, but never while rootfs_ensure replaces the rootfs.
    exec {lock_fd}>>"$VOUCH_TEST_CACHE/.lock"
    flock -s "$lock_fd"
    rootfs_complete || fail "no complete rootfs at $VOUCH_TEST_ROOTFS; call rootfs_ensure first"
    [ -z "$CT_NSPAWN_PID" ] || fail "boot $name: container $CT_NAME is still running"
    CT_NAME=$name
    CT_DIR=$(mktemp -d "$VOUCH_TEST_TMP/vouch-ct-$name.XXXXXX")
    CT_ROOT=$CT_DIR/root
    CT_LOG=$CT_DIR/nspawn.log
    SHARE_DIR=${VOUCH_TEST_SHARE:-$CT_DIR/share}
    mkdir -p "$SHARE_DIR"
    SHARE_DIR=$(cd "$SHARE_DIR" && pwd)

    # A full copy, not an overlay: the container's / is then the host's real filesystem, as
    # on a user's machine (vouch refuses overlay targets as volatile), and runs never share state.
    start=$SECONDS
    cp -a --reflink=auto "$VOUCH_TEST_ROOTFS" "$CT_ROOT" || fail "copying the rootfs to $CT_ROOT failed"
    exec {lock_fd}>&-
    # debootstrap copied the build host's /etc/hostname; the machine name is the host name.
    printf '%s\n' "$name" >"$CT_ROOT/etc/hostname"
    log "boot $name: copied the rootfs to $CT_ROOT in $((SECONDS - start)) s"

    # nspawn wants to register with a host systemd that does not exist here (--register=no,
    # --keep-unit) and refuses to clean a /run that is not a tmpfs: give it a private mount
    # namespace with a tmpfs on /run/systemd/nspawn. stdin is /dev/null, so there is no
    # interactive console; the console output goes to the log.
    local extra=() arg
    while IFS= read -r arg; do
        [ -z "$arg" ] || extra+=("$arg")
    done <<<"${VOUCH_TEST_NSPAWN_ARGS:-}"
    [ ${#extra[@]} -eq 0 ] || log "boot $name: extra systemd-nspawn options: ${extra[*]}"
    start=$SECONDS
    # shellcheck disable=SC2016 # $1..$3 and $@ are expanded by the inner sh, on purpose.
    unshare -m --propagation private sh -c '
        root=$1 share=$2 machine=$3
        shift 3
        mkdir -p /run/systemd/nspawn &&
        mount -t tmpfs tmpfs /run/systemd/nspawn &&
        exec systemd-nspawn --quiet --register=no --keep-unit \
            -D "$root" --bind-ro="$share":/mnt/share "$@" -b -M "$machine"' \
        sh "$CT_ROOT" "$SHARE_DIR" "$name" "${extra[@]}" </dev/null >"$CT_LOG" 2>&1 &
    # unshare and sh exec, so this is the nspawn process itself.
    CT_NSPAWN_PID=$!
    log "boot $name: systemd-nspawn started (pid $CT_NSPAWN_PID, log $CT_LOG)"

    deadline=$((SECONDS + 30))
    until CT_PID=$(nspawn_child_init); do
        if ! nspawn_alive; then
            show_ct_log
            CT_NSPAWN_PID=""
            fail "boot $name: systemd-nspawn exited before the container's systemd started"
        fi
        [ "$SECONDS" -lt "$deadline" ] || { show_ct_log; fail "boot $name: no systemd child of nspawn after 30 s"; }
        sleep 0.1
    done
    export CT_PID CT_ROOT SHARE_DIR

    # Until the manager inside listens, systemctl cannot connect and prints nothing useful;
    # is-system-running --wait then blocks until boot is done.
    deadline=$((SECONDS + 120))
    while :; do
        state=$(in_ct timeout 60 systemctl is-system-running --wait 2>/dev/null) || true
        case $state in
            running | degraded | maintenance | stopping) break ;;
        esac
        nspawn_alive || { show_ct_log; CT_NSPAWN_PID=""; fail "boot $name: the container stopped while booting"; }
        [ "$SECONDS" -lt "$deadline" ] || { show_ct_log; fail "boot $name: not booted after 120 s (state '$state')"; }
        sleep 0.2
    done
    log "boot $name: container PID 1 is host pid $CT_PID; booted to '$state' in $((SECONDS - start)) s"
}

# in_ct CMD...: runs CMD inside the container (all its namespaces, its root), with a clean
# environment so nothing from the host's (NOTIFY_SOCKET, SYSTEMD_*, locale) leaks in.
in_ct() {
    [ -n "$CT_PID" ] || fail "in_ct $*: no container is running"
    nsenter -t "$CT_PID" -a -- /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 "$@"
}

# wait_nspawn SECONDS: waits for the nspawn process to exit; false on timeout.
wait_nspawn() {
    local deadline=$((SECONDS + $1))
    while nspawn_alive; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# ct_stop: shuts the container down cleanly, waits for nspawn to exit and removes the copy.
# Returns non-zero when the container did not stop by itself (it is killed then, and still
# removed). Runs in the shell that started nspawn, so `wait` can read nspawn's exit status.
ct_stop() {
    local rc=0 status=0 start=$SECONDS
    if nspawn_alive; then
        # Torn down while booting, CT_PID may not be known yet.
        [ -n "$CT_PID" ] || CT_PID=$(nspawn_child_init) || CT_PID=""
        if [ -n "$CT_PID" ]; then
            log "poweroff $CT_NAME: systemctl poweroff"
            # The connection may drop while the manager goes down; nspawn's exit is the proof.
            in_ct systemctl poweroff >/dev/null 2>&1 || true
        else
            log "poweroff $CT_NAME: the container's systemd is not up; stopping nspawn"
            # nspawn turns SIGTERM into a clean shutdown request to the container.
            kill -TERM "$CT_NSPAWN_PID" 2>/dev/null || true
        fi
        if ! wait_nspawn 60; then
            rc=1
            log "poweroff $CT_NAME: still running after 60 s; SIGTERM to nspawn"
            kill -TERM "$CT_NSPAWN_PID" 2>/dev/null || true
            if ! wait_nspawn 15; then
                log "poweroff $CT_NAME: SIGKILL to nspawn"
                kill -KILL "$CT_NSPAWN_PID" 2>/dev/null || true
                wait_nspawn 10 || log "poweroff $CT_NAME: nspawn pid $CT_NSPAWN_PID does not die"
            fi
        fi
        wait "$CT_NSPAWN_PID" 2>/dev/null || status=$?
        if [ "$rc" -eq 0 ] && [ "$status" -ne 0 ]; then
            rc=1
            log "poweroff $CT_NAME: systemd-nspawn exited with status $status"
        fi
        if [ "$rc" -eq 0 ]; then
            log "poweroff $CT_NAME: stopped in $((SECONDS - start)) s"
        else
            show_ct_log
        fi
    fi
    CT_NSPAWN_PID=""
    CT_PID=""
    if [ -n "$CT_DIR" ] && [ -d "$CT_DIR" ]; then
        if [ "${VOUCH_TEST_KEEP:-0}" = 1 ]; then
            log "poweroff $CT_NAME: kept $CT_DIR (VOUCH_TEST_KEEP=1)"
        else
            # The container's mounts lived in its own namespace, gone with nspawn;
            # --one-file-system guards the host if anything were still mounted below.
            rm -rf --one-file-system "$CT_DIR"
        fi
    fi
    CT_DIR=""
    CT_ROOT=""
    return "$rc"
}

# poweroff_ct: ct_stop, failing the test when the container did not shut down cleanly.
poweroff_ct() {
    local name=$CT_NAME
    ct_stop || fail "poweroff $name: the container did not shut down cleanly"
}

# at_exit CMD [ARGS...]: runs CMD when the script ends, whatever happened (after the container
# is stopped).
AT_EXIT=()
at_exit() {
    AT_EXIT+=("$(printf '%q ' "$@")")
}

# teardown: the EXIT trap; always stops and removes the container, keeps the exit status.
teardown() {
    local rc=$? cmd
    trap - EXIT
    if [ -n "$CT_NSPAWN_PID" ] || [ -n "$CT_DIR" ]; then
        log "teardown: stopping container $CT_NAME"
        if ! ct_stop && [ "$rc" -eq 0 ]; then
            log "FAIL: the container did not shut down cleanly"
            rc=1
        fi
    fi
    for cmd in "${AT_EXIT[@]}"; do
        eval "$cmd" || log "cleanup failed: $cmd"
    done
    if [ "$rc" -eq 0 ]; then
        log "PASS: $(basename "$0")"
    else
        log "FAILED: $(basename "$0") (exit $rc)"
    fi
    exit "$rc"
}
# A command that fails outside fail(): say which one and where, then the EXIT trap runs.
set -E
on_err() {
    local rc=$1 cmd=$2 i where=""
    for ((i = 1; i < ${#FUNCNAME[@]}; i++)); do
        where+=" <- ${FUNCNAME[i]} ($(basename "${BASH_SOURCE[i]}"):${BASH_LINENO[i - 1]})"
    done
    log "FAIL: exit status $rc from: $cmd$where"
}
trap 'on_err $? "$BASH_COMMAND"' ERR
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
