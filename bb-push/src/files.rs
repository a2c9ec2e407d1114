//! A cluster's files into chunks: cut in parts of [`PART_CHUNKS`] chunks so that big
//! relation segments spread over every worker, with page deltas against the previous
//! backup's chunks of the same file.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pitrkit::error::{Error, Result};
use pitrkit::io::buffer::{PageBuf, read_full};
use pitrkit::io::parallel;
use pitrkit::repo::Repository;
use pitrkit::repo::chunk::{CHUNK_SIZE, ChunkWriter};
use pitrkit::repo::manifest::Entry;

/// Chunks per unit of work. Workers take files in parts of this many chunks, so one big
/// relation segment (1 GiB: 16 parts) keeps every worker busy to the end instead of one
/// worker reading the largest file alone while the others wait.
const PART_CHUNKS: u64 = 64;
const PART_BYTES: u64 = PART_CHUNKS * CHUNK_SIZE as u64;

/// One unit of work: part `index` of file `file`; the last part reads to the end of the
/// file, however long it has grown since it was planned.
struct Part {
    file: usize,
    index: u64,
    to_eof: bool,
    planned: u64,
}

/// What a part stored.
struct StoredPart {
    chunks: Vec<pitrkit::repo::chunk::ChunkId>,
    bytes: u64,
    crc: u32,
    mode: u32,
}

impl StoredPart {
    /// Adds the part that follows this one in the file.
    fn append(&mut self, next: StoredPart) {
        self.crc = crc32c::crc32c_combine(self.crc, next.crc, next.bytes as usize);
        self.bytes += next.bytes;
        self.chunks.extend(next.chunks);
    }
}

/// Stores one part of a file; `None` when the file is gone (PostgreSQL dropped it during
/// the backup: replaying the WAL drops it again).
fn store_part(
    writer: &ChunkWriter,
    root: &Path,
    rel: &str,
    part: &Part,
    previous: &Previous,
) -> Result<Option<StoredPart>> {
    use std::io::{Seek, SeekFrom};
    let prev = previous.get(rel);
    let path = root.join(rel);
    let mut f = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::local_io(&path, e)),
    };
    let mode = f
        .metadata()
        .map_err(|e| Error::local_io(&path, e))?
        .permissions()
        .mode()
        & 0o7777;
    f.seek(SeekFrom::Start(part.index * PART_BYTES))
        .map_err(|e| Error::local_io(&path, e))?;
    let first = part.index * PART_CHUNKS;
    let mut buf = PageBuf::new(CHUNK_SIZE);
    let mut stored = StoredPart {
        chunks: Vec::new(),
        bytes: 0,
        crc: 0,
        mode,
    };
    while part.to_eof || (stored.chunks.len() as u64) < PART_CHUNKS {
        let n = read_full(&mut f, &mut buf).map_err(|e| Error::local_io(&path, e))?;
        if n == 0 {
            break;
        }
        stored.crc = crc32c::crc32c_append(stored.crc, &buf[..n]);
        let at = first as usize + stored.chunks.len();
        stored
            .chunks
            .push(writer.put(&buf[..n], prev.and_then(|p| p.get(at)))?);
        stored.bytes += n as u64;
        if n < buf.len() {
            break;
        }
    }
    Ok(Some(stored))
}

