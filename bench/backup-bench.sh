#!/usr/bin/env bash
# Base backup / restore benchmark: pitrkit (bb-push / bb-restore) side by side with the
# peer tools, in one run, on the pgbench scale-100 cluster, and BACKUP-BENCHMARKS.md from it.
#
#   sudo bench/backup-bench.sh                   # full run: RUNS=3
#   RUNS=1 bench/backup-bench.sh                 # smoke run (numbers not for quoting)
#
# Environment (all optional):
#   RUNS=3                   hyperfine runs per variant (medians quoted); also the number of
#                            incremental rounds
#   PITRKIT_BIN=DIR          where bb-push, bb-restore, wal-push, wal-fetch are
#                            (default: ../target/release)
#   PEERS=DIR                the shared peer scripts (default: ../../shared/peers)
#   WORKLOADS='...'          subset of: pgbench randtext incr
#   VARIANTS='...'           subset of: pitrkit-local pitrkit-s3 pg_basebackup-zst pgbr-full-zst
#   RAND_VARIANTS='...'      variants for the randtext workload (default: same as VARIANTS)
#   RAND_ROWS=400000         rows of 512 random bytes (base64) in table randtext (~300 MB)
#   S3_RESTORE_RUNS=1        restore runs for pitrkit-s3 (slow on s3s-fs)
#   KEEP_DATA=0              1: keep randtext and the incremental rows in the cluster
#   RESULTS=DIR              raw results (default: /tmp/peerbench/pitrkit-results/bb-<time>)
#   OUT=FILE                 the report (default: BACKUP-BENCHMARKS.md next to this script)
#
# Workloads, in this order (each one changes the cluster for the next):
#   pgbench   full backup + restore of the scale-100 pgbench database (setup-pg.sh)
#   randtext  the same after adding table randtext (random, mostly incompressible text)
#   incr      fresh repos: full backup, append ~3% rows to pgbench_accounts + ~1,000 scattered
#             updates, checkpoint, second backup; pitrkit (new_stored_bytes) vs pgBackRest --type=incr
# Timing uses the peers' backup-bench.sh (hyperfine); the peer variants are the peers'
# own peers-backup.sh. Before each tool's backups archive_command points at that tool's
# WAL push (bb-push waits for the backup's WAL in its own repository). At the end the
# original archive_command is restored, the data added by the run is removed (unless
# KEEP_DATA=1), and the servers this script started are stopped.
# It never builds pitrkit: build the release binaries first.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT_DIR=$(cd "$BENCH_DIR/.." && pwd)
PEERS=${PEERS:-$(cd "$BENCH_DIR/../../shared/peers" && pwd)}
PITRKIT_BIN=${PITRKIT_BIN:-$ROOT_DIR/target/release}
OUT=${OUT:-$BENCH_DIR/BACKUP-BENCHMARKS.md}
RUNS=${RUNS:-3}
ALL_VARIANTS="pitrkit-local pitrkit-s3 pg_basebackup-zst pgbr-full-zst"
VARIANTS=${VARIANTS:-$ALL_VARIANTS}
RAND_VARIANTS=${RAND_VARIANTS:-$VARIANTS}
ALL_WORKLOADS="pgbench randtext incr"
WORKLOADS=${WORKLOADS:-$ALL_WORKLOADS}
RAND_ROWS=${RAND_ROWS:-400000}
KEEP_DATA=${KEEP_DATA:-0}
S3_RESTORE_RUNS=${S3_RESTORE_RUNS:-1}   # s3s-fs adds ~30 ms per GET: one pitrkit-s3 restore is ~50 s
export RUNS PEERS

