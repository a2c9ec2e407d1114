//! `bb-push`: take a base backup of a running cluster (`--pgdata`), or of a
//! `pg_basebackup -Ft -D -` tar stream on stdin, into the repository's chunk store, and
//! publish its manifest last.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use jiff::Timestamp;
use pitrkit::args::FileArg;
use pitrkit::error::{Error, Result};
use pitrkit::pg::wal::Lsn;
use pitrkit::repo::chunk::{CHUNK_SIZE, ChunkWriter};
use pitrkit::repo::lock::{LockKind, RepoLock};
use pitrkit::repo::manifest::{BackupId, BackupManifest, Entry, MANIFEST_VERSION, Totals};
use pitrkit::repo::object::Sealer;
use pitrkit::repo::retention;
use pitrkit::repo::{ClusterIdentity, Repository};
use pitrkit::runner::note;
use pitrkit::settings::{RepoArgs, Settings, parse_duration};
use serde::Serialize;

mod cluster;
mod files;
mod stream;

#[derive(Parser, Debug)]
#[command(
    name = "bb-push",
    version,
    about = "Take a base backup into a pitrkit repository",
    after_help = "From a running cluster:  bb-push --repo URL --pgdata DIR [--dbname CONNINFO]\n\
                  From a stream:          pg_basebackup -D - -Ft -X fetch | bb-push --repo URL -\n\
                  Prints the backup's summary as JSON on stdout."
)]
pub struct Cli {
    /// `-` to read a pg_basebackup tar stream from stdin
    #[arg(value_name = "-", conflicts_with_all = ["pgdata", "dbname", "expire", "keep", "unkeep"],
          value_parser = clap::value_parser!(FileArg))]
    pub stdin: Option<FileArg>,
    /// Data directory of the running cluster to back up
    #[arg(long, value_name = "DIR", required_unless_present_any = ["stdin", "expire", "keep", "unkeep"])]
    pub pgdata: Option<PathBuf>,
    /// Connection string (default: the socket and port in DIR/postmaster.pid, user postgres)
    #[arg(long, value_name = "CONNINFO")]
    pub dbname: Option<String>,
    /// Backup label (default: pitrkit <backup id>)
    #[arg(long)]
    pub label: Option<String>,
    /// Let the backup's start checkpoint spread out instead of forcing it at once
    #[arg(long)]
    pub spread_checkpoint: bool,
    /// Parallel readers/compressors/uploaders [default: the CPUs; 4 × the CPUs for S3]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// zstd level for backup content [default: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..=19))]
    pub compress_level: Option<i32>,
    /// How long to wait for the archiver to store the WAL a streamed backup needs
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub wal_wait: u64,
    /// Retention: keep the newest N backups [config: retain_full]
    #[arg(long, value_name = "N")]
    pub retain_full: Option<u32>,
    /// Retention: keep what restores any moment of this last span, e.g. 7d [config: retain_window]
    #[arg(long, value_name = "DURATION")]
    pub retain_window: Option<String>,
    /// Apply the retention policy only (no backup): for cron
    #[arg(long, conflicts_with_all = ["pgdata", "keep", "unkeep"])]
    pub expire: bool,
    /// With --expire: report what would be removed, remove nothing
    #[arg(long, requires = "expire")]
    pub dry_run: bool,
    /// Mark backup ID to be kept whatever the retention policy says
    #[arg(long, value_name = "ID", conflicts_with_all = ["pgdata", "unkeep"])]
    pub keep: Option<String>,
    /// Why the backup is kept (recorded with the mark)
    #[arg(long, value_name = "TEXT", requires = "keep")]
    pub keep_reason: Option<String>,
    /// Remove the keep mark of backup ID
    #[arg(long, value_name = "ID", conflicts_with = "pgdata")]
    pub unkeep: Option<String>,
    #[command(flatten)]
    pub repo: RepoArgs,
}

/// What every backup source yields: the data directory's entries with their content
/// already in the chunk store, and what the backup functions reported.
pub(crate) struct Captured {
    pub identity: ClusterIdentity,
    pub pg_version_num: u32,
    pub label: String,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub timeline: u32,
    pub start_time: Timestamp,
    pub stop_time: Timestamp,
    pub next_xid: Option<u64>,
    pub backup_label: String,
    pub tablespace_map: Option<String>,
    pub entries: Vec<Entry>,
    pub source: &'static str,
}

