#!/usr/bin/env bash
# Sustained archiving under load: the running peers cluster (setup-pg.sh) with one
# archive_command, `pgbench -c 8 -j 2 -T $SUSTAIN_SECONDS -M prepared` with
# synchronous_commit=off, sampled every second; one row appended to $RESULTS/sustained.tsv.
#
#   sustained.sh NAME 'ARCHIVE_CMD' 'RESET_CMD' 'SIZE_CMD'
#
# RESET_CMD (untimed, before) empties the target repository; SIZE_CMD prints its bytes after.
# Per second: the .ready files in pg_wal/archive_status (archive lag), pg_stat_archiver,
# the current WAL position, and the CPU of the archiver's process tree: the archiver is put
# in its own cpuacct cgroup (v1) for the run, so everything it starts (the shell, wal-push,
# pgbackrest and pgBackRest's detached async process) is counted, exactly; the archiver's
# own CPU (from /proc) is subtracted. After pgbench, sampling goes on until no .ready file
# is left (at most $DRAIN_MAX s): the drain time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${PEERS:?}" "${RESULTS:?}"
. "$PEERS/common.sh"
name=$1 acmd=$2 reset=$3 sizecmd=$4
: "${SUSTAIN_SECONDS:=60}" "${DRAIN_MAX:=180}" "${PGBENCH_ARGS:=-c 8 -j 2 -M prepared}"
out=$RESULTS/sustained; mkdir -p "$out"
say() { printf '[%(%H:%M:%S)T] sustained[%s]: %s\n' -1 "$name" "$*" >&2; }
q1() { psql_pg -Atc "$1"; }
ready() { find "$PGDATA/pg_wal/archive_status" -name '*.ready' 2>/dev/null | wc -l; }
CG=/sys/fs/cgroup/cpuacct/pitrkit-bench-archiver

set_archive() {
  psql_pg -v "cmd=$1" >/dev/null <<'EOF'
ALTER SYSTEM SET archive_command = :'cmd';
SELECT pg_reload_conf();
EOF
  sleep 1
  [ "$(q1 'show archive_command')" = "$1" ] || { say "archive_command did not take"; return 1; }
}
wait_no_ready() {  # wait_no_ready MAX_S -> 0 when no .ready is left
  local t=0
  while [ "$(ready)" -gt 0 ]; do [ "$t" -lt "$1" ] || return 1; sleep 1; t=$((t + 1)); done
}

say "reset: $reset"
bash -c ". $PEERS/common.sh; $reset" >&2
set_archive "$acmd"
say "archive_command = $acmd"
wait_no_ready 120 || say "WARNING: $(ready) .ready files left from before"
q1 "checkpoint" >/dev/null
q1 "select pg_stat_reset_shared('archiver')" >/dev/null
apid=$(q1 "select pid from pg_stat_activity where backend_type = 'archiver'")
[ -n "$apid" ] || { say "no archiver process"; exit 1; }
rmdir "$CG" 2>/dev/null || true
mkdir -p "$CG"
echo "$apid" > "$CG/cgroup.procs"
restore_cg() { echo "$apid" > /sys/fs/cgroup/cpuacct/cgroup.procs 2>/dev/null || true; rmdir "$CG" 2>/dev/null || true; }
trap restore_cg EXIT
own() { awk '{print $14 + $15}' "/proc/$apid/stat"; }   # the archiver's own CPU, ticks
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }

S=$out/$name.samples.tsv
printf 'phase\tt\tready\tarchived\tfailed\tlast_archived\tlsn_bytes\tcg_ns\tarchiver_ticks\n' > "$S"
sample() {  # sample PHASE
  local r row
  r=$(ready)
  row=$(q1 "select extract(epoch from clock_timestamp())::numeric(20,3), archived_count, failed_count, coalesce(last_archived_wal, '-'), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint from pg_stat_archiver" | tr '|' '\t')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$(cut -f1 <<<"$row")" "$r" "$(cut -f2 <<<"$row")" "$(cut -f3 <<<"$row")" \
    "$(cut -f4 <<<"$row")" "$(cut -f5 <<<"$row")" "$(cat "$CG/cpuacct.usage")" "$(own)" >> "$S"
}

