//! The WAL record reader (`pitrkit::pg::walrecord`) against WAL a real PostgreSQL wrote, for
//! every supported major: commits, an abort, two-phase commit and rollback, a restore
//! point, a checkpoint, pgbench's load and a WAL switch. Each segment left in `pg_wal` is
//! summarized (records straddling two segments joined), and what the reader found is
//! compared with what the server says: commit timestamps (`track_commit_timestamp`) of
//! every commit it found, the xids of the transactions the test ran, the last checkpoint
//! (`pg_control_checkpoint()`); and on 15, whose `pg_waldump` Debian ships, the complete set
//! of COMMIT/ABORT records (xid and time) and restore point names `pg_waldump` prints.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::Instant;

use jiff::Timestamp;
use pitrkit::pg::wal::{self, WalFileName};
use pitrkit::pg::walrecord::{self, Event, SegmentSummary};
use pitrkit_tests::{DEFAULT_MAJOR, Pg, Sandbox, as_pg, pg_bin, run};

/// What the test ran, as the server reports it.
struct Ran {
    commits: BTreeMap<u32, Timestamp>,
    aborts: BTreeSet<u32>,
    prepared_commit: u32,
    prepared_abort: u32,
    prepared_drop: u32,
}

fn utc(pg: &Pg, expr: &str) -> Timestamp {
    pg.sql(&format!(
        "select to_char(({expr}) at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    ))
    .parse()
    .unwrap()
}

fn commit_ts(pg: &Pg, xid: u32) -> Timestamp {
    utc(pg, &format!("pg_xact_commit_timestamp('{xid}'::xid)"))
}

fn workload(pg: &Pg) -> Ran {
    pg.sql("create table t(i int)");
    let mut commits = BTreeMap::new();
    for i in 0..5 {
        let xid: u32 = pg
            .sql(&format!(
                "begin; insert into t values ({i}); select txid_current(); commit;"
            ))
            .parse()
            .unwrap();
        commits.insert(xid, commit_ts(pg, xid));
    }
    let aborted: u32 = pg
        .sql("begin; insert into t values (-1); select txid_current(); rollback;")
        .parse()
        .unwrap();
    let prepared_commit: u32 = pg
        .sql("begin; insert into t values (100); select txid_current(); prepare transaction 'p1';")
        .parse()
        .unwrap();
    pg.sql("commit prepared 'p1'");
    commits.insert(prepared_commit, commit_ts(pg, prepared_commit));
    let prepared_abort: u32 = pg
        .sql("begin; insert into t values (200); select txid_current(); prepare transaction 'p2';")
        .parse()
        .unwrap();
    pg.sql("rollback prepared 'p2'");
    // A prepared DROP TABLE: its COMMIT PREPARED carries dropped relations and (15+)
    // dropped statistics before the prepared xid, whose layout changed in 18.
    pg.sql("create table d(i int); insert into d values (1)");
    let prepared_drop: u32 = pg
        .sql("begin; drop table d; select txid_current(); prepare transaction 'p3';")
        .parse()
        .unwrap();
    pg.sql("commit prepared 'p3'");
    commits.insert(prepared_drop, commit_ts(pg, prepared_drop));
    pg.sql("select pg_create_restore_point('x')");
    pg.client("pgbench", &["-i", "-s", "2", "-q", "postgres"])
        .assert_ok();
    pg.client("pgbench", &["-c", "2", "-T", "3", "-n", "postgres"])
        .assert_ok();
    pg.sql("checkpoint");
    pg.sql("select pg_switch_wal()");
    // Something after the switch, in the segment being written.
    let last: u32 = pg
        .sql("begin; insert into t values (300); select txid_current(); commit;")
        .parse()
        .unwrap();
    commits.insert(last, commit_ts(pg, last));
    Ran {
        commits,
        aborts: BTreeSet::from([aborted, prepared_abort]),
        prepared_commit,
        prepared_abort,
        prepared_drop,
    }
}

/// Every segment in `pg_wal` that is what its name says (recycled and preallocated files
/// are not), in order, with its summary and events.
fn read_pg_wal(dir: &Path) -> Vec<(String, Vec<u8>, SegmentSummary, Vec<Event>)> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| matches!(n.parse(), Ok(WalFileName::Segment { .. })))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let data = fs::read(dir.join(&n)).unwrap();
        if wal::validate_segment(&n, &n.parse().unwrap(), &data).is_err() {
            continue;
        }
        let mut events = Vec::new();
        let s = walrecord::walk(&n, &data, &mut |e| events.push(e.clone())).unwrap();
        out.push((n, data, s, events));
    }
    out
}

/// `2026-12-02 15:40:01.123456 UTC` (fraction optional) as pg_waldump prints it.
fn waldump_time(s: &str) -> Timestamp {
    let s = s
        .trim()
        .strip_suffix(" UTC")
        .unwrap_or_else(|| panic!("not UTC: {s}"));
    format!("{}Z", s.replacen(' ', "T", 1)).parse().unwrap()
}

