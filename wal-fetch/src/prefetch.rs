//! Prefetching recovery: a prefetcher process keeps the next segments of the timeline
//! recovery is on fetched, verified, in a prefetch directory, so that `restore_command`
//! calls only rename a file into place while the fetching overlaps PostgreSQL's replay.
//!
//! PostgreSQL asks for one segment at a time and replays it before asking for the next:
//! fetching inside the call (even many segments at once) leaves the store idle while
//! PostgreSQL replays and PostgreSQL idle while the call fetches. So the first call that
//! finds no prefetcher starts one (`wal-fetch --prefetch-daemon`, the same arguments)
//! before it fetches its own segment, and every call that restored a segment tells it
//! where recovery is (`.wanted`); a call whose segment is not there asks the prefetcher it
//! started to stop.
//!
//! The prefetcher is supervised by its directory and its caller:
//! - one per directory: it holds an exclusive lock on `.daemon.lock` while it runs, and
//!   calls serve from the directory only while that lock is held, so nothing a dead
//!   prefetcher left is ever used: a new prefetcher deletes whatever it finds first;
//! - each prefetched file is written to disk while it is fetched and fsynced right after it
//!   gets its name — not for the prefetcher's sake, but PostgreSQL's: it fsyncs every
//!   segment it restores, and a file already on disk makes that fsync, on recovery's
//!   critical path, nearly free; the name comes first so that when a checkpoint floods the
//!   disk, a call waits for neither the prefetcher's fsync nor the directory's;
//! - it exits, deleting everything it fetched, when `--prefetch-cleanup` asks it to (bb-restore
//!   sets that as `recovery_end_command`), when the postmaster whose data directory it
//!   works in is gone, or when recovery has not moved for [`IDLE`];
//! - it only fetches segments after the last restored one, on its timeline, at most
//!   `--prefetch` ahead, each into a temporary file verified against the object's digest
//!   before it gets its name; a missing segment is asked for again with growing pauses
//!   (the end of the archive), and nothing past it is asked for meanwhile;
//! - `.history` and `.partial` requests never come from here;
//! - once it knows where the archive ends (a missing segment, with all before it here), it
//!   fetches the last segment before it a second time and holds it unnamed until recovery
//!   has taken the first copy: PostgreSQL reads the last segment again once redo is done,
//!   and that request is then served like the others, without waiting for a download;
//! - a call that found a segment missing writes `.missing`, and a call for the same segment
//!   in the next [`MISSING_HOLD`] gets the same answer without asking the store again
//!   (PostgreSQL asks twice at the end of the archive); not on a standby, which asks again
//!   to find the segment there;
//! - the prefetcher reaches the archive's end before recovery does, and checks it as a call
//!   would (the root, and a listing for a hole): it writes `.absent` with that segment and
//!   the history files PostgreSQL asks for right after, when they are missing too (the next
//!   timeline's, and this one's: timeline 1 never has one). So the end of recovery costs no
//!   round trip; through 25 ms of distance those requests took ~0.3 s. While recovery has
//!   not got there it checks again at least every [`ABSENT_RECHECK`], so that the note is
//!   never older than [`MISSING_HOLD`]. Not on a standby either.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pitrkit::error::{Error, Result};
use pitrkit::io::local::TempFile;
use pitrkit::pg::postmaster::Postmaster;
use pitrkit::pg::wal::WalFileName;

/// The prefetch directory's name inside pg_wal.
pub const DIR: &str = "pitrkit-prefetch";
/// Held (flock) by the running prefetcher.
const LOCK: &str = ".daemon.lock";
/// The last segment a call restored: where recovery is.
const WANTED: &str = ".wanted";
/// Asks the prefetcher to stop.
const STOP: &str = ".stop";
/// The last segment a call found missing from the repository.
const MISSING: &str = ".missing";
/// What the prefetcher found missing at the archive's end: a segment, and the history files
/// of its timeline and the next when those are missing too (one name per line).
const ABSENT: &str = ".absent";

