//! Which backup a restore starts from, and whether the archive can take it to the target:
//! all read-only, decided before anything is written.

use crate::error::{Error, Result};
use crate::pg::target::RecoveryTarget;
use crate::pg::walrecord::Event;
use crate::repo::archive::ArchiveIndex;
use crate::repo::manifest::{BackupId, BackupManifest};
use crate::repo::summary::Summaries;
use crate::repo::{RepoRoot, Repository};
use crate::runner::note;

/// The newest backup that is consistent before the target, or the one named.
pub(super) fn choose_backup(
    repo: &Repository,
    named: Option<&BackupId>,
    target: &RecoveryTarget,
) -> Result<BackupManifest> {
    if let Some(id) = named {
        let m = repo.read_manifest(id)?;
        if !precedes(&m, target) {
            return Err(Error::Usage(format!(
                "backup {id} does not end before the target ({})",
                target
            )));
        }
        return Ok(m);
    }
    let ids = repo.list_backups()?;
    if ids.is_empty() {
        return Err(Error::NotFound {
            key: format!("any backup in {}", repo.location()),
        });
    }
    let mut unusable = None;
    for id in ids.iter().rev() {
        // One damaged or planted manifest must not stop the restore of the others.
        let m = match repo.read_manifest(id) {
            Ok(m) => m,
            Err(e @ Error::Corrupt { .. }) => {
                note(format!("skipping backup {id}, which can't be used: {e}"));
                unusable.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        if precedes(&m, target) {
            return Ok(m);
        }
    }
    if let Some(e) = unusable {
        return Err(e);
    }
    Err(Error::Usage(format!(
        "no backup ends before the target ({}): the oldest, {}, is not early enough",
        target, ids[0]
    )))
}

/// Whether recovery from `m` can stop at `target`: the backup must be consistent first.
fn precedes(m: &BackupManifest, target: &RecoveryTarget) -> bool {
    match target {
        RecoveryTarget::Time(t) => m.stop_time <= *t,
        RecoveryTarget::Lsn(l) => m.stop_lsn <= *l,
        // An xid that had not started when the backup stopped commits after it.
        RecoveryTarget::Xid(x) => m.next_xid.is_none_or(|n| n <= *x),
        _ => true,
    }
}

/// Refuses when the archive visibly cannot bring the backup to the target: WAL between the
/// backup's start and stop missing, or an LSN/time target past the last segment recovery
/// can read along `tli` (the archive's end, or a gap).
pub(super) fn check_archive(
    index: &ArchiveIndex,
    m: &BackupManifest,
    target: &RecoveryTarget,
    tli: u32,
) -> Result<()> {
    let missing = index.missing_for(m);
    if !missing.is_empty() {
        return Err(Error::Conflict(format!(
            "backup {} cannot become consistent: the archive lacks {}",
            m.backup_id,
            missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let Some(window) = index.window(m, tli) else {
        return Ok(());
    };
    let why = match &window.cut_by {
        Some(gap) => format!("segment {gap} is missing from the archive"),
        None => "archive more WAL (select pg_switch_wal() on the primary) and try again".into(),
    };
    match target {
        RecoveryTarget::Lsn(l) if *l >= window.to_lsn => Err(Error::Usage(format!(
            "target lsn {l} is beyond the archive: from backup {} on timeline {tli} it replays \
             up to {}: {why}",
            m.backup_id, window.to_lsn
        ))),
        RecoveryTarget::Time(t) if window.to_time.is_some_and(|end| *t > end) => {
            Err(Error::Usage(format!(
                "target time {t} is after the last WAL the archive can replay from backup {} on \
                 timeline {tli} was stored ({}), so the WAL for it is not in the archive yet: \
                 {why}",
                m.backup_id,
                window.to_time.map(|t| t.to_string()).unwrap_or_default()
            )))
        }
        _ => Ok(()),
    }
}

/// Checks the target against what the WAL summaries say the window of `m` along `tli`
/// holds, and resolves `last-commit` to an LSN. PostgreSQL 13 and later stop with a FATAL
/// error when recovery ends before its target: a time after the last transaction end, a
/// restore point no replayed segment holds, or an xid that never ends, is found out here,
/// before anything is written, instead of at the end of a long replay. Where the segments that would decide lack
/// summaries (archived before pitrkit wrote them), the target passes with a note.
pub(super) fn check_summaries(
    repo: &Repository,
    root: &RepoRoot,
    index: &ArchiveIndex,
    m: &BackupManifest,
    (target, exclusive): (&RecoveryTarget, bool),
    tli: u32,
    jobs: usize,
) -> Result<RecoveryTarget> {
    let checked = matches!(
        target,
        RecoveryTarget::Time(_)
            | RecoveryTarget::Name(_)
            | RecoveryTarget::Xid(_)
            | RecoveryTarget::LastCommit
    );
    let window = match (checked, index.window(m, tli)) {
        (true, Some(w)) => w,
        _ => return Ok(target.clone()),
    };
    let summaries = Summaries::list(repo, root)?;
    let unsummarized = |what: &str| {
        note(format!(
            "the archive's WAL from backup {} on timeline {tli} is not (fully) summarized, so {what} can't be checked before the restore: run `pitr-check index`",
            m.backup_id
        ));
    };
    let resolved = match target {
        RecoveryTarget::Time(t) => {
            let end = summaries.end_of(index, &window, jobs)?;
            // PostgreSQL stops before the first transaction end later than the target
            // (at or later, with --target-exclusive): there must be one.
            let reached = end
                .last_xact_time
                .is_some_and(|x| if exclusive { x >= *t } else { x > *t });
            if !reached && end.exact {
                let last = match &end.last_commit {
                    Some(c) => format!(
                        "its last commit is xid {} at {} (lsn {}, timeline {}); --target-time last-commit restores up to it",
                        c.xid, c.time, c.lsn, c.timeline
                    ),
                    None => "no transaction ends in it after the backup".into(),
                };
                return Err(Error::Usage(format!(
                    "target time {t} is not reached by the WAL the archive holds from backup {} on timeline {tli}: {last}",
                    m.backup_id
                )));
            }
            if !reached {
                unsummarized("the target time");
            }
            target.clone()
        }
        RecoveryTarget::Name(n) => {
            let (points, summarized, segments) = summaries.points_in(index, &window, jobs)?;
            if points.iter().any(|p| &p.name == n) {
                target.clone()
            } else if summarized < segments {
                unsummarized("the restore point");
                target.clone()
            } else {
                let listed = match points.len() {
                    0 => "there are none in it".to_string(),
                    k => format!(
                        "the nearest are {}",
                        points
                            .iter()
                            .rev()
                            .take(5)
                            .map(|p| format!("'{}' ({}, lsn {})", p.name, p.time, p.lsn))
                            .collect::<Vec<_>>()
                            .join(", ")
                            + if k > 5 { ", …" } else { "" }
                    ),
                };
                return Err(Error::Usage(format!(
                    "restore point '{n}' is not in the WAL the archive holds from backup {} on timeline {tli} ({segments} segments): {listed}; `pitr-check points` lists them",
                    m.backup_id
                )));
            }
        }
        RecoveryTarget::Xid(x) => {
            // PostgreSQL compares the low 32 bits (recovery_target_xid is a TransactionId):
            // recovery stops at that transaction's commit or abort, and only there.
            let xid = *x as u32;
            let mut ends = Vec::new();
            let mut unknown = false;
            let segments = summaries.of_window(index, &window, jobs)?;
            // A commit or abort straddling two segments is in neither summary.
            let mut found = crate::repo::summary::joined(&segments)
                .iter()
                .any(|(_, e)| matches!(e, Event::Commit(t) | Event::Abort(t) if t.xid == xid));
            for (_, s) in segments {
                match s.as_ref().and_then(|s| s.ends_xid(xid)) {
                    Some(true) => found = true,
                    Some(false) => {}
                    None => unknown = true,
                }
                ends.extend(s.and_then(|s| s.xact_xids).unwrap_or_default());
            }
            if !found && unknown {
                unsummarized("the target xid");
            } else if !found {
                let range = match (
                    ends.iter().map(|r| r[0]).min(),
                    ends.iter().map(|r| r[1]).max(),
                ) {
                    (Some(lo), Some(hi)) => {
                        format!("its transactions end between xids {lo} and {hi}")
                    }
                    _ => "no transaction ends in it".into(),
                };
                return Err(Error::Usage(format!(
                    "xid {x} neither commits nor aborts in the WAL the archive holds from backup {} \
                     on timeline {tli} ({range}): recovery would replay it all without reaching \
                     the target",
                    m.backup_id
                )));
            }
            target.clone()
        }
        RecoveryTarget::LastCommit => {
            let end = summaries.end_of(index, &window, jobs)?;
            match end.last_commit {
                Some(c) if end.exact => {
                    note(format!(
                        "the last commit the archive holds from backup {}: xid {} at {} (lsn {}, timeline {tli})",
                        m.backup_id, c.xid, c.time, c.lsn
                    ));
                    RecoveryTarget::Lsn(c.lsn)
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "the last commit from backup {} on timeline {tli} is not known: {}",
                        m.backup_id,
                        if end.exact {
                            "no transaction ends in the archive's WAL after the backup"
                        } else {
                            "the newest WAL is not summarized (run `pitr-check index`)"
                        }
                    )));
                }
            }
        }
        _ => target.clone(),
    };
    for (key, why) in summaries.unreadable() {
        note(format!("{key} is not used: {why}"));
    }
    Ok(resolved)
}

/// PostgreSQL's default, `recovery_target_timeline = 'latest'`, follows the newest timeline
/// in the archive, and fails ("requested timeline is not a child of this server's history")
/// when that timeline forked off before this backup ended — which happens as soon as an
/// earlier restore was promoted and archived into the same repository. Returns the newest
/// timeline that does descend from the backup, when it is not the newest one overall.
pub(super) fn reachable_timeline(index: &ArchiveIndex, m: &BackupManifest) -> Option<u32> {
    let newest = index
        .timelines()
        .into_iter()
        .max()
        .filter(|t| *t > m.timeline)?;
    if index.descends(newest, m.timeline, m.stop_lsn) {
        return None;
    }
    let best = index.recovery_timeline(m.timeline, m.stop_lsn);
    note(format!(
        "timeline {newest} forked off before backup {} ended; recovering along timeline {best}",
        m.backup_id
    ));
    Some(best)
}
