//! `bb-restore`: restore the right base backup into a data directory and configure
//! PostgreSQL to recover through `wal-fetch` to a target. The engine is
//! `pitrkit::restore`, shared with `pitr-check drill`; this crate turns the command line into
//! its options, once, before any I/O.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use pitrkit::error::{Error, Result};
use pitrkit::pg::datadir::TablespaceMapping;
use pitrkit::pg::target::{RecoveryTarget, TargetAction, TargetArgs, TargetTimeline};
use pitrkit::restore::{self, ArchiveMode, Existing, RestoreOptions, Signal};
use pitrkit::settings::{RepoArgs, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "bb-restore",
    version,
    about = "Restore a base backup and configure point-in-time recovery",
    after_help = "Target times without a zone are UTC; they are written with an explicit +00 offset.\n\
                  Prints a JSON summary (backup used, bytes, seconds, recovery settings) on stdout."
)]
pub struct Cli {
    /// Data directory to restore into (created if missing; must be empty unless --delta/--force)
    #[arg(long, value_name = "DIR")]
    pub pgdata: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Stop just before the target instead of just after it
    #[arg(long)]
    pub target_exclusive: bool,
    /// What the server does at the target
    #[arg(long, value_name = "ACTION", value_enum, default_value_t = TargetAction::Promote)]
    pub target_action: TargetAction,
    /// Timeline to recover along: latest, current or a number
    #[arg(long, value_name = "TLI")]
    pub target_timeline: Option<TargetTimeline>,
    /// Restore this backup instead of choosing one
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// off: the restored cluster does not archive (a side copy to recover rows from, a
    /// restore test), so it can't add timelines to the repository; preserve: keep the
    /// backup's archive settings (the restored cluster becomes the new primary)
    #[arg(long, value_name = "MODE", value_enum, default_value_t = ArchiveMode::Preserve)]
    pub archive_mode: ArchiveMode,
    /// Write standby.signal instead of recovery.signal
    #[arg(long)]
    pub standby: bool,
    /// Reuse a non-empty DIR: keep files whose content already matches, fetch the rest
    #[arg(long, conflicts_with = "force")]
    pub delta: bool,
    /// Empty a non-empty DIR first
    #[arg(long)]
    pub force: bool,
    /// Restore the tablespace that was in OLDDIR into NEWDIR instead, rewriting its
    /// pg_tblspc link and tablespace_map (repeatable; pg_basebackup's spelling)
    #[arg(long, value_name = "OLDDIR=NEWDIR")]
    pub tablespace_mapping: Vec<TablespaceMapping>,
    /// Restore every tablespace not mapped by --tablespace-mapping into DIR/<oid>
    #[arg(long, value_name = "DIR")]
    pub tablespace_mapping_all: Option<PathBuf>,
    /// Put pg_wal in DIR (absolute), behind a pg_wal link, as initdb --waldir does
    #[arg(long, value_name = "DIR")]
    pub waldir: Option<PathBuf>,
    /// How long the repository keeps this backup and the WAL after it for the recovery
    /// that follows, unless recovery ends first (its recovery_end_command releases them)
    #[arg(long, value_name = "DURATION", default_value = "24h",
          value_parser = |s: &str| pitrkit::settings::parse_duration("--hold", s))]
    pub hold: Duration,
    /// Parallel downloads [default: the CPUs; 4 × the CPUs for S3]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub repo: RepoArgs,
}

impl Cli {
    /// The restore this command line asks for, every value checked.
    pub fn options(&self) -> Result<RestoreOptions> {
        let target = self.target.parse()?;
        if self.target_exclusive && target == RecoveryTarget::LastCommit {
            return Err(Error::Usage(
                "--target-exclusive does not apply to --target-time last-commit (it would stop \
                 before the commit it names)"
                    .into(),
            ));
        }
        Ok(RestoreOptions {
            pgdata: self.pgdata.clone(),
            target,
            target_exclusive: self.target_exclusive,
            target_action: self.target_action,
            target_timeline: self.target_timeline,
            backup: self.backup.as_deref().map(str::parse).transpose()?,
            archive_mode: self.archive_mode,
            signal: if self.standby {
                Signal::Standby
            } else {
                Signal::Recovery
            },
            existing: match (self.delta, self.force) {
                (true, _) => Existing::Delta,
                (_, true) => Existing::Force,
                _ => Existing::Refuse,
            },
            tablespace_mapping: self.tablespace_mapping.clone(),
            tablespace_mapping_all: self.tablespace_mapping_all.clone(),
            waldir: self.waldir.clone(),
            hold: self.hold,
            jobs: self.jobs,
        })
    }
}

pub fn run(cli: Cli) -> Result<()> {
    let opts = cli.options()?;
    let settings = Settings::from_args(&cli.repo)?;
    let summary = restore::restore(&settings, &opts)?;
    println!(
        "{}",
        serde_json::to_string(&summary).map_err(Error::internal)?
    );
    Ok(())
}
