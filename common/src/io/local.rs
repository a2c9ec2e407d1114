//! Durable local files: a temporary file beside its final name, fsynced (in the background
//! while it grows) and renamed or linked into place, and the directory fsync that makes a
//! new name survive a power loss. The local store, the restore engine, wal-fetch and
//! wal-push's look-ahead all write files this way.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Whether this process runs as root (asked once: it is asked for every object written).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    })
}

/// fsync a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An exclusive `flock` on `path` (created if missing), or `None` while another open file
/// holds it. The kernel drops it with the process, however that ends, so a lock never
/// outlives a crashed holder: helpers and the calls they serve use it to claim work.
pub fn try_hold(path: &Path) -> io::Result<Option<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Whether some process holds the lock [`try_hold`] takes on `path` now.
pub fn held_elsewhere(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock))
}

/// A temporary file beside its final name, removed when dropped unless
/// [`TempFile::persist`]ed: whatever fails between writing and publishing, nothing is left
/// under a name anyone reads, and the temporary name starts with `.` so no listing shows it.
///
/// Big files are flushed to disk in the background while they are written (every
/// [`FLUSH_EVERY`] bytes a second thread fsyncs what is there so far), so the fsync before
/// publishing waits only for the tail: the disk works while the caller decompresses.
pub struct TempFile {
    path: Option<PathBuf>,
    file: File,
    unflushed: usize,
    flusher: Option<Flusher>,
}

/// Bytes written between background flushes.
pub const FLUSH_EVERY: usize = 4 << 20;

struct Flusher {
    tx: std::sync::mpsc::SyncSender<()>,
    handle: std::thread::JoinHandle<io::Result<()>>,
}

impl TempFile {
    pub fn create_beside(target: &Path) -> io::Result<Self> {
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        for _ in 0..16 {
            let tmp = dir.join(format!(
                ".{base}.{}.{:08x}.tmp",
                std::process::id(),
                fastrand::u32(..)
            ));
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(file) => {
                    return Ok(TempFile {
                        path: Some(tmp),
                        file,
                        unflushed: 0,
                        flusher: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary file name",
        ))
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// The open file, for its metadata (mode, owner) before it is published.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Asks the background flusher to fsync what has been written so far; never blocks
    /// (a flush already pending covers this one too).
    fn start_flush(&mut self) -> io::Result<()> {
        if self.flusher.is_none() {
            let file = self.file.try_clone()?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            let handle = std::thread::spawn(move || -> io::Result<()> {
                for () in rx {
                    file.sync_data()?;
                }
                Ok(())
            });
            self.flusher = Some(Flusher { tx, handle });
        }
        if let Some(f) = &self.flusher {
            let _ = f.tx.try_send(());
        }
        Ok(())
    }

    /// Waits for the background flusher and makes everything durable.
    fn sync(&mut self) -> io::Result<()> {
        if let Some(f) = self.flusher.take() {
            drop(f.tx);
            f.handle
                .join()
                .map_err(|_| io::Error::other("flush thread panicked"))??;
        }
        self.file.sync_all()
    }

    /// fsyncs the content, renames the file to `target`, and fsyncs the directory so the
    /// new name survives a crash.
    pub fn persist(mut self, target: &Path) -> io::Result<()> {
        self.sync()?;
        let tmp = self.path.take().unwrap_or_default();
        if let Err(e) = fs::rename(&tmp, target) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(
            target
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
    }

    /// Renames the file to `target` at once, then waits for its content to reach the disk;
    /// the directory is not fsynced. For a file whose reader waits to *see* it and makes it
    /// durable itself (a prefetched segment: PostgreSQL fsyncs each segment it restores):
    /// the writing is done off the reader's path in the usual case, and when a checkpoint
    /// floods the disk the reader does not queue behind this fsync too.
    pub fn publish_then_sync(mut self, target: &Path) -> io::Result<()> {
        let tmp = self.path.take().unwrap_or_default();
        if let Err(e) = fs::rename(&tmp, target) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.sync()
    }

    /// Renames the file to `target` without any fsync: for hints whose loss in a crash
    /// costs only work (wal-push's records of pushed files), never for data; a reader must
    /// treat a torn one as absent.
    pub fn replace_unsynced(mut self, target: &Path) -> io::Result<()> {
        let tmp = self.path.take().unwrap_or_default();
        fs::rename(&tmp, target).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// fsyncs the content and publishes it under `target` only if that name is free
    /// (link(2) fails on an existing name: an atomic create-only publish).
    pub fn persist_new(self, target: &Path) -> io::Result<bool> {
        self.publish_new(target, true)
    }

    /// [`TempFile::persist_new`], leaving the directory's fsync to the caller when
    /// `sync_parent` is false.
    pub fn publish_new(mut self, target: &Path, sync_parent: bool) -> io::Result<bool> {
        self.sync()?;
        let created = match fs::hard_link(self.path(), target) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e),
        };
        crate::runner::fault_point_on("after-link", target);
        if created && sync_parent {
            sync_dir(
                target
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new(".")),
            )?;
        }
        Ok(created)
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unflushed += n;
        if self.unflushed >= FLUSH_EVERY {
            self.unflushed = 0;
            self.start_flush()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(f) = self.flusher.take() {
            drop(f.tx);
            let _ = f.handle.join();
        }
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(p);
        }
    }
}
