//! Base backups and point-in-time recovery: `bb-push` from a running cluster (and from a
//! `pg_basebackup` stream), `bb-restore` to a time, an xid, an LSN, a restore point or
//! immediate, PostgreSQL replaying through `wal-fetch`, on both backends.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::fs;
use std::time::Duration;

use pitrkit_tests::{
    Backend, DEFAULT_MAJOR, Pg, Sandbox, Site, TestRepo, as_pg, now, pg_bin, run, site,
};

fn three_cases(backend: Backend) {
    let s = site("pitr", backend, "");
    let p = &s.primary;
    p.sql("create table customers(id int primary key, name text, email text)");
    p.sql("insert into customers select i, 'customer ' || i, 'c' || i || '@example.com' from generate_series(1, 10000) i");
    p.sql("create table accounts(id int primary key, balance numeric)");
    p.sql("insert into accounts select i, 100 from generate_series(1, 1000) i");
    let backup = s.backup();
    if backend == Backend::Fs {
        // bb-push ran as the test user (root in CI): the directories it made belong to the
        // repository's owner, so the archiver could write into them too.
        use std::os::unix::fs::MetadataExt;
        let owner = fs::metadata(&s.repo.files).unwrap().uid();
        for d in ["chunks", "backups"] {
            assert_eq!(
                fs::metadata(s.repo.files.join(d)).unwrap().uid(),
                owner,
                "{d}"
            );
        }
        // Whatever the umask (022 here), nothing the repository holds — chunks are rows — is
        // readable by others, and what root wrote belongs to the repository's owner.
        let mut stack = vec![s.repo.files.clone()];
        let mut seen = 0;
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let meta = e.metadata().unwrap();
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(
                    meta.permissions().mode() & 0o007,
                    0,
                    "{}",
                    e.path().display()
                );
                assert_eq!(meta.uid(), owner, "{}", e.path().display());
                if meta.is_dir() {
                    stack.push(e.path());
                } else {
                    seen += 1;
                }
            }
        }
        assert!(seen > 100, "{seen} objects");
    }
    assert!(
        backup["totals"]["files"].as_u64().unwrap() > 100,
        "{backup}"
    );

    // Written after the backup, before any mistake: must survive every restore below.
    p.sql("insert into customers select i, 'late ' || i, 'l' || i || '@example.com' from generate_series(10001, 10500) i");
    std::thread::sleep(Duration::from_millis(1200));

    // Case 1: a support agent deletes 10,000 customers instead of one.
    let before_delete = now(p);
    std::thread::sleep(Duration::from_millis(1200));
    p.sql("delete from customers where id <= 10000");
    p.sql("insert into customers values (99999, 'after the mistake', 'x')");

    // Case 2: a bad transaction corrupts every balance; recover to just before its xid.
    let bad_xid = p.sql("begin; update accounts set balance = -1; select txid_current(); commit;");
    let bad_xid = bad_xid
        .lines()
        .find(|l| l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty())
        .unwrap()
        .to_string();
    p.sql("update accounts set balance = balance + 1 where id = 1");

    // Case 3: a migration drops a column; 45 minutes of activity follow (here: a few rows).
    p.sql("select pg_create_restore_point('before_migration')");
    let lsn_before_migration = p.sql("select pg_current_wal_lsn()");
    p.sql("alter table customers drop column email");
    p.sql("insert into customers values (100000, 'after the migration')");
    s.archive_now();

    let r = s.restore(
        "r-time",
        &["--target-time", &before_delete, "--archive-mode", "off"],
    );
    assert_eq!(
        r.sql("select count(*) from customers"),
        "10500",
        "deleted rows back, later rows kept"
    );
    assert_eq!(
        r.sql("select count(*) from customers where id = 99999"),
        "0",
        "nothing after the target"
    );
    assert_eq!(r.sql("select sum(balance) from accounts"), "100000");
    drop(r);

    let r = s.restore(
        "r-xid",
        &[
            "--target-xid",
            &bad_xid,
            "--target-exclusive",
            "--archive-mode",
            "off",
        ],
    );
    assert_eq!(
        r.sql("select count(*), min(balance), max(balance) from accounts"),
        "1000|100|100"
    );
    assert_eq!(
        r.sql("select count(*) from customers"),
        "501",
        "the delete and the 99999 insert came before"
    );
    drop(r);

    let r = s.restore(
        "r-name",
        &["--target-name", "before_migration", "--archive-mode", "off"],
    );
    assert_eq!(
        r.sql("select count(*), count(email) from customers"),
        "501|501",
        "the dropped column is back with its data"
    );
    assert_eq!(
        r.sql("select count(*) from customers where id = 100000"),
        "0"
    );
    drop(r);

    let r = s.restore(
        "r-lsn",
        &[
            "--target-lsn",
            &lsn_before_migration,
            "--archive-mode",
            "off",
        ],
    );
    assert_eq!(r.sql("select count(email) from customers"), "501");
    drop(r);

    let r = s.restore(
        "r-immediate",
        &["--target-immediate", "--archive-mode", "off"],
    );
    assert_eq!(
        r.sql("select count(*) from customers"),
        "10000",
        "just the backup"
    );
    assert!(
        r.log_text()
            .contains("recovery stopping after reaching consistency"),
        "{}",
        r.log_text()
    );
    drop(r);

    // Latest, then the restored cluster lives on timeline 2 and keeps archiving into the same
    // repository; a later PITR to a moment on timeline 2 works.
    let mut r = s.restore("r-latest", &[]);
    assert_eq!(
        r.sql("select count(*) from customers where id = 100000"),
        "1"
    );
    assert_eq!(
        r.sql("select timeline_id from pg_control_checkpoint()"),
        "2"
    );
    r.sql("insert into customers values (200000, 'on timeline 2')");
    std::thread::sleep(Duration::from_millis(1200));
    let on_tl2 = now(&r);
    std::thread::sleep(Duration::from_millis(1200));
    r.sql("insert into customers values (200001, 'too late')");
    r.switch_and_wait_archived();
    assert!(
        s.repo
            .object_path("wal/00000002/00000002.history.zst")
            .exists(),
        ".history archived"
    );
    r.stop();
    // The primary went on along timeline 1. A backup taken there after the fork restores to
    // timeline 1's newest data: timeline 2 forked off before it and can't be followed.
    s.backup();
    s.primary
        .sql("insert into customers values (300000, 'timeline 1 after the fork')");
    s.archive_now();
    let mut r1 = s.restore("r-tl1", &["--archive-mode", "off"]);
    assert_eq!(
        r1.sql("select count(*) from customers where id = 300000"),
        "1"
    );
    assert!(
        fs::read_to_string(r1.data.join("postgresql.auto.conf"))
            .unwrap()
            .contains("recovery_target_timeline = '1'")
    );
    r1.stop();
    let r2 = s.restore("r-tl2", &["--target-time", &on_tl2]);
    assert_eq!(
        r2.sql("select count(*) from customers where id >= 200000"),
        "1"
    );
    assert_eq!(
        r2.sql("select timeline_id from pg_control_checkpoint()"),
        "3"
    );
}

