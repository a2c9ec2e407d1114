#!/usr/bin/env bash
# A "realistic" walset: WAL that zstd -3 stores at about 3.5:1, where the peers' pgbench walset
# (full-page images of pgbench's blank-padded rows) stores at about 12:1.
#
#   bench/make-walset-real.sh [DIR]      # as root; default DIR=$BENCH_ROOT/walset-real (/tmp/peerbench/walset-real)
#
# A throwaway PostgreSQL 15 cluster ($BENCH_ROOT/walgen-real, port $REAL_PORT, removed at the end):
# pgbench -i -s $REAL_SCALE plus a table `docs` of $REAL_DOCS rows with 384 characters of random hex
# text each (the md5 of random()); a CHECKPOINT; then pgbench -c 4 -j 2 --random-seed=$REAL_SEED runs
# two scripts, the built-in tpcb-like@$REAL_W_TPCB and docs.sql@$REAL_W_DOCS (update a random doc's
# body with new random hex, insert a log row with 192 more), until $NSEG segments have been archived
# after the checkpoint (archive_command = cp into a staging directory). Those NSEG segments are
# copied to DIR, with pgdata-stub/ (PG_VERSION, global/pg_control of the cluster) and SYSTEM_ID,
# as ../shared/peers/setup-pg.sh does for the peers' walset; DIR/RATIO gets the zstd -3 ratio.
# Random hex compresses about 2:1 (4 bits of entropy per byte); the WAL record headers, the
# pgbench rows and the full-page images after each checkpoint bring the whole set to about 3.5:1.
# The weights were tuned on this machine (32 segments; zstd -3 ratio of the set): tpcb:docs 1:3
# 3.29, 1:2 3.28, 3:2 3.65, 2:1 3.71. Raise REAL_W_DOCS for less compressible WAL.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PEERS=${PEERS:-$(cd "$here/../../shared/peers" && pwd)}
. "$PEERS/common.sh"
DIR=${1:-$BENCH_ROOT/walset-real}
: "${NSEG:=32}" "${REAL_PORT:=55437}" "${REAL_SCALE:=10}" "${REAL_DOCS:=100000}" "${REAL_SEED:=18}"
: "${REAL_W_TPCB:=3}" "${REAL_W_DOCS:=2}" "${REAL_CLIENTS:=4}"
G=$BENCH_ROOT/walgen-real
D=$G/pgdata STAGE=$G/archive
say() { printf '[%(%H:%M:%S)T] make-walset-real: %s\n' -1 "$*" >&2; }
ctl() { (cd "$G" && runuser -u "$PGUSER_OS" -- "$PGBIN/pg_ctl" -D "$D" "$@"); }
q() { "$PGBIN/psql" -X -Atq -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$REAL_PORT" -U postgres -d postgres "$@"; }
stop() { [ ! -f "$D/postmaster.pid" ] || ctl -w -m immediate stop >/dev/null 2>&1 || true; }
trap stop EXIT

stop; rm -rf "$G"
install -d -o "$PGUSER_OS" "$BENCH_ROOT" "$G" "$STAGE" "$PGSOCK" "$BENCH_ROOT/home-$PGUSER_OS"
runuser -u "$PGUSER_OS" -- "$PGBIN/initdb" -D "$D" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
cat >> "$D/postgresql.conf" <<CONF

# ---- make-walset-real.sh ----
listen_addresses = ''
port = $REAL_PORT
unix_socket_directories = '$PGSOCK'
shared_buffers = 256MB
max_wal_size = 1GB
checkpoint_timeout = 30s
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $STAGE/%f && cp %p $STAGE/%f'
CONF
ctl -w -l "$G/postgres.log" start >/dev/null
say "pgbench -i -s $REAL_SCALE, docs: $REAL_DOCS rows of random hex"
runuser -u "$PGUSER_OS" -- "$PGBIN/pgbench" -h "$PGSOCK" -p "$REAL_PORT" -i -s "$REAL_SCALE" -q postgres >/dev/null 2>&1
q <<SQL
CREATE TABLE docs (id int PRIMARY KEY, n int NOT NULL DEFAULT 0, body text NOT NULL) WITH (fillfactor = 80);
INSERT INTO docs SELECT i, 0, (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 12) g) FROM generate_series(1, $REAL_DOCS) i;
CREATE TABLE docs_log (id bigserial PRIMARY KEY, doc int NOT NULL, at timestamptz NOT NULL DEFAULT now(), body text NOT NULL);
CHECKPOINT;
SQL
cat > "$G/docs.sql" <<SQL
\\set id random(1, $REAL_DOCS)
BEGIN;
UPDATE docs SET n = n + 1, body = (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 12)) WHERE id = :id;
INSERT INTO docs_log (doc, body) VALUES (:id, (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 6)));
END;
SQL
chmod 644 "$G/docs.sql"
start=$(q -c "select pg_walfile_name(pg_current_wal_lsn())")
segs() { ls "$STAGE" | grep -E '^[0-9A-F]{24}$' | LC_ALL=C sort | LC_ALL=C awk -v s="$start" '"x"$0 > "x"s'; }
say "pgbench tpcb-like@$REAL_W_TPCB + docs.sql@$REAL_W_DOCS, -c $REAL_CLIENTS, until $NSEG segments after $start are archived"
PGOPTIONS='-c synchronous_commit=off' runuser -u "$PGUSER_OS" -- "$PGBIN/pgbench" -h "$PGSOCK" -p "$REAL_PORT" -U postgres \
  -c "$REAL_CLIENTS" -j 2 -M prepared -n --random-seed="$REAL_SEED" -T 3600 \
  -b "tpcb-like@$REAL_W_TPCB" -f "$G/docs.sql@$REAL_W_DOCS" postgres > "$G/pgbench.log" 2>&1 &
