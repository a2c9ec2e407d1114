//! `pitr-check status` and `verify` against real archives: gaps named by segment, timeline
//! switches that are not gaps, a flipped byte found and attributed, a failing archiver seen
//! through `--dbname`, and every output format parsed strictly.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::fs;

use pitrkit_tests::{Backend, Output, Site, site};
use serde::Deserialize;

// The documented JSON of `status`, field by field: an added, renamed or removed field fails.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Status {
    format_version: u32,
    repository: String,
    checked_at: String,
    verdict: String,
    findings: Vec<Finding>,
    system_identifier: String,
    pg_major: u32,
    wal: Wal,
    backups: Vec<Backup>,
    windows: Vec<Window>,
    last_commit: Option<Commit>,
    last_commit_age_seconds: Option<f64>,
    newest_backup: Option<String>,
    newest_backup_age_seconds: Option<f64>,
    chunk_bytes: u64,
    archiver: Option<Archiver>,
    copy: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Finding {
    severity: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Wal {
    files: u64,
    bytes: u64,
    newest: Option<String>,
    newest_stored_at: Option<String>,
    newest_age_seconds: Option<f64>,
    timelines: Vec<Timeline>,
    gaps: Vec<Gap>,
    unsummarized_segments: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Timeline {
    timeline: u32,
    parent: Option<u32>,
    switch_lsn: Option<String>,
    first: Option<String>,
    last: Option<String>,
    segments: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Gap {
    timeline: u32,
    first: String,
    last: String,
    segments: u64,
    cuts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Backup {
    backup_id: String,
    label: String,
    timeline: u32,
    start_lsn: String,
    stop_lsn: String,
    start_time: Option<String>,
    stop_time: Option<String>,
    bytes: u64,
    pg_version_num: u32,
    restorable: bool,
    missing_files: Vec<String>,
    missing_wal: Vec<String>,
    missing_chunks: u64,
    manifest_error: Option<String>,
    keep: Option<String>,
    window: Option<Window>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Window {
    timeline: u32,
    from_time: String,
    to_time: Option<String>,
    from_lsn: String,
    to_lsn: String,
    cut_by: Option<String>,
    last_commit: Option<Commit>,
    last_commit_exact: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Commit {
    timeline: u32,
    lsn: String,
    xid: u32,
    time: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Archiver {
    archived_count: i64,
    last_archived_wal: Option<String>,
    last_archived_time: Option<String>,
    failed_count: i64,
    last_failed_wal: Option<String>,
    last_failed_time: Option<String>,
    failing: bool,
    archive_mode: String,
    in_recovery: bool,
    current_wal: Option<String>,
    current_lsn: Option<String>,
    ready_files: Option<u64>,
    system_identifier_matches: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Verify {
    format_version: u32,
    repository: String,
    checked_at: String,
    verdict: String,
    objects_checked: u64,
    bytes_checked: u64,
    seconds: f64,
    keys: std::collections::BTreeMap<String, u64>,
    problems: Vec<Problem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Problem {
    key: String,
    problem: String,
    detail: String,
    breaks: Vec<Broken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Broken {
    backup_id: String,
    effect: String,
}

fn status(s: &Site, extra: &[&str]) -> (Output, Status) {
    let mut args = vec!["status", "--json"];
    args.extend_from_slice(extra);
    let out = s.tool("pitr-check", &args);
    let report = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    (out, report)
}

fn verify(s: &Site) -> (Output, Verify) {
    let out = s.tool("pitr-check", &["verify", "--json", "--jobs", "3"]);
    let report = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    (out, report)
}

/// Parses the text exposition format and returns (metric name, labels, value) samples,
/// checking that every non-comment line became a sample.
fn prometheus(text: &str) -> Vec<prometheus_parse::Sample> {
    let lines: Vec<std::io::Result<String>> = text.lines().map(|l| Ok(l.to_string())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).unwrap();
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(scrape.samples.len(), samples, "unparsed lines in\n{text}");
    assert!(
        text.lines()
            .filter(|l| l.starts_with("# TYPE "))
            .all(|l| l.ends_with(" gauge")),
        "{text}"
    );
    scrape.samples
}

fn gauge(samples: &[prometheus_parse::Sample], name: &str) -> f64 {
    match samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .value
    {
        prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

fn gaps_timelines_and_verify(backend: Backend) {
    let s = site("check", backend, "");
    let p = &s.primary;
    p.sql("create table t(i int primary key, body text)");
    p.sql("insert into t select i, repeat('x', 200) from generate_series(1, 20000) i");
    let backup = s.backup();
    let id = backup["backup_id"].as_str().unwrap().to_string();
    let mut archived = vec![];
    for round in 0..4 {
        p.sql(&format!(
            "insert into t select i, 'r{round}' from generate_series({}, {}) i",
            100_000 * (round + 1),
            100_000 * (round + 1) + 500
        ));
        archived.push(s.primary.switch_and_wait_archived());
    }

    // A promoted restore archives timeline 2 into the same repository.
    let mut r = s.restore("tl2", &[]);
    r.sql("insert into t values (-1, 'on timeline 2')");
    r.switch_and_wait_archived();
    r.stop();

    let (out, healthy) = status(&s, &["--max-wal-age", "1h", "--max-backup-age", "1d"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(healthy.verdict, "ok");
    assert!(healthy.findings.is_empty(), "{:?}", healthy.findings);
    assert!(
        healthy.wal.gaps.is_empty(),
        "a timeline switch is not a gap: {:?}",
        healthy.wal.gaps
    );
    let tl2 = healthy
        .wal
        .timelines
        .iter()
        .find(|t| t.timeline == 2)
        .expect("timeline 2 listed");
    assert_eq!(tl2.parent, Some(1));
    assert_eq!(healthy.backups.len(), 1);
    let b = &healthy.backups[0];
    assert_eq!(b.backup_id, id);
    assert!(b.restorable);
    assert!(b.missing_files.is_empty(), "{b:?}");
    let w = b.window.as_ref().unwrap();
    assert_eq!(w.timeline, 2, "recovery follows the newest timeline");
    assert_eq!(w.cut_by, None);
    assert_eq!(healthy.windows.len(), 1);
    assert!(healthy.wal.newest_age_seconds.unwrap() < 600.0);

    // The same facts for Prometheus.
    let out = s.tool("pitr-check", &["--prometheus"]);
    assert_eq!(out.code, 0, "{out}");
    let samples = prometheus(&out.stdout);
    assert_eq!(gauge(&samples, "pitrkit_status"), 0.0);
    assert_eq!(gauge(&samples, "pitrkit_backups_restorable"), 1.0);
    assert_eq!(gauge(&samples, "pitrkit_wal_gap_segments"), 0.0);
    assert!(gauge(&samples, "pitrkit_recovery_window_end_timestamp_seconds") > 1.7e9);
    // The table for people names the backup and the verdict.
    let out = s.tool("pitr-check", &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(&id) && out.stdout.contains("OK"),
        "{out}"
    );

    let (out, clean) = verify(&s);
    assert_eq!(out.code, 0, "{out}");
    assert!(clean.problems.is_empty());
    assert!(clean.objects_checked > 50, "{clean:?}");
    assert_eq!(
        clean.keys.get("none").copied(),
        Some(clean.objects_checked),
        "a plain repository: every object unencrypted"
    );

    // A flipped byte in one chunk of the backup.
    let chunk_dir = s.repo.files.join("chunks");
    let mut chunk = None;
    for d in fs::read_dir(&chunk_dir).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            if fs::metadata(&f).unwrap().len() > 2000 {
                chunk = Some(f);
            }
        }
    }
    let chunk = chunk.expect("a chunk");
    let mut bytes = fs::read(&chunk).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    fs::write(&chunk, &bytes).unwrap();
    let key = chunk
        .strip_prefix(&s.repo.files)
        .unwrap()
        .display()
        .to_string();
    let (out, bad) = verify(&s);
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(bad.verdict, "critical");
    let problem = bad
        .problems
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("{key} not reported: {:?}", bad.problems));
    assert_eq!(problem.problem, "corrupt");
    assert_eq!(problem.breaks.len(), 1);
    assert_eq!(problem.breaks[0].backup_id, id);
    assert_eq!(problem.breaks[0].effect, "cannot restore");
    bytes[at] ^= 0x40;
    fs::write(&chunk, &bytes).unwrap();

    // A segment deleted from the middle of the archive: reported by name, exit 2, and the
    // window it cuts.
    let victim = &archived[1];
    let victim_key = format!("wal/{}/{victim}.zst", &victim[..8]);
    fs::remove_file(s.repo.object_path(&victim_key)).unwrap();
    let (out, broken) = status(&s, &[]);
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(broken.verdict, "critical");
    assert_eq!(broken.wal.gaps.len(), 1, "{:?}", broken.wal.gaps);
    let gap = &broken.wal.gaps[0];
    assert_eq!(
        (gap.first.as_str(), gap.last.as_str(), gap.segments),
        (victim.as_str(), victim.as_str(), 1)
    );
    assert_eq!(gap.cuts, vec![id.clone()]);
    let w = broken.backups[0].window.as_ref().unwrap();
    assert_eq!(w.cut_by.as_deref(), Some(victim.as_str()));
    assert!(
        out.stderr.contains(victim.as_str()) && out.stderr.contains("CRITICAL"),
        "{out}"
    );
    let out = s.tool("pitr-check", &["--prometheus"]);
    assert_eq!(out.code, 2, "{out}");
    let samples = prometheus(&out.stdout);
    assert_eq!(gauge(&samples, "pitrkit_status"), 2.0);
    assert_eq!(gauge(&samples, "pitrkit_wal_gap_segments"), 1.0);
}

#[test]
fn status_and_verify_on_filesystem() {
    gaps_timelines_and_verify(Backend::Fs);
}

#[test]
fn status_and_verify_on_s3() {
    gaps_timelines_and_verify(Backend::S3);
}

#[test]
fn dbname_reports_a_failing_archiver_as_a_warning() {
    let s = site("archiver", Backend::Fs, "");
    let p = &s.primary;
    p.sql("create table t as select generate_series(1, 1000) i");
    s.backup();
    s.archive_now();
    let conninfo = format!(
        "host={} port={} user=postgres dbname=postgres",
        p.sock.display(),
        p.port
    );
    let (out, ok) = status(&s, &["--dbname", &conninfo]);
    assert_eq!(out.code, 0, "{out}");
    let a = ok.archiver.unwrap();
    assert!(!a.failing && a.system_identifier_matches && !a.in_recovery);
    assert_eq!(a.archive_mode, "on");

    // The archive moves to a directory the cluster's user can't write.
    let locked = s.sb.path().join("locked");
    fs::create_dir_all(&locked).unwrap();
    p.sql(&format!(
        "alter system set archive_command = '{} --repo {}/repo %p'",
        s.sb.bin("wal-push").display(),
        locked.display()
    ));
    p.sql("select pg_reload_conf()");
    p.sql("insert into t select generate_series(1, 1000)");
    // After a write: at a segment's very start, pg_walfile_name names the previous one.
    let failed = p.sql("select pg_walfile_name(pg_current_wal_lsn())");
    p.sql("select pg_switch_wal()");
    pitrkit_tests::wait_for(
        "the archiver to fail",
        std::time::Duration::from_secs(60),
        || p.sql("select failed_count from pg_stat_archiver") != "0",
    );
    let (out, warn) = status(&s, &["--dbname", &conninfo]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(warn.verdict, "warning");
    let a = warn.archiver.unwrap();
    assert!(a.failing);
    assert_eq!(a.last_failed_wal.as_deref(), Some(failed.as_str()));
    assert!(a.ready_files.unwrap() >= 1, "{a:?}");
    assert!(
        warn.findings
            .iter()
            .any(|f| f.severity == "warning" && f.message.contains(&failed)),
        "{:?}",
        warn.findings
    );
    let out = s.tool("pitr-check", &["--prometheus", "--dbname", &conninfo]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(
        gauge(&prometheus(&out.stdout), "pitrkit_archiver_failing"),
        1.0
    );
}

#[test]
fn check_errors_are_unknown() {
    let s = site("unknown", Backend::Fs, "");
    let out = s.tool("pitr-check", &["--max-wal-age", "soon"]);
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stderr.contains("UNKNOWN") && out.stderr.contains("soon"),
        "{out}"
    );
    // No backup yet (and a repository that has WAL only): nothing can be restored.
    s.archive_now();
    let (out, r) = status(&s, &[]);
    assert_eq!(out.code, 2, "{out}");
    assert!(r.findings.iter().any(|f| f.message.contains("no backups")));
    let mut c = s.sb.tool("pitr-check");
    c.args(["--repo", "/nonexistent/repo"]);
    let out = pitrkit_tests::run(c);
    assert_eq!(out.code, 3, "{out}");
}
