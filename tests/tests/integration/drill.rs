//! `pitr-check drill`: a restore drill against real repositories — a good one on both
//! backends, a wrong expectation, corrupt WAL and a corrupt chunk, and row counts compared
//! with the live cluster at a restore point the drill makes itself.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::fs;
use std::path::{Path, PathBuf};

use pitrkit_tests::{Backend, Output, Site, site};
use serde::Deserialize;

/// The report on stdout, read strictly: a field added or renamed fails here first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    backup_id: Option<String>,
    target: String,
    verdict: String,
    checks: Vec<Check>,
    timings: Timings,
    bytes_restored: u64,
    port: Option<u16>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    name: String,
    ok: bool,
    detail: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Timings {
    restore_seconds: Option<f64>,
    replay_seconds: Option<f64>,
    total_seconds: f64,
}

impl Report {
    fn check(&self, name: &str) -> &Check {
        self.checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name} in {self:#?}"))
    }

    fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// A cluster with a backup and WAL after it in the archive: 10,000 customers at the backup,
/// 10,500 at the end of the archive.
fn prepared(name: &str, backend: Backend) -> (Site, serde_json::Value, String) {
    let s = site(name, backend, "");
    let p = &s.primary;
    p.sql("create table customers(id int primary key, name text)");
    p.sql("insert into customers select i, 'customer ' || i from generate_series(1, 10000) i");
    let backup = s.backup();
    p.sql("insert into customers select i, 'late ' || i from generate_series(10001, 10500) i");
    let segment = p.switch_and_wait_archived();
    (s, backup, segment)
}

/// An empty directory for the drill's throwaway directories, inside the sandbox.
fn workdir(s: &Site) -> PathBuf {
    let dir = s.sb.path().join("work");
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn write_sql(s: &Site, text: &str) -> String {
    let path = s.sb.path().join("checks.sql");
    fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Runs a drill and reads its report.
fn drill(s: &Site, work: &Path, args: &[&str]) -> (Output, Report) {
    let mut all = vec!["drill", "--workdir", work.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = s.tool("pitr-check", &all);
    let report = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("the report does not parse: {e}\n{out}"));
    (out, report)
}

const GOOD_SQL: &str = "\
-- every customer, the late ones too
-- expect: 10500
select count(*) from customers;

-- expect: NULL
select max(name) from customers where id > 20000;
\\c postgres
-- expect: 'late 10500'
select name
  from customers
 where id = 10500;
create table written_after_promotion(i int);
-- the throwaway server listens on its private socket only, never on TCP
-- expect: ''
select current_setting('listen_addresses');
";

fn passes_on_a_good_repository(backend: Backend) {
    let (s, backup, _) = prepared("drill-ok", backend);
    let work = workdir(&s);
    let sql = write_sql(&s, GOOD_SQL);
    let (out, r) = drill(&s, &work, &["--sql", &sql]);
    out.assert_ok().stderr_has("drill OK");
    assert_eq!(r.verdict, "ok", "{out}");
    assert!(r.failed().is_empty(), "{r:#?}");
    assert_eq!(r.error, None);
    assert_eq!(r.backup_id.as_deref(), backup["backup_id"].as_str());
    assert_eq!(r.target, "latest");
    assert!(r.bytes_restored > 10 << 20, "{r:#?}");
    assert!(r.port.is_some());
    assert!(r.timings.restore_seconds.unwrap() > 0.0);
    assert!(r.timings.replay_seconds.unwrap() > 0.0);
    assert!(r.timings.total_seconds >= r.timings.replay_seconds.unwrap());
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "restore", "connect", "recovery", "amcheck", "sql:3", "sql:6", "sql:9", "sql:12",
            "sql:15"
        ],
        "{r:#?}"
    );
    assert!(
        r.check("amcheck").detail.contains("found no corruption"),
        "pg_amcheck ran: {r:#?}"
    );
    assert!(r.check("sql:3").detail.contains("'10500'"), "{r:#?}");
    assert!(
        r.check("connect")
            .detail
            .contains("a TCP connection to 127.0.0.1 is refused"),
        "{r:#?}"
    );
    assert!(
        entries(&work).is_empty(),
        "the throwaway directory is left: {:?}",
        entries(&work)
    );
    // The drill's cluster promoted onto timeline 2 but never archived into the repository.
    assert!(
        !s.repo
            .object_path("wal/00000002/00000002.history.zst")
            .exists()
    );
}

#[test]
fn drill_passes_on_a_good_repository_on_filesystem() {
    passes_on_a_good_repository(Backend::Fs);
}

#[test]
fn drill_passes_on_a_good_repository_on_s3() {
    passes_on_a_good_repository(Backend::S3);
}

#[test]
fn drill_fails_on_a_wrong_expectation_and_refuses_bad_input() {
    let (s, _, _) = prepared("drill-expect", Backend::Fs);
    let work = workdir(&s);

    // The caller's mistakes: UNKNOWN, before anything is restored.
    let refused = |args: &[&str], needle: &str| {
        let mut all = vec!["drill", "--workdir", work.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = s.tool("pitr-check", &all);
        out.assert_code(3).stderr_has(needle);
        assert!(out.stdout.is_empty(), "{out}");
        assert!(entries(&work).is_empty(), "{:?}", entries(&work));
    };
    refused(
        &["--sql", "/nonexistent/checks.sql"],
        "/nonexistent/checks.sql",
    );
    let bad = write_sql(&s, "-- expect: 1\nselect 1\n");
    refused(&["--sql", &bad], "checks.sql:2:");
    refused(
        &["--dbname", "host=/nowhere", "--target-immediate"],
        "cannot be used with",
    );
    refused(&["--target-time", "yesterday"], "cannot read target time");
    refused(&["--recovery-timeout", "soon"], "--recovery-timeout");
    refused(
        &["--run-as", "no-such-user"],
        "'no-such-user' does not exist",
    );
    refused(&["--pg-bin", "/nonexistent"], "no postgres binary there");

    let sql = write_sql(
        &s,
        "-- expect: 10499\nselect count(*) from customers;\nselect 1;\n",
    );
    let (out, r) = drill(&s, &work, &["--sql", &sql, "--keep"]);
    out.assert_code(2)
        .stderr_has("drill CRITICAL: sql:2")
        .stderr_has("kept ");
    assert_eq!(r.verdict, "critical");
    assert_eq!(r.failed(), ["sql:2"], "{r:#?}");
    assert!(
        r.check("sql:2")
            .detail
            .contains("expected '10499', got '10500'"),
        "{r:#?}"
    );
    assert_eq!(r.error, None, "the drill ran to the end");
    // --keep: the stopped cluster and its log stay.
    let kept = entries(&work);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].join("data/PG_VERSION").exists());
    assert!(
        !kept[0].join("data/postmaster.pid").exists(),
        "the server is stopped"
    );
    let log = fs::read_to_string(kept[0].join("postgres.log")).unwrap();
    assert!(log.contains("database system is shut down"), "{log}");
}

