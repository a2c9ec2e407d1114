//! What a backup manifest may ask a restore to create in a data directory, checked before
//! anything is written.
//!
//! A manifest comes from the repository, which anyone who can write the bucket (or, in an
//! encrypted repository, any database host holding the recipient) can plant objects in,
//! and restores run as root. So a manifest's word is checked, not followed: paths are
//! relative and made of normal components only; links exist only where PostgreSQL makes
//! them (`pg_tblspc/<oid>` for a tablespace; a `pg_wal` on its own disk is recorded as a
//! directory); nothing lies below a file or a link other than a tablespace's contents; and modes are reduced to those
//! PostgreSQL itself creates (`pg_dir_create_mode`: 0700, or 0750 with group access), so
//! no setuid, setgid or sticky bit ever reaches the disk.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::error::Error;
use crate::repo::manifest::Entry;

/// Longest path accepted (Linux's `PATH_MAX`).
const PATH_MAX: usize = 4096;

/// Why an entry was refused: its path and the reason, for a message that names both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for BadEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {:?}: {}", self.path, self.reason)
    }
}

/// A relative path of normal components: not empty, not absolute, no `.`, `..` or empty
/// component, no NUL, at most `PATH_MAX` bytes.
pub fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > PATH_MAX {
        return Err("path longer than PATH_MAX");
    }
    if path.contains('\0') {
        return Err("path contains a NUL byte");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("path has an empty, '.' or '..' component");
    }
    Ok(())
}

/// `pg_tblspc/<oid>`: where PostgreSQL keeps the link to a tablespace's directory.
pub fn tablespace_oid(path: &str) -> Option<u32> {
    let oid = path.strip_prefix("pg_tblspc/")?;
    if oid.is_empty() || oid.len() > 10 || !oid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    oid.parse().ok()
}

/// `pg_tblspc/<oid>/rest` → (`pg_tblspc/<oid>`, `rest`); `pg_tblspc/<oid>` → (it, "").
pub fn tablespace_split(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix("pg_tblspc/")?;
    let (oid, rest) = after.split_once('/').unwrap_or((after, ""));
    let link = &path[..path.len() - after.len() + oid.len()];
    tablespace_oid(link).map(|_| (link, rest))
}

/// `PG_<major>_<catversion>`: the one directory PostgreSQL creates in a tablespace.
pub fn is_version_dir(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("PG_") else {
        return false;
    };
    let Some((major, cat)) = rest.split_once('_') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(cat)
}

/// Checks every entry of a manifest: the first bad one is returned.
pub fn check_entries(entries: &[Entry]) -> Result<(), BadEntry> {
    let bad = |path: &str, reason: &str| BadEntry {
        path: path.chars().take(200).collect(),
        reason: reason.to_string(),
    };
    // Every path with what it is, to check what lies above each entry.
    let mut kinds: HashMap<&str, &Entry> = HashMap::with_capacity(entries.len());
    for e in entries {
        let path = e.path();
        check_relative_path(path).map_err(|r| bad(path, r))?;
        if kinds.insert(path, e).is_some() {
            return Err(bad(path, "listed twice"));
        }
        if let Entry::Symlink { target, .. } = e {
            // pg_wal on its own disk is recorded as a directory (bb-restore --waldir puts it
            // elsewhere on the restoring host's terms, never on the manifest's).
            if tablespace_oid(path).is_none() {
                return Err(bad(
                    path,
                    "a link outside pg_tblspc/<oid>, where PostgreSQL makes none",
                ));
            }
            let relative = target
                .strip_prefix('/')
                .ok_or_else(|| bad(path, "link target is not an absolute path"))?;
            check_relative_path(relative).map_err(|r| bad(path, &format!("link target: {r}")))?;
        }
        // A tablespace's directory holds only PostgreSQL's version directory
        // (`PG_<major>_<catversion>`), so a planted manifest can't name a system file below
        // whatever directory its link points at.
        if let Some((link, rest)) = tablespace_split(path)
            && !rest.is_empty()
            && !is_version_dir(rest.split('/').next().unwrap_or_default())
        {
            return Err(bad(
                path,
                &format!("lies in tablespace {link} outside its PG_<major>_<catversion> directory"),
            ));
        }
    }
    for e in entries {
        let path = e.path();
        let mut above = path;
        while let Some((parent, _)) = above.rsplit_once('/') {
            above = parent;
            // Links exist only at pg_tblspc/<oid> (checked above), and what lies below one
            // is the tablespace's contents, written into the tablespace's directory.
            if let Some(Entry::File { .. }) = kinds.get(parent) {
                return Err(bad(path, "lies below a file"));
            }
        }
    }
    Ok(())
}

