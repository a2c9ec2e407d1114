//! A second copy: `pitr-copy` from a local repository to S3 and back, with two backups and a
//! timeline switch; restores from each copy give the exact rows; a rerun copies nothing; a
//! copy killed mid-run finishes without copying anything twice; conflicting content and a
//! foreign repository are refused with nothing overwritten; an encrypted repository is
//! copied with only its recipient and restores from the copy with the identity.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pitrkit_tests::{
    Backend, MotoServer, Output, Pg, S3_KEY, S3_SECRET, S3Server, Site, now, run, site, site_with,
};
use serde_json::Value;

fn rows(p: &Pg, from: i32, to: i32) {
    p.sql(&format!(
        "insert into t select i from generate_series({from}, {to}) i"
    ));
}

/// A config file for a repository at `url` in the sandbox (with the S3 server's settings
/// when it is in a bucket), plus `extra` lines.
fn config(s: &Site, name: &str, url: &str, s3: Option<&S3Server>, extra: &str) -> PathBuf {
    let path = s.sb.path().join(name);
    let mut text = format!("repo = '{url}'\n{extra}");
    if let Some(s3) = s3 {
        text.push_str(&format!(
            "s3_endpoint = '{}'\ns3_region = 'us-east-1'\ns3_access_key_id = '{S3_KEY}'\n\
             s3_secret_access_key = '{S3_SECRET}'\nretries = 3\nretry_time = '3s'\ntimeout = '3s'\n",
            s3.endpoint()
        ));
    }
    fs::write(&path, text).unwrap();
    s.sb.chown_to_pg(&path);
    path
}

fn copy(s: &Site, from: &Path, to: &Path, extra: &[&str]) -> Output {
    let url = |cfg: &Path| {
        let text = fs::read_to_string(cfg).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("repo = '"))
            .unwrap()
            .trim_end_matches('\'')
            .to_string()
    };
    let mut c = s.sb.tool("pitr-copy");
    c.args(["--from", &url(from), "--from-config"])
        .arg(from)
        .args(["--to", &url(to), "--to-config"])
        .arg(to)
        .args(extra);
    run(c)
}

fn report(out: &Output) -> Value {
    out.assert_ok();
    serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap()
}

/// Restores from the repository `cfg` names into a fresh directory and starts it.
fn restore_from(s: &Site, cfg: &Path, name: &str, args: &[&str]) -> Pg {
    let dir = s.sb.path().join(name);
    let mut c = s.sb.tool("bb-restore");
    c.arg("--config")
        .arg(cfg)
        .arg("--pgdata")
        .arg(&dir)
        .args(["--archive-mode", "off"])
        .args(args);
    run(c).assert_ok();
    let mut pg = Pg::at_major(&s.sb, name, s.major);
    pg.configure("");
    pg.start_recovery();
    pg.wait_promoted(Duration::from_secs(120));
    pg
}

fn check(s: &Site, cfg: &Path, args: &[&str]) -> Output {
    let mut c = s.sb.tool("pitr-check");
    c.arg("--config").arg(cfg).args(args);
    run(c)
}