say() { printf '[%(%H:%M:%S)T] backup-bench: %s\n' -1 "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
inlist() { case " $2 " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

[ "$(id -u)" = 0 ] || die "run as root (the peer scripts use runuser)"
[ -f "$PEERS/backup-bench.sh" ] || die "peer scripts not found in $PEERS (set PEERS=)"
for v in $VARIANTS $RAND_VARIANTS; do inlist "$v" "$ALL_VARIANTS" || die "unknown variant '$v' (known: $ALL_VARIANTS)"; done
for w in $WORKLOADS; do inlist "$w" "$ALL_WORKLOADS" || die "unknown workload '$w' (known: $ALL_WORKLOADS)"; done
for b in bb-push bb-restore wal-push wal-fetch; do
  [ -x "$PITRKIT_BIN/$b" ] || die "$PITRKIT_BIN/$b missing: build it (cargo build --release) or set PITRKIT_BIN"
done
PITRKIT_BIN=$(cd "$PITRKIT_BIN" && pwd)
BIN=$PITRKIT_BIN
export PATH="$PITRKIT_BIN:$HOME/.cargo/bin:$PATH"
for c in hyperfine pgbackrest s3s-fs /usr/bin/time zstd; do command -v "$c" >/dev/null || die "$c missing (see $PEERS/README.md, 'Rerunning')"; done
T_START=$SECONDS

# ---------------------------------------------------------------- settings
USER_RESULTS=${RESULTS:-}
. "$PEERS/common.sh"        # BENCH_ROOT, PGDATA, PGSOCK, S3_*, AWS_* (local server only), as_pg, psql_pg, ...
unset PITR_REPO PITR_CONFIG PITR_S3_URL_STYLE AWS_ENDPOINT_URL_S3 AWS_SESSION_TOKEN AWS_PROFILE
export AWS_ENDPOINT_URL=$S3_ENDPOINT AWS_REGION=$S3_REGION
RUN_ROOT=${USER_RESULTS:-$BENCH_ROOT/pitrkit-results/bb-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RUN_ROOT"
say "results in $RUN_ROOT; RUNS=$RUNS; workloads: $WORKLOADS; variants: $VARIANTS (randtext: $RAND_VARIANTS)"

R=$BENCH_ROOT/pgrestore                     # restore target (as in the peer scripts)
: "${ARCHCP:=$BENCH_ROOT/archive-cp}"
: "${RESTORE_PORT:=55433}"
PB_PARENT=$BENCH_ROOT/pitrkit-bb            # pitrkit repositories (owned by postgres: wal-push runs as postgres)
REPO_LOCAL=$PB_PARENT/local
REPO_S3=s3://$S3_BUCKET/pitrkit-bb
S3ENV="AWS_ENDPOINT_URL=$S3_ENDPOINT AWS_REGION=$S3_REGION"
install -d -o "$PGUSER_OS" "$PB_PARENT"

S3_PIDF=$BENCH_ROOT/run/s3-$S3_PORT.pid
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
STARTED_S3=0 STARTED_PG=0 ORIG_ARCHIVE= DATA_CHANGED=0 INCR_ROUNDS=0
FAILED=()

set_archive() {  # set_archive 'command with %p' (ALTER SYSTEM + reload, as the peers do)
  psql_pg -v "cmd=$1" >/dev/null <<'EOF'
ALTER SYSTEM SET archive_command = :'cmd';
SELECT pg_reload_conf();
EOF
  sleep 1
}
undo_data() {
  [ "$KEEP_DATA" = 1 ] && return 0
  say "removing the data this run added (KEEP_DATA=1 keeps it)"
  psql_pg -c "drop table if exists randtext" \
          -c "delete from pgbench_accounts where aid > 10000000" \
          -c "update pgbench_accounts set abalance = abalance - $INCR_ROUNDS where aid % 10000 = 0 and $INCR_ROUNDS > 0" \
          -c "vacuum pgbench_accounts" -c checkpoint >/dev/null || say "could not undo the data changes"
}
cleanup() {
  local rc=$?
  trap - EXIT
  if [ -f "$PGDATA/postmaster.pid" ] && psql_pg -Atc 'select 1' >/dev/null 2>&1; then
    [ "$DATA_CHANGED" = 1 ] && undo_data
    if [ -n "$ORIG_ARCHIVE" ]; then
      set_archive "$ORIG_ARCHIVE"; psql_pg -c "ALTER SYSTEM RESET archive_command" -c "select pg_reload_conf()" >/dev/null
      [ "$(psql_pg -Atc 'show archive_command')" = "$ORIG_ARCHIVE" ] || set_archive "$ORIG_ARCHIVE"
      say "archive_command back to: $(psql_pg -Atc 'show archive_command')"
    fi
  fi
  if [ -f "$R/postmaster.pid" ]; then runuser -u "$PGUSER_OS" -- "$PGBIN/pg_ctl" -D "$R" -m immediate stop >/dev/null 2>&1 || true; fi
  [ "$STARTED_S3" = 1 ] && "$PEERS/setup-s3.sh" stop || true
  if [ "$STARTED_PG" = 1 ]; then "$PEERS/setup-pg.sh" stop >/dev/null || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stderr of a step goes to the terminal and to FILE (synchronously)
logrun() { local f=$1; shift; { "$@" 2>&1 1>&3 3>&- | tee -a "$f" >&2; } 3>&1; }

# ---------------------------------------------------------------- cluster + S3 server
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  say "no cluster in $PGDATA: running setup-pg.sh (pgbench scale 100, a few minutes)"
  STARTED_PG=1; "$PEERS/setup-pg.sh"
elif ! "$PEERS/setup-pg.sh" status >/dev/null 2>&1; then
  say "starting the cluster in $PGDATA"
  STARTED_PG=1; "$PEERS/setup-pg.sh" start >/dev/null
fi
ORIG_ARCHIVE=$(psql_pg -Atc "show archive_command")
say "archive_command now: $ORIG_ARCHIVE (restored at the end)"
[ "$(psql_pg -Atc "select count(*) from pg_class where relname = 'pgbench_accounts'")" = 1 ] || die "no pgbench_accounts in the cluster"
if inlist pitrkit-s3 "$VARIANTS $RAND_VARIANTS"; then
  alive "$S3_PIDF" || STARTED_S3=1
  "$PEERS/setup-s3.sh" start >&2
fi
S3PID=$(cat "$S3_PIDF" 2>/dev/null || true)
psql_pg -c "create extension if not exists pgcrypto" >/dev/null

# ---------------------------------------------------------------- machine facts
: > "$RUN_ROOT/machine.tsv"
fact() { printf '%s\t%s\n' "$1" "$2" >> "$RUN_ROOT/machine.tsv"; }
ver() { "$@" 2>&1 | head -1 || true; }
fact "date (UTC)" "$(date -u '+%Y-%m-%d %H:%M')"
fact "nproc" "$(nproc)"
fact "CPU model" "$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
fact "memory" "$(free -g | awk '/^Mem:/{print $2 " GiB"}')"
fact "disk" "$(df -h "$BENCH_ROOT" | awk 'NR==2{print $1 " (" $2 ")"}') $(findmnt -no FSTYPE -T "$BENCH_ROOT" 2>/dev/null), shared by data, repos and the S3 store"
fact "kernel" "$(uname -r)"
fact "OS" "$(. /etc/os-release && echo "$PRETTY_NAME")"
fact "PostgreSQL" "$(ver "$PGBIN/postgres" --version), port $PGPORT, shared_buffers $(psql_pg -Atc 'show shared_buffers')"
fact "pitrkit" "$(ver bb-push --version), git $(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT_DIR" diff --quiet HEAD -- . 2>/dev/null || echo ' (+uncommitted changes)'), binaries $PITRKIT_BIN (built $(date -u -r "$PITRKIT_BIN/bb-push" '+%Y-%m-%d %H:%M'))"
fact "pgBackRest" "$(ver pgbackrest version)"
fact "pg_basebackup" "$(ver "$PGBIN/pg_basebackup" --version)"
fact "hyperfine" "$(ver hyperfine --version)"
fact "zstd / tar" "$(ver zstd --version | tr -d '*' | xargs) / $(ver tar --version)"
fact "S3 server" "$(ver s3s-fs --version) on $S3_ENDPOINT"
fact "load before" "$(cut -d' ' -f1-3 /proc/loadavg)"
BIN_STAMP=$(stat -c %Y "$BIN"/bb-push "$BIN"/bb-restore "$BIN"/wal-push | tr '\n' ' ')

src_bytes() { find "$PGDATA" -path "$PGDATA/pg_wal" -prune -o -type f -printf '%s\n' | awk '{s+=$1} END{print s+0}'; }
# bytes of a pitrkit repository without its WAL (base backup content and metadata only)
PK_SIZE_LOCAL="find $REPO_LOCAL -path $REPO_LOCAL/wal -prune -o -type f -printf '%s\n' | awk '{s+=\$1} END{print s+0}'"
PK_SIZE_S3=". $PEERS/common.sh; echo \$(( \$(s3_bytes $REPO_S3/) - \$(s3_bytes $REPO_S3/wal/) ))"
PK_WAL_LOCAL="$BIN/wal-push --repo $REPO_LOCAL %p"
PK_WAL_S3="env AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY $S3ENV $BIN/wal-push --repo $REPO_S3 %p"
RESET_LOCAL="rm -rf $REPO_LOCAL && install -d -o $PGUSER_OS $REPO_LOCAL"
RESET_S3=". $PEERS/common.sh; s3_rm_prefix $REPO_S3/"
TV=/usr/bin/time
maxrss() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
: > "$RUN_ROOT/rss.tsv"

# start a restored copy on $RESTORE_PORT, count rows, stop it; prints the count
verify_restored() {  # verify_restored DIR TABLE
  local d=$1 n
  sed -i '/^port *=/d; /^archive_mode *=/d; /^archive_command *=/d' "$d/postgresql.conf" "$d/postgresql.auto.conf" 2>/dev/null || true
  printf 'port = %s\narchive_mode = off\n' "$RESTORE_PORT" >> "$d/postgresql.conf"
  runuser -u "$PGUSER_OS" -- env PATH="$PATH" "$PGBIN/pg_ctl" -D "$d" -w -t 300 -l "$BENCH_ROOT/logs/restore-verify.log" start >/dev/null
  n=$(runuser -u "$PGUSER_OS" -- "$PGBIN/psql" -X -h "$PGSOCK" -p "$RESTORE_PORT" -d postgres -Atc "select count(*) from $2" || echo "query failed")
  runuser -u "$PGUSER_OS" -- "$PGBIN/pg_ctl" -D "$d" -w -m fast stop >/dev/null
  echo "$n"
}

# ---------------------------------------------------------------- one workload: full backup + restore
run_full() {  # run_full WORKLOAD "variants"
  local wl=$1 variants=$2 res=$RUN_ROOT/$1 v
  mkdir -p "$res"
  export RESULTS=$res
  psql_pg -c checkpoint >/dev/null
  src_bytes > "$res/source_bytes_before"
  for v in $variants; do
    say "== $wl: $v"
    case $v in
    pitrkit-local)
      bash -c "$RESET_LOCAL"; set_archive "$PK_WAL_LOCAL"
      logrun "$res/steps.log" env RUN_AS="$PGUSER_OS" \
        BACKUP_CMD="$BIN/bb-push --repo $REPO_LOCAL --pgdata $PGDATA" \
        BACKUP_PREPARE="$RESET_LOCAL" BACKUP_SIZE_CMD="$PK_SIZE_LOCAL" \
        RESTORE_CMD="$BIN/bb-restore --repo $REPO_LOCAL --pgdata $R --target-immediate --archive-mode off" \
        "$PEERS/backup-bench.sh" pitrkit-local || FAILED+=("$wl:$v")
      if [ "$wl" = pgbench ]; then   # untimed: peak RSS of one full bb-push and one bb-restore, and a start of the copy
        bash -c "$RESET_LOCAL"
        if $TV -v -o "$res/rss-bb-push.txt" runuser -u "$PGUSER_OS" -- "$BIN/bb-push" --repo "$REPO_LOCAL" --pgdata "$PGDATA" > "$res/bb-push-rss.json" 2> "$res/bb-push-rss.err"; then
          printf 'bb-push --repo DIR --pgdata PGDATA (full, %s)\t%s\n' "$wl" "$(maxrss "$res/rss-bb-push.txt")" >> "$RUN_ROOT/rss.tsv"
        else say "bb-push (rss) failed: $(tail -3 "$res/bb-push-rss.err")"; FAILED+=("rss:bb-push"); fi
        rm -rf "$R"; install -d -m 700 -o "$PGUSER_OS" "$R"
        if $TV -v -o "$res/rss-bb-restore.txt" runuser -u "$PGUSER_OS" -- "$BIN/bb-restore" --repo "$REPO_LOCAL" --pgdata "$R" --target-immediate --archive-mode off > "$res/bb-restore-rss.json" 2> "$res/bb-restore-rss.err"; then
          printf 'bb-restore --repo DIR --pgdata DIR (%s)\t%s\n' "$wl" "$(maxrss "$res/rss-bb-restore.txt")" >> "$RUN_ROOT/rss.tsv"
          say "verify: starting the pitrkit-restored copy on port $RESTORE_PORT"
          echo "pitrkit-local	$(verify_restored "$R" pgbench_accounts 2>>"$res/verify.err")" >> "$RUN_ROOT/verify.tsv" || FAILED+=("verify:pitrkit-local")
        else say "bb-restore (rss) failed: $(tail -3 "$res/bb-restore-rss.err")"; FAILED+=("rss:bb-restore"); fi
      fi ;;
    pitrkit-s3)
      bash -c "$RESET_S3"; set_archive "$PK_WAL_S3"
      logrun "$res/steps.log" env RUN_AS="$PGUSER_OS" SERVER_PID="$S3PID" RESTORE_RUNS="$S3_RESTORE_RUNS" \
        BACKUP_CMD="$S3ENV $BIN/bb-push --repo $REPO_S3 --pgdata $PGDATA" \
        BACKUP_PREPARE="$RESET_S3" BACKUP_SIZE_CMD="$PK_SIZE_S3" \
        RESTORE_CMD="$S3ENV $BIN/bb-restore --repo $REPO_S3 --pgdata $R --target-immediate --archive-mode off" \
        "$PEERS/backup-bench.sh" pitrkit-s3 || FAILED+=("$wl:$v")
      [ "$wl" = pgbench ] && { [ -f "$R/backup_label" ] && [ -f "$R/PG_VERSION" ] && echo "pitrkit-s3	backup_label+PG_VERSION present" || echo "pitrkit-s3	backup_label or PG_VERSION MISSING"; } >> "$RUN_ROOT/verify.tsv"
      ;;
    pg_basebackup-zst|pgbr-full-zst)
      logrun "$res/steps.log" "$PEERS/peers-backup.sh" "$v" || true
      grep -q "!! $v failed" "$res/steps.log" && FAILED+=("$wl:$v")
      if [ "$wl" = pgbench ] && [ -f "$res/$v.verify.log" ]; then
        printf '%s\t%s\n' "$v" "$(grep -E "accounts=|verifybackup-ok" "$res/$v.verify.log" | tail -1)" >> "$RUN_ROOT/verify.tsv"
      fi ;;
    esac
  done
  src_bytes > "$res/source_bytes_after"
}

