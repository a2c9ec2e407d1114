//! What the WAL archive can replay: segments by timeline, the `.history` files that join
//! timelines, gaps, and how far a backup can roll forward.
//!
//! Recovery along timeline T reads each segment from the newest timeline of T's history
//! that had begun by then (`XLogFileReadAnyTLI` in xlogrecovery.c), so a timeline switch is
//! not a gap: the segments before the switch point come from the parent timeline. Everything
//! here is computed from one listing of `wal/` plus the (tiny) history files.
//!
//! Why one file (~440 lines of code): the index, its timelines, gaps and windows answer one
//! question — which moments the archive reaches — and each rule leans on the others.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use crate::error::Result;
use crate::pg::wal::{Lsn, TimelineId, WalFileName};
use crate::repo::Repository;
use crate::repo::manifest::BackupManifest;
use crate::storage::ObjectKey;

/// One line of a `.history` file: timeline `parent` ended at `switch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub parent: u32,
    pub switch: Lsn,
}

/// Parses a timeline history file (timeline.c's format: parent TLI, switch LSN, reason;
/// `#` comments and blank lines ignored).
pub fn parse_history(text: &str) -> Vec<Switch> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let parent = f.next()?.parse().ok()?;
            let switch = f.next()?.parse().ok()?;
            Some(Switch { parent, switch })
        })
        .collect()
}

/// A stored segment: its timeline and number, and when it was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub tli: u32,
    pub segno: u64,
    pub stored_at: Option<Timestamp>,
}

/// A run of missing segments on one timeline's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The timeline whose recovery meets the gap.
    pub timeline: u32,
    pub first: WalFileName,
    pub last: WalFileName,
    pub segments: u64,
    first_segno: u64,
}

impl Gap {
    pub fn first_segno(&self) -> u64 {
        self.first_segno
    }
}

/// How far one backup restores: from its consistency point to the first gap or the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The timeline recovery follows (the newest one descending from the backup).
    pub timeline: u32,
    pub from_lsn: Lsn,
    pub from_time: Timestamp,
    /// The end of the last segment recovery can read without a gap.
    pub to_lsn: Lsn,
    /// When that segment was stored: the WAL in it was written before.
    pub to_time: Option<Timestamp>,
    /// The first missing segment after the backup, when a gap (not the archive's end)
    /// ends the window.
    pub cut_by: Option<WalFileName>,
}

/// The archive's segments and timelines, from one listing.
pub struct ArchiveIndex {
    pub seg_size: u32,
    segments: BTreeMap<u32, BTreeMap<u64, Option<Timestamp>>>,
    histories: BTreeMap<u32, Vec<Switch>>,
    /// `.partial` files and backup history files are kept but never replayed from.
    pub other_files: usize,
    pub wal_bytes: u64,
    pub wal_objects: usize,
    /// Every object under `wal/`, as listed.
    pub objects: Vec<ObjectKey>,
    /// `.history` objects that could not be read (damaged, planted), with why: a finding
    /// for the caller to report, while everything else is still indexed.
    pub unreadable: Vec<(ObjectKey, String)>,
}

