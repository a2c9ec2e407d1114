//! Retention: which backups, WAL and chunks may go, and deleting them in an order that
//! never breaks a kept backup.
//!
//! What stays:
//! - the newest `retain_full` backups, and every backup needed to reach any moment of the
//!   last `retain_window` (the backups that ended inside it, plus the newest one that ended
//!   before it began: recovery to the window's first second starts there);
//! - backups with a keep mark (`backups/<id>/keep.json`), with the WAL from their start to
//!   their stop so they restore on their own (barman's "standalone" keep);
//! - always the newest backup;
//! - all WAL from the start of the oldest kept unmarked backup on, on every timeline, and
//!   every `.history` file;
//! - every chunk a kept manifest names, and the base of every page delta among them.
//!
//! Deletion order: manifests first (a backup disappears atomically with its manifest), then
//! WAL oldest first (an interrupted run leaves the archive contiguous), then chunks — and
//! chunks only when no backup is running (see `lock`). Anything a crash leaves behind is
//! picked up by the next run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pg::wal::WalFileName;
use crate::repo::Repository;
use crate::repo::chunk::{self, ChunkId};
use crate::repo::lock::{self, LockKind, RepoLock};
use crate::repo::manifest::{BackupId, BackupManifest};
use crate::storage::{ObjectKey, PutMode};

/// How much history to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub retain_full: Option<u32>,
    pub retain_window: Option<Duration>,
}

impl Policy {
    pub fn is_set(&self) -> bool {
        self.retain_full.is_some() || self.retain_window.is_some()
    }
}

/// `backups/<id>/keep.json`: this backup is kept whatever the policy says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepMark {
    pub format_version: u32,
    pub reason: String,
    pub marked_at: Timestamp,
}

fn keep_key(id: &BackupId) -> ObjectKey {
    crate::repo::layout::keep_mark(id)
}

impl Repository {
    /// Marks a backup to be kept forever (until unmarked).
    pub fn set_keep(&self, id: &BackupId, reason: &str) -> Result<()> {
        self.read_manifest(id)?;
        let mark = KeepMark {
            format_version: 1,
            reason: reason.to_string(),
            marked_at: Timestamp::now(),
        };
        let json = serde_json::to_vec(&mark).map_err(Error::internal)?;
        self.store().put(&keep_key(id), &json, PutMode::Overwrite)?;
        Ok(())
    }

    pub fn clear_keep(&self, id: &BackupId) -> Result<()> {
        self.read_manifest(id)?;
        self.store().delete(&keep_key(id))
    }

    /// The keep marks of all backups. An unreadable mark still keeps its backup.
    pub fn keep_marks(&self) -> Result<HashMap<BackupId, KeepMark>> {
        let mut out = HashMap::new();
        for o in self.store().list(crate::repo::layout::BACKUPS)? {
            let Some(id) = crate::repo::layout::keep_mark_of(o.key.as_str()) else {
                continue;
            };
            let mark = match self.store().get(&o.key)? {
                Some(b) => serde_json::from_slice(&b).unwrap_or_else(|_| KeepMark {
                    format_version: 1,
                    reason: "(unreadable keep mark)".into(),
                    marked_at: Timestamp::UNIX_EPOCH,
                }),
                None => continue,
            };
            out.insert(id, mark);
        }
        Ok(out)
    }
}

/// Why a backup stays.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    pub backup_id: BackupId,
    pub why: Vec<String>,
}

/// What an expire run removes (or, dry, would remove).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub dry_run: bool,
    pub retain_full: Option<u32>,
    pub retain_window: Option<String>,
    pub kept: Vec<Kept>,
    pub expired_backups: Vec<BackupId>,
    pub wal_files: Vec<WalFileName>,
    pub wal_bytes: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
    pub manifest_bytes: u64,
    pub bytes_freed: u64,
    /// Set when chunks were kept this time because a backup is running.
    pub chunks_deferred: Option<String>,
    #[serde(skip)]
    chunk_keys: Vec<ObjectKey>,
    #[serde(skip)]
    wal_keys: Vec<ObjectKey>,
    #[serde(skip)]
    summary_keys: Vec<ObjectKey>,
    #[serde(skip)]
    manifest_keys: Vec<ObjectKey>,
}