has_wl() { inlist "$1" "$WORKLOADS"; }

# ---------------------------------------------------------------- 1: pgbench
if has_wl pgbench; then run_full pgbench "$VARIANTS"; fi

# ---------------------------------------------------------------- 2: + random text
if has_wl randtext; then
  say "adding table randtext: $RAND_ROWS rows of base64(512 random bytes)"
  DATA_CHANGED=1
  t0=$SECONDS
  psql_pg -c "drop table if exists randtext" \
    -c "create table randtext as select i, encode(gen_random_bytes(512), 'base64') as t from generate_series(1, $RAND_ROWS) i" \
    -c "vacuum (freeze, analyze) randtext" -c checkpoint >/dev/null
  fact "randtext" "$RAND_ROWS rows, $(psql_pg -Atc "select pg_size_pretty(pg_total_relation_size('randtext'))") (created in $((SECONDS - t0)) s)"
  run_full randtext "$RAND_VARIANTS"
fi

# ---------------------------------------------------------------- 3: incremental
if has_wl incr; then
  res=$RUN_ROOT/incr; mkdir -p "$res"; export RESULTS=$res
  PBR_CONF=$BENCH_ROOT/pgbr/incr.conf
  PBR_REPO=$BENCH_ROOT/repo-bb-incr
  install -d -o "$PGUSER_OS" "$BENCH_ROOT/pgbr" "$BENCH_ROOT/pgbr/lock" "$BENCH_ROOT/pgbr/spool"
  cat > "$PBR_CONF" <<EOF
