//! Property tests of every parser that reads what a repository, a manifest or a user hands
//! over: arbitrary and mutated inputs give a value or a typed error — never a panic, never
//! unbounded work. (Parsers private to a module are covered in that module's tests.)

use proptest::prelude::*;

use crate::pg::datadir::{self, TablespaceMapping};
use crate::pg::target::TargetTimeline;
use crate::pg::wal::{self, Lsn, WalFileName};
use crate::pg::walrecord::{self, synth};
use crate::repo::crypto::{Class, Keys};
use crate::repo::manifest::{BackupId, BackupManifest};
use crate::repo::object::{self, Envelope, Sealer};

/// Two 1 MiB segments of every kind of record the WAL reader decodes, the first ending in
/// a commit that continues in the second: the valid input the mutations start from.
fn wal_stream() -> &'static synth::Stream {
    static STREAM: std::sync::OnceLock<synth::Stream> = std::sync::OnceLock::new();
    STREAM.get_or_init(|| {
        let mut s = synth::Stream::new(15, 1 << 20, 1, 2);
        let t = synth::time("2026-01-01T00:00:00Z");
        let parts = synth::XactParts {
            dbinfo: true,
            subxacts: vec![7, 8],
            rels: 1,
            stats: 1,
            invals: 40,
            twophase: Some((6, Some("g"))),
        };
        while s.pos < (1 << 20) - 12_000 {
            synth::heap(&mut s, 5, 3000);
            synth::xact(&mut s, 0x00, 5, t, &synth::XactParts::default());
            synth::xact(&mut s, 0x30, 0, t, &parts);
            synth::restore_point(&mut s, t, "rp");
            s.main(
                0,
                0x10,
                0,
                &synth::checkpoint_main(1 << 20, 1, 1, 1_700_000_000),
            );
            s.main(1, 0x10, 6, &synth::prepare_main(6, t, "g", 15));
        }
        while s.pos <= 1 << 20 {
            synth::xact(&mut s, 0x30, 0, t, &parts);
        }
        s
    })
}

/// `seg` fed to a [`walrecord::Summarizer`] in pieces of the sizes `pieces` (cycled), with
/// the events it handed over.
fn streamed(
    seg: &[u8],
    pieces: &[usize],
) -> (
    crate::error::Result<walrecord::SegmentSummary>,
    Vec<walrecord::Event>,
) {
    let mut s = walrecord::Summarizer::new();
    let mut events = Vec::new();
    let mut rest = seg;
    for n in pieces.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, r) = rest.split_at((*n).clamp(1, rest.len()));
        s.feed_with(piece, &mut |e| events.push(e.clone()));
        rest = r;
    }
    (s.finish("x"), events)
}

/// Asserts that `seg` in `pieces` gives what the whole of it does. (Commit 9ae6a12 also
/// checked both against the slice-based reader the streaming one replaced.)
fn same_streamed(seg: &[u8], pieces: &[usize]) -> Result<(), TestCaseError> {
    let mut whole_events = Vec::new();
    let whole = walrecord::walk("x", seg, &mut |e| whole_events.push(e.clone()));
    let (piecewise, piece_events) = streamed(seg, pieces);
    prop_assert_eq!(format!("{piecewise:?}"), format!("{whole:?}"));
    prop_assert_eq!(&piece_events, &whole_events);
    Ok(())
}

/// Piece sizes: single bytes, odd sizes, a page less one, wal-push's 4 MiB.
fn piece_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![
            1usize..=48,
            1usize..20_000,
            Just(8191),
            Just(8192),
            Just(4 << 20)
        ],
        1..6,
    )
}

