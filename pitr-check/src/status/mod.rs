//! `pitr-check status`: what the repository can restore, right now, and what threatens it.
//!
//! Read-only. One listing of WAL, backups and chunks, the history files and the manifests;
//! no object bodies are read (`verify` does that). Every finding is collected before the
//! verdict, so one run reports every problem rather than the first.
//!
//! - `inventory`: the listings and manifests, and what each backup can restore;
//! - `findings`: the report and everything that threatens a restore, with a verdict;
//! - `archiver`: the live cluster's archiver, with --dbname;
//! - `render`: the table and the Prometheus text.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use pitrkit::error::Result;
use pitrkit::pg::wal::{Lsn, WalFileName};
use pitrkit::repo::archive::{ArchiveIndex, Gap};
use pitrkit::repo::chunk::{self, ChunkId};
use pitrkit::repo::manifest::{BackupId, BackupManifest};
use pitrkit::repo::retention::KeepMark;
use pitrkit::repo::{RepoRoot, Repository};
use pitrkit::runner::{Verdict, note};
use pitrkit::settings::{RepoArgs, Settings, parse_duration};
use serde::Serialize;

use crate::StatusArgs;
use crate::report::{Metrics, Severity, print_report};

mod archiver;
mod commits;
mod copy;
mod findings;
mod inventory;
mod render;

pub use archiver::ArchiverReport;
use archiver::archiver;
pub use findings::build;
pub use inventory::{BackupReport, Inventory, WindowReport};
pub use render::human_bytes;
use render::{human_secs, metrics, table};

/// Bumped when a field changes meaning or goes away.
pub const REPORT_VERSION: u32 = 1;

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
    /// Archived segments without a WAL summary (archived before pitrkit wrote them, or by
    /// a wal-push that could not read their records): `pitr-check index` writes them.
    pub unsummarized_segments: u64,
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
    /// The newest commit any recovery window reaches (from the WAL summaries).
    pub last_commit: Option<pitrkit::repo::summary::Commit>,
    /// Seconds from `last_commit` to `checked_at`: the effective RPO, what losing the
    /// primary now would cost in committed transactions.
    pub last_commit_age_seconds: Option<f64>,
    pub newest_backup: Option<String>,
    pub newest_backup_age_seconds: Option<f64>,
    pub chunk_bytes: u64,
    pub archiver: Option<ArchiverReport>,
    /// With --compare: how far this copy is behind its source.
    pub copy: Option<copy::CopyReport>,
}

impl StatusReport {
    /// Adds a finding found after the report was built, and the verdict it calls for.
    pub fn flag(&mut self, severity: Severity, message: String) {
        let verdict = match severity {
            Severity::Warning => Verdict::Warning,
            Severity::Critical => Verdict::Critical,
        };
        self.verdict = self.verdict.max(verdict);
        self.findings.push(Finding { severity, message });
    }
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
    let mut report = build(&inv, archiver, max_wal_age, max_backup_age, args.max_ready);
    commits::annotate(&inv, &mut report, inv.repo_jobs)?;
    copy::compare(args, &inv, &mut report)?;
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
