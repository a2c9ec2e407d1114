//! Summaries of archived WAL segments (docs/FORMAT.md, "WAL summaries"): what each segment
//! holds for point-in-time recovery — transaction ends with their times, restore points —
//! written by wal-push beside the segment, or backfilled by `pitr-check index`. From them
//! pitr-check reports the last commit each backup's window reaches (the effective RPO) and
//! the restore points in it, and a restore checks its target before anything moves.
//!
//! Trust: a summary is opened like any object (envelope, digest, size limit), then checked
//! against its key and the repository root (system identifier, segment size, timeline and
//! start): one that disagrees is unreadable and its segment counts as not summarized, which
//! only ever falls back to the checks made without summaries. A summary is a statement
//! about a segment, not the segment: a writer of the repository can plant a false one, as
//! it could plant WAL.
//!
//! Cost: one small object per segment. A target time or the last commit needs only the
//! window's newest summarized segments (read from the end back to the first that ends a
//! transaction); a restore-point name and the listing of points read every summary of the
//! window, in parallel.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use jiff::Timestamp;
use serde::Serialize;

use crate::error::Result;
use crate::io::{lock, parallel};
use crate::pg::wal::{Lsn, WalFileName};
use crate::pg::walrecord::{self, Event, SegmentSummary};
use crate::repo::archive::{ArchiveIndex, Window};
use crate::repo::object;
use crate::repo::{RepoRoot, Repository, layout};
use crate::storage::{ObjectKey, PutMode};

/// The most a summary may claim in plain bytes: its lists are bounded by
/// [`walrecord::MAX_LISTED`] and its open record by [`walrecord::MAX_OPEN_RECORD`].
const MAX_SUMMARY: u64 = 1 << 20;

/// Stores the summary of `name` unless it has one: computed from the segment's bytes, every
/// writer of the same segment writes the same, and the first stays. A wrong one (planted,
/// or written for a segment whose own push then failed in a race) is what `pitr-check
/// verify` finds; deleted, `pitr-check index` writes it again.
pub fn store(repo: &Repository, name: &WalFileName, s: &SegmentSummary) -> Result<()> {
    let sealed = repo.seal_document("WAL summary", s)?;
    repo.store()
        .put(&layout::summary(name), &sealed, PutMode::CreateNew)
        .map(drop)
}

/// A transaction end the archive holds: what `recovery_target_*` can stop at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    pub timeline: u32,
    pub lsn: Lsn,
    pub xid: u32,
    pub time: Timestamp,
}

/// A restore point, on the timeline whose segment holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    pub timeline: u32,
    pub lsn: Lsn,
    pub time: Timestamp,
    pub name: String,
}

/// What the summaries say about the end of a window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct End {
    /// The newest commit recovery replays in the window.
    pub last_commit: Option<Commit>,
    /// The latest time of any transaction end (commit or abort) in the segments read: a
    /// `recovery_target_time` is reached only by a transaction that ends after it.
    pub last_xact_time: Option<Timestamp>,
    /// Whether every segment after the one holding `last_commit` is summarized (so nothing
    /// newer can hide in the window); false also when no summary was found at all.
    pub exact: bool,
}

/// The summaries a repository holds, read on demand.
pub struct Summaries<'a> {
    repo: &'a Repository,
    root: RepoRoot,
    listed: BTreeSet<WalFileName>,
    /// Summaries that could not be used, with why: findings for the caller.
    unreadable: Mutex<Vec<(ObjectKey, String)>>,
    /// What was read, so that windows sharing segments read them once.
    read: Mutex<HashMap<WalFileName, Option<SegmentSummary>>>,
}

