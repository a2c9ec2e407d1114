//! `bb-restore`: restore the right base backup into a data directory and configure
//! PostgreSQL to recover through `wal-fetch` to a target.
//!
//! Order matters for "nothing half-written": everything that can refuse (backup choice,
//! target parsing, archive checks, the directory check) runs before the first byte is
//! written; the recovery settings and signal file are written last, so an interrupted
//! restore never looks like a data directory ready to start.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use clap::Parser;
use pitrkit::archive::ArchiveIndex;
use pitrkit::chunk::{self, ChunkId};
use pitrkit::datadir::TablespaceMapping;
use pitrkit::error::{Error, Result};
use pitrkit::lock::{LockKind, RepoLock};
use pitrkit::manifest::{BackupId, BackupManifest, Entry};
use pitrkit::parallel;
use pitrkit::repo::Repository;
use pitrkit::runner::note;
use pitrkit::settings::{RepoArgs, Settings};
use pitrkit::target::{RecoveryTarget, TargetArgs, TargetTimeline, conf_quote};
use serde::Serialize;

mod layout;
use layout::{Layout, Node};

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
    #[arg(long, value_name = "ACTION", value_parser = ["promote", "pause", "shutdown"], default_value = "promote")]
    pub target_action: String,
    /// Timeline to recover along: latest, current or a number
    #[arg(long, value_name = "TLI")]
    pub target_timeline: Option<TargetTimeline>,
    /// Restore this backup instead of choosing one
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// off: the restored cluster does not archive (a side copy to recover rows from, a
    /// restore test), so it can't add timelines to the repository; preserve: keep the
    /// backup's archive settings (the restored cluster becomes the new primary)
    #[arg(long, value_name = "MODE", value_parser = ["preserve", "off"], default_value = "preserve")]
    pub archive_mode: String,
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

/// What a restore did: printed as JSON, and read by `pitr-check drill`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub backup_id: String,
    pub backup_stop_time: jiff::Timestamp,
    pub pgdata: String,
    pub files: u64,
    pub bytes: u64,
    pub bytes_fetched: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub recovery_settings: Vec<(String, String)>,
    pub signal_file: &'static str,
    /// The lock that keeps what recovery needs in the repository until recovery ends (or
    /// `--hold` passes); null when the repository could not be written to.
    pub restore_lock: Option<String>,
}

pub fn run(cli: Cli) -> Result<()> {
    let summary = restore(cli)?;
    println!(
        "{}",
        serde_json::to_string(&summary).map_err(Error::internal)?
    );
    Ok(())
}

