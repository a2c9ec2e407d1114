//! The status report: windows, gaps, ages and every finding, with the verdict they add up to.

use super::*;

fn age(now: Timestamp, t: Timestamp) -> f64 {
    (now.as_millisecond() - t.as_millisecond()) as f64 / 1000.0
}

/// Computes the report and its findings.
pub fn build(
    inv: &Inventory,
    archiver: Option<ArchiverReport>,
    max_wal_age: Option<Duration>,
    max_backup_age: Option<Duration>,
    max_ready: u64,
) -> StatusReport {
    let now = Timestamp::now();
    let mut findings = Vec::new();
    let mut flag = |severity, message: String| findings.push(Finding { severity, message });
    let backups = inv.analyse();
    let seg = inv.root.wal_segment_size;

    // Objects that can't be read are findings; the rest is still checked.
    for (key, why) in &inv.index.unreadable {
        flag(
            Severity::Critical,
            format!(
                "timeline history {key} can't be read, so recovery along it can't be planned: {why}"
            ),
        );
    }
    // Gaps, and which backups' windows they end.
    let found = inv.index.gaps();
    let gaps: Vec<GapReport> = found
        .iter()
        .map(|g| GapReport {
            timeline: g.timeline,
            first: g.first.to_string(),
            last: g.last.to_string(),
            segments: g.segments,
            cuts: cut_backups(inv, &backups, g),
        })
        .collect();
    // A keep-marked backup keeps only the WAL it needs to become consistent, so retention
    // leaves a gap after it on purpose: that gap only matters for unmarked backups.
    let marked: HashSet<&str> = backups
        .iter()
        .filter(|b| b.keep.is_some())
        .map(|b| b.backup_id.as_str())
        .collect();
    for (g, gap) in gaps.iter().zip(&found) {
        let range = if g.segments == 1 {
            g.first.clone()
        } else {
            format!("{} .. {} ({} segments)", g.first, g.last, g.segments)
        };
        let harmful: Vec<&str> = g
            .cuts
            .iter()
            .map(String::as_str)
            .filter(|b| !marked.contains(b))
            .collect();
        if !harmful.is_empty() {
            flag(
                Severity::Critical,
                format!(
                    "WAL gap on timeline {}: {range} missing; moments after it are unreachable from backup(s) {}",
                    g.timeline,
                    harmful.join(", ")
                ),
            );
        } else if backups.iter().any(|b| {
            b.restorable && b.keep.is_none() && b.start_lsn.segno(seg) <= gap.first_segno()
        }) {
            flag(
                Severity::Warning,
                format!("WAL gap on timeline {}: {range} missing", g.timeline),
            );
        }
    }
    for tli in inv.index.missing_histories() {
        flag(
            Severity::Warning,
            format!(
                "timeline {tli} has WAL but no {:08X}.history: recovery can't follow it",
                tli
            ),
        );
    }

    // Backups.
    if backups.is_empty() {
        flag(
            Severity::Critical,
            "no backups: nothing can be restored (take one with bb-push)".into(),
        );
    }
    for b in &backups {
        if let Some(e) = &b.manifest_error {
            flag(
                Severity::Critical,
                format!("backup {} can't be read: {e}", b.backup_id),
            );
        } else if !b.missing_files.is_empty() {
            flag(
                Severity::Critical,
                format!(
                    "backup {} can't start: it lacks {}",
                    b.backup_id,
                    b.missing_files.join(" and ")
                ),
            );
        } else if !b.missing_wal.is_empty() {
            flag(
                Severity::Critical,
                format!(
                    "backup {} can't restore: the archive lacks {}",
                    b.backup_id,
                    b.missing_wal.join(", ")
                ),
            );
        } else if b.missing_chunks > 0 {
            flag(
                Severity::Critical,
                format!(
                    "backup {} can't restore: {} chunk(s) it names are missing",
                    b.backup_id, b.missing_chunks
                ),
            );
        }
    }
    let newest_backup = backups
        .iter()
        .filter(|b| b.restorable)
        .max_by_key(|b| b.stop_time);
    let newest_backup_age = newest_backup.and_then(|b| b.stop_time).map(|t| age(now, t));
    if let (Some(max), Some(a)) = (max_backup_age, newest_backup_age)
        && a > max.as_secs_f64()
    {
        flag(
            Severity::Warning,
            format!(
                "the newest restorable backup is {} old (limit {})",
                human_secs(a),
                humantime::format_duration(max)
            ),
        );
    }

    // WAL freshness.
    let newest = inv.index.newest();
    let newest_age = newest.and_then(|(_, at)| at).map(|t| age(now, t));
    if let Some(max) = max_wal_age {
        match newest_age {
            Some(a) if a > max.as_secs_f64() => flag(
                Severity::Warning,
                format!(
                    "the newest archived WAL is {} old (limit {}): is archiving stalled?",
                    human_secs(a),
                    humantime::format_duration(max)
                ),
            ),
            None if newest.is_none() => {
                flag(Severity::Warning, "the archive holds no WAL yet".into())
            }
            _ => {}
        }
    }

    // The archiver.
    if let Some(a) = &archiver {
        if !a.system_identifier_matches {
            flag(
                Severity::Critical,
                format!(
                    "the cluster at --dbname is not the one this repository archives (system {})",
                    inv.root.system_identifier
                ),
            );
        }
        if a.failing {
            flag(
                Severity::Warning,
                format!(
                    "archive_command is failing: last failure on {} at {}, {} failures since the statistics were reset",
                    a.last_failed_wal.as_deref().unwrap_or("?"),
                    a.last_failed_time
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    a.failed_count
                ),
            );
        }
        if a.ready_files.is_some_and(|n| n > max_ready) {
            flag(
                Severity::Warning,
                format!(
                    "{} WAL files wait to be archived (limit {max_ready})",
                    a.ready_files.unwrap_or_default()
                ),
            );
        }
        if a.archive_mode == "off" && !a.in_recovery {
            flag(
                Severity::Critical,
                "archive_mode is off on the cluster: nothing is being archived".into(),
            );
        }
    }

    let verdict = findings
        .iter()
        .map(|f| match f.severity {
            Severity::Warning => Verdict::Warning,
            Severity::Critical => Verdict::Critical,
        })
        .max()
        .unwrap_or(Verdict::Ok);
    StatusReport {
        format_version: REPORT_VERSION,
        repository: inv.repo.location(),
        checked_at: now,
        verdict,
        findings,
        system_identifier: inv.root.system_identifier.to_string(),
        pg_major: inv.root.pg_major,
        wal: WalReport {
            files: inv.index.wal_objects,
            bytes: inv.index.wal_bytes,
            newest: newest.map(|(n, _)| n.to_string()),
            newest_stored_at: newest.and_then(|(_, at)| at),
            newest_age_seconds: newest_age,
            timelines: timelines(&inv.index),
            gaps,
            unsummarized_segments: 0,
        },
        windows: merge_windows(&backups),
        last_commit: None,
        last_commit_age_seconds: None,
        newest_backup: newest_backup.map(|b| b.backup_id.clone()),
        newest_backup_age_seconds: newest_backup_age,
        backups,
        chunk_bytes: inv.chunk_bytes,
        copy: None,
        archiver,
    }
}