#[test]
fn drill_fails_on_a_corrupt_repository() {
    let (s, _, segment) = prepared("drill-corrupt", Backend::Fs);
    let work = workdir(&s);
    let flip = |path: &Path| {
        let mut bytes = fs::read(path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        fs::write(path, &bytes).unwrap();
    };

    // A damaged WAL segment after the backup: the restore works, recovery stops at it.
    let wal = s.repo.object_path(&format!("wal/00000001/{segment}.zst"));
    flip(&wal);
    let (out, r) = drill(&s, &work, &[]);
    out.assert_code(2).stderr_has("drill CRITICAL: recovery");
    assert_eq!(r.verdict, "critical");
    assert_eq!(r.failed(), ["recovery"], "{r:#?}");
    let why = &r.check("recovery").detail;
    assert!(why.contains("FATAL"), "{why}");
    assert!(
        why.contains(&format!(
            "wal-fetch: corrupt object wal/00000001/{segment}.zst"
        )),
        "{why}"
    );
    assert!(
        r.error.as_deref().unwrap().starts_with("recovery: "),
        "{r:#?}"
    );
    assert!(entries(&work).is_empty(), "{:?}", entries(&work));
    flip(&wal);

    // A damaged chunk: the restore itself fails, naming the object.
    let chunk = s
        .repo
        .snapshot()
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.starts_with("chunks/"))
        .unwrap();
    flip(&s.repo.object_path(&chunk));
    let (out, r) = drill(&s, &work, &[]);
    out.assert_code(2).stderr_has("drill CRITICAL: restore");
    assert_eq!(r.verdict, "critical");
    assert_eq!(r.failed(), ["restore"], "{r:#?}");
    assert!(
        r.check("restore")
            .detail
            .contains(&format!("corrupt object {chunk}")),
        "{r:#?}"
    );
    assert!(r.error.is_some() && r.backup_id.is_none() && r.port.is_none());
    assert!(entries(&work).is_empty(), "{:?}", entries(&work));
}

#[test]
fn drill_row_counts_match_the_live_cluster() {
    let s = site("drill-rows", Backend::Fs, "");
    let p = &s.primary;
    p.sql("create table customers(id int primary key, name text)");
    p.sql("insert into customers select i, 'c' || i from generate_series(1, 10000) i");
    p.sql("create schema sales");
    p.sql("create table sales.\"Order Lines\" as select generate_series(1, 777) i");
    // Emptied by recovery by design: not compared.
    p.sql("create unlogged table scratch as select generate_series(1, 50) i");
    s.backup();
    p.sql("insert into customers select i, 'late ' || i from generate_series(10001, 10321) i");
    p.sql("delete from sales.\"Order Lines\" where i <= 7");
    let work = workdir(&s);
    let conninfo = format!(
        "host={} port={} user=postgres dbname=postgres",
        p.sock.display(),
        p.port
    );
    let sql = write_sql(
        &s,
        "-- expect: 770\nselect count(*) from sales.\"Order Lines\";\n",
    );
    let (out, r) = drill(&s, &work, &["--dbname", &conninfo, "--sql", &sql]);
    out.assert_ok();
    assert_eq!(r.verdict, "ok");
    assert!(r.failed().is_empty(), "{r:#?}");
    assert!(
        r.target.starts_with("restore point 'pitrkit-drill-"),
        "{r:#?}"
    );
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "archive",
            "restore",
            "connect",
            "recovery",
            "amcheck",
            "sql:2",
            "row_counts"
        ]
    );
    let counts = &r.check("row_counts").detail;
    assert!(
        counts.contains("2 tables in database postgres hold the 11091 rows"),
        "{counts}"
    );
    assert!(
        r.check("recovery")
            .detail
            .contains("recovery stopping at restore point"),
        "{r:#?}"
    );
    assert!(entries(&work).is_empty(), "{:?}", entries(&work));
}