/// Restores a backup as `cli` says and reports what it did, without printing the report.
pub fn restore(cli: Cli) -> Result<Summary> {
    let started = Instant::now();
    let settings = Settings::from_args(&cli.repo)?;
    let target = cli.target.parse()?;
    let repo = settings.open_repo()?;
    let root = repo.read_root()?.ok_or_else(|| {
        Error::Conflict(format!(
            "{} is not a pitrkit repository (no pitrkit.json)",
            repo.location()
        ))
    })?;
    let chosen = choose_backup(&repo, cli.backup.as_deref(), &target)?;
    // Registered before the archive is checked: an expire that starts later keeps what
    // this restore needs, and one already running is waited for, then the backup re-read.
    let mut lock = register(&repo, &chosen.backup_id)?;
    if let Some(l) = &lock {
        l.wait_for(LockKind::Expire, pitrkit::lock::EXPIRE_WAIT)?;
    }
    let manifest = repo.read_manifest(&chosen.backup_id)?;
    if manifest.system_identifier != root.system_identifier {
        return Err(Error::corrupt(
            manifest.backup_id.manifest_key(),
            format!(
                "belongs to system {} but the repository to {}",
                manifest.system_identifier, root.system_identifier
            ),
        ));
    }
    let missing = pitrkit::datadir::missing_to_start(&manifest.entries);
    if !missing.is_empty() {
        return Err(Error::corrupt(
            manifest.backup_id.manifest_key(),
            format!(
                "backup {} lacks {}: a cluster restored from it cannot start",
                manifest.backup_id,
                missing.join(" and ")
            ),
        ));
    }
    let index = ArchiveIndex::load(&repo, root.wal_segment_size)?;
    let auto_timeline = match &cli.target_timeline {
        None => reachable_timeline(&index, &manifest),
        Some(_) => None,
    };
    let follow = match cli.target_timeline {
        Some(TargetTimeline::Id(t)) => t,
        Some(TargetTimeline::Current) => manifest.timeline,
        _ => auto_timeline
            .unwrap_or_else(|| index.recovery_timeline(manifest.timeline, manifest.stop_lsn)),
    };
    check_archive(&index, &manifest, &target, follow)?;
    let mut layout = Layout::plan(
        &manifest,
        &cli.pgdata,
        &cli.tablespace_mapping,
        cli.tablespace_mapping_all.as_deref(),
        cli.waldir.as_deref(),
    )?;
    layout.check_free(&manifest.backup_id.to_string(), cli.delta || cli.force)?;
    let lock_key = lock.as_ref().map(|l| l.key().as_str().to_string());
    let mut recovery = recovery_settings(&cli, &settings, &target, lock_key.as_deref())?;
    if let Some(tli) = auto_timeline {
        recovery.push(("recovery_target_timeline", tli.to_string()));
    }

    // Everything that can refuse has run: from here on, the directories change.
    layout.prepare(cli.force)?;
    let jobs = cli
        .jobs
        .unwrap_or_else(|| parallel::default_jobs_for(&settings.location))
        .max(1);
    let fetched = match &mut lock {
        Some(l) => l.with_heartbeat(|| restore_files(&repo, &manifest, &layout, jobs, cli.delta)),
        None => restore_files(&repo, &manifest, &layout, jobs, cli.delta),
    }?;
    write_recovery(&layout, &manifest, &recovery, cli.standby)?;
    chown_like_parent(&cli.pgdata, &layout)?;
    let restore_lock = match lock.map(|l| l.hold(cli.hold)) {
        Some(Ok(key)) => Some(key.as_str().to_string()),
        Some(Err(e)) => {
            note(format!(
                "the restore lock could not be kept ({e}): retention may remove WAL this \
                 recovery still needs"
            ));
            None
        }
        None => None,
    };

    let seconds = started.elapsed().as_secs_f64();
    let summary = Summary {
        backup_id: manifest.backup_id.to_string(),
        backup_stop_time: manifest.stop_time,
        pgdata: cli.pgdata.display().to_string(),
        files: manifest.totals.files,
        bytes: manifest.totals.bytes,
        bytes_fetched: fetched,
        seconds: (seconds * 1000.0).round() / 1000.0,
        mb_per_s: ((manifest.totals.bytes as f64 / 1e6 / seconds.max(1e-9)) * 10.0).round() / 10.0,
        recovery_settings: recovery
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        signal_file: if cli.standby {
            "standby.signal"
        } else {
            "recovery.signal"
        },
        restore_lock,
    };
    note(format!(
        "restored backup {} into {} in {seconds:.1} s",
        summary.backup_id, summary.pgdata
    ));
    Ok(summary)
}