[global]
repo1-path=$PBR_REPO
process-max=2
compress-type=zst
start-fast=y
log-level-console=warn
log-level-file=off
lock-path=$BENCH_ROOT/pgbr/lock
spool-path=$BENCH_ROOT/pgbr/spool
archive-async=n

[main]
pg1-path=$PGDATA
pg1-port=$PGPORT
pg1-socket-path=$PGSOCK
EOF
  chown "$PGUSER_OS": "$PBR_CONF"; chmod 600 "$PBR_CONF"
  PBR="pgbackrest --config=$PBR_CONF --stanza=main"
  pbr_bytes() { dir_bytes "$PBR_REPO/backup/main"; }
  pk_bytes() { bash -c "$PK_SIZE_LOCAL"; }
  now() { date +%s.%N; }
  printf 'round\trows_before\trows_added\tpk_full_s\tpk_full_stored\tpbr_full_s\tpbr_full_stored\tpk_incr_s\tpk_incr_new_stored\tpk_incr_repo_growth\tpbr_incr_s\tpbr_incr_stored\n' > "$res/incr.tsv"
  DATA_CHANGED=1
  for round in $(seq 1 "$RUNS"); do
    say "== incr round $round/$RUNS"
    # fresh repositories, one full backup each
    bash -c "$RESET_LOCAL"; set_archive "$PK_WAL_LOCAL"
    t0=$(now)
    $TV -v -o "$res/rss-pk-full-$round.txt" runuser -u "$PGUSER_OS" -- "$BIN/bb-push" --repo "$REPO_LOCAL" --pgdata "$PGDATA" > "$res/pk-full-$round.json" 2> "$res/pk-full-$round.err" \
      || { say "bb-push full failed: $(tail -3 "$res/pk-full-$round.err")"; FAILED+=("incr:pk-full"); break; }
    pk_full_s=$(echo "$(now) - $t0" | bc); pk_full=$(pk_bytes)
    rm -rf "$PBR_REPO"; install -d -o "$PGUSER_OS" "$PBR_REPO"
    runuser -u "$PGUSER_OS" -- $PBR stanza-create >/dev/null
    set_archive "$PBR archive-push %p"
    t0=$(now)
    $TV -v -o "$res/rss-pbr-full-$round.txt" runuser -u "$PGUSER_OS" -- $PBR --type=full backup 2> "$res/pbr-full-$round.err" \
      || { say "pgbackrest full failed: $(tail -3 "$res/pbr-full-$round.err")"; FAILED+=("incr:pbr-full"); break; }
    pbr_full_s=$(echo "$(now) - $t0" | bc); pbr_full=$(pbr_bytes)
    if [ "$round" = 1 ]; then
      printf 'bb-push --repo DIR --pgdata PGDATA (full, incr workload)\t%s\n' "$(maxrss "$res/rss-pk-full-1.txt")" >> "$RUN_ROOT/rss.tsv"
      printf 'pgbackrest --type=full backup, process-max=2, zst (posix)\t%s\n' "$(maxrss "$res/rss-pbr-full-1.txt")" >> "$RUN_ROOT/rss.tsv"
    fi
    # the change: append ~3% rows beyond the current max aid, ~1,000 scattered updates
    rows=$(psql_pg -Atc "select count(*) from pgbench_accounts")
    add=$(( rows * 3 / 100 ))
    psql_pg -c "insert into pgbench_accounts (aid, bid, abalance, filler)
                select m.mx + g, 1 + (m.mx + g - 1) / 100000 % 100, 0, ''
                from (select max(aid) mx from pgbench_accounts) m, generate_series(1, $add) g" \
            -c "update pgbench_accounts set abalance = abalance + 1 where aid % 10000 = 0" \
            -c checkpoint >/dev/null
    INCR_ROUNDS=$round
    # second backups: pgBackRest incr first (archive_command already points at it), then pitrkit
    b0=$(pbr_bytes); t0=$(now)
    runuser -u "$PGUSER_OS" -- $PBR --type=incr backup 2> "$res/pbr-incr-$round.err" \
      || { say "pgbackrest incr failed: $(tail -3 "$res/pbr-incr-$round.err")"; FAILED+=("incr:pbr-incr"); break; }
    pbr_incr_s=$(echo "$(now) - $t0" | bc); pbr_incr=$(( $(pbr_bytes) - b0 ))
    set_archive "$PK_WAL_LOCAL"
    b0=$(pk_bytes); t0=$(now)
    runuser -u "$PGUSER_OS" -- "$BIN/bb-push" --repo "$REPO_LOCAL" --pgdata "$PGDATA" > "$res/pk-incr-$round.json" 2> "$res/pk-incr-$round.err" \
      || { say "bb-push second backup failed: $(tail -3 "$res/pk-incr-$round.err")"; FAILED+=("incr:pk-incr"); break; }
    pk_incr_s=$(echo "$(now) - $t0" | bc); pk_growth=$(( $(pk_bytes) - b0 ))
    pk_new=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["totals"]["new_stored_bytes"])' "$res/pk-incr-$round.json")
    printf '%s\t%s\t%s\t%.2f\t%s\t%.2f\t%s\t%.2f\t%s\t%s\t%.2f\t%s\n' "$round" "$rows" "$add" "$pk_full_s" "$pk_full" "$pbr_full_s" "$pbr_full" \
      "$pk_incr_s" "$pk_new" "$pk_growth" "$pbr_incr_s" "$pbr_incr" >> "$res/incr.tsv"
    say "incr round $round: pitrkit new_stored=$pk_new (${pk_incr_s}s), pgBackRest incr=$pbr_incr (${pbr_incr_s}s)"
  done
  # peak RSS of a pgBackRest restore (of the last incr backup), untimed
  rm -rf "$R"; install -d -m 700 -o "$PGUSER_OS" "$R"
  if $TV -v -o "$res/rss-pbr-restore.txt" runuser -u "$PGUSER_OS" -- $PBR --pg1-path="$R" restore 2> "$res/pbr-restore.err"; then
    printf 'pgbackrest restore, process-max=2 (posix, incr backup)\t%s\n' "$(maxrss "$res/rss-pbr-restore.txt")" >> "$RUN_ROOT/rss.tsv"
  else say "pgbackrest restore (rss) failed: $(tail -3 "$res/pbr-restore.err")"; FAILED+=("rss:pbr-restore"); fi
  rm -rf "$R"
