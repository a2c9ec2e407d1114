//! Unit tests of the segment reader on hand-built segments (see `synth`).

use super::synth::{self, Stream, XactParts, time};
use super::*;

const MIB: usize = 1 << 20;

/// The summary and events of `seg`, the same in every piece size (`tests_stream`).
fn events(seg: &[u8]) -> (SegmentSummary, Vec<Event>) {
    let mut v = Vec::new();
    let s = walk("seg", seg, &mut |e| v.push(e.clone())).unwrap();
    assert_eq!(super::tests_stream::same(seg), s);
    (s, v)
}

fn commit_at(s: &mut Stream, xid: u32, t: &str) -> u64 {
    synth::xact(s, 0x00, xid, time(t), &XactParts::default())
}

#[test]
fn commits_and_aborts() {
    let mut s = Stream::new(15, MIB, 3, 1);
    let a = commit_at(&mut s, 700, "2026-01-02T03:04:05.123456Z");
    synth::heap(&mut s, 701, 100);
    let b = synth::xact(
        &mut s,
        0x20,
        701,
        time("2026-01-02T03:04:06Z"),
        &XactParts::default(),
    );
    let c = commit_at(&mut s, 702, "2026-01-02T03:04:04Z");
    let end = s.lsn(s.pos);
    let (sum, ev) = events(s.segment(0));
    assert_eq!(sum.segment_start, Lsn(3 * MIB as u64));
    assert_eq!((sum.pg_major, sum.timeline, sum.records), (15, 1, 4));
    assert_eq!(sum.first_record, Some(Lsn(a)));
    assert_eq!(sum.records_end, Some(Lsn(end)));
    assert_eq!(
        sum.end,
        WalEnd::Invalid {
            lsn: Lsn(end.div_ceil(8) * 8),
            reason: InvalidReason::RecordLength
        }
    );
    assert_eq!(sum.commits.count, 2);
    let first = sum.commits.first.as_ref().unwrap();
    assert_eq!((first.lsn, first.xid), (Lsn(a), 700));
    assert_eq!(first.time, time("2026-01-02T03:04:05.123456Z"));
    assert_eq!(sum.commits.last.as_ref().unwrap().lsn, Lsn(c));
    // Times out of WAL order: min and max are not first and last.
    assert_eq!(sum.commits.min_time, Some(time("2026-01-02T03:04:04Z")));
    assert_eq!(
        sum.commits.max_time,
        Some(time("2026-01-02T03:04:05.123456Z"))
    );
    assert_eq!(sum.aborts.count, 1);
    assert_eq!(sum.aborts.first.as_ref().unwrap().lsn, Lsn(b));
    assert_eq!(ev.len(), 3);
    // Commits and aborts alike are what recovery_target_xid can stop at.
    assert_eq!(sum.xact_xids, Some(vec![[700, 702]]));
    assert_eq!(
        [699, 700, 701, 702, 703].map(|x| sum.ends_xid(x)),
        [Some(false), Some(true), Some(true), Some(true), Some(false)]
    );
    // The summary round-trips as the JSON document it will be stored as.
    let json = serde_json::to_string(&sum).unwrap();
    assert!(json.contains("\"2026-01-02T03:04:05.123456Z\""), "{json}");
    assert_eq!(serde_json::from_str::<SegmentSummary>(&json).unwrap(), sum);
}

