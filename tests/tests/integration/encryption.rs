//! Encryption at rest through PostgreSQL: archive and back up with only the public
//! recipient, restore to a moment with the identity, find no plaintext in the stored bytes,
//! refuse wrong, missing and mixed keys and tampered objects with the documented statuses,
//! and rotate keys.

#![allow(clippy::unwrap_used)] // tests: a panic with its message is the failure report

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pitrkit_tests::{Backend, Pg, Sandbox, Site, now, run, site_with};

/// Writes an identity file readable by the cluster's user only, and returns it with its
/// recipient.
fn key(sb: &Sandbox, name: &str) -> (PathBuf, String) {
    let (identity, recipient) = pitrkit::repo::crypto::generate();
    let path = sb.path().join(name);
    fs::write(&path, identity).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    sb.chown_to_pg(&path);
    (path, recipient)
}

/// A config like the site's, with other encryption lines.
fn config(s: &Site, name: &str, lines: &str) -> PathBuf {
    let base: String = fs::read_to_string(&s.repo.config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("encryption_"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = s.sb.path().join(name);
    fs::write(&path, format!("{base}{lines}")).unwrap();
    s.sb.chown_to_pg(&path);
    path
}

fn tool(s: &Site, cfg: &Path, tool: &str, args: &[&str]) -> pitrkit_tests::Output {
    let mut c = s.sb.tool(tool);
    c.arg("--config").arg(cfg).args(args);
    run(c)
}

/// Every stored file, read whole.
fn stored_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            stored_files(&p, out);
        } else {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn encrypted_round_trip(backend: Backend) {
    // The site needs its recipient before the primary starts archiving: make the key pair
    // first, and give the identity file to the restore side only.
    let (identity, recipient) = pitrkit::repo::crypto::generate();
    let s = site_with(
        "encryption",
        backend,
        "",
        &format!("encryption_recipients = ['{recipient}']\n"),
    );
    fs::write(s.sb.path().join("restore-key.txt"), identity).unwrap();
    s.sb.chown_to_pg(&s.sb.path().join("restore-key.txt"));
    let id_path = s.sb.path().join("restore-key.txt");
    let restore_cfg = config(
        &s,
        "restore.toml",
        &format!("encryption_identity_file = '{}'\n", id_path.display()),
    );
    let p = &s.primary;
    p.sql("create table customers(id int primary key, name text)");
    p.sql(
        "insert into customers select i, 'customer-secret-' || i from generate_series(1, 5000) i",
    );
    let backup = s.backup(); // bb-push with the recipient only
    let id = backup["backup_id"].as_str().unwrap().to_string();
    p.sql("insert into customers select i, 'customer-secret-' || i from generate_series(5001, 5500) i");
    std::thread::sleep(Duration::from_millis(1100));
    let moment = now(p);
    std::thread::sleep(Duration::from_millis(1100));
    p.sql("delete from customers");
    let segment = s.primary.switch_and_wait_archived();

    // The root says encrypted; no stored byte shows a row, a WAL page header or the
    // system identifier.
    let root: serde_json::Value =
        serde_json::from_slice(&fs::read(s.repo.object_path("pitrkit.json")).unwrap()).unwrap();
    assert_eq!(root["encryption"], "age-x25519");
    let sysid: u64 = root["system_identifier"].as_str().unwrap().parse().unwrap();
    let mut files = vec![];
    stored_files(&s.repo.files, &mut files);
    assert!(files.len() > 20);
    for (path, bytes) in &files {
        if path.ends_with("pitrkit.json") {
            continue;
        }
        assert!(!contains(bytes, b"customer-secret"), "{}", path.display());
        assert!(!contains(bytes, &sysid.to_le_bytes()), "{}", path.display());
        // XLOG_PAGE_MAGIC of PostgreSQL 15 with a long header on timeline 1.
        assert!(
            !contains(bytes, &[0x10, 0xD1, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00]),
            "{}",
            path.display()
        );
    }

    // The push host can't read rows back; it can read metadata (status works).
    let dash = tool(&s, &s.repo.config, "wal-fetch", &[&segment, "-"]);
    assert_eq!(dash.code, 6 + 128, "{dash}");
    assert!(dash.stdout.is_empty());
    assert!(dash.stderr.contains("identity"), "{dash}");
    let status = tool(&s, &s.repo.config, "pitr-check", &["status", "--json"]);
    assert_eq!(status.code, 0, "{status}");
    // WAL summaries are metadata: the push host reads them, the bucket alone does not.
    let st: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(st["last_commit"]["xid"].as_u64().is_some(), "{st:#}");
    assert_eq!(st["wal"]["unsummarized_segments"], 0, "{st:#}");
    let verify = tool(&s, &s.repo.config, "pitr-check", &["verify", "--json"]);
    assert_eq!(verify.code, 2, "push-only: data can't be checked\n{verify}");
    assert!(verify.stdout.contains("\"no-key\""), "{verify}");

    // With the identity: everything verifies, under one key, and the moment restores.
    let verify = tool(&s, &restore_cfg, "pitr-check", &["verify", "--json"]);
    assert_eq!(verify.code, 0, "{verify}");
    let v: serde_json::Value = serde_json::from_str(&verify.stdout).unwrap();
    assert_eq!(v["keys"].as_object().unwrap().len(), 1, "{v}");
    assert!(v["keys"].get("none").is_none(), "{v}");
    let dir = s.sb.path().join("restored");
    let out = tool(
        &s,
        &restore_cfg,
        "bb-restore",
        &[
            "--pgdata",
            dir.to_str().unwrap(),
            "--target-time",
            &moment,
            "--archive-mode",
            "off",
        ],
    );
    assert_eq!(out.code, 0, "{out}");
    let auto = fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        !auto.contains("AGE-SECRET-KEY") && !auto.contains("age1"),
        "no key material in postgresql.auto.conf:\n{auto}"
    );
    assert!(auto.contains("restore.toml"), "{auto}");
    assert!(!out.stdout.contains("AGE-SECRET") && !out.stderr.contains("AGE-SECRET"));
    let mut r = Pg::at(&s.sb, "restored");
    r.configure("");
    r.start_recovery();
    r.wait_promoted(Duration::from_secs(120));
    assert_eq!(
        r.sql(
            "select count(*), count(*) filter (where name like 'customer-secret-%') from customers"
        ),
        "5500|5500"
    );
    r.stop();
    refusals(&s, &restore_cfg, &segment, &id);
}

/// Wrong, missing and mixed keys and a flipped byte: each a clear error with its status,
/// and nothing changed in the repository or at the destination.
fn refusals(s: &Site, restore_cfg: &Path, segment: &str, backup: &str) {
    let before = s.repo.snapshot();
    let dest = s.sb.path().join("fetched");
    let dest = dest.to_str().unwrap();

    // Another key pair: its identity opens nothing here.
    let (other_id, other_recipient) = key(&s.sb, "other-key.txt");
    let wrong = config(
        s,
        "wrong.toml",
        &format!("encryption_identity_file = '{}'\n", other_id.display()),
    );
    let out = tool(s, &wrong, "wal-fetch", &[segment, dest]);
    assert_eq!(out.code, 6 + 128, "{out}");
    assert!(out.stderr.contains("no identity for it"), "{out}");
    assert!(!Path::new(dest).exists());
    let out = tool(
        s,
        &wrong,
        "bb-restore",
        &[
            "--pgdata",
            s.sb.path().join("r-wrong").to_str().unwrap(),
            "--backup",
            backup,
        ],
    );
    assert_eq!(out.code, 6, "{out}");
    assert!(
        !out.stderr.contains(&other_recipient),
        "keys are never echoed: {out}"
    );

    // No keys at all: refused before anything is stored.
    let plain = config(s, "plain.toml", "");
    let seg_copy = s.sb.path().join(segment);
    let out = tool(
        s,
        restore_cfg,
        "wal-fetch",
        &[segment, seg_copy.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{out}");
    let out = tool(s, &plain, "wal-push", &[seg_copy.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("is encrypted"), "{out}");
    let out = tool(s, &plain, "wal-fetch", &[segment, dest]);
    assert_eq!(out.code, 6 + 128, "{out}");
    assert!(!Path::new(dest).exists());

    // A flipped byte in a sealed segment: corruption (exit 7 + 128), nothing at DEST.
    let key = format!("wal/{}/{segment}.zst", &segment[..8]);
    let obj = s.repo.object_path(&key);
    let good = fs::read(&obj).unwrap();
    let mut bad = good.clone();
    let at = bad.len() - 20;
    bad[at] ^= 0x01;
    fs::write(&obj, &bad).unwrap();
    let out = tool(s, restore_cfg, "wal-fetch", &[segment, dest]);
    assert_eq!(out.code, 7 + 128, "{out}");
    assert!(!Path::new(dest).exists());
    fs::write(&obj, &good).unwrap();
    assert_eq!(s.repo.snapshot(), before, "refusals changed nothing");

    // Keys against a plain repository: refused rather than mixing.
    let mut c = s.sb.tool("wal-push");
    let plain_repo = s.sb.path().join("plain-repo");
    fs::create_dir_all(&plain_repo).unwrap();
    c.args(["--repo", plain_repo.to_str().unwrap()])
        .arg(&seg_copy);
    run(c).assert_ok();
    let mixed = s.sb.path().join("mixed.toml");
    fs::write(
        &mixed,
        format!(
            "repo = '{}'\nencryption_recipients = ['{other_recipient}']\n",
            plain_repo.display()
        ),
    )
    .unwrap();
    let out = tool(s, &mixed, "wal-push", &[seg_copy.to_str().unwrap()]);
    assert_eq!(out.code, 4, "{out}");
    assert!(out.stderr.contains("not encrypted"), "{out}");
}

/// Rotation: new objects use the new key, old ones stay readable with the old identity,
/// and verify says which key each object needs.
#[test]
fn key_rotation_keeps_old_backups_readable() {
    let (identity1, recipient1) = pitrkit::repo::crypto::generate();
    let s = site_with(
        "rotation",
        Backend::Fs,
        "",
        &format!("encryption_recipients = ['{recipient1}']\n"),
    );
    let p = &s.primary;
    p.sql("create table t as select generate_series(1, 3000) i");
    let first = s.backup()["backup_id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    // Rotate: the new recipient first, the old one kept so re-pushes of old segments can
    // still be recognised.
    let (identity2, recipient2) = pitrkit::repo::crypto::generate();
    let cfg: String = fs::read_to_string(&s.repo.config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("encryption_"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(
        &s.repo.config,
        format!("{cfg}encryption_recipients = ['{recipient2}', '{recipient1}']\n"),
    )
    .unwrap();
    p.sql("insert into t select generate_series(3001, 4000)");
    s.archive_now();
    let second = s.backup()["backup_id"].as_str().unwrap().to_string();
    s.archive_now();
    // Restore hosts hold both identities, newest first.
    let both = s.sb.path().join("both-keys.txt");
    fs::write(&both, format!("{identity2}{identity1}")).unwrap();
    s.sb.chown_to_pg(&both);
    let restore_cfg = config(
        &s,
        "restore.toml",
        &format!("encryption_identity_file = '{}'\n", both.display()),
    );
    let out = tool(&s, &restore_cfg, "pitr-check", &["verify", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v["keys"].as_object().unwrap().len(),
        2,
        "two keys in use: {v}"
    );
    // Only the old identity: the new backup's objects are reported as needing the new key.
    let old_only = s.sb.path().join("old-key.txt");
    fs::write(&old_only, &identity1).unwrap();
    let old_cfg = config(
        &s,
        "old.toml",
        &format!("encryption_identity_file = '{}'\n", old_only.display()),
    );
    let out = tool(&s, &old_cfg, "pitr-check", &["verify", "--json"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stdout.contains("\"no-key\""), "{out}");
    for (backup, rows) in [(&first, "3000"), (&second, "4000")] {
        let name = format!("r-{backup}");
        let dir = s.sb.path().join(&name);
        let out = tool(
            &s,
            &restore_cfg,
            "bb-restore",
            &[
                "--pgdata",
                dir.to_str().unwrap(),
                "--backup",
                backup,
                "--target-immediate",
                "--archive-mode",
                "off",
            ],
        );
        assert_eq!(out.code, 0, "{out}");
        let mut r = Pg::at(&s.sb, &name);
        r.configure("");
        r.start_recovery();
        r.wait_promoted(Duration::from_secs(120));
        assert_eq!(r.sql("select count(*) from t"), rows);
        r.stop();
    }
}

#[test]
fn encrypted_round_trip_on_filesystem() {
    encrypted_round_trip(Backend::Fs);
}

#[test]
fn encrypted_round_trip_on_s3() {
    encrypted_round_trip(Backend::S3);
}
