#!/usr/bin/env bash
# Call an archive_command / restore_command the way PostgreSQL does, from a (fake) data
# directory: cwd = DATADIR, one `/bin/sh -c` per segment, in order, stop at the first
# non-zero exit.
#
#   pgloop.sh push    DATADIR 'wal-push … %p'       # %p = pg_wal/<seg>, %f = <seg>
#   pgloop.sh restore DATADIR 'wal-fetch … %f %p'   # %p = pg_wal/RECOVERYXLOG
#
# push:    after each success pg_wal/archive_status/<seg>.ready is renamed to <seg>.done,
#          as PostgreSQL's archiver does (DATADIR/pg_wal holds the segments and the .ready
#          files; run-all.sh prepares it).
# restore: after each success pg_wal/RECOVERYXLOG must exist; it is moved to
#          $VERIFY_DIR/<seg> (compared with the walset afterwards, untimed) or removed.
#          $END_CMD, if set, runs once at the end (PostgreSQL's recovery_end_command).
# Segments: the 24-hex-digit files of $WALSET in name order, at most $NSEG.
# $CALL_LOG (optional): one line per call "<seg> <rc> <start> <end>" (EPOCHREALTIME), and
# the calls' stdout in $CALL_LOG.out (wal-push's JSON lines). Both are truncated first, so
# after a hyperfine run they hold the last run.
set -u
mode=$1 dir=$2 cmd=$3
: "${WALSET:=/tmp/peerbench/walset}" "${NSEG:=64}" "${CALL_LOG:=}" "${VERIFY_DIR:=}" "${END_CMD:=}"
cd "$dir" || { echo "pgloop: no directory $dir" >&2; exit 2; }
out=/dev/null
if [ -n "$CALL_LOG" ]; then : > "$CALL_LOG"; out=$CALL_LOG.out; : > "$out"; fi
P='%p' F='%f'
n=0
for path in "$WALSET"/*; do
  f=${path##*/}
  [[ $f =~ ^[0-9A-F]{24}$ ]] || continue
  [ "$n" -lt "$NSEG" ] || break
  case $mode in
    push)    p=pg_wal/$f ;;
    restore) p=pg_wal/RECOVERYXLOG ;;
    *) echo "pgloop: mode must be push or restore" >&2; exit 2 ;;
  esac
  c=${cmd//"$P"/$p}; c=${c//"$F"/$f}
  t0=$EPOCHREALTIME
  /bin/sh -c "$c" >> "$out"
  rc=$?
  t1=$EPOCHREALTIME
  [ -z "$CALL_LOG" ] || echo "$f $rc $t0 $t1" >> "$CALL_LOG"
  [ "$rc" -eq 0 ] || { echo "pgloop: command failed (rc=$rc) for $f: $c" >&2; exit 1; }
  case $mode in
    push) mv "pg_wal/archive_status/$f.ready" "pg_wal/archive_status/$f.done" ;;
    restore)
      [ -f pg_wal/RECOVERYXLOG ] || { echo "pgloop: exit 0 but no pg_wal/RECOVERYXLOG for $f: $c" >&2; exit 1; }
      if [ -n "$VERIFY_DIR" ]; then mv pg_wal/RECOVERYXLOG "$VERIFY_DIR/$f"; else rm -f pg_wal/RECOVERYXLOG; fi ;;
  esac
  n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "pgloop: no segments in $WALSET" >&2; exit 1; }
if [ "$mode" = restore ] && [ -n "$END_CMD" ]; then
  /bin/sh -c "$END_CMD" >> "$out" || { echo "pgloop: end command failed: $END_CMD" >&2; exit 1; }
fi
exit 0