busy0=$(busy)
sample start
say "pgbench $PGBENCH_ARGS -T $SUSTAIN_SECONDS (synchronous_commit=off)"
as_pg env PGOPTIONS='-c synchronous_commit=off' "$PGBIN/pgbench" -h "$PGSOCK" -p "$PGPORT" $PGBENCH_ARGS \
  -T "$SUSTAIN_SECONDS" -n postgres > "$out/$name.pgbench.log" 2>&1 &
bpid=$!
while kill -0 "$bpid" 2>/dev/null; do sleep 0.98; sample run; done
wait "$bpid" || { say "pgbench failed: $(tail -3 "$out/$name.pgbench.log")"; exit 1; }
sample end
busy1=$(busy)
t=0
while [ "$(ready)" -gt 0 ] && [ "$t" -lt "$DRAIN_MAX" ]; do sleep 0.98; sample drain; t=$((t + 1)); done
sample drained
left=$(ready)
restore_cg; trap - EXIT
bytes=$(bash -c ". $PEERS/common.sh; $sizecmd" 2>/dev/null || echo 0)
tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out/$name.pgbench.log" | head -1)

python3 - "$S" "$RESULTS/sustained.tsv" "$name" "$bytes" "${tps:-0}" "$left" "$busy0" "$busy1" <<'EOF'
import csv, os, statistics, sys
S, out, name, stored, tps, left = sys.argv[1:7]
b0, b1 = [list(map(int, x.split())) for x in sys.argv[7:9]]
rows = list(csv.DictReader(open(S), delimiter="\t"))
st = rows[0]; en = next(r for r in rows if r["phase"] == "end"); dr = rows[-1]
run = [r for r in rows if r["phase"] in ("run", "end")]
f = float
dt = f(en["t"]) - f(st["t"])
MiB = 2 ** 20
wal = (int(en["lsn_bytes"]) - int(st["lsn_bytes"])) / MiB
arch_run = int(en["archived"]) - int(st["archived"])
arch_all = int(dr["archived"]) - int(st["archived"])
ready = [int(r["ready"]) for r in run]
cpu_ns = int(dr["cg_ns"]) - int(st["cg_ns"])
own_s = (int(dr["archiver_ticks"]) - int(st["archiver_ticks"])) / os.sysconf("SC_CLK_TCK")
cpu_s = cpu_ns / 1e9 - own_s
cpu_run = (int(en["cg_ns"]) - int(st["cg_ns"])) / 1e9
drain = f(dr["t"]) - f(en["t"]) if int(left) == 0 else None
busy = 100 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
row = {
    "name": name, "seconds": f"{dt:.1f}", "tps": tps, "wal_MiB": f"{wal:.0f}", "wal_MiB_per_s": f"{wal / dt:.1f}",
    "wal_seg_per_s": f"{wal / 16 / dt:.2f}", "archived_run": str(arch_run), "archived_seg_per_s": f"{arch_run / dt:.2f}",
    "ready_max": str(max(ready)), "ready_mean": f"{statistics.mean(ready):.2f}", "ready_at_end": en["ready"],
    "drain_s": f"{drain:.1f}" if drain is not None else f">{f(dr['t']) - f(en['t']):.0f} ({left} left)",
    "archived_total": str(arch_all), "failed": str(int(dr["failed"]) - int(st["failed"])),
    "cpu_s": f"{cpu_s:.2f}", "cpu_run_s": f"{cpu_run:.2f}",
    "cpu_ms_per_MiB": f"{1000 * cpu_s / (arch_all * 16):.2f}" if arch_all else "-",
    "machine_busy_pct": f"{busy:.0f}", "stored_bytes": stored,
}
new = not os.path.exists(out)
with open(out, "a") as fh:
    if new: fh.write("\t".join(row) + "\n")
    fh.write("\t".join(row.values()) + "\n")
print("  ".join(f"{k}={v}" for k, v in row.items()))
EOF