/// How long a call's or the prefetcher's "missing" answers the same question again.
const MISSING_HOLD: Duration = Duration::from_secs(2);
/// How often, at most, the prefetcher asks again for a missing segment when it notes the
/// archive's end (it then keeps `.absent` fresh); on a standby the pauses grow to 8 s.
const ABSENT_RECHECK: Duration = Duration::from_secs(1);

/// How long the prefetcher waits for recovery to ask for another segment before it exits.
pub const IDLE: Duration = Duration::from_secs(60);
/// How long a call waits for a segment the prefetcher is fetching right now.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);

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

    fn path(&self, name: &WalFileName) -> PathBuf {
        self.dir.join(name.to_string())
    }

    /// Whether a prefetcher holds this directory's lock now.
    pub fn daemon_alive(&self) -> bool {
        pitrkit::io::local::held_elsewhere(&self.dir.join(LOCK))
    }

    /// Moves a prefetched `name` to `dest`, waiting for it while the prefetcher is fetching
    /// it; `false` when there is none (then the call fetches it itself).
    pub fn serve(&self, name: &WalFileName, dest: &Path) -> Result<bool> {
        let src = self.path(name);
        let started = Instant::now();
        loop {
            // Looked at before the rename: a fetch that completes in between is served.
            let flying = self.in_flight(name);
            match fs::rename(&src, dest) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Another filesystem (a --prefetch-dir elsewhere): fetch normally instead.
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => return Ok(false),
                Err(e) => return Err(Error::local_io(&src, e)),
            }
            if !flying || started.elapsed() > IN_FLIGHT_WAIT {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether a temporary file of `name` is being written (by a live prefetcher).
    fn in_flight(&self, name: &WalFileName) -> bool {
        let prefix = format!(".{name}.");
        fs::read_dir(&self.dir).is_ok_and(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|f| f.starts_with(&prefix))
            })
        }) && self.daemon_alive()
    }

    /// Tells the prefetcher that recovery has restored `name`.
    pub fn note_restored(&self, name: &WalFileName) -> std::io::Result<()> {
        self.note(WANTED, name)
    }

    /// Records that the repository does not have `name` (see [`Prefetch::known_missing`]).
    pub fn note_missing(&self, name: &WalFileName) -> std::io::Result<()> {
        self.note(MISSING, name)
    }

    /// Whether a call or the prefetcher found `name` missing within [`MISSING_HOLD`], while
    /// this directory's prefetcher runs (nothing from a dead one is trusted).
    pub fn known_missing(&self, name: &WalFileName) -> bool {
        let noted = |file: &str| {
            let path = self.dir.join(file);
            fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < MISSING_HOLD))
                && Self::read_notes(&path).contains(name)
        };
        (noted(MISSING) || noted(ABSENT)) && self.daemon_alive()
    }

    /// Writes a one-name note (`.wanted`, `.missing`) atomically.
    fn note(&self, file: &str, name: &WalFileName) -> std::io::Result<()> {
        self.note_all(file, std::slice::from_ref(name))
    }

    /// Writes a note of names, one per line, atomically.
    fn note_all(&self, file: &str, names: &[WalFileName]) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let target = self.dir.join(file);
        let tmp = self.dir.join(format!("{file}.{}", std::process::id()));
        let text: String = names.iter().map(|n| format!("{n}\n")).collect();
        fs::write(&tmp, text)?;
        fs::rename(&tmp, &target)
    }

    fn read_note(path: &Path) -> Option<WalFileName> {
        Self::read_notes(path).first().copied()
    }

    /// The names in a note; none if it is missing or not all names (a note is at most a
    /// few names: anything longer is not one of ours).
    fn read_notes(path: &Path) -> Vec<WalFileName> {
        let Ok(text) = fs::read_to_string(path) else {
            return Vec::new();
        };
        if text.len() > 256 {
            return Vec::new();
        }
        text.lines()
            .map(|l| l.trim().parse())
            .collect::<Result<Vec<_>>>()
            .unwrap_or_default()
    }

    fn wanted(&self) -> Option<WalFileName> {
        Self::read_note(&self.dir.join(WANTED))
    }

    /// Removes prefetched segments recovery has passed or left (other timelines, older
    /// segments); the prefetcher's own state and in-flight files stay.
    fn forget_before(&self, name: &WalFileName) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let (tli, pos) = (name.timeline(), name.log_seg());
        for e in entries.flatten() {
            let file = e.file_name();
            if let Some(Ok(n)) = file.to_str().map(str::parse::<WalFileName>)
                && (n.timeline() != tli || n.log_seg() < pos)
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Removes every file but the lock (which the caller may hold).
    fn remove_contents(&self) -> Result<()> {
        match fs::read_dir(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::local_io(&self.dir, e)),
            Ok(entries) => {
                for e in entries.flatten() {
                    if e.file_name() != LOCK {
                        match fs::remove_file(e.path()) {
                            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                                return Err(Error::local_io(e.path(), err));
                            }
                            _ => {}
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Asks a running prefetcher to stop (it removes what it fetched), without waiting.
    pub fn ask_to_stop(&self) {
        let _ = fs::create_dir_all(&self.dir).and_then(|()| fs::write(self.dir.join(STOP), b""));
    }

    /// The end of recovery: stops the prefetcher (waiting up to `wait` for it) and removes
    /// the directory with everything in it.
    pub fn clear(&self, wait: Duration) -> Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        if self.daemon_alive() {
            let _ = fs::write(self.dir.join(STOP), b"");
            let started = Instant::now();
            while self.daemon_alive() && started.elapsed() < wait {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.remove_contents()?;
        let _ = fs::remove_file(self.dir.join(LOCK));
        let _ = fs::remove_dir(&self.dir);
        Ok(())
    }

    /// Runs the prefetcher until it has reason to stop (see the module's documentation).
    /// `fetch` fetches and verifies one file into a temporary file, returning its length, or
    /// says it is not there after the checks a call makes (`Error::NotFound`); `first` is
    /// the segment the starting call restored; `seg_size` the segment size if known, else
    /// the first segment fetched tells; `note_end` whether to note the archive's end in
    /// `.absent` (not on a standby). Returns at once when another prefetcher runs.
    pub fn run_daemon(
        &self,
        first: WalFileName,
        seg_size: Option<u32>,
        depth: usize,
        jobs: usize,
        note_end: bool,
        fetch: impl Fn(&WalFileName, &mut TempFile) -> Result<u64> + Sync,
    ) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::local_io(&self.dir, e))?;
        let lock_path = self.dir.join(LOCK);
        let Some(lock) =
            pitrkit::io::local::try_hold(&lock_path).map_err(|e| Error::local_io(&lock_path, e))?
        else {
            return Ok(());
        };
        // A `.stop` written in the last seconds is for this prefetcher: the call that
        // started it found no segment to go on from before it got here.
        let fresh_stop = fs::metadata(self.dir.join(STOP))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(10));
        // Whatever a dead prefetcher left (files, a stale `.stop`) is not to be trusted, and
        // calls serve from here as soon as the lock is held: start empty, or not at all.
        self.remove_contents()?;
        if !fresh_stop {
            self.fetch_ahead(first, seg_size, depth, jobs, note_end, fetch);
        }
        self.remove_contents()?;
        drop(lock);
        // Gone for good unless a call started another prefetcher meanwhile.
        if !self.daemon_alive() {
            let _ = fs::remove_file(&lock_path);
            let _ = fs::remove_dir(&self.dir);
        }
        Ok(())
    }

    /// The prefetcher's work: `jobs` workers keep up to `depth` segments after the wanted
    /// one fetched, until `.stop`, the postmaster's end or [`IDLE`].
    fn fetch_ahead(
        &self,
        first: WalFileName,
        seg_size: Option<u32>,
        depth: usize,
        jobs: usize,
        note_end: bool,
        fetch: impl Fn(&WalFileName, &mut TempFile) -> Result<u64> + Sync,
    ) {
        let postmaster = Postmaster::watching(self.dir.parent().unwrap_or(Path::new(".")));
        let mut plan = Plan::new(first, seg_size);
        if note_end {
            plan.max_pause = ABSENT_RECHECK;
        }
        let state = Mutex::new(plan);
        // The second copy of the archive's last segment, until recovery has taken the first.
        let held: Mutex<Option<(WalFileName, TempFile)>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..jobs.max(1) {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let next = match pitrkit::io::lock(&state).claim(depth) {
                            Some(Claim::Ahead(next)) => next,
                            Some(Claim::Again(last)) => {
                                if let Ok((tmp, _)) =
                                    self.fetch_unnamed(&last, |tmp| fetch(&last, tmp))
                                {
                                    *pitrkit::io::lock(&held) = Some((last, tmp));
                                }
                                continue;
                            }
                            None => {
                                std::thread::sleep(Duration::from_millis(3));
                                continue;
                            }
                        };
                        let fetched = self.fill(&next, |tmp| fetch(&next, tmp));
                        let end = matches!(fetched, Err(Error::NotFound { .. }));
                        let lowest = {
                            let mut plan = pitrkit::io::lock(&state);
                            plan.done(next, fetched.ok());
                            plan.lowest_missing() == Some(next)
                        };
                        if end && note_end && lowest {
                            self.note_end(next, &fetch);
                        }
                    }
                });
            }
            let mut moved = Instant::now();
            let mut checked = Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(2));
                if let Some(w) = self.wanted() {
                    let mut plan = pitrkit::io::lock(&state);
                    if w != plan.wanted {
                        plan.moved_to(w);
                        drop(plan);
                        self.forget_before(&w);
                        moved = Instant::now();
                    }
                    self.publish_held(&held, &w);
                }
                // `.stop` is looked for at every turn: recovery's end (recovery_end_command)
                // waits for this process to be gone, on PostgreSQL's critical path.
                if self.dir.join(STOP).exists() {
                    break;
                }
                if checked.elapsed() > Duration::from_millis(200) {
                    checked = Instant::now();
                    if !postmaster.alive() || moved.elapsed() > IDLE {
                        break;
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }

    /// Fetches one segment with `fetch` into a temporary file, publishing it under its name
    /// only when `fetch` verified it; its length if it did.
    fn fill(
        &self,
        name: &WalFileName,
        fetch: impl FnOnce(&mut TempFile) -> Result<u64>,
    ) -> Result<u64> {
        let (tmp, len) = self.fetch_unnamed(name, fetch)?;
        let target = self.path(name);
        tmp.publish_then_sync(&target)
            .map_err(|e| Error::local_io(&target, e))?;
        Ok(len)
    }

    /// Fetches `name` with `fetch` into a temporary file beside its place, not yet named (a
    /// second copy stays so: see [`Prefetch::publish_held`]), and its length.
    fn fetch_unnamed(
        &self,
        name: &WalFileName,
        fetch: impl FnOnce(&mut TempFile) -> Result<u64>,
    ) -> Result<(TempFile, u64)> {
        let target = self.path(name);
        let mut tmp = TempFile::create_beside(&target).map_err(|e| Error::local_io(&target, e))?;
        let len = fetch(&mut tmp)?;
        Ok((tmp, len))
    }

    /// Names the held copy of the archive's last segment once recovery has taken the first
    /// (it asks for it again when redo is done); drops it once recovery has gone past it.
    fn publish_held(&self, held: &Mutex<Option<(WalFileName, TempFile)>>, wanted: &WalFileName) {
        let mut slot = pitrkit::io::lock(held);
        let Some((name, _)) = slot.as_ref() else {
            return;
        };
        let name = *name;
        if name != *wanted {
            if name.timeline() != wanted.timeline() || name.log_seg() < wanted.log_seg() {
                *slot = None;
            }
            return;
        }
        let target = self.path(&name);
        if target.exists() {
            return;
        }
        if let Some((_, tmp)) = slot.take() {
            let _ = tmp.publish_then_sync(&target);
        }
    }

    /// `segment` is not in the repository, after the checks a call makes: the archive ends
    /// before it. Notes it in `.absent`, with the history files PostgreSQL asks for next when
    /// the store does not have them either: the next timeline's (to pick the new timeline)
    /// and this one's (copied into the new one's history; timeline 1 never has one). See the
    /// module's documentation.
    fn note_end(
        &self,
        segment: WalFileName,
        fetch: &(impl Fn(&WalFileName, &mut TempFile) -> Result<u64> + Sync),
    ) {
        // The segment first: recovery may be about to ask for it.
        let _ = self.note(ABSENT, &segment);
        let tli = segment.timeline().0;
        let histories: Vec<WalFileName> = [tli.checked_add(1), Some(tli)]
            .into_iter()
            .flatten()
            .map(|t| WalFileName::History {
                tli: pitrkit::pg::wal::TimelineId(t),
            })
            .collect();
        // Both asked at once; each fetched into a temporary file that is dropped: only
        // whether it is there counts.
        let missing: Vec<bool> = std::thread::scope(|s| {
            let probes: Vec<_> = histories
                .iter()
                .map(|history| {
                    s.spawn(move || {
                        let probe = TempFile::create_beside(&self.path(history))
                            .map_err(|e| Error::local_io(self.dir(), e))
                            .and_then(|mut tmp| fetch(history, &mut tmp));
                        matches!(probe, Err(Error::NotFound { .. }))
                    })
                })
                .collect();
            probes
                .into_iter()
                .map(|p| p.join().unwrap_or(false))
                .collect()
        });
        let mut absent = vec![segment];
        absent.extend(
            histories
                .iter()
                .zip(missing)
                .filter(|(_, m)| *m)
                .map(|(h, _)| *h),
        );
        if absent.len() > 1 {
            let _ = self.note_all(ABSENT, &absent);
        }
    }
}

