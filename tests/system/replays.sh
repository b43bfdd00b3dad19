#!/usr/bin/env bash
# Field incidents replayed inside vouch.service on a booted systemd: the .deb installed with
# `dpkg -i` in a fresh Debian container, runs started with `systemctl start vouch.service`.
#   1. a target on an exFAT stick mounted through FUSE (exfat-fuse, installed in the container
#      from Debian's .debs), a filesystem with neither renameat2(RENAME_NOREPLACE) nor hard
#      links: the run succeeds, the archive and its receipt are on the stick under their final
#      names with no temporary file left, and `vouch verify` passes;
#   2. two targets, the second an ext4 disk (mounted with errors=remount-ro) that fails with a
#      filesystem error between the read-back and the commit, so that it is read-only when its
#      commit begins: the unit fails with 30 WRITE, the run-failed entry names the first
#      target in VOUCH_COMMITTED_TARGETS and the archive in VOUCH_ARCHIVE, the first target
#      holds the archive, the second nothing under a final name, and `vouch status` reports
#      the failed run. The run is held at the commit with the test suite's fault hook
#      (VOUCH_TEST_FAULT=stop:before-commit, set with a drop-in Environment=, src/fault.rs) so
#      that the disk fails at that moment; the failure itself is the kernel's (ext4's
#      trigger_fs_error makes it remount the disk read-only, as after an I/O error). Without
#      the hook no cause was reproducible here: this kernel has no quotas, and in trials an
#      ext4 filled so that the archive fits and its receipt does not was not reachable (the
#      archive's write needs one block more than the archive keeps, and the receipt fits in
#      that block);
#   3. a drop-in with LimitFSIZE= below the archive's size and `split = "off"`: preflight fails
#      with 18 TARGET_FILESIZE, the hint names LimitFSIZE= and split = "auto" (not the
#      filesystem), nothing is written; with `split = "auto"` the run succeeds with the
#      archive in parts no larger than the limit, and `vouch verify` passes.
# The kernel has no exFAT or vfat of its own, hence FUSE. The container gets /dev/fuse and two
# loop devices (the exFAT and ext4 images, attached on the host) with VOUCH_TEST_NSPAWN_ARGS
# (--bind= is enough: without a host systemd, nspawn puts the container in no device
# cgroup); exfat-fuse runs in the container's root namespace, so that its mount is there
# before vouch.service starts and propagates into the unit's namespace. The host needs
# mkfs.exfat (exfatprogs), mkfs.ext4 and losetup, installed by tools_ensure when missing, and
# apt-get to download the exfat-fuse .debs once into $VOUCH_TEST_CACHE/debs.
#
# Usage: tests/system/replays.sh [PATH.deb]   (default: the newest target/debian/vouch_*.deb)
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

# exfat-fuse and what it needs beyond the rootfs (fuse3 provides the `fuse` it depends on).
EXFAT_DEBS=(exfat-fuse libfuse2 fuse3 libfuse3-3)
STICK=/mnt/stick
FIRST=/srv/first
SECOND=/srv/second
LIMITED=/srv/limited
# The unit's file size limit in case 3, and the size of the (incompressible) data it backs up.
LIMIT=1048576
BIG=2500000

require_root
deb_arg "$@"
tools_ensure mkfs.exfat=exfatprogs mkfs.ext4=e2fsprogs losetup=mount
rootfs_ensure

# write_config SOURCE TARGET...: a config backing up SOURCE, each TARGET given as NAME=PATH
# with the extra lines in TARGET_EXTRA; then daemon-reload (vouch-generator's drop-in).
TARGET_EXTRA='min-free = "1MiB"'
write_config() {
    local source=$1 t
    shift
    {
        printf '[backup]\nname = "replays"\nsources = ["%s"]\n' "$source"
        printf '[encryption]\nrecipients = ["%s"]\nidentity = "/etc/vouch/identity.txt"\n' "$recipient"
        for t in "$@"; do
            printf '[[target]]\nname = "%s"\npath = "%s"\n%s\n' "${t%%=*}" "${t#*=}" "$TARGET_EXTRA"
        done
    } | in_ct sh -c 'cat >/etc/vouch/vouch.toml'
    in_ct systemctl daemon-reload
}

