//! Content-addressed chunks, the unit of storage and deduplication of base backups.
//!
//! Every file is cut at fixed offsets into chunks of `CHUNK_SIZE` bytes and each chunk is
//! stored once, under the sha256 of its content. PostgreSQL changes relation files in place,
//! page by page, so fixed offsets line up from one backup to the next: a changed page in a
//! 1 GiB relation stores one new 1 MiB chunk, and unchanged files store nothing. Because every
//! backup's manifest lists all of its chunks, any backup restores on its own and deleting
//! another backup can never break it (a chunk goes only when no manifest refers to it).
//!
//! A chunk that changed in only some of its pages since the previous backup is stored as a
//! *page delta*: the id of a full base chunk plus the 8 KiB pages that differ from it. Its
//! name is still the sha256 of the content it rebuilds, and rebuilding verifies that. The
//! delta is computed by comparing against the base's real bytes (not page LSNs), so hint-bit
//! changes and torn reads can never make a rebuilt chunk differ from what was read. A delta
//! always refers to a full chunk, never to another delta, so rebuilding takes one extra read.
//!
//! Why one file (~420 lines of code): naming, page deltas, the writer and the reader share
//! the chunk's invariants (a delta's base, the keyed name); apart they would each restate them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::io::lock;
use crate::repo::crypto::{Class, DigestAlg, Digester, Keys};
use crate::repo::object::{self, ContentDigest, Sealer};
use crate::storage::{ObjectKey, PutMode, Store};

/// Bytes per chunk (the last chunk of a file may be shorter).
pub const CHUNK_SIZE: usize = 1 << 20;
/// Granularity of page deltas: PostgreSQL's block size.
const PAGE: usize = 8192;
const DELTA_MAGIC: &[u8; 8] = b"PKDELTA1";
use crate::repo::layout::CHUNKS as PREFIX;

/// A chunk's name: the sha256 of its content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The name of `data`: its sha256, or in an encrypted repository its keyed digest.
    pub fn of(data: &[u8], digester: &Digester) -> Self {
        ChunkId(digester.of(data))
    }

    /// Where the chunk lives (see [`crate::repo::layout::chunk`]).
    pub fn key(&self) -> ObjectKey {
        crate::repo::layout::chunk(&self.to_string())
    }

    pub fn from_key(key: &str) -> Option<Self> {
        crate::repo::layout::chunk_hex(key)?.parse().ok()
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&ContentDigest(self.0), f)
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

/// Every stored chunk object, with its listing entry.
pub fn list(store: &dyn Store) -> Result<Vec<(ChunkId, crate::storage::ObjectInfo)>> {
    Ok(store
        .list(PREFIX)?
        .into_iter()
        .filter_map(|o| Some((ChunkId::from_key(o.key.as_str())?, o)))
        .collect())
}

/// Writes chunks that are not in the repository yet, counting what was new, and knows which
/// of the chunks it handed out are page deltas and on which base: the manifest records that,
/// so retention keeps a base as long as a kept backup's delta needs it without reading chunks.
pub struct ChunkWriter<'a> {
    store: &'a dyn Store,
    sealer: Sealer,
    keys: Keys,
    digester: Digester,
    /// Chunks stored before this writer started (one listing).
    existing: HashSet<ChunkId>,
    /// Chunks this writer claimed to upload.
    claimed: Mutex<HashSet<ChunkId>>,
    /// What each chunk handed out is: `None` full, `Some(base)` a page delta.
    kinds: Mutex<HashMap<ChunkId, Option<ChunkId>>>,
    pub new_chunks: AtomicU64,
    pub new_stored_bytes: AtomicU64,
}

impl<'a> ChunkWriter<'a> {
    /// Lists the chunks already stored (one listing, instead of a request per chunk).
    pub fn new(store: &'a dyn Store, sealer: Sealer, keys: &Keys) -> Result<Self> {
        let existing = store
            .list(PREFIX)?
            .iter()
            .filter_map(|o| ChunkId::from_key(o.key.as_str()))
            .collect();
        Ok(ChunkWriter {
            store,
            sealer,
            keys: keys.clone(),
            digester: keys.digester(),
            existing,
            claimed: Mutex::new(HashSet::new()),
            kinds: Mutex::new(HashMap::new()),
            new_chunks: AtomicU64::new(0),
            new_stored_bytes: AtomicU64::new(0),
        })
    }

