//! Where each entry of a backup goes on this host, and writing it there without following
//! links out of the directories the user named.
//!
//! A restore has one *root* per directory it writes into: the data directory, each
//! tablespace's directory (where it was, or where `--tablespace-mapping` /
//! `--tablespace-mapping-all` put it) and, with `--waldir`, the WAL directory. Every manifest
//! path is routed to one root (`pg_tblspc/<oid>/…` to its tablespace, `pg_wal/…` to the WAL
//! directory) and opened beneath it through a directory handle (`cap-std`), so neither a
//! planted manifest nor a link already present in a reused directory (`--delta`) can make
//! a write land outside. The links PostgreSQL needs (`pg_tblspc/<oid>`, `pg_wal`) are made
//! here, pointing where this host says, never where the manifest says.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pg::datadir::{self, TablespaceMapping};
use crate::repo::manifest::{BackupManifest, Entry};
use cap_std::fs::Dir;

mod beneath;

use beneath::mode;

/// What a path found beneath a root is (links are never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Dir,
    File,
    Other,
}

/// What a root is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    DataDir,
    /// A tablespace: its oid and where the backed-up cluster had it.
    Tablespace {
        oid: u32,
        original: PathBuf,
    },
    WalDir,
}

#[derive(Debug)]
struct Root {
    kind: Kind,
    /// The manifest path it stands for: "" (data directory), `pg_tblspc/<oid>`, `pg_wal`.
    prefix: String,
    /// Where it is on this host (absolute for everything but a relative --pgdata).
    path: PathBuf,
    /// Opened once the directories are prepared.
    dir: Option<Dir>,
}

/// The roots of one restore; index 0 is the data directory.
#[derive(Debug)]
pub struct Layout {
    roots: Vec<Root>,
}

/// A manifest path resolved to a root and a path beneath it.
pub struct Place<'a> {
    pub root: usize,
    pub rel: &'a str,
}

/// Renders a path with a `--tablespace-mapping`-style absolute form for comparisons.
fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::local_io(p, e))
}

