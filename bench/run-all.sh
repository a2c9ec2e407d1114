#!/usr/bin/env bash
# Every pitrkit benchmark against its peers, in one run, and bench/BENCHMARKS.md from it.
#
#   sudo bench/run-all.sh                    # full run: NSEG=64 segments, RUNS=3 (~40 min)
#   NSEG=8 RUNS=1 SUSTAIN_SECONDS=15 bench/run-all.sh   # smoke run (numbers not for quoting)
#   sudo WORKLOADS=distance bench/run-all.sh   # only issue 18's bench at real distance (loopback and 25 ms RTT,
#                                              # fpi + real walsets, every peer, replay): ~15-25 min, into
#                                              # DISTANCE-BENCHMARKS.md
#   WORKLOADS=distance DIST_NSEG=4 NSEG=4 RUNS=1 REPLAY_SCALE=5 bench/run-all.sh   # its smoke run (~2 min)
#
# Workloads (WORKLOADS, default all, in this order: wal replay distance sustained backup bbenc):
#   wal        1+2+5: archive the walset as PostgreSQL calls archive_command (cwd = a fake data
#              directory whose pg_wal/ holds the segments with archive_status/<seg>.ready;
#              `CMD pg_wal/<seg>` per segment, .ready renamed to .done after each success),
#              then recover it as PostgreSQL calls restore_command (`CMD <seg>
#              pg_wal/RECOVERYXLOG` per segment, every restored file compared with the
#              walset); pitrkit (look-ahead / --jobs 1, prefetch / --prefetch 0, plain /
#              encrypted), pgBackRest sync and async, gzip | aws s3 cp; local dir and S3
#              (s3s-fs; pgBackRest through the peers' TLS front). Then peak RSS of wal-push
#              --jobs 8 and wal-fetch --prefetch 8.
#   replay     2 with PostgreSQL replaying: a fresh PostgreSQL 15 source cluster on $REPLAY_PORT
#              (pgbench -i -s $REPLAY_SCALE, archive_command = cp into a staging dir), a plain
#              base backup (pg_basebackup -Fp -X none -c fast), pgbench until NSEG segments
#              follow the backup's start, pg_switch_wal; those segments pushed untimed into a
#              pitrkit S3 repository (wal-push --jobs 1) and a pgBackRest S3 one (archive-push).
#              Then RUNS timed recoveries per variant (REPLAY_VARIANTS): a fresh copy of the
#              backup with recovery.signal, restore_command = pitrkit wal-fetch (prefetch, its
#              default) / wal-fetch --prefetch 0 / pgBackRest archive-get sync / async
#              (process-max=2, spool), and cp from the staging dir (reference: replay with
#              next to free fetching), runs interleaved; timed from pg_ctl start until
#              pg_is_in_recovery() is false (psql every 50 ms once the log says redo is done,
#              every second before); each run must reach the source's last LSN and its
#              pgbench_history row count, or the variant is FAILED. CPU: cpuacct cgroup.
#   distance   issue 18 part 4, the bench at real distance (bench/distance.sh, sourced): the archive and
#              restore loops of `wal` at each round-trip time of DISTANCES (ms; 0 = straight to
#              s3s-fs, else through bench/latency-proxy.py --rtt-ms D in front of s3s-fs, and in front of
#              the TLS front for pgBackRest 2.45), for each walset of WALSETS (fpi: the peers' pgbench
#              walset, ~12:1; real: bench/make-walset-real.sh, ~3.5:1), DIST_NSEG segments each, for
#              pitrkit (default settings, plain and encrypted), pgBackRest 2.59.1 sync and async, Debian's
#              pgBackRest 2.45 sync and async, wal-rus 0.4.1, all at zstd level 3. It also adds to
#              `replay` the variants pk@D and pgbr59-async@D for each D, and cp (replay then runs even
#              when WORKLOADS does not name it). Peers missing from PGBR_NEW / WALRUS are reported as
#              "not installed" and skipped; install them per ../shared/peers/README.md, "Newest peers".
#   sustained  3: pgbench -c 8 -j 2 -T $SUSTAIN_SECONDS -M prepared (synchronous_commit=off)
#              on the peers' cluster with archive_command = wal-push, then pgBackRest async
#              archive-push (bench/sustained.sh), per target in SUSTAIN_TARGETS.
#   backup     4: bench/backup-bench.sh, pgbench workload (pitrkit local + S3, pgBackRest full).
#   bbenc      5: bb-push / bb-restore of the pgbench cluster, plain vs encrypted (local repo).
#
# Environment (all optional):
#   NSEG=64 RUNS=3           segments per loop, hyperfine runs per variant (medians quoted)
#   GZIP_AWS_RUNS=1          runs of the slow gzip | aws s3 cp push loop (0: skip, cite the
#                            previous measurement)
#   SUSTAIN_SECONDS=60       pgbench duration per tool;  SUSTAIN_TARGETS='s3 local'
#   WORKLOADS='wal replay distance sustained backup bbenc'
#   DISTANCES='0 25' WALSETS='fpi real' DIST_NSEG=32     the distance workload (RUNS runs each, medians)
#   DIST_TOOLS='pk pk-enc pgbr59-sync pgbr59-async pgbr245-sync pgbr245-async walrus'
#   PGBR_NEW=/opt/pgbackrest-2.59.1/bin/pgbackrest  WALRUS=/opt/wal-rus/bin/walrus   the newest peers, not
#                            installed by this script (no peer's code or build script lives in this
#                            repository); see ../shared/peers/README.md, "Newest peers":
#                              pgBackRest 2.59.1: tag release/2.59.1 of pgbackrest/pgbackrest, the -dev
#                              packages listed there, `meson setup build -Dlibzstd=enabled && ninja -C
#                              build`, then copy build/src/pgbackrest to /opt/pgbackrest-2.59.1/bin/
#                              wal-rus 0.4.1: cargo install wal-rus --version 0.4.1 --root /opt/wal-rus
#   DIST_REPLAY=1            0: the distance workload leaves the replay variants out
#   DRAIN_WAIT=15            s to wait after a timed loop for its detached processes to exit (then killed)
#   REPLAY_SCALE=20          pgbench scale of the replay source cluster
#   REPLAY_PORT=55436        its port (also the port of every restored copy; 127.0.0.1 + socket)
#   REPLAY_VARIANTS='pk pk-p0 pgbr-sync pgbr-async cp'   REPLAY_TIMEOUT=900 (s, per recovery)
#   PITRKIT_BIN=DIR          default ../target/release (copied to $BENCH_ROOT/pitrkit-bin-all
#                            first, so a rebuild during the run can't mix binaries)
#   PEERS=DIR                the shared peer scripts (default: ../../shared/peers)
#   RESULTS=DIR              raw results (default: /tmp/peerbench/pitrkit-results/all-<time>)
#   OUT=FILE                 the report (default: BENCHMARKS.md next to this script; DISTANCE-BENCHMARKS.md when
#                            WORKLOADS is just distance)
#   IDLE_WAIT_MAX=1800       before each timed step, wait while cargo/rustc/test binaries run
#   REPORT_ONLY=DIR          only rewrite OUT from the raw results of an earlier run in DIR
#
# It never builds pitrkit: build the release binaries first (cargo build --release --bins).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT_DIR=$(cd "$BENCH_DIR/.." && pwd)
PEERS=${PEERS:-$(cd "$BENCH_DIR/../../shared/peers" && pwd)}
PITRKIT_BIN=${PITRKIT_BIN:-$ROOT_DIR/target/release}
# The distance workload alone reports into its own file, so that it never overwrites the full report.
if [ "${WORKLOADS:-}" = distance ]; then OUT=${OUT:-$BENCH_DIR/DISTANCE-BENCHMARKS.md}; fi
OUT=${OUT:-$BENCH_DIR/BENCHMARKS.md}
NSEG=${NSEG:-64}
RUNS=${RUNS:-3}
GZIP_AWS_RUNS=${GZIP_AWS_RUNS:-1}
SUSTAIN_SECONDS=${SUSTAIN_SECONDS:-60}
SUSTAIN_TARGETS=${SUSTAIN_TARGETS:-s3 local}
WORKLOADS=${WORKLOADS:-wal replay distance sustained backup bbenc}
DISTANCES=${DISTANCES:-0 25}
WALSETS=${WALSETS:-fpi real}
DIST_NSEG=${DIST_NSEG:-32}
DIST_TOOLS=${DIST_TOOLS:-pk pk-enc pgbr59-sync pgbr59-async pgbr245-sync pgbr245-async walrus}
PGBR_NEW=${PGBR_NEW:-/opt/pgbackrest-2.59.1/bin/pgbackrest}
WALRUS=${WALRUS:-/opt/wal-rus/bin/walrus}
DRAIN_WAIT=${DRAIN_WAIT:-15}
DIST_REPLAY=${DIST_REPLAY:-1}
REPLAY_SCALE=${REPLAY_SCALE:-20}
REPLAY_PORT=${REPLAY_PORT:-55436}
REPLAY_VARIANTS=${REPLAY_VARIANTS:-pk pk-p0 pgbr-sync pgbr-async cp}
REPLAY_TIMEOUT=${REPLAY_TIMEOUT:-900}
IDLE_WAIT_MAX=${IDLE_WAIT_MAX:-1800}
export NSEG RUNS PEERS SUSTAIN_SECONDS