/// A fetch a worker is to make.
#[derive(Debug, PartialEq)]
enum Claim {
    /// A segment after the wanted one, published under its name once verified.
    Ahead(WalFileName),
    /// The archive's last segment once more, held unnamed until recovery has taken the
    /// first copy.
    Again(WalFileName),
}

/// What the prefetcher's workers share.
struct Plan {
    wanted: WalFileName,
    /// The segment size, once known (given, or told by a fetched segment).
    seg_size: Option<u32>,
    /// The archive's last segment, fetched a second time (see the module's documentation).
    again: Option<WalFileName>,
    in_flight: HashSet<WalFileName>,
    /// Fetched by this prefetcher and not yet passed by recovery (served or waiting).
    published: HashSet<WalFileName>,
    /// Segments the store did not give, and when to ask again.
    missing: HashMap<WalFileName, (Instant, Duration)>,
    /// The longest pause before a missing segment is asked for again.
    max_pause: Duration,
}

impl Plan {
    fn new(wanted: WalFileName, seg_size: Option<u32>) -> Self {
        Plan {
            wanted,
            seg_size,
            again: None,
            in_flight: HashSet::new(),
            published: HashSet::new(),
            missing: HashMap::new(),
            max_pause: Duration::from_secs(8),
        }
    }

    /// The first segment after the wanted one that is neither here nor being fetched;
    /// nothing past a segment that is missing (and not yet due to be asked for again).
    /// Once the archive's end is known, the segment before it again, once.
    fn claim(&mut self, depth: usize) -> Option<Claim> {
        let seg_size = self.seg_size();
        let segno = self.wanted.segno(seg_size)?;
        let tli = self.wanted.timeline();
        if let Some(last) = self.last_before_end(seg_size)
            && self.again != Some(last)
        {
            self.again = Some(last);
            return Some(Claim::Again(last));
        }
        for i in 1..=depth as u64 {
            let n = WalFileName::segment(tli, segno + i, seg_size);
            if self.in_flight.contains(&n) {
                continue;
            }
            if let Some((since, pause)) = self.missing.get(&n)
                && since.elapsed() < *pause
            {
                return None;
            }
            if self.published.contains(&n) {
                continue;
            }
            self.in_flight.insert(n);
            return Some(Claim::Ahead(n));
        }
        None
    }

