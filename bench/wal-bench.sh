#!/usr/bin/env bash
# WAL archive/restore benchmark: pitrkit (wal-push / wal-fetch) side by side with the
# peer tools, in one run, on the same real 16 MiB segments, and WAL-BENCHMARKS.md from it.
#
#   sudo bench/wal-bench.sh                      # full run: NSEG=64 segments, RUNS=3
#   NSEG=8 RUNS=1 bench/wal-bench.sh             # smoke run (numbers not for quoting)
#
# Environment (all optional):
#   NSEG=64 RUNS=3           segments per loop, hyperfine runs per variant (medians quoted)
#   PITRKIT_BIN=DIR          where wal-push and wal-fetch are (default: ../target/release)
#   PITRKIT_PUSH_ARGS=...    extra wal-push flags, e.g. '--compress-level 3' (default: none)
#   PEERS=DIR                the shared peer scripts (default: ../../shared/peers)
#   VARIANTS='...'           subset of: pitrkit-local pitrkit-s3 zstd-local gzip-local
#                            pgbr-posix-zst pgbr-s3-zst gzip-aws-s3
#   RESULTS=DIR              raw results (default: /tmp/peerbench/pitrkit-results/<time>)
#   OUT=FILE                 the report (default: WAL-BENCHMARKS.md next to this script;
#                            BENCHMARKS.md is written by run-all.sh)
#
# What it does: installs missing peers (apt/pip, as the peers README says), builds the
# walset once with setup-pg.sh (then stops the cluster: the WAL tests need none), starts
# s3s-fs and the TLS front for pgBackRest, times every variant with the peers'
# push-bench.sh (one /bin/sh -c per segment, as PostgreSQL calls archive_command /
# restore_command; restores verified byte for byte), measures the peak RSS of one call
# with /usr/bin/time -v, writes the report, and stops the servers it started.
# It never builds pitrkit: build the release binaries first.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT_DIR=$(cd "$BENCH_DIR/.." && pwd)
PEERS=${PEERS:-$(cd "$BENCH_DIR/../../shared/peers" && pwd)}
PITRKIT_BIN=${PITRKIT_BIN:-$ROOT_DIR/target/release}
PITRKIT_PUSH_ARGS=${PITRKIT_PUSH_ARGS:-}
OUT=${OUT:-$BENCH_DIR/WAL-BENCHMARKS.md}   # BENCHMARKS.md is run-all.sh's
NSEG=${NSEG:-64}
RUNS=${RUNS:-3}
ALL_VARIANTS="pitrkit-local pitrkit-s3 zstd-local gzip-local pgbr-posix-zst pgbr-s3-zst gzip-aws-s3"
VARIANTS=${VARIANTS:-$ALL_VARIANTS}
export NSEG RUNS PEERS

say() { printf '[%(%H:%M:%S)T] wal-bench: %s\n' -1 "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
has() { case " $VARIANTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

[ "$(id -u)" = 0 ] || die "run as root (the peer scripts use runuser and apt-get)"
[ -f "$PEERS/push-bench.sh" ] || die "peer scripts not found in $PEERS (set PEERS=)"
for v in $VARIANTS; do
  case " $ALL_VARIANTS " in *" $v "*) ;; *) die "unknown variant '$v' (known: $ALL_VARIANTS)" ;; esac
done
for b in wal-push wal-fetch; do
  [ -x "$PITRKIT_BIN/$b" ] || die "$PITRKIT_BIN/$b missing: build it (cargo build --release) or set PITRKIT_BIN"
done
PITRKIT_BIN=$(cd "$PITRKIT_BIN" && pwd)
# pitrkit on PATH for the loops; cargo's bin dir for s3s-fs
export PATH="$PITRKIT_BIN:$HOME/.cargo/bin:$PATH"
T_START=$SECONDS

# ---------------------------------------------------------------- peers, installed once
apt_missing=()
command -v pgbackrest >/dev/null || apt_missing+=(pgbackrest)
command -v hyperfine  >/dev/null || apt_missing+=(hyperfine)
command -v socat      >/dev/null || apt_missing+=(socat)
command -v zstd       >/dev/null || apt_missing+=(zstd)
command -v gzip       >/dev/null || apt_missing+=(gzip)
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
  say "installing (pip): ${pip_missing[*]}"
  python3 -m pip install -q "${pip_missing[@]}"
  hash -r
fi
if ! command -v s3s-fs >/dev/null; then
  say "installing s3s-fs 0.14.1 (cargo install, ~2 min; 0.17 needs a newer rustc)"
  cargo install s3s-fs@0.14.1 --features binary