fi

fact "load after" "$(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$(stat -c %Y "$BIN"/bb-push "$BIN"/bb-restore "$BIN"/wal-push | tr '\n' ' ')" != "$BIN_STAMP" ]; then
  say "the pitrkit binaries changed during the run"; FAILED+=("binaries-rebuilt-during-run")
fi
fact "run time" "$((SECONDS - T_START)) s"

# ---------------------------------------------------------------- report
INVOCATION="RUNS=$RUNS"
[ "$WORKLOADS" = "$ALL_WORKLOADS" ] || INVOCATION+=" WORKLOADS='$WORKLOADS'"
[ "$VARIANTS" = "$ALL_VARIANTS" ] || INVOCATION+=" VARIANTS='$VARIANTS'"
[ "$RAND_VARIANTS" = "$VARIANTS" ] || INVOCATION+=" RAND_VARIANTS='$RAND_VARIANTS'"
[ "$PITRKIT_BIN" = "$ROOT_DIR/target/release" ] || INVOCATION+=" PITRKIT_BIN=$PITRKIT_BIN"
INVOCATION+=" bench/backup-bench.sh"
export INVOCATION OUT FAILED_LIST="${FAILED[*]:-}" RUN_ROOT PK_WAL_LOCAL PK_WAL_S3 RESET_LOCAL RESET_S3 RAND_ROWS
python3 - <<'PY'
import csv, os, re, statistics
E = os.environ
root, runs = E["RUN_ROOT"], int(E["RUNS"])