#[test]
fn three_cases_and_every_target_on_filesystem() {
    three_cases(Backend::Fs);
}

#[test]
fn three_cases_and_every_target_on_s3() {
    three_cases(Backend::S3);
}

fn incremental(backend: Backend) {
    let s = site("incr", backend, "shared_buffers = 64MB\n");
    let p = &s.primary;
    p.client("pgbench", &["-i", "-s", "8", "-q", "postgres"])
        .assert_ok();
    p.sql("create table notes as select i, md5(i::text) || md5((i * 7)::text) as body from generate_series(1, 200000) i");
    let size: u64 = p
        .sql("select pg_database_size('postgres')")
        .parse()
        .unwrap();
    assert!(size > 100 << 20, "database is only {size} bytes");
    // A database in its steady state: loaded a while ago, vacuumed (hint bits set).
    p.sql("vacuum (freeze, analyze)");
    p.sql("checkpoint");
    let first = s.backup();
    // An append-mostly day: a few % new rows and ~1,000 scattered updates.
    // (Rows as wide as the others: narrower ones would fill the slack of every page.)
    p.sql("insert into notes select i, md5(i::text) || md5((i * 7)::text) from generate_series(200001, 206000) i");
    p.sql("update pgbench_accounts set abalance = abalance + 1 where aid % 800 = 0");
    p.sql("checkpoint");
    let expected =
        p.sql("select sum(abalance), (select count(*) from notes) from pgbench_accounts");
    let second = s.backup();
    let full = first["totals"]["new_stored_bytes"].as_f64().unwrap();
    let incr = second["totals"]["new_stored_bytes"].as_f64().unwrap();
    let ratio = incr / full;
    println!("incremental: first {full} bytes, second {incr} bytes, ratio {ratio:.4}");
    if std::env::var("PITRKIT_DEBUG").is_ok() {
        let load = |v: &serde_json::Value| -> serde_json::Value {
            let raw = fs::read(s.repo.object_path(&format!(
                "backups/{}/manifest.json.zst",
                v["backup_id"].as_str().unwrap()
            )))
            .unwrap();
            serde_json::from_slice(&zstd::stream::decode_all(&raw[..]).unwrap()).unwrap()
        };
        let (a, b) = (load(&first), load(&second));
        let files = |m: &serde_json::Value| -> std::collections::HashMap<String, Vec<String>> {
            m["entries"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "file")
                .map(|e| {
                    (
                        e["path"].as_str().unwrap().to_string(),
                        e["chunks"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|c| c.as_str().unwrap().to_string())
                            .collect(),
                    )
                })
                .collect()
        };
        let (fa, fb) = (files(&a), files(&b));
        for (path, chunks) in &fb {
            let old = fa.get(path).cloned().unwrap_or_default();
            let changed = chunks
                .iter()
                .enumerate()
                .filter(|(i, c)| old.get(*i) != Some(c))
                .count();
            if changed > 0 {
                let size = fs::metadata(s.primary.data.join(path))
                    .map(|m| m.len())
                    .unwrap_or(0);
                let (mut deltas, mut stored) = (0, 0);
                for (i, c) in chunks.iter().enumerate() {
                    if old.get(i) == Some(c) {
                        continue;
                    }
                    let raw = fs::read(s.repo.object_path(&format!("chunks/{}/{c}.zst", &c[..2])))
                        .unwrap();
                    stored += raw.len();
                    if zstd::stream::decode_all(&raw[..])
                        .unwrap()
                        .starts_with(b"PKDELTA1")
                    {
                        deltas += 1;
                    }
                }
                println!(
                    "{path}: {changed}/{} chunks changed ({deltas} deltas, {stored} bytes stored), {size} bytes",
                    chunks.len()
                );
            }
        }
    }
    assert!(
        ratio < 0.15,
        "second backup stored {incr} bytes, {ratio:.3} of the first's {full}"
    );
    s.archive_now();

    // Both restore to correct data; amcheck and checksums pass.
    let first_id = first["backup_id"].as_str().unwrap();
    let mut r1 = s.restore(
        "r-first",
        &[
            "--backup",
            first_id,
            "--target-immediate",
            "--archive-mode",
            "off",
        ],
    );
    assert_eq!(r1.sql("select count(*) from notes"), "200000");
    r1.stop();
    let mut r2 = s.restore("r-second", &["--target-immediate"]);
    assert_eq!(
        r2.sql("select sum(abalance), (select count(*) from notes) from pgbench_accounts"),
        expected
    );
    r2.sql("create extension amcheck");
    r2.client("pg_amcheck", &["--heapallindexed", "-d", "postgres"])
        .assert_ok();
    r2.stop();
    let mut c = pitrkit_tests::as_pg(&pitrkit_tests::pg_bin("pg_checksums"));
    c.args(["--check", "-D"]).arg(&r2.data);
    run(c).assert_ok();
}

