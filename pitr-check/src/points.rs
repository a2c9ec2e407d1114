//! `pitr-check points`: every restore point (`pg_create_restore_point()`) a restore can
//! target, with its time, LSN and timeline — read from the WAL summaries of each recovery
//! window, so a runbook can pick a `--target-name` that the archive really holds.

use jiff::Timestamp;
use pitrkit::error::Result;
use pitrkit::repo::archive::Window;
use pitrkit::repo::summary::{Point, Summaries};
use pitrkit::runner::{Verdict, note};
use pitrkit::settings::{RepoArgs, Settings};
use serde::Serialize;

use crate::PointsArgs;
use crate::report::{Metrics, print_report};
use crate::status::{Inventory, build};

#[derive(Debug, Serialize)]
struct PointsReport {
    format_version: u32,
    repository: String,
    checked_at: Timestamp,
    /// Oldest first.
    points: Vec<Point>,
    /// Segments of the recovery windows, and how many of them are summarized: points in
    /// the others are not known (`pitr-check index` summarizes them).
    segments: usize,
    summarized: usize,
}

pub fn run(args: &PointsArgs, repo_args: &RepoArgs) -> Result<Verdict> {
    let settings = Settings::from_args(repo_args)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| settings.location.default_jobs())
        .max(1);
    let inv = Inventory::load(&settings)?;
    let status = build(&inv, None, None, None, 0);
    let summaries = Summaries::list(&inv.repo, &inv.root)?;
    let (mut points, mut segments, mut summarized) = (Vec::new(), 0, 0);
    for w in &status.windows {
        let window = Window {
            timeline: w.timeline,
            from_lsn: w.from_lsn,
            from_time: w.from_time,
            to_lsn: w.to_lsn,
            to_time: w.to_time,
            cut_by: None,
        };
        let (p, sum, segs) = summaries.points_in(&inv.index, &window, jobs)?;
        points.extend(p);
        segments += segs;
        summarized += sum;
    }
    points.sort_by_key(|p| (p.lsn, p.timeline));
    points.dedup();
    let report = PointsReport {
        format_version: 1,
        repository: inv.repo.location(),
        checked_at: Timestamp::now(),
        points,
        segments,
        summarized,
    };
    let output = crate::OutputArgs {
        json: args.json,
        prometheus: false,
    };
    print_report(
        &output,
        &report,
        |out| {
            writeln!(out, "{:<3} {:<17} {:<27} NAME", "TLI", "LSN", "TIME")?;
            for p in &report.points {
                writeln!(
                    out,
                    "{:<3} {:<17} {:<27} {}",
                    p.timeline,
                    p.lsn.to_string(),
                    p.time.strftime("%F %T%.6f UTC").to_string(),
                    p.name
                )?;
            }
            Ok(())
        },
        || Metrics::new(&report.repository),
    )?;
    if summarized < segments {
        note(format!(
            "{} of the windows' {segments} segments have no summary: restore points in them are \
             not listed (`pitr-check index` summarizes them)",
            segments - summarized
        ));
        return Ok(Verdict::Warning);
    }
    Ok(Verdict::Ok)
}
