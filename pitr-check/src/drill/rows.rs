//! The `row_counts` check of `pitr-check drill --dbname`: count every table of the live
//! database at a restore point made for the purpose, recover the drill's cluster to that
//! restore point, and count again.
//!
//! The restore point is made inside the counting transaction, as its first statement: a
//! REPEATABLE READ transaction takes its snapshot when that statement starts, and
//! `pg_create_restore_point` writes its WAL record a moment later, so the counts and the
//! recovered state differ only by transactions that commit in those microseconds (on a busy
//! cluster a drill can still, rarely, see such a difference: run it again). Counting first
//! and making the point afterwards would leave the whole counting time as that window.

use std::time::{Duration, Instant};

use pitrkit::error::Result;

use super::server::error_message;
use pitrkit::pg::db::db_err;
use postgres::{Client, GenericClient, IsolationLevel};

/// The user tables counted: ordinary, permanent tables outside the system schemas.
/// Unlogged tables are left out because recovery empties them by design; partitioned
/// parents are left out because their partitions are counted.
const TABLES: &str = "select format('%I.%I', n.nspname, c.relname) \
    from pg_class c join pg_namespace n on n.oid = c.relnamespace \
    where c.relkind = 'r' and c.relpersistence = 'p' \
      and n.nspname not in ('pg_catalog', 'information_schema') \
      and n.nspname !~ '^pg_(toast|temp_|toast_temp_)' \
    order by 1";

/// How long the archiver may go without archiving anything while the drill waits for the
/// restore point's segment.
const ARCHIVER_STALL: Duration = Duration::from_secs(120);

/// The live database's row counts at a restore point.
pub struct Baseline {
    pub restore_point: String,
    pub dbname: String,
    /// The WAL segment holding the restore point, switched out for archiving.
    pub segment: String,
    /// (table as `schema.table`, quoted where needed; rows)
    pub counts: Vec<(String, i64)>,
}

/// Connects to the live cluster, makes the restore point, counts, and switches WAL so the
/// segment holding the point gets archived. Errors here mean the drill could not run
/// (wrong conninfo, not a superuser, a standby): they are the caller's, not the archive's.
pub fn take(conninfo: &str, name: &str) -> Result<(Baseline, Client)> {
    let mut live = pitrkit::pg::db::connect(conninfo)?;
    let mut tx = live
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .map_err(db_err("starting a transaction on --dbname"))?;
    let dbname: String = tx
        .query_one(
            "select current_database(), pg_create_restore_point($1)::text",
            &[&name],
        )
        .map_err(db_err("making a restore point on --dbname"))?
        .get(0);
    let tables: Vec<String> = tx
        .query(TABLES, &[])
        .map_err(db_err("listing tables on --dbname"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut counts = Vec::with_capacity(tables.len());
    for t in tables {
        let n = count(&mut tx, &t).map_err(db_err("counting rows on --dbname"))?;
        counts.push((t, n));
    }
    tx.commit().map_err(db_err("counting rows on --dbname"))?;
    let segment: String = live
        .query_one("select pg_walfile_name(pg_switch_wal())", &[])
        .map_err(db_err("switching WAL on --dbname"))?
        .get(0);
    Ok((
        Baseline {
            restore_point: name.to_string(),
            dbname,
            segment,
            counts,
        },
        live,
    ))
}

/// Waits until the live archiver has archived `segment`, for as long as it keeps making
/// progress (a backlog is worth waiting for, a failing archive_command is not) and at most
/// `limit`. `Ok(Err(why))`: it did not; the drill can't recover to the restore point.
pub fn wait_archived(
    live: &mut Client,
    segment: &str,
    limit: Duration,
) -> Result<std::result::Result<String, String>> {
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut seen = String::new();
    loop {
        let row = live
            .query_one(
                "select coalesce(last_archived_wal, ''), coalesce(last_failed_wal, ''), \
                        coalesce(to_char(last_failed_time, 'YYYY-MM-DD HH24:MI:SS TZ'), '') \
                 from pg_stat_archiver",
                &[],
            )
            .map_err(db_err("reading pg_stat_archiver on --dbname"))?;
        let (archived, failed, failed_at): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        if archived_past(&archived, segment) {
            return Ok(Ok(format!(
                "segment {segment} with the restore point archived after {:.1} s",
                started.elapsed().as_secs_f64()
            )));
        }
        if archived != seen {
            seen = archived.clone();
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > ARCHIVER_STALL || started.elapsed() > limit {
            let failure = if failed.is_empty() {
                String::new()
            } else {
                format!(", last failure {failed} at {failed_at}")
            };
            return Ok(Err(format!(
                "the live cluster did not archive {segment} (holding the restore point) within \
                 {:.0} s: last archived {}{failure}",
                started.elapsed().as_secs_f64(),
                if seen.is_empty() { "nothing" } else { &seen }
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether `last_archived_wal` is `segment` or later. Segment names sort by position on a
/// timeline; a .history file says nothing about segments, a `.backup` or `.partial` file
/// about the segment it names.
fn archived_past(last: &str, segment: &str) -> bool {
    last.get(..24)
        .is_some_and(|s| s.bytes().all(|b| b.is_ascii_hexdigit()) && s >= segment)
}

/// Counts the baseline's tables in the restored cluster's database of the same name.
/// `Ok` describes the match, `Err` lists the tables that differ.
pub fn compare(base: &Baseline, restored: &mut Client) -> std::result::Result<String, String> {
    let mut differ = Vec::new();
    let mut rows = 0;
    for (table, live) in &base.counts {
        match count(restored, table) {
            Ok(n) if n == *live => rows += n,
            Ok(n) => differ.push(format!("{table}: live {live}, restored {n}")),
            Err(e) => differ.push(format!(
                "{table}: live {live}, restored: {}",
                error_message(&e)
            )),
        }
    }
    if differ.is_empty() {
        Ok(format!(
            "{} tables in database {} hold the {rows} rows the live cluster had at restore point '{}'",
            base.counts.len(),
            base.dbname,
            base.restore_point
        ))
    } else {
        Err(format!(
            "{} of {} tables in database {} differ from the live cluster at restore point '{}': {}",
            differ.len(),
            base.counts.len(),
            base.dbname,
            base.restore_point,
            differ.join("; ")
        ))
    }
}

/// `table` comes quoted from [`TABLES`] (`format('%I.%I')`), so it is safe to splice in.
fn count(db: &mut impl GenericClient, table: &str) -> std::result::Result<i64, postgres::Error> {
    Ok(db
        .query_one(&format!("select count(*) from {table}"), &[])?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archived_past_compares_segments_only() {
        let seg = "000000010000000000000005";
        assert!(archived_past("000000010000000000000005", seg));
        assert!(archived_past("000000010000000000000006", seg));
        assert!(archived_past(
            "000000010000000000000005.00000028.backup",
            seg
        ));
        assert!(!archived_past("000000010000000000000004", seg));
        assert!(!archived_past("00000002.history", seg));
        assert!(!archived_past("", seg));
    }
}
