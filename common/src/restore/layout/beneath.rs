//! Reading and writing beneath the roots of a [`Layout`]: every operation goes through the
//! root's directory handle (cap-std), so a path can't climb out of it and no link on the
//! way is followed.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, Permissions};

use super::{Kind, Layout, Node, Place, absolute};
use crate::error::{Error, Result};
use crate::pg::datadir;

impl Layout {
    fn dir(&self, root: usize) -> &Dir {
        self.roots[root]
            .dir
            .as_ref()
            .expect("roots are opened by prepare before use")
    }

    /// A path for messages.
    pub fn display(&self, root: usize, rel: &str) -> PathBuf {
        self.roots[root].path.join(rel)
    }

    /// Creates a directory beneath its root, with PostgreSQL's mode.
    pub fn create_dir(&self, p: &Place, stored_mode: u32) -> Result<()> {
        let dir = self.dir(p.root);
        let err = |e| Error::local_io(self.display(p.root, p.rel), e);
        if p.rel != "." {
            dir.create_dir_all(p.rel).map_err(err)?;
        }
        dir.set_permissions(p.rel, mode(datadir::dir_mode(stored_mode)))
            .map_err(err)
    }

    /// Opens (creating with `create`) a file beneath its root for writing.
    pub fn open_write(&self, root: usize, rel: &str, create: bool) -> Result<std::fs::File> {
        let dir = self.dir(root);
        let err = |e| Error::local_io(self.display(root, rel), e);
        if create && let Some((parent, _)) = rel.rsplit_once('/') {
            dir.create_dir_all(parent).map_err(err)?;
        }
        let f = dir
            .open_with(rel, OpenOptions::new().write(true).create(create))
            .map_err(err)?;
        Ok(f.into_std())
    }

    /// The current content of a file beneath its root, if it is one (for --delta).
    pub fn read_existing(&self, root: usize, rel: &str) -> Option<Vec<u8>> {
        self.dir(root).read(rel).ok()
    }

    /// Opens a file beneath its root to fsync it.
    pub fn open_read(&self, root: usize, rel: &str) -> io::Result<std::fs::File> {
        Ok(self.dir(root).open(rel)?.into_std())
    }

