//! Writing a backup's entries through the layout: chunks fetched and verified in
//! parallel, written at their offsets, flushed while the rest still arrives, then every file
//! and directory made durable.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Mutex, mpsc};

use super::layout::{Layout, Node};
use crate::error::{Error, Result};
use crate::io::lock;
use crate::io::parallel;
use crate::repo::Repository;
use crate::repo::chunk::{self, ChunkId};
use crate::repo::manifest::{BackupManifest, Entry};

/// One unit of restore work: a chunk of a file (an index into the restore's files).
struct Piece<'a> {
    file: usize,
    offset: u64,
    id: &'a ChunkId,
}

/// Restores every entry through `layout`; returns the bytes fetched from the repository.
pub(super) fn restore_files(
    repo: &Repository,
    m: &BackupManifest,
    layout: &Layout,
    jobs: usize,
    delta: bool,
) -> Result<u64> {
    let mut pieces = Vec::new();
    // (root, path beneath it) of each regular file, indexed by `Piece::file`.
    let mut files: Vec<(usize, &str)> = Vec::new();
    let mut wanted = HashSet::new();
    // Chunks are named with the key that sealed the manifest; without it, --delta can't
    // recognise a matching chunk and fetches everything.
    let digester = repo
        .keys()
        .digester_for(m.sealed_with, crate::repo::crypto::DigestAlg::Sha256);
    layout.make_links()?;
    for e in &m.entries {
        let place = layout.place(e.path());
        wanted.insert((place.root, place.rel.to_string()));
        match e {
            Entry::Dir { mode, .. } => layout.create_dir(&place, *mode)?,
            // Links are made by the layout, pointing where this host says.
            Entry::Symlink { .. } => {}
            Entry::File {
                size, mode, chunks, ..
            } => {
                let (root, rel) = (place.root, place.rel);
                let shown = || layout.display(root, rel);
                let existing = if delta {
                    layout.read_existing(root, rel)
                } else {
                    None
                };
                let f = layout.open_write(root, rel, true)?;
                // A new file, or with --delta a reused one cut or grown to its size.
                f.set_len(*size).map_err(|e| Error::local_io(shown(), e))?;
                f.set_permissions(fs::Permissions::from_mode(crate::pg::datadir::file_mode(
                    *mode,
                )))
                .map_err(|e| Error::local_io(shown(), e))?;
                files.push((root, rel));
                let file = files.len() - 1;
                for (i, id) in chunks.iter().enumerate() {
                    let offset = i as u64 * m.chunk_size;
                    let same = existing.as_ref().is_some_and(|d| {
                        let end = ((offset + m.chunk_size) as usize)
                            .min(*size as usize)
                            .min(d.len());
                        d.get(offset as usize..end).is_some_and(|c| {
                            digester.as_ref().is_some_and(|g| ChunkId::of(c, g) == *id)
                        })
                    });
                    if !same {
                        pieces.push(Piece { file, offset, id });
                    }
                }
            }
        }
    }
    if delta {
        layout.remove_unwanted(&wanted)?;
    }
    layout.ensure_wal_dir()?;
    let flusher = Flusher::new(files.len(), &pieces);
    let open = |file: usize| {
        let (root, rel) = files[file];
        layout.open_write(root, rel, false)
    };
    let fetched = std::thread::scope(|s| {
        for _ in 0..FLUSHERS {
            s.spawn(|| {
                flusher.work(|file| {
                    let (root, rel) = files[file];
                    layout
                        .open_read(root, rel)
                        .map_err(|e| Error::local_io(layout.display(root, rel), e))
                })
            });
        }
        let fetched = parallel::map(jobs, &pieces, |p| {
            let data = chunk::read(repo.store(), repo.keys(), p.id)?;
            let f = open(p.file)?;
            std::os::unix::fs::FileExt::write_all_at(&f, &data, p.offset).map_err(|e| {
                let (root, rel) = files[p.file];
                Error::local_io(layout.display(root, rel), e)
            })?;
            flusher.written(p.file);
            Ok(data.len() as u64)
        });
        flusher.finish();
        fetched
    })?;
    flusher.result()?;
    // Make the rest durable before the recovery settings say "ready to start".
    let synced: HashSet<(usize, &str)> = flusher.synced().into_iter().map(|f| files[f]).collect();
    sync_tree(layout, jobs, &synced)?;
    Ok(fetched.iter().sum())
}

