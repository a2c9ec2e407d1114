//! The background archiver: one process per data directory that keeps pushing the files
//! PostgreSQL has marked ready, several at once, so that the store's round trips overlap
//! with PostgreSQL's next calls instead of adding up on its path.
//!
//! PostgreSQL calls `archive_command` for one file at a time and waits for each: on a store
//! 25 ms away, every call would wait for its round trips. So the first call that finds no
//! archiver starts one (`wal-push --archiver-daemon`, the same arguments); from then on a
//! call usually finds its file pushed, checks the record against the file (`ahead`) and
//! returns, and a call that comes first pushes its file itself while the archiver works on
//! the next ones.
//!
//! The archiver is supervised by its directory and its postmaster:
//! - one per data directory: it holds an exclusive lock on `pitrkit-ahead/.archiver.lock`
//!   while it runs, and writes its pid and the signature of its settings beside it
//!   (`.archiver.pid`); a call whose settings differ (a changed `archive_command`, a new
//!   config file) asks it to stop (`.archiver.stop`) and the next call starts a new one;
//! - it exits when the postmaster it was started for is gone, when its own program file has
//!   been replaced (an upgrade), or when nothing has been waiting for [`IDLE`]
//!   ([`IDLE_UNWATCHED`] without a postmaster), cleaning up the records PostgreSQL no
//!   longer needs;
//! - it pushes a file only while holding that file's claim, and records it only once the
//!   store has confirmed it durably; killed at any moment, it leaves a file unrecorded (to
//!   be pushed again, idempotently) and never a record of something not stored;
//! - it does not starve the database: at most one file per CPU compresses at a time, and
//!   the segments it holds in memory are bounded by a byte budget, whatever `--jobs` is.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pitrkit::error::{Error, Result};
use pitrkit::io::local::{held_elsewhere, try_hold};
use pitrkit::pg::postmaster::Postmaster;
use pitrkit::pg::wal::WalFileName;
use pitrkit::runner::note;
use serde::{Deserialize, Serialize};

use crate::PushReport;
use crate::ahead::Ahead;

/// Held (flock) by the running archiver.
const LOCK: &str = ".archiver.lock";
/// Its pid and settings' signature.
const PID: &str = ".archiver.pid";
/// Asks it to stop.
const STOP: &str = ".archiver.stop";

/// How long the archiver waits with nothing to push before it exits.
pub const IDLE: Duration = Duration::from_secs(60);
/// The same where there is no postmaster to watch (a copy of pg_wal archived by hand): the
/// one batch of files there is is soon done.
pub const IDLE_UNWATCHED: Duration = Duration::from_secs(5);
/// How often it looks for files marked ready.
const SCAN_EVERY: Duration = Duration::from_millis(5);
/// How often it lists them while it has more queued than it can push at once.
const RESCAN_BACKLOG: Duration = Duration::from_millis(500);

/// `.archiver.pid`.
#[derive(Debug, Serialize, Deserialize)]
struct PidFile {
    pid: u32,
    signature: String,
}

/// Whether an archiver runs for this directory now.
pub fn alive(ahead: &Ahead) -> bool {
    held_elsewhere(&ahead.records_dir().join(LOCK))
}

/// Makes sure an archiver with these settings (`signature`) runs for this directory:
/// starts one when none does, and asks one with other settings to stop (the next call
/// starts its successor). Archiving does not depend on it: a failure is only a note.
pub fn ensure(ahead: &Ahead, signature: &str) {
    let dir = ahead.records_dir();
    if alive(ahead) {
        let theirs = fs::read(dir.join(PID))
            .ok()
            .and_then(|t| serde_json::from_slice::<PidFile>(&t).ok());
        if theirs.is_some_and(|p| p.signature != signature) {
            let _ = fs::write(dir.join(STOP), b"");
        }
        return;
    }
    let started = fs::create_dir_all(dir)
        .and_then(|()| pitrkit::runner::spawn_helper(&["--archiver-daemon".as_ref()]));
    if let Err(e) = started {
        note(format!("background archiver not started: {e}"));
    }
}

/// What the archiver's workers share.
#[derive(Default)]
struct Plan {
    /// Files ready and unrecorded, oldest first, not yet taken by a worker.
    queue: VecDeque<WalFileName>,
    in_flight: HashSet<WalFileName>,
    /// Files whose push failed, and when to try again (their own call may do it first).
    failed: HashMap<WalFileName, (Instant, Duration)>,
}

impl Plan {
    /// Refills the queue from a listing of the ready, unrecorded files.
    fn refill(&mut self, ready: Vec<WalFileName>) {
        let now = Instant::now();
        self.failed
            .retain(|n, (since, pause)| ready.contains(n) && now < *since + *pause);
        self.queue = ready
            .into_iter()
            .filter(|n| !self.in_flight.contains(n) && !self.failed.contains_key(n))
            .collect();
    }

    fn take(&mut self) -> Option<WalFileName> {
        let next = self.queue.pop_front()?;
        self.in_flight.insert(next);
        Some(next)
    }

    fn done(&mut self, name: WalFileName, ok: bool) {
        self.in_flight.remove(&name);
        if !ok {
            let pause = self
                .failed
                .get(&name)
                .map_or(Duration::from_secs(1), |(_, p)| {
                    (*p * 2).min(Duration::from_secs(30))
                });
            self.failed.insert(name, (Instant::now(), pause));
        }
    }
}

