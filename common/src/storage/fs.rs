//! The local-directory backend: one file per object under the repository directory.
//!
//! A write goes to a temporary file in the object's own directory, is fsynced, then renamed
//! (or hard-linked, for create-only writes) into place, and the directory is fsynced so the
//! new name survives a power loss. A crash leaves at most a `.`-prefixed temporary file,
//! which no listing reports and no reader opens.
//!
//! Why one file (~400 lines): the store and its settler (the threads that publish
//! `put_unsettled` objects) share the temporary-file and fsync ordering described above.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{ObjectInfo, ObjectKey, PutMode, PutOutcome, Store};
use crate::error::{Error, Result};
use crate::io::local::{TempFile, running_as_root, sync_dir};
use crate::io::lock;

pub struct FsStore {
    root: PathBuf,
    /// Objects written but not yet fsynced and published ([`Store::put_unsettled`]).
    settling: Mutex<Option<Settler>>,
    /// Modes of new directories and files, from the root's mode once (see `modes`).
    modes: std::sync::OnceLock<(u32, u32)>,
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStore {
            root: root.into(),
            settling: Mutex::new(None),
            modes: std::sync::OnceLock::new(),
        }
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// A read failure on the repository is the repository being unavailable (an unmounted
    /// or unreadable directory), not a problem with the user's local files.
    fn unavailable(&self, path: &Path, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::PermissionDenied {
            Error::Denied(format!("{}: {e}", path.display()))
        } else {
            Error::Unavailable(format!("{}: {e}", path.display()))
        }
    }