/// A small valid object to mutate.
fn sealed(plain: &[u8]) -> Vec<u8> {
    Sealer::on_this_thread(1)
        .seal_reader(
            &mut &plain[..],
            plain.len() as u64,
            &Keys::none(),
            Class::Data,
        )
        .expect("seal")
        .0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn names_and_positions_never_panic(s in "\\PC{0,40}", b in proptest::collection::vec(any::<u8>(), 0..48)) {
        let _ = s.parse::<WalFileName>();
        let _ = s.parse::<Lsn>();
        let _ = s.parse::<BackupId>();
        let _ = s.parse::<TargetTimeline>();
        let _ = s.parse::<TablespaceMapping>();
        let _ = datadir::check_relative_path(&s);
        let _ = datadir::tablespace_split(&s);
        let _ = crate::pg::target::parse_time(&s);
        let raw = String::from_utf8_lossy(&b);
        let _ = raw.parse::<WalFileName>();
        let _ = crate::repo::archive::parse_history(&raw);
    }

    #[test]
    fn wal_names_that_parse_round_trip(tli in 1u32.., log in any::<u32>(), seg in 0u32..256) {
        let n = WalFileName::Segment { tli: wal::TimelineId(tli), log, seg };
        prop_assert_eq!(n.to_string().parse::<WalFileName>().ok(), Some(n));
    }

    #[test]
    fn page_headers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64), len in any::<u64>()) {
        let _ = wal::read_long_header("x", &b);
        let name: WalFileName = "000000010000000000000001".parse().unwrap();
        let _ = wal::validate_segment_start("x", &name, &b, len);
    }

    #[test]
    fn wal_records_from_arbitrary_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..20_000),
        at in 0usize..(1 << 20),
        contrecord in any::<bool>(),
    ) {
        // A valid long header (else nothing is read), then anything.
        let mut seg = wal_stream().segment(0)[..40].to_vec();
        if contrecord {
            seg[2] |= 1;
            seg[16..20].copy_from_slice(&u32::from_le_bytes([body.first().copied().unwrap_or(0), 1, 0, 0]).to_le_bytes());
        }
        seg.resize(at.max(40), 0);
        seg.extend(&body);
        seg.resize(seg.len().max(1 << 20), 0);
        let _ = walrecord::summarize("x", &seg);
        let _ = walrecord::summarize("x", &seg[..seg.len().min(at)]);
    }

    #[test]
    fn mutated_wal_segments_never_panic(
        flips in proptest::collection::vec((0usize..(1 << 20), 1u8..), 1..8),
        cut in (1usize << 19)..=(1 << 20),
        second in any::<bool>(),
    ) {
        let stream = wal_stream();
        let mut seg = stream.segment(usize::from(second)).to_vec();
        for (i, x) in &flips {
            seg[*i] ^= x;
        }
        let s = walrecord::summarize("x", &seg[..cut]);
        if let Ok(s) = s {
            prop_assert!(s.records_end.is_none_or(|e| e.0 <= s.segment_start.0 + (1 << 20)));
            let other = walrecord::summarize("x", stream.segment(usize::from(!second)));
            if let Ok(o) = other {
                let _ = walrecord::join(&s, &o);
                let _ = walrecord::join(&o, &s);
            }
        }
    }

    #[test]
    fn streamed_wal_matches_the_whole_segment(
        flips in proptest::collection::vec((0usize..(1 << 20), 1u8..), 0..8),
        page_flips in proptest::collection::vec((0usize..128, 0usize..40, 1u8..), 0..3),
        zeroed in proptest::option::of((0usize..(1 << 20), 0usize..20_000)),
        cut in (1usize << 19)..=(1 << 20) + 100,
        second in any::<bool>(),
        pieces in piece_sizes(),
    ) {
        let stream = wal_stream();
        let mut seg = stream.segment(usize::from(second)).to_vec();
        for (i, x) in &flips {
            seg[*i] ^= x;
        }
        // Page headers (flags, addresses, xlp_rem_len) and zeroed stretches: the faults
        // a crash or a recycled segment leaves.
        for (page, at, x) in &page_flips {
            seg[page * synth::PAGE + at] ^= x;
        }
        if let Some((from, n)) = zeroed {
            let end = (from + n).min(seg.len());
            seg[from..end].fill(0);
        }
        seg.resize(1 << 20, 0);
        seg.extend(vec![0x5A; 100]);
        same_streamed(&seg[..cut], &pieces)?;
    }

    #[test]
    fn streamed_arbitrary_wal_matches_the_whole_segment(
        body in proptest::collection::vec(any::<u8>(), 0..20_000),
        at in 0usize..(1 << 20),
        head in any::<u32>(),
        pieces in piece_sizes(),
    ) {
        let mut seg = wal_stream().segment(0)[..40].to_vec();
        if head % 3 == 0 {
            seg[2] |= 1;
            seg[16..20].copy_from_slice(&(head >> 8 & 0x3FFF).to_le_bytes());
        }
        seg.resize(at.max(40), 0);
        seg.extend(&body);
        same_streamed(&seg, &pieces)?;
        seg.resize(seg.len().max(1 << 20), 0);
        same_streamed(&seg, &pieces)?;
    }

    #[test]
    fn joins_of_arbitrary_halves_never_panic(tail in "[0-9a-f]{0,80}", head in "[0-9a-fA-F+]{0,80}", len in any::<u32>(), rem in any::<u32>()) {
        let stream = wal_stream();
        let mut a = walrecord::summarize("a", stream.segment(0)).expect("valid");
        let mut b = walrecord::summarize("b", stream.segment(1)).expect("valid");
        prop_assert!(walrecord::join(&a, &b).is_some());
        a.open_tail = Some(walrecord::OpenTail { lsn: Lsn(0), total_length: len, bytes: tail });
        b.open_head = Some(walrecord::OpenHead { remaining_length: rem, bytes: head });
        let _ = walrecord::join(&a, &b);
    }

    #[test]
    fn envelopes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Envelope::decode("k", &b);
        let _ = object::open("k", &b, &Keys::none(), object::limit::SMALL);
        let _ = object::read_head("k", &b, 40, &Keys::none());
    }

    #[test]
    fn mutated_objects_are_refused_not_trusted(
        plain in proptest::collection::vec(any::<u8>(), 1..4096),
        at in any::<prop::sample::Index>(),
        flip in 1u8..,
        cut in any::<prop::sample::Index>(),
    ) {
        let good = sealed(&plain);
        let mut bad = good.clone();
        let i = at.index(bad.len());
        bad[i] ^= flip;
        // A changed byte is caught (or, in a byte no check covers, yields the same content).
        if let Ok((back, _)) = object::open("k", &bad, &Keys::none(), object::limit::SMALL) {
            prop_assert_eq!(back, plain.clone());
        }
        let short = &good[..cut.index(good.len())];
        prop_assert!(object::open("k", short, &Keys::none(), object::limit::SMALL).is_err());
    }

    #[test]
    fn manifests_from_arbitrary_json_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = serde_json::from_slice::<BackupManifest>(&b) {
            let _ = datadir::check_entries(&m.entries);
            let _ = datadir::missing_to_start(&m.entries);
        }
        let _ = serde_json::from_slice::<crate::repo::RepoRoot>(&b);
        let _ = serde_json::from_slice::<crate::repo::lock::LockInfo>(&b);
        let _ = serde_json::from_slice::<crate::repo::retention::KeepMark>(&b);
    }

    #[test]
    fn entries_from_arbitrary_paths_are_checked(paths in proptest::collection::vec("[a-z./_0-9]{0,12}", 0..12), links in proptest::collection::vec(("pg_tblspc/[0-9]{1,3}", "/?[a-z./]{0,10}"), 0..3)) {
        let mut entries: Vec<crate::repo::manifest::Entry> = paths
            .into_iter()
            .map(|p| crate::repo::manifest::Entry::file(p, 0o600, 0, 0, vec![]))
            .collect();
        entries.extend(links.into_iter().map(|(path, target)| crate::repo::manifest::Entry::Symlink { path, target }));
        if datadir::check_entries(&entries).is_ok() {
            // Whatever passes stays beneath the directory: no absolute path, no `..`.
            for e in &entries {
                prop_assert!(!e.path().starts_with('/'));
                prop_assert!(!e.path().split('/').any(|c| c == ".." || c == "." || c.is_empty()));
            }
        }
    }
}
