//! `wal-fetch`: restore one WAL file from a pitrkit repository, as PostgreSQL's
//! `restore_command = 'wal-fetch %f %p'`, or to stdout with `-` as destination.
//!
//! Nothing appears at the destination until its length and sha256 have been verified
//! against the object's envelope: a temporary file beside it is fsynced and renamed.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use pitrkit::error::{Error, Result};
use pitrkit::object;
use pitrkit::repo::Repository;
use pitrkit::runner::note;
use pitrkit::settings::{RepoArgs, Settings};
use pitrkit::storage::fs::TempFile;
use pitrkit::wal::{self, WalFileName};

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
    #[arg(value_name = "WALNAME")]
    pub name: String,
    /// Where to write it (%p), or - for stdout
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub repo: RepoArgs,
}

pub fn run(cli: Cli) -> Result<()> {
    let started = Instant::now();
    let settings = Settings::from_args(&cli.repo)?;
    let name: WalFileName = cli.name.parse()?;
    let repo = settings.open_repo()?;
    let key = Repository::wal_key(&name);
    let Some(stored) = repo.store().get(&key)? else {
        return Err(not_found(&repo, &name, &key.to_string()));
    };
    if name.has_wal_pages() {
        // The checksum (verified below, before anything is published) proves the bytes are
        // what was pushed; the header proves they were pushed under the right name.
        let (env, head) = object::read_head(
            key.as_str(),
            &stored,
            wal::LONG_PAGE_HEADER_SIZE,
            repo.keys(),
        )?;
        wal::validate_segment_start(key.as_str(), &name, &head, env.plain_len)
            .map_err(|e| Error::corrupt(&key, format!("content does not match its name: {e}")))?;
    }
    let bytes = if cli.dest.as_os_str() == "-" {
        // Nothing unverified may reach a pipe: verify first, then write.
        let (plain, _) = object::open(key.as_str(), &stored, repo.keys())?;
        let mut out = std::io::stdout().lock();
        out.write_all(&plain)
            .and_then(|()| out.flush())
            .map_err(|e| Error::local_io("stdout", e))?;
        plain.len() as u64
    } else {
        // Stream into a temporary file beside DEST; it is renamed into place only once
        // the length and sha256 are verified, and removed otherwise.
        let dest = &cli.dest;
        let mut tmp = TempFile::create_beside(dest).map_err(|e| Error::local_io(dest, e))?;
        let env =
            object::open_to(key.as_str(), &stored, &mut tmp, repo.keys()).map_err(|e| match e {
                Error::LocalIo { source, .. } => Error::local_io(dest, source),
                other => other,
            })?;
        tmp.persist(dest).map_err(|e| Error::local_io(dest, e))?;
        env.plain_len
    };
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

/// Exit 1 tells PostgreSQL the archive has ended, so it must be true: a wrong bucket,
/// prefix or directory also answers "no such object" for everything. Only a repository
/// whose root document is there can say a file is missing.
fn not_found(repo: &Repository, name: &WalFileName, key: &str) -> Error {
    match repo.read_root() {
        Ok(Some(_)) => Error::NotFound {
            key: format!("{name} ({key} in {})", repo.location()),
        },
        Ok(None) => Error::Conflict(format!(
            "{} is not a pitrkit repository (no pitrkit.json): wrong bucket, prefix or directory?",
            repo.location()
        )),
        Err(e) => e,
    }
}
