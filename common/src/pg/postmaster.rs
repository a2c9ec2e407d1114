//! The postmaster a helper process serves: the prefetcher (wal-fetch) and the background
//! archiver (wal-push) outlive the call that started them, and must not outlive the server
//! they work for, or keep working for one that has been replaced.

use std::fs;
use std::path::{Path, PathBuf};

/// The postmaster of a data directory, seen at a start and watched afterwards.
pub struct Postmaster {
    pid_file: PathBuf,
    pid: Option<String>,
}

impl Postmaster {
    /// The postmaster of the data directory a helper was started in: PostgreSQL runs
    /// `archive_command` and `restore_command` there, and helpers keep their caller's working
    /// directory; else the data directory `wal_dir` (pg_wal) lies in.
    pub fn watching(wal_dir: &Path) -> Self {
        let beside = wal_dir.parent().map(|d| d.join("postmaster.pid"));
        let pid_file = [Some(PathBuf::from("postmaster.pid")), beside]
            .into_iter()
            .flatten()
            .find(|p| p.is_file())
            .unwrap_or_default();
        let pid = Self::read(&pid_file);
        Postmaster { pid_file, pid }
    }

    fn read(pid_file: &Path) -> Option<String> {
        let text = fs::read_to_string(pid_file).ok()?;
        text.lines().next().map(|l| l.trim().to_string())
    }

    /// False once the postmaster seen at the start has gone or been replaced (its pid no
    /// longer in /proc: Linux); always true when there was none to watch (a copy of pg_wal
    /// archived by hand: then only the helper's own limits end it).
    pub fn alive(&self) -> bool {
        let Some(pid) = &self.pid else {
            return true;
        };
        Self::read(&self.pid_file).as_ref() == Some(pid) && Path::new("/proc").join(pid).exists()
    }

    /// Whether there was a postmaster to watch.
    pub fn watched(&self) -> bool {
        self.pid.is_some()
    }
}