/// The backups whose roll-forward stops at this gap (a range test: a gap can span 2^40
/// segments when a planted name lies far ahead).
fn cut_backups(inv: &Inventory, backups: &[BackupReport], g: &Gap) -> Vec<String> {
    let seg_size = inv.root.wal_segment_size;
    let inside = |name: &str| {
        name.parse::<WalFileName>().is_ok_and(|n| {
            n.timeline().0 == g.timeline
                && n.segno(seg_size)
                    .is_some_and(|s| s >= g.first_segno() && s - g.first_segno() < g.segments)
        })
    };
    backups
        .iter()
        .filter(|b| {
            b.window
                .as_ref()
                .and_then(|w| w.cut_by.as_ref())
                .is_some_and(|c| inside(c))
                || b.missing_wal.iter().any(|m| inside(m))
        })
        .map(|b| b.backup_id.clone())
        .collect()
}

fn timelines(index: &ArchiveIndex) -> Vec<TimelineReport> {
    index
        .timelines()
        .into_iter()
        .map(|t| {
            let segs = index.segments_of(t);
            let path = index.path(t);
            let parent = path.get(1).map(|(p, _)| *p);
            TimelineReport {
                timeline: t,
                parent,
                switch_lsn: index.switch_point(t),
                first: segs.first().map(|s| s.to_string()),
                last: segs.last().map(|s| s.to_string()),
                segments: segs.len() as u64,
            }
        })
        .collect()
}

