//! `wal-fetch`: restore one WAL file from a pitrkit repository, as PostgreSQL's
//! `restore_command = 'wal-fetch %f %p'`, or to stdout with `-` as destination.
//!
//! Nothing appears at the destination until its length and sha256 have been verified
//! against the object's envelope: a temporary file beside it is fsynced and renamed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use pitrkit::error::{Error, Result};
use pitrkit::object;
use pitrkit::repo::Repository;
use pitrkit::runner::note;
use pitrkit::settings::{RepoArgs, Settings};
use pitrkit::storage::fs::{sync_dir, write_temp_beside};
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
    let repo = Repository::new(settings.open_store()?);
    let key = Repository::wal_key(&name);
    let Some(stored) = repo.store().get(&key)? else {
        return Err(not_found(&repo, &name, &key.to_string()));
    };
    let (plain, _) = object::open(key.as_str(), &stored)?;
    if name.has_wal_pages() {
        // The checksum proves the bytes are what was pushed; this proves they were pushed
        // under the right name.
        wal::validate_segment(key.as_str(), &name, &plain)
            .map_err(|e| Error::corrupt(&key, format!("content does not match its name: {e}")))?;
    }
    write_dest(&cli.dest, &plain)?;
    if settings.verbose {
        note(format!(
            "{name}: restored {} bytes from {} in {:.3} s",
            plain.len(),
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

fn write_dest(dest: &Path, data: &[u8]) -> Result<()> {
    if dest.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(data)
            .and_then(|()| out.flush())
            .map_err(|e| Error::local_io("stdout", e));
    }
    let tmp = write_temp_beside(dest, data).map_err(|e| Error::local_io(dest, e))?;
    if let Err(e) = std::fs::rename(&tmp, dest) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::local_io(dest, e));
    }
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(dir).map_err(|e| Error::local_io(dir, e))
}
