//! Records of files pushed ahead: the background archiver (`archiver`) pushes the files
//! PostgreSQL has marked ready before PostgreSQL asks for them, and leaves a record for
//! each, so that the later call for one returns at once.
//!
//! PostgreSQL runs `archive_command` one file at a time, with the data directory as the
//! working directory and `%p` = `pg_wal/<name>`; `pg_wal/archive_status/<name>.ready` marks
//! the files waiting. A record (`pg_wal/pitrkit-ahead/<name>.json`) is written only after
//! its file is durably in the repository, and is trusted only if it names the same
//! repository and the file still has the recorded size and xxh3-64 of each half — so a
//! crash at any point loses nothing (a missing record means one more idempotent push) and
//! never marks a file done that isn't stored. Whoever pushes a file holds its claim
//! (`<name>.lock`, an flock the kernel drops with its holder), so a call and the archiver
//! never push the same file at once: the call waits for the archiver's push and then
//! checks its record.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use pitrkit::error::{Error, Result};
use pitrkit::io::buffer::PageBuf;
use pitrkit::io::local::{TempFile, try_hold};
use pitrkit::pg::wal::WalFileName;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::PushReport;

const RECORDS: &str = "pitrkit-ahead";

/// `pg_wal/pitrkit-ahead/<name>.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    format_version: u32,
    /// The repository it was pushed to (a changed archive_command must push again).
    repo: String,
    size: u64,
    /// xxh3-64 of the file's first and second half (checked by two threads at once).
    xxh3_halves: [String; 2],
    report: PushReport,
}

/// Records of another format are not trusted (the file is pushed again, idempotently).
const RECORD_FORMAT: u32 = 2;

/// The WAL directory PostgreSQL archives from, seen from one `%p`.
pub struct Ahead {
    wal_dir: PathBuf,
    records: PathBuf,
    repo: String,
}

impl Ahead {
    /// The look-ahead context of `path`, when it lies in a directory with `archive_status`
    /// (PostgreSQL's pg_wal); `None` for a file archived by hand from elsewhere.
    pub fn beside(path: &Path, repo: &str) -> Option<Self> {
        let wal_dir = match path.parent() {
            Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
            Some(p) => p.to_path_buf(),
            None => return None,
        };
        wal_dir.join("archive_status").is_dir().then(|| Ahead {
            records: wal_dir.join(RECORDS),
            wal_dir,
            repo: repo.to_string(),
        })
    }

    fn record_path(&self, name: &WalFileName) -> PathBuf {
        self.records.join(format!("{name}.json"))
    }

    pub fn wal_dir(&self) -> &Path {
        &self.wal_dir
    }

    /// Where the archiver keeps its lock, pid file and records.
    pub fn records_dir(&self) -> &Path {
        &self.records
    }

    /// The report of an earlier push of `name`, when its record matches `path` (same
    /// repository, size and content hash). The record stays until PostgreSQL has marked the
    /// file done (see [`Ahead::clean_stale`]), so that the archiver does not push it again
    /// meanwhile; a record that does not match is removed.
    pub fn take(&self, name: &WalFileName, path: &Path) -> Result<Option<PushReport>> {
        let rp = self.record_path(name);
        let Ok(text) = fs::read(&rp) else {
            return Ok(None);
        };
        let record: Option<Record> = serde_json::from_slice(&text).ok();
        let matches = match &record {
            Some(r) if r.repo == self.repo && r.format_version == RECORD_FORMAT => {
                let meta = fs::metadata(path).map_err(|e| Error::local_io(path, e))?;
                meta.len() == r.size && halves_of(path, r.size)?.map(hex) == r.xxh3_halves
            }
            _ => false,
        };
        if !matches {
            let _ = fs::remove_file(&rp);
        }
        Ok(match (matches, record) {
            (true, Some(r)) => {
                let mut report = r.report;
                report.status = "pushed-ahead".into();
                Some(report)
            }
            _ => None,
        })
    }

    /// Whether `name` has a record (not yet checked against its file).
    pub fn has_record(&self, name: &WalFileName) -> bool {
        self.record_path(name).exists()
    }

