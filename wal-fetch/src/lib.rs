//! `wal-fetch`: restore one WAL file from a pitrkit repository, as PostgreSQL's
//! `restore_command = 'wal-fetch %f %p'`, or to stdout with `-` as destination.
//!
//! Nothing appears at the destination until its length and digest have been verified
//! against the object's envelope: a temporary file beside it is fsynced and renamed. The
//! next segments are prefetched by a prefetcher process the first call starts (see
//! `prefetch`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use pitrkit::args::FileArg;
use pitrkit::error::{Error, Result};
use pitrkit::io::local::TempFile;
use pitrkit::io::parallel;
use pitrkit::pg::wal::{self, WalFileName};
use pitrkit::repo::Repository;
use pitrkit::repo::object;
use pitrkit::runner::note;
use pitrkit::settings::{RepoArgs, Settings};

pub mod prefetch;
use prefetch::Prefetch;

#[derive(Parser, Debug)]
#[command(
    name = "wal-fetch",
    version,
    about = "Restore one WAL file from a pitrkit repository",
    after_help = "Use as: restore_command = 'wal-fetch --config /etc/pitrkit.toml %f %p'\n\
                  Exit status: 0 restored; 1 not in the repository; above 125 any other failure,\n\
                  so that PostgreSQL stops instead of ending recovery early. With standby.signal\n\
                  in the working directory every failure exits 1, so a standby keeps retrying."
)]
pub struct Cli {
    /// The WAL file to restore (%f)
    #[arg(value_name = "WALNAME", required_unless_present = "prefetch_cleanup")]
    pub name: Option<String>,
    /// Where to write it (%p), or - for stdout
    #[arg(
        value_name = "DEST",
        required_unless_present = "prefetch_cleanup",
        value_parser = clap::value_parser!(FileArg)
    )]
    pub dest: Option<FileArg>,
    /// Segments of the same timeline kept fetched ahead, in parallel, by a prefetcher
    /// process into the prefetch directory while PostgreSQL replays, so that the next
    /// calls only move a verified file into place; only when DEST is in a pg_wal directory
    /// or --prefetch-dir is given; 0 disables
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub prefetch: usize,
    /// Where prefetched segments wait [default: pitrkit-prefetch beside DEST, i.e.
    /// pg_wal/pitrkit-prefetch in the data directory]
    #[arg(long, value_name = "DIR")]
    pub prefetch_dir: Option<PathBuf>,
    /// Parallel downloads of the prefetcher [default: 2 × the CPUs]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Stop the prefetcher and remove every prefetched file, then exit (bb-restore sets
    /// this as recovery_end_command)
    #[arg(long, conflicts_with_all = ["name", "dest"])]
    pub prefetch_cleanup: bool,
    /// With --prefetch-cleanup: also release this restore lock, so that retention may
    /// remove what recovery needed (bb-restore writes it)
    #[arg(long, value_name = "KEY", requires = "prefetch_cleanup")]
    pub release_lock: Option<String>,
    /// Answer "not found" (1) for a segment missing between stored ones too, instead of
    /// stopping recovery at the hole (bb-restore sets it for --target-immediate, which ends
    /// at consistency, where the WAL after a kept backup may be gone on purpose)
    #[arg(long)]
    pub no_hole_check: bool,
    /// Run as the prefetcher for segments of this size, 0 to read it from the repository
    /// (started by a restoring call)
    #[arg(
        long,
        value_name = "SEGMENT_SIZE",
        hide = true,
        conflicts_with = "prefetch_cleanup"
    )]
    pub prefetch_daemon: Option<u32>,
    #[command(flatten)]
    pub repo: RepoArgs,
}

/// How long `--prefetch-cleanup` waits for the prefetcher to finish what it is doing.
const CLEANUP_WAIT: Duration = Duration::from_secs(30);