# attach IMAGE: attaches IMAGE to a free loop device on the host, detached at exit; prints it.
attach() {
    local dev
    dev=$(losetup -f --show "$1") || fail "losetup -f --show $1 failed"
    [[ $dev =~ ^/dev/loop[0-9]+$ ]] || fail "losetup printed '$dev', not a loop device"
    printf '%s\n' "$dev"
}

share=$(mktemp -d "$VOUCH_TEST_TMP/vouch-replays-share.XXXXXX")
at_exit rm -rf --one-file-system "$share"
cp "$deb" "$share/vouch.deb"
log "package: $deb"
debs_into "$share" "${EXFAT_DEBS[@]}"

# The disks: sparse images on the host, attached to loop devices the container gets.
disks=$(mktemp -d "$VOUCH_TEST_TMP/vouch-replays-disks.XXXXXX")
at_exit rm -rf --one-file-system "$disks"
truncate -s 64M "$disks/exfat.img"
mkfs.exfat "$disks/exfat.img" >/dev/null || fail "mkfs.exfat failed"
truncate -s 32M "$disks/ext4.img"
mkfs.ext4 -q -F "$disks/ext4.img" || fail "mkfs.ext4 failed"
exfat_dev=$(attach "$disks/exfat.img")
at_exit losetup -d "$exfat_dev"
ext4_dev=$(attach "$disks/ext4.img")
at_exit losetup -d "$ext4_dev"
log "disks: exFAT on $exfat_dev, ext4 on $ext4_dev"

VOUCH_TEST_SHARE=$share
VOUCH_TEST_NSPAWN_ARGS="--bind=/dev/fuse
--bind=$exfat_dev
--bind=$ext4_dev"
boot vouch-replays

out=$(in_ct sh -c 'dpkg -i /mnt/share/*.deb' 2>&1) || { printf '%s\n' "$out" | indent; fail "dpkg -i of vouch.deb and exfat-fuse failed"; }
in_ct systemctl stop vouch.timer vouch-verify.timer
in_ct sh -ec '
    age-keygen -o /etc/vouch/identity.txt 2>/dev/null
    chmod 0600 /etc/vouch/identity.txt
    mkdir -p /srv/data /srv/big "$1" "$2" "$3" "$4"
    head -c 300000 /dev/urandom >/srv/data/blob
    echo "some text" >/srv/data/note
    head -c "$5" /dev/urandom >/srv/big/blob' sh "$STICK" "$FIRST" "$SECOND" "$LIMITED" "$BIG"
recipient=$(in_ct age-keygen -y /etc/vouch/identity.txt)

# --- 1. An exFAT stick through FUSE. ---
check "exFAT through FUSE at $STICK, mounted in the container before the unit starts"
out=$(in_ct mount.exfat-fuse "$exfat_dev" "$STICK" 2>&1) || { printf '%s\n' "$out" | indent; fail "mount.exfat-fuse $exfat_dev $STICK failed"; }
fstype=$(in_ct findmnt -n -o FSTYPE "$STICK")
assert_contains "$fstype" fuse "the filesystem type at $STICK"
# The premises: this filesystem has neither of the commit's first two primitives. perl-base
# is in every Debian: syscall() with renameat2's number, AT_FDCWD (-100), RENAME_NOREPLACE (1).
case $(in_ct uname -m) in
    x86_64) renameat2=316 ;;
    aarch64) renameat2=276 ;;
    *) fail "renameat2's system call number on $(in_ct uname -m) is not known here" ;;