say() { printf '[%(%H:%M:%S)T] run-all: %s\n' -1 "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
has_wl() { case " $WORKLOADS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
q() { printf '%q' "$1"; }

[ "$(id -u)" = 0 ] || die "run as root (the peer scripts use runuser and apt-get)"
[ -f "$PEERS/push-bench.sh" ] || die "peer scripts not found in $PEERS (set PEERS=)"
for b in wal-push wal-fetch bb-push bb-restore; do
  [ -x "$PITRKIT_BIN/$b" ] || die "$PITRKIT_BIN/$b missing: build it (cargo build --release --bins) or set PITRKIT_BIN"
done
T_START=$SECONDS

# ---------------------------------------------------------------- tools, installed once
apt_missing=()
command -v pgbackrest >/dev/null || apt_missing+=(pgbackrest)
command -v hyperfine  >/dev/null || apt_missing+=(hyperfine)
command -v socat      >/dev/null || apt_missing+=(socat)
command -v zstd       >/dev/null || apt_missing+=(zstd)
command -v gzip       >/dev/null || apt_missing+=(gzip)
command -v age-keygen >/dev/null || apt_missing+=(age)
command -v bc         >/dev/null || apt_missing+=(bc)
command -v runuser    >/dev/null || apt_missing+=(util-linux)
[ -x /usr/bin/time ]             || apt_missing+=(time)
[ -x /usr/lib/postgresql/15/bin/pgbench ] || apt_missing+=(postgresql-15)
if [ "${#apt_missing[@]}" -gt 0 ]; then
  say "installing (apt): ${apt_missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi
pip_missing=()
command -v aws >/dev/null || pip_missing+=(awscli)
python3 -c 'import boto3' 2>/dev/null || pip_missing+=(boto3)
if [ "${#pip_missing[@]}" -gt 0 ]; then
  say "installing (pip): ${pip_missing[*]}"; python3 -m pip install -q "${pip_missing[@]}"; hash -r
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v s3s-fs >/dev/null; then
  say "installing s3s-fs 0.14.1 (cargo install, ~2 min; 0.17 needs a newer rustc)"
  cargo install s3s-fs@0.14.1 --features binary
fi

# ---------------------------------------------------------------- settings
USER_RESULTS=${RESULTS:-}
. "$PEERS/common.sh"        # BENCH_ROOT, WALSET, WALSTUB, PGDATA, S3_*, AWS_* (local server), as_pg, psql_pg
: "${S3_TLS_PORT:=9443}"
export S3_TLS_PORT
unset PITR_REPO PITR_CONFIG PITR_S3_URL_STYLE PITR_ENCRYPTION_RECIPIENTS_FILE PITR_ENCRYPTION_IDENTITY_FILE \
      AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_SESSION_TOKEN AWS_PROFILE AWS_REGION
if [ -n "${REPORT_ONLY:-}" ]; then       # REPORT_ONLY=RESULTS_DIR: rewrite the report from an earlier run, time nothing
  export OUT RA=$BENCH_ROOT/ra C=$BENCH_ROOT/ra/conf
  python3 "$BENCH_DIR/report-all.py" "$REPORT_ONLY" "$BENCH_DIR/previous-run.md" > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
  say "wrote $OUT from $REPORT_ONLY"; exit 0
fi
RESULTS=${USER_RESULTS:-$BENCH_ROOT/pitrkit-results/all-$(date -u +%Y%m%dT%H%M%SZ)}
export RESULTS
mkdir -p "$RESULTS"
RA=$BENCH_ROOT/ra                      # everything this script creates (repos, fake data dirs, configs)
rm -rf "$RA"; install -d -o "$PGUSER_OS" "$RA" "$RA/repo" "$RA/conf" "$RA/pgbr" "$RA/pgbr/lock" "$RA/keys" "$RA/rss"
install -d "$RA/scripts"
say "results in $RESULTS; NSEG=$NSEG RUNS=$RUNS; workloads: $WORKLOADS"
FAILED=()
fail() { FAILED+=("$1"); echo "$1" >> "$RESULTS/failures.txt"; say "!! FAILED: $1"; }
: > "$RESULTS/failures.txt"

# pitrkit binaries: a private copy, executable by postgres (PostgreSQL runs archive_command as postgres)
BIN=$BENCH_ROOT/pitrkit-bin-all
rm -rf "$BIN"; mkdir -p "$BIN"
for b in wal-push wal-fetch bb-push bb-restore pitr-check; do [ -x "$PITRKIT_BIN/$b" ] && cp -p "$PITRKIT_BIN/$b" "$BIN/"; done
chmod 755 "$BIN" "$BIN"/*
install -m 755 "$BENCH_DIR/pgloop.sh" "$RA/pgloop.sh"
PK_GIT="$(git -C "$ROOT_DIR" log -1 --format='%h %s' 2>/dev/null | cut -c1-90 || echo '?')$(git -C "$ROOT_DIR" diff --quiet HEAD -- . ':!bench' 2>/dev/null || echo ' (+uncommitted changes)')"

# ---------------------------------------------------------------- the machine must be quiet
busy_procs() {  # compilers and test binaries (not merely a command line mentioning .cargo)
  ps -eo pid=,comm=,args= | awk '$2 == "cargo" || $2 == "rustc" || $2 == "clippy-driver" || $3 ~ /target\/(debug|release)\/deps\// {print $1, $2}'
}
wait_idle() {
  local t=0 p
  while p=$(busy_procs) && [ -n "$p" ]; do
    if [ "$t" -ge "$IDLE_WAIT_MAX" ]; then
      say "WARNING: still busy after ${t}s ($(echo "$p" | head -3 | tr '\n' ' ')); going on"
      echo "$(date -u +%H:%M:%S) busy: $(echo "$p" | tr '\n' ' ')" >> "$RESULTS/busy.txt"; return 0
    fi
    [ "$t" = 0 ] && say "waiting for other heavy work to end: $(echo "$p" | head -3 | tr '\n' ' ')"
    sleep 30; t=$((t + 30))
  done
  [ "$t" = 0 ] || echo "$(date -u +%H:%M:%S) waited ${t}s for other work" >> "$RESULTS/busy.txt"
}

# ---------------------------------------------------------------- servers; cleanup
S3_PIDF=$BENCH_ROOT/run/s3-$S3_PORT.pid
TLS_PIDF=$BENCH_ROOT/run/tls-$S3_TLS_PORT.pid
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
STARTED_S3=0 STARTED_TLS=0 STARTED_PG=0 ORIG_ARCHIVE= REPLAY_BG_PID=
# Each timed loop (and each replay) runs in its own cgroup: v2 when there is one (cpu.stat usage_usec,
# cgroup.kill), else the v1 cpuacct controller. A detached process (pgBackRest's async process,
# wal-fetch --prefetch-daemon, a detached wal-push) stays in it, so its CPU counts; what is still in it
# DRAIN_WAIT s after the loop is killed (cg_drain, also at the start of each prepare step).
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then CGROOT=/sys/fs/cgroup CGV=2
elif [ -f /sys/fs/cgroup/unified/cgroup.controllers ]; then CGROOT=/sys/fs/cgroup/unified CGV=2
else CGROOT=/sys/fs/cgroup/cpuacct CGV=1; fi
CGL=$CGROOT/pitrkit-bench-loop
cg_usage_ns() {  # CPU of everything that ran in $CGL, ns
  # (usec -> ns by appending 000: mawk's printf %d stops at 2^31)
  if [ "$CGV" = 2 ]; then echo "$(awk '$1 == "usage_usec" {print $2}' "$CGL/cpu.stat")000"; else cat "$CGL/cpuacct.usage"; fi
}
cg_drain() {  # cg_drain WAIT: wait up to WAIT s for $CGL to empty, then kill what is left; prints how many were left
  local w=${1:-0} i n
  [ -d "$CGL" ] || { echo 0; return 0; }
  for ((i = 0; i < w * 10; i++)); do [ -n "$(cat "$CGL/cgroup.procs")" ] || break; sleep 0.1; done
  n=$(grep -c . "$CGL/cgroup.procs" || true)
  if [ "$n" -gt 0 ]; then
    if [ -f "$CGL/cgroup.kill" ]; then echo 1 > "$CGL/cgroup.kill"; else xargs -r kill -KILL < "$CGL/cgroup.procs" 2>/dev/null || true; fi
    for ((i = 0; i < 50; i++)); do [ -n "$(cat "$CGL/cgroup.procs")" ] || break; sleep 0.1; done
  fi
  echo "$n"
}
cg_reset() { cg_drain 0 >/dev/null; rmdir "$CGL" 2>/dev/null || true; mkdir -p "$CGL"; }
set_archive() {
  psql_pg -v "cmd=$1" >/dev/null <<'EOF'
ALTER SYSTEM SET archive_command = :'cmd';
SELECT pg_reload_conf();
EOF
  sleep 1
}
# latency proxies (bench/latency-proxy.py), one pair per distance > 0: HTTP in front of s3s-fs
# (pitrkit, pgBackRest 2.59.1, wal-rus) and in front of the TLS front (pgBackRest 2.45, so that its
# TLS handshakes cross the distance too). Ports: 9100+k and 9450+k for the k-th distance.
declare -A PROXY_PID=()
dist_port() {  # dist_port http|tls D: the port a client uses at round-trip time D
  local k=0 d
  if [ "$2" = 0 ]; then [ "$1" = http ] && echo "$S3_PORT" || echo "$S3_TLS_PORT"; return; fi
  for d in $DISTANCES; do k=$((k + 1)); [ "$d" = "$2" ] || continue
    [ "$1" = http ] && echo $((9100 + k)) || echo $((9450 + k)); return; done
  die "distance $2 is not in DISTANCES"
}
start_proxies() {
  local d kind port to
  for d in $DISTANCES; do
    [ "$d" != 0 ] || continue
    for kind in http tls; do
      port=$(dist_port $kind "$d"); to=$([ $kind = http ] && echo "$S3_PORT" || echo "$S3_TLS_PORT")
      python3 "$BENCH_DIR/latency-proxy.py" --listen "127.0.0.1:$port" --to "127.0.0.1:$to" --rtt-ms "$d" \
        >> "$RESULTS/latency-proxy.log" 2>&1 &
      PROXY_PID[$kind-$d]=$!
      for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
      kill -0 "${PROXY_PID[$kind-$d]}" 2>/dev/null || die "latency proxy on :$port did not start ($RESULTS/latency-proxy.log)"
      SRV_PIDS+=" ${PROXY_PID[$kind-$d]}"
    done
    say "latency proxies for ${d} ms RTT: http :$(dist_port http "$d") -> :$S3_PORT, tls :$(dist_port tls "$d") -> :$S3_TLS_PORT"
  done
}
stop_proxies() {
  local k
  for k in "${!PROXY_PID[@]}"; do kill "${PROXY_PID[$k]}" 2>/dev/null || true; wait "${PROXY_PID[$k]}" 2>/dev/null || true; done
  PROXY_PID=()
}
cleanup() {
  local rc=$?
  trap - EXIT
  if [ -n "$ORIG_ARCHIVE" ] && [ -f "$PGDATA/postmaster.pid" ] && psql_pg -Atc 'select 1' >/dev/null 2>&1; then
    psql_pg -c "ALTER SYSTEM RESET archive_command" -c "select pg_reload_conf()" >/dev/null || true
    sleep 1
    [ "$(psql_pg -Atc 'show archive_command')" = "$ORIG_ARCHIVE" ] || set_archive "$ORIG_ARCHIVE" || true
    say "archive_command back to: $(psql_pg -Atc 'show archive_command' 2>/dev/null)"
  fi
  if [ "$STARTED_PG" = 1 ] && [ -f "$PGDATA/postmaster.pid" ]; then "$PEERS/setup-pg.sh" stop >/dev/null 2>&1 || true; fi
  [ -z "$REPLAY_BG_PID" ] || kill "$REPLAY_BG_PID" 2>/dev/null || true
  for d in "$RA/replay/pgdata" "$RA/replay/src"; do   # the replay workload's clusters
    [ ! -f "$d/postmaster.pid" ] || runuser -u "$PGUSER_OS" -- "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
  done
  [ "$STARTED_TLS" = 1 ] && { "$PEERS/setup-s3.sh" tls-stop || true; }
  [ "$STARTED_S3" = 1 ] && { "$PEERS/setup-s3.sh" stop || true; }
  cg_drain 0 >/dev/null 2>&1 || true; rmdir "$CGL" 2>/dev/null || true
  stop_proxies
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
logrun() { local f=$1; shift; { "$@" 2>&1 1>&3 3>&- | tee -a "$RESULTS/$f.steps.log" >&2; } 3>&1; }

# ---------------------------------------------------------------- walset and cluster
need=0    # the peers' walset: the wal workload takes NSEG (64) of it, distance's fpi walset DIST_NSEG
has_wl wal && need=$(( NSEG > 64 ? NSEG : 64 ))
has_wl distance && [[ " $WALSETS " == *" fpi "* ]] && [ "$DIST_NSEG" -gt "$need" ] && need=$DIST_NSEG
have=$(ls "$WALSET" 2>/dev/null | grep -cE '^[0-9A-F]{24}$' || true)
if [ "$need" -gt 0 ] && { [ "$have" -lt "$need" ] || [ ! -f "$WALSTUB/global/pg_control" ]; }; then
  need=$(( need > 64 ? need : 64 ))
  say "walset has $have of $need segments: running setup-pg.sh (pgbench scale 100, a few minutes)"
  STARTED_PG=1
  logrun setup-pg env NSEG="$need" "$PEERS/setup-pg.sh"
fi
have=$(ls "$WALSET" 2>/dev/null | grep -cE '^[0-9A-F]{24}$' || true)
SEGS=$(ls "$WALSET" 2>/dev/null | grep -E '^[0-9A-F]{24}$' | LC_ALL=C sort | head -n "$NSEG" || true)
FIRST_SEG=$(echo "$SEGS" | head -1)
if has_wl sustained || has_wl backup || has_wl bbenc; then
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    STARTED_PG=1; logrun setup-pg "$PEERS/setup-pg.sh"
  elif ! "$PEERS/setup-pg.sh" status >/dev/null 2>&1; then
    say "starting the cluster in $PGDATA"; STARTED_PG=1; "$PEERS/setup-pg.sh" start >/dev/null
  fi
  ORIG_ARCHIVE=$(psql_pg -Atc "show archive_command")
  say "archive_command now: $ORIG_ARCHIVE (restored at the end)"
fi

alive "$S3_PIDF" || STARTED_S3=1
"$PEERS/setup-s3.sh" start >&2
alive "$TLS_PIDF" || { STARTED_TLS=1; "$PEERS/setup-s3.sh" tls-start; }
S3PID=$(cat "$S3_PIDF") TLSPID=$(cat "$TLS_PIDF")
SRV_PIDS="$S3PID $TLSPID"     # the S3 side: s3s-fs, the TLS front, and the latency proxies
if has_wl distance; then start_proxies; fi

# ---------------------------------------------------------------- keys and configs
KEY=$RA/keys/key.txt
age-keygen -o "$KEY" 2>/dev/null
RECIPIENT=$(age-keygen -y "$KEY")
chown -R "$PGUSER_OS": "$RA/keys"; chmod 600 "$KEY"
C=$RA/conf
S3R=s3://$S3_BUCKET/ra            # pitrkit's S3 repositories live under this prefix
mkconf() {  # mkconf NAME REPO plain|push|fetch [S3_ENDPOINT]
  {
    echo "repo = \"$2\""
    case $2 in s3://*)
      echo "s3_endpoint = \"${4:-$S3_ENDPOINT}\""; echo "s3_region = \"$S3_REGION\""
      echo "s3_access_key_id = \"$AWS_ACCESS_KEY_ID\""; echo "s3_secret_access_key = \"$AWS_SECRET_ACCESS_KEY\"" ;;
    esac
    case $3 in
      push)  echo "encryption_recipients = [\"$RECIPIENT\"]" ;;
      fetch) echo "encryption_identity_file = \"$KEY\"" ;;
    esac
  } > "$C/$1.toml"
  chown "$PGUSER_OS": "$C/$1.toml"; chmod 600 "$C/$1.toml"
}
for t in local s3; do
  base=$([ $t = local ] && echo "$RA/repo" || echo "$S3R")
  mkconf pk-$t        "$base/pk-$t"        plain
  mkconf pk-$t-j1     "$base/pk-$t-j1"     plain
  mkconf pk-$t-enc    "$base/pk-$t-enc"    push
  mkconf pk-$t-enc-id "$base/pk-$t-enc"    fetch
  mkconf rss-$t       "$base/rss-$t"       plain
  mkconf sus-pk-$t    "$base/sus-pk-$t"    plain
done
mkconf bb-plain     "$RA/repo/bb-plain" plain
mkconf bb-enc       "$RA/repo/bb-enc"   push
mkconf bb-enc-id    "$RA/repo/bb-enc"   fetch
mkconf replay       "$S3R/replay"       plain

# pgBackRest: stanza 'wal' on the walset (pg1-path = the fake data directory, given on the
# command line), sync and async, posix and S3 (through the TLS front: pgBackRest only speaks https)
pgbr_conf() {  # pgbr_conf NAME (extra [global] lines on stdin)
  { echo "[global]"; cat
    echo "compress-type=zst"; echo "compress-level=3"; echo "log-level-console=warn"; echo "log-level-file=off"
    echo "lock-path=$RA/pgbr/lock"; } > "$RA/pgbr/$1.conf"
  chown "$PGUSER_OS": "$RA/pgbr/$1.conf"; chmod 600 "$RA/pgbr/$1.conf"
}
s3_lines() {  # s3_lines PATH [PORT]: pgBackRest 2.45 through the TLS front (or a latency proxy in front of it)
  printf '%s\n' "repo1-type=s3" "repo1-path=$1" "repo1-s3-bucket=$S3_BUCKET" "repo1-s3-endpoint=$S3_HOST" \
    "repo1-storage-port=${2:-$S3_TLS_PORT}" "repo1-s3-region=$S3_REGION" "repo1-s3-key=$AWS_ACCESS_KEY_ID" \
    "repo1-s3-key-secret=$AWS_SECRET_ACCESS_KEY" "repo1-s3-uri-style=path" "repo1-storage-verify-tls=n"
}
s3_lines59() {  # s3_lines59 PATH D: pgBackRest 2.59.1 (plain http since 2.58) at round-trip time D
  printf '%s\n' "repo1-type=s3" "repo1-path=$1" "repo1-s3-bucket=$S3_BUCKET" "repo1-s3-endpoint=http://127.0.0.1:$(dist_port http "$2")" \
    "repo1-s3-region=$S3_REGION" "repo1-s3-key=$AWS_ACCESS_KEY_ID" "repo1-s3-key-secret=$AWS_SECRET_ACCESS_KEY" "repo1-s3-uri-style=path"
}
ASYNC_LINES() { printf '%s\n' "archive-async=y" "process-max=2" "spool-path=$RA/pgbr/spool-$1" "archive-get-queue-max=2GiB"; }
{ echo "repo1-path=$RA/pgbr-repo-posix-sync"; echo "archive-async=n"; }                  | pgbr_conf posix-sync
{ echo "repo1-path=$RA/pgbr-repo-posix-async"; ASYNC_LINES posix-async; }                | pgbr_conf posix-async
{ s3_lines /ra-pgbr-s3-sync; echo "archive-async=n"; }                                   | pgbr_conf s3-sync
{ s3_lines /ra-pgbr-s3-async; ASYNC_LINES s3-async; }                                    | pgbr_conf s3-async
# replay: stanza 'replay' (the source cluster's system id), one S3 repository read sync and async
{ s3_lines /ra-pgbr-replay; echo "archive-async=n"; }                                    | pgbr_conf replay-sync
{ s3_lines /ra-pgbr-replay; ASYNC_LINES replay; }                                        | pgbr_conf replay-async
{ s3_lines59 /ra-pgbr59-replay 0; echo "archive-async=n"; }                              | pgbr_conf replay59-sync
# sustained: stanza 'main' on the live cluster, async
for t in local s3; do
  { if [ $t = local ]; then echo "repo1-path=$RA/pgbr-repo-sus-local"; else s3_lines /ra-pgbr-sus-s3; fi
    ASYNC_LINES sus-$t; echo; echo "[main]"; echo "pg1-path=$PGDATA"; echo "pg1-port=$PGPORT"; echo "pg1-socket-path=$PGSOCK"; } | pgbr_conf sus-$t
done

# ---------------------------------------------------------------- machine facts
fact() { printf '%s\t%s\n' "$1" "$2" >> "$RESULTS/machine.tsv"; }
ver() { "$@" 2>&1 | head -1 || true; }
: > "$RESULTS/machine.tsv"
fact "date (UTC)" "$(date -u '+%Y-%m-%d %H:%M')"
fact "nproc" "$(nproc)"
fact "CPU model" "$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
fact "memory" "$(free -g | awk '/^Mem:/{print $2 " GiB"}')"
fact "disk" "$(df -h "$BENCH_ROOT" | awk 'NR==2{print $1 " (" $2 ")"}') $(findmnt -no FSTYPE -T "$BENCH_ROOT" 2>/dev/null), shared by walset, repos, the S3 store and the cluster"
fact "kernel" "$(uname -r)"
fact "OS" "$(. /etc/os-release && echo "$PRETTY_NAME")"
fact "PostgreSQL" "$(ver "$PGBIN/postgres" --version)"
fact "walset" "$NSEG of $have segments in $WALSET ($FIRST_SEG …), $(sed 's/^Database //' "$WALSET/SYSTEM_ID" 2>/dev/null | tr -s ' ' || echo '?')"
fact "pitrkit" "$(ver "$BIN/wal-push" --version), git $PK_GIT; binaries copied from $PITRKIT_BIN (built $(date -u -r "$PITRKIT_BIN/wal-push" '+%Y-%m-%d %H:%M'))"
fact "pgBackRest" "$(ver pgbackrest version)"
fact "hyperfine" "$(ver hyperfine --version)"
if has_wl distance; then
  fact "pgBackRest (newest)" "$([ -x "$PGBR_NEW" ] && ver "$PGBR_NEW" version || echo "not installed (PGBR_NEW=$PGBR_NEW)") at $PGBR_NEW"
  fact "wal-rus" "$([ -x "$WALRUS" ] && ver "$WALRUS" --version || echo "not installed (WALRUS=$WALRUS)") at $WALRUS"
  fact "latency proxy" "bench/latency-proxy.py (python3 $(python3 -c 'import platform; print(platform.python_version())') asyncio) for DISTANCES='$DISTANCES' ms RTT"
  fact "cgroup" "v$CGV ($CGROOT): CPU of each timed loop incl. detached processes; leftovers killed $DRAIN_WAIT s after a loop"
fi
fact "age" "$(ver age --version)"
fact "aws" "$(ver aws --version)"
fact "S3 server" "$(ver s3s-fs --version) on $S3_ENDPOINT (TLS front for pgBackRest: socat on :$S3_TLS_PORT)"
fact "load before" "$(cut -d' ' -f1-3 /proc/loadavg)"
echo "NSEG=$NSEG RUNS=$RUNS GZIP_AWS_RUNS=$GZIP_AWS_RUNS SUSTAIN_SECONDS=$SUSTAIN_SECONDS SUSTAIN_TARGETS='$SUSTAIN_TARGETS' WORKLOADS='$WORKLOADS' REPLAY_SCALE=$REPLAY_SCALE$(has_wl distance && echo " DISTANCES='$DISTANCES' WALSETS='$WALSETS' DIST_NSEG=$DIST_NSEG")" > "$RESULTS/invocation.txt"
sync

# ---------------------------------------------------------------- helpers for the loops
# lib.sh: sourced by the untimed prepare scripts
cat > "$RA/lib.sh" <<EOF
set -e
. $(q "$PEERS/common.sh")
SEGS="$(echo $SEGS)"
mkdatadir() {  # mkdatadir DIR push|restore: a fake data directory as PostgreSQL would have it
  rm -rf "\$1"; mkdir -p "\$1/pg_wal/archive_status" "\$1/global"
  cp "\$WALSTUB/PG_VERSION" "\$1/"; cp "\$WALSTUB/global/pg_control" "\$1/global/"
  if [ "\$2" = push ]; then
    for f in \$SEGS; do ln "\$WALSET/\$f" "\$1/pg_wal/\$f" 2>/dev/null || cp "\$WALSET/\$f" "\$1/pg_wal/\$f"; : > "\$1/pg_wal/archive_status/\$f.ready"; done
  fi
  chown -R $PGUSER_OS: "\$1"; chmod 700 "\$1"
}
CGL=$CGL CGV=$CGV
$(declare -f cg_drain)
wait_async() {  # pgBackRest's detached async processes of an earlier run
  for _ in \$(seq 1 300); do pgrep -f 'pgbackrest.*:async' >/dev/null || return 0; sleep 0.1; done
  echo "pgBackRest async process still running" >&2
}
EOF
PUSHDIR=$RA/pushdir RESTDIR=$RA/restdir VERIFY=$RA/verify
in_bytes=$(for f in $SEGS; do stat -c %s "$WALSET/$f"; done | awk '{s+=$1} END{print s+0}')
echo -e "name\tkind\tuser\tcommand\tend_command\tprepare" > "$RESULTS/commands.tsv"
srv_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15+$16+$17}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }

# timeloop NAME KIND(push|restore) USER TARGET 'CMD' 'PREPARE' 'SIZE_CMD' ['END_CMD'] [RUNS]
# Globals it reads: SEGS WALSET NSEG in_bytes (the walset), TL_DIR (where its files and rows go,
# default $RESULTS), TL_LIB (what the prepare step sources, default $RA/lib.sh), SRV_PIDS.
timeloop() {
  local name=$1 kind=$2 user=$3 target=$4 cmd=$5 prep=$6 size=$7 endc=${8:-} runs=${9:-$RUNS}
  local td=${TL_DIR:-$RESULTS} lib=${TL_LIB:-$RA/lib.sh}
  local dir log prepf runf c0 s0 rc=0 cg left stored verify="-" callog=${TL_DIR:-$RESULTS}/$name.$kind.calls
  [ "$kind" = push ] && dir=$PUSHDIR || dir=$RESTDIR
  prepf=$RA/scripts/$name.$kind.prep.sh runf=$RA/scripts/$name.$kind.run.sh
  local vd=; [ "$kind" = restore ] && vd=$(q "$VERIFY")
  {
    echo ". $lib"
    echo "n=\$(cg_drain $DRAIN_WAIT); [ \"\$n\" = 0 ] || printf '%s\\t%s\\t%s\\n' $(q "$name.$kind") prepare \"\$n\" >> $(q "$td/killed.tsv")"
    echo "wait_async"
    echo "$prep"
    if [ "$kind" = push ]; then echo "mkdatadir $dir push"
    else echo "mkdatadir $dir restore"; echo "rm -rf $VERIFY && install -d -o $user $VERIFY"; fi
    echo "sync"
  } > "$prepf"
  {
    echo "echo \$\$ > $CGL/cgroup.procs"
    echo "exec runuser -u $user -- env WALSET=$(q "$WALSET") NSEG=$NSEG CALL_LOG=$(q "$callog") VERIFY_DIR=$vd END_CMD=$(q "$endc") bash $RA/pgloop.sh $kind $dir $(q "$cmd")"
  } > "$runf"
  : > "$callog"; : > "$callog.out"; chown "$user": "$callog" "$callog.out"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$user" "$cmd" "${endc:--}" "$(echo "$prep" | tr '\n' ';')" >> "$td/commands.tsv"
  wait_idle
  say "[$name] $kind ($runs run(s)): $cmd"
  cg_reset
  s0=$(srv_ticks $SRV_PIDS)
  hyperfine --runs "$runs" --style basic --shell bash --prepare "bash $prepf" \
    --export-json "$td/$name.$kind.json" "bash $runf" > "$td/$name.$kind.log" 2>&1 || rc=$?
  left=$(cg_drain "$DRAIN_WAIT")     # the last run's detached processes: DRAIN_WAIT s to end, then killed
  [ "$left" = 0 ] || printf '%s\t%s\t%s\n' "$name.$kind" "after the last run" "$left" >> "$td/killed.tsv"
  cg=$(cg_usage_ns); rmdir "$CGL" 2>/dev/null || true
  s0=$(( $(srv_ticks $SRV_PIDS) - s0 ))
  if [ "$rc" != 0 ]; then
    fail "$name.$kind (hyperfine rc=$rc; $td/$name.$kind.log)"; tail -5 "$td/$name.$kind.log" >&2; return 0
  fi
  bash -c ". $RA/lib.sh; wait_async"
  stored=$(bash -c ". $PEERS/common.sh; $size" 2>/dev/null || echo 0)
  if [ "$kind" = restore ]; then   # every restored segment byte for byte, and what is left behind
    local ok=0 bad=0 miss=0 f left
    for f in $SEGS; do
      if [ ! -f "$VERIFY/$f" ]; then miss=$((miss + 1))
      elif cmp -s "$WALSET/$f" "$VERIFY/$f"; then ok=$((ok + 1))
      else bad=$((bad + 1)); say "MISMATCH $name $f"; fi
    done
    left=$(find "$RESTDIR/pg_wal" -mindepth 1 -not -path "$RESTDIR/pg_wal/archive_status" | wc -l)
    verify="$ok ok, $bad mismatched, $miss missing; $left left in pg_wal"
    [ "$bad" = 0 ] && [ "$miss" = 0 ] || fail "$name.restore verify: $verify"
    say "[$name] restore verify: $verify"
  fi
  python3 - "$td/$name.$kind.json" "$td/wal.tsv" "$name" "$kind" "$target" "$NSEG" "$in_bytes" "$cg" "$s0" "$stored" "$verify" <<'PY'
import json, os, statistics, sys
js, out, name, kind, target, nseg, in_b, cg, srv, stored, verify = sys.argv[1:]
r = json.load(open(js))["results"][0]; t = r["times"]; med = statistics.median(t)
nseg, in_b, runs = int(nseg), int(in_b), len(t)
stored = int(stored or 0)
tick = os.sysconf("SC_CLK_TCK")
row = dict(name=name, kind=kind, target=target, median_s=f"{med:.2f}", min_s=f"{min(t):.2f}", max_s=f"{max(t):.2f}",
           runs=str(runs), seg_per_s=f"{nseg / med:.2f}", ms_per_seg=f"{1000 * med / nseg:.1f}",
           cpu_ms_per_seg=f"{int(cg) / 1e6 / runs / nseg:.1f}", server_cpu_ms_per_seg=f"{1000 * int(srv) / tick / runs / nseg:.1f}",
           stored_bytes=str(stored), ratio=f"{in_b / stored:.2f}" if stored else "-", verify=verify)
new = not os.path.exists(out)
with open(out, "a") as fh:
    if new: fh.write("\t".join(row) + "\n")
    fh.write("\t".join(row.values()) + "\n")
print("  ".join(f"{k}={v}" for k, v in row.items()), file=sys.stderr)
PY
}

# ================================================================ 1 + 2 + 5: WAL loops
if has_wl wal; then
  PK_LOCAL_SIZE() { echo "dir_bytes $RA/repo/$1/wal"; }
  PK_S3_SIZE() { echo "s3_bytes $S3R/$1/wal/"; }
  for t in local s3; do
    if [ $t = local ]; then
      repo_reset() { echo "rm -rf $RA/repo/$1 && install -d -o $PGUSER_OS $RA/repo/$1"; }; size=PK_LOCAL_SIZE
    else
      repo_reset() { echo "s3_rm_prefix $S3R/$1/"; }; size=PK_S3_SIZE
    fi
    # pitrkit, look-ahead (default --jobs), then its restores: prefetch (default 8) and --prefetch 0
    timeloop pk-$t push "$PGUSER_OS" $t "$BIN/wal-push --config $C/pk-$t.toml %p" "$(repo_reset pk-$t)" "$($size pk-$t)"
    timeloop pk-$t restore "$PGUSER_OS" $t "$BIN/wal-fetch --config $C/pk-$t.toml %f %p" "true" "echo 0" \
      "$BIN/wal-fetch --config $C/pk-$t.toml --prefetch-cleanup"
    timeloop pk-$t-p0 restore "$PGUSER_OS" $t "$BIN/wal-fetch --config $C/pk-$t.toml --prefetch 0 %f %p" "true" "echo 0"
    # no look-ahead
    timeloop pk-$t-j1 push "$PGUSER_OS" $t "$BIN/wal-push --config $C/pk-$t-j1.toml --jobs 1 %p" "$(repo_reset pk-$t-j1)" "$($size pk-$t-j1)"
    # encrypted (a fresh repository every run: the first push makes it encrypted)
    timeloop pk-$t-enc push "$PGUSER_OS" $t "$BIN/wal-push --config $C/pk-$t-enc.toml %p" "$(repo_reset pk-$t-enc)" "$($size pk-$t-enc)"
    timeloop pk-$t-enc restore "$PGUSER_OS" $t "$BIN/wal-fetch --config $C/pk-$t-enc-id.toml %f %p" "true" "echo 0" \
      "$BIN/wal-fetch --config $C/pk-$t-enc-id.toml --prefetch-cleanup"
    # pgBackRest sync and async (pg1-path = the fake data directory, which is the cwd)
    pt=$([ $t = local ] && echo posix || echo s3)
    for m in sync async; do
      cf=$RA/pgbr/$pt-$m.conf
      PB="pgbackrest --config=$cf --stanza=wal"
      if [ $t = local ]; then
        preset="rm -rf $RA/pgbr-repo-$pt-$m && install -d -o $PGUSER_OS $RA/pgbr-repo-$pt-$m"; psize="dir_bytes $RA/pgbr-repo-$pt-$m/archive/wal/15-1"
      else
        preset="s3_rm_prefix s3://$S3_BUCKET/ra-pgbr-$pt-$m/"; psize="s3_bytes s3://$S3_BUCKET/ra-pgbr-$pt-$m/archive/wal/15-1/"
      fi
      preset+=$'\n'"rm -rf $RA/pgbr/spool-$pt-$m && install -d -o $PGUSER_OS $RA/pgbr/spool-$pt-$m"
      preset+=$'\n'"mkdatadir $PUSHDIR push && runuser -u $PGUSER_OS -- $PB --pg1-path=$PUSHDIR --no-online stanza-create >/dev/null"
      timeloop pgbr-$pt-$m push "$PGUSER_OS" $t "$PB --pg1-path=$PUSHDIR archive-push %p" "$preset" "$psize"
      timeloop pgbr-$pt-$m restore "$PGUSER_OS" $t "$PB --pg1-path=$RESTDIR archive-get %f %p" \
        "rm -rf $RA/pgbr/spool-$pt-$m && install -d -o $PGUSER_OS $RA/pgbr/spool-$pt-$m" "echo 0"
    done
  done
  # the classic pipeline, push only (it is slow: GZIP_AWS_RUNS runs)
  if [ "$GZIP_AWS_RUNS" -gt 0 ]; then
    timeloop gzip-aws push root s3 "gzip < %p | aws s3 cp - $S3R/gzip-aws/%f.gz --endpoint-url $S3_ENDPOINT --only-show-errors" \
      "s3_rm_prefix $S3R/gzip-aws/" "s3_bytes $S3R/gzip-aws/" "" "$GZIP_AWS_RUNS"
  fi

  # ---------------------------------------------------------------- peak RSS (untimed)
  wait_idle
  echo -e "label\tmax_rss_kib\tnote" > "$RESULTS/rss.tsv"
  rss() {  # rss LABEL DIR CHECK CMD...   (as postgres, cwd DIR, /usr/bin/time -v)
    local label=$1 dir=$2 check=$3; shift 3
    local tf=$RA/rss/time.txt; rm -f "$tf"
    if (cd "$dir" && runuser -u "$PGUSER_OS" -- /usr/bin/time -v -o "$tf" "$@") > "$RA/rss/out" 2> "$RA/rss/err"; then
      printf '%s\t%s\t%s\n' "$label" "$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$tf")" "$(bash -c "$check")" >> "$RESULTS/rss.tsv"
    else
      fail "rss: $label: $(tail -2 "$RA/rss/err" | tr '\n' ' ')"
    fi
  }
  for t in local s3; do
    if [ $t = local ]; then bash -c "rm -rf $RA/repo/rss-$t && install -d -o $PGUSER_OS $RA/repo/rss-$t"; else bash -c ". $PEERS/common.sh; s3_rm_prefix $S3R/rss-$t/"; fi
    bash -c ". $RA/lib.sh; mkdatadir $PUSHDIR push"
    rss "wal-push --jobs 8 pg_wal/SEG ($t, $NSEG .ready waiting)" "$PUSHDIR" "echo \$(ls $PUSHDIR/pg_wal/pitrkit-ahead 2>/dev/null | wc -l) records pushed ahead" \
      "$BIN/wal-push" --config "$C/rss-$t.toml" --jobs 8 "pg_wal/$FIRST_SEG"
    bash -c ". $RA/lib.sh; mkdatadir $RESTDIR restore"
    rss "wal-fetch --prefetch 8 SEG pg_wal/RECOVERYXLOG ($t), the call" "$RESTDIR" "echo \"\$(cmp -s $WALSET/$FIRST_SEG $RESTDIR/pg_wal/RECOVERYXLOG && echo restored file matches || echo RESTORED FILE DIFFERS)\"; cd $RESTDIR && runuser -u $PGUSER_OS -- $BIN/wal-fetch --prefetch-cleanup" \
      "$BIN/wal-fetch" --config "$C/pk-$t.toml" --prefetch 8 "$FIRST_SEG" pg_wal/RECOVERYXLOG
    # The prefetcher that call starts, run in the foreground with 8 downloads at once until
    # it holds its 8 segments, then stopped as recovery_end_command stops it.
    bash -c ". $RA/lib.sh; mkdatadir $RESTDIR restore"
    tf=$RA/rss/time-pf.txt; n=0; rm -f "$tf"
    (cd "$RESTDIR" && exec runuser -u "$PGUSER_OS" -- /usr/bin/time -v -o "$tf" "$BIN/wal-fetch" --config "$C/pk-$t.toml" \
      --prefetch 8 --jobs 8 --prefetch-daemon 16777216 "$FIRST_SEG" pg_wal/RECOVERYXLOG) > "$RA/rss/out" 2> "$RA/rss/err" &
    pf=$!
    for i in $(seq 1 600); do
      n=$(ls "$RESTDIR/pg_wal/pitrkit-prefetch" 2>/dev/null | grep -cE '^[0-9A-F]{24}$' || true)
      [ "$n" -ge 8 ] && break; sleep 0.05
    done
    (cd "$RESTDIR" && runuser -u "$PGUSER_OS" -- "$BIN/wal-fetch" --prefetch-cleanup)
    if wait "$pf"; then
      printf '%s\t%s\t%s\n' "wal-fetch prefetcher, --prefetch 8 --jobs 8 ($t)" "$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$tf")" \
        "$n segments prefetched, then stopped by --prefetch-cleanup" >> "$RESULTS/rss.tsv"
    else
      fail "rss: prefetcher ($t): $(tail -2 "$RA/rss/err" | tr '\n' ' ')"
    fi
  done
  grep -q DIFFERS "$RESULTS/rss.tsv" && fail "rss: a wal-fetch restored file differs"
  rm -rf "$PUSHDIR" "$RESTDIR" "$VERIFY"
fi

# ================================================================ distance: the WAL loops at each RTT
if has_wl distance; then
  . "$BENCH_DIR/distance.sh"
fi

# ================================================================ 2, replayed: real PostgreSQL recovery
# (with the distance workload: also pk@D and pgbr59-async@D for every D of DISTANCES, and cp)
RP_VARIANTS=
has_wl replay && RP_VARIANTS=$REPLAY_VARIANTS
if has_wl distance && [ "$DIST_REPLAY" = 1 ]; then
  for d in $DISTANCES; do
    sfx=$([ "$d" = 0 ] || echo "@$d")
    RP_VARIANTS+=" pk$sfx"; [ -x "$PGBR_NEW" ] && RP_VARIANTS+=" pgbr59-async$sfx"
  done
  RP_VARIANTS+=" cp"
fi
RP_VARIANTS=$(echo $RP_VARIANTS | tr ' ' '\n' | awk 'NF && !seen[$0]++' | tr '\n' ' ')
if [ -n "$RP_VARIANTS" ]; then
  RP=$RA/replay RPR=$RESULTS/replay
  SRC=$RP/src BASE=$RP/base STAGE=$RP/wal RD=$RP/pgdata
  install -d -o "$PGUSER_OS" "$RP" "$STAGE" "$RP/log" "$BENCH_ROOT/home-$PGUSER_OS"
  mkdir -p "$RPR"
  rp_ctl() { (cd "$RP" && runuser -u "$PGUSER_OS" -- "$PGBIN/pg_ctl" "$@"); }
  rp_q() { "$PGBIN/psql" -X -Atq -h "$PGSOCK" -p "$REPLAY_PORT" -U postgres -d postgres -c "$1"; }  # as root, trust auth
  rp_fact() { printf '%s\t%s\n' "$1" "$2" >> "$RPR/source.tsv"; }
  : > "$RPR/source.tsv"

  # ---------------------------------------------------------------- the source, untimed
  replay_source() {
    local t0 start_lsn target n=0 lsn last
    if "$PGBIN/pg_isready" -q -h "$PGSOCK" -p "$REPLAY_PORT"; then say "[replay] port $REPLAY_PORT is in use (REPLAY_PORT=)"; return 1; fi
    # Something other than PostgreSQL may hold it (seen once: an ephemeral port of a process the
    # distance loops had just used): then any free port will do.
    if ! python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$REPLAY_PORT" 2>/dev/null; then
      local was=$REPLAY_PORT
      REPLAY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
      say "[replay] port $was is taken by another listener: using $REPLAY_PORT"
    fi
    say "[replay] source: initdb, pgbench -i -s $REPLAY_SCALE on port $REPLAY_PORT"
    as_pg "$PGBIN/initdb" -D "$SRC" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null || return 1
    cat >> "$SRC/postgresql.conf" <<CONF

# ---- run-all.sh replay source ----
listen_addresses = '127.0.0.1'
port = $REPLAY_PORT
unix_socket_directories = '$PGSOCK'
shared_buffers = 512MB
max_wal_size = 256MB
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $STAGE/%f && cp %p $STAGE/%f'
log_checkpoints = on
CONF
    rp_ctl -D "$SRC" -w -l "$RP/log/source.log" start >/dev/null || return 1
    as_pg "$PGBIN/pgbench" -h "$PGSOCK" -p "$REPLAY_PORT" -i -s "$REPLAY_SCALE" -q postgres > "$RPR/pgbench-init.log" 2>&1 || return 1
    say "[replay] base backup: pg_basebackup -D $BASE -Fp -X none -c fast"
    as_pg "$PGBIN/pg_basebackup" -h "$PGSOCK" -p "$REPLAY_PORT" -D "$BASE" -Fp -X none -c fast > "$RPR/basebackup.log" 2>&1 \
      || { say "[replay] pg_basebackup failed: $(tail -2 "$RPR/basebackup.log")"; return 1; }
    start_lsn=$(sed -n 's/^START WAL LOCATION: \([0-9A-F/]*\) .*/\1/p' "$BASE/backup_label")
    RP_FIRST=$(sed -n 's/^START WAL LOCATION: .*(file \([0-9A-F]\{24\}\)).*/\1/p' "$BASE/backup_label")
    [ -n "$start_lsn" ] && [ -n "$RP_FIRST" ] || { say "[replay] no START WAL LOCATION in backup_label"; return 1; }
    # pgbench until the insert position is in the NSEG-th segment from the backup's start, then stop it
    # (SIGTERM: a background job of a non-interactive shell ignores SIGINT)
    target=$(( ($(rp_q "select pg_wal_lsn_diff('$start_lsn', '0/0')::bigint") / 16777216 + NSEG - 1) * 16777216 ))
    say "[replay] pgbench -c 8 -j 2 -M prepared (synchronous_commit=off) until $NSEG segments follow $RP_FIRST"
    t0=$EPOCHREALTIME
    PGOPTIONS='-c synchronous_commit=off' "$PGBIN/pgbench" -h "$PGSOCK" -p "$REPLAY_PORT" -U postgres -c 8 -j 2 -M prepared \
      -T "$REPLAY_TIMEOUT" -n postgres > "$RPR/pgbench.log" 2>&1 &
    REPLAY_BG_PID=$!
    while kill -0 "$REPLAY_BG_PID" 2>/dev/null; do
      lsn=$(rp_q "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint") || lsn=0
      [ "$lsn" -lt "$target" ] || break
      sleep 0.2
    done
    kill -TERM "$REPLAY_BG_PID" 2>/dev/null || { say "[replay] pgbench ended early: $(tail -2 "$RPR/pgbench.log")"; return 1; }
    wait "$REPLAY_BG_PID" 2>/dev/null || true; REPLAY_BG_PID=
    rp_fact "WAL generation" "$(awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $t0}") s of pgbench -c 8 -j 2 -M prepared, synchronous_commit=off (stopped at the target position)"
    RP_ROWS=$(rp_q "select count(*) from pgbench_history") || return 1
    RP_LSN=$(rp_q "select pg_current_wal_insert_lsn()") || return 1
    rp_q "select pg_switch_wal()" >/dev/null || return 1
    for _ in $(seq 1 600); do
      [ -n "$(find "$SRC/pg_wal/archive_status" -name '*.ready' | head -1)" ] || break; sleep 0.2
    done
    rp_ctl -D "$SRC" -w -m fast stop >/dev/null || return 1
    RP_SEGS=$(ls "$STAGE" | grep -E '^[0-9A-F]{24}$' | LC_ALL=C sort | LC_ALL=C awk -v s="$RP_FIRST" '"x"$0 >= "x"s')
    RP_N=$(echo "$RP_SEGS" | grep -c .)
    last=$(echo "$RP_SEGS" | tail -1)
    [ "$RP_N" -ge "$NSEG" ] || { say "[replay] only $RP_N segments archived after $RP_FIRST"; return 1; }
    rp_fact "source cluster" "PostgreSQL 15, pgbench scale $REPLAY_SCALE, shared_buffers=512MB, max_wal_size=256MB, wal_level=replica, archive_command = cp into a staging directory"
    rp_fact "base backup" "pg_basebackup -Fp -X none -c fast: $(du -sm "$BASE" | cut -f1) MiB, starts at $start_lsn ($RP_FIRST)"
    rp_fact "WAL to replay" "$RP_N segments ($RP_FIRST … $last, $((RP_N * 16)) MiB), up to LSN $RP_LSN; pgbench_history rows at the end: $RP_ROWS"
    return 0
  }

  # ---------------------------------------------------------------- the repositories, untimed
  replay_load() {
    local f t0 PB="pgbackrest --config=$RA/pgbr/replay-sync.conf --stanza=replay --pg1-path=$SRC"
    local PB59="$PGBR_NEW --config=$RA/pgbr/replay59-sync.conf --stanza=replay --pg1-path=$SRC"
    s3_rm_prefix "$S3R/replay/" && s3_rm_prefix "s3://$S3_BUCKET/ra-pgbr-replay/" && s3_rm_prefix "s3://$S3_BUCKET/ra-pgbr59-replay/" || return 1
    say "[replay] loading $RP_N segments: wal-push --jobs 1 per segment; pgbackrest archive-push per segment"
    t0=$EPOCHREALTIME
    for f in $RP_SEGS; do
      runuser -u "$PGUSER_OS" -- "$BIN/wal-push" --config "$C/replay.toml" --jobs 1 "$STAGE/$f" >> "$RPR/load-pitrkit.log" 2>&1 \
        || { say "[replay] wal-push $f failed: $(tail -2 "$RPR/load-pitrkit.log")"; return 1; }
    done
    rp_fact "pitrkit repository" "$S3R/replay: loaded in $(awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $t0}") s (wal-push --jobs 1, untimed), $(s3_bytes "$S3R/replay/wal/" | awk '{printf "%.1f", $1 / 1048576}') MiB stored"
    if [[ " $RP_VARIANTS " == *" pgbr59-"* ]]; then
      runuser -u "$PGUSER_OS" -- $PB59 --no-online stanza-create > "$RPR/load-pgbackrest59.log" 2>&1 \
        || { say "[replay] pgbackrest 2.59.1 stanza-create failed: $(tail -2 "$RPR/load-pgbackrest59.log")"; return 1; }
      t0=$EPOCHREALTIME
      for f in $RP_SEGS; do
        runuser -u "$PGUSER_OS" -- $PB59 archive-push "$STAGE/$f" >> "$RPR/load-pgbackrest59.log" 2>&1 \
          || { say "[replay] pgbackrest 2.59.1 archive-push $f failed: $(tail -2 "$RPR/load-pgbackrest59.log")"; return 1; }
      done
      rp_fact "pgBackRest 2.59.1 repository" "s3://$S3_BUCKET/ra-pgbr59-replay (plain http), stanza replay: loaded in $(awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $t0}") s (archive-push, untimed), $(s3_bytes "s3://$S3_BUCKET/ra-pgbr59-replay/archive/" | awk '{printf "%.1f", $1 / 1048576}') MiB stored"
    fi
    [[ " $RP_VARIANTS " == *" pgbr-"* ]] || return 0
    runuser -u "$PGUSER_OS" -- $PB --no-online stanza-create > "$RPR/load-pgbackrest.log" 2>&1 \
      || { say "[replay] pgbackrest stanza-create failed: $(tail -2 "$RPR/load-pgbackrest.log")"; return 1; }
    t0=$EPOCHREALTIME
    for f in $RP_SEGS; do
      runuser -u "$PGUSER_OS" -- $PB archive-push "$STAGE/$f" >> "$RPR/load-pgbackrest.log" 2>&1 \
        || { say "[replay] pgbackrest archive-push $f failed: $(tail -2 "$RPR/load-pgbackrest.log")"; return 1; }
    done
    rp_fact "pgBackRest repository" "s3://$S3_BUCKET/ra-pgbr-replay (TLS front), stanza replay: loaded in $(awk "BEGIN{printf \"%.1f\", $EPOCHREALTIME - $t0}") s (archive-push, untimed), $(s3_bytes "s3://$S3_BUCKET/ra-pgbr-replay/archive/" | awk '{printf "%.1f", $1 / 1048576}') MiB stored"
  }

  # ---------------------------------------------------------------- one timed recovery
  declare -A RP_CMD RP_END RP_WHAT
  RP_CMD[pk]="$BIN/wal-fetch --config $C/replay.toml %f %p"
  RP_CMD[pk-p0]="$BIN/wal-fetch --config $C/replay.toml --prefetch 0 %f %p"
  RP_END[pk]="$BIN/wal-fetch --config $C/replay.toml --prefetch-cleanup"; RP_END[pk-p0]=${RP_END[pk]}
  RP_CMD[pgbr-sync]="pgbackrest --config=$RA/pgbr/replay-sync.conf --stanza=replay --pg1-path=$RD archive-get %f %p"
  RP_CMD[pgbr-async]="pgbackrest --config=$RA/pgbr/replay-async.conf --stanza=replay --pg1-path=$RD archive-get %f %p"
  RP_CMD[cp]="cp $STAGE/%f %p"
  RP_WHAT[pk]="pitrkit wal-fetch, prefetch 8 (default)"; RP_WHAT[pk-p0]="pitrkit wal-fetch --prefetch 0"
  RP_WHAT[pgbr-sync]="pgBackRest archive-get, sync"; RP_WHAT[pgbr-async]="pgBackRest archive-get, async (process-max=2)"
  RP_WHAT[cp]="reference: cp of the raw segments from a local directory (replay with next to free fetching)"
  has_wl distance && for d in $DISTANCES; do   # the distance workload's variants: the same repositories through the latency proxy
    sfx=$([ "$d" = 0 ] || echo "@$d")
    mkconf replay-d$d "$S3R/replay" plain "http://127.0.0.1:$(dist_port http "$d")"
    RP_CMD[pk$sfx]="$BIN/wal-fetch --config $C/replay-d$d.toml %f %p"
    RP_END[pk$sfx]="$BIN/wal-fetch --config $C/replay-d$d.toml --prefetch-cleanup"
    RP_WHAT[pk$sfx]="pitrkit wal-fetch, prefetch 8 (default), $([ "$d" = 0 ] && echo loopback || echo "${d} ms RTT") to S3"
    { s3_lines59 /ra-pgbr59-replay "$d"; ASYNC_LINES replay59-d$d; } | pgbr_conf replay59-async-d$d
    RP_CMD[pgbr59-async$sfx]="$PGBR_NEW --config=$RA/pgbr/replay59-async-d$d.conf --stanza=replay --pg1-path=$RD archive-get %f %p"
    RP_WHAT[pgbr59-async$sfx]="pgBackRest 2.59.1 archive-get, async (process-max=2), $([ "$d" = 0 ] && echo loopback || echo "${d} ms RTT") to S3"
  done
  rp_stop() { [ ! -f "$RD/postmaster.pid" ] || rp_ctl -D "$RD" -w -m immediate stop >/dev/null 2>&1 || true; }
  replay_prep() {  # replay_prep VARIANT: a fresh copy of the base backup, set up for recovery
    local v=$1 e=${RP_END[$1]:-}
    rp_stop; bash -c ". $RA/lib.sh; wait_async"
    rm -rf "$RD" && cp -a "$BASE" "$RD" && chown -R "$PGUSER_OS": "$RD" && chmod 700 "$RD" || return 1
    { echo; echo "# ---- run-all.sh replay: $v ----"; echo "port = $REPLAY_PORT"; echo "archive_mode = off"
      echo "restore_command = '${RP_CMD[$v]//\'/\'\'}'"
      [ -z "$e" ] || echo "recovery_end_command = '${e//\'/\'\'}'"
      echo "recovery_target_timeline = 'latest'"; echo "recovery_target_action = 'promote'"; } >> "$RD/postgresql.conf"
    runuser -u "$PGUSER_OS" -- touch "$RD/recovery.signal"
    rm -rf "$RA/pgbr/spool-replay"* && install -d -o "$PGUSER_OS" "$RA/pgbr/spool-replay" && \
      for d in $DISTANCES; do install -d -o "$PGUSER_OS" "$RA/pgbr/spool-replay59-d$d"; done
    sync
  }
  replay_once() {  # replay_once VARIANT RUN: prints the seconds; a line in runs.tsv; rc 1 if it failed
    local v=$1 i=$2 log=$RP/log/$1.$2.log t0 t1 st= el why= res lsn rows ok nrest lfd l= buf= n=0 near=0
    replay_prep "$v" || { echo "prepare failed"; return 1; }
    install -o "$PGUSER_OS" -m 600 /dev/null "$log"; exec {lfd}<"$log"
    t0=$EPOCHREALTIME
    (cd "$RP" && echo "$BASHPID" > "$CGL/cgroup.procs" && exec runuser -u "$PGUSER_OS" -- "$PGBIN/pg_ctl" -D "$RD" -l "$log" -W start >/dev/null) \
      || { echo "pg_ctl start failed"; return 1; }
    # psql every 50 ms once the log says redo is done, every second before (a connection costs
    # ~20 ms of CPU, half of it in a backend inside the measured cgroup); the log is read
    # with the read builtin, partial lines kept for the next round
    while :; do
      if [ "$near" = 0 ]; then
        while IFS= read -r l <&"$lfd"; do buf+=$l; case $buf in *"redo done at"*|*"archive recovery complete"*) near=1 ;; esac; buf=; done
        buf+=$l
      fi
      if [ "$near" = 1 ] || [ $((n % 20)) = 0 ]; then
        st=$(rp_q "select pg_is_in_recovery()" 2>/dev/null) || st=
        t1=$EPOCHREALTIME
        [ "$st" != f ] || break
      fi
      t1=$EPOCHREALTIME; n=$((n + 1))
      el=$(( ${t1%.*} - ${t0%.*} ))
      if [ "$el" -ge "$REPLAY_TIMEOUT" ]; then why="still in recovery after ${el} s"; break; fi
      if [ "$el" -ge 2 ] && [ ! -f "$RD/postmaster.pid" ]; then why="the server exited: $(grep -E 'FATAL|PANIC' "$log" | tail -1)"; break; fi
      sleep 0.05
    done
    exec {lfd}<&-
    el=$(awk "BEGIN{printf \"%.3f\", $t1 - $t0}")
    if [ -z "$why" ]; then   # untimed: did it replay everything?
      res=$(rp_q "select pg_last_wal_replay_lsn(), pg_last_wal_replay_lsn() >= '$RP_LSN'::pg_lsn, (select count(*) from pgbench_history)" 2>&1 | tr '|' ' ') || res="query failed: $res"
      read -r lsn ok rows <<<"$res"
      nrest=$(grep -c 'restored log file "[0-9A-F]\{24\}" from archive' "$log")
      [ "$ok" = t ] && [ "$rows" = "$RP_ROWS" ] && [ "$nrest" -ge "$RP_N" ] \
        || why="replayed to $lsn (source: $RP_LSN), $rows of $RP_ROWS pgbench_history rows, $nrest of $RP_N segments restored"
    fi
    rp_stop; bash -c ". $RA/lib.sh; wait_async"
    cp "$log" "$RPR/$v.postgres.log" 2>/dev/null || true
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$v" "$i" "$el" "${lsn:--}" "${rows:--}" "${nrest:--}" "${why:-ok}" >> "$RPR/runs.tsv"
    if [ -n "$why" ]; then echo "$why"; return 1; fi
    echo "$el"
  }

  if replay_source && replay_load; then
    # the runs interleaved (run 1 of every variant, then run 2, ...), so that drift and other work
    # on the machine spread over all variants; CPU and S3-side ticks summed per variant
    printf 'variant\trun\tseconds\treplay_lsn\thistory_rows\trestored\tcheck\n' > "$RPR/runs.tsv"
    printf 'variant\twhat\trestore_command\trecovery_end_command\n' > "$RPR/commands.tsv"
    declare -A RP_T RP_CG RP_SRV RP_BAD
    rpv=()
    for v in $RP_VARIANTS; do
      [ -n "${RP_CMD[$v]:-}" ] || { fail "replay: unknown variant $v"; continue; }
      rpv+=("$v"); RP_T[$v]= RP_CG[$v]=0 RP_SRV[$v]=0 RP_BAD[$v]=
      printf '%s\t%s\t%s\t%s\n' "$v" "${RP_WHAT[$v]}" "${RP_CMD[$v]}" "${RP_END[$v]:--}" >> "$RPR/commands.tsv"
      say "[replay $v] restore_command = '${RP_CMD[$v]}'"
    done
    cg_reset
    for i in $(seq 1 "$RUNS"); do
      for v in "${rpv[@]}"; do
        [ -z "${RP_BAD[$v]}" ] || continue
        wait_idle
        c0=$(cg_usage_ns) s0=$(srv_ticks $SRV_PIDS)
        if out=$(replay_once "$v" "$i"); then RP_T[$v]+=" $out"; say "[replay $v] run $i/$RUNS: $out s to replay $RP_N segments"
        else RP_BAD[$v]="FAILED (run $i: $out)"; fail "replay $v: run $i: $out"; fi
        RP_CG[$v]=$(( RP_CG[$v] + $(cg_usage_ns) - c0 )); RP_SRV[$v]=$(( RP_SRV[$v] + $(srv_ticks $SRV_PIDS) - s0 ))
      done
    done
    cg_drain 0 >/dev/null; rmdir "$CGL" 2>/dev/null || true
    for v in "${rpv[@]}"; do
      python3 - "$RPR/replay.tsv" "$v" "${RP_WHAT[$v]}" "$RP_N" "${RP_CG[$v]}" "${RP_SRV[$v]}" \
        "${RP_BAD[$v]:-ok: every run replayed to $RP_LSN, $RP_ROWS pgbench_history rows, $RP_N segments restored}" ${RP_T[$v]} <<'PY'
