//! Tests of the streaming [`Summarizer`]: pieces of any size give what the whole segment
//! gives. (Commit 9ae6a12 also checked both against the slice-based reader it replaced.)

use super::synth::{self, Stream, XactParts, time};
use super::*;

const MIB: usize = 1 << 20;

/// Every piece size the tests feed: single bytes, a page less one, wal-push's 4 MiB.
const PIECES: [usize; 6] = [1, 7, 8191, 8192, 100_003, 4 * MIB];

fn fed(seg: &[u8], piece: usize) -> (Result<SegmentSummary>, Vec<Event>) {
    let mut s = Summarizer::new();
    let mut ev = Vec::new();
    for p in seg.chunks(piece) {
        s.feed_with(p, &mut |e| ev.push(e.clone()));
    }
    (s.finish("seg"), ev)
}

/// Asserts `seg` gives the same summary and events whole and in every piece size.
pub(super) fn same(seg: &[u8]) -> SegmentSummary {
    let mut whole_ev = Vec::new();
    let whole = walk("seg", seg, &mut |e| whole_ev.push(e.clone()));
    for piece in PIECES {
        let (s, ev) = fed(seg, piece);
        assert_eq!(format!("{s:?}"), format!("{whole:?}"), "pieces of {piece}");
        assert_eq!(ev, whole_ev, "pieces of {piece}");
    }
    whole.unwrap_or_else(|_| summary_of_nothing())
}

fn summary_of_nothing() -> SegmentSummary {
    let mut s = Stream::new(15, MIB, 1, 1);
    s.bytes.truncate(40);
    summarize("x", &s.bytes).unwrap()
}

#[test]
fn long_records_are_decoded_without_being_held() {
    for major in [13, 15, 18] {
        let mut s = Stream::new(major, 4 * MIB, 1, 1);
        synth::heap(&mut s, 1, 100);
        // Over a MiB of subtransactions, relations and invalidations: the counts and the
        // prepared xid lie far past the first MAX_OPEN_RECORD bytes.
        let parts = XactParts {
            dbinfo: true,
            subxacts: (0..200_000).collect(),
            rels: 30_000,
            stats: if major >= 15 { 20_000 } else { 0 },
            invals: 10_000,
            twophase: Some((4242, Some("long-one"))),
        };
        let t = time("2026-02-03T04:05:06.789Z");
        let c = synth::xact(&mut s, 0x30, 0, t, &parts);
        let a = synth::xact(&mut s, 0x40, 0, t, &XactParts { invals: 0, ..parts });
        let sum = same(s.segment(0));
        assert_eq!(
            sum.commits
                .first
                .as_ref()
                .map(|e| (e.lsn.0, e.xid, e.prepared)),
            Some((c, 4242, true))
        );
        assert_eq!(
            sum.aborts.first.as_ref().map(|e| (e.lsn.0, e.xid)),
            Some((a, 4242))
        );
        // What the reader held while reading them: no more than a few pages.
        let mut r = Summarizer::new();
        let mut most = 0;
        for p in s.segment(0).chunks(8191) {
            r.feed(p);
            most = most.max(r.held());
        }
        assert!(most <= 2 * MAX_OPEN_RECORD + 1024, "{most}");
    }
}

#[test]
fn hand_built_segments_stream_alike() {
    let mut s = Stream::new(15, MIB, 7, 2);
    let t = time("2026-07-08T09:10:11Z");
    synth::xact(&mut s, 0x00, 5, t, &XactParts::default());
    while s.pos < MIB - 3 * synth::PAGE {
        synth::heap(&mut s, 1, 3000);
        synth::restore_point(&mut s, t, "rp");
    }
    let parts = XactParts {
        invals: 150,
        twophase: Some((77, None)),
        ..XactParts::default()
    };
    while s.pos <= MIB {
        synth::xact(&mut s, 0x30, 0, t, &parts);
    }
    synth::xact(&mut s, 0x00, 6, t, &XactParts::default());
    s.main(0, 0x40, 0, &[]);
    for seg in [s.segment(0), s.segment(1)] {
        same(seg);
        // Truncated anywhere, and with bytes past the segment's end.
        for cut in [0, 39, 40, 41, 8191, 8192, 8200, MIB / 2 + 3, MIB - 1] {
            same(&seg[..cut]);
        }
        let mut longer = seg.to_vec();
        longer.extend([0xAB; 5000]);
        same(&longer);
    }
    let a = summarize("a", s.segment(0)).unwrap();
    assert!(a.open_tail.is_some());
    assert!(matches!(
        summarize("b", s.segment(1)).unwrap().end,
        WalEnd::Switch { .. }
    ));
}

/// A quick timing on a real segment when one is given (`PITRKIT_WAL_SEGMENT=<path>`),
/// else on a synthetic one, fed in wal-push's 4 MiB pieces and whole: printed, not
/// asserted (run with `--release` for figures that mean something).
#[test]
fn timing() {
    let data = match std::env::var_os("PITRKIT_WAL_SEGMENT") {
        Some(p) => std::fs::read(p).unwrap(),
        None => {
            let mut s = Stream::new(15, 16 * MIB, 1, 1);
            let mut xid = 1000;
            while s.pos < 16 * MIB - 3 * synth::PAGE {
                synth::heap(&mut s, xid, 150);
                synth::xact(
                    &mut s,
                    0x00,
                    xid,
                    time("2026-01-01T00:00:00Z"),
                    &XactParts::default(),
                );
                xid += 1;
            }
            s.segment(0).to_vec()
        }
    };
    let time = |f: &dyn Fn() -> SegmentSummary| {
        let t = std::time::Instant::now();
        std::hint::black_box(f());
        t.elapsed()
    };
    let streamed = || {
        let mut s = Summarizer::new();
        data.chunks(4 * MIB).for_each(|p| s.feed(p));
        s.finish("seg").unwrap()
    };
    let whole = || summarize("seg", &data).unwrap();
    let crc = || {
        std::hint::black_box(crc32c::crc32c(&data));
        summary_of_nothing()
    };
    // Interleaved, best of 15: other work on the machine slows both alike.
    let mut best = [std::time::Duration::MAX; 3];
    for _ in 0..15 {
        for (b, f) in best
            .iter_mut()
            .zip([&streamed as &dyn Fn() -> _, &whole, &crc])
        {
            *b = (*b).min(time(f));
        }
    }
    let [streamed, whole, crc] = best;
    // The segment in every piece size.
    let sum = same(&data);
    eprintln!(
        "walrecord timing ({} bytes, {} records, {} commits; best of 15): streamed in 4 MiB \
         pieces {streamed:?}, whole {whole:?} (ratio {:.2}); a CRC of every byte \
         alone {crc:?}",
        data.len(),
        sum.records,
        sum.commits.count,
        streamed.as_secs_f64() / whole.as_secs_f64().max(1e-9),
    );
}
