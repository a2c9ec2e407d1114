//! Prefetching recovery: after fetching the segment PostgreSQL asked for, fetch the next ones
//! of the same timeline in parallel into a prefetch directory, verified, so the following
//! `restore_command` calls only rename a file into place.
//!
//! PostgreSQL asks for one segment at a time and waits for each; from object storage each
//! call is mostly round trips, and on a local disk mostly one core decompressing. Fetching
//! ahead turns both into parallel work. What is prefetched is only ever a whole segment,
//! written to a temporary file, verified against its envelope's digest and fsynced before it
//! gets its name; `.history` and `.partial` requests never come from here. Files recovery
//! won't use (another timeline, older segments, past the target) are removed on the next
//! call, and all of them by `--prefetch-cleanup`, which bb-restore sets as
//! `recovery_end_command`.

use std::fs;
use std::path::{Path, PathBuf};

use pitrkit::error::{Error, Result};
use pitrkit::storage::fs::{TempFile, sync_dir};
use pitrkit::wal::WalFileName;

/// The prefetch directory's name inside pg_wal.
pub const DIR: &str = "pitrkit-prefetch";

pub struct Prefetch {
    dir: PathBuf,
}

impl Prefetch {
    pub fn new(dir: PathBuf) -> Self {
        Prefetch { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves a prefetched `name` to `dest`; `false` when there is none.
    pub fn serve(&self, name: &WalFileName, dest: &Path) -> Result<bool> {
        let src = self.dir.join(name.to_string());
        match fs::rename(&src, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            // Another filesystem (a --prefetch-dir elsewhere): fetch normally instead.
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => return Ok(false),
            Err(e) => return Err(Error::local_io(&src, e)),
        }
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent).map_err(|e| Error::local_io(parent, e))?;
        Ok(true)
    }

    /// After `name` was found: drops what recovery has passed or left (other timelines,
    /// older segments) and temporary files of killed calls.
    pub fn forget_other_timelines_and_older(&self, name: &WalFileName) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let (tli, pos) = (name.timeline(), name.log_seg());
        for e in entries.flatten() {
            let file = e.file_name();
            let stale = match file.to_str().map(str::parse::<WalFileName>) {
                Some(Ok(n)) => n.timeline() != tli || n.log_seg() <= pos,
                _ => true,
            };
            if stale {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The next `depth` segments after `name` on its timeline that are not here yet.
    pub fn wanted_after(
        &self,
        name: &WalFileName,
        depth: usize,
        seg_size: u32,
    ) -> Vec<WalFileName> {
        let Some(segno) = name.segno(seg_size) else {
            return vec![];
        };
        if seg_size == 0 || !seg_size.is_power_of_two() {
            return vec![];
        }
        (1..=depth as u64)
            .map(|i| WalFileName::segment(name.timeline(), segno + i, seg_size))
            .filter(|n| !self.dir.join(n.to_string()).exists())
            .collect()
    }

    /// Fetches one segment ahead with `fetch` into a temporary file, publishing it under its
    /// name only when `fetch` verified it. Failures (not archived yet, an outage, damage)
    /// are left for the segment's own call, which reports them.
    pub fn fill(
        &self,
        name: &WalFileName,
        fetch: impl FnOnce(&mut TempFile) -> Result<u64>,
    ) -> Result<()> {
        if fs::create_dir_all(&self.dir).is_err() {
            return Ok(());
        }
        let target = self.dir.join(name.to_string());
        let Ok(mut tmp) = TempFile::create_beside(&target) else {
            return Ok(());
        };
        if fetch(&mut tmp).is_ok() {
            let _ = tmp.persist(&target);
        }
        Ok(())
    }

    /// Removes every prefetched file (the end of recovery).
    pub fn clear(&self) -> Result<()> {
        match fs::read_dir(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::local_io(&self.dir, e)),
            Ok(entries) => {
                for e in entries.flatten() {
                    fs::remove_file(e.path()).map_err(|err| Error::local_io(e.path(), err))?;
                }
                let _ = fs::remove_dir(&self.dir);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_recovery_can_still_use() {
        let d = tempfile::tempdir().unwrap();
        let p = Prefetch::new(d.path().join(DIR));
        fs::create_dir_all(p.dir()).unwrap();
        for n in [
            "000000010000000000000003",
            "000000010000000000000005",
            "000000010000000000000006",
            "000000020000000000000006",
            ".x.tmp",
        ] {
            fs::write(p.dir().join(n), b"x").unwrap();
        }
        let asked: WalFileName = "000000010000000000000005".parse().unwrap();
        let dest = d.path().join("RECOVERYXLOG");
        assert!(p.serve(&asked, &dest).unwrap());
        assert!(!p.serve(&asked, &dest).unwrap());
        p.forget_other_timelines_and_older(&asked);
        let mut left: Vec<String> = fs::read_dir(p.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["000000010000000000000006"]);
        let want: Vec<String> = p
            .wanted_after(&asked, 3, 16 << 20)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            want,
            ["000000010000000000000007", "000000010000000000000008"]
        );
        p.clear().unwrap();
        assert!(!p.dir().exists());
    }
}