import os, statistics, sys
out, name, what, nseg, cg, srv, verify = sys.argv[1:8]
t = [float(x) for x in sys.argv[8:]]
nseg, runs = int(nseg), len(t)
ok = verify.startswith("ok") and runs > 0
med = statistics.median(t) if ok else None
tick = os.sysconf("SC_CLK_TCK")
row = dict(name=name, what=what, median_s=f"{med:.2f}" if ok else "-", min_s=f"{min(t):.2f}" if ok else "-",
           max_s=f"{max(t):.2f}" if ok else "-", runs=str(runs), seg_per_s=f"{nseg / med:.2f}" if ok else "-", segments=str(nseg),
           cpu_ms_per_seg=f"{int(cg) / 1e6 / runs / nseg:.1f}" if ok else "-",
           server_cpu_ms_per_seg=f"{1000 * int(srv) / tick / runs / nseg:.1f}" if ok else "-",
           times=" ".join(f"{x:.2f}" for x in t), verify=verify)
new = not os.path.exists(out)
with open(out, "a") as fh:
    if new: fh.write("\t".join(row) + "\n")
    fh.write("\t".join(row.values()) + "\n")
print("  ".join(f"{k}={v}" for k, v in row.items()), file=sys.stderr)
PY
    done
  else
    fail "replay: source cluster or repositories (see $RPR and $RP/log)"
  fi
  rp_stop
  [ ! -f "$SRC/postmaster.pid" ] || rp_ctl -D "$SRC" -m immediate stop >/dev/null 2>&1 || true
