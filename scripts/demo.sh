#!/usr/bin/env bash
# The pitrkit story on the local-directory default: a throwaway PostgreSQL archives its WAL
# with wal-push, bb-push takes a base backup, pitr-check shows what the archive can restore,
# someone deletes every customer by mistake, and
# bb-restore brings a copy back to the second before the DELETE (replaying through wal-fetch).
#
# Everything lives in $DEMO_DIR (default /tmp/pitrkit-demo) and is removed at the start of
# the next run. The cluster listens on 127.0.0.1 only, on a free port.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
DEMO_DIR=${DEMO_DIR:-/tmp/pitrkit-demo}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
"$here/scripts/install-deps.sh"
say "building pitrkit (release)"
(cd "$here" && cargo build --release --bins -q)

# PostgreSQL refuses to run as root; as root, the cluster runs as 'postgres'.
if [ "$(id -u)" -eq 0 ]; then as_pg() { runuser -u postgres -- "$@"; }; owner=postgres; else as_pg() { "$@"; }; owner=$(id -un); fi
[ -f "$DEMO_DIR/primary/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$DEMO_DIR/primary" -m immediate stop >/dev/null 2>&1 || true
[ -f "$DEMO_DIR/restored/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$DEMO_DIR/restored" -m immediate stop >/dev/null 2>&1 || true
rm -rf "$DEMO_DIR"; mkdir -p "$DEMO_DIR/bin"
for t in wal-push wal-fetch bb-push bb-restore pitr-check; do cp "$here/target/release/$t" "$DEMO_DIR/bin/"; done
chown -R "$owner" "$DEMO_DIR"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P1=$(port); P2=$(port)
REPO="$DEMO_DIR/repo"
psql1() { as_pg "$PGBIN/psql" -X -q -At -h "$DEMO_DIR" -p "$P1" -d postgres -c "$1"; }
psql2() { as_pg "$PGBIN/psql" -X -q -At -h "$DEMO_DIR" -p "$P2" -d postgres -c "$1"; }
trap 'as_pg "$PGBIN/pg_ctl" -D "$DEMO_DIR/primary" -m immediate stop >/dev/null 2>&1 || true; as_pg "$PGBIN/pg_ctl" -D "$DEMO_DIR/restored" -m immediate stop >/dev/null 2>&1 || true' EXIT

say "a throwaway PostgreSQL archiving every WAL segment with wal-push"
as_pg "$PGBIN/initdb" -D "$DEMO_DIR/primary" -A trust -U postgres --data-checksums >/dev/null
cat >> "$DEMO_DIR/primary/postgresql.conf" <<CONF
port = $P1
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DEMO_DIR'
archive_mode = on
archive_command = '$DEMO_DIR/bin/wal-push --repo $REPO %p'
CONF
echo "archive_command = '$DEMO_DIR/bin/wal-push --repo $REPO %p'"
as_pg "$PGBIN/pg_ctl" -D "$DEMO_DIR/primary" -l "$DEMO_DIR/primary.log" -w start >/dev/null

say "last night's base backup: bb-push"
psql1 "create table customers(id int primary key, name text, since timestamptz default now());
       insert into customers(id, name) select i, 'customer ' || i from generate_series(1, 5000) i;"
echo "\$ bb-push --repo $REPO --pgdata $DEMO_DIR/primary"
as_pg "$DEMO_DIR/bin/bb-push" --repo "$REPO" --pgdata "$DEMO_DIR/primary" | python3 -m json.tool

say "a day of business after the backup: 5,000 more customers, then orders"
psql1 "insert into customers(id, name) select i, 'customer ' || i from generate_series(5001, 10000) i;"
psql1 "create table orders(id serial primary key, customer int, amount numeric);
       insert into orders(customer, amount) select 1 + i % 10000, i from generate_series(1, 50000) i;"
psql1 "select pg_switch_wal()" >/dev/null
sleep 1.2
before=$(psql1 "select now()::timestamptz(6)")
echo "customers: $(psql1 'select count(*) from customers'), orders: $(psql1 'select count(*) from orders')"
echo "the last good moment: $before"
sleep 1.2

say "the mistake: DELETE FROM customers (the WHERE clause was forgotten)"
psql1 "delete from orders; delete from customers;"
echo "customers now: $(psql1 'select count(*) from customers')"
psql1 "select pg_switch_wal()" >/dev/null
last=$(psql1 "select pg_walfile_name(pg_current_wal_lsn())")
for _ in $(seq 1 100); do
  done_=$(psql1 "select coalesce(last_archived_wal,'') from pg_stat_archiver")
  [[ "$done_" < "$last" ]] || break; sleep 0.2
done
psql1 "select pg_switch_wal()" >/dev/null; sleep 1

say "the WAL archive (compressed, checksummed, grouped by timeline)"
(cd "$REPO" && find . -type f | sort | head -20 && echo "... $(find . -name '*.zst' | wc -l) WAL objects, $(du -sh . | cut -f1) in all")
echo "archiver: $(psql1 "select archived_count || ' archived, ' || failed_count || ' failed' from pg_stat_archiver")"

say "what the archive can restore: pitr-check (gaps, recovery windows, RPO, archiver health)"
echo "\$ pitr-check --repo $REPO --dbname 'host=$DEMO_DIR port=$P1 user=postgres dbname=postgres'"
as_pg "$DEMO_DIR/bin/pitr-check" --repo "$REPO" --dbname "host=$DEMO_DIR port=$P1 user=postgres dbname=postgres" \
  || echo "(pitr-check exit status $?: see its findings above)"

say "bb-restore to the last good moment, $before"
mkdir -p "$DEMO_DIR/restored"; chown "$owner" "$DEMO_DIR/restored"
echo "\$ bb-restore --repo $REPO --pgdata $DEMO_DIR/restored --target-time '$before' --archive-mode off"
as_pg "$DEMO_DIR/bin/bb-restore" --repo "$REPO" --pgdata "$DEMO_DIR/restored" --target-time "$before" --archive-mode off | python3 -m json.tool
cat >> "$DEMO_DIR/restored/postgresql.conf" <<CONF
port = $P2
CONF
echo "postgresql.auto.conf now says:"; grep -v '^#' "$DEMO_DIR/restored/postgresql.auto.conf" | sed 's/^/  /'
as_pg "$PGBIN/pg_ctl" -D "$DEMO_DIR/restored" -l "$DEMO_DIR/restored.log" -W start >/dev/null
for _ in $(seq 1 300); do
  [ "$(psql2 'select pg_is_in_recovery()' 2>/dev/null)" = "f" ] && break; sleep 0.2
done
grep -E "restored log file|recovery stopping|archive recovery complete" "$DEMO_DIR/restored.log" | sed 's/^/  log: /'

say "the rows are back"
c=$(psql2 "select count(*) from customers"); o=$(psql2 "select count(*) from orders")
echo "restored copy: customers: $c, orders: $o   (primary after the mistake: $(psql1 'select count(*) from customers'))"
if [ "$c" = 10000 ] && [ "$o" = 50000 ]; then
  echo "OK: recovered to the second before the DELETE"
else
  echo "FAILED: expected 10000 customers and 50000 orders" >&2; exit 1
fi
