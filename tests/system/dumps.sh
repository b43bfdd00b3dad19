#!/usr/bin/env bash
# Database dumps inside vouch.service on a booted systemd: the .deb installed with `dpkg -i` in
# a fresh Debian container, PostgreSQL's client (postgresql-client-15 and what it needs beyond
# the rootfs, downloaded once from Debian into $VOUCH_TEST_CACHE/debs) installed beside it.
#   1. a PostgreSQL dump and an SQLite dump (a WAL database with a writer holding it open) made
#      by `systemctl start vouch.service`, under the unit's sandbox (ProtectSystem=strict,
#      SystemCallFilter=, RestrictAddressFamilies=, the generator's ReadWritePaths=): the unit
#      succeeds, the journal has one dump-written entry for each with its name, kind and
#      sha256, and both restore with stock tools (age, tar, pg_restore into a new database,
#      the SQLite file read back) with the same rows. The server's password comes from
#      `credential = "pg"`, passed to the unit with LoadCredential= in a drop-in, so the
#      credential path is the one systemd makes ($CREDENTIALS_DIRECTORY);
#   2. the same role with a wrong password: the unit fails with 20 HOOK, the run-failed entry
#      names the dump and its hint, and no new archive is written.
# The server is a PostgreSQL 15 cluster on the host (Debian's postgresql-15, which
# scripts/setup installs), listening on 127.0.0.1 only: the container shares the host's
# network, as a database host's local server would be reached over loopback.
#
# Usage: tests/system/dumps.sh [PATH.deb]   (default: the newest target/debian/vouch_*.deb)
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

PGBIN=/usr/lib/postgresql/15/bin
# postgresql-client-15 and its dependencies that a minbase rootfs lacks, plus perl-base, which
# perl needs at exactly its own version (the cached rootfs may be older than the mirror).
PG_DEBS=(perl-base postgresql-client-15 postgresql-client-common libpq5 libgssapi-krb5-2 libk5crypto3
    libkeyutils1 libkrb5-3 libkrb5support0 libldap-2.5-0 libsasl2-2 libsasl2-modules-db
    libreadline8 readline-common netbase perl perl-modules-5.36 libperl5.36 libgdbm6
    libgdbm-compat4 sensible-utils install-info)
PASSWORD=correct-horse-battery-staple
ROWS=4321

require_root
deb_arg "$@"
[ -x "$PGBIN/initdb" ] || fail "PostgreSQL 15 is needed on the host: run scripts/setup (apt-get install postgresql-15)"
tools_ensure jq=jq python3=python3
rootfs_ensure

# --- The server, on the host. ---
pgdir=$(mktemp -d "$VOUCH_TEST_TMP/vouch-dumps-pg.XXXXXX")
chmod 0755 "$pgdir"
chown postgres: "$pgdir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pg() {
    (cd / && runuser -u postgres -- "$@")
}
psql_host() {
    PGPASSWORD=$PASSWORD psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U backup "$@"
}
pg env LC_ALL=C "$PGBIN/initdb" -D "$pgdir/data" -A trust -U postgres --no-sync >/dev/null ||
    fail "initdb failed"
printf 'local all postgres trust\nhost all backup 127.0.0.1/32 scram-sha-256\n' >"$pgdir/data/pg_hba.conf"
pg "$PGBIN/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $pgdir -c fsync=off" start >/dev/null ||
    fail "pg_ctl start failed: $(cat "$pgdir/log")"
# Cleanups run in the order they were registered: the server stops before its directory goes.
at_exit pg "$PGBIN/pg_ctl" -D "$pgdir/data" -m immediate -w stop
at_exit rm -rf --one-file-system "$pgdir"
pg psql -X -q -h "$pgdir" -p "$port" -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE backup LOGIN SUPERUSER PASSWORD '$PASSWORD'" -c "CREATE DATABASE app" >/dev/null
psql_host -d app -c "CREATE TABLE items(id int PRIMARY KEY, label text);
    INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, $ROWS) g;"
log "server: PostgreSQL 15 on 127.0.0.1:$port, role backup with a scram password"

share=$(mktemp -d "$VOUCH_TEST_TMP/vouch-dumps-share.XXXXXX")
at_exit rm -rf --one-file-system "$share"
cp "$deb" "$share/vouch.deb"
log "package: $deb"
debs_into "$share" "${PG_DEBS[@]}"

# The application's data directory lives on the host and is bound into the container at
# /var/lib/app, so that the host's python3 (the rootfs has none) can hold the database open as
# its writer while the unit dumps it.
appdir=$(mktemp -d "$VOUCH_TEST_TMP/vouch-dumps-app.XXXXXX")
at_exit rm -rf --one-file-system "$appdir"

VOUCH_TEST_SHARE=$share
VOUCH_TEST_NSPAWN_ARGS="--bind=$appdir:/var/lib/app"
boot vouch-dumps
out=$(in_ct sh -c 'dpkg -i /mnt/share/*.deb' 2>&1) || { printf '%s\n' "$out" | indent; fail "dpkg -i of vouch.deb and postgresql-client-15 failed"; }
in_ct systemctl stop vouch.timer vouch-verify.timer
in_ct pg_dump --version | indent

# The SQLite database, in WAL mode, with a writer that keeps it open (and its -wal file
# non-empty) for the whole run.
in_ct sh -ec '
    age-keygen -o /etc/vouch/identity.txt 2>/dev/null
    chmod 0600 /etc/vouch/identity.txt
    mkdir -p /srv/data
    echo "some text" >/srv/data/note
    umask 077
    printf "%s\n" "$1" >/root/pg.pass' sh "$PASSWORD"