#[test]
fn two_phase_parts_are_walked_in_order_per_major() {
    for major in [13, 14, 15, 16, 17, 18] {
        let mut s = Stream::new(major, MIB, 1, 1);
        let parts = XactParts {
            dbinfo: true,
            subxacts: vec![901, 902, 903],
            rels: 2,
            stats: if major >= 15 { 3 } else { 0 },
            invals: 5,
            twophase: Some((900, Some("gid-1"))),
        };
        let t = time("2026-03-04T05:06:07.000001Z");
        let p = s.main(
            RM_XACT,
            0x10,
            900,
            &synth::prepare_main(900, t, "gid-1", major),
        );
        synth::xact(&mut s, 0x30, 0, t, &parts);
        synth::xact(&mut s, 0x40, 0, t, &parts);
        synth::xact(
            &mut s,
            0x00,
            950,
            t,
            &XactParts {
                twophase: None,
                ..parts
            },
        );
        let (sum, ev) = events(s.segment(0));
        assert_eq!(ev.len(), 4, "{major}: {ev:?}");
        let Event::Prepare(pr) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            (pr.lsn, pr.xid, pr.time, pr.gid.as_str()),
            (Lsn(p), 900, t, "gid-1")
        );
        assert_eq!(sum.commits.count, 2, "{major}");
        assert_eq!(sum.commits.prepared, 1);
        assert_eq!(
            sum.commits.first.as_ref().map(|c| (c.xid, c.prepared)),
            Some((900, true))
        );
        assert_eq!(sum.commits.last.as_ref().map(|c| c.xid), Some(950));
        assert_eq!(
            sum.aborts.first.as_ref().map(|c| (c.xid, c.time)),
            Some((900, t))
        );
        assert_eq!(sum.prepares.count, 1);
    }
}

const RM_XACT: u8 = decode::RM_XACT_ID;

#[test]
fn restore_points_checkpoints_end_of_recovery() {
    let mut s = Stream::new(17, MIB, 5, 1);
    let t = time("2026-05-06T07:08:09.5Z");
    let r = synth::restore_point(&mut s, t, "before-upgrade");
    let c = s.main(
        0,
        0x10,
        0,
        &synth::checkpoint_main(0x5000028, 2, 1, 1_780_000_000),
    );
    let mut eor = decode::pg_microseconds(t).to_le_bytes().to_vec();
    eor.extend(3u32.to_le_bytes());
    eor.extend(2u32.to_le_bytes());
    eor.extend(1i32.to_le_bytes());
    let e = s.main(0, 0x90, 0, &eor);
    let (sum, _) = events(s.segment(0));
    assert_eq!(
        sum.restore_points,
        vec![RestorePoint {
            lsn: Lsn(r),
            time: t,
            name: "before-upgrade".into()
        }]
    );
    assert_eq!(
        sum.checkpoints,
        vec![Checkpoint {
            lsn: Lsn(c),
            redo: Lsn(0x5000028),
            timeline: 2,
            prev_timeline: 1,
            time: Timestamp::from_second(1_780_000_000).unwrap(),
            online: true,
        }]
    );
    assert_eq!(
        sum.end_of_recovery,
        vec![EndOfRecovery {
            lsn: Lsn(e),
            time: t,
            timeline: 3,
            prev_timeline: 2
        }]
    );
}

#[test]
fn records_spanning_pages() {
    let mut s = Stream::new(16, MIB, 1, 1);
    // A block-data record of another rmgr over three pages (read without copying), then
    // a commit with many invalidation messages across a page boundary.
    synth::heap(&mut s, 10, 20_000);
    let parts = XactParts {
        invals: 600,
        ..XactParts::default()
    };
    let c = synth::xact(&mut s, 0x00, 11, time("2026-01-01T00:00:00Z"), &parts);
    assert!(c / synth::PAGE as u64 != (s.lsn(s.pos) - 1) / synth::PAGE as u64);
    let (sum, ev) = events(s.segment(0));
    let xids: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Commit(t) => Some((t.lsn.0, t.xid)),
            _ => None,
        })
        .collect();
    assert_eq!(xids, vec![(c, 11)]);
    assert!(matches!(sum.end, WalEnd::Invalid { .. }));
}

#[test]
fn a_header_split_by_a_page_boundary() {
    let mut s = Stream::new(14, MIB, 1, 1);
    // 40 + 49 + d = PAGE - 8: the next record's header starts 8 bytes before the page end.
    synth::heap(&mut s, 12, (synth::PAGE - 8 - 40 - 49) as u16);
    let split = commit_at(&mut s, 13, "2026-01-01T00:00:01Z");
    assert_eq!(split % synth::PAGE as u64, synth::PAGE as u64 - 8);
    let after = commit_at(&mut s, 14, "2026-01-01T00:00:02Z");
    let (_, ev) = events(s.segment(0));
    let lsns: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Commit(t) => Some(t.lsn.0),
            _ => None,
        })
        .collect();
    assert_eq!(lsns, vec![split, after]);
}