#[test]
fn incremental_backups_store_only_changes_on_filesystem() {
    incremental(Backend::Fs);
}

#[test]
fn incremental_backups_store_only_changes_on_s3() {
    incremental(Backend::S3);
}

#[test]
fn pg_basebackup_stream_restores() {
    for backend in [Backend::Fs, Backend::S3] {
        let s = site("stream", backend, "");
        s.primary
            .sql("create table t as select generate_series(1, 5000) i");
        let cmd = format!(
            "{} -h {} -p {} -U postgres -D - -Ft -X fetch -c fast | {} --config {} -",
            pitrkit_tests::pg_bin("pg_basebackup").display(),
            s.primary.sock.display(),
            s.primary.port,
            s.sb.bin("bb-push").display(),
            s.repo.config.display()
        );
        let mut c = std::process::Command::new("sh");
        c.args(["-c", &cmd])
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        let out = run(c);
        out.assert_ok();
        let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert!(summary["totals"]["files"].as_u64().unwrap() > 100, "{out}");
        s.primary
            .sql("insert into t select generate_series(5001, 6000)");
        s.archive_now();
        let r = s.restore("r", &[]);
        assert_eq!(r.sql("select count(*) from t"), "6000");
    }
}

#[test]
fn bad_restores_are_refused_and_touch_nothing() {
    for backend in [Backend::Fs, Backend::S3] {
        let s = site("badrestore", backend, "");
        s.primary
            .sql("create table t as select generate_series(1, 100) i");
        let early = now(&s.primary);
        std::thread::sleep(Duration::from_millis(1100));
        let b = s.backup();
        let id = b["backup_id"].as_str().unwrap().to_string();
        s.archive_now();
        let dir = s.sb.path().join("target");
        let d = dir.to_str().unwrap();
        // Unparsable time, target before the oldest backup, beyond the archive.
        s.tool("bb-restore", &["--pgdata", d, "--target-time", "yesterday"])
            .assert_code(2)
            .stderr_has("cannot read target time");
        s.tool("bb-restore", &["--pgdata", d, "--target-time", &early])
            .assert_code(2)
            .stderr_has("no backup ends before the target");
        s.tool(
            "bb-restore",
            &["--pgdata", d, "--target-time", "2099-01-01 00:00:00"],
        )
        .assert_code(2)
        // The WAL summaries answer first: no transaction the archive holds ends that late.
        .stderr_has("is not reached by the WAL the archive holds");
        s.tool("bb-restore", &["--pgdata", d, "--target-lsn", "FF/0"])
            .assert_code(2)
            .stderr_has("beyond the archive");
        assert!(!dir.exists(), "a refused restore created the directory");
        // A non-empty directory.
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("precious"), "keep me").unwrap();
        s.tool("bb-restore", &["--pgdata", d])
            .assert_code(3)
            .stderr_has("is not empty");
        assert_eq!(fs::read_to_string(dir.join("precious")).unwrap(), "keep me");
        // A bad timeline with --force: refused before the directory is emptied.
        s.tool(
            "bb-restore",
            &["--pgdata", d, "--force", "--target-timeline", "bogus"],
        )
        .assert_code(2)
        .stderr_has("bad target timeline 'bogus'");
        assert_eq!(fs::read_to_string(dir.join("precious")).unwrap(), "keep me");
        // Wrong repository.
        let mut c = s.sb.tool("bb-restore");
        c.args(s.repo.args()).args([
            "--repo",
            &format!("{}-nothing-here", s.repo.url),
            "--pgdata",
            d,
        ]);
        if backend == Backend::Fs {
            fs::create_dir_all(format!("{}-nothing-here", s.repo.url)).unwrap();
        }
        run(c).assert_code(4).stderr_has("not a pitrkit repository");
        fs::remove_dir_all(&dir).unwrap();

        // A corrupt chunk: the restore fails naming it; a missing one too.
        let chunks = s
            .repo
            .snapshot()
            .into_iter()
            .filter(|(k, _)| k.starts_with("chunks/"))
            .map(|(k, _)| k)
            .collect::<Vec<_>>();
        let victim = s.repo.object_path(&chunks[chunks.len() / 2]);
        let mut bytes = fs::read(&victim).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        fs::write(&victim, &bytes).unwrap();
        s.tool("bb-restore", &["--pgdata", d])
            .assert_code(7)
            .stderr_has("corrupt object chunks/");
        assert!(
            !dir.join("recovery.signal").exists(),
            "a failed restore looks ready to start"
        );
        fs::remove_file(&victim).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        s.tool("bb-restore", &["--pgdata", d])
            .assert_code(7)
            .stderr_has("missing from the repository");
        let _ = fs::remove_dir_all(&dir);

        // A garbage manifest, then none at all.
        let manifest = s
            .repo
            .object_path(&format!("backups/{id}/manifest.json.zst"));
        fs::write(&manifest, b"{not json").unwrap();
        s.tool("bb-restore", &["--pgdata", d])
            .assert_code(7)
            .stderr_has("manifest.json.zst");
        fs::remove_file(&manifest).unwrap();
        s.tool("bb-restore", &["--pgdata", d])
            .assert_code(1)
            .stderr_has("any backup");
    }
}