/// Computes what `policy` lets go at `now`. Backups whose manifest can't be read are kept
/// (and so is everything they might need): retention never guesses.
pub fn plan(repo: &Repository, policy: Policy, now: Timestamp, dry_run: bool) -> Result<Plan> {
    if !policy.is_set() {
        return Err(Error::Usage(
            "no retention policy: give --retain-full N and/or --retain-window DURATION".into(),
        ));
    }
    if policy.retain_full == Some(0) {
        return Err(Error::Usage("--retain-full must be at least 1".into()));
    }
    let root = repo.require_root()?;
    let seg_size = root.wal_segment_size;
    let ids = repo.list_backups()?;
    let marks = repo.keep_marks()?;
    let mut manifests: BTreeMap<BackupId, Option<BackupManifest>> = BTreeMap::new();
    for id in &ids {
        manifests.insert(id.clone(), repo.read_manifest(id).ok());
    }
    let mut why: BTreeMap<BackupId, Vec<String>> = BTreeMap::new();
    let mut add = |id: &BackupId, reason: String| why.entry(id.clone()).or_default().push(reason);
    if let Some(newest) = ids.last() {
        add(newest, "newest backup".into());
    }
    if let Some(n) = policy.retain_full {
        for id in ids.iter().rev().take(n as usize) {
            add(id, format!("one of the newest {n}"));
        }
    }
    if let Some(w) = policy.retain_window {
        let label = humantime::format_duration(w).to_string();
        let start = now
            .checked_sub(
                jiff::SignedDuration::try_from(w).map_err(|e| Error::Usage(e.to_string()))?,
            )
            .map_err(|e| Error::Usage(e.to_string()))?;
        let mut before_start: Option<&BackupId> = None;
        for (id, m) in &manifests {
            match m {
                Some(m) if m.stop_time < start => before_start = Some(id),
                Some(_) => add(id, format!("inside the {label} window")),
                None => {}
            }
        }
        if let Some(id) = before_start {
            add(id, format!("restores the start of the {label} window"));
        }
    }
    for (id, m) in &manifests {
        if m.is_none() {
            add(id, "manifest unreadable: kept until someone looks".into());
        }
        if let Some(mark) = marks.get(id) {
            add(id, format!("keep mark: {}", mark.reason));
        }
    }
    // A restore or drill in progress keeps its backup, and so the WAL after it. A restore
    // lock that names no backup (unreadable, being written) could need any: nothing goes.
    let mut restore_unknown = false;
    for (key, l) in lock::held(repo, LockKind::Restore)? {
        match l.backup_id.as_deref().map(str::parse::<BackupId>) {
            Some(Ok(id)) if manifests.contains_key(&id) => add(
                &id,
                format!("being restored ({})", lock::describe(&[(key, l.clone())])),
            ),
            Some(_) => {}
            None => restore_unknown = true,
        }
    }

    let kept: Vec<Kept> = why
        .into_iter()
        .map(|(backup_id, why)| Kept { backup_id, why })
        .collect();
    let kept_ids: HashSet<&BackupId> = kept.iter().map(|k| &k.backup_id).collect();
    let expired: Vec<BackupId> = ids
        .iter()
        .filter(|id| !kept_ids.contains(id) && !restore_unknown)
        .cloned()
        .collect();

    // WAL: everything before the oldest kept backup that is kept for its window, except
    // what a keep-marked backup needs to become consistent.
    let kept_manifests = || {
        kept.iter()
            .filter_map(|k| manifests.get(&k.backup_id).cloned().flatten())
    };
    let any_unreadable = restore_unknown
        || kept
            .iter()
            .any(|k| manifests.get(&k.backup_id).is_none_or(Option::is_none));
    let boundary = kept_manifests()
        .filter(|m| !marks.contains_key(&m.backup_id))
        .map(|m| m.start_lsn.segno(seg_size))
        .min();
    let marked_need: HashSet<WalFileName> = kept_manifests()
        .filter(|m| marks.contains_key(&m.backup_id))
        .flat_map(|m| m.required_wal(seg_size))
        .collect();
    let mut wal = Vec::new();
    if let (Some(boundary), false) = (boundary, any_unreadable) {
        for (name, info) in repo.list_wal()? {
            let old = match name {
                WalFileName::History { .. } => false,
                _ => name.segno(seg_size).is_some_and(|s| s < boundary),
            };
            if old && !marked_need.contains(&name) {
                wal.push((name, info));
            }
        }
    }
    // Oldest first, whatever the timeline.
    wal.sort_by_key(|(n, _)| (n.segno(seg_size), n.timeline()));

    // Chunks: what no kept manifest (nor a delta among its chunks) refers to.
    let mut chunks = Vec::new();
    if !any_unreadable {
        let live: HashSet<ChunkId> = kept_manifests()
            .flat_map(|m| m.referenced_chunks().copied().collect::<Vec<_>>())
            .collect();
        chunks = chunk::list(repo.store())?
            .into_iter()
            .filter(|(id, _)| !live.contains(id))
            .map(|(_, o)| o)
            .collect();
    }
    let mut manifest_keys = Vec::new();
    let mut manifest_bytes = 0;
    let listing: HashMap<ObjectKey, u64> = repo
        .store()
        .list(crate::repo::layout::BACKUPS)?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    for id in &expired {
        let key = id.manifest_key();
        manifest_bytes += listing.get(&key).copied().unwrap_or_default();
        manifest_keys.push(key);
    }
    // Summaries go with their segments, and any whose segment is gone (an older expire
    // removed it before summaries were deleted with it).
    let expired_wal: HashSet<WalFileName> = wal.iter().map(|(n, _)| *n).collect();
    let summary_keys: Vec<ObjectKey> = match (boundary, any_unreadable) {
        (Some(boundary), false) => repo
            .store()
            .list(crate::repo::layout::SUMMARIES)?
            .into_iter()
            .filter(|o| {
                crate::repo::layout::summary_of(o.key.as_str()).is_some_and(|n| {
                    expired_wal.contains(&n)
                        || (n.segno(seg_size).is_some_and(|s| s < boundary)
                            && !marked_need.contains(&n))
                })
            })
            .map(|o| o.key)
            .collect(),
        _ => Vec::new(),
    };
    let wal_bytes = wal.iter().map(|(_, o)| o.size).sum();
    let chunk_bytes = chunks.iter().map(|o| o.size).sum();
    Ok(Plan {
        dry_run,
        retain_full: policy.retain_full,
        retain_window: policy
            .retain_window
            .map(|w| humantime::format_duration(w).to_string()),
        kept,
        expired_backups: expired,
        wal_files: wal.iter().map(|(n, _)| *n).collect(),
        wal_bytes,
        chunks: chunks.len() as u64,
        chunk_bytes,
        manifest_bytes,
        bytes_freed: manifest_bytes + wal_bytes + chunk_bytes,
        chunks_deferred: None,
        chunk_keys: chunks.into_iter().map(|o| o.key).collect(),
        wal_keys: wal.into_iter().map(|(_, o)| o.key).collect(),
        summary_keys,
        manifest_keys,
    })
}

