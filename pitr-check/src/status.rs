//! `pitr-check status`: what the repository can restore, right now, and what threatens it.
//!
//! Read-only. One listing of WAL, backups and chunks, the history files and the manifests;
//! no object bodies are read (`verify` does that). Every finding is collected before the
//! verdict, so one run reports every problem rather than the first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use pitrkit::archive::{ArchiveIndex, Gap};
use pitrkit::chunk::{self, ChunkId};
use pitrkit::error::Result;
use pitrkit::manifest::{BackupId, BackupManifest};
use pitrkit::repo::{RepoRoot, Repository};
use pitrkit::retention::KeepMark;
use pitrkit::runner::{Verdict, note};
use pitrkit::settings::{RepoArgs, Settings, parse_duration};
use pitrkit::wal::{Lsn, WalFileName};
use serde::Serialize;

use crate::StatusArgs;
use crate::report::{Metrics, Severity, print_report};

/// Bumped when a field changes meaning or goes away.
pub const REPORT_VERSION: u32 = 1;

/// Everything `status` and `verify` need to know about a repository, from listings.
pub struct Inventory {
    pub repo: Repository,
    pub root: RepoRoot,
    pub index: ArchiveIndex,
    /// Every backup, with its manifest or why it can't be read.
    pub backups: Vec<(BackupId, std::result::Result<BackupManifest, String>)>,
    pub chunks: HashSet<ChunkId>,
    pub chunk_bytes: u64,
    pub keeps: HashMap<BackupId, KeepMark>,
}

impl Inventory {
    pub fn load(settings: &Settings) -> Result<Self> {
        let repo = settings.open_repo()?;
        let root = repo.require_root()?;
        let index = ArchiveIndex::load(&repo, root.wal_segment_size)?;
        let backups = repo
            .list_backups()?
            .into_iter()
            .map(|id| {
                let m = repo.read_manifest(&id).map_err(|e| e.to_string());
                (id, m)
            })
            .collect();
        let listed = chunk::list(repo.store())?;
        let chunk_bytes = listed.iter().map(|(_, o)| o.size).sum();
        let keeps = repo.keep_marks()?;
        Ok(Inventory {
            repo,
            root,
            index,
            backups,
            chunks: listed.into_iter().map(|(id, _)| id).collect(),
            chunk_bytes,
            keeps,
        })
    }

    /// What each backup can restore.
    pub fn analyse(&self) -> Vec<BackupReport> {
        self.backups
            .iter()
            .map(|(id, m)| match m {
                Err(why) => BackupReport::unreadable(id, why, self.keeps.get(id)),
                Ok(m) => {
                    let missing_wal = self.index.missing_for(m);
                    let missing_chunks = m
                        .referenced_chunks()
                        .collect::<HashSet<_>>()
                        .into_iter()
                        .filter(|c| !self.chunks.contains(c))
                        .count() as u64;
                    let missing_files: Vec<String> = pitrkit::datadir::missing_to_start(&m.entries)
                        .into_iter()
                        .map(String::from)
                        .collect();
                    let tli = self.index.recovery_timeline(m.timeline, m.stop_lsn);
                    let window = (missing_chunks == 0)
                        .then(|| self.index.window(m, tli))
                        .flatten()
                        .map(WindowReport::from);
                    BackupReport {
                        backup_id: id.to_string(),
                        label: m.label.clone(),
                        timeline: m.timeline,
                        start_lsn: m.start_lsn,
                        stop_lsn: m.stop_lsn,
                        start_time: Some(m.start_time),
                        stop_time: Some(m.stop_time),
                        bytes: m.totals.bytes,
                        pg_version_num: m.pg_version_num,
                        // Restorable means the restored cluster starts and recovers.
                        restorable: window.is_some() && missing_files.is_empty(),
                        missing_files,
                        missing_wal: missing_wal.iter().map(ToString::to_string).collect(),
                        missing_chunks,
                        manifest_error: None,
                        keep: self.keeps.get(id).map(|k| k.reason.clone()),
                        window,
                    }
                }
            })
            .collect()
    }
}

/// A recovery window: restore to any moment from `from` to `to`.
#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    pub timeline: u32,
    pub from_time: Timestamp,
    /// When the last WAL recovery can read was stored; `null` when the store does not say.
    pub to_time: Option<Timestamp>,
    pub from_lsn: Lsn,
    pub to_lsn: Lsn,
    /// The missing segment that ends the window, if a gap (not the archive's end) does.
    pub cut_by: Option<String>,
}

