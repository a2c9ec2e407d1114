//! What the WAL summaries add to `status`: the newest commit each recovery window reaches
//! (a restore to a later moment ends before its target), and the effective RPO — the age of
//! the newest commit the archive can give back, not of the newest object stored.

use pitrkit::repo::summary::{Commit, Summaries};

use super::*;

/// Fills in every window's last commit, the report's newest recoverable commit and its age,
/// and how many archived segments have no summary (`pitr-check index` writes them).
pub fn annotate(inv: &Inventory, report: &mut StatusReport, jobs: usize) -> Result<()> {
    let summaries = Summaries::list(&inv.repo, &inv.root)?;
    let end = |w: &WindowReport| -> Result<(Option<Commit>, bool)> {
        let window = w.window();
        let end = summaries.end_of(&inv.index, &window, jobs)?;
        Ok((end.last_commit, end.exact))
    };
    for w in report
        .backups
        .iter_mut()
        .filter_map(|b| b.window.as_mut())
        .chain(report.windows.iter_mut())
    {
        (w.last_commit, w.last_commit_exact) = end(w)?;
    }
    report.last_commit = report
        .windows
        .iter()
        .filter_map(|w| w.last_commit.clone())
        .max_by_key(|c| c.time);
    report.last_commit_age_seconds = report
        .last_commit
        .as_ref()
        .map(|c| (report.checked_at.as_millisecond() - c.time.as_millisecond()) as f64 / 1000.0);
    report.wal.unsummarized_segments = inv
        .index
        .objects
        .iter()
        .filter_map(|k| pitrkit::repo::layout::wal_name(k.as_str()))
        .filter(|n| n.has_wal_pages() && !summaries.has(n))
        .count() as u64;
    for (key, why) in summaries.unreadable() {
        note(format!("{key} is not used: {why}"));
    }
    Ok(())
}
