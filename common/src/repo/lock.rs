//! Advisory locks between `bb-push`, restores and retention, as small objects under `locks/`.
//!
//! Retention deletes chunks no manifest refers to; a backup in progress has uploaded (or
//! decided to reuse) chunks that its manifest will only name at the end. So each side first
//! writes its own lock object and then looks for the other's: whatever the interleaving, at
//! least one of them sees the other (S3 and POSIX directories both give read-after-write).
//! A backup that sees a running expire waits for it; an expire that sees a running backup
//! keeps every chunk this time. `wal-push` takes no lock: it only adds segments newer than
//! anything retention deletes.
//!
//! A restore (bb-restore, a drill) registers the backup it restores the same way, and keeps
//! it registered while PostgreSQL replays the archive after bb-restore has exited: the lock
//! carries an expiry, pushed forward by a heartbeat while bb-restore runs, then set to the
//! restore's hold; the `recovery_end_command` bb-restore writes releases it. Retention keeps
//! that backup, its chunks and the WAL from its start on while the lock lives.
//!
//! A lock left by a killed process stops counting after a while (`stale_after`, or its
//! expiry), so a crash can delay cleanup but never block it forever.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::storage::{ObjectKey, PutMode};

use crate::repo::layout::LOCKS as PREFIX;

/// Who holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// `bb-push` taking a backup.
    Backup,
    /// Retention deleting backups, WAL and chunks.
    Expire,
    /// A restore or drill that needs a backup and the WAL after it.
    Restore,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Backup => "backup",
            LockKind::Expire => "expire",
            LockKind::Restore => "restore",
        }
    }

    /// How long a lock of this kind counts: longer than the longest backup or expire run
    /// that should be waited for.
    pub fn stale_after(self) -> Duration {
        match self {
            LockKind::Backup => Duration::from_secs(24 * 3600),
            LockKind::Expire => Duration::from_secs(3600),
            // Restore locks carry their own expiry; this bounds what one may claim.
            LockKind::Restore => MAX_HOLD,
        }
    }
}

/// The longest a restore lock counts, whatever its expiry says (a planted lock can delay
/// retention by this much at most).
pub const MAX_HOLD: Duration = Duration::from_secs(7 * 24 * 3600);
/// How far ahead a running restore's heartbeat sets its expiry.
pub const LEASE: Duration = Duration::from_secs(10 * 60);
/// How long a backup or restore waits for a running expire before giving up.
pub const EXPIRE_WAIT: Duration = Duration::from_secs(15 * 60);
/// How often the heartbeat rewrites the lock.
const HEARTBEAT: Duration = Duration::from_secs(60);

/// `locks/<kind>-<time>-<pid>-<random>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockInfo {
    pub format_version: u32,
    pub kind: LockKind,
    pub host: String,
    pub pid: u32,
    pub created_at: Timestamp,
    /// Restore locks: the backup restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Restore locks: the lock counts until then (and at most [`MAX_HOLD`] after
    /// `created_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

impl LockInfo {
    /// Whether the lock still counts at `now`.
    fn live(&self, now: Timestamp) -> bool {
        let age = now.duration_since(self.created_at).as_secs_f64();
        if age >= self.kind.stale_after().as_secs_f64() {
            return false;
        }
        self.expires_at.is_none_or(|e| now < e)
    }
}

/// A lock this process holds; dropping it removes the object (best effort: a lock that
/// can't be removed goes stale).
pub struct RepoLock<'a> {
    repo: &'a Repository,
    key: ObjectKey,
    info: LockInfo,
    released: bool,
}

impl<'a> RepoLock<'a> {
    pub fn acquire(repo: &'a Repository, kind: LockKind) -> Result<Self> {
        Self::acquire_with(repo, kind, None, None)
    }

    /// Registers a restore of `backup_id`, counting for [`LEASE`] unless refreshed.
    pub fn acquire_restore(repo: &'a Repository, backup_id: &str) -> Result<Self> {
        let expires = Timestamp::now() + lease(LEASE);
        Self::acquire_with(
            repo,
            LockKind::Restore,
            Some(backup_id.to_string()),
            Some(expires),
        )
    }

    fn acquire_with(
        repo: &'a Repository,
        kind: LockKind,
        backup_id: Option<String>,
        expires_at: Option<Timestamp>,
    ) -> Result<Self> {
        let info = LockInfo {
            format_version: 1,
            kind,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            pid: std::process::id(),
            created_at: Timestamp::now(),
            backup_id,
            expires_at,
        };
        let key = crate::repo::layout::lock(
            kind.name(),
            &info.created_at.strftime("%Y%m%dT%H%M%SZ").to_string(),
            info.pid,
            fastrand::u32(..),
        );
        let json = serde_json::to_vec(&info).map_err(Error::internal)?;
        repo.store().put(&key, &json, PutMode::Overwrite)?;
        Ok(RepoLock {
            repo,
            key,
            info,
            released: false,
        })
    }

