//! The speed paths' correctness: the background archiver under load, killed again and
//! again (every segment archived and byte-identical, later calls answered from records,
//! nothing recorded that isn't stored, the archiver gone with its postmaster), calls and
//! archivers killed at many moments of a batch (nothing lost), and prefetching recovery
//! (same data as without, the prefetch directory empty afterwards).

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

/// The pids of running processes whose command line contains every one of `words`.
fn processes_with(words: &[&str]) -> Vec<u32> {
    let mut pids = vec![];
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = fs::read_to_string(e.path().join("stat")).is_ok_and(|st| {
            st.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        });
        if !zombie && words.iter().all(|w| cmd.contains(w)) {
            pids.push(pid);
        }
    }
    pids
}

fn kill9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

/// Every record the archiver left names a segment the repository holds, with the
/// recorded digest.
fn records_are_stored(s: &Site, ahead_dir: &Path, fetch: impl Fn(&str) -> Option<Vec<u8>>) {
    let Ok(d) = fs::read_dir(ahead_dir) else {
        return;
    };
    for e in d.flatten() {
        let n = e.file_name().into_string().unwrap();
        let Some(seg) = n.strip_suffix(".json") else {
            continue;
        };
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue; // cleaned up meanwhile
        };
        let stored = fetch(seg);
        assert!(
            stored.is_some(),
            "{}: record for unstored {seg}",
            s.sb.path().display()
        );
        assert!(text.contains("\"report\""), "{text}");
    }
}