    /// The segment size, or until a segment says, initdb's default: it only picks which
    /// names come next.
    fn seg_size(&self) -> u32 {
        self.seg_size
            .unwrap_or(pitrkit::pg::wal::DEFAULT_SEGMENT_SIZE)
    }

    /// The segment before the archive's end, once that is known: before the first segment
    /// after the wanted one that is missing while all between are here.
    fn last_before_end(&self, seg_size: u32) -> Option<WalFileName> {
        let end = self
            .missing
            .keys()
            .filter(|m| self.first_missing(**m))
            .min()?;
        let segno = end.segno(seg_size)?.checked_sub(1)?;
        Some(WalFileName::segment(end.timeline(), segno, seg_size))
    }

    /// The lowest segment after the wanted one that the store did not give: the one recovery
    /// will find missing first, whether or not those before it are here yet (noting a later
    /// one instead would only leave the first to be asked for).
    fn lowest_missing(&self) -> Option<WalFileName> {
        self.missing.keys().min().copied()
    }

    /// Whether `n` is the first segment after the wanted one that this prefetcher does not
    /// have: where recovery will find the archive's end if `n` is missing (not a segment
    /// further on, missing while one before it is still being fetched, nor the wanted one
    /// fetched again).
    fn first_missing(&self, n: WalFileName) -> bool {
        let seg_size = self.seg_size();
        let (Some(from), Some(to)) = (self.wanted.segno(seg_size), n.segno(seg_size)) else {
            return false;
        };
        let tli = self.wanted.timeline();
        n.timeline() == tli
            && to > from
            && (from + 1..to).all(|i| {
                self.published
                    .contains(&WalFileName::segment(tli, i, seg_size))
            })
    }

