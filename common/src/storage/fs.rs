//! The local-directory backend: one file per object under the repository directory.
//!
//! A write goes to a temporary file in the object's own directory, is fsynced, then renamed
//! (or hard-linked, for create-only writes) into place, and the directory is fsynced so the
//! new name survives a power loss. A crash leaves at most a `.`-prefixed temporary file,
//! which no listing reports and no reader opens.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::{ObjectInfo, ObjectKey, PutMode, PutOutcome, Store};
use crate::error::{Error, Result};

pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStore { root: root.into() }
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
            Ok(()) => sync_dir(parent).map_err(|e| self.unavailable(parent, e)),
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
                });
            }
        }
        Ok(())
    }
}

/// fsync a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `data` to a fresh temporary file beside `target` and fsyncs it. The caller moves
/// it into place; on error the temporary file is already gone.
pub fn write_temp_beside(target: &Path, data: &[u8]) -> io::Result<PathBuf> {
    let dir = target.parent().unwrap_or(Path::new("."));
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
        let mut f = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let written = f.write_all(data).and_then(|()| f.sync_all());
        return match written {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        };
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary file name",
    ))
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
        let target = self.path(key);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        self.create_dirs(&dir)?;
        let tmp = write_temp_beside(&target, data).map_err(|e| self.unavailable(&dir, e))?;
        let moved = match mode {
            PutMode::Overwrite => fs::rename(&tmp, &target).map(|()| PutOutcome::Stored),
            // link(2) fails if the name exists: an atomic create-only publish.
            PutMode::CreateNew => {
                let r = match fs::hard_link(&tmp, &target) {
                    Ok(()) => Ok(PutOutcome::Stored),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        Ok(PutOutcome::AlreadyExists)
                    }
                    Err(e) => Err(e),
                };
                let _ = fs::remove_file(&tmp);
                r
            }
        };
        match moved {
            Ok(outcome) => {
                sync_dir(&dir).map_err(|e| self.unavailable(&dir, e))?;
                Ok(outcome)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(self.unavailable(&target, e))
            }
        }
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
                let parent = self.root.parent().unwrap_or(Path::new("."));
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

impl FsStore {
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
