//! Which backup a restore starts from, and whether the archive can take it to the target:
//! all read-only, decided before anything is written.

use crate::error::{Error, Result};
use crate::pg::target::RecoveryTarget;
use crate::repo::Repository;
use crate::repo::archive::ArchiveIndex;
use crate::repo::manifest::{BackupId, BackupManifest};
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