impl<'a> Summaries<'a> {
    /// Lists the repository's summaries (one listing; nothing is read yet).
    pub fn list(repo: &'a Repository, root: &RepoRoot) -> Result<Self> {
        let listed = repo
            .store()
            .list(layout::SUMMARIES)?
            .into_iter()
            .filter_map(|o| layout::summary_of(o.key.as_str()))
            .collect();
        Ok(Summaries {
            repo,
            root: root.clone(),
            listed,
            unreadable: Mutex::new(Vec::new()),
            read: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `name` has a summary listed.
    pub fn has(&self, name: &WalFileName) -> bool {
        self.listed.contains(name)
    }

    pub fn listed(&self) -> impl Iterator<Item = &WalFileName> {
        self.listed.iter()
    }

    /// Summaries that were listed but could not be used, with why.
    pub fn unreadable(&self) -> Vec<(ObjectKey, String)> {
        lock(&self.unreadable).clone()
    }

    /// The summary of `name`, if one is stored and checks out. A store that fails is an
    /// error; a summary that is damaged, foreign or about another segment is noted in
    /// [`Summaries::unreadable`] and treated as absent.
    pub fn read(&self, name: &WalFileName) -> Result<Option<SegmentSummary>> {
        if !self.has(name) {
            return Ok(None);
        }
        if let Some(known) = lock(&self.read).get(name) {
            return Ok(known.clone());
        }
        let s = self.fetch(name)?;
        lock(&self.read).insert(*name, s.clone());
        Ok(s)
    }

    fn fetch(&self, name: &WalFileName) -> Result<Option<SegmentSummary>> {
        let key = layout::summary(name);
        let Some(stored) = self.repo.store().get(&key)? else {
            return Ok(None);
        };
        match self.open(name, &key, &stored) {
            Ok(s) => Ok(Some(s)),
            Err(why) => {
                lock(&self.unreadable).push((key, why));
                Ok(None)
            }
        }
    }

    fn open(
        &self,
        name: &WalFileName,
        key: &ObjectKey,
        stored: &[u8],
    ) -> std::result::Result<SegmentSummary, String> {
        let (json, _) = object::open(key.as_str(), stored, self.repo.keys(), MAX_SUMMARY)
            .map_err(|e| e.to_string())?;
        let s: SegmentSummary =
            serde_json::from_slice(&json).map_err(|e| format!("not a WAL summary: {e}"))?;
        let seg_size = self.root.wal_segment_size;
        let start = name
            .segno(seg_size)
            .and_then(|n| n.checked_mul(seg_size.into()));
        if s.format_version != walrecord::SUMMARY_FORMAT_VERSION {
            return Err(format!(
                "summary version {} is not supported",
                s.format_version
            ));
        }
        if s.system_identifier != self.root.system_identifier
            || s.segment_size != seg_size
            // The first segment of a new timeline starts with a copy of its parent's pages
            // up to the switch, whose headers carry the parent's timeline.
            || s.timeline > name.timeline().0
            || Some(s.segment_start.0) != start
        {
            return Err(format!(
                "describes segment {} of system {} ({} byte segments), not {name} of this \
                 repository",
                s.segment_start, s.system_identifier, s.segment_size
            ));
        }
        Ok(s)
    }

    /// Reads the summaries of `names` with `jobs` requests in flight, in order.
    pub fn read_many(
        &self,
        names: &[WalFileName],
        jobs: usize,
    ) -> Result<Vec<Option<SegmentSummary>>> {
        parallel::map(jobs, names, |n| self.read(n))
    }

    /// The newest transaction ends recovery replays in `window`, reading summaries from the
    /// window's end back until a segment that ends a transaction (`jobs` at a time).
    pub fn end_of(&self, index: &ArchiveIndex, window: &Window, jobs: usize) -> Result<End> {
        let names = index.window_segments(window);
        let mut end = End {
            exact: true,
            ..End::default()
        };
        let batch = jobs.max(1);
        let mut upper = names.len();
        // The segment after the one being looked at: a record can start in one and end in
        // the next, and then it is in neither summary, only in the two halves they keep.
        let mut later: Option<SegmentSummary> = None;
        while upper > 0 {
            let lower = upper.saturating_sub(batch);
            let read = self.read_many(&names[lower..upper], jobs)?;
            for (name, s) in names[lower..upper].iter().zip(read).rev() {
                let Some(s) = s else {
                    end.exact = false;
                    later = None;
                    continue;
                };
                let joined = later.as_ref().and_then(|n| walrecord::join(&s, n));
                let joined_end = match &joined {
                    Some(Event::Commit(t) | Event::Abort(t)) => Some(t),
                    _ => None,
                };
                let xact = [s.commits.max_time, s.aborts.max_time]
                    .into_iter()
                    .flatten()
                    .filter(|_| s.records_end.is_some_and(|e| e > window.from_lsn))
                    .chain(joined_end.map(|t| t.time))
                    .max();
                end.last_xact_time = end.last_xact_time.max(xact);
                // A straddling commit starts after every record that starts in `s`.
                let last = match &joined {
                    Some(Event::Commit(t)) => Some(t),
                    _ => s.commits.last.as_ref(),
                };
                if let Some(c) = last.filter(|c| c.lsn >= window.from_lsn) {
                    end.last_commit = Some(Commit {
                        timeline: name.timeline().0,
                        lsn: c.lsn,
                        xid: c.xid,
                        time: c.time,
                    });
                    return Ok(end);
                }
                later = Some(s);
            }
            upper = lower;
        }
        Ok(end)
    }

    /// The summary of every segment recovery reads through `window`, in order (`None`
    /// where a segment has none).
    pub fn of_window(
        &self,
        index: &ArchiveIndex,
        window: &Window,
        jobs: usize,
    ) -> Result<Vec<(WalFileName, Option<SegmentSummary>)>> {
        let names = index.window_segments(window);
        let read = self.read_many(&names, jobs)?;
        Ok(names.into_iter().zip(read).collect())
    }

    /// Every restore point recovery passes in `window` (after the backup is consistent),
    /// and how many of the window's segments are summarized.
    pub fn points_in(
        &self,
        index: &ArchiveIndex,
        window: &Window,
        jobs: usize,
    ) -> Result<(Vec<Point>, usize, usize)> {
        let (names, read): (Vec<_>, Vec<_>) =
            self.of_window(index, window, jobs)?.into_iter().unzip();
        let summarized = read.iter().filter(|s| s.is_some()).count();
        let pairs: Vec<_> = names.iter().copied().zip(read.iter().cloned()).collect();
        let straddling = joined(&pairs).into_iter().filter_map(|(n, e)| match e {
            Event::RestorePoint(p) => Some((n, p)),
            _ => None,
        });
        let mut points: Vec<Point> = names
            .iter()
            .zip(&read)
            .filter_map(|(n, s)| Some((n, s.as_ref()?)))
            .flat_map(|(n, s)| s.restore_points.iter().map(move |p| (*n, p.clone())))
            .chain(straddling)
            .map(|(n, p)| Point {
                timeline: n.timeline().0,
                lsn: p.lsn,
                time: p.time,
                name: p.name,
            })
            .filter(|p| p.lsn >= window.from_lsn && p.lsn < window.to_lsn)
            .collect();
        points.sort_by_key(|p| p.lsn);
        Ok((points, summarized, names.len()))
    }
}

/// The records that start in one segment of `segments` (consecutive, in order) and end in the
/// next: in neither summary, decoded from the halves the two keep ([`walrecord::join`]).
/// Each comes with the segment it starts in.
pub fn joined(segments: &[(WalFileName, Option<SegmentSummary>)]) -> Vec<(WalFileName, Event)> {
    segments
        .windows(2)
        .filter_map(|w| match (&w[0].1, &w[1].1) {
            (Some(a), Some(b)) => walrecord::join(a, b).map(|e| (w[0].0, e)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wal::TimelineId;
    use crate::pg::walrecord::synth::{self, Stream, XactParts};
    use crate::repo::ClusterIdentity;
    use crate::repo::archive::Stored;
    use crate::storage::memory::MemoryStore;

    const SEG: u32 = 1 << 20;

    /// The last commit of a window is the one that straddles its last two segments, which
    /// neither summary holds: `end_of` finds it from the halves they keep.
    #[test]
    fn a_commit_across_two_segments_is_the_last_commit() {
        let mut s = Stream::new(15, SEG as usize, 1, 2);
        let t = synth::time("2026-01-01T00:00:00Z");
        synth::xact(&mut s, 0x00, 700, t, &XactParts::default());
        while s.pos < SEG as usize - 2000 {
            synth::heap(&mut s, 701, 1000);
        }
        // A commit big enough (many subtransactions) to cross into the second segment.
        let late = synth::time("2026-01-01T00:00:09Z");
        let parts = XactParts {
            subxacts: (800..1400).collect(),
            ..XactParts::default()
        };
        let lsn = synth::xact(&mut s, 0x00, 702, late, &parts);
        assert!(s.pos > SEG as usize, "the commit crosses the boundary");
        let repo = Repository::new(Box::new(MemoryStore::default()));
        let root = repo
            .check_cluster(
                None,
                "test",
                &ClusterIdentity {
                    pg_major: 15,
                    system_identifier: synth::SYSID,
                    segment_size: SEG,
                },
            )
            .unwrap();
        for i in 0..2 {
            let name = WalFileName::segment(TimelineId(1), 1 + i as u64, SEG);
            let sum = walrecord::summarize("seg", s.segment(i)).unwrap();
            assert!(sum.commits.last.as_ref().is_none_or(|c| c.xid == 700));
            store(&repo, &name, &sum).unwrap();
        }
        let index = ArchiveIndex::from_parts(
            SEG,
            (1..=2).map(|segno| Stored {
                tli: 1,
                segno,
                stored_at: None,
            }),
            vec![],
        );
        let window = Window {
            timeline: 1,
            from_lsn: Lsn(SEG as u64 + 64),
            from_time: t,
            to_lsn: Lsn(3 * SEG as u64),
            to_time: None,
            cut_by: None,
        };
        let summaries = Summaries::list(&repo, &root).unwrap();
        let end = summaries.end_of(&index, &window, 2).unwrap();
        let last = end.last_commit.unwrap();
        assert_eq!((last.xid, last.lsn, last.time), (702, Lsn(lsn), late));
        assert_eq!(end.last_xact_time, Some(late));
        assert!(end.exact);
    }
}