    /// Writes a small file of the data directory durably, mode 0600, replacing any file
    /// or link of that name.
    pub fn write_file(&self, name: &str, data: &[u8]) -> Result<()> {
        use std::io::Write;
        let err = |e| Error::local_io(self.display(0, name), e);
        self.remove_file(name)?;
        let mut f = self
            .dir(0)
            .open_with(name, OpenOptions::new().write(true).create_new(true))
            .map_err(err)?
            .into_std();
        f.write_all(data).and_then(|()| f.sync_all()).map_err(err)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)
    }

    /// Removes a file or link of the data directory, if there is one.
    pub fn remove_file(&self, name: &str) -> Result<()> {
        match self.dir(0).remove_file(name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(Error::local_io(self.display(0, name), e))
            }
            _ => Ok(()),
        }
    }

    /// A text file of the data directory, or "" when there is none.
    pub fn read_to_string(&self, name: &str) -> String {
        self.dir(0).read_to_string(name).unwrap_or_default()
    }

    /// Makes the links PostgreSQL needs in the data directory: `pg_tblspc/<oid>` to each
    /// tablespace's directory, and `pg_wal` to the WAL directory, replacing whatever a
    /// reused directory had there.
    pub fn make_links(&self) -> Result<()> {
        let data = self.dir(0);
        for r in self.roots.iter().skip(1) {
            let at = &r.prefix;
            let shown = self.display(0, at);
            if let Some((parent, _)) = at.rsplit_once('/') {
                data.create_dir_all(parent)
                    .map_err(|e| Error::local_io(&shown, e))?;
            }
            match data.symlink_metadata(at) {
                Ok(m) if m.is_dir() => data.remove_dir_all(at),
                Ok(_) => data.remove_file(at),
                Err(_) => Ok(()),
            }
            .map_err(|e| Error::local_io(&shown, e))?;
            let target = absolute(&r.path)?;
            data.symlink_contents(&target, at)
                .map_err(|e| Error::local_io(&shown, e))?;
        }
        Ok(())
    }

    /// `pg_wal/archive_status`, which PostgreSQL needs to start and to archive, whether or
    /// not the backup listed it.
    pub fn ensure_wal_dir(&self) -> Result<()> {
        self.create_dir(&self.place("pg_wal"), 0o700)?;
        self.create_dir(&self.place("pg_wal/archive_status"), 0o700)
    }

    /// `tablespace_map` as PostgreSQL reads it (`<oid> <path>`, `\` escaping `\`, CR and
    /// LF), rebuilt from where this restore put each tablespace; `None` without any.
    pub fn tablespace_map(&self) -> Option<String> {
        let mut out = String::new();
        for r in &self.roots {
            if let Kind::Tablespace { oid, .. } = r.kind {
                let path = absolute(&r.path).unwrap_or_else(|_| r.path.clone());
                let mut escaped = String::new();
                for c in path.to_string_lossy().chars() {
                    if matches!(c, '\\' | '\n' | '\r') {
                        escaped.push('\\');
                    }
                    escaped.push(c);
                }
                out.push_str(&format!("{oid} {escaped}\n"));
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Every path beneath each root that a restore walks (deepest first), not following
    /// links; in a tablespace's directory only its version directories are PostgreSQL's.
    pub fn tree(&self) -> Result<Vec<(usize, String, Node)>> {
        let mut out = Vec::new();
        for (i, r) in self.roots.iter().enumerate() {
            let dir = self.dir(i);
            let only_versions = matches!(r.kind, Kind::Tablespace { .. });
            walk(dir, "", &r.path, only_versions, &mut out, i)?;
        }
        Ok(out)
    }

    /// With --delta: what the backup does not have would confuse PostgreSQL (a dropped
    /// relation's file, an old backup_label, stale WAL).
    pub fn remove_unwanted(&self, wanted: &HashSet<(usize, String)>) -> Result<()> {
        for (root, rel, node) in self.tree()? {
            if wanted.contains(&(root, rel.clone())) {
                continue;
            }
            if root == 0 && self.roots.iter().any(|r| r.prefix == rel) {
                continue;
            }
            let dir = self.dir(root);
            if node == Node::Dir {
                let _ = dir.remove_dir(&rel);
            } else {
                dir.remove_file(&rel)
                    .map_err(|e| Error::local_io(self.display(root, &rel), e))?;
            }
        }
        Ok(())
    }

    /// fsyncs a directory beneath its root ("." for the root itself).
    pub fn sync_dir(&self, root: usize, rel: &str) -> Result<()> {
        let err = |e| Error::local_io(self.display(root, rel), e);
        let rel = if rel.is_empty() { "." } else { rel };
        // Opened for reading: cap-std's directory handles (O_PATH) cannot be fsynced.
        self.dir(root)
            .open_with(rel, OpenOptions::new().read(true))
            .map_err(err)?
            .into_std()
            .sync_all()
            .map_err(err)
    }

    /// Every root, for syncing each and the directory that holds it.
    pub fn roots(&self) -> impl Iterator<Item = (usize, &Path)> {
        self.roots
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.path.as_path()))
    }

    /// Run as root, everything restored belongs to `uid:gid`, links themselves included
    /// (never what they point at).
    pub fn chown(&self, uid: u32, gid: u32) -> Result<()> {
        use rustix::fs::{AtFlags, Gid, Uid, chownat};
        let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        for (i, r) in self.roots.iter().enumerate() {
            chownat(self.dir(i), ".", u, g, AtFlags::empty())
                .map_err(|e| Error::local_io(&r.path, e.into()))?;
        }
        for (root, rel, _) in self.tree()? {
            chownat(
                self.dir(root),
                rel.as_str(),
                u,
                g,
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::local_io(self.display(root, &rel), e.into()))?;
        }
        Ok(())
    }
}

pub(super) fn mode(m: u32) -> Permissions {
    Permissions::from_std(std::fs::Permissions::from_mode(m))
}

/// Collects `(root, path, node)` beneath `root_dir`, children before their directory.
fn walk(
    root_dir: &Dir,
    rel: &str,
    shown: &Path,
    only_versions: bool,
    out: &mut Vec<(usize, String, Node)>,
    root: usize,
) -> Result<()> {
    let listing = if rel.is_empty() {
        root_dir.entries()
    } else {
        root_dir.read_dir(rel)
    }
    .map_err(|e| Error::local_io(shown.join(rel), e))?;
    for e in listing {
        let e = e.map_err(|e| Error::local_io(shown.join(rel), e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if only_versions && rel.is_empty() && !datadir::is_version_dir(&name) {
            continue;
        }
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ft = e
            .file_type()
            .map_err(|e| Error::local_io(shown.join(&path), e))?;
        if ft.is_dir() {
            walk(root_dir, &path, shown, false, out, root)?;
        }
        let node = if ft.is_dir() {
            Node::Dir
        } else if ft.is_file() {
            Node::File
        } else {
            Node::Other
        };
        out.push((root, path, node));
    }
    Ok(())
}
