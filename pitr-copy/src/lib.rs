//! `pitr-copy`: keep a second copy of a repository in another store or region, so that a
//! regional outage, a deleted bucket or a compromised account does not take the only copy.
//!
//! One pass copies what the destination lacks, in an order that keeps the copy restorable
//! at every moment: the root document first (the same cluster, or a refusal), then WAL,
//! summaries and chunks, and a backup's manifest (then its keep mark) only once every chunk
//! it names and the WAL it needs to become consistent are at the destination and read back.
//! Objects are never overwritten with other content (a conflict is an error naming both
//! digests); deletions are not mirrored unless asked. Interrupted, the next pass goes on
//! where this one stopped. `--follow` repeats passes as WAL arrives.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pitrkit::error::{Error, Result};
use pitrkit::repo::Repository;
use pitrkit::runner::note;
use pitrkit::settings::{RepoArgs, Settings, parse_duration, process_env};

mod pass;
mod progress;
mod rate;

pub use pass::PassReport;
use rate::Rate;

#[derive(Parser, Debug)]
#[command(
    name = "pitr-copy",
    version,
    about = "Copy a pitrkit repository to another store, verified, resumable, restorable at every moment",
    after_help = "Use from cron:  pitr-copy --from /var/lib/pitr --to s3://dr-bucket/main --to-config /etc/pitrkit-dr.toml\n\
                  or as a service: pitr-copy --follow …\n\
                  Prints one JSON line per pass (objects, bytes, seconds, lag) on stdout.\n\
                  Exit status: 0 copied; 4 the destination holds another repository or different content under a name;\n\
                  5/6 a store failed or refused; 7 a source object is corrupt (not copied)."
)]
pub struct Cli {
    /// The repository to copy: a directory, file:///path or s3://bucket[/prefix]
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// Config file for the source (S3 endpoint and credentials, encryption recipients)
    #[arg(long, value_name = "FILE")]
    pub from_config: Option<PathBuf>,
    /// Where the copy lives (any form --from accepts)
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Config file for the destination
    #[arg(long, value_name = "FILE")]
    pub to_config: Option<PathBuf>,
    /// Keep copying as WAL arrives: passes repeat, waiting up to --interval when idle
    #[arg(long)]
    pub follow: bool,
    /// With --follow, the longest wait between passes when nothing changes
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = |s: &str| parse_duration("--interval", s))]
    pub interval: Duration,
    /// Objects copied at once [default: the CPUs; 4 × the CPUs when a side is S3]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Bytes written per second at most, e.g. 50MB/s, 200M, 1G
    #[arg(long, value_name = "RATE", value_parser = rate::parse)]
    pub max_rate: Option<u64>,
    /// Also delete from the copy what the source no longer has (retention at the source
    /// then applies to the copy; without this the copy keeps everything until its own expire)
    #[arg(long)]
    pub mirror_deletes: bool,
    /// More detail on stderr
    #[arg(short, long)]
    pub verbose: bool,
}

/// A copy, every choice checked before the first request.
pub struct CopyOptions {
    pub from: Settings,
    pub to: Settings,
    pub follow: bool,
    pub interval: Duration,
    pub jobs: usize,
    pub max_rate: Option<u64>,
    pub mirror_deletes: bool,
}

impl Cli {
    pub fn options(&self) -> Result<CopyOptions> {
        let env = process_env();
        let side = |url: &str, config: &Option<PathBuf>| {
            Settings::resolve(
                &RepoArgs {
                    repo: Some(url.to_string()),
                    config: config.clone(),
                    verbose: self.verbose,
                    ..RepoArgs::default()
                },
                &env,
            )
        };
        let from = side(&self.from, &self.from_config)?;
        let to = side(&self.to, &self.to_config)?;
        if from.location == to.location {
            return Err(Error::Usage(
                "--from and --to name the same repository".into(),
            ));
        }
        let jobs = self
            .jobs
            .unwrap_or_else(|| from.location.default_jobs().max(to.location.default_jobs()))
            .max(1);
        Ok(CopyOptions {
            from,
            to,
            follow: self.follow,
            interval: self.interval.max(Duration::from_secs(1)),
            jobs,
            max_rate: self.max_rate,
            mirror_deletes: self.mirror_deletes,
        })
    }
}

pub fn run(cli: Cli) -> Result<()> {
    let opts = cli.options()?;
    let source = opts.from.open_repo()?;
    // The copy holds the source's objects as they are: it is read with the source's keys
    // (an encrypted repository needs its recipient here, to read manifests; never the
    // identity: data objects are copied as they are).
    let copy = Repository::with_keys(opts.to.open_store()?, source.keys().clone());
    let rate = opts.max_rate.map(Rate::new);
    let mut wait = Duration::from_secs(1);
    loop {
        let report = match pass::copy(&source, &copy, &opts, rate.as_ref()) {
            Ok(r) => r,
            // Following, a store that is down for a while is waited out, as the archiver
            // waits out a failing archive_command; anything else stops the copy.
            Err(e @ Error::Unavailable(_)) if opts.follow => {
                note(format!(
                    "{e}; trying again in {} s",
                    opts.interval.as_secs()
                ));
                std::thread::sleep(opts.interval);
                continue;
            }
            Err(e) => return Err(e),
        };
        println!(
            "{}",
            serde_json::to_string(&report).map_err(Error::internal)?
        );
        if !opts.follow {
            if !report.refused.is_empty() {
                return Err(Error::corrupt(
                    report.refused[0].0.as_str(),
                    format!(
                        "and {} more source objects fail their checks and were not copied: run \
                         pitr-check verify on the source",
                        report.refused.len() - 1
                    ),
                ));
            }
            return Ok(());
        }
        // Idle passes back off up to --interval; a pass that copied starts over quickly.
        wait = if report.objects == 0 {
            (wait * 2).min(opts.interval)
        } else {
            Duration::from_secs(1)
        };
        if report.objects > 0 || !report.refused.is_empty() {
            note(format!(
                "copied {} objects ({} bytes); {} WAL objects and {} backups behind",
                report.objects,
                report.bytes,
                report.lag.wal_behind,
                report.lag.backups_behind.len()
            ));
        }
        std::thread::sleep(wait);
    }
}