def tsv(p):
    out = {}
    if os.path.exists(p):
        for r in csv.DictReader(open(p), delimiter="\t"):
            out[r["name"]] = r
    return out

def lines(p):
    return [l.rstrip("\n").split("\t", 1) for l in open(p)] if os.path.exists(p) else []

def f(x):
    try: return float(x)
    except (TypeError, ValueError): return None

def mib(b): return f"{int(b) / 2**20:,.0f}" if b not in (None, "", "0") else "-"
esc = lambda t: t.replace("|", "\\|")
L = []; w = L.append
w("# pitrkit base backup benchmarks")
w("")
w("Generated by `bench/backup-bench.sh`; do not edit by hand, rerun it. pitrkit's `bb-push` / `bb-restore`")
w("timed side by side with the peer tools in one run, with the peers' own scripts (`shared/peers/`:")
w("`backup-bench.sh`, `peers-backup.sh`, `setup-pg.sh`, `setup-s3.sh`, `report.py`) on the same running cluster.")
w("")
if runs < 3:
    w(f"> **Reduced run (RUNS={runs}): a smoke test of the script, not numbers to quote.**")
    w("")
if E.get("FAILED_LIST"):
    w(f"> **Failed in this run:** {E['FAILED_LIST']} (see the logs in `{root}`).")
    w("")
w("## Machine"); w(""); w("| item | value |"); w("|---|---|")
for k, v in lines(os.path.join(root, "machine.tsv")):
    w(f"| {k} | {esc(v)} |")
