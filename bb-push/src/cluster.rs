//! Backing up a running cluster: the non-exclusive backup API on one connection, and a
//! parallel read of the data directory in between.
//!
//! What is left out follows PostgreSQL's documentation ("Backing Up the Data Directory",
//! continuous-archiving.html, and pg_basebackup's exclusion list in basebackup.c): the
//! contents of pg_wal and the other runtime directories, postmaster.pid/opts, temporary
//! files, relcache init files, and a stale backup_label or tablespace_map.

use std::fs;
use std::path::Path;

use jiff::Timestamp;
use pitrkit::error::{Error, Result};
use pitrkit::pg::db::db_err;
use pitrkit::pg::wal::Lsn;
use pitrkit::repo::chunk::ChunkWriter;
use pitrkit::repo::manifest::Entry;
use pitrkit::repo::{ClusterIdentity, Repository};
use pitrkit::runner::note;

use std::time::Duration;

use crate::files::store_files;
use crate::{Captured, Cli, await_wal, dir_mode};

/// Directories whose contents are runtime state, recreated at startup.
const EMPTY_DIRS: [&str; 8] = [
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];
/// Top-level files never copied.
const SKIP_FILES: [&str; 8] = [
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "recovery.signal",
    "standby.signal",
];

/// A connection string from the running cluster's postmaster.pid: its socket directory and
/// port, so that `--pgdata` alone is enough on the database host.
fn default_conninfo(pgdata: &Path) -> Result<String> {
    let pidfile = pgdata.join("postmaster.pid");
    let text = fs::read_to_string(&pidfile).map_err(|e| {
        Error::Database(format!(
            "{}: {e} (is the cluster running? give --dbname otherwise)",
            pidfile.display()
        ))
    })?;
    let lines: Vec<&str> = text.lines().collect();
    let port = lines
        .get(3)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .unwrap_or("5432");
    let host = lines
        .get(4)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.to_string())
        .or_else(|| {
            lines
                .get(5)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && s != "*")
        })
        .unwrap_or_else(|| "localhost".into());
    Ok(format!(
        "host={host} port={port} user=postgres dbname=postgres application_name=bb-push"
    ))
}

pub(crate) fn capture(
    cli: &Cli,
    pgdata: &Path,
    repo: &Repository,
    writer: &ChunkWriter,
    jobs: usize,
) -> Result<Captured> {
    let pgdata = fs::canonicalize(pgdata).map_err(|e| Error::local_io(pgdata, e))?;
    let conninfo = match &cli.dbname {
        Some(c) => c.clone(),
        None => default_conninfo(&pgdata)?,
    };
    let mut db = pitrkit::pg::db::connect(&conninfo)?;
    let row = db
        .query_one(
            "select current_setting('server_version_num')::int4, \
                    (select system_identifier from pg_control_system())::text, \
                    (select setting::int4 from pg_settings where name = 'wal_segment_size'), \
                    current_setting('archive_mode'), current_setting('data_directory')",
            &[],
        )
        .map_err(db_err("reading the cluster's settings"))?;
    let version: i32 = row.get(0);
    let sysid: String = row.get(1);
    let seg_size: i32 = row.get(2);
    let archive_mode: String = row.get(3);
    let data_directory: String = row.get(4);
    if fs::canonicalize(&data_directory).ok().as_deref() != Some(pgdata.as_path()) {
        return Err(Error::invalid_input(
            pgdata.display(),
            format!(
                "the server at '{conninfo}' runs data directory {data_directory}, not this one"
            ),
        ));
    }
    if archive_mode == "off" {
        return Err(Error::invalid_input(
            pgdata.display(),
            "archive_mode is off: the WAL that makes this backup restorable would never reach the repository",
        ));
    }
    let major = pitrkit::pg::major::by_number(version as u32 / 10000).ok_or_else(|| {
        Error::invalid_input(
            pgdata.display(),
            format!(
                "PostgreSQL {} is not a major this pitrkit supports ({})",
                version / 10000,
                pitrkit::pg::major::supported_list()
            ),
        )
    })?;
    let identity = ClusterIdentity {
        system_identifier: sysid
            .parse()
            .map_err(|_| Error::Database(format!("odd system identifier '{sysid}'")))?,
        segment_size: seg_size as u32,
        pg_major: major.number,
    };
    // Refuse a foreign repository before doing any work.
    repo.check_cluster(repo.read_root()?, "this cluster", &identity)?;

    let start_time = Timestamp::now();
    let label = cli.label.clone().unwrap_or_default();
    let backup_label_name = if label.is_empty() {
        format!(
            "pitrkit {}",
            pitrkit::repo::manifest::BackupId::at(start_time)
        )
    } else {
        label.clone()
    };
    let fast = !cli.spread_checkpoint;
    let start: String = db
        .query_one(major.backup_start_sql(), &[&backup_label_name, &fast])
        .map_err(db_err("starting the backup"))?
        .get(0);
    note(format!("backup started at {start}"));

    let previous = crate::files::previous_chunks(repo, writer)?;
    let entries = copy_data_directory(writer, &pgdata, jobs, &previous)?;

    // Not waiting inside PostgreSQL: with a failing archive_command pg_backup_stop(true)
    // waits forever. The segment switch happens either way; the wait below is bounded and
    // checks the repository itself, which is what matters.
    let stop_sql = format!(
        "select lsn::text, labelfile, spcmapfile, pg_snapshot_xmax(pg_current_snapshot())::text from {}",
        major.backup_stop_call()
    );
    let stop = db
        .query_one(stop_sql.as_str(), &[])
        .map_err(db_err("stopping the backup"))?;
    let stop_time = Timestamp::now();
    let stop_lsn: String = stop.get(0);
    let backup_label: String = stop.get(1);
    let spcmap: Option<String> = stop.get(2);
    let next_xid: String = stop.get(3);
    let timeline = backup_label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE: "))
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| Error::Database("backup_label has no START TIMELINE line".into()))?;
    let captured = Captured {
        identity,
        pg_version_num: version as u32,
        label: backup_label_name,
        start_lsn: start.parse()?,
        stop_lsn: stop_lsn.parse::<Lsn>()?,
        timeline,
        start_time,
        stop_time,
        next_xid: next_xid.parse().ok(),
        backup_label,
        tablespace_map: spcmap.filter(|s| !s.is_empty()),
        entries,
        source: "pgdata",
    };
    if !await_wal(repo, &captured, Duration::from_secs(cli.wal_wait))? {
        let row = db
            .query_one("select failed_count, coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, '') from pg_stat_archiver", &[])
            .map_err(db_err("reading pg_stat_archiver"))?;
        let (failed, wal, at): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
        if failed > 0 {
            note(format!(
                "the archiver has failed {failed} times, last on {wal} at {at}: see the server log"
            ));
        }
    }
    Ok(captured)
}