fi

# ================================================================ 3: sustained pgbench
if has_wl sustained; then
  for t in $SUSTAIN_TARGETS; do
    if [ $t = local ]; then
      pkreset="rm -rf $RA/repo/sus-pk-local && install -d -o $PGUSER_OS $RA/repo/sus-pk-local"; pksize="dir_bytes $RA/repo/sus-pk-local/wal"
      pbreset="rm -rf $RA/pgbr-repo-sus-local && install -d -o $PGUSER_OS $RA/pgbr-repo-sus-local"; pbsize="dir_bytes $RA/pgbr-repo-sus-local/archive/main"
    else
      pkreset=". $PEERS/common.sh; s3_rm_prefix $S3R/sus-pk-s3/"; pksize=". $PEERS/common.sh; s3_bytes $S3R/sus-pk-s3/wal/"
      pbreset=". $PEERS/common.sh; s3_rm_prefix s3://$S3_BUCKET/ra-pgbr-sus-s3/"; pbsize=". $PEERS/common.sh; s3_bytes s3://$S3_BUCKET/ra-pgbr-sus-s3/archive/main/"
    fi
    PBS="pgbackrest --config=$RA/pgbr/sus-$t.conf --stanza=main"
    pbreset+=" && rm -rf $RA/pgbr/spool-sus-$t && install -d -o $PGUSER_OS $RA/pgbr/spool-sus-$t && runuser -u $PGUSER_OS -- $PBS stanza-create >/dev/null"
    wait_idle
    logrun sustained bash "$BENCH_DIR/sustained.sh" "pitrkit-$t" "$BIN/wal-push --config $C/sus-pk-$t.toml %p" "$pkreset" "$pksize" || fail "sustained pitrkit-$t"
    wait_idle
    logrun sustained bash "$BENCH_DIR/sustained.sh" "pgbr-async-$t" "$PBS archive-push %p" "$pbreset" "$pbsize" || fail "sustained pgbr-async-$t"
    printf '%s\t%s\n' "pitrkit-$t" "$BIN/wal-push --config $C/sus-pk-$t.toml %p" "pgbr-async-$t" "$PBS archive-push %p" >> "$RESULTS/sustained-commands.tsv"
  done
  set_archive "$ORIG_ARCHIVE"
