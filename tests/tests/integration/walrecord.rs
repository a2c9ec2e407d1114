//! The WAL record reader (`pitrkit::pg::walrecord`) against WAL a real PostgreSQL wrote, for
//! every supported major: commits, an abort, two-phase commit and rollback, a restore
//! point, a checkpoint, pgbench's load and a WAL switch. Each segment left in `pg_wal` is
//! summarized (records straddling two segments joined), and what the reader found is
//! compared with what the server says: commit timestamps (`track_commit_timestamp`) of
//! every commit it found, the xids of the transactions the test ran, the last checkpoint
//! (`pg_control_checkpoint()`); and on 15, whose `pg_waldump` Debian ships, the complete set
//! of COMMIT/ABORT records (xid and time) and restore point names `pg_waldump` prints.
//! Also on 15 against `pg_waldump`: commits and restore points the test places across a
//! segment boundary (decoded by `join`), and a promotion onto timeline 2 (its
//! `END_OF_RECOVERY`, in a first segment copied from timeline 1).

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::Instant;

use jiff::Timestamp;
use pitrkit::pg::wal;
use pitrkit::pg::walrecord::{self, Event};
use pitrkit_tests::{DEFAULT_MAJOR, Pg, Sandbox};

use super::walrecord_help::{
    STRADDLE_SQL, crosses_segment, dumped_commits, dumped_end_of_recovery, promoted_copy,
    read_pg_wal, summarized_commits, waldump, waldump_records, waldump_time,
};

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

/// Commits and restore points placed so that each starts a few bytes before a segment's end
/// and ends in the next: `join` decodes every one pg_waldump shows crossing a boundary
/// (but a commit longer than `MAX_OPEN_RECORD`, which the summary names as its open tail
/// and no summary decodes), the reader resumes after each where pg_waldump does, and the
/// summaries' commits with the joined ones are pg_waldump's.
#[test]
fn pg15_records_across_segments_against_pg_waldump() {
    let sb = Sandbox::new("walrecord-straddle");
    let mut pg = Pg::init(&sb, "pg");
    // No autovacuum, checkpoint or recycling: nothing but the test writes WAL between the
    // padding and the record, and every segment stays in pg_wal.
    pg.configure(
        "autovacuum = off\ncheckpoint_timeout = 1h\nmax_wal_size = 4GB\nwal_keep_size = 1GB\n",
    );
    pg.start();
    pg.sql(STRADDLE_SQL);
    // (bytes left before the segment's end, tables created): the record header split (8,
    // 16), its body split (40…504), a 2-table commit of ~3 KiB, and a 6-table one longer
    // than a page, whose continuation runs past the next segment's first page.
    let plan = [
        (8, 1),
        (16, 1),
        (40, 1),
        (104, 1),
        (304, 1),
        (504, 2),
        (40, 6),
    ];
    for (i, (left, tables)) in plan.iter().enumerate() {
        pg.sql(&format!("call straddle('s{i}', {left}, {tables})"));
    }
    for (i, left) in [8, 40].iter().enumerate() {
        pg.sql(&format!("call restore_point_at('rp{i}', {left})"));
    }
    // A commit flushes the WAL (a restore point alone is not flushed to the file).
    pg.sql("create table flushed(i int)");
    let planned: BTreeSet<u32> = pg
        .sql("select xid from straddled")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let pg_wal = pg.data.join("pg_wal");
    let segs = read_pg_wal(&pg_wal);
    let dump = waldump_records(&pg_wal, &segs[0].0, &segs.last().unwrap().0);
    let seg_size = u64::from(segs[0].2.segment_size);

    let mut found = summarized_commits(&segs);
    let mut crossing: BTreeMap<u32, u32> = BTreeMap::new();
    let mut unjoinable = BTreeSet::new();
    let mut restore_points = Vec::new();
    for (k, r) in dump.iter().enumerate() {
        if !crosses_segment(r.lsn, r.tot, seg_size) {
            continue;
        }
        let i = segs
            .iter()
            .position(|s| s.2.segment_start.0 == r.lsn / seg_size * seg_size)
            .unwrap();
        let (prev, next) = (&segs[i].2, &segs[i + 1].2);
        let tail = prev.open_tail.as_ref().unwrap();
        assert_eq!(
            (tail.lsn.0, tail.total_length),
            (r.lsn, r.tot),
            "{}",
            segs[i].0
        );
        if let Some(after) = dump.get(k + 1) {
            assert_eq!(next.first_record.map(|l| l.0), Some(after.lsn), "{r:?}");
        }
        let joined = walrecord::join(prev, next);
        if let Some(rest) = r.desc.strip_prefix("COMMIT ") {
            let time = waldump_time(rest.split(';').next().unwrap());
            crossing.insert(r.xid, r.tot);
            if r.tot as usize > walrecord::MAX_OPEN_RECORD {
                assert!(joined.is_none() && tail.bytes.is_empty(), "{tail:?}");
                assert!(unjoinable.insert((r.xid, time)));
                continue;
            }
            let Some(Event::Commit(t)) = joined else {
                panic!("commit {} at {}: join gave {joined:?}", r.xid, tail.lsn)
            };
            assert_eq!((t.lsn.0, t.xid, t.time), (r.lsn, r.xid, time));
        } else if let Some(name) = r.desc.strip_prefix("RESTORE_POINT ") {
            let Some(Event::RestorePoint(p)) = joined else {
                panic!("restore point at {}: join gave {joined:?}", tail.lsn)
            };
            assert_eq!((p.lsn.0, p.name.as_str()), (r.lsn, name.trim()));
            restore_points.push(p.name);
        }
    }
    // Every planned record crossed (a test that could pass without one would prove nothing).
    let missed: Vec<&u32> = planned
        .iter()
        .filter(|x| !crossing.contains_key(x))
        .collect();
    assert!(
        missed.is_empty(),
        "commits not across a boundary: {missed:?}"
    );
    assert_eq!(restore_points, ["rp0", "rp1"]);
    assert!(crossing.values().any(|&t| t > 8192) && unjoinable.len() == 1);

    // All commits: the summaries' and the joined ones, and those too long to join.
    let want = dumped_commits(&dump);
    assert!(found.is_disjoint(&unjoinable));
    found.extend(unjoinable);
    assert_eq!(found, want);
    eprintln!(
        "walrecord across segments: {} commits compared with pg_waldump, crossing ones \
         (xid: bytes) {crossing:?}, restore points {restore_points:?}",
        want.len()
    );
    pg.stop();
}