/// Walks the data directory (following tablespace links) and stores every file.
fn copy_data_directory(
    writer: &ChunkWriter,
    pgdata: &Path,
    jobs: usize,
    previous: &crate::files::Previous,
) -> Result<Vec<Entry>> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    walk(pgdata, "", &mut dirs, &mut files)?;
    let mut entries = dirs;
    entries.extend(store_files(writer, pgdata, &files, jobs, previous)?);
    Ok(entries)
}

fn skipped(rel: &str, name: &str) -> bool {
    (!rel.contains('/') && SKIP_FILES.contains(&rel))
        || name.starts_with("pgsql_tmp")
        || name == "pg_internal.init"
}

fn walk(root: &Path, rel: &str, dirs: &mut Vec<Entry>, files: &mut Vec<String>) -> Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names: Vec<String> = match fs::read_dir(&dir) {
        Ok(it) => it
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::local_io(&dir, e)),
    };
    names.sort();
    for name in names {
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if skipped(&child, &name) {
            continue;
        }
        let path = root.join(&child);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::local_io(&path, e)),
        };
        if meta.file_type().is_symlink() {
            // Tablespaces: pg_tblspc/<oid> links to the tablespace's directory. Record the
            // link and back up what it points to, under the link's path.
            if rel == "pg_tblspc" {
                let target = fs::read_link(&path).map_err(|e| Error::local_io(&path, e))?;
                dirs.push(Entry::Symlink {
                    path: child.clone(),
                    target: target.display().to_string(),
                });
                walk(root, &child, dirs, files)?;
            } else if rel.is_empty() && name == "pg_wal" {
                // pg_wal on its own disk (initdb --waldir): its contents are runtime state
                // as always, but a restore needs the directory (PostgreSQL refuses to start
                // without it), so it is recorded as one; bb-restore --waldir links it again.
                dirs.push(Entry::Dir {
                    path: "pg_wal".into(),
                    mode: 0o700,
                });
                dirs.push(Entry::Dir {
                    path: "pg_wal/archive_status".into(),
                    mode: 0o700,
                });
            }
            continue;
        }
        if meta.is_dir() {
            dirs.push(Entry::Dir {
                path: child.clone(),
                mode: dir_mode(&path)?,
            });
            if !(rel.is_empty() && EMPTY_DIRS.contains(&name.as_str())) {
                walk(root, &child, dirs, files)?;
            } else if name == "pg_wal" {
                dirs.push(Entry::Dir {
                    path: "pg_wal/archive_status".into(),
                    mode: 0o700,
                });
            }
        } else if meta.is_file() {
            files.push(child);
        }
    }
    Ok(())
}