pub fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    if cli.prefetch_cleanup {
        let dir = cli
            .prefetch_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("pg_wal").join(prefetch::DIR));
        Prefetch::new(dir).clear(CLEANUP_WAIT)?;
        if let Some(key) = &cli.release_lock {
            let repo = Settings::from_args(&cli.repo)?.open_repo()?;
            pitrkit::repo::lock::release_restore(&repo, key)?;
        }
        return Ok(());
    }
    let (Some(raw), Some(dest)) = (&cli.name, &cli.dest) else {
        return Err(Error::Usage("give WALNAME and DEST (see --help)".into()));
    };
    let settings = Settings::from_args(&cli.repo)?;
    let name: WalFileName = raw.parse()?;
    let prefetch = prefetch_dir(&cli, &name, dest).map(Prefetch::new);
    let segment = matches!(name, WalFileName::Segment { .. });
    if let (Some(p), Some(seg_size), true) = (&prefetch, cli.prefetch_daemon, segment) {
        pitrkit::runner::yield_cpu_to_postgres();
        let repo = settings.open_repo()?;
        // Started before its caller knew the segment size (0): it begins with initdb's
        // default rather than wait a round trip for the root's word, and the first segment
        // it fetches says. The size only picks which names come next; every file is still
        // fetched by its own name and verified against it.
        let seg_size = (seg_size != 0).then_some(seg_size);
        // Downloads at once: two per core, so that a core decompresses while the other
        // download waits on a round trip or an fsync; more only adds memory.
        let jobs = cli
            .jobs
            .unwrap_or(parallel::default_jobs() * 2)
            .min(cli.prefetch);
        // A miss is checked as a call checks it (the root, a hole): the prefetcher notes the
        // archive's end for the calls that will ask (see `prefetch`).
        let holes = !cli.no_hole_check;
        return p.run_daemon(name, seg_size, cli.prefetch, jobs, !standby(), |n, tmp| {
            fetch_into(&repo, n, tmp, holes)
        });
    }
    // Served only while the prefetcher that fetched it runs (see `prefetch`).
    let alive = prefetch.as_ref().is_some_and(Prefetch::daemon_alive);
    if let (Some(p), true, true) = (&prefetch, alive, segment)
        && let Some(dest) = dest.file()
        && p.serve(&name, dest)?
    {
        let _ = p.note_restored(&name);
        if settings.verbose {
            note(format!(
                "{name}: served from {} in {:.4} s",
                p.dir().display(),
                started.elapsed().as_secs_f64()
            ));
        }
        return Ok(());
    }
    // PostgreSQL asks twice for the segment that ends the archive, then for history files
    // that are not there: the answer a call or the prefetcher got from the store a moment
    // ago (see `prefetch`).
    if let (Some(p), true) = (&prefetch, alive)
        && !standby()
        && p.known_missing(&name)
    {
        return Err(Error::NotFound {
            key: format!(
                "{name} (missing from {} a moment ago)",
                settings.open_repo()?.location()
            ),
        });
    }
    // No prefetcher yet (the first call of a recovery, or one after it stopped): start it
    // now, so that it fetches the next segments while this call fetches its own.
    let spawned = match &prefetch {
        Some(_) if !alive && segment => match start_prefetcher() {
            Ok(()) => true,
            // Prefetching is an optimisation: a failure to start it is a note.
            Err(e) => {
                note(format!("prefetching not started: {e}"));
                false
            }
        },
        _ => false,
    };
    let repo = settings.open_repo()?;
    let bytes = match fetch(&repo, &name, dest, !cli.no_hole_check) {
        Ok(b) => b,
        Err(e) => {
            // Not a segment recovery goes on from (the end of the archive, a hole): the
            // prefetcher started for it would only wait.
            if let (Some(p), true) = (&prefetch, spawned) {
                p.ask_to_stop();
            } else if let (Some(p), true, Error::NotFound { .. }) = (&prefetch, alive, &e)
                && !standby()
            {
                let _ = p.note_missing(&name);
            }
            return Err(e);
        }
    };
    if let (Some(p), true) = (&prefetch, segment)
        && let Err(e) = p.note_restored(&name)
    {
        note(format!("prefetcher not told where recovery is: {e}"));
    }
    if settings.verbose {
        note(format!(
            "{name}: restored {} bytes from {} in {:.3} s",
            bytes,
            repo.location(),
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}

/// The prefetch directory for this call: for whole segments and `.history` files restored
/// into PostgreSQL's pg_wal (or with --prefetch-dir). Only a segment request starts a
/// prefetcher and is served from it; a `.history` request only reads its notes of what is
/// missing. A `.partial` request, a fetch to stdout or to a directory of one's own does
/// neither.
fn prefetch_dir(cli: &Cli, name: &WalFileName, dest: &FileArg) -> Option<PathBuf> {
    let dest = dest.file()?;
    if cli.prefetch == 0
        || !matches!(
            name,
            WalFileName::Segment { .. } | WalFileName::History { .. }
        )
    {
        return None;
    }
    if let Some(dir) = &cli.prefetch_dir {
        return Some(dir.clone());
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let in_pg_wal = match parent.file_name() {
        Some(n) => n == "pg_wal",
        None => std::env::current_dir().is_ok_and(|d| d.ends_with("pg_wal")),
    };
    in_pg_wal.then(|| parent.join(prefetch::DIR))
}

/// Whether this call serves a standby (PostgreSQL runs restore_command in the data
/// directory): it asks for a missing segment again and again until it is there.
fn standby() -> bool {
    Path::new("standby.signal").exists()
}

/// Starts the prefetcher: this program again with the same arguments (see
/// [`pitrkit::runner::spawn_helper`]); the first segment it fetches tells it the segment size.
fn start_prefetcher() -> std::io::Result<()> {
    pitrkit::runner::spawn_helper(&["--prefetch-daemon".as_ref(), "0".as_ref()])
}

/// Fetches `name` to `dest` (`-`: stdout), verified before anything appears there.
fn fetch(repo: &Repository, name: &WalFileName, dest: &FileArg, holes: bool) -> Result<u64> {
    let Some(dest) = dest.file() else {
        let (key, stored) = get(repo, name, holes)?;
        // Nothing unverified may reach a pipe: verify first, then write.
        let (plain, _) = object::open(key.as_str(), &stored, repo.keys(), object::limit::WAL)?;
        let mut out = std::io::stdout().lock();
        out.write_all(&plain)
            .and_then(|()| out.flush())
            .map_err(|e| Error::local_io("stdout", e))?;
        return Ok(plain.len() as u64);
    };
    // Stream into a temporary file beside DEST; it is renamed into place only once the
    // length and digest are verified, and removed otherwise.
    let mut tmp = TempFile::create_beside(dest).map_err(|e| Error::local_io(dest, e))?;
    let n = fetch_into(repo, name, &mut tmp, holes).map_err(|e| match e {
        Error::LocalIo { source, .. } => Error::local_io(dest, source),
        other => other,
    })?;
    tmp.persist(dest).map_err(|e| Error::local_io(dest, e))?;
    Ok(n)
}

/// The stored object of `name`, or "not found" when the repository says so.
fn get(
    repo: &Repository,
    name: &WalFileName,
    holes: bool,
) -> Result<(pitrkit::storage::ObjectKey, Vec<u8>)> {
    let key = Repository::wal_key(name);
    // Every recovery asks for the history file of the timeline after its newest, which is
    // mostly absent, and "absent" needs the root's word too (see `not_found`): both asked at
    // once, so that the answer costs one round trip, not two.
    let (stored, root) = if matches!(name, WalFileName::History { .. }) {
        std::thread::scope(|s| {
            let root = s.spawn(|| repo.require_root());
            let stored = repo.store().get(&key);
            let root = root
                .join()
                .unwrap_or_else(|_| Err(Error::internal("root reader panicked")));
            (stored, Some(root))
        })
    } else {
        (repo.store().get(&key), None)
    };
    let Some(stored) = stored? else {
        return Err(not_found(repo, name, key.as_str(), holes, root));
    };
    if name.has_wal_pages() {
        // The digest (verified while streaming, before anything is published) proves the
        // bytes are what was pushed; the header proves they were pushed under this name.
        let (env, head) = object::read_head(
            key.as_str(),
            &stored,
            wal::LONG_PAGE_HEADER_SIZE,
            repo.keys(),
        )?;
        wal::validate_segment_start(key.as_str(), name, &head, env.plain_len)
            .map_err(|e| Error::corrupt(&key, format!("content does not match its name: {e}")))?;
    }
    Ok((key, stored))
}

/// Streams the verified content of `name` into `sink` (an undoable temporary file).
fn fetch_into(
    repo: &Repository,
    name: &WalFileName,
    sink: &mut TempFile,
    holes: bool,
) -> Result<u64> {
    let (key, stored) = get(repo, name, holes)?;
    Ok(object::open_to(key.as_str(), &stored, sink, repo.keys())?.plain_len)
}

/// Exit 1 tells PostgreSQL the archive has ended, so it must be true: a wrong bucket,
/// prefix or directory also answers "no such object" for everything. Only a repository
/// whose root document is there can say a file is missing, and a segment missing between
/// stored ones of its timeline is a hole, not the end: recovery must stop there rather
/// than promote early (retention racing a restore, a lost object). A standby asks again
/// whatever the answer (see `runner`), so it skips the listing.
/// `root` is the root's word when the caller already asked for it.
fn not_found(
    repo: &Repository,
    name: &WalFileName,
    key: &str,
    holes: bool,
    root: Option<Result<pitrkit::repo::RepoRoot>>,
) -> Error {
    if let Err(e) = root.unwrap_or_else(|| repo.require_root()) {
        return e;
    }
    if let (WalFileName::Segment { .. }, false, true) = (name, standby(), holes) {
        match later_segment(repo, name) {
            Ok(Some(later)) => {
                return Error::Conflict(format!(
                    "{name} is missing from {} although timeline {} goes on with {later}: \
                     a hole in the archive, so recovery stops here instead of ending \
                     early (put the segment back, or restore to a target before it)",
                    repo.location(),
                    name.timeline()
                ));
            }
            Ok(None) => {}
            Err(e) => return e,
        }
    }
    Error::NotFound {
        key: format!("{name} ({key} in {})", repo.location()),
    }
}

/// A stored segment of `name`'s timeline after it, when one before it is stored too: the
/// evidence of a hole. A segment before the timeline's first (recovery probes each
/// timeline of the history) or after its last is simply not there.
///
/// Two short listings at once (the timeline's first segment, and the first after `name`),
/// not the timeline's whole listing: a week of WAL is ten pages, and this runs at the end of
/// every recovery, on its critical path.
fn later_segment(repo: &Repository, name: &WalFileName) -> Result<Option<WalFileName>> {
    let Some(wanted) = name.log_seg() else {
        return Ok(None);
    };
    let prefix = pitrkit::repo::layout::wal_timeline(name.timeline());
    let key = Repository::wal_key(name);
    let (first, after) = std::thread::scope(|s| {
        let first = s.spawn(|| first_segment_after(repo, &prefix, None));
        let after = first_segment_after(repo, &prefix, Some(key.as_str().to_string()));
        let first = first
            .join()
            .unwrap_or_else(|_| Err(Error::internal("listing thread panicked")));
        (first, after)
    });
    let before = first?.is_some_and(|f| f.log_seg() < Some(wanted));
    Ok(after?.filter(|a| before && a.log_seg() > Some(wanted)))
}

/// The first stored segment (not a `.partial`, `.backup` or other file) under `prefix` whose
/// key sorts after `after`, listed a few keys at a time.
fn first_segment_after(
    repo: &Repository,
    prefix: &str,
    mut after: Option<String>,
) -> Result<Option<WalFileName>> {
    /// Keys per request: a segment's neighbours in one page, whatever sits between.
    const PAGE: usize = 16;
    /// Requests before the listing is given up as endless (a misbehaving store).
    const PAGES: usize = 10_000;
    for _ in 0..PAGES {
        let page = repo.store().list_some(prefix, after.as_deref(), PAGE)?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        if let Some(seg) = page
            .iter()
            .filter_map(|o| pitrkit::repo::layout::wal_name(o.key.as_str()))
            .find(|n| matches!(n, WalFileName::Segment { .. }))
        {
            return Ok(Some(seg));
        }
        after = Some(last.key.as_str().to_string());
    }
    Err(Error::Unavailable(format!(
        "the listing of {prefix} in {} does not end",
        repo.location()
    )))
}