/// The union of the backups' windows, per timeline, as separate ranges where they don't meet.
fn merge_windows(backups: &[BackupReport]) -> Vec<WindowReport> {
    let mut by_tli: BTreeMap<u32, Vec<WindowReport>> = BTreeMap::new();
    for w in backups.iter().filter_map(|b| b.window.clone()) {
        by_tli.entry(w.timeline).or_default().push(w);
    }
    let mut out = Vec::new();
    for (_, mut ws) in by_tli {
        ws.sort_by_key(|w| w.from_lsn);
        let mut cur: Option<WindowReport> = None;
        for w in ws {
            match &mut cur {
                Some(c) if w.from_lsn <= c.to_lsn => {
                    if w.to_lsn > c.to_lsn {
                        c.to_lsn = w.to_lsn;
                        c.to_time = w.to_time;
                        c.cut_by = w.cut_by;
                    }
                }
                _ => {
                    out.extend(cur.take());
                    cur = Some(w);
                }
            }
        }
        out.extend(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pitrkit::repo::archive::Stored;
    use pitrkit::repo::manifest::Entry;
    use pitrkit::storage::memory::MemoryStore;

    const SEG: u32 = 16 << 20;

    fn lsn(segno: u64) -> Lsn {
        Lsn(segno * SEG as u64 + 0x28)
    }

    /// A backup taken on timeline 1 from segment `start` to `stop`, with the files a
    /// cluster needs to start unless `startable` is false.
    fn backup(id: &str, start: u64, stop: u64, startable: bool) -> BackupManifest {
        let t: Timestamp = "2026-11-26T03:00:00Z".parse().unwrap();
        let mut entries = vec![Entry::file("PG_VERSION".into(), 0o600, 0, 0, vec![])];
        if startable {
            entries.push(Entry::file("global/pg_control".into(), 0o600, 0, 0, vec![]));
        }
        let mut m = BackupManifest::example(id.parse().unwrap(), t, 1, lsn(start), lsn(stop));
        m.entries = entries;
        m
    }

    /// An inventory of segments `segs` on timeline 1 (stored now) and these backups.
    fn inventory(segs: &[u64], backups: Vec<BackupManifest>) -> Inventory {
        let now = Timestamp::now();
        let index = ArchiveIndex::from_parts(
            SEG,
            segs.iter().map(|&segno| Stored {
                tli: 1,
                segno,
                stored_at: Some(now),
            }),
            vec![],
        );
        Inventory {
            repo: Repository::new(Box::new(MemoryStore::default())),
            root: RepoRoot {
                format_version: 1,
                system_identifier: 7,
                wal_segment_size: SEG,
                pg_major: 15,
                created_at: String::new(),
                created_by: String::new(),
                encryption: None,
                conditional_create: Some(true),
            },
            index,
            backups: backups
                .into_iter()
                .map(|m| (m.backup_id.clone(), Ok(m)))
                .collect(),
            chunks: HashSet::new(),
            chunk_bytes: 0,
            keeps: HashMap::new(),
            repo_jobs: 1,
        }
    }

    fn messages(r: &StatusReport) -> Vec<String> {
        r.findings.iter().map(|f| f.message.clone()).collect()
    }

    #[test]
    fn a_healthy_archive_is_ok() {
        let inv = inventory(&[1, 2, 3, 4], vec![backup("20261126T030000Z", 2, 3, true)]);
        let r = build(&inv, None, None, None, 0);
        assert_eq!(r.verdict, Verdict::Ok, "{:?}", messages(&r));
        assert!(r.backups[0].restorable);
        assert_eq!(r.wal.gaps.len(), 0);
    }

    #[test]
    fn a_gap_after_a_backup_is_named_with_the_backup_it_cuts() {
        let inv = inventory(
            &[1, 2, 3, 6, 7],
            vec![backup("20261126T030000Z", 2, 3, true)],
        );
        let r = build(&inv, None, None, None, 0);
        assert_eq!(r.wal.gaps.len(), 1);
        let gap = &r.wal.gaps[0];
        assert_eq!(
            (gap.first.as_str(), gap.last.as_str(), gap.segments),
            ("000000010000000000000004", "000000010000000000000005", 2)
        );
        assert_eq!(gap.cuts, ["20261126T030000Z"]);
        assert_ne!(r.verdict, Verdict::Ok, "{:?}", messages(&r));
    }

    #[test]
    fn no_backup_and_unstartable_backups_are_critical() {
        let r = build(&inventory(&[1, 2], vec![]), None, None, None, 0);
        assert_eq!(r.verdict, Verdict::Critical);
        assert!(messages(&r).iter().any(|m| m.starts_with("no backups")));

        let inv = inventory(&[1, 2, 3], vec![backup("20261126T030000Z", 2, 3, false)]);
        let r = build(&inv, None, None, None, 0);
        assert_eq!(r.verdict, Verdict::Critical);
        assert!(!r.backups[0].restorable);
        assert!(
            messages(&r)
                .iter()
                .any(|m| m.contains("can't start: it lacks global/pg_control")),
            "{:?}",
            messages(&r)
        );
    }

    #[test]
    fn an_unreadable_history_is_a_finding_and_the_rest_is_still_checked() {
        let mut inv = inventory(&[1, 2, 3], vec![backup("20261126T030000Z", 2, 3, true)]);
        inv.index.unreadable.push((
            pitrkit::storage::ObjectKey::new("wal/00000002/00000002.history.zst").unwrap(),
            "corrupt".into(),
        ));
        let r = build(&inv, None, None, None, 0);
        assert_eq!(r.verdict, Verdict::Critical);
        assert!(r.backups[0].restorable);
        assert!(messages(&r)[0].contains("00000002.history.zst can't be read"));
    }
}
