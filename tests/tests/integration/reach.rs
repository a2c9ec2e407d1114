//! Exact recovery windows: the WAL summaries wal-push writes, what `pitr-check status` and
//! `points` read from them (the last commit a restore reaches, the restore points), targets
//! the archive can't reach refused before anything moves, `--target-time last-commit`, and
//! `pitr-check index` writing the summaries that are missing.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::fs;

use pitrkit_tests::{Backend, Pg, Site, site};
use serde_json::Value;

/// Commits `n` transactions, one row each, and returns the xid of each.
fn commit_rows(p: &Pg, from: i32, n: i32) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            p.sql(&format!(
                "begin; insert into t values ({i}); select txid_current(); commit;"
            ))
            .lines()
            .find(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()))
            .unwrap()
            .to_string()
        })
        .collect()
}

/// PostgreSQL's own record of when `xid` committed, in microseconds since the Unix epoch.
fn commit_micros(p: &Pg, xid: &str) -> i64 {
    p.sql(&format!(
        "select (extract(epoch from pg_xact_commit_timestamp('{xid}'::xid)) * 1000000)::bigint"
    ))
    .parse()
    .unwrap()
}

fn micros(json_time: &Value) -> i64 {
    let t: jiff::Timestamp = json_time.as_str().unwrap().parse().unwrap();
    t.as_microsecond()
}

fn status(s: &Site) -> Value {
    let out = s.tool("pitr-check", &["status", "--json"]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stderr))
}

/// A site with commit timestamps on, and no autovacuum (whose commits would race the
/// test's own for "the last one").
fn summarized_site(backend: Backend) -> Site {
    site(
        "reach",
        backend,
        "track_commit_timestamp = on\nautovacuum = off\n",
    )
}