w("")
w("## Method")
w("")
w("- Cluster: `setup-pg.sh` (PostgreSQL 15, pgbench scale 100), running and serving the backups; files hot in the page cache.")
w(f"- Workload `pgbench`: the pgbench database as is. Workload `randtext`: the same plus table `randtext`, {E['RAND_ROWS']} rows of")
w("  `encode(gen_random_bytes(512), 'base64')` (pgcrypto; mostly incompressible text), `vacuum (freeze)` + checkpoint before the runs.")
w(f"- Each variant: hyperfine, {runs} run(s), medians quoted, via the peers' `backup-bench.sh`. The untimed prepare step empties the")
w("  target and runs `sync`; each backup is followed by restores into an empty `/tmp/peerbench/pgrestore`.")
w("- Before a tool's backups, `archive_command` is pointed at that tool's WAL push (`ALTER SYSTEM` + reload): pitrkit")
w("  `bb-push` (and pgBackRest) wait until the backup's WAL is in their own repository. The peer variants are `peers-backup.sh`")
w("  itself (it switches archive_command back to the cp archive after each variant).")
w("- pitrkit runs as `postgres` (`RUN_AS=postgres`); pitrkit stored bytes = the repository without its `wal/` (base backup content")
w("  and metadata); pgBackRest = `backup/main` of its repo; pg_basebackup = the tar output. MiB/s = data directory without")
w("  pg_wal / median seconds, for backup and restore alike.")
w("- pitrkit restores: `--target-immediate --archive-mode off` (writes the recovery settings; no recovery is run in the timing).")
w("  pgBackRest restore writes its recovery settings too; pg_basebackup restore is `tar --zstd -xf`.")
w("- Peak RSS: `/usr/bin/time -v` around one untimed call (a full backup into an empty repository, a restore into an empty dir).")
w("- Incremental: fresh repositories, one full backup each, then the change (append 3% rows to `pgbench_accounts` with aid")
w("  beyond the max, `update pgbench_accounts set abalance = abalance + 1 where aid % 10000 = 0`, checkpoint), then a second")
w("  backup: `pgbackrest --type=incr` (stored bytes = growth of `backup/main`) and `bb-push` (its JSON `totals.new_stored_bytes`;")
w(f"  repository growth shown too). {runs} round(s); the changes accumulate from round to round; medians quoted.")
w("")
w("## Commands"); w(""); w("```"); w(E["INVOCATION"]); w("```"); w("")
cmds = {}
for wl in ("pgbench", "randtext"):
    p = os.path.join(root, wl, "steps.log")
    if os.path.exists(p):
        for line in open(p, errors="replace"):
            m = re.match(r"^\[[0-9:]+\] \[([^\]]+)\] (backup|bbrestore): (.*)$", line.rstrip("\n"))
            if m: cmds.setdefault(m.group(1), {})[m.group(2)] = m.group(3)
w("| variant | backup command | restore command |"); w("|---|---|---|")
for n, c in cmds.items():
    w(f"| {n} | `{esc(c.get('backup', '-'))}` | `{esc(c.get('bbrestore', '-'))}` |")
