//! Backup manifests: `backups/<backup id>/manifest.json.zst`, one per backup, written last.
//!
//! A manifest lists every file of the backup with the chunks holding its content, so a
//! backup restores from its manifest alone. Only a complete manifest makes a backup exist:
//! an interrupted `bb-push` leaves chunks no manifest refers to, and nothing else.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pg::wal::{Lsn, WalFileName};
use crate::repo::Repository;
use crate::repo::chunk::ChunkId;
use crate::repo::crypto::KeyId;
use crate::repo::object;
use crate::storage::{ObjectKey, PutMode, PutOutcome};

/// Bumped whenever the manifest's meaning changes.
pub const MANIFEST_VERSION: u32 = 3;
/// Version 2 differs only in the per-file check value (sha256 instead of CRC-32C).
const OLDEST_READABLE: u32 = 2;

/// A backup's name: its start time in UTC, `20261126T030512Z`, so names sort by age.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

impl BackupId {
    pub fn at(t: Timestamp) -> Self {
        BackupId(t.strftime("%Y%m%dT%H%M%SZ").to_string())
    }

    pub fn manifest_key(&self) -> ObjectKey {
        crate::repo::layout::manifest(self)
    }
}

impl FromStr for BackupId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let b = s.as_bytes();
        let ok = b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
        if ok {
            Ok(BackupId(s.to_string()))
        } else {
            Err(Error::Usage(format!(
                "invalid backup id '{s}' (expected e.g. 20261126T030512Z)"
            )))
        }
    }
}

impl TryFrom<String> for BackupId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<BackupId> for String {
    fn from(b: BackupId) -> String {
        b.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        size: u64,
        /// CRC-32C of the whole file as it was read (PostgreSQL's backup_manifest default),
        /// as 8 hex digits: for checking a restored file by hand. What restore verifies is
        /// every chunk, against its sha256 id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        crc32c: Option<String>,
        /// Format 2 wrote the file's sha256 here instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        /// The file's content, in order: chunk `i` holds bytes `i * chunk_size ..`.
        chunks: Vec<ChunkId>,
    },
    /// A tablespace link under `pg_tblspc`.
    Symlink {
        path: String,
        target: String,
    },
}

impl Entry {
    /// A file as this version writes it: its CRC-32C, no sha256.
    pub fn file(path: String, mode: u32, size: u64, crc32c: u32, chunks: Vec<ChunkId>) -> Self {
        Entry::File {
            path,
            mode,
            size,
            crc32c: Some(format!("{crc32c:08x}")),
            sha256: None,
            chunks,
        }
    }

    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
    }
}

/// Sizes and speed of one backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    /// Bytes this backup added to the repository (compressed new chunks and the manifest).
    pub new_stored_bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
}

/// `backups/<id>/manifest.json.zst`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupManifest {
    pub format_version: u32,
    pub backup_id: BackupId,
    pub label: String,
    /// `pgdata` (read from a running cluster) or `tar` (a pg_basebackup stream on stdin).
    pub source: String,
    #[serde(with = "crate::repo::u64_string")]
    pub system_identifier: u64,
    pub pg_version_num: u32,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_time: Timestamp,
    pub stop_time: Timestamp,
    /// The next transaction id when the backup stopped, where known: a recovery target xid
    /// below it may lie before the backup's consistency point.
    pub next_xid: Option<u64>,
    /// The `backup_label` that must be in the restored data directory.
    pub backup_label: String,
    pub tablespace_map: Option<String>,
    pub chunk_size: u64,
    pub entries: Vec<Entry>,
    /// The page deltas among the entries' chunks, with the full chunk each rebuilds from:
    /// retention must keep those bases while this backup exists.
    pub delta_bases: BTreeMap<ChunkId, ChunkId>,
    pub totals: Totals,
    /// The key that sealed the manifest, which also named its chunks (encrypted
    /// repositories name chunks by a keyed digest): known once read, not stored.
    #[serde(skip)]
    pub sealed_with: Option<KeyId>,
}

impl BackupManifest {
    /// A minimal manifest, for the unit tests of this library and of the tools: backup `id`
    /// of system 7 (PostgreSQL 15), taken at `t` on `timeline` from `start` to `stop`, no
    /// entries. Not for building real backups.
    #[doc(hidden)]
    pub fn example(id: BackupId, t: Timestamp, timeline: u32, start: Lsn, stop: Lsn) -> Self {
        BackupManifest {
            format_version: MANIFEST_VERSION,
            label: id.to_string(),
            backup_id: id,
            source: "pgdata".into(),
            system_identifier: 7,
            pg_version_num: 150000,
            timeline,
            start_lsn: start,
            stop_lsn: stop,
            start_time: t,
            stop_time: t,
            next_xid: None,
            backup_label: String::new(),
            tablespace_map: None,
            chunk_size: 1 << 20,
            entries: vec![],
            delta_bases: BTreeMap::new(),
            sealed_with: None,
            totals: Totals {
                files: 0,
                bytes: 0,
                chunks: 0,
                new_chunks: 0,
                new_stored_bytes: 0,
                seconds: 0.0,
                mb_per_s: 0.0,
            },
        }
    }