    /// Recovery restored `w`: what lies before it (or on another timeline) is of no use.
    fn moved_to(&mut self, w: WalFileName) {
        self.wanted = w;
        let ahead = |n: &WalFileName| n.timeline() == w.timeline() && n.log_seg() > w.log_seg();
        self.published.retain(ahead);
        self.missing.retain(|n, _| ahead(n));
    }

    /// The outcome of a claimed fetch: the segment's length, or `None` if not fetched.
    fn done(&mut self, name: WalFileName, fetched: Option<u64>) {
        self.in_flight.remove(&name);
        if let Some(len) = fetched {
            if self.seg_size.is_none() {
                self.seg_size = u32::try_from(len).ok().filter(|s| s.is_power_of_two());
            }
            self.missing.remove(&name);
            self.published.insert(name);
        } else if name != self.wanted {
            // A missing segment is asked for again later, unless recovery restored it
            // itself meanwhile.
            let pause = self
                .missing
                .get(&name)
                .map_or(Duration::from_millis(250), |(_, p)| *p * 2)
                .min(self.max_pause);
            self.missing.insert(name, (Instant::now(), pause));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut left: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        left
    }

    #[test]
    fn forgets_only_what_recovery_has_passed_or_left() {
        let d = tempfile::tempdir().unwrap();
        let p = Prefetch::new(d.path().join(DIR));
        fs::create_dir_all(p.dir()).unwrap();
        for n in [
            "000000010000000000000003",
            "000000010000000000000005",
            "000000010000000000000006",
            "000000020000000000000006",
            ".000000010000000000000007.1.2.tmp",
        ] {
            fs::write(p.dir().join(n), b"x").unwrap();
        }
        let asked: WalFileName = "000000010000000000000005".parse().unwrap();
        p.note_restored(&asked).unwrap();
        assert_eq!(p.wanted(), Some(asked));
        p.forget_before(&asked);
        assert_eq!(
            names(p.dir()),
            [
                ".000000010000000000000007.1.2.tmp",
                ".wanted",
                "000000010000000000000005",
                "000000010000000000000006"
            ]
        );
        // No prefetcher holds the lock: nothing is served, whatever is there.
        let dest = d.path().join("RECOVERYXLOG");
        assert!(!p.daemon_alive());
        p.clear(Duration::ZERO).unwrap();
        assert!(!p.dir().exists());
        assert!(!dest.exists());
    }

    #[test]
    fn claims_in_order_and_stops_at_a_missing_segment() {
        let d = tempfile::tempdir().unwrap();
        let p = Prefetch::new(d.path().join(DIR));
        fs::create_dir_all(p.dir()).unwrap();
        let seg = 16 << 20;
        let w: WalFileName = "000000010000000000000005".parse().unwrap();
        let mut plan = Plan::new(w, Some(seg));
        plan.published = ["000000010000000000000006".parse().unwrap()].into();
        let n = |s: &str| -> WalFileName { s.parse().unwrap() };
        let (a, b) = (n("000000010000000000000007"), n("000000010000000000000008"));
        assert_eq!(plan.claim(4), Some(Claim::Ahead(a)));
        assert_eq!(plan.claim(4), Some(Claim::Ahead(b)));
        plan.done(a, None);
        // 7 is missing: nothing past it until its pause is over. It is where recovery will
        // find the end (6 is here); 8, in flight, would not be. 6 once more, to be held for
        // recovery's second read of the last segment, then nothing.
        assert!(plan.first_missing(a));
        assert!(!plan.first_missing(b) && !plan.first_missing(w));
        assert_eq!(
            plan.claim(4),
            Some(Claim::Again(n("000000010000000000000006")))
        );
        assert_eq!(plan.claim(4), None);
        plan.missing.insert(a, (Instant::now(), Duration::ZERO));
        assert_eq!(plan.claim(4), Some(Claim::Ahead(a)));
        plan.done(a, Some(seg.into()));
        plan.done(b, Some(seg.into()));
        assert!(plan.missing.is_empty() && plan.in_flight.is_empty());
        // Served files are not fetched again.
        assert_eq!(
            plan.claim(4),
            Some(Claim::Ahead(n("000000010000000000000009")))
        );
        plan.moved_to(b);
        assert_eq!(plan.published.len(), 0);
    }

    #[test]
    fn learns_the_segment_size_and_keeps_the_last_segment_at_the_archive_end() {
        let n = |s: &str| -> WalFileName { s.parse().unwrap() };
        let mut plan = Plan::new(n("000000010000000000000010"), None);
        let a = n("000000010000000000000011");
        assert_eq!(plan.claim(1), Some(Claim::Ahead(a)));
        // The first segment fetched says 64 MiB: 64 segments per log id from now on.
        plan.done(a, Some(64 << 20));
        plan.moved_to(n("00000001000000000000003F"));
        let next = n("000000010000000100000000");
        assert_eq!(plan.claim(1), Some(Claim::Ahead(next)));
        // The archive ends there: the wanted segment once more, then nothing.
        plan.done(next, None);
        assert_eq!(
            plan.claim(1),
            Some(Claim::Again(n("00000001000000000000003F")))
        );
        assert_eq!(plan.claim(1), None);
    }

    /// The archive ends after 7 (8 is not found, after a call's checks): the prefetcher notes
    /// 8, and the history files of this timeline and the next when the store lacks them too;
    /// a hole (a refusal other than "not found") is never noted, nor anything on a standby.
    #[test]
    fn the_archive_end_is_noted_for_the_calls_that_will_ask() {
        let n = |s: &str| -> WalFileName { s.parse().unwrap() };
        let (end, next_history, history) = (
            n("000000010000000000000008"),
            n("00000002.history"),
            n("00000001.history"),
        );
        for (case, history_stored, hole, note_end) in [
            ("end", false, false, true),
            ("history stored", true, false, true),
            ("hole", false, true, true),
            ("standby", false, false, false),
        ] {
            let d = tempfile::tempdir().unwrap();
            let p = Prefetch::new(d.path().join("pg_wal").join(DIR));
            std::thread::scope(|s| {
                let daemon = s.spawn(|| {
                    p.run_daemon(
                        n("000000010000000000000005"),
                        Some(16 << 20),
                        4,
                        2,
                        note_end,
                        |f, tmp| {
                            use std::io::Write;
                            let missing = || Error::NotFound { key: f.to_string() };
                            match f {
                                WalFileName::History { .. } if history_stored => Ok(0),
                                WalFileName::History { .. } => Err(missing()),
                                _ if f.log_seg() < end.log_seg() => {
                                    tmp.write_all(b"x").unwrap();
                                    Ok(16 << 20)
                                }
                                _ if hole => Err(Error::Conflict("a hole".into())),
                                _ => Err(missing()),
                            }
                        },
                    )
                });
                let started = Instant::now();
                while !(p.daemon_alive() && p.path(&n("000000010000000000000007")).exists()) {
                    assert!(started.elapsed() < Duration::from_secs(10), "{case}");
                    std::thread::sleep(Duration::from_millis(5));
                }
                // The miss of 8 comes right after 7 is published; give it a moment.
                std::thread::sleep(Duration::from_millis(300));
                let noted = (
                    p.known_missing(&end),
                    p.known_missing(&next_history),
                    p.known_missing(&history),
                );
                let expected = match case {
                    "end" => (true, true, true),
                    "history stored" => (true, false, false),
                    _ => (false, false, false),
                };
                assert_eq!(noted, expected, "{case}");
                assert!(!p.known_missing(&n("000000010000000000000009")), "{case}");
                // 7 is the archive's last segment: served, and served again (PostgreSQL reads
                // it once more after redo) from a second copy held until the first was taken.
                let last = n("000000010000000000000007");
                let dest = d.path().join("RECOVERYXLOG");
                assert!(p.serve(&last, &dest).unwrap(), "{case}");
                p.note_restored(&last).unwrap();
                fs::remove_file(&dest).unwrap();
                if case == "end" {
                    assert!(p.serve(&last, &dest).unwrap(), "{case}: no second copy");
                    assert_eq!(fs::read(&dest).unwrap(), b"x");
                }
                p.clear(Duration::from_secs(10)).unwrap();
                daemon.join().unwrap().unwrap();
                // Nothing from a prefetcher that is gone is trusted.
                assert!(!p.known_missing(&end), "{case}");
            });
        }
    }

    #[test]
    fn a_prefetcher_serves_stops_on_request_and_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = Prefetch::new(d.path().join("pg_wal").join(DIR));
        let seg = 16 << 20;
        let first: WalFileName = "000000010000000000000005".parse().unwrap();
        std::thread::scope(|s| {
            let daemon = s.spawn(|| {
                p.run_daemon(first, Some(seg), 3, 2, true, |n, tmp| {
                    use std::io::Write;
                    tmp.write_all(n.to_string().as_bytes()).unwrap();
                    Ok(24)
                })
            });
            let want: WalFileName = "000000010000000000000006".parse().unwrap();
            let dest = d.path().join("RECOVERYXLOG");
            let started = Instant::now();
            while !(p.daemon_alive() && p.serve(&want, &dest).unwrap()) {
                assert!(started.elapsed() < Duration::from_secs(10));
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(fs::read_to_string(&dest).unwrap(), want.to_string());
            p.note_restored(&want).unwrap();
            p.clear(Duration::from_secs(10)).unwrap();
            daemon.join().unwrap().unwrap();
        });
        assert!(!p.dir().exists(), "{:?}", names(p.dir()));
    }
}
