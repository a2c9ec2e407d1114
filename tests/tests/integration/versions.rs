//! The version matrix: every supported PostgreSQL major (13 to 18) end to end, on the
//! local-directory repository. PostgreSQL archives through `archive_command = wal-push`
//! under pgbench load, bb-push backs up the live cluster (`pg_start_backup` on 13–14,
//! `pg_backup_start` on 15+), a PITR to a moment between two known commits gives the exact
//! rows, the restored cluster promotes onto timeline 2 and keeps archiving, a second PITR
//! follows timeline 2, and `pitr-check drill` passes with that major's server binaries.
//! On the way, `pitr-check status` must name the last commit from the WAL summaries wal-push
//! wrote on that major.
//!
//! Servers other than Debian's 15 come from `scripts/install-deps.sh` (the npm registry's
//! builds in /opt/pitrkit-pg/<major>/bin); a missing one fails the test with that hint.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::fs;
use std::time::{Duration, Instant};

use pitrkit_tests::{Backend, now, server_bin_dir, site_major};

fn end_to_end(major: u32) {
    let started = Instant::now();
    // The drill finds the server through --pg-bin on odd majors and through the config
    // file's [pg_bin] table on even ones.
    let bin = server_bin_dir(major);
    let by_config = major.is_multiple_of(2);
    let pg_bin_table = if by_config {
        format!("[pg_bin]\n{major} = '{}'\n", bin.display())
    } else {
        String::new()
    };
    let s = site_major(&format!("pg{major}"), Backend::Fs, major, "", &pg_bin_table);
    let p = &s.primary;
    assert_eq!(
        p.sql("select current_setting('server_version_num')::int / 10000"),
        major.to_string(),
        "the cluster runs the major under test"
    );

    // Load while PostgreSQL archives: pgbench's tables and a few seconds of its TPC-B-like
    // transactions (Debian's pgbench 15 drives every major).
    p.client("pgbench", &["-i", "-s", "2", "-q", "postgres"])
        .assert_ok();
    p.sql("create table orders(id int primary key, note text)");
    p.sql("insert into orders select i, 'before the backup' from generate_series(1, 1000) i");
    s.backup();
    let root: serde_json::Value =
        serde_json::from_slice(&fs::read(s.repo.object_path("pitrkit.json")).unwrap()).unwrap();
    assert_eq!(root["pg_major"], major, "{root}");
    p.client("pgbench", &["-c", "2", "-T", "3", "-n", "postgres"])
        .assert_ok();

    // Two known commits with a target between them.
    p.sql("insert into orders select i, 'kept' from generate_series(1001, 1100) i");
    std::thread::sleep(Duration::from_millis(1100));
    let between = now(p);
    std::thread::sleep(Duration::from_millis(1100));
    p.sql("delete from orders where id <= 1050");
    p.sql("insert into orders values (5000, 'after the mistake')");
    s.archive_now();

    // PITR to the moment between the commits; the restored cluster keeps archiving (its
    // postgresql.conf came with the backup) and lives on as timeline 2.
    let mut r = s.restore("r-time", &["--target-time", &between]);
    assert_eq!(
        r.sql("select count(*), min(id), max(id) from orders"),
        "1100|1|1100",
        "exactly the rows of the moment before the delete"
    );
    assert_eq!(
        r.sql("select timeline_id from pg_control_checkpoint()"),
        "2"
    );
    r.sql("insert into orders values (7000, 'on timeline 2')");
    std::thread::sleep(Duration::from_millis(1100));
    let on_tl2 = now(&r);
    std::thread::sleep(Duration::from_millis(1100));
    let before_last = now(&r);
    let last_xid = r
        .sql("begin; insert into orders values (7001, 'too late'); select txid_current(); commit;");
    let last_xid = last_xid
        .lines()
        .find(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()))
        .unwrap()
        .to_string();
    let after_last = now(&r);
    r.switch_and_wait_archived();
    // The WAL summaries wal-push wrote on this major: the newest commit a restore reaches is
    // the one just made, on timeline 2, at a time between the two clock readings around it.
    let out = s.tool("pitr-check", &["status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let lc = &st["last_commit"];
    assert_eq!(lc["xid"].as_u64().unwrap().to_string(), last_xid, "{st:#}");
    assert_eq!(lc["timeline"], 2, "{st:#}");
    let at = |v: &str| v.parse::<jiff::Timestamp>().unwrap();
    let t = at(lc["time"].as_str().unwrap());
    assert!(
        at(&before_last) <= t && t <= at(&after_last),
        "{before_last} <= {t} <= {after_last}"
    );
    assert_eq!(st["wal"]["unsummarized_segments"], 0, "{st:#}");
    assert!(
        s.repo
            .object_path("wal/00000002/00000002.history.zst")
            .exists(),
        "timeline 2's history archived"
    );
    r.stop();
    drop(r);

    // A second PITR along timeline 2.
    let r2 = s.restore(
        "r-tl2",
        &["--target-time", &on_tl2, "--archive-mode", "off"],
    );
    assert_eq!(
        r2.sql("select count(*), count(*) filter (where id = 7000), count(*) filter (where id >= 7001) from orders"),
        "1101|1|0",
        "timeline 2's row, nothing after the target"
    );
    assert_eq!(
        r2.sql("select timeline_id from pg_control_checkpoint()"),
        "3"
    );
    drop(r2);

    // A drill with this major's server binaries.
    let work = s.sb.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let mut args = vec!["drill", "--workdir", work.to_str().unwrap()];
    if !by_config {
        args.extend(["--pg-bin", bin.to_str().unwrap()]);
    }
    let out = s.tool("pitr-check", &args);
    out.assert_ok().stderr_has("drill OK");
    eprintln!(
        "PostgreSQL {major}: end to end in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn postgres_13_end_to_end() {
    end_to_end(13);
}

#[test]
fn postgres_14_end_to_end() {
    end_to_end(14);
}

#[test]
fn postgres_15_end_to_end() {
    end_to_end(15);
}

#[test]
fn postgres_16_end_to_end() {
    end_to_end(16);
}

#[test]
fn postgres_17_end_to_end() {
    end_to_end(17);
}

#[test]
fn postgres_18_end_to_end() {
    end_to_end(18);
}
