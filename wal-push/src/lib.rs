//! `wal-push`: archive one WAL file into a pitrkit repository, as PostgreSQL's
//! `archive_command = 'wal-push %p'`.
//!
//! PostgreSQL deletes or recycles a WAL file as soon as this exits 0, so 0 means exactly
//! one thing: the file is durably in the repository (stored now, or found there already
//! with the same digest). Anything doubtful exits non-zero and PostgreSQL retries later.
//!
//! The push of one segment reads top to bottom as the steps PostgreSQL waits on; storing it
//! under its name (create-only, or proving what is there) is `store`; the background
//! archiver that pushes the next files before PostgreSQL asks is `archiver`, and the records
//! it leaves for the calls `ahead`.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

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
mod archiver;
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
    /// Files a background archiver pushes at once, ahead of PostgreSQL's calls, from the
    /// ones PostgreSQL has marked ready (pg_wal/archive_status); their calls then only
    /// check the file against the archiver's record [default: 4 for a directory, 8 for
    /// S3]; 1 runs no archiver: each call pushes its own file
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// Run as the background archiver of the data directory PATH lies in (started by a call)
    #[arg(long, hide = true)]
    pub archiver_daemon: bool,
    #[command(flatten)]
    pub repo: RepoArgs,
}

/// The JSON line printed on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushReport {
    pub name: String,
    pub bytes: u64,
    pub stored_bytes: u64,
    /// The file's digest (blake3; keyed in an encrypted repository: docs/FORMAT.md).
    pub digest: String,
    /// Which function `digest` is: `blake3` or `keyed-blake3` (empty in an archiver's record
    /// written before this field).
    #[serde(default)]
    pub digest_algorithm: String,
    pub seconds: f64,
    /// `stored`; `already-archived` when identical content was there already; `repaired`
    /// when the stored copy was damaged and has been rewritten from this file;
    /// `pushed-ahead` when an earlier call stored it (and its record matches this file).
    pub status: String,
}

/// How long a call waits for the archiver's push of its file before pushing it itself.
const CLAIM_WAIT: Duration = Duration::from_secs(120);

/// Bytes of segments the background archiver holds in memory at most (its files being
/// compressed, at their full size, and compressed files on their way to the store): the
/// bound on its memory however many pushes `--jobs` lets fly.
const ARCHIVER_BUDGET: usize = 40 << 20;

pub fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    let settings = Settings::from_args(&cli.repo)?;
    let (name, display) = file_name(&cli)?;
    let ahead = cli
        .path
        .file()
        .and_then(|p| Ahead::beside(p, &settings.repo_url));
    let jobs = cli
        .jobs
        .unwrap_or_else(|| default_jobs(&settings.location))
        .max(1);
    if cli.archiver_daemon {
        let ahead = ahead.ok_or_else(|| {
            Error::Usage("--archiver-daemon needs a PATH in a pg_wal directory".into())
        })?;
        return run_archiver(&cli, &settings, &ahead, jobs as usize);
    }
    // Pushed ahead earlier: prove the record matches this very file, then answer without
    // touching the repository.
    let answered = |ahead: &Ahead, path: &Path| -> Result<bool> {
        let Some(mut report) = ahead.take(&name, path)? else {
            return Ok(false);
        };
        report.seconds = pitrkit::io::measure::round(started.elapsed().as_secs_f64(), 4);
        if settings.verbose {
            note(format!(
                "{name}: pushed ahead by the archiver, record matches the file"
            ));
        }
        print_report(&report)?;
        Ok(true)
    };
    let background = ahead.as_ref().filter(|_| jobs > 1);
    let mut _claim = None;
    if let (Some(ahead), Some(path)) = (background, cli.path.file()) {
        if answered(ahead, path)? {
            return Ok(());
        }
        archiver::ensure(ahead, &signature(&cli, &settings));
        // While the archiver pushes this file, wait for it rather than push it twice.
        _claim = ahead.claim_wait(&name, CLAIM_WAIT)?;
        if answered(ahead, path)? {
            return Ok(());
        }
    }
    let repo = settings.open_repo()?;
    let sealing = Sealing::new(&cli, &settings, None);
    let root = RootOnce::default();
    let (mut report, halves) = push_one(
        &repo,
        &root,
        &sealing,
        &name,
        &cli.path,
        &display,
        settings.verbose,
    )?;
    // Until PostgreSQL marks it done, the archiver must not push it again: a record tells
    // it (a hint only: without it, one more idempotent push).
    if let Some(ahead) = background {
        let _ = ahead.record(&name, &report, halves);
    }
    report.seconds = pitrkit::io::measure::round(started.elapsed().as_secs_f64(), 4);
    print_report(&report)
}

/// The background archiver (see `archiver`): this process pushes, with `jobs` in flight,
/// the files PostgreSQL marks ready in `ahead`'s directory until it has reason to stop.
fn run_archiver(cli: &Cli, settings: &Settings, ahead: &Ahead, jobs: usize) -> Result<()> {
    let repo = settings.open_repo()?;
    let sealing = Sealing::new(cli, settings, Some(ARCHIVER_BUDGET));
    let root = RootOnce::default();
    // Read before the first pushes start, so that none of them needs a probe (a failure
    // here is met again, and reported, by the pushes).
    let _ = root.get(&repo);
    archiver::run(ahead, &signature(cli, settings), jobs, |name, path| {
        let display = path.display().to_string();
        let file = FileArg::File(path.to_path_buf());
        push_one(&repo, &root, &sealing, name, &file, &display, false)
    })
}