    /// Every chunk this backup needs to restore: its files' chunks and their delta bases.
    pub fn referenced_chunks(&self) -> impl Iterator<Item = &ChunkId> {
        self.entries
            .iter()
            .flat_map(|e| match e {
                Entry::File { chunks, .. } => chunks.as_slice(),
                _ => &[],
            })
            .chain(self.delta_bases.values())
    }

    /// The WAL files from the backup's start to its stop: what recovery needs to reach a
    /// consistent state, the least the archive must hold for the backup to restore at all.
    pub fn required_wal(&self, seg_size: u32) -> Vec<WalFileName> {
        crate::pg::wal::segments_between(
            crate::pg::wal::TimelineId(self.timeline),
            self.start_lsn,
            self.stop_lsn,
            seg_size,
        )
    }
}

impl Repository {
    /// Publishes a manifest; it never replaces an existing one. Every chunk stored unsettled
    /// is made durable first: a manifest must never name a chunk a crash could still lose.
    pub fn write_manifest(&self, m: &BackupManifest) -> Result<u64> {
        // What a restore would refuse is never published (a crafted tar on bb-push's stdin).
        crate::pg::datadir::check_entries(&m.entries).map_err(|bad| {
            Error::invalid_input(format!("backup {}", m.backup_id), bad.to_string())
        })?;
        let named: Vec<ObjectKey> = m.referenced_chunks().map(|c| c.key()).collect();
        self.store().settle(&named)?;
        let sealed = self.seal_manifest(m)?;
        let key = m.backup_id.manifest_key();
        match self.store().put(&key, &sealed, PutMode::CreateNew)? {
            PutOutcome::Stored => Ok(sealed.len() as u64),
            PutOutcome::AlreadyExists => Err(Error::Conflict(format!(
                "backup {} already exists in {}",
                m.backup_id,
                self.location()
            ))),
        }
    }

    /// The stored form of `m` (sealed as metadata), unchecked: [`Repository::write_manifest`]
    /// checks its entries first. Public for tests that plant what an attacker would.
    pub fn seal_manifest(&self, m: &BackupManifest) -> Result<Vec<u8>> {
        self.seal_document("manifest", m)
    }

    pub fn read_manifest(&self, id: &BackupId) -> Result<BackupManifest> {
        /// The most WAL one backup's start and stop may span (a million 16 MiB segments).
        const MAX_BACKUP_WAL: u64 = 1 << 44;
        let key = id.manifest_key();
        let stored = self.store().get(&key)?.ok_or_else(|| Error::NotFound {
            key: format!("backup {id} ({key} in {})", self.location()),
        })?;
        let (json, env) =
            object::open(key.as_str(), &stored, self.keys(), object::limit::MANIFEST)?;
        let mut m: BackupManifest = serde_json::from_slice(&json).map_err(|e| {
            Error::corrupt(
                &key,
                format!("not a backup manifest this pitrkit reads: {e}"),
            )
        })?;
        if !(OLDEST_READABLE..=MANIFEST_VERSION).contains(&m.format_version) {
            return Err(Error::corrupt(
                &key,
                format!("manifest version {} is not supported", m.format_version),
            ));
        }
        if &m.backup_id != id {
            return Err(Error::corrupt(
                &key,
                format!("names backup {} inside", m.backup_id),
            ));
        }
        // Every WAL segment from start to stop is listed and looked for: a planted range
        // of 2^64 bytes must not become a 2^40-element list.
        let span = m.stop_lsn.0.checked_sub(m.start_lsn.0);
        if span.is_none_or(|s| s > MAX_BACKUP_WAL) {
            return Err(Error::corrupt(
                &key,
                format!(
                    "backup {id} claims WAL from {} to {}: not an ordered range of at most 16 TiB",
                    m.start_lsn, m.stop_lsn
                ),
            ));
        }
        // Offsets are chunk index × chunk size, and a file's chunks must cover its size
        // exactly: otherwise a restore would write past the size or leave holes.
        if !(1..=object::limit::CHUNK).contains(&m.chunk_size) {
            return Err(Error::corrupt(
                &key,
                format!("backup {id} has chunk size {}", m.chunk_size),
            ));
        }
        for e in &m.entries {
            if let Entry::File {
                path, size, chunks, ..
            } = e
                && size.div_ceil(m.chunk_size) != chunks.len() as u64
            {
                return Err(Error::corrupt(
                    &key,
                    format!(
                        "backup {id} refused: entry {path:?} of {size} bytes lists {} chunks of {}",
                        chunks.len(),
                        m.chunk_size
                    ),
                ));
            }
        }
        // A restore (as root) must never be told to write outside its directories.
        crate::pg::datadir::check_entries(&m.entries)
            .map_err(|bad| Error::corrupt(&key, format!("backup {id} refused: {bad}")))?;
        m.sealed_with = env.key;
        Ok(m)
    }

