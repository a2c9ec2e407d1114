//! `pitr-check`: prove the archive can restore. `status` (the default) reads the repository
//! and, optionally, the archiver's statistics; `verify` reads every stored object; `drill`
//! restores a backup into a throwaway cluster and checks what it holds; `points` lists the
//! restore points a restore can target; `index` writes missing WAL summaries.
//!
//! Exit statuses follow the Nagios plugin convention (see [`Verdict`]): 0 OK, 1 WARNING,
//! 2 CRITICAL, 3 UNKNOWN when the check itself could not run.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use pitrkit::error::Result;
use pitrkit::pg::target::TargetArgs;
use pitrkit::runner::Verdict;
use pitrkit::settings::RepoArgs;

pub mod drill;
pub mod index;
pub mod points;
pub mod report;
pub mod status;
pub mod verify;

#[derive(Parser, Debug)]
#[command(
    name = "pitr-check",
    version,
    about = "Prove a pitrkit repository can restore: gaps, recovery windows, RPO, verification, restore drills",
    after_help = "Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (the check could not run)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub status: StatusArgs,
    #[command(flatten)]
    pub repo: RepoArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Archive continuity, each backup's recovery window, RPO and the archiver's health (default)
    Status(StatusArgs),
    /// Read every stored object and check it against its recorded digest and length
    Verify(VerifyArgs),
    /// Restore a backup into a throwaway cluster, start it and check it
    Drill(DrillArgs),
    /// List the restore points a restore can target (from the WAL summaries)
    Points(PointsArgs),
    /// Write the WAL summaries that are missing (segments archived before wal-push wrote them)
    Index(IndexArgs),
}

#[derive(Args, Debug, Clone)]
pub struct PointsArgs {
    /// JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Summaries read in parallel [default: the CPUs; 4 × the CPUs for S3]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Args, Debug, Clone)]
pub struct IndexArgs {
    /// Segments read in parallel [default: the CPUs; 4 × the CPUs for S3]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

/// How a report is printed on stdout.
#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// JSON instead of a table
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Prometheus text exposition format (for node_exporter's textfile collector)
    #[arg(long)]
    pub prometheus: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct StatusArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Also check the archiver of this running cluster (pg_stat_archiver, pending .ready files)
    #[arg(long, value_name = "CONNINFO")]
    pub dbname: Option<String>,
    /// The cluster's data directory, for counting .ready files [default: asked of the server]
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// WARNING when the newest archived WAL is older than this, e.g. 5m
    #[arg(long, value_name = "DURATION")]
    pub max_wal_age: Option<String>,
    /// WARNING when the newest backup is older than this, e.g. 8d
    #[arg(long, value_name = "DURATION")]
    pub max_backup_age: Option<String>,
    /// WARNING when more WAL files than this wait to be archived (with --dbname)
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_ready: u64,
    /// This repository is a copy (pitr-copy) of the one at URL: report how far behind it is
    #[arg(long, value_name = "URL")]
    pub compare: Option<String>,
    /// Config file for the --compare repository
    #[arg(long, value_name = "FILE", requires = "compare")]
    pub compare_config: Option<PathBuf>,
    /// With --compare: WARNING when the copy lacks WAL the source stored longer ago than this
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "15m",
        requires = "compare"
    )]
    pub max_copy_lag: String,
    /// With --compare: CRITICAL beyond this
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1h",
        requires = "compare"
    )]
    pub max_copy_lag_critical: String,
}

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Objects read in parallel [default: the CPUs; 4 × the CPUs for S3]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Args, Debug, Clone)]
pub struct DrillArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Restore this backup instead of the newest one before the target
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Queries to run on the restored cluster: each ends with ';' at the end of a line; a
    /// `-- expect: VALUE` line before one sets the text its first row's first column must
    /// equal (NULL for SQL NULL, 'quoted' for exact text); `\c DBNAME` switches database
    #[arg(long, value_name = "FILE")]
    pub sql: Option<PathBuf>,
    /// The live cluster: the drill makes a restore point there, recovers to it and compares
    /// every table's row count with it (so it can't be combined with a --target-*)
    #[arg(long, value_name = "CONNINFO", conflicts_with = "target")]
    pub dbname: Option<String>,
    /// PostgreSQL binaries [default: the config's [pg_bin] entry for the backup's major, then
    /// /usr/lib/postgresql/<major>/bin, then pg_config]
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// Unprivileged user the restored cluster runs as when pitr-check runs as root
    #[arg(long, value_name = "USER", default_value = "postgres")]
    pub run_as: String,
    /// Database role to connect as in the restored cluster
    #[arg(long, value_name = "ROLE", default_value = "postgres")]
    pub db_user: String,
    /// Where to make the throwaway directory [default: the system's temporary directory]
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Longest time recovery may take, e.g. 2h
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub recovery_timeout: String,
    /// Parallel downloads for the restore
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Leave the throwaway directory (the stopped cluster and its log) for inspection
    #[arg(long)]
    pub keep: bool,
}

pub fn run(cli: Cli) -> Result<Verdict> {
    let s = &cli.status;
    let status_flags = s.output.json
        || s.output.prometheus
        || s.dbname.is_some()
        || s.pgdata.is_some()
        || s.max_wal_age.is_some()
        || s.max_backup_age.is_some()
        || s.compare.is_some();
    if cli.command.is_some() && status_flags {
        return Err(pitrkit::Error::Usage(
            "give a subcommand's options after its name, e.g. pitr-check verify --json".into(),
        ));
    }
    match cli.command {
        None => status::run(&cli.status, &cli.repo),
        Some(Command::Status(args)) => status::run(&args, &cli.repo),
        Some(Command::Verify(args)) => verify::run(&args, &cli.repo),
        Some(Command::Drill(args)) => drill::run(&args, &cli.repo),
        Some(Command::Points(args)) => points::run(&args, &cli.repo),
        Some(Command::Index(args)) => index::run(&args, &cli.repo),
    }
}