impl From<pitrkit::archive::Window> for WindowReport {
    fn from(w: pitrkit::archive::Window) -> Self {
        WindowReport {
            timeline: w.timeline,
            from_time: w.from_time,
            to_time: w.to_time,
            from_lsn: w.from_lsn,
            to_lsn: w.to_lsn,
            cut_by: w.cut_by.map(|n| n.to_string()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub backup_id: String,
    pub label: String,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_time: Option<Timestamp>,
    pub stop_time: Option<Timestamp>,
    pub bytes: u64,
    pub pg_version_num: u32,
    pub restorable: bool,
    /// Files a cluster needs to start (PG_VERSION, global/pg_control) the backup lacks.
    pub missing_files: Vec<String>,
    /// WAL from the backup's start to its stop that the archive lacks.
    pub missing_wal: Vec<String>,
    /// Chunks the manifest names that are not in the repository.
    pub missing_chunks: u64,
    pub manifest_error: Option<String>,
    /// The keep mark's reason, when the backup is kept whatever the policy.
    pub keep: Option<String>,
    pub window: Option<WindowReport>,
}

impl BackupReport {
    fn unreadable(id: &BackupId, why: &str, keep: Option<&KeepMark>) -> Self {
        BackupReport {
            backup_id: id.to_string(),
            label: String::new(),
            timeline: 0,
            start_lsn: Lsn(0),
            stop_lsn: Lsn(0),
            start_time: None,
            stop_time: None,
            bytes: 0,
            pg_version_num: 0,
            restorable: false,
            missing_files: vec![],
            missing_wal: vec![],
            missing_chunks: 0,
            manifest_error: Some(why.to_string()),
            keep: keep.map(|k| k.reason.clone()),
            window: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineReport {
    pub timeline: u32,
    /// The timeline it branched from and where, from its `.history` file.
    pub parent: Option<u32>,
    pub switch_lsn: Option<Lsn>,
    pub first: Option<String>,
    pub last: Option<String>,
    pub segments: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GapReport {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: u64,
    /// The backups whose recovery window this gap ends.
    pub cuts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalReport {
    pub files: usize,
    pub bytes: u64,
    pub newest: Option<String>,
    pub newest_stored_at: Option<Timestamp>,
    /// Seconds since the newest WAL was stored: the data a loss of the primary would cost now.
    pub newest_age_seconds: Option<f64>,
    pub timelines: Vec<TimelineReport>,
    pub gaps: Vec<GapReport>,
}

/// `pg_stat_archiver` and the pending `.ready` files of the running cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiverReport {
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<Timestamp>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<Timestamp>,
    /// The last attempt failed (a failure newer than the last success).
    pub failing: bool,
    pub archive_mode: String,
    pub in_recovery: bool,
    pub current_wal: Option<String>,
    pub current_lsn: Option<Lsn>,
    /// WAL files waiting for archive_command, when the data directory is readable.
    pub ready_files: Option<u64>,
    pub system_identifier_matches: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub format_version: u32,
    pub repository: String,
    pub checked_at: Timestamp,
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    pub system_identifier: String,
    pub pg_major: u32,
    pub wal: WalReport,
    pub backups: Vec<BackupReport>,
    /// Where a restore can land: the union of the backups' windows, per timeline.
    pub windows: Vec<WindowReport>,
    pub newest_backup: Option<String>,
    pub newest_backup_age_seconds: Option<f64>,
    pub chunk_bytes: u64,
    pub archiver: Option<ArchiverReport>,
}

pub fn run(args: &StatusArgs, repo_args: &RepoArgs) -> Result<Verdict> {
    let max_wal_age = args
        .max_wal_age
        .as_deref()
        .map(|d| parse_duration("--max-wal-age", d))
        .transpose()?;
    let max_backup_age = args
        .max_backup_age
        .as_deref()
        .map(|d| parse_duration("--max-backup-age", d))
        .transpose()?;
    let inv = Inventory::load(&Settings::from_args(repo_args)?)?;
    let archiver = match &args.dbname {
        Some(c) => Some(archiver(c, args.pgdata.as_deref(), &inv.root)?),
        None => None,
    };
    let report = build(&inv, archiver, max_wal_age, max_backup_age, args.max_ready);
    print_report(
        &args.output,
        &report,
        |out| table(out, &report),
        || metrics(&report),
    )?;
    let summary = if report.findings.is_empty() {
        format!(
            "{} of {} backup(s) restorable; newest WAL {}",
            report.backups.iter().filter(|b| b.restorable).count(),
            report.backups.len(),
            report
                .wal
                .newest_age_seconds
                .map_or("of unknown age".into(), |a| format!(
                    "{} old",
                    human_secs(a)
                ))
        )
    } else {
        report
            .findings
            .iter()
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
            .chars()
            .take(400)
            .collect()
    };
    note(format!("{}: {summary}", verdict_word(report.verdict)));
    Ok(report.verdict)
}

pub fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "OK",
        Verdict::Warning => "WARNING",
        Verdict::Critical => "CRITICAL",
    }
}

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
        },
        windows: merge_windows(&backups),
        newest_backup: newest_backup.map(|b| b.backup_id.clone()),
        newest_backup_age_seconds: newest_backup_age,
        backups,
        chunk_bytes: inv.chunk_bytes,
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

fn human_secs(s: f64) -> String {
    humantime::format_duration(Duration::from_secs(s.max(0.0) as u64)).to_string()
}

/// Reads the archiver's state from the running cluster.
fn archiver(conninfo: &str, pgdata: Option<&Path>, root: &RepoRoot) -> Result<ArchiverReport> {
    let mut db = pitrkit::db::connect(conninfo)?;
    let err = pitrkit::db::db_err;
    let row = db
        .query_one(
            "select archived_count, last_archived_wal, \
                    extract(epoch from last_archived_time)::float8, \
                    failed_count, last_failed_wal, \
                    extract(epoch from last_failed_time)::float8, \
                    pg_is_in_recovery(), current_setting('archive_mode'), \
                    current_setting('data_directory'), \
                    (select system_identifier from pg_control_system())::text \
             from pg_stat_archiver",
            &[],
        )
        .map_err(err("reading pg_stat_archiver"))?;
    let ts = |v: Option<f64>| v.and_then(|s| Timestamp::from_millisecond((s * 1000.0) as i64).ok());
    let last_archived_time = ts(row.get(2));
    let last_failed_time = ts(row.get(5));
    let in_recovery: bool = row.get(6);
    let data_directory: String = row.get(8);
    let sysid: String = row.get(9);
    let (current_wal, current_lsn) = if in_recovery {
        (None, None)
    } else {
        let r = db
            .query_one(
                "select pg_walfile_name(pg_current_wal_lsn()), pg_current_wal_lsn()::text",
                &[],
            )
            .map_err(err("reading the current WAL position"))?;
        let lsn: String = r.get(1);
        (Some(r.get::<_, String>(0)), lsn.parse().ok())
    };
    let dir = pgdata.map_or_else(|| PathBuf::from(&data_directory), Path::to_path_buf);
    let status_dir = dir.join("pg_wal/archive_status");
    let ready_files = match std::fs::read_dir(&status_dir) {
        Ok(entries) => Some(
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count() as u64,
        ),
        Err(e) => {
            note(format!(
                "can't count pending WAL in {} ({e}); give --pgdata or run as the cluster's owner",
                status_dir.display()
            ));
            None
        }
    };
    Ok(ArchiverReport {
        archived_count: row.get(0),
        last_archived_wal: row.get(1),
        last_archived_time,
        failed_count: row.get(3),
        last_failed_wal: row.get(4),
        failing: match (last_failed_time, last_archived_time) {
            (Some(f), Some(a)) => f > a,
            (Some(_), None) => true,
            _ => false,
        },
        last_failed_time,
        archive_mode: row.get(7),
        in_recovery,
        current_wal,
        current_lsn,
        ready_files,
        system_identifier_matches: sysid == root.system_identifier.to_string(),
    })
}

fn table(out: &mut dyn std::io::Write, r: &StatusReport) -> std::io::Result<()> {
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
            "  timeline {:<3} {} .. {}   ({} .. {})",
            w.timeline,
            t(Some(w.from_time)),
            t(w.to_time),
            w.from_lsn,
            w.to_lsn
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

fn metrics(r: &StatusReport) -> Metrics {
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