/// Threads that fsync restored files while the others still fetch and decompress.
const FLUSHERS: usize = 4;
/// A file being written is flushed to disk every this many chunks.
const FLUSH_EVERY_CHUNKS: usize = 16;

/// Makes restored files durable as they are written, so that the disk works while chunks
/// are still being fetched and decompressed instead of all at the end (a restore fits in
/// the page cache, where the kernel would otherwise leave it until the final fsyncs).
struct Flusher {
    /// Per file: chunks still to be written, and written since the last flush.
    files: Vec<Mutex<(usize, usize)>>,
    /// Files to flush, and whether it is their final fsync; `None` once all are written.
    tx: Mutex<Option<mpsc::Sender<(usize, bool)>>>,
    rx: Mutex<mpsc::Receiver<(usize, bool)>>,
    synced: Mutex<Vec<usize>>,
    error: Mutex<Option<Error>>,
}

impl Flusher {
    fn new(files: usize, pieces: &[Piece]) -> Self {
        let mut counts = vec![0; files];
        for p in pieces {
            counts[p.file] += 1;
        }
        let (tx, rx) = mpsc::channel();
        Flusher {
            files: counts.into_iter().map(|n| Mutex::new((n, 0))).collect(),
            tx: Mutex::new(Some(tx)),
            rx: Mutex::new(rx),
            synced: Default::default(),
            error: Default::default(),
        }
    }

    /// A chunk of `file` has been written: queue a flush every few chunks, and the final
    /// fsync after the last one.
    fn written(&self, file: usize) {
        let Some(counts) = self.files.get(file) else {
            return;
        };
        let last = {
            let mut c = lock(counts);
            c.0 -= 1;
            c.1 += 1;
            if c.0 > 0 && c.1 < FLUSH_EVERY_CHUNKS {
                return;
            }
            c.1 = 0;
            c.0 == 0
        };
        if let Some(tx) = &*lock(&self.tx) {
            let _ = tx.send((file, last));
        }
    }

    /// One flushing thread: until [`Flusher::finish`] and the queue is empty.
    fn work(&self, open: impl Fn(usize) -> Result<fs::File>) {
        while let Ok((file, last)) = lock(&self.rx).recv() {
            let r = open(file).and_then(|f| {
                if last { f.sync_all() } else { f.sync_data() }
                    .map_err(|e| Error::local_io(format!("restored file #{file}"), e))
            });
            match r {
                Ok(()) if last => lock(&self.synced).push(file),
                Ok(()) => {}
                Err(e) => {
                    lock(&self.error).get_or_insert(e);
                }
            }
        }
    }

    /// No more chunks: the flushing threads end once the queue is empty.
    fn finish(&self) {
        lock(&self.tx).take();
    }

    fn result(&self) -> Result<()> {
        lock(&self.error).take().map_or(Ok(()), Err)
    }

    fn synced(&self) -> Vec<usize> {
        std::mem::take(&mut lock(&self.synced))
    }
}

/// fsyncs every file not `synced` yet, then every directory, each root and the directory
/// holding it. fsync waits on the disk, not a CPU, and the filesystem's journal commits
/// concurrent ones together: a data directory has ~1,000 small files, so many threads.
fn sync_tree(layout: &Layout, jobs: usize, synced: &HashSet<(usize, &str)>) -> Result<()> {
    let mut all = layout.tree()?;
    all.retain(|(root, rel, _)| !synced.contains(&(*root, rel.as_str())));
    let sync = |(root, rel, node): &(usize, String, Node)| -> Result<()> {
        if *node == Node::File {
            layout
                .open_read(*root, rel)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::local_io(layout.display(*root, rel), e))?;
        }
        Ok(())
    };
    parallel::map(jobs.max(16), &all, sync)?;
    for (root, rel, _) in all.iter().filter(|(_, _, n)| *n == Node::Dir) {
        layout.sync_dir(*root, rel)?;
    }
    for (root, path) in layout.roots() {
        layout.sync_dir(root, ".")?;
        if let Some(parent) = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            crate::io::local::sync_dir(&parent).map_err(|e| Error::local_io(&parent, e))?;
        }
    }
    Ok(())
}