/// Files without which a restored cluster cannot start, whatever the WAL: its version
/// and its control file.
pub const NEEDED_TO_START: [&str; 2] = ["PG_VERSION", "global/pg_control"];

/// Which of [`NEEDED_TO_START`] a backup's entries lack (as regular files).
pub fn missing_to_start(entries: &[Entry]) -> Vec<&'static str> {
    NEEDED_TO_START
        .into_iter()
        .filter(|needed| {
            !entries
                .iter()
                .any(|e| matches!(e, Entry::File { .. }) && e.path() == *needed)
        })
        .collect()
}

/// `--tablespace-mapping OLDDIR=NEWDIR`, pg_basebackup's spelling: the tablespace whose
/// directory was OLDDIR is restored into NEWDIR (`\=` is a literal `=` in either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceMapping {
    pub old: PathBuf,
    pub new: PathBuf,
}

impl std::str::FromStr for TablespaceMapping {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Usage(format!("bad tablespace mapping {s:?}: {why}"));
        let (mut old, mut new, mut seen) = (String::new(), String::new(), false);
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            let c = match (c, chars.clone().next()) {
                ('\\', Some('=')) => {
                    chars.next();
                    '='
                }
                ('=', _) if seen => return Err(bad("more than one unescaped '='")),
                ('=', _) => {
                    seen = true;
                    continue;
                }
                (c, _) => c,
            };
            if seen { new.push(c) } else { old.push(c) }
        }
        if !seen {
            return Err(bad("must be OLDDIR=NEWDIR"));
        }
        let absolute = |p: &str, which: &str| -> Result<PathBuf, Error> {
            let relative = p
                .strip_prefix('/')
                .ok_or_else(|| bad(&format!("{which} is not an absolute path")))?;
            let relative = relative.trim_end_matches('/');
            check_relative_path(relative).map_err(|r| bad(&format!("{which}: {r}")))?;
            Ok(PathBuf::from(format!("/{relative}")))
        };
        Ok(TablespaceMapping {
            old: absolute(&old, "OLDDIR")?,
            new: absolute(&new, "NEWDIR")?,
        })
    }
}

/// The mode a restored directory gets: 0750 when the backup's had group read access
/// (a cluster initialised with `--allow-group-access`), else 0700.
pub fn dir_mode(stored: u32) -> u32 {
    if stored & 0o040 != 0 { 0o750 } else { 0o700 }
}