fi

# ================================================================ 4: base backup (backup-bench.sh)
if has_wl backup; then
  wait_idle
  say "backup-bench.sh (pgbench workload)"
  logrun backup env RUNS="$RUNS" WORKLOADS=pgbench VARIANTS="pitrkit-local pitrkit-s3 pgbr-full-zst" PITRKIT_BIN="$BIN" \
    RESULTS="$RESULTS/backup" OUT="$RESULTS/backup/BACKUP-BENCHMARKS.md" bash "$BENCH_DIR/backup-bench.sh" || fail "backup-bench.sh"
  set_archive "$ORIG_ARCHIVE"
fi

# ================================================================ 5: bb-push / bb-restore, plain vs encrypted
if has_wl bbenc; then
  mkdir -p "$RESULTS/bbenc"
  for v in bb-plain bb-enc; do
    repo=$RA/repo/$v
    idconf=$C/$v.toml; [ $v = bb-enc ] && idconf=$C/bb-enc-id.toml
    set_archive "$BIN/wal-push --config $C/$v.toml %p"
    wait_idle
    logrun bbenc env RUN_AS="$PGUSER_OS" RESULTS="$RESULTS/bbenc" \
      BACKUP_CMD="$BIN/bb-push --config $C/$v.toml --pgdata $PGDATA" \
      BACKUP_PREPARE="rm -rf $repo && install -d -o $PGUSER_OS $repo" \
      BACKUP_SIZE_CMD="find $repo -path $repo/wal -prune -o -type f -printf '%s\n' | awk '{s+=\$1} END{print s+0}'" \
      RESTORE_CMD="$BIN/bb-restore --config $idconf --pgdata $BENCH_ROOT/pgrestore --target-immediate --archive-mode off" \
      "$PEERS/backup-bench.sh" "$v" || fail "bbenc $v"
    printf '%s\t%s\t%s\n' "$v" "$BIN/bb-push --config $C/$v.toml --pgdata $PGDATA" "$BIN/bb-restore --config $idconf --pgdata $BENCH_ROOT/pgrestore --target-immediate --archive-mode off" >> "$RESULTS/bbenc/commands.tsv"
  done
  grep -q '"encryption"' "$RA/repo/bb-enc/pitrkit.json" 2>/dev/null && echo "bb-enc repository is encrypted: $(grep -o '"encryption"[^,}]*' "$RA/repo/bb-enc/pitrkit.json")" >> "$RESULTS/bbenc/check.txt" \
    || echo "bb-enc repository NOT marked encrypted" >> "$RESULTS/bbenc/check.txt"
  set_archive "$ORIG_ARCHIVE"
fi

# ---------------------------------------------------------------- encryption sanity: the repos say so
for r in "$RA/repo/pk-local-enc"; do
  [ -f "$r/pitrkit.json" ] && echo "$(basename "$r"): $(grep -o '"encryption"[^,}]*' "$r/pitrkit.json" || echo 'no encryption field')" >> "$RESULTS/enc-check.txt"
done
fact "load after" "$(cut -d' ' -f1-3 /proc/loadavg)"
fact "run time" "$((SECONDS - T_START)) s"
[ "$(stat -c %Y "$PITRKIT_BIN/wal-push")" = "$(stat -c %Y "$BIN/wal-push")" ] || fact "note" "the binaries in $PITRKIT_BIN changed during the run (this run used the copy taken at its start)"

# ---------------------------------------------------------------- report
export OUT RA BIN C GZIP_AWS_RUNS
python3 "$BENCH_DIR/report-all.py" "$RESULTS" "$BENCH_DIR/previous-run.md" > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
cp "$OUT" "$RESULTS/BENCHMARKS.md"
say "wrote $OUT in $((SECONDS - T_START)) s (raw results: $RESULTS)"
if [ "${#FAILED[@]}" -gt 0 ]; then say "FAILED: ${FAILED[*]}"; exit 1; fi