    /// The ids of all complete backups, oldest first.
    pub fn list_backups(&self) -> Result<Vec<BackupId>> {
        let mut ids: Vec<BackupId> = self
            .store()
            .list(crate::repo::layout::BACKUPS)?
            .iter()
            .filter_map(|o| crate::repo::layout::manifest_of(o.key.as_str()))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Which of `names` the archive lacks (one listing per timeline involved).
    pub fn missing_wal(&self, names: &[WalFileName]) -> Result<Vec<WalFileName>> {
        let mut present = std::collections::HashSet::new();
        let mut listed = std::collections::HashSet::new();
        for n in names {
            if listed.insert(n.timeline()) {
                for o in self.store().list(&format!("wal/{}/", n.timeline()))? {
                    present.insert(o.key);
                }
            }
        }
        Ok(names
            .iter()
            .filter(|n| !present.contains(&Repository::wal_key(n)))
            .copied()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A format-2 file entry (sha256) still reads; format 3 writes crc32c only.
    #[test]
    fn file_entries_of_both_formats() {
        let v2 =
            r#"{"type":"file","path":"base/1/1","mode":384,"size":3,"sha256":"ab","chunks":[]}"#;
        let e: Entry = serde_json::from_str(v2).unwrap();
        assert!(matches!(&e, Entry::File { sha256: Some(s), crc32c: None, .. } if s == "ab"));
        let v3 = Entry::file("base/1/1".into(), 0o600, 3, 0x0a0b0c0d, vec![]);
        let text = serde_json::to_string(&v3).unwrap();
        assert!(
            text.contains(r#""crc32c":"0a0b0c0d""#) && !text.contains("sha256"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), v3);
    }

    #[test]
    fn ids_and_required_wal() {
        let t: Timestamp = "2026-11-26T03:05:12Z".parse().unwrap();
        let id = BackupId::at(t);
        assert_eq!(id.to_string(), "20261126T030512Z");
        assert_eq!(
            id.manifest_key().as_str(),
            "backups/20261126T030512Z/manifest.json.zst"
        );
        assert!("2026-11-26".parse::<BackupId>().is_err());
        let m = BackupManifest::example(
            id,
            t,
            2,
            "0/2000028".parse().unwrap(),
            "0/4000000".parse().unwrap(),
        );
        let names: Vec<String> = m
            .required_wal(16 << 20)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            ["000000020000000000000002", "000000020000000000000003"]
        );
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<BackupManifest>(&json).unwrap(), m);

        // Stored and read back; then with an impossible WAL range, refused as corrupt.
        let repo = Repository::new(Box::new(crate::storage::memory::MemoryStore::default()));
        let put = |m: &BackupManifest| {
            let sealed = repo.seal_manifest(m).unwrap();
            repo.store()
                .put(&m.backup_id.manifest_key(), &sealed, PutMode::Overwrite)
                .unwrap();
        };
        put(&m);
        assert_eq!(
            repo.read_manifest(&m.backup_id).unwrap().stop_lsn,
            m.stop_lsn
        );
        for (start, stop) in [("0/4000000", "0/2000028"), ("0/0", "FFFFFFFF/FFFFFFFF")] {
            let mut bad = m.clone();
            bad.start_lsn = start.parse().unwrap();
            bad.stop_lsn = stop.parse().unwrap();
            put(&bad);
            let e = repo.read_manifest(&m.backup_id).unwrap_err();
            assert!(e.to_string().contains("not an ordered range"), "{e}");
        }
        // Chunks must cover each file exactly, at a sane chunk size.
        let mut bad = m.clone();
        bad.entries = vec![Entry::file("base/1/1".into(), 0o600, 5 << 20, 0, vec![])];
        put(&bad);
        let e = repo.read_manifest(&m.backup_id).unwrap_err();
        assert!(e.to_string().contains("lists 0 chunks"), "{e}");
        bad.entries.clear();
        bad.chunk_size = 0;
        put(&bad);
        let e = repo.read_manifest(&m.backup_id).unwrap_err();
        assert!(e.to_string().contains("chunk size 0"), "{e}");
    }
}