/// The COMMIT/ABORT (xid, time) pairs and restore point names pg_waldump prints for the
/// segments `first..=last`.
fn waldump(
    pg_wal: &Path,
    first: &str,
    last: &str,
) -> (BTreeSet<(String, u32, Timestamp)>, Vec<String>) {
    let mut c = as_pg(&pg_bin("pg_waldump"));
    c.arg("-p").arg(pg_wal).args([first, last]);
    let out = run(c);
    // It ends with an error at the end of valid WAL ("invalid record length", or "invalid
    // magic number" when the last record runs into a page not written yet): exit status 1.
    assert!(
        out.stderr.contains("error in WAL record") || out.code == 0,
        "pg_waldump failed\n{out}"
    );
    let mut ends = BTreeSet::new();
    let mut names = Vec::new();
    for line in out.stdout.lines() {
        let Some((head, desc)) = line.split_once("desc: ") else {
            continue;
        };
        let tx = |h: &str| -> u32 {
            let t = h.split("tx:").nth(1).unwrap().split(',').next().unwrap();
            t.trim().parse().unwrap()
        };
        for kind in ["COMMIT", "ABORT"] {
            let plain = desc.strip_prefix(&format!("{kind} "));
            let prepared = desc.strip_prefix(&format!("{kind}_PREPARED "));
            if let Some(rest) = plain {
                let time = rest.split(';').next().unwrap();
                ends.insert((kind.to_string(), tx(head), waldump_time(time)));
            } else if let Some(rest) = prepared {
                // "COMMIT_PREPARED 740: 2026-… UTC": the prepared transaction's xid.
                let (xid, rest) = rest.split_once(": ").unwrap();
                let time = rest.split(';').next().unwrap();
                ends.insert((kind.to_string(), xid.parse().unwrap(), waldump_time(time)));
            }
        }
        if let Some(name) = desc.strip_prefix("RESTORE_POINT ") {
            names.push(name.trim().to_string());
        }
    }
    (ends, names)
}