#[test]
fn copies_to_s3_and_back_restorably_and_resumably() {
    let s = site("copy", Backend::Fs, "");
    let p = &s.primary;
    p.sql("create table t(i int)");
    s.backup();
    rows(p, 1, 100);
    // Backup ids are to the second.
    std::thread::sleep(Duration::from_millis(1100));
    s.backup();
    rows(p, 101, 200);
    std::thread::sleep(Duration::from_millis(1100));
    let mid = now(p);
    std::thread::sleep(Duration::from_millis(1100));
    rows(p, 201, 300);
    s.archive_now();
    // A timeline switch: a restore to `mid` promotes onto timeline 2 and archives there.
    let mut r = s.restore("r-tl2", &["--target-time", &mid]);
    assert_eq!(r.sql("select count(*) from t"), "200");
    r.sql("insert into t values (1000)");
    r.switch_and_wait_archived();
    r.stop();
    drop(r);

    let s3 = S3Server::start(&s.sb);
    s3.create_bucket("dr-copy");
    let source = s.repo.config.clone();
    let to_s3 = config(&s, "dr-s3.toml", "s3://dr-copy/main", Some(&s3), "");
    let first = report(&copy(&s, &source, &to_s3, &["--jobs", "4"]));
    assert_eq!(first["backups"].as_array().unwrap().len(), 2, "{first}");
    assert_eq!(first["deferred"], serde_json::json!([]));
    assert_eq!(first["refused"], serde_json::json!([]));
    assert_eq!(first["lag"]["wal_behind"], 0, "{first}");
    assert_eq!(first["lag"]["seconds_behind"], 0.0, "{first}");
    let copied = first["objects"].as_u64().unwrap();
    assert!(copied > 20, "{first}");
    check(&s, &to_s3, &["verify"]).assert_ok();

    // From the S3 copy: the moment in the middle, and the end of timeline 2.
    let r = restore_from(&s, &to_s3, "from-s3-mid", &["--target-time", &mid]);
    assert_eq!(r.sql("select count(*), max(i) from t"), "200|200");
    drop(r);
    let r = restore_from(&s, &to_s3, "from-s3-latest", &[]);
    assert_eq!(r.sql("select count(*), max(i) from t"), "201|1000");
    drop(r);

    // S3 → a local directory, restorable too.
    let to_fs = config(
        &s,
        "dr-fs.toml",
        &s.sb.path().join("dr-fs").display().to_string(),
        None,
        "",
    );
    let back = report(&copy(&s, &to_s3, &to_fs, &[]));
    assert_eq!(back["objects"], copied, "{back}");
    check(&s, &to_fs, &["verify"]).assert_ok();
    let r = restore_from(&s, &to_fs, "from-fs-mid", &["--target-time", &mid]);
    assert_eq!(r.sql("select count(*), max(i) from t"), "200|200");
    drop(r);

    // Idempotent: a second pass writes nothing.
    let again = report(&copy(&s, &source, &to_s3, &[]));
    assert_eq!(again["objects"], 0, "{again}");
    assert_eq!(again["skipped"].as_u64().unwrap(), copied, "{again}");

    // Killed after its first write, the next run finishes and writes each object once.
    let killed_cfg = config(
        &s,
        "dr-killed.toml",
        &s.sb.path().join("dr-killed").display().to_string(),
        None,
        "",
    );
    let mut c = s.sb.tool("pitr-copy");
    // One worker: exactly one object is written before the kill.
    c.env("PITRKIT_FAULT", "die-after-copy-put")
        .arg("--jobs=1")
        .args(["--from", &s.repo.url, "--from-config"])
        .arg(&source)
        .args([
            "--to",
            &s.sb.path().join("dr-killed").display().to_string(),
            "--to-config",
        ])
        .arg(&killed_cfg);
    let killed = run(c);
    assert_ne!(killed.code, 0, "{killed}");
    let resumed = report(&copy(&s, &source, &killed_cfg, &[]));
    assert_eq!(
        resumed["objects"].as_u64().unwrap(),
        copied - 1,
        "{resumed}"
    );
    assert_eq!(resumed["skipped"], 1, "{resumed}");
    check(&s, &killed_cfg, &["verify"]).assert_ok();

    // Different content under a name the source has: refused, naming both digests, and
    // the copy's object is left as it was.
    let victim = fs::read_dir(s.sb.path().join("dr-fs/wal/00000001"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with("0000000000000003.zst"))
        .unwrap();
    let planted = b"not this repository's segment".to_vec();
    fs::write(&victim, &planted).unwrap();
    let out = copy(&s, &source, &to_fs, &[]);
    out.assert_code(4)
        .stderr_has("differs at the copy")
        .stderr_has("the source holds content digest");
    assert_eq!(fs::read(&victim).unwrap(), planted);

    // A copy target that holds another cluster's repository is refused before any write.
    let other = site("copy-other", Backend::Fs, "");
    other.primary.sql("create table x(i int)");
    other.archive_now();
    let before = other.repo.snapshot();
    let foreign = config(&s, "foreign.toml", &other.repo.url, None, "");
    copy(&s, &source, &foreign, &[])
        .assert_code(4)
        .stderr_has("refusing to mix two repositories");
    assert_eq!(other.repo.snapshot(), before);

    // Monitoring the copy: behind while the source archives, caught up after a pass.
    let source_url = s.repo.url.clone();
    let compare = |extra: &[&str]| {
        let mut args = vec![
            "status",
            "--compare",
            source_url.as_str(),
            "--compare-config",
            source.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        check(&s, &to_s3, &args)
    };
    let caught_up: Value = serde_json::from_str(&compare(&["--json"]).assert_ok().stdout).unwrap();
    assert_eq!(caught_up["copy"]["wal_behind"], 0, "{caught_up:#}");
    rows(p, 301, 310);
    s.archive_now();
    std::thread::sleep(Duration::from_millis(1100));
    let behind = compare(&["--json", "--max-copy-lag", "0s"]);
    behind.assert_code(1);
    let b: Value = serde_json::from_str(&behind.stdout).unwrap();
    assert!(b["copy"]["wal_behind"].as_u64().unwrap() >= 1, "{b:#}");
    assert!(
        b["copy"]["seconds_behind"].as_f64().unwrap() >= 1.0,
        "{b:#}"
    );
    compare(&["--max-copy-lag-critical", "0s"]).assert_code(2);
    let prom = compare(&["--prometheus"]);
    assert!(
        prom.stdout.contains("pitrkit_copy_wal_behind{"),
        "{}",
        prom.stdout
    );
    report(&copy(&s, &source, &to_s3, &[]));
    let after: Value = serde_json::from_str(
        &compare(&["--json", "--max-copy-lag", "0s"])
            .assert_ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(after["copy"]["wal_behind"], 0, "{after:#}");
}

#[test]
fn an_encrypted_repository_is_copied_with_its_recipient_only() {
    let (identity, recipient) = pitrkit::repo::crypto::generate();
    let s = site_with(
        "copy-enc",
        Backend::Fs,
        "",
        &format!("encryption_recipients = ['{recipient}']\n"),
    );
    let p = &s.primary;
    p.sql("create table t(i int)");
    s.backup();
    rows(p, 1, 50);
    s.archive_now();
    let id_path = s.sb.path().join("identity.txt");
    fs::write(&id_path, identity).unwrap();
    s.sb.chown_to_pg(&id_path);
    let dest = s.sb.path().join("dr").display().to_string();
    let push_side = config(
        &s,
        "dr-push.toml",
        &dest,
        None,
        &format!("encryption_recipients = ['{recipient}']\n"),
    );
    let out = report(&copy(&s, &s.repo.config, &push_side, &[]));
    assert_eq!(out["backups"].as_array().unwrap().len(), 1, "{out}");
    // No row of the source shows in the copy either.
    let root: Value =
        serde_json::from_slice(&fs::read(Path::new(&dest).join("pitrkit.json")).unwrap()).unwrap();
    assert_eq!(root["encryption"], "age-x25519");
    let restore_side = config(
        &s,
        "dr-restore.toml",
        &dest,
        None,
        &format!("encryption_identity_file = '{}'\n", id_path.display()),
    );
    check(&s, &restore_side, &["verify"]).assert_ok();
    let r = restore_from(&s, &restore_side, "from-copy", &[]);
    assert_eq!(r.sql("select count(*) from t"), "50");
}

/// The copy follows a source under load (pgbench while bb-push runs twice): at no moment
/// does it show a backup that lacks a chunk or WAL, and a last pass leaves it complete.
#[test]
fn a_following_copy_never_shows_an_incomplete_backup() {
    let s = site("copy-follow", Backend::Fs, "");
    let p = &s.primary;
    p.client("pgbench", &["-i", "-s", "2", "-q", "postgres"])
        .assert_ok();
    let s3 = S3Server::start(&s.sb);
    s3.create_bucket("dr-follow");
    let to = config(&s, "dr.toml", "s3://dr-follow/main", Some(&s3), "");
    let log = fs::File::create(s.sb.path().join("pitr-copy-follow.log")).unwrap();
    let mut follow = s.sb.tool("pitr-copy");
    follow
        .args(["--from", &s.repo.url, "--from-config"])
        .arg(&s.repo.config)
        .args(["--to", "s3://dr-follow/main", "--to-config"])
        .arg(&to)
        .args(["--follow", "--interval", "1s"])
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut follower = follow.spawn().unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let checks = std::thread::scope(|scope| {
        let checker = scope.spawn(|| {
            let mut checks = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let out = check(&s, &to, &["status", "--json"]);
                // Before the first pass has written the root, there is no repository yet.
                if let Ok(st) = serde_json::from_str::<Value>(&out.stdout) {
                    for b in st["backups"].as_array().unwrap() {
                        assert_eq!(b["missing_chunks"], 0, "{b:#}");
                        assert_eq!(b["missing_wal"], serde_json::json!([]), "{b:#}");
                        assert_eq!(b["restorable"], true, "{b:#}");
                    }
                    checks += 1;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            checks
        });
        let load = scope.spawn(|| {
            p.client("pgbench", &["-c", "2", "-T", "8", "-n", "postgres"])
                .assert_ok();
        });
        s.backup();
        // Backup ids are to the second.
        std::thread::sleep(Duration::from_millis(1100));
        s.backup();
        load.join().unwrap();
        s.archive_now();
        std::thread::sleep(Duration::from_secs(2));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        checker.join().unwrap()
    });
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(checks >= 5, "{checks} checks");
    let last = report(&copy(&s, &s.repo.config, &to, &[]));
    assert_eq!(last["lag"]["wal_behind"], 0, "{last}");
    assert_eq!(
        last["lag"]["backups_behind"],
        serde_json::json!([]),
        "{last}"
    );
    let st: Value =
        serde_json::from_str(&check(&s, &to, &["status", "--json"]).assert_ok().stdout).unwrap();
    assert_eq!(st["backups"].as_array().unwrap().len(), 2, "{st:#}");
}

/// The first file (by name) below `dir`, relative to `root`.
fn first_file(root: &Path, dir: &str) -> String {
    let mut stack = vec![root.join(dir)];
    let mut files = vec![];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files[0]
        .strip_prefix(root)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

/// A DR copy in infrequent-access classes, per kind of object, on a server that keeps
/// storage classes (moto): each object carries its kind's class, the copy verifies, and a
/// class that needs a restore request before reading is refused.
#[test]
fn storage_classes_per_kind_reach_the_store() {
    let s = site("copy-classes", Backend::Fs, "");
    let p = &s.primary;
    p.sql("create table t(i int)");
    rows(p, 1, 100);
    s.backup();
    s.archive_now();
    let moto = MotoServer::start(&s.sb);
    moto.create_bucket("dr-classes");
    let settings = |classes: &str| {
        format!(
            "s3_endpoint = '{}'\ns3_region = 'us-east-1'\ns3_access_key_id = '{S3_KEY}'\n\
             s3_secret_access_key = '{S3_SECRET}'\nretries = 2\nretry_time = '3s'\ntimeout = '5s'\n{classes}",
            moto.endpoint()
        )
    };
    let classes = "s3_storage_class = 'STANDARD_IA'\ns3_storage_class_wal = 'ONEZONE_IA'\n\
                   s3_storage_class_manifests = 'STANDARD'\n";
    let to = config(
        &s,
        "dr-classes.toml",
        "s3://dr-classes/main",
        None,
        &settings(classes),
    );
    report(&copy(&s, &s.repo.config, &to, &[]));
    let root = &s.repo.files;
    let class = |key: &str| moto.storage_class("dr-classes", &format!("main/{key}"));
    assert_eq!(
        class(&first_file(root, "wal")).as_deref(),
        Some("ONEZONE_IA")
    );
    assert_ne!(
        class(&first_file(root, "summaries")).as_deref(),
        Some("ONEZONE_IA"),
        "summaries with the manifests, in STANDARD"
    );
    assert_eq!(
        class(&first_file(root, "chunks")).as_deref(),
        Some("STANDARD_IA")
    );
    assert_ne!(
        class(&first_file(root, "backups")).as_deref(),
        Some("STANDARD_IA"),
        "manifests in STANDARD"
    );
    assert_eq!(
        class("pitrkit.json"),
        None,
        "the root in the bucket's default"
    );
    check(&s, &to, &["verify"]).assert_ok();

    let glacier = config(
        &s,
        "dr-glacier.toml",
        "s3://dr-classes/other",
        None,
        &settings("s3_storage_class_chunks = 'GLACIER'\n"),
    );
    copy(&s, &s.repo.config, &glacier, &[])
        .assert_code(2)
        .stderr_has("s3_storage_class_chunks = 'GLACIER': objects in GLACIER must be restored");
}
