//! `pitr-check points`: every restore point (`pg_create_restore_point()`) a restore can
//! target, with its time, LSN and timeline — read from the WAL summaries of each recovery
//! window, so a runbook can pick a `--target-name` that the archive really holds.

use jiff::Timestamp;
use pitrkit::error::Result;
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
    /// Commits over the windows' time, in equal intervals: where the archive has activity,
    /// and where it has none (a quiet night, or a stretch without summaries).
    activity: Option<Activity>,
}

#[derive(Debug, Serialize)]
struct Activity {
    from: Timestamp,
    to: Timestamp,
    interval_seconds: f64,
    commits: Vec<u64>,
}

/// Columns of the activity picture on a terminal.
const COLUMNS: usize = 60;

/// Spreads each segment's commits evenly over the intervals its first..last commit spans.
fn activity(spans: &[(Timestamp, Timestamp, u64)]) -> Option<Activity> {
    let from = spans.iter().map(|s| s.0).min()?;
    let to = spans.iter().map(|s| s.1).max()?;
    let total = (to.as_microsecond() - from.as_microsecond()).max(1) as f64;
    let width = total / COLUMNS as f64;
    let col = |t: Timestamp| {
        (((t.as_microsecond() - from.as_microsecond()) as f64 / width) as usize).min(COLUMNS - 1)
    };
    let mut commits = vec![0u64; COLUMNS];
    for (a, b, n) in spans {
        let (first, last) = (col(*a), col(*b));
        let cols = (last - first + 1) as u64;
        // Evenly, the remainder spread too: 6 commits over 60 columns mark every tenth.
        for (k, c) in commits[first..=last].iter_mut().enumerate() {
            let k = k as u64;
            *c += (k + 1) * n / cols - k * n / cols;
        }
    }
    Some(Activity {
        from,
        to,
        interval_seconds: width / 1e6,
        commits,
    })
}

/// The activity as a line of block characters, blank where nothing committed.
fn picture(a: &Activity) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = a.commits.iter().copied().max().unwrap_or(0).max(1);
    a.commits
        .iter()
        .map(|&n| match n {
            0 => ' ',
            n => LEVELS[((n * 8 - 1) / max) as usize % 8],
        })
        .collect()
}

pub fn run(args: &PointsArgs, repo_args: &RepoArgs) -> Result<Verdict> {
    let settings = Settings::from_args(repo_args)?;
    let jobs = settings.jobs(args.jobs);
    let inv = Inventory::load(&settings)?;
    let status = build(&inv, None, None, None, 0);
    let summaries = Summaries::list(&inv.repo, &inv.root)?;
    let (mut points, mut segments, mut summarized) = (Vec::new(), 0, 0);
    let mut spans = Vec::new();
    for w in &status.windows {
        let window = w.window();
        let (p, sum, segs) = summaries.points_in(&inv.index, &window, jobs)?;
        // Read already: the summaries are kept.
        for (_, s) in summaries.of_window(&inv.index, &window, jobs)? {
            let c = s.map(|s| s.commits).unwrap_or_default();
            if let (Some(a), Some(b)) = (c.min_time, c.max_time) {
                spans.push((a, b, c.count));
            }
        }
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
        activity: activity(&spans),
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
            if let Some(a) = &report.activity {
                let t = |t: &Timestamp| t.strftime("%F %T").to_string();
                writeln!(out)?;
                writeln!(
                    out,
                    "commits {} ▕{}▏ {} UTC",
                    t(&a.from),
                    picture(a),
                    t(&a.to)
                )?;
                writeln!(
                    out,
                    "        {} commits; each column {}, █ = {} commits (spread evenly over each \
                     segment's first..last commit)",
                    a.commits.iter().sum::<u64>(),
                    if a.interval_seconds < 10.0 {
                        format!("{:.0} ms", a.interval_seconds * 1000.0)
                    } else {
                        format!("{:.0} s", a.interval_seconds)
                    },
                    a.commits.iter().max().unwrap_or(&0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_shows_busy_and_quiet_stretches() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        // Busy for a minute, quiet for two, a trickle at the end.
        let a = activity(&[(t(0), t(60), 600), (t(180), t(180), 6)]).unwrap();
        assert_eq!(a.commits.iter().sum::<u64>(), 606);
        assert_eq!(a.commits.len(), COLUMNS);
        let p = picture(&a);
        assert_eq!(p.chars().count(), COLUMNS);
        assert!(p.starts_with('█'), "{p}");
        assert_eq!(
            &p.chars().skip(25).take(10).collect::<String>(),
            "          ",
            "{p}"
        );
        assert!(!p.ends_with(' '), "the trickle shows: {p}");
    }
}