impl ArchiveIndex {
    /// Lists the archive and reads every `.history` file.
    pub fn load(repo: &Repository, seg_size: u32) -> Result<Self> {
        let mut index = ArchiveIndex {
            seg_size,
            segments: BTreeMap::new(),
            histories: BTreeMap::new(),
            other_files: 0,
            wal_bytes: 0,
            wal_objects: 0,
            objects: Vec::new(),
            unreadable: Vec::new(),
        };
        for (name, info) in repo.list_wal()? {
            index.objects.push(info.key.clone());
            index.wal_bytes += info.size;
            index.wal_objects += 1;
            match name {
                WalFileName::Segment { tli, .. } => {
                    let segno = name.segno(seg_size).unwrap_or_default();
                    let at = info.modified.and_then(|m| Timestamp::try_from(m).ok());
                    index.segments.entry(tli.0).or_default().insert(segno, at);
                }
                WalFileName::History { tli } => {
                    if let Some(stored) = repo.store().get(&info.key)? {
                        match crate::repo::object::open(
                            info.key.as_str(),
                            &stored,
                            repo.keys(),
                            crate::repo::object::limit::SMALL,
                        ) {
                            Ok((text, _)) => {
                                index
                                    .histories
                                    .insert(tli.0, parse_history(&String::from_utf8_lossy(&text)));
                            }
                            Err(e @ crate::error::Error::Corrupt { .. }) => {
                                index.unreadable.push((info.key.clone(), e.to_string()));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                _ => index.other_files += 1,
            }
        }
        Ok(index)
    }

    /// Builds an index from known parts (tests, and callers that listed already).
    pub fn from_parts(
        seg_size: u32,
        segments: impl IntoIterator<Item = Stored>,
        histories: impl IntoIterator<Item = (u32, Vec<Switch>)>,
    ) -> Self {
        let mut map: BTreeMap<u32, BTreeMap<u64, Option<Timestamp>>> = BTreeMap::new();
        for s in segments {
            map.entry(s.tli).or_default().insert(s.segno, s.stored_at);
        }
        ArchiveIndex {
            seg_size,
            segments: map,
            histories: histories.into_iter().collect(),
            other_files: 0,
            wal_bytes: 0,
            wal_objects: 0,
            objects: Vec::new(),
            unreadable: Vec::new(),
        }
    }

    /// Every timeline that has segments or a history file, oldest first.
    pub fn timelines(&self) -> Vec<u32> {
        let all: BTreeSet<u32> = self
            .segments
            .keys()
            .chain(self.histories.keys())
            .copied()
            .collect();
        all.into_iter().collect()
    }

    /// Timelines with segments but no `.history` file: recovery onto them can't work.
    pub fn missing_histories(&self) -> Vec<u32> {
        self.segments
            .keys()
            .copied()
            .filter(|t| *t > 1 && !self.histories.contains_key(t))
            .collect()
    }

    /// The segments archived on `tli`, oldest first.
    pub fn segments_of(&self, tli: u32) -> Vec<WalFileName> {
        self.segments.get(&tli).map_or_else(Vec::new, |s| {
            s.keys()
                .map(|n| WalFileName::segment(TimelineId(tli), *n, self.seg_size))
                .collect()
        })
    }

    /// Where `tli` branched off its parent, from its history file.
    pub fn switch_point(&self, tli: u32) -> Option<Lsn> {
        self.histories.get(&tli)?.last().map(|s| s.switch)
    }

    /// `tli`'s ancestry, newest first: each timeline with the segment it begins in.
    pub fn path(&self, tli: u32) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        let switches = self.histories.get(&tli).cloned().unwrap_or_default();
        let begin = switches.last().map_or(0, |s| s.switch.segno(self.seg_size));
        out.push((tli, begin));
        // The history file lists every ancestor with the point its timeline ended.
        for (i, s) in switches.iter().enumerate().rev() {
            let begin = if i == 0 {
                0
            } else {
                switches[i - 1].switch.segno(self.seg_size)
            };
            out.push((s.parent, begin));
        }
        out
    }

    /// The segment recovery along `path` reads for `segno`: the newest timeline that had
    /// begun by then and has the segment. A parent timeline serves only up to the segment
    /// its child branched in: PostgreSQL's restore_command would be asked for the parent's
    /// later segments too (`XLogFileReadAnyTLI` checks only where a timeline begins), but
    /// their pages carry the parent's timeline id, which recovery refuses once it has read
    /// the child's ("out-of-sequence timeline ID"), so recovery ends there.
    fn find(&self, path: &[(u32, u64)], segno: u64) -> Option<(u32, Option<Timestamp>)> {
        let ends = std::iter::once(u64::MAX).chain(path.iter().map(|(_, begin)| *begin));
        path.iter()
            .zip(ends)
            .filter(|((_, begin), end)| *begin <= segno && segno <= *end)
            .find_map(|((t, _), _)| Some((*t, *self.segments.get(t)?.get(&segno)?)))
    }

    /// The timeline of `path` a missing `segno` belongs on.
    fn owner(path: &[(u32, u64)], segno: u64) -> u32 {
        path.iter()
            .find(|(_, begin)| *begin <= segno)
            .map_or(path[0].0, |(t, _)| *t)
    }

    /// The newest archived segment of any timeline, with when it was stored.
    pub fn newest(&self) -> Option<(WalFileName, Option<Timestamp>)> {
        self.segments
            .iter()
            .flat_map(|(t, segs)| segs.iter().map(move |(n, at)| (*n, *t, *at)))
            .max_by_key(|(n, t, at)| (*at, *n, *t))
            .map(|(n, t, at)| (WalFileName::segment(TimelineId(t), n, self.seg_size), at))
    }

    /// The oldest archived segment number on any timeline.
    pub fn oldest_segno(&self) -> Option<u64> {
        self.segments
            .values()
            .filter_map(|s| s.keys().next().copied())
            .min()
    }

    /// Every run of missing segments between the archive's first segment and each
    /// timeline's newest, along that timeline's history. A gap seen from several timelines
    /// is reported once, on the timeline it belongs to.
    pub fn gaps(&self) -> Vec<Gap> {
        // Runs of missing segments as (owner timeline, first, last). Only stored segments are
        // visited, never every number in between: a planted `…FFFFFFFF000000FF` must not
        // turn this into 2^40 steps.
        let mut runs: BTreeSet<(u32, u64, u64)> = BTreeSet::new();
        for (tli, segs) in &self.segments {
            let Some(&end) = segs.keys().next_back() else {
                continue;
            };
            let path = self.path(*tli);
            let mut found: Vec<u64> = path
                .iter()
                .filter_map(|(t, _)| self.segments.get(t))
                .flat_map(|s| s.range(..=end).map(|(n, _)| *n))
                .filter(|n| self.find(&path, *n).is_some())
                .collect();
            found.sort_unstable();
            found.dedup();
            let Some(&start) = found.first() else {
                continue;
            };
            let mut next = start;
            for f in found
                .into_iter()
                .chain(std::iter::once(end.saturating_add(1)))
            {
                if f > next {
                    self.split_by_owner(&path, next, f - 1, &mut runs);
                }
                next = next.max(f.saturating_add(1));
            }
        }
        let mut gaps: Vec<Gap> = Vec::new();
        for (tli, first, last) in runs {
            match gaps.last_mut() {
                Some(g) if g.timeline == tli && g.first_segno + g.segments >= first => {
                    let end = (g.first_segno + g.segments - 1).max(last);
                    g.segments = end - g.first_segno + 1;
                    g.last = WalFileName::segment(TimelineId(tli), end, self.seg_size);
                }
                _ => gaps.push(Gap {
                    timeline: tli,
                    first: WalFileName::segment(TimelineId(tli), first, self.seg_size),
                    last: WalFileName::segment(TimelineId(tli), last, self.seg_size),
                    segments: last - first + 1,
                    first_segno: first,
                }),
            }
        }
        gaps
    }

    /// Records the missing segments `first..=last` in runs, each on the timeline of `path`
    /// it belongs to (the owner changes only where a timeline of the path begins).
    fn split_by_owner(
        &self,
        path: &[(u32, u64)],
        first: u64,
        last: u64,
        runs: &mut BTreeSet<(u32, u64, u64)>,
    ) {
        let mut cuts: Vec<u64> = path
            .iter()
            .map(|(_, begin)| *begin)
            .filter(|b| *b > first && *b <= last)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut from = first;
        for cut in cuts
            .into_iter()
            .chain(std::iter::once(last.saturating_add(1)))
        {
            if cut > from {
                runs.insert((Self::owner(path, from), from, cut - 1));
                from = cut;
            }
        }
    }

    /// Whether recovery of a backup taken on `tli` that ended at `stop` can follow `target`:
    /// the backup's timeline must be in `target`'s history, switched away from after `stop`.
    pub fn descends(&self, target: u32, tli: u32, stop: Lsn) -> bool {
        if target == tli {
            return true;
        }
        let switches = self.histories.get(&target).cloned().unwrap_or_default();
        switches.iter().any(|s| s.parent == tli && s.switch >= stop)
    }

    /// The timeline recovery from a backup follows by default: the newest one descending
    /// from it (what bb-restore writes as `recovery_target_timeline`).
    pub fn recovery_timeline(&self, tli: u32, stop: Lsn) -> u32 {
        self.timelines()
            .into_iter()
            .filter(|t| self.descends(*t, tli, stop))
            .max()
            .unwrap_or(tli)
    }

    /// The WAL from `m`'s start to its stop that the archive lacks: non-empty means the
    /// backup can't become consistent.
    pub fn missing_for(&self, m: &BackupManifest) -> Vec<WalFileName> {
        m.required_wal(self.seg_size)
            .into_iter()
            .filter(|n| {
                n.segno(self.seg_size).is_none_or(|s| {
                    self.segments
                        .get(&m.timeline)
                        .is_none_or(|segs| !segs.contains_key(&s))
                })
            })
            .collect()
    }

    /// The segments recovery reads through `w`, oldest first, each from the timeline it
    /// reads it from: the segment holding the backup's consistency point to the window's end.
    pub fn window_segments(&self, w: &Window) -> Vec<WalFileName> {
        let path = self.path(w.timeline);
        let first = Lsn(w.from_lsn.0.saturating_sub(1)).segno(self.seg_size);
        let last = Lsn(w.to_lsn.0.saturating_sub(1)).segno(self.seg_size);
        // A window only spans stored segments (it ends at the first missing one).
        (first..=last)
            .map_while(|segno| {
                let (tli, _) = self.find(&path, segno)?;
                Some(WalFileName::segment(TimelineId(tli), segno, self.seg_size))
            })
            .collect()
    }

    /// How far `m` restores along `tli`, or `None` when it can't become consistent.
    pub fn window(&self, m: &BackupManifest, tli: u32) -> Option<Window> {
        if !self.missing_for(m).is_empty() {
            return None;
        }
        let path = self.path(tli);
        let stop_seg = Lsn(m.stop_lsn.0.saturating_sub(1).max(m.start_lsn.0)).segno(self.seg_size);
        let end = path
            .iter()
            .filter_map(|(t, _)| self.segments.get(t)?.keys().next_back().copied())
            .max()
            .unwrap_or(stop_seg)
            .max(stop_seg);
        let mut last = stop_seg;
        let mut last_at = self
            .segments
            .get(&m.timeline)
            .and_then(|s| s.get(&stop_seg).copied().flatten());
        let mut cut_by = None;
        for segno in stop_seg + 1..=end {
            match self.find(&path, segno) {
                Some((_, at)) => {
                    last = segno;
                    last_at = at;
                }
                None => {
                    cut_by = Some(WalFileName::segment(
                        TimelineId(Self::owner(&path, segno)),
                        segno,
                        self.seg_size,
                    ));
                    break;
                }
            }
        }
        Some(Window {
            timeline: tli,
            from_lsn: m.stop_lsn,
            from_time: m.stop_time,
            to_lsn: Lsn(last.saturating_add(1).saturating_mul(self.seg_size as u64)),
            to_time: last_at,
            cut_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u32 = 16 << 20;

    fn segs(tli: u32, range: std::ops::RangeInclusive<u64>) -> Vec<Stored> {
        range
            .map(|segno| Stored {
                tli,
                segno,
                stored_at: None,
            })
            .collect()
    }

    fn lsn_of_seg(segno: u64) -> Lsn {
        Lsn(segno * SEG as u64 + 0x60)
    }

    #[test]
    fn a_timeline_switch_is_not_a_gap_but_a_missing_segment_is() {
        // Timeline 1: segments 1..=5, promoted in segment 5; timeline 2: 5..=9 without 7.
        let mut all = segs(1, 1..=4);
        all.extend(segs(2, 5..=6));
        all.extend(segs(2, 8..=9));
        let hist = vec![(
            2,
            vec![Switch {
                parent: 1,
                switch: lsn_of_seg(5),
            }],
        )];
        let idx = ArchiveIndex::from_parts(SEG, all, hist);
        let gaps = idx.gaps();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].first.to_string(), "000000020000000000000007");
        assert_eq!(gaps[0].segments, 1);
        assert_eq!(idx.path(2), vec![(2, 5), (1, 0)]);
    }

    #[test]
    fn a_parent_timeline_serves_only_up_to_the_switch() {
        // The old primary went on to segment 8 on timeline 1; timeline 2 branched in 5 and
        // has 5 and 7. Recovery along 2 can't read timeline 1's segment 6 (its pages carry
        // timeline 1): 6 is a gap on timeline 2, and the window along 2 ends with 5.
        let mut all = segs(1, 1..=8);
        all.extend(segs(2, 5..=5));
        all.extend(segs(2, 7..=7));
        let hist = vec![(
            2,
            vec![Switch {
                parent: 1,
                switch: lsn_of_seg(5),
            }],
        )];
        let idx = ArchiveIndex::from_parts(SEG, all, hist);
        let gaps = idx.gaps();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].first.to_string(), "000000020000000000000006");
        let m = BackupManifest::example(
            "20260101T000000Z".parse().unwrap(),
            Timestamp::UNIX_EPOCH,
            1,
            lsn_of_seg(2),
            lsn_of_seg(3),
        );
        let w = idx.window(&m, 2).unwrap();
        assert_eq!(w.to_lsn, Lsn(6 * SEG as u64));
        assert_eq!(
            w.cut_by.map(|n| n.to_string()).as_deref(),
            Some("000000020000000000000006")
        );
        let names: Vec<String> = idx
            .window_segments(&w)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "000000010000000000000003",
                "000000010000000000000004",
                "000000020000000000000005"
            ]
        );
    }

