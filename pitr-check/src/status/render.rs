//! The report for people (a table) and for Prometheus (text exposition).

use super::*;

pub(super) fn human_secs(s: f64) -> String {
    humantime::format_duration(Duration::from_secs(s.max(0.0) as u64)).to_string()
}

pub(super) fn table(out: &mut dyn std::io::Write, r: &StatusReport) -> std::io::Result<()> {
    let t =
        |t: Option<Timestamp>| t.map_or("-".to_string(), |t| t.strftime("%F %T UTC").to_string());
    writeln!(out, "repository  {}", r.repository)?;
    writeln!(
        out,
        "cluster     system {}, PostgreSQL {}",
        r.system_identifier, r.pg_major
    )?;
    writeln!(out, "status      {}", verdict_word(r.verdict))?;
    for f in &r.findings {
        writeln!(
            out,
            "  {:<9} {}",
            format!("{:?}", f.severity).to_uppercase(),
            f.message
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "WAL         {} files, {}; newest {} stored {}{}",
        r.wal.files,
        human_bytes(r.wal.bytes),
        r.wal.newest.as_deref().unwrap_or("-"),
        t(r.wal.newest_stored_at),
        r.wal
            .newest_age_seconds
            .map(|a| format!(" ({} ago)", human_secs(a)))
            .unwrap_or_default()
    )?;
    if let Some(c) = &r.last_commit {
        writeln!(
            out,
            "last commit {} (xid {}, lsn {}, timeline {}){}: the newest moment a restore reaches",
            t(Some(c.time)),
            c.xid,
            c.lsn,
            c.timeline,
            r.last_commit_age_seconds
                .map(|a| format!(", {} ago", human_secs(a)))
                .unwrap_or_default()
        )?;
    }
    if r.wal.unsummarized_segments > 0 {
        writeln!(
            out,
            "  {} segments have no summary: `pitr-check index` writes them",
            r.wal.unsummarized_segments
        )?;
    }
    for tl in &r.wal.timelines {
        writeln!(
            out,
            "  timeline {:<3} {} .. {} ({} segments){}",
            tl.timeline,
            tl.first.as_deref().unwrap_or("-"),
            tl.last.as_deref().unwrap_or("-"),
            tl.segments,
            match (tl.parent, tl.switch_lsn) {
                (Some(p), Some(l)) => format!(", branched from timeline {p} at {l}"),
                _ => String::new(),
            }
        )?;
    }
    for g in &r.wal.gaps {
        writeln!(
            out,
            "  gap        {} .. {} ({} segments){}",
            g.first,
            g.last,
            g.segments,
            if g.cuts.is_empty() {
                String::new()
            } else {
                format!(", cuts {}", g.cuts.join(", "))
            }
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<17} {:>3} {:<23} {:>10}  {:<10} RESTORES UNTIL",
        "BACKUP", "TLI", "CONSISTENT AT", "SIZE", "RESTORABLE"
    )?;
    for b in &r.backups {
        writeln!(
            out,
            "{:<17} {:>3} {:<23} {:>10}  {:<10} {}{}",
            b.backup_id,
            b.timeline,
            t(b.stop_time),
            human_bytes(b.bytes),
            if b.restorable { "yes" } else { "NO" },
            b.window.as_ref().map_or("-".into(), |w| format!(
                "{} (timeline {}{})",
                t(w.to_time),
                w.timeline,
                w.cut_by
                    .as_ref()
                    .map(|c| format!(", gap at {c}"))
                    .unwrap_or_default()
            )),
            b.keep
                .as_ref()
                .map(|k| format!("  [kept: {k}]"))
                .unwrap_or_default()
        )?;
    }
    writeln!(out)?;
    writeln!(out, "recovery windows (restore to any moment inside):")?;
    if r.windows.is_empty() {
        writeln!(out, "  none")?;
    }
    for w in &r.windows {
        writeln!(
            out,
            "  timeline {:<3} {} .. {}   ({} .. {}){}",
            w.timeline,
            t(Some(w.from_time)),
            t(w.to_time),
            w.from_lsn,
            w.to_lsn,
            match &w.last_commit {
                Some(c) => format!(
                    "; last commit {}{}",
                    t(Some(c.time)),
                    if w.last_commit_exact { "" } else { " or later" }
                ),
                None => String::new(),
            }
        )?;
    }
    if let Some(c) = &r.copy {
        writeln!(out)?;
        writeln!(
            out,
            "copy of    {}: {} WAL files and {} backups behind{}; newest segment {} here, {} there",
            c.source,
            c.lag.wal_behind,
            c.lag.backups_behind.len(),
            c.lag
                .seconds_behind
                .filter(|s| *s > 0.0)
                .map(|s| format!(" (the oldest missing stored {} ago)", human_secs(s)))
                .unwrap_or_default(),
            c.lag.copy_newest.as_deref().unwrap_or("-"),
            c.lag.source_newest.as_deref().unwrap_or("-"),
        )?;
    }
    if let Some(a) = &r.archiver {
        writeln!(out)?;
        writeln!(
            out,
            "archiver    {} archived, last {} at {}; {} failed{}; {} waiting; current WAL {}",
            a.archived_count,
            a.last_archived_wal.as_deref().unwrap_or("-"),
            t(a.last_archived_time),
            a.failed_count,
            if a.failing {
                format!(
                    " (FAILING on {} since {})",
                    a.last_failed_wal.as_deref().unwrap_or("?"),
                    t(a.last_failed_time)
                )
            } else {
                String::new()
            },
            a.ready_files.map_or("?".into(), |n| n.to_string()),
            a.current_wal.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

pub(super) fn metrics(r: &StatusReport) -> Metrics {
    let mut m = Metrics::new(&r.repository);
    m.gauge(
        "pitrkit_status",
        "Verdict of pitr-check status: 0 ok, 1 warning, 2 critical",
        &[],
        r.verdict as i64 as f64,
    );
    m.gauge(
        "pitrkit_wal_files",
        "WAL files in the archive",
        &[],
        r.wal.files as f64,
    );
    m.gauge(
        "pitrkit_wal_bytes",
        "Bytes of WAL stored",
        &[],
        r.wal.bytes as f64,
    );
    if let Some(a) = r.wal.newest_age_seconds {
        m.gauge(
            "pitrkit_wal_newest_age_seconds",
            "Seconds since the newest WAL file was stored (effective RPO)",
            &[],
            a,
        );
    }
    if let Some(a) = r.last_commit_age_seconds {
        m.gauge(
            "pitrkit_last_commit_age_seconds",
            "Seconds since the newest commit a restore can reach (effective RPO, from the WAL summaries)",
            &[],
            a,
        );
    }
    if let Some(c) = &r.last_commit {
        m.gauge(
            "pitrkit_last_commit_timestamp_seconds",
            "Time of the newest commit a restore can reach",
            &[],
            c.time.as_millisecond() as f64 / 1000.0,
        );
    }
    if let Some(c) = &r.copy {
        let src = [("source", c.source.as_str())];
        m.gauge(
            "pitrkit_copy_wal_behind",
            "WAL files the source holds and this copy lacks",
            &src,
            c.lag.wal_behind as f64,
        );
        if let Some(s) = c.lag.seconds_behind {
            m.gauge(
                "pitrkit_copy_lag_seconds",
                "Seconds since the source stored the oldest WAL file this copy lacks",
                &src,
                s,
            );
        }
        m.gauge(
            "pitrkit_copy_backups_behind",
            "Backups the source holds and this copy lacks",
            &src,
            c.lag.backups_behind.len() as f64,
        );
    }
    m.gauge(
        "pitrkit_wal_unsummarized_segments",
        "Archived WAL segments without a summary (pitr-check index writes them)",
        &[],
        r.wal.unsummarized_segments as f64,
    );
    m.gauge(
        "pitrkit_wal_gap_segments",
        "Missing WAL segments inside the archive",
        &[],
        r.wal.gaps.iter().map(|g| g.segments).sum::<u64>() as f64,
    );
    m.gauge(
        "pitrkit_backups",
        "Backups in the repository",
        &[],
        r.backups.len() as f64,
    );
    m.gauge(
        "pitrkit_backups_restorable",
        "Backups that can restore",
        &[],
        r.backups.iter().filter(|b| b.restorable).count() as f64,
    );
    if let Some(a) = r.newest_backup_age_seconds {
        m.gauge(
            "pitrkit_backup_newest_age_seconds",
            "Seconds since the newest restorable backup became consistent",
            &[],
            a,
        );
    }
    m.gauge(
        "pitrkit_chunk_bytes",
        "Bytes of backup content stored",
        &[],
        r.chunk_bytes as f64,
    );
    for b in &r.backups {
        m.gauge(
            "pitrkit_backup_restorable",
            "1 if the backup can restore",
            &[("backup_id", &b.backup_id)],
            if b.restorable { 1.0 } else { 0.0 },
        );
    }
    for b in &r.backups {
        if let Some(end) = b.window.as_ref().and_then(|w| w.to_time) {
            m.gauge(
                "pitrkit_backup_window_end_timestamp_seconds",
                "The latest moment the backup restores to",
                &[("backup_id", &b.backup_id)],
                end.as_second() as f64,
            );
        }
    }
    if let Some(first) = r.windows.iter().map(|w| w.from_time).min() {
        m.gauge(
            "pitrkit_recovery_window_start_timestamp_seconds",
            "The earliest moment the repository restores to",
            &[],
            first.as_second() as f64,
        );
    }
    if let Some(last) = r.windows.iter().filter_map(|w| w.to_time).max() {
        m.gauge(
            "pitrkit_recovery_window_end_timestamp_seconds",
            "The latest moment the repository restores to",
            &[],
            last.as_second() as f64,
        );
    }
    if let Some(a) = &r.archiver {
        m.gauge(
            "pitrkit_archiver_failed_count",
            "pg_stat_archiver.failed_count",
            &[],
            a.failed_count as f64,
        );
        m.gauge(
            "pitrkit_archiver_failing",
            "1 if the last archive_command attempt failed",
            &[],
            if a.failing { 1.0 } else { 0.0 },
        );
        if let Some(n) = a.ready_files {
            m.gauge(
                "pitrkit_archiver_ready_files",
                "WAL files waiting to be archived",
                &[],
                n as f64,
            );
        }
    }
    m
}