recipient=$(in_ct age-keygen -y /etc/vouch/identity.txt)
appdb=$appdir/app.db
python3 - "$appdb" <<'EOF'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
c.executemany("INSERT INTO notes(body) VALUES (?)", [(f"note {i}",) for i in range(1, 1001)])
c.commit()
EOF
python3 - "$appdb" <<'EOF' &
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("INSERT INTO notes(body) VALUES ('written by the open writer')")
c.commit()
time.sleep(600)
EOF
writer=$!
at_exit kill "$writer"

# write_config PASSWORD_CREDENTIAL: the config with both dumps; then daemon-reload.
write_config() {
    {
        printf '[backup]\nname = "dumps"\nsources = ["/srv/data"]\n'
        printf 'required = ["dump:pg/app", "dump:notes"]\n'
        printf '[encryption]\nrecipients = ["%s"]\nidentity = "/etc/vouch/identity.txt"\n' "$recipient"
        printf '[[target]]\nname = "local"\npath = "/var/backups/vouch"\nmin-free = "1MiB"\n'
        printf '[[dump]]\nname = "pg"\nkind = "postgresql"\ndatabases = ["app"]\n'
        printf 'host = "127.0.0.1"\nport = %s\nuser = "backup"\ncredential = "%s"\n' "$port" "$1"
        printf '[[dump]]\nname = "notes"\nkind = "sqlite"\npath = "/var/lib/app/app.db"\n'
    } | in_ct sh -c 'cat >/etc/vouch/vouch.toml'
    in_ct systemctl daemon-reload
}
in_ct sh -ec 'mkdir -p /etc/systemd/system/vouch.service.d
    printf "[Service]\nLoadCredential=pg:/root/pg.pass\n" >/etc/systemd/system/vouch.service.d/credential.conf'
write_config pg
assert_contains "$(prop vouch.service ReadWritePaths)" /var/lib/app "vouch.service's ReadWritePaths= (the SQLite directory, from the generator)"

# --- 1. Both dumps inside the unit. ---
check "preflight inside the unit's sandbox logs in to PostgreSQL with the credential"
out=$(in_ct vouch preflight --as-service 2>&1) || { printf '%s\n' "$out" | indent; fail "vouch preflight --as-service failed"; }
check "the run inside vouch.service dumps PostgreSQL and SQLite"
run_vouch
expect_status 0
written=$(journal "_SYSTEMD_INVOCATION_ID=$RUN_INV" SYSLOG_IDENTIFIER=vouch VOUCH_EVENT=dump-written)
printf '%s\n' "$written" | jq -c '{VOUCH_DUMP, VOUCH_DUMP_KIND, VOUCH_BYTES_IN, _SYSTEMD_UNIT}' | indent
assert_eq "notes sqlite vouch.service
pg postgresql vouch.service" \
    "$(jq -r '"\(.VOUCH_DUMP) \(.VOUCH_DUMP_KIND) \(._SYSTEMD_UNIT)"' <<<"$written" | sort)" \
    "the run's dump-written entries"
for sha in $(jq -r .VOUCH_DUMP_SHA256 <<<"$written"); do
    [[ $sha =~ ^[0-9a-f]{64}$ ]] || fail "VOUCH_DUMP_SHA256 '$sha' is not a sha256"
done
archive=$(field "$(run_entry run-succeeded)" VOUCH_ARCHIVE)
log "archive: $archive"

check "stock tools restore both dumps: age | tar | pg_restore into a new database, the SQLite file"
in_ct sh -ec 'cd /root && mkdir r && age -d -i /etc/vouch/identity.txt "/var/backups/vouch/$1" | tar -xzf - -C r' sh "$archive"
pg psql -X -q -h "$pgdir" -p "$port" -d postgres -c "CREATE DATABASE app_restored" >/dev/null
in_ct sh -ec 'PGPASSWORD=$(cat /root/pg.pass) pg_restore --exit-on-error --no-owner -h 127.0.0.1 -p "$1" -U backup -d app_restored /root/r/.vouch/dumps/pg.pgdump' sh "$port"
assert_eq "$ROWS" "$(psql_host -d app_restored -c 'SELECT count(*) FROM items')" "rows restored from the PostgreSQL dump"
in_ct test ! -e /root/r/var/lib/app/app.db-wal || fail "the archive holds a -wal file beside the SQLite snapshot"
# Read on the host (python3's sqlite3), through the bound directory.
in_ct cp /root/r/var/lib/app/app.db /var/lib/app/restored.db
snapshot=$appdir/restored.db
got=$(python3 -c 'import sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(c.execute("PRAGMA integrity_check").fetchone()[0], c.execute("SELECT count(*) FROM notes").fetchone()[0])' "$snapshot")
assert_eq "ok 1001" "$got" "integrity and rows of the SQLite snapshot (with the open writer's row)"

# --- 2. A wrong password: exit 20, nothing new on the target. ---
check "a wrong password fails the unit with 20 HOOK and its hint"
in_ct sh -c 'echo not-the-password >/root/pg.pass'
before=$(files_below /var/backups/vouch | sort)
run_vouch
expect_status 20
entry=$(run_entry run-failed)
assert_eq HOOK "$(field "$entry" VOUCH_EXIT_NAME)" "VOUCH_EXIT_NAME of the run-failed entry"
assert_contains "$(field "$entry" MESSAGE)" "password authentication failed" "the run-failed message"
[ -n "$(field "$entry" VOUCH_HINT)" ] || fail "the run-failed entry has no VOUCH_HINT"
assert_eq failed "$(prop vouch.service ActiveState)" "vouch.service's state"
assert_eq "$before" "$(files_below /var/backups/vouch | sort)" "the target's files after the failed run"

log "PASS: dumps inside vouch.service"