    #[test]
    fn gaps_merge_into_runs_and_name_the_owner() {
        let mut all = segs(1, 1..=2);
        all.extend(segs(1, 6..=7));
        let idx = ArchiveIndex::from_parts(SEG, all, vec![]);
        let gaps = idx.gaps();
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].first.to_string(), "000000010000000000000003");
        assert_eq!(gaps[0].last.to_string(), "000000010000000000000005");
        assert_eq!(gaps[0].segments, 3);
    }

    #[test]
    fn a_planted_far_segment_is_one_gap_found_at_once() {
        // `…FFFFFFFF000000FF`: 2^40 segments past the real ones, one run, found in no time.
        let mut all = segs(1, 1..=3);
        let far = 0xFFFF_FFFFu64 * 256 + 0xFF;
        all.extend(segs(1, far..=far));
        let idx = ArchiveIndex::from_parts(SEG, all, vec![]);
        let started = std::time::Instant::now();
        let gaps = idx.gaps();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].first_segno(), 4);
        assert_eq!(gaps[0].segments, far - 4);
    }

    #[test]
    fn a_gap_across_a_switch_is_split_by_owner() {
        // Timeline 1: 1..=2; timeline 2 begins in 6 and has 8: 3..=5 missing on timeline
        // 1, 6..=7 on timeline 2.
        let mut all = segs(1, 1..=2);
        all.extend(segs(2, 8..=8));
        let hist = vec![(
            2,
            vec![Switch {
                parent: 1,
                switch: lsn_of_seg(6),
            }],
        )];
        let gaps = ArchiveIndex::from_parts(SEG, all, hist).gaps();
        let runs: Vec<(u32, u64, u64)> = gaps
            .iter()
            .map(|g| (g.timeline, g.first_segno(), g.segments))
            .collect();
        assert_eq!(runs, vec![(1, 3, 3), (2, 6, 2)], "{gaps:?}");
    }

    #[test]
    fn descent_needs_the_switch_after_the_backup() {
        let hist = vec![
            (
                2,
                vec![Switch {
                    parent: 1,
                    switch: lsn_of_seg(5),
                }],
            ),
            (
                3,
                vec![
                    Switch {
                        parent: 1,
                        switch: lsn_of_seg(5),
                    },
                    Switch {
                        parent: 2,
                        switch: lsn_of_seg(9),
                    },
                ],
            ),
        ];
        let idx = ArchiveIndex::from_parts(SEG, segs(1, 1..=3), hist);
        assert!(idx.descends(3, 2, lsn_of_seg(8)));
        assert!(idx.descends(2, 1, lsn_of_seg(4)));
        assert!(!idx.descends(2, 1, lsn_of_seg(6)));
        assert_eq!(idx.recovery_timeline(1, lsn_of_seg(4)), 3);
        assert_eq!(idx.recovery_timeline(1, lsn_of_seg(6)), 1);
        assert_eq!(idx.path(3), vec![(3, 9), (2, 5), (1, 0)]);
    }
}