/// Applies `policy`: plans under an expire lock and deletes in the safe order. With
/// `dry_run`, only plans (and still reports whether chunk cleanup would wait for a backup).
pub fn expire(repo: &Repository, policy: Policy, dry_run: bool) -> Result<Plan> {
    let guard = RepoLock::acquire(repo, LockKind::Expire)?;
    let running = guard.others(LockKind::Backup)?;
    let mut plan = plan(repo, policy, Timestamp::now(), dry_run)?;
    if !running.is_empty() {
        plan.chunks_deferred = Some(format!(
            "a backup is running ({}): unreferenced chunks stay until the next expire",
            lock::describe(&running)
        ));
        plan.bytes_freed -= plan.chunk_bytes;
        plan.chunks = 0;
        plan.chunk_bytes = 0;
        plan.chunk_keys.clear();
    }
    if dry_run {
        guard.release()?;
        return Ok(plan);
    }
    for key in plan
        .manifest_keys
        .iter()
        .chain(&plan.wal_keys)
        .chain(&plan.summary_keys)
        .chain(&plan.chunk_keys)
    {
        repo.store().delete(key)?;
    }
    guard.release()?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wal::{Lsn, TimelineId};
    use crate::repo::ClusterIdentity;
    use crate::repo::manifest::Entry;
    use crate::repo::object::Sealer;
    use crate::storage::memory::MemoryStore;

    const SEG: u32 = 16 << 20;

    fn manifest(
        id: &str,
        start_seg: u64,
        chunks: Vec<ChunkId>,
        bases: &[(ChunkId, ChunkId)],
    ) -> BackupManifest {
        let t: Timestamp = format!(
            "{}-{}-{}T{}:{}:{}Z",
            &id[0..4],
            &id[4..6],
            &id[6..8],
            &id[9..11],
            &id[11..13],
            &id[13..15]
        )
        .parse()
        .unwrap();
        let mut m = BackupManifest::example(
            id.parse().unwrap(),
            t,
            1,
            Lsn(start_seg * SEG as u64 + 0x28),
            Lsn(start_seg * SEG as u64 + 0x1000),
        );
        m.entries = vec![Entry::File {
            path: "base/1/1".into(),
            mode: 0o600,
            size: chunks.len() as u64 * (1 << 20),
            crc32c: None,
            sha256: None,
            chunks,
        }];
        m.delta_bases = bases.iter().copied().collect();
        m
    }

    fn put_chunk(repo: &Repository, data: &[u8]) -> ChunkId {
        let id = ChunkId::of(data, &crate::repo::crypto::Digester::Sha256);
        let sealed = Sealer::on_this_thread(1)
            .seal_known(
                data,
                crate::repo::object::ContentDigest(id.0),
                repo.keys(),
                crate::repo::crypto::Class::Data,
            )
            .unwrap();
        repo.store()
            .put(&id.key(), &sealed, PutMode::CreateNew)
            .unwrap();
        id
    }

    #[test]
    fn keeps_newest_marked_and_delta_bases() {
        let repo = Repository::new(Box::new(MemoryStore::default()));
        repo.init_root(&ClusterIdentity {
            system_identifier: 7,
            segment_size: SEG,
            pg_major: 15,
        })
        .unwrap();
        for segno in 1..=12 {
            let n = WalFileName::segment(TimelineId(1), segno, SEG);
            repo.store()
                .put(&Repository::wal_key(&n), b"x", PutMode::CreateNew)
                .unwrap();
        }
        let (a, b, c, base) = (
            put_chunk(&repo, b"a"),
            put_chunk(&repo, b"b"),
            put_chunk(&repo, b"c"),
            put_chunk(&repo, b"base"),
        );
        // Backup 1 (oldest, marked), 2 (expires), 3 and 4 (newest two); 4 holds a delta of
        // `c` whose base only backup 2 named.
        repo.write_manifest(&manifest("20261101T000000Z", 2, vec![a], &[]))
            .unwrap();
        repo.write_manifest(&manifest("20261102T000000Z", 5, vec![b, base], &[]))
            .unwrap();
        repo.write_manifest(&manifest("20261103T000000Z", 8, vec![a], &[]))
            .unwrap();
        repo.write_manifest(&manifest("20261104T000000Z", 10, vec![c], &[(c, base)]))
            .unwrap();
        repo.set_keep(&"20261101T000000Z".parse().unwrap(), "audit 2026")
            .unwrap();
        let policy = Policy {
            retain_full: Some(2),
            retain_window: None,
        };
        let dry = expire(&repo, policy, true).unwrap();
        assert_eq!(
            dry.expired_backups,
            vec!["20261102T000000Z".parse::<BackupId>().unwrap()]
        );
        // WAL before segment 8 goes, except segment 2 that the marked backup needs.
        let names: Vec<String> = dry.wal_files.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            names,
            [1, 3, 4, 5, 6, 7].map(|s| format!("0000000100000000000000{s:02X}"))
        );
        assert_eq!(dry.chunks, 1, "only `b` goes; `base` stays for the delta");
        assert_eq!(
            repo.list_backups().unwrap().len(),
            4,
            "dry run deletes nothing"
        );
        // While backup 2 is being restored, it stays, and so does the WAL from its start.
        let restore = RepoLock::acquire_restore(&repo, "20261102T000000Z").unwrap();
        let held = expire(&repo, policy, true).unwrap();
        assert!(held.expired_backups.is_empty(), "{held:?}");
        let names: Vec<String> = held.wal_files.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            names,
            [1, 3, 4].map(|s| format!("0000000100000000000000{s:02X}"))
        );
        assert_eq!(held.chunks, 0);
        assert!(
            held.kept
                .iter()
                .any(|k| k.why.iter().any(|w| w.contains("being restored"))),
            "{held:?}"
        );
        restore.release().unwrap();
        let done = expire(&repo, policy, false).unwrap();
        assert_eq!(done.bytes_freed, dry.bytes_freed);
        assert_eq!(repo.list_backups().unwrap().len(), 3);
        assert!(repo.store().get(&b.key()).unwrap().is_none());
        assert!(repo.store().get(&base.key()).unwrap().is_some());
        assert!(held_none(&repo));
    }

    fn held_none(repo: &Repository) -> bool {
        lock::held(repo, LockKind::Expire).unwrap().is_empty()
    }

    #[test]
    fn a_running_backup_defers_chunk_deletion() {
        let repo = Repository::new(Box::new(MemoryStore::default()));
        repo.init_root(&ClusterIdentity {
            system_identifier: 7,
            segment_size: SEG,
            pg_major: 15,
        })
        .unwrap();
        let orphan = put_chunk(&repo, b"orphan");
        repo.write_manifest(&manifest("20261104T000000Z", 10, vec![], &[]))
            .unwrap();
        let backup = RepoLock::acquire(&repo, LockKind::Backup).unwrap();
        let policy = Policy {
            retain_full: Some(1),
            retain_window: None,
        };
        let plan = expire(&repo, policy, false).unwrap();
        assert!(plan.chunks_deferred.is_some());
        assert!(repo.store().get(&orphan.key()).unwrap().is_some());
        backup.release().unwrap();
        let plan = expire(&repo, policy, false).unwrap();
        assert_eq!(plan.chunks, 1);
        assert!(repo.store().get(&orphan.key()).unwrap().is_none());
    }
}
