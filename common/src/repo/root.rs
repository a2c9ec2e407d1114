//! The root document (`pitrkit.json`: which cluster, which format, which segment size) and
//! the `Repository` handle every tool opens: the store, the keys, and the root it checked.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pg::wal::{SegmentHeader, WalFileName};
use crate::repo::crypto::Keys;
use crate::storage::{ObjectKey, PutMode, PutOutcome, Store};

/// The repository format this pitrkit reads and writes.
pub const FORMAT_VERSION: u32 = 1;
use crate::repo::layout::ROOT as ROOT_KEY;

/// `pitrkit.json`: which cluster the repository belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoRoot {
    pub format_version: u32,
    /// PostgreSQL's database system identifier, as a decimal string: it does not fit the
    /// integers many JSON readers use.
    #[serde(with = "u64_string")]
    pub system_identifier: u64,
    pub wal_segment_size: u32,
    pub pg_major: u32,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub created_by: String,
    /// `age-x25519` when every object is encrypted (see `crypto`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// Whether the store refused a second create-only write of a probe object when the
    /// repository was made (`If-None-Match: *` on S3). `false`: writers read back what they
    /// stored, since the store would let a racing writer replace it. Absent in repositories
    /// made before the probe existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditional_create: Option<bool>,
}

/// The value of [`RepoRoot::encryption`] for an encrypted repository.
pub const ENCRYPTION_SCHEME: &str = "age-x25519";

pub(crate) mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// What identifies the cluster a repository belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterIdentity {
    pub system_identifier: u64,
    pub segment_size: u32,
    pub pg_major: u32,
}

impl From<&SegmentHeader> for ClusterIdentity {
    fn from(h: &SegmentHeader) -> Self {
        ClusterIdentity {
            system_identifier: h.system_identifier,
            segment_size: h.segment_size,
            pg_major: h.pg_major,
        }
    }
}

/// A repository behind some store, with the keys this tool holds for it.
pub struct Repository {
    store: Box<dyn Store>,
    keys: Keys,
}

impl Repository {
    /// A repository opened without encryption keys.
    pub fn new(store: Box<dyn Store>) -> Self {
        Repository {
            store,
            keys: Keys::none(),
        }
    }

