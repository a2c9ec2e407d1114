#!/usr/bin/env python3
"""BENCHMARKS.md from one bench/run-all.sh run: python3 report-all.py RESULTS_DIR [previous-run.md]"""
import csv, json, os, re, statistics, sys

res = sys.argv[1]
prev = sys.argv[2] if len(sys.argv) > 2 else None
E = os.environ
MiB = 2 ** 20


def P(*a):
    return os.path.join(res, *a)


def tsv(path):
    if not os.path.exists(path):
        return []
    return list(csv.DictReader(open(path), delimiter="\t"))


def last_by(rows, *keys):
    out = {}
    for r in rows:
        out[tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]] = r
    return out


def f(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def esc(t):
    return str(t).replace("|", "\\|")


def lines(path):
    return [l.rstrip("\n") for l in open(path)] if os.path.exists(path) else []


inv = (lines(P("invocation.txt")) or [""])[0]
params = {k: v.strip("'") for k, v in re.findall(r"(\w+)=('[^']*'|\S+)", inv)}
nseg = int(params.get("NSEG", "64"))
runs = int(params.get("RUNS", "3"))
facts = [l.split("\t", 1) for l in lines(P("machine.tsv")) if "\t" in l]
wal = tsv(P("wal.tsv"))
W = last_by(wal, "name", "kind")
cmds = last_by(tsv(P("commands.tsv")), "name", "kind")
failures = [l for l in lines(P("failures.txt")) if l.strip()]
busy = lines(P("busy.txt"))
sus = last_by(tsv(P("sustained.tsv")), "name")
sus_cmds = dict(l.split("\t", 1) for l in lines(P("sustained-commands.tsv")) if "\t" in l)
rss = tsv(P("rss.tsv"))
bb = last_by(tsv(P("backup", "pgbench", "backup.tsv")), "name")
bbr = last_by(tsv(P("backup", "pgbench", "bbrestore.tsv")), "name")
be = last_by(tsv(P("bbenc", "backup.tsv")), "name")
ber = last_by(tsv(P("bbenc", "bbrestore.tsv")), "name")
be_cmds = {l.split("\t")[0]: l.split("\t")[1:] for l in lines(P("bbenc", "commands.tsv")) if "\t" in l}
gzip_runs = int(params.get("GZIP_AWS_RUNS", E.get("GZIP_AWS_RUNS", "1")))
RPL = last_by(tsv(P("replay", "replay.tsv")), "name")
rp_src = [l.split("\t", 1) for l in lines(P("replay", "source.tsv")) if "\t" in l]
rp_cmds = tsv(P("replay", "commands.tsv"))
rp_runs = tsv(P("replay", "runs.tsv"))


def rp_(name, key="seg_per_s"):
    """a replay variant's number, None when it is missing or FAILED"""
    r = RPL.get(name)
    return f(r[key]) if r and r["verify"].startswith("ok") else None


def redo(name):
    """(elapsed s, startup process CPU s) of the redo in the variant's last run, from PostgreSQL's 'redo done' line"""
    for l in lines(P("replay", f"{name}.postgres.log")):
        m = re.search(r"redo done at .* CPU: user: ([\d.]+) s, system: ([\d.]+) s, elapsed: ([\d.]+) s", l)
        if m:
            return float(m.group(3)), float(m.group(1)) + float(m.group(2))
    return None


def w_(name, kind, key="seg_per_s"):
    r = W.get((name, kind))
    return f(r[key]) if r else None


# ---------------------------------------------------------------- pushed-ahead calls
def calls(name):
    """(per-call rows with wall ms and the wal-push JSON) of the last run of a push loop"""
    cl = P(f"{name}.push.calls")
    if not os.path.exists(cl):
        return []
    js = {}
    for l in lines(cl + ".out"):
        try:
            j = json.loads(l)
            js[j.get("name")] = j
        except ValueError:
            pass
    out = []
    for l in lines(cl):
        seg, rc, t0, t1 = l.split()
        out.append(dict(seg=seg, rc=int(rc), wall_ms=(float(t1) - float(t0)) * 1000, js=js.get(seg, {})))
    return out


ahead = {}
for n in ("pk-local", "pk-s3", "pk-local-enc", "pk-s3-enc", "pk-local-j1", "pk-s3-j1"):
    c = calls(n)
    if not c:
        continue
    pa = [x for x in c if x["js"].get("status") == "pushed-ahead"]
    other = [x for x in c if x["js"].get("status") != "pushed-ahead"]
    st = {}
    for x in c:
        st[x["js"].get("status", "?")] = st.get(x["js"].get("status", "?"), 0) + 1
    ahead[n] = dict(
        calls=len(c), statuses=st,
        pa_wall=statistics.median(x["wall_ms"] for x in pa) if pa else None,
        pa_wall_max=max(x["wall_ms"] for x in pa) if pa else None,
        pa_json=statistics.median(1000 * float(x["js"].get("seconds", 0)) for x in pa) if pa else None,
        other_wall=statistics.median(x["wall_ms"] for x in other) if other else None,
    )

# ---------------------------------------------------------------- targets
T = []   # (target, measured, verdict)


def verdict(ok):
    return "**holds** ✓" if ok else "**does not hold** ✗"


def ratio_txt(a, b, fmt="{:.2f}×"):
    return fmt.format(a / b) if a and b else "-"


pk_s3, pb_s3s, pb_s3a, gz = w_("pk-s3", "push"), w_("pgbr-s3-sync", "push"), w_("pgbr-s3-async", "push"), w_("gzip-aws", "push")
gz_note = ""
if gz is None:
    gz, gz_note = 64 / 93.64, " (gzip | aws not rerun: 93.64 s / 64 seg from the previous run, see below)"
elif gzip_runs < runs:
    gz_note = f" (gzip \\| aws: {gzip_runs} run)"
if pk_s3 and pb_s3s:
    T.append(("Archive to S3 ≥ 3× pgBackRest sync (seg/s)", f"{pk_s3:.2f} vs {pb_s3s:.2f} seg/s = {ratio_txt(pk_s3, pb_s3s)}", verdict(pk_s3 / pb_s3s >= 3)))
if pk_s3 and pb_s3a:
    T.append(("Archive to S3 ≥ 1.5× pgBackRest async (seg/s)", f"{pk_s3:.2f} vs {pb_s3a:.2f} seg/s = {ratio_txt(pk_s3, pb_s3a)}", verdict(pk_s3 / pb_s3a >= 1.5)))
elif pk_s3:
    T.append(("Archive to S3 ≥ 1.5× pgBackRest async (seg/s)", "pgBackRest async push did not complete (see failures)", "not measured"))
if pk_s3 and gz:
    T.append(("Archive to S3 ≥ 20× gzip \\| aws s3 cp", f"{pk_s3:.2f} vs {gz:.2f} seg/s = {ratio_txt(pk_s3, gz)}{gz_note}", verdict(pk_s3 / gz >= 20)))
for t, pk, pb in (("S3", "pk-s3", "pgbr-s3-sync"), ("local", "pk-local", "pgbr-posix-sync")):
    a, b = w_(pk, "push", "stored_bytes"), w_(pb, "push", "stored_bytes")
    if a and b:
        T.append((f"Stored bytes ≤ 1.1× pgBackRest zst ({t})", f"{int(a):,} vs {int(b):,} B = {a / b:.3f}×", verdict(a / b <= 1.1)))
for t in ("s3", "local"):
    a, b = sus.get(f"pitrkit-{t}"), sus.get(f"pgbr-async-{t}")
    if not (a and b):
        continue
    am, bm = int(a["ready_max"]), int(b["ready_max"])
    ac, bc = f(a["cpu_ms_per_MiB"]), f(b["cpu_ms_per_MiB"])
    meas = (f"pitrkit: max {am} / mean {a['ready_mean']} .ready, {a['cpu_ms_per_MiB']} ms CPU/MiB; "
            f"pgBackRest async: max {bm} / mean {b['ready_mean']} .ready, {b['cpu_ms_per_MiB']} ms CPU/MiB")
    less_cpu = ac is not None and bc is not None and ac < bc
    if bm > 2:
        ok = am <= 2
        why = (f"pgBackRest async exceeds 2 waiting, pitrkit {'stays within 2' if am <= 2 else 'does not'}"
               f"{'; pitrkit also uses less CPU per MiB' if less_cpu else ''}; drain after pgbench ended: pitrkit {a['drain_s']} s, pgBackRest {b['drain_s']} s")
    else:
        ok = am <= 2 and less_cpu
        why = "both keep up (≤ 2 waiting): CPU per archived MiB decides"
    T.append((f"Sustained pgbench ({t}): lag ≤ 2 where pgBackRest async falls behind, or both keep up and pitrkit uses less CPU/MiB",
              f"{meas}; {why}", verdict(ok)))
for t, pk, pbs, pba in (("S3", "pk-s3", "pgbr-s3-sync", "pgbr-s3-async"), ("local", "pk-local", "pgbr-posix-sync", "pgbr-posix-async")):
    a, p0, s_, as_ = w_(pk, "restore"), w_(pk + "-p0", "restore"), w_(pbs, "restore"), w_(pba, "restore")
    if not a:
        continue
    strict = t == "S3"
    lbl = "" if strict else " (local: informative, the targets name S3)"
    if p0:
        T.append((f"Recovery from {t}: prefetch ≥ 3× no prefetch{lbl}", f"{a:.2f} vs {p0:.2f} seg/s = {ratio_txt(a, p0)}", verdict(a / p0 >= 3)))
    if s_:
        T.append((f"Recovery from {t}: ≥ 3× pgBackRest archive-get sync{lbl}", f"{a:.2f} vs {s_:.2f} seg/s = {ratio_txt(a, s_)}", verdict(a / s_ >= 3)))
    if as_:
        T.append((f"Recovery from {t}: ≥ 1.5× pgBackRest archive-get async{lbl}", f"{a:.2f} vs {as_:.2f} seg/s = {ratio_txt(a, as_)}", verdict(a / as_ >= 1.5)))
if RPL:
    rp_n = next((r["segments"] for r in RPL.values()), "?")
    a = rp_("pk")
    for other, lbl, goal in (("pk-p0", "prefetch ≥ 3× no prefetch", 3), ("pgbr-sync", "≥ 3× pgBackRest archive-get sync", 3),
                             ("pgbr-async", "≥ 1.5× pgBackRest archive-get async", 1.5)):
        b = rp_(other)
        tgt = f"Recovery from S3 with replay (PostgreSQL, {rp_n} segments): {lbl}"
        if a and b:
            T.append((tgt, f"{RPL['pk']['median_s']} vs {RPL[other]['median_s']} s ({a:.2f} vs {b:.2f} seg/s) = {ratio_txt(a, b)}", verdict(a / b >= goal)))
        elif other in RPL or ("pk" in RPL and "replay" in params.get("WORKLOADS", "replay").split()):
            T.append((tgt, "; ".join(f"{n}: {RPL[n]['verify']}" for n in ("pk", other) if n in RPL and not rp_(n)) or "-", "not measured"))
if bb.get("pitrkit-local") and bb.get("pgbr-full-zst"):
    a, b = bb["pitrkit-local"], bb["pgbr-full-zst"]
    br, sr = f(a["src_MiB_per_s"]) / f(b["src_MiB_per_s"]), int(a["stored_bytes"]) / int(b["stored_bytes"])
    T.append(("Base backup ≥ 1.2× pgBackRest MiB/s, stored bytes ≤ pgBackRest (local)",
              f"{a['src_MiB_per_s']} vs {b['src_MiB_per_s']} MiB/s = {br:.2f}×; stored {sr:.3f}×", verdict(br >= 1.2 and sr <= 1)))
    ra_, rb_ = bbr.get("pitrkit-local"), bbr.get("pgbr-full-zst")
    if ra_ and rb_:
        rr = f(ra_["src_MiB_per_s"]) / f(rb_["src_MiB_per_s"])
        T.append(("Restore ≥ 1.2× pgBackRest MiB/s (local)", f"{ra_['src_MiB_per_s']} vs {rb_['src_MiB_per_s']} MiB/s = {rr:.2f}×", verdict(rr >= 1.2)))
for n in ("pk-local", "pk-s3"):
    a = ahead.get(n)
    if a and a["pa_wall"] is not None:
        T.append((f"A pushed-ahead call under 5 ms ({n.replace('pk-', '')})",
                  f"median {a['pa_wall']:.1f} ms wall per call (process start to exit, via /bin/sh; max {a['pa_wall_max']:.1f}), "
                  f"{a['pa_json']:.2f} ms inside wal-push; {a['statuses'].get('pushed-ahead', 0)} of {a['calls']} calls",
                  verdict(a["pa_wall"] < 5)))
for r in rss:
    if r["label"].startswith(("wal-push --jobs 8", "wal-fetch --prefetch 8", "wal-fetch prefetcher")) and r["max_rss_kib"].strip().isdigit():
        m = int(r["max_rss_kib"]) / 1024
        T.append((f"Peak RSS < 64 MiB: `{r['label']}`", f"{m:.1f} MiB ({r['note']})", verdict(m < 64)))
enc_rows = []
for lbl, plain, enc, kind in (("archive loop, local", "pk-local", "pk-local-enc", "push"), ("archive loop, S3", "pk-s3", "pk-s3-enc", "push"),
                              ("restore loop, local", "pk-local", "pk-local-enc", "restore"), ("restore loop, S3", "pk-s3", "pk-s3-enc", "restore")):
    a, b = w_(plain, kind, "median_s"), w_(enc, kind, "median_s")
    if a and b:
        enc_rows.append((lbl, a, b, f"{plain} / {enc}"))
if be.get("bb-plain") and be.get("bb-enc"):
    enc_rows.append(("bb-push of the pgbench cluster, local", f(be["bb-plain"]["median_s"]), f(be["bb-enc"]["median_s"]), "bb-plain / bb-enc"))
if ber.get("bb-plain") and ber.get("bb-enc"):
    enc_rows.append(("bb-restore of it (informative: not part of the target)", f(ber["bb-plain"]["median_s"]), f(ber["bb-enc"]["median_s"]), "bb-plain / bb-enc"))
for lbl, a, b, _ in enc_rows:
    T.append((f"Encryption ≤ 10% slower: {lbl}", f"{a:.2f} s plain, {b:.2f} s encrypted: {100 * (b / a - 1):+.1f}%", verdict(b / a <= 1.10)))

# ---------------------------------------------------------------- the document
L = []
w = L.append
w("# pitrkit benchmarks")
w("")
w("Generated by `bench/run-all.sh` (do not edit by hand: rerun it). pitrkit and its peers, measured in the same run on")
w("the same machine: WAL archiving and recovery as PostgreSQL calls `archive_command` / `restore_command`, "
  + ("recovery of\na real cluster with PostgreSQL replaying the WAL, " if RPL else "")
  + "sustained\narchiving under pgbench, base backup and restore, and the cost of encryption at rest.")
w("")
if nseg < 64 or runs < 3:
    w(f"> **Reduced run ({inv}): a smoke test of the scripts, not numbers to quote.** A full run is `bench/run-all.sh`.")
    w("")
if failures:
    w("> **Failures in this run** (details in the raw results):")
    for l in failures:
        w(f"> - {esc(l)}")
    w("")
mism = [r for r in wal if r["kind"] == "restore" and not r["verify"].startswith(f"{nseg} ok, 0 mismatched, 0 missing")]
w(f"Correctness: every restore loop's files were compared byte for byte with the walset "
  f"({'all variants: every segment identical' if wal and not mism else 'SEE BELOW: ' + '; '.join(r['name'] + ': ' + r['verify'] for r in mism) if wal else 'no WAL loops in this run'}); "
  f"{'no call failed' if not failures else 'failures are listed above'}.")
if RPL:
    bad = [n for n, r in RPL.items() if not r["verify"].startswith("ok")]
    w(f"Replay: every timed recovery had to reach the source's last LSN and its `pgbench_history` row count "
      f"({'every run of every variant did' if not bad else 'FAILED: ' + ', '.join(bad) + ' (see section 2b)'}).")
w("")
w(f"Raw results (hyperfine JSON, per-call logs, samples, TSVs): `{res}` (not kept in the repository).")
w("")
w("## Targets")
w("")
w("| target | measured | verdict |")
w("|---|---|---|")
for a, b, c in T:
    w(f"| {a} | {b} | {c} |")
w("")

# ---------------------------------------------------------------- distance (issue 18, part 4)
DW = last_by(tsv(P("distance", "wal.tsv")), "name", "kind")
d_walsets = tsv(P("distance", "walsets.tsv"))
d_peers = {r["tool"]: r for r in tsv(P("distance", "peers.tsv"))}
d_killed = [dict(zip(("name", "when", "count"), l.split("\t"))) for l in lines(P("distance", "killed.tsv")) if l.count("\t") == 2]
d_cmds = tsv(P("distance", "commands.tsv"))
d_failed = [l for l in failures if l.startswith(("distance", "replay")) or re.match(r"^(fpi|real)\.\d+\.", l)]
dists = params.get("DISTANCES", E.get("DISTANCES", "0 25")).split()
d_nseg = params.get("DIST_NSEG", "32")
D_TOOLS = [("pk", "pitrkit"), ("pk-enc", "pitrkit encrypted"), ("pgbr59-async", "pgBackRest 2.59.1 async"),
           ("pgbr59-sync", "pgBackRest 2.59.1 sync"), ("pgbr245", "pgBackRest 2.45 (Debian) sync / async"), ("walrus", "wal-rus 0.4.1")]
PEERS_OF = ("pgbr59-async", "pgbr59-sync", "pgbr245-sync", "pgbr245-async", "walrus")
PEER_LBL = {"pgbr59-async": "pgBackRest 2.59.1 async", "pgbr59-sync": "pgBackRest 2.59.1 sync", "pgbr245-sync": "pgBackRest 2.45 sync",
            "pgbr245-async": "pgBackRest 2.45 async", "walrus": "wal-rus 0.4.1"}


def dlbl(d):
    return "loopback" if d == "0" else f"{d} ms RTT"


def dv(w, d, tool, kind, key="seg_per_s"):
    r = DW.get((f"{w}.{d}.{tool}", kind))
    if not r:
        return None
    if kind == "restore" and not r["verify"].startswith(f"{d_nseg} ok, 0 mismatched, 0 missing"):
        return None
    return f(r[key])


def dcell(w, d, tool, kind, key="seg_per_s", fmt="{:.2f}"):
    base = tool.split("-")[0] if tool.startswith("pgbr") or tool == "walrus" else None
    if base and base in d_peers and d_peers[base]["status"].startswith("not installed"):
        return "not installed"
    r = DW.get((f"{w}.{d}.{tool}", kind))
    if not r:
        failed = any(l.startswith(f"{w}.{d}.{tool}.{kind}") for l in failures)
        return "FAILED" if failed else "-"
    v = dv(w, d, tool, kind, key)
    return fmt.format(v) if v is not None else "FAILED (verify)"


def best_peer(w, d, kind):
    c = [(dv(w, d, t, kind), t) for t in PEERS_OF]
    c = [x for x in c if x[0]]
    return max(c) if c else (None, None)


DT = []   # issue 18 targets
if DW:
    ws_names = [r["walset"] for r in d_walsets]
    for wn in ws_names:
        for d in dists:
            for kind, lbl in (("push", "Archive"), ("restore", "Restore loop")):
                a = dv(wn, d, "pk", kind)
                b, bt = best_peer(wn, d, kind)
                tgt = f"{lbl} ≥ 1.5× the best peer ({wn}, {dlbl(d)})"
                if a and b:
                    DT.append((tgt, f"{a:.2f} vs {b:.2f} seg/s ({PEER_LBL[bt]}) = {a / b:.2f}×", verdict(a / b >= 1.5)))
                else:
                    DT.append((tgt, f"pitrkit {a or '-'}, best peer {b or '-'}", "not measured"))
        if len(dists) > 1:
            a0, a1 = dv(wn, dists[0], "pk", "push"), dv(wn, dists[-1], "pk", "push")
            if a0 and a1:
                DT.append((f"pitrkit archive at {dlbl(dists[-1])} within 15% of its {dlbl(dists[0])} rate ({wn})",
                           f"{a1:.2f} vs {a0:.2f} seg/s = {100 * (a1 / a0 - 1):+.1f}%", verdict(a1 >= 0.85 * a0)))
        for d in dists[:1]:
            a, b = dv(wn, d, "pk", "push", "stored_bytes"), dv(wn, d, "pgbr59-sync", "push", "stored_bytes")
            if a and b:
                DT.append((f"Stored bytes ≤ 1.01× pgBackRest 2.59.1 ({wn})", f"{int(a):,} vs {int(b):,} B = {a / b:.3f}×", verdict(a / b <= 1.01)))
        for d in dists:
            for kind, lbl in (("push", "archive loop"), ("restore", "restore loop")):
                a, b = dv(wn, d, "pk", kind, "median_s"), dv(wn, d, "pk-enc", kind, "median_s")
                if a and b:
                    DT.append((f"Encryption ≤ 10% slower: {lbl} ({wn}, {dlbl(d)})", f"{a:.2f} s plain, {b:.2f} s encrypted: {100 * (b / a - 1):+.1f}%",
                               verdict(b / a <= 1.10)))
cpv = rp_("cp", "median_s") if RPL else None
for d in dists if DW or any("@" in n for n in RPL) else []:
    n = "pk" if d == "0" else f"pk@{d}"
    a = rp_(n, "median_s")
    if a and cpv:
        DT.append((f"Replay ≤ 1.1× the cp floor ({dlbl(d)}, {next(iter(RPL.values()))['segments']} segments)",
                   f"{a:.2f} s vs cp {cpv:.2f} s = {a / cpv:.2f}×", verdict(a / cpv <= 1.10)))
    elif n in RPL or "cp" in RPL:
        DT.append((f"Replay ≤ 1.1× the cp floor ({dlbl(d)})", "; ".join(f"{x}: {RPL[x]['verify']}" for x in (n, "cp") if x in RPL) or "-", "not measured"))

if DW:
    w("## Targets at real distance (issue 18)")
    w("")
    w("| target | measured | verdict |")
    w("|---|---|---|")
    for a, b, c in DT:
        w(f"| {a} | {b} | {c} |")
    w("")
    w(f"## 1d. At a distance: loopback and {', '.join(dlbl(d) for d in dists[1:]) or '-'} to S3, two walsets")
    w("")
    w("The archive and restore loops of section 1 (PostgreSQL's way of calling `archive_command` / `restore_command`, one")
    w(f"`/bin/sh -c` per segment from a fake data directory), {d_nseg} segments per walset, medians of {runs} runs, every tool at")
    w("zstd level 3 against the same s3s-fs. At loopback every tool talks to s3s-fs directly (pgBackRest 2.45 through the")
    w("peers' socat TLS front: it only speaks https); at a distance through `bench/latency-proxy.py --rtt-ms D`, which")
    w("delivers every chunk rtt/2 late in each direction and holds a new connection's first data one RTT (the TCP")
    w("handshake), so a new connection costs what it costs over a real link (for pgBackRest 2.45 the proxy sits in front of")
    w("the TLS front, so its TLS handshakes cross the distance too). CPU = everything the loop started, in its own cgroup:")
    w("detached processes (pgBackRest's async process, `wal-fetch --prefetch-daemon`, a detached `wal-push`) included; what")
    w("was still running a while after the loop was killed (see below). S3-side CPU = s3s-fs, the TLS front and the proxies.")
    w("")
    for r in d_walsets:
        w(f"- walset **{r['walset']}**: {r['segments']} segments of `{r['dir']}` (from {r['first']}), {int(r['bytes']) / MiB:.0f} MiB, "
          f"`zstd -3` of each segment: {int(r['zstd3_bytes']) / MiB:.1f} MiB = **{r['zstd3_ratio']}:1**; system id {r['system_id']}"
          + (" (the peers' pgbench walset, full-page images)" if r["walset"] == "fpi" else
             " (bench/make-walset-real.sh: pgbench plus updates and inserts of random hex text)" if r["walset"] == "real" else ""))
    for t, r in d_peers.items():
        w(f"- {t}: {esc(r['version'])} ({esc(r['status'])})")
    w("- The newest peers are not installed by the bench (no peer's code or build script is kept here): pgBackRest 2.59.1")
    w("  from its release/2.59.1 tag, built with meson/ninja, binary at `/opt/pgbackrest-2.59.1/bin/pgbackrest` (`PGBR_NEW=`);")
    w("  wal-rus with `cargo install wal-rus --version 0.4.1 --root /opt/wal-rus` (`WALRUS=`); recipes in")
    w("  `../shared/peers/README.md`, \"Newest peers\". A peer that is missing shows as \"not installed\".")
    w("")
    for r in d_walsets:
        ww = r["walset"]
        w(f"### walset {ww} ({r['zstd3_ratio']}:1): segments/s, median of {runs}")
        w("")
        w("| seg/s | " + " | ".join(l for _, l in D_TOOLS) + " | pitrkit ÷ best peer |")
        w("|---|" + "---:|" * (len(D_TOOLS) + 1))
        for kind, lbl in (("push", "archive"), ("restore", "restore_command loop")):
            for d in dists:
                cells = []
                for t, _ in D_TOOLS:
                    if t == "pgbr245":
                        cells.append(f"{dcell(ww, d, 'pgbr245-sync', kind)} / {dcell(ww, d, 'pgbr245-async', kind)}")
                    else:
                        c = dcell(ww, d, t, kind)
                        cells.append(f"**{c}**" if t == "pk" and c[0].isdigit() else c)
                a = dv(ww, d, "pk", kind)
                b, bt = best_peer(ww, d, kind)
                w(f"| {lbl}, {dlbl(d)} | " + " | ".join(cells) + f" | {f'{a / b:.2f}× ({PEER_LBL[bt]})' if a and b else '-'} |")
        w("")
        w(f"Client CPU ms per segment (the loop and everything it started, detached processes included):")
        w("")
        w("| CPU ms/seg | " + " | ".join(l for _, l in D_TOOLS) + " |")
        w("|---|" + "---:|" * len(D_TOOLS))
        for kind, lbl in (("push", "archive"), ("restore", "restore_command loop")):
            for d in dists:
                cells = []
                for t, _ in D_TOOLS:
                    if t == "pgbr245":
                        cells.append(f"{dcell(ww, d, 'pgbr245-sync', kind, 'cpu_ms_per_seg', '{:.1f}')} / {dcell(ww, d, 'pgbr245-async', kind, 'cpu_ms_per_seg', '{:.1f}')}")
                    else:
                        cells.append(dcell(ww, d, t, kind, "cpu_ms_per_seg", "{:.1f}"))
                w(f"| {lbl}, {dlbl(d)} | " + " | ".join(cells) + " |")
        w("")
        w("Stored bytes (WAL objects after the last archive run) and their ratio to pgBackRest 2.59.1's:")
        w("")
        w("| stored | " + " | ".join(l for _, l in D_TOOLS) + " |")
        w("|---|" + "---:|" * len(D_TOOLS))
        for d in dists:
            ref = dv(ww, d, "pgbr59-sync", "push", "stored_bytes") or dv(ww, d, "pgbr59-async", "push", "stored_bytes")

            def sb(t):
                v = dv(ww, d, t, "push", "stored_bytes")
                if v is None:
                    return dcell(ww, d, t, "push")
                return f"{v / MiB:.1f} MiB" + (f" ({v / ref:.3f}×)" if ref else "")
            cells = [f"{sb('pgbr245-sync')} / {sb('pgbr245-async')}" if t == "pgbr245" else sb(t) for t, _ in D_TOOLS]
            w(f"| {dlbl(d)} | " + " | ".join(cells) + " |")
        w("")
    rpd = [n for n in RPL if n == "cp" or n.split("@")[0] in ("pk", "pgbr59-async")]
    if rpd:
        rp_n = next(iter(RPL.values()))["segments"]
        w(f"### Replay of {rp_n} segments from S3, PostgreSQL really replaying (section 2b's source cluster and method)")
        w("")
        w("| replay | pitrkit | pgBackRest 2.59.1 async | cp floor (local raw segments) | pitrkit ÷ cp time [≤ 1.1×] |")
        w("|---|---:|---:|---:|---:|")
        for d in dists:
            sfx = "" if d == "0" else f"@{d}"

            def rc(n):
                r = RPL.get(n)
                if not r:
                    return "not installed" if n.startswith("pgbr59") and d_peers.get("pgbr59", {}).get("status", "").startswith("not") else "-"
                return f"{r['median_s']} s, {r['seg_per_s']} seg/s, CPU {r['cpu_ms_per_seg']} ms/seg" if r["verify"].startswith("ok") else "FAILED"
            a = rp_("pk" + sfx, "median_s")
            w(f"| {dlbl(d)} | {rc('pk' + sfx)} | {rc('pgbr59-async' + sfx)} | {rc('cp')} | {f'{a / cpv:.2f}×' if a and cpv else '-'} |")
        w("")
    if d_killed:
        w("Processes still in a loop's cgroup after the wait (killed): " + "; ".join(f"{r['name']}: {r['count']} ({r['when']})" for r in d_killed) + ".")
    else:
        w("No process was left in any loop's cgroup after the wait (nothing had to be killed).")
    w("")
    bad = [(k, r["verify"]) for k, r in DW.items() if k[1] == "restore" and not r["verify"].startswith(f"{d_nseg} ok, 0 mismatched, 0 missing")]
    w("Byte-for-byte check of every restored segment: " + ("every restore loop, every segment identical." if not bad else
      "MISMATCHES: " + "; ".join(f"{k[0]}: {v}" for k, v in bad)))
    w("")
    if d_failed:
        w("Failed in this workload: " + "; ".join(esc(l) for l in d_failed))
        w("")
    w("<details><summary>distance: commands</summary>")
    w("")
    w("| variant | loop | command | at the end |")
    w("|---|---|---|---|")
    for c in d_cmds:
        w(f"| {c['name']} | {c['kind']} | `{esc(c['command'])}` | {'`' + esc(c['end_command']) + '`' if c['end_command'] != '-' else ''} |")
    w("")
    w("wal-rus reads its settings from the dotenv file given with `--config` (`WALG_S3_PREFIX`, `AWS_ENDPOINT`, the")
    w("local server's keys, `AWS_S3_FORCE_PATH_STYLE=true`, `WALG_COMPRESSION_METHOD=zstd`, `WALG_COMPRESSION_LEVEL=3`).")
    w("pgBackRest 2.59.1's configs: `repo1-s3-endpoint=http://127.0.0.1:PORT`, `repo1-s3-uri-style=path`, `compress-type=zst`,")
    w("`compress-level=3`; async adds `archive-async=y`, `process-max=2`, `spool-path`, `archive-get-queue-max=2GiB`.")
    w("")
    w("</details>")
    w("")

# ---------------------------------------------------------------- observations (computed from this run)
def rcalls(name):
    cl = P(f"{name}.restore.calls")
    return [(float(l.split()[3]) - float(l.split()[2])) * 1000 for l in lines(cl) if len(l.split()) == 4]


O = []
for t in ("s3", "local"):
    a, j = w_(f"pk-{t}", "push"), w_(f"pk-{t}-j1", "push")
    if a and j:
        ca, cj = w_(f"pk-{t}", "push", "cpu_ms_per_seg"), w_(f"pk-{t}-j1", "push", "cpu_ms_per_seg")
        ah, aj = ahead.get(f"pk-{t}"), calls(f"pk-{t}-j1")
        txt = (f"**Look-ahead ({t})**: {a:.2f} seg/s with the default `--jobs` vs {j:.2f} with `--jobs 1` (**{a / j:.2f}×**), "
               f"client CPU {ca:.0f} vs {cj:.0f} ms/seg.")
        if ah and ah["pa_wall"] is not None and aj:
            n = ah["statuses"].get("stored", 0) or 1
            txt += (f" Per call (last run; default `--jobs` here: {round(ah['calls'] / n)}): {n} calls stored their segment plus the next ones (median {ah['other_wall']:.0f} ms each), "
                    f"the {ah['statuses'].get('pushed-ahead', 0)} others answered pushed-ahead in {ah['pa_wall']:.0f} ms each; "
                    f"with `--jobs 1` every call takes median {statistics.median(x['wall_ms'] for x in aj):.0f} ms. "
                    "With all segments waiting on 2 cores, archiving is CPU-bound (zstd), so pushing several at once "
                    "gains little, and each pushed-ahead answer adds the cost of re-reading and hashing its segment.")
        O.append(txt)
for n in ("pk-s3", "pk-local"):
    c = rcalls(n)
    p0 = w_(n + "-p0", "restore", "ms_per_seg")
    if c:
        big = [x for x in c if x > 50]
        small = [x for x in c if x <= 50]
        if big and small:
            O.append(f"**Prefetch ({n[3:]})**: {len(big)} of {len(c)} calls took over 50 ms (median {statistics.median(big):.0f} ms: "
                     f"fetched by the call itself, or waited for the prefetcher), the other {len(small)} renamed a file the prefetcher "
                     f"had ready (median {statistics.median(small):.0f} ms): {w_(n, 'restore', 'ms_per_seg')} ms/seg against {p0} ms/seg "
                     f"without prefetch. Client CPU is {w_(n, 'restore', 'cpu_ms_per_seg')} ms/seg (decompress + digest check), "
                     "calls and prefetcher together, on 2 cores: with the calls back to back and no replay between them, "
                     "that CPU bounds the loop.")
for n in ("pk-local", "pk-s3"):
    a = ahead.get(n)
    if a and a["pa_json"] is not None and a["pa_json"] > 5:
        O.append(f"**Pushed-ahead answers ({n[3:]})**: {a['pa_wall']:.1f} ms per call, {a['pa_json']:.1f} ms of it inside wal-push. "
                 "The answer re-reads the whole 16 MiB segment to hash it (xxh3) against the record: two threads, one half each, "
                 "128 KiB page-aligned reads. Checked once by hand on this VM (hyperfine -N, 2026-11-26): 6.3 ms mean for the "
                 "call alone (5.9 ms of it system time: copying the pages out of the page cache), `wal-push --version` 1.4 ms, "
                 "and a variant hashing an mmap(MAP_POPULATE) of the file was no faster (mapping 4096 pages costs what copying "
                 "them does). `/bin/sh -c` adds 2–3 ms. Under 5 ms through the shell needs a proof that does not read the "
                 "whole segment (file metadata alone), which the target's \"checksum, never on trust alone\" rules out.")
        break
if sus:
    ws = [f(r["wal_seg_per_s"]) for r in sus.values()]
    tp = [f(r["tps"]) for r in sus.values()]
    bz = [f(r["machine_busy_pct"]) for r in sus.values()]
    O.append(f"**Sustained run**: pgbench kept both cores {min(bz):.0f}–{max(bz):.0f}% busy and produced {min(ws):.2f}–{max(ws):.2f} "
             f"segments/s ({min(tp):.0f}–{max(tp):.0f} tps), below the 3.9 segments/s (about 7,300 tps) the peers saw when they made "
             "the walset. Every archiver kept up on average (archived/s = produced/s, drained within about a second); the archiver "
             "competes with pgbench for the same 2 cores, so tps and WAL differ from run to run and CPU per archived MiB is the "
             "comparable number. The lag columns show how many segments waited at the worst second.")
for r in rss:
    kb = r["max_rss_kib"].strip()
    if kb.isdigit() and 0.9 * 64 <= int(kb) / 1024 < 64:
        O.append(f"**Peak RSS close to the limit**: `{esc(r['label'])}` peaked at {int(kb) / 1024:.1f} MiB, within 10% of 64 MiB.")
if gz and pk_s3:
    j1 = w_("pk-s3-j1", "push")
    O.append(f"**gzip \\| aws s3 cp** ran {gzip_runs} time(s) here ({64 / gz if gz else 0:.1f} s for 64 segments at {gz:.2f} seg/s); the previous "
             "pitrkit run measured 93.64 s (median of 3) and the peers' README 48.84 s on 2026-11-25, so this baseline moves a lot"
             + (f"; pitrkit `--jobs 1` is {j1 / gz:.1f}× it." if j1 else "."))
if RPL and rp_("cp") and rp_("pk"):
    fl, pk_, p0_ = rp_("cp", "median_s"), rp_("pk", "median_s"), rp_("pk-p0", "median_s")
    rd = redo("cp")
    txt = (f"**Replay dominates real recovery**: PostgreSQL alone, restoring with `cp` from a local directory of raw segments, "
           f"takes {fl:.2f} s for the {RPL['cp']['segments']} segments"
           + (f" (its redo: {rd[0]:.2f} s elapsed, {rd[1]:.2f} s CPU of the startup process)" if rd else "")
           + f"; pitrkit with prefetch takes {pk_:.2f} s ({pk_ - fl:+.2f} s against it, fetching from S3 included)")
    if p0_:
        txt += f", and {p0_ - fl:+.2f} s with `--prefetch 0`"
    lp, l0 = w_("pk-s3", "restore", "median_s"), w_("pk-s3-p0", "restore", "median_s")
    if lp and l0:
        txt += (f". The restore_command loop without replay (section 2) took {lp:.2f} s with prefetch and {l0:.2f} s without, "
                f"so the ratios shrink once PostgreSQL replays between the calls")
    O.append(txt + ". Checked once by hand on this VM (2026-11-26, the `cp` variant on an idle machine): the startup process's "
             "redo used about 2.3 s of CPU in 5.6 s elapsed with only 0.24 s waiting for a core; the rest is waiting for each "
             "restore_command and for PostgreSQL's own fsync of every restored segment as it renames it into pg_wal "
             "(`durable_rename` of RECOVERYXLOG: 66 fsyncs of 16 MiB, ~34 ms each under strace). `cp` leaves that fsync "
             "to PostgreSQL, on recovery's path; pitrkit's prefetcher writes each segment to disk in the background "
             "(named first, fsynced right after), so PostgreSQL's fsync finds little or nothing left to write — which "
             "is how prefetch can beat `cp`. What remains is redo itself, the CPU the prefetcher takes from the same two "
             "cores (it runs at nice 10, so the startup process wins them), and the calls PostgreSQL makes at the start "
             "and the end of recovery (two timeline-history probes, the segment after the last one twice, the last one "
             "again), which cross the distance unless the prefetcher has the answer.")
O.append("pgBackRest 2.45 only speaks https to S3, so its S3 rows go through the peers' socat TLS front (S3-side CPU column); "
         "pitrkit talks plain http to the same s3s-fs. That hop costs pgBackRest latency and CPU, not pitrkit.")
if O:
    w("## Observations")
    w("")
    for o in O:
        w(f"- {o}")
    w("")

w("## Machine")
w("")
w("| item | value |")
w("|---|---|")
for k, v in facts:
    w(f"| {k} | {esc(v)} |")
if busy:
    w(f"| waits for other work | {esc('; '.join(busy))} |")
w("")

w("## Main table (medians)")
w("")
w(f"WAL loops: {nseg} segments × 16 MiB, one `/bin/sh -c` per segment from a fake data directory, medians of {runs} hyperfine runs.")
w("")
w("| workload | target | pitrkit | pgBackRest sync | pgBackRest async | gzip \\| aws s3 cp | pitrkit / sync | pitrkit / async |")
w("|---|---|---:|---:|---:|---:|---:|---:|")


def cell(v, unit):
    return f"{v:.2f} {unit}" if v else "-"


for t, pk, pb in (("S3", "pk-s3", "pgbr-s3"), ("local", "pk-local", "pgbr-posix")):
    a, s_, as_ = w_(pk, "push"), w_(pb + "-sync", "push"), w_(pb + "-async", "push")
    g = w_("gzip-aws", "push") if t == "S3" else None
    if a:
        w(f"| 1. archive (seg/s) | {t} | {cell(a, 'seg/s')} | {cell(s_, 'seg/s')} | {cell(as_, 'seg/s')} | {cell(g, 'seg/s') if g else ('0.68 seg/s (previous run)' if t == 'S3' else '-')} | "
          f"{ratio_txt(a, s_)} | {ratio_txt(a, as_)} |")
    a1 = w_(pk + "-j1", "push")
    if a1:
        w(f"| 1. archive, `--jobs 1` (seg/s) | {t} | {cell(a1, 'seg/s')} | | | | {ratio_txt(a1, s_)} | {ratio_txt(a1, as_)} |")
for t, pk, pb in (("S3", "pk-s3", "pgbr-s3"), ("local", "pk-local", "pgbr-posix")):
    a, s_, as_ = w_(pk, "push", "stored_bytes"), w_(pb + "-sync", "push", "stored_bytes"), w_(pb + "-async", "push", "stored_bytes")
    if a:
        gzc = f"{(w_('gzip-aws', 'push', 'stored_bytes') or 0) / MiB:.1f}" if t == "S3" and w_('gzip-aws', 'push') else "-"
        w(f"| 1. stored bytes (MiB) | {t} | {a / MiB:.1f} | {s_ / MiB if s_ else 0:.1f} | {as_ / MiB if as_ else 0:.1f} | {gzc} | "
          f"{ratio_txt(a, s_, '{:.3f}×')} | {ratio_txt(a, as_, '{:.3f}×')} |")
for t, pk, pb in (("S3", "pk-s3", "pgbr-s3"), ("local", "pk-local", "pgbr-posix")):
    a, s_, as_ = w_(pk, "restore"), w_(pb + "-sync", "restore"), w_(pb + "-async", "restore")
    if a:
        w(f"| 2. recovery (seg/s) | {t} | {cell(a, 'seg/s')} | {cell(s_, 'seg/s')} | {cell(as_, 'seg/s')} | | {ratio_txt(a, s_)} | {ratio_txt(a, as_)} |")
    p0 = w_(pk + "-p0", "restore")
    if p0:
        w(f"| 2. recovery, `--prefetch 0` (seg/s) | {t} | {cell(p0, 'seg/s')} | | | | {ratio_txt(p0, s_)} | {ratio_txt(p0, as_)} |")
if rp_("pk"):
    a, s_, as_ = rp_("pk"), rp_("pgbr-sync"), rp_("pgbr-async")
    w(f"| 2b. recovery with replay (seg/s; s) | S3 | {a:.2f} seg/s; {RPL['pk']['median_s']} s | {cell(s_, 'seg/s')}{'; ' + RPL['pgbr-sync']['median_s'] + ' s' if s_ else ''} | "
      f"{cell(as_, 'seg/s')}{'; ' + RPL['pgbr-async']['median_s'] + ' s' if as_ else ''} | | {ratio_txt(a, s_)} | {ratio_txt(a, as_)} |")
    p0 = rp_("pk-p0")
    if p0:
        w(f"| 2b. recovery with replay, `--prefetch 0` | S3 | {p0:.2f} seg/s; {RPL['pk-p0']['median_s']} s | | | | {ratio_txt(p0, s_)} | {ratio_txt(p0, as_)} |")
for t in ("s3", "local"):
    a, b = sus.get(f"pitrkit-{t}"), sus.get(f"pgbr-async-{t}")
    if a and b:
        w(f"| 3. sustained pgbench: max / mean .ready | {t} | {a['ready_max']} / {a['ready_mean']} | | {b['ready_max']} / {b['ready_mean']} | | | |")
        w(f"| 3. sustained pgbench: CPU ms per archived MiB | {t} | {a['cpu_ms_per_MiB']} | | {b['cpu_ms_per_MiB']} | | | {ratio_txt(f(a['cpu_ms_per_MiB']), f(b['cpu_ms_per_MiB']))} |")
if bb.get("pitrkit-local") and bb.get("pgbr-full-zst"):
    a, b = bb["pitrkit-local"], bb["pgbr-full-zst"]
    w(f"| 4. base backup (MiB/s of source) | local | {a['src_MiB_per_s']} | {b['src_MiB_per_s']} (full, process-max=2) | | | {ratio_txt(f(a['src_MiB_per_s']), f(b['src_MiB_per_s']))} | |")
    w(f"| 4. base backup stored MiB | local | {a['stored_MiB']} | {b['stored_MiB']} | | | {ratio_txt(int(a['stored_bytes']), int(b['stored_bytes']), '{:.3f}×')} | |")
    ra_, rb_ = bbr.get("pitrkit-local"), bbr.get("pgbr-full-zst")
    if ra_ and rb_:
        w(f"| 4. restore (MiB/s of source) | local | {ra_['src_MiB_per_s']} | {rb_['src_MiB_per_s']} | | | {ratio_txt(f(ra_['src_MiB_per_s']), f(rb_['src_MiB_per_s']))} | |")
    if bb.get("pitrkit-s3"):
        a3, r3 = bb["pitrkit-s3"], bbr.get("pitrkit-s3", {})
        w(f"| 4. base backup / restore (MiB/s) | S3 | {a3['src_MiB_per_s']} / {r3.get('src_MiB_per_s', '-')} | (posix: {b['src_MiB_per_s']} / {rb_['src_MiB_per_s'] if rb_ else '-'}) | | | | |")
for lbl, a, b, _ in enc_rows:
    w(f"| 5. encryption: {lbl} (s, plain → encrypted) | | {a:.2f} → {b:.2f} ({100 * (b / a - 1):+.1f}%) | | | | | |")
w("")

# ---------------------------------------------------------------- 1 + 2 detail
NAMES = {
    "pk-local": "pitrkit, look-ahead (default --jobs)", "pk-s3": "pitrkit, look-ahead (default --jobs)",
    "pk-local-j1": "pitrkit --jobs 1 (no look-ahead)", "pk-s3-j1": "pitrkit --jobs 1 (no look-ahead)",
    "pk-local-enc": "pitrkit, encrypted (age)", "pk-s3-enc": "pitrkit, encrypted (age)",
    "pk-local-p0": "pitrkit --prefetch 0", "pk-s3-p0": "pitrkit --prefetch 0",
    "pgbr-posix-sync": "pgBackRest sync, zst", "pgbr-posix-async": "pgBackRest async (process-max=2), zst",
    "pgbr-s3-sync": "pgBackRest sync, zst (TLS front)", "pgbr-s3-async": "pgBackRest async (process-max=2), zst (TLS front)",
    "gzip-aws": "gzip \\| aws s3 cp",
}
for kind, title in (("push", "1. Archive: archive_command"), ("restore", "2. Recovery: restore_command")):
    rows = [r for r in wal if r["kind"] == kind]
    rows = list(last_by(rows, "name").values())
    if not rows:
        continue
    w(f"## {title} ({nseg} segments, {nseg * 16} MiB)")
    w("")
    if kind == "push":
        w("| variant | what | target | median s | min–max s | runs | **seg/s** | ms/seg | client CPU ms/seg | S3-side CPU ms/seg | stored MiB | ratio |")
        w("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            w(f"| {r['name']} | {NAMES.get(r['name'], '')} | {r['target']} | {r['median_s']} | {r['min_s']}–{r['max_s']} | {r['runs']} | **{r['seg_per_s']}** | {r['ms_per_seg']} | "
              f"{r['cpu_ms_per_seg']} | {r['server_cpu_ms_per_seg']} | {int(r['stored_bytes']) / MiB:.1f} | {r['ratio']} |")
    else:
        w("| variant | what | target | median s | min–max s | runs | **seg/s** | ms/seg | client CPU ms/seg | S3-side CPU ms/seg | byte-for-byte check (last run) |")
        w("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            nm = r["name"].replace("pk-local", "pk-local").replace("pk-s3", "pk-s3")
            what = NAMES.get(r["name"], "")
            if r["name"] in ("pk-local", "pk-s3"):
                what = "pitrkit, prefetch 8 (default)"
            if r["name"].endswith("-enc"):
                what = "pitrkit, encrypted, prefetch 8"
            w(f"| {nm} | {what} | {r['target']} | {r['median_s']} | {r['min_s']}–{r['max_s']} | {r['runs']} | **{r['seg_per_s']}** | {r['ms_per_seg']} | "
              f"{r['cpu_ms_per_seg']} | {r['server_cpu_ms_per_seg']} | {r['verify']} |")
    w("")

if ahead:
    w("### Look-ahead: what the calls answered (last run of each loop)")
    w("")
    w("Wall time per call = from just before `/bin/sh -c` to its exit (so it includes starting the shell and wal-push);")
    w("\"inside wal-push\" = the `seconds` of its JSON line.")
    w("")
    w("| loop | calls | statuses | pushed-ahead: median wall ms (max) | pushed-ahead: median ms inside wal-push | other calls: median wall ms |")
    w("|---|---:|---|---:|---:|---:|")
    for n, a in ahead.items():
        st = ", ".join(f"{k}: {v}" for k, v in sorted(a["statuses"].items()))
        pa = f"{a['pa_wall']:.1f} ({a['pa_wall_max']:.1f})" if a["pa_wall"] is not None else "-"
        pj = f"{a['pa_json']:.2f}" if a["pa_json"] is not None else "-"
        ow = f"{a['other_wall']:.1f}" if a["other_wall"] is not None else "-"
        w(f"| {n} | {a['calls']} | {st} | {pa} | {pj} | {ow} |")
    w("")

if rss:
    w("### Peak RSS of one call, and of the prefetcher")
    w("")
    w("| command (as postgres, `/usr/bin/time -v`) | max RSS MiB | check |")
    w("|---|---:|---|")
    for r in rss:
        kb = r["max_rss_kib"].strip()
        w(f"| `{esc(r['label'])}` | {int(kb) / 1024:.1f} | {esc(r['note'])} |" if kb.isdigit() else f"| `{esc(r['label'])}` | ? | |")
    w("")

# ---------------------------------------------------------------- 2b
if RPL:
    rp_n = next((r["segments"] for r in RPL.values()), "?")
    w(f"## 2b. Recovery with replay: PostgreSQL restoring {rp_n} segments through restore_command from S3")
    w("")
    w("A real recovery, not a loop of calls: each run starts PostgreSQL 15 on a fresh copy of a plain base backup with")
    w("`recovery.signal` and the variant's `restore_command`, and is timed from `pg_ctl start` until `select pg_is_in_recovery()`")
    w("returns false (psql every 50 ms once the server log says redo is done, every second before; the end-of-recovery")
    w("checkpoint and `recovery_end_command` are inside). Every variant replays the same WAL from the same S3 server; the")
    w("repositories were loaded untimed. The runs are interleaved (run 1 of every variant, then run 2, …), each after an")
    w("untimed prepare (stop the previous server, wait for pgBackRest's async process to exit, a fresh copy of the base")
    w("backup, empty spool, `sync`). After each run (untimed): `pg_last_wal_replay_lsn()` must reach the source's last")
    w("LSN, `pgbench_history` must hold the source's row count and the log must show every segment restored from the archive;")
    w("otherwise the variant is FAILED and not timed. CPU = everything the server started (a cpuacct cgroup around `pg_ctl")
    w("start`: the startup process replaying, checkpointer, the restore_command processes, pgBackRest's async process), per")
    w("segment; S3-side = s3s-fs + socat.")
    w("")
    for k, v in rp_src:
        w(f"- {k}: {esc(v)}")
    w("")
    w("| variant | what | median s | min–max s | runs | **seg/s** | CPU ms/seg | S3-side CPU ms/seg | redo in the last run: elapsed s / startup CPU s | check |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for n, r in RPL.items():
        rd = redo(n)
        w(f"| {n} | {esc(r['what'])} | {r['median_s']} | {r['min_s']}–{r['max_s']} | {r['runs']} | **{r['seg_per_s']}** | {r['cpu_ms_per_seg']} | "
          f"{r['server_cpu_ms_per_seg']} | {f'{rd[0]:.2f} / {rd[1]:.2f}' if rd else '-'} | {esc(r['verify'])} |")
    w("")
    a = rp_("pk")
    if a:
        w("| pitrkit (prefetch) against | its seconds | pitrkit's seconds | speed ratio | [target] |")
        w("|---|---:|---:|---:|---|")
        for other, lbl, goal in (("pk-p0", "pitrkit `--prefetch 0`", "≥ 3×"), ("pgbr-sync", "pgBackRest archive-get sync", "≥ 3×"),
                                 ("pgbr-async", "pgBackRest archive-get async", "≥ 1.5×"), ("cp", "cp of raw segments (reference)", "")):
            b = rp_(other)
            if b:
                w(f"| {lbl} | {RPL[other]['median_s']} | {RPL['pk']['median_s']} | {ratio_txt(a, b)} | {goal} |")
        w("")
    if rp_runs:
        w("<details><summary>every run</summary>")
        w("")
        w("| variant | run | s | replay LSN | pgbench_history rows | segments restored (log) | check |")
        w("|---|---:|---:|---|---:|---:|---|")
        for r in rp_runs:
            w(f"| {r['variant']} | {r['run']} | {r['seconds']} | {r['replay_lsn']} | {r['history_rows']} | {r['restored']} | {esc(r['check'])} |")
        w("")
        w("</details>")
        w("")

# ---------------------------------------------------------------- 3
if sus:
    w(f"## 3. Sustained archiving under pgbench")
    w("")
    w(f"`pgbench -c 8 -j 2 -T {params.get('SUSTAIN_SECONDS', '60')} -M prepared` (synchronous_commit=off) on the peers' scale-100 cluster (port 55432), once per")
    w("archive_command; sampled every second. \"archived\" = `pg_stat_archiver.archived_count`; lag = `.ready` files in")
    w("`pg_wal/archive_status`; CPU = everything the archiver started (its process tree in a cpuacct cgroup, pgBackRest's")
    w("detached async process included; the S3 server and socat excluded), during the run plus the drain, per archived MiB.")
    w("")
    w("| archive_command | pgbench tps | WAL MiB/s produced | WAL seg/s produced | archived seg/s (during pgbench) | .ready max | .ready mean | .ready at end | drain s | archived total | failed | CPU s | **CPU ms / archived MiB** | machine busy % | stored MiB |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in sus.items():
        w(f"| {n} | {f(r['tps']) or 0:.0f} | {r['wal_MiB_per_s']} | {r['wal_seg_per_s']} | {r['archived_seg_per_s']} | {r['ready_max']} | {r['ready_mean']} | {r['ready_at_end']} | "
          f"{r['drain_s']} | {r['archived_total']} | {r['failed']} | {r['cpu_s']} | **{r['cpu_ms_per_MiB']}** | {r['machine_busy_pct']} | {int(r['stored_bytes'] or 0) / MiB:.0f} |")
    w("")
    for n, c in sus_cmds.items():
        w(f"- {n}: `archive_command = '{esc(c)}'`")
    w("")

# ---------------------------------------------------------------- 4
bbmd = P("backup", "BACKUP-BENCHMARKS.md")
if os.path.exists(bbmd):
    t = open(bbmd).read()
    w("## 4. Base backup and restore (bench/backup-bench.sh, pgbench workload, rerun in this run)")
    w("")
    m = re.search(r"(### pgbench scale 100.*?)(?=\n## |\Z)", t, re.S)
    if m:
        w(m.group(1).replace("### ", "#### ").strip())
        w("")
    m = re.search(r"## pitrkit / pgBackRest ratios.*?\n\n(.*?)(?=\n## |\Z)", t, re.S)
    if m:
        w("#### pitrkit / pgBackRest ratios (targets in brackets)")
        w("")
        w(m.group(1).strip())
        w("")
    m = re.search(r"## Commands\n\n(.*?)(?=\n## )", t, re.S)
    if m:
        w("<details><summary>backup-bench.sh commands</summary>")
        w("")
        w(m.group(1).strip())
        w("")
        w("</details>")
        w("")
    m = re.search(r"## Restore checks.*?\n\n(.*?)(?=\n## |\nRaw |\Z)", t, re.S)
    if m:
        w("#### Restore checks")
        w("")
        w(m.group(1).strip())
        w("")
    w(f"Its full report: `{bbmd}`; `bench/BACKUP-BENCHMARKS.md` keeps the earlier run with the randtext and incremental workloads.")
    w("")

# ---------------------------------------------------------------- 5
if enc_rows:
    w("## 5. Encryption at rest: plain vs encrypted, side by side")
    w("")
    w("Keys: `age-keygen -o key.txt`, recipient from `age-keygen -y key.txt`. Pushing tools get a config with")
    w("`encryption_recipients = [\"age1…\"]`, fetching/restoring ones a config with `encryption_identity_file`; every encrypted")
    w("repository is a fresh, empty location (the prepare step of every run empties it).")
    w("")
    w("| what | plain median s | encrypted median s | slowdown | [≤ 10%] | variants |")
    w("|---|---:|---:|---:|---|---|")
    for lbl, a, b, v in enc_rows:
        w(f"| {lbl} | {a:.2f} | {b:.2f} | {100 * (b / a - 1):+.1f}% | {'✓' if b / a <= 1.10 else '✗'} | {v} |")
    w("")
    if be:
        w("| bb variant | backup s | min–max | MiB/s | client CPU s | stored MiB | restore s | restore min–max |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for n in ("bb-plain", "bb-enc"):
            a, r = be.get(n), ber.get(n, {})
            if a:
                w(f"| {n} | {a['median_s']} | {a['min_s']}–{a['max_s']} | {a['src_MiB_per_s']} | {a['client_cpu_s']} | {a['stored_MiB']} | {r.get('median_s', '-')} | {r.get('min_s', '-')}–{r.get('max_s', '-')} |")
        w("")
        for n, c in be_cmds.items():
            w(f"- {n}: `{esc(c[0])}`; restore `{esc(c[1])}`")
        chk = lines(P("bbenc", "check.txt")) + lines(P("enc-check.txt"))
        for l in chk:
            w(f"- check: {esc(l)}")
        w("")

# ---------------------------------------------------------------- commands and method
w("## Commands")
w("")
w("```")
defaults = "NSEG=64 RUNS=3 GZIP_AWS_RUNS=1 SUSTAIN_SECONDS=60 SUSTAIN_TARGETS='s3 local' WORKLOADS='wal replay distance sustained backup bbenc' REPLAY_SCALE=20 DISTANCES='0 25' WALSETS='fpi real' DIST_NSEG=32"
if inv == defaults:
    w("bench/run-all.sh        # as root; all defaults: " + inv)
else:
    w(f"{inv} bench/run-all.sh")
w("```")
w("")
w("Every WAL loop: `pgloop.sh push|restore DATADIR CMD` (cwd = DATADIR; `%p` = `pg_wal/<seg>` when archiving,")
w("`pg_wal/RECOVERYXLOG` when recovering; `%f` = the segment name), run as the user given, timed by hyperfine with an")
w("untimed prepare step (empty the repository / S3 prefix, `stanza-create` for pgBackRest, empty the spool, rebuild the fake")
w("data directory, `sync`).")
w("")
w("| variant | loop | user | command | once at the end (recovery_end_command) |")
w("|---|---|---|---|---|")
for (n, k), c in cmds.items():
    w(f"| {n} | {k} | {c['user']} | `{esc(c['command'])}` | {'`' + esc(c['end_command']) + '`' if c['end_command'] != '-' else ''} |")
w("")
if rp_cmds:
    w("Replay (2b): appended to `postgresql.conf` of each fresh copy of the base backup, with `recovery.signal`; PostgreSQL")
    w("runs the commands as `postgres` from the data directory. Every copy also gets `port`, `archive_mode = off`,")
    w("`recovery_target_timeline = 'latest'` and `recovery_target_action = 'promote'`; pgBackRest's async config is its sync")
    w("config plus the async lines shown below (its own spool, emptied before every run).")
    w("")
    w("| variant | restore_command | recovery_end_command |")
    w("|---|---|---|")
    for c in rp_cmds:
        e = c["recovery_end_command"]
        w(f"| {c['variant']} | `{esc(c['restore_command'])}` | {'`' + esc(e) + '`' if e != '-' else ''} |")
    w("")
conf = E.get("C")
if conf and os.path.isdir(conf):
    w("pitrkit config files (S3 ones add `s3_endpoint`, `s3_region`, `s3_access_key_id`, `s3_secret_access_key` of the local server):")
    w("")
    w("```toml")
    for n in ("pk-s3.toml", "pk-s3-enc.toml", "pk-s3-enc-id.toml"):
        p = os.path.join(conf, n)
        if os.path.exists(p):
            w(f"# {p}")
            for l in open(p):
                l = l.rstrip("\n")
                if l.startswith("s3_secret_access_key"):
                    l = 's3_secret_access_key = "…"'
                if l.startswith("encryption_recipients"):
                    l = 'encryption_recipients = ["age1…"]   # from age-keygen -y key.txt'
                w(l)
    w("```")
    w("")
ra = E.get("RA")
if ra:
    for n in ("s3-async.conf",):
        p = os.path.join(ra, "pgbr", n)
        if os.path.exists(p):
            w(f"pgBackRest `{p}` (the sync configs are the same with `archive-async=n` and no spool):")
            w("")
            w("```ini")
            for l in open(p):
                l = l.rstrip("\n")
                if l.startswith("repo1-s3-key-secret"):
                    l = "repo1-s3-key-secret=…"
                w(l)
            w("```")
            w("")

w("## Method")
w("")
w(f"- The walset: the first {nseg} of the peers' 64 real 16 MiB segments of pgbench OLTP WAL (`setup-pg.sh`, scale 100), in the page cache.")
w("- **Archiving as PostgreSQL does it.** Each run starts from a fresh fake data directory: `PG_VERSION` and `global/pg_control`")
w("  of the cluster that wrote the walset, `pg_wal/` with the segments (hard links) and `pg_wal/archive_status/<seg>.ready`")
w("  for each. The loop calls the command for each segment in order, from that directory, one `/bin/sh -c` each, and")
w("  renames `.ready` to `.done` after each success, as the archiver does. So all segments are waiting from the start (an")
w("  archiver that has fallen behind); the sustained workload shows the live case. pitrkit's look-ahead pushes the next")
w("  `.ready` files in the same call; pgBackRest async hands them to its detached async process (pg1-path = the fake data")
w("  directory, which is also the cwd; pgBackRest resolves a relative `%p` against pg1-path).")
w("- **Recovery as PostgreSQL does it**: `CMD <seg> pg_wal/RECOVERYXLOG` per segment from a fresh fake data directory; after")
w("  each call the file is moved aside (a rename, timed) and, after the runs, every segment of the last run is compared")
w("  byte for byte with the walset. pitrkit's prefetch dir `pg_wal/pitrkit-prefetch` is emptied by `wal-fetch")
w("  --prefetch-cleanup` at the end (timed, as `recovery_end_command`); \"left in pg_wal\" counts what remained afterwards.")
w("  pgBackRest async archive-get: `archive-get-queue-max=2GiB`, `process-max=2`, spool emptied before every run.")
w("- Client CPU = all processes of the loop (a cpuacct cgroup around it, so pgBackRest's detached async processes count),")
w("  per segment; S3-side CPU = s3s-fs + the socat TLS front (`/proc`), which pgBackRest alone needs: pgBackRest 2.45 only")
w("  speaks https to S3, so its S3 numbers include a TLS hop that pitrkit (plain http to the same server) does not pay.")
if RPL:
    w("- **Recovery with replay (2b)**: its own source cluster (not the walset): `pgbench -i`, `pg_basebackup -Fp -X none -c fast`,")
    w("  then pgbench until NSEG segments follow the backup's start, `pg_switch_wal()`; the segments from the backup's start on")
    w("  are pushed per segment (`wal-push --jobs 1`, `pgbackrest archive-push`) into one pitrkit and one pgBackRest S3")
    w("  repository, untimed; pitrkit's two variants read the same repository, and so do pgBackRest's.")
w("- pitrkit and pgBackRest run as `postgres` (gzip | aws as root: the aws CLI is installed for root only).")
w("- Stored bytes: the WAL objects only (pitrkit `<repo>/wal/`, pgBackRest `archive/wal/15-1/`), after the last run.")
w("- Before every timed step the script waits while a compiler or test binary runs (`cargo`, `rustc`, `target/*/deps/*`).")
w("")
if prev and os.path.exists(prev):
    w(open(prev).read().strip())
    w("")
print("\n".join(L))