fi

# ---------------------------------------------------------------- settings
USER_RESULTS=${RESULTS:-}
. "$PEERS/common.sh"        # BENCH_ROOT, WALSET, S3_*, AWS_* (local server only), as_pg, ...
: "${S3_TLS_PORT:=9443}"
export S3_TLS_PORT
# pitrkit reads only these; make sure nothing from the caller's environment leaks in
unset PITR_REPO PITR_CONFIG PITR_S3_URL_STYLE AWS_ENDPOINT_URL_S3 AWS_SESSION_TOKEN AWS_PROFILE
export AWS_ENDPOINT_URL=$S3_ENDPOINT AWS_REGION=$S3_REGION
if [ -z "$USER_RESULTS" ]; then
  RESULTS=$BENCH_ROOT/pitrkit-results/$(date -u +%Y%m%dT%H%M%SZ)   # fresh: one run, one set of rows
fi
export RESULTS
mkdir -p "$RESULTS"
say "results in $RESULTS; NSEG=$NSEG RUNS=$RUNS; variants: $VARIANTS"

S3_PIDF=$BENCH_ROOT/run/s3-$S3_PORT.pid
TLS_PIDF=$BENCH_ROOT/run/tls-$S3_TLS_PORT.pid
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
STARTED_S3=0 STARTED_TLS=0 STARTED_PG=0
cleanup() {
  local rc=$?
  [ "$STARTED_TLS" = 1 ] && "$PEERS/setup-s3.sh" tls-stop || true
  [ "$STARTED_S3" = 1 ] && "$PEERS/setup-s3.sh" stop || true
  if [ "$STARTED_PG" = 1 ] && [ -f "$PGDATA/postmaster.pid" ]; then "$PEERS/setup-pg.sh" stop >/dev/null || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stderr of a step goes to the terminal and to $RESULTS/<step>.steps.log (synchronously)
logrun() { local f=$1; shift; { "$@" 2>&1 1>&3 3>&- | tee -a "$RESULTS/$f.steps.log" >&2; } 3>&1; }

# ---------------------------------------------------------------- the walset (kept)
need=$(( NSEG > 64 ? NSEG : 64 ))   # never let a smoke run shrink the kept walset
have=$(ls "$WALSET" 2>/dev/null | grep -cE '^[0-9A-F]{24}$' || true)
if [ "$have" -lt "$need" ] || [ ! -f "$WALSTUB/global/pg_control" ]; then
  say "walset has $have of $need segments: running setup-pg.sh (pgbench scale 100, a few minutes)"
  STARTED_PG=1
  logrun setup-pg env NSEG="$need" "$PEERS/setup-pg.sh"
  "$PEERS/setup-pg.sh" stop >/dev/null   # the WAL tests need no running cluster
  STARTED_PG=0
fi
have=$(ls "$WALSET" | grep -cE '^[0-9A-F]{24}$')
[ "$have" -ge "$NSEG" ] || die "walset has only $have segments, NSEG=$NSEG"
FIRST_SEG=$(ls "$WALSET" | grep -E '^[0-9A-F]{24}$' | LC_ALL=C sort | head -1)

# ---------------------------------------------------------------- S3 server + TLS front
if has pitrkit-s3 || has pgbr-s3-zst || has gzip-aws-s3; then
  alive "$S3_PIDF" || STARTED_S3=1
  "$PEERS/setup-s3.sh" start >&2
  if has pgbr-s3-zst && ! alive "$TLS_PIDF"; then
    STARTED_TLS=1; "$PEERS/setup-s3.sh" tls-start
  fi
fi
S3PID=$(cat "$S3_PIDF" 2>/dev/null || true)

# ---------------------------------------------------------------- machine facts
fact() { printf '%s\t%s\n' "$1" "$2" >> "$RESULTS/machine.tsv"; }
ver() { "$@" 2>&1 | head -1 || true; }
: > "$RESULTS/machine.tsv"
fact "date (UTC)" "$(date -u '+%Y-%m-%d %H:%M')"
fact "nproc" "$(nproc)"
fact "CPU model" "$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
fact "memory" "$(free -g | awk '/^Mem:/{print $2 " GiB"}')"
fact "kernel" "$(uname -r)"
fact "OS" "$(. /etc/os-release && echo "$PRETTY_NAME")"
fact "PostgreSQL" "$(ver "$PGBIN/postgres" --version)"
fact "walset" "$have segments in $WALSET, PG_VERSION $(cat "$WALSTUB/PG_VERSION"), $(sed 's/^Database //' "$WALSET/SYSTEM_ID" 2>/dev/null | tr -s ' ' || echo '?')"
fact "pitrkit" "$(ver wal-push --version), git $(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT_DIR" diff --quiet HEAD -- . 2>/dev/null || echo ' (+uncommitted changes)'), binaries $PITRKIT_BIN (built $(date -u -r "$PITRKIT_BIN/wal-push" '+%Y-%m-%d %H:%M'))"
fact "pgBackRest" "$(ver pgbackrest version)"
fact "hyperfine" "$(ver hyperfine --version)"
fact "zstd" "$(ver zstd --version | tr -d '*' | xargs)"
fact "gzip" "$(ver gzip --version)"
fact "aws" "$(ver aws --version)"
fact "S3 server" "$(ver s3s-fs --version) on $S3_ENDPOINT (TLS front for pgBackRest: socat on :$S3_TLS_PORT)"
# other activity: machine CPU busy over 2 s, and the busiest processes then (top's 2nd sample)
activity() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat); sleep 2
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
  BUSY=$(echo "$a $b" | awk '{d = $4 - $2; if (d <= 0) d = 1; printf "%.0f", 100 * ($3 - $1) / d}')
  printf '%s%% CPU busy; load %s; top: %s' "$BUSY" "$(cut -d' ' -f1-3 /proc/loadavg)" \
    "$(top -b -n 2 -d 1 -w 200 | awk '/^ *PID/{n++; next} n==2 && NF>=12 && $9+0>=5 {printf "%s%s %s%%", (c++?", ":""), $12, $9}' | head -c 300)"
}
sync   # flush setup writes (pgbench load, apt) so the first variant does not pay for them
BIN_STAMP=$(stat -c %Y "$PITRKIT_BIN/wal-push" "$PITRKIT_BIN/wal-fetch" | tr '\n' ' ')
activity > "$RESULTS/activity-before.txt"   # not $(...): BUSY must reach this shell
fact "activity before" "$(cat "$RESULTS/activity-before.txt")"
[ "$BUSY" -lt 20 ] || say "WARNING: the machine is $BUSY% busy before the runs; numbers will be noisy"