/// Stores many files with `jobs` workers, in parts of [`PART_CHUNKS`] chunks, the biggest
/// parts first so the work ends with small ones on every worker.
pub(crate) fn store_files(
    writer: &ChunkWriter,
    root: &Path,
    rels: &[String],
    jobs: usize,
    previous: &Previous,
) -> Result<Vec<Entry>> {
    let mut parts = Vec::new();
    for (file, rel) in rels.iter().enumerate() {
        // A file that can't be examined is one part: reading it reports why.
        let len = fs::metadata(root.join(rel)).map_or(0, |m| m.len());
        let n = len.div_ceil(PART_BYTES).max(1);
        parts.extend((0..n).map(|index| Part {
            file,
            index,
            to_eof: index == n - 1,
            planned: (len - (index * PART_BYTES).min(len)).min(PART_BYTES),
        }));
    }
    parts.sort_by_key(|p| std::cmp::Reverse(p.planned));
    let stored = parallel::map(jobs, &parts, |p| {
        store_part(writer, root, &rels[p.file], p, previous)
    })?;
    let mut by_file: Vec<Vec<(&Part, Option<StoredPart>)>> = rels.iter().map(|_| vec![]).collect();
    for (p, s) in parts.iter().zip(stored) {
        by_file[p.file].push((p, s));
    }
    let mut entries = Vec::with_capacity(rels.len());
    for (rel, mut file_parts) in rels.iter().zip(by_file) {
        file_parts.sort_by_key(|(p, _)| p.index);
        // The file as one sequential read would have seen it: it ends at the first part that
        // found it gone or shorter than planned (truncated meanwhile; replay truncates it
        // again), and later parts don't count.
        let mut whole: Option<StoredPart> = None;
        for (p, s) in file_parts {
            let Some(s) = s else { break };
            let short = !p.to_eof && s.bytes < PART_BYTES;
            match &mut whole {
                Some(w) => w.append(s),
                None => whole = Some(s),
            }
            if short {
                break;
            }
        }
        if let Some(w) = whole {
            entries.push(Entry::file(
                rel.to_string(),
                w.mode,
                w.bytes,
                w.crc,
                w.chunks,
            ));
        }
    }
    Ok(entries)
}

/// Each file's chunks in the newest earlier backup: where page deltas start from.
pub(crate) type Previous = HashMap<String, Vec<pitrkit::repo::chunk::ChunkId>>;

/// The previous backup's files, and what its chunks are taught to `writer`.
pub(crate) fn previous_chunks(repo: &Repository, writer: &ChunkWriter) -> Result<Previous> {
    let Some(id) = repo.list_backups()?.pop() else {
        return Ok(Previous::new());
    };
    // An unreadable previous manifest only costs full chunks.
    let Ok(m) = repo.read_manifest(&id) else {
        return Ok(Previous::new());
    };
    writer.inherit(m.referenced_chunks(), &m.delta_bases);
    Ok(m.entries
        .into_iter()
        .filter_map(|e| match e {
            Entry::File { path, chunks, .. } => Some((path, chunks)),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pitrkit::repo::crypto::Keys;
    use pitrkit::repo::manifest::Entry;
    use pitrkit::repo::object::Sealer;
    use pitrkit::storage::memory::MemoryStore;
    use std::fs;

    /// Files cut into parts come back whole: every byte in order from the chunks, and the
    /// CRC-32C of the whole file, at the sizes around a part's edges.
    #[test]
    fn parts_reassemble_into_the_file() {
        let d = tempfile::tempdir().unwrap();
        let sizes = [
            0,
            1,
            PART_BYTES - 1,
            PART_BYTES,
            PART_BYTES + 5,
            2 * PART_BYTES + CHUNK_SIZE as u64 + 7,
        ];
        let mut rels = Vec::new();
        let mut contents = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..len)
                .map(|j| (j / 8192) as u8 ^ (j as u8).wrapping_mul(i as u8 + 1))
                .collect();
            let rel = format!("f{i}");
            fs::write(d.path().join(&rel), &data).unwrap();
            rels.push(rel);
            contents.push(data);
        }
        rels.push("gone".into());
        let store = MemoryStore::default();
        let keys = Keys::none();
        let writer = ChunkWriter::new(&store, Sealer::on_this_thread(1), &keys).unwrap();
        let entries = store_files(&writer, d.path(), &rels, 3, &Previous::new()).unwrap();
        assert_eq!(entries.len(), sizes.len(), "the vanished file is left out");
        for (entry, data) in entries.iter().zip(&contents) {
            let Entry::File {
                size,
                crc32c,
                chunks,
                ..
            } = entry
            else {
                panic!("not a file: {entry:?}");
            };
            assert_eq!(*size, data.len() as u64);
            assert_eq!(
                crc32c.as_deref(),
                Some(format!("{:08x}", crc32c::crc32c(data)).as_str())
            );
            let mut back = Vec::new();
            for id in chunks {
                back.extend(pitrkit::repo::chunk::read(&store, &keys, id).unwrap());
            }
            assert!(back == *data, "{} differs", entry.path());
        }
    }
}
