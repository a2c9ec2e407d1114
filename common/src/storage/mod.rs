//! The storage backends behind one trait: a local directory and any S3-compatible object
//! store. Everything above this module speaks in [`ObjectKey`]s and whole objects; how an
//! object becomes durable (fsync and rename, or a completed PUT) is the backend's business.

use std::fmt;

use crate::error::{Error, Result};

pub mod fs;
pub mod memory;
pub mod s3;

/// A key inside the repository: relative, `/`-separated, with no empty, `.` or `..`
/// component and no component starting with `.` (the filesystem backend keeps its
/// temporary files under such names, so no object can collide with one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let ok = !key.is_empty()
            && key.split('/').all(|c| !c.is_empty() && !c.starts_with('.'))
            && !key.contains(['\\', '\0']);
        if ok {
            Ok(ObjectKey(key))
        } else {
            Err(Error::Usage(format!("invalid object key '{key}'")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a write treats an object that already exists under the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace it (repository metadata that is rewritten as a whole).
    Overwrite,
    /// Leave it and report [`PutOutcome::AlreadyExists`]: archived WAL is never overwritten.
    CreateNew,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    AlreadyExists,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: ObjectKey,
    pub size: u64,
    /// When the object was stored, where the backend says.
    pub modified: Option<std::time::SystemTime>,
}

/// A place to keep repository objects. `get` returning `Ok(None)` is a positive answer that
/// the object does not exist; any doubt (timeouts, refusals) is an error instead, because
/// `restore_command` must never mistake an outage for the end of the archive.
pub trait Store: Send + Sync {
    /// The repository location as the user wrote it, for messages.
    fn location(&self) -> String;
    fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>>;
    /// The first `len` bytes (fewer if the object is shorter), for reading an envelope
    /// without transferring the object.
    fn get_prefix(&self, key: &ObjectKey, len: usize) -> Result<Option<Vec<u8>>>;
    /// Stores `data` under `key` atomically: readers see the old state or all of `data`,
    /// and `Ok(Stored)` is only returned once the object is durable.
    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome>;
    /// Stores like `put` with [`PutMode::CreateNew`], but may return before the object is
    /// durable, or even visible. For objects that count only once something else names them
    /// (a backup's chunks, named by its manifest): the writer goes on compressing while the
    /// disk syncs, instead of waiting on one fsync per object. [`Store::settle`] must succeed
    /// before anything names them.
    fn put_unsettled(&self, key: &ObjectKey, data: &[u8]) -> Result<()> {
        self.put(key, data, PutMode::CreateNew).map(|_| ())
    }
    /// Waits until every object given to [`Store::put_unsettled`] is durable under its name,
    /// and returns the first failure among them. The objects in `named` (what the caller is
    /// about to name, some stored by other processes that may not have settled yet) are made
    /// durable too.
    fn settle(&self, named: &[ObjectKey]) -> Result<()> {
        let _ = named;
        Ok(())
    }
    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Some of the first objects whose key starts with `prefix` and sorts after `after`
    /// (at most `max`; fewer does not mean there are no more: ask again after the last),
    /// sorted by key. For questions about a key's neighbours, which must not cost a listing
    /// of everything (on S3 one request, where a long timeline's listing is many pages).
    fn list_some(&self, prefix: &str, after: Option<&str>, max: usize) -> Result<Vec<ObjectInfo>> {
        let mut all = self.list(prefix)?;
        all.retain(|o| after.is_none_or(|a| o.key.as_str() > a));
        all.truncate(max);
        Ok(all)
    }
    /// Removes an object; removing a missing object is not an error.
    fn delete(&self, key: &ObjectKey) -> Result<()>;
    /// Makes a new repository location usable for writes (the filesystem backend creates the
    /// repository directory when its parent exists; a bucket must already exist).
    fn create(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_reject_escapes() {
        for bad in ["", "/a", "a//b", "../x", "a/./b", "a/.tmp", "a\\b"] {
            assert!(ObjectKey::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            ObjectKey::new("wal/00000001/x").unwrap().as_str(),
            "wal/00000001/x"
        );
    }

    /// The contract every backend must meet, run against the in-memory and filesystem
    /// backends here and against a real S3 server in the integration tests.
    fn store_contract(s: &dyn Store) {
        let k = ObjectKey::new("wal/00000001/a").unwrap();
        assert_eq!(s.get(&k).unwrap(), None);
        assert_eq!(
            s.put(&k, b"hello", PutMode::CreateNew).unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(
            s.put(&k, b"other", PutMode::CreateNew).unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(s.get(&k).unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(s.get_prefix(&k, 2).unwrap().as_deref(), Some(&b"he"[..]));
        assert_eq!(
            s.get_prefix(&k, 99).unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(
            s.put(&k, b"new", PutMode::Overwrite).unwrap(),
            PutOutcome::Stored
        );
        assert_eq!(s.get(&k).unwrap().as_deref(), Some(&b"new"[..]));
        let k2 = ObjectKey::new("wal/00000002/b").unwrap();
        s.put(&k2, b"", PutMode::CreateNew).unwrap();
        let l = s.list("wal/").unwrap();
        let got: Vec<_> = l.iter().map(|o| (o.key.clone(), o.size)).collect();
        assert_eq!(got, vec![(k.clone(), 3), (k2.clone(), 0)]);
        assert_eq!(s.list("wal/00000002/").unwrap().len(), 1);
        s.delete(&k).unwrap();
        s.delete(&k).unwrap();
        assert_eq!(s.get(&k).unwrap(), None);
        // Unsettled puts: all there once settled, an existing object left as it was.
        let keys: Vec<_> = (0..100)
            .map(|i| ObjectKey::new(format!("chunks/{:02x}/c{i}", i % 7)).unwrap())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            s.put_unsettled(k, format!("chunk {i}").as_bytes()).unwrap();
        }
        s.put_unsettled(&k2, b"not this").unwrap();
        s.settle(&keys).unwrap();
        s.settle(&[]).unwrap();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(s.get(k).unwrap(), Some(format!("chunk {i}").into_bytes()));
        }
        assert_eq!(s.get(&k2).unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(s.list("chunks/").unwrap().len(), 100);
    }

    #[test]
    fn memory_store_meets_contract() {
        store_contract(&memory::MemoryStore::default());
    }

    #[test]
    fn fs_store_meets_contract() {
        let d = tempfile::tempdir().unwrap();
        let s = fs::FsStore::new(d.path().join("repo"));
        // Until created, the repository is unavailable, never "empty".
        let k = ObjectKey::new("x").unwrap();
        assert_eq!(
            s.get(&k).unwrap_err().code(),
            crate::error::EXIT_UNAVAILABLE
        );
        s.create().unwrap();
        s.create().unwrap();
        store_contract(&s);
        // No temporary file is left behind.
        let root = d.path().display().to_string();
        let leftovers: Vec<_> = walk(d.path())
            .into_iter()
            .filter(|p| p[root.len()..].contains("/."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn walk(p: &std::path::Path) -> Vec<String> {
        let mut out = vec![];
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
        out
    }
}
