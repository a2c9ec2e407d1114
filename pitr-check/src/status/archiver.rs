//! The live cluster's archiver (`--dbname`): what `pg_stat_archiver` and `pg_wal` say.

use super::*;

/// `pg_stat_archiver` and the pending `.ready` files of the running cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiverReport {
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<Timestamp>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<Timestamp>,
    /// The last attempt failed (a failure newer than the last success).
    pub failing: bool,
    pub archive_mode: String,
    pub in_recovery: bool,
    pub current_wal: Option<String>,
    pub current_lsn: Option<Lsn>,
    /// WAL files waiting for archive_command, when the data directory is readable.
    pub ready_files: Option<u64>,
    pub system_identifier_matches: bool,
}

/// Reads the archiver's state from the running cluster.
pub(super) fn archiver(
    conninfo: &str,
    pgdata: Option<&Path>,
    root: &RepoRoot,
) -> Result<ArchiverReport> {
    let mut db = pitrkit::pg::db::connect(conninfo)?;
    let err = pitrkit::pg::db::db_err;
    let row = db
        .query_one(
            "select archived_count, last_archived_wal, \
                    extract(epoch from last_archived_time)::float8, \
                    failed_count, last_failed_wal, \
                    extract(epoch from last_failed_time)::float8, \
                    pg_is_in_recovery(), current_setting('archive_mode'), \
                    current_setting('data_directory'), \
                    (select system_identifier from pg_control_system())::text \
             from pg_stat_archiver",
            &[],
        )
        .map_err(err("reading pg_stat_archiver"))?;
    let ts = |v: Option<f64>| v.and_then(|s| Timestamp::from_millisecond((s * 1000.0) as i64).ok());
    let last_archived_time = ts(row.get(2));
    let last_failed_time = ts(row.get(5));
    let in_recovery: bool = row.get(6);
    let data_directory: String = row.get(8);
    let sysid: String = row.get(9);
    let (current_wal, current_lsn) = if in_recovery {
        (None, None)
    } else {
        let r = db
            .query_one(
                "select pg_walfile_name(pg_current_wal_lsn()), pg_current_wal_lsn()::text",
                &[],
            )
            .map_err(err("reading the current WAL position"))?;
        let lsn: String = r.get(1);
        (Some(r.get::<_, String>(0)), lsn.parse().ok())
    };
    let dir = pgdata.map_or_else(|| PathBuf::from(&data_directory), Path::to_path_buf);
    let status_dir = dir.join("pg_wal/archive_status");
    let ready_files = match std::fs::read_dir(&status_dir) {
        Ok(entries) => Some(
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count() as u64,
        ),
        Err(e) => {
            note(format!(
                "can't count pending WAL in {} ({e}); give --pgdata or run as the cluster's owner",
                status_dir.display()
            ));
            None
        }
    };
    Ok(ArchiverReport {
        archived_count: row.get(0),
        last_archived_wal: row.get(1),
        last_archived_time,
        failed_count: row.get(3),
        last_failed_wal: row.get(4),
        failing: match (last_failed_time, last_archived_time) {
            (Some(f), Some(a)) => f > a,
            (Some(_), None) => true,
            _ => false,
        },
        last_failed_time,
        archive_mode: row.get(7),
        in_recovery,
        current_wal,
        current_lsn,
        ready_files,
        system_identifier_matches: sysid == root.system_identifier.to_string(),
    })
}
