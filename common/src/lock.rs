//! Advisory locks between `bb-push` and retention, as small objects under `locks/`.
//!
//! Retention deletes chunks no manifest refers to; a backup in progress has uploaded (or
//! decided to reuse) chunks that its manifest will only name at the end. So each side first
//! writes its own lock object and then looks for the other's: whatever the interleaving, at
//! least one of them sees the other (S3 and POSIX directories both give read-after-write).
//! A backup that sees a running expire waits for it; an expire that sees a running backup
//! keeps every chunk this time. WAL is never locked: `wal-push` only adds segments newer than
//! anything retention deletes.
//!
//! A lock left by a killed process stops counting after a while (`stale_after`), so a crash
//! can delay chunk cleanup but never block it forever.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::storage::{ObjectKey, PutMode};

const PREFIX: &str = "locks/";

/// Who holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// `bb-push` taking a backup.
    Backup,
    /// Retention deleting backups, WAL and chunks.
    Expire,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Backup => "backup",
            LockKind::Expire => "expire",
        }
    }

    /// How long a lock of this kind counts: longer than the longest backup or expire run
    /// that should be waited for.
    pub fn stale_after(self) -> Duration {
        match self {
            LockKind::Backup => Duration::from_secs(24 * 3600),
            LockKind::Expire => Duration::from_secs(3600),
        }
    }
}

/// `locks/<kind>-<time>-<pid>-<random>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockInfo {
    pub format_version: u32,
    pub kind: LockKind,
    pub host: String,
    pub pid: u32,
    pub created_at: Timestamp,
}

/// A lock this process holds; dropping it removes the object (best effort: a lock that
/// can't be removed goes stale).
pub struct RepoLock<'a> {
    repo: &'a Repository,
    key: ObjectKey,
    released: bool,
}

impl<'a> RepoLock<'a> {
    pub fn acquire(repo: &'a Repository, kind: LockKind) -> Result<Self> {
        let info = LockInfo {
            format_version: 1,
            kind,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            pid: std::process::id(),
            created_at: Timestamp::now(),
        };
        let key = ObjectKey::new(format!(
            "{PREFIX}{}-{}-{}-{:08x}.json",
            kind.name(),
            info.created_at.strftime("%Y%m%dT%H%M%SZ"),
            info.pid,
            fastrand::u32(..)
        ))?;
        let json = serde_json::to_vec(&info).map_err(Error::internal)?;
        repo.store().put(&key, &json, PutMode::Overwrite)?;
        Ok(RepoLock {
            repo,
            key,
            released: false,
        })
    }

    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.repo.store().delete(&self.key)
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

/// Every lock of `kind` that is not stale. An unreadable lock object counts as live: it
/// may be one being written.
pub fn held(repo: &Repository, kind: LockKind) -> Result<Vec<(ObjectKey, LockInfo)>> {
    let now = Timestamp::now();
    let mut out = Vec::new();
    for o in repo.store().list(&format!("{PREFIX}{}-", kind.name()))? {
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
        });
        let age = now.duration_since(info.created_at);
        if age.as_secs_f64() < kind.stale_after().as_secs_f64() {
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
                "{} on {} (pid {}) since {}",
                l.kind.name(),
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
}