/// Registers the restore of `backup` with retention (see `pitrkit::lock`). A repository
/// this host may only read (a restore host with read-only credentials) is restored from
/// unregistered, with a note.
fn register<'a>(repo: &'a Repository, backup: &BackupId) -> Result<Option<RepoLock<'a>>> {
    match RepoLock::acquire_restore(repo, &backup.to_string()) {
        Ok(l) => Ok(Some(l)),
        Err(e @ (Error::Denied(_) | Error::LocalIo { .. })) => {
            note(format!(
                "restoring without a restore lock ({e}): an expire running meanwhile could \
                 remove WAL this recovery needs"
            ));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The newest backup that is consistent before the target, or the one named.
fn choose_backup(
    repo: &Repository,
    named: Option<&str>,
    target: &RecoveryTarget,
) -> Result<BackupManifest> {
    if let Some(id) = named {
        let m = repo.read_manifest(&id.parse::<BackupId>()?)?;
        if !precedes(&m, target) {
            return Err(Error::Usage(format!(
                "backup {id} does not end before the target ({})",
                target
            )));
        }
        return Ok(m);
    }
    let ids = repo.list_backups()?;
    if ids.is_empty() {
        return Err(Error::NotFound {
            key: format!("any backup in {}", repo.location()),
        });
    }
    for id in ids.iter().rev() {
        let m = repo.read_manifest(id)?;
        if precedes(&m, target) {
            return Ok(m);
        }
    }
    Err(Error::Usage(format!(
        "no backup ends before the target ({}): the oldest, {}, is not early enough",
        target, ids[0]
    )))
}

/// Whether recovery from `m` can stop at `target`: the backup must be consistent first.
fn precedes(m: &BackupManifest, target: &RecoveryTarget) -> bool {
    match target {
        RecoveryTarget::Time(t) => m.stop_time <= *t,
        RecoveryTarget::Lsn(l) => m.stop_lsn <= *l,
        // An xid that had not started when the backup stopped commits after it.
        RecoveryTarget::Xid(x) => m.next_xid.is_none_or(|n| n <= *x),
        _ => true,
    }
}

/// Refuses when the archive visibly cannot bring the backup to the target: WAL between the
/// backup's start and stop missing, or an LSN/time target past the last segment recovery
/// can read along `tli` (the archive's end, or a gap).
fn check_archive(
    index: &ArchiveIndex,
    m: &BackupManifest,
    target: &RecoveryTarget,
    tli: u32,
) -> Result<()> {
    let missing = index.missing_for(m);
    if !missing.is_empty() {
        return Err(Error::Conflict(format!(
            "backup {} cannot become consistent: the archive lacks {}",
            m.backup_id,
            missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let Some(window) = index.window(m, tli) else {
        return Ok(());
    };
    let why = match &window.cut_by {
        Some(gap) => format!("segment {gap} is missing from the archive"),
        None => "archive more WAL (select pg_switch_wal() on the primary) and try again".into(),
    };
    match target {
        RecoveryTarget::Lsn(l) if *l >= window.to_lsn => Err(Error::Usage(format!(
            "target lsn {l} is beyond the archive: from backup {} on timeline {tli} it replays \
             up to {}: {why}",
            m.backup_id, window.to_lsn
        ))),
        RecoveryTarget::Time(t) if window.to_time.is_some_and(|end| *t > end) => {
            Err(Error::Usage(format!(
                "target time {t} is after the last WAL the archive can replay from backup {} on \
                 timeline {tli} was stored ({}), so the WAL for it is not in the archive yet: \
                 {why}",
                m.backup_id,
                window.to_time.map(|t| t.to_string()).unwrap_or_default()
            )))
        }
        _ => Ok(()),
    }
}

/// PostgreSQL's default, `recovery_target_timeline = 'latest'`, follows the newest timeline
/// in the archive, and fails ("requested timeline is not a child of this server's history")
/// when that timeline forked off before this backup ended — which happens as soon as an
/// earlier restore was promoted and archived into the same repository. Returns the newest
/// timeline that does descend from the backup, when it is not the newest one overall.
fn reachable_timeline(index: &ArchiveIndex, m: &BackupManifest) -> Option<u32> {
    let newest = index
        .timelines()
        .into_iter()
        .max()
        .filter(|t| *t > m.timeline)?;
    if index.descends(newest, m.timeline, m.stop_lsn) {
        return None;
    }
    let best = index.recovery_timeline(m.timeline, m.stop_lsn);
    note(format!(
        "timeline {newest} forked off before backup {} ended; recovering along timeline {best}",
        m.backup_id
    ));
    Some(best)
}

/// One unit of restore work: a chunk of a file (an index into the restore's files).
struct Piece<'a> {
    file: usize,
    offset: u64,
    id: &'a ChunkId,
}

/// Restores every entry through `layout`; returns the bytes fetched from the repository.
fn restore_files(
    repo: &Repository,
    m: &BackupManifest,
    layout: &Layout,
    jobs: usize,
    delta: bool,
) -> Result<u64> {
    let mut pieces = Vec::new();
    // (root, path beneath it) of each regular file, indexed by `Piece::file`.
    let mut files: Vec<(usize, &str)> = Vec::new();
    let mut wanted = HashSet::new();
    // Chunks are named with the key that sealed the manifest; without it, --delta can't
    // recognise a matching chunk and fetches everything.
    let digester = repo.keys().digester_for(m.sealed_with);
    layout.make_links()?;
    for e in &m.entries {
        let place = layout.place(e.path());
        wanted.insert((place.root, place.rel.to_string()));
        match e {
            Entry::Dir { mode, .. } => layout.create_dir(&place, *mode)?,
            // Links are made by the layout, pointing where this host says.
            Entry::Symlink { .. } => {}
            Entry::File {
                size, mode, chunks, ..
            } => {
                let (root, rel) = (place.root, place.rel);
                let shown = || layout.display(root, rel);
                let existing = if delta {
                    layout.read_existing(root, rel)
                } else {
                    None
                };
                let f = layout.open_write(root, rel, true)?;
                // A new file, or with --delta a reused one cut or grown to its size.
                f.set_len(*size).map_err(|e| Error::local_io(shown(), e))?;
                f.set_permissions(fs::Permissions::from_mode(pitrkit::datadir::file_mode(
                    *mode,
                )))
                .map_err(|e| Error::local_io(shown(), e))?;
                files.push((root, rel));
                let file = files.len() - 1;
                for (i, id) in chunks.iter().enumerate() {
                    let offset = i as u64 * m.chunk_size;
                    let same = existing.as_ref().is_some_and(|d| {
                        let end = ((offset + m.chunk_size) as usize)
                            .min(*size as usize)
                            .min(d.len());
                        d.get(offset as usize..end).is_some_and(|c| {
                            digester.as_ref().is_some_and(|g| ChunkId::of(c, g) == *id)
                        })
                    });
                    if !same {
                        pieces.push(Piece { file, offset, id });
                    }
                }
            }
        }
    }
    if delta {
        layout.remove_unwanted(&wanted)?;
    }
    layout.ensure_wal_dir()?;
    let flusher = Flusher::new(files.len(), &pieces);
    let open = |file: usize| {
        let (root, rel) = files[file];
        layout.open_write(root, rel, false)
    };
    let fetched = std::thread::scope(|s| {
        for _ in 0..FLUSHERS {
            s.spawn(|| {
                flusher.work(|file| {
                    let (root, rel) = files[file];
                    layout
                        .open_read(root, rel)
                        .map_err(|e| Error::local_io(layout.display(root, rel), e))
                })
            });
        }
        let fetched = parallel::map(jobs, &pieces, |p| {
            let data = chunk::read(repo.store(), repo.keys(), p.id)?;
            let f = open(p.file)?;
            std::os::unix::fs::FileExt::write_all_at(&f, &data, p.offset).map_err(|e| {
                let (root, rel) = files[p.file];
                Error::local_io(layout.display(root, rel), e)
            })?;
            flusher.written(p.file);
            Ok(data.len() as u64)
        });
        flusher.finish();
        fetched
    })?;
    flusher.result()?;
    // Make the rest durable before the recovery settings say "ready to start".
    let synced: HashSet<(usize, &str)> = flusher.synced().into_iter().map(|f| files[f]).collect();
    sync_tree(layout, jobs, &synced)?;
    Ok(fetched.iter().sum())
}

/// Threads that fsync restored files while the others still fetch and decompress.
const FLUSHERS: usize = 4;
/// A file being written is flushed to disk every this many chunks.
const FLUSH_EVERY_CHUNKS: usize = 16;

/// Makes restored files durable as they are written, so that the disk works while chunks
/// are still being fetched and decompressed instead of all at the end (a restore fits in
/// the page cache, where the kernel would otherwise leave it until the final fsyncs).
struct Flusher {
    /// Per file: chunks still to be written, and written since the last flush.
    files: Vec<Mutex<(usize, usize)>>,
    /// Files to flush, and whether it is their final fsync; `None` once all are written.
    tx: Mutex<Option<mpsc::Sender<(usize, bool)>>>,
    rx: Mutex<mpsc::Receiver<(usize, bool)>>,
    synced: Mutex<Vec<usize>>,
    error: Mutex<Option<Error>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Flusher {
    fn new(files: usize, pieces: &[Piece]) -> Self {
        let mut counts = vec![0; files];
        for p in pieces {
            counts[p.file] += 1;
        }
        let (tx, rx) = mpsc::channel();
        Flusher {
            files: counts.into_iter().map(|n| Mutex::new((n, 0))).collect(),
            tx: Mutex::new(Some(tx)),
            rx: Mutex::new(rx),
            synced: Default::default(),
            error: Default::default(),
        }
    }

    /// A chunk of `file` has been written: queue a flush every few chunks, and the final
    /// fsync after the last one.
    fn written(&self, file: usize) {
        let Some(counts) = self.files.get(file) else {
            return;
        };
        let last = {
            let mut c = locked(counts);
            c.0 -= 1;
            c.1 += 1;
            if c.0 > 0 && c.1 < FLUSH_EVERY_CHUNKS {
                return;
            }
            c.1 = 0;
            c.0 == 0
        };
        if let Some(tx) = &*locked(&self.tx) {
            let _ = tx.send((file, last));
        }
    }

    /// One flushing thread: until [`Flusher::finish`] and the queue is empty.
    fn work(&self, open: impl Fn(usize) -> Result<fs::File>) {
        while let Ok((file, last)) = locked(&self.rx).recv() {
            let r = open(file).and_then(|f| {
                if last { f.sync_all() } else { f.sync_data() }
                    .map_err(|e| Error::local_io(format!("restored file #{file}"), e))
            });
            match r {
                Ok(()) if last => locked(&self.synced).push(file),
                Ok(()) => {}
                Err(e) => {
                    locked(&self.error).get_or_insert(e);
                }
            }
        }
    }

    /// No more chunks: the flushing threads end once the queue is empty.
    fn finish(&self) {
        locked(&self.tx).take();
    }

    fn result(&self) -> Result<()> {
        locked(&self.error).take().map_or(Ok(()), Err)
    }

    fn synced(&self) -> Vec<usize> {
        std::mem::take(&mut locked(&self.synced))
    }
}

/// fsyncs every file not `synced` yet, then every directory, each root and the directory
/// holding it. fsync waits on the disk, not a CPU, and the filesystem's journal commits
/// concurrent ones together: a data directory has ~1,000 small files, so many threads.
fn sync_tree(layout: &Layout, jobs: usize, synced: &HashSet<(usize, &str)>) -> Result<()> {
    let mut all = layout.tree()?;
    all.retain(|(root, rel, _)| !synced.contains(&(*root, rel.as_str())));
    let sync = |(root, rel, node): &(usize, String, Node)| -> Result<()> {
        if *node == Node::File {
            layout
                .open_read(*root, rel)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::local_io(layout.display(*root, rel), e))?;
        }
        Ok(())
    };
    parallel::map(jobs.max(16), &all, sync)?;
    for (root, rel, _) in all.iter().filter(|(_, _, n)| *n == Node::Dir) {
        layout.sync_dir(*root, rel)?;
    }
    for (root, path) in layout.roots() {
        layout.sync_dir(root, ".")?;
        if let Some(parent) = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            pitrkit::storage::fs::sync_dir(&parent).map_err(|e| Error::local_io(&parent, e))?;
        }
    }
    Ok(())
}

/// The settings that make PostgreSQL recover through wal-fetch from the same repository.
fn recovery_settings(
    cli: &Cli,
    settings: &Settings,
    target: &RecoveryTarget,
    lock: Option<&str>,
) -> Result<Vec<(&'static str, String)>> {
    let exe = std::env::current_exe().map_err(|e| Error::local_io("bb-restore", e))?;
    let beside = exe
        .parent()
        .map(|d| d.join("wal-fetch"))
        .filter(|p| p.exists());
    let wal_fetch = beside
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "wal-fetch".into());
    // The repository as wal-fetch must be told it.
    let mut repo_args = String::new();
    if let Some(cfg) = &settings.config_path {
        let cfg = fs::canonicalize(cfg).unwrap_or_else(|_| cfg.clone());
        repo_args.push_str(&format!(
            " --config {}",
            shell_quote(&cfg.display().to_string())
        ));
    }
    let repo_url = match &settings.location {
        pitrkit::settings::RepoLocation::Dir(p) => fs::canonicalize(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string(),
        pitrkit::settings::RepoLocation::S3 { .. } => settings.repo_url.clone(),
    };
    // Every non-secret store setting bb-restore itself used, so the server's recovery talks
    // to the same store even when they came from flags or the environment (flags beat the
    // config file, so these never contradict it). Secrets stay in the config file.
    if let pitrkit::settings::RepoLocation::S3 { .. } = &settings.location {
        if let Some(endpoint) = &settings.s3_endpoint {
            repo_args.push_str(&format!(
                " --s3-endpoint {}",
                shell_quote(endpoint.as_str())
            ));
        }
        repo_args.push_str(&format!(
            " --s3-region {}",
            shell_quote(&settings.s3_region)
        ));
        if let Some(path) = settings.s3_path_style {
            repo_args.push_str(if path {
                " --s3-url-style path"
            } else {
                " --s3-url-style virtual"
            });
        }
    }
    repo_args.push_str(&format!(" --repo {}", shell_quote(&repo_url)));
    if settings.s3_credentials.is_some() && settings.config_path.is_none() {
        note(
            "S3 credentials came from the environment: the server needs them too (its environment, or a --config file)",
        );
    }
    // Prefetched segments recovery did not use (past the target) go when recovery ends, and
    // so does the lock that kept the WAL in the repository.
    let wal_fetch = shell_quote(&wal_fetch);
    let cleanup = match lock {
        Some(key) => format!(
            "{wal_fetch} --prefetch-cleanup --release-lock {}{repo_args}",
            shell_quote(key)
        ),
        None => format!("{wal_fetch} --prefetch-cleanup"),
    };
    // Recovery to consistency ends at the first missing segment, as it should: the WAL
    // after a backup kept on its own (retention's keep marks) is gone on purpose.
    let holes = if matches!(target, RecoveryTarget::Immediate) {
        " --no-hole-check"
    } else {
        ""
    };
    let restore = format!("{wal_fetch}{holes}{repo_args} %f %p");
    let mut out = vec![
        ("restore_command", restore),
        ("recovery_end_command", cleanup),
    ];
    if cli.archive_mode == "off" {
        out.push(("archive_mode", "off".into()));
    }
    out.extend(target.settings());
    if !matches!(target, RecoveryTarget::Latest) {
        out.push(("recovery_target_action", cli.target_action.clone()));
        if cli.target_exclusive {
            out.push(("recovery_target_inclusive", "off".into()));
        }
    }
    if let Some(t) = cli.target_timeline {
        out.push(("recovery_target_timeline", t.to_string()));
    }
    Ok(out)
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-:+=@".contains(&b))
    {
        s.to_string()
    } else {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
                .replace('`', "\\`")
        )
    }
}

const MANAGED: [&str; 12] = [
    "recovery_end_command",
    "archive_mode",
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "archive_cleanup_command",
];

/// backup_label, tablespace_map (rebuilt from where this restore put each tablespace, never
/// the manifest's), postgresql.auto.conf and the signal file, in that order, in the data
/// directory.
fn write_recovery(
    layout: &Layout,
    m: &BackupManifest,
    settings: &[(&str, String)],
    standby: bool,
) -> Result<()> {
    layout.write_file("backup_label", m.backup_label.as_bytes())?;
    match layout.tablespace_map() {
        Some(map) => layout.write_file("tablespace_map", map.as_bytes())?,
        None => layout.remove_file("tablespace_map")?,
    }
    let old = layout.read_to_string("postgresql.auto.conf");
    let mut text: String = old
        .lines()
        .filter(|l| {
            !MANAGED.iter().any(|k| {
                l.trim_start().starts_with(k)
                    && l.trim_start()[k.len()..].trim_start().starts_with('=')
            })
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!(
        "# written by bb-restore from backup {}\n",
        m.backup_id
    ));
    for (k, v) in settings {
        text.push_str(&format!("{k} = {}\n", conf_quote(v)));
    }
    layout.write_file("postgresql.auto.conf", text.as_bytes())?;
    let (signal, other) = if standby {
        ("standby.signal", "recovery.signal")
    } else {
        ("recovery.signal", "standby.signal")
    };
    layout.remove_file(other)?;
    layout.write_file(signal, b"")?;
    layout.sync_dir(0, ".")
}

/// Run as root, the restored files belong to whoever owns the data directory's parent (the
/// `postgres` user in a standard layout): PostgreSQL refuses a data directory it doesn't
/// own, and needs to own its tablespaces and WAL directory too.
fn chown_like_parent(dir: &Path, layout: &Layout) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !pitrkit::storage::fs::running_as_root() {
        return Ok(());
    }
    let parent = fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let meta = fs::metadata(&parent).map_err(|e| Error::local_io(&parent, e))?;
    if meta.uid() == 0 {
        return Ok(());
    }
    layout.chown(meta.uid(), meta.gid())
}
