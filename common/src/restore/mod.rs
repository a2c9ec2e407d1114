//! The restore engine that `bb-restore` and `pitr-check drill` share: restore the right base
//! backup into a data directory (and its tablespaces and WAL directory) and configure
//! PostgreSQL to recover through `wal-fetch` to a target.
//!
//! Order matters for "nothing half-written": everything that can refuse (the options, the
//! backup choice, the archive checks, every directory) runs before the first byte is
//! written; the recovery settings and signal file are written last, so an interrupted
//! restore never looks like a data directory ready to start.
//!
//! - `choose`: which backup, and whether the archive reaches the target;
//! - `layout`: where each entry goes on this host, written beneath the directories named;
//! - `files`: fetching, writing and syncing the files;
//! - `recovery`: the settings and signal file PostgreSQL starts from.

mod choose;
mod files;
mod layout;
mod recovery;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pg::datadir::TablespaceMapping;
use crate::pg::target::{RecoveryTarget, TargetAction, TargetTimeline};
use crate::repo::Repository;
use crate::repo::archive::ArchiveIndex;
use crate::repo::lock::{LockKind, RepoLock};
use crate::repo::manifest::BackupId;
use crate::runner::note;
use crate::settings::Settings;
use choose::{check_archive, check_summaries, choose_backup, reachable_timeline};
use files::restore_files;
use layout::Layout;
use recovery::{chown_like_parent, recovery_settings, write_recovery};

/// What to do with a data directory (or tablespace or WAL directory) that holds something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse: restores go into empty directories.
    Refuse,
    /// Keep files whose content already matches, fetch the rest, remove what the backup lacks.
    Delta,
    /// Empty it first.
    Force,
}

/// Whether the restored cluster archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveMode {
    /// Keep the backup's archive settings (the restored cluster becomes the new primary).
    Preserve,
    /// The restored cluster does not archive (a side copy, a restore test), so it can't add
    /// timelines to the repository.
    Off,
}

/// The signal file the restore leaves: recover and promote, or stay a standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Recovery,
    Standby,
}

/// A restore, every choice typed and checked before any I/O.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub pgdata: PathBuf,
    pub target: RecoveryTarget,
    /// Stop just before the target instead of just after it.
    pub target_exclusive: bool,
    pub target_action: TargetAction,
    /// None: the newest timeline that descends from the backup.
    pub target_timeline: Option<TargetTimeline>,
    /// None: the newest backup consistent before the target.
    pub backup: Option<BackupId>,
    pub archive_mode: ArchiveMode,
    pub signal: Signal,
    pub existing: Existing,
    pub tablespace_mapping: Vec<TablespaceMapping>,
    /// Every tablespace not mapped otherwise goes to `<dir>/<oid>`.
    pub tablespace_mapping_all: Option<PathBuf>,
    /// pg_wal in this (absolute) directory, behind a link.
    pub waldir: Option<PathBuf>,
    /// How long the repository keeps what recovery needs after the restore returns.
    pub hold: Duration,
    /// Parallel downloads; None: the store's default.
    pub jobs: Option<usize>,
}

/// What a restore did: printed as JSON by bb-restore, and read by `pitr-check drill`.
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
    /// the hold passes); null when the repository could not be written to.
    pub restore_lock: Option<String>,
}

/// Restores a backup as `opts` says, from the repository `settings` name, and reports what
/// it did.
pub fn restore(settings: &Settings, opts: &RestoreOptions) -> Result<Summary> {
    let started = Instant::now();
    let target = &opts.target;
    let repo = settings.open_repo()?;
    let root = repo.require_root()?;
    let chosen = choose_backup(&repo, opts.backup.as_ref(), target)?;
    // Registered before the archive is checked: an expire that starts later keeps what
    // this restore needs, and one already running is waited for, then the backup re-read.
    let mut lock = register(&repo, &chosen.backup_id)?;
    crate::runner::fault_point("after-restore-lock");
    if let Some(l) = &lock {
        l.wait_for(LockKind::Expire, crate::repo::lock::EXPIRE_WAIT)?;
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
    let missing = crate::pg::datadir::missing_to_start(&manifest.entries);
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
    for (key, why) in &index.unreadable {
        note(format!(
            "{key} can't be read ({why}): PostgreSQL stops if recovery needs that timeline"
        ));
    }
    let auto_timeline = match &opts.target_timeline {
        None => reachable_timeline(&index, &manifest),
        Some(_) => None,
    };
    let follow = match opts.target_timeline {
        Some(TargetTimeline::Id(t)) => t,
        Some(TargetTimeline::Current) => manifest.timeline,
        _ => auto_timeline
            .unwrap_or_else(|| index.recovery_timeline(manifest.timeline, manifest.stop_lsn)),
    };
    // What the WAL summaries say first: their refusal names the last commit; where they
    // can't tell, the times segments were stored still bound the target.
    let jobs = settings.jobs(opts.jobs);
    let resolved = check_summaries(
        &repo,
        &root,
        &index,
        &manifest,
        (target, opts.target_exclusive),
        follow,
        jobs,
    )?;
    check_archive(&index, &manifest, target, follow)?;
    let target = resolved;
    let mut layout = Layout::plan(
        &manifest,
        &opts.pgdata,
        &opts.tablespace_mapping,
        opts.tablespace_mapping_all.as_deref(),
        opts.waldir.as_deref(),
    )?;
    let delta = opts.existing == Existing::Delta;
    layout.check_free(
        &manifest.backup_id.to_string(),
        opts.existing != Existing::Refuse,
    )?;
    let lock_key = lock.as_ref().map(|l| l.key().as_str().to_string());
    let mut recovery = recovery_settings(opts, &target, settings, lock_key.as_deref())?;
    if let Some(tli) = auto_timeline {
        recovery.push(("recovery_target_timeline", tli.to_string()));
    }

    // Everything that can refuse has run: from here on, the directories change.
    layout.prepare(opts.existing == Existing::Force)?;
    let fetched = match &mut lock {
        Some(l) => l.with_heartbeat(|| restore_files(&repo, &manifest, &layout, jobs, delta)),
        None => restore_files(&repo, &manifest, &layout, jobs, delta),
    }?;
    write_recovery(&layout, &manifest, &recovery, opts.signal)?;
    chown_like_parent(&opts.pgdata, &layout)?;
    let restore_lock = match lock.map(|l| l.hold(opts.hold)) {
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
        pgdata: opts.pgdata.display().to_string(),
        files: manifest.totals.files,
        bytes: manifest.totals.bytes,
        bytes_fetched: fetched,
        seconds: crate::io::measure::round(seconds, 3),
        mb_per_s: crate::io::measure::mb_per_s(manifest.totals.bytes, seconds),
        recovery_settings: recovery
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        signal_file: match opts.signal {
            Signal::Standby => "standby.signal",
            Signal::Recovery => "recovery.signal",
        },
        restore_lock,
    };
    note(format!(
        "restored backup {} into {} in {seconds:.1} s",
        summary.backup_id, summary.pgdata
    ));
    Ok(summary)
}

/// Registers the restore of `backup` with retention (see `crate::repo::lock`). A repository
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