w("")
w(f"pitrkit archive_command: `{esc(E['PK_WAL_LOCAL'])}` (local), `{esc(re.sub(r'AWS_SECRET_ACCESS_KEY=[^ ]+', 'AWS_SECRET_ACCESS_KEY=…', E['PK_WAL_S3']))}` (S3);")
w(f"prepare steps `{E['RESET_LOCAL']}` / `{E['RESET_S3']}`. pgBackRest: `archive-push %p`, process-max=2, compress-type=zst, posix repo,")
w("`stanza-create` in every prepare step (see `peers-backup.sh`). The incremental round runs the same binaries by hand (logged in `incr/`).")
w("")
w(f"## Results (medians of {runs} run(s))")
w("")
W = {}
for wl, title in (("pgbench", "pgbench scale 100"), ("randtext", "pgbench scale 100 + randtext")):
    d = os.path.join(root, wl)
    if not os.path.isdir(d): continue
    b, r = tsv(os.path.join(d, "backup.tsv")), tsv(os.path.join(d, "bbrestore.tsv"))
    W[wl] = (b, r)
    src = open(os.path.join(d, "source_bytes_before")).read().strip()
    w(f"### {title} (data directory without pg_wal: {int(src) / 2**20:,.0f} MiB)")
    w("")
    w("| variant | backup s | min–max s | MiB/s of source | client CPU s | machine CPU s | S3-server CPU s | stored MiB | ratio | restore s | min–max s | restore MiB/s |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in list(b) + [x for x in r if x not in b]:
        x, q = b.get(n), r.get(n)
        a = (f"{x['median_s']} | {x['min_s']}–{x['max_s']} | {x['src_MiB_per_s']} | {x['client_cpu_s']} | {x['machine_cpu_s']} | "
             f"{x['server_cpu_s'] if f(x['server_cpu_s']) else '-'} | {mib(x['stored_bytes'])} | {x['ratio']}") if x else "- | - | - | - | - | - | - | -"
        z = f"{q['median_s']} | {q['min_s']}–{q['max_s']} | {q['src_MiB_per_s']}" if q else "- | - | -"
        w(f"| {n} | {a} | {z} |")
    w("")

def ratio(a, b, fmt="{:.2f}"):
    return fmt.format(a / b) if a and b else "-"

w("## pitrkit / pgBackRest ratios (targets in brackets)")
w("")
w("Peer = `pgbr-full-zst` (pgBackRest, posix repo) in the same workload. pitrkit-s3 vs a posix repo is not like for like;")
w("it is listed for completeness. ✓ = target met.")
w("")
w("| workload | pitrkit variant | backup MiB/s ratio [≥ 1.2] | stored bytes ratio [≤ 1] | restore MiB/s ratio [≥ 1.2] | vs pg_basebackup-zst: backup / stored / restore |")
w("|---|---|---:|---:|---:|---:|")
def mark(v, ok):
    return f"**{v}** {'✓' if ok else '✗'}" if v != "-" else "-"
for wl, (b, r) in W.items():
    for p in [n for n in b if n.startswith("pitrkit")]:
        q = "pgbr-full-zst"
        if q not in b: continue
        br = ratio(f(b[p]["src_MiB_per_s"]), f(b[q]["src_MiB_per_s"]))
        sr = ratio(f(b[p]["stored_bytes"]), f(b[q]["stored_bytes"]), "{:.3f}")
        rr = ratio(f(r.get(p, {}).get("src_MiB_per_s")), f(r.get(q, {}).get("src_MiB_per_s")))
        g = "pg_basebackup-zst"
        gb = (f"{ratio(f(b[p]['src_MiB_per_s']), f(b[g]['src_MiB_per_s']))} / {ratio(f(b[p]['stored_bytes']), f(b[g]['stored_bytes']), '{:.3f}')} / "
              f"{ratio(f(r.get(p, {}).get('src_MiB_per_s')), f(r.get(g, {}).get('src_MiB_per_s')))}") if g in b else "-"
        w(f"| {wl} | {p} | {mark(br, br != '-' and float(br) >= 1.2)} | {mark(sr, sr != '-' and float(sr) <= 1)} | "
          f"{mark(rr, rr != '-' and float(rr) >= 1.2)} | {gb} |")
w("")

ip = os.path.join(root, "incr", "incr.tsv")
if os.path.exists(ip):
    rows = list(csv.DictReader(open(ip), delimiter="\t"))
    if rows:
        w("## Incremental backup (append ~3% + ~1,000 scattered updates)")
        w("")
        w("| round | accounts rows before | rows added | pitrkit full s / stored MiB | pgBackRest full s / stored MiB | pitrkit 2nd backup s | pitrkit new_stored_bytes | pitrkit repo growth | pgBackRest incr s | pgBackRest incr bytes | **pitrkit / pgBackRest bytes** [≤ 0.333] |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for x in rows:
            rr = ratio(f(x["pk_incr_new_stored"]), f(x["pbr_incr_stored"]), "{:.3f}")
            w(f"| {x['round']} | {int(x['rows_before']):,} | {int(x['rows_added']):,} | {x['pk_full_s']} / {mib(x['pk_full_stored'])} | "
              f"{x['pbr_full_s']} / {mib(x['pbr_full_stored'])} | {x['pk_incr_s']} | {int(x['pk_incr_new_stored']):,} | {int(x['pk_incr_repo_growth']):,} | "
              f"{x['pbr_incr_s']} | {int(x['pbr_incr_stored']):,} | {rr} |")
        med = lambda k: statistics.median(float(x[k]) for x in rows)
        rr = med("pk_incr_new_stored") / med("pbr_incr_stored") if med("pbr_incr_stored") else None
        w(f"| **median** | | | | | {med('pk_incr_s'):.2f} | {med('pk_incr_new_stored'):,.0f} | {med('pk_incr_repo_growth'):,.0f} | {med('pbr_incr_s'):.2f} | "
          f"{med('pbr_incr_stored'):,.0f} | **{rr:.3f}** {'✓' if rr is not None and rr <= 1/3 else '✗'} |" if rr is not None else "")
        w("")
        w(f"Time ratio pitrkit / pgBackRest for the second backup (median): **{med('pk_incr_s') / med('pbr_incr_s'):.2f}** (below 1: pitrkit faster).")
        w("")

rss = lines(os.path.join(root, "rss.tsv"))
if rss:
    w("## Peak RSS of one call [pitrkit target < 256 MiB]"); w("")
    w("| command | max RSS MiB |"); w("|---|---:|")
    for label, kb in rss:
        ok = "" if not label.startswith("bb-") else (" ✓" if kb.strip().isdigit() and int(kb) / 1024 < 256 else " ✗")
        w(f"| `{esc(label)}` | {int(kb) / 1024:.1f}{ok} |" if kb.strip().isdigit() else f"| `{esc(label)}` | ? |")
    w("")
    w("`/usr/bin/time` reports the largest single process; pgBackRest's process-max=2 workers are separate processes.")
    w("")
ver = lines(os.path.join(root, "verify.tsv"))
if ver:
    w("## Restore checks (pgbench workload, one per tool)"); w("")
    w("| tool | check | result |"); w("|---|---|---|")
    how = {"pitrkit-local": "bb-restore into an empty dir, start on port 55433 (recovery via the restore_command bb-restore wrote), `select count(*) from pgbench_accounts`",
           "pitrkit-s3": "files present after the last timed restore",
           "pgbr-full-zst": "peers-backup.sh: start on port 55433, recovery via archive-get, count(*)",
           "pg_basebackup-zst": "peers-backup.sh: `pg_verifybackup` of the extracted tar"}
    for k, v in ver:
        w(f"| {k} | {how.get(k, '')} | {esc(v)} |")
    w("")
w(f"Raw hyperfine JSON, logs and TSVs of this run: `{root}` (not kept in the repository).")
w("")
out = E["OUT"]; tmp = out + ".tmp"
open(tmp, "w").write("\n".join(L)); os.replace(tmp, out)
PY
say "wrote $OUT in $((SECONDS - T_START)) s"
if [ "${#FAILED[@]}" -gt 0 ]; then say "FAILED: ${FAILED[*]}"; exit 1; fi