#[test]
fn record_across_the_segment_end_joins() {
    let mut s = Stream::new(15, MIB, 7, 2);
    while s.pos < MIB - 3 * synth::PAGE {
        synth::heap(&mut s, 1, 8000);
    }
    // A commit with enough invalidations to cross into the next segment.
    let parts = XactParts {
        invals: 150,
        twophase: Some((4242, None)),
        ..XactParts::default()
    };
    let t = time("2026-07-08T09:10:11.121314Z");
    let mut c;
    loop {
        c = synth::xact(&mut s, 0x30, 0, t, &parts);
        if s.pos > MIB {
            break;
        }
    }
    let after = commit_at(&mut s, 4243, "2026-07-08T09:10:12Z");
    let (a, _) = events(s.segment(0));
    let (b, ev) = events(s.segment(1));
    let tail = a.open_tail.as_ref().unwrap();
    assert_eq!(tail.lsn, Lsn(c));
    assert_eq!(a.end, WalEnd::SegmentEnd);
    assert!(a.records_end.is_some_and(|e| e.0 <= c));
    let head = b.open_head.as_ref().unwrap();
    assert_eq!(head.remaining_length as usize * 2, head.bytes.len());
    // The record is in neither summary, and the next segment starts after it.
    assert!(a.commits.last.as_ref().is_none_or(|l| l.lsn.0 < c));
    assert_eq!(b.first_record, Some(Lsn(after)));
    assert_eq!(ev.len(), 1);
    let joined = join(&a, &b).unwrap();
    assert_eq!(
        joined,
        Event::Commit(TxnEnd {
            lsn: Lsn(c),
            xid: 4242,
            time: t,
            prepared: true
        })
    );
    // Not adjacent, or a byte changed: nothing.
    assert_eq!(join(&b, &a), None);
    let mut bad = b.clone();
    let mut h = bad.open_head.take().unwrap();
    h.bytes
        .replace_range(0..2, if &h.bytes[0..2] == "00" { "01" } else { "00" });
    bad.open_head = Some(h);
    assert_eq!(join(&a, &bad), None);
}

#[test]
fn switch_ends_the_segment() {
    let mut s = Stream::new(18, MIB, 2, 1);
    commit_at(&mut s, 5, "2026-01-01T00:00:00Z");
    let sw = s.main(0, 0x40, 0, &[]);
    // Whatever follows a switch is not read (PostgreSQL pads with empty pages).
    commit_at(&mut s, 6, "2026-01-01T00:00:01Z");
    let (sum, _) = events(s.segment(0));
    assert_eq!(sum.end, WalEnd::Switch { lsn: Lsn(sw) });
    assert_eq!((sum.records, sum.commits.count), (2, 1));
}