/// The mode a restored file gets: 0640 when the backup's had group read access, else 0600.
pub fn file_mode(stored: u32) -> u32 {
    if stored & 0o040 != 0 { 0o640 } else { 0o600 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(p: &str) -> Entry {
        Entry::Dir {
            path: p.into(),
            mode: 0o700,
        }
    }
    fn file(p: &str) -> Entry {
        Entry::file(p.into(), 0o600, 0, 0, vec![])
    }
    fn link(p: &str, t: &str) -> Entry {
        Entry::Symlink {
            path: p.into(),
            target: t.into(),
        }
    }

    #[test]
    fn a_real_data_directory_passes() {
        let ok = [
            dir("base"),
            dir("base/1"),
            file("base/1/1259"),
            dir("pg_tblspc"),
            link("pg_tblspc/16384", "/srv/ts1"),
            dir("pg_tblspc/16384/PG_15_202209061"),
            file("pg_tblspc/16384/PG_15_202209061/5/16385"),
            dir("pg_wal"),
            dir("pg_wal/archive_status"),
            file("PG_VERSION"),
        ];
        assert_eq!(check_entries(&ok), Ok(()));
    }

    #[test]
    fn escapes_and_planted_links_are_refused() {
        let cases: [(Vec<Entry>, &str); 10] = [
            (vec![file("/etc/cron.d/x")], "absolute path"),
            (vec![file("base/../../etc/passwd")], "'..'"),
            (vec![file("base//x")], "empty"),
            (vec![file("./x")], "'.'"),
            (vec![file("")], "empty path"),
            (vec![file("a\0b")], "NUL"),
            (
                vec![link("base/1", "/etc"), file("base/1/passwd")],
                "outside pg_tblspc",
            ),
            (vec![link("pg_wal", "/etc")], "outside pg_tblspc"),
            (vec![file("base"), file("base/x")], "below a file"),
            (vec![file("x"), file("x")], "listed twice"),
        ];
        for (entries, why) in cases {
            let e = check_entries(&entries).unwrap_err();
            assert!(e.reason.contains(why), "{e} for {entries:?}");
        }
        let e = check_entries(&[link("pg_tblspc/1", "relative/dir")]).unwrap_err();
        assert!(e.reason.contains("absolute"), "{e}");
        let e = check_entries(&[link("pg_tblspc/1", "/srv/../etc")]).unwrap_err();
        assert!(e.reason.contains("'..'"), "{e}");
        assert_eq!(tablespace_oid("pg_tblspc/16384"), Some(16384));
        assert_eq!(tablespace_oid("pg_tblspc/16384/x"), None);
        assert_eq!(tablespace_oid("pg_tblspc/99999999999"), None);
    }

    #[test]
    fn tablespace_contents_stay_in_the_version_directory() {
        let ok = [
            link("pg_tblspc/7", "/srv/ts"),
            dir("pg_tblspc/7/PG_18_202506291"),
            file("pg_tblspc/7/PG_18_202506291/5/1"),
        ];
        assert_eq!(check_entries(&ok), Ok(()));
        for planted in [
            "pg_tblspc/7/cron.d",
            "pg_tblspc/7/PG_x_1",
            "pg_tblspc/7/PG_15_",
        ] {
            let e = check_entries(&[link("pg_tblspc/7", "/etc"), file(planted)]).unwrap_err();
            assert!(e.reason.contains("outside its PG_"), "{e}");
        }
        let e = check_entries(&[link("pg_tblspc/7", "/")]).unwrap_err();
        assert!(e.reason.contains("empty path"), "{e}");
        assert_eq!(
            tablespace_split("pg_tblspc/7/PG_1_2/x"),
            Some(("pg_tblspc/7", "PG_1_2/x"))
        );
        assert_eq!(tablespace_split("pg_tblspc/7"), Some(("pg_tblspc/7", "")));
        assert_eq!(tablespace_split("pg_tblspcx/7"), None);
        assert_eq!(tablespace_split("base/1"), None);
    }

    #[test]
    fn tablespace_mappings_parse_as_pg_basebackup_does() {
        let m: TablespaceMapping = "/srv/ts1/=/tmp/new ts".parse().unwrap();
        assert_eq!(m.old, PathBuf::from("/srv/ts1"));
        assert_eq!(m.new, PathBuf::from("/tmp/new ts"));
        let m: TablespaceMapping = "/a\\=b=/c".parse().unwrap();
        assert_eq!(m.old, PathBuf::from("/a=b"));
        for (bad, why) in [
            ("/a", "OLDDIR=NEWDIR"),
            ("/a=/b=/c", "more than one"),
            ("a=/b", "OLDDIR is not an absolute"),
            ("/a=b", "NEWDIR is not an absolute"),
            ("/a=/b/../c", "'..'"),
            ("/a=/", "empty path"),
        ] {
            let e = bad.parse::<TablespaceMapping>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_backup_without_its_control_file_cannot_start() {
        assert!(missing_to_start(&[file("PG_VERSION"), file("global/pg_control")]).is_empty());
        assert_eq!(
            missing_to_start(&[file("PG_VERSION"), dir("global/pg_control")]),
            ["global/pg_control"]
        );
    }

    #[test]
    fn modes_are_what_postgresql_creates() {
        assert_eq!(dir_mode(0o4777), 0o750);
        assert_eq!(dir_mode(0o700), 0o700);
        assert_eq!(file_mode(0o6755), 0o640);
        assert_eq!(file_mode(0o4700), 0o600);
    }
}