    pub fn with_keys(store: Box<dyn Store>, keys: Keys) -> Self {
        Repository { store, keys }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Where an archived WAL file lives (see [`crate::repo::layout::wal`]).
    pub fn wal_key(name: &WalFileName) -> ObjectKey {
        crate::repo::layout::wal(name)
    }

    /// Every archived WAL file, with its listing entry (size, when stored), by name.
    pub fn list_wal(&self) -> Result<Vec<(WalFileName, crate::storage::ObjectInfo)>> {
        Ok(self
            .store
            .list(crate::repo::layout::WAL)?
            .into_iter()
            .filter_map(|o| Some((crate::repo::layout::wal_name(o.key.as_str())?, o)))
            .collect())
    }

    fn root_key() -> ObjectKey {
        crate::repo::layout::root()
    }

    /// The root document, or `None` for a repository nothing has been pushed to yet.
    pub fn read_root(&self) -> Result<Option<RepoRoot>> {
        let Some(bytes) = self.store.get(&Self::root_key())? else {
            return Ok(None);
        };
        let root: RepoRoot = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Conflict(format!(
                "{}/{ROOT_KEY} is not a pitrkit repository root this version understands: {e}",
                self.location()
            ))
        })?;
        if root.format_version != FORMAT_VERSION {
            return Err(Error::Conflict(format!(
                "repository {} has format version {}; this pitrkit reads version {FORMAT_VERSION}",
                self.location(),
                root.format_version
            )));
        }
        // Every WAL position is computed from the segment size: PostgreSQL's are powers of
        // two from 1 MiB to 1 GiB (a 0 would divide by zero, anything else mis-name files).
        let seg = root.wal_segment_size;
        if !seg.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg) {
            return Err(Error::corrupt(
                ROOT_KEY,
                format!(
                    "WAL segment size {seg} is not one PostgreSQL uses (a power of two from \
                     1 MiB to 1 GiB)"
                ),
            ));
        }
        self.check_encryption(&root)?;
        Ok(Some(root))
    }

    /// The root document of a repository that must exist already (everything but a
    /// writer's first push): its absence means a wrong bucket, prefix or directory.
    pub fn require_root(&self) -> Result<RepoRoot> {
        self.read_root()?.ok_or_else(|| {
            Error::Conflict(format!(
                "{} is not a pitrkit repository (no pitrkit.json): wrong bucket, prefix or \
                 directory?",
                self.location()
            ))
        })
    }

    /// A tool must never store plaintext into an encrypted repository, nor mix encrypted
    /// objects into a plain one: the root decides, and the keys configured must agree.
    fn check_encryption(&self, root: &RepoRoot) -> Result<()> {
        match (root.encryption.as_deref(), self.keys.is_enabled()) {
            (None, false) => Ok(()),
            (Some(ENCRYPTION_SCHEME), true) => Ok(()),
            (Some(ENCRYPTION_SCHEME), false) => Err(Error::Usage(format!(
                "repository {} is encrypted ({ENCRYPTION_SCHEME}): configure \
                 encryption_recipients (to push) or encryption_identity_file (to read and restore)",
                self.location()
            ))),
            (Some(other), _) => Err(Error::Conflict(format!(
                "repository {} uses encryption '{other}', which this pitrkit does not know",
                self.location()
            ))),
            (None, true) => Err(Error::Conflict(format!(
                "repository {} is not encrypted, but encryption keys are configured: refusing \
                 to mix encrypted and plain objects (use a new repository for encryption)",
                self.location()
            ))),
        }
    }

    /// Records which cluster the repository belongs to. When two writers race, the first
    /// root wins and both get it back, so the loser's cluster check still runs against it.
    pub fn init_root(&self, header: &ClusterIdentity) -> Result<RepoRoot> {
        let honoured = self.probe_conditional_create()?;
        if !honoured {
            crate::runner::note(format!(
                "{} ignores create-only writes (If-None-Match): every write will be read back",
                self.location()
            ));
        }
        let root = RepoRoot {
            format_version: FORMAT_VERSION,
            system_identifier: header.system_identifier,
            wal_segment_size: header.segment_size,
            pg_major: header.pg_major,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            created_by: concat!("pitrkit ", env!("CARGO_PKG_VERSION")).into(),
            encryption: self
                .keys
                .is_enabled()
                .then(|| ENCRYPTION_SCHEME.to_string()),
            conditional_create: Some(honoured),
        };
        let mut json = serde_json::to_vec_pretty(&root).map_err(Error::internal)?;
        json.push(b'\n');
        match self
            .store
            .put(&Self::root_key(), &json, PutMode::CreateNew)?
        {
            PutOutcome::Stored => Ok(root),
            PutOutcome::AlreadyExists => self.read_root()?.ok_or_else(|| {
                Error::Unavailable(format!(
                    "{}/{ROOT_KEY} exists but cannot be read back",
                    self.location()
                ))
            }),
        }
    }

    /// The stored form of a JSON document of the repository (a manifest, a WAL summary):
    /// compressed and sealed as metadata. `what` names it in errors.
    pub fn seal_document(&self, what: &str, doc: &impl Serialize) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(doc).map_err(|e| Error::internal(format!("{what}: {e}")))?;
        let (sealed, _) = crate::repo::object::Sealer::on_this_thread(3)
            .seal_reader(
                &mut &json[..],
                json.len() as u64,
                &self.keys,
                crate::repo::crypto::Class::Metadata,
            )
            .map_err(|e| Error::internal(format!("{what}: {e}")))?;
        Ok(sealed)
    }

    /// Makes this repository a copy of one whose root is `source` (pitr-copy): the same
    /// cluster, segment size and encryption, with this store's own create-only probe. An
    /// existing root must describe the same cluster, else the copy is refused.
    pub fn init_copy_root(&self, source: &RepoRoot) -> Result<RepoRoot> {
        let root = match self.read_root()? {
            Some(r) => r,
            None => {
                let honoured = self.probe_conditional_create()?;
                let root = RepoRoot {
                    created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                        .to_string(),
                    created_by: concat!("pitrkit ", env!("CARGO_PKG_VERSION"), " (pitr-copy)")
                        .into(),
                    conditional_create: Some(honoured),
                    ..source.clone()
                };
                let mut json = serde_json::to_vec_pretty(&root).map_err(Error::internal)?;
                json.push(b'\n');
                match self
                    .store
                    .put(&Self::root_key(), &json, PutMode::CreateNew)?
                {
                    PutOutcome::Stored => root,
                    PutOutcome::AlreadyExists => self.require_root()?,
                }
            }
        };
        if (
            root.system_identifier,
            root.wal_segment_size,
            &root.encryption,
        ) != (
            source.system_identifier,
            source.wal_segment_size,
            &source.encryption,
        ) {
            return Err(Error::Conflict(format!(
                "{} holds system {} ({}-byte segments, encryption {}), not a copy of system {} \
                 ({}-byte segments, encryption {}): refusing to mix two repositories",
                self.location(),
                root.system_identifier,
                root.wal_segment_size,
                root.encryption.as_deref().unwrap_or("none"),
                source.system_identifier,
                source.wal_segment_size,
                source.encryption.as_deref().unwrap_or("none"),
            )));
        }
        Ok(root)
    }

    /// Whether the store honours create-only writes: the same probe object created twice
    /// must be refused the second time. A local directory (a hard link) always does; some
    /// S3 implementations, and proxies in front of them, drop `If-None-Match`.
    fn probe_conditional_create(&self) -> Result<bool> {
        let key = crate::repo::layout::probe(fastrand::u64(..));
        self.store.put(&key, b"1", PutMode::CreateNew)?;
        let second = self.store.put(&key, b"2", PutMode::CreateNew)?;
        // A host that may not delete leaves the probe behind: harmless.
        let _ = self.store.delete(&key);
        Ok(second == PutOutcome::AlreadyExists)
    }

    /// Checks that a segment or backup belongs to the cluster this repository archives,
    /// recording the cluster on first use.
    pub fn check_cluster(
        &self,
        root: Option<RepoRoot>,
        display: &str,
        h: &ClusterIdentity,
    ) -> Result<RepoRoot> {
        let root = match root {
            Some(r) => r,
            None => self.init_root(h)?,
        };
        if root.system_identifier != h.system_identifier {
            return Err(Error::Conflict(format!(
                "{display} belongs to database system {} but repository {} archives system {}: \
                 are two clusters pointed at one repository?",
                h.system_identifier,
                self.location(),
                root.system_identifier
            )));
        }
        if root.wal_segment_size != h.segment_size {
            return Err(Error::Conflict(format!(
                "{display} has {}-byte segments but repository {} holds {}-byte segments",
                h.segment_size,
                self.location(),
                root.wal_segment_size
            )));
        }
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    fn header(sysid: u64) -> ClusterIdentity {
        ClusterIdentity {
            pg_major: 15,
            system_identifier: sysid,
            segment_size: 16 << 20,
        }
    }

    #[test]
    fn first_segment_records_the_cluster_and_others_are_refused() {
        let repo = Repository::new(Box::new(MemoryStore::default()));
        assert_eq!(repo.read_root().unwrap(), None);
        let root = repo.check_cluster(None, "a", &header(7)).unwrap();
        assert_eq!(root.system_identifier, 7);
        let again = repo.read_root().unwrap().unwrap();
        assert_eq!(again, root);
        repo.check_cluster(Some(again.clone()), "b", &header(7))
            .unwrap();
        let e = repo
            .check_cluster(Some(again), "c", &header(8))
            .unwrap_err();
        assert_eq!(e.code(), crate::error::EXIT_CONFLICT);
        assert!(
            e.to_string().contains("database system 8") && e.to_string().contains("system 7"),
            "{e}"
        );
    }

    #[test]
    fn root_json_keeps_sysid_exact() {
        let repo = Repository::new(Box::new(MemoryStore::default()));
        repo.init_root(&header(7712125352005778860)).unwrap();
        let raw = repo
            .store()
            .get(&ObjectKey::new("pitrkit.json").unwrap())
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8(raw)
                .unwrap()
                .contains("\"7712125352005778860\"")
        );
        assert_eq!(
            repo.read_root().unwrap().unwrap().system_identifier,
            7712125352005778860
        );
    }

    #[test]
    fn a_root_with_an_impossible_segment_size_is_refused() {
        for bad in [0u64, 3 << 20, 512 << 10, 2 << 30] {
            let repo = Repository::new(Box::new(MemoryStore::default()));
            let doc = format!(
                "{{\"format_version\":1,\"system_identifier\":\"7\",\"wal_segment_size\":{bad},\"pg_major\":15,\"created_at\":\"x\",\"created_by\":\"x\"}}"
            );
            repo.store()
                .put(&Repository::root_key(), doc.as_bytes(), PutMode::CreateNew)
                .unwrap();
            let e = repo.read_root().unwrap_err();
            assert!(
                e.to_string().contains(&format!("WAL segment size {bad} ")),
                "{e}"
            );
            assert_eq!(e.code(), crate::error::EXIT_CORRUPT);
        }
    }

    #[test]
    fn lists_archived_wal_by_name() {
        let repo = Repository::new(Box::new(MemoryStore::default()));
        for n in ["000000010000000000000003", "00000002.history"] {
            let key = Repository::wal_key(&n.parse().unwrap());
            repo.store().put(&key, b"x", PutMode::CreateNew).unwrap();
        }
        repo.store()
            .put(
                &ObjectKey::new("wal/00000001/stray").unwrap(),
                b"x",
                PutMode::CreateNew,
            )
            .unwrap();
        let names: Vec<String> = repo
            .list_wal()
            .unwrap()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(names, ["000000010000000000000003", "00000002.history"]);
    }

    #[test]
    fn wal_keys_group_by_timeline() {
        let n: WalFileName = "00000002.history".parse().unwrap();
        assert_eq!(
            Repository::wal_key(&n).as_str(),
            "wal/00000002/00000002.history.zst"
        );
        let n: WalFileName = "0000000300000000000000A1".parse().unwrap();
        assert_eq!(
            Repository::wal_key(&n).as_str(),
            "wal/00000003/0000000300000000000000A1.zst"
        );
    }
}