fn exact_windows(backend: Backend) {
    let s = summarized_site(backend);
    let p = &s.primary;
    p.sql("create table t(i int)");
    s.backup();
    commit_rows(p, 1, 5);
    let point_lsn = p.sql("select pg_create_restore_point('before_cleanup')");
    let xids = commit_rows(p, 6, 5);
    let last = xids.last().unwrap();
    // Stored well after the last commit: a target between the two would pass a check on the
    // time WAL was stored; only the summaries know it is not reached.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.archive_now();

    // status: the last commit a restore reaches is the test's last commit, to the µs.
    let st = status(&s);
    let lc = &st["last_commit"];
    assert_eq!(lc["xid"].as_u64().unwrap().to_string(), *last, "{st:#}");
    assert_eq!(micros(&lc["time"]), commit_micros(p, last), "{st:#}");
    assert_eq!(st["wal"]["unsummarized_segments"], 0, "{st:#}");
    let w = &st["windows"][0];
    assert_eq!(w["last_commit"], *lc);
    assert_eq!(w["last_commit_exact"], true);
    assert!(st["last_commit_age_seconds"].as_f64().unwrap() >= 0.0);
    let prom = s.tool("pitr-check", &["status", "--prometheus"]);
    assert!(
        prom.stdout.contains("pitrkit_last_commit_age_seconds{"),
        "{}",
        prom.stdout
    );

    // points: the restore point, where PostgreSQL put it.
    let out = s.tool("pitr-check", &["points", "--json"]);
    out.assert_ok();
    let pts: Value = serde_json::from_str(&out.stdout).unwrap();
    let listed = pts["points"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{pts:#}");
    assert_eq!(listed[0]["name"], "before_cleanup");
    // pg_create_restore_point() returns where its record ends; the listing where it starts.
    let before = p.sql(&format!(
        "select pg_wal_lsn_diff('{point_lsn}', '{}')",
        listed[0]["lsn"].as_str().unwrap()
    ));
    assert!(
        (1..200).contains(&before.parse::<i64>().unwrap()),
        "{point_lsn} vs {pts:#}"
    );
    assert_eq!(pts["segments"], pts["summarized"]);
    let commits: u64 = pts["activity"]["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(
        commits >= 10,
        "the test's commits are in the activity: {pts:#}"
    );
    let table = s.tool("pitr-check", &["points"]);
    table.assert_ok();
    assert!(table.stdout.contains("before_cleanup"), "{}", table.stdout);
    assert!(table.stdout.contains("commits "), "{}", table.stdout);

    // Targets the archive can't reach are refused before the data directory exists.
    let last_time: jiff::Timestamp = lc["time"].as_str().unwrap().parse().unwrap();
    let later = (last_time + jiff::SignedDuration::from_secs(1)).to_string();
    let dir = s.sb.path().join("never");
    let d = dir.to_str().unwrap();
    let out = s.tool("bb-restore", &["--pgdata", d, "--target-time", &later]);
    out.assert_code(2)
        .stderr_has("is not reached by the WAL the archive holds")
        .stderr_has(&format!("its last commit is xid {last}"))
        .stderr_has("--target-time last-commit");
    // An hour on, past everything the archive stored, the answer still names the last commit.
    let hour = (last_time + jiff::SignedDuration::from_secs(3600)).to_string();
    s.tool("bb-restore", &["--pgdata", d, "--target-time", &hour])
        .assert_code(2)
        .stderr_has(&format!("its last commit is xid {last}"));
    // Inclusive, the last commit's own time is not reached either: PostgreSQL stops only
    // at a transaction that ends after the target.
    let out = s.tool(
        "bb-restore",
        &["--pgdata", d, "--target-time", lc["time"].as_str().unwrap()],
    );
    out.assert_code(2);
    let never = (last.parse::<u64>().unwrap() + 1000).to_string();
    let out = s.tool("bb-restore", &["--pgdata", d, "--target-xid", &never]);
    out.assert_code(2)
        .stderr_has(&format!("xid {never} neither commits nor aborts"));
    let out = s.tool(
        "bb-restore",
        &["--pgdata", d, "--target-name", "no_such_point"],
    );
    out.assert_code(2)
        .stderr_has("restore point 'no_such_point' is not in the WAL")
        .stderr_has("'before_cleanup'");
    let out = s.tool(
        "bb-restore",
        &[
            "--pgdata",
            d,
            "--target-time",
            "last-commit",
            "--target-exclusive",
        ],
    );
    out.assert_code(2).stderr_has("--target-exclusive");
    assert!(!dir.exists(), "a refused restore creates nothing");
    let out = s.tool("pitr-check", &["drill", "--target-name", "no_such_point"]);
    out.assert_code(3)
        .stderr_has("restore point 'no_such_point'");

    // Writes after the last commit that are not transactions (a restore point) don't count.
    let r = s.restore(
        "r-last",
        &["--target-time", "last-commit", "--archive-mode", "off"],
    );
    assert_eq!(r.sql("select count(*), max(i) from t"), "10|10");
    drop(r);
    let r = s.restore(
        "r-point",
        &["--target-name", "before_cleanup", "--archive-mode", "off"],
    );
    assert_eq!(r.sql("select count(*), max(i) from t"), "5|5");
    drop(r);

    // Segments archived without summaries (an older pitrkit): status says so, the target
    // check falls back, and `pitr-check index` writes them — once.
    fs::remove_dir_all(s.repo.object_path("summaries")).unwrap();
    let st = status(&s);
    assert!(st["last_commit"].is_null(), "{st:#}");
    let segments = st["wal"]["unsummarized_segments"].as_u64().unwrap();
    assert!(segments >= 2, "{st:#}");
    let out = s.tool("pitr-check", &["index", "--jobs", "2"]);
    out.assert_ok();
    let done: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(done["written"].as_u64().unwrap(), segments, "{done}");
    assert_eq!(done["failed"], serde_json::json!([]));
    let st = status(&s);
    assert_eq!(st["last_commit"], *lc, "backfilled summaries say the same");
    assert_eq!(st["wal"]["unsummarized_segments"], 0);
    let again: Value = serde_json::from_str(&s.tool("pitr-check", &["index"]).stdout).unwrap();
    assert_eq!(again["written"], 0, "{again}");
    assert_eq!(again["already"].as_u64().unwrap(), segments);
}

#[test]
fn exact_windows_on_filesystem() {
    exact_windows(Backend::Fs);
}

#[test]
fn exact_windows_on_s3() {
    exact_windows(Backend::S3);
}

/// A summary copied over another segment's is not believed: its segment counts as not
/// summarized, and status says why.
#[test]
fn a_summary_of_another_segment_is_not_used() {
    let s = summarized_site(Backend::Fs);
    let p = &s.primary;
    p.sql("create table t(i int)");
    s.backup();
    commit_rows(p, 1, 3);
    s.archive_now();
    commit_rows(p, 4, 3);
    s.archive_now();
    let dir = s.repo.object_path("summaries/00000001");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let newest = names.last().unwrap();
    fs::copy(&names[0], newest).unwrap();
    let out = s.tool("pitr-check", &["status", "--json"]);
    out.stderr_has("is not used: describes segment");
    let st: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(st["windows"][0]["last_commit_exact"], false, "{st:#}");
    // verify reads the segment and names the summary that does not describe it.
    let out = s.tool("pitr-check", &["verify", "--json"]);
    out.assert_code(2);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let key = format!(
        "summaries/00000001/{}",
        newest.file_name().unwrap().to_str().unwrap()
    );
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v:#}");
    assert_eq!(problems[0]["key"], key.as_str());
    assert!(
        problems[0]["detail"]
            .as_str()
            .unwrap()
            .contains("describes segment"),
        "{v:#}"
    );
    // Deleted, it is written again from the segment, and verify is clean.
    fs::remove_file(newest).unwrap();
    s.tool("pitr-check", &["index"]).assert_ok();
    s.tool("pitr-check", &["verify"]).assert_ok();
}