/// The summary printed on stdout.
#[derive(Serialize)]
struct Summary<'a> {
    backup_id: &'a BackupId,
    label: &'a str,
    timeline: u32,
    start_lsn: Lsn,
    stop_lsn: Lsn,
    start_time: Timestamp,
    stop_time: Timestamp,
    totals: &'a Totals,
    /// What retention removed after the backup, when a policy is set.
    expire: Option<retention::Plan>,
}

pub fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    if let Some(FileArg::File(other)) = &cli.stdin {
        return Err(Error::Usage(format!(
            "unexpected argument '{}': use - for stdin",
            other.display()
        )));
    }
    let settings = Settings::from_args(&cli.repo)?;
    let repo = settings.open_repo()?;
    let policy = retention::Policy {
        retain_full: cli.retain_full.or(settings.retention.retain_full),
        retain_window: match &cli.retain_window {
            Some(w) => Some(parse_duration("--retain-window", w)?),
            None => settings.retention.retain_window,
        },
    };
    if let Some(id) = &cli.keep {
        let id: BackupId = id.parse()?;
        let reason = cli.keep_reason.as_deref().unwrap_or("kept by hand");
        repo.set_keep(&id, reason)?;
        note(format!("backup {id} is kept until --unkeep {id}"));
        return print_json(&serde_json::json!({"backup_id": id, "keep": true, "reason": reason}));
    }
    if let Some(id) = &cli.unkeep {
        let id: BackupId = id.parse()?;
        repo.clear_keep(&id)?;
        note(format!("backup {id} follows the retention policy again"));
        return print_json(&serde_json::json!({"backup_id": id, "keep": false}));
    }
    if cli.expire {
        let plan = retention::expire(&repo, policy, cli.dry_run)?;
        report_expire(&plan);
        return print_json(&plan);
    }
    let jobs = cli
        .jobs
        .unwrap_or_else(|| settings.location.default_jobs())
        .max(1);
    let level = cli.compress_level.or(settings.compress_level).unwrap_or(3);
    repo.store().create()?;
    let lock = RepoLock::acquire(&repo, LockKind::Backup)?;
    // A backup must not list the chunk store while an expire deletes from it: it could
    // reuse a chunk that is about to go.
    lock.wait_for(LockKind::Expire, pitrkit::repo::lock::EXPIRE_WAIT)?;
    let writer = ChunkWriter::new(repo.store(), Sealer { level, workers: 0 }, repo.keys())?;
    let captured = match (&cli.stdin, &cli.pgdata) {
        (Some(_), _) => stream::capture(&cli, &repo, &writer, jobs)?,
        (None, Some(pgdata)) => cluster::capture(&cli, pgdata, &repo, &writer, jobs)?,
        (None, None) => return Err(Error::Usage("give --pgdata DIR or - (stdin)".into())),
    };
    let root = repo.read_root()?;
    let root = repo.check_cluster(root, "this backup", &captured.identity)?;
    let missing = repo.missing_wal(&required_wal(&captured, root.wal_segment_size))?;
    if !missing.is_empty() {
        return Err(Error::Conflict(format!(
            "the archive in {} lacks WAL this backup needs to become consistent: {} \
             (is archive_command pointing at this repository?); no backup was recorded",
            repo.location(),
            missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let m = publish(&repo, captured, &writer, started)?;
    lock.release()?;
    let expire = if policy.is_set() {
        let plan = retention::expire(&repo, policy, false)?;
        report_expire(&plan);
        Some(plan)
    } else {
        None
    };
    print_json(&Summary {
        backup_id: &m.backup_id,
        label: &m.label,
        timeline: m.timeline,
        start_lsn: m.start_lsn,
        stop_lsn: m.stop_lsn,
        start_time: m.start_time,
        stop_time: m.stop_time,
        totals: &m.totals,
        expire,
    })
}

fn print_json(v: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(v).map_err(Error::internal)?);
    Ok(())
}

fn report_expire(plan: &retention::Plan) {
    let verb = if plan.dry_run {
        "would remove"
    } else {
        "removed"
    };
    note(format!(
        "retention {verb} {} backup(s) {}, {} WAL file(s), {} chunk(s): {} bytes; kept {}",
        plan.expired_backups.len(),
        plan.expired_backups
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        plan.wal_files.len(),
        plan.chunks,
        plan.bytes_freed,
        plan.kept
            .iter()
            .map(|k| format!("{} ({})", k.backup_id, k.why.join("; ")))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(why) = &plan.chunks_deferred {
        note(why);
    }
}

pub(crate) fn required_wal(c: &Captured, seg_size: u32) -> Vec<pitrkit::pg::wal::WalFileName> {
    pitrkit::pg::wal::segments_between(
        pitrkit::pg::wal::TimelineId(c.timeline),
        c.start_lsn,
        c.stop_lsn,
        seg_size,
    )
}

fn publish(
    repo: &Repository,
    c: Captured,
    writer: &ChunkWriter,
    started: Instant,
) -> Result<BackupManifest> {
    let backup_id = BackupId::at(c.start_time);
    let (mut files, mut bytes, mut chunks) = (0u64, 0u64, 0u64);
    for e in &c.entries {
        if let Entry::File {
            size, chunks: ids, ..
        } = e
        {
            files += 1;
            bytes += size;
            chunks += ids.len() as u64;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut m = BackupManifest {
        format_version: MANIFEST_VERSION,
        label: if c.label.is_empty() {
            format!("pitrkit {backup_id}")
        } else {
            c.label
        },
        backup_id,
        source: c.source.into(),
        system_identifier: c.identity.system_identifier,
        pg_version_num: c.pg_version_num,
        timeline: c.timeline,
        start_lsn: c.start_lsn,
        stop_lsn: c.stop_lsn,
        start_time: c.start_time,
        stop_time: c.stop_time,
        next_xid: c.next_xid,
        backup_label: c.backup_label,
        tablespace_map: c.tablespace_map,
        chunk_size: CHUNK_SIZE as u64,
        delta_bases: writer.delta_bases(c.entries.iter().flat_map(|e| match e {
            Entry::File { chunks, .. } => chunks.as_slice(),
            _ => &[],
        })),
        entries: c.entries,
        sealed_with: repo.keys().write_key(),
        totals: Totals {
            files,
            bytes,
            chunks,
            new_chunks: writer.new_chunks.load(Ordering::Relaxed),
            new_stored_bytes: writer.new_stored_bytes.load(Ordering::Relaxed),
            seconds: pitrkit::io::measure::round(seconds, 3),
            mb_per_s: pitrkit::io::measure::mb_per_s(bytes, seconds),
        },
    };
    let manifest_bytes = repo.write_manifest(&m)?;
    m.totals.new_stored_bytes += manifest_bytes;
    note(format!(
        "backup {} stored: {} files, {} bytes, {} new chunks ({} bytes) in {:.1} s",
        m.backup_id,
        m.totals.files,
        m.totals.bytes,
        m.totals.new_chunks,
        m.totals.new_stored_bytes,
        seconds
    ));
    Ok(m)
}

pub(crate) fn dir_mode(path: &Path) -> Result<u32> {
    Ok(fs::metadata(path)
        .map_err(|e| Error::local_io(path, e))?
        .mode()
        & 0o7777)
}

/// Waits, at most `limit`, for the archiver to store the WAL the backup needs; the caller
/// reports what is still missing.
pub(crate) fn await_wal(repo: &Repository, c: &Captured, limit: Duration) -> Result<bool> {
    let seg_size = repo
        .read_root()?
        .map_or(c.identity.segment_size, |r| r.wal_segment_size);
    let mut missing = repo.missing_wal(&required_wal(c, seg_size))?;
    let start = Instant::now();
    // The archiver usually stores the last segment within a fraction of a second of the
    // switch: look again soon, then less often, and only for what was missing (one small
    // read each, where listing a long timeline on S3 takes a request per 1000 segments).
    // The archiver stores segments in order, so the first one still missing ends a round.
    let mut pause = Duration::from_millis(20);
    loop {
        while let Some(n) = missing.first() {
            if repo
                .store()
                .get_prefix(&Repository::wal_key(n), 1)?
                .is_none()
            {
                break;
            }
            missing.remove(0);
        }
        if missing.is_empty() {
            return Ok(true);
        }
        if start.elapsed() >= limit {
            return Ok(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