impl Layout {
    /// Decides every root from the manifest and the flags, refusing what cannot be right
    /// (a mapping that matches no tablespace of this backup, two roots in one place, one
    /// inside another) before anything is written.
    pub fn plan(
        m: &BackupManifest,
        pgdata: &Path,
        mappings: &[TablespaceMapping],
        all_into: Option<&Path>,
        waldir: Option<&Path>,
    ) -> Result<Layout> {
        let mut roots = vec![Root {
            kind: Kind::DataDir,
            prefix: String::new(),
            path: pgdata.to_path_buf(),
            dir: None,
        }];
        let mut used = vec![false; mappings.len()];
        for e in &m.entries {
            let Entry::Symlink { path, target } = e else {
                continue;
            };
            let Some(oid) = datadir::tablespace_oid(path) else {
                continue;
            };
            let original = PathBuf::from(target.trim_end_matches('/'));
            let mapped = mappings.iter().position(|t| t.old == original);
            let place = match (mapped, all_into) {
                (Some(i), _) => {
                    used[i] = true;
                    mappings[i].new.clone()
                }
                (None, Some(dir)) => absolute(dir)?.join(oid.to_string()),
                (None, None) => original.clone(),
            };
            roots.push(Root {
                kind: Kind::Tablespace { oid, original },
                prefix: path.clone(),
                path: place,
                dir: None,
            });
        }
        if let Some(i) = used.iter().position(|u| !u) {
            let known: Vec<String> = roots
                .iter()
                .filter_map(|r| match &r.kind {
                    Kind::Tablespace { original, .. } => Some(original.display().to_string()),
                    _ => None,
                })
                .collect();
            return Err(Error::Usage(format!(
                "--tablespace-mapping {}: backup {} has no tablespace there (its tablespaces: {})",
                mappings[i].old.display(),
                m.backup_id,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        if let Some(dir) = waldir {
            if !dir.is_absolute() {
                return Err(Error::Usage(format!(
                    "--waldir {}: must be an absolute path",
                    dir.display()
                )));
            }
            roots.push(Root {
                kind: Kind::WalDir,
                prefix: "pg_wal".into(),
                path: dir.to_path_buf(),
                dir: None,
            });
        }
        let layout = Layout { roots };
        layout.check_apart()?;
        Ok(layout)
    }

    /// No root may be another, or lie inside another: emptying or walking one would reach
    /// into the other.
    fn check_apart(&self) -> Result<()> {
        let abs: Vec<PathBuf> = self
            .roots
            .iter()
            .map(|r| absolute(&r.path))
            .collect::<Result<_>>()?;
        for (i, a) in abs.iter().enumerate() {
            if a.parent().is_none() {
                return Err(Error::Usage(format!(
                    "{} cannot be restored into /",
                    self.name(i)
                )));
            }
            for (j, b) in abs.iter().enumerate() {
                if i != j && a.starts_with(b) {
                    return Err(Error::Usage(format!(
                        "{} ({}) would lie inside {} ({}): give it a directory of its own{}",
                        self.name(i),
                        a.display(),
                        self.name(j),
                        b.display(),
                        match self.roots[i].kind {
                            Kind::Tablespace { .. } => " with --tablespace-mapping",
                            _ => "",
                        }
                    )));
                }
            }
        }
        Ok(())
    }

    /// A root as messages name it.
    fn name(&self, i: usize) -> String {
        match &self.roots[i].kind {
            Kind::DataDir => "the data directory".into(),
            Kind::Tablespace { oid, .. } => format!("tablespace {oid}"),
            Kind::WalDir => "the WAL directory".into(),
        }
    }

    /// Refuses, before anything is written, to restore into a directory that holds
    /// something, unless the user asked to overwrite (`--force`) or reuse (`--delta`) it.
    /// A tablespace restored where it was is, on the database host, the live cluster's.
    pub fn check_free(&self, backup: &str, overwrite: bool) -> Result<()> {
        for (i, r) in self.roots.iter().enumerate() {
            let occupied = match std::fs::read_dir(&r.path) {
                Ok(mut it) => it.next().is_some(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                    return Err(Error::invalid_input(r.path.display(), "is not a directory"));
                }
                Err(e) => return Err(Error::local_io(&r.path, e)),
            };
            if !occupied {
                continue;
            }
            if i == 0 && r.path.join("postmaster.pid").exists() {
                return Err(Error::invalid_input(
                    r.path.display(),
                    "holds postmaster.pid: stop the server first",
                ));
            }
            if overwrite {
                continue;
            }
            let why = match &r.kind {
                Kind::DataDir | Kind::WalDir => "is not empty: restore into an empty directory, or use --delta (reuse what matches) or --force (empty it)".to_string(),
                Kind::Tablespace { oid, original } if *original == r.path => format!(
                    "is where tablespace {oid} of backup {backup} was, and it is not empty (the live \
                     cluster's tablespace?): restore it elsewhere with --tablespace-mapping {}=NEWDIR \
                     (or --tablespace-mapping-all DIR), or overwrite it with --force",
                    original.display()
                ),
                Kind::Tablespace { oid, .. } => format!(
                    "is where tablespace {oid} of backup {backup} was mapped, and it is not empty: \
                     map it to an empty directory, or use --delta or --force"
                ),
            };
            return Err(Error::invalid_input(r.path.display(), why));
        }
        Ok(())
    }

    /// Creates every root (mode 0700) and, with `force`, empties it — all of the data and
    /// WAL directories, but in a tablespace's directory only PostgreSQL's
    /// `PG_<major>_<catversion>` directories — then opens each.
    pub fn prepare(&mut self, force: bool) -> Result<()> {
        for r in &mut self.roots {
            std::fs::create_dir_all(&r.path).map_err(|e| Error::local_io(&r.path, e))?;
            let dir = Dir::open_ambient_dir(&r.path, cap_std::ambient_authority())
                .map_err(|e| Error::local_io(&r.path, e))?;
            if force {
                for e in dir.entries().map_err(|e| Error::local_io(&r.path, e))? {
                    let e = e.map_err(|e| Error::local_io(&r.path, e))?;
                    let name = e.file_name();
                    if matches!(r.kind, Kind::Tablespace { .. })
                        && !datadir::is_version_dir(&name.to_string_lossy())
                    {
                        continue;
                    }
                    let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                    let p = r.path.join(&name);
                    if is_dir {
                        dir.remove_dir_all(&name)
                    } else {
                        dir.remove_file(&name)
                    }
                    .map_err(|e| Error::local_io(&p, e))?;
                }
            }
            dir.set_permissions(".", mode(0o700))
                .map_err(|e| Error::local_io(&r.path, e))?;
            r.dir = Some(dir);
        }
        Ok(())
    }

    /// Routes a manifest path: into the tablespace or WAL directory it belongs to, else
    /// the data directory. A root's own entry routes to `rel == "."`.
    pub fn place<'a>(&self, path: &'a str) -> Place<'a> {
        for (i, r) in self.roots.iter().enumerate().skip(1) {
            if path == r.prefix {
                return Place { root: i, rel: "." };
            }
            if let Some(rel) = path
                .strip_prefix(r.prefix.as_str())
                .and_then(|s| s.strip_prefix('/'))
            {
                return Place { root: i, rel };
            }
        }
        Place { root: 0, rel: path }
    }
}