/// Runs the archiver until it has reason to stop (see the module's documentation), with
/// `jobs` pushes in flight. `push` pushes one file and returns its report and the xxh3-64
/// halves of what it read. Returns at once when another archiver runs.
pub fn run(
    ahead: &Ahead,
    signature: &str,
    jobs: usize,
    push: impl Fn(&WalFileName, &Path) -> Result<(PushReport, [u64; 2])> + Sync,
) -> Result<()> {
    let dir = ahead.records_dir();
    let io = |e| Error::local_io(dir, e);
    fs::create_dir_all(dir).map_err(io)?;
    let Some(lock) = try_hold(&dir.join(LOCK)).map_err(io)? else {
        return Ok(());
    };
    let _ = fs::remove_file(dir.join(STOP));
    ahead.clean_stale(false);
    let pid = PidFile {
        pid: std::process::id(),
        signature: signature.to_string(),
    };
    fs::write(
        dir.join(PID),
        serde_json::to_vec(&pid).map_err(Error::internal)?,
    )
    .map_err(io)?;
    let postmaster = Postmaster::watching(ahead.wal_dir());
    let idle = if postmaster.watched() {
        IDLE
    } else {
        IDLE_UNWATCHED
    };
    let plan = Mutex::new(Plan::default());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let Some(name) = pitrkit::io::lock(&plan).take() else {
                        std::thread::sleep(SCAN_EVERY);
                        continue;
                    };
                    let ok = push_claimed(ahead, &name, &push);
                    pitrkit::io::lock(&plan).done(name, ok);
                }
            });
        }
        let mut busy = Instant::now();
        let mut checked = Instant::now();
        let mut listed = Instant::now();
        loop {
            std::thread::sleep(SCAN_EVERY);
            // A backlog of thousands of files (an archiver that fell behind) is listed again
            // only when the queue runs short or now and then, not every few milliseconds.
            let queued = pitrkit::io::lock(&plan).queue.len();
            if queued <= 2 * jobs || listed.elapsed() >= RESCAN_BACKLOG {
                listed = Instant::now();
                let ready = ahead.ready();
                let mut p = pitrkit::io::lock(&plan);
                if !ready.is_empty() || !p.in_flight.is_empty() {
                    busy = Instant::now();
                }
                p.refill(ready);
            } else {
                busy = Instant::now();
            }
            if checked.elapsed() > Duration::from_millis(200) {
                checked = Instant::now();
                ahead.clean_stale(true);
                if dir.join(STOP).exists()
                    || !postmaster.alive()
                    || replaced()
                    || busy.elapsed() > idle
                {
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    ahead.clean_stale(false);
    let _ = fs::remove_file(dir.join(PID));
    let _ = fs::remove_file(dir.join(STOP));
    // Gone for good unless a call started another archiver meanwhile (it holds a lock of
    // its own then, on the file it created).
    let _ = fs::remove_file(dir.join(LOCK));
    drop(lock);
    let _ = fs::remove_dir(dir);
    Ok(())
}

/// Pushes `name` under its claim and records it; `false` when it could not be pushed now.
/// A file claimed by its own call, or recorded meanwhile, is left alone.
fn push_claimed(
    ahead: &Ahead,
    name: &WalFileName,
    push: &impl Fn(&WalFileName, &Path) -> Result<(PushReport, [u64; 2])>,
) -> bool {
    let claim = match ahead.claim(name) {
        Ok(Some(c)) => c,
        Ok(None) => return true,
        Err(e) => {
            note(format!("{name}: {e}"));
            return false;
        }
    };
    // Recorded by an earlier holder, or no longer waiting (PostgreSQL archived it itself).
    let path = ahead.wal_path(name);
    if ahead.has_record(name) || !path.is_file() || !ahead.is_ready(name) {
        return true;
    }
    let done = push(name, &path).and_then(|(report, halves)| ahead.record(name, &report, halves));
    drop(claim);
    match done {
        Ok(()) => true,
        Err(e) => {
            note(format!(
                "{name}: push ahead failed, left for its own call: {e}"
            ));
            false
        }
    }
}

/// Whether this program's file has been replaced since it started (an upgrade): the
/// archiver then leaves the work to a successor running the new code.
fn replaced() -> bool {
    fs::read_link("/proc/self/exe").is_ok_and(|p| p.to_string_lossy().ends_with(" (deleted)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(n: u64) -> WalFileName {
        WalFileName::segment(pitrkit::pg::wal::TimelineId(1), n, 16 << 20)
    }

    #[test]
    fn a_failed_file_waits_and_in_flight_files_are_not_queued_twice() {
        let mut plan = Plan::default();
        plan.refill(vec![seg(3), seg(4), seg(5)]);
        assert_eq!(plan.take(), Some(seg(3)));
        assert_eq!(plan.take(), Some(seg(4)));
        plan.refill(vec![seg(3), seg(4), seg(5), seg(6)]);
        assert_eq!(plan.queue, [seg(5), seg(6)]);
        plan.done(seg(3), false);
        plan.done(seg(4), true);
        plan.refill(vec![seg(3), seg(5), seg(6)]);
        // 3 failed a moment ago: not before its pause is over.
        assert_eq!(plan.queue, [seg(5), seg(6)]);
        plan.failed.insert(seg(3), (Instant::now(), Duration::ZERO));
        plan.refill(vec![seg(3), seg(5)]);
        assert_eq!(plan.queue, [seg(3), seg(5)]);
        assert!(plan.failed.is_empty());
    }
}