    /// Learns the kinds of an earlier backup's chunks from its manifest, so reusing them
    /// costs no read.
    pub fn inherit<'m>(
        &self,
        chunks: impl IntoIterator<Item = &'m ChunkId>,
        delta_bases: &BTreeMap<ChunkId, ChunkId>,
    ) {
        let mut kinds = lock(&self.kinds);
        for id in chunks {
            kinds.insert(*id, delta_bases.get(id).copied());
        }
    }

    /// Stores `data` unless a chunk with its content exists, and returns its id. `previous`
    /// is the chunk at the same place in the previous backup: when most of its pages are
    /// unchanged, only the changed pages are stored.
    pub fn put(&self, data: &[u8], previous: Option<&ChunkId>) -> Result<ChunkId> {
        let id = ChunkId::of(data, &self.digester);
        if self.existing.contains(&id) {
            if lock(&self.kinds).contains_key(&id) {
                return Ok(id);
            }
            match delta_base(self.store, &self.keys, &id) {
                Ok(kind) => {
                    lock(&self.kinds).insert(id, kind);
                    return Ok(id);
                }
                // A damaged stored copy is replaced by this good one (same name, same
                // content), rather than referred to by one more backup; so is one this
                // host can't read (it holds only the recipient) and so can't tell a page
                // delta from a full chunk: retention must know every delta's base.
                Err(Error::Corrupt { .. } | Error::Denied(_)) => {
                    if !lock(&self.claimed).insert(id) {
                        return Ok(id);
                    }
                    let sealed = self.sealer.seal_known(
                        data,
                        ContentDigest(id.0),
                        &self.keys,
                        Class::Data,
                    )?;
                    self.store.put(&id.key(), &sealed, PutMode::Overwrite)?;
                    self.count(sealed.len());
                    lock(&self.kinds).insert(id, None);
                    return Ok(id);
                }
                Err(e) => return Err(e),
            }
        }
        // Claimed before the upload so two workers never upload the same new chunk; if the
        // upload fails the whole backup fails and no manifest refers to it.
        if !lock(&self.claimed).insert(id) {
            return Ok(id);
        }
        // A base that can't be read (damaged, removed) only costs a full chunk.
        let delta = previous.and_then(|p| self.delta_against(p, data).ok().flatten());
        let (sealed, kind) = match delta {
            Some((base, d)) => (
                self.sealer.seal_known(
                    &d,
                    ContentDigest(self.digester.of(&d)),
                    &self.keys,
                    Class::Data,
                )?,
                Some(base),
            ),
            None => (
                self.sealer
                    .seal_known(data, ContentDigest(id.0), &self.keys, Class::Data)?,
                None,
            ),
        };
        // Durable before the manifest names it (`write_manifest` settles the store).
        self.store.put_unsettled(&id.key(), &sealed)?;
        self.count(sealed.len());
        lock(&self.kinds).insert(id, kind);
        Ok(id)
    }

    fn count(&self, stored: usize) {
        self.new_chunks.fetch_add(1, Ordering::Relaxed);
        self.new_stored_bytes
            .fetch_add(stored as u64, Ordering::Relaxed);
    }

    /// The page deltas among `chunks` with their bases, for the manifest.
    pub fn delta_bases<'m>(
        &self,
        chunks: impl IntoIterator<Item = &'m ChunkId>,
    ) -> BTreeMap<ChunkId, ChunkId> {
        let kinds = lock(&self.kinds);
        chunks
            .into_iter()
            .filter_map(|id| Some((*id, (*kinds.get(id)?)?)))
            .collect()
    }

    /// The page delta that rebuilds `data` from the full chunk behind `previous`, or `None`
    /// when more than half the pages changed (a full chunk is then smaller to restore).
    fn delta_against(&self, previous: &ChunkId, data: &[u8]) -> Result<Option<(ChunkId, Vec<u8>)>> {
        let (base_id, base) = match read_object(self.store, &self.keys, previous)?.0 {
            Stored::Full(content) => (*previous, content),
            Stored::Delta(d) => (d.base, read_full(self.store, &self.keys, &d.base)?),
        };
        if base.len() != data.len() {
            return Ok(None);
        }
        let pages = data.len().div_ceil(PAGE);
        let changed: Vec<usize> = (0..pages)
            .filter(|&i| page(&base, i) != page(data, i))
            .collect();
        if changed.len() * 2 > pages {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(52 + changed.len() * (PAGE + 4));
        out.extend_from_slice(DELTA_MAGIC);
        out.extend_from_slice(&base_id.0);
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(&(changed.len() as u32).to_le_bytes());
        for i in changed {
            out.extend_from_slice(&(i as u32).to_le_bytes());
            out.extend_from_slice(page(data, i));
        }
        Ok(Some((base_id, out)))
    }
}

/// Page `i` of a chunk (the last one may be short).
fn page(chunk: &[u8], i: usize) -> &[u8] {
    &chunk[i * PAGE..((i + 1) * PAGE).min(chunk.len())]
}

/// A parsed page delta: `pages` replace those of `base`.
struct Delta {
    base: ChunkId,
    len: usize,
    pages: Vec<(usize, Vec<u8>)>,
}