fn check(major: u32) {
    let sb = Sandbox::new(&format!("walrecord-{major}"));
    let mut pg = Pg::init_major(&sb, "pg", major);
    // wal_keep_size: the checkpoint must not recycle the segments the test reads.
    pg.configure(
        "max_prepared_transactions = 5\ntrack_commit_timestamp = on\nwal_keep_size = 512MB\n",
    );
    pg.start();
    let ran = workload(&pg);
    let (ckpt_lsn, ckpt_redo, ckpt_tli, ckpt_time) = {
        let row = pg.sql(
            "select checkpoint_lsn, redo_lsn, timeline_id, \
             extract(epoch from checkpoint_time)::bigint from pg_control_checkpoint()",
        );
        let f: Vec<&str> = row.split('|').collect();
        (
            f[0].parse::<wal::Lsn>().unwrap(),
            f[1].parse::<wal::Lsn>().unwrap(),
            f[2].parse::<u32>().unwrap(),
            Timestamp::from_second(f[3].parse().unwrap()).unwrap(),
        )
    };
    let pg_wal = pg.data.join("pg_wal");
    let segs = read_pg_wal(&pg_wal);
    assert!(segs.len() >= 3, "{} segments", segs.len());
    let seg_size = u64::from(segs[0].2.segment_size);
    for pair in segs.windows(2) {
        assert_eq!(
            pair[0].2.segment_start.0 + seg_size,
            pair[1].2.segment_start.0,
            "pg_wal holds a contiguous run of segments"
        );
    }

    // Every event, records across two segments joined.
    let mut events: Vec<Event> = Vec::new();
    let mut joined = 0;
    for (i, (_, _, s, ev)) in segs.iter().enumerate() {
        assert_eq!(s.pg_major, major);
        if let Some(prev) = i.checked_sub(1).map(|p| &segs[p].2) {
            if let Some(e) = walrecord::join(prev, s) {
                events.push(e);
                joined += 1;
            }
            if let Some(tail) = &prev.open_tail {
                assert!(
                    !tail.bytes.is_empty()
                        || tail.total_length as usize > walrecord::MAX_OPEN_RECORD,
                    "a short open record keeps its bytes when it could be one we decode: {tail:?}"
                );
            }
        }
        events.extend(ev.iter().cloned());
    }
    let last = &segs.last().unwrap().2;
    assert!(
        matches!(last.end, walrecord::WalEnd::Invalid { .. }),
        "the segment being written ends in unwritten space: {:?}",
        last.end
    );
    assert!(
        segs.iter()
            .any(|s| matches!(s.2.end, walrecord::WalEnd::Switch { .. })),
        "pg_switch_wal's XLOG_SWITCH is seen"
    );

    let mut commits: BTreeMap<u32, (Timestamp, bool)> = BTreeMap::new();
    let mut aborts: BTreeMap<u32, (Timestamp, bool)> = BTreeMap::new();
    let mut prepares = Vec::new();
    let mut restore_points = Vec::new();
    let mut checkpoint = None;
    for e in &events {
        match e {
            Event::Commit(t) => assert!(commits.insert(t.xid, (t.time, t.prepared)).is_none()),
            Event::Abort(t) => assert!(aborts.insert(t.xid, (t.time, t.prepared)).is_none()),
            Event::Prepare(p) => prepares.push((p.xid, p.gid.clone())),
            Event::RestorePoint(r) => restore_points.push(r.name.clone()),
            Event::Checkpoint(c) if c.lsn == ckpt_lsn => checkpoint = Some(c.clone()),
            _ => {}
        }
    }

    // The transactions the test ran, with the server's commit timestamps.
    for (xid, time) in &ran.commits {
        assert_eq!(
            commits.get(xid).map(|c| c.0),
            Some(*time),
            "commit of {xid}"
        );
    }
    assert!(commits[&ran.prepared_commit].1 && commits[&ran.prepared_drop].1);
    for xid in &ran.aborts {
        assert!(aborts.contains_key(xid), "abort of {xid}: {aborts:?}");
    }
    assert!(aborts[&ran.prepared_abort].1);
    assert_eq!(
        prepares,
        vec![
            (ran.prepared_commit, "p1".to_string()),
            (ran.prepared_abort, "p2".to_string()),
            (ran.prepared_drop, "p3".to_string())
        ]
    );
    assert_eq!(restore_points, vec!["x".to_string()]);
    let c = checkpoint.unwrap_or_else(|| panic!("no checkpoint at {ckpt_lsn}"));
    assert_eq!(
        (c.redo, c.timeline, c.time, c.online),
        (ckpt_redo, ckpt_tli, ckpt_time, true)
    );

    // Every commit found (pgbench's too) has the server's commit timestamp.
    let xids: Vec<String> = commits.keys().map(|x| x.to_string()).collect();
    let rows = pg.sql(&format!(
        "select x, to_char(pg_xact_commit_timestamp(x::text::xid) at time zone 'UTC', \
         'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') from unnest('{{{}}}'::bigint[]) x",
        xids.join(",")
    ));
    let mut compared = 0;
    for row in rows.lines() {
        let (xid, ts) = row.split_once('|').unwrap();
        let xid: u32 = xid.parse().unwrap();
        // Commits of initdb's bootstrap ran before track_commit_timestamp was on.
        if ts.is_empty() {
            continue;
        }
        assert_eq!(
            commits[&xid].0,
            ts.parse::<Timestamp>().unwrap(),
            "commit time of {xid}"
        );
        compared += 1;
    }
    let pgbench_txns: usize = pg
        .sql("select count(*) from pgbench_history")
        .parse()
        .unwrap();
    assert!(
        compared >= pgbench_txns + ran.commits.len(),
        "{compared} < {pgbench_txns}"
    );

    // On 15: exactly what pg_waldump prints.
    let mut waldump_compared = 0;
    if major == DEFAULT_MAJOR {
        let (want, names) = waldump(&pg_wal, &segs[0].0, &segs.last().unwrap().0);
        let got: BTreeSet<(String, u32, Timestamp)> = commits
            .iter()
            .map(|(x, (t, _))| ("COMMIT".to_string(), *x, *t))
            .chain(
                aborts
                    .iter()
                    .map(|(x, (t, _))| ("ABORT".to_string(), *x, *t)),
            )
            .collect();
        assert_eq!(
            got.difference(&want).collect::<Vec<_>>(),
            Vec::<&(String, u32, Timestamp)>::new(),
            "found by the reader, not by pg_waldump"
        );
        assert_eq!(
            want.difference(&got).collect::<Vec<_>>(),
            Vec::<&(String, u32, Timestamp)>::new(),
            "printed by pg_waldump, missed by the reader"
        );
        assert_eq!(names, restore_points);
        waldump_compared = want.len();
    }

    // A timing on the busiest segment (a debug build: indicative only).
    let busiest = segs.iter().max_by_key(|s| s.2.records).unwrap();
    let t0 = Instant::now();
    let s = walrecord::summarize("busiest", &busiest.1).unwrap();
    let read = t0.elapsed();
    let t1 = Instant::now();
    let z = zstd::bulk::compress(&busiest.1, 3).unwrap();
    let zstd = t1.elapsed();
    if let Some(keep) = std::env::var_os("PITRKIT_WALRECORD_SAMPLE") {
        fs::write(
            Path::new(&keep).join(format!("pg{major}-{}", busiest.0)),
            &busiest.1,
        )
        .unwrap();
    }
    eprintln!(
        "walrecord pg{major}: {} segments, {} commits ({} joined across segments) with \
         commit timestamps compared, {} compared with pg_waldump, {} aborts; busiest segment \
         {} records read in {read:?}, zstd -3 {zstd:?} ({} bytes)",
        segs.len(),
        compared,
        joined,
        waldump_compared,
        aborts.len(),
        s.records,
        z.len()
    );
    pg.stop();
}

#[test]
fn pg13() {
    check(13);
}
#[test]
fn pg14() {
    check(14);
}
#[test]
fn pg15_against_pg_waldump() {
    check(15);
}
#[test]
fn pg16() {
    check(16);
}
#[test]
fn pg17() {
    check(17);
}
#[test]
fn pg18() {
    check(18);
}