    /// The files PostgreSQL has marked ready and that have no record yet, oldest name
    /// first.
    pub fn ready(&self) -> Vec<WalFileName> {
        let Ok(entries) = fs::read_dir(self.wal_dir.join("archive_status")) else {
            return vec![];
        };
        let mut ready: Vec<WalFileName> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".ready")?
                    .parse::<WalFileName>()
                    .ok()
            })
            .filter(|n| !self.has_record(n))
            .collect();
        ready.sort_by_key(|n| n.to_string());
        ready
    }

    /// Whether PostgreSQL still waits for `name` to be archived.
    pub fn is_ready(&self, name: &WalFileName) -> bool {
        self.wal_dir
            .join("archive_status")
            .join(format!("{name}.ready"))
            .exists()
    }

    /// The file of `name` in the WAL directory.
    pub fn wal_path(&self, name: &WalFileName) -> PathBuf {
        self.wal_dir.join(name.to_string())
    }

    /// The claim on pushing `name`, or `None` while someone else pushes it.
    pub fn claim(&self, name: &WalFileName) -> Result<Option<fs::File>> {
        let io = |e| Error::local_io(&self.records, e);
        fs::create_dir_all(&self.records).map_err(io)?;
        try_hold(&self.records.join(format!("{name}.lock"))).map_err(io)
    }

    /// The claim on `name`, waiting up to `wait` while another process (the archiver)
    /// pushes it; `None` when that push takes longer (then the caller pushes anyway: a
    /// second push of the same file is idempotent, only wasted work).
    pub fn claim_wait(
        &self,
        name: &WalFileName,
        wait: std::time::Duration,
    ) -> Result<Option<fs::File>> {
        let started = std::time::Instant::now();
        loop {
            if let Some(held) = self.claim(name)? {
                return Ok(Some(held));
            }
            if started.elapsed() > wait {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Records that `name` is durably stored, with the xxh3-64 of each half its content had
    /// while it was read for the push; called only after the store confirmed it.
    ///
    /// The record itself is not fsynced: it is written after the file is durably stored,
    /// so no crash can leave a record of something not stored, and a record lost or torn
    /// by a crash (it then fails to parse) only means one more idempotent push.
    pub fn record(&self, name: &WalFileName, report: &PushReport, halves: [u64; 2]) -> Result<()> {
        let record = Record {
            format_version: RECORD_FORMAT,
            repo: self.repo.clone(),
            size: report.bytes,
            xxh3_halves: halves.map(hex),
            report: report.clone(),
        };
        let rp = self.record_path(name);
        let io = |e| Error::local_io(&rp, e);
        fs::create_dir_all(&self.records).map_err(io)?;
        let mut tmp = TempFile::create_beside(&rp).map_err(io)?;
        tmp.write_all(&serde_json::to_vec(&record).map_err(Error::internal)?)
            .map_err(io)?;
        tmp.replace_unsynced(&rp).map_err(io)
    }

    /// Removes the records and claims of files PostgreSQL no longer waits for (marked
    /// done, or gone), and temporary files a killed process left: all of them when
    /// `writing` is false (the archiver, before it starts and after it stops: a call's own
    /// record it removes is only a hint lost), else those older than a minute.
    pub fn clean_stale(&self, writing: bool) {
        let Ok(entries) = fs::read_dir(&self.records) else {
            return;
        };
        let status = self.wal_dir.join("archive_status");
        for e in entries.flatten() {
            let file = e.file_name();
            let Some(name) = file.to_str() else { continue };
            let waiting = |wal: &str| status.join(format!("{wal}.ready")).exists();
            if let Some(wal) = name.strip_suffix(".json") {
                if !waiting(wal) {
                    let _ = fs::remove_file(e.path());
                }
            } else if let Some(wal) = name.strip_suffix(".lock") {
                // Only a claim nobody holds: nobody pushes a file that is not waiting.
                if wal.parse::<WalFileName>().is_ok()
                    && !waiting(wal)
                    && let Ok(Some(_held)) = try_hold(&e.path())
                {
                    let _ = fs::remove_file(e.path());
                }
            } else if name.ends_with(".tmp") && name.starts_with('.') {
                let old = e.metadata().ok().and_then(|m| m.modified().ok());
                // A temporary file of a record being written now is young.
                if !writing || old.is_some_and(|t| t.elapsed().unwrap_or_default().as_secs() > 60) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

/// A reader that hashes (xxh3-64) what passes through it: the first half of `len` bytes
/// and the rest separately, as [`halves_of`] checks them.
pub struct Hashing<R> {
    inner: R,
    hash: [Xxh3; 2],
    /// Bytes still to go into the first half's hash.
    first_left: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R, len: u64) -> Self {
        Hashing {
            inner,
            hash: [Xxh3::new(), Xxh3::new()],
            first_left: len / 2,
        }
    }

    pub fn digests(&self) -> [u64; 2] {
        [self.hash[0].digest(), self.hash[1].digest()]
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let first = (n as u64).min(self.first_left) as usize;
        self.hash[0].update(&buf[..first]);
        self.hash[1].update(&buf[first..n]);
        self.first_left -= first as u64;
        Ok(n)
    }
}

fn hex(h: u64) -> String {
    format!("{h:016x}")
}

/// xxh3-64 of the first `size / 2` bytes of a file and of the rest, read by two threads at
/// once: checking a 16 MiB segment against its record costs about as much as reading half
/// of it from the page cache.
fn halves_of(path: &Path, size: u64) -> Result<[u64; 2]> {
    let f = fs::File::open(path).map_err(|e| Error::local_io(path, e))?;
    let half = size / 2;
    let hash = |from: u64, to: u64| -> std::io::Result<u64> {
        let mut h = Xxh3::new();
        let mut buf = PageBuf::new(128 << 10);
        let mut at = from;
        while at < to {
            let want = ((to - at) as usize).min(buf.len());
            match f.read_at(&mut buf[..want], at) {
                Ok(0) => break,
                Ok(n) => {
                    h.update(&buf[..n]);
                    at += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(h.digest())
    };
    let (a, b) = std::thread::scope(|s| {
        let second = s.spawn(|| hash(half, size));
        (hash(0, half), second.join())
    });
    let io = |e| Error::local_io(path, e);
    let b = b.map_err(|_| Error::internal("hashing thread panicked"))?;
    Ok([a.map_err(io)?, b.map_err(io)?])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What the push records while reading is what the later call computes, and a byte
    /// changed in either half changes it.
    #[test]
    fn recorded_halves_match_the_check_and_catch_any_change() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        for len in [0usize, 1, 7, 300_001, 1 << 20] {
            let mut data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            fs::write(&p, &data).unwrap();
            let mut h = Hashing::new(&data[..], len as u64);
            std::io::copy(&mut h, &mut std::io::sink()).unwrap();
            let recorded = h.digests();
            assert_eq!(halves_of(&p, len as u64).unwrap(), recorded, "{len}");
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len == 0 {
                    continue;
                }
                data[at] ^= 1;
                fs::write(&p, &data).unwrap();
                assert_ne!(halves_of(&p, len as u64).unwrap(), recorded, "{len} {at}");
                data[at] ^= 1;
            }
        }
    }
}