esac
in_ct sh -ec 'echo a >"$1/a"' sh "$STICK"
noreplace=$(in_ct perl -e 'my ($nr, $dir) = @ARGV; my ($from, $to) = ("a", "b");
    chdir $dir or die "$dir: $!\n";
    print syscall($nr, -100, $from, -100, $to, 1) == -1 ? "$!\n" : "renamed\n"' "$renameat2" "$STICK")
printf 'renameat2(RENAME_NOREPLACE): %s\n' "$noreplace" | indent
assert_eq "Invalid argument" "$noreplace" "renameat2(RENAME_NOREPLACE) on $STICK"
link=$(in_ct ln "$STICK/a" "$STICK/b" 2>&1) && fail "$STICK takes hard links; the case needs a filesystem without them"
printf 'link: %s\n' "$link" | indent
in_ct rm -f "$STICK/a" "$STICK/b"

TARGET_EXTRA='min-free = "1MiB"
split = "off"'
write_config /srv/data "stick=$STICK"
assert_contains "$(prop vouch.service ReadWritePaths)" "$STICK" "vouch.service's ReadWritePaths="
check "the run on the FUSE target succeeds"
run_vouch
expect_status 0
entry=$(run_entry run-succeeded)
archive=$(field "$entry" VOUCH_ARCHIVE)
printf '%s\n' "$(field "$entry" MESSAGE)" | indent
assert_eq stick "$(field "$entry" VOUCH_TARGET)" "VOUCH_TARGET of the run-succeeded entry"
check "the archive and its receipt are on the stick under their final names, nothing else"
files=$(files_below "$STICK")
printf '%s\n' "$files" | indent
assert_eq "$(printf '%s\n%s.json' "$archive" "$archive")" "$(sort <<<"$files")" "files on $STICK"
receipt=$(in_ct cat "$STICK/$archive.json")
assert_eq "$(in_ct stat -c %s "$STICK/$archive")" "$(jq -r '."archive-size"' <<<"$receipt")" "the archive's size against its receipt"
assert_eq "$(in_ct sha256sum "$STICK/$archive" | cut -d' ' -f1)" "$(jq -r '."archive-sha256"' <<<"$receipt")" "the archive's SHA-256 against its receipt"
check "vouch verify reads it back from the stick"
out=$(in_ct vouch verify --all 2>&1) || { printf '%s\n' "$out" | indent; fail "vouch verify failed on $STICK"; }
printf '%s\n' "$out" | indent
assert_contains "$out" "ok    stick  $archive" "vouch verify"
out=$(in_ct vouch status 2>&1) || { printf '%s\n' "$out" | indent; fail "vouch status is not healthy after the run on $STICK"; }
assert_contains "$out" "target stick ($STICK): healthy" "vouch status"
in_ct umount "$STICK"

# --- 2. The second target fails at its commit. ---
check "two targets; the second, ext4 on $ext4_dev at $SECOND, fails after the read-back"
in_ct mount -o errors=remount-ro "$ext4_dev" "$SECOND"
sysfs=/sys/fs/ext4/${ext4_dev#/dev/}/trigger_fs_error
[ -e "$sysfs" ] || fail "no $sysfs: is $ext4_dev mounted as ext4?"
assert_eq "$ext4_dev" "$(in_ct findmnt -n -o SOURCE "$SECOND")" "the device at $SECOND"
TARGET_EXTRA='min-free = "1MiB"'
write_config /srv/data "first=$FIRST" "second=$SECOND"
in_ct sh -ec '
    mkdir -p /etc/systemd/system/vouch.service.d
    printf "[Service]\nEnvironment=VOUCH_TEST_FAULT=stop:before-commit\n" >/etc/systemd/system/vouch.service.d/zz-fault.conf
    systemctl daemon-reload'
in_ct systemctl start --no-block vouch.service
deadline=$((SECONDS + 60))
while :; do
    pid=$(prop vouch.service MainPID)
    if [ "$pid" != 0 ] && [ "$(in_ct sh -c 'sed -n "s/^State:\t\(.\).*/\1/p" /proc/$1/status' sh "$pid" 2>/dev/null)" = T ]; then
        break
    fi
    [ "$SECONDS" -lt "$deadline" ] || fail "vouch.service did not stop before its commit within 60 s (state $(prop vouch.service ActiveState))"
    sleep 0.1
done
log "vouch (pid $pid inside) is stopped before its commit; ext4 error on $ext4_dev"
assert_eq "" "$(files_below "$FIRST" | grep -v '^\.vouch-' || true)" "final names in $FIRST before the commit"
printf 'replays.sh: the second disk fails\n' >"$sysfs"
deadline=$((SECONDS + 10))
# The filesystem goes read-only, not the mount: findmnt's FS-OPTIONS say `ro`, or from Linux
# 6.15 on `emergency_ro`; the mount's own flags stay rw.
until in_ct findmnt -n -o FS-OPTIONS "$SECOND" | grep -Eq '(^|,)(emergency_)?ro(,|$)'; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$SECOND is not read-only 10 s after the ext4 error ($(in_ct findmnt -n -o FS-OPTIONS "$SECOND"))"
    sleep 0.1
done
assert_contains "$(in_ct touch "$SECOND/probe" 2>&1 || true)" "Read-only file system" "touch in $SECOND after the ext4 error"
in_ct systemctl kill --kill-whom=main --signal=SIGCONT vouch.service
deadline=$((SECONDS + 120))
while [ "$(prop vouch.service ActiveState)" != failed ] && [ "$(prop vouch.service ActiveState)" != inactive ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "vouch.service did not finish within 120 s after SIGCONT"
    sleep 0.2
done
RUN_STATUS=$(prop vouch.service ExecMainStatus)
RUN_INV=$(prop vouch.service InvocationID)
in_ct sh -ec 'rm /etc/systemd/system/vouch.service.d/zz-fault.conf; systemctl daemon-reload'
check "the unit failed with 30 WRITE; the run-failed entry names the target that keeps the archive"
expect_status 30
entry=$(run_entry run-failed)
message=$(field "$entry" MESSAGE)
hint=$(field "$entry" VOUCH_HINT)
archive=$(field "$entry" VOUCH_ARCHIVE)
printf '%s\n%s\n' "$message" "$hint" | indent
assert_eq WRITE "$(field "$entry" VOUCH_EXIT_NAME)" "VOUCH_EXIT_NAME"
assert_eq first "$(field "$entry" VOUCH_COMMITTED_TARGETS)" "VOUCH_COMMITTED_TARGETS"
assert_eq second "$(field "$entry" VOUCH_TARGET)" "VOUCH_TARGET"
[[ $archive =~ ^replays-[0-9]{8}T[0-9]{6}Z\.tar\.gz\.age$ ]] || fail "VOUCH_ARCHIVE is '$archive', not an archive name"
assert_contains "$message" "target second: committing $archive failed: Read-only file system" "the run-failed message"
assert_contains "$message" "the archive is kept on first (committed and verified) and is not on second" "the run-failed message"
assert_contains "$hint" "Check the device and permissions of second" "VOUCH_HINT"
assert_contains "$hint" "the copies on first are good" "VOUCH_HINT"
assert_contains "$(prop vouch.service StatusText)" "failed: WRITE" "vouch.service's StatusText"
check "$FIRST holds the archive and its receipt, and it verifies; $SECOND has nothing under a final name"
assert_eq "$(printf '%s\n%s.json' "$archive" "$archive")" "$(files_below "$FIRST" | sort)" "files in $FIRST"
out=$(in_ct vouch verify --target first 2>&1) || { printf '%s\n' "$out" | indent; fail "vouch verify --target first failed"; }
printf '%s\n' "$out" | indent
assert_contains "$out" "ok    first  $archive" "vouch verify --target first"
left=$(files_below "$SECOND" | grep -v '^lost+found/' || true)
printf '%s: %s\n' "$SECOND" "${left:-empty}" | indent
# Only a temporary file can be left there: the read-only disk lets nothing be removed, and the
# next run's preflight removes it.
assert_eq "" "$(grep -v '^\.vouch-tmp\.' <<<"$left" || true)" "files under a final name in $SECOND (the read-only disk)"
check "vouch status reports the failed run and the second target"
STATUS_RC=0
out=$(in_ct vouch status 2>&1) || STATUS_RC=$?
printf '%s\n' "$out" | indent
assert_eq 2 "$STATUS_RC" "vouch status's exit status after the failed run"
assert_contains "$out" "failed with WRITE (30)" "vouch status"
assert_contains "$out" "target second ($SECOND): critical" "vouch status"
assert_contains "$out" "target first ($FIRST)" "vouch status"
json=$(in_ct vouch status --json) || true
assert_eq "30 WRITE $archive" "$(jq -r '."last-run" | "\(."exit-code") \(."exit-name") \(.archive)"' <<<"$json")" "vouch status --json's last run"
assert_eq "$archive" "$(jq -r '.targets[] | select(.name == "first") | ."latest-verified".archive' <<<"$json")" "vouch status --json: first's newest verified archive"
assert_eq 0 "$(jq -r '.targets[] | select(.name == "second") | .archives' <<<"$json")" "vouch status --json: archives on second"
in_ct umount "$SECOND"

# --- 3. LimitFSIZE= below the archive. ---
check "LimitFSIZE=$LIMIT in a drop-in and split = \"off\": preflight fails with 18 naming LimitFSIZE="
in_ct sh -ec 'printf "[Service]\nLimitFSIZE=%s\n" "$1" >/etc/systemd/system/vouch.service.d/zz-limit.conf' sh "$LIMIT"
TARGET_EXTRA='min-free = "1MiB"
split = "off"'
write_config /srv/big "limited=$LIMITED"
assert_eq "$LIMIT" "$(prop vouch.service LimitFSIZE)" "vouch.service's LimitFSIZE"
run_vouch
expect_status 18
entry=$(run_entry preflight-failed)
hint=$(field "$entry" VOUCH_HINT)
printf '%s\n%s\n' "$(field "$entry" MESSAGE)" "$hint" | indent
assert_eq TARGET_FILESIZE "$(field "$entry" VOUCH_EXIT_NAME)" "VOUCH_EXIT_NAME"
assert_eq limited "$(field "$entry" VOUCH_TARGET)" "VOUCH_TARGET"
assert_contains "$hint" "LimitFSIZE=" "VOUCH_HINT (the unit's limit)"
assert_contains "$hint" 'split = "auto"' "VOUCH_HINT"
assert_not_contains "$hint" "FAT32" "VOUCH_HINT (the filesystem is not to blame)"
assert_eq "" "$(files_below "$LIMITED")" "files in $LIMITED after the refused run"

check "with split = \"auto\" the same unit writes the archive in parts no larger than the limit"
TARGET_EXTRA='min-free = "1MiB"
split = "auto"'
write_config /srv/big "limited=$LIMITED"
run_vouch
expect_status 0
archive=$(field "$(run_entry run-succeeded)" VOUCH_ARCHIVE)
receipt=$(in_ct cat "$LIMITED/$archive-receipt.json") || fail "no split receipt $archive-receipt.json in $LIMITED"
size=$(jq -r '."archive-size"' <<<"$receipt")
[ "$size" -gt "$LIMIT" ] || fail "the archive ($size bytes) is not larger than the limit ($LIMIT): the case proves nothing"
parts=$(in_ct find "$LIMITED" -mindepth 1 -name "$archive.*" -printf '%f %s\n' | sort)
printf '%s\n' "$parts" | indent
nparts=$(((size + LIMIT - 1) / LIMIT))
assert_eq "$nparts" "$(printf '%s\n' "$parts" | grep -c .)" "parts of $archive in $LIMITED"
assert_eq "$(jq -r '.parts[]' <<<"$receipt")" "$(cut -d' ' -f1 <<<"$parts")" "the receipt's parts"
while read -r name bytes; do
    [ "$bytes" -le "$LIMIT" ] || fail "$name is $bytes bytes, above LimitFSIZE=$LIMIT"
done <<<"$parts"
assert_eq "$size" "$(awk '{s += $2} END {print s}' <<<"$parts")" "the parts' total size against the receipt"
assert_eq "" "$(files_below "$LIMITED" | grep '^\.vouch-' || true)" "temporary files in $LIMITED"
out=$(in_ct vouch verify 2>&1) || { printf '%s\n' "$out" | indent; fail "vouch verify failed on the split archive"; }
printf '%s\n' "$out" | indent
assert_contains "$out" "ok    limited  $archive" "vouch verify"

poweroff_ct
log "replays.sh: all checks passed"