enum Stored {
    Full(Vec<u8>),
    Delta(Delta),
}

fn parse_delta(key: &ObjectKey, d: &[u8]) -> Result<Delta> {
    let bad = || {
        Error::corrupt(
            key,
            "content matches neither its name nor the page-delta format",
        )
    };
    let u32_at = |at: usize| -> Result<usize> {
        Ok(u32::from_le_bytes(
            d.get(at..at + 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize)
    };
    if d.len() < 52 || &d[..8] != DELTA_MAGIC {
        return Err(bad());
    }
    let base = ChunkId(d[8..40].try_into().map_err(|_| bad())?);
    let len = u64::from_le_bytes(d[40..48].try_into().map_err(|_| bad())?) as usize;
    let count = u32_at(48)?;
    if len > CHUNK_SIZE * 4 || count > len.div_ceil(PAGE) {
        return Err(bad());
    }
    let mut pages = Vec::with_capacity(count);
    let mut at = 52;
    for _ in 0..count {
        let i = u32_at(at)?;
        let plen = PAGE.min(len.checked_sub(i * PAGE).ok_or_else(bad)?);
        pages.push((i, d.get(at + 4..at + 4 + plen).ok_or_else(bad)?.to_vec()));
        at += 4 + plen;
    }
    if at != d.len() {
        return Err(bad());
    }
    Ok(Delta { base, len, pages })
}

/// Reads the object named `id`: its envelope's sha256 equals the id for a full chunk, and
/// differs for a page delta (whose envelope covers the delta itself).
fn read_object(store: &dyn Store, keys: &Keys, id: &ChunkId) -> Result<(Stored, Digester)> {
    let key = id.key();
    let stored = store.get(&key)?.ok_or_else(|| {
        Error::corrupt(&key, "missing from the repository (a backup refers to it)")
    })?;
    parse_object(keys, id, &stored)
}

fn parse_object(keys: &Keys, id: &ChunkId, stored: &[u8]) -> Result<(Stored, Digester)> {
    let key = id.key();
    let (plain, env) = object::open(key.as_str(), stored, keys, object::limit::CHUNK)?;
    // Chunks are named by their sha256 digest (`crypto::digest`): an object that records
    // another function is not one pitrkit wrote as a chunk.
    if env.digest_alg != DigestAlg::Sha256 {
        return Err(Error::corrupt(
            &key,
            format!(
                "records a {} digest; a chunk's is sha256",
                env.digest_name()
            ),
        ));
    }
    // open() succeeded, so the key that sealed it is known.
    let digester = keys
        .digester_for(env.key, DigestAlg::Sha256)
        .unwrap_or(Digester::Sha256);
    if env.digest.0 == id.0 {
        Ok((Stored::Full(plain), digester))
    } else {
        parse_delta(&key, &plain).map(|d| (Stored::Delta(d), digester))
    }
}

/// Whether a stored chunk is a page delta, and on which base (reads the object).
pub fn delta_base(store: &dyn Store, keys: &Keys, id: &ChunkId) -> Result<Option<ChunkId>> {
    Ok(match read_object(store, keys, id)?.0 {
        Stored::Full(_) => None,
        Stored::Delta(d) => Some(d.base),
    })
}

/// A full chunk's content (a delta's base must be full).
fn read_full(store: &dyn Store, keys: &Keys, id: &ChunkId) -> Result<Vec<u8>> {
    match read_object(store, keys, id)?.0 {
        Stored::Full(c) => Ok(c),
        Stored::Delta(_) => Err(Error::corrupt(
            id.key(),
            "is a page delta where a full base chunk was expected",
        )),
    }
}

/// Fetches a chunk, rebuilding it from its base if it is a page delta, and proves the content
/// has the sha256 it is named by.
pub fn read(store: &dyn Store, keys: &Keys, id: &ChunkId) -> Result<Vec<u8>> {
    rebuild(store, keys, id, read_object(store, keys, id)?)
}

/// Verifies a chunk object already fetched (`stored`): its envelope and digest, and for a
/// page delta that it rebuilds, from its base, into content with its name. Returns the
/// content's length.
pub fn verify(store: &dyn Store, keys: &Keys, id: &ChunkId, stored: &[u8]) -> Result<u64> {
    rebuild(store, keys, id, parse_object(keys, id, stored)?).map(|c| c.len() as u64)
}

fn rebuild(
    store: &dyn Store,
    keys: &Keys,
    id: &ChunkId,
    object: (Stored, Digester),
) -> Result<Vec<u8>> {
    match object {
        (Stored::Full(content), _) => Ok(content),
        (Stored::Delta(d), digester) => {
            let mut content = read_full(store, keys, &d.base)?;
            if content.len() != d.len {
                return Err(Error::corrupt(
                    id.key(),
                    format!(
                        "delta expects a {}-byte base, {} has {}",
                        d.len,
                        d.base,
                        content.len()
                    ),
                ));
            }
            for (i, page) in d.pages {
                let range = i * PAGE..i * PAGE + page.len();
                content
                    .get_mut(range)
                    .ok_or_else(|| Error::corrupt(id.key(), "delta page out of range"))?
                    .copy_from_slice(&page);
            }
            if ChunkId::of(&content, &digester) != *id {
                return Err(Error::corrupt(
                    id.key(),
                    format!("rebuilt from base {} it does not have its sha256", d.base),
                ));
            }
            Ok(content)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn deltas_from_arbitrary_bytes_never_panic(
            mut b in proptest::collection::vec(any::<u8>(), 0..600),
            magic in any::<bool>(),
        ) {
            if magic && b.len() >= 8 {
                b[..8].copy_from_slice(DELTA_MAGIC);
            }
            let key = ObjectKey::new("chunks/ab/x.zst").unwrap();
            let _ = parse_delta(&key, &b);
        }
    }

    use super::*;
    use crate::storage::memory::MemoryStore;

    #[test]
    fn dedups_and_verifies() {
        let store = MemoryStore::default();
        let keys = Keys::none();
        let w = ChunkWriter::new(&store, Sealer::on_this_thread(1), &keys).unwrap();
        let a = w.put(&[1u8; 5000], None).unwrap();
        let b = w.put(&[1u8; 5000], None).unwrap();
        assert_eq!(a, b);
        assert_eq!(w.new_chunks.load(Ordering::Relaxed), 1);
        // A second writer sees what the first stored.
        let w2 = ChunkWriter::new(&store, Sealer::on_this_thread(1), &keys).unwrap();
        w2.put(&[1u8; 5000], None).unwrap();
        assert_eq!(w2.new_chunks.load(Ordering::Relaxed), 0);
        assert_eq!(read(&store, &keys, &a).unwrap(), vec![1u8; 5000]);
        assert_eq!(a.to_string().parse::<ChunkId>().unwrap(), a);
        // A chunk with two changed pages of 128 is stored as a small delta and rebuilds.
        let mut v1: Vec<u8> = (0..CHUNK_SIZE).map(|i| (i * 31 % 251) as u8).collect();
        let first = w.put(&v1, None).unwrap();
        v1[5] ^= 1;
        v1[CHUNK_SIZE - 1] ^= 1;
        let before = w.new_stored_bytes.load(Ordering::Relaxed);
        let second = w.put(&v1, Some(&first)).unwrap();
        let delta_bytes = w.new_stored_bytes.load(Ordering::Relaxed) - before;
        assert!(delta_bytes < 3 * PAGE as u64, "{delta_bytes}");
        assert_eq!(read(&store, &keys, &second).unwrap(), v1);
        // A delta of a delta refers to the full base.
        v1[9000] ^= 1;
        let third = w.put(&v1, Some(&second)).unwrap();
        assert_eq!(read(&store, &keys, &third).unwrap(), v1);
        // A damaged base fails the rebuild loudly.
        let base_key = first.key();
        let (plain, _) = object::open(
            base_key.as_str(),
            &store.get(&base_key).unwrap().unwrap(),
            &keys,
            object::limit::CHUNK,
        )
        .unwrap();
        let mut other = plain.clone();
        other[100] ^= 1;
        store
            .put(
                &base_key,
                &Sealer::on_this_thread(1)
                    .seal_known(&other, ContentDigest::of(&other), &keys, Class::Data)
                    .unwrap(),
                PutMode::Overwrite,
            )
            .unwrap();
        assert_eq!(
            read(&store, &keys, &second).unwrap_err().code(),
            crate::error::EXIT_CORRUPT
        );
        let missing = ChunkId::of(b"nope", &Digester::Sha256);
        assert_eq!(
            read(&store, &keys, &missing).unwrap_err().code(),
            crate::error::EXIT_CORRUPT
        );
        // A chunk's own content behind a BLAKE3 envelope (as a stream is sealed) opens, but
        // its envelope does not name it: refused, not taken for a delta.
        let content = vec![9u8; 7000];
        let id = w.put(&content, None).unwrap();
        let (as_stream, _) = Sealer::on_this_thread(1)
            .seal_reader(&mut &content[..], 0, &keys, Class::Data)
            .unwrap();
        store
            .put(&id.key(), &as_stream, PutMode::Overwrite)
            .unwrap();
        let e = read(&store, &keys, &id).unwrap_err();
        assert_eq!(e.code(), crate::error::EXIT_CORRUPT);
        assert!(e.to_string().contains("a chunk's is sha256"), "{e}");
    }
}