FAILED=()

# ---------------------------------------------------------------- pitrkit
REPO_PARENT=$BENCH_ROOT/pitrkit-repo
mkdir -p "$REPO_PARENT"
REPO_LOCAL=$REPO_PARENT/local
REPO_S3=s3://$S3_BUCKET/pitrkit
PUSH_ARGS=${PITRKIT_PUSH_ARGS:+$PITRKIT_PUSH_ARGS }   # extra flags, with their trailing space
pb() {  # pb NAME VAR=... : one push-bench.sh variant, loop as root
  local name=$1; shift
  logrun "$name" env RUN_AS=root "$@" "$PEERS/push-bench.sh" "$name" || { FAILED+=("$name"); say "!! $name failed"; }
}
if has pitrkit-local; then
  pb pitrkit-local \
    ARCHIVE_CMD="wal-push --repo $REPO_LOCAL $PUSH_ARGS%p" \
    RESTORE_CMD="wal-fetch --repo $REPO_LOCAL %f %p" \
    PUSH_PREPARE="rm -rf $REPO_LOCAL && mkdir -p $REPO_PARENT" \
    SIZE_CMD=". $PEERS/common.sh; dir_bytes $REPO_LOCAL/wal"
fi
if has pitrkit-s3; then
  pb pitrkit-s3 SERVER_PID="$S3PID" \
    ARCHIVE_CMD="wal-push --repo $REPO_S3 $PUSH_ARGS%p" \
    RESTORE_CMD="wal-fetch --repo $REPO_S3 %f %p" \
    PUSH_PREPARE=". $PEERS/common.sh; s3_rm_prefix $REPO_S3/" \
    SIZE_CMD=". $PEERS/common.sh; s3_bytes $REPO_S3/wal/"
fi

# ---------------------------------------------------------------- peers (peers-wal.sh)
row_name() { case $1 in zstd-local) echo zstd3-local ;; pgbr-s3-zst) echo pgbr-s3tls-zst ;; *) echo "$1" ;; esac; }
for v in zstd-local gzip-local pgbr-posix-zst pgbr-s3-zst gzip-aws-s3; do
  has "$v" || continue
  n=$(row_name "$v")${NAME_SUFFIX:-}
  logrun "$n" "$PEERS/peers-wal.sh" "$v" || true
  # peers-wal.sh logs a failure and carries on; push-bench.sh logs a mismatch
  if grep -q -e "!! $n failed" -e "MISMATCH" "$RESULTS/$n.steps.log"; then FAILED+=("$n"); fi
