//! `wal-push`: archive one WAL file into a pitrkit repository, as PostgreSQL's
//! `archive_command = 'wal-push %p'`.
//!
//! PostgreSQL deletes or recycles a WAL file as soon as this exits 0, so 0 means exactly
//! one thing: the file is durably in the repository (stored now, or found there already
//! with the same sha256). Anything doubtful exits non-zero and PostgreSQL retries later.
//!
//! The push of one segment reads top to bottom as the steps PostgreSQL waits on; storing it
//! under its name (create-only, or proving what is there) is `store`, look-ahead `ahead`.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use pitrkit::args::FileArg;
use pitrkit::error::{Error, Result};
use pitrkit::io::parallel::Slots;
use pitrkit::pg::wal::{self, WalFileName};
use pitrkit::pg::walrecord::Summarizer;
use pitrkit::repo::crypto::Class;
use pitrkit::repo::object::{ENVELOPE_LEN, Sealer};
use pitrkit::repo::{RepoRoot, Repository, summary};
use pitrkit::runner::note;
use pitrkit::settings::{RepoArgs, Settings};
use serde::{Deserialize, Serialize};

mod ahead;
mod store;
use ahead::Ahead;
use store::{Sealed, store_segment};

/// zstd level used unless configured. Level 1 is ~20% faster but stores ~25% more on real
/// OLTP WAL (measured on the benchmark's 64 segments); level 3 matches pgBackRest's zst
/// ratio, and with two compression threads it is still faster per segment (BENCHMARKS.md).
pub const DEFAULT_COMPRESS_LEVEL: i32 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "wal-push",
    version,
    about = "Archive one WAL file into a pitrkit repository",
    after_help = "Use as: archive_command = 'wal-push --config /etc/pitrkit.toml %p'\n\
                  Prints one JSON line (name, bytes, stored_bytes, digest, seconds, status) on success."
)]
pub struct Cli {
    /// The WAL file to archive (%p), or - to read it from stdin (needs --name)
    #[arg(value_name = "PATH", value_parser = clap::value_parser!(FileArg))]
    pub path: FileArg,
    /// Name to archive the file under (default: the file name of PATH)
    #[arg(long, value_name = "WALNAME")]
    pub name: Option<String>,
    /// zstd compression level, 1-19; 0 stores the file uncompressed [default: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..=19))]
    pub compress_level: Option<i32>,
    /// Files pushed at once: this one and the next ones PostgreSQL has marked ready
    /// (pg_wal/archive_status), whose later calls then return at once [default: the CPUs
    /// up to 4 for a directory, 2 to 8 for S3]; 1 pushes only this file
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    #[command(flatten)]
    pub repo: RepoArgs,
}

/// The JSON line printed on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushReport {
    pub name: String,
    pub bytes: u64,
    pub stored_bytes: u64,
    /// sha256 of the file; in an encrypted repository its keyed digest (see docs/FORMAT.md).
    pub digest: String,
    pub seconds: f64,
    /// `stored`; `already-archived` when identical content was there already; `repaired`
    /// when the stored copy was damaged and has been rewritten from this file;
    /// `pushed-ahead` when an earlier call stored it (and its record matches this file).
    pub status: String,
}

pub fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    let settings = Settings::from_args(&cli.repo)?;
    let (name, display) = file_name(&cli)?;
    let ahead = cli
        .path
        .file()
        .and_then(|p| Ahead::beside(p, &settings.repo_url));
    // Pushed ahead by an earlier call: prove the record matches this very file, then answer
    // without touching the repository.
    if let (Some(ahead), Some(path)) = (&ahead, cli.path.file())
        && let Some(mut report) = ahead.take(&name, path)?
    {
        report.seconds = pitrkit::io::measure::round(started.elapsed().as_secs_f64(), 4);
        if settings.verbose {
            note(format!(
                "{name}: pushed ahead earlier, record matches the file"
            ));
        }
        return print_report(&report);
    }
    let repo = settings.open_repo()?;
    let level = cli
        .compress_level
        .or(settings.compress_level)
        .unwrap_or(DEFAULT_COMPRESS_LEVEL);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let jobs = cli
        .jobs
        .unwrap_or_else(|| default_jobs(&settings.location, cpus))
        .max(1);
    // The next files PostgreSQL has marked ready, pushed in the same call.
    let next: Vec<(WalFileName, PathBuf)> = match &ahead {
        Some(a) => a.ready_after(&name, jobs as usize - 1),
        None => vec![],
    };
    let per_file = (cpus / (next.len() as u32 + 1)).max(1);
    let sealing = Sealing {
        sealer: Sealer {
            level,
            workers: if per_file > 1 { per_file } else { 0 },
        },
        slots: Slots::new(cpus as usize),
    };
    let root = RootOnce::default();
    let push = |(n, path, display): &(WalFileName, FileArg, String)| {
        push_one(&repo, &root, &sealing, n, path, display, settings.verbose)
    };
    let mut all = vec![(name, cli.path.clone(), display)];
    all.extend(next.into_iter().map(|(n, p)| {
        let d = p.display().to_string();
        (n, FileArg::File(p), d)
    }));
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = all.iter().map(|item| s.spawn(|| push(item))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::internal("a push thread panicked")))
            })
            .collect::<Vec<_>>()
    });
    let mut results = results.into_iter();
    let mine = results
        .next()
        .unwrap_or_else(|| Err(Error::internal("no result for the requested file")));
    // Look-ahead failures are not this call's: PostgreSQL asks for those files again.
    if let Some(a) = &ahead {
        for ((n, _, _), r) in all.iter().skip(1).zip(results) {
            match r {
                Ok((report, hash)) => a.record(n, &report, hash)?,
                Err(e) => note(format!(
                    "{n}: push ahead failed, left for its own call: {e}"
                )),
            }
        }
    }
    let (mut report, _) = mine?;
    report.seconds = pitrkit::io::measure::round(started.elapsed().as_secs_f64(), 4);
    print_report(&report)
}

