//! The speed paths' correctness: look-ahead archiving under load (every segment archived
//! and byte-identical, later calls answered from records), a wal-push killed mid-batch
//! (nothing lost, nothing recorded that isn't stored), and prefetching recovery (same data
//! as without, the prefetch directory empty afterwards).

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::fs;
use std::path::Path;
use std::time::Duration;

use pitrkit_tests::{Backend, Pg, Site, now, run, site};

/// The archived segments in pg_wal (those marked .done), by name.
fn done_segments(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(data.join("pg_wal/archive_status"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            let seg = n.strip_suffix(".done")?.to_string();
            (seg.len() == 24).then_some(seg)
        })
        .collect();
    v.sort();
    v
}

fn fetch_bytes(s: &Site, name: &str) -> Vec<u8> {
    let mut c = s.sb.tool("wal-fetch");
    c.args(s.repo.args()).args([name, "-"]);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn lookahead_under_load(backend: Backend) {
    // Segments stay in pg_wal (wal_keep_size) so each archived one can be compared.
    let s = site("lookahead", backend, "wal_keep_size = '1GB'\n");
    let p = &s.primary;
    // A backlog, as when a busy primary outruns its archiver: archiving paused while
    // segments pile up, then resumed with look-ahead.
    p.sql("alter system set archive_command = 'false'");
    p.sql("select pg_reload_conf()");
    p.client("pgbench", &["-i", "-s", "3", "-q", "postgres"])
        .assert_ok();
    // Many small segments quickly: the archiver falls behind and finds several ready.
    p.sql(
        "do $$ begin for i in 1..24 loop \
           update pgbench_accounts set abalance = abalance + 1 where aid % 50 = i; \
           perform pg_switch_wal(); end loop; end $$",
    );
    p.sql(&format!(
        "alter system set archive_command = '{} --config {} --jobs 4 %p'",
        s.sb.bin("wal-push").display(),
        s.repo.config.display()
    ));
    p.sql("select pg_reload_conf()");
    // And load while it catches up.
    p.client("pgbench", &["-T", "5", "-c", "4", "-j", "2", "postgres"])
        .assert_ok();
    s.archive_now();
    assert!(
        p.log_text().matches("archive command failed").count()
            == p.sql("select failed_count from pg_stat_archiver")
                .parse::<usize>()
                .unwrap(),
        "only the paused archiver's failures"
    );
    assert!(
        !p.log_text().contains("push ahead failed"),
        "{}",
        p.log_text()
    );
    let done = done_segments(&p.data);
    assert!(done.len() >= 25, "{done:?}");
    for seg in &done {
        let local = fs::read(p.data.join("pg_wal").join(seg)).unwrap();
        assert!(fetch_bytes(&s, seg) == local, "{seg} differs from pg_wal");
    }
    let log = p.log_text();
    let ahead = log.matches("\"status\":\"pushed-ahead\"").count();
    assert!(ahead > 0, "no call was answered from a record:\n{log}");
    println!(
        "{ahead} of {} calls answered from look-ahead records",
        done.len()
    );
    // Records are used up by the calls they answer.
    let left: Vec<_> = fs::read_dir(p.data.join("pg_wal/pitrkit-ahead"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn lookahead_under_load_on_filesystem() {
    lookahead_under_load(Backend::Fs);
}

#[test]
fn lookahead_under_load_on_s3() {
    lookahead_under_load(Backend::S3);
}

/// kill -9 at many points of a look-ahead batch, then the calls PostgreSQL would retry:
/// every segment ends up stored and byte-identical, and no record ever names a segment the
/// repository lacks.
#[test]
fn a_killed_batch_loses_nothing_and_records_nothing_unstored() {
    let s = site("killed", Backend::Fs, "");
    let p = &s.primary;
    p.sql("create table t as select generate_series(1, 1000) i");
    let mut segs = vec![];
    for _ in 0..6 {
        p.sql("insert into t select generate_series(1, 1000)");
        segs.push(p.sql("select pg_walfile_name(pg_current_wal_lsn())"));
        p.sql("select pg_switch_wal()");
    }
    s.archive_now();
    p.sql("select pg_switch_wal()");
    // A copy of pg_wal as the archiver sees it: the six segments all marked ready, archived
    // into a second, empty repository.
    let wal = s.sb.path().join("fake/pg_wal");
    fs::create_dir_all(wal.join("archive_status")).unwrap();
    for seg in &segs {
        fs::write(wal.join(seg), fetch_bytes(&s, seg)).unwrap();
    }
    let repo2 = s.sb.path().join("repo2");
    let objects = |seg: &str| repo2.join(format!("wal/{}/{seg}.zst", &seg[..8]));
    for (round, delay_ms) in [1u64, 8, 20, 40, 70, 120].iter().enumerate() {
        let _ = fs::remove_dir_all(&repo2);
        let _ = fs::remove_dir_all(wal.join("pitrkit-ahead"));
        for seg in &segs {
            fs::write(wal.join(format!("archive_status/{seg}.ready")), "").unwrap();
        }
        let mut c = s.sb.tool("wal-push");
        c.current_dir(wal.parent().unwrap())
            .args(["--repo", repo2.to_str().unwrap(), "--jobs", "6"])
            .arg(format!("pg_wal/{}", segs[0]))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(*delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Nothing recorded that isn't stored.
        if let Ok(d) = fs::read_dir(wal.join("pitrkit-ahead")) {
            for e in d.flatten() {
                let n = e.file_name().into_string().unwrap();
                if let Some(seg) = n.strip_suffix(".json") {
                    assert!(
                        objects(seg).exists(),
                        "round {round}: record for unstored {seg}"
                    );
                }
            }
        }
        // PostgreSQL retries, in order, one call per segment.
        for seg in &segs {
            let mut c = s.sb.tool("wal-push");
            c.current_dir(wal.parent().unwrap())
                .args(["--repo", repo2.to_str().unwrap()])
                .arg(format!("pg_wal/{seg}"));
            run(c).assert_ok();
            fs::rename(
                wal.join(format!("archive_status/{seg}.ready")),
                wal.join(format!("archive_status/{seg}.done")),
            )
            .unwrap();
        }
        for seg in &segs {
            let mut c = s.sb.tool("wal-fetch");
            c.args(["--repo", repo2.to_str().unwrap(), seg, "-"]);
            let out = c.output().unwrap();
            assert!(out.status.success(), "round {round}: {seg}");
            assert!(
                out.stdout == fs::read(wal.join(seg)).unwrap(),
                "round {round}: {seg}"
            );
        }
    }
}

/// Recovery with prefetch (the default) reaches the same rows as without, and leaves no
/// prefetched file behind, also when the target stops it with segments already prefetched.
#[test]
fn prefetching_recovery_matches_and_cleans_up() {
    let s = site("prefetch", Backend::S3, "");
    let p = &s.primary;
    p.sql("create table t(i int, note text)");
    s.backup();
    for i in 0..12 {
        p.sql(&format!(
            "insert into t select g, 'round {i}' from generate_series(1, 2000) g; select pg_switch_wal()"
        ));
    }
    std::thread::sleep(Duration::from_millis(1100));
    let moment = now(p);
    std::thread::sleep(Duration::from_millis(1100));
    for i in 12..20 {
        p.sql(&format!(
            "insert into t select g, 'round {i}' from generate_series(1, 2000) g; select pg_switch_wal()"
        ));
    }
    s.archive_now();
    let expected_latest = p.sql("select count(*), md5(string_agg(note, ',' order by note)) from t");

    for (name, target) in [
        ("with", vec![]),
        ("pitr", vec!["--target-time", moment.as_str()]),
    ] {
        let r = s.restore(name, &[&["--archive-mode", "off"][..], &target].concat());
        let got = r.sql("select count(*), md5(string_agg(note, ',' order by note)) from t");
        if target.is_empty() {
            assert_eq!(got, expected_latest);
        } else {
            assert_eq!(r.sql("select count(*) from t"), "24000");
        }
        let dir = r.data.join("pg_wal/pitrkit-prefetch");
        let left: Vec<_> = fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{name}: left in {}: {left:?}",
            dir.display()
        );
        let log = r.log_text();
        assert!(!log.contains("recovery_end_command"), "{log}");
    }
    // Without prefetch: the same data.
    let dir = s.sb.path().join("without");
    let out = s.tool(
        "bb-restore",
        &["--pgdata", dir.to_str().unwrap(), "--archive-mode", "off"],
    );
    out.assert_ok();
    let conf = dir.join("postgresql.auto.conf");
    let text = fs::read_to_string(&conf)
        .unwrap()
        .replace(" %f %p", " --prefetch 0 %f %p");
    fs::write(&conf, text).unwrap();
    let mut r = Pg::at(&s.sb, "without");
    r.configure("");
    r.start_recovery();
    r.wait_promoted(Duration::from_secs(120));
    assert_eq!(
        r.sql("select count(*), md5(string_agg(note, ',' order by note)) from t"),
        expected_latest
    );
    assert!(!r.data.join("pg_wal/pitrkit-prefetch").exists());
}

/// Process ids of the prefetchers working for the data directory `data`.
fn prefetchers_of(data: &Path) -> Vec<u32> {
    let data = fs::canonicalize(data).unwrap();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = fs::read(e.path().join("cmdline")).ok()?;
            let is_prefetcher = cmd
                .split(|b| *b == 0)
                .any(|arg| arg == b"--prefetch-daemon");
            (is_prefetcher && fs::read_link(e.path().join("cwd")).ok()? == data).then_some(pid)
        })
        .collect()
}

/// The prefetcher is supervised: killed with SIGKILL again and again during a recovery it
/// only costs speed (calls fetch for themselves, a new one starts and throws away what the
/// dead one left), and it does not outlive the postmaster it works for, removing what it
/// fetched.
#[test]
fn a_killed_prefetcher_costs_nothing_and_none_outlives_its_postmaster() {
    let s = site("prefetcher", Backend::Fs, "");
    let p = &s.primary;
    p.sql("create table t(i int, note text)");
    s.backup();
    for i in 0..8 {
        p.sql(&format!(
            "insert into t select g, 'round {i}' from generate_series(1, 2000) g; select pg_switch_wal()"
        ));
    }
    std::thread::sleep(Duration::from_millis(1100));
    let moment = now(p);
    std::thread::sleep(Duration::from_millis(1100));
    for i in 8..16 {
        p.sql(&format!(
            "insert into t select g, 'round {i}' from generate_series(1, 2000) g; select pg_switch_wal()"
        ));
    }
    s.archive_now();
    let expected = p.sql("select count(*), md5(string_agg(note, ',' order by note)) from t");

    let start = |name: &str, args: &[&str]| {
        let dir = s.sb.path().join(name);
        s.tool(
            "bb-restore",
            &[
                &["--pgdata", dir.to_str().unwrap(), "--archive-mode", "off"],
                args,
            ]
            .concat(),
        )
        .assert_ok();
        let mut r = Pg::at(&s.sb, name);
        r.configure("");
        r.start_recovery();
        r
    };

    let r = start("killed", &[]);
    let mut killed = 0;
    let started = std::time::Instant::now();
    while r.try_sql("select pg_is_in_recovery()").as_deref() != Some("f") {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{}",
            r.log_text()
        );
        for pid in prefetchers_of(&r.data) {
            let mut kill = std::process::Command::new("kill");
            kill.args(["-9", &pid.to_string()]);
            if run(kill).code == 0 {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(killed > 0, "no prefetcher ran during the recovery");
    assert_eq!(
        r.sql("select count(*), md5(string_agg(note, ',' order by note)) from t"),
        expected
    );
    assert!(!r.data.join("pg_wal/pitrkit-prefetch").exists());

    // Paused at the target, the prefetcher waits with what it fetched; the postmaster
    // stops and the prefetcher goes, leaving nothing.
    let mut r = start(
        "paused",
        &["--target-time", moment.as_str(), "--target-action", "pause"],
    );
    let prefetch = r.data.join("pg_wal/pitrkit-prefetch");
    pitrkit_tests::wait_for("recovery to pause", Duration::from_secs(120), || {
        r.try_sql("select pg_get_wal_replay_pause_state()")
            .as_deref()
            == Some("paused")
    });
    assert_eq!(r.sql("select count(*) from t"), "16000");
    assert_eq!(prefetchers_of(&r.data).len(), 1);
    let waiting = fs::read_dir(&prefetch)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().len() == 24)
        .count();
    assert!(waiting > 0, "nothing prefetched past the target");
    r.stop();
    pitrkit_tests::wait_for("the prefetcher to end", Duration::from_secs(10), || {
        prefetchers_of(&r.data).is_empty()
    });
    assert!(
        !prefetch.exists(),
        "{:?}",
        fs::read_dir(&prefetch).map(|d| d.count())
    );
}