#[test]
fn garbage_and_bad_crcs_end_valid_wal() {
    let mut s = Stream::new(15, MIB, 2, 1);
    commit_at(&mut s, 5, "2026-01-01T00:00:00Z");
    let second = commit_at(&mut s, 6, "2026-01-01T00:00:01Z");
    let third = commit_at(&mut s, 7, "2026-01-01T00:00:02Z");
    let good = s.segment(0).to_vec();

    // Garbage after the last record.
    let mut g = good.clone();
    let at = s.pos.div_ceil(8) * 8;
    for (i, b) in g[at..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    let (sum, _) = events(&g);
    assert_eq!(sum.commits.count, 3);
    assert!(matches!(sum.end, WalEnd::Invalid { lsn, .. } if lsn.0 == s.lsn(at)));

    // A byte of the second record's body changed: only the first counts.
    let mut c = good.clone();
    let off = (second - s.start) as usize + 30;
    c[off] ^= 0x40;
    let (sum, _) = events(&c);
    assert_eq!(sum.commits.count, 1);
    assert_eq!(
        sum.end,
        WalEnd::Invalid {
            lsn: Lsn(second),
            reason: InvalidReason::Crc
        }
    );

    // The third record's xl_prev pointing elsewhere: a header error.
    let mut p = good.clone();
    let off = (third - s.start) as usize + 8;
    p[off] ^= 0x08;
    let (sum, _) = events(&p);
    assert_eq!(sum.commits.count, 2);
    assert!(matches!(
        sum.end,
        WalEnd::Invalid {
            reason: InvalidReason::RecordHeader,
            ..
        }
    ));

    // A recycled page (an old page address) ends WAL at that page.
    let mut s2 = Stream::new(15, MIB, 2, 1);
    while s2.pos < synth::PAGE + 100 {
        commit_at(&mut s2, 9, "2026-01-01T00:00:00Z");
    }
    let mut r = s2.segment(0).to_vec();
    r[synth::PAGE + 8] ^= 0x01;
    let (sum, _) = events(&r);
    assert!(matches!(
        sum.end,
        WalEnd::Invalid {
            reason: InvalidReason::PageHeader | InvalidReason::Contrecord,
            ..
        }
    ));

    // A short file.
    let (sum, _) = events(&good[..MIB / 2]);
    assert_eq!(sum.commits.count, 3);
    assert!(matches!(
        sum.end,
        WalEnd::Invalid {
            reason: InvalidReason::RecordLength,
            ..
        }
    ));
    assert!(summarize("x", &good[..20]).is_err());
}

#[test]
fn an_overwritten_contrecord_is_skipped() {
    let mut s = Stream::new(15, MIB, 2, 1);
    commit_at(&mut s, 5, "2026-01-01T00:00:00Z");
    // A record whose continuation was lost: only its first part reached the page.
    synth::heap(&mut s, 6, 9000);
    s.bytes[synth::PAGE..2 * synth::PAGE].fill(0);
    s.prev = s.start + 40;
    s.pos = synth::PAGE - 1;
    s.overwrite_next_page();
    let after = commit_at(&mut s, 7, "2026-01-01T00:00:01Z");
    let (sum, ev) = events(s.segment(0));
    assert_eq!(ev.len(), 2, "{sum:?}");
    assert_eq!(sum.commits.last.as_ref().map(|c| c.lsn), Some(Lsn(after)));
}

#[test]
fn a_segment_inside_one_long_record() {
    // A continuation longer than the whole segment: no record starts in it.
    let mut s = Stream::new(15, MIB, 2, 3);
    commit_at(&mut s, 5, "2026-01-01T00:00:00Z");
    while s.pos < MIB - 9000 {
        synth::heap(&mut s, 1, 8000);
    }
    let parts = XactParts {
        subxacts: (0..300_000).collect(),
        ..XactParts::default()
    };
    synth::xact(&mut s, 0x00, 77, time("2026-01-01T00:00:00Z"), &parts);
    let (sum, ev) = events(s.segment(1));
    assert_eq!((sum.first_record, sum.records, ev.len()), (None, 0, 0));
    assert_eq!(sum.end, WalEnd::SegmentEnd);
    assert_eq!(sum.open_head, None, "too long to keep");
    let (a, _) = events(s.segment(0));
    let tail = a.open_tail.unwrap();
    assert!(tail.bytes.is_empty() && tail.total_length > MIB as u32);
}

#[test]
fn xid_ranges_merge_and_are_bounded() {
    assert_eq!(
        xid_ranges(vec![9, 3, 4, 5, 3, 11, 10, u32::MAX]),
        Some(vec![[3, 5], [9, 11], [u32::MAX, u32::MAX]])
    );
    assert_eq!(xid_ranges(vec![]), Some(vec![]));
    // Every other xid: one range each, past the bound.
    let scattered: Vec<u32> = (0..=MAX_XID_RANGES as u32).map(|i| i * 2).collect();
    assert_eq!(xid_ranges(scattered), None);
    let dense: Vec<u32> = (0..100_000).collect();
    assert_eq!(xid_ranges(dense), Some(vec![[0, 99_999]]));
}