    /// Creates the directories leading to `dir`, fsyncing each parent whose entries changed.
    fn create_dirs(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if dir == self.root {
            // The root is only made by `create`: a missing root is otherwise a missing mount.
            return self.check_root();
        }
        let parent = dir
            .parent()
            .ok_or_else(|| self.unavailable(dir, io::Error::other("no parent")))?;
        if !parent.is_dir() {
            self.create_dirs(parent)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {
                fs::set_permissions(dir, fs::Permissions::from_mode(self.modes().0))
                    .and_then(|()| give_to_owner_of(dir, &self.root))
                    .map_err(|e| self.unavailable(dir, e))?;
                sync_dir(parent).map_err(|e| self.unavailable(parent, e))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(self.unavailable(dir, e)),
        }
    }

    fn list_into(
        &self,
        dir: &Path,
        rel: &str,
        prefix: &str,
        out: &mut Vec<ObjectInfo>,
    ) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.unavailable(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| self.unavailable(dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let key = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            // Descend only where the prefix can still match.
            let could_match = key.starts_with(prefix) || prefix.starts_with(&format!("{key}/"));
            if !could_match {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(|e| self.unavailable(&entry.path(), e))?;
            if meta.is_dir() {
                self.list_into(&entry.path(), &key, prefix, out)?;
            } else if meta.is_file() && key.starts_with(prefix) {
                out.push(ObjectInfo {
                    key: ObjectKey::new(key)?,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                });
            }
        }
        Ok(())
    }
}

/// Run as root (a cron job, an operator's manual bb-push), what is made in the repository
/// gets the owner of `reference`: a root-owned `wal/00000002/` would make the archiver,
/// running as `postgres`, fail on the next segment, and it could not read a root document
/// root wrote first. The reference is the repository directory itself (its parent for the
/// repository directory), not each new directory's parent: several threads (bb-push's
/// uploads) make `chunks/` and `chunks/4a/` at once, and a parent seen an instant before its
/// own owner is given would be root's.
fn owner_to_give(reference: &Path) -> io::Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    if !running_as_root() {
        return Ok(None);
    }
    let owner = fs::metadata(reference)?;
    Ok((owner.uid() != 0).then_some((owner.uid(), owner.gid())))
}

/// A new directory gets the owner of `reference` (see [`owner_to_give`]).
fn give_to_owner_of(dir: &Path, reference: &Path) -> io::Result<()> {
    match owner_to_give(reference)? {
        Some((uid, gid)) => std::os::unix::fs::lchown(dir, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// A new file gets the owner of `reference` (see [`owner_to_give`]).
fn give_file_to_owner_of(file: &File, reference: &Path) -> io::Result<()> {
    match owner_to_give(reference)? {
        Some((uid, gid)) => std::os::unix::fs::fchown(file, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// Threads that fsync and publish the objects of [`Store::put_unsettled`]: each is written
/// to its temporary file by the caller, then fsynced and linked into place here, and every
/// directory that got a new name is fsynced once, in [`Settler::finish`]. Several fsyncs in
/// flight also share the filesystem's journal commits.
struct Settler {
    tx: std::sync::mpsc::SyncSender<(TempFile, PathBuf)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    dirs: Arc<Mutex<std::collections::BTreeSet<PathBuf>>>,
    failed: Arc<Mutex<Option<(PathBuf, io::Error)>>>,
}

/// Files being fsynced at once, and waiting: bounds the open descriptors, and a writer faster
/// than the disk waits rather than piling up dirty pages.
const SETTLE_THREADS: usize = 4;
const SETTLE_QUEUE: usize = 32;

impl Settler {
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(TempFile, PathBuf)>(SETTLE_QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let dirs = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let failed = Arc::new(Mutex::new(None));
        let threads = (0..SETTLE_THREADS)
            .map(|_| {
                let (rx, dirs, failed) = (rx.clone(), dirs.clone(), failed.clone());
                std::thread::spawn(move || {
                    loop {
                        let next = lock(&rx).recv();
                        let Ok((tmp, target)) = next else { return };
                        match tmp.publish_new(&target, false) {
                            Ok(_) => {
                                let dir = target.parent().unwrap_or(Path::new(".")).to_path_buf();
                                lock(&dirs).insert(dir);
                            }
                            Err(e) => {
                                lock(&failed).get_or_insert((target, e));
                            }
                        }
                    }
                })
            })
            .collect();
        Settler {
            tx,
            threads,
            dirs,
            failed,
        }
    }

    /// Waits for every queued object; returns the directories they were linked into, which
    /// the caller fsyncs.
    fn finish(
        self,
        root: &Path,
    ) -> Result<std::collections::BTreeSet<PathBuf>, (PathBuf, io::Error)> {
        drop(self.tx);
        for t in self.threads {
            if t.join().is_err() {
                return Err((
                    root.to_path_buf(),
                    io::Error::other("a sync thread panicked"),
                ));
            }
        }
        if let Some(failed) = lock(&self.failed).take() {
            return Err(failed);
        }
        Ok(std::mem::take(&mut *lock(&self.dirs)))
    }

    /// The first failure of the sync threads so far, if any (it stays recorded for
    /// [`Settler::finish`]).
    fn failure(&self) -> Option<(PathBuf, io::Error)> {
        lock(&self.failed)
            .as_ref()
            .map(|(p, e)| (p.clone(), io::Error::new(e.kind(), e.to_string())))
    }
}

impl Store for FsStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn get(&self, key: &ObjectKey) -> Result<Option<Vec<u8>>> {
        let p = self.path(key);
        match fs::read(&p) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.absent(),
            Err(e) => Err(self.unavailable(&p, e)),
        }
    }

    fn get_prefix(&self, key: &ObjectKey, len: usize) -> Result<Option<Vec<u8>>> {
        let p = self.path(key);
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.absent(),
            Err(e) => return Err(self.unavailable(&p, e)),
        };
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64)
            .read_to_end(&mut buf)
            .map_err(|e| self.unavailable(&p, e))?;
        Ok(Some(buf))
    }

    fn put(&self, key: &ObjectKey, data: &[u8], mode: PutMode) -> Result<PutOutcome> {
        let (tmp, target) = self.write_temp(key, data)?;
        match mode {
            PutMode::Overwrite => tmp.persist(&target).map(|()| PutOutcome::Stored),
            PutMode::CreateNew => tmp.persist_new(&target).map(|new| {
                if new {
                    PutOutcome::Stored
                } else {
                    PutOutcome::AlreadyExists
                }
            }),
        }
        .map_err(|e| self.unavailable(&target, e))
    }

    fn put_unsettled(&self, key: &ObjectKey, data: &[u8]) -> Result<()> {
        let (tmp, target) = self.write_temp(key, data)?;
        let tx = {
            let mut settling = lock(&self.settling);
            let settler = settling.get_or_insert_with(Settler::start);
            // A disk that failed an earlier fsync stops the writer now, not after it has
            // read everything else.
            if let Some((p, e)) = settler.failure() {
                return Err(self.unavailable(&p, e));
            }
            settler.tx.clone()
        };
        // The threads stop only once every sender is gone: even if `settle` runs meanwhile,
        // it waits for this object.
        tx.send((tmp, target))
            .map_err(|_| Error::internal("the sync threads stopped"))
    }

    fn settle(&self, named: &[ObjectKey]) -> Result<()> {
        let settler = lock(&self.settling).take();
        let mut dirs = match settler {
            Some(s) => s
                .finish(&self.root)
                .map_err(|(p, e)| self.unavailable(&p, e))?,
            None => Default::default(),
        };
        // Objects another process linked may still wait for its directory fsync.
        dirs.extend(
            named
                .iter()
                .filter_map(|k| self.path(k).parent().map(Path::to_path_buf)),
        );
        for dir in &dirs {
            sync_dir(dir).map_err(|e| self.unavailable(dir, e))?;
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.check_root()?;
        let mut out = Vec::new();
        self.list_into(&self.root, "", prefix, &mut out)?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn create(&self) -> Result<()> {
        match fs::create_dir(&self.root) {
            Ok(()) => {
                // Like every directory below it: run as root, it belongs to whoever owns
                // the directory it was made in (the archiver and restores read it).
                let parent = self
                    .root
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                give_to_owner_of(&self.root, parent)
                    .map_err(|e| self.unavailable(&self.root, e))?;
                sync_dir(parent).map_err(|e| self.unavailable(parent, e))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.check_root(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Unavailable(format!(
                "cannot create repository directory {}: its parent directory does not exist",
                self.root.display()
            ))),
            Err(e) => Err(self.unavailable(&self.root, e)),
        }
    }

    fn delete(&self, key: &ObjectKey) -> Result<()> {
        let p = self.path(key);
        match fs::remove_file(&p) {
            Ok(()) => {
                sync_dir(p.parent().unwrap_or(&self.root)).map_err(|e| self.unavailable(&p, e))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.unavailable(&p, e)),
        }
    }
}

/// A store dropped with objects still settling (the tool is exiting on an error) lets them
/// finish: no temporary file is left for ever, and what was linked gets its directory fsync.
impl Drop for FsStore {
    fn drop(&mut self) {
        let _ = self.settle(&[]);
    }
}

impl FsStore {
    /// Writes `data` to a temporary file beside the object's name, in its directory
    /// (created if need be), ready to be published.
    fn write_temp(&self, key: &ObjectKey, data: &[u8]) -> Result<(TempFile, PathBuf)> {
        let target = self.path(key);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        self.create_dirs(&dir)?;
        let mut tmp = TempFile::create_beside(&target).map_err(|e| self.unavailable(&dir, e))?;
        tmp.file()
            .set_permissions(fs::Permissions::from_mode(self.modes().1))
            .and_then(|()| give_file_to_owner_of(tmp.file(), &self.root))
            .map_err(|e| self.unavailable(&dir, e))?;
        tmp.write_all(data).map_err(|e| self.unavailable(&dir, e))?;
        Ok((tmp, target))
    }

    /// Modes of what the repository holds, whatever the umask of the cron job or archiver
    /// writing (chunks are the database's rows): private to the owner, or readable by the
    /// group when the repository's directory is (a shared backup group). Directories, files.
    fn modes(&self) -> (u32, u32) {
        *self.modes.get_or_init(|| {
            let group = fs::metadata(&self.root).is_ok_and(|m| m.permissions().mode() & 0o040 != 0);
            if group {
                (0o750, 0o640)
            } else {
                (0o700, 0o600)
            }
        })
    }

    /// "Not found" is only a positive answer if the repository directory itself exists: a
    /// missing root is an unmounted disk or a wrong path, and `restore_command` must not read
    /// that as the end of the archive.
    fn absent<T>(&self) -> Result<Option<T>> {
        self.check_root()?;
        Ok(None)
    }

    fn check_root(&self) -> Result<()> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::Unavailable(format!(
                "{} is not a directory",
                self.root.display()
            ))),
            Err(e) => Err(Error::Unavailable(format!(
                "repository directory {}: {e}",
                self.root.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Run as root into a repository another user owns, a new directory and object belong to
    /// that user even when the directory above them is, for the moment, root's (another
    /// thread made it and has not yet given it away).
    #[test]
    fn root_writes_belong_to_the_repository_owner_whatever_the_parent() {
        if !running_as_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::chown(&root, Some(65534), Some(65534)).unwrap();
        fs::create_dir(root.join("chunks")).unwrap(); // still root's
        let store = FsStore::new(&root);
        let key = ObjectKey::new("chunks/4a/4a00").unwrap();
        store.put(&key, b"rows", PutMode::CreateNew).unwrap();
        for p in [root.join("chunks/4a"), root.join("chunks/4a/4a00")] {
            assert_eq!(fs::metadata(&p).unwrap().uid(), 65534, "{}", p.display());
        }
    }
}