done

# ---------------------------------------------------------------- peak RSS of one call
RSSD=$BENCH_ROOT/pitrkit-rss; rm -rf "$RSSD"; install -d -o "$PGUSER_OS" "$RSSD"
SEG=$WALSET/$FIRST_SEG
TIMEF=$RSSD/time.txt
TV="/usr/bin/time -v -o $TIMEF"
: > "$RESULTS/rss.tsv"
rss() {  # rss LABEL CMD...   (CMD runs /usr/bin/time -v -o $TIMEF around one tool call)
  local label=$1; shift
  rm -f "$TIMEF"
  if "$@" > "$RSSD/out" 2> "$RSSD/err"; then
    printf '%s\t%s\n' "$label" "$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$TIMEF")" >> "$RESULTS/rss.tsv"
  else
    say "rss: '$label' failed: $(tail -3 "$RSSD/err")"; FAILED+=("rss:$label")
  fi
}
if has pitrkit-local; then
  rss "wal-push --repo DIR ${PUSH_ARGS}SEG"    $TV wal-push --repo "$RSSD/repo" $PITRKIT_PUSH_ARGS "$SEG"
  rss "wal-fetch --repo DIR NAME DEST"         $TV wal-fetch --repo "$RSSD/repo" "$FIRST_SEG" "$RSSD/fetched"
fi
if has pitrkit-s3; then
  s3_rm_prefix "s3://$S3_BUCKET/pitrkit-rss/"
  rss "wal-push --repo s3://… ${PUSH_ARGS}SEG" $TV wal-push --repo "s3://$S3_BUCKET/pitrkit-rss" $PITRKIT_PUSH_ARGS "$SEG"
  rss "wal-fetch --repo s3://… NAME DEST"      $TV wal-fetch --repo "s3://$S3_BUCKET/pitrkit-rss" "$FIRST_SEG" "$RSSD/fetched-s3"
  s3_rm_prefix "s3://$S3_BUCKET/pitrkit-rss/"
fi
if has zstd-local; then
  rss "zstd -q -3 -o FILE SEG" $TV zstd -q -3 -f -o "$RSSD/seg.zst" "$SEG"
fi
PGBR_CONF=$BENCH_ROOT/pgbr/posix.conf
if has pgbr-posix-zst && [ -f "$PGBR_CONF" ]; then
  PB="pgbackrest --config=$PGBR_CONF --stanza=wal --repo1-path=$RSSD/pgbr-repo"
  install -d -o "$PGUSER_OS" "$RSSD/pgbr-repo"
  runuser -u "$PGUSER_OS" -- $PB --no-online stanza-create >/dev/null
  rss "pgbackrest --compress-type=zst archive-push SEG (posix)" runuser -u "$PGUSER_OS" -- $TV $PB --compress-type=zst archive-push "$SEG"
  rss "pgbackrest archive-get NAME DEST (posix)"                runuser -u "$PGUSER_OS" -- $TV $PB archive-get "$FIRST_SEG" "$RSSD/pgbr-fetched"
fi
rm -rf "$RSSD"
activity > "$RESULTS/activity-after.txt"   # not $(...): BUSY must reach this shell
fact "activity after" "$(cat "$RESULTS/activity-after.txt")"
if [ "$(stat -c %Y "$PITRKIT_BIN/wal-push" "$PITRKIT_BIN/wal-fetch" | tr '\n' ' ')" != "$BIN_STAMP" ]; then
  say "the pitrkit binaries changed during the run"; FAILED+=("binaries-rebuilt-during-run")
fi
fact "run time" "$((SECONDS - T_START)) s"