/// What an archiver's work depends on besides the file: its flags and environment and the
/// configuration file's identity. A call with another signature replaces the archiver.
fn signature(cli: &Cli, settings: &Settings) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{:?}", cli.repo).hash(&mut h);
    (cli.compress_level, cli.jobs, &settings.repo_url).hash(&mut h);
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PITR"))
        .collect();
    env.sort();
    env.hash(&mut h);
    if let Some(meta) = settings
        .config_path
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
    {
        use std::os::unix::fs::MetadataExt;
        (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino()).hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

fn print_report(report: &PushReport) -> Result<()> {
    let line = serde_json::to_string(report).map_err(Error::internal)?;
    println!("{line}");
    Ok(())
}

/// Pushes the background archiver keeps in flight: more than the CPUs (only as many
/// compress at once), so that the others' round trips and fsyncs overlap; more for an object
/// store, where each file mostly waits on round trips.
fn default_jobs(location: &pitrkit::settings::RepoLocation) -> u32 {
    match location {
        pitrkit::settings::RepoLocation::Dir(_) => 4,
        pitrkit::settings::RepoLocation::S3 { .. } => 8,
    }
}

/// How a process seals its files: at most one per CPU at a time (the rest wait for a slot
/// before reading), so with `--jobs` above the CPUs the first files reach the store while
/// the others compress; and, in the archiver, within a budget of bytes held in memory.
struct Sealing {
    sealer: Sealer,
    slots: Slots,
    /// KiB of file and sealed bytes in memory at most.
    budget: Option<Slots>,
}

impl Sealing {
    fn new(cli: &Cli, settings: &Settings, budget: Option<usize>) -> Self {
        let level = cli
            .compress_level
            .or(settings.compress_level)
            .unwrap_or(DEFAULT_COMPRESS_LEVEL);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Sealing {
            // One file compresses on several threads only where there is nothing else to
            // do: a call's own push. The archiver has one file per CPU instead.
            sealer: Sealer {
                level,
                workers: if budget.is_none() && cpus > 1 {
                    cpus as u32
                } else {
                    0
                },
            },
            slots: Slots::new(cpus),
            budget: budget.map(|b| Slots::new(b >> 10)),
        }
    }
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
    // In the archiver: room for the whole file before it is read, then for what it sealed
    // to until it is stored.
    let mut budget = sealing
        .budget
        .as_ref()
        .map(|b| b.take_n((len as usize >> 10) + 1));
    let key = Repository::wal_key(&name);
    // Segments hold rows; history and backup-history files hold only positions.
    let class = if name.has_wal_pages() {
        Class::Data
    } else {
        Class::Metadata
    };
    // Read, hash and compress while the repository answers whether the file is there
    // already: on a remote store the round trips cost as much as the compression. The root
    // and the probe are asked at once (one round trip of waiting, not two). A process that
    // has read the root already and knows the store honours create-only writes (the
    // archiver, from its second file on) skips the probe: the create-only PUT answers the
    // same question, and the summary then waits for that answer.
    let probing = root
        .cached()
        .is_none_or(|r| r.conditional_create != Some(true));
    let (sealed, root_read, existing) = std::thread::scope(|s| {
        let root_read = s.spawn(|| root.get(repo));
        let probe = probing.then(|| {
            s.spawn(|| -> Result<Option<Vec<u8>>> {
                match repo.store().get_prefix(&key, ENVELOPE_LEN) {
                    // S3 without s3:ListBucket answers 403 for a missing key: find out by
                    // the create-only write below (412 when it exists), then read what is
                    // there.
                    Err(Error::Denied(_)) => Ok(None),
                    other => other,
                }
            })
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
        let existing = probe.map(joined).transpose();
        (
            sealed.map(|s| (s, hashed.digests(), summary)),
            joined(root_read),
            existing,
        )
    });
    let ((stored, envelope), hash, summary) = sealed.map_err(|e| Error::local_io(&display, e))?;
    if let Some(b) = &mut budget {
        b.shrink_to((stored.len() >> 10) + 1);
    }
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
    let root = root_read?;
    let existing = existing?.flatten();
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
    let new_segment = probing && existing.is_none();
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
        digest_algorithm: envelope.digest_name().into(),
        seconds: pitrkit::io::measure::round(started.elapsed().as_secs_f64(), 4),
        status: status.into(),
    };
    Ok((report, hash))
}

/// The result of a helper thread of [`push_one`].
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(Error::internal("repository probe thread panicked")))
}

/// The repository root, read once per process however many files it pushes (one round
/// trip each on S3). Not cached while there is none: the first push creates it.
#[derive(Default)]
struct RootOnce(std::sync::Mutex<Option<RepoRoot>>);

impl RootOnce {
    fn cached(&self) -> Option<RepoRoot> {
        pitrkit::io::lock(&self.0).clone()
    }

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