/// A promotion onto timeline 2: the summaries of timeline 2's segments, the first a copy
/// of timeline 1's segment up to the switch, hold the `END_OF_RECOVERY` pg_waldump prints,
/// and the commits on the new timeline.
#[test]
fn pg15_timeline_switch_against_pg_waldump() {
    let sb = Sandbox::new("walrecord-timeline");
    let archive = sb.path().join("archive");
    fs::create_dir(&archive).unwrap();
    sb.chown_to_pg(&archive);
    let mut primary = Pg::init(&sb, "primary");
    primary.configure(&format!(
        "autovacuum = off\narchive_mode = on\narchive_command = 'cp %p {}/%f'\nwal_keep_size = 1GB\n",
        archive.display()
    ));
    primary.start();
    primary.sql("create table t(i int); insert into t values (1); select pg_switch_wal()");
    // A megabyte of WAL: timeline 2 starts 150 pages into its first segment.
    primary.sql("insert into t select generate_series(1, 20000)");
    let mut pg = promoted_copy(&sb, &primary, &archive);
    let xid: u32 = pg
        .sql("begin; insert into t values (3); select txid_current(); commit;")
        .parse()
        .unwrap();
    let pg_wal = pg.data.join("pg_wal");
    let segs: Vec<_> = read_pg_wal(&pg_wal)
        .into_iter()
        .filter(|s| s.0.starts_with("00000002"))
        .collect();
    assert!(!segs.is_empty(), "no timeline 2 segment");
    let dump = waldump_records(&pg_wal, &segs[0].0, &segs.last().unwrap().0);
    let want = dumped_end_of_recovery(&dump);
    let got: Vec<_> = segs
        .iter()
        .flat_map(|s| &s.2.end_of_recovery)
        .map(|e| (e.lsn.0, e.timeline, e.prev_timeline, e.time))
        .collect();
    assert_eq!(got, want);
    assert_eq!((want.len(), want[0].1, want[0].2), (1, 2, 1), "{want:?}");
    let first = &segs[0].2;
    assert_eq!(
        first.timeline, 1,
        "the header of the copied segment names timeline 1"
    );
    assert!(
        want[0].0 - first.segment_start.0 > 8192,
        "the switch is pages in"
    );
    assert_eq!(first.end_of_recovery.len(), 1, "{}: {first:?}", segs[0].0);

    let commits: BTreeSet<(u32, Timestamp)> = segs
        .iter()
        .flat_map(|s| &s.3)
        .filter_map(|e| match e {
            Event::Commit(t) => Some((t.xid, t.time)),
            _ => None,
        })
        .collect();
    let dumped = dumped_commits(&dump);
    assert_eq!(commits, dumped);
    assert!(
        commits.iter().any(|c| c.0 == xid),
        "commit {xid} on timeline 2"
    );
    eprintln!(
        "walrecord timeline switch: END_OF_RECOVERY at {} (tli, prev, time) {:?} in {} ({} \
         timeline 2 segments, the first headed by timeline {}), {} commits compared with \
         pg_waldump",
        wal::Lsn(want[0].0),
        (want[0].1, want[0].2, want[0].3),
        segs[0].0,
        segs.len(),
        first.timeline,
        commits.len()
    );
    pg.stop();
}