#[test]
fn delta_restore_fetches_only_what_differs() {
    let s = site("delta", Backend::Fs, "");
    s.primary
        .sql("create table t as select generate_series(1, 50000) i");
    s.backup();
    s.primary
        .sql("insert into t select generate_series(50001, 60000)");
    s.archive_now();
    let mut r = s.restore("r", &["--archive-mode", "off"]);
    assert_eq!(r.sql("select count(*) from t"), "60000");
    r.sql("insert into t select generate_series(1, 1000)");
    r.stop();
    let dir = s.sb.path().join("r");
    let d = dir.to_str().unwrap();
    // Without --delta or --force a non-empty directory is refused.
    s.tool("bb-restore", &["--pgdata", d])
        .assert_code(3)
        .stderr_has("--delta");
    let out = s.tool(
        "bb-restore",
        &["--pgdata", d, "--delta", "--archive-mode", "off"],
    );
    out.assert_ok();
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let (fetched, total) = (
        summary["bytes_fetched"].as_u64().unwrap(),
        summary["bytes"].as_u64().unwrap(),
    );
    assert!(
        fetched * 4 < total,
        "delta restore fetched {fetched} of {total} bytes"
    );
    let mut r = Pg::at(&s.sb, "r");
    r.configure("");
    r.start_recovery();
    r.wait_promoted(Duration::from_secs(120));
    assert_eq!(
        r.sql("select count(*) from t"),
        "60000",
        "the rows added after the restore are gone again"
    );
    r.stop();
    // --force empties the directory first.
    s.tool(
        "bb-restore",
        &["--pgdata", d, "--force", "--target-immediate", "--standby"],
    )
    .assert_ok();
    assert!(dir.join("standby.signal").exists() && !dir.join("recovery.signal").exists());
    assert!(
        fs::read_to_string(dir.join("postgresql.auto.conf"))
            .unwrap()
            .contains("recovery_target = 'immediate'")
    );
}