# ---------------------------------------------------------------- report
python3 "$PEERS/report.py" "$RESULTS" > "$RESULTS/report.md"
cat "$RESULTS"/*.steps.log > "$RESULTS/all-steps.txt" 2>/dev/null || true
INVOCATION="NSEG=$NSEG RUNS=$RUNS"
[ "$VARIANTS" = "$ALL_VARIANTS" ] || INVOCATION+=" VARIANTS='$VARIANTS'"
[ -z "$PITRKIT_PUSH_ARGS" ] || INVOCATION+=" PITRKIT_PUSH_ARGS='$PITRKIT_PUSH_ARGS'"
[ "$PITRKIT_BIN" = "$ROOT_DIR/target/release" ] || INVOCATION+=" PITRKIT_BIN=$PITRKIT_BIN"
INVOCATION+=" bench/wal-bench.sh"
export INVOCATION OUT FAILED_LIST="${FAILED[*]:-}" REPO_LOCAL REPO_S3 REPO_PARENT
python3 - "$RESULTS" <<'PY'
import csv, os, re, sys

res = sys.argv[1]
E = os.environ
nseg, runs = int(E["NSEG"]), int(E["RUNS"])

def tsv(kind):
    p = os.path.join(res, f"{kind}.tsv")
    out = {}
    if os.path.exists(p):
        for r in csv.DictReader(open(p), delimiter="\t"):
            out[r["name"]] = r          # a rerun's last row wins, as in report.py
    return out

push, rest = tsv("push"), tsv("restore")
facts = [l.rstrip("\n").split("\t", 1) for l in open(os.path.join(res, "machine.tsv")) if "\t" in l]
rss = [l.rstrip("\n").split("\t", 1) for l in open(os.path.join(res, "rss.tsv")) if "\t" in l]

# the exact commands, as push-bench.sh logged them: "[hh:mm:ss] [name] push: CMD"
cmds = {}
for line in open(os.path.join(res, "all-steps.txt"), errors="replace"):
    m = re.match(r"^\[[0-9:]+\] \[([^\]]+)\] (push|restore): (.*)$", line.rstrip("\n"))
    if m:
        cmds.setdefault(m.group(1), {})[m.group(2)] = m.group(3)

target = {"pitrkit-local": "local dir", "pitrkit-s3": "S3 (s3s-fs)", "zstd3-local": "local dir",
          "gzip-local": "local dir", "pgbr-posix-zst": "posix repo", "pgbr-s3tls-zst": "S3 (s3s-fs) via TLS front",
          "gzip-aws-s3": "S3 (s3s-fs)"}
def kind(n):
    return "s3" if "s3" in n else "local"

report = open(os.path.join(res, "report.md")).read().split("\n### Base backup")[0].rstrip()
report = report.replace("64 x 16 MiB", f"{nseg} x 16 MiB").replace("(64 seg)", f"({nseg} seg)")
report = report.replace("### WAL archive", "### All variants: WAL archive", 1)

L = []
w = L.append
w("# pitrkit WAL archiving benchmarks")
w("")
w("Generated by `bench/wal-bench.sh`; do not edit by hand, rerun it. pitrkit's `wal-push` / `wal-fetch`")
w("timed side by side with the peer tools in one run, with the peers' own scripts (`shared/peers/`:")
w("`push-bench.sh`, `walloop.sh`, `peers-wal.sh`, `report.py`) on the same real WAL segments.")
w("")
if nseg < 64 or runs < 3:
    w(f"> **Reduced run (NSEG={nseg}, RUNS={runs}): a smoke test of the script, not numbers to quote.**")
    w("> A full run is `bench/wal-bench.sh` (64 segments, 3 runs).")
    w("")
if E.get("FAILED_LIST"):
    w(f"> **Failed in this run:** {E['FAILED_LIST']} (see the logs in `{res}`).")
    w("")
w("## Machine")
w("")
w("| item | value |")
w("|---|---|")
for k, v in facts:
    w(f"| {k} | {v.replace('|', '/')} |")
w("")
w("## Method")
w("")
w(f"- The walset: {nseg} consecutive 16 MiB segments of pgbench OLTP WAL (`setup-pg.sh`, scale 100), in the page cache.")
w("- Each variant runs its archive_command once per segment, in order, each call its own `/bin/sh -c` with `%p`/`%f`")
w("  substituted (`walloop.sh`), as PostgreSQL does; then the restore_command the same way into an empty directory.")
w(f"- hyperfine times the whole loop {runs} time(s); medians are quoted. An untimed prepare step empties the target")
w("  before every push run (pitrkit: the local repository directory is removed, the S3 prefix deleted).")
w("- Every restored segment is compared byte for byte with the walset (a mismatch fails the variant).")
w("- pitrkit and the shell pipelines run as root; pgBackRest runs as `postgres` (it refuses root).")
w("- pgBackRest only speaks https to S3, so it goes through a socat TLS front to the same s3s-fs server.")
w("- Stored bytes: only the WAL objects (pitrkit `<repo>/wal/`, pgBackRest `archive/wal/15-1/`); ratio = input / stored.")
w("- Client CPU = hyperfine user+sys of the loop and its children; S3-server CPU from `/proc/PID/stat` of s3s-fs (and socat).")
w("- Peak RSS: `/usr/bin/time -v` around one call on the first segment, into an empty repository.")
w("- `wal-push` defaults: zstd level 3, compression threads = number of CPUs.")
w("")
w("## Commands")
w("")
w("```")
w(f"{E['INVOCATION']}")
w("```")
w("")
w("| variant | target | archive_command | restore_command |")
w("|---|---|---|---|")
for n in push:
    c = cmds.get(n, {})
    esc = lambda t: t.replace("|", "\\|")
    w(f"| {n} | {target.get(n, '')} | `{esc(c.get('push', '?'))}` | `{esc(c.get('restore', '-'))}` |")
w("")
w(f"pitrkit prepare steps: `rm -rf {E['REPO_LOCAL']} && mkdir -p {E['REPO_PARENT']}` (local), "
  f"`s3_rm_prefix {E['REPO_S3']}/` (S3). The pitrkit binaries are put first on PATH. S3 settings come from the")
w(f"environment: `AWS_ENDPOINT_URL={E['S3_ENDPOINT']}`, `AWS_REGION={E['S3_REGION']}`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` of the local server.")
w("")
w(f"## Results (medians of {runs} run(s))")
w("")
w(report)
w("")

def f(x):
    return float(x) if x not in (None, "", "-") else None

w("## pitrkit / peer ratios")
w("")
w("Throughput ratio = pitrkit seg/s ÷ peer seg/s (above 1: pitrkit is faster). Like-for-like rows (same kind of")
w("target: local vs local, S3 vs S3) are marked ✓; the others are given for completeness.")
w("")
w("| pitrkit variant | peer | like for like | push seg/s pitrkit | push seg/s peer | **push ratio** | restore seg/s pitrkit | restore seg/s peer | **restore ratio** |")
w("|---|---|:---:|---:|---:|---:|---:|---:|---:|")
pk = [n for n in push if n.startswith("pitrkit")]
peers = [n for n in push if not n.startswith("pitrkit")]
for p in pk:
    for q in sorted(peers, key=lambda q: (kind(q) != kind(p), q)):
        a, b = f(push[p]["seg_per_s"]), f(push[q]["seg_per_s"])
        ra = f(rest.get(p, {}).get("seg_per_s")); rb = f(rest.get(q, {}).get("seg_per_s"))
        pr = f"{a / b:.2f}" if a and b else "-"
        rr = f"{ra / rb:.2f}" if ra and rb else "-"
        w(f"| {p} | {q} | {'✓' if kind(p) == kind(q) else ''} | {a or '-'} | {b or '-'} | **{pr}** | {ra or '-'} | {rb or '-'} | **{rr}** |")
w("")
w("Stored bytes versus pgBackRest `compress-type=zst` (below 1: pitrkit stores less):")
w("")
w("| pitrkit variant | pitrkit stored bytes (ratio) | pgBackRest variant | pgBackRest stored bytes (ratio) | **pitrkit / pgBackRest bytes** |")
w("|---|---:|---|---:|---:|")
for p in pk:
    pair = {"local": "pgbr-posix-zst", "s3": "pgbr-s3tls-zst"}
    q = pair[kind(p)] if pair[kind(p)] in push else next((x for x in pair.values() if x in push), None)
    if q:
        a, b = f(push[p]["stored_bytes"]), f(push[q]["stored_bytes"])
        r = f"{a / b:.3f}" if a and b else "-"
        w(f"| {p} | {int(a or 0):,} ({push[p]['ratio']}) | {q} | {int(b or 0):,} ({push[q]['ratio']}) | **{r}** |")
w("")
if rss:
    w("## Peak RSS of one call")
    w("")
    w("| command | max RSS MiB |")
    w("|---|---:|")
    for label, kb in rss:
        label = label.replace("|", "\\|")
        w(f"| `{label}` | {int(kb) / 1024:.1f} |" if kb.strip().isdigit() else f"| `{label}` | ? |")
    w("")
w(f"Raw hyperfine JSON, logs and TSVs of this run: `{res}` (not kept in the repository).")
w("")
out = E["OUT"]
tmp = out + ".tmp"
open(tmp, "w").write("\n".join(L))
os.replace(tmp, out)
PY
say "wrote $OUT in $((SECONDS - T_START)) s"
if [ "${#FAILED[@]}" -gt 0 ]; then say "FAILED: ${FAILED[*]}"; exit 1; fi
