//! What the repository holds, from its listings and manifests, and what each backup can
//! restore; shared with `verify`.

use pitrkit::repo::summary::Commit;

use super::*;

/// Everything `status` and `verify` need to know about a repository, from listings.
pub struct Inventory {
    pub repo: Repository,
    pub root: RepoRoot,
    pub index: ArchiveIndex,
    /// Every backup, with its manifest or why it can't be read.
    pub backups: Vec<(BackupId, std::result::Result<BackupManifest, String>)>,
    pub chunks: HashSet<ChunkId>,
    pub chunk_bytes: u64,
    pub keeps: HashMap<BackupId, KeepMark>,
    /// Requests in flight when reading many small objects (the WAL summaries).
    pub repo_jobs: usize,
}

impl Inventory {
    pub fn load(settings: &Settings) -> Result<Self> {
        let repo = settings.open_repo()?;
        let root = repo.require_root()?;
        let index = ArchiveIndex::load(&repo, root.wal_segment_size)?;
        let backups = repo
            .list_backups()?
            .into_iter()
            .map(|id| {
                let m = repo.read_manifest(&id).map_err(|e| e.to_string());
                (id, m)
            })
            .collect();
        let listed = chunk::list(repo.store())?;
        let chunk_bytes = listed.iter().map(|(_, o)| o.size).sum();
        let keeps = repo.keep_marks()?;
        Ok(Inventory {
            repo,
            root,
            index,
            backups,
            chunks: listed.into_iter().map(|(id, _)| id).collect(),
            chunk_bytes,
            keeps,
            repo_jobs: settings.location.default_jobs(),
        })
    }

    /// What each backup can restore.
    pub fn analyse(&self) -> Vec<BackupReport> {
        self.backups
            .iter()
            .map(|(id, m)| match m {
                Err(why) => BackupReport::unreadable(id, why, self.keeps.get(id)),
                Ok(m) => {
                    let missing_wal = self.index.missing_for(m);
                    let missing_chunks = m
                        .referenced_chunks()
                        .collect::<HashSet<_>>()
                        .into_iter()
                        .filter(|c| !self.chunks.contains(c))
                        .count() as u64;
                    let missing_files: Vec<String> =
                        pitrkit::pg::datadir::missing_to_start(&m.entries)
                            .into_iter()
                            .map(String::from)
                            .collect();
                    let tli = self.index.recovery_timeline(m.timeline, m.stop_lsn);
                    let window = (missing_chunks == 0)
                        .then(|| self.index.window(m, tli))
                        .flatten()
                        .map(WindowReport::from);
                    BackupReport {
                        backup_id: id.to_string(),
                        label: m.label.clone(),
                        timeline: m.timeline,
                        start_lsn: m.start_lsn,
                        stop_lsn: m.stop_lsn,
                        start_time: Some(m.start_time),
                        stop_time: Some(m.stop_time),
                        bytes: m.totals.bytes,
                        pg_version_num: m.pg_version_num,
                        // Restorable means the restored cluster starts and recovers.
                        restorable: window.is_some() && missing_files.is_empty(),
                        missing_files,
                        missing_wal: missing_wal.iter().map(ToString::to_string).collect(),
                        missing_chunks,
                        manifest_error: None,
                        keep: self.keeps.get(id).map(|k| k.reason.clone()),
                        window,
                    }
                }
            })
            .collect()
    }
}

/// A recovery window: restore to any moment from `from` to `to`.
#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    pub timeline: u32,
    pub from_time: Timestamp,
    /// When the last WAL recovery can read was stored; `null` when the store does not say.
    pub to_time: Option<Timestamp>,
    pub from_lsn: Lsn,
    pub to_lsn: Lsn,
    /// The missing segment that ends the window, if a gap (not the archive's end) does.
    pub cut_by: Option<String>,
    /// The newest commit recovery replays in the window, from the WAL summaries: a target
    /// time at or after it is not reached. `null` when no summary says.
    pub last_commit: Option<Commit>,
    /// Whether every segment after `last_commit` is summarized (else a newer one may exist).
    pub last_commit_exact: bool,
}

impl WindowReport {
    /// The window again, for the questions asked of the archive about it.
    pub fn window(&self) -> pitrkit::repo::archive::Window {
        pitrkit::repo::archive::Window {
            timeline: self.timeline,
            from_lsn: self.from_lsn,
            from_time: self.from_time,
            to_lsn: self.to_lsn,
            to_time: self.to_time,
            cut_by: None,
        }
    }
}

impl From<pitrkit::repo::archive::Window> for WindowReport {
    fn from(w: pitrkit::repo::archive::Window) -> Self {
        WindowReport {
            timeline: w.timeline,
            from_time: w.from_time,
            to_time: w.to_time,
            from_lsn: w.from_lsn,
            to_lsn: w.to_lsn,
            cut_by: w.cut_by.map(|n| n.to_string()),
            last_commit: None,
            last_commit_exact: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub backup_id: String,
    pub label: String,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_time: Option<Timestamp>,
    pub stop_time: Option<Timestamp>,
    pub bytes: u64,
    pub pg_version_num: u32,
    pub restorable: bool,
    /// Files a cluster needs to start (PG_VERSION, global/pg_control) the backup lacks.
    pub missing_files: Vec<String>,
    /// WAL from the backup's start to its stop that the archive lacks.
    pub missing_wal: Vec<String>,
    /// Chunks the manifest names that are not in the repository.
    pub missing_chunks: u64,
    pub manifest_error: Option<String>,
    /// The keep mark's reason, when the backup is kept whatever the policy.
    pub keep: Option<String>,
    pub window: Option<WindowReport>,
}

impl BackupReport {
    fn unreadable(id: &BackupId, why: &str, keep: Option<&KeepMark>) -> Self {
        BackupReport {
            backup_id: id.to_string(),
            label: String::new(),
            timeline: 0,
            start_lsn: Lsn(0),
            stop_lsn: Lsn(0),
            start_time: None,
            stop_time: None,
            bytes: 0,
            pg_version_num: 0,
            restorable: false,
            missing_files: vec![],
            missing_wal: vec![],
            missing_chunks: 0,
            manifest_error: Some(why.to_string()),
            keep: keep.map(|k| k.reason.clone()),
            window: None,
        }
    }
}
