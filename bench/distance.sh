# The distance workload (issue 18, part 4: the bench at real distance). Sourced by run-all.sh when
# WORKLOADS has `distance`; it uses run-all.sh's helpers (timeloop, mkconf, pgbr_conf, s3_lines,
# s3_lines59, ASYNC_LINES, dist_port, fail, say) and globals, and is not meant to run on its own.
#
# For each walset of WALSETS and each round-trip time D of DISTANCES (ms), the archive loop and the
# restore loop of the `wal` workload (PostgreSQL's way of calling archive_command / restore_command,
# RUNS hyperfine runs, medians; every restored segment compared byte for byte with the walset) for
# each tool of DIST_TOOLS, all at zstd level 3, all against the same s3s-fs:
#   pk              pitrkit wal-push / wal-fetch, default settings (look-ahead, prefetch)
#   pk-enc          the same, encrypted (age recipient / identity)
#   pgbr59-sync     pgBackRest 2.59.1 ($PGBR_NEW), plain http to S3
#   pgbr59-async    the same, archive-async=y, process-max=2, spool, archive-get-queue-max=2GiB
#   pgbr245-sync    Debian's pgBackRest 2.45 (https only: through the peers' socat TLS front)
#   pgbr245-async   the same, async
#   walrus          wal-rus 0.4.1 ($WALRUS), WALG_COMPRESSION_METHOD=zstd WALG_COMPRESSION_LEVEL=3,
#                   its default upload / download concurrency (4)
# At D = 0 every tool talks to s3s-fs (or the TLS front) directly; at D > 0 through
# bench/latency-proxy.py --rtt-ms D (the TLS front's proxy sits in front of it, so pgBackRest 2.45's
# TLS handshakes cross the distance too).
#
# Walsets: fpi = the first DIST_NSEG segments of the peers' walset (pgbench with full-page images,
# ~12:1 with zstd -3); real = bench/make-walset-real.sh (~3.5:1), made once in
# $BENCH_ROOT/walset-real and kept (delete it to make a new one).
# Results: $RESULTS/distance/{wal.tsv,walsets.tsv,peers.tsv,commands.tsv,killed.tsv,*.json,*.log}.

DR=$RESULTS/distance
mkdir -p "$DR"
printf 'name\tkind\tuser\tcommand\tend_command\tprepare\n' > "$DR/commands.tsv"
printf 'tool\tversion\tstatus\n' > "$DR/peers.tsv"
printf 'walset\tdir\tsegments\tfirst\tbytes\tzstd3_bytes\tzstd3_ratio\tsystem_id\n' > "$DR/walsets.tsv"
declare -A DSKIP=()
peer() {  # peer TOOL BIN VERSION_ARGS...: record the peer's version, or that it is not installed
  local t=$1 b=$2; shift 2
  if [ -x "$b" ] || command -v "$b" >/dev/null 2>&1; then
    printf '%s\t%s\t%s\n' "$t" "$("$b" "$@" 2>&1 | head -1)" "ok: $(command -v "$b")" >> "$DR/peers.tsv"
  else
    DSKIP[$t]="not installed ($b; see ../shared/peers/README.md, \"Newest peers\")"
    printf '%s\t%s\t%s\n' "$t" "-" "${DSKIP[$t]}" >> "$DR/peers.tsv"
    say "[distance] $t: ${DSKIP[$t]}: skipped"
  fi
}
peer pgbr59 "$PGBR_NEW" version
peer pgbr245 pgbackrest version
peer walrus "$WALRUS" --version

