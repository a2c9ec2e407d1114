//! Content-addressed chunks, the unit of storage and deduplication of base backups.
//!
//! Every file is cut at fixed offsets into chunks of `CHUNK_SIZE` bytes and each chunk is
//! stored once, under the sha256 of its content. PostgreSQL changes relation files in place,
//! page by page, so fixed offsets line up from one backup to the next: a changed page in a
//! 1 GiB relation stores one new 1 MiB chunk, and unchanged files store nothing. Because every
//! backup's manifest lists all of its chunks, any backup restores on its own and deleting
//! another backup can never break it (a chunk goes only when no manifest refers to it).

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::object::{self, Compressor, Sha256Sum};
use crate::storage::{ObjectKey, PutMode, Store};

/// Bytes per chunk (the last chunk of a file may be shorter).
pub const CHUNK_SIZE: usize = 1 << 20;
const PREFIX: &str = "chunks/";

/// A chunk's name: the sha256 of its content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn of(data: &[u8]) -> Self {
        ChunkId(Sha256::digest(data).into())
    }

    /// `chunks/<first two hex digits>/<sha256>.zst`: 256 directories keep filesystem
    /// repositories listable.
    pub fn key(&self) -> ObjectKey {
        let hex = self.to_string();
        ObjectKey::new(format!("{PREFIX}{}/{hex}.zst", &hex[..2]))
            .unwrap_or_else(|_| unreachable!())
    }

    fn from_key(key: &str) -> Option<Self> {
        key.strip_prefix(PREFIX)?
            .split('/')
            .nth(1)?
            .strip_suffix(".zst")?
            .parse()
            .ok()
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Sha256Sum(self.0), f)
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ChunkId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Usage(format!("invalid chunk id '{s}'"));
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(ChunkId(out))
    }
}

impl serde::Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Writes chunks that are not in the repository yet, counting what was new.
pub struct ChunkWriter<'a> {
    store: &'a dyn Store,
    compressor: Compressor,
    known: Mutex<HashSet<ChunkId>>,
    pub new_chunks: AtomicU64,
    pub new_stored_bytes: AtomicU64,
}

impl<'a> ChunkWriter<'a> {
    /// Lists the chunks already stored (one listing, instead of a request per chunk).
    pub fn new(store: &'a dyn Store, compressor: Compressor) -> Result<Self> {
        let known = store
            .list(PREFIX)?
            .iter()
            .filter_map(|o| ChunkId::from_key(o.key.as_str()))
            .collect();
        Ok(ChunkWriter {
            store,
            compressor,
            known: Mutex::new(known),
            new_chunks: AtomicU64::new(0),
            new_stored_bytes: AtomicU64::new(0),
        })
    }

    /// Stores `data` unless a chunk with its content exists, and returns its id.
    pub fn put(&self, data: &[u8]) -> Result<ChunkId> {
        let id = ChunkId::of(data);
        // Claimed before the upload so two workers never upload the same new chunk; if the
        // upload fails the whole backup fails and no manifest refers to it.
        if !self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id)
        {
            return Ok(id);
        }
        let sealed = self.compressor.seal_known(data, Sha256Sum(id.0))?;
        self.store.put(&id.key(), &sealed, PutMode::CreateNew)?;
        self.new_chunks.fetch_add(1, Ordering::Relaxed);
        self.new_stored_bytes
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        Ok(id)
    }
}

/// Fetches a chunk and proves its content has the sha256 it is named by.
pub fn read(store: &dyn Store, id: &ChunkId) -> Result<Vec<u8>> {
    let key = id.key();
    let stored = store.get(&key)?.ok_or_else(|| {
        Error::corrupt(&key, "missing from the repository (a backup refers to it)")
    })?;
    let (plain, env) = object::open(key.as_str(), &stored)?;
    if env.sha256.0 != id.0 {
        return Err(Error::corrupt(
            &key,
            format!("holds content with sha256 {}, not {id}", env.sha256),
        ));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    #[test]
    fn dedups_and_verifies() {
        let store = MemoryStore::default();
        let w = ChunkWriter::new(
            &store,
            Compressor {
                level: 1,
                workers: 0,
            },
        )
        .unwrap();
        let a = w.put(&[1u8; 5000]).unwrap();
        let b = w.put(&[1u8; 5000]).unwrap();
        assert_eq!(a, b);
        assert_eq!(w.new_chunks.load(Ordering::Relaxed), 1);
        // A second writer sees what the first stored.
        let w2 = ChunkWriter::new(
            &store,
            Compressor {
                level: 1,
                workers: 0,
            },
        )
        .unwrap();
        w2.put(&[1u8; 5000]).unwrap();
        assert_eq!(w2.new_chunks.load(Ordering::Relaxed), 0);
        assert_eq!(read(&store, &a).unwrap(), vec![1u8; 5000]);
        assert_eq!(a.to_string().parse::<ChunkId>().unwrap(), a);
        let missing = ChunkId::of(b"nope");
        assert_eq!(
            read(&store, &missing).unwrap_err().code(),
            crate::error::EXIT_CORRUPT
        );
    }
}