fn lookahead_under_load(backend: Backend) {
    // Segments stay in pg_wal (wal_keep_size) so each archived one can be compared.
    let mut s = site("lookahead", backend, "wal_keep_size = '1GB'\n");
    // A backlog, as when a busy primary outruns its archiver: archiving paused while
    // segments pile up, then resumed with the background archiver.
    s.primary.sql("alter system set archive_command = 'false'");
    s.primary.sql("select pg_reload_conf()");
    s.primary
        .client("pgbench", &["-i", "-s", "3", "-q", "postgres"])
        .assert_ok();
    // Many small segments quickly: the archiver falls behind and finds several ready.
    s.primary.sql(
        "do $$ begin for i in 1..24 loop \
           update pgbench_accounts set abalance = abalance + 1 where aid % 50 = i; \
           perform pg_switch_wal(); end loop; end $$",
    );
    s.primary.sql(&format!(
        "alter system set archive_command = '{} --config {} --jobs 4 %p'",
        s.sb.bin("wal-push").display(),
        s.repo.config.display()
    ));
    s.primary.sql("select pg_reload_conf()");
    let ahead_dir = s.primary.data.join("pg_wal/pitrkit-ahead");
    let pid_file = ahead_dir.join(".archiver.pid");
    let archiver_pid = || -> Option<u32> {
        let text = fs::read_to_string(&pid_file).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["pid"].as_u64().map(|p| p as u32)
    };
    // Load while it catches up, and kill -9 the archiver again and again meanwhile:
    // PostgreSQL's next call starts another.
    let mut killed = 0;
    std::thread::scope(|sc| {
        let load = sc.spawn(|| {
            s.primary
                .client("pgbench", &["-T", "6", "-c", "4", "-j", "2", "postgres"])
                .assert_ok();
        });
        let mut last = None;
        while !load.is_finished() {
            std::thread::sleep(Duration::from_millis(350));
            if let Some(pid) = archiver_pid().filter(|p| Some(*p) != last) {
                kill9(pid);
                last = Some(pid);
                killed += 1;
            }
        }
        load.join().unwrap();
    });
    println!("archiver killed {killed} times under load");
    s.archive_now();
    let failed: usize = s
        .primary
        .sql("select failed_count from pg_stat_archiver")
        .parse()
        .unwrap();
    assert_eq!(
        s.primary
            .log_text()
            .matches("archive command failed")
            .count(),
        failed,
        "only the paused archiver's failures"
    );
    let done = done_segments(&s.primary.data);
    assert!(done.len() >= 25, "{done:?}");
    for seg in &done {
        let local = fs::read(s.primary.data.join("pg_wal").join(seg)).unwrap();
        assert!(fetch_bytes(&s, seg) == local, "{seg} differs from pg_wal");
    }
    records_are_stored(&s, &ahead_dir, |seg| Some(fetch_bytes(&s, seg)));
    let log = s.primary.log_text();
    let ahead = log.matches("\"status\":\"pushed-ahead\"").count();
    assert!(ahead > 0, "no call was answered from a record:\n{log}");
    println!(
        "{ahead} of {} calls answered from the archiver's records",
        done.len()
    );
    // The archiver goes with its postmaster, and takes its records and lock along.
    let pid = archiver_pid().expect("an archiver runs after the load");
    s.primary.stop();
    let started = std::time::Instant::now();
    while processes_with(&["--archiver-daemon"]).contains(&pid) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "archiver {pid} still runs 10 s after its postmaster stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<_> = fs::read_dir(&ahead_dir)
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

/// `n` segments the primary wrote and archived, copied into a pg_wal of their own (with an
/// empty archive_status) as the archiver would see them: their names and that directory.
fn fake_pg_wal(s: &Site, n: usize) -> (Vec<String>, std::path::PathBuf) {
    let p = &s.primary;
    p.sql("create table t as select generate_series(1, 1000) i");
    let mut segs = vec![];
    for _ in 0..n {
        p.sql("insert into t select generate_series(1, 1000)");
        segs.push(p.sql("select pg_walfile_name(pg_current_wal_lsn())"));
        p.sql("select pg_switch_wal()");
    }
    s.archive_now();
    let wal = s.sb.path().join("fake/pg_wal");
    fs::create_dir_all(wal.join("archive_status")).unwrap();
    for seg in &segs {
        fs::write(wal.join(seg), fetch_bytes(s, seg)).unwrap();
    }
    (segs, wal)
}

/// kill -9 of the call and of the archiver it started, at many moments of a batch, then
/// the calls PostgreSQL would retry: every segment ends up stored and byte-identical, and
/// no record ever names a segment the repository lacks.
#[test]
fn a_killed_batch_loses_nothing_and_records_nothing_unstored() {
    let s = site("killed", Backend::Fs, "");
    // The six segments all marked ready below, archived into a second, empty repository.
    let (segs, wal) = fake_pg_wal(&s, 6);
    s.primary.sql("select pg_switch_wal()");
    let repo2 = s.sb.path().join("repo2");
    let repo2_arg = repo2.to_str().unwrap().to_string();
    let objects = |seg: &str| repo2.join(format!("wal/{}/{seg}.zst", &seg[..8]));
    let kill_archivers = || {
        for pid in processes_with(&["--archiver-daemon", &repo2_arg]) {
            kill9(pid);
        }
    };
    let mut answered_ahead = 0;
    for (round, delay_ms) in [1u64, 8, 20, 40, 70, 120, 200].iter().enumerate() {
        let _ = fs::remove_dir_all(&repo2);
        let _ = fs::remove_dir_all(wal.join("pitrkit-ahead"));
        for seg in &segs {
            fs::write(wal.join(format!("archive_status/{seg}.ready")), "").unwrap();
        }
        let mut c = s.sb.tool("wal-push");
        c.current_dir(wal.parent().unwrap())
            .args(["--repo", &repo2_arg, "--jobs", "6"])
            .arg(format!("pg_wal/{}", segs[0]))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(*delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // The call is dead, so it starts no more archivers: kill the one it started.
        kill_archivers();
        records_are_stored(&s, &wal.join("pitrkit-ahead"), |seg| {
            objects(seg).exists().then(Vec::new)
        });
        // PostgreSQL retries, in order, one call per segment (with an archiver again).
        for seg in &segs {
            let mut c = s.sb.tool("wal-push");
            c.current_dir(wal.parent().unwrap())
                .args(["--repo", &repo2_arg])
                .arg(format!("pg_wal/{seg}"));
            let out = run(c);
            out.assert_ok();
            answered_ahead += usize::from(out.stdout.contains("pushed-ahead"));
            fs::rename(
                wal.join(format!("archive_status/{seg}.ready")),
                wal.join(format!("archive_status/{seg}.done")),
            )
            .unwrap();
        }
        kill_archivers();
        for seg in &segs {
            let mut c = s.sb.tool("wal-fetch");
            c.args(["--repo", &repo2_arg, seg, "-"]);
            let out = c.output().unwrap();
            assert!(out.status.success(), "round {round}: {seg}");
            assert!(
                out.stdout == fs::read(wal.join(seg)).unwrap(),
                "round {round}: {seg}"
            );
        }
    }
    println!("{answered_ahead} retried calls answered from records");
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
        if target.is_empty() {
            // PostgreSQL asks twice for the segment after the archive's last: the second
            // answer at least is a note's (the first call's, or the prefetcher's, which
            // reached the end first), not another round of requests.
            assert!(
                log.matches("not found in the repository").count() >= 2,
                "{log}"
            );
            assert!(
                log.matches("a moment ago): not found").count() >= 1,
                "{log}"
            );
        }
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

/// A process's nice value (field 19 of /proc/PID/stat), `None` once it is gone.
fn niceness(pid: u32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(16)?.parse().ok()
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
            // It yields the CPU to PostgreSQL's startup process, from its first moments on.
            pitrkit_tests::wait_for(
                "the prefetcher to lower its priority",
                Duration::from_secs(2),
                || niceness(pid).is_none_or(|n| n == 10),
            );
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

/// The requests each pushed segment costs on S3: the archiver, once it has read the root,
/// sends a segment and its summary and nothing else; a restore_command call sends one GET.
#[test]
fn round_trips_per_segment_on_s3() {
    let mut s = site("trips", Backend::S3, "");
    let (segs, wal) = fake_pg_wal(&s, 7);
    let config2 = s.sb.path().join("repo2.toml");
    let cfg = fs::read_to_string(&s.repo.config).unwrap();
    fs::write(&config2, cfg.replace("cluster-a", "cluster-b")).unwrap();
    let config2 = config2.to_str().unwrap().to_string();
    let push = |seg: &str, extra: &[&str]| {
        let mut c = s.sb.tool("wal-push");
        c.current_dir(wal.parent().unwrap())
            .args(["--config", &config2])
            .args(extra)
            .arg(format!("pg_wal/{seg}"));
        run(c).assert_ok();
        fs::rename(
            wal.join(format!("archive_status/{seg}.ready")),
            wal.join(format!("archive_status/{seg}.done")),
        )
        .unwrap();
    };
    // The repository exists (its root written by a first push without archiver).
    fs::write(wal.join(format!("archive_status/{}.ready", segs[0])), "").unwrap();
    push(&segs[0], &["--jobs", "1"]);
    s.repo.s3.as_mut().unwrap().log_requests();
    for seg in &segs[1..] {
        fs::write(wal.join(format!("archive_status/{seg}.ready")), "").unwrap();
    }
    for seg in &segs[1..] {
        push(seg, &[]);
    }
    for pid in processes_with(&["--archiver-daemon", &config2]) {
        kill9(pid);
    }
    // A restore_command call without prefetch: one GET per segment.
    for seg in &segs[1..] {
        let mut c = s.sb.tool("wal-fetch");
        c.args(["--config", &config2, "--prefetch", "0", seg, "-"]);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{seg}");
        assert!(out.stdout == fs::read(wal.join(seg)).unwrap(), "{seg}");
    }
    let log = s.repo.s3.as_ref().unwrap().log();
    // s3s logs each request's route once as "resolved route, op: OP, s3_path: … key: "KEY" }".
    let requests: Vec<(String, String)> = log
        .lines()
        .filter_map(|l| {
            let rest = l.split("resolved route, op: ").nth(1)?;
            let op = rest.split(',').next()?.to_string();
            let key = rest.split("key: \"").nth(1)?.split('"').next()?.to_string();
            Some((op, key))
        })
        .collect();
    let count = |op: &str, key: &str| {
        requests
            .iter()
            .filter(|(o, k)| o == op && k.ends_with(key))
            .count()
    };
    let (mut probes, mut fetches) = (0, 0);
    for seg in &segs[1..] {
        let obj = format!("wal/{}/{seg}.zst", &seg[..8]);
        assert_eq!(count("PutObject", &obj), 1, "{seg}: {requests:?}");
        assert_eq!(
            count(
                "PutObject",
                &format!("summaries/{}/{seg}.json.zst", &seg[..8])
            ),
            1,
            "{seg}: {requests:?}"
        );
        let gets = count("GetObject", &obj);
        probes += gets - 1;
        fetches += 1;
    }
    let roots = count("GetObject", "pitrkit.json");
    println!(
        "{} requests for {} segments pushed and fetched: {probes} probes, {roots} root reads",
        requests.len(),
        fetches
    );
    // Each process reads the root once (the call that started the archiver, and the
    // archiver); only that call probes for its file: the archiver reads the root first and
    // lets the create-only PUTs answer.
    assert!(probes <= 1, "{requests:?}");
    assert!(roots <= 2, "{requests:?}");
    assert_eq!(requests.len(), 6 * 2 + 6 + probes + roots, "{requests:?}");
}

/// Recovery from a store 25 ms away (through a latency proxy), with prefetch and without:
/// the same rows, and a target on timeline 2 stops there, not among timeline 1's later
/// rows; no prefetched file is left behind.
#[test]
fn recovery_at_a_distance_matches_and_follows_the_timeline() {
    let s = site("distance", Backend::S3, "");
    let p = &s.primary;
    p.sql("create table t(i int)");
    s.backup();
    for i in 0..6 {
        p.sql(&format!(
            "insert into t select generate_series({}, {}); select pg_switch_wal()",
            i * 20 + 1,
            i * 20 + 20
        ));
    }
    std::thread::sleep(Duration::from_millis(1100));
    let mid1 = now(p);
    std::thread::sleep(Duration::from_millis(1100));
    p.sql("insert into t select generate_series(121, 200)");
    s.archive_now();
    // Timeline 2 branches off at mid1 (120 rows) and goes on with its own rows.
    let mut r = s.restore("tl2", &["--target-time", &mid1]);
    assert_eq!(r.sql("select count(*) from t"), "120");
    for i in 0..4 {
        r.sql(&format!(
            "insert into t values ({}); select pg_switch_wal()",
            1000 + i
        ));
    }
    std::thread::sleep(Duration::from_millis(1100));
    let mid2 = now(&r);
    std::thread::sleep(Duration::from_millis(1100));
    r.sql("insert into t values (2000)");
    r.switch_and_wait_archived();
    r.stop();
    drop(r);

    let s3_port: u16 = s
        .repo
        .s3
        .as_ref()
        .unwrap()
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let proxy = pitrkit_tests::LatencyProxy::start(s3_port, Duration::from_millis(25));
    let far = s.sb.path().join("far.toml");
    let cfg = fs::read_to_string(&s.repo.config).unwrap();
    fs::write(
        &far,
        cfg.replace(&s.repo.s3.as_ref().unwrap().endpoint(), &proxy.endpoint()),
    )
    .unwrap();
    s.sb.chown_to_pg(&far);
    for (name, prefetch) in [("far-prefetch", true), ("far-direct", false)] {
        let dir = s.sb.path().join(name);
        let mut c = s.sb.tool("bb-restore");
        c.arg("--config").arg(&far).arg("--pgdata").arg(&dir).args([
            "--archive-mode",
            "off",
            "--target-time",
            &mid2,
        ]);
        run(c).assert_ok();
        let auto = dir.join("postgresql.auto.conf");
        let text = fs::read_to_string(&auto).unwrap();
        assert!(text.contains(" %f %p"), "{text}");
        if !prefetch {
            fs::write(&auto, text.replace(" %f %p", " --prefetch 0 %f %p")).unwrap();
        }
        let mut pg = Pg::at_major(&s.sb, name, s.major);
        pg.configure("");
        pg.start_recovery();
        pg.wait_promoted(Duration::from_secs(120));
        assert_eq!(
            pg.sql("select count(*), max(i) from t"),
            "124|1003",
            "{name}"
        );
        // Promoted from timeline 2 onto 3.
        assert_eq!(
            pg.sql("select timeline_id from pg_control_checkpoint()"),
            "3",
            "{name}"
        );
        let log = pg.log_text();
        assert!(
            log.contains("restored log file \"00000002"),
            "{name}: {log}"
        );
        assert!(!dir.join("pg_wal/pitrkit-prefetch").exists(), "{name}");
        pg.stop();
    }
}