fn print_report(report: &PushReport) -> Result<()> {
    let line = serde_json::to_string(report).map_err(Error::internal)?;
    println!("{line}");
    Ok(())
}

/// Files pushed in parallel per call: the CPUs on a local disk, more for an object store,
/// where each file mostly waits on round trips.
fn default_jobs(location: &pitrkit::settings::RepoLocation, cpus: u32) -> u32 {
    match location {
        pitrkit::settings::RepoLocation::Dir(_) => cpus.clamp(1, 4),
        pitrkit::settings::RepoLocation::S3 { .. } => cpus.clamp(2, 8),
    }
}

/// How a call seals its files: at most one per CPU at a time (the rest wait for a slot
/// before reading), so with `--jobs` above the CPUs the first files reach the store while the
/// others compress, and only as many segment buffers exist as can be busy.
struct Sealing {
    sealer: Sealer,
    slots: Slots,
}

/// Validates, seals and stores one WAL file (or finds it stored already). Also returns the
/// xxh3-64 of each half of what was read, for a look-ahead record (so the file is read only once).
fn push_one(
    repo: &Repository,
    root: &RootOnce,
    sealing: &Sealing,
    name: &WalFileName,
    path: &FileArg,
    display: &str,
    verbose: bool,
) -> Result<(PushReport, [u64; 2])> {
    let started = Instant::now();
    let name = *name;
    let display = display.to_string();
    let (mut input, len) = open_input(path)?;
    // Validate from the header and the length before anything touches the repository.
    let mut head = Vec::with_capacity(wal::LONG_PAGE_HEADER_SIZE);
    (&mut input)
        .take(wal::LONG_PAGE_HEADER_SIZE as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::local_io(&display, e))?;
    let header = if name.has_wal_pages() {
        Some(wal::validate_segment_start(&display, &name, &head, len)?)
    } else {
        None
    };
    let key = Repository::wal_key(&name);
    // Segments hold rows; history and backup-history files hold only positions.
    let class = if name.has_wal_pages() {
        Class::Data
    } else {
        Class::Metadata
    };
    // Read, hash and compress while the repository answers whether the file is there
    // already: on a remote store the round trips cost as much as the compression.
    let (sealed, probe) = std::thread::scope(|s| {
        let probe = s.spawn(|| -> Result<_> {
            let root = root.get(repo)?;
            let existing = match repo.store().get_prefix(&key, ENVELOPE_LEN) {
                // S3 without s3:ListBucket answers 403 for a missing key: find out by the
                // create-only write below (412 when it exists), then read what is there.
                Err(Error::Denied(_)) => None,
                other => other?,
            };
            Ok((root, existing))
        });
        let slot = sealing.slots.take();
        let mut hashed = ahead::Hashing::new((&head[..]).chain(&mut input), len);
        let mut summing = Summing {
            inner: &mut hashed,
            summarizer: name.has_wal_pages().then(Summarizer::new),
        };
        let sealed = sealing
            .sealer
            .seal_reader(&mut summing, len, repo.keys(), class);
        let summary = summing.summarizer.map(|s| s.finish(&display));
        drop(slot);
        (sealed.map(|s| (s, hashed.digests(), summary)), probe.join())
    });
    let ((stored, envelope), hash, summary) = sealed.map_err(|e| Error::local_io(&display, e))?;
    // A segment whose records can't be read past its header still archives: the summary
    // only makes the recovery window exact, and `pitr-check index` says what lacks one.
    let summary = match summary {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            note(format!("{name}: no summary of its records: {e}"));
            None
        }
        None => None,
    };
    if envelope.plain_len != len {
        return Err(Error::invalid_input(
            &display,
            format!(
                "changed while being read ({len} bytes, then {})",
                envelope.plain_len
            ),
        ));
    }
    let probe = probe.map_err(|_| Error::internal("repository probe thread panicked"))?;
    let (root, existing) = probe?;
    let root = match &header {
        Some(h) => Some(repo.check_cluster(root, &display, &h.into())?),
        None => root,
    };
    // On a store that ignores If-None-Match a racing writer's PUT can replace ours (or
    // ours theirs) without a 412: read back what is there, so one side at least fails. So
    // too when the root could not be read (a history file pushed first, a lagging read).
    let read_back = root
        .as_ref()
        .is_none_or(|r| r.conditional_create == Some(false));

    // A new segment's summary goes up while the segment does: no round trip added to the
    // archiver's wait. A segment found stored already gets its summary only once this file
    // is proven the same (a refused push must leave the repository as it was); either way
    // the first summary of a segment stays (`summary::store`).
    let new_segment = existing.is_none();
    let (status, summary_put) = std::thread::scope(|s| {
        let summary_put = summary
            .as_ref()
            .filter(|_| new_segment)
            .map(|sum| s.spawn(move || summary::store(repo, &name, sum)));
        let sealed = Sealed {
            key: &key,
            envelope,
            stored: &stored,
        };
        let status = store_segment(repo, &sealed, path, &display, existing, read_back);
        let summary_put = summary_put.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::internal("summary thread panicked")))
        });
        (status, summary_put)
    });
    let status = status?;
    // PostgreSQL retries a failed call: the segment is then found stored, and its summary
    // written if it is still missing.
    match (summary_put, &summary) {
        (Some(put), _) => put?,
        (None, Some(sum)) => summary::store(repo, &name, sum)?,
        (None, None) => {}
    }
    if verbose || status != "stored" {
        note(format!("{name}: {status} in {} as {key}", repo.location()));
    }
    let report = PushReport {
        name: name.to_string(),
        bytes: envelope.plain_len,
        stored_bytes: stored.len() as u64,
        digest: envelope.digest.to_string(),
        seconds: pitrkit::io::measure::round(started.elapsed().as_secs_f64(), 4),
        status: status.into(),
    };
    Ok((report, hash))
}

