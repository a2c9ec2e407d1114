//! Property tests of every parser that reads what a repository, a manifest or a user hands
//! over: arbitrary and mutated inputs give a value or a typed error — never a panic, never
//! unbounded work. (Parsers private to a module are covered in that module's tests.)

use proptest::prelude::*;

use crate::pg::datadir::{self, TablespaceMapping};
use crate::pg::target::TargetTimeline;
use crate::pg::wal::{self, Lsn, WalFileName};
use crate::repo::crypto::{Class, Keys};
use crate::repo::manifest::{BackupId, BackupManifest};
use crate::repo::object::{self, Envelope, Sealer};

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