D_SAVE=("$WALSET" "$WALSTUB" "$NSEG" "$SEGS" "$in_bytes")
for w in $WALSETS; do
  case $w in
    fpi)  ws=${D_SAVE[0]} ;;
    real) ws=$BENCH_ROOT/walset-real
          if [ "$(ls "$ws" 2>/dev/null | grep -cE '^[0-9A-F]{24}$')" -lt "$DIST_NSEG" ] || [ ! -f "$ws/pgdata-stub/global/pg_control" ]; then
            say "[distance] making the realistic walset ($DIST_NSEG segments): bench/make-walset-real.sh $ws"
            wait_idle
            logrun make-walset-real env NSEG="$DIST_NSEG" PEERS="$PEERS" bash "$BENCH_DIR/make-walset-real.sh" "$ws" \
              || { fail "distance: make-walset-real.sh"; continue; }
          fi ;;
    *)    fail "distance: unknown walset $w (WALSETS: fpi real)"; continue ;;
  esac
  WALSET=$ws WALSTUB=$ws/pgdata-stub NSEG=$DIST_NSEG
  SEGS=$(ls "$WALSET" | grep -E '^[0-9A-F]{24}$' | LC_ALL=C sort | head -n "$NSEG")
  [ "$(echo "$SEGS" | grep -c .)" -ge "$NSEG" ] || { fail "distance: walset $w has fewer than $NSEG segments"; continue; }
  in_bytes=$(for f in $SEGS; do stat -c %s "$WALSET/$f"; done | awk '{s+=$1} END{print s}')
  z=$(for f in $SEGS; do zstd -q -3 -c "$WALSET/$f" | wc -c; done | awk '{s+=$1} END{print s}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$WALSET" "$NSEG" "$(echo "$SEGS" | head -1)" "$in_bytes" "$z" \
    "$(awk "BEGIN{printf \"%.2f\", $in_bytes / $z}")" "$(sed 's/^Database system identifier: *//' "$WALSET/SYSTEM_ID" 2>/dev/null)" >> "$DR/walsets.tsv"
  say "[distance] walset $w: $NSEG segments of $WALSET, zstd -3 ratio $(awk "BEGIN{printf \"%.2f\", $in_bytes / $z}")"
  TL_LIB=$RA/lib-$w.sh TL_DIR=$DR
  { echo ". $RA/lib.sh"; echo "WALSET=$(q "$WALSET") WALSTUB=$(q "$WALSTUB")"; echo "SEGS=\"$(echo $SEGS)\""; } > "$TL_LIB"

  for d in $DISTANCES; do
    ep=http://127.0.0.1:$(dist_port http "$d") tgt="s3, ${d} ms RTT" p="d-$w-$d"
    for tool in $DIST_TOOLS; do
      n=$w.$d.$tool
      [ -z "${DSKIP[${tool%-*}]:-}" ] || continue
      case $tool in
        pk|pk-enc)
          if [ $tool = pk ]; then mkconf $p-pk "$S3R/$p-pk" plain "$ep"; pc=$C/$p-pk.toml fc=$C/$p-pk.toml
          else mkconf $p-pk-enc "$S3R/$p-pk-enc" push "$ep"; mkconf $p-pk-enc-id "$S3R/$p-pk-enc" fetch "$ep"; pc=$C/$p-pk-enc.toml fc=$C/$p-pk-enc-id.toml; fi
          timeloop "$n" push "$PGUSER_OS" "$tgt" "$BIN/wal-push --config $pc %p" "s3_rm_prefix $S3R/$p-$tool/" "s3_bytes $S3R/$p-$tool/wal/"
          timeloop "$n" restore "$PGUSER_OS" "$tgt" "$BIN/wal-fetch --config $fc %f %p" "true" "echo 0" "$BIN/wal-fetch --config $fc --prefetch-cleanup" ;;
        pgbr59-sync|pgbr59-async|pgbr245-sync|pgbr245-async)
          # The repository path is short on purpose: s3s-fs keeps a multipart upload's state in a file
          # named after the base64 of the whole key, and pgBackRest uploads a segment that compresses
          # to more than 5 MiB (the real walset's) in parts, under keys of 104 characters plus this
          # path: past 22 characters the name exceeds 255 bytes and s3s-fs answers 500.
          m=${tool#*-} cn=$p-$tool rp=d$d-${w:0:1}-${tool#pgbr}
          if [ "${tool%-*}" = pgbr59 ]; then lines=$(s3_lines59 "/$rp" "$d"); PB="$PGBR_NEW --config=$RA/pgbr/$cn.conf --stanza=wal"
          else lines=$(s3_lines "/$rp" "$(dist_port tls "$d")"); PB="pgbackrest --config=$RA/pgbr/$cn.conf --stanza=wal"; fi
          { echo "$lines"; if [ $m = async ]; then ASYNC_LINES "$cn"; else echo "archive-async=n"; fi; } | pgbr_conf "$cn"
          spool="rm -rf $RA/pgbr/spool-$cn && install -d -o $PGUSER_OS $RA/pgbr/spool-$cn"
          timeloop "$n" push "$PGUSER_OS" "$tgt" "$PB --pg1-path=$PUSHDIR archive-push %p" \
            "s3_rm_prefix s3://$S3_BUCKET/$rp/"$'\n'"$spool"$'\n'"mkdatadir $PUSHDIR push && runuser -u $PGUSER_OS -- $PB --pg1-path=$PUSHDIR --no-online stanza-create >/dev/null" \
            "s3_bytes s3://$S3_BUCKET/$rp/archive/wal/"
          timeloop "$n" restore "$PGUSER_OS" "$tgt" "$PB --pg1-path=$RESTDIR archive-get %f %p" "$spool" "echo 0" ;;
        walrus)
          envf=$C/$p-walrus.env
          printf '%s\n' "WALG_S3_PREFIX=s3://$S3_BUCKET/ra-$p-walrus" "AWS_ENDPOINT=$ep" "AWS_REGION=$S3_REGION" \
            "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY" "AWS_S3_FORCE_PATH_STYLE=true" \
            "WALG_COMPRESSION_METHOD=zstd" "WALG_COMPRESSION_LEVEL=3" > "$envf"
          chown "$PGUSER_OS": "$envf"; chmod 600 "$envf"
          timeloop "$n" push "$PGUSER_OS" "$tgt" "$WALRUS wal-push --config $envf %p" "s3_rm_prefix s3://$S3_BUCKET/ra-$p-walrus/" \
            "s3_bytes s3://$S3_BUCKET/ra-$p-walrus/"
          timeloop "$n" restore "$PGUSER_OS" "$tgt" "$WALRUS wal-fetch --config $envf %f %p" "true" "echo 0" ;;
        *) fail "distance: unknown tool $tool" ;;
      esac
    done
  done
done
WALSET=${D_SAVE[0]} WALSTUB=${D_SAVE[1]} NSEG=${D_SAVE[2]} SEGS=${D_SAVE[3]} in_bytes=${D_SAVE[4]}
unset TL_LIB TL_DIR