/// The repository root, read once per call however many files the call pushes (one
/// round trip each on S3). Not cached while there is none: the first push creates it.
#[derive(Default)]
struct RootOnce(std::sync::Mutex<Option<RepoRoot>>);

impl RootOnce {
    fn get(&self, repo: &Repository) -> Result<Option<RepoRoot>> {
        let mut cached = pitrkit::io::lock(&self.0);
        if cached.is_none() {
            repo.store().create()?;
            *cached = match repo.read_root() {
                // Perhaps missing, on S3 without s3:ListBucket: creating it (create-only)
                // settles it, and a real refusal fails there.
                Err(Error::Denied(_)) => None,
                other => other?,
            };
        }
        Ok(cached.clone())
    }
}

/// The WAL file name to archive under, and how to name the input in messages.
fn file_name(cli: &Cli) -> Result<(WalFileName, String)> {
    let raw = match (&cli.name, cli.path.file()) {
        (Some(n), _) => n.clone(),
        (None, None) => {
            return Err(Error::Usage(
                "reading from stdin (-) needs --name WALNAME".into(),
            ));
        }
        (None, Some(path)) => path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::invalid_input(path.display(), "has no usable file name"))?
            .to_string(),
    };
    let display = match cli.path.file() {
        None => format!("{raw} (stdin)"),
        Some(path) => path.display().to_string(),
    };
    let name = raw.parse::<WalFileName>().map_err(|_| {
        Error::invalid_input(
            &display,
            format!("'{raw}' is not a WAL file name (a segment like 000000010000000000000003, or .history/.backup/.partial)"),
        )
    })?;
    Ok((name, display))
}

/// The input and its length. A file is streamed; stdin is read whole first, since its
/// length is needed to validate a segment before anything is stored.
fn open_input(input: &FileArg) -> Result<(Box<dyn Read + Send>, u64)> {
    let Some(path) = input.file() else {
        let mut buf = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut buf)
            .map_err(|e| Error::local_io("stdin", e))?;
        let len = buf.len() as u64;
        return Ok((Box::new(std::io::Cursor::new(buf)), len));
    };
    let file = std::fs::File::open(path).map_err(|e| Error::local_io(path, e))?;
    let len = file.metadata().map_err(|e| Error::local_io(path, e))?.len();
    Ok((Box::new(file), len))
}

/// A reader that feeds what passes through it to a segment's [`Summarizer`] (when the file
/// is a segment): the records are read in the same pass that compresses them.
struct Summing<'r, R> {
    inner: &'r mut R,
    summarizer: Option<Summarizer>,
}

impl<R: Read> Read for Summing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(s) = &mut self.summarizer {
            s.feed(&buf[..n]);
        }
        Ok(n)
    }
}
