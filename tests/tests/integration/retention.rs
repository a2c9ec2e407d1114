//! Retention through `bb-push`: a dry run that lists exactly what would go, an expire that
//! frees those bytes and leaves every kept backup restorable (proved by drills), keep marks,
//! and a backup running while expires run.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::fs;
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use pitrkit_tests::{Backend, Site, now, site};

fn json(out: &pitrkit_tests::Output) -> serde_json::Value {
    assert_eq!(out.code, 0, "{out}");
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Restores `backup` to `target` in a throwaway cluster and checks the row count.
fn drill(s: &Site, backup: &str, target: &[&str], count: u64) {
    let sql = s.sb.path().join(format!("expect-{backup}-{count}.sql"));
    fs::write(
        &sql,
        format!("-- expect: {count}\nselect count(*) from t;\n"),
    )
    .unwrap();
    let work = s.sb.path().join("drills");
    fs::create_dir_all(&work).unwrap();
    let mut args = vec![
        "drill",
        "--backup",
        backup,
        "--sql",
        sql.to_str().unwrap(),
        "--workdir",
        work.to_str().unwrap(),
    ];
    args.extend_from_slice(target);
    let out = s.tool("pitr-check", &args);
    assert_eq!(out.code, 0, "drill of {backup} {target:?}\n{out}");
}

fn expire_keeps_what_restores(backend: Backend) {
    let s = site("retention", backend, "");
    let p = &s.primary;
    p.sql("create table t(i int primary key, body text)");
    p.sql("insert into t select i, md5(i::text) from generate_series(1, 1000) i");
    let b1 = s.backup()["backup_id"].as_str().unwrap().to_string();
    let mut count = 1000;
    let mut backups = vec![b1.clone()];
    for _ in 0..2 {
        p.sql(&format!(
            "insert into t select i, md5(i::text) from generate_series({}, {}) i",
            count + 1,
            count + 500
        ));
        count += 500;
        s.archive_now();
        std::thread::sleep(Duration::from_millis(1100)); // backup ids are per second
        backups.push(s.backup()["backup_id"].as_str().unwrap().to_string());
    }
    let (b2, b3) = (backups[1].clone(), backups[2].clone());
    // Inside b3's window: a moment with 2,200 rows, then more rows after it.
    p.sql(&format!(
        "insert into t select i, 'x' from generate_series({}, {}) i",
        count + 1,
        count + 200
    ));
    std::thread::sleep(Duration::from_millis(1100));
    let moment = now(p);
    std::thread::sleep(Duration::from_millis(1100));
    p.sql(&format!(
        "insert into t select i, 'y' from generate_series({}, {}) i",
        count + 201,
        count + 300
    ));
    s.archive_now();

    // b1 is kept for an audit; the policy keeps one backup.
    let mark = json(&s.tool("bb-push", &["--keep", &b1, "--keep-reason", "audit 2026"]));
    assert_eq!(mark["keep"], true);
    let before = s.repo.snapshot();
    let dry = json(&s.tool("bb-push", &["--expire", "--retain-full", "1", "--dry-run"]));
    assert_eq!(s.repo.snapshot(), before, "a dry run changes nothing");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(ids(&dry["expired_backups"]), vec![b2.clone()]);
    let kept: Vec<String> = dry["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["backup_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, vec![b1.clone(), b3.clone()]);
    let wal = ids(&dry["wal_files"]);
    assert!(!wal.is_empty(), "{dry}");
    assert!(dry["bytes_freed"].as_u64().unwrap() > 0);

    let done = json(&s.tool("bb-push", &["--expire", "--retain-full", "1"]));
    assert_eq!(done["bytes_freed"], dry["bytes_freed"], "{done}\n{dry}");
    assert_eq!(ids(&done["wal_files"]), wal);
    assert!(
        !s.repo
            .object_path(&format!("backups/{b2}/manifest.json.zst"))
            .exists()
    );
    for name in &wal {
        assert!(
            !s.repo
                .object_path(&format!("wal/{}/{name}.zst", &name[..8]))
                .exists(),
            "{name}"
        );
    }
    // Nothing a kept backup needs went: the repository verifies, status is healthy (the
    // gap after the standalone b1 is on purpose), and each kept backup restores.
    let out = s.tool("pitr-check", &["verify"]);
    assert_eq!(out.code, 0, "{out}");
    let out = s.tool("pitr-check", &["status"]);
    assert_eq!(out.code, 0, "{out}");
    drill(&s, &b1, &["--target-immediate"], 1000);
    drill(&s, &b3, &["--target-time", &moment], 2200);
    drill(&s, &b3, &[], 2300);

    // Unmarked, b1 goes at the next expire, with its chunks no one else uses.
    json(&s.tool("bb-push", &["--unkeep", &b1]));
    let done = json(&s.tool("bb-push", &["--expire", "--retain-full", "1"]));
    assert_eq!(ids(&done["expired_backups"]), vec![b1.clone()]);
    let out = s.tool("pitr-check", &["verify"]);
    assert_eq!(out.code, 0, "{out}");
}

#[test]
fn expire_keeps_what_restores_on_filesystem() {
    expire_keeps_what_restores(Backend::Fs);
}

#[test]
fn expire_keeps_what_restores_on_s3() {
    expire_keeps_what_restores(Backend::S3);
}

/// A backup that runs while expires run loses nothing: expires see its lock and leave
/// chunks alone, and the backup verifies and restores.
#[test]
fn a_backup_running_during_expire_loses_nothing() {
    let s = site("concurrent", Backend::Fs, "");
    let p = &s.primary;
    p.client("pgbench", &["-i", "-s", "4", "-q", "postgres"])
        .assert_ok();
    p.sql("create table t as select generate_series(1, 5000) i");
    s.backup();
    p.sql("update pgbench_accounts set abalance = 1 where aid % 7 = 0");
    p.sql("insert into t select generate_series(5001, 6000)");
    std::thread::sleep(Duration::from_millis(1100));
    s.backup();
    p.sql("update pgbench_accounts set abalance = 2 where aid % 5 = 0");
    p.sql("insert into t select generate_series(6001, 7000)");
    std::thread::sleep(Duration::from_millis(1100));

    let mut push = s.sb.tool("bb-push");
    push.args(s.repo.args())
        .args(["--pgdata", p.data.to_str().unwrap(), "--jobs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = push.spawn().unwrap();
    let mut deferred = 0;
    let mut expires = 0;
    let status = loop {
        let v = json(&s.tool("bb-push", &["--expire", "--retain-full", "1"]));
        expires += 1;
        if !v["chunks_deferred"].is_null() {
            deferred += 1;
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    println!("{expires} expires ran during the backup, {deferred} deferred chunk cleanup");
    assert!(
        deferred > 0,
        "no expire overlapped the backup: {expires} ran"
    );
    let newest: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let id = newest["backup_id"].as_str().unwrap().to_string();
    json(&s.tool("bb-push", &["--expire", "--retain-full", "1"]));
    let out = s.tool("pitr-check", &["verify"]);
    assert_eq!(out.code, 0, "{out}");
    s.archive_now();
    drill(&s, &id, &["--target-immediate"], 7000);
}

/// A site with backup b1 (1,000 rows), a newer backup (1,500), then 1,800 rows archived:
/// retention with `--retain-full 1` would let b1 go. Returns the site and b1's id.
fn two_backups(name: &str) -> (Site, String) {
    let s = site(name, Backend::Fs, "");
    let p = &s.primary;
    p.sql("create table t(i int primary key)");
    p.sql("insert into t select generate_series(1, 1000)");
    let b1 = s.backup()["backup_id"].as_str().unwrap().to_string();
    p.sql("insert into t select generate_series(1001, 1500)");
    s.archive_now();
    std::thread::sleep(Duration::from_millis(1100)); // backup ids are per second
    s.backup();
    p.sql("insert into t select generate_series(1501, 1800)");
    s.archive_now();
    (s, b1)
}

/// A restore registers the backup it restores: an expire while PostgreSQL still has to
/// replay keeps that backup and the WAL after it, and the restored cluster's
/// recovery_end_command releases it, after which it may go.
#[test]
fn an_expire_during_a_restore_keeps_what_recovery_needs() {
    let (s, b1) = two_backups("restorelock");

    let dir = s.sb.path().join("r");
    let out = s.tool(
        "bb-restore",
        &[
            "--pgdata",
            dir.to_str().unwrap(),
            "--backup",
            &b1,
            "--archive-mode",
            "off",
        ],
    );
    let summary = json(&out);
    let key = summary["restore_lock"].as_str().unwrap().to_string();
    assert!(key.starts_with("locks/restore-"), "{summary}");
    assert!(s.repo.object_path(&key).exists());
    let auto = fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains(&format!("--release-lock {key}")), "{auto}");

    // The policy keeps one backup, but b1 is being restored.
    let plan = json(&s.tool("bb-push", &["--expire", "--retain-full", "1"]));
    assert_eq!(
        ids(&plan["expired_backups"]),
        Vec::<String>::new(),
        "{plan}"
    );
    let why = plan["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["backup_id"] == b1.as_str())
        .map(|k| k["why"].to_string())
        .unwrap_or_default();
    assert!(why.contains("being restored"), "{plan}");

    let mut r = pitrkit_tests::Pg::at(&s.sb, "r");
    r.configure("");
    r.start_recovery();
    r.wait_promoted(Duration::from_secs(120));
    assert_eq!(r.sql("select count(*), max(i) from t"), "1800|1800");
    pitrkit_tests::wait_for("the lock released", Duration::from_secs(30), || {
        !s.repo.object_path(&key).exists()
    });
    r.stop();

    let plan = json(&s.tool("bb-push", &["--expire", "--retain-full", "1"]));
    assert_eq!(ids(&plan["expired_backups"]), vec![b1], "{plan}");
    let out = s.tool("pitr-check", &["verify"]);
    assert_eq!(out.code, 0, "{out}");
}

/// The same for a drill, stopped (by fault injection) right after it registered the old
/// backup: an expire then keeps that backup, and the drill, resumed, restores and replays it.
#[test]
fn an_expire_during_a_drill_deletes_nothing_it_needs() {
    let (s, b1) = two_backups("drilllock");

    let sql = s.sb.path().join("expect.sql");
    fs::write(&sql, "-- expect: 1800\nselect count(*) from t;\n").unwrap();
    let work = s.sb.path().join("drills");
    fs::create_dir_all(&work).unwrap();
    let mut drill = s.sb.tool("pitr-check");
    drill
        .env("PITRKIT_FAULT", "stop-after-restore-lock")
        .args(s.repo.args())
        .args(["drill", "--backup", &b1, "--sql", sql.to_str().unwrap()])
        .args(["--workdir", work.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = drill.spawn().unwrap();
    let pid = child.id();
    pitrkit_tests::wait_for("the drill to stop", Duration::from_secs(60), || {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
            st.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('T'))
        })
    });
    let plan = json(&s.tool("bb-push", &["--expire", "--retain-full", "1"]));
    assert_eq!(
        ids(&plan["expired_backups"]),
        Vec::<String>::new(),
        "{plan}"
    );
    assert!(plan.to_string().contains("being restored"), "{plan}");
    let st = std::process::Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The drill released its lock: now b1 goes.
    let plan = json(&s.tool("bb-push", &["--expire", "--retain-full", "1"]));
    assert_eq!(ids(&plan["expired_backups"]), vec![b1], "{plan}");
}