/// A cluster made with `initdb --waldir` (pg_wal a link to another disk, as in most
/// production setups): the backup restores into a data directory with a real pg_wal, and
/// the restored cluster recovers and starts.
/// md5 of every file below `dir`, by path: what must not change on the database host.
fn sums(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let data = fs::read(&p).unwrap();
                out.push((p.display().to_string(), pitrkit_tests::sha256_hex(&data)));
            }
        }
    }
    out.sort();
    out
}

/// A production layout: pg_wal on its own disk (`initdb --waldir`) and a table in a
/// tablespace. Restoring it on the database host must never touch the live tablespace.
#[test]
fn tablespaces_and_pg_wal_elsewhere_restore_without_touching_the_live_cluster() {
    let sb = Sandbox::new("layout");
    let repo = TestRepo::new(&sb, Backend::Fs);
    let waldisk = sb.path().join("waldisk");
    let data = sb.path().join("primary");
    let mut c = as_pg(&pg_bin("initdb"));
    c.args(["-A", "trust", "-U", "postgres", "--no-sync", "-X"])
        .arg(&waldisk)
        .arg("-D")
        .arg(&data);
    run(c).assert_ok();
    assert!(
        fs::symlink_metadata(data.join("pg_wal"))
            .unwrap()
            .is_symlink()
    );
    let live_ts = sb.path().join("live-ts");
    fs::create_dir(&live_ts).unwrap();
    sb.chown_to_pg(&live_ts);
    let mut primary = Pg::at(&sb, "primary");
    primary.configure(&repo.archiving_conf(&sb));
    primary.start();
    let mut s = Site {
        sb,
        repo,
        primary,
        major: DEFAULT_MAJOR,
    };
    let p = &s.primary;
    p.sql(&format!(
        "create tablespace ts location '{}'",
        live_ts.display()
    ));
    p.sql("create table t tablespace ts as select generate_series(1, 1000) i");
    p.sql("create index t_i on t(i) tablespace ts");
    p.sql("vacuum t");
    s.backup();
    p.sql("insert into t values (1001)");
    s.archive_now();
    s.primary.stop();
    let before = sums(&live_ts);
    assert!(before.len() > 3, "{before:?}");
    let dir = |name: &str| s.sb.path().join(name).display().to_string();

    // Without a mapping, the live tablespace is refused before anything is written.
    let out = s.tool(
        "bb-restore",
        &["--pgdata", &dir("refused"), "--archive-mode", "off"],
    );
    out.assert_code(3)
        .stderr_has(&format!("{}: is where tablespace", live_ts.display()))
        .stderr_has("--tablespace-mapping");
    assert!(!s.sb.path().join("refused").exists(), "{out}");
    // A mapping that names no tablespace of the backup is a usage error.
    let out = s.tool(
        "bb-restore",
        &[
            "--pgdata",
            &dir("refused"),
            "--tablespace-mapping",
            "/nowhere=/tmp/x",
        ],
    );
    out.assert_code(2).stderr_has("has no tablespace there");
    assert!(!s.sb.path().join("refused").exists(), "{out}");

    // A drill on the same host restores the tablespace into its scratch directory.
    let work = s.sb.path().join("drill");
    fs::create_dir(&work).unwrap();
    let out = s.tool(
        "pitr-check",
        &[
            "drill",
            "--workdir",
            work.to_str().unwrap(),
            "--pg-bin",
            pg_bin("postgres").parent().unwrap().to_str().unwrap(),
        ],
    );
    out.assert_code(0);
    assert_eq!(
        sums(&live_ts),
        before,
        "the drill changed the live tablespace"
    );

    // Mapped into a new directory, and pg_wal on a disk of its own again.
    let new_ts = dir("new-ts");
    let new_wal = dir("new-wal");
    let mut r = Pg::at(&s.sb, "r");
    let out = s.tool(
        "bb-restore",
        &[
            "--pgdata",
            &dir("r"),
            "--archive-mode",
            "off",
            "--tablespace-mapping",
            &format!("{}={new_ts}", live_ts.display()),
            "--waldir",
            &new_wal,
        ],
    );
    out.assert_ok();
    r.configure("");
    r.start_recovery();
    r.wait_promoted(Duration::from_secs(120));
    assert_eq!(r.sql("select count(*), max(i) from t"), "1001|1001");
    assert_eq!(
        r.sql("select pg_tablespace_location(oid) from pg_tablespace where spcname = 'ts'"),
        new_ts
    );
    assert_eq!(
        fs::read_link(r.data.join("pg_wal"))
            .unwrap()
            .display()
            .to_string(),
        new_wal
    );
    assert!(s.sb.path().join("new-wal/archive_status").is_dir());
    r.sql("checkpoint");
    r.stop();
    assert_eq!(
        sums(&live_ts),
        before,
        "the mapped restore changed the live tablespace"
    );

    // Without --waldir, pg_wal is a directory of the data directory.
    let out = s.tool(
        "bb-restore",
        &[
            "--pgdata",
            &dir("plain"),
            "--tablespace-mapping-all",
            &dir("all-ts"),
        ],
    );
    out.assert_ok();
    let meta = fs::symlink_metadata(s.sb.path().join("plain/pg_wal")).unwrap();
    assert!(meta.is_dir(), "pg_wal is a directory in the restore");
    assert!(s.sb.path().join("plain/pg_wal/archive_status").is_dir());
    let ts = fs::read_dir(s.sb.path().join("all-ts")).unwrap().count();
    assert_eq!(ts, 1, "one tablespace below --tablespace-mapping-all");
    assert_eq!(sums(&live_ts), before);
}