pb=$!
while kill -0 "$pb" 2>/dev/null && [ "$(segs | wc -l)" -lt "$NSEG" ]; do sleep 0.5; done
kill -TERM "$pb" 2>/dev/null || true; wait "$pb" 2>/dev/null || true
q -c "select pg_switch_wal()" >/dev/null
for _ in $(seq 1 100); do [ "$(segs | wc -l)" -ge "$NSEG" ] && break; sleep 0.2; done
[ "$(segs | wc -l)" -ge "$NSEG" ] || { say "only $(segs | wc -l) segments archived: $(tail -3 "$G/pgbench.log")"; exit 1; }

rm -rf "$DIR"; mkdir -p "$DIR/pgdata-stub/global"
segs | head -n "$NSEG" | while read -r f; do cp "$STAGE/$f" "$DIR/$f"; done
cp "$D/PG_VERSION" "$DIR/pgdata-stub/"; cp "$D/global/pg_control" "$DIR/pgdata-stub/global/"
"$PGBIN/pg_controldata" "$D" | grep -E 'system identifier' > "$DIR/SYSTEM_ID"
stop; rm -rf "$G"
chmod 700 "$DIR/pgdata-stub"; chown -R "$PGUSER_OS": "$DIR"
raw=0 z=0
for f in $(ls "$DIR" | grep -E '^[0-9A-F]{24}$'); do
  raw=$((raw + $(stat -c %s "$DIR/$f"))); z=$((z + $(zstd -q -3 -c "$DIR/$f" | wc -c)))
done
ratio=$(awk "BEGIN{printf \"%.2f\", $raw / $z}")
echo "zstd -3: $raw bytes -> $z bytes = $ratio:1 (REAL_SCALE=$REAL_SCALE REAL_DOCS=$REAL_DOCS REAL_W_TPCB=$REAL_W_TPCB REAL_W_DOCS=$REAL_W_DOCS REAL_CLIENTS=$REAL_CLIENTS REAL_SEED=$REAL_SEED)" > "$DIR/RATIO"
say "walset: $NSEG segments in $DIR ($(cat "$DIR/SYSTEM_ID" | tr -s ' ')); $(cat "$DIR/RATIO")"