    /// The lock object's key (what `wal-fetch --release-lock` names).
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.repo.store().delete(&self.key)
    }

    /// Sets the expiry to `for_` from now.
    pub fn extend(&mut self, for_: Duration) -> Result<()> {
        self.info.expires_at = Some(Timestamp::now() + lease(for_));
        let json = serde_json::to_vec(&self.info).map_err(Error::internal)?;
        self.repo
            .store()
            .put(&self.key, &json, PutMode::Overwrite)?;
        Ok(())
    }

    /// Leaves the lock in the repository for `for_` after this process is gone (someone
    /// else releases it, or it expires); returns its key.
    pub fn hold(mut self, for_: Duration) -> Result<ObjectKey> {
        self.extend(for_)?;
        self.released = true;
        Ok(self.key.clone())
    }

    /// Runs `work` while a heartbeat thread pushes the expiry [`LEASE`] ahead every
    /// minute (best effort: a missed beat only shortens the protection).
    pub fn with_heartbeat<T>(&mut self, work: impl FnOnce() -> T) -> T {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let lock = &mut *self;
        std::thread::scope(|s| {
            s.spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(HEARTBEAT)
                {
                    let _ = lock.extend(LEASE);
                }
            });
            let out = work();
            drop(stop);
            out
        })
    }

    /// Waits (polling) while a live lock of `kind` other than this one exists, up to `max`.
    pub fn wait_for(&self, kind: LockKind, max: Duration) -> Result<()> {
        let start = std::time::Instant::now();
        loop {
            let running = self.others(kind)?;
            if running.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= max {
                return Err(Error::Conflict(format!(
                    "{} still running after {} min ({}); try again later",
                    kind.name(),
                    max.as_secs() / 60,
                    describe(&running)
                )));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Live locks of `kind` other than this one.
    pub fn others(&self, kind: LockKind) -> Result<Vec<(ObjectKey, LockInfo)>> {
        Ok(held(self.repo, kind)?
            .into_iter()
            .filter(|(k, _)| *k != self.key)
            .collect())
    }
}

impl Drop for RepoLock<'_> {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.repo.store().delete(&self.key);
        }
    }
}

/// Removes a restore lock by key, as `wal-fetch --release-lock` does at the end of recovery.
/// Only `locks/restore-…` keys are accepted: the key comes from a command line.
pub fn release_restore(repo: &Repository, key: &str) -> Result<()> {
    let name = key.strip_prefix(PREFIX).unwrap_or_default();
    if !name.starts_with("restore-") || name.contains('/') || !name.ends_with(".json") {
        return Err(Error::Usage(format!("{key:?} is not a restore lock")));
    }
    repo.store().delete(&ObjectKey::new(key)?)
}

fn lease(d: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX)
}

/// Every lock of `kind` that is not stale. An unreadable lock object counts as live: it
/// may be one being written.
pub fn held(repo: &Repository, kind: LockKind) -> Result<Vec<(ObjectKey, LockInfo)>> {
    let now = Timestamp::now();
    let mut out = Vec::new();
    for o in repo
        .store()
        .list(&crate::repo::layout::locks_of(kind.name()))?
    {
        let Some(bytes) = repo.store().get(&o.key)? else {
            continue;
        };
        let info = serde_json::from_slice::<LockInfo>(&bytes).unwrap_or(LockInfo {
            format_version: 1,
            kind,
            host: "?".into(),
            pid: 0,
            created_at: o
                .modified
                .and_then(|m| Timestamp::try_from(m).ok())
                .unwrap_or(now),
            backup_id: None,
            expires_at: None,
        });
        if info.live(now) {
            out.push((o.key, info));
        }
    }
    Ok(out)
}

/// Describes locks for messages: `backup on db1 (pid 42) since 2026-…`.
pub fn describe(locks: &[(ObjectKey, LockInfo)]) -> String {
    locks
        .iter()
        .map(|(_, l)| {
            format!(
                "{}{} on {} (pid {}) since {}",
                l.kind.name(),
                l.backup_id
                    .as_deref()
                    .map(|b| format!(" of backup {b}"))
                    .unwrap_or_default(),
                l.host,
                l.pid,
                l.created_at
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    #[test]
    fn each_side_sees_the_other_and_release_removes() {
        let repo = Repository::new(Box::new(MemoryStore::default()));
        let backup = RepoLock::acquire(&repo, LockKind::Backup).unwrap();
        let expire = RepoLock::acquire(&repo, LockKind::Expire).unwrap();
        assert_eq!(expire.others(LockKind::Backup).unwrap().len(), 1);
        assert_eq!(backup.others(LockKind::Expire).unwrap().len(), 1);
        assert!(backup.others(LockKind::Backup).unwrap().is_empty());
        backup.release().unwrap();
        assert!(expire.others(LockKind::Backup).unwrap().is_empty());
        drop(expire);
        assert!(held(&repo, LockKind::Expire).unwrap().is_empty());
    }

    #[test]
    fn a_restore_lock_counts_until_its_expiry_or_release() {
        let repo = Repository::new(Box::new(MemoryStore::default()));
        let lock = RepoLock::acquire_restore(&repo, "20261202T101010Z").unwrap();
        let key = lock.hold(Duration::from_secs(3600)).unwrap();
        let live = held(&repo, LockKind::Restore).unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].1.backup_id.as_deref(), Some("20261202T101010Z"));
        let mut info = live[0].1.clone();
        assert!(!info.live(Timestamp::now() + jiff::SignedDuration::from_hours(2)));
        info.expires_at = Some(Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365));
        assert!(!info.live(Timestamp::now() + jiff::SignedDuration::from_hours(24 * 8)));
        assert!(release_restore(&repo, "chunks/ab/cd").is_err());
        assert!(release_restore(&repo, "locks/backup-x.json").is_err());
        release_restore(&repo, key.as_str()).unwrap();
        assert!(held(&repo, LockKind::Restore).unwrap().is_empty());
    }
}
