//! `pitr-check index`: writes the WAL summaries that are missing — for segments archived
//! before wal-push wrote them, or whose summary was lost. Reads each such segment once
//! (`--jobs` at a time); resumable, since it only ever does what is still missing. In an
//! encrypted repository it needs the identity (segments are data).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pitrkit::error::{Error, Result};
use pitrkit::io::parallel;
use pitrkit::pg::wal::WalFileName;
use pitrkit::pg::walrecord;
use pitrkit::repo::object;
use pitrkit::repo::summary::{self, Summaries};
use pitrkit::runner::{Verdict, note};
use pitrkit::settings::{RepoArgs, Settings};
use serde::Serialize;

use crate::IndexArgs;

#[derive(Debug, Serialize)]
struct IndexReport {
    format_version: u32,
    repository: String,
    /// Archived segments, and how many had a summary before this run.
    segments: usize,
    already: usize,
    written: usize,
    /// Segments that could not be summarized, with why (a damaged segment: run verify).
    failed: Vec<(String, String)>,
    bytes_read: u64,
    seconds: f64,
}

pub fn run(args: &IndexArgs, repo_args: &RepoArgs) -> Result<Verdict> {
    let started = Instant::now();
    let settings = Settings::from_args(repo_args)?;
    let jobs = settings.jobs(args.jobs);
    let repo = settings.open_repo()?;
    let root = repo.require_root()?;
    let segments: Vec<WalFileName> = repo
        .list_wal()?
        .into_iter()
        .map(|(n, _)| n)
        .filter(WalFileName::has_wal_pages)
        .collect();
    let summaries = Summaries::list(&repo, &root)?;
    let todo: Vec<WalFileName> = segments
        .iter()
        .filter(|n| !summaries.has(n))
        .copied()
        .collect();
    let bytes = AtomicU64::new(0);
    // A segment that can't be read is reported and the others still summarized; a store
    // that fails stops the run.
    let done = parallel::map(jobs, &todo, |name| -> Result<Option<(String, String)>> {
        let key = pitrkit::repo::layout::wal(name);
        let Some(stored) = repo.store().get(&key)? else {
            return Ok(None); // expired since the listing
        };
        bytes.fetch_add(stored.len() as u64, Ordering::Relaxed);
        let summarized = object::open(key.as_str(), &stored, repo.keys(), object::limit::WAL)
            .and_then(|(plain, _)| walrecord::summarize(key.as_str(), &plain));
        match summarized {
            Ok(s) => summary::store(&repo, name, &s).map(|()| None),
            Err(e @ (Error::Corrupt { .. } | Error::InvalidInput { .. })) => {
                Ok(Some((name.to_string(), e.to_string())))
            }
            Err(e) => Err(e),
        }
    })?;
    let failed: Vec<(String, String)> = done.into_iter().flatten().collect();
    let report = IndexReport {
        format_version: 1,
        repository: repo.location(),
        segments: segments.len(),
        already: segments.len() - todo.len(),
        written: todo.len() - failed.len(),
        failed,
        bytes_read: bytes.load(Ordering::Relaxed),
        seconds: pitrkit::io::measure::round(started.elapsed().as_secs_f64(), 3),
    };
    println!(
        "{}",
        serde_json::to_string(&report).map_err(Error::internal)?
    );
    note(format!(
        "{} segments: {} summarized before, {} summaries written, {} failed",
        report.segments,
        report.already,
        report.written,
        report.failed.len()
    ));
    for (name, why) in &report.failed {
        note(format!("{name}: {why}"));
    }
    Ok(if report.failed.is_empty() {
        Verdict::Ok
    } else {
        Verdict::Critical
    })
}
